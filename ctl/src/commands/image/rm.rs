//! `berthctl image rm NAME... [--sync]`.

use anyhow::{bail, Result};
use berth_proto::containerd::services::images::v1::DeleteImageRequest;
use clap::Args;

use super::normalize_name;
use super::remote::Remote;
use crate::client::{status_error, Client};

/// Arguments of `image rm`.
#[derive(Args, Debug)]
pub struct RmArgs {
    /// Wait until the content no image references any more is collected.
    #[arg(long)]
    pub sync: bool,
    /// Images to remove.
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// Runs `image rm`: removes each image, reporting the ones that fail and going on.
pub async fn run(client: &Client, args: RmArgs) -> Result<()> {
    let mut remote = Remote::new(client);
    let mut failed = 0;
    for raw in &args.names {
        let name = match normalize_name(raw) {
            Ok(n) => n,
            Err(e) => {
                eprintln!("berthctl: {e}");
                failed += 1;
                continue;
            }
        };
        let req = remote.request(DeleteImageRequest { name: name.clone(), sync: args.sync });
        match remote.images.delete(req).await {
            Ok(_) => println!("{name}"),
            Err(status) => {
                eprintln!("berthctl: {}", status_error(status));
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} image(s) not removed");
    }
    Ok(())
}
