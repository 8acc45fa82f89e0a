//! The SAP Business One simulator over real HTTP, against the Service Layer's documented
//! behaviour (`shared/erp/APIS.md` §1): cookie sessions with an idle timeout, SAP's error
//! body, Documents semantics, OData paging.

// Tests fail loudly on the first unexpected error; that is what unwrap is for here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use passerelle_sandbox::Sandbox;
use passerelle_sandbox::sap_b1::{Fault, SapB1CompanyConfig, SapB1Limits};
use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

const DB: &str = "SBODEMOFR";

struct B1 {
    sandbox: Sandbox,
    http: Client,
    cookies: String,
}

async fn b1_with(tune: impl FnOnce(&mut SapB1CompanyConfig)) -> B1 {
    let sandbox = Sandbox::start(0).await.unwrap();
    let mut config = SapB1CompanyConfig::new(DB, "manager", "s3cret");
    tune(&mut config);
    sandbox.sap_b1().try_add_company(config).unwrap();
    let mut b1 = B1 {
        sandbox,
        http: Client::new(),
        cookies: String::new(),
    };
    b1.login().await;
    b1
}

async fn b1() -> B1 {
    b1_with(|_| {}).await
}

impl B1 {
    fn url(&self, path: &str) -> String {
        format!("{}/b1s/v1/{path}", self.sandbox.sap_b1_url())
    }

