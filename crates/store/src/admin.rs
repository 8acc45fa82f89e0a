//! Reads and writes scoped to one tenant, for the admin API and the CLI's listings. Every
//! query names the tenant, so a row of another tenant is "not found", exactly like a row that
//! does not exist. Listings page by keyset (the last row's sort key), never by offset, so a
//! page costs the same at row ten and at row ten million.

use crate::{Integration, IntegrationLog, Mapping, Store, StoreError, SyncRun};
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use passerelle_core::{
    IntegrationId, IntegrationStatus, IntegrationType, LogAction, LogDirection, LogEntityType,
    LogStatus, MappingEntityType, RunId, RunStatus, SyncFrequency, TenantId,
};
use serde::Serialize;

/// Filters of the integrations listing (the legacy app's scopes `byType`, `active`, ...).
#[derive(Debug, Clone, Default)]
pub struct IntegrationQuery {
    pub integration_type: Option<IntegrationType>,
    pub status: Option<IntegrationStatus>,
    pub frequency: Option<SyncFrequency>,
}

/// Filters of the logs screen; every field narrows the result. Newest first.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    pub entity_type: Option<LogEntityType>,
    pub status: Option<LogStatus>,
    pub direction: Option<LogDirection>,
    pub action: Option<LogAction>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// The platform row's id, as logged (`entity_id`).
    pub internal_id: Option<String>,
    pub external_id: Option<String>,
}

/// Where the previous page of logs ended: the last row's (created_at, id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogKey {
    pub created_at: DateTime<Utc>,
    pub id: i64,
}

/// Filters of the mappings listing.
#[derive(Debug, Clone, Default)]
pub struct MappingQuery {
    pub entity_type: Option<MappingEntityType>,
    pub internal_id: Option<String>,
    pub external_id: Option<String>,
}

/// What cancelling a run did.
#[derive(Debug, Clone)]
pub enum CancelOutcome {
    /// The run was queued: it is `cancelled` now, and a worker that receives it drops it.
    Cancelled(SyncRun),
    /// A worker holds the run: it stops at its next chunk boundary and finishes it
    /// `cancelled`.
    Requested(SyncRun),
    /// The run had already ended; nothing changed.
    AlreadyFinished(SyncRun),
}

/// The legacy app's dashboard for one tenant.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct TenantTotals {
    pub total_integrations: i64,
    pub active_integrations: i64,
    pub total_syncs: i64,
    pub successful_syncs: i64,
    pub failed_syncs: i64,
}

impl TenantTotals {
    /// Successful runs as a percentage of all runs, 0 before the first (as per integration).
    pub fn success_rate(&self) -> f64 {
        if self.total_syncs == 0 {
            0.0
        } else {
            self.successful_syncs as f64 * 100.0 / self.total_syncs as f64
        }
    }
}

/// One integration's health on the dashboard.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IntegrationHealth {
    pub id: IntegrationId,
    pub name: String,
    #[sqlx(rename = "type")]
    #[serde(rename = "type")]
    pub integration_type: IntegrationType,
    pub status: IntegrationStatus,
    /// Runs failed in a row (the integration goes to `error` at the configured threshold).
    pub consecutive_failures: i32,
    pub last_sync_at: Option<DateTime<Utc>>,
    pub next_sync_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_run_id: Option<RunId>,
    pub last_run_status: Option<RunStatus>,
    pub last_run_finished_at: Option<DateTime<Utc>>,
}

const LOG_FILTER: &str = "integration_id = $1
    AND ($2::log_entity_type IS NULL OR entity_type = $2)
    AND ($3::log_status IS NULL OR status = $3)
    AND ($4::log_direction IS NULL OR direction = $4)
    AND ($5::log_action IS NULL OR action = $5)
    AND ($6::timestamptz IS NULL OR created_at >= $6)
    AND ($7::timestamptz IS NULL OR created_at < $7)
    AND ($8::text IS NULL OR entity_id = $8)
    AND ($9::text IS NULL OR external_id = $9)";

fn bind_log_query<'q, O>(
    query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    integration: IntegrationId,
    filter: &'q LogQuery,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    query
        .bind(integration)
        .bind(filter.entity_type)
        .bind(filter.status)
        .bind(filter.direction)
        .bind(filter.action)
        .bind(filter.since)
        .bind(filter.until)
        .bind(filter.internal_id.as_deref())
        .bind(filter.external_id.as_deref())
}

