//! Container-run benchmarks: berthd vs containerd 1.6 with runc (Debian, runtime
//! `io.containerd.runc.v2`), both started on their own temporary root, state and socket, with
//! the same busybox test image imported beforehand, side by side in one run:
//!
//! - `berthctl run --rm IMG ID true` vs `ctr run --rm IMG ID true` end to end (a fresh id each
//!   time, who goes first alternating), and vs the runtime floor: `crun run` of a bundle
//!   prepared once (the image's rootfs extracted to a directory, `config.json` from `crun spec`
//!   with args `["true"]` and no terminal); `runc run` of the same bundle as a second reference;
//! - the same with equal security work: `berthctl run` applies Docker's default seccomp
//!   profile, `ctr run` and `crun spec`'s bundle apply none. So each incumbent also runs with
//!   one: `ctr run --seccomp` (containerd's default profile, Docker's) and the floor bundle
//!   with our default profile added (`berth_oci::default_profile` for the bundle's
//!   capabilities). Compiling and loading the filter costs every runtime several ms;
//! - resident memory of the shims per running container: 50 detached `sleep 3600` containers
//!   on each daemon, RSS, PSS and USS (Private_Clean + Private_Dirty, from smaps_rollup) of
//!   every berth-shim vs every containerd-shim-runc-v2 of our own daemons;
//! - 100 `run -d` started at once, wall time until all 100 are running.
//!
//! crun 1.8.1 refuses a hybrid cgroup layout (v1 controllers plus a cgroup2 mount at
//! /sys/fs/cgroup/unified). The floor therefore runs from a helper — this binary re-executed
//! with [`FLOOR_HELPER_ARG`], see [`floor_helper`] — that enters a private mount namespace,
//! detaches that cgroup2 mount there and then times each runtime invocation itself, so setting
//! up the namespace is outside the timed region. When crun still fails, `runc run` is the floor
//! and a note says so.
//!
//! Everything the containers leave (shims, container processes, mounts, cgroups, runtime state)
//! is cleaned up through the APIs, and on a panic by [`Cleanup`]. Runs as root only.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use super::daemon::{start_berthd, start_containerd, Proc};
use super::{berthctl, median, wait_until, Report, Row};
use crate::find_on_path;
use crate::images::{test_images, BUSYBOX};

/// Timed `run --rm … true` per runner (after warm-up runs).
const RUNS: usize = 21;
/// Untimed runs of each runner before the timed ones.
const WARMUP: usize = 2;
/// Sleeping containers per daemon for the memory figures.
const MEM_CONTAINERS: usize = 50;
/// Containers started at once in the burst benchmark.
const BURST: usize = 100;
/// Rounds of the burst benchmark per daemon.
const BURST_ROUNDS: usize = 3;
/// Cgroup (under each v1 controller) the floor's runtimes create and remove for each run.
const FLOOR_CGROUP: &str = "berth-bench-floor";

/// Hidden first argument of `berth-bench` that makes it the floor helper (see [`floor_helper`]).
pub const FLOOR_HELPER_ARG: &str = "__run-floor-helper";

