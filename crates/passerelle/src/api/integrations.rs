//! `/api/v1/integrations`: the legacy app's integration screens over HTTP, scoped to the
//! token's tenant.

use super::auth::{Admin, Caller};
use super::pagination::{self, Page};
use super::problem::{Body, Problem};
use super::views::IntegrationView;
use super::{ApiState, Params, label, parse_id};
use crate::service::{self, FieldsInput};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use passerelle_core::{IntegrationId, IntegrationStatus, IntegrationType, SyncFrequency};
use passerelle_store::IntegrationQuery;
use serde::Deserialize;
use std::sync::Arc;
use utoipa::IntoParams;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    #[serde(rename = "type")]
    #[param(rename = "type", value_type = Option<IntegrationType>)]
    pub integration_type: Option<String>,
    #[param(value_type = Option<IntegrationStatus>)]
    pub status: Option<String>,
    #[param(value_type = Option<SyncFrequency>)]
    pub frequency: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Rows per page (default 50, at most `api.max_page_size`).
    pub limit: Option<u32>,
}

/// An integration's fields. Creating one needs `name` and `type`; an update changes only
/// the fields given, and never the type. Labels are checked by the server, which lists every
/// field it refuses.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IntegrationBody {
    pub name: Option<String>,
    #[serde(rename = "type")]
    #[schema(value_type = Option<IntegrationType>)]
    pub integration_type: Option<String>,
    #[schema(value_type = Option<passerelle_core::SyncDirection>)]
    pub direction: Option<String>,
    #[schema(value_type = Option<SyncFrequency>)]
    pub frequency: Option<String>,
    /// Entities to sync (`product`, `customer`, `order`, `invoice`, `inventory`).
    #[schema(value_type = Option<Vec<passerelle_core::Entity>>)]
    pub entities: Option<Vec<String>>,
    /// The connector's settings (URLs, ids, options), never a secret. An update replaces them
    /// whole, and an active integration goes back to `testing`.
    #[schema(value_type = Option<Object>)]
    pub settings: Option<serde_json::Value>,
    /// Write-only: sealed at once, never returned. An update replaces them whole, and an
    /// active integration goes back to `testing`.
    #[schema(value_type = Option<Object>)]
    pub credentials: Option<serde_json::Value>,
    /// POST a signed event (Standard Webhooks) here when a run ends; `null` removes it. The
    /// answer that sets the first URL carries the signing secret, once.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub webhook_url: Option<Option<String>>,
    /// Who wins a bidirectional conflict, per entity (`products`, `customers`, `orders`,
    /// `invoices`, `inventory`: `platform` or `erp`); replaces the stored choices, and an
    /// entity left out keeps its default.
    #[schema(value_type = Option<Object>)]
    pub conflict_policy: Option<serde_json::Value>,
}

/// A field that is present, even as `null` (`Some(None)`), as opposed to absent (`None`).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

impl IntegrationBody {
    fn fields(&mut self) -> FieldsInput {
        FieldsInput {
            direction: self.direction.take(),
            frequency: self.frequency.take(),
            entities: self.entities.take(),
            settings: self.settings.take(),
            credentials: self.credentials.take(),
            webhook_url: self.webhook_url.take(),
            conflict_policy: self.conflict_policy.take(),
        }
    }
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct TestResult {
    pub ok: bool,
    pub message: String,
    pub response_time_ms: Option<u64>,
    pub integration: IntegrationView,
}

#[utoipa::path(get, path = "/integrations", tag = "integrations", params(ListQuery),
    responses((status = 200, body = Page<IntegrationView>), (status = 422, body = Problem)))]
pub async fn list(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Params(q): Params<ListQuery>,
) -> Result<Json<Page<IntegrationView>>, Problem> {
    let mut errors = Vec::new();
    let filter = IntegrationQuery {
        integration_type: label("type", q.integration_type.as_deref(), &mut errors),
        status: label("status", q.status.as_deref(), &mut errors),
        frequency: label("frequency", q.frequency.as_deref(), &mut errors),
    };
    if !errors.is_empty() {
        return Err(Problem::invalid(errors));
    }
    let limit = pagination::limit(q.limit, state.settings.api.max_page_size)?;
    let after = pagination::decode::<IntegrationId>(q.cursor.as_deref())?;
    let rows = state
        .store
        .integrations_page(caller.tenant, &filter, after, limit + 1)
        .await?;
    Ok(Json(pagination::page(
        rows,
        limit,
        |i| i.id,
        |i| IntegrationView::new(i, &state.vault),
    )))
}

