//! Tests of apply and diff on real directories (root is needed for owners, devices and
//! trusted xattrs; tests that need it say so and return when not root).

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_core::{Digest, ErrorKind};
use sha2::{Digest as _, Sha256};

use crate::testtar::{TestTar, E};
use crate::*;

fn is_root() -> bool {
    fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("SKIPPED: this test needs root (owners, devices, trusted xattrs)");
            return;
        }
    };
}

fn sha(bytes: &[u8]) -> Digest {
    Digest::sha256_from_bytes(&Sha256::digest(bytes).into())
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(bytes, 3).unwrap()
}

/// A temp dir holding `target/` (where layers go) and `outside/` (which must never change).
struct Sandbox {
    _tmp: tempfile::TempDir,
    target: PathBuf,
    outside: PathBuf,
}

impl Sandbox {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("target");
        let outside = tmp.path().join("outside");
        fs::create_dir(&target).unwrap();
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("victim"), b"untouched").unwrap();
        Sandbox { _tmp: tmp, target, outside }
    }

    fn apply(&self, layer: &[u8], mode: WhiteoutMode) -> berth_core::Result<ApplyOutcome> {
        apply(layer, &self.target, &ApplyOptions::new(mode))
    }

    /// `outside/` still holds only its victim, unchanged, and nothing appeared next to it.
    fn assert_outside_untouched(&self) {
        let names: Vec<_> = fs::read_dir(&self.outside).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("victim")], "outside/ changed");
        assert_eq!(fs::read(self.outside.join("victim")).unwrap(), b"untouched");
        let parent = self.target.parent().unwrap();
        let mut names: Vec<_> = fs::read_dir(parent).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, vec![std::ffi::OsString::from("outside"), std::ffi::OsString::from("target")]);
    }
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    rustix::fs::lgetxattr(path, name, &mut buf[..]).ok().map(|n| buf[..n].to_vec())
}

fn kind_of(m: &fs::Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_dir() {
        "dir"
    } else if t.is_symlink() {
        "symlink"
    } else if t.is_file() {
        "file"
    } else if t.is_char_device() {
        "char"
    } else if t.is_block_device() {
        "block"
    } else if t.is_fifo() {
        "fifo"
    } else {
        "other"
    }
}

