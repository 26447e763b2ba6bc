//! OCI image-spec documents as JSON (descriptors, manifests, indexes, the platform part of a
//! config), the media types and annotations Berth reads, and containerd's GC labels.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use berth_core::descriptor::{
    is_index, is_manifest, MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST,
};

/// File naming the layout version at the root of an OCI layout.
pub const LAYOUT_FILE: &str = "oci-layout";
/// The only layout version there is.
pub const LAYOUT_VERSION: &str = "1.0.0";
/// The entry point of an OCI layout.
pub const INDEX_FILE: &str = "index.json";
/// Annotation containerd stores the full image name under.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// OCI annotation naming a reference (usually just the tag).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Label prefix telling the garbage collector which content a blob references.
pub const GC_REF_CONTENT: &str = "containerd.io/gc.ref.content";
/// Label giving a lease its expiry time.
pub const GC_EXPIRE: &str = "containerd.io/gc.expire";

/// Docker schema 2 image config.
pub const MEDIA_TYPE_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker schema 2 uncompressed layer.
pub const MEDIA_TYPE_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Docker schema 2 gzip layer.
pub const MEDIA_TYPE_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// An OCI platform as JSON (field order as the Go image-spec types marshal it).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture in GOARCH terms.
    #[serde(default)]
    pub architecture: String,
    /// Operating system.
    #[serde(default)]
    pub os: String,
    /// OS version (Windows).
    #[serde(rename = "os.version", default, skip_serializing_if = "String::is_empty")]
    pub os_version: String,
    /// CPU variant, e.g. `v8`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
}

impl Platform {
    /// The platform berthctl runs on.
    pub fn host() -> Platform {
        let h = berth_core::Platform::host();
        Platform { architecture: h.architecture, os: h.os, os_version: String::new(), variant: h.variant }
    }

    /// Parses `os/arch[/variant]`.
    pub fn parse(s: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => {
                Ok(Platform { os: os.to_string(), architecture: arch.to_string(), ..Default::default() })
            }
            [os, arch, variant] if !os.is_empty() && !arch.is_empty() && !variant.is_empty() => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: variant.to_string(),
                ..Default::default()
            }),
            _ => Err(format!("invalid platform {s:?}: want os/arch[/variant]")),
        }
    }

    /// Whether an image for `other` runs here: same os and architecture, and the same variant
    /// when both name one (arm64's `v8` is its default).
    pub fn matches(&self, other: &Platform) -> bool {
        let variant = |p: &Platform| {
            if p.architecture == "arm64" && p.variant == "v8" {
                String::new()
            } else {
                p.variant.clone()
            }
        };
        let (a, b) = (variant(self), variant(other));
        self.os == other.os && self.architecture == other.architecture && (a.is_empty() || b.is_empty() || a == b)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

/// A content descriptor (field order as Go's image-spec marshals it, so manifests Berth writes
/// are byte-identical to containerd's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// Media type of the referenced blob.
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// Digest of the referenced blob.
    pub digest: String,
    /// Size of the referenced blob.
    pub size: i64,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Platform of a manifest in an index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

impl Descriptor {
    /// A descriptor with no annotations or platform.
    pub fn new(media_type: &str, digest: &str, size: i64) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest: digest.into(),
            size,
            annotations: BTreeMap::new(),
            platform: None,
        }
    }

    /// The wire form (the platform has no field there).
    pub fn to_proto(&self) -> berth_proto::containerd::types::Descriptor {
        berth_proto::containerd::types::Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.size,
            annotations: self.annotations.clone().into_iter().collect(),
        }
    }

    /// From the wire form.
    pub fn from_proto(d: &berth_proto::containerd::types::Descriptor) -> Descriptor {
        Descriptor {
            media_type: d.media_type.clone(),
            digest: d.digest.clone(),
            size: d.size,
            annotations: d.annotations.clone().into_iter().collect(),
            platform: None,
        }
    }
}

/// An image manifest (OCI or Docker schema 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// The manifest's own media type.
    #[serde(rename = "mediaType", default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    /// The image config.
    pub config: Descriptor,
    /// Layers, bottom first.
    pub layers: Vec<Descriptor>,
}

/// An image index or Docker manifest list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    /// Always 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// The index's own media type.
    #[serde(rename = "mediaType", default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    /// The manifests (or nested indexes).
    pub manifests: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// `oci-layout`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageLayout {
    /// Must be [`LAYOUT_VERSION`].
    #[serde(rename = "imageLayoutVersion")]
    pub image_layout_version: String,
}

/// The platform fields of an image config.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConfigPlatform {
    /// Architecture.
    #[serde(default)]
    pub architecture: String,
    /// Operating system.
    #[serde(default)]
    pub os: String,
    /// Variant.
    #[serde(default)]
    pub variant: String,
}