/// Runs `cmd` (no stdin, stdout discarded) and returns its milliseconds, or its stderr.
fn timed(cmd: &mut Command) -> Result<f64, String> {
    let t = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("spawn {cmd:?}: {e}"))?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if out.status.success() {
        Ok(ms)
    } else {
        Err(format!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

#[track_caller]
fn timed_ok(cmd: &mut Command) -> f64 {
    timed(cmd).unwrap_or_else(|e| panic!("{e}"))
}

/// berthd under test and its state directory.
struct Berth {
    proc: Proc,
    state: PathBuf,
}

impl Berth {
    fn ctl(&self) -> Command {
        let mut c = berthctl(&self.proc.socket);
        c.env_remove("BERTH_NAMESPACE");
        c
    }

    fn run_rm(&self, id: &str) -> Command {
        let mut c = self.ctl();
        c.args(["run", "--rm", BUSYBOX, id, "true"]);
        c
    }

    fn run_detached(&self, id: &str) -> Command {
        let mut c = self.ctl();
        c.args(["run", "-d", BUSYBOX, id, "sleep", "3600"]);
        c
    }

    /// Kills and deletes the task, then the container and its snapshot.
    fn remove(&self, id: &str) {
        let _ = timed(self.ctl().args(["task", "rm", "-f", id]));
        let _ = timed(self.ctl().args(["container", "rm", id]));
    }

    fn shim_pids(&self, ids: &[String]) -> Vec<u32> {
        let files = ids.iter().map(|id| self.state.join("shims/default").join(id).join("shim.pid")).collect();
        shim_pids("berth-shim", &self.state.to_string_lossy(), files)
    }
}

/// containerd under test, with ctr's runc root and fifo dir inside its temp dir.
struct Containerd {
    proc: Proc,
    ctr: PathBuf,
    state: PathBuf,
    runc_root: PathBuf,
    fifo_dir: PathBuf,
}

impl Containerd {
    fn ctr(&self) -> Command {
        let mut c = Command::new(&self.ctr);
        c.arg("--address").arg(&self.proc.socket).env_remove("CONTAINERD_NAMESPACE");
        c
    }

    fn run(&self) -> Command {
        let mut c = self.ctr();
        c.args(["run", "--runtime", "io.containerd.runc.v2", "--runc-root"])
            .arg(&self.runc_root)
            .arg("--fifo-dir")
            .arg(&self.fifo_dir);
        c
    }

    fn run_rm(&self, id: &str, seccomp: bool) -> Command {
        let mut c = self.run();
        if seccomp {
            c.arg("--seccomp");
        }
        c.args(["--rm", BUSYBOX, id, "true"]);
        c
    }

    /// Detached without stdio, as `berthctl run -d`.
    fn run_detached(&self, id: &str) -> Command {
        let mut c = self.run();
        c.args(["-d", "--null-io", BUSYBOX, id, "sleep", "3600"]);
        c
    }

    fn remove(&self, id: &str) {
        if timed(self.ctr().args(["tasks", "rm", "-f", id])).is_err() {
            let _ = timed(self.ctr().args(["tasks", "kill", "-s", "SIGKILL", id]));
            wait_until(Duration::from_secs(10), || timed(self.ctr().args(["tasks", "rm", id])).is_ok());
        }
        let _ = timed(self.ctr().args(["containers", "rm", id]));
    }

    fn shim_pids(&self, ids: &[String]) -> Vec<u32> {
        let tasks = self.state.join("io.containerd.runtime.v2.task/default");
        let files = ids.iter().map(|id| tasks.join(id).join("shim.pid")).collect();
        shim_pids("containerd-shim-runc-v2", &self.proc.socket.to_string_lossy(), files)
    }
}

/// Pids of processes running `exe_name`: those named in `pid_files`, plus any other whose
/// command line mentions `marker` (our own daemon's state dir or socket), never other daemons'.
fn shim_pids(exe_name: &str, marker: &str, pid_files: Vec<PathBuf>) -> Vec<u32> {
    let is_shim = |pid: u32| {
        fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().trim_end_matches(" (deleted)").to_string()))
            .is_some_and(|n| n == exe_name)
    };
    let mut pids: Vec<u32> = pid_files.iter().filter_map(|f| read_pid(f)).filter(|p| is_shim(*p)).collect();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pids.contains(&pid) || !is_shim(pid) {
            continue;
        }
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).replace('\0', " ").contains(marker) {
            pids.push(pid);
        }
    }
    pids
}

fn read_pid(path: &Path) -> Option<u32> {
    let text = fs::read_to_string(path).ok()?;
    if let Ok(p) = text.trim().parse() {
        return Some(p);
    }
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["pid"].as_u64().map(|p| p as u32)
}

/// Sum of RSS, PSS and USS (Private_Clean + Private_Dirty) of `pids` in KiB.
fn memory_kib(pids: &[u32]) -> (f64, f64, f64) {
    let mut sum = (0.0, 0.0, 0.0);
    for pid in pids {
        let rollup = super::smaps_rollup_kib(*pid);
        let field = |name: &str| rollup.get(name).copied().unwrap_or(0.0);
        sum.0 += field("Rss");
        sum.1 += field("Pss");
        sum.2 += field("Private_Clean") + field("Private_Dirty");
    }
    sum
}

