//! Odoo's two wire formats, pure: XML-RPC method calls and responses (through `dxr`) with
//! JSON values on our side, and the classification of XML-RPC faults and JSON-2 error
//! bodies into the connector error taxonomy, as HTTP errors are classified.
//!
//! Fault codes are Odoo's (`xmlrpc_handle_exception_int` in its RPC controller):
//! 1 application error (a traceback), 2 `UserError`/`ValidationError`/`MissingError`,
//! 3 `AccessDenied`, 4 `AccessError`. Over JSON-2 the same exceptions come back with their
//! `http_status` (422, 403, 404, 409; 500 for the rest; 401 for a bad API key).

use crate::ConnectorError;
use dxr::Value as Xml;
use serde_json::{Map, Number, Value};
use std::collections::BTreeMap;

/// The `<methodCall>` document for `method(params…)`.
pub fn method_call(method: &str, params: &[Value]) -> Result<String, ConnectorError> {
    let call = dxr::MethodCall {
        name: method.into(),
        params: params.iter().map(to_xml).collect::<Result<_, _>>()?,
    };
    call.to_xml()
        .map(|body| format!("<?xml version=\"1.0\"?>\n{body}"))
        .map_err(|e| ConnectorError::fatal(format!("cannot write the XML-RPC call {method}: {e}")))
}

/// A JSON value as XML-RPC: `null` is Odoo's `False` (unset), integers are `int` (or `i8`
/// past 32 bits), other numbers `double`.
pub fn to_xml(value: &Value) -> Result<Xml, ConnectorError> {
    Ok(match value {
        Value::Null => Xml::Boolean(false),
        Value::Bool(b) => Xml::Boolean(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i32::try_from(i).map_or(Xml::Long(i), Xml::Integer),
            (None, Some(f)) => Xml::Double(f),
            (None, None) => {
                return Err(ConnectorError::fatal(format!(
                    "the number {n} has no XML-RPC form"
                )));
            }
        },
        Value::String(s) => Xml::String(s.clone()),
        Value::Array(items) => Xml::Array(items.iter().map(to_xml).collect::<Result<_, _>>()?),
        Value::Object(map) => Xml::Struct(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), to_xml(v)?)))
                .collect::<Result<BTreeMap<_, _>, ConnectorError>>()?,
        ),
    })
}

