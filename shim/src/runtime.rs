//! Runs the `berth-runtime` helper, which builds and drives the container with youki's
//! libcontainer, as containerd's shim runs runc. The shim lives as long as its container and
//! every page of code it touches stays in its resident set; building a container touches most
//! of libcontainer, serde and the spec types, which the shim then never needs again. In a
//! short-lived helper those pages are mapped only while it runs.
//!
//! The helper reports on fd 3: `0 RESULT` on success, `CODE MESSAGE` (a gRPC code) on failure.
//! The container's init is forked by the helper; when the helper exits, the init is
//! reparented to this process, the subreaper, whose reaper collects its exit.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::rpc::{Code, Status};
use crate::stdio::{Cancel, ProcessIo};

/// How long a helper may run before it is killed.
const HELPER_TIMEOUT: Duration = Duration::from_secs(120);

/// The helper and the container it drives.
pub struct Runtime {
    /// The `berth-runtime` executable.
    pub binary: PathBuf,
    /// libcontainer's state root (`<bundle>/runtime`).
    pub root: PathBuf,
    /// The container id.
    pub id: String,
    /// Where the helper keeps compiled seccomp programs.
    pub seccomp_cache: Option<PathBuf>,
}

/// The helper's stdin, stdout and stderr.
pub enum HelperStdio {
    /// /dev/null in, the shim's log out.
    Null,
    /// A process's stdio, before [`HelperStdio::split`].
    Process(ProcessIo),
    /// The fds a new container process gets (stdin, stdout, stderr).
    Fds(OwnedFd, OwnedFd, OwnedFd),
}

impl HelperStdio {
    /// Separates the fds the helper gets from the handle that closes stdin, kept by the shim.
    pub fn split(self) -> (HelperStdio, Option<Cancel>) {
        match self {
            HelperStdio::Process(io) => (HelperStdio::Fds(io.stdin, io.stdout, io.stderr), io.close_stdin),
            other => (other, None),
        }
    }
}

/// The `berth-runtime` binary: beside this executable, else on PATH.
pub fn default_binary() -> PathBuf {
    if let Some(dir) = std::env::current_exe().ok().and_then(|p| p.parent().map(PathBuf::from)) {
        let p = dir.join("berth-runtime");
        if p.is_file() {
            return p;
        }
    }
    PathBuf::from("berth-runtime")
}

impl Runtime {
    /// Runs the helper with `args` and returns what it reported. The reaper collects the
    /// helper: its pid is registered in `helpers(state)` while `state` is still locked from
    /// the spawn, so its exit cannot be mistaken for a container process's, and the caller
    /// waits on `changed` until the reaper has filled in the status.
    pub fn run<T, S: AsRef<OsStr>>(
        &self,
        args: &[S],
        stdio: HelperStdio,
        state: &Mutex<T>,
        changed: &Condvar,
        helpers: impl Fn(&mut T) -> &mut HashMap<u32, Option<i32>>,
    ) -> Result<String, Status> {
        let args: Vec<&OsStr> = args.iter().map(AsRef::as_ref).collect();
        let (r, w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Status::internal(format!("pipe: {e}")))?;
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root").arg(&self.root).arg("--id").arg(&self.id).args(&args);
        match stdio {
            HelperStdio::Fds(i, o, e) => {
                cmd.stdin(Stdio::from(i)).stdout(Stdio::from(o)).stderr(Stdio::from(e));
            }
            _ => {
                cmd.stdin(Stdio::null());
            }
        }
        let wfd = w.as_raw_fd();
        // SAFETY: only async-signal-safe calls (sigprocmask, dup2, fcntl) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // The reaper's blocked SIGCHLD must not reach the helper (nor the container).
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
                if wfd == 3 {
                    if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(wfd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        let child = cmd.spawn().map_err(|e| Status::internal(format!("run {}: {e}", self.binary.display())))?;
        let pid = child.id();
        helpers(&mut st).insert(pid, None);
        drop(cmd);
        drop(w);
        let deadline = Instant::now() + HELPER_TIMEOUT;
        let mut killed = false;
        let status = loop {
            if let Some(Some(status)) = helpers(&mut st).get(&pid) {
                break *status;
            }
            let now = Instant::now();
            if now >= deadline && !killed {
                eprintln!("berth-shim: runtime helper {pid} ({args:?}) ran over {HELPER_TIMEOUT:?}; killing it");
                // SAFETY: our own child, not yet reaped (its slot is still empty).
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                killed = true;
            }
            let wait = if killed { Duration::from_secs(1) } else { deadline - now };
            st = changed.wait_timeout(st, wait).unwrap_or_else(|p| p.into_inner()).0;
        };
        helpers(&mut st).remove(&pid);
        drop(st);
        // The helper is gone, so what it wrote is in the pipe. Read without blocking: a
        // container init it forked keeps the write end until it execs (at Start).
        let mut r = std::fs::File::from(r);
        nix::fcntl::fcntl(r.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK))
            .map_err(|e| Status::internal(format!("pipe: {e}")))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match r.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let msg = String::from_utf8_lossy(&buf).into_owned();
        let (code, rest) = msg.split_once(' ').unwrap_or((msg.as_str(), ""));
        match code.parse::<i32>() {
            Ok(0) => Ok(rest.to_string()),
            Ok(code) => Err(Status { code, message: rest.to_string() }),
            Err(_) => Err(Status::new(
                Code::Internal,
                format!("runtime helper {:?} died ({})", args.first(), crate::task::exit_code(status)),
            )),
        }
    }
}
