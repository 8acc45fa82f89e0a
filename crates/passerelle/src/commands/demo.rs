//! `passerelle demo`: the whole pipeline on one machine against the built-in sandbox.
//!
//! It migrates a separate demo database (`<database>_demo`), seeds a wholesale tenant, starts
//! the sandbox in this process and a scheduler and two workers as child processes (this same
//! binary), creates, tests and activates two integrations, syncs, shows progress, changes a few
//! orders and syncs again (to show that unchanged records are skipped), then prints a summary.

use super::fleet::{DEMO_KEY_ID, LocalFleet};
use crate::cli::DemoArgs;
use crate::{app, output, service};
use anyhow::Context as _;
use passerelle_core::config::{Settings, redact_url};
use passerelle_core::vault::{Vault, generate_key_base64};
use passerelle_core::{IntegrationStatus, RunStatus};
use passerelle_sandbox::Sandbox;
use passerelle_sandbox::custom_api::AccountConfig;
use passerelle_store::{Store, SyncRun};
use secrecy::{ExposeSecret, SecretString};
use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::time::{Duration, Instant};

pub async fn run(mut settings: Settings, args: DemoArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let db_url = demo_database_url(settings.database.url.expose_secret())?;
    settings.database.url = SecretString::from(db_url.clone());
    settings.amqp.prefix = format!("{}-demo", settings.amqp.prefix);
    settings.http.allow_private_networks = true;

    say(&format!(
        "Passerelle demo — database {}, queues `{}.*`",
        redact_url(&db_url),
        settings.amqp.prefix
    ));

    // The vault: the configured ring, or a throwaway development key.
    let vault_key = if settings.vault.is_configured() {
        say("using the configured vault key ring");
        None
    } else {
        let key = generate_key_base64();
        say(
            "no vault key configured: created a local development key for this demo only (never use it in production; `passerelle vault generate-key` makes a real one)",
        );
        settings.vault.active_key = DEMO_KEY_ID.into();
        settings
            .vault
            .keys
            .insert(DEMO_KEY_ID.into(), SecretString::from(key.clone()));
        Some(key)
    };
    let vault = app::vault(&settings)?;

    // A fresh database and queues, so the summary always describes this run.
    if !args.keep {
        drop_database(&db_url).await?;
    }
    passerelle_store::ensure_database(&db_url).await?;
    let store = app::store(&settings).await?;
    passerelle_store::migrate(store.pool())
        .await
        .context("cannot migrate the demo database")?;
    let broker = app::broker(&settings).await?;
    broker
        .delete_topology()
        .await
        .context("cannot reset the demo queues")?;
    broker.close().await;
    let broker = app::broker(&settings).await?;
    broker.close().await;
    say("migrated the demo database and declared the queues");

    let seeded = store
        .seed_tenant("Grossiste Démo", 300, 200, i64::from(args.orders))
        .await
        .context("cannot seed the demo tenant")?;
    say(&format!(
        "seeded tenant {} with {} products, {} customers, {} orders (2–4 lines each), {} invoices, stock for every product",
        seeded.tenant_id, seeded.products, seeded.customers, seeded.orders, seeded.invoices
    ));

    let sandbox = Sandbox::start(0)
        .await
        .context("cannot start the sandbox")?;
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
    say(&format!(
        "sandbox listening on http://{} (custom API at {})",
        sandbox.addr(),
        sandbox.custom_api_url()
    ));
    // Xero, with the simulator's app and tenant, its limit compressed tenfold (60 calls per
    // 6 s instead of per minute) so the demo does not take minutes.
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

    let mut demo = LocalFleet::new(&settings, &db_url, vault_key, "passerelle-demo")?;
    demo.spawn("scheduler", &["scheduler"])?;
    demo.spawn("worker-1", &["worker", "--concurrency", "4"])?;
    demo.spawn("worker-2", &["worker", "--concurrency", "4"])?;
    say(&format!(
        "started a scheduler and two workers (logs in {})",
        demo.log_dir.display()
    ));

    let result = run_scenario(
        &store,
        &vault,
        &settings,
        &sandbox,
        seeded.tenant_id,
        &orders_key,
        &catalogue_key,
        (&xero_tenant, &xero_refresh),
    )
    .await;
    demo.stop();
    let stats = format!(
        "{}\nAt the Xero sandbox: {}",
        sandbox_totals(&sandbox, &orders_key, &catalogue_key),
        xero_totals(&sandbox, &xero_tenant)
    );
    sandbox.shutdown().await;
    let rows = result?;

    println!();
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|(name, run)| {
            let secs = match (run.started_at, run.finished_at) {
                (Some(s), Some(f)) => format!("{:.2}s", (f - s).num_milliseconds() as f64 / 1000.0),
                _ => "-".into(),
            };
            vec![
                name.clone(),
                run.trigger.to_string(),
                run.status.to_string(),
                run.records_synced.to_string(),
                run.records_skipped.to_string(),
                run.records_failed.to_string(),
                secs,
            ]
        })
        .collect();
    print!(
        "{}",
        output::table(
            &[
                "INTEGRATION",
                "TRIGGER",
                "STATUS",
                "SYNCED",
                "SKIPPED",
                "FAILED",
                "TIME"
            ],
            &table_rows
        )
    );
    println!("\nAt the ERP sandbox: {stats}");
    println!(
        "Demo finished in {:.1}s. Explore it: PASSERELLE__DATABASE__URL={} passerelle integrations list",
        started.elapsed().as_secs_f64(),
        redact_url(&db_url)
    );
    let all_ok = rows
        .iter()
        .all(|(_, r)| matches!(r.status, RunStatus::Succeeded | RunStatus::Partial));
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[allow(clippy::too_many_arguments)]
async fn run_scenario(
    store: &Store,
    vault: &Vault,
    settings: &Settings,
    sandbox: &Sandbox,
    tenant: i64,
    orders_key: &str,
    catalogue_key: &str,
    xero: (&str, &str),
) -> anyhow::Result<Vec<(String, SyncRun)>> {
    let ctx = app::connector_context(settings);
    let orders = service::create(
        store,
        Some(vault),
        &ctx,
        tenant,
        "ERP — orders, invoices, customers",
        "custom_api",
        &service::FieldsInput {
            direction: Some("export".into()),
            frequency: Some("manual".into()),
            entities: Some(vec!["customers".into(), "orders".into(), "invoices".into()]),
            settings: Some(serde_json::json!({"api_url": sandbox.custom_api_url()})),
            credentials: Some(serde_json::json!({"api_key": orders_key})),
        },
    )
    .await?;
    let catalogue = service::create(
        store,
        Some(vault),
        &ctx,
        tenant,
        "ERP — catalogue and stock",
        "custom_api",
        &service::FieldsInput {
            direction: Some("bidirectional".into()),
            frequency: Some("hourly".into()),
            entities: Some(vec!["products".into(), "inventory".into()]),
            settings: Some(
                serde_json::json!({"api_url": sandbox.custom_api_url(), "concurrency": 4}),
            ),
            credentials: Some(serde_json::json!({"api_key": catalogue_key})),
        },
    )
    .await?;
    let xero_integration = service::create(
        store,
        Some(vault),
        &ctx,
        tenant,
        "Xero — contacts, items, quotes",
        "xero",
        &service::FieldsInput {
            direction: Some("export".into()),
            frequency: Some("manual".into()),
            entities: Some(vec!["customers".into(), "products".into(), "orders".into()]),
            settings: Some(serde_json::json!({
                "tenant_id": xero.0,
                "api_url": sandbox.xero_url(),
                "token_url": format!("{}/identity/connect/token", sandbox.xero_url()),
                "rate_limit": {"requests": 60, "per_secs": 6},
            })),
            credentials: Some(serde_json::json!({
                "client_id": "demo-app",
                "client_secret": "demo-app-secret",
                "refresh_token": xero.1,
            })),
        },
    )
    .await?;
    for integration in [&orders, &catalogue, &xero_integration] {
        let (_, test) = service::test(store, vault, &ctx, integration.id).await?;
        match test {
            Ok(t) => say(&format!(
                "integration {} \"{}\": connection OK in {} ms",
                integration.id, integration.name, t.response_time_ms
            )),
            Err(e) => anyhow::bail!(
                "integration {} failed its connection test: {e}",
                integration.id
            ),
        }
        service::set_status(store, integration.id, IntegrationStatus::Active).await?;
    }
    say(
        "activated all three: the scheduler picks up the hourly one, the others are synced manually",
    );

    let (broker, publisher) = crate::worker::connect_publisher(settings).await?;
    let manual = service::trigger_sync(store, &publisher, orders.id, &[]).await?;
    let to_xero = service::trigger_sync(store, &publisher, xero_integration.id, &[]).await?;
    let scheduled = wait_for_scheduled_run(store, catalogue.id).await?;
    let first = watch(
        store,
        &[
            (orders.name.clone(), manual.id),
            (catalogue.name.clone(), scheduled.id),
            (xero_integration.name.clone(), to_xero.id),
        ],
    )
    .await?;

    // Change a few orders, then sync again: only those go out, the rest is skipped.
    let changed = sqlx::query(
        "UPDATE platform.orders SET status = 'shipped' WHERE id IN
           (SELECT id FROM platform.orders WHERE tenant_id = $1 AND status <> 'shipped' ORDER BY id LIMIT 25)",
    )
    .bind(tenant)
    .execute(store.pool())
    .await?
    .rows_affected();
    say(&format!(
        "changed {changed} orders on the platform; syncing again"
    ));
    let again = service::trigger_sync(store, &publisher, orders.id, &[]).await?;
    broker.close().await;
    let second = watch(store, &[(format!("{} (again)", orders.name), again.id)]).await?;
    Ok(first.into_iter().chain(second).collect())
}

