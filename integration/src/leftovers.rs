//! Clean-up of containers a test made through berthd: on drop, kills every shim and container
//! process found under a state dir, unmounts their rootfs and removes their cgroups, so a
//! panicking test leaks nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Cleans up what the shims under `state/shims` left, when dropped.
pub struct Leftovers(pub PathBuf);

/// Bundle directories of the shims under `state`.
pub fn bundles(state: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for ns in std::fs::read_dir(state.join("shims")).into_iter().flatten().flatten() {
        out.extend(std::fs::read_dir(ns.path()).into_iter().flatten().flatten().map(|e| e.path()));
    }
    out
}

fn read_pid(path: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(path).ok()?;
    if let Ok(p) = text.trim().parse() {
        return Some(p);
    }
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["pid"].as_i64().map(|p| p as i32)
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        for b in bundles(&self.0) {
            let Some(id) = b.file_name().map(|n| n.to_string_lossy().to_string()) else { continue };
            for pidfile in [b.join("runtime").join(&id).join("state.json"), b.join("shim.pid")] {
                if let Some(pid) = read_pid(&pidfile).filter(|p| *p > 1) {
                    // SAFETY: killing a process this test started (through berthd).
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            let _ = Command::new("umount").arg("-l").arg(b.join("rootfs")).stderr(Stdio::null()).status();
            if let Ok(spec) = std::fs::read(b.join("config.json")) {
                let v: serde_json::Value = serde_json::from_slice(&spec).unwrap_or_default();
                if let Some(cg) = v["linux"]["cgroupsPath"].as_str() {
                    std::thread::sleep(Duration::from_millis(100));
                    for ctrl in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
                        let _ = std::fs::remove_dir(ctrl.path().join(cg.trim_start_matches('/')));
                    }
                }
            }
        }
    }
}
