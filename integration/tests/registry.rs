//! Pull and push against a real `docker-registry` on 127.0.0.1: plain HTTP, TLS with a CA made
//! at test time, htpasswd Basic auth, Bearer tokens, multi-platform indexes, mirrors, dropped
//! connections and bad input; and Debian's `ctr` pulling from the same registry into berthd.

use berth_integration::images::{test_images, TestImage, TestImages};
use berth_integration::registry::{Auth, Fault, FaultProxy, Registry, RegistryOptions};
use berth_integration::{Daemon, DaemonOptions, Run};

const OCI_ALL: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";

/// The digest `berthctl image pull|push` printed last.
fn printed_digest(r: &Run) -> String {
    r.ok().lines().rev().find_map(|l| l.strip_prefix("digest: ")).expect("digest line").trim().to_string()
}

/// Imports test image `key` (no unpack) and names it `host/repo:tag`; returns that name.
fn import_as(d: &Daemon, set: &TestImages, key: &str, name: &str) -> String {
    let img = set.get(key);
    d.berthctl(&["image", "import", "--no-unpack", "--all-platforms", set.path(&img.oci_archive).to_str().unwrap()])
        .ok();
    d.berthctl(&["image", "tag", &img.name, name]).ok();
    d.berthctl(&["image", "rm", &img.name]).ok();
    name.to_string()
}

/// Committed snapshots (default snapshotter).
fn committed(d: &Daemon) -> Vec<String> {
    let out = d.berthctl(&["snapshots", "ls"]).ok().to_string();
    out.lines()
        .skip(1)
        .filter(|l| l.ends_with("Committed"))
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect()
}

fn image_names(d: &Daemon) -> String {
    d.berthctl(&["image", "ls"]).ok().to_string()
}

/// Visible blobs (`content ls` digests).
fn blobs(d: &Daemon) -> Vec<String> {
    d.berthctl(&["content", "ls"])
        .ok()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect()
}

fn daemon_with(config: &str) -> Daemon {
    Daemon::start_with(DaemonOptions { config: Some(format!("version = 1\n{config}")), ..Default::default() })
}

/// Pushes test image `key` from `d` to `reg` as `repo:tag` and returns (name, pushed digest).
fn push(d: &Daemon, set: &TestImages, reg_host: &str, key: &str, repo: &str) -> (String, String) {
    let name = import_as(d, set, key, &format!("{reg_host}/{repo}:v1"));
    let r = d.berthctl(&["image", "push", &name]);
    (name, printed_digest(&r))
}

fn check_pulled(d: &Daemon, img: &TestImage, name: &str, r: &Run) {
    assert_eq!(printed_digest(r), img.target.digest, "{}", r.stdout);
    assert!(image_names(d).contains(name), "{}", image_names(d));
    let snaps = committed(d);
    assert_eq!(snaps.len(), img.host().layers.len(), "snapshots: {snaps:?}");
}

#[test]
fn push_remove_pull_round_trip_over_plain_http() {
    let Some(set) = test_images() else { return };
    let Some(reg) = Registry::start() else { return };
    let d = Daemon::start();
    let img = set.get("multilayer");
    let (name, pushed) = push(&d, set, &reg.host, "multilayer", "berth/multilayer");
    assert_eq!(pushed, img.target.digest);
    // The registry serves it under the tag.
    reg.curl(&[
        "-o",
        "/dev/null",
        "-H",
        &format!("Accept: {OCI_ALL}"),
        &format!("{}/v2/berth/multilayer/manifests/v1", reg.url()),
    ])
    .ok();

    d.berthctl(&["image", "rm", "--sync", &name]).ok();
    assert!(blobs(&d).is_empty(), "{:?}", blobs(&d));
    let r = d.berthctl(&["image", "pull", &name]);
    check_pulled(&d, img, &name, &r);
    // Plain lines when stdout is not a terminal: one per blob and status.
    assert!(r.stdout.contains("downloading") && r.stdout.contains("done"), "{}", r.stdout);

    // A second pull fetches nothing.
    let again = d.berthctl(&["image", "pull", &name]);
    assert!(again.stdout.contains("exists"), "{}", again.stdout);
    assert!(!again.stdout.contains("downloading"), "{}", again.stdout);

    // The pulled image runs: the whiteout layer's view of /data is what the container sees.
    let out =
        d.berthctl(&["run", "--rm", &name, "rt-run", "sh", "-c", "cat /data/new; test ! -e /data/gone && echo gone"]);
    assert_eq!(out.ok(), "added by the third layer\ngone\n");

    // Pushing it again finds every blob there.
    let r = d.berthctl(&["image", "push", &name]);
    assert_eq!(printed_digest(&r), img.target.digest);
    assert!(r.stdout.contains("exists"), "{}", r.stdout);
}

