//! Containers service: records through gRPC, Debian's `ctr containers create|ls|info|rm` on an
//! imported image, `berthctl container ls|info|rm`, events, update field paths, error codes,
//! and the container as a GC root of its snapshot.

use std::collections::HashMap;
use std::path::Path;

use berth_integration::images::{test_images, BUSYBOX};
use berth_integration::Daemon;
use berth_proto::containerd::services::containers::v1::containers_client::ContainersClient;
use berth_proto::containerd::services::containers::v1::*;
use hyper_util::rt::TokioIo;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

async fn connect(socket: &Path) -> Channel {
    let socket = socket.to_path_buf();
    Endpoint::from_static("http://berthd")
        .connect_with_connector(tower::service_fn(move |_| {
            let s = socket.clone();
            async move { tokio::net::UnixStream::connect(s).await.map(TokioIo::new) }
        }))
        .await
        .expect("connect to berthd")
}

fn request<T>(ns: &str, _lease: Option<&str>, msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert("containerd-namespace", MetadataValue::try_from(ns).expect("namespace"));
    req
}

const SPEC_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

fn container(id: &str) -> Container {
    Container {
        id: id.into(),
        labels: HashMap::from([("team".to_string(), "a".to_string())]),
        image: BUSYBOX.into(),
        runtime: Some(container::Runtime { name: "io.containerd.runc.v2".into(), options: None }),
        spec: Some(prost_types::Any { type_url: SPEC_URL.into(), value: br#"{"ociVersion":"1.1.0"}"#.to_vec() }),
        ..Default::default()
    }
}

fn create(d: &Daemon, c: Container) -> Result<Container, tonic::Status> {
    runtime().block_on(async {
        let mut svc = ContainersClient::new(connect(&d.socket).await);
        let r = svc.create(request("default", None, CreateContainerRequest { container: Some(c) })).await?;
        Ok(r.into_inner().container.unwrap_or_default())
    })
}

#[test]
fn grpc_create_get_update_list_delete_and_errors() {
    let d = Daemon::start();
    let created = create(&d, container("c1")).unwrap();
    assert!(created.created_at.is_some());
    assert_eq!(create(&d, container("c1")).unwrap_err().code(), Code::AlreadyExists);

    let mut bad = container("c2");
    bad.spec.as_mut().unwrap().value = b"{not json".to_vec();
    assert_eq!(create(&d, bad).unwrap_err().code(), Code::InvalidArgument);
    let mut bad = container("c2");
    bad.spec = None;
    assert_eq!(create(&d, bad).unwrap_err().code(), Code::InvalidArgument);
    let mut bad = container("c2");
    bad.runtime = None;
    assert_eq!(create(&d, bad).unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(create(&d, container("Bad Id")).unwrap_err().code(), Code::InvalidArgument);

    runtime().block_on(async {
        let mut svc = ContainersClient::new(connect(&d.socket).await);
        let got = svc.get(request("default", None, GetContainerRequest { id: "c1".into() })).await.unwrap();
        assert_eq!(got.into_inner().container.unwrap().labels["team"], "a");
        let err = svc.get(request("other", None, GetContainerRequest { id: "c1".into() })).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "namespaces are apart");

        let mut u = container("c1");
        u.labels = HashMap::from([("new".to_string(), "1".to_string())]);
        u.image = "ignored".into();
        let mask = prost_types::FieldMask { paths: vec!["labels.new".into()] };
        let req = UpdateContainerRequest { container: Some(u.clone()), update_mask: Some(mask) };
        let up = svc.update(request("default", None, req)).await.unwrap().into_inner().container.unwrap();
        assert_eq!(up.labels.len(), 2);
        assert_eq!(up.image, BUSYBOX);
        let mut imm = u.clone();
        imm.snapshotter = "native".into();
        let req = UpdateContainerRequest { container: Some(imm), update_mask: None };
        assert_eq!(svc.update(request("default", None, req)).await.unwrap_err().code(), Code::InvalidArgument);

        let req = CreateContainerRequest { container: Some(container("c2")) };
        svc.create(request("default", None, req)).await.unwrap();
        let list = svc
            .list(request("default", None, ListContainersRequest { filters: vec!["labels.new==1".into()] }))
            .await
            .unwrap()
            .into_inner()
            .containers;
        assert_eq!(list.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["c1"]);
        let mut stream =
            svc.list_stream(request("default", None, ListContainersRequest::default())).await.unwrap().into_inner();
        let mut ids = Vec::new();
        while let Some(m) = stream.message().await.unwrap() {
            ids.push(m.container.unwrap().id);
        }
        assert_eq!(ids, ["c1", "c2"]);

        svc.delete(request("default", None, DeleteContainerRequest { id: "c2".into() })).await.unwrap();
        let err = svc.delete(request("default", None, DeleteContainerRequest { id: "c2".into() })).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
    });

    let ls = d.berthctl(&["container", "ls"]).ok().to_string();
    assert!(ls.contains("c1") && ls.contains("io.containerd.runc.v2") && !ls.contains("c2"), "{ls}");
    let info: serde_json::Value = serde_json::from_str(d.berthctl(&["container", "info", "c1"]).ok()).unwrap();
    assert_eq!(info["Spec"]["ociVersion"], "1.1.0");
    assert_eq!(info["Labels"]["new"], "1");
    d.berthctl(&["container", "rm", "c1"]).ok();
    assert!(d.berthctl(&["container", "rm", "c1"]).err().contains("not found"));
    assert_eq!(d.berthctl(&["container", "ls", "-q"]).ok().trim(), "");
}

#[test]
fn events_for_create_update_delete() {
    let d = Daemon::start();
    let mut cmd = std::process::Command::new(berth_integration::bin("berthctl"));
    cmd.arg("--address").arg(&d.socket).args(["events", "topic~=/containers/"]);
    let mut sub = cmd.stdout(std::process::Stdio::piped()).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    create(&d, container("ev")).unwrap();
    d.berthctl(&["container", "rm", "ev"]).ok();
    std::thread::sleep(std::time::Duration::from_millis(300));
    sub.kill().unwrap();
    let out = sub.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/containers/create") && text.contains("/containers/delete"), "{text}");
}

#[test]
fn ctr_containers_on_an_imported_image_and_gc_keeps_the_snapshot() {
    let Some(set) = test_images() else { return };
    let d = Daemon::start();
    let archive = set.path(&set.get("busybox").docker_archive);
    d.berthctl(&["image", "import", archive.to_str().unwrap()]).ok();
    let Some(r) = d.ctr(&["containers", "create", BUSYBOX, "ctr1"]) else { return };
    r.ok();
    let err = d.ctr(&["containers", "create", BUSYBOX, "ctr1"]).unwrap().err().to_string();
    assert!(err.contains("already exists"), "{err}");

    let ls = d.ctr(&["containers", "ls"]).unwrap().ok().to_string();
    assert!(ls.contains("ctr1") && ls.contains(BUSYBOX) && ls.contains("io.containerd.runc.v2"), "{ls}");
    let info: serde_json::Value = serde_json::from_str(d.ctr(&["containers", "info", "ctr1"]).unwrap().ok()).unwrap();
    assert_eq!(info["SnapshotKey"], "ctr1");
    assert_eq!(info["Snapshotter"], "overlayfs");
    assert!(info["Spec"]["process"]["args"].to_string().contains("sh"), "{info}");
    // The same record through berthctl.
    let info: serde_json::Value = serde_json::from_str(d.berthctl(&["container", "info", "ctr1"]).ok()).unwrap();
    assert_eq!(info["Spec"]["root"]["path"], "rootfs");

    // The container keeps its active snapshot through a collection.
    d.berthctl(&["gc"]).ok();
    let snaps = d.berthctl(&["snapshots", "ls"]).ok().to_string();
    assert!(snaps.lines().any(|l| l.starts_with("ctr1 ") && l.contains("Active")), "{snaps}");

    d.ctr(&["containers", "rm", "ctr1"]).unwrap().ok();
    assert!(!d.ctr(&["containers", "ls", "-q"]).unwrap().ok().contains("ctr1"));
    // ctr removes the snapshot itself (containers delete --cleanup-snapshot is its default).
    let snaps = d.berthctl(&["snapshots", "ls"]).ok().to_string();
    assert!(!snaps.lines().any(|l| l.starts_with("ctr1 ")), "{snaps}");
}
