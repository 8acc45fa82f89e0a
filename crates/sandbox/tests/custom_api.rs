//! The custom API simulator over real HTTP, against `docs/connectors/custom_api.md`.

// Tests fail loudly on the first unexpected error; that is what unwrap is for here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Utc};
use passerelle_sandbox::Sandbox;
use passerelle_sandbox::custom_api::{AccountConfig, AccountStats, Fault};
use reqwest::{Client, RequestBuilder, Response, StatusCode, Url};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const KEY: &str = "key-tenant-1";

struct Api {
    sandbox: Sandbox,
    http: Client,
}

async fn api() -> Api {
    let sandbox = Sandbox::start(0).await.unwrap();
    sandbox.custom_api().add_account(AccountConfig::new(KEY));
    Api {
        sandbox,
        http: Client::new(),
    }
}

impl Api {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sandbox.custom_api_url())
    }

    fn get(&self, path: &str) -> RequestBuilder {
        self.http.get(self.url(path)).header("X-API-Key", KEY)
    }

    fn import(&self, collection: &str, params: &[(&str, &str)]) -> RequestBuilder {
        let url = Url::parse_with_params(&self.url(&format!("/api/{collection}")), params).unwrap();
        self.http.get(url).header("X-API-Key", KEY)
    }

    fn create(&self, collection: &str, key: &str, body: &Value) -> RequestBuilder {
        self.http
            .post(self.url(&format!("/api/{collection}")))
            .header("X-API-Key", KEY)
            .header("Idempotency-Key", key)
            .json(body)
    }

    fn update(&self, collection: &str, id: &str, body: &Value) -> RequestBuilder {
        self.http
            .put(self.url(&format!("/api/{collection}/{id}")))
            .header("X-API-Key", KEY)
            .json(body)
    }

    fn stats(&self) -> AccountStats {
        self.sandbox.custom_api().stats(KEY).unwrap()
    }

    fn inject(&self, fault: Fault) {
        self.sandbox.custom_api().inject(KEY, fault);
    }
}

fn order(number: &str) -> Value {
    json!({
        "external_ref": "1001",
        "order_number": number,
        "customer_email": "buyer@acme.example",
        "status": "confirmed",
        "currency": "EUR",
        "total": 250.0,
        "items": [{"sku": "SKU-0017", "quantity": 20, "price": 12.5}]
    })
}

fn product(sku: &str) -> Value {
    json!({"external_ref": "17", "sku": sku, "name": "Oak pallet", "price": 12.5,
           "currency": "EUR", "active": true})
}

/// Asserts a problem+json answer with this status and returns its body.
async fn problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16());
    for member in ["type", "title", "detail"] {
        assert!(body[member].is_string(), "problem without {member}: {body}");
    }
    body
}

fn error_fields(problem: &Value) -> Vec<&str> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["field"].as_str().unwrap())
                .collect()
        })
        .unwrap_or_default()
}

fn updated_at(record: &Value) -> DateTime<Utc> {
    record["updated_at"].as_str().unwrap().parse().unwrap()
}

// --- auth ---

#[tokio::test]
async fn requests_without_or_with_a_wrong_key_are_refused_with_401_problem() {
    let api = api().await;
    let missing = api.http.get(api.url("/health")).send().await.unwrap();
    assert!(missing.headers().contains_key("www-authenticate"));
    problem(missing, StatusCode::UNAUTHORIZED).await;

    let wrong = api
        .http
        .get(api.url("/health"))
        .header("X-API-Key", "not-a-key")
        .send()
        .await
        .unwrap();
    problem(wrong, StatusCode::UNAUTHORIZED).await;

    let create = api
        .http
        .post(api.url("/api/orders"))
        .header("Idempotency-Key", "k")
        .json(&order("WH-1"))
        .send()
        .await
        .unwrap();
    problem(create, StatusCode::UNAUTHORIZED).await;

    // Refused before reaching the account: not counted, nothing created.
    let stats = api.stats();
    assert_eq!(stats.requests, 0);
    assert_eq!(stats.creates["orders"], 0);
}

