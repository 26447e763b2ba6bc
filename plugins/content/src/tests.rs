//! Unit tests of the content store on temporary directories.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use berth_core::filters::Filter;
use berth_core::{Digest, ErrorKind};
use berth_metadata::{LeaseResource, MetadataConfig, MetadataStore};
use sha2::{Digest as _, Sha256};

use crate::{ContentStore, Writer};

fn sha(data: &[u8]) -> Digest {
    Digest::sha256_from_bytes(&Sha256::digest(data).into())
}

fn open_at(dir: &Path) -> (Arc<MetadataStore>, ContentStore) {
    let meta = Arc::new(MetadataStore::open(&dir.join("meta.sled"), &MetadataConfig::default()).unwrap());
    let store = ContentStore::open(&dir.join("content"), meta.clone()).unwrap();
    (meta, store)
}

fn setup() -> (tempfile::TempDir, Arc<MetadataStore>, ContentStore) {
    let dir = tempfile::tempdir().unwrap();
    let (meta, store) = open_at(dir.path());
    (dir, meta, store)
}

fn no_filter() -> Filter {
    Filter::default()
}

fn write_all(store: &ContentStore, ns: &str, reference: &str, data: &[u8]) -> Writer {
    let mut w = store.writer(ns, reference, 0, None, None).unwrap();
    w.write_all(data).unwrap();
    w
}

fn ingest(store: &ContentStore, ns: &str, data: &[u8]) -> Digest {
    let d = sha(data);
    write_all(store, ns, &format!("ref-{d}"), data).commit(data.len() as u64, Some(&d), BTreeMap::new()).unwrap();
    d
}

fn blob_files(store: &ContentStore) -> usize {
    std::fs::read_dir(store.root().join("blobs/sha256")).unwrap().count()
}

fn ingest_dirs(store: &ContentStore) -> usize {
    std::fs::read_dir(store.root().join("ingest")).unwrap().count()
}

fn read_blob(store: &ContentStore, ns: &str, d: &Digest) -> Vec<u8> {
    let r = store.reader(ns, d).unwrap();
    let mut buf = vec![0u8; r.size() as usize];
    r.read_exact_at(&mut buf, 0).unwrap();
    buf
}

#[test]
fn write_commit_read() {
    let (_dir, _meta, store) = setup();
    let data = b"hello, berth".repeat(1000);
    let d = sha(&data);
    let mut w = store.writer("ns", "upload/1", data.len() as u64, Some(d.clone()), None).unwrap();
    assert_eq!(w.offset(), 0);
    w.write_all(&data[..100]).unwrap();
    assert_eq!(w.digest(), sha(&data[..100]));
    assert_eq!(w.write_at(100, &data[100..]).unwrap(), data.len() as u64);
    let labels: BTreeMap<_, _> = [("a".to_string(), "1".to_string())].into();
    let info = w.commit(data.len() as u64, Some(&d), labels.clone()).unwrap();
    assert_eq!((info.digest.clone(), info.size, info.labels.clone()), (d.clone(), data.len() as u64, labels));
    assert_eq!(store.info("ns", &d).unwrap(), info);
    assert_eq!(read_blob(&store, "ns", &d), data);

    let r = store.reader("ns", &d).unwrap();
    let mut tail = [0u8; 64];
    assert_eq!(r.read_at(&mut tail, data.len() as u64 - 10).unwrap(), 10);
    assert_eq!(r.read_at(&mut tail, data.len() as u64).unwrap(), 0);

    let path = store.root().join("blobs/sha256").join(d.hex());
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o444);
    assert_eq!(ingest_dirs(&store), 0, "the ingest is gone");
    assert!(store.list_statuses("ns", &no_filter()).unwrap().is_empty());
    assert_eq!(store.list("ns", &no_filter()).unwrap(), [info]);
}

