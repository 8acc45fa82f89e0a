//! Manual syncs and their runs.

use super::auth::{Admin, Caller};
use super::pagination::{self, Page};
use super::problem::{Problem, parse_body};
use super::views::RunView;
use super::{ApiState, Params, parse_id};
use crate::service;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use passerelle_core::job::TraceParent;
use passerelle_core::{IntegrationId, RunId};
use passerelle_store::CancelOutcome;
use serde::Deserialize;
use std::sync::Arc;
use utoipa::IntoParams;

/// What to sync; an empty body syncs every entity the integration has switched on.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    /// Only this entity (it must be one the integration syncs).
    #[schema(value_type = Option<passerelle_core::Entity>)]
    pub entity: Option<String>,
    /// Read, map and diff as a real run would, but call no ERP write endpoint and change no
    /// mapping or cursor; the run's `dry_run_report` says what a real run would do.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

/// The trace a request belongs to: its `traceparent`, else a new one.
fn request_trace(headers: &HeaderMap) -> TraceParent {
    headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse)
        .map(|t| t.child())
        .unwrap_or_else(TraceParent::new_root)
}

#[utoipa::path(post, path = "/integrations/{id}/sync", tag = "runs",
    params(("id" = i64, Path, description = "integration id")), request_body(content = Option<SyncRequest>),
    responses((status = 202, body = RunView, description = "queued; `Location` names the run"),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn sync(
    State(state): State<Arc<ApiState>>,
    Admin(caller): Admin,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, Problem> {
    let id = parse_id::<IntegrationId>(&id, "integration")?;
    let request: SyncRequest = if body.iter().all(u8::is_ascii_whitespace) {
        SyncRequest::default()
    } else {
        parse_body(&body)?
    };
    let integration = state.store.tenant_integration(caller.tenant, id).await?;
    let mut entities = Vec::new();
    if let Some(raw) = request.entity.as_deref() {
        let entity = service::parse_entity(raw).map_err(|e| Problem::field("entity", e))?;
        if !integration.enabled_entities().contains(&entity) {
            return Err(Problem::field(
                "entity",
                format!("integration {id} does not sync {entity}s; switch it on first"),
            ));
        }
        entities.push(entity);
    }
    let trace = request_trace(&headers);
    let enqueued = service::enqueue_run(
        &state.store,
        &state.publisher,
        &integration,
        &entities,
        &trace,
        request.dry_run,
    )
    .await?;
    if let Err(e) = &enqueued.published {
        tracing::warn!(run_id = %enqueued.run.id, error = %e, "run stored but not yet published; the scheduler's outbox will publish it");
    }
    let mut out = HeaderMap::new();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/runs/{}", enqueued.run.id)) {
        out.insert(header::LOCATION, location);
    }
    Ok((StatusCode::ACCEPTED, out, Json(RunView::from(enqueued.run))))
}

#[utoipa::path(get, path = "/runs/{id}", tag = "runs",
    params(("id" = String, Path, description = "run id (UUID)")),
    responses((status = 200, body = RunView), (status = 404, body = Problem)))]
pub async fn show(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<RunView>, Problem> {
    let id = parse_id::<RunId>(&id, "run")?;
    let run = state
        .store
        .tenant_run(caller.tenant, id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("run {id}")))?;
    Ok(Json(run.into()))
}

#[utoipa::path(get, path = "/integrations/{id}/runs", tag = "runs",
    params(("id" = i64, Path, description = "integration id"), RunsQuery),
    responses((status = 200, body = Page<RunView>), (status = 404, body = Problem)))]
pub async fn list(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<String>,
    Params(q): Params<RunsQuery>,
) -> Result<Json<Page<RunView>>, Problem> {
    let id = parse_id::<IntegrationId>(&id, "integration")?;
    state.store.tenant_integration(caller.tenant, id).await?;
    let limit = pagination::limit(q.limit, state.settings.api.max_page_size)?;
    let before = pagination::decode::<(chrono::DateTime<chrono::Utc>, RunId)>(q.cursor.as_deref())?;
    let rows = state.store.runs_page(id, before, limit + 1).await?;
    Ok(Json(pagination::page(
        rows,
        limit,
        |r| (r.queued_at, r.id),
        RunView::from,
    )))
}

#[utoipa::path(post, path = "/runs/{id}/cancel", tag = "runs",
    params(("id" = String, Path, description = "run id (UUID)")),
    responses((status = 200, body = RunView, description = "cancelled, or (202) asked of the worker running it"),
        (status = 202, body = RunView), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn cancel(
    State(state): State<Arc<ApiState>>,
    Admin(caller): Admin,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, Problem> {
    let id = parse_id::<RunId>(&id, "run")?;
    match state.store.cancel_run(caller.tenant, id).await? {
        None => Err(Problem::not_found(format!("run {id}"))),
        Some(CancelOutcome::Cancelled(run)) => Ok((StatusCode::OK, Json(RunView::from(run)))),
        Some(CancelOutcome::Requested(run)) => Ok((StatusCode::ACCEPTED, Json(RunView::from(run)))),
        Some(CancelOutcome::AlreadyFinished(run)) => Err(Problem::new(
            StatusCode::CONFLICT,
            format!("run {id} already ended ({}); nothing to cancel", run.status),
        )),
    }
}
