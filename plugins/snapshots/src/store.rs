//! What every snapshotter shares: snapshot records in the metadata store and numbered
//! directories under its root.
//!
//! # Records
//!
//! In namespace `<ns>`, `Kind::Snapshots` id `<snapshotter>\0<key>` holds a JSON [`Record`]:
//! the backend id (the directory `root/snapshots/<id>`), kind, parent name, times, labels, the
//! number of children (kept exact in the same transactions that add and remove children, so a
//! remove can refuse a parent without scanning) and, for committed snapshots, their usage
//! measured at commit. Backend ids are unique across namespaces; the same key in two
//! namespaces names two snapshots, as in containerd.
//!
//! # Crash safety
//!
//! A directory is created before its record and removed after it, so a crash leaves at
//! worst a directory without a record, which [`Core::cleanup`] removes. Creating directories
//! and records happens under the shared side of the metadata GC barrier, and cleanup and the
//! garbage collector take its exclusive side, so neither ever sees a directory whose record
//! (and lease resource) is still being written.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_core::{labels, Error, Result};
use berth_metadata::{Kind as MetaKind, LeaseResource, MetadataStore, NamespaceTx};
use serde::{Deserialize, Serialize};

use crate::{CreateOptions, Info, Kind, Usage};

/// The stored record of one snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    pub id: u64,
    pub kind: Kind,
    #[serde(default)]
    pub parent: String,
    pub created_at_ns: u64,
    pub updated_at_ns: u64,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub children: u64,
    #[serde(default)]
    pub usage: Option<Usage>,
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl Record {
    fn decode(key: &str, bytes: &[u8]) -> Result<Record> {
        serde_json::from_slice(bytes).map_err(|e| Error::internal(format!("corrupt snapshot record {key:?}: {e}")))
    }
    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
    pub(crate) fn to_info(&self, key: &str) -> Info {
        Info {
            name: key.to_string(),
            parent: self.parent.clone(),
            kind: self.kind,
            created_at: UNIX_EPOCH + Duration::from_nanos(self.created_at_ns),
            updated_at: UNIX_EPOCH + Duration::from_nanos(self.updated_at_ns),
            labels: self.labels.clone(),
        }
    }
}

fn not_found(key: &str) -> Error {
    Error::not_found(format!("snapshot {key:?} does not exist"))
}

fn validate_key(what: &str, key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid_argument(format!("snapshot {what} must not be empty")));
    }
    if key.contains('\0') {
        return Err(Error::invalid_argument(format!("snapshot {what} {key:?} must not contain NUL")));
    }
    Ok(())
}

/// Records and directories of one snapshotter.
pub(crate) struct Core {
    pub name: &'static str,
    pub root: PathBuf,
    pub meta: Arc<MetadataStore>,
    next_id: AtomicU64,
    /// Ids of live staged layers: directories without records that cleanup must keep.
    pub staged: Arc<Mutex<HashSet<u64>>>,
}

