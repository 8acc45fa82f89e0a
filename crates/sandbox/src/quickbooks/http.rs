//! The QuickBooks simulator's HTTP surface: the OAuth 2 authorization and token endpoints
//! (the authorization code's side in `consent.rs`), the Accounting API pipeline (bearer token
//! → realm → limits → faults → `requestid` replay → handling) and the loopback admin
//! endpoints.
//!
//! Errors take Intuit's shapes: `{"error":"invalid_grant"}` from the token endpoint and
//! `{"Fault":{"Error":[{"Message","Detail","code","element"}],"type":…},"time":…}` from the
//! API (`ValidationFault` for refused records, `AUTHENTICATION` for tokens and realms,
//! `ThrottleExceeded` for 429s, `SystemFault` for 5xx).

use super::model::{Kind, QbError, RealmData};
use super::query;
use super::tokens::Refusal;
use super::{QuickBooksAppConfig, QuickBooksSim, Realm, RealmState, lock, qb_time};
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
use base64::Engine;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// Intuit: a `requestid` has at most 50 characters, 36 on `/batch`; a `bId` at most 10.
const MAX_REQUEST_ID: usize = 50;
const MAX_BATCH_REQUEST_ID: usize = 36;
const MAX_BID: usize = 10;
/// CDC reaches back 30 days and answers at most 1,000 objects.
const CDC_DAYS: i64 = 30;
const CDC_MAX_OBJECTS: usize = 1000;

/// The routes, relative to where they are nested (`/quickbooks`).
pub(crate) fn routes(sim: QuickBooksSim) -> Router {
    Router::new()
        .route("/connect/oauth2", get(super::consent::authorize))
        .route("/oauth2/v1/tokens/bearer", post(token))
        .route("/v3/company/{realm}/{*rest}", any(api))
        .route("/_sandbox/apps", post(admin_add_app))
        .route(
            "/_sandbox/apps/{client_id}/expire-access-tokens",
            post(admin_expire_tokens),
        )
        .route("/_sandbox/realms/{realm}/stats", get(admin_stats))
        .route("/_sandbox/realms/{realm}/faults", post(admin_inject))
        .route(
            "/_sandbox/realms/{realm}/records/{entity}",
            get(admin_records).post(admin_upsert),
        )
        .fallback(|uri: axum::http::Uri| async move {
            answer(
                StatusCode::NOT_FOUND,
                fault(
                    "ValidationFault",
                    &QbError::new(
                        "610",
                        "Object Not Found",
                        format!("no resource at {}", uri.path()),
                    ),
                ),
            )
        })
        .with_state(sim)
}

// --- answers ---

fn answer(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn now_text() -> String {
    qb_time(Utc::now())
}

fn fault(kind: &str, error: &QbError) -> Value {
    json!({"Fault": {"Error": [error.json()], "type": kind}, "time": now_text()})
}

fn validation(error: &QbError) -> Response {
    answer(StatusCode::BAD_REQUEST, fault("ValidationFault", error))
}

fn authentication_failed(detail: &str) -> Response {
    let mut response = answer(
        StatusCode::UNAUTHORIZED,
        fault(
            "AUTHENTICATION",
            &QbError::new(
                "3200",
                "message=AuthenticationFailed; errorCode=003200; statusCode=401",
                detail,
            ),
        ),
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer realm=\"Intuit\", error=\"invalid_token\""),
    );
    response
}

