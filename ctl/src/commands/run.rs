//! `berthctl run`: unpacks the image if needed, prepares the rootfs snapshot (on a remapped
//! parent with `--uidmap`, see [`super::userns`]), makes an OCI spec from the image config and
//! the flags, creates the container and its task, and attaches stdio through named fifos (or
//! runs detached).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use berth_proto::berth::services::unpack::v1::unpack_client::UnpackClient;
use berth_proto::berth::services::unpack::v1::UnpackRequest;
use berth_proto::containerd::services::containers::v1::containers_client::ContainersClient;
use berth_proto::containerd::services::containers::v1::{
    container, Container, CreateContainerRequest, DeleteContainerRequest,
};
use berth_proto::containerd::services::leases::v1::leases_client::LeasesClient;
use berth_proto::containerd::services::leases::v1::{
    CreateRequest as LeaseCreateRequest, DeleteRequest as LeaseDeleteRequest,
};
use berth_proto::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_proto::containerd::services::snapshots::v1::{PrepareSnapshotRequest, RemoveSnapshotRequest};
use berth_proto::containerd::services::tasks::v1::tasks_client::TasksClient;
use berth_proto::containerd::services::tasks::v1::*;
use clap::Args;
use serde_json::{json, Value};

use berth_proto::containerd::services::content::v1::content_client::ContentClient;
use berth_proto::containerd::services::content::v1::ReadContentRequest;
use berth_proto::containerd::services::images::v1::images_client::ImagesClient;
use berth_proto::containerd::services::images::v1::GetImageRequest;

use super::image::normalize_name;
use super::userns::{self, IdMapping, UserNamespace};
use crate::client::{status_error, Client};

/// Type URL of an OCI runtime spec in `Any`, as containerd clients use.
pub const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// Type URL of an OCI process spec in `Any`.
pub const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
/// Runtime name recorded on containers (what containerd clients expect).
pub const RUNTIME_NAME: &str = "io.containerd.runc.v2";

/// Arguments of `berthctl run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Remove the task, container and snapshot when the process exits.
    #[arg(long)]
    pub rm: bool,
    /// Allocate a terminal.
    #[arg(long, short = 't')]
    pub tty: bool,
    /// Run in the background and print the container id.
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// Environment variables (KEY=VALUE), added to the image's.
    #[arg(long = "env", short = 'e')]
    pub env: Vec<String>,
    /// Bind mounts: `type=bind,src=/host,dst=/ctr[,options=ro:rbind]` or `/host:/ctr[:ro]`.
    #[arg(long = "mount")]
    pub mounts: Vec<String>,
    /// Memory limit in bytes (suffixes k, m, g accepted).
    #[arg(long)]
    pub memory_limit: Option<String>,
    /// CPUs (quota over a 100 ms period), e.g. 0.5.
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Maximum number of processes.
    #[arg(long)]
    pub pids_limit: Option<i64>,
    /// User as uid[:gid] (names are not resolved).
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// Working directory.
    #[arg(long)]
    pub cwd: Option<String>,
    /// Hostname (defaults to the container id).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Share the host's network namespace.
    #[arg(long)]
    pub net_host: bool,
    /// Run in a user namespace: SIZE uids from CONTAINER map to host uids from HOST (e.g.
    /// 0:100000:65536); the rootfs is a copy of the image's owned by the mapped ids.
    #[arg(long, value_name = "CONTAINER:HOST:SIZE")]
    pub uidmap: Option<IdMapping>,
    /// The user namespace's gid mapping, like --uidmap (default: the --uidmap range).
    #[arg(long, value_name = "CONTAINER:HOST:SIZE")]
    pub gidmap: Option<IdMapping>,
    /// Snapshotter.
    #[arg(long, default_value = "overlayfs")]
    pub snapshotter: String,
    /// Image.
    pub image: String,
    /// Container id.
    pub id: String,
    /// Command and arguments (default: the image's Entrypoint + Cmd).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