async fn wait_for_scheduled_run(store: &Store, integration: i64) -> anyhow::Result<SyncRun> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(run) = store
            .runs_for_integration(integration, 1)
            .await?
            .into_iter()
            .next()
        {
            return Ok(run);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the scheduler did not enqueue integration {integration} within 30 s; see its log"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Shows progress until every run has finished.
async fn watch(
    store: &Store,
    runs: &[(String, uuid::Uuid)],
) -> anyhow::Result<Vec<(String, SyncRun)>> {
    let tty = std::io::stdout().is_terminal();
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut last_print = Instant::now() - Duration::from_secs(10);
    loop {
        let mut current = Vec::with_capacity(runs.len());
        for (name, id) in runs {
            let run = store.run(*id).await?.context("a demo run disappeared")?;
            current.push((name.clone(), run));
        }
        let done = current.iter().all(|(_, r)| r.status.is_terminal());
        if done || tty || last_print.elapsed() >= Duration::from_secs(2) {
            let line = current
                .iter()
                .map(|(name, r)| {
                    format!(
                        "{name}: {} {} synced / {} skipped / {} failed",
                        r.status, r.records_synced, r.records_skipped, r.records_failed
                    )
                })
                .collect::<Vec<_>>()
                .join("  |  ");
            if tty {
                print!("\r\x1b[2K  {line}");
                if done {
                    println!();
                }
            } else {
                println!("  {line}");
            }
            let _ = std::io::stdout().flush();
            last_print = Instant::now();
        }
        if done {
            return Ok(current);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the demo runs did not finish within 10 minutes; see the worker logs"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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

fn say(line: &str) {
    println!("• {line}");
}

/// `<database>_demo` on the configured server.
fn demo_database_url(url: &str) -> anyhow::Result<String> {
    sibling_database_url(url, "demo")
}

/// `<database>_<suffix>` on the configured server.
pub(crate) fn sibling_database_url(url: &str, suffix: &str) -> anyhow::Result<String> {
    let mut parsed = url::Url::parse(url).context("the database URL is not a valid URL")?;
    let name = parsed.path().trim_start_matches('/').to_owned();
    let name = if name.is_empty() {
        "passerelle".to_owned()
    } else {
        name
    };
    parsed.set_path(&format!("/{name}_{suffix}"));
    Ok(parsed.to_string())
}

pub(crate) async fn drop_database(url: &str) -> anyhow::Result<()> {
    use sqlx::{ConnectOptions, Connection};
    let options: sqlx::postgres::PgConnectOptions = url.parse()?;
    let name = options
        .get_database()
        .unwrap_or("passerelle_demo")
        .to_owned();
    let mut admin = options
        .database("postgres")
        .connect()
        .await
        .with_context(|| format!("cannot reach Postgres at {}", redact_url(url)))?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
        name.replace('"', "\"\"")
    )))
    .execute(&mut admin)
    .await?;
    admin.close().await?;
    Ok(())
}
