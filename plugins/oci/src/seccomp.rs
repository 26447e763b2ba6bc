//! Docker's default seccomp profile as an OCI `linux.seccomp` object.
//!
//! The profile is an allow-list: anything not listed fails with `EPERM`. It follows moby's
//! `default.json` (moby/profiles `seccomp/default.json`, the 2025 revision: io_uring removed,
//! kernel keyring calls allowed, syscalls up to Linux 6.13, `lsm_*` behind `CAP_SYS_ADMIN`,
//! `socket(AF_VSOCK)` refused) and evaluates it the way moby does when it writes a container's
//! spec:
//!
//! - `architectures` come from moby's arch map for the host: x86_64 → X86_64, X86, X32;
//!   aarch64 → AARCH64, ARM; s390x → S390X, S390; riscv64 → RISCV64; others: native only.
//! - A rule restricted to some architectures is kept only when the host is one of them.
//! - A rule that needs capabilities is kept only when the container has all of them; a rule
//!   excluded by capabilities is dropped when the container has any of them. So
//!   `CAP_SYS_ADMIN` brings `mount`, `unshare`, `setns`, unrestricted `clone` and `clone3`, and
//!   without it `clone` may not create namespaces and `clone3` fails with `ENOSYS` (glibc
//!   then falls back to `clone`).
//! - A rule with a minimum kernel is kept only on such a kernel (`ptrace` and
//!   `process_vm_*` for everyone from 4.8, where seccomp can no longer be bypassed with them).
//!
//! Names that the runtime's libseccomp does not know are kept in the profile: moby does the
//! same, and youki's libcontainer skips an unknown name with a warning instead of failing (see
//! `libcontainer::seccomp::initialize_seccomp`). Which names are unknown depends on the
//! libseccomp the shim runs with, not on anything known when the spec is written, so the
//! profile stays whole: on Debian bookworm (libseccomp 2.5.4, table up to Linux 6.7) the calls
//! of Linux 6.8 and later (`listmount`, `statmount`, `lsm_*`, `mseal`, `uretprobe`,
//! `*xattrat`, `riscv_hwprobe`) simply stay refused with `EPERM`, as under Docker there.
//!
//! Argument rules use runc's reading of the OCI fields, which libseccomp defines: for
//! `SCMP_CMP_MASKED_EQ`, `value` is the mask and `valueTwo` the value the masked argument must
//! equal. youki's libcontainer 0.7 reads them the other way round (it passes `valueTwo` as the
//! mask), and libseccomp then reduces `clone`'s rule to "always true": clone with namespace
//! flags gets through. [`masked_eq_for_libcontainer`] rewrites a profile into libcontainer's
//! reading; a runtime built on libcontainer applies it to the bundle's spec, whoever wrote it.

use serde_json::{json, Map, Value};

/// The errno of refused calls (`EPERM`).
const EPERM: u32 = 1;
/// The errno of `clone3` without `CAP_SYS_ADMIN`, so that libc falls back to `clone`.
const ENOSYS: u32 = 38;
/// `AF_VSOCK`: `socket` for this family is refused.
const AF_VSOCK: u64 = 40;

/// The `clone` flags that create namespaces: NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER,
/// NEWPID, NEWNET (2114060288).
pub const CLONE_NAMESPACE_FLAGS: u64 =
    0x0002_0000 | 0x0200_0000 | 0x0400_0000 | 0x0800_0000 | 0x1000_0000 | 0x2000_0000 | 0x4000_0000;

/// `personality(2)` personas a container may switch to: PER_LINUX, PER_LINUX32, UNAME26,
/// PER_LINUX32|UNAME26, and 0xffffffff (query the current persona).
pub const PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// What a rule does to a matching call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Allow,
    Errno(u32),
}

/// One argument comparison (`linux.seccomp.syscalls[].args[]`).
#[derive(Clone, Copy, Debug)]
struct Arg {
    index: u32,
    value: u64,
    value_two: u64,
    op: &'static str,
}

