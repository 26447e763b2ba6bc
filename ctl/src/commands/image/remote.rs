//! berthd's content, leases and images services as the image commands use them: every request
//! carries the namespace and, once one is taken, the lease; content is written through
//! pipelined `Content.Write` streams and read through `Content.Read` streams.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use berth_proto::containerd::services::content::v1::content_client::ContentClient;
use berth_proto::containerd::services::content::v1::{
    AbortRequest, Info, InfoRequest, ReadContentRequest, ReadContentResponse, UpdateRequest, WriteAction,
    WriteContentRequest, WriteContentResponse,
};
use berth_proto::containerd::services::images::v1::images_client::ImagesClient;
use berth_proto::containerd::services::images::v1::{CreateImageRequest, GetImageRequest, Image, UpdateImageRequest};
use berth_proto::containerd::services::leases::v1::leases_client::LeasesClient;
use berth_proto::containerd::services::leases::v1::{CreateRequest, DeleteRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request, Status, Streaming};

use crate::archive::oci::{Descriptor, Document, GC_EXPIRE};
use crate::archive::MAX_METADATA_SIZE;
use crate::client::{status_error, Client};
use crate::commands::leases::rfc3339;

/// gRPC metadata key naming the lease a request works within.
pub const LEASE_HEADER: &str = "containerd-lease";
/// Writes sent ahead of their acknowledgements on one `Content.Write` stream.
const WRITE_WINDOW: usize = 8;

/// The services the image commands use, bound to one namespace and optionally one lease.
pub struct Remote<'a> {
    client: &'a Client,
    lease: Option<MetadataValue<tonic::metadata::Ascii>>,
    lease_id: String,
    /// Content service.
    pub content: ContentClient<Channel>,
    /// Images service.
    pub images: ImagesClient<Channel>,
    leases: LeasesClient<Channel>,
}

impl<'a> Remote<'a> {
    /// Clients of the content, images and leases services.
    pub fn new(client: &'a Client) -> Self {
        Remote {
            client,
            lease: None,
            lease_id: String::new(),
            content: ContentClient::new(client.channel.clone()),
            images: ImagesClient::new(client.channel.clone()),
            leases: LeasesClient::new(client.channel.clone()),
        }
    }

    /// Wraps `msg` with the namespace and the current lease.
    pub fn request<T>(&self, msg: T) -> Request<T> {
        let mut req = self.client.request(msg);
        if let Some(lease) = &self.lease {
            req.metadata_mut().insert(LEASE_HEADER, lease.clone());
        }
        req
    }

    /// The current lease id (empty when none).
    pub fn lease_id(&self) -> &str {
        &self.lease_id
    }

    /// Creates a lease that expires after `ttl` (so a crashed client leaves nothing for long)
    /// and attaches it to every later request.
    pub async fn create_lease(&mut self, purpose: &str, ttl: Duration) -> Result<()> {
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let id = format!("berthctl-{purpose}-{}-{nanos}", std::process::id());
        let labels = [(GC_EXPIRE.to_string(), rfc3339(SystemTime::now() + ttl))].into_iter().collect();
        self.leases
            .create(self.client.request(CreateRequest { id: id.clone(), labels }))
            .await
            .map_err(status_error)?;
        self.lease = Some(id.parse().map_err(|_| anyhow!("lease id {id:?} is not valid metadata"))?);
        self.lease_id = id;
        Ok(())
    }

    /// Deletes the current lease; `sync` waits for the garbage collection that follows.
    pub async fn delete_lease(&mut self, sync: bool) -> Result<()> {
        let Some(_) = self.lease.take() else { return Ok(()) };
        let id = std::mem::take(&mut self.lease_id);
        self.leases
            .delete(self.client.request(DeleteRequest { id: id.clone(), sync }))
            .await
            .map_err(status_error)
            .with_context(|| format!("deleting lease {id}"))?;
        Ok(())
    }

    /// The content info of `digest`, or None when this namespace does not have it.
    pub async fn info(&mut self, digest: &str) -> Result<Option<Info>> {
        match self.content.info(self.request(InfoRequest { digest: digest.into() })).await {
            Ok(r) => Ok(r.into_inner().info),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(status_error(s)).with_context(|| format!("content {digest}")),
        }
    }

    /// Sets `labels` on a blob (other labels stay).
    pub async fn add_labels(&mut self, digest: &str, labels: &BTreeMap<String, String>) -> Result<()> {
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        let info = Info { digest: digest.into(), labels: labels.clone().into_iter().collect(), ..Default::default() };
        self.content
            .update(
                self.request(UpdateRequest { info: Some(info), update_mask: Some(prost_types::FieldMask { paths }) }),
            )
            .await
            .map_err(status_error)
            .with_context(|| format!("labelling {digest}"))?;
        Ok(())
    }

