//! One streaming pass over an archive tar (gzip-compressed or not) on a thread of its own:
//! member names are validated, regular files arrive in chunks followed by their sha256, and a
//! short member or a missing end-of-archive marker is reported as truncation. Memory stays at
//! a few chunks whatever the archive's size.

use std::collections::HashSet;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Component, Path};

use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

/// Size of the data chunks sent for regular files (well under gRPC's 4 MiB message limit).
pub const CHUNK_SIZE: usize = 1 << 20;

/// What the reader found, in archive order.
#[derive(Debug)]
pub enum Event {
    /// A regular file begins.
    File {
        /// Normalized member name (no `./`, no trailing `/`).
        name: String,
        /// Size from the header.
        size: u64,
    },
    /// The next bytes of the current file.
    Data(Vec<u8>),
    /// The current file is complete; `sha256:<hex>` of its bytes.
    FileEnd {
        /// Digest of the file.
        digest: String,
    },
    /// A symlink or hard link; `target` is resolved to a member name.
    Link {
        /// Normalized member name of the link.
        name: String,
        /// Member name it points at.
        target: String,
    },
    /// The archive ended properly.
    End,
}

/// An event or the one-line reason reading stopped.
pub type EventResult = Result<Event, String>;

/// Normalizes a member name: drops `.` components and a trailing `/`; refuses absolute names,
/// `..` components and names that are not UTF-8.
pub fn member_name(raw: &Path) -> Result<String, String> {
    let mut parts = Vec::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str().ok_or_else(|| format!("member name {raw:?} is not UTF-8"))?),
            Component::CurDir => {}
            Component::ParentDir => return Err(format!("unsafe member name {:?}: contains '..'", raw.display())),
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("unsafe member name {:?}: absolute path", raw.display()))
            }
        }
    }
    if parts.is_empty() {
        return Err(format!("empty member name {:?}", raw.display()));
    }
    Ok(parts.join("/"))
}

/// Resolves a link target to a member name: symlinks relative to the link's directory, hard
/// links relative to the archive root. `..` may climb within the archive, never above it.
pub fn link_target(name: &str, target: &Path, symbolic: bool) -> Result<String, String> {
    let mut parts: Vec<&str> = Vec::new();
    if symbolic {
        parts.extend(name.split('/'));
        parts.pop();
    }
    for c in target.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str().ok_or_else(|| format!("link {name:?} target is not UTF-8"))?),
            Component::CurDir => {}
            Component::ParentDir => {
                if parts.pop().is_none() {
                    return Err(format!("unsafe link {name:?} -> {:?}: escapes the archive", target.display()));
                }
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("unsafe link {name:?} -> {:?}: absolute target", target.display()))
            }
        }
    }
    Ok(parts.join("/"))
}

/// Wraps the input and notes whether it ever ran dry: the tar reader treats a clean EOF at a
/// header boundary as the end, but a proper archive ends with zero blocks before its EOF.
struct EofTracker<R> {
    inner: R,
    hit_eof: bool,
    total: u64,
}

impl<R: Read> Read for EofTracker<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.hit_eof = true;
        }
        self.total += n as u64;
        Ok(n)
    }
}

/// Opens `input`, transparently decompressing gzip.
fn decompress(input: Box<dyn Read + Send>) -> io::Result<Box<dyn Read + Send>> {
    let mut buffered = BufReader::with_capacity(CHUNK_SIZE, input);
    let gzip = buffered.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    Ok(if gzip {
        Box::new(BufReader::with_capacity(CHUNK_SIZE, flate2::bufread::MultiGzDecoder::new(buffered)))
    } else {
        Box::new(buffered)
    })
}

/// One line for a read error. Header parse errors quote raw header bytes: leave those out.
fn io_error(e: io::Error) -> String {
    let msg = e.to_string();
    let first = msg.lines().next().unwrap_or_default();
    if e.kind() == io::ErrorKind::UnexpectedEof || msg.contains("entire block") {
        format!("truncated archive ({first})")
    } else if msg.contains("checksum") || msg.contains("cksum") || msg.contains("numeric field") {
        "not a tar archive (or a corrupt one): invalid tar header".to_string()
    } else {
        format!("reading archive: {first}")
    }
}

