//! Unpacking images into snapshots: Berth's parallel unpacker (overlayfs and native), reuse of
//! unpacked layers, concurrent unpacks, garbage collection, bad layers, and containerd's
//! client-side unpack (`ctr images import`) through our snapshots and diff services.

use std::collections::HashMap;
use std::path::Path;

use berth_integration::grpc::{connect, request, runtime, write_blob};
use berth_integration::images::{test_images, TestImages, BUSYBOX, MULTILAYER};
use berth_integration::Daemon;
use berth_proto::berth::services::unpack::v1::unpack_client::UnpackClient;
use berth_proto::berth::services::unpack::v1::{UnpackRequest, UnpackResponse};
use berth_proto::containerd::services::images::v1::images_client::ImagesClient;
use berth_proto::containerd::services::images::v1::{CreateImageRequest, DeleteImageRequest, Image};
use berth_proto::containerd::types::Descriptor;
use tonic::Code;

fn unpack(d: &Daemon, image: &str, snapshotter: &str) -> Result<UnpackResponse, tonic::Status> {
    runtime().block_on(async {
        let ch = connect(&d.socket).await;
        let req = UnpackRequest { image: image.into(), snapshotter: snapshotter.into(), platform: None };
        UnpackClient::new(ch).unpack(request("default", None, req)).await.map(|r| r.into_inner())
    })
}

fn import(d: &Daemon, set: &TestImages, key: &str) {
    let archive = set.path(&set.get(key).docker_archive);
    d.berthctl(&["image", "import", "--no-unpack", archive.to_str().unwrap()]).ok();
}

/// Committed snapshot names of a snapshotter, via berthctl.
fn committed(d: &Daemon, snapshotter: &str) -> Vec<String> {
    let out = d.berthctl(&["snapshots", "--snapshotter", snapshotter, "ls"]).ok().to_string();
    out.lines()
        .skip(1)
        .filter(|l| l.ends_with("Committed"))
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect()
}

/// Mounts a fresh active snapshot on `parent` at a temp dir, runs `check` on it, cleans up.
fn with_rootfs(d: &Daemon, snapshotter: &str, parent: &str, check: impl FnOnce(&Path)) {
    let key = format!("rootfs-{}", std::process::id());
    // A lease keeps the active snapshot from the collector that runs after other deletes.
    let lease = d.berthctl(&["leases", "create", "--expires", "0"]).ok().trim().to_string();
    d.berthctl(&["snapshots", "--snapshotter", snapshotter, "prepare", "--lease", &lease, &key, parent]).ok();
    let target = tempfile::tempdir().unwrap();
    // `ctr snapshots mounts` prints a ready mount command line; use it (the real client).
    let line = d
        .ctr(&["snapshots", "--snapshotter", snapshotter, "mounts", target.path().to_str().unwrap(), &key])
        .map(|r| r.ok().trim().to_string());
    if let Some(line) = line {
        let st = std::process::Command::new("sh").arg("-c").arg(&line).status().unwrap();
        assert!(st.success(), "{line}");
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(target.path())));
        let _ = std::process::Command::new("umount").arg(target.path()).status();
        d.berthctl(&["snapshots", "--snapshotter", snapshotter, "rm", &key]).ok();
        d.berthctl(&["leases", "rm", &lease]).ok();
        if let Err(p) = result {
            std::panic::resume_unwind(p);
        }
    }
}

fn check_multilayer_tree(root: &Path) {
    assert!(root.join("bin/busybox").is_file(), "busybox from layer 1");
    assert_eq!(std::fs::read_to_string(root.join("data/keep")).unwrap(), "kept by the upper layers\n");
    assert!(!root.join("data/gone").exists(), "whiteout hides the lower file");
    let dir: Vec<_> = std::fs::read_dir(root.join("data/dir")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(dir, ["c"], "opaque directory shows only its own files");
    assert_eq!(std::fs::read_link(root.join("data/link")).unwrap(), Path::new("keep"));
    assert_eq!(std::fs::read_to_string(root.join("data/new")).unwrap(), "added by the third layer\n");
}

#[test]
fn parallel_overlay_unpack_whiteouts_and_reuse() {
    let Some(set) = test_images() else { return };
    let d = Daemon::start();
    import(&d, set, "multilayer");
    let first = unpack(&d, MULTILAYER, "overlayfs").unwrap();
    assert_eq!((first.layers, first.extracted), (3, 3));
    let names = committed(&d, "overlayfs");
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.contains(&first.chain_id));
    with_rootfs(&d, "overlayfs", &first.chain_id, check_multilayer_tree);

    // Unpacked layers are reused: nothing extracted again, also by another image sharing the base.
    assert_eq!(unpack(&d, MULTILAYER, "").unwrap().extracted, 0, "default snapshotter is overlayfs");
    import(&d, set, "busybox");
    let bb = unpack(&d, BUSYBOX, "overlayfs").unwrap();
    assert_eq!(bb.extracted, 0, "busybox's only layer is multilayer's base");
    assert_eq!(committed(&d, "overlayfs").len(), 3);
}

#[test]
fn native_unpack_applies_deletions() {
    let Some(set) = test_images() else { return };
    let d = Daemon::start();
    import(&d, set, "multilayer");
    let out = unpack(&d, MULTILAYER, "native").unwrap();
    assert_eq!(out.extracted, 3);
    with_rootfs(&d, "native", &out.chain_id, check_multilayer_tree);
}

