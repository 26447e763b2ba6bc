//! containerd.services.events.v1.Events: publish, forward and subscribe (with filters).

use std::pin::Pin;
use std::sync::Arc;

use berth_core::filters::Filter;
use berth_proto::containerd::services::events::v1::events_server::{Events, EventsServer};
use berth_proto::containerd::services::events::v1::{Envelope, ForwardRequest, PublishRequest, SubscribeRequest};
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{grpc_service, request_namespace, to_status};
use crate::builtin::EVENTS;
use crate::exchange::{validate_topic, EnvelopeFields, Exchange};
use crate::registry::{InitContext, InitError, Instance};

struct EventsService {
    exchange: Arc<Exchange>,
}

type EnvelopeStream = Pin<Box<dyn Stream<Item = Result<Envelope, Status>> + Send>>;

#[tonic::async_trait]
impl Events for EventsService {
    async fn publish(&self, req: Request<PublishRequest>) -> Result<Response<()>, Status> {
        let ns = request_namespace(&req)?;
        let req = req.into_inner();
        validate_topic(&req.topic).map_err(to_status)?;
        let event = req.event.ok_or_else(|| Status::invalid_argument("event must be set"))?;
        self.exchange.forward(Envelope {
            timestamp: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
            namespace: ns,
            topic: req.topic,
            event: Some(event),
        });
        Ok(Response::new(()))
    }

    async fn forward(&self, req: Request<ForwardRequest>) -> Result<Response<()>, Status> {
        let env = req.into_inner().envelope.ok_or_else(|| Status::invalid_argument("envelope must be set"))?;
        validate_topic(&env.topic).map_err(to_status)?;
        berth_core::identifiers::validate(&env.namespace).map_err(|e| to_status(e.context("namespace")))?;
        if env.event.is_none() {
            return Err(Status::invalid_argument("envelope event must be set"));
        }
        self.exchange.forward(env);
        Ok(Response::new(()))
    }

    type SubscribeStream = EnvelopeStream;

    async fn subscribe(&self, req: Request<SubscribeRequest>) -> Result<Response<Self::SubscribeStream>, Status> {
        let filter = Filter::parse_all(&req.get_ref().filters).map_err(to_status)?;
        let mut rx = self.exchange.subscribe();
        let stream = async_stream(move |tx| async move {
            loop {
                let next = tokio::select! {
                    next = rx.recv() => next,
                    _ = tx.closed() => return, // subscriber gone
                };
                match next {
                    Ok(env) => {
                        if filter.matches(&EnvelopeFields(&env)) && tx.send(Ok((*env).clone())).await.is_err() {
                            return; // subscriber gone
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        let _ = tx
                            .send(Err(Status::data_loss(format!("subscriber fell behind; {n} events dropped"))))
                            .await;
                        return;
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(stream))
    }
}

/// Turns a producer task into a stream through a small channel; the task stops when the
/// consumer goes away.
fn async_stream<T, F, Fut>(producer: F) -> Pin<Box<dyn Stream<Item = T> + Send>>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(producer(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// Plugin init.
pub fn init(ctx: &mut InitContext<'_>) -> Result<Instance, InitError> {
    let exchange = ctx.get::<Exchange>(EVENTS)?;
    Ok(grpc_service!("containerd.services.events.v1.Events", EventsServer::new(EventsService { exchange })))
}
