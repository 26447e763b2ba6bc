//! Berth's metadata store: one sled database (`root/meta.sled`) holding every namespaced
//! object record, with multi-key writes in transactions.
//!
//! # Key layout
//!
//! The default tree holds only the schema version; everything else lives in the tree named
//! after the schema (`v1`), so a future migration can build `v2` beside it and switch over.
//! Keys are byte strings whose parts are joined by NUL (`\0`), which identifiers cannot hold,
//! so prefixes never collide.
//!
//! ```text
//! <default tree>
//!   schema_version                       u32 big-endian, currently 1
//! v1
//!   ns \0 <namespace>                    JSON NamespaceRecord { labels }
//!   cnt \0 <namespace> \0 <kind>         u64 big-endian: objects of <kind> in <namespace>
//!   obj \0 <namespace> \0 <kind> \0 <id> record bytes, encoded by the owning plugin
//! ```
//!
//! `<kind>` is one of [`Kind`]: `images`, `containers`, `content` (blob visibility and labels;
//! the blobs themselves are shared on disk), `leases`, `snapshots` (id is
//! `<snapshotter>\0<key>`), `sandboxes`. The per-kind counters let a namespace delete check
//! emptiness inside the same transaction that removes it, which sled's transactions (no
//! scans) could not do otherwise.

mod containers;
mod images;
mod leases;
mod namespaces;
mod store;

pub use berth_core::time::parse_rfc3339;
pub use containers::{AnyValue, Container, ContainerRuntime, SPEC_TYPE_URL};
pub use images::Image;
pub use leases::{Lease, LeaseResource, EXPIRE_LABEL};
pub use namespaces::{Namespace, NamespaceRecord};
pub use store::{Kind, MetadataConfig, MetadataStore, NamespaceTx, SCHEMA_VERSION};
