//! Tasks through Debian's `ctr` against berthd and real berth-shims: `ctr run --rm` output and
//! exit codes, a detached task with exec (and a missing binary), ps, pause/resume, kill,
//! delete, berthd restarts that reconnect to running shims, `ctr`/`berthctl task metrics`
//! with real limits, /tasks/oom for an OOM kill while the task keeps running, and `ctr run
//! --uidmap/--gidmap` in a user namespace, sharing its remapped rootfs with `berthctl run`.
//! Every test cleans up its shims, container processes, mounts and cgroups, also when it
//! panics.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_integration::images::{test_images, BUSYBOX};
use berth_integration::leftovers::{bundles, Leftovers};
use berth_integration::{bin, external_tool, run, Daemon, Run};

fn ctr(d: &Daemon, args: &[&str]) -> Run {
    d.ctr(args).expect("ctr is installed")
}

fn setup() -> Option<(Daemon, Leftovers)> {
    let set = test_images()?;
    external_tool("ctr")?;
    let d = Daemon::start();
    let left = Leftovers(d.state.clone());
    let archive = set.path(&set.get("busybox").docker_archive);
    d.berthctl(&["image", "import", archive.to_str().unwrap()]).ok();
    Some((d, left))
}

fn mounts_under(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let needle = dir.to_string_lossy().to_string();
    text.lines().filter(|l| l.contains(&needle)).map(String::from).collect()
}

fn assert_nothing_left(d: &Daemon) {
    assert!(bundles(&d.state).is_empty(), "bundles left: {:?}", bundles(&d.state));
    assert!(mounts_under(d.dir()).is_empty(), "mounts left: {:?}", mounts_under(d.dir()));
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ctr_run_rm_prints_and_passes_exit_codes() {
    let Some((d, _left)) = setup() else { return };
    assert_eq!(ctr(&d, &["run", "--rm", BUSYBOX, "hi", "echo", "hi"]).ok(), "hi\n");
    let r = ctr(&d, &["run", "--rm", BUSYBOX, "codes", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(r.status.code(), Some(3), "{}", r.stderr);
    assert_eq!(r.stdout, "out\n");
    assert!(r.stderr.starts_with("err\n"), "{}", r.stderr);
    // The spec comes from the image config (PATH) and ctr's defaults (namespaces, rootfs).
    let r = ctr(&d, &["run", "--rm", BUSYBOX, "env", "sh", "-c", "echo $PATH; echo $$; ls /"]);
    let out = r.ok();
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].contains("/usr/local/sbin"), "{out}");
    assert_eq!(lines[1], "1", "init runs as pid 1 of its own pid namespace: {out}");
    assert!(lines.contains(&"proc") && lines.contains(&"bin"), "{out}");
    assert_eq!(ctr(&d, &["containers", "ls", "-q"]).ok(), "");
    assert_nothing_left(&d);
}

#[test]
fn ctr_detached_task_exec_ps_pause_kill_delete() {
    let Some((d, _left)) = setup() else { return };
    ctr(&d, &["run", "-d", BUSYBOX, "bg", "sleep", "1000"]).ok();
    let ls = ctr(&d, &["task", "ls"]).ok().to_string();
    assert!(ls.lines().any(|l| l.starts_with("bg ") && l.ends_with("RUNNING")), "{ls}");

    let r = ctr(&d, &["task", "exec", "--exec-id", "e1", "bg", "sh", "-c", "echo in; echo oops >&2; exit 4"]);
    assert_eq!(r.status.code(), Some(4));
    assert_eq!(r.stdout, "in\n");
    assert!(r.stderr.starts_with("oops\n"), "{}", r.stderr);
    let err = ctr(&d, &["task", "exec", "--exec-id", "e2", "bg", "/no/such/binary"]).err().to_string();
    assert!(err.contains("not found"), "clear error for a missing binary: {err}");

    let ps = ctr(&d, &["task", "ps", "bg"]).ok().to_string();
    assert_eq!(ps.lines().count(), 2, "header and the one process: {ps}");

    ctr(&d, &["task", "pause", "bg"]).ok();
    assert!(ctr(&d, &["task", "ls"]).ok().contains("PAUSED"));
    ctr(&d, &["task", "resume", "bg"]).ok();
    assert!(ctr(&d, &["task", "ls"]).ok().contains("RUNNING"));

    // sleep as pid 1 ignores SIGTERM without a handler, as under runc; SIGKILL ends it.
    ctr(&d, &["task", "kill", "-s", "SIGKILL", "bg"]).ok();
    wait_for("the task to stop", || ctr(&d, &["task", "ls"]).ok().contains("STOPPED"));
    let err = ctr(&d, &["task", "exec", "--exec-id", "late", "bg", "true"]).err().to_string();
    assert!(err.contains("stopped"), "exec into a stopped task: {err}");
    ctr(&d, &["task", "delete", "bg"]).ok();
    ctr(&d, &["containers", "rm", "bg"]).ok();
    assert_nothing_left(&d);
}

#[test]
fn running_tasks_survive_a_berthd_restart() {
    let Some((mut d, _left)) = setup() else { return };
    ctr(&d, &["run", "-d", BUSYBOX, "long", "sleep", "1000"]).ok();
    ctr(&d, &["run", "-d", BUSYBOX, "short", "sh", "-c", "sleep 1; exit 7"]).ok();
    d.stop_with(libc::SIGKILL);

    // Restart on the same root and state.
    let log = d.dir().join("berthd2.log");
    let child = restart(&d, &log);
    let ctr2 =
        |args: &[&str]| run(Command::new(external_tool("ctr").unwrap()).arg("--address").arg(&d.socket).args(args));
    wait_for("berthd to answer", || ctr2(&["version"]).status.success());
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let ls = ctr2(&["task", "ls"]).ok().to_string();
        assert!(ls.contains("long") && ls.contains("short"), "{ls}");
        // `short` exits after the restart; wait reports its code.
        wait_for("short to stop", || {
            ctr2(&["task", "ls"]).ok().lines().any(|l| l.starts_with("short ") && l.contains("STOPPED"))
        });
        for id in ["long", "short"] {
            ctr2(&["task", "kill", "-s", "SIGKILL", id]);
            wait_for("stop", || ctr2(&["task", "ls"]).ok().lines().any(|l| l.starts_with(id) && l.contains("STOPPED")));
            ctr2(&["task", "delete", id]).ok();
        }
    }));
    stop_restarted(child, &log, result);
    assert!(bundles(&d.state).is_empty());
}

