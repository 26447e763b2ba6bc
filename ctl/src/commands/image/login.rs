//! `berthctl login` and `logout`: berthd checks the credentials against the registry and
//! keeps them in its own store (mode 0600 under its root) for pulls and pushes.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{bail, Context, Result};
use berth_proto::berth::services::transfer::v1::transfer_client::TransferClient;
use berth_proto::berth::services::transfer::v1::{LoginRequest, LogoutRequest};
use clap::Args;

use crate::client::{status_error, Client};

/// Arguments of `login`.
#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Registry host[:port].
    pub server: String,
    /// User name (asked for when missing and stdin is a terminal).
    #[arg(long, short)]
    pub username: Option<String>,
    /// Read the password from stdin (one line).
    #[arg(long, conflicts_with = "password")]
    pub password_stdin: bool,
    /// The password (visible to other users in the process list: prefer --password-stdin).
    #[arg(long, short)]
    pub password: Option<String>,
}

/// Arguments of `logout`.
#[derive(Args, Debug)]
pub struct LogoutArgs {
    /// Registry host[:port].
    pub server: String,
}

fn read_line(prompt: &str) -> Result<String> {
    if !prompt.is_empty() {
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
    }
    let mut s = String::new();
    std::io::stdin().lock().read_line(&mut s).context("read stdin")?;
    Ok(s.trim_end_matches(['\r', '\n']).to_string())
}

/// Runs `login`.
pub async fn login(client: &Client, a: LoginArgs) -> Result<()> {
    let interactive = std::io::stdin().is_terminal();
    let username = match a.username {
        Some(u) => u,
        None if interactive && !a.password_stdin => read_line("Username: ")?,
        None => bail!("--username is required"),
    };
    let password = if let Some(p) = a.password {
        p
    } else if a.password_stdin {
        read_line("")?
    } else if interactive {
        read_line("Password (echoed): ")?
    } else {
        bail!("no password: use --password-stdin")
    };
    let mut svc = TransferClient::new(client.channel.clone());
    svc.login(client.request(LoginRequest { server: a.server.clone(), username, password }))
        .await
        .map_err(status_error)?;
    println!("Login Succeeded ({})", a.server);
    Ok(())
}

/// Runs `logout`.
pub async fn logout(client: &Client, a: LogoutArgs) -> Result<()> {
    let mut svc = TransferClient::new(client.channel.clone());
    svc.logout(client.request(LogoutRequest { server: a.server.clone() })).await.map_err(status_error)?;
    println!("Removed login credentials for {}", a.server);
    Ok(())
}
