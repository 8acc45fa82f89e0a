//! A test-only validator of the requests the Xero simulator received against Xero's official
//! OpenAPI documents (`xero_accounting.yaml`, `xero-identity.yaml` in the workplace's
//! `shared/erp/specs/xero/`): each request must be an operation of the spec (path and
//! method), send only the query parameters and Xero headers that operation declares, with
//! values of the declared type and format (`If-Modified-Since` is RFC 3339 `date-time`), its
//! required parameters, and a JSON body whose properties have the schema's types, formats,
//! enums and maximum lengths, with its required properties present.
//!
//! The simulator may be lenient where Xero is (it reads `If-Modified-Since` without an
//! offset); this is where the connector is held to the published contract. The documents
//! are read from the workplace's reference folder (see [`specs`]); where they are absent
//! the check is skipped with a note.

use passerelle_sandbox::xero::ReceivedRequest;
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::OnceLock;

/// Where the official documents are looked for: `PASSERELLE_ERP_SPECS` (a folder holding
/// `xero/`), the workplace's `shared/erp/specs` beside the repository, or at its usual place.
fn spec_dir() -> Option<std::path::PathBuf> {
    let candidates = [
        std::env::var_os("PASSERELLE_ERP_SPECS").map(std::path::PathBuf::from),
        Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/erp/specs")),
        Some("/work/shared/erp/specs".into()),
    ];
    candidates
        .into_iter()
        .flatten()
        .map(|dir| dir.join("xero"))
        .find(|dir| dir.join("xero_accounting.yaml").is_file())
}

/// Documented in Xero's OAuth 2 guide, not in the OpenAPI documents.
const TOKEN_PATH: &str = "/identity/connect/token";
const API_PREFIX: &str = "/api.xro/2.0";

pub struct Specs {
    accounting: Value,
    identity: Value,
}

/// The documents, or `None` on a machine without them (the repository does not carry
/// them: they are Xero's, kept in the workplace's reference folder). Then the validation is
/// skipped with a note on stderr, as the other spec-reading tests do; the connector's own
/// unit tests still pin the formats the spec requires.
pub fn specs() -> Option<&'static Specs> {
    static SPECS: OnceLock<Option<Specs>> = OnceLock::new();
    SPECS
        .get_or_init(|| {
            let Some(dir) = spec_dir() else {
                eprintln!(
                    "note: Xero's OpenAPI documents were not found (set PASSERELLE_ERP_SPECS); requests are not validated against them"
                );
                return None;
            };
            Some(Specs {
                accounting: load(&dir.join("xero_accounting.yaml")),
                identity: load(&dir.join("xero-identity.yaml")),
            })
        })
        .as_ref()
}

fn load(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "cannot read the official Xero spec at {} ({e})",
            path.display()
        )
    });
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()))
}

/// Fails with every way in which `requests` (at least one) depart from the spec.
pub fn assert_requests_match_spec(requests: &[ReceivedRequest]) {
    assert!(
        !requests.is_empty(),
        "the Xero simulator recorded no request (call record_requests first)"
    );
    let Some(specs) = specs() else {
        return;
    };
    let problems: BTreeSet<String> = requests
        .iter()
        .flat_map(|r| {
            problems(specs, r)
                .into_iter()
                .map(move |p| format!("{} {}: {p}", r.method, r.path))
        })
        .collect();
    assert!(
        problems.is_empty(),
        "requests the Xero simulator received do not match the official spec:\n{}",
        problems.into_iter().collect::<Vec<_>>().join("\n")
    );
}

/// What is wrong with one request; empty when it is a valid call of a spec operation.
pub fn problems(specs: &Specs, r: &ReceivedRequest) -> Vec<String> {
    if r.path == TOKEN_PATH {
        return Vec::new();
    }
    let (spec, path) = match r.path.strip_prefix(API_PREFIX) {
        Some(rest) => (&specs.accounting, rest),
        None => (&specs.identity, r.path.as_str()),
    };
    let Some((template, item)) = find_path(spec, path) else {
        return vec![format!("no path of the spec matches {path}")];
    };
    let Some(op) = item.get(r.method.to_ascii_lowercase()) else {
        return vec![format!("the spec has no {} {template}", r.method)];
    };
    let mut out = Vec::new();
    check_parameters(spec, item, op, r, template, path, &mut out);
    check_body(spec, op, r, &mut out);
    out
}

