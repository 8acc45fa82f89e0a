//! `integration_logs`: one row per record operation (the legacy app's `createLog` and log scopes).

use crate::{Store, StoreError};
use chrono::{DateTime, Duration, Utc};
use passerelle_core::{IntegrationId, TenantId};
use passerelle_core::{LogAction, LogDirection, LogEntityType, LogStatus};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize)]
pub struct IntegrationLog {
    pub id: i64,
    pub integration_id: IntegrationId,
    pub tenant_id: TenantId,
    pub entity_type: Option<LogEntityType>,
    pub entity_id: Option<String>,
    pub external_id: Option<String>,
    pub action: Option<LogAction>,
    pub direction: Option<LogDirection>,
    pub status: Option<LogStatus>,
    pub request_data: Option<serde_json::Value>,
    pub response_data: Option<serde_json::Value>,
    pub error_message: Option<String>,
    pub duration_ms: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl IntegrationLog {
    /// The legacy app's `wasSuccessful`.
    pub fn was_successful(&self) -> bool {
        self.status == Some(LogStatus::Success)
    }
}

/// A log row to write. Request and response bodies must already be redacted by the caller.
#[derive(Debug, Clone)]
pub struct NewLog {
    pub integration_id: IntegrationId,
    pub tenant_id: TenantId,
    pub entity_type: LogEntityType,
    pub entity_id: Option<String>,
    pub external_id: Option<String>,
    pub action: LogAction,
    pub direction: LogDirection,
    pub status: LogStatus,
    pub request_data: Option<serde_json::Value>,
    pub response_data: Option<serde_json::Value>,
    pub error_message: Option<String>,
    pub duration_ms: Option<i32>,
}

/// Log scopes; every field narrows the result. Newest first.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    pub integration_id: Option<IntegrationId>,
    pub tenant_id: Option<TenantId>,
    pub entity_type: Option<LogEntityType>,
    /// `successful()` is `Some(Success)`, `failed()` is `Some(Failed)`.
    pub status: Option<LogStatus>,
    /// Scope `recent(hours)`.
    pub recent_hours: Option<i64>,
    pub limit: Option<i64>,
}

impl Store {
    /// The legacy app's `createLog`. Writes a whole chunk's rows in one statement.
    pub async fn insert_logs(
        &self,
        executor: impl sqlx::PgExecutor<'_>,
        logs: &[NewLog],
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        if logs.is_empty() {
            return Ok(0);
        }
        // One array per column: a fixed statement (prepared once, whatever the chunk size)
        // and no limit on rows, where a VALUES list would need 14 parameters per row and
        // stop at Postgres' 65,535.
        let column = |f: fn(&NewLog) -> Option<&str>| logs.iter().map(f).collect::<Vec<_>>();
        let integration: Vec<IntegrationId> = logs.iter().map(|l| l.integration_id).collect();
        let tenant: Vec<TenantId> = logs.iter().map(|l| l.tenant_id).collect();
        let request: Vec<Option<&serde_json::Value>> =
            logs.iter().map(|l| l.request_data.as_ref()).collect();
        let response: Vec<Option<&serde_json::Value>> =
            logs.iter().map(|l| l.response_data.as_ref()).collect();
        let duration: Vec<Option<i32>> = logs.iter().map(|l| l.duration_ms).collect();
        let done = sqlx::query(
            "INSERT INTO integration_logs (integration_id, tenant_id, entity_type, entity_id, external_id,
                 action, direction, status, request_data, response_data, error_message, duration_ms,
                 created_at, updated_at)
             SELECT v.integration_id, v.tenant_id, v.entity_type::log_entity_type, v.entity_id,
                    v.external_id, v.action::log_action, v.direction::log_direction,
                    v.status::log_status, v.request_data, v.response_data, v.error_message,
                    v.duration_ms, $13, $13
               FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[],
                           $6::text[], $7::text[], $8::text[], $9::jsonb[], $10::jsonb[],
                           $11::text[], $12::int[])
                 AS v(integration_id, tenant_id, entity_type, entity_id, external_id, action,
                      direction, status, request_data, response_data, error_message, duration_ms)",
        )
        .bind(&integration)
        .bind(&tenant)
        .bind(column(|l| Some(l.entity_type.as_str())))
        .bind(column(|l| l.entity_id.as_deref()))
        .bind(column(|l| l.external_id.as_deref()))
        .bind(column(|l| Some(l.action.as_str())))
        .bind(column(|l| Some(l.direction.as_str())))
        .bind(column(|l| Some(l.status.as_str())))
        .bind(&request)
        .bind(&response)
        .bind(column(|l| l.error_message.as_deref()))
        .bind(&duration)
        .bind(now)
        .execute(executor)
        .await?;
        Ok(done.rows_affected())
    }

    /// Convenience for one row.
    pub async fn create_log(&self, log: NewLog, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.insert_logs(&self.pool, std::slice::from_ref(&log), now)
            .await?;
        Ok(())
    }

    /// Log scopes `forIntegration`, `forTenant`, `byEntityType`, `successful`/`failed`,
    /// `recent(hours)`.
    pub async fn logs(
        &self,
        filter: &LogFilter,
        now: DateTime<Utc>,
    ) -> Result<Vec<IntegrationLog>, StoreError> {
        let since = filter.recent_hours.map(|h| now - Duration::hours(h));
        Ok(sqlx::query_as::<_, IntegrationLog>(
            "SELECT * FROM integration_logs
              WHERE ($1::bigint IS NULL OR integration_id = $1)
                AND ($2::bigint IS NULL OR tenant_id = $2)
                AND ($3::log_entity_type IS NULL OR entity_type = $3)
                AND ($4::log_status IS NULL OR status = $4)
                AND ($5::timestamptz IS NULL OR created_at >= $5)
              ORDER BY created_at DESC, id DESC
              LIMIT $6",
        )
        .bind(filter.integration_id)
        .bind(filter.tenant_id)
        .bind(filter.entity_type)
        .bind(filter.status)
        .bind(since)
        .bind(filter.limit.unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?)
    }
}
