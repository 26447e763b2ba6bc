//! The conformance suite every snapshotter runs: one function per rule of the contract in
//! the crate doc, each given a factory that opens the snapshotter on a fresh root.
//! [`conformance_tests!`](crate::conformance_tests) turns it into one `#[test]` per check.
//!
//! Checks mount for real, so they need root; without it they print `SKIPPED` and pass.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use berth_core::filters::Filter;
use berth_core::ErrorKind;
use berth_metadata::{MetadataConfig, MetadataStore};
use berth_mount::MountGuard;

use crate::{CreateOptions, Kind, Mount, Snapshotter, REF_LABEL};

/// Opens a snapshotter rooted at the given directory on the given metadata store.
pub type Factory = dyn Fn(&Path, Arc<MetadataStore>) -> Arc<dyn Snapshotter>;

/// One `#[test]` per conformance check, for the snapshotter `$make` opens.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@ $make; lifecycle, errors_leave_nothing_behind, views, labels_and_filters,
            usage, whiteouts_hide_lower_files, long_chains_mount, leases, cleanup, namespaces_are_isolated);
    };
    (@ $make:expr; $($check:ident),*) => {
        $(#[test] fn $check() { $crate::testsuite::$check(&$make) })*
    };
}

const NS: &str = "testsuite";

struct Fixture {
    dir: tempfile::TempDir,
    meta: Arc<MetadataStore>,
    sn: Arc<dyn Snapshotter>,
}

fn fixture(make: &Factory) -> Option<Fixture> {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: the snapshotter conformance suite mounts and needs root");
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = Arc::new(MetadataStore::open(&dir.path().join("meta.sled"), &MetadataConfig::default()).unwrap());
    let sn = make(&dir.path().join("root"), meta.clone());
    Some(Fixture { dir, meta, sn })
}

impl Fixture {
    /// Mounts `mounts` on a fresh directory, runs `f` on it and unmounts (also on panic).
    fn with_mounted<R>(&self, mounts: &[Mount], f: impl FnOnce(&Path) -> R) -> R {
        let target = tempfile::tempdir_in(self.dir.path()).unwrap();
        let guard = MountGuard::mount(mounts, target.path()).unwrap();
        let r = f(target.path());
        guard.unmount().unwrap();
        r
    }

    /// Prepares `key` on `parent`, applies `f` to its mounted tree and commits it as `name`.
    fn layer(&self, name: &str, parent: &str, f: impl FnOnce(&Path)) {
        let key = format!("extract-{name}");
        let mounts = self.sn.prepare(NS, &key, parent, &CreateOptions::default()).unwrap();
        self.with_mounted(&mounts, f);
        self.sn.commit(NS, name, &key, &CreateOptions::default()).unwrap();
    }

    fn dirs_on_disk(&self) -> usize {
        fs::read_dir(self.sn.root().join("snapshots")).map(|d| d.count()).unwrap_or(0)
    }
}

fn none() -> CreateOptions {
    CreateOptions::default()
}

fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Prepare, write, commit, prepare on top, stat and list.
pub fn lifecycle(make: &Factory) {
    let Some(fx) = fixture(make) else { return };
    let sn = &fx.sn;
    let mounts = sn.prepare(NS, "a", "", &none()).unwrap();
    assert_eq!(sn.stat(NS, "a").unwrap().kind, Kind::Active);
    assert_eq!(sn.mounts(NS, "a").unwrap(), mounts);
    fx.with_mounted(&mounts, |m| fs::write(m.join("base-file"), "base").unwrap());
    sn.commit(NS, "base", "a", &none()).unwrap();
    assert_eq!(sn.stat(NS, "a").unwrap_err().kind(), ErrorKind::NotFound, "the key is gone after commit");
    let base = sn.stat(NS, "base").unwrap();
    assert_eq!((base.kind, base.parent.as_str()), (Kind::Committed, ""));

    let mounts = sn.prepare(NS, "b", "base", &none()).unwrap();
    fx.with_mounted(&mounts, |m| {
        assert_eq!(fs::read_to_string(m.join("base-file")).unwrap(), "base", "parent's file visible in child");
        fs::write(m.join("child-file"), "child").unwrap();
    });
    sn.commit(NS, "top", "b", &none()).unwrap();
    let top = sn.stat(NS, "top").unwrap();
    assert_eq!((top.kind, top.parent.as_str()), (Kind::Committed, "base"));

    let mounts = sn.prepare(NS, "container", "top", &none()).unwrap();
    fx.with_mounted(&mounts, |m| {
        assert_eq!(fs::read_to_string(m.join("base-file")).unwrap(), "base");
        assert_eq!(fs::read_to_string(m.join("child-file")).unwrap(), "child");
    });
    let names: Vec<_> = sn.list(NS, &Filter::default()).unwrap().into_iter().map(|i| i.name).collect();
    assert_eq!(names, ["base", "container", "top"]);
    let active = Filter::parse_all(&["kind==active"]).unwrap();
    assert_eq!(sn.list(NS, &active).unwrap().len(), 1);
    let on_base = Filter::parse_all(&["parent==base"]).unwrap();
    assert_eq!(sn.list(NS, &on_base).unwrap()[0].name, "top");

    sn.remove(NS, "container").unwrap();
    sn.remove(NS, "top").unwrap();
    sn.remove(NS, "base").unwrap();
    assert!(sn.list(NS, &Filter::default()).unwrap().is_empty());
    assert_eq!(fx.dirs_on_disk(), 0, "removal removes the directories");
}

