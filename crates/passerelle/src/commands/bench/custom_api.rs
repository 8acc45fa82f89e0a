//! The scenarios against the custom-API simulator: throughput, latency, and an export under
//! its rate limit.

use super::figures::{Latency, RateLimited, Throughput};
use super::{Bench, run_secs};
use passerelle_sandbox::custom_api::AccountConfig;
use std::time::{Duration, Instant};

/// Requests in flight to the simulator in the latency and rate-limited runs.
const SMALL_RUN_CONCURRENCY: usize = 8;

/// One worker exports the tenant's `orders` orders to the zero-latency simulator, with
/// `concurrency` requests in flight.
pub(super) async fn throughput(
    bench: &Bench,
    tenant: passerelle_core::TenantId,
    orders: u32,
    concurrency: usize,
) -> anyhow::Result<Throughput> {
    let key = "bench-throughput";
    bench
        .sandbox
        .custom_api()
        .add_account(AccountConfig::new(key));
    let integration = bench
        .custom_api_integration(tenant, key, concurrency)
        .await?;
    eprintln!("exporting {orders} orders with one worker…");
    let run = bench.sync_orders(integration).await?;
    let run = bench.wait(run.id, Duration::from_secs(1800)).await?;
    anyhow::ensure!(
        run.records_synced == i32::try_from(orders).unwrap_or(i32::MAX),
        "the throughput run synced {} of {orders} orders: {run:?}",
        run.records_synced,
    );
    let secs = run_secs(&run);
    Ok(Throughput {
        orders: i64::from(orders),
        worker_run_secs: secs,
        worker_records_per_sec: f64::from(run.records_synced) / secs.max(1e-9),
    })
}

/// Latency from `sync` to the first ERP call, on an idle fleet: `samples` syncs of one new
/// order each.
pub(super) async fn latency(
    bench: &Bench,
    tenant: passerelle_core::TenantId,
    samples: usize,
) -> anyhow::Result<Latency> {
    let key = "bench-latency";
    bench
        .sandbox
        .custom_api()
        .add_account(AccountConfig::new(key));
    let integration = bench
        .custom_api_integration(tenant, key, SMALL_RUN_CONCURRENCY)
        .await?;
    // A first sync exports the seeded order, so each timed one sends exactly the new one.
    let first = bench.sync_orders(integration).await?;
    bench.wait(first.id, Duration::from_secs(60)).await?;
    eprintln!("measuring sync-to-first-ERP-call latency over {samples} runs…");
    let mut millis = Vec::with_capacity(samples);
    for n in 0..samples {
        tokio::time::sleep(Duration::from_millis(200)).await;
        bench
            .store
            .add_single_line_order(tenant, &format!("LAT-{n}"))
            .await?;
        millis.push(time_to_first_call(bench, integration, key).await?);
    }
    millis.sort_by(f64::total_cmp);
    Ok(Latency {
        latency_samples: millis.len(),
        sync_to_first_call_p50_ms: percentile(&millis, 0.5),
        sync_to_first_call_p95_ms: percentile(&millis, 0.95),
    })
}

/// Syncs the integration and returns the milliseconds until the simulator's account `key`
/// records a new order; then waits for the run to finish.
async fn time_to_first_call(
    bench: &Bench,
    integration: passerelle_core::IntegrationId,
    key: &str,
) -> anyhow::Result<f64> {
    let before = creates(bench, key);
    let t0 = Instant::now();
    let run = bench.sync_orders(integration).await?;
    let elapsed_ms = loop {
        if creates(bench, key) > before {
            break t0.elapsed().as_secs_f64() * 1000.0;
        }
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(30),
            "no ERP call within 30 s of sync"
        );
        tokio::time::sleep(Duration::from_micros(250)).await;
    };
    bench.wait(run.id, Duration::from_secs(60)).await?;
    Ok(elapsed_ms)
}

/// Under an ERP rate limit: the simulator enforces `rate_limit` requests per second and the
/// integration declares the same limit; the custom API has no batch endpoint, so the ceiling
/// is the limit itself.
pub(super) async fn rate_limited(
    bench: &Bench,
    orders: i64,
    rate_limit: u32,
) -> anyhow::Result<RateLimited> {
    eprintln!("exporting {orders} orders under a limit of {rate_limit}/s…");
    let limited = bench
        .store
        .seed_tenant("Bench rate limit", 20, 20, orders)
        .await?;
    let key = "bench-limited";
    let mut account = AccountConfig::new(key);
    account.requests_per_second = Some(rate_limit);
    bench.sandbox.custom_api().add_account(account);
    let integration = bench
        .custom_api_integration(limited.tenant_id, key, SMALL_RUN_CONCURRENCY)
        .await?;
    // A settings change puts an active integration back to `testing`; the bench activates
    // it again, as an admin would after a passing test.
    let current = bench.store.integration(integration).await?;
    crate::service::update(
        &bench.store,
        None,
        &bench.ctx,
        &current,
        None,
        &crate::service::FieldsInput {
            settings: Some(serde_json::json!({"api_url": bench.sandbox.custom_api_url(), "concurrency": SMALL_RUN_CONCURRENCY, "requests_per_second": rate_limit})),
            ..Default::default()
        },
    )
    .await?;
    crate::service::set_status(
        &bench.store,
        integration,
        passerelle_core::IntegrationStatus::Active,
    )
    .await?;
    let run = bench.sync_orders(integration).await?;
    let run = bench.wait(run.id, Duration::from_secs(3600)).await?;
    let stats = bench.sandbox.custom_api().stats(key).unwrap_or_default();
    let records_per_sec = f64::from(run.records_synced) / run_secs(&run).max(1e-9);
    Ok(RateLimited {
        rate_limit_per_sec: rate_limit,
        rate_limited_records: i64::from(run.records_synced),
        rate_limited_records_per_sec: records_per_sec,
        rate_limit_share_of_ceiling: records_per_sec / f64::from(rate_limit.max(1)),
        rate_limited_429s: stats.rate_limited,
        rate_limited_max_in_window: stats.max_requests_in_window,
    })
}

/// Orders the simulator's account `key` has created so far.
fn creates(bench: &Bench, key: &str) -> u64 {
    bench
        .sandbox
        .custom_api()
        .stats(key)
        .and_then(|s| s.creates.get("orders").copied())
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}
