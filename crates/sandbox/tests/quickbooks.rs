//! The QuickBooks Online simulator over real HTTP, against Intuit's documented behaviour
//! (`shared/erp/APIS.md`) and the XSD element names.

// Tests fail loudly on the first unexpected error; that is what unwrap is for here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine;
use chrono::{Duration as TimeDelta, SecondsFormat, Utc};
use passerelle_sandbox::Sandbox;
use passerelle_sandbox::quickbooks::{Fault, QuickBooksAppConfig, QuickBooksLimits};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};

const REALM: &str = "9130357766900456";
const CLIENT_ID: &str = "qb-client";
const SECRET: &str = "qb-s3cret";
const FIRST_REFRESH: &str = "AB11-from-consent";

struct Qb {
    sandbox: Sandbox,
    http: Client,
    access: String,
}

fn app() -> QuickBooksAppConfig {
    QuickBooksAppConfig {
        refresh_token: Some(FIRST_REFRESH.into()),
        ..QuickBooksAppConfig::new(CLIENT_ID, SECRET, REALM)
    }
}

async fn qb_with(config: QuickBooksAppConfig) -> Qb {
    let sandbox = Sandbox::start(0).await.unwrap();
    sandbox.quickbooks().try_add_app(config).unwrap();
    let mut qb = Qb {
        sandbox,
        http: Client::new(),
        access: String::new(),
    };
    let tokens = qb.refresh(FIRST_REFRESH, SECRET).await;
    assert_eq!(tokens.status(), StatusCode::OK);
    let tokens: Value = tokens.json().await.unwrap();
    qb.access = tokens["access_token"].as_str().unwrap().to_owned();
    qb
}

async fn qb() -> Qb {
    qb_with(app()).await
}

