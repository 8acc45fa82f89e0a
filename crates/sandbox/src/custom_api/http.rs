//! The custom API's HTTP surface: routes, the per-request pipeline (auth → traffic gate and
//! faults → idempotency → handling) and the loopback admin endpoints.
//!
//! Every error leaves as problem+json, including the ones axum would answer in plain text
//! (bad paths, oversized bodies, unknown routes, wrong methods).

use super::store::{Collection, decode_cursor, encode_cursor};
use super::validate::{Write, validate};
use super::{Account, AccountConfig, CustomApiSim, lock};
use crate::SandboxError;
use crate::fault_plan::{self, FaultAnswers, FaultPlan, Outcome};
use crate::faults::{Admission, Fault};
use crate::idempotency::{Claim, KeyClaim};
use crate::problem::{Problem, Reply};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Longest `Idempotency-Key` accepted; UUIDs are 36 characters.
const MAX_KEY_LEN: usize = 255;
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// The routes, relative to where they are nested (`/custom_api`).
pub(crate) fn routes(sim: CustomApiSim) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/api/{collection}", get(list).post(create))
        .route("/api/{collection}/{id}", get(fetch).put(update))
        .route("/_sandbox/accounts", post(admin_add_account))
        .route("/_sandbox/accounts/{api_key}/stats", get(admin_stats))
        .route("/_sandbox/accounts/{api_key}/faults", post(admin_inject))
        .route(
            "/_sandbox/accounts/{api_key}/records/{collection}",
            get(admin_records).post(admin_upsert),
        )
        .route(
            "/_sandbox/accounts/{api_key}/records/{collection}/{id}",
            delete(admin_delete),
        )
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .with_state(sim)
}

/// What the pipeline needs to know about a request besides its operation.
struct Call {
    method: Method,
    /// The full path as the client sent it (prefix included), for fault filters, the
    /// idempotency fingerprint and `Location`.
    path: String,
    headers: HeaderMap,
}

impl Call {
    fn new(method: Method, uri: &OriginalUri, headers: HeaderMap) -> Self {
        Self {
            method,
            path: uri.path().to_owned(),
            headers,
        }
    }
}

enum Op {
    Health,
    List {
        collection: String,
        params: Vec<(String, String)>,
    },
    Get {
        collection: String,
        id: String,
    },
    Create {
        collection: String,
        body: Bytes,
    },
    Update {
        collection: String,
        id: String,
        body: Bytes,
    },
}

async fn health(
    State(sim): State<CustomApiSim>,
    method: Method,
    uri: OriginalUri,
    headers: HeaderMap,
) -> Response {
    serve(&sim, Call::new(method, &uri, headers), Ok(Op::Health)).await
}

async fn list(
    State(sim): State<CustomApiSim>,
    method: Method,
    uri: OriginalUri,
    headers: HeaderMap,
    collection: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let op = (|| {
        let Path(collection) = collection.map_err(|r| rejected(r.status(), r.body_text()))?;
        let Query(params) = query.map_err(|r| rejected(r.status(), r.body_text()))?;
        Ok(Op::List { collection, params })
    })();
    serve(&sim, Call::new(method, &uri, headers), op).await
}

async fn fetch(
    State(sim): State<CustomApiSim>,
    method: Method,
    uri: OriginalUri,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    let op = path
        .map(|Path((collection, id))| Op::Get { collection, id })
        .map_err(|r| rejected(r.status(), r.body_text()));
    serve(&sim, Call::new(method, &uri, headers), op).await
}

async fn create(
    State(sim): State<CustomApiSim>,
    method: Method,
    uri: OriginalUri,
    headers: HeaderMap,
    collection: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let op = (|| {
        let Path(collection) = collection.map_err(|r| rejected(r.status(), r.body_text()))?;
        let body = body.map_err(|r| rejected(r.status(), r.body_text()))?;
        Ok(Op::Create { collection, body })
    })();
    serve(&sim, Call::new(method, &uri, headers), op).await
}

