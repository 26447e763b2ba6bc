//! File tree helpers: disk usage by walking, and a faithful tree copy for the native
//! snapshotter (owners, modes, xattrs, hard links, devices, fifos, symlinks, times).

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::Path;

use berth_core::{Error, Result};

use crate::Usage;

/// Bytes allocated (512-byte blocks) and distinct inodes under `dir`, itself included; hard
/// links count once, as containerd's `fs.DiskUsage`.
pub fn disk_usage(dir: &Path) -> Result<Usage> {
    let mut seen = HashSet::new();
    let mut usage = Usage::default();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = fs::symlink_metadata(&p).map_err(|e| Error::from(e).context(format!("usage of {}", p.display())))?;
        if seen.insert((md.dev(), md.ino())) {
            usage.inodes += 1;
            usage.size += i64::try_from(md.blocks() * 512).unwrap_or(i64::MAX);
        }
        if md.is_dir() {
            for entry in fs::read_dir(&p).map_err(|e| Error::from(e).context(format!("read {}", p.display())))? {
                stack.push(entry.map_err(Error::from)?.path());
            }
        }
    }
    Ok(usage)
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path has NUL"))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Copies every extended attribute of `src` to `dst` without following symlinks.
fn copy_xattrs(src: &CString, dst: &CString) -> io::Result<()> {
    // SAFETY: NULL buffer with size 0 asks for the needed size.
    let n = unsafe { libc::llistxattr(src.as_ptr(), std::ptr::null_mut(), 0) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENOTSUP) { Ok(()) } else { Err(e) };
    }
    if n == 0 {
        return Ok(());
    }
    let mut names = vec![0u8; n as usize];
    // SAFETY: the buffer has the size passed.
    let n = unsafe { libc::llistxattr(src.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    names.truncate(n as usize);
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).map_err(|_| io::Error::other("xattr name"))?;
        // SAFETY: size query as above.
        let len = unsafe { libc::lgetxattr(src.as_ptr(), cname.as_ptr(), std::ptr::null_mut(), 0) };
        if len < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut value = vec![0u8; len as usize];
        // SAFETY: the buffer has the size passed.
        let len = unsafe { libc::lgetxattr(src.as_ptr(), cname.as_ptr(), value.as_mut_ptr().cast(), value.len()) };
        if len < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: valid strings and a buffer of `len` bytes.
        check(unsafe { libc::lsetxattr(dst.as_ptr(), cname.as_ptr(), value.as_ptr().cast(), len as usize, 0) })?;
    }
    Ok(())
}

/// Owner, mode (not for symlinks), xattrs and times of `md` onto `dst`.
fn copy_attrs(src: &Path, dst: &Path, md: &fs::Metadata) -> io::Result<()> {
    let (s, d) = (cpath(src)?, cpath(dst)?);
    // SAFETY: valid NUL-terminated paths.
    check(unsafe { libc::lchown(d.as_ptr(), md.uid(), md.gid()) })?;
    if !md.file_type().is_symlink() {
        // After chown, which clears set-id bits.
        // SAFETY: valid path.
        check(unsafe { libc::chmod(d.as_ptr(), md.mode() & 0o7777) })?;
    }
    copy_xattrs(&s, &d)?;
    let times = [
        libc::timespec { tv_sec: md.atime(), tv_nsec: md.atime_nsec() },
        libc::timespec { tv_sec: md.mtime(), tv_nsec: md.mtime_nsec() },
    ];
    // SAFETY: valid path and a two-element timespec array.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, d.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
}

/// Copies the tree at `src` into the existing directory `dst`: contents, and the root's own
/// owner, mode, xattrs and times.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let mut links = HashMap::new();
    copy_dir(src, dst, &mut links).map_err(|e| Error::from(e).context(format!("copy {}", src.display())))
}

