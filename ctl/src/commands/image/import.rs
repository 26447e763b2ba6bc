//! `berthctl image import FILE|-`: loads a `docker save` archive or an OCI image layout tar
//! into berthd in one streaming pass, as `ctr images import` does, but over the gRPC API only.
//!
//! Every regular member that may be a blob goes straight into the content store through
//! `Content.Write` while the reader thread hashes it; only small JSON documents stay in memory.
//! All of it happens within a lease that expires in an hour and is deleted at the end, so
//! whatever no image references is collected, also after a failure (then synchronously, so a
//! failed import leaves nothing behind). Manifests and indexes are committed with containerd's
//! `containerd.io/gc.ref.content.*` labels so the collector keeps their children.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use berth_core::Digest;
use clap::Args;
use tokio::sync::mpsc;

use super::remote::{BlobWriter, Remote};
use super::{human_size, normalize_name};
use crate::archive::docker::{self, MANIFEST_FILE, REPOSITORIES_FILE};
use crate::archive::oci::{
    self, ConfigPlatform, Descriptor, Document, ImageLayout, Index, Platform, ANNOTATION_IMAGE_NAME,
    ANNOTATION_REF_NAME, INDEX_FILE, LAYOUT_FILE, LAYOUT_VERSION,
};
use crate::archive::read::{self, Event, EventResult};
use crate::archive::MAX_METADATA_SIZE;
use crate::client::Client;
use crate::commands::leases::rfc3339;

/// How long the import lease lives if berthctl dies before deleting it.
const LEASE_TTL: Duration = Duration::from_secs(3600);
/// Events buffered between the reader thread and the uploader (each at most one chunk).
const EVENT_BUFFER: usize = 8;
/// Total of JSON documents (manifests, indexes, configs) kept in memory during one import.
const MAX_DOCUMENTS_TOTAL: u64 = 64 << 20;
/// Link hops followed when resolving a member.
const MAX_LINK_HOPS: usize = 16;

/// Arguments of `image import`.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Archive to import (`docker save` or OCI layout tar, optionally gzip-compressed); `-`
    /// reads standard input.
    pub file: String,
    /// Require the content of every platform, not only this host's.
    #[arg(long)]
    pub all_platforms: bool,
    /// Require the content of this platform (os/arch[/variant]) instead of this host's.
    #[arg(long, conflicts_with = "all_platforms")]
    pub platform: Option<String>,
    /// Also create an image of this name for the archive's index as a whole.
    #[arg(long)]
    pub index_name: Option<String>,
    /// Name for OCI entries whose reference name is only a tag (`NAME:tag`); default
    /// `import-YYYY-MM-DD`, as ctr.
    #[arg(long)]
    pub base_name: Option<String>,
    /// Do not unpack the imported images (by default they are unpacked for this host).
    #[arg(long)]
    pub no_unpack: bool,
    /// Snapshotter to unpack into (berthd's default, overlayfs, when omitted).
    #[arg(long, default_value = "")]
    pub snapshotter: String,
}

/// A blob member of the archive as uploaded.
#[derive(Debug, Clone)]
struct Member {
    digest: String,
    size: i64,
    /// Docker layer media type, by the blob's first bytes.
    layer_type: &'static str,
}

/// How a member is handled.
#[derive(Debug)]
enum MemberKind {
    /// Layout or docker metadata kept in memory.
    Metadata,
    /// Docker's legacy per-layer `json` and `VERSION`: never referenced, skipped.
    Legacy,
    /// A blob to upload; OCI blob names give the digest it must have.
    Blob(Option<String>),
}

fn classify(name: &str) -> Result<MemberKind> {
    if [MANIFEST_FILE, REPOSITORIES_FILE, INDEX_FILE, LAYOUT_FILE].contains(&name) {
        return Ok(MemberKind::Metadata);
    }
    let parts: Vec<&str> = name.split('/').collect();
    match parts.as_slice() {
        ["blobs", alg, hex] => {
            let digest = format!("{alg}:{hex}");
            let parsed = Digest::parse(&digest).map_err(|e| anyhow!("blob {name}: {}", e.message()))?;
            if parsed.algorithm() != berth_core::digest::Algorithm::Sha256 {
                bail!("blob {name}: unsupported digest algorithm {alg} (berth stores sha256 content)");
            }
            Ok(MemberKind::Blob(Some(digest)))
        }
        [_, "VERSION" | "json"] => Ok(MemberKind::Legacy),
        _ => Ok(MemberKind::Blob(None)),
    }
}

