//! JSON-2 (`POST /json/2/{model}/{method}`, Odoo 19 and later): a bearer API key, the
//! database from `X-Odoo-Database` (optional while the server hosts one database), the
//! method's arguments by name plus `ids` and `context`.
//!
//! Success is `200` with the return value (a recordset as its list of ids). Errors carry
//! Odoo's body `{name, message, arguments, context, debug}` with the status of the
//! exception: `UserError`/`ValidationError` 422, `AccessDenied`/`AccessError` 403,
//! `MissingError` 404, other exceptions 500, a bad key 401; an unknown model or method
//! 404. On a database older than 19 the route does not exist: werkzeug's HTML 404 page.
//! A request naming no database on a server with several answers 400; one naming a
//! database the server does not host answers 404.

use super::http::{serve, werkzeug_page};
use super::methods::{self, MethodCall, Protocol};
use super::model::OdooError;
use super::{DbState, OdooSim};
use crate::problem::Reply;
use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

const JSON: &str = "application/json; charset=utf-8";

fn error_body(name: &str, message: &str, arguments: Value, debug: String) -> Value {
    json!({
        "name": name,
        "message": message,
        "arguments": arguments,
        "context": {},
        "debug": debug,
    })
}

fn werkzeug_debug(class: &str) -> String {
    format!(
        "Traceback (most recent call last):\n  File \"/usr/lib/python3/dist-packages/odoo/\
         http.py\", line 2371, in __call__\n    response = request._serve_db()\n{class}\n"
    )
}

/// A werkzeug HTTP exception as JSON-2 reports it.
pub(crate) fn werkzeug_error(status: StatusCode, message: &str) -> Reply {
    let class = match status.as_u16() {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        415 => "UnsupportedMediaType",
        429 => "TooManyRequests",
        502 => "BadGateway",
        503 => "ServiceUnavailable",
        504 => "GatewayTimeout",
        _ => "InternalServerError",
    };
    let name = format!("werkzeug.exceptions.{class}");
    let body = error_body(
        &name,
        message,
        json!([message, status.as_u16()]),
        werkzeug_debug(&format!("{name}: {} {message}", status.as_u16())),
    );
    Reply::new(status, JSON, body.to_string())
}

/// Exactly Odoo's answer to a missing, unknown, revoked or expired key.
pub(crate) fn unauthorized() -> Reply {
    let body = error_body(
        "werkzeug.exceptions.Unauthorized",
        "Invalid apikey",
        json!(["Invalid apikey", 401]),
        werkzeug_debug("werkzeug.exceptions.Unauthorized: 401 Unauthorized: Invalid apikey"),
    );
    Reply::new(StatusCode::UNAUTHORIZED, JSON, body.to_string())
}

fn error(error: &OdooError) -> Reply {
    let status = match error {
        OdooError::UserError(_) | OdooError::ValidationError(_) => StatusCode::UNPROCESSABLE_ENTITY,
        OdooError::AccessDenied | OdooError::AccessError(_) => StatusCode::FORBIDDEN,
        OdooError::MissingError(_) => StatusCode::NOT_FOUND,
        OdooError::NotFound(message) => return werkzeug_error(StatusCode::NOT_FOUND, message),
        OdooError::Application { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let body = error_body(
        error.class(),
        error.message(),
        json!([error.message()]),
        error.traceback(),
    );
    Reply::new(status, JSON, body.to_string())
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = header_text(headers, header::AUTHORIZATION.as_str())?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

pub(crate) async fn handle(
    State(sim): State<OdooSim>,
    method: Method,
    uri: OriginalUri,
    Path((model, function)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let names = sim.databases();
    let database = match header_text(&headers, "x-odoo-database") {
        Some(name) => name.to_owned(),
        None if names.len() == 1 => names[0].clone(),
        None if names.is_empty() => {
            return werkzeug_page(
                StatusCode::NOT_FOUND,
                "No database is hosted on this server.",
            )
            .into_response();
        }
        None => {
            return werkzeug_error(
                StatusCode::BAD_REQUEST,
                "This server hosts several databases: the X-Odoo-Database header is required.",
            )
            .into_response();
        }
    };
    let Some(db) = sim.database(&database) else {
        return werkzeug_error(
            StatusCode::NOT_FOUND,
            &format!("database '{database}' does not exist"),
        )
        .into_response();
    };
    let path = uri.path().to_owned();
    let reply = serve(&sim, &db, Protocol::Json2, &path, move |state| {
        if state.config.version < 19 {
            return werkzeug_page(
                StatusCode::NOT_FOUND,
                "The requested URL was not found on the server. If you entered the URL \
                 manually please check your spelling and try again.",
            );
        }
        state.json2_calls += 1;
        if method != Method::POST {
            return werkzeug_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "The method is not allowed for the requested URL.",
            );
        }
        if !bearer(&headers).is_some_and(|key| state.key_ok(key)) {
            state.rejected_authentications += 1;
            return unauthorized();
        }
        let is_json = header_text(&headers, header::CONTENT_TYPE.as_str()).is_some_and(|t| {
            t.trim()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
        if !body.is_empty() && !is_json {
            return werkzeug_error(
                StatusCode::BAD_REQUEST,
                "State-changing json2 requests must use the 'application/json' Content-Type \
                 (CSRF protection).",
            );
        }
        call(state, model, function, &body)
    })
    .await;
    reply.into_response()
}

fn call(state: &mut DbState, model: String, method: String, body: &Bytes) -> Reply {
    let mut args: Map<String, Value> = if body.is_empty() {
        Map::new()
    } else {
        match serde_json::from_slice(body) {
            Ok(Value::Object(map)) => map,
            Ok(_) => {
                return werkzeug_error(
                    StatusCode::BAD_REQUEST,
                    "The body must be a JSON object of named arguments.",
                );
            }
            Err(e) => {
                return werkzeug_error(StatusCode::BAD_REQUEST, &format!("Invalid JSON data: {e}"));
            }
        }
    };
    let ids = args.remove("ids");
    let context = args.remove("context").unwrap_or(Value::Null);
    if !matches!(context, Value::Object(_) | Value::Null) {
        return werkzeug_error(StatusCode::BAD_REQUEST, "context must be a JSON object.");
    }
    let active_test = context.get("active_test") != Some(&Value::Bool(false));
    let env = state.env(active_test, true);
    let call = MethodCall {
        model,
        method,
        ids,
        args: Vec::new(),
        kwargs: args,
    };
    match methods::execute(&mut state.data, &env, Protocol::Json2, call) {
        Ok(value) => Reply::new(StatusCode::OK, JSON, value.to_string()),
        Err(e) => error(&e),
    }
}
