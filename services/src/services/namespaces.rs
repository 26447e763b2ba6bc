//! containerd.services.namespaces.v1.Namespaces on top of the metadata store.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_core::filters::Filter;
use berth_metadata::{MetadataStore, Namespace as NamespaceModel};
use berth_proto::containerd::services::namespaces::v1::namespaces_server::{Namespaces, NamespacesServer};
use berth_proto::containerd::services::namespaces::v1::*;
use tonic::{Request, Response, Status};

use super::{blocking, grpc_service, to_status};
use crate::builtin::{EVENTS, METADATA};
use crate::exchange::Exchange;
use crate::registry::{InitContext, InitError, Instance};
use berth_proto::containerd::events::{NamespaceCreate, NamespaceDelete, NamespaceUpdate};

struct NamespacesService {
    store: Arc<MetadataStore>,
    events: Arc<Exchange>,
}

fn to_proto(ns: NamespaceModel) -> Namespace {
    Namespace { name: ns.name, labels: ns.labels.into_iter().collect() }
}

fn required(ns: Option<Namespace>) -> Result<Namespace, Status> {
    ns.ok_or_else(|| Status::invalid_argument("namespace is required in the request"))
}

#[tonic::async_trait]
impl Namespaces for NamespacesService {
    async fn get(&self, req: Request<GetNamespaceRequest>) -> Result<Response<GetNamespaceResponse>, Status> {
        let store = self.store.clone();
        let name = req.into_inner().name;
        let ns = blocking(move || store.get_namespace(&name)).await?;
        Ok(Response::new(GetNamespaceResponse { namespace: Some(to_proto(ns)) }))
    }

    async fn list(&self, req: Request<ListNamespacesRequest>) -> Result<Response<ListNamespacesResponse>, Status> {
        let filter = Filter::parse_all(&[req.get_ref().filter.as_str()]).map_err(to_status)?;
        let store = self.store.clone();
        let all = blocking(move || store.list_namespaces()).await?;
        let namespaces = all.into_iter().filter(|n| filter.matches(n)).map(to_proto).collect();
        Ok(Response::new(ListNamespacesResponse { namespaces }))
    }

    async fn create(&self, req: Request<CreateNamespaceRequest>) -> Result<Response<CreateNamespaceResponse>, Status> {
        let ns = required(req.into_inner().namespace)?;
        let store = self.store.clone();
        let created =
            blocking(move || store.create_namespace(&ns.name, ns.labels.into_iter().collect::<BTreeMap<_, _>>()))
                .await?;
        tracing::info!(namespace = %created.name, "namespace created");
        let labels = created.labels.clone().into_iter().collect();
        self.events.publish(
            &created.name,
            "/namespaces/create",
            &NamespaceCreate { name: created.name.clone(), labels },
        );
        Ok(Response::new(CreateNamespaceResponse { namespace: Some(to_proto(created)) }))
    }

    async fn update(&self, req: Request<UpdateNamespaceRequest>) -> Result<Response<UpdateNamespaceResponse>, Status> {
        let req = req.into_inner();
        let ns = required(req.namespace)?;
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let store = self.store.clone();
        let labels: BTreeMap<_, _> = ns.labels.into_iter().collect();
        let updated = blocking(move || store.update_namespace(&ns.name, &labels, &paths)).await?;
        let labels = updated.labels.clone().into_iter().collect();
        self.events.publish(
            &updated.name,
            "/namespaces/update",
            &NamespaceUpdate { name: updated.name.clone(), labels },
        );
        Ok(Response::new(UpdateNamespaceResponse { namespace: Some(to_proto(updated)) }))
    }

    async fn delete(&self, req: Request<DeleteNamespaceRequest>) -> Result<Response<()>, Status> {
        let name = req.into_inner().name;
        let store = self.store.clone();
        let shown = name.clone();
        blocking(move || store.delete_namespace(&name)).await?;
        tracing::info!(namespace = %shown, "namespace deleted");
        self.events.publish(&shown, "/namespaces/delete", &NamespaceDelete { name: shown.clone() });
        Ok(Response::new(()))
    }
}

/// Plugin init.
pub fn init(ctx: &mut InitContext<'_>) -> Result<Instance, InitError> {
    let store = ctx.get::<MetadataStore>(METADATA)?;
    let events = ctx.get::<Exchange>(EVENTS)?;
    Ok(grpc_service!(
        "containerd.services.namespaces.v1.Namespaces",
        NamespacesServer::new(NamespacesService { store, events })
    ))
}
