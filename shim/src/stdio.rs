//! Process stdio from containerd-style named fifos: stdout and stderr fifos are handed to the
//! process opened read-write (so clients attach and detach at any time and output never
//! fails with EPIPE); stdin is copied from its fifo into a pipe the shim can close (CloseIO).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;

use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

/// The fds a new process gets, and the handle that closes its stdin.
pub struct ProcessIo {
    /// stdin (pipe read end, or /dev/null).
    pub stdin: OwnedFd,
    /// stdout (fifo opened read-write, or /dev/null).
    pub stdout: OwnedFd,
    /// stderr.
    pub stderr: OwnedFd,
    /// Closes stdin when sent to or dropped (None without a stdin fifo).
    pub close_stdin: Option<oneshot::Sender<()>>,
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

/// Opens the stdio of a process. Must run inside the tokio runtime (stdin copier).
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
    let (tx, rx) = oneshot::channel();
    tokio::spawn(copy_stdin(fifo, File::from(w), rx));
    Ok(ProcessIo { stdin: r, stdout: stdout_fd, stderr: stderr_fd, close_stdin: Some(tx) })
}

async fn copy_stdin(fifo: File, pipe: File, mut close: oneshot::Receiver<()>) {
    let Ok(mut src) = tokio::net::unix::pipe::Receiver::from_file_unchecked(fifo) else { return };
    set_nonblocking(&pipe);
    let Ok(mut dst) = tokio::net::unix::pipe::Sender::from_file_unchecked(pipe) else { return };
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        tokio::select! {
            _ = &mut close => return,
            r = tokio::io::AsyncReadExt::read(&mut src, &mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    tokio::select! {
                        _ = &mut close => return,
                        w = dst.write_all(&buf[..n]) => if w.is_err() { return },
                    }
                }
            },
        }
    }
}

fn set_nonblocking(f: &File) {
    use std::os::fd::AsRawFd;
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
pub fn copy_pty(master: &OwnedFd, stdin: &str, stdout: &str) -> io::Result<Option<oneshot::Sender<()>>> {
    let out_master = File::from(master.try_clone()?);
    set_nonblocking(&out_master);
    if !stdout.is_empty() {
        let out =
            OpenOptions::new().read(true).write(true).custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC).open(stdout)?;
        tokio::spawn(async move {
            let Ok(mut src) = tokio::net::unix::pipe::Receiver::from_file_unchecked(out_master) else { return };
            let Ok(mut dst) = tokio::net::unix::pipe::Sender::from_file_unchecked(out) else { return };
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match tokio::io::AsyncReadExt::read(&mut src, &mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if dst.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    if stdin.is_empty() {
        return Ok(None);
    }
    let fifo =
        OpenOptions::new().read(true).write(true).custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC).open(stdin)?;
    let (tx, rx) = oneshot::channel();
    tokio::spawn(copy_stdin(fifo, File::from(master.try_clone()?), rx));
    Ok(Some(tx))
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
