//! The Sage Business Cloud Accounting v3.1 simulator over real HTTP, against Sage's
//! documented behaviour (`shared/erp/APIS.md` §3, the v3.1 swagger).

// Tests fail loudly on the first unexpected error; that is what unwrap is for here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use passerelle_sandbox::Sandbox;
use passerelle_sandbox::sage::{
    DEFAULT_PURCHASE_LEDGER_ACCOUNT as PURCHASE, DEFAULT_SALES_LEDGER_ACCOUNT as SALES, Fault,
    SageAppConfig, SageBusiness, SageLimits,
};
use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{Value, json};

const BUSINESS: &str = "0d40342d0287cd6b13555c54afca6c90";
const OTHER_BUSINESS: &str = "49c196153fb1524b7d888cece84e8b12";
const CLIENT_ID: &str = "sage-client";
const SECRET: &str = "sage-s3cret";
const FIRST_REFRESH: &str = "srt-from-consent";
const CALLBACK: &str = "https://app.example/sage/callback";
/// RFC 7636 appendix B.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

struct Sage {
    sandbox: Sandbox,
    http: Client,
    access: String,
}

fn app() -> SageAppConfig {
    SageAppConfig {
        refresh_token: Some(FIRST_REFRESH.into()),
        redirect_uris: vec![CALLBACK.into()],
        ..SageAppConfig::new(CLIENT_ID, SECRET, BUSINESS)
    }
}

async fn sage_with(config: SageAppConfig) -> Sage {
    let sandbox = Sandbox::start(0).await.unwrap();
    sandbox.sage().try_add_app(config).unwrap();
    let mut sage = Sage {
        sandbox,
        http: Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        access: String::new(),
    };
    let tokens = sage.refresh(FIRST_REFRESH).await;
    assert_eq!(tokens.status(), StatusCode::OK);
    let tokens: Value = tokens.json().await.unwrap();
    sage.access = tokens["access_token"].as_str().unwrap().to_owned();
    sage
}

async fn sage() -> Sage {
    sage_with(app()).await
}

