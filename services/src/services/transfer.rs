//! berth.services.transfer.v1.Transfer: registry pull and push with streamed progress, and
//! logins, over the `io.berth.transfer.v1` distribution plugin. A pull runs within the
//! request's lease (or a temporary one, so the collector cannot race it), unpacks the image
//! unless told not to, then creates or updates the image record and publishes the event.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use berth_core::{Descriptor, Error, ErrorKind, Platform};
use berth_distribution::auth::CredentialSources;
use berth_distribution::{parse_platform, Credentials, Distribution, DistributionConfig, PlatformChoice};
use berth_metadata::{Image, MetadataStore, EXPIRE_LABEL};
use berth_proto::berth::services::transfer::v1::transfer_server::{Transfer, TransferServer};
use berth_proto::berth::services::transfer::v1::{
    LoginRequest, LoginResponse, LogoutRequest, LogoutResponse, Progress, PullRequest, PushRequest, Status as PbStatus,
    TransferResult,
};
use berth_proto::containerd::services::images::v1::{ImageCreate, ImageUpdate};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::unpack::UnpackPlugin;
use super::{grpc_service, request_lease, request_namespace, to_status};
use crate::builtin::{CONTENT, EVENTS, METADATA, TRANSFER, UNPACK};
use crate::exchange::Exchange;
use crate::registry::{InitContext, InitError, Instance};

/// The `io.berth.transfer.v1` instance: the distribution client and what a pull finishes with.
pub struct TransferPlugin {
    dist: Arc<Distribution>,
    meta: Arc<MetadataStore>,
    events: Arc<Exchange>,
    unpack: Option<Arc<UnpackPlugin>>,
    content: berth_content::ContentStore,
}

/// Plugin init for `io.berth.transfer.v1` `distribution`.
pub fn init_distribution(ctx: &mut InitContext<'_>) -> Result<Instance, InitError> {
    let cfg: DistributionConfig = ctx.config()?;
    let content = berth_content::ContentStore::clone(&*ctx.get(CONTENT)?);
    let auth_file = ctx.daemon.root.join("distribution").join("auth.json");
    let docker = (!cfg.docker_config.is_empty()).then(|| std::path::PathBuf::from(&cfg.docker_config));
    ctx.exports.insert("auth_file".into(), auth_file.display().to_string());
    ctx.exports.insert("max_concurrent_downloads".into(), cfg.max_concurrent_downloads.to_string());
    let creds = CredentialSources { berth: auth_file, docker };
    let unpack = ctx.instances(UNPACK).into_iter().find_map(|(_, i)| i.downcast::<UnpackPlugin>().ok());
    Ok(Arc::new(TransferPlugin {
        dist: Arc::new(Distribution::new(cfg, creds, content.clone())),
        content,
        meta: ctx.get(METADATA)?,
        events: ctx.get(EVENTS)?,
        unpack,
    }))
}

fn status_to_proto(s: berth_distribution::Status) -> PbStatus {
    use berth_distribution::Status as S;
    match s {
        S::Resolving => PbStatus::Resolving,
        S::Waiting => PbStatus::Waiting,
        S::Downloading => PbStatus::Downloading,
        S::Verifying => PbStatus::Verifying,
        S::Extracting => PbStatus::Extracting,
        S::Done => PbStatus::Done,
        S::Exists => PbStatus::Exists,
        S::Skipped => PbStatus::Skipped,
        S::Uploading => PbStatus::Uploading,
        S::Mounted => PbStatus::Mounted,
    }
}

fn event_to_proto(e: berth_distribution::Event) -> Progress {
    Progress {
        id: e.id,
        digest: e.digest,
        media_type: e.media_type,
        status: status_to_proto(e.status) as i32,
        current: e.current,
        total: e.total,
        result: None,
    }
}

/// A temporary lease removed when dropped.
struct TempLease {
    meta: Arc<MetadataStore>,
    ns: String,
    id: String,
}

impl Drop for TempLease {
    fn drop(&mut self) {
        if let Err(e) = self.meta.delete_lease(&self.ns, &self.id) {
            tracing::warn!(lease = %self.id, error = %e, "cannot remove the pull lease; it expires by itself");
        }
    }
}

impl TransferPlugin {
    /// The distribution client.
    pub fn distribution(&self) -> &Arc<Distribution> {
        &self.dist
    }

