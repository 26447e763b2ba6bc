//! Writing a layer: the tar of what changed between two trees (or in an overlayfs upper
//! directory), in a deterministic order, compressed and hashed on the way out.
//!
//! Entries come in byte order of their names, parents before children, and every changed
//! path is preceded by its parent directories (changed or not), so that a layer extracted on
//! its own recreates them with their real owner and mode. A deleted path becomes
//! `.wh.<name>`; an opaque overlay directory is followed by `.wh..wh..opq`. A file with
//! several links written twice becomes a hardlink entry the second time.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use berth_core::{Digest, Error, Result};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use tar::{EntryType, Header};

use crate::compression::{Compression, Encoder};
use crate::hashing::HashingWriter;
use crate::root::show;
use crate::{OPAQUE_WHITEOUT, OVERLAY_OPAQUE_XATTR, WHITEOUT_PREFIX};

/// Deepest directory nesting written: the walk recurses, and a container may nest
/// directories without bound.
const MAX_DEPTH: usize = 1024;
/// Stack of the walking thread: room for [`MAX_DEPTH`] levels, debug builds included.
const WALK_STACK: usize = 64 << 20;

/// How to write a layer.
#[derive(Debug, Clone)]
pub struct DiffOptions {
    /// Compression of the blob (gzip by default, as containerd).
    pub compression: Compression,
    /// Clamp times later than this (seconds since the epoch) to it, for reproducible layers;
    /// whiteouts carry it too (else time 0).
    pub source_date_epoch: Option<i64>,
}

impl Default for DiffOptions {
    fn default() -> Self {
        DiffOptions { compression: Compression::Gzip, source_date_epoch: None }
    }
}

/// What a diff wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffOutcome {
    /// sha256 of the blob as written (compressed).
    pub digest: Digest,
    /// Bytes written.
    pub size: u64,
    /// sha256 of the uncompressed tar: the `containerd.io/uncompressed` label, the diff_id.
    pub diff_id: Digest,
    /// Bytes of the uncompressed tar.
    pub uncompressed_size: u64,
    /// The compression used.
    pub compression: Compression,
    /// Tar entries written (whiteouts included).
    pub entries: u64,
}

/// Writes to `writer` the layer that turns tree `lower` into tree `upper` (both plain
/// directories: a snapshot's parent view and the snapshot). Symlinks are never followed.
pub fn diff<W: Write + Send>(lower: &Path, upper: &Path, writer: W, opts: &DiffOptions) -> Result<DiffOutcome> {
    let lower_fd = open_dir(lower)?;
    let upper_fd = open_dir(upper)?;
    with_deep_stack(move || {
        let mut w = LayerWriter::new(writer, opts)?;
        w.trees(Some(lower_fd.as_fd()), upper_fd.as_fd())?;
        w.finish()
    })
}

/// Writes to `writer` the layer held by the overlayfs upper directory `upper`: everything in
/// it, with overlay whiteouts (0/0 character devices) as `.wh.<name>` and opaque directories
/// marked with `.wh..wh..opq`. Uppers made with `redirect_dir` or `metacopy` are
/// `NotImplemented`.
pub fn diff_overlay_upper<W: Write + Send>(upper: &Path, writer: W, opts: &DiffOptions) -> Result<DiffOutcome> {
    let upper_fd = open_dir(upper)?;
    with_deep_stack(move || {
        let mut w = LayerWriter::new(writer, opts)?;
        w.upper(upper_fd.as_fd())?;
        w.finish()
    })
}

/// Runs the walk on a thread whose stack holds [`MAX_DEPTH`] levels of recursion (only the
/// pages used are ever committed).
fn with_deep_stack<T: Send>(f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("layer-diff".into())
            .stack_size(WALK_STACK)
            .spawn_scoped(scope, f)
            .map_err(|e| Error::internal(format!("start diff thread: {e}")))?
            .join()
            .map_err(|_| Error::internal("diff thread panicked"))?
    })
}

fn open_dir(path: &Path) -> Result<OwnedFd> {
    rfs::open(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).map_err(|e| {
        let msg = format!("open {}: {e}", path.display());
        match e {
            Errno::NOENT => Error::not_found(msg),
            Errno::NOTDIR => Error::invalid_argument(msg),
            _ => Error::internal(msg),
        }
    })
}

