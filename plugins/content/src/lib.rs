//! Berth's content store: blobs addressed by their sha256 digest, verified before they become
//! visible, shared on disk by every namespace, with per-namespace visibility, sizes, times and
//! labels kept in the metadata store.
//!
//! # On disk (`<daemon root>/content`)
//!
//! ```text
//! blobs/sha256/<hex>              committed blob, mode 0444; only ever created by rename
//! ingest/<key>/ingest.json        IngestRecord { ref, namespace, total, expected, lease,
//!                                                started_at_ns, updated_at_ns }
//! ingest/<key>/data               the bytes written so far
//! ingest/<key>.tmp-<n>            an ingest being created or aborted; removed at open
//! ```
//!
//! `<key>` is the hex sha256 of `<namespace>/<ref>`, so any ref string is a safe file name and
//! the same ref in two namespaces names two ingests. In the metadata store, each namespace
//! that can see a blob holds `Kind::Content` id `<digest>` → JSON `{ size, created_at_ns,
//! updated_at_ns, labels }`. A blob file without any record is invisible and left to the
//! garbage collector, which also removes blob files ([`ContentStore::blob_digests_on_disk`],
//! [`ContentStore::remove_blob`]).
//!
//! # Contract
//!
//! - **Nothing unverified is visible.** Data goes to `ingest/<key>/data`; [`Writer::commit`]
//!   fsyncs it, checks size and digest, renames it into `blobs/` (or drops it when that blob
//!   is already on disk) and then writes the namespace record — together with the lease
//!   update — in one metadata transaction. A crash at any point leaves either an ingest that
//!   can be resumed or a blob without a record, never a record without its blob.
//! - **One writer per ingest.** A second [`ContentStore::writer`] on the same namespace and
//!   ref fails with `Unavailable` ("ref … is locked") until the first [`Writer`] is dropped.
//! - **Resumable.** Dropping a writer (a client disconnect) or restarting the daemon keeps the
//!   ingest; reopening it by ref rehashes the data already there and continues at its end.
//! - **Offsets, as containerd.** [`Writer::write_at`] at offset 0 on a non-empty ingest
//!   restarts it from empty; any other offset must equal the current one, else
//!   `FailedPrecondition` (containerd answers `OutOfRange`, which has no kind of its own here:
//!   the request is well formed, the ingest is just not at that offset).
//! - **Commit errors** are `FailedPrecondition` for a size or digest mismatch, naming both
//!   values ("unexpected commit digest sha256:…, expected sha256:…"); `AlreadyExists` when the
//!   namespace could already see the blob (the ingest is still consumed, as containerd does,
//!   and clients treat it as success).
//! - **Write errors** (ENOSPC, EIO) are `Internal` errors naming the ingest; the partial chunk
//!   is cut off again, so the ingest stays consistent and resumable.
//! - **Leases.** A writer opened within a lease adds an `ingests` resource to it; the commit
//!   swaps it for a `content` resource in the same transaction as the record.

mod blob;
mod gc;
mod ingest;
mod store;
mod writer;

pub use blob::BlobReader;
pub use ingest::IngestStatus;
pub use store::{ContentStore, Info};
pub use writer::Writer;

#[cfg(test)]
mod tests;