fn transfer_section(host: &str, body: &str) -> String {
    format!("[plugins.\"io.berth.transfer.v1.distribution\".registries.\"{host}\"]\n{body}\n")
}

#[test]
fn tls_with_a_configured_ca_and_a_clear_error_without() {
    let Some(set) = test_images() else { return };
    let Some(reg) = Registry::start_with(RegistryOptions { tls: true, auth: Auth::None }) else { return };
    let ca = reg.ca_path.clone().expect("ca");
    let d = daemon_with(&transfer_section(&reg.host, &format!("ca = {:?}", ca.display().to_string())));
    let img = set.get("busybox");
    let (name, pushed) = push(&d, set, &reg.host, "busybox", "berth/busybox");
    assert_eq!(pushed, img.target.digest);
    d.berthctl(&["image", "rm", "--sync", &name]).ok();
    let r = d.berthctl(&["image", "pull", &name]);
    check_pulled(&d, img, &name, &r);

    // `insecure = true` accepts the certificate without the CA.
    let insecure = daemon_with(&transfer_section(&reg.host, "insecure = true"));
    let r = insecure.berthctl(&["image", "pull", &name]);
    check_pulled(&insecure, img, &name, &r);

    // Without the CA, the certificate is refused, and nothing is recorded.
    let bare = Daemon::start();
    let err = bare.berthctl(&["image", "pull", &name]).err().to_lowercase();
    assert!(err.contains("certificate") || err.contains("unknownissuer"), "{err}");
    assert!(!image_names(&bare).contains(&name));
}

#[test]
fn htpasswd_basic_auth_with_login_and_logout() {
    let Some(set) = test_images() else { return };
    let auth = Auth::Basic { user: "alice".into(), password: "s3cret".into() };
    let Some(reg) = Registry::start_with(RegistryOptions { tls: false, auth }) else { return };
    let d = Daemon::start();
    let name = import_as(&d, set, "busybox", &format!("{}/private/busybox:v1", reg.host));
    let err = d.berthctl(&["image", "push", &name]).err().to_string();
    assert!(err.contains("401") || err.contains("authoriz"), "{err}");

    let bad = d.berthctl(&["login", "--username", "alice", "--password", "wrong", &reg.host]).err().to_string();
    assert!(bad.contains("login to") && bad.contains("401"), "{bad}");
    d.berthctl(&["login", "--username", "alice", "--password", "s3cret", &reg.host]).ok();
    assert_eq!(printed_digest(&d.berthctl(&["image", "push", &name])), set.get("busybox").target.digest);
    d.berthctl(&["image", "rm", "--sync", &name]).ok();
    let r = d.berthctl(&["image", "pull", &name]);
    check_pulled(&d, set.get("busybox"), &name, &r);
    // The stored credentials are berthd's alone.
    let stored = std::fs::metadata(d.root.join("distribution/auth.json")).expect("auth.json");
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&stored.permissions()) & 0o777, 0o600);

    d.berthctl(&["logout", &reg.host]).ok();
    d.berthctl(&["image", "rm", "--sync", &name]).ok();
    let err = d.berthctl(&["image", "pull", &name]).err().to_string();
    assert!(err.contains("not authorized"), "{err}");
    assert!(!image_names(&d).contains(&name));
}

