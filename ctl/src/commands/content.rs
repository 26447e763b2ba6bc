//! `berthctl content ls|get|rm|ingest|label|active|abort`.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use berth_proto::containerd::services::content::v1::content_client::ContentClient;
use berth_proto::containerd::services::content::v1::*;
use clap::Subcommand;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::gc::human_bytes;
use super::{format_labels, parse_labels};
use crate::client::{status_error, Client};
use crate::table::Table;

/// Bytes per Write request, as containerd's clients send.
const CHUNK: usize = 1 << 20;

/// Content commands.
#[derive(Subcommand, Debug)]
pub enum ContentCommand {
    /// List the blobs this namespace can see.
    #[command(visible_alias = "list")]
    Ls {
        /// Print only digests.
        #[arg(long, short)]
        quiet: bool,
        /// Filters such as `size==42` or `labels."k"==v`; any one may match.
        filters: Vec<String>,
    },
    /// Write a blob's bytes to stdout.
    Get {
        /// Digest (`sha256:<hex>`).
        digest: String,
    },
    /// Remove blobs from this namespace; files go at the next collection no namespace needs them.
    #[command(visible_aliases = ["remove", "delete"])]
    Rm {
        /// Digests.
        #[arg(required = true)]
        digests: Vec<String>,
    },
    /// Upload stdin as a blob under an ingest ref and print its digest. An interrupted upload
    /// of the same ref resumes where it stopped.
    Ingest {
        /// Ingest ref: the client's name for this upload.
        #[arg(name = "REF")]
        reference: String,
        /// Refuse the blob unless it has this digest.
        #[arg(long)]
        expected: Option<String>,
        /// Labels for the committed blob, as KEY=VALUE (repeatable).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Work within this lease (it holds the ingest, then the blob).
        #[arg(long)]
        lease: Option<String>,
    },
    /// Set labels on a blob (KEY= removes KEY); with no labels, print them.
    Label {
        /// Digest.
        digest: String,
        /// Labels as KEY=VALUE.
        labels: Vec<String>,
    },
    /// List ingests in progress (uploads not yet committed or aborted).
    Active {
        /// Print only refs.
        #[arg(long, short)]
        quiet: bool,
        /// Filters such as `ref~=^layer`; any one may match.
        filters: Vec<String>,
    },
    /// Abort ingests in progress, discarding what they wrote.
    Abort {
        /// Ingest refs.
        #[arg(required = true)]
        refs: Vec<String>,
    },
}

