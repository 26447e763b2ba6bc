//! Berth's differ: applies layer tars (plain, gzip or zstd) into a directory, and writes the
//! layer tar of what changed between two trees. Blocking, no async, no transport.
//!
//! - [`apply`] streams a layer into a directory, hashing the stream as read (the descriptor
//!   digest) and the uncompressed tar (the diff_id) on the way. Whiteouts either become
//!   overlayfs whiteouts ([`WhiteoutMode::Overlay`], for an upper directory extracted on its
//!   own, so layers can be extracted in parallel) or delete what they name
//!   ([`WhiteoutMode::Delete`], for a directory holding the layers below).
//! - [`diff`] and [`diff_overlay_upper`] write the layer of what changed, in a deterministic
//!   order, and return both digests (the uncompressed one is the `containerd.io/uncompressed`
//!   label of the blob).
//! - [`syncfs`] syncs a whole extracted tree at once; `apply` itself never syncs.
//! - [`Differ`] is the differ plugin: layer blobs from the content store applied onto mounts,
//!   diffs of mounts written back into it.
//!
//! # Hostile layers: what `apply` does
//!
//! Every path is resolved by us, relative to an open handle on the target, never as a string
//! joined onto it; so nothing outside the target is ever created, written, linked, chowned or
//! removed. Each case, and the choice made:
//!
//! | layer says | outcome |
//! | --- | --- |
//! | `/abs/path`, `./a`, `a//b` | contained: names are relative to the target (`abs/path`), as Docker and containerd read them |
//! | any `..` component (`../../etc/x`, `a/../b`) | rejected, `InvalidArgument`: real layers never need it |
//! | a parent that is a symlink staying inside (`lib -> usr/lib`, then `lib/x`) | followed (`usr/lib/x`), as Docker does |
//! | a parent that is a symlink leading out (`a -> /etc` or `a -> ../../..`, then `a/x`) | rejected, `InvalidArgument` (`openat2` `RESOLVE_BENEATH` refuses absolute targets and `..` past the target) |
//! | a symlink loop among parents | rejected, `InvalidArgument` (ELOOP) |
//! | an entry whose own name holds a symlink or anything else | replaced: the symlink itself is removed, never followed |
//! | a symlink entry with any target, absolute or `..` | created as is: a symlink is data; we never follow one out |
//! | a hardlink to `..`/outside, or through an escaping symlink | rejected, `InvalidArgument`; a hardlink to a symlink links the symlink itself |
//! | a hardlink to a missing file or a directory | rejected, `InvalidArgument` |
//! | a whiteout of a path that does not exist | fine (`Delete`: nothing to do; `Overlay`: the whiteout is made) |
//! | `trusted.overlay.*` xattrs | dropped: overlay metadata comes from whiteouts only |
//! | devices, fifos, setuid files | created as the layer says (the caller runs as root) |
//! | corrupt compression, truncated tar, bad checksum | rejected, `InvalidArgument`; the target holds part of the layer and must be discarded |
//! | a digest or diff_id that does not match | the caller's check: [`ApplyOutcome::verify`] (`FailedPrecondition`) |
//!
//! On kernels without `openat2` (before 5.6), no symlink among parents is followed at all.

mod apply;
mod changes;
mod compression;
mod differ;
mod hashing;
mod root;
mod stream;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod testtar;

pub use apply::{apply, syncfs, ApplyOptions, ApplyOutcome, WhiteoutMode};
pub use changes::{diff, diff_overlay_upper, DiffOptions, DiffOutcome};
pub use compression::*;
pub use differ::{DiffSpec, Differ};

/// Prefix of a whiteout entry: `.wh.<name>` deletes `<name>`.
pub const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Prefix of aufs metadata entries (`.wh..wh.plnk`), which are skipped.
pub const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
/// The entry that makes its directory opaque: nothing below shows through.
pub const OPAQUE_WHITEOUT: &[u8] = b".wh..wh..opq";
/// The xattr overlayfs reads to make a directory of an upper layer opaque.
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// Label of a compressed blob naming the digest of its uncompressed content.
pub const LABEL_UNCOMPRESSED: &str = "containerd.io/uncompressed";
