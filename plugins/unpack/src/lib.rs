//! Unpacking an image into a snapshotter: resolve the image (index → the host's manifest →
//! config), compute the layers' chain IDs, skip the bottom of the chain that is already
//! unpacked, extract the rest, and commit each layer as the snapshot named by its chain ID.
//!
//! With overlayfs every missing layer is extracted **at the same time**, each into its own
//! staged directory (whiteouts become overlay whiteouts, so a layer needs nothing from the
//! layers below it), on a small pool of threads; the layers are then committed bottom first.
//! Other snapshotters (native) go layer by layer: prepare on the parent, apply with deletions,
//! commit.
//!
//! Two unpacks of images sharing layers never extract a chain twice: each chain ID is locked
//! for the duration, and an unpack re-checks what exists once it holds the locks.
//!
//! Everything runs within a lease (the caller's or a temporary one), so the garbage collector
//! cannot take a fresh snapshot before the image's config blob is labelled with
//! `containerd.io/gc.ref.snapshot.<snapshotter>` = top chain ID, which keeps the snapshots
//! alive for as long as the image is; each layer blob gets `containerd.io/uncompressed`.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::sync::{Arc, Mutex, Weak};
use std::thread;
use std::time::{Duration, Instant};

use berth_content::{BlobReader, ContentStore};
use berth_core::descriptor::is_index;
use berth_core::image::{chain_ids, ImageConfig, Index, Manifest, MAX_DOCUMENT_SIZE};
use berth_core::{Descriptor, Digest, Error, Platform, Result};
use berth_diff::{apply, syncfs, ApplyOptions, WhiteoutMode};
use berth_metadata::{MetadataStore, EXPIRE_LABEL};
use berth_snapshots::{CreateOptions, Snapshotter, StagedLayer};
use sha2::Digest as _;

/// Label on the config blob naming the top snapshot of the unpacked image.
pub fn gc_snapshot_label(snapshotter: &str) -> String {
    format!("containerd.io/gc.ref.snapshot.{snapshotter}")
}
/// Label on a layer blob naming its uncompressed digest.
pub const UNCOMPRESSED_LABEL: &str = "containerd.io/uncompressed";

/// What an unpack did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackOutcome {
    /// Chain ID of the top layer: the parent for a container's rootfs.
    pub chain_id: Digest,
    /// Layers in the image.
    pub layers: usize,
    /// Layers extracted by this call (the others existed).
    pub extracted: usize,
    /// Compressed bytes read.
    pub bytes: u64,
    /// Wall time.
    pub duration: Duration,
}

/// One layer to unpack.
struct LayerJob {
    blob: Descriptor,
    digest: Digest,
    diff_id: Digest,
    chain_id: Digest,
}

/// Reads a content blob sequentially through positional reads.
struct BlobStream {
    blob: BlobReader,
    pos: u64,
}

impl Read for BlobStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.blob.read_at(buf, self.pos).map_err(|e| io::Error::other(e.to_string()))?;
        self.pos += n as u64;
        Ok(n)
    }
}

fn sha256(data: &[u8]) -> Digest {
    Digest::sha256_from_bytes(&sha2::Sha256::digest(data).into())
}

/// (snapshotter, namespace, chain ID): what one unpack at a time may extract.
type ChainKey = (String, String, Digest);

/// The image unpacker (one per daemon).
pub struct Unpacker {
    meta: Arc<MetadataStore>,
    content: ContentStore,
    parallelism: usize,
    chain_locks: Mutex<HashMap<ChainKey, Weak<Mutex<()>>>>,
}

impl Unpacker {
    /// An unpacker extracting up to `parallelism` layers at once (at least 1).
    pub fn new(meta: Arc<MetadataStore>, content: ContentStore, parallelism: usize) -> Unpacker {
        Unpacker { meta, content, parallelism: parallelism.max(1), chain_locks: Mutex::new(HashMap::new()) }
    }

    fn read_document(&self, ns: &str, d: &Descriptor) -> Result<Vec<u8>> {
        let digest = d.validate()?;
        let blob = self.content.reader(ns, &digest)?;
        if blob.size() > MAX_DOCUMENT_SIZE {
            return Err(Error::invalid_argument(format!(
                "{digest} is {} bytes, too large for a manifest or config",
                blob.size()
            )));
        }
        let mut buf = vec![0u8; blob.size() as usize];
        blob.read_exact_at(&mut buf, 0)?;
        Ok(buf)
    }

