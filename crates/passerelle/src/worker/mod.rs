//! The worker role: consumes jobs (manual lane first), runs each under its integration's
//! lease, and acknowledges a message only once everything it caused is committed or handed
//! back to the broker (a retry, a continuation, a dead letter).
//!
//! Shutdown: on SIGTERM the consumers are cancelled (no new jobs), running jobs finish the
//! chunk in hand and yield their continuation; after the grace period whatever still runs is
//! dropped unacknowledged and RabbitMQ redelivers it. Either way nothing is lost: a chunk's
//! effects commit atomically, and the ERP sees a repeated create as a replay.

mod credentials;
mod export;
pub mod gate;
mod import;
mod job;

pub use job::{ConnectorFactory, ErpConnectors, JobContext, JobOutcome, panic_message, run_job};

use crate::app;
use futures::{FutureExt, StreamExt};
use passerelle_core::config::Settings;
use passerelle_core::job::{JobMessage, TraceParent};
use passerelle_queue::{
    BasicAckOptions, BasicNackOptions, Broker, Delivery, Lane, Outgoing, Publisher,
    TRACEPARENT_HEADER, header,
};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, info_span, warn};

/// Runs until `shutdown` is cancelled, then drains within the grace period.
pub async fn run(
    settings: Settings,
    concurrency: u16,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Checked first: without a key ring nothing else is worth connecting for.
    let vault = app::vault(&settings)?;
    let store = app::store(&settings).await?;
    let broker = app::broker(&settings).await?;
    let publisher = broker.publisher().await?;
    let identity = app::process_identity("worker");
    let ctx = Arc::new(JobContext {
        store: store.clone(),
        vault,
        publisher,
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
        clock: Arc::new(passerelle_core::SystemClock),
        factory: Arc::new(job::ErpConnectors),
        recorded_keys: Default::default(),
    });
    info!(worker = %identity, concurrency, prefix = %settings.amqp.prefix, "worker started");

    let mut manual = broker
        .consume(Lane::Manual, concurrency, &format!("{identity}/manual"))
        .await?;
    let mut scheduled = broker
        .consume(
            Lane::Scheduled,
            concurrency,
            &format!("{identity}/scheduled"),
        )
        .await?;
    let permits = Arc::new(Semaphore::new(usize::from(concurrency)));
    let tracker = TaskTracker::new();

    loop {
        // Capacity first: a message is only taken off a consumer when it can start now.
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        // `biased`: when both lanes have a message ready, the manual one wins.
        let next = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            m = manual.next() => m.map(|d| (Lane::Manual, d)),
            s = scheduled.next() => s.map(|d| (Lane::Scheduled, d)),
        };
        let Some((lane, delivery)) = next else {
            error!("a consumer stream ended (the broker closed the channel); stopping");
            break;
        };
        let delivery = match delivery {
            Ok(d) => d,
            Err(e) => {
                error!(error = %e, "consumer error; stopping so a supervisor can restart the worker");
                break;
            }
        };
        let ctx = ctx.clone();
        tracker.spawn(async move {
            handle_delivery(&ctx, lane, delivery).await;
            drop(permit);
        });
    }

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
    info!("worker stopped");
    Ok(())
}

