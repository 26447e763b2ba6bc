//! The differ plugin (containerd's "walking" differ): applies layer blobs from the content
//! store onto mounts, and writes the diff between two sets of mounts back into the store.
//!
//! Mounts are used without mounting when their shape allows it: a single overlay mount is
//! applied straight into its `upperdir` (overlay whiteouts), a single bind mount into its
//! source (deletions); a diff whose right side is an overlay over exactly the left side is
//! read from the `upperdir` alone. Anything else is mounted under `<scratch>/` for the call.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use berth_content::{BlobReader, ContentStore};
use berth_core::{Descriptor, Error, ErrorKind, Result};
use berth_mount::{Mount, MountGuard};

use crate::{
    apply, diff, diff_overlay_upper, ApplyOptions, Compression, DiffOptions, WhiteoutMode, LABEL_UNCOMPRESSED,
    MEDIA_TYPE_LAYER, MEDIA_TYPE_LAYER_GZIP,
};

/// What to write for [`Differ::diff`].
#[derive(Debug, Clone, Default)]
pub struct DiffSpec {
    /// Media type of the blob; empty means `application/vnd.oci.image.layer.v1.tar+gzip`.
    pub media_type: String,
    /// Ingest ref in the content store; empty means a generated one.
    pub reference: String,
    /// Labels of the blob (the `containerd.io/uncompressed` label is added).
    pub labels: BTreeMap<String, String>,
    /// Clamp file times to this (seconds since the epoch).
    pub source_date_epoch: Option<i64>,
    /// Lease the blob is written within.
    pub lease: Option<String>,
}

/// The differ: a content store and a scratch directory for temporary mounts.
pub struct Differ {
    content: ContentStore,
    scratch: PathBuf,
    counter: AtomicU64,
}

impl Differ {
    /// A differ over `content`, mounting what it must under `scratch` (created if missing).
    pub fn new(content: ContentStore, scratch: &Path) -> Result<Differ> {
        fs::create_dir_all(scratch).map_err(|e| Error::internal(format!("create {}: {e}", scratch.display())))?;
        Ok(Differ { content, scratch: scratch.to_path_buf(), counter: AtomicU64::new(0) })
    }

    /// Applies the layer blob `desc` (visible in `ns`) onto `mounts` and returns the applied
    /// content as containerd does: media type `application/vnd.oci.image.layer.v1.tar`, the
    /// diff_id and the uncompressed size. The blob's digest (and size, when given) are
    /// checked: `FailedPrecondition` on a mismatch. An unsupported media type is
    /// `NotImplemented`.
    pub fn apply(&self, ns: &str, desc: &Descriptor, mounts: &[Mount]) -> Result<Descriptor> {
        let digest = desc.validate()?;
        Compression::from_media_type(&desc.media_type)?;
        let blob = self.content.reader(ns, &digest)?;
        if desc.size > 0 && u64::try_from(desc.size).ok() != Some(blob.size()) {
            return Err(Error::failed_precondition(format!(
                "blob {digest} has {} bytes, the descriptor says {}",
                blob.size(),
                desc.size
            )));
        }
        let (target, whiteouts, _guard) = self.apply_target(mounts)?;
        let opts = ApplyOptions { whiteouts, media_type: Some(desc.media_type.clone()) };
        let outcome = apply(BlobStream { blob, pos: 0 }, &target, &opts)?;
        outcome.verify(Some(&digest), None)?;
        tracing::debug!(%digest, diff_id = %outcome.diff_id, target = %target.display(), "layer applied");
        Ok(Descriptor {
            media_type: MEDIA_TYPE_LAYER.to_string(),
            digest: outcome.diff_id.to_string(),
            size: i64::try_from(outcome.uncompressed_size).unwrap_or(i64::MAX),
            annotations: BTreeMap::new(),
        })
    }

