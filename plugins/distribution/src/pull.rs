//! Pulling: resolve a reference to its root manifest or index (trying mirrors first), walk it
//! for the chosen platforms, and fetch every blob missing from the content store: at most
//! `max_concurrent_downloads` at once, each streamed into an ingest (ref = digest) on a
//! blocking writer thread that hashes as it writes, resumed with `Range` after a dropped
//! connection (and, after an interrupted pull, from what the ingest already holds). A blob
//! the namespace can already see is not fetched; concurrent pulls of one blob wait for the
//! first. Digest or size mismatches abort the ingest: nothing unverified is ever visible.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_core::descriptor::{is_index, is_manifest};
use berth_core::image::{Index, Manifest, MAX_DOCUMENT_SIZE};
use berth_core::reference::Reference;
use berth_core::{Descriptor, Digest, Error, ErrorKind, Platform, Result};
use bytes::Bytes;
use reqwest::header::{ACCEPT, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use reqwest::StatusCode;
use sha2::Digest as _;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use crate::client::{error_body, scope, Endpoint};
use crate::progress::{Progress, Status};
use crate::{gc_labels, source_label, Distribution, PlatformChoice};

/// Manifest media types asked for, best first.
const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json;q=0.9, application/vnd.docker.distribution.manifest.v2+json;q=0.9";
/// Attempts per blob on one endpoint before giving up on it.
const BLOB_ATTEMPTS: u32 = 5;

/// What a pull fetched.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The normalized reference (the image name).
    pub name: String,
    /// The root descriptor (manifest or index).
    pub target: Descriptor,
    /// The manifests fetched with their platforms (from the index) and parsed form.
    pub manifests: Vec<(Descriptor, Option<Platform>, Manifest)>,
}

/// Who hears about a pull while it runs (to unpack layers as they arrive).
pub struct PullNotify {
    /// The manifests chosen, sent once their configs are committed and before any layer.
    pub resolved: std::sync::mpsc::Sender<Vec<(Descriptor, Option<Platform>, Manifest)>>,
    /// Each layer blob once the namespace can see it (fetched or already there).
    pub committed: std::sync::mpsc::Sender<Digest>,
}

/// What one pull works with.
pub(crate) struct PullJob {
    pub ns: String,
    pub lease: String,
    pub repo: String,
    pub registry: String,
    pub endpoints: Vec<Endpoint>,
    pub progress: Progress,
    pub committed: Option<std::sync::mpsc::Sender<Digest>>,
}

/// Whether a layer is non-distributable (foreign): not fetched, as Docker does.
pub fn is_foreign(media_type: &str) -> bool {
    media_type.contains("foreign") || media_type.contains("nondistributable")
}

/// Whether a layer media type is one Berth can unpack.
pub fn is_layer(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.diff.tar"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd"
    ) || is_foreign(media_type)
}

/// Whether a config media type is an image config.
pub fn is_image_config(media_type: &str) -> bool {
    matches!(media_type, "application/vnd.oci.image.config.v1+json" | "application/vnd.docker.container.image.v1+json")
}

fn sha256(data: &[u8]) -> Digest {
    Digest::sha256_from_bytes(&sha2::Sha256::digest(data).into())
}

/// Media type from a Content-Type value, or the document's own `mediaType`.
fn document_media_type(content_type: &str, body: &[u8]) -> String {
    let ct = content_type.split(';').next().unwrap_or("").trim().to_string();
    if is_index(&ct) || is_manifest(&ct) {
        return ct;
    }
    let sniffed = serde_json::from_slice::<serde_json::Value>(body).ok().and_then(|v| {
        v["mediaType"]
            .as_str()
            .map(str::to_string)
            .or_else(|| v.get("manifests").map(|_| berth_core::descriptor::MEDIA_TYPE_OCI_INDEX.into()))
    });
    match sniffed {
        Some(s) if is_index(&s) || is_manifest(&s) => s,
        _ if ct.is_empty() || ct == "application/json" || ct == "text/plain" => sniffed.unwrap_or(ct),
        _ => ct,
    }
}

