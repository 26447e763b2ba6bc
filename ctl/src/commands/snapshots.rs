//! `berthctl snapshots ls|info|tree|mounts|usage|prepare|view|commit|rm`.

use std::collections::BTreeMap;
use std::time::SystemTime;

use anyhow::{anyhow, bail, Result};
use berth_proto::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_proto::containerd::services::snapshots::v1::*;
use berth_proto::containerd::types::Mount;
use clap::{Args, Subcommand};
use tonic::Request;

use super::gc::human_bytes;
use super::leases::rfc3339;
use super::parse_labels;
use crate::client::{status_error, Client};
use crate::table::Table;

/// Snapshot commands, on one snapshotter.
#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    /// Snapshotter to use (`overlayfs`, `native`).
    #[arg(long, global = true, env = "BERTH_SNAPSHOTTER", default_value = "overlayfs")]
    pub snapshotter: String,
    #[command(subcommand)]
    command: SnapshotsCommand,
}

#[derive(Subcommand, Debug)]
enum SnapshotsCommand {
    /// List snapshots.
    #[command(visible_alias = "list")]
    Ls {
        /// Filters such as `kind==committed` or `labels."containerd.io/snapshot.ref"`.
        filters: Vec<String>,
    },
    /// Print a snapshot's info as JSON.
    Info {
        /// Key or name.
        key: String,
    },
    /// Print the snapshots as a tree of parents and children.
    Tree,
    /// Print the mount commands that give a snapshot's filesystem at `target`.
    Mounts {
        /// Where the commands mount.
        target: String,
        /// Key or name.
        key: String,
    },
    /// Disk usage of snapshots by themselves (all when no key is given).
    Usage {
        /// Keys or names.
        keys: Vec<String>,
    },
    /// Create an active snapshot; prints its mount commands when --target is given.
    Prepare {
        /// New key.
        key: String,
        /// Committed parent.
        parent: Option<String>,
        #[command(flatten)]
        create: CreateFlags,
    },
    /// Create a read-only view of a committed snapshot.
    View {
        /// New key.
        key: String,
        /// Committed parent.
        parent: String,
        #[command(flatten)]
        create: CreateFlags,
    },
    /// Commit an active snapshot under a name.
    Commit {
        /// Name of the committed snapshot.
        name: String,
        /// Key of the active snapshot.
        key: String,
        /// Labels as KEY=VALUE.
        #[arg(long = "label", short = 'l')]
        labels: Vec<String>,
        /// Add the committed snapshot to this lease.
        #[arg(long)]
        lease: Option<String>,
    },
    /// Remove snapshots (a parent only once its children are gone).
    #[command(visible_aliases = ["remove", "delete", "del"])]
    Rm {
        /// Keys or names.
        #[arg(required = true)]
        keys: Vec<String>,
    },
}

#[derive(Args, Debug)]
struct CreateFlags {
    /// Print mount commands for this target.
    #[arg(long)]
    target: Option<String>,
    /// Labels as KEY=VALUE.
    #[arg(long = "label", short = 'l')]
    labels: Vec<String>,
    /// Add the snapshot to this lease (protects it from garbage collection).
    #[arg(long)]
    lease: Option<String>,
}

fn kind_word(k: i32) -> &'static str {
    match Kind::try_from(k) {
        Ok(Kind::View) => "View",
        Ok(Kind::Active) => "Active",
        Ok(Kind::Committed) => "Committed",
        _ => "Unknown",
    }
}

