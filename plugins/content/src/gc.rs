//! The content store as the garbage collector sees it.

use std::collections::BTreeMap;

use berth_core::filters::Filter;
use berth_core::{Digest, ErrorKind, Result};
use berth_gc::ContentView;

use crate::ContentStore;

/// Records and blobs may vanish between the collector's listing and its call (a client's
/// delete does not wait for the collection), so "not found" counts as done.
fn gone_is_ok<T: Default>(r: Result<T>) -> Result<T> {
    match r {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(T::default()),
        other => other,
    }
}

impl ContentView for ContentStore {
    fn records(&self, ns: &str) -> Result<Vec<(Digest, BTreeMap<String, String>)>> {
        Ok(self.list(ns, &Filter::default())?.into_iter().map(|i| (i.digest, i.labels)).collect())
    }

    fn remove_record(&self, ns: &str, digest: &Digest) -> Result<()> {
        gone_is_ok(self.delete(ns, digest))
    }

    fn blobs(&self) -> Result<Vec<Digest>> {
        self.blob_digests_on_disk()
    }

    fn read_small(&self, digest: &Digest, max: u64) -> Result<Option<Vec<u8>>> {
        let blob = match self.open_blob(digest) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if blob.size() > max {
            return Ok(None);
        }
        let mut buf = vec![0u8; usize::try_from(blob.size()).unwrap_or(0)];
        blob.read_exact_at(&mut buf, 0)?;
        Ok(Some(buf))
    }

    fn remove_blob(&self, digest: &Digest) -> Result<u64> {
        gone_is_ok(ContentStore::remove_blob(self, digest))
    }
}
