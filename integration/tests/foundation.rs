//! Foundation: berthd start-up and shutdown, the socket, config, plugins, version,
//! introspection and namespaces — through berthctl, Debian's ctr and a reflection client.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use berth_integration::{bin, run, Daemon, DaemonOptions};

#[test]
fn version_reports_server_and_persisted_uuid() {
    let d = Daemon::start();
    let out = d.berthctl(&["version"]).ok().to_string();
    assert!(out.contains("Server:"), "{out}");
    assert!(out.contains(&format!("Version:  {}", env!("CARGO_PKG_VERSION"))), "{out}");
    let uuid = std::fs::read_to_string(d.root.join("uuid")).unwrap();
    assert!(out.contains(uuid.trim()), "uuid {uuid} not in {out}");
}

#[test]
fn uuid_and_namespaces_survive_restart() {
    let keep = tempfile::tempdir().unwrap();
    let opts = DaemonOptions { root: Some(keep.path().join("root")), ..Default::default() };
    let mut d = Daemon::start_with(opts.clone());
    d.berthctl(&["namespaces", "create", "kept", "team=infra"]).ok();
    let first = d.berthctl(&["version"]).ok().to_string();
    assert!(d.stop().success());
    let d = Daemon::start_with(opts);
    assert_eq!(d.berthctl(&["version"]).ok(), first);
    assert!(d.berthctl(&["ns", "ls"]).ok().contains("team=infra"));
}

#[test]
fn socket_is_root_only_and_removed_on_sigterm() {
    let mut d = Daemon::start();
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    assert!(d.stop().success(), "graceful exit code");
    assert!(!d.socket.exists(), "socket left behind");
    assert!(d.log().contains("shutting down"), "{}", d.log());
}

#[test]
fn sigint_stops_gracefully_too() {
    let mut d = Daemon::start();
    assert!(d.stop_with(libc::SIGINT).success());
    assert!(d.log().contains("SIGINT"), "{}", d.log());
}

#[test]
fn second_daemon_on_same_root_fails_clearly() {
    let d = Daemon::start();
    let other_socket = d.dir().join("other.sock");
    let out = Daemon::start_failing(DaemonOptions {
        root: Some(d.root.clone()),
        socket: Some(other_socket.clone()),
        ..Default::default()
    });
    let err = out.err();
    assert!(err.contains("already using root"), "{err}");
    assert!(err.contains(&d.pid().to_string()), "names the holder: {err}");
    assert!(!other_socket.exists());
    // The first daemon is unharmed.
    d.berthctl(&["version"]).ok();
}

#[test]
fn live_socket_is_not_stolen_but_stale_one_is_replaced() {
    let d = Daemon::start();
    let out = Daemon::start_failing(DaemonOptions { socket: Some(d.socket.clone()), ..Default::default() });
    assert!(out.err().contains("already listening"), "{}", out.stderr);
    d.berthctl(&["version"]).ok();

    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap()); // left behind, nobody listening
    let d2 = Daemon::start_with(DaemonOptions { socket: Some(stale), ..Default::default() });
    d2.berthctl(&["version"]).ok();
}