fn parse_bytes(s: &str) -> Result<i64> {
    let s = s.trim().to_ascii_lowercase();
    let (num, mult) = match s.chars().last() {
        Some('k') => (&s[..s.len() - 1], 1i64 << 10),
        Some('m') => (&s[..s.len() - 1], 1 << 20),
        Some('g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s.as_str(), 1),
    };
    let n: i64 = num.trim_end_matches('b').parse().with_context(|| format!("bad size {s:?}"))?;
    Ok(n * mult)
}

fn parse_mount(s: &str) -> Result<Value> {
    let (mut src, mut dst, mut options) = (None, None, vec!["rbind".to_string()]);
    if s.contains('=') {
        for kv in s.split(',') {
            let (k, v) = kv.split_once('=').ok_or_else(|| anyhow!("bad mount field {kv:?}"))?;
            match k {
                "type" if v == "bind" => {}
                "type" => bail!("only bind mounts are supported, not {v:?}"),
                "src" | "source" => src = Some(v.to_string()),
                "dst" | "destination" | "target" => dst = Some(v.to_string()),
                "options" => options.extend(v.split(':').map(String::from)),
                other => bail!("unknown mount field {other:?}"),
            }
        }
    } else {
        let parts: Vec<&str> = s.split(':').collect();
        match parts.as_slice() {
            [a, b] => (src, dst) = (Some(a.to_string()), Some(b.to_string())),
            [a, b, o] => {
                (src, dst) = (Some(a.to_string()), Some(b.to_string()));
                options.extend(o.split(',').map(String::from));
            }
            _ => bail!("mount {s:?} must be SRC:DST[:OPTIONS] or type=bind,src=..,dst=.."),
        }
    }
    let src = src.ok_or_else(|| anyhow!("mount {s:?} has no src"))?;
    let dst = dst.ok_or_else(|| anyhow!("mount {s:?} has no dst"))?;
    if !options.iter().any(|o| o == "ro" || o == "rw") {
        options.push("rw".into());
    }
    Ok(json!({ "destination": dst, "type": "bind", "source": src, "options": options }))
}

/// The OCI spec of a container: Docker's defaults (`berth_oci`), the image config, then the
/// flags.
pub fn make_spec(ns: &str, args: &RunArgs, image_config: &Value) -> Result<Value> {
    let cfg = &image_config["config"];
    let strings = |v: &Value| -> Vec<String> {
        v.as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect()).unwrap_or_default()
    };
    let mut process_args = strings(&cfg["Entrypoint"]);
    if args.args.is_empty() {
        process_args.extend(strings(&cfg["Cmd"]));
    } else {
        process_args.extend(args.args.iter().cloned());
    }
    if process_args.is_empty() {
        bail!("no command: the image has no Entrypoint or Cmd and none was given");
    }
    let mut env = strings(&cfg["Env"]);
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    for e in &args.env {
        let key = e.split('=').next().unwrap_or_default();
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(e.clone());
    }
    if args.tty {
        env.push("TERM=xterm".into());
    }
    let cwd = args.cwd.clone().or_else(|| cfg["WorkingDir"].as_str().filter(|s| !s.is_empty()).map(String::from));
    let user = args.user.clone().or_else(|| cfg["User"].as_str().filter(|s| !s.is_empty()).map(String::from));
    let (uid, gid) = match user.as_deref() {
        None => (0u32, 0u32),
        Some(u) => {
            let (a, b) = u.split_once(':').unwrap_or((u, u));
            let uid = a.parse().map_err(|_| anyhow!("user {u:?}: only numeric uid[:gid] is supported"))?;
            let gid =
                if b == a && !u.contains(':') { uid } else { b.parse().map_err(|_| anyhow!("group of {u:?}"))? };
            (uid, gid)
        }
    };
    let caps = berth_oci::DEFAULT_CAPS;
    let userns = UserNamespace::from_flags(args.uidmap, args.gidmap)?;
    let mut mounts = berth_oci::default_mounts();
    if userns.is_some() && args.net_host {
        // A user namespace cannot mount sysfs for a network namespace it does not own: bind
        // the host's instead, as Docker does.
        for m in mounts.iter_mut().filter(|m| m["type"] == "sysfs") {
            *m = json!({"destination": "/sys", "type": "bind", "source": "/sys",
                "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]});
        }
    }
    for m in &args.mounts {
        mounts.push(parse_mount(m)?);
    }
    if args.net_host {
        for f in ["/etc/hosts", "/etc/resolv.conf"] {
            if Path::new(f).exists() {
                mounts.push(json!({"destination": f, "type": "bind", "source": f, "options": ["rbind", "ro"]}));
            }
        }
    }
    let mut resources = json!({"devices": [{"allow": false, "access": "rwm"}]});
    if let Some(m) = &args.memory_limit {
        let limit = parse_bytes(m)?;
        resources["memory"] = json!({"limit": limit, "swap": limit});
    }
    if let Some(c) = args.cpus {
        if c <= 0.0 {
            bail!("--cpus must be positive");
        }
        resources["cpu"] = json!({"quota": (c * 100_000.0) as i64, "period": 100_000u64});
    }
    if let Some(p) = args.pids_limit {
        resources["pids"] = json!({"limit": p});
    }
    let hostname = args.hostname.clone().unwrap_or_else(|| args.id.clone());
    let mut spec = json!({
        "ociVersion": "1.1.0",
        "process": {
            "terminal": args.tty,
            "user": {"uid": uid, "gid": gid},
            "args": process_args,
            "env": env,
            "cwd": cwd.unwrap_or_else(|| "/".into()),
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": berth_oci::default_rlimits(),
            "noNewPrivileges": true,
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": hostname,
        "mounts": mounts,
        "linux": {
            "resources": resources,
            "cgroupsPath": format!("/berth/{ns}/{}", args.id),
            "namespaces": berth_oci::default_namespaces(args.net_host),
            "seccomp": berth_oci::default_profile(caps),
            "maskedPaths": berth_oci::masked_paths(),
            "readonlyPaths": berth_oci::readonly_paths(),
        },
    });
    if let Some(ns) = userns {
        ns.apply_to_spec(&mut spec);
    }
    Ok(spec)
}

/// Named fifos for one process's stdio in a private temp directory, removed on drop.
pub struct Fifos {
    dir: PathBuf,
    /// stdin fifo path.
    pub stdin: String,
    /// stdout fifo path.
    pub stdout: String,
    /// stderr fifo path.
    pub stderr: String,
}

impl Fifos {
    /// Creates the three fifos for process `name`.
    pub fn new(name: &str) -> Result<Fifos> {
        let dir = std::env::temp_dir().join(format!("berthctl-{}-{name}-{}", std::process::id(), rand_suffix()));
        std::fs::create_dir_all(&dir)?;
        let mut paths = Vec::new();
        for n in ["stdin", "stdout", "stderr"] {
            let p = dir.join(n);
            let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes())?;
            // SAFETY: mkfifo with a valid C string.
            if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
                return Err(std::io::Error::last_os_error()).context("mkfifo");
            }
            paths.push(p.display().to_string());
        }
        Ok(Fifos { dir, stdin: paths[0].clone(), stdout: paths[1].clone(), stderr: paths[2].clone() })
    }
}

impl Drop for Fifos {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A short suffix that differs between calls, for private names.
pub(crate) fn rand_suffix() -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{t:x}")
}

/// Copies our stdio to and from a process's fifos until its stdout and stderr close. With
/// `stdin`, our stdin is copied in and the task's stdin closed (CloseIO) at its end.
pub async fn attach(
    client: &Client,
    fifos_stdin: Option<&str>,
    stdout: &str,
    stderr: &str,
    id: &str,
    exec_id: &str,
) -> Result<tokio::task::JoinHandle<()>> {
    use tokio::io::AsyncWriteExt;
    let out = tokio::fs::OpenOptions::new().read(true).open(stdout).await?;
    let err = if stderr.is_empty() { None } else { Some(tokio::fs::OpenOptions::new().read(true).open(stderr).await?) };
    if let Some(path) = fifos_stdin {
        let path = path.to_string();
        let mut tasks = TasksClient::new(client.channel.clone());
        let req = client.request(CloseIoRequest { container_id: id.into(), exec_id: exec_id.into(), stdin: true });
        tokio::spawn(async move {
            if let Ok(mut w) = tokio::fs::OpenOptions::new().write(true).open(&path).await {
                let mut stdin = tokio::io::stdin();
                let _ = tokio::io::copy(&mut stdin, &mut w).await;
                let _ = w.shutdown().await;
            }
            let _ = tasks.close_io(req).await;
        });
    }
    Ok(tokio::spawn(async move {
        let a = tokio::spawn(async move {
            let mut out = out;
            let _ = tokio::io::copy(&mut out, &mut tokio::io::stdout()).await;
        });
        let b = tokio::spawn(async move {
            if let Some(mut err) = err {
                let _ = tokio::io::copy(&mut err, &mut tokio::io::stderr()).await;
            }
        });
        let _ = a.await;
        let _ = b.await;
        let _ = tokio::io::stdout().flush().await;
    }))
}

async fn read_json(client: &Client, digest: &str) -> Result<Value> {
    let mut content = ContentClient::new(client.channel.clone());
    let req = ReadContentRequest { digest: digest.into(), offset: 0, size: 0 };
    let mut stream = content.read(client.request(req)).await.map_err(status_error)?.into_inner();
    let mut data = Vec::new();
    while let Some(chunk) = stream.message().await.map_err(status_error)? {
        data.extend_from_slice(&chunk.data);
        if data.len() > 4 << 20 {
            bail!("blob {digest} is too large for an image document");
        }
    }
    serde_json::from_slice(&data).with_context(|| format!("blob {digest} is not JSON"))
}

/// The config of image `name` for this host: follows an index to the manifest of the host's
/// os and architecture.
async fn image_config(client: &Client, name: &str) -> Result<Value> {
    let mut images = ImagesClient::new(client.channel.clone());
    let image = images
        .get(client.request(GetImageRequest { name: name.into() }))
        .await
        .map_err(|s| anyhow!("image {name:?}: {}", status_error(s)))?
        .into_inner()
        .image
        .ok_or_else(|| anyhow!("image {name:?}: not found"))?;
    let mut digest = image.target.map(|t| t.digest).ok_or_else(|| anyhow!("image {name} has no target"))?;
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    for _ in 0..4 {
        let doc = read_json(client, &digest).await?;
        if let Some(config) = doc["config"]["digest"].as_str() {
            return read_json(client, config).await;
        }
        let manifests = doc["manifests"].as_array().ok_or_else(|| anyhow!("{digest} is neither manifest nor index"))?;
        let pick = manifests
            .iter()
            .find(|m| {
                m["platform"].is_null() || (m["platform"]["os"] == "linux" && m["platform"]["architecture"] == arch)
            })
            .ok_or_else(|| anyhow!("image {name} has no manifest for linux/{arch}"))?;
        digest = pick["digest"].as_str().unwrap_or_default().to_string();
    }
    bail!("image {name}: indexes nest too deep")
}

/// Puts our terminal in raw mode until dropped.
pub struct RawTerminal(Option<libc::termios>);

impl RawTerminal {
    /// Raw mode on stdin when it is a terminal; does nothing otherwise.
    pub fn enter() -> RawTerminal {
        // SAFETY: termios calls on fd 0 with valid pointers.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::isatty(0) != 1 || libc::tcgetattr(0, &mut t) != 0 {
                return RawTerminal(None);
            }
            let saved = t;
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(0, libc::TCSANOW, &t);
            RawTerminal(Some(saved))
        }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(t) = self.0 {
            // SAFETY: restoring the saved termios of fd 0.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
        }
    }
}