fn throttled(retry_after: Option<u64>) -> Response {
    let mut response = answer(
        StatusCode::TOO_MANY_REQUESTS,
        fault(
            "ThrottleExceeded",
            &QbError::new(
                "3001",
                "message=ThrottleExceeded; errorCode=003001; statusCode=429",
                "The request limit was reached.",
            ),
        ),
    );
    if let Some(secs) = retry_after
        && let Ok(v) = axum::http::HeaderValue::from_str(&secs.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

fn oauth_error(status: StatusCode, error: &str) -> Response {
    answer(status, json!({ "error": error }))
}

fn status_fault(status: StatusCode, retry_after: Option<u64>) -> Response {
    match status.as_u16() {
        429 => throttled(retry_after),
        401 => authentication_failed("Token expired (injected)"),
        s if s >= 500 => answer(
            status,
            fault(
                "SystemFault",
                &QbError::new(
                    "10000",
                    "An application error has occurred while processing your request",
                    "System Failure Error: injected fault",
                ),
            ),
        ),
        _ => answer(
            status,
            fault(
                "ValidationFault",
                &QbError::new(
                    "2010",
                    "Request has invalid or unsupported property",
                    "injected fault",
                ),
            ),
        ),
    }
}

/// QuickBooks' answers to injected faults.
struct QuickBooksFaults;

impl FaultAnswers for QuickBooksFaults {
    type Reply = Response;

    fn status(&self, status: StatusCode, retry_after: Option<u64>) -> Response {
        status_fault(status, retry_after)
    }

    fn shutting_down(&self) -> Response {
        answer(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "sandbox shutting down"}),
        )
    }
}

/// Applies a fault's part that comes before handling; `Err` is the answer instead.
async fn before(sim: &QuickBooksSim, injection: Option<Injection>) -> Result<Outcome, Response> {
    fault_plan::before_handling(&QuickBooksFaults, &sim.shared.interrupt, injection).await
}

fn after(after: Outcome, status: StatusCode, body: Value) -> Response {
    match after {
        Outcome::AsIs => answer(status, body),
        Outcome::Truncate => {
            let text = body.to_string();
            let half = text.len() / 2;
            let cut: String = text.chars().take(half).collect();
            (status, [(header::CONTENT_TYPE, "application/json")], cut).into_response()
        }
        Outcome::Drop => answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            fault(
                "SystemFault",
                &QbError::new(
                    "10000",
                    "An application error has occurred while processing your request",
                    "System Failure Error: the response was lost",
                ),
            ),
        ),
    }
}

// --- token endpoint ---

fn basic_client(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

async fn token(
    State(sim): State<QuickBooksSim>,
    method: Method,
    uri: OriginalUri,
    headers: HeaderMap,
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
    // Intuit authenticates the client with HTTP Basic only.
    let Some((client_id, secret)) = basic_client(&headers) else {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    };
    let Some(app) = sim.app(&client_id) else {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    };
    let grant_type = param("grant_type");
    let (config, injection) = {
        let mut state = lock(&app.state);
        if state.config.client_secret != secret {
            if grant_type.as_deref() == Some("authorization_code") {
                state.rejected_code_exchanges += 1;
            } else {
                state.rejected_refreshes += 1;
            }
            return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
        }
        let injection = state.token_faults.take(&method, uri.path());
        (state.config.clone(), injection)
    };
    let then = match before(&sim, injection).await {
        Ok(a) => a,
        Err(reply) => return reply,
    };
    let issued = match grant_type.as_deref() {
        Some("refresh_token") => {
            let Some(refresh_token) = param("refresh_token") else {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
            };
            let issued = lock(&sim.shared.tokens).refresh(
                &client_id,
                &refresh_token,
                config.lifetimes(),
                Utc::now(),
            );
            let mut state = lock(&app.state);
            match issued {
                Ok(issued) => {
                    state.token_refreshes += 1;
                    issued
                }
                Err(()) => {
                    state.rejected_refreshes += 1;
                    return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
                }
            }
        }
        Some("authorization_code") => {
            let (code, redirect_uri, code_verifier) =
                (param("code"), param("redirect_uri"), param("code_verifier"));
            let request = CodeExchange {
                client_id: &client_id,
                code: code.as_deref(),
                redirect_uri: redirect_uri.as_deref(),
                code_verifier: code_verifier.as_deref(),
            };
            let issued = super::consent::exchange(&sim, &request, config.lifetimes(), Utc::now());
            let mut state = lock(&app.state);
            match issued {
                Ok(issued) => {
                    state.code_exchanges += 1;
                    issued
                }
                Err(error) => {
                    state.rejected_code_exchanges += 1;
                    return oauth_error(StatusCode::BAD_REQUEST, error.error());
                }
            }
        }
        _ => return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type"),
    };
    after(
        then,
        StatusCode::OK,
        json!({
            "token_type": "bearer",
            "access_token": issued.access_token,
            "expires_in": issued.expires_in,
            "refresh_token": issued.refresh_token,
            "x_refresh_token_expires_in": issued.refresh_expires_in,
        }),
    )
}

// --- API ---

/// Gives the realm's in-flight slot back however the request ends (a client that gives up
/// drops the handler).
struct InFlight(Arc<Realm>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = lock(&self.0.state);
        state.in_flight = state.in_flight.saturating_sub(1);
    }
}

