//! Both snapshotters run the conformance suite; the staged unpack API has its own checks.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use berth_core::ErrorKind;
use berth_metadata::{MetadataConfig, MetadataStore};

use crate::*;

mod overlayfs {
    use super::*;
    crate::conformance_tests!(|root: &Path, meta| -> Arc<dyn Snapshotter> {
        check_overlay_support(root).expect("overlayfs on the test root");
        Arc::new(OverlaySnapshotter::open(root, meta).unwrap())
    });
}

mod native {
    use super::*;
    crate::conformance_tests!(|root: &Path, meta| -> Arc<dyn Snapshotter> {
        Arc::new(NativeSnapshotter::open(root, meta).unwrap())
    });
}

fn open_overlay() -> Option<(tempfile::TempDir, Arc<MetadataStore>, OverlaySnapshotter)> {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: overlayfs needs root");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let meta = Arc::new(MetadataStore::open(&dir.path().join("meta"), &MetadataConfig::default()).unwrap());
    let root = dir.path().join("overlayfs");
    check_overlay_support(&root).unwrap();
    let sn = OverlaySnapshotter::open(&root, meta.clone()).unwrap();
    Some((dir, meta, sn))
}

#[test]
fn staged_layers_extract_in_parallel_and_commit_in_order() {
    let Some((dir, meta, sn)) = open_overlay() else { return };
    let staged: Vec<StagedLayer> = (0..4).map(|_| sn.prepare_staged().unwrap()).collect();
    std::thread::scope(|s| {
        for (i, layer) in staged.iter().enumerate() {
            s.spawn(move || fs::write(layer.dir().join(format!("layer{i}")), i.to_string()).unwrap());
        }
    });
    assert!(sn.list("ns", &Default::default()).unwrap().is_empty(), "staged layers are invisible");
    assert_eq!(sn.cleanup().unwrap(), 0, "cleanup keeps live staged layers");
    meta.create_lease("ns", "unpack", Default::default()).unwrap();
    let opts = CreateOptions { lease: Some("unpack".into()), ..Default::default() };
    let mut parent = String::new();
    let mut layers = staged.into_iter();
    let first = layers.next().unwrap();
    // Committing on a parent that is not there yet fails and drops the staged directory.
    let orphan = sn.prepare_staged().unwrap();
    let orphan_dir = orphan.dir().to_path_buf();
    assert_eq!(sn.commit_staged("ns", orphan, "x", "missing", &opts).unwrap_err().kind(), ErrorKind::NotFound);
    assert!(!orphan_dir.exists());
    for (i, layer) in std::iter::once(first).chain(layers).enumerate() {
        let name = format!("chain{i}");
        let info = sn.commit_staged("ns", layer, &name, &parent, &opts).unwrap();
        assert_eq!((info.kind, info.parent.as_str()), (Kind::Committed, parent.as_str()));
        parent = name;
    }
    assert_eq!(sn.usage("ns", "chain0").unwrap().inodes, 2);
    let leased = meta.lease_resources("ns", "unpack").unwrap();
    assert_eq!(leased.len(), 4, "{leased:?}");
    let mounts = sn.view("ns", "v", &parent, &CreateOptions::default()).unwrap();
    let target = dir.path().join("mnt");
    fs::create_dir(&target).unwrap();
    let g = berth_mount::MountGuard::mount(&mounts, &target).unwrap();
    for i in 0..4 {
        assert_eq!(fs::read_to_string(target.join(format!("layer{i}"))).unwrap(), i.to_string());
    }
    drop(g);

    // A name already taken: the loser's directory goes away.
    let dup = sn.prepare_staged().unwrap();
    let dup_dir = dup.dir().to_path_buf();
    assert_eq!(sn.commit_staged("ns", dup, "chain0", "", &opts).unwrap_err().kind(), ErrorKind::AlreadyExists);
    assert!(!dup_dir.exists());
    // Dropped without commit: removed too.
    let dropped = sn.prepare_staged().unwrap();
    let dropped_dir = dropped.dir().to_path_buf();
    drop(dropped);
    assert!(!dropped_dir.exists());
    assert_eq!(sn.cleanup().unwrap(), 0);
}

#[test]
fn native_has_no_staged_unpack() {
    let dir = tempfile::tempdir().unwrap();
    let meta = Arc::new(MetadataStore::open(&dir.path().join("meta"), &MetadataConfig::default()).unwrap());
    let sn = NativeSnapshotter::open(&dir.path().join("native"), meta).unwrap();
    assert_eq!(sn.prepare_staged().unwrap_err().kind(), ErrorKind::NotImplemented);
}

#[test]
fn gc_view_lists_and_removes() {
    use berth_gc::SnapshotView;
    let dir = tempfile::tempdir().unwrap();
    let meta = Arc::new(MetadataStore::open(&dir.path().join("meta"), &MetadataConfig::default()).unwrap());
    let sn: SharedSnapshotter = Arc::new(NativeSnapshotter::open(&dir.path().join("native"), meta).unwrap());
    sn.prepare("ns", "a", "", &CreateOptions::default()).unwrap();
    let view = SnapshotterGcView(sn.clone());
    assert_eq!(view.snapshotter(), "native");
    assert_eq!(view.snapshots("ns").unwrap()[0].key, "a");
    view.remove_snapshot("ns", "a").unwrap();
    assert!(view.snapshots("ns").unwrap().is_empty());
}
