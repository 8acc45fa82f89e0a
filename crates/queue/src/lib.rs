//! RabbitMQ for Passerelle: the queue topology, a publisher that waits for broker confirms,
//! and consumers for the two work lanes.
//!
//! This crate moves bytes and headers; it does not decide what a job means or when to retry
//! it (the worker does). Every name is under the configured prefix, so deployments and tests
//! sharing one broker never see each other's messages.
//!
//! Topology (declared idempotently by every role at start-up):
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

use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use std::time::Duration;

pub use lapin::message::Delivery;
pub use lapin::options::{BasicAckOptions, BasicNackOptions};

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

/// Names and arguments of every exchange and queue.
#[derive(Debug, Clone)]
pub struct Topology {
    pub prefix: String,
    pub delivery_limit: u32,
    /// Retry tiers, shortest first.
    pub retry_delays: Vec<Duration>,
}

impl Topology {
    pub fn work_exchange(&self) -> String {
        format!("{}.work", self.prefix)
    }

    pub fn dead_exchange(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    pub fn dead_queue(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    pub fn job_queue(&self, lane: Lane) -> String {
        format!("{}.jobs.{}", self.prefix, lane.as_str())
    }

    pub fn delay_queue(&self, lane: Lane, delay: Duration) -> String {
        format!(
            "{}.delay.{}.{}s",
            self.prefix,
            lane.as_str(),
            delay.as_secs()
        )
    }

    /// The shortest tier at least `wanted` long (the longest when none is).
    pub fn tier_for(&self, wanted: Duration) -> Duration {
        self.retry_delays
            .iter()
            .copied()
            .find(|d| *d >= wanted)
            .or_else(|| self.retry_delays.last().copied())
            .unwrap_or(Duration::from_secs(5))
    }

    /// Declares everything. Idempotent: redeclaring with the same arguments is a no-op, so
    /// every role does it at start-up and none depends on another having run first.
    pub async fn declare(&self, channel: &Channel) -> Result<(), QueueError> {
        let durable_exchange = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .exchange_declare(
                self.work_exchange().into(),
                ExchangeKind::Direct,
                durable_exchange,
                FieldTable::default(),
            )
            .await?;
        channel
            .exchange_declare(
                self.dead_exchange().into(),
                ExchangeKind::Fanout,
                durable_exchange,
                FieldTable::default(),
            )
            .await?;

        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        // Dead letters are kept until an SRE looks at them: quorum for durability, no limit.
        let mut dead_args = FieldTable::default();
        dead_args.insert("x-queue-type".into(), long_string("quorum"));
        channel
            .queue_declare(self.dead_queue().into(), durable, dead_args)
            .await?;
        channel
            .queue_bind(
                self.dead_queue().into(),
                self.dead_exchange().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;

        for lane in Lane::ALL {
            let mut args = FieldTable::default();
            // Quorum queues: replicated, and they count deliveries, which classic queues do not.
            args.insert("x-queue-type".into(), long_string("quorum"));
            // Poison-message backstop: a message redelivered this many times (its workers kept
            // dying on it) is dead-lettered instead of looping forever.
            args.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongLongInt(i64::from(self.delivery_limit)),
            );
            args.insert(
                "x-dead-letter-exchange".into(),
                long_string(&self.dead_exchange()),
            );
            channel
                .queue_declare(self.job_queue(lane).into(), durable, args)
                .await?;
            channel
                .queue_bind(
                    self.job_queue(lane).into(),
                    self.work_exchange().into(),
                    lane.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;

            for delay in &self.retry_delays {
                let mut args = FieldTable::default();
                args.insert("x-queue-type".into(), long_string("quorum"));
                let ttl_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
                args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl_ms));
                // Expired messages go back to work, into the lane they came from.
                args.insert(
                    "x-dead-letter-exchange".into(),
                    long_string(&self.work_exchange()),
                );
                args.insert(
                    "x-dead-letter-routing-key".into(),
                    long_string(lane.as_str()),
                );
                // At-least-once dead-lettering: the broker keeps an expired message until the
                // work queue has confirmed it, so a retry is not lost if a node fails meanwhile.
                // (It requires overflow=reject-publish.)
                args.insert(
                    "x-dead-letter-strategy".into(),
                    long_string("at-least-once"),
                );
                args.insert("x-overflow".into(), long_string("reject-publish"));
                channel
                    .queue_declare(self.delay_queue(lane, *delay).into(), durable, args)
                    .await?;
            }
        }
        Ok(())
    }
}

impl Topology {
    /// Every queue name, for teardown and inspection.
    pub fn all_queues(&self) -> Vec<String> {
        let mut queues = vec![self.dead_queue()];
        for lane in Lane::ALL {
            queues.push(self.job_queue(lane));
            for delay in &self.retry_delays {
                queues.push(self.delay_queue(lane, *delay));
            }
        }
        queues
    }

