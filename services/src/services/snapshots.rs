//! containerd.services.snapshots.v1.Snapshots over the snapshotter plugins, selected by the
//! request's `snapshotter` field; publishes /snapshot/prepare, /snapshot/commit and
//! /snapshot/remove events. A missing or unknown snapshotter is InvalidArgument, as
//! containerd ("snapshotter not loaded: x"). Snapshots made within a lease
//! (`containerd-lease`) are added to it.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use berth_core::filters::Filter;
use berth_proto::containerd::events::{SnapshotCommit, SnapshotPrepare, SnapshotRemove};
use berth_proto::containerd::services::snapshots::v1::snapshots_server::{Snapshots, SnapshotsServer};
use berth_proto::containerd::services::snapshots::v1::*;
use berth_proto::containerd::types::Mount as PbMount;
use berth_snapshots::{CreateOptions, Info as InfoModel, Kind as KindModel, Mount, SharedSnapshotter};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{blocking, grpc_service, request_lease, request_namespace, to_status};
use crate::builtin::{EVENTS, SNAPSHOTTER};
use crate::exchange::Exchange;
use crate::registry::{InitContext, InitError, Instance};

/// Infos per List response.
const LIST_BATCH: usize = 100;

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

struct SnapshotsService {
    snapshotters: BTreeMap<String, SharedSnapshotter>,
    events: Option<Arc<Exchange>>,
}

