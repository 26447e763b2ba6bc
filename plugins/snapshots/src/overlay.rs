//! The overlayfs snapshotter: each snapshot is `root/snapshots/<id>/{fs,work}`; a child's
//! `fs` is the overlay's upper directory over its ancestors' `fs` directories.
//!
//! Mounts: active without parent → rw bind of `fs`; active with parents → overlay with
//! `upperdir`, `workdir` and the `lowerdir` chain (nearest parent first); view of one
//! parent → ro bind of the parent's `fs`; view of a longer chain → overlay of lowerdirs only.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_core::filters::Filter;
use berth_core::{Error, Result};
use berth_metadata::MetadataStore;
use berth_mount::{Mount, MountGuard};

use crate::store::{Core, Record};
use crate::{disk_usage, CreateOptions, Info, Kind, Snapshotter, StagedLayer, Usage};

/// Whether the overlay module has an `index` feature to turn off (containerd passes
/// `index=off` so a lower directory can be shared by several overlays).
fn has_index_feature() -> bool {
    Path::new("/sys/module/overlay/parameters/index").exists()
}

/// Checks that overlayfs can be mounted with upper and work directories under `root` (the
/// kernel may lack it, or `root` may itself be on a filesystem that cannot be an upper layer)
/// by mounting one once. The error says why, for the plugin's skip reason.
pub fn check_overlay_support(root: &Path) -> Result<()> {
    fs::create_dir_all(root).map_err(|e| Error::internal(format!("create {}: {e}", root.display())))?;
    let t = tempfile::Builder::new()
        .prefix("overlay-check-")
        .tempdir_in(root)
        .map_err(|e| Error::internal(format!("create check directory in {}: {e}", root.display())))?;
    let d = |n: &str| t.path().join(n);
    for n in ["lower1", "lower2", "upper", "work", "merged"] {
        fs::create_dir(d(n)).map_err(|e| Error::internal(format!("create {}: {e}", d(n).display())))?;
    }
    let mut options = Vec::new();
    if has_index_feature() {
        options.push("index=off".to_string());
    }
    options.push(format!("workdir={}", d("work").display()));
    options.push(format!("upperdir={}", d("upper").display()));
    options.push(format!("lowerdir={}:{}", d("lower1").display(), d("lower2").display()));
    let m = Mount::new("overlay", "overlay", options);
    let guard = MountGuard::mount(&[m], &d("merged")).map_err(|e| {
        Error::not_implemented(format!(
            "overlayfs is not supported with upper directories under {}: {e}",
            root.display()
        ))
    })?;
    guard.unmount()?;
    Ok(())
}

/// The overlayfs snapshotter.
pub struct OverlaySnapshotter {
    core: Core,
    index_off: bool,
}

impl OverlaySnapshotter {
    /// Its name in metadata, leases and the API.
    pub const NAME: &'static str = "overlayfs";

    /// Opens the snapshotter at `root` (normally `<daemon root>/snapshots/overlayfs`). Call
    /// [`check_overlay_support`] first where support is unknown.
    pub fn open(root: &Path, meta: Arc<MetadataStore>) -> Result<OverlaySnapshotter> {
        Ok(OverlaySnapshotter { core: Core::open(Self::NAME, root, meta)?, index_off: has_index_feature() })
    }

    fn fs_dir(&self, id: u64) -> PathBuf {
        self.core.dir(id).join("fs")
    }

    fn mounts_for(&self, rec: &Record, parents: &[u64]) -> Vec<Mount> {
        let path = |id: u64| self.fs_dir(id).display().to_string();
        if parents.is_empty() {
            let mode = if rec.kind == Kind::Active { "rw" } else { "ro" };
            return vec![Mount::new("bind", path(rec.id), [mode, "rbind"])];
        }
        if rec.kind != Kind::Active && parents.len() == 1 {
            return vec![Mount::new("bind", path(parents[0]), ["ro", "rbind"])];
        }
        let mut options = Vec::new();
        if self.index_off {
            options.push("index=off".to_string());
        }
        if rec.kind == Kind::Active {
            options.push(format!("workdir={}", self.core.dir(rec.id).join("work").display()));
            options.push(format!("upperdir={}", path(rec.id)));
        }
        let lowers: Vec<String> = parents.iter().map(|&id| path(id)).collect();
        options.push(format!("lowerdir={}", lowers.join(":")));
        vec![Mount::new("overlay", "overlay", options)]
    }