/// Our terminal's size as (width, height), if stdin is a terminal.
fn winsize() -> Option<(u32, u32)> {
    // SAFETY: TIOCGWINSZ into a zeroed winsize.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        (libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 && ws.ws_col > 0)
            .then_some((ws.ws_col as u32, ws.ws_row as u32))
    }
}

/// Sends our terminal size to the process now and on every SIGWINCH.
pub fn forward_resize(client: &Client, id: &str, exec_id: &str) {
    let mut tasks = TasksClient::new(client.channel.clone());
    let make = {
        let (id, exec_id) = (id.to_string(), exec_id.to_string());
        move |(width, height): (u32, u32)| ResizePtyRequest {
            container_id: id.clone(),
            exec_id: exec_id.clone(),
            width,
            height,
        }
    };
    let ns_req = client.request(());
    let md = ns_req.metadata().clone();
    tokio::spawn(async move {
        let Ok(mut sig) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()) else { return };
        loop {
            if let Some(size) = winsize() {
                let mut req = tonic::Request::new(make(size));
                *req.metadata_mut() = md.clone();
                let _ = tasks.resize_pty(req).await;
            }
            if sig.recv().await.is_none() {
                return;
            }
        }
    });
}

/// Removes the task, then the container and its snapshot (at once: neither needs the other
/// gone first). Each step is best effort.
pub async fn cleanup(client: &Client, id: &str, snapshotter: &str) {
    let mut tasks = TasksClient::new(client.channel.clone());
    let _ = tasks.delete(client.request(DeleteTaskRequest { container_id: id.into() })).await;
    let mut containers = ContainersClient::new(client.channel.clone());
    let mut snaps = SnapshotsClient::new(client.channel.clone());
    let _ = tokio::join!(
        containers.delete(client.request(DeleteContainerRequest { id: id.into() })),
        snaps.remove(client.request(RemoveSnapshotRequest { snapshotter: snapshotter.into(), key: id.into() })),
    );
}

