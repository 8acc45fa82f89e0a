//! Publishing with publisher confirms: a publish returns only once the broker has the message
//! (persisted on the quorum queue's majority), so a caller acknowledges what caused it only
//! after that.

use crate::broker::Broker;
use crate::topology::Topology;
use crate::{Lane, Outgoing, QueueError, REASON_HEADER, TRACEPARENT_HEADER, long_string};
use futures::StreamExt;
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use lapin::types::{FieldTable, ShortString};
use passerelle_core::job::{JobMessage, SyncJob, TraceParent};
use std::time::Duration;

/// A job to enqueue and the trace it belongs to.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub job: SyncJob,
    pub trace: TraceParent,
}

impl Outgoing {
    /// The message for a job: its `sync.v1` body, the run id as message id, and a child span
    /// of `trace` as its `traceparent`.
    pub fn job(job: &SyncJob, trace: &TraceParent) -> Self {
        Outgoing {
            body: JobMessage::SyncV1(job.clone()).to_bytes(),
            message_id: job.run_id.to_string(),
            traceparent: Some(trace.child().header()),
            headers: Vec::new(),
        }
    }
}

/// Publishes through the broker's current connection (a lost one is replaced on the next
/// publish, within the broker's backoff). Clones share the broker.
#[derive(Clone, Debug)]
pub struct Publisher {
    broker: Broker,
}

impl Publisher {
    pub(crate) fn new(broker: Broker) -> Self {
        Self { broker }
    }

    pub fn topology(&self) -> &Topology {
        self.broker.topology()
    }

    /// Enqueues jobs on a lane (a run's first message, or a continuation) and waits for the
    /// broker to confirm every one.
    pub async fn enqueue(&self, lane: Lane, jobs: &[NewJob]) -> Result<(), QueueError> {
        let messages: Vec<Outgoing> = jobs
            .iter()
            .map(|j| Outgoing::job(&j.job, &j.trace))
            .collect();
        self.publish_jobs(lane, &messages).await
    }

    /// Publishes messages to a lane and waits until the broker confirms every one of them.
    /// Confirms are awaited together, so a batch costs one round trip, not one per message.
    pub async fn publish_jobs(&self, lane: Lane, messages: &[Outgoing]) -> Result<(), QueueError> {
        let exchange = self.topology().work_exchange();
        self.publish_many(&exchange, lane.as_str(), messages).await
    }

    /// Publishes a message to wait `delay` (rounded up to a tier) before it returns to `lane`.
    pub async fn publish_delayed(
        &self,
        lane: Lane,
        delay: Duration,
        message: &Outgoing,
    ) -> Result<Duration, QueueError> {
        let tier = self.topology().tier_for(delay);
        let queue = self.topology().delay_queue(lane, tier);
        self.publish_many("", &queue, std::slice::from_ref(message))
            .await?;
        Ok(tier)
    }

    /// Sends a message to the dead-letter queue with the reason it died.
    pub async fn dead_letter(&self, message: &Outgoing, reason: &str) -> Result<(), QueueError> {
        let mut message = message.clone();
        message
            .headers
            .push((REASON_HEADER.to_owned(), truncate(reason, 1000)));
        let exchange = self.topology().dead_exchange();
        self.publish_many(&exchange, "", std::slice::from_ref(&message))
            .await
    }

    async fn publish_many(
        &self,
        exchange: &str,
        routing_key: &str,
        messages: &[Outgoing],
    ) -> Result<(), QueueError> {
        let target = if exchange.is_empty() {
            routing_key.to_owned()
        } else {
            format!("{exchange}/{routing_key}")
        };
        let channel = self.broker.live().await?.publish;
        let mut confirms = Vec::with_capacity(messages.len());
        for message in messages {
            let confirm = channel
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    // mandatory: an unroutable message comes back instead of vanishing.
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &message.body,
                    properties(message),
                )
                .await?;
            confirms.push(confirm);
        }
        let mut pending = futures::stream::iter(confirms).buffer_unordered(usize::MAX);
        while let Some(confirmation) = pending.next().await {
            let confirmation = confirmation?;
            if confirmation.is_nack() {
                return Err(QueueError::Nacked { target });
            }
            if confirmation.take_message().is_some() {
                return Err(QueueError::Unroutable { target });
            }
        }
        Ok(())
    }
}

fn properties(message: &Outgoing) -> BasicProperties {
    let mut headers = FieldTable::default();
    if let Some(tp) = &message.traceparent {
        headers.insert(TRACEPARENT_HEADER.into(), long_string(tp));
    }
    for (k, v) in &message.headers {
        headers.insert(ShortString::from(k.as_str()), long_string(v));
    }
    BasicProperties::default()
        .with_delivery_mode(2) // persistent
        .with_content_type("application/json".into())
        .with_message_id(message.message_id.as_str().into())
        .with_headers(headers)
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
