//! Snapshotters as the garbage collector sees them.

use berth_core::filters::Filter;
use berth_core::Result;
use berth_gc::{SnapshotRecord, SnapshotView};

use crate::SharedSnapshotter;

/// Adapts a snapshotter to the collector's [`SnapshotView`].
pub struct SnapshotterGcView(pub SharedSnapshotter);

impl SnapshotView for SnapshotterGcView {
    fn snapshotter(&self) -> &str {
        self.0.name()
    }

    fn snapshots(&self, ns: &str) -> Result<Vec<SnapshotRecord>> {
        Ok(self
            .0
            .list(ns, &Filter::default())?
            .into_iter()
            .map(|i| SnapshotRecord { key: i.name, parent: i.parent, labels: i.labels })
            .collect())
    }

    fn remove_snapshot(&self, ns: &str, key: &str) -> Result<()> {
        self.0.remove(ns, key)
    }
}
