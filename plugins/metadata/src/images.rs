//! Image records: a name pointing at a target descriptor (manifest or index), with labels.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_core::filters::Adaptor;
use berth_core::{labels, Descriptor, Error, Result};
use serde::{Deserialize, Serialize};

use crate::store::{Kind, MetadataStore};

/// An image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Name, usually a normalized reference (`docker.io/library/busybox:latest`).
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Root descriptor (manifest or index).
    pub target: Descriptor,
    /// Creation time.
    pub created_at: SystemTime,
    /// Last update time.
    pub updated_at: SystemTime,
}

impl Adaptor for Image {
    fn field(&self, path: &[String]) -> Vec<String> {
        let one = |s: &str| vec![s.to_string()];
        match path {
            [f] if f == "name" => one(&self.name),
            [t, f] if t == "target" && f == "digest" => one(&self.target.digest),
            [t, f] if t == "target" && (f == "mediatype" || f == "media_type") => one(&self.target.media_type),
            [f, k] if f == "labels" => self.labels.get(k).cloned().into_iter().collect(),
            [t, a, k] if t == "target" && a == "annotations" => {
                self.target.annotations.get(k).cloned().into_iter().collect()
            }
            _ => Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ImageRecord {
    target: Descriptor,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    created_at_ns: u64,
    updated_at_ns: u64,
}

fn ns_time(t: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(t)
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

impl ImageRecord {
    fn decode(name: &str, bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| Error::internal(format!("corrupt image record {name:?}: {e}")))
    }
    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
    fn to_image(&self, name: &str) -> Image {
        Image {
            name: name.to_string(),
            labels: self.labels.clone(),
            target: self.target.clone(),
            created_at: ns_time(self.created_at_ns),
            updated_at: ns_time(self.updated_at_ns),
        }
    }
}

fn validate(image: &Image) -> Result<()> {
    if image.name.trim().is_empty() {
        return Err(Error::invalid_argument("image name must not be empty"));
    }
    if image.name.contains('\0') {
        return Err(Error::invalid_argument("image name must not contain NUL"));
    }
    labels::validate_all(&image.labels)?;
    image.target.validate().map_err(|e| e.context(format!("image {:?} target", image.name)))?;
    Ok(())
}

impl MetadataStore {
    /// Creates an image; AlreadyExists if the name is taken.
    pub fn create_image(&self, ns: &str, image: &Image) -> Result<Image> {
        validate(image)?;
        let now = now_ns();
        let rec = ImageRecord {
            target: image.target.clone(),
            labels: image.labels.clone(),
            created_at_ns: now,
            updated_at_ns: now,
        };
        self.update(ns, |tx| {
            if tx.get(Kind::Images, &image.name)?.is_some() {
                return Err(Error::already_exists(format!("image {:?}", image.name)));
            }
            tx.put(Kind::Images, &image.name, &rec.encode())?;
            Ok(())
        })?;
        Ok(rec.to_image(&image.name))
    }

    /// Reads an image; NotFound if absent.
    pub fn get_image(&self, ns: &str, name: &str) -> Result<Image> {
        let bytes = self.get(ns, Kind::Images, name)?.ok_or_else(|| Error::not_found(format!("image {name:?}")))?;
        Ok(ImageRecord::decode(name, &bytes)?.to_image(name))
    }

    /// Lists the images of a namespace ordered by name.
    pub fn list_images(&self, ns: &str) -> Result<Vec<Image>> {
        self.list(ns, Kind::Images)?.into_iter().map(|(n, v)| Ok(ImageRecord::decode(&n, &v)?.to_image(&n))).collect()
    }

    /// Updates an image. Field paths: `labels`, `labels.<key>`, `target`, `annotations`
    /// (of the target), `annotations.<key>`; none means labels and target both.
    pub fn update_image(&self, ns: &str, image: &Image, paths: &[String]) -> Result<Image> {
        if image.name.is_empty() {
            return Err(Error::invalid_argument("image name must not be empty"));
        }
        let rec = self.update(ns, |tx| {
            let bytes = tx
                .get(Kind::Images, &image.name)?
                .ok_or_else(|| Error::not_found(format!("image {:?}", image.name)))?;
            let mut rec = ImageRecord::decode(&image.name, &bytes)?;
            if paths.is_empty() {
                rec.labels = image.labels.clone();
                rec.target = image.target.clone();
            }
            let mut label_paths = Vec::new();
            let mut annotation_paths = Vec::new();
            for p in paths {
                match p.as_str() {
                    "target" => rec.target = image.target.clone(),
                    p if p == "labels" || p.starts_with("labels.") => label_paths.push(p.to_string()),
                    "annotations" => annotation_paths.push("labels".to_string()),
                    p if p.starts_with("annotations.") => {
                        annotation_paths.push(format!("labels.{}", &p["annotations.".len()..]))
                    }
                    other => {
                        return Err(Error::invalid_argument(format!(
                            "cannot update {other:?} field on image {:?}",
                            image.name
                        )))
                    }
                }
            }
            if !label_paths.is_empty() {
                labels::apply_fieldpaths(&mut rec.labels, &image.labels, &label_paths)?;
            }
            if !annotation_paths.is_empty() {
                labels::apply_fieldpaths(&mut rec.target.annotations, &image.target.annotations, &annotation_paths)?;
            }
            let check = rec.to_image(&image.name);
            validate(&check)?;
            rec.updated_at_ns = now_ns();
            tx.put(Kind::Images, &image.name, &rec.encode())?;
            Ok(rec)
        })?;
        Ok(rec.to_image(&image.name))
    }

    /// Deletes an image; NotFound if absent. Its content becomes collectable.
    pub fn delete_image(&self, ns: &str, name: &str) -> Result<()> {
        self.update(ns, |tx| {
            tx.remove(Kind::Images, name)?.ok_or_else(|| Error::not_found(format!("image {name:?}")))?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MetadataConfig;
    use berth_core::filters::Filter;
    use berth_core::ErrorKind;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn open() -> (tempfile::TempDir, MetadataStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = MetadataStore::open(&dir.path().join("meta.sled"), &MetadataConfig::default()).unwrap();
        (dir, store)
    }

    fn image(name: &str) -> Image {
        Image {
            name: name.into(),
            labels: [("a".to_string(), "1".to_string())].into(),
            target: Descriptor {
                media_type: berth_core::descriptor::MEDIA_TYPE_OCI_MANIFEST.into(),
                digest: D.into(),
                size: 10,
                annotations: BTreeMap::new(),
            },
            created_at: UNIX_EPOCH,
            updated_at: UNIX_EPOCH,
        }
    }

    #[test]
    fn crud_and_filters() {
        let (_d, s) = open();
        s.create_image("ns", &image("docker.io/library/busybox:latest")).unwrap();
        s.create_image("ns", &image("docker.io/library/alpine:3")).unwrap();
        assert_eq!(
            s.create_image("ns", &image("docker.io/library/alpine:3")).unwrap_err().kind(),
            ErrorKind::AlreadyExists
        );
        let got = s.get_image("ns", "docker.io/library/busybox:latest").unwrap();
        assert!(got.created_at > UNIX_EPOCH);
        let f = Filter::parse_all(&["name~=busy"]).unwrap();
        let names: Vec<_> = s.list_images("ns").unwrap().into_iter().filter(|i| f.matches(i)).map(|i| i.name).collect();
        assert_eq!(names, ["docker.io/library/busybox:latest"]);
        let f = Filter::parse_all(&[r#"labels."a"==1"#]).unwrap();
        assert_eq!(s.list_images("ns").unwrap().iter().filter(|i| f.matches(*i)).count(), 2);

        let mut upd = image("docker.io/library/alpine:3");
        upd.labels = [("b".to_string(), "2".to_string())].into();
        let out = s.update_image("ns", &upd, &["labels.b".into()]).unwrap();
        assert_eq!(out.labels.len(), 2);
        assert!(out.updated_at >= out.created_at);
        assert_eq!(s.update_image("ns", &upd, &["name".into()]).unwrap_err().kind(), ErrorKind::InvalidArgument);
        assert_eq!(s.update_image("ns", &image("nope"), &[]).unwrap_err().kind(), ErrorKind::NotFound);

        s.delete_image("ns", "docker.io/library/alpine:3").unwrap();
        assert_eq!(s.delete_image("ns", "docker.io/library/alpine:3").unwrap_err().kind(), ErrorKind::NotFound);
        assert_eq!(s.list_images("other").unwrap().len(), 0);
    }

    #[test]
    fn invalid_images_rejected() {
        let (_d, s) = open();
        let mut bad = image("x");
        bad.target.digest = "sha256:nothex".into();
        assert_eq!(s.create_image("ns", &bad).unwrap_err().kind(), ErrorKind::InvalidArgument);
        let mut bad = image("x");
        bad.target.media_type.clear();
        assert_eq!(s.create_image("ns", &bad).unwrap_err().kind(), ErrorKind::InvalidArgument);
        assert_eq!(s.create_image("ns", &image("")).unwrap_err().kind(), ErrorKind::InvalidArgument);
        assert!(s.list_images("ns").unwrap().is_empty());
    }
}
