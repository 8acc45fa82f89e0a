//! The REST resources: the M2M token endpoint, the record API and SuiteQL.

use super::errors::NsError;
use super::http::{Auth, Call, Ctx, now, serve};
use super::model::RecordType;
use super::store::{Env, Replace};
use super::{AccountState, NetSuiteSim, auth, jwt, query, suiteql};
use crate::problem::Reply;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// SuiteQL and record-collection pages: at most 1000 rows.
const MAX_LIMIT: usize = 1000;

type Parts = (
    Method,
    OriginalUri,
    HeaderMap,
    Result<Bytes, BytesRejection>,
);

fn call(parts: Parts) -> Result<Call, Reply> {
    let (method, uri, headers, body) = parts;
    let body =
        body.map_err(|r| NsError::new(r.status(), "INVALID_CONTENT", r.body_text()).into_reply())?;
    Ok(Call::new(method, uri, headers, body))
}

fn path_error(rejection: &PathRejection) -> Response {
    NsError::new(
        StatusCode::NOT_FOUND,
        "NONEXISTENT_ID",
        rejection.body_text(),
    )
    .into_reply()
    .into_response()
}

/// `POST /{acct}/services/rest/auth/oauth2/v1/token`.
pub(crate) async fn token(
    State(sim): State<NetSuiteSim>,
    path: Result<Path<String>, PathRejection>,
    method: Method,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Path(account) = match path {
        Ok(path) => path,
        Err(rejection) => return path_error(&rejection),
    };
    let call = match call((method, uri, headers, body)) {
        Ok(call) => call,
        Err(reply) => return reply.into_response(),
    };
    serve(&sim, &account, &call, Auth::TokenEndpoint, |state, ctx| {
        if call.method != Method::POST {
            return Reply::json(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"error": "invalid_request"}).to_string(),
            );
        }
        let content_type = call.header(header::CONTENT_TYPE);
        jwt::exchange(state, content_type, &call.body, &ctx.url, now())
    })
    .await
    .into_response()
}

/// `/{acct}/services/rest/record/v1/{type}[/{id}[/!transform/{type}]]`.
pub(crate) async fn record(
    State(sim): State<NetSuiteSim>,
    path: Result<Path<(String, String)>, PathRejection>,
    method: Method,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Path((account, rest)) = match path {
        Ok(path) => path,
        Err(rejection) => return path_error(&rejection),
    };
    let call = match call((method, uri, headers, body)) {
        Ok(call) => call,
        Err(reply) => return reply.into_response(),
    };
    serve(&sim, &account, &call, Auth::Rest, |state, ctx| {
        record_call(state, ctx, &call, &rest).unwrap_or_else(NsError::into_reply)
    })
    .await
    .into_response()
}

/// The request's query parameters, decoded.
fn params(call: &Call) -> Vec<(String, String)> {
    auth::query_params(call.uri.query())
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A write's JSON body (`Null` when empty and `optional`).
fn json_body(call: &Call, optional: bool) -> Result<Value, NsError> {
    if call.body.iter().all(u8::is_ascii_whitespace) {
        return if optional {
            Ok(Value::Null)
        } else {
            Err(NsError::bad(
                "INVALID_CONTENT",
                "The request body is empty.",
            ))
        };
    }
    let json_type = call
        .header(header::CONTENT_TYPE)
        .and_then(|c| c.split(';').next())
        .is_some_and(|c| {
            let c = c.trim();
            c.eq_ignore_ascii_case("application/json")
                || c.eq_ignore_ascii_case("application/vnd.oracle.resource+json")
        });
    if !json_type {
        return Err(NsError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "INVALID_CONTENT_TYPE",
            "The request body must be application/json.",
        ));
    }
    serde_json::from_slice(&call.body).map_err(|e| {
        NsError::bad(
            "INVALID_CONTENT",
            format!("The request body is not valid JSON: {e}"),
        )
    })
}

fn created(ctx: &Ctx, ty: RecordType, id: u64) -> Reply {
    let mut reply = Reply::new(StatusCode::NO_CONTENT, "application/json", Bytes::new());
    let location = format!("{}/record/v1/{}/{id}", ctx.base, ty.name());
    if let Ok(value) = HeaderValue::from_str(&location) {
        reply.headers.push((header::LOCATION, value));
    }
    reply
}

fn no_content() -> Reply {
    Reply::new(StatusCode::NO_CONTENT, "application/json", Bytes::new())
}

fn not_allowed(method: &Method) -> NsError {
    NsError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "INVALID_REQUEST",
        format!("The method {method} is not allowed on this resource."),
    )
}

