//! The Xero connector end to end: the real worker and queue against the Xero simulator.

use crate::support::*;
use passerelle_core::RunStatus;
use passerelle_sandbox::xero::{Fault, XeroAppConfig, XeroLimits};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(120);

struct Xero {
    env: Env,
    tenant_id: String,
    client_id: String,
}

impl Xero {
    /// A Xero app with a refresh token, connected to one tenant; `tune` adjusts it.
    async fn new(tag: &str, tune: impl FnOnce(&mut XeroAppConfig)) -> Self {
        let env = Env::new(tag).await;
        let tenant_id = uuid::Uuid::new_v4().to_string();
        let client_id = format!("client-{}", uuid::Uuid::new_v4().simple());
        let mut app =
            XeroAppConfig::new(client_id.clone(), "client-secret-123456", tenant_id.clone());
        app.refresh_token = Some("refresh-token-initial-0001".into());
        // Time-compressed limits: 600 calls a "minute" of one second.
        app.limits = XeroLimits {
            per_minute: Some(600),
            minute_window_ms: 60_000,
            ..XeroLimits::default()
        };
        tune(&mut app);
        env.sandbox.xero().add_app(app);
        env.sandbox.xero().record_requests();
        Self {
            env,
            tenant_id,
            client_id,
        }
    }