    /// The manifest and config of `target` for `platform` (following an index).
    pub fn resolve(&self, ns: &str, target: &Descriptor, platform: &Platform) -> Result<(Manifest, ImageConfig)> {
        let mut desc = target.clone();
        for _ in 0..4 {
            if !is_index(&desc.media_type) {
                break;
            }
            let index = Index::parse(&self.read_document(ns, &desc)?)?;
            desc = index.select(platform)?.descriptor.clone();
        }
        let manifest = Manifest::parse(&self.read_document(ns, &desc)?)
            .map_err(|e| e.context(format!("manifest {}", desc.digest)))?;
        let config = ImageConfig::parse(&self.read_document(ns, &manifest.config)?)?;
        Ok((manifest, config))
    }

    fn lock_chain(&self, snapshotter: &str, ns: &str, chain: &Digest) -> Arc<Mutex<()>> {
        let mut locks = self.chain_locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.retain(|_, w| w.strong_count() > 0);
        let key = (snapshotter.to_string(), ns.to_string(), chain.clone());
        if let Some(l) = locks.get(&key).and_then(Weak::upgrade) {
            return l;
        }
        let l = Arc::new(Mutex::new(()));
        locks.insert(key, Arc::downgrade(&l));
        l
    }

    /// Unpacks image `name` of namespace `ns` into `sn` for `platform`, within `lease` (a
    /// temporary one when None).
    pub fn unpack(
        &self,
        ns: &str,
        name: &str,
        sn: &dyn Snapshotter,
        platform: &Platform,
        lease: Option<&str>,
    ) -> Result<UnpackOutcome> {
        let image = self.meta.get_image(ns, name)?;
        self.unpack_target(ns, name, &image.target, sn, platform, lease)
    }

    /// Unpacks the image whose root is `target` (before or without an image record, as a
    /// pull does); `name` is for messages only.
    pub fn unpack_target(
        &self,
        ns: &str,
        name: &str,
        target: &Descriptor,
        sn: &dyn Snapshotter,
        platform: &Platform,
        lease: Option<&str>,
    ) -> Result<UnpackOutcome> {
        let start = Instant::now();
        let (manifest, config) = self.resolve(ns, target, platform)?;
        self.unpack_resolved(ns, name, &manifest, &config, sn, lease, None, start)
    }

    /// Unpacks `manifest` while its layer blobs are still arriving (a pull): each layer is
    /// extracted once its digest comes out of `arrived` (sent after the blob is committed,
    /// in any order); the config must be readable already. Fails if `arrived` closes before
    /// every missing layer came.
    #[allow(clippy::too_many_arguments)]
    pub fn unpack_pipelined(
        &self,
        ns: &str,
        name: &str,
        manifest: &Manifest,
        config: &ImageConfig,
        sn: &dyn Snapshotter,
        lease: Option<&str>,
        arrived: std::sync::mpsc::Receiver<Digest>,
    ) -> Result<UnpackOutcome> {
        let arrivals = Mutex::new(Arrivals { rx: arrived, seen: Vec::new() });
        self.unpack_resolved(ns, name, manifest, config, sn, lease, Some(&arrivals), Instant::now())
    }

