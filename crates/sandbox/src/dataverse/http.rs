//! The Dataverse simulator's HTTP surface: the Entra ID token endpoint, the Web API pipeline
//! (bearer token → environment → service protection limits → faults → handling) and the
//! loopback admin endpoints.
//!
//! Errors take Microsoft's shapes: `{"error":"invalid_client","error_description":"AADSTS…"}`
//! from the token endpoint, `{"error":{"code":"0x…","message":"…"}}` from the Web API, and a
//! `401` with an empty body and `WWW-Authenticate: Bearer …` for a missing or expired token.

use super::batch::{self, InnerRequest, InnerResponse};
use super::model::{self, DvError, TableDef, Written};
use super::query::{CollectionQuery, skiptoken};
use super::{DataverseEnvConfig, DataverseSim, Env, lock, read};
use crate::fault_plan::{self, FaultAnswers, Outcome};
use crate::faults::{Admission, Fault, Injection};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use base64::Engine;
use chrono::{TimeDelta, Utc};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use uuid::Uuid;

/// Dataverse's page size when the client asks for none.
const DEFAULT_PAGE_SIZE: usize = 5000;
const API_PREFIX: &str = "/api/data/v9.2";

pub(crate) fn routes(sim: DataverseSim) -> Router {
    Router::new()
        .route("/login/{tenant}/oauth2/v2.0/token", post(token))
        .route("/env/{org}/api/data/v9.2/{*rest}", any(api))
        .route("/_sandbox/environments", post(admin_add))
        .route("/_sandbox/environments/{org}/stats", get(admin_stats))
        .route("/_sandbox/environments/{org}/faults", post(admin_inject))
        .route(
            "/_sandbox/environments/{org}/expire-access-tokens",
            post(admin_expire),
        )
        .route(
            "/_sandbox/environments/{org}/records/{set}",
            get(admin_records).post(admin_upsert),
        )
        .fallback(|uri: axum::http::Uri| async move {
            error(&DvError::new(
                404,
                "0x80060888",
                format!("Resource not found for the segment '{}'.", uri.path()),
            ))
        })
        .with_state(sim)
}

// --- answers ---

fn json_answer(status: StatusCode, body: &Value) -> Response {
    let mut response = (
        status,
        [(
            header::CONTENT_TYPE,
            "application/json; odata.metadata=minimal",
        )],
        body.to_string(),
    )
        .into_response();
    response
        .headers_mut()
        .insert("OData-Version", HeaderValue::from_static("4.0"));
    response
}

fn error(e: &DvError) -> Response {
    json_answer(
        StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
        &json!({"error": {"code": e.code, "message": e.message}}),
    )
}

fn unauthorized(description: &str) -> Response {
    let mut response = StatusCode::UNAUTHORIZED.into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "Bearer error=\"invalid_token\", error_description=\"{description}\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\""
    )) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    response
}

