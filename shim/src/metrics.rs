//! Cgroup statistics of the container as containerd's metrics messages: read straight from
//! the cgroup files (one read per file, no intermediate JSON) into
//! `io.containerd.cgroups.v1.Metrics` on cgroup v1 and hybrid hosts, or
//! `io.containerd.cgroups.v2.Metrics` on pure cgroup v2 hosts, packed under their bare type
//! URL so `ctr task metrics` decodes them.
//!
//! Missing files (a controller that is not mounted, a kernel without swap accounting) leave
//! their fields zero; only a missing cgroup is an error.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use berth_proto::io::containerd::cgroups::{v1, v2};

/// Where cgroup v2 is mounted on a unified host.
const CGROUP2_ROOT: &str = "/sys/fs/cgroup";

/// The statistics of the cgroup at `cgroup` (the path in the container's spec, e.g.
/// `/berth/default/web`), in the message for this host's cgroup layout.
pub fn collect(cgroup: &Path) -> std::io::Result<prost_types::Any> {
    let rel = cgroup.strip_prefix("/").unwrap_or(cgroup);
    if crate::cgroups::unified() {
        Ok(berth_proto::to_any(&collect_v2(&Path::new(CGROUP2_ROOT).join(rel))?))
    } else {
        Ok(berth_proto::to_any(&collect_v1(&V1Dirs::of(rel))?))
    }
}

/// The directories of one cgroup under each v1 controller.
#[derive(Debug, Clone)]
pub struct V1Dirs {
    pub memory: PathBuf,
    pub cpu: PathBuf,
    pub cpuacct: PathBuf,
    pub pids: PathBuf,
    pub blkio: PathBuf,
    pub hugetlb: PathBuf,
    pub rdma: PathBuf,
}

impl V1Dirs {
    /// The cgroup `rel` under each controller's mount point (from mountinfo, so co-mounted
    /// `cpu,cpuacct` works), or `/sys/fs/cgroup/<controller>`.
    pub fn of(rel: &Path) -> V1Dirs {
        let mountinfo = crate::cgroups::mountinfo();
        V1Dirs::with(|c| crate::cgroups::v1_dir(&mountinfo, c, rel))
    }

    /// Every controller under one root, `root/<controller>/rel` (tests).
    #[cfg(test)]
    fn under(root: &Path, rel: &str) -> V1Dirs {
        V1Dirs::with(|c| root.join(c).join(rel))
    }

    /// The directory of each controller, as `dir` names it.
    fn with(dir: impl Fn(&str) -> PathBuf) -> V1Dirs {
        V1Dirs {
            memory: dir("memory"),
            cpu: dir("cpu"),
            cpuacct: dir("cpuacct"),
            pids: dir("pids"),
            blkio: dir("blkio"),
            hugetlb: dir("hugetlb"),
            rdma: dir("rdma"),
        }
    }
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// A file holding one number; `max` (no limit) reads as `unlimited`.
fn read_u64(path: &Path, unlimited: u64) -> u64 {
    read(path).map_or(0, |s| parse_u64(&s, unlimited))
}

fn parse_u64(text: &str, unlimited: u64) -> u64 {
    match text.trim() {
        "max" => unlimited,
        t => t.parse().unwrap_or(0),
    }
}

/// `key value` lines (memory.stat, cpu.stat, cpuacct.stat, memory.oom_control, memory.events).
pub fn parse_keyed(text: &str) -> HashMap<&str, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k, v.trim().parse().ok()?))
        })
        .collect()
}

/// Copies each named key of a keyed file into the field of the same name.
macro_rules! fill {
    ($msg:expr, $map:expr, $($field:ident),* $(,)?) => {
        $( $msg.$field = $map.get(stringify!($field)).copied().unwrap_or(0); )*
    };
}

