//! The scheduler: many due integrations at once (no workers running), enqueued by one tick of
//! `passerelle scheduler --once`.

use super::Bench;
use super::figures::SchedulerFigures;
use anyhow::Context as _;
use std::time::Instant;

/// Creates `count` due integrations for the tenant and times one scheduler tick that
/// enqueues them all.
pub(super) async fn due_integrations(
    bench: &Bench,
    tenant: passerelle_core::TenantId,
    count: i64,
) -> anyhow::Result<SchedulerFigures> {
    eprintln!("scheduling {count} due integrations…");
    bench.store.add_due_integrations(tenant, count).await?;
    bench.store.vacuum_analyze_integrations().await?;
    let exe = std::env::current_exe()?;
    let t0 = Instant::now();
    let out = tokio::process::Command::new(exe)
        .args(["--output", "json", "scheduler", "--once"])
        .env("PASSERELLE__DATABASE__URL", &bench.db_url)
        .env("PASSERELLE__AMQP__PREFIX", &bench.settings.amqp.prefix)
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
        enqueued == count,
        "the scheduler enqueued {enqueued} of {count}"
    );
    Ok(SchedulerFigures {
        scheduler_integrations: enqueued,
        scheduler_enqueue_secs: elapsed,
        scheduler_per_sec: enqueued as f64 / elapsed.max(1e-9),
    })
}
