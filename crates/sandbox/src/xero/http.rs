//! The Xero simulator's HTTP surface: the identity endpoints (authorize, token, connections;
//! the authorization code's side in `consent.rs`), the Accounting API pipeline (bearer token
//! → tenant → rate limits → faults → idempotency → handling) and the loopback admin
//! endpoints.
//!
//! Errors take Xero's shapes: `{"error":"invalid_grant"}` from the token endpoint,
//! `{"Type":null,"Title":"Unauthorized","Status":401,"Detail":"TokenExpired: …"}` for
//! tokens and tenants, `ApiException` bodies (`ValidationException`, ErrorNumber 10) for
//! refused records, and plain text for unknown resources.

use super::dates;
use super::limits::{Admission, LimitProblem, Remaining, TenantGate};
use super::model::{self, Context, Mode};
use super::query::{self, Pagination};
use super::store::{Kind, TenantData, code_key, invoice_number_key, quote_number_key};
use super::{App, Tenant, TenantState, XeroAppConfig, XeroSim, lock};
use crate::SandboxError;
use crate::authorization::CodeExchange;
use crate::fault_plan::{self, FaultAnswers, FaultPlan, Outcome};
use crate::faults::Fault;
use crate::idempotency::{Claim, KeyClaim};
use crate::problem::{Problem, Reply, admin_body, admin_json, admin_path};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FormRejection, PathRejection, QueryRejection};
use axum::extract::{Form, OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use base64::Engine;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

const TENANT_HEADER: HeaderName = HeaderName::from_static("xero-tenant-id");
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
const CORRELATION_ID: HeaderName = HeaderName::from_static("xero-correlation-id");
const RATE_LIMIT_PROBLEM: HeaderName = HeaderName::from_static("x-rate-limit-problem");
const MIN_REMAINING: HeaderName = HeaderName::from_static("x-minlimit-remaining");
const DAY_REMAINING: HeaderName = HeaderName::from_static("x-daylimit-remaining");
const APP_MIN_REMAINING: HeaderName = HeaderName::from_static("x-appminlimit-remaining");

/// The spec: "128 character max".
const MAX_KEY_LEN: usize = 128;
const JSON: &str = "application/json; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";
const NOT_FOUND: &str = "The resource you're looking for cannot be found";

/// The routes, relative to where they are nested (`/xero`).
pub(crate) fn routes(sim: XeroSim) -> Router {
    Router::new()
        .route(
            "/identity/connect/authorize",
            get(super::consent::authorize),
        )
        .route("/identity/connect/token", post(token))
        .route("/connections", get(connections))
        .route("/Connections", get(connections))
        .route("/api.xro/2.0/{*rest}", any(api))
        .route("/_sandbox/apps", post(admin_add_app))
        .route(
            "/_sandbox/apps/{client_id}/faults",
            post(admin_inject_identity),
        )
        .route(
            "/_sandbox/apps/{client_id}/expire-access-tokens",
            post(admin_expire_tokens),
        )
        .route("/_sandbox/tenants/{tenant_id}/stats", get(admin_stats))
        .route("/_sandbox/tenants/{tenant_id}/faults", post(admin_inject))
        .route(
            "/_sandbox/tenants/{tenant_id}/records/{collection}",
            get(admin_records).post(admin_upsert),
        )
        .fallback(|| async { not_found().into_response() })
        .method_not_allowed_fallback(|method: Method| async move {
            wrong_method(&method).into_response()
        })
        .layer(axum::middleware::from_fn_with_state(
            sim.clone(),
            super::received::record,
        ))
        .with_state(sim)
}

// --- answers ---

/// Xero writes MS-JSON dates with escaped slashes (`"\/Date(…)\/"`); JSON readers see the
/// same string either way, and a reader that cannot must be caught here rather than live.
fn xero_json(value: &Value) -> Bytes {
    let text = serde_json::to_string(value).unwrap_or_default();
    Bytes::from(
        text.replace("\"/Date(", "\"\\/Date(")
            .replace(")/\"", ")\\/\""),
    )
}

fn json_reply(status: StatusCode, value: &Value) -> Reply {
    Reply::new(status, JSON, xero_json(value))
}

/// The problem-details shape Xero's gateway answers with for auth and tenant errors.
fn gateway_problem(status: StatusCode, detail: &str) -> Reply {
    json_reply(
        status,
        &json!({
            "Type": null,
            "Title": status.canonical_reason().unwrap_or("Error"),
            "Status": status.as_u16(),
            "Detail": detail,
            "Instance": Uuid::new_v4().to_string(),
            "Extensions": {}
        }),
    )
}

fn unauthorized(detail: &str) -> Reply {
    let mut reply = gateway_problem(StatusCode::UNAUTHORIZED, detail);
    reply.headers.push((
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer error=\"invalid_token\""),
    ));
    reply
}

