//! The SAP B1 simulator's HTTP surface: the Service Layer pipeline (`Login` or session
//! cookies → company → throttle → faults → handling) and the loopback admin endpoints.
//!
//! Errors take the Service Layer's shape,
//! `{"error":{"code":…,"message":{"lang":"en-us","value":…}}}`, with its codes where known:
//! 301 for an invalid or timed-out session (HTTP 401), 100000027 for a failed login,
//! -2028 for a missing record (404), -2035 for a duplicate key and -1000/-10/-5002 for
//! refused properties and values (400).

use super::model::{CompanyData, Key, Kind, SapError};
use super::query::{compare_values, parse_filter, parse_order};
use super::{Company, SapB1CompanyConfig, SapB1Sim, Session, lock};
use crate::SandboxError;
use crate::fault_plan::{self, FaultAnswers, FaultPlan, Outcome};
use crate::faults::{Admission, Fault, Injection};
use crate::problem::{Problem, Reply, admin_body, admin_json, admin_path};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use chrono::{TimeDelta, Utc};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use uuid::Uuid;

const ODATA_JSON: &str = "application/json;odata=minimalmetadata;charset=utf-8";
/// The node a session lives on; the load balancer routes by the `ROUTEID` cookie.
const ROUTE_ID: &str = ".node1";

/// The routes, relative to where they are nested (`/sap_b1`).
pub(crate) fn routes(sim: SapB1Sim) -> Router {
    Router::new()
        .route("/b1s/v1/{*rest}", any(service))
        .route("/_sandbox/companies", post(admin_add_company))
        .route("/_sandbox/companies/{company_db}/stats", get(admin_stats))
        .route(
            "/_sandbox/companies/{company_db}/faults",
            post(admin_inject),
        )
        .route(
            "/_sandbox/companies/{company_db}/expire-sessions",
            post(admin_expire_sessions),
        )
        .route(
            "/_sandbox/companies/{company_db}/records/{collection}",
            get(admin_records).post(admin_upsert),
        )
        .with_state(sim)
}

fn sap_error(status: StatusCode, code: i64, message: &str) -> Reply {
    let body =
        json!({ "error": { "code": code, "message": { "lang": "en-us", "value": message } } });
    Reply::new(status, ODATA_JSON, body.to_string())
}

fn refused(error: &SapError) -> Reply {
    sap_error(
        StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST),
        error.code,
        &error.message,
    )
}

fn invalid_session() -> Reply {
    sap_error(
        StatusCode::UNAUTHORIZED,
        301,
        "Invalid session or session already timeout.",
    )
}

fn entity_reply(status: StatusCode, value: &Value) -> Reply {
    Reply::new(status, ODATA_JSON, value.to_string())
}

fn with_retry_after(mut reply: Reply, secs: Option<u64>) -> Reply {
    if let Some(secs) = secs {
        reply
            .headers
            .push((header::RETRY_AFTER, HeaderValue::from(secs)));
    }
    reply
}

fn overloaded(retry_after: u64) -> Reply {
    with_retry_after(
        sap_error(
            StatusCode::SERVICE_UNAVAILABLE,
            -1,
            "Service Layer is busy; retry later",
        ),
        Some(retry_after),
    )
}

fn shutting_down() -> Reply {
    sap_error(
        StatusCode::SERVICE_UNAVAILABLE,
        -1,
        "the sandbox is shutting down",
    )
}

// --- faults ---

/// The Service Layer's answers to injected faults, for one company.
struct SapFaults<'a>(&'a Company);

impl FaultAnswers for SapFaults<'_> {
    type Reply = Reply;

    fn status(&self, status: StatusCode, retry_after: Option<u64>) -> Reply {
        // A 429 or 503 with Retry-After tells the client to wait, like the throttle does.
        if let Some(secs) = retry_after
            && (status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::SERVICE_UNAVAILABLE)
        {
            let mut state = lock(&self.0.state);
            state.gate.told_to_wait(Utc::now(), secs);
            if status == StatusCode::SERVICE_UNAVAILABLE {
                state.overloaded += 1;
            }
        }
        let reply = match status.as_u16() {
            401 => invalid_session(),
            404 => refused(&SapError::not_found()),
            code => sap_error(status, -1, &format!("sandbox fault: answering {code}")),
        };
        with_retry_after(reply, retry_after)
    }

    fn held_too_long(&self) -> Reply {
        sap_error(StatusCode::GATEWAY_TIMEOUT, -1, "sandbox fault: timeout")
    }

    fn shutting_down(&self) -> Reply {
        shutting_down()
    }
}

