//! `berthctl plugins ls`.

use anyhow::Result;
use berth_proto::containerd::services::introspection::v1::introspection_client::IntrospectionClient;
use berth_proto::containerd::services::introspection::v1::{Plugin, PluginsRequest};
use clap::Subcommand;

use crate::client::{status_error, Client};
use crate::table::Table;

/// Plugin commands.
#[derive(Subcommand, Debug)]
pub enum PluginsCommand {
    /// List plugins with their status (ok, skip, error).
    #[command(visible_alias = "list")]
    Ls {
        /// Print only `type.id`.
        #[arg(long, short)]
        quiet: bool,
        /// Also show requirements, exports and why a plugin was skipped or failed.
        #[arg(long, short)]
        detailed: bool,
        /// Filters such as `type==io.berth.grpc.v1` or `id==sled` (any of them may match).
        filters: Vec<String>,
    },
}

/// The word `ctr plugins ls` prints for a plugin's init outcome.
pub fn status_word(p: &Plugin) -> &'static str {
    match &p.init_err {
        None => "ok",
        Some(e) if e.message.contains("skip plugin") => "skip",
        Some(_) => "error",
    }
}

fn platforms(p: &Plugin) -> String {
    if p.platforms.is_empty() {
        return "-".into();
    }
    p.platforms
        .iter()
        .map(|pl| {
            let mut s = format!("{}/{}", pl.os, pl.architecture);
            if !pl.variant.is_empty() {
                s.push('/');
                s.push_str(&pl.variant);
            }
            s
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs a plugins command.
pub async fn run(client: &Client, cmd: PluginsCommand) -> Result<()> {
    let PluginsCommand::Ls { quiet, detailed, filters } = cmd;
    let resp = IntrospectionClient::new(client.channel.clone())
        .plugins(client.request(PluginsRequest { filters }))
        .await
        .map_err(status_error)?
        .into_inner();
    if quiet {
        for p in &resp.plugins {
            println!("{}.{}", p.r#type, p.id);
        }
        return Ok(());
    }
    if detailed {
        for p in &resp.plugins {
            println!("Type:          {}", p.r#type);
            println!("ID:            {}", p.id);
            if !p.requires.is_empty() {
                println!("Requires:      {}", p.requires.join(", "));
            }
            println!("Platforms:     {}", platforms(p));
            let mut exports: Vec<_> = p.exports.iter().collect();
            exports.sort();
            for (k, v) in exports {
                println!("Export:        {k}={v}");
            }
            if !p.capabilities.is_empty() {
                println!("Capabilities:  {}", p.capabilities.join(", "));
            }
            println!("Status:        {}", status_word(p));
            if let Some(e) = &p.init_err {
                println!("Reason:        {}", e.message);
            }
            println!();
        }
        return Ok(());
    }
    let mut table = Table::new(&["TYPE", "ID", "PLATFORMS", "STATUS"]);
    for p in &resp.plugins {
        table.row(vec![p.r#type.clone(), p.id.clone(), platforms(p), status_word(p).into()]);
    }
    table.print()?;
    Ok(())
}
