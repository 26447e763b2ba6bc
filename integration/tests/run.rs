//! `berthctl run` and `berthctl task` with real containers: exit codes, stdout and stderr
//! apart, stdin, spec flags (env, user, cwd, hostname, host network), Docker's capability set,
//! no_new_privs and Docker's default seccomp profile (refused calls fail with EPERM, ordinary
//! work and capability-gated calls still run), memory limit → OOM kill reported, pids limit,
//! pause/resume, exec (incl. a missing binary and a stopped task), bad input, 100 containers
//! at once, user namespaces (`--uidmap`: ids inside and on the host, the remapped rootfs made
//! once and collected after its last container), and nothing left behind. Cleans up shims,
//! container processes, mounts and cgroups on panic.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_integration::images::test_images;
use berth_integration::leftovers::{bundles, Leftovers};
use berth_integration::{bin, run, Daemon, DaemonOptions, Run};

fn setup() -> Option<(Daemon, Leftovers)> {
    setup_with(DaemonOptions::default())
}

fn setup_with(opts: DaemonOptions) -> Option<(Daemon, Leftovers)> {
    let set = test_images()?;
    let d = Daemon::start_with(opts);
    let left = Leftovers(d.state.clone());
    let archive = set.path(&set.get("busybox").docker_archive);
    d.berthctl(&["image", "import", archive.to_str().unwrap()]).ok();
    Some((d, left))
}

