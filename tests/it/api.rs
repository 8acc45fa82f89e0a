//! The admin HTTP API against the real Postgres and RabbitMQ: served in-process on loopback
//! (the 100,000-row export runs the real `passerelle api` process, to measure its memory).

use crate::support::{Env, run};
use passerelle::api::{self, ApiState, auth};
use passerelle_core::config::Settings;
use passerelle_core::job::TraceParent;
use passerelle_core::vault::{KeyRing, Vault};
use passerelle_core::{
    ApiRole, IntegrationId, LogAction, LogDirection, LogEntityType, LogStatus, MappingEntityType,
    RunId, RunStatus, TenantId,
};
use passerelle_queue::Lane;
use passerelle_store::{BeginOutcome, Heartbeat, NewApiToken, NewLog};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

struct Tenant {
    id: TenantId,
    admin: String,
    viewer: String,
}

struct Api {
    env: Env,
    base: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
    a: Tenant,
    b: Tenant,
}

/// An answer: status, headers, body as JSON (or as text under `"text"`).
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
    text: String,
}

impl Api {
    async fn start(tag: &str) -> Self {
        Self::start_with(tag, |_| {}).await
    }

    async fn start_with(tag: &str, configure: impl FnOnce(&mut Settings)) -> Self {
        let env = Env::new(tag).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let mut settings = Settings::default();
        settings.http.allow_private_networks = true;
        settings.amqp.prefix = env.prefix.clone();
        settings.api.public_url = base.clone();
        configure(&mut settings);
        let ring = KeyRing::from_base64("test1", [("test1", env.vault_key.as_str())]).unwrap();
        let broker = env.broker().await;
        let state = Arc::new(ApiState::new(
            env.db.store.clone(),
            Vault::new(ring),
            broker,
            settings,
        ));
        let shutdown = CancellationToken::new();
        tokio::spawn(api::serve(listener, state, shutdown.clone()));
        let mut api = Self {
            a: Tenant {
                id: TenantId(0),
                admin: String::new(),
                viewer: String::new(),
            },
            b: Tenant {
                id: TenantId(0),
                admin: String::new(),
                viewer: String::new(),
            },
            env,
            base,
            http: reqwest::Client::new(),
            shutdown,
        };
        api.a = api.tenant("Grossiste A").await;
        api.b = api.tenant("Grossiste B").await;
        api
    }

    async fn tenant(&self, name: &str) -> Tenant {
        let id = self.env.db.tenant(name).await;
        Tenant {
            id,
            admin: self.token(id, ApiRole::Admin).await,
            viewer: self.token(id, ApiRole::Viewer).await,
        }
    }

    async fn token(&self, tenant: TenantId, role: ApiRole) -> String {
        let generated = auth::generate();
        self.env
            .db
            .store
            .create_api_token(NewApiToken {
                tenant_id: tenant,
                name: format!("{role}-{}", uuid::Uuid::new_v4().simple()),
                role,
                token_prefix: generated.shown_prefix,
                token_hash: generated.hash,
                expires_at: None,
            })
            .await
            .unwrap();
        generated.secret
    }

    async fn call(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> Answer {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        answer(request.send().await.unwrap()).await
    }

    async fn get(&self, path: &str, token: &str) -> Answer {
        self.call(Method::GET, path, token, None).await
    }

    /// A custom-API integration of tenant A, created through the API and activated.
    async fn integration(&self, name: &str, api_key: &str) -> IntegrationId {
        let created = self
            .call(
                Method::POST,
                "/api/v1/integrations",
                &self.a.admin,
                Some(json!({
                    "name": name,
                    "type": "custom_api",
                    "entities": ["product", "order"],
                    "settings": {"api_url": self.env.sandbox.custom_api_url()},
                    "credentials": {"api_key": api_key},
                })),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
        let id = IntegrationId(created.body["id"].as_i64().unwrap());
        let path = format!("/api/v1/integrations/{id}/activate");
        let activated = self.call(Method::POST, &path, &self.a.admin, None).await;
        assert_eq!(activated.status, StatusCode::OK, "{}", activated.text);
        id
    }

    /// A run, a log row and a mapping for the integration, so every route has data to leak.
    async fn activity(&self, id: IntegrationId) -> RunId {
        let path = format!("/api/v1/integrations/{id}/sync");
        let synced = self.call(Method::POST, &path, &self.a.admin, None).await;
        assert_eq!(synced.status, StatusCode::ACCEPTED, "{}", synced.text);
        let store = &self.env.db.store;
        let logs = [log(id, self.a.id, LogStatus::Success, "P-1")];
        store
            .insert_logs(store.pool(), &logs, store.now())
            .await
            .unwrap();
        let integration = store.integration(id).await.unwrap();
        store
            .map_ids(
                &integration,
                MappingEntityType::Product,
                "1",
                "ERP-1",
                None,
                store.now(),
            )
            .await
            .unwrap();
        synced.body["id"].as_str().unwrap().parse().unwrap()
    }

    async fn document(&self) -> Value {
        let doc = answer(
            self.http
                .get(format!("{}/api/v1/openapi.json", self.base))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(doc.status, StatusCode::OK);
        doc.body
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "text": text }));
    Answer {
        status,
        headers,
        body,
        text,
    }
}

fn log(id: IntegrationId, tenant: TenantId, status: LogStatus, sku: &str) -> NewLog {
    NewLog {
        integration_id: id,
        tenant_id: tenant,
        entity_type: LogEntityType::Product,
        entity_id: Some(sku.to_owned()),
        external_id: Some(format!("ERP-{sku}")),
        action: LogAction::Create,
        direction: LogDirection::Export,
        status,
        request_data: Some(json!({"sku": sku})),
        response_data: None,
        error_message: (status == LogStatus::Failed).then(|| "refused, \"quoted\"".to_owned()),
        duration_ms: Some(12),
    }
}

/// Every operation of the document that needs a token: (method, path under /api/v1). The
/// OAuth callback and its landing page are the browser's, authenticated by the consent's
/// state, and marked `security: []`.
fn operations(doc: &Value) -> Vec<(Method, String)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if op.get("security").is_some_and(|s| s == &json!([{}])) {
                continue;
            }
            ops.push((method.to_uppercase().parse().unwrap(), path.clone()));
        }
    }
    ops
}

