//! Pushing: walk an image from the content store (one platform's manifest or all of them),
//! upload the blobs the repository lacks (HEAD first; a cross-repository mount when the blob's
//! source label names another repository of the same registry; else a POST then one streamed
//! PUT, or PATCH chunks and a closing PUT when `push_chunk_size` is set), then the manifests
//! by digest and the root by tag.

use std::sync::Arc;

use berth_core::descriptor::{is_index, is_manifest};
use berth_core::image::{Index, Manifest, MAX_DOCUMENT_SIZE};
use berth_core::reference::Reference;
use berth_core::{Descriptor, Digest, Error, Platform, Result};
use bytes::Bytes;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::StatusCode;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use crate::client::{error_body, scope, Endpoint};
use crate::progress::{Progress, Status};
use crate::pull::is_foreign;
use crate::{source_label, Distribution};

struct PushJob {
    ns: String,
    repo: String,
    registry: String,
    endpoint: Endpoint,
    progress: Progress,
}

impl Distribution {
    fn read_local(&self, ns: &str, d: &Descriptor) -> Result<Vec<u8>> {
        let digest = d.validate()?;
        let blob = self.content.reader(ns, &digest)?;
        if blob.size() > MAX_DOCUMENT_SIZE {
            return Err(Error::invalid_argument(format!("{digest} is too large for a manifest")));
        }
        let mut buf = vec![0u8; blob.size() as usize];
        blob.read_exact_at(&mut buf, 0)?;
        Ok(buf)
    }

    /// Pushes the image whose root is `target` (in `ns`) to `reference`; with `platform`, only
    /// that platform's manifest (which becomes the pushed root). Returns the pushed root.
    pub async fn push(
        self: &Arc<Self>,
        ns: &str,
        target: &Descriptor,
        reference: &str,
        platform: Option<&Platform>,
        progress: Progress,
    ) -> Result<Descriptor> {
        let r = Reference::parse(reference)?;
        let endpoint = {
            let mut ep = self.client.endpoints(&r.domain)?.pop().ok_or_else(|| Error::internal("no endpoint"))?;
            self.client.ping(&mut ep).await?;
            ep
        };
        let job =
            Arc::new(PushJob { ns: ns.into(), repo: r.path.clone(), registry: r.domain.clone(), endpoint, progress });

        // Walk: (descriptor, bytes) of every document, children before parents.
        let this = self.clone();
        let (ns2, target2, platform2) = (ns.to_string(), target.clone(), platform.cloned());
        let (root, docs, blobs) = tokio::task::spawn_blocking(move || -> Result<_> {
            let mut root = target2.clone();
            let mut docs: Vec<(Descriptor, Vec<u8>)> = Vec::new();
            let mut blobs: Vec<Descriptor> = Vec::new();
            let mut body = this.read_local(&ns2, &root)?;
            if is_index(&root.media_type) {
                if let Some(p) = &platform2 {
                    let index = Index::parse(&body)?;
                    root = index.select(p)?.descriptor.clone();
                    body = this.read_local(&ns2, &root)?;
                }
            }
            let mut stack = vec![(root.clone(), body)];
            while let Some((d, body)) = stack.pop() {
                if is_index(&d.media_type) {
                    let index = Index::parse(&body)?;
                    docs.push((d, body));
                    for e in index.manifests {
                        let b = this.read_local(&ns2, &e.descriptor)?;
                        stack.push((e.descriptor, b));
                    }
                } else if is_manifest(&d.media_type) {
                    let m = Manifest::parse(&body)?;
                    for b in std::iter::once(m.config).chain(m.layers) {
                        if !is_foreign(&b.media_type) && !blobs.iter().any(|x| x.digest == b.digest) {
                            blobs.push(b);
                        }
                    }
                    docs.push((d, body));
                } else {
                    return Err(Error::invalid_argument(format!("cannot push media type {:?}", d.media_type)));
                }
            }
            docs.reverse();
            Ok((root, docs, blobs))
        })
        .await
        .map_err(|e| Error::internal(format!("walk task: {e}")))??;

        let limit = Arc::new(Semaphore::new(self.client.config().max_concurrent_uploads.max(1)));
        let mut set = JoinSet::new();
        for b in blobs {
            job.progress.blob(&b.digest, &b.media_type, Status::Waiting, 0, b.size.max(0) as u64);
            let (this, job, limit) = (self.clone(), job.clone(), limit.clone());
            set.spawn(async move {
                let _permit = limit.acquire_owned().await.map_err(|_| Error::internal("upload limit closed"))?;
                this.push_blob(&job, &b).await
            });
        }
        while let Some(r) = set.join_next().await {
            r.map_err(|e| Error::internal(format!("upload task: {e}")))??;
        }
        let tag = match (&r.digest, &r.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".into(),
        };
        for (d, body) in docs {
            let is_root = d.digest == root.digest;
            let reference = if is_root { tag.clone() } else { d.digest.clone() };
            self.put_manifest(&job, &d, body, &reference).await?;
        }
        Ok(root)
    }