/// The memory.stat keys of cgroup v1.
pub fn memory_stat_v1(text: &str) -> v1::MemoryStat {
    let s = parse_keyed(text);
    let get = |k: &str| s.get(k).copied().unwrap_or(0);
    let mut m = v1::MemoryStat::default();
    fill!(
        m,
        s,
        cache,
        rss,
        rss_huge,
        mapped_file,
        dirty,
        writeback,
        inactive_anon,
        active_anon,
        inactive_file,
        active_file,
        unevictable,
        hierarchical_memory_limit,
        total_cache,
        total_rss,
        total_rss_huge,
        total_mapped_file,
        total_dirty,
        total_writeback,
        total_inactive_anon,
        total_active_anon,
        total_inactive_file,
        total_active_file,
        total_unevictable,
    );
    // The kernel's names differ from the message's for these.
    m.pg_pg_in = get("pgpgin");
    m.pg_pg_out = get("pgpgout");
    m.pg_fault = get("pgfault");
    m.pg_maj_fault = get("pgmajfault");
    m.total_pg_pg_in = get("total_pgpgin");
    m.total_pg_pg_out = get("total_pgpgout");
    m.total_pg_fault = get("total_pgfault");
    m.total_pg_maj_fault = get("total_pgmajfault");
    m.hierarchical_swap_limit = get("hierarchical_memsw_limit");
    m
}

/// memory.<prefix>{limit_in_bytes,usage_in_bytes,max_usage_in_bytes,failcnt}; `prefix` is
/// "" for memory, "memsw." for memory+swap, "kmem." and "kmem.tcp.".
fn memory_entry_v1(dir: &Path, prefix: &str) -> v1::MemoryEntry {
    let file = |name: &str| dir.join(format!("memory.{prefix}{name}"));
    v1::MemoryEntry {
        limit: read_u64(&file("limit_in_bytes"), u64::MAX),
        usage: read_u64(&file("usage_in_bytes"), 0),
        max: read_u64(&file("max_usage_in_bytes"), 0),
        failcnt: read_u64(&file("failcnt"), 0),
    }
}

/// memory.oom_control.
pub fn oom_control_v1(text: &str) -> v1::MemoryOomControl {
    let s = parse_keyed(text);
    let mut m = v1::MemoryOomControl::default();
    fill!(m, s, oom_kill_disable, under_oom, oom_kill);
    m
}

/// cpuacct (nanoseconds; cpuacct.stat's ticks only when the per-mode usage files are missing)
/// and the cpu controller's cpu.stat.
fn cpu_v1(dirs: &V1Dirs) -> v1::CpuStat {
    let acct = |name: &str| dirs.cpuacct.join(name);
    let mut usage = v1::CpuUsage {
        total: read_u64(&acct("cpuacct.usage"), 0),
        per_cpu: read(&acct("cpuacct.usage_percpu")).map(|s| parse_per_cpu(&s)).unwrap_or_default(),
        ..Default::default()
    };
    match (read(&acct("cpuacct.usage_user")), read(&acct("cpuacct.usage_sys"))) {
        (Some(user), Some(sys)) => {
            usage.user = parse_u64(&user, 0);
            usage.kernel = parse_u64(&sys, 0);
        }
        _ => {
            if let Some(text) = read(&acct("cpuacct.stat")) {
                let (user, kernel) = cpuacct_stat(&text, clock_ticks());
                usage.user = user;
                usage.kernel = kernel;
            }
        }
    }
    let throttling = read(&dirs.cpu.join("cpu.stat")).map(|s| throttle_v1(&s)).unwrap_or_default();
    v1::CpuStat { usage: Some(usage), throttling: Some(throttling) }
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// cpuacct.usage_percpu: nanoseconds per cpu, space separated.
pub fn parse_per_cpu(text: &str) -> Vec<u64> {
    text.split_whitespace().filter_map(|v| v.parse().ok()).collect()
}

/// cpuacct.stat (`user`, `system` in clock ticks) as (user, kernel) nanoseconds.
pub fn cpuacct_stat(text: &str, ticks_per_second: u64) -> (u64, u64) {
    let s = parse_keyed(text);
    let ns = |k: &str| s.get(k).copied().unwrap_or(0).saturating_mul(1_000_000_000 / ticks_per_second.max(1));
    (ns("user"), ns("system"))
}

/// The cpu controller's cpu.stat (v1).
pub fn throttle_v1(text: &str) -> v1::Throttle {
    let s = parse_keyed(text);
    v1::Throttle {
        periods: s.get("nr_periods").copied().unwrap_or(0),
        throttled_periods: s.get("nr_throttled").copied().unwrap_or(0),
        throttled_time: s.get("throttled_time").copied().unwrap_or(0),
    }
}

/// A blkio file: `MAJOR:MINOR OP VALUE` lines (or `MAJOR:MINOR VALUE` for files without
/// an operation); the `Total` line is dropped. `device` names the device of `major:minor`.
pub fn blkio_entries(text: &str, device: &dyn Fn(u64, u64) -> String) -> Vec<v1::BlkIoEntry> {
    text.lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let (dev, op, value) = match fields.as_slice() {
                [dev, op, value] => (*dev, *op, *value),
                [dev, value] => (*dev, "", *value),
                _ => return None,
            };
            let (major, minor) = dev.split_once(':')?;
            let (major, minor) = (major.parse().ok()?, minor.parse().ok()?);
            Some(v1::BlkIoEntry {
                op: op.into(),
                device: device(major, minor),
                major,
                minor,
                value: value.parse().ok()?,
            })
        })
        .collect()
}

