//! Errors as RFC 9457 `application/problem+json`, and the JSON body extractor that turns a
//! malformed request into one: every field error named, never a bare 400.

use crate::service::{FieldError, ServiceError};
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use passerelle_store::StoreError;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error answer: status, a short title, what happened and, for invalid input, each field.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Always `about:blank`: the status and title say what kind of problem it is.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// For `422`: every field that is wrong, with what is wrong with it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Seconds to wait before trying again (`429`, `503`); also sent as `Retry-After`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("{what} not found"))
    }

    pub fn invalid(errors: Vec<FieldError>) -> Self {
        let mut problem = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "the request has {} invalid field(s); see `errors`",
                errors.len()
            ),
        );
        problem.errors = errors;
        problem
    }

    pub fn field(field: &str, message: impl std::fmt::Display) -> Self {
        Self::invalid(vec![FieldError::new(field, message)])
    }

    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(error = %error, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the request failed on our side; it was logged with its x-request-id",
        )
    }

    pub fn unavailable(detail: impl Into<String>, retry_after: u64) -> Self {
        let mut problem = Self::new(StatusCode::SERVICE_UNAVAILABLE, detail);
        problem.retry_after = Some(retry_after);
        problem
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::IntegrationNotFound { id } => {
                Problem::not_found(format!("integration {id}"))
            }
            StoreError::Invalid(message) => Problem::new(StatusCode::CONFLICT, message),
            StoreError::Database(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_)) => {
                tracing::warn!(error = %e, "database unavailable");
                Problem::unavailable("the database is unavailable; try again shortly", 5)
            }
            other => Problem::internal(other),
        }
    }
}

impl From<ServiceError> for Problem {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Fields(errors) => Problem::invalid(errors),
            ServiceError::Invalid(message) => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, message)
            }
            ServiceError::Store(e) => e.into(),
            ServiceError::Connector(e) => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
            }
            ServiceError::Publish(message) => Problem::unavailable(message, 5),
        }
    }
}

/// A JSON body of `T`: the media type checked, the size bounded by the router's limit (413
/// beyond it), and a body that does not fit `T` answered with `422` naming the field.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                let v = v.trim();
                v.eq_ignore_ascii_case("application/json")
                    || v.get(v.len().saturating_sub(5)..)
                        .is_some_and(|tail| tail.eq_ignore_ascii_case("+json"))
            });
        if !is_json {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the body as JSON, with `Content-Type: application/json`",
            ));
        }
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|e| Problem::new(e.status(), e.body_text()))?;
        parse_body(&bytes).map(Body)
    }
}

/// Deserialises a request body, naming the field at fault.
pub fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return Problem::new(
                StatusCode::BAD_REQUEST,
                format!("the body is not valid JSON: {inner}"),
            );
        }
        let message = inner.to_string();
        // A missing field is reported at the object that should hold it: name the field.
        let named = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
            .map(|name| match path.as_str() {
                "." | "" => name.to_owned(),
                parent => format!("{parent}.{name}"),
            });
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_owned();
        Problem::field(named.as_deref().unwrap_or(&path), message)
    })
}
