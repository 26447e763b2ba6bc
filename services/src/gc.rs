//! Scheduling of garbage collection: deletes ask for a collection, which runs shortly after
//! in the background so bursts of deletes coalesce into one; `collect_now` runs one and waits
//! (for `sync` deletes and `berthctl gc`).

use std::sync::Arc;
use std::time::Duration;

use berth_core::{Error, Result};
use berth_gc::{CollectStats, Collector, ContentView};
use tokio::sync::{Mutex, Notify};

/// How long a scheduled collection waits for more deletes to join it.
pub const COALESCE_WINDOW: Duration = Duration::from_millis(100);

/// Anything that can run a collection (the collector, whatever its content view).
pub trait Collect: Send + Sync {
    /// Runs one collection.
    fn collect(&self) -> Result<CollectStats>;
}

impl<C: ContentView> Collect for Collector<C> {
    fn collect(&self) -> Result<CollectStats> {
        Collector::collect(self)
    }
}

/// The `io.berth.gc.v1` instance.
pub struct GcScheduler {
    collector: Arc<dyn Collect>,
    wake: Arc<Notify>,
    running: Mutex<()>,
}

impl GcScheduler {
    /// Starts the background loop on the current tokio runtime.
    pub fn start(collector: Arc<dyn Collect>) -> Arc<GcScheduler> {
        let wake = Arc::new(Notify::new());
        let gc = Arc::new(GcScheduler { collector, wake: wake.clone(), running: Mutex::new(()) });
        let weak = Arc::downgrade(&gc);
        tokio::spawn(async move {
            loop {
                wake.notified().await;
                tokio::time::sleep(COALESCE_WINDOW).await;
                let Some(gc) = weak.upgrade() else { return };
                if let Err(e) = gc.collect_now().await {
                    tracing::warn!(error = %e, "background garbage collection failed");
                }
            }
        });
        gc
    }

    /// Asks for a collection soon.
    pub fn schedule(&self) {
        self.wake.notify_one();
    }

    /// Runs a collection now (after any running one) and returns what it freed.
    pub async fn collect_now(&self) -> Result<CollectStats> {
        let _one = self.running.lock().await;
        let collector = self.collector.clone();
        tokio::task::spawn_blocking(move || collector.collect())
            .await
            .map_err(|e| Error::internal(format!("garbage collection task failed: {e}")))?
    }
}
