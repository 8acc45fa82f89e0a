//! One job, from taking the lease to the outcome the caller turns into an ack.

use super::dry_run;
use super::{export, import};
use futures::FutureExt;
use passerelle_connectors::{Connector, ConnectorContext, ConnectorError, Disposition};
use passerelle_core::config::Settings;
use passerelle_core::job::{Continuation, Step, SyncJob, TraceParent};
use passerelle_core::vault::Vault;
use passerelle_core::vault::{Credentials, SealedCredentials};
use passerelle_core::{Entity, LogDirection, RunStatus};
use passerelle_queue::Publisher;
use passerelle_store::{
    BeginOutcome, CredentialFault, Heartbeat, Integration, LeaseToken, Store, StoreError,
};
use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// What a worker needs to run jobs.
pub struct JobContext {
    pub store: Store,
    pub vault: Vault,
    pub publisher: Publisher,
    pub connectors: ConnectorContext,
    /// This process's name; each job's lease owner is this plus a unique suffix, so two
    /// deliveries of one run in the same process are as exclusive as in two processes.
    pub owner: String,
    pub settings: Settings,
    /// Cancelled at shutdown: jobs stop at the next chunk boundary and yield.
    pub stop: CancellationToken,
    /// Builds the connector of an integration: the ERP connectors in production; a test may
    /// hand in its own to prove how the worker treats a misbehaving one.
    pub factory: Arc<dyn ConnectorFactory>,
    /// Vault key ids whose fingerprint this process has recorded (see
    /// `passerelle_store::keys`): recorded once per process, not once per job.
    pub recorded_keys: Mutex<HashSet<String>>,
}

/// Builds an integration's connector from its type, settings and opened credentials.
pub trait ConnectorFactory: Send + Sync {
    fn build(
        &self,
        integration: &Integration,
        credentials: Option<&Credentials>,
        context: &ConnectorContext,
    ) -> Result<Arc<dyn Connector>, ConnectorError>;
}

/// The connectors of `passerelle_connectors`, chosen by the integration's type.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErpConnectors;

impl ConnectorFactory for ErpConnectors {
    fn build(
        &self,
        integration: &Integration,
        credentials: Option<&Credentials>,
        context: &ConnectorContext,
    ) -> Result<Arc<dyn Connector>, ConnectorError> {
        passerelle_connectors::build(
            integration.integration_type,
            integration.settings.as_ref(),
            credentials,
            context,
        )
    }
}

/// What to do with the message once the job returns.
#[derive(Debug)]
pub enum JobOutcome {
    /// Everything is recorded (or there was nothing to do): ack.
    Done,
    /// Publish `job` to a delay queue, then ack.
    Retry { job: SyncJob, delay: Duration },
    /// Publish the continuation to the same lane, then ack.
    Continue { job: SyncJob },
    /// Publish to the dead-letter queue with the reason, then ack.
    DeadLetter { reason: String },
    /// Leave the message to be redelivered (the process is stopping, or another worker owns
    /// the run now).
    Abandon,
}

/// How a step ended.
pub(super) enum StepEnd {
    Complete,
    /// Time budget used up or shutdown requested: continue in a new message.
    Yield,
    Retry {
        error: ConnectorError,
    },
    Fail {
        error: String,
        /// Set the integration to `error` as well (it cannot work until an admin acts).
        flag: bool,
    },
}

impl StepEnd {
    /// The end of a step stopped by a run-ending connector error.
    pub fn failed(error: &ConnectorError) -> Self {
        StepEnd::Fail {
            error: error.to_string(),
            flag: error.disposition() == Disposition::FailRunAndFlag,
        }
    }

    /// The end of a step stopped by a connector error, whatever its class.
    pub fn from_error(error: ConnectorError) -> Self {
        match error.disposition() {
            Disposition::RetryLater => StepEnd::Retry { error },
            _ => StepEnd::failed(&error),
        }
    }
}

