//! `/xmlrpc/2/common` and `/xmlrpc/2/object`, parsed and written with `dxr` the way
//! Python's `xmlrpc.client` writes them (`<int>`, not `<i4>`).
//!
//! Every answer is `200` with `text/xml`, faults included, as Odoo's
//! `xmlrpc_handle_exception_int` codes them: 1 an application error (the string is a
//! Python traceback), 2 a `UserError` (and its `ValidationError`/`MissingError`
//! subclasses; the string is the message), 3 `AccessDenied` (`Access Denied`), 4 an
//! `AccessError`. A body that is not a methodCall is a fault 1, as Odoo parses inside the
//! handler that turns exceptions into faults. Results never hold `<nil/>`: an unset value
//! is `false`. Integers beyond 32 bits are written as `<i8>`.

use super::http::serve;
use super::methods::{self, MethodCall, Protocol};
use super::model::{OdooError, py_repr};
use super::{DbState, OdooSim, UID, lock};
use crate::problem::Reply;
use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

const TEXT_XML: &str = "text/xml; charset=utf-8";

pub(crate) fn to_json(value: dxr::Value) -> Value {
    match value {
        dxr::Value::Integer(i) => json!(i),
        dxr::Value::Long(i) => json!(i),
        dxr::Value::Boolean(b) => json!(b),
        dxr::Value::String(s) => json!(s),
        dxr::Value::Double(d) => serde_json::Number::from_f64(d).map_or(Value::Null, Value::Number),
        dxr::Value::DateTime(dt) => json!(dt.to_string()),
        dxr::Value::Struct(members) => {
            Value::Object(members.into_iter().map(|(k, v)| (k, to_json(v))).collect())
        }
        dxr::Value::Array(items) => Value::Array(items.into_iter().map(to_json).collect()),
        // Base64 and nil: nothing the models take.
        _ => Value::Null,
    }
}