/// Exits with a process's exit code (also 0: a stdin copy may still block a runtime thread).
pub fn exit_with(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}

/// Runs `berthctl run`; returns the exit code to exit with.
pub async fn run(client: &Client, namespace: &str, args: RunArgs) -> Result<i32> {
    let name = normalize_name(&args.image)?;
    // The image's config, its unpacked chain and a lease do not depend on each other: the
    // three requests go out at once.
    let unpack = async {
        let mut unpack = UnpackClient::new(client.channel.clone());
        let req = UnpackRequest { image: name.clone(), snapshotter: args.snapshotter.clone(), platform: None };
        Ok::<_, anyhow::Error>(unpack.unpack(client.request(req)).await.map_err(status_error)?.into_inner().chain_id)
    };
    // A lease holds the new snapshot (and a remapped parent) until the container record does:
    // a collection scheduled by another delete must not take them in between.
    let lease = async {
        let mut leases = LeasesClient::new(client.channel.clone());
        let expire = super::leases::rfc3339(std::time::SystemTime::now() + std::time::Duration::from_secs(3600));
        let req = LeaseCreateRequest {
            id: String::new(),
            labels: HashMap::from([("containerd.io/gc.expire".to_string(), expire)]),
        };
        Ok::<_, anyhow::Error>(
            leases
                .create(client.request(req))
                .await
                .map_err(status_error)?
                .into_inner()
                .lease
                .map(|l| l.id)
                .unwrap_or_default(),
        )
    };
    let (config, chain, lease) = tokio::join!(image_config(client, &name), unpack, lease);
    let lease = lease?;
    let created = async {
        let (config, chain) = (config?, chain?);
        let spec = make_spec(namespace, &args, &config)?;
        let parent = match UserNamespace::from_flags(args.uidmap, args.gidmap)? {
            Some(ns) => userns::remapped_parent(client, &args.snapshotter, &chain, &ns, &lease).await?,
            None => chain,
        };
        create_container(client, &args, &name, parent, &spec, &lease).await
    }
    .await;
    // The container record holds the snapshot now: the lease goes while the task starts.
    let mut leases = LeasesClient::new(client.channel.clone());
    let release = client.request(LeaseDeleteRequest { id: lease, sync: false });
    let released = tokio::spawn(async move { leases.delete(release).await });
    let result = match created {
        Ok(()) => match start_task(client, &args).await {
            Ok(code) => Ok(code),
            Err(e) => {
                cleanup(client, &args.id, &args.snapshotter).await;
                Err(e)
            }
        },
        Err(e) => Err(e),
    };
    let _ = released.await;
    result
}