/// One image to create.
struct NewImage {
    name: String,
    target: Descriptor,
}

/// State of one import.
struct Importer {
    args: ImportArgs,
    /// Platform whose content must be complete (unless --all-platforms).
    platform: Platform,
    ingest_prefix: String,
    ingests: u64,
    members: HashMap<String, Member>,
    links: HashMap<String, String>,
    metadata: HashMap<String, Vec<u8>>,
    /// Small JSON blobs by digest (manifests, indexes, configs), for the checks after reading.
    documents: HashMap<String, Vec<u8>>,
    documents_total: u64,
    /// Digests committed with their GC labels already.
    labelled: HashSet<String>,
    /// Sizes of everything uploaded, by digest.
    uploaded: HashMap<String, i64>,
    bytes: u64,
}

/// Runs `image import`.
pub async fn run(client: &Client, args: ImportArgs) -> Result<()> {
    let input: Box<dyn Read + Send> = if args.file == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(File::open(&args.file).with_context(|| format!("cannot open {}", args.file))?)
    };
    let host = match &args.platform {
        Some(p) => Platform::parse(p).map_err(|e| anyhow!(e))?,
        None => Platform::host(),
    };
    let started = std::time::Instant::now();
    let mut remote = Remote::new(client);
    remote.create_lease("import", LEASE_TTL).await?;
    let mut importer = Importer {
        args,
        platform: host,
        ingest_prefix: format!("{}-ingest", remote.lease_id()),
        ingests: 0,
        members: HashMap::new(),
        links: HashMap::new(),
        metadata: HashMap::new(),
        documents: HashMap::new(),
        documents_total: 0,
        labelled: HashSet::new(),
        uploaded: HashMap::new(),
        bytes: 0,
    };
    let result = importer.import(&mut remote, input).await;
    // On failure wait for the collection, so that nothing of this import is left when we exit.
    let cleanup = remote.delete_lease(result.is_err()).await;
    let images = result?;
    cleanup?;
    for img in &images {
        println!("{} {}", img.name, img.target.digest);
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "imported {} image(s), {} in {:.2}s ({}/s)",
        images.len(),
        human_size(importer.bytes),
        secs,
        human_size((importer.bytes as f64 / secs.max(1e-6)) as u64)
    );
    // Unpack what this host can run (an import for another platform has nothing to unpack).
    let foreign = importer.args.platform.is_some() && importer.platform != Platform::host();
    if !importer.args.no_unpack && !foreign {
        for img in &images {
            super::unpack::unpack_one(client, &img.name, &importer.args.snapshotter).await?;
        }
    }
    Ok(())
}

impl Importer {
    async fn import(&mut self, remote: &mut Remote<'_>, input: Box<dyn Read + Send>) -> Result<Vec<NewImage>> {
        let mut events = read::spawn(input, EVENT_BUFFER);
        loop {
            match next(&mut events).await? {
                Event::File { name, size } => self.member(remote, &mut events, name, size).await?,
                Event::Link { name, target } => {
                    self.links.insert(name, target);
                }
                Event::End => break,
                other => bail!("archive reader out of step: {other:?}"),
            }
        }
        drop(events);
        let images = if self.metadata.contains_key(INDEX_FILE) {
            self.oci_images(remote).await?
        } else if self.metadata.contains_key(MANIFEST_FILE) {
            self.docker_images(remote).await?
        } else {
            bail!("not an image archive: it has neither {INDEX_FILE} (OCI layout) nor {MANIFEST_FILE} (docker save)");
        };
        if images.is_empty() {
            bail!("the archive names no image: pass --index-name (or --base-name for OCI tags)");
        }
        let mut created = Vec::new();
        for img in &images {
            match remote.put_image(&img.name, &img.target, HashMap::new()).await {
                Ok(true) => created.push(img.name.clone()),
                Ok(false) => {}
                Err(e) => {
                    for name in created {
                        let req = remote.request(berth_proto::containerd::services::images::v1::DeleteImageRequest {
                            name,
                            sync: false,
                        });
                        let _ = remote.images.delete(req).await;
                    }
                    return Err(e);
                }
            }
        }
        Ok(images)
    }