fn ctl_stdin(d: &Daemon, args: &[&str], input: &str) -> Run {
    use std::io::Write;
    let mut child = Command::new(bin("berthctl"))
        .arg("--address")
        .arg(&d.socket)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

fn mounts_under(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let needle = dir.to_string_lossy().to_string();
    text.lines().filter(|l| l.contains(&needle)).map(String::from).collect()
}

/// No bundle, mount or container left, and no cgroup of the given containers.
fn assert_nothing_left(d: &Daemon, ids: &[&str]) {
    assert!(bundles(&d.state).is_empty(), "bundles left: {:?}", bundles(&d.state));
    assert!(mounts_under(d.dir()).is_empty(), "mounts left: {:?}", mounts_under(d.dir()));
    assert_eq!(d.berthctl(&["container", "ls", "-q"]).ok(), "");
    for id in ids {
        for ctrl in ["memory", "pids", "freezer", "cpu"] {
            let p = Path::new("/sys/fs/cgroup").join(ctrl).join("berth/default").join(id);
            assert!(!p.exists(), "cgroup left: {}", p.display());
        }
    }
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn run_rm_exit_codes_stdio_and_spec_flags() {
    let Some((d, _left)) = setup() else { return };
    assert_eq!(d.berthctl(&["run", "--rm", "busybox", "r-echo", "echo", "hello"]).ok(), "hello\n");
    let r = d.berthctl(&["run", "--rm", "busybox", "r-codes", "sh", "-c", "echo out; echo err >&2; exit 5"]);
    assert_eq!((r.status.code(), r.stdout.as_str(), r.stderr.as_str()), (Some(5), "out\n", "err\n"));
    let r = ctl_stdin(&d, &["run", "--rm", "busybox", "r-stdin", "sh", "-c", "cat; echo done"], "piped in\n");
    assert_eq!(r.stdout, "piped in\ndone\n", "{}", r.stderr);
    let r = d.berthctl(&[
        "run",
        "--rm",
        "--env",
        "FOO=bar",
        "-u",
        "1000:1000",
        "--cwd",
        "/tmp",
        "--hostname",
        "hh",
        "busybox",
        "r-flags",
        "sh",
        "-c",
        "echo $FOO; id -u; id -g; pwd; hostname",
    ]);
    assert_eq!(r.ok(), "bar\n1000\n1000\n/tmp\nhh\n");
    let r = d.berthctl(&[
        "run",
        "--rm",
        "busybox",
        "r-sec",
        "sh",
        "-c",
        "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status",
    ]);
    let out = r.ok().to_string();
    assert!(out.contains("CapEff:\t00000000a80425fb"), "Docker's default capabilities: {out}");
    assert!(out.contains("NoNewPrivs:\t1") && out.contains("Seccomp:\t2"), "{out}");
    // Own network namespace: only lo; with --net-host the host's interfaces.
    assert_eq!(d.berthctl(&["run", "--rm", "busybox", "r-net", "ls", "/sys/class/net"]).ok(), "lo\n");
    let host =
        d.berthctl(&["run", "--rm", "--net-host", "busybox", "r-nethost", "ls", "/sys/class/net"]).ok().to_string();
    assert!(host.lines().count() > 1, "{host}");
    // /proc/kcore is masked and /proc/sys read-only.
    let r = d.berthctl(&[
        "run",
        "--rm",
        "busybox",
        "r-mask",
        "sh",
        "-c",
        "cat /proc/kcore | wc -c; echo 1 > /proc/sys/kernel/domainname",
    ]);
    assert_eq!(r.stdout.trim(), "0", "{}", r.stderr);
    assert!(r.stderr.contains("Read-only"), "{}", r.stderr);
    assert_nothing_left(&d, &["r-echo", "r-codes", "r-stdin", "r-flags", "r-sec", "r-net", "r-nethost", "r-mask"]);
}

#[test]
fn docker_default_seccomp_profile() {
    let Some((d, _left)) = setup() else { return };
    // unshare(2) is outside the allow-list without CAP_SYS_ADMIN, even for a user namespace,
    // which needs no capability: seccomp refuses it with EPERM.
    let err = d.berthctl(&["run", "--rm", "busybox", "r-sc-unshare", "unshare", "-U", "true"]).err().to_string();
    assert!(err.contains("Operation not permitted"), "{err}");
    let r = d.berthctl(&["run", "--rm", "busybox", "r-sc-mount", "mount", "-t", "tmpfs", "none", "/mnt"]);
    let err = r.err().to_lowercase();
    assert!(err.contains("permission denied") || err.contains("not permitted"), "{err}");
    // What Docker allows still works: fork (clone without namespace flags passes the masked
    // rule), the PER_LINUX32 persona, chroot (CAP_SYS_CHROOT is a default capability), the
    // clock and CPU count.
    let r = d.berthctl(&[
        "run",
        "--rm",
        "busybox",
        "r-sc-ok",
        "sh",
        "-c",
        "echo ok; (echo forked) & wait; linux32 true && echo persona; chroot / true && echo chroot; \
         nproc >/dev/null && date +%Y >/dev/null && echo clock",
    ]);
    assert_eq!(r.ok(), "ok\nforked\npersona\nchroot\nclock\n", "{}", r.stderr);
    // A container starts with a clean signal state, as under runc: nothing blocked, nothing
    // ignored (the shim's blocked SIGCHLD and Rust's ignored SIGPIPE stay out).
    let r = d.berthctl(&["run", "--rm", "busybox", "r-sc-sig", "grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"]);
    assert_eq!(r.ok(), "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n", "{}", r.stderr);
    // Exec processes run under the same filter.
    d.berthctl(&["run", "-d", "busybox", "r-sc-exec", "sleep", "100"]).ok();
    let err = d.berthctl(&["task", "exec", "r-sc-exec", "unshare", "-U", "true"]).err().to_string();
    assert!(err.contains("Operation not permitted"), "{err}");
    assert_eq!(d.berthctl(&["task", "exec", "r-sc-exec", "echo", "exec ok"]).ok(), "exec ok\n");
    // Exactly one filter, in filter mode, for the init and for an exec process.
    let want = "Seccomp:\t2\nSeccomp_filters:\t1\n";
    let status = ["grep", "-E", "^Seccomp(_filters)?:", "/proc/self/status"];
    assert_eq!(d.berthctl(&[&["task", "exec", "r-sc-exec"][..], &status[..]].concat()).ok(), want);
    assert_eq!(d.berthctl(&[&["run", "--rm", "busybox", "r-sc-init"][..], &status[..]].concat()).ok(), want);
    d.berthctl(&["task", "rm", "-f", "r-sc-exec"]).ok();
    d.berthctl(&["container", "rm", "r-sc-exec"]).ok();
    // The profile was compiled once and kept as a program: one entry for all these runs.
    let cached: Vec<_> = std::fs::read_dir(d.state.join("seccomp-cache"))
        .expect("seccomp cache")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".bpf"))
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert_nothing_left(&d, &["r-sc-unshare", "r-sc-mount", "r-sc-ok", "r-sc-sig", "r-sc-exec", "r-sc-init"]);
}

