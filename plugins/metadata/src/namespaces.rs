//! Namespaces: creation, labels, and deletion that refuses while objects remain.

use std::collections::BTreeMap;

use berth_core::filters::Adaptor;
use berth_core::{identifiers, labels, Error, Result};
use serde::{Deserialize, Serialize};
use sled::transaction::ConflictableTransactionError;

use crate::store::{key, kinds_in_use, ns_key, MetadataStore};

/// What is stored for a namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceRecord {
    /// User labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl NamespaceRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn decode(name: &str, bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::internal(format!("corrupt metadata record of namespace {name:?}: {e}")))
    }
}

/// A namespace with its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// Name (an identifier).
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

impl Adaptor for Namespace {
    fn field(&self, path: &[String]) -> Vec<String> {
        match path {
            [f] if f == "name" => vec![self.name.clone()],
            [f, k] if f == "labels" => self.labels.get(k).cloned().into_iter().collect(),
            _ => Vec::new(),
        }
    }
}

fn abort(e: Error) -> ConflictableTransactionError<Error> {
    ConflictableTransactionError::Abort(e)
}

impl MetadataStore {
    /// Creates a namespace; AlreadyExists if it exists.
    pub fn create_namespace(&self, name: &str, labels: BTreeMap<String, String>) -> Result<Namespace> {
        identifiers::validate(name).map_err(|e| e.context("namespace"))?;
        labels::validate_all(&labels)?;
        let record = NamespaceRecord { labels };
        self.raw_transaction(|tx| {
            let k = ns_key(name);
            if tx.get(&k)?.is_some() {
                return Err(abort(Error::already_exists(format!("namespace {name:?}"))));
            }
            tx.insert(k, record.encode())?;
            Ok(())
        })?;
        Ok(Namespace { name: name.to_string(), labels: record.labels })
    }

    /// Reads a namespace; NotFound if absent.
    pub fn get_namespace(&self, name: &str) -> Result<Namespace> {
        let v = self
            .tree()
            .get(ns_key(name))
            .map_err(|e| Error::internal(e.to_string()))?
            .ok_or_else(|| Error::not_found(format!("namespace {name:?}")))?;
        Ok(Namespace { name: name.to_string(), labels: NamespaceRecord::decode(name, &v)?.labels })
    }

    /// Lists all namespaces ordered by name.
    pub fn list_namespaces(&self) -> Result<Vec<Namespace>> {
        let prefix = key(&[b"ns", b""]);
        self.tree()
            .scan_prefix(&prefix)
            .map(|r| {
                let (k, v) = r.map_err(|e| Error::internal(e.to_string()))?;
                let name = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                let labels = NamespaceRecord::decode(&name, &v)?.labels;
                Ok(Namespace { name, labels })
            })
            .collect()
    }

    /// Updates labels with containerd field-path semantics (see [`labels::apply_fieldpaths`]).
    pub fn update_namespace(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        paths: &[String],
    ) -> Result<Namespace> {
        identifiers::validate(name).map_err(|e| e.context("namespace"))?;
        let record = self.raw_transaction(|tx| {
            let k = ns_key(name);
            let cur = tx.get(&k)?.ok_or_else(|| abort(Error::not_found(format!("namespace {name:?}"))))?;
            let mut rec = NamespaceRecord::decode(name, &cur).map_err(abort)?;
            labels::apply_fieldpaths(&mut rec.labels, labels, paths).map_err(abort)?;
            labels::validate_all(&rec.labels).map_err(abort)?;
            tx.insert(k, rec.encode())?;
            Ok(rec)
        })?;
        Ok(Namespace { name: name.to_string(), labels: record.labels })
    }

    /// Deletes an empty namespace: NotFound if absent, FailedPrecondition naming what remains.
    pub fn delete_namespace(&self, name: &str) -> Result<()> {
        self.raw_transaction(|tx| {
            let k = ns_key(name);
            if tx.get(&k)?.is_none() {
                return Err(abort(Error::not_found(format!("namespace {name:?}"))));
            }
            let used = kinds_in_use(tx, name)?;
            if !used.is_empty() {
                let what: Vec<_> = used.iter().map(|k| k.as_str()).collect();
                return Err(abort(Error::failed_precondition(format!(
                    "namespace {name:?} must be empty, but it still has {}",
                    what.join(", ")
                ))));
            }
            tx.remove(k)?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Kind, MetadataConfig};
    use berth_core::ErrorKind;

    fn open() -> (tempfile::TempDir, MetadataStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = MetadataStore::open(&dir.path().join("meta.sled"), &MetadataConfig::default()).unwrap();
        (dir, store)
    }

    #[test]
    fn create_get_list_update_delete() {
        let (_dir, store) = open();
        store.create_namespace("b", BTreeMap::new()).unwrap();
        store.create_namespace("a", [("k".into(), "v".into())].into()).unwrap();
        assert_eq!(store.create_namespace("a", BTreeMap::new()).unwrap_err().kind(), ErrorKind::AlreadyExists);
        let names: Vec<_> = store.list_namespaces().unwrap().into_iter().map(|n| n.name).collect();
        assert_eq!(names, ["a", "b"]);
        let ns = store.update_namespace("a", &[("x".into(), "1".into())].into(), &["labels.x".into()]).unwrap();
        assert_eq!(ns.labels.len(), 2);
        let ns = store.update_namespace("a", &BTreeMap::new(), &["labels.k".into()]).unwrap();
        assert_eq!(ns.labels, [("x".to_string(), "1".to_string())].into());
        assert_eq!(store.get_namespace("a").unwrap(), ns);
        store.delete_namespace("a").unwrap();
        assert_eq!(store.get_namespace("a").unwrap_err().kind(), ErrorKind::NotFound);
        assert_eq!(store.delete_namespace("a").unwrap_err().kind(), ErrorKind::NotFound);
        assert_eq!(store.update_namespace("a", &BTreeMap::new(), &[]).unwrap_err().kind(), ErrorKind::NotFound);
    }

    #[test]
    fn delete_refuses_non_empty_namespace() {
        let (_dir, store) = open();
        store.update("full", |tx| tx.put(Kind::Images, "img", b"{}").map(|_| ())).unwrap();
        store.update("full", |tx| tx.put(Kind::Containers, "c1", b"{}").map(|_| ())).unwrap();
        let err = store.delete_namespace("full").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
        assert!(err.message().contains("images, containers"), "{err}");
        store
            .update("full", |tx| {
                tx.remove(Kind::Images, "img")?;
                tx.remove(Kind::Containers, "c1")?;
                Ok(())
            })
            .unwrap();
        store.delete_namespace("full").unwrap();
    }

    #[test]
    fn bad_names_and_labels_rejected() {
        let (_dir, store) = open();
        assert_eq!(store.create_namespace("a/b", BTreeMap::new()).unwrap_err().kind(), ErrorKind::InvalidArgument);
        let big = [("k".to_string(), "v".repeat(5000))].into();
        assert_eq!(store.create_namespace("ok", big).unwrap_err().kind(), ErrorKind::InvalidArgument);
        assert!(store.list_namespaces().unwrap().is_empty());
    }

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.sled");
        {
            let store = MetadataStore::open(&path, &MetadataConfig::default()).unwrap();
            store.create_namespace("kept", [("a".into(), "b".into())].into()).unwrap();
        }
        let store = MetadataStore::open(&path, &MetadataConfig::default()).unwrap();
        assert_eq!(store.get_namespace("kept").unwrap().labels["a"], "b");
    }
}