    /// Pulls, unpacks and records an image; progress goes to `progress`.
    pub async fn pull(
        &self,
        ns: &str,
        lease: Option<String>,
        req: PullRequest,
        progress: berth_distribution::Progress,
    ) -> Result<TransferResult, Error> {
        let platform = if req.platform.is_empty() { Platform::host() } else { parse_platform(&req.platform)? };
        let choice = if req.all_platforms { PlatformChoice::All } else { PlatformChoice::One(platform.clone()) };
        let _temp;
        let lease = match lease {
            Some(l) => l,
            None => {
                let id = format!("pull-{}", uuid::Uuid::new_v4().simple());
                let labels = BTreeMap::from([(
                    EXPIRE_LABEL.to_string(),
                    berth_unpack::rfc3339_in(Duration::from_secs(24 * 3600)),
                )]);
                let (meta, ns2, id2) = (self.meta.clone(), ns.to_string(), id.clone());
                tokio::task::spawn_blocking(move || meta.create_lease(&ns2, &id2, labels))
                    .await
                    .map_err(|e| Error::internal(e.to_string()))??;
                _temp = TempLease { meta: self.meta.clone(), ns: ns.to_string(), id: id.clone() };
                id
            }
        };
        // Unpack while the layers download: the unpacker gets the chosen manifest once its
        // config is in, then each layer as soon as its blob is committed.
        let unpack = match (req.no_unpack, self.unpack.clone()) {
            (true, _) => None,
            (false, Some(u)) => Some(u),
            (false, None) => {
                return Err(Error::failed_precondition("no unpacker is loaded (no snapshotter); pull with --no-unpack"))
            }
        };
        let (rtx, rrx) = std::sync::mpsc::channel();
        let (ctx, crx) = std::sync::mpsc::channel();
        let notify = unpack.as_ref().map(|_| berth_distribution::PullNotify { resolved: rtx, committed: ctx });
        let unpacking = unpack.map(|unpack| {
            let (ns2, name, sn, lease2, plat, content, progress) = (
                ns.to_string(),
                req.reference.clone(),
                req.snapshotter.clone(),
                lease.clone(),
                platform.clone(),
                self.content.clone(),
                progress.clone(),
            );
            tokio::task::spawn_blocking(move || -> Result<Option<berth_unpack::UnpackOutcome>, Error> {
                let Ok(manifests) = rrx.recv() else { return Ok(None) };
                let Some((_, _, m)) = manifests.iter().find(|(_, p, _)| {
                    p.as_ref().is_none_or(|p| p.os == plat.os && p.architecture == plat.architecture)
                }) else {
                    return Ok(None);
                };
                let config = {
                    let digest = m.config.validate()?;
                    let blob = content.reader(&ns2, &digest)?;
                    let mut buf = vec![0u8; blob.size().min(berth_core::image::MAX_DOCUMENT_SIZE) as usize];
                    blob.read_exact_at(&mut buf, 0)?;
                    berth_core::image::ImageConfig::parse(&buf)?
                };
                let snap = unpack.snapshotter(&sn)?;
                let out =
                    unpack.unpacker().unpack_pipelined(&ns2, &name, m, &config, snap.as_ref(), Some(&lease2), crx)?;
                for l in &m.layers {
                    let size = l.size.max(0) as u64;
                    progress.blob(&l.digest, &l.media_type, berth_distribution::Status::Done, size, size);
                }
                Ok(Some(out))
            })
        });
        let pulled = self.dist.pull(ns, &req.reference, &choice, &lease, progress.clone(), notify).await;
        let unpacked = match unpacking {
            Some(task) => task.await.map_err(|e| Error::internal(e.to_string()))?,
            None => Ok(None),
        };
        // The pull's error explains an unpack that stopped for want of layers.
        let pulled = pulled?;
        let chain_id = unpacked?.map(|o| o.chain_id.to_string()).unwrap_or_default();
        self.record_image(ns, &pulled.name, &pulled.target).await?;
        Ok(TransferResult {
            name: pulled.name,
            digest: pulled.target.digest.clone(),
            media_type: pulled.target.media_type.clone(),
            size: pulled.target.size,
            chain_id,
        })
    }

    async fn record_image(&self, ns: &str, name: &str, target: &Descriptor) -> Result<(), Error> {
        let image = Image {
            name: name.to_string(),
            labels: BTreeMap::new(),
            target: target.clone(),
            created_at: SystemTime::UNIX_EPOCH,
            updated_at: SystemTime::UNIX_EPOCH,
        };
        let (meta, ns2) = (self.meta.clone(), ns.to_string());
        let created = tokio::task::spawn_blocking(move || match meta.create_image(&ns2, &image) {
            Ok(i) => Ok((i, true)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                meta.update_image(&ns2, &image, &["target".to_string()]).map(|i| (i, false))
            }
            Err(e) => Err(e),
        })
        .await
        .map_err(|e| Error::internal(e.to_string()))??;
        let labels = created.0.labels.clone().into_iter().collect();
        if created.1 {
            self.events.publish(ns, "/images/create", &ImageCreate { name: name.to_string(), labels });
        } else {
            self.events.publish(ns, "/images/update", &ImageUpdate { name: name.to_string(), labels });
        }
        tracing::info!(namespace = %ns, image = %name, digest = %target.digest, "image pulled");
        Ok(())
    }