fn query_params(raw: Option<&str>) -> HashMap<String, String> {
    raw.map(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .into_owned()
            .collect()
    })
    .unwrap_or_default()
}

async fn api(
    State(sim): State<QuickBooksSim>,
    Path((realm_id, rest)): Path<(String, String)>,
    method: Method,
    uri: OriginalUri,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = Utc::now();
    // Logged on arrival, whatever the answer: tests check when a client called.
    sim.note_request(&realm_id, now, method.as_str(), &rest);
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(bearer) = bearer else {
        return authentication_failed("Authorization header missing");
    };
    let realms = match lock(&sim.shared.tokens).authorize(bearer, now) {
        Ok((_, realms)) => realms,
        Err(Refusal::Expired) => return authentication_failed("Token expired"),
        Err(Refusal::Unknown) => return authentication_failed("Token revoked or invalid"),
    };
    let realm = match sim.realm(&realm_id) {
        Some(realm) if realms.contains(&realm_id) => realm,
        _ => {
            return answer(
                StatusCode::FORBIDDEN,
                fault(
                    "AUTHENTICATION",
                    &QbError::new(
                        "3100",
                        "message=ApplicationAuthorizationFailed; errorCode=003100; statusCode=403",
                        "the token is not authorized for this company",
                    ),
                ),
            );
        }
    };
    let params = query_params(raw_query.as_deref());
    let is_batch = rest == "batch";
    let injection = {
        let mut state = lock(&realm.state);
        let injection = match state.gate.admit(now, &method, uri.path()) {
            Admission::Refused { .. } => return throttled(None),
            Admission::Admitted(injection) => injection,
        };
        if let Some(limit) = state.concurrent_limit
            && state.in_flight >= limit
        {
            state.gate.limited_without_wait();
            return throttled(None);
        }
        if is_batch {
            state.batch_requests += 1;
            if let Admission::Refused { .. } = state.batch_gate.admit(now, &method, uri.path()) {
                return throttled(None);
            }
        }
        match &injection {
            Some(Injection::Status {
                status,
                retry_after: Some(secs),
            }) if status.as_u16() == 429 => {
                state.gate.told_to_wait(now, *secs);
            }
            Some(Injection::Status { status, .. }) if status.as_u16() == 429 => {
                state.gate.limited_without_wait()
            }
            _ => {}
        }
        state.in_flight += 1;
        state.max_in_flight = state.max_in_flight.max(u64::from(state.in_flight));
        injection
    };
    let _slot = InFlight(realm.clone());
    let then = match before(&sim, injection).await {
        Ok(a) => a,
        Err(reply) => return reply,
    };

    let request_id = params.get("requestid").cloned();
    if let Some(id) = &request_id {
        let max = if is_batch {
            MAX_BATCH_REQUEST_ID
        } else {
            MAX_REQUEST_ID
        };
        if id.is_empty() || id.chars().count() > max {
            return validation(&QbError::new(
                "2010",
                "Request has invalid or unsupported property",
                format!("requestid must have 1 to {max} characters"),
            ));
        }
    }
    let mut state = lock(&realm.state);
    let writes = method == Method::POST && rest != "query";
    // The realm stays locked from claim to settle, so a repeat never finds its key in flight.
    let claim = match request_id.filter(|_| writes) {
        Some(id) => match state.answers.claim(&id, None, TimeDelta::MAX, now) {
            Claim::Replay((status, body)) => return after(then, status, body),
            Claim::Proceed { token } => Some((id, token)),
            // Neither happens under the lock with the key alone compared; were a handler to
            // panic mid-way, its key would be left in flight and a repeat handled afresh.
            Claim::InFlight | Claim::Mismatch => None,
        },
        None => None,
    };
    let creates_before: u64 = state.data.creates.iter().sum();
    let (status, body) = handle(&mut state, &realm.id, &method, &rest, &params, &body, now);
    if let Some((id, token)) = claim {
        let created = state.data.creates.iter().sum::<u64>() - creates_before;
        state.answers.record_creates(&id, created);
        state
            .answers
            .settle(&id, token, Some((status, body.clone())), now);
    }
    after(then, status, body)
}