    #[allow(clippy::too_many_arguments)]
    fn unpack_resolved(
        &self,
        ns: &str,
        name: &str,
        manifest: &Manifest,
        config: &ImageConfig,
        sn: &dyn Snapshotter,
        lease: Option<&str>,
        arrivals: Option<&Mutex<Arrivals>>,
        start: Instant,
    ) -> Result<UnpackOutcome> {
        let diff_ids = config.diff_ids()?;
        if diff_ids.len() != manifest.layers.len() {
            return Err(Error::invalid_argument(format!(
                "image {name:?}: manifest has {} layers but its config lists {} diff_ids",
                manifest.layers.len(),
                diff_ids.len()
            )));
        }
        if diff_ids.is_empty() {
            return Err(Error::invalid_argument(format!("image {name:?} has no layers")));
        }
        let chains = chain_ids(&diff_ids, sha256);
        let jobs: Vec<LayerJob> = manifest
            .layers
            .iter()
            .zip(diff_ids)
            .zip(chains.iter().cloned())
            .map(|((blob, diff_id), chain_id)| {
                Ok(LayerJob { digest: blob.validate()?, blob: blob.clone(), diff_id, chain_id })
            })
            .collect::<Result<_>>()?;

        let temp_lease = match lease {
            Some(_) => None,
            None => {
                let id = format!("unpack-{}", uuid::Uuid::new_v4().simple());
                let expire = BTreeMap::from([(EXPIRE_LABEL.to_string(), rfc3339_in(Duration::from_secs(3600)))]);
                self.meta.create_lease(ns, &id, expire)?;
                Some(TempLease { meta: &self.meta, ns, id })
            }
        };
        let lease_id = lease.map(str::to_string).or_else(|| temp_lease.as_ref().map(|l| l.id.clone()));

        // Lock every chain of the image bottom first (a fixed order: no deadlocks), then see
        // what is already there.
        let locks: Vec<Arc<Mutex<()>>> = jobs.iter().map(|j| self.lock_chain(sn.name(), ns, &j.chain_id)).collect();
        let _held: Vec<_> = locks.iter().map(|l| l.lock().unwrap_or_else(|p| p.into_inner())).collect();
        let present = jobs.iter().take_while(|j| sn.stat(ns, &j.chain_id.to_string()).is_ok()).count();
        let missing = &jobs[present..];
        let opts = CreateOptions { labels: BTreeMap::new(), lease: lease_id.clone() };
        let bytes: u64 = missing.iter().map(|j| j.blob.size.max(0) as u64).sum();

        if !missing.is_empty() {
            let parent = if present == 0 { String::new() } else { jobs[present - 1].chain_id.to_string() };
            match sn.prepare_staged() {
                Ok(first) => self.unpack_staged(ns, sn, missing, first, parent, &opts, arrivals)?,
                Err(e) if e.kind() == berth_core::ErrorKind::NotImplemented => {
                    self.unpack_sequential(ns, sn, missing, parent, &opts, arrivals)?
                }
                Err(e) => return Err(e),
            }
        }

        // Keep the snapshots for as long as the image: label its config and layers.
        let top = jobs.last().map(|j| j.chain_id.clone()).ok_or_else(|| Error::internal("no layers"))?;
        let config_digest = manifest.config.validate()?;
        let key = gc_snapshot_label(sn.name());
        self.content.update(
            ns,
            &config_digest,
            BTreeMap::from([(key.clone(), top.to_string())]),
            &[format!("labels.{key}")],
        )?;
        for j in &jobs {
            if j.digest != j.diff_id {
                let labels = BTreeMap::from([(UNCOMPRESSED_LABEL.to_string(), j.diff_id.to_string())]);
                self.content.update(ns, &j.digest, labels, &[format!("labels.{UNCOMPRESSED_LABEL}")])?;
            }
        }
        drop(temp_lease);
        let outcome = UnpackOutcome {
            chain_id: top,
            layers: jobs.len(),
            extracted: missing.len(),
            bytes,
            duration: start.elapsed(),
        };
        tracing::info!(namespace = %ns, image = %name, snapshotter = sn.name(), layers = outcome.layers, extracted = outcome.extracted, ms = outcome.duration.as_millis() as u64, "unpacked");
        Ok(outcome)
    }

    fn open_layer(&self, ns: &str, job: &LayerJob) -> Result<BlobStream> {
        Ok(BlobStream { blob: self.content.reader(ns, &job.digest)?, pos: 0 })
    }

    fn apply_one(&self, ns: &str, job: &LayerJob, dir: &std::path::Path, whiteouts: WhiteoutMode) -> Result<()> {
        let reader = io::BufReader::with_capacity(1 << 20, self.open_layer(ns, job)?);
        let opts = ApplyOptions { whiteouts, media_type: Some(job.blob.media_type.clone()) };
        let outcome = apply(reader, dir, &opts).map_err(|e| e.context(format!("layer {}", job.digest)))?;
        outcome.verify(Some(&job.digest), Some(&job.diff_id)).map_err(|e| e.context(format!("layer {}", job.digest)))
    }