pub(crate) fn to_xmlrpc(value: &Value) -> dxr::Value {
    match value {
        Value::Null => dxr::Value::Boolean(false),
        Value::Bool(b) => dxr::Value::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i32::try_from(i).map_or(dxr::Value::Long(i), dxr::Value::Integer),
            None => dxr::Value::Double(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => dxr::Value::String(s.clone()),
        Value::Array(items) => dxr::Value::Array(items.iter().map(to_xmlrpc).collect()),
        Value::Object(map) => {
            dxr::Value::Struct(map.iter().map(|(k, v)| (k.clone(), to_xmlrpc(v))).collect())
        }
    }
}

/// As Python writes it: an XML declaration, `<int>` for 32-bit integers.
fn pythonic(xml: &str) -> String {
    let xml = xml.replace("<i4>", "<int>").replace("</i4>", "</int>");
    format!("<?xml version='1.0'?>\n{xml}\n")
}

pub(crate) fn response(value: &Value) -> Reply {
    match (dxr::MethodResponse {
        value: to_xmlrpc(value),
    })
    .to_xml()
    {
        Ok(xml) => Reply::new(StatusCode::OK, TEXT_XML, pythonic(&xml)),
        Err(e) => fault(&OdooError::value(format!("cannot marshal the result: {e}"))),
    }
}

pub(crate) fn fault_reply(code: i32, string: String) -> Reply {
    let xml = dxr::FaultResponse {
        fault: dxr::Fault::new(code, string),
    }
    .to_xml()
    .unwrap_or_default();
    Reply::new(StatusCode::OK, TEXT_XML, pythonic(&xml))
}

pub(crate) fn fault(error: &OdooError) -> Reply {
    match error {
        OdooError::UserError(m) | OdooError::ValidationError(m) | OdooError::MissingError(m) => {
            fault_reply(2, m.clone())
        }
        OdooError::AccessDenied => fault_reply(3, "Access Denied".into()),
        OdooError::AccessError(m) => fault_reply(4, m.clone()),
        OdooError::Application { .. } | OdooError::NotFound(_) => fault_reply(1, error.traceback()),
    }
}

fn unknown_database(name: &str) -> Reply {
    fault(&OdooError::Application {
        class: "psycopg2.OperationalError",
        message: format!(
            "connection to server failed: FATAL:  database \"{name}\" does not exist\n"
        ),
    })
}

fn string_param(params: &[Value], index: usize) -> Option<&str> {
    params.get(index).and_then(Value::as_str)
}

fn missing_args(function: &str, names: &[&str], given: usize) -> Option<Reply> {
    let missing: Vec<String> = names.iter().skip(given).map(|n| format!("'{n}'")).collect();
    (!missing.is_empty()).then(|| {
        fault(&OdooError::type_error(format!(
            "{function}() missing {} required positional argument{}: {}",
            missing.len(),
            if missing.len() == 1 { "" } else { "s" },
            missing.join(" and ")
        )))
    })
}

pub(crate) async fn handle(
    State(sim): State<OdooSim>,
    method: Method,
    uri: OriginalUri,
    Path(service): Path<String>,
    body: Bytes,
) -> Response {
    if method != Method::POST {
        return super::http::werkzeug_page(
            StatusCode::METHOD_NOT_ALLOWED,
            "The method is not allowed for the requested URL.",
        )
        .into_response();
    }
    let call = std::str::from_utf8(&body)
        .map_err(|e| e.to_string())
        .and_then(|text| dxr::MethodCall::from_xml(text).map_err(|e| e.to_string()));
    let call = match call {
        Ok(call) => call,
        Err(error) => {
            return fault(&OdooError::Application {
                class: "xml.parsers.expat.ExpatError",
                message: format!("not a well-formed methodCall: {error}"),
            })
            .into_response();
        }
    };
    let name = call.name.to_string();
    let params: Vec<Value> = call.params.into_iter().map(to_json).collect();
    let base = uri.path().trim_end_matches('/').to_owned();
    match (service.as_str(), name.as_str()) {
        ("common", "version") => response(&version(&sim)).into_response(),
        ("common", "authenticate" | "login") => authenticate(&sim, &base, &name, params)
            .await
            .into_response(),
        ("object", "execute_kw") => execute_kw(&sim, &base, params).await.into_response(),
        ("db", "list") => response(&json!(sim.databases())).into_response(),
        ("db", "server_version") => response(&version(&sim)["server_version"]).into_response(),
        ("common" | "object" | "db", _) => fault(&OdooError::Application {
            class: "builtins.KeyError",
            message: format!("'exp_{name}'"),
        })
        .into_response(),
        _ => fault(&OdooError::Application {
            class: "builtins.KeyError",
            message: format!("'{service}'"),
        })
        .into_response(),
    }
}

fn version(sim: &OdooSim) -> Value {
    let major = sim
        .databases()
        .first()
        .and_then(|name| sim.database(name))
        .map_or(17, |db| lock(&db.state).config.version);
    json!({
        "server_version": format!("{major}.0"),
        "server_version_info": [major, 0, 0, "final", 0, ""],
        "server_serie": format!("{major}.0"),
        "protocol_version": 1,
    })
}

fn count_xmlrpc(state: &mut DbState) {
    state.xmlrpc_calls += 1;
    if state.config.version >= 19 {
        state.deprecated_rpc_calls += 1;
    }
}

async fn authenticate(sim: &OdooSim, base: &str, name: &str, params: Vec<Value>) -> Reply {
    let names: &[&str] = if name == "login" {
        &["db", "login", "password"]
    } else {
        &["db", "login", "password", "user_agent_env"]
    };
    if let Some(reply) = missing_args(&format!("exp_{name}"), names, params.len()) {
        return reply;
    }
    let Some(database) = string_param(&params, 0) else {
        return fault(&OdooError::type_error("the database name must be a string"));
    };
    let Some(db) = sim.database(database) else {
        return unknown_database(database);
    };
    let login = string_param(&params, 1).unwrap_or_default().to_owned();
    let secret = string_param(&params, 2).unwrap_or_default().to_owned();
    serve(
        sim,
        &db,
        Protocol::XmlRpc,
        &format!("{base}/{name}"),
        move |state| {
            count_xmlrpc(state);
            if state.config.login == login && state.secret_ok(&secret) {
                state.authentications += 1;
                response(&json!(UID))
            } else {
                state.rejected_authentications += 1;
                response(&json!(false))
            }
        },
    )
    .await
}

async fn execute_kw(sim: &OdooSim, base: &str, mut params: Vec<Value>) -> Reply {
    let names = ["db", "uid", "passwd", "model", "method", "args"];
    if let Some(reply) = missing_args("execute_kw", &names, params.len()) {
        return reply;
    }
    let Some(database) = string_param(&params, 0).map(str::to_owned) else {
        return fault(&OdooError::type_error("the database name must be a string"));
    };
    let Some(db) = sim.database(&database) else {
        return unknown_database(&database);
    };
    let kwargs = params.get(6).cloned().unwrap_or(Value::Null);
    let args = params.swap_remove(5);
    let model = string_param(&params, 3).unwrap_or_default().to_owned();
    let method = string_param(&params, 4).unwrap_or_default().to_owned();
    let uid = params.get(1).and_then(Value::as_i64);
    let secret = string_param(&params, 2).unwrap_or_default().to_owned();
    let path = format!("{base}/{model}/{method}");
    serve(sim, &db, Protocol::XmlRpc, &path, move |state| {
        count_xmlrpc(state);
        if uid != Some(UID) || !state.secret_ok(&secret) {
            state.rejected_authentications += 1;
            return fault(&OdooError::AccessDenied);
        }
        match object_call(state, model, method, args, kwargs) {
            Ok(value) => response(&value),
            Err(error) => fault(&error),
        }
    })
    .await
}

fn object_call(
    state: &mut DbState,
    model: String,
    method: String,
    args: Value,
    kwargs: Value,
) -> Result<Value, OdooError> {
    let Value::Array(args) = args else {
        return Err(OdooError::type_error(format!(
            "execute_kw() args must be a list, not {}",
            py_repr(&args)
        )));
    };
    let mut kwargs = match kwargs {
        Value::Object(map) => map,
        Value::Null | Value::Bool(false) => Map::new(),
        other => {
            return Err(OdooError::type_error(format!(
                "execute_kw() kwargs must be a dict, not {}",
                py_repr(&other)
            )));
        }
    };
    let context = kwargs.remove("context").unwrap_or(Value::Null);
    let active_test = context.get("active_test") != Some(&Value::Bool(false));
    let env = state.env(active_test, true);
    let call = MethodCall {
        model,
        method,
        ids: None,
        args,
        kwargs,
    };
    methods::execute(&mut state.data, &env, Protocol::XmlRpc, call)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// What Python's `xmlrpc.client.dumps((…), 'execute_kw')` writes.
    const PYTHON_CALL: &str = "<?xml version='1.0'?>\n<methodCall>\n<methodName>execute_kw</methodName>\n<params>\n<param>\n<value><string>db</string></value>\n</param>\n<param>\n<value><int>2</int></value>\n</param>\n<param>\n<value>s3cret</value>\n</param>\n<param>\n<value><string>res.partner</string></value>\n</param>\n<param>\n<value><string>search_read</string></value>\n</param>\n<param>\n<value><array><data>\n<value><array><data>\n<value><array><data>\n<value><string>active</string></value>\n<value><string>=</string></value>\n<value><boolean>1</boolean></value>\n</data></array></value>\n</data></array></value>\n</data></array></value>\n</param>\n<param>\n<value><struct>\n<member>\n<name>fields</name>\n<value><array><data>\n<value><string>name</string></value>\n</data></array></value>\n</member>\n<member>\n<name>limit</name>\n<value><int>5</int></value>\n</member>\n<member>\n<name>price</name>\n<value><double>2.5</double></value>\n</member>\n</struct></value>\n</param>\n</params>\n</methodCall>\n";

    #[test]
    fn parses_what_python_writes() {
        let call = dxr::MethodCall::from_xml(PYTHON_CALL).unwrap();
        assert_eq!(call.name, "execute_kw");
        let params: Vec<Value> = call.params.into_iter().map(to_json).collect();
        assert_eq!(
            params,
            vec![
                json!("db"),
                json!(2),
                json!("s3cret"),
                json!("res.partner"),
                json!("search_read"),
                json!([[["active", "=", true]]]),
                json!({"fields": ["name"], "limit": 5, "price": 2.5}),
            ]
        );
    }

    #[test]
    fn answers_as_python_does() {
        let body = response(&json!(7)).body;
        let text = std::str::from_utf8(&body).unwrap();
        assert!(text.starts_with("<?xml version='1.0'?>\n"), "{text}");
        assert!(
            text.contains("<methodResponse><params><param><value><int>7</int></value></param></params></methodResponse>"),
            "{text}"
        );
        let body = response(&json!([{"id": 1, "name": false, "p": [3, "X"]}])).body;
        let text = std::str::from_utf8(&body).unwrap();
        assert!(
            text.contains("<member><name>name</name><value><boolean>0</boolean></value></member>"),
            "{text}"
        );
        let body = fault(&OdooError::ValidationError("bad".into())).body;
        let text = std::str::from_utf8(&body).unwrap();
        assert!(
            text.contains("<methodResponse><fault><value><struct><member><name>faultCode</name><value><int>2</int></value></member><member><name>faultString</name><value><string>bad</string></value></member></struct></value></fault></methodResponse>"),
            "{text}"
        );
        let parsed =
            dxr::FaultResponse::from_xml(text.trim_start_matches("<?xml version='1.0'?>\n").trim())
                .unwrap();
        assert_eq!(parsed.fault.code(), 2);
    }
}
