//! Sync runs and integration leases: creating runs (manually or by the scheduler's claim),
//! the outbox of unpublished runs, taking and keeping the one-sync-per-integration lease, and
//! finishing, re-queueing or yielding a run.
//!
//! Lease times use the database clock (`now()`), the one clock every worker shares.

use crate::{Integration, Store, StoreError};
use chrono::{DateTime, Utc};
use passerelle_core::dry_run::DryRunReport;
use passerelle_core::schedule::next_sync_after;
use passerelle_core::{Entity, RunStatus, RunTrigger, SyncFrequency};
use passerelle_core::{IntegrationId, RunId, TenantId};
use serde::Serialize;
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct SyncRun {
    pub id: RunId,
    pub integration_id: IntegrationId,
    pub tenant_id: TenantId,
    pub trigger: RunTrigger,
    pub entity_scope: Vec<Entity>,
    pub status: RunStatus,
    pub attempt: i32,
    pub records_synced: i32,
    pub records_skipped: i32,
    pub records_failed: i32,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub queued_at: DateTime<Utc>,
    pub published_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub heartbeat_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    pub trace_id: Option<String>,
    /// When a queued run handed back to the broker is due to come back (a retry's wait).
    pub resume_at: Option<DateTime<Utc>>,
    /// An admin asked to cancel the run while a worker held it.
    pub cancel_requested_at: Option<DateTime<Utc>>,
    /// A dry run reads and diffs, and writes nothing but its report.
    pub dry_run: bool,
    /// What a finished dry run found.
    #[sqlx(json(nullable))]
    pub dry_run_report: Option<DryRunReport>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What happened when a worker tried to start a run.
#[derive(Debug, Clone)]
pub enum BeginOutcome {
    /// The lease is ours; the run is `running` (boxed: the two rows are large).
    Started(Box<(SyncRun, Integration)>),
    /// Another run (or another worker on this run) holds the integration's lease until
    /// `expires_at`: try again later.
    Busy {
        holder_run: RunId,
        expires_in: Duration,
    },
    /// The run already ended (a duplicate delivery).
    AlreadyFinished(SyncRun),
    /// The integration was deactivated or deleted since the run was queued; the run is now
    /// `cancelled`.
    Cancelled(SyncRun),
    /// No such run (deleted with its integration).
    Missing,
}

/// What renewing a lease found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    /// The lease is ours for another time to live.
    Held,
    /// The lease is ours, and an admin asked to cancel the run: stop and finish it
    /// `cancelled`.
    CancelRequested,
    /// The lease expired and another worker took the run over: stop at once.
    Lost,
}

