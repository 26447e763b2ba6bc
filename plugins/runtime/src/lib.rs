//! The shim manager: one `berth-shim` per task, its bundle in `<state>/shims/<ns>/<id>/`
//! (`config.json`, `rootfs/`, `shim.sock`, `address`, `shim.pid`, `shim.log`), a client of
//! its task API ([`client`]), and a forwarder that publishes the events the shim queues (exits, OOMs) and
//! acknowledges them so the shim can drop them. On start the manager reconnects to every
//! shim left in the state directory and cleans up the bundles of dead ones.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub mod client;

use berth_core::{identifiers, Error, Result};
use berth_proto::berth::shim::v1::{AckEventsRequest, ConnectRequest, EventsRequest, ShutdownRequest};
pub use client::ShimClient;

/// Publishes an event: namespace, topic, timestamp, payload.
pub type Publisher = Arc<dyn Fn(&str, &str, Option<prost_types::Timestamp>, prost_types::Any) + Send + Sync>;

/// A running shim and its client.
pub struct Shim {
    /// Namespace of the task.
    pub namespace: String,
    /// Container id.
    pub id: String,
    /// Bundle directory.
    pub bundle: PathBuf,
    /// The shim's pid.
    pub pid: u32,
    /// Client of the shim's task API.
    pub client: ShimClient,
}

/// Starts, tracks and reconnects shims.
pub struct ShimManager {
    shims_dir: PathBuf,
    shim_binary: PathBuf,
    publish: Publisher,
    shims: Mutex<HashMap<(String, String), Arc<Shim>>>,
}

fn internal(what: &str, e: impl std::fmt::Display) -> Error {
    Error::internal(format!("{what}: {e}"))
}

/// The `berth-shim` binary: beside the running executable, else on PATH.
pub fn default_shim_binary() -> PathBuf {
    if let Some(dir) = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)) {
        let p = dir.join("berth-shim");
        if p.is_file() {
            return p;
        }
    }
    PathBuf::from("berth-shim")
}

