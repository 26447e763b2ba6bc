//! Tasks through Debian's `ctr` against berthd and real berth-shims: `ctr run --rm` output and
//! exit codes, a detached task with exec (and a missing binary), ps, pause/resume, kill,
//! delete, and berthd restarts that reconnect to running shims. Every test cleans up its
//! shims, container processes, mounts and cgroups, also when it panics.

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
    let mut child = Command::new(bin("berthd"))
        .arg("--root")
        .arg(&d.root)
        .arg("--state")
        .arg(&d.state)
        .arg("--address")
        .arg(&d.socket)
        .arg("--config")
        .arg(d.dir().join("empty.toml"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
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
    // SAFETY: stopping the berthd this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    if let Err(p) = result {
        eprintln!("{}", std::fs::read_to_string(&log).unwrap_or_default());
        std::panic::resume_unwind(p);
    }
    assert!(bundles(&d.state).is_empty());
}
