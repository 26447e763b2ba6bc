//! The generic parts of a container's OCI spec, as Docker sets them for `docker run`: the
//! capability set, the standard mounts, masked and read-only paths, rlimits and namespaces.

use std::path::Path;

use serde_json::{json, Value};

/// Docker's default capability set (moby `oci.DefaultCapabilities`).
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Paths hidden from the container (an empty read-only file or tmpfs over them): kernel
/// interfaces that leak host information or allow side channels.
const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
];

/// Paths mounted read-only in the container.
const READONLY_PATHS: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// `linux.namespaces`: pid, ipc, uts, mount and, unless the container shares the host's
/// network, network.
pub fn default_namespaces(host_network: bool) -> Vec<Value> {
    let mut kinds = vec!["pid", "ipc", "uts", "mount"];
    if !host_network {
        kinds.push("network");
    }
    kinds.into_iter().map(|t| json!({ "type": t })).collect()
}

/// `mounts`: /proc, a tmpfs /dev with devpts, shm and mqueue, a read-only /sys and a tmpfs
/// /run. Callers append their bind mounts after these.
pub fn default_mounts() -> Vec<Value> {
    vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/run", "type": "tmpfs", "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
    ]
}

/// `linux.maskedPaths`: Docker's list plus, as Docker does since 2025, each CPU's
/// `thermal_throttle` directory found on this host (thermal side channel).
pub fn masked_paths() -> Vec<String> {
    let mut paths: Vec<String> = MASKED_PATHS.iter().map(|p| p.to_string()).collect();
    paths.extend(thermal_throttle_dirs(Path::new("/sys/devices/system/cpu")));
    paths
}

/// `<cpu_dir>/cpuN/thermal_throttle` for every CPU that has one, sorted.
fn thermal_throttle_dirs(cpu_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(cpu_dir) else { return Vec::new() };
    let mut found: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.strip_prefix("cpu").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(|e| e.path().join("thermal_throttle"))
        .filter(|p| p.is_dir())
        .map(|p| p.display().to_string())
        .collect();
    found.sort();
    found
}

/// `linux.readonlyPaths`.
pub fn readonly_paths() -> Vec<&'static str> {
    READONLY_PATHS.to_vec()
}

/// `process.rlimits`: 1024 open files, soft and hard (containerd's default).
pub fn default_rlimits() -> Vec<Value> {
    vec![json!({"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024})]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_set_is_dockers() {
        assert_eq!(DEFAULT_CAPS.len(), 14);
        assert!(DEFAULT_CAPS.contains(&"CAP_NET_BIND_SERVICE") && !DEFAULT_CAPS.contains(&"CAP_SYS_ADMIN"));
    }

    #[test]
    fn network_namespace_only_without_host_network() {
        let types = |v: Vec<Value>| v.iter().map(|n| n["type"].as_str().unwrap().to_string()).collect::<Vec<_>>();
        assert_eq!(types(default_namespaces(false)), ["pid", "ipc", "uts", "mount", "network"]);
        assert_eq!(types(default_namespaces(true)), ["pid", "ipc", "uts", "mount"]);
    }

    #[test]
    fn masked_and_readonly_paths() {
        let masked = masked_paths();
        for p in ["/proc/kcore", "/proc/keys", "/sys/firmware", "/proc/interrupts"] {
            assert!(masked.iter().any(|m| m == p), "{p}");
        }
        assert!(readonly_paths().contains(&"/proc/sys"));
        let dir = std::env::temp_dir().join(format!("berth-oci-cpus-{}", std::process::id()));
        for d in ["cpu0/thermal_throttle", "cpu12/thermal_throttle", "cpu1", "cpufreq/thermal_throttle"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let found = thermal_throttle_dirs(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        let want: Vec<String> =
            ["cpu0", "cpu12"].iter().map(|c| dir.join(c).join("thermal_throttle").display().to_string()).collect();
        assert_eq!(found, want);
    }

    #[test]
    fn mounts_and_rlimits() {
        let dests: Vec<_> = default_mounts().iter().map(|m| m["destination"].as_str().unwrap().to_string()).collect();
        assert_eq!(dests, ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/run"]);
        assert_eq!(default_rlimits()[0]["type"], "RLIMIT_NOFILE");
    }
}
