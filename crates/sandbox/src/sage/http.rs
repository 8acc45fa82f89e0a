//! The Sage simulator's HTTP surface: the token endpoint (the authorization endpoint is in
//! `consent.rs`), the API pipeline (bearer token → business → limits → scope → faults →
//! `idempotency_id` replay → handling) and the loopback admin endpoints.

use super::errors::{Failure, invalid};
use super::model::{self, Origin};
use super::store::Resource;
use super::tokens::{Bearer, Issued, RefreshRefusal, Scope};
use super::{App, Business, BusinessState, SageAppConfig, SageSim, fields, list, lock, namespace};
use crate::authorization::CodeExchange;
use crate::fault_plan::{self, FaultAnswers, Outcome};
use crate::faults::{Admission, Fault, Injection};
use crate::idempotency::Claim;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, OriginalUri, Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use std::sync::Arc;

/// The routes, relative to where they are nested (`/sage`).
pub(crate) fn routes(sim: SageSim) -> Router {
    Router::new()
        .route("/oauth2/auth/central", get(super::consent::authorize))
        .route("/oauth/token", post(token))
        .route("/v3.1/{*rest}", any(api))
        .route("/_sandbox/apps", post(admin_add_app))
        .route(
            "/_sandbox/apps/{client_id}/expire-access-tokens",
            post(admin_expire_tokens),
        )
        .route(
            "/_sandbox/apps/{client_id}/revoke-refresh-tokens",
            post(admin_revoke_tokens),
        )
        .route("/_sandbox/businesses/{business}/stats", get(admin_stats))
        .route("/_sandbox/businesses/{business}/faults", post(admin_inject))
        .route(
            "/_sandbox/businesses/{business}/records/{resource}",
            get(admin_records).post(admin_upsert),
        )
        .fallback(|uri: axum::http::Uri| async move {
            Failure::one(
                StatusCode::NOT_FOUND,
                "RecordNotFound",
                format!("no resource at {}", uri.path()),
                "",
            )
        })
        .with_state(sim)
}

/// A handled request's answer: `None` is `204 No Content`.
type Answer = (StatusCode, Option<Value>);

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn oauth_error(status: StatusCode, error: &str) -> Response {
    json_response(status, &json!({ "error": error }))
}

/// Sage's answers to injected faults.
struct SageFaults;

impl FaultAnswers for SageFaults {
    type Reply = Response;

    fn status(&self, status: StatusCode, retry_after: Option<u64>) -> Response {
        Failure::status(status, retry_after).into_response()
    }

    fn shutting_down(&self) -> Response {
        Failure::status(StatusCode::SERVICE_UNAVAILABLE, None).into_response()
    }
}

fn after(outcome: Outcome, answer: Result<Answer, Failure>) -> Response {
    let (status, body) = match answer {
        Ok(answer) => answer,
        Err(failure) => (failure.status, Some(failure.body())),
    };
    match (outcome, body) {
        (Outcome::Drop, _) => {
            Failure::status(StatusCode::INTERNAL_SERVER_ERROR, None).into_response()
        }
        (_, None) => status.into_response(),
        (Outcome::AsIs, Some(body)) => json_response(status, &body),
        (Outcome::Truncate, Some(body)) => {
            let text = body.to_string();
            let cut: String = text.chars().take(text.len() / 2).collect();
            (status, [(header::CONTENT_TYPE, "application/json")], cut).into_response()
        }
    }
}

// --- token endpoint ---

async fn token(
    State(sim): State<SageSim>,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Response {
    let Ok(Form(params)) = form else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
    };
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    // client_secret_post: the credentials are form fields; HTTP Basic is not accepted.
    let (Some(client_id), Some(secret)) = (param("client_id"), param("client_secret")) else {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    };
    let Some(app) = sim.app(&client_id) else {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    };
    let grant_type = param("grant_type");
    let config: SageAppConfig = {
        let mut state = lock(&app.state);
        if state.config.client_secret != secret {
            state.rejected_refreshes += 1;
            return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
        }
        state.config.clone()
    };
    let now = Utc::now();
    let issued = match grant_type.as_deref() {
        Some("refresh_token") => match param("refresh_token") {
            Some(presented) => refresh(&sim, &app, &client_id, &presented, &config, now),
            None => Err("invalid_request"),
        },
        Some("authorization_code") => {
            let (code, redirect_uri, code_verifier) =
                (param("code"), param("redirect_uri"), param("code_verifier"));
            let request = CodeExchange {
                client_id: &client_id,
                code: code.as_deref(),
                redirect_uri: redirect_uri.as_deref(),
                code_verifier: code_verifier.as_deref(),
            };
            match super::consent::exchange(&sim, &request, config.lifetimes(), now) {
                Ok(issued) => {
                    lock(&app.state).code_exchanges += 1;
                    Ok(issued)
                }
                Err(error) => Err(error.error()),
            }
        }
        // Sage's guide: a grant type other than these two answers invalid_grant.
        _ => Err("invalid_grant"),
    };
    let issued = match issued {
        Ok(issued) => issued,
        Err(error) => return oauth_error(StatusCode::BAD_REQUEST, error),
    };
    json_response(
        StatusCode::OK,
        &json!({
            "access_token": issued.access_token,
            "expires_in": config.access_token_ttl_secs,
            "token_type": "bearer",
            "refresh_token": issued.refresh_token,
            "refresh_token_expires_in": config.refresh_token_ttl_secs,
            "scope": issued.scope.name(),
            "requested_by_id": issued.requested_by_id,
        }),
    )
}

