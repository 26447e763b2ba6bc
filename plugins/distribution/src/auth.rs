//! Registry credentials and authentication: Docker `config.json` files (berth's own store,
//! written by `berthctl login`, first; then the configured Docker one), `WWW-Authenticate`
//! challenges (Basic, Bearer with realm/service/scope) and a cache of Bearer tokens per
//! (realm, service, scope).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use berth_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// A user name and password (or token) for one registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or access token.
    pub password: String,
}

impl Credentials {
    /// The `Authorization: Basic …` value.
    pub fn basic(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
    }
}

/// One entry of `auths` in a Docker config file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AuthEntry {
    /// base64 of `user:password`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub auth: String,
    /// User name (alternative to `auth`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    /// Password (alternative to `auth`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub password: String,
}

/// The parts of a Docker `config.json` used here.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DockerConfigFile {
    /// Credentials per server.
    #[serde(default)]
    pub auths: BTreeMap<String, AuthEntry>,
    /// Other fields, kept as they were.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

impl DockerConfigFile {
    /// Reads `path`; an absent file is empty.
    pub fn load(path: &Path) -> Result<DockerConfigFile> {
        match std::fs::read(path) {
            Ok(data) => serde_json::from_slice(&data)
                .map_err(|e| Error::invalid_argument(format!("credentials file {}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DockerConfigFile::default()),
            Err(e) => Err(Error::internal(format!("read {}: {e}", path.display()))),
        }
    }

    /// The credentials for registry `host`, under any of the keys Docker writes.
    pub fn lookup(&self, host: &str) -> Option<Credentials> {
        let mut keys = vec![host.to_string(), format!("https://{host}"), format!("http://{host}")];
        if host == "docker.io" || host == "registry-1.docker.io" {
            keys.push("docker.io".into());
            keys.push("https://index.docker.io/v1/".into());
            keys.push("index.docker.io".into());
        }
        let entry = keys.iter().find_map(|k| {
            self.auths.get(k).or_else(|| self.auths.get(&format!("{k}/"))).or_else(|| {
                self.auths
                    .iter()
                    .find(|(name, _)| name.trim_end_matches('/').ends_with(&format!("//{host}")))
                    .map(|x| x.1)
            })
        })?;
        if !entry.auth.is_empty() {
            let raw = base64::engine::general_purpose::STANDARD.decode(entry.auth.trim()).ok()?;
            let text = String::from_utf8(raw).ok()?;
            let (u, p) = text.split_once(':')?;
            return Some(Credentials { username: u.into(), password: p.into() });
        }
        (!entry.username.is_empty())
            .then(|| Credentials { username: entry.username.clone(), password: entry.password.clone() })
    }

    /// Writes the file atomically with mode 0600.
    pub fn save(&self, path: &Path) -> Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::internal(format!("create {}: {e}", dir.display())))?;
        }
        let tmp = path.with_extension("tmp");
        let data = serde_json::to_vec_pretty(self).map_err(|e| Error::internal(e.to_string()))?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| Error::internal(format!("write {}: {e}", tmp.display())))?;
        f.write_all(&data)
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::internal(format!("write {}: {e}", tmp.display())))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::internal(format!("rename {}: {e}", path.display())))
    }
}

/// Where credentials come from: berth's own store, then a Docker config file.
#[derive(Debug, Clone)]
pub struct CredentialSources {
    /// berth's store (`berthctl login`).
    pub berth: PathBuf,
    /// A Docker `config.json`, if configured.
    pub docker: Option<PathBuf>,
}

impl CredentialSources {
    /// The credentials for `host`, if any source has them. Unreadable files are logged and skipped.
    pub fn lookup(&self, host: &str) -> Option<Credentials> {
        [Some(&self.berth), self.docker.as_ref()].into_iter().flatten().find_map(|p| match DockerConfigFile::load(p) {
            Ok(f) => f.lookup(host),
            Err(e) => {
                tracing::warn!(error = %e, "ignoring credentials file");
                None
            }
        })
    }

