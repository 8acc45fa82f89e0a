//! The NetSuite connector end to end: the real worker and queue against the SuiteTalk REST
//! simulator, with Token-Based Authentication and with OAuth 2.0 client credentials.

use crate::erp::*;
use crate::support::*;
use passerelle_core::RunStatus;
use passerelle_sandbox::netsuite::{Fault, NetSuiteAccountConfig, NetSuiteStats};
use std::time::Duration;

const ACCOUNT: &str = "1234567_SB1";
const TBA: [&str; 4] = [
    "ns-consumer-key",
    "ns-consumer-secret-0123",
    "ns-token-id",
    "ns-token-secret-4567",
];

struct Ns {
    env: Env,
    m2m: bool,
}

/// The fixture key's PEM, and its public key as NetSuite holds the uploaded certificate's.
fn m2m_key() -> (String, Vec<u8>) {
    let pem = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/netsuite-m2m-test-key.pem"
    ))
    .unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    let pair = ring::signature::RsaKeyPair::from_pkcs8(&der).unwrap();
    use ring::signature::KeyPair;
    (pem, pair.public_key().as_ref().to_vec())
}

impl Erp for Ns {
    type Stats = NetSuiteStats;
    const KIND: &'static str = "netsuite";
    const NAME: &'static str = "NetSuite";

    fn env(&self) -> &Env {
        &self.env
    }

    fn settings(&self) -> serde_json::Value {
        serde_json::json!({
            "account_id": ACCOUNT,
            // The simulator answers SuiteQL times in UTC.
            "time_zone": "UTC",
            "api_url": self.env.sandbox.netsuite_url(ACCOUNT),
            "subsidiary_id": "1",
            "rate_limit": {"requests": 200, "per_secs": 1},
        })
    }

    fn credentials(&self) -> serde_json::Value {
        if self.m2m {
            serde_json::json!({"client_id": "ns-m2m-client", "certificate_id": "cert-1", "private_key": m2m_key().0})
        } else {
            serde_json::json!({"consumer_key": TBA[0], "consumer_secret": TBA[1], "token_id": TBA[2], "token_secret": TBA[3]})
        }
    }

    fn stats(&self) -> NetSuiteStats {
        self.env.sandbox.netsuite().stats(ACCOUNT).unwrap()
    }
}

impl Ns {
    async fn with(
        tag: &str,
        m2m: bool,
        configure: impl FnOnce(&mut NetSuiteAccountConfig),
    ) -> Self {
        let env = Env::new(tag).await;
        let mut config = NetSuiteAccountConfig::new(ACCOUNT)
            .with_tba(TBA[0], TBA[1], TBA[2], TBA[3])
            .with_m2m("ns-m2m-client", "cert-1", m2m_key().1);
        configure(&mut config);
        env.sandbox.netsuite().try_add_account(config).unwrap();
        Self { env, m2m }
    }

