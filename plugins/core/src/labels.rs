//! Label rules shared by every labelled object: a key plus its value may not exceed 4096 bytes.

use std::collections::BTreeMap;

use crate::Error;

/// Maximum size of one label (key and value together), as containerd.
pub const MAX_LABEL_SIZE: usize = 4096;

/// Checks one label.
pub fn validate(key: &str, value: &str) -> Result<(), Error> {
    if key.is_empty() {
        return Err(Error::invalid_argument("label key must not be empty"));
    }
    if key.len() + value.len() > MAX_LABEL_SIZE {
        let shown: String = key.chars().take(10).collect();
        return Err(Error::invalid_argument(format!(
            "label key and value greater than maximum size ({MAX_LABEL_SIZE} bytes), key: {shown}"
        )));
    }
    Ok(())
}

/// Checks every label of a map.
pub fn validate_all<'a>(labels: impl IntoIterator<Item = (&'a String, &'a String)>) -> Result<(), Error> {
    labels.into_iter().try_for_each(|(k, v)| validate(k, v))
}

/// Applies field paths of the form `labels` (replace all) or `labels.<key>` (set one key) to
/// `current`; no paths means replace all. A key absent from `update` or with an empty value is
/// removed, as containerd's `SetLabel` does (`ctr namespaces label NS key=` unsets `key`).
/// Other paths are rejected.
pub fn apply_fieldpaths(
    current: &mut BTreeMap<String, String>,
    update: &BTreeMap<String, String>,
    paths: &[String],
) -> Result<(), Error> {
    let replace_all = |current: &mut BTreeMap<String, String>| {
        *current = update.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.clone(), v.clone())).collect();
    };
    if paths.is_empty() {
        replace_all(current);
        return Ok(());
    }
    for path in paths {
        if path == "labels" {
            replace_all(current);
        } else if let Some(key) = path.strip_prefix("labels.") {
            match update.get(key).filter(|v| !v.is_empty()) {
                Some(v) => {
                    current.insert(key.to_string(), v.clone());
                }
                None => {
                    current.remove(key);
                }
            }
        } else {
            return Err(Error::invalid_argument(format!("cannot update {path:?} field")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn size_limit() {
        assert!(validate("k", &"v".repeat(MAX_LABEL_SIZE - 1)).is_ok());
        assert!(validate("k", &"v".repeat(MAX_LABEL_SIZE)).is_err());
        assert!(validate("", "v").is_err());
    }

    #[test]
    fn fieldpaths_set_remove_replace() {
        let mut cur = map(&[("a", "1"), ("b", "2")]);
        apply_fieldpaths(&mut cur, &map(&[("a", "9")]), &["labels.a".into(), "labels.b".into()]).unwrap();
        assert_eq!(cur, map(&[("a", "9")]));
        apply_fieldpaths(&mut cur, &map(&[("z", "0")]), &[]).unwrap();
        assert_eq!(cur, map(&[("z", "0")]));
        assert!(apply_fieldpaths(&mut cur, &map(&[]), &["name".into()]).is_err());
        apply_fieldpaths(&mut cur, &map(&[("z", "")]), &["labels.z".into()]).unwrap();
        assert!(cur.is_empty(), "an empty value unsets the key");
        apply_fieldpaths(&mut cur, &map(&[("a", "1"), ("b", "")]), &[]).unwrap();
        assert_eq!(cur, map(&[("a", "1")]));
    }
}
