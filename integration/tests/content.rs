//! The content store end to end: berthctl, Debian's ctr and a raw gRPC client against a real
//! berthd — ingest, list, read, label, remove, refused and resumed writes, crash recovery.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_integration::{bin, external_tool, Daemon, DaemonOptions, Run};
use berth_proto::containerd::services::content::v1::content_client::ContentClient;
use berth_proto::containerd::services::content::v1::*;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Request};

/// Test data of `len` bytes that differs per `seed`.
fn data(len: usize, seed: u8) -> Vec<u8> {
    let mut x = u32::from(seed).wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().expect("sha256sum");
    let text = String::from_utf8_lossy(&out.stdout);
    format!("sha256:{}", text.split_whitespace().next().expect("sha256sum output"))
}

/// Writes `bytes` to a file in the daemon's temp dir and returns its path and digest.
fn file_with(d: &Daemon, name: &str, bytes: &[u8]) -> (PathBuf, String) {
    let path = d.dir().join(name);
    fs::write(&path, bytes).unwrap();
    let digest = sha256(&path);
    (path, digest)
}

fn finish(cmd: &mut Command) -> Run {
    let out = cmd.output().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// berthctl with stdin from `input`.
fn berthctl_in(d: &Daemon, args: &[&str], input: &Path) -> Run {
    let stdin = fs::File::open(input).unwrap();
    finish(Command::new(bin("berthctl")).arg("--address").arg(&d.socket).args(args).stdin(stdin))
}

/// berthctl with stdin from a pipe fed with `bytes` (not seekable).
fn berthctl_piped(d: &Daemon, args: &[&str], bytes: &[u8]) -> Run {
    let mut child = Command::new(bin("berthctl"))
        .arg("--address")
        .arg(&d.socket)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let bytes = bytes.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&bytes); // berthctl may stop reading early on errors
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Debian's ctr with stdin from `input`; None when ctr is not installed.
fn ctr_in(d: &Daemon, args: &[&str], input: &Path) -> Option<Run> {
    let ctr = external_tool("ctr")?;
    let stdin = fs::File::open(input).unwrap();
    Some(finish(
        Command::new(ctr).arg("--address").arg(&d.socket).args(args).stdin(stdin).env_remove("CONTAINERD_NAMESPACE"),
    ))
}

fn blob_files(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(root.join("content/blobs/sha256"))
        .map(|it| it.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// Retries `f` until it returns true or 10 s pass (the daemon notices a dropped client
/// asynchronously).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A raw gRPC client of the content service on its own runtime; dropping it closes the
/// connection, like a client process that dies.
struct Grpc {
    rt: tokio::runtime::Runtime,
    client: ContentClient<Channel>,
}

fn grpc(d: &Daemon) -> Grpc {
    let socket = d.socket.clone();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let channel = rt.block_on(async move {
        tonic::transport::Endpoint::from_static("http://berthd")
            .connect_with_connector(tower::service_fn(move |_| {
                let s = socket.clone();
                async move { tokio::net::UnixStream::connect(s).await.map(TokioIo::new) }
            }))
            .await
            .unwrap()
    });
    Grpc { rt, client: ContentClient::new(channel) }
}

fn in_ns<T>(ns: &str, msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut().insert("containerd-namespace", ns.parse().unwrap());
    req
}

/// An open Write stream: requests go in one at a time, each answered before the next.
struct WriteStream {
    tx: mpsc::Sender<WriteContentRequest>,
    responses: tonic::Streaming<WriteContentResponse>,
}

impl Grpc {
    fn open_write(
        &mut self,
        ns: Option<&str>,
        first: WriteContentRequest,
    ) -> Result<(WriteStream, i64), tonic::Status> {
        let mut client = self.client.clone();
        let ns = ns.map(str::to_string);
        self.rt.block_on(async move {
            let (tx, rx) = mpsc::channel(4);
            tx.send(first).await.unwrap();
            let mut req = Request::new(ReceiverStream::new(rx));
            if let Some(ns) = ns {
                req.metadata_mut().insert("containerd-namespace", ns.parse().unwrap());
            }
            let mut responses = client.write(req).await?.into_inner();
            let resp = responses.message().await?.ok_or_else(|| tonic::Status::unknown("no response"))?;
            Ok((WriteStream { tx, responses }, resp.offset))
        })
    }

    fn send(&self, w: &mut WriteStream, req: WriteContentRequest) -> Result<WriteContentResponse, tonic::Status> {
        self.rt.block_on(async {
            w.tx.send(req).await.map_err(|_| tonic::Status::unknown("stream closed"))?;
            w.responses.message().await?.ok_or_else(|| tonic::Status::unknown("no response"))
        })
    }

    fn read(&self, ns: &str, digest: &str, offset: i64, size: i64) -> Result<Vec<ReadContentResponse>, tonic::Status> {
        let mut client = self.client.clone();
        let req = in_ns(ns, ReadContentRequest { digest: digest.into(), offset, size });
        self.rt.block_on(async move {
            let mut stream = client.read(req).await?.into_inner();
            let mut chunks = Vec::new();
            while let Some(c) = stream.message().await? {
                chunks.push(c);
            }
            Ok(chunks)
        })
    }
}

fn stat(reference: &str) -> WriteContentRequest {
    WriteContentRequest { action: WriteAction::Stat as i32, r#ref: reference.into(), ..Default::default() }
}

fn write_at(offset: usize, bytes: &[u8]) -> WriteContentRequest {
    WriteContentRequest {
        action: WriteAction::Write as i32,
        offset: offset as i64,
        data: bytes.to_vec(),
        ..Default::default()
    }
}

/// Leaves an ingest `reference` in `ns` holding `bytes`, as a client that died mid-upload.
fn partial_ingest(d: &Daemon, ns: &str, reference: &str, bytes: &[u8]) {
    let mut g = grpc(d);
    let (mut w, offset) = g.open_write(Some(ns), stat(reference)).unwrap();
    assert_eq!(offset, 0);
    let resp = g.send(&mut w, write_at(0, bytes)).unwrap();
    assert_eq!(resp.offset, bytes.len() as i64);
    drop(w);
    drop(g);
}

#[test]
fn berthctl_ingest_ls_get_label_rm() {
    let d = Daemon::start();
    let bytes = data(3 << 20, 1); // several Read chunks and Write requests
    let (path, digest) = file_with(&d, "blob", &bytes);
    let out = berthctl_in(&d, &["content", "ingest", "up-1", "--expected", &digest, "--label", "team=a"], &path);
    assert_eq!(out.ok().trim(), digest);

    let ls = d.berthctl(&["content", "ls"]).ok().to_string();
    let header: Vec<_> = ls.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["DIGEST", "SIZE", "AGE", "LABELS"]);
    let row = ls.lines().find(|l| l.starts_with(&digest)).unwrap_or_else(|| panic!("{ls}"));
    assert!(row.contains("3.0 MiB") && row.ends_with("team=a"), "{ls}");
    assert_eq!(d.berthctl(&["content", "ls", "-q"]).ok(), format!("{digest}\n"));
    assert_eq!(d.berthctl(&["content", "ls", "-q", "labels.team==b"]).ok(), "");
    assert_eq!(d.berthctl(&["content", "ls", "-q", &format!("size=={}", 3 << 20)]).ok(), format!("{digest}\n"));

    let got = Command::new(bin("berthctl"))
        .arg("--address")
        .arg(&d.socket)
        .args(["content", "get", &digest])
        .output()
        .unwrap();
    assert!(got.status.success(), "{}", String::from_utf8_lossy(&got.stderr));
    assert!(got.stdout == bytes, "content get returned {} bytes, not the {} ingested", got.stdout.len(), bytes.len());

    d.berthctl(&["content", "label", &digest, "team=", "tier=gold"]).ok();
    assert_eq!(d.berthctl(&["content", "label", &digest]).ok(), "tier=gold\n");
    assert_eq!(d.berthctl(&["content", "active"]).ok().trim(), "REF   SIZE   TOTAL   AGE");

    // Blobs are per namespace; the file is shared.
    assert_eq!(d.berthctl(&["-n", "other", "content", "ls", "-q"]).ok(), "");
    let missing = d.berthctl(&["-n", "other", "content", "get", &digest]);
    assert!(missing.err().contains(&format!("content {digest}: not found")), "{}", missing.stderr);
    assert_eq!(missing.stderr.trim().lines().count(), 1, "one line: {}", missing.stderr);
    assert_eq!(berthctl_in(&d, &["-n", "other", "content", "ingest", "up-2"], &path).ok().trim(), digest);
    assert_eq!(blob_files(&d.root), [digest.trim_start_matches("sha256:")]);

    let rm = d.berthctl(&["content", "rm", &digest]);
    assert_eq!(rm.ok(), format!("{digest}\n"));
    assert_eq!(d.berthctl(&["content", "ls", "-q"]).ok(), "");
    assert_eq!(d.berthctl(&["-n", "other", "content", "ls", "-q"]).ok(), format!("{digest}\n"));
    let again = d.berthctl(&["content", "rm", &digest]);
    assert!(again.err().contains("not found"), "{}", again.stderr);
    assert_eq!(again.status.code(), Some(1));
}

#[test]
fn ctr_ingest_ls_get_label_rm_active() {
    let d = Daemon::start();
    let bytes = data(1_500_000, 2);
    let (path, digest) = file_with(&d, "blob", &bytes);
    let size = bytes.len().to_string();
    let Some(out) =
        ctr_in(&d, &["content", "ingest", "--expected-size", &size, "--expected-digest", &digest, "r"], &path)
    else {
        return;
    };
    out.ok();
    let ls = d.ctr(&["content", "ls"]).unwrap().ok().to_string();
    assert!(ls.lines().any(|l| l.starts_with(&digest) && l.contains("1.5MB")), "{ls}");
    assert_eq!(d.ctr(&["content", "ls", "-q"]).unwrap().ok(), format!("{digest}\n"));
    assert_eq!(d.berthctl(&["content", "ls", "-q"]).ok(), format!("{digest}\n"), "berthctl sees the same");

    let got = Command::new(external_tool("ctr").unwrap())
        .arg("--address")
        .arg(&d.socket)
        .args(["content", "get", &digest])
        .output()
        .unwrap();
    assert!(got.status.success(), "{}", String::from_utf8_lossy(&got.stderr));
    assert!(got.stdout == bytes, "ctr content get returned {} bytes", got.stdout.len());

    assert_eq!(d.ctr(&["content", "label", &digest, "k=v"]).unwrap().ok(), "k=v\n");
    assert_eq!(d.berthctl(&["content", "label", &digest]).ok(), "k=v\n");
    let ls = d.ctr(&["content", "ls"]).unwrap().ok().to_string();
    assert!(ls.lines().any(|l| l.starts_with(&digest) && l.ends_with("k=v")), "{ls}");

    // Ingesting what the namespace has already succeeds without a second copy.
    ctr_in(&d, &["content", "ingest", "--expected-digest", &digest, "again"], &path).unwrap().ok();
    ctr_in(&d, &["content", "ingest", "again-no-digest"], &path).unwrap().ok();
    assert_eq!(blob_files(&d.root).len(), 1);
    assert_eq!(
        d.ctr(&["content", "active"]).unwrap().ok().split_whitespace().collect::<Vec<_>>(),
        ["REF", "SIZE", "AGE"]
    );

    assert_eq!(d.ctr(&["content", "rm", &digest]).unwrap().ok(), format!("{digest}\n"));
    assert_eq!(d.ctr(&["content", "ls", "-q"]).unwrap().ok(), "");
    // ctr treats NotFound on delete as done; a wrong code would fail here.
    d.ctr(&["content", "rm", &digest]).unwrap().ok();
    let get = d.ctr(&["content", "get", &digest]).unwrap();
    assert!(get.err().contains("not found"), "{}", get.stderr);
}

#[test]
fn mismatched_expected_digest_leaves_nothing_visible() {
    let d = Daemon::start();
    let (path, actual) = file_with(&d, "blob", &data(100_000, 3));
    let (_, wrong) = file_with(&d, "other", b"other bytes");

    let out = berthctl_in(&d, &["content", "ingest", "bad-1", "--expected", &wrong], &path);
    let err = out.err();
    assert!(
        err.contains(&format!("unexpected commit digest {actual}, expected {wrong}: failed precondition")),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    if let Some(out) = ctr_in(&d, &["content", "ingest", "--expected-digest", &wrong, "bad-2"], &path) {
        let err = out.err();
        assert!(err.contains(&format!("unexpected commit digest {actual}, expected {wrong}")), "{err}");
        let size_err = ctr_in(&d, &["content", "ingest", "--expected-size", "5", "bad-3"], &path).unwrap();
        assert!(size_err.err().contains("unexpected commit size 100000, expected 5"), "{}", size_err.stderr);
        assert_eq!(d.ctr(&["content", "ls", "-q"]).unwrap().ok(), "");
    }

    assert_eq!(d.berthctl(&["content", "ls", "-q"]).ok(), "");
    assert!(blob_files(&d.root).is_empty(), "nothing in blobs/: {:?}", blob_files(&d.root));
    // The failed uploads stay as ingests until aborted, as containerd keeps them.
    let active = d.berthctl(&["content", "active", "-q"]).ok().to_string();
    assert!(active.lines().any(|l| l == "bad-1"), "{active}");
    let refs: Vec<&str> = active.lines().collect();
    let mut abort = vec!["content", "abort"];
    abort.extend(&refs);
    d.berthctl(&abort).ok();
    assert_eq!(d.berthctl(&["content", "active", "-q"]).ok(), "");
    let gone = d.berthctl(&["content", "abort", "bad-1"]);
    assert!(gone.err().contains("not found"), "{}", gone.stderr);
}

#[test]
fn second_writer_on_a_ref_is_refused_until_the_first_goes() {
    let d = Daemon::start();
    let bytes = data(10_000, 4);
    let (path, digest) = file_with(&d, "blob", &bytes);
    let mut g = grpc(&d);
    let (mut held, _) = g.open_write(Some("default"), stat("busy")).unwrap();
    g.send(&mut held, write_at(0, &bytes[..1000])).unwrap();

    let out = berthctl_in(&d, &["content", "ingest", "busy"], &path);
    let err = out.err();
    assert!(err.contains("ref \"busy\" is locked: unavailable"), "{err}");
    // ctr retries an unavailable writer until its timeout.
    if let Some(out) = ctr_in(&d, &["--timeout", "2s", "content", "ingest", "busy"], &path) {
        assert!(out.err().contains("locked"), "{}", out.stderr);
    }
    // A raw second stream gets the code itself.
    let err = g.open_write(Some("default"), stat("busy")).err().unwrap();
    assert_eq!(err.code(), Code::Unavailable);

    // The lock goes with the client; the next writer resumes the ingest.
    drop(held);
    drop(g);
    eventually("the lock to be released", || berthctl_in(&d, &["content", "ingest", "busy"], &path).status.success());
    assert_eq!(d.berthctl(&["content", "ls", "-q"]).ok(), format!("{digest}\n"));
}

#[test]
fn partial_ingest_is_listed_then_resumed_or_aborted() {
    let d = Daemon::start();
    let bytes = data(2_500_000, 5);
    let (path, digest) = file_with(&d, "blob", &bytes);
    partial_ingest(&d, "default", "resume-me", &bytes[..1_000_000]);
    partial_ingest(&d, "default", "piped", &bytes[..700_000]);
    partial_ingest(&d, "default", "drop-me", &bytes[..10]);

    let active = d.berthctl(&["content", "active"]).ok().to_string();
    assert!(active.lines().any(|l| l.starts_with("resume-me") && l.contains("976.6 KiB")), "{active}");
    if let Some(out) = d.ctr(&["content", "active"]) {
        let out = out.ok().to_string();
        assert!(out.lines().any(|l| l.starts_with("resume-me") && l.contains("1MB")), "{out}");
        assert!(out.lines().any(|l| l.starts_with("drop-me")), "{out}");
        // ctr resumes from the ingest's offset (it seeks its input) and commits.
        ctr_in(&d, &["content", "ingest", "--expected-digest", &digest, "resume-me"], &path).unwrap().ok();
    } else {
        assert_eq!(berthctl_in(&d, &["content", "ingest", "resume-me"], &path).ok().trim(), digest);
    }
    assert_eq!(d.berthctl(&["content", "ls", "-q"]).ok(), format!("{digest}\n"));
    let got = Grpc::read(&grpc(&d), "default", &digest, 0, 0).unwrap();
    assert_eq!(got.iter().map(|c| c.data.len()).sum::<usize>(), bytes.len());

    // berthctl resumes from a pipe by skipping what berthd already has; in another
    // namespace, since this one has the blob already.
    partial_ingest(&d, "ns2", "piped", &bytes[..700_000]);
    assert_eq!(berthctl_piped(&d, &["-n", "ns2", "content", "ingest", "piped"], &bytes).ok().trim(), digest);
    assert_eq!(d.berthctl(&["-n", "ns2", "content", "active", "-q"]).ok(), "");

    d.berthctl(&["content", "abort", "drop-me", "piped"]).ok();
    assert_eq!(d.berthctl(&["content", "active", "-q"]).ok(), "");
    if let Some(out) = d.ctr(&["content", "active"]) {
        assert_eq!(out.ok().lines().count(), 1, "header only");
    }
}

#[test]
fn kill_9_mid_ingest_then_resume_after_restart() {
    let keep = tempfile::tempdir().unwrap();
    let opts = DaemonOptions { root: Some(keep.path().join("root")), ..Default::default() };
    let bytes = data(2_000_000, 6);
    let mut d = Daemon::start_with(opts.clone());
    let (path, digest) = file_with(&d, "blob", &bytes);
    let kept_path = keep.path().join("blob");
    fs::copy(&path, &kept_path).unwrap();

    let mut g = grpc(&d);
    let (mut w, _) = g.open_write(Some("default"), stat("crash")).unwrap();
    g.send(&mut w, write_at(0, &bytes[..1_200_000])).unwrap();
    assert!(!d.stop_with(libc::SIGKILL).success());
    drop(w);
    drop(g);

    let d = Daemon::start_with(opts);
    let active = d.berthctl(&["content", "active", "ref==crash"]).ok().to_string();
    assert!(active.lines().any(|l| l.starts_with("crash") && l.contains("1.1 MiB")), "{active}");
    assert!(blob_files(&d.root).is_empty(), "nothing half-written in blobs/");
    assert_eq!(d.berthctl(&["content", "ls", "-q"]).ok(), "");

    let out = berthctl_in(&d, &["content", "ingest", "crash", "--expected", &digest], &kept_path);
    assert_eq!(out.ok().trim(), digest);
    assert_eq!(blob_files(&d.root), [digest.trim_start_matches("sha256:")]);
    let got = Grpc::read(&grpc(&d), "default", &digest, 0, 0).unwrap();
    assert_eq!(got.into_iter().flat_map(|c| c.data).collect::<Vec<u8>>(), bytes);
}

#[test]
fn write_protocol_offsets_and_replies() {
    let d = Daemon::start();
    let mut g = grpc(&d);
    let (mut w, offset) = g.open_write(Some("default"), stat("proto")).unwrap();
    assert_eq!(offset, 0);
    let r = g.send(&mut w, write_at(0, b"hello ")).unwrap();
    assert_eq!((r.action, r.offset), (WriteAction::Write as i32, 6));
    let r = g.send(&mut w, write_at(6, b"world")).unwrap();
    assert_eq!(r.offset, 11);
    let r = g.send(&mut w, stat("")).unwrap();
    assert_eq!((r.action, r.offset, r.total), (WriteAction::Stat as i32, 11, 0));
    assert!(r.started_at.is_some() && r.updated_at.is_some());
    let hello_world = "sha256:b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";
    assert_eq!(r.digest, hello_world);
    // A write away from the current offset is refused.
    let err = g.send(&mut w, write_at(5, b"x")).unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("must occur at its current offset 11"), "{err:?}");

    // The ingest survives the failed stream; offset 0 starts it over.
    let (mut w, offset) = g.open_write(Some("default"), stat("proto")).unwrap();
    assert_eq!(offset, 11);
    let r = g.send(&mut w, write_at(0, b"hello")).unwrap();
    assert_eq!(r.offset, 5);
    let commit = WriteContentRequest {
        action: WriteAction::Commit as i32,
        offset: 5,
        data: b" world".to_vec(),
        total: 11,
        expected: hello_world.into(),
        labels: [("from".to_string(), "grpc".to_string())].into(),
        ..Default::default()
    };
    let r = g.send(&mut w, commit).unwrap();
    assert_eq!((r.action, r.offset, r.digest.as_str()), (WriteAction::Commit as i32, 11, hello_world));
    assert_eq!(d.berthctl(&["content", "label", hello_world]).ok(), "from=grpc\n");

    // Reads honour offset and size and stay within the blob.
    let chunks = g.read("default", hello_world, 6, 3).unwrap();
    assert_eq!(chunks.len(), 1);
    assert_eq!((chunks[0].offset, chunks[0].data.as_slice()), (6, &b"wor"[..]));
    assert_eq!(g.read("default", hello_world, 6, 100).unwrap()[0].data, b"world");
    assert!(g.read("default", hello_world, 11, 0).unwrap().is_empty());
    assert_eq!(g.read("default", hello_world, 12, 0).unwrap_err().code(), Code::OutOfRange);

    // An expected digest the namespace has already is refused at once.
    let first = WriteContentRequest { expected: hello_world.into(), ..stat("dup") };
    assert_eq!(g.open_write(Some("default"), first).err().unwrap().code(), Code::AlreadyExists);
}

#[test]
fn large_reads_come_in_chunks_of_at_most_one_mib() {
    let d = Daemon::start();
    let bytes = data((2 << 20) + 12_345, 7);
    let (path, digest) = file_with(&d, "blob", &bytes);
    berthctl_in(&d, &["content", "ingest", "big"], &path).ok();
    let g = grpc(&d);
    let chunks = g.read("default", &digest, 0, 0).unwrap();
    assert!(chunks.iter().all(|c| c.data.len() <= 1 << 20), "chunk sizes {:?}", chunks.iter().map(|c| c.data.len()));
    let mut expected_offset = 0;
    for c in &chunks {
        assert_eq!(c.offset, expected_offset);
        expected_offset += c.data.len() as i64;
    }
    assert_eq!(chunks.into_iter().flat_map(|c| c.data).collect::<Vec<u8>>(), bytes);
    let tail = g.read("default", &digest, (2 << 20) + 12_000, 0).unwrap();
    assert_eq!(tail.iter().map(|c| c.data.len()).sum::<usize>(), 345);
}

#[test]
fn bad_digests_are_invalid_argument_and_a_namespace_is_required() {
    let d = Daemon::start();
    let g = grpc(&d);
    let mut c = g.client.clone();
    let missing = format!("sha256:{}", "0".repeat(64));
    g.rt.block_on(async {
        for bad in ["", "nope", "sha256:xyz", "md5:d41d8cd98f00b204e9800998ecf8427e", "sha256:ABC"] {
            let err = c.info(in_ns("default", InfoRequest { digest: bad.into() })).await.unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "info {bad:?}: {err:?}");
            let err = c.delete(in_ns("default", DeleteContentRequest { digest: bad.into() })).await.unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "delete {bad:?}: {err:?}");
            let req =
                UpdateRequest { info: Some(Info { digest: bad.into(), ..Default::default() }), update_mask: None };
            assert_eq!(c.update(in_ns("default", req)).await.unwrap_err().code(), Code::InvalidArgument);
        }
        let err = c.info(in_ns("default", InfoRequest { digest: missing.clone() })).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{err:?}");
        let err = c.status(in_ns("default", StatusRequest { r#ref: "none".into() })).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{err:?}");
        let err = c.abort(in_ns("default", AbortRequest { r#ref: "none".into() })).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{err:?}");
        let err = c.list_statuses(in_ns("default", ListStatusesRequest { filters: vec!["ref==".into()] })).await;
        assert_eq!(err.unwrap_err().code(), Code::InvalidArgument);

        // No namespace header: refused, as containerd.
        let err = c.info(Request::new(InfoRequest { digest: missing.clone() })).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert!(err.message().contains("namespace is required"), "{err:?}");
        let err = c.list_statuses(Request::new(ListStatusesRequest::default())).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
    });
    let mut g = g;
    assert_eq!(g.read("default", "sha256:short", 0, 0).unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(g.open_write(None, stat("r")).err().unwrap().code(), Code::FailedPrecondition);
    let bad_expected = WriteContentRequest { expected: "sha256:nope".into(), ..stat("r") };
    assert_eq!(g.open_write(Some("default"), bad_expected).err().unwrap().code(), Code::InvalidArgument);
    assert_eq!(g.open_write(Some("default"), stat("")).err().unwrap().code(), Code::InvalidArgument);

    let out = d.berthctl(&["content", "get", "sha256:xyz"]);
    assert!(out.err().contains("invalid argument"), "{}", out.stderr);
    let out = d.berthctl(&["content", "label", "nope", "a=b"]);
    assert!(out.err().contains("invalid argument"), "{}", out.stderr);
    if let Some(out) = d.ctr(&["content", "label", &missing, "a=b"]) {
        assert!(out.err().contains("not found"), "{}", out.stderr);
    }
}

#[test]
fn content_plugins_are_listed_with_the_store_root() {
    let d = Daemon::start();
    let out = d.berthctl(&["plugins", "ls", "-d", "id==content"]).ok().to_string();
    assert!(out.contains(&format!("root={}", d.root.join("content").display())), "{out}");
    let table = d.berthctl(&["plugins", "ls"]).ok().to_string();
    for ty in ["io.berth.content.v1", "io.berth.grpc.v1"] {
        let row = table.lines().find(|l| l.starts_with(ty) && l.split_whitespace().nth(1) == Some("content"));
        assert!(row.is_some_and(|r| r.ends_with("ok")), "{ty} content missing or not ok:\n{table}");
    }
}

#[test]
fn a_lease_holds_ingested_content_until_it_is_deleted() {
    let d = Daemon::start();
    let (path, digest) = file_with(&d, "blob", &data(50_000, 8));
    let (rooted_path, rooted) = file_with(&d, "rooted", &data(1000, 9));
    let lease = d.berthctl(&["leases", "create", "--id", "hold"]).ok().trim().to_string();
    assert_eq!(berthctl_in(&d, &["content", "ingest", "held", "--lease", &lease], &path).ok().trim(), digest);
    let out = berthctl_in(&d, &["content", "ingest", "kept", "--label", "containerd.io/gc.root=yes"], &rooted_path);
    assert_eq!(out.ok().trim(), rooted);

    d.berthctl(&["gc"]).ok();
    let mut both = vec![digest.clone(), rooted.clone()];
    both.sort();
    let listed: Vec<String> = d.berthctl(&["content", "ls", "-q"]).ok().lines().map(str::to_string).collect();
    assert_eq!(listed, both, "the lease keeps its blob through a collection");
    d.berthctl(&["leases", "rm", "--sync", &lease]).ok();
    assert_eq!(d.berthctl(&["content", "ls", "-q"]).ok(), format!("{rooted}\n"), "only the rooted blob is left");
    assert_eq!(blob_files(&d.root), [rooted.trim_start_matches("sha256:")]);

    let missing = berthctl_in(&d, &["content", "ingest", "x", "--lease", "no-such-lease"], &path);
    assert!(missing.err().contains("not found"), "{}", missing.stderr);
}
