//! Snapshots end to end: Debian's `ctr snapshots` and `berthctl snapshots` against a real
//! berthd, mounting what they print for real, removal rules, whiteouts in a mounted overlay,
//! and garbage collection of snapshots once their lease is gone. Mounting needs root; every
//! mount is undone by a guard, also when a test fails.

use std::ffi::CString;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use berth_integration::{bin, run, Daemon, Run};

fn is_root() -> bool {
    // SAFETY: no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("SKIPPED: snapshot mount tests need root");
    }
    root
}

/// A mount made by running a printed `mount` command; detached on drop.
struct Mounted(PathBuf);

impl Mounted {
    /// Runs each `mount ...` line of `out` (what `snapshots mounts` prints) with sh.
    fn run(out: &str, target: &Path) -> Mounted {
        fs::create_dir_all(target).unwrap();
        let guard = Mounted(target.to_path_buf());
        let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("mount ")).collect();
        assert!(!lines.is_empty(), "no mount command in {out:?}");
        for line in lines {
            assert!(line.contains(&target.display().to_string()), "{line}");
            run(Command::new("sh").arg("-c").arg(line)).ok();
        }
        guard
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let c = CString::new(self.0.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid path; detaching our own test mount.
        while unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {}
    }
}

fn ctr_ok(d: &Daemon, args: &[&str]) -> Option<String> {
    d.ctr(args).map(|r| r.ok().to_string())
}

#[test]
fn ctr_snapshots_lifecycle_with_real_mounts() {
    if !is_root() {
        return;
    }
    let d = Daemon::start();
    let sn = ["snapshots", "--snapshotter", "overlayfs"];
    let ctr = |args: &[&str]| -> Option<Run> { d.ctr(&[&sn[..], args].concat()) };
    let Some(_) = ctr_ok(&d, &[&sn[..], &["prepare", "base-key"]].concat()) else { return };
    let mnt = d.dir().join("mnt");
    let target = mnt.display().to_string();

    let out = ctr(&["mounts", &target, "base-key"]).unwrap().ok().to_string();
    assert!(out.starts_with("mount -t bind "), "{out}");
    {
        let _m = Mounted::run(&out, &mnt);
        fs::write(mnt.join("hello"), "from base").unwrap();
        fs::write(mnt.join("doomed"), "x").unwrap();
    }
    ctr(&["commit", "base", "base-key"]).unwrap().ok();

    ctr(&["prepare", "child-key", "base"]).unwrap().ok();
    let out = ctr(&["mounts", &target, "child-key"]).unwrap().ok().to_string();
    assert!(out.starts_with("mount -t overlay overlay "), "{out}");
    {
        let _m = Mounted::run(&out, &mnt);
        assert_eq!(fs::read_to_string(mnt.join("hello")).unwrap(), "from base");
        fs::write(mnt.join("child"), "from child").unwrap();
        fs::remove_file(mnt.join("doomed")).unwrap();
    }
    ctr(&["commit", "top", "child-key"]).unwrap().ok();

    ctr(&["view", "v", "top"]).unwrap().ok();
    let out = ctr(&["mounts", &target, "v"]).unwrap().ok().to_string();
    {
        let _m = Mounted::run(&out, &mnt);
        assert_eq!(fs::read_to_string(mnt.join("child")).unwrap(), "from child");
        assert!(!mnt.join("doomed").exists(), "whiteout hides the base's file");
        assert!(fs::write(mnt.join("new"), "x").is_err(), "views are read-only");
    }

    let ls = ctr(&["ls"]).unwrap().ok().to_string();
    for (key, parent, kind) in [("base", "", "Committed"), ("top", "base", "Committed"), ("v", "top", "View")] {
        assert!(
            ls.lines().any(|l| l.split_whitespace().collect::<Vec<_>>()
                == [key, parent, kind].iter().filter(|s| !s.is_empty()).copied().collect::<Vec<_>>()),
            "{key} {parent} {kind} not in:\n{ls}"
        );
    }
    let info = ctr(&["info", "top"]).unwrap().ok().to_string();
    assert!(info.contains("\"Parent\": \"base\"") && info.contains("\"Kind\": \"Committed\""), "{info}");
    let tree = ctr(&["tree"]).unwrap().ok().to_string();
    assert!(tree.contains("base") && tree.contains("\\_ top"), "{tree}");
    let usage = ctr(&["usage", "top"]).unwrap().ok().to_string();
    assert!(usage.lines().any(|l| l.starts_with("top")), "{usage}");

    let err = ctr(&["rm", "base"]).unwrap().err().to_string();
    assert!(err.contains("failed precondition"), "parent with children: {err}");
    ctr(&["rm", "v"]).unwrap().ok();
    ctr(&["rm", "top"]).unwrap().ok();
    ctr(&["rm", "base"]).unwrap().ok();
    assert_eq!(ctr(&["ls"]).unwrap().ok().lines().count(), 1, "only the header is left");
    let left = fs::read_dir(d.root.join("snapshots/overlayfs/snapshots")).unwrap().count();
    assert_eq!(left, 0, "snapshot directories removed");
}

