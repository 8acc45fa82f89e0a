//! The NetSuite simulator over real HTTP, against NetSuite's documented behaviour
//! (`shared/erp/APIS.md` §7): TBA signatures computed here independently of the simulator,
//! M2M JWTs signed with the fixture key, the record API, SuiteQL and concurrency governance.

// Tests fail loudly on the first unexpected error; that is what unwrap is for here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::Utc;
use hmac::{Hmac, Mac};
use passerelle_sandbox::Sandbox;
use passerelle_sandbox::netsuite::{Fault, NetSuiteAccountConfig};
use reqwest::{Client, Method, StatusCode};
use ring::rand::SystemRandom;
use ring::signature::{self, KeyPair, RsaKeyPair};
use serde_json::{Value, json};
use sha2::Sha256;
use std::sync::atomic::{AtomicU64, Ordering};

const ACCOUNT: &str = "1234567_SB1";
const CONSUMER_KEY: &str = "ck-4f1b";
const CONSUMER_SECRET: &str = "cs+secret/1";
const TOKEN_ID: &str = "tk-9a2c";
const TOKEN_SECRET: &str = "ts&secret=2";
const CLIENT_ID: &str = "m2m-client-0001";
const CERT_ID: &str = "cert-AbC123";

static NONCE: AtomicU64 = AtomicU64::new(1);

/// RFC 3986 unreserved kept, the rest `%XX`.
fn enc(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// How a test client builds its TBA header; the defaults are right.
#[derive(Clone)]
struct Tba {
    realm: String,
    method: &'static str,
    nonce: String,
    timestamp: i64,
    token_secret: String,
    sign_query: bool,
    sign_port: bool,
}

impl Tba {
    fn new() -> Self {
        Self {
            realm: ACCOUNT.into(),
            method: "HMAC-SHA256",
            nonce: format!(
                "n{}x{}",
                NONCE.fetch_add(1, Ordering::SeqCst),
                Utc::now().timestamp_micros()
            ),
            timestamp: Utc::now().timestamp(),
            token_secret: TOKEN_SECRET.into(),
            sign_query: true,
            sign_port: true,
        }
    }

    fn header(&self, method: &Method, url: &str) -> String {
        let url = url::Url::parse(url).unwrap();
        let host = url.host_str().unwrap().to_ascii_lowercase();
        let authority = match (self.sign_port, url.port()) {
            (true, Some(port)) => format!("{host}:{port}"),
            _ => host,
        };
        let base_uri = format!("{}://{authority}{}", url.scheme(), url.path());
        let oauth = [
            ("oauth_consumer_key", CONSUMER_KEY.to_owned()),
            ("oauth_token", TOKEN_ID.to_owned()),
            ("oauth_signature_method", self.method.to_owned()),
            ("oauth_timestamp", self.timestamp.to_string()),
            ("oauth_nonce", self.nonce.clone()),
            ("oauth_version", "1.0".to_owned()),
        ];
        let mut params: Vec<(String, String)> =
            oauth.iter().map(|(n, v)| (enc(n), enc(v))).collect();
        if self.sign_query {
            params.extend(url.query_pairs().map(|(n, v)| (enc(&n), enc(&v))));
        }
        params.sort();
        let normalized: Vec<String> = params.iter().map(|(n, v)| format!("{n}={v}")).collect();
        let base = format!(
            "{}&{}&{}",
            method.as_str(),
            enc(&base_uri),
            enc(&normalized.join("&"))
        );
        let key = format!("{}&{}", enc(CONSUMER_SECRET), enc(&self.token_secret));
        let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(base.as_bytes());
        let signature = STANDARD.encode(mac.finalize().into_bytes());
        let mut parts = vec![format!("realm=\"{}\"", self.realm)];
        parts.extend(oauth.iter().map(|(n, v)| format!("{n}=\"{}\"", enc(v))));
        parts.push(format!("oauth_signature=\"{}\"", enc(&signature)));
        format!("OAuth {}", parts.join(", "))
    }
}

fn fixture_key() -> RsaKeyPair {
    let pem = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/netsuite-m2m-test-key.pem"
    ))
    .unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    RsaKeyPair::from_pkcs8(&STANDARD.decode(body).unwrap()).unwrap()
}

struct Ns {
    sandbox: Sandbox,
    http: Client,
}