/// Starts berthd again on `d`'s root, state and socket, logging to `log`.
fn restart(d: &Daemon, log: &std::path::Path) -> std::process::Child {
    Command::new(bin("berthd"))
        .arg("--root")
        .arg(&d.root)
        .arg("--state")
        .arg(&d.state)
        .arg("--address")
        .arg(&d.socket)
        .arg("--config")
        .arg(d.dir().join("empty.toml"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Stops a berthd started by [`restart`]; re-raises the test's panic with its log.
fn stop_restarted(mut child: std::process::Child, log: &std::path::Path, result: std::thread::Result<()>) {
    // SAFETY: stopping the berthd this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    if let Err(p) = result {
        eprintln!("{}", std::fs::read_to_string(log).unwrap_or_default());
        std::panic::resume_unwind(p);
    }
}

#[test]
fn dead_shims_are_cleaned_up_with_their_real_exit_status() {
    let Some((mut d, _left)) = setup() else { return };
    let done = format!("done-{}", std::process::id());
    let live = format!("live-{}", std::process::id());
    ctr(&d, &["run", "-d", BUSYBOX, &done, "sh", "-c", "exit 5"]).ok();
    ctr(&d, &["run", "-d", BUSYBOX, &live, "sleep", "1000"]).ok();
    wait_for("done to stop", || {
        ctr(&d, &["task", "ls"]).ok().lines().any(|l| l.starts_with(&done) && l.contains("STOPPED"))
    });
    let init = |id: &str| -> i32 {
        let ls = ctr(&d, &["task", "ls"]).ok().to_string();
        ls.lines().find(|l| l.starts_with(id)).and_then(|l| l.split_whitespace().nth(1)).unwrap().parse().unwrap()
    };
    let live_pid = init(&live);
    d.stop_with(libc::SIGKILL);
    for id in [&done, &live] {
        let pid: i32 = std::fs::read_to_string(d.state.join("shims/default").join(id).join("shim.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // SAFETY: killing the shim this test started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let log = d.dir().join("berthd2.log");
    let child = restart(&d, &log);
    let ctr2 =
        |args: &[&str]| run(Command::new(external_tool("ctr").unwrap()).arg("--address").arg(&d.socket).args(args));
    wait_for("berthd to answer", || ctr2(&["version"]).status.success());
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let ls = ctr2(&["task", "ls"]).ok().to_string();
        assert!(!ls.contains(&done) && !ls.contains(&live), "{ls}");
        let exit_of = |id: &str| {
            text.lines()
                .find(|l| l.contains("task of a dead shim exited") && l.contains(&format!("task={id} ")))
                .and_then(|l| l.split("exit_status=").nth(1))
                .map(|v| v.split_whitespace().next().unwrap_or_default().to_string())
        };
        assert_eq!(exit_of(&done).as_deref(), Some("5"), "{text}");
        assert_eq!(exit_of(&live).as_deref(), Some("137"), "{text}");
        // The container that outlived its shim is gone with everything in its cgroup.
        wait_for("the orphaned container to die", || {
            // Gone, or a zombie waiting for this machine's init to reap it.
            std::fs::read_to_string(format!("/proc/{live_pid}/stat"))
                .map(|s| s.rsplit(')').next().unwrap_or_default().trim_start().starts_with('Z'))
                .unwrap_or(true)
        });
        for id in [&done, &live] {
            ctr2(&["containers", "rm", id]).ok();
        }
    }));
    stop_restarted(child, &log, result);
    assert!(bundles(&d.state).is_empty());
}

/// `berthctl events` for the given filters, its lines collected as they arrive.
struct EventLog {
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl EventLog {
    fn start(d: &Daemon, filters: &[&str]) -> EventLog {
        use std::io::BufRead;
        let mut child = Command::new(bin("berthctl"))
            .arg("--address")
            .arg(&d.socket)
            .arg("events")
            .args(filters)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        // The subscription is in place once berthctl has connected; give it a moment.
        std::thread::sleep(Duration::from_millis(300));
        EventLog { child, lines }
    }

    /// The topics of the events about container `id`, in order.
    fn topics_of(&self, id: &str) -> Vec<String> {
        let needle = format!("container_id: \"{id}\"");
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .filter(|l| l.contains(&needle))
            .filter_map(|l| l.split_whitespace().nth(2))
            .map(String::from)
            .collect()
    }

    fn all(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `METRIC VALUE` pairs of a metrics table (ctr's or berthctl's, whose value is the last column).
fn metric(table: &str, name: &str) -> Option<String> {
    table.lines().find_map(|l| {
        let fields: Vec<&str> = l.split_whitespace().collect();
        let at = fields.iter().position(|f| *f == name)?;
        fields.get(at + 1).map(|v| v.to_string())
    })
}

#[test]
fn task_metrics_with_ctr_and_berthctl() {
    let Some((d, _left)) = setup() else { return };
    // Ids name cgroups (berth/default/<id>), which other test processes' daemons share.
    let id = &format!("m-limits-{}", std::process::id());
    d.berthctl(&["run", "-d", "--memory-limit", "32m", "--pids-limit", "20", "busybox", id, "sleep", "1000"]).ok();
    // ctr decodes io.containerd.cgroups.v1.Metrics (this host is cgroup v1 or hybrid) and
    // prints its table.
    let table = ctr(&d, &["task", "metrics", id]).ok().to_string();
    if Path::new("/sys/fs/cgroup/memory").is_dir() {
        assert_eq!(metric(&table, "memory.limit_in_bytes").as_deref(), Some("33554432"), "{table}");
        let usage: u64 = metric(&table, "memory.usage_in_bytes").unwrap().parse().unwrap();
        assert!(usage > 0, "{table}");
        let cpu: u64 = metric(&table, "cpuacct.usage").unwrap().parse().unwrap();
        assert!(cpu > 0, "{table}");
        let pids: u64 = metric(&table, "pids.current").unwrap().parse().unwrap();
        assert!(pids >= 1, "{table}");
        assert_eq!(metric(&table, "pids.limit").as_deref(), Some("20"), "{table}");
    } else {
        assert_eq!(metric(&table, "memory.usage_limit").as_deref(), Some("33554432"), "{table}");
        assert_eq!(metric(&table, "pids.limit").as_deref(), Some("20"), "{table}");
    }

    let table = d.berthctl(&["task", "metrics", id]).ok().to_string();
    assert!(table.starts_with("TASK"), "{table}");
    let limit = metric(&table, "memory.limit_in_bytes").or_else(|| metric(&table, "memory.max"));
    assert_eq!(limit.as_deref(), Some("33554432"), "{table}");
    let pids: u64 = metric(&table, "pids.current").unwrap().parse().unwrap();
    assert!(pids >= 1, "{table}");
    assert_eq!(metric(&table, "pids.max").as_deref(), Some("20"), "{table}");
    // All tasks when no id is given; an unknown id is an error.
    assert!(d.berthctl(&["task", "metrics"]).ok().contains(id.as_str()));
    d.berthctl(&["task", "metrics", "m-nosuch"]).err();

    d.berthctl(&["task", "rm", "-f", id]).ok();
    d.berthctl(&["container", "rm", id]).ok();
    assert!(bundles(&d.state).is_empty(), "bundles left: {:?}", bundles(&d.state));
}

#[test]
fn oom_kill_of_a_child_is_reported_while_the_task_runs() {
    let Some(set) = test_images() else { return };
    let d = Daemon::start();
    let _left = Leftovers(d.state.clone());
    d.berthctl(&["image", "import", set.path(&set.get("busybox").docker_archive).to_str().unwrap()]).ok();
    let events = EventLog::start(&d, &["topic==/tasks/oom", "topic==/tasks/exit"]);
    let (child, init) = (&format!("oom-child-{}", std::process::id()), &format!("oom-init-{}", std::process::id()));

    // The hog (a child of the init) is OOM-killed; the init survives and exits 3 later.
    let r = d.berthctl(&[
        "run",
        "--rm",
        "--memory-limit",
        "24m",
        "busybox",
        child,
        "sh",
        "-c",
        "tail /dev/zero; sleep 2; exit 3",
    ]);
    assert_eq!(r.status.code(), Some(3), "the init is not what was killed: {}", r.stderr);
    wait_for("the exit event", || events.topics_of(child).iter().any(|t| t == "/tasks/exit"));
    assert_eq!(events.topics_of(child), ["/tasks/oom", "/tasks/exit"], "{}", events.all());

    // The init itself is killed: reported once, by the watch or the check at exit, before
    // the exit.
    let r = d.berthctl(&["run", "--rm", "--memory-limit", "24m", "busybox", init, "tail", "/dev/zero"]);
    assert_eq!(r.status.code(), Some(137), "{}", r.stderr);
    wait_for("the exit event", || events.topics_of(init).iter().any(|t| t == "/tasks/exit"));
    assert_eq!(events.topics_of(init), ["/tasks/oom", "/tasks/exit"], "{}", events.all());
    assert!(bundles(&d.state).is_empty(), "bundles left: {:?}", bundles(&d.state));
}

/// Keys of the snapshots ctr lists.
fn snapshot_keys(d: &Daemon) -> Vec<String> {
    let out = ctr(d, &["snapshots", "ls"]).ok().to_string();
    out.lines().skip(1).filter_map(|l| l.split_whitespace().next()).map(String::from).collect()
}

#[test]
fn ctr_and_berthctl_run_in_a_user_namespace_and_share_the_remapped_rootfs() {
    let Some((d, _left)) = setup() else { return };
    let before = snapshot_keys(&d);
    let map = ["--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536"];
    let script = "id -u; cat /proc/self/uid_map; stat -c %u:%g /bin /etc/passwd";
    let r = ctr(&d, &[&["run", "--rm"], &map[..], &[BUSYBOX, "ux1", "sh", "-c", script]].concat());
    let out: Vec<String> = r.ok().lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
    assert_eq!(out, ["0", "0 100000 65536", "0:0", "0:0"], "{}", r.stderr);

    // From the host, the container's init runs as uid 100000.
    ctr(&d, &[&["run", "-d"], &map[..], &[BUSYBOX, "ux-bg", "sleep", "1000"]].concat()).ok();
    let ls = ctr(&d, &["task", "ls"]).ok().to_string();
    let pid = ls.lines().find(|l| l.starts_with("ux-bg ")).and_then(|l| l.split_whitespace().nth(1)).unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uids = status.lines().find(|l| l.starts_with("Uid:")).unwrap().to_string();
    assert_eq!(uids.split_whitespace().collect::<Vec<_>>(), ["Uid:", "100000", "100000", "100000", "100000"]);
    let remapped: Vec<String> = snapshot_keys(&d).into_iter().filter(|k| k.ends_with("-100000-100000")).collect();
    assert_eq!(remapped.len(), 1, "{:?}", snapshot_keys(&d));
    let count = snapshot_keys(&d).len();

    // berthctl finds ctr's remapped snapshot by its name and runs on it.
    let r = d.berthctl(&["run", "--rm", "--uidmap", "0:100000:65536", "busybox", "ux2", "sh", "-c", script]);
    let out: Vec<String> = r.ok().lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
    assert_eq!(out, ["0", "0 100000 65536", "0:0", "0:0"], "{}", r.stderr);
    assert_eq!(snapshot_keys(&d).len(), count, "no second remapped snapshot");

    ctr(&d, &["task", "kill", "-s", "SIGKILL", "ux-bg"]);
    wait_for("ux-bg to stop", || {
        ctr(&d, &["task", "ls"]).ok().lines().any(|l| l.starts_with("ux-bg ") && l.contains("STOPPED"))
    });
    ctr(&d, &["task", "delete", "ux-bg"]).ok();
    ctr(&d, &["containers", "rm", "ux-bg"]).ok();
    d.berthctl(&["gc"]).ok();
    assert_eq!(snapshot_keys(&d), before, "the remapped parent goes with its last container");
    assert_eq!(ctr(&d, &["containers", "ls", "-q"]).ok(), "");
    assert_nothing_left(&d);
}
