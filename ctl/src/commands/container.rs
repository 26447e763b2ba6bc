//! `berthctl container ls|info|rm`.

use std::time::SystemTime;

use anyhow::{bail, Result};
use berth_proto::containerd::services::containers::v1::containers_client::ContainersClient;
use berth_proto::containerd::services::containers::v1::*;
use clap::Subcommand;
use serde_json::{json, Value};

use super::format_labels;
use super::leases::rfc3339;
use crate::client::{status_error, Client};
use crate::table::Table;

/// Container commands.
#[derive(Subcommand, Debug)]
pub enum ContainerCommand {
    /// List containers.
    #[command(visible_alias = "list")]
    Ls {
        /// Print only ids.
        #[arg(long, short)]
        quiet: bool,
        /// Filters such as `image==busybox` or `labels."k"==v`.
        filters: Vec<String>,
    },
    /// Print a container's record as JSON (the spec decoded).
    Info {
        /// Container id.
        id: String,
        /// Print only the OCI runtime spec.
        #[arg(long)]
        spec: bool,
    },
    /// Delete containers (their snapshots become collectable).
    #[command(visible_aliases = ["remove", "delete", "del"])]
    Rm {
        /// Container ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

fn time(t: Option<prost_types::Timestamp>) -> String {
    t.and_then(|t| SystemTime::try_from(t).ok()).map(rfc3339).unwrap_or_default()
}

/// The JSON of an `Any`: its value parsed as JSON when it is JSON, else its size.
fn any_json(a: &prost_types::Any) -> Value {
    match serde_json::from_slice::<Value>(&a.value) {
        Ok(v) => json!({ "type_url": a.type_url, "value": v }),
        Err(_) => json!({ "type_url": a.type_url, "size": a.value.len() }),
    }
}

/// A container as JSON, shaped as `ctr containers info` prints it.
pub fn container_json(c: &Container) -> Value {
    let runtime = c.runtime.clone().unwrap_or_default();
    json!({
        "ID": c.id,
        "Labels": c.labels,
        "Image": c.image,
        "Runtime": { "Name": runtime.name, "Options": runtime.options.as_ref().map(any_json) },
        "SnapshotKey": c.snapshot_key,
        "Snapshotter": c.snapshotter,
        "CreatedAt": time(c.created_at),
        "UpdatedAt": time(c.updated_at),
        "Extensions": c.extensions.iter().map(|(k, v)| (k.clone(), any_json(v))).collect::<serde_json::Map<_, _>>(),
        "SandboxID": c.sandbox,
        "Spec": c.spec.as_ref().map(|s| serde_json::from_slice::<Value>(&s.value).unwrap_or(Value::Null)),
    })
}

/// Runs a container command.
pub async fn run(client: &Client, cmd: ContainerCommand) -> Result<()> {
    let mut svc = ContainersClient::new(client.channel.clone());
    match cmd {
        ContainerCommand::Ls { quiet, filters } => {
            let list = svc
                .list(client.request(ListContainersRequest { filters }))
                .await
                .map_err(status_error)?
                .into_inner()
                .containers;
            let mut table = Table::new(&["CONTAINER", "IMAGE", "RUNTIME", "CREATED AT", "LABELS"]);
            for c in list {
                if quiet {
                    println!("{}", c.id);
                    continue;
                }
                let runtime = c.runtime.as_ref().map(|r| r.name.clone()).unwrap_or_default();
                let image = if c.image.is_empty() { "-".to_string() } else { c.image.clone() };
                table.row(vec![c.id.clone(), image, runtime, time(c.created_at), format_labels(&c.labels)]);
            }
            if !quiet {
                table.print()?;
            }
        }
        ContainerCommand::Info { id, spec } => {
            let c = svc
                .get(client.request(GetContainerRequest { id }))
                .await
                .map_err(status_error)?
                .into_inner()
                .container
                .unwrap_or_default();
            let mut v = container_json(&c);
            if spec {
                v = v["Spec"].take();
            }
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        ContainerCommand::Rm { ids } => {
            let mut failed = 0;
            for id in ids {
                match svc.delete(client.request(DeleteContainerRequest { id: id.clone() })).await {
                    Ok(_) => println!("{id}"),
                    Err(s) => {
                        eprintln!("berthctl: {}", status_error(s));
                        failed += 1;
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} container(s) not removed");
            }
        }
    }
    Ok(())
}
