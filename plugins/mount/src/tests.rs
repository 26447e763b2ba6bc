//! Real mounts; they need root and are skipped loudly without it.

use std::fs;
use std::path::Path;

use super::*;

fn is_root() -> bool {
    // SAFETY: no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("SKIPPED: mount tests need root");
    }
    root
}

/// Whether `path` is a mount point, from /proc/self/mountinfo.
pub(crate) fn is_mounted(path: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = path.to_string_lossy().replace(' ', "\\040");
    info.lines().any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

fn dirs(base: &Path, names: &[&str]) {
    for n in names {
        fs::create_dir_all(base.join(n)).unwrap();
    }
}

#[test]
fn bind_rw_and_ro() {
    if !is_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    dirs(t.path(), &["src", "rw", "ro"]);
    fs::write(t.path().join("src/a"), "a").unwrap();
    let rw = MountGuard::mount(
        &[Mount::new("bind", t.path().join("src").to_str().unwrap(), ["rbind", "rw"])],
        &t.path().join("rw"),
    )
    .unwrap();
    assert!(is_mounted(&t.path().join("rw")));
    fs::write(t.path().join("rw/b"), "b").unwrap();
    assert_eq!(fs::read_to_string(t.path().join("src/b")).unwrap(), "b");
    rw.unmount().unwrap();
    assert!(!is_mounted(&t.path().join("rw")));

    let ro = Mount::new("bind", t.path().join("src").to_str().unwrap(), ["ro", "rbind"]);
    let guard = MountGuard::mount(&[ro], &t.path().join("ro")).unwrap();
    assert_eq!(fs::read_to_string(t.path().join("ro/a")).unwrap(), "a");
    let err = fs::write(t.path().join("ro/c"), "c").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    drop(guard);
    assert!(!is_mounted(&t.path().join("ro")));
}

#[test]
fn overlay_upper_receives_writes() {
    if !is_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    dirs(t.path(), &["lower", "upper", "work", "merged"]);
    fs::write(t.path().join("lower/a"), "lower").unwrap();
    let p = |n: &str| t.path().join(n).display().to_string();
    let m = Mount::new(
        "overlay",
        "overlay",
        [format!("workdir={}", p("work")), format!("upperdir={}", p("upper")), format!("lowerdir={}", p("lower"))],
    );
    let g = MountGuard::mount(&[m], &t.path().join("merged")).unwrap();
    assert_eq!(fs::read_to_string(t.path().join("merged/a")).unwrap(), "lower");
    fs::write(t.path().join("merged/b"), "new").unwrap();
    fs::remove_file(t.path().join("merged/a")).unwrap();
    drop(g);
    assert_eq!(fs::read_to_string(t.path().join("upper/b")).unwrap(), "new");
    assert!(t.path().join("lower/a").exists(), "lower untouched");
    let wh = fs::symlink_metadata(t.path().join("upper/a")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(&wh.file_type()), "whiteout in upper");
}

/// 128 lower layers under a long common prefix (like `/var/lib/berth/snapshots/overlayfs/
/// snapshots/<id>/fs`): the option string exceeds a page, its compacted form does not.
fn many_layers(base: &Path) -> (Mount, Vec<PathBuf>) {
    let mut lowers = Vec::new();
    let prefix = base.join("a-rather-long-directory-name-like-a-daemon-root/snapshots/overlayfs/snapshots");
    for i in 0..128 {
        let d = prefix.join(format!("{i}/fs"));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(format!("f{i}")), i.to_string()).unwrap();
        fs::write(d.join("top"), i.to_string()).unwrap();
        lowers.push(d);
    }
    let joined: Vec<String> = lowers.iter().map(|d| d.display().to_string()).collect();
    let m = Mount::new("overlay", "overlay", [format!("lowerdir={}", joined.join(":"))]);
    assert!(parse_options(&m.options).data.len() > overlay::page_size(), "options must exceed a page");
    (m, lowers)
}

fn check_merged(merged: &Path) {
    for i in 0..128 {
        assert_eq!(fs::read_to_string(merged.join(format!("f{i}"))).unwrap(), i.to_string());
    }
    assert_eq!(fs::read_to_string(merged.join("top")).unwrap(), "0", "first lowerdir wins");
}

#[test]
fn overlay_with_128_lower_layers() {
    if !is_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (m, _) = many_layers(t.path());
    let merged = t.path().join("merged");
    fs::create_dir(&merged).unwrap();
    let g = MountGuard::mount(std::slice::from_ref(&m), &merged).unwrap();
    check_merged(&merged);
    drop(g);
    assert!(!is_mounted(&merged));

    // The path taken on kernels with overlay's lowerdir+ (6.8 and later), called directly.
    match overlay::mount_fsconfig(&parse_options(&m.options), &merged) {
        Ok(()) => {
            check_merged(&merged);
            unmount(&merged, 0).unwrap();
        }
        Err(e) => eprintln!("SKIPPED: fsconfig lowerdir+ unsupported by this kernel: {e}"),
    }
}

#[test]
fn overlay_compaction_fallback_in_child() {
    if !is_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (m, _) = many_layers(t.path());
    let merged = t.path().join("merged");
    fs::create_dir(&merged).unwrap();
    overlay::mount_compacted(&m, &parse_options(&m.options), &merged).unwrap();
    check_merged(&merged);
    unmount(&merged, 0).unwrap();
    assert!(!is_mounted(&merged));
}

#[test]
fn guard_unmounts_on_panic_and_failed_mount_all_undoes() {
    if !is_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    dirs(t.path(), &["src/sub", "dst"]);
    let dst = t.path().join("dst");
    let bind = Mount::new("bind", t.path().join("src").to_str().unwrap(), ["rbind"]);
    let r = std::panic::catch_unwind(|| {
        let _g = MountGuard::mount(std::slice::from_ref(&bind), &dst).unwrap();
        assert!(is_mounted(&dst));
        panic!("test panic");
    });
    assert!(r.is_err());
    assert!(!is_mounted(&dst), "guard unmounted during unwinding");

    let mut bad = Mount::new("bind", t.path().join("missing").to_str().unwrap(), ["rbind"]);
    bad.target = "sub".into();
    let err = mount_all(&[bind, bad], &dst).unwrap_err();
    assert_eq!(err.kind(), berth_core::ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("missing"), "{err}");
    assert!(!is_mounted(&dst), "first mount undone");
    assert!(unmount(&dst, 0).is_err(), "unmounting a non-mount fails");
    unmount_all(&dst, 0).unwrap();
}