async fn update(
    State(sim): State<CustomApiSim>,
    method: Method,
    uri: OriginalUri,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let op = (|| {
        let Path((collection, id)) = path.map_err(|r| rejected(r.status(), r.body_text()))?;
        let body = body.map_err(|r| rejected(r.status(), r.body_text()))?;
        Ok(Op::Update {
            collection,
            id,
            body,
        })
    })();
    serve(&sim, Call::new(method, &uri, headers), op).await
}

/// The custom API's answers to injected faults, for one account.
struct CustomApiFaults<'a>(&'a Account);

impl FaultAnswers for CustomApiFaults<'_> {
    type Reply = Reply;

    fn status(&self, status: StatusCode, retry_after: Option<u64>) -> Reply {
        if status == StatusCode::TOO_MANY_REQUESTS {
            let mut state = lock(&self.0.state);
            match retry_after {
                Some(secs) => state.gate.told_to_wait(Utc::now(), secs),
                None => state.gate.limited_without_wait(),
            }
        }
        Problem::status(status, retry_after).into_reply()
    }

    fn held_too_long(&self) -> Reply {
        Problem::plain(StatusCode::GATEWAY_TIMEOUT, "sandbox fault: held too long").into_reply()
    }

    fn shutting_down(&self) -> Reply {
        shutting_down().into_reply()
    }
}

/// The pipeline every API request goes through.
async fn serve(sim: &CustomApiSim, call: Call, op: Result<Op, Problem>) -> Response {
    let account = match sim.authenticate(&call.headers) {
        Ok(account) => account,
        Err(problem) => {
            let mut reply = problem.into_reply();
            reply.headers.push((
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("ApiKey realm=\"custom_api\""),
            ));
            return reply.into_response();
        }
    };

    let admission = lock(&account.state)
        .gate
        .admit(Utc::now(), &call.method, &call.path);
    let injection = match admission {
        Admission::Refused { retry_after } => {
            return Problem::rate_limited(retry_after).into_response();
        }
        Admission::Admitted(injection) => injection,
    };

    let answers = CustomApiFaults(&account);
    let (latency, outcome) =
        match fault_plan::plan(&answers, &sim.shared.interrupt, injection).await {
            FaultPlan::Answer(reply) => return reply.into_response(),
            FaultPlan::Handle { latency, outcome } => (latency, outcome),
        };

    let reply = match op {
        Ok(op) => handle(sim, &account, &call, op, latency).await,
        Err(problem) => Err(problem),
    }
    .unwrap_or_else(Problem::into_reply);

    match outcome {
        Outcome::AsIs => reply,
        Outcome::Truncate => reply.truncated(),
        Outcome::Drop => Problem::plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "sandbox fault: the request was handled but its response was lost",
        )
        .into_reply(),
    }
    .into_response()
}