#[test]
fn berthctl_without_daemon_explains() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("none.sock");
    let out = run(std::process::Command::new(bin("berthctl")).arg("--address").arg(&sock).arg("version"));
    let err = out.err();
    assert!(err.contains(&format!("cannot connect to berthd at {}: is it running?", sock.display())), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn plugins_ls_lists_every_plugin_ok() {
    let d = Daemon::start();
    let out = d.berthctl(&["plugins", "ls"]).ok().to_string();
    let mut lines = out.lines();
    let header: Vec<_> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["TYPE", "ID", "PLATFORMS", "STATUS"]);
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    for (ty, id) in [
        ("io.berth.metadata.v1", "sled"),
        ("io.berth.grpc.v1", "version"),
        ("io.berth.grpc.v1", "introspection"),
        ("io.berth.grpc.v1", "namespaces"),
    ] {
        let row = rows.iter().find(|r| r[0] == ty && r[1] == id).unwrap_or_else(|| panic!("{ty} {id} missing:\n{out}"));
        assert_eq!(row.last(), Some(&"ok"), "{out}");
    }
    let only = d.berthctl(&["plugins", "ls", "-q", "type==io.berth.metadata.v1"]).ok().to_string();
    assert_eq!(only.trim(), "io.berth.metadata.v1.sled");
    let either = d.berthctl(&["plugins", "ls", "-q", "id==version", "id==namespaces"]).ok().to_string();
    assert_eq!(either.lines().count(), 2, "{either}");
    let bad = d.berthctl(&["plugins", "ls", "type=="]);
    assert!(bad.err().contains("invalid argument"), "{}", bad.stderr);
    let detailed = d.berthctl(&["plugins", "ls", "-d", "id==sled"]).ok().to_string();
    assert!(detailed.contains(&format!("path={}", d.root.join("meta.sled").display())), "{detailed}");
}

#[test]
fn disabled_plugin_skips_its_dependants_with_reasons() {
    let d = Daemon::start_with(DaemonOptions {
        config: Some("version = 1\ndisabled_plugins = [\"sled\"]\n".into()),
        ..Default::default()
    });
    let out = d.berthctl(&["plugins", "ls", "-d"]).ok().to_string();
    assert!(out.contains("Reason:        disabled in config"), "{out}");
    assert!(out.contains("requires io.berth.metadata.v1, but no plugin of that type is running"), "{out}");
    let table = d.berthctl(&["plugins", "ls"]).ok().to_string();
    let ns_row = table.lines().find(|l| l.contains("namespaces")).unwrap();
    assert!(ns_row.ends_with("skip"), "{table}");
    // The skipped service is not served: a clear "not implemented" error.
    let err = d.berthctl(&["ns", "ls"]);
    assert!(
        err.err().to_lowercase().contains("unimplemented") || err.stderr.contains("not implemented"),
        "{}",
        err.stderr
    );
}

#[test]
fn namespaces_through_berthctl() {
    let d = Daemon::start();
    d.berthctl(&["namespaces", "create", "team-a", "owner=alice", "tier=gold"]).ok();
    d.berthctl(&["ns", "create", "team-b"]).ok();
    let ls = d.berthctl(&["ns", "ls"]).ok().to_string();
    assert!(ls.lines().any(|l| l.starts_with("team-a") && l.ends_with("owner=alice,tier=gold")), "{ls}");
    assert!(ls.lines().any(|l| l.trim() == "team-b"), "{ls}");
    assert_eq!(d.berthctl(&["ns", "ls", "-q"]).ok(), "team-a\nteam-b\n");

    d.berthctl(&["ns", "label", "team-a", "tier=", "zone=eu"]).ok();
    assert_eq!(d.berthctl(&["ns", "label", "team-a"]).ok(), "owner=alice\nzone=eu\n");

    let dup = d.berthctl(&["ns", "create", "team-b"]);
    assert!(dup.err().contains("namespace \"team-b\": already exists"), "{}", dup.stderr);
    let bad = d.berthctl(&["ns", "create", "Bad/Name"]);
    assert!(bad.err().contains("invalid argument"), "{}", bad.stderr);
    let bad_label = d.berthctl(&["ns", "create", "x", "nolabel"]);
    assert!(bad_label.err().contains("KEY=VALUE"), "{}", bad_label.stderr);

    let rm = d.berthctl(&["ns", "rm", "team-b", "ghost"]);
    assert!(rm.err().contains("namespace \"ghost\": not found"), "{}", rm.stderr);
    assert_eq!(rm.stdout, "team-b\n", "existing one still removed");
    assert_eq!(d.berthctl(&["ns", "ls", "-q"]).ok(), "team-a\n");
    let missing = d.berthctl(&["ns", "label", "ghost", "a=b"]);
    assert!(missing.err().contains("not found"), "{}", missing.stderr);
}