/// Everything a step needs.
pub(super) struct StepContext<'a> {
    pub ctx: &'a JobContext,
    pub integration: &'a Integration,
    pub connector: &'a Arc<dyn Connector>,
    pub lease: &'a LeaseToken,
    pub deadline: Instant,
    /// Cancelled when an admin asks to cancel the run (the heartbeat notices).
    pub cancel: &'a CancellationToken,
}

impl StepContext<'_> {
    pub fn lease_ttl(&self) -> Duration {
        self.ctx.settings.worker.lease_ttl()
    }

    pub fn chunk_size(&self) -> i64 {
        i64::from(self.ctx.settings.worker.chunk_size)
    }

    /// Whether to stop at this chunk boundary: on shutdown, when the time budget is spent,
    /// and when an admin cancelled the run (the continuation's next start then finishes it
    /// `cancelled`, so a cancel takes effect between chunks, never in the middle of one).
    pub fn should_yield(&self) -> bool {
        self.ctx.stop.is_cancelled()
            || self.cancel.is_cancelled()
            || Instant::now() >= self.deadline
    }
}

pub async fn run_job(ctx: &JobContext, job: &SyncJob, trace: &TraceParent) -> JobOutcome {
    let ttl = ctx.settings.worker.lease_ttl();
    let (integration, lease, dry_run) = match start(ctx, job, ttl).await {
        Ok(started) => started,
        Err(outcome) => return outcome,
    };
    info!(trace_id = %trace.trace_id, "run started");
    // Heartbeats keep the lease while a slow ERP call is in flight; a lost lease stops us.
    let lost = CancellationToken::new();
    let cancel = CancellationToken::new();
    let heartbeat = spawn_heartbeat(
        ctx.store.clone(),
        lease.clone(),
        ttl,
        lost.clone(),
        cancel.clone(),
    );
    let outcome = tokio::select! {
        // Biased: when the steps have finished (and released the lease themselves), their
        // outcome wins over a heartbeat that just found the lease gone.
        biased;
        outcome = AssertUnwindSafe(run_steps(ctx, job, &integration, &lease, &cancel, dry_run)).catch_unwind() => match outcome {
            Ok(outcome) => outcome,
            Err(panic) => panicked(ctx, job, &lease, panic).await,
        },
        _ = lost.cancelled() => lease_lost(job, ttl),
    };
    heartbeat.abort();
    outcome
}

/// Takes the integration's lease for the run, or says what to do with the message instead.
/// Returns the integration, the lease and whether the run is a dry run.
async fn start(
    ctx: &JobContext,
    job: &SyncJob,
    ttl: Duration,
) -> Result<(Integration, LeaseToken, bool), JobOutcome> {
    // Each execution has its own owner name, so two deliveries of one run in one process
    // are as exclusive as in two processes.
    let owner = format!(
        "{}/{}",
        ctx.owner,
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let began = match ctx
        .store
        .begin_run(job.run_id, &owner, ttl, job.attempt)
        .await
    {
        Ok(b) => b,
        Err(e) => return Err(infrastructure_retry(ctx, job, &e).await),
    };
    match began {
        BeginOutcome::Started(started) => {
            let (run, integration) = *started;
            let lease = LeaseToken {
                integration_id: integration.id,
                run_id: run.id,
                owner,
            };
            Ok((integration, lease, run.dry_run))
        }
        BeginOutcome::Missing => {
            warn!("run not found (its integration was deleted?); dropping the message");
            Err(JobOutcome::Done)
        }
        BeginOutcome::AlreadyFinished(run) => {
            info!(status = %run.status, "run already finished; duplicate delivery dropped");
            Err(JobOutcome::Done)
        }
        BeginOutcome::Cancelled(run) => {
            info!(reason = run.error.as_deref().unwrap_or(""), "run cancelled");
            Err(JobOutcome::Done)
        }
        BeginOutcome::Busy {
            holder_run,
            expires_in,
        } => {
            info!(%holder_run, "integration busy with another sync; retrying later");
            // Not a failure of this run: the attempt count stays.
            Err(JobOutcome::Retry {
                job: job.clone(),
                delay: expires_in.max(Duration::from_secs(1)),
            })
        }
    }
}

/// Renews the lease every third of its time to live; cancels `lost` when it was taken over,
/// and `cancel` when an admin asked to cancel the run.
fn spawn_heartbeat(
    store: Store,
    lease: LeaseToken,
    ttl: Duration,
    lost: CancellationToken,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(ttl / 3);
        tick.tick().await;
        loop {
            tick.tick().await;
            match store.heartbeat(&lease, ttl).await {
                Ok(Heartbeat::Held) => {}
                Ok(Heartbeat::CancelRequested) => {
                    if !cancel.is_cancelled() {
                        info!("an admin cancelled the run; stopping at the next chunk boundary");
                    }
                    cancel.cancel();
                }
                Ok(Heartbeat::Lost) => {
                    lost.cancel();
                    return;
                }
                Err(e) => warn!(error = %e, "heartbeat failed; will try again"),
            }
        }
    })
}