/// One rule of the profile and the conditions under which it applies.
#[derive(Clone, Copy, Debug)]
struct Rule {
    names: &'static [&'static str],
    action: Action,
    args: &'static [Arg],
    /// Kept only on these host architectures (Go names, as moby writes them).
    only_arches: &'static [&'static str],
    /// Dropped on these host architectures.
    not_arches: &'static [&'static str],
    /// Kept only when the container has all these capabilities.
    needs_caps: &'static [&'static str],
    /// Dropped when the container has any of these capabilities.
    unless_caps: &'static [&'static str],
    /// Kept only on a kernel at least this (major, minor).
    min_kernel: Option<(u32, u32)>,
}

const ALLOW: Rule = Rule {
    names: &[],
    action: Action::Allow,
    args: &[],
    only_arches: &[],
    not_arches: &[],
    needs_caps: &[],
    unless_caps: &[],
    min_kernel: None,
};

const fn arg0_eq(value: u64) -> Arg {
    Arg { index: 0, value, value_two: 0, op: "SCMP_CMP_EQ" }
}

/// Allowed for every container: ordinary file, memory, process, signal, time, socket and IPC
/// calls, including the 32-bit and time64 variants of the compat architectures.
#[rustfmt::skip]
const ALWAYS_ALLOWED: &[&str] = &[
    "accept", "accept4", "access", "add_key", "adjtimex", "alarm", "bind", "brk", "cachestat",
    "capget", "capset", "chdir", "chmod", "chown", "chown32",
    "clock_adjtime", "clock_adjtime64", "clock_getres", "clock_getres_time64", "clock_gettime",
    "clock_gettime64", "clock_nanosleep", "clock_nanosleep_time64",
    "close", "close_range", "connect", "copy_file_range", "creat", "dup", "dup2", "dup3",
    "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait", "epoll_pwait2",
    "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "execve", "execveat", "exit", "exit_group",
    "faccessat", "faccessat2", "fadvise64", "fadvise64_64", "fallocate", "fanotify_mark",
    "fchdir", "fchmod", "fchmodat", "fchmodat2", "fchown", "fchown32", "fchownat", "fcntl", "fcntl64",
    "fdatasync", "fgetxattr", "flistxattr", "flock", "fork", "fremovexattr", "fsetxattr",
    "fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate", "ftruncate64",
    "futex", "futex_requeue", "futex_time64", "futex_wait", "futex_waitv", "futex_wake", "futimesat",
    "getcpu", "getcwd", "getdents", "getdents64", "getegid", "getegid32", "geteuid", "geteuid32",
    "getgid", "getgid32", "getgroups", "getgroups32", "getitimer", "getpeername", "getpgid", "getpgrp",
    "getpid", "getppid", "getpriority", "getrandom", "getresgid", "getresgid32", "getresuid",
    "getresuid32", "getrlimit", "get_robust_list", "getrusage", "getsid", "getsockname", "getsockopt",
    "get_thread_area", "gettid", "gettimeofday", "getuid", "getuid32", "getxattr", "getxattrat",
    "inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch",
    "io_cancel", "ioctl", "io_destroy", "io_getevents", "io_pgetevents", "io_pgetevents_time64",
    "ioprio_get", "ioprio_set", "io_setup", "io_submit", "ipc", "keyctl", "kill",
    "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self",
    "lchown", "lchown32", "lgetxattr", "link", "linkat", "listen", "listmount", "listxattr",
    "listxattrat", "llistxattr", "_llseek", "lremovexattr", "lseek", "lsetxattr", "lstat", "lstat64",
    "madvise", "map_shadow_stack", "membarrier", "memfd_create", "memfd_secret", "mincore",
    "mkdir", "mkdirat", "mknod", "mknodat", "mlock", "mlock2", "mlockall", "mmap", "mmap2", "mprotect",
    "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive", "mq_timedreceive_time64",
    "mq_timedsend", "mq_timedsend_time64", "mq_unlink", "mremap", "mseal",
    "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock", "munlockall", "munmap",
    "name_to_handle_at", "nanosleep", "newfstatat", "_newselect", "open", "openat", "openat2",
    "pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2", "pkey_alloc", "pkey_free",
    "pkey_mprotect", "poll", "ppoll", "ppoll_time64", "prctl", "pread64", "preadv", "preadv2",
    "prlimit64", "process_mrelease", "pselect6", "pselect6_time64", "pwrite64", "pwritev", "pwritev2",
    "read", "readahead", "readlink", "readlinkat", "readv", "recv", "recvfrom", "recvmmsg",
    "recvmmsg_time64", "recvmsg", "remap_file_pages", "removexattr", "removexattrat",
    "rename", "renameat", "renameat2", "request_key", "restart_syscall", "riscv_hwprobe", "rmdir",
    "rseq", "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn",
    "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo",
    "sched_getaffinity", "sched_getattr", "sched_getparam", "sched_get_priority_max",
    "sched_get_priority_min", "sched_getscheduler", "sched_rr_get_interval",
    "sched_rr_get_interval_time64", "sched_setaffinity", "sched_setattr", "sched_setparam",
    "sched_setscheduler", "sched_yield", "seccomp", "select", "semctl", "semget", "semop",
    "semtimedop", "semtimedop_time64", "send", "sendfile", "sendfile64", "sendmmsg", "sendmsg",
    "sendto", "setfsgid", "setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32", "setgroups",
    "setgroups32", "setitimer", "setpgid", "setpriority", "setregid", "setregid32", "setresgid",
    "setresgid32", "setresuid", "setresuid32", "setreuid", "setreuid32", "setrlimit",
    "set_robust_list", "setsid", "setsockopt", "set_thread_area", "set_tid_address", "setuid",
    "setuid32", "setxattr", "setxattrat", "shmat", "shmctl", "shmdt", "shmget", "shutdown",
    "sigaltstack", "signalfd", "signalfd4", "sigprocmask", "sigreturn", "socketcall", "socketpair",
    "splice", "stat", "stat64", "statfs", "statfs64", "statmount", "statx", "symlink", "symlinkat",
    "sync", "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill", "time",
    "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime", "timer_gettime64",
    "timer_settime", "timer_settime64", "timerfd_create", "timerfd_gettime", "timerfd_gettime64",
    "timerfd_settime", "timerfd_settime64", "times", "tkill", "truncate", "truncate64", "ugetrlimit",
    "umask", "uname", "unlink", "unlinkat", "uretprobe", "utime", "utimensat", "utimensat_time64",
    "utimes", "vfork", "vmsplice", "wait4", "waitid", "waitpid", "write", "writev",
];

