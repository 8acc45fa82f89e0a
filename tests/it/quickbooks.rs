//! The QuickBooks Online connector end to end: the real worker and queue against the
//! QuickBooks simulator.

use crate::erp::*;
use crate::support::*;
use passerelle_connectors::quickbooks::QuickBooksConnector;
use passerelle_connectors::{
    Connector, ConnectorContext, ConnectorError, Permit, RateGate, RateKey, RateLimits,
};
use passerelle_core::RunStatus;
use passerelle_sandbox::quickbooks::{
    Fault, QuickBooksAppConfig, QuickBooksLimits, QuickBooksStats,
};
use std::time::Duration;

const SECRET: &str = "qb-client-secret-123456";
const FIRST_REFRESH: &str = "AB11-refresh-token-initial-0001";

struct Qb {
    env: Env,
    realm_id: String,
    client_id: String,
}

impl Qb {
    /// A QuickBooks app with a refresh token, connected to one realm; `tune` adjusts it.
    async fn new(tag: &str, tune: impl FnOnce(&mut QuickBooksAppConfig)) -> Self {
        let env = Env::new(tag).await;
        let realm_id =
            (u64::from(uuid::Uuid::new_v4().as_fields().0) + 9_130_000_000_000_000).to_string();
        let client_id = format!("qb-{}", uuid::Uuid::new_v4().simple());
        let mut app = QuickBooksAppConfig::new(client_id.clone(), SECRET, realm_id.clone());
        app.refresh_token = Some(FIRST_REFRESH.into());
        app.limits = QuickBooksLimits {
            per_minute: Some(6_000),
            batch_per_minute: Some(6_000),
            ..QuickBooksLimits::default()
        };
        tune(&mut app);
        env.sandbox.quickbooks().try_add_app(app).unwrap();
        Self {
            env,
            realm_id,
            client_id,
        }
    }
}

impl Erp for Qb {
    type Stats = QuickBooksStats;
    const KIND: &'static str = "quickbooks";
    const NAME: &'static str = "QuickBooks";

    fn env(&self) -> &Env {
        &self.env
    }

    fn settings(&self) -> serde_json::Value {
        let base = self.env.sandbox.quickbooks_url();
        serde_json::json!({
            "realm_id": self.realm_id,
            "api_url": base,
            "token_url": format!("{base}/oauth2/v1/tokens/bearer"),
            "income_account_id": "79",
            "rate_limit": {"requests": 6000, "per_secs": 60},
            "batch_rate_limit": {"requests": 6000, "per_secs": 60},
            "throttle_wait_secs": 1,
        })
    }

    fn credentials(&self) -> serde_json::Value {
        oauth_credentials(&self.client_id, SECRET, Some(FIRST_REFRESH))
    }