/// Prepares the rootfs snapshot on `parent` (within `lease`) and creates the container record.
async fn create_container(
    client: &Client,
    args: &RunArgs,
    name: &str,
    parent: String,
    spec: &Value,
    lease: &str,
) -> Result<()> {
    let mut snaps = SnapshotsClient::new(client.channel.clone());
    let mut req = client.request(PrepareSnapshotRequest {
        snapshotter: args.snapshotter.clone(),
        key: args.id.clone(),
        parent,
        labels: HashMap::new(),
    });
    if let Ok(v) = lease.parse() {
        req.metadata_mut().insert("containerd-lease", v);
    }
    snaps.prepare(req).await.map_err(status_error).context("prepare rootfs snapshot")?;
    let mut containers = ContainersClient::new(client.channel.clone());
    let c = Container {
        id: args.id.clone(),
        image: name.to_string(),
        runtime: Some(container::Runtime { name: RUNTIME_NAME.into(), options: None }),
        spec: Some(prost_types::Any { type_url: SPEC_TYPE_URL.into(), value: serde_json::to_vec(&spec)? }),
        snapshotter: args.snapshotter.clone(),
        snapshot_key: args.id.clone(),
        ..Default::default()
    };
    if let Err(s) = containers.create(client.request(CreateContainerRequest { container: Some(c) })).await {
        let _ = snaps
            .remove(
                client.request(RemoveSnapshotRequest { snapshotter: args.snapshotter.clone(), key: args.id.clone() }),
            )
            .await;
        return Err(status_error(s));
    }
    Ok(())
}

