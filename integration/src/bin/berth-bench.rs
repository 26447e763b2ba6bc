//! `make bench`: Berth against the incumbents, side by side in one run, medians of repeated
//! runs, printed as ratios. Each section skips (saying so) when its incumbent is missing.

use berth_integration::bench::{self, Report};

fn main() {
    let mut report = Report::default();
    bench::daemon::run(&mut report);
    bench::image::run(&mut report);
    bench::pull::run(&mut report);
    report.print();
}
