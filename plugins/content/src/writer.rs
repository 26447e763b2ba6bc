//! A writer on one ingest: appends bytes while hashing them, then commits the verified blob.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;

use berth_core::{labels, Digest, Error, Result};
use berth_metadata::Kind;
use sha2::{Digest as _, Sha256};

use crate::ingest::{self, IngestRecord, IngestStatus, DATA_FILE, RECORD_FILE};
use crate::store::{content_resource, from_ns, ingest_resource, now_ns, ContentRecord, Info, IngestLock, Inner};

/// The only writer of one ingest while it lives; dropping it keeps the ingest for a later
/// writer to resume. Obtained from [`crate::ContentStore::writer`].
pub struct Writer {
    inner: Arc<Inner>,
    _lock: IngestLock,
    dir: PathBuf,
    rec: IngestRecord,
    file: File,
    offset: u64,
    hasher: Sha256,
    /// Set when a failed write could not be undone: the file no longer matches the hash.
    broken: bool,
}

impl Writer {
    pub(crate) fn new(
        inner: Arc<Inner>,
        lock: IngestLock,
        dir: PathBuf,
        rec: IngestRecord,
        file: File,
        offset: u64,
        hasher: Sha256,
    ) -> Self {
        Writer { inner, _lock: lock, dir, rec, file, offset, hasher, broken: false }
    }

    /// The ingest's ref.
    pub fn reference(&self) -> &str {
        &self.rec.reference
    }

    /// Bytes written so far; the next write must start here (or at 0 to restart).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The expected size given when the ingest was opened; 0 when unknown.
    pub fn total(&self) -> u64 {
        self.rec.total
    }

    /// The digest of the bytes written so far.
    pub fn digest(&self) -> Digest {
        Digest::sha256_from_bytes(&self.hasher.clone().finalize().into())
    }

    /// The ingest's status: offset, expectations and times.
    pub fn status(&self) -> Result<IngestStatus> {
        let mut status = ingest::status_of(&self.dir, &self.rec)?;
        status.offset = self.offset;
        Ok(status)
    }

    /// When the ingest was first opened.
    pub fn started_at(&self) -> std::time::SystemTime {
        from_ns(self.rec.started_at_ns)
    }

    /// Writes `data` at `offset` and returns the new offset. Offset 0 on a non-empty ingest
    /// restarts it from empty (even with no data); any other offset must equal
    /// [`Writer::offset`], else `FailedPrecondition`.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<u64> {
        self.usable()?;
        if offset == 0 && self.offset > 0 {
            self.restart()?;
        } else if offset != self.offset {
            return Err(Error::failed_precondition(format!(
                "write at offset {offset} of ingest {:?} must occur at its current offset {}",
                self.rec.reference, self.offset
            )));
        }
        self.append(data)?;
        Ok(self.offset)
    }

    /// Appends `data` at the current offset.
    pub fn append(&mut self, data: &[u8]) -> Result<()> {
        self.usable()?;
        if data.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.file.write_all_at(data, self.offset) {
            // Cut off whatever part of the chunk reached the file, so data and hash agree and
            // the ingest can be resumed at the offset the client last saw.
            if let Err(undo) = self.file.set_len(self.offset) {
                self.broken = true;
                tracing::error!(r#ref = %self.rec.reference, error = %undo, "cannot undo a failed ingest write");
            }
            return Err(Error::internal(format!(
                "write {} bytes at offset {} of ingest {:?}: {e}",
                data.len(),
                self.offset,
                self.rec.reference
            )));
        }
        self.hasher.update(data);
        self.offset += data.len() as u64;
        Ok(())
    }

    fn restart(&mut self) -> Result<()> {
        self.file.set_len(0).map_err(|e| {
            self.broken = true;
            Error::internal(format!("truncate ingest {:?}: {e}", self.rec.reference))
        })?;
        self.offset = 0;
        self.hasher = Sha256::new();
        Ok(())
    }

    fn usable(&self) -> Result<()> {
        if self.broken {
            return Err(Error::failed_precondition(format!(
                "ingest {:?} is in an unknown state after a failed write; open it again to resume",
                self.rec.reference
            )));
        }
        Ok(())
    }

    /// Verifies and publishes the blob. `size` (0: the total given at open, if any) and
    /// `expected` (None: the digest given at open, if any) must match what was written, else
    /// `FailedPrecondition` and nothing becomes visible. On success the blob is in `blobs/`,
    /// recorded in the namespace with `labels`, swapped from `ingests` to `content` in the
    /// writer's lease, and the ingest is gone. `AlreadyExists` when the namespace could see
    /// the blob already (the ingest is consumed all the same).
    pub fn commit(self, size: u64, expected: Option<&Digest>, labels: BTreeMap<String, String>) -> Result<Info> {
        self.usable()?;
        labels::validate_all(&labels)?;
        let reference = self.rec.reference.clone();
        let size = if size > 0 { size } else { self.rec.total };
        let expected = match expected {
            Some(d) => Some(d.clone()),
            None => self.rec.expected.as_deref().map(Digest::parse).transpose()?,
        };
        self.file.sync_all().map_err(|e| Error::internal(format!("sync ingest {reference:?}: {e}")))?;
        if size > 0 && size != self.offset {
            return Err(Error::failed_precondition(format!("unexpected commit size {}, expected {size}", self.offset)));
        }
        let actual = self.digest();
        if let Some(expected) = &expected {
            if *expected != actual {
                return Err(Error::failed_precondition(format!(
                    "unexpected commit digest {actual}, expected {expected}"
                )));
            }
        }
        if !self.dir.join(RECORD_FILE).exists() {
            return Err(Error::not_found(format!("ingest ref {reference:?} (aborted while being written)")));
        }

        let ns = self.rec.namespace.clone();
        let lease = self.rec.lease.clone();
        let id = actual.to_string();
        let now = now_ns();
        let record = ContentRecord { size: self.offset, created_at_ns: now, updated_at_ns: now, labels };
        let encoded = record.encode();
        let target = self.inner.blob_path(&actual);
        let existed = {
            // The collector may not remove the blob between its rename and its record.
            let barrier = self.inner.meta.gc_barrier();
            let _shared = barrier.read().unwrap_or_else(|p| p.into_inner());
            if fs::symlink_metadata(&target).is_err() {
                let _ = self.file.set_permissions(fs::Permissions::from_mode(0o444));
                fs::rename(self.dir.join(DATA_FILE), &target).map_err(|e| {
                    Error::internal(format!("move ingest {reference:?} into {}: {e}", target.display()))
                })?;
                ingest::sync_dir(&self.inner.blob_dir())?;
            }
            self.inner.meta.update(&ns, |tx| {
                let existed = tx.get(Kind::Content, &id)?.is_some();
                if !existed {
                    tx.put(Kind::Content, &id, &encoded)?;
                }
                if let Some(lease) = &lease {
                    tx.lease_remove(lease, &ingest_resource(&reference))?;
                    tx.lease_add(lease, &content_resource(&actual))?;
                }
                Ok(existed)
            })?
        };
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            tracing::warn!(path = %self.dir.display(), error = %e, "cannot remove committed ingest");
        }
        if existed {
            return Err(Error::already_exists(format!("content {actual}")));
        }
        tracing::debug!(namespace = %ns, r#ref = %reference, digest = %actual, size = self.offset, "content committed");
        Ok(record.to_info(actual))
    }
}

impl std::io::Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.append(buf).map_err(std::io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
