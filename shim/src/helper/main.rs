//! berth-runtime: builds and drives one container with youki's libcontainer, as runc does for
//! containerd's shim. berth-shim runs it for each operation and reads its report from fd 3
//! (standard output when fd 3 is not open): `0 RESULT` on success, `CODE MESSAGE` on
//! failure, CODE being a gRPC status code.
//!
//! ```text
//! berth-runtime --root DIR --id ID create --bundle DIR [--console-socket PATH] [--seccomp-cache DIR]
//!                                                                                 -> PID CGROUP
//! berth-runtime --root DIR --id ID start
//! berth-runtime --root DIR --id ID exec --process FILE [--bundle DIR] [--console-socket PATH]
//!                                                                                 -> PID
//! berth-runtime --root DIR --id ID kill SIGNAL [--all]
//! berth-runtime --root DIR --id ID pause | resume
//! berth-runtime --root DIR --id ID delete [--force] [--exited]
//! berth-runtime --root DIR --id ID update --resources FILE
//! berth-runtime --root DIR --id ID pids                                          -> PID...
//! ```
//!
//! `create` and `exec` without a console socket give the new process this program's own
//! stdin, stdout and stderr. Seccomp profiles are compiled once and loaded as programs (see
//! `seccomp`).

use std::io::Write;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use libcgroups::common::{CgroupConfig, CgroupManager, ControllerOpt};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::error::LibcontainerError;
use libcontainer::signal::Signal;
use libcontainer::syscall::syscall::SyscallType;

// The shim's cgroup layout helpers; the helper uses only part of them.
#[allow(dead_code)]
#[path = "../cgroups.rs"]
mod cgroups;
mod seccomp;

// gRPC status codes.
const INVALID_ARGUMENT: i32 = 3;
const NOT_FOUND: i32 = 5;
const ALREADY_EXISTS: i32 = 6;
const FAILED_PRECONDITION: i32 = 9;
const INTERNAL: i32 = 13;

/// A failure: gRPC code and message.
type Failure = (i32, String);

fn internal(what: &str, e: impl std::fmt::Display) -> Failure {
    (INTERNAL, format!("{what}: {e}"))
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push(s.to_string());
        cur = s.source();
    }
    out.join(": ")
}

fn failure(e: LibcontainerError) -> Failure {
    let chain = source_chain(&e);
    let msg = if chain.is_empty() { e.to_string() } else { format!("{e}: {chain}") };
    let code = match e {
        LibcontainerError::Exist => ALREADY_EXISTS,
        LibcontainerError::IncorrectStatus(_) => FAILED_PRECONDITION,
        LibcontainerError::InvalidInput(_)
        | LibcontainerError::InvalidID(_)
        | LibcontainerError::MissingSpec(_)
        | LibcontainerError::InvalidSpec(_)
        | LibcontainerError::Spec(_) => INVALID_ARGUMENT,
        _ => INTERNAL,
    };
    (code, msg)
}

/// Adapts the bundle's config.json to this host and to libcontainer before the build, and
/// returns the executor that loads the seccomp program when the profile takes that path:
/// - A negative oomScoreAdj below ours is raised to ours: root may not lower it on these
///   machines, so the build would fail (containerd's restrict_oom_score_adj does the same).
/// - A seccomp profile that can be precompiled ([`seccomp::eligible`]) is compiled (or taken
///   from `cache`), saved in the bundle, and removed from the spec libcontainer sees.
/// - Otherwise seccomp `SCMP_CMP_MASKED_EQ` arguments are rewritten for libcontainer 0.7,
///   which reads the mask from `valueTwo` where the runtime spec (and runc, crun, Docker's
///   profile) put it in `value`. Unconverted, Docker's `clone` rule would match every call.
fn adjust_spec(bundle: &Path, cache: Option<&Path>) -> Result<Option<seccomp::SeccompExecutor>, Failure> {
    let path = bundle.join("config.json");
    let data = std::fs::read(&path).map_err(|e| internal("read config.json", e))?;
    let mut spec: serde_json::Value =
        serde_json::from_slice(&data).map_err(|e| (INVALID_ARGUMENT, format!("config.json: {e}")))?;
    let mut changed = false;
    let ours: i64 =
        std::fs::read_to_string("/proc/self/oom_score_adj").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
    if let Some(process) = spec.get_mut("process").and_then(|p| p.as_object_mut()) {
        if process.get("oomScoreAdj").and_then(|v| v.as_i64()).is_some_and(|v| v < ours) {
            process.insert("oomScoreAdj".into(), ours.into());
            changed = true;
        }
    }
    let mut executor = None;
    if seccomp::eligible(&spec) {
        let profile = spec.pointer("/linux/seccomp").cloned().unwrap_or_default();
        let flags = seccomp::flags(&profile).map_err(|e| (INVALID_ARGUMENT, e))?;
        let program = seccomp::program(&profile, cache).map_err(|e| (INVALID_ARGUMENT, e))?;
        seccomp::save(bundle, flags, &program).map_err(|e| internal("save the seccomp program", e))?;
        if let Some(linux) = spec.get_mut("linux").and_then(|l| l.as_object_mut()) {
            linux.remove("seccomp");
        }
        changed = true;
        executor = Some(seccomp::SeccompExecutor::new(flags, program));
    } else if let Some(profile) = spec.pointer_mut("/linux/seccomp") {
        changed |= berth_oci::seccomp::masked_eq_for_libcontainer(profile) > 0;
    }
    if changed {
        let data = serde_json::to_vec(&spec).map_err(|e| internal("encode config.json", e))?;
        std::fs::write(&path, data).map_err(|e| internal("write config.json", e))?;
    }
    Ok(executor)
}