fn throttled(code: &'static str, message: String, retry_after: Option<u64>) -> Response {
    let mut response = error(&DvError::new(429, code, message));
    if let Some(secs) = retry_after
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

fn status_fault(status: StatusCode, retry_after: Option<u64>) -> Response {
    match status.as_u16() {
        429 => throttled(
            "0x80072322",
            "Number of requests exceeded the limit (injected).".into(),
            retry_after,
        ),
        401 => unauthorized("injected"),
        s if s >= 500 => error(&DvError::new(
            s,
            "0x80040216",
            "An unexpected error occurred (injected).",
        )),
        s => error(&DvError::new(
            s,
            "0x80040203",
            "Invalid argument (injected).",
        )),
    }
}

/// Dataverse's answers to injected faults.
struct DataverseFaults;

impl FaultAnswers for DataverseFaults {
    type Reply = Response;

    fn status(&self, status: StatusCode, retry_after: Option<u64>) -> Response {
        status_fault(status, retry_after)
    }

    fn shutting_down(&self) -> Response {
        error(&DvError::new(503, "0x80040216", "sandbox shutting down"))
    }
}

async fn before(sim: &DataverseSim, injection: Option<Injection>) -> Result<Outcome, Response> {
    fault_plan::before_handling(&DataverseFaults, &sim.shared.interrupt, injection).await
}

fn after(then: Outcome, response: Response) -> Response {
    match then {
        Outcome::AsIs => response,
        Outcome::Drop => error(&DvError::new(
            500,
            "0x80040216",
            "An unexpected error occurred (the response was lost).",
        )),
        Outcome::Truncate => {
            let (parts, body) = response.into_parts();
            let status = parts.status;
            let mut cut = parts.headers.clone();
            cut.remove(header::CONTENT_LENGTH);
            // An empty 204 cannot be cut: answer half of an error body instead.
            let text = if status == StatusCode::NO_CONTENT {
                "{\"error\":{\"code\":\"0x8004".to_owned()
            } else {
                drop(body);
                "{\"value\":[{\"@odata.etag\":\"W/".to_owned()
            };
            let mut response = (StatusCode::OK, text).into_response();
            *response.headers_mut() = cut;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
    }
}

// --- token endpoint ---

fn oauth_error(status: StatusCode, error: &str, aadsts: u32, description: &str) -> Response {
    json_answer(
        status,
        &json!({
            "error": error,
            "error_description": format!("AADSTS{aadsts}: {description}"),
            "error_codes": [aadsts],
            "timestamp": Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string(),
            "trace_id": Uuid::new_v4().to_string(),
            "correlation_id": Uuid::new_v4().to_string(),
        }),
    )
}

/// `https://{org}.crm.dynamics.com/.default` → org; here the environment URL ends in
/// `/env/{org}`.
fn scope_org(scope: &str) -> Option<String> {
    let resource = scope.trim().strip_suffix("/.default")?;
    let resource = resource.trim_end_matches('/');
    let org = resource.rsplit('/').next()?;
    resource
        .strip_suffix(org)?
        .ends_with("/env/")
        .then(|| org.to_owned())
}

async fn token(
    State(sim): State<DataverseSim>,
    Path(tenant): Path<String>,
    method: Method,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    // Entra accepts the secret in the body (client_secret_post) or as HTTP Basic.
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|v| v.split_once(':').map(|(a, b)| (a.to_owned(), b.to_owned())));
    let (client_id, secret) = match (param("client_id"), param("client_secret"), basic) {
        (Some(id), Some(secret), _) => (id, secret),
        (_, _, Some((id, secret))) => (id, secret),
        _ => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_id' and 'client_secret'.",
            );
        }
    };
    if param("grant_type").as_deref() != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    let env = param("scope")
        .as_deref()
        .and_then(scope_org)
        .and_then(|org| sim.env(&org));
    let envs: Vec<Arc<Env>> = read(&sim.shared.envs).values().cloned().collect();
    let known_client = envs.iter().any(|e| {
        let s = lock(&e.state);
        s.config.client_id == client_id && s.config.tenant_id == tenant
    });
    let Some(env) = env.filter(|e| {
        let s = lock(&e.state);
        s.config.client_id == client_id && s.config.tenant_id == tenant
    }) else {
        return if known_client {
            oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                1002012,
                "The provided value for scope is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).",
            )
        } else {
            oauth_error(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                700016,
                &format!(
                    "Application with identifier '{client_id}' was not found in the directory '{tenant}'."
                ),
            )
        };
    };
    let (ttl, injection) = {
        let mut state = lock(&env.state);
        if state.config.client_secret != secret {
            state.rejected_token_requests += 1;
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
            );
        }
        let injection = state.token_faults.take(&method, uri.path());
        (state.config.access_token_ttl_secs, injection)
    };
    let then = match before(&sim, injection).await {
        Ok(a) => a,
        Err(reply) => return reply,
    };
    let access_token = format!(
        "eyJ0eXAiOiJKV1Qi.{}.{}",
        Uuid::new_v4().simple(),
        Uuid::new_v4().simple()
    );
    let expires = Utc::now() + TimeDelta::seconds(i64::try_from(ttl).unwrap_or(3599));
    lock(&sim.shared.tokens).insert(access_token.clone(), (env.org.clone(), expires));
    lock(&env.state).tokens_issued += 1;
    after(
        then,
        json_answer(
            StatusCode::OK,
            &json!({
                "token_type": "Bearer",
                "expires_in": ttl,
                "ext_expires_in": ttl,
                "access_token": access_token,
            }),
        ),
    )
}

