//! The target directory of an apply, and every path lookup inside it: names are normalized
//! lexically (no `..`), directories are opened beneath the root with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`, and recently used ones stay open so
//! that the entries of one directory cost no lookups at all.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use berth_core::{Error, Result};
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Directories kept open; entries of one layer cluster by directory, so few are needed.
const CACHE_SLOTS: usize = 32;

/// Writes `raw` (a tar name) into `out` as `a/b/c`: leading `/`, empty and `.` components
/// dropped. `..` anywhere is refused: layers never need it and no lexical rule for it is safe
/// once symlinks are involved. An empty result names the root itself.
pub(crate) fn normalize(raw: &[u8], out: &mut Vec<u8>, what: &str) -> Result<()> {
    out.clear();
    if raw.contains(&0) {
        return Err(Error::invalid_argument(format!("{what} {:?} contains a NUL byte", show(raw))));
    }
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => continue,
            b".." => {
                return Err(Error::invalid_argument(format!(
                    "{what} {:?} contains '..': layer paths may not leave their directory",
                    show(raw)
                )))
            }
            _ => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(comp);
            }
        }
    }
    Ok(())
}

/// Splits a normalized path into its parent (empty for the root) and last component.
pub(crate) fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// A path for messages.
pub(crate) fn show(path: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(path)
}

/// The open target directory with a small cache of open subdirectories.
pub(crate) struct Root {
    fd: Rc<OwnedFd>,
    path: PathBuf,
    /// openat2 works here (Linux 5.6+); without it, no symlink among parents is followed.
    beneath: bool,
    /// Most recently used last.
    cache: Vec<(Vec<u8>, Rc<OwnedFd>)>,
}

impl Root {
    /// Opens `path`, which must be an existing directory.
    pub(crate) fn open(path: &Path) -> Result<Root> {
        let fd = rfs::open(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).map_err(|e| {
            let msg = format!("open target directory {}: {e}", path.display());
            if e == Errno::NOENT {
                Error::not_found(msg)
            } else if e == Errno::NOTDIR {
                Error::invalid_argument(msg)
            } else {
                Error::internal(msg)
            }
        })?;
        Ok(Root { fd: Rc::new(fd), path: path.to_path_buf(), beneath: true, cache: Vec::with_capacity(CACHE_SLOTS) })
    }

    /// The root directory itself.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Opens directory `rel` (normalized; empty = the root). A symlink among its components is
    /// followed only while it stays beneath the root; one that leads out (absolute, or `..`
    /// past the root), loops or dangles is `InvalidArgument`. Missing directories are created
    /// (0755, owned by the caller) when `create`, else the answer is `None`.
    pub(crate) fn dir(&mut self, rel: &[u8], create: bool) -> Result<Option<Rc<OwnedFd>>> {
        if rel.is_empty() {
            return Ok(Some(self.fd.clone()));
        }
        if let Some(i) = self.cache.iter().rposition(|(k, _)| k == rel) {
            let last = self.cache.len() - 1;
            if i != last {
                let slot = self.cache.remove(i);
                self.cache.push(slot);
            }
            return Ok(Some(self.cache[last].1.clone()));
        }
        let fd = match self.lookup(rel) {
            Ok(fd) => fd,
            Err(e) if e == Errno::NOENT && create => self.create_dirs(rel)?,
            Err(e) if e == Errno::NOENT => return Ok(None),
            Err(e) => return Err(self.lookup_error(rel, e)),
        };
        let fd = Rc::new(fd);
        self.remember(rel, fd.clone());
        Ok(Some(fd))
    }

    /// Keeps `fd`, the directory `rel` just made, for the entries that follow.
    pub(crate) fn remember(&mut self, rel: &[u8], fd: Rc<OwnedFd>) {
        if let Some(i) = self.cache.iter().position(|(k, _)| k == rel) {
            self.cache.remove(i);
        }
        if self.cache.len() == CACHE_SLOTS {
            let (mut key, _) = self.cache.remove(0);
            key.clear();
            key.extend_from_slice(rel);
            self.cache.push((key, fd));
        } else {
            self.cache.push((rel.to_vec(), fd));
        }
    }

    /// Drops every cached directory: after anything was removed or replaced, a cached path
    /// may no longer name the directory it was opened as.
    pub(crate) fn forget(&mut self) {
        self.cache.clear();
    }