#[test]
fn bearer_token_flow_and_docker_config_credentials() {
    let Some(set) = test_images() else { return };
    let auth = Auth::Token { user: "bob".into(), password: "hunter2".into() };
    let Some(reg) = Registry::start_with(RegistryOptions { tls: false, auth }) else { return };
    // Credentials from a Docker config.json named in the config.
    let dir = tempfile::tempdir().unwrap();
    let docker_config = dir.path().join("config.json");
    let b64 = berth_integration::registry::base64(b"bob:hunter2", false);
    std::fs::write(&docker_config, format!(r#"{{"auths":{{"{}":{{"auth":"{b64}"}}}}}}"#, reg.host)).unwrap();
    let d = daemon_with(&format!(
        "[plugins.\"io.berth.transfer.v1.distribution\"]\ndocker_config = {:?}\n",
        docker_config.display().to_string()
    ));
    let img = set.get("multilayer");
    let (name, pushed) = push(&d, set, &reg.host, "multilayer", "team/app");
    assert_eq!(pushed, img.target.digest);
    d.berthctl(&["image", "rm", "--sync", &name]).ok();
    let before = reg.token_requests().len();
    let r = d.berthctl(&["image", "pull", &name]);
    check_pulled(&d, img, &name, &r);
    let tokens = reg.token_requests();
    let pulls: Vec<_> = tokens[before..]
        .iter()
        .filter(|t| t.contains("repository%3Ateam%2Fapp%3Apull") || t.contains("repository:team/app:pull"))
        .collect();
    // One token for the whole pull (cached per scope), not one per blob.
    assert_eq!(pulls.len(), 1, "{tokens:?}");

    // Without credentials the token server refuses: a clear error.
    let anon = Daemon::start();
    let err = anon.berthctl(&["image", "pull", &name]).err().to_string();
    assert!(err.contains("authorization failed") || err.contains("not authorized"), "{err}");
}

/// The largest layer of the host manifest: (digest, size).
fn biggest_layer(img: &TestImage) -> (String, u64) {
    let l = img.host().layers.iter().max_by_key(|l| l.blob.size).expect("layers");
    (l.blob.digest.clone(), l.blob.size)
}

/// A registry holding `multilayer` as berth/multilayer:v1, a proxy in front, and a daemon
/// that pushed it (and forgot it again).
fn proxied(config: impl Fn(&str, &str) -> String) -> Option<(Registry, FaultProxy, Daemon, &'static TestImages)> {
    let set = test_images()?;
    let reg = Registry::start()?;
    let proxy = FaultProxy::start(&reg.host);
    let pusher = Daemon::start();
    push(&pusher, set, &reg.host, "multilayer", "berth/multilayer");
    let d = daemon_with(&config(&reg.host, &proxy.host));
    Some((reg, proxy, d, set))
}

#[test]
fn dropped_connection_resumes_with_range_and_concurrent_pulls_fetch_once() {
    let Some((_reg, proxy, d, set)) = proxied(|_, _| String::new()) else { return };
    let img = set.get("multilayer");
    let (big, size) = biggest_layer(img);
    proxy.set_fault(&big, Fault::DropAfter { bytes: size / 2, times: 1 });
    let name = format!("{}/berth/multilayer:v1", proxy.host);
    // Two pulls of the same image at once.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| d.berthctl(&["image", "pull", &name]));
        let b = s.spawn(|| d.berthctl(&["image", "pull", &name]));
        (a.join().unwrap(), b.join().unwrap())
    });
    check_pulled(&d, img, &name, &a);
    assert_eq!(printed_digest(&b), img.target.digest);
    // The dropped blob: two GETs (the second with Range), its bytes sent exactly once.
    assert_eq!(proxy.blob_gets(&big), 2, "{:#?}", proxy.requests());
    assert_eq!(proxy.served(&big), size);
    for l in &img.host().layers {
        assert_eq!(proxy.served(&l.blob.digest), l.blob.size, "{}", l.blob.digest);
    }
}