    /// An active Xero integration through the CLI.
    fn integration(
        &self,
        tenant: i64,
        entities: &str,
        direction: &str,
        extra: serde_json::Value,
    ) -> i64 {
        let mut settings = serde_json::json!({
            "tenant_id": self.tenant_id,
            "api_url": self.env.sandbox.xero_url(),
            "token_url": format!("{}/identity/connect/token", self.env.sandbox.xero_url()),
            "rate_limit": {"requests": 600, "per_secs": 60},
        });
        if let (Some(s), Some(e)) = (settings.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                s.insert(k.clone(), v.clone());
            }
        }
        let credentials = serde_json::json!({
            "client_id": self.client_id,
            "client_secret": "client-secret-123456",
            "refresh_token": "refresh-token-initial-0001",
        });
        self.env.create_active(
            tenant,
            "Xero",
            "xero",
            entities,
            direction,
            &settings,
            &credentials,
        )
    }

    fn stats(&self) -> passerelle_sandbox::xero::XeroStats {
        self.env.sandbox.xero().stats(&self.tenant_id).unwrap()
    }

    /// Every request the Xero simulator received in this test is a valid call of an
    /// operation of Xero's official OpenAPI documents.
    fn assert_requests_match_spec(&self) {
        crate::xero_spec::assert_requests_match_spec(&self.env.sandbox.xero().received_requests());
    }

    fn assert_no_duplicates(&self) {
        let stats = self.stats();
        assert!(
            stats.duplicate_business_keys.values().all(|v| v.is_empty()),
            "duplicates at Xero: {:?}",
            stats.duplicate_business_keys
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xero_exports_contacts_items_quotes_and_invoices_in_batches_exactly_once() {
    let x = Xero::new("xexp", |_| {}).await;
    let seeded = x
        .env
        .db
        .store
        .seed_tenant("Acme", 30, 12, 60)
        .await
        .unwrap();
    let integration = x.integration(
        seeded.tenant_id,
        "customers,products,orders,invoices",
        "export",
        serde_json::json!({}),
    );
    let _w = x.env.worker(2);
    let r = x.env.wait_run(x.env.sync(integration), LONG).await;
    let errors: Vec<String> = sqlx::query_scalar("SELECT error_message FROM integration_logs WHERE integration_id = $1 AND status = 'failed' LIMIT 3")
        .bind(integration).fetch_all(x.env.db.store.pool()).await.unwrap();
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?} {errors:?}");
    let stats = x.stats();
    assert_eq!(
        stats.creates.get("Contacts").copied(),
        Some(12),
        "{stats:?}"
    );
    assert_eq!(stats.creates.get("Items").copied(), Some(30));
    assert_eq!(stats.creates.get("Quotes").copied(), Some(60));
    assert_eq!(stats.creates.get("Invoices").copied(), Some(6));
    assert!(
        stats.requests < 30,
        "records went one by one, not in batches: {} requests",
        stats.requests
    );
    x.assert_no_duplicates();
    // A quote points at the contact Xero gave the order's customer, with the order's lines.
    let quote = &x.env.sandbox.xero().records(&x.tenant_id, "Quotes")[0];
    let contact_id = quote["Contact"]["ContactID"].as_str().unwrap();
    assert!(
        x.env
            .sandbox
            .xero()
            .records(&x.tenant_id, "Contacts")
            .iter()
            .any(|c| c["ContactID"] == contact_id)
    );
    assert!(quote["LineItems"].as_array().unwrap().len() >= 2, "{quote}");
    // One product changes: one update goes out, nothing is created again.
    sqlx::query("UPDATE platform.products SET price = price + 1 WHERE sku = 'SKU-00001'")
        .execute(x.env.db.store.pool())
        .await
        .unwrap();
    let r = x.env.wait_run(x.env.sync(integration), LONG).await;
    assert_eq!(
        (r.status, r.records_synced),
        (RunStatus::Succeeded, 1),
        "{r:?}"
    );
    assert_eq!(x.stats().updates.get("Items").copied(), Some(1));
    assert_eq!(x.stats().creates.get("Items").copied(), Some(30));
    x.assert_requests_match_spec();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xero_rotated_refresh_tokens_are_stored_before_use_and_expiry_mid_sync_is_survived() {
    // Access tokens last 2 s and a replaced refresh token dies at once: every run must use
    // the token the previous refresh stored, and a sync longer than a token's life refreshes
    // mid-way.
    let x = Xero::new("xtok", |app| {
        app.access_token_ttl_secs = 2;
        app.refresh_grace_secs = 0;
    })
    .await;
    let seeded = x.env.db.store.seed_tenant("Acme", 5, 40, 0).await.unwrap();
    let integration = x.integration(
        seeded.tenant_id,
        "customers",
        "export",
        serde_json::json!({"batch_size": 5}),
    );
    x.env.sandbox.xero().inject(
        &x.tenant_id,
        Fault::Latency {
            ms: 400,
            times: 100,
            method: None,
            path_contains: None,
        },
    );
    let _w = x.env.worker(1);
    let r = x.env.wait_run(x.env.sync(integration), LONG).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    sqlx::query("UPDATE platform.customers SET phone = '+33 9 99 99 99 99'")
        .execute(x.env.db.store.pool())
        .await
        .unwrap();
    let r = x.env.wait_run(x.env.sync(integration), LONG).await;
    assert_eq!(
        r.status,
        RunStatus::Succeeded,
        "a second run with the stored token: {r:?}"
    );
    let stats = x.stats();
    assert!(
        stats.token_refreshes >= 3,
        "expected refreshes mid-sync and across runs: {stats:?}"
    );
    assert_eq!(
        stats.rejected_refreshes, 0,
        "a stale refresh token was used: {stats:?}"
    );
    assert_eq!(stats.creates.get("Contacts").copied(), Some(40));
    // What is stored is the rotated token, sealed.
    let (vault, _) = (
        passerelle_core::vault::Vault::new(
            passerelle_core::vault::KeyRing::from_base64(
                "test1",
                [("test1", x.env.vault_key.as_str())],
            )
            .unwrap(),
        ),
        (),
    );
    let creds = x
        .env
        .db
        .store
        .integration(integration)
        .await
        .unwrap()
        .open_credentials(&vault)
        .unwrap()
        .unwrap();
    assert_ne!(
        creds.get_str("refresh_token"),
        Some("refresh-token-initial-0001")
    );
    x.assert_requests_match_spec();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xero_a_refused_contact_is_logged_and_the_rest_of_the_batch_goes_in() {
    let x = Xero::new("xrej", |_| {}).await;
    let seeded = x.env.db.store.seed_tenant("Acme", 2, 6, 0).await.unwrap();
    // Two customers with one company name: Xero refuses the second (names are unique).
    sqlx::query("UPDATE platform.customers SET company_name = 'Same Name SARL' WHERE id IN (SELECT id FROM platform.customers ORDER BY id LIMIT 2)")
        .execute(x.env.db.store.pool()).await.unwrap();
    let integration = x.integration(
        seeded.tenant_id,
        "customers",
        "export",
        serde_json::json!({}),
    );
    let _w = x.env.worker(1);
    let r = x.env.wait_run(x.env.sync(integration), LONG).await;
    assert_eq!(
        (r.status, r.records_synced, r.records_failed),
        (RunStatus::Partial, 5, 1),
        "{r:?}"
    );
    let error: String = sqlx::query_scalar("SELECT error_message FROM integration_logs WHERE integration_id = $1 AND status = 'failed'")
        .bind(integration).fetch_one(x.env.db.store.pool()).await.unwrap();
    assert!(error.contains("Xero refused"), "{error}");
    x.assert_no_duplicates();
    x.assert_requests_match_spec();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xero_a_batch_accepted_but_unanswered_is_not_created_twice() {
    let x = Xero::new("xdrop", |_| {}).await;
    let seeded = x.env.db.store.seed_tenant("Acme", 12, 2, 0).await.unwrap();
    let integration = x.integration(
        seeded.tenant_id,
        "products",
        "export",
        serde_json::json!({"batch_size": 5}),
    );
    // Xero creates the items and the answer is lost, twice.
    x.env.sandbox.xero().inject(
        &x.tenant_id,
        Fault::DropResponse {
            times: 2,
            method: Some("PUT".into()),
            path_contains: None,
        },
    );
    let _w = x.env.worker(1);
    let r = x.env.wait_run(x.env.sync(integration), LONG).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert_eq!(
        x.stats().creates.get("Items").copied(),
        Some(12),
        "{:?}",
        x.stats()
    );
    assert_eq!(x.stats().records.get("Items").copied(), Some(12));
    x.assert_no_duplicates();
    x.assert_requests_match_spec();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xero_429s_are_honoured_and_the_sync_completes() {
    // Xero allows 4 calls per (compressed) second; the integration does not know and learns
    // from the 429s and their Retry-After.
    let x = Xero::new("x429", |app| {
        app.limits = XeroLimits {
            per_minute: Some(4),
            minute_window_ms: 1_000,
            ..XeroLimits::default()
        };
    })
    .await;
    let seeded = x.env.db.store.seed_tenant("Acme", 20, 2, 0).await.unwrap();
    let integration = x.integration(
        seeded.tenant_id,
        "products",
        "export",
        // One call in flight at a time, so none is already on the wire when a 429 arrives.
        serde_json::json!({
            "batch_size": 2,
            "rate_limit": {"requests": 600, "per_secs": 60, "concurrency": 1}
        }),
    );
    // Whether the natural limit is reached depends on how fast this machine runs the
    // pipeline, so the first write is also throttled on purpose: the test always sees a 429
    // with Retry-After, and must not call again before it expires.
    x.env.sandbox.xero().inject(
        &x.tenant_id,
        Fault::Status {
            status: 429,
            retry_after: Some(1),
            times: 1,
            // Xero creates with PUT.
            method: Some("PUT".into()),
            path_contains: Some("/Items".into()),
        },
    );
    let _w = x.env.worker(1);
    let r = x.env.wait_run(x.env.sync(integration), LONG).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    let stats = x.stats();
    assert!(stats.rate_limited > 0, "{stats:?}");
    assert_eq!(
        stats.violations, 0,
        "called again before Retry-After: {stats:?}"
    );
    assert!(stats.max_requests_in_window <= 4, "{stats:?}");
    assert_eq!(stats.creates.get("Items").copied(), Some(20));
    x.assert_no_duplicates();
    x.assert_requests_match_spec();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xero_contacts_and_items_are_imported_incrementally_with_stock() {
    let x = Xero::new("ximp", |_| {}).await;
    let tenant = x.env.db.tenant("Acme").await;
    let api = x.env.sandbox.xero();
    api.upsert_record(
        &x.tenant_id,
        "Contacts",
        serde_json::json!({"Name": "Ann Buyer Ltd", "EmailAddress": "ann@buyer.example"}),
    );
    api.upsert_record(
        &x.tenant_id,
        "Contacts",
        serde_json::json!({"Name": "No Email Ltd"}),
    );
    api.upsert_record(&x.tenant_id, "Items", serde_json::json!({"Code": "X-1", "Name": "Widget", "SalesDetails": {"UnitPrice": 9.5}, "IsTrackedAsInventory": true, "QuantityOnHand": 7, "InventoryAssetAccountCode": "630"}));
    let integration = x.integration(
        tenant,
        "customers,products,inventory",
        "import",
        serde_json::json!({}),
    );
    let _w = x.env.worker(1);
    let r = x.env.wait_run(x.env.sync(integration), LONG).await;
    assert_eq!(
        r.status,
        RunStatus::Partial,
        "the contact without an email is logged: {r:?}"
    );
    assert_eq!((r.records_synced, r.records_failed), (3, 1), "{r:?}");
    let pool = x.env.db.store.pool();
    let qty: rust_decimal::Decimal =
        sqlx::query_scalar("SELECT quantity FROM platform.inventory WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(qty.to_string(), "7.0000");
    let email: String =
        sqlx::query_scalar("SELECT email FROM platform.customers WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(email, "ann@buyer.example");
    // Nothing changed: nothing is written again.
    let r = x.env.wait_run(x.env.sync(integration), LONG).await;
    assert_eq!(r.records_synced, 0, "{r:?}");
    x.assert_requests_match_spec();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xero_connection_test_stores_the_rotated_token_so_the_next_sync_works() {
    let x = Xero::new("xtest", |app| app.refresh_grace_secs = 0).await;
    let seeded = x.env.db.store.seed_tenant("Acme", 3, 3, 0).await.unwrap();
    let integration = x.integration(
        seeded.tenant_id,
        "customers",
        "export",
        serde_json::json!({}),
    );
    run(x
        .env
        .cmd()
        .args(["integrations", "deactivate", &integration.to_string()]));
    let (out, stdout, stderr) = run(x.env.cmd().args([
        "--output",
        "json",
        "integrations",
        "test",
        &integration.to_string(),
    ]));
    assert!(out.status.success(), "{stdout}{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (v["success"].as_bool(), v["status"].as_str()),
        (Some(true), Some("testing")),
        "{v}"
    );
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("connected to Xero organisation"),
        "{v}"
    );
    assert!(
        !stdout.contains("client-secret-123456") && !stdout.contains("refresh-token"),
        "secrets in the output: {stdout}"
    );
    // The initial refresh token is dead now; the sync must use the one the test stored.
    run(x
        .env
        .cmd()
        .args(["integrations", "activate", &integration.to_string()]));
    let _w = x.env.worker(1);
    let r = x.env.wait_run(x.env.sync(integration), LONG).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert_eq!(x.stats().rejected_refreshes, 0);
    x.assert_requests_match_spec();
}
