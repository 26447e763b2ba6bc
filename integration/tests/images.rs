//! Images: `berthctl image import|export|ls|inspect|tag|rm` against a real berthd, round trips
//! through both archive formats, Debian's ctr, skopeo and umoci on the same archives, and every
//! kind of bad archive (each must fail with one clear line and leave nothing behind).

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use berth_integration::images::{self, TestImages};
use berth_integration::{bin, external_tool, run, Daemon, Run};

fn test_images() -> Option<&'static TestImages> {
    images::test_images()
}

/// `berthctl -n NS ARGS...`.
fn ctl(d: &Daemon, ns: &str, args: &[&str]) -> Run {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    d.berthctl(&all)
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `(name, digest)` rows of `image ls`.
fn image_rows(d: &Daemon, ns: &str) -> Vec<(String, String)> {
    let out = ctl(d, ns, &["image", "ls"]).ok().to_string();
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "DIGEST", "SIZE", "PLATFORMS"], "{out}");
    lines
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols[0].to_string(), cols[1].to_string())
        })
        .collect()
}

/// Everything an import could leave behind in a namespace.
#[derive(Debug, PartialEq, Eq)]
struct Leftovers {
    images: String,
    content: BTreeSet<String>,
    active: String,
    leases: String,
}

fn leftovers(d: &Daemon, ns: &str) -> Leftovers {
    Leftovers {
        images: ctl(d, ns, &["image", "ls", "-q"]).ok().to_string(),
        content: ctl(d, ns, &["content", "ls", "-q"]).ok().lines().map(str::to_string).collect(),
        active: ctl(d, ns, &["content", "active", "-q"]).ok().to_string(),
        leases: ctl(d, ns, &["leases", "ls", "-q"]).ok().to_string(),
    }
}

/// Imports `archive` and returns the printed `name digest` lines.
fn import(d: &Daemon, ns: &str, archive: &Path, extra: &[&str]) -> Vec<(String, String)> {
    let mut args = vec!["image", "import"];
    args.extend_from_slice(extra);
    args.push(path_str(archive));
    ctl(d, ns, &args)
        .ok()
        .lines()
        .map(|l| {
            let (n, dg) = l.split_once(' ').unwrap_or_else(|| panic!("bad import line {l:?}"));
            (n.to_string(), dg.to_string())
        })
        .collect()
}

/// Members of a tar: (name, type, data).
fn members(path: &Path) -> Vec<(String, tar::EntryType, Vec<u8>)> {
    let mut ar = tar::Archive::new(fs::File::open(path).unwrap());
    ar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            let kind = e.header().entry_type();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (name, kind, data)
        })
        .collect()
}

