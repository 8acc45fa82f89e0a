//! The Odoo simulator over real HTTP, against Odoo's documented behaviour
//! (`shared/erp/APIS.md` §5): XML-RPC fault codes, JSON-2 statuses and error bodies, the
//! ORM's semantics (batch create, domains, order, active_test), and injected faults.

// Tests fail loudly on the first unexpected error; that is what unwrap is for here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{Duration as TimeDelta, Utc};
use passerelle_sandbox::Sandbox;
use passerelle_sandbox::odoo::{Fault, OdooDatabaseConfig};
use reqwest::{Client, StatusCode};
use serde_json::{Map, Value, json};

const DB: &str = "wholesale";
const KEY: &str = "0123456789abcdef0123456789abcdef01234567";

fn to_xmlrpc(value: &Value) -> dxr::Value {
    match value {
        Value::Null => dxr::Value::Nil,
        Value::Bool(b) => dxr::Value::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => dxr::Value::Integer(i32::try_from(i).unwrap()),
            None => dxr::Value::Double(n.as_f64().unwrap()),
        },
        Value::String(s) => dxr::Value::String(s.clone()),
        Value::Array(items) => dxr::Value::Array(items.iter().map(to_xmlrpc).collect()),
        Value::Object(map) => {
            dxr::Value::Struct(map.iter().map(|(k, v)| (k.clone(), to_xmlrpc(v))).collect())
        }
    }
}

fn from_xmlrpc(value: dxr::Value) -> Value {
    match value {
        dxr::Value::Integer(i) => json!(i),
        dxr::Value::Long(i) => json!(i),
        dxr::Value::Boolean(b) => json!(b),
        dxr::Value::String(s) => json!(s),
        dxr::Value::Double(d) => json!(d),
        dxr::Value::Struct(m) => {
            Value::Object(m.into_iter().map(|(k, v)| (k, from_xmlrpc(v))).collect())
        }
        dxr::Value::Array(a) => Value::Array(a.into_iter().map(from_xmlrpc).collect()),
        other => panic!("unexpected XML-RPC value {other:?}"),
    }
}

struct Odoo {
    sandbox: Sandbox,
    http: Client,
}

/// An XML-RPC answer: the value, or the fault's code and string.
type Rpc = Result<Value, (i32, String)>;

async fn odoo_with(configs: Vec<OdooDatabaseConfig>) -> Odoo {
    let sandbox = Sandbox::start(0).await.unwrap();
    for config in configs {
        sandbox.odoo().try_add_database(config).unwrap();
    }
    Odoo {
        sandbox,
        http: Client::new(),
    }
}

fn config(version: u32) -> OdooDatabaseConfig {
    OdooDatabaseConfig::new(DB, version, "bot@example.com", "s3cret").with_api_key(KEY, None)
}

async fn odoo(version: u32) -> Odoo {
    odoo_with(vec![config(version)]).await
}

impl Odoo {
    async fn rpc_raw(&self, service: &str, body: String) -> (StatusCode, String, String) {
        let response = self
            .http
            .post(format!("{}/xmlrpc/2/{service}", self.sandbox.odoo_url()))
            .header("content-type", "text/xml")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let kind = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        (status, kind, response.text().await.unwrap())
    }