fn record_call(
    state: &mut AccountState,
    ctx: &Ctx,
    call: &Call,
    rest: &str,
) -> Result<Reply, NsError> {
    let segments: Vec<&str> = rest.split('/').collect();
    let ty = record_type(call, &segments)?;
    let params = params(call);
    let state = &mut *state;
    let env = Env {
        config: &state.config,
        now: now(),
        counted: true,
    };
    let data = &mut state.data;
    let missing = |key: &str| NsError::nonexistent(ty.name(), key);
    match (&call.method, segments.as_slice()) {
        (&Method::POST, [_]) => {
            let id = data.create(env, ty, &json_body(call, false)?, None)?;
            Ok(created(ctx, ty, id))
        }
        (&Method::GET, [_]) => list(data.ids(ty), ctx, ty, &params),
        (&Method::GET, [_, key]) => {
            let id = data.find(ty, key).ok_or_else(|| missing(key))?;
            let expand = param(&params, "expandSubResources") == Some("true");
            let body = data
                .render(env.config, ty, id, Some(&ctx.base), expand)
                .ok_or_else(|| missing(key))?;
            Ok(Reply::json(StatusCode::OK, body.to_string()))
        }
        (&Method::PATCH, [_, key]) => {
            let id = data.find(ty, key).ok_or_else(|| missing(key))?;
            let replace = replaced_sublists(ty, &params)?;
            data.update(
                env,
                ty,
                id,
                &json_body(call, false)?,
                Replace::Named(&replace),
            )?;
            Ok(created(ctx, ty, id))
        }
        (&Method::PUT, [_, key]) => {
            let eid = key
                .strip_prefix("eid:")
                .filter(|e| !e.is_empty())
                .ok_or_else(|| {
                    NsError::bad(
                        "INVALID_REQUEST",
                        "PUT (upsert) takes an external id: eid:{externalId}.",
                    )
                })?;
            let id = data.upsert(env, ty, eid, &json_body(call, false)?)?;
            Ok(created(ctx, ty, id))
        }
        (&Method::DELETE, [_, key]) => {
            let id = data.find(ty, key).ok_or_else(|| missing(key))?;
            data.delete(ty, id)?;
            Ok(no_content())
        }
        (&Method::POST, [_, key, "!transform", target]) => {
            let target = RecordType::parse(target);
            if ty != RecordType::SalesOrder || target != Some(RecordType::Invoice) {
                return Err(NsError::bad(
                    "INVALID_PARAMETER",
                    "The sandbox transforms salesOrder into invoice only.",
                ));
            }
            let id = data.find(ty, key).ok_or_else(|| missing(key))?;
            let invoice = data.transform(env, id, &json_body(call, true)?)?;
            Ok(created(ctx, RecordType::Invoice, invoice))
        }
        (method, [_] | [_, _]) => Err(not_allowed(method)),
        _ => Err(NsError::new(
            StatusCode::NOT_FOUND,
            "NONEXISTENT_ID",
            format!("No resource at record/v1/{rest}."),
        )),
    }
}

/// The record type a path names, once `Prefer: respond-async` (not simulated) is refused.
fn record_type(call: &Call, segments: &[&str]) -> Result<RecordType, NsError> {
    if call
        .header(header::HeaderName::from_static("prefer"))
        .is_some_and(|p| p.to_ascii_lowercase().contains("respond-async"))
    {
        return Err(NsError::bad(
            "INVALID_REQUEST",
            "Prefer: respond-async is not simulated by the sandbox.",
        ));
    }
    segments
        .first()
        .and_then(|t| RecordType::parse(t))
        .ok_or_else(|| {
            NsError::new(
                StatusCode::NOT_FOUND,
                "INVALID_RCRD_TYPE",
                format!(
                    "The record type {:?} is invalid or not simulated.",
                    segments.first()
                ),
            )
        })
}

/// NetSuite's `replace` parameter: sublists a `PATCH` replaces instead of merging.
fn replaced_sublists(ty: RecordType, params: &[(String, String)]) -> Result<Vec<String>, NsError> {
    let replace: Vec<String> = param(params, "replace")
        .map(|r| r.split(',').map(|s| s.trim().to_owned()).collect())
        .unwrap_or_default();
    if let Some(bad) = replace.iter().find(|r| ty.sublist(r).is_none()) {
        return Err(NsError::bad(
            "INVALID_PARAMETER",
            format!(
                "The sublist '{bad}' in the replace parameter does not exist on {}.",
                ty.name()
            ),
        ));
    }
    Ok(replace)
}