    /// Streams a blob's bytes.
    pub async fn read_stream(&mut self, digest: &str) -> Result<Streaming<ReadContentResponse>> {
        let req = self.request(ReadContentRequest { digest: digest.into(), offset: 0, size: 0 });
        Ok(self
            .content
            .read(req)
            .await
            .map_err(status_error)
            .with_context(|| format!("reading {digest}"))?
            .into_inner())
    }

    /// Reads a whole blob of at most `max` bytes, checking its size against `expected` (if > 0).
    pub async fn read_all(&mut self, digest: &str, expected: i64, max: u64) -> Result<Vec<u8>> {
        if expected as u64 > max {
            bail!("oversized manifest: {digest} is {expected} bytes (limit {max})");
        }
        let mut stream = self.read_stream(digest).await?;
        let mut out = Vec::new();
        while let Some(chunk) =
            stream.message().await.map_err(status_error).with_context(|| format!("reading {digest}"))?
        {
            if chunk.offset != out.len() as i64 {
                bail!("reading {digest}: chunk at offset {} after {} bytes", chunk.offset, out.len());
            }
            out.extend_from_slice(&chunk.data);
            if out.len() as u64 > max {
                bail!("oversized manifest: {digest} is larger than {max} bytes");
            }
        }
        if expected > 0 && out.len() as i64 != expected {
            bail!("{digest} is {} bytes, its descriptor says {expected}", out.len());
        }
        Ok(out)
    }

    /// Reads and parses a manifest or index.
    pub async fn read_document(&mut self, desc: &Descriptor) -> Result<Document> {
        let blob = self.read_all(&desc.digest, desc.size, MAX_METADATA_SIZE).await?;
        Document::parse(&desc.media_type, &blob).map_err(|e| anyhow!("{}: {e}", desc.digest))
    }

    /// Opens an ingest `reference` for a blob of `total` bytes (0: unknown) and `expected`
    /// digest (empty: unknown). None when the store already has that digest.
    pub async fn open_writer(&mut self, reference: &str, total: i64, expected: &str) -> Result<Option<BlobWriter>> {
        let (tx, rx) = mpsc::channel(WRITE_WINDOW + 2);
        let stat = WriteContentRequest {
            action: WriteAction::Stat as i32,
            r#ref: reference.into(),
            total,
            expected: expected.into(),
            ..Default::default()
        };
        // The first message is queued before the call so servers that read it first see it.
        tx.send(stat).await.map_err(|_| anyhow!("content write stream closed"))?;
        let responses = match self.content.write(self.request(ReceiverStream::new(rx))).await {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == Code::AlreadyExists => return Ok(None),
            Err(s) => return Err(status_error(s)).with_context(|| format!("opening ingest {reference}")),
        };
        let mut w = BlobWriter { reference: reference.into(), tx: Some(tx), responses, offset: 0, pending: 1 };
        match w.next_response().await {
            Ok(resp) => {
                if resp.offset != 0 {
                    w.close().await;
                    bail!("ingest {reference} already holds {} bytes", resp.offset);
                }
                Ok(Some(w))
            }
            Err(s) if s.code() == Code::AlreadyExists => {
                w.close().await;
                Ok(None)
            }
            Err(s) => Err(status_error(s)).with_context(|| format!("opening ingest {reference}")),
        }
    }

    /// Writes a small blob held in memory, with commit labels; fine if it already exists (its
    /// labels are then added).
    pub async fn write_blob(
        &mut self,
        reference: &str,
        data: &[u8],
        labels: &BTreeMap<String, String>,
    ) -> Result<String> {
        let digest = crate::commands::image::sha256_digest(data);
        match self.open_writer(reference, data.len() as i64, &digest).await? {
            None => {
                if !labels.is_empty() {
                    self.add_labels(&digest, labels).await?;
                }
            }
            Some(mut w) => {
                let result = async {
                    w.write(data.to_vec()).await?;
                    w.commit(data.len() as i64, &digest, labels).await
                }
                .await;
                if let Err(e) = result {
                    w.abort(self).await;
                    return Err(e);
                }
            }
        }
        Ok(digest)
    }