    fn lookup(&mut self, rel: &[u8]) -> rustix::io::Result<OwnedFd> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        if self.beneath {
            let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
            let mut tries = 0;
            loop {
                match rfs::openat2(self.fd.as_fd(), rel, flags, Mode::empty(), resolve) {
                    // A concurrent rename elsewhere on the system; try again.
                    Err(Errno::AGAIN) if tries < 16 => tries += 1,
                    Err(Errno::NOSYS) => {
                        tracing::warn!("openat2 is not available: symlinks among layer parents will be refused");
                        self.beneath = false;
                        break;
                    }
                    other => return other,
                }
            }
        }
        // Without openat2: walk one component at a time and follow no symlink at all.
        let mut cur: Option<OwnedFd> = None;
        for comp in rel.split(|&b| b == b'/') {
            let at = cur.as_ref().map_or(self.fd.as_fd(), |f| f.as_fd());
            cur = Some(rfs::openat(at, comp, flags | OFlags::NOFOLLOW, Mode::empty())?);
        }
        cur.ok_or(Errno::NOENT)
    }

    /// Opens `rel`, creating its missing components one by one.
    fn create_dirs(&mut self, rel: &[u8]) -> Result<OwnedFd> {
        let mut parent: Option<OwnedFd> = None;
        let mut end = 0;
        for comp in rel.split(|&b| b == b'/') {
            end += comp.len();
            let prefix = &rel[..end];
            end += 1;
            let fd = match self.lookup(prefix) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    let at = parent.as_ref().map_or(self.fd.as_fd(), |f| f.as_fd());
                    match rfs::mkdirat(at, comp, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(self.fs_error("create directory", prefix, e)),
                    }
                    // NOFOLLOW: ENOENT above with EEXIST here means a dangling symlink.
                    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
                    rfs::openat(at, comp, flags, Mode::empty()).map_err(|e| self.lookup_error(prefix, e))?
                }
                Err(e) => return Err(self.lookup_error(prefix, e)),
            };
            parent = Some(fd);
        }
        parent.ok_or_else(|| Error::internal("create_dirs of the root"))
    }

    fn lookup_error(&self, rel: &[u8], e: Errno) -> Error {
        let path = show(rel);
        match e {
            Errno::XDEV => {
                Error::invalid_argument(format!("{path:?} resolves outside {} through a symlink", self.path.display()))
            }
            Errno::LOOP if !self.beneath => Error::invalid_argument(format!(
                "{path:?} goes through a symlink, which is not followed on kernels without openat2"
            )),
            Errno::LOOP => Error::invalid_argument(format!("{path:?}: too many levels of symbolic links")),
            Errno::NOTDIR => Error::invalid_argument(format!("{path:?}: a component is not a directory")),
            Errno::NAMETOOLONG => Error::invalid_argument(format!("{path:?}: name too long")),
            Errno::NOENT => Error::invalid_argument(format!("{path:?}: no such directory (dangling symlink?)")),
            e => self.fs_error("open directory", rel, e),
        }
    }

    /// An error of a file system call on `rel`.
    pub(crate) fn fs_error(&self, op: &str, rel: &[u8], e: Errno) -> Error {
        let msg = format!("{op} {:?} in {}: {e}", show(rel), self.path.display());
        match e {
            Errno::NAMETOOLONG | Errno::ISDIR | Errno::NOTDIR | Errno::LOOP => Error::invalid_argument(msg),
            _ => Error::internal(msg),
        }
    }
}

/// Removes `name` in `dir` whatever it is; a directory with everything beneath it. Never
/// follows a symlink. Missing is fine.
pub(crate) fn remove_all(dir: BorrowedFd<'_>, name: &[u8]) -> rustix::io::Result<()> {
    match rfs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR) => {}
        Err(e) => return Err(e),
    }
    let sub =
        rfs::openat(dir, name, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())?;
    clear_dir(sub.as_fd(), &mut |_| false)?;
    match rfs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes every entry of `dir` for which `keep(name)` is false (recursively).
pub(crate) fn clear_dir(dir: BorrowedFd<'_>, keep: &mut dyn FnMut(&[u8]) -> bool) -> rustix::io::Result<()> {
    let mut names: Vec<Vec<u8>> = Vec::new();
    let mut entries = rfs::Dir::read_from(dir)?;
    while let Some(entry) = entries.read() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." && !keep(name) {
            names.push(name.to_vec());
        }
    }
    drop(entries);
    for name in names {
        remove_all(dir, &name)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> Result<String> {
        let mut out = Vec::new();
        normalize(s.as_bytes(), &mut out, "entry")?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn normalizes_names() {
        assert_eq!(norm("./a/b/").unwrap(), "a/b");
        assert_eq!(norm("/abs/path").unwrap(), "abs/path");
        assert_eq!(norm("a//./b").unwrap(), "a/b");
        assert_eq!(norm("./").unwrap(), "");
        assert_eq!(norm("..foo/.bar").unwrap(), "..foo/.bar");
        for bad in ["../../etc/x", "a/../b", "a/..", "/.."] {
            assert_eq!(norm(bad).unwrap_err().kind(), berth_core::ErrorKind::InvalidArgument, "{bad}");
        }
        assert_eq!(split(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split(b"c"), (&b""[..], &b"c"[..]));
    }
}