/// The spec path that `path` is an instance of, literal segments first. Xero's routes are
/// case-insensitive (its guides write `/connections`, the identity spec `/Connections`).
fn find_path<'a>(spec: &'a Value, path: &str) -> Option<(&'a str, &'a Value)> {
    let ours: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    spec["paths"]
        .as_object()?
        .iter()
        .filter_map(|(template, item)| {
            let theirs: Vec<&str> = template.split('/').filter(|s| !s.is_empty()).collect();
            if theirs.len() != ours.len() {
                return None;
            }
            let mut literal = 0;
            for (t, o) in theirs.iter().zip(&ours) {
                if t.starts_with('{') && t.ends_with('}') {
                    continue;
                }
                if !t.eq_ignore_ascii_case(o) {
                    return None;
                }
                literal += 1;
            }
            Some((literal, template.as_str(), item))
        })
        .max_by_key(|(literal, _, _)| *literal)
        .map(|(_, template, item)| (template, item))
}

fn resolve<'a>(spec: &'a Value, value: &'a Value) -> &'a Value {
    let mut value = value;
    for _ in 0..8 {
        match value.get("$ref").and_then(Value::as_str) {
            Some(pointer) => match spec.pointer(pointer.trim_start_matches('#')) {
                Some(target) => value = target,
                None => return &Value::Null,
            },
            None => break,
        }
    }
    value
}