    fn next_ingest(&mut self) -> String {
        self.ingests += 1;
        format!("{}-{}", self.ingest_prefix, self.ingests)
    }

    /// Handles one regular member; consumes its events up to `FileEnd`.
    async fn member(
        &mut self,
        remote: &mut Remote<'_>,
        events: &mut mpsc::Receiver<EventResult>,
        name: String,
        size: u64,
    ) -> Result<()> {
        match classify(&name)? {
            MemberKind::Metadata => {
                if size > MAX_METADATA_SIZE {
                    bail!("oversized manifest: {name} is {size} bytes (limit {})", human_size(MAX_METADATA_SIZE));
                }
                let mut data = Vec::with_capacity(size as usize);
                loop {
                    match next(events).await? {
                        Event::Data(chunk) => data.extend_from_slice(&chunk),
                        Event::FileEnd { .. } => break,
                        other => bail!("archive reader out of step: {other:?}"),
                    }
                }
                self.metadata.insert(name, data);
            }
            MemberKind::Legacy => loop {
                match next(events).await? {
                    Event::Data(_) => {}
                    Event::FileEnd { .. } => break,
                    other => bail!("archive reader out of step: {other:?}"),
                }
            },
            MemberKind::Blob(expected) => self.upload(remote, events, name, size, expected).await?,
        }
        Ok(())
    }

    /// Streams one blob member into the content store.
    async fn upload(
        &mut self,
        remote: &mut Remote<'_>,
        events: &mut mpsc::Receiver<EventResult>,
        name: String,
        size: u64,
        expected: Option<String>,
    ) -> Result<()> {
        let reference = self.next_ingest();
        let mut writer = remote.open_writer(&reference, size as i64, expected.as_deref().unwrap_or("")).await?;
        let streamed = stream_member(events, writer.as_mut(), &name, size).await;
        let (digest, head, kept) = match streamed {
            Ok(v) => v,
            Err(e) => {
                if let Some(w) = writer {
                    w.abort(remote).await;
                }
                return Err(e);
            }
        };
        if let Some(want) = &expected {
            if &digest != want {
                if let Some(w) = writer {
                    w.abort(remote).await;
                }
                bail!("digest mismatch: {name} hashes to {digest}");
            }
        }
        let document = kept.as_deref().and_then(Document::sniff);
        let labels = document.as_ref().map(Document::gc_labels).unwrap_or_default();
        match writer.as_mut() {
            Some(w) => {
                if let Err(e) = w.commit(size as i64, &digest, &labels).await {
                    if let Some(w) = writer {
                        w.abort(remote).await;
                    }
                    return Err(e.context(format!("importing {name}")));
                }
            }
            // Already in the store: make sure it carries the labels all the same.
            None if !labels.is_empty() => remote.add_labels(&digest, &labels).await?,
            None => {}
        }
        if document.is_some() {
            self.labelled.insert(digest.clone());
        }
        if let Some(data) = kept {
            if data.first() == Some(&b'{') || document.is_some() {
                self.documents_total += data.len() as u64;
                if self.documents_total > MAX_DOCUMENTS_TOTAL {
                    bail!(
                        "oversized manifest: the archive's JSON documents exceed {}",
                        human_size(MAX_DOCUMENTS_TOTAL)
                    );
                }
                self.documents.insert(digest.clone(), data);
            }
        }
        self.bytes += size;
        self.uploaded.insert(digest.clone(), size as i64);
        self.members.insert(name, Member { digest, size: size as i64, layer_type: docker::layer_media_type(&head) });
        Ok(())
    }

    /// The member a name refers to, following links.
    fn lookup(&self, name: &str) -> Option<&Member> {
        let mut name = name.trim_start_matches("./").to_string();
        for _ in 0..MAX_LINK_HOPS {
            if let Some(m) = self.members.get(&name) {
                return Some(m);
            }
            name = self.links.get(&name)?.clone();
        }
        None
    }

