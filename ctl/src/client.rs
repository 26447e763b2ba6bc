//! Connection to berthd over its unix socket, with the namespace attached to every request.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Result};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::Request;

/// Default socket of berthd.
pub const DEFAULT_ADDRESS: &str = "/run/berth/berth.sock";

/// A connected client.
pub struct Client {
    /// The gRPC channel, shared by every service client.
    pub channel: Channel,
    namespace: MetadataValue<tonic::metadata::Ascii>,
}

/// Strips an optional `unix://` scheme.
pub fn socket_path(address: &str) -> Result<PathBuf> {
    match address.split_once("://") {
        None => Ok(PathBuf::from(address)),
        Some(("unix", p)) => Ok(PathBuf::from(p)),
        Some((scheme, _)) => Err(anyhow!("unsupported address scheme {scheme:?}: berthd listens on a unix socket")),
    }
}

impl Client {
    /// Connects to berthd at `address`, failing with a one-line hint when nothing answers.
    pub async fn connect(address: &str, namespace: &str, timeout: Duration) -> Result<Client> {
        let path = socket_path(address)?;
        let namespace = namespace.parse().map_err(|_| anyhow!("namespace {namespace:?} is not valid"))?;
        let connector_path = path.clone();
        // The URI is required by the API but unused: the connector dials the socket.
        let channel = Endpoint::from_static("http://berthd")
            .connect_timeout(timeout)
            .connect_with_connector(tower::service_fn(move |_| {
                let p = connector_path.clone();
                async move { UnixStream::connect(p).await.map(TokioIo::new) }
            }))
            .await
            .map_err(|e| {
                let cause = std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string());
                anyhow!("cannot connect to berthd at {}: is it running? ({cause})", path.display())
            })?;
        Ok(Client { channel, namespace })
    }

    /// Wraps a message in a request carrying the namespace.
    pub fn request<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        req.metadata_mut().insert("containerd-namespace", self.namespace.clone());
        req
    }
}

/// Turns a gRPC status into a one-line error.
pub fn status_error(status: tonic::Status) -> anyhow::Error {
    let msg = status.message();
    if msg.is_empty() {
        anyhow!("{}", status.code())
    } else {
        anyhow!("{msg}")
    }
}