/// "5 seconds", "3 minutes", ... since `t`.
pub fn age(t: Option<prost_types::Timestamp>) -> String {
    let Some(t) = t.and_then(|t| SystemTime::try_from(t).ok()) else { return "-".into() };
    let secs = SystemTime::now().duration_since(t).unwrap_or(Duration::ZERO).as_secs();
    let (n, unit) = match secs {
        0 => return "less than a second".into(),
        s if s < 120 => (s, "second"),
        s if s < 2 * 3600 => (s / 60, "minute"),
        s if s < 2 * 86_400 => (s / 3600, "hour"),
        s => (s / 86_400, "day"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// Runs a content command.
pub async fn run(client: &Client, cmd: ContentCommand) -> Result<()> {
    let mut svc = ContentClient::new(client.channel.clone());
    match cmd {
        ContentCommand::Ls { quiet, filters } => {
            let mut stream =
                svc.list(client.request(ListContentRequest { filters })).await.map_err(status_error)?.into_inner();
            let mut table = Table::new(&["DIGEST", "SIZE", "AGE", "LABELS"]);
            while let Some(batch) = stream.message().await.map_err(status_error)? {
                for info in batch.info {
                    if quiet {
                        println!("{}", info.digest);
                    } else {
                        let size = human_bytes(u64::try_from(info.size).unwrap_or(0));
                        table.row(vec![info.digest, size, age(info.created_at), format_labels(&info.labels)]);
                    }
                }
            }
            if !quiet {
                table.print()?;
            }
        }
        ContentCommand::Get { digest } => {
            let req = ReadContentRequest { digest, offset: 0, size: 0 };
            let mut stream = svc.read(client.request(req)).await.map_err(status_error)?.into_inner();
            // Blocking writes: the pipe's reader sets the pace, as it should.
            let mut stdout = std::io::stdout().lock();
            let mut expected_offset = 0i64;
            while let Some(chunk) = stream.message().await.map_err(status_error)? {
                if chunk.offset != expected_offset {
                    bail!("berthd sent data at offset {} where {expected_offset} was due", chunk.offset);
                }
                expected_offset += chunk.data.len() as i64;
                stdout.write_all(&chunk.data).context("write to stdout")?;
            }
            stdout.flush().context("write to stdout")?;
        }
        ContentCommand::Rm { digests } => {
            let mut failed = 0;
            for digest in digests {
                match svc.delete(client.request(DeleteContentRequest { digest: digest.clone() })).await {
                    Ok(_) => println!("{digest}"),
                    Err(s) => {
                        eprintln!("berthctl: {}", status_error(s));
                        failed += 1;
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} blob(s) not removed");
            }
        }
        ContentCommand::Ingest { reference, expected, labels, lease } => {
            let labels = parse_labels(&labels)?;
            let stdin = std::io::stdin().as_fd().try_clone_to_owned().context("duplicate stdin")?;
            let upload = Upload { reference, expected: expected.unwrap_or_default(), labels, lease };
            let digest = upload.run(client, std::fs::File::from(stdin)).await?;
            println!("{digest}");
        }
        ContentCommand::Label { digest, labels } => {
            if labels.is_empty() {
                let info = svc.info(client.request(InfoRequest { digest })).await.map_err(status_error)?.into_inner();
                let mut labels: Vec<_> = info.info.map(|i| i.labels.into_iter().collect()).unwrap_or_default();
                labels.sort();
                for (k, v) in labels {
                    println!("{k}={v}");
                }
                return Ok(());
            }
            let labels = parse_labels(&labels)?;
            let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
            // An empty value removes the key: leave it out of the map but keep its path.
            let set = labels.into_iter().filter(|(_, v)| !v.is_empty()).collect();
            svc.update(client.request(UpdateRequest {
                info: Some(Info { digest, labels: set, ..Default::default() }),
                update_mask: Some(prost_types::FieldMask { paths }),
            }))
            .await
            .map_err(status_error)?;
        }
        ContentCommand::Active { quiet, filters } => {
            let statuses = svc
                .list_statuses(client.request(ListStatusesRequest { filters }))
                .await
                .map_err(status_error)?
                .into_inner()
                .statuses;
            let mut table = Table::new(&["REF", "SIZE", "TOTAL", "AGE"]);
            for s in statuses {
                if quiet {
                    println!("{}", s.r#ref);
                    continue;
                }
                let total = if s.total > 0 { human_bytes(s.total as u64) } else { "-".into() };
                table.row(vec![s.r#ref, human_bytes(u64::try_from(s.offset).unwrap_or(0)), total, age(s.started_at)]);
            }
            if !quiet {
                table.print()?;
            }
        }
        ContentCommand::Abort { refs } => {
            let mut failed = 0;
            for r in refs {
                match svc.abort(client.request(AbortRequest { r#ref: r.clone() })).await {
                    Ok(_) => println!("{r}"),
                    Err(s) => {
                        eprintln!("berthctl: {}", status_error(s));
                        failed += 1;
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} ingest(s) not aborted");
            }
        }
    }
    Ok(())
}

/// One upload through the Write stream: STAT, WRITE chunks from where berthd's ingest stands,
/// then COMMIT.
pub struct Upload {
    /// Ingest ref.
    pub reference: String,
    /// Expected digest; empty for none.
    pub expected: String,
    /// Labels of the committed blob.
    pub labels: BTreeMap<String, String>,
    /// Lease to work within.
    pub lease: Option<String>,
}

impl Upload {
    /// Uploads `source` (resuming at the ingest's offset: seeking when `source` is a file,
    /// else skipping) and returns the digest. A blob the namespace already has counts as
    /// uploaded, as containerd's clients treat it.
    pub async fn run(self, client: &Client, mut source: std::fs::File) -> Result<String> {
        let total = source.metadata().ok().filter(|m| m.is_file()).map_or(0, |m| m.len());
        let (tx, rx) = mpsc::channel::<WriteContentRequest>(2);
        let mut req = client.request(ReceiverStream::new(rx));
        if let Some(lease) = &self.lease {
            let value = lease.parse().map_err(|_| anyhow!("lease {lease:?} is not valid"))?;
            req.metadata_mut().insert("containerd-lease", value);
        }
        let stat = WriteContentRequest {
            action: WriteAction::Stat as i32,
            r#ref: self.reference.clone(),
            total: total as i64,
            expected: self.expected.clone(),
            ..Default::default()
        };
        tx.send(stat).await.map_err(|_| anyhow!("write stream closed"))?;
        let mut svc: ContentClient<Channel> = ContentClient::new(client.channel.clone());
        let mut responses = match svc.write(req).await {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == tonic::Code::AlreadyExists && !self.expected.is_empty() => return Ok(self.expected),
            Err(s) => return Err(status_error(s)),
        };
        let mut offset = match reply(&mut responses).await? {
            Ok(resp) => u64::try_from(resp.offset).unwrap_or(0),
            Err(_) => return Ok(self.expected), // already visible: nothing to send
        };
        if offset > 0 {
            skip(&mut source, offset).with_context(|| format!("resume {:?} at offset {offset}", self.reference))?;
        }
        let mut digest = String::new();
        let mut source = Some(source);
        loop {
            let mut file = source.take().ok_or_else(|| anyhow!("input lost"))?;
            let (file, chunk) = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; CHUNK];
                let n = fill(&mut file, &mut buf);
                buf.truncate(n.as_ref().copied().unwrap_or(0));
                (file, n.map(|_| buf))
            })
            .await?;
            source = Some(file);
            let chunk = chunk.context("read stdin")?;
            if chunk.is_empty() {
                break;
            }
            let write = WriteContentRequest {
                action: WriteAction::Write as i32,
                offset: offset as i64,
                data: chunk,
                ..Default::default()
            };
            tx.send(write).await.map_err(|_| anyhow!("write stream closed"))?;
            match reply(&mut responses).await? {
                Ok(resp) => {
                    offset = u64::try_from(resp.offset).unwrap_or(0);
                    digest = resp.digest;
                }
                Err(s) => return Err(status_error(s)),
            }
        }
        let commit = WriteContentRequest {
            action: WriteAction::Commit as i32,
            offset: offset as i64,
            total: offset as i64,
            expected: self.expected.clone(),
            labels: self.labels.into_iter().collect(),
            ..Default::default()
        };
        tx.send(commit).await.map_err(|_| anyhow!("write stream closed"))?;
        match reply(&mut responses).await? {
            Ok(resp) => Ok(resp.digest),
            // The namespace had it already: the upload is done all the same.
            Err(_) if !digest.is_empty() => Ok(digest),
            Err(s) => Err(status_error(s)),
        }
    }
}

/// The next Write response; `Ok(Err(status))` when berthd says the blob already exists.
async fn reply(
    responses: &mut tonic::Streaming<WriteContentResponse>,
) -> Result<Result<WriteContentResponse, tonic::Status>> {
    match responses.message().await {
        Ok(Some(resp)) => Ok(Ok(resp)),
        Ok(None) => Err(anyhow!("berthd closed the write stream")),
        Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(Err(s)),
        Err(s) => Err(status_error(s)),
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Moves `source` past the first `offset` bytes: a seek for files, a read for pipes.
fn skip(source: &mut std::fs::File, offset: u64) -> Result<()> {
    if source.seek(SeekFrom::Start(offset)).is_ok() {
        return Ok(());
    }
    let skipped = std::io::copy(&mut source.take(offset), &mut std::io::sink())?;
    if skipped < offset {
        bail!("the input has only {skipped} bytes but berthd already holds {offset} for this ref");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        let ago = |s: u64| age(Some((SystemTime::now() - Duration::from_secs(s)).into()));
        assert_eq!(ago(0), "less than a second");
        assert_eq!(ago(1), "1 second");
        assert_eq!(ago(90), "90 seconds");
        assert_eq!(ago(600), "10 minutes");
        assert_eq!(ago(3 * 86_400), "3 days");
        assert_eq!(age(None), "-");
    }

    #[test]
    fn skip_reads_pipes_and_seeks_files() {
        let mut f = tempfile_with(b"0123456789");
        skip(&mut f, 4).unwrap();
        let mut rest = String::new();
        f.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "456789");
        let mut buf = [0u8; 4];
        let mut short: &[u8] = b"ab";
        assert_eq!(fill(&mut short, &mut buf).unwrap(), 2);
    }

    fn tempfile_with(data: &[u8]) -> std::fs::File {
        let path = std::env::temp_dir().join(format!("berthctl-content-test-{}", std::process::id()));
        let mut f = std::fs::File::options().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
        f.write_all(data).unwrap();
        f.rewind().unwrap();
        let _ = std::fs::remove_file(&path);
        f
    }
}