/// A worker's hold on an integration for one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseToken {
    pub integration_id: IntegrationId,
    pub run_id: RunId,
    pub owner: String,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Store {
    /// A manual run for an integration that may sync; a dry run when `dry_run`.
    pub async fn create_manual_run(
        &self,
        integration: &Integration,
        entities: &[Entity],
        trace_id: &str,
        dry_run: bool,
    ) -> Result<SyncRun, StoreError> {
        if !integration.can_sync() {
            return Err(StoreError::Invalid(format!(
                "integration {} is {}{}; activate it before syncing (`passerelle integrations activate {}`)",
                integration.id,
                integration.status,
                if integration.deleted_at.is_some() {
                    " and deleted"
                } else {
                    ""
                },
                integration.id
            )));
        }
        Ok(sqlx::query_as::<_, SyncRun>(
            "INSERT INTO sync_runs (id, integration_id, tenant_id, trigger, entity_scope, trace_id, dry_run)
             VALUES ($1, $2, $3, 'manual', $4, $5, $6) RETURNING *",
        )
        .bind(RunId::generate())
        .bind(integration.id)
        .bind(integration.tenant_id)
        .bind(entities)
        .bind(trace_id)
        .bind(dry_run)
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn run(&self, id: RunId) -> Result<Option<SyncRun>, StoreError> {
        Ok(
            sqlx::query_as::<_, SyncRun>("SELECT * FROM sync_runs WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn runs_for_integration(
        &self,
        integration_id: IntegrationId,
        limit: i64,
    ) -> Result<Vec<SyncRun>, StoreError> {
        Ok(sqlx::query_as::<_, SyncRun>(
            "SELECT * FROM sync_runs WHERE integration_id = $1 ORDER BY queued_at DESC LIMIT $2",
        )
        .bind(integration_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The scheduler's claim: in one transaction, lock up to `batch` due integrations (others'
    /// locked rows are skipped, so schedulers never wait for each other), insert a scheduled
    /// run for each slot, advance `next_sync_at`, commit. An integration that still has a
    /// queued or running run gets no second one; its slot is skipped. The unique
    /// (integration, slot) index makes a duplicate run impossible even across schedulers.
    /// `trace_ids` supplies one new trace id per run.
    pub async fn claim_due_runs(
        &self,
        now: DateTime<Utc>,
        batch: i64,
        mut trace_id: impl FnMut() -> String,
    ) -> Result<Vec<SyncRun>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let due: Vec<(i64, i64, SyncFrequency, Option<DateTime<Utc>>)> = sqlx::query_as(
            "SELECT id, tenant_id, sync_frequency, next_sync_at FROM integrations
              WHERE status = 'active' AND deleted_at IS NULL AND sync_frequency <> 'manual'
                AND (next_sync_at IS NULL OR next_sync_at <= $1)
              ORDER BY next_sync_at NULLS FIRST, id
              LIMIT $2
              FOR UPDATE SKIP LOCKED",
        )
        .bind(now)
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?;
        if due.is_empty() {
            tx.rollback().await?;
            return Ok(Vec::new());
        }
        let mut ids = Vec::with_capacity(due.len());
        let mut run_ids = Vec::with_capacity(due.len());
        let mut tenants = Vec::with_capacity(due.len());
        let mut slots = Vec::with_capacity(due.len());
        let mut nexts: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(due.len());
        let mut traces = Vec::with_capacity(due.len());
        for (id, tenant, frequency, next) in due {
            let slot = next.unwrap_or(now);
            ids.push(id);
            run_ids.push(RunId::generate());
            tenants.push(tenant);
            slots.push(slot);
            nexts.push(next_sync_after(frequency, Some(slot), now));
            traces.push(trace_id());
        }
        let runs = sqlx::query_as::<_, SyncRun>(
            "INSERT INTO sync_runs (id, integration_id, tenant_id, trigger, scheduled_for, trace_id, queued_at)
             SELECT v.run_id, v.integration_id, v.tenant_id, 'scheduled', v.slot, v.trace_id, $6
               FROM unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::timestamptz[], $5::text[])
                    AS v(run_id, integration_id, tenant_id, slot, trace_id)
              WHERE NOT EXISTS (SELECT 1 FROM sync_runs r
                                 WHERE r.integration_id = v.integration_id AND r.status IN ('queued', 'running'))
             ON CONFLICT (integration_id, scheduled_for) WHERE scheduled_for IS NOT NULL DO NOTHING
             RETURNING *",
        )
        .bind(&run_ids)
        .bind(&ids)
        .bind(&tenants)
        .bind(&slots)
        .bind(&traces)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE integrations i SET next_sync_at = v.next
               FROM unnest($1::bigint[], $2::timestamptz[]) AS v(id, next)
              WHERE i.id = v.id",
        )
        .bind(&ids)
        .bind(&nexts)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(runs)
    }

    /// Records that these runs' messages were confirmed by the broker.
    pub async fn mark_published(&self, run_ids: &[RunId]) -> Result<(), StoreError> {
        sqlx::query("UPDATE sync_runs SET published_at = now() WHERE id = ANY($1)")
            .bind(run_ids)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The outbox: runs left `queued` without a confirmed publish for longer than `older_than`
    /// (their publisher died or the broker was down). Claimed by stamping `published_at`, so
    /// concurrent schedulers do not both take them; call [`Store::unmark_published`] if the
    /// publish fails.
    pub async fn claim_unpublished_runs(
        &self,
        older_than: Duration,
        limit: i64,
    ) -> Result<Vec<SyncRun>, StoreError> {
        Ok(sqlx::query_as::<_, SyncRun>(
            "UPDATE sync_runs SET published_at = now()
              WHERE id IN (SELECT id FROM sync_runs
                            WHERE status = 'queued' AND published_at IS NULL
                              AND queued_at < now() - make_interval(secs => $1)
                            ORDER BY queued_at LIMIT $2
                            FOR UPDATE SKIP LOCKED)
              RETURNING *",
        )
        .bind(secs(older_than))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn unmark_published(&self, run_ids: &[RunId]) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sync_runs SET published_at = NULL WHERE id = ANY($1) AND status = 'queued'",
        )
        .bind(run_ids)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Takes the integration's lease for this run and marks the run `running`.
    pub async fn begin_run(
        &self,
        run_id: RunId,
        owner: &str,
        ttl: Duration,
        attempt: u32,
    ) -> Result<BeginOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        let Some(run) =
            sqlx::query_as::<_, SyncRun>("SELECT * FROM sync_runs WHERE id = $1 FOR UPDATE")
                .bind(run_id)
                .fetch_optional(&mut *tx)
                .await?
        else {
            return Ok(BeginOutcome::Missing);
        };
        if run.status.is_terminal() {
            return Ok(BeginOutcome::AlreadyFinished(run));
        }
        let integration =
            sqlx::query_as::<_, Integration>("SELECT * FROM integrations WHERE id = $1")
                .bind(run.integration_id)
                .fetch_one(&mut *tx)
                .await?;
        let reason = if run.cancel_requested_at.is_some() {
            Some("cancelled by an admin")
        } else if !integration.can_sync() {
            Some("cancelled: the integration was deactivated or deleted after this run was queued")
        } else {
            None
        };
        if let Some(reason) = reason {
            let run = cancel_in(&mut tx, run_id, reason).await?;
            tx.commit().await?;
            return Ok(BeginOutcome::Cancelled(run));
        }
        if let Some(busy) = take_lease_in(&mut tx, run.integration_id, run_id, owner, ttl).await? {
            tx.rollback().await?;
            return Ok(busy);
        }
        let run = sqlx::query_as::<_, SyncRun>(
            "UPDATE sync_runs SET status = 'running', started_at = COALESCE(started_at, now()),
                    lease_owner = $2, lease_expires_at = now() + make_interval(secs => $3),
                    heartbeat_at = now(), attempt = $4, finished_at = NULL
              WHERE id = $1 RETURNING *",
        )
        .bind(run_id)
        .bind(owner)
        .bind(secs(ttl))
        .bind(i32::try_from(attempt).unwrap_or(i32::MAX))
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(BeginOutcome::Started(Box::new((run, integration))))
    }

    /// Extends the lease, and says whether an admin asked to cancel the run meanwhile.
    pub async fn heartbeat(
        &self,
        lease: &LeaseToken,
        ttl: Duration,
    ) -> Result<Heartbeat, StoreError> {
        if !heartbeat_in(&self.pool, lease, ttl).await? {
            return Ok(Heartbeat::Lost);
        }
        let requested: bool = sqlx::query_scalar(
            "SELECT cancel_requested_at IS NOT NULL FROM sync_runs WHERE id = $1",
        )
        .bind(lease.run_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(if requested {
            Heartbeat::CancelRequested
        } else {
            Heartbeat::Held
        })
    }

    /// Ends a run: its status, error and the integration's counters, and frees the lease, in
    /// one transaction. Returns the integration's record (with `entered_error` when this
    /// failure set the integration to `error`).
    pub async fn finish_run(
        &self,
        lease: &LeaseToken,
        status: RunStatus,
        error: Option<&str>,
        error_after: u32,
        set_integration_error: bool,
    ) -> Result<crate::RecordedSync, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Only the lease holder ends a run: a worker whose lease was taken over must not
        // overwrite the new holder's outcome or count the run twice.
        let ended = sqlx::query(
            "UPDATE sync_runs SET status = $2, finished_at = now(), error = $3,
                    lease_owner = NULL, lease_expires_at = NULL
              WHERE id = $1 AND status = 'running' AND lease_owner = $4",
        )
        .bind(lease.run_id)
        .bind(status)
        .bind(error)
        .bind(&lease.owner)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if ended == 0 {
            tx.rollback().await?;
            return Err(StoreError::LeaseLost {
                integration_id: lease.integration_id,
            });
        }
        release_in(&mut tx, lease).await?;
        let success = matches!(status, RunStatus::Succeeded | RunStatus::Partial);
        // A cancelled run is neither a success nor a failure of the integration.
        let recorded = status != RunStatus::Cancelled
            && crate::integrations::record_sync_in(
                &mut *tx,
                lease.integration_id,
                success,
                error,
                self.now(),
                error_after,
            )
            .await?;
        if set_integration_error {
            sqlx::query("UPDATE integrations SET status = 'error' WHERE id = $1")
                .bind(lease.integration_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        let integration = self.integration(lease.integration_id).await?;
        Ok(crate::RecordedSync {
            integration,
            entered_error: recorded || set_integration_error,
        })
    }

    /// Ends a dry run with its report (or the error that stopped it) and frees the lease. A
    /// dry run is not a sync: the integration's counters and schedule stay as they are.
    pub async fn finish_dry_run(
        &self,
        lease: &LeaseToken,
        outcome: Result<&DryRunReport, &str>,
    ) -> Result<SyncRun, StoreError> {
        let mut tx = self.pool.begin().await?;
        let (status, report, error) = match outcome {
            Ok(report) => (RunStatus::Succeeded, Some(sqlx::types::Json(report)), None),
            Err(error) => (RunStatus::Failed, None, Some(error)),
        };
        let run = sqlx::query_as::<_, SyncRun>(
            "UPDATE sync_runs SET status = $2, finished_at = now(), error = $3, dry_run_report = $4,
                    lease_owner = NULL, lease_expires_at = NULL
              WHERE id = $1 AND status = 'running' AND lease_owner = $5 AND dry_run
              RETURNING *",
        )
        .bind(lease.run_id)
        .bind(status)
        .bind(error)
        .bind(report)
        .bind(&lease.owner)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(run) = run else {
            tx.rollback().await?;
            return Err(StoreError::LeaseLost {
                integration_id: lease.integration_id,
            });
        };
        release_in(&mut tx, lease).await?;
        tx.commit().await?;
        Ok(run)
    }

    /// Puts a run back to `queued` (a retry or a continuation is on its way through the
    /// broker) and frees the lease. `resume_at` is when a retry is due back (a delay tier, the
    /// ERP's `Retry-After`, a quota's reset): until then plus its grace, the reaper leaves the
    /// run alone; `None` for a continuation, which comes back at once.
    pub async fn requeue_run(
        &self,
        lease: &LeaseToken,
        attempt: u32,
        error: Option<&str>,
        resume_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let requeued = sqlx::query(
            "UPDATE sync_runs SET status = 'queued', attempt = $2, error = COALESCE($3, error),
                    lease_owner = NULL, lease_expires_at = NULL, published_at = now(), resume_at = $5
              WHERE id = $1 AND status = 'running' AND lease_owner = $4",
        )
        .bind(lease.run_id)
        .bind(i32::try_from(attempt).unwrap_or(i32::MAX))
        .bind(error)
        .bind(&lease.owner)
        .bind(resume_at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if requeued == 0 {
            tx.rollback().await?;
            return Err(StoreError::LeaseLost {
                integration_id: lease.integration_id,
            });
        }
        release_in(&mut tx, lease).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Fails runs nobody is working on and nobody will: `running` with a lease expired for
    /// longer than `running_grace` (its worker died and its message was lost, e.g.
    /// dead-lettered by the broker's delivery limit), or `queued` with no publish or retry for
    /// longer than `queued_grace` past the later of its last publish and the instant it was
    /// due back (`resume_at`): a run waiting on purpose, for hours if a quota says so, is not
    /// stranded. Such runs would otherwise block the integration's schedule for ever. Each
    /// counts as a failed sync. Returns the runs failed.
    pub async fn reap_stranded_runs(
        &self,
        running_grace: Duration,
        queued_grace: Duration,
        error_after: u32,
    ) -> Result<Vec<SyncRun>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let reaped = sqlx::query_as::<_, SyncRun>(
            "UPDATE sync_runs SET status = 'failed', finished_at = now(), lease_owner = NULL, lease_expires_at = NULL,
                    error = CASE WHEN status = 'running'
                        THEN 'abandoned: its worker stopped and no other took the run over'
                        ELSE 'abandoned: queued but never delivered to a worker' END
              WHERE id IN (SELECT id FROM sync_runs
                            WHERE (status = 'running' AND lease_expires_at < now() - make_interval(secs => $1))
                               OR (status = 'queued'
                                   AND GREATEST(COALESCE(published_at, queued_at), resume_at) < now() - make_interval(secs => $2))
                            FOR UPDATE SKIP LOCKED)
              RETURNING *",
        )
        .bind(secs(running_grace))
        .bind(secs(queued_grace))
        .fetch_all(&mut *tx)
        .await?;
        for run in &reaped {
            sqlx::query("DELETE FROM integration_leases WHERE run_id = $1")
                .bind(run.id)
                .execute(&mut *tx)
                .await?;
            crate::integrations::record_sync_in(
                &mut *tx,
                run.integration_id,
                false,
                run.error.as_deref(),
                self.now(),
                error_after,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(reaped)
    }

    /// Fails a run that never started (its message was dead-lettered).
    pub async fn fail_unstarted_run(&self, run_id: RunId, error: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sync_runs SET status = 'failed', finished_at = now(), error = $2,
                    lease_owner = NULL, lease_expires_at = NULL
              WHERE id = $1 AND status IN ('queued', 'running')",
        )
        .bind(run_id)
        .bind(error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

pub(crate) async fn heartbeat_in<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    lease: &LeaseToken,
    ttl: Duration,
) -> Result<bool, StoreError> {
    let row: Option<(i64,)> = sqlx::query_as(
        "WITH l AS (
            UPDATE integration_leases SET heartbeat_at = now(), expires_at = now() + make_interval(secs => $4)
             WHERE integration_id = $1 AND run_id = $2 AND owner = $3
             RETURNING integration_id, expires_at)
         UPDATE sync_runs r SET heartbeat_at = now(), lease_expires_at = l.expires_at
           FROM l WHERE r.id = $2
         RETURNING l.integration_id",
    )
    .bind(lease.integration_id)
    .bind(lease.run_id)
    .bind(&lease.owner)
    .bind(secs(ttl))
    .fetch_optional(executor)
    .await?;
    Ok(row.is_some())
}

async fn release_in(tx: &mut sqlx::PgConnection, lease: &LeaseToken) -> Result<(), StoreError> {
    sqlx::query(
        "DELETE FROM integration_leases WHERE integration_id = $1 AND run_id = $2 AND owner = $3",
    )
    .bind(lease.integration_id)
    .bind(lease.run_id)
    .bind(&lease.owner)
    .execute(tx)
    .await?;
    Ok(())
}

/// Cancels a run that was about to start: its integration was deactivated or deleted after
/// it was queued, or an admin asked.
async fn cancel_in(
    tx: &mut sqlx::PgConnection,
    run_id: RunId,
    reason: &str,
) -> Result<SyncRun, StoreError> {
    Ok(sqlx::query_as::<_, SyncRun>(
        "UPDATE sync_runs SET status = 'cancelled', finished_at = now(), lease_owner = NULL,
                lease_expires_at = NULL, error = $2
          WHERE id = $1 RETURNING *",
    )
    .bind(run_id)
    .bind(reason)
    .fetch_one(&mut *tx)
    .await?)
}

/// Takes the integration's lease for the run (free, expired, or already this owner's), or
/// says who holds it and for how long.
async fn take_lease_in(
    tx: &mut sqlx::PgConnection,
    integration_id: IntegrationId,
    run_id: RunId,
    owner: &str,
    ttl: Duration,
) -> Result<Option<BeginOutcome>, StoreError> {
    let taken: Option<(Uuid,)> = sqlx::query_as(
        "INSERT INTO integration_leases (integration_id, run_id, owner, expires_at)
         VALUES ($1, $2, $3, now() + make_interval(secs => $4))
         ON CONFLICT (integration_id) DO UPDATE
            SET run_id = EXCLUDED.run_id, owner = EXCLUDED.owner, acquired_at = now(),
                heartbeat_at = now(), expires_at = EXCLUDED.expires_at
          WHERE integration_leases.expires_at < now()
             OR (integration_leases.run_id = EXCLUDED.run_id AND integration_leases.owner = EXCLUDED.owner)
         RETURNING run_id",
    )
    .bind(integration_id)
    .bind(run_id)
    .bind(owner)
    .bind(secs(ttl))
    .fetch_optional(&mut *tx)
    .await?;
    if taken.is_some() {
        return Ok(None);
    }
    let (holder_run, expires_in): (RunId, f64) = sqlx::query_as(
        "SELECT run_id, GREATEST(EXTRACT(EPOCH FROM expires_at - now()), 0)::float8
           FROM integration_leases WHERE integration_id = $1",
    )
    .bind(integration_id)
    .fetch_one(&mut *tx)
    .await?;
    Ok(Some(BeginOutcome::Busy {
        holder_run,
        expires_in: Duration::from_secs_f64(expires_in.max(0.0)),
    }))
}