/// `/dev/<name>` of a block device from sysfs, or "" when unknown.
fn block_device_name(major: u64, minor: u64) -> String {
    read(Path::new(&format!("/sys/dev/block/{major}:{minor}/uevent")))
        .and_then(|u| u.lines().find_map(|l| l.strip_prefix("DEVNAME=").map(|n| format!("/dev/{n}"))))
        .unwrap_or_default()
}

fn blkio_v1(dir: &Path, device: &dyn Fn(u64, u64) -> String) -> v1::BlkIoStat {
    // The CFQ/BFQ `blkio.io_*` files exist only with those schedulers; the throttle files
    // always do and are what containerd falls back to as well.
    let entries = |name: &str| {
        let own = read(&dir.join(format!("blkio.{name}"))).map(|t| blkio_entries(&t, device)).unwrap_or_default();
        if own.is_empty() {
            read(&dir.join(format!("blkio.throttle.{name}"))).map(|t| blkio_entries(&t, device)).unwrap_or_default()
        } else {
            own
        }
    };
    let only =
        |name: &str| read(&dir.join(format!("blkio.{name}"))).map(|t| blkio_entries(&t, device)).unwrap_or_default();
    v1::BlkIoStat {
        io_service_bytes_recursive: entries("io_service_bytes_recursive"),
        io_serviced_recursive: entries("io_serviced_recursive"),
        io_queued_recursive: only("io_queued_recursive"),
        io_service_time_recursive: only("io_service_time_recursive"),
        io_wait_time_recursive: only("io_wait_time_recursive"),
        io_merged_recursive: only("io_merged_recursive"),
        io_time_recursive: only("time_recursive"),
        sectors_recursive: only("sectors_recursive"),
    }
}

/// The page sizes a hugetlb controller directory has files for (`hugetlb.2MB.<suffix>`).
fn hugetlb_sizes(dir: &Path, suffix: &str) -> Vec<String> {
    let mut sizes: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let size = name.strip_prefix("hugetlb.")?.strip_suffix(suffix)?;
            (!size.contains('.')).then(|| size.to_string())
        })
        .collect();
    sizes.sort();
    sizes
}

fn hugetlb_v1(dir: &Path) -> Vec<v1::HugetlbStat> {
    hugetlb_sizes(dir, ".usage_in_bytes")
        .into_iter()
        .map(|size| {
            let file = |name: &str| dir.join(format!("hugetlb.{size}.{name}"));
            v1::HugetlbStat {
                usage: read_u64(&file("usage_in_bytes"), 0),
                max: read_u64(&file("max_usage_in_bytes"), 0),
                failcnt: read_u64(&file("failcnt"), 0),
                pagesize: size,
            }
        })
        .collect()
}

