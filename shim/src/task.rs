//! The task service of one shim: the container (built and run by the `berth-runtime`
//! helper, see [`crate::runtime`]), its init and exec processes with their exit status kept
//! until Delete, the reaper's bookkeeping, and the event queue berthd drains.
//!
//! Locking: `state` guards everything here and is held only briefly; the reaper takes it to
//! record exits. `op` serialises the calls that change the container (create, start, exec,
//! delete, kill, pause, resume, update), which run the helper without holding `state`.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::SystemTime;

use berth_proto::berth::shim::v1::*;
use berth_proto::containerd::events::{TaskExit, TaskOom};
use berth_proto::containerd::v1::types::{ProcessInfo, Status as ProcStatus};
use prost::Message;

use crate::oom::{Check, OomCounter, OomWatch};
use crate::rpc::{self, Code, Status};
use crate::runtime::{HelperStdio, Runtime};
use crate::stdio::{self, Cancel};
use crate::{metrics, spawn};

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
    exit: Exit,
    close_stdin: Option<Cancel>,
    /// Exec processes: the OCI process spec written for the runtime.
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
            exit: None,
            close_stdin: None,
            spec_path: None,
            io: None,
            console: None,
            hold: None,
        }
    }
    fn exited(&self) -> Exit {
        self.exit
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
    /// The runtime holds a container (created and not yet deleted).
    created: bool,
    cgroup_path: PathBuf,
    init: Option<Proc>,
    execs: HashMap<String, Proc>,
    /// Exits reaped before their pid was known.
    unclaimed: HashMap<u32, u32>,
    /// Runtime helpers running, and their wait status once reaped.
    helpers: HashMap<u32, Option<i32>>,
    paused: bool,
    rootfs_mounted: bool,
    events: VecDeque<Event>,
    seq: u64,
    subscribers: Vec<mpsc::Sender<Event>>,
    /// The OOM kill counter of the container's cgroup, once created.
    oom: Option<OomCounter>,
    /// OOM kills already reported as /tasks/oom.
    ooms_reported: u64,
    /// Reports OOM kills while the container runs; dropped at Delete.
    oom_watch: Option<OomWatch>,
}

/// The shim's task service.
pub struct TaskService {
    state: Mutex<Inner>,
    /// Signalled whenever a process exits or a helper is reaped.
    changed: Condvar,
    op: Mutex<()>,
    runtime: Runtime,
}

fn io_status(what: &str, e: impl std::fmt::Display) -> Status {
    Status::internal(format!("{what}: {e}"))
}

fn not_found(what: &str) -> Status {
    Status::not_found(format!("{what}: not found"))
}

