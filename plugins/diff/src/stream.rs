//! The layer stream, read, hashed and decompressed on a thread of its own and handed to the
//! extractor in large chunks, so that hashing and inflating overlap with file creation.

use std::cell::Cell;
use std::io::{self, BufReader, Read};
use std::rc::Rc;
use std::sync::mpsc::{Receiver, Sender, SyncSender};

use berth_core::{Digest, Error};

use crate::compression::{Compression, Decoder, MAGIC_LEN};
use crate::hashing::HashingReader;

/// Bytes of uncompressed tar per chunk.
const CHUNK: usize = 1 << 20;
/// Read buffer of the compressed stream.
const COMPRESSED_BUF: usize = 256 << 10;
/// Chunks decoded ahead of the extractor.
pub(crate) const CHUNKS_AHEAD: usize = 4;

/// A chunk of uncompressed tar (a buffer and how much of it is filled), or why there is none.
pub(crate) type Chunk = io::Result<(Vec<u8>, usize)>;

/// What the producer saw of the whole stream.
pub(crate) struct Streams {
    pub(crate) compression: Compression,
    pub(crate) digest: Digest,
    pub(crate) size: u64,
    pub(crate) diff_id: Digest,
    pub(crate) uncompressed_size: u64,
}

/// Why the producer stopped early.
pub(crate) enum StreamError {
    /// The extractor stopped reading (it failed, or has its own error to report).
    Gone,
    /// The stream is bad or its source failed.
    Failed(Error),
}

/// Reads `reader` to its end: detects the compression, hashes the stream as read and the
/// uncompressed tar, and sends the tar in chunks (buffers come back through `recycle`). On
/// failure the extractor is sent an error too, so it never takes a cut stream for a whole one.
pub(crate) fn produce<R: Read>(
    reader: R,
    tx: SyncSender<Chunk>,
    recycle: Receiver<Vec<u8>>,
) -> Result<Streams, StreamError> {
    let source_failed = Rc::new(Cell::new(false));
    let fail = |e: Error| {
        let _ = tx.send(Err(io::Error::other(e.message().to_string())));
        StreamError::Failed(e)
    };
    let io_fail = |e: io::Error| {
        fail(if source_failed.get() {
            Error::internal(format!("read layer: {e}"))
        } else {
            Error::invalid_argument(format!("invalid layer data: {e}"))
        })
    };

    let mut source = HashingReader::flagging(reader, source_failed.clone());
    let mut magic = [0u8; MAGIC_LEN];
    let n = read_full(&mut source, &mut magic).map_err(io_fail)?;
    let compression = Compression::detect(&magic[..n]).map_err(fail)?;
    let compressed = BufReader::with_capacity(COMPRESSED_BUF, (&magic[..n]).chain(source));
    let decoder = Decoder::new(compression, compressed).map_err(io_fail)?;
    // A plain tar is its own diff_id: hash it once.
    let mut tar = match compression {
        Compression::None => HashingReader::counting(decoder),
        _ => HashingReader::new(decoder),
    };
    loop {
        let mut buf = recycle.try_recv().unwrap_or_else(|_| vec![0; CHUNK]);
        let len = read_full(&mut tar, &mut buf).map_err(io_fail)?;
        if len == 0 {
            break;
        }
        if tx.send(Ok((buf, len))).is_err() {
            return Err(StreamError::Gone);
        }
    }
    // Whatever follows the compressed stream counts towards its digest too.
    let (decoder, diff_id, uncompressed_size) = tar.into_parts();
    let mut rest = decoder.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(io_fail)?;
    let (_, source) = rest.into_inner().into_inner();
    let (_, digest, size) = source.into_parts();
    let digest = digest.ok_or_else(|| fail(Error::internal("layer stream was not hashed")))?;
    let diff_id = diff_id.unwrap_or_else(|| digest.clone());
    Ok(Streams { compression, digest, size, diff_id, uncompressed_size })
}

/// Fills `buf` as far as the stream allows; fewer bytes only at its end.
pub(crate) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The extractor's side: the chunks as one stream.
pub(crate) struct ChunkReader {
    rx: Receiver<Chunk>,
    recycle: Sender<Vec<u8>>,
    cur: Vec<u8>,
    len: usize,
    pos: usize,
    done: bool,
    /// Bytes that may still be read before an error; see [`ChunkReader::budget`].
    budget: Rc<Cell<u64>>,
}

impl ChunkReader {
    pub(crate) fn new(rx: Receiver<Chunk>, recycle: Sender<Vec<u8>>) -> Self {
        let budget = Rc::new(Cell::new(u64::MAX));
        ChunkReader { rx, recycle, cur: Vec::new(), len: 0, pos: 0, done: false, budget }
    }

    /// A handle on the read budget: the tar reader keeps whole PAX and GNU long-name
    /// headers in memory, so the caller bounds what one step of its iterator may read.
    pub(crate) fn budget(&self) -> Rc<Cell<u64>> {
        self.budget.clone()
    }
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.len {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok((buf, len))) => {
                    let old = std::mem::replace(&mut self.cur, buf);
                    if !old.is_empty() {
                        let _ = self.recycle.send(old);
                    }
                    (self.len, self.pos) = (len, 0);
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                // The producer is done (or gone: it says which to whoever joins it).
                Err(_) => self.done = true,
            }
        }
        let budget = self.budget.get();
        if budget == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "tar extension headers exceed 16 MiB"));
        }
        let n = out.len().min(self.len - self.pos).min(usize::try_from(budget).unwrap_or(usize::MAX));
        self.budget.set(budget - n as u64);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