#[test]
fn concurrent_unpacks_of_images_sharing_layers_extract_each_once() {
    let Some(set) = test_images() else { return };
    let d = Daemon::start();
    import(&d, set, "multilayer");
    import(&d, set, "busybox");
    let results: Vec<UnpackResponse> = std::thread::scope(|s| {
        let handles: Vec<_> = [MULTILAYER, BUSYBOX, MULTILAYER, BUSYBOX]
            .into_iter()
            .map(|img| {
                let d = &d;
                s.spawn(move || unpack(d, img, "overlayfs").unwrap())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let extracted: u32 = results.iter().map(|r| r.extracted).sum();
    assert_eq!(extracted, 3, "each of the 3 distinct chains extracted exactly once: {results:?}");
    assert_eq!(committed(&d, "overlayfs").len(), 3);
}

#[test]
fn gc_removes_snapshots_with_the_image() {
    let Some(set) = test_images() else { return };
    let d = Daemon::start();
    import(&d, set, "multilayer");
    unpack(&d, MULTILAYER, "overlayfs").unwrap();
    d.berthctl(&["gc"]).ok();
    assert_eq!(committed(&d, "overlayfs").len(), 3, "the config's gc.ref.snapshot label keeps them");
    d.berthctl(&["image", "rm", "--sync", MULTILAYER]).ok();
    assert!(committed(&d, "overlayfs").is_empty(), "{:?}", committed(&d, "overlayfs"));
    let dirs = std::fs::read_dir(d.root.join("snapshots/overlayfs/snapshots")).map(|r| r.count()).unwrap_or(0);
    assert_eq!(dirs, 0, "snapshot directories removed too");
}

#[test]
fn layer_not_matching_its_diff_id_commits_nothing() {
    let Some(set) = test_images() else { return };
    let d = Daemon::start();
    import(&d, set, "busybox");
    let bb = set.get("busybox").host();
    runtime().block_on(async {
        let ch = connect(&d.socket).await;
        // Same layer, config claiming another diff_id.
        let wrong = format!("sha256:{}", "0".repeat(64));
        let config = format!(r#"{{"architecture":"{}","os":"linux","rootfs":{{"type":"layers","diff_ids":["{wrong}"]}}}}"#, berth_integration::images::host_platform().1);
        let config_digest = write_blob(&ch, "default", None, config.as_bytes(), &[]).await;
        let layer = &bb.layers[0].blob;
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"{}","digest":"{}","size":{}}}]}}"#,
            config.len(),
            layer.media_type,
            layer.digest,
            layer.size
        );
        let manifest_digest = write_blob(&ch, "default", None, manifest.as_bytes(), &[]).await;
        let image = Image {
            name: "bad".into(),
            labels: HashMap::new(),
            target: Some(Descriptor {
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                digest: manifest_digest,
                size: manifest.len() as i64,
                annotations: HashMap::new(),
            }),
            created_at: None,
            updated_at: None,
        };
        ImagesClient::new(ch.clone()).create(request("default", None, CreateImageRequest { image: Some(image), source_date_epoch: None })).await.unwrap();
        let err = UnpackClient::new(ch.clone())
            .unpack(request("default", None, UnpackRequest { image: "bad".into(), snapshotter: "overlayfs".into(), platform: None }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
        assert!(err.message().contains("diff_id"), "{err}");
        let missing = UnpackClient::new(ch.clone())
            .unpack(request("default", None, UnpackRequest { image: "nope".into(), snapshotter: "".into(), platform: None }))
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound);
        let bad_sn = UnpackClient::new(ch.clone())
            .unpack(request("default", None, UnpackRequest { image: "bad".into(), snapshotter: "zfs".into(), platform: None }))
            .await
            .unwrap_err();
        assert_eq!(bad_sn.code(), Code::InvalidArgument);
        ImagesClient::new(ch).delete(request("default", None, DeleteImageRequest { name: "bad".into(), sync: false })).await.unwrap();
    });
    assert!(committed(&d, "overlayfs").is_empty(), "no half-committed snapshot");
    let staged = std::fs::read_dir(d.root.join("snapshots/overlayfs/snapshots")).map(|r| r.count()).unwrap_or(0);
    assert_eq!(staged, 0, "staged directories removed");
}

#[test]
fn ctr_import_unpacks_through_snapshots_and_diff_services() {
    let Some(set) = test_images() else { return };
    let d = Daemon::start();
    let archive = set.path(&set.get("multilayer").docker_archive);
    let Some(out) = d.ctr(&["images", "import", archive.to_str().unwrap()]) else { return };
    assert!(out.ok().contains("unpacking docker.io/berth/multilayer:latest"), "{}", out.stdout);
    let names = committed(&d, "overlayfs");
    assert_eq!(names.len(), 3, "{names:?}");
    // Our unpacker agrees with containerd's client on chain IDs: nothing left to extract.
    let ours = unpack(&d, MULTILAYER, "overlayfs").unwrap();
    assert_eq!(ours.extracted, 0);
    assert!(names.contains(&ours.chain_id));
    with_rootfs(&d, "overlayfs", &ours.chain_id, check_multilayer_tree);
}

#[test]
fn without_overlayfs_import_unpacks_into_native() {
    let Some(set) = test_images() else { return };
    let d = Daemon::start_with(berth_integration::DaemonOptions {
        config: Some("version = 1\ndisabled_plugins = [\"io.berth.snapshotter.v1.overlayfs\"]\n".into()),
        ..Default::default()
    });
    let archive = set.path(&set.get("busybox").docker_archive);
    let out = d.berthctl(&["image", "import", archive.to_str().unwrap()]);
    assert!(out.ok().contains(BUSYBOX), "{}", out.stdout);
    assert_eq!(committed(&d, "native").len(), 1);
}