/// Removes a container's rootfs snapshot; the collection that the container's removal
/// schedules may have taken it already, which is fine.
fn remove_snapshot(d: &Daemon, key: &str) {
    let r = d.berthctl(&["snapshots", "rm", key]);
    assert!(r.status.success() || r.stderr.contains("not found"), "{}", r.stderr);
}

#[test]
fn bad_input_fails_clearly() {
    let Some((d, _left)) = setup() else { return };
    let err = d.berthctl(&["run", "--rm", "nosuch:image", "r-x", "true"]).err().to_string();
    assert!(err.contains("not found"), "{err}");
    let err = d.berthctl(&["run", "--rm", "busybox", "r-nobin", "/no/such/binary"]).err().to_string();
    assert!(err.contains("not found"), "{err}");
    d.berthctl(&["run", "-d", "busybox", "r-dup", "sleep", "100"]).ok();
    let err = d.berthctl(&["run", "-d", "busybox", "r-dup", "true"]).err().to_string();
    assert!(err.contains("already exists"), "{err}");
    // A container with a task is not deleted from under it.
    let err = d.berthctl(&["container", "rm", "r-dup"]).err().to_string();
    assert!(err.contains("has a task"), "{err}");
    assert!(d.berthctl(&["task", "ls"]).ok().contains("r-dup"));
    d.berthctl(&["task", "rm", "-f", "r-dup"]).ok();
    d.berthctl(&["container", "rm", "r-dup"]).ok();
    remove_snapshot(&d, "r-dup");
    assert_nothing_left(&d, &["r-nobin", "r-dup"]);
}

