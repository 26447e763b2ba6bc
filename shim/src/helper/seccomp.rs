//! Precompiled seccomp filters.
//!
//! Building Docker's default profile with libseccomp (about 350 calls on three architectures,
//! with argument rules) costs 6-9 ms of CPU at every container start, the largest single step
//! of a `run` here. The result only depends on the profile, the libseccomp version and the
//! machine's architecture, so it is compiled once, kept in a cache keyed by those three
//! (`<state>/seccomp-cache/<sha256>.bpf`), and loaded as a ready BPF program.
//!
//! libcontainer has no way to take a program, so when a profile can use one ([`eligible`]) the
//! helper takes `linux.seccomp` out of the spec it hands libcontainer, keeps the program in the
//! bundle (`seccomp.bpf`: 4 bytes of filter flags, little endian, then the program), and loads
//! it from the workload executor ([`SeccompExecutor`]), in the container's init right before
//! it execs the payload, as runc and libcontainer do. Exec processes load the same program.
//!
//! The profile is translated as libcontainer translates it, with one difference: the
//! `SCMP_CMP_MASKED_EQ` operands are read as the runtime spec, runc and crun read them (mask in
//! `value`, compared value in `valueTwo`), not swapped as libcontainer 0.7 reads them.

use std::io::Write;
use std::path::{Path, PathBuf};

use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The program file in the bundle.
pub const BUNDLE_FILE: &str = "seccomp.bpf";

const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;

/// Whether `spec`'s profile can be loaded as a precompiled program: the init runs with
/// no_new_privs (the program is loaded after capabilities are dropped, which the kernel then
/// allows) and nothing asks for a user-space notifier (whose fd libcontainer hands over).
pub fn eligible(spec: &Value) -> bool {
    let Some(profile) = spec.pointer("/linux/seccomp") else { return false };
    let nnp = spec.pointer("/process/noNewPrivileges").and_then(Value::as_bool) == Some(true);
    let notify = |v: Option<&Value>| v.and_then(Value::as_str) == Some("SCMP_ACT_NOTIFY");
    let syscalls = profile.get("syscalls").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    nnp && profile.get("listenerPath").is_none()
        && !notify(profile.get("defaultAction"))
        && !syscalls.iter().any(|s| notify(s.get("action")))
}

fn errno_of(v: Option<&Value>) -> i32 {
    v.and_then(Value::as_i64).map_or(libc::EPERM, |e| e as i32)
}

fn action(name: Option<&Value>, errno: Option<&Value>) -> Result<ScmpAction, String> {
    let name = name.and_then(Value::as_str).ok_or("seccomp: an action is missing")?;
    let errno = errno_of(errno);
    let needs_value = matches!(name, "SCMP_ACT_ERRNO" | "SCMP_ACT_TRACE");
    ScmpAction::from_str(name, needs_value.then_some(errno)).map_err(|e| format!("seccomp action {name}: {e}"))
}

fn compare(arg: &Value) -> Result<ScmpArgCompare, String> {
    let index = arg.get("index").and_then(Value::as_u64).ok_or("seccomp: an argument rule has no index")? as u32;
    let value = arg.get("value").and_then(Value::as_u64).ok_or("seccomp: an argument rule has no value")?;
    let value_two = arg.get("valueTwo").and_then(Value::as_u64).unwrap_or(0);
    let op = arg.get("op").and_then(Value::as_str).unwrap_or("");
    let (op, datum) = match op {
        "SCMP_CMP_NE" => (ScmpCompareOp::NotEqual, value),
        "SCMP_CMP_LT" => (ScmpCompareOp::Less, value),
        "SCMP_CMP_LE" => (ScmpCompareOp::LessOrEqual, value),
        "SCMP_CMP_EQ" => (ScmpCompareOp::Equal, value),
        "SCMP_CMP_GE" => (ScmpCompareOp::GreaterEqual, value),
        "SCMP_CMP_GT" => (ScmpCompareOp::Greater, value),
        // The spec's reading: (arg & value) == valueTwo.
        "SCMP_CMP_MASKED_EQ" => (ScmpCompareOp::MaskedEqual(value), value_two),
        other => return Err(format!("seccomp: unknown operator {other:?}")),
    };
    Ok(ScmpArgCompare::new(index, op, datum))
}

