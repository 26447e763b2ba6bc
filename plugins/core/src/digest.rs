//! Content digests (`algorithm:hex`), validated as the OCI image spec defines them. Berth's
//! content store hashes with sha256; sha384/sha512 digests are parsed so that they can be
//! reported clearly rather than misread.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// A validated digest such as `sha256:e3b0c442...`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

/// A digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// sha256, 64 hex characters (the only one the content store writes).
    Sha256,
    /// sha384, 96 hex characters.
    Sha384,
    /// sha512, 128 hex characters.
    Sha512,
}

impl Algorithm {
    /// The name used in digests.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha384 => "sha384",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha384 => 96,
            Algorithm::Sha512 => 128,
        }
    }
}

impl Digest {
    /// Parses and validates a digest string.
    pub fn parse(s: &str) -> Result<Digest, Error> {
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| Error::invalid_argument(format!("invalid digest {s:?}: missing algorithm")))?;
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha384" => Algorithm::Sha384,
            "sha512" => Algorithm::Sha512,
            _ => return Err(Error::invalid_argument(format!("invalid digest {s:?}: unsupported algorithm {alg:?}"))),
        };
        if hex.len() != algorithm.hex_len() || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(Error::invalid_argument(format!(
                "invalid digest {s:?}: {alg} needs {} lower-case hex characters",
                algorithm.hex_len()
            )));
        }
        Ok(Digest { algorithm, hex: hex.to_string() })
    }

    /// A sha256 digest from its raw 32-byte hash.
    pub fn sha256_from_bytes(hash: &[u8; 32]) -> Digest {
        let mut hex = String::with_capacity(64);
        for b in hash {
            hex.push_str(&format!("{b:02x}"));
        }
        Digest { algorithm: Algorithm::Sha256, hex }
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The hex part, safe to use as a file name.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Digest::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_prints() {
        let d = Digest::parse(EMPTY).unwrap();
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(d.hex().len(), 64);
        assert_eq!(Digest::sha256_from_bytes(&[0xab; 32]).to_string(), format!("sha256:{}", "ab".repeat(32)));
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["", "sha256", "sha256:", "md5:abcd", "sha256:ABCDEF", "sha256:../../etc/passwd", &EMPTY[..70]] {
            assert!(Digest::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
