//! fstab-style mount options turned into mount(2) flags, propagation changes and data.

/// What a list of options asks of mount(2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedOptions {
    /// `MS_*` flags for the mount call itself.
    pub flags: libc::c_ulong,
    /// Propagation flags (`MS_PRIVATE`, `MS_SHARED`, ... possibly with `MS_REC`) applied by a
    /// second mount call once the mount exists, as the kernel wants.
    pub propagation: libc::c_ulong,
    /// The remaining options joined by `,`: filesystem-specific data (`lowerdir=...`).
    pub data: String,
}

/// Flags that the kernel ignores on the first mount(2) of a bind mount; they need a remount.
pub(crate) const BIND_REMOUNT_FLAGS: libc::c_ulong = libc::MS_RDONLY
    | libc::MS_NOSUID
    | libc::MS_NODEV
    | libc::MS_NOEXEC
    | libc::MS_NOATIME
    | libc::MS_NODIRATIME
    | libc::MS_RELATIME
    | libc::MS_STRICTATIME;

/// (option, clear?, flag): `clear` options remove the flag again (`rw` after `ro`).
const FLAGS: &[(&str, bool, libc::c_ulong)] = &[
    ("async", true, libc::MS_SYNCHRONOUS),
    ("atime", true, libc::MS_NOATIME),
    ("bind", false, libc::MS_BIND),
    ("defaults", false, 0),
    ("dev", true, libc::MS_NODEV),
    ("diratime", true, libc::MS_NODIRATIME),
    ("dirsync", false, libc::MS_DIRSYNC),
    ("exec", true, libc::MS_NOEXEC),
    ("mand", false, libc::MS_MANDLOCK),
    ("noatime", false, libc::MS_NOATIME),
    ("nodev", false, libc::MS_NODEV),
    ("nodiratime", false, libc::MS_NODIRATIME),
    ("noexec", false, libc::MS_NOEXEC),
    ("nomand", true, libc::MS_MANDLOCK),
    ("norelatime", true, libc::MS_RELATIME),
    ("nostrictatime", true, libc::MS_STRICTATIME),
    ("nosuid", false, libc::MS_NOSUID),
    ("rbind", false, libc::MS_BIND | libc::MS_REC),
    ("relatime", false, libc::MS_RELATIME),
    ("remount", false, libc::MS_REMOUNT),
    ("ro", false, libc::MS_RDONLY),
    ("rw", true, libc::MS_RDONLY),
    ("strictatime", false, libc::MS_STRICTATIME),
    ("suid", true, libc::MS_NOSUID),
    ("sync", false, libc::MS_SYNCHRONOUS),
];

const PROPAGATION: &[(&str, libc::c_ulong)] = &[
    ("private", libc::MS_PRIVATE),
    ("rprivate", libc::MS_PRIVATE | libc::MS_REC),
    ("shared", libc::MS_SHARED),
    ("rshared", libc::MS_SHARED | libc::MS_REC),
    ("slave", libc::MS_SLAVE),
    ("rslave", libc::MS_SLAVE | libc::MS_REC),
    ("unbindable", libc::MS_UNBINDABLE),
    ("runbindable", libc::MS_UNBINDABLE | libc::MS_REC),
];

/// Splits options into flags, propagation and data, as containerd's `parseMountOptions`.
pub fn parse_options<S: AsRef<str>>(options: &[S]) -> ParsedOptions {
    let mut out = ParsedOptions::default();
    let mut data = Vec::new();
    for o in options {
        let o = o.as_ref();
        if let Some(&(_, clear, flag)) = FLAGS.iter().find(|(n, ..)| *n == o) {
            if clear {
                out.flags &= !flag;
            } else {
                out.flags |= flag;
            }
        } else if let Some(&(_, flag)) = PROPAGATION.iter().find(|(n, _)| *n == o) {
            out.propagation |= flag;
        } else {
            data.push(o);
        }
    }
    out.data = data.join(",");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_data_and_propagation() {
        let p = parse_options(&["ro", "rbind", "nosuid", "rprivate"]);
        assert_eq!(p.flags, libc::MS_RDONLY | libc::MS_BIND | libc::MS_REC | libc::MS_NOSUID);
        assert_eq!(p.propagation, libc::MS_PRIVATE | libc::MS_REC);
        assert_eq!(p.data, "");

        let p = parse_options(&["ro", "rw", "index=off", "lowerdir=/a:/b", "defaults"]);
        assert_eq!(p.flags, 0, "rw clears ro");
        assert_eq!(p.data, "index=off,lowerdir=/a:/b");
    }
}