/// Compiles `profile` (an OCI `linux.seccomp`) to a BPF program with libseccomp.
pub fn compile(profile: &Value) -> Result<Vec<u8>, String> {
    let default = action(profile.get("defaultAction"), profile.get("defaultErrnoRet"))?;
    let mut ctx = ScmpFilterContext::new(default).map_err(|e| format!("seccomp filter: {e}"))?;
    ctx.set_ctl_nnp(false).map_err(|e| format!("seccomp filter: {e}"))?;
    for arch in profile.get("architectures").and_then(Value::as_array).into_iter().flatten() {
        let name = arch.as_str().unwrap_or("");
        let arch: ScmpArch = name.parse().map_err(|e| format!("seccomp architecture {name:?}: {e}"))?;
        ctx.add_arch(arch).map_err(|e| format!("seccomp architecture {name:?}: {e}"))?;
    }
    for rule in profile.get("syscalls").and_then(Value::as_array).into_iter().flatten() {
        let act = action(rule.get("action"), rule.get("errnoRet"))?;
        if act == default {
            // Redundant, and libseccomp refuses it.
            continue;
        }
        let raw = rule.get("args").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
        let args: Vec<ScmpArgCompare> = raw.iter().map(compare).collect::<Result<_, _>>()?;
        let mut indexes: Vec<u64> = raw.iter().filter_map(|a| a.get("index").and_then(Value::as_u64)).collect();
        indexes.sort_unstable();
        let repeated = indexes.windows(2).any(|w| w[0] == w[1]);
        for name in rule.get("names").and_then(Value::as_array).into_iter().flatten() {
            let name = name.as_str().unwrap_or("");
            // A name this libseccomp does not know is a call this kernel interface cannot
            // make: skipped, as libcontainer and runc skip it.
            let Ok(sc) = ScmpSyscall::from_name(name) else { continue };
            let added = if args.is_empty() {
                ctx.add_rule(act, sc)
            } else if repeated {
                // libseccomp compares each argument once per rule: one rule per comparison,
                // as runc does.
                args.iter()
                    .try_for_each(|a| ctx.add_rule_conditional(act, sc, std::slice::from_ref(a)).map(|_| ()))
                    .map(|_| &mut ctx)
            } else {
                ctx.add_rule_conditional(act, sc, &args)
            };
            added.map_err(|e| format!("seccomp rule for {name}: {e}"))?;
        }
    }
    // Exported into a memory file (libseccomp 2.5 has no export to memory).
    // SAFETY: memfd_create with a NUL-terminated name; the fd is owned right away.
    let fd = unsafe { libc::memfd_create(c"seccomp-bpf".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(format!("seccomp export: memfd: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: fd was just created and is owned by nobody else.
    let mut file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    ctx.export_bpf(&file).map_err(|e| format!("seccomp export: {e}"))?;
    let mut out = Vec::new();
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0)).map_err(|e| format!("seccomp export: {e}"))?;
    std::io::Read::read_to_end(&mut file, &mut out).map_err(|e| format!("seccomp export: {e}"))?;
    Ok(out)
}

/// The filter flags of `profile` for seccomp(2).
pub fn flags(profile: &Value) -> Result<u32, String> {
    let mut out = 0;
    for f in profile.get("flags").and_then(Value::as_array).into_iter().flatten() {
        out |= match f.as_str().unwrap_or("") {
            "SECCOMP_FILTER_FLAG_TSYNC" => 1,
            "SECCOMP_FILTER_FLAG_LOG" => 2,
            "SECCOMP_FILTER_FLAG_SPEC_ALLOW" => 4,
            "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV" => 32,
            other => return Err(format!("seccomp: unknown filter flag {other:?}")),
        };
    }
    Ok(out)
}

/// The cache key of `profile`: sha256 over the profile as given, the libseccomp version and
/// the machine's architecture.
fn key(profile: &Value) -> String {
    let version = libseccomp::ScmpVersion::current().map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro));
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(profile).unwrap_or_default());
    h.update([0]);
    h.update(version.unwrap_or_default());
    h.update([0]);
    h.update(std::env::consts::ARCH);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A BPF program is whole instructions of 8 bytes, at least one, at most BPF_MAXINSNS.
fn valid_program(p: &[u8]) -> bool {
    !p.is_empty() && p.len().is_multiple_of(8) && p.len() / 8 <= 4096
}

/// The program of `profile`: from `cache` when it holds one, else compiled (and stored there).
pub fn program(profile: &Value, cache: Option<&Path>) -> Result<Vec<u8>, String> {
    let path: Option<PathBuf> = cache.map(|dir| dir.join(format!("{}.bpf", key(profile))));
    if let Some(p) = &path {
        if let Ok(bytes) = std::fs::read(p) {
            if valid_program(&bytes) {
                return Ok(bytes);
            }
        }
    }
    let bytes = compile(profile)?;
    if !valid_program(&bytes) {
        return Err(format!("seccomp: the compiled program has {} bytes", bytes.len()));
    }
    if let (Some(p), Some(dir)) = (&path, cache) {
        // Best effort: written aside, then renamed, so a reader never sees half a program.
        let _ = std::fs::create_dir_all(dir);
        let tmp = dir.join(format!(".{}.{}", std::process::id(), p.file_name().and_then(|n| n.to_str()).unwrap_or("")));
        if std::fs::write(&tmp, &bytes).is_ok() && std::fs::rename(&tmp, p).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    Ok(bytes)
}

/// Writes the bundle's program file.
pub fn save(bundle: &Path, flags: u32, program: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(bundle.join(BUNDLE_FILE))?;
    f.write_all(&flags.to_le_bytes())?;
    f.write_all(program)?;
    f.sync_all()
}

/// Reads the bundle's program file, if there is one.
pub fn load_saved(bundle: &Path) -> Result<Option<SeccompExecutor>, String> {
    let bytes = match std::fs::read(bundle.join(BUNDLE_FILE)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("read {BUNDLE_FILE}: {e}")),
    };
    if bytes.len() < 4 || !valid_program(&bytes[4..]) {
        return Err(format!("{BUNDLE_FILE} is not a seccomp program"));
    }
    let flags = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    Ok(Some(SeccompExecutor { flags, program: bytes[4..].to_vec(), set_nnp: false }))
}

