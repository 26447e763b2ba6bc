//! `berthctl image push`: berthd uploads the image's missing blobs and its manifests to the
//! registry (berth.services.transfer.v1) while this draws per-blob progress.

use anyhow::Result;
use berth_proto::berth::services::transfer::v1::transfer_client::TransferClient;
use berth_proto::berth::services::transfer::v1::PushRequest;
use clap::Args;

use super::pull::follow;
use crate::client::{status_error, Client};

/// Arguments of `image push`.
#[derive(Args, Debug)]
pub struct PushArgs {
    /// Local image name (`127.0.0.1:5000/team/app:1.0`).
    pub name: String,
    /// Push to this reference instead of the image's own name.
    pub reference: Option<String>,
    /// Push only this platform's manifest of a multi-platform image.
    #[arg(long)]
    pub platform: Option<String>,
    /// Print no progress, only the digest.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Runs `image push`.
pub async fn run(client: &Client, a: PushArgs) -> Result<()> {
    let mut svc = TransferClient::new(client.channel.clone());
    let req = PushRequest {
        name: a.name,
        reference: a.reference.unwrap_or_default(),
        platform: a.platform.unwrap_or_default(),
    };
    let stream = svc.push(client.request(req)).await.map_err(status_error)?.into_inner();
    let result = follow(stream, a.quiet).await?;
    if !a.quiet {
        println!("{}: pushed", result.name);
    }
    println!("digest: {}", result.digest);
    Ok(())
}
