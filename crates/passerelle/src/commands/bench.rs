//! `passerelle bench`: the performance figures of `docs/performance.md`, measured against the
//! real binary, Postgres, RabbitMQ and the in-process sandbox. Build with `--release`.
//!
//! 1. worker throughput: records/s for one worker exporting orders to the zero-latency
//!    custom-API simulator;
//! 2. manual-sync latency: from the `sync` call (run row + publish) to the ERP's first write,
//!    p50 and p95 over an idle fleet;
//! 3. idle worker memory (resident set);
//! 4. scheduler: due integrations enqueued per second (100,000 by default).

use super::demo::sibling_database_url;
use super::fleet::{DEMO_KEY_ID, LocalFleet};
use crate::cli::{BenchArgs, OutputFormat};
use crate::{app, output, service};
use anyhow::Context as _;
use passerelle_core::IntegrationStatus;
use passerelle_core::config::Settings;
use passerelle_core::vault::generate_key_base64;
use passerelle_sandbox::Sandbox;
use passerelle_sandbox::custom_api::AccountConfig;
use secrecy::{ExposeSecret, SecretString};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Debug, Default, serde::Serialize)]
struct Figures {
    orders: i64,
    worker_records_per_sec: f64,
    worker_run_secs: f64,
    sync_to_first_call_p50_ms: f64,
    sync_to_first_call_p95_ms: f64,
    latency_samples: usize,
    idle_worker_rss_mb: Option<f64>,
    scheduler_integrations: i64,
    scheduler_enqueue_secs: f64,
    scheduler_per_sec: f64,
    rate_limit_per_sec: u32,
    rate_limited_records: i64,
    rate_limited_records_per_sec: f64,
    rate_limit_share_of_ceiling: f64,
    rate_limited_429s: u64,
    rate_limited_max_in_window: u64,
    /// Each ERP simulator under its published (or self-imposed) limit, time-compressed.
    erp_limits: Vec<LimitedRun>,
}

#[derive(Debug, Default, serde::Serialize)]
struct LimitedRun {
    erp: String,
    records: i64,
    records_per_sec: f64,
    ceiling_per_sec: f64,
    share_of_ceiling: f64,
    requests: u64,
    answered_429: u64,
    max_in_window: u64,
}

impl LimitedRun {
    fn new(
        erp: &str,
        run: &passerelle_store::SyncRun,
        ceiling_per_sec: f64,
        requests: u64,
        answered_429: u64,
        max_in_window: u64,
    ) -> Self {
        let secs = match (run.started_at, run.finished_at) {
            (Some(s), Some(f)) => (f - s).num_microseconds().unwrap_or(0) as f64 / 1e6,
            _ => 0.0,
        };
        let records_per_sec = f64::from(run.records_synced) / secs.max(1e-9);
        Self {
            erp: erp.to_owned(),
            records: i64::from(run.records_synced),
            records_per_sec,
            ceiling_per_sec,
            share_of_ceiling: records_per_sec / ceiling_per_sec,
            requests,
            answered_429,
            max_in_window,
        }
    }
}

/// Creates, activates and syncs an integration of `kind`, returning the finished run.
#[allow(clippy::too_many_arguments)]
async fn limited_run(
    store: &passerelle_store::Store,
    vault: &passerelle_core::vault::Vault,
    ctx: &passerelle_connectors::ConnectorContext,
    publisher: &passerelle_queue::Publisher,
    tenant: i64,
    kind: &str,
    settings: serde_json::Value,
    credentials: serde_json::Value,
) -> anyhow::Result<passerelle_store::SyncRun> {
    let integration = service::create(
        store,
        Some(vault),
        ctx,
        tenant,
        &format!("bench {kind}"),
        kind,
        &service::FieldsInput {
            entities: Some(vec!["products".into()]),
            settings: Some(settings),
            credentials: Some(credentials),
            ..Default::default()
        },
    )
    .await?;
    service::set_status(store, integration.id, IntegrationStatus::Active).await?;
    let run = service::trigger_sync(store, publisher, integration.id, &[]).await?;
    let run = wait(store, run.id, Duration::from_secs(3600)).await?;
    anyhow::ensure!(
        run.status == passerelle_core::RunStatus::Succeeded,
        "the {kind} run did not succeed: {run:?}"
    );
    Ok(run)
}

