//! `berthctl image export OUT|- IMAGE...`: writes images as an OCI image layout tar (default)
//! or as a `docker save` archive that docker 20.10's `docker load` reads, streaming every blob
//! from `Content.Read` into the tar. A file is written beside its final name and renamed into
//! place only when complete.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, ValueEnum};

use super::remote::Remote;
use super::{normalize_name, resolve, PlatformChoice, ResolvedImage};
use crate::archive::docker::{self, ManifestEntry, MANIFEST_FILE, REPOSITORIES_FILE};
use crate::archive::oci::{
    self, Descriptor, ImageLayout, Index, ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, INDEX_FILE, LAYOUT_FILE,
    LAYOUT_VERSION,
};
use crate::archive::write::TarWriter;
use crate::client::{status_error, Client};

/// Archive formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// OCI image layout (oci-layout, index.json, blobs/sha256/...).
    Oci,
    /// `docker save` (manifest.json, repositories, <id>/layer.tar).
    Docker,
}

/// Arguments of `image export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Output file; `-` writes to standard output.
    pub out: String,
    /// Images to export.
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Archive format.
    #[arg(long, value_enum, default_value_t = Format::Oci)]
    pub format: Format,
    /// Export this platform of multi-platform images (os/arch[/variant]); default: this host's.
    #[arg(long, conflicts_with = "all_platforms")]
    pub platform: Option<String>,
    /// Export every platform of multi-platform images (OCI format only).
    #[arg(long)]
    pub all_platforms: bool,
}

/// An image to export.
struct Source {
    name: String,
    target: Descriptor,
    tree: ResolvedImage,
}

