//! One export step: pages of platform rows, oldest change first, each chunk planned (mapped,
//! skipped when unchanged, intents recorded), sent, settled against the results (matched by
//! internal id, never by position) and recorded in one transaction.

use super::job::{StepContext, StepEnd};
use passerelle_connectors::{Disposition, ExportAction, ExportOp, ExportResult};
use passerelle_core::cursor::StepCursor;
use passerelle_core::digest::json_short_hash;
use passerelle_core::platform::PlatformRecord;
use passerelle_core::{Entity, LogAction, LogDirection, LogStatus, MappingMeta};
use passerelle_store::sync::{
    ChunkCommit, EXPORT_OVERLAP, ExportCursor, Intent, KnownMapping, MappingWrite, NewIntent,
    RowPosition,
};
use passerelle_store::{NewLog, StoreError};
use std::collections::HashMap;

/// A stable digest of what we send, kept with the mapping: equal digest, nothing to send.
pub(super) fn content_hash(payload: &serde_json::Value) -> String {
    json_short_hash(payload)
}

/// Whether a mapped row needs no export: what we would send is what we last sent, or the row
/// was written by an import and has not changed since (sending it back would echo the ERP's
/// own data over any edit made there meanwhile).
pub(super) fn unchanged(known: &KnownMapping, hash: &str, record: &PlatformRecord) -> bool {
    let meta = known.metadata.as_ref();
    let exported_same = meta.and_then(|m| m.export_hash.as_deref()) == Some(hash);
    let imported_untouched = meta.is_some_and(|m| m.import_hash.is_some())
        && known
            .last_synced_at
            .is_some_and(|at| at >= record.updated_at());
    exported_same || imported_untouched
}

pub(super) fn position(record: &PlatformRecord) -> RowPosition {
    let (id, warehouse) = match record {
        PlatformRecord::Inventory(s) => (s.product_id, Some(s.warehouse_code.clone())),
        PlatformRecord::Product(r) => (r.id, None),
        PlatformRecord::Customer(r) => (r.id, None),
        PlatformRecord::Order(r) => (r.id, None),
        PlatformRecord::Invoice(r) => (r.id, None),
    };
    RowPosition {
        updated_at: record.updated_at(),
        id,
        warehouse,
    }
}

fn log(step: &StepContext<'_>, entity: Entity, internal_id: &str, action: LogAction) -> NewLog {
    NewLog {
        integration_id: step.integration.id,
        tenant_id: step.integration.tenant_id,
        entity_type: entity.log_entity(),
        entity_id: Some(internal_id.to_owned()),
        external_id: None,
        action,
        direction: LogDirection::Export,
        status: LogStatus::Success,
        request_data: None,
        response_data: None,
        error_message: None,
        duration_ms: None,
    }
}

/// What a chunk counts into its run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tally {
    pub synced: i32,
    pub skipped: i32,
    pub failed: i32,
}

/// One record planned for sending: the op itself and what settling its result needs.
struct PlannedOp {
    op: ExportOp,
    /// The content hash of the payload as sent (kept with its mapping).
    hash: String,
    /// Index of the record's row in the chunk, to find where to resume after a retry.
    row: usize,
}

/// A chunk read, mapped and ready to send: its intents are recorded.
#[derive(Default)]
struct Prepared {
    rows: Vec<PlatformRecord>,
    planned: Vec<PlannedOp>,
    /// Log rows of records that failed before sending (they could not be mapped).
    logs: Vec<NewLog>,
    tally: Tally,
}

/// Reads the page after `cursor`, maps it, skips what is unchanged, records create intents and
/// looks up the references the payloads need.
async fn prepare(
    step: &StepContext<'_>,
    entity: Entity,
    cursor: &ExportCursor,
) -> Result<Prepared, StoreError> {
    let store = &step.ctx.store;
    let integration = step.integration;
    let rows = store
        .export_page(integration.tenant_id, entity, cursor, step.chunk_size())
        .await?;
    let mut prepared = Prepared::default();
    if rows.is_empty() {
        return Ok(prepared);
    }
    let internal_ids: Vec<String> = rows.iter().map(PlatformRecord::internal_id).collect();
    // Two independent reads, on two pooled connections at once.
    let (mappings, intents) = tokio::try_join!(
        store.mappings_of(integration.id, entity.mapping_entity(), &internal_ids),
        store.intents_of(integration.id, entity, &internal_ids),
    )?;
    // Ops that are first attempts at a create: their intents are recorded below.
    let mut new_intents: Vec<usize> = Vec::new();
    for (row, (record, internal_id)) in rows.iter().zip(internal_ids).enumerate() {
        let payload = match step.connector.map_record(record) {
            Ok(p) => p,
            Err(e) => {
                let action = if mappings.contains_key(&internal_id) {
                    LogAction::Update
                } else {
                    LogAction::Create
                };
                let mut entry = log(step, entity, &internal_id, action);
                entry.status = LogStatus::Failed;
                entry.error_message = Some(e.to_string());
                prepared.logs.push(entry);
                prepared.tally.failed += 1;
                continue;
            }
        };
        let hash = content_hash(&payload);
        let planned = match mappings.get(&internal_id) {
            Some(known) if unchanged(known, &hash, record) => {
                prepared.tally.skipped += 1;
                continue;
            }
            Some(known) => plan_update(step, entity, record, internal_id, known, payload, hash),
            None => {
                let earlier = intents.get(&internal_id);
                let planned = plan_create(internal_id, payload, hash, earlier);
                if !planned.op.retried_create {
                    new_intents.push(prepared.planned.len());
                }
                planned
            }
        };
        prepared.planned.push(PlannedOp { row, ..planned });
    }
    record_intents(step, entity, &mut prepared.planned, &new_intents).await?;
    resolve_references(step, &rows, &mut prepared.planned).await?;
    prepared.rows = rows;
    Ok(prepared)
}

