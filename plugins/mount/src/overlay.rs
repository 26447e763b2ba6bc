//! Overlay mounts whose option string is longer than a page.
//!
//! mount(2) copies at most one page of option data, so an overlay over ~100 deep layer paths
//! cannot be described in one string. containerd shortens the string instead: it forks, the
//! child chdirs to the lower directories' common parent and mounts with relative paths.
//!
//! We prefer the new mount API where the kernel has overlay's `lowerdir+` key (Linux 6.8):
//! `fsopen("overlay")`, one `fsconfig(SET_STRING, "lowerdir+", dir)` per layer (each bounded
//! only by PATH_MAX), `fsmount` and `move_mount`. It touches no process-wide state, so it is
//! safe while other threads of the daemon run — unlike chdir(2), which would change the
//! working directory under every thread at once.
//!
//! Older kernels fall back to containerd's compaction in a forked child. fork(2) in a
//! multithreaded process is only safe if the child limits itself to async-signal-safe calls
//! (another thread may have held the allocator lock at the fork): every string is built before
//! the fork, and the child makes only raw system calls (chdir, mount, _exit).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::{cstring, Mount, ParsedOptions};

const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
const MOUNT_ATTR_RDONLY: libc::c_uint = 0x1;
const MOUNT_ATTR_NOSUID: libc::c_uint = 0x2;
const MOUNT_ATTR_NODEV: libc::c_uint = 0x4;
const MOUNT_ATTR_NOEXEC: libc::c_uint = 0x8;
const MOUNT_ATTR_NOATIME: libc::c_uint = 0x10;
const MOUNT_ATTR_STRICTATIME: libc::c_uint = 0x20;
const MOUNT_ATTR_NODIRATIME: libc::c_uint = 0x80;

/// The system page size: the most option data mount(2) takes.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// Splits overlay data into (key, value) pairs; `\,` and `\:` are escapes, kept as written.
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            out.push(String::new());
            continue;
        }
        out.last_mut().unwrap_or(&mut String::new()).push(c);
    }
    out
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Mounts an overlay whose data is too long for mount(2).
pub(crate) fn mount_long(m: &Mount, opts: &ParsedOptions, target: &Path) -> io::Result<()> {
    match mount_fsconfig(opts, target) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) || e.raw_os_error() == Some(libc::ENOSYS) => {
            tracing::debug!(error = %e, "overlay lowerdir+ unavailable; compacting lowerdir in a child");
            mount_compacted(m, opts, target)
        }
        r => r,
    }
}

