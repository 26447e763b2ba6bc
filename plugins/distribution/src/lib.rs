//! Registry distribution (OCI distribution spec v2) for berthd: pull images into the content
//! store and push them from it.
//!
//! A thin client on `reqwest` (rustls; the system roots plus a CA per registry) rather than
//! `oci-client`: blobs must stream straight into our resumable ingests, resume at the
//! ingest's offset with `Range`, try mirrors in order, share Bearer tokens across pulls and
//! mount blobs across repositories; that crate buffers or hides each of these.
//!
//! Async on the daemon's tokio runtime (network waits dominate); file writes and hashing run
//! on blocking threads fed through bounded channels, so no worker thread ever blocks on disk.
//!
//! Labels written, as containerd: `containerd.io/gc.ref.content.{m.N,config,l.N}` on indexes
//! and manifests (the collector follows them) and `containerd.io/distribution.source.<host>`
//! = comma-separated repositories on every blob fetched from or pushed to `<host>` (push uses
//! it to mount a blob from another repository instead of uploading it).

pub mod auth;
pub mod client;
pub mod config;
pub mod progress;
pub mod pull;
pub mod push;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};

use berth_content::ContentStore;
use berth_core::{Descriptor, Digest, Error, Platform, Result};

pub use auth::{CredentialSources, Credentials};
pub use client::RegistryClient;
pub use config::{DistributionConfig, RegistryHostConfig};
pub use progress::{Event, Progress, Status};
pub use pull::{PullNotify, Pulled};

/// Label prefix naming the repositories of a registry that hold a blob.
pub const SOURCE_LABEL_PREFIX: &str = "containerd.io/distribution.source.";

/// The label key naming which repositories of `host` hold a blob.
pub fn source_label(host: &str) -> String {
    format!("{SOURCE_LABEL_PREFIX}{host}")
}

/// `containerd.io/gc.ref.content.*` labels for the children of a document: `config`, or a
/// kind (`l` for layers, `m` for manifests) numbered in order.
pub fn gc_labels(children: &[(&str, &Descriptor)]) -> BTreeMap<String, String> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    let mut out = BTreeMap::new();
    for (kind, d) in children {
        let key = if *kind == "config" {
            "containerd.io/gc.ref.content.config".to_string()
        } else {
            let n = counts.entry(kind).or_default();
            *n += 1;
            format!("containerd.io/gc.ref.content.{kind}.{}", *n - 1)
        };
        out.insert(key, d.digest.clone());
    }
    out
}

/// Which manifests of an index to take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlatformChoice {
    /// Every manifest.
    All,
    /// The best match for this platform.
    One(Platform),
}

/// Parses `os/arch[/variant]` (`linux/arm64/v8`); `arch` alone means linux.
pub fn parse_platform(s: &str) -> Result<Platform> {
    let parts: Vec<&str> = s.trim().split('/').collect();
    let bad = || Error::invalid_argument(format!("invalid platform {s:?}: want os/arch[/variant]"));
    let (os, arch, variant) = match parts.as_slice() {
        [a] if !a.is_empty() => ("linux", *a, ""),
        [o, a] => (*o, *a, ""),
        [o, a, v] => (*o, *a, *v),
        _ => return Err(bad()),
    };
    if os.is_empty() || arch.is_empty() {
        return Err(bad());
    }
    let arch = match arch {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let variant = if arch == "arm64" && variant.is_empty() { "v8" } else { variant };
    Ok(Platform { os: os.to_ascii_lowercase(), architecture: arch.to_string(), variant: variant.to_string() })
}

/// The lock of one blob being fetched, held weakly by the in-flight map.
type InflightLock = Weak<tokio::sync::Mutex<()>>;

/// The registry distribution service of one daemon.
pub struct Distribution {
    client: RegistryClient,
    content: ContentStore,
    inflight: Mutex<HashMap<(String, Digest), InflightLock>>,
}

impl Distribution {
    /// A distribution service over `content`, with `config` and credentials from `creds`.
    pub fn new(config: DistributionConfig, creds: CredentialSources, content: ContentStore) -> Self {
        Distribution { client: RegistryClient::new(config, creds), content, inflight: Mutex::new(HashMap::new()) }
    }

    /// The registry client.
    pub fn client(&self) -> &RegistryClient {
        &self.client
    }

    /// The lock every transfer of blob `digest` in `ns` holds: one fetch at a time, and the
    /// ones that wait find the blob committed.
    fn inflight(&self, ns: &str, digest: &Digest) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, w| w.strong_count() > 0);
        let key = (ns.to_string(), digest.clone());
        if let Some(l) = map.get(&key).and_then(Weak::upgrade) {
            return l;
        }
        let l = Arc::new(tokio::sync::Mutex::new(()));
        map.insert(key, Arc::downgrade(&l));
        l
    }

    /// Adds `repo` to the repositories of `registry` that blob `digest` is known in (best
    /// effort: the label only saves uploads).
    pub(crate) async fn record_source(&self, ns: &str, digest: &Digest, registry: &str, repo: &str) {
        let (content, ns, d, label, repo) =
            (self.content.clone(), ns.to_string(), digest.clone(), source_label(registry), repo.to_string());
        let _ = tokio::task::spawn_blocking(move || {
            let info = content.info(&ns, &d)?;
            let mut repos: Vec<String> =
                info.labels.get(&label).map(|v| v.split(',').map(str::to_string).collect()).unwrap_or_default();
            if repos.contains(&repo) {
                return Ok(());
            }
            repos.push(repo);
            let value = repos.join(",");
            content.update(&ns, &d, BTreeMap::from([(label.clone(), value)]), &[format!("labels.{label}")]).map(|_| ())
        })
        .await;
    }

    /// Checks `creds` against registry `host` and stores them in berth's credentials file.
    pub async fn login(&self, host: &str, creds: &Credentials) -> Result<()> {
        self.client.check_login(host, creds).await?;
        let (sources, host, creds) = (self.client.credentials().clone(), host.to_string(), creds.clone());
        tokio::task::spawn_blocking(move || sources.store(&host, &creds))
            .await
            .map_err(|e| Error::internal(format!("store credentials: {e}")))?
    }

    /// Forgets the stored credentials of `host`.
    pub async fn logout(&self, host: &str) -> Result<()> {
        let (sources, host) = (self.client.credentials().clone(), host.to_string());
        tokio::task::spawn_blocking(move || sources.remove(&host))
            .await
            .map_err(|e| Error::internal(format!("remove credentials: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse() {
        assert_eq!(parse_platform("linux/amd64").unwrap().to_string(), "linux/amd64");
        assert_eq!(parse_platform("linux/arm64").unwrap().to_string(), "linux/arm64/v8");
        assert_eq!(parse_platform("arm64").unwrap().os, "linux");
        assert!(parse_platform("a/b/c/d").is_err());
        assert!(parse_platform("/amd64").is_err());
    }

    #[test]
    fn gc_labels_number_children() {
        let d =
            |x: &str| Descriptor { media_type: "m".into(), digest: x.into(), size: 1, annotations: BTreeMap::new() };
        let (c, l0, l1) = (d("c"), d("a"), d("b"));
        let labels = gc_labels(&[("config", &c), ("l", &l0), ("l", &l1)]);
        assert_eq!(labels["containerd.io/gc.ref.content.config"], "c");
        assert_eq!(labels["containerd.io/gc.ref.content.l.1"], "b");
    }
}
