//! The NetSuite simulator's HTTP surface: the pipeline every call goes through (account →
//! authentication → concurrency governance → faults → handling under the account's lock),
//! NetSuite's answers to injected faults, and the loopback admin endpoints. The REST
//! resources themselves are in [`super::api`].

use super::auth::{self, Presented};
use super::errors::NsError;
use super::{Account, AccountState, NetSuiteAccountConfig, NetSuiteSim, api, lock, url_form};
use crate::SandboxError;
use crate::fault_plan::{self, FaultAnswers, Outcome};
use crate::faults::{Admission, Fault};
use crate::problem::{Problem, Reply, admin_body, admin_json, admin_path};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::routing::{any, get, post};
use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{Value, json};
use std::sync::Arc;

/// Now, to the second: NetSuite's timestamps have no fractions.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(0)
}

/// The routes, relative to where they are nested (`/netsuite`).
pub(crate) fn routes(sim: NetSuiteSim) -> Router {
    Router::new()
        .route(
            "/{account}/services/rest/auth/oauth2/v1/token",
            any(api::token),
        )
        .route(
            "/{account}/services/rest/record/v1/{*rest}",
            any(api::record),
        )
        .route(
            "/{account}/services/rest/query/v1/suiteql",
            any(api::suiteql),
        )
        .route("/_sandbox/accounts", post(admin_add_account))
        .route("/_sandbox/accounts/{account}/stats", get(admin_stats))
        .route("/_sandbox/accounts/{account}/faults", post(admin_inject))
        .route(
            "/_sandbox/accounts/{account}/expire_tokens",
            post(admin_expire_tokens),
        )
        .route(
            "/_sandbox/accounts/{account}/records/{record_type}",
            get(admin_records).post(admin_upsert),
        )
        .fallback(|uri: Uri| async move {
            NsError::new(
                StatusCode::NOT_FOUND,
                "NONEXISTENT_ID",
                format!("No resource at {}.", uri.path()),
            )
            .into_reply()
        })
        .with_state(sim)
}

/// One request as the client sent it.
pub(crate) struct Call {
    pub method: Method,
    /// The original URI, `/netsuite/{acct}/…` included.
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Call {
    pub(crate) fn new(
        method: Method,
        OriginalUri(uri): OriginalUri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Self {
        Self {
            method,
            uri,
            headers,
            body,
        }
    }

    pub(crate) fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Where the account is, as the client addressed it.
pub(crate) struct Ctx {
    /// `http://host:port/netsuite/{acct}/services/rest`.
    pub base: String,
    /// The request URL without its query, for TBA and the token endpoint's `aud`.
    pub url: String,
}

/// NetSuite's answers to injected faults.
struct NetSuiteFaults<'a> {
    account: &'a Account,
}

impl FaultAnswers for NetSuiteFaults<'_> {
    type Reply = Reply;

    fn status(&self, status: StatusCode, retry_after: Option<u64>) -> Reply {
        let mut state = lock(&self.account.state);
        let error = match status.as_u16() {
            401 => {
                state.counters.rejected_auth += 1;
                NsError::invalid_login()
            }
            429 => {
                match retry_after {
                    Some(secs) => state.gate.told_to_wait(Utc::now(), secs),
                    None => state.gate.limited_without_wait(),
                }
                NsError::concurrency(state.config.concurrency_limit)
            }
            _ if status.is_server_error() => NsError::new(
                status,
                "UNEXPECTED_ERROR",
                "An unexpected error occurred (sandbox fault).",
            ),
            _ => NsError::new(status, "USER_ERROR", "Sandbox fault."),
        };
        with_retry_after(error.into_reply(), retry_after)
    }

    fn held_too_long(&self) -> Reply {
        NsError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "UNEXPECTED_ERROR",
            "The request timed out.",
        )
        .into_reply()
    }

    fn shutting_down(&self) -> Reply {
        NsError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNEXPECTED_ERROR",
            "The service is unavailable (the sandbox is stopping).",
        )
        .into_reply()
    }
}

fn with_retry_after(mut reply: Reply, secs: Option<u64>) -> Reply {
    if let Some(secs) = secs {
        reply
            .headers
            .push((header::RETRY_AFTER, HeaderValue::from(secs)));
    }
    reply
}

fn apply_outcome(reply: Reply, outcome: Outcome) -> Reply {
    match outcome {
        Outcome::AsIs => reply,
        Outcome::Truncate => reply.truncated(),
        Outcome::Drop => NsError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNEXPECTED_ERROR",
            "An unexpected error occurred (the request was handled but its response was lost: \
             sandbox fault).",
        )
        .into_reply(),
    }
}

/// Holds one of the account's concurrency slots until the request is answered.
struct InFlight(Arc<Account>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = lock(&self.0.state);
        state.in_flight = state.in_flight.saturating_sub(1);
    }
}

/// How the pipeline authenticates a call.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Auth {
    /// TBA or a bearer token.
    Rest,
    /// The token endpoint authenticates the client itself.
    TokenEndpoint,
}