fn check_parameters(
    spec: &Value,
    item: &Value,
    op: &Value,
    r: &ReceivedRequest,
    template: &str,
    path: &str,
    out: &mut Vec<String>,
) {
    let declared: Vec<&Value> = [&item["parameters"], &op["parameters"]]
        .into_iter()
        .filter_map(Value::as_array)
        .flatten()
        .map(|p| resolve(spec, p))
        .collect();
    let of = |place: &str| {
        declared
            .iter()
            .filter(move |p| p["in"] == place)
            .copied()
            .collect::<Vec<_>>()
    };
    for p in of("header") {
        let name = p["name"].as_str().unwrap_or_default().to_ascii_lowercase();
        match r.header(&name) {
            Some(value) => check_text(spec, &p["schema"], value, &format!("header {name}"), out),
            None if p["required"] == true => {
                out.push(format!("the required header {name} is missing"))
            }
            None => {}
        }
    }
    // Xero's own headers (those the spec declares somewhere) only where the operation takes them.
    let xero_headers = spec["components"]["parameters"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
        .filter(|p| p["in"] == "header")
        .filter_map(|p| p["name"].as_str())
        .map(str::to_ascii_lowercase);
    for name in xero_headers {
        let takes = of("header").iter().any(|p| {
            p["name"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(&name))
        });
        if !takes && r.header(&name).is_some() {
            out.push(format!(
                "sends header {name}, which {} {template} does not take",
                r.method
            ));
        }
    }
    let query = of("query");
    for (name, value) in &r.query {
        match query.iter().find(|p| p["name"] == name.as_str()) {
            Some(p) => check_text(spec, &p["schema"], value, &format!("query {name}"), out),
            None => out.push(format!(
                "query parameter {name} is not a parameter of {} {template}",
                r.method
            )),
        }
    }
    for p in &query {
        let name = p["name"].as_str().unwrap_or_default();
        if p["required"] == true && !r.query.iter().any(|(n, _)| n == name) {
            out.push(format!("the required query parameter {name} is missing"));
        }
    }
    let segments = template.split('/').filter(|s| !s.is_empty());
    for (t, value) in segments.zip(path.split('/').filter(|s| !s.is_empty())) {
        if let Some(name) = t.strip_prefix('{').and_then(|t| t.strip_suffix('}'))
            && let Some(p) = of("path").into_iter().find(|p| p["name"] == name)
        {
            check_text(spec, &p["schema"], value, &format!("path {name}"), out);
        }
    }
}

/// A parameter's text against its schema (type, format, enum).
fn check_text(spec: &Value, schema: &Value, text: &str, at: &str, out: &mut Vec<String>) {
    let schema = resolve(spec, schema);
    let ok = match schema["type"].as_str() {
        Some("integer") => text.parse::<i64>().is_ok(),
        Some("number") => text.parse::<f64>().is_ok(),
        Some("boolean") => matches!(text, "true" | "false"),
        Some("array") => {
            for part in text.split(',') {
                check_text(spec, &schema["items"], part.trim_matches('"'), at, out);
            }
            true
        }
        _ => {
            check_string(schema, text, at, out);
            true
        }
    };
    if !ok {
        out.push(format!("{at}: `{text}` is not a {}", schema["type"]));
    }
}

fn check_string(schema: &Value, text: &str, at: &str, out: &mut Vec<String>) {
    let valid = match schema["format"].as_str() {
        // RFC 3339: a date, a time and an offset (`Z` or `±hh:mm`).
        Some("date-time") => chrono::DateTime::parse_from_rfc3339(text).is_ok(),
        Some("date") => chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok(),
        Some("uuid") => uuid::Uuid::parse_str(text).is_ok(),
        _ => true,
    };
    if !valid {
        out.push(format!("{at}: `{text}` is not a {}", schema["format"]));
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.iter().any(|a| a == text)
    {
        out.push(format!(
            "{at}: `{text}` is not one of {}",
            Value::Array(allowed.clone())
        ));
    }
    if let Some(max) = schema["maxLength"].as_u64()
        && text.chars().count() as u64 > max
    {
        out.push(format!("{at}: longer than {max} characters"));
    }
}

fn check_body(spec: &Value, op: &Value, r: &ReceivedRequest, out: &mut Vec<String>) {
    let declared = resolve(spec, &op["requestBody"]);
    let sent = !r.body.trim().is_empty();
    if declared.is_null() {
        if sent {
            out.push("sends a body, which the operation does not take".into());
        }
        return;
    }
    if !sent {
        if declared["required"] == true {
            out.push("the required body is missing".into());
        }
        return;
    }
    let Some(schema) = declared["content"]["application/json"].get("schema") else {
        out.push("sends JSON to an operation that takes no JSON body".into());
        return;
    };
    if !r
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json"))
    {
        out.push(format!(
            "body sent as {:?}, not application/json",
            r.header("content-type")
        ));
    }
    match serde_json::from_str::<Value>(&r.body) {
        Ok(body) => check_json(spec, schema, &body, "body", 0, out),
        Err(e) => out.push(format!("the body is not JSON: {e}")),
    }
}

/// A JSON value against a schema: type, string formats, enums and lengths, required
/// properties, recursively through properties and array items.
fn check_json(
    spec: &Value,
    schema: &Value,
    value: &Value,
    at: &str,
    depth: usize,
    out: &mut Vec<String>,
) {
    let schema = resolve(spec, schema);
    // Xero reads a null as "not given"; the recursion stops at the spec's cycles.
    if value.is_null() || depth > 16 {
        return;
    }
    let kind = schema["type"]
        .as_str()
        .or_else(|| schema.get("properties").map(|_| "object"));
    let fits = match kind {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("number") => value.is_number(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("boolean") => value.is_boolean(),
        _ => true,
    };
    if !fits {
        out.push(format!(
            "{at}: {value} is not a{} {}",
            if kind == Some("object") || kind == Some("array") || kind == Some("integer") {
                "n"
            } else {
                ""
            },
            kind.unwrap_or_default()
        ));
        return;
    }
    match value {
        Value::String(text) => check_string(schema, text, at, out),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check_json(
                    spec,
                    &schema["items"],
                    item,
                    &format!("{at}[{i}]"),
                    depth + 1,
                    out,
                );
            }
        }
        Value::Object(map) => {
            for name in schema["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if map.get(name).is_none_or(Value::is_null) {
                    out.push(format!("{at}: the required property {name} is missing"));
                }
            }
            for (name, v) in map {
                if let Some(property) = schema["properties"].get(name) {
                    check_json(spec, property, v, &format!("{at}.{name}"), depth + 1, out);
                }
            }
        }
        _ => {}
    }
}

