//! The Xero connector end to end: the real worker and queue against the Xero simulator.

use crate::erp::*;
use crate::support::*;
use passerelle_core::RunStatus;
use passerelle_sandbox::xero::{Fault, XeroAppConfig, XeroLimits, XeroStats};

const SECRET: &str = "client-secret-123456";
const FIRST_REFRESH: &str = "refresh-token-initial-0001";

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
        let mut app = XeroAppConfig::new(client_id.clone(), SECRET, tenant_id.clone());
        app.refresh_token = Some(FIRST_REFRESH.into());
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

    /// Every request the Xero simulator received in this test is a valid call of an
    /// operation of Xero's official OpenAPI documents.
    fn assert_requests_match_spec(&self) {
        crate::xero_spec::assert_requests_match_spec(&self.env.sandbox.xero().received_requests());
    }
}

impl Erp for Xero {
    type Stats = XeroStats;
    const KIND: &'static str = "xero";
    const NAME: &'static str = "Xero";

    fn env(&self) -> &Env {
        &self.env
    }

    fn settings(&self) -> serde_json::Value {
        serde_json::json!({
            "tenant_id": self.tenant_id,
            "api_url": self.env.sandbox.xero_url(),
            "token_url": format!("{}/identity/connect/token", self.env.sandbox.xero_url()),
            "rate_limit": {"requests": 600, "per_secs": 60},
        })
    }

    fn credentials(&self) -> serde_json::Value {
        oauth_credentials(&self.client_id, SECRET, Some(FIRST_REFRESH))
    }

    fn stats(&self) -> XeroStats {
        self.env.sandbox.xero().stats(&self.tenant_id).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xero_exports_contacts_items_quotes_and_invoices_in_batches_exactly_once() {
    let x = Xero::new("xexp", |_| {}).await;
    let (_, integration) = x
        .seeded_export(
            (30, 12, 60),
            "customers,products,orders,invoices",
            serde_json::json!({}),
        )
        .await;
    let _w = x.env.worker(2);
    x.sync_succeeds(integration).await;
    let stats = x.stats();
    assert_creates(
        &stats,
        &[
            ("Contacts", 12),
            ("Items", 30),
            ("Quotes", 60),
            ("Invoices", 6),
        ],
    );
    assert!(
        stats.requests < 30,
        "records went one by one, not in batches: {} requests",
        stats.requests
    );
    x.assert_created_once();
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
    x.raise_price("SKU-00001").await;
    x.sync_ends(integration, RunStatus::Succeeded, 1, 0).await;
    let stats = x.stats();
    assert_updates(&stats, &[("Items", 1)]);
    assert_creates(&stats, &[("Items", 30)]);
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
    let (_, integration) = x
        .seeded_export(
            (5, 40, 0),
            "customers",
            serde_json::json!({"batch_size": 5}),
        )
        .await;
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
    x.sync_succeeds(integration).await;
    x.change_customer_phones().await;
    // A second run, with the stored token.
    x.sync_succeeds(integration).await;
    let stats = x.stats();
    assert!(
        stats.token_refreshes >= 3,
        "expected refreshes mid-sync and across runs: {stats:?}"
    );
    assert_eq!(
        stats.rejected_refreshes, 0,
        "a stale refresh token was used: {stats:?}"
    );
    assert_creates(&stats, &[("Contacts", 40)]);
    // What is stored is the rotated token, sealed.
    let creds = x.stored_credentials(integration).await;
    assert_ne!(creds.get_str("refresh_token"), Some(FIRST_REFRESH));
    x.assert_requests_match_spec();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xero_a_refused_contact_is_logged_and_the_rest_of_the_batch_goes_in() {
    let x = Xero::new("xrej", |_| {}).await;
    let (seeded, integration) = x
        .seeded_export((2, 6, 0), "customers", serde_json::json!({}))
        .await;
    // Two customers with one company name: Xero refuses the second (names are unique).
    x.name_two_customers_alike(seeded.tenant_id).await;
    let _w = x.env.worker(1);
    x.sync_ends(integration, RunStatus::Partial, 5, 1).await;
    let errors = x.failures(integration).await;
    assert!(
        errors.len() == 1 && errors[0].contains("Xero refused"),
        "{errors:?}"
    );
    x.assert_created_once();
    x.assert_requests_match_spec();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xero_a_batch_accepted_but_unanswered_is_not_created_twice() {
    let x = Xero::new("xdrop", |_| {}).await;
    let (_, integration) = x
        .seeded_export((12, 2, 0), "products", serde_json::json!({"batch_size": 5}))
        .await;
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
    x.sync_succeeds(integration).await;
    let stats = x.stats();
    assert_creates(&stats, &[("Items", 12)]);
    assert_records(&stats, &[("Items", 12)]);
    x.assert_created_once();
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
    let seeded = x.seed(20, 2, 0).await;
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
    x.sync_succeeds(integration).await;
    let stats = x.stats();
    assert_limits_honoured(&stats, Some(4));
    assert_creates(&stats, &[("Items", 20)]);
    x.assert_created_once();
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
    // The contact without an email is logged.
    x.sync_ends(integration, RunStatus::Partial, 3, 1).await;
    assert_eq!(x.stock(tenant).await, "7.0000");
    assert_eq!(x.customer_emails(tenant).await, ["ann@buyer.example"]);
    // Nothing changed: nothing is written again.
    let r = x.sync(integration).await;
    assert_eq!(r.records_synced, 0, "{r:?}");
    x.assert_requests_match_spec();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xero_connection_test_stores_the_rotated_token_so_the_next_sync_works() {
    let x = Xero::new("xtest", |app| app.refresh_grace_secs = 0).await;
    let (_, integration) = x
        .seeded_export((3, 3, 0), "customers", serde_json::json!({}))
        .await;
    x.set_active(integration, false);
    let v = x.test_connection(integration, &[SECRET, "refresh-token"]);
    assert_eq!(v["status"].as_str(), Some("testing"), "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("connected to Xero organisation"),
        "{v}"
    );
    // The initial refresh token is dead now; the sync must use the one the test stored.
    x.set_active(integration, true);
    let _w = x.env.worker(1);
    x.sync_succeeds(integration).await;
    assert_eq!(x.stats().rejected_refreshes, 0);
    x.assert_requests_match_spec();
}
