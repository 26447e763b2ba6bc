//! Test harness: starts a real `berthd` on its own temporary root, state directory and socket,
//! waits until it answers, runs `berthctl` and Debian's `ctr` against it, and tears it all
//! down on drop (also when a test panics). Many harnesses may run at once.

pub mod images;

pub mod bench;
pub mod grpc;
pub mod leftovers;
pub mod registry;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// Directory holding the built binaries (`berthd`, `berthctl`, `berth-shim`).
///
/// `BERTH_BIN_DIR` overrides; otherwise the cargo target directory this test was built into.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BERTH_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> or target/<profile>/<bin>
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Path of a built binary; panics with a hint when it has not been built.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} not found: run `cargo build --workspace --bins` first (or set BERTH_BIN_DIR)",
        path.display()
    );
    path
}

/// Whether missing external tools must fail tests instead of skipping them (`make test` as root
/// sets BERTH_REQUIRE_TOOLS=1 after installing them).
pub fn tools_required() -> bool {
    std::env::var("BERTH_REQUIRE_TOOLS").is_ok_and(|v| v == "1")
}

/// The path of `name` on PATH, if any.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|p| p.join(name)).find(|p| p.is_file()))
}

/// Finds an external tool on PATH. When it is missing the test is skipped loudly, or fails
/// when tools are required.
pub fn external_tool(name: &str) -> Option<PathBuf> {
    let found = find_on_path(name);
    if found.is_none() {
        assert!(!tools_required(), "{name} is required (BERTH_REQUIRE_TOOLS=1) but not on PATH");
        eprintln!("SKIPPED: {name} is not installed; install it (make deps) to run this test");
    }
    found
}

/// Output of a command, with helpers for assertions.
#[derive(Debug)]
pub struct Run {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Asserts success and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert!(
            self.status.success(),
            "command failed ({}):\nstdout: {}\nstderr: {}",
            self.status,
            self.stdout,
            self.stderr
        );
        &self.stdout
    }

    /// Asserts failure and returns stderr.
    #[track_caller]
    pub fn err(&self) -> &str {
        assert!(
            !self.status.success(),
            "command unexpectedly succeeded:\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        &self.stderr
    }
}

/// Runs `cmd` to completion, capturing its output.
pub fn run(cmd: &mut Command) -> Run {
    Run::from(cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}")))
}

/// How to start a daemon.
#[derive(Default, Clone)]
pub struct DaemonOptions {
    /// Config file contents (TOML), written to the temp dir and passed with --config.
    pub config: Option<String>,
    /// Reuse this root instead of a fresh one (to test restarts).
    pub root: Option<PathBuf>,
    /// Use this socket path instead of a fresh one.
    pub socket: Option<PathBuf>,
    /// Run berthd (and so its shims) in a private mount namespace whose `/sys/fs/cgroup` is
    /// the cgroup v2 hierarchy alone, as on a pure v2 host. On a hybrid host (v1 controllers
    /// plus a cgroup2 mount at /sys/fs/cgroup/unified) that hierarchy has only the controllers
    /// v1 does not hold; on a pure v2 host this changes nothing.
    pub cgroup2_only: bool,
}

/// In the child before berthd's exec: a private mount namespace with the cgroup2 hierarchy
/// at /sys/fs/cgroup. Only async-signal-safe calls.
fn enter_cgroup2_only_namespace() -> std::io::Result<()> {
    let err = std::io::Error::last_os_error;
    // SAFETY: plain syscalls with NUL-terminated literals, in the forked child.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(err());
        }
        if libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return Err(err());
        }
        let mut st: libc::statfs = std::mem::zeroed();
        if libc::statfs(c"/sys/fs/cgroup".as_ptr(), &mut st) == 0 && st.f_type as i64 == 0x6367_7270 {
            return Ok(()); // already a pure v2 host
        }
        // Detach the hybrid's cgroup2 mount (if any) so that nothing below shows v1 either.
        libc::umount2(c"/sys/fs/cgroup/unified".as_ptr(), libc::MNT_DETACH);
        if libc::mount(c"cgroup2".as_ptr(), c"/sys/fs/cgroup".as_ptr(), c"cgroup2".as_ptr(), 0, std::ptr::null()) != 0 {
            return Err(err());
        }
    }
    Ok(())
}

/// A running berthd with its own temporary directories.
pub struct Daemon {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// Persistent root.
    pub root: PathBuf,
    /// State directory.
    pub state: PathBuf,
    /// Core socket.
    pub socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Starts a daemon with defaults and waits until it answers.
    pub fn start() -> Daemon {
        Self::start_with(DaemonOptions::default())
    }

