//! `passerelle bench`: the performance figures of `docs/performance.md`, measured against the
//! real binary, Postgres, RabbitMQ and the in-process sandbox. Build with `--release`.
//!
//! 1. worker throughput: records/s for one worker exporting orders to the zero-latency
//!    custom-API simulator;
//! 2. manual-sync latency: from the `sync` call (run row + publish) to the ERP's first write,
//!    p50 and p95 over an idle fleet;
//! 3. exports under an ERP rate limit: the custom API's, then each ERP simulator's;
//! 4. idle worker memory (resident set);
//! 5. scheduler: due integrations enqueued per second (100,000 by default).
//!
//! `custom_api` holds the scenarios against the custom-API simulator, `erp` those against the
//! other ERP simulators, `scheduler` the scheduler's; `figures` what they measure.

mod custom_api;
mod erp;
mod figures;
mod scheduler;

use super::demo::sibling_database_url;
use super::fleet::{DEMO_KEY_ID, LocalFleet};
use crate::cli::{BenchArgs, OutputFormat};
use crate::{app, output, service};
use anyhow::Context as _;
use figures::Figures;
use passerelle_connectors::ConnectorContext;
use passerelle_core::IntegrationStatus;
use passerelle_core::config::{Settings, redact_url};
use passerelle_core::vault::{Vault, generate_key_base64};
use passerelle_queue::{Broker, Publisher};
use passerelle_sandbox::Sandbox;
use passerelle_store::{Store, SyncRun};
use secrecy::{ExposeSecret, SecretString};
use std::process::ExitCode;
use std::time::{Duration, Instant};

pub async fn run(
    settings: Settings,
    args: BenchArgs,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this is a debug build; figures are only meaningful from `cargo run --release -p passerelle -- bench`"
        );
    }
    let bench = Bench::prepare(settings).await?;

    eprintln!("seeding {} orders…", args.orders);
    let big = bench
        .store
        .seed_tenant("Bench throughput", 500, 500, i64::from(args.orders))
        .await?;
    let mut fleet = LocalFleet::new(
        &bench.settings,
        &bench.db_url,
        Some(bench.vault_key.clone()),
        "passerelle-bench",
    )?;
    fleet.spawn("worker", &["worker", "--concurrency", "1"])?;
    let throughput =
        custom_api::throughput(&bench, big.tenant_id, args.orders, args.concurrency).await?;

    // The latency tenant also owns the scheduler's due integrations.
    let small = bench.store.seed_tenant("Bench latency", 5, 5, 1).await?;
    let latency = custom_api::latency(&bench, small.tenant_id, args.samples).await?;
    let rate_limited =
        custom_api::rate_limited(&bench, args.rate_limited_orders, args.rate_limit).await?;
    let erp_limits = erp::under_their_limits(&bench, args.erp_products).await?;

    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_worker_rss_mb = fleet.pids().first().and_then(|pid| rss_mb(*pid));
    fleet.stop();

    let scheduler = scheduler::due_integrations(&bench, small.tenant_id, args.integrations).await?;
    bench.finish().await?;

    let figures = Figures {
        throughput,
        latency,
        idle_worker_rss_mb,
        scheduler,
        rate_limited,
        erp_limits,
    };
    output::emit(format, &figures, || figures.summary())?;
    Ok(ExitCode::SUCCESS)
}

/// What every scenario works with: its own database and queues, the sandbox in this process,
/// and a throwaway vault key.
struct Bench {
    /// The configuration, pointed at the bench's database and queue prefix.
    settings: Settings,
    db_url: String,
    /// Handed to the worker, which decrypts the credentials this process encrypts.
    vault_key: String,
    vault: Vault,
    store: Store,
    /// Kept open until the end to delete the bench's queues.
    broker: Broker,
    publisher: Publisher,
    sandbox: Sandbox,
    ctx: ConnectorContext,
}

impl Bench {
    /// A fresh `<database>_bench`, fresh `<prefix>-bench` queues and the sandbox.
    async fn prepare(mut settings: Settings) -> anyhow::Result<Self> {
        let db_url = sibling_database_url(settings.database.url.expose_secret(), "bench")?;
        settings.database.url = SecretString::from(db_url.clone());
        settings.amqp.prefix = format!("{}-bench", settings.amqp.prefix);
        settings.http.allow_private_networks = true;
        let vault_key = generate_key_base64();
        settings.vault.active_key = DEMO_KEY_ID.into();
        settings.vault.keys.clear();
        settings
            .vault
            .keys
            .insert(DEMO_KEY_ID.into(), SecretString::from(vault_key.clone()));
        let vault = app::vault(&settings)?;

        passerelle_store::drop_database(&db_url)
            .await
            .with_context(|| format!("cannot drop the bench database {}", redact_url(&db_url)))?;
        passerelle_store::ensure_database(&db_url).await?;
        let store = app::store(&settings).await?;
        passerelle_store::migrate(store.pool()).await?;
        let broker = app::broker(&settings).await?;
        broker.delete_topology().await?;
        broker.close().await;
        // Connecting again declares the topology afresh.
        let broker = app::broker(&settings).await?;
        let publisher = broker.publisher();
        let sandbox = Sandbox::start(0).await?;
        let ctx = app::connector_context(&settings);
        Ok(Self {
            settings,
            db_url,
            vault_key,
            vault,
            store,
            broker,
            publisher,
            sandbox,
            ctx,
        })
    }

    /// Deletes the bench's queues and stops the sandbox.
    async fn finish(self) -> anyhow::Result<()> {
        self.broker.delete_topology().await?;
        self.broker.close().await;
        self.sandbox.shutdown().await;
        Ok(())
    }

    /// Creates and activates a custom-API integration exporting orders to account `api_key`.
    async fn custom_api_integration(
        &self,
        tenant: passerelle_core::TenantId,
        api_key: &str,
        concurrency: usize,
    ) -> anyhow::Result<passerelle_core::IntegrationId> {
        let integration = service::create(
            &self.store,
            Some(&self.vault),
            &self.ctx,
            tenant,
            "bench",
            "custom_api",
            &service::FieldsInput {
                entities: Some(vec!["orders".into()]),
                settings: Some(serde_json::json!({"api_url": self.sandbox.custom_api_url(), "concurrency": concurrency})),
                credentials: Some(serde_json::json!({"api_key": api_key})),
                ..Default::default()
            },
        )
        .await?
        .integration;
        service::set_status(&self.store, integration.id, IntegrationStatus::Active).await?;
        Ok(integration.id)
    }

    /// Starts a manual sync of the integration's orders.
    async fn sync_orders(
        &self,
        integration: passerelle_core::IntegrationId,
    ) -> anyhow::Result<SyncRun> {
        Ok(service::trigger_sync(
            &self.store,
            &self.publisher,
            integration,
            &["orders".into()],
            false,
        )
        .await?)
    }

    /// Waits for the run to finish (in any terminal state).
    async fn wait(
        &self,
        run: passerelle_core::RunId,
        timeout: Duration,
    ) -> anyhow::Result<SyncRun> {
        let t0 = Instant::now();
        loop {
            let r = self.store.run(run).await?.context("run disappeared")?;
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
}

/// How long the run took from start to finish, in seconds (0 if it has no times).
fn run_secs(run: &SyncRun) -> f64 {
    match (run.started_at, run.finished_at) {
        (Some(s), Some(f)) => (f - s).num_microseconds().unwrap_or(0) as f64 / 1e6,
        _ => 0.0,
    }
}

fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