/// Raw 512-byte header of a regular file, with any name bytes (even ones tar-rs refuses).
fn raw_header(name: &str, size: usize) -> [u8; 512] {
    let mut h = tar::Header::new_gnu();
    h.set_path("placeholder").unwrap();
    h.set_size(size as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    let old = h.as_old_mut();
    old.name = [0; 100];
    old.name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_cksum();
    *h.as_bytes()
}

/// Writes regular files (dirs dropped) as a tar; `end_marker` false leaves the two zero blocks out.
fn write_tar(path: &Path, files: &[(String, Vec<u8>)], end_marker: bool) {
    let mut out = Vec::new();
    for (name, data) in files {
        out.extend_from_slice(&raw_header(name, data.len()));
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    if end_marker {
        out.extend_from_slice(&[0; 1024]);
    }
    fs::write(path, out).unwrap();
}

/// The regular files of an archive, for rewriting.
fn files_of(path: &Path) -> Vec<(String, Vec<u8>)> {
    members(path).into_iter().filter(|(_, k, _)| k.is_file()).map(|(n, _, d)| (n, d)).collect()
}

fn blob_name(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

#[test]
fn oci_archives_round_trip_with_identical_digests_and_bytes() {
    let Some(imgs) = test_images() else { return };
    let d1 = Daemon::start();
    let keys = ["busybox", "multilayer", "multiarch"];
    for key in keys {
        let img = imgs.get(key);
        let printed = import(&d1, "default", &imgs.path(&img.oci_archive), &[]);
        assert_eq!(printed, [(img.name.clone(), img.target.digest.clone())]);
    }
    let mut want: Vec<(String, String)> =
        keys.iter().map(|k| (imgs.get(k).name.clone(), imgs.get(k).target.digest.clone())).collect();
    want.sort();
    assert_eq!(image_rows(&d1, "default"), want);
    let ls = ctl(&d1, "default", &["image", "ls"]).ok().to_string();
    let multiarch_row = ls.lines().find(|l| l.starts_with(images::MULTIARCH)).unwrap();
    assert!(multiarch_row.ends_with(&format!("linux/{},linux/{}", "amd64", "arm64")), "{ls}");
    let busybox_row = ls.lines().find(|l| l.starts_with(images::BUSYBOX)).unwrap();
    let bb = imgs.get("busybox").host();
    let total = bb.manifest.size + bb.config.size + bb.layers.iter().map(|l| l.blob.size).sum::<u64>();
    assert!(busybox_row.contains(&format!("{:.1} MiB", total as f64 / 1048576.0)), "{ls}");

    let e1 = d1.dir().join("export1.tar");
    let names: Vec<&str> = keys.iter().map(|k| imgs.get(k).name.as_str()).collect();
    let mut args = vec!["image", "export", path_str(&e1)];
    args.extend_from_slice(&names);
    ctl(&d1, "default", &args).ok();

    let d2 = Daemon::start();
    let printed = import(&d2, "default", &e1, &[]);
    assert_eq!(printed.len(), 3, "{printed:?}");
    assert_eq!(image_rows(&d2, "default"), want);
    let e2 = d2.dir().join("export2.tar");
    let mut args = vec!["image", "export", path_str(&e2)];
    args.extend_from_slice(&names);
    ctl(&d2, "default", &args).ok();
    assert!(fs::read(&e1).unwrap() == fs::read(&e2).unwrap(), "exports of the same images differ");

    // Every blob of the host platform made the trip; the index records both names.
    let content: BTreeSet<String> =
        ctl(&d2, "default", &["content", "ls", "-q"]).ok().lines().map(String::from).collect();
    for key in keys {
        let host = imgs.get(key).host();
        for blob in [&host.manifest, &host.config].into_iter().chain(host.layers.iter().map(|l| &l.blob)) {
            assert!(content.contains(&blob.digest), "{key}: {} missing after round trip", blob.digest);
        }
    }
    let index: serde_json::Value =
        serde_json::from_slice(&files_of(&e1).into_iter().find(|(n, _)| n == "index.json").unwrap().1).unwrap();
    let first = &index["manifests"][0]["annotations"];
    assert_eq!(first["io.containerd.image.name"], images::BUSYBOX);
    assert_eq!(first["org.opencontainers.image.ref.name"], "latest");
}

#[test]
fn docker_archives_round_trip_and_load_like_docker_save() {
    let Some(imgs) = test_images() else { return };
    let d1 = Daemon::start();
    let mut first = Vec::new();
    for key in ["busybox", "multilayer"] {
        let img = imgs.get(key);
        let printed = import(&d1, "default", &imgs.path(&img.docker_archive), &[]);
        assert_eq!(printed.len(), 1);
        assert_eq!(printed[0].0, img.name);
        // The docker path builds a schema 2 manifest around the same config.
        let inspect = ctl(&d1, "default", &["image", "inspect", &img.name]).ok().to_string();
        let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
        assert_eq!(v["target"]["mediaType"], "application/vnd.docker.distribution.manifest.v2+json");
        assert_eq!(v["manifest"]["config"]["digest"], img.host().config.digest.as_str());
        assert_eq!(v["config"]["config"]["Cmd"][0], "sh");
        let layers = v["manifest"]["layers"].as_array().unwrap();
        assert_eq!(layers.len(), img.host().layers.len());
        for (l, want) in layers.iter().zip(&img.host().layers) {
            let gz = want.blob.media_type.ends_with("gzip");
            let media = if gz {
                "application/vnd.docker.image.rootfs.diff.tar.gzip"
            } else {
                "application/vnd.docker.image.rootfs.diff.tar"
            };
            assert_eq!(l["mediaType"], media, "{inspect}");
            assert_eq!(l["digest"], want.blob.digest.as_str());
        }
        first.push(printed[0].clone());
    }
    let out = d1.dir().join("saved.tar");
    ctl(
        &d1,
        "default",
        &["image", "export", "--format", "docker", path_str(&out), images::BUSYBOX, images::MULTILAYER],
    )
    .ok();
    let files = files_of(&out);
    let manifest: serde_json::Value =
        serde_json::from_slice(&files.iter().find(|(n, _)| n == "manifest.json").unwrap().1).unwrap();
    assert_eq!(manifest[0]["RepoTags"][0], "busybox:latest");
    assert_eq!(manifest[1]["RepoTags"][0], "berth/multilayer:latest");
    assert!(files.iter().any(|(n, _)| n == "repositories"));
    for layer in manifest[1]["Layers"].as_array().unwrap() {
        assert!(layer.as_str().unwrap().ends_with("/layer.tar"), "{manifest}");
    }

    let d2 = Daemon::start();
    let mut again = import(&d2, "default", &out, &[]);
    again.sort();
    first.sort();
    assert_eq!(again, first, "same manifests after export and re-import");

    if let Some(skopeo) = external_tool("skopeo") {
        let r = run(Command::new(&skopeo)
            .arg("inspect")
            .arg(format!("docker-archive:{}:berth/multilayer:latest", out.display())));
        let v: serde_json::Value = serde_json::from_str(r.ok()).unwrap();
        assert_eq!(v["Layers"].as_array().unwrap().len(), 3, "{v}");
        assert_eq!(v["Architecture"], images::host_platform().1);
    }
}

#[test]
fn one_image_per_repo_tag_and_stdin_and_gzip_input() {
    let Some(imgs) = test_images() else { return };
    let d = Daemon::start();
    let printed = import(&d, "default", &imgs.path(&imgs.combined_docker_archive), &[]);
    let names: Vec<&str> = printed.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, [images::BUSYBOX, "docker.io/library/busybox:1.0", images::MULTILAYER]);
    assert_eq!(printed[0].1, printed[1].1, "two tags of one image share the manifest");

    // From standard input, gzip-compressed as `docker save | gzip` would give.
    let gz = d.dir().join("multilayer.tar.gz");
    let mut enc = flate2::write::GzEncoder::new(fs::File::create(&gz).unwrap(), flate2::Compression::fast());
    std::io::copy(&mut fs::File::open(imgs.path(&imgs.get("multilayer").oci_archive)).unwrap(), &mut enc).unwrap();
    enc.finish().unwrap();
    let out = Command::new(bin("berthctl"))
        .arg("--address")
        .arg(&d.socket)
        .args(["-n", "stdin", "image", "import", "-"])
        .stdin(fs::File::open(&gz).unwrap())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{} {}", images::MULTILAYER, imgs.get("multilayer").target.digest)
    );
    // A namespace that did not exist is created on demand.
    assert!(d.berthctl(&["ns", "ls", "-q"]).ok().lines().any(|l| l == "stdin"));
}

#[test]
fn multi_platform_indexes_follow_platform_flags() {
    let Some(imgs) = test_images() else { return };
    let img = imgs.get("multiarch");
    let foreign = &img.platforms[1];
    let d = Daemon::start();
    import(&d, "default", &imgs.path(&img.oci_archive), &[]);

    let host_only = d.dir().join("host.tar");
    ctl(&d, "default", &["image", "export", path_str(&host_only), images::MULTIARCH]).ok();
    let names: BTreeSet<String> = files_of(&host_only).into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&blob_name(&img.target.digest)));
    assert!(names.contains(&blob_name(&img.host().manifest.digest)));
    assert!(!names.contains(&blob_name(&foreign.manifest.digest)), "{names:?}");
    assert!(!names.contains(&blob_name(&foreign.layers[0].blob.digest)), "{names:?}");

    let all = d.dir().join("all.tar");
    ctl(&d, "default", &["image", "export", "--all-platforms", path_str(&all), images::MULTIARCH]).ok();
    let names: BTreeSet<String> = files_of(&all).into_iter().map(|(n, _)| n).collect();
    for b in img.all_blobs() {
        assert!(names.contains(&blob_name(&b.digest)), "{} missing: {names:?}", b.digest);
    }

    let docker = d.dir().join("foreign.docker.tar");
    let platform = format!("linux/{}", images::foreign_arch());
    ctl(
        &d,
        "default",
        &["image", "export", "--format", "docker", "--platform", &platform, path_str(&docker), images::MULTIARCH],
    )
    .ok();
    let manifest: serde_json::Value =
        serde_json::from_slice(&files_of(&docker).into_iter().find(|(n, _)| n == "manifest.json").unwrap().1).unwrap();
    assert_eq!(manifest[0]["Config"], format!("{}.json", foreign.config.hex()));
    let both =
        ctl(&d, "default", &["image", "export", "--format", "docker", "--all-platforms", "x.tar", images::MULTIARCH]);
    assert!(both.err().contains("one platform per image"), "{}", both.stderr);

    // An archive holding only the host platform's blobs imports by default, not with
    // --all-platforms (and then leaves nothing behind).
    let partial = d.dir().join("partial.tar");
    let drop: BTreeSet<String> =
        [&foreign.manifest, &foreign.config, &foreign.layers[0].blob].iter().map(|b| blob_name(&b.digest)).collect();
    let files: Vec<_> = files_of(&imgs.path(&img.oci_archive)).into_iter().filter(|(n, _)| !drop.contains(n)).collect();
    write_tar(&partial, &files, true);
    let before = leftovers(&d, "strict");
    let err = ctl(&d, "strict", &["image", "import", "--all-platforms", path_str(&partial)]);
    assert!(err.err().contains("missing blob"), "{}", err.stderr);
    assert!(err.stderr.contains(&foreign.manifest.digest), "{}", err.stderr);
    assert_eq!(leftovers(&d, "strict"), before);
    assert_eq!(import(&d, "strict", &partial, &[]), [(img.name.clone(), img.target.digest.clone())]);
}

