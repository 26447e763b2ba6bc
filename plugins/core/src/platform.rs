//! The OCI platform of this host (os/architecture/variant), named as Go and OCI name them.

use std::fmt;

/// An OCI platform.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// Architecture in GOARCH terms, e.g. `amd64`.
    pub architecture: String,
    /// Variant, e.g. `v8` for arm64; empty when none.
    pub variant: String,
}

impl Platform {
    /// The platform this binary runs on.
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", ""),
            "x86" => ("386", ""),
            "aarch64" => ("arm64", "v8"),
            "arm" => ("arm", "v7"),
            "powerpc64" => ("ppc64", ""),
            "s390x" => ("s390x", ""),
            "riscv64" => ("riscv64", ""),
            other => (other, ""),
        };
        Platform { os: std::env::consts::OS.to_string(), architecture: architecture.into(), variant: variant.into() }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_is_linux_in_go_terms() {
        let p = Platform::host();
        assert_eq!(p.os, "linux");
        assert!(!p.architecture.contains('_'), "{p}");
        assert!(p.to_string().starts_with("linux/"));
    }
}
