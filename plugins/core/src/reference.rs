//! Image references as Docker and containerd clients write them, normalized to one canonical
//! form: `busybox` → `docker.io/library/busybox:latest`, `user/app` → `docker.io/user/app:latest`,
//! `name@sha256:…` keeps its digest. The grammar is the distribution project's reference grammar.

use std::fmt;

use crate::{Digest, Error};

/// Registry used when a reference names none.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// Repository prefix for official images on the default registry.
pub const OFFICIAL_PREFIX: &str = "library/";
/// Tag used when a reference names neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";
/// Longest repository name accepted.
pub const MAX_NAME_LENGTH: usize = 255;

/// A parsed, normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host (with optional port), e.g. `docker.io`, `localhost:5000`.
    pub domain: String,
    /// Repository path, e.g. `library/busybox`.
    pub path: String,
    /// Tag, if any.
    pub tag: Option<String>,
    /// Digest, if any.
    pub digest: Option<Digest>,
}

fn valid_path_component(c: &str) -> bool {
    // [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_lowercase() && !b[0].is_ascii_digit() {
        return false;
    }
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        let sep_ok = match b[i] {
            b'.' => {
                i += 1;
                true
            }
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
                true
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
                true
            }
            _ => false,
        };
        if !sep_ok || i == start || i >= b.len() || !alnum(b[i]) {
            return false;
        }
    }
    true
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) if !h.contains(']') || h.ends_with(']') => (h, Some(p)),
        _ => (d, None),
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit()) {
            return false;
        }
    }
    if host.starts_with('[') && host.ends_with(']') {
        return host.len() > 2 && host[1..host.len() - 1].bytes().all(|c| c.is_ascii_hexdigit() || c == b':');
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

impl Reference {
    /// Parses and normalizes `s`; adds the default domain, `library/` and `:latest` as Docker does.
    pub fn parse(s: &str) -> Result<Reference, Error> {
        let bad = |why: &str| Error::invalid_argument(format!("invalid reference {s:?}: {why}"));
        if s.is_empty() {
            return Err(bad("empty"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(Digest::parse(d).map_err(|e| bad(e.message()))?)),
            None => (s, None),
        };
        // A tag follows the last ':' after the last '/'.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(rest[last_slash + i + 1..].to_string())),
            None => (rest, None),
        };
        if let Some(t) = &tag {
            if !valid_tag(t) {
                return Err(bad("invalid tag"));
            }
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains('.')
                    || first.contains(':')
                    || first == "localhost"
                    || first.to_ascii_lowercase() != first =>
            {
                (first.to_string(), remainder.to_string())
            }
            _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
        };
        if !valid_domain(&domain) {
            return Err(bad("invalid registry host"));
        }
        let domain = if domain == "index.docker.io" { DEFAULT_DOMAIN.to_string() } else { domain };
        let path =
            if domain == DEFAULT_DOMAIN && !path.contains('/') { format!("{OFFICIAL_PREFIX}{path}") } else { path };
        if path.split('/').any(|c| !valid_path_component(c)) {
            return Err(bad("repository name must be lowercase alphanumerics separated by '.', '_', '__' or '-'"));
        }
        if domain.len() + 1 + path.len() > MAX_NAME_LENGTH {
            return Err(bad("repository name too long"));
        }
        let tag = if tag.is_none() && digest.is_none() { Some(DEFAULT_TAG.to_string()) } else { tag };
        Ok(Reference { domain, path, tag, digest })
    }

    /// `domain/path` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The short form Docker shows: `busybox:latest` for official images, else the full name.
    pub fn familiar(&self) -> String {
        let name = if self.domain == DEFAULT_DOMAIN {
            self.path.strip_prefix(OFFICIAL_PREFIX).unwrap_or(&self.path).to_string()
        } else {
            self.name()
        };
        let mut s = name;
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
        s
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Normalizes a reference string (see [`Reference::parse`]).
pub fn normalize(s: &str) -> Result<String, Error> {
    Reference::parse(s).map(|r| r.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn normalizes_like_docker() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("library/busybox", "docker.io/library/busybox:latest"),
            ("user/app", "docker.io/user/app:latest"),
            ("docker.io/busybox", "docker.io/library/busybox:latest"),
            ("index.docker.io/user/app:v1", "docker.io/user/app:v1"),
            ("localhost/app", "localhost/app:latest"),
            ("localhost:5000/a/b/c:t", "localhost:5000/a/b/c:t"),
            ("127.0.0.1:5000/app", "127.0.0.1:5000/app:latest"),
            ("quay.io/org/app_x-y.z", "quay.io/org/app_x-y.z:latest"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input).unwrap(), want, "{input}");
        }
        assert_eq!(normalize(&format!("busybox@{D}")).unwrap(), format!("docker.io/library/busybox@{D}"));
        assert_eq!(normalize(&format!("busybox:1@{D}")).unwrap(), format!("docker.io/library/busybox:1@{D}"));
        assert_eq!(Reference::parse("busybox").unwrap().familiar(), "busybox:latest");
        assert_eq!(Reference::parse("localhost:5000/x").unwrap().familiar(), "localhost:5000/x:latest");
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-x",
            "a//b",
            "a/-b",
            "busybox@sha256:123",
            "a b",
            "a/b_",
            "host:port/x",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Reference::parse(&"a".repeat(300)).is_err());
    }
}