/// Everything a layer carries about a tree, by path: type, mode, owner, mtime (seconds),
/// content or target, device, xattrs.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for path in entries {
            let m = fs::symlink_metadata(&path).unwrap();
            let kind = kind_of(&m);
            let body = match kind {
                "file" => format!("{}", sha(&fs::read(&path).unwrap())),
                "symlink" => fs::read_link(&path).unwrap().display().to_string(),
                "char" | "block" => format!("{}", m.rdev()),
                _ => String::new(),
            };
            let mut names = vec![0u8; 4096];
            let n = rustix::fs::llistxattr(&path, &mut names[..]).unwrap_or(0);
            let mut xattrs: Vec<String> = names[..n]
                .split(|&b| b == 0)
                .filter(|k| !k.is_empty())
                .map(|k| {
                    let k = String::from_utf8_lossy(k).to_string();
                    format!("{k}={:?}", xattr(&path, &k).unwrap_or_default())
                })
                .collect();
            xattrs.sort();
            let mtime = if kind == "symlink" { 0 } else { m.mtime() };
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            out.insert(
                rel,
                format!(
                    "{kind} {:o} {}:{} t={mtime} {body} [{}]",
                    m.mode() & 0o7777,
                    m.uid(),
                    m.gid(),
                    xattrs.join(",")
                ),
            );
            if kind == "dir" {
                walk(root, &path, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// A layer with one of everything.
fn full_layer() -> Vec<u8> {
    TestTar::new()
        .add(E::dir("etc/").mtime(1_500_000_000))
        .add(E::file("etc/hosts", b"127.0.0.1 localhost\n").owner(1000, 1001).mode(0o640))
        .add(E::dir("bin/"))
        .add(E::file("bin/su", b"#!/bin/true\n").mode(0o4755))
        .add(E::file("bin/wall", b"wall").mode(0o2755).owner(0, 5))
        .add(
            E::file("bin/ping", b"ping").mode(0o755).pax(
                "SCHILY.xattr.security.capability",
                &[1, 0, 0, 2, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
        )
        .add(E::hardlink("bin/ping6", "bin/ping"))
        .add(E::symlink("bin/sh", "/bin/busybox").owner(7, 8))
        .add(E::dir("tmp/").mode(0o1777))
        .add(E::dir("dev/"))
        .add(E { kind: b'3', dev: (1, 3), mode: 0o666, ..E::file("dev/null", b"") })
        .add(E { kind: b'4', dev: (7, 0), mode: 0o660, ..E::file("dev/loop0", b"") })
        .add(E { kind: b'6', mode: 0o600, ..E::file("dev/fifo", b"") })
        .add(E::file("x/y/z/deep", b"parents made on the way"))
        .add(E::file("etc/xattr", b"").pax("SCHILY.xattr.user.note", b"hello").pax("mtime", b"1600000001.25"))
        .add(E::file("etc/forged", b"").pax("SCHILY.xattr.trusted.overlay.opaque", b"y"))
        .finish()
}

#[test]
fn applies_every_kind_of_entry() {
    require_root!();
    let sb = Sandbox::new();
    let layer = full_layer();
    let out = sb.apply(&layer, WhiteoutMode::Delete).unwrap();
    assert_eq!(out.compression, Compression::None);
    assert_eq!(out.digest, sha(&layer));
    assert_eq!(out.diff_id, sha(&layer));
    assert_eq!(out.size, layer.len() as u64);
    assert_eq!(out.uncompressed_size, layer.len() as u64);
    assert_eq!(out.entries, 16);

    let t = &sb.target;
    let m = |p: &str| fs::symlink_metadata(t.join(p)).unwrap();
    assert_eq!(fs::read(t.join("etc/hosts")).unwrap(), b"127.0.0.1 localhost\n");
    assert_eq!((m("etc/hosts").uid(), m("etc/hosts").gid(), m("etc/hosts").mode() & 0o7777), (1000, 1001, 0o640));
    assert_eq!(m("bin/su").mode() & 0o7777, 0o4755);
    assert_eq!((m("bin/wall").mode() & 0o7777, m("bin/wall").gid()), (0o2755, 5));
    assert_eq!(m("tmp").mode() & 0o7777, 0o1777);
    assert_eq!(xattr(&t.join("bin/ping"), "security.capability").unwrap().len(), 20);
    assert_eq!(m("bin/ping").ino(), m("bin/ping6").ino());
    assert_eq!(fs::read_link(t.join("bin/sh")).unwrap(), Path::new("/bin/busybox"));
    assert_eq!((m("bin/sh").uid(), m("bin/sh").gid()), (7, 8));
    assert!(m("dev/null").file_type().is_char_device());
    assert_eq!(m("dev/null").rdev(), rustix::fs::makedev(1, 3));
    assert!(m("dev/loop0").file_type().is_block_device());
    assert!(m("dev/fifo").file_type().is_fifo());
    assert_eq!(fs::read(t.join("x/y/z/deep")).unwrap(), b"parents made on the way");
    assert_eq!(m("x/y").mode() & 0o777, 0o755);
    // Times: files at once, directories after their children.
    assert_eq!(m("etc/hosts").mtime(), 1_600_000_000);
    assert_eq!(m("etc").mtime(), 1_500_000_000);
    assert_eq!((m("etc/xattr").mtime(), m("etc/xattr").mtime_nsec()), (1_600_000_001, 250_000_000));
    assert_eq!(xattr(&t.join("etc/xattr"), "user.note").unwrap(), b"hello");
    assert_eq!(
        xattr(&t.join("etc/forged"), "trusted.overlay.opaque"),
        None,
        "overlay xattrs are not taken from layers"
    );
    syncfs(t).unwrap();
}

#[test]
fn gzip_and_zstd_give_the_same_tree_and_diff_id() {
    require_root!();
    let layer = full_layer();
    let plain = Sandbox::new();
    plain.apply(&layer, WhiteoutMode::Delete).unwrap();
    for (compressed, kind) in [(gzip(&layer), Compression::Gzip), (zstd(&layer), Compression::Zstd)] {
        let sb = Sandbox::new();
        let out = sb.apply(&compressed, WhiteoutMode::Delete).unwrap();
        assert_eq!(out.compression, kind);
        assert_eq!(out.digest, sha(&compressed));
        assert_eq!(out.size, compressed.len() as u64);
        assert_eq!(out.diff_id, sha(&layer));
        assert_eq!(out.uncompressed_size, layer.len() as u64);
        out.verify(Some(&sha(&compressed)), Some(&sha(&layer))).unwrap();
        assert_eq!(snapshot(&sb.target), snapshot(&plain.target));
    }
}

#[test]
fn digests_cover_trailing_data_and_mismatch_is_reported() {
    let sb = Sandbox::new();
    let mut layer = TestTar::new().add(E::file("a", b"a")).finish();
    layer.extend(std::iter::repeat_n(0u8, 8192)); // tar record padding
    let out = sb.apply(&layer, WhiteoutMode::Delete).unwrap();
    assert_eq!(out.diff_id, sha(&layer));
    let other = sha(b"something else");
    let err = out.verify(None, Some(&other)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(err.to_string().contains("diff_id"), "{err}");
    assert_eq!(out.verify(Some(&other), None).unwrap_err().kind(), ErrorKind::FailedPrecondition);
}

#[test]
fn media_type_must_be_a_layer() {
    let sb = Sandbox::new();
    let layer = TestTar::new().add(E::file("a", b"a")).finish();
    let opts = ApplyOptions {
        whiteouts: WhiteoutMode::Delete,
        media_type: Some("application/vnd.oci.image.config.v1+json".into()),
    };
    assert_eq!(apply(&layer[..], &sb.target, &opts).unwrap_err().kind(), ErrorKind::NotImplemented);
    // A declared compression that differs from the data: the data wins, as containerd.
    let opts = ApplyOptions { whiteouts: WhiteoutMode::Delete, media_type: Some(MEDIA_TYPE_LAYER_GZIP.into()) };
    apply(&layer[..], &sb.target, &opts).unwrap();
    assert!(sb.target.join("a").exists());
    let missing = sb.target.join("missing");
    assert_eq!(
        apply(&layer[..], &missing, &ApplyOptions::new(WhiteoutMode::Delete)).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn whiteouts_delete_in_delete_mode() {
    let sb = Sandbox::new();
    let t = &sb.target;
    fs::create_dir_all(t.join("a")).unwrap();
    fs::write(t.join("a/x"), b"x").unwrap();
    fs::write(t.join("a/y"), b"y").unwrap();
    fs::create_dir_all(t.join("b/c/d")).unwrap();
    fs::write(t.join("b/c/d/f"), b"f").unwrap();
    let layer = TestTar::new()
        .add(E::file(".wh.b", b""))
        .add(E::dir("a/"))
        .add(E::file("a/.wh.x", b""))
        .add(E::file(".wh.never-existed", b""))
        .add(E::file("gone/.wh.child", b""))
        .add(E::file(".wh..wh.plnk", b""))
        .finish();
    sb.apply(&layer, WhiteoutMode::Delete).unwrap();
    assert!(!t.join("b").exists());
    assert!(!t.join("a/x").exists());
    assert!(t.join("a/y").exists());
    assert!(!t.join("gone").exists(), "a whiteout under a missing directory creates nothing");
    assert!(!t.join(".wh..wh.plnk").exists());
}

#[test]
fn opaque_directories_in_delete_mode() {
    let sb = Sandbox::new();
    let t = &sb.target;
    fs::create_dir_all(t.join("d/sub")).unwrap();
    fs::write(t.join("d/old"), b"").unwrap();
    fs::write(t.join("d/sub/old2"), b"").unwrap();
    fs::write(t.join("keep"), b"").unwrap();
    // The marker after some of the directory's new entries: those stay.
    let layer = TestTar::new()
        .add(E::dir("d/"))
        .add(E::file("d/-early", b"e"))
        .add(E::dir("d/sub/"))
        .add(E::file("d/.wh..wh..opq", b""))
        .add(E::file("d/new", b"n"))
        .add(E::file("d/sub/new2", b"n2"))
        .finish();
    sb.apply(&layer, WhiteoutMode::Delete).unwrap();
    let mut names: Vec<_> = snapshot(t).into_keys().collect();
    names.sort();
    assert_eq!(names, ["d", "d/-early", "d/new", "d/sub", "d/sub/new2", "keep"]);
}

#[test]
fn whiteouts_become_overlay_whiteouts() {
    require_root!();
    let sb = Sandbox::new();
    let t = &sb.target;
    let layer = TestTar::new()
        .add(E::file(".wh.b", b""))
        .add(E::dir("a/").mode(0o750))
        .add(E::file("a/.wh.x", b""))
        .add(E::dir("d/"))
        .add(E::file("d/.wh..wh..opq", b""))
        .add(E::file("d/new", b"n"))
        .add(E::file("w/.wh.deep", b""))
        .finish();
    sb.apply(&layer, WhiteoutMode::Overlay).unwrap();
    for p in ["b", "a/x", "w/deep"] {
        let m = fs::symlink_metadata(t.join(p)).unwrap();
        assert!(m.file_type().is_char_device() && m.rdev() == 0, "{p} is not a whiteout");
    }
    assert_eq!(xattr(&t.join("d"), OVERLAY_OPAQUE_XATTR).unwrap(), b"y");
    assert_eq!(xattr(&t.join("a"), OVERLAY_OPAQUE_XATTR), None);
    assert_eq!(fs::symlink_metadata(t.join("a")).unwrap().mode() & 0o7777, 0o750);
}

fn mount_overlay(lower: &Path, upper: &Path, work: &Path, merged: &Path) -> bool {
    let opts = format!("lowerdir={},upperdir={},workdir={}", lower.display(), upper.display(), work.display());
    let ok =
        Command::new("mount").args(["-t", "overlay", "overlay", "-o", &opts]).arg(merged).status().map(|s| s.success());
    if !matches!(ok, Ok(true)) {
        eprintln!("SKIPPED: cannot mount overlayfs here");
        return false;
    }
    true
}

fn umount(path: &Path) {
    let _ = Command::new("umount").arg(path).status();
}

#[test]
fn overlay_upper_extracted_alone_mounts_as_the_applied_tree() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let [lower, upper, work, merged, expected] = ["lower", "upper", "work", "merged", "expected"].map(|d| {
        let p = tmp.path().join(d);
        fs::create_dir(&p).unwrap();
        p
    });
    let base = TestTar::new()
        .add(E::dir("etc/"))
        .add(E::file("etc/a", b"a"))
        .add(E::file("etc/b", b"b"))
        .add(E::dir("var/"))
        .add(E::dir("var/cache/"))
        .add(E::file("var/cache/junk", b"junk"))
        .add(E::file("var/keep", b"keep"))
        .finish();
    let top = TestTar::new()
        .add(E::dir("etc/"))
        .add(E::file("etc/.wh.a", b""))
        .add(E::file("etc/c", b"c"))
        .add(E::dir("var/"))
        .add(E::dir("var/cache/"))
        .add(E::file("var/cache/.wh..wh..opq", b""))
        .add(E::file("var/cache/fresh", b"fresh"))
        .finish();
    apply(&base[..], &lower, &ApplyOptions::new(WhiteoutMode::Overlay)).unwrap();
    apply(&top[..], &upper, &ApplyOptions::new(WhiteoutMode::Overlay)).unwrap();
    apply(&base[..], &expected, &ApplyOptions::new(WhiteoutMode::Delete)).unwrap();
    apply(&top[..], &expected, &ApplyOptions::new(WhiteoutMode::Delete)).unwrap();
    if !mount_overlay(&lower, &upper, &work, &merged) {
        return;
    }
    let seen = snapshot(&merged);
    umount(&merged);
    assert_eq!(seen, snapshot(&expected));
    assert!(
        seen.contains_key("var/cache/fresh") && !seen.contains_key("var/cache/junk") && !seen.contains_key("etc/a")
    );
}

#[test]
fn hostile_names_are_rejected_or_contained() {
    let sb = Sandbox::new();
    let outside = sb.outside.display().to_string();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("dotdot", TestTar::new().add(E::file("../../outside/x", b"x")).finish()),
        ("dotdot inside", TestTar::new().add(E::file("a/../../outside/x", b"x")).finish()),
        ("absolute symlink parent", TestTar::new().add(E::symlink("a", &outside)).add(E::file("a/x", b"x")).finish()),
        (
            "relative symlink parent",
            TestTar::new().add(E::symlink("a", "../../../../../../..")).add(E::file("a/x", b"x")).finish(),
        ),
        (
            "nested escaping symlink",
            TestTar::new()
                .add(E::dir("d/"))
                .add(E::symlink("d/up", ".."))
                .add(E::symlink("d/up2", "up/.."))
                .add(E::file("d/up2/outside/x", b"x"))
                .finish(),
        ),
        ("hardlink dotdot", TestTar::new().add(E::hardlink("l", "../outside/victim")).finish()),
        (
            "hardlink through symlink",
            TestTar::new().add(E::symlink("a", &outside)).add(E::hardlink("l", "a/victim")).finish(),
        ),
        ("hardlink to missing", TestTar::new().add(E::hardlink("l", "nothing")).finish()),
        ("hardlink to dir", TestTar::new().add(E::dir("d/")).add(E::hardlink("l", "d")).finish()),
        (
            "symlink loop",
            TestTar::new().add(E::symlink("a", "b")).add(E::symlink("b", "a")).add(E::file("a/x", b"x")).finish(),
        ),
        (
            "whiteout through symlink",
            TestTar::new().add(E::symlink("a", &outside)).add(E::file("a/.wh.victim", b"")).finish(),
        ),
        (
            "opaque through symlink",
            TestTar::new().add(E::symlink("a", &outside)).add(E::file("a/.wh..wh..opq", b"")).finish(),
        ),
        ("whiteout of dotdot", TestTar::new().add(E::file("a/.wh...", b"")).finish()),
        ("file as parent", TestTar::new().add(E::file("f", b"")).add(E::file("f/x", b"")).finish()),
    ];
    for mode in [WhiteoutMode::Delete, WhiteoutMode::Overlay] {
        for (what, layer) in &cases {
            if mode == WhiteoutMode::Overlay && (what.starts_with("whiteout") || what.starts_with("opaque")) {
                continue; // Overlay mode makes whiteouts, it never deletes: tested below.
            }
            fs::remove_dir_all(&sb.target).unwrap();
            fs::create_dir(&sb.target).unwrap();
            let err = sb.apply(layer, mode).expect_err(what);
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{what}: {err}");
            sb.assert_outside_untouched();
        }
    }
}

#[test]
fn overlay_whiteouts_do_not_go_through_symlinks() {
    let sb = Sandbox::new();
    let outside = sb.outside.display().to_string();
    for marker in ["a/.wh.victim", "a/.wh..wh..opq"] {
        fs::remove_dir_all(&sb.target).unwrap();
        fs::create_dir(&sb.target).unwrap();
        let layer = TestTar::new().add(E::symlink("a", &outside)).add(E::file(marker, b"")).finish();
        assert_eq!(sb.apply(&layer, WhiteoutMode::Overlay).unwrap_err().kind(), ErrorKind::InvalidArgument);
        sb.assert_outside_untouched();
        assert_eq!(xattr(&sb.outside, OVERLAY_OPAQUE_XATTR), None);
    }
}

#[test]
fn hostile_but_harmless_layers_are_contained() {
    let sb = Sandbox::new();
    let outside = sb.outside.display().to_string();
    let victim = format!("{outside}/victim");
    let layer = TestTar::new()
        // Absolute names are relative to the target.
        .add(E::file("/abs/path", b"inside"))
        // An entry replaces a symlink in its place; it never writes through it.
        .add(E::symlink("s", &victim))
        .add(E::file("s", b"replaced"))
        .add(E::symlink("d", &outside))
        .add(E::dir("d/"))
        .add(E::file("d/x", b"x"))
        // Symlinks themselves may point anywhere: they are data.
        .add(E::symlink("up", "../../../../etc/passwd"))
        // A hardlink to a symlink links the symlink.
        .add(E::symlink("v", &victim))
        .add(E::hardlink("vl", "v"))
        // A symlink that stays inside is followed, as Docker does (merged /usr).
        .add(E::dir("usr/"))
        .add(E::dir("usr/lib/"))
        .add(E::symlink("lib", "usr/lib"))
        .add(E::file("lib/libc.so", b"libc"))
        .add(E::symlink("usr/lib64", "../usr/./lib"))
        .add(E::file("usr/lib64/ld.so", b"ld"))
        .finish();
    sb.apply(&layer, WhiteoutMode::Delete).unwrap();
    let t = &sb.target;
    assert_eq!(fs::read(t.join("abs/path")).unwrap(), b"inside");
    assert_eq!(fs::read(t.join("s")).unwrap(), b"replaced");
    assert!(fs::symlink_metadata(t.join("d")).unwrap().is_dir());
    assert!(t.join("d/x").exists());
    assert!(fs::symlink_metadata(t.join("vl")).unwrap().file_type().is_symlink());
    assert_eq!(fs::read(t.join("usr/lib/libc.so")).unwrap(), b"libc");
    assert_eq!(fs::read(t.join("usr/lib/ld.so")).unwrap(), b"ld");
    sb.assert_outside_untouched();
}

#[test]
fn corrupt_and_truncated_layers_are_invalid() {
    let sb = Sandbox::new();
    let layer = TestTar::new().add(E::file("big", &[7u8; 100_000])).add(E::file("after", b"x")).finish();
    let gz = gzip(&layer);
    let mut corrupt = gz.clone();
    let mid = corrupt.len() / 2;
    for b in &mut corrupt[mid..mid + 16] {
        *b ^= 0x5a;
    }
    let mut bad_header = layer.clone();
    bad_header[0] ^= 1; // checksum mismatch
    let cases = [
        ("corrupt gzip", corrupt),
        ("truncated gzip", gz[..gz.len() / 2].to_vec()),
        ("truncated zstd", {
            let z = zstd(&layer);
            z[..z.len() - 8].to_vec()
        }),
        ("truncated tar data", layer[..20_000].to_vec()),
        ("truncated tar header", layer[..512 * 197 + 100].to_vec()),
        ("bad header checksum", bad_header),
        (
            "not a tar",
            b"this is not a tar archive at all, just some text that is long enough to fill a block?".repeat(10),
        ),
    ];
    for (what, data) in cases {
        let err = sb.apply(&data, WhiteoutMode::Delete).expect_err(what);
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{what}: {err}");
    }
    sb.assert_outside_untouched();
}

#[test]
fn failing_source_is_internal() {
    struct Failing(usize);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::other("disk on fire"));
            }
            let n = buf.len().min(self.0).min(512);
            buf[..n].fill(0);
            self.0 -= n;
            Ok(n)
        }
    }
    let sb = Sandbox::new();
    let err = apply(Failing(100), &sb.target, &ApplyOptions::new(WhiteoutMode::Delete)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Internal, "{err}");
}

#[test]
fn empty_stream_is_an_empty_layer() {
    let sb = Sandbox::new();
    let out = sb.apply(b"", WhiteoutMode::Delete).unwrap();
    assert_eq!((out.entries, out.size), (0, 0));
    assert_eq!(out.diff_id, sha(b""));
}

#[test]
fn reapplying_replaces_and_keeps_directories() {
    let sb = Sandbox::new();
    let layer = TestTar::new()
        .add(E::dir("a/"))
        .add(E::file("a/f", b"one"))
        .add(E::hardlink("a/g", "a/f"))
        .add(E::symlink("a/s", "f"))
        .finish();
    sb.apply(&layer, WhiteoutMode::Delete).unwrap();
    fs::write(sb.target.join("a/other"), b"stays").unwrap();
    sb.apply(&layer, WhiteoutMode::Delete).unwrap();
    assert_eq!(fs::read(sb.target.join("a/g")).unwrap(), b"one");
    assert!(sb.target.join("a/other").exists());
    // A file replaced by a directory and back.
    let to_dir = TestTar::new().add(E::dir("a/f/")).add(E::file("a/f/in", b"")).finish();
    sb.apply(&to_dir, WhiteoutMode::Delete).unwrap();
    assert!(sb.target.join("a/f/in").exists());
    let to_file = TestTar::new().add(E::file("a/f", b"file again")).finish();
    sb.apply(&to_file, WhiteoutMode::Delete).unwrap();
    assert_eq!(fs::read(sb.target.join("a/f")).unwrap(), b"file again");
}

#[test]
fn many_directories_exceed_the_cache() {
    let sb = Sandbox::new();
    let names: Vec<String> = (0..200).map(|i| format!("d{}/f{i}", i % 67)).collect();
    let mut tar = TestTar::new();
    for n in &names {
        tar = tar.add(E::file(n, n.as_bytes()));
    }
    sb.apply(&tar.finish(), WhiteoutMode::Delete).unwrap();
    for n in &names {
        assert_eq!(fs::read(sb.target.join(n)).unwrap(), n.as_bytes());
    }
}

#[test]
fn long_names_and_links_via_pax_and_gnu() {
    let sb = Sandbox::new();
    let long = format!("{}/{}", "d".repeat(120), "f".repeat(150));
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(4);
    h.set_mode(0o644);
    b.append_data(&mut h, &long, &b"long"[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "link", &long).unwrap();
    let layer = b.into_inner().unwrap();
    sb.apply(&layer, WhiteoutMode::Delete).unwrap();
    assert_eq!(fs::read(sb.target.join(&long)).unwrap(), b"long");
    assert_eq!(fs::read_link(sb.target.join("link")).unwrap(), Path::new(&long));
}

// ---- diff ----

/// Builds a lower and an upper tree with every kind of change.
fn two_trees(tmp: &Path) -> (PathBuf, PathBuf) {
    let lower = tmp.join("lower");
    let upper = tmp.join("upper");
    let base = TestTar::new()
        .add(E::dir("etc/"))
        .add(E::file("etc/same", b"same"))
        .add(E::file("etc/changed", b"old"))
        .add(E::file("etc/chmod", b"c"))
        .add(E::file("etc/deleted", b"d"))
        .add(E::dir("olddir/"))
        .add(E::file("olddir/f", b""))
        .add(E::file("becomes-dir", b""))
        .add(E::dir("becomes-file/"))
        .add(E::file("becomes-file/x", b""))
        .add(E::dir("deep/"))
        .add(E::dir("deep/er/").mode(0o700).owner(3, 4))
        .add(E::file("deep/er/f", b"f"))
        .finish();
    for d in [&lower, &upper] {
        fs::create_dir(d).unwrap();
        apply(&base[..], d, &ApplyOptions::new(WhiteoutMode::Delete)).unwrap();
    }
    let change = TestTar::new()
        .add(E::file("etc/changed", b"new!"))
        .add(E::file("etc/chmod", b"c").mode(0o600))
        .add(E::file(".wh.olddir", b""))
        .add(E::file("etc/.wh.deleted", b""))
        .add(E::dir("becomes-dir/"))
        .add(E::file("becomes-dir/in", b"in"))
        .add(E::file("becomes-file", b"now a file"))
        .add(E::file("deep/er/g", b"new file deep down"))
        .add(E::file("new", b"n").pax("SCHILY.xattr.user.k", b"v"))
        .add(E::hardlink("new-link", "new"))
        .add(E::symlink("sym", "etc/same"))
        .add(E { kind: b'6', ..E::file("fifo", b"") })
        .finish();
    apply(&change[..], &upper, &ApplyOptions::new(WhiteoutMode::Delete)).unwrap();
    (lower, upper)
}

fn copy_tree(from: &Path, to: &Path) {
    let ok = Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap();
    assert!(ok.success());
}

fn list_tar(layer: &[u8]) -> Vec<String> {
    let mut ar = tar::Archive::new(layer);
    ar.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let kind = e.header().entry_type();
            format!("{:?} {}", kind, String::from_utf8_lossy(&e.path_bytes()))
        })
        .collect()
}