/// `limit` (1..=1000, default 1000) and `offset` (default 0).
fn paging(params: &[(String, String)]) -> Result<(usize, usize), NsError> {
    let number = |name: &str, default: usize| match param(params, name) {
        None => Ok(default),
        Some(v) => v.parse::<usize>().map_err(|_| {
            NsError::bad(
                "INVALID_PARAMETER",
                format!("The {name} parameter must be a whole number."),
            )
        }),
    };
    let limit = number("limit", MAX_LIMIT)?;
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(NsError::bad(
            "INVALID_PARAMETER",
            "The limit parameter must be between 1 and 1000.",
        ));
    }
    Ok((limit, number("offset", 0)?))
}

/// A page of a collection with NetSuite's paging fields and links.
fn page(all: Vec<Value>, url: &str, limit: usize, offset: usize) -> Value {
    let total = all.len();
    let items: Vec<Value> = all.into_iter().skip(offset).take(limit).collect();
    let count = items.len();
    let has_more = offset + count < total;
    let link = |rel: &str, offset: usize| json!({"rel": rel, "href": format!("{url}?limit={limit}&offset={offset}")});
    let mut links = Vec::new();
    if offset > 0 {
        links.push(link("previous", offset.saturating_sub(limit)));
    }
    links.push(link("first", 0));
    if has_more {
        links.push(link("next", offset + limit));
    }
    links.push(link("last", total.saturating_sub(1) / limit * limit));
    links.push(link("self", offset));
    json!({
        "links": links,
        "count": count,
        "hasMore": has_more,
        "items": items,
        "offset": offset,
        "totalResults": total,
    })
}

fn list(
    ids: Vec<u64>,
    ctx: &Ctx,
    ty: RecordType,
    params: &[(String, String)],
) -> Result<Reply, NsError> {
    if param(params, "q").is_some() {
        return Err(NsError::bad(
            "INVALID_PARAMETER",
            "The sandbox does not filter record collections (q); use SuiteQL.",
        ));
    }
    let (limit, offset) = paging(params)?;
    let items = ids
        .into_iter()
        .map(|id| {
            json!({
                "links": [{"rel": "self", "href": format!("{}/record/v1/{}/{id}", ctx.base, ty.name())}],
                "id": id.to_string(),
            })
        })
        .collect();
    let body = page(items, &ctx.url, limit, offset);
    Ok(Reply::json(StatusCode::OK, body.to_string()))
}

/// `POST /{acct}/services/rest/query/v1/suiteql?limit=&offset=`.
pub(crate) async fn suiteql(
    State(sim): State<NetSuiteSim>,
    path: Result<Path<String>, PathRejection>,
    method: Method,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Path(account) = match path {
        Ok(path) => path,
        Err(rejection) => return path_error(&rejection),
    };
    let call = match call((method, uri, headers, body)) {
        Ok(call) => call,
        Err(reply) => return reply.into_response(),
    };
    serve(&sim, &account, &call, Auth::Rest, |state, ctx| {
        run_suiteql(state, ctx, &call).unwrap_or_else(NsError::into_reply)
    })
    .await
    .into_response()
}

fn run_suiteql(state: &mut AccountState, ctx: &Ctx, call: &Call) -> Result<Reply, NsError> {
    if call.method != Method::POST {
        return Err(not_allowed(&call.method));
    }
    let transient = call
        .header(header::HeaderName::from_static("prefer"))
        .is_some_and(|p| {
            p.split(',')
                .any(|v| v.trim().eq_ignore_ascii_case("transient"))
        });
    if !transient {
        return Err(NsError::bad(
            "INVALID_PARAMETER",
            "SuiteQL queries need the header Prefer: transient.",
        ));
    }
    let (limit, offset) = paging(&params(call))?;
    let body = json_body(call, false)?;
    let q = match body.as_object() {
        Some(map) if map.len() == 1 => map.get("q").and_then(Value::as_str),
        _ => None,
    }
    .ok_or_else(|| {
        NsError::bad(
            "INVALID_CONTENT",
            "The body must be {\"q\": \"<SuiteQL>\"}.",
        )
    })?;
    state.counters.suiteql_queries += 1;
    let select = suiteql::parse(q).map_err(NsError::search)?;
    let rows = query::run(&state.data, &state.config, &select).map_err(NsError::search)?;
    let body = page(rows, &ctx.url, limit, offset);
    Ok(Reply::json(StatusCode::OK, body.to_string()))
}