fn mounts_to_proto(mounts: Vec<Mount>) -> Vec<PbMount> {
    mounts
        .into_iter()
        .map(|m| PbMount { r#type: m.kind, source: m.source, target: m.target, options: m.options })
        .collect()
}

fn kind_to_proto(k: KindModel) -> Kind {
    match k {
        KindModel::View => Kind::View,
        KindModel::Active => Kind::Active,
        KindModel::Committed => Kind::Committed,
    }
}

fn info_to_proto(i: InfoModel) -> Info {
    Info {
        name: i.name,
        parent: i.parent,
        kind: kind_to_proto(i.kind) as i32,
        created_at: Some(i.created_at.into()),
        updated_at: Some(i.updated_at.into()),
        labels: i.labels.into_iter().collect(),
    }
}

fn info_from_proto(i: Info) -> InfoModel {
    InfoModel {
        name: i.name,
        parent: i.parent,
        kind: KindModel::Active, // not updatable; ignored
        created_at: std::time::SystemTime::UNIX_EPOCH,
        updated_at: std::time::SystemTime::UNIX_EPOCH,
        labels: i.labels.into_iter().collect(),
    }
}

impl SnapshotsService {
    fn get(&self, name: &str) -> Result<SharedSnapshotter, Status> {
        if name.is_empty() {
            return Err(Status::invalid_argument("snapshotter argument missing: invalid argument"));
        }
        self.snapshotters
            .get(name)
            .cloned()
            .ok_or_else(|| Status::invalid_argument(format!("snapshotter not loaded: {name}: invalid argument")))
    }

    fn publish<M: prost::Name>(&self, ns: &str, topic: &str, event: &M) {
        if let Some(ex) = &self.events {
            ex.publish(ns, topic, event);
        }
    }

    async fn create<T>(
        &self,
        req: Request<T>,
        view: bool,
        parts: impl FnOnce(T) -> (String, String, String, std::collections::HashMap<String, String>),
    ) -> Result<Vec<PbMount>, Status> {
        let ns = request_namespace(&req)?;
        let lease = request_lease(&req)?;
        let (snapshotter, key, parent, labels) = parts(req.into_inner());
        let sn = self.get(&snapshotter)?;
        let opts = CreateOptions { labels: labels.into_iter().collect(), lease };
        let (ns2, key2, parent2) = (ns.clone(), key.clone(), parent.clone());
        let mounts = blocking(move || {
            if view {
                sn.view(&ns2, &key2, &parent2, &opts)
            } else {
                sn.prepare(&ns2, &key2, &parent2, &opts)
            }
        })
        .await?;
        tracing::debug!(namespace = %ns, snapshotter = %snapshotter, key = %key, parent = %parent, view, "snapshot created");
        self.publish(&ns, "/snapshot/prepare", &SnapshotPrepare { key, parent, snapshotter });
        Ok(mounts_to_proto(mounts))
    }
}

#[tonic::async_trait]
impl Snapshots for SnapshotsService {
    async fn prepare(&self, req: Request<PrepareSnapshotRequest>) -> Result<Response<PrepareSnapshotResponse>, Status> {
        let mounts = self.create(req, false, |r| (r.snapshotter, r.key, r.parent, r.labels)).await?;
        Ok(Response::new(PrepareSnapshotResponse { mounts }))
    }

    async fn view(&self, req: Request<ViewSnapshotRequest>) -> Result<Response<ViewSnapshotResponse>, Status> {
        let mounts = self.create(req, true, |r| (r.snapshotter, r.key, r.parent, r.labels)).await?;
        Ok(Response::new(ViewSnapshotResponse { mounts }))
    }

    async fn mounts(&self, req: Request<MountsRequest>) -> Result<Response<MountsResponse>, Status> {
        let ns = request_namespace(&req)?;
        let r = req.into_inner();
        let sn = self.get(&r.snapshotter)?;
        let mounts = blocking(move || sn.mounts(&ns, &r.key)).await?;
        Ok(Response::new(MountsResponse { mounts: mounts_to_proto(mounts) }))
    }

    async fn commit(&self, req: Request<CommitSnapshotRequest>) -> Result<Response<()>, Status> {
        let ns = request_namespace(&req)?;
        let lease = request_lease(&req)?;
        let r = req.into_inner();
        let sn = self.get(&r.snapshotter)?;
        let opts = CreateOptions { labels: r.labels.into_iter().collect(), lease };
        let (ns2, name, key) = (ns.clone(), r.name.clone(), r.key.clone());
        blocking(move || sn.commit(&ns2, &name, &key, &opts)).await?;
        tracing::debug!(namespace = %ns, snapshotter = %r.snapshotter, key = %r.key, name = %r.name, "snapshot committed");
        self.publish(&ns, "/snapshot/commit", &SnapshotCommit { key: r.key, name: r.name, snapshotter: r.snapshotter });
        Ok(Response::new(()))
    }

    async fn remove(&self, req: Request<RemoveSnapshotRequest>) -> Result<Response<()>, Status> {
        let ns = request_namespace(&req)?;
        let r = req.into_inner();
        let sn = self.get(&r.snapshotter)?;
        let (ns2, key) = (ns.clone(), r.key.clone());
        blocking(move || sn.remove(&ns2, &key)).await?;
        tracing::debug!(namespace = %ns, snapshotter = %r.snapshotter, key = %r.key, "snapshot removed");
        self.publish(&ns, "/snapshot/remove", &SnapshotRemove { key: r.key, snapshotter: r.snapshotter });
        Ok(Response::new(()))
    }

    async fn stat(&self, req: Request<StatSnapshotRequest>) -> Result<Response<StatSnapshotResponse>, Status> {
        let ns = request_namespace(&req)?;
        let r = req.into_inner();
        let sn = self.get(&r.snapshotter)?;
        let info = blocking(move || sn.stat(&ns, &r.key)).await?;
        Ok(Response::new(StatSnapshotResponse { info: Some(info_to_proto(info)) }))
    }

    async fn update(&self, req: Request<UpdateSnapshotRequest>) -> Result<Response<UpdateSnapshotResponse>, Status> {
        let ns = request_namespace(&req)?;
        let r = req.into_inner();
        let sn = self.get(&r.snapshotter)?;
        let info = info_from_proto(r.info.ok_or_else(|| Status::invalid_argument("info must be set"))?);
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let updated = blocking(move || sn.update(&ns, &info, &paths)).await?;
        Ok(Response::new(UpdateSnapshotResponse { info: Some(info_to_proto(updated)) }))
    }

    type ListStream = ResponseStream<ListSnapshotsResponse>;

    async fn list(&self, req: Request<ListSnapshotsRequest>) -> Result<Response<Self::ListStream>, Status> {
        let ns = request_namespace(&req)?;
        let r = req.into_inner();
        let sn = self.get(&r.snapshotter)?;
        let filter = Filter::parse_all(&r.filters).map_err(to_status)?;
        let infos = blocking(move || sn.list(&ns, &filter)).await?;
        let batches: Vec<Result<ListSnapshotsResponse, Status>> = infos
            .chunks(LIST_BATCH)
            .map(|b| Ok(ListSnapshotsResponse { info: b.iter().cloned().map(info_to_proto).collect() }))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(batches))))
    }

    async fn usage(&self, req: Request<UsageRequest>) -> Result<Response<UsageResponse>, Status> {
        let ns = request_namespace(&req)?;
        let r = req.into_inner();
        let sn = self.get(&r.snapshotter)?;
        let u = blocking(move || sn.usage(&ns, &r.key)).await?;
        Ok(Response::new(UsageResponse { size: u.size, inodes: u.inodes }))
    }

    async fn cleanup(&self, req: Request<CleanupRequest>) -> Result<Response<()>, Status> {
        request_namespace(&req)?;
        let sn = self.get(&req.get_ref().snapshotter)?;
        let removed = blocking(move || sn.cleanup()).await?;
        tracing::info!(removed, "snapshot cleanup");
        Ok(Response::new(()))
    }
}

