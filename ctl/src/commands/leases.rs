//! `berthctl leases ls|create|rm`.

use std::time::{Duration, SystemTime};

use anyhow::{bail, Result};
use berth_proto::containerd::services::leases::v1::leases_client::LeasesClient;
use berth_proto::containerd::services::leases::v1::*;
use clap::Subcommand;

use super::{format_labels, parse_labels};
use crate::client::{status_error, Client};
use crate::table::Table;

/// Label holding a lease's expiry (RFC 3339).
const EXPIRE_LABEL: &str = "containerd.io/gc.expire";

/// Lease commands.
#[derive(Subcommand, Debug)]
pub enum LeasesCommand {
    /// List leases.
    #[command(visible_alias = "list")]
    Ls {
        /// Print only ids.
        #[arg(long, short)]
        quiet: bool,
        /// Filters such as `id==x` or `labels."k"==v`.
        filters: Vec<String>,
    },
    /// Create a lease that protects content added under it from garbage collection.
    Create {
        /// Lease id (berthd picks a random one when omitted).
        #[arg(long)]
        id: Option<String>,
        /// Expire after this many seconds (0: never).
        #[arg(long, default_value_t = 86_400)]
        expires: u64,
        /// Labels as KEY=VALUE.
        labels: Vec<String>,
    },
    /// Delete leases; their resources become collectable.
    #[command(visible_aliases = ["remove", "delete"])]
    Rm {
        /// Wait for the garbage collection to finish.
        #[arg(long)]
        sync: bool,
        /// Lease ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

/// RFC 3339 UTC time of `t`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Runs a leases command.
pub async fn run(client: &Client, cmd: LeasesCommand) -> Result<()> {
    let mut svc = LeasesClient::new(client.channel.clone());
    match cmd {
        LeasesCommand::Ls { quiet, filters } => {
            let leases =
                svc.list(client.request(ListRequest { filters })).await.map_err(status_error)?.into_inner().leases;
            let mut table = Table::new(&["ID", "CREATED AT", "LABELS"]);
            for l in leases {
                if quiet {
                    println!("{}", l.id);
                    continue;
                }
                let created = l.created_at.and_then(|t| SystemTime::try_from(t).ok()).map(rfc3339).unwrap_or_default();
                table.row(vec![l.id, created, format_labels(&l.labels)]);
            }
            if !quiet {
                table.print()?;
            }
        }
        LeasesCommand::Create { id, expires, labels } => {
            let mut labels = parse_labels(&labels)?;
            if expires > 0 {
                labels.insert(EXPIRE_LABEL.into(), rfc3339(SystemTime::now() + Duration::from_secs(expires)));
            }
            let req = CreateRequest { id: id.unwrap_or_default(), labels: labels.into_iter().collect() };
            let lease = svc.create(client.request(req)).await.map_err(status_error)?.into_inner().lease;
            println!("{}", lease.map(|l| l.id).unwrap_or_default());
        }
        LeasesCommand::Rm { sync, ids } => {
            let mut failed = 0;
            for id in ids {
                match svc.delete(client.request(DeleteRequest { id: id.clone(), sync })).await {
                    Ok(_) => println!("{id}"),
                    Err(s) => {
                        eprintln!("berthctl: {}", status_error(s));
                        failed += 1;
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} lease(s) not removed");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(951_868_800)), "2000-03-01T00:00:00Z");
    }
}