/// Runs `f` on every id from a pool of `threads` threads.
fn parallel(ids: &[String], threads: usize, f: impl Fn(&str) + Sync) {
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(id) = ids.get(i) else { break };
                f(id);
            });
        }
    });
}

/// Spawns all of `cmds` at once and returns the milliseconds until the last has exited
/// (each must succeed).
fn burst(cmds: Vec<Command>) -> f64 {
    let t = Instant::now();
    let children: Vec<(String, Child)> = cmds
        .into_iter()
        .map(|mut c| {
            let what = format!("{c:?}");
            let child = c
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
            (what, child)
        })
        .collect();
    let mut failures = Vec::new();
    for (what, child) in children {
        let out = child.wait_with_output().expect("wait");
        if !out.status.success() {
            failures.push(format!("{what}: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
    }
    let ms = t.elapsed().as_secs_f64() * 1e3;
    assert!(failures.is_empty(), "{} of {} failed, e.g. {}", failures.len(), BURST, failures[0]);
    ms
}

// ---------------------------------------------------------------------------------------------
// The floor: an OCI runtime on a prepared bundle, timed by a helper in its own mount namespace.

/// Entry point of the floor helper, `berth-bench __run-floor-helper ROOT BUNDLE RUNTIME [ARG…]`:
/// enters a private mount namespace, detaches a cgroup2 mount at /sys/fs/cgroup/unified there
/// (hybrid layout; crun refuses it), prints `ready`, then for each container id read from stdin
/// runs `RUNTIME [ARG…] --root ROOT run --bundle BUNDLE ID` and prints `ok MILLISECONDS` or
/// `err MESSAGE`. Exits at the end of stdin. Returns the exit code.
pub fn floor_helper(args: &[String]) -> i32 {
    let [root, bundle, runtime, runtime_args @ ..] = args else {
        eprintln!("usage: berth-bench {FLOOR_HELPER_ARG} ROOT BUNDLE RUNTIME [ARG…]");
        return 2;
    };
    if let Err(e) = private_mounts_without_unified() {
        println!("err {e}");
        return 1;
    }
    println!("ready");
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    for line in stdin.lock().lines() {
        let Ok(id) = line else { break };
        let mut cmd = Command::new(runtime);
        cmd.args(runtime_args).arg("--root").arg(root).arg("run").arg("--bundle").arg(bundle).arg(id.trim());
        let reply = match timed(&mut cmd) {
            Ok(ms) => format!("ok {ms}"),
            Err(e) => format!("err {}", e.replace('\n', " ")),
        };
        if writeln!(stdout, "{reply}").and_then(|_| stdout.flush()).is_err() {
            break;
        }
    }
    0
}

/// unshare(CLONE_NEWNS), everything private, then detach /sys/fs/cgroup/unified when it is a
/// cgroup2 mount (leaving a pure v1 layout that crun accepts).
fn private_mounts_without_unified() -> Result<(), String> {
    let errno = || std::io::Error::last_os_error();
    // SAFETY: plain syscalls on our own (single-threaded, freshly exec'd) process.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(format!("unshare(CLONE_NEWNS): {}", errno()));
        }
        let root = c"/";
        if libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return Err(format!("make / rprivate: {}", errno()));
        }
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let unified = mountinfo.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let sep = f.iter().position(|x| *x == "-");
        f.get(4) == Some(&"/sys/fs/cgroup/unified") && sep.and_then(|s| f.get(s + 1)) == Some(&"cgroup2")
    });
    if unified {
        // SAFETY: as above; only our private mount namespace changes.
        if unsafe { libc::umount2(c"/sys/fs/cgroup/unified".as_ptr(), libc::MNT_DETACH) } != 0 {
            return Err(format!("umount /sys/fs/cgroup/unified: {}", errno()));
        }
    }
    Ok(())
}

