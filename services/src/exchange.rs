//! The event exchange: services publish envelopes (timestamp, namespace, topic, event as
//! `Any`), subscribers receive those matching their filters. In-memory and lossy only for a
//! subscriber that falls more than [`BACKLOG`] events behind, which is told so.

use std::sync::Arc;
use std::time::SystemTime;

use berth_core::filters::Adaptor;
use berth_core::{identifiers, Error, Result};
use berth_proto::containerd::services::events::v1::Envelope;
use tokio::sync::broadcast;

/// Events buffered per subscriber before it is considered lagging.
pub const BACKLOG: usize = 4096;

/// Fan-out of events to subscribers.
pub struct Exchange {
    tx: broadcast::Sender<Arc<Envelope>>,
}

impl Default for Exchange {
    fn default() -> Self {
        Exchange { tx: broadcast::channel(BACKLOG).0 }
    }
}

/// Checks a topic: `/` followed by identifier-like components (`/images/create`).
pub fn validate_topic(topic: &str) -> Result<()> {
    let rest = topic
        .strip_prefix('/')
        .ok_or_else(|| Error::invalid_argument(format!("topic {topic:?} must start with '/'")))?;
    if rest.is_empty() || rest.split('/').any(|c| identifiers::validate(c).is_err()) {
        return Err(Error::invalid_argument(format!("topic {topic:?} must be '/'-separated identifiers")));
    }
    Ok(())
}

/// Wraps an envelope for filtering: fields `topic`, `namespace`, `event.type` (type URL).
pub struct EnvelopeFields<'a>(pub &'a Envelope);

impl Adaptor for EnvelopeFields<'_> {
    fn field(&self, path: &[String]) -> Vec<String> {
        match path {
            [f] if f == "topic" => vec![self.0.topic.clone()],
            [f] if f == "namespace" => vec![self.0.namespace.clone()],
            [e, t] if e == "event" && t == "type" => {
                self.0.event.as_ref().map(|a| a.type_url.clone()).into_iter().collect()
            }
            _ => Vec::new(),
        }
    }
}

impl Exchange {
    /// Publishes `event` on `topic` in `namespace`, stamped now.
    pub fn publish<M: prost::Name>(&self, namespace: &str, topic: &str, event: &M) {
        self.forward(Envelope {
            timestamp: Some(prost_types::Timestamp::from(SystemTime::now())),
            namespace: namespace.to_string(),
            topic: topic.to_string(),
            event: Some(berth_proto::to_any(event)),
        });
    }

    /// Forwards a complete envelope (validated by the caller).
    pub fn forward(&self, envelope: Envelope) {
        tracing::debug!(topic = %envelope.topic, namespace = %envelope.namespace, "event");
        // No subscribers is not an error.
        let _ = self.tx.send(Arc::new(envelope));
    }

    /// A new subscription receiving every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Envelope>> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::filters::Filter;
    use berth_proto::containerd::events::NamespaceCreate;

    #[tokio::test]
    async fn publish_reaches_subscribers_with_type_url() {
        let ex = Exchange::default();
        let mut sub = ex.subscribe();
        ex.publish("default", "/namespaces/create", &NamespaceCreate { name: "x".into(), labels: Default::default() });
        let env = sub.recv().await.unwrap();
        assert_eq!(env.topic, "/namespaces/create");
        assert_eq!(env.event.as_ref().unwrap().type_url, "containerd.events.NamespaceCreate");
        let f = Filter::parse_all(&["topic~=^/namespaces/", "namespace==other"]).unwrap();
        assert!(f.matches(&EnvelopeFields(&env)));
        let f = Filter::parse_all(&["topic==/images/create"]).unwrap();
        assert!(!f.matches(&EnvelopeFields(&env)));
    }

    #[test]
    fn topics() {
        assert!(validate_topic("/images/create").is_ok());
        for bad in ["images/create", "/", "/a//b", "/a b"] {
            assert!(validate_topic(bad).is_err(), "{bad}");
        }
    }
}
