//! berth.services.gc.v1.GC: run the garbage collector on demand (`berthctl gc`).

use std::sync::Arc;

use berth_proto::berth::services::gc::v1::gc_server::{Gc, GcServer};
use berth_proto::berth::services::gc::v1::{CollectRequest, CollectResponse};
use tonic::{Request, Response, Status};

use super::{grpc_service, to_status};
use crate::builtin::GC;
use crate::gc::GcScheduler;
use crate::registry::{InitContext, InitError, Instance};

struct GcService {
    gc: Arc<GcScheduler>,
}

#[tonic::async_trait]
impl Gc for GcService {
    async fn collect(&self, _: Request<CollectRequest>) -> Result<Response<CollectResponse>, Status> {
        let s = self.gc.collect_now().await.map_err(to_status)?;
        Ok(Response::new(CollectResponse {
            leases_removed: s.leases_removed,
            content_records_removed: s.records_removed,
            blobs_removed: s.blobs_removed,
            bytes_freed: s.bytes_freed,
            duration: prost_types::Duration::try_from(s.duration).ok(),
            snapshots_removed: s.snapshots_removed,
        }))
    }
}

/// Plugin init.
pub fn init(ctx: &mut InitContext<'_>) -> Result<Instance, InitError> {
    Ok(grpc_service!("berth.services.gc.v1.GC", GcServer::new(GcService { gc: ctx.get(GC)? })))
}