impl Qb {
    async fn refresh(&self, token: &str, secret: &str) -> Response {
        let basic =
            base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{secret}"));
        self.http
            .post(format!(
                "{}/oauth2/v1/tokens/bearer",
                self.sandbox.quickbooks_url()
            ))
            .header("Authorization", format!("Basic {basic}"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(format!("grant_type=refresh_token&refresh_token={token}"))
            .send()
            .await
            .unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v3/company/{REALM}{path}", self.sandbox.quickbooks_url())
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(&self.access)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> (StatusCode, Value) {
        let url = url::Url::parse_with_params(&self.url(path), query).unwrap();
        let r = self
            .http
            .get(url)
            .bearer_auth(&self.access)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

fn first_error(body: &Value) -> (&str, &str) {
    let e = &body["Fault"]["Error"][0];
    (e["code"].as_str().unwrap(), e["Message"].as_str().unwrap())
}

#[tokio::test]
async fn refresh_tokens_rotate_and_the_replaced_one_dies_after_its_grace() {
    let qb = qb_with(QuickBooksAppConfig {
        refresh_rotation_secs: 0,
        refresh_grace_secs: 0,
        ..app()
    })
    .await;
    // The fixture's refresh rotated the consent's token: it is dead now (no grace).
    let again = qb.refresh(FIRST_REFRESH, SECRET).await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        again.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    let wrong_secret = qb.refresh(FIRST_REFRESH, "nope").await;
    assert_eq!(wrong_secret.status(), StatusCode::UNAUTHORIZED);
    let stats = qb.sandbox.quickbooks().stats(REALM).unwrap();
    assert_eq!((stats.token_refreshes, stats.rejected_refreshes), (1, 2));
}

#[tokio::test]
async fn a_young_refresh_token_is_kept_and_expired_access_tokens_get_401() {
    let qb = qb().await;
    let tokens: Value = qb
        .refresh(FIRST_REFRESH, SECRET)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tokens["refresh_token"], FIRST_REFRESH);
    assert_eq!(
        (tokens["token_type"].as_str(), tokens["expires_in"].as_i64()),
        (Some("bearer"), Some(3600))
    );
    assert!(tokens["x_refresh_token_expires_in"].as_i64().unwrap() > 8_000_000);
    assert_eq!(
        qb.get(&format!("/companyinfo/{REALM}"), &[]).await.0,
        StatusCode::OK
    );
    assert!(qb.sandbox.quickbooks().expire_access_tokens(CLIENT_ID) >= 1);
    let (status, body) = qb.get(&format!("/companyinfo/{REALM}"), &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(first_error(&body).0, "3200");
    assert!(first_error(&body).1.contains("AuthenticationFailed"));
}

// --- OAuth 2: the authorization code with PKCE ---

const CALLBACK: &str = "https://app.example/quickbooks/callback";
const OTHER_REALM: &str = "4620816365181472";
/// RFC 7636 Appendix B's pair, so the simulator's hashing is checked against the RFC's.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const STATE: &str = "csrf-Qb81";

fn authorizable() -> QuickBooksAppConfig {
    QuickBooksAppConfig::authorizable(CLIENT_ID, SECRET, REALM, CALLBACK)
}

/// A sandbox with an app that has no token yet, and a client that does not follow redirects.
async fn authorizing(config: QuickBooksAppConfig) -> Qb {
    let sandbox = Sandbox::start(0).await.unwrap();
    sandbox.quickbooks().try_add_app(config).unwrap();
    let http = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    Qb {
        sandbox,
        http,
        access: String::new(),
    }
}

/// Parameters to replace in an authorization request (`None` drops one).
type Overrides<'a> = &'a [(&'a str, Option<&'a str>)];

/// A complete authorization request's query, with `overrides`.
fn authorize_query(overrides: Overrides<'_>) -> Vec<(String, String)> {
    let defaults = [
        ("client_id", CLIENT_ID),
        ("response_type", "code"),
        ("scope", "com.intuit.quickbooks.accounting openid"),
        ("redirect_uri", CALLBACK),
        ("state", STATE),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ];
    let mut query: Vec<(String, String)> = defaults
        .iter()
        .filter(|(name, _)| !overrides.iter().any(|(o, _)| o == name))
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
    for (name, value) in overrides {
        if let Some(value) = value {
            query.push(((*name).to_owned(), (*value).to_owned()));
        }
    }
    query
}

/// The redirect's target and its query parameters, asserting a `302`.
fn redirected(response: &Response) -> (String, Vec<(String, String)>) {
    assert_eq!(response.status(), StatusCode::FOUND);
    let location = response.headers()["location"].to_str().unwrap();
    let mut location = url::Url::parse(location).unwrap();
    let params = location.query_pairs().into_owned().collect();
    location.set_query(None);
    (location.to_string(), params)
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

async fn oauth_error_of(response: Response, status: StatusCode) -> String {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.unwrap();
    body["error"].as_str().unwrap().to_owned()
}

impl Qb {
    async fn authorize(&self, query: &[(String, String)]) -> Response {
        let url = url::Url::parse_with_params(
            &format!("{}/connect/oauth2", self.sandbox.quickbooks_url()),
            query,
        )
        .unwrap();
        self.http.get(url).send().await.unwrap()
    }

    /// Authorizes with the default query and returns the code the redirect carries.
    async fn code(&self) -> String {
        let response = self.authorize(&authorize_query(&[])).await;
        let (_, params) = redirected(&response);
        param(&params, "code").unwrap().to_owned()
    }

    async fn exchange_as(
        &self,
        secret: &str,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Response {
        let basic =
            base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{secret}"));
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "authorization_code")
            .append_pair("code", code)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("code_verifier", verifier)
            .finish();
        self.http
            .post(format!(
                "{}/oauth2/v1/tokens/bearer",
                self.sandbox.quickbooks_url()
            ))
            .header("Authorization", format!("Basic {basic}"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Accept", "application/json")
            .body(form)
            .send()
            .await
            .unwrap()
    }

    async fn exchange(&self, code: &str, redirect_uri: &str, verifier: &str) -> Response {
        self.exchange_as(SECRET, code, redirect_uri, verifier).await
    }

    fn stats(&self) -> passerelle_sandbox::quickbooks::QuickBooksStats {
        self.sandbox.quickbooks().stats(REALM).unwrap()
    }
}

#[tokio::test]
async fn an_authorization_code_exchanged_with_its_verifier_gets_tokens_for_its_realm() {
    let mut qb = authorizing(QuickBooksAppConfig {
        realms: vec![REALM.into(), OTHER_REALM.into()],
        ..authorizable()
    })
    .await;
    let response = qb.authorize(&authorize_query(&[])).await;
    let (target, params) = redirected(&response);
    assert_eq!(target, CALLBACK);
    assert_eq!(param(&params, "realmId"), Some(REALM));
    assert_eq!(param(&params, "state"), Some(STATE));
    assert!(param(&params, "error").is_none());
    let code = param(&params, "code").unwrap();

    let tokens = qb.exchange(code, CALLBACK, VERIFIER).await;
    assert_eq!(tokens.status(), StatusCode::OK);
    let tokens: Value = tokens.json().await.unwrap();
    assert_eq!(
        (tokens["token_type"].as_str(), tokens["expires_in"].as_i64()),
        (Some("bearer"), Some(3600))
    );
    assert_eq!(tokens["x_refresh_token_expires_in"], 100 * 24 * 60 * 60);
    qb.access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();

    // The token reaches the consented realm, and only that one.
    let (status, body) = qb.post("/customer", json!({"DisplayName": "Acme"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let other = qb
        .http
        .get(format!(
            "{}/v3/company/{OTHER_REALM}/companyinfo/{OTHER_REALM}",
            qb.sandbox.quickbooks_url()
        ))
        .bearer_auth(&qb.access)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::FORBIDDEN);

    // The refresh token works for the refresh grant (young, so it is kept).
    let refreshed = qb.refresh(&refresh, SECRET).await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    let refreshed: Value = refreshed.json().await.unwrap();
    assert_eq!(refreshed["refresh_token"], refresh.as_str());
    qb.access = refreshed["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        qb.get(&format!("/companyinfo/{REALM}"), &[]).await.0,
        StatusCode::OK
    );

    let stats = qb.stats();
    assert_eq!(
        (
            stats.authorizations,
            stats.code_exchanges,
            stats.rejected_code_exchanges,
            stats.token_refreshes
        ),
        (1, 1, 0, 1)
    );
    assert_eq!(stats.creates["Customer"], 1);
}

#[tokio::test]
async fn a_wrong_verifier_is_invalid_grant_and_spends_the_code() {
    let qb = authorizing(authorizable()).await;
    let code = qb.code().await;
    let wrong = "wrong-verifier-of-the-right-length-0123456789";
    let refused = qb.exchange(&code, CALLBACK, wrong).await;
    assert_eq!(
        oauth_error_of(refused, StatusCode::BAD_REQUEST).await,
        "invalid_grant"
    );
    let too_late = qb.exchange(&code, CALLBACK, VERIFIER).await;
    assert_eq!(
        oauth_error_of(too_late, StatusCode::BAD_REQUEST).await,
        "invalid_grant"
    );
    assert_eq!(qb.stats().rejected_code_exchanges, 2);
}

#[tokio::test]
async fn a_redirect_uri_other_than_the_authorized_one_is_invalid_grant() {
    let qb = authorizing(authorizable()).await;
    let code = qb.code().await;
    let other = qb
        .exchange(
            &code,
            "https://app.example/quickbooks/callback?x=1",
            VERIFIER,
        )
        .await;
    assert_eq!(
        oauth_error_of(other, StatusCode::BAD_REQUEST).await,
        "invalid_grant"
    );
}

#[tokio::test]
async fn a_code_works_once() {
    let qb = authorizing(authorizable()).await;
    let code = qb.code().await;
    assert_eq!(
        qb.exchange(&code, CALLBACK, VERIFIER).await.status(),
        StatusCode::OK
    );
    let again = qb.exchange(&code, CALLBACK, VERIFIER).await;
    assert_eq!(
        oauth_error_of(again, StatusCode::BAD_REQUEST).await,
        "invalid_grant"
    );
    let stats = qb.stats();
    assert_eq!(
        (stats.code_exchanges, stats.rejected_code_exchanges),
        (1, 1)
    );
}

#[tokio::test]
async fn an_expired_code_is_invalid_grant() {
    let qb = authorizing(QuickBooksAppConfig {
        authorization_code_ttl_secs: 1,
        ..authorizable()
    })
    .await;
    let code = qb.code().await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let late = qb.exchange(&code, CALLBACK, VERIFIER).await;
    assert_eq!(
        oauth_error_of(late, StatusCode::BAD_REQUEST).await,
        "invalid_grant"
    );
}

#[tokio::test]
async fn a_code_exchange_with_a_wrong_secret_is_401_invalid_client() {
    let qb = authorizing(authorizable()).await;
    let code = qb.code().await;
    let refused = qb.exchange_as("nope", &code, CALLBACK, VERIFIER).await;
    assert_eq!(
        oauth_error_of(refused, StatusCode::UNAUTHORIZED).await,
        "invalid_client"
    );
    let stats = qb.stats();
    assert_eq!(
        (stats.rejected_code_exchanges, stats.rejected_refreshes),
        (1, 0)
    );
}

#[tokio::test]
async fn an_unknown_client_or_an_untrusted_redirect_uri_gets_an_error_page_not_a_redirect() {
    let qb = authorizing(authorizable()).await;
    let cases: [(Overrides, &str); 4] = [
        (&[("client_id", Some("nobody"))], "unauthorized_client"),
        (&[("redirect_uri", None)], "invalid_request"),
        (&[("redirect_uri", Some("callback"))], "invalid_request"),
        (
            &[("redirect_uri", Some("http://localhost:8080/callback"))],
            "unauthorized_client",
        ),
    ];
    for (overrides, error) in cases {
        let response = qb.authorize(&authorize_query(overrides)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{overrides:?}");
        assert!(response.headers().get("location").is_none());
        let page = response.text().await.unwrap();
        assert!(page.contains(error), "{overrides:?}: {page}");
    }
    assert_eq!(qb.stats().authorizations, 0);
}

#[tokio::test]
async fn denied_consent_redirects_with_access_denied_and_the_state() {
    let qb = authorizing(QuickBooksAppConfig {
        deny_consent: true,
        ..authorizable()
    })
    .await;
    let (target, params) = redirected(&qb.authorize(&authorize_query(&[])).await);
    assert_eq!(target, CALLBACK);
    assert_eq!(
        params,
        vec![
            ("error".to_owned(), "access_denied".to_owned()),
            ("state".to_owned(), STATE.to_owned()),
        ]
    );
    let stats = qb.stats();
    assert_eq!((stats.authorizations, stats.refused_authorizations), (0, 1));
}

#[tokio::test]
async fn a_malformed_authorization_request_redirects_with_the_rfc_error() {
    let qb = authorizing(authorizable()).await;
    let cases: [(Overrides, &str); 6] = [
        (
            &[("response_type", Some("token"))],
            "unsupported_response_type",
        ),
        (&[("code_challenge", None)], "invalid_request"),
        (
            &[("code_challenge_method", Some("plain"))],
            "invalid_request",
        ),
        (&[("scope", None)], "invalid_request"),
        (&[("scope", Some("openid email"))], "invalid_scope"),
        (
            &[("scope", Some("com.intuit.quickbooks.accounting payroll"))],
            "invalid_scope",
        ),
    ];
    for (overrides, error) in cases {
        let (_, params) = redirected(&qb.authorize(&authorize_query(overrides)).await);
        assert_eq!(param(&params, "error"), Some(error), "{overrides:?}");
        assert_eq!(param(&params, "state"), Some(STATE), "{overrides:?}");
        assert!(param(&params, "code").is_none());
    }
    // Intuit requires state.
    let (_, params) = redirected(&qb.authorize(&authorize_query(&[("state", None)])).await);
    assert_eq!(param(&params, "error"), Some("invalid_request"));
    assert_eq!(param(&params, "state"), None);
    assert_eq!(qb.stats().refused_authorizations, 7);
}

#[tokio::test]
async fn an_app_provisioned_over_the_admin_endpoint_can_be_authorized() {
    let qb = authorizing(app()).await;
    let provisioned = qb
        .http
        .post(format!("{}/_sandbox/apps", qb.sandbox.quickbooks_url()))
        .json(
            &json!({"client_id": CLIENT_ID, "client_secret": SECRET, "realms": [REALM],
                      "redirect_uris": [CALLBACK]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(provisioned.status(), StatusCode::CREATED);
    let code = qb.code().await;
    assert_eq!(
        qb.exchange(&code, CALLBACK, VERIFIER).await.status(),
        StatusCode::OK
    );
    let relative = qb
        .http
        .post(format!("{}/_sandbox/apps", qb.sandbox.quickbooks_url()))
        .json(&json!({"client_id": "x", "client_secret": "y", "redirect_uris": ["/cb"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(relative.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn creates_updates_with_sync_token_and_stale_object_errors() {
    let qb = qb().await;
    let (status, body) = qb
        .post(
            "/customer",
            json!({"DisplayName": "Acme", "PrimaryEmailAddr": {"Address": "a@acme.example"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let customer = &body["Customer"];
    assert_eq!(customer["SyncToken"], "0");
    let id = customer["Id"].as_str().unwrap();
    let (status, body) = qb.post("/customer", json!({"DisplayName": "ACME"})).await;
    assert_eq!(
        (status, first_error(&body)),
        (
            StatusCode::BAD_REQUEST,
            ("6240", "Duplicate Name Exists Error")
        )
    );
    assert_eq!(body["Fault"]["type"], "ValidationFault");
    assert!(body["time"].is_string());
    let (status, body) = qb
        .post(
            "/customer",
            json!({"Id": id, "SyncToken": "0", "sparse": true, "CompanyName": "Acme Ltd"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (
            body["Customer"]["SyncToken"].as_str(),
            body["Customer"]["DisplayName"].as_str()
        ),
        (Some("1"), Some("Acme"))
    );
    let (status, body) = qb
        .post(
            "/customer",
            json!({"Id": id, "SyncToken": "0", "sparse": true}),
        )
        .await;
    assert_eq!(
        (status, first_error(&body)),
        (StatusCode::BAD_REQUEST, ("5010", "Stale Object Error"))
    );
    let (status, body) = qb
        .post(
            "/item",
            json!({"Name": "Widget", "Colour": "red", "IncomeAccountRef": {"value": "79"}}),
        )
        .await;
    assert_eq!(
        (status, first_error(&body).0),
        (StatusCode::BAD_REQUEST, "2010")
    );
    let stats = qb.sandbox.quickbooks().stats(REALM).unwrap();
    assert_eq!(
        (
            stats.creates["Customer"],
            stats.updates["Customer"],
            stats.stale_updates
        ),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn a_repeated_requestid_replays_the_first_answer() {
    let qb = qb().await;
    let item = json!({"Name": "Widget", "Sku": "W-1", "IncomeAccountRef": {"value": "79"}});
    let first = qb.post("/item?requestid=req-1", item.clone()).await;
    let second = qb.post("/item?requestid=req-1", item).await;
    assert_eq!(first, second);
    let stats = qb.sandbox.quickbooks().stats(REALM).unwrap();
    assert_eq!(
        (
            stats.creates["Item"],
            stats.replays,
            stats.creates_by_requestid["req-1"]
        ),
        (1, 1, 1)
    );
    let long = "x".repeat(51);
    assert_eq!(
        qb.post(&format!("/item?requestid={long}"), json!({"Name": "Other"}))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn a_batch_answers_each_item_by_bid_with_its_own_fault() {
    let qb = qb().await;
    let (status, body) = qb
        .post(
            "/batch?requestid=batch-1",
            json!({"BatchItemRequest": [
                {"bId": "1", "operation": "create", "Customer": {"DisplayName": "One"}},
                {"bId": "2", "operation": "create", "Customer": {"DisplayName": "One"}},
                {"bId": "3", "Query": "select * from Customer where DisplayName = 'One'"},
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let responses = body["BatchItemResponse"].as_array().unwrap();
    assert_eq!(responses[0]["Customer"]["DisplayName"], "One");
    assert_eq!(responses[1]["bId"], "2");
    assert_eq!(responses[1]["Fault"]["Error"][0]["code"], "6240");
    assert_eq!(
        responses[2]["QueryResponse"]["Customer"][0]["DisplayName"],
        "One"
    );
    let too_many: Vec<Value> = (0..31).map(|i| json!({"bId": i.to_string(), "operation": "create", "Customer": {"DisplayName": format!("C{i}")}})).collect();
    let (status, _) = qb
        .post("/batch", json!({"BatchItemRequest": too_many}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        qb.sandbox.quickbooks().stats(REALM).unwrap().batch_requests,
        2
    );
}

#[tokio::test]
async fn query_and_cdc_find_records_by_reference_and_change_time() {
    let qb = qb().await;
    let before = Utc::now() - TimeDelta::seconds(1);
    qb.post(
        "/customer",
        json!({"DisplayName": "O'Brien Ltd", "PrimaryEmailAddr": {"Address": "ob@x.example"}}),
    )
    .await;
    qb.sandbox.quickbooks().upsert_record(REALM, "Item", json!({"Name": "Stocked", "Sku": "S-1", "Type": "Inventory", "TrackQtyOnHand": true, "QtyOnHand": 4}));
    let (status, body) = qb
        .get("/query", &[("query", "select * from Customer where DisplayName in ('O\\'Brien Ltd', 'x') and PrimaryEmailAddr = 'ob@x.example'")])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["QueryResponse"]["Customer"].as_array().unwrap().len(),
        1
    );
    let (_, body) = qb
        .get(
            "/query",
            &[(
                "query",
                "select * from Customer where DisplayName = 'nobody'",
            )],
        )
        .await;
    assert_eq!(body["QueryResponse"], json!({}));
    let since = before.to_rfc3339_opts(SecondsFormat::Secs, true);
    let (status, body) = qb
        .get(
            "/cdc",
            &[("entities", "Customer,Item"), ("changedSince", &since)],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let responses = body["CDCResponse"][0]["QueryResponse"].as_array().unwrap();
    assert_eq!(responses[0]["Customer"].as_array().unwrap().len(), 1);
    assert_eq!(responses[1]["Item"][0]["QtyOnHand"], 4);
    let old = (Utc::now() - TimeDelta::days(31)).to_rfc3339_opts(SecondsFormat::Secs, true);
    assert_eq!(
        qb.get("/cdc", &[("entities", "Item"), ("changedSince", &old)])
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn over_the_limits_answers_429_throttle_exceeded_and_counts_violations() {
    let qb = qb_with(QuickBooksAppConfig {
        limits: QuickBooksLimits {
            per_minute: Some(3),
            minute_window_ms: 60_000,
            ..QuickBooksLimits::default()
        },
        ..app()
    })
    .await;
    let path = format!("/companyinfo/{REALM}");
    for _ in 0..3 {
        assert_eq!(qb.get(&path, &[]).await.0, StatusCode::OK);
    }
    let (status, body) = qb.get(&path, &[]).await;
    assert_eq!(
        (status, first_error(&body).0),
        (StatusCode::TOO_MANY_REQUESTS, "3001")
    );
    qb.get(&path, &[]).await;
    let stats = qb.sandbox.quickbooks().stats(REALM).unwrap();
    assert_eq!(
        (
            stats.rate_limited,
            stats.violations,
            stats.max_requests_in_window
        ),
        (2, 1, 3)
    );
}

#[tokio::test]
async fn a_dropped_response_still_creates_and_the_requestid_replays_it() {
    let qb = qb().await;
    qb.sandbox.quickbooks().inject(
        REALM,
        Fault::DropResponse {
            times: 1,
            method: Some("POST".into()),
            path_contains: None,
        },
    );
    let item = json!({"Name": "Widget", "IncomeAccountRef": {"value": "79"}});
    let (status, _) = qb.post("/item?requestid=r-9", item.clone()).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let (status, body) = qb.post("/item?requestid=r-9", item).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["Item"]["Name"], "Widget");
    assert_eq!(
        qb.sandbox.quickbooks().stats(REALM).unwrap().creates["Item"],
        1
    );
}

#[tokio::test]
async fn admin_endpoints_provision_inject_seed_and_report() {
    let sandbox = Sandbox::start(0).await.unwrap();
    let http = Client::new();
    let admin = |path: &str| format!("{}/_sandbox{path}", sandbox.quickbooks_url());
    let app = json!({"client_id": "admin-app", "client_secret": "s3cret", "realms": ["42"], "refresh_token": "AB11-admin"});
    assert_eq!(
        http.post(admin("/apps"))
            .json(&app)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::CREATED
    );
    let bad = json!({"client_id": "x", "client_secret": "y", "realms": ["not-digits"]});
    assert_eq!(
        http.post(admin("/apps"))
            .json(&bad)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::BAD_REQUEST
    );
    let seeded: Value = http
        .post(admin("/realms/42/records/Item"))
        .json(&json!({"Name": "Seeded", "Sku": "S"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(seeded["Id"].is_string());
    let fault = json!({"kind": "status", "status": 503, "times": 1});
    assert_eq!(
        http.post(admin("/realms/42/faults"))
            .json(&fault)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::CREATED
    );
    let records: Value = http
        .get(admin("/realms/42/records/item"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // After the "Services" item every new company holds.
    assert_eq!(
        (records[0]["Name"].as_str(), records[1]["Name"].as_str()),
        (Some("Services"), Some("Seeded"))
    );
    let stats: Value = http
        .get(admin("/realms/42/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        stats["creates"]["Item"], 0,
        "seeds are not creates: {stats}"
    );
    let expired: Value = http
        .post(admin("/apps/admin-app/expire-access-tokens"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(expired["expired"], 0);
    assert_eq!(
        http.get(admin("/realms/7/stats"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn requests_beyond_the_concurrency_limit_are_throttled() {
    let qb = qb_with(QuickBooksAppConfig {
        limits: QuickBooksLimits {
            concurrent: Some(2),
            ..QuickBooksLimits::default()
        },
        ..app()
    })
    .await;
    qb.sandbox.quickbooks().inject(
        REALM,
        Fault::Latency {
            ms: 300,
            times: 2,
            method: None,
            path_contains: None,
        },
    );
    let path = format!("/companyinfo/{REALM}");
    let (a, b, c) = tokio::join!(qb.get(&path, &[]), qb.get(&path, &[]), async {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        qb.get(&path, &[]).await
    });
    assert_eq!(
        (a.0, b.0, c.0),
        (
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        )
    );
    let stats = qb.sandbox.quickbooks().stats(REALM).unwrap();
    assert_eq!((stats.max_concurrent_requests, stats.rate_limited), (2, 1));
}

#[tokio::test]
async fn a_new_company_holds_the_services_item_and_an_invoice_line_without_item_books_nothing() {
    let qb = qb().await;
    let (status, body) = qb
        .get(
            "/query",
            &[("query", "select * from Item where Name = 'Services'")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let services = &body["QueryResponse"]["Item"][0];
    assert_eq!(
        (services["Type"].as_str(), services["Active"].as_bool()),
        (Some("Service"), Some(true)),
        "{body}"
    );
    let (_, body) = qb
        .get(
            "/query",
            &[(
                "query",
                "select * from Account where AccountType = 'Income'",
            )],
        )
        .await;
    let income: Vec<&str> = body["QueryResponse"]["Account"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["Classification"].as_str().unwrap())
        .collect();
    assert!(
        !income.is_empty() && income.iter().all(|c| *c == "Revenue"),
        "{body}"
    );
    let (_, customer) = qb.post("/customer", json!({"DisplayName": "Acme"})).await;
    let invoice = |detail: Value| {
        json!({"CustomerRef": {"value": customer["Customer"]["Id"]}, "Line": [{
            "DetailType": "SalesItemLineDetail", "Amount": 40,
            "SalesItemLineDetail": detail,
        }]})
    };
    // Intuit: a line without ItemRef is documentation and its Amount is ignored.
    let (status, bare) = qb
        .post("/invoice", invoice(json!({"Qty": 1, "UnitPrice": 40})))
        .await;
    assert_eq!(status, StatusCode::OK, "{bare}");
    assert_eq!(bare["Invoice"]["TotalAmt"], json!(0), "{bare}");
    let (status, booked) = qb
        .post(
            "/invoice",
            invoice(json!({"ItemRef": {"value": services["Id"]}, "Qty": 1, "UnitPrice": 40})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{booked}");
    assert_eq!(booked["Invoice"]["TotalAmt"], json!(40), "{booked}");
    // An item on an account the company does not have is refused.
    let (status, refused) = qb
        .post(
            "/item",
            json!({"Name": "Gadget", "Type": "Service", "IncomeAccountRef": {"value": "4242"}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert_eq!(first_error(&refused).0, "2500", "{refused}");
    // Every request is in the realm's log, in arrival order.
    let log = qb.sandbox.quickbooks().requests(REALM);
    let paths: Vec<&str> = log.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        ["query", "query", "customer", "invoice", "invoice", "item"]
    );
    assert!(log.windows(2).all(|w| w[0].at <= w[1].at));
}
