//! OCI content descriptors and the media types Berth understands.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Digest, Error};

/// OCI image manifest.
pub const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema 2 manifest.
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const MEDIA_TYPE_DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Points at a blob: media type, digest, size, annotations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// Media type of the blob.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// Digest, as a string (validated by [`Descriptor::validate`]).
    pub digest: String,
    /// Size in bytes.
    pub size: i64,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    /// Checks that the digest is well formed, the media type set and the size not negative.
    pub fn validate(&self) -> Result<Digest, Error> {
        if self.media_type.is_empty() {
            return Err(Error::invalid_argument("descriptor media type must be set"));
        }
        if self.size < 0 {
            return Err(Error::invalid_argument(format!("descriptor size {} is negative", self.size)));
        }
        Digest::parse(&self.digest)
    }
}

/// Whether a media type is a manifest list or index.
pub fn is_index(media_type: &str) -> bool {
    media_type == MEDIA_TYPE_OCI_INDEX || media_type == MEDIA_TYPE_DOCKER_MANIFEST_LIST
}

/// Whether a media type is an image manifest.
pub fn is_manifest(media_type: &str) -> bool {
    media_type == MEDIA_TYPE_OCI_MANIFEST || media_type == MEDIA_TYPE_DOCKER_MANIFEST
}