/// `mount -t TYPE SOURCE TARGET -o OPTIONS`, as `ctr snapshots mounts` prints.
pub fn mount_command(m: &Mount, target: &str) -> String {
    let mut line = format!("mount -t {} {} {}", m.r#type, m.source, target);
    if !m.options.is_empty() {
        line.push_str(&format!(" -o {}", m.options.join(",")));
    }
    line
}

fn time(t: Option<prost_types::Timestamp>) -> String {
    t.and_then(|t| SystemTime::try_from(t).ok()).map(rfc3339).unwrap_or_default()
}

fn with_lease<T>(client: &Client, msg: T, lease: &Option<String>) -> Result<Request<T>> {
    let mut req = client.request(msg);
    if let Some(l) = lease {
        req.metadata_mut().insert("containerd-lease", l.parse().map_err(|_| anyhow!("lease {l:?} is not valid"))?);
    }
    Ok(req)
}

async fn list_all(
    svc: &mut SnapshotsClient<tonic::transport::Channel>,
    client: &Client,
    snapshotter: &str,
    filters: Vec<String>,
) -> Result<Vec<Info>> {
    let mut stream = svc
        .list(client.request(ListSnapshotsRequest { snapshotter: snapshotter.to_string(), filters }))
        .await
        .map_err(status_error)?
        .into_inner();
    let mut all = Vec::new();
    while let Some(batch) = stream.message().await.map_err(status_error)? {
        all.extend(batch.info);
    }
    Ok(all)
}

fn print_tree(children: &BTreeMap<String, Vec<String>>, name: &str, depth: usize, out: &mut String) {
    if depth == 0 {
        out.push_str(&format!("{name}\n"));
    } else {
        out.push_str(&format!("{}\\_ {name}\n", "  ".repeat(depth)));
    }
    for c in children.get(name).into_iter().flatten() {
        print_tree(children, c, depth + 1, out);
    }
}

/// Runs a snapshots command.
pub async fn run(client: &Client, args: SnapshotsArgs) -> Result<()> {
    let mut svc = SnapshotsClient::new(client.channel.clone());
    let sn = args.snapshotter;
    match args.command {
        SnapshotsCommand::Ls { filters } => {
            let mut table = Table::new(&["KEY", "PARENT", "KIND"]);
            for i in list_all(&mut svc, client, &sn, filters).await? {
                table.row(vec![i.name, i.parent, kind_word(i.kind).into()]);
            }
            table.print()?;
        }
        SnapshotsCommand::Info { key } => {
            let info = svc
                .stat(client.request(StatSnapshotRequest { snapshotter: sn, key }))
                .await
                .map_err(status_error)?
                .into_inner()
                .info
                .unwrap_or_default();
            let labels: BTreeMap<_, _> = info.labels.into_iter().collect();
            let json = serde_json::json!({
                "Kind": kind_word(info.kind),
                "Name": info.name,
                "Parent": info.parent,
                "Labels": labels,
                "Created": time(info.created_at),
                "Updated": time(info.updated_at),
            });
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
        SnapshotsCommand::Tree => {
            let all = list_all(&mut svc, client, &sn, Vec::new()).await?;
            let names: std::collections::HashSet<&str> = all.iter().map(|i| i.name.as_str()).collect();
            let mut children: BTreeMap<String, Vec<String>> = BTreeMap::new();
            let mut roots = Vec::new();
            for i in &all {
                if i.parent.is_empty() || !names.contains(i.parent.as_str()) {
                    roots.push(i.name.clone());
                } else {
                    children.entry(i.parent.clone()).or_default().push(i.name.clone());
                }
            }
            let mut out = String::new();
            for r in roots {
                print_tree(&children, &r, 0, &mut out);
            }
            print!("{out}");
        }
        SnapshotsCommand::Mounts { target, key } => {
            let mounts = svc
                .mounts(client.request(MountsRequest { snapshotter: sn, key }))
                .await
                .map_err(status_error)?
                .into_inner()
                .mounts;
            for m in &mounts {
                println!("{}", mount_command(m, &target));
            }
        }
        SnapshotsCommand::Usage { keys } => {
            let keys = if keys.is_empty() {
                list_all(&mut svc, client, &sn, Vec::new()).await?.into_iter().map(|i| i.name).collect()
            } else {
                keys
            };
            let mut table = Table::new(&["KEY", "SIZE", "INODES"]);
            for key in keys {
                let u = svc
                    .usage(client.request(UsageRequest { snapshotter: sn.clone(), key: key.clone() }))
                    .await
                    .map_err(status_error)?
                    .into_inner();
                table.row(vec![key, human_bytes(u64::try_from(u.size).unwrap_or(0)), u.inodes.to_string()]);
            }
            table.print()?;
        }
        SnapshotsCommand::Prepare { key, parent, create } => {
            let req = PrepareSnapshotRequest {
                snapshotter: sn,
                key,
                parent: parent.unwrap_or_default(),
                labels: parse_labels(&create.labels)?.into_iter().collect(),
            };
            let mounts =
                svc.prepare(with_lease(client, req, &create.lease)?).await.map_err(status_error)?.into_inner().mounts;
            if let Some(target) = create.target {
                for m in &mounts {
                    println!("{}", mount_command(m, &target));
                }
            }
        }
        SnapshotsCommand::View { key, parent, create } => {
            let req = ViewSnapshotRequest {
                snapshotter: sn,
                key,
                parent,
                labels: parse_labels(&create.labels)?.into_iter().collect(),
            };
            let mounts =
                svc.view(with_lease(client, req, &create.lease)?).await.map_err(status_error)?.into_inner().mounts;
            if let Some(target) = create.target {
                for m in &mounts {
                    println!("{}", mount_command(m, &target));
                }
            }
        }
        SnapshotsCommand::Commit { name, key, labels, lease } => {
            let req = CommitSnapshotRequest {
                snapshotter: sn,
                name,
                key,
                labels: parse_labels(&labels)?.into_iter().collect(),
            };
            svc.commit(with_lease(client, req, &lease)?).await.map_err(status_error)?;
        }
        SnapshotsCommand::Rm { keys } => {
            let mut failed = 0;
            for key in keys {
                let req = RemoveSnapshotRequest { snapshotter: sn.clone(), key: key.clone() };
                if let Err(s) = svc.remove(client.request(req)).await {
                    eprintln!("berthctl: {}", status_error(s));
                    failed += 1;
                }
            }
            if failed > 0 {
                bail!("{failed} snapshot(s) not removed");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_lines_and_tree() {
        let m = Mount {
            r#type: "bind".into(),
            source: "/s".into(),
            target: String::new(),
            options: vec!["ro".into(), "rbind".into()],
        };
        assert_eq!(mount_command(&m, "/mnt"), "mount -t bind /s /mnt -o ro,rbind");
        let children: BTreeMap<String, Vec<String>> =
            [("a".to_string(), vec!["b".to_string()]), ("b".to_string(), vec!["c".to_string()])].into();
        let mut out = String::new();
        print_tree(&children, "a", 0, &mut out);
        assert_eq!(out, "a\n  \\_ b\n    \\_ c\n");
    }
}
