//! Applying a layer: decompress, hash, and extract a layer tar into a directory, entry by
//! entry, relative to open directory handles so that nothing lands outside the target.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::ops::Range;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::mpsc;

use berth_core::{Digest, Error, Result};
use rustix::fs::{self as rfs, AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid, XattrFlags};
use rustix::io::Errno;
use tar::EntryType;

use crate::compression::Compression;
use crate::root::{clear_dir, normalize, remove_all, show, split, Root};
use crate::stream::{self, ChunkReader, StreamError};
use crate::{OPAQUE_WHITEOUT, OVERLAY_OPAQUE_XATTR, WHITEOUT_META_PREFIX, WHITEOUT_PREFIX};

/// Copy buffer of file data.
const COPY_BUF: usize = 1 << 20;
/// Most bytes read to find one entry: its PAX and GNU long-name headers, and what the entry
/// before left unread (data of a whiteout or directory entry, which no real layer has).
const HEADERS_BUDGET: u64 = 16 << 20;

/// What to do with whiteout entries (`.wh.<name>`, `.wh..wh..opq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// Turn them into overlayfs whiteouts (a 0/0 character device; `trusted.overlay.opaque=y`
    /// on an opaque directory): for an overlayfs upper directory, which may be extracted on
    /// its own, in parallel with the other layers.
    Overlay,
    /// Delete what they name: for a directory that holds the layers below (native
    /// snapshotter, a mounted merged view).
    Delete,
}

/// How to apply a layer.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Whiteout handling.
    pub whiteouts: WhiteoutMode,
    /// The layer's media type, if known: must be a layer type (else `NotImplemented`). The
    /// compression is detected from the stream's first bytes either way, as containerd does.
    pub media_type: Option<String>,
}

impl ApplyOptions {
    /// Options with the given whiteout mode and no media type.
    pub fn new(whiteouts: WhiteoutMode) -> Self {
        ApplyOptions { whiteouts, media_type: None }
    }
}

/// What an apply read and wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// sha256 of the stream as read (compressed): compare with the descriptor's digest.
    pub digest: Digest,
    /// Bytes read.
    pub size: u64,
    /// sha256 of the uncompressed tar (the diff_id): compare with the image config.
    pub diff_id: Digest,
    /// Bytes of the uncompressed tar.
    pub uncompressed_size: u64,
    /// The compression found.
    pub compression: Compression,
    /// Tar entries processed (whiteouts included).
    pub entries: u64,
}

impl ApplyOutcome {
    /// `FailedPrecondition` unless the digests match those given.
    pub fn verify(&self, digest: Option<&Digest>, diff_id: Option<&Digest>) -> Result<()> {
        if let Some(d) = digest.filter(|d| **d != self.digest) {
            return Err(Error::failed_precondition(format!("layer digest {} does not match {d}", self.digest)));
        }
        if let Some(d) = diff_id.filter(|d| **d != self.diff_id) {
            return Err(Error::failed_precondition(format!("layer diff_id {} does not match {d}", self.diff_id)));
        }
        Ok(())
    }
}

