//! Mark-and-sweep garbage collection of content and snapshots.
//!
//! Roots, per namespace: image targets, resources of unexpired leases (`content` digests and
//! `snapshots/<snapshotter>` keys), content and snapshots labelled `containerd.io/gc.root`, and
//! the snapshots of containers. From each marked blob the collector follows its
//! `containerd.io/gc.ref.content*` labels (values are digests), its
//! `containerd.io/gc.ref.snapshot.<snapshotter>[/...]` labels (values are snapshot keys; the
//! unpacker puts them on image configs) and, for manifests and indexes, the descriptors
//! inside the blob (config, layers, manifests), so images stay whole even when a client did
//! not label the children. From each marked snapshot it follows its parent and the same two
//! kinds of labels. The sweep removes expired leases, unmarked snapshots (children before
//! their parents), unmarked content records of each namespace, and finally the blob files no
//! namespace references any more. Blobs being ingested live outside the blob directory and
//! are never touched.
//!
//! Container records (`Kind::Containers`, JSON) keep their snapshot alive through their
//! `snapshotter` and `snapshot_key` fields, and what their `labels` name through the same
//! `containerd.io/gc.ref.*` labels.
//!
//! The whole collection runs under [`MetadataStore::gc_barrier`]'s exclusive side; content
//! commits take the shared side around "rename into place + record", so a blob is never
//! removed between its rename and its record.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use berth_core::{Digest, ErrorKind, Result};
use berth_metadata::{Kind, MetadataStore};

/// Label prefix naming content a blob references.
pub const REF_CONTENT_PREFIX: &str = "containerd.io/gc.ref.content";
/// Label prefix naming a snapshot (`containerd.io/gc.ref.snapshot.<snapshotter>[/...]`).
pub const REF_SNAPSHOT_PREFIX: &str = "containerd.io/gc.ref.snapshot.";
/// Label marking content or a snapshot as a root.
pub const ROOT_LABEL: &str = "containerd.io/gc.root";
/// Largest blob parsed for children (manifests and indexes are far smaller).
pub const MAX_PARSED_BLOB: u64 = 4 << 20;

/// The content store as the collector sees it.
pub trait ContentView: Send + Sync {
    /// Digests visible in `ns` with their labels.
    fn records(&self, ns: &str) -> Result<Vec<(Digest, BTreeMap<String, String>)>>;
    /// Removes the record of `digest` from `ns` (the blob file stays until the blob sweep).
    fn remove_record(&self, ns: &str, digest: &Digest) -> Result<()>;
    /// Every blob file on disk.
    fn blobs(&self) -> Result<Vec<Digest>>;
    /// The blob's bytes when it is at most `max` bytes long; None when larger or missing.
    fn read_small(&self, digest: &Digest, max: u64) -> Result<Option<Vec<u8>>>;
    /// Removes a blob file and returns the bytes freed.
    fn remove_blob(&self, digest: &Digest) -> Result<u64>;
}

/// A snapshot as the collector sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    /// Key or name.
    pub key: String,
    /// Parent name; empty for none.
    pub parent: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// One snapshotter as the collector sees it.
pub trait SnapshotView: Send + Sync {
    /// The snapshotter's name, as in lease resources (`snapshots/<name>`) and labels.
    fn snapshotter(&self) -> &str;
    /// Every snapshot of `ns`.
    fn snapshots(&self, ns: &str) -> Result<Vec<SnapshotRecord>>;
    /// Removes snapshot `key` of `ns`, record and files (it has no children by then).
    fn remove_snapshot(&self, ns: &str, key: &str) -> Result<()>;
}

/// What one collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CollectStats {
    /// Expired leases deleted.
    pub leases_removed: u64,
    /// Namespace content records removed.
    pub records_removed: u64,
    /// Blob files removed.
    pub blobs_removed: u64,
    /// Snapshots removed.
    pub snapshots_removed: u64,
    /// Bytes freed on disk.
    pub bytes_freed: u64,
    /// How long the collection took.
    pub duration: Duration,
}

