//! Image benchmarks on a synthetic ~300 MB, 5-layer image (many small files and a few large
//! ones, gzip layers), each berthd run on a fresh root, side by side with containerd 1.6
//! (its own root, `ctr` as the client) and with plain `tar`:
//!
//! - import of the docker-save archive without unpacking: `berthctl image import --no-unpack`
//!   vs `ctr images import --no-unpack`;
//! - unpack: Berth's unpacker (layers extracted in parallel) vs containerd's (ctr 1.6 has no
//!   unpack command, so containerd's unpack is `ctr images import` minus the same import with
//!   `--no-unpack`, medians) and vs the floor, `tar -xzf` of each layer one after another;
//! - end to end import + unpack: berthctl vs ctr, and ctr's client-side unpack served by
//!   berthd vs by containerd (the same client against both daemons).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use super::daemon::{start_berthd, start_containerd};
use super::{berthctl, median, run_ok, Report, Row};
use crate::find_on_path;
use crate::images::{write_big_image, BigImageSpec, TestImage};

const RUNS: usize = 3;
const IMAGE: &str = "docker.io/berth/bench:latest";

fn ctr(socket: &Path) -> Option<Command> {
    let mut c = Command::new(find_on_path("ctr")?);
    c.arg("--address").arg(socket);
    Some(c)
}

/// The bench image, built once under the target dir (reused while present).
fn bench_image() -> (PathBuf, TestImage, u64) {
    let dir = crate::images::default_dir().join("bench");
    let spec = BigImageSpec { layers: 5, total_bytes: 300 << 20, seed: 42, gzip: true };
    let image = write_big_image(&dir, "big", IMAGE, &spec).expect("build bench image");
    let archive = dir.join(&image.docker_archive);
    let size = std::fs::metadata(&archive).map(|m| m.len()).unwrap_or(0);
    (archive, image, size)
}

fn tar_floor(dir: &Path, image: &TestImage) -> f64 {
    // Layers as separate gzip files, like a registry serves them.
    let target = tempfile::tempdir_in(dir).expect("tempdir");
    let layers: Vec<PathBuf> =
        image.host().layers.iter().map(|l| dir.join("oci/blobs/sha256").join(l.blob.hex())).collect();
    let t = Instant::now();
    for l in &layers {
        let st = Command::new("tar").arg("-xzf").arg(l).arg("-C").arg(target.path()).status().expect("tar");
        assert!(st.success(), "tar -xzf {}", l.display());
    }
    Command::new("sync").status().ok();
    t.elapsed().as_secs_f64() * 1e3
}

/// Unpacks the OCI layout archive's blobs to `dir/oci` once (the tar floor reads layers there).
fn extract_layers(image: &TestImage, dir: &Path) {
    let oci = dir.join("oci");
    if oci.join("blobs/sha256").is_dir() {
        return;
    }
    std::fs::create_dir_all(&oci).expect("mkdir");
    let st =
        Command::new("tar").arg("-xf").arg(dir.join(&image.oci_archive)).arg("-C").arg(&oci).status().expect("tar");
    assert!(st.success(), "unpack the OCI archive");
}

