//! The connection to RabbitMQ, kept alive across broker restarts.
//!
//! Every use goes through [`Broker::live`]: the current connection when it is healthy, else a
//! new one (topology declared again, since a restarted broker may have lost non-durable
//! state), with capped exponential backoff and jitter between attempts so a fleet does not
//! hammer a broker that is coming back. Callers see a [`QueueError::Disconnected`] while it is
//! down and decide (the scheduler's outbox keeps runs; a worker's deliveries are redelivered
//! by the broker); only [`ReconnectPolicy::give_up_after`] turns an outage into
//! [`QueueError::GaveUp`], on which a role exits non-zero.

use crate::consume::JobConsumer;
use crate::publish::Publisher;
use crate::topology::Topology;
use crate::{Lane, QueueError};
use lapin::options::{
    BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// How a lost broker is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconnectPolicy {
    /// Wait before the second attempt; doubles per failure up to `max_delay`.
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// After this long without a broker, give up (the role exits non-zero so its supervisor
    /// and alerts see it); `None` retries for ever.
    pub give_up_after: Option<Duration>,
    /// Bound on one connection attempt (a broker that accepts TCP but never answers).
    pub connect_timeout: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
            give_up_after: Some(Duration::from_secs(900)),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl ReconnectPolicy {
    /// The pause after `failures` consecutive failed attempts: exponential, capped, with
    /// "equal jitter" (half fixed, half random) so workers spread their attempts.
    fn delay(&self, failures: u32) -> Duration {
        let exp = self
            .min_delay
            .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(16)))
            .min(self.max_delay);
        let half = exp / 2;
        half + half.mul_f64(rand::random::<f64>())
    }
}

/// A live connection and the channel publishes go through.
#[derive(Clone)]
pub(crate) struct Connected {
    pub connection: Arc<Connection>,
    pub publish: Channel,
}

impl Connected {
    fn healthy(&self) -> bool {
        self.connection.status().connected() && self.publish.status().connected()
    }
}

#[derive(Default)]
struct Link {
    current: Option<Connected>,
    failures: u32,
    next_attempt: Option<Instant>,
    down_since: Option<Instant>,
}

struct Inner {
    /// Carries a password: never logged (the `Debug` impl leaves it out).
    url: String,
    topology: Topology,
    policy: ReconnectPolicy,
    link: tokio::sync::Mutex<Link>,
    connected: AtomicBool,
}