fn fill(path: &str, integration: IntegrationId, run: RunId) -> String {
    let id = if path.starts_with("/runs/") {
        run.to_string()
    } else {
        integration.to_string()
    };
    format!("/api/v1{}", path.replace("{id}", &id))
}

#[tokio::test]
async fn the_document_lists_every_route_and_another_tenant_sees_none_of_them() {
    let api = Api::start("api_tenancy").await;
    let id = api.integration("A's ERP", &api.env.api_key).await;
    let run = api.activity(id).await;
    let doc = api.document().await;
    assert_eq!(doc["openapi"], "3.1.0");
    let ops = operations(&doc);
    // The routes the issue names, each documented (and so served: one list builds both).
    for expected in [
        "GET /integrations",
        "POST /integrations",
        "GET /integrations/{id}",
        "PATCH /integrations/{id}",
        "DELETE /integrations/{id}",
        "POST /integrations/{id}/test",
        "POST /integrations/{id}/activate",
        "POST /integrations/{id}/deactivate",
        "POST /integrations/{id}/sync",
        "GET /runs/{id}",
        "GET /integrations/{id}/runs",
        "POST /runs/{id}/cancel",
        "GET /integrations/{id}/logs",
        "GET /integrations/{id}/logs/export",
        "GET /integrations/{id}/mappings",
        "GET /stats",
    ] {
        assert!(
            ops.iter().any(|(m, p)| format!("{m} {p}") == expected),
            "{expected} is missing from the document"
        );
    }
    let mut walked = 0;
    for (method, path) in &ops {
        let url = fill(path, id, run);
        let body = (*method != Method::GET && *method != Method::DELETE).then(|| json!({}));
        let got = api.call(method.clone(), &url, &api.b.admin, body).await;
        assert!(
            !got.text.contains("no such route") && got.status != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {url} is documented but not served"
        );
        assert!(
            !got.text.contains("A's ERP") && !got.text.contains("ERP-1"),
            "{method} {url} showed tenant A's data to tenant B: {}",
            got.text
        );
        if path.contains("{id}") {
            assert_eq!(
                got.status,
                StatusCode::NOT_FOUND,
                "{method} {url}: {}",
                got.text
            );
            assert_eq!(
                got.headers["content-type"], "application/problem+json",
                "{method} {url}"
            );
            walked += 1;
        }
    }
    assert!(walked >= 12, "walked {walked} routes with an id");
    // Tenant A's own view of the same routes is not empty.
    let listed = api.get("/api/v1/integrations", &api.a.viewer).await;
    assert_eq!(listed.body["data"][0]["name"], "A's ERP");
    let other = api.get("/api/v1/integrations", &api.b.viewer).await;
    assert_eq!(other.body["data"], json!([]));
}

#[tokio::test]
async fn a_viewer_reads_every_route_and_writes_none() {
    let api = Api::start("api_viewer").await;
    let id = api.integration("ERP", &api.env.api_key).await;
    let run = api.activity(id).await;
    let doc = api.document().await;
    for (method, path) in operations(&doc) {
        let url = fill(&path, id, run);
        let body = (method != Method::GET && method != Method::DELETE).then(|| json!({}));
        let got = api.call(method.clone(), &url, &api.a.viewer, body).await;
        if method == Method::GET {
            assert_eq!(got.status, StatusCode::OK, "{method} {url}: {}", got.text);
        } else {
            assert_eq!(
                got.status,
                StatusCode::FORBIDDEN,
                "{method} {url}: {}",
                got.text
            );
        }
    }
    // Nothing changed: the integration is still there and active.
    let shown = api
        .get(&format!("/api/v1/integrations/{id}"), &api.a.viewer)
        .await;
    assert_eq!(shown.body["status"], "active");
}

#[tokio::test]
async fn credentials_are_write_only_everywhere() {
    let api = Api::start("api_secrets").await;
    let secret = format!("key-{}", uuid::Uuid::new_v4().simple());
    api.env
        .sandbox
        .custom_api()
        .add_account(passerelle_sandbox::custom_api::AccountConfig::new(
            secret.clone(),
        ));
    let id = api.integration("ERP", &secret).await;
    let run = api.activity(id).await;
    let mut bodies = Vec::new();
    let shown = api
        .get(&format!("/api/v1/integrations/{id}"), &api.a.admin)
        .await;
    assert_eq!(shown.body["credentials"]["set"], true);
    assert_eq!(shown.body["credentials"]["fields"], json!(["api_key"]));
    let tested = api
        .call(
            Method::POST,
            &format!("/api/v1/integrations/{id}/test"),
            &api.a.admin,
            None,
        )
        .await;
    assert_eq!(tested.body["ok"], true, "{}", tested.text);
    bodies.push(tested.text);
    // A new secret in a PATCH is never echoed either.
    let second = format!("key-{}", uuid::Uuid::new_v4().simple());
    let patched = api
        .call(
            Method::PATCH,
            &format!("/api/v1/integrations/{id}"),
            &api.a.admin,
            Some(json!({"credentials": {"api_key": second}})),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.text);
    bodies.push(patched.text.replace(&second, "SECOND"));
    assert!(!patched.text.contains(&second));
    for (method, path) in operations(&api.document().await) {
        if method == Method::GET {
            bodies.push(api.get(&fill(&path, id, run), &api.a.admin).await.text);
        }
    }
    bodies.push(shown.text);
    for body in &bodies {
        assert!(
            !body.contains(&secret),
            "a response carried the secret: {body}"
        );
    }
}