#[test]
fn tag_inspect_and_rm_with_collection() {
    let Some(imgs) = test_images() else { return };
    let img = imgs.get("multilayer");
    let d = Daemon::start();
    import(&d, "default", &imgs.path(&img.oci_archive), &[]);
    assert_eq!(
        ctl(&d, "default", &["image", "tag", "berth/multilayer", "berth/copy:1"]).ok(),
        "docker.io/berth/copy:1\n"
    );
    let dup = ctl(&d, "default", &["image", "tag", "berth/multilayer", "berth/copy:1"]);
    assert!(dup.err().contains("already exists"), "{}", dup.stderr);
    let rows = image_rows(&d, "default");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].1, rows[1].1);

    let inspect = ctl(&d, "default", &["images", "inspect", "docker.io/berth/copy:1"]).ok().to_string();
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v["name"], "docker.io/berth/copy:1");
    assert_eq!(v["target"]["digest"], img.target.digest.as_str());
    assert_eq!(v["manifest"]["layers"].as_array().unwrap().len(), 3);
    assert_eq!(v["config"]["architecture"], images::host_platform().1);
    assert_eq!(v["config"]["rootfs"]["diff_ids"][2], img.host().layers[2].diff_id.as_str());

    ctl(&d, "default", &["image", "rm", "--sync", images::MULTILAYER]).ok();
    let content = leftovers(&d, "default").content;
    assert!(content.contains(&img.host().layers[1].blob.digest), "the copy still holds the layers");
    let missing = ctl(&d, "default", &["image", "rm", "berth/copy:1", "berth/ghost"]);
    assert!(missing.err().contains("not found"), "{}", missing.stderr);
    assert_eq!(missing.stdout, "docker.io/berth/copy:1\n");
    d.berthctl(&["gc"]).ok();
    let after = leftovers(&d, "default");
    assert!(after.images.is_empty(), "{after:?}");
    assert!(after.content.is_empty(), "unreferenced content is collected: {after:?}");
}

