//! The Xero simulator over real HTTP, against Xero's documented behaviour and the official
//! OpenAPI documents (`shared/erp/specs/xero/`).

// Tests fail loudly on the first unexpected error; that is what unwrap is for here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{SecondsFormat, Utc};
use passerelle_sandbox::Sandbox;
use passerelle_sandbox::xero::{Fault, XeroAppConfig, XeroLimits, XeroStats};
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use serde_json::{Map, Value, json};
use std::time::{Duration, Instant};

const TENANT: &str = "fe79f7dd-b6d4-4a92-ba7b-538af6289c58";
const OTHER_TENANT: &str = "0f3a9a2e-6d1b-4c53-9d0e-2f1c7e5b8a11";
const CLIENT_ID: &str = "passerelle-client";
const SECRET: &str = "s3cret";
const FIRST_REFRESH: &str = "rt-from-consent";

struct Xero {
    sandbox: Sandbox,
    http: Client,
    access: String,
}

fn app() -> XeroAppConfig {
    XeroAppConfig {
        refresh_token: Some(FIRST_REFRESH.into()),
        ..XeroAppConfig::new(CLIENT_ID, SECRET, TENANT)
    }
}

/// A sandbox with one app connected to [`TENANT`], already holding an access token.
async fn xero_with(config: XeroAppConfig) -> Xero {
    let sandbox = Sandbox::start(0).await.unwrap();
    sandbox.xero().try_add_app(config).unwrap();
    let http = Client::new();
    let mut xero = Xero {
        sandbox,
        http,
        access: String::new(),
    };
    let tokens = xero.refresh(FIRST_REFRESH).await;
    assert_eq!(tokens.status(), StatusCode::OK);
    let tokens: Value = tokens.json().await.unwrap();
    xero.access = tokens["access_token"].as_str().unwrap().to_owned();
    xero
}

async fn xero() -> Xero {
    xero_with(app()).await
}