impl Sage {
    async fn token(&self, form: &[(&str, &str)]) -> Response {
        self.http
            .post(format!("{}/oauth/token", self.sandbox.sage_url()))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form_body(form))
            .send()
            .await
            .unwrap()
    }

    async fn refresh(&self, token: &str) -> Response {
        self.token(&[
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("grant_type", "refresh_token"),
            ("refresh_token", token),
        ])
        .await
    }

    async fn call_in(
        &self,
        business: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let url = format!("{}/v3.1{path}", self.sandbox.sage_url());
        let mut request = self.http.request(method, url).bearer_auth(&self.access);
        if let Some(business) = business {
            request = request.header("X-Business", business);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call_in(None, Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call_in(None, Method::POST, path, Some(body)).await
    }

    async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call_in(None, Method::PUT, path, Some(body)).await
    }

    async fn contact(&self, name: &str, reference: &str) -> String {
        let (status, body) = self
            .post(
                "/contacts",
                json!({"contact": {"name": name, "contact_type_ids": ["CUSTOMER"], "reference": reference}}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    async fn stock_item(&self, code: &str) -> String {
        let (status, body) = self
            .post(
                "/stock_items",
                json!({"stock_item": {"item_code": code, "description": format!("Item {code}"),
                       "sales_ledger_account_id": SALES, "purchase_ledger_account_id": PURCHASE}}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }
}

fn form_body(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

fn sources(body: &Value) -> Vec<String> {
    let mut found: Vec<String> = body
        .as_array()
        .unwrap_or_else(|| panic!("not an error array: {body}"))
        .iter()
        .map(|e| {
            assert_eq!(e["$severity"], "error");
            e["$source"].as_str().unwrap().to_owned()
        })
        .collect();
    found.sort();
    found
}

fn invoice(contact: &str, idempotency_id: Option<&str>) -> Value {
    let mut invoice = json!({"contact_id": contact, "date": "2026-03-01", "reference": "ORD-1",
        "invoice_lines": [{"description": "Widgets", "ledger_account_id": SALES, "quantity": 3, "unit_price": 2.5}]});
    if let Some(id) = idempotency_id {
        invoice["idempotency_id"] = json!(id);
    }
    json!({ "sales_invoice": invoice })
}

#[tokio::test]
async fn sage_consent_gives_a_code_for_tokens_that_call_the_api() {
    let sage = sage().await;
    let base = sage.sandbox.sage_url();
    let authorize = |scope: &str| {
        format!(
            "{base}/oauth2/auth/central?filter=apiv3.1&country=gb&response_type=code&client_id={CLIENT_ID}\
             &redirect_uri={CALLBACK}&scope={scope}&state=xyz&code_challenge={CHALLENGE}&code_challenge_method=S256"
        )
    };
    let response = sage
        .http
        .get(authorize("full_access"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    let location = url::Url::parse(response.headers()["location"].to_str().unwrap()).unwrap();
    let query: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(query["state"], "xyz");
    let code = query["code"].clone();
    let exchange = [
        ("client_id", CLIENT_ID),
        ("client_secret", SECRET),
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", CALLBACK),
        ("code_verifier", VERIFIER),
    ];
    let tokens: Value = sage.token(&exchange).await.json().await.unwrap();
    assert_eq!(tokens["expires_in"], 300);
    assert_eq!(tokens["token_type"], "bearer");
    assert_eq!(tokens["refresh_token_expires_in"], 2_678_400);
    assert_eq!(tokens["scope"], "full_access");
    assert!(
        tokens["requested_by_id"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    // The code was single-use.
    let again = sage.token(&exchange).await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    let fresh = Sage {
        access: tokens["access_token"].as_str().unwrap().to_owned(),
        ..sage
    };
    assert_eq!(fresh.get("/contacts").await.0, StatusCode::OK);

    // Client authentication is in the form: HTTP Basic alone is refused.
    let basic = fresh
        .http
        .post(format!("{base}/oauth/token"))
        .basic_auth(CLIENT_ID, Some(SECRET))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form_body(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "x"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        basic.json::<Value>().await.unwrap()["error"],
        "invalid_client"
    );

    // A readonly consent cannot write.
    let response = fresh.http.get(authorize("readonly")).send().await.unwrap();
    let location = url::Url::parse(response.headers()["location"].to_str().unwrap()).unwrap();
    let code = location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let exchange = [
        ("client_id", CLIENT_ID),
        ("client_secret", SECRET),
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", CALLBACK),
        ("code_verifier", VERIFIER),
    ];
    let tokens: Value = fresh.token(&exchange).await.json().await.unwrap();
    assert_eq!(tokens["scope"], "readonly");
    let readonly = Sage {
        access: tokens["access_token"].as_str().unwrap().to_owned(),
        ..fresh
    };
    assert_eq!(readonly.get("/contacts").await.0, StatusCode::OK);
    let (status, body) = readonly
        .post("/contacts", json!({"contact": {"name": "A"}}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body[0]["$dataCode"], "MultiUserAccessDenied");

    // An unknown scope, and a denied consent, redirect back with an error.
    let response = readonly
        .http
        .get(authorize("everything"))
        .send()
        .await
        .unwrap();
    assert!(
        response.headers()["location"]
            .to_str()
            .unwrap()
            .contains("error=invalid_scope")
    );
    readonly
        .sandbox
        .sage()
        .try_add_app(SageAppConfig {
            deny_consent: true,
            ..app()
        })
        .unwrap();
    let response = readonly
        .http
        .get(authorize("full_access"))
        .send()
        .await
        .unwrap();
    assert!(
        response.headers()["location"]
            .to_str()
            .unwrap()
            .contains("error=access_denied")
    );
}

#[tokio::test]
async fn sage_refresh_tokens_rotate_and_a_used_one_is_refused() {
    let sage = sage().await;
    // sage() spent FIRST_REFRESH already: presenting it again is a reuse.
    let reused = sage.refresh(FIRST_REFRESH).await;
    assert_eq!(reused.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        reused.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    let stats = sage.sandbox.sage().stats(BUSINESS).unwrap();
    assert_eq!(stats.token_refreshes, 1);
    assert_eq!(stats.reused_refresh_tokens, 1);
    assert_eq!(stats.rejected_refreshes, 1);

    // A fresh chain: every refresh answers a new token and kills the old one.
    sage.sandbox
        .sage()
        .try_add_app(SageAppConfig {
            refresh_token: Some("srt-second".into()),
            ..app()
        })
        .unwrap();
    let first: Value = sage.refresh("srt-second").await.json().await.unwrap();
    let next = first["refresh_token"].as_str().unwrap();
    assert_ne!(next, "srt-second");
    let second: Value = sage.refresh(next).await.json().await.unwrap();
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    assert_eq!(sage.refresh(next).await.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        sage.sandbox
            .sage()
            .stats(BUSINESS)
            .unwrap()
            .reused_refresh_tokens,
        2
    );

    // Revoked (the user disconnected the app; both chains' live tokens): invalid_grant, not
    // counted as a reuse.
    assert_eq!(sage.sandbox.sage().revoke_refresh_tokens(CLIENT_ID), 2);
    let revoked = sage
        .refresh(second["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(revoked.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        sage.sandbox
            .sage()
            .stats(BUSINESS)
            .unwrap()
            .reused_refresh_tokens,
        2
    );
}

#[tokio::test]
async fn sage_refresh_tokens_expire_31_days_after_issue_by_default() {
    let sage = sage_with(SageAppConfig {
        refresh_token_ttl_secs: 1,
        ..app()
    })
    .await;
    let tokens: Value = sage
        .token(&[
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("grant_type", "refresh_token"),
            ("refresh_token", "nope"),
        ])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tokens["error"], "invalid_grant");
    assert_eq!(
        SageAppConfig::new("a", "b", BUSINESS).refresh_token_ttl_secs,
        2_678_400
    );
    let issued: Value = {
        sage.sandbox
            .sage()
            .try_add_app(SageAppConfig {
                refresh_token: Some("srt-short".into()),
                refresh_token_ttl_secs: 1,
                ..app()
            })
            .unwrap();
        sage.refresh("srt-short").await.json().await.unwrap()
    };
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let late = sage
        .refresh(issued["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(late.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn sage_an_expired_access_token_answers_401() {
    let sage = sage().await;
    assert_eq!(sage.get("/contacts").await.0, StatusCode::OK);
    assert_eq!(sage.sandbox.sage().expire_access_tokens(CLIENT_ID), 1);
    let (status, body) = sage.get("/contacts").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body[0]["$dataCode"], "AuthorizationFailure");
    let anonymous = sage
        .http
        .get(format!("{}/v3.1/contacts", sage.sandbox.sage_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn sage_creates_answer_201_with_the_full_object() {
    let sage = sage().await;
    let contact = sage.contact("Acme Ltd", "ACME001").await;
    assert!(contact.len() == 32 && contact.bytes().all(|b| b.is_ascii_hexdigit()));
    let (_, read) = sage.get(&format!("/contacts/{contact}")).await;
    assert_eq!(read["displayed_as"], "Acme Ltd (ACME001)");
    assert_eq!(read["$path"], format!("/contacts/{contact}"));
    assert_eq!(read["contact_types"][0]["id"], "CUSTOMER");
    assert!(read["created_at"].as_str().unwrap().ends_with('Z'));

    let item = sage.stock_item("WID-1").await;
    let (status, quote) = sage
        .post(
            "/sales_quotes",
            json!({"sales_quote": {"contact_id": contact, "date": "2026-03-01", "expiry_date": "2026-03-31",
                   "quote_lines": [{"description": "Widgets", "ledger_account_id": SALES, "quantity": 2,
                                    "unit_price": 10, "product_id": item}]}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{quote}");
    assert_eq!(quote["total_amount"], 20.0);
    assert_eq!(quote["quote_lines"][0]["product"]["id"], item.as_str());
    assert_eq!(quote["contact"]["id"], contact.as_str());
    let (status, estimate) = sage
        .post(
            "/sales_estimates",
            json!({"sales_estimate": {"contact_id": contact, "date": "2026-03-01", "expiry_date": "2026-03-02",
                   "estimate_lines": [{"description": "W", "ledger_account_id": SALES, "quantity": 1, "unit_price": 1}]}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{estimate}");
    let (status, invoice) = sage.post("/sales_invoices", invoice(&contact, None)).await;
    assert_eq!(status, StatusCode::CREATED, "{invoice}");
    assert_eq!(invoice["net_amount"], 7.5);
    assert_eq!(invoice["total_amount"], 7.5);
    assert_eq!(invoice["displayed_as"], "SI-1");
    assert_eq!(invoice["due_date"], "2026-03-31");
    assert_eq!(invoice["contact_name"], "Acme Ltd");

    let (status, body) = sage
        .get(&format!("/sales_invoices/{}", "0".repeat(32)))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body[0]["$dataCode"], "RecordNotFound");
    let stats = sage.sandbox.sage().stats(BUSINESS).unwrap();
    for resource in [
        "contacts",
        "stock_items",
        "sales_quotes",
        "sales_estimates",
        "sales_invoices",
    ] {
        assert_eq!(stats.creates[resource], 1, "{resource}");
    }
    assert_eq!(stats.creates["stock_movements"], 0);
    assert_eq!(stats.creates_by_reference["contacts:ACME001"], 1);
    assert_eq!(stats.creates_by_reference["stock_items:WID-1"], 1);
}

#[tokio::test]
async fn sage_invalid_records_answer_422_naming_their_source() {
    let sage = sage().await;
    let (status, body) = sage
        .post("/contacts", json!({"contact": {"reference": "X"}}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body[0]["$dataCode"], "RecordInvalid");
    assert_eq!(sources(&body), ["contact_type_ids", "name"]);
    let (status, body) = sage
        .post(
            "/sales_invoices",
            json!({"sales_invoice": {"invoice_lines": [{"quantity": 1}]}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        sources(&body),
        [
            "contact_id",
            "date",
            "invoice_lines.description",
            "invoice_lines.ledger_account_id",
            "invoice_lines.unit_price"
        ]
    );
    let unknown_account = json!({"stock_item": {"item_code": "A", "description": "A",
        "sales_ledger_account_id": "f".repeat(32), "purchase_ledger_account_id": SALES}});
    let (status, body) = sage.post("/stock_items", unknown_account).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        sources(&body),
        ["purchase_ledger_account_id", "sales_ledger_account_id"]
    );

    let contact = sage.contact("Acme", "ACME").await;
    let (status, body) = sage
        .post("/contacts", json!({"contact": {"name": "Other", "contact_type_ids": ["CUSTOMER"], "reference": "acme"}}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(sources(&body), ["reference"]);
    let strict = json!({"contact": {"name": "B", "contact_type_ids": ["PARTNER"], "nickname": "b",
                                    "main_contact_person": {"email": "not-an-email"}}});
    let (_, body) = sage.post("/contacts", strict).await;
    assert_eq!(
        sources(&body),
        ["contact_type_ids", "main_contact_person.email", "nickname"]
    );
    let backwards = json!({"sales_quote": {"contact_id": contact, "date": "2026-03-10", "expiry_date": "2026-03-01",
        "quote_lines": [{"description": "W", "ledger_account_id": SALES, "quantity": 1, "unit_price": 1}]}});
    let (_, body) = sage.post("/sales_quotes", backwards).await;
    assert_eq!(sources(&body), ["expiry_date"]);
    let (status, _) = sage.post("/contacts", json!({"name": "unwrapped"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(sage.sandbox.sage().records(BUSINESS, "contacts").len(), 1);
}

#[tokio::test]
async fn sage_an_idempotency_id_replays_the_first_answer() {
    let sage = sage().await;
    let contact = sage.contact("Acme", "ACME").await;
    let key = "5f4d3c2b1a0998877665544332211000";
    let (first_status, first) = sage
        .post("/sales_invoices", invoice(&contact, Some(key)))
        .await;
    assert_eq!(first_status, StatusCode::CREATED);
    let (again_status, again) = sage
        .post("/sales_invoices", invoice(&contact, Some(key)))
        .await;
    assert_eq!(again_status, StatusCode::CREATED);
    assert_eq!(again, first);
    assert_eq!(
        sage.sandbox
            .sage()
            .records(BUSINESS, "sales_invoices")
            .len(),
        1
    );
    let stats = sage.sandbox.sage().stats(BUSINESS).unwrap();
    assert_eq!(stats.replays, 1);
    assert_eq!(stats.creates["sales_invoices"], 1);
    // The id is per resource: the same one on a contact creates a contact.
    let (status, _) = sage
        .post("/contacts", json!({"contact": {"name": "B", "contact_type_ids": ["CUSTOMER"], "idempotency_id": key}}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = sage
        .post(
            "/sales_invoices",
            invoice(&contact, Some("5f4d3c2b-1a09-9887-7665-544332211000")),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(sources(&body), ["idempotency_id"]);
}

#[tokio::test]
async fn sage_put_updates_and_replaces_lines() {
    let sage = sage().await;
    let contact = sage.contact("Acme", "ACME").await;
    let line = |d: &str, price: f64| json!({"description": d, "ledger_account_id": SALES, "quantity": 1, "unit_price": price});
    let (_, quote) = sage
        .post(
            "/sales_quotes",
            json!({"sales_quote": {"contact_id": contact, "date": "2026-03-01", "expiry_date": "2026-03-31",
                   "reference": "Q1", "quote_lines": [line("a", 1.0), line("b", 2.0)]}}),
        )
        .await;
    let id = quote["id"].as_str().unwrap();
    let (status, updated) = sage
        .put(
            &format!("/sales_quotes/{id}"),
            json!({"sales_quote": {"quote_lines": [line("c", 5.0)]}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["quote_lines"].as_array().unwrap().len(), 1);
    assert_eq!(updated["quote_lines"][0]["description"], "c");
    assert_eq!(updated["total_amount"], 5.0);
    assert_eq!(updated["reference"], "Q1");
    assert_eq!(updated["displayed_as"], quote["displayed_as"]);
    assert_eq!(updated["created_at"], quote["created_at"]);
    let (status, _) = sage
        .put(
            &format!("/sales_quotes/{}", "0".repeat(32)),
            json!({"sales_quote": {"reference": "x"}}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        sage.sandbox.sage().stats(BUSINESS).unwrap().updates["sales_quotes"],
        1
    );
}

#[tokio::test]
async fn sage_lists_page_with_next_and_filter_by_change() {
    let sage = sage().await;
    for n in 0..5 {
        sage.contact(&format!("Customer {n}"), &format!("C{n}"))
            .await;
    }
    let (status, page) = sage.get("/contacts?items_per_page=2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["$total"], 5);
    assert_eq!(page["$items_per_page"], 2);
    assert_eq!(page["$next"], "/contacts?page=2&items_per_page=2");
    assert_eq!(page["$back"], Value::Null);
    let first = &page["$items"][0];
    assert_eq!(first.as_object().unwrap().len(), 3, "{first}");
    let (_, last) = sage
        .get("/contacts?items_per_page=2&page=3&attributes=all")
        .await;
    assert_eq!(last["$items"].as_array().unwrap().len(), 1);
    assert_eq!(last["$next"], Value::Null);
    assert_eq!(
        last["$back"],
        "/contacts?page=2&items_per_page=2&attributes=all"
    );
    assert!(last["$items"][0]["reference"].is_string());
    let (status, body) = sage.get("/contacts?items_per_page=201").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(sources(&body), ["items_per_page"]);
    assert_eq!(
        sage.get("/contacts?sort=name").await.0,
        StatusCode::BAD_REQUEST
    );

    // Inclusive: the newest record's own updated_at lists it.
    let records = sage.sandbox.sage().records(BUSINESS, "contacts");
    let newest = records.last().unwrap();
    let since = newest["updated_at"].as_str().unwrap();
    let (_, changed) = sage
        .get(&format!(
            "/contacts?updated_or_created_since={}",
            urlencode(since)
        ))
        .await;
    let ids: Vec<&Value> = changed["$items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["id"])
        .collect();
    assert!(ids.contains(&&newest["id"]));
    let later = "2999-01-01T00:00:00+00:00";
    let (_, none) = sage
        .get(&format!(
            "/contacts?updated_or_created_since={}",
            urlencode(later)
        ))
        .await;
    assert_eq!(none["$total"], 0);
    let (_, search) = sage.get("/contacts?search=customer%203").await;
    assert_eq!(search["$total"], 1);
    let (_, vendors) = sage.get("/contacts?contact_type_id=VENDOR").await;
    assert_eq!(vendors["$total"], 0);
    let (_, accounts) = sage.get("/ledger_accounts?attributes=all").await;
    assert_eq!(accounts["$total"], 2);
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[tokio::test]
async fn sage_deleted_since_lists_what_was_deleted_after_it() {
    let sage = sage().await;
    let before = (chrono::Utc::now() - chrono::TimeDelta::seconds(2)).to_rfc3339();
    let id = sage.contact("Gone", "GONE").await;
    sage.contact("Kept", "KEPT").await;
    let (status, _) = sage
        .call_in(None, Method::DELETE, &format!("/contacts/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        sage.get(&format!("/contacts/{id}")).await.0,
        StatusCode::NOT_FOUND
    );
    let (_, deleted) = sage
        .get(&format!("/contacts?deleted_since={}", urlencode(&before)))
        .await;
    assert_eq!(deleted["$total"], 1);
    let gone = &deleted["$items"][0];
    assert_eq!(gone["id"], id.as_str());
    // Exclusive: its own deleted_at does not list it.
    let at = gone["deleted_at"].as_str().unwrap();
    let (_, after) = sage
        .get(&format!("/contacts?deleted_since={}", urlencode(at)))
        .await;
    assert_eq!(after["$total"], 0);
    assert_eq!(
        sage.sandbox.sage().stats(BUSINESS).unwrap().records["contacts"],
        1
    );
    // Quotes have no deleted_since (the swagger).
    assert_eq!(
        sage.get(&format!(
            "/sales_quotes?deleted_since={}",
            urlencode(&before)
        ))
        .await
        .0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn sage_x_business_chooses_the_business() {
    let sage = sage_with(SageAppConfig {
        businesses: vec![
            SageBusiness::new(BUSINESS),
            SageBusiness {
                id: OTHER_BUSINESS.into(),
                name: "Second Ltd".into(),
            },
        ],
        ..app()
    })
    .await;
    let body = json!({"contact": {"name": "Elsewhere", "contact_type_ids": ["VENDOR"]}});
    let (status, _) = sage
        .call_in(Some(OTHER_BUSINESS), Method::POST, "/contacts", Some(body))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        sage.sandbox
            .sage()
            .records(OTHER_BUSINESS, "contacts")
            .len(),
        1
    );
    // Without the header: the lead business, which has none.
    assert_eq!(sage.get("/contacts").await.1["$total"], 0);
    let (status, body) = sage
        .call_in(Some(&"a".repeat(32)), Method::GET, "/contacts", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body[0]["$source"], "X-Business");
    let (_, businesses) = sage.get("/businesses").await;
    assert_eq!(businesses["$total"], 2);
    assert_eq!(businesses["$items"][1]["displayed_as"], "Second Ltd");
}

#[tokio::test]
async fn sage_rate_limit_answers_429_with_retry_after_and_counts_violations() {
    let sage = sage_with(SageAppConfig {
        limits: SageLimits {
            per_minute: Some(3),
            ..SageLimits::default()
        },
        ..app()
    })
    .await;
    for _ in 0..3 {
        assert_eq!(sage.get("/contacts").await.0, StatusCode::OK);
    }
    let response = sage
        .http
        .get(format!("{}/v3.1/contacts", sage.sandbox.sage_url()))
        .bearer_auth(&sage.access)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after));
    assert_eq!(
        response.json::<Value>().await.unwrap()[0]["$dataCode"],
        "TooManyRequests"
    );
    assert_eq!(sage.get("/contacts").await.0, StatusCode::TOO_MANY_REQUESTS);
    let stats = sage.sandbox.sage().stats(BUSINESS).unwrap();
    assert_eq!(stats.requests, 5);
    assert_eq!(stats.rate_limited, 2);
    assert_eq!(stats.violations, 1);
    assert_eq!(stats.max_requests_in_window, 3);
}

#[tokio::test]
async fn sage_a_dropped_response_still_creates_the_invoice() {
    let sage = sage().await;
    let contact = sage.contact("Acme", "ACME").await;
    sage.sandbox.sage().inject(
        BUSINESS,
        Fault::DropResponse {
            times: 1,
            method: Some("POST".into()),
            path_contains: Some("/sales_invoices".into()),
        },
    );
    let key = "00112233445566778899aabbccddeeff";
    let (status, body) = sage
        .post("/sales_invoices", invoice(&contact, Some(key)))
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body[0]["$dataCode"], "UnexpectedError");
    assert_eq!(
        sage.sandbox
            .sage()
            .records(BUSINESS, "sales_invoices")
            .len(),
        1
    );
    // The retry with the same idempotency_id gets the lost answer and creates nothing.
    let (status, replayed) = sage
        .post("/sales_invoices", invoice(&contact, Some(key)))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let records = sage.sandbox.sage().records(BUSINESS, "sales_invoices");
    assert_eq!(records.len(), 1);
    assert_eq!(replayed["id"], records[0]["id"]);
    let stats = sage.sandbox.sage().stats(BUSINESS).unwrap();
    assert_eq!(stats.creates_by_reference["sales_invoices:ORD-1"], 1);
    assert!(stats.duplicate_references.is_empty());
}

#[tokio::test]
async fn sage_stock_moves_with_movements_and_seeds() {
    let sage = sage().await;
    let item = sage.stock_item("WID-1").await;
    let movement = json!({"stock_movement": {"stock_item_id": item, "date": "2026-03-01", "quantity": 12,
                          "cost_price": 1.5, "details": "Delivery"}});
    let (status, body) = sage.post("/stock_movements", movement).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, read) = sage.get(&format!("/stock_items/{item}")).await;
    assert_eq!(read["quantity_in_stock"], 12.0);
    let (_, body) = sage
        .post(
            "/stock_movements",
            json!({"stock_movement": {"stock_item_id": item, "quantity": 1}}),
        )
        .await;
    assert_eq!(sources(&body), ["cost_price", "date", "details"]);
    let sim = sage.sandbox.sage();
    sim.set_stock(BUSINESS, "wid-1", 3.0).unwrap();
    assert_eq!(
        sage.get(&format!("/stock_items/{item}")).await.1["quantity_in_stock"],
        3.0
    );
    // A seeded duplicate (what a sloppy business holds) shows in duplicate_references.
    let seed = json!({"item_code": "WID-1", "description": "Copy", "sales_ledger_account_id": SALES,
                      "purchase_ledger_account_id": PURCHASE});
    let copy = sim.upsert_record(BUSINESS, "stock_items", seed).unwrap();
    let stats = sim.stats(BUSINESS).unwrap();
    assert_eq!(stats.duplicate_references["stock_items"], ["wid-1"]);
    assert_eq!(stats.creates["stock_items"], 1);
    sim.touch(BUSINESS, "stock_items", &copy).unwrap();
    sim.delete_record(BUSINESS, "stock_items", &copy).unwrap();
    assert!(sim.stats(BUSINESS).unwrap().duplicate_references.is_empty());
    assert!(sim.touch(BUSINESS, "stock_items", &copy).is_err());
}
