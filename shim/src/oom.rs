//! OOM kills in the container's cgroup while it runs. The kernel counts them (`oom_kill` in
//! memory.oom_control on cgroup v1, in memory.events on v2) and says when to look: an eventfd
//! registered through cgroup.event_control on v1, an inotify watch on memory.events on v2.
//! The watch runs on its own thread (poll on the descriptor and a cancel pipe) and calls
//! back on every notification;
//! the caller compares the counter with what it already reported, so the check at init exit
//! and the watch never report one kill twice.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::metrics;
use crate::stdio::{Cancel, CancelWait};

/// The OOM kill counter of one cgroup.
#[derive(Debug, Clone)]
pub struct OomCounter {
    /// The cgroup's directory in the memory hierarchy.
    dir: PathBuf,
    v2: bool,
}

impl OomCounter {
    /// The counter of the cgroup at `cgroup` (the spec's cgroup path), for this host's layout.
    pub fn for_cgroup(cgroup: &Path) -> io::Result<OomCounter> {
        let rel = cgroup.strip_prefix("/").unwrap_or(cgroup);
        let v2 = crate::cgroups::unified();
        let dir = if v2 {
            Path::new(crate::cgroups::ROOT).join(rel)
        } else {
            crate::cgroups::v1_dir(&crate::cgroups::mountinfo(), "memory", rel)
        };
        Ok(OomCounter { dir, v2 })
    }

    fn file(&self) -> PathBuf {
        self.dir.join(if self.v2 { "memory.events" } else { "memory.oom_control" })
    }

    /// How many processes the kernel has OOM-killed in the cgroup; None once it is gone.
    pub fn read(&self) -> Option<u64> {
        let text = std::fs::read_to_string(self.file()).ok()?;
        Some(metrics::parse_keyed(&text).get("oom_kill").copied().unwrap_or(0))
    }
}

/// A running watch; dropping it stops watching.
pub struct OomWatch(#[allow(dead_code)] Cancel);

/// What the callback found after a notification.
pub enum Check {
    /// The counter went up (and the caller reported it).
    Reported,
    /// Nothing new.
    Unchanged,
    /// The cgroup is gone: stop watching.
    Gone,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// v1: an eventfd that the kernel signals when the memory cgroup is under OOM (and when the
/// cgroup is removed).
fn register_v1(dir: &Path) -> io::Result<OwnedFd> {
    // SAFETY: eventfd returns a new descriptor we own, or -1.
    let efd = unsafe { OwnedFd::from_raw_fd(cvt(libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK))?) };
    // The kernel takes its own reference to the cgroup; this file may close after registering.
    let oom_control = std::fs::File::open(dir.join("memory.oom_control"))?;
    std::fs::write(dir.join("cgroup.event_control"), format!("{} {}", efd.as_raw_fd(), oom_control.as_raw_fd()))?;
    Ok(efd)
}

/// v2: an inotify descriptor watching memory.events for modification.
fn register_v2(dir: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: inotify_init1 returns a new descriptor we own, or -1.
    let fd = unsafe { OwnedFd::from_raw_fd(cvt(libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK))?) };
    let path = std::ffi::CString::new(dir.join("memory.events").as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: a valid descriptor and a NUL-terminated path.
    cvt(unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), libc::IN_MODIFY) })?;
    Ok(fd)
}

/// Reads whatever is pending on the descriptor (the eventfd count or inotify records).
fn drain(fd: &OwnedFd) -> io::Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: reading into a buffer we own, of the length given.
        let n = unsafe { libc::read(fd.as_fd().as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Ok(());
        }
    }
}

/// Watches `counter`'s cgroup and calls `check` on every notification, until it reports
/// [`Check::Gone`] or the watch is dropped.
pub fn watch(counter: &OomCounter, mut check: impl FnMut() -> Check + Send + 'static) -> io::Result<OomWatch> {
    let v2 = counter.v2;
    let fd = if v2 { register_v2(&counter.dir)? } else { register_v1(&counter.dir)? };
    let (cancel, cancelled) = crate::stdio::cancel_pair()?;
    crate::spawn("oom watch", move || loop {
        match cancelled.wait_readable(&fd) {
            CancelWait::Cancelled => return,
            CancelWait::Error(e) => {
                eprintln!("berth-shim: oom watch: {e}");
                return;
            }
            CancelWait::Ready => {}
        }
        match drain(&fd) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                eprintln!("berth-shim: oom watch: {e}");
                return;
            }
            Ok(()) => {}
        }
        // v1 signals when the cgroup goes under OOM, just before the kernel picks and kills
        // a victim; look again briefly until the counter moves. v2 notifies after the counter
        // changed.
        let retries: &[u64] = if v2 { &[] } else { &[1, 2, 5, 10, 20, 50, 100, 200] };
        let mut found = check();
        for ms in retries {
            if !matches!(found, Check::Unchanged) {
                break;
            }
            std::thread::sleep(Duration::from_millis(*ms));
            found = check();
        }
        if matches!(found, Check::Gone) {
            return;
        }
    });
    Ok(OomWatch(cancel))
}