/// The executor for an exec process of the container in `bundle`: the container's seccomp
/// program, if it has one. no_new_privs is set for a process that does not ask for it: the
/// container's init runs with it (that is when a program is kept), and the kernel loads a
/// filter without CAP_SYS_ADMIN only then.
fn exec_executor(bundle: Option<&str>, process: &Path) -> Result<Option<seccomp::SeccompExecutor>, Failure> {
    let Some(bundle) = bundle else { return Ok(None) };
    let Some(mut executor) = seccomp::load_saved(Path::new(bundle)).map_err(|e| internal("seccomp", e))? else {
        return Ok(None);
    };
    let data = std::fs::read(process).map_err(|e| internal("read the exec process", e))?;
    let spec: serde_json::Value =
        serde_json::from_slice(&data).map_err(|e| (INVALID_ARGUMENT, format!("exec process: {e}")))?;
    executor.set_nnp = spec.get("noNewPrivileges").and_then(|v| v.as_bool()) != Some(true);
    Ok(Some(executor))
}

struct Cli {
    root: PathBuf,
    id: String,
    command: String,
    rest: Vec<String>,
}

fn parse() -> Result<Cli, Failure> {
    let mut it = std::env::args().skip(1);
    let (mut root, mut id) = (None, None);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--root" => root = it.next(),
            "--id" => id = it.next(),
            "--version" => {
                println!("berth-runtime {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            _ => {
                return Ok(Cli {
                    root: root.map(PathBuf::from).ok_or((INVALID_ARGUMENT, "--root is required".into()))?,
                    id: id.ok_or((INVALID_ARGUMENT, "--id is required".into()))?,
                    command: a,
                    rest: it.collect(),
                })
            }
        }
    }
    Err((INVALID_ARGUMENT, "no command given".into()))
}

/// The value after `flag` in `rest`.
fn opt<'a>(rest: &'a [String], flag: &str) -> Option<&'a str> {
    rest.iter().position(|a| a == flag).and_then(|i| rest.get(i + 1)).map(String::as_str)
}

/// Copies of this process's stdin, stdout and stderr, handed to the new process. Copies,
/// because libcontainer dup2s what it is given onto 0-2 and then closes the originals.
fn own_stdio() -> Result<(OwnedFd, OwnedFd, OwnedFd), Failure> {
    let dup = |fd| {
        // SAFETY: fds 0-2 are open for the life of this process (std guarantees it at start).
        unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned().map_err(|e| internal("dup stdio", e))
    };
    Ok((dup(0)?, dup(1)?, dup(2)?))
}

/// The builder with the seccomp executor, if any, and the new process's terminal (the
/// console socket) or else this program's stdio.
fn with_io(
    mut b: ContainerBuilder,
    executor: Option<seccomp::SeccompExecutor>,
    console_socket: Option<&str>,
) -> Result<ContainerBuilder, Failure> {
    if let Some(e) = executor {
        b = b.with_executor(e);
    }
    Ok(match console_socket {
        Some(socket) => b.with_console_socket(Some(socket)),
        None => {
            let (i, o, e) = own_stdio()?;
            b.with_stdin(i).with_stdout(o).with_stderr(e)
        }
    })
}