    /// The bytes of a JSON document: kept from the archive, or read from the store.
    async fn document_bytes(&mut self, remote: &mut Remote<'_>, desc: &Descriptor) -> Result<Vec<u8>> {
        if let Some(d) = self.documents.get(&desc.digest) {
            return Ok(d.clone());
        }
        if desc.size as u64 > MAX_METADATA_SIZE {
            bail!(
                "oversized manifest: {} is {} bytes (limit {})",
                desc.digest,
                desc.size,
                human_size(MAX_METADATA_SIZE)
            );
        }
        remote.read_all(&desc.digest, desc.size, MAX_METADATA_SIZE).await
    }

    /// Checks that a blob is in the archive or the store, with the size its descriptor says.
    async fn require(&mut self, remote: &mut Remote<'_>, desc: &Descriptor, what: &str) -> Result<()> {
        Digest::parse(&desc.digest).map_err(|e| anyhow!("{what}: {}", e.message()))?;
        let size = match self.uploaded.get(&desc.digest) {
            Some(s) => *s,
            None => match remote.info(&desc.digest).await? {
                Some(info) => info.size,
                None => bail!("missing blob {} ({what}): not in the archive", desc.digest),
            },
        };
        if size != desc.size {
            bail!("blob {} ({what}) is {size} bytes, its descriptor says {}", desc.digest, desc.size);
        }
        Ok(())
    }

    /// Walks an image from `root`: every blob it needs (for this host's platform unless
    /// --all-platforms) must be present; manifests and indexes get their GC labels. Returns the
    /// root's media type (filled in from the blob when the descriptor has none).
    async fn check_image(&mut self, remote: &mut Remote<'_>, root: &Descriptor, name: &str) -> Result<String> {
        let mut root_type = root.media_type.clone();
        let mut stack = vec![(root.clone(), format!("image {name}"))];
        let mut seen = HashSet::new();
        while let Some((desc, what)) = stack.pop() {
            if !seen.insert(desc.digest.clone()) {
                continue;
            }
            self.require(remote, &desc, &what).await?;
            let is_root = desc.digest == root.digest;
            if !(oci::is_index(&desc.media_type) || oci::is_manifest(&desc.media_type) || is_root) {
                continue;
            }
            let bytes = self.document_bytes(remote, &desc).await?;
            let doc = Document::parse(&desc.media_type, &bytes).map_err(|e| anyhow!("{what} {}: {e}", desc.digest))?;
            if is_root && root_type.is_empty() {
                root_type = match &doc {
                    Document::Index(i) if !i.media_type.is_empty() => i.media_type.clone(),
                    Document::Index(_) => oci::MEDIA_TYPE_OCI_INDEX.into(),
                    Document::Manifest(m) if !m.media_type.is_empty() => m.media_type.clone(),
                    Document::Manifest(_) => oci::MEDIA_TYPE_OCI_MANIFEST.into(),
                };
            }
            if !self.labelled.contains(&desc.digest) {
                remote.add_labels(&desc.digest, &doc.gc_labels()).await?;
                self.labelled.insert(desc.digest.clone());
            }
            match doc {
                Document::Manifest(m) => {
                    stack.push((m.config.clone(), format!("config of {}", desc.digest)));
                    for (i, l) in m.layers.iter().enumerate() {
                        stack.push((l.clone(), format!("layer {i} of {}", desc.digest)));
                    }
                }
                Document::Index(idx) => {
                    let wanted: Vec<&Descriptor> = idx
                        .manifests
                        .iter()
                        .filter(|m| {
                            self.args.all_platforms || m.platform.as_ref().is_none_or(|p| self.platform.matches(p))
                        })
                        .collect();
                    if wanted.is_empty() && !idx.manifests.is_empty() {
                        bail!("image {name} has no manifest for {} (use --all-platforms)", self.platform);
                    }
                    for m in wanted {
                        let mut child = m.clone();
                        if child.media_type.is_empty() {
                            child.media_type = oci::MEDIA_TYPE_OCI_MANIFEST.into();
                        }
                        stack.push((child, format!("manifest of {}", desc.digest)));
                    }
                }
            }
        }
        Ok(root_type)
    }