    /// Aborts an ingest, treating "not found" as done.
    pub async fn abort_ingest(&mut self, reference: &str) {
        let _ = self.content.abort(self.request(AbortRequest { r#ref: reference.into() })).await;
    }

    /// An image record, or None when absent.
    pub async fn get_image(&mut self, name: &str) -> Result<Option<Image>> {
        match self.images.get(self.request(GetImageRequest { name: name.into() })).await {
            Ok(r) => Ok(r.into_inner().image),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(status_error(s)).with_context(|| format!("image {name}")),
        }
    }

    /// Creates image `name` pointing at `target`, or repoints it if it exists (as `ctr images
    /// import` does). Returns whether it was newly created.
    pub async fn put_image(
        &mut self,
        name: &str,
        target: &Descriptor,
        labels: HashMap<String, String>,
    ) -> Result<bool> {
        let image = Image { name: name.into(), labels, target: Some(target.to_proto()), ..Default::default() };
        match self
            .images
            .create(self.request(CreateImageRequest { image: Some(image.clone()), source_date_epoch: None }))
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if s.code() == Code::AlreadyExists => {
                let mask = prost_types::FieldMask { paths: vec!["target".into()] };
                self.images
                    .update(self.request(UpdateImageRequest {
                        image: Some(image),
                        update_mask: Some(mask),
                        source_date_epoch: None,
                    }))
                    .await
                    .map_err(status_error)
                    .with_context(|| format!("updating image {name}"))?;
                Ok(false)
            }
            Err(s) => Err(status_error(s)).with_context(|| format!("creating image {name}")),
        }
    }
}

/// An open `Content.Write` stream. Writes are pipelined: up to [`WRITE_WINDOW`] are in flight
/// before the writer waits for an acknowledgement. Every writer must end in
/// [`BlobWriter::commit`] or [`BlobWriter::abort`].
pub struct BlobWriter {
    reference: String,
    tx: Option<mpsc::Sender<WriteContentRequest>>,
    responses: Streaming<WriteContentResponse>,
    offset: i64,
    pending: usize,
}

impl BlobWriter {
    async fn next_response(&mut self) -> Result<WriteContentResponse, Status> {
        let resp = self.responses.message().await?;
        self.pending = self.pending.saturating_sub(1);
        resp.ok_or_else(|| Status::unknown("content write stream ended early"))
    }

    async fn send(&mut self, req: WriteContentRequest) -> Result<()> {
        let sent = match &self.tx {
            Some(tx) => tx.send(req).await.is_ok(),
            None => false,
        };
        if !sent {
            // The server ended the stream; its status says why.
            let status = loop {
                match self.responses.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => break Status::unknown("content write stream closed"),
                    Err(s) => break s,
                }
            };
            return Err(status_error(status)).with_context(|| format!("writing {}", self.reference));
        }
        self.pending += 1;
        Ok(())
    }

    /// Appends `data`.
    pub async fn write(&mut self, data: Vec<u8>) -> Result<()> {
        while self.pending >= WRITE_WINDOW {
            let resp = self
                .next_response()
                .await
                .map_err(status_error)
                .with_context(|| format!("writing {}", self.reference))?;
            if resp.offset > self.offset {
                bail!("writing {}: server reports offset {} beyond {}", self.reference, resp.offset, self.offset);
            }
        }
        let len = data.len() as i64;
        let req =
            WriteContentRequest { action: WriteAction::Write as i32, offset: self.offset, data, ..Default::default() };
        self.send(req).await?;
        self.offset += len;
        Ok(())
    }

    /// Commits the blob as `expected` (`total` bytes) with `labels`. A blob that appeared in the
    /// meantime counts as committed.
    pub async fn commit(&mut self, total: i64, expected: &str, labels: &BTreeMap<String, String>) -> Result<()> {
        let req = WriteContentRequest {
            action: WriteAction::Commit as i32,
            total,
            offset: self.offset,
            expected: expected.into(),
            labels: labels.clone().into_iter().collect(),
            ..Default::default()
        };
        self.send(req).await?;
        self.tx = None;
        let mut last = None;
        while self.pending > 0 {
            match self.next_response().await {
                Ok(r) => last = Some(r),
                Err(s) if s.code() == Code::AlreadyExists => {
                    self.drain().await;
                    return Ok(());
                }
                Err(s) => return Err(status_error(s)).with_context(|| format!("committing {expected}")),
            }
        }
        let resp = last.ok_or_else(|| anyhow!("committing {expected}: no response"))?;
        if resp.digest != expected {
            bail!("committing {expected}: server computed {}", resp.digest);
        }
        if total > 0 && resp.offset != total {
            bail!("committing {expected}: server has {} of {total} bytes", resp.offset);
        }
        self.drain().await;
        Ok(())
    }

    /// Ends the stream and waits for the server to finish it.
    async fn drain(&mut self) {
        self.tx = None;
        while let Ok(Some(_)) = self.responses.message().await {}
    }

    /// Closes the stream without committing, leaving the ingest to [`BlobWriter::abort`].
    async fn close(&mut self) {
        self.drain().await;
    }

    /// Ends the stream and removes the ingest, so nothing partial stays behind.
    pub async fn abort(mut self, remote: &mut Remote<'_>) {
        self.close().await;
        remote.abort_ingest(&self.reference).await;
    }
}
