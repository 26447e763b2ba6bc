//! The content store: committed blobs, their namespace records, and the ingests in progress.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::ErrorKind;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_core::digest::Algorithm;
use berth_core::filters::{Adaptor, Filter};
use berth_core::{identifiers, labels, Digest, Error, Result};
use berth_metadata::{Kind, LeaseResource, MetadataStore};
use serde::{Deserialize, Serialize};

use crate::blob::BlobReader;
use crate::ingest::{self, IngestRecord, IngestStatus, TMP_MARKER};
use crate::writer::Writer;

/// What the store knows of a blob visible in a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The blob's digest.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// When the namespace first committed it.
    pub created_at: SystemTime,
    /// When its record last changed.
    pub updated_at: SystemTime,
    /// Labels (`containerd.io/gc.ref.*`, `containerd.io/gc.root`, user labels).
    pub labels: BTreeMap<String, String>,
}

impl Adaptor for Info {
    fn field(&self, path: &[String]) -> Vec<String> {
        match path {
            [f] if f == "digest" => vec![self.digest.to_string()],
            [f] if f == "size" => vec![self.size.to_string()],
            [f, k] if f == "labels" => self.labels.get(k).cloned().into_iter().collect(),
            _ => Vec::new(),
        }
    }
}

/// The metadata record of a blob in one namespace (`Kind::Content`, id = digest).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ContentRecord {
    pub size: u64,
    pub created_at_ns: u64,
    pub updated_at_ns: u64,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl ContentRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn decode(id: &str, bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| Error::internal(format!("corrupt content record {id}: {e}")))
    }

    pub(crate) fn to_info(&self, digest: Digest) -> Info {
        Info {
            digest,
            size: self.size,
            created_at: from_ns(self.created_at_ns),
            updated_at: from_ns(self.updated_at_ns),
            labels: self.labels.clone(),
        }
    }
}

/// Nanoseconds since the epoch.
pub(crate) fn to_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The time `ns` nanoseconds after the epoch.
pub(crate) fn from_ns(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

/// The current time in nanoseconds since the epoch.
pub(crate) fn now_ns() -> u64 {
    to_ns(SystemTime::now())
}

/// The lease resource naming an ingest.
pub(crate) fn ingest_resource(reference: &str) -> LeaseResource {
    LeaseResource { kind: "ingests".into(), id: reference.into() }
}

/// The lease resource naming a blob.
pub(crate) fn content_resource(digest: &Digest) -> LeaseResource {
    LeaseResource { kind: "content".into(), id: digest.to_string() }
}

fn not_found(digest: &Digest) -> Error {
    Error::not_found(format!("content {digest}"))
}

/// State shared by the store and its writers.
pub(crate) struct Inner {
    pub(crate) root: PathBuf,
    pub(crate) meta: Arc<MetadataStore>,
    /// Keys of the ingests that have a live writer.
    locks: Mutex<HashSet<String>>,
}

impl Inner {
    pub(crate) fn blob_dir(&self) -> PathBuf {
        self.root.join("blobs").join(Algorithm::Sha256.as_str())
    }

    pub(crate) fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs").join(digest.algorithm().as_str()).join(digest.hex())
    }

    pub(crate) fn ingest_root(&self) -> PathBuf {
        self.root.join("ingest")
    }

    fn ingest_dir(&self, ns: &str, reference: &str) -> PathBuf {
        self.ingest_root().join(ingest::ingest_key(ns, reference))
    }
}

/// Holds an ingest's lock; releases it when dropped.
pub(crate) struct IngestLock {
    inner: Arc<Inner>,
    key: String,
}

impl Drop for IngestLock {
    fn drop(&mut self) {
        self.inner.locks.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.key);
    }
}

/// The content store. Cheap to clone; every method blocks on file and database I/O.
#[derive(Clone)]
pub struct ContentStore {
    inner: Arc<Inner>,
}