    /// The image name of an OCI index entry, as ctr derives it.
    fn oci_name(&self, desc: &Descriptor) -> Result<Option<String>> {
        if let Some(n) = desc.annotations.get(ANNOTATION_IMAGE_NAME) {
            return normalize_name(n).map(Some);
        }
        let Some(r) = desc.annotations.get(ANNOTATION_REF_NAME) else { return Ok(None) };
        if r.contains(['/', ':', '@']) {
            return normalize_name(r).map(Some);
        }
        let base = match &self.args.base_name {
            Some(b) => b.clone(),
            None => format!("import-{}", &rfc3339(SystemTime::now())[..10]),
        };
        normalize_name(&format!("{base}:{r}")).map(Some)
    }

    async fn oci_images(&mut self, remote: &mut Remote<'_>) -> Result<Vec<NewImage>> {
        if let Some(layout) = self.metadata.get(LAYOUT_FILE) {
            let layout: ImageLayout =
                serde_json::from_slice(layout).map_err(|e| anyhow!("{LAYOUT_FILE} is not valid JSON: {e}"))?;
            if layout.image_layout_version != LAYOUT_VERSION {
                bail!("unsupported OCI layout version {:?}", layout.image_layout_version);
            }
        }
        let index_json = self.metadata.get(INDEX_FILE).cloned().unwrap_or_default();
        let index: Index =
            serde_json::from_slice(&index_json).map_err(|e| anyhow!("{INDEX_FILE} is not valid JSON: {e}"))?;
        let mut images = Vec::new();
        for entry in &index.manifests {
            let name = self.oci_name(entry)?;
            let label = name.clone().unwrap_or_else(|| entry.digest.clone());
            let mut target = entry.clone();
            target.media_type = self.check_image(remote, entry, &label).await?;
            target.platform = None;
            if let Some(name) = name {
                images.push(NewImage { name, target });
            }
        }
        if let Some(index_name) = self.args.index_name.clone() {
            let name = normalize_name(&index_name)?;
            let labels = Document::Index(index.clone()).gc_labels();
            let reference = self.next_ingest();
            let digest = remote.write_blob(&reference, &index_json, &labels).await?;
            images.push(NewImage {
                name,
                target: Descriptor::new(oci::MEDIA_TYPE_OCI_INDEX, &digest, index_json.len() as i64),
            });
        }
        Ok(images)
    }

    async fn docker_images(&mut self, remote: &mut Remote<'_>) -> Result<Vec<NewImage>> {
        let entries = docker::parse_manifest_file(&self.metadata[MANIFEST_FILE]).map_err(|e| anyhow!(e))?;
        if entries.is_empty() {
            bail!("{MANIFEST_FILE} lists no images");
        }
        let mut images = Vec::new();
        let mut index =
            Index { schema_version: 2, media_type: String::new(), manifests: Vec::new(), annotations: BTreeMap::new() };
        for entry in entries {
            let config = self.lookup(&entry.config).cloned().ok_or_else(|| {
                anyhow!("missing blob: config {:?} named in {MANIFEST_FILE} is not in the archive", entry.config)
            })?;
            let config_desc = Descriptor::new(oci::MEDIA_TYPE_DOCKER_CONFIG, &config.digest, config.size);
            let config_json = self.document_bytes(remote, &config_desc).await?;
            let platform: ConfigPlatform = serde_json::from_slice(&config_json)
                .map_err(|e| anyhow!("config {:?} is not valid JSON: {e}", entry.config))?;
            let mut layers = Vec::new();
            for path in &entry.layers {
                let l = self.lookup(path).ok_or_else(|| {
                    anyhow!("missing blob: layer {path:?} named in {MANIFEST_FILE} is not in the archive")
                })?;
                layers.push((l.digest.clone(), l.size, l.layer_type));
            }
            let manifest = docker::schema2_manifest((&config.digest, config.size), &layers);
            let labels = Document::sniff(&manifest).map(|d| d.gc_labels()).unwrap_or_default();
            let reference = self.next_ingest();
            let digest = remote.write_blob(&reference, &manifest, &labels).await?;
            let mut desc = Descriptor::new(oci::MEDIA_TYPE_DOCKER_MANIFEST, &digest, manifest.len() as i64);
            if entry.repo_tags.is_empty() {
                desc.platform = Some(platform.platform());
                index.manifests.push(desc);
                continue;
            }
            for tag in &entry.repo_tags {
                let name = normalize_name(tag)?;
                let mut target = desc.clone();
                target.annotations.insert(ANNOTATION_IMAGE_NAME.into(), name.clone());
                target.annotations.insert(ANNOTATION_REF_NAME.into(), ref_name(&name));
                let mut in_index = target.clone();
                in_index.platform = Some(platform.platform());
                index.manifests.push(in_index);
                images.push(NewImage { name, target });
            }
        }
        if let Some(index_name) = self.args.index_name.clone() {
            let name = normalize_name(&index_name)?;
            let bytes = serde_json::to_vec(&index)?;
            let labels = Document::Index(index).gc_labels();
            let reference = self.next_ingest();
            let digest = remote.write_blob(&reference, &bytes, &labels).await?;
            images.push(NewImage {
                name,
                target: Descriptor::new(oci::MEDIA_TYPE_OCI_INDEX, &digest, bytes.len() as i64),
            });
        }
        Ok(images)
    }
}

