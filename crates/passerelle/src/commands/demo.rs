//! `passerelle demo`: the whole pipeline on one machine against the built-in sandbox.
//!
//! It migrates a separate demo database (`<database>_demo`), seeds a wholesale tenant, starts
//! the sandbox in this process and a scheduler and two workers as child processes (this same
//! binary), creates, tests and activates two integrations, syncs, shows progress, changes a few
//! orders and syncs again (to show that unchanged records are skipped), then prints a summary.

use super::demo_api::DemoApi;
use super::demo_erp::{DemoErp, NETSUITE_ACCOUNT, ODOO_DB, ODOO_USER};
use super::fleet::{DEMO_KEY_ID, LocalFleet};
use crate::cli::DemoArgs;
use crate::{app, output, service};
use anyhow::Context as _;
use passerelle_connectors::ConnectorContext;
use passerelle_core::config::{Settings, redact_url};
use passerelle_core::vault::{Vault, generate_key_base64};
use passerelle_core::{IntegrationStatus, RunStatus};
use passerelle_store::demo::SeededTenant;
use passerelle_store::{Integration, Store, SyncRun};
use secrecy::{ExposeSecret, SecretString};
use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Orders the demo changes between its two syncs of the orders integration.
const CHANGED_ORDERS: i64 = 25;

pub async fn run(mut settings: Settings, args: DemoArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let db_url = use_demo_database(&mut settings)?;
    say(&format!(
        "Passerelle demo — database {}, queues `{}.*`",
        redact_url(&db_url),
        settings.amqp.prefix
    ));
    let vault_key = use_vault_key(&mut settings);
    let vault = app::vault(&settings)?;
    let store = reset_database_and_queues(&settings, &db_url, args.keep).await?;
    let seeded = seed(&store, args.orders).await?;
    let api = DemoApi::start(
        &settings,
        &store,
        &vault,
        seeded.tenant_id,
        &args.api_listen,
    )
    .await?;
    say(&format!(
        "admin API on {}/api/v1 (document: {}/api/v1/openapi.json); a viewer token for tenant {}: {}",
        api.base, api.base, seeded.tenant_id, api.token
    ));
    let erp = DemoErp::start().await?;
    let mut fleet = start_fleet(&settings, &db_url, vault_key)?;

    let demo = Demo {
        store: &store,
        vault: &vault,
        settings: &settings,
        ctx: app::connector_context(&settings),
        erp: &erp,
        tenant: seeded.tenant_id,
    };
    let result = demo.run_scenario().await;
    fleet.stop();
    let stats = erp.totals();
    erp.sandbox.shutdown().await;
    let rows = result?;

    print_summary(&rows, &stats, started, &db_url);
    let orders = rows
        .first()
        .map(|(_, run)| run.integration_id)
        .context("the demo made no run")?;
    println!(
        "\nThe admin API, with the demo tenant's viewer token (each call made once by the demo):"
    );
    for line in api.try_examples(orders).await? {
        println!("{line}");
    }
    let all_ok = rows
        .iter()
        .all(|(_, r)| matches!(r.status, RunStatus::Succeeded | RunStatus::Partial));
    if !args.exit && std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
        println!(
            "\nThe API stays up for you to try them; press Ctrl-C to stop (--exit to skip this)."
        );
        super::roles::shutdown_signal().cancelled().await;
    }
    api.stop().await;
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Points `settings` at the demo's own database and queue prefix; returns the database URL.
fn use_demo_database(settings: &mut Settings) -> anyhow::Result<String> {
    let db_url = demo_database_url(settings.database.url.expose_secret())?;
    settings.database.url = SecretString::from(db_url.clone());
    settings.amqp.prefix = format!("{}-demo", settings.amqp.prefix);
    settings.http.allow_private_networks = true;
    Ok(db_url)
}

/// The vault: the configured ring, or a throwaway development key, returned so the fleet's
/// children get it too.
fn use_vault_key(settings: &mut Settings) -> Option<String> {
    if settings.vault.is_configured() {
        say("using the configured vault key ring");
        return None;
    }
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
}

/// A fresh database and queues (unless `keep`), so the summary always describes this run.
async fn reset_database_and_queues(
    settings: &Settings,
    db_url: &str,
    keep: bool,
) -> anyhow::Result<Store> {
    if !keep {
        passerelle_store::drop_database(db_url)
            .await
            .with_context(|| format!("cannot drop the demo database {}", redact_url(db_url)))?;
    }
    passerelle_store::ensure_database(db_url).await?;
    let store = app::store(settings).await?;
    passerelle_store::migrate(store.pool())
        .await
        .context("cannot migrate the demo database")?;
    let broker = app::broker(settings).await?;
    broker
        .delete_topology()
        .await
        .context("cannot reset the demo queues")?;
    broker.close().await;
    // Connecting again declares the topology afresh.
    let broker = app::broker(settings).await?;
    broker.close().await;
    say("migrated the demo database and declared the queues");
    Ok(store)
}

