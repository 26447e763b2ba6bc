//! Positional reads of a committed blob.

use std::fs::File;
use std::os::unix::fs::FileExt;

use berth_core::{Digest, Error, Result};

/// An open committed blob; reads at any offset, from any number of threads.
#[derive(Debug)]
pub struct BlobReader {
    digest: Digest,
    file: File,
    size: u64,
}

impl BlobReader {
    pub(crate) fn new(digest: Digest, file: File, size: u64) -> Self {
        BlobReader { digest, file, size }
    }

    /// The blob's digest.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The blob's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Reads up to `buf.len()` bytes at `offset`; 0 at or past the end.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        if offset >= self.size {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(self.size - offset).unwrap_or(usize::MAX));
        loop {
            match self.file.read_at(&mut buf[..want], offset) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::internal(format!("read blob {} at offset {offset}: {e}", self.digest))),
            }
        }
    }

    /// Fills `buf` from `offset`; an error when the blob ends first.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let n = self.read_at(&mut buf[done..], offset + done as u64)?;
            if n == 0 {
                return Err(Error::internal(format!(
                    "blob {} ended at {} bytes, before offset {}",
                    self.digest,
                    offset + done as u64,
                    offset + buf.len() as u64
                )));
            }
            done += n;
        }
        Ok(())
    }
}
