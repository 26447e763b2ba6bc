//! Apply throughput against GNU tar on the same machine: a synthetic layer of many small
//! files and a few large ones, extracted by `berth_diff::apply` and by `tar -xf`, alternately,
//! median of N runs after one warm-up each. No fsync on either side; `sync` runs (untimed)
//! between runs, and the trees are removed only at the end.
//!
//! `cargo run --release -p berth-diff --example apply_bench -- [DIR] [SMALL_FILES] [RUNS]`
//! (DIR: where to extract, default /var/tmp; SMALL_FILES default 20000; RUNS default 5), or
//! `-- --apply LAYER DIR` to apply one layer file (for strace or perf).

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_diff::{apply, ApplyOptions, WhiteoutMode};

/// `len` bytes of word salad.
fn text(next: &mut impl FnMut() -> u32, len: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "layer",
        "tar",
        "file",
        "the",
        "of",
        "container",
        "image",
        "berth",
        "lib",
        "usr",
        "0x1f",
        "int",
        "return",
        "\n",
    ];
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        out.extend_from_slice(WORDS[next() as usize % WORDS.len()].as_bytes());
        out.push(b' ');
    }
    out.truncate(len);
    out
}

fn layer(small: usize) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut x: u32 = 12345;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    let dirs = 200.max(small / 100);
    for d in 0..dirs {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_mtime(1_600_000_000);
        h.set_size(0);
        b.append_data(&mut h, format!("usr/share/d{d:04}/"), std::io::empty()).unwrap();
    }
    for i in 0..small {
        let len = 100 + (next() as usize % 8000);
        let data = text(&mut next, len);
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_mtime(1_600_000_000);
        h.set_size(len as u64);
        // Grouped by directory, as tar writers walk trees.
        b.append_data(&mut h, format!("usr/share/d{:04}/file{i:06}", i * dirs / small), &data[..]).unwrap();
    }
    for i in 0..3 {
        let len = 48 << 20;
        // Half random, half text: compresses about as well as binaries do.
        let mut data: Vec<u8> = (0..len / 2).map(|_| next() as u8).collect();
        data.extend(text(&mut next, len - len / 2));
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o755);
        h.set_mtime(1_600_000_000);
        h.set_size(len as u64);
        b.append_data(&mut h, format!("opt/big{i}.bin"), &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

/// CPU seconds (user + system) of this process and of its waited-for children so far.
fn cpu() -> (f64, f64) {
    let stat = fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<f64> =
        stat.rsplit(')').next().unwrap().split_whitespace().map(|f| f.parse().unwrap_or(0.0)).collect();
    // After the command name: state is [0]; utime [11], stime [12], cutime [13], cstime [14].
    ((fields[11] + fields[12]) / 100.0, (fields[13] + fields[14]) / 100.0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn settle() {
    // sync waits for every writer on the machine: bounded, so a busy neighbour cannot stall us.
    let _ = Command::new("timeout").args(["30", "sync"]).status();
    std::thread::sleep(Duration::from_secs(2));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--apply") {
        // Apply one layer file (for strace or perf): --apply LAYER DIR
        let out =
            apply(fs::File::open(&args[2]).unwrap(), Path::new(&args[3]), &ApplyOptions::new(WhiteoutMode::Overlay));
        println!("{:?}", out.unwrap());
        return;
    }
    let base = Path::new(args.get(1).map(String::as_str).unwrap_or("/var/tmp")).join("berth-apply-bench");
    let small: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let runs: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5);
    let _ = fs::remove_dir_all(&base);
    fs::create_dir_all(&base).unwrap();
    let tar_path = base.join("layer.tar");
    let bytes = layer(small);
    fs::File::create(&tar_path).unwrap().write_all(&bytes).unwrap();
    let size = bytes.len() as f64;
    let gz_path = base.join("layer.tar.gz");
    let gz = Command::new("gzip").arg("-kf").arg(&tar_path).status().unwrap();
    assert!(gz.success());
    let gz_size = fs::metadata(&gz_path).unwrap().len() as f64;
    println!(
        "layer: {small} small files + 3 x 48 MiB, {:.1} MiB uncompressed, {:.1} MiB gzip",
        size / 1048576.0,
        gz_size / 1048576.0
    );

    let (mut ours, mut gnu, mut ours_gz) = (Vec::new(), Vec::new(), Vec::new());
    let cpu_used = std::cell::RefCell::new(std::collections::BTreeMap::<String, Vec<f64>>::new());
    let timed = |name: &str, run: usize, f: &dyn Fn(&Path)| -> Duration {
        let dst = base.join(format!("{name}{run}"));
        fs::create_dir(&dst).unwrap();
        let c0 = cpu();
        let t = Instant::now();
        f(&dst);
        let elapsed = t.elapsed();
        let c1 = cpu();
        cpu_used.borrow_mut().entry(name.to_string()).or_default().push((c1.0 - c0.0) + (c1.1 - c0.1));
        // Trees stay until the end: on ext4 (with discard), creating files right after
        // deleting many costs several times more system time, whoever creates them.
        settle();
        elapsed
    };
    let berth = |dst: &Path| {
        apply(fs::File::open(&tar_path).unwrap(), dst, &ApplyOptions::new(WhiteoutMode::Overlay)).unwrap();
    };
    let gnu_tar = |dst: &Path| {
        let ok = Command::new("tar").arg("-xf").arg(&tar_path).arg("-C").arg(dst).status().unwrap();
        assert!(ok.success());
    };
    let berth_gz = |dst: &Path| {
        apply(fs::File::open(&gz_path).unwrap(), dst, &ApplyOptions::new(WhiteoutMode::Overlay)).unwrap();
    };
    // Warm-up (page cache, allocator), not counted.
    timed("warmup", 0, &berth);
    timed("warmup", 1, &gnu_tar);
    cpu_used.borrow_mut().clear();
    for run in 0..runs {
        // Alternate who goes first.
        if run % 2 == 0 {
            ours.push(timed("berth", run, &berth));
            gnu.push(timed("tar", run, &gnu_tar));
        } else {
            gnu.push(timed("tar", run, &gnu_tar));
            ours.push(timed("berth", run, &berth));
        }
        ours_gz.push(timed("berthgz", run, &berth_gz));
        println!(
            "run {run}: berth {:.3}s  tar -xf {:.3}s  berth(gzip) {:.3}s",
            ours[run].as_secs_f64(),
            gnu[run].as_secs_f64(),
            ours_gz[run].as_secs_f64()
        );
    }
    let report = |name: &str, key: &str, v: Vec<Duration>| {
        let m = median(v).as_secs_f64();
        let mut c = cpu_used.borrow().get(key).cloned().unwrap_or_default();
        c.sort_by(f64::total_cmp);
        let cm = c.get(c.len() / 2).copied().unwrap_or(0.0);
        println!("{name:<14} median {m:.3}s  {:.1} MB/s (of the uncompressed tar), CPU {cm:.2}s", size / 1e6 / m);
        m
    };
    let a = report("berth apply", "berth", ours);
    let b = report("tar -xf", "tar", gnu);
    report("berth apply gz", "berthgz", ours_gz);
    println!("berth / tar time ratio: {:.2}", a / b);
    let _ = fs::remove_dir_all(&base);
}