pub async fn run(
    mut settings: Settings,
    args: BenchArgs,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this is a debug build; figures are only meaningful from `cargo run --release -p passerelle -- bench`"
        );
    }
    let db_url = sibling_database_url(settings.database.url.expose_secret(), "bench")?;
    settings.database.url = SecretString::from(db_url.clone());
    settings.amqp.prefix = format!("{}-bench", settings.amqp.prefix);
    settings.http.allow_private_networks = true;
    let key = generate_key_base64();
    settings.vault.active_key = DEMO_KEY_ID.into();
    settings.vault.keys.clear();
    settings
        .vault
        .keys
        .insert(DEMO_KEY_ID.into(), SecretString::from(key.clone()));
    let vault = app::vault(&settings)?;

    passerelle_store::drop_database(&db_url).await?;
    passerelle_store::ensure_database(&db_url).await?;
    let store = app::store(&settings).await?;
    passerelle_store::migrate(store.pool()).await?;
    let broker = app::broker(&settings).await?;
    broker.delete_topology().await?;
    broker.close().await;
    let broker = app::broker(&settings).await?;
    let publisher = broker.publisher();
    let sandbox = Sandbox::start(0).await?;
    let ctx = app::connector_context(&settings);
    let mut figures = Figures::default();

    // 1. Throughput of one worker.
    eprintln!("seeding {} orders…", args.orders);
    let big = store
        .seed_tenant("Bench throughput", 500, 500, i64::from(args.orders))
        .await?;
    let mut fleet = LocalFleet::new(&settings, &db_url, Some(key.clone()), "passerelle-bench")?;
    fleet.spawn("worker", &["worker", "--concurrency", "1"])?;
    let throughput_key = "bench-throughput";
    sandbox
        .custom_api()
        .add_account(AccountConfig::new(throughput_key));
    let integration = create(
        &store,
        &vault,
        &ctx,
        &sandbox,
        big.tenant_id,
        throughput_key,
        32,
    )
    .await?;
    eprintln!("exporting {} orders with one worker…", args.orders);
    let run = service::trigger_sync(&store, &publisher, integration, &["orders".into()]).await?;
    let run = wait(&store, run.id, Duration::from_secs(1800)).await?;
    anyhow::ensure!(
        run.records_synced == i32::try_from(args.orders).unwrap_or(i32::MAX),
        "the throughput run synced {} of {} orders: {run:?}",
        run.records_synced,
        args.orders
    );
    let secs = match (run.started_at, run.finished_at) {
        (Some(s), Some(f)) => (f - s).num_microseconds().unwrap_or(0) as f64 / 1e6,
        _ => 0.0,
    };
    figures.orders = i64::from(args.orders);
    figures.worker_run_secs = secs;
    figures.worker_records_per_sec = f64::from(run.records_synced) / secs.max(1e-9);

    // 2. Latency from `sync` to the first ERP call, on an idle fleet.
    let small = store.seed_tenant("Bench latency", 5, 5, 1).await?;
    let latency_key = "bench-latency";
    sandbox
        .custom_api()
        .add_account(AccountConfig::new(latency_key));
    let integration = create(
        &store,
        &vault,
        &ctx,
        &sandbox,
        small.tenant_id,
        latency_key,
        8,
    )
    .await?;
    let first = service::trigger_sync(&store, &publisher, integration, &["orders".into()]).await?;
    wait(&store, first.id, Duration::from_secs(60)).await?;
    eprintln!(
        "measuring sync-to-first-ERP-call latency over {} runs…",
        args.samples
    );
    let mut samples = Vec::with_capacity(args.samples);
    for n in 0..args.samples {
        tokio::time::sleep(Duration::from_millis(200)).await;
        sqlx::query(
            "WITH o AS (INSERT INTO platform.orders (tenant_id, customer_id, order_number, total_amount)
                        SELECT $1, min(c.id), 'LAT-' || $2, 10 FROM platform.customers c WHERE c.tenant_id = $1 RETURNING id)
             INSERT INTO platform.order_items (order_id, product_id, quantity, unit_price)
             SELECT o.id, (SELECT min(id) FROM platform.products WHERE tenant_id = $1), 1, 10 FROM o",
        )
        .bind(small.tenant_id)
        .bind(n.to_string())
        .execute(store.pool())
        .await?;
        let before = creates(&sandbox, latency_key);
        let t0 = Instant::now();
        let run =
            service::trigger_sync(&store, &publisher, integration, &["orders".into()]).await?;
        loop {
            if creates(&sandbox, latency_key) > before {
                samples.push(t0.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(30),
                "no ERP call within 30 s of sync"
            );
            tokio::time::sleep(Duration::from_micros(250)).await;
        }
        wait(&store, run.id, Duration::from_secs(60)).await?;
    }
    samples.sort_by(f64::total_cmp);
    figures.latency_samples = samples.len();
    figures.sync_to_first_call_p50_ms = percentile(&samples, 0.5);
    figures.sync_to_first_call_p95_ms = percentile(&samples, 0.95);

    // 3. Under an ERP rate limit: the simulator enforces `rate_limit` requests per second and
    //    the integration declares the same limit; the custom API has no batch endpoint, so the
    //    ceiling is the limit itself.
    eprintln!(
        "exporting {} orders under a limit of {}/s…",
        args.rate_limited_orders, args.rate_limit
    );
    let limited = store
        .seed_tenant("Bench rate limit", 20, 20, args.rate_limited_orders)
        .await?;
    let limited_key = "bench-limited";
    let mut account = AccountConfig::new(limited_key);
    account.requests_per_second = Some(args.rate_limit);
    sandbox.custom_api().add_account(account);
    let integration = create(
        &store,
        &vault,
        &ctx,
        &sandbox,
        limited.tenant_id,
        limited_key,
        8,
    )
    .await?;
    service::update(
        &store,
        None,
        &ctx,
        integration,
        None,
        &service::FieldsInput {
            settings: Some(serde_json::json!({"api_url": sandbox.custom_api_url(), "concurrency": 8, "requests_per_second": args.rate_limit})),
            ..Default::default()
        },
    )
    .await?;
    let run = service::trigger_sync(&store, &publisher, integration, &["orders".into()]).await?;
    let run = wait(&store, run.id, Duration::from_secs(3600)).await?;
    let secs = match (run.started_at, run.finished_at) {
        (Some(s), Some(f)) => (f - s).num_microseconds().unwrap_or(0) as f64 / 1e6,
        _ => 0.0,
    };
    let stats = sandbox.custom_api().stats(limited_key).unwrap_or_default();
    figures.rate_limit_per_sec = args.rate_limit;
    figures.rate_limited_records = i64::from(run.records_synced);
    figures.rate_limited_records_per_sec = f64::from(run.records_synced) / secs.max(1e-9);
    figures.rate_limit_share_of_ceiling =
        figures.rate_limited_records_per_sec / f64::from(args.rate_limit.max(1));
    figures.rate_limited_429s = stats.rate_limited;
    figures.rate_limited_max_in_window = stats.max_requests_in_window;

    // 3b. Each ERP simulator under its limit, time-compressed tenfold where the limit is per
    //     minute (a "minute" of 6 s). Products only, so every record is one element.
    eprintln!(
        "exporting {} products to each ERP simulator under its limit…",
        args.erp_products
    );
    // Xero: 60 calls a minute per tenant, 50 records a batch → 60 × 50 / 6 s = 500 records/s.
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
    sandbox.xero().add_app(app);
    let seed = store
        .seed_tenant("Bench Xero", args.erp_products, 1, 0)
        .await?;
    let run = limited_run(
        &store, &vault, &ctx, &publisher, seed.tenant_id, "xero",
        serde_json::json!({
            "tenant_id": xero_tenant,
            "api_url": sandbox.xero_url(),
            "token_url": format!("{}/identity/connect/token", sandbox.xero_url()),
            "batch_size": 50,
            "rate_limit": {"requests": 60, "per_secs": 6},
        }),
        serde_json::json!({"client_id": "bench-client", "client_secret": "bench-secret-0001", "refresh_token": "bench-refresh-token-0001"}),
    )
    .await?;
    let stats = sandbox.xero().stats(&xero_tenant).unwrap_or_default();
    figures.erp_limits.push(LimitedRun::new(
        "Xero",
        &run,
        60.0 / 6.0 * 50.0,
        stats.requests,
        stats.rate_limited,
        stats.max_requests_in_window,
    ));

    // QuickBooks: 40 batch requests a minute per realm (the binding limit), 30 records each →
    // 40 × 30 / 6 s = 200 records/s.
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
    sandbox.quickbooks().add_app(app);
    let seed = store
        .seed_tenant("Bench QuickBooks", args.erp_products, 1, 0)
        .await?;
    let base = sandbox.quickbooks_url();
    let run = limited_run(
        &store, &vault, &ctx, &publisher, seed.tenant_id, "quickbooks",
        serde_json::json!({
            "realm_id": realm,
            "api_url": base,
            "token_url": format!("{base}/oauth2/v1/tokens/bearer"),
            "income_account_id": "79",
            "batch_size": 30,
            "rate_limit": {"requests": 500, "per_secs": 6},
            "batch_rate_limit": {"requests": 40, "per_secs": 6},
        }),
        serde_json::json!({"client_id": "bench-qb", "client_secret": "bench-qb-secret-1", "refresh_token": "bench-qb-refresh-0001"}),
    )
    .await?;
    let stats = sandbox.quickbooks().stats(&realm).unwrap_or_default();
    figures.erp_limits.push(LimitedRun::new(
        "QuickBooks",
        &run,
        40.0 / 6.0 * 30.0,
        stats.requests,
        stats.rate_limited,
        stats.max_requests_in_window,
    ));

    // SAP Business One publishes no limit; the server enforces (and we declare) 20 requests a
    // second, one record each → 20 records/s.
    let mut company = passerelle_sandbox::sap_b1::SapB1CompanyConfig::new(
        "BENCH_DB",
        "manager",
        "bench-b1-password",
    );
    company.limits.requests_per_second = Some(20);
    sandbox.sap_b1().add_company(company);
    let seed = store
        .seed_tenant("Bench SAP", args.erp_products / 10, 1, 0)
        .await?;
    let run = limited_run(
        &store, &vault, &ctx, &publisher, seed.tenant_id, "sap_b1",
        serde_json::json!({"server": sandbox.sap_b1_url(), "company_db": "BENCH_DB", "invoice_account_code": "4000", "rate_limit": {"requests": 20, "per_secs": 1}}),
        serde_json::json!({"username": "manager", "password": "bench-b1-password"}),
    )
    .await?;
    let stats = sandbox.sap_b1().stats("BENCH_DB").unwrap_or_default();
    figures.erp_limits.push(LimitedRun::new(
        "SAP Business One",
        &run,
        20.0,
        stats.requests,
        stats.overloaded,
        stats.max_requests_in_window,
    ));

    // Dynamics 365 (Dataverse): its published 6,000 requests per 5 minutes per user (20 a
    // second; not compressed), upserts in $batch requests of 10 → 200 records/s.
    let org = "benchorg".to_owned();
    let env = passerelle_sandbox::dataverse::DataverseEnvConfig::new(
        org.clone(),
        "bench-tenant",
        "bench-dv",
        "bench-dv-secret-1",
    );
    sandbox.dataverse().add_environment(env);
    let (schedule, unit) = sandbox
        .dataverse()
        .default_unit(&org)
        .context("the Dataverse simulator has no default unit")?;
    let price_list = sandbox
        .dataverse()
        .price_list(&org)
        .context("the Dataverse simulator has no price list")?;
    let seed = store
        .seed_tenant("Bench Dynamics", args.erp_products / 3, 1, 0)
        .await?;
    let base = sandbox.dataverse_url();
    let run = limited_run(
        &store,
        &vault,
        &ctx,
        &publisher,
        seed.tenant_id,
        "dynamics_365",
        serde_json::json!({
            "environment_url": format!("{base}/env/{org}"),
            "token_url": format!("{base}/login/bench-tenant/oauth2/v2.0/token"),
            "default_uom_schedule_id": schedule.to_string(),
            "default_uom_id": unit.to_string(),
            "price_list_id": price_list.to_string(),
            "batch_size": 10,
        }),
        serde_json::json!({"client_id": "bench-dv", "client_secret": "bench-dv-secret-1"}),
    )
    .await?;
    let stats = sandbox.dataverse().stats(&org).unwrap_or_default();
    figures.erp_limits.push(LimitedRun::new(
        "Dynamics 365",
        &run,
        6000.0 / 300.0 * 10.0,
        stats.requests,
        stats.rate_limited,
        stats.max_requests_in_window,
    ));

    // 4. Idle worker memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    figures.idle_worker_rss_mb = fleet.pids().first().and_then(|pid| rss_mb(*pid));
    fleet.stop();

    // 5. The scheduler: many due integrations at once (no workers running).
    eprintln!("scheduling {} due integrations…", args.integrations);
    sqlx::query(
        "INSERT INTO integrations (tenant_id, name, type, status, sync_frequency, next_sync_at, settings)
         SELECT $1, 'due ' || g, 'custom_api', 'active', 'hourly', now() - interval '1 minute', '{}'::jsonb
           FROM generate_series(1, $2) g",
    )
    .bind(small.tenant_id)
    .bind(args.integrations)
    .execute(store.pool())
    .await?;
    sqlx::query("VACUUM ANALYZE integrations")
        .execute(store.pool())
        .await?;
    let exe = std::env::current_exe()?;
    let t0 = Instant::now();
    let out = tokio::process::Command::new(exe)
        .args(["--output", "json", "scheduler", "--once"])
        .env("PASSERELLE__DATABASE__URL", &db_url)
        .env("PASSERELLE__AMQP__PREFIX", &settings.amqp.prefix)
        .env("PASSERELLE__SCHEDULER__BATCH_SIZE", "5000")
        .env("PASSERELLE__LOG__FILTER", "warn")
        .output()
        .await
        .context("cannot run the scheduler")?;
    let elapsed = t0.elapsed().as_secs_f64();
    anyhow::ensure!(
        out.status.success(),
        "scheduler failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tick: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let enqueued = tick["enqueued"].as_i64().unwrap_or(0);
    anyhow::ensure!(
        enqueued == args.integrations,
        "the scheduler enqueued {enqueued} of {}",
        args.integrations
    );
    figures.scheduler_integrations = enqueued;
    figures.scheduler_enqueue_secs = elapsed;
    figures.scheduler_per_sec = enqueued as f64 / elapsed.max(1e-9);
    broker.delete_topology().await?;
    broker.close().await;
    sandbox.shutdown().await;

    output::emit(format, &figures, || {
        format!(
            "worker throughput      {:.0} records/s ({} orders in {:.2} s, one worker, zero-latency simulator)\n\
             sync → first ERP call  p50 {:.1} ms, p95 {:.1} ms ({} runs, idle fleet)\n\
             rate-limited export    {:.1} records/s under a {}/s limit = {:.1}% of the ceiling; {} answered 429, at most {} in one window\n\
             idle worker memory     {}\n\
             scheduler              {} due integrations enqueued in {:.2} s ({:.0}/s)\n",
            figures.worker_records_per_sec,
            figures.orders,
            figures.worker_run_secs,
            figures.sync_to_first_call_p50_ms,
            figures.sync_to_first_call_p95_ms,
            figures.latency_samples,
            figures.rate_limited_records_per_sec,
            figures.rate_limit_per_sec,
            figures.rate_limit_share_of_ceiling * 100.0,
            figures.rate_limited_429s,
            figures.rate_limited_max_in_window,
            figures
                .idle_worker_rss_mb
                .map(|m| format!("{m:.1} MB resident"))
                .unwrap_or_else(|| "unknown".into()),
            figures.scheduler_integrations,
            figures.scheduler_enqueue_secs,
            figures.scheduler_per_sec,
        ) + &figures
            .erp_limits
            .iter()
            .map(|r| {
                format!(
                    "{:<22} {:.1} records/s of a {:.0} records/s ceiling = {:.1}% ({} records in {} calls; {} answered 429/503, at most {} in one window)\n",
                    r.erp, r.records_per_sec, r.ceiling_per_sec, r.share_of_ceiling * 100.0, r.records, r.requests, r.answered_429, r.max_in_window
                )
            })
            .collect::<String>()
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn create(
    store: &passerelle_store::Store,
    vault: &passerelle_core::vault::Vault,
    ctx: &passerelle_connectors::ConnectorContext,
    sandbox: &Sandbox,
    tenant: i64,
    api_key: &str,
    concurrency: usize,
) -> anyhow::Result<i64> {
    let integration = service::create(
        store,
        Some(vault),
        ctx,
        tenant,
        "bench",
        "custom_api",
        &service::FieldsInput {
            entities: Some(vec!["orders".into()]),
            settings: Some(serde_json::json!({"api_url": sandbox.custom_api_url(), "concurrency": concurrency})),
            credentials: Some(serde_json::json!({"api_key": api_key})),
            ..Default::default()
        },
    )
    .await?;
    service::set_status(store, integration.id, IntegrationStatus::Active).await?;
    Ok(integration.id)
}

fn creates(sandbox: &Sandbox, key: &str) -> u64 {
    sandbox
        .custom_api()
        .stats(key)
        .and_then(|s| s.creates.get("orders").copied())
        .unwrap_or(0)
}

async fn wait(
    store: &passerelle_store::Store,
    run: uuid::Uuid,
    timeout: Duration,
) -> anyhow::Result<passerelle_store::SyncRun> {
    let t0 = Instant::now();
    loop {
        let r = store.run(run).await?.context("run disappeared")?;
        if r.status.is_terminal() {
            return Ok(r);
        }
        anyhow::ensure!(
            t0.elapsed() < timeout,
            "run {run} did not finish within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
