//! NetSuite's REST error body: RFC 9457-like, with the details in `o:errorDetails`.

use crate::problem::Reply;
use axum::http::StatusCode;
use serde_json::{Map, Value, json};

pub(crate) const ERROR_CONTENT_TYPE: &str = "application/vnd.oracle.resource+json; type=error";

const INVALID_LOGIN_DETAIL: &str = "Invalid login attempt. For more details, see the Login Audit \
     Trail in the NetSuite UI at Setup > Users/Roles > User Management > View Login Audit Trail.";

/// One refusal: the status, `o:errorCode`, `detail` and `o:errorPath` (when a field is at
/// fault).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NsError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub path: Option<String>,
}

impl NsError {
    pub(crate) fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            path: None,
        }
    }

    pub(crate) fn bad(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub(crate) fn at(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    pub(crate) fn invalid_login() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "INVALID_LOGIN",
            INVALID_LOGIN_DETAIL,
        )
    }

    /// A field that does not exist on the record (or sublist line).
    pub(crate) fn unknown_field(path: &str, record: &str) -> Self {
        Self::bad(
            "INVALID_KEY_OR_REF",
            format!("Invalid field '{path}': the record type '{record}' has no such field."),
        )
        .at(path)
    }

    /// A value of the wrong type or a reference to nothing.
    pub(crate) fn invalid_value(path: &str, why: impl std::fmt::Display) -> Self {
        Self::bad(
            "INVALID_VALUE",
            format!("Invalid value for the resource or sub-resource field '{path}'. {why}"),
        )
        .at(path)
    }

    pub(crate) fn missing(labels: &[&str]) -> Self {
        Self::bad(
            "USER_ERROR",
            format!("Please enter value(s) for: {}", labels.join(", ")),
        )
    }

    pub(crate) fn nonexistent(record: &str, key: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NONEXISTENT_ID",
            format!(
                "The record instance does not exist. Provide a valid record instance ID ({record} {key})."
            ),
        )
    }

    /// A SuiteQL statement outside what the simulator (or SuiteQL) understands.
    pub(crate) fn search(why: impl std::fmt::Display) -> Self {
        Self::bad(
            "INVALID_PARAMETER",
            format!(
                "Invalid search query. Detailed unprocessed description follows. Search error \
                 occurred: {why}"
            ),
        )
    }

    pub(crate) fn concurrency(limit: u32) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "CONCURRENCY_LIMIT_EXCEEDED",
            format!(
                "Concurrent request limit exceeded. The account allows {limit} requests in \
                 progress at once. Request blocked."
            ),
        )
    }

    pub(crate) fn into_reply(self) -> Reply {
        let mut detail = Map::new();
        detail.insert("detail".into(), Value::String(self.detail));
        if let Some(path) = self.path {
            detail.insert("o:errorPath".into(), Value::String(path));
        }
        detail.insert("o:errorCode".into(), Value::String(self.code.into()));
        let body = json!({
            "type": type_url(self.status),
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "o:errorDetails": [detail],
        });
        Reply::new(self.status, ERROR_CONTENT_TYPE, body.to_string())
    }
}

/// The `type` URL NetSuite gives a status: its section of RFC 9110 (RFC 6585 for 429).
pub(crate) fn type_url(status: StatusCode) -> String {
    let section = match status.as_u16() {
        400 => "15.5.1",
        401 => "15.5.2",
        403 => "15.5.4",
        404 => "15.5.5",
        405 => "15.5.6",
        406 => "15.5.7",
        409 => "15.5.10",
        413 => "15.5.14",
        415 => "15.5.16",
        429 => return "https://www.rfc-editor.org/rfc/rfc6585.html#section-4".to_owned(),
        500 => "15.6.1",
        502 => "15.6.3",
        503 => "15.6.4",
        504 => "15.6.5",
        other if other >= 500 => "15.6",
        _ => "15.5",
    };
    format!("https://www.rfc-editor.org/rfc/rfc9110.html#section-{section}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_netsuites() {
        let reply = NsError::invalid_value("entity", "No such customer.").into_reply();
        assert_eq!(reply.content_type, ERROR_CONTENT_TYPE);
        let body: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(
            body["type"],
            "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.1"
        );
        assert_eq!(body["title"], "Bad Request");
        assert_eq!(body["status"], 400);
        assert_eq!(body["o:errorDetails"][0]["o:errorCode"], "INVALID_VALUE");
        assert_eq!(body["o:errorDetails"][0]["o:errorPath"], "entity");
    }
}
