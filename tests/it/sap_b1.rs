//! The SAP Business One connector end to end: the real worker and queue against the
//! Service Layer simulator.

use crate::erp::*;
use crate::support::*;
use passerelle_core::RunStatus;
use passerelle_sandbox::sap_b1::{Fault, SapB1CompanyConfig, SapB1Stats};
use std::time::Duration;

const DB: &str = "SBODEMOFR";

struct B1 {
    env: Env,
}

impl Erp for B1 {
    type Stats = SapB1Stats;
    const KIND: &'static str = "sap_b1";
    const NAME: &'static str = "SAP";

    fn env(&self) -> &Env {
        &self.env
    }

    /// 200 requests a second, and service invoices booked on G/L account 4000.
    fn settings(&self) -> serde_json::Value {
        serde_json::json!({
            "server": self.env.sandbox.sap_b1_url(),
            "company_db": DB,
            "rate_limit": {"requests": 200, "per_secs": 1},
            "invoice_account_code": "4000",
        })
    }

    fn credentials(&self) -> serde_json::Value {
        serde_json::json!({"username": "manager", "password": "b1-password-1"})
    }

    fn stats(&self) -> SapB1Stats {
        self.env.sandbox.sap_b1().stats(DB).unwrap()
    }
}

impl B1 {
    async fn new(tag: &str) -> Self {
        let env = Env::new(tag).await;
        env.sandbox
            .sap_b1()
            .try_add_company(SapB1CompanyConfig::new(DB, "manager", "b1-password-1"))
            .unwrap();
        Self { env }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sap_b1_exports_items_partners_orders_and_invoices_exactly_once_then_patches_a_change() {
    let b1 = B1::new("sapexp").await;
    let seeded = b1.seed(25, 8, 30).await;
    let tenant = seeded.tenant_id;
    let integration = b1.integration(
        tenant,
        "customers,products,orders,invoices",
        "export",
        serde_json::json!({}),
    );
    let _w = b1.env.worker(2);
    b1.sync_succeeds(integration).await;
    let stats = b1.stats();
    assert_eq!(
        stats.creates["Items"],
        b1.platform_count("products", tenant).await
    );
    assert_eq!(
        stats.creates["BusinessPartners"],
        b1.platform_count("customers", tenant).await
    );
    assert_eq!(
        stats.creates["Orders"],
        b1.platform_count("orders", tenant).await
    );
    assert_eq!(
        stats.creates["Invoices"],
        b1.platform_count("invoices", tenant).await
    );
    assert!(stats.creates["Invoices"] > 0);
    b1.assert_created_once();
    assert!(
        stats.logins <= 4,
        "the session should be reused across chunks: {} logins",
        stats.logins
    );
    // An order names the partner its customer became, by NumAtCard = order number.
    let order = &b1.env.sandbox.sap_b1().records(DB, "Orders")[0];
    let partners = b1.env.sandbox.sap_b1().records(DB, "BusinessPartners");
    assert!(
        partners.iter().any(|p| p["CardCode"] == order["CardCode"]),
        "{order}"
    );
    assert!(order["NumAtCard"].as_str().is_some_and(|n| !n.is_empty()));
    assert!(
        order["DocumentLines"].as_array().unwrap().len() >= 2,
        "{order}"
    );
    // The mapping holds SAP's keys: DocEntry for documents, ItemCode for items.
    let external: String = sqlx::query_scalar(
        "SELECT external_id FROM integration_mappings WHERE integration_id = $1 AND entity_type = 'order' LIMIT 1",
    )
    .bind(integration)
    .fetch_one(b1.env.db.store.pool())
    .await
    .unwrap();
    assert!(
        external.parse::<i64>().is_ok(),
        "DocEntry expected: {external}"
    );

    // One product changes: one PATCH, nothing created again.
    b1.raise_price("SKU-00001").await;
    b1.sync_ends(integration, RunStatus::Succeeded, 1, 0).await;
    let stats = b1.stats();
    assert_updates(&stats, &[("Items", 1)]);
    assert_eq!(
        stats.creates["Items"],
        b1.platform_count("products", tenant).await
    );
    let item = b1
        .env
        .sandbox
        .sap_b1()
        .records(DB, "Items")
        .into_iter()
        .find(|i| i["ItemCode"] == "SKU-00001")
        .unwrap();
    let price: rust_decimal::Decimal = sqlx::query_scalar(
        "SELECT price FROM platform.products WHERE tenant_id = $1 AND sku = 'SKU-00001'",
    )
    .bind(tenant)
    .fetch_one(b1.env.db.store.pool())
    .await
    .unwrap();
    assert_eq!(
        item["ItemPrices"][0]["Price"].to_string(),
        price.normalize().to_string(),
        "{item}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sap_b1_an_expired_session_mid_sync_is_renewed_and_the_call_repeated() {
    let b1 = B1::new("sapsess").await;
    let (_, integration) = b1
        .seeded_export((2, 40, 0), "customers", serde_json::json!({}))
        .await;
    // Slow enough that the session can be expired while the sync runs.
    b1.env.sandbox.sap_b1().inject(
        DB,
        Fault::Latency {
            ms: 100,
            times: 200,
            method: Some("POST".into()),
            path_contains: Some("/BusinessPartners".into()),
        },
    );
    let _w = b1.env.worker(1);
    let run = b1.env.sync(integration);
    let start = std::time::Instant::now();
    while b1.stats().creates["BusinessPartners"] < 5 {
        assert!(start.elapsed() < LONG, "{:?}", b1.stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(b1.env.sandbox.sap_b1().expire_sessions(DB) >= 1);
    let r = b1.env.wait_run(run, LONG).await;
    assert_eq!(
        (r.status, r.records_synced),
        (RunStatus::Succeeded, 40),
        "{r:?} {:?}",
        b1.failures(integration).await
    );
    let stats = b1.stats();
    assert!(stats.invalid_sessions >= 1, "{stats:?}");
    assert!(
        stats.logins >= 2,
        "no new login after the expiry: {stats:?}"
    );
    assert_creates(&stats, &[("BusinessPartners", 40)]);
    b1.assert_created_once();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sap_b1_an_order_accepted_but_unanswered_is_found_by_num_at_card_not_created_twice() {
    let b1 = B1::new("sapdrop").await;
    let (_, integration) = b1
        .seeded_export(
            (6, 3, 12),
            "customers,products,orders",
            serde_json::json!({}),
        )
        .await;
    // SAP creates the orders and the answers are lost, twice.
    b1.env.sandbox.sap_b1().inject(
        DB,
        Fault::DropResponse {
            times: 2,
            method: Some("POST".into()),
            path_contains: Some("/Orders".into()),
        },
    );
    let _w = b1.env.worker(1);
    b1.sync_succeeds(integration).await;
    let stats = b1.stats();
    assert_creates(&stats, &[("Orders", 12)]);
    assert_records(&stats, &[("Orders", 12)]);
    b1.assert_created_once();
    let mapped: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM integration_mappings WHERE integration_id = $1 AND entity_type = 'order'",
    )
    .bind(integration)
    .fetch_one(b1.env.db.store.pool())
    .await
    .unwrap();
    assert_eq!(mapped, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sap_b1_a_partner_sap_refuses_is_logged_and_the_others_go_in() {
    let b1 = B1::new("saprej").await;
    let seeded = b1.seed(2, 6, 0).await;
    // Someone already holds the code one customer would get: SAP refuses the duplicate key.
    let clash: i64 = sqlx::query_scalar(
        "SELECT id FROM platform.customers WHERE tenant_id = $1 ORDER BY id LIMIT 1",
    )
    .bind(seeded.tenant_id)
    .fetch_one(b1.env.db.store.pool())
    .await
    .unwrap();
    b1.env.sandbox.sap_b1().upsert_record(
        DB,
        "BusinessPartners",
        serde_json::json!({"CardCode": format!("C{clash}"), "CardName": "Existing Supplier", "CardType": "cSupplier"}),
    );
    let integration = b1.integration(
        seeded.tenant_id,
        "customers",
        "export",
        serde_json::json!({}),
    );
    let _w = b1.env.worker(1);
    b1.sync_ends(integration, RunStatus::Partial, 5, 1).await;
    let errors = b1.failures(integration).await;
    assert!(
        errors.len() == 1 && errors[0].contains("already exists"),
        "{errors:?}"
    );
    assert_creates(&b1.stats(), &[("BusinessPartners", 5)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sap_b1_items_partners_and_stock_are_imported_with_a_cursor() {
    let b1 = B1::new("sapimp").await;
    let tenant = b1.env.db.tenant("Acme").await;
    let sim = b1.env.sandbox.sap_b1();
    sim.upsert_record(
        DB,
        "BusinessPartners",
        serde_json::json!({"CardCode": "C9001", "CardName": "Ann Buyer SARL", "CardType": "cCustomer", "EmailAddress": "ann@buyer.example"}),
    );
    sim.upsert_record(
        DB,
        "BusinessPartners",
        serde_json::json!({"CardCode": "C9002", "CardName": "No Email SARL", "CardType": "cCustomer"}),
    );
    sim.upsert_record(
        DB,
        "BusinessPartners",
        serde_json::json!({"CardCode": "V1", "CardName": "A supplier", "CardType": "cSupplier", "EmailAddress": "s@x.example"}),
    );
    sim.upsert_record(
        DB,
        "Items",
        serde_json::json!({"ItemCode": "X-1", "ItemName": "Widget", "InventoryItem": "tYES",
            "ItemPrices": [{"PriceList": 1, "Price": 9.5, "Currency": "EUR"}],
            "ItemWarehouseInfoCollection": [{"WarehouseCode": "01", "InStock": 7}]}),
    );
    let integration = b1.integration(
        tenant,
        "customers,products,inventory",
        "import",
        serde_json::json!({}),
    );
    let _w = b1.env.worker(1);
    let r = b1.sync(integration).await;
    assert_eq!(
        r.status,
        RunStatus::Partial,
        "the partner without an email is logged: {r:?}"
    );
    assert_eq!((r.records_synced, r.records_failed), (3, 1), "{r:?}");
    let pool = b1.env.db.store.pool();
    let qty: rust_decimal::Decimal =
        sqlx::query_scalar("SELECT quantity FROM platform.inventory WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(qty.to_string(), "7.0000");
    let emails: Vec<String> =
        sqlx::query_scalar("SELECT email FROM platform.customers WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(emails, ["ann@buyer.example"], "suppliers are not customers");
    let cursor: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sync_cursors WHERE integration_id = $1")
            .bind(integration)
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(cursor >= 1, "no import cursor was saved");
    // Nothing changed: nothing is written again.
    let r = b1.sync(integration).await;
    assert_eq!(r.records_synced, 0, "{r:?}");
    // A changed item comes in on the next pass.
    sim.upsert_record(
        DB,
        "Items",
        serde_json::json!({"ItemCode": "X-1", "ItemName": "Widget v2", "InventoryItem": "tYES",
            "ItemPrices": [{"PriceList": 1, "Price": 11, "Currency": "EUR"}],
            "ItemWarehouseInfoCollection": [{"WarehouseCode": "01", "InStock": 7}]}),
    );
    let r = b1.sync(integration).await;
    assert_eq!(r.records_synced, 1, "{r:?}");
    let name: String = sqlx::query_scalar(
        "SELECT name FROM platform.products WHERE tenant_id = $1 AND sku = 'X-1'",
    )
    .bind(tenant)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(name, "Widget v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sap_b1_an_overloaded_server_is_waited_for_and_the_sync_completes() {
    // The server allows 3 requests a second and answers 503 with Retry-After beyond that;
    // the integration believes it may send 200 a second and has to learn from the answers.
    let env = Env::new("b1busy").await;
    let mut company = SapB1CompanyConfig::new(DB, "manager", "b1-password-1");
    company.limits.requests_per_second = Some(3);
    env.sandbox.sap_b1().try_add_company(company).unwrap();
    let b1 = B1 { env };
    let seeded = b1.seed(12, 1, 0).await;
    // One request in flight at a time: on a loaded machine, requests already on the wire
    // when the server says "wait" would reach it after, through no fault of the client.
    let integration = b1.integration(
        seeded.tenant_id,
        "products",
        "export",
        serde_json::json!({"rate_limit": {"requests": 200, "per_secs": 1, "concurrency": 1}}),
    );
    // Whether the natural limit is reached depends on how fast this machine runs the
    // pipeline, so the first create is also answered 503 on purpose: the test always sees an
    // overloaded answer with Retry-After, and must not call again before it expires.
    b1.env.sandbox.sap_b1().inject(
        DB,
        Fault::Status {
            status: 503,
            retry_after: Some(1),
            times: 1,
            method: Some("POST".into()),
            path_contains: Some("/Items".into()),
        },
    );
    let _w = b1.env.worker(1);
    b1.sync_succeeds(integration).await;
    let stats = b1.stats();
    // SAP's "slow down" is the overloaded server's 503.
    assert_limits_honoured(&stats, Some(3));
    assert_creates(&stats, &[("Items", 12)]);
    b1.assert_created_once();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sap_b1_service_invoices_book_on_the_configured_gl_account() {
    let b1 = B1::new("sapsvc").await;
    let (seeded, integration) = b1
        .seeded_export((2, 3, 20), "customers,invoices", serde_json::json!({}))
        .await;
    let _w = b1.env.worker(1);
    b1.sync_succeeds(integration).await;
    let invoices = b1.env.sandbox.sap_b1().records(DB, "Invoices");
    assert_eq!(
        invoices.len() as u64,
        b1.platform_count("invoices", seeded.tenant_id).await
    );
    for invoice in &invoices {
        assert_eq!(invoice["DocType"], "dDocument_Service", "{invoice}");
        assert_eq!(
            invoice["DocumentLines"][0]["AccountCode"], "4000",
            "{invoice}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sap_b1_an_integration_exporting_service_invoices_without_a_gl_account_is_refused() {
    let b1 = B1::new("sapnoacct").await;
    let tenant = b1.env.db.tenant("Acme").await;
    let settings = serde_json::json!({"server": b1.env.sandbox.sap_b1_url(), "company_db": DB});
    let (out, stdout, stderr) = run(b1.env.cmd().args([
        "integrations",
        "create",
        "--tenant",
        &tenant.to_string(),
        "--name",
        "SAP",
        "--type",
        "sap_b1",
        "--entities",
        "customers,invoices",
        "--direction",
        "export",
        "--settings",
        &settings.to_string(),
        "--credentials",
        r#"{"username": "manager", "password": "b1-password-1"}"#,
    ]));
    assert!(!out.status.success(), "{stdout}");
    assert!(stderr.contains("invoice_account_code"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sap_b1_item_invoices_book_their_total_on_the_configured_item() {
    let b1 = B1::new("sapitm").await;
    // A non-inventory sales item the company books invoiced amounts on.
    b1.env.sandbox.sap_b1().upsert_record(
        DB,
        "Items",
        serde_json::json!({"ItemCode": "SERVICES", "ItemName": "Services", "InventoryItem": "tNO", "SalesItem": "tYES"}),
    );
    let seeded = b1.seed(2, 3, 20).await;
    // Item invoices need no G/L account.
    let integration = b1.integration(
        seeded.tenant_id,
        "customers,invoices",
        "export",
        serde_json::json!({"invoice_type": "items", "invoice_item_code": "SERVICES",
            "invoice_account_code": null}),
    );
    let _w = b1.env.worker(1);
    b1.sync_succeeds(integration).await;
    let totals = b1.invoice_totals(seeded.tenant_id).await;
    let invoices = b1.env.sandbox.sap_b1().records(DB, "Invoices");
    for (number, total) in totals {
        let invoice = invoices
            .iter()
            .find(|i| i["NumAtCard"] == number.as_str())
            .unwrap_or_else(|| panic!("invoice {number} is not at SAP"));
        assert_eq!(invoice["DocType"], "dDocument_Items", "{invoice}");
        assert_eq!(invoice["DocumentLines"][0]["ItemCode"], "SERVICES");
        let booked: rust_decimal::Decimal = invoice["DocTotal"].to_string().parse().unwrap();
        assert_eq!(booked, total, "{invoice}");
    }
}