#[test]
fn mirrors_are_tried_in_order_with_fallback() {
    let dead = berth_integration::registry::free_port();
    let Some((reg, proxy, d, set)) = proxied(|reg, proxy| {
        transfer_section(reg, &format!("mirrors = [\"http://127.0.0.1:{dead}\", \"http://{proxy}\"]"))
    }) else {
        return;
    };
    let img = set.get("multilayer");
    let name = format!("{}/berth/multilayer:v1", reg.host);
    let r = d.berthctl(&["image", "pull", &name]);
    check_pulled(&d, img, &name, &r);
    // The down mirror was skipped, the working one served the blobs.
    let (big, size) = biggest_layer(img);
    assert_eq!(proxy.served(&big), size);

    // A mirror lacking the image falls through to the registry.
    let other = Daemon::start();
    push(&other, set, &reg.host, "busybox", "berth/only-upstream");
    proxy.set_fault("v1", Fault::Serve { content_type: "application/json".into(), body: b"{}".to_vec() });
    let d2 = daemon_with(&transfer_section(&reg.host, &format!("mirrors = [\"http://127.0.0.1:{dead}\"]")));
    let name2 = format!("{}/berth/only-upstream:v1", reg.host);
    let r = d2.berthctl(&["image", "pull", &name2]);
    assert_eq!(printed_digest(&r), set.get("busybox").target.digest);
}

/// Asserts a failed pull left no image record and no visible blob of `digests`.
fn nothing_committed(d: &Daemon, name: &str, digests: &[&str]) {
    assert!(!image_names(d).contains(name), "{}", image_names(d));
    let visible = blobs(d);
    for dg in digests {
        assert!(!visible.iter().any(|v| v == dg), "{dg} is visible: {visible:?}");
    }
}

#[test]
fn bad_blobs_are_clear_errors_and_commit_nothing() {
    let Some((_reg, proxy, d, set)) = proxied(|_, _| String::new()) else { return };
    let img = set.get("multilayer");
    let (big, size) = biggest_layer(img);
    let name = format!("{}/berth/multilayer:v1", proxy.host);

    proxy.set_fault(&big, Fault::Tamper);
    let err = d.berthctl(&["image", "pull", "--no-unpack", &name]).err().to_string();
    assert!(err.contains("failed verification") && err.contains(&big), "{err}");
    nothing_committed(&d, &name, &[&big, &img.target.digest]);
    // The tampered bytes are not kept for a resume.
    let ingests = d.berthctl(&["content", "active"]).ok().to_string();
    assert!(!ingests.contains(&big), "{ingests}");

    proxy.set_fault(&big, Fault::Truncate { bytes: size / 3 });
    let err = d.berthctl(&["image", "pull", "--no-unpack", &name]).err().to_string();
    assert!(err.contains("truncated") && err.contains(&big), "{err}");
    nothing_committed(&d, &name, &[&big, &img.target.digest]);

    // With the fault gone the same pull completes, resuming what the ingest holds: after the
    // tampered copy, the blob's bytes went over the wire once more in all.
    proxy.clear_faults();
    let r = d.berthctl(&["image", "pull", &name]);
    check_pulled(&d, img, &name, &r);
    assert_eq!(proxy.served(&big), 2 * size);
}

