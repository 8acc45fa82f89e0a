//! The worker role: consumes jobs (manual lane first), runs each under its integration's
//! lease, and acknowledges a message only once everything it caused is committed or handed
//! back to the broker (a retry, a continuation, a dead letter).
//!
//! Broker outages: when a consumer's channel closes, the worker keeps its running jobs going
//! (their messages are redelivered by the broker, and a finished run's redelivery is dropped
//! as a duplicate), reconnects with backoff and consumes again; it exits non-zero only when
//! it gives up (`[amqp] give_up_after_secs`).
//!
//! Shutdown: on SIGTERM the consumers are cancelled (no new jobs), running jobs finish the
//! chunk in hand and yield their continuation; after the grace period whatever still runs is
//! dropped unacknowledged and RabbitMQ redelivers it. Either way nothing is lost: a chunk's
//! effects commit atomically, and the ERP sees a repeated create as a replay.

mod conflict;
mod credentials;
mod dry_run;
mod export;
pub mod gate;
mod import;
mod job;

pub use job::{ConnectorFactory, ErpConnectors, JobContext, JobOutcome, panic_message, run_job};

use crate::app;
use anyhow::Context as _;
use futures::FutureExt;
use passerelle_core::config::Settings;
use passerelle_queue::{Broker, JobConsumer, JobDelivery, Lane, QueueError};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, info_span, warn};

/// Runs until `shutdown` is cancelled, then drains within the grace period. An error means
/// the worker gave up on its broker.
pub async fn run(
    settings: Settings,
    concurrency: u16,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Checked first: without a key ring nothing else is worth connecting for.
    let vault = app::vault(&settings)?;
    let store = app::store(&settings).await?;
    let broker = app::broker(&settings).await?;
    let identity = app::process_identity("worker");
    let ctx = Arc::new(JobContext {
        store: store.clone(),
        vault,
        publisher: broker.publisher(),
        connectors: passerelle_connectors::ConnectorContext {
            rate_gate: Some(Arc::new(gate::PgRateGate {
                store: store.clone(),
                holder: identity.clone(),
            })),
            ..app::connector_context(&settings)
        },
        owner: identity.clone(),
        settings: settings.clone(),
        stop: shutdown.child_token(),
        factory: Arc::new(job::ErpConnectors),
        recorded_keys: Default::default(),
    });
    info!(worker = %identity, concurrency, prefix = %settings.amqp.prefix, "worker started");
    let tracker = TaskTracker::new();
    // Completion webhooks go out beside the jobs, never in their way.
    let deliverer = crate::webhooks::Deliverer::new(
        store.clone(),
        ctx.vault.clone(),
        ctx.connectors.url_policy,
    )
    .context("cannot build the webhook client")?;
    tracker.spawn(deliverer.run(ctx.stop.clone()));
    let consumed = consume(&broker, &ctx, concurrency, &identity, &tracker, &shutdown).await;

    // Stop taking jobs; let running ones reach a safe point.
    info!("worker stopping: no new jobs; waiting for running jobs to reach a safe point");
    ctx.stop.cancel();
    tracker.close();
    let grace = settings.worker.shutdown_grace();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        warn!(
            grace_secs = grace.as_secs(),
            "jobs still running after the grace period; leaving their messages unacknowledged for redelivery"
        );
    }
    broker.close().await;
    match consumed {
        Ok(()) => {
            info!("worker stopped");
            Ok(())
        }
        Err(e) => {
            error!(error = %e, "worker gave up on RabbitMQ");
            Err(e).context("the worker lost RabbitMQ and gave up")
        }
    }
}

/// Consumes both lanes until `shutdown`, reconnecting whenever the broker goes away.
async fn consume(
    broker: &Broker,
    ctx: &Arc<JobContext>,
    concurrency: u16,
    identity: &str,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> Result<(), QueueError> {
    let permits = Arc::new(Semaphore::new(usize::from(concurrency)));
    loop {
        if !broker.wait_connected(shutdown).await? {
            return Ok(());
        }
        let consumers = async {
            let manual = broker
                .consume(Lane::Manual, concurrency, &format!("{identity}/manual"))
                .await?;
            let scheduled = broker
                .consume(
                    Lane::Scheduled,
                    concurrency,
                    &format!("{identity}/scheduled"),
                )
                .await?;
            Ok::<_, QueueError>((manual, scheduled))
        };
        let (mut manual, mut scheduled) = match consumers.await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot consume; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        info!("consuming the manual and scheduled lanes");
        let lost = dispatch(
            ctx,
            &mut manual,
            &mut scheduled,
            &permits,
            tracker,
            shutdown,
        )
        .await;
        match lost {
            None => return Ok(()),
            Some(reason) => {
                warn!(%reason, "lost RabbitMQ's consumer channel; running jobs go on, reconnecting")
            }
        }
    }
}

/// Hands deliveries to job tasks while a slot is free, manual lane first. Returns `None` at
/// shutdown, or why the consumers stopped.
async fn dispatch(
    ctx: &Arc<JobContext>,
    manual: &mut JobConsumer,
    scheduled: &mut JobConsumer,
    permits: &Arc<Semaphore>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> Option<String> {
    loop {
        // Capacity first: a message is only taken off a consumer when it can start now.
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return None,
            p = permits.clone().acquire_owned() => p.ok()?,
        };
        // `biased`: when both lanes have a message ready, the manual one wins.
        let next = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return None,
            m = manual.next() => m,
            s = scheduled.next() => s,
        };
        let delivery = match next {
            Some(Ok(d)) => d,
            Some(Err(e)) => return Some(e.to_string()),
            None => return Some("the broker closed the channel".into()),
        };
        let ctx = ctx.clone();
        tracker.spawn(async move {
            handle_delivery(&ctx, delivery).await;
            drop(permit);
        });
    }
}

