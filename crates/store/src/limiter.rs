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

/// One account's limits, as one of several a request counts against (a QuickBooks batch
/// counts against the realm and against the realm's batch allowance; a Xero call against
/// the tenant and against the app).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AccountLimit<'a> {
    pub connector: IntegrationType,
    pub account: &'a str,
    pub spec: LimitSpec,
}

/// The answer to a request for a slot.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// Start in `start_in`; release the `permits` (one per account with a concurrency cap)
    /// once the response is in.
    Granted {
        start_in: Duration,
        permits: Vec<Uuid>,
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
    /// Asks for a start slot on one account (see [`Store::admit_all`]).
    pub async fn admit(
        &self,
        account: AccountLimit<'_>,
        max_wait: Duration,
        holder: &str,
        permit_ttl: Duration,
    ) -> Result<Admission, StoreError> {
        self.admit_all(&[account], max_wait, holder, permit_ttl)
            .await
    }

    /// Asks for one start slot that every one of `accounts` allows: the request starts at the
    /// latest of their next slots and blocks, takes a slot, a day's count and (where capped)
    /// a permit on each, or on none. The accounts' rows are locked in a fixed order, so two
    /// callers with overlapping accounts cannot deadlock.
    pub async fn admit_all(
        &self,
        accounts: &[AccountLimit<'_>],
        max_wait: Duration,
        holder: &str,
        permit_ttl: Duration,
    ) -> Result<Admission, StoreError> {
        let mut ordered: Vec<&AccountLimit<'_>> = accounts.iter().collect();
        ordered.sort_by(|a, b| {
            (a.connector.as_str(), a.account).cmp(&(b.connector.as_str(), b.account))
        });
        ordered.dedup_by(|a, b| a.connector == b.connector && a.account == b.account);
        let mut tx = self.pool.begin().await?;
        lock_accounts(&mut tx, &ordered).await?;
        let rows = read_accounts(&mut tx, &ordered).await?;
        match decide(&ordered, &rows, max_wait) {
            Decision::Wait(admission) => {
                tx.rollback().await?;
                Ok(admission)
            }
            Decision::Start {
                now,
                start,
                day_counts,
            } => {
                let permits = take_slots(
                    &mut tx,
                    &ordered,
                    &day_counts,
                    now,
                    start,
                    holder,
                    permit_ttl,
                )
                .await?;
                tx.commit().await?;
                Ok(Admission::Granted {
                    start_in: to_std(start - now),
                    permits,
                })
            }
        }
    }

    /// Gives concurrency permits back.
    pub async fn release_permits(&self, permits: &[Uuid]) -> Result<(), StoreError> {
        if permits.is_empty() {
            return Ok(());
        }
        sqlx::query("DELETE FROM rate_limit_permits WHERE id = ANY($1)")
            .bind(permits)
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

/// Creates the accounts' rows if needed and locks them, in the callers' fixed order.
async fn lock_accounts(
    tx: &mut sqlx::PgConnection,
    ordered: &[&AccountLimit<'_>],
) -> Result<(), StoreError> {
    for limit in ordered {
        sqlx::query(
            "INSERT INTO rate_limits (connector_type, account_key) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(limit.connector)
        .bind(limit.account)
        .execute(&mut *tx)
        .await?;
        // The row lock serialises admissions for one account across the fleet. It is
        // taken in a statement of its own: under READ COMMITTED the next statement's
        // snapshot then sees every permit committed by the admissions we waited for.
        sqlx::query(
            "SELECT 1 FROM rate_limits WHERE connector_type = $1 AND account_key = $2 FOR UPDATE",
        )
        .bind(limit.connector)
        .bind(limit.account)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Each locked account's state, with the database's clock at the reading.
async fn read_accounts(
    tx: &mut sqlx::PgConnection,
    ordered: &[&AccountLimit<'_>],
) -> Result<Vec<LimitRow>, StoreError> {
    let mut rows = Vec::with_capacity(ordered.len());
    for limit in ordered {
        let row = sqlx::query_as::<_, LimitRow>(
            "WITH l AS (SELECT * FROM rate_limits WHERE connector_type = $1 AND account_key = $2)
             SELECT clock_timestamp() AS now, l.next_slot_at, l.day_started_on, l.day_count, l.blocked_until,
                    (SELECT count(*) FROM rate_limit_permits p
                      WHERE p.connector_type = $1 AND p.account_key = $2 AND p.expires_at > clock_timestamp()) AS in_flight,
                    (SELECT min(p.expires_at) FROM rate_limit_permits p
                      WHERE p.connector_type = $1 AND p.account_key = $2 AND p.expires_at > clock_timestamp()) AS soonest_permit_end
               FROM l",
        )
        .bind(limit.connector)
        .bind(limit.account)
        .fetch_one(&mut *tx)
        .await?;
        rows.push(row);
    }
    Ok(rows)
}

/// What the accounts' state allows.
enum Decision {
    Wait(Admission),
    /// Start at `start` (at `now` or later); `day_counts` are the counts before this one.
    Start {
        now: DateTime<Utc>,
        start: DateTime<Utc>,
        day_counts: Vec<i32>,
    },
}

/// The admission decision, from the rows alone: a spent daily quota or a full concurrency
/// cap waits; otherwise the start is the latest of now, every next slot and every block,
/// and waiting longer than `max_wait` for it is refused.
fn decide(ordered: &[&AccountLimit<'_>], rows: &[LimitRow], max_wait: Duration) -> Decision {
    // One clock for the whole decision: the latest reading.
    let now = rows.iter().map(|r| r.now).max().unwrap_or_else(Utc::now);
    let today = now.date_naive();
    let wait = |retry_in: chrono::Duration, reason| {
        Decision::Wait(Admission::Wait {
            retry_in: to_std(retry_in),
            reason,
        })
    };
    let day_counts: Vec<i32> = rows
        .iter()
        .map(|r| {
            if r.day_started_on < today {
                0
            } else {
                r.day_count
            }
        })
        .collect();
    for ((limit, row), day_count) in ordered.iter().zip(rows).zip(&day_counts) {
        if let Some(per_day) = limit.spec.per_day
            && *day_count >= i32::try_from(per_day).unwrap_or(i32::MAX)
        {
            let midnight = (today + chrono::Days::new(1))
                .and_hms_opt(0, 0, 0)
                .map(|t| t.and_utc())
                .unwrap_or(now);
            return wait(midnight - now, WaitReason::DailyQuota);
        }
        if let Some(cap) = limit.spec.concurrency
            && row.in_flight >= i64::from(cap)
        {
            let retry = row
                .soonest_permit_end
                .map_or(chrono::Duration::milliseconds(50), |end| {
                    (end - now).min(chrono::Duration::milliseconds(50))
                });
            return wait(retry, WaitReason::Concurrency);
        }
    }
    let blocked = rows
        .iter()
        .filter_map(|r| r.blocked_until.filter(|b| *b > now))
        .max();
    let start = rows
        .iter()
        .map(|r| r.next_slot_at)
        .chain([now])
        .chain(blocked)
        .max()
        .unwrap_or(now);
    if to_std(start - now) > max_wait {
        let reason = if blocked == Some(start) {
            WaitReason::Blocked
        } else {
            WaitReason::Pace
        };
        return wait(start - now, reason);
    }
    Decision::Start {
        now,
        start,
        day_counts,
    }
}

/// Takes the slot, the day's count and (where capped) a permit on every account.
async fn take_slots(
    tx: &mut sqlx::PgConnection,
    ordered: &[&AccountLimit<'_>],
    day_counts: &[i32],
    now: DateTime<Utc>,
    start: DateTime<Utc>,
    holder: &str,
    permit_ttl: Duration,
) -> Result<Vec<Uuid>, StoreError> {
    let today = now.date_naive();
    let mut permits = Vec::new();
    for (limit, day_count) in ordered.iter().zip(day_counts) {
        let interval = chrono::Duration::from_std(limit.spec.interval).unwrap_or_default();
        sqlx::query(
            "UPDATE rate_limits SET next_slot_at = $3, day_started_on = $4, day_count = $5, updated_at = $6
              WHERE connector_type = $1 AND account_key = $2",
        )
        .bind(limit.connector)
        .bind(limit.account)
        .bind(start + interval)
        .bind(today)
        .bind(day_count + 1)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if limit.spec.concurrency.is_some() {
            let id = Uuid::now_v7();
            sqlx::query(
                "INSERT INTO rate_limit_permits (id, connector_type, account_key, holder, acquired_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(id)
            .bind(limit.connector)
            .bind(limit.account)
            .bind(holder)
            .bind(now)
            .bind(start + chrono::Duration::from_std(permit_ttl).unwrap_or_default())
            .execute(&mut *tx)
            .await?;
            permits.push(id);
        }
    }
    Ok(permits)
}
