//! The legacy app's log screens, the mappings listing and the dashboard.

use super::auth::Caller;
use super::pagination::{self, Page};
use super::problem::Problem;
use super::{ApiState, Params, label, parse_id};
use crate::export::{ExportFormat, LogView};
use crate::service::FieldError;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use passerelle_core::{
    IntegrationId, LogAction, LogDirection, LogEntityType, LogStatus, MappingEntityType,
};
use passerelle_store::{IntegrationHealth, LogKey, LogQuery, Mapping, MappingQuery};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::IntoParams;

/// The logs screen's filters; every one narrows the result.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    #[param(value_type = Option<LogEntityType>)]
    pub entity_type: Option<String>,
    #[param(value_type = Option<LogStatus>)]
    pub status: Option<String>,
    #[param(value_type = Option<LogDirection>)]
    pub direction: Option<String>,
    #[param(value_type = Option<LogAction>)]
    pub action: Option<String>,
    /// Rows written at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Rows written before this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// The platform row's id.
    pub internal_id: Option<String>,
    /// The ERP record's id.
    pub external_id: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
    /// For the export: `csv` or `ndjson`.
    pub format: Option<String>,
}

impl LogsQuery {
    fn filter(&self) -> Result<LogQuery, Problem> {
        let mut errors = Vec::new();
        let filter = LogQuery {
            entity_type: label("entity_type", self.entity_type.as_deref(), &mut errors),
            status: label("status", self.status.as_deref(), &mut errors),
            direction: label("direction", self.direction.as_deref(), &mut errors),
            action: label("action", self.action.as_deref(), &mut errors),
            since: self.since,
            until: self.until,
            internal_id: self.internal_id.clone(),
            external_id: self.external_id.clone(),
        };
        if let (Some(since), Some(until)) = (self.since, self.until)
            && since >= until
        {
            errors.push(FieldError::new("until", "must be after `since`"));
        }
        if errors.is_empty() {
            Ok(filter)
        } else {
            Err(Problem::invalid(errors))
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct LogCursor(DateTime<Utc>, i64);

#[utoipa::path(get, path = "/integrations/{id}/logs", tag = "logs",
    params(("id" = i64, Path, description = "integration id"), LogsQuery),
    responses((status = 200, body = Page<LogView>), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn list(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<String>,
    Params(q): Params<LogsQuery>,
) -> Result<Json<Page<LogView>>, Problem> {
    let id = parse_id::<IntegrationId>(&id, "integration")?;
    state.store.tenant_integration(caller.tenant, id).await?;
    if q.format.is_some() {
        return Err(Problem::field(
            "format",
            "only the export (`/logs/export`) takes a format",
        ));
    }
    let filter = q.filter()?;
    let limit = pagination::limit(q.limit, state.settings.api.max_page_size)?;
    let before = pagination::decode::<LogCursor>(q.cursor.as_deref())?.map(|c| LogKey {
        created_at: c.0,
        id: c.1,
    });
    let rows = state
        .store
        .logs_page(id, &filter, before, limit + 1)
        .await?;
    Ok(Json(pagination::page(
        rows,
        limit,
        |l| LogCursor(l.created_at, l.id),
        LogView::from,
    )))
}

/// Bytes gathered before a chunk is handed to the connection.
const EXPORT_CHUNK_BYTES: usize = 64 * 1024;
/// How long a client may stop reading before its export is abandoned (and its database
/// connection returned).
const EXPORT_STALL: std::time::Duration = std::time::Duration::from_secs(30);
/// Chunks waiting for a slow client at most: with the server-side cursor, this bounds the
/// export's memory whatever the number of rows.
const EXPORT_CHUNKS_IN_FLIGHT: usize = 4;

#[utoipa::path(get, path = "/integrations/{id}/logs/export", tag = "logs",
    params(("id" = i64, Path, description = "integration id"), LogsQuery),
    responses((status = 200, description = "every matching row, newest first, streamed", content((String = "text/csv"), (String = "application/x-ndjson"))),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn export(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<String>,
    Params(q): Params<LogsQuery>,
) -> Result<Response, Problem> {
    let id = parse_id::<IntegrationId>(&id, "integration")?;
    state.store.tenant_integration(caller.tenant, id).await?;
    let format: ExportFormat = q
        .format
        .as_deref()
        .unwrap_or("csv")
        .parse()
        .map_err(|e: String| Problem::field("format", e))?;
    if q.cursor.is_some() || q.limit.is_some() {
        return Err(Problem::field(
            "cursor",
            "the export returns every matching row; cursor and limit are for the listing",
        ));
    }
    let filter = q.filter()?;
    let permit = state.exports.clone().try_acquire_owned().map_err(|_| {
        Problem::unavailable(
            "as many log exports are running as the database pool allows; try again shortly",
            5,
        )
    })?;
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(EXPORT_CHUNKS_IN_FLIGHT);
    tokio::spawn(write_export(state, id, filter, format, tx, permit));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut response = axum::body::Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"integration-{id}-logs.{}\"",
        format.extension()
    )) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

/// Writes every matching row into `tx`, a chunk at a time, holding `_permit` (one of the
/// pool's export slots) until it is done, cut short, or the client stops reading.
async fn write_export(
    state: Arc<ApiState>,
    id: IntegrationId,
    filter: LogQuery,
    format: ExportFormat,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let mut buffer = format.header().to_owned();
    let mut rows = state.store.logs_stream(id, &filter);
    let mut count = 0_u64;
    while let Some(row) = rows.next().await {
        let row = match row {
            Ok(row) => row,
            Err(e) => {
                tracing::error!(integration_id = id.0, error = %e, rows = count, "log export failed; the response is cut short");
                let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                return;
            }
        };
        count += 1;
        format.write(&mut buffer, row);
        if buffer.len() >= EXPORT_CHUNK_BYTES {
            let chunk = Bytes::from(std::mem::take(&mut buffer));
            match tokio::time::timeout(EXPORT_STALL, tx.send(Ok(chunk))).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return, // the client went away
                Err(_) => {
                    tracing::warn!(
                        integration_id = id.0,
                        rows = count,
                        "the client stopped reading a log export; it is abandoned"
                    );
                    return;
                }
            }
        }
    }
    if !buffer.is_empty() {
        let _ = tx.send(Ok(Bytes::from(buffer))).await;
    }
    tracing::debug!(integration_id = id.0, rows = count, "log export finished");
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MappingsQuery {
    #[param(value_type = Option<MappingEntityType>)]
    pub entity_type: Option<String>,
    pub internal_id: Option<String>,
    pub external_id: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

#[utoipa::path(get, path = "/integrations/{id}/mappings", tag = "logs",
    params(("id" = i64, Path, description = "integration id"), MappingsQuery),
    responses((status = 200, body = Page<Mapping>), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn mappings(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<String>,
    Params(q): Params<MappingsQuery>,
) -> Result<Json<Page<Mapping>>, Problem> {
    let id = parse_id::<IntegrationId>(&id, "integration")?;
    state.store.tenant_integration(caller.tenant, id).await?;
    let mut errors = Vec::new();
    let filter = MappingQuery {
        entity_type: label("entity_type", q.entity_type.as_deref(), &mut errors),
        internal_id: q.internal_id,
        external_id: q.external_id,
    };
    if !errors.is_empty() {
        return Err(Problem::invalid(errors));
    }
    let limit = pagination::limit(q.limit, state.settings.api.max_page_size)?;
    let after = pagination::decode::<i64>(q.cursor.as_deref())?;
    let rows = state
        .store
        .mappings_page(id, &filter, after, limit + 1)
        .await?;
    Ok(Json(pagination::page(rows, limit, |m| m.id, |m| m)))
}

/// The legacy app's dashboard, plus each integration's health.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatsView {
    pub total_integrations: i64,
    pub active_integrations: i64,
    pub total_syncs: i64,
    pub successful_syncs: i64,
    pub failed_syncs: i64,
    /// Successful runs as a percentage of all runs (0 before the first).
    pub success_rate: f64,
    pub integrations: Vec<IntegrationHealth>,
}

#[utoipa::path(get, path = "/stats", tag = "logs",
    responses((status = 200, body = StatsView)))]
pub async fn stats(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
) -> Result<Json<StatsView>, Problem> {
    let totals = state.store.tenant_totals(caller.tenant).await?;
    let health = state.store.tenant_health(caller.tenant).await?;
    Ok(Json(StatsView {
        success_rate: (totals.success_rate() * 10.0).round() / 10.0,
        total_integrations: totals.total_integrations,
        active_integrations: totals.active_integrations,
        total_syncs: totals.total_syncs,
        successful_syncs: totals.successful_syncs,
        failed_syncs: totals.failed_syncs,
        integrations: health,
    }))
}