/// Exit status as a shell reports it: the code, or 128 + the signal.
pub fn exit_code(status: i32) -> u32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status) as u32
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status) as u32
    } else {
        255
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
        self.subscribers.retain(|s| s.send(ev.clone()).is_ok());
        self.events.push_back(ev);
    }

    fn proc_ref(&self, exec_id: &str) -> Result<&Proc, Status> {
        if exec_id.is_empty() {
            self.init.as_ref().ok_or_else(|| not_found("container not created"))
        } else {
            self.execs.get(exec_id).ok_or_else(|| not_found(&format!("exec {exec_id:?}")))
        }
    }

    fn proc_mut(&mut self, exec_id: &str) -> Result<&mut Proc, Status> {
        if exec_id.is_empty() {
            self.init.as_mut().ok_or_else(|| not_found("container not created"))
        } else {
            self.execs.get_mut(exec_id).ok_or_else(|| not_found(&format!("exec {exec_id:?}")))
        }
    }

    fn record_exit(&mut self, pid: u32, code: u32) {
        let now = SystemTime::now();
        let id = self.id.clone();
        if self.init.as_ref().is_some_and(|p| p.pid == pid && p.exited().is_none()) {
            // The watch may not have seen an OOM kill of the init yet: report it before the exit.
            self.check_oom();
            if let Some(p) = self.init.as_mut() {
                p.exit = Some((code, now));
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
            p.exit = Some((code, now));
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

fn encode(msg: impl Message) -> Result<Vec<u8>, Status> {
    Ok(msg.encode_to_vec())
}

impl TaskService {
    /// The service for container `id` with its bundle at `bundle`.
    pub fn new(
        id: String,
        bundle: PathBuf,
        runtime_binary: PathBuf,
        seccomp_cache: Option<PathBuf>,
    ) -> Arc<TaskService> {
        let runtime = Runtime { binary: runtime_binary, root: bundle.join("runtime"), id: id.clone(), seccomp_cache };
        let inner = Inner {
            id,
            bundle,
            created: false,
            cgroup_path: PathBuf::new(),
            init: None,
            execs: HashMap::new(),
            unclaimed: HashMap::new(),
            helpers: HashMap::new(),
            paused: false,
            rootfs_mounted: false,
            events: VecDeque::new(),
            seq: 0,
            subscribers: Vec::new(),
            oom: None,
            ooms_reported: 0,
            oom_watch: None,
        };
        Arc::new(TaskService { state: Mutex::new(inner), changed: Condvar::new(), op: Mutex::new(()), runtime })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn op(&self) -> MutexGuard<'_, ()> {
        self.op.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a child the reaper collected: a runtime helper, or a container process.
    pub fn reaped(&self, pid: u32, status: i32) {
        let mut st = self.lock();
        if let Some(slot) = st.helpers.get_mut(&pid) {
            *slot = Some(status);
        } else {
            st.record_exit(pid, exit_code(status));
        }
        drop(st);
        self.changed.notify_all();
    }

    /// Runs the runtime helper with `args`; see [`Runtime::run`].
    fn helper<S: AsRef<std::ffi::OsStr>>(&self, args: &[S], stdio: HelperStdio) -> Result<String, Status> {
        self.runtime.run(args, stdio, &self.state, &self.changed, |st| &mut st.helpers)
    }

    /// Starts reporting OOM kills in the new container's cgroup as they happen.
    fn watch_oom(self: &Arc<Self>, st: &mut Inner) {
        let counter = match OomCounter::for_cgroup(&st.cgroup_path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("berth-shim: oom counter: {e}");
                return;
            }
        };
        st.ooms_reported = counter.read().unwrap_or(0);
        let svc = Arc::downgrade(self);
        let check = move || match svc.upgrade() {
            Some(svc) => svc.lock().check_oom(),
            None => Check::Gone,
        };
        match crate::oom::watch(&counter, check) {
            Ok(w) => st.oom_watch = Some(w),
            Err(e) => eprintln!("berth-shim: oom watch on {}: {e}", st.cgroup_path.display()),
        }
        st.oom = Some(counter);
    }

    fn check_id(&self, id: &str) -> Result<(), Status> {
        let st = self.lock();
        if !id.is_empty() && id != st.id {
            return Err(not_found(&format!("container {id:?}")));
        }
        Ok(())
    }

    /// Serves one connection: one request, one response (a stream of them for Events).
    pub fn serve_connection(self: &Arc<Self>, mut conn: UnixStream) {
        // A client that connects and sends nothing must not hold this thread for ever; the
        // answer may take long (Wait, Events), the request may not.
        let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(10)));
        let req = match rpc::read_request(&mut conn) {
            Ok(r) => r,
            Err(s) => {
                let _ = rpc::write_frame(&mut conn, &rpc::response(Err(s)));
                return;
            }
        };
        if req.method == "Events" {
            self.events(conn);
            return;
        }
        let shutdown = req.method == "Shutdown";
        let result = self.dispatch(&req.method, &req.payload);
        let ok = result.is_ok();
        let _ = rpc::write_frame(&mut conn, &rpc::response(result));
        let _ = conn.flush();
        if shutdown && ok {
            drop(conn);
            std::process::exit(0);
        }
    }

    fn dispatch(self: &Arc<Self>, method: &str, p: &[u8]) -> Result<Vec<u8>, Status> {
        match method {
            "State" => encode(self.state(rpc::decode(p)?)?),
            "Create" => encode(self.create(rpc::decode(p)?)?),
            "Start" => encode(self.start(rpc::decode(p)?)?),
            "Delete" => encode(self.delete(rpc::decode(p)?)?),
            "Pids" => encode(self.pids(rpc::decode(p)?)?),
            "Pause" => encode(self.pause(rpc::decode(p)?)?),
            "Resume" => encode(self.resume(rpc::decode(p)?)?),
            "Kill" => encode(self.kill(rpc::decode(p)?)?),
            "Exec" => encode(self.exec(rpc::decode(p)?)?),
            "ResizePty" => encode(self.resize_pty(rpc::decode(p)?)?),
            "CloseIO" => encode(self.close_io(rpc::decode(p)?)?),
            "Update" => encode(self.update(rpc::decode(p)?)?),
            "Wait" => encode(self.wait(rpc::decode(p)?)?),
            "Stats" => encode(self.stats(rpc::decode(p)?)?),
            "Connect" => encode(self.connect(rpc::decode(p)?)?),
            "Shutdown" => encode(self.shutdown(rpc::decode(p)?)?),
            "AckEvents" => encode(self.ack_events(rpc::decode(p)?)?),
            other => Err(Status::new(Code::Unimplemented, format!("unknown method {other:?}"))),
        }
    }

    fn state(&self, req: StateRequest) -> Result<StateResponse, Status> {
        self.check_id(&req.id)?;
        let st = self.lock();
        let p = st.proc_ref(&req.exec_id)?;
        let exit = p.exited();
        Ok(StateResponse {
            id: st.id.clone(),
            bundle: st.bundle.display().to_string(),
            pid: p.pid,
            status: p.status(st.paused) as i32,
            stdin: p.stdin.clone(),
            stdout: p.stdout.clone(),
            stderr: p.stderr.clone(),
            terminal: p.terminal,
            exit_status: exit.map_or(0, |e| e.0),
            exited_at: exit.map(|e| e.1.into()),
            exec_id: req.exec_id,
        })
    }

    fn create(self: &Arc<Self>, req: CreateTaskRequest) -> Result<CreateTaskResponse, Status> {
        self.check_id(&req.id)?;
        let _op = self.op();
        let bundle = {
            let mut st = self.lock();
            if st.init.is_some() {
                return Err(Status::already_exists(format!("task {:?}", st.id)));
            }
            let bundle = st.bundle.clone();
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
                st.rootfs_mounted = true;
            }
            bundle
        };
        let built = (|| {
            // A terminal gets a pty whose master comes back over a console socket; otherwise
            // the process gets the stdio fds directly.
            let mut args: Vec<std::ffi::OsString> = vec!["create".into(), "--bundle".into(), bundle.clone().into()];
            if let Some(cache) = &self.runtime.seccomp_cache {
                args.push("--seccomp-cache".into());
                args.push(cache.into());
            }
            let (console, stdio) = if req.terminal {
                let socket = stdio::ConsoleSocket::bind(bundle.join("console.sock"))
                    .map_err(|e| io_status("console socket", e))?;
                args.push("--console-socket".into());
                args.push(socket.path().into());
                (Some(socket), HelperStdio::Null)
            } else {
                let io = stdio::open(&req.stdin, &req.stdout, &req.stderr).map_err(|e| io_status("open stdio", e))?;
                (None, HelperStdio::Process(io))
            };
            let (stdio, close_stdin) = stdio.split();
            let out = self.helper(&args, stdio)?;
            let (pid, cgroup) = out.split_once(' ').unwrap_or((out.as_str(), ""));
            let pid: u32 = pid.parse().map_err(|_| Status::internal(format!("runtime reported {out:?}")))?;
            let (close_stdin, master) = match console {
                Some(socket) => {
                    let master = socket.receive_master().map_err(|e| io_status("pty", e))?;
                    let close =
                        stdio::copy_pty(&master, &req.stdin, &req.stdout).map_err(|e| io_status("pty io", e))?;
                    (close, Some(master))
                }
                None => (close_stdin, None),
            };
            Ok::<_, Status>((pid, PathBuf::from(cgroup), close_stdin, master))
        })();
        let mut st = self.lock();
        let (pid, cgroup, close_stdin, console) = match built {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir_all(st.root().join(&st.id));
                st.unmount_rootfs();
                return Err(e);
            }
        };
        st.created = true;
        st.cgroup_path = cgroup;
        self.watch_oom(&mut st);
        let mut p = Proc::new(req.stdin, req.stdout, req.stderr, req.terminal);
        p.pid = pid;
        p.close_stdin = close_stdin;
        p.console = console;
        st.init = Some(p);
        st.claim(pid);
        drop(st);
        self.changed.notify_all();
        Ok(CreateTaskResponse { pid })
    }

    fn start(&self, req: StartRequest) -> Result<StartResponse, Status> {
        self.check_id(&req.id)?;
        let _op = self.op();
        if req.exec_id.is_empty() {
            let pid = {
                let mut st = self.lock();
                let p = st.proc_mut("")?;
                if p.started {
                    return Err(Status::failed_precondition("task already started"));
                }
                p.pid
            };
            self.helper(&["start"], HelperStdio::Null)?;
            self.lock().proc_mut("")?.started = true;
            return Ok(StartResponse { pid });
        }
        let (bundle, spec_path, terminal, io, stdin, stdout) = {
            let mut st = self.lock();
            if st.init.as_ref().is_none_or(|p| p.exited().is_some() || !p.started) {
                return Err(Status::failed_precondition("cannot start an exec: the task is not running"));
            }
            let bundle = st.bundle.clone();
            let p = st.proc_mut(&req.exec_id)?;
            if p.started {
                return Err(Status::failed_precondition(format!("exec {:?} already started", req.exec_id)));
            }
            let spec_path = p.spec_path.clone().ok_or_else(|| Status::internal("exec without a process spec"))?;
            (bundle, spec_path, p.terminal, p.io.take(), p.stdin.clone(), p.stdout.clone())
        };
        let mut args: Vec<std::ffi::OsString> =
            vec!["exec".into(), "--process".into(), spec_path.into(), "--bundle".into(), bundle.clone().into()];
        let (pid, close_stdin, console) = if terminal {
            let console = stdio::ConsoleSocket::bind(bundle.join(format!("{}.console.sock", req.exec_id)))
                .map_err(|e| io_status("console socket", e))?;
            args.push("--console-socket".into());
            args.push(console.path().into());
            let out = self.helper(&args, HelperStdio::Null)?;
            let pid: u32 = out.trim().parse().map_err(|_| Status::internal(format!("runtime reported {out:?}")))?;
            let master = console.receive_master().map_err(|e| io_status("pty", e))?;
            let close = stdio::copy_pty(&master, &stdin, &stdout).map_err(|e| io_status("pty io", e))?;
            (pid, close, Some(master))
        } else {
            let io = match io {
                Some(io) => io,
                None => {
                    let st = self.lock();
                    let p = st.proc_ref(&req.exec_id)?;
                    stdio::open(&p.stdin, &p.stdout, &p.stderr).map_err(|e| io_status("open stdio", e))?
                }
            };
            let (stdio, close_stdin) = HelperStdio::Process(io).split();
            let out = self.helper(&args, stdio)?;
            let pid: u32 = out.trim().parse().map_err(|_| Status::internal(format!("runtime reported {out:?}")))?;
            (pid, close_stdin, None)
        };
        let mut st = self.lock();
        let p = st.proc_mut(&req.exec_id)?;
        p.pid = pid;
        p.started = true;
        p.close_stdin = close_stdin;
        if console.is_some() {
            p.console = console;
            p.hold = None;
        }
        st.claim(pid);
        drop(st);
        self.changed.notify_all();
        Ok(StartResponse { pid })
    }

    fn delete(&self, req: DeleteRequest) -> Result<DeleteResponse, Status> {
        self.check_id(&req.id)?;
        let _op = self.op();
        if !req.exec_id.is_empty() {
            let mut st = self.lock();
            let p = st.proc_mut(&req.exec_id)?;
            if p.started && p.exited().is_none() {
                return Err(Status::failed_precondition(format!("exec {:?} is still running", req.exec_id)));
            }
            let exit = p.exited();
            let (pid, spec_path) = (p.pid, p.spec_path.clone());
            st.execs.remove(&req.exec_id);
            drop(st);
            self.changed.notify_all();
            if let Some(path) = spec_path {
                let _ = std::fs::remove_file(path);
            }
            return Ok(DeleteResponse {
                pid,
                exit_status: exit.map_or(0, |e| e.0),
                exited_at: exit.map(|e| e.1.into()),
            });
        }
        let (pid, exit, created) = {
            let mut st = self.lock();
            let p = st.proc_mut("")?;
            if p.started && p.exited().is_none() {
                return Err(Status::failed_precondition("task is still running: kill it first"));
            }
            let (pid, exit) = (p.pid, p.exited());
            st.oom_watch = None;
            (pid, exit, std::mem::take(&mut st.created))
        };
        if created {
            // Kills a created-but-never-started init and removes cgroups and state; an init
            // already reaped here leaves only cgroups and state (`--exited`).
            let mut args: Vec<&std::ffi::OsStr> = vec!["delete".as_ref(), "--force".as_ref()];
            if exit.is_some() {
                args.push("--exited".as_ref());
            }
            if let Err(e) = self.helper(&args, HelperStdio::Null) {
                eprintln!("berth-shim: delete container: {}", e.message);
            }
        }
        let mut st = self.lock();
        st.unmount_rootfs();
        st.execs.clear();
        st.init = None;
        drop(st);
        self.changed.notify_all();
        Ok(DeleteResponse { pid, exit_status: exit.map_or(0, |e| e.0), exited_at: exit.map(|e| e.1.into()) })
    }

    fn require_container(&self) -> Result<(), Status> {
        if self.lock().created {
            Ok(())
        } else {
            Err(not_found("container"))
        }
    }

    fn pids(&self, req: PidsRequest) -> Result<PidsResponse, Status> {
        self.check_id(&req.id)?;
        let _op = self.op();
        self.require_container()?;
        let out = self.helper(&["pids"], HelperStdio::Null)?;
        let processes = out
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
            .map(|pid| ProcessInfo { pid, info: None })
            .collect();
        Ok(PidsResponse { processes })
    }

    fn pause(&self, req: PauseRequest) -> Result<(), Status> {
        self.check_id(&req.id)?;
        let _op = self.op();
        self.require_container()?;
        self.helper(&["pause"], HelperStdio::Null)?;
        self.lock().paused = true;
        Ok(())
    }

    fn resume(&self, req: ResumeRequest) -> Result<(), Status> {
        self.check_id(&req.id)?;
        let _op = self.op();
        self.require_container()?;
        self.helper(&["resume"], HelperStdio::Null)?;
        self.lock().paused = false;
        Ok(())
    }

    fn kill(&self, req: KillRequest) -> Result<(), Status> {
        self.check_id(&req.id)?;
        if !(1..=64).contains(&req.signal) {
            return Err(Status::invalid_argument(format!("signal {}: not a signal", req.signal)));
        }
        let _op = self.op();
        {
            let mut st = self.lock();
            let p = st.proc_mut(&req.exec_id)?;
            if p.exited().is_some() {
                return Err(not_found("process already finished"));
            }
            if !req.exec_id.is_empty() {
                if !p.started {
                    return Err(Status::failed_precondition("exec not started"));
                }
                // SAFETY: signalling a process of ours by pid; it is not reaped while we hold
                // the state lock, so the pid is still this process.
                if unsafe { libc::kill(p.pid as i32, req.signal as i32) } != 0 {
                    return Err(io_status("kill", std::io::Error::last_os_error()));
                }
                return Ok(());
            }
            if !st.created {
                return Err(not_found("container"));
            }
        }
        let signal = req.signal.to_string();
        let mut args: Vec<&std::ffi::OsStr> = vec!["kill".as_ref(), signal.as_ref()];
        if req.all {
            args.push("--all".as_ref());
        }
        self.helper(&args, HelperStdio::Null)?;
        Ok(())
    }

    fn exec(&self, req: ExecProcessRequest) -> Result<(), Status> {
        self.check_id(&req.id)?;
        let _op = self.op();
        let mut st = self.lock();
        if req.exec_id.is_empty() || req.exec_id.contains('/') {
            return Err(Status::invalid_argument(format!("exec id {:?} is invalid", req.exec_id)));
        }
        if st.execs.contains_key(&req.exec_id) {
            return Err(Status::already_exists(format!("exec {:?}", req.exec_id)));
        }
        if st.init.as_ref().is_none_or(|p| p.exited().is_some()) {
            return Err(Status::failed_precondition("cannot exec in a stopped task"));
        }
        // berthd checked that this is an OCI process spec; the runtime reads it at Start.
        let spec = req.spec.ok_or_else(|| Status::invalid_argument("exec spec must be set"))?;
        let path = st.bundle.join(format!("exec-{}.json", req.exec_id));
        std::fs::write(&path, &spec.value).map_err(|e| io_status("write exec spec", e))?;
        let mut p = Proc::new(req.stdin, req.stdout, req.stderr, req.terminal);
        p.spec_path = Some(path);
        if !req.terminal {
            p.io = Some(stdio::open(&p.stdin, &p.stdout, &p.stderr).map_err(|e| io_status("open stdio", e))?);
        } else if !p.stdout.is_empty() {
            let f = std::fs::OpenOptions::new().read(true).write(true).open(&p.stdout);
            p.hold = Some(f.map_err(|e| io_status("open stdout fifo", e))?);
        }
        st.execs.insert(req.exec_id, p);
        Ok(())
    }

    fn resize_pty(&self, req: ResizePtyRequest) -> Result<(), Status> {
        self.check_id(&req.id)?;
        let mut st = self.lock();
        let p = st.proc_mut(&req.exec_id)?;
        let master = p.console.as_ref().ok_or_else(|| Status::failed_precondition("process has no terminal"))?;
        stdio::resize(master, req.width, req.height).map_err(|e| io_status("resize pty", e))?;
        Ok(())
    }

    fn close_io(&self, req: CloseIoRequest) -> Result<(), Status> {
        self.check_id(&req.id)?;
        let mut st = self.lock();
        let p = st.proc_mut(&req.exec_id)?;
        if req.stdin {
            p.close_stdin.take();
        }
        Ok(())
    }

    fn update(&self, req: UpdateTaskRequest) -> Result<(), Status> {
        self.check_id(&req.id)?;
        let any = req.resources.ok_or_else(|| Status::invalid_argument("resources must be set"))?;
        let _op = self.op();
        self.require_container()?;
        let path = self.lock().bundle.join("update.json");
        std::fs::write(&path, &any.value).map_err(|e| io_status("write resources", e))?;
        let result = self.helper(&["update".as_ref(), "--resources".as_ref(), path.as_os_str()], HelperStdio::Null);
        let _ = std::fs::remove_file(&path);
        result.map(|_| ())
    }

    fn wait(&self, req: WaitRequest) -> Result<WaitResponse, Status> {
        self.check_id(&req.id)?;
        let mut st = self.lock();
        st.proc_ref(&req.exec_id)?;
        loop {
            match st.proc_ref(&req.exec_id) {
                Err(_) => return Err(Status::aborted("process deleted")),
                Ok(p) => {
                    if let Some((code, at)) = p.exited() {
                        return Ok(WaitResponse { exit_status: code, exited_at: Some(at.into()) });
                    }
                }
            }
            st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn stats(&self, req: StatsRequest) -> Result<StatsResponse, Status> {
        self.check_id(&req.id)?;
        let cgroup = self.lock().cgroup_path.clone();
        if cgroup.as_os_str().is_empty() {
            return Err(Status::failed_precondition("the task has no cgroup yet"));
        }
        let stats = metrics::collect(&cgroup).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Status::not_found(e.to_string()),
            _ => io_status("cgroup stats", e),
        })?;
        Ok(StatsResponse { stats: Some(stats) })
    }

    fn connect(&self, req: ConnectRequest) -> Result<ConnectResponse, Status> {
        self.check_id(&req.id)?;
        let st = self.lock();
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: st.init.as_ref().map_or(0, |p| p.pid),
            version: env!("CARGO_PKG_VERSION").into(),
        })
    }

    /// Checks that the shim may stop (the caller exits once the response is out).
    fn shutdown(&self, req: ShutdownRequest) -> Result<(), Status> {
        let _op = self.op();
        let created = {
            let mut st = self.lock();
            if !req.now && st.init.is_some() {
                return Err(Status::failed_precondition("the task still exists: delete it first"));
            }
            st.oom_watch = None;
            std::mem::take(&mut st.created)
        };
        if req.now && created {
            let _ = self.helper(&["delete", "--force"], HelperStdio::Null);
        }
        self.lock().unmount_rootfs();
        Ok(())
    }

    /// Streams the queued events, then new ones, until the client goes away.
    fn events(&self, mut conn: UnixStream) {
        let (tx, rx) = mpsc::channel();
        {
            let mut st = self.lock();
            for ev in &st.events {
                let _ = tx.send(ev.clone());
            }
            st.subscribers.push(tx);
        }
        while let Ok(ev) = rx.recv() {
            let frame = rpc::response(Ok(ev.encode_to_vec()));
            if rpc::write_frame(&mut conn, &frame).is_err() {
                return;
            }
        }
    }

    fn ack_events(&self, req: AckEventsRequest) -> Result<(), Status> {
        let mut st = self.lock();
        while st.events.front().is_some_and(|e| e.seq <= req.seq) {
            st.events.pop_front();
        }
        Ok(())
    }
}

