//! The demo's ERP accounts in the sandbox: who they are, what they hold before the demo
//! starts, and what they received, for the summary.

use super::demo::say;
use anyhow::Context as _;
use passerelle_sandbox::Sandbox;
use passerelle_sandbox::custom_api::AccountConfig;

/// The sandbox, in this process, and the ERP accounts the demo's integrations use.
pub(super) struct DemoErp {
    pub sandbox: Sandbox,
    /// The custom API account of the orders integration (no limit).
    pub orders_key: String,
    /// The custom API account of the catalogue integration, limited to 150 requests/s.
    pub catalogue_key: String,
    pub xero_tenant: String,
    pub xero_refresh_token: String,
    /// The Odoo 17 database whose stock the demo imports, and its API key.
    pub odoo_key: String,
    /// The NetSuite sandbox account's TBA token (consumer key and secret, token id and secret).
    pub netsuite_tba: [String; 4],
}

/// The demo's NetSuite account (a sandbox account id, as NetSuite writes it).
pub(super) const NETSUITE_ACCOUNT: &str = "7654321_SB1";

/// The demo's Odoo database (XML-RPC, Odoo 17, as most installations still are).
pub(super) const ODOO_DB: &str = "demo";
pub(super) const ODOO_USER: &str = "sync-bot@demo.example";
/// Products of the tenant whose stock the demo's Odoo holds.
const ODOO_STOCKED: u32 = 30;

impl DemoErp {
    pub(super) async fn start() -> anyhow::Result<Self> {
        let sandbox = Sandbox::start(0)
            .await
            .context("cannot start the sandbox")?;
        let (orders_key, catalogue_key) = add_custom_api_accounts(&sandbox);
        say(&format!(
            "sandbox listening on http://{} (custom API at {})",
            sandbox.addr(),
            sandbox.custom_api_url()
        ));
        let (xero_tenant, xero_refresh_token) = add_xero_app(&sandbox);
        let odoo_key = add_odoo_database(&sandbox)?;
        let netsuite_tba = add_netsuite_account(&sandbox)?;
        Ok(Self {
            sandbox,
            orders_key,
            catalogue_key,
            xero_tenant,
            xero_refresh_token,
            odoo_key,
            netsuite_tba,
        })
    }

    /// What the ERP simulators received, for the summary.
    pub(super) fn totals(&self) -> String {
        format!(
            "{}\nAt the Xero sandbox: {}\nAt the Odoo sandbox: {}\nAt the NetSuite sandbox: {}",
            sandbox_totals(&self.sandbox, &self.orders_key, &self.catalogue_key),
            xero_totals(&self.sandbox, &self.xero_tenant),
            odoo_totals(&self.sandbox),
            netsuite_totals(&self.sandbox)
        )
    }
}