/// The text of a panic's payload, for the run's error (bounded: a payload is not a place
/// for data, and we never put secrets in panic messages).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    let mut end = text.len().min(300);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// A bug stopped the job mid-run. The attempt counts as failed: the run goes back to
/// `queued` with the panic as its error and the job to the retry tier (failed and
/// dead-lettered once attempts are used up), so its delivery is settled and its slot freed.
async fn panicked(
    ctx: &JobContext,
    job: &SyncJob,
    lease: &LeaseToken,
    panic: Box<dyn std::any::Any + Send>,
) -> JobOutcome {
    let message = panic_message(panic.as_ref());
    error!(panic = %message, "the job panicked; the run is retried as a failed attempt");
    let continuation = job.continuation.clone().unwrap_or_default();
    let error = ConnectorError::transient(format!("the worker panicked: {message}"));
    retry_later(ctx, job, lease, &continuation, error).await
}

async fn run_steps(
    ctx: &JobContext,
    job: &SyncJob,
    integration: &Integration,
    lease: &LeaseToken,
    cancel: &CancellationToken,
    dry_run: bool,
) -> JobOutcome {
    let fail =
        |message: String, flag: bool| finish(ctx, lease, RunStatus::Failed, Some(message), flag);
    let connector = match connector_for(ctx, job, integration, lease).await {
        Ok(c) => c,
        Err(outcome) => return outcome,
    };
    let step_ctx = StepContext {
        ctx,
        integration,
        connector: &connector,
        lease,
        deadline: Instant::now() + ctx.settings.worker.time_budget(),
        cancel,
    };
    if dry_run {
        let steps = plan(job, integration, connector.as_ref());
        return dry_run::run(&step_ctx, job, &steps).await;
    }
    let mut continuation = job.continuation.clone().unwrap_or_default();
    for step in plan(job, integration, connector.as_ref()) {
        if continuation.completed.contains(&step) {
            continue;
        }
        let end = match step.direction {
            LogDirection::Export => export::run_step(&step_ctx, step.entity).await,
            LogDirection::Import => import::run_step(&step_ctx, step.entity).await,
        };
        let end = match end {
            Ok(end) => end,
            Err(StoreError::LeaseLost { .. }) => {
                return lease_lost(job, ctx.settings.worker.lease_ttl());
            }
            // Retrying cannot mend a cursor: the run fails with the message saying how to.
            Err(e @ StoreError::CorruptCursor { .. }) => return fail(e.to_string(), false).await,
            Err(e) => return infrastructure_retry_started(ctx, job, lease, &e).await,
        };
        match end {
            StepEnd::Complete => continuation.completed.push(step),
            StepEnd::Yield => return yielded(ctx, job, lease, continuation).await,
            StepEnd::Retry { error } => {
                return retry_later(ctx, job, lease, &continuation, error).await;
            }
            StepEnd::Fail { error, flag } => return fail(error, flag).await,
        }
    }
    completed(ctx, job, lease).await
}

