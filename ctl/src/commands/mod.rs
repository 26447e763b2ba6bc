//! One module per top-level berthctl command.

pub mod container;
pub mod content;
pub mod events;
pub mod gc;
pub mod image;
pub mod leases;
pub mod namespaces;
pub mod plugins;
pub mod run;
pub mod snapshots;
pub mod task;
pub mod userns;
pub mod version;

use std::collections::BTreeMap;

use anyhow::{bail, Result};

/// Parses `KEY=VALUE` arguments; `KEY=` gives an empty value.
pub fn parse_labels(args: &[String]) -> Result<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    for a in args {
        let Some((k, v)) = a.split_once('=') else {
            bail!("label {a:?} must be KEY=VALUE");
        };
        if k.is_empty() {
            bail!("label {a:?} has an empty key");
        }
        labels.insert(k.to_string(), v.to_string());
    }
    Ok(labels)
}

/// Formats labels as `k=v,k2=v2`.
pub fn format_labels<'a>(labels: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    let mut pairs: Vec<String> = labels.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.sort();
    pairs.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip() {
        let l = parse_labels(&["b=2".into(), "a=".into()]).unwrap();
        assert_eq!(format_labels(&l), "a=,b=2");
        assert!(parse_labels(&["novalue".into()]).is_err());
        assert!(parse_labels(&["=x".into()]).is_err());
    }
}
