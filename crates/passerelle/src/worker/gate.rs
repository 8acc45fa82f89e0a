//! The fleet-wide rate gate over Postgres (see `passerelle_store::limiter`).

use async_trait::async_trait;
use passerelle_connectors::{ConnectorError, Permit, RateGate, RateKey, RateLimits};
use passerelle_store::Store;
use passerelle_store::limiter::{AccountLimit, Admission, LimitSpec, WaitReason};
use std::time::{Duration, Instant};
use tracing::warn;

/// How long a concurrency permit outlives its request if the worker dies holding it.
const PERMIT_TTL: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct PgRateGate {
    pub store: Store,
    /// Names the worker in permit rows, for whoever inspects them.
    pub holder: String,
}

#[async_trait]
impl RateGate for PgRateGate {
    async fn admit(
        &self,
        limits: &[(RateKey, RateLimits)],
        max_wait: Duration,
    ) -> Result<Vec<Permit>, ConnectorError> {
        let accounts: Vec<AccountLimit<'_>> = limits
            .iter()
            .map(|(key, limits)| AccountLimit {
                connector: key.connector,
                account: &key.account,
                spec: LimitSpec {
                    interval: limits.interval(),
                    per_day: limits.per_day,
                    concurrency: limits.concurrency,
                },
            })
            .collect();
        let started = Instant::now();
        loop {
            let remaining = max_wait.saturating_sub(started.elapsed());
            let admission = self
                .store
                .admit_all(&accounts, remaining, &self.holder, PERMIT_TTL)
                .await
                .map_err(|e| {
                    ConnectorError::transient(format!("the rate limiter is unavailable: {e}"))
                })?;
            match admission {
                Admission::Granted { start_in, permits } => {
                    tokio::time::sleep(start_in).await;
                    return Ok(permits.into_iter().map(Permit).collect());
                }
                // Permits free up within a request's time: wait a little and ask again.
                Admission::Wait {
                    retry_in,
                    reason: WaitReason::Concurrency,
                } if started.elapsed() + retry_in <= max_wait => {
                    tokio::time::sleep(retry_in.max(Duration::from_millis(5))).await;
                }
                Admission::Wait { retry_in, reason } => {
                    let accounts: Vec<&str> =
                        limits.iter().map(|(k, _)| k.account.as_str()).collect();
                    tracing::debug!(accounts = ?accounts, reason = reason.as_str(), wait_ms = retry_in.as_millis() as u64, "rate limit: handing the job back");
                    return Err(ConnectorError::RateLimited {
                        retry_after: retry_in.max(Duration::from_millis(100)),
                    });
                }
            }
        }
    }

    async fn release(&self, permits: &[Permit]) {
        let ids: Vec<uuid::Uuid> = permits.iter().map(|p| p.0).collect();
        if let Err(e) = self.store.release_permits(&ids).await {
            warn!(error = %e, "cannot release rate-limit permits; they expire on their own");
        }
    }

    async fn block(&self, key: &RateKey, for_: Duration) {
        if let Err(e) = self
            .store
            .block_account(key.connector, &key.account, for_)
            .await
        {
            warn!(error = %e, "cannot record a 429 block for the fleet");
        }
    }
}