#[test]
fn diff_of_two_trees_applies_back() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let (lower, upper) = two_trees(tmp.path());
    let mut blob = Vec::new();
    let out = diff(&lower, &upper, &mut blob, &DiffOptions { compression: Compression::None, source_date_epoch: None })
        .unwrap();
    assert_eq!(out.digest, sha(&blob));
    assert_eq!(out.diff_id, out.digest);
    let listing = list_tar(&blob);
    assert_eq!(
        listing,
        [
            "Directory becomes-dir/",
            "Regular becomes-dir/in",
            "Regular becomes-file",
            "Directory deep/",
            "Directory deep/er/",
            "Regular deep/er/g",
            "Directory etc/",
            "Regular etc/changed",
            "Regular etc/chmod",
            "Regular etc/.wh.deleted",
            "Fifo fifo",
            "Regular new",
            "Link new-link",
            "Regular .wh.olddir",
            "Symlink sym",
        ]
    );
    let restored = tmp.path().join("restored");
    copy_tree(&lower, &restored);
    apply(&blob[..], &restored, &ApplyOptions::new(WhiteoutMode::Delete)).unwrap();
    let (a, b) = (snapshot(&restored), snapshot(&upper));
    for (k, v) in &b {
        assert_eq!(a.get(k), Some(v), "{k}");
    }
    assert_eq!(a.len(), b.len(), "{:?}", a.keys().filter(|k| !b.contains_key(*k)).collect::<Vec<_>>());
    let m = fs::symlink_metadata(restored.join("new-link")).unwrap();
    assert_eq!(m.ino(), fs::symlink_metadata(restored.join("new")).unwrap().ino());
}