#[test]
fn bad_archives_fail_clearly_and_leave_nothing() {
    let Some(imgs) = test_images() else { return };
    let d = Daemon::start();
    // Something to keep: a failed import must not touch other images' content.
    import(&d, "default", &imgs.path(&imgs.get("busybox").oci_archive), &[]);
    let baseline = leftovers(&d, "default");
    assert!(!baseline.content.is_empty());

    let ml = imgs.get("multilayer");
    let oci = files_of(&imgs.path(&ml.oci_archive));
    let docker = files_of(&imgs.path(&ml.docker_archive));
    let dir = d.dir().join("bad");
    fs::create_dir_all(&dir).unwrap();
    let mut cases: Vec<(&str, PathBuf, &str)> = Vec::new();
    let mut case = |name: &'static str, files: Vec<(String, Vec<u8>)>, end: bool, want: &'static str| {
        let path = dir.join(format!("{name}.tar"));
        write_tar(&path, &files, end);
        cases.push((name, path, want));
    };

    // Cut inside the second layer, and cut cleanly after a member with no end marker.
    let whole = fs::read(imgs.path(&ml.docker_archive)).unwrap();
    let truncated = dir.join("truncated-mid-member.tar");
    fs::write(&truncated, &whole[..whole.len() * 3 / 4]).unwrap();
    let layer_pos = docker.iter().position(|(n, _)| n.ends_with("layer.tar")).unwrap();
    case("truncated-no-end-marker", docker[..=layer_pos + 1].to_vec(), false, "truncated archive");

    let mut mismatch = oci.clone();
    let layer = blob_name(&ml.host().layers[1].blob.digest);
    mismatch.iter_mut().find(|(n, _)| *n == layer).unwrap().1[600] ^= 1;
    case("digest-mismatch", mismatch, true, "digest mismatch");

    let missing: Vec<_> =
        oci.iter().filter(|(n, _)| *n != blob_name(&ml.host().layers[2].blob.digest)).cloned().collect();
    case("missing-oci-blob", missing, true, "missing blob");
    let missing: Vec<_> =
        docker.iter().filter(|(n, _)| !n.ends_with(".json") || n == "manifest.json").cloned().collect();
    case("missing-docker-config", missing, true, "missing blob");

    let mut dup = oci.clone();
    dup.push(dup.iter().find(|(n, _)| n.starts_with("blobs/")).unwrap().clone());
    case("duplicate-entry", dup, true, "duplicate archive member");
    let mut dotdot = oci.clone();
    dotdot.insert(0, ("../escape".into(), b"x".to_vec()));
    case("dotdot-name", dotdot, true, "unsafe member name");
    let mut absolute = docker.clone();
    absolute.insert(1, ("/etc/evil".into(), b"x".to_vec()));
    case("absolute-name", absolute, true, "unsafe member name");

    let mut bad_manifest = docker.clone();
    bad_manifest.iter_mut().find(|(n, _)| n == "manifest.json").unwrap().1 = b"[{\"Config\": ".to_vec();
    case("manifest-json-not-json", bad_manifest, true, "manifest.json is not valid JSON");
    let mut bad_index = oci.clone();
    bad_index.iter_mut().find(|(n, _)| n == "index.json").unwrap().1 = b"<html>".to_vec();
    case("index-json-not-json", bad_index, true, "index.json is not valid JSON");
    let mut big_index = oci.clone();
    let entry = big_index.iter_mut().find(|(n, _)| n == "index.json").unwrap();
    entry.1.extend(std::iter::repeat_n(b' ', 5 << 20));
    case("oversized-index", big_index, true, "oversized manifest");
    // A "manifest" blob too large to be one, named by index.json.
    let mut huge = b"{\"schemaVersion\":2,\"config\":{},\"layers\":[]}".to_vec();
    huge.extend(std::iter::repeat_n(b' ', 5 << 20));
    let huge_digest = images::sha256_digest(&huge);
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{huge_digest}","size":{},"annotations":{{"io.containerd.image.name":"docker.io/berth/huge:1"}}}}]}}"#,
        huge.len()
    );
    case(
        "oversized-manifest-blob",
        vec![
            ("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
            (blob_name(&huge_digest), huge),
            ("index.json".into(), index.into_bytes()),
        ],
        true,
        "oversized manifest",
    );
    case("not-an-image", vec![("hello.txt".into(), b"hi".to_vec())], true, "not an image archive");
    let garbage = dir.join("garbage.tar");
    fs::write(&garbage, b"this is not a tar archive at all, just some words ".repeat(40)).unwrap();

    let mut all: Vec<(&str, PathBuf, &str)> =
        vec![("truncated-mid-member", truncated, "truncated archive"), ("garbage", garbage, "not a tar archive")];
    all.extend(cases);
    for (name, path, want) in all {
        let r = ctl(&d, "default", &["image", "import", path_str(&path)]);
        let err = r.err();
        assert!(err.contains(want), "{name}: want {want:?} in {err:?}");
        assert_eq!(err.trim().lines().count(), 1, "{name}: one line: {err}");
        assert_eq!(leftovers(&d, "default"), baseline, "{name} left something behind");
    }

    let missing = ctl(&d, "default", &["image", "import", "/nonexistent/archive.tar"]);
    assert!(missing.err().contains("cannot open /nonexistent/archive.tar"), "{}", missing.stderr);
    let bad_ns = ctl(&d, "Bad/NS", &["image", "import", path_str(&imgs.path(&ml.oci_archive))]);
    assert!(bad_ns.err().contains("namespace"), "{}", bad_ns.stderr);
    assert!(!d.berthctl(&["ns", "ls", "-q"]).ok().contains("Bad"));
    assert_eq!(leftovers(&d, "default"), baseline);
}