impl Core {
    /// Opens the snapshotter root, creating `root/snapshots`.
    pub fn open(name: &'static str, root: &Path, meta: Arc<MetadataStore>) -> Result<Core> {
        let dir = root.join("snapshots");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::internal(format!("create {}: {e}", dir.display())))?;
        let mut max = 0;
        for entry in fs::read_dir(&dir).map_err(|e| Error::internal(format!("read {}: {e}", dir.display())))? {
            let entry = entry.map_err(|e| Error::internal(format!("read {}: {e}", dir.display())))?;
            if let Some(n) = entry.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) {
                max = max.max(n);
            }
        }
        Ok(Core {
            name,
            root: root.to_path_buf(),
            meta,
            next_id: AtomicU64::new(max + 1),
            staged: Arc::new(Mutex::new(HashSet::new())),
        })
    }

    /// `root/snapshots`.
    pub fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// The directory of backend id `id`.
    pub fn dir(&self, id: u64) -> PathBuf {
        self.snapshots_dir().join(id.to_string())
    }

    fn meta_id(&self, key: &str) -> String {
        format!("{}\0{key}", self.name)
    }

    /// The lease resource naming snapshot `key` of this snapshotter.
    pub fn lease_resource(&self, key: &str) -> LeaseResource {
        LeaseResource { kind: format!("snapshots/{}", self.name), id: key.to_string() }
    }

    /// The record of `key`; NotFound when absent.
    pub fn get(&self, ns: &str, key: &str) -> Result<Record> {
        let bytes = self.meta.get(ns, MetaKind::Snapshots, &self.meta_id(key))?.ok_or_else(|| not_found(key))?;
        Record::decode(key, &bytes)
    }

    fn tx_get(&self, tx: &NamespaceTx<'_>, key: &str) -> Result<Option<Record>> {
        tx.get(MetaKind::Snapshots, &self.meta_id(key))?.map(|b| Record::decode(key, &b)).transpose()
    }

    /// Creates a fresh numbered directory and returns its id and path.
    pub fn new_dir(&self) -> Result<(u64, PathBuf)> {
        loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let dir = self.dir(id);
            match fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok((id, dir)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::internal(format!("create {}: {e}", dir.display()))),
            }
        }
    }

    /// Removes a snapshot directory; failures are logged and left to cleanup.
    pub fn remove_dir(&self, id: u64) {
        let dir = self.dir(id);
        // Renamed first so a half-removed tree is never mistaken for the live id.
        let doomed = self.snapshots_dir().join(format!("rm-{id}"));
        let target = match fs::rename(&dir, &doomed) {
            Ok(()) => doomed,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => dir,
        };
        if let Err(e) = fs::remove_dir_all(&target) {
            tracing::warn!(snapshotter = self.name, path = %target.display(), error = %e, "cannot remove snapshot directory");
        }
    }

    /// The backend ids of `parent` and its ancestors, nearest first.
    pub fn chain(&self, ns: &str, parent: &str) -> Result<Vec<u64>> {
        let mut ids = Vec::new();
        let mut next = parent.to_string();
        while !next.is_empty() {
            let rec = self.get(ns, &next).map_err(|e| e.context("parent chain"))?;
            ids.push(rec.id);
            next = rec.parent;
        }
        Ok(ids)
    }

    /// Records a new active snapshot or view `key` with backend id `id`; returns its record.
    pub fn create(
        &self,
        ns: &str,
        key: &str,
        parent: &str,
        kind: Kind,
        opts: &CreateOptions,
        id: u64,
    ) -> Result<Record> {
        validate_key("key", key)?;
        labels::validate_all(&opts.labels)?;
        let now = now_ns();
        let rec = Record {
            id,
            kind,
            parent: parent.to_string(),
            created_at_ns: now,
            updated_at_ns: now,
            labels: opts.labels.clone(),
            children: 0,
            usage: None,
        };
        self.meta.update(ns, |tx| {
            if self.tx_get(tx, key)?.is_some() {
                return Err(Error::already_exists(format!("snapshot {key:?}")));
            }
            self.add_child(tx, parent)?;
            tx.put(MetaKind::Snapshots, &self.meta_id(key), &rec.encode())?;
            if let Some(lease) = &opts.lease {
                tx.lease_add(lease, &self.lease_resource(key))?;
            }
            Ok(())
        })?;
        Ok(rec)
    }

    fn add_child(&self, tx: &mut NamespaceTx<'_>, parent: &str) -> Result<()> {
        if parent.is_empty() {
            return Ok(());
        }
        let mut p = self
            .tx_get(tx, parent)?
            .ok_or_else(|| Error::not_found(format!("parent snapshot {parent:?} does not exist")))?;
        if p.kind != Kind::Committed {
            return Err(Error::invalid_argument(format!("parent {parent:?} is not a committed snapshot")));
        }
        p.children += 1;
        tx.put(MetaKind::Snapshots, &self.meta_id(parent), &p.encode())?;
        Ok(())
    }

    /// Turns active `key` into committed `name` with `usage`.
    pub fn commit(&self, ns: &str, name: &str, key: &str, opts: &CreateOptions, usage: Usage) -> Result<()> {
        validate_key("name", name)?;
        labels::validate_all(&opts.labels)?;
        let now = now_ns();
        self.meta.update(ns, |tx| {
            let mut rec = self.tx_get(tx, key)?.ok_or_else(|| not_found(key))?;
            if rec.kind != Kind::Active {
                return Err(Error::failed_precondition(format!(
                    "snapshot {key:?} is a {}, only active snapshots can be committed",
                    rec.kind.as_str()
                )));
            }
            if self.tx_get(tx, name)?.is_some() {
                return Err(Error::already_exists(format!("snapshot {name:?}")));
            }
            rec.kind = Kind::Committed;
            rec.labels = opts.labels.clone();
            rec.created_at_ns = now;
            rec.updated_at_ns = now;
            rec.usage = Some(usage);
            tx.remove(MetaKind::Snapshots, &self.meta_id(key))?;
            tx.put(MetaKind::Snapshots, &self.meta_id(name), &rec.encode())?;
            if let Some(lease) = &opts.lease {
                tx.lease_add(lease, &self.lease_resource(name))?;
                tx.lease_remove(lease, &self.lease_resource(key))?;
            }
            Ok(())
        })
    }

    /// Records committed snapshot `name` on `parent` for an existing directory `id`.
    pub fn commit_new(
        &self,
        ns: &str,
        name: &str,
        parent: &str,
        opts: &CreateOptions,
        id: u64,
        usage: Usage,
    ) -> Result<Record> {
        validate_key("name", name)?;
        labels::validate_all(&opts.labels)?;
        let now = now_ns();
        let rec = Record {
            id,
            kind: Kind::Committed,
            parent: parent.to_string(),
            created_at_ns: now,
            updated_at_ns: now,
            labels: opts.labels.clone(),
            children: 0,
            usage: Some(usage),
        };
        self.meta.update(ns, |tx| {
            if self.tx_get(tx, name)?.is_some() {
                return Err(Error::already_exists(format!("snapshot {name:?}")));
            }
            self.add_child(tx, parent)?;
            tx.put(MetaKind::Snapshots, &self.meta_id(name), &rec.encode())?;
            if let Some(lease) = &opts.lease {
                tx.lease_add(lease, &self.lease_resource(name))?;
            }
            Ok(())
        })?;
        Ok(rec)
    }

    /// Removes the record of `key` (refusing one with children) and returns it; the caller
    /// removes the directory.
    pub fn remove(&self, ns: &str, key: &str) -> Result<Record> {
        self.meta.update(ns, |tx| {
            let rec = self.tx_get(tx, key)?.ok_or_else(|| not_found(key))?;
            if rec.children > 0 {
                return Err(Error::failed_precondition(format!(
                    "cannot remove snapshot {key:?}: it has {} child snapshot(s)",
                    rec.children
                )));
            }
            tx.remove(MetaKind::Snapshots, &self.meta_id(key))?;
            if !rec.parent.is_empty() {
                if let Some(mut p) = self.tx_get(tx, &rec.parent)? {
                    p.children = p.children.saturating_sub(1);
                    tx.put(MetaKind::Snapshots, &self.meta_id(&rec.parent), &p.encode())?;
                }
            }
            Ok(rec)
        })
    }

    /// Applies a label update to `info.name`.
    pub fn update(&self, ns: &str, info: &Info, paths: &[String]) -> Result<Info> {
        validate_key("name", &info.name)?;
        labels::validate_all(&info.labels)?;
        let key = info.name.as_str();
        let rec = self.meta.update(ns, |tx| {
            let mut rec = self.tx_get(tx, key)?.ok_or_else(|| not_found(key))?;
            labels::apply_fieldpaths(&mut rec.labels, &info.labels, paths)
                .map_err(|e| e.context(format!("update snapshot {key:?}")))?;
            rec.updated_at_ns = now_ns();
            tx.put(MetaKind::Snapshots, &self.meta_id(key), &rec.encode())?;
            Ok(rec)
        })?;
        Ok(rec.to_info(key))
    }

    /// Every record of this snapshotter in `ns`, ordered by key.
    pub fn list(&self, ns: &str) -> Result<Vec<(String, Record)>> {
        let prefix = format!("{}\0", self.name);
        self.meta
            .list(ns, MetaKind::Snapshots)?
            .into_iter()
            .filter_map(|(id, bytes)| id.strip_prefix(&prefix).map(|k| (k.to_string(), bytes)))
            .map(|(k, bytes)| Ok((k.clone(), Record::decode(&k, &bytes)?)))
            .collect()
    }

    /// Backend ids referenced by any namespace, plus live staged ones.
    fn live_ids(&self) -> Result<HashSet<u64>> {
        let mut ids: HashSet<u64> = self.staged.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for ns in self.meta.list_namespaces()? {
            ids.extend(self.list(&ns.name)?.into_iter().map(|(_, r)| r.id));
        }
        Ok(ids)
    }

    /// Removes directories under `root/snapshots` that no record refers to.
    pub fn cleanup(&self) -> Result<usize> {
        let barrier = self.meta.gc_barrier();
        let _exclusive = barrier.write().unwrap_or_else(|p| p.into_inner());
        let live = self.live_ids()?;
        let dir = self.snapshots_dir();
        let mut removed = 0;
        for entry in fs::read_dir(&dir).map_err(|e| Error::internal(format!("read {}: {e}", dir.display())))? {
            let entry = entry.map_err(|e| Error::internal(format!("read {}: {e}", dir.display())))?;
            let id = entry.file_name().to_str().and_then(|n| n.parse::<u64>().ok());
            if id.is_some_and(|id| live.contains(&id)) {
                continue;
            }
            tracing::info!(snapshotter = self.name, path = %entry.path().display(), "removing unreferenced snapshot directory");
            match fs::remove_dir_all(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) => tracing::warn!(path = %entry.path().display(), error = %e, "cannot remove"),
            }
        }
        Ok(removed)
    }

    /// Registers a staged directory so cleanup keeps it; returns the hook that forgets it and
    /// removes its directory when the staged layer is dropped uncommitted.
    pub fn stage(&self, id: u64) -> Box<dyn FnOnce(u64) + Send + Sync> {
        self.staged.lock().unwrap_or_else(|p| p.into_inner()).insert(id);
        let staged = self.staged.clone();
        let dir = self.dir(id);
        Box::new(move |id| {
            if let Err(e) = fs::remove_dir_all(&dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %dir.display(), error = %e, "cannot remove staged layer");
                }
            }
            staged.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        })
    }

    /// Forgets a staged id once its record exists.
    pub fn unstage(&self, id: u64) {
        self.staged.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }
}