async fn handle(
    sim: &CustomApiSim,
    account: &Account,
    call: &Call,
    op: Op,
    latency: Option<Duration>,
) -> Result<Reply, Problem> {
    match op {
        Op::Health => {
            pause(sim, latency).await?;
            Ok(Reply::json(StatusCode::OK, r#"{"status":"ok"}"#))
        }
        Op::List { collection, params } => {
            let collection = collection_named(&collection)?;
            pause(sim, latency).await?;
            list_page(account, collection, params)
        }
        Op::Get { collection, id } => {
            let collection = collection_named(&collection)?;
            pause(sim, latency).await?;
            let state = lock(&account.state);
            let record = state.collections[collection.index()]
                .get(&id)
                .ok_or_else(|| no_record(collection, &id))?;
            Ok(Reply::json(StatusCode::OK, to_json(record)?))
        }
        Op::Create { collection, body } => {
            let collection = collection_named(&collection)?;
            write(sim, account, call, collection, None, body, latency).await
        }
        Op::Update {
            collection,
            id,
            body,
        } => {
            let collection = collection_named(&collection)?;
            write(sim, account, call, collection, Some(id), body, latency).await
        }
    }
}

/// A create (`target` = `None`) or a full replacement.
async fn write(
    sim: &CustomApiSim,
    account: &Account,
    call: &Call,
    collection: Collection,
    target: Option<String>,
    body: Bytes,
    latency: Option<Duration>,
) -> Result<Reply, Problem> {
    require_json(&call.headers)?;
    let key = idempotency_key(&call.headers)?;

    let mut claim = None;
    match key {
        None if target.is_none() => {
            return Err(Problem::bad_request_field(
                "Idempotency-Key",
                "is required on create",
            ));
        }
        None => {}
        Some(key) => {
            let fingerprint = sim
                .shared
                .fingerprinter
                .fingerprint(&call.method, &call.path, &body);
            let mut state = lock(&account.state);
            match state
                .idempotency
                .claim(&key, Some(fingerprint), RETENTION, Utc::now())
            {
                Claim::Proceed { token } => {
                    claim = Some(KeyClaim::new(account.state.clone(), key, token));
                }
                Claim::Replay(stored) => return Ok(replay(stored)),
                Claim::InFlight => {
                    return Err(Problem::new(
                        StatusCode::CONFLICT,
                        "idempotency-in-flight",
                        "Request in progress",
                        "a request with this Idempotency-Key is still being processed",
                    ));
                }
                Claim::Mismatch => {
                    return Err(Problem::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "idempotency-key-reused",
                        "Idempotency-Key reused",
                        "this Idempotency-Key was already used for a different request",
                    ));
                }
            }
        }
    }

    // The key is in flight from here: a retry arriving during the delay gets a 409. If this
    // request is abandoned (client gone, shutdown) the claim's drop frees the key.
    pause(sim, latency).await?;

    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| Problem::bad_request(format!("the body is not valid JSON: {e}")))?;
    let mode = match &target {
        None => Write::Create,
        Some(id) => Write::Replace { id },
    };
    let fields = validate(collection, value, mode).map_err(Problem::validation)?;

    let mut state = lock(&account.state);
    let at = state.stamp(Utc::now());
    let store = state.collection(collection);
    let result = match &target {
        None => {
            let record = store.create(collection, fields, at);
            let location = format!("{}/{}", call.path.trim_end_matches('/'), record_id(record));
            to_json(record).map(|body| {
                let mut reply = Reply::json(StatusCode::CREATED, body);
                if let Ok(location) = HeaderValue::try_from(location) {
                    reply.headers.push((header::LOCATION, location));
                }
                reply
            })
        }
        Some(id) => match store.replace(id, fields, at) {
            Some(record) => to_json(record).map(|body| Reply::json(StatusCode::OK, body)),
            None => Err(no_record(collection, id)),
        },
    };
    if let Some(claim) = claim {
        if target.is_none() && result.is_ok() {
            state.idempotency.record_creates(claim.key(), 1);
        }
        // Only a success is replayed: a refused request created nothing, and a corrected
        // retry with the same key is handled afresh.
        let stored = match &result {
            Ok(reply) if reply.status.is_success() => Some(StoredResponse::of(reply)),
            _ => None,
        };
        claim.settle(&mut state.idempotency, stored);
    }
    result
}

/// How long a successful answer is replayed (draft-ietf-httpapi-idempotency-key-header
/// leaves it to the server; a day covers any retry schedule).
const RETENTION: TimeDelta = TimeDelta::hours(24);

/// An answer kept for replay.
#[derive(Clone, Debug)]
pub(super) struct StoredResponse {
    status: StatusCode,
    body: Bytes,
    location: Option<HeaderValue>,
}

impl StoredResponse {
    fn of(reply: &Reply) -> Self {
        Self {
            status: reply.status,
            body: reply.body.clone(),
            location: reply
                .headers
                .iter()
                .find(|(name, _)| name == header::LOCATION)
                .map(|(_, value)| value.clone()),
        }
    }
}

