//! `berthctl image import|export|ls|inspect|tag|rm` (alias `images`): images over berthd's
//! images and content services, and the image archive formats of `docker save` and OCI.

mod export;
mod import;
mod inspect;
pub mod login;
mod ls;
mod pull;
mod push;
mod remote;
mod rm;
mod tag;
mod unpack;

use anyhow::{anyhow, Result};
use clap::Subcommand;
use sha2::{Digest as _, Sha256};

use crate::archive::oci::{Descriptor, Document, Platform};
use crate::client::Client;
use remote::Remote;

/// Image commands.
#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Import images from a `docker save` archive or an OCI layout tar (`-`: stdin).
    Import(import::ImportArgs),
    /// Export images as an OCI layout tar (default) or a `docker save` archive.
    Export(export::ExportArgs),
    /// List images: name, target digest, size, platforms.
    #[command(visible_alias = "list")]
    Ls(ls::LsArgs),
    /// Print an image record with its manifest (or index) and config as JSON.
    Inspect(inspect::InspectArgs),
    /// Give an existing image another name.
    Tag(tag::TagArgs),
    /// Pull an image from a registry (progress per layer, then the digest).
    Pull(pull::PullArgs),
    /// Push an image to a registry.
    Push(push::PushArgs),
    /// Remove images (their content is collected once nothing else references it).
    #[command(visible_aliases = ["remove", "delete"])]
    Rm(rm::RmArgs),
    /// Unpack images into a snapshotter (layers extracted in parallel; done ones are reused).
    Unpack(unpack::UnpackArgs),
}

/// Runs an image command.
pub async fn run(client: &Client, cmd: ImageCommand) -> Result<()> {
    match cmd {
        ImageCommand::Import(a) => import::run(client, a).await,
        ImageCommand::Export(a) => export::run(client, a).await,
        ImageCommand::Ls(a) => ls::run(client, a).await,
        ImageCommand::Inspect(a) => inspect::run(client, a).await,
        ImageCommand::Tag(a) => tag::run(client, a).await,
        ImageCommand::Rm(a) => rm::run(client, a).await,
        ImageCommand::Pull(a) => pull::run(client, a).await,
        ImageCommand::Push(a) => push::run(client, a).await,
        ImageCommand::Unpack(a) => unpack::run(client, a).await,
    }
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// Normalizes an image reference as Docker does (`busybox` → `docker.io/library/busybox:latest`).
pub fn normalize_name(name: &str) -> Result<String> {
    berth_core::reference::normalize(name).map_err(|e| anyhow!("{}", e.message()))
}

/// Sizes as ctr prints them: `1.2 MiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Which manifests of an index to take.
#[derive(Debug, Clone)]
pub enum PlatformChoice {
    /// Every manifest.
    All,
    /// Manifests for this platform (and those that name none).
    One(Platform),
}

impl PlatformChoice {
    /// From `--all-platforms` and `--platform`; the host's platform by default.
    pub fn from_flags(all: bool, platform: Option<&str>) -> Result<PlatformChoice> {
        Ok(match (all, platform) {
            (true, _) => PlatformChoice::All,
            (false, Some(p)) => PlatformChoice::One(Platform::parse(p).map_err(|e| anyhow!(e))?),
            (false, None) => PlatformChoice::One(Platform::host()),
        })
    }

    fn wants(&self, desc: &Descriptor) -> bool {
        match (self, &desc.platform) {
            (PlatformChoice::All, _) | (_, None) => true,
            (PlatformChoice::One(p), Some(q)) => p.matches(q),
        }
    }
}

/// A manifest reached from an image target, with its parsed form.
#[derive(Debug, Clone)]
pub struct ResolvedManifest {
    /// Its descriptor (with the platform the index gave it, if any).
    pub desc: Descriptor,
    /// The manifest.
    pub manifest: crate::archive::oci::Manifest,
}

/// The tree of an image: the indexes walked and the manifests chosen.
#[derive(Debug, Clone, Default)]
pub struct ResolvedImage {
    /// Indexes in walk order, with their documents.
    pub indexes: Vec<(Descriptor, crate::archive::oci::Index)>,
    /// Manifests chosen by the platform choice, in index order.
    pub manifests: Vec<ResolvedManifest>,
}

/// Walks an image from its target, reading indexes and manifests from the content store.
/// Manifests of other platforms are skipped, and so are missing ones unless `strict`.
pub async fn resolve(
    remote: &mut Remote<'_>,
    target: &Descriptor,
    choice: &PlatformChoice,
    strict: bool,
) -> Result<ResolvedImage> {
    let mut out = ResolvedImage::default();
    let mut queue = std::collections::VecDeque::from([target.clone()]);
    while let Some(desc) = queue.pop_front() {
        if !strict && desc.digest != target.digest && remote.info(&desc.digest).await?.is_none() {
            continue;
        }
        match remote.read_document(&desc).await? {
            Document::Manifest(manifest) => out.manifests.push(ResolvedManifest { desc, manifest }),
            Document::Index(idx) => {
                for m in idx.manifests.iter().filter(|m| choice.wants(m)) {
                    queue.push_back(m.clone());
                }
                out.indexes.push((desc, idx));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_ctr() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(3 << 20), "3.0 MiB");
    }

    #[test]
    fn names_normalize() {
        assert_eq!(normalize_name("busybox").unwrap(), "docker.io/library/busybox:latest");
        assert!(normalize_name("Bad Name").is_err());
    }
}
