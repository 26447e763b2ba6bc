//! Running berthd: directories, the root lock, the server uuid, the unix socket, the gRPC
//! server with reflection, and graceful shutdown on SIGTERM/SIGINT.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::service::RoutesBuilder;

use crate::builtin::{GRPC, PLUGINS};
use crate::config::Config;
use crate::registry::{self, DaemonContext};
use crate::services::{GrpcLimits, GrpcService, NAMESPACE_HEADER};

/// How long in-flight requests get to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Creates `dir` (and parents) with mode 0711 if missing.
fn make_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o711).create(dir).with_context(|| format!("create {}", dir.display()))
}

/// Exclusive lock on the root, held for the daemon's lifetime.
pub struct RootLock {
    _file: File,
}

impl RootLock {
    /// Locks `root/berthd.lock`; fails, naming the holder, when another berthd has it.
    pub fn acquire(root: &Path) -> Result<RootLock> {
        let path = root.join("berthd.lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("open {}", path.display()))?;
        // SAFETY: flock on a descriptor we own; no memory is touched.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                bail!(
                    "another berthd (pid {}) is already using root {}",
                    holder.trim().parse::<u32>().map_or("unknown".to_string(), |p| p.to_string()),
                    root.display()
                );
            }
            return Err(err).with_context(|| format!("lock {}", path.display()));
        }
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        Ok(RootLock { _file: file })
    }
}

/// Reads the server uuid from `root/uuid`, creating it (atomically) on first start.
pub fn load_uuid(root: &Path) -> Result<String> {
    let path = root.join("uuid");
    match fs::read_to_string(&path) {
        Ok(s) if uuid::Uuid::parse_str(s.trim()).is_ok() => return Ok(s.trim().to_string()),
        Ok(_) => tracing::warn!(path = %path.display(), "server uuid file is corrupt; writing a new one"),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    }
    let id = uuid::Uuid::new_v4().to_string();
    let tmp = root.join("uuid.tmp");
    {
        let mut f = File::create(&tmp).with_context(|| format!("write {}", tmp.display()))?;
        f.write_all(id.as_bytes())?;
        f.sync_all()?;
    }
    fs::rename(&tmp, &path).with_context(|| format!("rename to {}", path.display()))?;
    Ok(id)
}

/// Binds the socket at `path` with mode 0660, replacing a stale socket only when nothing
/// answers on it.
pub fn bind_socket(path: &Path, uid: u32, gid: u32) -> Result<UnixListener> {
    if let Some(parent) = path.parent() {
        make_dir(parent)?;
    }
    match fs::symlink_metadata(path) {
        Ok(meta) => {
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                bail!("{} exists and is not a socket; refusing to replace it", path.display());
            }
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => bail!("another daemon is already listening on {}", path.display()),
                Err(e) if e.kind() == ErrorKind::ConnectionRefused || e.kind() == ErrorKind::NotFound => {
                    tracing::info!(socket = %path.display(), "removing stale socket");
                    match fs::remove_file(path) {
                        Err(e) if e.kind() != ErrorKind::NotFound => {
                            return Err(e).with_context(|| format!("remove stale socket {}", path.display()))
                        }
                        _ => {}
                    }
                }
                Err(e) => return Err(e).with_context(|| format!("probe existing socket {}", path.display())),
            }
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("stat {}", path.display())),
    }
    let listener = UnixListener::bind(path).with_context(|| format!("listen on {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o660))?;
    // SAFETY: plain id getters.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    // Only root can give the socket away; an unprivileged daemon keeps its own ids when the
    // config leaves the defaults (root:root).
    let wants_other = (uid, gid) != (euid, egid);
    let unprivileged_default = euid != 0 && (uid, gid) == (0, 0);
    if wants_other && !unprivileged_default {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).with_context(|| format!("chown {}", path.display()))?;
    }
    Ok(listener)
}

