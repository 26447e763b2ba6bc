//! The sled database, its schema version, and namespaced object transactions.

use std::path::Path;
use std::sync::{Arc, RwLock};

use berth_core::{identifiers, Error, Result};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use crate::namespaces::NamespaceRecord;

/// Schema version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;
const SCHEMA_KEY: &[u8] = b"schema_version";
const SEP: u8 = 0;

/// Object kinds stored per namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Image records (name → target descriptor).
    Images,
    /// Container records.
    Containers,
    /// Content blob visibility and labels.
    Content,
    /// Leases and their resources.
    Leases,
    /// Snapshots of every snapshotter.
    Snapshots,
    /// Pod sandboxes (CRI).
    Sandboxes,
}

impl Kind {
    /// All kinds, in the order used when reporting what a namespace still holds.
    pub const ALL: [Kind; 6] =
        [Kind::Images, Kind::Containers, Kind::Content, Kind::Snapshots, Kind::Leases, Kind::Sandboxes];

    /// The name used in keys and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Images => "images",
            Kind::Containers => "containers",
            Kind::Content => "content",
            Kind::Leases => "leases",
            Kind::Snapshots => "snapshots",
            Kind::Sandboxes => "sandboxes",
        }
    }
}

/// Tunables of the metadata plugin (`[plugins."io.berth.metadata.v1.sled"]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetadataConfig {
    /// Bytes of page cache sled may keep in memory.
    pub cache_capacity_bytes: u64,
    /// Background flush interval in milliseconds (0 disables it).
    pub flush_every_ms: u64,
    /// Fsync after every committed write, so an acknowledged change survives a crash.
    pub sync_writes: bool,
}

impl Default for MetadataConfig {
    fn default() -> Self {
        MetadataConfig { cache_capacity_bytes: 32 << 20, flush_every_ms: 500, sync_writes: true }
    }
}

/// The open metadata database.
#[derive(Clone)]
pub struct MetadataStore {
    db: sled::Db,
    tree: sled::Tree,
    sync_writes: bool,
    gc_barrier: Arc<RwLock<()>>,
}

pub(crate) fn key(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(SEP);
        }
        k.extend_from_slice(p);
    }
    k
}

pub(crate) fn ns_key(ns: &str) -> Vec<u8> {
    key(&[b"ns", ns.as_bytes()])
}

fn cnt_key(ns: &str, kind: Kind) -> Vec<u8> {
    key(&[b"cnt", ns.as_bytes(), kind.as_str().as_bytes()])
}

fn obj_prefix(ns: &str, kind: Kind) -> Vec<u8> {
    let mut k = key(&[b"obj", ns.as_bytes(), kind.as_str().as_bytes()]);
    k.push(SEP);
    k
}

fn db_err(e: sled::Error) -> Error {
    Error::internal(format!("metadata database: {e}"))
}

pub(crate) fn decode_u64(v: Option<sled::IVec>) -> u64 {
    v.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok()).map_or(0, u64::from_be_bytes)
}

