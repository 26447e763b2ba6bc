//! containerd.services.introspection.v1.Introspection: plugin statuses and server identity.

use berth_core::filters::{Adaptor, Filter};
use berth_proto::containerd::services::introspection::v1::introspection_server::{Introspection, IntrospectionServer};
use berth_proto::containerd::services::introspection::v1::{Plugin, PluginsRequest, PluginsResponse, ServerResponse};
use berth_proto::containerd::types::Platform;
use berth_proto::google::rpc::Status as RpcStatus;
use tonic::{Code, Request, Response, Status};

use super::{grpc_service, to_status};
use crate::registry::{InitContext, InitError, Instance, PluginRecord, PluginTable, Status as PluginStatus};

struct IntrospectionService {
    table: PluginTable,
    uuid: String,
    pidns: u64,
}

impl Adaptor for PluginRecord {
    fn field(&self, path: &[String]) -> Vec<String> {
        match path.first().map(String::as_str) {
            Some("type") if path.len() == 1 => vec![self.plugin_type.clone()],
            Some("id") if path.len() == 1 => vec![self.id.clone()],
            Some("requires") if path.len() == 1 => self.requires.clone(),
            Some("platforms") if path.len() == 1 => self.platforms.iter().map(|p| p.to_string()).collect(),
            Some("capabilities") if path.len() == 1 => self.capabilities.clone(),
            Some("status") if path.len() == 1 => vec![status_word(&self.status).into()],
            Some("exports") if path.len() == 2 => self.exports.get(&path[1]).cloned().into_iter().collect(),
            _ => Vec::new(),
        }
    }
}

fn status_word(s: &PluginStatus) -> &'static str {
    match s {
        PluginStatus::Ok => "ok",
        PluginStatus::Skipped(_) => "skip",
        PluginStatus::Error(_) => "error",
    }
}

/// The wire form of a record: a skip is FAILED_PRECONDITION (what `ctr plugins ls` shows as
/// "skip"), a failure UNKNOWN ("error").
fn to_proto(r: &PluginRecord) -> Plugin {
    let init_err = match &r.status {
        PluginStatus::Ok => None,
        PluginStatus::Skipped(why) => Some(RpcStatus {
            code: Code::FailedPrecondition as i32,
            message: format!("{why}: skip plugin"),
            details: vec![],
        }),
        PluginStatus::Error(why) => {
            Some(RpcStatus { code: Code::Unknown as i32, message: why.clone(), details: vec![] })
        }
    };
    Plugin {
        r#type: r.plugin_type.clone(),
        id: r.id.clone(),
        requires: r.requires.clone(),
        platforms: r
            .platforms
            .iter()
            .map(|p| Platform { os: p.os.clone(), architecture: p.architecture.clone(), variant: p.variant.clone() })
            .collect(),
        exports: r.exports.clone().into_iter().collect(),
        capabilities: r.capabilities.clone(),
        init_err,
    }
}

#[tonic::async_trait]
impl Introspection for IntrospectionService {
    async fn plugins(&self, req: Request<PluginsRequest>) -> Result<Response<PluginsResponse>, Status> {
        let filter = Filter::parse_all(&req.get_ref().filters).map_err(to_status)?;
        let table = self.table.read().map_err(|_| Status::internal("plugin table poisoned"))?;
        let plugins = table.iter().filter(|r| filter.matches(*r)).map(to_proto).collect();
        Ok(Response::new(PluginsResponse { plugins }))
    }

    async fn server(&self, _: Request<()>) -> Result<Response<ServerResponse>, Status> {
        Ok(Response::new(ServerResponse {
            uuid: self.uuid.clone(),
            pid: u64::from(std::process::id()),
            pidns: self.pidns,
            deprecations: Vec::new(),
        }))
    }
}

/// The inode of this process's pid namespace, as containerd reports it.
fn pid_namespace() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid").map(|m| m.ino()).unwrap_or(0)
}

/// Plugin init.
pub fn init(ctx: &mut InitContext<'_>) -> Result<Instance, InitError> {
    let server = IntrospectionServer::new(IntrospectionService {
        table: ctx.plugin_table(),
        uuid: ctx.daemon.uuid.clone(),
        pidns: pid_namespace(),
    });
    Ok(grpc_service!("containerd.services.introspection.v1.Introspection", server))
}
