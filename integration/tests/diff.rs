//! The diff service end to end against a real berthd: layer blobs ingested with berthctl,
//! applied with Diff.Apply onto bind and overlay mounts (files, owners, modes, links,
//! whiteouts), hostile layers refused without a write outside the target, and Diff.Diff
//! between two trees producing a layer that applies back to the same tree.
//!
//! Needs root (owners, device nodes, mounts): skipped loudly otherwise.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_integration::{bin, external_tool, Daemon, Run};
use berth_proto::containerd::services::content::v1::content_client::ContentClient;
use berth_proto::containerd::services::content::v1::InfoRequest;
use berth_proto::containerd::services::diff::v1::diff_client::DiffClient;
use berth_proto::containerd::services::diff::v1::{ApplyRequest, DiffRequest};
use berth_proto::containerd::types::{Descriptor, Mount};
use hyper_util::rt::TokioIo;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

const OCI_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const OCI_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const NS: &str = "default";

fn is_root() -> bool {
    fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("SKIPPED: the diff service tests need root (owners, devices, mounts)");
            return;
        }
    };
}

// ---- hand-built tars (the hostile ones cannot come from a well-behaved tar writer) ----

struct Entry<'a> {
    name: &'a str,
    kind: u8,
    mode: u32,
    owner: (u32, u32),
    link: &'a str,
    data: &'a [u8],
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> Entry<'a> {
    Entry { name, kind: b'0', mode: 0o644, owner: (0, 0), link: "", data }
}
fn dir(name: &str) -> Entry<'_> {
    Entry { kind: b'5', mode: 0o755, ..file(name, b"") }
}
fn symlink<'a>(name: &'a str, target: &'a str) -> Entry<'a> {
    Entry { kind: b'2', mode: 0o777, link: target, ..file(name, b"") }
}
fn hardlink<'a>(name: &'a str, target: &'a str) -> Entry<'a> {
    Entry { kind: b'1', link: target, ..file(name, b"") }
}

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{:0width$o}", v, width = field.len() - 1);
    field[..s.len()].copy_from_slice(s.as_bytes());
}

