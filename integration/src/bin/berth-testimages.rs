//! `berth-testimages DIR [--big MB [--layers N] [--gzip]]`: writes the test images (OCI layout
//! and docker-save tars of busybox, multilayer, multiarch) into DIR, and optionally a synthetic
//! big image for benchmarks.

use std::path::PathBuf;
use std::process::ExitCode;

use berth_integration::images::{self, BigImageSpec};

fn usage() -> ExitCode {
    eprintln!("usage: berth-testimages DIR [--big MB [--layers N] [--gzip] [--seed N]]");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else { return usage() };
    let mut spec = BigImageSpec { layers: 5, total_bytes: 0, seed: 1, gzip: false };
    while let Some(flag) = args.next() {
        if flag == "--gzip" {
            spec.gzip = true;
            continue;
        }
        let Some(value) = args.next().and_then(|v| v.parse::<u64>().ok()) else { return usage() };
        match flag.as_str() {
            "--big" => spec.total_bytes = value << 20,
            "--layers" if value > 0 => spec.layers = value as usize,
            "--seed" => spec.seed = value,
            _ => return usage(),
        }
    }
    let Some(busybox) = images::find_busybox() else {
        eprintln!("berth-testimages: busybox not found: install Debian's busybox-static (or set BERTH_BUSYBOX)");
        return ExitCode::FAILURE;
    };
    let set = match images::write_all(&dir, &busybox) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("berth-testimages: {e}");
            return ExitCode::FAILURE;
        }
    };
    for (key, img) in &set.images {
        println!("{key:<12} {} {} {}", img.name, img.target.digest, img.oci_archive);
    }
    if spec.total_bytes > 0 {
        match images::write_big_image(&dir, "big", "docker.io/berth/big:latest", &spec) {
            Ok(img) => println!("{:<12} {} {} {}", "big", img.name, img.target.digest, img.oci_archive),
            Err(e) => {
                eprintln!("berth-testimages: big image: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