/// Streams the layer in `reader` (a tar, plain, gzip or zstd) into the existing directory
/// `target`, hashing both the stream and the uncompressed tar. Ownership, modes (setuid,
/// setgid, sticky), xattrs, hardlinks, symlinks, devices, fifos and times are kept; whiteouts
/// follow `opts.whiteouts`. Nothing is written outside `target` (see the crate docs for the
/// rules); a layer that tries is `InvalidArgument`, as is corrupt data; a failing `reader` is
/// `Internal`. No file is synced: call [`crate::syncfs`] once when all layers are in. On
/// error, `target` holds part of the layer and should be discarded.
pub fn apply<R: Read + Send>(reader: R, target: &Path, opts: &ApplyOptions) -> Result<ApplyOutcome> {
    let declared = opts.media_type.as_deref().map(Compression::from_media_type).transpose()?;
    let root = Root::open(target)?;
    let (tx, rx) = mpsc::sync_channel(stream::CHUNKS_AHEAD);
    let (recycle_tx, recycle_rx) = mpsc::channel();
    std::thread::scope(|scope| {
        let producer = std::thread::Builder::new()
            .name("layer-stream".into())
            .spawn_scoped(scope, move || stream::produce(reader, tx, recycle_rx))
            .map_err(|e| Error::internal(format!("start layer reader thread: {e}")))?;
        let mut ex = Extractor::new(root, opts.whiteouts);
        // Consumes the reader: when extraction stops early, the producer sees it gone.
        let extracted = extract(&mut ex, ChunkReader::new(rx, recycle_tx));
        let produced = producer.join().map_err(|_| Error::internal("layer reader thread panicked"))?;
        let st = match (produced, extracted) {
            // The stream's own failure explains any the extractor saw.
            (Err(StreamError::Failed(e)), _) => return Err(e),
            (_, Err(e)) => return Err(e),
            (Err(StreamError::Gone), Ok(())) => return Err(Error::internal("layer reader stopped early")),
            (Ok(st), Ok(())) => st,
        };
        if let Some(declared) = declared.filter(|d| *d != st.compression) {
            tracing::debug!(?declared, found = ?st.compression, "layer compression differs from its media type");
        }
        tracing::debug!(target = %target.display(), digest = %st.digest, diff_id = %st.diff_id, entries = ex.entries, "layer applied");
        Ok(ApplyOutcome {
            digest: st.digest,
            size: st.size,
            diff_id: st.diff_id,
            uncompressed_size: st.uncompressed_size,
            compression: st.compression,
            entries: ex.entries,
        })
    })
}

/// Extracts every entry of the tar in `stream`, then reads it to its end.
fn extract(ex: &mut Extractor, stream: ChunkReader) -> Result<()> {
    let data_error = |e: io::Error| Error::invalid_argument(format!("invalid layer data: {e}"));
    let budget = stream.budget();
    let mut archive = tar::Archive::new(stream);
    let mut entries = archive.entries().map_err(data_error)?;
    loop {
        // Finding the next entry reads its headers (held in memory) and skips what the last
        // one left unread: bounded, as Go's archive/tar bounds them (1 MiB there).
        budget.set(HEADERS_BUDGET);
        let next = entries.next();
        budget.set(u64::MAX);
        let Some(entry) = next else { break };
        let mut entry = entry.map_err(data_error)?;
        ex.entry(&mut entry, &data_error)?;
    }
    ex.finish()?;
    // Padding after the end-of-archive blocks: the producer hashes it as it goes by.
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(data_error)?;
    Ok(())
}

/// Ownership, mode, times and xattrs of one entry.
struct Meta {
    uid: Uid,
    gid: Gid,
    mode: u32,
    times: Timestamps,
}

/// The state of one apply: the root, reused buffers, and what is settled at the end.
struct Extractor {
    root: Root,
    mode: WhiteoutMode,
    /// The normalized path of the current entry.
    path: Vec<u8>,
    /// The normalized hardlink target of the current entry.
    link: Vec<u8>,
    buf: Vec<u8>,
    /// The current entry's xattrs: (name, value) ranges into `xattr_data`.
    xattrs: Vec<(Range<usize>, Range<usize>)>,
    xattr_data: Vec<u8>,
    /// Directory times, set last since creating children changes them.
    dir_times: Vec<(Vec<u8>, Timestamps)>,
    /// Paths (and their parents) this layer created: what an opaque whiteout keeps, in
    /// `Delete` mode.
    unpacked: HashSet<Vec<u8>>,
    entries: u64,
}

