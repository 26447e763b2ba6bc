//! containerd.services.containers.v1.Containers on the metadata store; publishes
//! /containers/* events and schedules garbage collection after deletes (the snapshot a
//! container held may be free). As in containerd, a `containerd-lease` header adds nothing:
//! containers are GC roots themselves.

use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use berth_core::filters::Filter;
use berth_metadata::{AnyValue, Container as Model, ContainerRuntime, MetadataStore};
use berth_proto::containerd::events::{container_create, ContainerCreate, ContainerDelete, ContainerUpdate};
use berth_proto::containerd::services::containers::v1::containers_server::{Containers, ContainersServer};
use berth_proto::containerd::services::containers::v1::*;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{blocking, grpc_service, request_namespace, to_status};
use crate::builtin::{EVENTS, GC, METADATA, RUNTIME};
use crate::exchange::Exchange;
use crate::gc::GcScheduler;
use crate::registry::{InitContext, InitError, Instance};

struct ContainersService {
    store: Arc<MetadataStore>,
    events: Arc<Exchange>,
    gc: Arc<GcScheduler>,
    runtime: Option<Arc<berth_runtime::ShimManager>>,
}

fn any_from(a: prost_types::Any) -> AnyValue {
    AnyValue { type_url: a.type_url, value: a.value }
}

fn any_to(a: AnyValue) -> prost_types::Any {
    prost_types::Any { type_url: a.type_url, value: a.value }
}

/// Model → wire.
pub fn to_proto(c: Model) -> Container {
    Container {
        id: c.id,
        labels: c.labels.into_iter().collect(),
        image: c.image,
        runtime: Some(container::Runtime { name: c.runtime.name, options: c.runtime.options.map(any_to) }),
        spec: c.spec.map(any_to),
        snapshotter: c.snapshotter,
        snapshot_key: c.snapshot_key,
        created_at: Some(c.created_at.into()),
        updated_at: Some(c.updated_at.into()),
        extensions: c.extensions.into_iter().map(|(k, v)| (k, any_to(v))).collect(),
        sandbox: c.sandbox,
    }
}

/// Wire → model.
pub fn from_proto(c: Option<Container>) -> Result<Model, Status> {
    let c = c.ok_or_else(|| Status::invalid_argument("container must be set"))?;
    let runtime = c.runtime.unwrap_or_default();
    Ok(Model {
        id: c.id,
        labels: c.labels.into_iter().collect(),
        image: c.image,
        runtime: ContainerRuntime { name: runtime.name, options: runtime.options.map(any_from) },
        spec: c.spec.map(any_from),
        snapshotter: c.snapshotter,
        snapshot_key: c.snapshot_key,
        extensions: c.extensions.into_iter().map(|(k, v)| (k, any_from(v))).collect(),
        sandbox: c.sandbox,
        created_at: SystemTime::UNIX_EPOCH,
        updated_at: SystemTime::UNIX_EPOCH,
    })
}

impl ContainersService {
    async fn list_filtered(&self, ns: String, filters: &[String]) -> Result<Vec<Container>, Status> {
        let filter = Filter::parse_all(filters).map_err(to_status)?;
        let store = self.store.clone();
        let all = blocking(move || store.list_containers(&ns)).await?;
        Ok(all.into_iter().filter(|c| filter.matches(c)).map(to_proto).collect())
    }
}