    fn stats(&self) -> QuickBooksStats {
        self.env.sandbox.quickbooks().stats(&self.realm_id).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickbooks_exports_items_customers_estimates_and_invoices_in_batches_exactly_once() {
    let q = Qb::new("qexp", |_| {}).await;
    let (_, integration) = q
        .seeded_export(
            (30, 12, 60),
            "customers,products,orders,invoices",
            serde_json::json!({}),
        )
        .await;
    let _w = q.env.worker(2);
    q.sync_succeeds(integration).await;
    let stats = q.stats();
    assert_creates(
        &stats,
        &[
            ("Customer", 12),
            ("Item", 30),
            ("Estimate", 60),
            ("Invoice", 6),
        ],
    );
    assert!(
        stats.batch_requests > 0 && stats.requests < 30,
        "records went one by one, not in batches: {} requests, {} batches",
        stats.requests,
        stats.batch_requests
    );
    assert!(
        stats.creates_by_requestid.values().all(|n| *n <= 30),
        "{stats:?}"
    );
    q.assert_created_once();
    // An estimate points at the customer and items QuickBooks gave the order's rows.
    let api = q.env.sandbox.quickbooks();
    let estimate = &api.records(&q.realm_id, "Estimate")[0];
    let customer = estimate["CustomerRef"]["value"].as_str().unwrap();
    assert!(
        api.records(&q.realm_id, "Customer")
            .iter()
            .any(|c| c["Id"] == customer)
    );
    let item = estimate["Line"][0]["SalesItemLineDetail"]["ItemRef"]["value"]
        .as_str()
        .unwrap();
    assert!(
        api.records(&q.realm_id, "Item")
            .iter()
            .any(|i| i["Id"] == item)
    );

    // One product changes: one sparse update with the SyncToken kept in the mapping.
    q.raise_price("SKU-00001").await;
    q.sync_ends(integration, RunStatus::Succeeded, 1, 0).await;
    let stats = q.stats();
    assert_updates(&stats, &[("Item", 1)]);
    assert_creates(&stats, &[("Item", 30)]);
    assert_eq!(
        stats.stale_updates, 0,
        "the stored SyncToken was stale: {stats:?}"
    );
    let updated = api
        .records(&q.realm_id, "Item")
        .into_iter()
        .find(|i| i["Sku"] == "SKU-00001")
        .unwrap();
    assert_eq!(updated["SyncToken"], "1");
    // It changes again: the token stored by the last update is the one sent now.
    q.raise_price("SKU-00001").await;
    q.sync_ends(integration, RunStatus::Succeeded, 1, 0).await;
    assert_eq!((q.stats().updates["Item"], q.stats().stale_updates), (2, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickbooks_rotated_refresh_tokens_are_stored_before_use_and_expiry_mid_sync_is_survived() {
    // Access tokens last 2 s, every refresh rotates and a replaced refresh token dies at once:
    // every run must use the token the previous refresh stored.
    let q = Qb::new("qtok", |app| {
        app.access_token_ttl_secs = 2;
        app.refresh_rotation_secs = 0;
        app.refresh_grace_secs = 0;
    })
    .await;
    let (_, integration) = q
        .seeded_export(
            (5, 40, 0),
            "customers",
            serde_json::json!({"batch_size": 5}),
        )
        .await;
    q.env.sandbox.quickbooks().inject(
        &q.realm_id,
        Fault::Latency {
            ms: 400,
            times: 100,
            method: None,
            path_contains: None,
        },
    );
    let _w = q.env.worker(1);
    q.sync_succeeds(integration).await;
    // The app's tokens expire between runs too.
    q.env
        .sandbox
        .quickbooks()
        .expire_access_tokens(&q.client_id);
    q.change_customer_phones().await;
    // A second run, with the stored token.
    q.sync_succeeds(integration).await;
    let stats = q.stats();
    assert!(
        stats.token_refreshes >= 3,
        "expected refreshes mid-sync and across runs: {stats:?}"
    );
    assert_eq!(
        stats.rejected_refreshes, 0,
        "a stale refresh token was used: {stats:?}"
    );
    assert_creates(&stats, &[("Customer", 40)]);
    assert_updates(&stats, &[("Customer", 40)]);
    let creds = q.stored_credentials(integration).await;
    assert_ne!(creds.get_str("refresh_token"), Some(FIRST_REFRESH));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickbooks_a_refused_customer_is_logged_and_the_rest_of_the_batch_goes_in() {
    let q = Qb::new("qrej", |_| {}).await;
    let (seeded, integration) = q
        .seeded_export((2, 6, 0), "customers", serde_json::json!({}))
        .await;
    // Two customers with one company name: DisplayName must be unique.
    q.name_two_customers_alike(seeded.tenant_id).await;
    let _w = q.env.worker(1);
    q.sync_ends(integration, RunStatus::Partial, 5, 1).await;
    let errors = q.failures(integration).await;
    assert!(
        errors[0].contains("QuickBooks refused") && errors[0].contains("6240"),
        "{errors:?}"
    );
    q.assert_created_once();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickbooks_a_batch_accepted_but_never_answered_is_not_created_twice() {
    let q = Qb::new("qdrop", |_| {}).await;
    let (_, integration) = q
        .seeded_export((12, 2, 0), "products", serde_json::json!({"batch_size": 5}))
        .await;
    // QuickBooks creates the first batch's items and every answer is lost, the in-call
    // retries' too: the job fails, comes back, and must find the items rather than create
    // them again.
    q.env.sandbox.quickbooks().inject(
        &q.realm_id,
        Fault::DropResponse {
            times: 4,
            method: Some("POST".into()),
            path_contains: Some("/batch".into()),
        },
    );
    let _w = q.env.worker(1);
    q.sync_succeeds(integration).await;
    let stats = q.stats();
    assert_creates(&stats, &[("Item", 12)]);
    // Our 12 and the "Services" item every company holds.
    assert_records(&stats, &[("Item", 13)]);
    assert!(
        stats.replays >= 1,
        "the repeats carried the same requestid: {stats:?}"
    );
    assert!(
        stats.query_requests >= 1,
        "the retried creates were looked up: {stats:?}"
    );
    q.assert_created_once();
    // Every platform product is mapped to the item QuickBooks holds.
    assert_eq!(q.mapped(integration).await, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickbooks_429s_are_honoured_and_the_sync_completes() {
    // QuickBooks allows 4 requests per (compressed) minute of one second; the integration
    // does not know and learns from the 429s.
    let q = Qb::new("q429", |app| {
        app.limits = QuickBooksLimits {
            per_minute: Some(4),
            batch_per_minute: Some(4),
            minute_window_ms: 1_000,
            ..QuickBooksLimits::default()
        };
    })
    .await;
    let seeded = q.seed(20, 2, 0).await;
    let integration = q.integration(
        seeded.tenant_id,
        "products",
        "export",
        // One request in flight at a time, so none is already on the wire when a 429 arrives.
        serde_json::json!({
            "batch_size": 2,
            "rate_limit": {"requests": 6000, "per_secs": 60, "concurrency": 1},
            "batch_rate_limit": {"requests": 6000, "per_secs": 60, "concurrency": 1}
        }),
    );
    // Whether the natural limit is reached depends on how fast this machine runs the
    // pipeline, so the first write is also throttled on purpose: the test always sees a 429
    // with Retry-After, and must not call again before it expires.
    q.env.sandbox.quickbooks().inject(
        &q.realm_id,
        Fault::Status {
            status: 429,
            retry_after: Some(1),
            times: 1,
            method: Some("POST".into()),
            path_contains: Some("/batch".into()),
        },
    );
    let _w = q.env.worker(1);
    q.sync_succeeds(integration).await;
    let stats = q.stats();
    assert_limits_honoured(&stats, None);
    assert_creates(&stats, &[("Item", 20)]);
    q.assert_created_once();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickbooks_customers_and_items_are_imported_then_followed_through_cdc() {
    let q = Qb::new("qimp", |_| {}).await;
    let tenant = q.env.db.tenant("Acme").await;
    let api = q.env.sandbox.quickbooks();
    let ann = api.upsert_record(&q.realm_id, "Customer", serde_json::json!({"DisplayName": "Ann Buyer Ltd", "CompanyName": "Ann Buyer Ltd", "GivenName": "Ann", "FamilyName": "Buyer", "PrimaryEmailAddr": {"Address": "ann@buyer.example"}}));
    api.upsert_record(
        &q.realm_id,
        "Customer",
        serde_json::json!({"DisplayName": "No Email Ltd"}),
    );
    api.upsert_record(&q.realm_id, "Item", serde_json::json!({"Name": "Widget", "Sku": "X-1", "UnitPrice": 9.5, "Type": "Inventory", "TrackQtyOnHand": true, "QtyOnHand": 7}));
    let integration = q.integration(
        tenant,
        "customers,products,inventory",
        "import",
        serde_json::json!({}),
    );
    let _w = q.env.worker(1);
    // Ann, Widget, the company's own "Services" item, and Widget's stock; the customer
    // without an e-mail is logged.
    q.sync_ends(integration, RunStatus::Partial, 4, 1).await;
    assert_eq!(q.stock(tenant).await, "7.0000");
    let cdc_before = q.stats().cdc_requests;
    // Ann's phone changes in QuickBooks: the next run asks CDC for changes since the cursor.
    api.upsert_record(&q.realm_id, "Customer", serde_json::json!({"Id": ann, "DisplayName": "Ann Buyer Ltd", "CompanyName": "Ann Buyer Ltd", "GivenName": "Ann", "FamilyName": "Buyer", "PrimaryEmailAddr": {"Address": "ann@buyer.example"}, "PrimaryPhone": {"FreeFormNumber": "+44 20 1234"}}));
    let r = q.sync(integration).await;
    assert!(q.stats().cdc_requests > cdc_before, "{:?}", q.stats());
    assert_eq!(r.records_synced, 1, "only the changed customer: {r:?}");
    let phone: Option<String> =
        sqlx::query_scalar("SELECT phone FROM platform.customers WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_one(q.env.db.store.pool())
            .await
            .unwrap();
    assert_eq!(phone.as_deref(), Some("+44 20 1234"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickbooks_connection_test_stores_the_rotated_token_so_the_next_sync_works() {
    let q = Qb::new("qtest", |app| {
        app.refresh_rotation_secs = 0;
        app.refresh_grace_secs = 0;
    })
    .await;
    let (_, integration) = q
        .seeded_export((3, 3, 0), "customers", serde_json::json!({}))
        .await;
    q.set_active(integration, false);
    let v = q.test_connection(integration, &[SECRET, "AB11"]);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("connected to QuickBooks company"),
        "{v}"
    );
    q.set_active(integration, true);
    let _w = q.env.worker(1);
    q.sync_succeeds(integration).await;
    assert_eq!(q.stats().rejected_refreshes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickbooks_an_item_edited_in_quickbooks_is_updated_with_its_current_sync_token() {
    let q = Qb::new("qstale", |_| {}).await;
    let (_, integration) = q
        .seeded_export((3, 1, 0), "products", serde_json::json!({}))
        .await;
    let _w = q.env.worker(1);
    q.sync_succeeds(integration).await;
    // Someone edits the item in QuickBooks: its SyncToken moves past the one we stored.
    let api = q.env.sandbox.quickbooks();
    let mut item = api
        .records(&q.realm_id, "Item")
        .into_iter()
        .find(|i| i["Sku"] == "SKU-00001")
        .unwrap();
    item["Description"] = serde_json::json!("edited in QuickBooks");
    api.upsert_record(&q.realm_id, "Item", item);
    sqlx::query("UPDATE platform.products SET price = 99 WHERE sku = 'SKU-00001'")
        .execute(q.env.db.store.pool())
        .await
        .unwrap();
    q.sync_ends(integration, RunStatus::Succeeded, 1, 0).await;
    let stats = q.stats();
    assert_eq!(
        (stats.stale_updates, stats.updates["Item"]),
        (1, 1),
        "{stats:?}"
    );
    let item = api
        .records(&q.realm_id, "Item")
        .into_iter()
        .find(|i| i["Sku"] == "SKU-00001")
        .unwrap();
    assert_eq!(
        (item["SyncToken"].as_str(), item["UnitPrice"].as_f64()),
        (Some("2"), Some(99.0)),
        "{item}"
    );
    // The token of that answer is stored: the next change goes through first time.
    sqlx::query("UPDATE platform.products SET price = 98 WHERE sku = 'SKU-00001'")
        .execute(q.env.db.store.pool())
        .await
        .unwrap();
    q.sync_succeeds(integration).await;
    assert_eq!((q.stats().stale_updates, q.stats().updates["Item"]), (1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickbooks_invoices_with_default_settings_book_their_total_on_the_services_item() {
    let q = Qb::new("qinv", |_| {}).await;
    let seeded = q.seed(2, 3, 20).await;
    // No invoice_item_id: the documented default is the company's "Services" item.
    let integration = q.integration(
        seeded.tenant_id,
        "customers,invoices",
        "export",
        serde_json::json!({}),
    );
    let _w = q.env.worker(1);
    q.sync_succeeds(integration).await;
    let totals = q.invoice_totals(seeded.tenant_id).await;
    let api = q.env.sandbox.quickbooks();
    let services = api
        .records(&q.realm_id, "Item")
        .into_iter()
        .find(|i| i["Name"] == "Services")
        .unwrap();
    let invoices = api.records(&q.realm_id, "Invoice");
    for (number, total) in totals {
        let invoice = invoices
            .iter()
            .find(|i| i["DocNumber"] == number.as_str())
            .unwrap_or_else(|| panic!("invoice {number} is not at QuickBooks"));
        let booked: rust_decimal::Decimal = invoice["TotalAmt"].to_string().parse().unwrap();
        assert_eq!(booked, total, "invoice {number} booked {invoice}");
        assert_eq!(
            invoice["Line"][0]["SalesItemLineDetail"]["ItemRef"]["value"],
            services["Id"]
        );
    }
    assert_eq!(
        q.stats().creates.get("Item").copied(),
        Some(0),
        "the company's own Services item was found, not created"
    );
}

/// A fleet gate in memory, as every worker shares one: it refuses (or waits out) a blocked
/// account and records each block.
#[derive(Debug, Default)]
struct MemoryGate {
    blocked: std::sync::Mutex<std::collections::HashMap<RateKey, std::time::Instant>>,
    blocks: std::sync::Mutex<Vec<(RateKey, Duration)>>,
}

#[async_trait::async_trait]
impl RateGate for MemoryGate {
    async fn admit(
        &self,
        limits: &[(RateKey, RateLimits)],
        max_wait: Duration,
    ) -> Result<Vec<Permit>, ConnectorError> {
        let now = std::time::Instant::now();
        let wait = limits
            .iter()
            .filter_map(|(key, _)| self.blocked.lock().unwrap().get(key).copied())
            .map(|until| until.saturating_duration_since(now))
            .max()
            .unwrap_or_default();
        if wait > max_wait {
            return Err(ConnectorError::RateLimited { retry_after: wait });
        }
        tokio::time::sleep(wait).await;
        Ok(Vec::new())
    }

    async fn release(&self, _permits: &[Permit]) {}

    async fn block(&self, key: &RateKey, for_: Duration) {
        self.blocks.lock().unwrap().push((key.clone(), for_));
        self.blocked
            .lock()
            .unwrap()
            .insert(key.clone(), std::time::Instant::now() + for_);
    }
}

#[tokio::test]
async fn quickbooks_a_429_keeps_every_worker_away_from_the_realm_for_60_seconds() {
    let sandbox = passerelle_sandbox::Sandbox::start(0).await.unwrap();
    let realm = "9130357766900999";
    let mut app = QuickBooksAppConfig::new("qb-429", SECRET, realm);
    app.refresh_token = Some(FIRST_REFRESH.into());
    sandbox.quickbooks().try_add_app(app).unwrap();
    let base = sandbox.quickbooks_url();
    // Intuit's defaults: no throttle_wait_secs, so the connector declares 60 s.
    let settings = serde_json::json!({
        "realm_id": realm,
        "api_url": base,
        "token_url": format!("{base}/oauth2/v1/tokens/bearer"),
    });
    let credentials = passerelle_core::vault::Credentials::from_value(serde_json::json!({
        "client_id": "qb-429", "client_secret": SECRET, "refresh_token": FIRST_REFRESH,
    }))
    .unwrap();
    let gate = std::sync::Arc::new(MemoryGate::default());
    let context = ConnectorContext {
        url_policy: passerelle_connectors::UrlPolicy {
            allow_private_networks: true,
        },
        rate_gate: Some(gate.clone()),
        ..ConnectorContext::default()
    };
    let worker =
        |_: ()| QuickBooksConnector::new(Some(&settings), Some(&credentials), &context).unwrap();
    let first = worker(());
    // QuickBooks answers 429 without Retry-After, as it does.
    sandbox.quickbooks().inject(
        realm,
        Fault::Status {
            status: 429,
            retry_after: None,
            times: 1,
            method: None,
            path_contains: None,
        },
    );
    let started = chrono::Utc::now();
    let err = first.test_connection().await.unwrap_err();
    let ConnectorError::RateLimited { retry_after } = err else {
        panic!("expected RateLimited, got {err:?}");
    };
    assert!(
        retry_after > Duration::from_secs(59) && retry_after <= Duration::from_secs(60),
        "{retry_after:?}"
    );
    let key = RateKey {
        connector: passerelle_core::IntegrationType::QuickBooks,
        account: realm.to_owned(),
    };
    assert_eq!(
        gate.blocks.lock().unwrap().clone(),
        vec![(key, Duration::from_secs(60))],
        "the realm was embargoed through the fleet gate"
    );
    // This worker, and another one sharing the fleet gate, are both held back.
    let second = worker(());
    for connector in [&first, &second] {
        match connector.test_connection().await {
            Err(ConnectorError::RateLimited { retry_after }) => {
                assert!(retry_after > Duration::from_secs(58), "{retry_after:?}")
            }
            other => panic!("expected RateLimited, got {other:?}"),
        }
    }
    // The simulator's log: the throttled request, then nothing within 60 s of it.
    let log = sandbox.quickbooks().requests(realm);
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(log[0].at >= started - chrono::TimeDelta::seconds(1));
    let elapsed = chrono::Utc::now() - log[0].at;
    assert!(
        elapsed < chrono::TimeDelta::seconds(60),
        "the test ran {elapsed}"
    );
}
