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
    /// Print cgroup statistics of tasks: memory, cpu, pids, block I/O.
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

/// A limit as cgroups write "no limit": v1's largest page-aligned i64, v2's `max` (u64::MAX),
/// pids' 0.
fn limit(v: u64) -> String {
    if v == 0 || v >= 0x7fff_ffff_ffff_f000 {
        "max".into()
    } else {
        v.to_string()
    }
}

/// The rows `task metrics` shows for one task's cgroup statistics (containerd's cgroup v1 or
/// v2 metrics message), named after the cgroup files they come from.
fn metric_rows(data: &prost_types::Any) -> Vec<(String, String)> {
    use berth_proto::io::containerd::cgroups::{v1, v2};
    use prost::{Message, Name};

    let mut rows: Vec<(String, String)> = Vec::new();
    let mut add = |name: &str, value: String| rows.push((name.to_string(), value));
    if data.type_url == v1::Metrics::full_name() {
        let Ok(m) = v1::Metrics::decode(data.value.as_slice()) else {
            return vec![("error".into(), format!("undecodable {}", data.type_url))];
        };
        if let Some(mem) = &m.memory {
            let usage = mem.usage.unwrap_or_default();
            add("memory.usage_in_bytes", usage.usage.to_string());
            add("memory.limit_in_bytes", limit(usage.limit));
            add("memory.max_usage_in_bytes", usage.max.to_string());
            add("memory.failcnt", usage.failcnt.to_string());
            add("memory.stat.total_rss", mem.total_rss.to_string());
            add("memory.stat.total_cache", mem.total_cache.to_string());
        }
        if let Some(oom) = &m.memory_oom_control {
            add("memory.oom_control.oom_kill", oom.oom_kill.to_string());
        }
        if let Some(usage) = m.cpu.as_ref().and_then(|c| c.usage.as_ref()) {
            add("cpuacct.usage", usage.total.to_string());
            add("cpuacct.usage_user", usage.user.to_string());
            add("cpuacct.usage_sys", usage.kernel.to_string());
            let per_cpu: Vec<String> = usage.per_cpu.iter().map(u64::to_string).collect();
            add("cpuacct.usage_percpu", per_cpu.join(" "));
        }
        if let Some(t) = m.cpu.as_ref().and_then(|c| c.throttling.as_ref()) {
            add("cpu.stat.nr_throttled", t.throttled_periods.to_string());
        }
        if let Some(p) = &m.pids {
            add("pids.current", p.current.to_string());
            add("pids.max", limit(p.limit));
        }
        if let Some(b) = &m.blkio {
            let sum = |op: &str| {
                b.io_service_bytes_recursive
                    .iter()
                    .filter(|e| e.op.eq_ignore_ascii_case(op))
                    .map(|e| e.value)
                    .sum::<u64>()
            };
            add("blkio.read_bytes", sum("read").to_string());
            add("blkio.write_bytes", sum("write").to_string());
        }
        for h in &m.hugetlb {
            add(&format!("hugetlb.{}.usage_in_bytes", h.pagesize), h.usage.to_string());
        }
    } else if data.type_url == v2::Metrics::full_name() {
        let Ok(m) = v2::Metrics::decode(data.value.as_slice()) else {
            return vec![("error".into(), format!("undecodable {}", data.type_url))];
        };
        if let Some(mem) = &m.memory {
            add("memory.current", mem.usage.to_string());
            add("memory.max", limit(mem.usage_limit));
            add("memory.peak", mem.max_usage.to_string());
            add("memory.swap.current", mem.swap_usage.to_string());
            add("memory.swap.max", limit(mem.swap_limit));
            add("memory.stat.anon", mem.anon.to_string());
            add("memory.stat.file", mem.file.to_string());
        }
        if let Some(e) = &m.memory_events {
            add("memory.events.oom_kill", e.oom_kill.to_string());
        }
        if let Some(c) = &m.cpu {
            add("cpu.stat.usage_usec", c.usage_usec.to_string());
            add("cpu.stat.user_usec", c.user_usec.to_string());
            add("cpu.stat.system_usec", c.system_usec.to_string());
            add("cpu.stat.nr_throttled", c.nr_throttled.to_string());
        }
        if let Some(p) = &m.pids {
            add("pids.current", p.current.to_string());
            add("pids.max", limit(p.limit));
        }
        if let Some(io) = &m.io {
            add("io.stat.rbytes", io.usage.iter().map(|e| e.rbytes).sum::<u64>().to_string());
            add("io.stat.wbytes", io.usage.iter().map(|e| e.wbytes).sum::<u64>().to_string());
        }
        for h in &m.hugetlb {
            add(&format!("hugetlb.{}.current", h.pagesize), h.current.to_string());
        }
    } else {
        add("data", format!("{} bytes of {}", data.value.len(), data.type_url));
    }
    rows
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
            let metrics = r.into_inner().metrics;
            if metrics.is_empty() && !ids.is_empty() {
                bail!("no metrics for {}: no such running task", ids.join(", "));
            }
            let mut table = Table::new(&["TASK", "METRIC", "VALUE"]);
            for m in metrics {
                for (name, value) in m.data.as_ref().map(metric_rows).unwrap_or_default() {
                    table.row(vec![m.id.clone(), name, value]);
                }
            }
            table.print()?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::io::containerd::cgroups::{v1, v2};

    fn value<'a>(rows: &'a [(String, String)], name: &str) -> &'a str {
        rows.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()).unwrap_or_else(|| panic!("{name} in {rows:?}"))
    }

    #[test]
    fn metric_rows_of_v1_and_v2() {
        let m = v1::Metrics {
            memory: Some(v1::MemoryStat {
                usage: Some(v1::MemoryEntry { limit: 16 << 20, usage: 1234, ..Default::default() }),
                ..Default::default()
            }),
            pids: Some(v1::PidsStat { current: 2, limit: 0 }),
            cpu: Some(v1::CpuStat {
                usage: Some(v1::CpuUsage { total: 99, per_cpu: vec![40, 59], ..Default::default() }),
                throttling: None,
            }),
            ..Default::default()
        };
        let rows = metric_rows(&berth_proto::to_any(&m));
        assert_eq!(value(&rows, "memory.limit_in_bytes"), "16777216");
        assert_eq!(value(&rows, "memory.usage_in_bytes"), "1234");
        assert_eq!((value(&rows, "pids.current"), value(&rows, "pids.max")), ("2", "max"));
        assert_eq!(value(&rows, "cpuacct.usage_percpu"), "40 59");

        let m = v2::Metrics {
            memory: Some(v2::MemoryStat { usage: 10, usage_limit: u64::MAX, ..Default::default() }),
            pids: Some(v2::PidsStat { current: 1, limit: 8 }),
            ..Default::default()
        };
        let rows = metric_rows(&berth_proto::to_any(&m));
        assert_eq!((value(&rows, "memory.current"), value(&rows, "memory.max")), ("10", "max"));
        assert_eq!(value(&rows, "pids.max"), "8");

        let other = prost_types::Any { type_url: "x.Y".into(), value: vec![1, 2] };
        assert_eq!(metric_rows(&other), vec![("data".to_string(), "2 bytes of x.Y".to_string())]);
    }
}