/// `grant_type=refresh_token` for an authenticated client, counted on the app; `Err` is
/// the OAuth `error`.
fn refresh(
    sim: &SageSim,
    app: &App,
    client_id: &str,
    presented: &str,
    config: &SageAppConfig,
    now: DateTime<Utc>,
) -> Result<Issued, &'static str> {
    let issued = lock(&sim.shared.tokens).refresh(client_id, presented, config.lifetimes(), now);
    let mut state = lock(&app.state);
    match issued {
        Ok(issued) => {
            state.token_refreshes += 1;
            Ok(issued)
        }
        Err(refusal) => {
            state.rejected_refreshes += 1;
            if refusal == RefreshRefusal::Reused {
                state.reused_refresh_tokens += 1;
            }
            Err("invalid_grant")
        }
    }
}

// --- API ---

fn authenticate(
    sim: &SageSim,
    headers: &HeaderMap,
    now: DateTime<Utc>,
) -> Result<(String, Scope), Failure> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(|| Failure::unauthorized("The Authorization header is missing"))?;
    match lock(&sim.shared.tokens).bearer(bearer, now) {
        Bearer::Valid { client_id, scope } => Ok((client_id, scope)),
        Bearer::Expired => Err(Failure::unauthorized("The access token has expired")),
        Bearer::Unknown => Err(Failure::unauthorized("The access token is invalid")),
    }
}

/// The business `X-Business` names (the lead business without it), and all the token's.
fn resolve_business(
    sim: &SageSim,
    client_id: &str,
    headers: &HeaderMap,
) -> Result<(Arc<Business>, Vec<String>), Failure> {
    let app = sim
        .app(client_id)
        .ok_or_else(|| Failure::unauthorized("The access token is invalid"))?;
    let ids = lock(&app.state).business_ids();
    let wanted = match headers.get("x-business") {
        Some(value) => value.to_str().ok().map(|v| v.trim().to_ascii_lowercase()),
        None => ids.first().cloned(),
    };
    let denied = || {
        Failure::one(
            StatusCode::FORBIDDEN,
            "MultiUserAccessDenied",
            "The current user is not allowed to access that business.",
            "X-Business",
        )
    };
    match wanted {
        Some(id) if ids.contains(&id) => sim.business(&id).map(|b| (b, ids)).ok_or_else(denied),
        _ => Err(denied()),
    }
}

/// Counts the call and applies the limits; the fault that matched, if any.
fn admit(
    business: &Business,
    method: &Method,
    path: &str,
    now: DateTime<Utc>,
) -> Result<Option<Injection>, Failure> {
    let mut state = lock(&business.state);
    let injection = match state.gate.admit(now, method, path) {
        Admission::Refused { retry_after } => return Err(Failure::rate_limited(Some(retry_after))),
        Admission::Admitted(injection) => injection,
    };
    if let Admission::Refused { retry_after } = state.day_gate.admit(now, method, path) {
        return Err(Failure::rate_limited(Some(retry_after)));
    }
    if let Some(Injection::Status {
        status,
        retry_after,
    }) = &injection
        && *status == StatusCode::TOO_MANY_REQUESTS
    {
        match retry_after {
            Some(secs) => state.gate.told_to_wait(now, *secs),
            None => state.gate.limited_without_wait(),
        }
    }
    Ok(injection)
}