/// Counts, authenticates and admits the call; the fault to inject, if any.
fn admit(
    account: &Account,
    call: &Call,
    ctx: &Ctx,
    mode: Auth,
) -> Result<Option<crate::faults::Injection>, Reply> {
    let mut state = lock(&account.state);
    let state: &mut AccountState = &mut state;
    state.counters.requests += 1;
    if mode == Auth::Rest {
        let presented = Presented {
            authorization: call.header(header::AUTHORIZATION),
            method: call.method.as_str(),
            base_uri: &ctx.url,
            query: call.uri.query(),
        };
        auth::authenticate(state, &presented, Utc::now()).map_err(NsError::into_reply)?;
    }
    let limit = state.config.concurrency_limit;
    if state.in_flight >= limit {
        state.gate.limited_without_wait();
        return Err(NsError::concurrency(limit).into_reply());
    }
    match state.gate.admit(Utc::now(), &call.method, call.uri.path()) {
        Admission::Refused { retry_after } => Err(with_retry_after(
            NsError::concurrency(limit).into_reply(),
            Some(retry_after),
        )),
        Admission::Admitted(injection) => {
            state.in_flight += 1;
            state.max_in_flight = state.max_in_flight.max(u64::from(state.in_flight));
            Ok(injection)
        }
    }
}

/// The pipeline: the account named in the path, authentication, concurrency, faults, then
/// `handle` under the account's lock, the fault's outcome applied to its answer.
pub(crate) async fn serve(
    sim: &NetSuiteSim,
    account: &str,
    call: &Call,
    mode: Auth,
    handle: impl FnOnce(&mut AccountState, &Ctx) -> Reply,
) -> Reply {
    let known = (url_form(account) == account)
        .then(|| sim.account(account))
        .flatten();
    let Some(acct) = known else {
        return NsError::new(
            StatusCode::NOT_FOUND,
            "INVALID_LOGIN",
            format!("No NetSuite account is served at {account} (sandbox)."),
        )
        .into_reply();
    };
    let Some(host) = call.header(header::HOST) else {
        return NsError::bad("INVALID_REQUEST", "The Host header is required.").into_reply();
    };
    let ctx = Ctx {
        base: format!("http://{host}/netsuite/{account}/services/rest"),
        url: auth::base_uri("http", host, call.uri.path()),
    };
    let injection = match admit(&acct, call, &ctx, mode) {
        Ok(injection) => injection,
        Err(reply) => return reply,
    };
    let _slot = InFlight(acct.clone());
    let answers = NetSuiteFaults { account: &acct };
    match fault_plan::before_handling(&answers, &sim.shared.interrupt, injection).await {
        Err(reply) => reply,
        Ok(outcome) => {
            let reply = handle(&mut lock(&acct.state), &ctx);
            apply_outcome(reply, outcome)
        }
    }
}

// --- admin: loopback test tooling, no credentials, no limits, no faults ---

fn admin_problem(error: SandboxError) -> Problem {
    match error {
        SandboxError::UnknownNetSuiteAccount(_)
        | SandboxError::UnknownNetSuiteRecordType(_)
        | SandboxError::UnknownNetSuiteRecord { .. } => Problem::not_found(error.to_string()),
        other => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "Invalid request",
            other.to_string(),
        ),
    }
}

async fn admin_add_account(
    State(sim): State<NetSuiteSim>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Reply, Problem> {
    let config: NetSuiteAccountConfig = admin_body(body)?;
    sim.try_add_account(config.clone()).map_err(admin_problem)?;
    admin_json(StatusCode::CREATED, &config)
}

async fn admin_stats(
    State(sim): State<NetSuiteSim>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Reply, Problem> {
    let account = admin_path(path)?;
    admin_json(StatusCode::OK, &sim.stats(&account).map_err(admin_problem)?)
}

async fn admin_inject(
    State(sim): State<NetSuiteSim>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Reply, Problem> {
    let account = admin_path(path)?;
    let fault: Fault = admin_body(body)?;
    sim.try_inject(&account, fault).map_err(admin_problem)?;
    Ok(Reply::new(
        StatusCode::NO_CONTENT,
        "application/json",
        Bytes::new(),
    ))
}

async fn admin_expire_tokens(
    State(sim): State<NetSuiteSim>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Reply, Problem> {
    let account = admin_path(path)?;
    let expired = sim.expire_tokens(&account).map_err(admin_problem)?;
    admin_json(StatusCode::OK, &json!({ "expired": expired }))
}

async fn admin_records(
    State(sim): State<NetSuiteSim>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Reply, Problem> {
    let (account, record_type) = admin_path(path)?;
    sim.known(&account).map_err(admin_problem)?;
    super::known_type(&record_type).map_err(admin_problem)?;
    admin_json(StatusCode::OK, &sim.records(&account, &record_type))
}

async fn admin_upsert(
    State(sim): State<NetSuiteSim>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Reply, Problem> {
    let (account, record_type) = admin_path(path)?;
    let record: Value = admin_body(body)?;
    let id = sim
        .upsert_record(&account, &record_type, record)
        .map_err(admin_problem)?;
    admin_json(StatusCode::OK, &json!({ "id": id }))
}