/// A response: status, `Location`, body (Null when empty).
struct Answer {
    status: StatusCode,
    location: Option<String>,
    body: Value,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["o:errorDetails"][0]["o:errorCode"]
            .as_str()
            .unwrap_or("")
    }

    fn id(&self) -> String {
        self.location
            .as_deref()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_owned()
    }
}

async fn ns_with(config: NetSuiteAccountConfig) -> Ns {
    let sandbox = Sandbox::start(0).await.unwrap();
    sandbox.netsuite().try_add_account(config).unwrap();
    Ns {
        sandbox,
        http: Client::new(),
    }
}

fn config() -> NetSuiteAccountConfig {
    NetSuiteAccountConfig::new(ACCOUNT).with_tba(
        CONSUMER_KEY,
        CONSUMER_SECRET,
        TOKEN_ID,
        TOKEN_SECRET,
    )
}

async fn ns() -> Ns {
    ns_with(config()).await
}

impl Ns {
    fn url(&self, rest: &str) -> String {
        format!(
            "{}/services/rest/{rest}",
            self.sandbox.netsuite_url(ACCOUNT)
        )
    }

    async fn raw(
        &self,
        method: Method,
        rest: &str,
        auth: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = self
            .http
            .request(method, self.url(rest))
            .header("authorization", auth);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let location = response
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned());
        let text = response.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        };
        Answer {
            status,
            location,
            body,
        }
    }

    async fn signed(&self, tba: &Tba, method: Method, rest: &str, body: Option<Value>) -> Answer {
        let auth = tba.header(&method, &self.url(rest));
        self.raw(method, rest, &auth, body, &[]).await
    }

    async fn call(&self, method: Method, rest: &str, body: Option<Value>) -> Answer {
        self.signed(&Tba::new(), method, rest, body).await
    }

    async fn suiteql(&self, q: &str, paging: &str) -> Answer {
        let rest = format!("query/v1/suiteql{paging}");
        let auth = Tba::new().header(&Method::POST, &self.url(&rest));
        self.raw(
            Method::POST,
            &rest,
            &auth,
            Some(json!({ "q": q })),
            &[("prefer", "transient")],
        )
        .await
    }

    fn stats(&self) -> passerelle_sandbox::netsuite::NetSuiteStats {
        self.sandbox.netsuite().stats(ACCOUNT).unwrap()
    }

    async fn item(&self, item_id: &str, price: f64) -> String {
        let body = json!({"itemId": item_id, "displayName": format!("Item {item_id}"),
            "price": {"items": [{"currencyPage": {"id": "1"}, "priceLevel": {"id": "1"},
                                  "quantity": {"value": 0}, "price": price}]}});
        let answer = self
            .call(Method::POST, "record/v1/inventoryItem", Some(body))
            .await;
        assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.body);
        answer.id()
    }

    async fn customer(&self, name: &str) -> String {
        let body =
            json!({"companyName": name, "email": "buyer@example.com", "subsidiary": {"id": "1"}});
        let answer = self
            .call(Method::POST, "record/v1/customer", Some(body))
            .await;
        assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.body);
        answer.id()
    }
}