/// A running floor helper for one runtime.
struct Floor {
    name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Floor {
    /// Starts the helper for `runtime` and checks that one `run` of the bundle succeeds.
    fn start(name: &'static str, runtime: &[&str], root: &Path, bundle: &Path) -> Result<Floor, String> {
        fs::create_dir_all(root).map_err(|e| format!("{}: {e}", root.display()))?;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .arg(FLOOR_HELPER_ARG)
            .arg(root)
            .arg(bundle)
            .args(runtime)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawn the floor helper: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut floor = Floor { name, child, stdin, stdout };
        match floor.read_line()?.as_str() {
            "ready" => Ok(floor),
            other => Err(other.trim_start_matches("err ").to_string()),
        }
    }

    fn read_line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(0) | Err(_) => Err(format!("the {} floor helper exited", self.name)),
            Ok(_) => Ok(line.trim_end().to_string()),
        }
    }

    /// Milliseconds of one `run` of the bundle as container `id`, timed by the helper.
    fn run(&mut self, id: &str) -> Result<f64, String> {
        let stdin = self.stdin.as_mut().ok_or("helper stdin closed")?;
        writeln!(stdin, "{id}").and_then(|_| stdin.flush()).map_err(|e| e.to_string())?;
        let line = self.read_line()?;
        match line.strip_prefix("ok ") {
            Some(ms) => ms.parse().map_err(|_| line.clone()),
            None => Err(line.trim_start_matches("err ").to_string()),
        }
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// The bundle of the floor under `dir`: busybox's layers extracted into `rootfs`, and a spec
/// from `SPEC_TOOL spec` with args `["true"]`, no terminal, and cgroups at [`FLOOR_CGROUP`].
fn prepare_bundle(dir: &Path, spec_tool: &Path) -> Result<PathBuf, String> {
    let set = test_images().ok_or("no test images")?;
    let image = set.get("busybox");
    let oci = dir.join("oci");
    let bundle = dir.join("bundle");
    let rootfs = bundle.join("rootfs");
    fs::create_dir_all(&oci).and_then(|_| fs::create_dir_all(&rootfs)).map_err(|e| e.to_string())?;
    timed(Command::new("tar").arg("-xf").arg(set.path(&image.oci_archive)).arg("-C").arg(&oci))?;
    for l in &image.host().layers {
        let blob = oci.join("blobs/sha256").join(l.blob.hex());
        timed(Command::new("tar").arg("-xf").arg(blob).arg("-C").arg(&rootfs))?;
    }
    timed(Command::new(spec_tool).arg("spec").current_dir(&bundle))?;
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&fs::read(&path).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    spec["process"]["args"] = serde_json::json!(["true"]);
    spec["process"]["terminal"] = false.into();
    spec["linux"]["cgroupsPath"] = format!("/{FLOOR_CGROUP}").into();
    fs::write(&path, serde_json::to_vec_pretty(&spec).expect("json")).map_err(|e| e.to_string())?;
    Ok(bundle)
}

/// A second floor bundle beside `bundle`, `bundle-seccomp`: the same rootfs and spec plus
/// the seccomp profile `berthctl run` applies (Docker's default, for the spec's bounding
/// capabilities), so the floor does the same security work as berth.
fn seccomp_bundle(bundle: &Path) -> Result<PathBuf, String> {
    let mut spec: serde_json::Value =
        serde_json::from_slice(&fs::read(bundle.join("config.json")).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    let caps: Vec<String> = spec
        .pointer("/process/capabilities/bounding")
        .and_then(|c| c.as_array())
        .map(|a| a.iter().filter_map(|c| c.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let caps: Vec<&str> = caps.iter().map(String::as_str).collect();
    spec["linux"]["seccomp"] = berth_oci::default_profile(&caps);
    spec["root"]["path"] = bundle.join("rootfs").to_string_lossy().into_owned().into();
    let dir = bundle.with_file_name("bundle-seccomp");
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&spec).expect("json")).map_err(|e| e.to_string())?;
    Ok(dir)
}

// ---------------------------------------------------------------------------------------------
// Clean-up.

/// On drop, removes whatever the containers of both daemons and the floor left: kills shims
/// and container processes found through their pid files, deletes the floor runtimes'
/// containers, unmounts everything under the bench dir and removes our containers' cgroups.
struct Cleanup {
    dir: PathBuf,
    prefix: String,
    /// Shared parent directories (cgroup parents, containerd-shim's socket dir) that did not
    /// exist before the bench: removed at the end when empty.
    new_parents: Vec<PathBuf>,
}

impl Cleanup {
    fn new(dir: PathBuf, prefix: String) -> Cleanup {
        let mut parents = vec![PathBuf::from("/run/containerd"), PathBuf::from("/run/containerd/s")];
        for h in fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
            for p in ["default", "berth", "berth/default"] {
                parents.push(h.path().join(p));
            }
        }
        parents.retain(|p| !p.exists());
        parents.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        Cleanup { dir, prefix, new_parents: parents }
    }

    fn berth_state(&self) -> PathBuf {
        self.dir.join("berth/state")
    }

    fn containerd_state(&self) -> PathBuf {
        self.dir.join("containerd/state")
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // berthd's shims, container processes, rootfs mounts and cgroups.
        drop(crate::leftovers::Leftovers(self.berth_state()));
        // containerd's: shim.pid and init.pid in each bundle.
        let tasks = self.containerd_state().join("io.containerd.runtime.v2.task");
        for ns in fs::read_dir(&tasks).into_iter().flatten().flatten() {
            for b in fs::read_dir(ns.path()).into_iter().flatten().flatten() {
                for f in ["init.pid", "shim.pid"] {
                    if let Some(pid) = read_pid(&b.path().join(f)).filter(|p| *p > 1) {
                        // SAFETY: killing a process this bench started (through containerd).
                        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    }
                }
            }
        }
        // The floor runtimes' containers (only after a failed run).
        let roots = [
            ("crun", "crun-root"),
            ("crun", "crun+seccomp-root"),
            ("runc", "runc-root"),
            ("runc", "runc+seccomp-root"),
        ];
        for (runtime, root) in roots {
            let root = self.dir.join(root);
            for c in fs::read_dir(&root).into_iter().flatten().flatten() {
                let _ = Command::new(runtime)
                    .arg("--root")
                    .arg(&root)
                    .args(["delete", "-f"])
                    .arg(c.file_name())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        for m in mounts_under(&self.dir) {
            let _ = Command::new("umount").arg("-l").arg(&m).stderr(Stdio::null()).status();
        }
        for c in leftover_cgroups(&self.prefix) {
            let _ = fs::remove_dir(c);
        }
        for p in &self.new_parents {
            let _ = fs::remove_dir(p);
        }
    }
}

/// Mounts a tmpfs at `path` (created first) and returns the path; unmounted by [`Cleanup`]
/// with the rest.
fn tmpfs(path: &Path) -> PathBuf {
    fs::create_dir_all(path).expect("mkdir");
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "mode=0711", "tmpfs"])
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "mount a tmpfs at {}", path.display());
    path.to_path_buf()
}