async fn seed(store: &Store, orders: u32) -> anyhow::Result<SeededTenant> {
    let seeded = store
        .seed_tenant("Grossiste Démo", 300, 200, i64::from(orders))
        .await
        .context("cannot seed the demo tenant")?;
    say(&format!(
        "seeded tenant {} with {} products, {} customers, {} orders (2–4 lines each), {} invoices, stock for every product",
        seeded.tenant_id, seeded.products, seeded.customers, seeded.orders, seeded.invoices
    ));
    Ok(seeded)
}

fn start_fleet(
    settings: &Settings,
    db_url: &str,
    vault_key: Option<String>,
) -> anyhow::Result<LocalFleet> {
    let mut fleet = LocalFleet::new(settings, db_url, vault_key, "passerelle-demo")?;
    fleet.spawn("scheduler", &["scheduler"])?;
    fleet.spawn("worker-1", &["worker", "--concurrency", "4"])?;
    fleet.spawn("worker-2", &["worker", "--concurrency", "4"])?;
    say(&format!(
        "started a scheduler and two workers (logs in {})",
        fleet.log_dir.display()
    ));
    Ok(fleet)
}

/// What every step of the scenario works with.
struct Demo<'a> {
    store: &'a Store,
    vault: &'a Vault,
    settings: &'a Settings,
    ctx: ConnectorContext,
    erp: &'a DemoErp,
    tenant: passerelle_core::TenantId,
}

/// The demo's three integrations.
struct DemoIntegrations {
    orders: Integration,
    catalogue: Integration,
    xero: Integration,
    odoo: Integration,
    netsuite: Integration,
}

