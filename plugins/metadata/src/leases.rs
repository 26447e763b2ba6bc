//! Leases: named holds that protect the resources (content, snapshots, ingests) added to
//! them from garbage collection until the lease is deleted or expires.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_core::filters::Adaptor;
use berth_core::time::parse_rfc3339;
use berth_core::{labels, Digest, Error, Result};
use serde::{Deserialize, Serialize};

use crate::store::{Kind, MetadataStore, NamespaceTx};

/// Label holding an RFC 3339 time after which the lease is collected.
pub const EXPIRE_LABEL: &str = "containerd.io/gc.expire";

/// A resource held by a lease: `content` (a digest), `ingests` (an ingest ref) or
/// `snapshots/<snapshotter>` (a snapshot key).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LeaseResource {
    /// Resource type.
    pub kind: String,
    /// Resource id within its type.
    pub id: String,
}

impl LeaseResource {
    /// Checks the type and id, as containerd does.
    pub fn validate(&self) -> Result<()> {
        match self.kind.as_str() {
            "content" => Digest::parse(&self.id).map(|_| ()),
            "ingests" if !self.id.is_empty() => Ok(()),
            k if k.strip_prefix("snapshots/").is_some_and(|s| !s.is_empty()) && !self.id.is_empty() => Ok(()),
            k => Err(Error::invalid_argument(format!("unsupported lease resource type {k:?} (id {:?})", self.id))),
        }
    }
}

/// A lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Id.
    pub id: String,
    /// Creation time.
    pub created_at: SystemTime,
    /// Labels (`containerd.io/gc.expire` sets an expiry).
    pub labels: BTreeMap<String, String>,
}