#[tokio::test]
async fn invalid_bodies_get_422_naming_every_field() {
    let api = Api::start_with("api_invalid", |s| s.api.max_body_bytes = 4096).await;
    let post = |body: Value| {
        api.call(
            Method::POST,
            "/api/v1/integrations",
            &api.a.admin,
            Some(body),
        )
    };
    let fields = |a: &Answer| -> Vec<String> {
        a.body["errors"]
            .as_array()
            .unwrap_or(&Vec::new())
            .iter()
            .map(|e| e["field"].as_str().unwrap().to_owned())
            .collect()
    };
    let bad = post(json!({
        "name": "", "type": "sap", "direction": "sideways", "frequency": "yearly",
        "entities": ["product", "widgets"],
    }))
    .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.text);
    assert_eq!(bad.headers["content-type"], "application/problem+json");
    assert_eq!(
        fields(&bad),
        ["name", "type", "direction", "frequency", "entities[1]"]
    );
    assert!(bad.text.contains("expected one of"), "{}", bad.text);
    let url = api.env.sandbox.custom_api_url();
    for (body, field) in [
        (
            json!({"name": "x", "type": "custom_api", "colour": "red"}),
            "colour",
        ),
        (json!({"type": "custom_api"}), "name"),
        (json!({"name": 5, "type": "custom_api"}), "name"),
        (
            json!({"name": "x", "type": "custom_api", "settings": {"api_url": url, "api_key": "oops"}}),
            "settings",
        ),
        (
            json!({"name": "x", "type": "custom_api", "settings": {"api_url": url}, "credentials": {"token": "t"}}),
            "credentials",
        ),
        (
            json!({"name": "x", "type": "xero", "settings": {"tenant_id": "t"}, "credentials": {"client_id": "c"}}),
            "credentials",
        ),
        (
            json!({"name": "x", "type": "custom_api", "settings": {"api_url": url}, "webhook_url": "ftp://hooks.example.com/"}),
            "webhook_url",
        ),
        (
            json!({"name": "x", "type": "sage", "settings": {"api_key": "sk_live_123"}}),
            "settings",
        ),
    ] {
        let got = post(body.clone()).await;
        assert_eq!(
            got.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            got.text
        );
        assert_eq!(fields(&got), [field], "{body}: {}", got.text);
    }
    let big = post(json!({"name": "x".repeat(5000), "type": "custom_api"})).await;
    assert_eq!(big.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", big.text);
    let not_json = api
        .http
        .post(format!("{}/api/v1/integrations", api.base))
        .bearer_auth(&api.a.admin)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), StatusCode::BAD_REQUEST);
    let bad_query = api
        .get(
            "/api/v1/integrations?status=sleeping&colour=red",
            &api.a.admin,
        )
        .await;
    assert_eq!(
        bad_query.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        bad_query.text
    );
    // Nothing was created by any of it.
    let listed = api.get("/api/v1/integrations", &api.a.admin).await;
    assert_eq!(listed.body["data"], json!([]));
    // Neither a wrong method nor a wrong path falls outside problem+json.
    for (method, path, status) in [
        (
            Method::DELETE,
            "/api/v1/stats",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (Method::GET, "/api/v1/nowhere", StatusCode::NOT_FOUND),
    ] {
        let got = api.call(method, path, &api.a.admin, None).await;
        assert_eq!(got.status, status, "{path}");
        assert_eq!(
            got.headers["content-type"], "application/problem+json",
            "{path}"
        );
        assert!(got.headers.contains_key("x-request-id"));
    }
}

#[tokio::test]
async fn private_addresses_are_refused_unless_configuration_allows_them() {
    let api = Api::start_with("api_ssrf", |s| s.http.allow_private_networks = false).await;
    for url in ["https://127.0.0.1/api", "http://erp.example.com/api"] {
        let got = api
            .call(
                Method::POST,
                "/api/v1/integrations",
                &api.a.admin,
                Some(json!({"name": "x", "type": "custom_api", "settings": {"api_url": url}})),
            )
            .await;
        assert_eq!(
            got.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{url}: {}",
            got.text
        );
        assert_eq!(got.body["errors"][0]["field"], "settings", "{}", got.text);
    }
    let hook = api
        .call(
            Method::POST,
            "/api/v1/integrations",
            &api.a.admin,
            Some(json!({"name": "x", "type": "sage", "webhook_url": "https://10.0.0.8/hooks"})),
        )
        .await;
    assert_eq!(
        hook.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        hook.text
    );
    assert_eq!(
        hook.body["errors"][0]["field"], "webhook_url",
        "{}",
        hook.text
    );
}

#[tokio::test]
async fn a_manual_sync_is_accepted_with_its_location_and_the_callers_trace() {
    let api = Api::start("api_sync").await;
    let id = api.integration("ERP", &api.env.api_key).await;
    let trace = TraceParent::new_root();
    let response = api
        .http
        .post(format!("{}/api/v1/integrations/{id}/sync", api.base))
        .bearer_auth(&api.a.admin)
        .header("traceparent", trace.header())
        .header("x-request-id", "req-42")
        .json(&json!({"entity": "orders"}))
        .send()
        .await
        .unwrap();
    let accepted = answer(response).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.text);
    assert_eq!(accepted.headers["x-request-id"], "req-42");
    let location = accepted.headers["location"].to_str().unwrap().to_owned();
    let run = api.get(&location, &api.a.viewer).await;
    assert_eq!(run.body["status"], "queued");
    assert_eq!(run.body["entities"], json!(["order"]));
    assert_eq!(run.body["trace_id"], trace.trace_id);
    // The job waits on the manual lane, in the caller's trace.
    let broker = api.env.broker().await;
    let delivery = broker.take_job(Lane::Manual).await.unwrap().unwrap();
    assert_eq!(delivery.trace.trace_id, trace.trace_id);
    assert_eq!(
        delivery.job.run_id.to_string(),
        run.body["id"].as_str().unwrap()
    );
    delivery.ack().await.unwrap();
    // An entity the integration does not sync, and an inactive integration, are refused.
    let sync = format!("/api/v1/integrations/{id}/sync");
    let wrong = api
        .call(
            Method::POST,
            &sync,
            &api.a.admin,
            Some(json!({"entity": "invoice"})),
        )
        .await;
    assert_eq!(
        wrong.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        wrong.text
    );
    assert_eq!(wrong.body["errors"][0]["field"], "entity");
    let dry = api
        .call(
            Method::POST,
            &sync,
            &api.a.admin,
            Some(json!({"dry_run": true})),
        )
        .await;
    assert_eq!(dry.status, StatusCode::ACCEPTED, "{}", dry.text);
    assert_eq!(dry.body["dry_run"], true);
    let deactivate = format!("/api/v1/integrations/{id}/deactivate");
    api.call(Method::POST, &deactivate, &api.a.admin, None)
        .await;
    let inactive = api.call(Method::POST, &sync, &api.a.admin, None).await;
    assert_eq!(inactive.status, StatusCode::CONFLICT, "{}", inactive.text);
    let runs = api
        .get(&format!("/api/v1/integrations/{id}/runs"), &api.a.viewer)
        .await;
    assert_eq!(runs.body["data"].as_array().unwrap().len(), 2);
    assert_eq!(runs.body["data"][0]["dry_run"], true, "newest first");
    let first = api
        .get(
            &format!("/api/v1/integrations/{id}/runs?limit=1"),
            &api.a.viewer,
        )
        .await;
    let cursor = first.body["next_cursor"].as_str().unwrap();
    let second = api
        .get(
            &format!("/api/v1/integrations/{id}/runs?limit=1&cursor={cursor}"),
            &api.a.viewer,
        )
        .await;
    assert_eq!(first.body["data"][0]["id"], runs.body["data"][0]["id"]);
    assert_eq!(second.body["data"][0]["id"], runs.body["data"][1]["id"]);
    assert!(second.body["next_cursor"].is_null(), "{}", second.text);
}