    /// Deletes every queue and exchange of this prefix (tests, and decommissioning a
    /// deployment). Messages in them are lost: never call this on a live prefix.
    pub async fn delete(&self, channel: &Channel) -> Result<(), QueueError> {
        for queue in self.all_queues() {
            channel
                .queue_delete(queue.into(), lapin::options::QueueDeleteOptions::default())
                .await?;
        }
        for exchange in [self.work_exchange(), self.dead_exchange()] {
            channel
                .exchange_delete(
                    exchange.into(),
                    lapin::options::ExchangeDeleteOptions::default(),
                )
                .await?;
        }
        Ok(())
    }
}

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

/// A connection with the topology declared.
#[derive(Clone)]
pub struct Broker {
    connection: std::sync::Arc<Connection>,
    topology: Topology,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("topology", &self.topology)
            .finish()
    }
}

impl Broker {
    /// Connects and declares the topology.
    pub async fn connect(url: &str, topology: Topology) -> Result<Self, QueueError> {
        let connection = Connection::connect(url, ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        topology.declare(&channel).await?;
        let _ = channel.close(200, "declared".into()).await;
        Ok(Self {
            connection: std::sync::Arc::new(connection),
            topology,
        })
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// A publisher on its own channel in confirm mode.
    pub async fn publisher(&self) -> Result<Publisher, QueueError> {
        let channel = self.connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Publisher {
            channel,
            topology: self.topology.clone(),
        })
    }

    /// A consumer of one lane, with manual acks and `prefetch` unacknowledged messages at most.
    pub async fn consume(
        &self,
        lane: Lane,
        prefetch: u16,
        tag: &str,
    ) -> Result<lapin::Consumer, QueueError> {
        let channel = self.connection.create_channel().await?;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        Ok(channel
            .basic_consume(
                self.topology.job_queue(lane).into(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?)
    }

    /// Messages waiting in a queue (passive declare), for tests and `status` output.
    pub async fn queue_depth(&self, queue: &str) -> Result<u32, QueueError> {
        let channel = self.connection.create_channel().await?;
        let q = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let _ = channel.close(200, "done".into()).await;
        Ok(q.message_count())
    }

    /// Takes one message from a queue without a consumer (tests, dead-letter inspection).
    pub async fn get_one(&self, queue: &str) -> Result<Option<Delivery>, QueueError> {
        let channel = self.connection.create_channel().await?;
        let got = channel
            .basic_get(
                queue.into(),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await?;
        Ok(got.map(|g| g.delivery))
    }

    /// Deletes this prefix's topology (see [`Topology::delete`]).
    pub async fn delete_topology(&self) -> Result<(), QueueError> {
        let channel = self.connection.create_channel().await?;
        self.topology.delete(&channel).await?;
        let _ = channel.close(200, "deleted".into()).await;
        Ok(())
    }

    pub async fn close(&self) {
        let _ = self.connection.close(200, "bye".into()).await;
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

/// Publishes with publisher confirms: a publish returns only once the broker has the message
/// (persisted on the quorum queue's majority).
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
    topology: Topology,
}

impl Publisher {
    /// Publishes jobs to a lane and waits until the broker confirms every one of them.
    /// Confirms are awaited together, so a batch costs one round trip, not one per message.
    pub async fn publish_jobs(&self, lane: Lane, messages: &[Outgoing]) -> Result<(), QueueError> {
        let exchange = self.topology.work_exchange();
        self.publish_many(&exchange, lane.as_str(), messages).await
    }

    /// Publishes a job to wait `delay` (rounded up to a tier) before it returns to `lane`.
    pub async fn publish_delayed(
        &self,
        lane: Lane,
        delay: Duration,
        message: &Outgoing,
    ) -> Result<Duration, QueueError> {
        let tier = self.topology.tier_for(delay);
        let queue = self.topology.delay_queue(lane, tier);
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
        let exchange = self.topology.dead_exchange();
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
        let mut confirms = Vec::with_capacity(messages.len());
        for message in messages {
            let mut headers = FieldTable::default();
            if let Some(tp) = &message.traceparent {
                headers.insert(TRACEPARENT_HEADER.into(), long_string(tp));
            }
            for (k, v) in &message.headers {
                headers.insert(ShortString::from(k.as_str()), long_string(v));
            }
            let properties = BasicProperties::default()
                .with_delivery_mode(2) // persistent
                .with_content_type("application/json".into())
                .with_message_id(message.message_id.as_str().into())
                .with_headers(headers);
            let confirm = self
                .channel
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    // mandatory: an unroutable message comes back instead of vanishing.
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &message.body,
                    properties,
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
