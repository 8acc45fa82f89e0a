//! The requests the simulator received, recorded once a test asks for it
//! ([`super::XeroSim::record_requests`]), so the test can check each one against Xero's
//! official OpenAPI documents: method, path, query, headers and body as they came, before any
//! limit, fault or handler saw them.
//!
//! Off by default (the demo and the benchmarks would otherwise keep every batch body).

use super::XeroSim;
use crate::guard::lock;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// The token endpoint's body is the client's secret and refresh token: never kept.
const TOKEN_PATH: &str = "/identity/connect/token";
/// Larger bodies are refused by the API's own extractors long before this.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// One request as it arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReceivedRequest {
    pub method: String,
    /// Relative to the simulator's root: `/api.xro/2.0/Contacts`, `/connections`.
    pub path: String,
    /// Decoded query pairs, in order.
    pub query: Vec<(String, String)>,
    /// Lower-case names; `authorization` keeps only its scheme (`Bearer`, `Basic`).
    pub headers: Vec<(String, String)>,
    /// The body as text (empty without one; empty for the token endpoint).
    pub body: String,
}

impl ReceivedRequest {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
pub(super) struct ReceivedLog {
    on: AtomicBool,
    requests: Mutex<Vec<ReceivedRequest>>,
}

impl ReceivedLog {
    pub(super) fn start(&self) {
        self.on.store(true, Ordering::SeqCst);
    }

    pub(super) fn all(&self) -> Vec<ReceivedRequest> {
        lock(&self.requests).clone()
    }
}

/// The middleware that records each request while recording is on.
pub(super) async fn record(State(sim): State<XeroSim>, request: Request, next: Next) -> Response {
    let log = &sim.shared.received;
    if !log.on.load(Ordering::SeqCst) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let path = parts.uri.path().to_owned();
    let query = parts
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| {
            let text = String::from_utf8_lossy(value.as_bytes());
            let text = if name == axum::http::header::AUTHORIZATION {
                text.split(' ').next().unwrap_or_default().to_owned()
            } else {
                text.into_owned()
            };
            (name.as_str().to_owned(), text)
        })
        .collect();
    let body = if path == TOKEN_PATH {
        String::new()
    } else {
        String::from_utf8_lossy(&bytes).into_owned()
    };
    lock(&log.requests).push(ReceivedRequest {
        method: parts.method.as_str().to_owned(),
        path,
        query,
        headers,
        body,
    });
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}