/// The collector. One collection runs at a time.
pub struct Collector<C: ContentView> {
    meta: std::sync::Arc<MetadataStore>,
    content: C,
    snapshotters: Vec<Arc<dyn SnapshotView>>,
    running: Mutex<()>,
}

/// A node of the reference graph.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Node {
    Content(Digest),
    /// Snapshotter name and key.
    Snapshot(String, String),
}

/// The nodes named by `containerd.io/gc.ref.*` labels.
fn label_refs(labels: &BTreeMap<String, String>, out: &mut VecDeque<Node>) {
    for (k, v) in labels {
        if k.starts_with(REF_CONTENT_PREFIX) {
            if let Ok(d) = Digest::parse(v) {
                out.push_back(Node::Content(d));
            }
        } else if let Some(rest) = k.strip_prefix(REF_SNAPSHOT_PREFIX) {
            let sn = rest.split('/').next().unwrap_or_default();
            if !sn.is_empty() {
                out.push_back(Node::Snapshot(sn.to_string(), v.clone()));
            }
        }
    }
}

/// How many ancestors `key` has among `all` (bounded, in case of a corrupt cycle).
fn snapshot_depth(all: &BTreeMap<String, SnapshotRecord>, key: &str) -> usize {
    let mut n = 0;
    let mut key = key;
    while let Some(r) = all.get(key).filter(|r| !r.parent.is_empty() && n <= all.len()) {
        key = &r.parent;
        n += 1;
    }
    n
}

/// The snapshot a container record names, from its `snapshotter` and `snapshot_key` fields.
fn container_snapshot(record: &[u8]) -> Option<Node> {
    let v: serde_json::Value = serde_json::from_slice(record).ok()?;
    let sn = v.get("snapshotter")?.as_str()?;
    let key = v.get("snapshot_key")?.as_str()?;
    (!sn.is_empty() && !key.is_empty()).then(|| Node::Snapshot(sn.to_string(), key.to_string()))
}

/// The nodes named by a container record's `containerd.io/gc.ref.*` labels, as containerd.
fn container_label_refs(record: &[u8], out: &mut VecDeque<Node>) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(record) else { return };
    let Some(map) = v.get("labels").and_then(|l| l.as_object()) else { return };
    let labels: BTreeMap<String, String> =
        map.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect();
    label_refs(&labels, out);
}

/// Digests a blob refers to as a manifest (config, layers) or index (manifests).
pub fn children(blob: &[u8]) -> Vec<Digest> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(blob) else { return Vec::new() };
    let mut out = Vec::new();
    let mut push = |d: &serde_json::Value| {
        if let Some(Ok(dg)) = d.get("digest").and_then(|x| x.as_str()).map(Digest::parse) {
            out.push(dg);
        }
    };
    if let Some(c) = v.get("config") {
        push(c);
    }
    for key in ["layers", "manifests", "blobs"] {
        if let Some(list) = v.get(key).and_then(|l| l.as_array()) {
            list.iter().for_each(&mut push);
        }
    }
    if let Some(s) = v.get("subject") {
        push(s);
    }
    out
}

impl<C: ContentView> Collector<C> {
    /// A collector over the metadata store and a content view.
    pub fn new(meta: std::sync::Arc<MetadataStore>, content: C) -> Self {
        Collector { meta, content, snapshotters: Vec::new(), running: Mutex::new(()) }
    }

    /// Also collects the snapshots of these snapshotters.
    pub fn with_snapshotters(mut self, snapshotters: Vec<Arc<dyn SnapshotView>>) -> Self {
        self.snapshotters = snapshotters;
        self
    }

    /// The content view.
    pub fn content(&self) -> &C {
        &self.content
    }

