//! Rules for identifiers (namespaces, containers, leases...), the same as containerd's so that
//! names valid there are valid here and vice versa.

use crate::Error;

/// Longest identifier accepted, as containerd.
pub const MAX_LENGTH: usize = 76;

/// Checks `s` against `^[A-Za-z0-9]+([._-][A-Za-z0-9]+)*$`, at most [`MAX_LENGTH`] bytes.
pub fn validate(s: &str) -> Result<(), Error> {
    if s.is_empty() {
        return Err(Error::invalid_argument("identifier must not be empty"));
    }
    if s.len() > MAX_LENGTH {
        return Err(Error::invalid_argument(format!(
            "identifier {s:?} greater than maximum length ({MAX_LENGTH} characters)"
        )));
    }
    let mut prev_sep = true; // the first character may not be a separator
    for c in s.chars() {
        let sep = matches!(c, '.' | '_' | '-');
        if !(c.is_ascii_alphanumeric() || sep) || (sep && prev_sep) {
            return Err(Error::invalid_argument(format!(
                "identifier {s:?} must match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$"
            )));
        }
        prev_sep = sep;
    }
    if prev_sep {
        return Err(Error::invalid_argument(format!("identifier {s:?} must not end with a separator")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_containerd_names() {
        for ok in ["default", "k8s.io", "moby", "a", "a-b_c.d", "A1"] {
            validate(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn rejects_bad_names() {
        let long = "a".repeat(MAX_LENGTH + 1);
        for bad in ["", "-a", "a-", "a..b", "a/b", "a b", "ü", long.as_str(), "a\0b"] {
            assert!(validate(bad).is_err(), "{bad:?} accepted");
        }
    }
}
