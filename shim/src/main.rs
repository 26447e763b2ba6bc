//! berth-shim: one process per container. Started by berthd as
//! `berth-shim --namespace NS --id ID --bundle DIR [--seccomp-cache DIR]`, it binds `DIR/shim.sock`, forks into its
//! own session (the parent prints the address and exits once the socket is bound), becomes a
//! child subreaper so the container's processes are reaped here, writes `address` and
//! `shim.pid` into DIR, and serves `berth.shim.v1.Task` (see `rpc`): a thread per
//! connection, plain blocking I/O, no async runtime. The container itself is built and
//! driven by the short-lived `berth-runtime` helper (see `runtime`).
//!
//! SIGCHLD is blocked in every thread and taken by the reaper thread with sigwaitinfo, which
//! reaps every child: container processes reparented here, and the helpers.

mod cgroups;
mod metrics;
mod oom;
mod rpc;
mod runtime;
mod stdio;
mod task;

use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::PathBuf;
use std::sync::Arc;

/// Command-line arguments.
struct Args {
    #[allow(dead_code)]
    namespace: String,
    id: String,
    bundle: PathBuf,
    /// Where compiled seccomp programs are kept for the runtime helper (shared by all shims).
    seccomp_cache: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let (mut ns, mut id, mut bundle, mut seccomp_cache) = (None, None, None, None);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--namespace" => ns = Some(value()?),
            "--id" => id = Some(value()?),
            "--bundle" => bundle = Some(PathBuf::from(value()?)),
            "--seccomp-cache" => seccomp_cache = Some(PathBuf::from(value()?)),
            "--version" => {
                println!("berth-shim {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        namespace: ns.ok_or("--namespace is required")?,
        id: id.ok_or("--id is required")?,
        bundle: bundle.ok_or("--bundle is required")?,
        seccomp_cache,
    })
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("berth-shim: {e}");
            std::process::exit(2);
        }
    };
    let socket = args.bundle.join("shim.sock");
    let _ = std::fs::remove_file(&socket);
    let listener = match StdUnixListener::bind(&socket) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("berth-shim: bind {}: {e}", socket.display());
            std::process::exit(1);
        }
    };
    // SAFETY: single-threaded here; the child only continues into ordinary code.
    match unsafe { libc::fork() } {
        -1 => {
            eprintln!("berth-shim: fork: {}", std::io::Error::last_os_error());
            std::process::exit(1);
        }
        0 => {}
        _ => {
            println!("unix://{}", socket.display());
            std::process::exit(0);
        }
    }
    // SAFETY: plain syscalls in the freshly forked single-threaded child.
    unsafe {
        libc::setsid();
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    redirect_stdio(&args.bundle);
    let pid = std::process::id();
    let _ = std::fs::write(args.bundle.join("shim.pid"), pid.to_string());
    let _ = std::fs::write(args.bundle.join("address"), format!("unix://{}", socket.display()));

    // One malloc arena: the threads here are few and short, and every arena's pages would
    // count against each container.
    // SAFETY: mallopt before any other thread exists.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    let service = task::TaskService::new(args.id, args.bundle, runtime::default_binary(), args.seccomp_cache);
    if let Err(e) = start_reaper(service.clone()) {
        eprintln!("berth-shim: reaper: {e}");
        std::process::exit(1);
    }
    loop {
        match listener.accept() {
            Ok((conn, _)) => task::serve(service.clone(), conn),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("berth-shim: accept: {e}");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
}

/// Runs `f` on a new thread with a small stack (the shim's threads only copy bytes, wait,
/// or serve one call).
pub fn spawn(name: &str, f: impl FnOnce() + Send + 'static) {
    let b = std::thread::Builder::new().name(name.into()).stack_size(256 * 1024);
    if let Err(e) = b.spawn(f) {
        eprintln!("berth-shim: thread {name}: {e}");
    }
}

/// Blocks SIGCHLD here (threads started later inherit the mask; children get a clean one
/// from std's spawn) and reaps every child on a dedicated thread.
fn start_reaper(service: Arc<task::TaskService>) -> std::io::Result<()> {
    // SAFETY: building a signal set and masking it in this (so far only) thread.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        set
    };
    std::thread::Builder::new().name("reaper".into()).stack_size(128 * 1024).spawn(move || loop {
        loop {
            let mut status = 0;
            // SAFETY: waitpid with a valid out pointer.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            service.reaped(pid as u32, status);
        }
        // SAFETY: waiting for a signal of the set built above.
        unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) };
    })?;
    Ok(())
}

/// stdin from /dev/null, stdout and stderr to `bundle/shim.log`.
fn redirect_stdio(bundle: &std::path::Path) {
    use std::os::fd::AsRawFd;
    let null = std::fs::File::open("/dev/null");
    let log = std::fs::OpenOptions::new().create(true).append(true).open(bundle.join("shim.log"));
    // SAFETY: dup2 onto the standard fds of this process.
    unsafe {
        if let Ok(n) = &null {
            libc::dup2(n.as_raw_fd(), 0);
        }
        if let Ok(l) = &log {
            libc::dup2(l.as_raw_fd(), 1);
            libc::dup2(l.as_raw_fd(), 2);
        }
    }
}