/// Serves `conn` on a thread of its own.
pub fn serve(svc: Arc<TaskService>, conn: UnixStream) {
    spawn("conn", move || svc.serve_connection(conn));
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::berth::shim::v1::RpcResponse;

    /// One call through a socket pair, as berthd makes it.
    fn call(svc: &Arc<TaskService>, frame: &[u8]) -> RpcResponse {
        let (mut client, server) = UnixStream::pair().unwrap();
        let svc = svc.clone();
        let t = std::thread::spawn(move || svc.serve_connection(server));
        client.write_all(frame).unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let reply = rpc::read_frame(&mut client).unwrap().expect("a response frame");
        t.join().unwrap();
        RpcResponse::decode(reply.as_slice()).unwrap()
    }

    fn framed(method: &str, payload: Vec<u8>) -> Vec<u8> {
        let mut out = Vec::new();
        rpc::write_frame(&mut out, &RpcRequest { method: method.into(), payload }).unwrap();
        out
    }

    #[test]
    fn calls_without_a_container_and_bad_input_get_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let svc = TaskService::new("c1".into(), dir.path().to_path_buf(), "/nonexistent/berth-runtime".into(), None);
        // Connect answers with this process and no task yet.
        let r = call(&svc, &framed("Connect", ConnectRequest { id: "c1".into() }.encode_to_vec()));
        assert_eq!(r.code, 0, "{}", r.message);
        let c = ConnectResponse::decode(r.payload.as_slice()).unwrap();
        assert_eq!((c.shim_pid, c.task_pid), (std::process::id(), 0));
        // State of a task never created, and of another container: NotFound.
        let r = call(&svc, &framed("State", StateRequest { id: "c1".into(), exec_id: String::new() }.encode_to_vec()));
        assert_eq!(r.code, Code::NotFound as i32, "{}", r.message);
        let r =
            call(&svc, &framed("State", StateRequest { id: "other".into(), exec_id: String::new() }.encode_to_vec()));
        assert_eq!(r.code, Code::NotFound as i32, "{}", r.message);
        // An unknown method, a payload that is not the request message, a torn frame.
        let r = call(&svc, &framed("Checkpoint", Vec::new()));
        assert_eq!(r.code, Code::Unimplemented as i32, "{}", r.message);
        let r = call(&svc, &framed("Kill", vec![0xff, 0xff, 0xff]));
        assert_eq!(r.code, Code::InvalidArgument as i32, "{}", r.message);
        let r = call(&svc, &[0, 0, 0, 9, 1, 2]);
        assert_eq!(r.code, Code::InvalidArgument as i32, "{}", r.message);
        // A signal out of range is refused before anything runs.
        let kill = KillRequest { id: "c1".into(), exec_id: String::new(), signal: 0, all: false };
        let r = call(&svc, &framed("Kill", kill.encode_to_vec()));
        assert_eq!(r.code, Code::InvalidArgument as i32, "{}", r.message);
        // Queued events are acknowledged by sequence number.
        svc.lock().queue("/tasks/oom", &TaskOom { container_id: "c1".into() });
        svc.lock().queue("/tasks/oom", &TaskOom { container_id: "c1".into() });
        let r = call(&svc, &framed("AckEvents", AckEventsRequest { seq: 1 }.encode_to_vec()));
        assert_eq!(r.code, 0);
        assert_eq!(svc.lock().events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2]);
    }
}
