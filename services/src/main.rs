//! berthd: the Berth daemon. Serves containerd's v1 core API on a unix socket.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use berthd::config::{self, Config, DEFAULT_CONFIG_PATH};
use berthd::{builtin, daemon};

/// berthd — the Berth container engine daemon.
///
/// Serves containerd's v1 core API (version, introspection, namespaces, ...) over gRPC on a
/// unix socket, so berthctl, containerd's `ctr` and grpcurl (server reflection) can drive it.
/// Settings come from the config file, then from these flags.
#[derive(Parser, Debug)]
#[command(name = "berthd", version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("BERTH_REVISION"), ")"))]
struct Cli {
    /// Config file (TOML). Missing is fine for the default path; `berthd config default` prints one.
    #[arg(long, short = 'c', env = "BERTH_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Persistent data directory (content, metadata, snapshots) [default: /var/lib/berth].
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Runtime state directory (sockets, shims) [default: /run/berth].
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    /// Unix socket to serve the core API on [default: /run/berth/berth.sock].
    #[arg(long, short = 'a', value_name = "PATH")]
    address: Option<String>,
    /// Log level: trace, debug, info, warn, error (or a tracing filter such as `berthd=debug`).
    #[arg(long, short = 'l', value_name = "LEVEL")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Print the complete default configuration, including every plugin's section.
    Default,
    /// Print the configuration in effect: file plus flags.
    Dump,
}

fn effective_config(cli: &Cli) -> Result<Config> {
    let mut cfg = match &cli.config {
        Some(path) => Config::load(path, true)?,
        None => Config::load(DEFAULT_CONFIG_PATH.as_ref(), false)?,
    };
    if let Some(root) = &cli.root {
        cfg.root = root.clone();
    }
    if let Some(state) = &cli.state {
        cfg.state = state.clone();
    }
    if let Some(addr) = &cli.address {
        cfg.grpc.address = addr.clone();
    }
    if let Some(level) = &cli.log_level {
        cfg.debug.level = level.clone();
    }
    Ok(cfg)
}

fn default_config_with_plugins() -> Config {
    let mut cfg = Config::default();
    for reg in builtin::PLUGINS {
        if let Some(default) = reg.default_config {
            cfg.plugins.insert(reg.uri(), default());
        }
    }
    cfg
}

fn init_logging(cfg: &config::DebugConfig) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.level)
        .with_context(|| format!("invalid log level {:?}", cfg.level))?;
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match cfg.format.as_str() {
        "text" => builder.init(),
        "json" => builder.json().init(),
        other => anyhow::bail!("unknown log format {other:?}: use text or json"),
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    if let Err(err) = run(cli) {
        eprintln!("berthd: {err:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Some(Command::Config(ConfigCommand::Default)) => {
            print!("{}", toml::to_string_pretty(&default_config_with_plugins())?);
            return Ok(());
        }
        Some(Command::Config(ConfigCommand::Dump)) => {
            let mut cfg = effective_config(&cli)?;
            for (key, value) in default_config_with_plugins().plugins {
                cfg.plugins.entry(key).or_insert(value);
            }
            print!("{}", toml::to_string_pretty(&cfg)?);
            return Ok(());
        }
        None => {}
    }
    let cfg = effective_config(&cli)?;
    init_logging(&cfg.debug)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("berthd")
        .build()
        .context("start async runtime")?;
    runtime.block_on(daemon::run(cfg))
}