    async fn put_manifest(&self, job: &PushJob, d: &Descriptor, body: Vec<u8>, reference: &str) -> Result<()> {
        let scopes = [scope(&job.repo, true)];
        let url = format!("/v2/{}/manifests/{reference}", job.repo);
        let body = Bytes::from(body);
        let resp = self
            .client
            .send(&job.endpoint, &scopes, |c, base| {
                c.put(format!("{base}{url}")).header(CONTENT_TYPE, d.media_type.as_str()).body(body.clone())
            })
            .await?;
        if !resp.status().is_success() {
            return Err(push_error(job, &format!("manifest {}", d.digest), resp).await);
        }
        job.progress.blob(&d.digest, &d.media_type, Status::Done, d.size as u64, d.size as u64);
        Ok(())
    }

    async fn push_blob(&self, job: &PushJob, d: &Descriptor) -> Result<()> {
        let digest = d.validate()?;
        let size = d.size as u64;
        let p = &job.progress;
        let ep = &job.endpoint;
        let push_scope = scope(&job.repo, true);
        let url = format!("/v2/{}/blobs/{digest}", job.repo);
        let head =
            self.client.send(ep, std::slice::from_ref(&push_scope), |c, base| c.head(format!("{base}{url}"))).await?;
        if head.status().is_success() {
            p.blob(&d.digest, &d.media_type, Status::Exists, size, size);
            return Ok(());
        }
        // Mount from another repository of this registry, if the blob came from one.
        let info = {
            let (content, ns, d2) = (self.content.clone(), job.ns.clone(), digest.clone());
            tokio::task::spawn_blocking(move || content.info(&ns, &d2))
                .await
                .map_err(|e| Error::internal(format!("info task: {e}")))??
        };
        let label = source_label(&job.registry);
        let sources: Vec<String> = info
            .labels
            .get(&label)
            .map(|v| v.split(',').map(str::to_string).filter(|s| !s.is_empty() && *s != job.repo).collect())
            .unwrap_or_default();
        let mut location = None;
        for from in &sources {
            let scopes = [push_scope.clone(), scope(from, false)];
            let upload = format!("/v2/{}/blobs/uploads/", job.repo);
            let resp = self
                .client
                .send(ep, &scopes, |c, base| {
                    c.post(format!("{base}{upload}"))
                        .query(&[("mount", digest.to_string()), ("from", from.clone())])
                        .header(CONTENT_LENGTH, "0")
                })
                .await?;
            match resp.status() {
                StatusCode::CREATED => {
                    p.blob(&d.digest, &d.media_type, Status::Mounted, size, size);
                    self.add_source(job, &digest).await;
                    return Ok(());
                }
                StatusCode::ACCEPTED => {
                    location = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()).map(str::to_string);
                    break;
                }
                _ => {}
            }
        }
        let location = match location {
            Some(l) => l,
            None => {
                let upload = format!("/v2/{}/blobs/uploads/", job.repo);
                let resp = self
                    .client
                    .send(ep, std::slice::from_ref(&push_scope), |c, base| {
                        c.post(format!("{base}{upload}")).header(CONTENT_LENGTH, "0")
                    })
                    .await?;
                if resp.status() != StatusCode::ACCEPTED {
                    return Err(push_error(job, &format!("blob {digest}"), resp).await);
                }
                resp.headers()
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
                    .ok_or_else(|| Error::unavailable(format!("registry {}: upload without a Location", ep.base)))?
            }
        };
        let url = if location.starts_with("http://") || location.starts_with("https://") {
            location
        } else {
            format!("{}{location}", ep.base)
        };
        p.blob(&d.digest, &d.media_type, Status::Uploading, 0, size);
        let chunk = self.client.config().push_chunk_size;
        let mut url = url;
        let mut off = 0u64;
        // Chunked: PATCH pieces of `chunk` bytes, then a PUT that only names the digest.
        while chunk > 0 && size > chunk && off < size {
            let len = chunk.min(size - off);
            let (body, reader) = self.stream_range(job, &digest, &d.media_type, off, len, size);
            let body = std::sync::Mutex::new(Some(body));
            let resp = self
                .client
                .send(ep, std::slice::from_ref(&push_scope), |c, _| {
                    c.patch(&url)
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .header(CONTENT_LENGTH, len)
                        .header("Content-Range", format!("{off}-{}", off + len - 1))
                        .body(take_body(&body))
                })
                .await?;
            reader.await.map_err(|e| Error::internal(format!("read task: {e}")))??;
            if resp.status() != StatusCode::ACCEPTED {
                return Err(push_error(job, &format!("blob {digest} chunk at {off}"), resp).await);
            }
            let next = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()).unwrap_or(&url).to_string();
            url = if next.starts_with("http://") || next.starts_with("https://") {
                next
            } else {
                format!("{}{next}", ep.base)
            };
            off += len;
        }
        let sep = if url.contains('?') { '&' } else { '?' };
        let put_url = format!("{url}{sep}digest={digest}");
        let (body, reader) = self.stream_range(job, &digest, &d.media_type, off, size - off, size);
        let body = std::sync::Mutex::new(Some(body));
        let resp = self
            .client
            .send(ep, &[push_scope], |c, _| {
                c.put(&put_url)
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, size - off)
                    .body(take_body(&body))
            })
            .await?;
        reader.await.map_err(|e| Error::internal(format!("read task: {e}")))??;
        if resp.status() != StatusCode::CREATED {
            return Err(push_error(job, &format!("blob {digest}"), resp).await);
        }
        p.blob(&d.digest, &d.media_type, Status::Done, size, size);
        self.add_source(job, &digest).await;
        Ok(())
    }

    /// A body streaming `len` bytes of blob `digest` from `off`, read on a blocking thread.
    fn stream_range(
        &self,
        job: &PushJob,
        digest: &Digest,
        media_type: &str,
        off: u64,
        len: u64,
        size: u64,
    ) -> (reqwest::Body, tokio::task::JoinHandle<Result<()>>) {
        let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(8);
        let (content, ns, d2, progress, mt) =
            (self.content.clone(), job.ns.clone(), digest.clone(), job.progress.clone(), media_type.to_string());
        let reader = tokio::task::spawn_blocking(move || -> Result<()> {
            let blob = content.reader(&ns, &d2)?;
            let (mut pos, end) = (off, off + len);
            let mut last = std::time::Instant::now();
            while pos < end {
                let mut buf = vec![0u8; (1 << 20).min((end - pos) as usize)];
                let n = blob.read_at(&mut buf, pos)?;
                if n == 0 {
                    break;
                }
                buf.truncate(n);
                pos += n as u64;
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    break;
                }
                if last.elapsed().as_millis() >= 100 {
                    last = std::time::Instant::now();
                    progress.blob(&d2.to_string(), &mt, Status::Uploading, pos, size);
                }
            }
            Ok(())
        });
        (reqwest::Body::wrap_stream(tokio_stream::wrappers::ReceiverStream::new(rx)), reader)
    }

    /// Adds the pushed repository to the blob's source label (best effort).
    async fn add_source(&self, job: &PushJob, digest: &Digest) {
        self.record_source(&job.ns, digest, &job.registry, &job.repo).await;
    }
}

/// The body for the first send; an empty one for a retry after a 401 (which then fails).
fn take_body(body: &std::sync::Mutex<Option<reqwest::Body>>) -> reqwest::Body {
    body.lock().unwrap_or_else(|p| p.into_inner()).take().unwrap_or_else(|| reqwest::Body::from(Vec::new()))
}

async fn push_error(job: &PushJob, what: &str, resp: reqwest::Response) -> Error {
    let status = resp.status();
    let body = error_body(resp).await;
    let msg = format!("push {what} to {}/{}: {body}", job.registry, job.repo);
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Error::failed_precondition(msg),
        StatusCode::NOT_FOUND => Error::not_found(msg),
        s if s.is_client_error() => Error::invalid_argument(msg),
        _ => Error::unavailable(msg),
    }
}