/// SIGTERM and SIGINT handlers, installed before the socket exists so that a signal sent as
/// soon as the daemon answers is never met by the default action (death).
struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> Result<ShutdownSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(ShutdownSignals { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
    }

    /// Waits for either signal and names it.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Runs the daemon until a shutdown signal.
pub async fn run(config: Config) -> Result<()> {
    let mut signals = ShutdownSignals::install()?;
    let socket = config.socket_path()?;
    make_dir(&config.root)?;
    make_dir(&config.state)?;
    let root = fs::canonicalize(&config.root)?;
    let state = fs::canonicalize(&config.state)?;
    let _lock = RootLock::acquire(&root)?;
    let uuid = load_uuid(&root)?;
    let daemon = DaemonContext { root: root.clone(), state, address: socket.clone(), uuid };

    // Bind before loading plugins so a clash with another daemon fails fast; the guard removes
    // the socket on every exit path from here on.
    let listener = bind_socket(&socket, config.grpc.uid, config.grpc.gid)?;
    let _socket_guard = SocketGuard(socket.clone());
    let plugins = tokio::task::block_in_place(|| registry::init_all(PLUGINS, &config, &daemon))?;
    let limits =
        GrpcLimits { max_recv: config.grpc.max_recv_message_size, max_send: config.grpc.max_send_message_size };
    let mut routes = RoutesBuilder::default();
    // Both reflection versions advertise exactly the services being served.
    let mut reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(berth_proto::FILE_DESCRIPTOR_SET);
    let mut reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(berth_proto::FILE_DESCRIPTOR_SET);
    for (id, inst) in plugins.instances(GRPC) {
        let svc = inst.downcast::<GrpcService>().map_err(|_| anyhow::anyhow!("grpc plugin {id} is not a service"))?;
        (svc.register)(&mut routes, limits);
        reflection_v1 = reflection_v1.with_service_name(svc.name);
        reflection_v1alpha = reflection_v1alpha.with_service_name(svc.name);
    }
    routes.add_service(reflection_v1.build_v1()?);
    routes.add_service(reflection_v1alpha.build_v1alpha()?);

    tracing::info!(address = %socket.display(), root = %root.display(), version = crate::services::version::VERSION, "berthd serving");

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        .trace_fn(|req| {
            let ns = req.headers().get(NAMESPACE_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
            tracing::debug_span!("grpc", method = %req.uri().path(), namespace = %ns)
        })
        .add_routes(routes.routes())
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
            let _ = stop_rx.await;
        });
    tokio::pin!(server);

    let why = tokio::select! {
        res = &mut server => { res?; "server stopped" }
        sig = signals.recv() => sig,
    };
    tracing::info!(signal = why, "shutting down");
    let _ = stop_tx.send(());
    if tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await.is_err() {
        tracing::warn!("requests still running after {:?}; stopping anyway", SHUTDOWN_GRACE);
    }
    drop(plugins);
    tracing::info!("berthd stopped");
    Ok(())
}

/// Removes the daemon's socket when dropped.
struct SocketGuard(PathBuf);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_file(&self.0) {
            if e.kind() != ErrorKind::NotFound {
                tracing::warn!(socket = %self.0.display(), error = %e, "could not remove socket");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_is_stable() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_uuid(dir.path()).unwrap();
        assert_eq!(load_uuid(dir.path()).unwrap(), a);
        fs::write(dir.path().join("uuid"), "garbage").unwrap();
        assert_ne!(load_uuid(dir.path()).unwrap(), a);
    }

    #[test]
    fn second_lock_names_holder() {
        let dir = tempfile::tempdir().unwrap();
        let _held = RootLock::acquire(dir.path()).unwrap();
        let err = RootLock::acquire(dir.path()).err().unwrap().to_string();
        assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
    }

    #[tokio::test]
    async fn stale_socket_replaced_live_socket_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/x.sock");
        let first = bind_socket(&path, 0, 0).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let err = bind_socket(&path, 0, 0).err().unwrap().to_string();
        assert!(err.contains("already listening"), "{err}");
        drop(first); // leaves the socket file behind, like a crashed daemon
        assert!(path.exists());
        let _second = bind_socket(&path, 0, 0).unwrap();

        let file = dir.path().join("plain");
        fs::write(&file, "x").unwrap();
        assert!(bind_socket(&file, 0, 0).err().unwrap().to_string().contains("not a socket"));
    }
}
