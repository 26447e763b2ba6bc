//! containerd.services.content.v1.Content on the content store, following containerd's
//! content server message for message: List sends infos in batches of 100, Read sends chunks
//! of at most 1 MiB, and Write answers every request with the action, the offset and (for
//! STAT) the times and total, or (for WRITE and COMMIT) the digest so far.
//!
//! Codes: a malformed digest is InvalidArgument; a read starting past the end is OutOfRange,
//! as containerd; a write at an offset other than the current one is FailedPrecondition (see
//! `berth_content`); a second writer on a ref is Unavailable, which `ctr` retries.

use std::pin::Pin;
use std::sync::Arc;

use berth_content::{ContentStore, Info as InfoModel, IngestStatus, Writer};
use berth_core::filters::Filter;
use berth_core::{Digest, Error};
use berth_metadata::MetadataStore;
use berth_proto::containerd::services::content::v1::content_server::{Content, ContentServer};
use berth_proto::containerd::services::content::v1::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::{blocking, grpc_service, request_lease, request_namespace, to_status};
use crate::builtin::{CONTENT, EVENTS, GC, METADATA};
use crate::exchange::Exchange;
use crate::gc::GcScheduler;
use crate::registry::{InitContext, InitError, Instance};
use berth_proto::containerd::events::ContentDelete;

/// Largest chunk of blob data in one Read response.
pub const READ_CHUNK: usize = 1 << 20;
/// Infos per List response.
const LIST_BATCH: usize = 100;

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

struct ContentService {
    store: Arc<ContentStore>,
    events: Arc<Exchange>,
    gc: Arc<GcScheduler>,
}