/// Mount points under `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> =
        text.lines().filter_map(|l| l.split(' ').nth(4)).map(PathBuf::from).filter(|p| p.starts_with(dir)).collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

/// Cgroups of our containers still present: `berth/default/PREFIX*` (berthd),
/// `default/PREFIX*` (ctr's default), and the floor's, under every hierarchy.
fn leftover_cgroups(prefix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for h in fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        let floor = h.path().join(FLOOR_CGROUP);
        if floor.is_dir() {
            out.push(floor);
        }
        for parent in ["berth/default", "default"] {
            for c in fs::read_dir(h.path().join(parent)).into_iter().flatten().flatten() {
                if c.file_name().to_string_lossy().starts_with(prefix) {
                    out.push(c.path());
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// Runs the container-run benchmarks into `report`.
pub fn run(report: &mut Report) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        report.note("run benchmarks need root: skipped");
        return;
    }
    let Some(set) = test_images() else {
        report.note("busybox-static not installed (no test image): run benchmarks skipped");
        return;
    };
    let archive = set.path(&set.get("busybox").docker_archive);
    let tmp = tempfile::Builder::new().prefix("berth-bench-run-").tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    let prefix = format!("bb{}-", std::process::id());
    // Declared before the daemons, so it runs after they have stopped (and before the temp dir
    // goes).
    let cleanup = Cleanup::new(dir.clone(), prefix.clone());
    let load_before = load_average();

    eprintln!("run: starting berthd and containerd, importing busybox ...");
    // Runtime state lives on tmpfs, as under /run in production (berthd's /run/berth,
    // containerd's /run/containerd, runc's and crun's roots): on this ext4 root, state files
    // rewritten with O_TRUNC on every start cost several ms and most of the variance.
    fs::create_dir_all(dir.join("berth")).expect("mkdir");
    // The bench's own mounts, not leftovers of the containers.
    let mut own_mounts: Vec<PathBuf> = Vec::new();
    for d in ["berth/state", "containerd/state", "containerd/runc", "containerd/fifo"] {
        own_mounts.push(tmpfs(&dir.join(d)));
    }
    report.note("runtime state of both daemons, ctr's runc root and fifos, and the floors' roots on tmpfs (as /run)");
    let (proc, _) = start_berthd(&dir.join("berth"));
    let berth = Berth { proc, state: cleanup.berth_state() };
    timed_ok(berth.ctl().args(["image", "import"]).arg(&archive));

    let ctr = find_on_path("ctr");
    let containerd = ctr.and_then(|ctr| {
        let d = dir.join("containerd");
        fs::create_dir_all(&d).ok()?;
        let (proc, _) = start_containerd(&d)?;
        let c = Containerd {
            proc,
            ctr,
            state: cleanup.containerd_state(),
            runc_root: d.join("runc"),
            fifo_dir: d.join("fifo"),
        };
        timed_ok(c.ctr().args(["images", "import"]).arg(&archive));
        Some(c)
    });
    if containerd.is_none() {
        report.note("containerd/ctr not installed or not starting: run ratios against containerd skipped");
    }

    // The floors: crun in its helper, runc likewise; crun failing makes runc the floor.
    let spec_tool = find_on_path("crun").or_else(|| find_on_path("runc"));
    let bundle = spec_tool.as_deref().map(|t| prepare_bundle(&dir.join("floor"), t));
    // Floors: (name, helper); crun first, runc second, each without and with seccomp.
    let mut floors: Vec<(&'static str, Floor)> = Vec::new();
    match &bundle {
        Some(Ok(bundle)) => {
            let sc_bundle = seccomp_bundle(bundle);
            if let Err(e) = &sc_bundle {
                report.note(format!("seccomp floor bundle not prepared ({e}): its rows skipped"));
            }
            let version = |tool: &str| {
                Command::new(tool)
                    .arg("--version")
                    .output()
                    .ok()
                    .and_then(|o| String::from_utf8(o.stdout).ok())
                    .and_then(|s| s.lines().next().map(str::to_string))
                    .unwrap_or_default()
            };
            let runtimes: [(&str, &[&str]); 2] =
                [("crun", &["crun", "--cgroup-manager=cgroupfs"]), ("runc", &["runc"])];
            for (tool, argv) in runtimes {
                if find_on_path(tool).is_none() {
                    continue;
                }
                let variants = [(false, Some(bundle.clone())), (true, sc_bundle.as_ref().ok().cloned())];
                for (seccomp, b) in variants {
                    let Some(b) = b else { continue };
                    let name: &'static str = match (tool, seccomp) {
                        ("crun", false) => "crun",
                        ("crun", true) => "crun+seccomp",
                        (_, false) => "runc",
                        (_, true) => "runc+seccomp",
                    };
                    let root = dir.join(format!("{name}-root"));
                    own_mounts.push(tmpfs(&root));
                    match Floor::start(name, argv, &root, &b)
                        .and_then(|mut f| f.run(&format!("{prefix}{tool}{seccomp}-check")).map(|_| f))
                    {
                        Ok(f) => floors.push((name, f)),
                        Err(e) => report.note(format!("floor: {} cannot run here as {name} ({e})", version(tool))),
                    }
                }
            }
            if floors.iter().any(|(n, _)| *n == "crun") {
                report.note(format!(
                    "floor: {} runs in a private mount namespace without /sys/fs/cgroup/unified (hybrid \
                     cgroups), --cgroup-manager=cgroupfs; namespace set-up untimed",
                    version("crun")
                ));
            }
        }
        Some(Err(e)) => report.note(format!("floor bundle not prepared ({e}): floor rows skipped")),
        None => report.note("neither crun nor runc installed: floor rows skipped"),
    }

    // (a) run --rm true, end to end. Runners: 0 berth, 1 ctr, 2 ctr --seccomp, 3.. the floors.
    eprintln!("run: {WARMUP} warm-up + {RUNS} timed `run --rm … true` of each ...");
    let runners = 3 + floors.len();
    let mut ms: Vec<Vec<f64>> = vec![Vec::new(); runners];
    for i in 0..WARMUP + RUNS {
        let keep = i >= WARMUP;
        // Alternate who goes first so caches favour neither.
        let order: Vec<usize> = if i % 2 == 0 { (0..runners).collect() } else { (0..runners).rev().collect() };
        for who in order {
            let t = match who {
                0 => Some(timed_ok(&mut berth.run_rm(&format!("{prefix}a-b{i}")))),
                1 | 2 => {
                    containerd.as_ref().map(|c| timed_ok(&mut c.run_rm(&format!("{prefix}a-c{who}-{i}"), who == 2)))
                }
                f => {
                    let (name, floor) = &mut floors[f - 3];
                    Some(floor.run(&format!("{prefix}a-f{f}-{i}")).unwrap_or_else(|e| panic!("{name}: {e}")))
                }
            };
            if let (true, Some(t)) = (keep, t) {
                ms[who].push(t);
            }
        }
    }
    let names: Vec<&'static str> = floors.iter().map(|(n, _)| *n).collect();
    drop(floors);
    let floor_ms = |name: &str| names.iter().position(|n| *n == name).map(|i| &ms[3 + i]);
    let have = |v: Option<&Vec<f64>>, name: &'static str| v.filter(|v| !v.is_empty()).map(|v| (name, median(v)));
    let b_median = median(&ms[0]);
    let mut row = |what: String, incumbent: Option<(&'static str, f64)>| {
        report.row(Row { what, unit: "ms", berth: b_median, incumbent, lower_is_better: true });
    };
    row(format!("run --rm busybox true (median of {RUNS})"), have(Some(&ms[1]), "containerd+runc"));
    if !ms[2].is_empty() {
        row(
            "run --rm true vs ctr run --seccomp (both Docker's default profile)".into(),
            have(Some(&ms[2]), "containerd+runc+seccomp"),
        );
    }
    let floor = have(floor_ms("crun"), "crun").or_else(|| have(floor_ms("runc"), "runc"));
    if let Some(floor) = floor {
        row(format!("run --rm true vs {} run of a bundle (floor, no seccomp)", floor.0), Some(floor));
    }
    for name in ["crun+seccomp", "runc", "runc+seccomp"] {
        if floor.is_some_and(|f| f.0 == name) {
            continue;
        }
        if let Some(r) = have(floor_ms(name), name) {
            row(format!("run --rm true vs {name} run of a bundle"), Some(r));
        }
    }

    // (b) shim memory per running container.
    eprintln!("run: {MEM_CONTAINERS} sleeping containers on each daemon, shim memory ...");
    let b_ids: Vec<String> = (0..MEM_CONTAINERS).map(|i| format!("{prefix}m-b{i}")).collect();
    let c_ids: Vec<String> = (0..MEM_CONTAINERS).map(|i| format!("{prefix}m-c{i}")).collect();
    for id in &b_ids {
        timed_ok(&mut berth.run_detached(id));
    }
    if let Some(c) = &containerd {
        for id in &c_ids {
            timed_ok(&mut c.run_detached(id));
        }
    }
    // Let the shims settle (lazy allocations after start, first exit-watch round trips).
    std::thread::sleep(Duration::from_secs(2));
    let per_container = |pids: &[u32], who: &str| {
        if pids.len() != MEM_CONTAINERS {
            eprintln!("run: found {} {who} shim processes for {MEM_CONTAINERS} containers", pids.len());
        }
        let (rss, pss, uss) = memory_kib(pids);
        let n = MEM_CONTAINERS as f64 * 1024.0;
        (rss / n, pss / n, uss / n, pids.len())
    };
    let b_mem = per_container(&berth.shim_pids(&b_ids), "berth");
    let c_mem = containerd.as_ref().map(|c| per_container(&c.shim_pids(&c_ids), "containerd"));
    parallel(&b_ids, 8, |id| berth.remove(id));
    if let Some(c) = &containerd {
        parallel(&c_ids, 8, |id| c.remove(id));
    }
    for (name, pick) in [("RSS", 0usize), ("PSS", 1), ("USS", 2)] {
        let get = |m: (f64, f64, f64, usize)| [m.0, m.1, m.2][pick];
        report.row(Row {
            what: format!("shim {name} per running container ({MEM_CONTAINERS} up)"),
            unit: "MB",
            berth: get(b_mem),
            incumbent: c_mem.map(|m| ("containerd-shim-runc-v2", get(m))),
            lower_is_better: true,
        });
    }
    report.note(format!(
        "shim memory: sum over {} berth-shim and {} containerd-shim-runc-v2 processes (smaps_rollup; \
         USS = Private_Clean + Private_Dirty) divided by {MEM_CONTAINERS} containers; container processes not counted",
        b_mem.3,
        c_mem.map_or(0, |m| m.3)
    ));

    // (c) 100 at once.
    eprintln!("run: {BURST_ROUNDS} rounds of {BURST} concurrent `run -d` on each daemon ...");
    let (mut b_burst, mut c_burst) = (Vec::new(), Vec::new());
    for round in 0..BURST_ROUNDS {
        let order = if round % 2 == 0 { [true, false] } else { [false, true] };
        for is_berth in order {
            if is_berth {
                let ids: Vec<String> = (0..BURST).map(|i| format!("{prefix}c{round}-b{i}")).collect();
                b_burst.push(burst(ids.iter().map(|id| berth.run_detached(id)).collect()));
                parallel(&ids, 8, |id| berth.remove(id));
            } else if let Some(c) = &containerd {
                let ids: Vec<String> = (0..BURST).map(|i| format!("{prefix}c{round}-c{i}")).collect();
                c_burst.push(burst(ids.iter().map(|id| c.run_detached(id)).collect()));
                parallel(&ids, 8, |id| c.remove(id));
            }
        }
    }
    report.row(Row {
        what: format!("{BURST} x run -d at once, until all run (median of {BURST_ROUNDS})"),
        unit: "ms",
        berth: median(&b_burst),
        incumbent: have(Some(&c_burst), "containerd+runc"),
        lower_is_better: true,
    });

    // What the APIs left once both daemons have stopped: should be nothing.
    let mut left: Vec<String> = Vec::new();
    if let Ok(o) = berth.ctl().args(["container", "ls", "-q"]).output() {
        left.extend(String::from_utf8_lossy(&o.stdout).lines().map(|l| format!("berth container {l}")));
    }
    if let Some(c) = &containerd {
        if let Ok(o) = c.ctr().args(["containers", "ls", "-q"]).output() {
            left.extend(String::from_utf8_lossy(&o.stdout).lines().map(|l| format!("containerd container {l}")));
        }
    }
    let leftovers = |shims: usize| {
        let mut l: Vec<String> = Vec::new();
        if shims > 0 {
            l.push(format!("{shims} shims"));
        }
        l.extend(
            mounts_under(&dir).iter().filter(|m| !own_mounts.contains(m)).map(|m| format!("mount {}", m.display())),
        );
        l.extend(leftover_cgroups(&prefix).iter().map(|c| format!("cgroup {}", c.display())));
        l
    };
    let (b_state, c_socket) = (berth.state.clone(), containerd.as_ref().map(|c| c.proc.socket.clone()));
    drop(berth);
    drop(containerd);
    let count_shims = || {
        shim_pids("berth-shim", &b_state.to_string_lossy(), Vec::new()).len()
            + c_socket
                .as_ref()
                .map_or(0, |s| shim_pids("containerd-shim-runc-v2", &s.to_string_lossy(), Vec::new()).len())
    };
    left.extend(leftovers(count_shims()));
    drop(cleanup);
    let still = leftovers(count_shims());
    if !left.is_empty() {
        report.note(format!("run benchmarks: the APIs left {}", left.join(", ")));
    }
    assert!(still.is_empty(), "run benchmarks: left behind after clean-up: {}", still.join(", "));
    report.note(format!(
        "run benchmarks: load average {load_before} before, {} after ({} CPUs)",
        load_average(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    ));
    drop(tmp);
}
