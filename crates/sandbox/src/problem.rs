//! RFC 9457 problem details, the one error body every simulator answers with, and the small
//! response type simulators build before faults get a chance to mangle it.

use axum::body::Body;
use axum::body::Bytes;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub(crate) const PROBLEM_JSON: &str = "application/problem+json";
pub(crate) const JSON: &str = "application/json";

/// One invalid field, named by its JSON path (`items[0].sku`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An error answer: `{type, title, status, detail, errors?}`.
#[derive(Clone, Debug)]
pub(crate) struct Problem {
    pub status: StatusCode,
    /// Last segment of the `type` URI; one per kind of problem, so a client can tell an
    /// idempotency conflict from a validation failure without parsing `detail`.
    pub kind: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub errors: Vec<FieldError>,
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct ProblemBody<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    errors: &'a [FieldError],
}

impl Problem {
    pub(crate) fn new(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            title,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    pub(crate) fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad request",
            detail,
        )
    }

    /// A 400 about one header or query parameter.
    pub(crate) fn bad_request_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        let error = FieldError::new(field, message);
        Self {
            detail: format!("{} {}", error.field, error.message),
            errors: vec![error],
            ..Self::bad_request("")
        }
    }

    /// A problem with no more specific type than its status.
    pub(crate) fn plain(status: StatusCode, detail: impl Into<String>) -> Self {
        Self::new(
            status,
            "http-status",
            status.canonical_reason().unwrap_or("Error"),
            detail,
        )
    }

    pub(crate) fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    pub(crate) fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Missing or unknown API key",
            detail,
        )
    }

    pub(crate) fn validation(errors: Vec<FieldError>) -> Self {
        let detail = errors
            .iter()
            .map(|e| format!("{} {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        Self {
            errors,
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "The record is invalid",
                detail,
            )
        }
    }

    pub(crate) fn rate_limited(retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests",
                format!("rate limit exceeded; retry after {retry_after} s"),
            )
        }
    }

    /// Any status, for injected faults.
    pub(crate) fn status(status: StatusCode, retry_after: Option<u64>) -> Self {
        Self {
            retry_after,
            ..Self::new(
                status,
                "injected",
                status.canonical_reason().unwrap_or("Error"),
                format!("sandbox fault: answering {status}"),
            )
        }
    }

    pub(crate) fn into_reply(self) -> Reply {
        let body = ProblemBody {
            kind: format!("https://sandbox.passerelle.invalid/problems/{}", self.kind),
            title: self.title,
            status: self.status.as_u16(),
            detail: &self.detail,
            errors: &self.errors,
        };
        // Serialising plain strings and numbers cannot fail; an empty body would still
        // carry the status and content type.
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let mut reply = Reply::new(self.status, PROBLEM_JSON, body);
        if let Some(secs) = self.retry_after {
            reply
                .headers
                .push((header::RETRY_AFTER, HeaderValue::from(secs)));
        }
        reply
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        self.into_reply().into_response()
    }
}

/// A response still open to changes (a malformed-body fault truncates it).
#[derive(Clone, Debug)]
pub(crate) struct Reply {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: Bytes,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Reply {
    pub(crate) fn new(
        status: StatusCode,
        content_type: &'static str,
        body: impl Into<Bytes>,
    ) -> Self {
        Self {
            status,
            content_type,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    pub(crate) fn json(status: StatusCode, body: impl Into<Bytes>) -> Self {
        Self::new(status, JSON, body)
    }

    /// Cuts the body in half: whatever JSON it held is no longer parseable (an object or
    /// array needs its closing bracket), yet the HTTP message itself is complete.
    /// What a reverse proxy (nginx) in front of the ERP answers when the ERP is down.
    pub(crate) fn proxy_error_page() -> Self {
        const PAGE: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n\
            <center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n\
            </html>\r\n";
        Self::new(StatusCode::BAD_GATEWAY, "text/html", PAGE)
    }

    pub(crate) fn truncated(mut self) -> Self {
        let keep = self.body.len() / 2;
        self.body = if self.body.is_empty() {
            Bytes::from_static(b"{")
        } else {
            self.body.slice(..keep)
        };
        self
    }
}

impl From<Reply> for Response {
    fn from(reply: Reply) -> Self {
        reply.into_response()
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut response = Response::new(Body::from(self.body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        response
    }
}

/// An admin endpoint's JSON body, or a problem naming what is wrong with it.
pub(crate) fn admin_body<T: serde::de::DeserializeOwned>(
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<T, Problem> {
    let body = body.map_err(|r| Problem::plain(r.status(), r.body_text()))?;
    serde_json::from_slice(&body).map_err(|e| Problem::bad_request(format!("invalid body: {e}")))
}

/// An admin endpoint's path parameters.
pub(crate) fn admin_path<T>(
    path: Result<axum::extract::Path<T>, axum::extract::rejection::PathRejection>,
) -> Result<T, Problem> {
    path.map(|axum::extract::Path(p)| p)
        .map_err(|r| Problem::plain(r.status(), r.body_text()))
}

/// An admin endpoint's JSON answer.
pub(crate) fn admin_json(
    status: StatusCode,
    value: &impl serde::Serialize,
) -> Result<Reply, Problem> {
    serde_json::to_vec(value)
        .map(|body| Reply::json(status, body))
        .map_err(|e| Problem::plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}
