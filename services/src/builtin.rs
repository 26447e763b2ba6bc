//! The explicit list of every plugin built into berthd, in one place.

use std::sync::Arc;

use berth_content::ContentStore;
use berth_metadata::{MetadataConfig, MetadataStore};

use crate::exchange::Exchange;
use crate::gc::GcScheduler;
use crate::registry::{InitContext, InitError, Instance, Registration};
use crate::services;

/// Plugin type of the metadata store.
pub const METADATA: &str = "io.berth.metadata.v1";
/// Plugin type of gRPC services.
pub const GRPC: &str = "io.berth.grpc.v1";
/// Plugin type of the event exchange.
pub const EVENTS: &str = "io.berth.event.v1";
/// Plugin type of the garbage collector.
pub const GC: &str = "io.berth.gc.v1";
/// Plugin type of the content store.
pub const CONTENT: &str = "io.berth.content.v1";
/// Plugin type of the image unpacker.
pub const UNPACK: &str = "io.berth.unpack.v1";
/// Plugin type of snapshotters.
pub const SNAPSHOTTER: &str = "io.berth.snapshotter.v1";
/// Plugin type of the differ (layer apply and diff).
pub const DIFFER: &str = "io.berth.differ.v1";
/// Plugin type of the runtime (shim manager).
pub const RUNTIME: &str = "io.berth.runtime.v1";
/// Plugin type of registry transfers (pull, push).
pub const TRANSFER: &str = "io.berth.transfer.v1";

/// All built-in plugins. Order here is only a tie-breaker; requirements decide init order.
pub static PLUGINS: &[Registration] = &[
    Registration {
        plugin_type: METADATA,
        id: "sled",
        requires: &[],
        default_config: Some(|| {
            toml::Value::try_from(MetadataConfig::default()).unwrap_or(toml::Value::Boolean(false))
        }),
        init: init_metadata,
    },
    Registration {
        plugin_type: GRPC,
        id: "version",
        requires: &[],
        default_config: None,
        init: services::version::init,
    },
    Registration {
        plugin_type: GRPC,
        id: "introspection",
        requires: &[],
        default_config: None,
        init: services::introspection::init,
    },
    Registration { plugin_type: EVENTS, id: "exchange", requires: &[], default_config: None, init: init_exchange },
    Registration {
        plugin_type: GRPC,
        id: "namespaces",
        requires: &[METADATA, EVENTS],
        default_config: None,
        init: services::namespaces::init,
    },
    Registration {
        plugin_type: GRPC,
        id: "events",
        requires: &[EVENTS],
        default_config: None,
        init: services::events::init,
    },
    Registration {
        plugin_type: GRPC,
        id: "images",
        requires: &[METADATA, EVENTS, GC],
        default_config: None,
        init: services::images::init,
    },
    // Before the containers service, which refuses to delete a container with a task.
    Registration {
        plugin_type: RUNTIME,
        id: "shim",
        requires: &[EVENTS],
        default_config: None,
        init: services::tasks::init_runtime,
    },
    Registration {
        plugin_type: GRPC,
        id: "containers",
        requires: &[METADATA, EVENTS, GC],
        default_config: None,
        init: services::containers::init,
    },
    Registration {
        plugin_type: GRPC,
        id: "tasks",
        requires: &[METADATA, EVENTS, RUNTIME, SNAPSHOTTER],
        default_config: None,
        init: services::tasks::init,
    },
    Registration {
        plugin_type: GRPC,
        id: "leases",
        requires: &[METADATA, GC],
        default_config: None,
        init: services::leases::init,
    },
    Registration { plugin_type: GRPC, id: "gc", requires: &[GC], default_config: None, init: services::gc::init },
    Registration {
        plugin_type: CONTENT,
        id: "content",
        requires: &[METADATA],
        default_config: None,
        init: services::content::init_store,
    },
    Registration {
        plugin_type: GRPC,
        id: "content",
        requires: &[CONTENT, EVENTS, GC],
        default_config: None,
        init: services::content::init,
    },
    Registration {
        plugin_type: DIFFER,
        id: "walking",
        requires: &[CONTENT],
        default_config: None,
        init: services::diff::init_differ,
    },
    Registration {
        plugin_type: GRPC,
        id: "diff",
        requires: &[DIFFER],
        default_config: None,
        init: services::diff::init,
    },
    Registration {
        plugin_type: SNAPSHOTTER,
        id: "overlayfs",
        requires: &[METADATA],
        default_config: None,
        init: services::snapshots::init_overlayfs,
    },
    Registration {
        plugin_type: SNAPSHOTTER,
        id: "native",
        requires: &[METADATA],
        default_config: None,
        init: services::snapshots::init_native,
    },
    Registration {
        plugin_type: GRPC,
        id: "snapshots",
        requires: &[SNAPSHOTTER],
        default_config: None,
        init: services::snapshots::init,
    },
    Registration {
        plugin_type: UNPACK,
        id: "unpacker",
        requires: &[METADATA, CONTENT, SNAPSHOTTER],
        default_config: Some(|| {
            toml::Value::try_from(services::unpack::UnpackConfig::default()).unwrap_or(toml::Value::Boolean(false))
        }),
        init: services::unpack::init_unpacker,
    },
    Registration {
        plugin_type: GRPC,
        id: "unpack",
        requires: &[UNPACK],
        default_config: None,
        init: services::unpack::init,
    },
    // After the unpacker in this list: it is used when loaded, not required.
    Registration {
        plugin_type: TRANSFER,
        id: "distribution",
        requires: &[METADATA, CONTENT, EVENTS],
        default_config: Some(|| {
            toml::Value::try_from(berth_distribution::DistributionConfig::default())
                .unwrap_or(toml::Value::Boolean(false))
        }),
        init: services::transfer::init_distribution,
    },
    Registration {
        plugin_type: GRPC,
        id: "transfer",
        requires: &[TRANSFER],
        default_config: None,
        init: services::transfer::init,
    },
    Registration {
        plugin_type: GC,
        id: "scheduler",
        requires: &[METADATA, CONTENT, SNAPSHOTTER],
        default_config: None,
        init: init_gc,
    },
];

fn init_exchange(_: &mut InitContext<'_>) -> Result<Instance, InitError> {
    Ok(Arc::new(Exchange::default()))
}

fn init_gc(ctx: &mut InitContext<'_>) -> Result<Instance, InitError> {
    let meta = ctx.get::<MetadataStore>(METADATA)?;
    let content = ctx.get::<ContentStore>(CONTENT)?;
    let snapshotters: Vec<Arc<dyn berth_gc::SnapshotView>> = services::snapshots::snapshotters(ctx)
        .into_values()
        .map(|sn| Arc::new(berth_snapshots::SnapshotterGcView(sn)) as Arc<dyn berth_gc::SnapshotView>)
        .collect();
    let collector = berth_gc::Collector::new(meta, ContentStore::clone(&content)).with_snapshotters(snapshotters);
    Ok(GcScheduler::start(Arc::new(collector)))
}

fn init_metadata(ctx: &mut InitContext<'_>) -> Result<Instance, InitError> {
    let config: MetadataConfig = ctx.config()?;
    let path = ctx.daemon.root.join("meta.sled");
    let store = MetadataStore::open(&path, &config)?;
    ctx.exports.insert("path".into(), path.display().to_string());
    ctx.exports.insert("schema".into(), format!("v{}", store.schema_version()?));
    Ok(Arc::new(store))
}
