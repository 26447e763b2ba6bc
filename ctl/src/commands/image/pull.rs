//! `berthctl image pull`: berthd pulls from the registry (berth.services.transfer.v1) while
//! this draws one progress line per blob (bytes, speed, ETA; plain lines when stdout is not a
//! terminal), then prints the digest.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::Result;
use berth_proto::berth::services::transfer::v1::transfer_client::TransferClient;
use berth_proto::berth::services::transfer::v1::{Progress, PullRequest, Status, TransferResult};
use clap::Args;
use tonic::Streaming;

use super::human_size;
use crate::client::{status_error, Client};

/// Arguments of `image pull`.
#[derive(Args, Debug)]
pub struct PullArgs {
    /// Image reference (`busybox`, `127.0.0.1:5000/team/app:1.0`, `name@sha256:…`).
    pub reference: String,
    /// Platform to pull from an index (`os/arch[/variant]`; default: this host's).
    #[arg(long)]
    pub platform: Option<String>,
    /// Pull every platform of an index (the host's, or --platform's, is unpacked).
    #[arg(long, conflicts_with = "no_unpack")]
    pub all_platforms: bool,
    /// Fetch only; do not unpack into a snapshotter.
    #[arg(long)]
    pub no_unpack: bool,
    /// Snapshotter to unpack into (default: berthd's).
    #[arg(long, default_value = "")]
    pub snapshotter: String,
    /// Print no progress, only the digest.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Runs `image pull`.
pub async fn run(client: &Client, a: PullArgs) -> Result<()> {
    let mut svc = TransferClient::new(client.channel.clone());
    let req = PullRequest {
        reference: a.reference.clone(),
        platform: a.platform.unwrap_or_default(),
        all_platforms: a.all_platforms,
        no_unpack: a.no_unpack,
        snapshotter: a.snapshotter,
    };
    let stream = svc.pull(client.request(req)).await.map_err(status_error)?.into_inner();
    let result = follow(stream, a.quiet).await?;
    if !a.quiet {
        println!("{}: pulled", result.name);
    }
    println!("digest: {}", result.digest);
    Ok(())
}

/// Where one line of the display stands.
struct Line {
    id: String,
    status: Status,
    current: u64,
    total: u64,
    started: Option<(Instant, u64)>,
    printed: Option<Status>,
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Unknown => "unknown",
        Status::Resolving => "resolving",
        Status::Waiting => "waiting",
        Status::Downloading => "downloading",
        Status::Verifying => "verifying",
        Status::Extracting => "extracting",
        Status::Done => "done",
        Status::Exists => "exists",
        Status::Skipped => "skipped",
        Status::Uploading => "uploading",
        Status::Mounted => "mounted",
    }
}

impl Line {
    fn render(&self, width: usize) -> String {
        let mut s = format!("{:<12} {:<11}", self.id.chars().take(40).collect::<String>(), status_word(self.status));
        if matches!(self.status, Status::Downloading | Status::Uploading) && self.total > 0 {
            let bar = 24usize;
            let filled = ((self.current.min(self.total) as f64 / self.total as f64) * bar as f64) as usize;
            let arrow = if filled < bar { ">" } else { "" };
            s.push_str(&format!(
                " [{}{}{}] {}/{}",
                "=".repeat(filled.saturating_sub(arrow.len())),
                arrow,
                " ".repeat(bar - filled),
                human_size(self.current),
                human_size(self.total)
            ));
            if let Some((t0, b0)) = self.started {
                let secs = t0.elapsed().as_secs_f64();
                let done = self.current.saturating_sub(b0);
                if secs > 0.2 && done > 0 {
                    let speed = done as f64 / secs;
                    let eta = (self.total.saturating_sub(self.current)) as f64 / speed;
                    s.push_str(&format!("  {}/s  ETA {}", human_size(speed as u64), eta_text(eta)));
                }
            }
        } else if self.total > 0 && self.status != Status::Resolving {
            s.push_str(&format!(" {}", human_size(self.total)));
        }
        s.chars().take(width.max(20)).collect()
    }
}

fn eta_text(secs: f64) -> String {
    let s = secs.round() as u64;
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Draws progress from `stream` until its final message; returns the result.
pub async fn follow(mut stream: Streaming<Progress>, quiet: bool) -> Result<TransferResult> {
    let tty = std::io::stdout().is_terminal() && !quiet;
    let width = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()).unwrap_or(120usize);
    let mut lines: Vec<Line> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut drawn = 0usize;
    let mut last_draw = Instant::now() - Duration::from_secs(1);
    let mut out = std::io::stdout();
    let draw = |lines: &[Line], drawn: &mut usize, out: &mut std::io::Stdout| {
        let mut buf = String::new();
        if *drawn > 0 {
            buf.push_str(&format!("\x1b[{}A", *drawn));
        }
        for l in lines {
            buf.push_str("\x1b[2K");
            buf.push_str(&l.render(width));
            buf.push('\n');
        }
        *drawn = lines.len();
        let _ = out.write_all(buf.as_bytes());
        let _ = out.flush();
    };
    loop {
        let msg = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => anyhow::bail!("berthd ended the transfer without a result"),
            Err(status) => {
                if tty {
                    draw(&lines, &mut drawn, &mut out);
                }
                return Err(status_error(status));
            }
        };
        if let Some(result) = msg.result {
            if tty {
                draw(&lines, &mut drawn, &mut out);
            }
            return Ok(result);
        }
        if quiet {
            continue;
        }
        let status = Status::try_from(msg.status).unwrap_or(Status::Unknown);
        let i = *index.entry(msg.id.clone()).or_insert_with(|| {
            lines.push(Line { id: msg.id.clone(), status, current: 0, total: 0, started: None, printed: None });
            lines.len() - 1
        });
        let line = &mut lines[i];
        line.status = status;
        line.current = msg.current;
        line.total = msg.total;
        if matches!(status, Status::Downloading | Status::Uploading) && line.started.is_none() {
            line.started = Some((Instant::now(), msg.current));
        }
        if tty {
            if last_draw.elapsed() >= Duration::from_millis(100)
                || !matches!(status, Status::Downloading | Status::Uploading)
            {
                last_draw = Instant::now();
                draw(&lines, &mut drawn, &mut out);
            }
        } else if line.printed != Some(status) {
            line.printed = Some(status);
            println!("{}", line.render(200));
        }
    }
}