#[test]
fn whiteout_hides_lower_file_in_mounted_overlay() {
    if !is_root() {
        return;
    }
    let d = Daemon::start();
    let mnt = d.dir().join("mnt");
    let target = mnt.display().to_string();
    let out = d.berthctl(&["snapshots", "prepare", "--target", &target, "k1"]).ok().to_string();
    {
        let _m = Mounted::run(&out, &mnt);
        fs::write(mnt.join("a"), "a").unwrap();
        fs::write(mnt.join("b"), "b").unwrap();
    }
    d.berthctl(&["snapshots", "commit", "l1", "k1"]).ok();
    let out = d.berthctl(&["snapshots", "prepare", "--target", &target, "k2", "l1"]).ok().to_string();
    {
        let _m = Mounted::run(&out, &mnt);
        fs::remove_file(mnt.join("a")).unwrap();
    }
    d.berthctl(&["snapshots", "commit", "l2", "k2"]).ok();
    d.berthctl(&["snapshots", "prepare", "c", "l2"]).ok();
    let out = d.berthctl(&["snapshots", "mounts", &target, "c"]).ok().to_string();
    let _m = Mounted::run(&out, &mnt);
    assert!(!mnt.join("a").exists(), "the whiteout in l2 hides l1's file");
    assert_eq!(fs::read_to_string(mnt.join("b")).unwrap(), "b");
    let tree = d.berthctl(&["snapshots", "tree"]).ok().to_string();
    assert_eq!(tree, "l1\n  \\_ l2\n    \\_ c\n");
}

#[test]
fn berthctl_snapshots_errors_labels_and_native() {
    let d = Daemon::start();
    let sn = |args: &[&str]| d.berthctl(&[&["snapshots", "--snapshotter", "native"][..], args].concat());
    sn(&["prepare", "k", "--label", "x=1"]).ok();
    sn(&["commit", "c", "k", "--label", "containerd.io/snapshot.ref=sha256:abc"]).ok();
    let err = sn(&["prepare", "c"]).err().to_string();
    assert!(err.contains("already exists") && err.lines().count() == 1, "{err}");
    let err = sn(&["prepare", "x", "missing"]).err().to_string();
    assert!(err.contains("not found"), "{err}");
    let err = sn(&["commit", "c2", "c"]).err().to_string();
    assert!(err.contains("failed precondition"), "{err}");
    let info = sn(&["info", "c"]).ok().to_string();
    assert!(info.contains("\"containerd.io/snapshot.ref\": \"sha256:abc\""), "{info}");
    let found = sn(&["ls", r#"labels."containerd.io/snapshot.ref"==sha256:abc"#]).ok().to_string();
    assert!(found.lines().nth(1).is_some_and(|l| l.starts_with("c ")), "{found}");
    let usage = sn(&["usage"]).ok().to_string();
    assert!(usage.starts_with("KEY") && usage.contains("\nc "), "{usage}");
    let err = d.berthctl(&["snapshots", "--snapshotter", "nope", "ls"]).err().to_string();
    assert!(err.contains("snapshotter not loaded: nope"), "{err}");
    assert!(d.berthctl(&["snapshots", "ls"]).ok().lines().count() == 1, "overlayfs has none");
    let plugins = d.berthctl(&["plugins", "ls"]).ok().to_string();
    assert!(plugins.contains("io.berth.snapshotter.v1"), "{plugins}");
}

#[test]
fn gc_removes_snapshots_once_their_lease_is_gone() {
    let d = Daemon::start();
    d.berthctl(&["leases", "create", "--id", "hold"]).ok();
    d.berthctl(&["snapshots", "prepare", "--lease", "hold", "held"]).ok();
    d.berthctl(&["snapshots", "commit", "--lease", "hold", "layer", "held"]).ok();
    d.berthctl(&["snapshots", "prepare", "--lease", "hold", "rootfs", "layer"]).ok();
    d.berthctl(&["snapshots", "prepare", "--label", "containerd.io/gc.root=x", "pinned"]).ok();
    d.berthctl(&["gc"]).ok();
    let ls = d.berthctl(&["snapshots", "ls"]).ok().to_string();
    assert_eq!(ls.lines().count(), 4, "all kept while leased or rooted:\n{ls}");

    d.berthctl(&["leases", "rm", "--sync", "hold"]).ok();
    let ls = d.berthctl(&["snapshots", "ls"]).ok().to_string();
    let keys: Vec<&str> = ls.lines().skip(1).filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(keys, ["pinned"], "{ls}");
    let dirs = fs::read_dir(d.root.join("snapshots/overlayfs/snapshots")).unwrap().count();
    assert_eq!(dirs, 1, "collected snapshot directories removed");
}

#[test]
fn snapshot_events_reach_subscribers() {
    let d = Daemon::start();
    let mut child = Command::new(bin("berthctl"))
        .arg("--address")
        .arg(&d.socket)
        .args(["events", "topic~=^/snapshot/"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn events");
    std::thread::sleep(Duration::from_millis(300)); // let the subscription start
    d.berthctl(&["snapshots", "prepare", "k"]).ok();
    d.berthctl(&["snapshots", "commit", "c", "k"]).ok();
    d.berthctl(&["snapshots", "rm", "c"]).ok();
    std::thread::sleep(Duration::from_millis(300));
    let _ = child.kill();
    let _ = child.wait();
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let topics: Vec<_> = out.lines().filter_map(|l| l.split_whitespace().nth(2)).collect();
    assert_eq!(topics, ["/snapshot/prepare", "/snapshot/commit", "/snapshot/remove"], "{out}");
    assert!(out.contains(r#"snapshotter: "overlayfs""#), "{out}");
}