#[test]
fn ctr_imports_and_exports_our_archives() {
    let Some(imgs) = test_images() else { return };
    let d = Daemon::start();
    let Some(probe) = d.ctr(&["version"]) else { return };
    probe.ok();
    let ml = imgs.get("multilayer");
    // ctr builds the same Docker schema 2 manifest from our docker-save tar as berthctl does.
    let ours = import(&d, "default", &imgs.path(&ml.docker_archive), &[]);
    let r = d.ctr(&["-n", "ctr", "images", "import", "--no-unpack", path_str(&imgs.path(&ml.docker_archive))]).unwrap();
    r.ok();
    let ls = d.ctr(&["-n", "ctr", "images", "ls"]).unwrap().ok().to_string();
    let row: Vec<&str> = ls
        .lines()
        .find(|l| l.starts_with(images::MULTILAYER))
        .unwrap_or_else(|| panic!("{ls}"))
        .split_whitespace()
        .collect();
    assert_eq!(row[2], ours[0].1, "{ls}");
    assert_eq!(row[5], format!("linux/{}", images::host_platform().1), "{ls}");
    assert_eq!(image_rows(&d, "ctr"), ours, "berthctl sees what ctr imported");

    // ctr exports what we imported; we import what ctr exported.
    let out = d.dir().join("ctr-export.tar");
    d.ctr(&["images", "export", path_str(&out), images::MULTILAYER]).unwrap().ok();
    assert_eq!(import(&d, "from-ctr", &out, &[]), ours);

    // ctr imports our OCI export.
    let ours_oci = d.dir().join("ours.tar");
    ctl(&d, "default", &["image", "export", path_str(&ours_oci), images::MULTILAYER]).ok();
    d.ctr(&["-n", "ctr2", "images", "import", "--no-unpack", path_str(&ours_oci)]).unwrap().ok();
    let ls = d.ctr(&["-n", "ctr2", "images", "ls", "-q"]).unwrap().ok().to_string();
    assert_eq!(ls.trim(), images::MULTILAYER);
}