/// A handle on RabbitMQ with the topology declared; clones share one connection.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("topology", &self.inner.topology)
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl Broker {
    /// Connects and declares the topology, with the default [`ReconnectPolicy`]. The first
    /// connection must succeed: a role that cannot reach its broker at start says so at once.
    pub async fn connect(url: &str, topology: Topology) -> Result<Self, QueueError> {
        Self::connect_with(url, topology, ReconnectPolicy::default()).await
    }

    pub async fn connect_with(
        url: &str,
        topology: Topology,
        policy: ReconnectPolicy,
    ) -> Result<Self, QueueError> {
        let broker = Self {
            inner: Arc::new(Inner {
                url: url.to_owned(),
                topology,
                policy,
                link: tokio::sync::Mutex::new(Link::default()),
                connected: AtomicBool::new(false),
            }),
        };
        let connected = broker.establish().await?;
        broker.inner.link.lock().await.current = Some(connected);
        broker.inner.connected.store(true, Ordering::Relaxed);
        Ok(broker)
    }

    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    /// Whether the last use found the broker reachable (for readiness reports).
    pub fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Relaxed)
    }

    /// The publisher over this broker (confirm mode; reconnects as the broker does).
    pub fn publisher(&self) -> Publisher {
        Publisher::new(self.clone())
    }

    async fn establish(&self) -> Result<Connected, QueueError> {
        let attempt = async {
            let connection =
                Connection::connect(&self.inner.url, ConnectionProperties::default()).await?;
            let channel = connection.create_channel().await?;
            self.inner.topology.declare(&channel).await?;
            let _ = channel.close(200, "declared".into()).await;
            let publish = connection.create_channel().await?;
            publish
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            Ok::<_, QueueError>(Connected {
                connection: Arc::new(connection),
                publish,
            })
        };
        tokio::time::timeout(self.inner.policy.connect_timeout, attempt)
            .await
            .map_err(|_| QueueError::Timeout {
                after: self.inner.policy.connect_timeout,
            })?
    }

    /// The current connection if healthy, else one new attempt (when the backoff allows).
    pub(crate) async fn live(&self) -> Result<Connected, QueueError> {
        let mut link = self.inner.link.lock().await;
        if let Some(current) = link.current.as_ref().filter(|c| c.healthy()) {
            return Ok(current.clone());
        }
        let now = Instant::now();
        if link.current.take().is_some() || link.down_since.is_none() {
            warn!(prefix = %self.inner.topology.prefix, "lost the connection to RabbitMQ; reconnecting");
            link.down_since = Some(now);
        }
        self.inner.connected.store(false, Ordering::Relaxed);
        let down_for = link.down_since.map_or(Duration::ZERO, |t| now - t);
        if let Some(limit) = self.inner.policy.give_up_after
            && down_for > limit
        {
            return Err(QueueError::GaveUp { down_for });
        }
        if let Some(at) = link.next_attempt.filter(|at| *at > now) {
            return Err(QueueError::Disconnected {
                down_for,
                retry_in: at - now,
            });
        }
        match self.establish().await {
            Ok(connected) => {
                info!(prefix = %self.inner.topology.prefix, down_secs = down_for.as_secs_f64(), "reconnected to RabbitMQ; topology declared");
                *link = Link {
                    current: Some(connected.clone()),
                    ..Link::default()
                };
                self.inner.connected.store(true, Ordering::Relaxed);
                Ok(connected)
            }
            Err(e) => {
                link.failures += 1;
                let retry_in = self.inner.policy.delay(link.failures);
                link.next_attempt = Some(Instant::now() + retry_in);
                warn!(error = %e, retry_in_ms = retry_in.as_millis() as u64, "RabbitMQ is unreachable; will try again");
                Err(QueueError::Disconnected { down_for, retry_in })
            }
        }
    }

    /// Waits until the broker is reachable (or `give_up_after` passes), sleeping through the
    /// backoff; returns early with `Ok(false)` when `stop` is cancelled.
    pub async fn wait_connected(
        &self,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Result<bool, QueueError> {
        loop {
            match self.live().await {
                Ok(_) => return Ok(true),
                Err(QueueError::Disconnected { retry_in, .. }) => {
                    tokio::select! {
                        _ = stop.cancelled() => return Ok(false),
                        _ = tokio::time::sleep(retry_in) => {}
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A consumer of one lane's jobs, with manual acks and `prefetch` unacknowledged
    /// messages at most.
    pub async fn consume(
        &self,
        lane: Lane,
        prefetch: u16,
        tag: &str,
    ) -> Result<JobConsumer, QueueError> {
        let live = self.live().await?;
        let channel = live.connection.create_channel().await?;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        let consumer = channel
            .basic_consume(
                self.inner.topology.job_queue(lane).into(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(JobConsumer::new(lane, consumer, self.publisher()))
    }

    /// Takes the next job waiting on `lane` without a consumer (`basic.get`, manual ack), for
    /// a worker that drains the queues and returns (`passerelle::worker::drain_until_empty`).
    /// Malformed messages met on the way are dead-lettered, as a consumer does.
    pub async fn take_job(&self, lane: Lane) -> Result<Option<crate::JobDelivery>, QueueError> {
        let live = self.live().await?;
        loop {
            let got = live
                .publish
                .basic_get(
                    self.inner.topology.job_queue(lane).into(),
                    lapin::options::BasicGetOptions { no_ack: false },
                )
                .await?;
            let Some(message) = got else {
                return Ok(None);
            };
            if let Some(job) =
                crate::consume::decode(lane, message.delivery, &self.publisher()).await
            {
                return Ok(Some(job));
            }
        }
    }

    /// Messages waiting in a queue (passive declare), for tests and `status` output.
    pub async fn queue_depth(&self, queue: &str) -> Result<u32, QueueError> {
        let channel = self.live().await?.connection.create_channel().await?;
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
    pub async fn get_one(
        &self,
        queue: &str,
    ) -> Result<Option<lapin::message::Delivery>, QueueError> {
        let channel = self.live().await?.connection.create_channel().await?;
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
        let channel = self.live().await?.connection.create_channel().await?;
        self.inner.topology.delete(&channel).await?;
        let _ = channel.close(200, "deleted".into()).await;
        Ok(())
    }

    pub async fn close(&self) {
        let mut link = self.inner.link.lock().await;
        if let Some(current) = link.current.take() {
            let _ = current.connection.close(200, "bye".into()).await;
        }
        self.inner.connected.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delays_grow_to_the_cap_with_jitter() {
        let policy = ReconnectPolicy::default();
        for failures in 1..40 {
            let d = policy.delay(failures);
            let exp = policy
                .min_delay
                .saturating_mul(2u32.saturating_pow(failures - 1).min(1 << 16))
                .min(policy.max_delay);
            assert!(d >= exp / 2 && d <= exp, "{failures}: {d:?} vs {exp:?}");
        }
        assert!(policy.delay(30) >= policy.max_delay / 2);
    }
}
