//! Consuming jobs: each message is decoded here, so the worker receives a typed job with its
//! trace context and lane, and settles it through [`JobDelivery`]'s methods, each of which
//! acknowledges only once what replaces the message (a retry, a continuation, a dead letter)
//! is confirmed by the broker. A message that does not decode is dead-lettered here with the
//! reason and never reaches the worker.

use crate::publish::Publisher;
use crate::{Lane, Outgoing, QueueError, TRACEPARENT_HEADER, header};
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use passerelle_core::job::{JobMessage, SyncJob, TraceParent};
use std::time::Duration;
use tracing::warn;

/// The jobs of one lane, as they arrive.
pub struct JobConsumer {
    lane: Lane,
    consumer: lapin::Consumer,
    publisher: Publisher,
}

impl JobConsumer {
    pub(crate) fn new(lane: Lane, consumer: lapin::Consumer, publisher: Publisher) -> Self {
        Self {
            lane,
            consumer,
            publisher,
        }
    }

    pub fn lane(&self) -> Lane {
        self.lane
    }

    /// The next job. `None` when the channel closed (the broker went away or cancelled the
    /// consumer): consume again once it is back. Cancel-safe while it waits for a message.
    pub async fn next(&mut self) -> Option<Result<JobDelivery, QueueError>> {
        loop {
            let delivery = match self.consumer.next().await? {
                Ok(d) => d,
                Err(e) => return Some(Err(e.into())),
            };
            if let Some(job) = decode(self.lane, delivery, &self.publisher).await {
                return Some(Ok(job));
            }
        }
    }
}

/// The job a message carries, or `None` when it does not decode: then it was dead-lettered
/// with the reason (or requeued when even that failed).
pub(crate) async fn decode(
    lane: Lane,
    delivery: Delivery,
    publisher: &Publisher,
) -> Option<JobDelivery> {
    let traceparent = header(&delivery, TRACEPARENT_HEADER).and_then(|h| TraceParent::parse(&h));
    let reason = match JobMessage::parse(&delivery.data) {
        Ok(JobMessage::SyncV1(job)) => {
            return Some(JobDelivery {
                job,
                trace: traceparent.unwrap_or_else(TraceParent::new_root),
                lane,
                delivery,
                publisher: publisher.clone(),
            });
        }
        Err(e) => e.to_string(),
    };
    warn!(lane = lane.as_str(), %reason, "dead-lettering a malformed job message");
    let outgoing = Outgoing {
        body: delivery.data.clone(),
        message_id: delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_owned())
            .unwrap_or_default(),
        traceparent: traceparent.as_ref().map(TraceParent::header),
        headers: Vec::new(),
    };
    let handed_off = publisher.dead_letter(&outgoing, &reason).await;
    settle(&delivery, handed_off.is_ok()).await;
    None
}

/// One job taken off a lane. Dropping it without settling leaves the message unacknowledged
/// until the channel closes, when the broker redelivers it (what a stopping worker wants).
pub struct JobDelivery {
    pub job: SyncJob,
    /// The trace this job belongs to (a new root when the message carried none).
    pub trace: TraceParent,
    pub lane: Lane,
    delivery: Delivery,
    publisher: Publisher,
}

impl std::fmt::Debug for JobDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobDelivery")
            .field("job", &self.job)
            .field("lane", &self.lane)
            .finish()
    }
}

impl JobDelivery {
    /// Everything the job caused is recorded: drop the message.
    pub async fn ack(self) -> Result<(), QueueError> {
        self.delivery.ack(BasicAckOptions::default()).await?;
        Ok(())
    }

    /// Hands `job` to the delay tier of at least `delay`, then acks; returns the tier. If the
    /// publish fails the message is requeued instead, so it is never lost.
    pub async fn retry_in(self, job: &SyncJob, delay: Duration) -> Result<Duration, QueueError> {
        let outgoing = Outgoing::job(job, &self.trace);
        let published = self
            .publisher
            .publish_delayed(self.lane, delay, &outgoing)
            .await;
        settle(&self.delivery, published.is_ok()).await;
        published
    }

    /// Publishes the run's continuation to the same lane, then acks.
    pub async fn continue_with(self, job: &SyncJob) -> Result<(), QueueError> {
        let outgoing = Outgoing::job(job, &self.trace);
        let published = self
            .publisher
            .publish_jobs(self.lane, std::slice::from_ref(&outgoing))
            .await;
        settle(&self.delivery, published.is_ok()).await;
        published
    }

    /// Sends the job to the dead-letter queue with `reason`, then acks.
    pub async fn dead_letter(self, reason: &str) -> Result<(), QueueError> {
        let outgoing = Outgoing::job(&self.job, &self.trace);
        let published = self.publisher.dead_letter(&outgoing, reason).await;
        settle(&self.delivery, published.is_ok()).await;
        published
    }

    /// Gives the message back to its queue at once.
    pub async fn requeue(self) -> Result<(), QueueError> {
        self.delivery
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    /// How many times the broker delivered this message before (quorum queues count).
    pub fn delivery_count(&self) -> i64 {
        crate::delivery_count(&self.delivery)
    }
}

/// Acks when what the message caused is safely elsewhere; otherwise requeues it.
async fn settle(delivery: &Delivery, handed_off: bool) {
    let result = if handed_off {
        delivery.ack(BasicAckOptions::default()).await
    } else {
        delivery
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
    };
    if let Err(e) = result {
        // The channel is gone; the broker redelivers the message to another consumer.
        warn!(error = %e, "could not settle a message; it will be redelivered");
    }
}