/// The OCI reference name containerd records: the tag, or the whole name when it has none.
fn ref_name(name: &str) -> String {
    match berth_core::reference::Reference::parse(name) {
        Ok(r) => r.tag.unwrap_or_else(|| name.to_string()),
        Err(_) => name.to_string(),
    }
}

/// The next event; the reader's own error, or a clear one if it vanished.
async fn next(events: &mut mpsc::Receiver<EventResult>) -> Result<Event> {
    match events.recv().await {
        Some(Ok(ev)) => Ok(ev),
        Some(Err(e)) => Err(anyhow!(e)),
        None => Err(anyhow!("archive reader stopped unexpectedly")),
    }
}

/// Forwards one member's data to `writer` (when there is one) and returns its digest, its
/// first bytes (to sniff compression) and, for small members that look like JSON, all of it.
async fn stream_member(
    events: &mut mpsc::Receiver<EventResult>,
    mut writer: Option<&mut BlobWriter>,
    name: &str,
    size: u64,
) -> Result<(String, Vec<u8>, Option<Vec<u8>>)> {
    let mut head = Vec::new();
    let mut kept: Option<Vec<u8>> = None;
    let mut first = true;
    loop {
        match next(events).await? {
            Event::Data(chunk) => {
                if first {
                    first = false;
                    head = chunk[..chunk.len().min(16)].to_vec();
                    let json_like = chunk.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
                    if size <= MAX_METADATA_SIZE && json_like {
                        kept = Some(Vec::with_capacity(size as usize));
                    }
                }
                if let Some(k) = kept.as_mut() {
                    k.extend_from_slice(&chunk);
                }
                if let Some(w) = writer.as_deref_mut() {
                    w.write(chunk).await.with_context(|| format!("importing {name}"))?;
                }
            }
            Event::FileEnd { digest } => return Ok((digest, head, kept)),
            other => bail!("archive reader out of step: {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_members() {
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert!(matches!(classify("manifest.json").unwrap(), MemberKind::Metadata));
        assert!(matches!(classify("index.json").unwrap(), MemberKind::Metadata));
        assert!(matches!(classify(&format!("{hex}/json")).unwrap(), MemberKind::Legacy));
        assert!(matches!(classify(&format!("{hex}/layer.tar")).unwrap(), MemberKind::Blob(None)));
        match classify(&format!("blobs/sha256/{hex}")).unwrap() {
            MemberKind::Blob(Some(d)) => assert_eq!(d, format!("sha256:{hex}")),
            _ => panic!("not a blob"),
        }
        assert!(classify("blobs/sha256/nothex").is_err());
        assert!(classify(&format!("blobs/sha512/{}", "a".repeat(128))).unwrap_err().to_string().contains("sha256"));
    }

    #[test]
    fn ref_names_are_tags() {
        assert_eq!(ref_name("docker.io/library/busybox:1.36"), "1.36");
        let d = format!("docker.io/library/busybox@sha256:{}", "a".repeat(64));
        assert_eq!(ref_name(&d), d);
    }
}
