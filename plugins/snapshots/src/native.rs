//! The native snapshotter: each snapshot is a full copy of its parent's tree at
//! `root/snapshots/<id>`, mounted by bind (rw for active, ro for views). Works on any
//! filesystem; costs a copy per snapshot.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_core::filters::Filter;
use berth_core::{Error, Result};
use berth_metadata::MetadataStore;
use berth_mount::Mount;

use crate::store::{Core, Record};
use crate::{copy_tree, disk_usage, CreateOptions, Info, Kind, Snapshotter, Usage};

/// The native (copying) snapshotter.
pub struct NativeSnapshotter {
    core: Core,
}

impl NativeSnapshotter {
    /// Its name in metadata, leases and the API.
    pub const NAME: &'static str = "native";

    /// Opens the snapshotter at `root` (normally `<daemon root>/snapshots/native`).
    pub fn open(root: &Path, meta: Arc<MetadataStore>) -> Result<NativeSnapshotter> {
        Ok(NativeSnapshotter { core: Core::open(Self::NAME, root, meta)? })
    }

    fn tree(&self, id: u64) -> PathBuf {
        self.core.dir(id)
    }

    fn mounts_for(&self, rec: &Record) -> Vec<Mount> {
        let mode = if rec.kind == Kind::Active { "rw" } else { "ro" };
        vec![Mount::new("bind", self.tree(rec.id).display().to_string(), [mode, "rbind"])]
    }

    fn create(&self, ns: &str, key: &str, parent: &str, kind: Kind, opts: &CreateOptions) -> Result<Vec<Mount>> {
        let barrier = self.core.meta.gc_barrier();
        let _shared = barrier.read().unwrap_or_else(|p| p.into_inner());
        // Cheap checks first, so a taken key or missing parent copies nothing; the
        // transaction checks both again.
        if self.core.get(ns, key).is_ok() {
            return Err(Error::already_exists(format!("snapshot {key:?}")));
        }
        let parent_rec = if parent.is_empty() {
            None
        } else {
            Some(self.core.get(ns, parent).map_err(|e| {
                if e.kind() == berth_core::ErrorKind::NotFound {
                    Error::not_found(format!("parent snapshot {parent:?} does not exist"))
                } else {
                    e
                }
            })?)
        };
        let (id, dir) = self.core.new_dir()?;
        let made = (|| {
            match &parent_rec {
                Some(p) if p.kind == Kind::Committed => copy_tree(&self.tree(p.id), &dir)?,
                Some(_) => {} // the transaction refuses a non-committed parent
                None => fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).map_err(Error::from)?,
            }
            let rec = self.core.create(ns, key, parent, kind, opts, id)?;
            Ok(self.mounts_for(&rec))
        })();
        if made.is_err() {
            let _ = fs::remove_dir_all(&dir);
        }
        made
    }
}

impl Snapshotter for NativeSnapshotter {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn root(&self) -> &Path {
        &self.core.root
    }

    fn stat(&self, ns: &str, key: &str) -> Result<Info> {
        Ok(self.core.get(ns, key)?.to_info(key))
    }

    fn update(&self, ns: &str, info: &Info, fieldpaths: &[String]) -> Result<Info> {
        self.core.update(ns, info, fieldpaths)
    }

    fn usage(&self, ns: &str, key: &str) -> Result<Usage> {
        let rec = self.core.get(ns, key)?;
        match (rec.kind, rec.usage) {
            (Kind::Committed, Some(u)) => Ok(u),
            _ => disk_usage(&self.tree(rec.id)),
        }
    }

    fn mounts(&self, ns: &str, key: &str) -> Result<Vec<Mount>> {
        Ok(self.mounts_for(&self.core.get(ns, key)?))
    }

    fn prepare(&self, ns: &str, key: &str, parent: &str, opts: &CreateOptions) -> Result<Vec<Mount>> {
        self.create(ns, key, parent, Kind::Active, opts)
    }

    fn view(&self, ns: &str, key: &str, parent: &str, opts: &CreateOptions) -> Result<Vec<Mount>> {
        self.create(ns, key, parent, Kind::View, opts)
    }

    fn commit(&self, ns: &str, name: &str, key: &str, opts: &CreateOptions) -> Result<()> {
        let rec = self.core.get(ns, key)?;
        let usage = if rec.kind == Kind::Active { disk_usage(&self.tree(rec.id))? } else { Usage::default() };
        let barrier = self.core.meta.gc_barrier();
        let _shared = barrier.read().unwrap_or_else(|p| p.into_inner());
        self.core.commit(ns, name, key, opts, usage)
    }

    fn remove(&self, ns: &str, key: &str) -> Result<()> {
        let rec = self.core.remove(ns, key)?;
        self.core.remove_dir(rec.id);
        Ok(())
    }

    fn list(&self, ns: &str, filter: &Filter) -> Result<Vec<Info>> {
        Ok(self.core.list(ns)?.into_iter().map(|(k, r)| r.to_info(&k)).filter(|i| filter.matches(i)).collect())
    }

    fn cleanup(&self) -> Result<usize> {
        self.core.cleanup()
    }
}