/// A page of an integration's rows of `table`, newest first by (`at`, id), older than
/// `before`. `table` and `at` are fixed names from this crate, never input.
pub(crate) async fn newest_first<T, K>(
    store: &Store,
    table: &'static str,
    at: &'static str,
    integration: IntegrationId,
    before: Option<(DateTime<Utc>, K)>,
    limit: i64,
) -> Result<Vec<T>, StoreError>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    K: for<'q> sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send,
{
    let (at_key, id_key) = before.unzip();
    Ok(sqlx::query_as::<_, T>(sqlx::AssertSqlSafe(format!(
        "SELECT * FROM {table} WHERE integration_id = $1
            AND ($2::timestamptz IS NULL OR ({at}, id) < ($2, $3))
          ORDER BY {at} DESC, id DESC LIMIT $4"
    )))
    .bind(integration)
    .bind(at_key)
    .bind(id_key)
    .bind(limit)
    .fetch_all(&store.pool)
    .await?)
}

impl Store {
    /// The tenant's integration, not deleted: another tenant's, a deleted one and a missing
    /// one are the same "not found".
    pub async fn tenant_integration(
        &self,
        tenant: TenantId,
        id: IntegrationId,
    ) -> Result<Integration, StoreError> {
        sqlx::query_as::<_, Integration>(
            "SELECT * FROM integrations WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL",
        )
        .bind(id)
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::IntegrationNotFound { id })
    }

    /// A page of the tenant's integrations in id order, after `after`.
    pub async fn integrations_page(
        &self,
        tenant: TenantId,
        filter: &IntegrationQuery,
        after: Option<IntegrationId>,
        limit: i64,
    ) -> Result<Vec<Integration>, StoreError> {
        Ok(sqlx::query_as::<_, Integration>(
            "SELECT * FROM integrations
              WHERE tenant_id = $1 AND deleted_at IS NULL
                AND ($2::integration_type IS NULL OR type = $2)
                AND ($3::integration_status IS NULL OR status = $3)
                AND ($4::sync_frequency IS NULL OR sync_frequency = $4)
                AND ($5::bigint IS NULL OR id > $5)
              ORDER BY id LIMIT $6",
        )
        .bind(tenant)
        .bind(filter.integration_type)
        .bind(filter.status)
        .bind(filter.frequency)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The tenant's run (its integration may since have been deleted).
    pub async fn tenant_run(
        &self,
        tenant: TenantId,
        id: RunId,
    ) -> Result<Option<SyncRun>, StoreError> {
        Ok(
            sqlx::query_as::<_, SyncRun>(
                "SELECT * FROM sync_runs WHERE id = $1 AND tenant_id = $2",
            )
            .bind(id)
            .bind(tenant)
            .fetch_optional(&self.pool)
            .await?,
        )
    }

    /// A page of an integration's runs, newest first, before `before` (the last row's
    /// `queued_at` and id): the existing `(integration_id, queued_at DESC)` index serves it,
    /// and `queued_at` never changes once a run is created.
    pub async fn runs_page(
        &self,
        integration: IntegrationId,
        before: Option<(DateTime<Utc>, RunId)>,
        limit: i64,
    ) -> Result<Vec<SyncRun>, StoreError> {
        newest_first(self, "sync_runs", "queued_at", integration, before, limit).await
    }

    /// Cancels the tenant's run: at once when it is queued, at the worker's next chunk
    /// boundary when it is running. `None` when the tenant has no such run.
    pub async fn cancel_run(
        &self,
        tenant: TenantId,
        id: RunId,
    ) -> Result<Option<CancelOutcome>, StoreError> {
        let now = self.now();
        let cancelled = sqlx::query_as::<_, SyncRun>(
            "UPDATE sync_runs SET status = 'cancelled', finished_at = $3, resume_at = NULL,
                    error = 'cancelled by an admin before a worker started it'
              WHERE id = $1 AND tenant_id = $2 AND status = 'queued' RETURNING *",
        )
        .bind(id)
        .bind(tenant)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(run) = cancelled {
            return Ok(Some(CancelOutcome::Cancelled(run)));
        }
        let requested = sqlx::query_as::<_, SyncRun>(
            "UPDATE sync_runs SET cancel_requested_at = COALESCE(cancel_requested_at, $3)
              WHERE id = $1 AND tenant_id = $2 AND status = 'running' RETURNING *",
        )
        .bind(id)
        .bind(tenant)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(run) = requested {
            return Ok(Some(CancelOutcome::Requested(run)));
        }
        // Neither queued nor running: ended, or not the tenant's. A run that moved between
        // the two statements (queued → running) is read again and reported as it is now.
        match self.tenant_run(tenant, id).await? {
            None => Ok(None),
            Some(run) if run.status.is_terminal() => Ok(Some(CancelOutcome::AlreadyFinished(run))),
            Some(_) => Box::pin(self.cancel_run(tenant, id)).await,
        }
    }

    /// A page of an integration's logs, newest first, older than `before`.
    pub async fn logs_page(
        &self,
        integration: IntegrationId,
        filter: &LogQuery,
        before: Option<LogKey>,
        limit: i64,
    ) -> Result<Vec<IntegrationLog>, StoreError> {
        let sql = format!(
            "SELECT * FROM integration_logs WHERE {LOG_FILTER}
                AND ($10::timestamptz IS NULL OR (created_at, id) < ($10, $11))
              ORDER BY created_at DESC, id DESC LIMIT $12"
        );
        Ok(bind_log_query(
            sqlx::query_as::<_, IntegrationLog>(sqlx::AssertSqlSafe(sql)),
            integration,
            filter,
        )
        .bind(before.map(|k| k.created_at))
        .bind(before.map(|k| k.id))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every log row matching `filter`, newest first, as a stream: rows are read off the
    /// connection as the consumer takes them (the socket's backpressure reaches Postgres), so
    /// an export of millions holds a few in memory.
    pub fn logs_stream<'a>(
        &'a self,
        integration: IntegrationId,
        filter: &'a LogQuery,
    ) -> BoxStream<'a, Result<IntegrationLog, StoreError>> {
        let sql = format!(
            "SELECT * FROM integration_logs WHERE {LOG_FILTER} ORDER BY created_at DESC, id DESC"
        );
        bind_log_query(
            sqlx::query_as::<_, IntegrationLog>(sqlx::AssertSqlSafe(sql)),
            integration,
            filter,
        )
        .fetch(&self.pool)
        .map_err(StoreError::from)
        .boxed()
    }

    /// A page of an integration's mappings in id order, after `after`.
    pub async fn mappings_page(
        &self,
        integration: IntegrationId,
        filter: &MappingQuery,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<Mapping>, StoreError> {
        Ok(sqlx::query_as::<_, Mapping>(
            "SELECT * FROM integration_mappings
              WHERE integration_id = $1
                AND ($2::mapping_entity_type IS NULL OR entity_type = $2)
                AND ($3::text IS NULL OR internal_id = $3)
                AND ($4::text IS NULL OR external_id = $4)
                AND ($5::bigint IS NULL OR id > $5)
              ORDER BY id LIMIT $6",
        )
        .bind(integration)
        .bind(filter.entity_type)
        .bind(filter.internal_id.as_deref())
        .bind(filter.external_id.as_deref())
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The dashboard's totals over the tenant's integrations (deleted ones excluded).
    pub async fn tenant_totals(&self, tenant: TenantId) -> Result<TenantTotals, StoreError> {
        Ok(sqlx::query_as::<_, TenantTotals>(
            "SELECT count(*) AS total_integrations,
                    count(*) FILTER (WHERE status = 'active') AS active_integrations,
                    COALESCE(sum(total_syncs), 0)::bigint AS total_syncs,
                    COALESCE(sum(successful_syncs), 0)::bigint AS successful_syncs,
                    COALESCE(sum(failed_syncs), 0)::bigint AS failed_syncs
               FROM integrations WHERE tenant_id = $1 AND deleted_at IS NULL",
        )
        .bind(tenant)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Each of the tenant's integrations with its latest run, in id order.
    pub async fn tenant_health(
        &self,
        tenant: TenantId,
    ) -> Result<Vec<IntegrationHealth>, StoreError> {
        Ok(sqlx::query_as::<_, IntegrationHealth>(
            "SELECT i.id, i.name, i.type, i.status, i.consecutive_failures, i.last_sync_at,
                    i.next_sync_at, i.last_error,
                    r.id AS last_run_id, r.status AS last_run_status,
                    r.finished_at AS last_run_finished_at
               FROM integrations i
               LEFT JOIN LATERAL (
                    SELECT id, status, finished_at FROM sync_runs
                     WHERE integration_id = i.id ORDER BY id DESC LIMIT 1
               ) r ON true
              WHERE i.tenant_id = $1 AND i.deleted_at IS NULL
              ORDER BY i.id",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?)
    }
}
