//! User namespaces for `berthctl run`: the `--uidmap`/`--gidmap` mappings, their part of the
//! OCI spec, and the remapped rootfs parent — the image's chain committed once more with
//! every file's owner moved into the host range, so that files look root-owned inside.
//!
//! The remapped parent is the committed snapshot `<chain_id>-<hostuid>-<hostgid>` (the name
//! `ctr run --uidmap` gives it, so both clients share it), or, for mappings that do not
//! start at container id 0 or cover fewer than 65536 ids, `<chain_id>-<uidmap>-<gidmap>`
//! with the full `C:H:S` triples. It carries no `containerd.io/gc.root` label: containers'
//! snapshots keep it through their parent, and the collector takes it after the last of
//! them, as containerd does. While it is made and until the container's own snapshot exists
//! on it, the caller's lease holds it.

use std::collections::HashMap;
use std::ffi::CString;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use berth_proto::containerd::services::leases::v1::leases_client::LeasesClient;
use berth_proto::containerd::services::leases::v1::{AddResourceRequest, Resource};
use berth_proto::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_proto::containerd::services::snapshots::v1::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use serde_json::{json, Value};
use tonic::Code;

use crate::client::{status_error, Client};

/// One range of ids: `size` ids from `container` inside map to `host` onwards outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMapping {
    /// First id inside the container.
    pub container: u32,
    /// First id on the host.
    pub host: u32,
    /// Number of ids.
    pub size: u32,
}

impl FromStr for IdMapping {
    type Err = String;

    /// Parses `CONTAINER:HOST:SIZE`, as `ctr run --uidmap` takes it.
    fn from_str(s: &str) -> Result<IdMapping, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let [c, h, n] = parts.as_slice() else {
            return Err(format!("{s:?}: expected CONTAINER:HOST:SIZE, e.g. 0:100000:65536"));
        };
        let num = |what: &str, v: &str| {
            v.parse::<u32>().map_err(|_| format!("{s:?}: {what} {v:?} is not a number (expected CONTAINER:HOST:SIZE)"))
        };
        let m = IdMapping { container: num("CONTAINER", c)?, host: num("HOST", h)?, size: num("SIZE", n)? };
        if m.size == 0 {
            return Err(format!("{s:?}: SIZE must be at least 1"));
        }
        if m.container.checked_add(m.size - 1).is_none() || m.host.checked_add(m.size - 1).is_none() {
            return Err(format!("{s:?}: the range runs past the largest id"));
        }
        Ok(m)
    }
}

impl fmt::Display for IdMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.container, self.host, self.size)
    }
}

impl IdMapping {
    /// The host id of container id `id`, if the range holds it.
    pub fn host_id(&self, id: u32) -> Option<u32> {
        id.checked_sub(self.container).filter(|off| *off < self.size).map(|off| self.host + off)
    }

    /// The mapping as an OCI `LinuxIDMapping`.
    fn to_spec(self) -> Value {
        json!({"containerID": self.container, "hostID": self.host, "size": self.size})
    }

    /// Starts at container id 0 and covers at least the 16-bit ids images use.
    fn is_full_from_root(&self) -> bool {
        self.container == 0 && self.size >= 65536
    }
}

/// A container's uid and gid mappings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserNamespace {
    /// uid range.
    pub uids: IdMapping,
    /// gid range.
    pub gids: IdMapping,
}

impl UserNamespace {
    /// From the flags: `--gidmap` defaults to the `--uidmap` range; `--gidmap` alone is an
    /// error (the uids would stay the host's).
    pub fn from_flags(uidmap: Option<IdMapping>, gidmap: Option<IdMapping>) -> Result<Option<UserNamespace>> {
        match (uidmap, gidmap) {
            (None, None) => Ok(None),
            (Some(uids), gids) => Ok(Some(UserNamespace { uids, gids: gids.unwrap_or(uids) })),
            (None, Some(_)) => bail!("--gidmap needs --uidmap as well"),
        }
    }

    /// Adds the `user` namespace and `linux.uidMappings`/`gidMappings` to `spec`.
    pub fn apply_to_spec(&self, spec: &mut Value) {
        if let Some(ns) = spec["linux"]["namespaces"].as_array_mut() {
            ns.push(json!({"type": "user"}));
        }
        spec["linux"]["uidMappings"] = json!([self.uids.to_spec()]);
        spec["linux"]["gidMappings"] = json!([self.gids.to_spec()]);
    }

    /// The name of the remapped snapshot of `chain`.
    pub fn snapshot_name(&self, chain: &str) -> String {
        if self.uids.is_full_from_root() && self.gids.is_full_from_root() {
            format!("{chain}-{}-{}", self.uids.host, self.gids.host)
        } else {
            format!("{chain}-{}-{}", self.uids, self.gids)
        }
    }
}

