//! Enqueueing runs: a run's first message is published with confirms, and only then is the
//! run stamped `published_at`. A run left unstamped (the publish failed, the broker was away)
//! is published again by the scheduler's outbox pass, so none is lost between the two.

use passerelle_core::RunId;
use passerelle_core::job::{SyncJob, TraceParent};
use passerelle_queue::{Lane, NewJob, Publisher};
use passerelle_store::{Store, SyncRun};

/// The first job message of a run, in the trace the run was created with.
pub fn first_job(run: &SyncRun) -> NewJob {
    let job = SyncJob {
        run_id: run.id,
        integration_id: run.integration_id,
        tenant_id: run.tenant_id,
        trigger: run.trigger,
        entities: run.entity_scope.clone(),
        attempt: 0,
        continuation: None,
        not_before: None,
    };
    // The run's trace id, when it is one (every run the store creates has one).
    let trace = run
        .trace_id
        .as_deref()
        .and_then(|t| TraceParent::parse(&format!("00-{t}-{}-01", TraceParent::new_root().span_id)))
        .unwrap_or_else(TraceParent::new_root);
    NewJob { job, trace }
}

/// Publishes runs' first messages and records that the broker has them.
pub async fn publish_runs(
    store: &Store,
    publisher: &Publisher,
    lane: Lane,
    runs: &[SyncRun],
) -> anyhow::Result<()> {
    if runs.is_empty() {
        return Ok(());
    }
    let jobs: Vec<NewJob> = runs.iter().map(first_job).collect();
    publisher.enqueue(lane, &jobs).await?;
    let ids: Vec<RunId> = runs.iter().map(|r| r.id).collect();
    store.mark_published(&ids).await?;
    Ok(())
}
