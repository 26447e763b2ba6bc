//! Ingest directories: their names, their JSON record, and the status reported for them.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use berth_core::filters::Adaptor;
use berth_core::{Digest, Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::store::from_ns;

/// File holding an ingest's [`IngestRecord`].
pub(crate) const RECORD_FILE: &str = "ingest.json";
/// File holding an ingest's bytes.
pub(crate) const DATA_FILE: &str = "data";
/// Marker in the names of directories being created or removed.
pub(crate) const TMP_MARKER: &str = ".tmp-";

/// The state of an ingest in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestStatus {
    /// The client's name for the ingest.
    pub reference: String,
    /// Bytes written so far.
    pub offset: u64,
    /// Expected total size; 0 when unknown.
    pub total: u64,
    /// Expected digest, when the client gave one.
    pub expected: Option<Digest>,
    /// When the ingest was first opened.
    pub started_at: SystemTime,
    /// When data was last written (or the ingest last reopened).
    pub updated_at: SystemTime,
}

impl Adaptor for IngestStatus {
    fn field(&self, path: &[String]) -> Vec<String> {
        match path {
            [f] if f == "ref" => vec![self.reference.clone()],
            _ => Vec::new(),
        }
    }
}

/// What `ingest.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IngestRecord {
    #[serde(rename = "ref")]
    pub reference: String,
    pub namespace: String,
    #[serde(default)]
    pub total: u64,
    #[serde(default)]
    pub expected: Option<String>,
    #[serde(default)]
    pub lease: Option<String>,
    pub started_at_ns: u64,
    pub updated_at_ns: u64,
}

/// The directory name of an ingest: hex sha256 of `<namespace>/<ref>`.
pub(crate) fn ingest_key(ns: &str, reference: &str) -> String {
    let hash: [u8; 32] = Sha256::new().chain_update(ns).chain_update(b"/").chain_update(reference).finalize().into();
    Digest::sha256_from_bytes(&hash).hex().to_string()
}

/// A fresh temporary name beside `dir` (removed at open if left behind by a crash).
pub(crate) fn tmp_sibling(dir: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    dir.with_file_name(format!("{name}{TMP_MARKER}{}-{n}", std::process::id()))
}

/// Reads an ingest's record; NotFound when the ingest does not exist.
pub(crate) fn read_record(dir: &Path, reference: &str) -> Result<IngestRecord> {
    let path = dir.join(RECORD_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(Error::not_found(format!("ingest ref {reference:?}")));
        }
        Err(e) => return Err(Error::internal(format!("read {}: {e}", path.display()))),
    };
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::internal(format!(
            "corrupt ingest record {} (abort ref {reference:?} to discard it): {e}",
            path.display()
        ))
    })
}

/// Replaces an ingest's record atomically (write aside, fsync, rename).
pub(crate) fn write_record(dir: &Path, rec: &IngestRecord) -> Result<()> {
    let path = dir.join(RECORD_FILE);
    let tmp = dir.join(format!("{RECORD_FILE}{TMP_MARKER}"));
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(rec).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)
    };
    write().map_err(|e| Error::internal(format!("write {}: {e}", path.display())))
}

/// Opens (creating if missing) an ingest's data file for reading and writing.
pub(crate) fn open_data(dir: &Path) -> Result<File> {
    let path = dir.join(DATA_FILE);
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::internal(format!("open {}: {e}", path.display())))
}

/// Hashes the whole of `file`, returning its length and the hash state.
pub(crate) fn hash_existing(file: &File, path: &Path) -> Result<(u64, Sha256)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    loop {
        match file.read_at(&mut buf, offset) {
            Ok(0) => return Ok((offset, hasher)),
            Ok(n) => {
                hasher.update(&buf[..n]);
                offset += n as u64;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::internal(format!("read {}: {e}", path.display()))),
        }
    }
}

/// The status of the ingest in `dir`, described by `rec`.
pub(crate) fn status_of(dir: &Path, rec: &IngestRecord) -> Result<IngestStatus> {
    let recorded_update = from_ns(rec.updated_at_ns);
    let (offset, updated_at) = match fs::metadata(dir.join(DATA_FILE)) {
        Ok(m) => (m.len(), m.modified().map_or(recorded_update, |t| t.max(recorded_update))),
        Err(e) if e.kind() == ErrorKind::NotFound => (0, recorded_update),
        Err(e) => return Err(Error::internal(format!("stat ingest {:?}: {e}", rec.reference))),
    };
    Ok(IngestStatus {
        reference: rec.reference.clone(),
        offset,
        total: rec.total,
        expected: rec.expected.as_deref().and_then(|d| Digest::parse(d).ok()),
        started_at: from_ns(rec.started_at_ns),
        updated_at,
    })
}

/// Creates a new ingest directory at `dir` atomically: built aside, then renamed into place.
pub(crate) fn create(dir: &Path, rec: &IngestRecord) -> Result<File> {
    use std::os::unix::fs::DirBuilderExt;
    let tmp = tmp_sibling(dir);
    let build = || -> Result<File> {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&tmp)
            .map_err(|e| Error::internal(format!("create {}: {e}", tmp.display())))?;
        write_record(&tmp, rec)?;
        let data = open_data(&tmp)?;
        fs::rename(&tmp, dir).map_err(|e| Error::internal(format!("rename ingest into {}: {e}", dir.display())))?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
        Ok(data)
    };
    build().inspect_err(|_| {
        let _ = fs::remove_dir_all(&tmp);
    })
}

/// Fsyncs a directory so renames in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::internal(format!("sync {}: {e}", dir.display())))
}
