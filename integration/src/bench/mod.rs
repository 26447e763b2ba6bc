//! Benchmarks run by `berth-bench`: helpers to time things and report medians and ratios.

pub mod daemon;
pub mod image;
pub mod pull;
pub mod run;

use std::time::{Duration, Instant};

/// One measured quantity for Berth and, when available, the incumbent.
pub struct Row {
    /// What was measured.
    pub what: String,
    /// Unit of the values.
    pub unit: &'static str,
    /// Berth's median.
    pub berth: f64,
    /// The incumbent's name and median.
    pub incumbent: Option<(&'static str, f64)>,
    /// Lower is better (time, memory) or higher is better (throughput).
    pub lower_is_better: bool,
}

/// Collected rows and notes.
#[derive(Default)]
pub struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Report {
    /// Adds a row.
    pub fn row(&mut self, row: Row) {
        self.rows.push(row);
    }

    /// Adds a note (e.g. why a comparison was skipped).
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// Prints the report.
    pub fn print(&self) {
        println!();
        println!("{:<48} {:>12} {:>14} {:>12}  ratio", "benchmark (median)", "berth", "incumbent", "");
        for r in &self.rows {
            match r.incumbent {
                Some((name, v)) => {
                    let ratio = r.berth / v;
                    let verdict = match (r.lower_is_better, ratio < 1.0) {
                        (true, true) | (false, false) => "better",
                        _ => "worse",
                    };
                    println!(
                        "{:<48} {:>9.2} {:<2} {:>11.2} {:<2} {:>10}  {ratio:.3}x of {name} ({verdict})",
                        r.what, r.berth, r.unit, v, r.unit, ""
                    );
                }
                None => println!("{:<48} {:>9.2} {:<2} {:>14}", r.what, r.berth, r.unit, "-"),
            }
        }
        for n in &self.notes {
            println!("note: {n}");
        }
    }
}

/// The fields of `/proc/PID/smaps_rollup` (`Rss`, `Pss`, `Private_Dirty`, ...) in KiB; empty
/// when the process is gone.
pub(crate) fn smaps_rollup_kib(pid: u32) -> std::collections::HashMap<String, f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            Some((name.to_string(), rest.split_whitespace().next()?.parse().ok()?))
        })
        .collect()
}

/// Runs `cmd` to success (panicking with its stderr otherwise) and returns milliseconds.
pub(crate) fn run_ok(cmd: &mut std::process::Command) -> f64 {
    let t = Instant::now();
    let out = cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).output().expect("spawn");
    let ms = t.elapsed().as_secs_f64() * 1e3;
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    ms
}

/// `berthctl --address SOCKET`.
pub(crate) fn berthctl(socket: &std::path::Path) -> std::process::Command {
    let mut c = std::process::Command::new(crate::bin("berthctl"));
    c.arg("--address").arg(socket);
    c
}

/// Median of samples (sorted copy).
pub fn median(samples: &[f64]) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Runs `f` `n` times and returns each duration in milliseconds.
pub fn time_ms(n: usize, mut f: impl FnMut()) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect()
}

/// Polls `ready` every millisecond until it is true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ready() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
