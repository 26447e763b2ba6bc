//! Image archive formats: OCI image layouts and `docker save` tars, read as one streaming pass
//! and written member by member. Nothing here talks to berthd.

pub mod docker;
pub mod oci;
pub mod read;
pub mod write;

/// Largest metadata document (index.json, manifest.json, a manifest or index blob) held in
/// memory; anything larger is refused as an oversized manifest.
pub const MAX_METADATA_SIZE: u64 = 4 << 20;