    /// Pushes local image `req.name` to `req.reference` (or its own name).
    pub async fn push(
        &self,
        ns: &str,
        req: PushRequest,
        progress: berth_distribution::Progress,
    ) -> Result<TransferResult, Error> {
        let name = berth_core::reference::normalize(&req.name).unwrap_or_else(|_| req.name.clone());
        let (meta, ns2, n2, raw) = (self.meta.clone(), ns.to_string(), name.clone(), req.name.clone());
        // The normalized name first, then the name as given (images created by other clients,
        // e.g. ctr, may be stored under a short name).
        let image =
            tokio::task::spawn_blocking(move || meta.get_image(&ns2, &n2).or_else(|_| meta.get_image(&ns2, &raw)))
                .await
                .map_err(|e| Error::internal(e.to_string()))??;
        let reference = if req.reference.is_empty() { name.clone() } else { req.reference.clone() };
        let platform = if req.platform.is_empty() { None } else { Some(parse_platform(&req.platform)?) };
        let root = self.dist.push(ns, &image.target, &reference, platform.as_ref(), progress).await?;
        Ok(TransferResult {
            name: berth_core::reference::normalize(&reference)?,
            digest: root.digest,
            media_type: root.media_type,
            size: root.size,
            chain_id: String::new(),
        })
    }
}

struct TransferService {
    plugin: Arc<TransferPlugin>,
}

type ProgressStream = ReceiverStream<Result<Progress, Status>>;

/// Runs `work` with a progress feed, forwarding events and then the result (or the error) to
/// the returned stream. The work goes on if the client leaves, so a repeated request finds it
/// done or joins it.
fn stream_work<F>(work: impl FnOnce(berth_distribution::Progress) -> F + Send + 'static) -> ProgressStream
where
    F: std::future::Future<Output = Result<TransferResult, Error>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(256);
    let (ptx, mut prx) = mpsc::unbounded_channel();
    let forward_tx = tx.clone();
    let forward = tokio::spawn(async move {
        while let Some(e) = prx.recv().await {
            let _ = forward_tx.send(Ok(event_to_proto(e))).await;
        }
    });
    tokio::spawn(async move {
        let result = work(berth_distribution::Progress::new(ptx)).await;
        let _ = forward.await;
        let msg = match result {
            Ok(r) => Ok(Progress {
                id: r.name.clone(),
                status: PbStatus::Done as i32,
                result: Some(r),
                ..Default::default()
            }),
            Err(e) => Err(to_status(e)),
        };
        let _ = tx.send(msg).await;
    });
    ReceiverStream::new(rx)
}

#[tonic::async_trait]
impl Transfer for TransferService {
    type PullStream = ProgressStream;
    type PushStream = ProgressStream;

    async fn pull(&self, req: Request<PullRequest>) -> Result<Response<Self::PullStream>, Status> {
        let ns = request_namespace(&req)?;
        let lease = request_lease(&req)?;
        let r = req.into_inner();
        if r.reference.is_empty() {
            return Err(Status::invalid_argument("reference must be set"));
        }
        let plugin = self.plugin.clone();
        Ok(Response::new(stream_work(move |p| async move { plugin.pull(&ns, lease, r, p).await })))
    }

    async fn push(&self, req: Request<PushRequest>) -> Result<Response<Self::PushStream>, Status> {
        let ns = request_namespace(&req)?;
        let r = req.into_inner();
        if r.name.is_empty() {
            return Err(Status::invalid_argument("name must be set"));
        }
        let plugin = self.plugin.clone();
        Ok(Response::new(stream_work(move |p| async move { plugin.push(&ns, r, p).await })))
    }

    async fn login(&self, req: Request<LoginRequest>) -> Result<Response<LoginResponse>, Status> {
        let r = req.into_inner();
        if r.server.is_empty() || r.username.is_empty() {
            return Err(Status::invalid_argument("server and username must be set"));
        }
        let creds = Credentials { username: r.username, password: r.password };
        self.plugin.dist.login(&r.server, &creds).await.map_err(to_status)?;
        Ok(Response::new(LoginResponse {}))
    }

    async fn logout(&self, req: Request<LogoutRequest>) -> Result<Response<LogoutResponse>, Status> {
        let r = req.into_inner();
        self.plugin.dist.logout(&r.server).await.map_err(to_status)?;
        Ok(Response::new(LogoutResponse {}))
    }
}

/// Plugin init for the gRPC service.
pub fn init(ctx: &mut InitContext<'_>) -> Result<Instance, InitError> {
    let plugin = ctx.get::<TransferPlugin>(TRANSFER)?;
    Ok(grpc_service!("berth.services.transfer.v1.Transfer", TransferServer::new(TransferService { plugin })))
}