impl ContentStore {
    /// Opens the store rooted at `root` (normally `<daemon root>/content`), creating its
    /// directories and removing what an interrupted ingest creation or abort left behind.
    pub fn open(root: &Path, meta: Arc<MetadataStore>) -> Result<ContentStore> {
        let inner = Inner { root: root.to_path_buf(), meta, locks: Mutex::new(HashSet::new()) };
        for (dir, mode) in [(root.to_path_buf(), 0o711), (inner.blob_dir(), 0o755), (inner.ingest_root(), 0o700)] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(mode)
                .create(&dir)
                .map_err(|e| Error::internal(format!("create {}: {e}", dir.display())))?;
        }
        let ingest_root = inner.ingest_root();
        for entry in read_dir(&ingest_root)? {
            let name = entry.file_name();
            if name.to_string_lossy().contains(TMP_MARKER) {
                tracing::info!(path = %entry.path().display(), "removing unfinished ingest directory");
                if let Err(e) = fs::remove_dir_all(entry.path()) {
                    tracing::warn!(path = %entry.path().display(), error = %e, "cannot remove unfinished ingest");
                }
            }
        }
        Ok(ContentStore { inner: Arc::new(inner) })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The info of a blob visible in `ns`; NotFound otherwise.
    pub fn info(&self, ns: &str, digest: &Digest) -> Result<Info> {
        let id = digest.to_string();
        let bytes = self.inner.meta.get(ns, Kind::Content, &id)?.ok_or_else(|| not_found(digest))?;
        Ok(ContentRecord::decode(&id, &bytes)?.to_info(digest.clone()))
    }

    /// Updates a blob's labels: `fieldpaths` may name `labels` (replace all) or `labels.<key>`
    /// (set or, when absent from `labels`, remove one key); none means replace all. Any other
    /// path is InvalidArgument.
    pub fn update(
        &self,
        ns: &str,
        digest: &Digest,
        labels: BTreeMap<String, String>,
        fieldpaths: &[String],
    ) -> Result<Info> {
        let id = digest.to_string();
        let rec = self.inner.meta.update(ns, |tx| {
            let bytes = tx.get(Kind::Content, &id)?.ok_or_else(|| not_found(digest))?;
            let mut rec = ContentRecord::decode(&id, &bytes)?;
            labels::apply_fieldpaths(&mut rec.labels, &labels, fieldpaths)
                .map_err(|e| e.context(format!("content {digest}")))?;
            labels::validate_all(&rec.labels)?;
            rec.updated_at_ns = now_ns();
            tx.put(Kind::Content, &id, &rec.encode())?;
            Ok(rec)
        })?;
        Ok(rec.to_info(digest.clone()))
    }

