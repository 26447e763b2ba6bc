//! The plugin registry: each plugin declares a type, an id, the types it requires and an init
//! function. The registry orders plugins so that every required type is initialised first,
//! runs each init once, and records the outcome (ok, skipped with a reason, or error) for
//! introspection. A plugin whose requirement has no working plugin is skipped, not fatal.

use std::any::Any;
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use anyhow::{bail, Result};
use berth_core::Platform;
use serde::de::DeserializeOwned;

use crate::config::Config;

/// A live plugin instance; consumers downcast to the concrete type they expect.
pub type Instance = Arc<dyn Any + Send + Sync>;

/// Why an init did not produce an instance.
#[derive(Debug)]
pub enum InitError {
    /// The plugin cannot run here (unsupported kernel feature, missing binary): not a failure.
    Skip(String),
    /// The plugin should have run but failed.
    Fail(String),
}

impl<E: std::fmt::Display> From<E> for InitError {
    fn from(e: E) -> Self {
        InitError::Fail(e.to_string())
    }
}

/// How a plugin is declared.
pub struct Registration {
    /// Plugin type, e.g. `io.berth.metadata.v1`.
    pub plugin_type: &'static str,
    /// Id, unique within the type.
    pub id: &'static str,
    /// Types that must have at least one working plugin before this one starts.
    pub requires: &'static [&'static str],
    /// The plugin's default config section, shown by `berthd config default`.
    pub default_config: Option<fn() -> toml::Value>,
    /// Builds the instance.
    pub init: fn(&mut InitContext<'_>) -> Result<Instance, InitError>,
}

impl Registration {
    /// `type.id`, the key of the plugin's config section.
    pub fn uri(&self) -> String {
        format!("{}.{}", self.plugin_type, self.id)
    }
}

/// Outcome of a plugin's init.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Initialised and running.
    Ok,
    /// Not started, for the given reason.
    Skipped(String),
    /// Init failed with the given error.
    Error(String),
}

/// What introspection reports for one plugin.
#[derive(Debug, Clone)]
pub struct PluginRecord {
    /// Plugin type.
    pub plugin_type: String,
    /// Plugin id.
    pub id: String,
    /// Required types.
    pub requires: Vec<String>,
    /// Platforms the plugin serves (runtimes, snapshotters).
    pub platforms: Vec<Platform>,
    /// Key/value facts the plugin exports (paths, addresses).
    pub exports: BTreeMap<String, String>,
    /// Capabilities the plugin advertises.
    pub capabilities: Vec<String>,
    /// Init outcome.
    pub status: Status,
}

/// The records of every plugin, in init order; shared with the introspection service.
pub type PluginTable = Arc<RwLock<Vec<PluginRecord>>>;

/// Daemon-wide facts handed to every plugin.
#[derive(Debug, Clone)]
pub struct DaemonContext {
    /// Persistent root.
    pub root: PathBuf,
    /// Runtime state directory.
    pub state: PathBuf,
    /// The core socket path.
    pub address: PathBuf,
    /// Server uuid, stable across restarts.
    pub uuid: String,
}

/// What an init function sees.
pub struct InitContext<'a> {
    /// Daemon-wide facts.
    pub daemon: &'a DaemonContext,
    /// Filled by init: exported facts.
    pub exports: BTreeMap<String, String>,
    /// Filled by init: platforms served.
    pub platforms: Vec<Platform>,
    /// Filled by init: capabilities.
    pub capabilities: Vec<String>,
    config: Option<&'a toml::Value>,
    uri: String,
    started: &'a [(usize, Instance)],
    registrations: &'a [Registration],
    table: &'a PluginTable,
}

impl InitContext<'_> {
    /// The plugin's config section merged over its type's defaults (`T::default()` when absent).
    pub fn config<T: DeserializeOwned + Default>(&self) -> Result<T, InitError> {
        match self.config {
            None => Ok(T::default()),
            Some(v) => v.clone().try_into().map_err(|e| {
                InitError::Fail(format!("invalid config [plugins.{:?}]: {}", self.uri, e.to_string().trim()))
            }),
        }
    }

    /// The first working instance of `plugin_type`, downcast to `T`.
    pub fn get<T: Send + Sync + 'static>(&self, plugin_type: &str) -> Result<Arc<T>, InitError> {
        self.instances(plugin_type)
            .into_iter()
            .find_map(|(_, inst)| inst.downcast::<T>().ok())
            .ok_or_else(|| InitError::Fail(format!("no usable plugin of type {plugin_type}")))
    }

    /// Every working instance of `plugin_type` with its id.
    pub fn instances(&self, plugin_type: &str) -> Vec<(&'static str, Instance)> {
        self.started
            .iter()
            .filter(|(i, _)| self.registrations[*i].plugin_type == plugin_type)
            .map(|(i, inst)| (self.registrations[*i].id, inst.clone()))
            .collect()
    }

    /// The live table of plugin records (for introspection).
    pub fn plugin_table(&self) -> PluginTable {
        self.table.clone()
    }
}