/// An update of a record the ERP has: its key changes with every write of the row (its
/// `updated_at`), so reverting to earlier content is a new request, not a replay.
fn plan_update(
    step: &StepContext<'_>,
    entity: Entity,
    record: &PlatformRecord,
    internal_id: String,
    known: &KnownMapping,
    payload: serde_json::Value,
    hash: String,
) -> PlannedOp {
    let key = content_hash(&serde_json::json!([
        step.integration.id,
        entity,
        internal_id,
        hash,
        record.updated_at()
    ]));
    PlannedOp {
        op: ExportOp {
            internal_id,
            external_id: Some(known.external_id.clone()),
            idempotency_key: format!("psl-u-{key}"),
            payload,
            retried_create: false,
            intent_recorded_at: None,
            mapping_metadata: known
                .metadata
                .as_ref()
                .map(|m| m.connector.clone())
                .unwrap_or_default(),
            references: HashMap::new(),
        },
        hash,
        row: 0,
    }
}

/// A create: reuse an earlier attempt's key and body, or a new key whose intent is recorded
/// before anything is sent.
fn plan_create(
    internal_id: String,
    payload: serde_json::Value,
    hash: String,
    earlier: Option<&Intent>,
) -> PlannedOp {
    let (key, body, hash, recorded_at) = match earlier {
        Some(intent) => (
            intent.idempotency_key.clone(),
            intent.request.clone(),
            content_hash(&intent.request),
            intent.recorded_at,
        ),
        None => (uuid::Uuid::new_v4().to_string(), payload, hash, None),
    };
    PlannedOp {
        op: ExportOp {
            internal_id,
            external_id: None,
            payload: body,
            idempotency_key: key,
            retried_create: earlier.is_some(),
            intent_recorded_at: recorded_at,
            mapping_metadata: serde_json::Map::new(),
            references: HashMap::new(),
        },
        hash,
        row: 0,
    }
}

/// Records the intents of first-attempt creates; where another attempt recorded one first,
/// its key and body are what we send.
async fn record_intents(
    step: &StepContext<'_>,
    entity: Entity,
    planned: &mut [PlannedOp],
    new_intents: &[usize],
) -> Result<(), StoreError> {
    let recording: Vec<NewIntent<'_>> = new_intents
        .iter()
        .map(|&i| NewIntent {
            internal_id: &planned[i].op.internal_id,
            idempotency_key: &planned[i].op.idempotency_key,
            request: &planned[i].op.payload,
        })
        .collect();
    let mut in_force = step
        .ctx
        .store
        .record_intents(step.integration.id, entity, step.lease.run_id, &recording)
        .await?;
    for &i in new_intents {
        let planned = &mut planned[i];
        if let Some(intent) = in_force.remove(&planned.op.internal_id) {
            planned.hash = content_hash(&intent.request);
            planned.op.idempotency_key = intent.idempotency_key;
            planned.op.payload = intent.request;
            planned.op.retried_create = true;
            planned.op.intent_recorded_at = intent.recorded_at;
        }
    }
    Ok(())
}

/// What the payloads refer to (an order's customer), looked up once for the chunk.
async fn resolve_references(
    step: &StepContext<'_>,
    rows: &[PlatformRecord],
    planned: &mut [PlannedOp],
) -> Result<(), StoreError> {
    let wanted: Vec<_> = planned
        .iter()
        .flat_map(|p| step.connector.references(&rows[p.row]))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let found = step
        .ctx
        .store
        .external_ids_of(step.integration.id, &wanted)
        .await?;
    for p in planned {
        for reference in step.connector.references(&rows[p.row]) {
            if let Some(external) = found.get(&reference) {
                p.op.references.insert(reference, external.clone());
            }
        }
    }
    Ok(())
}