fn forbidden() -> Reply {
    gateway_problem(StatusCode::FORBIDDEN, "AuthenticationUnsuccessful")
}

/// An `ApiException` body: `{ErrorNumber, Type, Message[, Elements]}`.
fn api_exception(
    status: StatusCode,
    number: u16,
    kind: &str,
    message: &str,
    elements: Option<Vec<Value>>,
) -> Reply {
    let mut body = json!({"ErrorNumber": number, "Type": kind, "Message": message});
    if let (Some(elements), Value::Object(map)) = (elements, &mut body) {
        map.insert("Elements".into(), Value::Array(elements));
    }
    json_reply(status, &body)
}

fn validation_exception(elements: Vec<Value>) -> Reply {
    api_exception(
        StatusCode::BAD_REQUEST,
        10,
        "ValidationException",
        "A validation exception occurred",
        Some(elements),
    )
}

fn post_data_invalid(message: &str) -> Reply {
    api_exception(
        StatusCode::BAD_REQUEST,
        14,
        "PostDataInvalidException",
        message,
        None,
    )
}

fn not_found() -> Reply {
    Reply::new(StatusCode::NOT_FOUND, TEXT, NOT_FOUND)
}

fn wrong_method(method: &Method) -> Reply {
    Reply::new(
        StatusCode::METHOD_NOT_ALLOWED,
        TEXT,
        format!("The requested resource does not support http method '{method}'."),
    )
}

fn rate_limited(problem: LimitProblem, retry_after: Option<u64>) -> Reply {
    let mut reply = gateway_problem(
        StatusCode::TOO_MANY_REQUESTS,
        &format!("Rate limit exceeded: {}", problem.header_value()),
    );
    reply.headers.push((
        RATE_LIMIT_PROBLEM,
        HeaderValue::from_static(problem.header_value()),
    ));
    if let Some(secs) = retry_after {
        reply
            .headers
            .push((header::RETRY_AFTER, HeaderValue::from(secs)));
    }
    reply
}

/// An injected status, in the shape Xero uses for it.
fn injected(status: StatusCode, retry_after: Option<u64>) -> Reply {
    let mut reply = match status.as_u16() {
        401 => unauthorized("AuthenticationUnsuccessful"),
        403 => forbidden(),
        404 => not_found(),
        code => {
            let kind = match code {
                400 => "PostDataInvalidException",
                500 => "UnknownErrorException",
                501 => "NotImplementedException",
                503 => "OrganisationOfflineException",
                _ => "ApiException",
            };
            api_exception(
                status,
                code,
                kind,
                &format!("sandbox fault: answering {status}"),
                None,
            )
        }
    };
    if let Some(secs) = retry_after {
        reply
            .headers
            .push((header::RETRY_AFTER, HeaderValue::from(secs)));
    }
    reply
}

fn oauth_error(error: &'static str) -> Response {
    let mut reply = json_reply(StatusCode::BAD_REQUEST, &json!({ "error": error }));
    reply
        .headers
        .push((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
    reply.into_response()
}

fn shutting_down() -> Reply {
    Reply::new(
        StatusCode::SERVICE_UNAVAILABLE,
        TEXT,
        "the sandbox is shutting down",
    )
}

// --- faults ---

/// Xero's answers to injected faults. `on_429` records an injected 429 with the tenant's
/// gate, where there is one (the identity endpoints have none).
struct XeroFaults<'a> {
    on_429: Option<&'a (dyn Fn(Option<u64>) + Sync)>,
}

const IDENTITY_FAULTS: XeroFaults<'static> = XeroFaults { on_429: None };

impl FaultAnswers for XeroFaults<'_> {
    type Reply = Reply;

    fn status(&self, status: StatusCode, retry_after: Option<u64>) -> Reply {
        if status == StatusCode::TOO_MANY_REQUESTS {
            if let Some(on_429) = self.on_429 {
                on_429(retry_after);
            }
            rate_limited(LimitProblem::Minute, retry_after)
        } else {
            injected(status, retry_after)
        }
    }

    fn held_too_long(&self) -> Reply {
        injected(StatusCode::GATEWAY_TIMEOUT, None)
    }

    fn shutting_down(&self) -> Reply {
        shutting_down()
    }
}

fn apply_outcome(reply: Reply, outcome: Outcome) -> Reply {
    match outcome {
        Outcome::AsIs => reply,
        Outcome::Truncate => reply.truncated(),
        Outcome::Drop => api_exception(
            StatusCode::INTERNAL_SERVER_ERROR,
            500,
            "UnknownErrorException",
            "An error occurred in Xero. The request was handled but its response was lost \
             (sandbox fault).",
            None,
        ),
    }
}

async fn pause(sim: &XeroSim, latency: Option<Duration>) -> Result<(), Reply> {
    fault_plan::pause(&IDENTITY_FAULTS, &sim.shared.interrupt, latency).await
}

