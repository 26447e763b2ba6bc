//! Readers and writers that hash (sha256) and count the bytes passing through them.

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::rc::Rc;

use berth_core::Digest;
use sha2::{Digest as _, Sha256};

/// Hashes what is read through it. `failed` is raised when the inner reader errs, so a
/// caller can tell a failing source from bad data found further down the pipeline.
pub(crate) struct HashingReader<R> {
    inner: R,
    /// None: count only (the digest is known to equal another one).
    hasher: Option<Sha256>,
    count: u64,
    failed: Option<Rc<Cell<bool>>>,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader { inner, hasher: Some(Sha256::new()), count: 0, failed: None }
    }

    /// Counts without hashing; [`HashingReader::into_parts`] then gives no digest.
    pub(crate) fn counting(inner: R) -> Self {
        HashingReader { inner, hasher: None, count: 0, failed: None }
    }

    /// Like [`HashingReader::new`], raising `failed` on a read error of `inner`.
    pub(crate) fn flagging(inner: R, failed: Rc<Cell<bool>>) -> Self {
        HashingReader { inner, hasher: Some(Sha256::new()), count: 0, failed: Some(failed) }
    }

    /// The inner reader, the digest (None when only counting) and the number of bytes read.
    pub(crate) fn into_parts(self) -> (R, Option<Digest>, u64) {
        let digest = self.hasher.map(|h| Digest::sha256_from_bytes(&h.finalize().into()));
        (self.inner, digest, self.count)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    if let Some(flag) = &self.failed {
                        flag.set(true);
                    }
                }
                return Err(e);
            }
        };
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        self.count += n as u64;
        Ok(n)
    }
}

/// Hashes what is written through it.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashingWriter { inner, hasher: Sha256::new(), count: 0 }
    }

    /// The sink, the digest and the number of bytes written.
    pub(crate) fn into_parts(self) -> (W, Digest, u64) {
        (self.inner, Digest::sha256_from_bytes(&self.hasher.finalize().into()), self.count)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
