//! berthctl: the command-line client of berthd.

mod archive;
mod client;
mod commands;
mod table;

use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::client::DEFAULT_ADDRESS;
use crate::commands::container::ContainerCommand;
use crate::commands::content::ContentCommand;
use crate::commands::image::ImageCommand;
use crate::commands::run::RunArgs;
use crate::commands::snapshots::SnapshotsArgs;
use crate::commands::task::TaskCommand;
use crate::commands::{leases::LeasesCommand, namespaces::NamespacesCommand, plugins::PluginsCommand};

/// berthctl — drive the Berth container engine.
///
/// Talks to berthd's containerd-compatible API over its unix socket. Every object lives in a
/// namespace (`default` unless -n/BERTH_NAMESPACE says otherwise).
#[derive(Parser, Debug)]
#[command(name = "berthctl", version = concat!(env!("CARGO_PKG_VERSION")))]
pub struct Cli {
    /// berthd socket address.
    #[arg(long, short = 'a', global = true, env = "BERTH_ADDRESS", default_value = DEFAULT_ADDRESS)]
    pub address: String,
    /// Namespace to work in.
    #[arg(long, short = 'n', global = true, env = "BERTH_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Seconds to wait for berthd to accept the connection.
    #[arg(long, global = true, default_value_t = 5)]
    pub timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print client and server versions.
    Version,
    /// Inspect berthd's plugins.
    #[command(subcommand)]
    Plugins(PluginsCommand),
    /// Manage namespaces.
    #[command(subcommand, visible_alias = "ns", alias = "namespace")]
    Namespaces(NamespacesCommand),
    /// Manage leases (holds that protect content from garbage collection).
    #[command(subcommand, visible_alias = "lease")]
    Leases(LeasesCommand),
    /// Manage content: blobs and the ingests that upload them.
    #[command(subcommand)]
    Content(ContentCommand),
    /// Manage snapshots: the filesystems of image layers and containers.
    #[command(visible_alias = "snapshot")]
    Snapshots(SnapshotsArgs),
    /// Manage images: import and export archives, list, inspect, tag, remove.
    #[command(subcommand, visible_alias = "images")]
    Image(ImageCommand),
    /// Manage containers (metadata; their running processes are tasks).
    #[command(subcommand, visible_aliases = ["containers", "c"])]
    Container(ContainerCommand),
    /// Log in to a registry (berthd checks and stores the credentials).
    Login(commands::image::login::LoginArgs),
    /// Forget the stored credentials of a registry.
    Logout(commands::image::login::LogoutArgs),
    /// Create and start a container from an image (`--rm` removes it after it exits).
    Run(Box<RunArgs>),
    /// Manage tasks: the running processes of containers.
    #[command(subcommand, visible_alias = "tasks")]
    Task(TaskCommand),
    /// Run the garbage collector now and print what it freed.
    Gc,
    /// Stream events (filters such as `topic==/images/create`; any one may match).
    Events {
        /// Filters.
        filters: Vec<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berthctl: cannot start async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(err) = runtime.block_on(run(cli)) {
        eprintln!("berthctl: {err:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let client = client::Client::connect(&cli.address, &cli.namespace, Duration::from_secs(cli.timeout)).await?;
    match cli.command {
        Command::Version => commands::version::run(&client).await,
        Command::Plugins(cmd) => commands::plugins::run(&client, cmd).await,
        Command::Namespaces(cmd) => commands::namespaces::run(&client, cmd).await,
        Command::Leases(cmd) => commands::leases::run(&client, cmd).await,
        Command::Content(cmd) => commands::content::run(&client, cmd).await,
        Command::Snapshots(args) => commands::snapshots::run(&client, args).await,
        Command::Image(cmd) => commands::image::run(&client, cmd).await,
        Command::Container(cmd) => commands::container::run(&client, cmd).await,
        Command::Run(args) => commands::run::exit_with(commands::run::run(&client, &cli.namespace, *args).await?),
        Command::Task(cmd) => match commands::task::run(&client, cmd).await? {
            0 => Ok(()),
            code => commands::run::exit_with(code),
        },
        Command::Login(a) => commands::image::login::login(&client, a).await,
        Command::Logout(a) => commands::image::login::logout(&client, a).await,
        Command::Gc => commands::gc::run(&client).await,
        Command::Events { filters } => commands::events::run(&client, filters).await,
    }
}