async fn start_task(client: &Client, args: &RunArgs) -> Result<i32> {
    let mut tasks = TasksClient::new(client.channel.clone());
    let fifos = if args.detach { None } else { Some(Fifos::new(&args.id)?) };
    let (stdin, stdout, mut stderr) = match &fifos {
        Some(f) => (f.stdin.clone(), f.stdout.clone(), f.stderr.clone()),
        None => Default::default(),
    };
    if args.tty {
        // A terminal merges stderr into stdout.
        stderr.clear();
    }
    let create = CreateTaskRequest {
        container_id: args.id.clone(),
        stdin: stdin.clone(),
        stdout: stdout.clone(),
        stderr: stderr.clone(),
        terminal: args.tty,
        ..Default::default()
    };
    tasks.create(client.request(create)).await.map_err(status_error)?;
    let io = match &fifos {
        Some(f) => Some(attach(client, Some(&f.stdin), &f.stdout, &stderr, &args.id, "").await?),
        None => None,
    };
    let raw = (args.tty && !args.detach).then(RawTerminal::enter);
    if let Some((width, height)) = winsize().filter(|_| args.tty) {
        // The pty exists from Create on: size it before the process starts.
        let req = ResizePtyRequest { container_id: args.id.clone(), exec_id: String::new(), width, height };
        let _ = tasks.resize_pty(client.request(req)).await;
    }
    let mut waiter = TasksClient::new(client.channel.clone());
    let wait_req = client.request(WaitRequest { container_id: args.id.clone(), exec_id: String::new() });
    let wait = tokio::spawn(async move { waiter.wait(wait_req).await });
    tasks
        .start(client.request(StartRequest { container_id: args.id.clone(), exec_id: String::new() }))
        .await
        .map_err(status_error)?;
    if args.detach {
        println!("{}", args.id);
        return Ok(0);
    }
    if args.tty {
        forward_resize(client, &args.id, "");
    }
    let code = wait.await?.map_err(status_error)?.into_inner().exit_status;
    if let Some(io) = io {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), io).await;
    }
    drop(raw);
    drop(fifos);
    if args.rm {
        cleanup(client, &args.id, &args.snapshotter).await;
    }
    Ok(code as i32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        run: RunArgs,
    }

    #[test]
    fn spec_from_image_config_and_flags() {
        let t = T::parse_from([
            "x",
            "--env",
            "A=2",
            "--memory-limit",
            "64m",
            "--cpus",
            "0.5",
            "-u",
            "1000:100",
            "img",
            "c1",
            "echo",
            "hi",
        ]);
        let cfg =
            json!({"config": {"Entrypoint": ["/bin/env"], "Cmd": ["x"], "Env": ["A=1", "B=1"], "WorkingDir": "/w"}});
        let spec = make_spec("default", &t.run, &cfg).unwrap();
        assert_eq!(spec["process"]["args"], json!(["/bin/env", "echo", "hi"]));
        let env = spec["process"]["env"].as_array().unwrap();
        assert!(env.contains(&json!("A=2")) && env.contains(&json!("B=1")) && !env.contains(&json!("A=1")));
        assert_eq!(spec["process"]["cwd"], "/w");
        assert_eq!(spec["process"]["user"], json!({"uid": 1000, "gid": 100}));
        assert_eq!(spec["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(spec["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(spec["linux"]["cgroupsPath"], "/berth/default/c1");
        assert_eq!(spec["hostname"], "c1");
    }

    #[test]
    fn user_namespace_flags() {
        let t = T::parse_from(["x", "--uidmap", "0:100000:65536", "--net-host", "img", "c1"]);
        let spec = make_spec("default", &t.run, &json!({"config": {"Cmd": ["sh"]}})).unwrap();
        assert!(spec["linux"]["namespaces"].as_array().unwrap().contains(&json!({"type": "user"})));
        assert_eq!(spec["linux"]["gidMappings"], json!([{"containerID": 0, "hostID": 100000, "size": 65536}]));
        let sys = spec["mounts"].as_array().unwrap().iter().find(|m| m["destination"] == "/sys").unwrap();
        assert_eq!(sys["type"], "bind", "no sysfs mount for the host's network from a user namespace");
        let spec = make_spec("default", &T::parse_from(["x", "img", "c1"]).run, &json!({"config": {"Cmd": ["sh"]}}));
        assert!(spec.unwrap()["linux"].get("uidMappings").is_none());
        let err = T::try_parse_from(["x", "--uidmap", "0:100000", "img", "c1"]).err().unwrap().to_string();
        assert!(err.contains("expected CONTAINER:HOST:SIZE"), "{err}");
        let t = T::parse_from(["x", "--gidmap", "0:100000:65536", "img", "c1"]);
        let err = make_spec("default", &t.run, &json!({"config": {"Cmd": ["sh"]}})).unwrap_err().to_string();
        assert!(err.contains("--gidmap needs --uidmap"), "{err}");
    }

    #[test]
    fn mounts_parse() {
        let m = parse_mount("/a:/b:ro").unwrap();
        assert_eq!(m["options"], json!(["rbind", "ro"]));
        let m = parse_mount("type=bind,src=/a,dst=/b").unwrap();
        assert_eq!(m["destination"], "/b");
        assert!(parse_mount("type=tmpfs,dst=/x").is_err());
    }
}
