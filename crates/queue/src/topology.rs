//! Names and arguments of every exchange and queue under a prefix, and the retry-tier
//! arithmetic (the one place that decides how long a job waits before its next attempt).

use crate::{Lane, QueueError, long_string};
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};
use std::time::Duration;

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

    /// The shortest tier at least `wanted` long (the longest when none is). The tiers are
    /// validated non-empty at configuration load; an empty list would mean "no wait".
    pub fn tier_for(&self, wanted: Duration) -> Duration {
        self.retry_delays
            .iter()
            .copied()
            .find(|d| *d >= wanted)
            .unwrap_or_else(|| self.longest_tier())
    }

    /// The longest delay one trip through a tier can give.
    pub fn longest_tier(&self) -> Duration {
        self.retry_delays.last().copied().unwrap_or(Duration::ZERO)
    }

    /// How long attempt `attempt` (1 for the first retry) waits: the tier of its rank, or the
    /// ERP's own figure when it gave one (at least a second). A wait longer than
    /// [`Topology::longest_tier`] goes round the tiers until the job's `not_before`.
    pub fn retry_delay(&self, attempt: u32, asked: Option<Duration>) -> Duration {
        if let Some(asked) = asked {
            return asked.max(Duration::from_secs(1));
        }
        let rank = usize::try_from(attempt.saturating_sub(1)).unwrap_or(usize::MAX);
        self.retry_delays
            .get(rank)
            .copied()
            .unwrap_or_else(|| self.longest_tier())
    }

    /// Declares everything. Idempotent: redeclaring with the same arguments is a no-op, so
    /// every role does it at start-up and none depends on another having run first.
    pub async fn declare(&self, channel: &Channel) -> Result<(), QueueError> {
        self.declare_exchanges_and_dead_letters(channel).await?;
        for lane in Lane::ALL {
            self.declare_lane(channel, lane).await?;
        }
        Ok(())
    }

    async fn declare_exchanges_and_dead_letters(
        &self,
        channel: &Channel,
    ) -> Result<(), QueueError> {
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

        Ok(())
    }

    /// A lane's work queue, bound to the work exchange, and its delay tiers.
    async fn declare_lane(&self, channel: &Channel, lane: Lane) -> Result<(), QueueError> {
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn topology() -> Topology {
        Topology {
            prefix: "p".into(),
            delivery_limit: 5,
            retry_delays: [5, 30, 120].map(Duration::from_secs).to_vec(),
        }
    }

    #[test]
    fn retries_wait_the_tier_of_their_rank_or_what_the_erp_asked() {
        let t = topology();
        let secs = |s| Duration::from_secs(s);
        assert_eq!(t.retry_delay(1, None), secs(5));
        assert_eq!(t.retry_delay(2, None), secs(30));
        assert_eq!(t.retry_delay(9, None), secs(120));
        assert_eq!(t.retry_delay(0, None), secs(5));
        assert_eq!(t.retry_delay(1, Some(secs(7200))), secs(7200));
        assert_eq!(t.retry_delay(1, Some(Duration::ZERO)), secs(1));
        assert_eq!(t.tier_for(secs(6)), secs(30));
        assert_eq!(t.tier_for(secs(7200)), secs(120));
        assert_eq!(t.longest_tier(), secs(120));
    }
}