impl ShimManager {
    /// A manager keeping bundles under `state/shims`.
    pub fn new(state: &Path, shim_binary: PathBuf, publish: Publisher) -> ShimManager {
        ShimManager { shims_dir: state.join("shims"), shim_binary, publish, shims: Mutex::new(HashMap::new()) }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Arc<Shim>>> {
        self.shims.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where shims keep compiled seccomp programs: `<state>/seccomp-cache`, shared by all.
    fn seccomp_cache(&self) -> PathBuf {
        self.shims_dir.with_file_name("seccomp-cache")
    }

    /// The bundle directory of a task.
    pub fn bundle(&self, ns: &str, id: &str) -> PathBuf {
        self.shims_dir.join(ns).join(id)
    }

    /// The shim of task `id` in `ns`; NotFound if none.
    pub fn get(&self, ns: &str, id: &str) -> Result<Arc<Shim>> {
        self.map()
            .get(&(ns.to_string(), id.to_string()))
            .cloned()
            .ok_or_else(|| Error::not_found(format!("task {id:?}")))
    }

    /// The shims of `ns`, ordered by id.
    pub fn list(&self, ns: &str) -> Vec<Arc<Shim>> {
        let mut v: Vec<_> = self.map().values().filter(|s| s.namespace == ns).cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Writes the bundle (`config.json` = `spec`) and starts a shim for it. AlreadyExists if
    /// the task has one.
    pub async fn start(&self, ns: &str, id: &str, spec: &[u8]) -> Result<Arc<Shim>> {
        identifiers::validate(id)?;
        prewarm_cgroup_attach();
        let key = (ns.to_string(), id.to_string());
        if self.map().contains_key(&key) {
            return Err(Error::already_exists(format!("task {id:?}")));
        }
        let bundle = self.bundle(ns, id);
        if bundle.exists() {
            return Err(Error::already_exists(format!("task {id:?} (bundle {} exists)", bundle.display())));
        }
        let mut value: serde_json::Value = serde_json::from_slice(spec)
            .map_err(|e| Error::invalid_argument(format!("container spec is not JSON: {e}")))?;
        // The shim mounts the rootfs at `<bundle>/rootfs`.
        if let Some(root) = value.get_mut("root").and_then(|r| r.as_object_mut()) {
            root.insert("path".into(), "rootfs".into());
        } else if let Some(obj) = value.as_object_mut() {
            obj.insert("root".into(), serde_json::json!({ "path": "rootfs" }));
        }
        std::fs::create_dir_all(&bundle).map_err(|e| internal("create bundle", e))?;
        let result = async {
            std::fs::write(bundle.join("config.json"), serde_json::to_vec(&value).unwrap_or_default())
                .map_err(|e| internal("write config.json", e))?;
            let out = tokio::process::Command::new(&self.shim_binary)
                .arg("--namespace")
                .arg(ns)
                .arg("--id")
                .arg(id)
                .arg("--bundle")
                .arg(&bundle)
                .arg("--seccomp-cache")
                .arg(self.seccomp_cache())
                .stdin(std::process::Stdio::null())
                .output()
                .await
                .map_err(|e| internal(&format!("run {}", self.shim_binary.display()), e))?;
            if !out.status.success() {
                return Err(Error::internal(format!(
                    "berth-shim failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            self.connect(ns, id, &bundle).await
        }
        .await;
        match result {
            Ok(shim) => Ok(shim),
            Err(e) => {
                self.kill_shim_of(&bundle);
                let _ = std::fs::remove_dir_all(&bundle);
                Err(e)
            }
        }
    }

    async fn connect(&self, ns: &str, id: &str, bundle: &Path) -> Result<Arc<Shim>> {
        let mut client = ShimClient::new(&bundle.join("shim.sock"));
        let resp = tokio::time::timeout(Duration::from_secs(5), client.connect(ConnectRequest { id: id.into() }))
            .await
            .map_err(|_| Error::unavailable("shim did not answer Connect"))?
            .map_err(|s| Error::unavailable(format!("shim Connect: {}", s.message())))?
            .into_inner();
        let shim = Arc::new(Shim {
            namespace: ns.into(),
            id: id.into(),
            bundle: bundle.to_path_buf(),
            pid: resp.shim_pid,
            client: client.clone(),
        });
        self.map().insert((ns.into(), id.into()), shim.clone());
        self.forward_events(ns.to_string(), client);
        Ok(shim)
    }

    fn forward_events(&self, ns: String, mut client: ShimClient) {
        let publish = self.publish.clone();
        tokio::spawn(async move {
            let Ok(resp) = client.events(EventsRequest {}).await else { return };
            let mut stream = resp.into_inner();
            while let Ok(Some(ev)) = stream.message().await {
                if let Some(any) = ev.event {
                    publish(&ns, &ev.topic, ev.timestamp, any);
                }
                let _ = client.ack_events(AckEventsRequest { seq: ev.seq }).await;
            }
        });
    }

    fn kill_shim_of(&self, bundle: &Path) {
        let pid = std::fs::read_to_string(bundle.join("shim.pid")).ok().and_then(|s| s.trim().parse::<i32>().ok());
        if let Some(pid) = pid.filter(|p| *p > 1) {
            // SAFETY: signalling the shim recorded in its own bundle.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = berth_mount::unmount_all(&bundle.join("rootfs"), libc::MNT_DETACH);
    }

    /// Stops a task's shim (after its Delete) and removes its bundle.
    pub async fn remove(&self, ns: &str, id: &str) {
        let shim = self.map().remove(&(ns.to_string(), id.to_string()));
        let bundle = self.bundle(ns, id);
        if let Some(shim) = shim {
            let mut client = shim.client.clone();
            let req = ShutdownRequest { id: id.into(), now: true };
            if tokio::time::timeout(Duration::from_secs(5), client.shutdown(req)).await.is_err() {
                self.kill_shim_of(&bundle);
            }
        }
        let _ = berth_mount::unmount_all(&bundle.join("rootfs"), libc::MNT_DETACH);
        if let Err(e) = std::fs::remove_dir_all(&bundle) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(bundle = %bundle.display(), error = %e, "cannot remove bundle");
            }
        }
    }

    /// Reconnects to the shims left in the state directory. For a dead shim it reports the
    /// task's exit: the status the shim recorded in `init.exit` if its init had exited, else
    /// it kills what is left in the container's cgroup and reports 137 (SIGKILL); then it
    /// removes the bundle.
    pub async fn restore(&self) {
        let Ok(namespaces) = std::fs::read_dir(&self.shims_dir) else { return };
        for ns in namespaces.flatten() {
            let ns_name = ns.file_name().to_string_lossy().to_string();
            let Ok(tasks) = std::fs::read_dir(ns.path()) else { continue };
            for t in tasks.flatten() {
                let id = t.file_name().to_string_lossy().to_string();
                let bundle = t.path();
                match self.connect(&ns_name, &id, &bundle).await {
                    Ok(_) => tracing::info!(namespace = %ns_name, task = %id, "reconnected to shim"),
                    Err(e) => {
                        tracing::warn!(namespace = %ns_name, task = %id, error = %e, "shim is gone; cleaning up");
                        self.kill_shim_of(&bundle);
                        let (exit_status, pid, exited_at) = match read_init_exit(&bundle) {
                            Some(exit) => exit,
                            None => {
                                // The container outlived its shim: nobody can report its exit
                                // any more, so it is killed, as containerd does.
                                kill_container_cgroup(&bundle);
                                (128 + libc::SIGKILL as u32, 0, std::time::SystemTime::now())
                            }
                        };
                        let _ = std::fs::remove_dir_all(&bundle);
                        tracing::info!(namespace = %ns_name, task = %id, exit_status, "task of a dead shim exited");
                        let exit = berth_proto::containerd::events::TaskExit {
                            container_id: id.clone(),
                            id: id.clone(),
                            pid,
                            exit_status,
                            exited_at: Some(exited_at.into()),
                        };
                        (self.publish)(&ns_name, "/tasks/exit", None, berth_proto::to_any(&exit));
                    }
                }
            }
        }
    }
}

/// Starts, on a short-lived thread, a no-op cgroup migration: berthd writes its own pid into
/// the `cgroup.procs` of the cgroup it is already in.
///
/// Why: every write to a `cgroup.procs` takes the kernel's global cgroup threadgroup rwsem
/// for writing, and the first writer after a quiet spell waits for an RCU grace period
/// before it gets it (measured here: 8-22 ms); writers within some tens of milliseconds after
/// that pass at once (about 0.1 ms). The runtime's move of the container's init into its new
/// cgroup is such a write, on the critical path of every container start. Issued when the
/// task is created, this write waits out the grace period while the shim starts and the
/// rootfs is mounted, and the runtime's write then finds the lock ready. It moves nothing,
/// changes nothing, and is best effort: any failure is ignored.
///
/// At most one such write starts per 20 ms: in a burst of creates one write keeps the lock
/// ready for all of them, and more would only queue on the kernel's cgroup mutex.
fn prewarm_cgroup_attach() {
    use std::sync::atomic::{AtomicU64, Ordering};
    static TARGET: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    static LAST_MS: AtomicU64 = AtomicU64::new(0);
    let now_ms = EPOCH.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64 + 1_000;
    let last = LAST_MS.load(Ordering::Relaxed);
    if now_ms.saturating_sub(last) < 20
        || LAST_MS.compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed).is_err()
    {
        return;
    }
    let Some(path) =
        TARGET.get_or_init(|| own_cgroup_procs(&std::fs::read_to_string("/proc/self/cgroup").ok()?)).clone()
    else {
        return;
    };
    let _ = std::thread::Builder::new().name("cgroup-prewarm".into()).spawn(move || {
        let _ = std::fs::write(&path, std::process::id().to_string());
    });
}

/// The `cgroup.procs` of this process's own cgroup, from `/proc/self/cgroup` text: in a v1
/// hierarchy of its own (pids, freezer or devices) if there is one, else in the unified one.
fn own_cgroup_procs(proc_self_cgroup: &str) -> Option<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut unified = None;
    for line in proc_self_cgroup.lines() {
        let mut f = line.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        let rel = path.trim_start_matches('/');
        if rel.split('/').any(|c| c == "..") {
            continue;
        }
        if matches!(controllers, "pids" | "freezer" | "devices") {
            let p = root.join(controllers).join(rel).join("cgroup.procs");
            if p.is_file() {
                return Some(p);
            }
        } else if controllers.is_empty() {
            unified = [root.join(rel), root.join("unified").join(rel)]
                .into_iter()
                .map(|d| d.join("cgroup.procs"))
                .find(|p| p.is_file());
        }
    }
    unified
}

/// The init exit a shim recorded in `bundle/init.exit`: `CODE PID SECS.NANOS`.
fn read_init_exit(bundle: &Path) -> Option<(u32, u32, std::time::SystemTime)> {
    let text = std::fs::read_to_string(bundle.join("init.exit")).ok()?;
    let mut it = text.split_whitespace();
    let code = it.next()?.parse().ok()?;
    let pid = it.next()?.parse().ok()?;
    let (secs, nanos) = it.next()?.split_once('.')?;
    let at = std::time::UNIX_EPOCH + Duration::new(secs.parse().ok()?, nanos.parse().ok()?);
    Some((code, pid, at))
}

/// SIGKILLs every process in the cgroup named by the bundle's `linux.cgroupsPath` (each v1
/// controller hierarchy, and the unified one), then removes those cgroups.
fn kill_container_cgroup(bundle: &Path) {
    let Ok(data) = std::fs::read(bundle.join("config.json")) else { return };
    let Ok(spec) = serde_json::from_slice::<serde_json::Value>(&data) else { return };
    let Some(path) = spec.pointer("/linux/cgroupsPath").and_then(|p| p.as_str()) else { return };
    let rel = path.trim_start_matches('/');
    if rel.is_empty() || rel.split('/').any(|c| c == "..") {
        return;
    }
    let mut dirs = vec![Path::new("/sys/fs/cgroup").join(rel)];
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        dirs.extend(entries.flatten().map(|e| e.path().join(rel)));
    }
    dirs.retain(|d| d.join("cgroup.procs").is_file());
    // A paused container's processes die only once thawed.
    for d in &dirs {
        let _ = std::fs::write(d.join("freezer.state"), "THAWED");
        if d.join("cgroup.freeze").is_file() {
            let _ = std::fs::write(d.join("cgroup.freeze"), "0");
        }
    }
    for _ in 0..50 {
        let mut alive = false;
        for d in &dirs {
            let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()).filter(|p| *p > 1) {
                alive = true;
                // SAFETY: signalling a process of the container's own cgroup.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if !alive {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for d in &dirs {
        let _ = std::fs::remove_dir(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cgroup_procs_is_the_file_that_lists_this_process() {
        let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let path = own_cgroup_procs(&text).expect("a cgroup.procs for this process");
        let procs = std::fs::read_to_string(&path).unwrap();
        let me = std::process::id().to_string();
        assert!(procs.lines().any(|l| l == me), "{} does not list {me}", path.display());
        // Paths that climb out, and lines that are not cgroup lines, give nothing.
        assert_eq!(own_cgroup_procs("8:pids:/../../etc\n0::/../x\n"), None);
        assert_eq!(own_cgroup_procs("garbage"), None);
    }
}