    /// Stores credentials for `host` in berth's store.
    pub fn store(&self, host: &str, creds: &Credentials) -> Result<()> {
        let mut f = DockerConfigFile::load(&self.berth)?;
        let raw = format!("{}:{}", creds.username, creds.password);
        f.auths.insert(
            host.to_string(),
            AuthEntry { auth: base64::engine::general_purpose::STANDARD.encode(raw), ..Default::default() },
        );
        f.save(&self.berth)
    }

    /// Removes `host` from berth's store; NotFound when it was not there.
    pub fn remove(&self, host: &str) -> Result<()> {
        let mut f = DockerConfigFile::load(&self.berth)?;
        if f.auths.remove(host).is_none() {
            return Err(Error::not_found(format!("credentials for {host}")));
        }
        f.save(&self.berth)
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm=…`.
    Basic,
    /// `Bearer realm=…,service=…,scope=…`.
    Bearer {
        /// Token endpoint.
        realm: String,
        /// Service name to ask for.
        service: String,
    },
}

/// Parses the first challenge of a `WWW-Authenticate` header value.
pub fn parse_challenge(value: &str) -> Option<Challenge> {
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    let mut params = HashMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let Some((k, after)) = s.split_once('=') else { break };
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (v, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            (q[..end].to_string(), q.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.insert(k, v);
        s = next.trim_start_matches([',', ' ']);
    }
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned().unwrap_or_default(),
        }),
        _ => None,
    }
}

/// (realm, service, scope).
type TokenKey = (String, String, String);

/// Bearer tokens by (realm, service, scope), until shortly before they expire.
#[derive(Debug, Default)]
pub struct TokenCache {
    tokens: Mutex<HashMap<TokenKey, (String, Instant)>>,
}

impl TokenCache {
    /// A cached token still valid for at least 10 s.
    pub fn get(&self, realm: &str, service: &str, scope: &str) -> Option<String> {
        let map = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&(realm.into(), service.into(), scope.into()))
            .filter(|(_, exp)| *exp > Instant::now() + Duration::from_secs(10))
            .map(|(t, _)| t.clone())
    }

    /// Caches a token valid for `ttl`.
    pub fn put(&self, realm: &str, service: &str, scope: &str, token: String, ttl: Duration) {
        let mut map = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        map.insert((realm.into(), service.into(), scope.into()), (token, Instant::now() + ttl));
    }

    /// Forgets a token the registry refused.
    pub fn forget(&self, realm: &str, service: &str, scope: &str) {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner()).remove(&(realm.into(), service.into(), scope.into()));
    }
}

/// The JSON a token endpoint answers.
#[derive(Debug, Deserialize)]
pub struct TokenResponse {
    /// The token (Docker).
    #[serde(default)]
    pub token: String,
    /// The token (OAuth2).
    #[serde(default)]
    pub access_token: String,
    /// Lifetime in seconds.
    #[serde(default)]
    pub expires_in: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: "registry.docker.io".into()
            })
        );
        assert_eq!(parse_challenge(r#"Basic realm="registry""#), Some(Challenge::Basic));
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn docker_config_lookup() {
        let f: DockerConfigFile = serde_json::from_str(
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"},"127.0.0.1:5000":{"username":"a","password":"b"}},"credsStore":"x"}"#,
        )
        .unwrap();
        assert_eq!(f.lookup("docker.io"), Some(Credentials { username: "u".into(), password: "p".into() }));
        assert_eq!(f.lookup("127.0.0.1:5000").unwrap().username, "a");
        assert!(f.lookup("other:1").is_none());
        assert!(serde_json::to_string(&f).unwrap().contains("credsStore"));
    }

    #[test]
    fn store_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let src = CredentialSources { berth: dir.path().join("auth.json"), docker: None };
        src.store("h:1", &Credentials { username: "u".into(), password: "p:q".into() }).unwrap();
        assert_eq!(src.lookup("h:1").unwrap().password, "p:q");
        src.remove("h:1").unwrap();
        assert!(src.lookup("h:1").is_none());
        assert!(src.remove("h:1").is_err());
    }
}
