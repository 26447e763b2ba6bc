//! Images, leases, events and garbage collection against a real berthd: through berthctl,
//! Debian's ctr, and direct gRPC calls where neither exposes the behaviour.

use std::collections::HashMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use berth_integration::grpc::{connect, request, runtime, write_blob};
use berth_integration::{bin, Daemon};
use berth_proto::berth::services::gc::v1::{gc_client::GcClient, CollectRequest};
use berth_proto::containerd::services::content::v1::content_client::ContentClient;
use berth_proto::containerd::services::content::v1::InfoRequest;
use berth_proto::containerd::services::images::v1::images_client::ImagesClient;
use berth_proto::containerd::services::images::v1::*;
use berth_proto::containerd::types::Descriptor;
use tonic::Code;

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

async fn blob_exists(ch: &tonic::transport::Channel, ns: &str, digest: &str) -> bool {
    match ContentClient::new(ch.clone()).info(request(ns, None, InfoRequest { digest: digest.into() })).await {
        Ok(_) => true,
        Err(s) if s.code() == Code::NotFound => false,
        Err(s) => panic!("info {digest}: {s}"),
    }
}

fn blob_files(d: &Daemon) -> usize {
    std::fs::read_dir(d.root.join("content/blobs/sha256")).map(|r| r.count()).unwrap_or(0)
}

fn image(name: &str, digest: &str, size: usize) -> Image {
    Image {
        name: name.into(),
        labels: [("team".to_string(), "infra".to_string())].into(),
        target: Some(Descriptor {
            media_type: MANIFEST.into(),
            digest: digest.into(),
            size: size as i64,
            annotations: HashMap::new(),
        }),
        created_at: None,
        updated_at: None,
    }
}

