//! The `berth.shim.v1.Task` service: the container (built and run by youki's libcontainer),
//! its init and exec processes with their exit status kept until Delete, the reaper, and the
//! event queue berthd drains.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use berth_proto::berth::shim::v1::task_server::Task;
use berth_proto::berth::shim::v1::*;
use berth_proto::containerd::events::{TaskExit, TaskOom};
use berth_proto::containerd::v1::types::{ProcessInfo, Status as ProcStatus};
use libcgroups::common::{AnyCgroupManager, CgroupConfig, CgroupManager, ControllerOpt};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::error::LibcontainerError;
use libcontainer::signal::Signal;
use libcontainer::syscall::syscall::SyscallType;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status};

use crate::oom::{Check, OomCounter, OomWatch};
use crate::{metrics, stdio};

type Exit = Option<(u32, SystemTime)>;

/// The init's exit, written into the bundle as `CODE PID SECS.NANOS` when it is reaped.
const INIT_EXIT_FILE: &str = "init.exit";

/// One process: the init (exec id "") or an exec.
struct Proc {
    pid: u32,
    stdin: String,
    stdout: String,
    stderr: String,
    terminal: bool,
    started: bool,
    exit: watch::Sender<Exit>,
    close_stdin: Option<oneshot::Sender<()>>,
    /// Exec processes: the OCI process spec written for libcontainer.
    spec_path: Option<PathBuf>,
    /// Exec processes: stdio opened at Exec (clients open their fifo ends before Start).
    io: Option<stdio::ProcessIo>,
    /// The pty master of a terminal process.
    console: Option<std::os::fd::OwnedFd>,
    /// Terminal execs: the stdout fifo held open from Exec to Start, so clients may open
    /// their end before Start without blocking.
    hold: Option<std::fs::File>,
}

impl Proc {
    fn new(stdin: String, stdout: String, stderr: String, terminal: bool) -> Proc {
        Proc {
            pid: 0,
            stdin,
            stdout,
            stderr,
            terminal,
            started: false,
            exit: watch::channel(None).0,
            close_stdin: None,
            spec_path: None,
            io: None,
            console: None,
            hold: None,
        }
    }
    fn exited(&self) -> Exit {
        *self.exit.borrow()
    }
    fn status(&self, paused: bool) -> ProcStatus {
        match (self.exited(), self.started) {
            (Some(_), _) => ProcStatus::Stopped,
            (None, false) => ProcStatus::Created,
            (None, true) if paused => ProcStatus::Paused,
            (None, true) => ProcStatus::Running,
        }
    }
}

struct Inner {
    id: String,
    bundle: PathBuf,
    container: Option<Container>,
    cgroup_path: PathBuf,
    init: Option<Proc>,
    execs: HashMap<String, Proc>,
    /// Exits reaped before their pid was known.
    unclaimed: HashMap<u32, u32>,
    paused: bool,
    rootfs_mounted: bool,
    events: VecDeque<Event>,
    seq: u64,
    subscribers: Vec<mpsc::UnboundedSender<Result<Event, Status>>>,
    /// The OOM kill counter of the container's cgroup, once created.
    oom: Option<OomCounter>,
    /// OOM kills already reported as /tasks/oom.
    ooms_reported: u64,
    /// Reports OOM kills while the container runs; dropped at Delete.
    oom_watch: Option<OomWatch>,
}

/// The shim's task service.
#[derive(Clone)]
pub struct TaskService {
    inner: Arc<Mutex<Inner>>,
    shutdown: Arc<Mutex<Option<oneshot::Sender<()>>>>,
}

fn to_status(e: LibcontainerError) -> Status {
    match e {
        LibcontainerError::Exist => Status::already_exists(e.to_string()),
        LibcontainerError::IncorrectStatus(_) => Status::failed_precondition(e.to_string()),
        LibcontainerError::InvalidInput(_)
        | LibcontainerError::InvalidID(_)
        | LibcontainerError::MissingSpec(_)
        | LibcontainerError::InvalidSpec(_)
        | LibcontainerError::Spec(_) => Status::invalid_argument(format!("{e}: {}", source_chain(&e))),
        other => Status::internal(format!("{other}: {}", source_chain(&other))),
    }
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

fn io_status(what: &str, e: impl std::fmt::Display) -> Status {
    Status::internal(format!("{what}: {e}"))
}

fn not_found(what: &str) -> Status {
    Status::not_found(format!("{what}: not found"))
}

/// Exit status as a shell reports it: the code, or 128 + the signal.
fn exit_code(status: i32) -> u32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status) as u32
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status) as u32
    } else {
        255
    }
}