/// Handles one message to its acknowledgement.
pub async fn handle_delivery(ctx: &JobContext, lane: Lane, delivery: Delivery) {
    let traceparent = header(&delivery, TRACEPARENT_HEADER).and_then(|h| TraceParent::parse(&h));
    let message = match JobMessage::parse(&delivery.data) {
        Ok(m) => m,
        Err(e) => {
            warn!(reason = %e, "dead-lettering a malformed job message");
            let outgoing = Outgoing {
                body: delivery.data.clone(),
                message_id: delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|m| m.as_str().to_owned())
                    .unwrap_or_default(),
                traceparent: traceparent.as_ref().map(TraceParent::header),
                headers: Vec::new(),
            };
            settle(
                &delivery,
                ctx.publisher
                    .dead_letter(&outgoing, &e.to_string())
                    .await
                    .is_ok(),
            )
            .await;
            return;
        }
    };
    let JobMessage::SyncV1(job) = message;
    let trace = traceparent.unwrap_or_else(TraceParent::new_root);
    // Still inside a wait the ERP asked for (longer than one delay tier): go round again.
    if let Some(not_before) = job.not_before {
        let remaining = (not_before - chrono::Utc::now())
            .to_std()
            .unwrap_or_default();
        if !remaining.is_zero() {
            let outgoing = outgoing_for(&job, &trace);
            let sent = ctx
                .publisher
                .publish_delayed(lane, remaining, &outgoing)
                .await
                .is_ok();
            settle(&delivery, sent).await;
            return;
        }
    }
    let span = info_span!("sync_job", run_id = %job.run_id, integration_id = job.integration_id,
        attempt = job.attempt, lane = lane.as_str(), trace_id = %trace.trace_id);
    // `run_job` catches a panic of the steps itself (it holds the lease); this catches one
    // before or after them, so no delivery is ever left unsettled holding a prefetch slot.
    let outcome = match AssertUnwindSafe(run_job(ctx, &job, &trace).instrument(span.clone()))
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
                delay: Duration::from_secs(
                    ctx.settings
                        .amqp
                        .retry_delays_secs
                        .first()
                        .copied()
                        .unwrap_or(5),
                ),
                job: next,
            }
        }
    };
    let _enter = span.enter();
    let published = match &outcome {
        JobOutcome::Done => true,
        JobOutcome::Abandon => {
            // Leave it unacknowledged only when the process is going away; otherwise requeue.
            if !ctx.stop.is_cancelled() {
                let _ = delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await;
            }
            return;
        }
        JobOutcome::Retry { job: next, delay } => {
            let outgoing = outgoing_for(next, &trace);
            match ctx.publisher.publish_delayed(lane, *delay, &outgoing).await {
                Ok(tier) => {
                    info!(
                        delay_secs = tier.as_secs(),
                        next_attempt = next.attempt,
                        "job will be retried"
                    );
                    true
                }
                Err(e) => {
                    error!(error = %e, "cannot publish the retry; the message will be redelivered");
                    false
                }
            }
        }
        JobOutcome::Continue { job: next } => {
            let outgoing = outgoing_for(next, &trace);
            ctx.publisher
                .publish_jobs(lane, std::slice::from_ref(&outgoing))
                .await
                .is_ok()
        }
        JobOutcome::DeadLetter { reason } => {
            let outgoing = outgoing_for(&job, &trace);
            ctx.publisher.dead_letter(&outgoing, reason).await.is_ok()
        }
    };
    settle(&delivery, published).await;
}

fn outgoing_for(job: &passerelle_core::job::SyncJob, trace: &TraceParent) -> Outgoing {
    Outgoing {
        body: JobMessage::SyncV1(job.clone()).to_bytes(),
        message_id: job.run_id.to_string(),
        traceparent: Some(trace.child().header()),
        headers: Vec::new(),
    }
}

/// Acks when what the message caused is safely elsewhere; otherwise requeues it.
async fn settle(delivery: &Delivery, handed_off: bool) {
    let result = if handed_off {
        delivery.ack(BasicAckOptions::default()).await
    } else {
        delivery
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
    };
    if let Err(e) = result {
        // The channel is gone; the broker redelivers the message to another consumer.
        warn!(error = %e, "could not settle a message; it will be redelivered");
    }
}

/// Publishes a run's first message and records that the broker has it.
pub async fn publish_run(
    store: &passerelle_store::Store,
    publisher: &Publisher,
    lane: Lane,
    runs: &[passerelle_store::SyncRun],
) -> anyhow::Result<()> {
    if runs.is_empty() {
        return Ok(());
    }
    let messages: Vec<Outgoing> = runs
        .iter()
        .map(|run| {
            let job = passerelle_core::job::SyncJob {
                run_id: run.id,
                integration_id: run.integration_id,
                tenant_id: run.tenant_id,
                trigger: run.trigger,
                entities: run.entity_scope.clone(),
                attempt: 0,
                continuation: None,
                not_before: None,
            };
            let trace = run
                .trace_id
                .as_deref()
                .map(|t| TraceParent {
                    trace_id: t.to_owned(),
                    span_id: TraceParent::new_root().span_id,
                })
                .unwrap_or_else(TraceParent::new_root);
            outgoing_for(&job, &trace)
        })
        .collect();
    publisher.publish_jobs(lane, &messages).await?;
    let ids: Vec<uuid::Uuid> = runs.iter().map(|r| r.id).collect();
    store.mark_published(&ids).await?;
    Ok(())
}

/// Connects to the broker for a one-off publish (CLI `sync`).
pub async fn connect_publisher(settings: &Settings) -> anyhow::Result<(Broker, Publisher)> {
    let broker = app::broker(settings).await?;
    let publisher = broker.publisher().await?;
    Ok((broker, publisher))
}