fn load(cli: &Cli) -> Result<Container, Failure> {
    let dir = cli.root.join(&cli.id);
    if !dir.exists() {
        return Err((NOT_FOUND, format!("container {:?}: not found", cli.id)));
    }
    Container::load(dir).map_err(failure)
}

fn cgroup_manager(cli: &Cli) -> Result<libcgroups::common::AnyCgroupManager, Failure> {
    let container = load(cli)?;
    let cgroup_path = container.spec().map_err(failure)?.cgroup_path;
    libcgroups::common::create_cgroup_manager(CgroupConfig {
        cgroup_path,
        systemd_cgroup: false,
        container_name: cli.id.clone(),
    })
    .map_err(|e| internal("cgroup", e))
}

/// Deletes a container whose init the caller (the shim) has already reaped, when nothing but
/// its cgroups and its state directory is left to remove: no hooks to run, no systemd or
/// Intel RDT groups. libcontainer's delete would first re-derive the status through /proc and
/// parse mountinfo once per cgroup controller; this removes the same directories with one
/// parse. Returns false (nothing done) when the container needs libcontainer's delete,
/// including a cgroup that still holds processes.
fn delete_exited(cli: &Cli) -> Result<bool, Failure> {
    let dir = cli.root.join(&cli.id);
    let read =
        |name: &str| -> Option<serde_json::Value> { serde_json::from_slice(&std::fs::read(dir.join(name)).ok()?).ok() };
    let (Some(config), Some(state)) = (read("youki_config.json"), read("state.json")) else { return Ok(false) };
    let plain = config.get("hooks").is_none_or(|h| h.is_null())
        && state.get("useSystemd").and_then(|v| v.as_bool()) != Some(true)
        && state.get("intelRdtDir").is_none_or(|v| v.is_null());
    let Some(cgroup) = config.get("cgroup_path").and_then(|p| p.as_str()) else { return Ok(false) };
    let rel = cgroup.trim_start_matches('/');
    if !plain || rel.is_empty() || rel.split('/').any(|c| c == "..") {
        return Ok(false);
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| internal("mountinfo", e))?;
    for mount in cgroups::hierarchies(&mountinfo) {
        let d = mount.join(rel);
        match std::fs::remove_dir(&d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // Still populated (processes outside a pid namespace outlived the init):
            // libcontainer's delete kills them and retries.
            Err(_) => return Ok(false),
        }
    }
    std::fs::remove_dir_all(&dir).map_err(|e| internal("remove the container state", e))?;
    Ok(true)
}