fn replay(stored: StoredResponse) -> Reply {
    let mut reply = Reply::json(stored.status, stored.body);
    if let Some(location) = stored.location {
        reply.headers.push((header::LOCATION, location));
    }
    reply
        .headers
        .push((IDEMPOTENT_REPLAYED, HeaderValue::from_static("true")));
    reply
}

#[derive(Serialize)]
struct PageBody<'a> {
    items: Vec<&'a Map<String, Value>>,
    next_cursor: Option<String>,
}

fn list_page(
    account: &Account,
    collection: Collection,
    params: Vec<(String, String)>,
) -> Result<Reply, Problem> {
    let (mut since, mut cursor, mut limit) = (None, None, None);
    for (name, value) in params {
        let slot = match name.as_str() {
            "updated_since" => &mut since,
            "cursor" => &mut cursor,
            "limit" => &mut limit,
            _ => {
                return Err(Problem::bad_request_field(
                    name,
                    "is not a parameter of this endpoint (updated_since, cursor, limit)",
                ));
            }
        };
        if slot.replace(value).is_some() {
            return Err(Problem::bad_request_field(name, "is given more than once"));
        }
    }
    let since = since
        .map(|s| {
            DateTime::parse_from_rfc3339(&s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    Problem::bad_request_field("updated_since", "must be an RFC 3339 timestamp")
                })
        })
        .transpose()?;
    let after = cursor
        .map(|c| {
            decode_cursor(collection, &c).ok_or_else(|| {
                Problem::bad_request_field("cursor", "is not a cursor this endpoint issued")
            })
        })
        .transpose()?;
    let limit = match limit {
        None => DEFAULT_PAGE,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                Problem::bad_request_field("limit", "must be an integer from 1 to 1000")
            })?,
    };

    let state = lock(&account.state);
    let page = state.collections[collection.index()].page(since, after.as_ref(), limit);
    let body = PageBody {
        items: page.items,
        next_cursor: page.next.map(|p| encode_cursor(collection, &p)),
    };
    Ok(Reply::json(StatusCode::OK, to_json(&body)?))
}

async fn pause(sim: &CustomApiSim, latency: Option<Duration>) -> Result<(), Problem> {
    match latency {
        Some(delay) if !sim.shared.interrupt.sleep(delay).await => Err(shutting_down()),
        _ => Ok(()),
    }
}

fn require_json(headers: &HeaderMap) -> Result<(), Problem> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
    {
        Ok(())
    } else {
        Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            format!("the body must be application/json, not {content_type:?}"),
        ))
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Problem::bad_request_field(
            "Idempotency-Key",
            "is given more than once",
        ));
    }
    match value.to_str() {
        Ok(key) if !key.is_empty() && key.len() <= MAX_KEY_LEN => Ok(Some(key.to_owned())),
        _ => Err(Problem::bad_request_field(
            "Idempotency-Key",
            "must be 1 to 255 visible ASCII characters",
        )),
    }
}

fn collection_named(name: &str) -> Result<Collection, Problem> {
    Collection::parse(name).ok_or_else(|| {
        Problem::not_found(format!(
            "no collection {name:?}; this API serves products, customers, orders, invoices \
             and inventory"
        ))
    })
}

fn no_record(collection: Collection, id: &str) -> Problem {
    Problem::not_found(format!("no {} record with id {id:?}", collection.name()))
}

