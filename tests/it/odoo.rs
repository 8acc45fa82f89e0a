//! The Odoo connector end to end: the real worker and queue against the Odoo simulator,
//! over XML-RPC (an Odoo 17 database) and JSON-2 (an Odoo 19 database).

use crate::erp::*;
use crate::support::*;
use passerelle_core::{IntegrationStatus, RunStatus};
use passerelle_sandbox::odoo::{Fault, OdooApiKey, OdooDatabaseConfig, OdooStats};
use rust_decimal::Decimal;

const KEY: &str = "odoo-api-key-0123456789abcdef";

struct Odoo {
    env: Env,
    db: &'static str,
    protocol: &'static str,
}

impl Erp for Odoo {
    type Stats = OdooStats;
    const KIND: &'static str = "odoo";
    const NAME: &'static str = "Odoo";

    fn env(&self) -> &Env {
        &self.env
    }

    fn settings(&self) -> serde_json::Value {
        serde_json::json!({
            "url": self.env.sandbox.odoo_url(),
            "database": self.db,
            "protocol": self.protocol,
            "rate_limit": {"requests": 200, "per_secs": 1},
        })
    }

    fn credentials(&self) -> serde_json::Value {
        serde_json::json!({"username": "bot@acme.example", "api_key": KEY})
    }

    fn stats(&self) -> OdooStats {
        self.env.sandbox.odoo().stats(self.db).unwrap()
    }
}

impl Odoo {
    /// A database of Odoo `version` (17: XML-RPC; 19: JSON-2), set up by `configure`.
    async fn with(
        tag: &str,
        version: u32,
        configure: impl FnOnce(&mut OdooDatabaseConfig),
    ) -> Self {
        let env = Env::new(tag).await;
        let (db, protocol) = if version >= 19 {
            ("acme19", "json2")
        } else {
            ("acme17", "xmlrpc")
        };
        let mut config =
            OdooDatabaseConfig::new(db, version, "bot@acme.example", "unused-password");
        config.api_keys = vec![OdooApiKey {
            key: KEY.into(),
            expires_at: None,
        }];
        configure(&mut config);
        env.sandbox.odoo().try_add_database(config).unwrap();
        Self { env, db, protocol }
    }

    async fn new(tag: &str, version: u32) -> Self {
        Self::with(tag, version, |_| {}).await
    }

    fn records(&self, model: &str) -> Vec<serde_json::Value> {
        self.env.sandbox.odoo().records(self.db, model)
    }