// --- Web API ---

/// Gives the environment's in-flight slot back however the request ends.
struct InFlight(Arc<Env>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = lock(&self.0.state);
        state.in_flight = state.in_flight.saturating_sub(1);
    }
}

/// The addressed resource: a set, or one row by id or by alternate key.
#[derive(Debug)]
enum Target {
    Set(&'static TableDef),
    Id(&'static TableDef, Uuid),
    Key(&'static TableDef, String),
}

fn parse_target(rest: &str) -> Result<Target, DvError> {
    let rest = rest.trim_end_matches('/');
    let (set, key) = match rest.split_once('(') {
        Some((set, key)) => (set, Some(key.strip_suffix(')').unwrap_or(key))),
        None => (rest, None),
    };
    let def = model::table(set).ok_or_else(|| {
        DvError::new(
            404,
            "0x80060888",
            format!("Resource not found for the segment '{set}'."),
        )
    })?;
    let Some(key) = key else {
        return Ok(Target::Set(def));
    };
    if let Some((column, value)) = key.split_once('=') {
        let value = value
            .trim()
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .ok_or_else(|| DvError::bad_request(format!("Bad key literal in '{key}'")))?;
        if def.key != Some(column.trim()) {
            return Err(DvError::new(
                400,
                "0x80060888",
                format!(
                    "The key '{column}' is not an alternate key of entity '{}'.",
                    def.logical
                ),
            ));
        }
        return Ok(Target::Key(def, value.replace("''", "'")));
    }
    let id = Uuid::parse_str(key.trim()).map_err(|_| {
        DvError::bad_request(format!("Bad Request - Error in query syntax: '{key}'"))
    })?;
    Ok(Target::Id(def, id))
}

/// Reads `Prefer` preferences (`odata.maxpagesize=N`, `return=representation`).
fn prefer(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all("Prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|p| match p.split_once('=') {
            Some((k, v)) if k.trim() == name => Some(v.trim().trim_matches('"').to_owned()),
            None if p == name => Some(String::new()),
            _ => None,
        })
}

#[allow(clippy::too_many_arguments)]
async fn api(
    State(sim): State<DataverseSim>,
    Path((org, rest)): Path<(String, String)>,
    method: Method,
    uri: OriginalUri,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = Utc::now();
    let Some(bearer) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
    else {
        return unauthorized("Bearer token is required");
    };
    let token = lock(&sim.shared.tokens).get(bearer).cloned();
    let env = match (token, sim.env(&org)) {
        (Some((token_org, _)), Some(env)) if token_org != org => {
            // A token for another environment's audience.
            drop(env);
            return unauthorized("The access token is not valid for this environment");
        }
        (Some((_, expires)), Some(env)) => {
            if expires <= now {
                lock(&env.state).expired_token_calls += 1;
                return unauthorized("The access token expired");
            }
            env
        }
        _ => return unauthorized("The access token is invalid"),
    };
    let injection = {
        let mut state = lock(&env.state);
        let injection = match state.gate.admit(now, &method, uri.path()) {
            Admission::Refused { retry_after } => {
                let (limit, secs) = (
                    state.config.limits.requests.unwrap_or(0),
                    state.config.limits.window_ms / 1000,
                );
                return throttled(
                    "0x80072322",
                    format!(
                        "Number of requests exceeded the limit of {limit} over time window of {secs} seconds."
                    ),
                    Some(retry_after),
                );
            }
            Admission::Admitted(injection) => injection,
        };
        if let Some(limit) = state.config.limits.concurrent
            && state.in_flight >= limit
        {
            state.gate.limited_without_wait();
            return throttled(
                "0x80072326",
                format!("Number of concurrent requests exceeded the limit of {limit}."),
                Some(1),
            );
        }
        match &injection {
            Some(Injection::Status {
                status,
                retry_after: Some(secs),
            }) if status.as_u16() == 429 => state.gate.told_to_wait(now, *secs),
            Some(Injection::Status { status, .. }) if status.as_u16() == 429 => {
                state.gate.limited_without_wait()
            }
            _ => {}
        }
        state.in_flight += 1;
        state.max_in_flight = state.max_in_flight.max(u64::from(state.in_flight));
        injection
    };
    let _slot = InFlight(env.clone());
    let then = match before(&sim, injection).await {
        Ok(a) => a,
        Err(reply) => return reply,
    };
    // The Web API root as the client addressed it, for OData-EntityId and nextLink.
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let path = uri.path();
    let root = match path.find(API_PREFIX) {
        Some(i) => format!("http://{host}{}", &path[..i + API_PREFIX.len()]),
        None => format!("http://{host}{API_PREFIX}"),
    };
    let params: Vec<(String, String)> = raw_query
        .as_deref()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    if rest.trim_end_matches('/') == "$batch" {
        let response = if method == Method::POST {
            let api_path = match path.find(API_PREFIX) {
                Some(i) => &path[..i + API_PREFIX.len()],
                None => API_PREFIX,
            };
            run_batch(&sim, &env, &headers, &body, &root, api_path, now)
                .await
                .unwrap_or_else(|e| error(&e))
        } else {
            error(&DvError::new(405, "0x80060888", "$batch takes POST only."))
        };
        return after(then, response);
    }
    let response = handle(&env, &method, &rest, &params, &headers, &body, &root, now)
        .unwrap_or_else(|e| error(&e));
    after(then, response)
}

/// `POST $batch`: one admission for the whole batch, then each request in order through the
/// same fault queue and handler as a single request. Without `Prefer:
/// odata.continue-on-error` the batch stops after the first failed request.
async fn run_batch(
    sim: &DataverseSim,
    env: &Env,
    headers: &HeaderMap,
    body: &Bytes,
    root: &str,
    api_path: &str,
    now: chrono::DateTime<Utc>,
) -> Result<Response, DvError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let boundary = batch::boundary(content_type)?;
    let requests = batch::parse(body, &boundary)?;
    let continue_on_error = prefer(headers, "odata.continue-on-error").is_some();
    let mut answers = Vec::with_capacity(requests.len());
    for request in &requests {
        let response = inner_request(sim, env, request, root, api_path, now).await;
        let failed = !response.status().is_success();
        answers.push(into_part(response).await);
        if failed && !continue_on_error {
            break;
        }
    }
    let out = format!("batchresponse_{}", Uuid::new_v4());
    let mut response = (StatusCode::OK, batch::render(&out, &answers)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("multipart/mixed; boundary={out}")) {
        response.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    response
        .headers_mut()
        .insert("OData-Version", HeaderValue::from_static("4.0"));
    if continue_on_error {
        response.headers_mut().insert(
            "Preference-Applied",
            HeaderValue::from_static("odata.continue-on-error"),
        );
    }
    Ok(response)
}

/// One request of a batch, answered as if it came alone (faults included).
async fn inner_request(
    sim: &DataverseSim,
    env: &Env,
    request: &InnerRequest,
    root: &str,
    api_path: &str,
    now: chrono::DateTime<Utc>,
) -> Response {
    let Ok(method) = Method::from_bytes(request.method.as_bytes()) else {
        return error(&DvError::bad_request(format!(
            "Unknown method '{}'",
            request.method
        )));
    };
    let (location, query) = match request.url.split_once('?') {
        Some((l, q)) => (l, Some(q)),
        None => (request.url.as_str(), None),
    };
    let rest = match location.find(API_PREFIX) {
        Some(i) => location[i + API_PREFIX.len()..].trim_start_matches('/'),
        None if location.starts_with('/') || location.contains("://") => {
            return error(&DvError::new(
                404,
                "0x80060888",
                format!("Resource not found for the segment '{location}'."),
            ));
        }
        None => location,
    };
    let rest = batch::percent_decode(rest);
    if rest.trim_end_matches('/') == "$batch" {
        return error(&DvError::bad_request("A batch cannot hold another batch."));
    }
    let mut inner_headers = HeaderMap::new();
    for (name, value) in &request.headers {
        if let (Ok(n), Ok(v)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            inner_headers.append(n, v);
        }
    }
    let injection = {
        let mut state = lock(&env.state);
        let injection = state
            .gate
            .faults
            .take(&method, &format!("{api_path}/{rest}"));
        match &injection {
            Some(Injection::Status {
                status,
                retry_after: Some(secs),
            }) if status.as_u16() == 429 => state.gate.told_to_wait(now, *secs),
            Some(Injection::Status { status, .. }) if status.as_u16() == 429 => {
                state.gate.limited_without_wait()
            }
            _ => {}
        }
        injection
    };
    let then = match before(sim, injection).await {
        Ok(a) => a,
        Err(reply) => return reply,
    };
    let params: Vec<(String, String)> = query
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let body = Bytes::from(request.body.clone());
    let response = handle(
        env,
        &method,
        &rest,
        &params,
        &inner_headers,
        &body,
        root,
        now,
    )
    .unwrap_or_else(|e| error(&e));
    after(then, response)
}

async fn into_part(response: Response) -> InnerResponse {
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    InnerResponse {
        status: parts.status.as_u16(),
        reason: parts.status.canonical_reason().unwrap_or("").to_owned(),
        headers: parts
            .headers
            .iter()
            .filter(|(n, _)| *n != header::CONTENT_LENGTH)
            .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect(),
        body,
    }
}

fn entity_id_header(response: &mut Response, root: &str, def: &TableDef, id: Uuid) {
    if let Ok(v) = HeaderValue::from_str(&format!("{root}/{}({id})", def.set)) {
        response.headers_mut().insert("OData-EntityId", v);
    }
}

#[allow(clippy::too_many_arguments)]
fn handle(
    env: &Env,
    method: &Method,
    rest: &str,
    params: &[(String, String)],
    headers: &HeaderMap,
    body: &Bytes,
    root: &str,
    now: chrono::DateTime<Utc>,
) -> Result<Response, DvError> {
    if rest.trim_end_matches('/') == "WhoAmI" {
        if method != Method::GET {
            return Err(DvError::new(
                405,
                "0x80060888",
                "WhoAmI is a function: use GET",
            ));
        }
        return Ok(json_answer(
            StatusCode::OK,
            &json!({
                "@odata.context": format!("{root}/$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse"),
                "BusinessUnitId": env.business_unit_id.to_string(),
                "UserId": env.user_id.to_string(),
                "OrganizationId": env.organization_id.to_string(),
            }),
        ));
    }
    let target = parse_target(rest)?;
    let mut state = lock(&env.state);
    let representation = prefer(headers, "return").as_deref() == Some("representation");
    let object = || -> Result<Map<String, Value>, DvError> {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(DvError::bad_request(
                "The request body is not a JSON object.",
            )),
        }
    };
    let header_is_star = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() == "*")
    };
    let written = |state: &super::EnvState, def: &TableDef, w: Written| -> Response {
        let mut response = if representation {
            let status = match w {
                Written::Created(_) => StatusCode::CREATED,
                Written::Updated(_) => StatusCode::OK,
            };
            let row = state.data.get(def, w.id()).cloned().unwrap_or_default();
            let mut rendered = CollectionQuery::default().project(def, &row);
            rendered["@odata.context"] = json!(format!("{root}/$metadata#{}/$entity", def.set));
            json_answer(status, &rendered)
        } else {
            let mut r = StatusCode::NO_CONTENT.into_response();
            r.headers_mut()
                .insert("OData-Version", HeaderValue::from_static("4.0"));
            r
        };
        entity_id_header(&mut response, root, def, w.id());
        response
    };
    match (method.as_str(), target) {
        ("GET", Target::Set(def)) => {
            state.queries += 1;
            let query = CollectionQuery::parse(def, params)?;
            let page_size = prefer(headers, "odata.maxpagesize")
                .and_then(|v| v.parse::<usize>().ok())
                .filter(|n| *n > 0)
                .unwrap_or(DEFAULT_PAGE_SIZE);
            let rows = state
                .data
                .table(def)
                .map(|t| query.run(def, t.rows.values()))
                .unwrap_or_default();
            let total = rows.len();
            let page: Vec<Value> = rows
                .into_iter()
                .skip(query.skip)
                .take(page_size)
                .map(|r| query.project(def, r))
                .collect();
            let served = query.skip + page.len();
            state.rows_returned += page.len() as u64;
            let mut answer = json!({
                "@odata.context": format!("{root}/$metadata#{}", def.set),
                "value": page,
            });
            if served < total {
                let mut link = url::form_urlencoded::Serializer::new(String::new());
                for (k, v) in params.iter().filter(|(k, _)| k != "$skiptoken") {
                    link.append_pair(k, v);
                }
                link.append_pair("$skiptoken", &skiptoken(served, served / page_size + 1));
                answer["@odata.nextLink"] = json!(format!("{root}/{}?{}", def.set, link.finish()));
            }
            let mut response = json_answer(StatusCode::OK, &answer);
            if let Ok(v) = HeaderValue::from_str(&format!("odata.maxpagesize={page_size}")) {
                response.headers_mut().insert("Preference-Applied", v);
            }
            Ok(response)
        }
        ("GET", Target::Id(def, id)) => {
            let query = CollectionQuery::parse(def, params)?;
            let row = state
                .data
                .get(def, id)
                .ok_or_else(|| DvError::not_found(def, &id.to_string()))?;
            let mut rendered = query.project(def, row);
            rendered["@odata.context"] = json!(format!("{root}/$metadata#{}/$entity", def.set));
            Ok(json_answer(StatusCode::OK, &rendered))
        }
        ("GET", Target::Key(def, value)) => {
            let query = CollectionQuery::parse(def, params)?;
            let row = state
                .data
                .find_by_key(def, &value)
                .and_then(|id| state.data.get(def, id))
                .ok_or_else(|| DvError::not_found(def, &value))?;
            let mut rendered = query.project(def, row);
            rendered["@odata.context"] = json!(format!("{root}/$metadata#{}/$entity", def.set));
            Ok(json_answer(StatusCode::OK, &rendered))
        }
        ("POST", Target::Set(def)) if model::writable(def) => {
            let body = object()?;
            let id = state.data.create(def, &body, None, None, now)?;
            Ok(written(&state, def, Written::Created(id)))
        }
        ("PATCH", Target::Id(def, id)) if model::writable(def) => {
            let body = object()?;
            let exists = state.data.get(def, id).is_some();
            let w = match exists {
                true if header_is_star("If-None-Match") => {
                    return Err(DvError::new(
                        412,
                        "0x80040237",
                        format!("A record with id {id} already exists."),
                    ));
                }
                true => Written::Updated(state.data.update(def, id, &body, now)?),
                false if header_is_star("If-Match") => {
                    return Err(DvError::not_found(def, &id.to_string()));
                }
                // PATCH by primary key is an upsert too: it creates the row with that id.
                false => Written::Created(state.data.create(def, &body, None, Some(id), now)?),
            };
            Ok(written(&state, def, w))
        }
        ("PATCH", Target::Key(def, value)) if model::writable(def) => {
            let body = object()?;
            let exists = state.data.find_by_key(def, &value).is_some();
            if exists && header_is_star("If-None-Match") {
                return Err(DvError::new(
                    412,
                    "0x80060892",
                    "A record with matching key values already exists.",
                ));
            }
            if !exists && header_is_star("If-Match") {
                return Err(DvError::not_found(def, &value));
            }
            let w = state.data.upsert_by_key(def, &value, &body, now)?;
            Ok(written(&state, def, w))
        }
        ("DELETE", Target::Id(def, id)) if model::writable(def) => {
            if state.data.delete(def, id) {
                Ok(StatusCode::NO_CONTENT.into_response())
            } else {
                Err(DvError::not_found(def, &id.to_string()))
            }
        }
        (m, _) => Err(DvError::new(
            405,
            "0x80060888",
            format!("The HTTP method '{m}' is not allowed on this resource here."),
        )),
    }
}