#[test]
fn diff_is_deterministic_and_gzip_by_default() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let (lower, upper) = two_trees(tmp.path());
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let out_a = diff(&lower, &upper, &mut a, &DiffOptions::default()).unwrap();
    let out_b = diff(&lower, &upper, &mut b, &DiffOptions::default()).unwrap();
    assert_eq!(a, b);
    assert_eq!(out_a, out_b);
    assert_eq!(out_a.compression, Compression::Gzip);
    assert_eq!(Compression::detect(&a[..4]).unwrap(), Compression::Gzip);
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&a[..]).read_to_end(&mut plain).unwrap();
    assert_eq!(out_a.diff_id, sha(&plain));
    assert_eq!(out_a.uncompressed_size, plain.len() as u64);
    // And the applier agrees on both digests.
    let sb = Sandbox::new();
    let applied = sb.apply(&a, WhiteoutMode::Overlay).unwrap();
    assert_eq!((applied.digest, applied.diff_id), (out_a.digest.clone(), out_a.diff_id.clone()));
    // zstd too.
    let mut z = Vec::new();
    let out_z =
        diff(&lower, &upper, &mut z, &DiffOptions { compression: Compression::Zstd, source_date_epoch: None }).unwrap();
    assert_eq!(out_z.diff_id, out_a.diff_id);
}