/// The profile after [`ALWAYS_ALLOWED`], in moby's order.
const RULES: &[Rule] = &[
    Rule { names: &["process_vm_readv", "process_vm_writev", "ptrace"], min_kernel: Some((4, 8)), ..ALLOW },
    Rule { names: &["socket"], args: &[Arg { index: 0, value: AF_VSOCK, value_two: 0, op: "SCMP_CMP_NE" }], ..ALLOW },
    Rule { names: &["personality"], args: &[arg0_eq(PERSONALITIES[0])], ..ALLOW },
    Rule { names: &["personality"], args: &[arg0_eq(PERSONALITIES[1])], ..ALLOW },
    Rule { names: &["personality"], args: &[arg0_eq(PERSONALITIES[2])], ..ALLOW },
    Rule { names: &["personality"], args: &[arg0_eq(PERSONALITIES[3])], ..ALLOW },
    Rule { names: &["personality"], args: &[arg0_eq(PERSONALITIES[4])], ..ALLOW },
    Rule { names: &["sync_file_range2", "swapcontext"], only_arches: &["ppc64le"], ..ALLOW },
    Rule {
        names: &["arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint", "cacheflush", "set_tls"],
        only_arches: &["arm", "arm64"],
        ..ALLOW
    },
    Rule { names: &["arch_prctl"], only_arches: &["amd64", "x32"], ..ALLOW },
    Rule { names: &["modify_ldt"], only_arches: &["amd64", "x32", "x86"], ..ALLOW },
    Rule {
        names: &["s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr"],
        only_arches: &["s390", "s390x"],
        ..ALLOW
    },
    Rule { names: &["riscv_flush_icache"], only_arches: &["riscv64"], ..ALLOW },
    Rule { names: &["open_by_handle_at"], needs_caps: &["CAP_DAC_READ_SEARCH"], ..ALLOW },
    Rule {
        names: &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "lsm_get_self_attr",
            "lsm_list_modules",
            "lsm_set_self_attr",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
        needs_caps: &["CAP_SYS_ADMIN"],
        ..ALLOW
    },
    // clone without namespace flags: (flags & CLONE_NAMESPACE_FLAGS) == 0. On s390 the flags
    // are the second argument.
    Rule {
        names: &["clone"],
        args: &[Arg { index: 0, value: CLONE_NAMESPACE_FLAGS, value_two: 0, op: "SCMP_CMP_MASKED_EQ" }],
        unless_caps: &["CAP_SYS_ADMIN"],
        not_arches: &["s390", "s390x"],
        ..ALLOW
    },
    Rule {
        names: &["clone"],
        args: &[Arg { index: 1, value: CLONE_NAMESPACE_FLAGS, value_two: 0, op: "SCMP_CMP_MASKED_EQ" }],
        only_arches: &["s390", "s390x"],
        unless_caps: &["CAP_SYS_ADMIN"],
        ..ALLOW
    },
    // clone3 passes its flags in memory, where seccomp cannot see them.
    Rule { names: &["clone3"], action: Action::Errno(ENOSYS), unless_caps: &["CAP_SYS_ADMIN"], ..ALLOW },
    Rule { names: &["reboot"], needs_caps: &["CAP_SYS_BOOT"], ..ALLOW },
    Rule { names: &["chroot"], needs_caps: &["CAP_SYS_CHROOT"], ..ALLOW },
    Rule { names: &["delete_module", "init_module", "finit_module"], needs_caps: &["CAP_SYS_MODULE"], ..ALLOW },
    Rule { names: &["acct"], needs_caps: &["CAP_SYS_PACCT"], ..ALLOW },
    Rule {
        names: &["kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev", "ptrace"],
        needs_caps: &["CAP_SYS_PTRACE"],
        ..ALLOW
    },
    Rule { names: &["iopl", "ioperm"], needs_caps: &["CAP_SYS_RAWIO"], ..ALLOW },
    Rule {
        names: &["settimeofday", "stime", "clock_settime", "clock_settime64"],
        needs_caps: &["CAP_SYS_TIME"],
        ..ALLOW
    },
    Rule { names: &["vhangup"], needs_caps: &["CAP_SYS_TTY_CONFIG"], ..ALLOW },
    Rule {
        names: &["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"],
        needs_caps: &["CAP_SYS_NICE"],
        ..ALLOW
    },
    Rule { names: &["syslog"], needs_caps: &["CAP_SYSLOG"], ..ALLOW },
    Rule { names: &["bpf"], needs_caps: &["CAP_BPF"], ..ALLOW },
    Rule { names: &["perf_event_open"], needs_caps: &["CAP_PERFMON"], ..ALLOW },
];

