//! containerd.services.tasks.v1.Tasks over the runtime plugin: each call goes to the task's
//! berth-shim. Publishes /tasks/create|start|delete|exec-added|exec-started|paused|resumed
//! here; /tasks/exit and /tasks/oom come from the shims through the runtime plugin.

use std::sync::Arc;

use berth_metadata::MetadataStore;
use berth_proto::berth::shim::v1 as shim;
use berth_proto::containerd::events::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskIo, TaskPaused, TaskResumed, TaskStart,
};
use berth_proto::containerd::services::tasks::v1::tasks_server::{Tasks, TasksServer};
use berth_proto::containerd::services::tasks::v1::*;
use berth_proto::containerd::types::{Metric, Mount};
use berth_proto::containerd::v1::types::Process;
use berth_runtime::{Shim, ShimManager};
use berth_snapshots::SharedSnapshotter;
use tonic::{Request, Response, Status};

use super::{blocking, grpc_service, request_namespace, to_status};
use crate::builtin::{EVENTS, METADATA, RUNTIME};
use crate::exchange::Exchange;
use crate::registry::{InitContext, InitError, Instance};

struct TasksService {
    store: Arc<MetadataStore>,
    events: Arc<Exchange>,
    runtime: Arc<ShimManager>,
    snapshotters: std::collections::BTreeMap<String, SharedSnapshotter>,
}

fn process_from_state(container_id: &str, s: shim::StateResponse) -> Process {
    Process {
        container_id: container_id.into(),
        // containerd names the init process by the container id; clients read the task id here.
        id: if s.exec_id.is_empty() { container_id.into() } else { s.exec_id },
        pid: s.pid,
        status: s.status,
        stdin: s.stdin,
        stdout: s.stdout,
        stderr: s.stderr,
        terminal: s.terminal,
        exit_status: s.exit_status,
        exited_at: s.exited_at,
    }
}

impl TasksService {
    fn shim(&self, ns: &str, id: &str) -> Result<Arc<Shim>, Status> {
        self.runtime.get(ns, id).map_err(to_status)
    }

    async fn state(&self, shim: &Shim, exec_id: &str) -> Result<Process, Status> {
        let s = shim
            .client
            .clone()
            .state(shim::StateRequest { id: shim.id.clone(), exec_id: exec_id.into() })
            .await?
            .into_inner();
        Ok(process_from_state(&shim.id, s))
    }

