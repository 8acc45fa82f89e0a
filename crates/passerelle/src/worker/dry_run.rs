//! A dry run: every step of the run read, mapped and diffed as a real run would, from the
//! saved cursors on, with nothing written: no ERP write endpoint is called (an import step
//! reads the ERP, as it must to know what it would apply), no intent, mapping, log or cursor
//! is recorded. The report says per entity and direction how many records a real run would
//! create, update, delete and skip, with a few redacted sample payloads.

use super::export::{content_hash, position, unchanged};
use super::import::known_mappings;
use super::job::{
    JobContext, JobOutcome, StepContext, infrastructure_retry_started, lease_lost, yielded,
};
use passerelle_connectors::ConnectorError;
use passerelle_core::dry_run::{DryRunReport, StepDiff};
use passerelle_core::job::{Continuation, Step, SyncJob};
use passerelle_core::platform::PlatformRecord;
use passerelle_core::{Entity, LogDirection};
use passerelle_store::LeaseToken;
use passerelle_store::StoreError;
use tracing::{error, info, warn};

/// Why a dry run step stopped short.
#[derive(Debug, thiserror::Error)]
pub(super) enum DryRunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the ERP could not be read: {0}")]
    Connector(ConnectorError),
    /// The worker is stopping, or an admin cancelled the run: it goes back to the queue,
    /// where its next start runs it again or, when cancelled, ends it `cancelled`.
    #[error("the dry run is handed back (the worker is stopping or an admin cancelled it)")]
    HandedBack,
}

/// What a real export of `entity` would send now.
pub(super) async fn export_diff(
    step: &StepContext<'_>,
    entity: Entity,
) -> Result<StepDiff, DryRunError> {
    let store = &step.ctx.store;
    let integration = step.integration;
    let mut diff = StepDiff::new(entity, LogDirection::Export);
    let mut cursor = store.export_cursor(integration.id, entity).await?;
    loop {
        if step.ctx.stop.is_cancelled() || step.cancel.is_cancelled() {
            return Err(DryRunError::HandedBack);
        }
        let rows = store
            .export_page(integration.tenant_id, entity, &cursor, step.chunk_size())
            .await?;
        let Some(last) = rows.last() else {
            return Ok(diff);
        };
        cursor.after = Some(position(last));
        let internal_ids: Vec<String> = rows.iter().map(PlatformRecord::internal_id).collect();
        let mappings = store
            .mappings_of(integration.id, entity.mapping_entity(), &internal_ids)
            .await?;
        for (record, internal_id) in rows.iter().zip(&internal_ids) {
            let Ok(payload) = step.connector.map_record(record) else {
                diff.failed += 1;
                continue;
            };
            let hash = content_hash(&payload);
            match mappings.get(internal_id) {
                Some(known) if unchanged(known, &hash, record) => diff.skip += 1,
                Some(_) => {
                    diff.update += 1;
                    diff.sample(|| step.connector.redact(&payload));
                }
                None => {
                    diff.create += 1;
                    diff.sample(|| step.connector.redact(&payload));
                }
            }
        }
    }
}

/// What a real import of `entity` would apply now: the ERP's changes since the saved cursor,
/// against the mappings.
pub(super) async fn import_diff(
    step: &StepContext<'_>,
    entity: Entity,
) -> Result<StepDiff, DryRunError> {
    let store = &step.ctx.store;
    let integration = step.integration;
    let mut diff = StepDiff::new(entity, LogDirection::Import);
    let mut cursor = store.import_cursor(integration.id, entity).await?;
    loop {
        if step.ctx.stop.is_cancelled() || step.cancel.is_cancelled() {
            return Err(DryRunError::HandedBack);
        }
        let page = step
            .connector
            .import_page(entity, &cursor)
            .await
            .map_err(DryRunError::Connector)?;
        diff.failed += u32::try_from(page.rejected.len()).unwrap_or(u32::MAX);
        let known = known_mappings(step, entity, &page.records).await?;
        for record in &page.records {
            let mapped = known.get(record.external_id());
            let same = mapped
                .and_then(|(_, meta)| meta.as_ref())
                .and_then(|m| m.import_hash.as_deref())
                == Some(content_hash(record.raw()).as_str());
            // What a real import would do with the record, and whether it would write.
            let (counter, writes) = match (record.is_tombstone(), mapped.is_some()) {
                (true, true) => (&mut diff.delete, true),
                (true, false) => (&mut diff.skip, false),
                (false, _) if same => (&mut diff.skip, false),
                (false, true) => (&mut diff.update, true),
                (false, false) => (&mut diff.create, true),
            };
            *counter += 1;
            if writes {
                diff.sample(|| step.connector.redact(record.raw()));
            }
        }
        match page.next_page {
            Some(next) => cursor.page = Some(next),
            None => return Ok(diff),
        }
    }
}

/// Diffs every step and ends the run with the report. A dry run writes nothing, so one that
/// must stop (shutdown, a store error) starts over on its next delivery.
pub(super) async fn run(step: &StepContext<'_>, job: &SyncJob, steps: &[Step]) -> JobOutcome {
    let (ctx, lease) = (step.ctx, step.lease);
    let mut report = DryRunReport::default();
    for s in steps {
        let diff = match s.direction {
            LogDirection::Export => export_diff(step, s.entity).await,
            LogDirection::Import => import_diff(step, s.entity).await,
        };
        match diff {
            Ok(diff) => report.steps.push(diff),
            Err(DryRunError::HandedBack) => {
                return yielded(ctx, job, lease, Continuation::default()).await;
            }
            Err(DryRunError::Store(StoreError::LeaseLost { .. })) => {
                return lease_lost(job, ctx.settings.worker.lease_ttl());
            }
            Err(DryRunError::Store(e)) => {
                return infrastructure_retry_started(ctx, job, lease, &e).await;
            }
            Err(e @ DryRunError::Connector(_)) => {
                let message = format!("dry run of {} {}: {e}", s.entity, s.direction);
                return end_dry_run(ctx, lease, Err(&message)).await;
            }
        }
    }
    end_dry_run(ctx, lease, Ok(&report)).await
}

async fn end_dry_run(
    ctx: &JobContext,
    lease: &LeaseToken,
    outcome: Result<&DryRunReport, &str>,
) -> JobOutcome {
    match ctx.store.finish_dry_run(lease, outcome).await {
        Ok(run) => {
            info!(status = %run.status, "dry run finished");
            JobOutcome::Done
        }
        Err(StoreError::LeaseLost { .. }) => {
            warn!("the dry run was taken over before it could be recorded as finished");
            JobOutcome::Done
        }
        Err(e) => {
            error!(error = %e, "cannot record the end of the dry run; the message will be redelivered");
            JobOutcome::Abandon
        }
    }
}
