//! Each ERP simulator under its published (or self-imposed) limit, time-compressed tenfold
//! where the limit is per minute (a "minute" of 6 s). Products only, so every record is one
//! element.

use super::Bench;
use super::figures::LimitedRun;
use crate::service;
use anyhow::Context as _;
use passerelle_core::{IntegrationStatus, RunStatus};
use passerelle_store::SyncRun;
use std::time::Duration;

/// Exports `products` products to Xero and QuickBooks, a tenth of them to SAP Business One
/// (whose limit is per second), a third to Dynamics 365, half to Odoo, a tenth to NetSuite
/// (its limit is concurrency) and a tenth to Sage.
pub(super) async fn under_their_limits(
    bench: &Bench,
    products: i64,
) -> anyhow::Result<Vec<LimitedRun>> {
    eprintln!("exporting {products} products to each ERP simulator under its limit…");
    Ok(vec![
        xero(bench, products).await?,
        quickbooks(bench, products).await?,
        sap_b1(bench, products / 10).await?,
        dynamics_365(bench, products / 3).await?,
        odoo(bench, products / 2).await?,
        netsuite(bench, products / 10).await?,
        sage(bench, products / 10).await?,
    ])
}

/// An integration of one ERP: its type and what it is configured with.
struct ErpIntegration {
    kind: &'static str,
    settings: serde_json::Value,
    credentials: serde_json::Value,
}

/// Xero: 60 calls a minute per tenant, 50 records a batch → 60 × 50 / 6 s = 500 records/s.
async fn xero(bench: &Bench, products: i64) -> anyhow::Result<LimitedRun> {
    let xero_tenant = uuid::Uuid::new_v4().to_string();
    let mut app = passerelle_sandbox::xero::XeroAppConfig::new(
        "bench-client",
        "bench-secret-0001",
        xero_tenant.clone(),
    );
    app.refresh_token = Some("bench-refresh-token-0001".into());
    app.limits = passerelle_sandbox::xero::XeroLimits {
        per_minute: Some(60),
        minute_window_ms: 6_000,
        ..passerelle_sandbox::xero::XeroLimits::default()
    };
    bench.sandbox.xero().add_app(app);
    let base = bench.sandbox.xero_url();
    let integration = ErpIntegration {
        kind: "xero",
        settings: serde_json::json!({
            "tenant_id": xero_tenant,
            "api_url": base,
            "token_url": format!("{base}/identity/connect/token"),
            "batch_size": 50,
            "rate_limit": {"requests": 60, "per_secs": 6},
        }),
        credentials: serde_json::json!({"client_id": "bench-client", "client_secret": "bench-secret-0001", "refresh_token": "bench-refresh-token-0001"}),
    };
    let run = limited_run(bench, "Bench Xero", products, integration).await?;
    let stats = bench.sandbox.xero().stats(&xero_tenant).unwrap_or_default();
    Ok(LimitedRun::new(
        "Xero",
        &run,
        60.0 / 6.0 * 50.0,
        stats.requests,
        stats.rate_limited,
        stats.max_requests_in_window,
    ))
}

/// QuickBooks: 40 batch requests a minute per realm (the binding limit), 30 records each →
/// 40 × 30 / 6 s = 200 records/s.
async fn quickbooks(bench: &Bench, products: i64) -> anyhow::Result<LimitedRun> {
    let realm = "9130000000001234".to_owned();
    let mut app = passerelle_sandbox::quickbooks::QuickBooksAppConfig::new(
        "bench-qb",
        "bench-qb-secret-1",
        realm.clone(),
    );
    app.refresh_token = Some("bench-qb-refresh-0001".into());
    app.limits = passerelle_sandbox::quickbooks::QuickBooksLimits {
        per_minute: Some(500),
        batch_per_minute: Some(40),
        minute_window_ms: 6_000,
        ..passerelle_sandbox::quickbooks::QuickBooksLimits::default()
    };
    bench.sandbox.quickbooks().add_app(app);
    let base = bench.sandbox.quickbooks_url();
    let integration = ErpIntegration {
        kind: "quickbooks",
        settings: serde_json::json!({
            "realm_id": realm,
            "api_url": base,
            "token_url": format!("{base}/oauth2/v1/tokens/bearer"),
            "income_account_id": "79",
            "batch_size": 30,
            "rate_limit": {"requests": 500, "per_secs": 6},
            "batch_rate_limit": {"requests": 40, "per_secs": 6},
        }),
        credentials: serde_json::json!({"client_id": "bench-qb", "client_secret": "bench-qb-secret-1", "refresh_token": "bench-qb-refresh-0001"}),
    };
    let run = limited_run(bench, "Bench QuickBooks", products, integration).await?;
    let stats = bench.sandbox.quickbooks().stats(&realm).unwrap_or_default();
    Ok(LimitedRun::new(
        "QuickBooks",
        &run,
        40.0 / 6.0 * 30.0,
        stats.requests,
        stats.rate_limited,
        stats.max_requests_in_window,
    ))
}