/// Opens the credentials and builds the connector, or ends the run the way the failure
/// says (retried elsewhere, failed, failed and flagged).
async fn connector_for(
    ctx: &JobContext,
    job: &SyncJob,
    integration: &Integration,
    lease: &LeaseToken,
) -> Result<Arc<dyn Connector>, JobOutcome> {
    let fail =
        |message: String, flag: bool| finish(ctx, lease, RunStatus::Failed, Some(message), flag);
    let credentials = match open_credentials(ctx, integration).await {
        Ok(c) => c,
        Err(Unopened::Retry(error)) => {
            let continuation = job.continuation.clone().unwrap_or_default();
            return Err(retry_later(ctx, job, lease, &continuation, error).await);
        }
        Err(Unopened::Blame(message)) => return Err(fail(message, true).await),
        Err(Unopened::Store(e)) => {
            return Err(infrastructure_retry_started(ctx, job, lease, &e).await);
        }
    };
    // Rotated credentials are stored under this run's lease.
    let connector_ctx = passerelle_connectors::ConnectorContext {
        credential_store: Some(std::sync::Arc::new(
            super::credentials::LeasedCredentialStore {
                store: ctx.store.clone(),
                vault: ctx.vault.clone(),
                integration: integration.clone(),
                lease: lease.clone(),
            },
        )),
        ..ctx.connectors.clone()
    };
    match ctx
        .factory
        .build(integration, credentials.as_ref(), &connector_ctx)
    {
        Ok(c) => Ok(c),
        Err(e) => {
            let flag = e.disposition() == Disposition::FailRunAndFlag;
            Err(fail(e.to_string(), flag).await)
        }
    }
}

/// The time budget is used up (or the worker is stopping): the run goes back to `queued`
/// and its continuation, listing the steps done, to the queue.
pub(super) async fn yielded(
    ctx: &JobContext,
    job: &SyncJob,
    lease: &LeaseToken,
    mut continuation: Continuation,
) -> JobOutcome {
    continuation.segment += 1;
    let mut next = job.clone();
    next.continuation = Some(continuation);
    match ctx.store.requeue_run(lease, job.attempt, None, None).await {
        Ok(()) => {}
        Err(StoreError::LeaseLost { .. }) => {
            return lease_lost(job, ctx.settings.worker.lease_ttl());
        }
        Err(e) => return infrastructure_retry(ctx, job, &e).await,
    }
    info!(
        segment = next.continuation.as_ref().map_or(0, |c| c.segment),
        "run yielded; its continuation goes back to the queue"
    );
    JobOutcome::Continue { job: next }
}

/// Every step is done: the run ends `succeeded`, or `partial` when the ERP refused records.
async fn completed(ctx: &JobContext, job: &SyncJob, lease: &LeaseToken) -> JobOutcome {
    let run = match ctx.store.run(lease.run_id).await {
        Ok(Some(run)) => run,
        Ok(None) => {
            warn!("the run was deleted while it ran (its integration was deleted?)");
            return JobOutcome::Done;
        }
        Err(e) => return infrastructure_retry_started(ctx, job, lease, &e).await,
    };
    let (status, summary) = if run.records_failed > 0 {
        let summary = format!(
            "{} record(s) were rejected by the ERP; see the failed logs",
            run.records_failed
        );
        (RunStatus::Partial, Some(summary))
    } else {
        (RunStatus::Succeeded, None)
    };
    finish(ctx, lease, status, summary, false).await
}

/// Why an integration's credentials did not open, and what to do about it.
enum Unopened {
    /// This worker's fault (a key it lacks, other material under the key's id): another
    /// worker may open them.
    Retry(ConnectorError),
    /// The stored ciphertext is proven bad: the integration needs new credentials.
    Blame(String),
    Store(StoreError),
}