impl Extractor {
    fn new(root: Root, mode: WhiteoutMode) -> Self {
        Extractor {
            root,
            mode,
            path: Vec::with_capacity(256),
            link: Vec::with_capacity(256),
            buf: vec![0; COPY_BUF],
            xattrs: Vec::new(),
            xattr_data: Vec::new(),
            dir_times: Vec::new(),
            unpacked: HashSet::new(),
            entries: 0,
        }
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, data_error: &dyn Fn(io::Error) -> Error) -> Result<()> {
        let mut kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        self.entries += 1;
        let mut path = std::mem::take(&mut self.path);
        let normalized = {
            let raw = entry.path_bytes();
            // Old tars mark directories with a trailing slash only.
            if matches!(kind, EntryType::Regular | EntryType::Continuous) && raw.ends_with(b"/") {
                kind = EntryType::Directory;
            }
            normalize(&raw, &mut path, "layer entry")
        };
        let result = normalized.and_then(|()| {
            self.entry_at(entry, kind, &path, data_error)
                .map_err(|e| e.context(format!("layer entry {:?}", show(&path))))
        });
        if result.is_ok() && self.mode == WhiteoutMode::Delete {
            self.mark_unpacked(&path);
        }
        self.path = path;
        result
    }

    fn entry_at<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        kind: EntryType,
        path: &[u8],
        data_error: &dyn Fn(io::Error) -> Error,
    ) -> Result<()> {
        let (parent, base) = split(path);
        if base.starts_with(WHITEOUT_PREFIX) {
            let meta = self.meta(entry, path, data_error)?;
            return self.whiteout(parent, base, &meta);
        }
        let meta = self.meta(entry, path, data_error)?;
        if path.is_empty() {
            // "./": the layer sets the root's own metadata.
            if kind != EntryType::Directory {
                return Err(Error::invalid_argument(format!("layer entry {kind:?} names the root directory")));
            }
            let root = self.root.dir(b"", false)?.ok_or_else(|| Error::internal("root vanished"))?;
            self.set_fd_meta(root.as_fd(), path, &meta)?;
            self.dir_times.push((Vec::new(), copy_times(&meta.times)));
            return Ok(());
        }
        let parent_fd = self.root.dir(parent, true)?.ok_or_else(|| Error::internal("parent not created"))?;
        let dir = parent_fd.as_fd();
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.file(dir, base, path, entry, &meta, data_error)
            }
            EntryType::Directory => self.directory(dir, base, path, &meta),
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| Error::invalid_argument(format!("symlink {:?} has no target", show(path))))?;
                if target.contains(&0) {
                    return Err(Error::invalid_argument(format!("symlink {:?} target has a NUL byte", show(path))));
                }
                self.create(dir, base, path, |d, n| rfs::symlinkat(&*target, d, n))?;
                self.set_name_meta(dir, base, path, &meta, true)
            }
            EntryType::Link => {
                let mut link = std::mem::take(&mut self.link);
                let normalized = match entry.link_name_bytes() {
                    Some(target) => normalize(&target, &mut link, "hardlink target"),
                    None => Err(Error::invalid_argument(format!("hardlink {:?} has no target", show(path)))),
                };
                let result = normalized.and_then(|()| self.hardlink(dir, base, path, &link));
                self.link = link;
                result
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let (file_type, dev) = match kind {
                    EntryType::Fifo => (FileType::Fifo, 0),
                    _ => {
                        let h = entry.header();
                        let major = h.device_major().map_err(data_error)?.unwrap_or(0);
                        let minor = h.device_minor().map_err(data_error)?.unwrap_or(0);
                        let ft =
                            if kind == EntryType::Char { FileType::CharacterDevice } else { FileType::BlockDevice };
                        (ft, rfs::makedev(major, minor))
                    }
                };
                let perm = Mode::from_raw_mode(meta.mode & 0o777);
                self.create(dir, base, path, |d, n| rfs::mknodat(d, n, file_type, perm, dev))?;
                self.set_name_meta(dir, base, path, &meta, false)
            }
            other => {
                Err(Error::invalid_argument(format!("layer entry {:?} has unsupported type {other:?}", show(path))))
            }
        }
    }

    /// Reads the entry's ownership, mode, times and xattrs.
    fn meta<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: &[u8],
        data_error: &dyn Fn(io::Error) -> Error,
    ) -> Result<Meta> {
        let h = entry.header();
        let id = |v: u64, what: &str| {
            u32::try_from(v)
                .map_err(|_| Error::invalid_argument(format!("layer entry {:?}: {what} {v} out of range", show(path))))
        };
        let old = h.as_old();
        let uid = Uid::from_raw(id(numeric(h.uid(), &old.uid).map_err(data_error)?, "uid")?);
        let gid = Gid::from_raw(id(numeric(h.gid(), &old.gid).map_err(data_error)?, "gid")?);
        let mode = numeric(h.mode().map(u64::from), &old.mode).map_err(data_error)? as u32 & 0o7777;
        let secs = i64::try_from(numeric(h.mtime(), &old.mtime).map_err(data_error)?).unwrap_or(i64::MAX);
        let mut mtime = Timespec { tv_sec: secs, tv_nsec: 0 };
        let mut atime = None;
        self.xattrs.clear();
        self.xattr_data.clear();
        if let Some(pax) = entry.pax_extensions().map_err(data_error)? {
            for ext in pax {
                let ext = ext.map_err(data_error)?;
                let key = ext.key_bytes();
                if key == b"mtime" {
                    mtime = pax_time(ext.value_bytes()).unwrap_or(mtime);
                } else if key == b"atime" {
                    atime = pax_time(ext.value_bytes());
                } else if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    if name.starts_with(b"trusted.overlay.") {
                        // Overlay metadata (opaque, redirect, metacopy) comes from whiteouts
                        // only; a layer may not forge it.
                        tracing::debug!(path = %show(path), xattr = %show(name), "dropping overlay xattr from layer");
                        continue;
                    }
                    let start = self.xattr_data.len();
                    self.xattr_data.extend_from_slice(name);
                    self.xattr_data.push(0);
                    let mid = self.xattr_data.len();
                    self.xattr_data.extend_from_slice(ext.value_bytes());
                    self.xattrs.push((start..mid - 1, mid..self.xattr_data.len()));
                }
            }
        }
        let times = Timestamps { last_access: atime.unwrap_or(mtime), last_modification: mtime };
        Ok(Meta { uid, gid, mode, times })
    }

    /// Runs `make` to create `base` in `dir`; when something is in the way, removes it (a
    /// directory with its contents, a symlink itself, never what it points to) and retries.
    fn create(
        &mut self,
        dir: BorrowedFd<'_>,
        base: &[u8],
        path: &[u8],
        make: impl Fn(BorrowedFd<'_>, &[u8]) -> rustix::io::Result<()>,
    ) -> Result<()> {
        match make(dir, base) {
            Ok(()) => Ok(()),
            Err(Errno::EXIST) => {
                self.replace(dir, base, path)?;
                make(dir, base).map_err(|e| self.root.fs_error("create", path, e))
            }
            Err(e) => Err(self.root.fs_error("create", path, e)),
        }
    }

    fn replace(&mut self, dir: BorrowedFd<'_>, base: &[u8], path: &[u8]) -> Result<()> {
        self.root.forget();
        remove_all(dir, base).map_err(|e| self.root.fs_error("remove", path, e))
    }

    fn file<R: Read>(
        &mut self,
        dir: BorrowedFd<'_>,
        base: &[u8],
        path: &[u8],
        entry: &mut tar::Entry<'_, R>,
        meta: &Meta,
        data_error: &dyn Fn(io::Error) -> Error,
    ) -> Result<()> {
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let perm = Mode::from_raw_mode(0o600);
        let fd = match rfs::openat(dir, base, flags, perm) {
            Ok(fd) => fd,
            Err(Errno::EXIST) => {
                self.replace(dir, base, path)?;
                rfs::openat(dir, base, flags, perm).map_err(|e| self.root.fs_error("create", path, e))?
            }
            Err(e) => return Err(self.root.fs_error("create", path, e)),
        };
        let mut file = File::from(fd);
        let size = entry.size();
        let mut copied = 0u64;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(data_error(e)),
            };
            file.write_all(&self.buf[..n])
                .map_err(|e| self.root.fs_error("write", path, Errno::from_io_error(&e).unwrap_or(Errno::IO)))?;
            copied += n as u64;
        }
        if copied != size {
            return Err(data_error(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("layer ends inside {:?} ({copied} of {size} bytes)", show(path)),
            )));
        }
        // Data first, then owner, then mode (chown clears setuid/setgid), then xattrs (a
        // write or chown clears security.capability), then times.
        self.set_fd_meta(file.as_fd(), path, meta)?;
        rfs::futimens(&file, &meta.times).map_err(|e| self.root.fs_error("set times of", path, e))
    }

    fn directory(&mut self, dir: BorrowedFd<'_>, base: &[u8], path: &[u8], meta: &Meta) -> Result<()> {
        let perm = Mode::from_raw_mode(0o700);
        match rfs::mkdirat(dir, base, perm) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                let st = rfs::statat(dir, base, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| self.root.fs_error("stat", path, e))?;
                if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                    self.replace(dir, base, path)?;
                    rfs::mkdirat(dir, base, perm).map_err(|e| self.root.fs_error("create directory", path, e))?;
                }
            }
            Err(e) => return Err(self.root.fs_error("create directory", path, e)),
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rfs::openat(dir, base, flags, Mode::empty()).map_err(|e| self.root.fs_error("open", path, e))?;
        self.set_fd_meta(fd.as_fd(), path, meta)?;
        self.dir_times.push((path.to_vec(), copy_times(&meta.times)));
        self.root.remember(path, Rc::new(fd));
        Ok(())
    }

    fn hardlink(&mut self, dir: BorrowedFd<'_>, base: &[u8], path: &[u8], link: &[u8]) -> Result<()> {
        if link.is_empty() {
            return Err(Error::invalid_argument(format!("hardlink {:?} points at the root", show(path))));
        }
        let (link_parent, link_base) = split(link);
        let not_found = || {
            Error::invalid_argument(format!("hardlink {:?}: target {:?} is not in the layer", show(path), show(link)))
        };
        let from = self.root.dir(link_parent, false)?.ok_or_else(not_found)?;
        let make = |d: BorrowedFd<'_>, n: &[u8]| rfs::linkat(from.as_fd(), link_base, d, n, AtFlags::empty());
        match make(dir, base) {
            Ok(()) => Ok(()),
            Err(Errno::EXIST) => {
                self.replace(dir, base, path)?;
                make(dir, base).map_err(|e| self.link_error(path, link, e))
            }
            Err(e) => Err(self.link_error(path, link, e)),
        }
    }

    fn link_error(&self, path: &[u8], link: &[u8], e: Errno) -> Error {
        match e {
            Errno::NOENT => Error::invalid_argument(format!(
                "hardlink {:?}: target {:?} is not in the layer",
                show(path),
                show(link)
            )),
            Errno::PERM => Error::invalid_argument(format!(
                "hardlink {:?}: target {:?} is a directory or may not be linked",
                show(path),
                show(link)
            )),
            e => self.root.fs_error("hardlink", path, e),
        }
    }

    fn whiteout(&mut self, parent: &[u8], base: &[u8], meta: &Meta) -> Result<()> {
        if base == OPAQUE_WHITEOUT {
            return self.opaque(parent);
        }
        if base.starts_with(WHITEOUT_META_PREFIX) {
            // aufs metadata (.wh..wh.plnk, .wh..wh.aufs): not part of the image.
            return Ok(());
        }
        let name = &base[WHITEOUT_PREFIX.len()..];
        if name.is_empty() || name == b"." || name == b".." {
            return Err(Error::invalid_argument(format!("invalid whiteout {:?}", show(base))));
        }
        match self.mode {
            WhiteoutMode::Overlay => {
                let dir = self.root.dir(parent, true)?.ok_or_else(|| Error::internal("parent not created"))?;
                let mut path = parent.to_vec();
                if !path.is_empty() {
                    path.push(b'/');
                }
                path.extend_from_slice(name);
                let dev = rfs::makedev(0, 0);
                self.create(dir.as_fd(), name, &path, |d, n| {
                    rfs::mknodat(d, n, FileType::CharacterDevice, Mode::empty(), dev)
                })?;
                rfs::chownat(dir.as_fd(), name, Some(meta.uid), Some(meta.gid), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| self.root.fs_error("chown", &path, e))
            }
            WhiteoutMode::Delete => {
                let Some(dir) = self.root.dir(parent, false)? else { return Ok(()) };
                self.root.forget();
                remove_all(dir.as_fd(), name).map_err(|e| self.root.fs_error("remove", name, e))
            }
        }
    }

    fn opaque(&mut self, parent: &[u8]) -> Result<()> {
        match self.mode {
            WhiteoutMode::Overlay => {
                let dir = self.root.dir(parent, true)?.ok_or_else(|| Error::internal("parent not created"))?;
                rfs::fsetxattr(dir.as_fd(), OVERLAY_OPAQUE_XATTR, b"y", XattrFlags::empty())
                    .map_err(|e| self.root.fs_error("mark opaque", parent, e))
            }
            WhiteoutMode::Delete => {
                let Some(dir) = self.root.dir(parent, false)? else { return Ok(()) };
                self.root.forget();
                let mut prefix = parent.to_vec();
                self.clear_opaque(dir.as_fd(), &mut prefix).map_err(|e| self.root.fs_error("clear opaque", parent, e))
            }
        }
    }

    /// Removes what this layer did not create beneath `dir` (named `prefix`).
    fn clear_opaque(&self, dir: BorrowedFd<'_>, prefix: &mut Vec<u8>) -> rustix::io::Result<()> {
        let len = prefix.len();
        let mut keep_dirs: Vec<Vec<u8>> = Vec::new();
        clear_dir(dir, &mut |name| {
            prefix.truncate(len);
            if !prefix.is_empty() {
                prefix.push(b'/');
            }
            prefix.extend_from_slice(name);
            let keep = self.unpacked.contains(prefix.as_slice());
            if keep {
                keep_dirs.push(name.to_vec());
            }
            keep
        })?;
        for name in keep_dirs {
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let sub = match rfs::openat(dir, name.as_slice(), flags, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::NOTDIR) | Err(Errno::LOOP) => continue,
                Err(e) => return Err(e),
            };
            prefix.truncate(len);
            if !prefix.is_empty() {
                prefix.push(b'/');
            }
            prefix.extend_from_slice(&name);
            self.clear_opaque(sub.as_fd(), prefix)?;
        }
        prefix.truncate(len);
        Ok(())
    }

    fn mark_unpacked(&mut self, path: &[u8]) {
        let mut end = path.len();
        loop {
            if !self.unpacked.insert(path[..end].to_vec()) {
                return;
            }
            match path[..end].iter().rposition(|&b| b == b'/') {
                Some(i) => end = i,
                None => return,
            }
        }
    }

    /// Owner, mode and xattrs through an open file or directory.
    fn set_fd_meta(&self, fd: BorrowedFd<'_>, path: &[u8], meta: &Meta) -> Result<()> {
        rfs::fchown(fd, Some(meta.uid), Some(meta.gid)).map_err(|e| self.root.fs_error("chown", path, e))?;
        rfs::fchmod(fd, Mode::from_raw_mode(meta.mode)).map_err(|e| self.root.fs_error("chmod", path, e))?;
        for (name, value) in &self.xattrs {
            let (name, value) = (&self.xattr_data[name.clone()], &self.xattr_data[value.clone()]);
            match rfs::fsetxattr(fd, name, value, XattrFlags::empty()) {
                Ok(()) => {}
                Err(Errno::NOTSUP) => {
                    tracing::debug!(path = %show(path), xattr = %show(name), "xattr not supported here");
                }
                Err(e) => return Err(self.root.fs_error(&format!("set xattr {:?} on", show(name)), path, e)),
            }
        }
        Ok(())
    }

    /// Owner, mode, xattrs and times of a symlink or special file, by name (never opened).
    fn set_name_meta(
        &self,
        dir: BorrowedFd<'_>,
        base: &[u8],
        path: &[u8],
        meta: &Meta,
        is_symlink: bool,
    ) -> Result<()> {
        rfs::chownat(dir, base, Some(meta.uid), Some(meta.gid), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.root.fs_error("chown", path, e))?;
        if !is_symlink {
            rfs::chmodat(dir, base, Mode::from_raw_mode(meta.mode), AtFlags::empty())
                .map_err(|e| self.root.fs_error("chmod", path, e))?;
        }
        if !self.xattrs.is_empty() {
            // The l*xattr calls take a path: reach `base` through our directory handle.
            let mut proc = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
            proc.push(std::ffi::OsStr::from_bytes(base));
            for (name, value) in &self.xattrs {
                let (name, value) = (&self.xattr_data[name.clone()], &self.xattr_data[value.clone()]);
                match rfs::lsetxattr(&proc, name, value, XattrFlags::empty()) {
                    Ok(()) => {}
                    Err(Errno::NOTSUP) | Err(Errno::PERM) if is_symlink => {
                        tracing::debug!(path = %show(path), xattr = %show(name), "xattr not allowed on a symlink");
                    }
                    Err(Errno::NOTSUP) => {
                        tracing::debug!(path = %show(path), xattr = %show(name), "xattr not supported here");
                    }
                    Err(e) => return Err(self.root.fs_error(&format!("set xattr {:?} on", show(name)), path, e)),
                }
            }
        }
        rfs::utimensat(dir, base, &meta.times, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.root.fs_error("set times of", path, e))
    }

    /// Sets the directory times kept for last.
    fn finish(&mut self) -> Result<()> {
        let dir_times = std::mem::take(&mut self.dir_times);
        // In entry order: a directory listed twice gets the times of its last entry.
        for (path, times) in &dir_times {
            let (parent, base) = split(path);
            let result = if path.is_empty() {
                rfs::futimens(self.root.fd(), times)
            } else {
                match self.root.dir(parent, false) {
                    Ok(Some(dir)) => rfs::utimensat(dir.as_fd(), base, times, AtFlags::SYMLINK_NOFOLLOW),
                    // Removed or replaced by a later entry.
                    Ok(None) | Err(_) => Ok(()),
                }
            };
            match result {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(self.root.fs_error("set times of", path, e)),
            }
        }
        Ok(())
    }
}