fn tar(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = [0u8; 512];
        h[..e.name.len()].copy_from_slice(e.name.as_bytes());
        octal(&mut h[100..108], u64::from(e.mode));
        octal(&mut h[108..116], u64::from(e.owner.0));
        octal(&mut h[116..124], u64::from(e.owner.1));
        octal(&mut h[124..136], e.data.len() as u64);
        octal(&mut h[136..148], 1_600_000_000);
        h[156] = e.kind;
        h[157..157 + e.link.len()].copy_from_slice(e.link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(e.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

fn sha256_of(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().expect("sha256sum");
    format!("sha256:{}", String::from_utf8_lossy(&out.stdout).split_whitespace().next().expect("sha256sum output"))
}

/// A layer blob in the content store.
struct Blob {
    desc: Descriptor,
    /// The sha256 of the uncompressed tar.
    diff_id: String,
}

/// gzips `layer`, ingests it with berthctl and returns its descriptor.
fn ingest(d: &Daemon, name: &str, layer: &[u8]) -> Blob {
    let plain = d.dir().join(format!("{name}.tar"));
    fs::write(&plain, layer).unwrap();
    let gz = d.dir().join(format!("{name}.tar.gz"));
    let out = Command::new("gzip").arg("-nc").arg(&plain).output().expect("gzip");
    assert!(out.status.success());
    fs::write(&gz, &out.stdout).unwrap();
    let out_ingest = Command::new(bin("berthctl"))
        .arg("--address")
        .arg(&d.socket)
        .args(["content", "ingest", &format!("layer-{name}")])
        .stdin(fs::File::open(&gz).unwrap())
        .output()
        .unwrap();
    let run = Run {
        status: out_ingest.status,
        stdout: String::from_utf8_lossy(&out_ingest.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out_ingest.stderr).into_owned(),
    };
    let digest = run.ok().trim().to_string();
    assert_eq!(digest, sha256_of(&gz));
    Blob {
        desc: Descriptor {
            media_type: OCI_GZIP.into(),
            digest,
            size: out.stdout.len() as i64,
            annotations: Default::default(),
        },
        diff_id: sha256_of(&plain),
    }
}

struct Grpc {
    rt: tokio::runtime::Runtime,
    diff: DiffClient<Channel>,
    content: ContentClient<Channel>,
}

fn grpc(d: &Daemon) -> Grpc {
    let socket = d.socket.clone();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let channel = rt.block_on(async move {
        tonic::transport::Endpoint::from_static("http://berthd")
            .connect_with_connector(tower::service_fn(move |_| {
                let s = socket.clone();
                async move { tokio::net::UnixStream::connect(s).await.map(TokioIo::new) }
            }))
            .await
            .unwrap()
    });
    Grpc { rt, diff: DiffClient::new(channel.clone()), content: ContentClient::new(channel) }
}

fn in_ns<T>(msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut().insert("containerd-namespace", NS.parse().unwrap());
    req
}

impl Grpc {
    fn apply(&mut self, desc: &Descriptor, mounts: Vec<Mount>) -> Result<Descriptor, Status> {
        let req = ApplyRequest { diff: Some(desc.clone()), mounts, payloads: Default::default() };
        let client = &mut self.diff;
        self.rt.block_on(client.apply(in_ns(req))).map(|r| r.into_inner().applied.expect("applied descriptor"))
    }

    fn diff(&mut self, left: Vec<Mount>, right: Vec<Mount>, media_type: &str) -> Result<Descriptor, Status> {
        let req = DiffRequest {
            left,
            right,
            media_type: media_type.into(),
            r#ref: String::new(),
            labels: [("test".to_string(), "yes".to_string())].into(),
            source_date_epoch: None,
        };
        let client = &mut self.diff;
        self.rt.block_on(client.diff(in_ns(req))).map(|r| r.into_inner().diff.expect("diff descriptor"))
    }

    fn labels(&mut self, digest: &str) -> BTreeMap<String, String> {
        let client = &mut self.content;
        let info = self.rt.block_on(client.info(in_ns(InfoRequest { digest: digest.into() }))).unwrap();
        info.into_inner().info.unwrap().labels.into_iter().collect()
    }
}

fn bind(path: &Path, ro: bool) -> Mount {
    let mut options = vec!["rbind".to_string()];
    options.push(if ro { "ro" } else { "rw" }.to_string());
    Mount { r#type: "bind".into(), source: path.display().to_string(), target: String::new(), options }
}

fn overlay(lower: &Path, upper: &Path, work: &Path) -> Mount {
    Mount {
        r#type: "overlay".into(),
        source: "overlay".into(),
        target: String::new(),
        options: vec![
            format!("workdir={}", work.display()),
            format!("upperdir={}", upper.display()),
            format!("lowerdir={}", lower.display()),
        ],
    }
}

fn mkdirs(base: &Path, names: &[&str]) -> Vec<PathBuf> {
    names
        .iter()
        .map(|n| {
            let p = base.join(n);
            fs::create_dir_all(&p).unwrap();
            p
        })
        .collect()
}

/// Type, mode, owner, mtime, content or target of everything under `root`.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let m = fs::symlink_metadata(&path).unwrap();
            let t = m.file_type();
            let (kind, body) = if t.is_dir() {
                ("dir", String::new())
            } else if t.is_symlink() {
                ("symlink", fs::read_link(&path).unwrap().display().to_string())
            } else if t.is_file() {
                ("file", String::from_utf8_lossy(&fs::read(&path).unwrap()).into_owned())
            } else if t.is_fifo() {
                ("fifo", String::new())
            } else if t.is_char_device() {
                ("char", m.rdev().to_string())
            } else {
                ("other", String::new())
            };
            let mtime = if t.is_symlink() { 0 } else { m.mtime() };
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            out.insert(rel, format!("{kind} {:o} {}:{} {mtime} {body}", m.mode() & 0o7777, m.uid(), m.gid()));
            if t.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn cp_a(from: &Path, to: &Path) {
    assert!(Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap().success());
}

fn base_layer() -> Vec<u8> {
    tar(&[
        dir("etc/"),
        Entry { owner: (1000, 1000), mode: 0o600, ..file("etc/secret", b"s3cret") },
        file("etc/hosts", b"127.0.0.1 localhost\n"),
        dir("bin/"),
        Entry { mode: 0o4755, ..file("bin/su", b"su") },
        hardlink("bin/su-again", "bin/su"),
        symlink("bin/sh", "/bin/busybox"),
        Entry { kind: b'6', ..file("run-fifo", b"") },
        dir("var/"),
        dir("var/cache/"),
        file("var/cache/junk", b"junk"),
        file("var/keep", b"keep"),
    ])
}

fn top_layer() -> Vec<u8> {
    tar(&[
        dir("etc/"),
        file("etc/.wh.hosts", b""),
        file("etc/new", b"new"),
        dir("var/"),
        dir("var/cache/"),
        file("var/cache/.wh..wh..opq", b""),
        file("var/cache/fresh", b"fresh"),
    ])
}

#[test]
fn apply_onto_a_bind_mount() {
    require_root!();
    let d = Daemon::start();
    let mut g = grpc(&d);
    let [target] = mkdirs(d.dir(), &["target"]).try_into().unwrap();
    let base = ingest(&d, "base", &base_layer());
    let top = ingest(&d, "top", &top_layer());

    let applied = g.apply(&base.desc, vec![bind(&target, false)]).unwrap();
    assert_eq!(applied.media_type, OCI_TAR);
    assert_eq!(applied.digest, base.diff_id);
    assert_eq!(applied.size, base_layer().len() as i64);
    let m = |p: &str| fs::symlink_metadata(target.join(p)).unwrap();
    assert_eq!(fs::read(target.join("etc/secret")).unwrap(), b"s3cret");
    assert_eq!((m("etc/secret").uid(), m("etc/secret").gid(), m("etc/secret").mode() & 0o777), (1000, 1000, 0o600));
    assert_eq!(m("bin/su").mode() & 0o7777, 0o4755);
    assert_eq!(m("bin/su").ino(), m("bin/su-again").ino());
    assert_eq!(fs::read_link(target.join("bin/sh")).unwrap(), Path::new("/bin/busybox"));
    assert!(m("run-fifo").file_type().is_fifo());
    assert_eq!(m("etc/hosts").mtime(), 1_600_000_000);

    // A bind mount means a full tree: whiteouts delete.
    let applied = g.apply(&top.desc, vec![bind(&target, false)]).unwrap();
    assert_eq!(applied.digest, top.diff_id);
    assert!(!target.join("etc/hosts").exists());
    assert!(target.join("etc/new").exists());
    assert!(!target.join("var/cache/junk").exists());
    assert!(target.join("var/cache/fresh").exists() && target.join("var/keep").exists());
}

#[test]
fn apply_onto_an_overlay_writes_its_upperdir() {
    require_root!();
    let d = Daemon::start();
    let mut g = grpc(&d);
    let [lower, upper, work, merged] = mkdirs(d.dir(), &["lower", "upper", "work", "merged"]).try_into().unwrap();
    let base = ingest(&d, "base", &base_layer());
    let top = ingest(&d, "top", &top_layer());
    g.apply(&base.desc, vec![bind(&lower, false)]).unwrap();
    g.apply(&top.desc, vec![overlay(&lower, &upper, &work)]).unwrap();

    // Overlay whiteouts in the upper directory, nothing mounted.
    let wh = fs::symlink_metadata(upper.join("etc/hosts")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    assert!(!upper.join("etc/secret").exists(), "lower content does not leak into the upper");
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&d.dir().display().to_string()), "apply left a mount behind");

    // Mounted, it shows the two layers applied in order.
    let opts = format!("lowerdir={},upperdir={},workdir={}", lower.display(), upper.display(), work.display());
    assert!(Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(&merged)
        .status()
        .unwrap()
        .success());
    let seen = snapshot(&merged);
    assert!(Command::new("umount").arg(&merged).status().unwrap().success());
    let [expected] = mkdirs(d.dir(), &["expected"]).try_into().unwrap();
    g.apply(&base.desc, vec![bind(&expected, false)]).unwrap();
    g.apply(&top.desc, vec![bind(&expected, false)]).unwrap();
    assert_eq!(seen, snapshot(&expected));
}

#[test]
fn apply_onto_several_mounts_mounts_them() {
    require_root!();
    let d = Daemon::start();
    let mut g = grpc(&d);
    let [root, sub] = mkdirs(d.dir(), &["root", "sub"]).try_into().unwrap();
    fs::create_dir(root.join("mnt")).unwrap();
    let layer = ingest(&d, "two", &tar(&[file("top", b"t"), dir("mnt/"), file("mnt/inner", b"i")]));
    let mut second = bind(&sub, false);
    second.target = "mnt".into();
    g.apply(&layer.desc, vec![bind(&root, false), second]).unwrap();
    assert_eq!(fs::read(root.join("top")).unwrap(), b"t");
    assert_eq!(fs::read(sub.join("inner")).unwrap(), b"i", "the entry went through the second mount");
    assert!(!root.join("mnt/inner").exists());
    let scratch = d.root.join("tmpmounts");
    assert_eq!(fs::read_dir(&scratch).unwrap().count(), 0, "temporary mount points are removed");
}

#[test]
fn hostile_layers_are_refused() {
    require_root!();
    let d = Daemon::start();
    let mut g = grpc(&d);
    let [target, outside] = mkdirs(d.dir(), &["target", "outside"]).try_into().unwrap();
    fs::write(outside.join("victim"), b"untouched").unwrap();
    let abs = outside.display().to_string();
    let cases = [
        ("dotdot", tar(&[file("../outside/x", b"x")])),
        ("absolute symlink parent", tar(&[symlink("a", &abs), file("a/x", b"x")])),
        ("relative symlink parent", tar(&[symlink("a", "../../../../../../.."), file("a/x", b"x")])),
        ("hardlink out", tar(&[hardlink("l", "../outside/victim")])),
        ("hardlink through symlink", tar(&[symlink("a", &abs), hardlink("l", "a/victim")])),
        ("whiteout through symlink", tar(&[symlink("a", &abs), file("a/.wh.victim", b"")])),
        ("symlink loop", tar(&[symlink("a", "b"), symlink("b", "a"), file("a/x", b"")])),
    ];
    for (i, (what, layer)) in cases.iter().enumerate() {
        let blob = ingest(&d, &format!("hostile{i}"), layer);
        let err = g.apply(&blob.desc, vec![bind(&target, false)]).expect_err(what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {}", err.message());
        let names: Vec<_> = fs::read_dir(&outside).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["victim"], "{what} wrote outside the target");
        assert_eq!(fs::read(outside.join("victim")).unwrap(), b"untouched");
        // And in an overlay upper too.
        let [upper, work] = mkdirs(d.dir(), &[format!("u{i}").as_str(), format!("w{i}").as_str()]).try_into().unwrap();
        let err = g.apply(&blob.desc, vec![overlay(&target, &upper, &work)]).expect_err(what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what} (overlay): {}", err.message());
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);
    }

    // A corrupt blob is refused too.
    let blob =
        ingest(&d, "corrupt", b"not a layer, not a tar: just text that is long enough to matter................");
    let err = g.apply(&blob.desc, vec![bind(&target, false)]).unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
}

#[test]
fn apply_checks_the_descriptor() {
    require_root!();
    let d = Daemon::start();
    let mut g = grpc(&d);
    let [target] = mkdirs(d.dir(), &["target"]).try_into().unwrap();
    let blob = ingest(&d, "ok", &tar(&[file("a", b"a")]));
    let mounts = || vec![bind(&target, false)];

    let wrong_size = Descriptor { size: blob.desc.size + 1, ..blob.desc.clone() };
    assert_eq!(g.apply(&wrong_size, mounts()).unwrap_err().code(), Code::FailedPrecondition);
    let missing = Descriptor { digest: format!("sha256:{}", "0".repeat(64)), ..blob.desc.clone() };
    assert_eq!(g.apply(&missing, mounts()).unwrap_err().code(), Code::NotFound);
    let config = Descriptor { media_type: "application/vnd.oci.image.config.v1+json".into(), ..blob.desc.clone() };
    assert_eq!(g.apply(&config, mounts()).unwrap_err().code(), Code::Unimplemented);
    let bad = Descriptor { digest: "sha256:nothex".into(), ..blob.desc.clone() };
    assert_eq!(g.apply(&bad, mounts()).unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(g.apply(&blob.desc, vec![]).unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(g.apply(&blob.desc, vec![bind(&target, true)]).unwrap_err().code(), Code::InvalidArgument);
    assert!(!target.join("a").exists());
    // The same blob as an uncompressed layer type: the data decides, as containerd.
    let plain_type = Descriptor { media_type: OCI_TAR.into(), ..blob.desc.clone() };
    assert_eq!(g.apply(&plain_type, mounts()).unwrap().digest, blob.diff_id);
}

#[test]
fn diff_of_two_directories_applies_back() {
    require_root!();
    let d = Daemon::start();
    let mut g = grpc(&d);
    let [lower, upper] = mkdirs(d.dir(), &["lower", "upper"]).try_into().unwrap();
    let base = ingest(&d, "base", &base_layer());
    g.apply(&base.desc, vec![bind(&lower, false)]).unwrap();
    g.apply(&base.desc, vec![bind(&upper, false)]).unwrap();
    // Change the upper tree by hand.
    fs::remove_file(upper.join("etc/hosts")).unwrap();
    fs::write(upper.join("etc/secret"), b"changed").unwrap();
    fs::remove_dir_all(upper.join("var/cache")).unwrap();
    fs::create_dir_all(upper.join("opt/app")).unwrap();
    fs::write(upper.join("opt/app/run"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(upper.join("opt/app/run"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("../opt/app/run", upper.join("bin/app")).unwrap();

    let desc = g.diff(vec![bind(&lower, true)], vec![bind(&upper, true)], "").unwrap();
    assert_eq!(desc.media_type, OCI_GZIP);
    let labels = g.labels(&desc.digest);
    assert_eq!(labels.get("test").map(String::as_str), Some("yes"));
    let uncompressed = labels.get("containerd.io/uncompressed").expect("uncompressed label").clone();

    let [restored] = mkdirs(d.dir(), &["restored-parent"]).try_into().unwrap();
    let restored = restored.join("tree");
    cp_a(&lower, &restored);
    let applied = g.apply(&desc, vec![bind(&restored, false)]).unwrap();
    assert_eq!(applied.digest, uncompressed, "Apply's diff_id is Diff's uncompressed label");
    let (got, want) = (snapshot(&restored), snapshot(&upper));
    assert_eq!(got, want);

    // The same diff again is the same blob.
    let again = g.diff(vec![bind(&lower, true)], vec![bind(&upper, true)], "").unwrap();
    assert_eq!(again.digest, desc.digest);
    // Uncompressed on request; other media types are not layers.
    let plain = g.diff(vec![bind(&lower, true)], vec![bind(&upper, true)], OCI_TAR).unwrap();
    assert_eq!(plain.digest, uncompressed);
    let err = g.diff(vec![bind(&lower, true)], vec![bind(&upper, true)], "application/json").unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    // No left side: everything is new.
    let full = g.diff(vec![], vec![bind(&lower, true)], "").unwrap();
    let [fresh] = mkdirs(d.dir(), &["fresh"]).try_into().unwrap();
    g.apply(&full, vec![bind(&fresh, false)]).unwrap();
    assert_eq!(snapshot(&fresh), snapshot(&lower));
}

#[test]
fn diff_of_an_overlay_reads_its_upperdir() {
    require_root!();
    let d = Daemon::start();
    let mut g = grpc(&d);
    let [lower, upper, work, merged] = mkdirs(d.dir(), &["lower", "upper", "work", "merged"]).try_into().unwrap();
    let base = ingest(&d, "base", &base_layer());
    g.apply(&base.desc, vec![bind(&lower, false)]).unwrap();
    let opts = format!("lowerdir={},upperdir={},workdir={}", lower.display(), upper.display(), work.display());
    assert!(Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(&merged)
        .status()
        .unwrap()
        .success());
    let changed = (|| -> std::io::Result<()> {
        fs::remove_file(merged.join("etc/hosts"))?;
        fs::write(merged.join("etc/new"), b"new")?;
        fs::remove_dir_all(merged.join("var"))?;
        fs::create_dir(merged.join("var"))?;
        fs::write(merged.join("var/only"), b"only")?;
        Ok(())
    })();
    let want = snapshot(&merged);
    assert!(Command::new("umount").arg(&merged).status().unwrap().success());
    changed.unwrap();

    let desc = g.diff(vec![bind(&lower, true)], vec![overlay(&lower, &upper, &work)], "").unwrap();
    let restored = d.dir().join("restored");
    cp_a(&lower, &restored);
    g.apply(&desc, vec![bind(&restored, false)]).unwrap();
    assert_eq!(snapshot(&restored), want);
}

#[test]
fn ctr_sees_the_differ_plugins() {
    // ctr 1.6 has no command that calls the diff service: the gRPC client above stands in.
    let d = Daemon::start();
    let Some(run) = d.ctr(&["plugins", "ls"]) else { return };
    let out = run.ok();
    assert!(
        out.lines().any(|l| l.contains("io.berth.differ.v1") && l.contains("walking") && l.contains("ok")),
        "{out}"
    );
    assert!(out.lines().any(|l| l.contains("io.berth.grpc.v1") && l.contains("diff") && l.contains("ok")), "{out}");
}

/// Debian's ctr on raw bytes: stdout as bytes (a layer blob), asserting success.
fn ctr_bytes(d: &Daemon, args: &[&str]) -> Option<Vec<u8>> {
    let ctr = external_tool("ctr")?;
    let out = Command::new(ctr)
        .arg("--address")
        .arg(&d.socket)
        .args(args)
        .env_remove("CONTAINERD_NAMESPACE")
        .output()
        .unwrap();
    assert!(out.status.success(), "ctr {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Some(out.stdout)
}

/// The `mount -t TYPE SOURCE TARGET -o OPTIONS` line `ctr snapshots mounts` prints, run.
fn mount_printed(line: &str) {
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&words[..2], ["mount", "-t"], "{line}");
    assert!(Command::new("mount").args(&words[1..]).status().unwrap().success(), "{line}");
}

#[test]
fn ctr_snapshots_diff_goes_through_the_diff_service() {
    require_root!();
    let d = Daemon::start();
    let Some(_) = ctr_bytes(&d, &["snapshots", "prepare", "base"]) else { return };
    let target = d.dir().join("mnt");
    fs::create_dir(&target).unwrap();
    let target_s = target.display().to_string();

    // The base snapshot: fill its bind source.
    let printed = String::from_utf8(ctr_bytes(&d, &["snapshots", "mounts", &target_s, "base"]).unwrap()).unwrap();
    let source = printed.split_whitespace().nth(3).expect("mount source").to_string();
    fs::create_dir_all(Path::new(&source).join("etc")).unwrap();
    fs::create_dir_all(Path::new(&source).join("var/cache")).unwrap();
    fs::write(Path::new(&source).join("etc/a"), b"a").unwrap();
    fs::write(Path::new(&source).join("etc/b"), b"b").unwrap();
    fs::write(Path::new(&source).join("var/cache/junk"), b"junk").unwrap();
    ctr_bytes(&d, &["snapshots", "commit", "base-c", "base"]).unwrap();

    // The top snapshot, changed through its overlay mount.
    ctr_bytes(&d, &["snapshots", "prepare", "top", "base-c"]).unwrap();
    let printed = String::from_utf8(ctr_bytes(&d, &["snapshots", "mounts", &target_s, "top"]).unwrap()).unwrap();
    mount_printed(printed.trim());
    let changed = (|| -> std::io::Result<()> {
        fs::remove_file(target.join("etc/a"))?;
        fs::write(target.join("etc/c"), b"c")?;
        fs::remove_dir_all(target.join("var/cache"))?;
        fs::create_dir(target.join("var/cache"))?;
        fs::write(target.join("var/cache/fresh"), b"fresh")
    })();
    assert!(Command::new("umount").arg(&target).status().unwrap().success());
    changed.unwrap();

    let blob = ctr_bytes(&d, &["snapshots", "diff", "top"]).unwrap();
    let gz = d.dir().join("top.tar.gz");
    fs::write(&gz, &blob).unwrap();
    let listing = Command::new("tar").arg("-tzf").arg(&gz).output().unwrap();
    assert!(listing.status.success());
    let names: Vec<String> = String::from_utf8_lossy(&listing.stdout).lines().map(str::to_string).collect();
    assert_eq!(
        names,
        ["etc/", "etc/.wh.a", "etc/c", "var/", "var/cache/", "var/cache/.wh..wh..opq", "var/cache/fresh"]
    );
}