fn with_lease<T>(client: &Client, msg: T, lease: &str) -> tonic::Request<T> {
    let mut req = client.request(msg);
    if let Ok(v) = lease.parse() {
        req.metadata_mut().insert("containerd-lease", v);
    }
    req
}

/// The remapped parent of `chain` for `userns`, made now if it does not exist yet. The
/// snapshot is added to `lease` first, so the collector cannot take an existing one before
/// the container's snapshot is prepared on it.
pub async fn remapped_parent(
    client: &Client,
    snapshotter: &str,
    chain: &str,
    userns: &UserNamespace,
    lease: &str,
) -> Result<String> {
    let name = userns.snapshot_name(chain);
    let mut leases = LeasesClient::new(client.channel.clone());
    let resource = Resource { id: name.clone(), r#type: format!("snapshots/{snapshotter}") };
    leases
        .add_resource(client.request(AddResourceRequest { id: lease.into(), resource: Some(resource) }))
        .await
        .map_err(status_error)
        .context("add the remapped snapshot to the lease")?;
    let mut snaps = SnapshotsClient::new(client.channel.clone());
    match snaps.stat(client.request(StatSnapshotRequest { snapshotter: snapshotter.into(), key: name.clone() })).await {
        Ok(_) => return Ok(name),
        Err(s) if s.code() == Code::NotFound => {}
        Err(s) => return Err(status_error(s)).context(format!("stat snapshot {name}")),
    }

    let key = format!("{name}-remap-{}-{}", std::process::id(), super::run::rand_suffix());
    let req = PrepareSnapshotRequest {
        snapshotter: snapshotter.into(),
        key: key.clone(),
        parent: chain.into(),
        labels: HashMap::new(),
    };
    let mounts = snaps
        .prepare(with_lease(client, req, lease))
        .await
        .map_err(status_error)
        .context("prepare the snapshot to remap")?
        .into_inner()
        .mounts;
    let mounts: Vec<berth_mount::Mount> = mounts
        .into_iter()
        .map(|m| berth_mount::Mount { kind: m.r#type, source: m.source, target: m.target, options: m.options })
        .collect();
    let ids = *userns;
    let done = tokio::task::spawn_blocking(move || remap_mounted(&mounts, &ids)).await;
    let done = match done {
        Ok(r) => r,
        Err(e) => Err(anyhow::anyhow!("remap thread: {e}")),
    };
    if let Err(e) = done {
        remove_snapshot(client, snapshotter, &key).await;
        return Err(e.context(format!("remap the files of {chain} to {}", userns.uids)));
    }
    let req = CommitSnapshotRequest {
        snapshotter: snapshotter.into(),
        name: name.clone(),
        key: key.clone(),
        labels: HashMap::new(),
    };
    match snaps.commit(with_lease(client, req, lease)).await {
        Ok(_) => Ok(name),
        // Another run made it meanwhile: use theirs.
        Err(s) if s.code() == Code::AlreadyExists => {
            remove_snapshot(client, snapshotter, &key).await;
            Ok(name)
        }
        Err(s) => {
            remove_snapshot(client, snapshotter, &key).await;
            Err(status_error(s)).context(format!("commit snapshot {name}"))
        }
    }
}

/// Removes snapshot `key`, best effort.
async fn remove_snapshot(client: &Client, snapshotter: &str, key: &str) {
    let mut snaps = SnapshotsClient::new(client.channel.clone());
    let _ =
        snaps.remove(client.request(RemoveSnapshotRequest { snapshotter: snapshotter.into(), key: key.into() })).await;
}

/// Mounts `mounts` in a private temporary directory, remaps the tree there and unmounts.
fn remap_mounted(mounts: &[berth_mount::Mount], userns: &UserNamespace) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("berthctl-remap-{}-{}", std::process::id(), super::run::rand_suffix()));
    std::fs::create_dir(&dir).with_context(|| format!("create {}", dir.display()))?;
    let result = (|| {
        let guard = berth_mount::MountGuard::mount(mounts, &dir).context("mount the snapshot to remap")?;
        remap_tree(&dir, userns)?;
        guard.unmount().context("unmount the remapped snapshot")?;
        Ok(())
    })();
    let _ = std::fs::remove_dir(&dir);
    result
}

/// Moves the owner of every file under `root` (and `root` itself) whose uid or gid lies in a
/// mapping to the matching host id; ids outside the mappings are left as they are. Symlinks
/// are not followed. Set-id bits, which chown clears on regular files, are put back, and file
/// capabilities, which it drops, are written back for the container's root.
pub fn remap_tree(root: &Path, userns: &UserNamespace) -> Result<()> {
    let mut stack: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let md = std::fs::symlink_metadata(&path).with_context(|| format!("stat {}", path.display()))?;
        if md.is_dir() {
            for entry in std::fs::read_dir(&path).with_context(|| format!("read {}", path.display()))? {
                stack.push(entry.with_context(|| format!("read {}", path.display()))?.path());
            }
        }
        remap_one(&path, &md, userns).with_context(|| format!("remap {}", path.display()))?;
    }
    Ok(())
}