impl Adaptor for Lease {
    fn field(&self, path: &[String]) -> Vec<String> {
        match path {
            [f] if f == "id" => vec![self.id.clone()],
            [f, k] if f == "labels" => self.labels.get(k).cloned().into_iter().collect(),
            _ => Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct LeaseRecord {
    created_at_ns: u64,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    resources: BTreeSet<LeaseResource>,
}

impl LeaseRecord {
    fn decode(id: &str, bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| Error::internal(format!("corrupt lease record {id:?}: {e}")))
    }
    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
    fn to_lease(&self, id: &str) -> Lease {
        Lease {
            id: id.to_string(),
            created_at: UNIX_EPOCH + Duration::from_nanos(self.created_at_ns),
            labels: self.labels.clone(),
        }
    }
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

impl NamespaceTx<'_> {
    fn lease_record(&self, id: &str) -> Result<LeaseRecord> {
        let bytes = self.get(Kind::Leases, id)?.ok_or_else(|| Error::not_found(format!("lease {id:?}")))?;
        LeaseRecord::decode(id, &bytes)
    }

    /// Adds `resource` to lease `id` in this transaction; NotFound when the lease is missing.
    pub fn lease_add(&mut self, id: &str, resource: &LeaseResource) -> Result<()> {
        resource.validate()?;
        let mut rec = self.lease_record(id)?;
        if rec.resources.insert(resource.clone()) {
            self.put(Kind::Leases, id, &rec.encode())?;
        }
        Ok(())
    }

    /// Removes `resource` from lease `id`; NotFound when the lease is missing.
    pub fn lease_remove(&mut self, id: &str, resource: &LeaseResource) -> Result<()> {
        let mut rec = self.lease_record(id)?;
        if rec.resources.remove(resource) {
            self.put(Kind::Leases, id, &rec.encode())?;
        }
        Ok(())
    }
}

impl MetadataStore {
    /// Creates a lease; AlreadyExists if the id is taken.
    pub fn create_lease(&self, ns: &str, id: &str, labels: BTreeMap<String, String>) -> Result<Lease> {
        // containerd checks only that a lease id is set: its clients' random ids
        // (`<nanos>-<base64url>`) may end in `-` or `_`, which identifiers reject.
        if id.is_empty() || id.contains('\0') {
            return Err(Error::invalid_argument(format!("lease id {id:?} must be set and hold no NUL")));
        }
        labels::validate_all(&labels)?;
        if let Some(expire) = labels.get(EXPIRE_LABEL) {
            parse_rfc3339(expire).map_err(|e| e.context(format!("label {EXPIRE_LABEL}")))?;
        }
        let rec = LeaseRecord { created_at_ns: now_ns(), labels, resources: BTreeSet::new() };
        self.update(ns, |tx| {
            if tx.get(Kind::Leases, id)?.is_some() {
                return Err(Error::already_exists(format!("lease {id:?}")));
            }
            tx.put(Kind::Leases, id, &rec.encode())?;
            Ok(())
        })?;
        Ok(rec.to_lease(id))
    }

    /// Deletes a lease; NotFound if absent. Its resources become collectable.
    pub fn delete_lease(&self, ns: &str, id: &str) -> Result<()> {
        self.update(ns, |tx| {
            tx.remove(Kind::Leases, id)?.ok_or_else(|| Error::not_found(format!("lease {id:?}")))?;
            Ok(())
        })
    }

    /// Lists the leases of a namespace.
    pub fn list_leases(&self, ns: &str) -> Result<Vec<Lease>> {
        self.list(ns, Kind::Leases)?
            .into_iter()
            .map(|(id, v)| Ok(LeaseRecord::decode(&id, &v)?.to_lease(&id)))
            .collect()
    }

    /// Adds a resource to a lease.
    ///
    /// Runs on the shared side of the GC barrier, so it never lands in the middle of a
    /// collection: a client that adds an existing resource to a lease and then checks that the
    /// resource still exists can rely on the answer (the collection either saw the lease's
    /// reference, or finished before the check).
    pub fn add_lease_resource(&self, ns: &str, id: &str, resource: &LeaseResource) -> Result<()> {
        let barrier = self.gc_barrier();
        let _shared = barrier.read().unwrap_or_else(|p| p.into_inner());
        self.update(ns, |tx| tx.lease_add(id, resource))
    }

    /// Removes a resource from a lease.
    pub fn delete_lease_resource(&self, ns: &str, id: &str, resource: &LeaseResource) -> Result<()> {
        self.update(ns, |tx| tx.lease_remove(id, resource))
    }

    /// The resources a lease holds.
    pub fn lease_resources(&self, ns: &str, id: &str) -> Result<Vec<LeaseResource>> {
        let bytes = self.get(ns, Kind::Leases, id)?.ok_or_else(|| Error::not_found(format!("lease {id:?}")))?;
        Ok(LeaseRecord::decode(id, &bytes)?.resources.into_iter().collect())
    }

    /// Every lease of a namespace with its resources and whether it has expired at `now`.
    pub fn leases_for_gc(&self, ns: &str, now: SystemTime) -> Result<Vec<(String, bool, Vec<LeaseResource>)>> {
        self.list(ns, Kind::Leases)?
            .into_iter()
            .map(|(id, v)| {
                let rec = LeaseRecord::decode(&id, &v)?;
                let expired =
                    rec.labels.get(EXPIRE_LABEL).and_then(|t| parse_rfc3339(t).ok()).is_some_and(|t| t <= now);
                Ok((id, expired, rec.resources.into_iter().collect()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MetadataConfig;
    use berth_core::ErrorKind;

    fn open() -> (tempfile::TempDir, MetadataStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = MetadataStore::open(&dir.path().join("meta.sled"), &MetadataConfig::default()).unwrap();
        (dir, store)
    }

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn lease_lifecycle_and_resources() {
        let (_d, s) = open();
        s.create_lease("ns", "l1", BTreeMap::new()).unwrap();
        assert_eq!(s.create_lease("ns", "l1", BTreeMap::new()).unwrap_err().kind(), ErrorKind::AlreadyExists);
        let r = LeaseResource { kind: "content".into(), id: D.into() };
        s.add_lease_resource("ns", "l1", &r).unwrap();
        s.add_lease_resource("ns", "l1", &LeaseResource { kind: "snapshots/overlayfs".into(), id: "k".into() })
            .unwrap();
        assert_eq!(s.lease_resources("ns", "l1").unwrap().len(), 2);
        s.delete_lease_resource("ns", "l1", &r).unwrap();
        assert_eq!(s.lease_resources("ns", "l1").unwrap().len(), 1);
        let bad = LeaseResource { kind: "content".into(), id: "nope".into() };
        assert_eq!(s.add_lease_resource("ns", "l1", &bad).unwrap_err().kind(), ErrorKind::InvalidArgument);
        let bad = LeaseResource { kind: "volumes".into(), id: "x".into() };
        assert_eq!(s.add_lease_resource("ns", "l1", &bad).unwrap_err().kind(), ErrorKind::InvalidArgument);
        assert_eq!(s.add_lease_resource("ns", "nope", &r).unwrap_err().kind(), ErrorKind::NotFound);
        assert_eq!(s.list_leases("ns").unwrap().len(), 1);
        assert_eq!(s.delete_namespace("ns").unwrap_err().kind(), ErrorKind::FailedPrecondition);
        s.delete_lease("ns", "l1").unwrap();
        assert_eq!(s.delete_lease("ns", "l1").unwrap_err().kind(), ErrorKind::NotFound);
        s.delete_namespace("ns").unwrap();
    }

    #[test]
    fn expiry() {
        let (_d, s) = open();
        s.create_lease("ns", "old", [(EXPIRE_LABEL.to_string(), "2001-02-03T04:05:06Z".to_string())].into()).unwrap();
        s.create_lease("ns", "new", [(EXPIRE_LABEL.to_string(), "2999-01-01T00:00:00Z".to_string())].into()).unwrap();
        s.create_lease("ns", "forever", BTreeMap::new()).unwrap();
        let gc = s.leases_for_gc("ns", SystemTime::now()).unwrap();
        let expired: Vec<_> = gc.iter().filter(|(_, e, _)| *e).map(|(id, ..)| id.as_str()).collect();
        assert_eq!(expired, ["old"]);
        let bad = [(EXPIRE_LABEL.to_string(), "tomorrow".to_string())].into();
        assert_eq!(s.create_lease("ns", "bad", bad).unwrap_err().kind(), ErrorKind::InvalidArgument);
    }
}