    /// The blobs visible in `ns` that pass `filter` (fields `digest`, `size`, `labels.<key>`),
    /// ordered by digest.
    pub fn list(&self, ns: &str, filter: &Filter) -> Result<Vec<Info>> {
        let mut out = Vec::new();
        for (id, bytes) in self.inner.meta.list(ns, Kind::Content)? {
            let digest = Digest::parse(&id).map_err(|e| Error::internal(format!("corrupt content key: {e}")))?;
            let info = ContentRecord::decode(&id, &bytes)?.to_info(digest);
            if filter.matches(&info) {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// Removes the blob from `ns` (NotFound if it was not visible there). The file stays on
    /// disk for the garbage collector, since other namespaces may still see it.
    pub fn delete(&self, ns: &str, digest: &Digest) -> Result<()> {
        let id = digest.to_string();
        self.inner.meta.update(ns, |tx| tx.remove(Kind::Content, &id)?.map(|_| ()).ok_or_else(|| not_found(digest)))
    }

    /// Opens a blob visible in `ns` for reading.
    pub fn reader(&self, ns: &str, digest: &Digest) -> Result<BlobReader> {
        self.info(ns, digest)?;
        self.open_blob(digest).map_err(|e| e.context(format!("content {digest} is recorded in namespace {ns:?}")))
    }

    /// Opens a blob file whatever namespaces see it (for the garbage collector).
    pub fn open_blob(&self, digest: &Digest) -> Result<BlobReader> {
        let path = self.inner.blob_path(digest);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(Error::not_found(format!("blob {digest} on disk")));
            }
            Err(e) => return Err(Error::internal(format!("open {}: {e}", path.display()))),
        };
        let size = file.metadata().map_err(|e| Error::internal(format!("stat {}: {e}", path.display())))?.len();
        Ok(BlobReader::new(digest.clone(), file, size))
    }

    /// Every blob file on disk, whatever namespaces see it (for the garbage collector).
    pub fn blob_digests_on_disk(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for entry in read_dir(&self.inner.blob_dir())? {
            let name = entry.file_name();
            match Digest::parse(&format!("{}:{}", Algorithm::Sha256.as_str(), name.to_string_lossy())) {
                Ok(d) => out.push(d),
                Err(_) => tracing::warn!(path = %entry.path().display(), "ignoring stray file among blobs"),
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes a blob file and returns the bytes freed (for the garbage collector, which must
    /// hold the exclusive side of [`MetadataStore::gc_barrier`] and know no namespace sees it).
    pub fn remove_blob(&self, digest: &Digest) -> Result<u64> {
        let path = self.inner.blob_path(digest);
        let size = match fs::symlink_metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(Error::not_found(format!("blob {digest} on disk")));
            }
            Err(e) => return Err(Error::internal(format!("stat {}: {e}", path.display()))),
        };
        fs::remove_file(&path).map_err(|e| Error::internal(format!("remove {}: {e}", path.display())))?;
        Ok(size)
    }

    /// Opens the ingest `reference` of `ns` for writing, creating it or resuming it where it
    /// stopped. `total` is the expected size (0 when unknown) and `expected` the expected
    /// digest; both are checked again at commit. Within `lease`, the ingest is added to the
    /// lease's resources. Errors: `Unavailable` while another writer holds the ref,
    /// `AlreadyExists` when `expected` is already visible in `ns`, `NotFound` for a missing lease.
    pub fn writer(
        &self,
        ns: &str,
        reference: &str,
        total: u64,
        expected: Option<Digest>,
        lease: Option<&str>,
    ) -> Result<Writer> {
        identifiers::validate(ns).map_err(|e| e.context("namespace"))?;
        if reference.is_empty() {
            return Err(Error::invalid_argument("ingest ref must not be empty"));
        }
        if let Some(d) = &expected {
            if d.algorithm() != Algorithm::Sha256 {
                return Err(Error::invalid_argument(format!(
                    "expected digest {d}: the content store verifies sha256 digests only"
                )));
            }
        }
        let dir = self.inner.ingest_dir(ns, reference);
        let key = ingest::ingest_key(ns, reference);
        let lock = {
            let mut locks = self.inner.locks.lock().unwrap_or_else(|p| p.into_inner());
            if !locks.insert(key.clone()) {
                return Err(Error::unavailable(format!("ref {reference:?} is locked")));
            }
            IngestLock { inner: self.inner.clone(), key }
        };

        if let Some(lease) = lease {
            let exists = self.inner.meta.update(ns, |tx| {
                if let Some(d) = &expected {
                    if tx.get(Kind::Content, &d.to_string())?.is_some() {
                        // Keep the existing blob for the lease's holder, as containerd does.
                        tx.lease_add(lease, &content_resource(d))?;
                        return Ok(true);
                    }
                }
                tx.lease_add(lease, &ingest_resource(reference))?;
                Ok(false)
            })?;
            if let (true, Some(d)) = (exists, &expected) {
                return Err(Error::already_exists(format!("content {d}")));
            }
        } else if let Some(d) = &expected {
            if self.inner.meta.get(ns, Kind::Content, &d.to_string())?.is_some() {
                return Err(Error::already_exists(format!("content {d}")));
            }
        }

        let now = now_ns();
        let (rec, file) = match ingest::read_record(&dir, reference) {
            Ok(mut rec) => {
                if rec.namespace != ns || rec.reference != reference {
                    return Err(Error::internal(format!(
                        "ingest directory {} belongs to ref {:?} of namespace {:?}",
                        dir.display(),
                        rec.reference,
                        rec.namespace
                    )));
                }
                if total > 0 {
                    rec.total = total;
                }
                if let Some(d) = &expected {
                    rec.expected = Some(d.to_string());
                }
                if let Some(l) = lease {
                    rec.lease = Some(l.to_string());
                }
                rec.updated_at_ns = now;
                ingest::write_record(&dir, &rec)?;
                (rec, ingest::open_data(&dir)?)
            }
            Err(e) if e.kind() == berth_core::ErrorKind::NotFound => {
                let rec = IngestRecord {
                    reference: reference.to_string(),
                    namespace: ns.to_string(),
                    total,
                    expected: expected.as_ref().map(|d| d.to_string()),
                    lease: lease.map(str::to_string),
                    started_at_ns: now,
                    updated_at_ns: now,
                };
                let file = ingest::create(&dir, &rec)?;
                (rec, file)
            }
            Err(e) => return Err(e),
        };
        let (offset, hasher) = ingest::hash_existing(&file, &dir.join(ingest::DATA_FILE))?;
        if offset > 0 {
            tracing::debug!(namespace = ns, r#ref = reference, offset, "resuming ingest");
        }
        Ok(Writer::new(self.inner.clone(), lock, dir, rec, file, offset, hasher))
    }

    /// The status of ingest `reference` in `ns`; NotFound when there is none.
    pub fn status(&self, ns: &str, reference: &str) -> Result<IngestStatus> {
        let dir = self.inner.ingest_dir(ns, reference);
        let rec = ingest::read_record(&dir, reference)?;
        if rec.namespace != ns || rec.reference != reference {
            return Err(Error::not_found(format!("ingest ref {reference:?}")));
        }
        ingest::status_of(&dir, &rec)
    }

    /// The ingests of `ns` that pass `filter` (field `ref`), ordered by ref.
    pub fn list_statuses(&self, ns: &str, filter: &Filter) -> Result<Vec<IngestStatus>> {
        let mut out: Vec<IngestStatus> =
            self.all_statuses()?.into_iter().filter(|(n, s)| n == ns && filter.matches(s)).map(|(_, s)| s).collect();
        out.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(out)
    }

    /// Every ingest of every namespace, as (namespace, status); for expiring abandoned ingests.
    pub fn all_statuses(&self) -> Result<Vec<(String, IngestStatus)>> {
        let mut out = Vec::new();
        for entry in read_dir(&self.inner.ingest_root())? {
            if entry.file_name().to_string_lossy().contains(TMP_MARKER) {
                continue;
            }
            let dir = entry.path();
            let rec = match ingest::read_record(&dir, "?") {
                Ok(rec) => rec,
                // Aborted or committed while we listed.
                Err(e) if e.kind() == berth_core::ErrorKind::NotFound => continue,
                Err(e) => {
                    tracing::warn!(path = %dir.display(), error = %e, "skipping unreadable ingest");
                    continue;
                }
            };
            match ingest::status_of(&dir, &rec) {
                Ok(s) => out.push((rec.namespace, s)),
                Err(e) => tracing::warn!(path = %dir.display(), error = %e, "skipping unreadable ingest"),
            }
        }
        Ok(out)
    }

    /// Discards ingest `reference` of `ns` and drops it from the lease that last opened it;
    /// NotFound when there is none. A writer still open on it fails at its commit.
    pub fn abort(&self, ns: &str, reference: &str) -> Result<()> {
        let dir = self.inner.ingest_dir(ns, reference);
        let lease = match ingest::read_record(&dir, reference) {
            Ok(rec) if rec.namespace == ns && rec.reference == reference => rec.lease,
            Ok(_) => return Err(Error::not_found(format!("ingest ref {reference:?}"))),
            // A corrupt record is no reason to keep the ingest.
            Err(e) if e.kind() != berth_core::ErrorKind::NotFound && dir.is_dir() => None,
            Err(e) => return Err(e),
        };
        // Rename first so the ingest disappears at once, even if removing its data is slow or
        // interrupted (leftovers are removed at the next open).
        let doomed = ingest::tmp_sibling(&dir);
        match fs::rename(&dir, &doomed) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(Error::not_found(format!("ingest ref {reference:?}")))
            }
            Err(e) => return Err(Error::internal(format!("abort ingest {reference:?}: {e}"))),
        }
        if let Err(e) = fs::remove_dir_all(&doomed) {
            tracing::warn!(path = %doomed.display(), error = %e, "cannot remove aborted ingest");
        }
        if let Some(lease) = lease {
            let removed = self.inner.meta.update(ns, |tx| tx.lease_remove(&lease, &ingest_resource(reference)));
            if let Err(e) = removed {
                if e.kind() != berth_core::ErrorKind::NotFound {
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

/// The entries of `dir`.
fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    fs::read_dir(dir)
        .and_then(|it| it.collect::<std::io::Result<Vec<_>>>())
        .map_err(|e| Error::internal(format!("read {}: {e}", dir.display())))
}
