//! The Sage Accounting connector end to end: the real worker and queue against the Sage
//! simulator, with its five-minute access tokens and single-use refresh tokens.

use crate::erp::*;
use crate::support::*;
use passerelle_core::{IntegrationStatus, RunStatus};
use passerelle_sandbox::sage::{
    DEFAULT_PURCHASE_LEDGER_ACCOUNT, DEFAULT_SALES_LEDGER_ACCOUNT, Fault, SageAppConfig, SageStats,
};
use std::time::Duration;

const BUSINESS: &str = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0";
const CLIENT: &str = "sage-client-1";
const SECRET: &str = "sage-client-secret-0001";
const REFRESH: &str = "sage-refresh-token-0001";

struct Sage {
    env: Env,
}

impl Erp for Sage {
    type Stats = SageStats;
    const KIND: &'static str = "sage";
    const NAME: &'static str = "Sage";

    fn env(&self) -> &Env {
        &self.env
    }

    fn settings(&self) -> serde_json::Value {
        let base = self.env.sandbox.sage_url();
        serde_json::json!({
            "business_id": BUSINESS,
            "sales_ledger_account_id": DEFAULT_SALES_LEDGER_ACCOUNT,
            "purchase_ledger_account_id": DEFAULT_PURCHASE_LEDGER_ACCOUNT,
            "api_url": format!("{base}/v3.1"),
            "token_url": format!("{base}/oauth/token"),
            "authorize_url": format!("{base}/oauth2/auth/central?filter=apiv3.1"),
            "rate_limit": {"requests": 600, "per_secs": 6},
        })
    }

    fn credentials(&self) -> serde_json::Value {
        oauth_credentials(CLIENT, SECRET, Some(REFRESH))
    }

    fn stats(&self) -> SageStats {
        self.env.sandbox.sage().stats(BUSINESS).unwrap()
    }
}

impl Sage {
    async fn with(tag: &str, configure: impl FnOnce(&mut SageAppConfig)) -> Self {
        let env = Env::new(tag).await;
        let mut app = SageAppConfig::new(CLIENT, SECRET, BUSINESS);
        app.refresh_token = Some(REFRESH.into());
        // Sage's 200 calls a minute, in a "minute" of 6 s.
        app.limits.per_minute = Some(200);
        app.limits.minute_window_ms = 6_000;
        configure(&mut app);
        env.sandbox.sage().try_add_app(app).unwrap();
        Self { env }
    }