/// SAP Business One publishes no limit; the server enforces (and we declare) 20 requests a
/// second, one record each → 20 records/s.
async fn sap_b1(bench: &Bench, products: i64) -> anyhow::Result<LimitedRun> {
    let mut company = passerelle_sandbox::sap_b1::SapB1CompanyConfig::new(
        "BENCH_DB",
        "manager",
        "bench-b1-password",
    );
    company.limits.requests_per_second = Some(20);
    bench.sandbox.sap_b1().add_company(company);
    let integration = ErpIntegration {
        kind: "sap_b1",
        settings: serde_json::json!({"server": bench.sandbox.sap_b1_url(), "company_db": "BENCH_DB", "invoice_account_code": "4000", "rate_limit": {"requests": 20, "per_secs": 1}}),
        credentials: serde_json::json!({"username": "manager", "password": "bench-b1-password"}),
    };
    let run = limited_run(bench, "Bench SAP", products, integration).await?;
    let stats = bench.sandbox.sap_b1().stats("BENCH_DB").unwrap_or_default();
    Ok(LimitedRun::new(
        "SAP Business One",
        &run,
        20.0,
        stats.requests,
        stats.overloaded,
        stats.max_requests_in_window,
    ))
}

/// Dynamics 365 (Dataverse): its published 6,000 requests per 5 minutes per user (20 a
/// second; not compressed), upserts in $batch requests of 10 → 200 records/s.
async fn dynamics_365(bench: &Bench, products: i64) -> anyhow::Result<LimitedRun> {
    let org = "benchorg".to_owned();
    let dataverse = bench.sandbox.dataverse();
    dataverse.add_environment(passerelle_sandbox::dataverse::DataverseEnvConfig::new(
        org.clone(),
        "bench-tenant",
        "bench-dv",
        "bench-dv-secret-1",
    ));
    let (schedule, unit) = dataverse
        .default_unit(&org)
        .context("the Dataverse simulator has no default unit")?;
    let price_list = dataverse
        .price_list(&org)
        .context("the Dataverse simulator has no price list")?;
    let base = bench.sandbox.dataverse_url();
    let integration = ErpIntegration {
        kind: "dynamics_365",
        settings: serde_json::json!({
            "environment_url": format!("{base}/env/{org}"),
            "token_url": format!("{base}/login/bench-tenant/oauth2/v2.0/token"),
            "default_uom_schedule_id": schedule.to_string(),
            "default_uom_id": unit.to_string(),
            "price_list_id": price_list.to_string(),
            "batch_size": 10,
        }),
        credentials: serde_json::json!({"client_id": "bench-dv", "client_secret": "bench-dv-secret-1"}),
    };
    let run = limited_run(bench, "Bench Dynamics", products, integration).await?;
    let stats = dataverse.stats(&org).unwrap_or_default();
    Ok(LimitedRun::new(
        "Dynamics 365",
        &run,
        6000.0 / 300.0 * 10.0,
        stats.requests,
        stats.rate_limited,
        stats.max_requests_in_window,
    ))
}

/// Odoo publishes no limit: a throttling proxy allows (and we declare) 10 requests a second;
/// a chunk of 50 goes in one `create` and one `read` back → 10 / 2 × 50 = 250 records/s.
async fn odoo(bench: &Bench, products: i64) -> anyhow::Result<LimitedRun> {
    let mut db = passerelle_sandbox::odoo::OdooDatabaseConfig::new("bench", 17, "bench-bot", "")
        .with_api_key("bench-odoo-key-0001", None);
    db.limits.requests_per_second = Some(10);
    bench.sandbox.odoo().try_add_database(db)?;
    let integration = ErpIntegration {
        kind: "odoo",
        settings: serde_json::json!({"url": bench.sandbox.odoo_url(), "database": "bench", "protocol": "xmlrpc",
            "rate_limit": {"requests": 10, "per_secs": 1}}),
        credentials: serde_json::json!({"username": "bench-bot", "api_key": "bench-odoo-key-0001"}),
    };
    let run = limited_run(bench, "Bench Odoo", products, integration).await?;
    let stats = bench.sandbox.odoo().stats("bench")?;
    Ok(LimitedRun::new(
        "Odoo",
        &run,
        10.0 / 2.0 * 50.0,
        stats.requests,
        stats.rate_limited,
        stats.max_requests_in_window,
    ))
}