impl Demo<'_> {
    /// Creates, tests and activates the integrations, syncs them, changes a few orders and
    /// syncs again. Returns every run with the name it is shown under.
    async fn run_scenario(&self) -> anyhow::Result<Vec<(String, SyncRun)>> {
        let integrations = DemoIntegrations {
            orders: self.create_orders_integration().await?,
            catalogue: self.create_catalogue_integration().await?,
            xero: self.create_xero_integration().await?,
            odoo: self.create_odoo_integration().await?,
            netsuite: self.create_netsuite_integration().await?,
        };
        self.test_and_activate(&integrations).await?;
        let (broker, publisher) = crate::worker::connect_publisher(self.settings).await?;
        let first = self.first_syncs(&integrations, &publisher).await?;

        // Change a few orders, then sync again: only those go out, the rest is skipped.
        let orders = &integrations.orders;
        let changed = self.store.ship_orders(self.tenant, CHANGED_ORDERS).await?;
        say(&format!(
            "changed {changed} orders on the platform; syncing again"
        ));
        let again = service::trigger_sync(self.store, &publisher, orders.id, &[], false).await?;
        broker.close().await;
        let second = watch(
            self.store,
            &[(format!("{} (again)", orders.name), again.id)],
        )
        .await?;
        Ok(first.into_iter().chain(second).collect())
    }

    async fn create_orders_integration(&self) -> anyhow::Result<Integration> {
        let fields = service::FieldsInput {
            direction: Some("export".into()),
            frequency: Some("manual".into()),
            entities: Some(vec!["customers".into(), "orders".into(), "invoices".into()]),
            settings: Some(serde_json::json!({"api_url": self.erp.sandbox.custom_api_url()})),
            credentials: Some(serde_json::json!({"api_key": self.erp.orders_key})),
            webhook_url: None,
            conflict_policy: None,
        };
        self.create("ERP — orders, invoices, customers", "custom_api", &fields)
            .await
    }

    async fn create_catalogue_integration(&self) -> anyhow::Result<Integration> {
        let fields = service::FieldsInput {
            direction: Some("bidirectional".into()),
            frequency: Some("hourly".into()),
            entities: Some(vec!["products".into(), "inventory".into()]),
            settings: Some(
                serde_json::json!({"api_url": self.erp.sandbox.custom_api_url(), "concurrency": 4}),
            ),
            credentials: Some(serde_json::json!({"api_key": self.erp.catalogue_key})),
            webhook_url: None,
            conflict_policy: None,
        };
        self.create("ERP — catalogue and stock", "custom_api", &fields)
            .await
    }

    async fn create_xero_integration(&self) -> anyhow::Result<Integration> {
        let xero_url = self.erp.sandbox.xero_url();
        let fields = service::FieldsInput {
            direction: Some("export".into()),
            frequency: Some("manual".into()),
            entities: Some(vec!["customers".into(), "products".into(), "orders".into()]),
            settings: Some(serde_json::json!({
                "tenant_id": self.erp.xero_tenant,
                "api_url": xero_url,
                "token_url": format!("{xero_url}/identity/connect/token"),
                "rate_limit": {"requests": 60, "per_secs": 6},
            })),
            credentials: Some(serde_json::json!({
                "client_id": "demo-app",
                "client_secret": "demo-app-secret",
                "refresh_token": self.erp.xero_refresh_token,
            })),
            webhook_url: None,
            conflict_policy: None,
        };
        self.create("Xero — contacts, items, quotes", "xero", &fields)
            .await
    }

    async fn create_odoo_integration(&self) -> anyhow::Result<Integration> {
        let fields = service::FieldsInput {
            direction: Some("import".into()),
            frequency: Some("manual".into()),
            entities: Some(vec!["inventory".into()]),
            settings: Some(serde_json::json!({
                "url": self.erp.sandbox.odoo_url(),
                "database": ODOO_DB,
                "protocol": "xmlrpc",
            })),
            credentials: Some(serde_json::json!({
                "username": ODOO_USER,
                "api_key": self.erp.odoo_key,
            })),
            webhook_url: None,
            conflict_policy: None,
        };
        self.create("Odoo — stock import", "odoo", &fields).await
    }

    async fn create_netsuite_integration(&self) -> anyhow::Result<Integration> {
        let [consumer_key, consumer_secret, token_id, token_secret] = &self.erp.netsuite_tba;
        let fields = service::FieldsInput {
            direction: Some("export".into()),
            frequency: Some("manual".into()),
            entities: Some(vec!["customers".into(), "products".into()]),
            settings: Some(serde_json::json!({
                "account_id": NETSUITE_ACCOUNT,
                "time_zone": "UTC",
                "api_url": self.erp.sandbox.netsuite_url(NETSUITE_ACCOUNT),
                "subsidiary_id": "1",
                // The simulator answers in microseconds: the account's 5 concurrent requests
                // are the limit here, not our default pace of 20 a second.
                "rate_limit": {"requests": 500, "per_secs": 1},
            })),
            credentials: Some(serde_json::json!({
                "consumer_key": consumer_key,
                "consumer_secret": consumer_secret,
                "token_id": token_id,
                "token_secret": token_secret,
            })),
            webhook_url: None,
            conflict_policy: None,
        };
        self.create("NetSuite — customers, items", "netsuite", &fields)
            .await
    }

    async fn create(
        &self,
        name: &str,
        kind: &str,
        fields: &service::FieldsInput,
    ) -> anyhow::Result<Integration> {
        let integration = service::create(
            self.store,
            Some(self.vault),
            &self.ctx,
            self.tenant,
            name,
            kind,
            fields,
        )
        .await?;
        Ok(integration.integration)
    }

    /// Tests each integration's connection and activates it; stops at the first that fails.
    async fn test_and_activate(&self, integrations: &DemoIntegrations) -> anyhow::Result<()> {
        for integration in [
            &integrations.orders,
            &integrations.catalogue,
            &integrations.xero,
            &integrations.odoo,
            &integrations.netsuite,
        ] {
            let (_, test) =
                service::test(self.store, self.vault, &self.ctx, integration.id).await?;
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
            service::set_status(self.store, integration.id, IntegrationStatus::Active).await?;
        }
        say(
            "activated all five: the scheduler picks up the hourly one, the others are synced manually",
        );
        Ok(())
    }

    /// Syncs the two manual integrations, waits for the scheduler to start the hourly one,
    /// and shows all three until they finish.
    async fn first_syncs(
        &self,
        integrations: &DemoIntegrations,
        publisher: &passerelle_queue::Publisher,
    ) -> anyhow::Result<Vec<(String, SyncRun)>> {
        let DemoIntegrations {
            orders,
            catalogue,
            xero,
            odoo,
            netsuite,
        } = integrations;
        let manual = service::trigger_sync(self.store, publisher, orders.id, &[], false).await?;
        let to_xero = service::trigger_sync(self.store, publisher, xero.id, &[], false).await?;
        let from_odoo = service::trigger_sync(self.store, publisher, odoo.id, &[], false).await?;
        let to_netsuite =
            service::trigger_sync(self.store, publisher, netsuite.id, &[], false).await?;
        let scheduled = wait_for_scheduled_run(self.store, catalogue.id).await?;
        watch(
            self.store,
            &[
                (orders.name.clone(), manual.id),
                (catalogue.name.clone(), scheduled.id),
                (xero.name.clone(), to_xero.id),
                (odoo.name.clone(), from_odoo.id),
                (netsuite.name.clone(), to_netsuite.id),
            ],
        )
        .await
    }
}

async fn wait_for_scheduled_run(
    store: &Store,
    integration: passerelle_core::IntegrationId,
) -> anyhow::Result<SyncRun> {
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
    runs: &[(String, passerelle_core::RunId)],
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

/// The table of runs, what the ERPs received, and how to explore the demo database.
fn print_summary(rows: &[(String, SyncRun)], stats: &str, started: Instant, db_url: &str) {
    println!();
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
            &rows.iter().map(summary_row).collect::<Vec<_>>()
        )
    );
    println!("\nAt the ERP sandbox: {stats}");
    println!(
        "Demo finished in {:.1}s. Explore it: PASSERELLE__DATABASE__URL={} passerelle integrations list",
        started.elapsed().as_secs_f64(),
        redact_url(db_url)
    );
}

fn summary_row((name, run): &(String, SyncRun)) -> Vec<String> {
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
}

pub(super) fn say(line: &str) {
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
