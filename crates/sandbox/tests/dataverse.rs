//! The Dataverse (Dynamics 365) simulator over real HTTP, against Microsoft's documented
//! behaviour (`shared/erp/APIS.md`): client-credentials tokens, 204 + `OData-EntityId`,
//! alternate-key upserts, lookups, paging with `@odata.nextLink`, service protection 429s.

// Tests fail loudly on the first unexpected error; that is what unwrap is for here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use passerelle_sandbox::Sandbox;
use passerelle_sandbox::dataverse::{DataverseEnvConfig, DataverseLimits, Fault};
use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

const ORG: &str = "contoso";
const TENANT: &str = "00000000-aaaa-bbbb-cccc-000000000001";
const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
const SECRET: &str = "dv~s3cret";

struct Dv {
    sandbox: Sandbox,
    http: Client,
    token: String,
}

async fn dv_with(tune: impl FnOnce(&mut DataverseEnvConfig)) -> Dv {
    let sandbox = Sandbox::start(0).await.unwrap();
    let mut config = DataverseEnvConfig::new(ORG, TENANT, CLIENT_ID, SECRET);
    tune(&mut config);
    sandbox.dataverse().try_add_environment(config).unwrap();
    let mut dv = Dv {
        sandbox,
        http: Client::new(),
        token: String::new(),
    };
    let answer = dv.token_request(SECRET, &dv.scope()).await;
    assert_eq!(answer.status(), StatusCode::OK);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    dv.token = body["access_token"].as_str().unwrap().to_owned();
    dv
}

async fn dv() -> Dv {
    dv_with(|_| {}).await
}

impl Dv {
    fn env_url(&self) -> String {
        format!("{}/env/{ORG}", self.sandbox.dataverse_url())
    }

    fn scope(&self) -> String {
        format!("{}/.default", self.env_url())
    }

    async fn token_request(&self, secret: &str, scope: &str) -> Response {
        self.http
            .post(format!(
                "{}/login/{TENANT}/oauth2/v2.0/token",
                self.sandbox.dataverse_url()
            ))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(
                url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs([
                        ("grant_type", "client_credentials"),
                        ("client_id", CLIENT_ID),
                        ("client_secret", secret),
                        ("scope", scope),
                    ])
                    .finish(),
            )
            .send()
            .await
            .unwrap()
    }

    fn call(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}/api/data/v9.2/{path}", self.env_url()))
            .bearer_auth(&self.token)
    }

    fn units(&self) -> (String, String) {
        let (s, u) = self.sandbox.dataverse().default_unit(ORG).unwrap();
        (s.to_string(), u.to_string())
    }
}

fn entity_id(response: &Response) -> String {
    let header = response
        .headers()
        .get("OData-EntityId")
        .unwrap()
        .to_str()
        .unwrap();
    header
        .rsplit_once('(')
        .unwrap()
        .1
        .trim_end_matches(')')
        .to_owned()
}

#[tokio::test]
async fn the_token_endpoint_wants_the_secret_and_the_environment_scope() {
    let dv = dv().await;
    let wrong = dv.token_request("nope", &dv.scope()).await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let body: Value = wrong.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS7000215")
    );
    let scope = dv.token_request(SECRET, &dv.env_url()).await;
    assert_eq!(scope.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        scope.json::<Value>().await.unwrap()["error"],
        "invalid_scope"
    );
    let whoami = dv.call(Method::GET, "WhoAmI").send().await.unwrap();
    assert_eq!(whoami.status(), StatusCode::OK);
    assert!(whoami.json::<Value>().await.unwrap()["UserId"].is_string());
    let stats = dv.sandbox.dataverse().stats(ORG).unwrap();
    assert_eq!((stats.tokens_issued, stats.rejected_token_requests), (1, 1));
}

#[tokio::test]
async fn an_expired_token_gets_401_with_www_authenticate() {
    let dv = dv().await;
    assert_eq!(dv.sandbox.dataverse().expire_access_tokens(ORG), 1);
    let r = dv.call(Method::GET, "WhoAmI").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    assert_eq!(
        dv.sandbox
            .dataverse()
            .stats(ORG)
            .unwrap()
            .expired_token_calls,
        1
    );
}

