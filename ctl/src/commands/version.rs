//! `berthctl version`.

use anyhow::Result;
use berth_proto::containerd::services::introspection::v1::introspection_client::IntrospectionClient;
use berth_proto::containerd::services::version::v1::version_client::VersionClient;

use crate::client::{status_error, Client};

/// Prints client and server versions and the server's uuid.
pub async fn run(client: &Client) -> Result<()> {
    println!("Client:");
    println!("  Version:  {}", env!("CARGO_PKG_VERSION"));
    let v = VersionClient::new(client.channel.clone()).version(client.request(())).await.map_err(status_error)?;
    let v = v.into_inner();
    println!();
    println!("Server:");
    println!("  Version:  {}", v.version);
    println!("  Revision: {}", v.revision);
    // Older or partial servers may not serve introspection; the version is still useful.
    if let Ok(s) = IntrospectionClient::new(client.channel.clone()).server(client.request(())).await {
        println!("  UUID:     {}", s.into_inner().uuid);
    }
    Ok(())
}
