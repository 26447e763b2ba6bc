//! The OCI / Docker image documents Berth reads: indexes (manifest lists), manifests and image
//! configs, with platform matching and chain IDs. Unknown fields are ignored; missing required
//! ones are clear errors.

use serde::{Deserialize, Serialize};

use crate::descriptor::{is_index, is_manifest};
use crate::{Descriptor, Digest, Error, Platform};

/// Largest manifest, index or config accepted (containerd caps manifests at 4 MiB too).
pub const MAX_DOCUMENT_SIZE: u64 = 4 << 20;

/// A platform as written in an index entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexPlatform {
    /// Architecture (GOARCH).
    #[serde(default)]
    pub architecture: String,
    /// OS (GOOS).
    #[serde(default)]
    pub os: String,
    /// CPU variant.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
}

/// An entry of an index: a descriptor with an optional platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// The manifest.
    #[serde(flatten)]
    pub descriptor: Descriptor,
    /// Its platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<IndexPlatform>,
}

/// An OCI image index or Docker manifest list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    /// Entries.
    pub manifests: Vec<IndexEntry>,
}

/// An OCI or Docker schema 2 image manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The image config.
    pub config: Descriptor,
    /// Layers, bottom first.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// The rootfs section of an image config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    /// `layers`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Uncompressed layer digests, bottom first.
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// The runtime defaults of an image config (the parts Berth uses).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    /// `User`.
    #[serde(default)]
    pub user: String,
    /// `Env`.
    #[serde(default)]
    pub env: Option<Vec<String>>,
    /// `Entrypoint`.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// `Cmd`.
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// `WorkingDir`.
    #[serde(default)]
    pub working_dir: String,
}

/// An image config (the parts Berth uses).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// Architecture.
    #[serde(default)]
    pub architecture: String,
    /// OS.
    #[serde(default)]
    pub os: String,
    /// CPU variant.
    #[serde(default)]
    pub variant: String,
    /// Runtime defaults.
    #[serde(default)]
    pub config: Option<RunConfig>,
    /// Layer digests.
    #[serde(default)]
    pub rootfs: RootFs,
}

fn parse<T: for<'de> Deserialize<'de>>(what: &str, bytes: &[u8]) -> Result<T, Error> {
    if bytes.len() as u64 > MAX_DOCUMENT_SIZE {
        return Err(Error::invalid_argument(format!(
            "{what} is {} bytes, over the {MAX_DOCUMENT_SIZE}-byte cap",
            bytes.len()
        )));
    }
    serde_json::from_slice(bytes).map_err(|e| Error::invalid_argument(format!("{what} is not valid JSON: {e}")))
}

impl Index {
    /// Parses an index.
    pub fn parse(bytes: &[u8]) -> Result<Index, Error> {
        parse("image index", bytes)
    }

    /// The manifest for `platform`: an exact variant match first, then any variant of the same
    /// os/architecture (amd64 has none), as containerd's default matcher.
    pub fn select(&self, platform: &Platform) -> Result<&IndexEntry, Error> {
        let candidates: Vec<&IndexEntry> = self
            .manifests
            .iter()
            .filter(|m| is_manifest(&m.descriptor.media_type) || is_index(&m.descriptor.media_type))
            .filter(|m| {
                m.platform.as_ref().is_some_and(|p| p.os == platform.os && p.architecture == platform.architecture)
            })
            .collect();
        candidates
            .iter()
            .find(|m| m.platform.as_ref().is_some_and(|p| p.variant == platform.variant))
            .or_else(|| candidates.first())
            .copied()
            .ok_or_else(|| Error::not_found(format!("no manifest for platform {platform} in the image index")))
    }
}

impl Manifest {
    /// Parses a manifest.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, Error> {
        let m: Manifest = parse("image manifest", bytes)?;
        m.config.validate().map_err(|e| e.context("manifest config"))?;
        for l in &m.layers {
            l.validate().map_err(|e| e.context("manifest layer"))?;
        }
        Ok(m)
    }
}

impl ImageConfig {
    /// Parses an image config.
    pub fn parse(bytes: &[u8]) -> Result<ImageConfig, Error> {
        parse("image config", bytes)
    }

    /// The diff_ids as digests.
    pub fn diff_ids(&self) -> Result<Vec<Digest>, Error> {
        self.rootfs.diff_ids.iter().map(|d| Digest::parse(d).map_err(|e| e.context("image config diff_id"))).collect()
    }
}

/// Chain IDs of a stack of layers: the first is its diff_id, each next one
/// `sha256(parent_chain + " " + diff_id)`.
pub fn chain_ids(diff_ids: &[Digest], sha256: impl Fn(&[u8]) -> Digest) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(parent) => sha256(format!("{parent} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(arch: &str, variant: &str) -> String {
        format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{}","size":1,"platform":{{"os":"linux","architecture":"{arch}","variant":"{variant}"}}}}"#,
            "a".repeat(64)
        )
    }

    #[test]
    fn selects_platform() {
        let idx = Index::parse(
            format!(r#"{{"manifests":[{},{},{}]}}"#, entry("arm", "v6"), entry("arm", "v7"), entry("amd64", ""))
                .as_bytes(),
        )
        .unwrap();
        let p = |arch: &str, v: &str| Platform { os: "linux".into(), architecture: arch.into(), variant: v.into() };
        assert_eq!(idx.select(&p("arm", "v7")).unwrap().platform.as_ref().unwrap().variant, "v7");
        assert_eq!(idx.select(&p("amd64", "")).unwrap().platform.as_ref().unwrap().architecture, "amd64");
        assert_eq!(
            idx.select(&p("arm", "v8")).unwrap().platform.as_ref().unwrap().variant,
            "v6",
            "falls back to any variant"
        );
        assert_eq!(idx.select(&p("s390x", "")).unwrap_err().kind(), crate::ErrorKind::NotFound);
    }

    #[test]
    fn rejects_bad_documents() {
        assert!(Manifest::parse(b"not json").is_err());
        assert!(Manifest::parse(br#"{"config":{"mediaType":"x","digest":"sha256:bad","size":1}}"#).is_err());
        let big = vec![b' '; (MAX_DOCUMENT_SIZE + 1) as usize];
        assert!(ImageConfig::parse(&big).unwrap_err().to_string().contains("cap"));
    }

    #[test]
    fn chain_ids_follow_the_spec() {
        let d = |c: char| Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap();
        let fake = |b: &[u8]| Digest::sha256_from_bytes(&[b.len() as u8; 32]);
        let ids = chain_ids(&[d('a'), d('b')], fake);
        assert_eq!(ids[0], d('a'));
        let expected_input = format!("{} {}", d('a'), d('b'));
        assert_eq!(ids[1], fake(expected_input.as_bytes()));
    }
}