/// Error kinds of the contract, and failed calls leave no record and no directory.
pub fn errors_leave_nothing_behind(make: &Factory) {
    let Some(fx) = fixture(make) else { return };
    let sn = &fx.sn;
    fx.layer("base", "", |m| fs::write(m.join("f"), "x").unwrap());
    sn.prepare(NS, "active", "base", &none()).unwrap();
    sn.view(NS, "view", "base", &none()).unwrap();
    let on_disk = fx.dirs_on_disk();

    let kind = |r: berth_core::Result<Vec<Mount>>| r.unwrap_err().kind();
    assert_eq!(kind(sn.prepare(NS, "active", "", &none())), ErrorKind::AlreadyExists);
    assert_eq!(kind(sn.view(NS, "base", "", &none())), ErrorKind::AlreadyExists, "names and keys share a space");
    assert_eq!(kind(sn.prepare(NS, "x", "missing", &none())), ErrorKind::NotFound);
    assert_eq!(kind(sn.prepare(NS, "x", "active", &none())), ErrorKind::InvalidArgument, "parent not committed");
    assert_eq!(kind(sn.prepare(NS, "", "", &none())), ErrorKind::InvalidArgument);
    let lease = CreateOptions { lease: Some("no-such-lease".into()), ..none() };
    assert_eq!(kind(sn.prepare(NS, "x", "base", &lease)), ErrorKind::NotFound);
    assert_eq!(sn.commit(NS, "n", "view", &none()).unwrap_err().kind(), ErrorKind::FailedPrecondition);
    assert_eq!(sn.commit(NS, "n", "base", &none()).unwrap_err().kind(), ErrorKind::FailedPrecondition);
    assert_eq!(sn.commit(NS, "base", "active", &none()).unwrap_err().kind(), ErrorKind::AlreadyExists);
    assert_eq!(sn.commit(NS, "n", "missing", &none()).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(sn.remove(NS, "base").unwrap_err().kind(), ErrorKind::FailedPrecondition, "has children");
    assert_eq!(sn.remove(NS, "missing").unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(sn.stat(NS, "x").unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(sn.list(NS, &Filter::default()).unwrap().len(), 3);
    assert_eq!(fx.dirs_on_disk(), on_disk, "failed calls left directories behind");

    sn.remove(NS, "active").unwrap();
    assert_eq!(sn.remove(NS, "base").unwrap_err().kind(), ErrorKind::FailedPrecondition, "the view is a child");
    sn.remove(NS, "view").unwrap();
    sn.remove(NS, "base").unwrap();
}

/// Views are read-only and show their parent chain.
pub fn views(make: &Factory) {
    let Some(fx) = fixture(make) else { return };
    let sn = &fx.sn;
    fx.layer("l1", "", |m| fs::write(m.join("one"), "1").unwrap());
    fx.layer("l2", "l1", |m| fs::write(m.join("two"), "2").unwrap());
    for (key, parent) in [("v1", "l1"), ("v2", "l2")] {
        let mounts = sn.view(NS, key, parent, &none()).unwrap();
        assert_eq!(sn.stat(NS, key).unwrap().kind, Kind::View);
        fx.with_mounted(&mounts, |m| {
            assert_eq!(fs::read_to_string(m.join("one")).unwrap(), "1");
            assert_eq!(m.join("two").exists(), parent == "l2");
            let err = fs::write(m.join("new"), "x").unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EROFS), "views are read-only");
        });
    }
    let empty = sn.view(NS, "v0", "", &none()).unwrap();
    fx.with_mounted(&empty, |m| assert_eq!(fs::read_dir(m).unwrap().count(), 0));
}

/// Labels on create and commit, updates by field path, and filters on them.
pub fn labels_and_filters(make: &Factory) {
    let Some(fx) = fixture(make) else { return };
    let sn = &fx.sn;
    let opts = CreateOptions { labels: labels(&[("a", "1"), ("b", "2")]), lease: None };
    sn.prepare(NS, "k", "", &opts).unwrap();
    assert_eq!(sn.stat(NS, "k").unwrap().labels, opts.labels);
    let commit = CreateOptions { labels: labels(&[(REF_LABEL, "sha256:chain1")]), lease: None };
    sn.commit(NS, "layer", "k", &commit).unwrap();
    assert_eq!(sn.stat(NS, "layer").unwrap().labels, commit.labels, "commit labels replace the key's");

    let mut info = sn.stat(NS, "layer").unwrap();
    let before = info.updated_at;
    info.labels = labels(&[("x", "y")]);
    let updated = sn.update(NS, &info, &["labels.x".into()]).unwrap();
    assert_eq!(updated.labels, labels(&[(REF_LABEL, "sha256:chain1"), ("x", "y")]));
    assert!(updated.updated_at >= before);
    info.labels = labels(&[("z", "1")]);
    assert_eq!(sn.update(NS, &info, &[]).unwrap().labels, labels(&[("z", "1")]), "no paths: replace all");
    info.labels = labels(&[(REF_LABEL, "sha256:chain1")]);
    sn.update(NS, &info, &["labels".into()]).unwrap();
    assert_eq!(sn.update(NS, &info, &["parent".into()]).unwrap_err().kind(), ErrorKind::InvalidArgument);
    info.name = "missing".into();
    assert_eq!(sn.update(NS, &info, &[]).unwrap_err().kind(), ErrorKind::NotFound);

    sn.prepare(NS, "other", "layer", &none()).unwrap();
    let by_ref = Filter::parse_all(&[format!(r#"labels."{REF_LABEL}"==sha256:chain1"#)]).unwrap();
    let found: Vec<_> = sn.list(NS, &by_ref).unwrap().into_iter().map(|i| i.name).collect();
    assert_eq!(found, ["layer"]);
    let by_name = Filter::parse_all(&["name==other,kind==active"]).unwrap();
    assert_eq!(sn.list(NS, &by_name).unwrap().len(), 1);
    let too_big = CreateOptions { labels: labels(&[("k", &"v".repeat(5000))]), lease: None };
    assert_eq!(sn.prepare(NS, "big", "", &too_big).unwrap_err().kind(), ErrorKind::InvalidArgument);
}

/// Usage is measured for active snapshots and kept for committed ones.
pub fn usage(make: &Factory) {
    let Some(fx) = fixture(make) else { return };
    let sn = &fx.sn;
    let mounts = sn.prepare(NS, "a", "", &none()).unwrap();
    let empty = sn.usage(NS, "a").unwrap();
    assert_eq!(empty.inodes, 1, "just the root directory: {empty:?}");
    fx.with_mounted(&mounts, |m| {
        fs::write(m.join("big"), vec![7u8; 1 << 20]).unwrap();
        fs::create_dir(m.join("d")).unwrap();
        fs::hard_link(m.join("big"), m.join("d/link")).unwrap();
    });
    let active = sn.usage(NS, "a").unwrap();
    assert_eq!(active.inodes, 3, "root, d, and big counted once: {active:?}");
    assert!(active.size >= 1 << 20, "{active:?}");
    sn.commit(NS, "c", "a", &none()).unwrap();
    assert_eq!(sn.usage(NS, "c").unwrap(), active);
    assert_eq!(sn.usage(NS, "a").unwrap_err().kind(), ErrorKind::NotFound);
}

/// A file deleted in a child layer stays hidden above it and visible in the parent.
pub fn whiteouts_hide_lower_files(make: &Factory) {
    let Some(fx) = fixture(make) else { return };
    let sn = &fx.sn;
    fx.layer("base", "", |m| {
        fs::write(m.join("gone"), "x").unwrap();
        fs::write(m.join("kept"), "y").unwrap();
        fs::create_dir_all(m.join("dir/sub")).unwrap();
        fs::write(m.join("dir/sub/f"), "z").unwrap();
    });
    fx.layer("deleted", "base", |m| {
        fs::remove_file(m.join("gone")).unwrap();
        fs::remove_dir_all(m.join("dir")).unwrap();
        fs::create_dir(m.join("dir")).unwrap(); // now opaque: the old contents stay hidden
    });
    sn.prepare(NS, "v", "deleted", &none()).unwrap();
    let mounts = sn.view(NS, "top", "deleted", &none()).unwrap();
    fx.with_mounted(&mounts, |m| {
        assert!(!m.join("gone").exists(), "whiteout hides the lower file");
        assert!(m.join("dir").is_dir() && !m.join("dir/sub").exists(), "opaque directory hides lower contents");
        assert_eq!(fs::read_to_string(m.join("kept")).unwrap(), "y");
    });
    let mounts = sn.mounts(NS, "v").unwrap();
    fx.with_mounted(&mounts, |m| assert!(!m.join("gone").exists(), "and in an active child"));
    let mounts = sn.view(NS, "base-view", "base", &none()).unwrap();
    fx.with_mounted(&mounts, |m| assert!(m.join("gone").exists() && m.join("dir/sub/f").exists()));
}

/// A chain of 130 layers mounts as a view and as an active snapshot on top.
pub fn long_chains_mount(make: &Factory) {
    let Some(fx) = fixture(make) else { return };
    let sn = &fx.sn;
    const DEPTH: usize = 130;
    let mut parent = String::new();
    for i in 0..DEPTH {
        let name = format!("sha256:{i:064}");
        fx.layer(&name, &parent, |m| {
            fs::write(m.join(format!("f{i}")), i.to_string()).unwrap();
            fs::write(m.join("top"), i.to_string()).unwrap();
        });
        parent = name;
    }
    let check = |m: &Path| {
        for i in 0..DEPTH {
            assert_eq!(fs::read_to_string(m.join(format!("f{i}"))).unwrap(), i.to_string());
        }
        assert_eq!(fs::read_to_string(m.join("top")).unwrap(), (DEPTH - 1).to_string(), "the newest layer wins");
    };
    let view = sn.view(NS, "view", &parent, &none()).unwrap();
    fx.with_mounted(&view, check);
    let active = sn.prepare(NS, "rootfs", &parent, &none()).unwrap();
    fx.with_mounted(&active, |m| {
        check(m);
        fs::write(m.join("new"), "n").unwrap();
    });
    assert!(sn.usage(NS, "rootfs").unwrap().inodes >= 2);
}

/// Snapshots made within a lease are added to it, under their key and then their name.
pub fn leases(make: &Factory) {
    let Some(fx) = fixture(make) else { return };
    let sn = &fx.sn;
    fx.meta.create_lease(NS, "l", BTreeMap::new()).unwrap();
    let opts = CreateOptions { lease: Some("l".into()), ..none() };
    sn.prepare(NS, "k", "", &opts).unwrap();
    let kind = format!("snapshots/{}", sn.name());
    let ids = |fx: &Fixture| -> Vec<String> {
        fx.meta.lease_resources(NS, "l").unwrap().into_iter().filter(|r| r.kind == kind).map(|r| r.id).collect()
    };
    assert_eq!(ids(&fx), ["k"]);
    sn.commit(NS, "committed", "k", &opts).unwrap();
    assert_eq!(ids(&fx), ["committed"]);
    sn.view(NS, "v", "committed", &opts).unwrap();
    assert_eq!(ids(&fx), ["committed", "v"]);
}

/// Cleanup removes directories without records and keeps every live one.
pub fn cleanup(make: &Factory) {
    let Some(fx) = fixture(make) else { return };
    let sn = &fx.sn;
    fx.layer("base", "", |m| fs::write(m.join("f"), "x").unwrap());
    let mounts = sn.prepare(NS, "a", "base", &none()).unwrap();
    let live = fx.dirs_on_disk();
    let stray = sn.root().join("snapshots/999999");
    fs::create_dir_all(stray.join("fs/deep")).unwrap();
    fs::create_dir_all(sn.root().join("snapshots/rm-5")).unwrap();
    assert_eq!(sn.cleanup().unwrap(), 2);
    assert!(!stray.exists());
    assert_eq!(fx.dirs_on_disk(), live);
    fx.with_mounted(&mounts, |m| assert!(m.join("f").exists()));
    assert_eq!(sn.cleanup().unwrap(), 0);
}

/// The same key in two namespaces names two snapshots.
pub fn namespaces_are_isolated(make: &Factory) {
    let Some(fx) = fixture(make) else { return };
    let sn = &fx.sn;
    let a = sn.prepare("ns-a", "same", "", &none()).unwrap();
    let b = sn.prepare("ns-b", "same", "", &none()).unwrap();
    assert_ne!(a, b);
    fx.with_mounted(&a, |m| fs::write(m.join("only-a"), "a").unwrap());
    fx.with_mounted(&b, |m| assert!(!m.join("only-a").exists()));
    sn.remove("ns-a", "same").unwrap();
    assert_eq!(sn.stat("ns-b", "same").unwrap().kind, Kind::Active);
    assert!(sn.list("ns-a", &Filter::default()).unwrap().is_empty());
}