fn parse_digest(s: &str) -> Result<Digest, Status> {
    Digest::parse(s).map_err(to_status)
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn non_negative(n: i64, what: &str) -> Result<u64, Status> {
    u64::try_from(n).map_err(|_| Status::invalid_argument(format!("{what} must not be negative, got {n}")))
}

fn info_to_proto(i: InfoModel) -> Info {
    Info {
        digest: i.digest.to_string(),
        size: to_i64(i.size),
        created_at: Some(i.created_at.into()),
        updated_at: Some(i.updated_at.into()),
        labels: i.labels.into_iter().collect(),
    }
}

fn status_to_proto(s: IngestStatus) -> berth_proto::containerd::services::content::v1::Status {
    berth_proto::containerd::services::content::v1::Status {
        started_at: Some(s.started_at.into()),
        updated_at: Some(s.updated_at.into()),
        r#ref: s.reference,
        offset: to_i64(s.offset),
        total: to_i64(s.total),
        expected: s.expected.map(|d| d.to_string()).unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl Content for ContentService {
    async fn info(&self, req: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        let ns = request_namespace(&req)?;
        let digest = parse_digest(&req.get_ref().digest)?;
        let store = self.store.clone();
        let info = blocking(move || store.info(&ns, &digest)).await?;
        Ok(Response::new(InfoResponse { info: Some(info_to_proto(info)) }))
    }

    async fn update(&self, req: Request<UpdateRequest>) -> Result<Response<UpdateResponse>, Status> {
        let ns = request_namespace(&req)?;
        let req = req.into_inner();
        let info = req.info.unwrap_or_default();
        let digest = parse_digest(&info.digest)?;
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let store = self.store.clone();
        let updated = blocking(move || store.update(&ns, &digest, info.labels.into_iter().collect(), &paths)).await?;
        Ok(Response::new(UpdateResponse { info: Some(info_to_proto(updated)) }))
    }

    type ListStream = ResponseStream<ListContentResponse>;

    async fn list(&self, req: Request<ListContentRequest>) -> Result<Response<Self::ListStream>, Status> {
        let ns = request_namespace(&req)?;
        let filter = Filter::parse_all(&req.get_ref().filters).map_err(to_status)?;
        let store = self.store.clone();
        let infos = blocking(move || store.list(&ns, &filter)).await?;
        let batches: Vec<Result<ListContentResponse, Status>> = infos
            .chunks(LIST_BATCH)
            .map(|batch| Ok(ListContentResponse { info: batch.iter().cloned().map(info_to_proto).collect() }))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(batches))))
    }

    async fn delete(&self, req: Request<DeleteContentRequest>) -> Result<Response<()>, Status> {
        let ns = request_namespace(&req)?;
        let digest = parse_digest(&req.get_ref().digest)?;
        let store = self.store.clone();
        let shown = digest.clone();
        let ns2 = ns.clone();
        blocking(move || store.delete(&ns2, &digest)).await?;
        tracing::debug!(digest = %shown, "content deleted");
        self.events.publish(&ns, "/content/delete", &ContentDelete { digest: shown.to_string() });
        // The blob file goes once no namespace references it.
        self.gc.schedule();
        Ok(Response::new(()))
    }

    type ReadStream = ResponseStream<ReadContentResponse>;

    async fn read(&self, req: Request<ReadContentRequest>) -> Result<Response<Self::ReadStream>, Status> {
        let ns = request_namespace(&req)?;
        let ReadContentRequest { digest, offset, size } = req.into_inner();
        let digest = parse_digest(&digest)?;
        let store = self.store.clone();
        let blob = blocking(move || store.reader(&ns, &digest)).await?;
        let offset = offset.max(0) as u64;
        if offset > blob.size() {
            return Err(Status::out_of_range(format!("read past object length {} bytes", blob.size())));
        }
        // size is how much to read, not the blob's size; 0 (or too much) means to the end.
        let end = match u64::try_from(size) {
            Ok(n) if n > 0 => offset.saturating_add(n).min(blob.size()),
            _ => blob.size(),
        };
        let (tx, rx) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let mut pos = offset;
            while pos < end {
                let mut buf = vec![0u8; READ_CHUNK.min(usize::try_from(end - pos).unwrap_or(READ_CHUNK))];
                let msg = match blob.read_at(&mut buf, pos) {
                    Ok(0) => Err(Status::data_loss(format!("blob {} ended early at {pos}", blob.digest()))),
                    Ok(n) => {
                        buf.truncate(n);
                        let msg = ReadContentResponse { offset: to_i64(pos), data: buf };
                        pos += n as u64;
                        Ok(msg)
                    }
                    Err(e) => Err(to_status(e)),
                };
                let failed = msg.is_err();
                // A closed channel means the client went away.
                if tx.blocking_send(msg).is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn status(&self, req: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let ns = request_namespace(&req)?;
        let reference = req.into_inner().r#ref;
        let store = self.store.clone();
        let status = blocking(move || store.status(&ns, &reference)).await?;
        Ok(Response::new(StatusResponse { status: Some(status_to_proto(status)) }))
    }

    async fn list_statuses(&self, req: Request<ListStatusesRequest>) -> Result<Response<ListStatusesResponse>, Status> {
        let ns = request_namespace(&req)?;
        let filter = Filter::parse_all(&req.get_ref().filters).map_err(to_status)?;
        let store = self.store.clone();
        let statuses = blocking(move || store.list_statuses(&ns, &filter)).await?;
        Ok(Response::new(ListStatusesResponse { statuses: statuses.into_iter().map(status_to_proto).collect() }))
    }

    type WriteStream = ResponseStream<WriteContentResponse>;

    async fn write(&self, req: Request<Streaming<WriteContentRequest>>) -> Result<Response<Self::WriteStream>, Status> {
        let ns = request_namespace(&req)?;
        let lease = request_lease(&req)?;
        let incoming = req.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let store = self.store.clone();
        tokio::spawn(async move {
            let session = WriteSession { store, ns, lease };
            if let Err(status) = session.run(incoming, &tx).await {
                if status.code() != tonic::Code::AlreadyExists {
                    tracing::debug!(error = %status.message(), "content write failed");
                }
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn abort(&self, req: Request<AbortRequest>) -> Result<Response<()>, Status> {
        let ns = request_namespace(&req)?;
        let reference = req.into_inner().r#ref;
        let store = self.store.clone();
        blocking(move || store.abort(&ns, &reference)).await?;
        Ok(Response::new(()))
    }
}

/// One Write stream: a writer held from the first request until commit or disconnect.
struct WriteSession {
    store: Arc<ContentStore>,
    ns: String,
    lease: Option<String>,
}

impl WriteSession {
    async fn run(
        self,
        mut incoming: Streaming<WriteContentRequest>,
        tx: &mpsc::Sender<Result<WriteContentResponse, Status>>,
    ) -> Result<(), Status> {
        let Some(mut req) = incoming.message().await? else { return Ok(()) };
        if req.r#ref.is_empty() {
            return Err(Status::invalid_argument("first message must have a reference"));
        }
        let reference = req.r#ref.clone();
        let mut total = non_negative(req.total, "total")?;
        let mut expected = if req.expected.is_empty() { None } else { Some(parse_digest(&req.expected)?) };
        let (store, ns, lease) = (self.store.clone(), self.ns.clone(), self.lease.clone());
        let (r, e) = (reference.clone(), expected.clone());
        let mut writer = blocking(move || store.writer(&ns, &r, total, e, lease.as_deref())).await?;
        loop {
            let action = WriteAction::try_from(req.action)
                .map_err(|_| Status::invalid_argument(format!("unknown write action {}", req.action)))?;
            if !req.expected.is_empty() {
                let d = parse_digest(&req.expected)?;
                let (store, ns) = (self.store.clone(), self.ns.clone());
                let probe = d.clone();
                if blocking(move || store.info(&ns, &probe)).await.is_ok() {
                    // Someone else committed it meanwhile: drop this ingest, as containerd does.
                    drop(writer);
                    let (store, ns, r) = (self.store.clone(), self.ns.clone(), reference.clone());
                    let _ = blocking(move || store.abort(&ns, &r)).await;
                    return Err(Status::already_exists(format!("blob with expected digest {d} exists")));
                }
                expected = Some(d);
            }
            if req.total > 0 {
                total = non_negative(req.total, "total")?;
            }
            let e = expected.clone();
            let (next, resp) = blocking(move || Self::step(writer, action, req, total, e)).await?;
            if tx.send(Ok(resp)).await.is_err() {
                return Ok(()); // the client went away; the ingest stays resumable
            }
            let Some(w) = next else { return Ok(()) };
            writer = w;
            req = match incoming.message().await {
                Ok(Some(r)) => r,
                Ok(None) => return Ok(()),
                Err(status) => {
                    tracing::debug!(r#ref = %reference, error = %status.message(), "content write stream broken");
                    return Ok(());
                }
            };
        }
    }

    /// Applies one request to the writer (blocking I/O); returns the writer unless the request
    /// committed it, and the response.
    fn step(
        mut w: Writer,
        action: WriteAction,
        req: WriteContentRequest,
        total: u64,
        expected: Option<Digest>,
    ) -> Result<(Option<Writer>, WriteContentResponse), Error> {
        let mut resp = WriteContentResponse { action: action as i32, offset: to_i64(w.offset()), ..Default::default() };
        if action == WriteAction::Stat {
            let status = w.status()?;
            resp.started_at = Some(status.started_at.into());
            resp.updated_at = Some(status.updated_at.into());
            resp.total = to_i64(total);
            resp.digest = w.digest().to_string();
            return Ok((Some(w), resp));
        }
        let offset = u64::try_from(req.offset)
            .map_err(|_| Error::invalid_argument(format!("write offset must not be negative, got {}", req.offset)))?;
        resp.offset = to_i64(w.write_at(offset, &req.data)?);
        if action == WriteAction::Commit {
            let info = w.commit(total, expected.as_ref(), req.labels.into_iter().collect())?;
            resp.digest = info.digest.to_string();
            return Ok((None, resp));
        }
        resp.digest = w.digest().to_string();
        Ok((Some(w), resp))
    }
}

/// `io.berth.content.v1` init: the content store under `<root>/content`.
pub fn init_store(ctx: &mut InitContext<'_>) -> Result<Instance, InitError> {
    let meta = ctx.get::<MetadataStore>(METADATA)?;
    let dir = ctx.daemon.root.join("content");
    let store = ContentStore::open(&dir, meta)?;
    ctx.exports.insert("root".into(), dir.display().to_string());
    Ok(Arc::new(store))
}

/// `io.berth.grpc.v1` init: the content service.
pub fn init(ctx: &mut InitContext<'_>) -> Result<Instance, InitError> {
    let svc = ContentService { store: ctx.get::<ContentStore>(CONTENT)?, events: ctx.get(EVENTS)?, gc: ctx.get(GC)? };
    Ok(grpc_service!("containerd.services.content.v1.Content", ContentServer::new(svc)))
}
