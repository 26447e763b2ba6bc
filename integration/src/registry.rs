//! A real distribution registry for tests: Debian's `docker-registry` on 127.0.0.1 at a free
//! port with its own storage, plain HTTP or TLS (a CA made at test time), htpasswd Basic auth
//! or a Bearer token flow (a token server in this process signs JWTs with a key the registry
//! trusts), and a fault-injecting HTTP proxy in front of it (drop the connection mid-blob,
//! tamper with or truncate a blob) that counts what it serves. Everything stops on drop.

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::{external_tool, run};

/// How clients authenticate to a test registry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Auth {
    /// Anyone may pull and push.
    #[default]
    None,
    /// htpasswd (bcrypt) Basic auth with this user and password.
    Basic { user: String, password: String },
    /// Bearer tokens from the harness's token server, which takes this user and password.
    Token { user: String, password: String },
}

/// How to start a test registry.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Serve HTTPS with a certificate of a CA made for this registry.
    pub tls: bool,
    /// Authentication.
    pub auth: Auth,
}

/// A running `docker-registry` and its helpers.
pub struct Registry {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`.
    pub host: String,
    /// PEM of the CA that signed the TLS certificate (when TLS).
    pub ca_path: Option<PathBuf>,
    token_server: Option<TokenServer>,
    opts: RegistryOptions,
}

/// A free TCP port on 127.0.0.1 (the listener is closed again; tiny race accepted).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

fn openssl(dir: &Path, args: &[&str]) {
    run(Command::new("openssl").current_dir(dir).args(args)).ok();
}

/// Makes a CA and a server certificate for 127.0.0.1/localhost in `dir`; returns (ca, cert, key).
fn make_tls(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=berth test CA"];
    openssl(dir, &[&ca[..], &["-keyout", "ca.key", "-out", "ca.pem"]].concat());
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").expect("ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.pem",
        ],
    );
    (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"))
}

impl Registry {
    /// Starts a plain-HTTP registry without auth; None (skipped loudly) without docker-registry.
    pub fn start() -> Option<Registry> {
        Self::start_with(RegistryOptions::default())
    }

    /// Starts a registry with `opts`; None (skipped loudly) when docker-registry is missing.
    pub fn start_with(opts: RegistryOptions) -> Option<Registry> {
        external_tool("docker-registry")?;
        let dir = tempfile::Builder::new().prefix("berth-registry-").tempdir().expect("tempdir");
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: {host}\n  secret: berth-test-secret\n",
            dir.path().join("data").display()
        );
        let mut ca_path = None;
        if opts.tls {
            let (ca, cert, key) = make_tls(dir.path());
            config.push_str(&format!("  tls:\n    certificate: {}\n    key: {}\n", cert.display(), key.display()));
            ca_path = Some(ca);
        }
        let mut token_server = None;
        match &opts.auth {
            Auth::None => {}
            Auth::Basic { user, password } => {
                let htpasswd = external_tool("htpasswd")?;
                let out = run(Command::new(htpasswd).args(["-Bbn", user, password]));
                let path = dir.path().join("htpasswd");
                fs::write(&path, out.ok().trim()).expect("write htpasswd");
                config.push_str(&format!("auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n", path.display()));
            }
            Auth::Token { user, password } => {
                openssl(
                    dir.path(),
                    &[
                        "req",
                        "-x509",
                        "-newkey",
                        "rsa:2048",
                        "-nodes",
                        "-days",
                        "2",
                        "-subj",
                        "/CN=berth token signer",
                        "-keyout",
                        "token.key",
                        "-out",
                        "token.pem",
                    ],
                );
                let ts = TokenServer::start(dir.path(), user, password);
                config.push_str(&format!(
                    "auth:\n  token:\n    realm: {}\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                    ts.realm(),
                    dir.path().join("token.pem").display()
                ));
                token_server = Some(ts);
            }
        }
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, config).expect("write registry config");
        let log = fs::File::create(dir.path().join("registry.log")).expect("log");
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve").arg(&config_path).stdin(Stdio::null()).stdout(log.try_clone().expect("dup")).stderr(log);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().expect("spawn docker-registry");
        let mut r = Registry { child: Some(child), dir, host, ca_path, token_server, opts };
        r.wait_ready();
        Some(r)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("docker-registry exited ({status}):\n{}", self.log());
            }
            if TcpStream::connect(&self.host).is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "docker-registry did not listen within 20s:\n{}", self.log());
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The registry's log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// `http://` or `https://` plus the host.
    pub fn url(&self) -> String {
        format!("{}://{}", if self.opts.tls { "https" } else { "http" }, self.host)
    }