fn handle(
    state: &mut RealmState,
    realm_id: &str,
    method: &Method,
    rest: &str,
    params: &HashMap<String, String>,
    body: &Bytes,
    now: DateTime<Utc>,
) -> (StatusCode, Value) {
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let bad = |e: QbError| (StatusCode::BAD_REQUEST, fault("ValidationFault", &e));
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["companyinfo", id]) if *id == realm_id => (
            StatusCode::OK,
            json!({"CompanyInfo": {"CompanyName": state.company_name, "LegalName": state.company_name,
                   "Id": "1", "SyncToken": "0", "Country": "US", "domain": "QBO", "sparse": false},
                   "time": now_text()}),
        ),
        ("GET" | "POST", ["query"]) => {
            state.query_requests += 1;
            let text = if method == Method::GET {
                params.get("query").cloned().unwrap_or_default()
            } else {
                String::from_utf8_lossy(body).into_owned()
            };
            match run_query(&state.data, &text) {
                Ok(response) => (
                    StatusCode::OK,
                    json!({"QueryResponse": response, "time": now_text()}),
                ),
                Err(e) => bad(e),
            }
        }
        ("POST", ["batch"]) => batch(state, params.contains_key("requestid"), body, now),
        ("GET", ["cdc"]) => {
            state.cdc_requests += 1;
            cdc(&state.data, params, now)
        }
        ("POST", [entity]) => {
            let Some(kind) = Kind::parse(entity) else {
                return unsupported(entity);
            };
            if let Some(op) = params.get("operation")
                && op != "update"
            {
                return bad(QbError::new(
                    "2010",
                    "Request has invalid or unsupported property",
                    format!("operation={op} is not supported by this sandbox"),
                ));
            }
            let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(body) else {
                return bad(QbError::new(
                    "2010",
                    "Request has invalid or unsupported property",
                    "the body is not a JSON object",
                ));
            };
            let result = if object.contains_key("Id") {
                state.data.update(kind, &object, now)
            } else {
                state.data.create(kind, &object, now)
            };
            match result {
                Ok(entity) => (
                    StatusCode::OK,
                    json!({ kind.name(): entity, "time": now_text() }),
                ),
                Err(e) => bad(e),
            }
        }
        ("GET", [entity, id]) => {
            let Some(kind) = Kind::parse(entity) else {
                return unsupported(entity);
            };
            match state.data.get(kind, id) {
                Some(r) => (
                    StatusCode::OK,
                    json!({ kind.name(): r.body, "time": now_text() }),
                ),
                None => bad(QbError::new(
                    "610",
                    "Object Not Found",
                    format!(
                        "Object Not Found : Something you're trying to use has been made inactive. Check the fields with accounts, customers, items, vendors or employees. ({} {id})",
                        kind.name()
                    ),
                )),
            }
        }
        _ => unsupported(rest),
    }
}

fn unsupported(what: &str) -> (StatusCode, Value) {
    (
        StatusCode::BAD_REQUEST,
        fault(
            "ValidationFault",
            &QbError::new(
                "4001",
                "Unsupported Operation",
                format!("Operation {what} is not supported."),
            ),
        ),
    )
}

fn run_query(data: &RealmData, text: &str) -> Result<Value, QbError> {
    let q = query::parse(text)?;
    let all: Vec<Value> = data
        .all(q.kind)
        .map(|r| Value::Object(r.body.clone()))
        .collect();
    let found = q.run(all);
    if found.is_empty() {
        return Ok(json!({}));
    }
    Ok(json!({ q.kind.name(): found.clone(), "startPosition": q.start, "maxResults": found.len() }))
}