#[test]
fn diff_of_equal_trees_is_empty_and_epoch_clamps_times() {
    let tmp = tempfile::tempdir().unwrap();
    let (lower, upper) = (tmp.path().join("l"), tmp.path().join("u"));
    fs::create_dir(&lower).unwrap();
    fs::create_dir(&upper).unwrap();
    let mut blob = Vec::new();
    let opts = DiffOptions { compression: Compression::None, source_date_epoch: Some(1000) };
    let out = diff(&lower, &upper, &mut blob, &opts).unwrap();
    assert_eq!((out.entries, blob.len()), (0, 1024));
    fs::write(upper.join("f"), b"f").unwrap();
    blob.clear();
    diff(&lower, &upper, &mut blob, &opts).unwrap();
    let mut ar = tar::Archive::new(&blob[..]);
    let e = ar.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(e.header().mtime().unwrap(), 1000);
}

#[test]
fn diff_of_an_overlay_upper_applies_back() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let [lower, upper, work, merged] = ["lower", "upper", "work", "merged"].map(|d| {
        let p = tmp.path().join(d);
        fs::create_dir(&p).unwrap();
        p
    });
    let base = TestTar::new()
        .add(E::dir("etc/"))
        .add(E::file("etc/a", b"a"))
        .add(E::file("etc/b", b"b"))
        .add(E::dir("var/"))
        .add(E::file("var/junk", b"junk"))
        .finish();
    apply(&base[..], &lower, &ApplyOptions::new(WhiteoutMode::Overlay)).unwrap();
    if !mount_overlay(&lower, &upper, &work, &merged) {
        return;
    }
    // Change things through the mount, as a container would.
    let changed = (|| -> std::io::Result<()> {
        fs::remove_file(merged.join("etc/a"))?;
        fs::write(merged.join("etc/b"), b"bb")?;
        fs::remove_dir_all(merged.join("var"))?;
        fs::create_dir(merged.join("var"))?;
        fs::write(merged.join("var/fresh"), b"fresh")?;
        fs::set_permissions(merged.join("etc"), fs::Permissions::from_mode(0o700))?;
        Ok(())
    })();
    let expected = snapshot(&merged);
    umount(&merged);
    changed.unwrap();
    assert!(fs::symlink_metadata(upper.join("etc/a")).unwrap().file_type().is_char_device());

    let mut blob = Vec::new();
    let opts = DiffOptions { compression: Compression::None, source_date_epoch: None };
    diff_overlay_upper(&upper, &mut blob, &opts).unwrap();
    let listing = list_tar(&blob);
    assert!(listing.contains(&"Regular etc/.wh.a".to_string()), "{listing:?}");
    assert!(listing.contains(&"Regular var/.wh..wh..opq".to_string()), "{listing:?}");

    let restored = tmp.path().join("restored");
    copy_tree(&lower, &restored);
    apply(&blob[..], &restored, &ApplyOptions::new(WhiteoutMode::Delete)).unwrap();
    assert_eq!(snapshot(&restored), expected);
}