#[tokio::test]
async fn a_queued_run_is_cancelled_at_once_and_a_running_one_at_its_next_start() {
    let api = Api::start("api_cancel").await;
    let id = api.integration("ERP", &api.env.api_key).await;
    let queued = api.activity(id).await;
    let api = &api;
    let cancel = |run: RunId| async move {
        let path = format!("/api/v1/runs/{run}/cancel");
        api.call(Method::POST, &path, &api.a.admin, None).await
    };
    let got = cancel(queued).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text);
    assert_eq!(got.body["status"], "cancelled");
    assert_eq!(cancel(queued).await.status, StatusCode::CONFLICT);
    assert_eq!(
        cancel(RunId::generate()).await.status,
        StatusCode::NOT_FOUND
    );

    // A running run: the worker's heartbeat learns of the request; the run's next start
    // (its continuation) finishes it `cancelled`, and the integration's counters are untouched.
    let store = &api.env.db.store;
    let running = api.activity(id).await;
    let ttl = Duration::from_secs(30);
    let BeginOutcome::Started(started) = store.begin_run(running, "w1", ttl, 0).await.unwrap()
    else {
        panic!("the run did not start");
    };
    let lease = passerelle_store::LeaseToken {
        integration_id: id,
        run_id: running,
        owner: "w1".into(),
    };
    assert_eq!(started.0.status, RunStatus::Running);
    assert_eq!(store.heartbeat(&lease, ttl).await.unwrap(), Heartbeat::Held);
    let got = cancel(running).await;
    assert_eq!(got.status, StatusCode::ACCEPTED, "{}", got.text);
    assert!(got.body["cancel_requested_at"].is_string());
    assert_eq!(
        store.heartbeat(&lease, ttl).await.unwrap(),
        Heartbeat::CancelRequested
    );
    store.requeue_run(&lease, 0, None, None).await.unwrap();
    let again = store.begin_run(running, "w2", ttl, 0).await.unwrap();
    assert!(matches!(again, BeginOutcome::Cancelled(_)), "{again:?}");
    let run = store.run(running).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Cancelled);
    assert_eq!(run.error.as_deref(), Some("cancelled by an admin"));
    let integration = store.integration(id).await.unwrap();
    assert_eq!((integration.total_syncs, integration.failed_syncs), (0, 0));
}

#[tokio::test]
async fn logs_filter_page_newest_first_and_export_every_row() {
    let api = Api::start("api_logs").await;
    let id = api.integration("ERP", &api.env.api_key).await;
    let store = &api.env.db.store;
    let logs: Vec<NewLog> = (0..130)
        .map(|i| {
            let status = if i % 3 == 0 {
                LogStatus::Failed
            } else {
                LogStatus::Success
            };
            log(id, api.a.id, status, &format!("P-{i}"))
        })
        .collect();
    store
        .insert_logs(store.pool(), &logs, store.now())
        .await
        .unwrap();
    let failed = logs
        .iter()
        .filter(|l| l.status == LogStatus::Failed)
        .count();
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = api
            .get(
                &format!("/api/v1/integrations/{id}/logs?status=failed&limit=20&cursor={cursor}"),
                &api.a.viewer,
            )
            .await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        for row in page.body["data"].as_array().unwrap() {
            assert_eq!(row["status"], "failed");
            seen.push(row["id"].as_i64().unwrap());
        }
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen.len(), failed);
    assert!(seen.windows(2).all(|w| w[0] > w[1]), "not newest first");
    let one = api
        .get(
            &format!("/api/v1/integrations/{id}/logs?internal_id=P-7&external_id=ERP-P-7"),
            &api.a.viewer,
        )
        .await;
    assert_eq!(
        one.body["data"].as_array().unwrap().len(),
        1,
        "{}",
        one.text
    );
    let wrong = api
        .get(
            &format!("/api/v1/integrations/{id}/logs?direction=sideways"),
            &api.a.viewer,
        )
        .await;
    assert_eq!(
        wrong.body["errors"][0]["field"], "direction",
        "{}",
        wrong.text
    );

    let csv = api
        .get(
            &format!("/api/v1/integrations/{id}/logs/export?format=csv"),
            &api.a.viewer,
        )
        .await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(
        csv.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let lines: Vec<&str> = csv.text.lines().collect();
    assert!(lines[0].starts_with("id,created_at,entity_type"));
    assert_eq!(lines.len(), 131, "header and every row");
    assert!(
        csv.text.contains("\"refused, \"\"quoted\"\"\""),
        "CSV quoting"
    );
    let ndjson = api
        .get(
            &format!("/api/v1/integrations/{id}/logs/export?format=ndjson&status=success"),
            &api.a.viewer,
        )
        .await;
    let rows: Vec<Value> = ndjson
        .text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 130 - failed);
}

