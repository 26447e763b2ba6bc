//! Snapshotters: the filesystems containers and image layers live in, as chains of
//! copy-on-write snapshots, with their records in the metadata store.
//!
//! # The snapshot life cycle
//!
//! A snapshot is a directory tree identified, within a namespace and a snapshotter, by a
//! string. It is in one of three kinds:
//!
//! - **Active** — writable. Made by [`Snapshotter::prepare`] with a *key*, optionally on top
//!   of a *parent*. The caller mounts the returned mounts, changes files, and then either
//!   commits or removes it.
//! - **Committed** — read-only and immutable, made by [`Snapshotter::commit`], which turns an
//!   active snapshot into a committed one under a *name* (the key disappears). Only committed
//!   snapshots can be parents.
//! - **View** — a read-only mount of a parent made by [`Snapshotter::view`]; it can be
//!   removed but never committed.
//!
//! Keys and names share one space: `Stat`, `Mounts`, `Remove` and `Usage` take either (the
//! key of an active snapshot or view, the name of a committed one), and creating any
//! snapshot whose key or name is taken is `AlreadyExists`.
//!
//! Unpacking an image layer by layer, the way containerd's unpacker does:
//!
//! ```text
//! prepare("extract-1", parent: "")           -> mounts; apply layer 1 into them
//! commit(name: "sha256:<chain1>", key: "extract-1")
//! prepare("extract-2", parent: "sha256:<chain1>")
//! commit(name: "sha256:<chain2>", key: "extract-2")
//! prepare("my-container", parent: "sha256:<chain2>")   -> the container's rootfs
//! ```
//!
//! Names of layer snapshots are usually chain IDs; clients find already-unpacked layers by the
//! `containerd.io/snapshot.ref` label they set on commit, which is stored and filtered like
//! any other label.
//!
//! Rules every implementation keeps (checked by [`testsuite`]):
//!
//! - A parent must exist (`NotFound`) and be committed (`InvalidArgument`).
//! - Only an active snapshot can be committed (`FailedPrecondition` otherwise).
//! - A snapshot with children cannot be removed (`FailedPrecondition`); remove leaves first.
//! - A file written in a parent is visible in every child's mount; a file deleted in a child
//!   stays hidden in that child and its descendants and visible in the parent.
//! - Changing a committed snapshot's files is undefined; only labels can be updated.
//! - Labels are set on prepare/view/commit and changed by [`Snapshotter::update`] with field
//!   paths `labels` / `labels.<key>`.
//! - Within a lease, new snapshots are added to it as `snapshots/<snapshotter>` resources, so
//!   the garbage collector keeps them until the lease goes.
//! - A failed call leaves nothing behind: no record, no directory.
//!
//! # Fast unpack
//!
//! [`Snapshotter::prepare_staged`] and [`Snapshotter::commit_staged`] let an unpacker extract
//! every layer of an image at once into its own directory and then commit them in chain order
//! (overlayfs only). See [`StagedLayer`].

mod fsutil;
mod gc;
mod native;
mod overlay;
mod store;
pub mod testsuite;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use berth_core::filters::{Adaptor, Filter};
use berth_core::{Error, Result};

pub use berth_mount::Mount;
pub use fsutil::{copy_tree, disk_usage};
pub use gc::SnapshotterGcView;
pub use native::NativeSnapshotter;
pub use overlay::{check_overlay_support, OverlaySnapshotter};

/// Label clients put on a committed layer snapshot to find it by chain ID.
pub const REF_LABEL: &str = "containerd.io/snapshot.ref";

/// The kind of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Read-only mount of a parent.
    View,
    /// Writable, not yet committed.
    Active,
    /// Read-only, immutable, may be a parent.
    Committed,
}

impl Kind {
    /// The word used in filters and tables: `view`, `active`, `committed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::View => "view",
            Kind::Active => "active",
            Kind::Committed => "committed",
        }
    }
}

/// What a snapshotter knows of one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// Key (active, view) or name (committed).
    pub name: String,
    /// Name of the committed parent; empty for none.
    pub parent: String,
    /// Kind.
    pub kind: Kind,
    /// Creation time (commit time for committed snapshots).
    pub created_at: SystemTime,
    /// Last change of the record.
    pub updated_at: SystemTime,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

impl Adaptor for Info {
    fn field(&self, path: &[String]) -> Vec<String> {
        match path {
            [f] if f == "name" => vec![self.name.clone()],
            [f] if f == "parent" => vec![self.parent.clone()],
            [f] if f == "kind" => vec![self.kind.as_str().to_string()],
            [f, k] if f == "labels" => self.labels.get(k).cloned().into_iter().collect(),
            _ => Vec::new(),
        }
    }
}

/// Disk space a snapshot uses by itself (not counting its parents).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// Bytes allocated.
    pub size: i64,
    /// Distinct inodes.
    pub inodes: i64,
}

