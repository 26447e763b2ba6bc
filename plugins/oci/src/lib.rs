//! OCI runtime spec defaults that every Berth front end shares (berthctl today, the Docker API
//! gateway and the CRI plugin later): Docker's capability set, mounts, masked and read-only
//! paths, rlimits and namespaces ([`defaults`]), and Docker's default seccomp profile
//! ([`seccomp`]). Values are `serde_json::Value` pieces of a spec, so callers assemble the spec
//! their own way.

pub mod defaults;
pub mod seccomp;

pub use defaults::{default_mounts, default_namespaces, default_rlimits, masked_paths, readonly_paths, DEFAULT_CAPS};
pub use seccomp::default_profile;
