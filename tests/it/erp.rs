//! What the ERP suites (`xero.rs`, `quickbooks.rs`, `sap_b1.rs`, `dynamics.rs`) share: an ERP
//! account in the sandbox behind [`Erp`], its integrations, a sync run to its end, and the
//! checks their scenarios repeat (the run's outcome with the failures it logged, what the ERP
//! counted, limits honoured, what an import wrote to the platform).

use crate::support::*;
use passerelle_core::vault::{Credentials, KeyRing, Vault};
use passerelle_core::{IntegrationId, RunStatus, TenantId};
use passerelle_sandbox::dataverse::DataverseStats;
use passerelle_sandbox::netsuite::NetSuiteStats;
use passerelle_sandbox::odoo::OdooStats;
use passerelle_sandbox::quickbooks::QuickBooksStats;
use passerelle_sandbox::sage::SageStats;
use passerelle_sandbox::sap_b1::SapB1Stats;
use passerelle_sandbox::xero::XeroStats;
use passerelle_store::SyncRun;
use passerelle_store::demo::SeededTenant;
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::time::Duration;

/// How long a run of these suites may take on a loaded machine.
pub const LONG: Duration = Duration::from_secs(120);

/// One ERP account in the sandbox, reached by integrations of one type.
pub trait Erp {
    type Stats: Counters;
    /// The integration type (`--type`) and the integrations' name.
    const KIND: &'static str;
    const NAME: &'static str;

    fn env(&self) -> &Env;
    /// The settings an integration of this account needs; [`Erp::integration`]'s `extra`
    /// is merged over them.
    fn settings(&self) -> serde_json::Value;
    fn credentials(&self) -> serde_json::Value;
    /// The simulator's counters for this account.
    fn stats(&self) -> Self::Stats;

