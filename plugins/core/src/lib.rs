//! Shared kinds of Berth used by every plugin: error kinds, identifier and label rules, and
//! the containerd filter syntax. Nothing here knows about gRPC or storage.

pub mod descriptor;
pub mod digest;
pub mod errdefs;
pub mod filters;
pub mod identifiers;
pub mod image;
pub mod labels;
pub mod platform;
pub mod reference;
pub mod time;

pub use descriptor::Descriptor;
pub use digest::Digest;
pub use errdefs::{Error, ErrorKind, Result};
pub use platform::Platform;