async fn api(
    State(sim): State<SageSim>,
    Path(rest): Path<String>,
    method: Method,
    uri: OriginalUri,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = Utc::now();
    let (client_id, scope) = match authenticate(&sim, &headers, now) {
        Ok(found) => found,
        Err(failure) => return failure.into_response(),
    };
    let (business, reachable) = match resolve_business(&sim, &client_id, &headers) {
        Ok(found) => found,
        Err(failure) => return failure.into_response(),
    };
    let injection = match admit(&business, &method, uri.path(), now) {
        Ok(injection) => injection,
        Err(failure) => return failure.into_response(),
    };
    if scope == Scope::ReadOnly && method != Method::GET {
        return Failure::access_denied().into_response();
    }
    let outcome =
        match fault_plan::before_handling(&SageFaults, &sim.shared.interrupt, injection).await {
            Ok(outcome) => outcome,
            Err(reply) => return reply,
        };
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    if parts == ["businesses"] && method == Method::GET {
        return after(
            outcome,
            Ok((StatusCode::OK, Some(businesses(&sim, &reachable)))),
        );
    }
    let answer = {
        let mut state = lock(&business.state);
        handle(
            &mut state,
            &method,
            &parts,
            raw_query.as_deref(),
            &body,
            Utc::now(),
        )
    };
    after(outcome, answer)
}

/// `GET /businesses`: what the token reaches, in Sage's list envelope.
fn businesses(sim: &SageSim, ids: &[String]) -> Value {
    let items: Vec<Value> = ids
        .iter()
        .filter_map(|id| sim.business(id))
        .map(|b| {
            let name = lock(&b.state).name.clone();
            json!({"id": b.id, "displayed_as": name, "$path": format!("/businesses/{}", b.id)})
        })
        .collect();
    json!({"$total": items.len(), "$page": 1, "$next": null, "$back": null,
           "$items_per_page": items.len(), "$items": items})
}

fn handle(
    state: &mut BusinessState,
    method: &Method,
    parts: &[&str],
    raw_query: Option<&str>,
    body: &Bytes,
    now: DateTime<Utc>,
) -> Result<Answer, Failure> {
    let Some(resource) = parts.first().and_then(|name| Resource::parse(name)) else {
        return Err(Failure::not_found(format!(
            "no resource /{}",
            parts.join("/")
        )));
    };
    let not_allowed = || {
        Failure::one(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{method} is not supported on /{}", parts.join("/")),
            "",
        )
    };
    match (method.as_str(), &parts[1..]) {
        ("GET", []) => {
            let query = list::parse(resource, raw_query)?;
            Ok((
                StatusCode::OK,
                Some(list::list(&state.data, resource, &query)),
            ))
        }
        ("POST", []) if resource.creatable() => create(state, resource, body, now),
        ("GET", [id]) => state
            .data
            .get(resource, &id.to_ascii_lowercase())
            .map(|stored| (StatusCode::OK, Some(Value::Object(stored.body.clone()))))
            .ok_or_else(|| not_found(resource, id)),
        ("PUT", [id]) if resource.updatable() => update(state, resource, id, body, now),
        ("DELETE", [id]) if resource.deletable() => {
            let at = state.data.stamp(now);
            if state.data.delete(resource, &id.to_ascii_lowercase(), at) {
                Ok((StatusCode::NO_CONTENT, None))
            } else {
                Err(not_found(resource, id))
            }
        }
        (_, [] | [_]) => Err(not_allowed()),
        _ => Err(Failure::not_found(format!(
            "no resource /{}",
            parts.join("/")
        ))),
    }
}

fn not_found(resource: Resource, id: &str) -> Failure {
    Failure::not_found(format!("No {} with id {id} was found", resource.singular()))
}

fn parse_body(resource: Resource, body: &Bytes) -> Result<serde_json::Map<String, Value>, Failure> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        Failure::bad_param(resource.singular(), format!("the body is not JSON: {e}"))
    })?;
    namespace(resource, &value)
}