/// What a snapshot is created with besides its key and parent.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Lease to add the new snapshot to (`containerd-lease`).
    pub lease: Option<String>,
}

/// A directory prepared for one layer of a fast unpack, not yet a snapshot.
///
/// Made by [`Snapshotter::prepare_staged`]. The unpacker extracts a layer straight into
/// [`StagedLayer::dir`] — as the upper directory of an overlay, so whiteouts must already be
/// overlay whiteouts (0/0 character devices, `trusted.overlay.opaque` directories) — while
/// other layers of the same image extract into their own staged directories at the same
/// time. Then it calls [`Snapshotter::commit_staged`] for each layer in chain order, bottom
/// first: each commit needs its parent committed. A staged layer belongs to no namespace until
/// committed, is invisible to List/Stat, and is never touched by Cleanup or the garbage
/// collector while it lives; dropping it without committing removes its directory.
///
/// ```text
/// let staged: Vec<StagedLayer> = layers.iter().map(|_| sn.prepare_staged()).collect()?;
/// parallel for (layer, s) in zip(layers, &staged): apply(layer, s.dir())
/// let mut parent = String::new();
/// for (chain_id, s) in zip(chain_ids, staged) {
///     sn.commit_staged(ns, s, chain_id, &parent, opts)?;   // AlreadyExists: someone won
///     parent = chain_id;
/// }
/// ```
pub struct StagedLayer {
    pub(crate) id: u64,
    pub(crate) dir: PathBuf,
    pub(crate) release: Option<Box<dyn FnOnce(u64) + Send + Sync>>,
}

impl StagedLayer {
    /// The directory to extract the layer into.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl std::fmt::Debug for StagedLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagedLayer").field("id", &self.id).field("dir", &self.dir).finish()
    }
}

impl Drop for StagedLayer {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release(self.id);
        }
    }
}

/// A snapshotter. Every method blocks on file and database I/O; namespaces isolate records.
pub trait Snapshotter: Send + Sync {
    /// The snapshotter's name (`overlayfs`, `native`), used in metadata ids and lease types.
    fn name(&self) -> &str;
    /// The snapshotter's root directory.
    fn root(&self) -> &Path;
    /// The info of a snapshot by key or name; NotFound otherwise.
    fn stat(&self, ns: &str, key: &str) -> Result<Info>;
    /// Updates labels of `info.name` by field paths (`labels`, `labels.<key>`; none: all).
    fn update(&self, ns: &str, info: &Info, fieldpaths: &[String]) -> Result<Info>;
    /// Space used by the snapshot itself: stored for committed ones, measured for active ones.
    fn usage(&self, ns: &str, key: &str) -> Result<Usage>;
    /// Mounts that give the snapshot's filesystem (read-write for active, read-only else).
    fn mounts(&self, ns: &str, key: &str) -> Result<Vec<Mount>>;
    /// Creates an active snapshot `key` on `parent` (empty: none) and returns its mounts.
    fn prepare(&self, ns: &str, key: &str, parent: &str, opts: &CreateOptions) -> Result<Vec<Mount>>;
    /// Creates a read-only view `key` of `parent` and returns its mounts.
    fn view(&self, ns: &str, key: &str, parent: &str, opts: &CreateOptions) -> Result<Vec<Mount>>;
    /// Commits active snapshot `key` as `name`; `opts.labels` become its labels.
    fn commit(&self, ns: &str, name: &str, key: &str, opts: &CreateOptions) -> Result<()>;
    /// Removes a snapshot without children, record and files.
    fn remove(&self, ns: &str, key: &str) -> Result<()>;
    /// Every snapshot of the namespace that passes `filter` (fields `name`, `parent`, `kind`,
    /// `labels.<key>`), ordered by name.
    fn list(&self, ns: &str, filter: &Filter) -> Result<Vec<Info>>;
    /// Removes directories that no record of any namespace refers to; returns how many.
    fn cleanup(&self) -> Result<usize>;
    /// A directory to extract a layer into for fast unpack; NotImplemented unless overlayfs.
    fn prepare_staged(&self) -> Result<StagedLayer> {
        Err(Error::not_implemented(format!("staged unpack with the {} snapshotter", self.name())))
    }
    /// Commits a staged layer as committed snapshot `name` on `parent` (empty: none).
    fn commit_staged(
        &self,
        _ns: &str,
        _layer: StagedLayer,
        _name: &str,
        _parent: &str,
        _opts: &CreateOptions,
    ) -> Result<Info> {
        Err(Error::not_implemented(format!("staged unpack with the {} snapshotter", self.name())))
    }
}

/// A snapshotter shared between the services that use it (the registry's instance type).
pub type SharedSnapshotter = Arc<dyn Snapshotter>;

#[cfg(test)]
mod tests;
