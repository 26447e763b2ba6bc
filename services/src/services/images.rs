//! containerd.services.images.v1.Images on the metadata store; publishes /images/* events and
//! schedules garbage collection after deletes (`sync` waits for it).

use std::sync::Arc;
use std::time::SystemTime;

use berth_core::filters::Filter;
use berth_core::Descriptor;
use berth_metadata::{Image as ImageModel, MetadataStore};
use berth_proto::containerd::services::images::v1::images_server::{Images, ImagesServer};
use berth_proto::containerd::services::images::v1::*;
use berth_proto::containerd::types::Descriptor as PbDescriptor;
use tonic::{Request, Response, Status};

use super::{blocking, grpc_service, request_namespace, to_status};
use crate::builtin::{EVENTS, GC, METADATA};
use crate::exchange::Exchange;
use crate::gc::GcScheduler;
use crate::registry::{InitContext, InitError, Instance};

struct ImagesService {
    store: Arc<MetadataStore>,
    events: Arc<Exchange>,
    gc: Arc<GcScheduler>,
}

/// Wire descriptor → model.
pub fn descriptor_from_proto(d: Option<PbDescriptor>) -> Descriptor {
    let d = d.unwrap_or_default();
    Descriptor {
        media_type: d.media_type,
        digest: d.digest,
        size: d.size,
        annotations: d.annotations.into_iter().collect(),
    }
}

/// Model descriptor → wire.
pub fn descriptor_to_proto(d: &Descriptor) -> PbDescriptor {
    PbDescriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size,
        annotations: d.annotations.clone().into_iter().collect(),
    }
}

fn to_proto(i: ImageModel) -> Image {
    Image {
        target: Some(descriptor_to_proto(&i.target)),
        name: i.name,
        labels: i.labels.into_iter().collect(),
        created_at: Some(i.created_at.into()),
        updated_at: Some(i.updated_at.into()),
    }
}

fn from_proto(i: Option<Image>) -> Result<ImageModel, Status> {
    let i = i.ok_or_else(|| Status::invalid_argument("image must be set"))?;
    Ok(ImageModel {
        name: i.name,
        labels: i.labels.into_iter().collect(),
        target: descriptor_from_proto(i.target),
        created_at: SystemTime::UNIX_EPOCH,
        updated_at: SystemTime::UNIX_EPOCH,
    })
}

fn event_labels(i: &ImageModel) -> std::collections::HashMap<String, String> {
    i.labels.clone().into_iter().collect()
}

#[tonic::async_trait]
impl Images for ImagesService {
    async fn get(&self, req: Request<GetImageRequest>) -> Result<Response<GetImageResponse>, Status> {
        let ns = request_namespace(&req)?;
        let store = self.store.clone();
        let name = req.into_inner().name;
        let image = blocking(move || store.get_image(&ns, &name)).await?;
        Ok(Response::new(GetImageResponse { image: Some(to_proto(image)) }))
    }

    async fn list(&self, req: Request<ListImagesRequest>) -> Result<Response<ListImagesResponse>, Status> {
        let ns = request_namespace(&req)?;
        let filter = Filter::parse_all(&req.get_ref().filters).map_err(to_status)?;
        let store = self.store.clone();
        let all = blocking(move || store.list_images(&ns)).await?;
        Ok(Response::new(ListImagesResponse {
            images: all.into_iter().filter(|i| filter.matches(i)).map(to_proto).collect(),
        }))
    }

    async fn create(&self, req: Request<CreateImageRequest>) -> Result<Response<CreateImageResponse>, Status> {
        let ns = request_namespace(&req)?;
        let image = from_proto(req.into_inner().image)?;
        let store = self.store.clone();
        let ns2 = ns.clone();
        let created = blocking(move || store.create_image(&ns2, &image)).await?;
        self.events.publish(
            &ns,
            "/images/create",
            &ImageCreate { name: created.name.clone(), labels: event_labels(&created) },
        );
        tracing::info!(namespace = %ns, image = %created.name, digest = %created.target.digest, "image created");
        Ok(Response::new(CreateImageResponse { image: Some(to_proto(created)) }))
    }

    async fn update(&self, req: Request<UpdateImageRequest>) -> Result<Response<UpdateImageResponse>, Status> {
        let ns = request_namespace(&req)?;
        let req = req.into_inner();
        let image = from_proto(req.image)?;
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let store = self.store.clone();
        let ns2 = ns.clone();
        let updated = blocking(move || store.update_image(&ns2, &image, &paths)).await?;
        self.events.publish(
            &ns,
            "/images/update",
            &ImageUpdate { name: updated.name.clone(), labels: event_labels(&updated) },
        );
        // A new target may leave the old one unreferenced.
        self.gc.schedule();
        Ok(Response::new(UpdateImageResponse { image: Some(to_proto(updated)) }))
    }

    async fn delete(&self, req: Request<DeleteImageRequest>) -> Result<Response<()>, Status> {
        let ns = request_namespace(&req)?;
        let DeleteImageRequest { name, sync } = req.into_inner();
        let store = self.store.clone();
        let (ns2, name2) = (ns.clone(), name.clone());
        blocking(move || store.delete_image(&ns2, &name2)).await?;
        self.events.publish(&ns, "/images/delete", &ImageDelete { name: name.clone() });
        tracing::info!(namespace = %ns, image = %name, "image deleted");
        if sync {
            self.gc.collect_now().await.map_err(to_status)?;
        } else {
            self.gc.schedule();
        }
        Ok(Response::new(()))
    }
}

/// Plugin init.
pub fn init(ctx: &mut InitContext<'_>) -> Result<Instance, InitError> {
    let svc = ImagesService { store: ctx.get(METADATA)?, events: ctx.get(EVENTS)?, gc: ctx.get(GC)? };
    Ok(grpc_service!("containerd.services.images.v1.Images", ImagesServer::new(svc)))
}