fn open_sub(dir: BorrowedFd<'_>, name: &[u8]) -> rustix::io::Result<OwnedFd> {
    rfs::openat(dir, name, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
}

/// What a tree entry is, as far as a layer cares.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Info {
    kind: FileType,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: i64,
    mtime_nsec: u32,
    rdev: u64,
    dev: u64,
    ino: u64,
    nlink: u64,
    /// Sorted by name; `trusted.overlay.*` left out.
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// The symlink target.
    target: Vec<u8>,
}

impl Info {
    // stat field types differ between architectures: the conversions are not useless everywhere.
    #[allow(clippy::useless_conversion)]
    fn read(dir: BorrowedFd<'_>, name: &[u8]) -> rustix::io::Result<Info> {
        let st = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
        let kind = FileType::from_raw_mode(st.st_mode);
        let target =
            if kind == FileType::Symlink { rfs::readlinkat(dir, name, Vec::new())?.into_bytes() } else { Vec::new() };
        Ok(Info {
            kind,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            size: u64::try_from(st.st_size).unwrap_or(0),
            mtime: i64::from(st.st_mtime),
            mtime_nsec: u32::try_from(st.st_mtime_nsec).unwrap_or(0),
            rdev: u64::from(st.st_rdev),
            dev: u64::from(st.st_dev),
            ino: u64::from(st.st_ino),
            nlink: u64::from(st.st_nlink),
            xattrs: read_xattrs(dir, name, true)?,
            target,
        })
    }

    fn is_overlay_whiteout(&self) -> bool {
        self.kind == FileType::CharacterDevice && self.rdev == 0
    }
}

/// The xattrs of `name` in `dir`, sorted; overlay's own left out when `skip_overlay`.
fn read_xattrs(dir: BorrowedFd<'_>, name: &[u8], skip_overlay: bool) -> rustix::io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    // The l*xattr calls take a path: reach `name` through our directory handle.
    let mut path = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    if !name.is_empty() {
        path.push(OsStr::from_bytes(name));
    }
    let mut names = Vec::new();
    loop {
        let len = match rfs::llistxattr_query(&path) {
            Ok(0) | Err(Errno::NOTSUP) => return Ok(Vec::new()),
            Ok(n) => n,
            Err(e) => return Err(e),
        };
        names.resize(len, 0);
        match rfs::llistxattr(&path, &mut names[..]) {
            Ok(n) => {
                names.truncate(n);
                break;
            }
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(e),
        }
    }
    let mut out = Vec::new();
    for key in names.split(|&b| b == 0).filter(|k| !k.is_empty()) {
        if skip_overlay && key.starts_with(b"trusted.overlay.") {
            continue;
        }
        let value = loop {
            let len = match rfs::lgetxattr_query(&path, key) {
                Ok(n) => n,
                Err(Errno::NODATA) => break None,
                Err(e) => return Err(e),
            };
            let mut value = vec![0; len];
            match rfs::lgetxattr(&path, key, &mut value[..]) {
                Ok(n) => {
                    value.truncate(n);
                    break Some(value);
                }
                Err(Errno::RANGE) => continue,
                Err(Errno::NODATA) => break None,
                Err(e) => return Err(e),
            }
        };
        if let Some(value) = value {
            out.push((key.to_vec(), value));
        }
    }
    out.sort();
    Ok(out)
}

