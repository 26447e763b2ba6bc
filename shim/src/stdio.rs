//! Process stdio from containerd-style named fifos: stdout and stderr fifos are handed to the
//! process opened read-write (so clients attach and detach at any time and output never
//! fails with EPIPE); stdin is copied from its fifo into a pipe the shim can close (CloseIO).
//! Copies run on their own small threads, each waiting in poll(2) on its descriptors and on
//! a cancel pipe.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

/// Dropping it cancels whoever waits on the matching [`Cancelled`] (the write end of a
/// pipe: its close wakes the read end with POLLHUP).
pub struct Cancel(#[allow(dead_code)] OwnedFd);

/// The waiting side of a [`Cancel`].
pub struct Cancelled(OwnedFd);

/// What a wait ended with.
pub enum CancelWait {
    /// The descriptor is ready.
    Ready,
    /// The [`Cancel`] was dropped.
    Cancelled,
    /// poll failed.
    Error(io::Error),
}

/// A new cancel handle and its waiting side.
pub fn cancel_pair() -> io::Result<(Cancel, Cancelled)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    Ok((Cancel(w), Cancelled(r)))
}

impl Cancelled {
    /// Waits until `fd` is readable or this is cancelled.
    pub fn wait_readable(&self, fd: &impl AsFd) -> CancelWait {
        self.wait(fd, libc::POLLIN)
    }

    fn wait(&self, fd: &impl AsFd, events: libc::c_short) -> CancelWait {
        wait_for(fd, events, Some(self))
    }
}

fn wait_for(fd: &impl AsFd, events: libc::c_short, cancel: Option<&Cancelled>) -> CancelWait {
    let mut fds = [
        libc::pollfd { fd: fd.as_fd().as_raw_fd(), events, revents: 0 },
        libc::pollfd { fd: cancel.map_or(-1, |c| c.0.as_raw_fd()), events: libc::POLLIN, revents: 0 },
    ];
    loop {
        // SAFETY: poll on an array of two pollfds we own (a negative fd is ignored).
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return CancelWait::Error(e);
        }
        if fds[1].revents != 0 {
            return CancelWait::Cancelled;
        }
        if fds[0].revents != 0 {
            return CancelWait::Ready;
        }
    }
}

/// After a cancel, how long a copy may still wait for its destination to take what the
/// source already holds.
const DRAIN_TIME: Duration = Duration::from_secs(1);