/// An XML-RPC value as JSON (`dateTime.iso8601` as its text, `base64` as the bytes' count:
/// nothing we read is binary).
pub fn from_xml(value: Xml) -> Value {
    match value {
        Xml::Integer(i) => Value::from(i),
        Xml::Long(i) => Value::from(i),
        Xml::Boolean(b) => Value::Bool(b),
        Xml::String(s) => Value::String(s),
        Xml::Double(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
        Xml::DateTime(dt) => Value::String(dt.to_string()),
        Xml::Base64(bytes) => Value::String(format!("<{} bytes>", bytes.len())),
        Xml::Struct(members) => Value::Object(
            members
                .into_iter()
                .map(|(k, v)| (k, from_xml(v)))
                .collect::<Map<_, _>>(),
        ),
        Xml::Array(items) => Value::Array(items.into_iter().map(from_xml).collect()),
        Xml::Nil => Value::Null,
        // `dxr::Value` is non-exhaustive; no other XML-RPC type exists today.
        _ => Value::Null,
    }
}

/// What an XML-RPC answer says: the returned value, or the fault classified. `what` names
/// the call in messages ("res.partner.create").
pub fn read_response(body: &[u8], what: &str) -> Result<Value, ConnectorError> {
    let text = std::str::from_utf8(body).map_err(|_| {
        ConnectorError::transient(format!("{what}: the XML-RPC answer is not UTF-8"))
    })?;
    if let Ok(response) = dxr::MethodResponse::from_xml(text) {
        return Ok(from_xml(response.value));
    }
    match dxr::FaultResponse::from_xml(text) {
        Ok(fault) => Err(classify_fault(
            fault.fault.code(),
            fault.fault.string(),
            what,
            what.ends_with(".create"),
        )),
        Err(_) => Err(ConnectorError::transient(format!(
            "{what}: the answer is not an XML-RPC response: {}",
            crate::http::snippet(body)
        ))),
    }
}

/// The exception line of a Python traceback (its last non-empty line), or the whole text.
fn exception_line(text: &str) -> &str {
    if text.starts_with("Traceback") {
        text.lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or(text)
            .trim()
    } else {
        text.trim()
    }
}

/// An XML-RPC fault as an error, as its JSON-2 status would be classified.
///
/// An application error answering a `create` (Odoo ran it, raised, and rolled it back:
/// typically an invalid value) refuses its records rather than retrying them, so a batch is
/// split and the record at fault found.
pub fn classify_fault(code: i32, text: &str, what: &str, create: bool) -> ConnectorError {
    let message = format!("{what}: {}", exception_line(text));
    match code {
        // UserError, ValidationError, MissingError: this record is refused (422 / 404).
        2 => ConnectorError::rejected(message, None),
        3 => ConnectorError::Auth {
            message: format!(
                "{message} (Odoo refused the login or API key; check the credentials' username and api_key, and that the key has not expired: Odoo keys last at most three months)"
            ),
        },
        4 => ConnectorError::Auth {
            message: format!(
                "{message} (the Odoo user lacks access rights for this; grant them, or use a user that has them)"
            ),
        },
        _ if create => ConnectorError::rejected(message, None),
        // An application error (a 500 over JSON-2): worth retrying, and the run fails loudly
        // when the retries run out.
        _ => ConnectorError::transient(message),
    }
}

/// A JSON-2 error body's exception name and message (`{name, message, …}`).
pub fn json2_error(body: &[u8]) -> Option<(String, String)> {
    let value: Value = serde_json::from_slice(body).ok()?;
    Some((
        value.get("name")?.as_str()?.to_owned(),
        value
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What Python's `xmlrpc.client.dumps((7,), methodresponse=True)` writes, as Odoo sends it.
    const PY_RESPONSE: &str = "<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>\n<value><array><data>\n<value><struct>\n<member>\n<name>id</name>\n<value><int>7</int></value>\n</member>\n<member>\n<name>name</name>\n<value><string>Deco Addict</string></value>\n</member>\n<member>\n<name>email</name>\n<value><boolean>0</boolean></value>\n</member>\n<member>\n<name>country_id</name>\n<value><array><data>\n<value><int>75</int></value>\n<value><string>France</string></value>\n</data></array></value>\n</member>\n<member>\n<name>credit</name>\n<value><double>12.5</double></value>\n</member>\n<member>\n<name>comment</name>\n<value>untyped text</value>\n</member>\n</struct></value>\n</data></array></value>\n</param>\n</params>\n</methodResponse>\n";

    #[test]
    fn a_python_written_response_reads_as_json() {
        let value = read_response(PY_RESPONSE.as_bytes(), "res.partner.read").unwrap();
        assert_eq!(
            value,
            json!([{"id": 7, "name": "Deco Addict", "email": false, "country_id": [75, "France"],
                "credit": 12.5, "comment": "untyped text"}])
        );
    }

    #[test]
    fn faults_are_classified_like_their_http_statuses() {
        let fault = |code: i32, text: &str| {
            format!(
                "<?xml version='1.0'?>\n<methodResponse>\n<fault>\n<value><struct>\n<member>\n<name>faultCode</name>\n<value><int>{code}</int></value>\n</member>\n<member>\n<name>faultString</name>\n<value><string>{text}</string></value>\n</member>\n</struct></value>\n</fault>\n</methodResponse>\n"
            )
        };
        let missing = fault(
            2,
            "The operation cannot be completed:\n- Create/update: a mandatory field is not set.\n\nModel: Contact (res.partner)\nField: Name (name)",
        );
        let e = read_response(missing.as_bytes(), "res.partner.create").unwrap_err();
        assert!(matches!(e, ConnectorError::Rejected { .. }), "{e:?}");
        assert!(e.to_string().contains("Field: Name (name)"), "{e}");
        let denied = read_response(fault(3, "Access Denied").as_bytes(), "x").unwrap_err();
        assert!(matches!(denied, ConnectorError::Auth { .. }), "{denied:?}");
        let rights = read_response(fault(4, "You are not allowed").as_bytes(), "x").unwrap_err();
        assert!(rights.to_string().contains("access rights"), "{rights}");
        let trace = "Traceback (most recent call last):\n  File \"odoo/models.py\", line 1, in create\nValueError: Invalid field 'foo' on model 'res.partner'\n";
        let app = read_response(fault(1, trace).as_bytes(), "res.partner.search_read").unwrap_err();
        assert!(matches!(app, ConnectorError::Transient { .. }), "{app:?}");
        assert_eq!(
            app.to_string(),
            "res.partner.search_read: ValueError: Invalid field 'foo' on model 'res.partner'"
        );
        // Answering a create, Odoo rolled it back: its records are refused, not retried.
        let create = read_response(fault(1, trace).as_bytes(), "res.partner.create").unwrap_err();
        assert!(
            matches!(create, ConnectorError::Rejected { .. }),
            "{create:?}"
        );
        let html = read_response(b"<html><body>502 Bad Gateway</body></html>", "x").unwrap_err();
        assert!(matches!(html, ConnectorError::Transient { .. }), "{html:?}");
    }

    #[test]
    fn calls_are_written_as_xml_rpc_and_read_back_by_the_same_rules() {
        let xml = method_call(
            "execute_kw",
            &[
                json!("acme"),
                json!(2),
                json!("key"),
                json!("res.partner"),
                json!("create"),
                json!([[{"name": "A", "customer_rank": 1, "vat": null, "big": 5_000_000_000_i64, "price": 9.5}]]),
            ],
        )
        .unwrap();
        assert!(
            xml.starts_with("<?xml version=\"1.0\"?>\n<methodCall>"),
            "{xml}"
        );
        assert!(xml.contains("<i8>5000000000</i8>"), "{xml}");
        assert!(xml.contains("<double>9.5</double>"), "{xml}");
        let call =
            dxr::MethodCall::from_xml(xml.trim_start_matches("<?xml version=\"1.0\"?>\n")).unwrap();
        assert_eq!(call.name, "execute_kw");
        let vals = from_xml(call.params[5].clone());
        assert_eq!(vals[0][0]["vat"], json!(false));
        assert_eq!(vals[0][0]["big"], json!(5_000_000_000_i64));
    }

    #[test]
    fn json2_error_bodies_name_their_exception() {
        let body = br#"{"name": "werkzeug.exceptions.Unauthorized", "message": "Invalid apikey", "arguments": ["Invalid apikey", 401], "context": {}, "debug": "Traceback"}"#;
        assert_eq!(
            json2_error(body),
            Some((
                "werkzeug.exceptions.Unauthorized".into(),
                "Invalid apikey".into()
            ))
        );
        assert_eq!(json2_error(b"<html>"), None);
    }
}