// --- identity ---

/// What a valid bearer token grants, copied out of the token store.
struct GrantInfo {
    client_id: String,
    tenant_ids: Vec<String>,
    client_credentials: bool,
    auth_event_id: Uuid,
    created: DateTime<Utc>,
}

impl XeroSim {
    fn bearer(&self, headers: &HeaderMap, now: DateTime<Utc>) -> Result<GrantInfo, Reply> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .ok_or_else(|| unauthorized("AuthenticationUnsuccessful"))?;
        let tokens = lock(&self.shared.tokens);
        match tokens.bearer(token, now) {
            super::oauth::Bearer::Valid(grant) => Ok(GrantInfo {
                client_id: grant.client_id.clone(),
                tenant_ids: grant.tenant_ids.clone(),
                client_credentials: grant.client_credentials,
                auth_event_id: grant.auth_event_id,
                created: grant.created,
            }),
            super::oauth::Bearer::Expired(at) => Err(unauthorized(&format!(
                "TokenExpired: token expired at {}",
                dates::token_expiry(at)
            ))),
            super::oauth::Bearer::Unknown => Err(unauthorized("AuthenticationUnsuccessful")),
        }
    }
}

/// `client_secret_basic` or `client_secret_post`.
fn client_credentials(
    headers: &HeaderMap,
    params: &[(String, String)],
) -> Option<(String, String)> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let (scheme, encoded) = value.to_str().ok()?.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()?;
        let (id, secret) = String::from_utf8(decoded)
            .ok()?
            .split_once(':')
            .map(|(a, b)| (a.to_owned(), b.to_owned()))?;
        return Some((id, secret));
    }
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    Some((param("client_id")?, param("client_secret")?))
}