/// Adapts the bundle's config.json to this host and to libcontainer before the build:
/// - A negative oomScoreAdj below ours is raised to ours: root may not lower it on these
///   machines, so the build would fail (containerd's restrict_oom_score_adj does the same).
/// - Seccomp `SCMP_CMP_MASKED_EQ` arguments are rewritten for libcontainer 0.7, which reads
///   the mask from `valueTwo` where the runtime spec (and runc, crun, Docker's profile) put
///   it in `value`. Unconverted, Docker's `clone` rule would match every call.
fn adjust_spec(bundle: &Path) -> Result<(), Status> {
    let path = bundle.join("config.json");
    let data = std::fs::read(&path).map_err(|e| io_status("read config.json", e))?;
    let mut spec: serde_json::Value =
        serde_json::from_slice(&data).map_err(|e| Status::invalid_argument(format!("config.json: {e}")))?;
    let mut changed = false;
    let ours: i64 =
        std::fs::read_to_string("/proc/self/oom_score_adj").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
    if let Some(process) = spec.get_mut("process").and_then(|p| p.as_object_mut()) {
        if process.get("oomScoreAdj").and_then(|v| v.as_i64()).is_some_and(|v| v < ours) {
            process.insert("oomScoreAdj".into(), ours.into());
            changed = true;
        }
    }
    if let Some(seccomp) = spec.pointer_mut("/linux/seccomp") {
        changed |= berth_oci::seccomp::masked_eq_for_libcontainer(seccomp) > 0;
    }
    if changed {
        let data = serde_json::to_vec(&spec).map_err(|e| io_status("encode config.json", e))?;
        std::fs::write(&path, data).map_err(|e| io_status("write config.json", e))?;
    }
    Ok(())
}

/// Runs `build` (a libcontainer create or exec) in a forked child and returns the pid it
/// reports. The shim lives as long as its container, and every page of code it touches
/// stays in its resident set: building a container touches most of libcontainer, which
/// this process then never needs again. In a child those pages are mapped only until it
/// exits. The processes the child creates are orphaned when it exits and reparented to
/// this process, the subreaper, whose reaper collects their exits as before.
///
/// The shim is single-threaded (tokio's current-thread runtime), so the child starts in a
/// consistent state; it runs `build` and leaves with `_exit`, never returning to the
/// runtime. The caller must not await between this call and using the result: the child
/// is reaped here, not by the reaper.
fn in_child(build: impl FnOnce() -> Result<u32, Status>) -> Result<u32, Status> {
    use std::io::{Read, Write};
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| io_status("pipe", e))?;
    // SAFETY: the process is single-threaded; the child only runs `build` and exits.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(io_status("fork", std::io::Error::last_os_error()));
    }
    if child == 0 {
        drop(r);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(build))
            .unwrap_or_else(|_| Err(Status::internal("container build panicked")));
        let msg = match result {
            Ok(pid) => format!("0 {pid}"),
            Err(s) => format!("{} {}", s.code() as i32, s.message()),
        };
        let _ = std::fs::File::from(w).write_all(msg.as_bytes());
        // SAFETY: leaving the forked child without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    drop(w);
    // Reap first, then read what the child wrote (a few bytes; a pipe holds 64 KiB). Reading
    // to EOF would hang: the container's init inherits the write end and keeps it until it
    // execs, which is at Start.
    let mut status = 0;
    // SAFETY: reaping our own child.
    while unsafe { libc::waitpid(child, &mut status, 0) } < 0 {
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            break;
        }
    }
    let mut r = std::fs::File::from(r);
    nix::fcntl::fcntl(
        std::os::fd::AsRawFd::as_raw_fd(&r),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .map_err(|e| io_status("pipe", e))?;
    let mut buf = [0u8; 4096];
    let n = match r.read(&mut buf) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(io_status("read from build child", e)),
    };
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    let (code, rest) = msg.split_once(' ').unwrap_or((msg.as_str(), ""));
    match code.parse::<i32>() {
        Ok(0) => rest.parse().map_err(|_| Status::internal(format!("build child reported {msg:?}"))),
        Ok(code) => Err(Status::new(tonic::Code::from_i32(code), rest)),
        Err(_) => Err(Status::internal(format!("container build child died ({})", exit_code(status)))),
    }
}

