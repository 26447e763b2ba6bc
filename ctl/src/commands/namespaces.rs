//! `berthctl namespaces create|ls|rm|label`.

use anyhow::{bail, Result};
use berth_proto::containerd::services::namespaces::v1::namespaces_client::NamespacesClient;
use berth_proto::containerd::services::namespaces::v1::*;
use clap::Subcommand;

use super::{format_labels, parse_labels};
use crate::client::{status_error, Client};
use crate::table::Table;

/// Namespace commands.
#[derive(Subcommand, Debug)]
pub enum NamespacesCommand {
    /// Create a namespace, optionally with labels.
    Create {
        /// Namespace name ([A-Za-z0-9] words joined by '.', '_' or '-', at most 76 characters).
        name: String,
        /// Labels as KEY=VALUE.
        labels: Vec<String>,
    },
    /// List namespaces and their labels.
    #[command(visible_alias = "list")]
    Ls {
        /// Print only names.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Remove empty namespaces (a namespace that still holds objects is refused).
    #[command(visible_aliases = ["remove", "delete"])]
    Rm {
        /// Namespaces to remove.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Set labels on a namespace (KEY= removes KEY); with no labels, print them.
    Label {
        /// Namespace name.
        name: String,
        /// Labels as KEY=VALUE.
        labels: Vec<String>,
    },
}

/// Runs a namespaces command.
pub async fn run(client: &Client, cmd: NamespacesCommand) -> Result<()> {
    let mut svc = NamespacesClient::new(client.channel.clone());
    match cmd {
        NamespacesCommand::Create { name, labels } => {
            let labels = parse_labels(&labels)?.into_iter().collect();
            svc.create(client.request(CreateNamespaceRequest { namespace: Some(Namespace { name, labels }) }))
                .await
                .map_err(status_error)?;
        }
        NamespacesCommand::Ls { quiet } => {
            let resp = svc.list(client.request(ListNamespacesRequest::default())).await.map_err(status_error)?;
            let mut table = Table::new(&["NAME", "LABELS"]);
            for ns in resp.into_inner().namespaces {
                if quiet {
                    println!("{}", ns.name);
                } else {
                    table.row(vec![ns.name, format_labels(&ns.labels)]);
                }
            }
            if !quiet {
                table.print()?;
            }
        }
        NamespacesCommand::Rm { names } => {
            let mut failed = 0;
            for name in names {
                match svc.delete(client.request(DeleteNamespaceRequest { name: name.clone() })).await {
                    Ok(_) => println!("{name}"),
                    Err(status) => {
                        eprintln!("berthctl: {}", status_error(status));
                        failed += 1;
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} namespace(s) not removed");
            }
        }
        NamespacesCommand::Label { name, labels } => {
            if labels.is_empty() {
                let resp =
                    svc.get(client.request(GetNamespaceRequest { name })).await.map_err(status_error)?.into_inner();
                let mut labels: Vec<_> = resp.namespace.map(|n| n.labels.into_iter().collect()).unwrap_or_default();
                labels.sort();
                for (k, v) in labels {
                    println!("{k}={v}");
                }
                return Ok(());
            }
            let labels = parse_labels(&labels)?;
            let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
            // An empty value removes the key: leave it out of the map but keep its path.
            let set = labels.into_iter().filter(|(_, v)| !v.is_empty()).collect();
            svc.update(client.request(UpdateNamespaceRequest {
                namespace: Some(Namespace { name, labels: set }),
                update_mask: Some(prost_types::FieldMask { paths }),
            }))
            .await
            .map_err(status_error)?;
        }
    }
    Ok(())
}