// --- admin ---

fn admin_error(status: StatusCode, e: impl std::fmt::Display) -> Response {
    json_answer(status, &json!({"error": e.to_string()}))
}

async fn admin_add(State(sim): State<DataverseSim>, body: Bytes) -> Response {
    match serde_json::from_slice::<DataverseEnvConfig>(&body) {
        Ok(config) => match sim.try_add_environment(config) {
            Ok(()) => json_answer(StatusCode::CREATED, &json!({"ok": true})),
            Err(e) => admin_error(StatusCode::BAD_REQUEST, e),
        },
        Err(e) => admin_error(StatusCode::BAD_REQUEST, e),
    }
}

async fn admin_stats(State(sim): State<DataverseSim>, Path(org): Path<String>) -> Response {
    match sim.stats(&org) {
        Some(stats) => json_answer(
            StatusCode::OK,
            &serde_json::to_value(stats).unwrap_or(Value::Null),
        ),
        None => admin_error(StatusCode::NOT_FOUND, format!("no environment {org}")),
    }
}

async fn admin_inject(
    State(sim): State<DataverseSim>,
    Path(org): Path<String>,
    body: Bytes,
) -> Response {
    match serde_json::from_slice::<Fault>(&body) {
        Ok(f) => match sim.try_inject(&org, f) {
            Ok(()) => json_answer(StatusCode::CREATED, &json!({"ok": true})),
            Err(e) => admin_error(StatusCode::BAD_REQUEST, e),
        },
        Err(e) => admin_error(StatusCode::BAD_REQUEST, e),
    }
}

async fn admin_expire(State(sim): State<DataverseSim>, Path(org): Path<String>) -> Response {
    json_answer(
        StatusCode::OK,
        &json!({"expired": sim.expire_access_tokens(&org)}),
    )
}

async fn admin_records(
    State(sim): State<DataverseSim>,
    Path((org, set)): Path<(String, String)>,
) -> Response {
    json_answer(StatusCode::OK, &Value::Array(sim.records(&org, &set)))
}

async fn admin_upsert(
    State(sim): State<DataverseSim>,
    Path((org, set)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    match serde_json::from_slice::<Value>(&body) {
        Ok(record) => match sim.try_upsert_record(&org, &set, record) {
            Ok(id) => json_answer(StatusCode::CREATED, &json!({"id": id})),
            Err(e) => admin_error(StatusCode::BAD_REQUEST, e),
        },
        Err(e) => admin_error(StatusCode::BAD_REQUEST, e),
    }
}