    /// Requests the token server answered so far (0 without one).
    pub fn token_requests(&self) -> Vec<String> {
        self.token_server
            .as_ref()
            .map(|t| t.requests.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .unwrap_or_default()
    }

    /// curl against the registry (with the CA and credentials it needs); returns stdout bytes.
    pub fn curl(&self, args: &[&str]) -> crate::Run {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-f"]);
        if let Some(ca) = &self.ca_path {
            cmd.arg("--cacert").arg(ca);
        }
        match &self.opts.auth {
            Auth::None => {}
            Auth::Basic { user, password } => {
                cmd.args(["-u", &format!("{user}:{password}")]);
            }
            Auth::Token { .. } => {
                let repo = args
                    .iter()
                    .find_map(|a| a.split_once("/v2/").map(|(_, rest)| rest))
                    .and_then(|rest| ["/blobs/", "/manifests/", "/tags/"].iter().find_map(|m| rest.split_once(m)))
                    .map_or("", |(repo, _)| repo);
                let token = self.token_server.as_ref().expect("token server").issue_for(repo);
                cmd.args(["-H", &format!("Authorization: Bearer {token}")]);
            }
        }
        run(cmd.args(args))
    }

    /// Uploads a blob to `repo` (monolithic) and returns its digest.
    pub fn put_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = crate::images::sha256_digest(data);
        let file = self.dir.path().join(format!("upload-{}", &digest[7..]));
        fs::write(&file, data).expect("write blob");
        let head = self.curl(&[
            "-X",
            "POST",
            "-D",
            "-",
            "-o",
            "/dev/null",
            &format!("{}/v2/{repo}/blobs/uploads/", self.url()),
        ]);
        let location = head
            .ok()
            .lines()
            .find_map(|l| l.strip_prefix("Location: ").or_else(|| l.strip_prefix("location: ")))
            .expect("upload location")
            .trim()
            .to_string();
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = if location.starts_with("http") { location } else { format!("{}{location}", self.url()) };
        self.curl(&[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            &format!("@{}", file.display()),
            &format!("{url}{sep}digest={digest}"),
        ])
        .ok();
        digest
    }