/// The host a profile is generated for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// Architecture, as Go names it (`amd64`, `arm64`, `s390x`, `riscv64`, `ppc64le`, ...).
    pub arch: String,
    /// Kernel (major, minor); `None` when unknown, which counts as new enough.
    pub kernel: Option<(u32, u32)>,
}

impl Host {
    /// This machine: the architecture berth was built for and the running kernel.
    pub fn current() -> Host {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            other => other,
        };
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        Host { arch: arch.to_string(), kernel: parse_kernel(&release) }
    }

    /// `linux.seccomp.architectures` for this host (moby's arch map).
    fn architectures(&self) -> &'static [&'static str] {
        match self.arch.as_str() {
            "amd64" => &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "arm64" => &["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
            "s390x" => &["SCMP_ARCH_S390X", "SCMP_ARCH_S390"],
            "riscv64" => &["SCMP_ARCH_RISCV64"],
            _ => &[],
        }
    }
}

/// "6.1.0-18-amd64" → (6, 1).
fn parse_kernel(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Docker's default seccomp profile for a container with capabilities `caps` (names such as
/// `CAP_SYS_ADMIN`) on this host, as the value of the spec's `linux.seccomp`.
///
/// ```
/// let p = berth_oci::seccomp::default_profile(berth_oci::DEFAULT_CAPS);
/// assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
/// ```
pub fn default_profile(caps: &[&str]) -> Value {
    profile_for(&Host::current(), caps)
}

/// [`default_profile`] for a given host.
pub fn profile_for(host: &Host, caps: &[&str]) -> Value {
    let mut syscalls = vec![rule_json(&Rule { names: ALWAYS_ALLOWED, ..ALLOW })];
    syscalls.extend(RULES.iter().filter(|r| applies(r, host, caps)).map(rule_json));
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": host.architectures(),
        "syscalls": syscalls,
    })
}

