//! Direct gRPC access to a test daemon, for calls berthctl does not expose (or to check the
//! wire behaviour itself): a channel over the unix socket and requests carrying a namespace.

use std::collections::HashMap;
use std::path::Path;

use berth_proto::containerd::services::content::v1::content_client::ContentClient;
use berth_proto::containerd::services::content::v1::{WriteAction, WriteContentRequest};

use hyper_util::rt::TokioIo;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

/// A current-thread runtime for a test's async calls.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

/// Connects to the daemon listening on `socket`.
pub async fn connect(socket: &Path) -> Channel {
    let socket = socket.to_path_buf();
    Endpoint::from_static("http://berthd")
        .connect_with_connector(tower::service_fn(move |_| {
            let s = socket.clone();
            async move { tokio::net::UnixStream::connect(s).await.map(TokioIo::new) }
        }))
        .await
        .expect("connect to berthd")
}

/// A request in namespace `ns`, optionally within lease `lease`.
pub fn request<T>(ns: &str, lease: Option<&str>, msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert("containerd-namespace", MetadataValue::try_from(ns).expect("namespace"));
    if let Some(l) = lease {
        req.metadata_mut().insert("containerd-lease", MetadataValue::try_from(l).expect("lease"));
    }
    req
}

/// Hex sha256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `data` through the content Write stream (optionally within a lease) and returns
/// its digest.
pub async fn write_blob(
    ch: &tonic::transport::Channel,
    ns: &str,
    lease: Option<&str>,
    data: &[u8],
    labels: &[(&str, &str)],
) -> String {
    let digest = format!("sha256:{}", sha256_hex(data));
    let reference = format!("test-{}", &digest[7..19]);
    let labels: HashMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let msgs = vec![
        WriteContentRequest {
            action: WriteAction::Write as i32,
            r#ref: reference.clone(),
            total: data.len() as i64,
            expected: digest.clone(),
            offset: 0,
            data: data.to_vec(),
            labels: HashMap::new(),
        },
        WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref: reference,
            total: data.len() as i64,
            expected: digest.clone(),
            offset: data.len() as i64,
            data: vec![],
            labels,
        },
    ];
    let mut stream = ContentClient::new(ch.clone())
        .write(request(ns, lease, tokio_stream::iter(msgs)))
        .await
        .expect("write")
        .into_inner();
    while let Some(resp) = stream.message().await.expect("write response") {
        if resp.action == WriteAction::Commit as i32 {
            assert_eq!(resp.digest, digest);
        }
    }
    digest
}