#[tokio::test]
async fn signed_get_and_post_pass_and_the_location_names_the_record() {
    let ns = ns().await;
    let answer = ns
        .call(
            Method::POST,
            "record/v1/customer",
            Some(json!({"companyName": "Acme", "subsidiary": {"id": "1"}, "externalId": "C-1"})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.body);
    assert_eq!(answer.body, Value::Null);
    let location = answer.location.clone().unwrap();
    let base = ns.url("record/v1/customer/");
    assert!(location.starts_with(&base), "{location}");
    let id = answer.id();
    assert!(id.parse::<u64>().is_ok());

    let got = ns
        .call(
            Method::GET,
            &format!("record/v1/customer/{id}?expandSubResources=true"),
            None,
        )
        .await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    assert_eq!(got.body["id"], json!(id));
    assert_eq!(got.body["companyName"], "Acme");
    assert_eq!(got.body["subsidiary"]["id"], "1");
    assert_eq!(got.body["subsidiary"]["refName"], "Parent Company");
    assert_eq!(got.body["entityId"], "CUS1");
    let modified = got.body["lastModifiedDate"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(modified).is_ok() && modified.ends_with('Z'));
    // Case-insensitive record types.
    let lower = ns
        .call(Method::GET, "record/v1/CUSTOMER/eid:C-1", None)
        .await;
    assert_eq!(lower.body["id"], json!(id));

    let stats = ns.stats();
    assert_eq!((stats.tba_requests, stats.rejected_auth), (3, 0));
    assert_eq!(stats.creates["customer"], 1);
    assert_eq!(stats.creates["inventoryItem"], 0);
    assert_eq!(stats.creates_by_external_id["customer:C-1"], 1);
}

#[tokio::test]
async fn a_wrongly_built_base_string_or_realm_is_refused() {
    let ns = ns().await;
    let path = "record/v1/customer?limit=5";
    let cases = [
        (
            "query left out",
            Tba {
                sign_query: false,
                ..Tba::new()
            },
            true,
        ),
        (
            "port left out",
            Tba {
                sign_port: false,
                ..Tba::new()
            },
            true,
        ),
        (
            "wrong token secret",
            Tba {
                token_secret: "nope".into(),
                ..Tba::new()
            },
            true,
        ),
        (
            "realm in URL form",
            Tba {
                realm: "1234567-sb1".into(),
                ..Tba::new()
            },
            false,
        ),
        (
            "realm in lower case",
            Tba {
                realm: "1234567_sb1".into(),
                ..Tba::new()
            },
            false,
        ),
        (
            "HMAC-SHA1",
            Tba {
                method: "HMAC-SHA1",
                ..Tba::new()
            },
            false,
        ),
        (
            "stale timestamp",
            Tba {
                timestamp: Utc::now().timestamp() - 600,
                ..Tba::new()
            },
            false,
        ),
    ];
    let mut signatures = 0;
    for (i, (what, tba, is_signature)) in cases.iter().enumerate() {
        let answer = ns.signed(tba, Method::GET, path, None).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(answer.code(), "INVALID_LOGIN", "{what}");
        assert!(
            answer.body["o:errorDetails"][0]["detail"]
                .as_str()
                .unwrap()
                .starts_with("Invalid login attempt.")
        );
        assert_eq!(
            answer.body["type"],
            "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.2"
        );
        signatures += u64::from(*is_signature);
        let stats = ns.stats();
        assert_eq!(stats.rejected_signatures, signatures, "{what}");
        assert_eq!(stats.rejected_auth, i as u64 + 1, "{what}");
    }
    let good = ns.signed(&Tba::new(), Method::GET, path, None).await;
    assert_eq!(good.status, StatusCode::OK, "{}", good.body);
    let none = ns.raw(Method::GET, path, "", None, &[]).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_replayed_nonce_is_refused() {
    let ns = ns().await;
    let tba = Tba::new();
    let first = ns
        .signed(&tba, Method::GET, "record/v1/inventoryItem", None)
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let replay = ns
        .signed(&tba, Method::GET, "record/v1/inventoryItem", None)
        .await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED);
    assert_eq!(ns.stats().rejected_signatures, 0);
}

fn jwt(key: &RsaKeyPair, alg: &str, kid: &str, payload: &Value) -> String {
    let header = json!({"typ": "JWT", "alg": alg, "kid": kid});
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string())
    );
    let padding: &dyn signature::RsaEncoding = match alg {
        "PS256" => &signature::RSA_PSS_SHA256,
        "RS256" => &signature::RSA_PKCS1_SHA256,
        other => panic!("{other}"),
    };
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        padding,
        &SystemRandom::new(),
        signing_input.as_bytes(),
        &mut sig,
    )
    .unwrap();
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

