//! Container records: the id, spec, runtime, image and snapshot of a container, as
//! containerd's containers store keeps them (validation and update field paths alike).
//!
//! Stored as JSON under `Kind::Containers`; the GC reads the `snapshotter` and `snapshot_key`
//! fields and the `labels` of each record, so keep those names.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_core::filters::Adaptor;
use berth_core::{identifiers, labels, Error, Result};
use serde::{Deserialize, Serialize};

use crate::store::{Kind, MetadataStore};

/// Type URL containerd clients give an OCI runtime spec packed in `Any` (JSON value).
pub const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

/// A protobuf `Any` kept verbatim: type URL and encoded value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnyValue {
    /// Type URL.
    pub type_url: String,
    /// Encoded value (base64 in the record).
    #[serde(with = "b64")]
    pub value: Vec<u8>,
}

mod b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

/// The runtime that runs a container: name (`io.containerd.runc.v2`, `io.berth.shim.v1`) and
/// its options.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRuntime {
    /// Runtime name.
    pub name: String,
    /// Runtime-specific options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<AnyValue>,
}

/// A container: metadata only; its running process is a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// Id, unique in the namespace.
    pub id: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Image name the container was made from (no validation, as containerd).
    pub image: String,
    /// Runtime.
    pub runtime: ContainerRuntime,
    /// OCI runtime spec, packed.
    pub spec: Option<AnyValue>,
    /// Snapshotter of the root filesystem.
    pub snapshotter: String,
    /// Snapshot key of the root filesystem (active snapshot).
    pub snapshot_key: String,
    /// Client extensions.
    pub extensions: BTreeMap<String, AnyValue>,
    /// Sandbox id (CRI), if any.
    pub sandbox: String,
    /// Creation time.
    pub created_at: SystemTime,
    /// Last update time.
    pub updated_at: SystemTime,
}

impl Default for Container {
    fn default() -> Self {
        Container {
            id: String::new(),
            labels: BTreeMap::new(),
            image: String::new(),
            runtime: ContainerRuntime::default(),
            spec: None,
            snapshotter: String::new(),
            snapshot_key: String::new(),
            extensions: BTreeMap::new(),
            sandbox: String::new(),
            created_at: UNIX_EPOCH,
            updated_at: UNIX_EPOCH,
        }
    }
}

