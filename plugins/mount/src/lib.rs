//! Mounts as containerd describes them — a type, a source, a target inside the mount root and
//! fstab-style options — and the system calls that make and remove them.
//!
//! ```no_run
//! use berth_mount::{Mount, MountGuard};
//! let m = Mount::new("bind", "/var/lib/berth/snapshots/native/snapshots/1", ["ro", "rbind"]);
//! let guard = MountGuard::mount(&[m], std::path::Path::new("/tmp/rootfs"))?;
//! // ... read /tmp/rootfs ...
//! guard.unmount()?; // or just drop it
//! # Ok::<(), berth_core::Error>(())
//! ```
//!
//! Options are parsed as containerd's `mount_linux.go` does: flag words (`ro`, `rbind`,
//! `nosuid`, ...) become `MS_*` flags, propagation words (`rprivate`, ...) a second mount
//! call, everything else the data string. A bind mount with `ro` (or `nosuid`, ...) is
//! remounted, since the kernel ignores those flags when it creates a bind mount. Overlay
//! option strings longer than a page (many lower layers) still mount: see [`overlay`].

mod options;
pub mod overlay;

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_core::{Error, Result};
use serde::{Deserialize, Serialize};

pub use options::{parse_options, ParsedOptions};

/// One mount, mirroring `containerd.types.Mount`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Filesystem type (`overlay`, `bind`, `tmpfs`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// Source: a path for binds, the filesystem name otherwise.
    pub source: String,
    /// Where to mount relative to the root given to [`mount_all`]; empty means the root itself.
    #[serde(default)]
    pub target: String,
    /// fstab-style options.
    #[serde(default)]
    pub options: Vec<String>,
}

impl Mount {
    /// A mount at the root with the given type, source and options.
    pub fn new<S: Into<String>>(
        kind: impl Into<String>,
        source: impl Into<String>,
        options: impl IntoIterator<Item = S>,
    ) -> Mount {
        Mount {
            kind: kind.into(),
            source: source.into(),
            target: String::new(),
            options: options.into_iter().map(Into::into).collect(),
        }
    }

    /// Mounts this at `target` (an existing directory), ignoring [`Mount::target`].
    pub fn mount(&self, target: &Path) -> Result<()> {
        mount_at(self, target)
            .map_err(|e| Error::from(e).context(format!("mount {} {} on {}", self.kind, self.source, target.display())))
    }
}