    /// Starts a daemon with `opts` and waits until it answers.
    pub fn start_with(opts: DaemonOptions) -> Daemon {
        let (mut cmd, dir, root, state, socket, log) = Self::command(&opts);
        let child = cmd.spawn().expect("spawn berthd");
        let mut d = Daemon { child: Some(child), dir, root, state, socket, log };
        d.wait_ready();
        d
    }

    /// Runs berthd with `opts` expecting it to exit by itself (a startup failure); returns its output.
    pub fn start_failing(opts: DaemonOptions) -> Run {
        let (mut cmd, _dir, ..) = Self::command(&opts);
        let child = cmd.stderr(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("spawn berthd");
        let out = wait_with_timeout(child, Duration::from_secs(20));
        Run::from(out)
    }

    #[allow(clippy::type_complexity)]
    fn command(opts: &DaemonOptions) -> (Command, tempfile::TempDir, PathBuf, PathBuf, PathBuf, PathBuf) {
        let dir = tempfile::Builder::new().prefix("berth-it-").tempdir().expect("tempdir");
        let root = opts.root.clone().unwrap_or_else(|| dir.path().join("root"));
        let state = dir.path().join("state");
        let socket = opts.socket.clone().unwrap_or_else(|| state.join("berth.sock"));
        let log = dir.path().join("berthd.log");
        let mut cmd = Command::new(bin("berthd"));
        cmd.arg("--root").arg(&root).arg("--state").arg(&state).arg("--address").arg(&socket);
        // Our own debug logs, without h2/hyper frame noise.
        cmd.args(["--log-level", "info,berthd=debug"]);
        if let Some(text) = &opts.config {
            let path = dir.path().join("config.toml");
            fs::write(&path, text).expect("write config");
            cmd.arg("--config").arg(path);
        } else {
            // Never pick up the machine's /etc/berth/config.toml.
            let path = dir.path().join("empty.toml");
            fs::write(&path, "version = 1\n").expect("write config");
            cmd.arg("--config").arg(path);
        }
        let logfile = fs::File::create(&log).expect("log file");
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(logfile.try_clone().expect("dup log"));
        // Run as its own process group leader so a stray child never outlives the test.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        if opts.cgroup2_only {
            // SAFETY: the hook only makes async-signal-safe syscalls.
            unsafe { std::os::unix::process::CommandExt::pre_exec(&mut cmd, enter_cgroup2_only_namespace) };
        }
        (cmd, dir, root, state, socket, log)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("berthd exited during startup ({status}):\n{}", self.log());
            }
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                let r = self.berthctl(&["version"]);
                if r.status.success() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "berthd did not answer within 30s:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The temp directory owned by this daemon (for extra files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("daemon running")
    }

    /// Runs berthctl against this daemon.
    pub fn berthctl(&self, args: &[&str]) -> Run {
        run(Command::new(bin("berthctl")).arg("--address").arg(&self.socket).args(args).env_remove("BERTH_NAMESPACE"))
    }

    /// Runs Debian's ctr against this daemon; None (skipped) when ctr is not installed.
    pub fn ctr(&self, args: &[&str]) -> Option<Run> {
        let ctr = external_tool("ctr")?;
        Some(run(Command::new(ctr).arg("--address").arg(&self.socket).args(args).env_remove("CONTAINERD_NAMESPACE")))
    }

    /// Sends `signal` and waits for the daemon to exit; returns its exit status.
    pub fn stop_with(&mut self, signal: i32) -> ExitStatus {
        let child = self.child.take().expect("daemon running");
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(child.id() as i32, signal) };
        let out = wait_with_timeout(child, Duration::from_secs(20));
        out.status
    }

    /// Stops the daemon with SIGTERM and returns its exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.stop_with(libc::SIGTERM)
    }
}

/// Waits for `child`, killing it (and its group) if it outlives `timeout`.
fn wait_with_timeout(mut child: Child, timeout: Duration) -> Output {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                // SAFETY: killing our own child's process group.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                break;
            }
        }
    }
    child.wait_with_output().expect("wait")
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            // SAFETY: signalling our own child by pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = wait_with_timeout(child, Duration::from_secs(10));
        }
        if std::thread::panicking() {
            eprintln!("---- berthd log ({}) ----\n{}", self.log.display(), self.log());
        }
    }
}
