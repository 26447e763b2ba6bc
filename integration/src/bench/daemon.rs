//! Daemon benchmarks, berthd vs containerd 1.6 (Debian), both started on their own temporary
//! root, state and socket: start-up until the API answers, resident memory when idle, and
//! latency of core API calls made by the same client over the same kind of socket.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

use super::{median, wait_until, Report, Row};
use crate::bin;

const STARTS: usize = 10;
const CALLS: usize = 2000;

/// A daemon under test, stopped (SIGTERM, then SIGKILL) when dropped.
pub(crate) struct Proc {
    pub(crate) child: Child,
    pub(crate) socket: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the daemon serves a Version RPC on `socket` (berthd binds before its plugins are
/// loaded, so an accepting socket alone would flatter it).
fn answers(socket: &Path) -> bool {
    use berth_proto::containerd::services::version::v1::version_client::VersionClient;
    if std::os::unix::net::UnixStream::connect(socket).is_err() {
        return false;
    }
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return false };
    let socket = socket.to_path_buf();
    rt.block_on(async move {
        let Ok(ch) = Endpoint::from_static("http://daemon")
            .connect_with_connector(tower::service_fn(move |_| {
                let s = socket.clone();
                async move { tokio::net::UnixStream::connect(s).await.map(TokioIo::new) }
            }))
            .await
        else {
            return false;
        };
        VersionClient::new(ch).version(()).await.is_ok()
    })
}

/// Starts berthd on `dir`; returns it and the milliseconds until it answered.
pub(crate) fn start_berthd(dir: &Path) -> (Proc, f64) {
    let socket = dir.join("state/berth.sock");
    let cfg = dir.join("config.toml");
    fs::write(&cfg, "version = 1\n").expect("config");
    let t = Instant::now();
    let child = Command::new(bin("berthd"))
        .arg("--config")
        .arg(&cfg)
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--state")
        .arg(dir.join("state"))
        .arg("--address")
        .arg(&socket)
        .args(["--log-level", "warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn berthd");
    let ok = wait_until(Duration::from_secs(30), || answers(&socket));
    let ms = t.elapsed().as_secs_f64() * 1e3;
    assert!(ok, "berthd did not start");
    (Proc { child, socket }, ms)
}

/// Starts containerd (CRI off) on `dir`; None when it is not installed or does not start.
pub(crate) fn start_containerd(dir: &Path) -> Option<(Proc, f64)> {
    let exe = crate::find_on_path("containerd")?;
    let socket = dir.join("state/containerd.sock");
    let cfg = dir.join("containerd.toml");
    // CRI is off: berthd has no CRI plugin yet, and it would dominate start-up.
    fs::write(
        &cfg,
        format!(
            "version = 2\nroot = \"{}\"\nstate = \"{}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\naddress = \"{}\"\n[ttrpc]\naddress = \"{}.ttrpc\"\n[plugins.\"io.containerd.internal.v1.opt\"]\npath = \"{}\"\n",
            dir.join("root").display(),
            dir.join("state").display(),
            socket.display(),
            socket.display(),
            dir.join("opt").display()
        ),
    )
    .ok()?;
    let t = Instant::now();
    let child = Command::new(exe).arg("--config").arg(&cfg).stdout(Stdio::null()).stderr(Stdio::null()).spawn().ok()?;
    let ok = wait_until(Duration::from_secs(30), || answers(&socket));
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let proc = Proc { child, socket };
    ok.then_some((proc, ms))
}

/// Resident and proportional set size of a process in MiB, from /proc.
fn rss_pss_mib(pid: u32) -> (f64, f64) {
    let rollup = super::smaps_rollup_kib(pid);
    let field = |name: &str| rollup.get(name).map_or(f64::NAN, |kb| kb / 1024.0);
    (field("Rss"), field("Pss"))
}

async fn channel(socket: PathBuf) -> Channel {
    Endpoint::from_static("http://daemon")
        .connect_with_connector(tower::service_fn(move |_| {
            let s = socket.clone();
            async move { tokio::net::UnixStream::connect(s).await.map(TokioIo::new) }
        }))
        .await
        .expect("connect")
}

/// Median microseconds per Version call and per namespace create+label+delete cycle.
fn api_latency(socket: &Path) -> (f64, f64) {
    use berth_proto::containerd::services::namespaces::v1::namespaces_client::NamespacesClient;
    use berth_proto::containerd::services::namespaces::v1::*;
    use berth_proto::containerd::services::version::v1::version_client::VersionClient;

    // containerd publishes namespace events in the caller's namespace, so send one.
    fn req<T>(msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.metadata_mut().insert("containerd-namespace", tonic::metadata::MetadataValue::from_static("default"));
        r
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let ch = channel(socket.to_path_buf()).await;
        let mut v = VersionClient::new(ch.clone());
        let mut samples = Vec::with_capacity(CALLS);
        for _ in 0..CALLS {
            let t = Instant::now();
            v.version(req(())).await.expect("version");
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let version = median(&samples);
        let mut ns = NamespacesClient::new(ch);
        samples.clear();
        for i in 0..CALLS / 4 {
            let name = format!("bench-{i}");
            let t = Instant::now();
            ns.create(req(CreateNamespaceRequest {
                namespace: Some(Namespace { name: name.clone(), labels: Default::default() }),
            }))
            .await
            .expect("create");
            let labels = [("k".to_string(), "v".to_string())].into();
            ns.update(req(UpdateNamespaceRequest {
                namespace: Some(Namespace { name: name.clone(), labels }),
                update_mask: Some(prost_types::FieldMask { paths: vec!["labels.k".into()] }),
            }))
            .await
            .expect("update");
            ns.delete(req(DeleteNamespaceRequest { name })).await.expect("delete");
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
        (version, median(&samples))
    })
}

/// Runs the daemon benchmarks into `report`.
pub fn run(report: &mut Report) {
    eprintln!("daemon: {STARTS} cold starts each, {CALLS} API calls each ...");
    let mut berth_start = Vec::new();
    let mut cd_start = Vec::new();
    let mut berth_mem = (f64::NAN, f64::NAN);
    let mut cd_mem = None;
    let mut berth_api = (f64::NAN, f64::NAN);
    let mut cd_api = None;
    let mut containerd_missing = false;
    for i in 0..STARTS {
        // Alternate who goes first so caches favour neither.
        let order = if i % 2 == 0 { [true, false] } else { [false, true] };
        for berth in order {
            let dir = tempfile::Builder::new().prefix("berth-bench-").tempdir().expect("tempdir");
            if berth {
                let (p, ms) = start_berthd(dir.path());
                berth_start.push(ms);
                if i == 0 {
                    std::thread::sleep(Duration::from_millis(300));
                    berth_mem = rss_pss_mib(p.child.id());
                    berth_api = api_latency(&p.socket);
                }
            } else if !containerd_missing {
                match start_containerd(dir.path()) {
                    Some((p, ms)) => {
                        cd_start.push(ms);
                        if i == 0 {
                            std::thread::sleep(Duration::from_millis(300));
                            cd_mem = Some(rss_pss_mib(p.child.id()));
                            cd_api = Some(api_latency(&p.socket));
                        }
                    }
                    None => containerd_missing = true,
                }
            }
        }
    }
    if containerd_missing {
        report.note("containerd is not installed (Debian package `containerd`): ratios skipped");
    }
    let cd = |v: Option<f64>| v.map(|x| ("containerd", x));
    let cd_start_med = (!cd_start.is_empty()).then(|| median(&cd_start));
    report.row(Row {
        what: "daemon start until Version RPC answers".into(),
        unit: "ms",
        berth: median(&berth_start),
        incumbent: cd(cd_start_med),
        lower_is_better: true,
    });
    report.row(Row {
        what: "idle daemon RSS".into(),
        unit: "MB",
        berth: berth_mem.0,
        incumbent: cd(cd_mem.map(|m| m.0)),
        lower_is_better: true,
    });
    report.row(Row {
        what: "idle daemon PSS".into(),
        unit: "MB",
        berth: berth_mem.1,
        incumbent: cd(cd_mem.map(|m| m.1)),
        lower_is_better: true,
    });
    report.row(Row {
        what: "Version RPC round trip".into(),
        unit: "us",
        berth: berth_api.0,
        incumbent: cd(cd_api.map(|a| a.0)),
        lower_is_better: true,
    });
    report.row(Row {
        what: "namespace create+label+delete (3 RPCs, fsync'd)".into(),
        unit: "us",
        berth: berth_api.1,
        incumbent: cd(cd_api.map(|a| a.1)),
        lower_is_better: true,
    });
}