    /// Puts a manifest of `media_type` under `repo:reference`; returns its digest.
    pub fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, data: &[u8]) -> crate::Run {
        let file = self.dir.path().join("manifest-upload");
        fs::write(&file, data).expect("write manifest");
        self.curl(&[
            "-X",
            "PUT",
            "-H",
            &format!("Content-Type: {media_type}"),
            "--data-binary",
            &format!("@{}", file.display()),
            &format!("{}/v2/{repo}/manifests/{reference}", self.url()),
        ])
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child's process group.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
        }
        if let Some(ts) = self.token_server.take() {
            ts.stop();
        }
        if std::thread::panicking() {
            eprintln!("---- docker-registry log ----\n{}", self.log());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Token server.

/// The `service` the registry expects in tokens.
pub const TOKEN_SERVICE: &str = "berth-test-registry";
/// The `iss` the registry expects in tokens.
pub const TOKEN_ISSUER: &str = "berth-test-issuer";

struct TokenServer {
    port: u16,
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<String>>>,
    key: PathBuf,
    cert_der_b64: String,
}

/// Standard base64 (with padding) or its URL-safe unpadded form.
pub fn base64(data: &[u8], url: bool) -> String {
    let alphabet: &[u8; 64] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else if !url {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' | b'-' => Some(62),
        b'/' | b'_' => Some(63),
        _ => None,
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

impl TokenServer {
    fn start(dir: &Path, user: &str, password: &str) -> TokenServer {
        let pem = fs::read_to_string(dir.join("token.pem")).expect("token cert");
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind token server");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let ts = TokenServer {
            port,
            stop: Arc::new(AtomicBool::new(false)),
            requests: Arc::new(Mutex::new(Vec::new())),
            key: dir.join("token.key"),
            cert_der_b64: b64,
        };
        let (stop, requests, key, cert) =
            (ts.stop.clone(), ts.requests.clone(), ts.key.clone(), ts.cert_der_b64.clone());
        let expected = format!("Basic {}", base64(format!("{user}:{password}").as_bytes(), false));
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let _ = conn.set_nonblocking(false);
                        let _ = serve_token(conn, &expected, &requests, &key, &cert);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        ts
    }

    fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// A token granting pull and push on `repo` (for the harness's own curl calls).
    fn issue_for(&self, repo: &str) -> String {
        sign_token(&self.key, &self.cert_der_b64, "harness", &[(repo.into(), vec!["pull".into(), "push".into()])])
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn sign_token(key: &Path, cert_b64: &str, sub: &str, access: &[(String, Vec<String>)]) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let header = format!(r#"{{"typ":"JWT","alg":"RS256","x5c":["{cert_b64}"]}}"#);
    let access: Vec<String> = access
        .iter()
        .map(|(name, actions)| {
            let acts: Vec<String> = actions.iter().map(|a| format!("\"{a}\"")).collect();
            format!(r#"{{"type":"repository","name":"{name}","actions":[{}]}}"#, acts.join(","))
        })
        .collect();
    let claims = format!(
        r#"{{"iss":"{TOKEN_ISSUER}","sub":"{sub}","aud":"{TOKEN_SERVICE}","exp":{},"nbf":{},"iat":{},"jti":"{}","access":[{}]}}"#,
        now + 300,
        now.saturating_sub(10),
        now,
        now.wrapping_mul(2654435761) ^ u64::from(std::process::id()),
        access.join(",")
    );
    let signing_input = format!("{}.{}", base64(header.as_bytes(), true), base64(claims.as_bytes(), true));
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl dgst");
    child.stdin.take().expect("stdin").write_all(signing_input.as_bytes()).expect("sign input");
    let out = child.wait_with_output().expect("openssl dgst");
    format!("{signing_input}.{}", base64(&out.stdout, true))
}

fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                out.push(hex.unwrap_or(b'%'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn serve_token(
    conn: TcpStream,
    expected_auth: &str,
    requests: &Mutex<Vec<String>>,
    key: &Path,
    cert: &str,
) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut authorized = false;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("authorization") && v.trim() == expected_auth {
                authorized = true;
            }
        }
    }
    requests.lock().unwrap_or_else(|p| p.into_inner()).push(target.clone());
    let mut conn = conn;
    if !authorized {
        let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#;
        write!(conn, "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())?;
        return Ok(());
    }
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let mut access = Vec::new();
    for (k, v) in query.split('&').filter_map(|kv| kv.split_once('=')) {
        if k == "scope" {
            // repository:NAME:ACTIONS (scopes may also come space-separated in one parameter).
            for scope in url_decode(v).split(' ') {
                let mut parts = scope.splitn(3, ':');
                if let (Some("repository"), Some(name), Some(actions)) = (parts.next(), parts.next(), parts.next()) {
                    access.push((name.to_string(), actions.split(',').map(str::to_string).collect()));
                }
            }
        }
    }
    let token = sign_token(key, cert, "tester", &access);
    let body = format!(r#"{{"token":"{token}","expires_in":300}}"#);
    write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Fault-injecting proxy.

/// What the proxy does to the blob GETs of one digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Close the connection after this many body bytes, for the first `times` responses.
    DropAfter { bytes: u64, times: u32 },
    /// Flip one byte in the middle of the body.
    Tamper,
    /// Announce and send only this many bytes.
    Truncate { bytes: u64 },
    /// Send this many bytes, then hold the connection open (for up to 30 s) without sending more.
    Stall { bytes: u64 },
    /// Answer 200 with this content type and body instead of asking the registry.
    Serve { content_type: String, body: Vec<u8> },
}

#[derive(Default)]
struct ProxyState {
    faults: HashMap<String, Fault>,
    /// Requests per path (`GET /v2/.../blobs/sha256:…`).
    requests: Vec<String>,
    /// Body bytes sent per digest.
    served: HashMap<String, u64>,
}

/// An HTTP/1.1 proxy in front of a plain-HTTP registry (one request per connection).
pub struct FaultProxy {
    /// `127.0.0.1:PORT`.
    pub host: String,
    stop: Arc<AtomicBool>,
    state: Arc<Mutex<ProxyState>>,
}

impl FaultProxy {
    /// Starts a proxy forwarding to `upstream` (`127.0.0.1:PORT`).
    pub fn start(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let host = format!("127.0.0.1:{}", listener.local_addr().expect("addr").port());
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let (stop2, state2, upstream) = (stop.clone(), state.clone(), upstream.to_string());
        thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let _ = conn.set_nonblocking(false);
                        let (state, upstream) = (state2.clone(), upstream.clone());
                        thread::spawn(move || {
                            let _ = proxy_one(conn, &upstream, &state);
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        FaultProxy { host, stop, state }
    }

    /// Injects `fault` into GETs of blob `digest` (or of manifest `tag_or_digest`, for `Serve`).
    pub fn set_fault(&self, digest: &str, fault: Fault) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).faults.insert(digest.to_string(), fault);
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).faults.clear();
    }

    /// GET requests of blob `digest` seen so far.
    pub fn blob_gets(&self, digest: &str) -> usize {
        let needle = "GET /v2/";
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .requests
            .iter()
            .filter(|r| r.starts_with(needle) && r.contains("/blobs/") && r.contains(digest))
            .count()
    }

    /// Body bytes of blob `digest` sent so far.
    pub fn served(&self, digest: &str) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).served.get(digest).copied().unwrap_or(0)
    }

    /// Every request line seen.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).requests.clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn read_head(r: &mut impl BufRead) -> io::Result<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut l = String::new();
        if r.read_line(&mut l)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "eof in head"));
        }
        let l = l.trim_end_matches(['\r', '\n']).to_string();
        if l.is_empty() {
            return Ok(lines);
        }
        lines.push(l);
    }
}

