//! Settings of `[plugins."io.berth.transfer.v1.distribution"]`: concurrency, where credentials
//! come from, and per-registry TLS, plain-HTTP permission and mirrors.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The distribution plugin's config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistributionConfig {
    /// Blobs downloaded at once per pull.
    pub max_concurrent_downloads: usize,
    /// Blobs uploaded at once per push.
    pub max_concurrent_uploads: usize,
    /// Upload blobs larger than this in PATCH chunks of this size; 0: one streamed PUT.
    pub push_chunk_size: u64,
    /// A Docker `config.json` to read credentials from (empty: none).
    pub docker_config: String,
    /// Per registry host (`host[:port]`) settings.
    pub registries: BTreeMap<String, RegistryHostConfig>,
}

impl Default for DistributionConfig {
    fn default() -> Self {
        DistributionConfig {
            max_concurrent_downloads: 6,
            max_concurrent_uploads: 4,
            push_chunk_size: 0,
            docker_config: "/root/.docker/config.json".into(),
            registries: BTreeMap::new(),
        }
    }
}

/// Settings of one registry host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryHostConfig {
    /// PEM file of CA certificates trusted for this host (in addition to the system roots).
    pub ca: String,
    /// Allow plain HTTP and unverified TLS for this host.
    pub insecure: bool,
    /// Mirrors tried in order before the host itself: `http(s)://host[:port]` or `host[:port]`.
    pub mirrors: Vec<String>,
}

/// Whether `host` (with optional port) is the local machine, where Docker allows plain HTTP.
pub fn is_local(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => host,
    };
    matches!(name, "localhost" | "127.0.0.1" | "[::1]" | "::1") || name.starts_with("127.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_hosts() {
        assert!(is_local("localhost:5000"));
        assert!(is_local("127.0.0.1:38211"));
        assert!(is_local("[::1]:5000"));
        assert!(!is_local("registry.example:5000"));
        assert!(!is_local("docker.io"));
    }

    #[test]
    fn config_parses() {
        let cfg: DistributionConfig = toml::from_str(
            r#"
            [registries."127.0.0.1:5000"]
            ca = "/tmp/ca.pem"
            insecure = true
            mirrors = ["http://127.0.0.1:6000"]
            "#,
        )
        .unwrap();
        assert_eq!(cfg.registries["127.0.0.1:5000"].mirrors, vec!["http://127.0.0.1:6000".to_string()]);
        assert_eq!(cfg.max_concurrent_downloads, 6);
    }
}