#[test]
fn test_images_and_our_exports_satisfy_skopeo_and_umoci() {
    let Some(imgs) = test_images() else { return };
    let Some(skopeo) = external_tool("skopeo") else { return };
    for img in imgs.images.values() {
        let r = run(Command::new(&skopeo)
            .arg("inspect")
            .arg("--raw")
            .arg(format!("oci-archive:{}", imgs.path(&img.oci_archive).display())));
        let raw = r.ok();
        assert_eq!(images::sha256_digest(raw.trim_end().as_bytes()), img.target.digest, "{raw}");
        let r = run(Command::new(&skopeo)
            .arg("inspect")
            .arg(format!("docker-archive:{}", imgs.path(&img.docker_archive).display())));
        let v: serde_json::Value = serde_json::from_str(r.ok()).unwrap();
        assert_eq!(v["Layers"].as_array().unwrap().len(), img.host().layers.len(), "{v}");
    }

    let Some(umoci) = external_tool("umoci") else { return };
    let d = Daemon::start();
    let ml = imgs.get("multilayer");
    // umoci reads OCI manifests only (not Docker schema 2): start from the OCI archive.
    import(&d, "default", &imgs.path(&ml.oci_archive), &[]);
    let out = d.dir().join("ml.tar");
    ctl(&d, "default", &["image", "export", path_str(&out), images::MULTILAYER]).ok();
    let layout = d.dir().join("layout");
    fs::create_dir_all(&layout).unwrap();
    run(Command::new("tar").arg("-xf").arg(&out).arg("-C").arg(&layout)).ok();
    let bundle = d.dir().join("bundle");
    run(Command::new(&umoci).arg("unpack").arg("--image").arg(format!("{}:latest", layout.display())).arg(&bundle))
        .ok();
    let rootfs = bundle.join("rootfs");
    assert!(rootfs.join("bin/busybox").is_file());
    assert!(rootfs.join("data/keep").is_file());
    assert!(!rootfs.join("data/gone").exists(), "whiteout applied");
    let dir: Vec<String> =
        fs::read_dir(rootfs.join("data/dir")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(dir, ["c"], "opaque directory applied");
    assert_eq!(
        fs::metadata(rootfs.join("tmp"))
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
            .unwrap(),
        0o1777
    );
}