/// NetSuite limits concurrency, not a rate: 5 requests at once on the base tier. Each upsert
/// takes 100 ms at the simulator here → 5 / 0.1 s = 50 records/s.
async fn netsuite(bench: &Bench, products: i64) -> anyhow::Result<LimitedRun> {
    let account = "1111111_SB1";
    let sim = bench.sandbox.netsuite();
    let mut config = passerelle_sandbox::netsuite::NetSuiteAccountConfig::new(account).with_tba(
        "bench-ck",
        "bench-cs-0001",
        "bench-tk",
        "bench-ts-0001",
    );
    config.concurrency_limit = 5;
    sim.try_add_account(config)?;
    sim.try_inject(
        account,
        passerelle_sandbox::netsuite::Fault::Latency {
            ms: 100,
            times: u32::try_from(products * 2).unwrap_or(u32::MAX),
            method: Some("PUT".into()),
            path_contains: None,
        },
    )?;
    let integration = ErpIntegration {
        kind: "netsuite",
        settings: serde_json::json!({"account_id": account, "time_zone": "UTC", "api_url": bench.sandbox.netsuite_url(account),
            "concurrency": 5, "rate_limit": {"requests": 1000, "per_secs": 1}}),
        credentials: serde_json::json!({"consumer_key": "bench-ck", "consumer_secret": "bench-cs-0001",
            "token_id": "bench-tk", "token_secret": "bench-ts-0001"}),
    };
    let run = limited_run(bench, "Bench NetSuite", products, integration).await?;
    let stats = sim.stats(account)?;
    Ok(LimitedRun::new(
        "NetSuite",
        &run,
        5.0 / 0.1,
        stats.requests,
        stats.rate_limited,
        stats.max_concurrent_requests,
    ))
}

/// Sage: 200 calls a minute per business (its v3.0 figure), one record each → 200 / 6 s =
/// 33.3 records/s.
async fn sage(bench: &Bench, products: i64) -> anyhow::Result<LimitedRun> {
    use passerelle_sandbox::sage::{
        DEFAULT_PURCHASE_LEDGER_ACCOUNT, DEFAULT_SALES_LEDGER_ACCOUNT, SageAppConfig,
    };
    let business = "5a9e5a9e5a9e5a9e5a9e5a9e5a9e5a9e";
    let mut app = SageAppConfig::new("bench-sage", "bench-sage-secret-1", business);
    app.refresh_token = Some("bench-sage-refresh-0001".into());
    app.limits.per_minute = Some(200);
    app.limits.minute_window_ms = 6_000;
    bench.sandbox.sage().try_add_app(app)?;
    let base = bench.sandbox.sage_url();
    let integration = ErpIntegration {
        kind: "sage",
        settings: serde_json::json!({
            "business_id": business,
            "sales_ledger_account_id": DEFAULT_SALES_LEDGER_ACCOUNT,
            "purchase_ledger_account_id": DEFAULT_PURCHASE_LEDGER_ACCOUNT,
            "api_url": format!("{base}/v3.1"),
            "token_url": format!("{base}/oauth/token"),
            "rate_limit": {"requests": 200, "per_secs": 6},
        }),
        credentials: serde_json::json!({"client_id": "bench-sage", "client_secret": "bench-sage-secret-1", "refresh_token": "bench-sage-refresh-0001"}),
    };
    let run = limited_run(bench, "Bench Sage", products, integration).await?;
    let stats = bench
        .sandbox
        .sage()
        .stats(business)
        .context("the Sage simulator lost the bench business")?;
    Ok(LimitedRun::new(
        "Sage",
        &run,
        200.0 / 6.0,
        stats.requests,
        stats.rate_limited,
        stats.max_requests_in_window,
    ))
}

/// Seeds a tenant `tenant_name` with `products` products, creates, activates and syncs the
/// integration, and returns its finished run.
async fn limited_run(
    bench: &Bench,
    tenant_name: &str,
    products: i64,
    erp: ErpIntegration,
) -> anyhow::Result<SyncRun> {
    let seed = bench.store.seed_tenant(tenant_name, products, 1, 0).await?;
    let kind = erp.kind;
    let integration = service::create(
        &bench.store,
        Some(&bench.vault),
        &bench.ctx,
        seed.tenant_id,
        &format!("bench {kind}"),
        kind,
        &service::FieldsInput {
            entities: Some(vec!["products".into()]),
            settings: Some(erp.settings),
            credentials: Some(erp.credentials),
            ..Default::default()
        },
    )
    .await?
    .integration;
    service::set_status(&bench.store, integration.id, IntegrationStatus::Active).await?;
    let run =
        service::trigger_sync(&bench.store, &bench.publisher, integration.id, &[], false).await?;
    let run = bench.wait(run.id, Duration::from_secs(3600)).await?;
    anyhow::ensure!(
        run.status == RunStatus::Succeeded,
        "the {kind} run did not succeed: {run:?}"
    );
    Ok(run)
}