/// Swaps `value` and `valueTwo` of every `SCMP_CMP_MASKED_EQ` argument of an OCI
/// `linux.seccomp` object, turning runc's reading (`value` is the mask) into youki's
/// libcontainer 0.7 reading (`valueTwo` is the mask) or back. Returns how many arguments
/// changed.
///
/// ```
/// let mut p = berth_oci::seccomp::default_profile(berth_oci::DEFAULT_CAPS);
/// assert_eq!(berth_oci::seccomp::masked_eq_for_libcontainer(&mut p), 1); // clone's rule
/// ```
pub fn masked_eq_for_libcontainer(seccomp: &mut Value) -> usize {
    let mut changed = 0;
    let rules = seccomp.get_mut("syscalls").and_then(Value::as_array_mut);
    for rule in rules.into_iter().flatten() {
        let args = rule.get_mut("args").and_then(Value::as_array_mut);
        for arg in args.into_iter().flatten().filter(|a| a["op"] == "SCMP_CMP_MASKED_EQ") {
            let Some(arg) = arg.as_object_mut() else { continue };
            let value = arg.remove("value").unwrap_or(json!(0));
            let two = arg.remove("valueTwo").unwrap_or(json!(0));
            arg.insert("value".into(), two);
            arg.insert("valueTwo".into(), value);
            changed += 1;
        }
    }
    changed
}

fn applies(rule: &Rule, host: &Host, caps: &[&str]) -> bool {
    let arch = host.arch.as_str();
    if !rule.only_arches.is_empty() && !rule.only_arches.contains(&arch) {
        return false;
    }
    if rule.not_arches.contains(&arch) {
        return false;
    }
    if !rule.needs_caps.iter().all(|c| caps.contains(c)) {
        return false;
    }
    if rule.unless_caps.iter().any(|c| caps.contains(c)) {
        return false;
    }
    match (rule.min_kernel, host.kernel) {
        (Some(min), Some(kernel)) => kernel >= min,
        _ => true,
    }
}

