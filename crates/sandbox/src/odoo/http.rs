//! The Odoo simulator's HTTP surface: the pipeline both protocols share (database →
//! throttle → faults → handling under the database's lock) and the loopback admin
//! endpoints. The protocols themselves are in [`super::xmlrpc`] and [`super::json2`].
//!
//! The throttle is a proxy's: it answers `429` with `Retry-After` and an nginx HTML page,
//! whatever the protocol. An injected status answers, over XML-RPC, the status with an HTML
//! page (Odoo itself only ever answers XML-RPC with `200`, so any other status comes from
//! in front of it); over JSON-2, the status with Odoo's JSON error body.

use super::methods::Protocol;
use super::{Database, DbState, OdooDatabaseConfig, OdooSim, json2, lock, xmlrpc};
use crate::SandboxError;
use crate::fault_plan::{self, FaultAnswers, Outcome};
use crate::faults::{Admission, Fault, Injection};
use crate::problem::{Problem, Reply, admin_body, admin_json, admin_path};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::routing::{any, get, post};
use chrono::Utc;
use serde_json::{Value, json};
use std::sync::Arc;

/// The routes, relative to where they are nested (`/odoo`).
pub(crate) fn routes(sim: OdooSim) -> Router {
    Router::new()
        .route("/xmlrpc/2/{service}", any(xmlrpc::handle))
        .route("/json/2/{model}/{method}", any(json2::handle))
        .route("/_sandbox/databases", post(admin_add_database))
        .route("/_sandbox/databases/{database}/stats", get(admin_stats))
        .route("/_sandbox/databases/{database}/faults", post(admin_inject))
        .route(
            "/_sandbox/databases/{database}/records/{model}",
            get(admin_records).post(admin_upsert),
        )
        .with_state(sim)
}

/// werkzeug's HTML error page for a status.
pub(crate) fn werkzeug_page(status: StatusCode, text: &str) -> Reply {
    let title = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    let name = status.canonical_reason().unwrap_or("Error");
    let body = format!(
        "<!doctype html>\n<html lang=en>\n<title>{title}</title>\n<h1>{name}</h1>\n<p>{text}</p>\n"
    );
    Reply::new(status, "text/html; charset=utf-8", body)
}

fn proxy_page(status: StatusCode) -> Reply {
    let title = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    let body = format!(
        "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1>\
         </center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    );
    Reply::new(status, "text/html", body)
}

fn with_retry_after(mut reply: Reply, secs: Option<u64>) -> Reply {
    if let Some(secs) = secs {
        reply
            .headers
            .push((header::RETRY_AFTER, HeaderValue::from(secs)));
    }
    reply
}

fn throttled(retry_after: u64) -> Reply {
    with_retry_after(proxy_page(StatusCode::TOO_MANY_REQUESTS), Some(retry_after))
}

/// The answers to injected faults, for one database and protocol.
struct OdooFaults<'a> {
    db: &'a Database,
    protocol: Protocol,
}

impl FaultAnswers for OdooFaults<'_> {
    type Reply = Reply;

    fn status(&self, status: StatusCode, retry_after: Option<u64>) -> Reply {
        if status == StatusCode::TOO_MANY_REQUESTS {
            let mut state = lock(&self.db.state);
            match retry_after {
                Some(secs) => state.gate.told_to_wait(Utc::now(), secs),
                None => state.gate.limited_without_wait(),
            }
        }
        let reply = match (self.protocol, status.as_u16()) {
            (Protocol::Json2, 401) => json2::unauthorized(),
            (Protocol::Json2, _) => json2::werkzeug_error(status, "sandbox fault"),
            (Protocol::XmlRpc, _) => proxy_page(status),
        };
        with_retry_after(reply, retry_after)
    }

    fn held_too_long(&self) -> Reply {
        proxy_page(StatusCode::GATEWAY_TIMEOUT)
    }

    fn shutting_down(&self) -> Reply {
        proxy_page(StatusCode::SERVICE_UNAVAILABLE)
    }
}