    fn records(&self, record_type: &str) -> Vec<serde_json::Value> {
        self.env.sandbox.netsuite().records(ACCOUNT, record_type)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netsuite_tba_exports_items_customers_orders_and_invoices_once_then_patches_a_change() {
    let ns = Ns::with("nsexp", false, |_| {}).await;
    let seeded = ns.seed(20, 6, 24).await;
    let tenant = seeded.tenant_id;
    let integration = ns.integration(
        tenant,
        "customers,products,orders,invoices",
        "export",
        serde_json::json!({}),
    );
    let _w = ns.env.worker(2);
    ns.sync_succeeds(integration).await;
    let stats = ns.stats();
    for (record_type, table) in [
        ("inventoryItem", "products"),
        ("customer", "customers"),
        ("salesOrder", "orders"),
        ("invoice", "invoices"),
    ] {
        assert_eq!(
            count(&stats.creates, record_type),
            ns.platform_count(table, tenant).await,
            "{record_type}: {stats:?}"
        );
    }
    assert!(
        count(&stats.creates, "invoice") > 0
            && stats.transforms == count(&stats.creates, "invoice"),
        "invoices come from their orders: {stats:?}"
    );
    assert!(
        stats.tba_requests > 0 && stats.rejected_auth == 0,
        "{stats:?}"
    );
    ns.assert_created_once();
    let invoice = &ns.records("invoice")[0];
    assert!(invoice["createdFrom"]["id"].is_string(), "{invoice}");
    let order = &ns.records("salesOrder")[0];
    assert!(
        order["item"]["items"]
            .as_array()
            .is_some_and(|l| !l.is_empty()),
        "{order}"
    );
    assert!(
        ns.records("customer")
            .iter()
            .all(|c| c["subsidiary"]["id"] == "1")
    );

    // One product changes: one PATCH, nothing created again.
    ns.raise_price("SKU-00001").await;
    ns.sync_ends(integration, RunStatus::Succeeded, 1, 0).await;
    let after = ns.stats();
    assert_updates(&after, &[("inventoryItem", 1)]);
    assert_eq!(after.creates, stats.creates);
    let item = ns
        .records("inventoryItem")
        .into_iter()
        .find(|i| i["itemId"] == "SKU-00001")
        .unwrap();
    let price: rust_decimal::Decimal = sqlx::query_scalar(
        "SELECT price FROM platform.products WHERE tenant_id = $1 AND sku = 'SKU-00001'",
    )
    .bind(tenant)
    .fetch_one(ns.env.db.store.pool())
    .await
    .unwrap();
    assert_eq!(
        item["price"]["items"][0]["price"]
            .as_f64()
            .unwrap()
            .to_string(),
        price.normalize().to_string(),
        "{item}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netsuite_m2m_tokens_are_minted_from_a_jwt_and_renewed_when_they_expire_mid_sync() {
    let ns = Ns::with("nsm2m", true, |_| {}).await;
    let (_, integration) = ns
        .seeded_export((2, 30, 0), "customers", serde_json::json!({}))
        .await;
    ns.env.sandbox.netsuite().inject(
        ACCOUNT,
        Fault::Latency {
            ms: 60,
            times: 200,
            method: Some("PUT".into()),
            path_contains: Some("/record/v1/customer".into()),
        },
    );
    let _w = ns.env.worker(1);
    let run = ns.env.sync(integration);
    let start = std::time::Instant::now();
    while count(&ns.stats().creates, "customer") < 5 {
        assert!(start.elapsed() < LONG, "{:?}", ns.stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ns.env.sandbox.netsuite().expire_tokens(ACCOUNT).unwrap() >= 1);
    let r = ns.env.wait_run(run, LONG).await;
    assert_eq!(
        (r.status, r.records_synced),
        (RunStatus::Succeeded, 30),
        "{r:?} {:?}",
        ns.failures(integration).await
    );
    let stats = ns.stats();
    assert!(
        stats.token_requests >= 2,
        "no new token after the expiry: {stats:?}"
    );
    assert!(
        stats.bearer_requests > 0 && stats.tba_requests == 0,
        "{stats:?}"
    );
    assert_creates(&stats, &[("customer", 30)]);
    ns.assert_created_once();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netsuite_creates_accepted_but_unanswered_are_not_made_twice() {
    let ns = Ns::with("nsdrop", false, |_| {}).await;
    let (seeded, integration) = ns
        .seeded_export(
            (5, 3, 10),
            "customers,products,orders,invoices",
            serde_json::json!({}),
        )
        .await;
    let sim = ns.env.sandbox.netsuite();
    // NetSuite makes the orders (upserts) and the invoices (transforms); the answers are lost.
    sim.inject(
        ACCOUNT,
        Fault::DropResponse {
            times: 2,
            method: Some("PUT".into()),
            path_contains: Some("/record/v1/salesOrder/eid:".into()),
        },
    );
    sim.inject(
        ACCOUNT,
        Fault::DropResponse {
            times: 2,
            method: Some("POST".into()),
            path_contains: Some("/!transform/invoice".into()),
        },
    );
    let _w = ns.env.worker(1);
    ns.sync_succeeds(integration).await;
    let stats = ns.stats();
    assert_records(&stats, &[("salesOrder", 10)]);
    let invoices = ns.platform_count("invoices", seeded.tenant_id).await;
    assert!(invoices > 0);
    assert_eq!(count(&stats.records, "invoice"), invoices, "{stats:?}");
    ns.assert_created_once();
    let mapped: i64 = sqlx::query_scalar("SELECT count(*) FROM integration_mappings WHERE integration_id = $1 AND entity_type = 'invoice'")
        .bind(integration).fetch_one(ns.env.db.store.pool()).await.unwrap();
    assert_eq!(
        u64::try_from(mapped).unwrap(),
        count(&stats.records, "invoice")
    );
    assert!(mapped > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netsuite_a_customer_netsuite_refuses_is_logged_and_the_others_go_in() {
    let ns = Ns::with("nsrej", false, |_| {}).await;
    let seeded = ns.seed(2, 6, 0).await;
    sqlx::query("UPDATE platform.customers SET email = 'not an email' WHERE id = (SELECT min(id) FROM platform.customers WHERE tenant_id = $1)")
        .bind(seeded.tenant_id).execute(ns.env.db.store.pool()).await.unwrap();
    let integration = ns.integration(
        seeded.tenant_id,
        "customers",
        "export",
        serde_json::json!({}),
    );
    let _w = ns.env.worker(1);
    ns.sync_ends(integration, RunStatus::Partial, 5, 1).await;
    let errors = ns.failures(integration).await;
    assert!(
        errors.len() == 1 && errors[0].contains("valid email"),
        "{errors:?}"
    );
    assert_creates(&ns.stats(), &[("customer", 5)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netsuite_the_account_concurrency_limit_is_waited_for() {
    // The account allows 2 requests at once; the integration believes it may send 5.
    let ns = Ns::with("nsbusy", false, |a| a.concurrency_limit = 2).await;
    let (_, integration) = ns
        .seeded_export((40, 1, 0), "products", serde_json::json!({}))
        .await;
    ns.env.sandbox.netsuite().inject(
        ACCOUNT,
        Fault::Latency {
            ms: 30,
            times: 40,
            method: Some("PUT".into()),
            path_contains: None,
        },
    );
    let _w = ns.env.worker(1);
    ns.sync_succeeds(integration).await;
    let stats = ns.stats();
    assert!(
        stats.rate_limited > 0,
        "the account never said it was busy: {stats:?}"
    );
    assert_creates(&stats, &[("inventoryItem", 40)]);
    ns.assert_created_once();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netsuite_customers_and_items_are_imported_with_a_cursor() {
    let ns = Ns::with("nsimp", false, |_| {}).await;
    let tenant = ns.env.db.tenant("Acme").await;
    let sim = ns.env.sandbox.netsuite();
    sim.upsert_record(ACCOUNT, "customer", serde_json::json!({"companyName": "Ann Buyer SARL", "email": "ann@buyer.example", "subsidiary": {"id": "1"}})).unwrap();
    sim.upsert_record(
        ACCOUNT,
        "customer",
        serde_json::json!({"companyName": "No Email SARL", "subsidiary": {"id": "1"}}),
    )
    .unwrap();
    let widget = sim.upsert_record(ACCOUNT, "inventoryItem", serde_json::json!({"itemId": "X-1", "displayName": "Widget",
        "price": {"items": [{"currencyPage": {"id": "1"}, "priceLevel": {"id": "1"}, "quantity": {"value": 0}, "price": 9.5}]},
        "locations": {"items": [{"location": {"id": "1"}, "quantityOnHand": 7}]}})).unwrap();
    let integration = ns.integration(
        tenant,
        "customers,products,inventory",
        "import",
        serde_json::json!({}),
    );
    let _w = ns.env.worker(1);
    let r = ns.sync(integration).await;
    assert_eq!(
        (r.status, r.records_synced, r.records_failed),
        (RunStatus::Partial, 3, 1),
        "the customer without an email is logged: {r:?} {:?}",
        ns.failures(integration).await
    );
    assert_eq!(ns.customer_emails(tenant).await, ["ann@buyer.example"]);
    let price: rust_decimal::Decimal = sqlx::query_scalar(
        "SELECT price FROM platform.products WHERE tenant_id = $1 AND sku = 'X-1'",
    )
    .bind(tenant)
    .fetch_one(ns.env.db.store.pool())
    .await
    .unwrap();
    assert_eq!(price.normalize().to_string(), "9.5");
    // The stock of its location, under the location's name.
    assert_eq!(ns.stock(tenant).await, "7.0000");
    let warehouse: String =
        sqlx::query_scalar("SELECT warehouse_code FROM platform.inventory WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_one(ns.env.db.store.pool())
            .await
            .unwrap();
    assert_eq!(warehouse, "Main Warehouse");
    let r = ns.sync(integration).await;
    assert_eq!(r.records_synced, 0, "nothing changed: {r:?}");
    sim.touch(
        ACCOUNT,
        "inventoryItem",
        &widget,
        serde_json::json!({"displayName": "Widget v2"}),
    )
    .unwrap();
    let r = ns.sync(integration).await;
    assert_eq!(r.records_synced, 1, "{r:?}");
    let name: String = sqlx::query_scalar(
        "SELECT name FROM platform.products WHERE tenant_id = $1 AND sku = 'X-1'",
    )
    .bind(tenant)
    .fetch_one(ns.env.db.store.pool())
    .await
    .unwrap();
    assert_eq!(name, "Widget v2");
    assert!(ns.stats().suiteql_queries >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netsuite_the_connection_test_proves_tba_and_hides_the_secrets() {
    let ns = Ns::with("nstest", false, |_| {}).await;
    let tenant = ns.env.db.tenant("Acme").await;
    let integration = ns.integration(tenant, "products", "export", serde_json::json!({}));
    let answer = ns.test_connection(integration, &[TBA[1], TBA[3]]);
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains("Token-Based Authentication")),
        "{answer}"
    );
}