    fn apply_target(&self, mounts: &[Mount]) -> Result<(PathBuf, WhiteoutMode, Option<TempMount>)> {
        match mounts {
            [] => Err(Error::invalid_argument("apply needs at least one mount")),
            [m] if !at_root(m) => {
                let temp = self.mount(mounts, false)?;
                Ok((temp.dir.clone(), WhiteoutMode::Delete, Some(temp)))
            }
            [m] if m.kind == "overlay" => match option(m, "upperdir") {
                Some(upper) => Ok((PathBuf::from(upper), WhiteoutMode::Overlay, None)),
                None => Err(Error::invalid_argument("overlay mount has no upperdir: it is read-only")),
            },
            [m] if is_bind(m) => {
                if has_option(m, "ro") {
                    return Err(Error::invalid_argument(format!("bind mount of {} is read-only", m.source)));
                }
                Ok((PathBuf::from(&m.source), WhiteoutMode::Delete, None))
            }
            _ => {
                let temp = self.mount(mounts, false)?;
                Ok((temp.dir.clone(), WhiteoutMode::Delete, Some(temp)))
            }
        }
    }

    /// Writes the layer that turns `lower` into `upper` into the content store (in `ns`)
    /// and returns its descriptor. The blob carries the `containerd.io/uncompressed` label.
    pub fn diff(&self, ns: &str, lower: &[Mount], upper: &[Mount], spec: &DiffSpec) -> Result<Descriptor> {
        let media_type = if spec.media_type.is_empty() { MEDIA_TYPE_LAYER_GZIP } else { spec.media_type.as_str() };
        let compression = Compression::from_media_type(media_type)?;
        let opts = DiffOptions { compression, source_date_epoch: spec.source_date_epoch };
        let reference = if spec.reference.is_empty() { self.unique("diff") } else { spec.reference.clone() };
        let mut writer = self.content.writer(ns, &reference, 0, None, spec.lease.as_deref())?;
        let written = self.write_diff(lower, upper, &mut writer, &opts);
        let outcome = match written {
            Ok(o) => o,
            Err(e) => {
                drop(writer);
                if let Err(abort) = self.content.abort(ns, &reference) {
                    tracing::warn!(r#ref = %reference, error = %abort, "cannot abort diff ingest");
                }
                return Err(e);
            }
        };
        let mut labels = spec.labels.clone();
        labels.insert(LABEL_UNCOMPRESSED.to_string(), outcome.diff_id.to_string());
        match writer.commit(outcome.size, Some(&outcome.digest), labels) {
            Ok(_) => {}
            // The same layer was there already: as good as written (containerd agrees).
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        Ok(Descriptor {
            media_type: media_type.to_string(),
            digest: outcome.digest.to_string(),
            size: i64::try_from(outcome.size).unwrap_or(i64::MAX),
            annotations: BTreeMap::new(),
        })
    }

    fn write_diff(
        &self,
        lower: &[Mount],
        upper: &[Mount],
        writer: &mut berth_content::Writer,
        opts: &DiffOptions,
    ) -> Result<crate::DiffOutcome> {
        let sink = writer;
        if let [u] = upper {
            if u.kind == "overlay" && at_root(u) && upper_over(u, lower) {
                if let Some(dir) = option(u, "upperdir") {
                    return diff_overlay_upper(Path::new(dir), sink, opts);
                }
            }
        }
        let upper_temp;
        let upper_dir = match upper {
            [] => return Err(Error::invalid_argument("diff needs the mounts of its upper side")),
            [u] if is_bind(u) && at_root(u) => PathBuf::from(&u.source),
            _ => {
                upper_temp = self.mount(upper, true)?;
                upper_temp.dir.clone()
            }
        };
        let lower_temp;
        let lower_dir = match lower {
            [] => {
                lower_temp = self.empty_dir()?;
                lower_temp.dir.clone()
            }
            [l] if is_bind(l) && at_root(l) => PathBuf::from(&l.source),
            _ => {
                lower_temp = self.mount(lower, true)?;
                lower_temp.dir.clone()
            }
        };
        diff(&lower_dir, &upper_dir, sink, opts)
    }

    fn unique(&self, prefix: &str) -> String {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}-{nanos}-{}-{n}", std::process::id())
    }

    fn empty_dir(&self) -> Result<TempMount> {
        let dir = self.scratch.join(self.unique("empty"));
        fs::create_dir(&dir).map_err(|e| Error::internal(format!("create {}: {e}", dir.display())))?;
        Ok(TempMount { guard: None, dir })
    }

    /// Mounts `mounts` on a fresh directory under the scratch directory.
    fn mount(&self, mounts: &[Mount], read_only: bool) -> Result<TempMount> {
        let mut temp = self.empty_dir()?;
        let mounts: Vec<Mount> = mounts
            .iter()
            .map(|m| {
                let mut m = m.clone();
                if read_only && !has_option(&m, "ro") {
                    m.options.push("ro".into());
                }
                m
            })
            .collect();
        temp.guard = Some(MountGuard::mount(&mounts, &temp.dir).map_err(|e| e.context("differ"))?);
        Ok(temp)
    }
}

/// A directory under the scratch directory, with what is mounted on it; both go on drop.
struct TempMount {
    guard: Option<MountGuard>,
    dir: PathBuf,
}

impl Drop for TempMount {
    fn drop(&mut self) {
        if let Some(guard) = self.guard.take() {
            if let Err(e) = guard.unmount() {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot unmount differ mount");
                return;
            }
        }
        if let Err(e) = fs::remove_dir(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove differ mount point");
        }
    }
}

fn option<'a>(m: &'a Mount, key: &str) -> Option<&'a str> {
    m.options.iter().find_map(|o| o.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
}