fn header<'a>(head: &'a [String], name: &str) -> Option<&'a str> {
    head.iter().skip(1).find_map(|h| {
        let (k, v) = h.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The first byte a request's `Range: bytes=N-` asks for (0 without one).
fn range_start(head: &[String]) -> u64 {
    header(head, "range")
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split('-').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn proxy_one(client: TcpStream, upstream: &str, state: &Mutex<ProxyState>) -> io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut creader = BufReader::new(client.try_clone()?);
    let head = read_head(&mut creader)?;
    let request_line = head.first().cloned().unwrap_or_default();
    state.lock().unwrap_or_else(|p| p.into_inner()).requests.push(request_line.clone());
    let target_key = request_line.split_whitespace().nth(1).and_then(|p| {
        let (_, rest) = p.split_once("/blobs/").or_else(|| p.split_once("/manifests/"))?;
        Some(rest.split('?').next().unwrap_or(rest).to_string())
    });
    let serve = target_key.as_ref().and_then(|k| match state.lock().unwrap_or_else(|p| p.into_inner()).faults.get(k) {
        Some(Fault::Serve { content_type, body }) => Some((content_type.clone(), body.clone())),
        _ => None,
    });
    if let Some((content_type, body)) = serve {
        let mut client = client;
        write!(
            client,
            "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )?;
        client.write_all(&body)?;
        return Ok(());
    }
    let mut up = TcpStream::connect(upstream)?;
    let mut out = String::new();
    out.push_str(&request_line);
    out.push_str("\r\n");
    for h in head.iter().skip(1) {
        if !h.to_ascii_lowercase().starts_with("connection:") {
            out.push_str(h);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    up.write_all(out.as_bytes())?;
    let body_len: u64 = header(&head, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    io::copy(&mut (&mut creader).take(body_len), &mut up)?;

    let mut ureader = BufReader::new(up.try_clone()?);
    let rhead = read_head(&mut ureader)?;
    let digest = request_line
        .split_whitespace()
        .nth(1)
        .filter(|_| request_line.starts_with("GET "))
        .and_then(|p| p.split_once("/blobs/"))
        .map(|(_, d)| d.split('?').next().unwrap_or(d).to_string());
    let mut fault =
        digest.as_ref().and_then(|d| state.lock().unwrap_or_else(|p| p.into_inner()).faults.get(d).cloned());
    if let (Some(d), Some(Fault::DropAfter { bytes, times })) = (&digest, &fault) {
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        if *times == 0 {
            fault = None;
        } else {
            st.faults.insert(d.clone(), Fault::DropAfter { bytes: *bytes, times: times - 1 });
        }
    }
    let resp_len: Option<u64> = header(&rhead, "content-length").and_then(|v| v.parse().ok());
    let mut mut_client = client;
    let mut send_head = String::new();
    for (i, h) in rhead.iter().enumerate() {
        let lower = h.to_ascii_lowercase();
        if i > 0 && lower.starts_with("connection:") {
            continue;
        }
        if i > 0 && lower.starts_with("content-length:") {
            if let Some(Fault::Truncate { bytes }) = &fault {
                let left = bytes.saturating_sub(range_start(&head));
                send_head.push_str(&format!("Content-Length: {}\r\n", left.min(resp_len.unwrap_or(0))));
                continue;
            }
        }
        send_head.push_str(h);
        send_head.push_str("\r\n");
    }
    send_head.push_str("Connection: close\r\n\r\n");
    mut_client.write_all(send_head.as_bytes())?;
    let limit = match &fault {
        Some(Fault::DropAfter { bytes, .. }) | Some(Fault::Stall { bytes }) => Some(*bytes),
        // Truncation is at an absolute offset of the blob, whatever range was asked for.
        Some(Fault::Truncate { bytes }) => Some(bytes.saturating_sub(range_start(&head))),
        _ => None,
    };
    let total = resp_len.unwrap_or(u64::MAX);
    let mut sent = 0u64;
    let mut buf = vec![0u8; 64 << 10];
    let tamper_at = total / 2;
    while sent < total {
        let want = (total - sent).min(buf.len() as u64) as usize;
        let n = ureader.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        let mut chunk = &mut buf[..n];
        if let Some(l) = limit {
            if sent + n as u64 > l {
                chunk = &mut chunk[..(l - sent.min(l)) as usize];
            }
        }
        if fault == Some(Fault::Tamper) && tamper_at >= sent && tamper_at < sent + chunk.len() as u64 {
            chunk[(tamper_at - sent) as usize] ^= 0xff;
        }
        mut_client.write_all(chunk)?;
        sent += chunk.len() as u64;
        if let Some(d) = &digest {
            *state.lock().unwrap_or_else(|p| p.into_inner()).served.entry(d.clone()).or_default() += chunk.len() as u64;
        }
        if limit.is_some_and(|l| sent >= l) {
            if matches!(fault, Some(Fault::Stall { .. })) {
                let _ = mut_client.flush();
                let deadline = Instant::now() + Duration::from_secs(30);
                // Until the client goes away or time runs out.
                let mut probe = [0u8; 1];
                let _ = mut_client.set_read_timeout(Some(Duration::from_millis(200)));
                while Instant::now() < deadline {
                    match (&mut_client).read(&mut probe) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                        Err(_) => break,
                    }
                }
            }
            break;
        }
    }
    let _ = mut_client.flush();
    let _ = mut_client.shutdown(Shutdown::Both);
    Ok(())
}

/// Decodes standard base64 (for tests reading auth files).
pub fn decode_base64(s: &str) -> Vec<u8> {
    base64_decode(s)
}