fn request(
    method: &str,
    path: &str,
    query: &[(&str, &str)],
    headers: &[(&str, &str)],
    body: &str,
) -> ReceivedRequest {
    ReceivedRequest {
        method: method.into(),
        path: path.into(),
        query: query
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
        body: body.into(),
    }
}

const TENANT: (&str, &str) = ("xero-tenant-id", "00000000-0000-0000-0000-000000000001");
const JSON: (&str, &str) = ("content-type", "application/json");

#[test]
fn the_spec_validator_accepts_valid_calls() {
    let valid = [
        request(
            "GET",
            "/api.xro/2.0/Contacts",
            &[
                ("page", "2"),
                ("includeArchived", "true"),
                ("order", "UpdatedDateUTC ASC"),
            ],
            &[TENANT, ("if-modified-since", "2026-12-01T08:55:31Z")],
            "",
        ),
        request(
            "PUT",
            "/api.xro/2.0/Items",
            &[("summarizeErrors", "false")],
            &[TENANT, JSON, ("idempotency-key", "psl-1")],
            r#"{"Items": [{"Code": "X-1", "Name": "Widget", "SalesDetails": {"UnitPrice": 9.5}}]}"#,
        ),
        request("GET", "/connections", &[], &[], ""),
        request("POST", TOKEN_PATH, &[], &[], ""),
    ];
    let Some(specs) = specs() else {
        return;
    };
    for r in &valid {
        assert_eq!(problems(specs, r), Vec::<String>::new(), "{r:?}");
    }
}

/// Invalid requests and a part of the problem each must be reported with.
fn invalid_calls() -> Vec<(ReceivedRequest, &'static str)> {
    let get = |path: &str, query: &[(&str, &str)], headers: &[(&str, &str)]| {
        request("GET", path, query, headers, "")
    };
    let put = |path: &str, body: &str| request("PUT", path, &[], &[TENANT, JSON], body);
    vec![
        // What the connector sent before it gave the offset.
        (
            get(
                "/api.xro/2.0/Items",
                &[],
                &[TENANT, ("if-modified-since", "2026-12-01T08:55:31")],
            ),
            "header if-modified-since: `2026-12-01T08:55:31` is not a \"date-time\"",
        ),
        (
            get("/api.xro/2.0/Items", &[], &[]),
            "the required header xero-tenant-id is missing",
        ),
        (
            get("/api.xro/2.0/Items", &[("page", "1")], &[TENANT]),
            "query parameter page is not a parameter",
        ),
        (
            get("/api.xro/2.0/Contacts", &[("page", "one")], &[TENANT]),
            "query page: `one` is not a \"integer\"",
        ),
        (
            get(
                "/api.xro/2.0/Contacts",
                &[],
                &[TENANT, ("idempotency-key", "k")],
            ),
            "sends header idempotency-key",
        ),
        (
            get("//api.xro/2.0/Contacts", &[], &[TENANT]),
            "no path of the spec matches",
        ),
        (
            request("PATCH", "/api.xro/2.0/Contacts", &[], &[TENANT], ""),
            "the spec has no PATCH /Contacts",
        ),
        (
            put("/api.xro/2.0/Contacts", ""),
            "the required body is missing",
        ),
        (
            put("/api.xro/2.0/Contacts", r#"{"Contacts": [{"Name": 7}]}"#),
            "body.Contacts[0].Name: 7 is not a string",
        ),
        (
            put("/api.xro/2.0/Quotes", r#"{"Quotes": [{"Status": "OPEN"}]}"#),
            "body.Quotes[0].Status: `OPEN` is not one of",
        ),
        (
            put(
                "/api.xro/2.0/Quotes",
                r#"{"Quotes": [{"Contact": {"ContactID": "x"}}]}"#,
            ),
            "body.Quotes[0].Contact.ContactID: `x` is not a \"uuid\"",
        ),
    ]
}

#[test]
fn the_spec_validator_reports_each_departure_from_the_spec() {
    let Some(specs) = specs() else {
        return;
    };
    for (r, expected) in invalid_calls() {
        let found = problems(specs, &r);
        assert!(
            found.iter().any(|p| p.contains(expected)),
            "{r:?}: expected `{expected}`, found {found:?}"
        );
    }
}