fn fsconfig(fd: &OwnedFd, cmd: libc::c_uint, key: Option<&CString>, value: Option<&CString>) -> io::Result<()> {
    let ptr = |s: Option<&CString>| s.map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: fd is an open fs context; key and value are NULL or NUL-terminated strings.
    let rc = unsafe { libc::syscall(libc::SYS_fsconfig, fd.as_raw_fd(), cmd, ptr(key), ptr(value), 0) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn owned_fd(rc: libc::c_long) -> io::Result<OwnedFd> {
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = libc::c_int::try_from(rc).map_err(|_| io::Error::other("file descriptor out of range"))?;
    // SAFETY: the kernel just returned this descriptor to us and nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The new mount API with one `lowerdir+` per layer.
pub fn mount_fsconfig(opts: &ParsedOptions, target: &Path) -> io::Result<()> {
    let name = cstring("overlay")?;
    // SAFETY: a NUL-terminated name and flags.
    let ctx = owned_fd(unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), FSOPEN_CLOEXEC) })?;
    for opt in split_unescaped(&opts.data, ',') {
        if opt.is_empty() {
            continue;
        }
        match opt.split_once('=') {
            Some(("lowerdir", dirs)) => {
                let key = cstring("lowerdir+")?;
                for dir in split_unescaped(dirs, ':') {
                    fsconfig(&ctx, FSCONFIG_SET_STRING, Some(&key), Some(&cstring(unescape(&dir))?))?;
                }
            }
            Some((k, v)) => fsconfig(&ctx, FSCONFIG_SET_STRING, Some(&cstring(k)?), Some(&cstring(v)?))?,
            None => fsconfig(&ctx, FSCONFIG_SET_FLAG, Some(&cstring(&opt)?), None)?,
        }
    }
    fsconfig(&ctx, FSCONFIG_CMD_CREATE, None, None)?;
    let mut attrs = 0;
    for (flag, attr) in [
        (libc::MS_RDONLY, MOUNT_ATTR_RDONLY),
        (libc::MS_NOSUID, MOUNT_ATTR_NOSUID),
        (libc::MS_NODEV, MOUNT_ATTR_NODEV),
        (libc::MS_NOEXEC, MOUNT_ATTR_NOEXEC),
        (libc::MS_NOATIME, MOUNT_ATTR_NOATIME),
        (libc::MS_STRICTATIME, MOUNT_ATTR_STRICTATIME),
        (libc::MS_NODIRATIME, MOUNT_ATTR_NODIRATIME),
    ] {
        if opts.flags & flag != 0 {
            attrs |= attr;
        }
    }
    // SAFETY: ctx is a created fs context.
    let mnt = owned_fd(unsafe { libc::syscall(libc::SYS_fsmount, ctx.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) })?;
    let empty = cstring("")?;
    let target_c = cstring(target.as_os_str().as_bytes())?;
    // SAFETY: mnt is a detached mount; the paths are NUL-terminated.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            target_c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The longest common parent directory of `dirs` (all absolute).
fn common_parent(dirs: &[PathBuf]) -> PathBuf {
    let mut common: PathBuf = dirs.first().and_then(|d| d.parent()).map(Path::to_path_buf).unwrap_or_default();
    for d in dirs {
        while !d.starts_with(&common) {
            if !common.pop() {
                return PathBuf::from("/");
            }
        }
    }
    if common.as_os_str().is_empty() {
        PathBuf::from("/")
    } else {
        common
    }
}

/// containerd's compaction: lowerdirs relative to their common parent, mounted by a forked
/// child that chdirs there first.
pub fn mount_compacted(m: &Mount, opts: &ParsedOptions, target: &Path) -> io::Result<()> {
    let mut parts = split_unescaped(&opts.data, ',');
    let Some(idx) = parts.iter().position(|p| p.starts_with("lowerdir=")) else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "overlay options longer than a page without lowerdir"));
    };
    let lowers: Vec<PathBuf> =
        split_unescaped(&parts[idx]["lowerdir=".len()..], ':').iter().map(|d| PathBuf::from(unescape(d))).collect();
    if lowers.iter().any(|d| !d.is_absolute()) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "lowerdir paths must be absolute to compact"));
    }
    let common = common_parent(&lowers);
    let rel: Vec<String> = lowers
        .iter()
        .map(|d| d.strip_prefix(&common).map(|r| r.to_string_lossy().replace(':', "\\:")))
        .collect::<Result<_, _>>()
        .map_err(|_| io::Error::other("lowerdir outside its common parent"))?;
    parts[idx] = format!("lowerdir={}", rel.join(":"));
    let data = parts.join(",");
    if data.len() >= page_size() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("overlay options still {} bytes after compaction (page {})", data.len(), page_size()),
        ));
    }
    let target = std::path::absolute(target)?;
    // Everything the child uses is allocated here, before the fork.
    let dir = cstring(common.as_os_str().as_bytes())?;
    let source = cstring(&m.source)?;
    let fstype = cstring("overlay")?;
    let target_c = cstring(target.as_os_str().as_bytes())?;
    let data_c = cstring(&data)?;
    let flags = opts.flags;
    // SAFETY: see the module doc: the child only makes async-signal-safe system calls.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: raw system calls on pre-built strings, then _exit; no allocation, no locks.
        unsafe {
            if libc::chdir(dir.as_ptr()) != 0 {
                libc::_exit(*libc::__errno_location());
            }
            let rc = libc::mount(
                source.as_ptr(),
                target_c.as_ptr(),
                fstype.as_ptr(),
                flags,
                data_c.as_ptr().cast::<libc::c_void>(),
            );
            libc::_exit(if rc == 0 { 0 } else { *libc::__errno_location() });
        }
    }
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc >= 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
    match (libc::WIFEXITED(status), libc::WEXITSTATUS(status)) {
        (true, 0) => Ok(()),
        (true, errno) => Err(io::Error::from_raw_os_error(errno)),
        _ => Err(io::Error::other(format!("mount child died (status {status})"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_common_parent() {
        assert_eq!(split_unescaped(r"a=1,lowerdir=/x\:y:/z,b", ','), vec!["a=1", r"lowerdir=/x\:y:/z", "b"]);
        assert_eq!(split_unescaped(r"/x\:y:/z", ':'), vec![r"/x\:y", "/z"]);
        assert_eq!(unescape(r"/x\:y"), "/x:y");
        let dirs = [PathBuf::from("/r/s/1/fs"), PathBuf::from("/r/s/22/fs")];
        assert_eq!(common_parent(&dirs), PathBuf::from("/r/s"));
        assert_eq!(common_parent(&[PathBuf::from("/a/fs"), PathBuf::from("/b/fs")]), PathBuf::from("/"));
    }
}