/// The initialised plugin set.
pub struct Plugins {
    registrations: &'static [Registration],
    started: Vec<(usize, Instance)>,
    table: PluginTable,
}

impl Plugins {
    /// Every working instance of `plugin_type`, in init order.
    pub fn instances(&self, plugin_type: &str) -> Vec<(&'static str, Instance)> {
        self.started
            .iter()
            .filter(|(i, _)| self.registrations[*i].plugin_type == plugin_type)
            .map(|(i, inst)| (self.registrations[*i].id, inst.clone()))
            .collect()
    }

    /// A copy of the plugin records.
    pub fn records(&self) -> Vec<PluginRecord> {
        self.table.read().map(|t| t.clone()).unwrap_or_default()
    }
}

/// Orders registrations so that each comes after every plugin of each type it requires.
/// Registrations keep their list order otherwise. A dependency cycle is an error.
pub fn resolve(regs: &[Registration]) -> Result<Vec<usize>> {
    fn visit(i: usize, regs: &[Registration], state: &mut [u8], out: &mut Vec<usize>) -> Result<()> {
        match state[i] {
            2 => return Ok(()),
            1 => bail!("plugin dependency cycle through {}", regs[i].uri()),
            _ => {}
        }
        state[i] = 1;
        for req in regs[i].requires {
            for (j, r) in regs.iter().enumerate() {
                if r.plugin_type == *req && j != i {
                    visit(j, regs, state, out)?;
                }
            }
        }
        state[i] = 2;
        out.push(i);
        Ok(())
    }
    let mut seen = HashSet::new();
    for r in regs {
        if !seen.insert((r.plugin_type, r.id)) {
            bail!("plugin {} registered twice", r.uri());
        }
    }
    let mut state = vec![0u8; regs.len()];
    let mut out = Vec::with_capacity(regs.len());
    for i in 0..regs.len() {
        visit(i, regs, &mut state, &mut out)?;
    }
    Ok(out)
}

/// Checks that every config section names a registered plugin, so typos are not ignored.
pub fn check_config(regs: &[Registration], config: &Config) -> Result<()> {
    for key in config.plugins.keys() {
        if !regs.iter().any(|r| r.uri() == *key) {
            let known: Vec<_> = regs.iter().filter(|r| r.default_config.is_some()).map(|r| r.uri()).collect();
            bail!("config section [plugins.{key:?}] names no plugin (configurable plugins: {})", known.join(", "));
        }
    }
    Ok(())
}