pub(super) async fn run_step(
    step: &StepContext<'_>,
    entity: Entity,
) -> Result<StepEnd, StoreError> {
    let store = &step.ctx.store;
    let mut cursor = store.export_cursor(step.integration.id, entity).await?;
    if cursor.pass_started_at.is_none() {
        cursor.pass_started_at = Some(store.db_now().await?);
    }
    // A three-stage pipeline: while chunk N is sent, chunk N-1 commits and chunk N+1 is read,
    // mapped and its intents recorded. Safe: every create's intent is recorded before it is
    // sent; commits stay in order; a chunk read before the previous one committed may see a
    // record's mapping missing, and then finds that record's intent and replays it.
    let mut pending: Option<PendingCommit<'_>> = None;
    let mut prepared = prepare(step, entity, &cursor).await?;
    loop {
        if prepared.rows.is_empty() {
            if let Some(previous) = pending.take() {
                previous.await?;
            }
            // Pass complete: the next one re-reads a little before this one's start.
            let next = ExportCursor {
                since: cursor.pass_started_at.map(|t| t - EXPORT_OVERLAP),
                pass_started_at: None,
                after: None,
            };
            commit(step, entity, next, Settled::default()).await?;
            return Ok(StepEnd::Complete);
        }
        // Where the next chunk starts if this one goes through whole.
        let mut after_all = cursor.clone();
        after_all.after = prepared.rows.last().map(position);
        let (results, committed, next_prepared) =
            send_while_committing_and_reading(step, entity, &prepared, pending.take(), &after_all)
                .await;
        committed?;
        let Prepared {
            rows,
            planned,
            logs,
            tally,
        } = prepared;
        let mut settled = settle(step, entity, planned, logs, tally, results);
        let end = settled.end.take();
        let next = advance(&cursor, after_all, &rows, settled.resume_before);
        let this_commit = Box::pin(commit(step, entity, next.clone(), settled));
        cursor = next;
        let stop = end.is_some() || step.should_yield();
        match next_prepared {
            Some(Ok(next_chunk)) if !stop => {
                pending = Some(this_commit);
                prepared = next_chunk;
                continue;
            }
            Some(Err(e)) if !stop => {
                // Record what this chunk did before giving up on the next one.
                this_commit.await?;
                return Err(e);
            }
            // Stopping here: the chunk read ahead (if any) is dropped; its intents stay and
            // the next attempt replays them.
            _ => this_commit.await?,
        }
        return Ok(end.unwrap_or(StepEnd::Yield));
    }
}

/// Sends a chunk while the previous one commits and the next one is read and planned.
async fn send_while_committing_and_reading<'a>(
    step: &'a StepContext<'a>,
    entity: Entity,
    prepared: &Prepared,
    previous: Option<PendingCommit<'a>>,
    after_all: &ExportCursor,
) -> (
    Vec<ExportResult>,
    Result<(), StoreError>,
    Option<Result<Prepared, StoreError>>,
) {
    let ops: Vec<ExportOp> = prepared.planned.iter().map(|p| p.op.clone()).collect();
    let send = async {
        if ops.is_empty() {
            Vec::new()
        } else {
            step.connector.export(entity, ops).await
        }
    };
    let previous = async {
        match previous {
            Some(p) => p.await,
            None => Ok(()),
        }
    };
    let look_ahead = async {
        if step.should_yield() {
            None
        } else {
            Some(prepare(step, entity, after_all).await)
        }
    };
    let ((results, send_ms), (committed, commit_ms), (next, prepare_ms)) =
        tokio::join!(timed(send), timed(previous), timed(look_ahead));
    tracing::debug!(
        send_ms,
        commit_ms,
        prepare_ms,
        rows = prepared.rows.len(),
        "export chunk stages"
    );
    (results, committed, next)
}

/// What one chunk's results come to: what to record, and whether the step stops here.
#[derive(Default)]
struct Settled {
    mappings: Vec<MappingWrite>,
    /// Creates whose outcome is now known (created, or refused by the ERP).
    resolved: Vec<String>,
    logs: Vec<NewLog>,
    tally: Tally,
    /// The first row not to move past: the earliest row to retry, or 0 when the chunk must
    /// be tried again whole (a run-ending error, a connector that mismatched its results).
    resume_before: Option<usize>,
    /// Why the step stops after this chunk, if it does.
    end: Option<StepEnd>,
}

impl Settled {
    fn stop_before(&mut self, row: usize, end: StepEnd) {
        if self.resume_before.is_none_or(|r| row < r) {
            self.resume_before = Some(row);
        }
        // The first run-ending error wins over a retry; a retry over nothing.
        let ends_run = matches!(self.end, Some(StepEnd::Fail { .. }));
        if !ends_run {
            self.end = Some(end);
        }
    }
}