impl ConfigPlatform {
    /// As a platform.
    pub fn platform(&self) -> Platform {
        Platform {
            architecture: self.architecture.clone(),
            os: self.os.clone(),
            variant: self.variant.clone(),
            ..Default::default()
        }
    }
}

/// What a JSON blob turned out to be.
#[derive(Debug, Clone)]
pub enum Document {
    /// An image manifest.
    Manifest(Manifest),
    /// An index or manifest list.
    Index(Index),
}

impl Document {
    /// Parses a manifest or index by its shape (the `mediaType` field is optional in OCI).
    /// None when the blob is neither (a config, a layer, anything else).
    pub fn sniff(blob: &[u8]) -> Option<Document> {
        let first = blob.iter().find(|b| !b.is_ascii_whitespace())?;
        if *first != b'{' {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(blob).ok()?;
        if v.get("manifests").is_some_and(|m| m.is_array()) {
            return serde_json::from_value(v).ok().map(Document::Index);
        }
        if v.get("config").is_some_and(|c| c.is_object()) && v.get("layers").is_some_and(|l| l.is_array()) {
            return serde_json::from_value(v).ok().map(Document::Manifest);
        }
        None
    }

    /// Parses a blob that its descriptor says is a manifest or index.
    pub fn parse(media_type: &str, blob: &[u8]) -> Result<Document, String> {
        if is_index(media_type) {
            return serde_json::from_slice(blob).map(Document::Index).map_err(|e| format!("invalid index: {e}"));
        }
        if is_manifest(media_type) {
            return serde_json::from_slice(blob).map(Document::Manifest).map_err(|e| format!("invalid manifest: {e}"));
        }
        Document::sniff(blob).ok_or_else(|| format!("unsupported media type {media_type:?}"))
    }

    /// The labels containerd puts on a manifest (`config`, `l.<i>`) or index (`m.<i>`) so the
    /// garbage collector keeps its children.
    pub fn gc_labels(&self) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        match self {
            Document::Manifest(m) => {
                labels.insert(format!("{GC_REF_CONTENT}.config"), m.config.digest.clone());
                for (i, l) in m.layers.iter().enumerate() {
                    labels.insert(format!("{GC_REF_CONTENT}.l.{i}"), l.digest.clone());
                }
            }
            Document::Index(idx) => {
                for (i, m) in idx.manifests.iter().enumerate() {
                    labels.insert(format!("{GC_REF_CONTENT}.m.{i}"), m.digest.clone());
                }
            }
        }
        labels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn manifest_marshals_like_go() {
        let m = Manifest {
            schema_version: 2,
            media_type: MEDIA_TYPE_DOCKER_MANIFEST.into(),
            config: Descriptor::new(MEDIA_TYPE_DOCKER_CONFIG, D, 2),
            layers: vec![Descriptor::new(MEDIA_TYPE_DOCKER_LAYER_GZIP, D, 3)],
        };
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(
            json,
            format!(
                "{{\"schemaVersion\":2,\"mediaType\":\"{MEDIA_TYPE_DOCKER_MANIFEST}\",\"config\":{{\"mediaType\":\"{MEDIA_TYPE_DOCKER_CONFIG}\",\"digest\":\"{D}\",\"size\":2}},\"layers\":[{{\"mediaType\":\"{MEDIA_TYPE_DOCKER_LAYER_GZIP}\",\"digest\":\"{D}\",\"size\":3}}]}}"
            )
        );
    }

    #[test]
    fn sniffs_documents_and_labels_children() {
        let m = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{D}","size":1}},"layers":[{{"digest":"{D}","size":2}}]}}"#
        );
        let doc = Document::sniff(m.as_bytes()).unwrap();
        let labels = doc.gc_labels();
        assert_eq!(labels.get("containerd.io/gc.ref.content.config").map(String::as_str), Some(D));
        assert_eq!(labels.get("containerd.io/gc.ref.content.l.0").map(String::as_str), Some(D));
        let i = format!(r#"{{"schemaVersion":2,"manifests":[{{"digest":"{D}","size":1}}]}}"#);
        assert!(Document::sniff(i.as_bytes()).unwrap().gc_labels().contains_key("containerd.io/gc.ref.content.m.0"));
        assert!(Document::sniff(br#"{"architecture":"amd64","rootfs":{}}"#).is_none());
        assert!(Document::sniff(b"\x1f\x8b not json").is_none());
    }

    #[test]
    fn platforms_match_like_containerd() {
        let host = Platform::parse("linux/arm64/v8").unwrap();
        assert!(host.matches(&Platform::parse("linux/arm64").unwrap()));
        assert!(!host.matches(&Platform::parse("linux/amd64").unwrap()));
        let arm = Platform::parse("linux/arm/v7").unwrap();
        assert!(!arm.matches(&Platform::parse("linux/arm/v6").unwrap()));
        assert!(Platform::parse("linux").is_err());
        assert_eq!(Platform::parse("linux/arm/v7").unwrap().to_string(), "linux/arm/v7");
    }
}