type ListStream = Pin<Box<dyn Stream<Item = Result<ListContainerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Containers for ContainersService {
    async fn get(&self, req: Request<GetContainerRequest>) -> Result<Response<GetContainerResponse>, Status> {
        let ns = request_namespace(&req)?;
        let id = req.into_inner().id;
        let store = self.store.clone();
        let c = blocking(move || store.get_container(&ns, &id)).await?;
        Ok(Response::new(GetContainerResponse { container: Some(to_proto(c)) }))
    }

    async fn list(&self, req: Request<ListContainersRequest>) -> Result<Response<ListContainersResponse>, Status> {
        let ns = request_namespace(&req)?;
        let containers = self.list_filtered(ns, &req.get_ref().filters).await?;
        Ok(Response::new(ListContainersResponse { containers }))
    }

    type ListStreamStream = ListStream;

    async fn list_stream(&self, req: Request<ListContainersRequest>) -> Result<Response<ListStream>, Status> {
        let ns = request_namespace(&req)?;
        let containers = self.list_filtered(ns, &req.get_ref().filters).await?;
        let items = containers.into_iter().map(|c| Ok(ListContainerMessage { container: Some(c) }));
        Ok(Response::new(Box::pin(tokio_stream::iter(items))))
    }

    async fn create(&self, req: Request<CreateContainerRequest>) -> Result<Response<CreateContainerResponse>, Status> {
        let ns = request_namespace(&req)?;
        let c = from_proto(req.into_inner().container)?;
        let store = self.store.clone();
        let ns2 = ns.clone();
        let created = blocking(move || store.create_container(&ns2, &c)).await?;
        self.events.publish(
            &ns,
            "/containers/create",
            &ContainerCreate {
                id: created.id.clone(),
                image: created.image.clone(),
                runtime: Some(container_create::Runtime {
                    name: created.runtime.name.clone(),
                    options: created.runtime.options.clone().map(any_to),
                }),
            },
        );
        tracing::info!(namespace = %ns, container = %created.id, "container created");
        Ok(Response::new(CreateContainerResponse { container: Some(to_proto(created)) }))
    }

    async fn update(&self, req: Request<UpdateContainerRequest>) -> Result<Response<UpdateContainerResponse>, Status> {
        let ns = request_namespace(&req)?;
        let req = req.into_inner();
        let c = from_proto(req.container)?;
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let store = self.store.clone();
        let ns2 = ns.clone();
        let updated = blocking(move || store.update_container(&ns2, &c, &paths)).await?;
        self.events.publish(
            &ns,
            "/containers/update",
            &ContainerUpdate {
                id: updated.id.clone(),
                image: updated.image.clone(),
                labels: updated.labels.clone().into_iter().collect(),
                snapshot_key: updated.snapshot_key.clone(),
            },
        );
        // A new snapshot key may leave the old snapshot unreferenced.
        self.gc.schedule();
        Ok(Response::new(UpdateContainerResponse { container: Some(to_proto(updated)) }))
    }

    async fn delete(&self, req: Request<DeleteContainerRequest>) -> Result<Response<()>, Status> {
        let ns = request_namespace(&req)?;
        let id = req.into_inner().id;
        // As containerd's client and Docker do: a container's task goes first. Without this the
        // record would vanish under a running shim, and its snapshot could be collected.
        if self.runtime.as_ref().is_some_and(|r| r.get(&ns, &id).is_ok()) {
            return Err(Status::failed_precondition(format!(
                "container {id:?} has a task: delete the task first (kill it if it is running)"
            )));
        }
        let store = self.store.clone();
        let (ns2, id2) = (ns.clone(), id.clone());
        blocking(move || store.delete_container(&ns2, &id2)).await?;
        self.events.publish(&ns, "/containers/delete", &ContainerDelete { id: id.clone() });
        tracing::info!(namespace = %ns, container = %id, "container deleted");
        self.gc.schedule();
        Ok(Response::new(()))
    }
}

/// Plugin init.
pub fn init(ctx: &mut InitContext<'_>) -> Result<Instance, InitError> {
    let svc = ContainersService {
        store: ctx.get(METADATA)?,
        events: ctx.get(EVENTS)?,
        gc: ctx.get(GC)?,
        // Optional: without a runtime there are no tasks to protect.
        runtime: ctx.get(RUNTIME).ok(),
    };
    Ok(grpc_service!("containerd.services.containers.v1.Containers", ContainersServer::new(svc)))
}