/// Runs the jobs waiting on both lanes one at a time, in this task, until none is left
/// (messages waiting in a delay tier are not waiting on a lane). Tests use it to run a job
/// deterministically in-process; returns how many deliveries it handled.
pub async fn drain_until_empty(ctx: &JobContext, broker: &Broker) -> Result<usize, QueueError> {
    let mut handled = 0;
    loop {
        let next = match broker.take_job(Lane::Manual).await? {
            Some(d) => Some(d),
            None => broker.take_job(Lane::Scheduled).await?,
        };
        let Some(delivery) = next else {
            return Ok(handled);
        };
        handle_delivery(ctx, delivery).await;
        handled += 1;
    }
}

/// Handles one message to its acknowledgement.
pub async fn handle_delivery(ctx: &JobContext, delivery: JobDelivery) {
    let job = delivery.job.clone();
    // Still inside a wait the ERP asked for (longer than one delay tier): go round again.
    if let Some(not_before) = job.not_before {
        let remaining = (not_before - ctx.store.now()).to_std().ok();
        if let Some(remaining) = remaining.filter(|r| !r.is_zero()) {
            if let Err(e) = delivery.retry_in(&job, remaining).await {
                warn!(error = %e, "cannot send a waiting job round the delay tiers; it will be redelivered");
            }
            return;
        }
    }
    let span = info_span!("sync_job", run_id = %job.run_id, integration_id = job.integration_id.0,
        attempt = job.attempt, lane = delivery.lane.as_str(), trace_id = %delivery.trace.trace_id);
    // `run_job` catches a panic of the steps itself (it holds the lease); this catches one
    // before or after them, so no delivery is ever left unsettled holding a prefetch slot.
    let outcome = match AssertUnwindSafe(
        run_job(ctx, &job, &delivery.trace).instrument(span.clone()),
    )
    .catch_unwind()
    .await
    {
        Ok(outcome) => outcome,
        Err(panic) => {
            let message = panic_message(panic.as_ref());
            error!(parent: &span, panic = %message, "the job panicked outside its steps; retrying it");
            let mut next = job.clone();
            next.attempt += 1;
            JobOutcome::Retry {
                delay: ctx.publisher.topology().retry_delay(next.attempt, None),
                job: next,
            }
        }
    };
    settle(ctx, delivery, outcome).instrument(span).await;
}

/// Turns a job's outcome into what happens to its message; logs a hand-off only once the
/// broker confirmed it.
async fn settle(ctx: &JobContext, delivery: JobDelivery, outcome: JobOutcome) {
    let result = match outcome {
        JobOutcome::Done => delivery.ack().await,
        JobOutcome::Abandon => {
            // Left unacknowledged only when the process is going away; otherwise requeued.
            if ctx.stop.is_cancelled() {
                return;
            }
            delivery.requeue().await
        }
        JobOutcome::Retry { job, delay } => delivery.retry_in(&job, delay).await.map(|tier| {
            info!(
                delay_secs = tier.as_secs(),
                next_attempt = job.attempt,
                "job handed to its retry tier"
            );
        }),
        JobOutcome::Continue { job } => delivery.continue_with(&job).await.map(|()| {
            let segment = job.continuation.as_ref().map_or(0, |c| c.segment);
            info!(segment, "continuation published");
        }),
        JobOutcome::DeadLetter { reason } => delivery.dead_letter(&reason).await.map(|()| {
            warn!(%reason, "job dead-lettered");
        }),
    };
    if let Err(e) = result {
        error!(error = %e, "cannot hand the job's message on; the broker will redeliver it");
    }
}

/// Connects to the broker for a one-off publish (CLI `sync`).
pub async fn connect_publisher(
    settings: &Settings,
) -> anyhow::Result<(Broker, passerelle_queue::Publisher)> {
    let broker = app::broker(settings).await?;
    let publisher = broker.publisher();
    Ok((broker, publisher))
}