impl Inner {
    fn root(&self) -> PathBuf {
        self.bundle.join("runtime")
    }

    fn queue<M: prost::Name>(&mut self, topic: &str, msg: &M) {
        self.seq += 1;
        let ev = Event {
            seq: self.seq,
            topic: topic.into(),
            timestamp: Some(SystemTime::now().into()),
            event: Some(berth_proto::to_any(msg)),
        };
        self.subscribers.retain(|s| s.send(Ok(ev.clone())).is_ok());
        self.events.push_back(ev);
    }

    fn proc_mut(&mut self, exec_id: &str) -> Result<&mut Proc, Status> {
        if exec_id.is_empty() {
            self.init.as_mut().ok_or_else(|| not_found("container not created"))
        } else {
            self.execs.get_mut(exec_id).ok_or_else(|| not_found(&format!("exec {exec_id:?}")))
        }
    }

    fn cgroup_manager(&self) -> Result<AnyCgroupManager, Status> {
        libcgroups::common::create_cgroup_manager(CgroupConfig {
            cgroup_path: self.cgroup_path.clone(),
            systemd_cgroup: false,
            container_name: self.id.clone(),
        })
        .map_err(|e| io_status("cgroup", e))
    }

    fn record_exit(&mut self, pid: u32, code: u32) {
        let now = SystemTime::now();
        let id = self.id.clone();
        if self.init.as_ref().is_some_and(|p| p.pid == pid && p.exited().is_none()) {
            // The watch may not have seen an OOM kill of the init yet: report it before the exit.
            self.check_oom();
            if let Some(p) = self.init.as_mut() {
                p.exit.send_replace(Some((code, now)));
                p.close_stdin.take();
            }
            self.paused = false;
            // Kept beside the bundle so that berthd can report the real status even if this
            // shim dies before the exit event is delivered.
            let stamp = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
            let record = format!("{code} {pid} {}.{:09}\n", stamp.as_secs(), stamp.subsec_nanos());
            if let Err(e) = std::fs::write(self.bundle.join(INIT_EXIT_FILE), record) {
                eprintln!("berth-shim: record init exit: {e}");
            }
            self.queue(
                "/tasks/exit",
                &TaskExit {
                    container_id: id.clone(),
                    id: id.clone(),
                    pid,
                    exit_status: code,
                    exited_at: Some(now.into()),
                },
            );
            return;
        }
        let exec = self.execs.iter_mut().find(|(_, p)| p.pid == pid && p.exited().is_none()).map(|(k, p)| {
            p.exit.send_replace(Some((code, now)));
            p.close_stdin.take();
            k.clone()
        });
        match exec {
            Some(exec_id) => self.queue(
                "/tasks/exit",
                &TaskExit { container_id: id, id: exec_id, pid, exit_status: code, exited_at: Some(now.into()) },
            ),
            None => {
                self.unclaimed.insert(pid, code);
            }
        }
    }

    /// Queues /tasks/oom when the cgroup's OOM kill counter went past what was reported.
    fn check_oom(&mut self) -> Check {
        let Some(count) = self.oom.as_ref().map(OomCounter::read) else { return Check::Gone };
        match count {
            None => Check::Gone,
            Some(n) if n > self.ooms_reported => {
                self.ooms_reported = n;
                let id = self.id.clone();
                self.queue("/tasks/oom", &TaskOom { container_id: id });
                Check::Reported
            }
            Some(_) => Check::Unchanged,
        }
    }