    /// Exports everything, checks every record went in once, in batches, with its links
    /// resolved; then one changed product is written, nothing created again.
    async fn exports_everything_then_writes_a_change(&self) -> OdooStats {
        let seeded = self.seed(25, 8, 30).await;
        let tenant = seeded.tenant_id;
        let integration = self.integration(
            tenant,
            "customers,products,orders,invoices",
            "export",
            serde_json::json!({}),
        );
        let _w = self.env.worker(2);
        self.sync_succeeds(integration).await;
        let stats = self.stats();
        for (model, table) in [
            ("product.product", "products"),
            ("res.partner", "customers"),
            ("sale.order", "orders"),
            ("account.move", "invoices"),
        ] {
            assert_eq!(
                count(&stats.creates, model),
                self.platform_count(table, tenant).await,
                "{model}: {stats:?}"
            );
        }
        assert!(count(&stats.creates, "account.move") > 0, "{stats:?}");
        self.assert_created_once();
        assert!(
            stats.batch_creates > 0 && stats.create_calls < stats.creates.values().sum::<u64>(),
            "creates should go in lists of values: {stats:?}"
        );
        // An order names the partner and products its customer and lines became.
        let partners = self.records("res.partner");
        let products = self.records("product.product");
        let order = &self.records("sale.order")[0];
        let partner = order["partner_id"][0].as_i64().unwrap();
        assert!(partners.iter().any(|p| p["id"] == partner), "{order}");
        let mut refs: Vec<String> = self
            .records("sale.order")
            .iter()
            .map(|o| {
                o["client_order_ref"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        refs.sort();
        let mut numbers: Vec<String> = sqlx::query_scalar(
            "SELECT order_number FROM platform.orders WHERE tenant_id = $1 ORDER BY order_number",
        )
        .bind(tenant)
        .fetch_all(self.env.db.store.pool())
        .await
        .unwrap();
        numbers.sort();
        assert_eq!(
            refs, numbers,
            "each order carries its number as client_order_ref"
        );
        let first_line = order["order_line"][0].clone();
        let line = self
            .records("sale.order.line")
            .into_iter()
            .find(|l| l["id"] == first_line)
            .unwrap_or_else(|| panic!("no line of {order}"));
        let product = line["product_id"][0].as_i64().unwrap();
        assert!(products.iter().any(|p| p["id"] == product), "{line}");
        let invoice = &self.records("account.move")[0];
        assert_eq!(invoice["move_type"], "out_invoice", "{invoice}");
        assert!(
            partners.iter().any(|p| p["id"] == invoice["partner_id"][0]),
            "{invoice}"
        );

        // One product changes: one write, nothing created again.
        self.raise_price("SKU-00001").await;
        self.sync_ends(integration, RunStatus::Succeeded, 1, 0)
            .await;
        let after = self.stats();
        assert_updates(&after, &[("product.product", 1)]);
        assert_eq!(after.creates, stats.creates);
        let price: Decimal = sqlx::query_scalar(
            "SELECT price FROM platform.products WHERE tenant_id = $1 AND sku = 'SKU-00001'",
        )
        .bind(tenant)
        .fetch_one(self.env.db.store.pool())
        .await
        .unwrap();
        let written = self
            .records("product.product")
            .into_iter()
            .find(|p| p["default_code"] == "SKU-00001")
            .unwrap();
        assert_eq!(
            written["list_price"].as_f64().unwrap().to_string(),
            price.normalize().to_string(),
            "{written}"
        );
        after
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odoo_xmlrpc_exports_products_partners_orders_and_invoices_once_then_writes_a_change() {
    let odoo = Odoo::new("odooxml", 17).await;
    let stats = odoo.exports_everything_then_writes_a_change().await;
    assert!(
        stats.xmlrpc_calls > 0 && stats.json2_calls == 0,
        "{stats:?}"
    );
    assert!(
        stats.authentications <= 4,
        "authenticate once per connector, not per call: {stats:?}"
    );
    // Odoo 17 spells a storable product `type` `product`.
    let product = &odoo.records("product.product")[0];
    assert_eq!(product["type"], "product", "{product}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odoo_json2_exports_products_partners_orders_and_invoices_once_then_writes_a_change() {
    let odoo = Odoo::new("odoojson", 19).await;
    let stats = odoo.exports_everything_then_writes_a_change().await;
    assert!(
        stats.json2_calls > 0 && stats.xmlrpc_calls == 0,
        "{stats:?}"
    );
    let product = &odoo.records("product.product")[0];
    assert_eq!(
        (&product["type"], &product["is_storable"]),
        (&serde_json::json!("consu"), &serde_json::json!(true)),
        "{product}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odoo_orders_created_but_unanswered_are_found_by_client_order_ref_not_created_twice() {
    for version in [17, 19] {
        let odoo = Odoo::new(&format!("odoodrop{version}"), version).await;
        let (_, integration) = odoo
            .seeded_export(
                (6, 3, 12),
                "customers,products,orders",
                serde_json::json!({}),
            )
            .await;
        // Odoo creates the orders and the answers are lost, twice.
        odoo.env.sandbox.odoo().inject(
            odoo.db,
            Fault::DropResponse {
                times: 2,
                method: None,
                path_contains: Some("sale.order/create".into()),
            },
        );
        let _w = odoo.env.worker(1);
        odoo.sync_succeeds(integration).await;
        let stats = odoo.stats();
        assert_creates(&stats, &[("sale.order", 12)]);
        assert_records(&stats, &[("sale.order", 12)]);
        odoo.assert_created_once();
        let mapped: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM integration_mappings WHERE integration_id = $1 AND entity_type = 'order'",
        )
        .bind(integration)
        .fetch_one(odoo.env.db.store.pool())
        .await
        .unwrap();
        assert_eq!(mapped, 12, "Odoo {version}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odoo_refused_contacts_are_logged_and_the_rest_of_their_batch_goes_in() {
    let odoo = Odoo::with("odoorej", 17, |db| db.check_vat = true).await;
    let seeded = odoo.seed(2, 6, 0).await;
    sqlx::query("UPDATE platform.customers SET vat_number = 'not a VAT' WHERE id = (SELECT min(id) FROM platform.customers WHERE tenant_id = $1)")
        .bind(seeded.tenant_id)
        .execute(odoo.env.db.store.pool())
        .await
        .unwrap();
    // Another has no name: Odoo's XML-RPC fault for a missing required field.
    sqlx::query("UPDATE platform.customers SET name = '', company_name = NULL WHERE id = (SELECT max(id) FROM platform.customers WHERE tenant_id = $1)")
        .bind(seeded.tenant_id)
        .execute(odoo.env.db.store.pool())
        .await
        .unwrap();
    let integration = odoo.integration(
        seeded.tenant_id,
        "customers",
        "export",
        serde_json::json!({}),
    );
    let _w = odoo.env.worker(1);
    odoo.sync_ends(integration, RunStatus::Partial, 4, 2).await;
    let errors = odoo.failures(integration).await;
    assert!(
        errors.len() == 2
            && errors
                .iter()
                .any(|e| e.contains("does not seem to be valid"))
            && errors
                .iter()
                .any(|e| e.contains("a mandatory field is not set")
                    && e.contains("Field: Name (name)")),
        "{errors:?}"
    );
    assert_creates(&odoo.stats(), &[("res.partner", 4)]);
    odoo.assert_created_once();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odoo_products_contacts_and_stock_are_imported_with_a_cursor() {
    for version in [17, 19] {
        let odoo = Odoo::new(&format!("odooimp{version}"), version).await;
        let tenant = odoo.env.db.tenant("Acme").await;
        let sim = odoo.env.sandbox.odoo();
        let db = odoo.db;
        sim.upsert_record(db, "res.partner", serde_json::json!({"name": "Ann Buyer SARL", "email": "ann@buyer.example", "customer_rank": 1}))
            .unwrap();
        sim.upsert_record(
            db,
            "res.partner",
            serde_json::json!({"name": "No Email SARL", "customer_rank": 1}),
        )
        .unwrap();
        sim.upsert_record(
            db,
            "res.partner",
            serde_json::json!({"name": "A supplier", "email": "s@x.example", "customer_rank": 0}),
        )
        .unwrap();
        let widget = sim
            .upsert_record(
                db,
                "product.product",
                serde_json::json!({"name": "Widget", "default_code": "X-1", "list_price": 9.5}),
            )
            .unwrap();
        sim.set_quant(db, "X-1", "WH/Stock", 7.0).unwrap();
        let integration = odoo.integration(
            tenant,
            "customers,products,inventory",
            "import",
            serde_json::json!({}),
        );
        let _w = odoo.env.worker(1);
        let r = odoo.sync(integration).await;
        assert_eq!(
            (r.status, r.records_synced, r.records_failed),
            (RunStatus::Partial, 3, 1),
            "the contact without an email is logged: {r:?} {:?}",
            odoo.failures(integration).await
        );
        assert_eq!(odoo.stock(tenant).await, "7.0000");
        assert_eq!(
            odoo.customer_emails(tenant).await,
            ["ann@buyer.example"],
            "suppliers are not customers"
        );
        // Nothing changed: nothing is written again.
        let r = odoo.sync(integration).await;
        assert_eq!(r.records_synced, 0, "{r:?}");
        // A product changed at Odoo comes in on the next pass.
        sim.touch(
            db,
            "product.product",
            widget,
            serde_json::json!({"name": "Widget v2", "list_price": 11.0}),
        )
        .unwrap();
        let r = odoo.sync(integration).await;
        assert_eq!(r.records_synced, 1, "{r:?}");
        let name: String = sqlx::query_scalar(
            "SELECT name FROM platform.products WHERE tenant_id = $1 AND sku = 'X-1'",
        )
        .bind(tenant)
        .fetch_one(odoo.env.db.store.pool())
        .await
        .unwrap();
        assert_eq!(name, "Widget v2", "Odoo {version}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odoo_a_throttling_proxy_is_waited_for_and_the_sync_completes() {
    let odoo = Odoo::new("odoo429", 19).await;
    let (_, integration) = odoo
        .seeded_export(
            (60, 1, 0),
            "products",
            serde_json::json!({"rate_limit": {"requests": 200, "per_secs": 1, "concurrency": 1}}),
        )
        .await;
    odoo.env.sandbox.odoo().inject(
        odoo.db,
        Fault::Status {
            status: 429,
            retry_after: Some(1),
            times: 1,
            method: None,
            path_contains: Some("product.product/create".into()),
        },
    );
    let _w = odoo.env.worker(1);
    odoo.sync_succeeds(integration).await;
    let stats = odoo.stats();
    assert_limits_honoured(&stats, None);
    assert_creates(&stats, &[("product.product", 60)]);
    odoo.assert_created_once();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odoo_a_revoked_api_key_fails_the_run_and_flags_the_integration_saying_what_to_do() {
    for version in [17, 19] {
        let odoo = Odoo::new(&format!("odookey{version}"), version).await;
        let (_, integration) = odoo
            .seeded_export((3, 0, 0), "products", serde_json::json!({}))
            .await;
        odoo.env
            .sandbox
            .odoo()
            .revoke_api_key(odoo.db, KEY)
            .unwrap();
        let _w = odoo.env.worker(1);
        let r = odoo.sync(integration).await;
        assert_eq!(r.status, RunStatus::Failed, "{r:?}");
        let i = odoo.env.db.store.integration(integration).await.unwrap();
        assert_eq!(i.status, IntegrationStatus::Error, "Odoo {version}");
        let error = i.last_error.unwrap_or_default();
        assert!(
            error.contains("api_key") || error.contains("credentials were refused"),
            "{error}"
        );
        assert!(!error.contains(KEY), "the key leaked: {error}");
        assert_creates(&odoo.stats(), &[("product.product", 0)]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odoo_the_connection_test_names_the_version_and_hides_the_key() {
    let odoo = Odoo::new("odootest", 17).await;
    let tenant = odoo.env.db.tenant("Acme").await;
    let integration = odoo.integration(tenant, "products", "export", serde_json::json!({}));
    let answer = odoo.test_connection(integration, &[KEY]);
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains("Odoo 17") && m.contains("XML-RPC")),
        "{answer}"
    );
}