/// A numeric header field; blank (all NUL or space) reads as 0, as Go's archive/tar does.
fn numeric(parsed: io::Result<u64>, raw: &[u8]) -> io::Result<u64> {
    match parsed {
        Err(_) if raw.iter().all(|&b| b == 0 || b == b' ') => Ok(0),
        other => other,
    }
}

fn copy_times(t: &Timestamps) -> Timestamps {
    Timestamps { last_access: t.last_access, last_modification: t.last_modification }
}

/// A PAX time: `[-]seconds[.fraction]`.
fn pax_time(v: &[u8]) -> Option<Timespec> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let mut sec: i64 = whole.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut nsec: i64 = if digits.is_empty() { 0 } else { format!("{digits:0<9}").parse().ok()? };
    if neg {
        sec = -sec;
        if nsec > 0 {
            sec -= 1;
            nsec = 1_000_000_000 - nsec;
        }
    }
    Some(Timespec { tv_sec: sec, tv_nsec: nsec })
}

/// Syncs the file system holding `path` (syncfs): one call for a whole extracted tree, instead
/// of an fsync per file.
pub fn syncfs(path: &Path) -> Result<()> {
    let fd: OwnedFd = rfs::open(path, OFlags::RDONLY | OFlags::CLOEXEC | OFlags::DIRECTORY, Mode::empty())
        .map_err(|e| Error::internal(format!("open {}: {e}", path.display())))?;
    rfs::syncfs(&fd).map_err(|e| Error::internal(format!("syncfs {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        assert_eq!(pax_time(b"12.5"), Some(Timespec { tv_sec: 12, tv_nsec: 500_000_000 }));
        assert_eq!(pax_time(b"12"), Some(Timespec { tv_sec: 12, tv_nsec: 0 }));
        assert_eq!(pax_time(b"-1.25"), Some(Timespec { tv_sec: -2, tv_nsec: 750_000_000 }));
        assert_eq!(pax_time(b"1.1234567891"), Some(Timespec { tv_sec: 1, tv_nsec: 123_456_789 }));
        assert_eq!(pax_time(b"x"), None);
    }
}