#[test]
fn ctr_version_plugins_and_namespaces() {
    let d = Daemon::start();
    let Some(version) = d.ctr(&["version"]) else { return };
    let out = version.ok().to_string();
    assert!(out.contains(&format!("Version:  {}", env!("CARGO_PKG_VERSION"))), "{out}");
    let uuid = std::fs::read_to_string(d.root.join("uuid")).unwrap();
    assert!(out.contains(uuid.trim()), "{out}");

    let plugins = d.ctr(&["plugins", "ls"]).unwrap().ok().to_string();
    for id in ["sled", "version", "introspection", "namespaces"] {
        let row =
            plugins.lines().find(|l| l.split_whitespace().nth(1) == Some(id)).unwrap_or_else(|| panic!("{plugins}"));
        assert_eq!(row.split_whitespace().last(), Some("ok"), "{plugins}");
    }
    let filtered = d.ctr(&["plugins", "ls", "type==io.berth.metadata.v1"]).unwrap().ok().to_string();
    assert_eq!(filtered.lines().count(), 2, "header and one row: {filtered}");

    d.ctr(&["namespaces", "create", "from-ctr", "a=1"]).unwrap().ok();
    d.ctr(&["namespaces", "label", "from-ctr", "b=2"]).unwrap().ok();
    d.ctr(&["namespaces", "label", "from-ctr", "a="]).unwrap().ok();
    let ls = d.ctr(&["namespaces", "ls"]).unwrap().ok().to_string();
    assert!(ls.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["from-ctr", "b=2"]), "{ls}");
    // ctr and berthctl see the same data.
    assert_eq!(d.berthctl(&["ns", "label", "from-ctr"]).ok(), "b=2\n");
    let dup = d.ctr(&["namespaces", "create", "from-ctr"]).unwrap();
    assert!(dup.err().contains("already exists"), "{}", dup.stderr);
    d.ctr(&["namespaces", "remove", "from-ctr"]).unwrap().ok();
    let ls = d.ctr(&["namespaces", "ls", "-q"]).unwrap().ok().to_string();
    assert!(!ls.contains("from-ctr"), "{ls}");
    // ctr treats NotFound on remove as done (it maps our gRPC code back to errdefs.ErrNotFound);
    // a wrong code would make it fail here.
    let gone = d.ctr(&["namespaces", "remove", "from-ctr"]).unwrap();
    assert_eq!(gone.ok(), "from-ctr\n");
    let bad = d.ctr(&["namespaces", "create", "bad/name"]).unwrap();
    assert!(bad.err().contains("invalid argument"), "{}", bad.stderr);
}

#[test]
fn config_default_is_complete_and_loadable() {
    let out = run(std::process::Command::new(bin("berthd")).args(["config", "default"]));
    let text = out.ok().to_string();
    for key in [
        "version = 1",
        "root = \"/var/lib/berth\"",
        "[grpc]",
        "address = \"/run/berth/berth.sock\"",
        "[debug]",
        "[plugins.\"io.berth.metadata.v1.sled\"]",
        "sync_writes = true",
    ] {
        assert!(text.contains(key), "{key} missing from:\n{text}");
    }
    // The printed default, with our temp paths, starts a daemon.
    let d = Daemon::start_with(DaemonOptions { config: Some(text), ..Default::default() });
    d.berthctl(&["version"]).ok();
}

#[test]
fn bad_config_fails_clearly() {
    let out = Daemon::start_failing(DaemonOptions {
        config: Some("version = 1\nroots = \"/x\"\n".into()),
        ..Default::default()
    });
    assert!(out.err().contains("unknown field `roots`"), "{}", out.stderr);
    let out = Daemon::start_failing(DaemonOptions {
        config: Some("version = 1\n[plugins.\"io.berth.nope.v1.x\"]\na = 1\n".into()),
        ..Default::default()
    });
    assert!(out.err().contains("names no plugin"), "{}", out.stderr);
}

