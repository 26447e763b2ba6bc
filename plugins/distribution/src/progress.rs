//! Progress of a transfer, per blob: the feed `berthctl image pull/push` draws bars from and
//! the Docker gateway will stream. Sending never blocks and never fails the transfer.

use tokio::sync::mpsc::UnboundedSender;

/// Where a blob or document is in its transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Looking up a reference.
    Resolving,
    /// Queued behind the concurrency limit or another pull of the same blob.
    Waiting,
    /// Bytes are arriving.
    Downloading,
    /// Checking size and digest.
    Verifying,
    /// Being unpacked into a snapshot.
    Extracting,
    /// Fetched (or pushed) and verified.
    Done,
    /// Already there: nothing transferred.
    Exists,
    /// Not transferred on purpose (foreign layers).
    Skipped,
    /// Bytes are leaving.
    Uploading,
    /// Mounted from another repository of the same registry.
    Mounted,
}

/// One progress event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Short id shown to users (12 hex digits of the digest, or the reference).
    pub id: String,
    /// Full digest, if known.
    pub digest: String,
    /// Media type, if known.
    pub media_type: String,
    /// Status.
    pub status: Status,
    /// Bytes done.
    pub current: u64,
    /// Bytes in all (0 when unknown).
    pub total: u64,
}

/// A sender of progress events (or none).
#[derive(Debug, Clone, Default)]
pub struct Progress(Option<UnboundedSender<Event>>);

impl Progress {
    /// Progress sent to `tx`.
    pub fn new(tx: UnboundedSender<Event>) -> Self {
        Progress(Some(tx))
    }

    /// Sends an event for a blob.
    pub fn blob(&self, digest: &str, media_type: &str, status: Status, current: u64, total: u64) {
        if let Some(tx) = &self.0 {
            let id = digest.split_once(':').map_or(digest, |(_, h)| &h[..h.len().min(12)]).to_string();
            let _ = tx.send(Event {
                id,
                digest: digest.to_string(),
                media_type: media_type.to_string(),
                status,
                current,
                total,
            });
        }
    }

    /// Sends an event about a reference (resolving).
    pub fn reference(&self, reference: &str, status: Status) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(Event {
                id: reference.to_string(),
                digest: String::new(),
                media_type: String::new(),
                status,
                current: 0,
                total: 0,
            });
        }
    }
}