fn apply_outcome(reply: Reply, outcome: Outcome) -> Reply {
    match outcome {
        Outcome::AsIs => reply,
        Outcome::Truncate => reply.truncated(),
        Outcome::Drop => sap_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            -1,
            "Internal error: the request was handled but its response was lost (sandbox fault)",
        ),
    }
}

// --- the pipeline ---

/// Holds one of the company's concurrent-request slots until the request is answered.
struct InFlight(Arc<Company>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = lock(&self.0.state);
        state.in_flight = state.in_flight.saturating_sub(1);
    }
}

fn cookies(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            Some((name.trim().to_owned(), value.trim().to_owned()))
        })
        .collect()
}

struct Call {
    method: Method,
    /// `/sap_b1/b1s/v1`, for `odata.metadata` and `Location`.
    base: String,
    rest: String,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
}

async fn service(
    State(sim): State<SapB1Sim>,
    method: Method,
    uri: OriginalUri,
    headers: HeaderMap,
    rest: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let now = Utc::now();
    let call = (|| {
        let Path(rest) = rest.map_err(|r| sap_error(r.status(), -1000, &r.body_text()))?;
        let Query(query) = query.map_err(|r| sap_error(r.status(), -1000, &r.body_text()))?;
        let body = body.map_err(|r| sap_error(r.status(), -1000, &r.body_text()))?;
        let path = uri.path();
        let base = path
            .find("/b1s/v1")
            .map_or("/b1s/v1", |i| &path[..i + "/b1s/v1".len()])
            .to_owned();
        Ok::<_, Reply>(Call {
            method: method.clone(),
            base,
            rest,
            query,
            headers: headers.clone(),
            body,
        })
    })();
    let call = match call {
        Ok(call) => call,
        Err(reply) => return reply.into_response(),
    };

    if call.rest == "Login" {
        return login(&sim, &call, uri.path()).await;
    }

    // Every other resource needs a live session, reached through its node.
    let jar = cookies(&headers);
    let cookie = |name: &str| jar.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let session = {
        let mut sessions = lock(&sim.shared.sessions);
        match cookie("B1SESSION").and_then(|id| sessions.get(&id).cloned().map(|s| (id, s))) {
            Some((id, session)) if now - session.last_used >= session.timeout => {
                sessions.remove(&id);
                Err(Some(session.company))
            }
            Some((_, session)) if cookie("ROUTEID").as_deref() != Some(ROUTE_ID) => {
                // The balancer sent the request to a node that does not hold the session.
                Err(Some(session.company))
            }
            Some((id, session)) => {
                if let Some(live) = sessions.get_mut(&id) {
                    live.last_used = now;
                }
                Ok((id, session))
            }
            None => Err(None),
        }
    };
    let (session_id, session) = match session {
        Ok(found) => found,
        Err(company) => {
            if let Some(company) = company.and_then(|c| sim.company(&c)) {
                let mut state = lock(&company.state);
                state.gate.admit(now, &method, uri.path());
                state.invalid_sessions += 1;
            }
            return invalid_session().into_response();
        }
    };
    let Some(company) = sim.company(&session.company) else {
        return invalid_session().into_response();
    };
    let injection = match admit(&company, &method, uri.path()) {
        Ok(injection) => injection,
        Err(reply) => return reply.into_response(),
    };
    let _in_flight = InFlight(company.clone());
    let answers = SapFaults(&company);
    let reply = match fault_plan::plan(&answers, &sim.shared.interrupt, injection).await {
        FaultPlan::Answer(reply) => reply,
        FaultPlan::Handle { latency, outcome } => {
            let reply = match fault_plan::pause(&answers, &sim.shared.interrupt, latency).await {
                Err(reply) => reply,
                Ok(()) if call.rest == "Logout" => logout(&sim, &company, &call, &session_id),
                Ok(()) => resource(&company, &call),
            };
            apply_outcome(reply, outcome)
        }
    };
    reply.into_response()
}