fn record_id(record: &Map<String, Value>) -> String {
    match record.get("id") {
        Some(Value::String(id)) => id.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Problem> {
    serde_json::to_vec(value).map_err(|e| {
        Problem::plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot serialise the response: {e}"),
        )
    })
}

fn rejected(status: StatusCode, detail: String) -> Problem {
    Problem::plain(status, detail)
}

fn shutting_down() -> Problem {
    Problem::plain(
        StatusCode::SERVICE_UNAVAILABLE,
        "the sandbox is shutting down",
    )
}

async fn no_route(uri: OriginalUri) -> Problem {
    Problem::not_found(format!("no route for {}", uri.path()))
}

async fn wrong_method(method: Method, uri: OriginalUri) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

// --- admin: loopback test tooling, no auth, no traffic gate, no faults ---

fn admin_problem(error: SandboxError) -> Problem {
    match error {
        SandboxError::UnknownAccount(_)
        | SandboxError::UnknownCollection(_)
        | SandboxError::UnknownRecord { .. } => Problem::not_found(error.to_string()),
        other => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "Invalid request",
            other.to_string(),
        ),
    }
}

fn admin_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, Problem> {
    let body = body.map_err(|r| rejected(r.status(), r.body_text()))?;
    serde_json::from_slice(&body).map_err(|e| Problem::bad_request(format!("invalid body: {e}")))
}

fn admin_path<T>(path: Result<Path<T>, PathRejection>) -> Result<T, Problem> {
    path.map(|Path(p)| p)
        .map_err(|r| rejected(r.status(), r.body_text()))
}

async fn admin_add_account(
    State(sim): State<CustomApiSim>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Reply, Problem> {
    let config: AccountConfig = admin_body(body)?;
    sim.try_add_account(config.clone()).map_err(admin_problem)?;
    Ok(Reply::json(StatusCode::CREATED, to_json(&config)?))
}

async fn admin_stats(
    State(sim): State<CustomApiSim>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Reply, Problem> {
    let api_key = admin_path(path)?;
    let stats = sim
        .stats(&api_key)
        .ok_or_else(|| admin_problem(SandboxError::UnknownAccount(api_key)))?;
    Ok(Reply::json(StatusCode::OK, to_json(&stats)?))
}

async fn admin_inject(
    State(sim): State<CustomApiSim>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, Problem> {
    let api_key = admin_path(path)?;
    let fault: Fault = admin_body(body)?;
    sim.try_inject(&api_key, fault).map_err(admin_problem)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn admin_records(
    State(sim): State<CustomApiSim>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Reply, Problem> {
    let (api_key, collection) = admin_path(path)?;
    sim.account(&api_key)
        .ok_or_else(|| admin_problem(SandboxError::UnknownAccount(api_key.clone())))?;
    collection_named(&collection)?;
    let records = sim.records(&api_key, &collection);
    Ok(Reply::json(StatusCode::OK, to_json(&records)?))
}

async fn admin_upsert(
    State(sim): State<CustomApiSim>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Reply, Problem> {
    let (api_key, collection) = admin_path(path)?;
    let record: Value = admin_body(body)?;
    let id = sim
        .try_upsert_record(&api_key, &collection, record)
        .map_err(admin_problem)?;
    Ok(Reply::json(
        StatusCode::OK,
        to_json(&serde_json::json!({ "id": id }))?,
    ))
}

async fn admin_delete(
    State(sim): State<CustomApiSim>,
    path: Result<Path<(String, String, String)>, PathRejection>,
) -> Result<StatusCode, Problem> {
    let (api_key, collection, id) = admin_path(path)?;
    sim.try_delete_record(&api_key, &collection, &id)
        .map_err(admin_problem)?;
    Ok(StatusCode::NO_CONTENT)
}

impl CustomApiSim {
    /// The account whose key the request carries in that account's auth header.
    fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Account>, Problem> {
        let registry = self
            .shared
            .registry
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut presented = false;
        for name in &registry.auth_headers {
            let Some(value) = headers.get(name) else {
                continue;
            };
            presented = true;
            if let Ok(key) = value.to_str()
                && let Some(account) = registry.accounts.get(key)
                && account.auth_header == *name
            {
                return Ok(account.clone());
            }
        }
        Err(if presented {
            Problem::unauthorized("the API key is not valid")
        } else {
            Problem::unauthorized("the request carries no API key")
        })
    }
}
