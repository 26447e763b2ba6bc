//! berth-shim: one process per container. Started by berthd as
//! `berth-shim --namespace NS --id ID --bundle DIR`, it binds `DIR/shim.sock`, forks into its
//! own session (the parent prints the address and exits once the socket is bound), becomes a
//! child subreaper so the container's processes are reaped here, writes `address` and
//! `shim.pid` into DIR, and serves `berth.shim.v1.Task` on a single-threaded runtime.
//!
//! The fork happens before any thread exists; libcontainer's own forks run synchronously on
//! the runtime's only thread, so no reaping races them.

mod metrics;
mod oom;
mod stdio;
mod task;

use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::PathBuf;

use berth_proto::berth::shim::v1::task_server::TaskServer;

/// Command-line arguments.
struct Args {
    namespace: String,
    id: String,
    bundle: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let (mut ns, mut id, mut bundle) = (None, None, None);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--namespace" => ns = Some(value()?),
            "--id" => id = Some(value()?),
            "--bundle" => bundle = Some(PathBuf::from(value()?)),
            "--version" => {
                println!("berth-shim {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        namespace: ns.ok_or("--namespace is required")?,
        id: id.ok_or("--id is required")?,
        bundle: bundle.ok_or("--bundle is required")?,
    })
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("berth-shim: {e}");
            std::process::exit(2);
        }
    };
    let socket = args.bundle.join("shim.sock");
    let _ = std::fs::remove_file(&socket);
    let listener = match StdUnixListener::bind(&socket) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("berth-shim: bind {}: {e}", socket.display());
            std::process::exit(1);
        }
    };
    // SAFETY: single-threaded here; the child only continues into ordinary code.
    match unsafe { libc::fork() } {
        -1 => {
            eprintln!("berth-shim: fork: {}", std::io::Error::last_os_error());
            std::process::exit(1);
        }
        0 => {}
        _ => {
            println!("unix://{}", socket.display());
            std::process::exit(0);
        }
    }
    // SAFETY: plain syscalls in the freshly forked single-threaded child.
    unsafe {
        libc::setsid();
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    redirect_stdio(&args.bundle);
    let pid = std::process::id();
    let _ = std::fs::write(args.bundle.join("shim.pid"), pid.to_string());
    let _ = std::fs::write(args.bundle.join("address"), format!("unix://{}", socket.display()));

    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth-shim: runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(serve(args, listener));
    std::process::exit(code);
}

/// stdin from /dev/null, stdout and stderr to `bundle/shim.log`.
fn redirect_stdio(bundle: &std::path::Path) {
    use std::os::fd::AsRawFd;
    let null = std::fs::File::open("/dev/null");
    let log = std::fs::OpenOptions::new().create(true).append(true).open(bundle.join("shim.log"));
    // SAFETY: dup2 onto the standard fds of this process.
    unsafe {
        if let Ok(n) = &null {
            libc::dup2(n.as_raw_fd(), 0);
        }
        if let Ok(l) = &log {
            libc::dup2(l.as_raw_fd(), 1);
            libc::dup2(l.as_raw_fd(), 2);
        }
    }
}

async fn serve(args: Args, listener: StdUnixListener) -> i32 {
    if let Err(e) = listener.set_nonblocking(true) {
        eprintln!("berth-shim: socket: {e}");
        return 1;
    }
    let listener = match tokio::net::UnixListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("berth-shim: socket: {e}");
            return 1;
        }
    };
    let (service, shutdown) = task::TaskService::new(args.namespace, args.id, args.bundle);
    service.start_reaper();
    let server = tonic::transport::Server::builder()
        .add_service(TaskServer::new(service))
        .serve_with_incoming_shutdown(tokio_stream::wrappers::UnixListenerStream::new(listener), async move {
            let _ = shutdown.await;
        });
    match server.await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("berth-shim: serve: {e}");
            1
        }
    }
}
