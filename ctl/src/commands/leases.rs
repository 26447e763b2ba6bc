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

/// RFC 3339 UTC time of `t` (one formatter for every command).
pub use berth_core::time::format_rfc3339 as rfc3339;

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
