//! Where this host's cgroups are: a unified (v2-only) host, or the mount point of each v1
//! controller (from mountinfo, so co-mounted `cpu,cpuacct` hierarchies are found).

use std::path::{Path, PathBuf};

/// The cgroup file system root.
pub const ROOT: &str = "/sys/fs/cgroup";

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// True when `/sys/fs/cgroup` itself is cgroup v2 (no v1 hierarchies are used).
pub fn unified() -> bool {
    let path = c"/sys/fs/cgroup";
    // SAFETY: statfs into a zeroed struct we own, with a NUL-terminated path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(path.as_ptr(), &mut st) } != 0 {
        return false;
    }
    st.f_type as i64 == CGROUP2_SUPER_MAGIC
}

/// Each cgroup mount in `mountinfo` text: file system type (`cgroup` or `cgroup2`), mount
/// point and super options.
fn cgroup_mounts(mountinfo: &str) -> impl Iterator<Item = (&str, PathBuf, &str)> {
    mountinfo.lines().filter_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut r = right.split(' ');
        let fstype = r.next().filter(|t| *t == "cgroup" || *t == "cgroup2")?;
        let options = r.nth(1).unwrap_or("");
        let point = left.split(' ').nth(4)?;
        Some((fstype, PathBuf::from(unescape(point)), options))
    })
}

/// The mount point of v1 controller `controller` in `mountinfo` text.
pub fn v1_mount_in(mountinfo: &str, controller: &str) -> Option<PathBuf> {
    cgroup_mounts(mountinfo)
        .find(|(fstype, _, options)| *fstype == "cgroup" && options.split(',').any(|o| o == controller))
        .map(|(_, point, _)| point)
}

/// The mount point of every cgroup hierarchy, v1 and v2, in `mountinfo` text (berth-runtime's
/// delete removes a container's cgroup from each).
#[cfg_attr(not(test), allow(dead_code))]
pub fn hierarchies(mountinfo: &str) -> Vec<PathBuf> {
    cgroup_mounts(mountinfo).map(|(_, point, _)| point).collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The directory of cgroup `rel` under v1 controller `controller`: its mount point from this
/// process's mountinfo, else `/sys/fs/cgroup/<controller>`.
pub fn v1_dir(mountinfo: &str, controller: &str, rel: &Path) -> PathBuf {
    v1_mount_in(mountinfo, controller).unwrap_or_else(|| Path::new(ROOT).join(controller)).join(rel)
}

/// This process's mountinfo (empty if unreadable).
pub fn mountinfo() -> String {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
30 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,discard
33 25 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
34 33 0:29 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
37 33 0:32 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpu,cpuacct
38 33 0:33 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
39 33 0:34 / /sys/fs/cgroup/odd\\040dir rw shared:16 - cgroup cgroup rw,pids
";

    #[test]
    fn finds_v1_controllers_including_co_mounted_ones() {
        assert_eq!(v1_mount_in(SAMPLE, "cpu"), Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")));
        assert_eq!(v1_mount_in(SAMPLE, "cpuacct"), Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")));
        assert_eq!(v1_mount_in(SAMPLE, "memory"), Some(PathBuf::from("/sys/fs/cgroup/memory")));
        assert_eq!(v1_mount_in(SAMPLE, "pids"), Some(PathBuf::from("/sys/fs/cgroup/odd dir")));
        // The cgroup2 mount and other file systems are not v1 controllers.
        assert_eq!(v1_mount_in(SAMPLE, "nsdelegate"), None);
        assert_eq!(v1_mount_in(SAMPLE, "blkio"), None);
        assert_eq!(v1_dir(SAMPLE, "blkio", Path::new("berth/x")), PathBuf::from("/sys/fs/cgroup/blkio/berth/x"));
        let all: Vec<PathBuf> = ["unified", "cpu,cpuacct", "memory", "odd dir"]
            .iter()
            .map(|d| Path::new("/sys/fs/cgroup").join(d))
            .collect();
        assert_eq!(hierarchies(SAMPLE), all);
    }

    #[test]
    fn this_host_has_a_layout() {
        // Either unified, or v1 with a memory controller mounted somewhere.
        assert!(unified() || v1_mount_in(&mountinfo(), "memory").is_some());
    }
}