async fn token(
    State(sim): State<XeroSim>,
    method: Method,
    uri: OriginalUri,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Response {
    let Ok(Form(params)) = form else {
        return oauth_error("invalid_request");
    };
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let Some((client_id, secret)) = client_credentials(&headers, &params) else {
        return oauth_error("invalid_client");
    };
    let Some(app) = sim.app(&client_id) else {
        return oauth_error("invalid_client");
    };
    let grant_type = param("grant_type");
    let (config, injection) = {
        let mut state = lock(&app.state);
        if state.config.client_secret != secret {
            match grant_type {
                Some("refresh_token") => state.rejected_refreshes += 1,
                Some("authorization_code") => state.rejected_code_exchanges += 1,
                _ => {}
            }
            return oauth_error("invalid_client");
        }
        let injection = state.identity_faults.take(&method, uri.path());
        (state.config.clone(), injection)
    };
    let interrupt = &sim.shared.interrupt;
    let outcome = match fault_plan::before_handling(&IDENTITY_FAULTS, interrupt, injection).await {
        Ok(outcome) => outcome,
        Err(reply) => return reply.into_response(),
    };

    let now = Utc::now();
    let issued = match grant_type {
        Some("refresh_token") => {
            let Some(refresh_token) = param("refresh_token") else {
                return oauth_error("invalid_request");
            };
            let issued = lock(&sim.shared.tokens).refresh(
                &client_id,
                refresh_token,
                config.lifetimes(),
                now,
            );
            let mut state = lock(&app.state);
            match issued {
                Some(issued) => {
                    state.token_refreshes += 1;
                    issued
                }
                None => {
                    state.rejected_refreshes += 1;
                    return oauth_error("invalid_grant");
                }
            }
        }
        Some("authorization_code") => {
            let request = CodeExchange {
                client_id: &client_id,
                code: param("code"),
                redirect_uri: param("redirect_uri"),
                code_verifier: param("code_verifier"),
            };
            let issued = super::consent::exchange(&sim, &request, config.lifetimes(), now);
            let mut state = lock(&app.state);
            match issued {
                Ok(issued) => {
                    state.code_exchanges += 1;
                    issued
                }
                Err(error) => {
                    state.rejected_code_exchanges += 1;
                    return oauth_error(error.error());
                }
            }
        }
        Some("client_credentials") => {
            if !config.custom_connection {
                return oauth_error("unauthorized_client");
            }
            let tenants: Vec<String> = config
                .tenants
                .iter()
                .map(|t| t.tenant_id.to_ascii_lowercase())
                .collect();
            lock(&sim.shared.tokens).client_credentials(
                &client_id,
                &tenants,
                config.lifetimes(),
                now,
            )
        }
        Some(_) => return oauth_error("unsupported_grant_type"),
        None => return oauth_error("invalid_request"),
    };
    let scope = match (grant_type, issued.scope) {
        (_, Some(consented)) => consented,
        (Some("client_credentials"), None) => param("scope").unwrap_or(&config.scopes).to_owned(),
        _ => config.scopes.clone(),
    };
    let mut body = json!({
        "access_token": issued.access_token,
        "expires_in": config.access_token_ttl_secs,
        "token_type": "Bearer",
        "scope": scope,
    });
    if let (Some(refresh), Value::Object(map)) = (issued.refresh_token, &mut body) {
        map.insert("refresh_token".into(), Value::String(refresh));
    }
    let mut reply = json_reply(StatusCode::OK, &body);
    reply
        .headers
        .push((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
    apply_outcome(reply, outcome).into_response()
}

async fn connections(
    State(sim): State<XeroSim>,
    method: Method,
    uri: OriginalUri,
    headers: HeaderMap,
) -> Response {
    let grant = match sim.bearer(&headers, Utc::now()) {
        Ok(grant) => grant,
        Err(reply) => return reply.into_response(),
    };
    let injection = sim
        .app(&grant.client_id)
        .and_then(|app| lock(&app.state).identity_faults.take(&method, uri.path()));
    let interrupt = &sim.shared.interrupt;
    let outcome = match fault_plan::before_handling(&IDENTITY_FAULTS, interrupt, injection).await {
        Ok(outcome) => outcome,
        Err(reply) => return reply.into_response(),
    };
    // .NET's seven fractional digits, as in the spec's example (`2019-12-07T18:46:19.5165400`).
    let format = |at: DateTime<Utc>| {
        format!(
            "{}.{:07}",
            at.format("%Y-%m-%dT%H:%M:%S"),
            at.timestamp_subsec_nanos() / 100
        )
    };
    let connections: Vec<Value> = grant
        .tenant_ids
        .iter()
        .filter_map(|id| sim.tenant(id))
        .map(|tenant| {
            let name = lock(&tenant.state).name.clone();
            let connection_id = Uuid::from_u64_pair(
                grant.auth_event_id.as_u64_pair().0,
                Uuid::parse_str(&tenant.id).map_or(0, |t| t.as_u64_pair().1),
            );
            json!({
                "id": connection_id.to_string(),
                "authEventId": grant.auth_event_id.to_string(),
                "tenantId": tenant.id,
                "tenantType": "ORGANISATION",
                "tenantName": name,
                "createdDateUtc": format(grant.created.max(tenant.created)),
                "updatedDateUtc": format(grant.created.max(tenant.created)),
            })
        })
        .collect();
    apply_outcome(
        json_reply(StatusCode::OK, &Value::Array(connections)),
        outcome,
    )
    .into_response()
}

// --- the Accounting API ---

/// What handling needs besides the operation.
struct Call {
    method: Method,
    /// Path and query, for the idempotency fingerprint.
    path_and_query: String,
    rest: String,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
}

/// The app's settings that shape the answer, snapshotted at admission.
struct Settings {
    provider_name: String,
    idempotency_window: TimeDelta,
}

/// Holds one of the tenant's concurrent-call slots until the request is answered or
/// abandoned.
struct InFlight {
    app: Arc<App>,
    tenant: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(gate) = lock(&self.app.state).tenant_gates.get_mut(&self.tenant) {
            gate.finish();
        }
    }
}

async fn api(
    State(sim): State<XeroSim>,
    method: Method,
    uri: OriginalUri,
    headers: HeaderMap,
    rest: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let now = Utc::now();
    let grant = match sim.bearer(&headers, now) {
        Ok(grant) => grant,
        Err(reply) => return reply.into_response(),
    };
    let tenant_id = match headers.get(TENANT_HEADER).map(|v| v.to_str()) {
        Some(Ok(id)) => {
            let id = id.trim().to_ascii_lowercase();
            if !grant.tenant_ids.contains(&id) {
                return forbidden().into_response();
            }
            id
        }
        // A custom connection covers one tenant, so it may leave the header out.
        None if grant.client_credentials && grant.tenant_ids.len() == 1 => {
            grant.tenant_ids.first().cloned().unwrap_or_default()
        }
        _ => return forbidden().into_response(),
    };
    let (Some(app), Some(tenant)) = (sim.app(&grant.client_id), sim.tenant(&tenant_id)) else {
        return forbidden().into_response();
    };

    let (admission, settings) = {
        let mut guard = lock(&app.state);
        let state = &mut *guard;
        let limits = &state.config.limits;
        let gate = state
            .tenant_gates
            .entry(tenant_id.clone())
            .or_insert_with(|| TenantGate::new(limits));
        let admission = gate.admit(now, limits, &mut state.gate);
        let settings = Settings {
            provider_name: state.config.name.clone(),
            idempotency_window: TimeDelta::seconds(
                i64::try_from(state.config.idempotency_window_secs).unwrap_or(i64::MAX / 1000),
            ),
        };
        (admission, settings)
    };
    let remaining = match admission {
        Admission::Refused {
            problem,
            retry_after,
            remaining,
        } => {
            let mut reply = rate_limited(problem, Some(retry_after));
            limit_headers(&mut reply, remaining);
            return reply.into_response();
        }
        Admission::Admitted(remaining) => remaining,
    };
    let _in_flight = InFlight {
        app: app.clone(),
        tenant: tenant_id.clone(),
    };

    let injection = lock(&tenant.state).faults.take(&method, uri.path());
    let record_429 = |retry_after: Option<u64>| {
        if let Some(gate) = lock(&app.state).tenant_gates.get_mut(&tenant_id) {
            match retry_after {
                Some(secs) => gate.told_to_wait(Utc::now(), secs, LimitProblem::Minute),
                None => gate.limited_without_wait(),
            }
        }
    };
    let answers = XeroFaults {
        on_429: Some(&record_429),
    };
    let mut reply = match fault_plan::plan(&answers, &sim.shared.interrupt, injection).await {
        FaultPlan::Answer(reply) => reply,
        FaultPlan::Handle { latency, outcome } => {
            let call = (|| {
                let Path(rest) = rest.map_err(|r| Reply::new(r.status(), TEXT, r.body_text()))?;
                let Query(query) =
                    query.map_err(|r| Reply::new(r.status(), TEXT, r.body_text()))?;
                let body = body.map_err(|r| Reply::new(r.status(), TEXT, r.body_text()))?;
                Ok::<_, Reply>(Call {
                    method: method.clone(),
                    path_and_query: uri
                        .path_and_query()
                        .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned()),
                    rest,
                    query,
                    headers: headers.clone(),
                    body,
                })
            })();
            let reply = match call {
                Ok(call) => handle(&sim, &tenant, &settings, &call, latency).await,
                Err(reply) => reply,
            };
            apply_outcome(reply, outcome)
        }
    };
    limit_headers(&mut reply, remaining);
    reply.into_response()
}

fn limit_headers(reply: &mut Reply, remaining: Remaining) {
    for (name, value) in [
        (MIN_REMAINING, remaining.minute),
        (DAY_REMAINING, remaining.day),
        (APP_MIN_REMAINING, remaining.app_minute),
    ] {
        if let Some(value) = value {
            reply.headers.push((name, HeaderValue::from(value)));
        }
    }
    if let Ok(id) = HeaderValue::from_str(&Uuid::new_v4().simple().to_string()) {
        reply.headers.push((CORRELATION_ID, id));
    }
}

/// Xero answers XML unless asked for JSON; this simulator speaks only JSON, so a client
/// that forgets to ask is told here instead of surprised in production.
fn accepts_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|range| {
            range
                .split(';')
                .next()
                .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
        })
}