fn batch(
    state: &mut RealmState,
    with_request_id: bool,
    body: &Bytes,
    now: DateTime<Utc>,
) -> (StatusCode, Value) {
    let bad = |e: QbError| (StatusCode::BAD_REQUEST, fault("ValidationFault", &e));
    let items = match serde_json::from_slice::<Value>(body) {
        Ok(v) => match v.get("BatchItemRequest").and_then(Value::as_array) {
            Some(items) => items.clone(),
            None => {
                return bad(QbError::new(
                    "2020",
                    "Required param missing, need to supply the required value for the API",
                    "Required parameter BatchItemRequest is missing in the request",
                ));
            }
        },
        Err(_) => {
            return bad(QbError::new(
                "2010",
                "Request has invalid or unsupported property",
                "the body is not JSON",
            ));
        }
    };
    if items.is_empty() || items.len() > state.max_batch_items {
        return bad(QbError::new(
            "10002",
            "Batch request size exceeded",
            format!(
                "A batch request carries 1 to {} BatchItemRequest, not {}",
                state.max_batch_items,
                items.len()
            ),
        ));
    }
    let mut seen = Vec::new();
    for item in &items {
        let bid = item.get("bId").and_then(Value::as_str).unwrap_or("");
        if bid.is_empty()
            || seen.contains(&bid)
            || (with_request_id && bid.chars().count() > MAX_BID)
        {
            return bad(QbError::new(
                "2010",
                "Request has invalid or unsupported property",
                format!(
                    "every bId must be unique and non-empty (at most {MAX_BID} characters with a requestid): {bid:?}"
                ),
            ));
        }
        seen.push(bid);
    }
    // Serially, in order; each item succeeds or fails on its own.
    let responses: Vec<Value> = items
        .iter()
        .map(|item| {
            let bid = item.get("bId").cloned().unwrap_or(Value::Null);
            let outcome = batch_item(state, item, now);
            match outcome {
                Ok((key, value)) => json!({ "bId": bid, key: value }),
                Err(e) => {
                    json!({ "bId": bid, "Fault": {"Error": [e.json()], "type": "ValidationFault"} })
                }
            }
        })
        .collect();
    (
        StatusCode::OK,
        json!({"BatchItemResponse": responses, "time": now_text()}),
    )
}

fn batch_item(
    state: &mut RealmState,
    item: &Value,
    now: DateTime<Utc>,
) -> Result<(String, Value), QbError> {
    if let Some(text) = item.get("Query").and_then(Value::as_str) {
        return run_query(&state.data, text).map(|v| ("QueryResponse".to_owned(), v));
    }
    let object = item.as_object().cloned().unwrap_or_default();
    let (kind, entity) = object
        .iter()
        .find_map(|(k, v)| {
            Kind::parse(k)
                .filter(|kind| kind.name() == k)
                .zip(v.as_object())
        })
        .ok_or_else(|| {
            QbError::new(
                "2020",
                "Required param missing, need to supply the required value for the API",
                "a BatchItemRequest carries one of Item, Customer, Invoice, Estimate or Query",
            )
        })?;
    let result = match item.get("operation").and_then(Value::as_str) {
        Some("create") => state.data.create(kind, entity, now)?,
        Some("update") => state.data.update(kind, entity, now)?,
        other => {
            return Err(QbError::new(
                "2010",
                "Request has invalid or unsupported property",
                format!("operation {other:?} is not supported by this sandbox (create, update)"),
            ));
        }
    };
    Ok((kind.name().to_owned(), result))
}