/// Matches each result to the op it answers by internal id. A result for a record that was
/// not sent (or answered twice), or a record left unanswered, is a connector bug: the chunk
/// fails loudly and the cursor stays before it, so no record is skipped unsent.
fn settle(
    step: &StepContext<'_>,
    entity: Entity,
    planned: Vec<PlannedOp>,
    logs: Vec<NewLog>,
    tally: Tally,
    results: Vec<ExportResult>,
) -> Settled {
    let mut settled = Settled {
        logs,
        tally,
        ..Settled::default()
    };
    let mut awaiting: HashMap<String, PlannedOp> = planned
        .into_iter()
        .map(|p| (p.op.internal_id.clone(), p))
        .collect();
    let mut unexpected: Vec<String> = Vec::new();
    for result in results {
        match awaiting.remove(&result.internal_id) {
            Some(planned) => settle_one(step, entity, &mut settled, planned, result),
            None => unexpected.push(result.internal_id),
        }
    }
    if !unexpected.is_empty() || !awaiting.is_empty() {
        let mut missing: Vec<String> = awaiting.into_keys().collect();
        missing.sort();
        unexpected.sort();
        let error = format!(
            "the {} connector answered the wrong records for this {entity} chunk (no result for [{}]; results not asked for or repeated: [{}]); a connector bug: the chunk stops here and nothing after it is skipped",
            step.integration.integration_type,
            missing.join(", "),
            unexpected.join(", ")
        );
        tracing::error!(%error, "export results do not match the ops sent");
        settled.stop_before(0, StepEnd::Fail { error, flag: false });
    }
    settled
}

fn settle_one(
    step: &StepContext<'_>,
    entity: Entity,
    settled: &mut Settled,
    planned: PlannedOp,
    result: ExportResult,
) {
    let action = match result.action {
        ExportAction::Create => LogAction::Create,
        ExportAction::Update => LogAction::Update,
    };
    let mut entry = log(step, entity, &result.internal_id, action);
    entry.duration_ms = i32::try_from(result.duration_ms).ok();
    entry.request_data = Some(planned.op.payload);
    entry.response_data = result.response;
    let error = match result.outcome {
        Ok(exported) => {
            let metadata = MappingMeta::exported(planned.hash, exported.metadata);
            entry.external_id = Some(exported.external_id.clone());
            settled.mappings.push(MappingWrite {
                internal_id: result.internal_id.clone(),
                external_id: exported.external_id,
                metadata,
            });
            if result.action == ExportAction::Create {
                settled.resolved.push(result.internal_id);
            }
            settled.tally.synced += 1;
            settled.logs.push(entry);
            return;
        }
        Err(error) => error,
    };
    match error.disposition() {
        Disposition::SkipRecord => {
            entry.status = LogStatus::Failed;
            entry.error_message = Some(error.to_string());
            if result.action == ExportAction::Create {
                // Refused: nothing was created, so the next attempt starts afresh.
                settled.resolved.push(result.internal_id);
            }
            settled.tally.failed += 1;
            settled.logs.push(entry);
        }
        Disposition::RetryLater => settled.stop_before(planned.row, StepEnd::Retry { error }),
        Disposition::FailRun | Disposition::FailRunAndFlag => {
            settled.stop_before(0, StepEnd::failed(&error))
        }
    }
}

/// Where the next chunk starts: after the whole chunk, or just before the first row to try
/// again (rows after it that did succeed are mapped now and will be skipped).
fn advance(
    cursor: &ExportCursor,
    after_all: ExportCursor,
    rows: &[PlatformRecord],
    resume_before: Option<usize>,
) -> ExportCursor {
    match resume_before {
        None => after_all,
        Some(0) => cursor.clone(),
        // `i` is the index of a row of this chunk, past the first.
        Some(i) => ExportCursor {
            after: Some(position(&rows[i - 1])),
            ..cursor.clone()
        },
    }
}

async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, u64) {
    let t = std::time::Instant::now();
    let out = f.await;
    (out, t.elapsed().as_millis() as u64)
}

/// A chunk's commit still under way.
type PendingCommit<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), StoreError>> + Send + 'a>>;

async fn commit(
    step: &StepContext<'_>,
    entity: Entity,
    cursor: ExportCursor,
    settled: Settled,
) -> Result<(), StoreError> {
    let chunk = ChunkCommit {
        lease: step.lease,
        lease_ttl: step.lease_ttl(),
        entity,
        mappings: settled.mappings,
        unmap_external: Vec::new(),
        resolved_intents: settled.resolved,
        logs: settled.logs,
        cursor: StepCursor::Export(cursor),
        synced: settled.tally.synced,
        skipped: settled.tally.skipped,
        failed: settled.tally.failed,
    };
    step.ctx
        .store
        .commit_chunk(chunk, step.ctx.store.now())
        .await
}