    /// The rootfs mounts of a container from its snapshot, when the request gave none.
    async fn snapshot_mounts(&self, ns: &str, snapshotter: &str, key: &str) -> Result<Vec<Mount>, Status> {
        let sn = self
            .snapshotters
            .get(snapshotter)
            .cloned()
            .ok_or_else(|| Status::failed_precondition(format!("snapshotter {snapshotter:?} is not available")))?;
        let (ns, key) = (ns.to_string(), key.to_string());
        let mounts = blocking(move || sn.mounts(&ns, &key)).await?;
        Ok(mounts
            .into_iter()
            .map(|m| Mount { r#type: m.kind, source: m.source, target: m.target, options: m.options })
            .collect())
    }
}

#[tonic::async_trait]
impl Tasks for TasksService {
    async fn create(&self, req: Request<CreateTaskRequest>) -> Result<Response<CreateTaskResponse>, Status> {
        let ns = request_namespace(&req)?;
        let req = req.into_inner();
        if req.checkpoint.is_some() {
            return Err(Status::unimplemented("checkpoint restore is not supported"));
        }
        let store = self.store.clone();
        let (ns2, id2) = (ns.clone(), req.container_id.clone());
        let container = blocking(move || store.get_container(&ns2, &id2)).await?;
        let spec = container.spec.ok_or_else(|| Status::failed_precondition("container has no spec"))?;
        let mut rootfs = req.rootfs;
        if rootfs.is_empty() && !container.snapshot_key.is_empty() {
            rootfs = self.snapshot_mounts(&ns, &container.snapshotter, &container.snapshot_key).await?;
        }
        let shim = self.runtime.start(&ns, &container.id, &spec.value).await.map_err(to_status)?;
        let create = shim::CreateTaskRequest {
            id: container.id.clone(),
            bundle: shim.bundle.display().to_string(),
            rootfs: rootfs.clone(),
            terminal: req.terminal,
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            options: req.options,
        };
        let pid = match shim.client.clone().create(create).await {
            Ok(r) => r.into_inner().pid,
            Err(s) => {
                self.runtime.remove(&ns, &container.id).await;
                return Err(s);
            }
        };
        self.events.publish(
            &ns,
            "/tasks/create",
            &TaskCreate {
                container_id: container.id.clone(),
                bundle: shim.bundle.display().to_string(),
                rootfs,
                io: Some(TaskIo { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, terminal: req.terminal }),
                checkpoint: String::new(),
                pid,
            },
        );
        tracing::info!(namespace = %ns, task = %container.id, pid, "task created");
        Ok(Response::new(CreateTaskResponse { container_id: container.id, pid }))
    }

    async fn start(&self, req: Request<StartRequest>) -> Result<Response<StartResponse>, Status> {
        let ns = request_namespace(&req)?;
        let req = req.into_inner();
        let shim = self.shim(&ns, &req.container_id)?;
        let pid = shim
            .client
            .clone()
            .start(shim::StartRequest { id: req.container_id.clone(), exec_id: req.exec_id.clone() })
            .await?
            .into_inner()
            .pid;
        if req.exec_id.is_empty() {
            self.events.publish(&ns, "/tasks/start", &TaskStart { container_id: req.container_id, pid });
        } else {
            self.events.publish(
                &ns,
                "/tasks/exec-started",
                &TaskExecStarted { container_id: req.container_id, exec_id: req.exec_id, pid },
            );
        }
        Ok(Response::new(StartResponse { pid }))
    }

    async fn delete(&self, req: Request<DeleteTaskRequest>) -> Result<Response<DeleteResponse>, Status> {
        let ns = request_namespace(&req)?;
        let id = req.into_inner().container_id;
        let shim = self.shim(&ns, &id)?;
        let r = shim.client.clone().delete(shim::DeleteRequest { id: id.clone(), exec_id: String::new() }).await?;
        let r = r.into_inner();
        self.runtime.remove(&ns, &id).await;
        self.events.publish(
            &ns,
            "/tasks/delete",
            &TaskDelete {
                container_id: id.clone(),
                pid: r.pid,
                exit_status: r.exit_status,
                exited_at: r.exited_at,
                id: id.clone(),
            },
        );
        Ok(Response::new(DeleteResponse { id, pid: r.pid, exit_status: r.exit_status, exited_at: r.exited_at }))
    }

    async fn delete_process(&self, req: Request<DeleteProcessRequest>) -> Result<Response<DeleteResponse>, Status> {
        let ns = request_namespace(&req)?;
        let req = req.into_inner();
        if req.exec_id.is_empty() {
            return Err(Status::invalid_argument("exec id must be set (use Delete for the task)"));
        }
        let shim = self.shim(&ns, &req.container_id)?;
        let r = shim
            .client
            .clone()
            .delete(shim::DeleteRequest { id: req.container_id.clone(), exec_id: req.exec_id.clone() })
            .await?
            .into_inner();
        self.events.publish(
            &ns,
            "/tasks/delete",
            &TaskDelete {
                container_id: req.container_id,
                pid: r.pid,
                exit_status: r.exit_status,
                exited_at: r.exited_at,
                id: req.exec_id.clone(),
            },
        );
        Ok(Response::new(DeleteResponse {
            id: req.exec_id,
            pid: r.pid,
            exit_status: r.exit_status,
            exited_at: r.exited_at,
        }))
    }

    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let ns = request_namespace(&req)?;
        let req = req.into_inner();
        let shim = self.shim(&ns, &req.container_id)?;
        let process = self.state(&shim, &req.exec_id).await?;
        Ok(Response::new(GetResponse { process: Some(process) }))
    }

    async fn list(&self, req: Request<ListTasksRequest>) -> Result<Response<ListTasksResponse>, Status> {
        let ns = request_namespace(&req)?;
        let mut tasks = Vec::new();
        for shim in self.runtime.list(&ns) {
            if let Ok(p) = self.state(&shim, "").await {
                tasks.push(p);
            }
        }
        Ok(Response::new(ListTasksResponse { tasks }))
    }

    async fn kill(&self, req: Request<KillRequest>) -> Result<Response<()>, Status> {
        let ns = request_namespace(&req)?;
        let req = req.into_inner();
        let shim = self.shim(&ns, &req.container_id)?;
        shim.client
            .clone()
            .kill(shim::KillRequest { id: req.container_id, exec_id: req.exec_id, signal: req.signal, all: req.all })
            .await?;
        Ok(Response::new(()))
    }

    async fn exec(&self, req: Request<ExecProcessRequest>) -> Result<Response<()>, Status> {
        let ns = request_namespace(&req)?;
        let req = req.into_inner();
        let shim = self.shim(&ns, &req.container_id)?;
        shim.client
            .clone()
            .exec(shim::ExecProcessRequest {
                id: req.container_id.clone(),
                exec_id: req.exec_id.clone(),
                terminal: req.terminal,
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr,
                spec: req.spec,
            })
            .await?;
        self.events.publish(
            &ns,
            "/tasks/exec-added",
            &TaskExecAdded { container_id: req.container_id, exec_id: req.exec_id },
        );
        Ok(Response::new(()))
    }

    async fn resize_pty(&self, req: Request<ResizePtyRequest>) -> Result<Response<()>, Status> {
        let ns = request_namespace(&req)?;
        let req = req.into_inner();
        let shim = self.shim(&ns, &req.container_id)?;
        shim.client
            .clone()
            .resize_pty(shim::ResizePtyRequest {
                id: req.container_id,
                exec_id: req.exec_id,
                width: req.width,
                height: req.height,
            })
            .await?;
        Ok(Response::new(()))
    }

    async fn close_io(&self, req: Request<CloseIoRequest>) -> Result<Response<()>, Status> {
        let ns = request_namespace(&req)?;
        let req = req.into_inner();
        let shim = self.shim(&ns, &req.container_id)?;
        shim.client
            .clone()
            .close_io(shim::CloseIoRequest { id: req.container_id, exec_id: req.exec_id, stdin: req.stdin })
            .await?;
        Ok(Response::new(()))
    }

    async fn pause(&self, req: Request<PauseTaskRequest>) -> Result<Response<()>, Status> {
        let ns = request_namespace(&req)?;
        let id = req.into_inner().container_id;
        let shim = self.shim(&ns, &id)?;
        shim.client.clone().pause(shim::PauseRequest { id: id.clone() }).await?;
        self.events.publish(&ns, "/tasks/paused", &TaskPaused { container_id: id });
        Ok(Response::new(()))
    }

    async fn resume(&self, req: Request<ResumeTaskRequest>) -> Result<Response<()>, Status> {
        let ns = request_namespace(&req)?;
        let id = req.into_inner().container_id;
        let shim = self.shim(&ns, &id)?;
        shim.client.clone().resume(shim::ResumeRequest { id: id.clone() }).await?;
        self.events.publish(&ns, "/tasks/resumed", &TaskResumed { container_id: id });
        Ok(Response::new(()))
    }

    async fn list_pids(&self, req: Request<ListPidsRequest>) -> Result<Response<ListPidsResponse>, Status> {
        let ns = request_namespace(&req)?;
        let id = req.into_inner().container_id;
        let shim = self.shim(&ns, &id)?;
        let r = shim.client.clone().pids(shim::PidsRequest { id }).await?.into_inner();
        Ok(Response::new(ListPidsResponse { processes: r.processes }))
    }

    async fn checkpoint(
        &self,
        _req: Request<CheckpointTaskRequest>,
    ) -> Result<Response<CheckpointTaskResponse>, Status> {
        Err(Status::unimplemented("checkpoint is not supported"))
    }

    async fn update(&self, req: Request<UpdateTaskRequest>) -> Result<Response<()>, Status> {
        let ns = request_namespace(&req)?;
        let req = req.into_inner();
        let shim = self.shim(&ns, &req.container_id)?;
        shim.client
            .clone()
            .update(shim::UpdateTaskRequest {
                id: req.container_id,
                resources: req.resources,
                annotations: req.annotations,
            })
            .await?;
        Ok(Response::new(()))
    }

    async fn metrics(&self, req: Request<MetricsRequest>) -> Result<Response<MetricsResponse>, Status> {
        let ns = request_namespace(&req)?;
        let filters = req.into_inner().filters;
        let ids: Vec<String> = filters
            .iter()
            .flat_map(|f| f.split(','))
            .filter_map(|s| s.trim().strip_prefix("id==").map(|v| v.trim_matches('"').to_string()))
            .collect();
        let mut metrics = Vec::new();
        for shim in self.runtime.list(&ns) {
            if !ids.is_empty() && !ids.contains(&shim.id) {
                continue;
            }
            // The shim packs containerd's cgroup metrics message (io.containerd.cgroups.v1 or
            // .v2 Metrics) under its bare type URL, which ctr and berthctl decode; it goes out
            // as is. A task without a cgroup (not created, or gone) has no metrics.
            match shim.client.clone().stats(shim::StatsRequest { id: shim.id.clone() }).await {
                Ok(r) => metrics.push(Metric {
                    timestamp: Some(std::time::SystemTime::now().into()),
                    id: shim.id.clone(),
                    data: r.into_inner().stats,
                }),
                Err(e) => tracing::debug!(namespace = %ns, task = %shim.id, error = %e.message(), "no metrics"),
            }
        }
        Ok(Response::new(MetricsResponse { metrics }))
    }

    async fn wait(&self, req: Request<WaitRequest>) -> Result<Response<WaitResponse>, Status> {
        let ns = request_namespace(&req)?;
        let req = req.into_inner();
        let shim = self.shim(&ns, &req.container_id)?;
        let r = shim
            .client
            .clone()
            .wait(shim::WaitRequest { id: req.container_id, exec_id: req.exec_id })
            .await?
            .into_inner();
        Ok(Response::new(WaitResponse { exit_status: r.exit_status, exited_at: r.exited_at }))
    }
}

/// The runtime plugin: a shim manager publishing shim events on the exchange; reconnects to
/// the shims of a previous run.
pub fn init_runtime(ctx: &mut InitContext<'_>) -> Result<Instance, InitError> {
    let events: Arc<Exchange> = ctx.get(EVENTS)?;
    let publish: berth_runtime::Publisher = Arc::new(move |ns, topic, ts, any| {
        events.forward(berth_proto::containerd::services::events::v1::Envelope {
            timestamp: ts.or_else(|| Some(std::time::SystemTime::now().into())),
            namespace: ns.to_string(),
            topic: topic.to_string(),
            event: Some(any),
        });
    });
    let binary = berth_runtime::default_shim_binary();
    ctx.exports.insert("shim".into(), binary.display().to_string());
    let manager = Arc::new(ShimManager::new(&ctx.daemon.state, binary, publish));
    // Reconnect before serving, so the first List already shows surviving tasks. Plugin init
    // runs under block_in_place on the daemon's runtime, where blocking on it is allowed.
    match tokio::runtime::Handle::try_current() {
        Ok(h) => h.block_on(manager.restore()),
        Err(_) => tracing::warn!("no async runtime at init: running shims are not restored"),
    }
    Ok(manager)
}

/// Plugin init.
pub fn init(ctx: &mut InitContext<'_>) -> Result<Instance, InitError> {
    let svc = TasksService {
        store: ctx.get(METADATA)?,
        events: ctx.get(EVENTS)?,
        runtime: ctx.get(RUNTIME)?,
        snapshotters: super::snapshots::snapshotters(ctx),
    };
    Ok(grpc_service!("containerd.services.tasks.v1.Tasks", TasksServer::new(svc)))
}