    async fn rpc(&self, service: &str, method: &str, params: Value) -> Rpc {
        let call = dxr::MethodCall {
            name: method.into(),
            params: params.as_array().unwrap().iter().map(to_xmlrpc).collect(),
        };
        let (status, kind, text) = self.rpc_raw(service, call.to_xml().unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert!(kind.starts_with("text/xml"), "{kind}");
        match dxr::MethodResponse::from_xml(&text) {
            Ok(response) => Ok(from_xmlrpc(response.value)),
            Err(_) => {
                let fault = dxr::FaultResponse::from_xml(&text).expect(&text).fault;
                Err((fault.code(), fault.string().to_owned()))
            }
        }
    }

    async fn execute(
        &self,
        secret: &str,
        model: &str,
        method: &str,
        args: Value,
        kw: Value,
    ) -> Rpc {
        let params = json!([DB, 2, secret, model, method, args, kw]);
        self.rpc("object", "execute_kw", params).await
    }

    async fn call(&self, model: &str, method: &str, args: Value) -> Value {
        self.call_kw(model, method, args, json!({})).await
    }

    async fn call_kw(&self, model: &str, method: &str, args: Value, kw: Value) -> Value {
        self.execute("s3cret", model, method, args, kw)
            .await
            .unwrap()
    }

    async fn json2(
        &self,
        model: &str,
        method: &str,
        db: Option<&str>,
        key: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .post(format!(
                "{}/json/2/{model}/{method}",
                self.sandbox.odoo_url()
            ))
            .header("authorization", format!("Bearer {key}"))
            .json(&body);
        if let Some(db) = db {
            request = request.header("x-odoo-database", db);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

#[tokio::test]
async fn authenticate_answers_a_uid_or_false_and_version_names_the_first_database() {
    let odoo = odoo(17).await;
    let env = json!({});
    let ok = odoo
        .rpc(
            "common",
            "authenticate",
            json!([DB, "bot@example.com", "s3cret", env]),
        )
        .await;
    assert_eq!(ok, Ok(json!(2)));
    let by_key = odoo
        .rpc(
            "common",
            "authenticate",
            json!([DB, "bot@example.com", KEY, {}]),
        )
        .await;
    assert_eq!(by_key, Ok(json!(2)));
    let refused = odoo
        .rpc("common", "login", json!([DB, "bot@example.com", "wrong"]))
        .await;
    assert_eq!(refused, Ok(json!(false)));
    let (code, text) = odoo
        .rpc("common", "authenticate", json!(["nope", "a", "b", {}]))
        .await
        .unwrap_err();
    assert_eq!(code, 1);
    assert!(text.trim_end().ends_with(
        "psycopg2.OperationalError: connection to server failed: FATAL:  database \"nope\" does not exist"
    ), "{text}");
    let version = odoo.rpc("common", "version", json!([])).await.unwrap();
    assert_eq!(version["server_version"], "17.0");
    assert_eq!(
        version["server_version_info"],
        json!([17, 0, 0, "final", 0, ""])
    );
    assert_eq!(version["protocol_version"], 1);
    let stats = odoo.sandbox.odoo().stats(DB).unwrap();
    assert_eq!(
        (stats.authentications, stats.rejected_authentications),
        (2, 1)
    );
    assert_eq!(stats.xmlrpc_calls, 3);
    assert_eq!(stats.deprecated_rpc_calls, 0);
}

#[tokio::test]
async fn python_written_xml_is_understood_and_answered_in_kind() {
    let odoo = odoo(17).await;
    let body = format!(
        "<?xml version='1.0'?>\n<methodCall>\n<methodName>execute_kw</methodName>\n<params>\n<param>\n<value><string>{DB}</string></value>\n</param>\n<param>\n<value><int>2</int></value>\n</param>\n<param>\n<value>s3cret</value>\n</param>\n<param>\n<value><string>res.partner</string></value>\n</param>\n<param>\n<value><string>create</string></value>\n</param>\n<param>\n<value><array><data>\n<value><struct>\n<member>\n<name>name</name>\n<value><string>Acme</string></value>\n</member>\n<member>\n<name>is_company</name>\n<value><boolean>1</boolean></value>\n</member>\n</struct></value>\n</data></array></value>\n</param>\n</params>\n</methodCall>\n"
    );
    let (status, kind, text) = odoo.rpc_raw("object", body).await;
    assert_eq!(status, StatusCode::OK);
    assert!(kind.starts_with("text/xml"));
    assert!(text.contains("<methodResponse><params><param><value><int>1</int></value></param></params></methodResponse>"), "{text}");
    let (status, _, text) = odoo.rpc_raw("object", "not xml".into()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        text.contains("<name>faultCode</name><value><int>1</int></value>"),
        "{text}"
    );
}

#[tokio::test]
async fn create_write_read_and_keyset_search_read() {
    let odoo = odoo(17).await;
    let one = odoo
        .call(
            "res.partner",
            "create",
            json!([{"name": "Solo", "ref": "C-1"}]),
        )
        .await;
    assert_eq!(one, json!(1));
    let many = odoo
        .call(
            "res.partner",
            "create",
            json!([[{"name": "B", "ref": "C-2"}, {"name": "C", "ref": "C-3"}]]),
        )
        .await;
    assert_eq!(many, json!([2, 3]));
    assert_eq!(
        odoo.call("res.partner", "write", json!([[2], {"email": "b@x.com"}]))
            .await,
        json!(true)
    );
    let read = odoo
        .call("res.partner", "read", json!([[2], ["email", "vat"]]))
        .await;
    assert_eq!(read, json!([{"id": 2, "email": "b@x.com", "vat": false}]));
    let missing = odoo
        .execute(
            "s3cret",
            "res.partner",
            "write",
            json!([[99], {"name": "x"}]),
            json!({}),
        )
        .await;
    let (code, text) = missing.unwrap_err();
    assert_eq!(code, 2);
    assert_eq!(
        text,
        "Record does not exist or has been deleted.\n(Record: res.partner(99,), User: 2)"
    );

    // Keyset paging on (write_date, id): everything after partner 1's stamp, or at it with a
    // higher id.
    let all = odoo
        .call_kw(
            "res.partner",
            "search_read",
            json!([[]]),
            json!({"fields": ["write_date"], "order": "write_date asc, id asc"}),
        )
        .await;
    let stamp = all[0]["write_date"].as_str().unwrap().to_owned();
    assert_eq!(stamp.len(), 19, "{stamp}");
    let domain = json!([
        "|",
        ["write_date", ">", stamp],
        "&",
        ["write_date", "=", stamp],
        ["id", ">", 1]
    ]);
    let page = odoo
        .call_kw(
            "res.partner",
            "search_read",
            json!([domain]),
            json!({"fields": ["id"], "order": "write_date asc, id asc"}),
        )
        .await;
    let ids = |rows: &Value| -> Vec<i64> {
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(ids(&page), ids(&all)[1..].to_vec());
    // Stamps are to the second and never go back: partner 2, written last, is not before
    // the others.
    assert!(all[1]["write_date"].as_str() >= all[0]["write_date"].as_str());

    // Archived records are hidden unless active_test is off.
    odoo.call("res.partner", "write", json!([[3], {"active": false}]))
        .await;
    assert_eq!(
        odoo.call("res.partner", "search", json!([[]])).await,
        json!([1, 2])
    );
    let with_archived = odoo
        .call_kw(
            "res.partner",
            "search",
            json!([[]]),
            json!({"context": {"active_test": false}}),
        )
        .await;
    assert_eq!(with_archived, json!([1, 2, 3]));
    assert_eq!(
        odoo.call(
            "res.partner",
            "search_count",
            json!([[["name", "ilike", "s"]]])
        )
        .await,
        json!(1)
    );

    let stats = odoo.sandbox.odoo().stats(DB).unwrap();
    assert_eq!(stats.creates["res.partner"], 3);
    assert_eq!(stats.creates["sale.order"], 0);
    assert_eq!((stats.create_calls, stats.batch_creates), (2, 1));
    assert_eq!(stats.creates_by_reference["res.partner:ref=C-2"], 1);
    assert_eq!(stats.updates["res.partner"], 2);
    assert_eq!(odoo.sandbox.odoo().records(DB, "res.partner").len(), 3);
}

#[tokio::test]
async fn refusals_carry_odoo_fault_codes() {
    let odoo = odoo(17).await;
    let (code, text) = odoo
        .execute(
            "s3cret",
            "res.partner",
            "create",
            json!([{"email": "x@y"}]),
            json!({}),
        )
        .await
        .unwrap_err();
    assert_eq!(code, 2);
    assert_eq!(
        text,
        "The operation cannot be completed:\n- Create/update: a mandatory field is not set.\n- Delete: another model requires the record being deleted. If possible, archive it instead.\n\nModel: Contact (res.partner)\nField: Name (name)"
    );
    let (code, text) = odoo
        .execute(
            "s3cret",
            "res.partner",
            "create",
            json!([{"name": "A", "foo": 1}]),
            json!({}),
        )
        .await
        .unwrap_err();
    assert_eq!(code, 1);
    assert!(
        text.starts_with("Traceback (most recent call last):"),
        "{text}"
    );
    assert!(
        text.trim_end()
            .ends_with("ValueError: Invalid field 'foo' on model 'res.partner'"),
        "{text}"
    );
    let (code, text) = odoo
        .execute("wrong", "res.partner", "search", json!([[]]), json!({}))
        .await
        .unwrap_err();
    assert_eq!((code, text.as_str()), (3, "Access Denied"));
    let (code, _) = odoo
        .execute(
            "s3cret",
            "res.partner",
            "search_read",
            json!([[["name", "~", "x"]]]),
            json!({}),
        )
        .await
        .unwrap_err();
    assert_eq!(code, 1);
    // Odoo 17 has no is_storable and no combo type.
    let (code, text) = odoo
        .execute(
            "s3cret",
            "product.product",
            "create",
            json!([{"name": "P", "is_storable": true}]),
            json!({}),
        )
        .await
        .unwrap_err();
    assert_eq!(code, 1, "{text}");
    let (code, text) = odoo
        .execute(
            "s3cret",
            "product.product",
            "create",
            json!([{"name": "P", "type": "combo"}]),
            json!({}),
        )
        .await
        .unwrap_err();
    assert_eq!(code, 1);
    assert!(
        text.trim_end()
            .ends_with("ValueError: Wrong value for product.product.type: 'combo'"),
        "{text}"
    );
    let (code, text) = odoo
        .execute(
            "s3cret",
            "sale.order",
            "create",
            json!([{"partner_id": 999}]),
            json!({}),
        )
        .await
        .unwrap_err();
    assert_eq!(code, 2);
    assert_eq!(
        text,
        "Record does not exist or has been deleted.\n(Record: res.partner(999,), User: 2)"
    );
    let stats = odoo.sandbox.odoo().stats(DB).unwrap();
    assert_eq!(stats.rejected_authentications, 1);
    assert_eq!(stats.records["res.partner"], 0);
}

#[tokio::test]
async fn a_batch_with_one_bad_record_creates_nothing() {
    let odoo = odoo(17).await;
    let batch = json!([[{"name": "A", "ref": "R1"}, {"ref": "R2"}, {"name": "C"}]]);
    let (code, _) = odoo
        .execute("s3cret", "res.partner", "create", batch, json!({}))
        .await
        .unwrap_err();
    assert_eq!(code, 2);
    let stats = odoo.sandbox.odoo().stats(DB).unwrap();
    assert_eq!(stats.records["res.partner"], 0);
    assert_eq!(stats.creates["res.partner"], 0);
    assert!(stats.creates_by_reference.is_empty());
    assert_eq!(
        odoo.call("res.partner", "create", json!([{"name": "A"}]))
            .await,
        json!(1)
    );
}

#[tokio::test]
async fn check_vat_refuses_what_is_not_a_vat_number() {
    let mut strict = config(17);
    strict.check_vat = true;
    let odoo = odoo_with(vec![strict]).await;
    let (code, text) = odoo
        .execute(
            "s3cret",
            "res.partner",
            "create",
            json!([{"name": "Acme", "vat": "12"}]),
            json!({}),
        )
        .await
        .unwrap_err();
    assert_eq!(
        (code, text.as_str()),
        (
            2,
            "The VAT number [12] for partner [Acme] does not seem to be valid."
        )
    );
    assert_eq!(
        odoo.call(
            "res.partner",
            "create",
            json!([{"name": "Acme", "vat": "BE0477472701"}])
        )
        .await,
        json!(1)
    );
}

#[tokio::test]
async fn orders_invoices_and_stock() {
    let odoo = odoo(18).await;
    let product = odoo.call("product.product", "create", json!([{"name": "Widget", "default_code": "W-1", "list_price": 2.5, "is_storable": true}])).await;
    let partner = odoo
        .call("res.partner", "create", json!([{"name": "Acme"}]))
        .await;
    let order = odoo
        .call(
            "sale.order",
            "create",
            json!([{"partner_id": partner, "client_order_ref": "PO-1",
        "order_line": [[0, 0, {"product_id": product, "product_uom_qty": 2}]]}]),
        )
        .await;
    let read = odoo
        .call(
            "sale.order",
            "read",
            json!([[order], ["name", "state", "amount_total", "partner_id"]]),
        )
        .await;
    assert_eq!(read[0]["name"], "S00001");
    assert_eq!(read[0]["state"], "draft");
    assert_eq!(read[0]["amount_total"], 5.0);
    assert_eq!(read[0]["partner_id"], json!([partner, "Acme"]));
    let (code, _) = odoo
        .execute(
            "s3cret",
            "account.move",
            "create",
            json!([{"move_type": "out_invoice"}]),
            json!({}),
        )
        .await
        .unwrap_err();
    assert_eq!(code, 2);
    let invoice = odoo.call("account.move", "create", json!([{"move_type": "out_invoice", "partner_id": partner, "ref": "INV-1",
        "invoice_date": "2025-03-01", "invoice_line_ids": [[0, 0, {"name": "Widgets", "quantity": 3, "price_unit": 2}]]}])).await;
    let read = odoo
        .call(
            "account.move",
            "read",
            json!([[invoice], ["name", "amount_total"]]),
        )
        .await;
    assert_eq!(read[0]["name"], "/");
    assert_eq!(read[0]["amount_total"], 6.0);
    odoo.sandbox
        .odoo()
        .set_quant(DB, "W-1", "WH/Stock", 7.0)
        .unwrap();
    let stock = odoo
        .call(
            "product.product",
            "read",
            json!([[product], ["qty_available", "display_name"]]),
        )
        .await;
    assert_eq!(stock[0]["qty_available"], 7.0);
    assert_eq!(stock[0]["display_name"], "[W-1] Widget");
    let (code, _) = odoo
        .execute(
            "s3cret",
            "product.product",
            "write",
            json!([[product], {"qty_available": 1}]),
            json!({}),
        )
        .await
        .unwrap_err();
    assert_eq!(code, 2);
}

#[tokio::test]
async fn json2_creates_a_batch_and_answers_odoo_error_bodies() {
    let odoo = odoo(19).await;
    let (status, ids) = odoo
        .json2(
            "res.partner",
            "create",
            None,
            KEY,
            json!({"vals_list": [{"name": "A"}, {"name": "B"}]}),
        )
        .await;
    assert_eq!((status, ids), (StatusCode::OK, json!([1, 2])));
    let (status, rows) = odoo
        .json2(
            "res.partner",
            "search_read",
            None,
            KEY,
            json!({"domain": [["name", "=", "B"]], "fields": ["name"]}),
        )
        .await;
    assert_eq!(
        (status, rows),
        (StatusCode::OK, json!([{"id": 2, "name": "B"}]))
    );
    let (status, body) = odoo
        .json2("res.partner", "search_read", None, "bad", json!({}))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["name"], "werkzeug.exceptions.Unauthorized");
    assert_eq!(body["message"], "Invalid apikey");
    assert_eq!(body["arguments"], json!(["Invalid apikey", 401]));
    assert_eq!(body["context"], json!({}));
    assert!(body["debug"].as_str().unwrap().starts_with("Traceback"));
    let (status, body) = odoo
        .json2(
            "res.partner",
            "create",
            None,
            KEY,
            json!({"vals_list": [{"email": "x"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["name"], "odoo.exceptions.ValidationError");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .ends_with("Field: Name (name)")
    );
    let (status, body) = odoo
        .json2("res.partner", "search_read", None, KEY, json!({"foo": 1}))
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["name"], "builtins.TypeError");
    assert_eq!(
        body["message"],
        "search_read() got an unexpected keyword argument 'foo'"
    );
    let (status, body) = odoo
        .json2("x.nope", "search", None, KEY, json!({"domain": []}))
        .await;
    assert_eq!(
        (status, body["name"].as_str()),
        (StatusCode::NOT_FOUND, Some("werkzeug.exceptions.NotFound"))
    );
    let (status, body) = odoo
        .json2("res.users", "context_get", None, KEY, json!({}))
        .await;
    assert_eq!((status, body["uid"].clone()), (StatusCode::OK, json!(2)));
    // XML-RPC still answers on 19, and is counted as deprecated.
    assert_eq!(
        odoo.call("res.partner", "search_count", json!([[]])).await,
        json!(2)
    );
    let stats = odoo.sandbox.odoo().stats(DB).unwrap();
    assert_eq!(
        (
            stats.json2_calls,
            stats.deprecated_rpc_calls,
            stats.rejected_authentications
        ),
        (7, 1, 1)
    );
}

#[tokio::test]
async fn json2_needs_19_a_database_header_with_two_databases_and_json() {
    let odoo = odoo(17).await;
    let (status, body) = odoo
        .json2("res.partner", "search", None, KEY, json!({"domain": []}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.as_str().unwrap().contains("Not Found"));

    let other = OdooDatabaseConfig::new("other", 19, "bot", "").with_api_key("k2", None);
    let expired = OdooDatabaseConfig::new("third", 19, "bot", "")
        .with_api_key("old", Some(Utc::now() - TimeDelta::days(1)));
    let odoo = odoo_with(vec![config(19), other, expired]).await;
    let (status, body) = odoo
        .json2("res.partner", "search", None, KEY, json!({"domain": []}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("X-Odoo-Database"),
        "{body}"
    );
    let (status, _) = odoo
        .json2(
            "res.partner",
            "search",
            Some("other"),
            "k2",
            json!({"domain": []}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = odoo
        .json2(
            "res.partner",
            "search",
            Some("other"),
            KEY,
            json!({"domain": []}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "keys belong to their database"
    );
    let (status, _) = odoo
        .json2(
            "res.partner",
            "search",
            Some("third"),
            "old",
            json!({"domain": []}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "an expired key is refused"
    );
    assert!(odoo.sandbox.odoo().revoke_api_key("other", "k2").unwrap());
    let (status, _) = odoo
        .json2(
            "res.partner",
            "search",
            Some("other"),
            "k2",
            json!({"domain": []}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a revoked key is refused");

    let response = odoo
        .http
        .post(format!(
            "{}/json/2/res.partner/search",
            odoo.sandbox.odoo_url()
        ))
        .header("authorization", format!("bearer {KEY}"))
        .header("x-odoo-database", DB)
        .header("content-type", "text/plain")
        .body(r#"{"domain": []}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["message"],
        "State-changing json2 requests must use the 'application/json' Content-Type (CSRF protection)."
    );
}

#[tokio::test]
async fn a_dropped_response_on_order_create_still_creates_over_both_protocols() {
    let odoo = odoo(19).await;
    let partner = odoo
        .call("res.partner", "create", json!([{"name": "Acme"}]))
        .await;
    let drop = || Fault::DropResponse {
        times: 1,
        method: None,
        path_contains: Some("sale.order/create".into()),
    };
    odoo.sandbox.odoo().try_inject(DB, drop()).unwrap();
    // Not a sale.order create: untouched by the fault.
    assert_eq!(
        odoo.call("res.partner", "search", json!([[]])).await,
        json!([1])
    );
    let call = dxr::MethodCall {
        name: "execute_kw".into(),
        params: [
            json!(DB),
            json!(2),
            json!("s3cret"),
            json!("sale.order"),
            json!("create"),
            json!([{"partner_id": partner, "client_order_ref": "PO-9"}]),
        ]
        .iter()
        .map(to_xmlrpc)
        .collect(),
    };
    let (status, _, _) = odoo.rpc_raw("object", call.to_xml().unwrap()).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    odoo.sandbox.odoo().try_inject(DB, drop()).unwrap();
    let body = json!({"vals_list": [{"partner_id": partner, "client_order_ref": "PO-9"}]});
    let (status, _) = odoo.json2("sale.order", "create", None, KEY, body).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let stats = odoo.sandbox.odoo().stats(DB).unwrap();
    assert_eq!(stats.creates["sale.order"], 2);
    assert_eq!(
        stats.creates_by_reference["sale.order:client_order_ref=PO-9"],
        2
    );
    assert_eq!(
        stats.duplicate_references["sale.order"],
        vec!["PO-9".to_owned()]
    );
}

#[tokio::test]
async fn seeds_and_erp_side_edits_move_write_date_but_are_not_counted() {
    let odoo = odoo(17).await;
    let sim = odoo.sandbox.odoo();
    let id = sim
        .upsert_record(DB, "res.partner", json!({"name": "Seeded", "ref": "S-1"}))
        .unwrap();
    sim.touch(DB, "res.partner", id, json!({"email": "s@x"}))
        .unwrap();
    assert!(
        sim.upsert_record(DB, "res.partner", json!({"email": "no name"}))
            .is_err()
    );
    assert!(sim.upsert_record(DB, "x.model", json!({})).is_err());
    let records = sim.records(DB, "res.partner");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["email"], "s@x");
    let stats = sim.stats(DB).unwrap();
    assert_eq!(
        (stats.creates["res.partner"], stats.updates["res.partner"]),
        (0, 0)
    );
    let mut domain = Map::new();
    domain.insert("domain".into(), json!([["ref", "=", "S-1"]]));
    assert_eq!(
        odoo.call_kw("res.partner", "search", json!([]), Value::Object(domain))
            .await,
        json!([id])
    );
}