fn has_option(m: &Mount, word: &str) -> bool {
    m.options.iter().any(|o| o == word)
}

/// Whether the mount goes at the root of its mount point (no sub-path target).
fn at_root(m: &Mount) -> bool {
    m.target.trim_matches('/').is_empty()
}

fn is_bind(m: &Mount) -> bool {
    m.kind == "bind" || has_option(m, "bind") || has_option(m, "rbind")
}

/// Whether overlay mount `upper` stacks its upperdir on exactly what `lower` shows: a bind of
/// its only lower directory, or a read-only overlay of the same lower directories.
fn upper_over(upper: &Mount, lower: &[Mount]) -> bool {
    let Some(lowerdirs) = option(upper, "lowerdir") else { return false };
    match lower {
        [l] if is_bind(l) && at_root(l) => !lowerdirs.contains(':') && Path::new(&l.source) == Path::new(lowerdirs),
        [l] if l.kind == "overlay" && at_root(l) => {
            option(l, "upperdir").is_none() && option(l, "lowerdir") == Some(lowerdirs)
        }
        _ => false,
    }
}

/// Sequential reads of a committed blob.
struct BlobStream {
    blob: BlobReader,
    pos: u64,
}

impl Read for BlobStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.blob.read_at(buf, self.pos).map_err(io::Error::other)?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(kind: &str, source: &str, opts: &[&str]) -> Mount {
        Mount::new(kind, source, opts.iter().copied())
    }

    #[test]
    fn recognizes_overlay_over_its_lower() {
        let upper = m("overlay", "overlay", &["workdir=/w", "upperdir=/u", "lowerdir=/l1"]);
        assert!(upper_over(&upper, &[m("bind", "/l1", &["ro", "rbind"])]));
        assert!(!upper_over(&upper, &[m("bind", "/other", &["ro", "rbind"])]));
        let upper2 = m("overlay", "overlay", &["upperdir=/u", "lowerdir=/l2:/l1"]);
        assert!(upper_over(&upper2, &[m("overlay", "overlay", &["lowerdir=/l2:/l1"])]));
        assert!(!upper_over(&upper2, &[m("overlay", "overlay", &["lowerdir=/l1"])]));
        assert!(!upper_over(&upper2, &[]));
        assert_eq!(option(&upper, "upperdir"), Some("/u"));
        assert!(is_bind(&m("none", "/x", &["rbind"])));
    }
}
