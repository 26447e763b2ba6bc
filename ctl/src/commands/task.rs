//! `berthctl task ls|ps|kill|exec|attach|pause|resume|metrics|rm|wait`.

use anyhow::{anyhow, bail, Result};
use berth_proto::containerd::services::containers::v1::containers_client::ContainersClient;
use berth_proto::containerd::services::containers::v1::GetContainerRequest;
use berth_proto::containerd::services::tasks::v1::tasks_client::TasksClient;
use berth_proto::containerd::services::tasks::v1::*;
use berth_proto::containerd::v1::types::Status as ProcStatus;
use clap::Subcommand;
use serde_json::Value;

use super::run::{attach, forward_resize, Fifos, RawTerminal, PROCESS_TYPE_URL};
use crate::client::{status_error, Client};
use crate::table::Table;

/// Task commands.
#[derive(Subcommand, Debug)]
pub enum TaskCommand {
    /// List tasks.
    #[command(visible_alias = "list")]
    Ls {
        /// Print only ids.
        #[arg(long, short)]
        quiet: bool,
    },
    /// List the processes of a task.
    Ps {
        /// Task (container) id.
        id: String,
    },
    /// Signal a task (SIGTERM unless --signal).
    Kill {
        /// Signal name (TERM, SIGKILL) or number.
        #[arg(long, short, default_value = "SIGTERM")]
        signal: String,
        /// Signal every process of the task.
        #[arg(long)]
        all: bool,
        /// Signal this exec process instead of the init.
        #[arg(long)]
        exec_id: Option<String>,
        /// Task id.
        id: String,
    },
    /// Run another process in a running task and pass its exit code through.
    Exec {
        /// Exec id (default: a generated one).
        #[arg(long)]
        exec_id: Option<String>,
        /// Allocate a terminal.
        #[arg(long, short = 't')]
        tty: bool,
        /// Run in the background and print the exec id.
        #[arg(long, short = 'd')]
        detach: bool,
        /// Working directory.
        #[arg(long)]
        cwd: Option<String>,
        /// Extra environment (KEY=VALUE).
        #[arg(long = "env", short = 'e')]
        env: Vec<String>,
        /// Task id.
        id: String,
        /// Command and arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Copy a task's stdout and stderr here (its stdio fifos) until it exits.
    Attach {
        /// Task id.
        id: String,
    },
    /// Freeze every process of a task.
    Pause {
        /// Task id.
        id: String,
    },
    /// Thaw a paused task.
    Resume {
        /// Task id.
        id: String,
    },
    /// Print cgroup statistics of tasks as JSON.
    Metrics {
        /// Task ids (all when none).
        ids: Vec<String>,
    },
    /// Wait for a task to exit and print its exit status.
    Wait {
        /// Task id.
        id: String,
    },
    /// Delete stopped tasks (--force kills running ones first).
    #[command(visible_aliases = ["delete", "remove"])]
    Rm {
        /// Kill a running task first.
        #[arg(long, short)]
        force: bool,
        /// Task ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

fn status_name(s: i32) -> &'static str {
    match ProcStatus::try_from(s).unwrap_or(ProcStatus::Unknown) {
        ProcStatus::Unknown => "UNKNOWN",
        ProcStatus::Created => "CREATED",
        ProcStatus::Running => "RUNNING",
        ProcStatus::Stopped => "STOPPED",
        ProcStatus::Paused => "PAUSED",
        ProcStatus::Pausing => "PAUSING",
    }
}

/// A signal by name (`TERM`, `SIGKILL`) or number.
pub fn parse_signal(s: &str) -> Result<u32> {
    if let Ok(n) = s.parse::<u32>() {
        return Ok(n);
    }
    let name = s.trim_start_matches("SIG").to_ascii_uppercase();
    let n = match name.as_str() {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "WINCH" => libc::SIGWINCH,
        _ => bail!("unknown signal {s:?}"),
    };
    Ok(n as u32)
}

async fn wait_stopped(tasks: &mut TasksClient<tonic::transport::Channel>, client: &Client, id: &str) {
    for _ in 0..100 {
        match tasks.get(client.request(GetRequest { container_id: id.into(), exec_id: String::new() })).await {
            Ok(r) if r.get_ref().process.as_ref().is_some_and(|p| p.status == ProcStatus::Stopped as i32) => return,
            Err(_) => return,
            _ => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
}

/// Runs a task command; returns the exit code to exit with.
pub async fn run(client: &Client, cmd: TaskCommand) -> Result<i32> {
    let mut tasks = TasksClient::new(client.channel.clone());
    match cmd {
        TaskCommand::Ls { quiet } => {
            let list = tasks.list(client.request(ListTasksRequest::default())).await.map_err(status_error)?;
            let mut table = Table::new(&["TASK", "PID", "STATUS", "EXIT"]);
            for t in list.into_inner().tasks {
                if quiet {
                    println!("{}", t.id);
                    continue;
                }
                let exit = if t.status == ProcStatus::Stopped as i32 { t.exit_status.to_string() } else { "-".into() };
                table.row(vec![t.id, t.pid.to_string(), status_name(t.status).into(), exit]);
            }
            if !quiet {
                table.print()?;
            }
        }
        TaskCommand::Ps { id } => {
            let r =
                tasks.list_pids(client.request(ListPidsRequest { container_id: id })).await.map_err(status_error)?;
            let mut table = Table::new(&["PID"]);
            for p in r.into_inner().processes {
                table.row(vec![p.pid.to_string()]);
            }
            table.print()?;
        }
        TaskCommand::Kill { signal, all, exec_id, id } => {
            let req = KillRequest {
                container_id: id,
                exec_id: exec_id.unwrap_or_default(),
                signal: parse_signal(&signal)?,
                all,
            };
            tasks.kill(client.request(req)).await.map_err(status_error)?;
        }
        TaskCommand::Exec { exec_id, tty, detach, cwd, env, id, args } => {
            let mut containers = ContainersClient::new(client.channel.clone());
            let c = containers
                .get(client.request(GetContainerRequest { id: id.clone() }))
                .await
                .map_err(status_error)?
                .into_inner()
                .container
                .ok_or_else(|| anyhow!("container {id:?}: not found"))?;
            let spec: Value = c.spec.as_ref().and_then(|s| serde_json::from_slice(&s.value).ok()).unwrap_or_default();
            let mut process = spec["process"].clone();
            if !process.is_object() {
                process = serde_json::json!({ "user": {"uid": 0, "gid": 0}, "cwd": "/", "env": [] });
            }
            process["args"] = serde_json::json!(args);
            process["terminal"] = serde_json::json!(tty);
            if let Some(cwd) = cwd {
                process["cwd"] = serde_json::json!(cwd);
            }
            if let Some(list) = process["env"].as_array_mut() {
                list.extend(env.into_iter().map(Value::String));
            }
            let exec_id = exec_id.unwrap_or_else(|| format!("exec-{}", std::process::id()));
            let fifos = if detach { None } else { Some(Fifos::new(&exec_id)?) };
            let (stdin, stdout, mut stderr) = match &fifos {
                Some(f) => (f.stdin.clone(), f.stdout.clone(), f.stderr.clone()),
                None => Default::default(),
            };
            if tty {
                stderr.clear();
            }
            let req = ExecProcessRequest {
                container_id: id.clone(),
                stdin,
                stdout,
                stderr: stderr.clone(),
                terminal: tty,
                spec: Some(prost_types::Any {
                    type_url: PROCESS_TYPE_URL.into(),
                    value: serde_json::to_vec(&process)?,
                }),
                exec_id: exec_id.clone(),
            };
            tasks.exec(client.request(req)).await.map_err(status_error)?;
            let io = match &fifos {
                Some(f) => Some(attach(client, Some(&f.stdin), &f.stdout, &stderr, &id, &exec_id).await?),
                None => None,
            };
            let raw = (tty && !detach).then(RawTerminal::enter);
            let mut waiter = TasksClient::new(client.channel.clone());
            let wreq = client.request(WaitRequest { container_id: id.clone(), exec_id: exec_id.clone() });
            let wait = tokio::spawn(async move { waiter.wait(wreq).await });
            let started =
                tasks.start(client.request(StartRequest { container_id: id.clone(), exec_id: exec_id.clone() })).await;
            if let Err(s) = started {
                let _ = tasks.delete_process(client.request(DeleteProcessRequest { container_id: id, exec_id })).await;
                return Err(status_error(s));
            }
            if detach {
                println!("{exec_id}");
                return Ok(0);
            }
            if tty {
                forward_resize(client, &id, &exec_id);
            }
            let code = wait.await?.map_err(status_error)?.into_inner().exit_status;
            if let Some(io) = io {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(2), io).await;
            }
            drop(raw);
            let _ = tasks.delete_process(client.request(DeleteProcessRequest { container_id: id, exec_id })).await;
            return Ok(code as i32);
        }
        TaskCommand::Attach { id } => {
            let p = tasks
                .get(client.request(GetRequest { container_id: id.clone(), exec_id: String::new() }))
                .await
                .map_err(status_error)?
                .into_inner()
                .process
                .ok_or_else(|| anyhow!("task {id:?}: not found"))?;
            if p.stdout.is_empty() {
                bail!("task {id:?} was started detached: it has no stdio to attach to");
            }
            let io = attach(client, None, &p.stdout, &p.stderr, &id, "").await?;
            let mut waiter = TasksClient::new(client.channel.clone());
            let code = waiter
                .wait(client.request(WaitRequest { container_id: id, exec_id: String::new() }))
                .await
                .map_err(status_error)?
                .into_inner()
                .exit_status;
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), io).await;
            return Ok(code as i32);
        }
        TaskCommand::Pause { id } => {
            tasks.pause(client.request(PauseTaskRequest { container_id: id })).await.map_err(status_error)?;
        }
        TaskCommand::Resume { id } => {
            tasks.resume(client.request(ResumeTaskRequest { container_id: id })).await.map_err(status_error)?;
        }
        TaskCommand::Metrics { ids } => {
            let filters = ids.iter().map(|i| format!("id=={i}")).collect();
            let r = tasks.metrics(client.request(MetricsRequest { filters })).await.map_err(status_error)?;
            let out: Vec<Value> = r
                .into_inner()
                .metrics
                .into_iter()
                .map(|m| {
                    let data = m.data.map(|d| serde_json::from_slice::<Value>(&d.value).unwrap_or(Value::Null));
                    serde_json::json!({ "id": m.id, "data": data })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        TaskCommand::Wait { id } => {
            let r = tasks
                .wait(client.request(WaitRequest { container_id: id, exec_id: String::new() }))
                .await
                .map_err(status_error)?;
            let code = r.into_inner().exit_status;
            println!("{code}");
            return Ok(code as i32);
        }
        TaskCommand::Rm { force, ids } => {
            let mut failed = 0;
            for id in ids {
                if force {
                    let kill = KillRequest {
                        container_id: id.clone(),
                        exec_id: String::new(),
                        signal: libc::SIGKILL as u32,
                        all: true,
                    };
                    if tasks.kill(client.request(kill)).await.is_ok() {
                        wait_stopped(&mut tasks, client, &id).await;
                    }
                }
                match tasks.delete(client.request(DeleteTaskRequest { container_id: id.clone() })).await {
                    Ok(r) => println!("{id} {}", r.into_inner().exit_status),
                    Err(s) => {
                        eprintln!("berthctl: {}", status_error(s));
                        failed += 1;
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} task(s) not removed");
            }
        }
    }
    Ok(0)
}