const CAPS_XATTR: &str = "security.capability";

fn remap_one(path: &Path, md: &std::fs::Metadata, userns: &UserNamespace) -> Result<()> {
    let uid = userns.uids.host_id(md.uid());
    let gid = userns.gids.host_id(md.gid());
    if uid.is_none() && gid.is_none() {
        return Ok(());
    }
    let regular = md.is_file();
    let caps = if regular { get_xattr(path, CAPS_XATTR)? } else { None };
    std::os::unix::fs::lchown(path, uid, gid)?;
    if regular {
        let mode = md.mode() & 0o7777;
        if mode & (libc::S_ISUID | libc::S_ISGID) != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        }
        if let Some(raw) = caps {
            if let Some(v3) = userns.uids.host_id(0).and_then(|root| caps_for_root(&raw, root, &userns.uids)) {
                set_xattr(path, CAPS_XATTR, &v3)?;
            }
        }
    }
    Ok(())
}

const VFS_CAP_REVISION_MASK: u32 = 0xFF00_0000;
const VFS_CAP_REVISION_2: u32 = 0x0200_0000;
const VFS_CAP_REVISION_3: u32 = 0x0300_0000;

/// A `security.capability` value rewritten as revision 3 so that it applies inside the user
/// namespace whose root is host uid `root` (revision 2 values apply only where host root is
/// root). A revision 3 value keeps its root id, moved through `uids`. Other revisions: None.
pub fn caps_for_root(raw: &[u8], root: u32, uids: &IdMapping) -> Option<Vec<u8>> {
    let magic = u32::from_le_bytes(raw.get(..4)?.try_into().ok()?);
    let (body, rootid) = match (magic & VFS_CAP_REVISION_MASK, raw.len()) {
        (VFS_CAP_REVISION_2, 20) => (&raw[4..20], root),
        (VFS_CAP_REVISION_3, 24) => {
            let old = u32::from_le_bytes(raw[20..24].try_into().ok()?);
            (&raw[4..20], uids.host_id(old).unwrap_or(old))
        }
        _ => return None,
    };
    let mut out = Vec::with_capacity(24);
    out.extend_from_slice(&(VFS_CAP_REVISION_3 | (magic & !VFS_CAP_REVISION_MASK)).to_le_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&rootid.to_le_bytes());
    Some(out)
}

fn c_path(path: &Path) -> std::io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| std::io::Error::other("path contains NUL"))
}

