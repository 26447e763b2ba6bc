//! `berthctl gc`: run the garbage collector now and print what it freed.

use anyhow::Result;
use berth_proto::berth::services::gc::v1::gc_client::GcClient;
use berth_proto::berth::services::gc::v1::CollectRequest;

use crate::client::{status_error, Client};

/// Human-readable byte count.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Runs one collection.
pub async fn run(client: &Client) -> Result<()> {
    let r =
        GcClient::new(client.channel.clone()).collect(client.request(CollectRequest {})).await.map_err(status_error)?;
    let r = r.into_inner();
    let ms = r.duration.map_or(0.0, |d| d.seconds as f64 * 1e3 + f64::from(d.nanos) / 1e6);
    println!(
        "removed {} blob(s), {} freed; {} content record(s); {} snapshot(s); {} expired lease(s) in {ms:.1} ms",
        r.blobs_removed,
        human_bytes(r.bytes_freed),
        r.content_records_removed,
        r.snapshots_removed,
        r.leases_removed
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
    }
}