#[tokio::test]
async fn an_m2m_assertion_gets_a_bearer_token_until_it_expires() {
    let key = fixture_key();
    let public = key.public_key().as_ref().to_vec();
    let ns = ns_with(config().with_m2m(CLIENT_ID, CERT_ID, public)).await;
    let token_url = ns.url("auth/oauth2/v1/token");
    let now = Utc::now().timestamp();
    let claims = |aud: &str, iat: i64, exp: i64| json!({"iss": CLIENT_ID, "scope": "restlets,rest_webservices", "aud": aud, "iat": iat, "exp": exp});
    let exchange = |assertion: String| {
        let http = ns.http.clone();
        let url = token_url.clone();
        async move {
            let response = http
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(
                    url::form_urlencoded::Serializer::new(String::new())
                        .append_pair("grant_type", "client_credentials")
                        .append_pair(
                            "client_assertion_type",
                            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                        )
                        .append_pair("client_assertion", &assertion)
                        .finish(),
                )
                .send()
                .await
                .unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    };
    // The mapping grants rest_webservices only: asking for restlets too is refused.
    let (status, body) = exchange(jwt(
        &key,
        "PS256",
        CERT_ID,
        &claims(&token_url, now, now + 3600),
    ))
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_scope"))
    );

    let good = json!({"iss": CLIENT_ID, "scope": "rest_webservices", "aud": token_url, "iat": now, "exp": now + 3600});
    let (status, body) = exchange(jwt(&key, "PS256", CERT_ID, &good)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], "3600");
    let bearer = format!("Bearer {}", body["access_token"].as_str().unwrap());

    let refusals = [
        (
            jwt(&key, "PS256", "other-cert", &good),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            jwt(&key, "RS256", CERT_ID, &good),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            jwt(
                &key,
                "PS256",
                CERT_ID,
                &claims("http://127.0.0.1/elsewhere", now, now + 600),
            ),
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        ),
        (
            jwt(&key, "PS256", CERT_ID, &claims(&token_url, now, now + 3601)),
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        ),
        (
            jwt(
                &key,
                "PS256",
                CERT_ID,
                &claims(&token_url, now - 7200, now - 3600),
            ),
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        ),
        (
            "not.a-jwt".to_owned(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ];
    for (assertion, status, error) in refusals {
        let (got, body) = exchange(assertion).await;
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(error)),
            "{body}"
        );
    }
    // A signature over another payload does not verify.
    let tampered = {
        let real = jwt(&key, "PS256", CERT_ID, &good);
        let parts: Vec<&str> = real.split('.').collect();
        let other = URL_SAFE_NO_PAD.encode(json!({"iss": CLIENT_ID, "scope": "rest_webservices", "aud": token_url, "iat": now, "exp": now + 3000}).to_string());
        format!("{}.{other}.{}", parts[0], parts[2])
    };
    assert_eq!(exchange(tampered).await.0, StatusCode::UNAUTHORIZED);

    let ok = ns
        .raw(Method::GET, "record/v1/customer", &bearer, None, &[])
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(ns.sandbox.netsuite().expire_tokens(ACCOUNT).unwrap(), 1);
    let expired = ns
        .raw(Method::GET, "record/v1/customer", &bearer, None, &[])
        .await;
    assert_eq!(
        (expired.status, expired.code()),
        (StatusCode::UNAUTHORIZED, "INVALID_LOGIN")
    );
    let stats = ns.stats();
    assert_eq!((stats.token_requests, stats.bearer_requests), (1, 2));
    assert_eq!(
        stats.rejected_auth, 4,
        "three invalid_client and one expired bearer"
    );
}