    /// Starts reporting OOM kills in the new container's cgroup as they happen.
    fn watch_oom(&mut self, svc: &TaskService) {
        let counter = match OomCounter::for_cgroup(&self.cgroup_path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("berth-shim: oom counter: {e}");
                return;
            }
        };
        self.ooms_reported = counter.read().unwrap_or(0);
        let svc = svc.clone();
        match crate::oom::watch(&counter, move || svc.lock().check_oom()) {
            Ok(w) => self.oom_watch = Some(w),
            Err(e) => eprintln!("berth-shim: oom watch on {}: {e}", self.cgroup_path.display()),
        }
        self.oom = Some(counter);
    }

    /// Applies an exit reaped before the process's pid was recorded.
    fn claim(&mut self, pid: u32) {
        if let Some(code) = self.unclaimed.remove(&pid) {
            self.record_exit(pid, code);
        }
    }

    fn unmount_rootfs(&mut self) {
        if self.rootfs_mounted {
            let rootfs = self.bundle.join("rootfs");
            if let Err(e) = berth_mount::unmount_all(&rootfs, libc::MNT_DETACH) {
                eprintln!("berth-shim: unmount {}: {e}", rootfs.display());
            }
            self.rootfs_mounted = false;
        }
    }
}

impl TaskService {
    /// A service for container `id` of namespace `_ns` with its bundle at `bundle`, and the
    /// future that resolves when Shutdown asks the server to stop.
    pub fn new(_ns: String, id: String, bundle: PathBuf) -> (TaskService, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let inner = Inner {
            id,
            bundle,
            container: None,
            cgroup_path: PathBuf::new(),
            init: None,
            execs: HashMap::new(),
            unclaimed: HashMap::new(),
            paused: false,
            rootfs_mounted: false,
            events: VecDeque::new(),
            seq: 0,
            subscribers: Vec::new(),
            oom: None,
            ooms_reported: 0,
            oom_watch: None,
        };
        (TaskService { inner: Arc::new(Mutex::new(inner)), shutdown: Arc::new(Mutex::new(Some(tx))) }, rx)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reaps every child on SIGCHLD and records the exits.
    pub fn start_reaper(&self) {
        let svc = self.clone();
        let mut sig = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("berth-shim: SIGCHLD handler: {e}");
                return;
            }
        };
        tokio::spawn(async move {
            loop {
                svc.reap();
                if sig.recv().await.is_none() {
                    return;
                }
            }
        });
    }

    fn reap(&self) {
        loop {
            let mut status = 0;
            // SAFETY: waitpid with a valid out pointer.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            self.lock().record_exit(pid as u32, exit_code(status));
        }
    }

    fn check_id(&self, id: &str) -> Result<(), Status> {
        let inner = self.lock();
        if !id.is_empty() && id != inner.id {
            return Err(not_found(&format!("container {id:?}")));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Task for TaskService {
    async fn state(&self, req: Request<StateRequest>) -> Result<Response<StateResponse>, Status> {
        let req = req.into_inner();
        self.check_id(&req.id)?;
        let mut inner = self.lock();
        let (id, bundle, paused) = (inner.id.clone(), inner.bundle.display().to_string(), inner.paused);
        let p = inner.proc_mut(&req.exec_id)?;
        let exit = p.exited();
        Ok(Response::new(StateResponse {
            id,
            bundle,
            pid: p.pid,
            status: p.status(paused) as i32,
            stdin: p.stdin.clone(),
            stdout: p.stdout.clone(),
            stderr: p.stderr.clone(),
            terminal: p.terminal,
            exit_status: exit.map_or(0, |e| e.0),
            exited_at: exit.map(|e| e.1.into()),
            exec_id: req.exec_id,
        }))
    }

    async fn create(&self, req: Request<CreateTaskRequest>) -> Result<Response<CreateTaskResponse>, Status> {
        let req = req.into_inner();
        self.check_id(&req.id)?;
        let mut inner = self.lock();
        if inner.init.is_some() {
            return Err(Status::already_exists(format!("task {:?}", inner.id)));
        }
        let bundle = inner.bundle.clone();
        if !req.rootfs.is_empty() {
            let mounts: Vec<berth_mount::Mount> = req
                .rootfs
                .iter()
                .map(|m| berth_mount::Mount {
                    kind: m.r#type.clone(),
                    source: m.source.clone(),
                    target: m.target.clone(),
                    options: m.options.clone(),
                })
                .collect();
            let rootfs = bundle.join("rootfs");
            std::fs::create_dir_all(&rootfs).map_err(|e| io_status("create rootfs", e))?;
            berth_mount::mount_all(&mounts, &rootfs).map_err(|e| io_status("mount rootfs", e))?;
            inner.rootfs_mounted = true;
        }
        let (id, root) = (inner.id.clone(), inner.root());
        let built = (|| {
            // A terminal gets a pty whose master comes back over a console socket; otherwise
            // the process gets the stdio fds directly.
            let (console, io) = if req.terminal {
                let socket = stdio::ConsoleSocket::bind(bundle.join("console.sock"))
                    .map_err(|e| io_status("console socket", e))?;
                (Some(socket), None)
            } else {
                (None, Some(stdio::open(&req.stdin, &req.stdout, &req.stderr).map_err(|e| io_status("open stdio", e))?))
            };
            let (fds, close_stdin) = match io {
                Some(stdio::ProcessIo { stdin, stdout, stderr, close_stdin }) => {
                    (Some((stdin, stdout, stderr)), close_stdin)
                }
                None => (None, None),
            };
            in_child(|| {
                adjust_spec(&bundle)?;
                let mut builder = ContainerBuilder::new(id.clone(), SyscallType::Linux)
                    .with_root_path(root.clone())
                    .map_err(to_status)?;
                if let Some(socket) = &console {
                    builder = builder.with_console_socket(Some(socket.path()));
                }
                if let Some((stdin, stdout, stderr)) = fds {
                    builder = builder.with_stdin(stdin).with_stdout(stdout).with_stderr(stderr);
                }
                builder.as_init(&bundle).with_systemd(false).with_detach(true).build().map_err(to_status)?;
                Ok(0)
            })?;
            let (close_stdin, master) = match console {
                Some(socket) => {
                    let master = socket.receive_master().map_err(|e| io_status("pty", e))?;
                    let close =
                        stdio::copy_pty(&master, &req.stdin, &req.stdout).map_err(|e| io_status("pty io", e))?;
                    (close, Some(master))
                }
                None => (close_stdin, None),
            };
            let container = Container::load(root.join(&id)).map_err(to_status)?;
            Ok::<_, Status>((container, close_stdin, master))
        })();
        let (container, close_stdin, console) = match built {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir_all(inner.root().join(&inner.id));
                inner.unmount_rootfs();
                return Err(e);
            }
        };
        let pid = container.pid().map_or(0, |p| p.as_raw() as u32);
        inner.cgroup_path = container.spec().map(|c| c.cgroup_path).unwrap_or_default();
        inner.watch_oom(self);
        let mut p = Proc::new(req.stdin, req.stdout, req.stderr, req.terminal);
        p.pid = pid;
        p.close_stdin = close_stdin;
        p.console = console;
        inner.init = Some(p);
        inner.container = Some(container);
        inner.claim(pid);
        Ok(Response::new(CreateTaskResponse { pid }))
    }

    async fn start(&self, req: Request<StartRequest>) -> Result<Response<StartResponse>, Status> {
        let req = req.into_inner();
        self.check_id(&req.id)?;
        let mut inner = self.lock();
        if req.exec_id.is_empty() {
            let pid = {
                let p = inner.proc_mut("")?;
                if p.started {
                    return Err(Status::failed_precondition("task already started"));
                }
                p.pid
            };
            let c = inner.container.as_mut().ok_or_else(|| not_found("container"))?;
            c.start().map_err(to_status)?;
            inner.proc_mut("")?.started = true;
            return Ok(Response::new(StartResponse { pid }));
        }
        if inner.init.as_ref().is_none_or(|p| p.exited().is_some() || !p.started) {
            return Err(Status::failed_precondition("cannot start an exec: the task is not running"));
        }
        let (root, id, inner_bundle) = (inner.root(), inner.id.clone(), inner.bundle.clone());
        let p = inner.proc_mut(&req.exec_id)?;
        if p.started {
            return Err(Status::failed_precondition(format!("exec {:?} already started", req.exec_id)));
        }
        let spec_path = p.spec_path.clone();
        let builder = ContainerBuilder::new(id, SyscallType::Linux).with_root_path(root).map_err(to_status)?;
        let pid = if p.terminal {
            let console = stdio::ConsoleSocket::bind(inner_bundle.join(format!("{}.console.sock", req.exec_id)))
                .map_err(|e| io_status("console socket", e))?;
            let pid = in_child(|| {
                Ok(builder
                    .with_console_socket(Some(console.path()))
                    .as_tenant()
                    .with_process(spec_path)
                    .with_detach(true)
                    .build()
                    .map_err(to_status)?
                    .as_raw() as u32)
            })?;
            let master = console.receive_master().map_err(|e| io_status("pty", e))?;
            p.close_stdin = stdio::copy_pty(&master, &p.stdin, &p.stdout).map_err(|e| io_status("pty io", e))?;
            p.console = Some(master);
            p.hold = None;
            pid
        } else {
            let io = match p.io.take() {
                Some(io) => io,
                None => stdio::open(&p.stdin, &p.stdout, &p.stderr).map_err(|e| io_status("open stdio", e))?,
            };
            let stdio::ProcessIo { stdin, stdout, stderr, close_stdin } = io;
            let pid = in_child(|| {
                Ok(builder
                    .with_stdin(stdin)
                    .with_stdout(stdout)
                    .with_stderr(stderr)
                    .as_tenant()
                    .with_process(spec_path)
                    .with_detach(true)
                    .build()
                    .map_err(to_status)?
                    .as_raw() as u32)
            })?;
            p.close_stdin = close_stdin;
            pid
        };
        p.pid = pid;
        p.started = true;
        inner.claim(pid);
        Ok(Response::new(StartResponse { pid }))
    }

    async fn delete(&self, req: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        let req = req.into_inner();
        self.check_id(&req.id)?;
        let mut inner = self.lock();
        if !req.exec_id.is_empty() {
            let p = inner.proc_mut(&req.exec_id)?;
            if p.started && p.exited().is_none() {
                return Err(Status::failed_precondition(format!("exec {:?} is still running", req.exec_id)));
            }
            let exit = p.exited();
            let (pid, spec_path) = (p.pid, p.spec_path.clone());
            inner.execs.remove(&req.exec_id);
            if let Some(path) = spec_path {
                let _ = std::fs::remove_file(path);
            }
            return Ok(Response::new(DeleteResponse {
                pid,
                exit_status: exit.map_or(0, |e| e.0),
                exited_at: exit.map(|e| e.1.into()),
            }));
        }
        let p = inner.proc_mut("")?;
        if p.started && p.exited().is_none() {
            return Err(Status::failed_precondition("task is still running: kill it first"));
        }
        let (pid, exit) = (p.pid, p.exited());
        inner.oom_watch = None;
        if let Some(mut c) = inner.container.take() {
            // Kills a created-but-never-started init and removes cgroups and state.
            if let Err(e) = c.delete(true) {
                eprintln!("berth-shim: delete container: {e}");
            }
        }
        inner.unmount_rootfs();
        inner.execs.clear();
        inner.init = None;
        Ok(Response::new(DeleteResponse {
            pid,
            exit_status: exit.map_or(0, |e| e.0),
            exited_at: exit.map(|e| e.1.into()),
        }))
    }

    async fn pids(&self, req: Request<PidsRequest>) -> Result<Response<PidsResponse>, Status> {
        self.check_id(&req.get_ref().id)?;
        let inner = self.lock();
        let pids = inner.cgroup_manager()?.get_all_pids().map_err(|e| io_status("cgroup pids", e))?;
        let processes = pids.into_iter().map(|p| ProcessInfo { pid: p.as_raw() as u32, info: None }).collect();
        Ok(Response::new(PidsResponse { processes }))
    }

    async fn pause(&self, req: Request<PauseRequest>) -> Result<Response<()>, Status> {
        self.check_id(&req.get_ref().id)?;
        let mut inner = self.lock();
        inner.container.as_mut().ok_or_else(|| not_found("container"))?.pause().map_err(to_status)?;
        inner.paused = true;
        Ok(Response::new(()))
    }

    async fn resume(&self, req: Request<ResumeRequest>) -> Result<Response<()>, Status> {
        self.check_id(&req.get_ref().id)?;
        let mut inner = self.lock();
        inner.container.as_mut().ok_or_else(|| not_found("container"))?.resume().map_err(to_status)?;
        inner.paused = false;
        Ok(Response::new(()))
    }

    async fn kill(&self, req: Request<KillRequest>) -> Result<Response<()>, Status> {
        let req = req.into_inner();
        self.check_id(&req.id)?;
        let mut inner = self.lock();
        let signal = Signal::try_from(req.signal as i32)
            .map_err(|e| Status::invalid_argument(format!("signal {}: {e}", req.signal)))?;
        let p = inner.proc_mut(&req.exec_id)?;
        if p.exited().is_some() {
            return Err(not_found("process already finished"));
        }
        if !req.exec_id.is_empty() {
            if !p.started {
                return Err(Status::failed_precondition("exec not started"));
            }
            // SAFETY: signalling a process of ours by pid.
            if unsafe { libc::kill(p.pid as i32, req.signal as i32) } != 0 {
                return Err(io_status("kill", std::io::Error::last_os_error()));
            }
            return Ok(Response::new(()));
        }
        let c = inner.container.as_mut().ok_or_else(|| not_found("container"))?;
        c.kill(signal, req.all).map_err(to_status)?;
        Ok(Response::new(()))
    }

    async fn exec(&self, req: Request<ExecProcessRequest>) -> Result<Response<()>, Status> {
        let req = req.into_inner();
        self.check_id(&req.id)?;
        let mut inner = self.lock();
        if req.exec_id.is_empty() || req.exec_id.contains('/') {
            return Err(Status::invalid_argument(format!("exec id {:?} is invalid", req.exec_id)));
        }
        if inner.execs.contains_key(&req.exec_id) {
            return Err(Status::already_exists(format!("exec {:?}", req.exec_id)));
        }
        if inner.init.as_ref().is_none_or(|p| p.exited().is_some()) {
            return Err(Status::failed_precondition("cannot exec in a stopped task"));
        }
        let spec = req.spec.ok_or_else(|| Status::invalid_argument("exec spec must be set"))?;
        let process: oci_spec::runtime::Process = serde_json::from_slice(&spec.value)
            .map_err(|e| Status::invalid_argument(format!("exec spec is not an OCI process: {e}")))?;
        let path = inner.bundle.join(format!("exec-{}.json", req.exec_id));
        std::fs::write(&path, serde_json::to_vec(&process).map_err(|e| io_status("encode", e))?)
            .map_err(|e| io_status("write exec spec", e))?;
        let mut p = Proc::new(req.stdin, req.stdout, req.stderr, req.terminal);
        p.spec_path = Some(path);
        if !req.terminal {
            p.io = Some(stdio::open(&p.stdin, &p.stdout, &p.stderr).map_err(|e| io_status("open stdio", e))?);
        } else if !p.stdout.is_empty() {
            let f = std::fs::OpenOptions::new().read(true).write(true).open(&p.stdout);
            p.hold = Some(f.map_err(|e| io_status("open stdout fifo", e))?);
        }
        inner.execs.insert(req.exec_id, p);
        Ok(Response::new(()))
    }

    async fn resize_pty(&self, req: Request<ResizePtyRequest>) -> Result<Response<()>, Status> {
        let req = req.into_inner();
        self.check_id(&req.id)?;
        let mut inner = self.lock();
        let p = inner.proc_mut(&req.exec_id)?;
        let master = p.console.as_ref().ok_or_else(|| Status::failed_precondition("process has no terminal"))?;
        stdio::resize(master, req.width, req.height).map_err(|e| io_status("resize pty", e))?;
        Ok(Response::new(()))
    }

    async fn close_io(&self, req: Request<CloseIoRequest>) -> Result<Response<()>, Status> {
        let req = req.into_inner();
        self.check_id(&req.id)?;
        let mut inner = self.lock();
        let p = inner.proc_mut(&req.exec_id)?;
        if req.stdin {
            if let Some(tx) = p.close_stdin.take() {
                let _ = tx.send(());
            }
        }
        Ok(Response::new(()))
    }

    async fn update(&self, req: Request<UpdateTaskRequest>) -> Result<Response<()>, Status> {
        let req = req.into_inner();
        self.check_id(&req.id)?;
        let any = req.resources.ok_or_else(|| Status::invalid_argument("resources must be set"))?;
        let resources: oci_spec::runtime::LinuxResources = serde_json::from_slice(&any.value)
            .map_err(|e| Status::invalid_argument(format!("resources are not OCI LinuxResources: {e}")))?;
        let inner = self.lock();
        let opt = ControllerOpt {
            resources: &resources,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
        };
        inner.cgroup_manager()?.apply(&opt).map_err(|e| io_status("cgroup update", e))?;
        Ok(Response::new(()))
    }

    async fn wait(&self, req: Request<WaitRequest>) -> Result<Response<WaitResponse>, Status> {
        let req = req.into_inner();
        self.check_id(&req.id)?;
        let mut rx = self.lock().proc_mut(&req.exec_id)?.exit.subscribe();
        let exit = rx
            .wait_for(|e| e.is_some())
            .await
            .map_err(|_| Status::aborted("process deleted"))?
            .unwrap_or((0, SystemTime::now()));
        Ok(Response::new(WaitResponse { exit_status: exit.0, exited_at: Some(exit.1.into()) }))
    }

    async fn stats(&self, req: Request<StatsRequest>) -> Result<Response<StatsResponse>, Status> {
        self.check_id(&req.get_ref().id)?;
        let cgroup = self.lock().cgroup_path.clone();
        if cgroup.as_os_str().is_empty() {
            return Err(Status::failed_precondition("the task has no cgroup yet"));
        }
        let stats = metrics::collect(&cgroup).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Status::not_found(e.to_string()),
            _ => io_status("cgroup stats", e),
        })?;
        Ok(Response::new(StatsResponse { stats: Some(stats) }))
    }

    async fn connect(&self, req: Request<ConnectRequest>) -> Result<Response<ConnectResponse>, Status> {
        self.check_id(&req.get_ref().id)?;
        let inner = self.lock();
        Ok(Response::new(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: inner.init.as_ref().map_or(0, |p| p.pid),
            version: env!("CARGO_PKG_VERSION").into(),
        }))
    }

    async fn shutdown(&self, req: Request<ShutdownRequest>) -> Result<Response<()>, Status> {
        let req = req.into_inner();
        {
            let inner = self.lock();
            if !req.now && inner.init.is_some() {
                return Err(Status::failed_precondition("the task still exists: delete it first"));
            }
        }
        if req.now {
            let mut inner = self.lock();
            inner.oom_watch = None;
            if let Some(mut c) = inner.container.take() {
                let _ = c.delete(true);
            }
            inner.unmount_rootfs();
        }
        if let Some(tx) = self.shutdown.lock().unwrap_or_else(|p| p.into_inner()).take() {
            // Let this response go out first, then stop: a graceful server stop would wait for
            // berthd's event stream, which only ends when this process does.
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                let _ = tx.send(());
                std::process::exit(0);
            });
        }
        Ok(Response::new(()))
    }

    type EventsStream = UnboundedReceiverStream<Result<Event, Status>>;

    async fn events(&self, _req: Request<EventsRequest>) -> Result<Response<Self::EventsStream>, Status> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inner = self.lock();
        for ev in &inner.events {
            let _ = tx.send(Ok(ev.clone()));
        }
        inner.subscribers.push(tx);
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }

    async fn ack_events(&self, req: Request<AckEventsRequest>) -> Result<Response<()>, Status> {
        let seq = req.into_inner().seq;
        let mut inner = self.lock();
        while inner.events.front().is_some_and(|e| e.seq <= seq) {
            inner.events.pop_front();
        }
        Ok(Response::new(()))
    }
}