impl Xero {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sandbox.xero_url())
    }

    async fn token_request(&self, form: &str, basic: Option<(&str, &str)>) -> Response {
        let mut request = self
            .http
            .post(self.url("/identity/connect/token"))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form.to_owned());
        if let Some((id, secret)) = basic {
            request = request.basic_auth(id, Some(secret));
        }
        request.send().await.unwrap()
    }

    async fn refresh(&self, refresh_token: &str) -> Response {
        self.token_request(
            &format!("grant_type=refresh_token&refresh_token={refresh_token}"),
            Some((CLIENT_ID, SECRET)),
        )
        .await
    }

    /// An Accounting API call with the token, the tenant header and `Accept: application/json`.
    fn api(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, self.url(&format!("/api.xro/2.0/{path}")))
            .bearer_auth(&self.access)
            .header("xero-tenant-id", TENANT)
            .header("Accept", "application/json")
    }

    fn stats(&self) -> XeroStats {
        self.sandbox.xero().stats(TENANT).unwrap()
    }

    fn inject(&self, fault: Fault) {
        self.sandbox.xero().try_inject(TENANT, fault).unwrap();
    }

    async fn put(&self, path: &str, body: &Value) -> Response {
        self.api(Method::PUT, path).json(body).send().await.unwrap()
    }

    async fn contact(&self, name: &str) -> String {
        let response = self
            .put("Contacts", &json!({"Contacts": [{"Name": name}]}))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        body["Contacts"][0]["ContactID"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

fn invoice(contact_id: &str, reference: &str) -> Value {
    json!({
        "Type": "ACCREC",
        "Contact": {"ContactID": contact_id},
        "Date": "2026-03-11",
        "DueDate": "2026-04-10",
        "Reference": reference,
        "LineItems": [{"Description": "Oak pallet", "Quantity": 20, "UnitAmount": 12.5,
                       "AccountCode": "200"}],
        "Status": "DRAFT"
    })
}

fn messages(element: &Value) -> Vec<&str> {
    element["ValidationErrors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Message"].as_str().unwrap())
        .collect()
}

/// Asserts Xero's gateway error body (`Type`, `Title`, `Status`, `Detail`, `Instance`,
/// `Extensions`) and returns its `Detail`.
async fn gateway_error(response: Response, status: StatusCode) -> String {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["Type"], Value::Null);
    assert_eq!(body["Title"], status.canonical_reason().unwrap());
    assert_eq!(body["Status"], status.as_u16());
    assert!(body["Instance"].is_string());
    assert_eq!(body["Extensions"], json!({}));
    body["Detail"].as_str().unwrap().to_owned()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

// --- OAuth 2 ---

#[tokio::test]
async fn refresh_tokens_rotate_and_the_old_one_dies_after_the_grace_period() {
    let xero = xero_with(XeroAppConfig {
        refresh_grace_secs: 1,
        ..app()
    })
    .await;
    // The set-up refresh already used FIRST_REFRESH; within the grace period it still works
    // (a client that lost the response may retry) and rotates again.
    let retried = xero.refresh(FIRST_REFRESH).await;
    assert_eq!(retried.status(), StatusCode::OK);
    assert_eq!(header(retried.headers(), "cache-control"), "no-store");
    let retried: Value = retried.json().await.unwrap();
    assert_eq!(retried["token_type"], "Bearer");
    assert_eq!(retried["expires_in"], 1800);
    assert!(
        retried["scope"]
            .as_str()
            .unwrap()
            .contains("offline_access")
    );
    let newest = retried["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(newest, FIRST_REFRESH);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let stale = xero.refresh(FIRST_REFRESH).await;
    assert_eq!(stale.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        stale.json::<Value>().await.unwrap(),
        json!({"error": "invalid_grant"})
    );

    let fresh = xero.refresh(&newest).await;
    assert_eq!(fresh.status(), StatusCode::OK);
    let fresh: Value = fresh.json().await.unwrap();
    let access = fresh["access_token"].as_str().unwrap();
    let contacts = xero
        .http
        .get(xero.url("/api.xro/2.0/Contacts"))
        .bearer_auth(access)
        .header("xero-tenant-id", TENANT)
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(contacts.status(), StatusCode::OK);

    let stats = xero.stats();
    assert_eq!(stats.token_refreshes, 3);
    assert_eq!(stats.rejected_refreshes, 1);
}

#[tokio::test]
async fn the_token_endpoint_checks_the_client_and_the_grant() {
    let xero = xero().await;
    let wrong_secret = xero
        .token_request(
            "grant_type=refresh_token&refresh_token=x",
            Some((CLIENT_ID, "nope")),
        )
        .await;
    assert_eq!(wrong_secret.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        wrong_secret.json::<Value>().await.unwrap()["error"],
        "invalid_client"
    );

    // client_secret_post works as well as HTTP Basic.
    let unknown = xero
        .token_request(
            &format!(
                "grant_type=refresh_token&refresh_token=unknown&client_id={CLIENT_ID}&client_secret={SECRET}"
            ),
            None,
        )
        .await;
    assert_eq!(
        unknown.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );

    let not_custom = xero
        .token_request("grant_type=client_credentials", Some((CLIENT_ID, SECRET)))
        .await;
    assert_eq!(
        not_custom.json::<Value>().await.unwrap()["error"],
        "unauthorized_client"
    );
    let unsupported = xero
        .token_request("grant_type=password", Some((CLIENT_ID, SECRET)))
        .await;
    assert_eq!(
        unsupported.json::<Value>().await.unwrap()["error"],
        "unsupported_grant_type"
    );
    assert_eq!(xero.stats().rejected_refreshes, 2);
}

#[tokio::test]
async fn a_custom_connection_uses_client_credentials_and_may_omit_the_tenant() {
    let sandbox = Sandbox::start(0).await.unwrap();
    sandbox
        .xero()
        .try_add_app(XeroAppConfig {
            custom_connection: true,
            ..XeroAppConfig::new("custom", "secret", TENANT)
        })
        .unwrap();
    let http = Client::new();
    let tokens: Value = http
        .post(format!("{}/identity/connect/token", sandbox.xero_url()))
        .basic_auth("custom", Some("secret"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&scope=accounting.contacts")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(tokens.get("refresh_token").is_none());
    assert_eq!(tokens["scope"], "accounting.contacts");
    let access = tokens["access_token"].as_str().unwrap();
    let contacts = http
        .get(format!("{}/api.xro/2.0/Contacts", sandbox.xero_url()))
        .bearer_auth(access)
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(contacts.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_expired_access_token_gets_401_token_expired_and_a_refresh_recovers() {
    let mut xero = xero_with(XeroAppConfig {
        access_token_ttl_secs: 1,
        ..app()
    })
    .await;
    assert_eq!(
        xero.api(Method::GET, "Contacts")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let expired = xero.api(Method::GET, "Contacts").send().await.unwrap();
    assert!(header(expired.headers(), "www-authenticate").starts_with("Bearer"));
    let detail = gateway_error(expired, StatusCode::UNAUTHORIZED).await;
    // `TokenExpired: token expired at 04/09/2023 05:16:59`
    let at = detail
        .strip_prefix("TokenExpired: token expired at ")
        .unwrap();
    assert!(
        chrono::NaiveDateTime::parse_from_str(at, "%m/%d/%Y %H:%M:%S").is_ok(),
        "{at}"
    );

    // Forcing expiry mid-sync works regardless of the lifetime.
    let sandbox_refresh: Value = xero.refresh(FIRST_REFRESH).await.json().await.unwrap();
    xero.access = sandbox_refresh["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        xero.api(Method::GET, "Contacts")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(xero.sandbox.xero().expire_access_tokens(CLIENT_ID), 1);
    let forced = xero.api(Method::GET, "Contacts").send().await.unwrap();
    gateway_error(forced, StatusCode::UNAUTHORIZED).await;

    let garbage = xero
        .http
        .get(xero.url("/api.xro/2.0/Contacts"))
        .bearer_auth("not-a-token")
        .header("xero-tenant-id", TENANT)
        .send()
        .await
        .unwrap();
    assert_eq!(
        gateway_error(garbage, StatusCode::UNAUTHORIZED).await,
        "AuthenticationUnsuccessful"
    );
}

#[tokio::test]
async fn a_missing_or_unconnected_tenant_is_403() {
    let xero = xero().await;
    xero.sandbox
        .xero()
        .add_app(XeroAppConfig::new("other-app", "x", OTHER_TENANT));
    let missing = xero
        .http
        .get(xero.url("/api.xro/2.0/Contacts"))
        .bearer_auth(&xero.access)
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(
        gateway_error(missing, StatusCode::FORBIDDEN).await,
        "AuthenticationUnsuccessful"
    );
    for tenant in [OTHER_TENANT, "not-a-guid"] {
        let foreign = xero
            .http
            .get(xero.url("/api.xro/2.0/Contacts"))
            .bearer_auth(&xero.access)
            .header("xero-tenant-id", tenant)
            .send()
            .await
            .unwrap();
        gateway_error(foreign, StatusCode::FORBIDDEN).await;
    }
    // Refused before reaching the tenant: nothing counted.
    assert_eq!(xero.sandbox.xero().stats(OTHER_TENANT).unwrap().requests, 0);
}

#[tokio::test]
async fn connections_list_the_tenants_of_the_consent() {
    let xero = xero().await;
    let response = xero
        .http
        .get(xero.url("/connections"))
        .bearer_auth(&xero.access)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let connections: Value = response.json().await.unwrap();
    let connection = &connections[0];
    assert_eq!(connections.as_array().unwrap().len(), 1);
    assert_eq!(connection["tenantId"], TENANT);
    assert_eq!(connection["tenantType"], "ORGANISATION");
    for field in [
        "id",
        "authEventId",
        "tenantName",
        "createdDateUtc",
        "updatedDateUtc",
    ] {
        assert!(connection[field].is_string(), "{field}");
    }
}

#[tokio::test]
async fn the_api_speaks_json_only_to_clients_that_ask_for_it() {
    let xero = xero().await;
    let response = xero
        .http
        .get(xero.url("/api.xro/2.0/Contacts"))
        .bearer_auth(&xero.access)
        .header("xero-tenant-id", TENANT)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_ACCEPTABLE);
}

// --- OAuth 2: the authorization code with PKCE ---

const CALLBACK: &str = "https://app.example/xero/callback";
/// RFC 7636 Appendix B's pair, so the simulator's hashing is checked against the RFC's.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const STATE: &str = "csrf-7Hq2";

fn authorizable() -> XeroAppConfig {
    XeroAppConfig::authorizable(CLIENT_ID, SECRET, TENANT, CALLBACK)
}

/// A sandbox with an app that has no token yet, and a client that does not follow redirects.
async fn authorizing(config: XeroAppConfig) -> Xero {
    let sandbox = Sandbox::start(0).await.unwrap();
    sandbox.xero().try_add_app(config).unwrap();
    let http = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    Xero {
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
        ("response_type", "code"),
        ("client_id", CLIENT_ID),
        ("redirect_uri", CALLBACK),
        (
            "scope",
            "offline_access accounting.contacts accounting.settings",
        ),
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
    let location = url::Url::parse(header(response.headers(), "location")).unwrap();
    let params = location.query_pairs().into_owned().collect();
    let mut target = location;
    target.set_query(None);
    (target.to_string(), params)
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

impl Xero {
    async fn authorize(&self, query: &[(String, String)]) -> Response {
        let url =
            url::Url::parse_with_params(&self.url("/identity/connect/authorize"), query).unwrap();
        self.http.get(url).send().await.unwrap()
    }

    /// Authorizes with the default query and returns the code the redirect carries.
    async fn code(&self) -> String {
        let response = self.authorize(&authorize_query(&[])).await;
        let (_, params) = redirected(&response);
        param(&params, "code").unwrap().to_owned()
    }

    async fn exchange(&self, code: &str, redirect_uri: &str, verifier: &str) -> Response {
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "authorization_code")
            .append_pair("code", code)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("code_verifier", verifier)
            .finish();
        self.token_request(&form, Some((CLIENT_ID, SECRET))).await
    }
}

async fn oauth_error_of(response: Response) -> String {
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    body["error"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn an_authorization_code_exchanged_with_its_verifier_gets_tokens_that_work_and_refresh() {
    let mut xero = authorizing(authorizable()).await;
    let response = xero.authorize(&authorize_query(&[])).await;
    assert_eq!(header(response.headers(), "cache-control"), "no-store");
    let (target, params) = redirected(&response);
    assert_eq!(target, CALLBACK);
    assert_eq!(param(&params, "state"), Some(STATE));
    assert_eq!(
        param(&params, "scope"),
        Some("offline_access accounting.contacts accounting.settings")
    );
    assert!(param(&params, "session_state").is_some());
    assert!(param(&params, "error").is_none());
    let code = param(&params, "code").unwrap();
    assert_eq!(code.len(), 64, "{code}");

    let tokens = xero.exchange(code, CALLBACK, VERIFIER).await;
    assert_eq!(tokens.status(), StatusCode::OK);
    assert_eq!(header(tokens.headers(), "cache-control"), "no-store");
    let tokens: Value = tokens.json().await.unwrap();
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 1800);
    assert_eq!(
        tokens["scope"],
        "offline_access accounting.contacts accounting.settings"
    );
    xero.access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();

    // The new grant lists the app's tenant and reaches its API.
    let connections: Value = xero
        .http
        .get(xero.url("/connections"))
        .bearer_auth(&xero.access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(connections.as_array().unwrap().len(), 1);
    assert_eq!(connections[0]["tenantId"], TENANT);
    let contact = xero.contact("Acme Wholesale").await;
    assert!(!contact.is_empty());

    // The refresh token works for the refresh grant and rotates, keeping the consented scope.
    let refreshed = xero.refresh(&refresh).await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    let refreshed: Value = refreshed.json().await.unwrap();
    assert_ne!(refreshed["refresh_token"], refresh.as_str());
    assert_eq!(refreshed["scope"], tokens["scope"]);
    xero.access = refreshed["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        xero.api(Method::GET, "Contacts")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    let stats = xero.stats();
    assert_eq!(
        (
            stats.authorizations,
            stats.code_exchanges,
            stats.rejected_code_exchanges,
            stats.token_refreshes
        ),
        (1, 1, 0, 1)
    );
    assert_eq!(stats.creates["Contacts"], 1);
}

#[tokio::test]
async fn without_offline_access_the_code_gets_no_refresh_token() {
    let xero = authorizing(authorizable()).await;
    let response = xero
        .authorize(&authorize_query(&[("scope", Some("accounting.contacts"))]))
        .await;
    let (_, params) = redirected(&response);
    let tokens = xero
        .exchange(param(&params, "code").unwrap(), CALLBACK, VERIFIER)
        .await;
    assert_eq!(tokens.status(), StatusCode::OK);
    let tokens: Value = tokens.json().await.unwrap();
    assert!(tokens.get("refresh_token").is_none(), "{tokens}");
    assert_eq!(tokens["scope"], "accounting.contacts");
    assert!(tokens["access_token"].is_string());
}

#[tokio::test]
async fn a_wrong_verifier_is_invalid_grant_and_spends_the_code() {
    let xero = authorizing(authorizable()).await;
    let code = xero.code().await;
    let wrong = "wrong-verifier-of-the-right-length-0123456789";
    assert_eq!(
        oauth_error_of(xero.exchange(&code, CALLBACK, wrong).await).await,
        "invalid_grant"
    );
    // A code presented once is spent: the right verifier is too late.
    assert_eq!(
        oauth_error_of(xero.exchange(&code, CALLBACK, VERIFIER).await).await,
        "invalid_grant"
    );
    // The challenge itself is not a verifier.
    let code = xero.code().await;
    assert_eq!(
        oauth_error_of(xero.exchange(&code, CALLBACK, CHALLENGE).await).await,
        "invalid_grant"
    );
    let stats = xero.stats();
    assert_eq!(
        (stats.code_exchanges, stats.rejected_code_exchanges),
        (0, 3)
    );
}

#[tokio::test]
async fn a_redirect_uri_other_than_the_authorized_one_is_invalid_grant() {
    let xero = authorizing(XeroAppConfig {
        redirect_uris: vec![CALLBACK.into(), format!("{CALLBACK}/other")],
        ..authorizable()
    })
    .await;
    // Registered too, but not the one the code was issued for.
    let code = xero.code().await;
    assert_eq!(
        oauth_error_of(
            xero.exchange(&code, &format!("{CALLBACK}/other"), VERIFIER)
                .await
        )
        .await,
        "invalid_grant"
    );
    let code = xero.code().await;
    assert_eq!(
        oauth_error_of(
            xero.exchange(&code, &format!("{CALLBACK}/"), VERIFIER)
                .await
        )
        .await,
        "invalid_grant"
    );
    let code = xero.code().await;
    let no_redirect_uri = xero
        .token_request(
            &format!("grant_type=authorization_code&code={code}&code_verifier={VERIFIER}"),
            Some((CLIENT_ID, SECRET)),
        )
        .await;
    assert_eq!(oauth_error_of(no_redirect_uri).await, "invalid_request");
}

#[tokio::test]
async fn a_code_works_once() {
    let xero = authorizing(authorizable()).await;
    let code = xero.code().await;
    assert_eq!(
        xero.exchange(&code, CALLBACK, VERIFIER).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        oauth_error_of(xero.exchange(&code, CALLBACK, VERIFIER).await).await,
        "invalid_grant"
    );
    assert_eq!(
        oauth_error_of(xero.exchange("made-up", CALLBACK, VERIFIER).await).await,
        "invalid_grant"
    );
    let stats = xero.stats();
    assert_eq!(
        (stats.code_exchanges, stats.rejected_code_exchanges),
        (1, 2)
    );
}

#[tokio::test]
async fn an_expired_code_is_invalid_grant() {
    let xero = authorizing(XeroAppConfig {
        authorization_code_ttl_secs: 1,
        ..authorizable()
    })
    .await;
    let code = xero.code().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        oauth_error_of(xero.exchange(&code, CALLBACK, VERIFIER).await).await,
        "invalid_grant"
    );
}

#[tokio::test]
async fn the_code_exchange_authenticates_the_client() {
    let xero = authorizing(XeroAppConfig {
        redirect_uris: vec![CALLBACK.into()],
        ..XeroAppConfig::new("other-app", "other-secret", TENANT)
    })
    .await;
    xero.sandbox.xero().try_add_app(authorizable()).unwrap();
    let code = xero.code().await;
    let form = format!(
        "grant_type=authorization_code&code={code}&redirect_uri={CALLBACK}&code_verifier={VERIFIER}"
    );
    let wrong_secret = xero.token_request(&form, Some((CLIENT_ID, "nope"))).await;
    assert_eq!(oauth_error_of(wrong_secret).await, "invalid_client");
    // Another app's valid credentials do not make the code theirs.
    let other_app = xero
        .token_request(&form, Some(("other-app", "other-secret")))
        .await;
    assert_eq!(oauth_error_of(other_app).await, "invalid_grant");
}

#[tokio::test]
async fn an_unknown_client_or_an_untrusted_redirect_uri_gets_an_error_page_not_a_redirect() {
    let xero = authorizing(authorizable()).await;
    let with_fragment = format!("{CALLBACK}#top");
    let cases: [(Overrides, &str); 6] = [
        (&[("client_id", Some("nobody"))], "unauthorized_client"),
        (&[("client_id", None)], "invalid_request"),
        (&[("redirect_uri", None)], "invalid_request"),
        (
            &[("redirect_uri", Some("/xero/callback"))],
            "invalid_request",
        ),
        (
            &[("redirect_uri", Some("https://evil.example/xero/callback"))],
            "unauthorized_client",
        ),
        (&[("redirect_uri", Some(&with_fragment))], "invalid_request"),
    ];
    for (overrides, error) in cases {
        let response = xero.authorize(&authorize_query(overrides)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{overrides:?}");
        assert!(response.headers().get("location").is_none());
        assert!(header(response.headers(), "content-type").starts_with("text/html"));
        let page = response.text().await.unwrap();
        assert!(page.contains(error), "{overrides:?}: {page}");
    }
    // An app without registered redirect URIs cannot be authorized at all.
    xero.sandbox
        .xero()
        .try_add_app(XeroAppConfig::new("unregistered", "secret", TENANT))
        .unwrap();
    let response = xero
        .authorize(&authorize_query(&[("client_id", Some("unregistered"))]))
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(xero.stats().authorizations, 0);
}

#[tokio::test]
async fn denied_consent_redirects_with_access_denied_and_the_state() {
    let xero = authorizing(XeroAppConfig {
        deny_consent: true,
        ..authorizable()
    })
    .await;
    let response = xero.authorize(&authorize_query(&[])).await;
    let (target, params) = redirected(&response);
    assert_eq!(target, CALLBACK);
    assert_eq!(
        params,
        vec![
            ("error".to_owned(), "access_denied".to_owned()),
            ("state".to_owned(), STATE.to_owned()),
        ]
    );
    let stats = xero.stats();
    assert_eq!((stats.authorizations, stats.refused_authorizations), (0, 1));
}

#[tokio::test]
async fn a_malformed_authorization_request_redirects_with_the_rfc_error_and_the_state() {
    let xero = authorizing(authorizable()).await;
    let cases: [(Overrides, &str); 8] = [
        (
            &[("response_type", Some("token"))],
            "unsupported_response_type",
        ),
        (&[("response_type", None)], "invalid_request"),
        (&[("code_challenge", None)], "invalid_request"),
        (
            &[("code_challenge_method", Some("plain"))],
            "invalid_request",
        ),
        (&[("code_challenge_method", None)], "invalid_request"),
        (&[("code_challenge", Some("too-short"))], "invalid_request"),
        (&[("scope", None)], "invalid_request"),
        (
            &[("scope", Some("offline_access payroll.employees"))],
            "invalid_scope",
        ),
    ];
    for (overrides, error) in cases {
        let response = xero.authorize(&authorize_query(overrides)).await;
        let (target, params) = redirected(&response);
        assert_eq!(target, CALLBACK);
        assert_eq!(param(&params, "error"), Some(error), "{overrides:?}");
        assert_eq!(param(&params, "state"), Some(STATE), "{overrides:?}");
        assert!(param(&params, "error_description").is_some());
        assert!(param(&params, "code").is_none());
    }
    // A repeated parameter is refused (RFC 6749 §3.1); a repeated state cannot be echoed.
    let mut repeated_scope = authorize_query(&[]);
    repeated_scope.push(("scope".into(), "accounting.contacts".into()));
    let (_, params) = redirected(&xero.authorize(&repeated_scope).await);
    assert_eq!(param(&params, "error"), Some("invalid_request"));
    assert_eq!(param(&params, "state"), Some(STATE));
    let mut repeated_state = authorize_query(&[]);
    repeated_state.push(("state".into(), "again".into()));
    let (_, params) = redirected(&xero.authorize(&repeated_state).await);
    assert_eq!(param(&params, "error"), Some("invalid_request"));
    assert_eq!(param(&params, "state"), None);

    // A custom connection is not authorized with a code.
    xero.sandbox
        .xero()
        .try_add_app(XeroAppConfig {
            custom_connection: true,
            ..XeroAppConfig::authorizable("custom", "secret", OTHER_TENANT, CALLBACK)
        })
        .unwrap();
    let response = xero
        .authorize(&authorize_query(&[("client_id", Some("custom"))]))
        .await;
    assert_eq!(
        param(&redirected(&response).1, "error"),
        Some("unauthorized_client")
    );
    let stats = xero.stats();
    assert_eq!(
        (stats.authorizations, stats.refused_authorizations),
        (0, 10)
    );
}

// --- batches and validation ---

#[tokio::test]
async fn summarize_errors_false_creates_the_valid_elements_and_reports_the_others() {
    let xero = xero().await;
    let response = xero
        .put(
            "Contacts?summarizeErrors=false",
            &json!({"Contacts": [
                {"Name": "Acme Wholesale", "EmailAddress": "buyer@acme.example"},
                {"EmailAddress": "no-name@acme.example"},
                {"Name": "Bolt Traders", "ContactNumber": "CUST-2"},
                {"Name": "acme wholesale"},
                {"Name": "Bad Mail", "EmailAddress": "not-an-email"}
            ]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let statuses: Vec<&str> = body["Contacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["StatusAttributeString"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["OK", "ERROR", "OK", "ERROR", "ERROR"]);
    let contacts = &body["Contacts"];
    assert!(contacts[0]["ContactID"].is_string());
    assert_eq!(contacts[0]["ContactStatus"], "ACTIVE");
    assert_eq!(
        messages(&contacts[1]),
        ["The contact name must be specified."]
    );
    assert_eq!(contacts[1]["HasValidationErrors"], true);
    assert_eq!(
        messages(&contacts[3]),
        [
            "The contact name acme wholesale is already assigned to another contact. The contact \
          name must be unique across all active contacts."
        ]
    );
    assert_eq!(messages(&contacts[4]), ["Email address must be valid."]);

    let stats = xero.stats();
    assert_eq!(stats.creates["Contacts"], 2);
    assert_eq!(stats.records["Contacts"], 2);
}

#[tokio::test]
async fn by_default_one_invalid_element_fails_the_whole_batch_with_a_validation_exception() {
    let xero = xero().await;
    let acme = xero.contact("Acme Wholesale").await;
    let response = xero
        .put(
            "Invoices",
            &json!({"Invoices": [
                invoice(&acme, "WH-1001"),
                {"Type": "ACCREC", "LineItems": [{"Description": "x", "Quantity": "2"}]},
                invoice(&acme, "WH-1003")
            ]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["ErrorNumber"], 10);
    assert_eq!(body["Type"], "ValidationException");
    assert_eq!(body["Message"], "A validation exception occurred");
    let elements = body["Elements"].as_array().unwrap();
    assert_eq!(elements.len(), 1);
    assert_eq!(elements[0]["HasErrors"], true);
    assert_eq!(
        messages(&elements[0]),
        [
            "A Contact must be specified for this type of transaction",
            "Quantity must be a number."
        ]
    );
    let stats = xero.stats();
    assert_eq!(stats.creates["Invoices"], 0);
    assert_eq!(stats.records["Invoices"], 0);
}

#[tokio::test]
async fn invoices_and_quotes_are_computed_like_xero() {
    let xero = xero().await;
    let acme = xero.contact("Acme Wholesale").await;
    let response = xero
        .put(
            "Invoices",
            &json!({"Invoices": [invoice(&acme, "WH-1001")]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let raw = response.text().await.unwrap();
    // Xero escapes the slashes of its MS-JSON dates.
    assert!(raw.contains(r#""\/Date("#), "{raw}");
    let body: Value = serde_json::from_str(&raw).unwrap();
    let created = &body["Invoices"][0];
    assert_eq!(created["StatusAttributeString"], "OK");
    assert_eq!(created["InvoiceNumber"], "INV-0001");
    assert_eq!(created["Total"], 250.0);
    assert_eq!(created["AmountDue"], 250.0);
    assert_eq!(created["Contact"]["Name"], "Acme Wholesale");
    assert_eq!(created["Date"], "/Date(1773187200000+0000)/");
    assert_eq!(created["DateString"], "2026-03-11T00:00:00");
    assert_eq!(created["DueDateString"], "2026-04-10T00:00:00");
    let updated = created["UpdatedDateUTC"].as_str().unwrap();
    assert!(updated.starts_with("/Date(") && updated.ends_with("+0000)/"));

    // A second sales invoice with the same number is refused.
    let mut again = invoice(&acme, "WH-1002");
    again["InvoiceNumber"] = json!("INV-0001");
    let duplicate = xero.put("Invoices", &json!({"Invoices": [again]})).await;
    assert_eq!(duplicate.status(), StatusCode::BAD_REQUEST);
    let duplicate: Value = duplicate.json().await.unwrap();
    assert_eq!(
        messages(&duplicate["Elements"][0]),
        ["Invoice # must be unique."]
    );

    // Quotes (Xero's sales orders) number themselves QU-0001 and use upper-case amount types.
    let quote = xero
        .put(
            "Quotes",
            &json!({"Quotes": [{"Contact": {"ContactID": acme}, "Date": "2026-03-11",
                                "Reference": "WH-1001",
                                "LineItems": [{"Description": "Oak pallet", "Quantity": 2,
                                               "UnitAmount": 12.5, "DiscountRate": 10}]}]}),
        )
        .await;
    assert_eq!(quote.status(), StatusCode::OK);
    let quote: Value = quote.json().await.unwrap();
    let quote = &quote["Quotes"][0];
    assert_eq!(quote["QuoteNumber"], "QU-0001");
    assert_eq!(quote["Status"], "DRAFT");
    assert_eq!(quote["LineAmountTypes"], "EXCLUSIVE");
    assert_eq!(quote["Total"], 22.5);
    assert_eq!(quote["TotalDiscount"], 2.5);
    assert_eq!(quote["Date"], "/Date(1773187200000)/");

    // Approving it by its number through the single-record route.
    let approve = xero
        .api(Method::POST, "Invoices/INV-0001")
        .json(&json!({"Invoices": [{"Status": "AUTHORISED"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(approve.status(), StatusCode::OK);
    let approved: Value = approve.json().await.unwrap();
    assert_eq!(approved["Invoices"][0]["Status"], "AUTHORISED");
    let back_to_draft = xero
        .api(Method::POST, "Invoices/INV-0001")
        .json(&json!({"Invoices": [{"Status": "DRAFT"}]}))
        .send()
        .await
        .unwrap();
    let refused: Value = back_to_draft.json().await.unwrap();
    assert_eq!(
        messages(&refused["Elements"][0]),
        ["Invoice not of valid status for modification"]
    );

    let stats = xero.stats();
    assert_eq!(stats.creates["Invoices"], 1);
    assert_eq!(stats.creates["Quotes"], 1);
    assert_eq!(stats.updates["Invoices"], 1);
    let contact = &xero.sandbox.xero().records(TENANT, "contacts")[0];
    assert_eq!(contact["IsCustomer"], true);
}

#[tokio::test]
async fn approved_invoices_take_tracked_items_out_of_stock() {
    let xero = xero().await;
    let acme = xero.contact("Acme Wholesale").await;
    let item = xero
        .put(
            "Items",
            &json!({"Items": [{"Code": "SKU-0017", "Name": "Oak pallet",
                               "InventoryAssetAccountCode": "630",
                               "PurchaseDetails": {"COGSAccountCode": "310"},
                               "SalesDetails": {"UnitPrice": 12.5, "AccountCode": "200"}}]}),
        )
        .await;
    let item: Value = item.json().await.unwrap();
    let item_id = item["Items"][0]["ItemID"].as_str().unwrap().to_owned();
    assert_eq!(item["Items"][0]["IsTrackedAsInventory"], true);
    assert_eq!(item["Items"][0]["QuantityOnHand"], 0.0);

    // Stock is read-only through the API; a test seeds it.
    let mut seeded = xero.sandbox.xero().records(TENANT, "Items")[0].clone();
    seeded["QuantityOnHand"] = json!(30.0);
    xero.sandbox.xero().upsert_record(TENANT, "Items", seeded);

    let sale = json!({"Type": "ACCREC", "Status": "AUTHORISED", "Contact": {"ContactID": acme},
                      "LineItems": [{"ItemCode": "SKU-0017", "Quantity": 20}]});
    let response = xero
        .put("Invoices", &json!({"Invoices": [sale.clone()]}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let line = &body["Invoices"][0]["LineItems"][0];
    assert_eq!(line["UnitAmount"], 12.5);
    assert_eq!(line["Item"]["ItemID"], item_id.as_str());

    let stock: Value = xero
        .api(Method::GET, &format!("Items/{item_id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stock["Items"][0]["QuantityOnHand"], 10.0);
    let oversold = xero.put("Invoices", &json!({"Invoices": [sale]})).await;
    assert_eq!(oversold.status(), StatusCode::BAD_REQUEST);
}

// --- idempotency ---

#[tokio::test]
async fn a_repeated_idempotency_key_replays_the_first_answer_and_creates_once() {
    let xero = xero().await;
    let acme = xero.contact("Acme Wholesale").await;
    let body = json!({"Invoices": [invoice(&acme, "WH-1001")]});
    let send = |body: Value| {
        xero.api(Method::PUT, "Invoices")
            .header("Idempotency-Key", "export-run-7-invoice-1001")
            .json(&body)
            .send()
    };
    let first = send(body.clone()).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let first: Value = first.json().await.unwrap();
    let second = send(body.clone()).await.unwrap();
    assert_eq!(second.status(), StatusCode::OK);
    let second: Value = second.json().await.unwrap();
    assert_eq!(first, second);

    let other = send(json!({"Invoices": [invoice(&acme, "WH-9999")]}))
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::BAD_REQUEST);
    let other: Value = other.json().await.unwrap();
    assert_eq!(
        other["Message"],
        "Idempotency Key: export-run-7-invoice-1001 is used with a different request."
    );

    // A refused request is replayed too: the client must fix it and use a new key.
    let invalid = json!({"Invoices": [{"Type": "ACCREC"}]});
    for _ in 0..2 {
        let response = xero
            .api(Method::PUT, "Invoices")
            .header("Idempotency-Key", "bad-one")
            .json(&invalid)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }

    let too_long = xero
        .api(Method::PUT, "Invoices")
        .header("Idempotency-Key", "k".repeat(129))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(too_long.status(), StatusCode::BAD_REQUEST);

    let stats = xero.stats();
    assert_eq!(stats.creates_by_key["export-run-7-invoice-1001"], 1);
    assert!(!stats.creates_by_key.contains_key("bad-one"));
    assert_eq!(stats.replays, 2);
    assert_eq!(stats.creates["Invoices"], 1);
    assert!(stats.duplicate_business_keys.is_empty());
}

#[tokio::test]
async fn duplicate_contact_names_are_refused_but_a_contact_may_keep_its_own() {
    let xero = xero().await;
    let acme = xero.contact("Acme Wholesale").await;
    let duplicate = xero
        .put(
            "Contacts",
            &json!({"Contacts": [{"Name": "ACME WHOLESALE"}]}),
        )
        .await;
    assert_eq!(duplicate.status(), StatusCode::BAD_REQUEST);
    let same_name = xero
        .api(Method::POST, &format!("Contacts/{acme}"))
        .json(&json!({"Contacts": [{"Name": "Acme Wholesale", "EmailAddress": "ap@acme.example"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(same_name.status(), StatusCode::OK);
    let stats = xero.stats();
    assert_eq!(stats.records["Contacts"], 1);
    assert_eq!(stats.updates["Contacts"], 1);
}

// --- imports ---

#[tokio::test]
async fn if_modified_since_and_pages_import_only_what_changed() {
    let xero = xero().await;
    for n in 0..250 {
        xero.sandbox.xero().upsert_record(
            TENANT,
            "Contacts",
            json!({"Name": format!("Seeded {n:03}"),
                                                     "ContactStatus": "ACTIVE"}),
        );
    }
    let page = |n: u32| xero.api(Method::GET, &format!("Contacts?page={n}")).send();
    let first: Value = page(1).await.unwrap().json().await.unwrap();
    assert_eq!(first["Contacts"].as_array().unwrap().len(), 100);
    assert_eq!(
        first["pagination"],
        json!({"page": 1, "pageSize": 100, "pageCount": 3, "itemCount": 250})
    );
    for field in ["Id", "Status", "ProviderName", "DateTimeUTC"] {
        assert!(first[field].is_string(), "{field}");
    }
    let second: Value = page(2).await.unwrap().json().await.unwrap();
    let third: Value = page(3).await.unwrap().json().await.unwrap();
    assert_eq!(third["Contacts"].as_array().unwrap().len(), 50);
    let mut names: Vec<&str> = [&first, &second, &third]
        .iter()
        .flat_map(|p| p["Contacts"].as_array().unwrap())
        .map(|c| c["Name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), 250, "pages overlap or miss records");

    tokio::time::sleep(Duration::from_millis(20)).await;
    let since = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let changed_id = first["Contacts"][0]["ContactID"].as_str().unwrap();
    let changed_name = first["Contacts"][0]["Name"].as_str().unwrap();
    let update = xero
        .api(Method::POST, &format!("Contacts/{changed_id}"))
        .json(&json!({"Contacts": [{"EmailAddress": "changed@example.com"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(update.status(), StatusCode::OK);
    // UpdatedDateUTC has millisecond precision and ties are ordered by id: keep the two
    // writes in different milliseconds so their order is the order written.
    tokio::time::sleep(Duration::from_millis(5)).await;
    xero.contact("Brand New").await;

    let changed: Value = xero
        .api(Method::GET, "Contacts?page=1")
        .header("If-Modified-Since", &since)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = changed["Contacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [changed_name, "Brand New"]);
    assert_eq!(changed["pagination"]["itemCount"], 2);

    let by_where: Value = xero
        .api(
            Method::GET,
            "Contacts?where=Name%3D%3D%22Brand%20New%22%20AND%20ContactStatus%3D%3D%22ACTIVE%22",
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_where["Contacts"].as_array().unwrap().len(), 1);
    let bad_where = xero
        .api(Method::GET, "Contacts?where=Name.ToLower()%3D%3D%22x%22")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_where.status(), StatusCode::BAD_REQUEST);
    let bad_where: Value = bad_where.json().await.unwrap();
    assert_eq!(bad_where["Type"], "QueryParseException");
}

// --- rate limits ---

#[tokio::test]
async fn the_minute_limit_answers_429_with_retry_after_and_counts_violations() {
    let xero = xero_with(XeroAppConfig {
        limits: XeroLimits {
            per_minute: Some(3),
            minute_window_ms: 1000,
            ..XeroLimits::default()
        },
        ..app()
    })
    .await;
    for expected in ["2", "1", "0"] {
        let response = xero.api(Method::GET, "Contacts").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers();
        assert_eq!(header(headers, "x-minlimit-remaining"), expected);
        assert!(
            header(headers, "x-daylimit-remaining")
                .parse::<u32>()
                .is_ok()
        );
        assert!(
            header(headers, "x-appminlimit-remaining")
                .parse::<u32>()
                .is_ok()
        );
        assert!(!header(headers, "xero-correlation-id").is_empty());
    }
    let limited = xero.api(Method::GET, "Contacts").send().await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(limited.headers(), "x-rate-limit-problem"), "minute");
    let retry_after: u64 = header(limited.headers(), "retry-after").parse().unwrap();
    assert_eq!(retry_after, 1);

    // Ignoring Retry-After is refused again and caught.
    let early = xero.api(Method::GET, "Contacts").send().await.unwrap();
    assert_eq!(early.status(), StatusCode::TOO_MANY_REQUESTS);
    let stats = xero.stats();
    assert_eq!(stats.rate_limited, 2);
    assert_eq!(stats.violations, 1);
    assert_eq!(stats.max_requests_in_window, 3);

    tokio::time::sleep(Duration::from_secs(retry_after) + Duration::from_millis(50)).await;
    assert_eq!(
        xero.api(Method::GET, "Contacts")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(xero.stats().violations, 1);
}

#[tokio::test]
async fn the_day_and_concurrent_limits_name_themselves() {
    let xero = xero_with(XeroAppConfig {
        limits: XeroLimits {
            per_day: Some(3),
            concurrent: Some(2),
            ..XeroLimits::default()
        },
        ..app()
    })
    .await;
    xero.inject(Fault::Latency {
        ms: 400,
        times: 2,
        method: None,
        path_contains: None,
    });
    let slow = [
        tokio::spawn(xero.api(Method::GET, "Contacts").send()),
        tokio::spawn(xero.api(Method::GET, "Contacts").send()),
    ];
    tokio::time::sleep(Duration::from_millis(150)).await;
    let third = xero.api(Method::GET, "Contacts").send().await.unwrap();
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        header(third.headers(), "x-rate-limit-problem"),
        "concurrent"
    );
    for call in slow {
        assert_eq!(call.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        xero.api(Method::GET, "Contacts")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let day = xero.api(Method::GET, "Contacts").send().await.unwrap();
    assert_eq!(day.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(day.headers(), "x-rate-limit-problem"), "day");
    assert!(header(day.headers(), "retry-after").parse::<u64>().unwrap() > 86_000);
    let stats = xero.stats();
    assert_eq!(stats.max_concurrent_requests, 2);
    assert_eq!(stats.violations, 0);
}

// --- faults ---

#[tokio::test]
async fn status_and_html_faults_answer_without_handling() {
    let xero = xero().await;
    xero.inject(Fault::Status {
        status: 503,
        retry_after: None,
        times: 1,
        method: Some("PUT".into()),
        path_contains: Some("/Contacts".into()),
    });
    xero.inject(Fault::Html {
        times: 1,
        method: None,
        path_contains: None,
    });
    let contact = json!({"Contacts": [{"Name": "Acme"}]});
    let unavailable = xero.put("Contacts", &contact).await;
    assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = unavailable.json().await.unwrap();
    assert_eq!(body["ErrorNumber"], 503);
    let proxy = xero.put("Contacts", &contact).await;
    assert_eq!(proxy.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(header(proxy.headers(), "content-type"), "text/html");
    assert_eq!(xero.stats().records["Contacts"], 0);
    assert_eq!(
        xero.put("Contacts", &contact).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_injected_429_is_enforced_like_the_limiter() {
    let xero = xero().await;
    xero.inject(Fault::Status {
        status: 429,
        retry_after: Some(2),
        times: 1,
        method: None,
        path_contains: None,
    });
    let limited = xero.api(Method::GET, "Items").send().await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(limited.headers(), "retry-after"), "2");
    assert_eq!(header(limited.headers(), "x-rate-limit-problem"), "minute");
    let early = xero.api(Method::GET, "Items").send().await.unwrap();
    assert_eq!(early.status(), StatusCode::TOO_MANY_REQUESTS);
    let stats = xero.stats();
    assert_eq!(stats.violations, 1);
    assert_eq!(stats.rate_limited, 2);
}

#[tokio::test]
async fn latency_and_timeout_faults_hold_the_answer() {
    let xero = xero().await;
    xero.inject(Fault::Latency {
        ms: 300,
        times: 1,
        method: None,
        path_contains: Some("/Items".into()),
    });
    let started = Instant::now();
    let slow = xero.api(Method::GET, "Items").send().await.unwrap();
    assert_eq!(slow.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));

    xero.inject(Fault::Timeout {
        times: 1,
        method: None,
        path_contains: None,
    });
    let error = xero
        .api(Method::GET, "Items")
        .timeout(Duration::from_millis(300))
        .send()
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error}");
    // The abandoned call gave its concurrency slot back.
    assert_eq!(
        xero.api(Method::GET, "Items")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    xero.inject(Fault::Timeout {
        times: 1,
        method: None,
        path_contains: None,
    });
    let held = tokio::spawn(xero.api(Method::GET, "Items").send());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    xero.sandbox.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        held.await.unwrap().unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn a_malformed_answer_still_creates() {
    let xero = xero().await;
    xero.inject(Fault::Malformed {
        times: 1,
        method: Some("PUT".into()),
        path_contains: None,
    });
    let response = xero
        .put("Contacts", &json!({"Contacts": [{"Name": "Acme"}]}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err());
    assert_eq!(xero.stats().creates["Contacts"], 1);
}

#[tokio::test]
async fn a_lost_answer_is_recovered_exactly_once_with_the_idempotency_key() {
    let xero = xero().await;
    let acme = xero.contact("Acme Wholesale").await;
    xero.inject(Fault::DropResponse {
        times: 1,
        method: Some("PUT".into()),
        path_contains: Some("/Invoices".into()),
    });
    let body = json!({"Invoices": [invoice(&acme, "WH-1001")]});
    let send = || {
        xero.api(Method::PUT, "Invoices")
            .header("Idempotency-Key", "invoice-WH-1001")
            .json(&body)
            .send()
    };
    let lost = send().await.unwrap();
    assert_eq!(lost.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let lost: Value = lost.json().await.unwrap();
    assert_eq!(lost["Type"], "UnknownErrorException");
    let retried = send().await.unwrap();
    assert_eq!(retried.status(), StatusCode::OK);
    let retried: Value = retried.json().await.unwrap();
    assert_eq!(retried["Invoices"][0]["Reference"], "WH-1001");
    let stats = xero.stats();
    assert_eq!(stats.creates_by_key["invoice-WH-1001"], 1);
    assert_eq!(stats.records["Invoices"], 1);
    assert_eq!(stats.replays, 1);
}

#[tokio::test]
async fn a_lost_refresh_answer_is_recovered_with_the_previous_token() {
    let xero = xero().await;
    let current = {
        let again: Value = xero.refresh(FIRST_REFRESH).await.json().await.unwrap();
        again["refresh_token"].as_str().unwrap().to_owned()
    };
    xero.sandbox
        .xero()
        .try_inject_identity(
            CLIENT_ID,
            Fault::DropResponse {
                times: 1,
                method: None,
                path_contains: Some("/connect/token".into()),
            },
        )
        .unwrap();
    let lost = xero.refresh(&current).await;
    assert_eq!(lost.status(), StatusCode::INTERNAL_SERVER_ERROR);
    // The refresh happened (the token rotated) but the client never saw the new one: the
    // token it holds still works during the grace period.
    let recovered = xero.refresh(&current).await;
    assert_eq!(recovered.status(), StatusCode::OK);
    assert_eq!(xero.stats().token_refreshes, 4);
}

#[tokio::test]
async fn admin_endpoints_provision_seed_inject_and_report() {
    let sandbox = Sandbox::start(0).await.unwrap();
    let http = Client::new();
    let admin = |path: &str| format!("{}/_sandbox{path}", sandbox.xero_url());
    let created = http
        .post(admin("/apps"))
        .json(&json!({"client_id": "demo", "client_secret": "demo-secret",
                      "tenants": [TENANT], "refresh_token": "rt-demo",
                      "limits": {"per_minute": 120, "minute_window_ms": 1000}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let invalid = http
        .post(admin("/apps"))
        .json(&json!({"client_id": "x", "client_secret": "y", "tenants": ["not-a-guid"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let seeded: Value = http
        .post(admin(&format!("/tenants/{TENANT}/records/Items")))
        .json(&json!({"Code": "SKU-1", "Name": "Pallet", "QuantityOnHand": 12.0}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(seeded["id"].is_string());
    let records: Value = http
        .get(admin(&format!("/tenants/{TENANT}/records/items")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(records[0]["QuantityOnHand"], 12.0);

    let fault = http
        .post(admin(&format!("/tenants/{TENANT}/faults")))
        .json(&json!({"kind": "status", "status": 500, "times": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(fault.status(), StatusCode::NO_CONTENT);
    let identity_fault = http
        .post(admin("/apps/demo/faults"))
        .json(&json!({"kind": "html", "times": 1, "path_contains": "/connections"}))
        .send()
        .await
        .unwrap();
    assert_eq!(identity_fault.status(), StatusCode::NO_CONTENT);

    let tokens: Value = http
        .post(format!("{}/identity/connect/token", sandbox.xero_url()))
        .basic_auth("demo", Some("demo-secret"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body("grant_type=refresh_token&refresh_token=rt-demo")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = tokens["access_token"].as_str().unwrap();
    let connections = http
        .get(format!("{}/connections", sandbox.xero_url()))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(connections.status(), StatusCode::BAD_GATEWAY);
    let failing = http
        .get(format!("{}/api.xro/2.0/Items", sandbox.xero_url()))
        .bearer_auth(access)
        .header("xero-tenant-id", TENANT)
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(failing.status(), StatusCode::INTERNAL_SERVER_ERROR);

    let expired: Value = http
        .post(admin("/apps/demo/expire-access-tokens"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(expired["expired"], 1);
    let stats: XeroStats = http
        .get(admin(&format!("/tenants/{TENANT}/stats")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats.requests, 1);
    assert_eq!(stats.token_refreshes, 1);
    assert_eq!(stats.records["Items"], 1);
    let unknown = http
        .get(admin("/tenants/00000000-0000-0000-0000-000000000000/stats"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn received_requests_are_recorded_as_they_came_once_asked_and_without_secrets() {
    let x = xero().await;
    let contact = x.contact("Before recording").await;
    assert!(!contact.is_empty());
    assert!(x.sandbox.xero().received_requests().is_empty());
    x.sandbox.xero().record_requests();
    let refreshed = x.refresh(FIRST_REFRESH).await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    let listed = x
        .api(Method::GET, "Contacts?where=Name%3D%3D%22A+B%22&page=1")
        .header("If-Modified-Since", "2026-12-01T08:55:31Z")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), StatusCode::OK);
    let created = x
        .api(Method::PUT, "Items?summarizeErrors=false")
        .header("Idempotency-Key", "k-1")
        .json(&json!({"Items": [{"Code": "X-1"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::OK);
    let received = x.sandbox.xero().received_requests();
    let paths: Vec<(&str, &str)> = received
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        paths,
        [
            ("POST", "/identity/connect/token"),
            ("GET", "/api.xro/2.0/Contacts"),
            ("PUT", "/api.xro/2.0/Items"),
        ]
    );
    // The token request's body and credentials are not kept.
    assert_eq!(received[0].body, "");
    assert_eq!(received[0].header("authorization"), Some("Basic"));
    assert!(!format!("{received:?}").contains(SECRET));
    assert!(!format!("{received:?}").contains(&x.access));
    let get = &received[1];
    assert_eq!(
        get.query,
        [
            ("where".to_owned(), "Name==\"A B\"".to_owned()),
            ("page".to_owned(), "1".to_owned())
        ]
    );
    assert_eq!(
        get.header("if-modified-since"),
        Some("2026-12-01T08:55:31Z")
    );
    assert_eq!(get.header("xero-tenant-id"), Some(TENANT));
    assert_eq!(get.header("authorization"), Some("Bearer"));
    let put = &received[2];
    assert_eq!(put.header("idempotency-key"), Some("k-1"));
    assert_eq!(
        serde_json::from_str::<Value>(&put.body).unwrap(),
        json!({"Items": [{"Code": "X-1"}]})
    );
}

// --- the official OpenAPI documents ---

fn spec(name: &str) -> Option<Value> {
    let path = format!(
        "{}/../../../shared/erp/specs/xero/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let Ok(text) = std::fs::read_to_string(&path) else {
        println!("skipped: {path} is absent");
        return None;
    };
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    Some(yaml_to_json(yaml))
}

/// YAML mappings may have non-string keys (`200:`); JSON objects may not.
fn yaml_to_json(yaml: serde_yaml_ng::Value) -> Value {
    use serde_yaml_ng::Value as Y;
    match yaml {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => serde_json::to_value(n).unwrap_or(Value::Null),
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(items.into_iter().map(yaml_to_json).collect()),
        Y::Mapping(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let key = match k {
                        Y::String(s) => s,
                        other => serde_yaml_ng::to_string(&other).unwrap().trim().to_owned(),
                    };
                    (key, yaml_to_json(v))
                })
                .collect(),
        ),
        Y::Tagged(tagged) => yaml_to_json(tagged.value),
    }
}

fn example<'a>(spec: &'a Value, path: &str, method: &str, status: &str) -> &'a Value {
    &spec["paths"][path][method]["responses"][status]["content"]["application/json"]["example"]
}

fn request_example<'a>(spec: &'a Value, path: &str, method: &str) -> &'a Value {
    &spec["paths"][path][method]["requestBody"]["content"]["application/json"]["example"]
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every field the spec's example element has and ours has too carries the same JSON type,
/// and ours has at least `required` of the example's fields.
fn assert_same_shape(ours: &Value, theirs: &Value, required: &[&str], what: &str) {
    let (Value::Object(ours), Value::Object(theirs)) = (ours, theirs) else {
        panic!("{what}: not objects");
    };
    for field in required {
        assert!(
            theirs.contains_key(*field),
            "{what}: the spec has no {field}"
        );
        assert!(
            ours.contains_key(*field),
            "{what}: we do not answer {field}"
        );
    }
    for (field, value) in theirs {
        if let Some(our) = ours.get(field)
            && !value.is_null()
            && !our.is_null()
        {
            assert_eq!(json_type(our), json_type(value), "{what}.{field}");
        }
    }
}

fn is_ms_date(text: &str) -> bool {
    let Some(inner) = text
        .strip_prefix("/Date(")
        .and_then(|t| t.strip_suffix(")/"))
    else {
        return false;
    };
    let digits = inner.strip_suffix("+0000").unwrap_or(inner);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

#[tokio::test]
async fn spec_examples_and_our_answers_have_the_same_shapes() {
    let Some(spec) = spec("xero_accounting.yaml") else {
        return;
    };
    let xero = xero().await;

    // Seed the contacts the request examples refer to.
    for (id, name) in [
        ("430fa14a-f945-44d3-9f97-5df5e28441b8", "Liam Gallagher"),
        ("00000000-0000-0000-0000-000000000000", "John Smith-82160"),
    ] {
        xero.sandbox.xero().upsert_record(
            TENANT,
            "Contacts",
            json!({"ContactID": id, "Name": name,
                                                      "ContactStatus": "ACTIVE"}),
        );
    }

    let cases: [(&str, &str, &[&str]); 4] = [
        (
            "/Contacts",
            "post",
            &[
                "ContactID",
                "ContactStatus",
                "Name",
                "EmailAddress",
                "Addresses",
                "Phones",
                "UpdatedDateUTC",
                "ContactGroups",
                "IsSupplier",
                "IsCustomer",
                "PaymentTerms",
                "ContactPersons",
                "HasValidationErrors",
            ],
        ),
        (
            "/Items",
            "put",
            &[
                "ItemID",
                "Code",
                "Description",
                "UpdatedDateUTC",
                "PurchaseDetails",
                "SalesDetails",
                "Name",
                "IsTrackedAsInventory",
                "IsSold",
                "IsPurchased",
            ],
        ),
        (
            "/Invoices",
            "put",
            &[
                "Type",
                "InvoiceID",
                "InvoiceNumber",
                "Reference",
                "Prepayments",
                "Overpayments",
                "AmountDue",
                "AmountPaid",
                "SentToContact",
                "CurrencyRate",
                "HasErrors",
                "IsDiscounted",
                "Contact",
                "DateString",
                "Date",
                "DueDateString",
                "DueDate",
                "Status",
                "LineAmountTypes",
                "LineItems",
                "SubTotal",
                "TotalTax",
                "Total",
                "UpdatedDateUTC",
                "UpdatedDateUTCString",
                "CurrencyCode",
                "StatusAttributeString",
            ],
        ),
        (
            "/Quotes",
            "put",
            &[
                "QuoteID",
                "QuoteNumber",
                "Terms",
                "Contact",
                "LineItems",
                "Date",
                "DateString",
                "Status",
                "CurrencyRate",
                "CurrencyCode",
                "SubTotal",
                "TotalTax",
                "Total",
                "UpdatedDateUTC",
                "LineAmountTypes",
                "StatusAttributeString",
            ],
        ),
    ];
    for (path, method, required) in cases {
        let collection = path.trim_start_matches('/');
        let request = request_example(&spec, path, method);
        let http_method = if method == "put" {
            Method::PUT
        } else {
            Method::POST
        };
        let response = xero
            .api(http_method, collection)
            .json(request)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{method} {path}");
        let ours: Value = response.json().await.unwrap();
        let theirs = example(&spec, path, method, "200");
        let envelope_keys = |v: &Value| {
            let mut keys: Vec<String> = v
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| !matches!(k.as_str(), "pagination" | "SummarizeErrors"))
                .cloned()
                .collect();
            keys.sort();
            keys
        };
        assert_eq!(
            envelope_keys(&ours),
            envelope_keys(theirs),
            "{path} envelope"
        );
        assert!(is_ms_date(ours["DateTimeUTC"].as_str().unwrap()));
        let element = &ours[collection][0];
        assert_eq!(element["StatusAttributeString"], "OK", "{path}: {element}");
        let mut expected = theirs[collection][0].clone();
        if path != "/Invoices" && path != "/Quotes" {
            expected["StatusAttributeString"] = json!("OK");
        }
        let required: Vec<&str> = required
            .iter()
            .copied()
            .filter(|f| *f != "StatusAttributeString" || expected.get(f).is_some())
            .collect();
        assert_same_shape(element, &expected, &required, path);
        assert!(is_ms_date(element["UpdatedDateUTC"].as_str().unwrap()));
        if let Some(line) = expected["LineItems"].get(0) {
            assert_same_shape(
                &element["LineItems"][0],
                line,
                &[
                    "Description",
                    "UnitAmount",
                    "LineAmount",
                    "Quantity",
                    "LineItemID",
                ],
                &format!("{path} line"),
            );
        }
    }

    // Every list example's records have the dates and fields our GETs answer.
    for (path, required) in [
        ("/Contacts", &["ContactID", "Name", "UpdatedDateUTC"][..]),
        ("/Items", &["ItemID", "Code", "UpdatedDateUTC"][..]),
        (
            "/Invoices",
            &["InvoiceID", "InvoiceNumber", "UpdatedDateUTC"][..],
        ),
        ("/Quotes", &["QuoteID", "QuoteNumber", "UpdatedDateUTC"][..]),
    ] {
        let collection = path.trim_start_matches('/');
        let theirs = example(&spec, path, "get", "200");
        let ours: Value = xero
            .api(Method::GET, &format!("{collection}?page=1"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for record in theirs[collection].as_array().unwrap() {
            assert!(
                is_ms_date(record["UpdatedDateUTC"].as_str().unwrap()),
                "{record}"
            );
            if let Some(our) = ours[collection].get(0) {
                assert_same_shape(our, record, required, path);
            }
        }
        if let Some(pagination) = theirs.get("pagination") {
            let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
            assert_eq!(
                keys(&ours["pagination"]),
                keys(pagination),
                "{path} pagination"
            );
        }
    }

    // The 400 example: a contact name already taken.
    let theirs = example(&spec, "/Contacts", "put", "400");
    let taken = theirs["Elements"][0]["Name"].as_str().unwrap();
    xero.contact(taken).await;
    let refused = xero
        .put("Contacts", &json!({"Contacts": [{"Name": taken}]}))
        .await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let ours: Value = refused.json().await.unwrap();
    for field in ["ErrorNumber", "Type", "Message"] {
        assert_eq!(ours[field], theirs[field], "{field}");
    }
    assert_eq!(
        ours["Elements"][0]["ValidationErrors"],
        theirs["Elements"][0]["ValidationErrors"]
    );
    assert_eq!(ours["Elements"][0]["HasValidationErrors"], true);
}

#[tokio::test]
async fn the_identity_spec_connection_example_has_our_fields() {
    let Some(spec) = spec("xero-identity.yaml") else {
        return;
    };
    let example = &spec["paths"]["/Connections"]["get"]["responses"]["200"]["content"]["application/json"]
        ["example"];
    let theirs: Value = serde_json::from_str(example.as_str().unwrap()).unwrap();
    let xero = xero().await;
    let ours: Value = xero
        .http
        .get(xero.url("/Connections"))
        .bearer_auth(&xero.access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let their_connection = theirs[0].as_object().unwrap();
    let our_connection: &Map<String, Value> = ours[0].as_object().unwrap();
    for (field, value) in their_connection {
        assert_eq!(
            json_type(&our_connection[field]),
            json_type(value),
            "{field}"
        );
    }
}
