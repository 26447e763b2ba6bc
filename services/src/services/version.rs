//! containerd.services.version.v1.Version: the daemon's version and source revision.

use berth_proto::containerd::services::version::v1::version_server::{Version, VersionServer};
use berth_proto::containerd::services::version::v1::VersionResponse;
use tonic::{Request, Response, Status};

use super::grpc_service;
use crate::registry::{InitContext, InitError, Instance};

/// Version of this build.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Source revision of this build (git commit, or "unknown").
pub const REVISION: &str = env!("BERTH_REVISION");

struct VersionService;

#[tonic::async_trait]
impl Version for VersionService {
    async fn version(&self, _: Request<()>) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse { version: VERSION.into(), revision: REVISION.into() }))
    }
}

/// Plugin init.
pub fn init(_: &mut InitContext<'_>) -> Result<Instance, InitError> {
    Ok(grpc_service!("containerd.services.version.v1.Version", VersionServer::new(VersionService)))
}