fn copy_dir(src: &Path, dst: &Path, links: &mut HashMap<(u64, u64), std::path::PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let (s, d) = (entry.path(), dst.join(entry.file_name()));
        let md = fs::symlink_metadata(&s)?;
        let ft = md.file_type();
        if !ft.is_dir() && md.nlink() > 1 {
            if let Some(first) = links.get(&(md.dev(), md.ino())) {
                fs::hard_link(first, &d)?;
                continue;
            }
            links.insert((md.dev(), md.ino()), d.clone());
        }
        if ft.is_dir() {
            fs::create_dir(&d)?;
            copy_dir(&s, &d, links)?;
            continue; // attributes set by the recursive call, after the contents
        } else if ft.is_file() {
            fs::copy(&s, &d)?;
        } else if ft.is_symlink() {
            symlink(fs::read_link(&s)?, &d)?;
        } else {
            let c = cpath(&d)?;
            // Devices, fifos and sockets: same type bits and device number.
            // SAFETY: valid path.
            check(unsafe { libc::mknod(c.as_ptr(), md.mode(), md.rdev()) })?;
        }
        copy_attrs(&s, &d, &md)?;
    }
    copy_attrs(src, dst, &fs::symlink_metadata(src)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    #[test]
    fn copy_keeps_links_modes_owners_times_xattrs_and_specials() {
        // SAFETY: no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: copy test needs root (chown, mknod)");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let (src, dst) = (t.path().join("src"), t.path().join("dst"));
        fs::create_dir_all(src.join("d/e")).unwrap();
        fs::create_dir(&dst).unwrap();
        fs::write(src.join("d/f"), "data").unwrap();
        fs::set_permissions(src.join("d/f"), fs::Permissions::from_mode(0o4751)).unwrap();
        fs::hard_link(src.join("d/f"), src.join("link")).unwrap();
        symlink("d/f", src.join("sym")).unwrap();
        let p = |p: &Path| cpath(p).unwrap();
        unsafe {
            assert_eq!(libc::lchown(p(&src.join("d/f")).as_ptr(), 1234, 5678), 0);
            assert_eq!(libc::chmod(p(&src.join("d/f")).as_ptr(), 0o4751), 0);
            assert_eq!(libc::mknod(p(&src.join("null")).as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)), 0);
            assert_eq!(libc::mkfifo(p(&src.join("fifo")).as_ptr(), 0o640), 0);
            let (k, v) = (CString::new("user.test").unwrap(), b"value");
            assert_eq!(libc::setxattr(p(&src.join("d")).as_ptr(), k.as_ptr(), v.as_ptr().cast(), v.len(), 0), 0);
        }
        let old = filetime_of(&src.join("d/e"));
        copy_tree(&src, &dst).unwrap();

        let f = fs::symlink_metadata(dst.join("d/f")).unwrap();
        assert_eq!((f.uid(), f.gid(), f.mode() & 0o7777), (1234, 5678, 0o4751));
        assert_eq!(f.ino(), fs::symlink_metadata(dst.join("link")).unwrap().ino(), "hard link kept");
        assert_eq!(fs::read_link(dst.join("sym")).unwrap(), Path::new("d/f"));
        let null = fs::symlink_metadata(dst.join("null")).unwrap();
        assert!(null.file_type().is_char_device());
        assert_eq!(null.rdev(), libc::makedev(1, 3));
        assert!(fs::symlink_metadata(dst.join("fifo")).unwrap().file_type().is_fifo());
        assert_eq!(filetime_of(&dst.join("d/e")), old, "directory times kept");
        let mut buf = [0u8; 16];
        let n = unsafe {
            let k = CString::new("user.test").unwrap();
            libc::getxattr(p(&dst.join("d")).as_ptr(), k.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        };
        assert_eq!(&buf[..n as usize], b"value");

        let u = disk_usage(&dst).unwrap();
        assert!(u.inodes >= 7 && u.size > 0, "{u:?}");
    }

    fn filetime_of(p: &Path) -> (i64, i64) {
        let md = fs::symlink_metadata(p).unwrap();
        (md.mtime(), md.mtime_nsec())
    }
}