/// Opens the integration's credentials, recording this process's key fingerprint the first
/// time a key works, and judging a failure against the fleet's record of that key.
async fn open_credentials(
    ctx: &JobContext,
    integration: &Integration,
) -> Result<Option<Credentials>, Unopened> {
    let source = match integration.open_credentials(&ctx.vault) {
        Ok(credentials) => {
            if let Some(kid) = integration
                .credentials
                .as_ref()
                .and_then(|raw| SealedCredentials::from_json(raw).ok())
                .map(|sealed| sealed.kid)
            {
                note_key_works(ctx, &kid).await;
            }
            return Ok(credentials);
        }
        Err(StoreError::Vault { source, .. }) => source,
        Err(e) => return Err(Unopened::Store(e)),
    };
    match ctx.store.credential_fault(&ctx.vault, &source).await {
        Ok(CredentialFault::Integration) => Err(Unopened::Blame(format!(
            "cannot open the credentials: {source}; store them again (`passerelle integrations update {} --credentials ...`)",
            integration.id
        ))),
        Ok(CredentialFault::ThisWorker) => {
            error!(
                alert = "vault_key_mismatch",
                worker = %ctx.owner,
                error = %source,
                "this worker cannot open credentials other workers can; check its [vault] keys. The run is retried, possibly elsewhere"
            );
            Err(Unopened::Retry(ConnectorError::transient(format!(
                "this worker cannot open the credentials ({source}); retried on another worker"
            ))))
        }
        Err(e) => Err(Unopened::Store(e)),
    }
}

/// Records, once per process, that this worker's material under `kid` opens real credentials.
async fn note_key_works(ctx: &JobContext, kid: &str) {
    let first = ctx
        .recorded_keys
        .lock()
        .map(|mut keys| keys.insert(kid.to_owned()))
        .unwrap_or(false);
    if first && let Err(e) = ctx.store.record_key_fingerprint(&ctx.vault, kid).await {
        warn!(error = %e, key_id = kid, "cannot record the vault key's fingerprint; will try on a later job");
        if let Ok(mut keys) = ctx.recorded_keys.lock() {
            keys.remove(kid);
        }
    }
}

/// The (entity, direction) steps of a run: the requested (or enabled) entities, in both
/// directions as configured, where the connector supports them.
fn plan(job: &SyncJob, integration: &Integration, connector: &dyn Connector) -> Vec<Step> {
    let entities: Vec<Entity> = if job.entities.is_empty() {
        integration.enabled_entities()
    } else {
        job.entities.clone()
    };
    let caps = connector.capabilities();
    let mut steps = Vec::new();
    // Imports first: stock and products brought in are then current when orders go out.
    if integration.sync_direction.imports() {
        for entity in &entities {
            if caps.import.contains(entity) {
                steps.push(Step {
                    entity: *entity,
                    direction: LogDirection::Import,
                });
            }
        }
    }
    if integration.sync_direction.exports() {
        for entity in &entities {
            if caps.export.contains(entity) {
                steps.push(Step {
                    entity: *entity,
                    direction: LogDirection::Export,
                });
            }
        }
    }
    steps
}

async fn finish(
    ctx: &JobContext,
    lease: &LeaseToken,
    status: RunStatus,
    error: Option<String>,
    flag: bool,
) -> JobOutcome {
    let threshold = ctx.settings.sync.error_after_consecutive_failures;
    match ctx
        .store
        .finish_run(lease, status, error.as_deref(), threshold, flag)
        .await
    {
        Ok(recorded) => {
            if recorded.entered_error {
                // The alert event: one structured line an alerting pipeline can match on.
                error!(
                    alert = "integration_error",
                    integration_id = lease.integration_id.0,
                    consecutive_failures = recorded.integration.consecutive_failures,
                    last_error = recorded.integration.last_error.as_deref().unwrap_or(""),
                    "integration set to error"
                );
            }
            info!(status = %status, "run finished");
            JobOutcome::Done
        }
        Err(StoreError::LeaseLost { .. }) => {
            warn!("the run was taken over before it could be recorded as finished");
            JobOutcome::Done
        }
        Err(e) => {
            error!(error = %e, "cannot record the end of the run; the message will be redelivered");
            JobOutcome::Abandon
        }
    }
}

