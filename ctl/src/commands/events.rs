//! `berthctl events`: stream events as they happen.

use anyhow::Result;
use berth_proto::containerd::events as ev;
use berth_proto::containerd::services::events::v1::events_client::EventsClient;
use berth_proto::containerd::services::events::v1::SubscribeRequest;
use berth_proto::containerd::services::images::v1 as images;
use prost::Message;

use crate::client::{status_error, Client};

/// Decodes the event payloads berthd publishes into a readable form; others show their type.
fn describe(any: &prost_types::Any) -> String {
    macro_rules! try_types {
        ($($t:ty),* $(,)?) => {
            $(
                if any.type_url == <$t as prost::Name>::full_name() {
                    return match <$t>::decode(any.value.as_slice()) {
                        Ok(m) => format!("{m:?}"),
                        Err(e) => format!("<undecodable {}: {e}>", any.type_url),
                    };
                }
            )*
        };
    }
    try_types!(
        ev::NamespaceCreate,
        ev::NamespaceUpdate,
        ev::NamespaceDelete,
        ev::ContentDelete,
        images::ImageCreate,
        images::ImageUpdate,
        images::ImageDelete,
        ev::SnapshotPrepare,
        ev::SnapshotCommit,
        ev::SnapshotRemove,
        ev::ContainerCreate,
        ev::ContainerUpdate,
        ev::ContainerDelete,
        ev::TaskCreate,
        ev::TaskStart,
        ev::TaskExit,
        ev::TaskDelete,
        ev::TaskOom,
        ev::TaskExecAdded,
        ev::TaskExecStarted,
        ev::TaskPaused,
        ev::TaskResumed,
    );
    format!("<{} bytes of {}>", any.value.len(), any.type_url)
}

/// Prints events until interrupted. Filters: `topic==/images/create`, `namespace==default`,
/// `topic~=^/tasks/` (any one may match).
pub async fn run(client: &Client, filters: Vec<String>) -> Result<()> {
    let mut stream = EventsClient::new(client.channel.clone())
        .subscribe(client.request(SubscribeRequest { filters }))
        .await
        .map_err(status_error)?
        .into_inner();
    while let Some(env) = stream.message().await.map_err(status_error)? {
        let ts = env.timestamp.map(|t| t.to_string()).unwrap_or_default();
        let event = env.event.as_ref().map(describe).unwrap_or_default();
        println!("{ts} {} {} {event}", env.namespace, env.topic);
    }
    Ok(())
}