#[test]
fn bad_manifests_missing_images_and_media_types_are_clear_errors() {
    let Some((_reg, proxy, d, _set)) = proxied(|_, _| String::new()) else { return };
    let host = proxy.host.clone();

    let err = d.berthctl(&["image", "pull", &format!("{host}/berth/multilayer:nope")]).err().to_string();
    assert!(err.contains("not found") || err.contains("MANIFEST_UNKNOWN"), "{err}");
    let err = d.berthctl(&["image", "pull", &format!("{host}/berth/absent:v1")]).err().to_string();
    assert!(err.contains("not found") || err.contains("NAME_UNKNOWN"), "{err}");

    let mut big =
        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","annotations":{"pad":""#
            .to_vec();
    big.extend(std::iter::repeat_n(b'x', 5 << 20));
    big.extend_from_slice(br#""}}"#);
    proxy.set_fault(
        "huge",
        Fault::Serve { content_type: "application/vnd.oci.image.manifest.v1+json".into(), body: big },
    );
    let err = d.berthctl(&["image", "pull", &format!("{host}/berth/multilayer:huge")]).err().to_string();
    assert!(err.contains("cap"), "{err}");

    proxy.set_fault(
        "odd",
        Fault::Serve { content_type: "application/vnd.example.thing+json".into(), body: b"{\"a\":1}".to_vec() },
    );
    let err = d.berthctl(&["image", "pull", &format!("{host}/berth/multilayer:odd")]).err().to_string();
    assert!(err.contains("unsupported manifest media type"), "{err}");

    let helm = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":2},"layers":[]}"#;
    proxy.set_fault(
        "helm",
        Fault::Serve {
            content_type: "application/vnd.oci.image.manifest.v1+json".into(),
            body: helm.as_bytes().to_vec(),
        },
    );
    let err = d.berthctl(&["image", "pull", &format!("{host}/berth/multilayer:helm")]).err().to_string();
    assert!(err.contains("unsupported config media type"), "{err}");
    assert!(blobs(&d).is_empty(), "{:?}", blobs(&d));
    assert!(!image_names(&d).contains(&host));
}

#[test]
fn multi_platform_index_platform_choice_and_cross_repository_mount() {
    let Some(set) = test_images() else { return };
    let Some(reg) = Registry::start() else { return };
    let d = Daemon::start();
    let img = set.get("multiarch");
    let (name, pushed) = push(&d, set, &reg.host, "multiarch", "berth/multiarch");
    assert_eq!(pushed, img.target.digest, "the whole index is pushed");
    // The same image to another repository: blobs are mounted, not uploaded.
    let other = format!("{}/elsewhere/multiarch:v1", reg.host);
    d.berthctl(&["image", "tag", &name, &other]).ok();
    let r = d.berthctl(&["image", "push", &other]);
    assert!(r.stdout.contains("mounted"), "{}", r.stdout);
    let host = img.host();
    let foreign = img.platforms.iter().find(|p| p.platform != host.platform).expect("foreign platform");
    // --platform pushes that platform's manifest alone, as the tag's target.
    let single = format!("{}/berth/multiarch-host:v1", reg.host);
    d.berthctl(&["image", "tag", &name, &single]).ok();
    let r = d.berthctl(&["image", "push", "--platform", &host.platform, &single]);
    assert_eq!(printed_digest(&r), host.manifest.digest);

    // Default: the host's manifest only.
    d.berthctl(&["image", "rm", "--sync", &name, &other, &single]).ok();
    let r = d.berthctl(&["image", "pull", &name]);
    check_pulled(&d, img, &name, &r);
    let visible = blobs(&d);
    assert!(visible.contains(&host.config.digest));
    assert!(!visible.contains(&foreign.config.digest), "{visible:?}");

    // --platform picks the other one (not unpacked here: its layers are for another CPU).
    d.berthctl(&["image", "rm", "--sync", &name]).ok();
    d.berthctl(&["image", "pull", "--no-unpack", "--platform", &foreign.platform, &name]).ok();
    let visible = blobs(&d);
    assert!(visible.contains(&foreign.config.digest) && !visible.contains(&host.config.digest), "{visible:?}");

    // --all-platforms: everything.
    d.berthctl(&["image", "rm", "--sync", &name]).ok();
    let r = d.berthctl(&["image", "pull", "--all-platforms", &name]);
    assert_eq!(printed_digest(&r), img.target.digest);
    let visible = blobs(&d);
    for b in img.all_blobs() {
        assert!(visible.contains(&b.digest), "{} missing: {visible:?}", b.digest);
    }
}

#[test]
fn ctr_pulls_from_the_registry_into_berthd() {
    let Some(set) = test_images() else { return };
    let Some(reg) = Registry::start() else { return };
    let d = Daemon::start();
    let img = set.get("multilayer");
    let (name, _) = push(&d, set, &reg.host, "multilayer", "berth/multilayer");
    d.berthctl(&["image", "rm", "--sync", &name]).ok();
    let Some(r) = d.ctr(&["images", "pull", "--plain-http", &name]) else { return };
    r.ok();
    let ls = d.ctr(&["images", "ls", "-q"]).expect("ctr").ok().to_string();
    assert!(ls.contains(&name), "{ls}");
    let out = d.berthctl(&["image", "ls"]).ok().to_string();
    assert!(out.contains(&name) && out.contains(&img.target.digest[7..19]), "{out}");
    // ctr unpacked it through our diff and snapshots services.
    assert_eq!(committed(&d).len(), img.host().layers.len());
}

#[test]
fn chunked_push_with_patch() {
    let Some(set) = test_images() else { return };
    let Some(reg) = Registry::start() else { return };
    let d = daemon_with("[plugins.\"io.berth.transfer.v1.distribution\"]\npush_chunk_size = 65536\n");
    let img = set.get("multilayer");
    let proxy = FaultProxy::start(&reg.host);
    let (name, pushed) = push(&d, set, &proxy.host, "multilayer", "berth/chunked");
    assert_eq!(pushed, img.target.digest);
    let patches = proxy.requests().iter().filter(|r| r.starts_with("PATCH ")).count();
    let (_, big) = biggest_layer(img);
    assert!(patches as u64 >= big / 65536, "{:#?}", proxy.requests());
    let fresh = Daemon::start();
    let r = fresh.berthctl(&["image", "pull", &name]);
    check_pulled(&fresh, img, &name, &r);
}

#[test]
fn a_pull_interrupted_by_killing_berthd_resumes_from_its_ingests() {
    let Some(set) = test_images() else { return };
    let Some(reg) = Registry::start() else { return };
    let proxy = FaultProxy::start(&reg.host);
    push(&Daemon::start(), set, &reg.host, "multilayer", "berth/multilayer");
    let img = set.get("multilayer");
    let (big, size) = biggest_layer(img);
    let name = format!("{}/berth/multilayer:v1", proxy.host);
    let root = tempfile::tempdir().unwrap();
    let opts = DaemonOptions { root: Some(root.path().join("root")), ..Default::default() };

    proxy.set_fault(&big, Fault::Stall { bytes: size / 2 });
    let mut d = Daemon::start_with(opts.clone());
    let mut pull = std::process::Command::new(berth_integration::bin("berthctl"))
        .arg("--address")
        .arg(&d.socket)
        .args(["image", "pull", &name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while proxy.served(&big) < size / 2 {
        assert!(std::time::Instant::now() < deadline, "the pull never reached the stall");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    d.stop_with(libc::SIGKILL);
    assert!(!pull.wait().unwrap().success());
    drop(d);

    proxy.clear_faults();
    let d = Daemon::start_with(opts);
    let r = d.berthctl(&["image", "pull", &name]);
    check_pulled(&d, img, &name, &r);
    // The first half came before the kill, the rest after: each byte once.
    assert_eq!(proxy.served(&big), size);
}

#[test]
fn a_pull_within_the_request_lease_keeps_its_content_until_the_lease_goes() {
    use berth_integration::grpc::{connect, request, runtime};
    use berth_proto::berth::services::transfer::v1::transfer_client::TransferClient;
    use berth_proto::berth::services::transfer::v1::PullRequest;

    let Some(set) = test_images() else { return };
    let Some(reg) = Registry::start() else { return };
    let d = Daemon::start();
    let img = set.get("busybox");
    let (name, _) = push(&d, set, &reg.host, "busybox", "berth/busybox");
    d.berthctl(&["image", "rm", "--sync", &name]).ok();
    d.berthctl(&["leases", "create", "--id", "pull-hold"]).ok();

    let (statuses, result) = runtime().block_on(async {
        let mut client = TransferClient::new(connect(&d.socket).await);
        let req = PullRequest { reference: name.clone(), no_unpack: true, ..Default::default() };
        let mut stream = client.pull(request("default", Some("pull-hold"), req)).await.expect("pull").into_inner();
        let mut statuses = Vec::new();
        loop {
            let msg = stream.message().await.expect("stream").expect("a result before the end");
            if let Some(r) = msg.result {
                return (statuses, r);
            }
            statuses.push((msg.id, msg.status));
        }
    });
    assert_eq!(result.digest, img.target.digest);
    assert_eq!(result.name, name);
    assert!(statuses.iter().any(|(id, _)| img.host().layers[0].blob.hex().starts_with(id.as_str())), "{statuses:?}");

    // Without the image, the lease still holds every blob; without the lease, nothing does.
    d.berthctl(&["image", "rm", "--sync", &name]).ok();
    let visible = blobs(&d);
    for b in img.all_blobs() {
        assert!(visible.contains(&b.digest), "{} collected under the lease: {visible:?}", b.digest);
    }
    d.berthctl(&["leases", "rm", "--sync", "pull-hold"]).ok();
    assert!(blobs(&d).is_empty(), "{:?}", blobs(&d));
}