fn cstring(s: impl AsRef<[u8]>) -> io::Result<CString> {
    CString::new(s.as_ref()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// One mount(2) call; `None` arguments are passed as NULL.
fn sys_mount(
    source: Option<&CString>,
    target: &CString,
    fstype: Option<&CString>,
    flags: libc::c_ulong,
    data: Option<&CString>,
) -> io::Result<()> {
    let ptr = |s: Option<&CString>| s.map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: every pointer is NULL or a NUL-terminated string that outlives the call.
    check(unsafe { libc::mount(ptr(source), target.as_ptr(), ptr(fstype), flags, ptr(data).cast::<libc::c_void>()) })
}

fn mount_at(m: &Mount, target: &Path) -> io::Result<()> {
    if m.kind == "loop" || m.options.iter().any(|o| o == "loop") {
        return Err(io::Error::new(io::ErrorKind::Unsupported, "loop mounts are not supported"));
    }
    let opts = parse_options(&m.options);
    let target_c = cstring(target.as_os_str().as_bytes())?;
    let flags = opts.flags;
    if m.kind == "overlay" && opts.data.len() >= overlay::page_size() {
        overlay::mount_long(m, &opts, target)?;
    } else {
        let source = cstring(&m.source)?;
        let fstype = cstring(&m.kind)?;
        let data = (!opts.data.is_empty()).then(|| cstring(&opts.data)).transpose()?;
        sys_mount(Some(&source), &target_c, Some(&fstype), flags, data.as_ref())?;
    }
    if flags & libc::MS_BIND != 0 && flags & options::BIND_REMOUNT_FLAGS != 0 {
        let remount = libc::MS_REMOUNT | libc::MS_BIND | (flags & options::BIND_REMOUNT_FLAGS);
        if let Err(e) = sys_mount(None, &target_c, None, remount, None) {
            let _ = unmount(target, libc::MNT_DETACH);
            return Err(e);
        }
    }
    if opts.propagation != 0 {
        if let Err(e) = sys_mount(None, &target_c, None, opts.propagation, None) {
            let _ = unmount(target, libc::MNT_DETACH);
            return Err(e);
        }
    }
    Ok(())
}

fn mount_point(root: &Path, m: &Mount) -> PathBuf {
    let sub = m.target.trim_start_matches('/');
    if sub.is_empty() {
        root.to_path_buf()
    } else {
        root.join(sub)
    }
}

/// Mounts `mounts` in order, each at `root` joined with its [`Mount::target`]. On failure the
/// mounts already made are undone and the error names the one that failed.
pub fn mount_all(mounts: &[Mount], root: &Path) -> Result<()> {
    for (i, m) in mounts.iter().enumerate() {
        if let Err(e) = m.mount(&mount_point(root, m)) {
            for done in mounts[..i].iter().rev() {
                if let Err(u) = unmount(&mount_point(root, done), libc::MNT_DETACH) {
                    tracing::warn!(error = %u, "cannot undo mount after a later one failed");
                }
            }
            return Err(e);
        }
    }
    Ok(())
}

/// umount2(2) on `target` with `flags` (`MNT_DETACH`, ...), retrying while it is busy for up
/// to a second, as containerd does.
pub fn unmount(target: &Path, flags: libc::c_int) -> Result<()> {
    umount_retry(target, flags).map_err(|e| Error::from(e).context(format!("unmount {}", target.display())))
}

fn umount_retry(target: &Path, flags: libc::c_int) -> io::Result<()> {
    let t = cstring(target.as_os_str().as_bytes())?;
    let mut tries = 0;
    loop {
        // SAFETY: a NUL-terminated path that outlives the call.
        match check(unsafe { libc::umount2(t.as_ptr(), flags) }) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 20 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            r => return r,
        }
    }
}

/// Unmounts everything stacked on `target` until it is no longer a mount point; a target that
/// is not mounted (or does not exist) is fine.
pub fn unmount_all(target: &Path, flags: libc::c_int) -> Result<()> {
    loop {
        match umount_retry(target, flags) {
            Ok(()) => continue,
            // EINVAL: not a mount point (any more); ENOENT: gone.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) => return Ok(()),
            Err(e) => return Err(Error::from(e).context(format!("unmount {}", target.display()))),
        }
    }
}

/// Mounts made by [`MountGuard::mount`]; dropping the guard unmounts them (lazily if a plain
/// unmount fails), also when the holder panics.
#[derive(Debug)]
#[must_use = "dropping the guard unmounts at once"]
pub struct MountGuard {
    root: PathBuf,
    points: Vec<PathBuf>,
}

impl MountGuard {
    /// Mounts `mounts` at `root` like [`mount_all`] and returns the guard.
    pub fn mount(mounts: &[Mount], root: &Path) -> Result<MountGuard> {
        mount_all(mounts, root)?;
        Ok(MountGuard { root: root.to_path_buf(), points: mounts.iter().map(|m| mount_point(root, m)).collect() })
    }

    /// The directory the mounts were made at.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Unmounts now, reporting failure (the drop afterwards is then a lazy detach).
    pub fn unmount(mut self) -> Result<()> {
        self.unmount_points(0)
    }

    fn unmount_points(&mut self, flags: libc::c_int) -> Result<()> {
        while let Some(p) = self.points.last() {
            unmount_all(p, flags)?;
            self.points.pop();
        }
        Ok(())
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if self.unmount_points(0).is_err() {
            if let Err(e) = self.unmount_points(libc::MNT_DETACH) {
                tracing::warn!(root = %self.root.display(), error = %e, "cannot unmount");
            }
        }
    }
}

#[cfg(test)]
mod tests;
