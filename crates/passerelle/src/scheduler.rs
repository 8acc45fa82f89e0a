//! The scheduler role: every few seconds, claims due integrations in batches (several
//! schedulers share the work through `FOR UPDATE SKIP LOCKED`), creates their runs and
//! advances `next_sync_at` in one transaction, then publishes the runs with confirms. Runs
//! whose publish failed stay `queued` and unpublished; the outbox pass publishes them again.
//!
//! It rides out outages: a tick that cannot reach Postgres logs and tries again next tick
//! (the pool reconnects); the publisher reconnects to RabbitMQ with backoff, and runs claimed
//! meanwhile wait in the outbox. Only the broker's give-up (`[amqp] give_up_after_secs`)
//! stops the scheduler, with an error.

use crate::app;
use passerelle_core::RunId;
use passerelle_core::config::Settings;
use passerelle_core::job::TraceParent;
use passerelle_queue::{Lane, Publisher, QueueError};
use passerelle_store::Store;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// What one tick did.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Tick {
    pub enqueued: usize,
    pub republished: usize,
    /// Stranded runs failed so their integrations can be scheduled again.
    pub abandoned: usize,
}

pub async fn run(
    settings: Settings,
    once: bool,
    shutdown: CancellationToken,
) -> anyhow::Result<Tick> {
    let store = app::store(&settings).await?;
    let broker = app::broker(&settings).await?;
    let publisher = broker.publisher();
    info!(prefix = %settings.amqp.prefix, "scheduler started");
    let interval = settings.scheduler.interval();
    let mut total = Tick::default();
    loop {
        match tick(&settings, &store, &publisher).await {
            Ok(t) => {
                if t.enqueued + t.republished + t.abandoned > 0 {
                    info!(
                        enqueued = t.enqueued,
                        republished = t.republished,
                        abandoned = t.abandoned,
                        "scheduler tick"
                    );
                }
                total.enqueued += t.enqueued;
                total.republished += t.republished;
                total.abandoned += t.abandoned;
            }
            Err(e) if gave_up(&e) => {
                broker.close().await;
                return Err(e.context("the scheduler lost RabbitMQ and gave up"));
            }
            Err(e) => error!(error = %format!("{e:#}"), "scheduler tick failed; will try again"),
        }
        if once {
            break;
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
        }
    }
    broker.close().await;
    Ok(total)
}

/// Whether an error is the broker's give-up (the role then exits non-zero).
fn gave_up(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<QueueError>(),
            Some(QueueError::GaveUp { .. })
        )
    })
}

/// Concurrent claim-and-publish loops per tick.
const CLAIM_LOOPS: usize = 4;

/// Claims batches of due integrations and publishes their runs until none is left.
async fn claim_and_publish(
    store: &Store,
    publisher: &Publisher,
    batch: i64,
) -> anyhow::Result<usize> {
    let mut enqueued = 0;
    loop {
        let now = store.now();
        let runs = store
            .claim_due_runs(now, batch, || TraceParent::new_root().trace_id)
            .await?;
        if runs.is_empty() {
            return Ok(enqueued);
        }
        match crate::outbox::publish_runs(store, publisher, Lane::Scheduled, &runs).await {
            Ok(()) => enqueued += runs.len(),
            Err(e) if gave_up(&e) => return Err(e),
            // The runs are committed; the outbox pass publishes them later.
            Err(e) => {
                warn!(error = %format!("{e:#}"), runs = runs.len(), "publish failed; the outbox will retry");
                return Ok(enqueued);
            }
        }
    }
}

/// Claims and publishes everything due now, then republishes stale unpublished runs.
pub async fn tick(
    settings: &Settings,
    store: &Store,
    publisher: &Publisher,
) -> anyhow::Result<Tick> {
    let batch = i64::from(settings.scheduler.batch_size);
    let mut tick = Tick::default();
    // Several claim-and-publish loops at once: while one waits for the broker's confirms,
    // another claims in Postgres. SKIP LOCKED keeps their batches apart.
    let loops = (0..CLAIM_LOOPS).map(|_| claim_and_publish(store, publisher, batch));
    for enqueued in futures::future::join_all(loops).await {
        tick.enqueued += enqueued?;
    }
    let older_than = settings.scheduler.republish_after();
    let stale = store.claim_unpublished_runs(older_than, batch).await?;
    if !stale.is_empty() {
        let ids: Vec<RunId> = stale.iter().map(|r| r.id).collect();
        let mut failed = false;
        for lane in [Lane::Manual, Lane::Scheduled] {
            let of_lane: Vec<_> = stale
                .iter()
                .filter(|r| {
                    (r.trigger == passerelle_core::RunTrigger::Manual) == (lane == Lane::Manual)
                })
                .cloned()
                .collect();
            if let Err(e) = crate::outbox::publish_runs(store, publisher, lane, &of_lane).await {
                warn!(error = %format!("{e:#}"), "republish failed; will try again");
                failed = true;
            }
        }
        if failed {
            store.unmark_published(&ids).await?;
        } else {
            tick.republished += stale.len();
        }
    }
    let reaped = store
        .reap_stranded_runs(
            settings.scheduler.abandon_running_after(),
            settings.scheduler.abandon_queued_after(),
            settings.sync.error_after_consecutive_failures,
        )
        .await?;
    for run in &reaped {
        warn!(run_id = %run.id, integration_id = run.integration_id.0, error = run.error.as_deref().unwrap_or(""), "stranded run failed");
    }
    tick.abandoned = reaped.len();
    Ok(tick)
}