/// Reads the whole archive, sending events; stops early when the receiver goes away.
fn read_archive(input: Box<dyn Read + Send>, tx: &mpsc::Sender<EventResult>) -> Result<(), String> {
    let send = |ev: Event| tx.blocking_send(Ok(ev)).map_err(|_| String::new());
    let reader = decompress(input).map_err(io_error)?;
    let mut archive = tar::Archive::new(EofTracker { inner: reader, hit_eof: false, total: 0 });
    let mut seen = HashSet::new();
    for entry in archive.entries().map_err(io_error)? {
        let mut entry = entry.map_err(io_error)?;
        let raw = entry.path().map_err(io_error)?.into_owned();
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() || kind.is_dir() {
            continue;
        }
        let name = member_name(&raw)?;
        if !seen.insert(name.clone()) {
            return Err(format!("duplicate archive member {name:?}"));
        }
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry.link_name().map_err(io_error)?.ok_or_else(|| format!("link {name:?} has no target"))?;
            let target = link_target(&name, &target, kind.is_symlink())?;
            send(Event::Link { name, target })?;
            continue;
        }
        if !(kind.is_file() || kind.is_contiguous()) {
            return Err(format!("archive member {name:?} is of unsupported type {kind:?}"));
        }
        let size = entry.header().size().map_err(io_error)?;
        send(Event::File { name: name.clone(), size })?;
        let mut hasher = Sha256::new();
        let mut left = size;
        while left > 0 {
            let mut buf = vec![0u8; left.min(CHUNK_SIZE as u64) as usize];
            let mut filled = 0;
            while filled < buf.len() {
                match entry.read(&mut buf[filled..]) {
                    Ok(0) => return Err(format!("truncated archive: member {name:?} is cut short")),
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(io_error(e)),
                }
            }
            hasher.update(&buf);
            left -= buf.len() as u64;
            send(Event::Data(buf))?;
        }
        send(Event::FileEnd { digest: format!("sha256:{:x}", hasher.finalize()) })?;
    }
    let tracker = archive.into_inner();
    if tracker.total == 0 {
        return Err("empty archive".into());
    }
    if tracker.hit_eof {
        return Err("truncated archive: no end-of-archive marker".into());
    }
    send(Event::End)
}

/// Starts reading `input` on its own thread; events arrive on the returned channel, which
/// holds at most `capacity` of them. Read errors arrive as one `Err` and end the stream.
pub fn spawn(input: Box<dyn Read + Send>, capacity: usize) -> mpsc::Receiver<EventResult> {
    let (tx, rx) = mpsc::channel(capacity);
    std::thread::spawn(move || {
        if let Err(e) = read_archive(input, &tx) {
            if !e.is_empty() {
                let _ = tx.blocking_send(Err(e));
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalized_or_refused() {
        assert_eq!(member_name(Path::new("./blobs/sha256/ab")).unwrap(), "blobs/sha256/ab");
        assert_eq!(member_name(Path::new("abc/")).unwrap(), "abc");
        assert!(member_name(Path::new("../x")).unwrap_err().contains("'..'"));
        assert!(member_name(Path::new("a/../../x")).is_err());
        assert!(member_name(Path::new("/etc/passwd")).unwrap_err().contains("absolute"));
        assert!(member_name(Path::new(".")).is_err());
    }

    #[test]
    fn link_targets_stay_inside() {
        assert_eq!(link_target("b/layer.tar", Path::new("../a/layer.tar"), true).unwrap(), "a/layer.tar");
        assert_eq!(link_target("b/layer.tar", Path::new("a/layer.tar"), false).unwrap(), "a/layer.tar");
        assert!(link_target("b/layer.tar", Path::new("../../x"), true).is_err());
        assert!(link_target("b/x", Path::new("/etc/passwd"), true).is_err());
    }

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn collect(data: Vec<u8>) -> Vec<EventResult> {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let mut rx = spawn(Box::new(io::Cursor::new(data)), 4);
            let mut out = Vec::new();
            while let Some(ev) = rx.recv().await {
                out.push(ev);
            }
            out
        })
    }

    #[test]
    fn streams_files_with_digests() {
        let events = collect(tar_of(&[("a", b"hello"), ("./b", b"")]));
        let kinds: Vec<String> = events.iter().map(|e| format!("{:?}", e.as_ref().unwrap())).collect();
        assert_eq!(kinds.len(), 6, "{kinds:?}");
        assert!(kinds[0].contains("\"a\""));
        assert!(kinds[2].contains("sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"));
        assert!(kinds[3].contains("\"b\""));
        assert_eq!(kinds[5], "End");
    }

    #[test]
    fn reports_truncation_and_duplicates() {
        let full = tar_of(&[("a", &[7u8; 3000])]);
        let cut_member = collect(full[..1500].to_vec());
        assert!(cut_member.last().unwrap().as_ref().unwrap_err().contains("truncated"), "{cut_member:?}");
        let cut_marker = collect(full[..512 + 3072].to_vec());
        assert!(cut_marker.last().unwrap().as_ref().unwrap_err().contains("truncated"), "{cut_marker:?}");
        let dup = collect(tar_of(&[("a", b"1"), ("./a", b"2")]));
        assert!(dup.last().unwrap().as_ref().unwrap_err().contains("duplicate"), "{dup:?}");
        assert!(collect(Vec::new()).last().unwrap().as_ref().unwrap_err().contains("empty"));
        let not_tar = collect(b"{\"json\": true}".repeat(100));
        assert!(not_tar.last().unwrap().as_ref().unwrap_err().contains("not a tar"), "{not_tar:?}");
    }

    #[test]
    fn reads_gzip_archives() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar_of(&[("x", b"data")])).unwrap();
        let events = collect(gz.finish().unwrap());
        assert!(matches!(events.last(), Some(Ok(Event::End))), "{events:?}");
    }
}
