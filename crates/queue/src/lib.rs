//! RabbitMQ for Passerelle: the queue topology, a connection that survives broker restarts, a
//! publisher that waits for broker confirms, and consumers that hand the worker typed jobs.
//!
//! This crate moves jobs; it does not decide what a job means or when to retry it (the
//! worker does, with the tier arithmetic of [`Topology`]). lapin stays inside: no other crate
//! sees a channel or a raw delivery. Every name is under the configured prefix, so
//! deployments and tests sharing one broker never see each other's messages.
//!
//! Topology (declared idempotently by every role at start-up and after every reconnect):
//!
//! ```text
//!  {p}.work (direct) ──manual────► {p}.jobs.manual     quorum, x-delivery-limit, DLX {p}.dead
//!                    └─scheduled─► {p}.jobs.scheduled  quorum, x-delivery-limit, DLX {p}.dead
//!  default exchange ─► {p}.delay.{lane}.{n}s  (x-message-ttl n s, DLX {p}.work with key {lane})
//!  {p}.dead (fanout) ─► {p}.dead              what died, with x-death / x-passerelle-reason
//! ```
//!
//! Retries wait in TTL queues that dead-letter back to the work exchange (no delayed-message
//! plugin: Debian's RabbitMQ 3.10 does not ship it, and a plugin-held message is lost with
//! its node).

mod broker;
mod consume;
mod publish;
mod topology;

pub use broker::{Broker, ReconnectPolicy};
pub use consume::{JobConsumer, JobDelivery};
pub use lapin::message::Delivery;
pub use publish::{NewJob, Publisher};
pub use topology::Topology;

use lapin::types::{AMQPValue, LongString};
use std::time::Duration;

/// Header naming why we dead-lettered a message ourselves.
pub const REASON_HEADER: &str = "x-passerelle-reason";
/// W3C trace context header.
pub const TRACEPARENT_HEADER: &str = "traceparent";

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("RabbitMQ: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("RabbitMQ refused (nacked) a publish to {target}")]
    Nacked { target: String },
    #[error("a publish to {target} matched no queue (is the topology declared?)")]
    Unroutable { target: String },
    #[error(
        "RabbitMQ has been unreachable for {:.0} s; the next connection attempt is in {:.1} s",
        down_for.as_secs_f64(),
        retry_in.as_secs_f64()
    )]
    Disconnected {
        down_for: Duration,
        retry_in: Duration,
    },
    #[error(
        "RabbitMQ has been unreachable for {:.0} s, longer than [amqp] give_up_after_secs; giving up",
        down_for.as_secs_f64()
    )]
    GaveUp { down_for: Duration },
    #[error("RabbitMQ did not complete the connection within {after:?}")]
    Timeout { after: Duration },
}

/// Which queue a job waits in. Workers take manual jobs first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    Manual,
    Scheduled,
}

impl Lane {
    pub const ALL: [Lane; 2] = [Lane::Manual, Lane::Scheduled];

    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Manual => "manual",
            Lane::Scheduled => "scheduled",
        }
    }
}

/// A message to publish: body and the headers we set.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub body: Vec<u8>,
    /// `message_id`, for de-duplication in logs and by consumers.
    pub message_id: String,
    pub traceparent: Option<String>,
    /// Extra headers (string values).
    pub headers: Vec<(String, String)>,
}

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

/// Reads a string header of a delivery.
pub fn header(delivery: &Delivery, name: &str) -> Option<String> {
    let headers = delivery.properties.headers().as_ref()?;
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// The delivery count RabbitMQ's quorum queues put on redelivered messages.
pub fn delivery_count(delivery: &Delivery) -> i64 {
    let Some(headers) = delivery.properties.headers().as_ref() else {
        return 0;
    };
    match headers.inner().get("x-delivery-count") {
        Some(AMQPValue::LongLongInt(n)) => *n,
        Some(AMQPValue::LongInt(n)) => i64::from(*n),
        Some(AMQPValue::ShortInt(n)) => i64::from(*n),
        _ => 0,
    }
}