#[tokio::test]
async fn health_answers_ok_with_the_key_in_the_accounts_own_header() {
    let api = api().await;
    let ok = api.get("/health").send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.json::<Value>().await.unwrap(), json!({"status": "ok"}));

    api.sandbox.custom_api().add_account(AccountConfig {
        api_key: "bearer-ish".into(),
        auth_header: "Authorization".into(),
        requests_per_second: None,
    });
    let custom = api
        .http
        .get(api.url("/health"))
        .header("authorization", "bearer-ish")
        .send()
        .await
        .unwrap();
    assert_eq!(custom.status(), StatusCode::OK);
    // The right key in the wrong header is refused.
    let wrong_header = api
        .http
        .get(api.url("/health"))
        .header("X-API-Key", "bearer-ish")
        .send()
        .await
        .unwrap();
    problem(wrong_header, StatusCode::UNAUTHORIZED).await;
}

// --- create and idempotency ---

#[tokio::test]
async fn create_answers_201_with_location_and_the_stored_record() {
    let api = api().await;
    let response = api
        .create("orders", "key-1", &order("WH-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let record: Value = response.json().await.unwrap();

    let id = record["id"].as_str().unwrap();
    assert!(!id.is_empty());
    assert_eq!(location, format!("/custom_api/api/orders/{id}"));
    updated_at(&record);
    let mut fields = record.clone();
    fields.as_object_mut().unwrap().remove("id");
    fields.as_object_mut().unwrap().remove("updated_at");
    assert_eq!(fields, order("WH-1"));

    let fetched: Value = api
        .http
        .get(format!("http://{}{location}", api.sandbox.addr()))
        .header("X-API-Key", KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(fetched, record);
    let stats = api.stats();
    assert_eq!(stats.creates["orders"], 1);
    assert_eq!(stats.records["orders"], 1);
    assert_eq!(stats.creates_by_key["key-1"], 1);
}

#[tokio::test]
async fn same_key_and_body_is_replayed_without_a_second_record() {
    let api = api().await;
    let first = api
        .create("orders", "key-1", &order("WH-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(!first.headers().contains_key("idempotent-replayed"));
    let first_location = first.headers()["location"].clone();
    let first_body = first.bytes().await.unwrap();

    let again = api
        .create("orders", "key-1", &order("WH-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["location"], first_location);
    assert_eq!(again.bytes().await.unwrap(), first_body);

    let stats = api.stats();
    assert_eq!(stats.creates["orders"], 1);
    assert_eq!(stats.records["orders"], 1);
    assert_eq!(stats.creates_by_key["key-1"], 1);
    assert_eq!(stats.replays, 1);
    assert!(stats.duplicate_business_keys.is_empty());
}

#[tokio::test]
async fn same_key_with_a_different_body_is_422() {
    let api = api().await;
    let first = api
        .create("orders", "key-1", &order("WH-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let reused = api
        .create("orders", "key-1", &order("WH-2"))
        .send()
        .await
        .unwrap();
    problem(reused, StatusCode::UNPROCESSABLE_ENTITY).await;
    // The same key on another collection is a different request too.
    let elsewhere = api
        .create("products", "key-1", &product("S"))
        .send()
        .await
        .unwrap();
    problem(elsewhere, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(api.stats().records["orders"], 1);
    assert_eq!(api.stats().records["products"], 0);
}

#[tokio::test]
async fn create_without_idempotency_key_is_400() {
    let api = api().await;
    let response = api
        .http
        .post(api.url("/api/orders"))
        .header("X-API-Key", KEY)
        .json(&order("WH-1"))
        .send()
        .await
        .unwrap();
    let body = problem(response, StatusCode::BAD_REQUEST).await;
    assert_eq!(error_fields(&body), ["Idempotency-Key"]);
    assert_eq!(api.stats().creates["orders"], 0);
}

#[tokio::test]
async fn invalid_records_are_422_naming_every_field_and_do_not_burn_the_key() {
    let api = api().await;
    let mut bad = order("WH-1");
    bad["total"] = json!("250.00");
    bad["items"][0].as_object_mut().unwrap().remove("sku");
    bad["notes"] = json!("unknown field");
    let response = api.create("orders", "key-1", &bad).send().await.unwrap();
    let body = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(error_fields(&body), ["notes", "total", "items[0].sku"]);
    assert!(body["detail"].as_str().unwrap().contains("total"));

    let missing = api
        .create("customers", "key-2", &json!({"email": "no-at-sign"}))
        .send()
        .await
        .unwrap();
    let body = problem(missing, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(error_fields(&body), ["email", "name"]);

    let float_noise = api
        .create(
            "products",
            "key-3",
            &json!({"sku": "S", "name": "N", "price": 0.1 + 0.2}),
        )
        .send()
        .await
        .unwrap();
    let body = problem(float_noise, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(error_fields(&body), ["price"]);
    assert_eq!(api.stats().creates["orders"], 0);

    // Nothing was created with key-1, so the corrected record may use it.
    let fixed = api
        .create("orders", "key-1", &order("WH-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(fixed.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn bodies_that_are_not_json_objects_are_refused() {
    let api = api().await;
    let not_json = api
        .http
        .post(api.url("/api/orders"))
        .header("X-API-Key", KEY)
        .header("Idempotency-Key", "k1")
        .header("content-type", "application/json")
        .body("{\"order_number\":")
        .send()
        .await
        .unwrap();
    problem(not_json, StatusCode::BAD_REQUEST).await;

    let wrong_type = api
        .http
        .post(api.url("/api/orders"))
        .header("X-API-Key", KEY)
        .header("Idempotency-Key", "k2")
        .header("content-type", "text/plain")
        .body(order("WH-1").to_string())
        .send()
        .await
        .unwrap();
    problem(wrong_type, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;

    let array = api
        .create("orders", "k3", &json!([order("WH-1")]))
        .send()
        .await
        .unwrap();
    problem(array, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(api.stats().records["orders"], 0);
}

// --- update and read ---

#[tokio::test]
async fn update_replaces_the_record_and_bumps_updated_at() {
    let api = api().await;
    let created: Value = api
        .create("orders", "key-1", &order("WH-1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;

    let mut changed = order("WH-1");
    changed["status"] = json!("shipped");
    changed.as_object_mut().unwrap().remove("external_ref");
    let response = api.update("orders", id, &changed).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let updated: Value = response.json().await.unwrap();
    assert_eq!(updated["id"], id);
    assert_eq!(updated["status"], "shipped");
    // A full replacement: fields left out are gone.
    assert!(updated.get("external_ref").is_none());
    assert!(updated_at(&updated) > updated_at(&created));

    let fetched: Value = api
        .get(&format!("/api/orders/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(fetched, updated);

    let mut invalid = changed.clone();
    invalid.as_object_mut().unwrap().remove("total");
    let refused = api.update("orders", id, &invalid).send().await.unwrap();
    assert_eq!(
        error_fields(&problem(refused, StatusCode::UNPROCESSABLE_ENTITY).await),
        ["total"]
    );

    let stats = api.stats();
    assert_eq!(stats.updates["orders"], 1);
    assert_eq!(stats.creates["orders"], 1);
}

#[tokio::test]
async fn update_with_an_idempotency_key_is_replayed() {
    let api = api().await;
    let created: Value = api
        .create("products", "key-1", &product("S"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap();
    let put = || {
        api.update("products", id, &product("S"))
            .header("Idempotency-Key", "put-1")
    };
    let first = put().send().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let first_body = first.bytes().await.unwrap();
    let again = put().send().await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.bytes().await.unwrap(), first_body);
    assert_eq!(api.stats().updates["products"], 1);
}

#[tokio::test]
async fn unknown_ids_collections_routes_and_methods_are_problems() {
    let api = api().await;
    let update = api
        .update("orders", "ord_999999", &order("WH-1"))
        .send()
        .await
        .unwrap();
    problem(update, StatusCode::NOT_FOUND).await;
    let fetch = api.get("/api/orders/ord_999999").send().await.unwrap();
    problem(fetch, StatusCode::NOT_FOUND).await;
    let collection = api.create("widgets", "k", &json!({})).send().await.unwrap();
    problem(collection, StatusCode::NOT_FOUND).await;
    let route = api.get("/nothing/here").send().await.unwrap();
    problem(route, StatusCode::NOT_FOUND).await;
    let method = api
        .http
        .delete(api.url("/api/orders/ord_000001"))
        .header("X-API-Key", KEY)
        .send()
        .await
        .unwrap();
    assert!(method.headers().contains_key("allow"));
    problem(method, StatusCode::METHOD_NOT_ALLOWED).await;
}

// --- import ---

async fn import_all(api: &Api, collection: &str, since: Option<&str>, limit: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut params = vec![("limit", limit)];
        if let Some(since) = since {
            params.push(("updated_since", since));
        }
        if let Some(cursor) = &cursor {
            params.push(("cursor", cursor));
        }
        let response = api.import(collection, &params).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let page: Value = response.json().await.unwrap();
        let page_items = page["items"].as_array().unwrap();
        assert!(page_items.len() <= limit.parse().unwrap());
        items.extend(page_items.iter().cloned());
        match &page["next_cursor"] {
            Value::Null => return items,
            Value::String(next) => cursor = Some(next.clone()),
            other => panic!("next_cursor is {other}"),
        }
    }
}

fn order_key(record: &Value) -> (DateTime<Utc>, String) {
    let id = match &record["id"] {
        Value::String(id) => id.clone(),
        other => other.to_string(),
    };
    (updated_at(record), id)
}

#[tokio::test]
async fn import_pages_in_updated_at_then_id_order_with_an_inclusive_updated_since() {
    let api = api().await;
    let sim = api.sandbox.custom_api();
    for i in 0..7 {
        sim.upsert_record(KEY, "products", product(&format!("SKU-{i}")));
    }
    // An integer id, as some ERPs use.
    sim.upsert_record(
        KEY,
        "products",
        json!({"id": 42, "sku": "SKU-42", "name": "N", "price": 1}),
    );
    // Updating an early record moves it to the end of the order.
    let first_id = sim.records(KEY, "products")[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    sim.upsert_record(
        KEY,
        "products",
        json!({"id": first_id, "sku": "SKU-0", "name": "Renamed", "price": 2}),
    );

    let everything = import_all(&api, "products", None, "3").await;
    assert_eq!(everything.len(), 8);
    let keys: Vec<_> = everything.iter().map(order_key).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    assert_eq!(everything.last().unwrap()["name"], "Renamed");
    assert!(everything.iter().any(|r| r["id"] == 42));

    // `updated_since` is inclusive: the item stamped exactly then comes back.
    let since = everything[4]["updated_at"].as_str().unwrap().to_owned();
    let recent = import_all(&api, "products", Some(&since), "2").await;
    let expected: Vec<_> = everything
        .iter()
        .filter(|r| updated_at(r) >= updated_at(&everything[4]))
        .cloned()
        .collect();
    assert_eq!(recent, expected);
    assert!(recent.contains(&everything[4]));

    // One page holding everything has no next cursor.
    let page: Value = api
        .import("products", &[("limit", "1000")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 8);
    assert_eq!(page["next_cursor"], Value::Null);
}

#[tokio::test]
async fn a_deleted_record_is_imported_as_a_tombstone() {
    let api = api().await;
    let created: Value = api
        .create(
            "customers",
            "key-1",
            &json!({"email": "a@b.example", "name": "A"}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap();
    api.sandbox.custom_api().delete_record(KEY, "customers", id);

    let items = import_all(
        &api,
        "customers",
        Some(created["updated_at"].as_str().unwrap()),
        "100",
    )
    .await;
    assert_eq!(items.len(), 1);
    let tombstone = &items[0];
    assert_eq!(tombstone.as_object().unwrap().len(), 3);
    assert_eq!(tombstone["id"], id);
    assert_eq!(tombstone["deleted"], true);
    assert!(updated_at(tombstone) >= updated_at(&created));

    let fetch = api
        .get(&format!("/api/customers/{id}"))
        .send()
        .await
        .unwrap();
    problem(fetch, StatusCode::NOT_FOUND).await;
    let update = api
        .update(
            "customers",
            id,
            &json!({"email": "a@b.example", "name": "A"}),
        )
        .send()
        .await
        .unwrap();
    problem(update, StatusCode::NOT_FOUND).await;
    assert_eq!(api.stats().records["customers"], 0);
    assert!(
        api.sandbox
            .custom_api()
            .records(KEY, "customers")
            .is_empty()
    );
}

#[tokio::test]
async fn import_refuses_bad_parameters_with_400() {
    let api = api().await;
    let products_cursor = {
        for i in 0..3 {
            api.sandbox
                .custom_api()
                .upsert_record(KEY, "products", product(&format!("S{i}")));
        }
        let page: Value = api
            .import("products", &[("limit", "1")])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        page["next_cursor"].as_str().unwrap().to_owned()
    };
    let cases: [(&[(&str, &str)], &str); 7] = [
        (&[("updated_since", "yesterday")], "updated_since"),
        (&[("updated_since", "2026-01-01 10:00:00")], "updated_since"),
        (&[("cursor", "not-a-cursor")], "cursor"),
        (&[("cursor", &products_cursor)], "cursor"),
        (&[("limit", "0")], "limit"),
        (&[("limit", "1001")], "limit"),
        (&[("updatedSince", "2026-01-01T00:00:00Z")], "updatedSince"),
    ];
    for (params, field) in cases {
        // A products cursor is refused on orders.
        let response = api.import("orders", params).send().await.unwrap();
        let body = problem(response, StatusCode::BAD_REQUEST).await;
        assert_eq!(error_fields(&body), [field], "{params:?}");
    }
    // An offset other than Z is fine when encoded.
    let ok = api
        .import("orders", &[("updated_since", "2026-01-01T10:00:00+02:00")])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
}

// --- rate limit ---

/// Sleeps until just after the next wall-clock second, so a burst fits in one window.
async fn start_of_next_second() {
    let now = Utc::now();
    let into_second = now.timestamp_subsec_millis();
    tokio::time::sleep(Duration::from_millis(u64::from(1000 - into_second) + 20)).await;
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after_and_counts_violations() {
    let api = api().await;
    api.sandbox.custom_api().add_account(AccountConfig {
        requests_per_second: Some(2),
        ..AccountConfig::new(KEY)
    });
    start_of_next_second().await;
    for _ in 0..2 {
        assert_eq!(
            api.get("/health").send().await.unwrap().status(),
            StatusCode::OK
        );
    }
    let limited = api.get("/health").send().await.unwrap();
    assert_eq!(limited.headers()["retry-after"], "1");
    problem(limited, StatusCode::TOO_MANY_REQUESTS).await;

    // A client ignoring Retry-After is refused again and caught.
    let early = api.get("/health").send().await.unwrap();
    assert!(early.headers().contains_key("retry-after"));
    problem(early, StatusCode::TOO_MANY_REQUESTS).await;
    let stats = api.stats();
    assert_eq!(stats.rate_limited, 2);
    assert_eq!(stats.violations, 1);
    assert_eq!(stats.max_requests_in_window, 2);
    assert_eq!(stats.requests, 4);

    // Waiting as told is no violation.
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert_eq!(
        api.get("/health").send().await.unwrap().status(),
        StatusCode::OK
    );
    let stats = api.stats();
    assert_eq!(stats.violations, 1);
    assert_eq!(stats.rate_limited, 2);
}

// --- faults ---

#[tokio::test]
async fn status_fault_answers_a_problem_without_handling() {
    let api = api().await;
    api.inject(Fault::Status {
        status: 503,
        retry_after: None,
        times: 2,
        method: None,
        path_contains: None,
    });
    for _ in 0..2 {
        let response = api
            .create("orders", "key-1", &order("WH-1"))
            .send()
            .await
            .unwrap();
        problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
    }
    assert_eq!(api.stats().records["orders"], 0);
    let response = api
        .create("orders", "key-1", &order("WH-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(api.stats().creates_by_key["key-1"], 1);
}

#[tokio::test]
async fn injected_429_with_retry_after_is_enforced_like_the_limiter() {
    let api = api().await;
    api.inject(Fault::Status {
        status: 429,
        retry_after: Some(2),
        times: 1,
        method: None,
        path_contains: None,
    });
    let limited = api.get("/health").send().await.unwrap();
    assert_eq!(limited.headers()["retry-after"], "2");
    problem(limited, StatusCode::TOO_MANY_REQUESTS).await;
    let early = api.get("/health").send().await.unwrap();
    problem(early, StatusCode::TOO_MANY_REQUESTS).await;
    let stats = api.stats();
    assert_eq!(stats.violations, 1);
    assert_eq!(stats.rate_limited, 2);
}

#[tokio::test]
async fn latency_fault_delays_then_handles() {
    let api = api().await;
    api.inject(Fault::Latency {
        ms: 300,
        times: 1,
        method: Some("POST".into()),
        path_contains: None,
    });
    let started = Instant::now();
    let response = api
        .create("orders", "key-1", &order("WH-1"))
        .send()
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(api.stats().records["orders"], 1);

    let started = Instant::now();
    api.create("orders", "key-2", &order("WH-2"))
        .send()
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_millis(300));
}

#[tokio::test]
async fn timeout_fault_never_answers_and_does_not_hold_up_shutdown() {
    let api = api().await;
    api.inject(Fault::Timeout {
        times: 1,
        method: None,
        path_contains: None,
    });
    let error = api
        .get("/health")
        .timeout(Duration::from_millis(300))
        .send()
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error}");
    assert_eq!(
        api.get("/health").send().await.unwrap().status(),
        StatusCode::OK
    );

    // A request still held by the fault when the sandbox stops.
    api.inject(Fault::Timeout {
        times: 1,
        method: None,
        path_contains: None,
    });
    let held = tokio::spawn(api.get("/health").send());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    api.sandbox.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(2));
    let held = held.await.unwrap().unwrap();
    assert_eq!(held.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn malformed_fault_creates_but_answers_a_truncated_body() {
    let api = api().await;
    api.inject(Fault::Malformed {
        times: 1,
        method: None,
        path_contains: None,
    });
    let response = api
        .create("orders", "key-1", &order("WH-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let body = response.bytes().await.unwrap();
    assert!(!body.is_empty());
    assert!(serde_json::from_slice::<Value>(&body).is_err());
    assert_eq!(api.stats().records["orders"], 1);

    // The retry through the same key sees the real answer.
    let replay = api
        .create("orders", "key-1", &order("WH-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let record: Value = replay.json().await.unwrap();
    assert_eq!(record["order_number"], "WH-1");
    assert_eq!(api.stats().creates_by_key["key-1"], 1);
}

#[tokio::test]
async fn html_fault_answers_a_proxy_502_page_without_handling() {
    let api = api().await;
    api.inject(Fault::Html {
        times: 1,
        method: None,
        path_contains: None,
    });
    let response = api
        .create("orders", "key-1", &order("WH-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(response.text().await.unwrap().contains("<html>"));
    assert_eq!(api.stats().records["orders"], 0);
    // Nothing was handled, so the key is still free.
    let retry = api
        .create("orders", "key-1", &order("WH-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert!(!retry.headers().contains_key("idempotent-replayed"));
}

#[tokio::test]
async fn drop_response_fault_creates_the_record_but_answers_500() {
    let api = api().await;
    api.inject(Fault::DropResponse {
        times: 1,
        method: None,
        path_contains: None,
    });
    let lost = api
        .create("orders", "key-1", &order("WH-1"))
        .send()
        .await
        .unwrap();
    problem(lost, StatusCode::INTERNAL_SERVER_ERROR).await;
    let stats = api.stats();
    assert_eq!(stats.creates["orders"], 1);
    assert_eq!(stats.records["orders"], 1);

    // The client retries with its intent's key and body: a replay, not a second order.
    let retry = api
        .create("orders", "key-1", &order("WH-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let record: Value = retry.json().await.unwrap();
    assert_eq!(record, api.sandbox.custom_api().records(KEY, "orders")[0]);
    let stats = api.stats();
    assert_eq!(stats.creates["orders"], 1);
    assert_eq!(stats.creates_by_key["key-1"], 1);
}

#[tokio::test]
async fn a_retry_while_the_first_request_is_in_flight_gets_409() {
    let api = api().await;
    api.inject(Fault::Latency {
        ms: 500,
        times: 1,
        method: None,
        path_contains: Some("/orders".into()),
    });
    let first = tokio::spawn(api.create("orders", "key-1", &order("WH-1")).send());
    tokio::time::sleep(Duration::from_millis(150)).await;

    let concurrent = api
        .create("orders", "key-1", &order("WH-1"))
        .send()
        .await
        .unwrap();
    problem(concurrent, StatusCode::CONFLICT).await;

    let first = first.await.unwrap().unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let after = api
        .create("orders", "key-1", &order("WH-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(after.headers()["idempotent-replayed"], "true");
    let stats = api.stats();
    assert_eq!(stats.creates_by_key["key-1"], 1);
    assert_eq!(stats.records["orders"], 1);
}

#[tokio::test]
async fn fault_filters_pick_the_method_and_path() {
    let api = api().await;
    api.inject(Fault::Status {
        status: 500,
        retry_after: None,
        times: 1,
        method: Some("post".into()),
        path_contains: Some("/api/orders".into()),
    });
    assert_eq!(
        api.get("/health").send().await.unwrap().status(),
        StatusCode::OK
    );
    let orders = api.import("orders", &[]).send().await.unwrap();
    assert_eq!(orders.status(), StatusCode::OK);
    let product = api
        .create("products", "p-1", &product("S"))
        .send()
        .await
        .unwrap();
    assert_eq!(product.status(), StatusCode::CREATED);
    let order_create = api
        .create("orders", "o-1", &order("WH-1"))
        .send()
        .await
        .unwrap();
    problem(order_create, StatusCode::INTERNAL_SERVER_ERROR).await;
    let order_retry = api
        .create("orders", "o-1", &order("WH-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(order_retry.status(), StatusCode::CREATED);
}

// --- admin and accounting ---

#[tokio::test]
async fn admin_endpoints_provision_inject_seed_and_report() {
    let api = api().await;
    let admin = |path: &str| api.url(&format!("/_sandbox{path}"));

    let created = api
        .http
        .post(admin("/accounts"))
        .json(&json!({"api_key": "other", "requests_per_second": 50}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let config: AccountConfig = created.json().await.unwrap();
    assert_eq!(config.auth_header, "X-API-Key");

    let invalid = api
        .http
        .post(admin("/accounts"))
        .json(&json!({"api_key": "", "auth_header": "X-API-Key"}))
        .send()
        .await
        .unwrap();
    problem(invalid, StatusCode::UNPROCESSABLE_ENTITY).await;

    let fault = api
        .http
        .post(admin("/accounts/other/faults"))
        .json(&json!({"kind": "status", "status": 418, "times": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(fault.status(), StatusCode::NO_CONTENT);
    let bad_fault = api
        .http
        .post(admin("/accounts/other/faults"))
        .json(&json!({"kind": "explode", "times": 1}))
        .send()
        .await
        .unwrap();
    problem(bad_fault, StatusCode::BAD_REQUEST).await;
    let teapot = api
        .http
        .get(api.url("/health"))
        .header("X-API-Key", "other")
        .send()
        .await
        .unwrap();
    problem(teapot, StatusCode::IM_A_TEAPOT).await;

    let seeded: Value = api
        .http
        .post(admin("/accounts/other/records/inventory"))
        .json(&json!({"sku": "S", "warehouse_code": "MAIN", "quantity": 3}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(seeded["id"].as_str().unwrap().starts_with("stk_"));
    let records: Vec<Value> = api
        .http
        .get(admin("/accounts/other/records/inventory"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["quantity"], 3);

    let stats: AccountStats = api
        .http
        .get(admin("/accounts/other/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats.requests, 1);
    assert_eq!(stats.records["inventory"], 1);
    // Seeding is not a client's create.
    assert_eq!(stats.creates["inventory"], 0);

    let unknown = api
        .http
        .get(admin("/accounts/nobody/stats"))
        .send()
        .await
        .unwrap();
    problem(unknown, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn records_created_twice_under_different_keys_are_reported_as_duplicates() {
    let api = api().await;
    for key in ["key-1", "key-2"] {
        let response = api
            .create("orders", key, &order("WH-1"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let stats = api.stats();
    assert_eq!(stats.duplicate_business_keys["orders"], ["WH-1"]);
    assert_eq!(stats.creates_by_key.values().max(), Some(&1));
}