#[tokio::test]
async fn failed_authentications_are_refused_then_rate_limited() {
    let api = Api::start_with("api_auth", |s| s.api.auth_failures_per_minute = 3).await;
    let none = answer(
        api.http
            .get(format!("{}/api/v1/stats", api.base))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(none.headers["content-type"], "application/problem+json");
    assert!(none.headers.contains_key("x-request-id"));
    for _ in 0..2 {
        let got = api.get("/api/v1/stats", "pst_guessed").await;
        assert_eq!(got.status, StatusCode::UNAUTHORIZED);
    }
    let limited = api.get("/api/v1/stats", "pst_guessed_again").await;
    assert_eq!(
        limited.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        limited.text
    );
    assert!(limited.headers.contains_key("retry-after"));
    // A valid token still passes from the same address: only failures are refused.
    let valid = api.get("/api/v1/stats", &api.a.admin).await;
    assert_eq!(valid.status, StatusCode::OK, "{}", valid.text);
    // Health checks need no token and are never limited.
    let health = api
        .http
        .get(format!("{}/healthz", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let ready = api
        .http
        .get(format!("{}/readyz", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
}

#[tokio::test]
async fn changing_settings_or_credentials_sends_an_active_integration_back_to_testing() {
    let api = Api::start("api_retest").await;
    let id = api.integration("ERP", &api.env.api_key).await;
    let path = format!("/api/v1/integrations/{id}");
    let renamed = api
        .call(
            Method::PATCH,
            &path,
            &api.a.admin,
            Some(json!({"name": "Renamed"})),
        )
        .await;
    assert_eq!(renamed.body["status"], "active", "{}", renamed.text);
    assert_eq!(renamed.body["name"], "Renamed");
    assert_eq!(
        renamed.body["entities"],
        json!(["product", "order"]),
        "other fields kept"
    );
    let settings =
        json!({"settings": {"api_url": api.env.sandbox.custom_api_url(), "concurrency": 2}});
    let changed = api
        .call(Method::PATCH, &path, &api.a.admin, Some(settings))
        .await;
    assert_eq!(changed.body["status"], "testing", "{}", changed.text);
    let stats = api.get("/api/v1/stats", &api.a.viewer).await;
    assert_eq!(stats.body["total_integrations"], 1);
    assert_eq!(stats.body["active_integrations"], 0);
    assert_eq!(stats.body["integrations"][0]["status"], "testing");
    let deleted = api.call(Method::DELETE, &path, &api.a.admin, None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(
        api.get(&path, &api.a.admin).await.status,
        StatusCode::NOT_FOUND
    );
    // Soft: the row stays for audit.
    let row = api.env.db.store.integration(id).await.unwrap();
    assert!(row.deleted_at.is_some());
}

#[tokio::test]
async fn tokens_are_made_shown_once_listed_without_secret_and_revoked() {
    let api = Api::start("api_tokens").await;
    let tenant = api.a.id.to_string();
    let (out, stdout, stderr) = run(api.env.cmd().args([
        "--output",
        "json",
        "tokens",
        "create",
        "--tenant",
        &tenant,
        "--role",
        "viewer",
        "--name",
        "ci",
        "--expires",
        "30d",
    ]));
    assert!(out.status.success(), "{stderr}");
    let created: Value = serde_json::from_str(&stdout).unwrap();
    let secret = created["token"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("pst_"));
    assert_eq!(created["details"]["role"], "viewer");
    let stats = api.get("/api/v1/stats", &secret).await;
    assert_eq!(stats.status, StatusCode::OK, "{}", stats.text);
    let (_, listed, _) = run(api
        .env
        .cmd()
        .args(["--output", "json", "tokens", "list", "--tenant", &tenant]));
    assert!(!listed.contains(&secret), "a listing showed a secret");
    assert!(listed.contains("\"ci\""));
    let (_, table, _) = run(api.env.cmd().args(["tokens", "list"]));
    assert!(table.contains("ci") && !table.contains(&secret));
    let token_id = created["details"]["id"].to_string();
    let (out, _, stderr) = run(api.env.cmd().args(["tokens", "revoke", &token_id]));
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        api.get("/api/v1/stats", &secret).await.status,
        StatusCode::UNAUTHORIZED
    );
    let (out, _, stderr) = run(api
        .env
        .cmd()
        .args(["tokens", "create", "--tenant", &tenant, "--role", "owner"]));
    assert!(!out.status.success());
    assert!(stderr.contains("admin, viewer"), "{stderr}");
}

/// Resident and peak resident memory of a process, in KiB.
fn memory_kib(pid: i32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::test]
async fn a_100000_row_export_streams_with_bounded_memory() {
    const ROWS: i64 = 100_000;
    let api = Api::start("api_export").await;
    let id = api.integration("ERP", &api.env.api_key).await;
    sqlx::query(
        "INSERT INTO integration_logs (integration_id, tenant_id, entity_type, entity_id, external_id,
                action, direction, status, request_data, error_message, duration_ms, created_at, updated_at)
         SELECT $1, $2, 'product', 'P-' || n, 'ERP-' || n, 'create', 'export',
                CASE WHEN n % 10 = 0 THEN 'failed' ELSE 'success' END::log_status,
                jsonb_build_object('sku', 'P-' || n, 'name', repeat('x', 120)),
                CASE WHEN n % 10 = 0 THEN 'refused by the ERP' END, 12,
                now() - make_interval(secs => n), now()
           FROM generate_series(1, $3) AS n",
    )
    .bind(id)
    .bind(api.a.id)
    .bind(ROWS)
    .execute(api.env.db.store.pool())
    .await
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let process = api.env.role(&["api", "--listen", &listen], &[]);
    let base = format!("http://{listen}");
    let started = std::time::Instant::now();
    while api
        .http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{}",
            process.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Warm the process up (one small listing), then take its resting memory.
    api.http
        .get(format!("{base}/api/v1/integrations/{id}/logs?limit=10"))
        .bearer_auth(&api.a.viewer)
        .send()
        .await
        .unwrap();
    let (resting, _) = memory_kib(process.pid());
    let mut response = api
        .http
        .get(format!(
            "{base}/api/v1/integrations/{id}/logs/export?format=ndjson"
        ))
        .bearer_auth(&api.a.viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (mut bytes, mut lines, mut peak) = (0_usize, 0_usize, resting);
    while let Some(chunk) = response.chunk().await.unwrap() {
        bytes += chunk.len();
        lines += chunk.iter().filter(|b| **b == b'\n').count();
        peak = peak.max(memory_kib(process.pid()).0);
    }
    let (_, high_water) = memory_kib(process.pid());
    eprintln!(
        "export of {ROWS} rows: {:.1} MiB sent in {:.2}s; API resident memory {:.1} MiB at rest, {:.1} MiB at most while streaming (high-water mark {:.1} MiB)",
        bytes as f64 / 1048576.0,
        started.elapsed().as_secs_f64(),
        resting as f64 / 1024.0,
        peak as f64 / 1024.0,
        high_water as f64 / 1024.0,
    );
    assert_eq!(lines, usize::try_from(ROWS).unwrap());
    // The body is tens of MiB; an export that held it (or its rows) in memory would grow by
    // at least that much.
    assert!(bytes > 25 * 1024 * 1024, "{bytes} bytes");
    assert!(
        peak < resting + 16 * 1024,
        "the API grew from {resting} KiB to {peak} KiB while streaming"
    );
}

#[tokio::test]
async fn the_cli_reads_what_the_api_reads() {
    let api = Api::start("api_cli").await;
    let id = api.integration("ERP", &api.env.api_key).await;
    let queued = api.activity(id).await;
    let store = &api.env.db.store;
    let logs = [
        log(id, api.a.id, LogStatus::Failed, "P-2"),
        log(id, api.a.id, LogStatus::Success, "P-3"),
    ];
    store
        .insert_logs(store.pool(), &logs, store.now())
        .await
        .unwrap();
    let cli = |args: &[&str]| {
        let (out, stdout, stderr) = run(api.env.cmd().args(args));
        assert!(out.status.success(), "{args:?}: {stderr}");
        stdout
    };
    let id_arg = id.to_string();
    let json = |args: &[&str]| -> Value {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        serde_json::from_str(&cli(&all)).unwrap()
    };
    let failed = json(&["logs", &id_arg, "--status", "failed", "--since", "1h"]);
    assert_eq!(failed.as_array().unwrap().len(), 1, "{failed}");
    assert_eq!(failed[0]["internal_id"], "P-2");
    let api_failed = api
        .get(
            &format!("/api/v1/integrations/{id}/logs?status=failed"),
            &api.a.viewer,
        )
        .await;
    assert_eq!(
        api_failed.body["data"], failed,
        "the CLI and the API disagree"
    );
    let csv = cli(&["logs", &id_arg, "--export", "csv"]);
    assert_eq!(csv.lines().count(), 1 + 3, "header and three rows: {csv}");
    let table = cli(&["logs", &id_arg, "--entity", "products"]);
    assert!(table.contains("P-3") && table.contains("STATUS"), "{table}");
    let mappings = json(&["mappings", &id_arg, "--entity", "product"]);
    assert_eq!(mappings[0]["external_id"], "ERP-1");
    let runs = json(&["runs", &id_arg]);
    assert_eq!(runs[0]["id"], queued.to_string());
    let stats = json(&["stats", "--tenant", &api.a.id.to_string()]);
    assert_eq!(stats["total_integrations"], 1);
    assert_eq!(stats["integrations"][0]["last_run_status"], "queued");
    let (out, _, stderr) = run(api
        .env
        .cmd()
        .args(["logs", &id_arg, "--since", "yesterday"]));
    assert!(!out.status.success());
    assert!(stderr.contains("neither an RFC 3339 time"), "{stderr}");
}

/// A webhook receiver on loopback: answers 500 to the first request, 200 to the others, and
/// keeps every request.
async fn receiver() -> (
    String,
    Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, String)>>>,
) {
    type Seen = Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, String)>>>;
    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .route(
            "/hooks",
            axum::routing::post(
                |axum::extract::State(seen): axum::extract::State<Seen>,
                 headers: axum::http::HeaderMap,
                 body: String| async move {
                    let mut seen = seen.lock().unwrap();
                    seen.push((headers, body));
                    if seen.len() == 1 {
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        axum::http::StatusCode::NO_CONTENT
                    }
                },
            ),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

/// Checks a Standard Webhooks signature the way a receiver's library does, independently of
/// the sender's code: HMAC-SHA256 over `{id}.{timestamp}.{body}` with the decoded secret.
fn verify(secret: &str, headers: &axum::http::HeaderMap, body: &str) {
    use base64::Engine as _;
    use hmac::Mac as _;
    let header = |name: &str| headers[name].to_str().unwrap().to_owned();
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(
        format!(
            "{}.{}.{body}",
            header("webhook-id"),
            header("webhook-timestamp")
        )
        .as_bytes(),
    );
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    assert!(
        header("webhook-signature")
            .split(' ')
            .any(|s| s == expected),
        "bad signature {} (expected {expected})",
        header("webhook-signature")
    );
    let sent_at: i64 = header("webhook-timestamp").parse().unwrap();
    assert!(
        (chrono::Utc::now().timestamp() - sent_at).abs() < 300,
        "stale timestamp"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_webhook_is_signed_retried_after_a_500_and_delivered_once() {
    let api = Api::start("api_webhook").await;
    let (url, seen) = receiver().await;
    let created = api
        .call(
            Method::POST,
            "/api/v1/integrations",
            &api.a.admin,
            Some(json!({
                "name": "ERP",
                "type": "custom_api",
                "entities": ["product"],
                "settings": {"api_url": api.env.sandbox.custom_api_url()},
                "credentials": {"api_key": api.env.api_key},
                "webhook_url": url,
            })),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let secret = created.body["webhook_secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    let id = created.body["id"].as_i64().unwrap();
    let shown = api
        .get(&format!("/api/v1/integrations/{id}"), &api.a.admin)
        .await;
    assert!(!shown.text.contains(&secret), "the secret was shown twice");
    assert_eq!(shown.body["webhook_secret_set"], true);
    api.call(
        Method::POST,
        &format!("/api/v1/integrations/{id}/activate"),
        &api.a.admin,
        None,
    )
    .await;
    sqlx::query(
        "INSERT INTO platform.products (tenant_id, sku, name, price, currency, active)
         SELECT $1, 'SKU-W' || n, 'Product ' || n, 10.5, 'EUR', true FROM generate_series(1, 3) n",
    )
    .bind(api.a.id)
    .execute(api.env.db.store.pool())
    .await
    .unwrap();
    let _worker = api.env.worker(1);
    let synced = api
        .call(
            Method::POST,
            &format!("/api/v1/integrations/{id}/sync"),
            &api.a.admin,
            None,
        )
        .await;
    let run = synced.body["id"].as_str().unwrap().to_owned();
    // The first attempt gets a 500; the retry comes about ten seconds later.
    let started = std::time::Instant::now();
    while seen.lock().unwrap().len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "no retry arrived"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "delivered more than once after the 200");
    assert_eq!(
        seen[0].0["webhook-id"], seen[1].0["webhook-id"],
        "a retry keeps its id"
    );
    for (headers, body) in &seen {
        verify(&secret, headers, body);
        let event: Value = serde_json::from_str(body).unwrap();
        assert_eq!(event["type"], "run.finished");
        assert_eq!(event["data"]["run_id"], run);
        assert_eq!(event["data"]["status"], "succeeded");
        assert_eq!(event["data"]["counts"]["synced"], 3);
    }
    let deliveries = api
        .get(
            &format!("/api/v1/integrations/{id}/webhook-deliveries"),
            &api.a.viewer,
        )
        .await;
    let delivery = &deliveries.body["data"][0];
    assert_eq!(delivery["status"], "delivered", "{}", deliveries.text);
    assert_eq!(delivery["attempts"], 2);
    assert_eq!(delivery["last_status"], 204);
    // A late answer to an attempt whose claim lapsed changes nothing the later one recorded.
    let delivery_id: uuid::Uuid = delivery["id"].as_str().unwrap().parse().unwrap();
    api.env
        .db
        .store
        .webhook_attempt_failed(delivery_id, 1, Some(500), "late", Some(chrono::Utc::now()))
        .await
        .unwrap();
    let again = api
        .get(
            &format!("/api/v1/integrations/{id}/webhook-deliveries"),
            &api.a.viewer,
        )
        .await;
    assert_eq!(
        again.body["data"][0]["status"], "delivered",
        "{}",
        again.text
    );
    // A rotation hands out a new secret once.
    let rotated = api
        .call(
            Method::POST,
            &format!("/api/v1/integrations/{id}/webhook-secret"),
            &api.a.admin,
            None,
        )
        .await;
    let new_secret = rotated.body["webhook_secret"].as_str().unwrap();
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);
}

/// Follows one redirect by hand (the browser's part of a consent): the `Location` of a
/// request that must answer `status`.
async fn location(http: &reqwest::Client, url: &str, status: StatusCode) -> String {
    let response = http.get(url).send().await.unwrap();
    assert_eq!(
        response.status(),
        status,
        "{url}: {:?}",
        response.text().await
    );
    response.headers()["location"].to_str().unwrap().to_owned()
}

fn query_of(url: &str) -> std::collections::HashMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

#[tokio::test]
async fn an_admin_connects_xero_by_consent_and_a_forged_or_replayed_state_is_refused() {
    let api = Api::start("api_oauth").await;
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let xero = api.env.sandbox.xero_url();
    let tenant = uuid::Uuid::new_v4().to_string();
    let mut app = passerelle_sandbox::xero::XeroAppConfig::new(
        "consent-app",
        "consent-secret",
        tenant.clone(),
    );
    app.refresh_token = None;
    app.redirect_uris = vec![format!("{}/api/v1/oauth/callback", api.base)];
    api.env.sandbox.xero().add_app(app);
    // Only the app's id and secret: the tokens come from the consent.
    let created = api
        .call(
            Method::POST,
            "/api/v1/integrations",
            &api.a.admin,
            Some(json!({
                "name": "Xero", "type": "xero", "entities": ["customer"],
                "settings": {
                    "tenant_id": tenant, "api_url": xero,
                    "token_url": format!("{xero}/identity/connect/token"),
                    "authorize_url": format!("{xero}/identity/connect/authorize"),
                },
                "credentials": {"client_id": "consent-app", "client_secret": "consent-secret"},
            })),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let id = created.body["id"].as_i64().unwrap();
    let start = format!("/api/v1/integrations/{id}/oauth/start");
    let viewer = api.call(Method::POST, &start, &api.a.viewer, None).await;
    assert_eq!(viewer.status, StatusCode::FORBIDDEN);
    let started = api.call(Method::POST, &start, &api.a.admin, None).await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.text);
    let authorize = started.body["authorization_url"].as_str().unwrap();
    let asked = query_of(authorize);
    assert!(authorize.starts_with(&format!("{xero}/identity/connect/authorize?")));
    assert_eq!(asked["code_challenge_method"], "S256");
    assert_eq!(asked["state"], started.body["state"].as_str().unwrap());
    assert!(asked["scope"].contains("offline_access"));

    // The browser consents at Xero, comes back to the callback, and lands on the return page.
    let callback = location(&browser, authorize, StatusCode::FOUND).await;
    assert!(
        callback.starts_with(&format!("{}/api/v1/oauth/callback?", api.base)),
        "{callback}"
    );
    let landing = location(&browser, &callback, StatusCode::SEE_OTHER).await;
    let outcome = query_of(&landing);
    assert_eq!(outcome["status"], "connected", "{landing}");
    assert_eq!(outcome["integration"], id.to_string());
    let shown = api
        .get(&format!("/api/v1/integrations/{id}"), &api.a.admin)
        .await;
    let fields = shown.body["credentials"]["fields"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        fields.contains(&json!("refresh_token")) && fields.contains(&json!("access_token")),
        "{fields:?}"
    );
    // The tokens work: the connection test reaches Xero with them.
    let tested = api
        .call(
            Method::POST,
            &format!("/api/v1/integrations/{id}/test"),
            &api.a.admin,
            None,
        )
        .await;
    assert_eq!(tested.body["ok"], true, "{}", tested.text);
    assert_eq!(tested.body["integration"]["status"], "testing");

    // The same state again, and a state we never issued: refused, nothing changes.
    let replayed = browser.get(&callback).send().await.unwrap();
    assert_eq!(replayed.status(), StatusCode::BAD_REQUEST);
    let forged = browser
        .get(format!(
            "{}/api/v1/oauth/callback?code=stolen&state=forged",
            api.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::BAD_REQUEST);
    assert_eq!(forged.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn a_denied_consent_comes_back_as_an_error_and_stores_nothing() {
    let api = Api::start("api_oauth_denied").await;
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let xero = api.env.sandbox.xero_url();
    let tenant = uuid::Uuid::new_v4().to_string();
    let mut app =
        passerelle_sandbox::xero::XeroAppConfig::new("shy-app", "shy-secret", tenant.clone());
    app.refresh_token = None;
    app.redirect_uris = vec![format!("{}/api/v1/oauth/callback", api.base)];
    app.deny_consent = true;
    api.env.sandbox.xero().add_app(app);
    let created = api
        .call(
            Method::POST,
            "/api/v1/integrations",
            &api.a.admin,
            Some(json!({
                "name": "Xero", "type": "xero",
                "settings": {
                    "tenant_id": tenant, "api_url": xero,
                    "token_url": format!("{xero}/identity/connect/token"),
                    "authorize_url": format!("{xero}/identity/connect/authorize"),
                },
                "credentials": {"client_id": "shy-app", "client_secret": "shy-secret"},
            })),
        )
        .await;
    let id = created.body["id"].as_i64().unwrap();
    let started = api
        .call(
            Method::POST,
            &format!("/api/v1/integrations/{id}/oauth/start"),
            &api.a.admin,
            None,
        )
        .await;
    let authorize = started.body["authorization_url"].as_str().unwrap();
    let callback = location(&browser, authorize, StatusCode::FOUND).await;
    let landing = location(&browser, &callback, StatusCode::SEE_OTHER).await;
    let outcome = query_of(&landing);
    assert_eq!(outcome["status"], "error", "{landing}");
    assert!(outcome["error"].starts_with("access_denied"), "{landing}");
    let shown = api
        .get(&format!("/api/v1/integrations/{id}"), &api.a.admin)
        .await;
    assert_eq!(
        shown.body["credentials"]["fields"],
        json!(["client_id", "client_secret"]),
        "{}",
        shown.text
    );
}

#[tokio::test]
async fn quickbooks_is_connected_by_consent_for_the_configured_company_only() {
    let api = Api::start("api_oauth_qb").await;
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let qb = api.env.sandbox.quickbooks_url();
    let realm = format!("9{}", &uuid::Uuid::new_v4().as_u128().to_string()[..10]);
    let callback_url = format!("{}/api/v1/oauth/callback", api.base);
    api.env.sandbox.quickbooks().add_app(
        passerelle_sandbox::quickbooks::QuickBooksAppConfig::authorizable(
            "qb-app",
            "qb-secret",
            realm.clone(),
            callback_url,
        ),
    );
    let api = &api;
    let expected_realm = realm.clone();
    let expected_realm = &expected_realm;
    let create = |realm_id: String| {
        let body = json!({
            "name": "QuickBooks", "type": "quickbooks",
            "settings": {
                "realm_id": realm_id, "api_url": qb,
                "token_url": format!("{qb}/oauth2/v1/tokens/bearer"),
                "authorize_url": format!("{qb}/connect/oauth2"),
            },
            "credentials": {"client_id": "qb-app", "client_secret": "qb-secret"},
        });
        async move {
            let created = api
                .call(
                    Method::POST,
                    "/api/v1/integrations",
                    &api.a.admin,
                    Some(body),
                )
                .await;
            assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
            created.body["id"].as_i64().unwrap()
        }
    };
    let consent = |id: i64| {
        let browser = browser.clone();
        async move {
            let started = api
                .call(
                    Method::POST,
                    &format!("/api/v1/integrations/{id}/oauth/start"),
                    &api.a.admin,
                    None,
                )
                .await;
            let authorize = started.body["authorization_url"]
                .as_str()
                .unwrap()
                .to_owned();
            let callback = location(&browser, &authorize, StatusCode::FOUND).await;
            assert_eq!(&query_of(&callback)["realmId"], expected_realm);
            query_of(&location(&browser, &callback, StatusCode::SEE_OTHER).await)
        }
    };
    let right = create(realm.clone()).await;
    assert_eq!(consent(right).await["status"], "connected");
    let tested = api
        .call(
            Method::POST,
            &format!("/api/v1/integrations/{right}/test"),
            &api.a.admin,
            None,
        )
        .await;
    assert_eq!(tested.body["ok"], true, "{}", tested.text);
    // Consent given for another company than the one configured: refused, nothing stored.
    let wrong = create("1234567".into()).await;
    let outcome = consent(wrong).await;
    assert_eq!(outcome["status"], "error");
    assert!(
        outcome["error"].contains("not the configured realm_id"),
        "{outcome:?}"
    );
    let shown = api
        .get(&format!("/api/v1/integrations/{wrong}"), &api.a.admin)
        .await;
    assert_eq!(
        shown.body["credentials"]["fields"],
        json!(["client_id", "client_secret"])
    );
}

#[tokio::test]
async fn sage_is_connected_by_consent_with_its_client_authenticated_in_the_form() {
    let api = Api::start("api_oauth_sage").await;
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let sage = api.env.sandbox.sage_url();
    let business = "c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0";
    let mut app =
        passerelle_sandbox::sage::SageAppConfig::new("sage-app", "sage-secret-0001", business);
    app.redirect_uris = vec![format!("{}/api/v1/oauth/callback", api.base)];
    api.env.sandbox.sage().add_app(app);
    let created = api
        .call(
            Method::POST,
            "/api/v1/integrations",
            &api.a.admin,
            Some(json!({
                "name": "Sage", "type": "sage", "entities": ["customer"],
                "settings": {
                    "business_id": business,
                    "sales_ledger_account_id": passerelle_sandbox::sage::DEFAULT_SALES_LEDGER_ACCOUNT,
                    "purchase_ledger_account_id": passerelle_sandbox::sage::DEFAULT_PURCHASE_LEDGER_ACCOUNT,
                    "api_url": format!("{sage}/v3.1"),
                    "token_url": format!("{sage}/oauth/token"),
                    "authorize_url": format!("{sage}/oauth2/auth/central?filter=apiv3.1"),
                },
                "credentials": {"client_id": "sage-app", "client_secret": "sage-secret-0001"},
            })),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let id = created.body["id"].as_i64().unwrap();
    let started = api
        .call(
            Method::POST,
            &format!("/api/v1/integrations/{id}/oauth/start"),
            &api.a.admin,
            None,
        )
        .await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.text);
    let authorize = started.body["authorization_url"].as_str().unwrap();
    let asked = query_of(authorize);
    assert_eq!(
        (asked["filter"].as_str(), asked["scope"].as_str()),
        ("apiv3.1", "full_access")
    );
    let callback = location(&browser, authorize, StatusCode::FOUND).await;
    let outcome = query_of(&location(&browser, &callback, StatusCode::SEE_OTHER).await);
    assert_eq!(outcome["status"], "connected", "{outcome:?}");
    let tested = api
        .call(
            Method::POST,
            &format!("/api/v1/integrations/{id}/test"),
            &api.a.admin,
            None,
        )
        .await;
    assert_eq!(tested.body["ok"], true, "{}", tested.text);
    let stats = api.env.sandbox.sage().stats(business).unwrap();
    assert_eq!(stats.code_exchanges, 1, "{stats:?}");
}