/// Initialises every plugin in dependency order and records its outcome.
pub fn init_all(regs: &'static [Registration], config: &Config, daemon: &DaemonContext) -> Result<Plugins> {
    check_config(regs, config)?;
    let order = resolve(regs)?;
    let table: PluginTable = Arc::new(RwLock::new(Vec::new()));
    let mut started: Vec<(usize, Instance)> = Vec::new();
    for i in order {
        let reg = &regs[i];
        let mut record = PluginRecord {
            plugin_type: reg.plugin_type.into(),
            id: reg.id.into(),
            requires: reg.requires.iter().map(|s| s.to_string()).collect(),
            platforms: Vec::new(),
            exports: BTreeMap::new(),
            capabilities: Vec::new(),
            status: Status::Ok,
        };
        let missing = reg.requires.iter().find(|t| !started.iter().any(|(j, _)| regs[*j].plugin_type == **t));
        if config.is_disabled(reg.plugin_type, reg.id) {
            record.status = Status::Skipped("disabled in config".into());
        } else if let Some(t) = missing {
            record.status = Status::Skipped(format!("requires {t}, but no plugin of that type is running"));
        } else {
            let mut ctx = InitContext {
                daemon,
                exports: BTreeMap::new(),
                platforms: Vec::new(),
                capabilities: Vec::new(),
                config: config.plugins.get(&reg.uri()),
                uri: reg.uri(),
                started: &started,
                registrations: regs,
                table: &table,
            };
            let result = (reg.init)(&mut ctx);
            record.exports = ctx.exports;
            record.platforms = ctx.platforms;
            record.capabilities = ctx.capabilities;
            match result {
                Ok(inst) => started.push((i, inst)),
                Err(InitError::Skip(why)) => record.status = Status::Skipped(why),
                Err(InitError::Fail(why)) => record.status = Status::Error(why),
            }
        }
        match &record.status {
            Status::Ok => tracing::info!(plugin = %reg.uri(), "loaded plugin"),
            Status::Skipped(why) => tracing::info!(plugin = %reg.uri(), reason = %why, "skipped plugin"),
            Status::Error(why) => tracing::warn!(plugin = %reg.uri(), error = %why, "plugin failed to load"),
        }
        table.write().map_err(|_| anyhow::anyhow!("plugin table poisoned"))?.push(record);
    }
    Ok(Plugins { registrations: regs, started, table })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(_: &mut InitContext<'_>) -> Result<Instance, InitError> {
        Ok(Arc::new(()))
    }
    fn skip(_: &mut InitContext<'_>) -> Result<Instance, InitError> {
        Err(InitError::Skip("unsupported here".into()))
    }
    fn fail(_: &mut InitContext<'_>) -> Result<Instance, InitError> {
        Err(InitError::Fail("boom".into()))
    }
    fn needs_number(ctx: &mut InitContext<'_>) -> Result<Instance, InitError> {
        let n = ctx.get::<u32>("t.num")?;
        ctx.exports.insert("n".into(), n.to_string());
        Ok(Arc::new(()))
    }
    fn number(_: &mut InitContext<'_>) -> Result<Instance, InitError> {
        Ok(Arc::new(7u32))
    }

    const fn reg(
        plugin_type: &'static str,
        id: &'static str,
        requires: &'static [&'static str],
        init: fn(&mut InitContext<'_>) -> Result<Instance, InitError>,
    ) -> Registration {
        Registration { plugin_type, id, requires, default_config: None, init }
    }

    fn daemon() -> DaemonContext {
        DaemonContext { root: "/r".into(), state: "/s".into(), address: "/s/x.sock".into(), uuid: "u".into() }
    }

    fn status_of(p: &Plugins, id: &str) -> Status {
        p.records().into_iter().find(|r| r.id == id).map(|r| r.status).unwrap()
    }

    static CHAIN: [Registration; 4] = [
        reg("t.c", "c", &["t.b"], ok),
        reg("t.b", "b", &["t.a"], ok),
        reg("t.a", "a", &[], ok),
        reg("t.a", "a2", &[], ok),
    ];

    #[test]
    fn requirements_come_first() {
        let order = resolve(&CHAIN).unwrap();
        let pos = |id: &str| order.iter().position(|&i| CHAIN[i].id == id).unwrap();
        assert!(pos("a") < pos("b") && pos("a2") < pos("b") && pos("b") < pos("c"));
    }

    static CYCLE: [Registration; 2] = [reg("t.x", "x", &["t.y"], ok), reg("t.y", "y", &["t.x"], ok)];

    #[test]
    fn cycles_are_refused() {
        assert!(resolve(&CYCLE).unwrap_err().to_string().contains("cycle"));
    }

    static MIXED: [Registration; 6] = [
        reg("t.svc", "uses-skipped", &["t.skip"], ok),
        reg("t.skip", "s", &[], skip),
        reg("t.fail", "f", &[], fail),
        reg("t.svc", "uses-failed", &["t.fail"], ok),
        reg("t.svc", "uses-num", &["t.num"], needs_number),
        reg("t.num", "num", &[], number),
    ];

    #[test]
    fn statuses_and_skips_propagate() {
        let p = init_all(&MIXED, &Config::default(), &daemon()).unwrap();
        assert_eq!(status_of(&p, "s"), Status::Skipped("unsupported here".into()));
        assert_eq!(status_of(&p, "f"), Status::Error("boom".into()));
        assert!(matches!(status_of(&p, "uses-skipped"), Status::Skipped(r) if r.contains("requires t.skip")));
        assert!(matches!(status_of(&p, "uses-failed"), Status::Skipped(r) if r.contains("requires t.fail")));
        assert_eq!(status_of(&p, "uses-num"), Status::Ok);
        let rec = p.records().into_iter().find(|r| r.id == "uses-num").unwrap();
        assert_eq!(rec.exports["n"], "7");
        assert_eq!(p.instances("t.svc").len(), 1);
    }

    #[test]
    fn config_can_disable_and_unknown_sections_fail() {
        let cfg = Config { disabled_plugins: vec!["num".into()], ..Config::default() };
        let p = init_all(&MIXED, &cfg, &daemon()).unwrap();
        assert_eq!(status_of(&p, "num"), Status::Skipped("disabled in config".into()));
        assert!(matches!(status_of(&p, "uses-num"), Status::Skipped(_)));

        let mut cfg = Config::default();
        cfg.plugins.insert("t.nope.x".into(), toml::Value::Table(Default::default()));
        assert!(init_all(&MIXED, &cfg, &daemon()).is_err());
    }
}