#[test]
fn tmpfs_target_works() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let ok = Command::new("mount").args(["-t", "tmpfs", "tmpfs"]).arg(tmp.path()).status().map(|s| s.success());
    if !matches!(ok, Ok(true)) {
        eprintln!("SKIPPED: cannot mount tmpfs");
        return;
    }
    let target = tmp.path().join("t");
    let result = fs::create_dir(&target)
        .map_err(berth_core::Error::from)
        .and_then(|()| apply(&full_layer()[..], &target, &ApplyOptions::new(WhiteoutMode::Overlay)))
        .map(|_| snapshot(&target));
    umount(tmp.path());
    let seen = result.unwrap();
    assert!(seen.contains_key("bin/ping6"));
}

#[test]
fn a_directory_listed_twice_takes_its_last_times_and_mode() {
    let sb = Sandbox::new();
    let layer = TestTar::new()
        .add(E::dir("d/").mtime(100).mode(0o700))
        .add(E::file("d/f", b"f"))
        .add(E::dir("d/").mtime(200).mode(0o755))
        .add(E::file("d/g", b"g"))
        .finish();
    sb.apply(&layer, WhiteoutMode::Delete).unwrap();
    let m = fs::metadata(sb.target.join("d")).unwrap();
    assert_eq!((m.mtime(), m.mode() & 0o777), (200, 0o755));
}

#[test]
fn oversized_extension_headers_are_refused() {
    let sb = Sandbox::new();
    let huge = vec![b'a'; 20 << 20];
    let layer = TestTar::new().add(E::file("f", b"").pax("comment", &huge)).finish();
    let err = sb.apply(&gzip(&layer), WhiteoutMode::Delete).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("16 MiB"), "{err}");
    // Big file data is no header: fine.
    let big = vec![7u8; 20 << 20];
    let layer = TestTar::new().add(E::file("big", &big)).finish();
    sb.apply(&layer, WhiteoutMode::Delete).unwrap();
    assert_eq!(fs::metadata(sb.target.join("big")).unwrap().len(), 20 << 20);
}

#[test]
fn diff_refuses_trees_nested_too_deep() {
    let tmp = tempfile::tempdir().unwrap();
    let (lower, upper) = (tmp.path().join("l"), tmp.path().join("u"));
    fs::create_dir(&lower).unwrap();
    let mut deep = upper.clone();
    for _ in 0..1100 {
        deep.push("d");
    }
    fs::create_dir_all(&deep).unwrap();
    let opts = DiffOptions { compression: Compression::None, source_date_epoch: None };
    let err = diff(&lower, &upper, std::io::sink(), &opts).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
}