/// Copies `src` to `dst` until `src` ends or fails, or `dst` fails. When `cancel` fires, what
/// `src` already holds is still delivered (CloseIO comes after the client wrote its last
/// bytes into the fifo, and they must reach the process before its EOF), for at most
/// [`DRAIN_TIME`]; then the copy ends and drops `dst`.
fn copy(mut src: File, mut dst: File, cancel: Option<Cancelled>) {
    set_nonblocking(&src);
    set_nonblocking(&dst);
    let mut buf = vec![0u8; 32 * 1024];
    // Set once cancelled: the time by which the drain must be done.
    let mut closing: Option<Instant> = None;
    loop {
        if closing.is_none() {
            match wait_for(&src, libc::POLLIN, cancel.as_ref()) {
                CancelWait::Ready => {}
                CancelWait::Cancelled => closing = Some(Instant::now() + DRAIN_TIME),
                CancelWait::Error(_) => return,
            }
        }
        let n = match src.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            // Drained: nothing more was written before the cancel.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && closing.is_some() => return,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => continue,
            Err(_) => return,
        };
        let mut off = 0;
        while off < n {
            match dst.write(&buf[off..n]) {
                Ok(k) => off += k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => match closing {
                    None => match wait_for(&dst, libc::POLLOUT, cancel.as_ref()) {
                        CancelWait::Ready => {}
                        CancelWait::Cancelled => closing = Some(Instant::now() + DRAIN_TIME),
                        CancelWait::Error(_) => return,
                    },
                    Some(deadline) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() || !writable_within(&dst, left) {
                            return;
                        }
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }
}

/// Waits up to `time` for `fd` to take writes.
fn writable_within(fd: &impl AsFd, time: Duration) -> bool {
    let mut p = libc::pollfd { fd: fd.as_fd().as_raw_fd(), events: libc::POLLOUT, revents: 0 };
    let ms = time.as_millis().clamp(1, i32::MAX as u128) as i32;
    // SAFETY: poll on one pollfd we own.
    let n = unsafe { libc::poll(&mut p, 1, ms) };
    n > 0 && p.revents & libc::POLLOUT != 0
}

/// The fds a new process gets, and the handle that closes its stdin.
pub struct ProcessIo {
    /// stdin (pipe read end, or /dev/null).
    pub stdin: OwnedFd,
    /// stdout (fifo opened read-write, or /dev/null).
    pub stdout: OwnedFd,
    /// stderr.
    pub stderr: OwnedFd,
    /// Closes stdin when dropped (None without a stdin fifo).
    pub close_stdin: Option<Cancel>,
}

fn dev_null(write: bool) -> io::Result<OwnedFd> {
    Ok(OpenOptions::new().read(!write).write(write).open("/dev/null")?.into())
}

fn output(path: &str) -> io::Result<OwnedFd> {
    if path.is_empty() {
        return dev_null(true);
    }
    let f = OpenOptions::new().read(true).write(true).custom_flags(libc::O_CLOEXEC).open(path)?;
    Ok(f.into())
}

/// Opens the stdio of a process.
pub fn open(stdin: &str, stdout: &str, stderr: &str) -> io::Result<ProcessIo> {
    let stdout_fd = output(stdout)?;
    let stderr_fd = if !stderr.is_empty() && stderr == stdout { stdout_fd.try_clone()? } else { output(stderr)? };
    if stdin.is_empty() {
        return Ok(ProcessIo { stdin: dev_null(false)?, stdout: stdout_fd, stderr: stderr_fd, close_stdin: None });
    }
    // Read-write so the open never blocks and the fifo never reports EOF between writers;
    // the process sees EOF only when CloseIO drops the pipe's write end.
    let fifo =
        OpenOptions::new().read(true).write(true).custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC).open(stdin)?;
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    let (cancel, cancelled) = cancel_pair()?;
    crate::spawn("stdin", move || copy(fifo, File::from(w), Some(cancelled)));
    Ok(ProcessIo { stdin: r, stdout: stdout_fd, stderr: stderr_fd, close_stdin: Some(cancel) })
}

fn set_nonblocking(f: &File) {
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let flags = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(f.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}

/// A console socket for a terminal process: libcontainer connects to it while building the
/// process and sends the pty master over it.
pub struct ConsoleSocket {
    path: std::path::PathBuf,
    listener: std::os::unix::net::UnixListener,
}

impl ConsoleSocket {
    /// Listens at `path` (removed on drop).
    pub fn bind(path: std::path::PathBuf) -> io::Result<ConsoleSocket> {
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path)?;
        listener.set_nonblocking(true)?;
        Ok(ConsoleSocket { path, listener })
    }

    /// Where libcontainer connects.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Takes the pty master the process sent (after the build returned).
    pub fn receive_master(&self) -> io::Result<OwnedFd> {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        use std::os::fd::{AsRawFd, FromRawFd};
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let (conn, _) = loop {
            match self.listener.accept() {
                Ok(c) => break c,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(2))
                }
                Err(e) => return Err(e),
            }
        };
        conn.set_nonblocking(false)?;
        conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        let mut buf = [0u8; 256];
        let mut iov = [io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg =
            recvmsg::<()>(conn.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty()).map_err(io::Error::from)?;
        for c in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                if let Some(fd) = fds.first() {
                    // SAFETY: the fd was just received and is owned by nobody else.
                    return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
                }
            }
        }
        Err(io::Error::other("no pty master received on the console socket"))
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Copies between a pty master and the process's fifos: stdin fifo → master, master → stdout
/// fifo. The stdout fifo is released when the pty closes, so readers see EOF.
pub fn copy_pty(master: &OwnedFd, stdin: &str, stdout: &str) -> io::Result<Option<Cancel>> {
    if !stdout.is_empty() {
        let out_master = File::from(master.try_clone()?);
        let out =
            OpenOptions::new().read(true).write(true).custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC).open(stdout)?;
        crate::spawn("pty out", move || copy(out_master, out, None));
    }
    if stdin.is_empty() {
        return Ok(None);
    }
    let fifo =
        OpenOptions::new().read(true).write(true).custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC).open(stdin)?;
    let (cancel, cancelled) = cancel_pair()?;
    let to_master = File::from(master.try_clone()?);
    crate::spawn("pty in", move || copy(fifo, to_master, Some(cancelled)));
    Ok(Some(cancel))
}

/// Sets the window size of a pty.
pub fn resize(master: &OwnedFd, width: u32, height: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let ws = libc::winsize { ws_row: height as u16, ws_col: width as u16, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ with a valid winsize on an fd we own.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipe() -> (File, File) {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        (File::from(r), File::from(w))
    }

    #[test]
    fn a_cancelled_copy_still_delivers_what_was_written_before() {
        // The client wrote its input, then asked to close stdin: both are ready at once.
        let (src, mut src_w) = pipe();
        src_w.write_all(b"piped in\n").unwrap();
        let (mut dst_r, dst_w) = pipe();
        let (cancel, cancelled) = cancel_pair().unwrap();
        drop(cancel);
        copy(src, dst_w, Some(cancelled));
        // The copy returned with its writer gone: the reader gets the bytes, then EOF,
        // although the source's writer (src_w) is still open.
        let mut got = String::new();
        dst_r.read_to_string(&mut got).unwrap();
        assert_eq!(got, "piped in\n");
        drop(src_w);
    }

    #[test]
    fn a_copy_ends_at_the_end_of_its_source() {
        let (src, mut src_w) = pipe();
        let (mut dst_r, dst_w) = pipe();
        let (_cancel, cancelled) = cancel_pair().unwrap();
        let t = std::thread::spawn(move || copy(src, dst_w, Some(cancelled)));
        src_w.write_all(b"one ").unwrap();
        src_w.write_all(b"two").unwrap();
        drop(src_w);
        t.join().unwrap();
        let mut got = String::new();
        dst_r.read_to_string(&mut got).unwrap();
        assert_eq!(got, "one two");
    }
}