fn rule_json(rule: &Rule) -> Value {
    let mut out = Map::new();
    out.insert("names".into(), json!(rule.names));
    match rule.action {
        Action::Allow => {
            out.insert("action".into(), json!("SCMP_ACT_ALLOW"));
        }
        Action::Errno(errno) => {
            out.insert("action".into(), json!("SCMP_ACT_ERRNO"));
            out.insert("errnoRet".into(), json!(errno));
        }
    }
    if !rule.args.is_empty() {
        let args: Vec<Value> = rule
            .args
            .iter()
            .map(|a| json!({"index": a.index, "value": a.value, "valueTwo": a.value_two, "op": a.op}))
            .collect();
        out.insert("args".into(), Value::Array(args));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DEFAULT_CAPS;

    fn amd64() -> Host {
        Host { arch: "amd64".into(), kernel: Some((6, 1)) }
    }

    /// The unconditional allow rules that name `name`.
    fn allowed(p: &Value, name: &str) -> bool {
        p["syscalls"].as_array().unwrap().iter().any(|r| {
            r["action"] == "SCMP_ACT_ALLOW"
                && r.get("args").is_none()
                && r["names"].as_array().unwrap().iter().any(|n| n == name)
        })
    }

    /// Every rule that names `name`.
    fn rules<'a>(p: &'a Value, name: &str) -> Vec<&'a Value> {
        p["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["names"].as_array().unwrap().iter().any(|n| n == name))
            .collect()
    }

    #[test]
    fn allow_list_that_refuses_with_eperm() {
        let p = profile_for(&amd64(), DEFAULT_CAPS);
        assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(p["defaultErrnoRet"], 1);
        assert_eq!(p["architectures"], json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]));
        for name in ["read", "write", "execve", "openat", "epoll_wait", "futex", "keyctl", "arch_prctl", "ptrace"] {
            assert!(allowed(&p, name), "{name} should be allowed");
        }
        // io_uring left the allow-list in 2023 (moby#46762); the rest are privileged.
        for name in [
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "mount",
            "umount2",
            "unshare",
            "setns",
            "bpf",
            "kexec_load",
            "init_module",
            "reboot",
            "swapon",
            "pivot_root",
            "userfaultfd",
            "open_by_handle_at",
            "clock_settime",
            "syslog",
            "set_tls",
        ] {
            assert!(!allowed(&p, name), "{name} should be refused");
        }
        // CAP_SYS_CHROOT is one of Docker's default capabilities.
        assert!(allowed(&p, "chroot"));
        // No name twice in the unconditional allow-list.
        let mut names = ALWAYS_ALLOWED.to_vec();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ALWAYS_ALLOWED.len());
    }

    #[test]
    fn clone_without_sys_admin_may_not_create_namespaces() {
        let p = profile_for(&amd64(), DEFAULT_CAPS);
        let clone = rules(&p, "clone");
        assert_eq!(clone.len(), 1, "{clone:?}");
        assert_eq!(
            clone[0]["args"],
            json!([{"index": 0, "value": 2114060288u64, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}])
        );
        assert_eq!(CLONE_NAMESPACE_FLAGS, 2114060288);
        let clone3 = rules(&p, "clone3");
        assert_eq!(clone3.len(), 1);
        assert_eq!((&clone3[0]["action"], &clone3[0]["errnoRet"]), (&json!("SCMP_ACT_ERRNO"), &json!(38)));
        // s390x has the flags in the second argument.
        let s390 = profile_for(&Host { arch: "s390x".into(), kernel: Some((6, 1)) }, DEFAULT_CAPS);
        assert_eq!(rules(&s390, "clone")[0]["args"][0]["index"], 1);
        assert_eq!(s390["architectures"], json!(["SCMP_ARCH_S390X", "SCMP_ARCH_S390"]));
    }

    #[test]
    fn sys_admin_brings_mount_unshare_setns_and_free_clone() {
        let mut caps = DEFAULT_CAPS.to_vec();
        caps.push("CAP_SYS_ADMIN");
        let p = profile_for(&amd64(), &caps);
        for name in ["mount", "umount2", "unshare", "setns", "clone", "clone3", "sethostname", "bpf"] {
            assert!(allowed(&p, name), "{name}");
        }
        assert!(rules(&p, "clone").iter().all(|r| r.get("args").is_none()));
        assert!(rules(&p, "clone3").iter().all(|r| r["action"] == "SCMP_ACT_ALLOW"));
    }

    #[test]
    fn capability_groups() {
        let with = |cap: &str| {
            let mut caps = DEFAULT_CAPS.to_vec();
            caps.push(cap);
            profile_for(&amd64(), &caps)
        };
        let base = profile_for(&amd64(), DEFAULT_CAPS);
        for (cap, names) in [
            ("CAP_SYS_BOOT", &["reboot"][..]),
            ("CAP_SYS_MODULE", &["init_module", "finit_module", "delete_module"]),
            ("CAP_SYS_PACCT", &["acct"]),
            ("CAP_SYS_PTRACE", &["kcmp", "pidfd_getfd", "process_madvise"]),
            ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
            ("CAP_SYS_TIME", &["settimeofday", "clock_settime", "clock_settime64"]),
            ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
            ("CAP_SYS_NICE", &["mbind", "set_mempolicy", "get_mempolicy", "set_mempolicy_home_node"]),
            ("CAP_SYSLOG", &["syslog"]),
            ("CAP_BPF", &["bpf"]),
            ("CAP_PERFMON", &["perf_event_open"]),
            ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
        ] {
            let p = with(cap);
            for name in names {
                assert!(!allowed(&base, name) && allowed(&p, name), "{cap} → {name}");
            }
            // Other groups stay closed, and clone keeps its namespace rule.
            assert!(!allowed(&p, "mount"), "{cap}");
            assert!(rules(&p, "clone")[0].get("args").is_some(), "{cap}");
        }
        // CAP_SYS_CHROOT is a group too: without it chroot is refused.
        let no_chroot: Vec<&str> = DEFAULT_CAPS.iter().copied().filter(|c| *c != "CAP_SYS_CHROOT").collect();
        assert!(!allowed(&profile_for(&amd64(), &no_chroot), "chroot"));
    }

    #[test]
    fn personality_values_and_vsock() {
        let p = profile_for(&amd64(), DEFAULT_CAPS);
        let values: Vec<u64> = rules(&p, "personality")
            .iter()
            .map(|r| {
                assert_eq!(r["args"][0]["op"], "SCMP_CMP_EQ");
                assert_eq!(r["args"][0]["index"], 0);
                r["args"][0]["value"].as_u64().unwrap()
            })
            .collect();
        assert_eq!(values, [0, 8, 131072, 131080, 4294967295]);
        let socket = rules(&p, "socket");
        assert_eq!(socket.len(), 1);
        assert_eq!(socket[0]["args"], json!([{"index": 0, "value": 40, "valueTwo": 0, "op": "SCMP_CMP_NE"}]));
    }

    #[test]
    fn masked_eq_swaps_into_libcontainers_reading() {
        let mut p = profile_for(&amd64(), DEFAULT_CAPS);
        assert_eq!(masked_eq_for_libcontainer(&mut p), 1);
        let clone = rules(&p, "clone");
        assert_eq!(
            (&clone[0]["args"][0]["value"], &clone[0]["args"][0]["valueTwo"]),
            (&json!(0), &json!(2114060288u64))
        );
        // Other operators are untouched, and a second swap restores the profile.
        assert_eq!(rules(&p, "socket")[0]["args"][0]["value"], 40);
        masked_eq_for_libcontainer(&mut p);
        assert_eq!(p, profile_for(&amd64(), DEFAULT_CAPS));
        assert_eq!(masked_eq_for_libcontainer(&mut json!({"defaultAction": "SCMP_ACT_ALLOW"})), 0);
    }

    #[test]
    fn per_arch_and_kernel_rules() {
        let arm = profile_for(&Host { arch: "arm64".into(), kernel: Some((6, 1)) }, DEFAULT_CAPS);
        assert_eq!(arm["architectures"], json!(["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]));
        assert!(allowed(&arm, "set_tls") && allowed(&arm, "cacheflush"));
        assert!(!allowed(&arm, "arch_prctl") && !allowed(&arm, "modify_ldt"));
        let x86 = profile_for(&amd64(), DEFAULT_CAPS);
        assert!(allowed(&x86, "modify_ldt") && !allowed(&x86, "riscv_flush_icache"));
        let old = profile_for(&Host { arch: "amd64".into(), kernel: Some((4, 4)) }, DEFAULT_CAPS);
        assert!(!allowed(&old, "ptrace"));
        let other = profile_for(&Host { arch: "mips64le".into(), kernel: None }, DEFAULT_CAPS);
        assert_eq!(other["architectures"], json!([]));
        assert!(allowed(&other, "ptrace"));
        assert_eq!(parse_kernel("6.1.0-18-amd64\n"), Some((6, 1)));
        assert_eq!(parse_kernel("5.15.153.1-microsoft-standard-WSL2"), Some((5, 15)));
        assert_eq!(parse_kernel(""), None);
    }
}
