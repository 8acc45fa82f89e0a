//! The fleet-wide rate limiter: every worker asks Postgres before calling an ERP account.
//!
//! Requests are paced rather than counted in windows: an admission reserves the account's
//! next start slot and moves it on by `interval`, so `n` requests never start within less than
//! `(n - 1) × interval`, and no window of the limit's length, however the ERP aligns it, holds
//! more than the limit. A worker sleeps until its slot; a slot further away than the caller
//! will wait is not reserved, and the caller hands the job back to the queue instead. A daily
//! quota, a concurrency cap (permits that expire, so a crashed worker cannot hold one) and a
//! block from a 429's `Retry-After` apply to every worker alike.

use crate::{Store, StoreError};
use chrono::{DateTime, Utc};
use passerelle_core::IntegrationType;
use std::time::Duration;
use uuid::Uuid;

/// The limits of one account, as pacing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitSpec {
    /// Minimum time between two request starts.
    pub interval: Duration,
    /// Requests per UTC day.
    pub per_day: Option<u32>,
    /// Requests in flight at once.
    pub concurrency: Option<u32>,
}

/// The answer to a request for a slot.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// Start in `start_in`; release `permit` (when there is one) once the response is in.
    Granted {
        start_in: Duration,
        permit: Option<Uuid>,
    },
    /// No slot within the caller's wait: try again in `retry_in`.
    Wait {
        retry_in: Duration,
        reason: WaitReason,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitReason {
    /// The pace (requests per window) is used up that far ahead.
    Pace,
    /// The ERP answered 429 and asked every caller to wait.
    Blocked,
    /// The daily quota is spent until midnight UTC.
    DailyQuota,
    /// The concurrency cap is reached.
    Concurrency,
}

impl WaitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            WaitReason::Pace => "request rate",
            WaitReason::Blocked => "Retry-After from the ERP",
            WaitReason::DailyQuota => "daily quota",
            WaitReason::Concurrency => "concurrent requests",
        }
    }
}

#[derive(sqlx::FromRow)]
struct LimitRow {
    now: DateTime<Utc>,
    next_slot_at: DateTime<Utc>,
    day_started_on: chrono::NaiveDate,
    day_count: i32,
    blocked_until: Option<DateTime<Utc>>,
    in_flight: i64,
    soonest_permit_end: Option<DateTime<Utc>>,
}

fn to_std(d: chrono::Duration) -> Duration {
    d.to_std().unwrap_or(Duration::ZERO)
}

impl Store {
    /// Asks for a start slot on `(connector, account)`.
    #[allow(clippy::too_many_arguments)]
    pub async fn admit(
        &self,
        connector: IntegrationType,
        account: &str,
        spec: &LimitSpec,
        max_wait: Duration,
        holder: &str,
        permit_ttl: Duration,
    ) -> Result<Admission, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO rate_limits (connector_type, account_key) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(connector)
        .bind(account)
        .execute(&mut *tx)
        .await?;
        // The row lock serialises admissions for one account across the fleet. It is taken in
        // a statement of its own: under READ COMMITTED the next statement's snapshot then sees
        // every permit committed by the admissions we waited for.
        sqlx::query(
            "SELECT 1 FROM rate_limits WHERE connector_type = $1 AND account_key = $2 FOR UPDATE",
        )
        .bind(connector)
        .bind(account)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query_as::<_, LimitRow>(
            "WITH l AS (SELECT * FROM rate_limits WHERE connector_type = $1 AND account_key = $2)
             SELECT clock_timestamp() AS now, l.next_slot_at, l.day_started_on, l.day_count, l.blocked_until,
                    (SELECT count(*) FROM rate_limit_permits p
                      WHERE p.connector_type = $1 AND p.account_key = $2 AND p.expires_at > clock_timestamp()) AS in_flight,
                    (SELECT min(p.expires_at) FROM rate_limit_permits p
                      WHERE p.connector_type = $1 AND p.account_key = $2 AND p.expires_at > clock_timestamp()) AS soonest_permit_end
               FROM l",
        )
        .bind(connector)
        .bind(account)
        .fetch_one(&mut *tx)
        .await?;
        let now = row.now;
        let today = now.date_naive();
        let day_count = if row.day_started_on < today {
            0
        } else {
            row.day_count
        };
        let wait = |retry_in: chrono::Duration, reason| Admission::Wait {
            retry_in: to_std(retry_in),
            reason,
        };
        if let Some(per_day) = spec.per_day
            && day_count >= i32::try_from(per_day).unwrap_or(i32::MAX)
        {
            tx.rollback().await?;
            let midnight = (today + chrono::Days::new(1))
                .and_hms_opt(0, 0, 0)
                .map(|t| t.and_utc())
                .unwrap_or(now);
            return Ok(wait(midnight - now, WaitReason::DailyQuota));
        }
        if let Some(cap) = spec.concurrency
            && row.in_flight >= i64::from(cap)
        {
            tx.rollback().await?;
            let retry = row
                .soonest_permit_end
                .map_or(chrono::Duration::milliseconds(50), |end| {
                    (end - now).min(chrono::Duration::milliseconds(50))
                });
            return Ok(wait(retry, WaitReason::Concurrency));
        }
        let blocked = row.blocked_until.filter(|b| *b > now);
        let start = [Some(now), Some(row.next_slot_at), blocked]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(now);
        if to_std(start - now) > max_wait {
            tx.rollback().await?;
            let reason = if blocked == Some(start) {
                WaitReason::Blocked
            } else {
                WaitReason::Pace
            };
            return Ok(wait(start - now, reason));
        }
        let interval = chrono::Duration::from_std(spec.interval).unwrap_or_default();
        sqlx::query(
            "UPDATE rate_limits SET next_slot_at = $3, day_started_on = $4, day_count = $5, updated_at = $6
              WHERE connector_type = $1 AND account_key = $2",
        )
        .bind(connector)
        .bind(account)
        .bind(start + interval)
        .bind(today)
        .bind(day_count + 1)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let permit = if spec.concurrency.is_some() {
            let id = Uuid::now_v7();
            sqlx::query(
                "INSERT INTO rate_limit_permits (id, connector_type, account_key, holder, acquired_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(id)
            .bind(connector)
            .bind(account)
            .bind(holder)
            .bind(now)
            .bind(start + chrono::Duration::from_std(permit_ttl).unwrap_or_default())
            .execute(&mut *tx)
            .await?;
            Some(id)
        } else {
            None
        };
        tx.commit().await?;
        Ok(Admission::Granted {
            start_in: to_std(start - now),
            permit,
        })
    }

    /// Gives a concurrency permit back.
    pub async fn release_permit(&self, permit: Uuid) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM rate_limit_permits WHERE id = $1")
            .bind(permit)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Blocks the account for every worker (a 429's `Retry-After`). Never shortens a block.
    pub async fn block_account(
        &self,
        connector: IntegrationType,
        account: &str,
        for_: Duration,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO rate_limits (connector_type, account_key, blocked_until)
             VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3))
             ON CONFLICT (connector_type, account_key) DO UPDATE SET
                 blocked_until = GREATEST(COALESCE(rate_limits.blocked_until, EXCLUDED.blocked_until), EXCLUDED.blocked_until),
                 updated_at = now()",
        )
        .bind(connector)
        .bind(account)
        .bind(for_.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