    async fn login(&mut self) -> Value {
        let r = self
            .http
            .post(self.url("Login"))
            .json(&json!({"CompanyDB": DB, "UserName": "manager", "Password": "s3cret"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let cookies: Vec<String> = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
            .collect();
        assert!(
            cookies.iter().any(|c| c.starts_with("B1SESSION=")),
            "{cookies:?}"
        );
        assert!(
            cookies.iter().any(|c| c.starts_with("ROUTEID=")),
            "{cookies:?}"
        );
        self.cookies = cookies.join("; ");
        r.json().await.unwrap()
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Response {
        let mut req = self
            .http
            .request(method, self.url(path))
            .header("cookie", &self.cookies);
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send().await.unwrap()
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self.call(Method::GET, path, None).await;
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self.call(Method::POST, path, Some(body)).await;
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn seed_partner_and_item(&self) {
        let (s, _) = self
            .post(
                "BusinessPartners",
                json!({"CardCode": "C001", "CardName": "Acme", "CardType": "cCustomer"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
        let (s, _) = self
            .post("Items", json!({"ItemCode": "A001", "ItemName": "Widget"}))
            .await;
        assert_eq!(s, StatusCode::CREATED);
    }
}

fn error_value(body: &Value) -> &str {
    body["error"]["message"]["value"]
        .as_str()
        .unwrap_or_default()
}

#[tokio::test]
async fn login_answers_the_session_and_sets_both_cookies() {
    let mut b1 = b1().await;
    let body = b1.login().await;
    assert!(body["SessionId"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(body["SessionTimeout"], 30, "SAP's default, in minutes");
    let bad = b1
        .http
        .post(b1.url("Login"))
        .json(&json!({"CompanyDB": DB, "UserName": "manager", "Password": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    let stats = b1.sandbox.sap_b1().stats(DB).unwrap();
    assert_eq!((stats.logins, stats.rejected_logins), (2, 1));
}

#[tokio::test]
async fn a_request_without_a_live_session_gets_401_with_sap_s_error_body() {
    let b1 = b1().await;
    let r = b1.http.get(b1.url("Items")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], 301);
    assert_eq!(body["error"]["message"]["lang"], "en-us");
    // B1SESSION alone is not enough: ROUTEID routes to the node holding the session.
    let session_only: String = b1
        .cookies
        .split("; ")
        .find(|c| c.starts_with("B1SESSION"))
        .unwrap()
        .to_owned();
    let r = b1
        .http
        .get(b1.url("Items"))
        .header("cookie", session_only)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(b1.get("Items").await.0, StatusCode::OK);
    assert_eq!(b1.sandbox.sap_b1().expire_sessions(DB), 1);
    let (status, body) = b1.get("Items").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(error_value(&body).contains("timeout"), "{body}");
    assert!(b1.sandbox.sap_b1().stats(DB).unwrap().invalid_sessions >= 2);
}

#[tokio::test]
async fn sessions_expire_after_the_idle_timeout_and_logout_ends_them() {
    let mut b1 = b1_with(|c| c.session_timeout_secs = 1).await;
    assert_eq!(b1.get("Items").await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(b1.get("Items").await.0, StatusCode::UNAUTHORIZED);
    b1.login().await;
    let r = b1.call(Method::POST, "Logout", None).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(b1.get("Items").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(b1.sandbox.sap_b1().live_sessions(DB), 0);
}

#[tokio::test]
async fn documents_are_created_with_201_read_by_key_and_patched_with_204() {
    let b1 = b1().await;
    b1.seed_partner_and_item().await;
    let (status, order) = b1
        .post(
            "Orders",
            json!({"CardCode": "C001", "NumAtCard": "WH-1", "DocDueDate": "2026-12-01",
                   "DocumentLines": [{"ItemCode": "A001", "Quantity": 2, "UnitPrice": 12.5}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let entry = order["DocEntry"].as_i64().unwrap();
    assert!(order["DocNum"].as_i64().is_some());
    assert_eq!(order["DocTotal"], json!(25));
    assert_eq!(order["CardName"], "Acme");
    assert_eq!(order["DocumentLines"][0]["LineNum"], 0);
    assert_eq!(order["DocumentLines"][0]["WarehouseCode"], "01");
    assert!(order["UpdateDate"].as_str().is_some() && order["UpdateTime"].as_str().is_some());
    let (status, read) = b1.get(&format!("Orders({entry})")).await;
    assert_eq!(
        (status, &read["NumAtCard"]),
        (StatusCode::OK, &json!("WH-1"))
    );
    let r = b1
        .call(
            Method::PATCH,
            &format!("Orders({entry})"),
            Some(json!({"Comments": "rush", "DocumentLines": [{"LineNum": 0, "Quantity": 3}]})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (_, read) = b1.get(&format!("Orders({entry})")).await;
    assert_eq!(read["DocTotal"], json!(37.5));
    assert_eq!(read["DocumentLines"].as_array().unwrap().len(), 1);
    // With B1S-ReplaceCollectionsOnPatch the lines are replaced, not merged.
    let r = b1
        .http
        .patch(b1.url(&format!("Orders({entry})")))
        .header("cookie", &b1.cookies)
        .header("B1S-ReplaceCollectionsOnPatch", "true")
        .json(&json!({"DocumentLines": [{"ItemCode": "A001", "Quantity": 1, "UnitPrice": 5}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (_, read) = b1.get(&format!("Orders({entry})")).await;
    assert_eq!(read["DocTotal"], json!(5));
    let (status, item) = b1.get("Items('A001')").await;
    assert_eq!(
        (status, &item["ItemName"]),
        (StatusCode::OK, &json!("Widget"))
    );
    assert_eq!(b1.get("Items('NOPE')").await.0, StatusCode::NOT_FOUND);
    let stats = b1.sandbox.sap_b1().stats(DB).unwrap();
    assert_eq!(stats.creates["Orders"], 1);
    assert_eq!(stats.updates["Orders"], 2);
    assert_eq!(stats.creates_by_reference["Orders:NumAtCard=WH-1"], 1);
}

#[tokio::test]
async fn what_the_service_layer_refuses_is_refused_in_its_error_shape() {
    let b1 = b1().await;
    b1.seed_partner_and_item().await;
    let (status, body) = b1
        .post("Items", json!({"ItemCode": "A001", "ItemName": "Again"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], -2035, "{body}");
    let (status, body) = b1
        .post(
            "BusinessPartners",
            json!({"CardCode": "C002", "CardName": "X", "Colour": "red"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_value(&body).contains("Colour"), "{body}");
    let (status, _) = b1
        .post(
            "BusinessPartners",
            json!({"CardCode": "C-0000000000000001", "CardName": "Too long a code"}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "CardCode is 15 characters at most"
    );
    let (status, body) = b1
        .post(
            "Orders",
            json!({"CardCode": "C404", "DocDueDate": "2026-12-01",
                   "DocumentLines": [{"ItemCode": "A001", "Quantity": 1}]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_value(&body).contains("C404"), "{body}");
    let (status, body) = b1
        .post(
            "Invoices",
            json!({"CardCode": "C001", "DocumentLines": [{"ItemCode": "B404", "Quantity": 1}]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_value(&body).contains("B404"), "{body}");
    let (status, _) = b1
        .post(
            "Orders",
            json!({"CardCode": "C001", "DocumentLines": [{"ItemCode": "A001", "Quantity": 1}]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "an order needs DocDueDate");
    // A service row needs the G/L account it books on.
    let (status, body) = b1
        .post(
            "Invoices",
            json!({"CardCode": "C001", "NumAtCard": "INV-1", "DocType": "dDocument_Service",
                   "DocumentLines": [{"ItemDescription": "Invoice INV-1", "LineTotal": 40}]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], json!(-5002), "{body}");
    assert_eq!(body["error"]["message"]["lang"], "en-us", "{body}");
    assert!(
        error_value(&body).contains("Enter G/L account for service row"),
        "{body}"
    );
    let (status, invoice) = b1
        .post(
            "Invoices",
            json!({"CardCode": "C001", "NumAtCard": "INV-1", "DocType": "dDocument_Service",
                   "DocumentLines": [{"ItemDescription": "Invoice INV-1", "AccountCode": "4000", "LineTotal": 40}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{invoice}");
    assert_eq!(invoice["DocTotal"], json!(40));
    let stats = b1.sandbox.sap_b1().stats(DB).unwrap();
    assert_eq!(stats.rejected_duplicate_keys, 1);
    assert_eq!(stats.records["Items"], 1);
}

#[tokio::test]
async fn queries_filter_select_order_and_page_with_next_link() {
    let b1 = b1_with(|c| c.page_size = 3).await;
    for i in 0..7 {
        let (s, _) = b1
            .post(
                "Items",
                json!({"ItemCode": format!("I{i:02}"), "ItemName": format!("Item {i}")}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let mut path = format!(
        "Items?$filter=UpdateDate ge '{today}' and ItemCode ne 'I03'&$select=ItemCode,UpdateDate&$orderby=ItemCode desc"
    );
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let (status, page) = b1.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        pages += 1;
        for row in page["value"].as_array().unwrap() {
            assert_eq!(row.as_object().unwrap().len(), 2, "$select: {row}");
            seen.push(row["ItemCode"].as_str().unwrap().to_owned());
        }
        match page["odata.nextLink"].as_str() {
            Some(next) => path = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(pages, 2);
    assert_eq!(seen, ["I06", "I05", "I04", "I02", "I01", "I00"]);
    let r = b1
        .http
        .get(b1.url("Items?$top=4"))
        .header("cookie", &b1.cookies)
        .header("Prefer", "odata.maxpagesize=10")
        .send()
        .await
        .unwrap();
    let page: Value = r.json().await.unwrap();
    assert_eq!(page["value"].as_array().unwrap().len(), 4);
    assert!(page.get("odata.nextLink").is_none());
    let (status, _) = b1.get("Items?$filter=Colour eq 'red'").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, none) = b1
        .get(&format!("Items?$filter=UpdateDate gt '{today}'"))
        .await;
    assert_eq!(none["value"], json!([]));
}

#[tokio::test]
async fn a_dropped_response_still_creates_and_is_counted_by_reference() {
    let b1 = b1().await;
    b1.seed_partner_and_item().await;
    b1.sandbox.sap_b1().inject(
        DB,
        Fault::DropResponse {
            times: 1,
            method: Some("POST".into()),
            path_contains: Some("/Orders".into()),
        },
    );
    let order = json!({"CardCode": "C001", "NumAtCard": "WH-9", "DocDueDate": "2026-12-01",
                       "DocumentLines": [{"ItemCode": "A001", "Quantity": 1, "Price": 3}]});
    let (status, _) = b1.post("Orders", order.clone()).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let (_, found) = b1
        .get("Orders?$filter=NumAtCard eq 'WH-9'&$select=DocEntry")
        .await;
    assert_eq!(found["value"].as_array().unwrap().len(), 1);
    b1.post("Orders", order).await;
    let stats = b1.sandbox.sap_b1().stats(DB).unwrap();
    assert_eq!(stats.creates_by_reference["Orders:NumAtCard=WH-9"], 2);
    assert_eq!(
        stats.duplicate_references["Orders"],
        vec!["WH-9".to_owned()]
    );
}

#[tokio::test]
async fn an_overloaded_server_answers_503_with_retry_after() {
    let b1 = b1_with(|c| {
        c.limits = SapB1Limits {
            requests_per_second: Some(3),
            concurrent: None,
        };
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let r = b1.call(Method::GET, "Items", None).await;
        if r.status() == StatusCode::SERVICE_UNAVAILABLE {
            assert!(r.headers().get("retry-after").is_some());
        }
        statuses.push(r.status());
    }
    assert!(
        statuses.contains(&StatusCode::SERVICE_UNAVAILABLE),
        "{statuses:?}"
    );
    assert!(b1.sandbox.sap_b1().stats(DB).unwrap().overloaded >= 1);
}

#[tokio::test]
async fn admin_endpoints_seed_inspect_and_expire() {
    let b1 = b1().await;
    let base = format!("{}/_sandbox/companies/{DB}", b1.sandbox.sap_b1_url());
    let r = b1
        .http
        .post(format!("{base}/records/Items"))
        .json(&json!({"ItemCode": "S1", "ItemName": "Seeded",
                      "ItemWarehouseInfoCollection": [{"WarehouseCode": "01", "InStock": 7}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (_, item) = b1.get("Items('S1')").await;
    assert_eq!(item["ItemWarehouseInfoCollection"][0]["InStock"], 7);
    let stats: Value = b1
        .http
        .get(format!("{base}/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["creates"]["Items"], 0, "seeds are not creates");
    let expired: Value = b1
        .http
        .post(format!("{base}/expire-sessions"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(expired["expired"], 1);
    let r = b1
        .http
        .post(format!(
            "{}/_sandbox/companies/NOPE/faults",
            b1.sandbox.sap_b1_url()
        ))
        .json(&json!({"kind": "html", "times": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn return_no_content_answers_204_with_location_and_close_blocks_updates() {
    let b1 = b1().await;
    b1.seed_partner_and_item().await;
    let r = b1
        .http
        .post(b1.url("Orders"))
        .header("cookie", &b1.cookies)
        .header("Prefer", "return-no-content")
        .json(
            &json!({"CardCode": "C001", "NumAtCard": "WH-2", "DocDueDate": "2026-12-01",
                      "DocumentLines": [{"ItemCode": "A001", "Quantity": 1, "Price": 2}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.ends_with("/b1s/v1/Orders(1)"), "{location}");
    let r = b1.call(Method::POST, "Orders(1)/Close", None).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (_, order) = b1.get("Orders(1)").await;
    assert_eq!(order["DocumentStatus"], "bost_Close");
    let r = b1
        .call(
            Method::PATCH,
            "Orders(1)",
            Some(json!({"Comments": "late"})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = b1.call(Method::DELETE, "Orders(1)", None).await;
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
}