#[test]
fn images_service_crud_filters_and_wire_errors() {
    let d = Daemon::start();
    runtime().block_on(async {
        let ch = connect(&d.socket).await;
        let mut images = ImagesClient::new(ch.clone());
        let digest = format!("sha256:{}", "a".repeat(64));
        for name in ["docker.io/library/busybox:latest", "docker.io/library/alpine:3"] {
            images
                .create(request(
                    "default",
                    None,
                    CreateImageRequest { image: Some(image(name, &digest, 10)), source_date_epoch: None },
                ))
                .await
                .unwrap();
        }
        let dup = images
            .create(request(
                "default",
                None,
                CreateImageRequest {
                    image: Some(image("docker.io/library/alpine:3", &digest, 10)),
                    source_date_epoch: None,
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(dup.code(), Code::AlreadyExists);
        let got = images
            .get(request("default", None, GetImageRequest { name: "docker.io/library/alpine:3".into() }))
            .await
            .unwrap()
            .into_inner();
        let got = got.image.unwrap();
        assert!(got.created_at.is_some() && got.updated_at.is_some());
        assert_eq!(got.target.unwrap().digest, digest);

        let list = |filters: &[&str]| {
            let mut images = images.clone();
            let filters = filters.iter().map(|s| s.to_string()).collect();
            async move {
                let r =
                    images.list(request("default", None, ListImagesRequest { filters })).await.unwrap().into_inner();
                r.images.into_iter().map(|i| i.name).collect::<Vec<_>>()
            }
        };
        assert_eq!(list(&["name~=busybox"]).await, ["docker.io/library/busybox:latest"]);
        assert_eq!(list(&[r#"labels."team"==infra"#]).await.len(), 2);
        assert_eq!(list(&["name==nope", "name==docker.io/library/alpine:3"]).await, ["docker.io/library/alpine:3"]);
        let bad = images
            .list(request("default", None, ListImagesRequest { filters: vec!["name==".into()] }))
            .await
            .unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument);

        // Other namespaces see nothing.
        let other =
            images.list(request("other", None, ListImagesRequest { filters: vec![] })).await.unwrap().into_inner();
        assert!(other.images.is_empty());

        let mut upd = image("docker.io/library/alpine:3", &digest, 10);
        upd.labels = [("tier".to_string(), "gold".to_string())].into();
        let out = images
            .update(request(
                "default",
                None,
                UpdateImageRequest {
                    image: Some(upd),
                    update_mask: Some(prost_types::FieldMask { paths: vec!["labels.tier".into()] }),
                    source_date_epoch: None,
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .image
            .unwrap();
        assert_eq!(out.labels.len(), 2);

        let mut bad = image("x", "sha256:zz", 1);
        bad.target.as_mut().unwrap().digest = "sha256:zz".into();
        let err = images
            .create(request("default", None, CreateImageRequest { image: Some(bad), source_date_epoch: None }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
        let no_ns = images.list(tonic::Request::new(ListImagesRequest { filters: vec![] })).await.unwrap_err();
        assert_eq!(no_ns.code(), Code::FailedPrecondition);
        let bad_ns = images.list(request("bad..ns", None, ListImagesRequest { filters: vec![] })).await.unwrap_err();
        assert_eq!(bad_ns.code(), Code::InvalidArgument);

        images
            .delete(request(
                "default",
                None,
                DeleteImageRequest { name: "docker.io/library/alpine:3".into(), sync: true },
            ))
            .await
            .unwrap();
        let gone = images
            .delete(request(
                "default",
                None,
                DeleteImageRequest { name: "docker.io/library/alpine:3".into(), sync: false },
            ))
            .await
            .unwrap_err();
        assert_eq!(gone.code(), Code::NotFound);
    });
    // ctr sees the same images.
    if let Some(ls) = d.ctr(&["images", "ls", "-q"]) {
        assert_eq!(ls.ok().trim(), "docker.io/library/busybox:latest");
    }
    // A namespace holding an image cannot be removed.
    let rm = d.berthctl(&["ns", "rm", "default"]);
    assert!(rm.err().contains("must be empty, but it still has images"), "{}", rm.stderr);
}

#[test]
fn gc_keeps_what_images_and_leases_reference_and_frees_the_rest() {
    let d = Daemon::start();
    runtime().block_on(async {
        let ch = connect(&d.socket).await;
        // An image graph written within a lease, children found by label and by parsing.
        d.berthctl(&["leases", "create", "--id", "import"]).ok();
        let layer = write_blob(&ch, "default", Some("import"), b"layer bytes", &[]).await;
        let config = write_blob(&ch, "default", Some("import"), b"{\"architecture\":\"amd64\"}", &[]).await;
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":24}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":11}}]}}"#
        );
        let manifest_digest = write_blob(&ch, "default", Some("import"), manifest.as_bytes(), &[]).await;
        let orphan = write_blob(&ch, "default", Some("import"), b"nobody references me", &[]).await;
        let root = write_blob(&ch, "default", None, b"kept by a root label", &[("containerd.io/gc.root", "x")]).await;
        let unleased = write_blob(&ch, "default", None, b"written without a lease", &[]).await;
        ImagesClient::new(ch.clone())
            .create(request("default", None, CreateImageRequest { image: Some(image("img", &manifest_digest, manifest.len())), source_date_epoch: None }))
            .await
            .unwrap();

        // While the lease lives only the unleased, unreferenced blob goes.
        let stats = GcClient::new(ch.clone()).collect(request("default", None, CollectRequest {})).await.unwrap().into_inner();
        assert_eq!(stats.blobs_removed, 1, "{stats:?}");
        assert!(!blob_exists(&ch, "default", &unleased).await);
        assert!(blob_exists(&ch, "default", &orphan).await);

        // The lease ends: the orphan goes, the image graph and the root stay.
        let rm = d.berthctl(&["leases", "rm", "--sync", "import"]);
        assert_eq!(rm.ok(), "import\n");
        for kept in [&layer, &config, &manifest_digest, &root] {
            assert!(blob_exists(&ch, "default", kept).await, "{kept} collected");
        }
        assert!(!blob_exists(&ch, "default", &orphan).await);
        assert_eq!(blob_files(&d), 4);

        // Deleting the image (sync) frees its graph; berthctl gc then has nothing left to do.
        ImagesClient::new(ch.clone()).delete(request("default", None, DeleteImageRequest { name: "img".into(), sync: true })).await.unwrap();
        assert_eq!(blob_files(&d), 1, "only the gc.root blob remains");
    });
    let out = d.berthctl(&["gc"]).ok().to_string();
    assert!(out.starts_with("removed 0 blob(s), 0 B freed"), "{out}");
}

#[test]
fn blobs_shared_across_namespaces_live_until_the_last_reference() {
    let d = Daemon::start();
    runtime().block_on(async {
        let ch = connect(&d.socket).await;
        let a = write_blob(&ch, "ns-a", None, b"shared blob", &[("containerd.io/gc.root", "1")]).await;
        let b = write_blob(&ch, "ns-b", None, b"shared blob", &[("containerd.io/gc.root", "1")]).await;
        assert_eq!(a, b);
        assert_eq!(blob_files(&d), 1, "stored once on disk");
        d.berthctl(&["-n", "ns-a", "content", "rm", &a]).ok();
        d.berthctl(&["gc"]).ok();
        assert_eq!(blob_files(&d), 1, "ns-b still has it");
        assert!(!blob_exists(&ch, "ns-a", &a).await);
        assert!(blob_exists(&ch, "ns-b", &b).await);
        d.berthctl(&["-n", "ns-b", "content", "rm", &b]).ok();
        let out = d.berthctl(&["gc"]).ok().to_string();
        assert!(out.starts_with("removed 1 blob(s), 11 B freed"), "{out}");
        assert_eq!(blob_files(&d), 0);
    });
}

#[test]
fn expired_leases_are_collected() {
    let d = Daemon::start();
    runtime().block_on(async {
        let ch = connect(&d.socket).await;
        let lease = d.berthctl(&["leases", "create", "--expires", "1"]).ok().trim().to_string();
        assert!(!lease.is_empty(), "berthd generates an id");
        let blob = write_blob(&ch, "default", Some(&lease), b"short-lived", &[]).await;
        std::thread::sleep(Duration::from_millis(2100));
        let out = d.berthctl(&["gc"]).ok().to_string();
        assert!(out.contains("1 expired lease(s)"), "{out}");
        assert!(!blob_exists(&ch, "default", &blob).await);
        assert!(d.berthctl(&["leases", "ls", "-q"]).ok().is_empty());
    });
}

#[test]
fn leases_through_berthctl_and_ctr() {
    let d = Daemon::start();
    d.berthctl(&["leases", "create", "--id", "mine", "--expires", "0", "owner=me"]).ok();
    let ls = d.berthctl(&["leases", "ls"]).ok().to_string();
    assert!(ls.lines().any(|l| l.starts_with("mine") && l.ends_with("owner=me")), "{ls}");
    let dup = d.berthctl(&["leases", "create", "--id", "mine"]);
    assert!(dup.err().contains("already exists"), "{}", dup.stderr);
    let Some(created) = d.ctr(&["leases", "create", "--id", "from-ctr"]) else { return };
    assert_eq!(created.ok(), "from-ctr\n");
    let random = d.ctr(&["leases", "create"]).unwrap().ok().trim().to_string();
    assert!(!random.is_empty());
    let ls = d.ctr(&["leases", "ls"]).unwrap().ok().to_string();
    for id in ["mine", "from-ctr", random.as_str()] {
        assert!(ls.contains(id), "{id} missing: {ls}");
    }
    assert!(ls.contains("containerd.io/gc.expire"), "ctr's default expiry label is kept: {ls}");
    d.ctr(&["leases", "rm", "from-ctr", &random]).unwrap().ok();
    assert_eq!(d.berthctl(&["leases", "ls", "-q"]).ok(), "mine\n");
    let missing = d.ctr(&["leases", "rm", "nope"]).unwrap();
    assert!(missing.err().contains("not found"), "{}", missing.stderr);
}

/// Streams `berthctl events` (or `ctr events`) while `act` runs, then returns what it printed.
fn capture_events(cmd: &mut Command, act: impl FnOnce()) -> String {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn events");
    std::thread::sleep(Duration::from_millis(300)); // let the subscription start
    act();
    std::thread::sleep(Duration::from_millis(300));
    let _ = child.kill();
    let _ = child.wait();
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    out
}

#[test]
fn events_stream_to_berthctl_and_ctr_with_filters() {
    let d = Daemon::start();
    let act = || {
        d.berthctl(&["ns", "create", "ev1", "a=b"]).ok();
        d.berthctl(&["ns", "label", "ev1", "c=d"]).ok();
        d.berthctl(&["ns", "rm", "ev1"]).ok();
    };
    let all = capture_events(Command::new(bin("berthctl")).arg("--address").arg(&d.socket).arg("events"), act);
    let topics: Vec<_> = all.lines().filter_map(|l| l.split_whitespace().nth(2)).collect();
    assert_eq!(topics, ["/namespaces/create", "/namespaces/update", "/namespaces/delete"], "{all}");
    assert!(all.contains(r#"NamespaceCreate { name: "ev1""#), "{all}");

    let filtered = capture_events(
        Command::new(bin("berthctl")).arg("--address").arg(&d.socket).args(["events", "topic==/namespaces/delete"]),
        act,
    );
    assert_eq!(filtered.lines().count(), 1, "{filtered}");
    assert!(filtered.contains("/namespaces/delete"), "{filtered}");

    let Some(ctr) = berth_integration::external_tool("ctr") else { return };
    let out = capture_events(Command::new(ctr).arg("--address").arg(&d.socket).arg("events"), act);
    // ctr decodes our Any payloads with its own type registry.
    assert!(out.contains(r#"/namespaces/create {"name":"ev1","labels":{"a":"b"}}"#), "{out}");
    assert!(out.contains(r#"/namespaces/delete {"name":"ev1"}"#), "{out}");
}

#[test]
fn content_delete_publishes_an_event_and_frees_the_blob() {
    let d = Daemon::start();
    let digest = runtime().block_on(async {
        let ch = connect(&d.socket).await;
        write_blob(&ch, "default", None, b"to be deleted", &[("containerd.io/gc.root", "1")]).await
    });
    assert_eq!(blob_files(&d), 1);
    let out = capture_events(Command::new(bin("berthctl")).arg("--address").arg(&d.socket).arg("events"), || {
        d.berthctl(&["content", "rm", &digest]).ok();
    });
    assert!(out.contains("/content/delete"), "{out}");
    assert!(out.contains(&digest), "{out}");
    // The delete schedules a collection that removes the file shortly after.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while blob_files(&d) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(blob_files(&d), 0);
}