#[tokio::test]
async fn a_create_answers_204_with_the_entity_id_or_201_with_the_record() {
    let dv = dv().await;
    let r = dv
        .call(Method::POST, "accounts")
        .json(&json!({"name": "Fourth Coffee", "accountnumber": "A-1", "emailaddress1": "a@x.example"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let id = entity_id(&r);
    assert!(
        r.headers()["OData-EntityId"]
            .to_str()
            .unwrap()
            .starts_with(&format!("{}/api/data/v9.2/accounts(", dv.env_url()))
    );
    let got: Value = dv
        .call(
            Method::GET,
            &format!("accounts({id})?$select=name,modifiedon"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["name"], "Fourth Coffee");
    assert_eq!(got["accountid"], id.as_str());
    assert!(got["modifiedon"].as_str().unwrap().ends_with('Z'));
    assert!(
        got.get("emailaddress1").is_none(),
        "$select is honoured: {got}"
    );
    let r = dv
        .call(Method::POST, "accounts")
        .header("Prefer", "return=representation")
        .json(&json!({"name": "Litware"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.json::<Value>().await.unwrap()["name"], "Litware");
}

#[tokio::test]
async fn an_alternate_key_upsert_creates_once_and_then_updates() {
    let dv = dv().await;
    let upsert = |name: &'static str| {
        dv.call(Method::PATCH, "accounts(accountnumber='O''Neil-1')")
            .json(&json!({"name": name}))
            .send()
    };
    let first = upsert("O'Neil").await.unwrap();
    assert_eq!(first.status(), StatusCode::NO_CONTENT);
    let second = upsert("O'Neil Ltd").await.unwrap();
    assert_eq!(second.status(), StatusCode::NO_CONTENT);
    assert_eq!(entity_id(&first), entity_id(&second));
    let stats = dv.sandbox.dataverse().stats(ORG).unwrap();
    assert_eq!(stats.creates_by_key["accounts:O'Neil-1"], 1);
    assert_eq!(
        (stats.creates["accounts"], stats.updates["accounts"]),
        (1, 1)
    );
    let row = &dv.sandbox.dataverse().records(ORG, "accounts")[0];
    assert_eq!(
        (row["name"].as_str(), row["accountnumber"].as_str()),
        (Some("O'Neil Ltd"), Some("O'Neil-1"))
    );
    // If-Match: * forbids the create, If-None-Match: * the update.
    let r = dv
        .call(Method::PATCH, "accounts(accountnumber='missing')")
        .header("If-Match", "*")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = dv
        .call(Method::PATCH, "accounts(accountnumber='O''Neil-1')")
        .header("If-None-Match", "*")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    // A POST of an existing key is a duplicate key error.
    let r = dv
        .call(Method::POST, "accounts")
        .json(&json!({"name": "x", "accountnumber": "o'neil-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "0x80060892"
    );
    assert!(
        dv.sandbox
            .dataverse()
            .stats(ORG)
            .unwrap()
            .duplicate_creates
            .is_empty()
    );
}

#[tokio::test]
async fn an_update_by_id_with_if_match_never_recreates_a_deleted_row() {
    let dv = dv().await;
    let r = dv
        .call(Method::POST, "accounts")
        .json(&json!({"name": "Gone"}))
        .send()
        .await
        .unwrap();
    let id = entity_id(&r);
    let d = dv
        .call(Method::DELETE, &format!("accounts({id})"))
        .send()
        .await
        .unwrap();
    assert_eq!(d.status(), StatusCode::NO_CONTENT);
    let r = dv
        .call(Method::PATCH, &format!("accounts({id})"))
        .header("If-Match", "*")
        .json(&json!({"name": "Back"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "0x80040217");
}

#[tokio::test]
async fn products_need_their_unit_lookups_and_refuse_unknown_columns() {
    let dv = dv().await;
    let (schedule, unit) = dv.units();
    let missing = dv
        .call(Method::PATCH, "products(productnumber='SKU-1')")
        .json(&json!({"name": "Widget", "price": 9.5}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        missing.json::<Value>().await.unwrap()["error"]["code"],
        "0x80040200"
    );
    let ok = dv
        .call(Method::PATCH, "products(productnumber='SKU-1')")
        .json(&json!({"name": "Widget", "price": 9.5,
            "defaultuomscheduleid@odata.bind": format!("/uomschedules({schedule})"),
            "defaultuomid@odata.bind": format!("/uoms({unit})")}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::NO_CONTENT);
    let unknown = dv
        .call(Method::PATCH, "products(productnumber='SKU-1')")
        .json(&json!({"colour": "red"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    assert!(
        unknown.json::<Value>().await.unwrap()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Invalid property 'colour'")
    );
    let long = dv
        .call(Method::PATCH, "products(productnumber='SKU-1')")
        .json(&json!({"name": "n".repeat(101)}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        long.json::<Value>().await.unwrap()["error"]["code"],
        "0x80044331"
    );
}

#[tokio::test]
async fn collections_filter_on_modifiedon_and_page_with_next_links() {
    let dv = dv().await;
    for i in 0..7 {
        dv.call(Method::PATCH, &format!("accounts(accountnumber='A-{i}')"))
            .json(&json!({"name": format!("Account {i}")}))
            .send()
            .await
            .unwrap();
    }
    let since = (chrono::Utc::now() - chrono::Duration::minutes(1))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let mut url = format!(
        "{}/api/data/v9.2/accounts?$select=name,accountnumber,modifiedon&$filter=modifiedon ge {since}&$orderby=modifiedon asc",
        dv.env_url()
    );
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let r = dv
            .http
            .get(&url)
            .bearer_auth(&dv.token)
            .header("Prefer", "odata.maxpagesize=3")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["Preference-Applied"], "odata.maxpagesize=3");
        let body: Value = r.json().await.unwrap();
        pages += 1;
        for row in body["value"].as_array().unwrap() {
            assert!(row["@odata.etag"].as_str().unwrap().starts_with("W/\""));
            seen.push(row["accountnumber"].as_str().unwrap().to_owned());
        }
        match body["@odata.nextLink"].as_str() {
            Some(next) => url = next.to_owned(),
            None => break,
        }
    }
    assert_eq!((pages, seen.len()), (3, 7));
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 7);
    let future = (chrono::Utc::now() + chrono::Duration::minutes(1))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let none: Value = dv
        .call(
            Method::GET,
            &format!("accounts?$filter=modifiedon ge {future}"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(none["value"].as_array().unwrap().len(), 0);
    let bad = dv
        .call(Method::GET, "accounts?$filter=fax eq 'x'")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn service_protection_answers_429_with_retry_after_and_counts_violations() {
    let dv = dv_with(|c| {
        c.limits = DataverseLimits {
            requests: Some(2),
            concurrent: Some(52),
            window_ms: 1_000,
        };
    })
    .await;
    // Align on a fresh window so the two allowed calls land in one.
    let ms = chrono::Utc::now().timestamp_subsec_millis();
    tokio::time::sleep(std::time::Duration::from_millis(u64::from(1_000 - ms) + 10)).await;
    for _ in 0..2 {
        let r = dv.call(Method::GET, "WhoAmI").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let r = dv.call(Method::GET, "WhoAmI").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "0x80072322"
    );
    let again = dv.call(Method::GET, "WhoAmI").send().await.unwrap();
    assert_eq!(again.status(), StatusCode::TOO_MANY_REQUESTS);
    let stats = dv.sandbox.dataverse().stats(ORG).unwrap();
    assert_eq!((stats.rate_limited, stats.violations), (2, 1));
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let r = dv.call(Method::GET, "WhoAmI").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_dropped_response_still_creates_and_a_repeated_upsert_does_not_duplicate() {
    let dv = dv().await;
    dv.sandbox.dataverse().inject(
        ORG,
        Fault::DropResponse {
            times: 1,
            method: Some("PATCH".into()),
            path_contains: None,
        },
    );
    let send = || {
        dv.call(Method::PATCH, "accounts(accountnumber='PAS-9')")
            .json(&json!({"name": "Nine"}))
            .send()
    };
    let lost = send().await.unwrap();
    assert_eq!(lost.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(lost.json::<Value>().await.unwrap()["error"]["code"].is_string());
    let repeat = send().await.unwrap();
    assert_eq!(repeat.status(), StatusCode::NO_CONTENT);
    let stats = dv.sandbox.dataverse().stats(ORG).unwrap();
    assert_eq!(stats.creates_by_key["accounts:PAS-9"], 1);
    assert_eq!(stats.records["accounts"], 1);
}

#[tokio::test]
async fn sales_orders_need_a_customer_and_price_list_and_their_lines_filter_by_order() {
    let dv = dv().await;
    let (schedule, unit) = dv.units();
    let price_list = dv.sandbox.dataverse().price_list(ORG).unwrap();
    let account = entity_id(
        &dv.call(Method::PATCH, "accounts(accountnumber='PAS-1')")
            .json(&json!({"name": "Buyer"}))
            .send()
            .await
            .unwrap(),
    );
    let product = entity_id(
        &dv.call(Method::PATCH, "products(productnumber='SKU-1')")
            .json(&json!({"name": "Widget",
                "defaultuomscheduleid@odata.bind": format!("/uomschedules({schedule})"),
                "defaultuomid@odata.bind": format!("/uoms({unit})")}))
            .send()
            .await
            .unwrap(),
    );
    let dangling = dv
        .call(Method::PATCH, "salesorders(ordernumber='O-1')")
        .json(&json!({"name": "Order O-1",
            "customerid_account@odata.bind": format!("/accounts({})", uuid::Uuid::new_v4()),
            "pricelevelid@odata.bind": format!("/pricelevels({price_list})")}))
        .send()
        .await
        .unwrap();
    assert_eq!(dangling.status(), StatusCode::NOT_FOUND);
    let no_price_list = dv
        .call(Method::PATCH, "salesorders(ordernumber='O-1')")
        .json(&json!({"name": "Order O-1",
            "customerid_account@odata.bind": format!("/accounts({account})")}))
        .send()
        .await
        .unwrap();
    assert_eq!(no_price_list.status(), StatusCode::BAD_REQUEST);
    let order = dv
        .call(Method::PATCH, "salesorders(ordernumber='O-1')")
        .json(&json!({"name": "Order O-1",
            "customerid_account@odata.bind": format!("/accounts({account})"),
            "pricelevelid@odata.bind": format!("/pricelevels({price_list})")}))
        .send()
        .await
        .unwrap();
    assert_eq!(order.status(), StatusCode::NO_CONTENT);
    let order = entity_id(&order);
    for n in 1..=2 {
        let line = dv
            .call(Method::POST, "salesorderdetails")
            .json(
                &json!({"lineitemnumber": n, "quantity": 2, "priceperunit": 10.5,
                "ispriceoverridden": true,
                "salesorderid@odata.bind": format!("/salesorders({order})"),
                "productid@odata.bind": format!("/products({product})"),
                "uomid@odata.bind": format!("/uoms({unit})")}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(line.status(), StatusCode::NO_CONTENT);
    }
    let lines: Value = dv
        .call(
            Method::GET,
            &format!(
                "salesorderdetails?$select=lineitemnumber&$filter=_salesorderid_value eq {order}"
            ),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(lines["value"].as_array().unwrap().len(), 2, "{lines}");
    let row = &dv.sandbox.dataverse().records(ORG, "salesorders")[0];
    assert_eq!(row["_customerid_value"], account.as_str());
    let stats = dv.sandbox.dataverse().stats(ORG).unwrap();
    assert_eq!(stats.records["salesorderdetails"], 2);
}

#[tokio::test]
async fn an_invoice_takes_a_write_in_line_and_its_number_is_an_alternate_key() {
    let dv = dv().await;
    let price_list = dv.sandbox.dataverse().price_list(ORG).unwrap();
    let account = entity_id(
        &dv.call(Method::PATCH, "accounts(accountnumber='PAS-1')")
            .json(&json!({"name": "Buyer"}))
            .send()
            .await
            .unwrap(),
    );
    let body = json!({"name": "Invoice INV-1", "duedate": "2026-12-24",
        "customerid_account@odata.bind": format!("/accounts({account})"),
        "pricelevelid@odata.bind": format!("/pricelevels({price_list})")});
    let first = dv
        .call(Method::PATCH, "invoices(invoicenumber='INV-1')")
        .json(&body)
        .send()
        .await
        .unwrap();
    let again = dv
        .call(Method::PATCH, "invoices(invoicenumber='INV-1')")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(entity_id(&first), entity_id(&again));
    let invoice = entity_id(&first);
    let line = dv
        .call(Method::POST, "invoicedetails")
        .json(&json!({"lineitemnumber": 1, "isproductoverridden": true,
            "productdescription": "Invoice INV-1", "quantity": 1, "priceperunit": 99.5,
            "invoiceid@odata.bind": format!("/invoices({invoice})")}))
        .send()
        .await
        .unwrap();
    assert_eq!(line.status(), StatusCode::NO_CONTENT);
    let stats = dv.sandbox.dataverse().stats(ORG).unwrap();
    assert_eq!(
        (stats.creates["invoices"], stats.records["invoicedetails"]),
        (1, 1)
    );
    assert_eq!(stats.creates_by_key["invoices:INV-1"], 1);
}

// --- $batch ---

/// A `$batch` body of `(method, url, json body)` requests, one `application/http` part each.
fn batch_body(boundary: &str, requests: &[(&str, String, Value)]) -> String {
    let mut out = String::new();
    for (method, url, body) in requests {
        out.push_str(&format!(
            "--{boundary}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n{method} {url} HTTP/1.1\r\nContent-Type: application/json\r\n\r\n{body}\r\n"
        ));
    }
    out.push_str(&format!("--{boundary}--\r\n"));
    out
}

/// One part of a `$batch` response: status, headers (names lowercased), body.
type Part = (u16, Vec<(String, String)>, String);

/// The parts of a `$batch` response.
fn batch_parts(content_type: &str, body: &str) -> Vec<Part> {
    let boundary = content_type.split("boundary=").nth(1).unwrap().trim();
    assert!(boundary.starts_with("batchresponse_"));
    let closing = format!("--{boundary}--");
    assert!(body.trim_end().ends_with(&closing));
    body.trim_end()
        .trim_end_matches(&closing)
        .split(&format!("--{boundary}\r\n"))
        .filter(|p| !p.is_empty())
        .map(|part| {
            let (mime, http) = part.split_once("\r\n\r\n").unwrap();
            assert!(mime.contains("Content-Type: application/http"));
            assert!(mime.contains("Content-Transfer-Encoding: binary"));
            let (head, body) = http.split_once("\r\n\r\n").unwrap();
            let mut lines = head.split("\r\n");
            let status = lines
                .next()
                .unwrap()
                .split(' ')
                .nth(1)
                .unwrap()
                .parse()
                .unwrap();
            let headers = lines
                .map(|l| {
                    let (n, v) = l.split_once(':').unwrap();
                    (n.trim().to_ascii_lowercase(), v.trim().to_owned())
                })
                .collect();
            (status, headers, body.trim_end().to_owned())
        })
        .collect()
}

impl Dv {
    async fn batch(&self, body: String, continue_on_error: bool) -> Response {
        let mut request = self
            .call(Method::POST, "$batch")
            .header("Content-Type", "multipart/mixed; boundary=batch_42")
            .body(body);
        if continue_on_error {
            request = request.header("Prefer", "odata.continue-on-error");
        }
        request.send().await.unwrap()
    }
}

fn account_upserts(numbers: &[&str]) -> Vec<(&'static str, String, Value)> {
    numbers
        .iter()
        .map(|n| {
            (
                "PATCH",
                format!("/api/data/v9.2/accounts(accountnumber='{n}')"),
                json!({"name": format!("Account {n}")}),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_batch_of_upserts_creates_each_record_once_and_counts_as_one_request() {
    let dv = dv().await;
    let requests = account_upserts(&["B-1", "B-2", "B-3"]);
    for round in 0..2 {
        let r = dv.batch(batch_body("batch_42", &requests), true).await;
        assert_eq!(r.status(), StatusCode::OK);
        let content_type = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with("multipart/mixed"));
        let parts = batch_parts(&content_type, &r.text().await.unwrap());
        assert_eq!(parts.len(), 3, "round {round}");
        for (status, headers, body) in &parts {
            assert_eq!(*status, 204);
            assert!(body.is_empty());
            let id = headers.iter().find(|(n, _)| n == "odata-entityid").unwrap();
            assert!(id.1.contains("/api/data/v9.2/accounts("));
        }
    }
    let stats = dv.sandbox.dataverse().stats(ORG).unwrap();
    // The repeated batch updated: nothing was created twice.
    for n in ["B-1", "B-2", "B-3"] {
        assert_eq!(stats.creates_by_key[&format!("accounts:{n}")], 1);
    }
    assert_eq!(stats.records["accounts"], 3);
    assert!(stats.duplicate_creates.is_empty());
    assert_eq!(
        (stats.creates["accounts"], stats.updates["accounts"]),
        (3, 3)
    );
    // Two batches, two requests toward the service protection limits.
    assert_eq!(stats.requests, 2);
}

#[tokio::test]
async fn a_failed_request_in_a_batch_answers_in_its_part_and_the_rest_continue() {
    let dv = dv().await;
    let mut requests = account_upserts(&["C-1", "C-2", "C-3"]);
    // An unknown column: Dataverse refuses this one request with 400.
    requests[1].2 = json!({"name": "bad", "no_such_column": 1});
    let r = dv.batch(batch_body("batch_42", &requests), true).await;
    assert_eq!(r.status(), StatusCode::OK);
    let content_type = r.headers()["content-type"].to_str().unwrap().to_owned();
    let parts = batch_parts(&content_type, &r.text().await.unwrap());
    let statuses: Vec<u16> = parts.iter().map(|p| p.0).collect();
    assert_eq!(statuses, [204, 400, 204]);
    let error: Value = serde_json::from_str(&parts[1].2).unwrap();
    assert!(error["error"]["code"].is_string());
    assert!(error["error"]["message"].is_string());
    let numbers: Vec<String> = dv
        .sandbox
        .dataverse()
        .records(ORG, "accounts")
        .iter()
        .map(|r| r["accountnumber"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(numbers.len(), 2);
    assert!(numbers.contains(&"C-1".to_owned()) && numbers.contains(&"C-3".to_owned()));

    // Without continue-on-error the batch stops at the failure.
    let mut requests = account_upserts(&["D-1", "D-2", "D-3"]);
    requests[0].2 = json!({"no_such_column": 1});
    let r = dv.batch(batch_body("batch_42", &requests), false).await;
    let content_type = r.headers()["content-type"].to_str().unwrap().to_owned();
    let parts = batch_parts(&content_type, &r.text().await.unwrap());
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0].0, 400);
    assert_eq!(dv.sandbox.dataverse().records(ORG, "accounts").len(), 2);
}

#[tokio::test]
async fn an_injected_fault_hits_the_matching_request_inside_a_batch() {
    let dv = dv().await;
    dv.sandbox.dataverse().inject(
        ORG,
        Fault::Status {
            status: 503,
            retry_after: None,
            times: 1,
            method: Some("PATCH".into()),
            path_contains: Some("E-2".into()),
        },
    );
    let requests = account_upserts(&["E-1", "E-2"]);
    let r = dv.batch(batch_body("batch_42", &requests), true).await;
    let content_type = r.headers()["content-type"].to_str().unwrap().to_owned();
    let parts = batch_parts(&content_type, &r.text().await.unwrap());
    let statuses: Vec<u16> = parts.iter().map(|p| p.0).collect();
    assert_eq!(statuses, [204, 503]);
}

#[tokio::test]
async fn a_malformed_batch_is_refused_with_400() {
    let dv = dv().await;
    let good = batch_body("batch_42", &account_upserts(&["M-1"]));
    let bodies = [
        // No closing boundary.
        good.trim_end().trim_end_matches("--batch_42--").to_owned(),
        // Not application/http.
        good.replace("Content-Type: application/http", "Content-Type: text/plain"),
        // A broken request line.
        good.replace(" HTTP/1.1", ""),
        // Not multipart at all.
        "{\"name\":\"x\"}".to_owned(),
    ];
    for body in bodies {
        let r = dv.batch(body, true).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let error: Value = r.json().await.unwrap();
        assert!(error["error"]["code"].is_string());
        assert!(error["error"]["message"].is_string());
    }
    // A wrong content type.
    let r = dv
        .call(Method::POST, "$batch")
        .header("Content-Type", "application/json")
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // More than 1,000 requests.
    let numbers: Vec<String> = (0..1001).map(|i| format!("N-{i}")).collect();
    let refs: Vec<&str> = numbers.iter().map(String::as_str).collect();
    let r = dv
        .batch(batch_body("batch_42", &account_upserts(&refs)), true)
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(dv.sandbox.dataverse().records(ORG, "accounts").is_empty());
}