/// seccomp(SECCOMP_SET_MODE_FILTER) with `program`.
fn install(program: &[u8], flags: u32) -> std::io::Result<()> {
    #[repr(C)]
    struct SockFprog {
        len: libc::c_ushort,
        filter: *const u8,
    }
    let prog = SockFprog { len: (program.len() / 8) as libc::c_ushort, filter: program.as_ptr() };
    // SAFETY: the kernel reads `len` 8-byte instructions from `filter`, which `program` holds
    // (checked by valid_program), for the duration of the call.
    let rc = unsafe { libc::syscall(libc::SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags as libc::c_ulong, &prog) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The workload executor that loads the program, then execs the payload as libcontainer's
/// default executor does.
#[derive(Clone)]
pub struct SeccompExecutor {
    flags: u32,
    program: Vec<u8>,
    /// Set no_new_privs first (an exec process that did not ask for it, in a container whose
    /// init runs with it: the kernel loads a filter without CAP_SYS_ADMIN only then).
    pub set_nnp: bool,
}

impl SeccompExecutor {
    /// An executor for a freshly compiled program.
    pub fn new(flags: u32, program: Vec<u8>) -> SeccompExecutor {
        SeccompExecutor { flags, program, set_nnp: false }
    }
}

impl Executor for SeccompExecutor {
    fn exec(&self, spec: &oci_spec::runtime::Spec) -> Result<(), ExecutorError> {
        if self.set_nnp {
            // SAFETY: prctl on the calling process.
            unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
        }
        install(&self.program, self.flags).map_err(|e| ExecutorError::Other(format!("load seccomp filter: {e}")))?;
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &oci_spec::runtime::Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> Value {
        berth_oci::default_profile(&["CAP_CHOWN", "CAP_KILL"])
    }

    #[test]
    fn docker_profile_compiles_and_caches() {
        let p = profile();
        let direct = compile(&p).unwrap();
        assert!(valid_program(&direct), "{} bytes", direct.len());
        let dir = tempfile::tempdir().unwrap();
        let first = program(&p, Some(dir.path())).unwrap();
        assert_eq!(first, direct, "compiling is deterministic");
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(files.len(), 1, "{files:?}");
        // A cached program is used as is; a damaged one is compiled again.
        let cached = dir.path().join(&files[0]);
        std::fs::write(&cached, b"short").unwrap();
        assert_eq!(program(&p, Some(dir.path())).unwrap(), direct);
        assert_eq!(std::fs::read(&cached).unwrap(), direct);
        // Another profile, another entry.
        let mut other = p.clone();
        other["defaultErrnoRet"] = 38.into();
        assert_ne!(program(&other, Some(dir.path())).unwrap(), direct);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn eligibility_and_flags() {
        let mut spec = serde_json::json!({"process": {"noNewPrivileges": true}, "linux": {"seccomp": profile()}});
        assert!(eligible(&spec));
        spec["process"]["noNewPrivileges"] = false.into();
        assert!(!eligible(&spec));
        spec["process"]["noNewPrivileges"] = true.into();
        spec["linux"]["seccomp"]["syscalls"][0]["action"] = "SCMP_ACT_NOTIFY".into();
        assert!(!eligible(&spec));
        assert!(!eligible(&serde_json::json!({"process": {"noNewPrivileges": true}})));
        let f = flags(&serde_json::json!({"flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"]}));
        assert_eq!(f.unwrap(), 6);
        assert!(flags(&serde_json::json!({"flags": ["SECCOMP_FILTER_FLAG_BOGUS"]})).is_err());
        assert!(compile(&serde_json::json!({"defaultAction": "SCMP_ACT_NOPE"})).is_err());
    }

    #[test]
    fn saved_program_round_trips_and_bad_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_saved(dir.path()).unwrap().is_none());
        let prog = compile(&profile()).unwrap();
        save(dir.path(), 2, &prog).unwrap();
        let e = load_saved(dir.path()).unwrap().unwrap();
        assert_eq!((e.flags, e.program.as_slice()), (2, prog.as_slice()));
        std::fs::write(dir.path().join(BUNDLE_FILE), [0u8; 7]).unwrap();
        assert!(load_saved(dir.path()).is_err());
    }
}
