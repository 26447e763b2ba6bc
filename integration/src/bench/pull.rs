//! Registry pull benchmark: medians of cold pulls (fresh root each) of a synthetic ~300 MB,
//! 5-layer gzip image from a local `docker-registry`, pull + unpack end to end:
//! `berthctl image pull` vs containerd 1.6's `ctr images pull --plain-http` (containerd
//! beside it with its own root) vs the floor, `curl` of the same blobs then `tar -xzf` of each.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use super::daemon::{start_berthd, start_containerd};
use super::{berthctl, median, run_ok, Report, Row};
use crate::find_on_path;
use crate::images::{write_big_image, BigImageSpec, TestImage};
use crate::registry::Registry;

const RUNS: usize = 5;
const LOCAL_NAME: &str = "docker.io/berth/pull-bench:latest";

/// The bench image, built once (its description is kept beside the archives).
fn bench_image(dir: &Path) -> TestImage {
    let json = dir.join("image.json");
    if let Some(img) = std::fs::read(&json).ok().and_then(|d| serde_json::from_slice::<TestImage>(&d).ok()) {
        if dir.join(&img.docker_archive).is_file() {
            return img;
        }
    }
    let spec = BigImageSpec { layers: 5, total_bytes: 300 << 20, seed: 7, gzip: true };
    let img = write_big_image(dir, "big", LOCAL_NAME, &spec).expect("build bench image");
    std::fs::write(&json, serde_json::to_vec(&img).expect("json")).expect("write image.json");
    img
}

/// `curl` every layer blob into `dir` one after another, then `tar -xzf` each: the floor.
fn floor(reg: &Registry, repo: &str, image: &TestImage, dir: &Path) -> f64 {
    let work = tempfile::tempdir_in(dir).expect("tempdir");
    let rootfs = work.path().join("rootfs");
    std::fs::create_dir_all(&rootfs).expect("mkdir");
    let t = Instant::now();
    let mut files: Vec<PathBuf> = Vec::new();
    for l in &image.host().layers {
        let f = work.path().join(l.blob.hex());
        let url = format!("{}/v2/{repo}/blobs/{}", reg.url(), l.blob.digest);
        run_ok(Command::new("curl").args(["-sSf", "-o"]).arg(&f).arg(url));
        files.push(f);
    }
    for f in &files {
        run_ok(Command::new("tar").arg("-xzf").arg(f).arg("-C").arg(&rootfs));
    }
    Command::new("sync").status().ok();
    t.elapsed().as_secs_f64() * 1e3
}

/// Runs the pull benchmark into `report`.
pub fn run(report: &mut Report) {
    if find_on_path("docker-registry").is_none() || find_on_path("curl").is_none() {
        report.note("docker-registry or curl not installed: pull benchmark skipped");
        return;
    }
    let dir = crate::images::default_dir().join("bench-pull");
    std::fs::create_dir_all(&dir).expect("bench dir");
    eprintln!("pull: building the ~300 MB bench image (once) ...");
    let image = bench_image(&dir);
    let reg = Registry::start().expect("docker-registry");
    let repo = "bench/big";
    let name = format!("{}/{repo}:v1", reg.host);
    {
        let root = tempfile::Builder::new().prefix("berth-bench-").tempdir_in(&dir).expect("tempdir");
        let (p, _) = start_berthd(root.path());
        let archive = dir.join(&image.docker_archive);
        run_ok(berthctl(&p.socket).args(["image", "import", "--no-unpack"]).arg(&archive));
        run_ok(berthctl(&p.socket).args(["image", "tag", LOCAL_NAME, &name]));
        run_ok(berthctl(&p.socket).args(["image", "push", "--quiet", &name]));
    }
    let mb = image.host().layers.iter().map(|l| l.blob.size).sum::<u64>() as f64 / (1 << 20) as f64;
    eprintln!("pull: {mb:.0} MB of layers in the registry, {RUNS} cold pulls of each ...");

    let have_containerd = find_on_path("containerd").is_some() && find_on_path("ctr").is_some();
    let (mut berth, mut containerd, mut tar) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let root = tempfile::Builder::new().prefix("berth-bench-").tempdir_in(&dir).expect("tempdir");
        let (p, _) = start_berthd(root.path());
        berth.push(run_ok(berthctl(&p.socket).args(["image", "pull", "--quiet", &name])));
        drop(p);
        drop(root);

        if have_containerd {
            let root = tempfile::Builder::new().prefix("containerd-bench-").tempdir_in(&dir).expect("tempdir");
            if let Some((p, _)) = start_containerd(root.path()) {
                let ctr = find_on_path("ctr").expect("ctr");
                containerd.push(run_ok(Command::new(ctr).arg("--address").arg(&p.socket).args([
                    "images",
                    "pull",
                    "--plain-http",
                    &name,
                ])));
            }
        }
        tar.push(floor(&reg, repo, &image, &dir));
    }
    let secs = |v: &[f64]| median(v) / 1e3;
    report.row(Row {
        what: format!("pull + unpack {mb:.0} MB, 5 layers (vs containerd)"),
        unit: "s",
        berth: secs(&berth),
        incumbent: (!containerd.is_empty()).then(|| ("containerd", secs(&containerd))),
        lower_is_better: true,
    });
    report.row(Row {
        what: "pull + unpack (vs curl + tar -xzf, the floor)".into(),
        unit: "s",
        berth: secs(&berth),
        incumbent: Some(("curl+tar", secs(&tar))),
        lower_is_better: true,
    });
    report.row(Row {
        what: "pull + unpack throughput (compressed MB)".into(),
        unit: "MB/s",
        berth: mb / secs(&berth),
        incumbent: (!containerd.is_empty()).then(|| ("containerd", mb / secs(&containerd))),
        lower_is_better: false,
    });
    if !have_containerd {
        report.note("containerd/ctr not installed: pull ratio against containerd skipped");
    }
    report.note(format!(
        "pull benchmark: medians of {RUNS} cold pulls from docker-registry on 127.0.0.1, fresh roots on the same disk"
    ));
}
