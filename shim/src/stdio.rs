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