/// Two custom API accounts (orders; catalogue, rate-limited and already holding some stock).
/// Returns their API keys.
fn add_custom_api_accounts(sandbox: &Sandbox) -> (String, String) {
    let orders_key = format!(
        "demo-orders-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let catalogue_key = format!(
        "demo-catalogue-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    sandbox
        .custom_api()
        .add_account(AccountConfig::new(orders_key.clone()));
    let mut limited = AccountConfig::new(catalogue_key.clone());
    limited.requests_per_second = Some(150);
    sandbox.custom_api().add_account(limited);
    // The ERP already holds stock figures for some of the tenant's products.
    for n in 1..=40 {
        sandbox.custom_api().upsert_record(
            &catalogue_key,
            "inventory",
            serde_json::json!({"sku": format!("SKU-{n:05}"), "warehouse_code": "ERP-WH", "quantity": n * 3}),
        );
    }
    (orders_key, catalogue_key)
}

/// Xero, with the simulator's app and tenant, its limit compressed tenfold (60 calls per 6 s
/// instead of per minute) so the demo does not take minutes. Returns the tenant id and the
/// refresh token.
fn add_xero_app(sandbox: &Sandbox) -> (String, String) {
    let xero_tenant = uuid::Uuid::new_v4().to_string();
    let mut app = passerelle_sandbox::xero::XeroAppConfig::new(
        "demo-app",
        "demo-app-secret",
        xero_tenant.clone(),
    );
    app.refresh_token = Some(format!("demo-refresh-{}", uuid::Uuid::new_v4().simple()));
    app.limits = passerelle_sandbox::xero::XeroLimits {
        per_minute: Some(60),
        minute_window_ms: 6_000,
        ..passerelle_sandbox::xero::XeroLimits::default()
    };
    let xero_refresh = app.refresh_token.clone().unwrap_or_default();
    sandbox.xero().add_app(app);
    (xero_tenant, xero_refresh)
}

/// An Odoo 17 database holding the stock of the tenant's first products in `WH/Stock`, the
/// seed's "import stock from Odoo" case. Returns the sync user's API key.
fn add_odoo_database(sandbox: &Sandbox) -> anyhow::Result<String> {
    let key = format!("demo-odoo-{}", uuid::Uuid::new_v4().simple());
    let config = passerelle_sandbox::odoo::OdooDatabaseConfig::new(ODOO_DB, 17, ODOO_USER, "")
        .with_api_key(key.clone(), None);
    let odoo = sandbox.odoo();
    odoo.try_add_database(config)?;
    for n in 1..=ODOO_STOCKED {
        let sku = format!("SKU-{n:05}");
        odoo.upsert_record(
            ODOO_DB,
            "product.product",
            serde_json::json!({"name": format!("Product {n}"), "default_code": sku, "type": "product"}),
        )?;
        // Whole quantities: the demo's stock is counted in units.
        odoo.set_quant(ODOO_DB, &sku, "WH/Stock", f64::from(n * 5))?;
    }
    Ok(key)
}

/// A NetSuite sandbox account (OneWorld, the base tier's 5 concurrent requests) with one TBA
/// token. Returns its four parts.
fn add_netsuite_account(sandbox: &Sandbox) -> anyhow::Result<[String; 4]> {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let tba = [
        format!("demo-consumer-{}", &suffix[..8]),
        format!("demo-consumer-secret-{suffix}"),
        format!("demo-token-{}", &suffix[8..16]),
        format!("demo-token-secret-{suffix}"),
    ];
    let config = passerelle_sandbox::netsuite::NetSuiteAccountConfig::new(NETSUITE_ACCOUNT)
        .with_tba(&tba[0], &tba[1], &tba[2], &tba[3]);
    sandbox.netsuite().try_add_account(config)?;
    Ok(tba)
}

fn xero_totals(sandbox: &Sandbox, tenant: &str) -> String {
    let mut out = Vec::new();
    {
        if let Some(stats) = sandbox.xero().stats(tenant) {
            let created = stats
                .creates
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(c, n)| format!("{n} {c}"))
                .collect::<Vec<_>>()
                .join(", ");
            out.push(format!(
                "{} calls; created {created}; {} token refreshes; {} answered 429",
                stats.requests, stats.token_refreshes, stats.rate_limited
            ));
        }
    }
    out.join("; ")
}

fn odoo_totals(sandbox: &Sandbox) -> String {
    match sandbox.odoo().stats(ODOO_DB) {
        Ok(stats) => format!(
            "{} XML-RPC calls, {} authentications; {} quants held",
            stats.xmlrpc_calls,
            stats.authentications,
            stats.records.get("stock.quant").copied().unwrap_or(0)
        ),
        Err(e) => format!("unavailable ({e})"),
    }
}

fn netsuite_totals(sandbox: &Sandbox) -> String {
    match sandbox.netsuite().stats(NETSUITE_ACCOUNT) {
        Ok(stats) => {
            let created = stats
                .creates
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(t, n)| format!("{n} {t}"))
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "{} TBA-signed requests; created {created}; {} answered 429 (concurrency limit honoured)",
                stats.tba_requests, stats.rate_limited
            )
        }
        Err(e) => format!("unavailable ({e})"),
    }
}

fn sandbox_totals(sandbox: &Sandbox, a: &str, b: &str) -> String {
    let mut created = std::collections::BTreeMap::<String, u64>::new();
    let (mut requests, mut replays, mut limited) = (0, 0, 0);
    for key in [a, b] {
        if let Some(stats) = sandbox.custom_api().stats(key) {
            for (collection, n) in stats.creates {
                *created.entry(collection).or_default() += n;
            }
            requests += stats.requests;
            replays += stats.replays;
            limited += stats.rate_limited;
        }
    }
    let list = created
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(c, n)| format!("{n} {c}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{requests} requests; created {list}; {replays} idempotent replays; {limited} answered 429 (rate limit honoured)"
    )
}
