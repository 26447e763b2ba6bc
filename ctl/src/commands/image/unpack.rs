//! `berthctl image unpack`: unpack images into a snapshotter with berthd's parallel unpacker.

use anyhow::Result;
use berth_proto::berth::services::unpack::v1::unpack_client::UnpackClient;
use berth_proto::berth::services::unpack::v1::{UnpackRequest, UnpackResponse};
use clap::Args;

use super::{human_size, normalize_name};
use crate::client::{status_error, Client};

/// Arguments of `image unpack`.
#[derive(Args, Debug)]
pub struct UnpackArgs {
    /// Snapshotter to unpack into (berthd's default, overlayfs, when omitted).
    #[arg(long, default_value = "")]
    pub snapshotter: String,
    /// Images to unpack (for this host's platform).
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// Unpacks one image and prints what was done.
pub async fn unpack_one(client: &Client, name: &str, snapshotter: &str) -> Result<UnpackResponse> {
    let req = UnpackRequest { image: name.to_string(), snapshotter: snapshotter.to_string(), platform: None };
    let r =
        UnpackClient::new(client.channel.clone()).unpack(client.request(req)).await.map_err(status_error)?.into_inner();
    let secs = r.duration.map_or(0.0, |d| d.seconds as f64 + f64::from(d.nanos) / 1e9);
    eprintln!(
        "unpacked {name}: {}/{} layer(s) extracted, {} in {secs:.2}s, top snapshot {}",
        r.extracted,
        r.layers,
        human_size(r.bytes),
        r.chain_id
    );
    Ok(r)
}

/// Runs `image unpack`.
pub async fn run(client: &Client, args: UnpackArgs) -> Result<()> {
    for name in &args.names {
        let name = normalize_name(name)?;
        let r = unpack_one(client, &name, &args.snapshotter).await?;
        println!("{name} {}", r.chain_id);
    }
    Ok(())
}
