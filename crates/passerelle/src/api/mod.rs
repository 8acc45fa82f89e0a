//! `passerelle api`: the admin HTTP API under `/api/v1`, over the same service layer as the
//! CLI. Every route but the health checks and the OpenAPI document needs a bearer token, and
//! every query is scoped to the token's tenant: another tenant's integration, run or log is
//! a `404`, exactly like one that does not exist. Errors are `application/problem+json`;
//! every response carries `x-request-id`.
//!
//! The OpenAPI 3.1 document is generated from the handlers (`utoipa`): the router and the
//! document are built from the same list, so a route cannot be served undocumented.

pub mod auth;
mod integrations;
mod logs;
mod oauth;
pub mod pagination;
pub mod problem;
mod runs;
pub(crate) mod views;

use crate::app;
use anyhow::Context as _;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use passerelle_connectors::ConnectorContext;
use passerelle_core::config::Settings;
use passerelle_core::vault::Vault;
use passerelle_queue::{Broker, Publisher};
use passerelle_store::Store;
use problem::Problem;
use serde::de::DeserializeOwned;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use utoipa::OpenApi as _;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What every handler shares.
#[derive(Debug)]
pub struct ApiState {
    pub store: Store,
    pub vault: Vault,
    pub broker: Broker,
    pub publisher: Publisher,
    pub connectors: ConnectorContext,
    pub settings: Settings,
    pub auth_failures: auth::AuthFailures,
    /// Log exports hold a database connection each while they stream: at most half the pool.
    pub exports: Arc<tokio::sync::Semaphore>,
}

impl ApiState {
    pub fn new(store: Store, vault: Vault, broker: Broker, settings: Settings) -> Self {
        let exports = usize::try_from(settings.database.max_connections / 2)
            .unwrap_or(1)
            .max(1);
        Self {
            publisher: broker.publisher(),
            connectors: app::connector_context(&settings),
            store,
            vault,
            broker,
            settings,
            auth_failures: auth::AuthFailures::default(),
            exports: Arc::new(tokio::sync::Semaphore::new(exports)),
        }
    }
}

/// Query parameters of `T`; a typo or a value of the wrong kind is a `422` naming it.
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        let query = parts.uri.query().unwrap_or_default();
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(Params)
            .map_err(|e| Problem::field(&e.path().to_string(), e.into_inner()))
    }
}

/// A label from the query (`status=active`), parsed; a wrong one is pushed to `errors`
/// under `field`, so a listing refuses every bad filter at once.
pub fn label<T: std::str::FromStr<Err = passerelle_core::domain::UnknownLabel>>(
    field: &str,
    raw: Option<&str>,
    errors: &mut Vec<crate::service::FieldError>,
) -> Option<T> {
    raw.and_then(|r| {
        r.parse()
            .map_err(|e| errors.push(crate::service::FieldError::new(field, e)))
            .ok()
    })
}

/// An id from the path; one that cannot be an id names nothing, so it is a `404` too.
pub fn parse_id<T: std::str::FromStr>(raw: &str, what: &str) -> Result<T, Problem> {
    raw.parse()
        .map_err(|_| Problem::not_found(format!("{what} `{raw}`")))
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Passerelle admin API", description = "Integrations, runs, logs and mappings of one tenant. Authenticate with `Authorization: Bearer <token>` (`passerelle tokens create`)."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(Problem, crate::service::FieldError)),
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The `/api/v1` routes and the document that describes them, from one list.
fn versioned() -> (Router<Arc<ApiState>>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(integrations::list, integrations::create))
        .routes(routes!(
            integrations::show,
            integrations::update,
            integrations::delete
        ))
        .routes(routes!(integrations::test))
        .routes(routes!(integrations::activate))
        .routes(routes!(integrations::deactivate))
        .routes(routes!(integrations::rotate_webhook_secret))
        .routes(routes!(integrations::webhook_deliveries))
        .routes(routes!(runs::sync))
        .routes(routes!(runs::list))
        .routes(routes!(runs::show))
        .routes(routes!(runs::cancel))
        .routes(routes!(logs::list))
        .routes(routes!(logs::export))
        .routes(routes!(logs::mappings))
        .routes(routes!(logs::stats))
        .routes(routes!(oauth::start))
        .routes(routes!(oauth::callback))
        .routes(routes!(oauth::connected))
        .split_for_parts()
}

/// The OpenAPI document as served at `/api/v1/openapi.json` (paths under `/api/v1`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = versioned();
    doc.servers = Some(vec![utoipa::openapi::Server::new("/api/v1")]);
    doc
}

/// The whole application: `/api/v1/…`, the health checks and the document.
pub fn router(state: Arc<ApiState>) -> Router {
    let (api, _) = versioned();
    let doc = Arc::new(openapi());
    let max_body = state.settings.api.max_body_bytes;
    Router::new()
        .nest("/api/v1", api)
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { Json(doc.as_ref().clone()) }
            }),
        )
        .route("/healthz", axum::routing::get(healthz))
        .route("/readyz", axum::routing::get(readyz))
        .fallback(|| async {
            Problem::new(
                StatusCode::NOT_FOUND,
                "no such route; see /api/v1/openapi.json",
            )
        })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "this route does not take that method; see /api/v1/openapi.json",
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn(request_id))
        .with_state(state)
}

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Gives every request an id (the caller's `x-request-id` when it is a sane one), logs the
/// request under it, and returns it on the response.
async fn request_id(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let span = tracing::info_span!("request", request_id = %id, method = %request.method(), path = %request.uri().path());
    let started = std::time::Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    span.in_scope(|| {
        let status = response.status().as_u16();
        let elapsed_ms = started.elapsed().as_millis() as u64;
        if status >= 500 {
            tracing::warn!(status, elapsed_ms, "request failed");
        } else {
            tracing::debug!(status, elapsed_ms, "request");
        }
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID.clone(), v);
    }
    response
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when Postgres answers and the broker connection is up.
async fn readyz(State(state): State<Arc<ApiState>>) -> Response {
    let database = sqlx::query("SELECT 1")
        .execute(state.store.pool())
        .await
        .is_ok();
    let broker = state.broker.is_connected();
    let body = serde_json::json!({
        "postgres": if database { "up" } else { "down" },
        "rabbitmq": if broker { "up" } else { "down" },
    });
    let status = if database && broker {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Runs the API until `shutdown`, then finishes the requests in flight.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let store = crate::commands::connect(&settings).await?;
    let vault = app::vault(&settings)?;
    let broker = app::broker(&settings).await?;
    let listener = tokio::net::TcpListener::bind(&settings.api.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (api.listen); is another process using it?",
                settings.api.listen
            )
        })?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "admin API listening");
    eprintln!(
        "admin API listening on http://{addr}/api/v1 (document: http://{addr}/api/v1/openapi.json)"
    );
    let state = Arc::new(ApiState::new(store, vault, broker.clone(), settings));
    serve(listener, state, shutdown).await?;
    broker.close().await;
    Ok(())
}

/// Serves the API on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await
}