impl MetadataStore {
    /// Opens (creating if needed) the database at `path`, checking or writing the schema version.
    pub fn open(path: &Path, config: &MetadataConfig) -> Result<Self> {
        let flush = (config.flush_every_ms > 0).then_some(config.flush_every_ms);
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(config.cache_capacity_bytes)
            .flush_every_ms(flush)
            .open()
            .map_err(|e| Error::internal(format!("open metadata database {}: {e}", path.display())))?;
        match db.get(SCHEMA_KEY).map_err(db_err)? {
            None => {
                db.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes()).map_err(db_err)?;
                db.flush().map_err(db_err)?;
            }
            Some(v) => {
                let found = <[u8; 4]>::try_from(v.as_ref())
                    .map(u32::from_be_bytes)
                    .map_err(|_| Error::internal("metadata schema_version key is corrupt"))?;
                if found > SCHEMA_VERSION {
                    return Err(Error::failed_precondition(format!(
                        "metadata schema v{found} at {} is newer than this berthd supports (v{SCHEMA_VERSION})",
                        path.display()
                    )));
                }
                // Older schemas are migrated here as they come to exist; v1 is the first.
            }
        }
        let tree = db.open_tree(format!("v{SCHEMA_VERSION}")).map_err(db_err)?;
        Ok(MetadataStore { db, tree, sync_writes: config.sync_writes, gc_barrier: Arc::new(RwLock::new(())) })
    }

    /// The lock between the garbage collector (exclusive) and writers that make a file
    /// visible before recording it, e.g. a content commit renaming a blob into place (shared).
    pub fn gc_barrier(&self) -> Arc<RwLock<()>> {
        self.gc_barrier.clone()
    }

    /// The schema version recorded in the database.
    pub fn schema_version(&self) -> Result<u32> {
        let v = self.db.get(SCHEMA_KEY).map_err(db_err)?.ok_or_else(|| Error::internal("no schema version"))?;
        <[u8; 4]>::try_from(v.as_ref()).map(u32::from_be_bytes).map_err(|_| Error::internal("corrupt schema version"))
    }

    /// Flushes every pending write to disk.
    pub fn flush(&self) -> Result<()> {
        self.db.flush().map(|_| ()).map_err(db_err)
    }

    pub(crate) fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    /// Runs `f` as one serializable transaction on the namespace `ns`, creating the namespace
    /// if it does not exist yet (as containerd does when an object is first created in it).
    /// `f` may run more than once on conflicts, so it must not have side effects.
    pub fn update<R>(&self, ns: &str, f: impl Fn(&mut NamespaceTx<'_>) -> Result<R>) -> Result<R> {
        identifiers::validate(ns).map_err(|e| e.context("namespace"))?;
        let out = self.raw_transaction(|tx| {
            let nk = ns_key(ns);
            if tx.get(&nk)?.is_none() {
                tx.insert(nk, NamespaceRecord::default().encode())?;
            }
            let mut ntx = NamespaceTx { tx, ns };
            f(&mut ntx).map_err(ConflictableTransactionError::Abort)
        })?;
        Ok(out)
    }

    /// Runs a raw transaction on the schema tree and flushes when configured to.
    pub(crate) fn raw_transaction<R>(
        &self,
        f: impl Fn(&TransactionalTree) -> Result<R, ConflictableTransactionError<Error>>,
    ) -> Result<R> {
        let out = self.tree.transaction(f).map_err(|e| match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => db_err(e),
        })?;
        if self.sync_writes {
            self.flush()?;
        }
        Ok(out)
    }

    /// Reads one object outside any transaction.
    pub fn get(&self, ns: &str, kind: Kind, id: &str) -> Result<Option<Vec<u8>>> {
        let k = key(&[b"obj", ns.as_bytes(), kind.as_str().as_bytes(), id.as_bytes()]);
        Ok(self.tree.get(k).map_err(db_err)?.map(|v| v.to_vec()))
    }

    /// Lists the objects of `kind` in `ns` as (id, record) pairs, ordered by id.
    pub fn list(&self, ns: &str, kind: Kind) -> Result<Vec<(String, Vec<u8>)>> {
        let prefix = obj_prefix(ns, kind);
        self.tree
            .scan_prefix(&prefix)
            .map(|r| {
                let (k, v) = r.map_err(db_err)?;
                let id = String::from_utf8(k[prefix.len()..].to_vec())
                    .map_err(|_| Error::internal("metadata key is not UTF-8"))?;
                Ok((id, v.to_vec()))
            })
            .collect()
    }

    /// How many objects of `kind` the namespace holds, from the transactional counter.
    pub fn count(&self, ns: &str, kind: Kind) -> Result<u64> {
        Ok(decode_u64(self.tree.get(cnt_key(ns, kind)).map_err(db_err)?))
    }
}

/// A transaction scoped to one namespace; keeps per-kind counters exact.
pub struct NamespaceTx<'a> {
    tx: &'a TransactionalTree,
    ns: &'a str,
}

fn tx_err(e: sled::transaction::UnabortableTransactionError) -> Error {
    Error::internal(format!("metadata transaction: {e}"))
}