#[test]
fn detached_task_exec_pause_kill_and_limits() {
    let Some((d, _left)) = setup() else { return };
    d.berthctl(&["run", "-d", "busybox", "r-bg", "sleep", "1000"]).ok();
    assert!(d.berthctl(&["task", "ls"]).ok().contains("RUNNING"));
    let r = d.berthctl(&["task", "exec", "r-bg", "sh", "-c", "echo in; echo e >&2; exit 3"]);
    assert_eq!((r.status.code(), r.stdout.as_str(), r.stderr.as_str()), (Some(3), "in\n", "e\n"));
    let err = d.berthctl(&["task", "exec", "r-bg", "/missing"]).err().to_string();
    assert!(err.contains("not found"), "{err}");
    wait_for("only the init in the cgroup", || d.berthctl(&["task", "ps", "r-bg"]).ok().lines().count() == 2);
    d.berthctl(&["task", "pause", "r-bg"]).ok();
    assert!(d.berthctl(&["task", "ls"]).ok().contains("PAUSED"));
    d.berthctl(&["task", "resume", "r-bg"]).ok();
    assert!(d.berthctl(&["task", "ls"]).ok().contains("RUNNING"));
    let metrics = d.berthctl(&["task", "metrics", "r-bg"]).ok().to_string();
    assert!(metrics.contains("r-bg") && metrics.contains("memory"), "{metrics}");
    d.berthctl(&["task", "kill", "-s", "KILL", "r-bg"]).ok();
    wait_for("r-bg to stop", || d.berthctl(&["task", "ls"]).ok().contains("STOPPED"));
    let err = d.berthctl(&["task", "exec", "r-bg", "true"]).err().to_string();
    assert!(err.contains("stopped"), "{err}");
    assert!(d.berthctl(&["task", "rm", "r-bg"]).ok().contains("r-bg 137"));
    d.berthctl(&["container", "rm", "r-bg"]).ok();
    remove_snapshot(&d, "r-bg");

    // Memory limit: the hog is OOM-killed and /tasks/oom is published.
    let mut events = Command::new(bin("berthctl"))
        .arg("--address")
        .arg(&d.socket)
        .args(["events", "topic==/tasks/oom"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let r = d.berthctl(&["run", "--rm", "--memory-limit", "16m", "busybox", "r-oom", "tail", "/dev/zero"]);
    assert_eq!(r.status.code(), Some(137), "{}", r.stderr);
    std::thread::sleep(Duration::from_millis(300));
    events.kill().unwrap();
    let seen = String::from_utf8_lossy(&events.wait_with_output().unwrap().stdout).to_string();
    assert!(seen.contains("/tasks/oom"), "OOM event: {seen:?}");

    // Pids limit: forks beyond it fail.
    let r = d.berthctl(&[
        "run",
        "--rm",
        "--pids-limit",
        "4",
        "busybox",
        "r-pids",
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6; do sleep 2 & done 2>/dev/null; wait; echo forks-failed-ok",
    ]);
    assert!(r.stderr.contains("fork") || r.status.code() != Some(0), "{} {}", r.stdout, r.stderr);
    assert_nothing_left(&d, &["r-bg", "r-oom", "r-pids"]);
}

#[test]
fn hundred_containers_at_once() {
    let Some((d, _left)) = setup() else { return };
    let start = Instant::now();
    let handles: Vec<_> = (0..100)
        .map(|i| {
            let mut cmd = Command::new(bin("berthctl"));
            cmd.arg("--address").arg(&d.socket).args([
                "run",
                "--rm",
                "busybox",
                &format!("r-many-{i}"),
                "echo",
                &i.to_string(),
            ]);
            std::thread::spawn(move || run(&mut cmd))
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let r = h.join().unwrap();
        assert_eq!(r.ok().trim(), i.to_string());
    }
    eprintln!("100 concurrent berthctl run --rm: {:?}", start.elapsed());
    let ids: Vec<String> = (0..100).map(|i| format!("r-many-{i}")).collect();
    assert_nothing_left(&d, &ids.iter().map(String::as_str).collect::<Vec<_>>());
}

/// Runs `cmd` under `script` (a real pty) with a 100x30 terminal; None when script is missing.
fn in_pty(cmd: &str) -> Option<Run> {
    if berth_integration::find_on_path("script").is_none() {
        eprintln!("SKIPPED: script (util-linux) is not installed");
        return None;
    }
    let full = format!("stty cols 100 rows 30; {cmd}");
    Some(run(Command::new("script").args(["-qec", &full, "/dev/null"])))
}

#[test]
fn terminals_for_run_and_exec_with_berthctl_and_ctr() {
    let Some((d, _left)) = setup() else { return };
    let ctl = format!("{} --address {}", bin("berthctl").display(), d.socket.display());
    let Some(r) = in_pty(&format!("{ctl} run -t --rm busybox r-tty sh -c 'tty; stty size; exit 6'")) else { return };
    assert_eq!(r.status.code(), Some(6), "{}", r.stdout);
    assert!(r.stdout.contains("/dev/pts/0") && r.stdout.contains("30 100"), "{}", r.stdout);

    d.berthctl(&["run", "-d", "busybox", "r-ttybg", "sleep", "100"]).ok();
    let r = in_pty(&format!("{ctl} task exec -t r-ttybg sh -c 'tty; exit 7'")).unwrap();
    assert_eq!(r.status.code(), Some(7), "{}", r.stdout);
    assert!(r.stdout.contains("/dev/pts/"), "{}", r.stdout);
    if let Some(ctr) = berth_integration::external_tool("ctr") {
        let ctr = format!("{} --address {}", ctr.display(), d.socket.display());
        let r = in_pty(&format!("{ctr} task exec -t --exec-id t1 r-ttybg sh -c 'tty; exit 8'")).unwrap();
        assert_eq!(r.status.code(), Some(8), "{}", r.stdout);
        let r = in_pty(&format!("{ctr} run -t --rm docker.io/library/busybox:latest r-ctrtty sh -c 'tty; exit 9'"))
            .unwrap();
        assert_eq!(r.status.code(), Some(9), "{}", r.stdout);
        assert!(r.stdout.contains("/dev/pts/0"), "{}", r.stdout);
    }
    d.berthctl(&["task", "rm", "-f", "r-ttybg"]).ok();
    d.berthctl(&["container", "rm", "r-ttybg"]).ok();
    remove_snapshot(&d, "r-ttybg");
    assert_nothing_left(&d, &["r-tty", "r-ttybg", "r-ctrtty"]);
}

/// Keys of the snapshots berthctl lists.
fn snapshot_keys(d: &Daemon) -> Vec<String> {
    let out = d.berthctl(&["snapshots", "ls"]).ok().to_string();
    out.lines().skip(1).filter_map(|l| l.split_whitespace().next()).map(String::from).collect()
}

/// The snapshots remapped to host ids 100000:100000.
fn remapped(d: &Daemon) -> Vec<String> {
    snapshot_keys(d).into_iter().filter(|k| k.ends_with("-100000-100000")).collect()
}

/// The `Uid:` line of a process's status on the host.
fn host_uids(pid: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find(|l| l.starts_with("Uid:")).unwrap().split_whitespace().skip(1).collect::<Vec<_>>().join(" ")
}

/// Collapses runs of blanks, as /proc/self/uid_map pads its columns.
fn squeeze(s: &str) -> String {
    s.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect::<Vec<_>>().join("\n")
}

#[test]
fn user_namespace_with_uidmap_and_a_remapped_rootfs() {
    let Some((d, _left)) = setup() else { return };
    let before = snapshot_keys(&d);
    let r = d.berthctl(&[
        "run",
        "--rm",
        "--uidmap",
        "0:100000:65536",
        "busybox",
        "r-ux",
        "sh",
        "-c",
        "id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map; stat -c %u:%g / /bin /bin/busybox",
    ]);
    assert_eq!(squeeze(r.ok()), "0\n0\n0 100000 65536\n0 100000 65536\n0:0\n0:0\n0:0", "{}", r.stderr);

    // Root inside is uid 100000 outside; the remapped parent is made (or kept) once.
    d.berthctl(&["run", "-d", "--uidmap", "0:100000:65536", "busybox", "r-ux-bg", "sleep", "1000"]).ok();
    let parents = remapped(&d);
    assert_eq!(parents.len(), 1, "{:?}", snapshot_keys(&d));
    let info = d.berthctl(&["snapshots", "info", &parents[0]]).ok().to_string();
    assert!(info.contains("\"committed\"") || info.to_lowercase().contains("committed"), "{info}");
    let ls = d.berthctl(&["task", "ls"]).ok().to_string();
    let pid = ls.lines().find(|l| l.starts_with("r-ux-bg ")).and_then(|l| l.split_whitespace().nth(1)).unwrap();
    assert_eq!(host_uids(pid), "100000 100000 100000 100000");
    let count = snapshot_keys(&d).len();
    assert_eq!(count, before.len() + 2, "the container's snapshot and the remapped parent");

    // A second run reuses the remapped parent: same snapshot, same creation time.
    let r = d.berthctl(&["run", "--rm", "--uidmap", "0:100000:65536", "busybox", "r-ux2", "stat", "-c", "%u", "/etc"]);
    assert_eq!(r.ok(), "0\n");
    assert_eq!(snapshot_keys(&d).len(), count);
    assert_eq!(d.berthctl(&["snapshots", "info", &parents[0]]).ok(), info, "not remade");

    // A bad mapping is refused before anything is made; --gidmap alone too.
    let err = d.berthctl(&["run", "--rm", "--uidmap", "0:100000", "busybox", "r-ux3", "true"]).err().to_string();
    assert!(err.contains("expected CONTAINER:HOST:SIZE"), "{err}");
    let err = d.berthctl(&["run", "--rm", "--gidmap", "0:1:1", "busybox", "r-ux3", "true"]).err().to_string();
    assert!(err.contains("--gidmap needs --uidmap"), "{err}");
    // Host network with a user namespace: /sys is the host's, bound.
    let host = d
        .berthctl(&[
            "run",
            "--rm",
            "--net-host",
            "--uidmap",
            "0:100000:65536",
            "busybox",
            "r-ux-net",
            "ls",
            "/sys/class/net",
        ])
        .ok()
        .to_string();
    assert!(host.lines().count() > 1, "{host}");

    d.berthctl(&["task", "rm", "-f", "r-ux-bg"]).ok();
    d.berthctl(&["container", "rm", "r-ux-bg"]).ok();
    remove_snapshot(&d, "r-ux-bg");
    // Nothing uses the remapped parent any more: the collector takes it.
    d.berthctl(&["gc"]).ok();
    assert_eq!(snapshot_keys(&d), before);
    assert_nothing_left(&d, &["r-ux", "r-ux-bg", "r-ux2", "r-ux-net"]);
}

/// Where the cgroup v2 hierarchy is visible from the test (outside berthd's namespace).
fn cgroup2_root() -> PathBuf {
    let unified = Path::new("/sys/fs/cgroup/unified");
    if unified.join("cgroup.procs").is_file() {
        unified.to_path_buf()
    } else {
        PathBuf::from("/sys/fs/cgroup")
    }
}

/// berthd and its shims on the cgroup v2 hierarchy alone (a private mount namespace whose
/// /sys/fs/cgroup is cgroup2; on a pure v2 host, that host): containers are placed in v2,
/// pause freezes through cgroup.freeze, metrics come in the v2 message, kill --all reaches the
/// cgroup, and delete leaves no cgroup behind. On this hybrid VM the v2 hierarchy has no
/// memory, pids or cpu controllers, so limits and OOM are not part of this test.
#[test]
fn pure_cgroup_v2_run_pause_metrics_kill() {
    let Some((d, _left)) = setup_with(DaemonOptions { cgroup2_only: true, ..Default::default() }) else { return };
    let n = std::process::id();
    let (rm_id, bg) = (format!("v2rm{n}"), format!("v2bg{n}"));
    let out = d.berthctl(&["run", "--rm", "busybox", &rm_id, "cat", "/proc/self/cgroup"]).ok().to_string();
    assert!(out.lines().any(|l| l == format!("0::/berth/default/{rm_id}")), "{out}");
    d.berthctl(&["run", "-d", "busybox", &bg, "sleep", "100"]).ok();
    let dir = cgroup2_root().join("berth/default").join(&bg);
    assert!(dir.join("cgroup.procs").is_file(), "{} missing", dir.display());
    d.berthctl(&["task", "pause", &bg]).ok();
    assert_eq!(fs::read_to_string(dir.join("cgroup.freeze")).unwrap().trim(), "1");
    assert!(d.berthctl(&["task", "ls"]).ok().contains("PAUSED"));
    d.berthctl(&["task", "resume", &bg]).ok();
    assert_eq!(fs::read_to_string(dir.join("cgroup.freeze")).unwrap().trim(), "0");
    let metrics = d.berthctl(&["task", "metrics", &bg]).ok().to_string();
    assert!(metrics.contains("cpu.stat.usage_usec"), "{metrics}");
    d.berthctl(&["task", "kill", "--all", "-s", "SIGKILL", &bg]).ok();
    wait_for("the task to stop", || d.berthctl(&["task", "ls"]).ok().contains("STOPPED"));
    d.berthctl(&["task", "rm", &bg]).ok();
    d.berthctl(&["container", "rm", &bg]).ok();
    assert!(!dir.exists(), "cgroup left: {}", dir.display());
    assert!(!cgroup2_root().join("berth/default").join(&rm_id).exists());
    assert!(bundles(&d.state).is_empty(), "bundles left: {:?}", bundles(&d.state));
}
