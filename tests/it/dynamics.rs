//! The Dynamics 365 (Dataverse Web API) connector end to end: the real worker and queue
//! against the Dataverse simulator.

use crate::erp::*;
use crate::support::*;
use passerelle_core::{RunStatus, TenantId};
use passerelle_sandbox::dataverse::{DataverseEnvConfig, DataverseLimits, DataverseStats, Fault};
use std::time::Duration;

const SECRET: &str = "dv~client-secret-123456";
const TENANT: &str = "contoso.onmicrosoft.com";

struct Dv {
    env: Env,
    org: String,
    client_id: String,
}

impl Dv {
    /// An environment with its application user; `tune` adjusts it.
    async fn new(tag: &str, tune: impl FnOnce(&mut DataverseEnvConfig)) -> Self {
        let env = Env::new(tag).await;
        let org = format!("org{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let client_id = uuid::Uuid::new_v4().to_string();
        let mut config = DataverseEnvConfig::new(org.clone(), TENANT, client_id.clone(), SECRET);
        tune(&mut config);
        env.sandbox.dataverse().try_add_environment(config).unwrap();
        Self {
            env,
            org,
            client_id,
        }
    }

    /// Makes the tenant's first customer's phone longer than Dataverse holds (50 characters
    /// of telephone1): the connector does not cut a phone number, so Dataverse refuses it.
    async fn give_one_customer_too_long_a_phone(&self, tenant: TenantId) {
        sqlx::query("UPDATE platform.customers SET phone = repeat('9', 60) WHERE id = (SELECT min(id) FROM platform.customers WHERE tenant_id = $1)")
            .bind(tenant)
            .execute(self.env.db.store.pool())
            .await
            .unwrap();
    }
}

impl Erp for Dv {
    type Stats = DataverseStats;
    const KIND: &'static str = "dynamics_365";
    const NAME: &'static str = "Dynamics";

    fn env(&self) -> &Env {
        &self.env
    }

    fn settings(&self) -> serde_json::Value {
        let base = self.env.sandbox.dataverse_url();
        let api = self.env.sandbox.dataverse();
        let (schedule, unit) = api.default_unit(&self.org).unwrap();
        let price_list = api.price_list(&self.org).unwrap();
        serde_json::json!({
            "price_list_id": price_list.to_string(),
            "environment_url": format!("{base}/env/{}", self.org),
            "token_url": format!("{base}/login/{TENANT}/oauth2/v2.0/token"),
            "default_uom_schedule_id": schedule.to_string(),
            "default_uom_id": unit.to_string(),
        })
    }

    fn credentials(&self) -> serde_json::Value {
        oauth_credentials(&self.client_id, SECRET, None)
    }