impl Distribution {
    /// Pulls `reference` into namespace `ns` within `lease` (which must exist): the root
    /// document, the manifests for `platforms`, their configs and layers.
    pub async fn pull(
        self: &Arc<Self>,
        ns: &str,
        reference: &str,
        platforms: &PlatformChoice,
        lease: &str,
        progress: Progress,
        notify: Option<PullNotify>,
    ) -> Result<Pulled> {
        let r = Reference::parse(reference)?;
        let name = r.name();
        let full = match (&r.tag, &r.digest) {
            (_, Some(d)) => format!("{name}@{d}"),
            (Some(t), None) => format!("{name}:{t}"),
            (None, None) => format!("{name}:latest"),
        };
        let image_name = berth_core::reference::normalize(reference)?;
        progress.reference(&full, Status::Resolving);
        let job = PullJob {
            ns: ns.to_string(),
            lease: lease.to_string(),
            repo: r.path.clone(),
            registry: r.domain.clone(),
            endpoints: self.usable_endpoints(&r.domain).await?,
            progress,
            committed: notify.as_ref().map(|n| n.committed.clone()),
        };
        let job = Arc::new(job);
        let tag_or_digest = match (&r.digest, &r.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".into(),
        };
        let (root, body) = self.fetch_document(&job, &tag_or_digest, r.digest.as_ref(), None).await?;
        job.progress.reference(&full, Status::Done);

        let mut manifests = Vec::new();
        let mut queue = vec![(root.clone(), body, None::<Platform>)];
        let mut depth = 0;
        let mut docs: Vec<(Descriptor, Vec<u8>, BTreeMap<String, String>)> = Vec::new();
        while !queue.is_empty() && depth < 4 {
            depth += 1;
            let mut next = Vec::new();
            for (desc, body, platform) in std::mem::take(&mut queue) {
                if is_index(&desc.media_type) {
                    let index = Index::parse(&body).map_err(|e| e.context(format!("index {}", desc.digest)))?;
                    let chosen: Vec<_> = match platforms {
                        PlatformChoice::All => index.manifests.iter().collect(),
                        PlatformChoice::One(p) => vec![index.select(p).map_err(|e| e.context(&image_name))?],
                    };
                    let mut children = Vec::new();
                    for entry in chosen {
                        let d = &entry.descriptor;
                        if !(is_index(&d.media_type) || is_manifest(&d.media_type)) {
                            continue;
                        }
                        let digest = d.validate()?;
                        let (child, cbody) =
                            self.fetch_document(&job, &digest.to_string(), Some(&digest), Some(d)).await?;
                        let plat = entry.platform.as_ref().map(|p| Platform {
                            os: p.os.clone(),
                            architecture: p.architecture.clone(),
                            variant: p.variant.clone(),
                        });
                        children.push(child.clone());
                        next.push((child, cbody, plat));
                    }
                    let labels = gc_labels(&children.iter().map(|c| ("m", c)).collect::<Vec<_>>());
                    docs.push((desc, body, labels));
                } else {
                    let m = Manifest::parse(&body).map_err(|e| e.context(format!("manifest {}", desc.digest)))?;
                    if !is_image_config(&m.config.media_type) {
                        return Err(Error::invalid_argument(format!(
                            "{image_name}: unsupported config media type {:?} (not a container image)",
                            m.config.media_type
                        )));
                    }
                    if let Some(l) = m.layers.iter().find(|l| !is_layer(&l.media_type)) {
                        return Err(Error::invalid_argument(format!(
                            "{image_name}: unsupported layer media type {:?} ({})",
                            l.media_type, l.digest
                        )));
                    }
                    let mut refs = vec![("config", &m.config)];
                    refs.extend(m.layers.iter().filter(|l| !is_foreign(&l.media_type)).map(|l| ("l", l)));
                    let labels = gc_labels(&refs);
                    docs.push((desc.clone(), body, labels));
                    manifests.push((desc, platform, m));
                }
            }
            queue = next;
        }
        if manifests.is_empty() {
            return Err(Error::not_found(format!("{image_name}: no manifest for the requested platform")));
        }

        // Blobs: configs first (small), then layers bottom first; each digest once.
        let mut blobs: Vec<Descriptor> = Vec::new();
        for (_, _, m) in &manifests {
            if !blobs.iter().any(|b| b.digest == m.config.digest) {
                blobs.push(m.config.clone());
            }
        }
        for (_, _, m) in &manifests {
            for l in &m.layers {
                if is_foreign(&l.media_type) {
                    job.progress.blob(&l.digest, &l.media_type, Status::Skipped, 0, l.size.max(0) as u64);
                } else if !blobs.iter().any(|b| b.digest == l.digest) {
                    blobs.push(l.clone());
                }
            }
        }
        for b in &blobs {
            b.validate()?;
            job.progress.blob(&b.digest, &b.media_type, Status::Waiting, 0, b.size.max(0) as u64);
        }
        let limit = Arc::new(Semaphore::new(self.client.config().max_concurrent_downloads.max(1)));
        // Configs first: a pipelined unpack needs them before the first layer.
        let configs: Vec<Descriptor> = blobs.iter().filter(|b| is_image_config(&b.media_type)).cloned().collect();
        let mut set = JoinSet::new();
        for b in configs {
            let (this, job) = (self.clone(), job.clone());
            set.spawn(async move { this.fetch_blob(&job, &b).await });
        }
        while let Some(r) = set.join_next().await {
            r.map_err(|e| Error::internal(format!("download task: {e}")))??;
        }
        if let Some(n) = notify {
            let _ = n.resolved.send(manifests.clone());
        }
        let blobs: Vec<Descriptor> = blobs.into_iter().filter(|b| !is_image_config(&b.media_type)).collect();
        for b in blobs {
            let (this, job, limit) = (self.clone(), job.clone(), limit.clone());
            set.spawn(async move {
                let _permit = limit.acquire_owned().await.map_err(|_| Error::internal("download limit closed"))?;
                this.fetch_blob(&job, &b).await
            });
        }
        let mut first_err = None;
        while let Some(r) = set.join_next().await {
            let r = r.map_err(|e| Error::internal(format!("download task: {e}"))).and_then(|r| r);
            if let Err(e) = r {
                if first_err.is_none() {
                    first_err = Some(e);
                    set.abort_all();
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        // Documents last, children before parents, so a visible document's children exist.
        for (desc, body, labels) in docs.into_iter().rev() {
            self.store_document(&job, &desc, body, labels).await?;
        }
        Ok(Pulled { name: image_name, target: root, manifests })
    }

    /// The endpoints of `host` that answer (mirrors first); an error naming each failure when none does.
    pub(crate) async fn usable_endpoints(&self, host: &str) -> Result<Vec<Endpoint>> {
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for mut ep in self.client.endpoints(host)? {
            match self.client.ping(&mut ep).await {
                Ok(()) => out.push(ep),
                Err(e) if ep.mirror => {
                    tracing::warn!(mirror = %ep.host, error = %e, "mirror unreachable; trying the next endpoint");
                    errors.push(e.to_string());
                }
                Err(e) if out.is_empty() && errors.is_empty() => return Err(e),
                Err(e) => {
                    errors.push(e.message().to_string());
                    if out.is_empty() {
                        return Err(Error::unavailable(errors.join("; ")));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Fetches a manifest or index by tag or digest from the first endpoint that has it,
    /// capped at [`MAX_DOCUMENT_SIZE`] and checked against `expected` (digest and size).
    async fn fetch_document(
        &self,
        job: &PullJob,
        reference: &str,
        digest: Option<&Digest>,
        expected: Option<&Descriptor>,
    ) -> Result<(Descriptor, Vec<u8>)> {
        let scopes = [scope(&job.repo, false)];
        let mut last = None;
        for ep in &job.endpoints {
            let url = format!("/v2/{}/manifests/{reference}", job.repo);
            let resp = match self
                .client
                .send(ep, &scopes, |c, base| c.get(format!("{base}{url}")).header(ACCEPT, ACCEPT_MANIFESTS))
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            let status = resp.status();
            if !status.is_success() {
                let body = error_body(resp).await;
                let err = match status {
                    StatusCode::NOT_FOUND => {
                        Error::not_found(format!("{}/{}:{reference} at {}: {body}", job.registry, job.repo, ep.base))
                    }
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Error::failed_precondition(format!(
                        "not authorized to pull {}/{} from {}: {body}",
                        job.registry, job.repo, ep.base
                    )),
                    _ => {
                        Error::unavailable(format!("{}/{}:{reference} at {}: {body}", job.registry, job.repo, ep.base))
                    }
                };
                // A mirror may lack what the registry has; other failures are final only at
                // the last endpoint.
                last = Some(err);
                continue;
            }
            let cap = MAX_DOCUMENT_SIZE;
            if resp.content_length().is_some_and(|n| n > cap) {
                return Err(Error::invalid_argument(format!(
                    "manifest {reference} of {}/{} is {} bytes, over the {cap}-byte cap",
                    job.registry,
                    job.repo,
                    resp.content_length().unwrap_or(0)
                )));
            }
            let content_type = resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            let header_digest =
                resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(str::to_string);
            let mut resp = resp;
            let mut body = Vec::new();
            loop {
                match resp.chunk().await {
                    Ok(Some(c)) => {
                        if body.len() as u64 + c.len() as u64 > cap {
                            return Err(Error::invalid_argument(format!(
                                "manifest {reference} of {}/{} is over the {cap}-byte cap",
                                job.registry, job.repo
                            )));
                        }
                        body.extend_from_slice(&c);
                    }
                    Ok(None) => break,
                    Err(e) => return Err(Error::unavailable(format!("manifest {reference}: {e}"))),
                }
            }
            let actual = sha256(&body);
            if let Some(d) = digest {
                if *d != actual {
                    return Err(Error::invalid_argument(format!(
                        "manifest {reference} of {}/{}: digest mismatch: got {actual}",
                        job.registry, job.repo
                    )));
                }
            } else if let Some(h) = header_digest.filter(|h| h.starts_with("sha256:")) {
                if h != actual.to_string() {
                    return Err(Error::invalid_argument(format!(
                        "manifest {reference} of {}/{}: the registry says {h} but the body is {actual}",
                        job.registry, job.repo
                    )));
                }
            }
            let media_type = match expected {
                Some(d) if !d.media_type.is_empty() => d.media_type.clone(),
                _ => document_media_type(&content_type, &body),
            };
            if !(is_index(&media_type) || is_manifest(&media_type)) {
                return Err(Error::invalid_argument(format!(
                    "{}/{}:{reference}: unsupported manifest media type {media_type:?}",
                    job.registry, job.repo
                )));
            }
            if let Some(d) = expected {
                if d.size != body.len() as i64 {
                    return Err(Error::invalid_argument(format!(
                        "manifest {}: size {} does not match its descriptor's {}",
                        d.digest,
                        body.len(),
                        d.size
                    )));
                }
            }
            let desc = Descriptor {
                media_type,
                digest: actual.to_string(),
                size: body.len() as i64,
                annotations: BTreeMap::new(),
            };
            return Ok((desc, body));
        }
        Err(last.unwrap_or_else(|| Error::unavailable(format!("{}: no endpoint", job.registry))))
    }

    async fn store_document(
        &self,
        job: &PullJob,
        desc: &Descriptor,
        body: Vec<u8>,
        mut labels: BTreeMap<String, String>,
    ) -> Result<()> {
        labels.insert(source_label(&job.registry), job.repo.clone());
        let lock = self.inflight(&job.ns, &desc.validate()?);
        let _held = lock.lock().await;
        let (content, ns, lease, desc2) = (self.content.clone(), job.ns.clone(), job.lease.clone(), desc.clone());
        tokio::task::spawn_blocking(move || {
            let digest = desc2.validate()?;
            let mut w =
                match content.writer(&ns, &digest.to_string(), body.len() as u64, Some(digest.clone()), Some(&lease)) {
                    Ok(w) => w,
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(()),
                    Err(e) => return Err(e),
                };
            w.write_at(0, &body)?;
            match w.commit(body.len() as u64, Some(&digest), labels) {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await
        .map_err(|e| Error::internal(format!("store task: {e}")))?
    }

    /// Fetches one blob into the content store unless the namespace already sees it.
    async fn fetch_blob(&self, job: &PullJob, desc: &Descriptor) -> Result<()> {
        let digest = desc.validate()?;
        let size = desc.size as u64;
        let p = &job.progress;
        let lock = self.inflight(&job.ns, &digest);
        let _held = lock.lock().await;

        let (content, ns, lease, d2) = (self.content.clone(), job.ns.clone(), job.lease.clone(), digest.clone());
        let opened = tokio::task::spawn_blocking(move || {
            content.writer(&ns, &d2.to_string(), size, Some(d2.clone()), Some(&lease))
        })
        .await
        .map_err(|e| Error::internal(format!("open ingest: {e}")))?;
        let writer = match opened {
            Ok(w) => w,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                p.blob(&desc.digest, &desc.media_type, Status::Exists, size, size);
                self.record_source(&job.ns, &digest, &job.registry, &job.repo).await;
                if let Some(c) = &job.committed {
                    let _ = c.send(digest);
                }
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let start_offset = writer.offset();
        let (tx, mut rx) = mpsc::channel::<Chunk>(32);
        let write_thread = tokio::task::spawn_blocking(move || -> Result<berth_content::Writer> {
            let mut w = writer;
            while let Some(c) = rx.blocking_recv() {
                match c {
                    Chunk::Data(b) => w.append(&b)?,
                    Chunk::Restart => {
                        w.write_at(0, &[])?;
                    }
                }
            }
            Ok(w)
        });
        let downloaded = self.download(job, desc, &digest, size, start_offset, &tx).await;
        drop(tx);
        let writer = write_thread.await.map_err(|e| Error::internal(format!("ingest writer: {e}")))??;
        downloaded?;

        p.blob(&desc.digest, &desc.media_type, Status::Verifying, size, size);
        let mut labels = BTreeMap::new();
        labels.insert(source_label(&job.registry), job.repo.clone());
        let (content, ns, d2) = (self.content.clone(), job.ns.clone(), digest.clone());
        let committed = tokio::task::spawn_blocking(move || {
            let r = writer.commit(size, Some(&d2), labels);
            if let Err(e) = &r {
                if e.kind() == ErrorKind::FailedPrecondition {
                    // Wrong bytes: drop them so a retry starts clean.
                    let _ = content.abort(&ns, &d2.to_string());
                }
            }
            r
        })
        .await
        .map_err(|e| Error::internal(format!("commit task: {e}")))?;
        match committed {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) if e.kind() == ErrorKind::FailedPrecondition => {
                return Err(Error::invalid_argument(format!(
                    "blob {digest} of {}/{} failed verification: {}",
                    job.registry,
                    job.repo,
                    e.message()
                )))
            }
            Err(e) => return Err(e),
        }
        // A layer goes on to the pipelined unpacker, which reports it done.
        let next =
            if job.committed.is_some() && is_layer(&desc.media_type) { Status::Extracting } else { Status::Done };
        p.blob(&desc.digest, &desc.media_type, next, size, size);
        if let Some(c) = &job.committed {
            let _ = c.send(digest);
        }
        Ok(())
    }

    /// Streams blob bytes from `offset` to `size` into `tx`, trying endpoints in order and
    /// resuming with `Range` after a dropped or short response.
    async fn download(
        &self,
        job: &PullJob,
        desc: &Descriptor,
        digest: &Digest,
        size: u64,
        mut offset: u64,
        tx: &mpsc::Sender<Chunk>,
    ) -> Result<()> {
        let p = &job.progress;
        let scopes = [scope(&job.repo, false)];
        if offset > size {
            tx.send(Chunk::Restart).await.map_err(|_| Error::internal("ingest writer stopped"))?;
            offset = 0;
        }
        if offset == size {
            return Ok(());
        }
        let mut last_err = None;
        for ep in &job.endpoints {
            let mut attempts = 0;
            while attempts < BLOB_ATTEMPTS {
                attempts += 1;
                if attempts > 1 {
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(attempts))).await;
                }
                let url = format!("/v2/{}/blobs/{digest}", job.repo);
                let from = offset;
                let resp = match self
                    .client
                    .send(ep, &scopes, |c, base| {
                        let r = c.get(format!("{base}{url}"));
                        if from > 0 {
                            r.header(RANGE, format!("bytes={from}-"))
                        } else {
                            r
                        }
                    })
                    .await
                {
                    Ok(r) => r,
                    Err(e) => {
                        last_err = Some(e);
                        continue;
                    }
                };
                match resp.status() {
                    StatusCode::OK => {
                        if offset > 0 {
                            tx.send(Chunk::Restart).await.map_err(|_| Error::internal("ingest writer stopped"))?;
                            offset = 0;
                        }
                    }
                    StatusCode::PARTIAL_CONTENT => {
                        let start = resp
                            .headers()
                            .get(CONTENT_RANGE)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.strip_prefix("bytes "))
                            .and_then(|v| v.split('-').next())
                            .and_then(|v| v.parse::<u64>().ok());
                        if start != Some(offset) {
                            last_err = Some(Error::unavailable(format!(
                                "blob {digest}: bad Content-Range for offset {offset}"
                            )));
                            tx.send(Chunk::Restart).await.map_err(|_| Error::internal("ingest writer stopped"))?;
                            offset = 0;
                            continue;
                        }
                    }
                    StatusCode::RANGE_NOT_SATISFIABLE => {
                        tx.send(Chunk::Restart).await.map_err(|_| Error::internal("ingest writer stopped"))?;
                        offset = 0;
                        continue;
                    }
                    status => {
                        let body = error_body(resp).await;
                        let err = match status {
                            StatusCode::NOT_FOUND => Error::not_found(format!(
                                "blob {digest} of {}/{} at {}: {body}",
                                job.registry, job.repo, ep.base
                            )),
                            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Error::failed_precondition(format!(
                                "not authorized to pull blob {digest} of {}/{}: {body}",
                                job.registry, job.repo
                            )),
                            _ => Error::unavailable(format!(
                                "blob {digest} of {}/{} at {}: {body}",
                                job.registry, job.repo, ep.base
                            )),
                        };
                        last_err = Some(err);
                        if status.is_client_error() {
                            break; // next endpoint
                        }
                        continue;
                    }
                }
                let mut resp = resp;
                let mut last_report = Instant::now();
                p.blob(&desc.digest, &desc.media_type, Status::Downloading, offset, size);
                loop {
                    match resp.chunk().await {
                        Ok(Some(c)) => {
                            if offset + c.len() as u64 > size {
                                return Err(Error::invalid_argument(format!(
                                    "blob {digest} of {}/{}: the registry sent more than the {size} bytes of its descriptor",
                                    job.registry, job.repo
                                )));
                            }
                            offset += c.len() as u64;
                            tx.send(Chunk::Data(c)).await.map_err(|_| Error::internal("ingest writer stopped"))?;
                            if last_report.elapsed() >= Duration::from_millis(100) {
                                last_report = Instant::now();
                                p.blob(&desc.digest, &desc.media_type, Status::Downloading, offset, size);
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::debug!(%digest, offset, error = %e, "blob download interrupted; resuming");
                            last_err = Some(Error::unavailable(format!(
                                "blob {digest}: connection lost at byte {offset}: {e}"
                            )));
                            break;
                        }
                    }
                }
                p.blob(&desc.digest, &desc.media_type, Status::Downloading, offset, size);
                if offset == size {
                    return Ok(());
                }
                if last_err.is_none() {
                    last_err = Some(Error::unavailable(format!("blob {digest}: short response")));
                }
            }
        }
        Err(match last_err {
            Some(e) if offset > 0 && offset < size && e.kind() == ErrorKind::Unavailable => {
                Error::unavailable(format!(
                    "blob {digest} of {}/{} truncated: received {offset} of {size} bytes ({})",
                    job.registry,
                    job.repo,
                    e.message()
                ))
            }
            Some(e) => e,
            None => Error::unavailable(format!("blob {digest}: no endpoint")),
        })
    }
}

/// What the download side hands the ingest writer thread.
enum Chunk {
    Data(Bytes),
    Restart,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_from_headers_or_documents() {
        let oci = berth_core::descriptor::MEDIA_TYPE_OCI_MANIFEST;
        assert_eq!(document_media_type(&format!("{oci}; charset=utf-8"), b"{}"), oci);
        let body = format!(r#"{{"mediaType":"{oci}","config":{{}}}}"#);
        assert_eq!(document_media_type("application/json", body.as_bytes()), oci);
        assert_eq!(
            document_media_type("text/plain", br#"{"manifests":[]}"#),
            berth_core::descriptor::MEDIA_TYPE_OCI_INDEX
        );
        assert_eq!(document_media_type("application/x-thing", b"{}"), "application/x-thing");
    }

    #[test]
    fn layer_kinds() {
        assert!(is_layer("application/vnd.oci.image.layer.v1.tar+zstd"));
        assert!(is_layer("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"));
        assert!(is_foreign("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"));
        assert!(!is_layer("application/vnd.cncf.helm.chart.content.v1.tar+gzip"));
        assert!(is_image_config("application/vnd.docker.container.image.v1+json"));
    }
}