fn run(cli: &Cli) -> Result<String, Failure> {
    let builder =
        || ContainerBuilder::new(cli.id.clone(), SyscallType::Linux).with_root_path(cli.root.clone()).map_err(failure);
    match cli.command.as_str() {
        "create" => {
            let bundle = opt(&cli.rest, "--bundle").ok_or((INVALID_ARGUMENT, "--bundle is required".into()))?;
            let cache = opt(&cli.rest, "--seccomp-cache").map(Path::new);
            let executor = adjust_spec(Path::new(bundle), cache)?;
            let b = with_io(builder()?, executor, opt(&cli.rest, "--console-socket"))?;
            let container = b.as_init(bundle).with_systemd(false).with_detach(true).build().map_err(failure)?;
            let pid = container.pid().map_or(0, |p| p.as_raw());
            let cgroup = container.spec().map(|c| c.cgroup_path).unwrap_or_default();
            Ok(format!("{pid} {}", cgroup.display()))
        }
        "exec" => {
            let process = opt(&cli.rest, "--process").ok_or((INVALID_ARGUMENT, "--process is required".into()))?;
            let executor = exec_executor(opt(&cli.rest, "--bundle"), Path::new(process))?;
            let b = with_io(builder()?, executor, opt(&cli.rest, "--console-socket"))?;
            let pid = b.as_tenant().with_process(Some(process)).with_detach(true).build().map_err(failure)?;
            Ok(pid.as_raw().to_string())
        }
        "start" => load(cli)?.start().map(|_| String::new()).map_err(failure),
        "pause" => load(cli)?.pause().map(|_| String::new()).map_err(failure),
        "resume" => load(cli)?.resume().map(|_| String::new()).map_err(failure),
        "kill" => {
            let n: i32 = cli
                .rest
                .first()
                .and_then(|s| s.parse().ok())
                .ok_or((INVALID_ARGUMENT, "kill needs a signal number".into()))?;
            let signal = Signal::try_from(n).map_err(|e| (INVALID_ARGUMENT, format!("signal {n}: {e}")))?;
            let all = cli.rest.iter().any(|a| a == "--all");
            load(cli)?.kill(signal, all).map(|_| String::new()).map_err(failure)
        }
        "delete" => {
            if cli.rest.iter().any(|a| a == "--exited") && delete_exited(cli)? {
                return Ok(String::new());
            }
            let force = cli.rest.iter().any(|a| a == "--force");
            load(cli)?.delete(force).map(|_| String::new()).map_err(failure)
        }
        "update" => {
            let file = opt(&cli.rest, "--resources").ok_or((INVALID_ARGUMENT, "--resources is required".into()))?;
            let data = std::fs::read(file).map_err(|e| internal("read resources", e))?;
            let resources: oci_spec::runtime::LinuxResources = serde_json::from_slice(&data)
                .map_err(|e| (INVALID_ARGUMENT, format!("resources are not OCI LinuxResources: {e}")))?;
            let opt = ControllerOpt {
                resources: &resources,
                disable_oom_killer: false,
                oom_score_adj: None,
                freezer_state: None,
            };
            cgroup_manager(cli)?.apply(&opt).map_err(|e| internal("cgroup update", e))?;
            Ok(String::new())
        }
        "pids" => {
            let pids = cgroup_manager(cli)?.get_all_pids().map_err(|e| internal("cgroup pids", e))?;
            Ok(pids.iter().map(|p| p.as_raw().to_string()).collect::<Vec<_>>().join(" "))
        }
        other => Err((INVALID_ARGUMENT, format!("unknown command {other:?}"))),
    }
}

/// Gives this process, and so the container processes it forks, the signal state a new
/// program expects: nothing blocked, nothing ignored (ignored signals stay ignored across
/// exec). Rust's runtime ignores SIGPIPE, the shim blocks SIGCHLD for its reaper, and glibc's
/// posix_spawn (berthd starts the shim with it) leaves its internal signals 32 and 33
/// ignored; none of that may reach the container. The raw syscall is used because glibc's
/// sigaction refuses its internal signals.
fn reset_signals() {
    /// The kernel's `struct sigaction` on x86_64 and aarch64.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: libc::c_ulong,
        restorer: usize,
        mask: u64,
    }
    // SAFETY: plain signal-state syscalls on this single-threaded process, with structs of
    // the kernel's layout and size (8-byte sigset).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        for sig in 1..=64 {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut old = KernelSigaction { handler: 0, flags: 0, restorer: 0, mask: 0 };
            let got = libc::syscall(libc::SYS_rt_sigaction, sig, std::ptr::null::<KernelSigaction>(), &mut old, 8);
            if got == 0 && old.handler == libc::SIG_IGN {
                let dfl = KernelSigaction { handler: libc::SIG_DFL, flags: 0, restorer: 0, mask: 0 };
                libc::syscall(libc::SYS_rt_sigaction, sig, &dfl, std::ptr::null_mut::<KernelSigaction>(), 8);
            }
        }
    }
}

fn main() {
    reset_signals();
    // The report goes to fd 3 when the shim opened it, else to stdout. Close-on-exec, so the
    // container's processes (forked from here) do not keep it once they exec.
    // SAFETY: fcntl on a descriptor number; F_GETFD only checks that it is open.
    let has_fd3 = unsafe { libc::fcntl(3, libc::F_GETFD) } >= 0;
    let mut report: Box<dyn Write> = if has_fd3 {
        // SAFETY: fd 3 is open and this program owns it from here on.
        unsafe {
            libc::fcntl(3, libc::F_SETFD, libc::FD_CLOEXEC);
            Box::new(std::fs::File::from_raw_fd(3))
        }
    } else {
        Box::new(std::io::stdout())
    };
    let result = parse().and_then(|cli| run(&cli));
    let (code, text) = match result {
        Ok(out) => (0, out),
        Err((code, msg)) => (code, msg.replace('\n', " ")),
    };
    let _ = report.write_all(format!("{code} {text}").as_bytes());
    let _ = report.flush();
    drop(report);
    std::process::exit(if code == 0 { 0 } else { 1 });
}