#[utoipa::path(post, path = "/integrations", tag = "integrations", request_body = IntegrationBody,
    responses((status = 201, body = IntegrationView), (status = 422, body = Problem)))]
pub async fn create(
    State(state): State<Arc<ApiState>>,
    Admin(caller): Admin,
    Body(mut body): Body<IntegrationBody>,
) -> Result<impl IntoResponse, Problem> {
    let missing: Vec<_> = [
        ("name", body.name.is_none()),
        ("type", body.integration_type.is_none()),
    ]
    .into_iter()
    .filter(|(_, absent)| *absent)
    .map(|(field, _)| service::FieldError::new(field, "is required"))
    .collect();
    let (Some(name), Some(integration_type)) = (body.name.take(), body.integration_type.take())
    else {
        return Err(Problem::invalid(missing));
    };
    let fields = body.fields();
    let created = service::create(
        &state.store,
        Some(&state.vault),
        &state.connectors,
        caller.tenant,
        &name,
        &integration_type,
        &fields,
    )
    .await?;
    let mut headers = HeaderMap::new();
    if let Ok(location) =
        HeaderValue::from_str(&format!("/api/v1/integrations/{}", created.integration.id))
    {
        headers.insert(header::LOCATION, location);
    }
    Ok((
        StatusCode::CREATED,
        headers,
        Json(IntegrationView::saved(created, &state.vault)),
    ))
}

#[utoipa::path(get, path = "/integrations/{id}", tag = "integrations",
    params(("id" = i64, Path, description = "integration id")),
    responses((status = 200, body = IntegrationView), (status = 404, body = Problem)))]
pub async fn show(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<IntegrationView>, Problem> {
    let id = parse_id::<IntegrationId>(&id, "integration")?;
    let integration = state.store.tenant_integration(caller.tenant, id).await?;
    Ok(Json(IntegrationView::new(integration, &state.vault)))
}

#[utoipa::path(patch, path = "/integrations/{id}", tag = "integrations",
    params(("id" = i64, Path, description = "integration id")), request_body = IntegrationBody,
    responses((status = 200, body = IntegrationView), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn update(
    State(state): State<Arc<ApiState>>,
    Admin(caller): Admin,
    Path(id): Path<String>,
    Body(mut body): Body<IntegrationBody>,
) -> Result<Json<IntegrationView>, Problem> {
    let id = parse_id::<IntegrationId>(&id, "integration")?;
    let current = state.store.tenant_integration(caller.tenant, id).await?;
    if body.integration_type.is_some() {
        return Err(Problem::field(
            "type",
            "an integration's type cannot change; create a new integration",
        ));
    }
    let fields = body.fields();
    let updated = service::update(
        &state.store,
        Some(&state.vault),
        &state.connectors,
        &current,
        body.name.take(),
        &fields,
    )
    .await?;
    Ok(Json(IntegrationView::saved(updated, &state.vault)))
}

#[utoipa::path(delete, path = "/integrations/{id}", tag = "integrations",
    params(("id" = i64, Path, description = "integration id")),
    responses((status = 204, description = "deleted: syncing stops, logs and mappings stay"), (status = 404, body = Problem)))]
pub async fn delete(
    State(state): State<Arc<ApiState>>,
    Admin(caller): Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    let id = parse_id::<IntegrationId>(&id, "integration")?;
    state.store.tenant_integration(caller.tenant, id).await?;
    state
        .store
        .soft_delete_integration(id, state.store.now())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/integrations/{id}/test", tag = "integrations",
    params(("id" = i64, Path, description = "integration id")),
    responses((status = 200, body = TestResult), (status = 404, body = Problem)))]