/// Every running snapshotter plugin by id.
pub fn snapshotters(ctx: &InitContext<'_>) -> BTreeMap<String, SharedSnapshotter> {
    ctx.instances(SNAPSHOTTER)
        .into_iter()
        .filter_map(|(id, inst)| inst.downcast::<SharedSnapshotter>().ok().map(|s| (id.to_string(), (*s).clone())))
        .collect()
}

/// Plugin init.
pub fn init(ctx: &mut InitContext<'_>) -> Result<Instance, InitError> {
    let svc = SnapshotsService { snapshotters: snapshotters(ctx), events: ctx.get(EVENTS).ok() };
    Ok(grpc_service!("containerd.services.snapshots.v1.Snapshots", SnapshotsServer::new(svc)))
}

/// Init of the `overlayfs` snapshotter plugin: skipped with the reason where overlayfs
/// cannot be mounted under the root.
pub fn init_overlayfs(ctx: &mut InitContext<'_>) -> Result<Instance, InitError> {
    let root = ctx.daemon.root.join("snapshots").join(berth_snapshots::OverlaySnapshotter::NAME);
    if let Err(e) = berth_snapshots::check_overlay_support(&root) {
        return Err(InitError::Skip(e.to_string()));
    }
    let meta = ctx.get(crate::builtin::METADATA)?;
    let sn = berth_snapshots::OverlaySnapshotter::open(&root, meta)?;
    finish_snapshotter(ctx, Arc::new(sn), &root)
}

/// Init of the `native` snapshotter plugin.
pub fn init_native(ctx: &mut InitContext<'_>) -> Result<Instance, InitError> {
    let root = ctx.daemon.root.join("snapshots").join(berth_snapshots::NativeSnapshotter::NAME);
    let meta = ctx.get(crate::builtin::METADATA)?;
    let sn = berth_snapshots::NativeSnapshotter::open(&root, meta)?;
    finish_snapshotter(ctx, Arc::new(sn), &root)
}

fn finish_snapshotter(
    ctx: &mut InitContext<'_>,
    sn: SharedSnapshotter,
    root: &std::path::Path,
) -> Result<Instance, InitError> {
    // Directories a crash left without records.
    match sn.cleanup() {
        Ok(0) => {}
        Ok(n) => tracing::info!(snapshotter = sn.name(), removed = n, "removed unreferenced snapshot directories"),
        Err(e) => tracing::warn!(snapshotter = sn.name(), error = %e, "snapshot cleanup failed"),
    }
    ctx.exports.insert("root".into(), root.display().to_string());
    ctx.platforms.push(berth_core::Platform::host());
    Ok(Arc::new(sn))
}