/// rdma.current / rdma.max: `DEVICE hca_handle=N hca_object=N` lines; `max` is u32::MAX.
pub fn rdma_entries(text: &str) -> Vec<(String, u32, u32)> {
    text.lines()
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let device = fields.next()?.to_string();
            let (mut handles, mut objects) = (0, 0);
            for f in fields {
                let (k, v) = f.split_once('=')?;
                let v = if v == "max" { u32::MAX } else { v.parse().ok()? };
                match k {
                    "hca_handle" => handles = v,
                    "hca_object" => objects = v,
                    _ => {}
                }
            }
            Some((device, handles, objects))
        })
        .collect()
}

fn rdma_v1(dir: &Path) -> Option<v1::RdmaStat> {
    let list = |name: &str| {
        read(&dir.join(name))
            .map(|t| rdma_entries(&t))
            .unwrap_or_default()
            .into_iter()
            .map(|(device, hca_handles, hca_objects)| v1::RdmaEntry { device, hca_handles, hca_objects })
            .collect::<Vec<_>>()
    };
    let (current, limit) = (list("rdma.current"), list("rdma.max"));
    (!current.is_empty() || !limit.is_empty()).then_some(v1::RdmaStat { current, limit })
}

/// pids.current and pids.max (`max` reads as 0: no limit, as containerd reports it).
fn pids(dir: &Path) -> Option<(u64, u64)> {
    let current = read(&dir.join("pids.current"))?;
    Some((parse_u64(&current, 0), read_u64(&dir.join("pids.max"), 0)))
}

/// Cgroup v1 statistics.
pub fn collect_v1(dirs: &V1Dirs) -> std::io::Result<v1::Metrics> {
    if !dirs.memory.is_dir() && !dirs.pids.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("cgroup {}: not found", dirs.memory.display()),
        ));
    }
    let memory = read(&dirs.memory.join("memory.stat")).map(|text| v1::MemoryStat {
        usage: Some(memory_entry_v1(&dirs.memory, "")),
        swap: Some(memory_entry_v1(&dirs.memory, "memsw.")),
        kernel: Some(memory_entry_v1(&dirs.memory, "kmem.")),
        kernel_tcp: Some(memory_entry_v1(&dirs.memory, "kmem.tcp.")),
        ..memory_stat_v1(&text)
    });
    Ok(v1::Metrics {
        hugetlb: hugetlb_v1(&dirs.hugetlb),
        pids: pids(&dirs.pids).map(|(current, limit)| v1::PidsStat { current, limit }),
        cpu: Some(cpu_v1(dirs)),
        memory,
        blkio: Some(blkio_v1(&dirs.blkio, &block_device_name)),
        rdma: rdma_v1(&dirs.rdma),
        network: Vec::new(),
        cgroup_stats: None,
        memory_oom_control: read(&dirs.memory.join("memory.oom_control")).map(|t| oom_control_v1(&t)),
    })
}

/// cpu.stat of cgroup v2 (microseconds).
pub fn cpu_stat_v2(text: &str) -> v2::CpuStat {
    let s = parse_keyed(text);
    let mut m = v2::CpuStat::default();
    fill!(m, s, usage_usec, user_usec, system_usec, nr_periods, nr_throttled, throttled_usec);
    m
}

/// The memory.stat keys of cgroup v2.
pub fn memory_stat_v2(text: &str) -> v2::MemoryStat {
    let s = parse_keyed(text);
    let mut m = v2::MemoryStat::default();
    fill!(
        m,
        s,
        anon,
        file,
        kernel_stack,
        slab,
        sock,
        shmem,
        file_mapped,
        file_dirty,
        file_writeback,
        anon_thp,
        inactive_anon,
        active_anon,
        inactive_file,
        active_file,
        unevictable,
        slab_reclaimable,
        slab_unreclaimable,
        pgfault,
        pgmajfault,
        workingset_refault,
        workingset_activate,
        workingset_nodereclaim,
        pgrefill,
        pgscan,
        pgsteal,
        pgactivate,
        pgdeactivate,
        pglazyfree,
        pglazyfreed,
        thp_fault_alloc,
        thp_collapse_alloc,
    );
    // Since Linux 5.9 the workingset counters are split into anon and file.
    let split = |k: &str| {
        s.get(format!("{k}_anon").as_str()).copied().unwrap_or(0)
            + s.get(format!("{k}_file").as_str()).copied().unwrap_or(0)
    };
    if !s.contains_key("workingset_refault") {
        m.workingset_refault = split("workingset_refault");
    }
    if !s.contains_key("workingset_activate") {
        m.workingset_activate = split("workingset_activate");
    }
    m
}