impl Adaptor for Container {
    fn field(&self, path: &[String]) -> Vec<String> {
        let one = |s: &str| vec![s.to_string()];
        match path {
            [f] if f == "id" => one(&self.id),
            [f] if f == "image" => one(&self.image),
            [f] if f == "snapshotter" => one(&self.snapshotter),
            [f] if f == "sandbox" => one(&self.sandbox),
            [r, n] if r == "runtime" && n == "name" => one(&self.runtime.name),
            [f, k] if f == "labels" => self.labels.get(k).cloned().into_iter().collect(),
            _ => Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ContainerRecord {
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    image: String,
    runtime: ContainerRuntime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    spec: Option<AnyValue>,
    #[serde(default)]
    snapshotter: String,
    #[serde(default)]
    snapshot_key: String,
    #[serde(default)]
    extensions: BTreeMap<String, AnyValue>,
    #[serde(default)]
    sandbox: String,
    created_at_ns: u64,
    updated_at_ns: u64,
}

fn ns_time(t: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(t)
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

impl ContainerRecord {
    fn decode(id: &str, bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| Error::internal(format!("corrupt container record {id:?}: {e}")))
    }
    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
    fn from_container(c: &Container, created_at_ns: u64, updated_at_ns: u64) -> Self {
        ContainerRecord {
            labels: c.labels.clone(),
            image: c.image.clone(),
            runtime: c.runtime.clone(),
            spec: c.spec.clone(),
            snapshotter: c.snapshotter.clone(),
            snapshot_key: c.snapshot_key.clone(),
            extensions: c.extensions.clone(),
            sandbox: c.sandbox.clone(),
            created_at_ns,
            updated_at_ns,
        }
    }
    fn to_container(&self, id: &str) -> Container {
        Container {
            id: id.to_string(),
            labels: self.labels.clone(),
            image: self.image.clone(),
            runtime: self.runtime.clone(),
            spec: self.spec.clone(),
            snapshotter: self.snapshotter.clone(),
            snapshot_key: self.snapshot_key.clone(),
            extensions: self.extensions.clone(),
            sandbox: self.sandbox.clone(),
            created_at: ns_time(self.created_at_ns),
            updated_at: ns_time(self.updated_at_ns),
        }
    }
}

/// containerd's checks, plus: a spec packed as an OCI runtime spec must be a JSON object.
pub fn validate(c: &Container) -> Result<()> {
    identifiers::validate(&c.id).map_err(|e| e.context("container.ID"))?;
    if c.extensions.keys().any(String::is_empty) {
        return Err(Error::invalid_argument("container.Extension keys must not be zero-length"));
    }
    labels::validate_all(&c.labels).map_err(|e| e.context("containers.Labels"))?;
    if c.runtime.name.is_empty() {
        return Err(Error::invalid_argument("must specify a runtime name"));
    }
    let Some(spec) = &c.spec else {
        return Err(Error::invalid_argument("container.Spec must be set"));
    };
    if spec.type_url == SPEC_TYPE_URL || spec.type_url.ends_with("/runtime-spec/1/Spec") {
        match serde_json::from_slice::<serde_json::Value>(&spec.value) {
            Ok(serde_json::Value::Object(_)) => {}
            Ok(_) => return Err(Error::invalid_argument("container.Spec is not a JSON object")),
            Err(e) => return Err(Error::invalid_argument(format!("container.Spec is not valid JSON: {e}"))),
        }
    }
    if !c.snapshot_key.is_empty() && c.snapshotter.is_empty() {
        return Err(Error::invalid_argument("container.Snapshotter must be set if container.SnapshotKey is set"));
    }
    Ok(())
}

impl MetadataStore {
    /// Creates a container; AlreadyExists if the id is taken.
    pub fn create_container(&self, ns: &str, c: &Container) -> Result<Container> {
        validate(c)?;
        let now = now_ns();
        let rec = ContainerRecord::from_container(c, now, now);
        self.update(ns, |tx| {
            if tx.get(Kind::Containers, &c.id)?.is_some() {
                return Err(Error::already_exists(format!("container {:?}", c.id)));
            }
            tx.put(Kind::Containers, &c.id, &rec.encode())?;
            Ok(())
        })?;
        Ok(rec.to_container(&c.id))
    }

    /// Reads a container; NotFound if absent.
    pub fn get_container(&self, ns: &str, id: &str) -> Result<Container> {
        identifiers::validate(id).map_err(|e| e.context("container id"))?;
        let bytes = self.get(ns, Kind::Containers, id)?.ok_or_else(|| Error::not_found(format!("container {id:?}")))?;
        Ok(ContainerRecord::decode(id, &bytes)?.to_container(id))
    }

    /// Lists the containers of a namespace ordered by id.
    pub fn list_containers(&self, ns: &str) -> Result<Vec<Container>> {
        self.list(ns, Kind::Containers)?
            .into_iter()
            .map(|(id, v)| Ok(ContainerRecord::decode(&id, &v)?.to_container(&id)))
            .collect()
    }

    /// Updates a container as containerd does. Field paths: `labels`, `labels.<key>`, `spec`,
    /// `extensions`, `extensions.<key>`, `image`, `snapshotkey`; none means all of those, and
    /// then the snapshotter and runtime name must be unchanged (they are immutable).
    pub fn update_container(&self, ns: &str, c: &Container, paths: &[String]) -> Result<Container> {
        identifiers::validate(&c.id).map_err(|e| e.context("container.ID"))?;
        let rec = self.update(ns, |tx| {
            let bytes =
                tx.get(Kind::Containers, &c.id)?.ok_or_else(|| Error::not_found(format!("container {:?}", c.id)))?;
            let mut rec = ContainerRecord::decode(&c.id, &bytes)?;
            let mut paths = paths.to_vec();
            if paths.is_empty() {
                if c.snapshotter != rec.snapshotter {
                    return Err(Error::invalid_argument("container.Snapshotter field is immutable"));
                }
                if c.runtime.name != rec.runtime.name {
                    return Err(Error::invalid_argument("container.Runtime.Name field is immutable"));
                }
                paths = ["labels", "spec", "extensions", "image", "snapshotkey"].map(String::from).to_vec();
            }
            for path in &paths {
                if let Some(key) = path.strip_prefix("labels.") {
                    match c.labels.get(key).filter(|v| !v.is_empty()) {
                        Some(v) => rec.labels.insert(key.to_string(), v.clone()),
                        None => rec.labels.remove(key),
                    };
                    continue;
                }
                if let Some(key) = path.strip_prefix("extensions.") {
                    match c.extensions.get(key) {
                        Some(v) => rec.extensions.insert(key.to_string(), v.clone()),
                        None => rec.extensions.remove(key),
                    };
                    continue;
                }
                match path.as_str() {
                    "labels" => rec.labels = c.labels.clone(),
                    "spec" => rec.spec = c.spec.clone(),
                    "extensions" => rec.extensions = c.extensions.clone(),
                    "image" => rec.image = c.image.clone(),
                    "snapshotkey" => rec.snapshot_key = c.snapshot_key.clone(),
                    other => {
                        return Err(Error::invalid_argument(format!("cannot update {other:?} field on {:?}", c.id)))
                    }
                }
            }
            validate(&rec.to_container(&c.id))?;
            rec.updated_at_ns = now_ns();
            tx.put(Kind::Containers, &c.id, &rec.encode())?;
            Ok(rec)
        })?;
        Ok(rec.to_container(&c.id))
    }

    /// Deletes a container; NotFound if absent. Its snapshot becomes collectable.
    pub fn delete_container(&self, ns: &str, id: &str) -> Result<()> {
        identifiers::validate(id).map_err(|e| e.context("container id"))?;
        self.update(ns, |tx| {
            tx.remove(Kind::Containers, id)?.ok_or_else(|| Error::not_found(format!("container {id:?}")))?;
            Ok(())
        })
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

    fn container(id: &str) -> Container {
        Container {
            id: id.into(),
            labels: [("a".to_string(), "1".to_string())].into(),
            image: "docker.io/library/busybox:latest".into(),
            runtime: ContainerRuntime { name: "io.containerd.runc.v2".into(), options: None },
            spec: Some(AnyValue { type_url: SPEC_TYPE_URL.into(), value: br#"{"ociVersion":"1.1.0"}"#.to_vec() }),
            snapshotter: "overlayfs".into(),
            snapshot_key: id.into(),
            ..Default::default()
        }
    }

    #[test]
    fn create_get_list_delete() {
        let (_d, s) = open();
        let c = s.create_container("ns", &container("c1")).unwrap();
        assert!(c.created_at > UNIX_EPOCH);
        assert_eq!(s.create_container("ns", &container("c1")).unwrap_err().kind(), ErrorKind::AlreadyExists);
        let got = s.get_container("ns", "c1").unwrap();
        assert_eq!(got, c);
        assert_eq!(s.list_containers("ns").unwrap().len(), 1);
        assert!(s.list_containers("other").unwrap().is_empty());
        s.delete_container("ns", "c1").unwrap();
        assert_eq!(s.get_container("ns", "c1").unwrap_err().kind(), ErrorKind::NotFound);
        assert_eq!(s.delete_container("ns", "c1").unwrap_err().kind(), ErrorKind::NotFound);
    }

    #[test]
    fn record_keeps_gc_fields() {
        let (_d, s) = open();
        s.create_container("ns", &container("c1")).unwrap();
        let raw = s.get("ns", Kind::Containers, "c1").unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(v["snapshotter"], "overlayfs");
        assert_eq!(v["snapshot_key"], "c1");
    }

    #[test]
    fn validation() {
        let (_d, s) = open();
        let mut c = container("c1");
        c.spec = None;
        assert_eq!(s.create_container("ns", &c).unwrap_err().kind(), ErrorKind::InvalidArgument);
        let mut c = container("c1");
        c.spec.as_mut().unwrap().value = b"not json".to_vec();
        assert_eq!(s.create_container("ns", &c).unwrap_err().kind(), ErrorKind::InvalidArgument);
        let mut c = container("c1");
        c.runtime.name.clear();
        assert_eq!(s.create_container("ns", &c).unwrap_err().kind(), ErrorKind::InvalidArgument);
        let mut c = container("bad..id");
        c.snapshot_key = "x".into();
        assert_eq!(s.create_container("ns", &c).unwrap_err().kind(), ErrorKind::InvalidArgument);
        let mut c = container("c1");
        c.snapshotter.clear();
        assert_eq!(s.create_container("ns", &c).unwrap_err().kind(), ErrorKind::InvalidArgument);
        let mut c = container("c1");
        c.extensions.insert(String::new(), AnyValue::default());
        assert_eq!(s.create_container("ns", &c).unwrap_err().kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn update_fieldpaths() {
        let (_d, s) = open();
        s.create_container("ns", &container("c1")).unwrap();
        let mut u = container("c1");
        u.labels = [("b".to_string(), "2".to_string())].into();
        u.image = "other".into();
        let got = s.update_container("ns", &u, &["labels.b".into()]).unwrap();
        assert_eq!(got.labels.len(), 2);
        assert_eq!(got.image, "docker.io/library/busybox:latest");
        let got = s.update_container("ns", &u, &["image".into(), "labels".into()]).unwrap();
        assert_eq!(got.image, "other");
        assert_eq!(got.labels, u.labels);
        assert!(got.updated_at >= got.created_at);
        let mut u2 = u.clone();
        u2.runtime.name = "x".into();
        assert_eq!(s.update_container("ns", &u2, &[]).unwrap_err().kind(), ErrorKind::InvalidArgument);
        let mut u3 = u.clone();
        u3.snapshotter = "native".into();
        assert_eq!(s.update_container("ns", &u3, &[]).unwrap_err().kind(), ErrorKind::InvalidArgument);
        assert_eq!(s.update_container("ns", &u, &["runtime".into()]).unwrap_err().kind(), ErrorKind::InvalidArgument);
        let mut u4 = u.clone();
        u4.extensions.insert("e".into(), AnyValue { type_url: "t".into(), value: vec![0, 1, 2] });
        let got = s.update_container("ns", &u4, &["extensions.e".into()]).unwrap();
        assert_eq!(got.extensions["e"].value, vec![0, 1, 2]);
        assert_eq!(s.update_container("ns", &container("nope"), &[]).unwrap_err().kind(), ErrorKind::NotFound);
    }
}
