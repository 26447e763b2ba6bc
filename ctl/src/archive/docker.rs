//! The `docker save` format: `manifest.json` (one entry per image: config file, tags, layer
//! files), `repositories`, and the Docker schema 2 manifest built from an entry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::oci::{
    Descriptor, Manifest, MEDIA_TYPE_DOCKER_CONFIG, MEDIA_TYPE_DOCKER_LAYER, MEDIA_TYPE_DOCKER_LAYER_GZIP,
    MEDIA_TYPE_DOCKER_MANIFEST,
};

/// File listing the images of a `docker save` archive.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Legacy file mapping repositories and tags to top layer ids.
pub const REPOSITORIES_FILE: &str = "repositories";

/// One image of `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ManifestEntry {
    /// Archive path of the config.
    pub config: String,
    /// Tags in Docker's short form (`busybox:latest`); null or absent for untagged images.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub repo_tags: Vec<String>,
    /// Archive paths of the layers, bottom first.
    pub layers: Vec<String>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

/// Parses `manifest.json`.
pub fn parse_manifest_file(data: &[u8]) -> Result<Vec<ManifestEntry>, String> {
    serde_json::from_slice(data).map_err(|e| format!("{MANIFEST_FILE} is not valid JSON: {e}"))
}

/// Whether a blob starts with the gzip magic.
pub fn is_gzip(prefix: &[u8]) -> bool {
    prefix.starts_with(&[0x1f, 0x8b])
}

/// The Docker layer media type for a blob starting with `prefix`.
pub fn layer_media_type(prefix: &[u8]) -> &'static str {
    if is_gzip(prefix) {
        MEDIA_TYPE_DOCKER_LAYER_GZIP
    } else {
        MEDIA_TYPE_DOCKER_LAYER
    }
}

/// The Docker schema 2 manifest of a config and layers (each `(digest, size, media type)`),
/// serialized exactly as containerd's importer does, so both give the same digest.
pub fn schema2_manifest(config: (&str, i64), layers: &[(String, i64, &str)]) -> Vec<u8> {
    let m = Manifest {
        schema_version: 2,
        media_type: MEDIA_TYPE_DOCKER_MANIFEST.into(),
        config: Descriptor::new(MEDIA_TYPE_DOCKER_CONFIG, config.0, config.1),
        layers: layers.iter().map(|(d, s, mt)| Descriptor::new(mt, d, *s)).collect(),
    };
    // Serializing plain structs of strings and integers cannot fail.
    serde_json::to_vec(&m).unwrap_or_default()
}

/// The `repositories` file: repository → tag → id of the image's top layer.
pub fn repositories_file(entries: &[(String, String, String)]) -> Vec<u8> {
    let mut repos: BTreeMap<&str, BTreeMap<&str, &str>> = BTreeMap::new();
    for (repo, tag, id) in entries {
        repos.entry(repo).or_default().insert(tag, id);
    }
    serde_json::to_vec(&repos).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_20_manifest_json() {
        let data = br#"[{"Config":"abc.json","RepoTags":["busybox:latest"],"Layers":["x/layer.tar"]},
                        {"Config":"def.json","RepoTags":null,"Layers":[]}]"#;
        let entries = parse_manifest_file(data).unwrap();
        assert_eq!(entries[0].repo_tags, ["busybox:latest"]);
        assert!(entries[1].repo_tags.is_empty());
        assert!(parse_manifest_file(b"not json").unwrap_err().contains("not valid JSON"));
    }

    #[test]
    fn sniffs_layer_compression() {
        assert_eq!(layer_media_type(&[0x1f, 0x8b, 8]), MEDIA_TYPE_DOCKER_LAYER_GZIP);
        assert_eq!(layer_media_type(b"bin/\0\0"), MEDIA_TYPE_DOCKER_LAYER);
        assert_eq!(layer_media_type(b""), MEDIA_TYPE_DOCKER_LAYER);
    }

    #[test]
    fn repositories_group_tags() {
        let r = repositories_file(&[
            ("busybox".into(), "latest".into(), "a".into()),
            ("busybox".into(), "1".into(), "a".into()),
        ]);
        assert_eq!(String::from_utf8(r).unwrap(), r#"{"busybox":{"1":"a","latest":"a"}}"#);
    }
}