async fn handle(
    sim: &XeroSim,
    tenant: &Arc<Tenant>,
    settings: &Settings,
    call: &Call,
    latency: Option<Duration>,
) -> Reply {
    if !accepts_json(&call.headers) {
        return Reply::new(
            StatusCode::NOT_ACCEPTABLE,
            TEXT,
            "Xero answers XML unless the request sends Accept: application/json; this \
             simulator only speaks JSON",
        );
    }
    let segments: Vec<&str> = call.rest.split('/').filter(|s| !s.is_empty()).collect();
    let result = match segments.as_slice() {
        [single] if single.eq_ignore_ascii_case("Organisation") => {
            if call.method != Method::GET {
                return wrong_method(&call.method);
            }
            pause(sim, latency)
                .await
                .map(|()| organisation(tenant, settings))
        }
        [collection] => {
            let Some(kind) = Kind::parse(collection) else {
                return not_found();
            };
            match call.method {
                Method::GET => pause(sim, latency)
                    .await
                    .map(|()| list(tenant, settings, kind, call)),
                Method::PUT => {
                    Ok(write(sim, tenant, settings, call, kind, Target::Create, latency).await)
                }
                Method::POST => {
                    Ok(write(sim, tenant, settings, call, kind, Target::Upsert, latency).await)
                }
                _ => return wrong_method(&call.method),
            }
        }
        [collection, key] => {
            let Some(kind) = Kind::parse(collection) else {
                return not_found();
            };
            match call.method {
                Method::GET => pause(sim, latency)
                    .await
                    .map(|()| fetch(tenant, settings, kind, key, call)),
                Method::POST => {
                    let key = (*key).to_owned();
                    Ok(write(sim, tenant, settings, call, kind, Target::One(key), latency).await)
                }
                Method::DELETE if kind == Kind::Items => {
                    pause(sim, latency).await.map(|()| delete_item(tenant, key))
                }
                _ => return wrong_method(&call.method),
            }
        }
        _ => return not_found(),
    };
    result.unwrap_or_else(|reply| reply)
}