    fn stats(&self) -> DataverseStats {
        self.env.sandbox.dataverse().stats(&self.org).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamics_exports_accounts_and_products_exactly_once_then_updates_the_changed_one() {
    let d = Dv::new("dvexp", |_| {}).await;
    let (_, integration) = d
        .seeded_export((12, 9, 0), "customers,products", serde_json::json!({}))
        .await;
    let _w = d.env.worker(2);
    d.sync_ends(integration, RunStatus::Succeeded, 21, 0).await;
    let stats = d.stats();
    assert_creates(&stats, &[("accounts", 9), ("products", 12)]);
    assert_eq!(stats.creates_by_key.len(), 21);
    d.assert_created_once();
    // Our reference is the account number; the mapping holds Dataverse's id.
    let pool = d.env.db.store.pool();
    let (internal, external): (String, String) = sqlx::query_as(
        "SELECT internal_id, external_id FROM integration_mappings WHERE integration_id = $1 AND entity_type = 'customer' LIMIT 1",
    )
    .bind(integration)
    .fetch_one(pool)
    .await
    .unwrap();
    let account = d
        .env
        .sandbox
        .dataverse()
        .records(&d.org, "accounts")
        .into_iter()
        .find(|a| a["accountid"] == external.as_str())
        .unwrap();
    assert_eq!(account["accountnumber"], format!("PAS-{internal}").as_str());

    // Nothing changed: nothing is sent.
    let before = d.stats().requests;
    d.sync_ends(integration, RunStatus::Succeeded, 0, 0).await;
    assert_eq!(d.stats().updates.get("products"), None);

    // One product changes: one PATCH by id, no create.
    sqlx::query("UPDATE platform.products SET price = 123.45 WHERE sku = 'SKU-00003'")
        .execute(pool)
        .await
        .unwrap();
    d.sync_ends(integration, RunStatus::Succeeded, 1, 0).await;
    let stats = d.stats();
    assert_updates(&stats, &[("products", 1)]);
    assert_creates(&stats, &[("products", 12)]);
    assert!(stats.requests > before);
    let product = d
        .env
        .sandbox
        .dataverse()
        .records(&d.org, "products")
        .into_iter()
        .find(|p| p["productnumber"] == "SKU-00003")
        .unwrap();
    assert_eq!(product["price"].as_f64(), Some(123.45));
    d.assert_created_once();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamics_imports_accounts_and_products_then_only_what_changed_since_the_cursor() {
    let d = Dv::new("dvimp", |_| {}).await;
    let tenant = d.env.db.tenant("Acme").await;
    let api = d.env.sandbox.dataverse();
    // Rows last changed hours ago, each an hour apart.
    let hours_ago = |h: i64| (chrono::Utc::now() - chrono::Duration::hours(h)).to_rfc3339();
    let mut ann = serde_json::json!({"name": "Ann Buyer Ltd", "accountnumber": "ERP-1", "emailaddress1": "ann@buyer.example", "modifiedon": hours_ago(9)});
    let ann_id = api.upsert_record(&d.org, "accounts", ann.clone());
    for i in 2..=5 {
        api.upsert_record(
            &d.org,
            "accounts",
            serde_json::json!({"name": format!("Buyer {i}"), "emailaddress1": format!("b{i}@buyer.example"), "modifiedon": hours_ago(10 - i)}),
        );
    }
    api.upsert_record(
        &d.org,
        "accounts",
        serde_json::json!({"name": "No Email Ltd", "modifiedon": hours_ago(8)}),
    );
    api.upsert_record(
        &d.org,
        "products",
        serde_json::json!({"name": "Widget", "productnumber": "X-1", "price": 9.5, "statecode": 0, "modifiedon": hours_ago(3)}),
    );
    // Pages of two rows: the accounts come in three pages through nextLink.
    let integration = d.integration(
        tenant,
        "customers,products",
        "import",
        serde_json::json!({"page_size": 2}),
    );
    let _w = d.env.worker(1);
    let r = d.sync(integration).await;
    assert_eq!(
        (r.status, r.records_synced, r.records_failed),
        (RunStatus::Partial, 6, 1),
        "the account without an e-mail is logged: {r:?}"
    );
    let first = d.stats();
    assert!(first.queries >= 4, "paged through nextLink: {first:?}");
    assert_eq!(first.rows_returned, 7);
    let pool = d.env.db.store.pool();
    let price: rust_decimal::Decimal = sqlx::query_scalar(
        "SELECT price FROM platform.products WHERE tenant_id = $1 AND sku = 'X-1'",
    )
    .bind(tenant)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(price.to_string(), "9.5000");

    // Ann's phone changes in Dynamics: the next run asks only for rows modified since the
    // cursor (the newest row seen, less the worker's overlap), so it reads Ann and the newest
    // of the others again, not the rest.
    ann.as_object_mut().unwrap().remove("modifiedon");
    ann["accountid"] = serde_json::json!(ann_id);
    ann["telephone1"] = serde_json::json!("+44 20 1234");
    api.upsert_record(&d.org, "accounts", ann);
    let r = d.sync(integration).await;
    assert_eq!(r.records_synced, 1, "only the changed account: {r:?}");
    let second = d.stats();
    assert_eq!(
        second.rows_returned - first.rows_returned,
        3,
        "Ann, the newest other account and the product: {second:?}"
    );
    let phone: Option<String> = sqlx::query_scalar(
        "SELECT phone FROM platform.customers WHERE tenant_id = $1 AND email = 'ann@buyer.example'",
    )
    .bind(tenant)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(phone.as_deref(), Some("+44 20 1234"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamics_an_access_token_expiring_mid_sync_is_renewed() {
    let d = Dv::new("dvtok", |_| {}).await;
    let seeded = d.seed(1, 30, 0).await;
    // Batches of 5: the token dies between two of them.
    let integration = d.integration(
        seeded.tenant_id,
        "customers",
        "export",
        serde_json::json!({"batch_size": 5}),
    );
    // Every call is slow, and the tokens die while the sync runs.
    d.env.sandbox.dataverse().inject(
        &d.org,
        Fault::Latency {
            ms: 150,
            times: 1000,
            method: Some("PATCH".into()),
            path_contains: None,
        },
    );
    let sim = d.env.sandbox.dataverse().clone();
    let org = d.org.clone();
    let expirer = tokio::spawn(async move {
        let mut expired = 0;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            expired = sim.expire_access_tokens(&org);
            if expired > 0 {
                break;
            }
        }
        expired
    });
    let _w = d.env.worker(1);
    let r = d.sync(integration).await;
    assert!(expirer.await.unwrap() > 0, "no token was ever live");
    assert_eq!(
        (r.status, r.records_synced),
        (RunStatus::Succeeded, 30),
        "{r:?} {:?}",
        d.failures(integration).await
    );
    let stats = d.stats();
    assert!(stats.expired_token_calls >= 1, "{stats:?}");
    assert!(stats.tokens_issued >= 2, "{stats:?}");
    assert_creates(&stats, &[("accounts", 30)]);
    d.assert_created_once();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamics_a_create_accepted_but_never_answered_is_not_created_twice() {
    let d = Dv::new("dvdrop", |_| {}).await;
    let (_, integration) = d
        .seeded_export((6, 1, 0), "products", serde_json::json!({}))
        .await;
    // Dataverse makes the product and every answer is lost, the in-call retries' too: the
    // job fails, comes back, and its upsert by productnumber finds the row.
    d.env.sandbox.dataverse().inject(
        &d.org,
        Fault::DropResponse {
            times: 4,
            method: Some("PATCH".into()),
            path_contains: Some("SKU-00001".into()),
        },
    );
    let _w = d.env.worker(1);
    d.sync_succeeds(integration).await;
    let stats = d.stats();
    assert_creates(&stats, &[("products", 6)]);
    assert_records(&stats, &[("products", 6)]);
    assert!(
        stats.updates.get("products").copied().unwrap_or(0) >= 1,
        "the repeated upserts found the row: {stats:?}"
    );
    d.assert_created_once();
    assert_eq!(d.mapped(integration).await, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamics_429s_are_honoured_and_the_sync_completes() {
    // Dataverse allows 4 requests per (compressed) window of one second; the integration
    // keeps the published limits and learns from the 429s. One request in flight at a time,
    // so no request is already on the wire when a 429 arrives.
    let d = Dv::new("dv429", |c| {
        c.limits = DataverseLimits {
            requests: Some(4),
            concurrent: Some(52),
            window_ms: 1_000,
        };
    })
    .await;
    let seeded = d.seed(16, 1, 0).await;
    let integration = d.integration(
        seeded.tenant_id,
        "products",
        "export",
        // Batches of 2: enough requests to meet the limit.
        serde_json::json!({"rate_limit": {"concurrency": 1}, "batch_size": 2}),
    );
    // Whether the natural limit is reached depends on how fast this machine runs the
    // pipeline, so the first $batch is also throttled on purpose: the test always sees a 429
    // with Retry-After, and must not call again before it expires.
    d.env.sandbox.dataverse().inject(
        &d.org,
        Fault::Status {
            status: 429,
            retry_after: Some(1),
            times: 1,
            method: Some("POST".into()),
            path_contains: Some("$batch".into()),
        },
    );
    let _w = d.env.worker(1);
    d.sync_succeeds(integration).await;
    let stats = d.stats();
    assert_limits_honoured(&stats, Some(4));
    assert_creates(&stats, &[("products", 16)]);
    d.assert_created_once();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamics_a_refused_account_is_logged_and_the_others_are_synced() {
    let d = Dv::new("dvrej", |_| {}).await;
    let (seeded, integration) = d
        .seeded_export((1, 6, 0), "customers", serde_json::json!({}))
        .await;
    d.give_one_customer_too_long_a_phone(seeded.tenant_id).await;
    let _w = d.env.worker(1);
    d.sync_ends(integration, RunStatus::Partial, 5, 1).await;
    let errors = d.failures(integration).await;
    assert!(errors[0].contains("0x80044331"), "{errors:?}");
    assert_creates(&d.stats(), &[("accounts", 5)]);
    d.assert_created_once();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamics_connection_test_calls_whoami_without_leaking_the_secret() {
    let d = Dv::new("dvtest", |_| {}).await;
    let tenant = d.env.db.tenant("Acme").await;
    let integration = d.integration(tenant, "customers", "export", serde_json::json!({}));
    let v = d.test_connection(integration, &[SECRET]);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("Dynamics 365 environment"),
        "{v}"
    );
    assert_eq!(d.stats().tokens_issued, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamics_orders_and_invoices_are_exported_with_their_lines_once_even_when_line_answers_are_lost()
 {
    let d = Dv::new("dvord", |_| {}).await;
    // Twenty orders, two of them invoiced.
    let seeded = d.seed(4, 3, 20).await;
    assert_eq!(seeded.invoices, 2);
    let integration = d.integration(
        seeded.tenant_id,
        "customers,products,orders,invoices",
        "export",
        serde_json::json!({}),
    );
    // Dataverse makes the lines but the answers to the first ones are lost: the orders fail,
    // come back, upsert the same sales order and find the lines already there.
    d.env.sandbox.dataverse().inject(
        &d.org,
        Fault::DropResponse {
            times: 3,
            method: Some("POST".into()),
            path_contains: Some("salesorderdetails".into()),
        },
    );
    let _w = d.env.worker(1);
    d.sync_succeeds(integration).await;
    let stats = d.stats();
    assert_creates(&stats, &[("salesorders", 20), ("invoices", 2)]);
    assert_records(&stats, &[("invoicedetails", 2)]);
    d.assert_created_once();
    let pool = d.env.db.store.pool();
    let items: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM platform.order_items i JOIN platform.orders o ON o.id = i.order_id WHERE o.tenant_id = $1",
    )
    .bind(seeded.tenant_id)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        stats.records.get("salesorderdetails").copied(),
        Some(u64::try_from(items).unwrap()),
        "one Dataverse line per order line: {stats:?}"
    );
    // Every sales order points at the account its customer was mapped to, and each line at
    // a product.
    let api = d.env.sandbox.dataverse();
    let accounts = api.records(&d.org, "accounts");
    let products = api.records(&d.org, "products");
    for order in api.records(&d.org, "salesorders") {
        assert!(
            accounts
                .iter()
                .any(|a| a["accountid"] == order["_customerid_value"]),
            "{order}"
        );
    }
    for invoice in api.records(&d.org, "invoices") {
        assert!(
            accounts
                .iter()
                .any(|a| a["accountid"] == invoice["_customerid_value"]),
            "{invoice}"
        );
    }
    for line in api.records(&d.org, "salesorderdetails") {
        assert!(
            products
                .iter()
                .any(|p| p["productid"] == line["_productid_value"]),
            "{line}"
        );
    }

    // An order gains a line: the same sales order gets one more line, nothing is duplicated.
    sqlx::query(
        "INSERT INTO platform.order_items (order_id, product_id, quantity, unit_price)
         SELECT o.id, (SELECT min(id) FROM platform.products WHERE tenant_id = $1), 3, 7.5
           FROM platform.orders o WHERE o.tenant_id = $1 ORDER BY o.id LIMIT 1",
    )
    .bind(seeded.tenant_id)
    .execute(pool)
    .await
    .unwrap();
    d.sync_ends(integration, RunStatus::Succeeded, 1, 0).await;
    let stats = d.stats();
    assert_creates(&stats, &[("salesorders", 20)]);
    assert_eq!(
        stats.records.get("salesorderdetails").copied(),
        Some(u64::try_from(items).unwrap() + 1),
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamics_customers_and_products_go_in_batches_and_a_refused_one_fails_alone() {
    let d = Dv::new("dvbatch", |_| {}).await;
    let (seeded, integration) = d
        .seeded_export(
            (40, 60, 0),
            "customers,products",
            serde_json::json!({"batch_size": 25}),
        )
        .await;
    // This account is refused in its batch.
    d.give_one_customer_too_long_a_phone(seeded.tenant_id).await;
    let _w = d.env.worker(2);
    d.sync_ends(integration, RunStatus::Partial, 99, 1).await;
    let errors = d.failures(integration).await;
    assert!(errors[0].contains("0x80044331"), "{errors:?}");
    let stats = d.stats();
    assert_creates(&stats, &[("accounts", 59), ("products", 40)]);
    // 100 records in $batch requests of 25: a handful of requests, not one per record.
    assert!(
        stats.requests <= 8,
        "expected about 5 $batch requests for 100 records: {stats:?}"
    );
    d.assert_created_once();
    assert_eq!(d.mapped(integration).await, 99);
}