    /// Extracts every missing layer at once into staged directories, then commits in order.
    #[allow(clippy::too_many_arguments)]
    fn unpack_staged(
        &self,
        ns: &str,
        sn: &dyn Snapshotter,
        missing: &[LayerJob],
        first: StagedLayer,
        mut parent: String,
        opts: &CreateOptions,
        arrivals: Option<&Mutex<Arrivals>>,
    ) -> Result<()> {
        let mut staged = vec![first];
        for _ in 1..missing.len() {
            staged.push(sn.prepare_staged()?);
        }
        // Largest layers first so the pool stays busy to the end (or, while a pull is still
        // fetching, in the order the blobs arrive).
        let mut order: Vec<usize> = (0..missing.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(missing[i].blob.size));
        let queue = Mutex::new(order.into_iter());
        let taken: Mutex<Vec<bool>> = Mutex::new(vec![false; missing.len()]);
        let next_job = || -> Option<usize> {
            let Some(a) = arrivals else { return queue.lock().unwrap_or_else(|p| p.into_inner()).next() };
            let mut a = a.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                let mut taken = taken.lock().unwrap_or_else(|p| p.into_inner());
                if taken.iter().all(|t| *t) {
                    return None;
                }
                if let Some(i) = (0..missing.len()).find(|&i| !taken[i] && a.seen.contains(&missing[i].digest)) {
                    taken[i] = true;
                    return Some(i);
                }
                drop(taken);
                a.recv()?;
            }
        };
        let results: Mutex<Vec<Option<Result<()>>>> = Mutex::new((0..missing.len()).map(|_| None).collect());
        thread::scope(|s| {
            for _ in 0..self.parallelism.min(missing.len()) {
                s.spawn(|| loop {
                    let Some(i) = next_job() else { return };
                    let r = self.apply_one(ns, &missing[i], staged[i].dir(), WhiteoutMode::Overlay);
                    results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(r);
                });
            }
        });
        for r in results.into_inner().unwrap_or_else(|p| p.into_inner()) {
            r.unwrap_or_else(|| {
                Err(match arrivals {
                    Some(_) => Error::unavailable("the pull ended before every layer arrived"),
                    None => Error::internal("layer extraction did not run"),
                })
            })?;
        }
        if let Some(s) = staged.first() {
            syncfs(s.dir())?;
        }
        for (job, layer) in missing.iter().zip(staged) {
            let name = job.chain_id.to_string();
            match sn.commit_staged(ns, layer, &name, &parent, opts) {
                Ok(_) => {}
                Err(e) if e.kind() == berth_core::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e.context(format!("commit layer snapshot {name}"))),
            }
            parent = name;
        }
        Ok(())
    }

    /// Prepare → apply (with deletions) → commit, one layer after the other.
    fn unpack_sequential(
        &self,
        ns: &str,
        sn: &dyn Snapshotter,
        missing: &[LayerJob],
        mut parent: String,
        opts: &CreateOptions,
        arrivals: Option<&Mutex<Arrivals>>,
    ) -> Result<()> {
        for job in missing {
            if let Some(a) = arrivals {
                let mut a = a.lock().unwrap_or_else(|p| p.into_inner());
                while !a.seen.contains(&job.digest) {
                    a.recv().ok_or_else(|| Error::unavailable("the pull ended before every layer arrived"))?;
                }
            }
            let name = job.chain_id.to_string();
            let key = format!("extract-{}-{name}", uuid::Uuid::new_v4().simple());
            let mounts = sn.prepare(ns, &key, &parent, opts)?;
            let applied = (|| match mounts.as_slice() {
                [m] if m.kind == "bind" || m.options.iter().any(|o| o == "bind" || o == "rbind") => {
                    self.apply_one(ns, job, std::path::Path::new(&m.source), WhiteoutMode::Delete)?;
                    syncfs(std::path::Path::new(&m.source))
                }
                _ => {
                    let dir = tempdir_in(sn.root())?;
                    let guard = berth_mount::MountGuard::mount(&mounts, dir.path())?;
                    self.apply_one(ns, job, dir.path(), WhiteoutMode::Delete)?;
                    syncfs(dir.path())?;
                    drop(guard);
                    Ok(())
                }
            })();
            let committed = applied.and_then(|()| sn.commit(ns, &name, &key, opts));
            if let Err(e) = committed {
                let _ = sn.remove(ns, &key);
                if e.kind() != berth_core::ErrorKind::AlreadyExists {
                    return Err(e.context(format!("unpack layer {}", job.digest)));
                }
            }
            parent = name;
        }
        Ok(())
    }
}

/// Layer blobs committed so far by a pull that is still running.
struct Arrivals {
    rx: std::sync::mpsc::Receiver<Digest>,
    seen: Vec<Digest>,
}

impl Arrivals {
    /// Waits for the next blob; None once the pull stopped sending.
    fn recv(&mut self) -> Option<()> {
        let d = self.rx.recv().ok()?;
        self.seen.push(d);
        Some(())
    }
}

/// A lease deleted when dropped.
struct TempLease<'a> {
    meta: &'a MetadataStore,
    ns: &'a str,
    id: String,
}

impl Drop for TempLease<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.meta.delete_lease(self.ns, &self.id) {
            tracing::warn!(lease = %self.id, error = %e, "cannot remove the unpack lease; it expires by itself");
        }
    }
}

/// A temporary directory under `parent` removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn tempdir_in(parent: &std::path::Path) -> Result<TempDir> {
    let p = parent.join(format!("unpack-mnt-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir(&p).map_err(|e| Error::internal(format!("create {}: {e}", p.display())))?;
    Ok(TempDir(p))
}

/// RFC 3339 UTC time `d` from now (lease expiry labels).
pub fn rfc3339_in(d: Duration) -> String {
    berth_core::time::format_rfc3339(std::time::SystemTime::now() + d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_parses_back() {
        let t = berth_metadata::parse_rfc3339(&rfc3339_in(Duration::from_secs(3600))).unwrap();
        let delta = t.duration_since(std::time::SystemTime::now()).unwrap();
        assert!(delta > Duration::from_secs(3500) && delta <= Duration::from_secs(3600), "{delta:?}");
    }
}
