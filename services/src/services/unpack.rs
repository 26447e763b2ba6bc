//! berth.services.unpack.v1.Unpack: unpack an image into a snapshotter (`berthctl image
//! unpack`, and import/pull after they fetch).

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_core::Platform;
use berth_proto::berth::services::unpack::v1::unpack_server::{Unpack, UnpackServer};
use berth_proto::berth::services::unpack::v1::{UnpackRequest, UnpackResponse};
use berth_snapshots::SharedSnapshotter;
use berth_unpack::Unpacker;
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

use super::{blocking, grpc_service, request_lease, request_namespace};
use crate::builtin::{CONTENT, METADATA, UNPACK};
use crate::registry::{InitContext, InitError, Instance};

/// Settings of `[plugins."io.berth.unpack.v1.unpacker"]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UnpackConfig {
    /// Snapshotter used when a request names none.
    pub snapshotter: String,
    /// Layers extracted at once; 0 picks twice the CPU count, at least 4 (extraction waits
    /// on the disk as much as on the CPU).
    pub parallelism: usize,
}

impl Default for UnpackConfig {
    fn default() -> Self {
        UnpackConfig { snapshotter: "overlayfs".into(), parallelism: 0 }
    }
}

/// The `io.berth.unpack.v1` instance: the unpacker and the snapshotters it may use.
pub struct UnpackPlugin {
    unpacker: Unpacker,
    snapshotters: BTreeMap<String, SharedSnapshotter>,
    default_snapshotter: String,
}

impl UnpackPlugin {
    /// The snapshotter called `name` (the default when empty).
    pub fn snapshotter(&self, name: &str) -> Result<SharedSnapshotter, berth_core::Error> {
        let name = if name.is_empty() { &self.default_snapshotter } else { name };
        self.snapshotters
            .get(name)
            .cloned()
            .ok_or_else(|| berth_core::Error::invalid_argument(format!("snapshotter not loaded: {name}")))
    }

    /// The unpacker.
    pub fn unpacker(&self) -> &Unpacker {
        &self.unpacker
    }

    /// Unpacks `image` (blocking).
    pub fn unpack(
        &self,
        ns: &str,
        image: &str,
        snapshotter: &str,
        platform: &Platform,
        lease: Option<&str>,
    ) -> berth_core::Result<berth_unpack::UnpackOutcome> {
        let sn = self.snapshotter(snapshotter)?;
        self.unpacker.unpack(ns, image, sn.as_ref(), platform, lease)
    }
}

/// Plugin init for `io.berth.unpack.v1` `unpacker`.
pub fn init_unpacker(ctx: &mut InitContext<'_>) -> Result<Instance, InitError> {
    let cfg: UnpackConfig = ctx.config()?;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let parallelism = if cfg.parallelism == 0 { (cores * 2).max(4) } else { cfg.parallelism };
    let snapshotters = super::snapshots::snapshotters(ctx);
    let mut cfg = cfg;
    if !snapshotters.contains_key(&cfg.snapshotter) {
        // Where overlayfs cannot run, the built-in default falls back to native rather than
        // leaving the host without unpack; an explicitly configured one must exist.
        if cfg.snapshotter == UnpackConfig::default().snapshotter && snapshotters.contains_key("native") {
            tracing::info!("overlayfs is not loaded; unpacking into the native snapshotter");
            cfg.snapshotter = "native".into();
        } else {
            return Err(InitError::Skip(format!("default snapshotter {:?} is not loaded", cfg.snapshotter)));
        }
    }
    ctx.exports.insert("snapshotter".into(), cfg.snapshotter.clone());
    ctx.exports.insert("parallelism".into(), parallelism.to_string());
    let unpacker =
        Unpacker::new(ctx.get(METADATA)?, berth_content::ContentStore::clone(&*ctx.get(CONTENT)?), parallelism);
    Ok(Arc::new(UnpackPlugin { unpacker, snapshotters, default_snapshotter: cfg.snapshotter }))
}

struct UnpackService {
    plugin: Arc<UnpackPlugin>,
}

#[tonic::async_trait]
impl Unpack for UnpackService {
    async fn unpack(&self, req: Request<UnpackRequest>) -> Result<Response<UnpackResponse>, Status> {
        let ns = request_namespace(&req)?;
        let lease = request_lease(&req)?;
        let r = req.into_inner();
        let platform = match r.platform {
            Some(p) if !p.os.is_empty() => Platform { os: p.os, architecture: p.architecture, variant: p.variant },
            _ => Platform::host(),
        };
        let plugin = self.plugin.clone();
        let out = blocking(move || plugin.unpack(&ns, &r.image, &r.snapshotter, &platform, lease.as_deref())).await?;
        Ok(Response::new(UnpackResponse {
            chain_id: out.chain_id.to_string(),
            layers: out.layers as u32,
            extracted: out.extracted as u32,
            bytes: out.bytes,
            duration: prost_types::Duration::try_from(out.duration).ok(),
        }))
    }
}

/// Plugin init for the gRPC service.
pub fn init(ctx: &mut InitContext<'_>) -> Result<Instance, InitError> {
    let plugin = ctx.get::<UnpackPlugin>(UNPACK)?;
    Ok(grpc_service!("berth.services.unpack.v1.Unpack", UnpackServer::new(UnpackService { plugin })))
}