fn get_xattr(path: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    let (p, n) = (c_path(path)?, CString::new(name)?);
    let mut buf = vec![0u8; 64];
    // SAFETY: valid C strings and a buffer of the given length.
    let len = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENODATA | libc::ENOTSUP) => Ok(None),
            _ => Err(e).with_context(|| format!("read {name}")),
        };
    }
    buf.truncate(len as usize);
    Ok(Some(buf))
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) -> Result<()> {
    let (p, n) = (c_path(path)?, CString::new(name)?);
    // SAFETY: valid C strings and a value buffer of the given length.
    let rc = unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("write {name}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_parse_with_clear_errors() {
        let m: IdMapping = "0:100000:65536".parse().unwrap();
        assert_eq!(m, IdMapping { container: 0, host: 100000, size: 65536 });
        assert_eq!(m.to_string(), "0:100000:65536");
        for (bad, want) in [
            ("0:100000", "expected CONTAINER:HOST:SIZE"),
            ("0:100000:1:2", "expected CONTAINER:HOST:SIZE"),
            ("a:1:1", "CONTAINER \"a\" is not a number"),
            ("0:-1:1", "HOST \"-1\" is not a number"),
            ("0:1:0", "SIZE must be at least 1"),
            ("0:4294967295:2", "past the largest id"),
        ] {
            let err = bad.parse::<IdMapping>().unwrap_err();
            assert!(err.contains(want), "{bad}: {err}");
        }
    }

    #[test]
    fn ids_move_only_inside_the_range() {
        let m = IdMapping { container: 10, host: 5000, size: 3 };
        assert_eq!([9, 10, 12, 13].map(|i| m.host_id(i)), [None, Some(5000), Some(5002), None]);
    }

    #[test]
    fn gidmap_defaults_to_uidmap_and_names_follow_ctr() {
        let u: IdMapping = "0:100000:65536".parse().unwrap();
        let g: IdMapping = "0:200000:65536".parse().unwrap();
        let ns = UserNamespace::from_flags(Some(u), None).unwrap().unwrap();
        assert_eq!(ns.gids, u);
        assert_eq!(ns.snapshot_name("sha256:ab"), "sha256:ab-100000-100000");
        let ns = UserNamespace::from_flags(Some(u), Some(g)).unwrap().unwrap();
        assert_eq!(ns.snapshot_name("sha256:ab"), "sha256:ab-100000-200000");
        let small = UserNamespace::from_flags(Some("1:100000:10".parse().unwrap()), None).unwrap().unwrap();
        assert_eq!(small.snapshot_name("c"), "c-1:100000:10-1:100000:10");
        assert!(UserNamespace::from_flags(None, Some(g)).is_err());
        assert_eq!(UserNamespace::from_flags(None, None).unwrap(), None);

        let mut spec = json!({"linux": {"namespaces": [{"type": "pid"}]}});
        ns.apply_to_spec(&mut spec);
        assert_eq!(spec["linux"]["namespaces"][1]["type"], "user");
        assert_eq!(spec["linux"]["uidMappings"], json!([{"containerID": 0, "hostID": 100000, "size": 65536}]));
        assert_eq!(spec["linux"]["gidMappings"][0]["hostID"], 200000);
    }

    #[test]
    fn file_capabilities_become_revision_3_for_the_container_root() {
        let m = IdMapping { container: 0, host: 100000, size: 65536 };
        let mut v2 = (VFS_CAP_REVISION_2 | 1).to_le_bytes().to_vec();
        v2.extend_from_slice(&[0x00, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let v3 = caps_for_root(&v2, 100000, &m).unwrap();
        assert_eq!(v3.len(), 24);
        assert_eq!(u32::from_le_bytes(v3[..4].try_into().unwrap()), VFS_CAP_REVISION_3 | 1);
        assert_eq!(&v3[4..20], &v2[4..20]);
        assert_eq!(u32::from_le_bytes(v3[20..].try_into().unwrap()), 100000);
        let mut other = v3.clone();
        other[20..].copy_from_slice(&7u32.to_le_bytes());
        assert_eq!(u32::from_le_bytes(caps_for_root(&other, 100000, &m).unwrap()[20..].try_into().unwrap()), 100007);
        assert_eq!(caps_for_root(&[1, 0, 0, 1], 100000, &m), None);
    }

    #[test]
    fn tree_remap_moves_owners_and_keeps_set_id_bits() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: remapping a tree needs root (chown)");
            return;
        }
        let dir = std::env::temp_dir().join(format!("berthctl-remap-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("d")).unwrap();
        std::fs::write(dir.join("d/suid"), b"x").unwrap();
        std::fs::set_permissions(dir.join("d/suid"), std::fs::Permissions::from_mode(0o4755)).unwrap();
        std::fs::write(dir.join("far"), b"x").unwrap();
        std::os::unix::fs::lchown(dir.join("far"), Some(70000), Some(70000)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.join("link")).unwrap();
        std::fs::write(dir.join("ping"), b"x").unwrap();
        let mut v2 = (VFS_CAP_REVISION_2 | 1).to_le_bytes().to_vec();
        v2.extend_from_slice(&[0x00, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // CAP_NET_RAW
        let with_caps = set_xattr(&dir.join("ping"), CAPS_XATTR, &v2).is_ok();
        let u: IdMapping = "0:100000:65536".parse().unwrap();
        let ns = UserNamespace { uids: u, gids: "0:200000:65536".parse().unwrap() };
        remap_tree(&dir, &ns).unwrap();
        let md = |p: &str| std::fs::symlink_metadata(dir.join(p)).unwrap();
        assert_eq!((md("").uid(), md("d").gid()), (100000, 200000));
        assert_eq!((md("d/suid").uid(), md("d/suid").mode() & 0o7777), (100000, 0o4755));
        assert_eq!(md("far").uid(), 70000, "ids outside the mapping stay");
        assert_eq!(md("link").uid(), 100000);
        if with_caps {
            let caps = get_xattr(&dir.join("ping"), CAPS_XATTR).unwrap().expect("file capabilities kept");
            assert_eq!(caps, caps_for_root(&v2, 100000, &u).unwrap());
        }
        assert_eq!(std::fs::metadata("/etc/passwd").unwrap().uid(), 0, "symlinks are not followed");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
