//! berthd's TOML configuration: defaults, loading, and command-line overrides.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Default config file path.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/berth/config.toml";
/// Default persistent root.
pub const DEFAULT_ROOT: &str = "/var/lib/berth";
/// Default runtime state directory.
pub const DEFAULT_STATE: &str = "/run/berth";
/// Default core gRPC socket.
pub const DEFAULT_ADDRESS: &str = "/run/berth/berth.sock";
/// Config file format version this build understands.
pub const CONFIG_VERSION: u32 = 1;

/// The whole daemon configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Format version of this file.
    pub version: u32,
    /// Persistent data: content, metadata, snapshots.
    pub root: PathBuf,
    /// Runtime state: sockets, shims (lost on reboot).
    pub state: PathBuf,
    /// Plugins not to load, as `<type>.<id>` or `<id>`.
    pub disabled_plugins: Vec<String>,
    /// The core gRPC endpoint.
    pub grpc: GrpcConfig,
    /// Logging.
    pub debug: DebugConfig,
    /// Per-plugin settings keyed `<type>.<id>`.
    pub plugins: BTreeMap<String, toml::Value>,
}

/// The core gRPC endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcConfig {
    /// Unix socket path (`unix://` prefix accepted).
    pub address: String,
    /// Owner uid of the socket.
    pub uid: u32,
    /// Owner gid of the socket (members of this group may use berthd; mode is 0660).
    pub gid: u32,
    /// Largest request accepted, in bytes.
    pub max_recv_message_size: usize,
    /// Largest response sent, in bytes.
    pub max_send_message_size: usize,
}

/// Logging.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DebugConfig {
    /// trace, debug, info, warn or error (or a tracing filter directive).
    pub level: String,
    /// `text` or `json`.
    pub format: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            version: CONFIG_VERSION,
            root: DEFAULT_ROOT.into(),
            state: DEFAULT_STATE.into(),
            disabled_plugins: Vec::new(),
            grpc: GrpcConfig::default(),
            debug: DebugConfig::default(),
            plugins: BTreeMap::new(),
        }
    }
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            address: DEFAULT_ADDRESS.into(),
            uid: 0,
            gid: 0,
            max_recv_message_size: 16 << 20,
            max_send_message_size: 16 << 20,
        }
    }
}

impl Default for DebugConfig {
    fn default() -> Self {
        DebugConfig { level: "info".into(), format: "text".into() }
    }
}

impl Config {
    /// Loads `path`; a missing file is fine only when `required` is false (the default path).
    pub fn load(path: &Path, required: bool) -> Result<Config> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return Ok(Config::default()),
            Err(e) => return Err(e).with_context(|| format!("read config {}", path.display())),
        };
        Self::parse(&text).with_context(|| format!("config {}", path.display()))
    }

    /// Parses TOML text, checking the format version.
    pub fn parse(text: &str) -> Result<Config> {
        let cfg: Config = toml::from_str(text)?;
        if cfg.version != CONFIG_VERSION {
            anyhow::bail!("unsupported config version {} (this berthd reads version {CONFIG_VERSION})", cfg.version);
        }
        Ok(cfg)
    }

    /// The socket path, without a `unix://` scheme.
    pub fn socket_path(&self) -> Result<PathBuf> {
        socket_path(&self.grpc.address)
    }

    /// Whether the plugin `type.id` is disabled.
    pub fn is_disabled(&self, plugin_type: &str, id: &str) -> bool {
        self.disabled_plugins.iter().any(|d| d == id || *d == format!("{plugin_type}.{id}"))
    }
}

/// Turns an address (`/path` or `unix:///path`) into a socket path; other schemes are refused.
pub fn socket_path(address: &str) -> Result<PathBuf> {
    let path = match address.split_once("://") {
        None => address,
        Some(("unix", p)) => p,
        Some((scheme, _)) => {
            anyhow::bail!("unsupported address scheme {scheme:?} in {address:?}: use a unix socket path")
        }
    };
    if !path.starts_with('/') {
        anyhow::bail!("socket address {address:?} must be an absolute path");
    }
    Ok(PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_round_trips_through_toml() {
        let text = toml::to_string_pretty(&Config::default()).unwrap();
        let back = Config::parse(&text).unwrap();
        assert_eq!(back.root, PathBuf::from(DEFAULT_ROOT));
        assert_eq!(back.grpc.address, DEFAULT_ADDRESS);
    }

    #[test]
    fn rejects_unknown_keys_and_versions() {
        assert!(Config::parse("version = 1\nroots = \"/x\"").is_err());
        assert!(Config::parse("version = 2").is_err());
        assert!(Config::parse("version = 1\n[grpc]\naddress = \"/a.sock\"").is_ok());
    }

    #[test]
    fn addresses() {
        assert_eq!(socket_path("unix:///run/b.sock").unwrap(), PathBuf::from("/run/b.sock"));
        assert_eq!(socket_path("/run/b.sock").unwrap(), PathBuf::from("/run/b.sock"));
        assert!(socket_path("tcp://0.0.0.0:1").is_err());
        assert!(socket_path("rel.sock").is_err());
    }

    #[test]
    fn disabled_by_id_or_full_name() {
        let cfg =
            Config { disabled_plugins: vec!["io.berth.grpc.v1.version".into(), "sled".into()], ..Config::default() };
        assert!(cfg.is_disabled("io.berth.grpc.v1", "version"));
        assert!(cfg.is_disabled("io.berth.metadata.v1", "sled"));
        assert!(!cfg.is_disabled("io.berth.grpc.v1", "namespaces"));
    }
}
