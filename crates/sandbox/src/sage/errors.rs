//! Sage's error body: a JSON array of `{"$severity", "$dataCode", "$message", "$source"}`.
//!
//! Verified (developer.sage.com, "Frequently Raised Errors" and a client's comment):
//! `RecordInvalid` (422, `$source` naming the field, `line_items.tax_rate_id` style, no
//! index), `RecordNotFound` (404), `AuthorizationFailure` (401, seen for a lapsed
//! subscription), `MultiUserAccessDenied` (403, "The current user is not allowed to access
//! that resource with that method.") and `UnexpectedError` (500). Unverified, chosen here:
//! `InvalidParams` (400, a bad query parameter or body shape), `TooManyRequests` (429),
//! `ServiceUnavailable` (503), and `AuthorizationFailure` for a missing, unknown or expired
//! token.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One entry of the array.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SageError {
    pub code: &'static str,
    pub message: String,
    pub source: String,
}

/// An error answer: a status and every error found.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    pub status: StatusCode,
    pub errors: Vec<SageError>,
    pub retry_after: Option<u64>,
}

impl Failure {
    pub(crate) fn one(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
        source: impl Into<String>,
    ) -> Self {
        Self {
            status,
            errors: vec![SageError {
                code,
                message: message.into(),
                source: source.into(),
            }],
            retry_after: None,
        }
    }

    /// 422 `RecordInvalid` for every field error found.
    pub(crate) fn invalid(errors: Vec<SageError>) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            errors,
            retry_after: None,
        }
    }

    pub(crate) fn bad_param(source: impl Into<String>, message: impl Into<String>) -> Self {
        Self::one(StatusCode::BAD_REQUEST, "InvalidParams", message, source)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::one(StatusCode::NOT_FOUND, "RecordNotFound", message, "")
    }

    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self::one(
            StatusCode::UNAUTHORIZED,
            "AuthorizationFailure",
            message,
            "",
        )
    }

    pub(crate) fn access_denied() -> Self {
        Self::one(
            StatusCode::FORBIDDEN,
            "MultiUserAccessDenied",
            "The current user is not allowed to access that resource with that method.",
            "",
        )
    }

    pub(crate) fn rate_limited(retry_after: Option<u64>) -> Self {
        Self {
            retry_after,
            ..Self::one(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "Too many requests: the limit of calls per business was reached.",
                "",
            )
        }
    }

    /// What an injected status answers.
    pub(crate) fn status(status: StatusCode, retry_after: Option<u64>) -> Self {
        match status.as_u16() {
            429 => Self::rate_limited(retry_after),
            401 => Self::unauthorized("Invalid or expired access token (injected)"),
            403 => Self::access_denied(),
            404 => Self::not_found("Not found (injected)"),
            503 => Self::one(
                status,
                "ServiceUnavailable",
                "One of our servers required to serve this request could not be reached. Please retry later.",
                "",
            ),
            s if s >= 500 => Self::one(
                status,
                "UnexpectedError",
                "An unexpected error occurred.",
                "",
            ),
            _ => Self::one(status, "InvalidParams", "Invalid request (injected)", ""),
        }
    }

    pub(crate) fn body(&self) -> Value {
        Value::Array(
            self.errors
                .iter()
                .map(|e| {
                    json!({
                        "$severity": "error",
                        "$dataCode": e.code,
                        "$message": e.message,
                        "$source": e.source,
                    })
                })
                .collect(),
        )
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            self.body().to_string(),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// A `RecordInvalid` entry.
pub(crate) fn invalid(source: impl Into<String>, message: impl Into<String>) -> SageError {
    SageError {
        code: "RecordInvalid",
        message: message.into(),
        source: source.into(),
    }
}