fn envelope(
    settings: &Settings,
    kind_name: &str,
    items: Vec<Value>,
    pagination: Option<Pagination>,
    summarize_errors: Option<bool>,
) -> Value {
    let mut body = Map::new();
    body.insert("Id".into(), json!(Uuid::new_v4().to_string()));
    body.insert("Status".into(), json!("OK"));
    body.insert("ProviderName".into(), json!(settings.provider_name));
    body.insert(
        "DateTimeUTC".into(),
        json!(dates::ms_date(Utc::now(), false)),
    );
    if let Some(pagination) = pagination {
        body.insert(
            "pagination".into(),
            serde_json::to_value(pagination).unwrap_or(Value::Null),
        );
    }
    if summarize_errors == Some(false) {
        body.insert("SummarizeErrors".into(), json!(false));
    }
    body.insert(kind_name.into(), Value::Array(items));
    Value::Object(body)
}

fn list(tenant: &Tenant, settings: &Settings, kind: Kind, call: &Call) -> Reply {
    let query = match query::parse(kind, &call.query) {
        Ok(query) => query,
        Err(message) => {
            return api_exception(
                StatusCode::BAD_REQUEST,
                16,
                "QueryParseException",
                &message,
                None,
            );
        }
    };
    let since = call
        .headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(dates::parse_if_modified_since);
    let state = lock(&tenant.state);
    let (records, pagination) = query.select(kind, &state.data, since);
    let items = records
        .iter()
        .map(|r| {
            Value::Object(model::render(
                &state.data,
                kind,
                &r.body,
                query.four_decimals,
            ))
        })
        .collect();
    json_reply(
        StatusCode::OK,
        &envelope(settings, kind.name(), items, pagination, None),
    )
}

fn four_decimals(call: &Call) -> bool {
    call.query
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("unitdp") && v.trim() == "4")
}

/// The lower-case id a path segment names: a GUID, or the record's number or code.
fn resolve(data: &TenantData, kind: Kind, key: &str) -> Option<String> {
    let records = data.records(kind);
    let found = if Uuid::parse_str(key).is_ok() {
        records.get(key)
    } else {
        let business = match kind {
            Kind::Contacts => format!("ContactNumber:{}", key.trim()),
            Kind::Items => code_key(key),
            Kind::Invoices => invoice_number_key(key),
            Kind::Quotes => quote_number_key(key),
        };
        records.find(&business)
    };
    found
        .and_then(|s| s.body.get(kind.id_field()))
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase)
}

fn fetch(tenant: &Tenant, settings: &Settings, kind: Kind, key: &str, call: &Call) -> Reply {
    let state = lock(&tenant.state);
    let Some(record) =
        resolve(&state.data, kind, key).and_then(|id| state.data.records(kind).get(&id))
    else {
        return not_found();
    };
    let item = model::render(&state.data, kind, &record.body, four_decimals(call));
    json_reply(
        StatusCode::OK,
        &envelope(settings, kind.name(), vec![Value::Object(item)], None, None),
    )
}

fn delete_item(tenant: &Tenant, key: &str) -> Reply {
    let mut state = lock(&tenant.state);
    let Some(id) = resolve(&state.data, Kind::Items, key) else {
        return not_found();
    };
    let mut batch = state.data.begin();
    batch.remove(Kind::Items, &id);
    batch.commit();
    Reply::new(StatusCode::NO_CONTENT, JSON, Bytes::new())
}

fn organisation(tenant: &Tenant, settings: &Settings) -> Reply {
    let state = lock(&tenant.state);
    let organisation = json!({
        "OrganisationID": tenant.id,
        "Name": state.name,
        "LegalName": state.name,
        "BaseCurrency": state.base_currency,
        "OrganisationType": "COMPANY",
        "OrganisationStatus": "ACTIVE",
        "IsDemoCompany": false,
        "CreatedDateUTC": dates::ms_date(tenant.created, false),
    });
    json_reply(
        StatusCode::OK,
        &envelope(settings, "Organisations", vec![organisation], None, None),
    )
}

/// Which write a request is.
enum Target {
    /// PUT on the collection: create only.
    Create,
    /// POST on the collection: update the records the elements name, create the others.
    Upsert,
    /// POST on one record, named by id, number or code.
    One(String),
}

