//! Writes an archive tar member by member, with file data supplied in pieces as it arrives
//! (from a gRPC stream) rather than from a reader. Headers are GNU format, owned by root, with a
//! fixed mtime so the same images always give the same archive.

use std::io::{self, Write};

/// Modification time of every member (the Unix epoch, as containerd's exporter uses).
pub const MTIME: u64 = 0;

/// A tar being written to `W`.
pub struct TarWriter<W: Write> {
    out: W,
    /// Encodes headers (with GNU long-name entries when needed); drained after each member.
    headers: tar::Builder<Vec<u8>>,
    /// Bytes still expected for the current file.
    left: u64,
    /// Bytes of the current file so far, for padding.
    written: u64,
}

impl<W: Write> TarWriter<W> {
    /// Starts a tar on `out`.
    pub fn new(out: W) -> Self {
        TarWriter { out, headers: tar::Builder::new(Vec::new()), left: 0, written: 0 }
    }

    fn header(&mut self, kind: tar::EntryType, name: &str, mode: u32, size: u64) -> io::Result<()> {
        if self.left != 0 {
            return Err(io::Error::other("previous tar member is incomplete"));
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        // append_data pads after the data it copies; with no data it writes only the header.
        self.headers.append_data(&mut h, name, io::empty())?;
        self.out.write_all(self.headers.get_ref())?;
        self.headers.get_mut().clear();
        self.left = size;
        self.written = 0;
        Ok(())
    }

    /// Adds a directory (`name` without the trailing `/`).
    pub fn dir(&mut self, name: &str) -> io::Result<()> {
        self.header(tar::EntryType::Directory, &format!("{name}/"), 0o755, 0)
    }

    /// Adds a whole file held in memory.
    pub fn file(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        self.begin_file(name, data.len() as u64)?;
        self.data(data)?;
        self.end_file()
    }

    /// Starts a file of `size` bytes; its data follows through [`TarWriter::data`].
    pub fn begin_file(&mut self, name: &str, size: u64) -> io::Result<()> {
        self.header(tar::EntryType::Regular, name, 0o644, size)
    }

    /// Appends data to the current file.
    pub fn data(&mut self, data: &[u8]) -> io::Result<()> {
        if data.len() as u64 > self.left {
            return Err(io::Error::other("more data than the tar header announced"));
        }
        self.out.write_all(data)?;
        self.left -= data.len() as u64;
        self.written += data.len() as u64;
        Ok(())
    }

    /// Completes the current file (pads it to the block size).
    pub fn end_file(&mut self) -> io::Result<()> {
        if self.left != 0 {
            return Err(io::Error::other(format!("tar member short by {} bytes", self.left)));
        }
        let rem = (self.written % 512) as usize;
        if rem != 0 {
            self.out.write_all(&[0u8; 512][..512 - rem])?;
        }
        self.written = 0;
        Ok(())
    }

    /// Writes the end-of-archive marker and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        if self.left != 0 {
            return Err(io::Error::other("last tar member is incomplete"));
        }
        self.out.write_all(&[0u8; 1024])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn writes_a_tar_that_reads_back() {
        let mut w = TarWriter::new(Vec::new());
        w.dir("blobs").unwrap();
        w.begin_file("blobs/a", 5).unwrap();
        w.data(b"he").unwrap();
        w.data(b"llo").unwrap();
        w.end_file().unwrap();
        let long = format!("{}/file", "d".repeat(150));
        w.file(&long, b"x").unwrap();
        let data = w.finish().unwrap();
        assert_eq!(data.len() % 512, 0);
        let mut ar = tar::Archive::new(&data[..]);
        let mut names = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let mut s = String::new();
            e.read_to_string(&mut s).unwrap();
            names.push((e.path().unwrap().display().to_string(), s));
        }
        assert_eq!(names, [("blobs/".into(), "".into()), ("blobs/a".into(), "hello".into()), (long, "x".into())]);
    }

    #[test]
    fn refuses_wrong_sizes() {
        let mut w = TarWriter::new(Vec::new());
        w.begin_file("a", 2).unwrap();
        assert!(w.data(b"abc").is_err());
        w.data(b"a").unwrap();
        assert!(w.end_file().is_err());
    }
}