#[test]
fn wrong_digest_or_size_makes_nothing_visible() {
    let (_dir, _meta, store) = setup();
    let wrong = sha(b"something else");
    let actual = sha(b"payload");
    let err = write_all(&store, "ns", "r", b"payload").commit(0, Some(&wrong), BTreeMap::new()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert_eq!(err.to_string(), format!("unexpected commit digest {actual}, expected {wrong}: failed precondition"));

    let err = store.writer("ns", "r", 0, None, None).unwrap().commit(99, None, BTreeMap::new()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(err.to_string().contains("unexpected commit size 7, expected 99"), "{err}");

    // The expectations given at open are checked at commit too.
    let w = store.writer("ns", "r", 0, Some(wrong.clone()), None).unwrap();
    assert_eq!(w.commit(0, None, BTreeMap::new()).unwrap_err().kind(), ErrorKind::FailedPrecondition);
    let w = store.writer("ns", "r", 8, None, None).unwrap();
    assert_eq!(w.commit(0, None, BTreeMap::new()).unwrap_err().kind(), ErrorKind::FailedPrecondition);

    assert_eq!(blob_files(&store), 0);
    assert!(store.list("ns", &no_filter()).unwrap().is_empty());
    assert_eq!(store.info("ns", &actual).unwrap_err().kind(), ErrorKind::NotFound);
    // The ingest survives, resumable or abortable.
    let st = store.status("ns", "r").unwrap();
    assert_eq!((st.offset, st.total, st.expected), (7, 8, Some(wrong)));
    let info =
        store.writer("ns", "r", 7, Some(actual.clone()), None).unwrap().commit(7, None, BTreeMap::new()).unwrap();
    assert_eq!(info.digest, actual);
}

#[test]
fn one_writer_per_ref() {
    let (_dir, _meta, store) = setup();
    let first = store.writer("ns", "busy", 0, None, None).unwrap();
    let err = store.writer("ns", "busy", 0, None, None).err().unwrap();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert_eq!(err.to_string(), "ref \"busy\" is locked: unavailable");
    // The same ref elsewhere is another ingest.
    drop(store.writer("other", "busy", 0, None, None).unwrap());
    drop(first);
    drop(store.writer("ns", "busy", 0, None, None).unwrap());

    // Racing threads: exactly one wins at a time.
    let store2 = store.clone();
    let held = store.writer("ns", "race", 0, None, None).unwrap();
    let t = std::thread::spawn(move || store2.writer("ns", "race", 0, None, None).err().map(|e| e.kind()));
    assert_eq!(t.join().unwrap(), Some(ErrorKind::Unavailable));
    drop(held);
}

#[test]
fn resume_after_drop() {
    let (_dir, _meta, store) = setup();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let d = sha(&data);
    drop(write_all(&store, "ns", "big", &data[..123_456]));
    let st = store.status("ns", "big").unwrap();
    assert_eq!(st.offset, 123_456);
    let mut w = store.writer("ns", "big", data.len() as u64, None, None).unwrap();
    assert_eq!(w.offset(), 123_456);
    assert_eq!(w.digest(), sha(&data[..123_456]), "hash recomputed from the data on disk");
    assert_eq!(w.started_at(), st.started_at);
    w.write_at(123_456, &data[123_456..]).unwrap();
    assert_eq!(w.commit(0, Some(&d), BTreeMap::new()).unwrap().size, data.len() as u64);
    assert_eq!(read_blob(&store, "ns", &d), data);
}

#[test]
fn resume_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = b"0123456789".repeat(50);
    let d = sha(&data);
    {
        let (_meta, store) = open_at(dir.path());
        let mut w = store.writer("ns", "r", data.len() as u64, Some(d.clone()), None).unwrap();
        w.write_all(&data[..200]).unwrap();
        // Dropping a writer cleans nothing up, so this is what a crash leaves on disk too.
        drop(w);
    }
    // Debris of an interrupted ingest creation is cleaned at open.
    std::fs::create_dir(dir.path().join("content/ingest/abc.tmp-1-0")).unwrap();
    let (_meta, store) = open_at(dir.path());
    assert!(!dir.path().join("content/ingest/abc.tmp-1-0").exists());
    let st = store.status("ns", "r").unwrap();
    assert_eq!((st.offset, st.total, st.expected.clone()), (200, data.len() as u64, Some(d.clone())));
    let mut w = store.writer("ns", "r", 0, None, None).unwrap();
    w.write_at(200, &data[200..]).unwrap();
    w.commit(0, None, BTreeMap::new()).unwrap();
    assert_eq!(read_blob(&store, "ns", &d), data);
}

#[test]
fn offset_rules() {
    let (_dir, _meta, store) = setup();
    let mut w = store.writer("ns", "r", 0, None, None).unwrap();
    w.write_at(0, b"abc").unwrap();
    let err = w.write_at(2, b"x").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(err.to_string().contains("must occur at its current offset 3"), "{err}");
    assert_eq!(w.write_at(4, b"x").unwrap_err().kind(), ErrorKind::FailedPrecondition);
    assert_eq!(w.write_at(3, b"def").unwrap(), 6);
    // Offset 0 on a non-empty ingest starts over.
    assert_eq!(w.write_at(0, b"xy").unwrap(), 2);
    assert_eq!(w.digest(), sha(b"xy"));
    assert_eq!(w.write_at(0, b"").unwrap(), 0);
    w.write_at(0, b"final").unwrap();
    assert_eq!(w.commit(0, Some(&sha(b"final")), BTreeMap::new()).unwrap().size, 5);
}

#[test]
fn abort_discards_ingest() {
    let (_dir, _meta, store) = setup();
    drop(write_all(&store, "ns", "r", b"partial"));
    assert_eq!(store.list_statuses("ns", &no_filter()).unwrap().len(), 1);
    store.abort("ns", "r").unwrap();
    assert_eq!(store.status("ns", "r").unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(store.abort("ns", "r").unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(ingest_dirs(&store), 0);
    // Aborting in one namespace does not touch another's ingest of the same ref.
    drop(write_all(&store, "a", "same", b"x"));
    assert_eq!(store.abort("b", "same").unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(store.status("a", "same").unwrap().offset, 1);

    // A writer whose ingest is aborted under it cannot commit, and a new writer starts afresh.
    let w = write_all(&store, "ns", "live", b"data");
    store.abort("ns", "live").unwrap();
    assert_eq!(w.commit(0, None, BTreeMap::new()).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(blob_files(&store), 0);
    assert_eq!(store.writer("ns", "live", 0, None, None).unwrap().offset(), 0);
}

#[test]
fn namespaces_see_only_what_they_committed() {
    let (_dir, _meta, store) = setup();
    let data = b"shared layer";
    let d = ingest(&store, "a", data);
    assert_eq!(store.info("b", &d).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(store.reader("b", &d).unwrap_err().kind(), ErrorKind::NotFound);
    assert!(store.list("b", &no_filter()).unwrap().is_empty());
    assert_eq!(store.delete("b", &d).unwrap_err().kind(), ErrorKind::NotFound);

    // Already visible in a: refused at open, as containerd.
    let err = store.writer("a", "again", 0, Some(d.clone()), None).err().unwrap();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert_eq!(err.to_string(), format!("content {d}: already exists"));

    // Writing it in b makes it visible there without a second file.
    let mut w = store.writer("b", "mine", 0, Some(d.clone()), None).unwrap();
    w.write_all(data).unwrap();
    w.commit(0, None, BTreeMap::new()).unwrap();
    assert_eq!(read_blob(&store, "b", &d), data);
    assert_eq!(blob_files(&store), 1);
    assert_eq!(store.blob_digests_on_disk().unwrap(), vec![d.clone()]);

    // Deleting from a leaves b's view and the file alone.
    store.delete("a", &d).unwrap();
    assert_eq!(store.info("a", &d).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(read_blob(&store, "b", &d), data);

    // Committing what the namespace already sees consumes the ingest and says so.
    let err = write_all(&store, "b", "dup", data).commit(0, None, BTreeMap::new()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert!(store.list_statuses("b", &no_filter()).unwrap().is_empty());
}

#[test]
fn labels_update_and_filters() {
    let (_dir, _meta, store) = setup();
    let small = ingest(&store, "ns", b"small");
    let big = ingest(&store, "ns", &[7u8; 4096]);
    let set = |k: &str, v: &str| -> BTreeMap<String, String> { [(k.to_string(), v.to_string())].into() };
    let info = store.update("ns", &small, set("team", "a"), &["labels.team".into()]).unwrap();
    assert_eq!(info.labels, set("team", "a"));
    assert!(info.updated_at >= info.created_at);
    store.update("ns", &small, set("x", "1"), &["labels.x".into()]).unwrap();
    assert_eq!(store.info("ns", &small).unwrap().labels.len(), 2);
    store.update("ns", &small, BTreeMap::new(), &["labels.x".into()]).unwrap();
    assert_eq!(store.info("ns", &small).unwrap().labels, set("team", "a"));
    let err = store.update("ns", &small, BTreeMap::new(), &["size".into()]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let err = store.update("ns", &small, set("k", &"v".repeat(5000)), &[]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert_eq!(store.update("other", &small, set("a", "b"), &[]).unwrap_err().kind(), ErrorKind::NotFound);

    let find = |f: &str| -> Vec<Digest> {
        store.list("ns", &Filter::parse_all(&[f]).unwrap()).unwrap().into_iter().map(|i| i.digest).collect()
    };
    assert_eq!(find("labels.team==a"), vec![small.clone()]);
    assert_eq!(find("size==4096"), vec![big.clone()]);
    assert_eq!(find(&format!("digest=={big}")), vec![big.clone()]);
    assert_eq!(find("labels.nope").len(), 0);
    assert_eq!(find("").len(), 2);
}

#[test]
fn statuses_filter_by_ref() {
    let (_dir, _meta, store) = setup();
    for r in ["layer-1", "layer-2", "config"] {
        drop(write_all(&store, "ns", r, r.as_bytes()));
    }
    drop(write_all(&store, "other", "layer-3", b"x"));
    let refs = |f: &str| -> Vec<String> {
        store.list_statuses("ns", &Filter::parse_all(&[f]).unwrap()).unwrap().into_iter().map(|s| s.reference).collect()
    };
    assert_eq!(refs(""), ["config", "layer-1", "layer-2"]);
    assert_eq!(refs("ref~=^layer"), ["layer-1", "layer-2"]);
    assert_eq!(refs("ref==config"), ["config"]);
    assert_eq!(store.all_statuses().unwrap().len(), 4);
}

#[test]
fn refs_are_never_paths() {
    let (dir, _meta, store) = setup();
    for r in ["../../escape", "/abs/path", "a\0b", "sha256:abc", "."] {
        drop(write_all(&store, "ns", r, b"data"));
        assert_eq!(store.status("ns", r).unwrap().reference, r);
    }
    assert!(!dir.path().join("escape").exists());
    assert_eq!(ingest_dirs(&store), 5);
    assert_eq!(store.writer("ns", "", 0, None, None).err().unwrap().kind(), ErrorKind::InvalidArgument);
    assert_eq!(store.writer("bad/ns", "r", 0, None, None).err().unwrap().kind(), ErrorKind::InvalidArgument);
    let sha512 = Digest::parse(&format!("sha512:{}", "a".repeat(128))).unwrap();
    assert_eq!(store.writer("ns", "r2", 0, Some(sha512), None).err().unwrap().kind(), ErrorKind::InvalidArgument);
}

#[test]
fn leases_hold_ingests_then_content() {
    let (_dir, meta, store) = setup();
    meta.create_lease("ns", "l", BTreeMap::new()).unwrap();
    let ingests = |r: &str| LeaseResource { kind: "ingests".into(), id: r.into() };
    let content = |d: &Digest| LeaseResource { kind: "content".into(), id: d.to_string() };

    let mut w = store.writer("ns", "r", 0, None, Some("l")).unwrap();
    assert_eq!(meta.lease_resources("ns", "l").unwrap(), [ingests("r")]);
    w.write_all(b"leased").unwrap();
    let d = w.commit(0, None, BTreeMap::new()).unwrap().digest;
    assert_eq!(meta.lease_resources("ns", "l").unwrap(), [content(&d)]);

    // An ingest aborted leaves its lease.
    drop(store.writer("ns", "gone", 0, None, Some("l")).unwrap());
    store.abort("ns", "gone").unwrap();
    assert_eq!(meta.lease_resources("ns", "l").unwrap(), [content(&d)]);

    // Content that already exists joins the lease of whoever asked for it.
    meta.create_lease("ns", "l2", BTreeMap::new()).unwrap();
    let err = store.writer("ns", "again", 0, Some(d.clone()), Some("l2")).err().unwrap();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert_eq!(meta.lease_resources("ns", "l2").unwrap(), [content(&d)]);

    let err = store.writer("ns", "r3", 0, None, Some("missing")).err().unwrap();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(store.status("ns", "r3").unwrap_err().kind(), ErrorKind::NotFound, "nothing created");
    drop(store.writer("ns", "r3", 0, None, None).unwrap());
}

#[test]
fn blob_without_record_is_invisible_and_reused() {
    // What a crash between the rename into blobs/ and the metadata record leaves behind.
    let (_dir, _meta, store) = setup();
    let data = b"orphaned";
    let d = sha(data);
    std::fs::write(store.root().join("blobs/sha256").join(d.hex()), data).unwrap();
    assert_eq!(store.info("ns", &d).unwrap_err().kind(), ErrorKind::NotFound);
    assert!(store.list("ns", &no_filter()).unwrap().is_empty());
    assert_eq!(ingest(&store, "ns", data), d);
    assert_eq!(read_blob(&store, "ns", &d), data);
    assert_eq!(blob_files(&store), 1);
}

#[test]
fn gc_helpers() {
    let (_dir, _meta, store) = setup();
    let d = ingest(&store, "ns", b"collect me");
    std::fs::write(store.root().join("blobs/sha256/not-a-digest"), b"junk").unwrap();
    assert_eq!(store.blob_digests_on_disk().unwrap(), vec![d.clone()]);
    assert_eq!(store.open_blob(&d).unwrap().size(), 10);
    store.delete("ns", &d).unwrap();
    assert_eq!(store.open_blob(&d).unwrap().size(), 10, "the file outlives the record");
    assert_eq!(store.remove_blob(&d).unwrap(), 10);
    assert_eq!(store.remove_blob(&d).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(store.open_blob(&d).unwrap_err().kind(), ErrorKind::NotFound);
}

/// Env var that makes [`write_errors_keep_the_ingest_resumable`] run its body (in a child
/// process, where a file size limit cannot disturb other tests).
const FSIZE_CHILD: &str = "BERTH_CONTENT_TEST_FSIZE_DIR";

#[test]
fn write_errors_keep_the_ingest_resumable() {
    let Some(dir) = std::env::var_os(FSIZE_CHILD) else {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "tests::write_errors_keep_the_ingest_resumable", "--test-threads=1", "--nocapture"])
            .env(FSIZE_CHILD, dir.path())
            .output()
            .unwrap();
        let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "child failed:\n{log}");
        assert!(log.contains("1 passed"), "child ran no test:\n{log}");
        // Back without the limit: the ingest resumes where the failed write left it.
        let (_meta, store) = open_at(dir.path());
        let mut w = store.writer("ns", "r", 0, None, None).unwrap();
        assert_eq!(w.offset(), 4096);
        w.write_at(4096, &[1u8; 8192]).unwrap();
        let mut all = vec![1u8; 4096];
        all.extend([1u8; 8192]);
        w.commit(0, Some(&sha(&all)), BTreeMap::new()).unwrap();
        return;
    };
    let dir = Path::new(&dir);
    // No background flushes: sled must not write once the limit is set.
    let quiet = MetadataConfig { flush_every_ms: 0, sync_writes: false, ..MetadataConfig::default() };
    let meta = Arc::new(MetadataStore::open(&dir.join("meta.sled"), &quiet).unwrap());
    let store = ContentStore::open(&dir.join("content"), meta.clone()).unwrap();
    // SAFETY: plain libc calls; this process runs only this test.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let limit = libc::rlimit { rlim_cur: 8192, rlim_max: libc::RLIM_INFINITY };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
    let mut w = store.writer("ns", "r", 0, None, None).unwrap();
    w.write_at(0, &[1u8; 4096]).unwrap();
    let err = w.write_at(4096, &[1u8; 8192]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Internal);
    assert!(err.to_string().contains("write 8192 bytes at offset 4096 of ingest \"r\""), "{err}");
    assert_eq!(w.offset(), 4096, "the failed chunk is not counted");
    assert_eq!(store.status("ns", "r").unwrap().offset, 4096, "the partial chunk was cut off");
    // Leave without dropping: nothing may try to write past the limit on the way out.
    std::mem::forget((w, store, meta));
}

#[test]
fn garbage_collector_sweeps_through_the_store() {
    let (_dir, meta, store) = setup();
    meta.create_namespace("ns", BTreeMap::new()).unwrap();
    let kept = ingest(&store, "ns", b"kept");
    store.update("ns", &kept, [(berth_gc::ROOT_LABEL.to_string(), "1".to_string())].into(), &[]).unwrap();
    let dropped = ingest(&store, "ns", b"dropped");
    drop(write_all(&store, "ns", "in-progress", b"partial"));
    let stats = berth_gc::Collector::new(meta.clone(), store.clone()).collect().unwrap();
    assert_eq!((stats.records_removed, stats.blobs_removed, stats.bytes_freed), (1, 1, 7));
    assert_eq!(store.blob_digests_on_disk().unwrap(), vec![kept.clone()]);
    assert_eq!(store.info("ns", &dropped).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(store.status("ns", "in-progress").unwrap().offset, 7, "ingests are not collected");
}
