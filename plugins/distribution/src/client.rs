//! HTTP to registries: one reqwest client per TLS setting, endpoints (mirrors first, then the
//! registry itself) with their scheme found by a `/v2/` ping, and requests that answer a 401
//! challenge once (Basic, or a Bearer token fetched for the request's scope and cached).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_core::{Error, Result};
use reqwest::header::{HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};

use crate::auth::{parse_challenge, Challenge, CredentialSources, TokenCache, TokenResponse};
use crate::config::{is_local, DistributionConfig, RegistryHostConfig};

/// One place to talk to: a mirror or the registry itself.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `http(s)://host[:port]`.
    pub base: String,
    /// `host[:port]`: the key of credentials, config and challenges.
    pub host: String,
    /// Whether this is a mirror (may lack content: fall through on 404).
    pub mirror: bool,
    client: reqwest::Client,
}

/// A repository-scoped action set for tokens: `repository:NAME:pull[,push]`.
pub fn scope(repo: &str, push: bool) -> String {
    format!("repository:{repo}:{}", if push { "pull,push" } else { "pull" })
}

/// Talks to registries on behalf of pulls and pushes. Cheap to share.
pub struct RegistryClient {
    config: DistributionConfig,
    creds: CredentialSources,
    tokens: TokenCache,
    clients: Mutex<HashMap<(String, bool), reqwest::Client>>,
    /// Scheme found per host[:port] and the challenge it answered the ping with.
    pinged: Mutex<HashMap<String, (String, Option<Challenge>)>>,
}

fn http_err(what: &str, e: reqwest::Error) -> Error {
    let mut msg = format!("{what}: {e}");
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    Error::unavailable(msg)
}