/// A write, with its idempotency key handled around it.
async fn write(
    sim: &XeroSim,
    tenant: &Arc<Tenant>,
    settings: &Settings,
    call: &Call,
    kind: Kind,
    target: Target,
    latency: Option<Duration>,
) -> Reply {
    if !is_json(&call.headers) {
        return post_data_invalid(
            "The request body must be JSON, sent with Content-Type: application/json",
        );
    }
    let key = match idempotency_key(&call.headers) {
        Ok(key) => key,
        Err(reply) => return reply,
    };
    let mut claim = None;
    if let Some(key) = key {
        let fingerprint =
            sim.shared
                .fingerprinter
                .fingerprint(&call.method, &call.path_and_query, &call.body);
        let mut state = lock(&tenant.state);
        match state.idempotency.claim(
            &key,
            Some(fingerprint),
            settings.idempotency_window,
            Utc::now(),
        ) {
            Claim::Proceed { token } => {
                claim = Some(KeyClaim::new(tenant.clone(), key, token));
            }
            Claim::Replay(answer) => {
                return Reply::new(answer.status, answer.content_type, answer.body);
            }
            Claim::InFlight => {
                return gateway_problem(
                    StatusCode::CONFLICT,
                    &format!("A request with Idempotency Key: {key} is already being processed."),
                );
            }
            Claim::Mismatch => {
                return api_exception(
                    StatusCode::BAD_REQUEST,
                    10,
                    "ValidationException",
                    &format!("Idempotency Key: {key} is used with a different request."),
                    None,
                );
            }
        }
    }

    // The key is held from here: a retry arriving during the delay is refused. If this
    // request is abandoned (client gone, shutdown) the claim's drop frees the key.
    if let Err(reply) = pause(sim, latency).await {
        return reply;
    }

    let mut state = lock(&tenant.state);
    let (reply, created) = write_locked(&mut state, settings, call, kind, target);
    if let Some(claim) = claim {
        if created > 0 {
            state.idempotency.record_creates(claim.key(), created);
        }
        claim.settle(&mut state.idempotency, Some(StoredAnswer::of(&reply)));
    }
    reply
}

/// The write itself, under the tenant's lock: the answer and how many records it created.
fn write_locked(
    state: &mut TenantState,
    settings: &Settings,
    call: &Call,
    kind: Kind,
    target: Target,
) -> (Reply, u64) {
    let elements = match serde_json::from_slice::<Value>(&call.body)
        .map_err(|e| format!("The request body is not valid JSON: {e}"))
        .and_then(|value| elements(kind, value))
    {
        Ok(elements) => elements,
        Err(message) => return (post_data_invalid(&message), 0),
    };
    let summarize = match call
        .query
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("summarizeErrors"))
        .map(|(_, v)| v.trim().to_ascii_lowercase())
    {
        None => true,
        Some(v) if v == "true" => true,
        Some(v) if v == "false" => false,
        Some(v) => {
            return (
                api_exception(
                    StatusCode::BAD_REQUEST,
                    16,
                    "QueryParseException",
                    &format!("summarizeErrors '{v}' is not true or false"),
                    None,
                ),
                0,
            );
        }
    };
    let four_decimals = four_decimals(call);
    let mode = match target {
        Target::Create => Mode::Create,
        Target::Upsert => Mode::Upsert,
        Target::One(key) => match resolve(&state.data, kind, &key) {
            Some(id) => Mode::Update(id),
            None => return (not_found(), 0),
        },
    };
    // One record per call when it is named in the path; its errors always fail the call.
    let summarize = summarize || matches!(mode, Mode::Update(_));
    if matches!(mode, Mode::Update(_)) && elements.len() != 1 {
        return (
            post_data_invalid("A request to update one record must carry exactly one element"),
            0,
        );
    }

    let base_currency = state.base_currency.clone();
    let ctx = Context {
        now: Utc::now(),
        base_currency: &base_currency,
        four_decimals,
    };
    let mut batch = state.data.begin();
    let results: Vec<Result<String, Vec<String>>> = elements
        .iter()
        .map(|element| model::apply(&mut batch, kind, element, &mode, &ctx))
        .collect();
    let failed = results.iter().any(Result::is_err);
    if summarize && failed {
        batch.rollback();
        let elements = elements
            .iter()
            .zip(&results)
            .filter_map(|(element, result)| {
                result
                    .as_ref()
                    .err()
                    .map(|e| refused(kind, element, e, false))
            })
            .collect();
        return (validation_exception(elements), 0);
    }
    let created = batch.created_total();
    batch.commit();

    let items = elements
        .iter()
        .zip(&results)
        .map(|(element, result)| match result {
            Ok(id) => {
                let mut item = state
                    .data
                    .records(kind)
                    .get(id)
                    .map(|r| model::render(&state.data, kind, &r.body, four_decimals))
                    .unwrap_or_default();
                item.insert("StatusAttributeString".into(), json!("OK"));
                Value::Object(item)
            }
            Err(errors) => refused(kind, element, errors, true),
        })
        .collect();
    let summarize_flag = (!summarize).then_some(false);
    (
        json_reply(
            StatusCode::OK,
            &envelope(settings, kind.name(), items, None, summarize_flag),
        ),
        created,
    )
}