pub async fn test(
    State(state): State<Arc<ApiState>>,
    Admin(caller): Admin,
    Path(id): Path<String>,
) -> Result<Json<TestResult>, Problem> {
    let id = parse_id::<IntegrationId>(&id, "integration")?;
    state.store.tenant_integration(caller.tenant, id).await?;
    let (integration, result) =
        service::test(&state.store, &state.vault, &state.connectors, id).await?;
    let (ok, message, response_time_ms) = match result {
        Ok(t) => (true, t.message, Some(t.response_time_ms)),
        Err(message) => (false, message, None),
    };
    Ok(Json(TestResult {
        ok,
        message,
        response_time_ms,
        integration: IntegrationView::new(integration, &state.vault),
    }))
}

async fn set_status(
    state: &ApiState,
    caller: Caller,
    id: &str,
    status: IntegrationStatus,
) -> Result<Json<IntegrationView>, Problem> {
    let id = parse_id::<IntegrationId>(id, "integration")?;
    state.store.tenant_integration(caller.tenant, id).await?;
    let updated = service::set_status(&state.store, id, status).await?;
    Ok(Json(IntegrationView::new(updated, &state.vault)))
}

#[utoipa::path(post, path = "/integrations/{id}/activate", tag = "integrations",
    params(("id" = i64, Path, description = "integration id")),
    responses((status = 200, body = IntegrationView), (status = 404, body = Problem)))]
pub async fn activate(
    State(state): State<Arc<ApiState>>,
    Admin(caller): Admin,
    Path(id): Path<String>,
) -> Result<Json<IntegrationView>, Problem> {
    set_status(&state, caller, &id, IntegrationStatus::Active).await
}

#[utoipa::path(post, path = "/integrations/{id}/deactivate", tag = "integrations",
    params(("id" = i64, Path, description = "integration id")),
    responses((status = 200, body = IntegrationView), (status = 404, body = Problem)))]
pub async fn deactivate(
    State(state): State<Arc<ApiState>>,
    Admin(caller): Admin,
    Path(id): Path<String>,
) -> Result<Json<IntegrationView>, Problem> {
    set_status(&state, caller, &id, IntegrationStatus::Inactive).await
}

#[utoipa::path(post, path = "/integrations/{id}/webhook-secret", tag = "integrations",
    params(("id" = i64, Path, description = "integration id")),
    responses((status = 200, body = IntegrationView, description = "the new secret, in `webhook_secret`, shown this once"),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn rotate_webhook_secret(
    State(state): State<Arc<ApiState>>,
    Admin(caller): Admin,
    Path(id): Path<String>,
) -> Result<Json<IntegrationView>, Problem> {
    let id = parse_id::<IntegrationId>(&id, "integration")?;
    let integration = state.store.tenant_integration(caller.tenant, id).await?;
    let saved = service::rotate_webhook_secret(&state.store, &state.vault, &integration).await?;
    Ok(Json(IntegrationView::saved(saved, &state.vault)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

#[utoipa::path(get, path = "/integrations/{id}/webhook-deliveries", tag = "integrations",
    params(("id" = i64, Path, description = "integration id"), DeliveriesQuery),
    responses((status = 200, body = Page<passerelle_store::WebhookDelivery>), (status = 404, body = Problem)))]
pub async fn webhook_deliveries(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<String>,
    Params(q): Params<DeliveriesQuery>,
) -> Result<Json<Page<passerelle_store::WebhookDelivery>>, Problem> {
    let id = parse_id::<IntegrationId>(&id, "integration")?;
    state.store.tenant_integration(caller.tenant, id).await?;
    let limit = pagination::limit(q.limit, state.settings.api.max_page_size)?;
    let before =
        pagination::decode::<(chrono::DateTime<chrono::Utc>, uuid::Uuid)>(q.cursor.as_deref())?;
    let rows = state
        .store
        .webhook_deliveries_page(id, before, limit + 1)
        .await?;
    Ok(Json(pagination::page(
        rows,
        limit,
        |d| (d.created_at, d.id),
        |d| d,
    )))
}
