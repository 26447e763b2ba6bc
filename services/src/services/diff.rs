//! containerd.services.diff.v1.Diff on the walking differ (`berth_diff::Differ`): Apply puts
//! a layer blob from the content store onto mounts, Diff writes the layer between two sets of
//! mounts into the content store.
//!
//! Codes: a malformed descriptor or a hostile layer (paths leaving the target, corrupt data)
//! is InvalidArgument; a blob whose digest or size differs from its descriptor is
//! FailedPrecondition; a media type that is not a layer is Unimplemented, as containerd.

use std::sync::Arc;

use berth_core::Descriptor;
use berth_diff::{DiffSpec, Differ};
use berth_mount::Mount;
use berth_proto::containerd::services::diff::v1::diff_server::{Diff, DiffServer};
use berth_proto::containerd::services::diff::v1::{ApplyRequest, ApplyResponse, DiffRequest, DiffResponse};
use berth_proto::containerd::types;
use tonic::{Request, Response, Status};

use super::{blocking, grpc_service, request_lease, request_namespace};
use crate::builtin::{CONTENT, DIFFER};
use crate::registry::{InitContext, InitError, Instance};

struct DiffService {
    differ: Arc<Differ>,
}

fn mounts_from_proto(mounts: Vec<types::Mount>) -> Vec<Mount> {
    mounts
        .into_iter()
        .map(|m| Mount { kind: m.r#type, source: m.source, target: m.target, options: m.options })
        .collect()
}

fn descriptor_to_proto(d: Descriptor) -> types::Descriptor {
    types::Descriptor {
        media_type: d.media_type,
        digest: d.digest,
        size: d.size,
        annotations: d.annotations.into_iter().collect(),
    }
}

#[tonic::async_trait]
impl Diff for DiffService {
    async fn apply(&self, req: Request<ApplyRequest>) -> Result<Response<ApplyResponse>, Status> {
        let ns = request_namespace(&req)?;
        let req = req.into_inner();
        let desc = req.diff.ok_or_else(|| Status::invalid_argument("apply needs the descriptor of a layer"))?;
        let desc = Descriptor {
            media_type: desc.media_type,
            digest: desc.digest,
            size: desc.size,
            annotations: desc.annotations.into_iter().collect(),
        };
        if !req.payloads.is_empty() {
            // Payloads feed stream processors (decryption), which berth has none of.
            tracing::debug!(payloads = req.payloads.len(), "ignoring apply payloads");
        }
        let mounts = mounts_from_proto(req.mounts);
        let differ = self.differ.clone();
        let applied = blocking(move || differ.apply(&ns, &desc, &mounts)).await?;
        Ok(Response::new(ApplyResponse { applied: Some(descriptor_to_proto(applied)) }))
    }

    async fn diff(&self, req: Request<DiffRequest>) -> Result<Response<DiffResponse>, Status> {
        let ns = request_namespace(&req)?;
        let lease = request_lease(&req)?;
        let req = req.into_inner();
        let spec = DiffSpec {
            media_type: req.media_type,
            reference: req.r#ref,
            labels: req.labels.into_iter().collect(),
            source_date_epoch: req.source_date_epoch.map(|t| t.seconds),
            lease,
        };
        let (left, right) = (mounts_from_proto(req.left), mounts_from_proto(req.right));
        let differ = self.differ.clone();
        let desc = blocking(move || differ.diff(&ns, &left, &right, &spec)).await?;
        Ok(Response::new(DiffResponse { diff: Some(descriptor_to_proto(desc)) }))
    }
}

/// `io.berth.differ.v1` init: the walking differ over the content store, with temporary
/// mounts under `<root>/tmpmounts`.
pub fn init_differ(ctx: &mut InitContext<'_>) -> Result<Instance, InitError> {
    let content = ctx.get::<berth_content::ContentStore>(CONTENT)?;
    let scratch = ctx.daemon.root.join("tmpmounts");
    let differ = Differ::new(berth_content::ContentStore::clone(&content), &scratch)?;
    ctx.exports.insert("tmpmounts".into(), scratch.display().to_string());
    Ok(Arc::new(differ))
}

/// `io.berth.grpc.v1` init: the diff service.
pub fn init(ctx: &mut InitContext<'_>) -> Result<Instance, InitError> {
    let differ = ctx.get::<Differ>(DIFFER)?;
    Ok(grpc_service!("containerd.services.diff.v1.Diff", DiffServer::new(DiffService { differ })))
}