    fn records(&self, resource: &str) -> Vec<serde_json::Value> {
        self.env.sandbox.sage().records(BUSINESS, resource)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sage_exports_stock_items_contacts_quotes_and_invoices_once_then_updates_a_change() {
    let sage = Sage::with("sageexp", |_| {}).await;
    let seeded = sage.seed(15, 6, 12).await;
    let tenant = seeded.tenant_id;
    let integration = sage.integration(
        tenant,
        "customers,products,orders,invoices",
        "export",
        serde_json::json!({}),
    );
    let _w = sage.env.worker(2);
    sage.sync_succeeds(integration).await;
    let stats = sage.stats();
    for (resource, table) in [
        ("stock_items", "products"),
        ("contacts", "customers"),
        ("sales_quotes", "orders"),
        ("sales_invoices", "invoices"),
    ] {
        assert_eq!(
            count(&stats.creates, resource),
            sage.platform_count(table, tenant).await,
            "{resource}: {stats:?}"
        );
    }
    assert!(count(&stats.creates, "sales_invoices") > 0);
    sage.assert_created_once();
    let quote = &sage.records("sales_quotes")[0];
    let contacts = sage.records("contacts");
    assert!(
        contacts
            .iter()
            .any(|c| c["id"] == quote["contact"]["id"] || c["id"] == quote["contact_id"]),
        "{quote}"
    );
    // The refresh token rotated and the stored one is the newest.
    let stored = sage.stored_credentials(integration).await;
    assert_ne!(
        stored.get_str("refresh_token"),
        Some(REFRESH),
        "the rotated refresh token was not stored"
    );
    assert_eq!(stats.reused_refresh_tokens, 0, "{stats:?}");

    // One product changes: one update, nothing created again.
    sage.raise_price("SKU-00001").await;
    sage.sync_ends(integration, RunStatus::Succeeded, 1, 0)
        .await;
    let after = sage.stats();
    assert_updates(&after, &[("stock_items", 1)]);
    assert_eq!(after.creates, stats.creates);
    assert_eq!(after.reused_refresh_tokens, 0, "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sage_access_tokens_expiring_mid_sync_are_refreshed_and_each_refresh_token_used_once() {
    let sage = Sage::with("sagetok", |_| {}).await;
    let (_, integration) = sage
        .seeded_export((2, 30, 0), "customers", serde_json::json!({}))
        .await;
    sage.env.sandbox.sage().inject(
        BUSINESS,
        Fault::Latency {
            ms: 60,
            times: 200,
            method: Some("POST".into()),
            path_contains: Some("/contacts".into()),
        },
    );
    let _w = sage.env.worker(1);
    let run = sage.env.sync(integration);
    let start = std::time::Instant::now();
    while count(&sage.stats().creates, "contacts") < 5 {
        assert!(start.elapsed() < LONG, "{:?}", sage.stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(sage.env.sandbox.sage().expire_access_tokens(CLIENT) >= 1);
    let r = sage.env.wait_run(run, LONG).await;
    assert_eq!(
        (r.status, r.records_synced),
        (RunStatus::Succeeded, 30),
        "{r:?} {:?}",
        sage.failures(integration).await
    );
    let stats = sage.stats();
    assert!(
        stats.token_refreshes >= 2,
        "no refresh after the expiry: {stats:?}"
    );
    assert_eq!(
        stats.reused_refresh_tokens, 0,
        "a single-use refresh token was used twice: {stats:?}"
    );
    assert_creates(&stats, &[("contacts", 30)]);
    sage.assert_created_once();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sage_a_revoked_refresh_token_flags_the_integration_and_says_to_connect_again() {
    let sage = Sage::with("sagerev", |_| {}).await;
    let (_, integration) = sage
        .seeded_export((3, 0, 0), "products", serde_json::json!({}))
        .await;
    sage.env.sandbox.sage().revoke_refresh_tokens(CLIENT);
    let _w = sage.env.worker(1);
    let r = sage.sync(integration).await;
    assert_eq!(r.status, RunStatus::Failed, "{r:?}");
    let i = sage.env.db.store.integration(integration).await.unwrap();
    assert_eq!(i.status, IntegrationStatus::Error);
    let error = i.last_error.unwrap_or_default();
    assert!(error.contains("oauth/start"), "{error}");
    assert!(
        !error.contains(REFRESH) && !error.contains(SECRET),
        "a secret leaked: {error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sage_invoices_created_but_unanswered_are_replayed_by_their_idempotency_id() {
    let sage = Sage::with("sagedrop", |_| {}).await;
    let (seeded, integration) = sage
        .seeded_export(
            (4, 3, 10),
            "customers,products,orders,invoices",
            serde_json::json!({}),
        )
        .await;
    // More lost answers than one call retries in place: the job's retry sends the create
    // again, and only the same idempotency_id keeps Sage from making a second invoice.
    sage.env.sandbox.sage().inject(
        BUSINESS,
        Fault::DropResponse {
            times: 6,
            method: Some("POST".into()),
            path_contains: Some("/sales_invoices".into()),
        },
    );
    let _w = sage.env.worker(1);
    sage.sync_succeeds(integration).await;
    let stats = sage.stats();
    let invoices = sage.platform_count("invoices", seeded.tenant_id).await;
    assert!(invoices > 0);
    assert_records(&stats, &[("sales_invoices", invoices)]);
    assert!(
        stats.replays >= 1,
        "the repeated creates were not answered from Sage's idempotency store: {stats:?}"
    );
    sage.assert_created_once();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sage_a_contact_sage_refuses_is_logged_with_its_error_and_the_others_go_in() {
    let sage = Sage::with("sagerej", |_| {}).await;
    let seeded = sage.seed(2, 6, 0).await;
    sqlx::query("UPDATE platform.customers SET email = 'not an email' WHERE id = (SELECT min(id) FROM platform.customers WHERE tenant_id = $1)")
        .bind(seeded.tenant_id).execute(sage.env.db.store.pool()).await.unwrap();
    let integration = sage.integration(
        seeded.tenant_id,
        "customers",
        "export",
        serde_json::json!({}),
    );
    let _w = sage.env.worker(1);
    sage.sync_ends(integration, RunStatus::Partial, 5, 1).await;
    let errors = sage.failures(integration).await;
    assert!(
        errors.len() == 1 && errors[0].contains("RecordInvalid"),
        "{errors:?}"
    );
    assert_creates(&sage.stats(), &[("contacts", 5)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sage_the_rate_limit_is_honoured() {
    // 30 calls per "minute" of 6 s at Sage; the integration believes it may send 600.
    let sage = Sage::with("sage429", |app| app.limits.per_minute = Some(30)).await;
    let (_, integration) = sage
        .seeded_export(
            (45, 1, 0),
            "products",
            serde_json::json!({"rate_limit": {"requests": 600, "per_secs": 6, "concurrency": 1}}),
        )
        .await;
    let _w = sage.env.worker(1);
    sage.sync_succeeds(integration).await;
    let stats = sage.stats();
    assert_limits_honoured(&stats, Some(30));
    assert_creates(&stats, &[("stock_items", 45)]);
    sage.assert_created_once();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sage_stock_items_contacts_and_stock_are_imported_with_a_cursor_and_deletions() {
    let sage = Sage::with("sageimp", |_| {}).await;
    let tenant = sage.env.db.tenant("Acme").await;
    let sim = sage.env.sandbox.sage();
    sim.upsert_record(
        BUSINESS,
        "contacts",
        serde_json::json!({"name": "Ann Buyer Ltd", "contact_type_ids": ["CUSTOMER"],
        "main_contact_person": {"name": "Ann", "email": "ann@buyer.example"}}),
    )
    .unwrap();
    sim.upsert_record(
        BUSINESS,
        "contacts",
        serde_json::json!({"name": "No Email Ltd", "contact_type_ids": ["CUSTOMER"]}),
    )
    .unwrap();
    sim.upsert_record(
        BUSINESS,
        "contacts",
        serde_json::json!({"name": "A supplier", "contact_type_ids": ["VENDOR"],
        "main_contact_person": {"name": "S", "email": "s@x.example"}}),
    )
    .unwrap();
    let widget = sim.upsert_record(BUSINESS, "stock_items", serde_json::json!({"item_code": "X-1", "description": "Widget",
        "sales_ledger_account_id": DEFAULT_SALES_LEDGER_ACCOUNT, "purchase_ledger_account_id": DEFAULT_PURCHASE_LEDGER_ACCOUNT,
        "sales_prices": [{"price_name": "Selling Price", "price": 9.5, "price_includes_tax": false}]})).unwrap();
    sim.set_stock(BUSINESS, "X-1", 7.0).unwrap();
    let integration = sage.integration(
        tenant,
        "customers,products,inventory",
        "import",
        serde_json::json!({}),
    );
    let _w = sage.env.worker(1);
    let r = sage.sync(integration).await;
    assert_eq!(
        (r.status, r.records_synced, r.records_failed),
        (RunStatus::Partial, 3, 1),
        "the contact without an email is logged: {r:?} {:?}",
        sage.failures(integration).await
    );
    assert_eq!(sage.stock(tenant).await, "7.0000");
    assert_eq!(
        sage.customer_emails(tenant).await,
        ["ann@buyer.example"],
        "suppliers are not customers"
    );
    let r = sage.sync(integration).await;
    assert_eq!(r.records_synced, 0, "nothing changed: {r:?}");
    // The item is deleted at Sage: the next pass reads it as gone.
    sim.delete_record(BUSINESS, "stock_items", &widget).unwrap();
    // (The contact without an email is read again within the overlap and fails again.)
    let r = sage.sync(integration).await;
    assert_eq!(
        (r.records_synced, r.records_failed),
        (2, 1),
        "the deletion was not read (product and stock): {r:?}"
    );
    let active: bool = sqlx::query_scalar(
        "SELECT active FROM platform.products WHERE tenant_id = $1 AND sku = 'X-1'",
    )
    .bind(tenant)
    .fetch_one(sage.env.db.store.pool())
    .await
    .unwrap();
    assert!(!active, "a product Sage deleted stays active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sage_the_connection_test_reaches_the_business_and_hides_the_tokens() {
    let sage = Sage::with("sagetest", |_| {}).await;
    let tenant = sage.env.db.tenant("Acme").await;
    let integration = sage.integration(tenant, "products", "export", serde_json::json!({}));
    let answer = sage.test_connection(integration, &[SECRET, REFRESH]);
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains(BUSINESS)),
        "{answer}"
    );
}