impl NamespaceTx<'_> {
    fn obj_key(&self, kind: Kind, id: &str) -> Vec<u8> {
        key(&[b"obj", self.ns.as_bytes(), kind.as_str().as_bytes(), id.as_bytes()])
    }

    /// The namespace this transaction is scoped to.
    pub fn namespace(&self) -> &str {
        self.ns
    }

    /// Reads an object.
    pub fn get(&self, kind: Kind, id: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.tx.get(self.obj_key(kind, id)).map_err(tx_err)?.map(|v| v.to_vec()))
    }

    /// Writes an object, returning whether it is new.
    pub fn put(&mut self, kind: Kind, id: &str, value: &[u8]) -> Result<bool> {
        let old = self.tx.insert(self.obj_key(kind, id), value).map_err(tx_err)?;
        if old.is_none() {
            self.add_count(kind, 1)?;
        }
        Ok(old.is_none())
    }

    /// Removes an object, returning its record if it existed.
    pub fn remove(&mut self, kind: Kind, id: &str) -> Result<Option<Vec<u8>>> {
        let old = self.tx.remove(self.obj_key(kind, id)).map_err(tx_err)?;
        if old.is_some() {
            self.add_count(kind, -1)?;
        }
        Ok(old.map(|v| v.to_vec()))
    }

    fn add_count(&mut self, kind: Kind, delta: i64) -> Result<()> {
        let k = cnt_key(self.ns, kind);
        let n = decode_u64(self.tx.get(&k).map_err(tx_err)?).saturating_add_signed(delta);
        if n == 0 {
            self.tx.remove(k).map_err(tx_err)?;
        } else {
            self.tx.insert(k, &n.to_be_bytes()).map_err(tx_err)?;
        }
        Ok(())
    }
}

/// Reads the non-zero counters of `ns` inside a transaction.
pub(crate) fn kinds_in_use(tx: &TransactionalTree, ns: &str) -> Result<Vec<Kind>, ConflictableTransactionError<Error>> {
    let mut used = Vec::new();
    for kind in Kind::ALL {
        if decode_u64(tx.get(cnt_key(ns, kind))?) > 0 {
            used.push(kind);
        }
    }
    Ok(used)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, MetadataStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = MetadataStore::open(&dir.path().join("meta.sled"), &MetadataConfig::default()).unwrap();
        (dir, store)
    }

    #[test]
    fn schema_version_written_and_checked() {
        let (dir, store) = open();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        store.db.insert(SCHEMA_KEY, &(SCHEMA_VERSION + 1).to_be_bytes()).unwrap();
        store.flush().unwrap();
        drop(store);
        let err = MetadataStore::open(&dir.path().join("meta.sled"), &MetadataConfig::default()).err().unwrap();
        assert_eq!(err.kind(), berth_core::ErrorKind::FailedPrecondition);
        assert!(err.to_string().contains("newer"), "{err}");
    }

    #[test]
    fn objects_are_namespaced_and_counted() {
        let (_dir, store) = open();
        store
            .update("a", |tx| {
                assert!(tx.put(Kind::Images, "x", b"1")?);
                assert!(!tx.put(Kind::Images, "x", b"2")?);
                tx.put(Kind::Images, "y", b"3")?;
                Ok(())
            })
            .unwrap();
        store.update("b", |tx| tx.put(Kind::Images, "x", b"9").map(|_| ())).unwrap();
        let ids: Vec<_> = store.list("a", Kind::Images).unwrap().into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids, ["x", "y"]);
        assert_eq!(store.get("a", Kind::Images, "x").unwrap().as_deref(), Some(&b"2"[..]));
        assert_eq!(store.count("a", Kind::Images).unwrap(), 2);
        assert_eq!(store.count("b", Kind::Images).unwrap(), 1);
        store.update("a", |tx| tx.remove(Kind::Images, "x").map(|_| ())).unwrap();
        assert_eq!(store.count("a", Kind::Images).unwrap(), 1);
        assert!(store.list("a", Kind::Containers).unwrap().is_empty());
    }

    #[test]
    fn aborted_transaction_writes_nothing() {
        let (_dir, store) = open();
        let err = store
            .update("a", |tx| {
                tx.put(Kind::Images, "x", b"1")?;
                Err::<(), _>(Error::invalid_argument("nope"))
            })
            .unwrap_err();
        assert_eq!(err.kind(), berth_core::ErrorKind::InvalidArgument);
        assert!(store.get("a", Kind::Images, "x").unwrap().is_none());
        assert_eq!(store.count("a", Kind::Images).unwrap(), 0);
        assert!(store.get_namespace("a").is_err(), "namespace creation rolled back too");
    }

    #[test]
    fn invalid_namespace_rejected() {
        let (_dir, store) = open();
        assert!(store.update("bad/ns", |_| Ok(())).is_err());
    }
}