/// Runs the image benchmarks into `report`.
pub fn run(report: &mut Report) {
    eprintln!("image: building the ~300 MB bench image (once) ...");
    let (archive, image, size) = bench_image();
    let dir = archive.parent().expect("dir").to_path_buf();
    extract_layers(&image, &dir);
    let mb = size as f64 / (1 << 20) as f64;
    let archive_s = archive.to_str().expect("utf-8 path");
    eprintln!("image: {mb:.0} MB archive, {RUNS} runs of each ...");

    let (mut b_import, mut b_unpack, mut b_total) = (Vec::new(), Vec::new(), Vec::new());
    let (mut c_import, mut c_total, mut ctr_on_berth) = (Vec::new(), Vec::new(), Vec::new());
    let mut floor = Vec::new();
    let have_containerd = find_on_path("containerd").is_some() && find_on_path("ctr").is_some();
    for _ in 0..RUNS {
        // Berth: import, then unpack, on a fresh root.
        let root = tempfile::Builder::new().prefix("berth-bench-").tempdir_in(&dir).expect("tempdir");
        let (p, _) = start_berthd(root.path());
        let imp = run_ok(berthctl(&p.socket).args(["image", "import", "--no-unpack", archive_s]));
        let unp = run_ok(berthctl(&p.socket).args(["image", "unpack", IMAGE]));
        b_import.push(imp);
        b_unpack.push(unp);
        b_total.push(imp + unp);
        drop(p);
        drop(root);

        if have_containerd {
            // ctr's own client-side unpack, served by berthd.
            let root = tempfile::Builder::new().prefix("berth-bench-").tempdir_in(&dir).expect("tempdir");
            let (p, _) = start_berthd(root.path());
            if let Some(mut c) = ctr(&p.socket) {
                ctr_on_berth.push(run_ok(c.args(["images", "import", archive_s])));
            }
            drop(p);
            drop(root);
            for unpack in [false, true] {
                let root = tempfile::Builder::new().prefix("containerd-bench-").tempdir_in(&dir).expect("tempdir");
                let Some((p, _)) = start_containerd(root.path()) else { break };
                let mut c = ctr(&p.socket).expect("ctr");
                c.args(["images", "import"]);
                if !unpack {
                    c.arg("--no-unpack");
                }
                let ms = run_ok(c.arg(archive_s));
                if unpack {
                    c_total.push(ms);
                } else {
                    c_import.push(ms);
                }
                drop(p);
                drop(root);
            }
        }
        floor.push(tar_floor(&dir, &image));
    }

    let secs = |v: &[f64]| median(v) / 1e3;
    let rate = |v: &[f64]| mb / secs(v);
    let cd = |v: &[f64]| (!v.is_empty()).then(|| ("containerd", secs(v)));
    report.row(Row {
        what: format!("import {mb:.0} MB docker-save, no unpack"),
        unit: "s",
        berth: secs(&b_import),
        incumbent: cd(&c_import),
        lower_is_better: true,
    });
    report.row(Row {
        what: "import throughput".into(),
        unit: "MB/s",
        berth: rate(&b_import),
        incumbent: cd(&c_import).map(|(n, _)| (n, rate(&c_import))),
        lower_is_better: false,
    });
    let c_unpack: Vec<f64> = if c_total.is_empty() { Vec::new() } else { vec![median(&c_total) - median(&c_import)] };
    report.row(Row {
        what: "unpack 5 layers (vs containerd's, import diff)".into(),
        unit: "s",
        berth: secs(&b_unpack),
        incumbent: cd(&c_unpack),
        lower_is_better: true,
    });
    report.row(Row {
        what: "unpack 5 layers (vs tar -xzf, the floor)".into(),
        unit: "s",
        berth: secs(&b_unpack),
        incumbent: Some(("tar", secs(&floor))),
        lower_is_better: true,
    });
    report.row(Row {
        what: "unpack throughput (compressed MB)".into(),
        unit: "MB/s",
        berth: rate(&b_unpack),
        incumbent: Some(("tar", rate(&floor))),
        lower_is_better: false,
    });
    report.row(Row {
        what: "import + unpack end to end".into(),
        unit: "s",
        berth: secs(&b_total),
        incumbent: cd(&c_total),
        lower_is_better: true,
    });
    if !ctr_on_berth.is_empty() && !c_total.is_empty() {
        report.row(Row {
            what: "`ctr images import` served by berthd".into(),
            unit: "s",
            berth: secs(&ctr_on_berth),
            incumbent: cd(&c_total),
            lower_is_better: true,
        });
    }
    if !have_containerd {
        report.note("containerd/ctr not installed: image ratios against containerd skipped");
    }
    report.note(format!("image benchmarks: medians of {RUNS} runs, fresh roots on the same ext4 disk"));
}
