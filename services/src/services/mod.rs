//! The gRPC services: thin shells that translate between wire types and plugin APIs.

pub mod containers;
pub mod content;
pub mod diff;
pub mod events;
pub mod gc;
pub mod images;
pub mod introspection;
pub mod leases;
pub mod namespaces;
pub mod snapshots;
pub mod tasks;
pub mod transfer;
pub mod unpack;
pub mod version;

use berth_core::{identifiers, Error, ErrorKind};
use tonic::service::RoutesBuilder;
use tonic::{Code, Request, Status};

/// gRPC metadata key carrying the namespace of a request, as containerd.
pub const NAMESPACE_HEADER: &str = "containerd-namespace";

/// Message size limits applied to every service.
#[derive(Debug, Clone, Copy)]
pub struct GrpcLimits {
    /// Largest request, bytes.
    pub max_recv: usize,
    /// Largest response, bytes.
    pub max_send: usize,
}

/// Adds a service to the router with the given limits.
pub type Register = Box<dyn Fn(&mut RoutesBuilder, GrpcLimits) + Send + Sync>;

/// The instance of every `io.berth.grpc.v1` plugin: its service name and how to mount it.
pub struct GrpcService {
    /// Fully-qualified service name (for reflection).
    pub name: &'static str,
    /// Adds the service to the router.
    pub register: Register,
}

/// Wraps a generated tonic server (`FooServer::new(impl)`) as a [`GrpcService`] plugin
/// instance, applying the configured message size limits when it is mounted.
macro_rules! grpc_service {
    ($name:literal, $server:expr) => {{
        let server = $server;
        ::std::sync::Arc::new($crate::services::GrpcService {
            name: $name,
            register: Box::new(move |routes, limits| {
                routes.add_service(
                    server
                        .clone()
                        .max_decoding_message_size(limits.max_recv)
                        .max_encoding_message_size(limits.max_send),
                );
            }),
        })
    }};
}
pub(crate) use grpc_service;

/// Maps an error kind to its gRPC code, one-to-one.
pub fn to_status(err: Error) -> Status {
    let code = match err.kind() {
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::NotImplemented => Code::Unimplemented,
        ErrorKind::Internal => Code::Internal,
    };
    if code == Code::Internal {
        tracing::error!(error = %err, "internal error");
    }
    Status::new(code, err.to_string())
}

/// The namespace a request is scoped to, from its `containerd-namespace` metadata.
pub fn request_namespace<T>(req: &Request<T>) -> Result<String, Status> {
    let value = req
        .metadata()
        .get(NAMESPACE_HEADER)
        .ok_or_else(|| Status::failed_precondition("namespace is required: failed precondition"))?;
    let ns = value.to_str().map_err(|_| Status::invalid_argument("namespace metadata is not valid ASCII"))?.to_string();
    identifiers::validate(&ns).map_err(|e| to_status(e.context("namespace")))?;
    Ok(ns)
}

/// gRPC metadata key carrying the lease a request works within, as containerd.
pub const LEASE_HEADER: &str = "containerd-lease";

/// The lease a request works within, from its optional `containerd-lease` metadata.
pub fn request_lease<T>(req: &Request<T>) -> Result<Option<String>, Status> {
    let Some(value) = req.metadata().get(LEASE_HEADER) else { return Ok(None) };
    let lease = value.to_str().map_err(|_| Status::invalid_argument("lease metadata is not valid ASCII"))?;
    Ok(Some(lease.to_string()).filter(|l| !l.is_empty()))
}

/// Runs blocking plugin work (sled, file I/O) off the async workers.
pub async fn blocking<R: Send + 'static>(f: impl FnOnce() -> Result<R, Error> + Send + 'static) -> Result<R, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("worker task failed: {e}")))?
        .map_err(to_status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_codes() {
        assert_eq!(to_status(Error::not_found("x")).code(), Code::NotFound);
        assert_eq!(to_status(Error::already_exists("x")).code(), Code::AlreadyExists);
        assert_eq!(to_status(Error::failed_precondition("x")).code(), Code::FailedPrecondition);
        assert_eq!(to_status(Error::invalid_argument("x")).code(), Code::InvalidArgument);
        assert_eq!(to_status(Error::not_implemented("x")).code(), Code::Unimplemented);
        assert_eq!(to_status(Error::not_found("namespace \"a\"")).message(), "namespace \"a\": not found");
    }

    #[test]
    fn namespace_from_metadata() {
        let mut req = Request::new(());
        assert_eq!(request_namespace(&req).unwrap_err().code(), Code::FailedPrecondition);
        req.metadata_mut().insert(NAMESPACE_HEADER, "k8s.io".parse().unwrap());
        assert_eq!(request_namespace(&req).unwrap(), "k8s.io");
        req.metadata_mut().insert(NAMESPACE_HEADER, "bad..ns".parse().unwrap());
        assert_eq!(request_namespace(&req).unwrap_err().code(), Code::InvalidArgument);
    }
}