fn apply_outcome(reply: Reply, outcome: Outcome, protocol: Protocol) -> Reply {
    match (outcome, protocol) {
        (Outcome::AsIs, _) => reply,
        (Outcome::Truncate, _) => reply.truncated(),
        (Outcome::Drop, Protocol::Json2) => json2::werkzeug_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the request was handled but its response was lost (sandbox fault)",
        ),
        (Outcome::Drop, Protocol::XmlRpc) => werkzeug_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The server encountered an internal error and was unable to complete your request. \
             Either the server is overloaded or there is an error in the application.",
        ),
    }
}

/// Holds one of the database's concurrent-request slots until the request is answered.
struct InFlight(Arc<Database>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = lock(&self.0.state);
        state.in_flight = state.in_flight.saturating_sub(1);
    }
}

/// Counts the request and applies the throttle; the fault to inject, if any.
fn admit(db: &Database, path: &str) -> Result<Option<Injection>, Reply> {
    let mut state = lock(&db.state);
    let state = &mut *state;
    match state.gate.admit(Utc::now(), &Method::POST, path) {
        Admission::Refused { retry_after } => Err(throttled(retry_after)),
        Admission::Admitted(injection) => {
            if let Some(cap) = state.config.limits.concurrent
                && state.in_flight >= u64::from(cap)
            {
                state.gate.told_to_wait(Utc::now(), 1);
                return Err(throttled(1));
            }
            state.in_flight += 1;
            state.max_in_flight = state.max_in_flight.max(state.in_flight);
            Ok(injection)
        }
    }
}

/// The pipeline: throttle, faults, then `handle` under the database's lock (one call, one
/// transaction), the fault's outcome applied to its answer.
pub(crate) async fn serve(
    sim: &OdooSim,
    db: &Arc<Database>,
    protocol: Protocol,
    path: &str,
    handle: impl FnOnce(&mut DbState) -> Reply,
) -> Reply {
    let injection = match admit(db, path) {
        Ok(injection) => injection,
        Err(reply) => return reply,
    };
    let _in_flight = InFlight(db.clone());
    let answers = OdooFaults { db, protocol };
    match fault_plan::before_handling(&answers, &sim.shared.interrupt, injection).await {
        Err(reply) => reply,
        Ok(outcome) => {
            let reply = handle(&mut lock(&db.state));
            apply_outcome(reply, outcome, protocol)
        }
    }
}

// --- admin: loopback test tooling, no credentials, no limits, no faults ---

fn admin_problem(error: SandboxError) -> Problem {
    match error {
        SandboxError::UnknownDatabase(_) | SandboxError::UnknownOdooModel(_) => {
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

async fn admin_add_database(
    State(sim): State<OdooSim>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Reply, Problem> {
    let config: OdooDatabaseConfig = admin_body(body)?;
    sim.try_add_database(config.clone())
        .map_err(admin_problem)?;
    admin_json(StatusCode::CREATED, &config)
}

async fn admin_stats(
    State(sim): State<OdooSim>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Reply, Problem> {
    let database = admin_path(path)?;
    admin_json(
        StatusCode::OK,
        &sim.stats(&database).map_err(admin_problem)?,
    )
}

async fn admin_inject(
    State(sim): State<OdooSim>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Reply, Problem> {
    let database = admin_path(path)?;
    let fault: Fault = admin_body(body)?;
    sim.try_inject(&database, fault).map_err(admin_problem)?;
    Ok(Reply::new(
        StatusCode::NO_CONTENT,
        "application/json",
        Bytes::new(),
    ))
}

async fn admin_records(
    State(sim): State<OdooSim>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Reply, Problem> {
    let (database, model) = admin_path(path)?;
    let db = sim.known(&database).map_err(admin_problem)?;
    let version = lock(&db.state).config.version;
    super::model::model(&model, version)
        .ok_or_else(|| admin_problem(SandboxError::UnknownOdooModel(model.clone())))?;
    admin_json(StatusCode::OK, &sim.records(&database, &model))
}

async fn admin_upsert(
    State(sim): State<OdooSim>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Reply, Problem> {
    let (database, model) = admin_path(path)?;
    let record: Value = admin_body(body)?;
    let id = sim
        .upsert_record(&database, &model, record)
        .map_err(admin_problem)?;
    admin_json(StatusCode::OK, &json!({ "id": id }))
}