/// Sorted entry names of a directory.
fn read_names(dir: BorrowedFd<'_>) -> rustix::io::Result<Vec<Vec<u8>>> {
    let mut names = Vec::new();
    let mut entries = rfs::Dir::read_from(dir)?;
    while let Some(entry) = entries.read() {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Whether two entries present in both trees are the same for a layer. Like containerd:
/// directories by owner, mode and xattrs only; others by size and mtime too, and when both
/// mtimes lack nanoseconds (a tree extracted from a tar), by content.
fn same(lower_dir: BorrowedFd<'_>, upper_dir: BorrowedFd<'_>, name: &[u8], l: &Info, u: &Info) -> io::Result<bool> {
    if l.kind != u.kind || l.mode != u.mode || l.uid != u.uid || l.gid != u.gid || l.xattrs != u.xattrs {
        return Ok(false);
    }
    match u.kind {
        FileType::Directory => return Ok(true),
        FileType::CharacterDevice | FileType::BlockDevice if l.rdev != u.rdev => return Ok(false),
        FileType::Symlink if l.target != u.target => return Ok(false),
        _ => {}
    }
    if l.size != u.size || l.mtime != u.mtime || l.mtime_nsec != u.mtime_nsec {
        return Ok(false);
    }
    if u.kind != FileType::RegularFile || l.mtime_nsec != 0 || u.size == 0 {
        return Ok(true);
    }
    same_content(lower_dir, upper_dir, name)
}

fn same_content(lower_dir: BorrowedFd<'_>, upper_dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<bool> {
    let open = |d| rfs::openat(d, name, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty());
    let mut a = File::from(open(lower_dir)?);
    let mut b = File::from(open(upper_dir)?);
    let (mut x, mut y) = (vec![0u8; 64 << 10], vec![0u8; 64 << 10]);
    loop {
        let n = a.read(&mut x)?;
        if n == 0 {
            return Ok(b.read(&mut y[..1])? == 0);
        }
        if b.read_exact(&mut y[..n]).is_err() || x[..n] != y[..n] {
            return Ok(false);
        }
    }
}

type Sink<W> = BufWriter<HashingWriter<Encoder<HashingWriter<BufWriter<W>>>>>;

/// A directory above the current entry, written or still to be written.
struct Parent {
    path: Vec<u8>,
    info: Info,
    written: bool,
}

struct LayerWriter<W: Write> {
    tar: tar::Builder<Sink<W>>,
    compression: Compression,
    clamp: Option<i64>,
    /// Path of the directory being walked (empty: the root).
    path: Vec<u8>,
    parents: Vec<Parent>,
    /// First path written for each multiply-linked inode.
    links: HashMap<(u64, u64), Vec<u8>>,
    entries: u64,
}

impl<W: Write> LayerWriter<W> {
    fn new(writer: W, opts: &DiffOptions) -> Result<Self> {
        let compressed = HashingWriter::new(BufWriter::with_capacity(256 << 10, writer));
        let encoder =
            Encoder::new(opts.compression, compressed).map_err(|e| Error::internal(format!("compressor: {e}")))?;
        let sink = BufWriter::with_capacity(1 << 20, HashingWriter::new(encoder));
        Ok(LayerWriter {
            tar: tar::Builder::new(sink),
            compression: opts.compression,
            clamp: opts.source_date_epoch,
            path: Vec::new(),
            parents: Vec::new(),
            links: HashMap::new(),
            entries: 0,
        })
    }

    fn finish(self) -> Result<DiffOutcome> {
        let sink = self.tar.into_inner().map_err(write_error)?;
        let hashing = sink.into_inner().map_err(|e| write_error(e.into_error()))?;
        let (encoder, diff_id, uncompressed_size) = hashing.into_parts();
        let compressed = encoder.finish().map_err(write_error)?;
        let (mut out, digest, size) = compressed.into_parts();
        out.flush().map_err(write_error)?;
        Ok(DiffOutcome {
            digest,
            size,
            diff_id,
            uncompressed_size,
            compression: self.compression,
            entries: self.entries,
        })
    }

    fn child(&self, name: &[u8]) -> Vec<u8> {
        let mut p = self.path.clone();
        if !p.is_empty() {
            p.push(b'/');
        }
        p.extend_from_slice(name);
        p
    }

    fn fs_error(&self, op: &str, name: &[u8], e: impl std::fmt::Display) -> Error {
        Error::internal(format!("{op} {:?}: {e}", show(&self.child(name))))
    }

    /// The two-tree walk of the current directory.
    fn trees(&mut self, lower: Option<BorrowedFd<'_>>, upper: BorrowedFd<'_>) -> Result<()> {
        let upper_names = read_names(upper).map_err(|e| self.fs_error("read directory", b"", e))?;
        let lower_names = match lower {
            Some(l) => read_names(l).map_err(|e| self.fs_error("read directory", b"", e))?,
            None => Vec::new(),
        };
        let (mut i, mut j) = (0, 0);
        while i < lower_names.len() || j < upper_names.len() {
            let order = match (lower_names.get(i), upper_names.get(j)) {
                (Some(l), Some(u)) => l.cmp(u),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            match order {
                std::cmp::Ordering::Less => {
                    let mut wh = WHITEOUT_PREFIX.to_vec();
                    wh.extend_from_slice(&lower_names[i]);
                    self.marker(&wh)?;
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    let name = &upper_names[j];
                    let info = Info::read(upper, name).map_err(|e| self.fs_error("stat", name, e))?;
                    self.added(upper, name, info)?;
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    let name = &upper_names[j];
                    let (lower_dir, upper_dir) = (lower.expect("names only from a lower"), upper);
                    let u = Info::read(upper_dir, name).map_err(|e| self.fs_error("stat", name, e))?;
                    let l = Info::read(lower_dir, name).map_err(|e| self.fs_error("stat lower", name, e))?;
                    if l.kind == FileType::Directory && u.kind == FileType::Directory {
                        let changed =
                            !same(lower_dir, upper_dir, name, &l, &u).map_err(|e| self.fs_error("compare", name, e))?;
                        let lsub = open_sub(lower_dir, name).map_err(|e| self.fs_error("open lower", name, e))?;
                        let usub = open_sub(upper_dir, name).map_err(|e| self.fs_error("open", name, e))?;
                        self.descend(name, u, changed, |w| w.trees(Some(lsub.as_fd()), usub.as_fd()))?;
                    } else if !same(lower_dir, upper_dir, name, &l, &u)
                        .map_err(|e| self.fs_error("compare", name, e))?
                    {
                        // A type change needs no whiteout: extraction replaces what is there.
                        self.added(upper_dir, name, u)?;
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
        Ok(())
    }

    /// Writes a new (or replaced) entry; for a directory, everything below it too.
    fn added(&mut self, dir: BorrowedFd<'_>, name: &[u8], info: Info) -> Result<()> {
        if info.kind == FileType::Directory {
            let sub = open_sub(dir, name).map_err(|e| self.fs_error("open", name, e))?;
            return self.descend(name, info, true, |w| w.trees(None, sub.as_fd()));
        }
        self.entry(dir, name, &info)
    }

    /// Walks into directory `name`, written first when `write` (else only if something below
    /// changes).
    fn descend(
        &mut self,
        name: &[u8],
        info: Info,
        write: bool,
        walk: impl FnOnce(&mut Self) -> Result<()>,
    ) -> Result<()> {
        let path = self.child(name);
        if self.parents.len() >= MAX_DEPTH {
            return Err(Error::failed_precondition(format!(
                "{:?} is more than {MAX_DEPTH} directories deep",
                show(&path)
            )));
        }
        self.parents.push(Parent { path: path.clone(), info, written: false });
        if write {
            self.write_parents()?;
        }
        let saved = std::mem::replace(&mut self.path, path);
        let result = walk(self);
        self.path = saved;
        self.parents.pop();
        result
    }

    /// The overlay upper walk of the current directory.
    fn upper(&mut self, dir: BorrowedFd<'_>) -> Result<()> {
        let names = read_names(dir).map_err(|e| self.fs_error("read directory", b"", e))?;
        for name in &names {
            let info = Info::read(dir, name).map_err(|e| self.fs_error("stat", name, e))?;
            let overlay = read_xattrs(dir, name, false).map_err(|e| self.fs_error("read xattrs of", name, e))?;
            for (key, _) in &overlay {
                if key == b"trusted.overlay.redirect" || key == b"trusted.overlay.metacopy" {
                    return Err(Error::not_implemented(format!(
                        "{:?} carries {}: uppers made with redirect_dir or metacopy are not supported",
                        show(&self.child(name)),
                        show(key)
                    )));
                }
            }
            if info.is_overlay_whiteout() {
                let mut wh = WHITEOUT_PREFIX.to_vec();
                wh.extend_from_slice(name);
                self.marker(&wh)?;
            } else if info.kind == FileType::Directory {
                let opaque = overlay.iter().any(|(k, v)| k.as_slice() == OVERLAY_OPAQUE_XATTR.as_bytes() && v == b"y");
                let sub = open_sub(dir, name).map_err(|e| self.fs_error("open", name, e))?;
                self.descend(name, info, true, |w| {
                    if opaque {
                        w.marker(OPAQUE_WHITEOUT)?;
                    }
                    w.upper(sub.as_fd())
                })?;
            } else {
                self.entry(dir, name, &info)?;
            }
        }
        Ok(())
    }

    /// Writes the parents not yet written, outermost first.
    fn write_parents(&mut self) -> Result<()> {
        for k in 0..self.parents.len() {
            if self.parents[k].written {
                continue;
            }
            let mut path = self.parents[k].path.clone();
            path.push(b'/');
            let mut header = self.header(&self.parents[k].info);
            header.set_entry_type(EntryType::Directory);
            header.set_size(0);
            self.pax_xattrs(&self.parents[k].info.xattrs.clone())?;
            self.tar.append_data(&mut header, OsStr::from_bytes(&path), io::empty()).map_err(write_error)?;
            self.entries += 1;
            self.parents[k].written = true;
        }
        Ok(())
    }

    /// A whiteout or opaque marker in the current directory.
    fn marker(&mut self, name: &[u8]) -> Result<()> {
        self.write_parents()?;
        let path = self.child(name);
        let mut header = Header::new_gnu();
        header.set_entry_type(EntryType::Regular);
        header.set_mode(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(0);
        header.set_mtime(u64::try_from(self.clamp.unwrap_or(0)).unwrap_or(0));
        self.tar.append_data(&mut header, OsStr::from_bytes(&path), io::empty()).map_err(write_error)?;
        self.entries += 1;
        Ok(())
    }

    fn header(&self, info: &Info) -> Header {
        let mut header = Header::new_gnu();
        header.set_mode(info.mode);
        header.set_uid(u64::from(info.uid));
        header.set_gid(u64::from(info.gid));
        let mtime = match self.clamp {
            Some(c) => info.mtime.min(c),
            None => info.mtime,
        };
        header.set_mtime(u64::try_from(mtime).unwrap_or(0));
        header
    }

    fn pax_xattrs(&mut self, xattrs: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        if xattrs.is_empty() {
            return Ok(());
        }
        let mut records = Vec::with_capacity(xattrs.len());
        for (key, value) in xattrs {
            match std::str::from_utf8(key) {
                Ok(k) => records.push((format!("SCHILY.xattr.{k}"), value.as_slice())),
                Err(_) => tracing::warn!(xattr = %show(key), "skipping xattr with a non-UTF-8 name"),
            }
        }
        self.tar.append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v))).map_err(write_error)
    }

    /// Writes a non-directory entry of the current directory.
    fn entry(&mut self, dir: BorrowedFd<'_>, name: &[u8], info: &Info) -> Result<()> {
        let mut header = self.header(info);
        let kind = match info.kind {
            FileType::RegularFile => EntryType::Regular,
            FileType::Symlink => EntryType::Symlink,
            FileType::CharacterDevice => EntryType::Char,
            FileType::BlockDevice => EntryType::Block,
            FileType::Fifo => EntryType::Fifo,
            _ => {
                tracing::debug!(path = %show(&self.child(name)), "skipping socket");
                return Ok(());
            }
        };
        self.write_parents()?;
        let path = self.child(name);
        header.set_size(0);
        header.set_entry_type(kind);
        if kind == EntryType::Regular && info.nlink > 1 {
            if let Some(first) = self.links.get(&(info.dev, info.ino)) {
                let first = first.clone();
                header.set_entry_type(EntryType::Link);
                self.tar
                    .append_link(&mut header, OsStr::from_bytes(&path), OsStr::from_bytes(&first))
                    .map_err(write_error)?;
                self.entries += 1;
                return Ok(());
            }
            self.links.insert((info.dev, info.ino), path.clone());
        }
        self.pax_xattrs(&info.xattrs)?;
        match kind {
            EntryType::Regular => {
                let fd = rfs::openat(dir, name, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
                    .map_err(|e| self.fs_error("open", name, e))?;
                header.set_size(info.size);
                let data = Exact { inner: File::from(fd), remaining: info.size };
                self.tar.append_data(&mut header, OsStr::from_bytes(&path), data).map_err(|e| {
                    if e.kind() == io::ErrorKind::UnexpectedEof {
                        Error::failed_precondition(format!("{:?} changed while the layer was written", show(&path)))
                    } else {
                        write_error(e)
                    }
                })?;
            }
            EntryType::Symlink => {
                self.tar
                    .append_link(&mut header, OsStr::from_bytes(&path), OsStr::from_bytes(&info.target))
                    .map_err(write_error)?;
            }
            _ => {
                if kind != EntryType::Fifo {
                    header.set_device_major(rfs::major(info.rdev)).map_err(write_error)?;
                    header.set_device_minor(rfs::minor(info.rdev)).map_err(write_error)?;
                }
                self.tar.append_data(&mut header, OsStr::from_bytes(&path), io::empty()).map_err(write_error)?;
            }
        }
        self.entries += 1;
        Ok(())
    }
}

fn write_error(e: io::Error) -> Error {
    Error::internal(format!("write layer: {e}"))
}

/// Reads exactly `remaining` bytes (the size in the header already written), else fails.
struct Exact<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank"));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}
