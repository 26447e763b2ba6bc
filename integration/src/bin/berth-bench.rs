//! `make bench`: Berth against the incumbents, side by side in one run, medians of repeated
//! runs, printed as ratios. Each section skips (saying so) when its incumbent is missing.
//!
//! `berth-bench [SECTION…]` runs only the named sections (`daemon`, `image`, `pull`, `run`);
//! without arguments, all of them.

use berth_integration::bench::{self, Report};

/// A benchmark section: fills the report.
type Section = fn(&mut Report);

/// The sections, in the order `make bench` runs them.
const SECTIONS: [(&str, Section); 4] = [
    ("daemon", bench::daemon::run),
    ("image", bench::image::run),
    ("pull", bench::pull::run),
    ("run", bench::run::run),
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(bench::run::FLOOR_HELPER_ARG) {
        std::process::exit(bench::run::floor_helper(&args[1..]));
    }
    let names: Vec<&str> = SECTIONS.iter().map(|(n, _)| *n).collect();
    if let Some(bad) = args.iter().find(|a| !names.contains(&a.as_str())) {
        eprintln!("berth-bench: unknown benchmark `{bad}`; usage: berth-bench [{}]…", names.join("|"));
        std::process::exit(2);
    }
    let mut report = Report::default();
    for (name, run) in SECTIONS {
        if args.is_empty() || args.iter().any(|a| a == name) {
            run(&mut report);
        }
    }
    report.print();
}