#[tokio::test]
async fn upserts_by_external_id_create_once_and_patch_merges_or_replaces_lines() {
    let ns = ns().await;
    let (a, b) = (ns.item("A-100", 25.5).await, ns.item("B-200", 4.0).await);
    let customer = ns.customer("Acme").await;
    let order = json!({"entity": {"id": customer}, "tranDate": "2026-11-24", "otherRefNum": "PO-1",
        "item": {"items": [{"item": {"id": a}, "quantity": 2}]}});
    let first = ns
        .call(
            Method::PUT,
            "record/v1/salesOrder/eid:WO-1",
            Some(order.clone()),
        )
        .await;
    assert_eq!(first.status, StatusCode::NO_CONTENT, "{}", first.body);
    let again = ns
        .call(Method::PUT, "record/v1/salesOrder/eid:WO-1", Some(order))
        .await;
    assert_eq!(again.status, StatusCode::NO_CONTENT, "{}", again.body);
    assert_eq!(first.location, again.location);
    let id = first.id();
    let stats = ns.stats();
    assert_eq!(
        (
            stats.records["salesOrder"],
            stats.creates["salesOrder"],
            stats.upserts
        ),
        (1, 1, 2)
    );
    assert_eq!(stats.updates["salesOrder"], 1);

    let got = ns
        .call(
            Method::GET,
            "record/v1/salesOrder/eid:WO-1?expandSubResources=true",
            None,
        )
        .await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    let lines = got.body["item"]["items"].as_array().unwrap();
    assert_eq!(lines.len(), 1, "a retried upsert does not double the lines");
    assert_eq!(lines[0]["rate"], 25.5, "the item's base price");
    assert_eq!(got.body["total"], 51.0);
    assert_eq!(got.body["tranId"], "SO1");
    assert_eq!(got.body["externalId"], "WO-1");
    assert_eq!(got.body["entity"]["refName"], "CUS1 Acme");
    let collapsed = ns
        .call(Method::GET, &format!("record/v1/salesOrder/{id}"), None)
        .await;
    assert!(collapsed.body["item"].get("items").is_none());
    assert!(collapsed.body["item"]["links"].is_array());

    // Merge: line 1 changes, a new line is added.
    let patch = json!({"memo": "rush", "item": {"items": [{"line": 1, "quantity": 3}, {"item": {"id": b}, "quantity": 1, "rate": 5}]}});
    let merged = ns
        .call(
            Method::PATCH,
            &format!("record/v1/salesOrder/{id}"),
            Some(patch),
        )
        .await;
    assert_eq!(merged.status, StatusCode::NO_CONTENT, "{}", merged.body);
    let record = &ns.sandbox.netsuite().records(ACCOUNT, "salesorder")[0];
    let quantities: Vec<f64> = record["item"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["quantity"].as_f64().unwrap())
        .collect();
    assert_eq!(quantities, vec![3.0, 1.0]);
    assert_eq!(record["total"], 81.5);
    assert_eq!(record["memo"], "rush");

    // Replace: the lines given are all the lines.
    let patch = json!({"item": {"items": [{"item": {"id": b}, "quantity": 10}]}});
    let replaced = ns
        .call(
            Method::PATCH,
            &format!("record/v1/salesOrder/{id}?replace=item"),
            Some(patch),
        )
        .await;
    assert_eq!(replaced.status, StatusCode::NO_CONTENT, "{}", replaced.body);
    let record = &ns.sandbox.netsuite().records(ACCOUNT, "salesOrder")[0];
    let lines = record["item"]["items"].as_array().unwrap();
    assert_eq!(lines.len(), 1);
    assert_eq!(
        (lines[0]["item"]["id"].as_str(), lines[0]["line"].as_u64()),
        (Some(b.as_str()), Some(1))
    );
    assert_eq!(record["total"], 40.0);

    let missing = ns
        .call(
            Method::PATCH,
            "record/v1/salesOrder/999999",
            Some(json!({"memo": "x"})),
        )
        .await;
    assert_eq!(
        (missing.status, missing.code()),
        (StatusCode::NOT_FOUND, "NONEXISTENT_ID")
    );
    let missing = ns
        .call(Method::GET, "record/v1/salesOrder/eid:nope", None)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn refusals_name_the_field_and_create_nothing() {
    let ns = ns().await;
    let item = ns.item("A-100", 10.0).await;
    let customer = ns.customer("Acme").await;

    let no_name = ns
        .call(
            Method::POST,
            "record/v1/customer",
            Some(json!({"email": "x@example.com", "subsidiary": {"id": "1"}})),
        )
        .await;
    assert_eq!(
        (no_name.status, no_name.code()),
        (StatusCode::BAD_REQUEST, "USER_ERROR")
    );
    assert_eq!(
        no_name.body["o:errorDetails"][0]["detail"],
        "Please enter value(s) for: Company Name"
    );
    let no_subsidiary = ns
        .call(
            Method::POST,
            "record/v1/customer",
            Some(json!({"companyName": "B"})),
        )
        .await;
    assert_eq!(no_subsidiary.code(), "USER_ERROR");
    let person = ns.call(Method::POST, "record/v1/customer", Some(json!({"isPerson": true, "firstName": "Ada", "lastName": "L", "subsidiary": {"id": "1"}}))).await;
    assert_eq!(person.status, StatusCode::NO_CONTENT, "{}", person.body);

    let unknown = ns
        .call(
            Method::POST,
            "record/v1/customer",
            Some(json!({"companyName": "B", "subsidiary": {"id": "1"}, "colour": "red"})),
        )
        .await;
    assert_eq!(
        (unknown.status, unknown.code()),
        (StatusCode::BAD_REQUEST, "INVALID_KEY_OR_REF")
    );
    assert_eq!(unknown.body["o:errorDetails"][0]["o:errorPath"], "colour");

    let order = |entity: &str| json!({"entity": {"id": entity}, "item": {"items": [{"item": {"id": item}, "quantity": 1}]}});
    let bad_entity = ns
        .call(Method::POST, "record/v1/salesOrder", Some(order("424242")))
        .await;
    assert_eq!(
        (bad_entity.status, bad_entity.code()),
        (StatusCode::BAD_REQUEST, "INVALID_VALUE")
    );
    assert_eq!(
        bad_entity.body["o:errorDetails"][0]["o:errorPath"],
        "entity"
    );
    let bad_item = json!({"entity": {"id": customer}, "item": {"items": [{"item": {"id": "77"}}]}});
    let bad_item = ns
        .call(Method::POST, "record/v1/salesOrder", Some(bad_item))
        .await;
    assert_eq!(
        bad_item.body["o:errorDetails"][0]["o:errorPath"],
        "item.items[0].item"
    );
    let no_lines = ns
        .call(
            Method::POST,
            "record/v1/salesOrder",
            Some(json!({"entity": {"id": customer}})),
        )
        .await;
    assert_eq!(no_lines.status, StatusCode::BAD_REQUEST);

    let first = ns
        .call(
            Method::POST,
            "record/v1/salesOrder",
            Some(json!({"externalId": "WO-9", "entity": {"externalId": "nope"}})),
        )
        .await;
    assert_eq!(
        first.code(),
        "INVALID_VALUE",
        "an external-id reference to nothing"
    );
    let mut with_eid = order(&customer);
    with_eid["externalId"] = json!("WO-9");
    assert_eq!(
        ns.call(Method::POST, "record/v1/salesOrder", Some(with_eid.clone()))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let dup = ns
        .call(Method::POST, "record/v1/salesOrder", Some(with_eid))
        .await;
    assert_eq!(
        (dup.status, dup.code()),
        (StatusCode::BAD_REQUEST, "DUP_RCRD")
    );
    let read_only = ns
        .call(
            Method::POST,
            "record/v1/salesOrder",
            Some(json!({"entity": {"id": customer}, "total": 5})),
        )
        .await;
    assert_eq!(read_only.status, StatusCode::BAD_REQUEST);

    let stats = ns.stats();
    assert_eq!(
        (stats.records["salesOrder"], stats.records["customer"]),
        (1, 2)
    );
    assert_eq!(stats.rejected_duplicates, 1);
    assert!(stats.duplicate_external_ids.is_empty());
}

#[tokio::test]
async fn an_order_is_transformed_into_an_invoice_once() {
    let ns = ns().await;
    let item = ns.item("A-100", 12.0).await;
    let customer = ns.customer("Acme").await;
    let order = json!({"entity": {"id": customer}, "otherRefNum": "PO-7", "item": {"items": [{"item": {"id": item}, "quantity": 2}]}});
    let order = ns
        .call(Method::POST, "record/v1/salesOrder", Some(order))
        .await
        .id();
    let path = format!("record/v1/salesOrder/{order}/!transform/invoice");
    let body = json!({"externalId": "INV-7", "tranDate": "2026-11-25", "dueDate": "2026-12-25"});
    let invoice = ns.call(Method::POST, &path, Some(body.clone())).await;
    assert_eq!(invoice.status, StatusCode::NO_CONTENT, "{}", invoice.body);
    assert!(
        invoice
            .location
            .as_deref()
            .unwrap()
            .contains("/record/v1/invoice/")
    );
    let got = ns
        .call(
            Method::GET,
            &format!("record/v1/invoice/{}?expandSubResources=true", invoice.id()),
            None,
        )
        .await;
    assert_eq!(got.body["createdFrom"]["id"], json!(order));
    assert_eq!(got.body["entity"]["id"], json!(customer));
    assert_eq!(got.body["otherRefNum"], "PO-7");
    assert_eq!(got.body["tranId"], "INV1");
    assert_eq!(got.body["total"], 24.0);
    assert_eq!(got.body["item"]["items"][0]["quantity"], 2.0);

    let twice = ns.call(Method::POST, &path, Some(body)).await;
    assert_eq!(
        (twice.status, twice.code()),
        (StatusCode::BAD_REQUEST, "DUP_RCRD")
    );
    let stats = ns.stats();
    assert_eq!(
        (
            stats.transforms,
            stats.records["invoice"],
            stats.creates["invoice"]
        ),
        (1, 1, 1)
    );
    assert_eq!(stats.creates_by_external_id["invoice:INV-7"], 1);
}

const KEYSET: &str = "SELECT id, itemid, isinactive, lastmodifieddate AS raw, \
     TO_CHAR(lastmodifieddate, 'YYYY-MM-DD HH24:MI:SS') AS modified FROM item \
     WHERE itemtype = 'InvtPart' AND (lastmodifieddate > TO_TIMESTAMP('2026-11-24 10:30:15', \
     'YYYY-MM-DD HH24:MI:SS') OR (lastmodifieddate = TO_TIMESTAMP('2026-11-24 10:30:15', \
     'YYYY-MM-DD HH24:MI:SS') AND id > ID_CURSOR)) ORDER BY lastmodifieddate, id";

#[tokio::test]
async fn suiteql_pages_a_keyset_query_with_string_values() {
    let ns = ns().await;
    let sim = ns.sandbox.netsuite();
    let times = [
        "2026-11-24T10:00:00Z",
        "2026-11-24T10:30:15Z",
        "2026-11-24T10:30:15Z",
        "2026-11-24T10:30:15Z",
        "2026-11-25T08:00:00Z",
    ];
    let mut ids = Vec::new();
    // The newest is inserted first (lowest id): the ORDER BY must put it last.
    for i in [4, 0, 1, 2, 3] {
        let at = times[i];
        let id = sim
            .upsert_record(
                ACCOUNT,
                "inventoryItem",
                json!({"itemId": format!("SKU-{i}"), "lastModifiedDate": at}),
            )
            .unwrap();
        ids.push((i, id));
    }
    ids.sort();
    let id_of = |i: usize| ids[i].1.clone();
    let q = KEYSET.replace("ID_CURSOR", &id_of(1));

    let page = ns.suiteql(&q, "?limit=2&offset=0").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(
        (
            page.body["count"].as_u64(),
            page.body["totalResults"].as_u64(),
            page.body["hasMore"].as_bool()
        ),
        (Some(2), Some(3), Some(true))
    );
    let items = page.body["items"].as_array().unwrap();
    assert_eq!(items[0]["id"], json!(id_of(2)), "ids come back as strings");
    assert_eq!(items[0]["itemid"], "SKU-2");
    assert_eq!(items[0]["isinactive"], "F");
    assert_eq!(items[0]["modified"], "2026-11-24 10:30:15");
    assert_eq!(items[0]["raw"], "11/24/2026", "a date in the user's format");
    assert_eq!(items[1]["id"], json!(id_of(3)));
    assert!(
        page.body["links"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["rel"] == "next")
    );

    let next = ns.suiteql(&q, "?limit=2&offset=2").await;
    assert_eq!(
        (
            next.body["count"].as_u64(),
            next.body["hasMore"].as_bool(),
            next.body["offset"].as_u64()
        ),
        (Some(1), Some(false), Some(2))
    );
    assert_eq!(next.body["items"][0]["id"], json!(id_of(4)));
    assert_eq!(next.body["items"][0]["modified"], "2026-11-25 08:00:00");

    // NULLs are left out of their row.
    let customers = ns
        .suiteql(
            "select id, companyname, email from customer where email is null",
            "",
        )
        .await;
    assert_eq!(customers.body["totalResults"], 0);
    ns.customer("Acme").await;
    let customers = ns
        .suiteql(
            "SELECT id, companyname, phone FROM customer WHERE companyname = 'Acme'",
            "",
        )
        .await;
    assert_eq!(customers.body["items"][0]["companyname"], "Acme");
    assert!(customers.body["items"][0].get("phone").is_none());
    assert_eq!(ns.stats().suiteql_queries, 4);
}

#[tokio::test]
async fn suiteql_refuses_writes_errors_and_a_missing_prefer_header() {
    let ns = ns().await;
    for q in [
        "UPDATE item SET itemid = 'x' WHERE id = 1",
        "SELECT id FROM item WHERE",
        "SELECT id, nosuchfield FROM item",
        "SELECT id FROM nosuchtable",
        "SELECT id FROM item WHERE itemid = 5",
    ] {
        let answer = ns.suiteql(q, "").await;
        assert_eq!(
            (answer.status, answer.code()),
            (StatusCode::BAD_REQUEST, "INVALID_PARAMETER"),
            "{q}"
        );
        let detail = answer.body["o:errorDetails"][0]["detail"].as_str().unwrap();
        assert!(
            detail.starts_with("Invalid search query. Detailed unprocessed description follows."),
            "{detail}"
        );
    }
    let too_many = ns.suiteql("SELECT id FROM item", "?limit=1001").await;
    assert_eq!(too_many.status, StatusCode::BAD_REQUEST);
    let rest = "query/v1/suiteql";
    let auth = Tba::new().header(&Method::POST, &ns.url(rest));
    let no_prefer = ns
        .raw(
            Method::POST,
            rest,
            &auth,
            Some(json!({"q": "SELECT id FROM item"})),
            &[],
        )
        .await;
    assert_eq!(no_prefer.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn requests_beyond_the_concurrency_limit_get_a_429() {
    let ns = ns_with(NetSuiteAccountConfig {
        concurrency_limit: 1,
        ..config()
    })
    .await;
    ns.sandbox.netsuite().inject(
        ACCOUNT,
        Fault::Latency {
            ms: 600,
            times: 2,
            method: Some("GET".into()),
            path_contains: Some("/record/v1/inventoryItem".into()),
        },
    );
    let slow = ns.call(Method::GET, "record/v1/inventoryItem", None);
    let second = async {
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        ns.call(Method::GET, "record/v1/inventoryItem", None).await
    };
    let (slow, second) = tokio::join!(slow, second);
    assert_eq!(slow.status, StatusCode::OK, "{}", slow.body);
    assert_eq!(
        (second.status, second.code()),
        (StatusCode::TOO_MANY_REQUESTS, "CONCURRENCY_LIMIT_EXCEEDED")
    );
    let stats = ns.stats();
    assert_eq!((stats.rate_limited, stats.max_concurrent_requests), (1, 1));
    // The slot is free again.
    assert_eq!(
        ns.call(Method::GET, "record/v1/customer", None)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn injected_faults_speak_netsuite() {
    let ns = ns().await;
    let sim = ns.sandbox.netsuite();
    sim.inject(
        ACCOUNT,
        Fault::DropResponse {
            times: 1,
            method: Some("POST".into()),
            path_contains: Some("/record/v1/customer".into()),
        },
    );
    let lost = ns
        .call(
            Method::POST,
            "record/v1/customer",
            Some(json!({"companyName": "Lost", "subsidiary": {"id": "1"}, "externalId": "C-L"})),
        )
        .await;
    assert_eq!(
        (lost.status, lost.code()),
        (StatusCode::INTERNAL_SERVER_ERROR, "UNEXPECTED_ERROR")
    );
    assert_eq!(ns.stats().records["customer"], 1, "handled, answer lost");
    let found = ns
        .call(Method::GET, "record/v1/customer/eid:C-L", None)
        .await;
    assert_eq!(found.status, StatusCode::OK);
    sim.inject(
        ACCOUNT,
        Fault::Status {
            status: 503,
            retry_after: None,
            times: 1,
            method: None,
            path_contains: None,
        },
    );
    let down = ns.call(Method::GET, "record/v1/customer", None).await;
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        down.body["type"],
        "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.6.4"
    );
}

#[tokio::test]
async fn the_admin_endpoints_provision_and_report() {
    let sandbox = Sandbox::start(0).await.unwrap();
    let http = Client::new();
    let base = format!("http://{}/netsuite/_sandbox/accounts", sandbox.addr());
    let config = json!({"account_id": "7654321", "tba": [{"consumer_key": "a", "consumer_secret": "b", "token_id": "c", "token_secret": "d"}], "one_world": false});
    let created = http.post(&base).json(&config).send().await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let bad = http
        .post(&base)
        .json(&json!({"account_id": "1234-567"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let upsert = http
        .post(format!("{base}/7654321/records/customer"))
        .json(&json!({"companyName": "Seeded"}))
        .send()
        .await
        .unwrap();
    assert_eq!(upsert.status(), StatusCode::OK);
    let records: Value = http
        .get(format!("{base}/7654321/records/customer"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(records[0]["companyName"], "Seeded");
    let stats: Value = http
        .get(format!("{base}/7654321/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            stats["records"]["customer"].as_u64(),
            stats["creates"]["customer"].as_u64()
        ),
        (Some(1), Some(0))
    );
    let unknown = http.get(format!("{base}/999/stats")).send().await.unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        sandbox.netsuite_url("7654321"),
        format!("http://{}/netsuite/7654321", sandbox.addr())
    );
}