fn cdc(
    data: &RealmData,
    params: &HashMap<String, String>,
    now: DateTime<Utc>,
) -> (StatusCode, Value) {
    let bad = |e: QbError| (StatusCode::BAD_REQUEST, fault("ValidationFault", &e));
    let Some(entities) = params.get("entities").filter(|e| !e.is_empty()) else {
        return bad(QbError::new(
            "2020",
            "Required param missing, need to supply the required value for the API",
            "Required parameter entities is missing in the request",
        ));
    };
    let Some(since) = params.get("changedSince") else {
        return bad(QbError::new(
            "2020",
            "Required param missing, need to supply the required value for the API",
            "Required parameter changedSince is missing in the request",
        ));
    };
    let since = match DateTime::parse_from_rfc3339(since) {
        Ok(t) => t.with_timezone(&Utc),
        Err(_) => match chrono::NaiveDate::parse_from_str(since, "%Y-%m-%d") {
            Ok(d) => d.and_hms_opt(0, 0, 0).map(|t| t.and_utc()).unwrap_or(now),
            Err(_) => {
                return bad(QbError::new(
                    "2010",
                    "Request has invalid or unsupported property",
                    format!("changedSince {since:?} is not a date-time"),
                ));
            }
        },
    };
    if since < now - TimeDelta::days(CDC_DAYS) {
        return bad(QbError::new(
            "2010",
            "Request has invalid or unsupported property",
            "changedSince cannot be more than 30 days ago",
        ));
    }
    let mut budget = CDC_MAX_OBJECTS;
    let mut responses = Vec::new();
    for name in entities.split(',') {
        let Some(kind) = Kind::parse(name.trim()) else {
            return bad(QbError::new(
                "2010",
                "Request has invalid or unsupported property",
                format!("entity {name} is not supported by CDC here"),
            ));
        };
        let changed: Vec<Value> = data
            .changed_since(kind, since)
            .into_iter()
            .take(budget)
            .map(|(_, v)| v)
            .collect();
        budget -= changed.len();
        if changed.is_empty() {
            responses.push(json!({}));
        } else {
            let n = changed.len();
            responses.push(json!({ kind.name(): changed, "startPosition": 1, "maxResults": n, "totalCount": n }));
        }
    }
    (
        StatusCode::OK,
        json!({"CDCResponse": [{"QueryResponse": responses}], "time": now_text()}),
    )
}

// --- admin ---

fn admin_error(status: StatusCode, error: impl std::fmt::Display) -> Response {
    answer(status, json!({"error": error.to_string()}))
}

async fn admin_add_app(State(sim): State<QuickBooksSim>, body: Bytes) -> Response {
    match serde_json::from_slice::<QuickBooksAppConfig>(&body) {
        Ok(config) => match sim.try_add_app(config) {
            Ok(()) => answer(StatusCode::CREATED, json!({"ok": true})),
            Err(e) => admin_error(StatusCode::BAD_REQUEST, e),
        },
        Err(e) => admin_error(StatusCode::BAD_REQUEST, e),
    }
}

async fn admin_expire_tokens(
    State(sim): State<QuickBooksSim>,
    Path(client_id): Path<String>,
) -> Response {
    answer(
        StatusCode::OK,
        json!({"expired": sim.expire_access_tokens(&client_id)}),
    )
}

async fn admin_stats(State(sim): State<QuickBooksSim>, Path(realm): Path<String>) -> Response {
    match sim.stats(&realm) {
        Some(stats) => answer(
            StatusCode::OK,
            serde_json::to_value(stats).unwrap_or(Value::Null),
        ),
        None => admin_error(StatusCode::NOT_FOUND, format!("no realm {realm}")),
    }
}

async fn admin_inject(
    State(sim): State<QuickBooksSim>,
    Path(realm): Path<String>,
    body: Bytes,
) -> Response {
    match serde_json::from_slice::<Fault>(&body) {
        Ok(f) => match sim.try_inject(&realm, f) {
            Ok(()) => answer(StatusCode::CREATED, json!({"ok": true})),
            Err(e) => admin_error(StatusCode::BAD_REQUEST, e),
        },
        Err(e) => admin_error(StatusCode::BAD_REQUEST, e),
    }
}

async fn admin_records(
    State(sim): State<QuickBooksSim>,
    Path((realm, entity)): Path<(String, String)>,
) -> Response {
    answer(StatusCode::OK, Value::Array(sim.records(&realm, &entity)))
}

async fn admin_upsert(
    State(sim): State<QuickBooksSim>,
    Path((realm, entity)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    match serde_json::from_slice::<Value>(&body) {
        Ok(record) => match sim.try_upsert_record(&realm, &entity, record) {
            Ok(id) => answer(StatusCode::CREATED, json!({"Id": id})),
            Err(e) => admin_error(StatusCode::BAD_REQUEST, e),
        },
        Err(e) => admin_error(StatusCode::BAD_REQUEST, e),
    }
}