#[test]
fn invalid_plugin_config_marks_that_plugin_as_error() {
    let d = Daemon::start_with(DaemonOptions {
        config: Some("version = 1\n[plugins.\"io.berth.metadata.v1.sled\"]\nsync_writes = \"yes\"\n".into()),
        ..Default::default()
    });
    let out = d.berthctl(&["plugins", "ls", "-d", "id==sled"]).ok().to_string();
    assert!(out.contains("Status:        error"), "{out}");
    assert!(out.contains("invalid config"), "{out}");
    let table = d.berthctl(&["plugins", "ls"]).ok().to_string();
    assert!(table.lines().any(|l| l.contains("namespaces") && l.ends_with("skip")), "{table}");
}

fn reflection_services(socket: &Path) -> Vec<String> {
    use hyper_util::rt::TokioIo;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let socket = socket.to_path_buf();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let channel = tonic::transport::Endpoint::from_static("http://berthd")
            .connect_with_connector(tower::service_fn(move |_| {
                let s = socket.clone();
                async move { tokio::net::UnixStream::connect(s).await.map(TokioIo::new) }
            }))
            .await
            .unwrap();
        let mut client = ServerReflectionClient::new(channel);
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = client.server_reflection_info(tokio_stream_once(req)).await.unwrap().into_inner();
        let resp = stream.message().await.unwrap().unwrap();
        match resp.message_response.unwrap() {
            MessageResponse::ListServicesResponse(l) => l.service.into_iter().map(|s| s.name).collect(),
            other => panic!("unexpected reflection response {other:?}"),
        }
    })
}

fn reflection_services_v1alpha(socket: &Path) -> Vec<String> {
    use hyper_util::rt::TokioIo;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;

    let socket = socket.to_path_buf();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let channel = tonic::transport::Endpoint::from_static("http://berthd")
            .connect_with_connector(tower::service_fn(move |_| {
                let s = socket.clone();
                async move { tokio::net::UnixStream::connect(s).await.map(TokioIo::new) }
            }))
            .await
            .unwrap();
        let mut client = ServerReflectionClient::new(channel);
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = client.server_reflection_info(tokio_stream_once(req)).await.unwrap().into_inner();
        let resp = stream.message().await.unwrap().unwrap();
        match resp.message_response.unwrap() {
            MessageResponse::ListServicesResponse(l) => l.service.into_iter().map(|s| s.name).collect(),
            other => panic!("unexpected reflection response {other:?}"),
        }
    })
}

fn tokio_stream_once<T: Send + 'static>(item: T) -> impl tonic::IntoStreamingRequest<Message = T> {
    tokio_stream::once(item)
}

#[test]
fn reflection_lists_served_services() {
    // The diff service is disabled: reflection must not advertise what is not served.
    let d = Daemon::start_with(DaemonOptions {
        config: Some("version = 1\ndisabled_plugins = [\"io.berth.grpc.v1.diff\"]\n".into()),
        ..Default::default()
    });
    let services = reflection_services(&d.socket);
    for s in [
        "containerd.services.version.v1.Version",
        "containerd.services.introspection.v1.Introspection",
        "containerd.services.namespaces.v1.Namespaces",
        "containerd.services.content.v1.Content",
    ] {
        assert!(services.iter().any(|x| x == s), "{s} not in {services:?}");
    }
    assert!(!services.iter().any(|x| x.contains("Diff")), "unserved services are not advertised: {services:?}");
    let mut alpha = reflection_services_v1alpha(&d.socket);
    let mut v1 = services.clone();
    alpha.sort();
    v1.sort();
    assert_eq!(alpha, v1, "v1alpha and v1 reflection agree");
}