/// Our lease was taken (it expired: a long pause, a partition). If another worker took this
/// same run over, it finishes it and our retry will find it finished or busy; if another run
/// took the integration, this run must not be stranded: it comes back after a lease period.
pub(super) fn lease_lost(job: &SyncJob, ttl: Duration) -> JobOutcome {
    warn!("lease lost mid-run; this run will be looked at again after a lease period");
    JobOutcome::Retry {
        job: job.clone(),
        delay: ttl,
    }
}

async fn retry_later(
    ctx: &JobContext,
    job: &SyncJob,
    lease: &LeaseToken,
    continuation: &Continuation,
    error: ConnectorError,
) -> JobOutcome {
    // A 429 is the ERP pacing us, not a failure of the run: it does not use up an attempt.
    let rate_limited = matches!(error, ConnectorError::RateLimited { .. });
    let attempt = if rate_limited {
        job.attempt
    } else {
        job.attempt + 1
    };
    let message = error.to_string();
    if attempt >= ctx.settings.worker.max_attempts {
        let reason = format!("gave up after {attempt} attempts: {message}");
        if let JobOutcome::Abandon =
            finish(ctx, lease, RunStatus::Failed, Some(reason.clone()), false).await
        {
            return JobOutcome::Abandon;
        }
        return JobOutcome::DeadLetter { reason };
    }
    let delay = ctx
        .publisher
        .topology()
        .retry_delay(attempt, error.retry_after());
    let resume_at =
        ctx.store.now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
    match ctx
        .store
        .requeue_run(lease, attempt, Some(&message), Some(resume_at))
        .await
    {
        Ok(()) => {}
        Err(StoreError::LeaseLost { .. }) => {
            return lease_lost(job, ctx.settings.worker.lease_ttl());
        }
        Err(e) => return infrastructure_retry(ctx, job, &e).await,
    }
    let mut next = job.clone();
    next.attempt = attempt;
    next.continuation = Some(continuation.clone()).filter(|c| !c.completed.is_empty());
    next.not_before = (delay > ctx.publisher.topology().longest_tier()).then_some(resume_at);
    warn!(error = %message, attempt, "run will be retried");
    JobOutcome::Retry { job: next, delay }
}

/// A database or broker problem: try the message again later. When giving up, the run is
/// failed too (best effort: the database may be what is failing), so it is not stranded.
async fn infrastructure_retry(ctx: &JobContext, job: &SyncJob, e: &StoreError) -> JobOutcome {
    error!(error = %e, "infrastructure error; the job will be retried");
    let mut next = job.clone();
    next.attempt = job.attempt + 1;
    if next.attempt >= ctx.settings.worker.max_attempts {
        let reason = format!("gave up after {} attempts: {e}", next.attempt);
        if let Err(fail_error) = ctx.store.fail_unstarted_run(job.run_id, &reason).await {
            warn!(error = %fail_error, "cannot mark the run failed; the scheduler's reaper will");
        }
        return JobOutcome::DeadLetter { reason };
    }
    let delay = ctx.publisher.topology().retry_delay(next.attempt, None);
    JobOutcome::Retry { job: next, delay }
}

pub(super) async fn infrastructure_retry_started(
    ctx: &JobContext,
    job: &SyncJob,
    lease: &LeaseToken,
    e: &StoreError,
) -> JobOutcome {
    // Best effort: free the lease so the retry is not blocked until it expires.
    let _ = ctx
        .store
        .requeue_run(lease, job.attempt + 1, Some(&e.to_string()), None)
        .await;
    infrastructure_retry(ctx, job, e).await
}