/// memory.events (also the counters the OOM watcher follows).
pub fn memory_events_v2(text: &str) -> v2::MemoryEvents {
    let s = parse_keyed(text);
    let mut m = v2::MemoryEvents::default();
    fill!(m, s, low, high, max, oom, oom_kill);
    m
}

/// io.stat: `MAJOR:MINOR rbytes=N wbytes=N rios=N wios=N dbytes=N dios=N` lines.
pub fn io_stat_v2(text: &str) -> v2::IoStat {
    let usage = text
        .lines()
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let (major, minor) = fields.next()?.split_once(':')?;
            let mut e = v2::IoEntry { major: major.parse().ok()?, minor: minor.parse().ok()?, ..Default::default() };
            for f in fields {
                let Some((k, v)) = f.split_once('=') else { continue };
                let v = v.parse().unwrap_or(0);
                match k {
                    "rbytes" => e.rbytes = v,
                    "wbytes" => e.wbytes = v,
                    "rios" => e.rios = v,
                    "wios" => e.wios = v,
                    _ => {}
                }
            }
            Some(e)
        })
        .collect();
    v2::IoStat { usage }
}

/// Cgroup v2 statistics of the cgroup directory `dir`.
pub fn collect_v2(dir: &Path) -> std::io::Result<v2::Metrics> {
    if !dir.is_dir() {
        return Err(std::io::Error::new(std::io::ErrorKind::NotFound, format!("cgroup {}: not found", dir.display())));
    }
    let file = |name: &str| dir.join(name);
    let memory = read(&file("memory.stat")).map(|text| v2::MemoryStat {
        usage: read_u64(&file("memory.current"), 0),
        usage_limit: read_u64(&file("memory.max"), u64::MAX),
        swap_usage: read_u64(&file("memory.swap.current"), 0),
        swap_limit: read_u64(&file("memory.swap.max"), u64::MAX),
        max_usage: read_u64(&file("memory.peak"), 0),
        swap_max_usage: read_u64(&file("memory.swap.peak"), 0),
        ..memory_stat_v2(&text)
    });
    let hugetlb = hugetlb_sizes(dir, ".current")
        .into_iter()
        .map(|size| v2::HugeTlbStat {
            current: read_u64(&file(&format!("hugetlb.{size}.current")), 0),
            max: read_u64(&file(&format!("hugetlb.{size}.max")), u64::MAX),
            pagesize: size,
        })
        .collect();
    let rdma_list = |name: &str| {
        read(&file(name))
            .map(|t| rdma_entries(&t))
            .unwrap_or_default()
            .into_iter()
            .map(|(device, hca_handles, hca_objects)| v2::RdmaEntry { device, hca_handles, hca_objects })
            .collect::<Vec<_>>()
    };
    let (current, limit) = (rdma_list("rdma.current"), rdma_list("rdma.max"));
    Ok(v2::Metrics {
        pids: pids(dir).map(|(current, limit)| v2::PidsStat { current, limit }),
        cpu: read(&file("cpu.stat")).map(|t| cpu_stat_v2(&t)),
        memory,
        rdma: (!current.is_empty() || !limit.is_empty()).then_some(v2::RdmaStat { current, limit }),
        io: read(&file("io.stat")).map(|t| io_stat_v2(&t)),
        hugetlb,
        memory_events: read(&file("memory.events")).map(|t| memory_events_v2(&t)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory removed on drop.
    struct Scratch(PathBuf);
    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("berth-shim-metrics-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
        fn write(&self, rel: &str, text: &str) {
            let path = self.0.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const MEMORY_STAT_V1: &str = "cache 8192\nrss 1052672\nrss_huge 0\nshmem 0\nmapped_file 4096\ndirty 0\n\
        writeback 0\nswap 0\npgpgin 612\npgpgout 354\npgfault 1090\npgmajfault 1\ninactive_anon 1048576\n\
        active_anon 4096\ninactive_file 8192\nactive_file 0\nunevictable 0\n\
        hierarchical_memory_limit 33554432\nhierarchical_memsw_limit 67108864\ntotal_cache 8192\n\
        total_rss 1052672\ntotal_rss_huge 0\ntotal_shmem 0\ntotal_mapped_file 4096\ntotal_dirty 0\n\
        total_writeback 0\ntotal_swap 0\ntotal_pgpgin 700\ntotal_pgpgout 400\ntotal_pgfault 1200\n\
        total_pgmajfault 2\ntotal_inactive_anon 1048576\ntotal_active_anon 4096\ntotal_inactive_file 8192\n\
        total_active_file 0\ntotal_unevictable 0\n";

    #[test]
    fn v1_memory_stat_maps_kernel_names_to_fields() {
        let m = memory_stat_v1(MEMORY_STAT_V1);
        assert_eq!((m.cache, m.rss, m.mapped_file), (8192, 1052672, 4096));
        assert_eq!((m.pg_pg_in, m.pg_pg_out, m.pg_fault, m.pg_maj_fault), (612, 354, 1090, 1));
        assert_eq!((m.total_pg_pg_in, m.total_pg_pg_out, m.total_pg_fault, m.total_pg_maj_fault), (700, 400, 1200, 2));
        assert_eq!((m.hierarchical_memory_limit, m.hierarchical_swap_limit), (33554432, 67108864));
        assert_eq!((m.inactive_anon, m.total_inactive_anon, m.total_cache), (1048576, 1048576, 8192));
    }

    #[test]
    fn v1_cpu_files() {
        assert_eq!(parse_per_cpu("123 456 0 \n"), vec![123, 456, 0]);
        assert_eq!(cpuacct_stat("user 12\nsystem 3\n", 100), (120_000_000, 30_000_000));
        let t = throttle_v1("nr_periods 10\nnr_throttled 4\nthrottled_time 5000\nnr_bursts 0\nburst_time 0\n");
        assert_eq!((t.periods, t.throttled_periods, t.throttled_time), (10, 4, 5000));
    }

    #[test]
    fn v1_blkio_lines_with_and_without_operation() {
        let name = |major, minor| format!("/dev/test{major}-{minor}");
        let text =
            "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Async 12288\n8:0 Discard 0\n8:0 Total 12288\nTotal 12288\n";
        let e = blkio_entries(text, &name);
        assert_eq!(e.len(), 6);
        assert_eq!((e[0].op.as_str(), e[0].major, e[0].minor, e[0].value), ("Read", 8, 0, 4096));
        assert_eq!(e[1].device, "/dev/test8-0");
        let e = blkio_entries("253:1 77\n", &name);
        assert_eq!((e[0].op.as_str(), e[0].minor, e[0].value), ("", 1, 77));
    }

    #[test]
    fn v1_oom_control_and_rdma() {
        let o = oom_control_v1("oom_kill_disable 0\nunder_oom 1\noom_kill 2\n");
        assert_eq!((o.oom_kill_disable, o.under_oom, o.oom_kill), (0, 1, 2));
        let r = rdma_entries("mlx4_0 hca_handle=2 hca_object=2000\nocrdma1 hca_handle=3 hca_object=max\n");
        assert_eq!(r, vec![("mlx4_0".into(), 2, 2000), ("ocrdma1".into(), 3, u32::MAX)]);
    }

    #[test]
    fn v1_collect_reads_every_controller() {
        let s = Scratch::new("v1");
        let c = "berth/default/web";
        s.write(&format!("memory/{c}/memory.stat"), MEMORY_STAT_V1);
        s.write(&format!("memory/{c}/memory.limit_in_bytes"), "33554432\n");
        s.write(&format!("memory/{c}/memory.usage_in_bytes"), "1069056\n");
        s.write(&format!("memory/{c}/memory.max_usage_in_bytes"), "2000000\n");
        s.write(&format!("memory/{c}/memory.failcnt"), "3\n");
        s.write(&format!("memory/{c}/memory.memsw.limit_in_bytes"), "67108864\n");
        s.write(&format!("memory/{c}/memory.kmem.usage_in_bytes"), "65536\n");
        s.write(&format!("memory/{c}/memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n");
        s.write(&format!("cpuacct/{c}/cpuacct.usage"), "5000000\n");
        s.write(&format!("cpuacct/{c}/cpuacct.usage_percpu"), "3000000 2000000 \n");
        s.write(&format!("cpuacct/{c}/cpuacct.usage_user"), "4000000\n");
        s.write(&format!("cpuacct/{c}/cpuacct.usage_sys"), "1000000\n");
        s.write(&format!("cpu/{c}/cpu.stat"), "nr_periods 0\nnr_throttled 0\nthrottled_time 0\n");
        s.write(&format!("pids/{c}/pids.current"), "2\n");
        s.write(&format!("pids/{c}/pids.max"), "max\n");
        s.write(&format!("blkio/{c}/blkio.throttle.io_service_bytes_recursive"), "8:0 Read 4096\nTotal 4096\n");
        s.write(&format!("hugetlb/{c}/hugetlb.2MB.usage_in_bytes"), "2097152\n");
        s.write(&format!("hugetlb/{c}/hugetlb.2MB.max_usage_in_bytes"), "4194304\n");
        s.write(&format!("hugetlb/{c}/hugetlb.2MB.failcnt"), "0\n");
        s.write(&format!("hugetlb/{c}/hugetlb.2MB.limit_in_bytes"), "9223372036854771712\n");

        let m = collect_v1(&V1Dirs::under(&s.0, c)).unwrap();
        let mem = m.memory.unwrap();
        let usage = mem.usage.unwrap();
        assert_eq!((usage.limit, usage.usage, usage.max, usage.failcnt), (33554432, 1069056, 2000000, 3));
        assert_eq!(mem.swap.unwrap().limit, 67108864);
        assert_eq!(mem.kernel.unwrap().usage, 65536);
        assert_eq!(mem.kernel_tcp.unwrap().usage, 0, "missing files read as zero");
        assert_eq!(mem.total_rss, 1052672);
        let cpu = m.cpu.unwrap().usage.unwrap();
        assert_eq!((cpu.total, cpu.user, cpu.kernel, cpu.per_cpu), (5000000, 4000000, 1000000, vec![3000000, 2000000]));
        let pids = m.pids.unwrap();
        assert_eq!((pids.current, pids.limit), (2, 0));
        let blkio = m.blkio.unwrap();
        assert_eq!(blkio.io_service_bytes_recursive.len(), 1, "throttle fallback");
        assert_eq!(m.hugetlb.len(), 1);
        assert_eq!((m.hugetlb[0].pagesize.as_str(), m.hugetlb[0].usage, m.hugetlb[0].max), ("2MB", 2097152, 4194304));
        assert_eq!(m.memory_oom_control.unwrap().oom_kill, 1);
        assert!(m.rdma.is_none());

        assert!(collect_v1(&V1Dirs::under(&s.0, "berth/default/gone")).is_err());
    }

    const MEMORY_STAT_V2: &str = "anon 1048576\nfile 8192\nkernel 180224\nkernel_stack 16384\npagetables 36864\n\
        sec_pagetables 0\npercpu 0\nsock 0\nvmalloc 0\nshmem 0\nfile_mapped 4096\nfile_dirty 0\n\
        file_writeback 0\nswapcached 0\nanon_thp 0\nfile_thp 0\nshmem_thp 0\ninactive_anon 1044480\n\
        active_anon 4096\ninactive_file 8192\nactive_file 0\nunevictable 0\nslab_reclaimable 20000\n\
        slab_unreclaimable 30000\nslab 50000\nworkingset_refault_anon 3\nworkingset_refault_file 4\n\
        workingset_activate_anon 1\nworkingset_activate_file 2\nworkingset_restore_anon 0\n\
        workingset_restore_file 0\nworkingset_nodereclaim 0\npgscan 10\npgsteal 9\npgrefill 8\n\
        pgactivate 7\npgdeactivate 6\npglazyfree 0\npglazyfreed 0\npgfault 1500\npgmajfault 2\n\
        thp_fault_alloc 0\nthp_collapse_alloc 0\n";

    #[test]
    fn v2_memory_stat_cpu_stat_events_and_io_stat() {
        let m = memory_stat_v2(MEMORY_STAT_V2);
        assert_eq!((m.anon, m.file, m.kernel_stack, m.slab, m.file_mapped), (1048576, 8192, 16384, 50000, 4096));
        assert_eq!((m.pgfault, m.pgmajfault, m.pgscan, m.pgsteal, m.pgrefill), (1500, 2, 10, 9, 8));
        assert_eq!((m.workingset_refault, m.workingset_activate), (7, 3), "split counters are summed");
        let c = cpu_stat_v2(
            "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\nnr_periods 4\nnr_throttled 1\nthrottled_usec 90\n",
        );
        assert_eq!(
            (c.usage_usec, c.user_usec, c.system_usec, c.nr_periods, c.nr_throttled, c.throttled_usec),
            (2500, 2000, 500, 4, 1, 90)
        );
        let e = memory_events_v2("low 0\nhigh 5\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n");
        assert_eq!((e.low, e.high, e.max, e.oom, e.oom_kill), (0, 5, 12, 2, 1));
        let io = io_stat_v2(
            "8:16 rbytes=1459200 wbytes=314773504 rios=192 wios=353 dbytes=0 dios=0\n\
             253:0 rbytes=4096 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n",
        );
        assert_eq!(io.usage.len(), 2);
        let d = &io.usage[0];
        assert_eq!((d.major, d.minor, d.rbytes, d.wbytes, d.rios, d.wios), (8, 16, 1459200, 314773504, 192, 353));
        assert_eq!((io.usage[1].major, io.usage[1].rbytes), (253, 4096));
    }

    #[test]
    fn v2_collect_reads_the_unified_directory() {
        let s = Scratch::new("v2");
        s.write("c/memory.stat", MEMORY_STAT_V2);
        s.write("c/memory.current", "1069056\n");
        s.write("c/memory.max", "33554432\n");
        s.write("c/memory.swap.current", "0\n");
        s.write("c/memory.swap.max", "max\n");
        s.write("c/memory.peak", "2000000\n");
        s.write("c/memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n");
        s.write("c/cpu.stat", "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n");
        s.write("c/pids.current", "3\n");
        s.write("c/pids.max", "64\n");
        s.write("c/io.stat", "8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n");
        s.write("c/hugetlb.2MB.current", "0\n");
        s.write("c/hugetlb.2MB.max", "max\n");
        s.write("c/hugetlb.2MB.events", "max 0\n");
        s.write("c/rdma.max", "mlx5_0 hca_handle=10 hca_object=max\n");

        let m = collect_v2(&s.0.join("c")).unwrap();
        let mem = m.memory.unwrap();
        assert_eq!((mem.usage, mem.usage_limit, mem.swap_usage, mem.swap_limit), (1069056, 33554432, 0, u64::MAX));
        assert_eq!((mem.max_usage, mem.swap_max_usage, mem.anon), (2000000, 0, 1048576));
        assert_eq!(m.cpu.unwrap().usage_usec, 2500);
        let pids = m.pids.unwrap();
        assert_eq!((pids.current, pids.limit), (3, 64));
        assert_eq!(m.io.unwrap().usage[0].wios, 2);
        assert_eq!(m.hugetlb.len(), 1);
        assert_eq!((m.hugetlb[0].pagesize.as_str(), m.hugetlb[0].max), ("2MB", u64::MAX));
        assert_eq!(m.memory_events.unwrap().oom_kill, 1);
        let rdma = m.rdma.unwrap();
        assert_eq!((rdma.limit[0].hca_handles, rdma.limit[0].hca_objects), (10, u32::MAX));
        assert!(rdma.current.is_empty());

        assert!(collect_v2(&s.0.join("gone")).is_err());
    }
}