    /// An active integration through the CLI, with `extra` settings over the account's.
    fn integration(
        &self,
        tenant: TenantId,
        entities: &str,
        direction: &str,
        extra: serde_json::Value,
    ) -> IntegrationId {
        let mut settings = self.settings();
        if let (Some(s), Some(e)) = (settings.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        self.env().create_active(
            tenant,
            Self::NAME,
            Self::KIND,
            entities,
            direction,
            &settings,
            &self.credentials(),
        )
    }

    /// A tenant with this many products, customers and orders (some of them invoiced).
    async fn seed(&self, products: i64, customers: i64, orders: i64) -> SeededTenant {
        self.env()
            .db
            .store
            .seed_tenant("Acme", products, customers, orders)
            .await
            .unwrap()
    }

    /// A tenant seeded with `(products, customers, orders)` and an active integration
    /// exporting its `entities` with `extra` settings.
    async fn seeded_export(
        &self,
        (products, customers, orders): (i64, i64, i64),
        entities: &str,
        extra: serde_json::Value,
    ) -> (SeededTenant, IntegrationId) {
        let seeded = self.seed(products, customers, orders).await;
        let integration = self.integration(seeded.tenant_id, entities, "export", extra);
        (seeded, integration)
    }

    /// How many rows of a platform table (`products`, `customers`, `orders`, `invoices`) the
    /// tenant has.
    async fn platform_count(&self, table: &str, tenant: TenantId) -> u64 {
        // The table name comes from the suites, never from input.
        let sql = match table {
            "products" => "SELECT count(*) FROM platform.products WHERE tenant_id = $1",
            "customers" => "SELECT count(*) FROM platform.customers WHERE tenant_id = $1",
            "orders" => "SELECT count(*) FROM platform.orders WHERE tenant_id = $1",
            _ => "SELECT count(*) FROM platform.invoices WHERE tenant_id = $1",
        };
        let n: i64 = sqlx::query_scalar(sql)
            .bind(tenant)
            .fetch_one(self.env().db.store.pool())
            .await
            .unwrap();
        u64::try_from(n).unwrap()
    }

    /// The error messages of the first records the integration failed.
    async fn failures(&self, integration: IntegrationId) -> Vec<String> {
        sqlx::query_scalar("SELECT error_message FROM integration_logs WHERE integration_id = $1 AND status = 'failed' ORDER BY id LIMIT 5")
            .bind(integration)
            .fetch_all(self.env().db.store.pool())
            .await
            .unwrap()
    }

    /// Syncs and waits for the run to end, whatever its outcome.
    async fn sync(&self, integration: IntegrationId) -> SyncRun {
        self.env()
            .wait_run(self.env().sync(integration), LONG)
            .await
    }

    /// Syncs and asserts the run succeeded; the failures it logged show otherwise.
    async fn sync_succeeds(&self, integration: IntegrationId) -> SyncRun {
        let r = self.sync(integration).await;
        assert_eq!(
            r.status,
            RunStatus::Succeeded,
            "{r:?} {:?}",
            self.failures(integration).await
        );
        r
    }

    /// Syncs and asserts the run ended `status` with `synced` and `failed` records.
    async fn sync_ends(
        &self,
        integration: IntegrationId,
        status: RunStatus,
        synced: i32,
        failed: i32,
    ) -> SyncRun {
        let r = self.sync(integration).await;
        assert_eq!(
            (r.status, r.records_synced, r.records_failed),
            (status, synced, failed),
            "{r:?} {:?}",
            self.failures(integration).await
        );
        r
    }

    /// Runs `integrations test` through the CLI: its JSON answer, after checking that it
    /// succeeded and printed none of `secrets`.
    fn test_connection(&self, integration: IntegrationId, secrets: &[&str]) -> serde_json::Value {
        let (out, stdout, stderr) = run(self.env().cmd().args([
            "--output",
            "json",
            "integrations",
            "test",
            &integration.to_string(),
        ]));
        assert!(out.status.success(), "{stdout}{stderr}");
        for secret in secrets {
            assert!(
                !stdout.contains(secret) && !stderr.contains(secret),
                "a secret in the output: {stdout}{stderr}"
            );
        }
        let answer: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(answer["success"].as_bool(), Some(true), "{answer}");
        answer
    }

    /// Activates or deactivates the integration through the CLI.
    fn set_active(&self, integration: IntegrationId, active: bool) {
        let verb = if active { "activate" } else { "deactivate" };
        let (out, _, stderr) =
            run(self
                .env()
                .cmd()
                .args(["integrations", verb, &integration.to_string()]));
        assert!(out.status.success(), "{verb}: {stderr}");
    }

    /// The integration's credentials as stored, opened with the environment's vault key.
    async fn stored_credentials(&self, integration: IntegrationId) -> Credentials {
        let env = self.env();
        let vault =
            Vault::new(KeyRing::from_base64("test1", [("test1", env.vault_key.as_str())]).unwrap());
        env.db
            .store
            .integration(integration)
            .await
            .unwrap()
            .open_credentials(&vault)
            .unwrap()
            .unwrap()
    }

    /// Changes one product's price on the platform, so the next export sends it again.
    async fn raise_price(&self, sku: &str) {
        sqlx::query("UPDATE platform.products SET price = price + 1 WHERE sku = $1")
            .bind(sku)
            .execute(self.env().db.store.pool())
            .await
            .unwrap();
    }

    /// Changes every customer's phone on the platform, so the next export sends them all.
    async fn change_customer_phones(&self) {
        sqlx::query("UPDATE platform.customers SET phone = '+33 9 99 99 99 99'")
            .execute(self.env().db.store.pool())
            .await
            .unwrap();
    }

    /// Gives the tenant's first two customers one company name, which the ERP refuses to
    /// hold twice.
    async fn name_two_customers_alike(&self, tenant: TenantId) {
        sqlx::query("UPDATE platform.customers SET company_name = 'Same Name SARL' WHERE id IN (SELECT id FROM platform.customers WHERE tenant_id = $1 ORDER BY id LIMIT 2)")
            .bind(tenant)
            .execute(self.env().db.store.pool())
            .await
            .unwrap();
    }

    /// ERP ids the integration's mappings hold, each counted once.
    async fn mapped(&self, integration: IntegrationId) -> i64 {
        sqlx::query_scalar(
            "SELECT count(DISTINCT external_id) FROM integration_mappings WHERE integration_id = $1",
        )
        .bind(integration)
        .fetch_one(self.env().db.store.pool())
        .await
        .unwrap()
    }

    /// The tenant's one stock quantity, as an import wrote it.
    async fn stock(&self, tenant: TenantId) -> String {
        let qty: Decimal =
            sqlx::query_scalar("SELECT quantity FROM platform.inventory WHERE tenant_id = $1")
                .bind(tenant)
                .fetch_one(self.env().db.store.pool())
                .await
                .unwrap();
        qty.to_string()
    }

    /// The tenant's customers' e-mail addresses, as an import wrote them.
    async fn customer_emails(&self, tenant: TenantId) -> Vec<String> {
        sqlx::query_scalar("SELECT email FROM platform.customers WHERE tenant_id = $1 ORDER BY id")
            .bind(tenant)
            .fetch_all(self.env().db.store.pool())
            .await
            .unwrap()
    }

    /// The tenant's invoices: number and total.
    async fn invoice_totals(&self, tenant: TenantId) -> Vec<(String, Decimal)> {
        let totals: Vec<(String, Decimal)> = sqlx::query_as(
            "SELECT invoice_number, total_amount FROM platform.invoices WHERE tenant_id = $1",
        )
        .bind(tenant)
        .fetch_all(self.env().db.store.pool())
        .await
        .unwrap();
        assert!(!totals.is_empty(), "the tenant has no invoice");
        totals
    }

    /// Nothing was created twice at the ERP.
    fn assert_created_once(&self) {
        let stats = self.stats();
        assert!(
            stats.duplicates().is_empty(),
            "created twice at {}: {:?} {stats:?}",
            Self::NAME,
            stats.duplicates()
        );
    }
}

/// An OAuth client's credentials, with the refresh token an authorization-code app holds.
pub fn oauth_credentials(
    client_id: &str,
    secret: &str,
    refresh_token: Option<&str>,
) -> serde_json::Value {
    let mut credentials = serde_json::json!({"client_id": client_id, "client_secret": secret});
    if let Some(token) = refresh_token {
        credentials["refresh_token"] = token.into();
    }
    credentials
}

/// What every simulator counts for an account, so a check is written once for all.
pub trait Counters: std::fmt::Debug {
    /// Collection → records created, updated, and held now.
    fn creates(&self) -> &BTreeMap<String, u64>;
    fn updates(&self) -> &BTreeMap<String, u64>;
    fn records(&self) -> &BTreeMap<String, u64>;
    /// What the simulator saw created more than once (business keys held twice, a key or
    /// reference that created twice).
    fn duplicates(&self) -> Vec<String>;
    /// Requests answered "slow down" (429, or 503 where the ERP says so).
    fn rate_limited(&self) -> u64;
    /// Requests sent while told to wait.
    fn violations(&self) -> u64;
    fn max_requests_in_window(&self) -> u64;
}

/// `counts[name]`, 0 when the simulator never counted it.
pub fn count(counts: &BTreeMap<String, u64>, name: &str) -> u64 {
    counts.get(name).copied().unwrap_or(0)
}

fn assert_counted(
    what: &str,
    counts: &BTreeMap<String, u64>,
    expected: &[(&str, u64)],
    stats: &impl Counters,
) {
    for (collection, n) in expected {
        assert_eq!(
            count(counts, collection),
            *n,
            "{what} of {collection}: {stats:?}"
        );
    }
}

/// Asserts the ERP created exactly these numbers of records, by collection.
pub fn assert_creates(stats: &impl Counters, expected: &[(&str, u64)]) {
    assert_counted("creates", stats.creates(), expected, stats);
}

/// Asserts the ERP updated exactly these numbers of records, by collection.
pub fn assert_updates(stats: &impl Counters, expected: &[(&str, u64)]) {
    assert_counted("updates", stats.updates(), expected, stats);
}

/// Asserts the ERP holds exactly these numbers of records, by collection.
pub fn assert_records(stats: &impl Counters, expected: &[(&str, u64)]) {
    assert_counted("records", stats.records(), expected, stats);
}

/// Asserts the account was told to slow down, never called while told to wait, and never
/// got more than `max_in_window` requests through in one window.
pub fn assert_limits_honoured(stats: &impl Counters, max_in_window: Option<u64>) {
    assert!(
        stats.rate_limited() > 0,
        "never told to slow down: {stats:?}"
    );
    assert_eq!(
        stats.violations(),
        0,
        "called again before Retry-After: {stats:?}"
    );
    if let Some(max) = max_in_window {
        assert!(stats.max_requests_in_window() <= max, "{stats:?}");
    }
}

fn held_twice(keys: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    keys.iter()
        .filter(|(_, dups)| !dups.is_empty())
        .map(|(collection, dups)| format!("{collection}: {dups:?}"))
        .collect()
}

fn created_twice(by_key: &BTreeMap<String, u64>) -> Vec<String> {
    by_key
        .iter()
        .filter(|(_, n)| **n != 1)
        .map(|(key, n)| format!("{key} created {n} times"))
        .collect()
}

/// Implements [`Counters`] for a simulator's stats type whose fields carry the usual names;
/// `$duplicates` says what "created twice" means at that ERP, `$rate_limited` which counter
/// holds its "slow down" answers.
macro_rules! counters {
    ($stats:ty, $rate_limited:ident, |$s:ident| $duplicates:expr) => {
        impl Counters for $stats {
            fn creates(&self) -> &BTreeMap<String, u64> {
                &self.creates
            }
            fn updates(&self) -> &BTreeMap<String, u64> {
                &self.updates
            }
            fn records(&self) -> &BTreeMap<String, u64> {
                &self.records
            }
            fn duplicates(&self) -> Vec<String> {
                let $s = self;
                $duplicates
            }
            fn rate_limited(&self) -> u64 {
                self.$rate_limited
            }
            fn violations(&self) -> u64 {
                self.violations
            }
            fn max_requests_in_window(&self) -> u64 {
                self.max_requests_in_window
            }
        }
    };
}

// Xero and QuickBooks replay a repeated key, so a key may create a whole batch: only a
// business key held twice is a duplicate there.
counters!(XeroStats, rate_limited, |s| held_twice(
    &s.duplicate_business_keys
));
counters!(QuickBooksStats, rate_limited, |s| held_twice(
    &s.duplicate_business_keys
));
// SAP B1 answers an overloaded server with 503; each reference creates one document.
counters!(SapB1Stats, overloaded, |s| {
    let mut found = held_twice(&s.duplicate_references);
    found.extend(created_twice(&s.creates_by_reference));
    found
});
// Dataverse creates one row per alternate key.
counters!(DataverseStats, rate_limited, |s| {
    let mut found = held_twice(&s.duplicate_creates);
    found.extend(created_twice(&s.creates_by_key));
    found
});

// Odoo has no idempotency key: each reference creates one record.
counters!(OdooStats, rate_limited, |s| {
    let mut found = held_twice(&s.duplicate_references);
    found.extend(created_twice(&s.creates_by_reference));
    found
});
// NetSuite refuses a second record with an external id; each one creates one record.
counters!(NetSuiteStats, rate_limited, |s| {
    let mut found = held_twice(&s.duplicate_external_ids);
    found.extend(created_twice(&s.creates_by_external_id));
    found
});
// Sage replays a repeated idempotency_id; each reference creates one record.
counters!(SageStats, rate_limited, |s| {
    let mut found = held_twice(&s.duplicate_references);
    found.extend(created_twice(&s.creates_by_reference));
    found
});