/// Runs `image export`.
pub async fn run(client: &Client, args: ExportArgs) -> Result<()> {
    if args.format == Format::Docker && args.all_platforms {
        bail!("a docker archive holds one platform per image: use --platform, or --format oci");
    }
    let choice = PlatformChoice::from_flags(args.all_platforms, args.platform.as_deref())?;
    let mut remote = Remote::new(client);
    let mut sources = Vec::new();
    for raw in &args.images {
        let name = normalize_name(raw)?;
        let image = remote.get_image(&name).await?.ok_or_else(|| anyhow!("image {name:?}: not found"))?;
        let target =
            image.target.as_ref().map(Descriptor::from_proto).ok_or_else(|| anyhow!("image {name} has no target"))?;
        let tree = resolve(&mut remote, &target, &choice, true).await.with_context(|| format!("image {name}"))?;
        if tree.manifests.is_empty() {
            bail!("image {name} has no manifest for the requested platform");
        }
        if args.format == Format::Docker && tree.manifests.len() > 1 {
            bail!(
                "image {name} has {} manifests for the requested platform; pick one with --platform",
                tree.manifests.len()
            );
        }
        sources.push(Source { name, target, tree });
    }

    let (out, tmp): (Box<dyn Write>, Option<(PathBuf, PathBuf)>) = if args.out == "-" {
        (Box::new(BufWriter::with_capacity(1 << 20, std::io::stdout())), None)
    } else {
        let path = PathBuf::from(&args.out);
        let tmp = path.with_file_name(format!(
            ".{}.tmp-{}",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("export"),
            std::process::id()
        ));
        let f = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        (Box::new(BufWriter::with_capacity(1 << 20, f)), Some((tmp, path)))
    };
    let mut tar = TarWriter::new(out);
    let written = match args.format {
        Format::Oci => write_oci(&mut remote, &mut tar, &sources).await,
        Format::Docker => write_docker(&mut remote, &mut tar, &sources).await,
    }
    .and_then(|()| tar.finish().map(drop).context("writing archive"));
    match (written, tmp) {
        (Ok(()), Some((tmp, path))) => {
            fs::rename(&tmp, &path).with_context(|| format!("cannot rename into {}", path.display()))?
        }
        (Ok(()), None) => {}
        (Err(e), tmp) => {
            if let Some((tmp, _)) = tmp {
                let _ = fs::remove_file(tmp);
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Streams one blob into the tar as `name`.
async fn copy_blob<W: Write>(
    remote: &mut Remote<'_>,
    tar: &mut TarWriter<W>,
    name: &str,
    desc: &Descriptor,
) -> Result<()> {
    let size = u64::try_from(desc.size).map_err(|_| anyhow!("{}: negative size", desc.digest))?;
    let mut stream = remote.read_stream(&desc.digest).await?;
    tar.begin_file(name, size).context("writing archive")?;
    let mut offset = 0u64;
    while let Some(chunk) =
        stream.message().await.map_err(status_error).with_context(|| format!("reading {}", desc.digest))?
    {
        if chunk.offset as u64 != offset {
            bail!("reading {}: chunk at offset {} after {offset} bytes", desc.digest, chunk.offset);
        }
        if offset + chunk.data.len() as u64 > size {
            bail!("{} is larger than its descriptor's {size} bytes", desc.digest);
        }
        tar.data(&chunk.data).context("writing archive")?;
        offset += chunk.data.len() as u64;
    }
    if offset != size {
        bail!("{} has {offset} bytes, its descriptor says {size}", desc.digest);
    }
    tar.end_file().context("writing archive")
}

fn hex(digest: &str) -> &str {
    digest.split_once(':').map_or(digest, |(_, h)| h)
}

fn blob_path(digest: &str) -> String {
    let (alg, h) = digest.split_once(':').unwrap_or(("sha256", digest));
    format!("blobs/{alg}/{h}")
}

/// The tag of a normalized name, if it has one.
fn tag_of(name: &str) -> Option<String> {
    berth_core::reference::Reference::parse(name).ok().and_then(|r| r.tag)
}

async fn write_oci<W: Write>(remote: &mut Remote<'_>, tar: &mut TarWriter<W>, sources: &[Source]) -> Result<()> {
    let layout = serde_json::to_vec(&ImageLayout { image_layout_version: LAYOUT_VERSION.into() })?;
    tar.file(LAYOUT_FILE, &layout).context("writing archive")?;
    tar.dir("blobs").context("writing archive")?;
    let mut dirs = HashSet::new();
    let mut written = HashSet::new();
    let mut index = Index {
        schema_version: 2,
        media_type: oci::MEDIA_TYPE_OCI_INDEX.into(),
        manifests: Vec::new(),
        annotations: BTreeMap::new(),
    };
    for src in sources {
        let mut blobs: Vec<Descriptor> = src.tree.indexes.iter().map(|(d, _)| d.clone()).collect();
        for m in &src.tree.manifests {
            blobs.push(m.desc.clone());
            blobs.push(m.manifest.config.clone());
            blobs.extend(m.manifest.layers.iter().cloned());
        }
        for desc in blobs {
            if !written.insert(desc.digest.clone()) {
                continue;
            }
            let path = blob_path(&desc.digest);
            if let Some((dir, _)) = path.rsplit_once('/') {
                if dirs.insert(dir.to_string()) {
                    tar.dir(dir).context("writing archive")?;
                }
            }
            copy_blob(remote, tar, &path, &desc).await?;
        }
        let mut entry = src.target.clone();
        entry.platform = None;
        entry.annotations.insert(ANNOTATION_IMAGE_NAME.into(), src.name.clone());
        entry.annotations.insert(ANNOTATION_REF_NAME.into(), tag_of(&src.name).unwrap_or_else(|| src.name.clone()));
        index.manifests.push(entry);
    }
    tar.file(INDEX_FILE, &serde_json::to_vec(&index)?).context("writing archive")
}

async fn write_docker<W: Write>(remote: &mut Remote<'_>, tar: &mut TarWriter<W>, sources: &[Source]) -> Result<()> {
    let mut written = HashSet::new();
    // One manifest.json entry per distinct manifest, carrying all the tags that point at it.
    let mut entries: Vec<(String, ManifestEntry)> = Vec::new();
    let mut repositories = Vec::new();
    for src in sources {
        let m = &src.tree.manifests[0];
        let config_path = format!("{}.json", hex(&m.manifest.config.digest));
        if written.insert(m.manifest.config.digest.clone()) {
            copy_blob(remote, tar, &config_path, &m.manifest.config).await?;
        }
        let mut layer_paths = Vec::new();
        let mut parent = String::new();
        for layer in &m.manifest.layers {
            let id = hex(&layer.digest).to_string();
            let path = format!("{id}/layer.tar");
            if written.insert(layer.digest.clone()) {
                tar.dir(&id).context("writing archive")?;
                tar.file(&format!("{id}/VERSION"), b"1.0").context("writing archive")?;
                let mut v1 = serde_json::json!({ "id": id, "created": "1970-01-01T00:00:00Z" });
                if !parent.is_empty() {
                    v1["parent"] = parent.clone().into();
                }
                tar.file(&format!("{id}/json"), &serde_json::to_vec(&v1)?).context("writing archive")?;
                copy_blob(remote, tar, &path, layer).await?;
            }
            layer_paths.push(path);
            parent = id;
        }
        // RepoTags are Docker's short form of the tagged name (`busybox:latest`).
        let tag = berth_core::reference::Reference::parse(&src.name).ok().filter(|r| r.tag.is_some()).map(|mut r| {
            r.digest = None;
            r.familiar()
        });
        if let Some(t) = &tag {
            if let Some((repo, tagname)) = t.rsplit_once(':') {
                repositories.push((repo.to_string(), tagname.to_string(), parent.clone()));
            }
        }
        match entries.iter_mut().find(|(d, _)| *d == m.desc.digest) {
            Some((_, e)) => e.repo_tags.extend(tag),
            None => entries.push((
                m.desc.digest.clone(),
                ManifestEntry { config: config_path, repo_tags: tag.into_iter().collect(), layers: layer_paths },
            )),
        }
    }
    let manifest: Vec<ManifestEntry> = entries.into_iter().map(|(_, e)| e).collect();
    tar.file(MANIFEST_FILE, &serde_json::to_vec(&manifest)?).context("writing archive")?;
    tar.file(REPOSITORIES_FILE, &docker::repositories_file(&repositories)).context("writing archive")
}
