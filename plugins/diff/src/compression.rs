//! Layer compression: the layer media types, detection by magic bytes, and the streaming
//! decoders and encoders.

use std::io::{self, BufRead, Read, Write};

use berth_core::{Error, Result};

/// OCI layer, uncompressed.
pub const MEDIA_TYPE_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI layer, gzip.
pub const MEDIA_TYPE_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI layer, zstd.
pub const MEDIA_TYPE_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// OCI non-distributable layer, uncompressed.
pub const MEDIA_TYPE_LAYER_NONDIST: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar";
/// OCI non-distributable layer, gzip.
pub const MEDIA_TYPE_LAYER_NONDIST_GZIP: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
/// OCI non-distributable layer, zstd.
pub const MEDIA_TYPE_LAYER_NONDIST_ZSTD: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";
/// Docker layer, uncompressed.
pub const MEDIA_TYPE_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Docker layer, gzip.
pub const MEDIA_TYPE_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker foreign (non-distributable) layer, gzip.
pub const MEDIA_TYPE_DOCKER_FOREIGN_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

/// How a layer tar is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// A plain tar stream.
    None,
    /// gzip (one or more members).
    Gzip,
    /// zstd (one or more frames).
    Zstd,
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];
const BZIP2_MAGIC: &[u8] = b"BZh";
/// Bytes [`Compression::detect`] looks at.
pub(crate) const MAGIC_LEN: usize = 6;

impl Compression {
    /// The compression a layer media type declares; `NotImplemented` for media types that
    /// are not layers or that need a stream processor (encrypted layers), as containerd.
    pub fn from_media_type(media_type: &str) -> Result<Compression> {
        Ok(match media_type {
            MEDIA_TYPE_LAYER | MEDIA_TYPE_LAYER_NONDIST | MEDIA_TYPE_DOCKER_LAYER => Compression::None,
            MEDIA_TYPE_LAYER_GZIP
            | MEDIA_TYPE_LAYER_NONDIST_GZIP
            | MEDIA_TYPE_DOCKER_LAYER_GZIP
            | MEDIA_TYPE_DOCKER_FOREIGN_LAYER_GZIP => Compression::Gzip,
            MEDIA_TYPE_LAYER_ZSTD | MEDIA_TYPE_LAYER_NONDIST_ZSTD => Compression::Zstd,
            _ => return Err(Error::not_implemented(format!("unsupported layer media type {media_type:?}"))),
        })
    }

    /// The OCI layer media type for this compression.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Compression::None => MEDIA_TYPE_LAYER,
            Compression::Gzip => MEDIA_TYPE_LAYER_GZIP,
            Compression::Zstd => MEDIA_TYPE_LAYER_ZSTD,
        }
    }

    /// The compression of a stream from its first bytes (up to [`MAGIC_LEN`]); anything that
    /// is not gzip or zstd is taken for a plain tar, which the tar reader then checks. xz and
    /// bzip2, which no OCI media type allows, are `NotImplemented`.
    pub fn detect(prefix: &[u8]) -> Result<Compression> {
        if prefix.starts_with(GZIP_MAGIC) {
            Ok(Compression::Gzip)
        } else if prefix.starts_with(ZSTD_MAGIC) {
            Ok(Compression::Zstd)
        } else if prefix.starts_with(XZ_MAGIC) || prefix.starts_with(BZIP2_MAGIC) {
            Err(Error::not_implemented("xz and bzip2 compressed layers are not supported"))
        } else {
            Ok(Compression::None)
        }
    }
}

/// A decompressing reader over a buffered stream, giving the stream back at the end.
pub(crate) enum Decoder<R: BufRead> {
    Plain(R),
    Gzip(flate2::bufread::MultiGzDecoder<R>),
    Zstd(zstd::stream::read::Decoder<'static, R>),
}

impl<R: BufRead> Decoder<R> {
    pub(crate) fn new(compression: Compression, input: R) -> io::Result<Self> {
        Ok(match compression {
            Compression::None => Decoder::Plain(input),
            Compression::Gzip => Decoder::Gzip(flate2::bufread::MultiGzDecoder::new(input)),
            Compression::Zstd => Decoder::Zstd(zstd::stream::read::Decoder::with_buffer(input)?),
        })
    }

    /// The compressed stream, positioned after what the decoder consumed.
    pub(crate) fn into_inner(self) -> R {
        match self {
            Decoder::Plain(r) => r,
            Decoder::Gzip(d) => d.into_inner(),
            Decoder::Zstd(d) => d.finish(),
        }
    }
}

impl<R: BufRead> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Plain(r) => r.read(buf),
            Decoder::Gzip(d) => d.read(buf),
            Decoder::Zstd(d) => d.read(buf),
        }
    }
}

/// A compressing writer; [`Encoder::finish`] writes the trailer and gives the sink back.
pub(crate) enum Encoder<W: Write> {
    Plain(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    pub(crate) fn new(compression: Compression, sink: W) -> io::Result<Self> {
        Ok(match compression {
            Compression::None => Encoder::Plain(sink),
            // gzip's default level, as containerd; the header carries no name and mtime 0,
            // so equal trees give equal blobs.
            Compression::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(sink, flate2::Compression::default())),
            Compression::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(sink, 3)?),
        })
    }

    pub(crate) fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Plain(w) => Ok(w),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Plain(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Plain(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_map_to_compression() {
        assert_eq!(Compression::from_media_type(MEDIA_TYPE_LAYER).unwrap(), Compression::None);
        assert_eq!(Compression::from_media_type(MEDIA_TYPE_DOCKER_LAYER_GZIP).unwrap(), Compression::Gzip);
        assert_eq!(Compression::from_media_type(MEDIA_TYPE_LAYER_NONDIST_ZSTD).unwrap(), Compression::Zstd);
        let err = Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+gzip+encrypted").unwrap_err();
        assert_eq!(err.kind(), berth_core::ErrorKind::NotImplemented);
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            assert_eq!(Compression::from_media_type(c.oci_media_type()).unwrap(), c);
        }
    }

    #[test]
    fn magic_bytes() {
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8, 0]).unwrap(), Compression::Gzip);
        assert_eq!(Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0]).unwrap(), Compression::Zstd);
        assert_eq!(Compression::detect(b"etc/").unwrap(), Compression::None);
        assert_eq!(Compression::detect(b"").unwrap(), Compression::None);
        assert!(Compression::detect(b"BZh91AY").is_err());
    }
}
