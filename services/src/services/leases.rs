//! containerd.services.leases.v1.Leases on the metadata store. Deleting a lease schedules a
//! garbage collection (`sync` waits for it).

use std::sync::Arc;

use berth_core::filters::Filter;
use berth_metadata::{Lease as LeaseModel, LeaseResource, MetadataStore};
use berth_proto::containerd::services::leases::v1::leases_server::{Leases, LeasesServer};
use berth_proto::containerd::services::leases::v1::*;
use tonic::{Request, Response, Status};

use super::{blocking, grpc_service, request_namespace, to_status};
use crate::builtin::{GC, METADATA};
use crate::gc::GcScheduler;
use crate::registry::{InitContext, InitError, Instance};

struct LeasesService {
    store: Arc<MetadataStore>,
    gc: Arc<GcScheduler>,
}

fn to_proto(l: LeaseModel) -> Lease {
    Lease { id: l.id, created_at: Some(l.created_at.into()), labels: l.labels.into_iter().collect() }
}

fn resource(r: Option<Resource>) -> Result<LeaseResource, Status> {
    let r = r.ok_or_else(|| Status::invalid_argument("resource must be set"))?;
    Ok(LeaseResource { kind: r.r#type, id: r.id })
}

#[tonic::async_trait]
impl Leases for LeasesService {
    async fn create(&self, req: Request<CreateRequest>) -> Result<Response<CreateResponse>, Status> {
        let ns = request_namespace(&req)?;
        let CreateRequest { id, labels } = req.into_inner();
        // As containerd: an empty id asks the server for a random one (`ctr leases create`).
        let id = if id.is_empty() { uuid::Uuid::new_v4().simple().to_string() } else { id };
        let store = self.store.clone();
        let lease = blocking(move || store.create_lease(&ns, &id, labels.into_iter().collect())).await?;
        Ok(Response::new(CreateResponse { lease: Some(to_proto(lease)) }))
    }

    async fn delete(&self, req: Request<DeleteRequest>) -> Result<Response<()>, Status> {
        let ns = request_namespace(&req)?;
        let DeleteRequest { id, sync } = req.into_inner();
        let store = self.store.clone();
        blocking(move || store.delete_lease(&ns, &id)).await?;
        if sync {
            self.gc.collect_now().await.map_err(to_status)?;
        } else {
            self.gc.schedule();
        }
        Ok(Response::new(()))
    }

    async fn list(&self, req: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let ns = request_namespace(&req)?;
        let filter = Filter::parse_all(&req.get_ref().filters).map_err(to_status)?;
        let store = self.store.clone();
        let all = blocking(move || store.list_leases(&ns)).await?;
        Ok(Response::new(ListResponse {
            leases: all.into_iter().filter(|l| filter.matches(l)).map(to_proto).collect(),
        }))
    }

    async fn add_resource(&self, req: Request<AddResourceRequest>) -> Result<Response<()>, Status> {
        let ns = request_namespace(&req)?;
        let AddResourceRequest { id, resource: r } = req.into_inner();
        let r = resource(r)?;
        let store = self.store.clone();
        blocking(move || store.add_lease_resource(&ns, &id, &r)).await?;
        Ok(Response::new(()))
    }

    async fn delete_resource(&self, req: Request<DeleteResourceRequest>) -> Result<Response<()>, Status> {
        let ns = request_namespace(&req)?;
        let DeleteResourceRequest { id, resource: r } = req.into_inner();
        let r = resource(r)?;
        let store = self.store.clone();
        blocking(move || store.delete_lease_resource(&ns, &id, &r)).await?;
        self.gc.schedule();
        Ok(Response::new(()))
    }

    async fn list_resources(
        &self,
        req: Request<ListResourcesRequest>,
    ) -> Result<Response<ListResourcesResponse>, Status> {
        let ns = request_namespace(&req)?;
        let id = req.into_inner().id;
        let store = self.store.clone();
        let list = blocking(move || store.lease_resources(&ns, &id)).await?;
        Ok(Response::new(ListResourcesResponse {
            resources: list.into_iter().map(|r| Resource { id: r.id, r#type: r.kind }).collect(),
        }))
    }
}

/// Plugin init.
pub fn init(ctx: &mut InitContext<'_>) -> Result<Instance, InitError> {
    let svc = LeasesService { store: ctx.get(METADATA)?, gc: ctx.get(GC)? };
    Ok(grpc_service!("containerd.services.leases.v1.Leases", LeasesServer::new(svc)))
}