    fn create(&self, ns: &str, key: &str, parent: &str, kind: Kind, opts: &CreateOptions) -> Result<Vec<Mount>> {
        let barrier = self.core.meta.gc_barrier();
        let _shared = barrier.read().unwrap_or_else(|p| p.into_inner());
        let (id, dir) = self.core.new_dir()?;
        let made = (|| {
            let fs_dir = dir.join("fs");
            mkdir(&fs_dir, 0o755)?;
            if kind == Kind::Active {
                mkdir(&dir.join("work"), 0o711)?;
            }
            let rec = self.core.create(ns, key, parent, kind, opts, id)?;
            let parents = self.core.chain(ns, parent)?;
            if let Some(&p) = parents.first() {
                // The new root directory takes the owner of the parent's, as containerd does,
                // so an image's root owner carries over to the container's upper directory.
                let md = fs::metadata(self.fs_dir(p)).map_err(Error::from)?;
                std::os::unix::fs::chown(&fs_dir, Some(md.uid()), Some(md.gid())).map_err(Error::from)?;
            }
            Ok(self.mounts_for(&rec, &parents))
        })();
        if made.is_err() {
            // A record written before a later step failed must go too.
            if let Ok(rec) = self.core.get(ns, key) {
                if rec.id == id {
                    let _ = self.core.remove(ns, key);
                }
            }
            let _ = fs::remove_dir_all(&dir);
        }
        made
    }
}

fn mkdir(p: &Path, mode: u32) -> Result<()> {
    fs::DirBuilder::new().mode(mode).create(p).map_err(|e| Error::internal(format!("create {}: {e}", p.display())))
}

impl Snapshotter for OverlaySnapshotter {
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
            _ => disk_usage(&self.fs_dir(rec.id)),
        }
    }

    fn mounts(&self, ns: &str, key: &str) -> Result<Vec<Mount>> {
        let rec = self.core.get(ns, key)?;
        let parents = self.core.chain(ns, &rec.parent)?;
        Ok(self.mounts_for(&rec, &parents))
    }

    fn prepare(&self, ns: &str, key: &str, parent: &str, opts: &CreateOptions) -> Result<Vec<Mount>> {
        self.create(ns, key, parent, Kind::Active, opts)
    }

    fn view(&self, ns: &str, key: &str, parent: &str, opts: &CreateOptions) -> Result<Vec<Mount>> {
        self.create(ns, key, parent, Kind::View, opts)
    }

    fn commit(&self, ns: &str, name: &str, key: &str, opts: &CreateOptions) -> Result<()> {
        let rec = self.core.get(ns, key)?;
        let usage = if rec.kind == Kind::Active { disk_usage(&self.fs_dir(rec.id))? } else { Usage::default() };
        let barrier = self.core.meta.gc_barrier();
        let _shared = barrier.read().unwrap_or_else(|p| p.into_inner());
        // The work directory stays: the snapshot may still be mounted as an upper layer.
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

    fn prepare_staged(&self) -> Result<StagedLayer> {
        let barrier = self.core.meta.gc_barrier();
        let _shared = barrier.read().unwrap_or_else(|p| p.into_inner());
        let (id, dir) = self.core.new_dir()?;
        let release = self.core.stage(id);
        let layer = StagedLayer { id, dir: dir.join("fs"), release: Some(release) };
        mkdir(&layer.dir, 0o755)?;
        Ok(layer)
    }

    fn commit_staged(
        &self,
        ns: &str,
        mut layer: StagedLayer,
        name: &str,
        parent: &str,
        opts: &CreateOptions,
    ) -> Result<Info> {
        if layer.dir != self.fs_dir(layer.id) || layer.release.is_none() {
            return Err(Error::invalid_argument(format!(
                "staged layer {} does not belong to the {} snapshotter at {}",
                layer.dir.display(),
                Self::NAME,
                self.core.root.display()
            )));
        }
        let usage = disk_usage(&layer.dir)?;
        let barrier = self.core.meta.gc_barrier();
        let _shared = barrier.read().unwrap_or_else(|p| p.into_inner());
        // On error the layer is dropped and its directory removed.
        let rec = self.core.commit_new(ns, name, parent, opts, layer.id, usage)?;
        layer.release = None;
        self.core.unstage(layer.id);
        Ok(rec.to_info(name))
    }
}