/// A refused element, echoed with its errors.
fn refused(kind: Kind, element: &Map<String, Value>, errors: &[String], status: bool) -> Value {
    let mut echo = element.clone();
    let flag = match kind {
        Kind::Invoices => "HasErrors",
        Kind::Contacts => "HasValidationErrors",
        Kind::Items | Kind::Quotes => "",
    };
    if !flag.is_empty() {
        echo.insert(flag.into(), json!(true));
    }
    if status {
        echo.insert("StatusAttributeString".into(), json!("ERROR"));
    }
    echo.insert(
        "ValidationErrors".into(),
        Value::Array(errors.iter().map(|m| json!({ "Message": m })).collect()),
    );
    Value::Object(echo)
}

/// The elements of a write: `{"Contacts": [...]}`, or one element sent bare.
fn elements(kind: Kind, value: Value) -> Result<Vec<Map<String, Value>>, String> {
    let Value::Object(mut map) = value else {
        return Err("The request body must be a JSON object".into());
    };
    let key = map
        .keys()
        .find(|k| k.eq_ignore_ascii_case(kind.name()))
        .cloned();
    let Some(key) = key else {
        return Ok(vec![map]);
    };
    match map.remove(&key) {
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                Value::Object(element) => Ok(element),
                _ => Err(format!(
                    "Every element of {} must be an object",
                    kind.name()
                )),
            })
            .collect(),
        _ => Err(format!("{} must be an array", kind.name())),
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Reply> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let bad = |detail: &str| gateway_problem(StatusCode::BAD_REQUEST, detail);
    if values.next().is_some() {
        return Err(bad("Idempotency-Key is given more than once."));
    }
    match value.to_str() {
        Ok(key) if !key.is_empty() && key.len() <= MAX_KEY_LEN => Ok(Some(key.to_owned())),
        _ => Err(bad(
            "Idempotency-Key must be 1 to 128 visible ASCII characters.",
        )),
    }
}

/// An answer kept for replay: Xero replays errors too (the client must fix the request and
/// use a new key).
#[derive(Clone, Debug)]
pub(super) struct StoredAnswer {
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
}

impl StoredAnswer {
    fn of(reply: &Reply) -> Self {
        Self {
            status: reply.status,
            content_type: reply.content_type,
            body: reply.body.clone(),
        }
    }
}

// --- admin: loopback test tooling, no auth, no limits, no faults ---

fn admin_problem(error: SandboxError) -> Problem {
    match error {
        SandboxError::UnknownApp(_)
        | SandboxError::UnknownTenant(_)
        | SandboxError::UnknownXeroCollection(_) => Problem::not_found(error.to_string()),
        other => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "Invalid request",
            other.to_string(),
        ),
    }
}

async fn admin_add_app(
    State(sim): State<XeroSim>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Reply, Problem> {
    let config: XeroAppConfig = admin_body(body)?;
    sim.try_add_app(config.clone()).map_err(admin_problem)?;
    admin_json(StatusCode::CREATED, &config)
}

async fn admin_inject_identity(
    State(sim): State<XeroSim>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, Problem> {
    let client_id = admin_path(path)?;
    let fault: Fault = admin_body(body)?;
    sim.try_inject_identity(&client_id, fault)
        .map_err(admin_problem)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn admin_expire_tokens(
    State(sim): State<XeroSim>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Reply, Problem> {
    let client_id = admin_path(path)?;
    sim.known_app(&client_id).map_err(admin_problem)?;
    let expired = sim.expire_access_tokens(&client_id);
    admin_json(StatusCode::OK, &json!({ "expired": expired }))
}

async fn admin_stats(
    State(sim): State<XeroSim>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Reply, Problem> {
    let tenant_id = admin_path(path)?;
    let stats = sim
        .stats(&tenant_id)
        .ok_or_else(|| admin_problem(SandboxError::UnknownTenant(tenant_id)))?;
    admin_json(StatusCode::OK, &stats)
}

async fn admin_inject(
    State(sim): State<XeroSim>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, Problem> {
    let tenant_id = admin_path(path)?;
    let fault: Fault = admin_body(body)?;
    sim.try_inject(&tenant_id, fault).map_err(admin_problem)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn admin_records(
    State(sim): State<XeroSim>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Reply, Problem> {
    let (tenant_id, collection) = admin_path(path)?;
    sim.known_tenant(&tenant_id).map_err(admin_problem)?;
    Kind::parse(&collection)
        .ok_or_else(|| admin_problem(SandboxError::UnknownXeroCollection(collection.clone())))?;
    admin_json(StatusCode::OK, &sim.records(&tenant_id, &collection))
}

async fn admin_upsert(
    State(sim): State<XeroSim>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Reply, Problem> {
    let (tenant_id, collection) = admin_path(path)?;
    let record: Value = admin_body(body)?;
    let id = sim
        .try_upsert_record(&tenant_id, &collection, record)
        .map_err(admin_problem)?;
    admin_json(StatusCode::OK, &json!({ "id": id }))
}