fn create(
    state: &mut BusinessState,
    resource: Resource,
    body: &Bytes,
    now: DateTime<Utc>,
) -> Result<Answer, Failure> {
    let mut input = parse_body(resource, body)?;
    let key = match input.remove("idempotency_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if fields::is_hex32(&id) => {
            Some(format!("{}:{}", resource.name(), id.to_ascii_lowercase()))
        }
        Some(_) => {
            return Err(Failure::invalid(vec![invalid(
                "idempotency_id",
                "idempotency_id must be a 32 character hyphenless GUID",
            )]));
        }
    };
    // The business stays locked from claim to settle: a repeat never finds its id in flight.
    let token = match &key {
        Some(key) => match state.replays.claim(key, None, TimeDelta::MAX, now) {
            Claim::Replay((status, body)) => return Ok((status, Some(body))),
            Claim::Proceed { token } => Some(token),
            Claim::InFlight | Claim::Mismatch => None,
        },
        None => None,
    };
    let reference = resource
        .reference_field()
        .and_then(|field| fields::text(&input, field))
        .map(str::to_owned);
    let answer = model::write(&mut state.data, resource, None, input, Origin::Api, now).map(|id| {
        state.data.creates[resource.index()] += 1;
        if let Some(reference) = reference {
            *state
                .data
                .creates_by_reference
                .entry(format!("{}:{reference}", resource.name()))
                .or_default() += 1;
        }
        let body = state
            .data
            .get(resource, &id)
            .map(|stored| Value::Object(stored.body.clone()))
            .unwrap_or(Value::Null);
        (StatusCode::CREATED, body)
    });
    if let (Some(key), Some(token)) = (&key, token) {
        let kept = answer.as_ref().ok().cloned();
        if kept.is_some() {
            state.replays.record_creates(key, 1);
        }
        state.replays.settle(key, token, kept, now);
    }
    answer.map(|(status, body)| (status, Some(body)))
}

fn update(
    state: &mut BusinessState,
    resource: Resource,
    id: &str,
    body: &Bytes,
    now: DateTime<Utc>,
) -> Result<Answer, Failure> {
    let id = id.to_ascii_lowercase();
    if state.data.get(resource, &id).is_none() {
        return Err(not_found(resource, &id));
    }
    let input = parse_body(resource, body)?;
    model::write(
        &mut state.data,
        resource,
        Some(&id),
        input,
        Origin::Api,
        now,
    )?;
    state.data.updates[resource.index()] += 1;
    let body = state
        .data
        .get(resource, &id)
        .map(|stored| Value::Object(stored.body.clone()));
    Ok((StatusCode::OK, body))
}

// --- admin ---

fn admin_error(status: StatusCode, error: impl std::fmt::Display) -> Response {
    json_response(status, &json!({"error": error.to_string()}))
}

async fn admin_add_app(State(sim): State<SageSim>, body: Bytes) -> Response {
    match serde_json::from_slice::<SageAppConfig>(&body) {
        Ok(config) => match sim.try_add_app(config) {
            Ok(()) => json_response(StatusCode::CREATED, &json!({"ok": true})),
            Err(e) => admin_error(StatusCode::BAD_REQUEST, e),
        },
        Err(e) => admin_error(StatusCode::BAD_REQUEST, e),
    }
}

async fn admin_expire_tokens(
    State(sim): State<SageSim>,
    Path(client_id): Path<String>,
) -> Response {
    json_response(
        StatusCode::OK,
        &json!({"expired": sim.expire_access_tokens(&client_id)}),
    )
}

async fn admin_revoke_tokens(
    State(sim): State<SageSim>,
    Path(client_id): Path<String>,
) -> Response {
    json_response(
        StatusCode::OK,
        &json!({"revoked": sim.revoke_refresh_tokens(&client_id)}),
    )
}

async fn admin_stats(State(sim): State<SageSim>, Path(business): Path<String>) -> Response {
    match sim.stats(&business) {
        Some(stats) => json_response(
            StatusCode::OK,
            &serde_json::to_value(stats).unwrap_or(Value::Null),
        ),
        None => admin_error(StatusCode::NOT_FOUND, format!("no business {business}")),
    }
}

async fn admin_inject(
    State(sim): State<SageSim>,
    Path(business): Path<String>,
    body: Bytes,
) -> Response {
    match serde_json::from_slice::<Fault>(&body) {
        Ok(fault) => match sim.try_inject(&business, fault) {
            Ok(()) => json_response(StatusCode::CREATED, &json!({"ok": true})),
            Err(e) => admin_error(StatusCode::BAD_REQUEST, e),
        },
        Err(e) => admin_error(StatusCode::BAD_REQUEST, e),
    }
}

async fn admin_records(
    State(sim): State<SageSim>,
    Path((business, resource)): Path<(String, String)>,
) -> Response {
    json_response(
        StatusCode::OK,
        &Value::Array(sim.records(&business, &resource)),
    )
}

async fn admin_upsert(
    State(sim): State<SageSim>,
    Path((business, resource)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    match serde_json::from_slice::<Value>(&body) {
        Ok(record) => match sim.upsert_record(&business, &resource, record) {
            Ok(id) => json_response(StatusCode::CREATED, &json!({"id": id})),
            Err(e) => admin_error(StatusCode::BAD_REQUEST, e),
        },
        Err(e) => admin_error(StatusCode::BAD_REQUEST, e),
    }
}