/// The registry's error message from a JSON error body, or the status.
pub async fn error_body(resp: Response) -> String {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let detail = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| {
            v["errors"].as_array().map(|errs| {
                errs.iter()
                    .map(|e| format!("{}: {}", e["code"].as_str().unwrap_or(""), e["message"].as_str().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| text.chars().take(200).collect());
    format!("{status}{}{detail}", if detail.is_empty() { "" } else { ": " })
}

impl RegistryClient {
    /// A client with `config`, taking credentials from `creds`.
    pub fn new(config: DistributionConfig, creds: CredentialSources) -> Self {
        RegistryClient {
            config,
            creds,
            tokens: TokenCache::default(),
            clients: Mutex::new(HashMap::new()),
            pinged: Mutex::new(HashMap::new()),
        }
    }

    /// The credential sources.
    pub fn credentials(&self) -> &CredentialSources {
        &self.creds
    }

    /// The plugin config.
    pub fn config(&self) -> &DistributionConfig {
        &self.config
    }

    fn host_config(&self, host: &str) -> RegistryHostConfig {
        self.config.registries.get(host).cloned().unwrap_or_default()
    }

    fn http_client(&self, host: &str) -> Result<reqwest::Client> {
        let hc = self.host_config(host);
        let key = (hc.ca.clone(), hc.insecure);
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let mut b = reqwest::Client::builder()
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(16)
            .tcp_nodelay(true)
            // Redirects (blob storage behind a CDN) must not carry our registry token.
            .redirect(reqwest::redirect::Policy::limited(5));
        if !hc.ca.is_empty() {
            let pem = std::fs::read(&hc.ca)
                .map_err(|e| Error::invalid_argument(format!("registry {host} ca {}: {e}", hc.ca)))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Error::invalid_argument(format!("registry {host} ca {}: {e}", hc.ca)))?
            {
                b = b.add_root_certificate(cert);
            }
        }
        if hc.insecure {
            b = b.danger_accept_invalid_certs(true);
        }
        let c = b.build().map_err(|e| Error::internal(format!("http client: {e}")))?;
        clients.insert(key, c.clone());
        Ok(c)
    }

    /// Schemes to try for `host`: HTTPS, then plain HTTP when the host is configured insecure
    /// or is the local machine (as Docker).
    fn schemes(&self, host: &str) -> Vec<&'static str> {
        if self.host_config(host).insecure || is_local(host) {
            vec!["https", "http"]
        } else {
            vec!["https"]
        }
    }

    /// The endpoints for registry `host`: its mirrors in order, then itself.
    pub fn endpoints(&self, host: &str) -> Result<Vec<Endpoint>> {
        let mut out = Vec::new();
        for m in &self.host_config(host).mirrors {
            let (scheme, mhost) = match m.split_once("://") {
                Some((s, h)) => (Some(s.to_string()), h.trim_end_matches('/').to_string()),
                None => (None, m.trim_end_matches('/').to_string()),
            };
            let base = scheme.map(|s| format!("{s}://{mhost}")).unwrap_or_default();
            out.push(Endpoint { base, host: mhost.clone(), mirror: true, client: self.http_client(&mhost)? });
        }
        // Docker Hub's API is not served at its reference domain.
        let api_host = if host == "docker.io" { "registry-1.docker.io" } else { host };
        out.push(Endpoint {
            base: String::new(),
            host: api_host.to_string(),
            mirror: false,
            client: self.http_client(host)?,
        });
        Ok(out)
    }

    /// Finds the endpoint's scheme (when not given) with a `GET /v2/` and records its challenge.
    pub async fn ping(&self, ep: &mut Endpoint) -> Result<()> {
        if let Some((scheme, _)) = self.pinged.lock().unwrap_or_else(|p| p.into_inner()).get(&ep.host) {
            if ep.base.is_empty() {
                ep.base = format!("{scheme}://{}", ep.host);
            }
            return Ok(());
        }
        let candidates: Vec<String> = if ep.base.is_empty() {
            self.schemes(&ep.host).iter().map(|s| format!("{s}://{}", ep.host)).collect()
        } else {
            vec![ep.base.clone()]
        };
        let mut errors = Vec::new();
        for base in candidates {
            match ep.client.get(format!("{base}/v2/")).timeout(Duration::from_secs(15)).send().await {
                // A registry answers 200 or 401; anything else (an HTTPS port answering plain
                // HTTP with 400, a web server) is not a registry at this scheme.
                Ok(resp) if !(resp.status().is_success() || resp.status() == StatusCode::UNAUTHORIZED) => {
                    errors.push(format!("{base}: /v2/ answered {}", resp.status()));
                }
                Ok(resp) => {
                    let challenge = (resp.status() == StatusCode::UNAUTHORIZED)
                        .then(|| {
                            resp.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).and_then(parse_challenge)
                        })
                        .flatten();
                    let scheme = base.split("://").next().unwrap_or("https").to_string();
                    self.pinged.lock().unwrap_or_else(|p| p.into_inner()).insert(ep.host.clone(), (scheme, challenge));
                    ep.base = base;
                    return Ok(());
                }
                Err(e) => errors.push(http_err(&base, e).message().to_string()),
            }
        }
        Err(Error::unavailable(format!("registry {} unreachable: {}", ep.host, errors.join("; "))))
    }

    fn challenge(&self, host: &str) -> Option<Challenge> {
        self.pinged.lock().unwrap_or_else(|p| p.into_inner()).get(host).and_then(|(_, c)| c.clone())
    }

    async fn authorization(&self, ep: &Endpoint, scopes: &[String], fresh: bool) -> Result<Option<String>> {
        let creds = self.creds.lookup(&ep.host);
        match self.challenge(&ep.host) {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(creds.map(|c| c.basic())),
            Some(Challenge::Bearer { realm, service }) => {
                let key = scopes.join(" ");
                if fresh {
                    self.tokens.forget(&realm, &service, &key);
                } else if let Some(t) = self.tokens.get(&realm, &service, &key) {
                    return Ok(Some(format!("Bearer {t}")));
                }
                let mut req = ep.client.get(&realm).query(&[("service", service.as_str())]);
                for s in scopes {
                    req = req.query(&[("scope", s.as_str())]);
                }
                if let Some(c) = &creds {
                    req = req.header(AUTHORIZATION, c.basic());
                }
                let resp = req.send().await.map_err(|e| http_err(&format!("token endpoint {realm}"), e))?;
                if !resp.status().is_success() {
                    let status = resp.status();
                    let body = error_body(resp).await;
                    return Err(if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                        Error::failed_precondition(format!(
                            "authorization failed for {}: token endpoint {realm} answered {body}",
                            ep.host
                        ))
                    } else {
                        Error::unavailable(format!("token endpoint {realm}: {body}"))
                    });
                }
                let tr: TokenResponse = token_json(resp, &realm).await?;
                let token = if tr.token.is_empty() { tr.access_token } else { tr.token };
                if token.is_empty() {
                    return Err(Error::unavailable(format!("token endpoint {realm} returned no token")));
                }
                let ttl = Duration::from_secs(if tr.expires_in == 0 { 60 } else { tr.expires_in });
                self.tokens.put(&realm, &service, &key, token.clone(), ttl);
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    /// Sends `build(client, base_url)` with authorization for `scopes`; on a 401, learns the
    /// challenge, refreshes the authorization and sends once more. The caller checks the status.
    pub async fn send(
        &self,
        ep: &Endpoint,
        scopes: &[String],
        build: impl Fn(&reqwest::Client, &str) -> RequestBuilder,
    ) -> Result<Response> {
        let mut fresh = false;
        for attempt in 0..2 {
            let mut req = build(&ep.client, &ep.base);
            if let Some(auth) = self.authorization(ep, scopes, fresh).await? {
                let v = HeaderValue::from_str(&auth)
                    .map_err(|_| Error::invalid_argument("credentials contain invalid characters"))?;
                req = req.header(AUTHORIZATION, v);
            }
            let resp = req.send().await.map_err(|e| http_err(&format!("registry {}", ep.base), e))?;
            if resp.status() != StatusCode::UNAUTHORIZED || attempt == 1 {
                return Ok(resp);
            }
            let challenge =
                resp.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).and_then(parse_challenge);
            let known = self.challenge(&ep.host);
            if challenge.is_none() || (challenge == known && matches!(known, Some(Challenge::Basic))) {
                return Ok(resp);
            }
            if let Some(entry) = self.pinged.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&ep.host) {
                entry.1 = challenge;
            }
            fresh = true;
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// Checks that `host` accepts `creds` (a `/v2/` with them, through any token endpoint).
    pub async fn check_login(&self, host: &str, creds: &crate::auth::Credentials) -> Result<()> {
        let mut ep =
            Endpoint { base: String::new(), host: host.into(), mirror: false, client: self.http_client(host)? };
        self.ping(&mut ep).await?;
        let auth = match self.challenge(host) {
            None => return Ok(()),
            Some(Challenge::Basic) => creds.basic(),
            Some(Challenge::Bearer { realm, service }) => {
                let resp = ep
                    .client
                    .get(&realm)
                    .query(&[("service", service.as_str())])
                    .header(AUTHORIZATION, creds.basic())
                    .send()
                    .await
                    .map_err(|e| http_err(&format!("token endpoint {realm}"), e))?;
                if !resp.status().is_success() {
                    return Err(Error::failed_precondition(format!(
                        "login to {host} failed: {}",
                        error_body(resp).await
                    )));
                }
                let tr: TokenResponse = token_json(resp, &realm).await?;
                format!("Bearer {}", if tr.token.is_empty() { tr.access_token } else { tr.token })
            }
        };
        let resp = ep
            .client
            .request(Method::GET, format!("{}/v2/", ep.base))
            .header(AUTHORIZATION, auth)
            .send()
            .await
            .map_err(|e| http_err(&format!("registry {host}"), e))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(Error::failed_precondition(format!("login to {host} failed: {}", error_body(resp).await)))
        }
    }
}

async fn token_json(resp: Response, realm: &str) -> Result<TokenResponse> {
    let body = resp.bytes().await.map_err(|e| http_err(&format!("token endpoint {realm}"), e))?;
    serde_json::from_slice(&body).map_err(|e| Error::unavailable(format!("token endpoint {realm}: bad answer: {e}")))
}

/// Shared handle.
pub type SharedClient = Arc<RegistryClient>;