/// Counts the request and applies the throttle; the fault to inject, if any.
fn admit(company: &Company, method: &Method, path: &str) -> Result<Option<Injection>, Reply> {
    let mut state = lock(&company.state);
    let state = &mut *state;
    match state.gate.admit(Utc::now(), method, path) {
        Admission::Refused { retry_after } => {
            state.overloaded += 1;
            Err(overloaded(retry_after))
        }
        Admission::Admitted(injection) => {
            if let Some(cap) = state.config.limits.concurrent
                && state.in_flight >= u64::from(cap)
            {
                state.overloaded += 1;
                state.gate.limited_without_wait();
                return Err(overloaded(1));
            }
            state.in_flight += 1;
            state.max_in_flight = state.max_in_flight.max(state.in_flight);
            Ok(injection)
        }
    }
}

async fn login(sim: &SapB1Sim, call: &Call, path: &str) -> Response {
    if call.method != Method::POST {
        return sap_error(
            StatusCode::METHOD_NOT_ALLOWED,
            -1,
            "Login accepts POST only",
        )
        .into_response();
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase", deny_unknown_fields)]
    struct LoginBody {
        #[serde(rename = "CompanyDB")]
        company_db: String,
        user_name: String,
        password: String,
        #[serde(default)]
        #[allow(dead_code)]
        language: Option<Value>,
    }
    let body: LoginBody = match serde_json::from_slice(&call.body) {
        Ok(body) => body,
        Err(e) => {
            return sap_error(
                StatusCode::BAD_REQUEST,
                -1000,
                &format!("Invalid login body: {e}"),
            )
            .into_response();
        }
    };
    let Some(company) = sim.company(&body.company_db) else {
        return sap_error(StatusCode::UNAUTHORIZED, 100_000_027, "Login failed").into_response();
    };
    let injection = match admit(&company, &call.method, path) {
        Ok(injection) => injection,
        Err(reply) => return reply.into_response(),
    };
    let _in_flight = InFlight(company.clone());
    let outcome =
        match fault_plan::before_handling(&SapFaults(&company), &sim.shared.interrupt, injection)
            .await
        {
            Ok(outcome) => outcome,
            Err(reply) => return reply.into_response(),
        };
    let (timeout_secs, accepted) = {
        let mut state = lock(&company.state);
        let accepted =
            state.config.username == body.user_name && state.config.password == body.password;
        if accepted {
            state.logins += 1;
        } else {
            state.rejected_logins += 1;
        }
        (state.config.session_timeout_secs, accepted)
    };
    if !accepted {
        return apply_outcome(
            sap_error(StatusCode::UNAUTHORIZED, 100_000_027, "Login failed"),
            outcome,
        )
        .into_response();
    }
    let session_id = Uuid::new_v4().to_string();
    lock(&sim.shared.sessions).insert(
        session_id.clone(),
        Session {
            company: body.company_db.to_ascii_lowercase(),
            last_used: Utc::now(),
            timeout: TimeDelta::seconds(i64::try_from(timeout_secs).unwrap_or(i64::MAX / 1000)),
        },
    );
    let answer = json!({
        "odata.metadata": format!("{}/$metadata#B1Sessions/@Element", call.base),
        "SessionId": session_id,
        "Version": "1000190",
        // Minutes, as b1s.conf states it.
        "SessionTimeout": timeout_secs.div_ceil(60),
    });
    let mut response =
        apply_outcome(entity_reply(StatusCode::OK, &answer), outcome).into_response();
    for cookie in [
        format!("B1SESSION={session_id}; path={}; HttpOnly", call.base),
        format!("ROUTEID={ROUTE_ID}; path={}", call.base),
    ] {
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

fn logout(sim: &SapB1Sim, company: &Company, call: &Call, session_id: &str) -> Reply {
    if call.method != Method::POST {
        return sap_error(
            StatusCode::METHOD_NOT_ALLOWED,
            -1,
            "Logout accepts POST only",
        );
    }
    lock(&sim.shared.sessions).remove(session_id);
    lock(&company.state).logouts += 1;
    Reply::new(StatusCode::NO_CONTENT, ODATA_JSON, Bytes::new())
}

/// `Items`, `Items('A001')`, `Orders(12)`, `Orders(12)/Close`.
fn parse_resource(rest: &str) -> Result<(Kind, Option<Key>, Option<&str>), Reply> {
    let not_found = || {
        sap_error(
            StatusCode::NOT_FOUND,
            -1,
            &format!("Resource not found for the segment '{rest}'"),
        )
    };
    let (name, key, action) = match rest.find('(') {
        None => (rest, None, None),
        Some(open) => {
            let close = rest.rfind(')').ok_or_else(not_found)?;
            let after = &rest[close + 1..];
            let action = match after.strip_prefix('/') {
                Some(a) if !a.is_empty() => Some(a),
                None if after.is_empty() => None,
                _ => return Err(not_found()),
            };
            (&rest[..open], Some(&rest[open + 1..close]), action)
        }
    };
    // OData resource names are case-sensitive.
    let kind = Kind::ALL
        .into_iter()
        .find(|k| k.name() == name)
        .ok_or_else(not_found)?;
    let key = match key {
        None => None,
        Some(raw) => Some(CompanyData::parse_key(kind, raw).ok_or_else(|| {
            sap_error(
                StatusCode::BAD_REQUEST,
                -1000,
                &format!("Invalid key '{raw}' for {}", kind.name()),
            )
        })?),
    };
    Ok((kind, key, action))
}

fn resource(company: &Company, call: &Call) -> Reply {
    let (kind, key, action) = match parse_resource(&call.rest) {
        Ok(parsed) => parsed,
        Err(reply) => return reply,
    };
    let now = Utc::now();
    let mut state = lock(&company.state);
    let state = &mut *state;
    let warehouses = state.config.warehouses.clone();
    let metadata = |suffix: &str| format!("{}/$metadata#{}{suffix}", call.base, kind.name());
    let body_object = || -> Result<Map<String, Value>, Reply> {
        match serde_json::from_slice::<Value>(&call.body) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err(sap_error(
                StatusCode::BAD_REQUEST,
                -1000,
                "The body must be a JSON object",
            )),
            Err(e) => Err(sap_error(
                StatusCode::BAD_REQUEST,
                -1000,
                &format!("Invalid JSON: {e}"),
            )),
        }
    };
    match (&call.method, key, action) {
        (&Method::GET, None, None) => list(state, kind, call, metadata("")),
        (&Method::GET, Some(key), None) => match state.data.get(kind, &key) {
            Some(record) => {
                let mut record = record.clone();
                if let Some((_, select)) = call.query.iter().find(|(k, _)| k == "$select") {
                    apply_select(&mut record, select);
                }
                let mut value = Map::new();
                value.insert("odata.metadata".into(), json!(metadata("/@Element")));
                value.extend(record);
                entity_reply(StatusCode::OK, &Value::Object(value))
            }
            None => refused(&SapError::not_found()),
        },
        (&Method::POST, None, None) => {
            let body = match body_object() {
                Ok(b) => b,
                Err(reply) => return reply,
            };
            match state.data.create(kind, body, &warehouses, now) {
                Ok(created) => {
                    let key_text = match created.get(kind.key_field()) {
                        Some(Value::String(code)) => format!("'{}'", code.replace('\'', "''")),
                        Some(other) => other.to_string(),
                        None => String::new(),
                    };
                    let location = format!("{}/{}({key_text})", call.base, kind.name());
                    let no_content = call
                        .headers
                        .get_all("prefer")
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .any(|v| v.contains("return-no-content"));
                    let mut reply = if no_content {
                        Reply::new(StatusCode::NO_CONTENT, ODATA_JSON, Bytes::new())
                    } else {
                        let mut value = Map::new();
                        value.insert("odata.metadata".into(), json!(metadata("/@Element")));
                        value.extend(created);
                        entity_reply(StatusCode::CREATED, &Value::Object(value))
                    };
                    if let Ok(location) = HeaderValue::from_str(&location) {
                        reply.headers.push((header::LOCATION, location));
                    }
                    reply
                }
                Err(error) => refused(&error),
            }
        }
        (&Method::PATCH, Some(key), None) => {
            let body = match body_object() {
                Ok(b) => b,
                Err(reply) => return reply,
            };
            let replace = call
                .headers
                .get("b1s-replacecollectionsonpatch")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.eq_ignore_ascii_case("true"));
            match state
                .data
                .patch(kind, &key, body, replace, &warehouses, now)
            {
                Ok(()) => Reply::new(StatusCode::NO_CONTENT, ODATA_JSON, Bytes::new()),
                Err(error) => refused(&error),
            }
        }
        (&Method::DELETE, Some(key), None) if !kind.is_document() => {
            match state.data.delete(kind, &key) {
                Ok(()) => Reply::new(StatusCode::NO_CONTENT, ODATA_JSON, Bytes::new()),
                Err(error) => refused(&error),
            }
        }
        (&Method::POST, Some(key), Some(action @ ("Close" | "Cancel"))) if kind.is_document() => {
            let mut changes = Map::new();
            if action == "Cancel" {
                changes.insert("Cancelled".into(), json!("tYES"));
            }
            match state
                .data
                .patch(kind, &key, changes, false, &warehouses, now)
            {
                Ok(()) => {
                    state.data.close(kind, &key);
                    Reply::new(StatusCode::NO_CONTENT, ODATA_JSON, Bytes::new())
                }
                Err(error) => refused(&error),
            }
        }
        (method, _, _) => sap_error(
            StatusCode::METHOD_NOT_ALLOWED,
            -1,
            &format!("{method} is not allowed on {}", call.rest),
        ),
    }
}

fn apply_select(record: &mut Map<String, Value>, select: &str) {
    let fields: Vec<&str> = select.split(',').map(str::trim).collect();
    record.retain(|k, _| fields.contains(&k.as_str()));
}

/// OData's percent-encoding for a query value in `odata.nextLink`.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'$' => {
                out.push(char::from(b));
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn list(state: &mut super::CompanyState, kind: Kind, call: &Call, metadata: String) -> Reply {
    let option = |name: &str| {
        call.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let bad = |message: String| sap_error(StatusCode::BAD_REQUEST, -1000, &message);
    let filter = match option("$filter").map(parse_filter).transpose() {
        Ok(f) => f,
        Err(e) => return bad(format!("Invalid $filter: {e}")),
    };
    if let Some(field) = filter.as_ref().and_then(|f| {
        f.fields()
            .into_iter()
            .find(|f| !kind.properties().contains(f))
    }) {
        return bad(format!(
            "Property '{field}' of '{}' is invalid",
            kind.name()
        ));
    }
    let order = match option("$orderby").map(parse_order).transpose() {
        Ok(o) => o.unwrap_or_default(),
        Err(e) => return bad(format!("Invalid $orderby: {e}")),
    };
    if let Some((field, _)) = order
        .iter()
        .find(|(f, _)| !kind.properties().contains(&f.as_str()))
    {
        return bad(format!(
            "Property '{field}' of '{}' is invalid",
            kind.name()
        ));
    }
    let number = |name: &str| -> Result<Option<usize>, Reply> {
        option(name)
            .map(|v| {
                v.parse::<usize>()
                    .map_err(|_| bad(format!("Invalid {name} value '{v}'")))
            })
            .transpose()
    };
    let (skip, top) = match (number("$skip"), number("$top")) {
        (Ok(skip), Ok(top)) => (skip.unwrap_or(0), top),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let prefer_size = call
        .headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| {
            p.trim()
                .strip_prefix("odata.maxpagesize=")
                .and_then(|n| n.trim().parse::<usize>().ok())
        })
        .filter(|n| *n > 0);
    let page_size = prefer_size.unwrap_or(state.config.page_size);

    let mut rows: Vec<&Map<String, Value>> = state
        .data
        .all(kind)
        .filter(|r| filter.as_ref().is_none_or(|f| f.matches(r)))
        .collect();
    if !order.is_empty() {
        rows.sort_by(|a, b| {
            order
                .iter()
                .map(|(field, desc)| {
                    let o = compare_values(a.get(field), b.get(field));
                    if *desc { o.reverse() } else { o }
                })
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
    }
    let available = rows.len().saturating_sub(skip);
    let wanted = top.map_or(available, |t| t.min(available));
    let page_len = wanted.min(page_size);
    let mut value = Vec::with_capacity(page_len);
    for row in rows.iter().skip(skip).take(page_len) {
        let mut row = (*row).clone();
        if let Some(select) = option("$select") {
            apply_select(&mut row, select);
        }
        value.push(Value::Object(row));
    }
    let mut body = Map::new();
    body.insert("odata.metadata".into(), json!(metadata));
    body.insert("value".into(), Value::Array(value));
    if page_len < wanted {
        let mut params: Vec<String> = call
            .query
            .iter()
            .filter(|(k, _)| k != "$skip" && k != "$top")
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        if let Some(top) = top {
            params.push(format!("$top={}", top - page_len));
        }
        params.push(format!("$skip={}", skip + page_len));
        body.insert(
            "odata.nextLink".into(),
            json!(format!("{}?{}", kind.name(), params.join("&"))),
        );
    }
    let mut reply = entity_reply(StatusCode::OK, &Value::Object(body));
    if let Some(size) = prefer_size
        && let Ok(applied) = HeaderValue::from_str(&format!("odata.maxpagesize={size}"))
    {
        reply.headers.push((
            header::HeaderName::from_static("preference-applied"),
            applied,
        ));
    }
    reply
}

// --- admin: loopback test tooling, no sessions, no limits, no faults ---

fn admin_problem(error: SandboxError) -> Problem {
    match error {
        SandboxError::UnknownCompany(_) | SandboxError::UnknownSapB1Collection(_) => {
            Problem::not_found(error.to_string())
        }
        other => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "Invalid request",
            other.to_string(),
        ),
    }
}

async fn admin_add_company(
    State(sim): State<SapB1Sim>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Reply, Problem> {
    let config: SapB1CompanyConfig = admin_body(body)?;
    sim.try_add_company(config.clone()).map_err(admin_problem)?;
    admin_json(StatusCode::CREATED, &config)
}

async fn admin_stats(
    State(sim): State<SapB1Sim>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Reply, Problem> {
    let company_db = admin_path(path)?;
    let stats = sim
        .stats(&company_db)
        .ok_or_else(|| admin_problem(SandboxError::UnknownCompany(company_db)))?;
    admin_json(StatusCode::OK, &stats)
}

async fn admin_inject(
    State(sim): State<SapB1Sim>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Reply, Problem> {
    let company_db = admin_path(path)?;
    let fault: Fault = admin_body(body)?;
    sim.try_inject(&company_db, fault).map_err(admin_problem)?;
    Ok(Reply::new(StatusCode::NO_CONTENT, ODATA_JSON, Bytes::new()))
}

async fn admin_expire_sessions(
    State(sim): State<SapB1Sim>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Reply, Problem> {
    let company_db = admin_path(path)?;
    sim.known_company(&company_db).map_err(admin_problem)?;
    let expired = sim.expire_sessions(&company_db);
    admin_json(StatusCode::OK, &json!({ "expired": expired }))
}

async fn admin_records(
    State(sim): State<SapB1Sim>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Reply, Problem> {
    let (company_db, collection) = admin_path(path)?;
    sim.known_company(&company_db).map_err(admin_problem)?;
    Kind::parse(&collection)
        .ok_or_else(|| admin_problem(SandboxError::UnknownSapB1Collection(collection.clone())))?;
    admin_json(StatusCode::OK, &sim.records(&company_db, &collection))
}

async fn admin_upsert(
    State(sim): State<SapB1Sim>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Reply, Problem> {
    let (company_db, collection) = admin_path(path)?;
    let record: Value = admin_body(body)?;
    let key = sim
        .try_upsert_record(&company_db, &collection, record)
        .map_err(admin_problem)?;
    admin_json(StatusCode::OK, &json!({ "key": key }))
}