    /// Runs one full collection.
    pub fn collect(&self) -> Result<CollectStats> {
        let _one = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let start = Instant::now();
        let barrier = self.meta.gc_barrier();
        let _exclusive = barrier.write().unwrap_or_else(|p| p.into_inner());
        let mut stats = CollectStats::default();
        let mut referenced: HashSet<Digest> = HashSet::new();
        let now = SystemTime::now();
        for ns in self.meta.list_namespaces()? {
            let ns = ns.name;
            let records: BTreeMap<Digest, BTreeMap<String, String>> = self.content.records(&ns)?.into_iter().collect();
            let snaps: HashMap<String, BTreeMap<String, SnapshotRecord>> = self
                .snapshotters
                .iter()
                .map(|v| {
                    Ok((
                        v.snapshotter().to_string(),
                        v.snapshots(&ns)?.into_iter().map(|r| (r.key.clone(), r)).collect(),
                    ))
                })
                .collect::<Result<_>>()?;
            let mut roots: VecDeque<Node> = VecDeque::new();
            for image in self.meta.list_images(&ns)? {
                if let Ok(d) = Digest::parse(&image.target.digest) {
                    roots.push_back(Node::Content(d));
                }
            }
            for (id, expired, resources) in self.meta.leases_for_gc(&ns, now)? {
                if expired {
                    match self.meta.delete_lease(&ns, &id) {
                        Ok(()) => stats.leases_removed += 1,
                        Err(e) => {
                            tracing::warn!(namespace = %ns, lease = %id, error = %e, "cannot remove expired lease")
                        }
                    }
                    continue;
                }
                for r in resources {
                    if r.kind == "content" {
                        if let Ok(d) = Digest::parse(&r.id) {
                            roots.push_back(Node::Content(d));
                        }
                    } else if let Some(sn) = r.kind.strip_prefix("snapshots/") {
                        roots.push_back(Node::Snapshot(sn.to_string(), r.id));
                    }
                }
            }
            for (_, record) in self.meta.list(&ns, Kind::Containers)? {
                roots.extend(container_snapshot(&record));
                container_label_refs(&record, &mut roots);
            }
            roots.extend(
                records.iter().filter(|(_, l)| l.contains_key(ROOT_LABEL)).map(|(d, _)| Node::Content(d.clone())),
            );
            for (sn, all) in &snaps {
                roots.extend(
                    all.values()
                        .filter(|r| r.labels.contains_key(ROOT_LABEL))
                        .map(|r| Node::Snapshot(sn.to_string(), r.key.clone())),
                );
            }

            let mut marked: BTreeSet<Digest> = BTreeSet::new();
            let mut marked_snaps: HashSet<(String, String)> = HashSet::new();
            while let Some(node) = roots.pop_front() {
                match node {
                    Node::Content(d) => {
                        let Some(labels) = records.get(&d) else { continue };
                        if !marked.insert(d.clone()) {
                            continue;
                        }
                        label_refs(labels, &mut roots);
                        if let Some(bytes) = self.content.read_small(&d, MAX_PARSED_BLOB)? {
                            roots.extend(children(&bytes).into_iter().map(Node::Content));
                        }
                    }
                    Node::Snapshot(sn, key) => {
                        let Some(rec) = snaps.get(sn.as_str()).and_then(|all| all.get(&key)) else { continue };
                        if !marked_snaps.insert((sn.clone(), key)) {
                            continue;
                        }
                        label_refs(&rec.labels, &mut roots);
                        if !rec.parent.is_empty() {
                            roots.push_back(Node::Snapshot(sn, rec.parent.clone()));
                        }
                    }
                }
            }
            for view in &self.snapshotters {
                let sn = view.snapshotter();
                let Some(all) = snaps.get(sn) else { continue };
                let mut doomed: Vec<(usize, &str)> = all
                    .keys()
                    .filter(|k| !marked_snaps.contains(&(sn.to_string(), k.to_string())))
                    .map(|k| (snapshot_depth(all, k), k.as_str()))
                    .collect();
                // Children first: deeper snapshots before their parents.
                doomed.sort_by(|a, b| b.cmp(a));
                for (_, key) in doomed {
                    match view.remove_snapshot(&ns, key) {
                        Ok(()) => {
                            stats.snapshots_removed += 1;
                            tracing::debug!(namespace = %ns, snapshotter = sn, key, "collected snapshot");
                        }
                        Err(e) if e.kind() == ErrorKind::NotFound => {}
                        Err(e) => {
                            tracing::warn!(namespace = %ns, snapshotter = sn, key, error = %e, "cannot collect snapshot")
                        }
                    }
                }
            }
            for d in records.keys() {
                if marked.contains(d) {
                    referenced.insert(d.clone());
                } else {
                    self.content.remove_record(&ns, d)?;
                    stats.records_removed += 1;
                    tracing::debug!(namespace = %ns, digest = %d, "collected content record");
                }
            }
        }
        for blob in self.content.blobs()? {
            if !referenced.contains(&blob) {
                stats.bytes_freed += self.content.remove_blob(&blob)?;
                stats.blobs_removed += 1;
                tracing::debug!(digest = %blob, "removed blob");
            }
        }
        stats.duration = start.elapsed();
        if stats != (CollectStats { duration: stats.duration, ..Default::default() }) {
            tracing::info!(?stats, "garbage collected");
        }
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::Descriptor;
    use berth_metadata::{Image, LeaseResource, MetadataConfig, EXPIRE_LABEL};
    use std::sync::Arc;

    /// An in-memory content view: blobs on "disk" and per-namespace records.
    #[derive(Default)]
    struct MemContent {
        blobs: Mutex<BTreeMap<Digest, Vec<u8>>>,
        records: Mutex<BTreeMap<(String, Digest), BTreeMap<String, String>>>,
    }

    impl MemContent {
        fn add(&self, ns: &str, data: &[u8], labels: &[(&str, String)]) -> Digest {
            let d = fake_digest(data);
            self.blobs.lock().unwrap().insert(d.clone(), data.to_vec());
            let l = labels.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
            self.records.lock().unwrap().insert((ns.to_string(), d.clone()), l);
            d
        }
    }

    fn fake_digest(data: &[u8]) -> Digest {
        // Deterministic stand-in for sha256 in tests: FNV-1a spread over 32 bytes.
        let mut h: u64 = 0xcbf29ce484222325;
        for b in data {
            h = (h ^ u64::from(*b)).wrapping_mul(0x100000001b3);
        }
        let mut bytes = [0u8; 32];
        for (i, chunk) in bytes.chunks_mut(8).enumerate() {
            chunk.copy_from_slice(&(h.rotate_left(i as u32 * 7)).to_be_bytes());
        }
        Digest::sha256_from_bytes(&bytes)
    }

    impl ContentView for Arc<MemContent> {
        fn records(&self, ns: &str) -> Result<Vec<(Digest, BTreeMap<String, String>)>> {
            Ok(self
                .records
                .lock()
                .unwrap()
                .iter()
                .filter(|((n, _), _)| n == ns)
                .map(|((_, d), l)| (d.clone(), l.clone()))
                .collect())
        }
        fn remove_record(&self, ns: &str, digest: &Digest) -> Result<()> {
            self.records.lock().unwrap().remove(&(ns.to_string(), digest.clone()));
            Ok(())
        }
        fn blobs(&self) -> Result<Vec<Digest>> {
            Ok(self.blobs.lock().unwrap().keys().cloned().collect())
        }
        fn read_small(&self, digest: &Digest, max: u64) -> Result<Option<Vec<u8>>> {
            Ok(self.blobs.lock().unwrap().get(digest).filter(|b| b.len() as u64 <= max).cloned())
        }
        fn remove_blob(&self, digest: &Digest) -> Result<u64> {
            Ok(self.blobs.lock().unwrap().remove(digest).map_or(0, |b| b.len() as u64))
        }
    }

    fn setup() -> (tempfile::TempDir, Arc<MetadataStore>, Arc<MemContent>, Collector<Arc<MemContent>>) {
        let dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(MetadataStore::open(&dir.path().join("m"), &MetadataConfig::default()).unwrap());
        let content = Arc::new(MemContent::default());
        let gc = Collector::new(meta.clone(), content.clone());
        for ns in ["a", "b"] {
            meta.create_namespace(ns, BTreeMap::new()).unwrap();
        }
        (dir, meta, content, gc)
    }

    fn image(name: &str, target: &Digest) -> Image {
        Image {
            name: name.into(),
            labels: BTreeMap::new(),
            target: Descriptor {
                media_type: berth_core::descriptor::MEDIA_TYPE_OCI_MANIFEST.into(),
                digest: target.to_string(),
                size: 1,
                annotations: BTreeMap::new(),
            },
            created_at: SystemTime::UNIX_EPOCH,
            updated_at: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn keeps_image_graph_and_removes_the_rest() {
        let (_d, meta, content, gc) = setup();
        let layer = content.add("a", b"layer-bytes", &[]);
        let config = content.add("a", b"{\"config\":true}", &[]);
        // Children found by parsing (no labels) ...
        let manifest_json = format!(r#"{{"config":{{"digest":"{config}"}},"layers":[{{"digest":"{layer}"}}]}}"#);
        let manifest = content.add("a", manifest_json.as_bytes(), &[]);
        // ... and by label only.
        let extra = content.add("a", b"referenced by label", &[]);
        let index = content.add(
            "a",
            format!(r#"{{"manifests":[{{"digest":"{manifest}"}}]}}"#).as_bytes(),
            &[("containerd.io/gc.ref.content.x", extra.to_string())],
        );
        let orphan = content.add("a", b"nobody wants me", &[]);
        meta.create_image("a", &image("img", &index)).unwrap();

        let stats = gc.collect().unwrap();
        assert_eq!((stats.records_removed, stats.blobs_removed), (1, 1));
        assert_eq!(stats.bytes_freed, b"nobody wants me".len() as u64);
        let left: BTreeSet<_> = content.blobs().unwrap().into_iter().collect();
        assert_eq!(left, [layer, config, manifest, extra, index.clone()].into_iter().collect());
        assert!(!left.contains(&orphan));

        meta.delete_image("a", "img").unwrap();
        let stats = gc.collect().unwrap();
        assert_eq!(stats.blobs_removed, 5);
        assert!(content.blobs().unwrap().is_empty());
    }

    #[test]
    fn shared_blobs_live_while_any_namespace_references_them() {
        let (_d, meta, content, gc) = setup();
        let d = content.add("a", b"shared", &[]);
        content.add("b", b"shared", &[]);
        meta.create_image("b", &image("img", &d)).unwrap();
        let stats = gc.collect().unwrap();
        assert_eq!((stats.records_removed, stats.blobs_removed), (1, 0), "a's record goes, the blob stays for b");
        meta.delete_image("b", "img").unwrap();
        assert_eq!(gc.collect().unwrap().blobs_removed, 1);
    }

    #[test]
    fn leases_and_root_labels_protect_until_expiry() {
        let (_d, meta, content, gc) = setup();
        let leased = content.add("a", b"leased", &[]);
        let rooted = content.add("a", b"rooted", &[(ROOT_LABEL, "x".into())]);
        meta.create_lease("a", "l", BTreeMap::new()).unwrap();
        meta.add_lease_resource("a", "l", &LeaseResource { kind: "content".into(), id: leased.to_string() }).unwrap();
        let expiring = content.add("a", b"expiring", &[]);
        meta.create_lease("a", "old", [(EXPIRE_LABEL.to_string(), "2000-01-01T00:00:00Z".to_string())].into()).unwrap();
        meta.add_lease_resource("a", "old", &LeaseResource { kind: "content".into(), id: expiring.to_string() })
            .unwrap();

        let stats = gc.collect().unwrap();
        assert_eq!(stats.leases_removed, 1);
        assert_eq!(stats.blobs_removed, 1);
        let left: BTreeSet<_> = content.blobs().unwrap().into_iter().collect();
        assert_eq!(left, [leased.clone(), rooted].into_iter().collect());
        meta.delete_lease("a", "l").unwrap();
        assert_eq!(gc.collect().unwrap().blobs_removed, 1);
    }

    /// Snapshots in memory; removal refuses a snapshot with children, as real ones do.
    #[derive(Default)]
    struct MemSnapshots {
        snaps: Mutex<BTreeMap<(String, String), SnapshotRecord>>,
        removed: Mutex<Vec<String>>,
    }

    impl MemSnapshots {
        fn add(&self, ns: &str, key: &str, parent: &str, labels: &[(&str, &str)]) {
            let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let rec = SnapshotRecord { key: key.into(), parent: parent.into(), labels };
            self.snaps.lock().unwrap().insert((ns.into(), key.into()), rec);
        }
        fn keys(&self) -> Vec<String> {
            self.snaps.lock().unwrap().keys().map(|(_, k)| k.clone()).collect()
        }
    }

    impl SnapshotView for MemSnapshots {
        fn snapshotter(&self) -> &str {
            "mem"
        }
        fn snapshots(&self, ns: &str) -> Result<Vec<SnapshotRecord>> {
            Ok(self.snaps.lock().unwrap().iter().filter(|((n, _), _)| n == ns).map(|(_, r)| r.clone()).collect())
        }
        fn remove_snapshot(&self, ns: &str, key: &str) -> Result<()> {
            let mut snaps = self.snaps.lock().unwrap();
            if snaps.iter().any(|((n, _), r)| n == ns && r.parent == key) {
                return Err(berth_core::Error::failed_precondition(format!("{key} has children")));
            }
            snaps.remove(&(ns.to_string(), key.to_string()));
            self.removed.lock().unwrap().push(key.to_string());
            Ok(())
        }
    }

    #[test]
    fn snapshots_live_while_referenced_and_go_children_first() {
        let (_d, meta, content, gc) = setup();
        let snaps = Arc::new(MemSnapshots::default());
        let gc = gc.with_snapshotters(vec![snaps.clone()]);
        // An image whose config points at its unpacked top layer.
        let config = content.add("a", b"{}", &[("containerd.io/gc.ref.snapshot.mem/0", "layer2".into())]);
        meta.create_image("a", &image("img", &config)).unwrap();
        snaps.add("a", "layer1", "", &[]);
        snaps.add("a", "layer2", "layer1", &[]);
        // A container's rootfs held by a lease, on a base only it references.
        snaps.add("a", "base", "", &[]);
        snaps.add("a", "work", "base", &[]);
        meta.create_lease("a", "l", BTreeMap::new()).unwrap();
        meta.add_lease_resource("a", "l", &LeaseResource { kind: "snapshots/mem".into(), id: "work".into() }).unwrap();
        snaps.add("a", "pinned", "", &[(ROOT_LABEL, "1")]);
        // Unreferenced chain, and a same-named snapshot in another namespace.
        snaps.add("a", "o1", "", &[]);
        snaps.add("a", "o2", "o1", &[]);
        snaps.add("a", "o3", "o2", &[]);
        snaps.add("b", "layer1", "", &[(ROOT_LABEL, "1")]);

        let stats = gc.collect().unwrap();
        assert_eq!(stats.snapshots_removed, 3);
        assert_eq!(*snaps.removed.lock().unwrap(), ["o3", "o2", "o1"], "children first");
        assert_eq!(snaps.keys(), ["base", "layer1", "layer2", "pinned", "work", "layer1"]);

        meta.delete_lease("a", "l").unwrap();
        meta.delete_image("a", "img").unwrap();
        let stats = gc.collect().unwrap();
        assert_eq!(stats.snapshots_removed, 4, "{:?}", snaps.removed.lock().unwrap());
        assert_eq!(snaps.keys(), ["pinned", "layer1"]);
    }

    #[test]
    fn container_records_name_their_snapshot() {
        let rec = br#"{"snapshotter":"overlayfs","snapshot_key":"c1","image":"x"}"#;
        assert_eq!(container_snapshot(rec), Some(Node::Snapshot("overlayfs".into(), "c1".into())));
        assert_eq!(container_snapshot(br#"{"snapshotter":"","snapshot_key":"c1"}"#), None);
        assert_eq!(container_snapshot(b"not json"), None);
    }

    #[test]
    fn children_of_manifests_and_indexes() {
        let d1 = "sha256:".to_string() + &"1".repeat(64);
        let d2 = "sha256:".to_string() + &"2".repeat(64);
        let m = format!(r#"{{"config":{{"digest":"{d1}"}},"layers":[{{"digest":"{d2}"}},{{"digest":"bad"}}]}}"#);
        assert_eq!(children(m.as_bytes()).len(), 2);
        assert!(children(b"\x1f\x8b not json").is_empty());
    }
}
