//! One import step: pages of ERP changes since the cursor, applied to the platform tables,
//! each page recorded in one transaction fenced by the lease (the platform rows commit with
//! the page's record, or not at all).

use super::conflict::{self, ErpWon, Sorted};
use super::export::{Tally, content_hash};
use super::job::{StepContext, StepEnd};
use passerelle_connectors::ImportPage;
use passerelle_core::cursor::{IMPORT_OVERLAP, ImportCursor, StepCursor};
use passerelle_core::platform::ImportedRecord;
use passerelle_core::{Entity, LogAction, LogDirection, LogStatus, MappingMeta};
use passerelle_store::sync::{ChunkCommit, MappingWrite};
use passerelle_store::{NewLog, StoreError};
use std::collections::HashMap;

/// Mappings of a page's records, by external id: `(internal id, metadata)`.
type Known = HashMap<String, (String, Option<MappingMeta>)>;

/// The mappings of a page's records, by their external ids.
pub(super) async fn known_mappings(
    step: &StepContext<'_>,
    entity: Entity,
    records: &[ImportedRecord],
) -> Result<Known, StoreError> {
    let external_ids: Vec<String> = records.iter().map(|r| r.external_id().to_owned()).collect();
    step.ctx
        .store
        .mappings_by_external(step.integration.id, entity.mapping_entity(), &external_ids)
        .await
}

pub(super) async fn run_step(
    step: &StepContext<'_>,
    entity: Entity,
) -> Result<StepEnd, StoreError> {
    let mut cursor = step
        .ctx
        .store
        .import_cursor(step.integration.id, entity)
        .await?;
    loop {
        let page = match step.connector.import_page(entity, &cursor).await {
            Ok(page) => page,
            Err(e) => return Ok(StepEnd::from_error(e)),
        };
        let next_page = page.next_page.clone();
        let done = next_page.is_none();
        let mut recorded = apply_page(step, entity, &mut cursor, page).await?;
        // Where the next page starts: the ERP's token, or, at the end of a pass, a little
        // before the newest change seen (clock skew and late writes at the ERP lose nothing).
        if done {
            if let Some(max_seen) = cursor.max_seen.take() {
                cursor.updated_since = Some(max_seen - IMPORT_OVERLAP);
            }
            cursor.page = None;
        } else {
            cursor.page = next_page;
        }
        recorded.cursor = StepCursor::Import(cursor.clone());
        let (tx, chunk) = recorded.into_commit(step, entity);
        tx.commit(chunk, step.ctx.store.now()).await?;
        if done {
            return Ok(StepEnd::Complete);
        }
        if step.should_yield() {
            return Ok(StepEnd::Yield);
        }
    }
}

/// A page applied inside its chunk transaction, not yet committed.
struct Recorded<'s> {
    tx: passerelle_store::sync::ChunkTx<'s>,
    mappings: Vec<MappingWrite>,
    unmap: Vec<String>,
    logs: Vec<NewLog>,
    tally: Tally,
    cursor: StepCursor,
}

impl<'s> Recorded<'s> {
    fn into_commit<'a>(
        self,
        step: &'a StepContext<'_>,
        entity: Entity,
    ) -> (passerelle_store::sync::ChunkTx<'s>, ChunkCommit<'a>) {
        let chunk = ChunkCommit {
            lease: step.lease,
            lease_ttl: step.lease_ttl(),
            entity,
            mappings: self.mappings,
            unmap_external: self.unmap,
            resolved_intents: Vec::new(),
            logs: self.logs,
            cursor: self.cursor,
            synced: self.tally.synced,
            skipped: self.tally.skipped,
            failed: self.tally.failed,
        };
        (self.tx, chunk)
    }
}

fn log(
    step: &StepContext<'_>,
    entity: Entity,
    external_id: Option<String>,
    action: LogAction,
) -> NewLog {
    NewLog {
        integration_id: step.integration.id,
        tenant_id: step.integration.tenant_id,
        entity_type: entity.log_entity(),
        entity_id: None,
        external_id,
        action,
        direction: LogDirection::Import,
        status: LogStatus::Success,
        request_data: None,
        response_data: None,
        error_message: None,
        duration_ms: None,
    }
}

/// Logs what the connector could not read, skips what is unchanged since the last import,
/// and writes the rest to the platform tables inside the page's fenced transaction.
async fn apply_page<'s>(
    step: &'s StepContext<'_>,
    entity: Entity,
    cursor: &mut ImportCursor,
    page: ImportPage,
) -> Result<Recorded<'s>, StoreError> {
    let store = &step.ctx.store;
    let mut logs = Vec::new();
    let mut tally = Tally::default();
    // Items the connector could not read: logged, the rest of the page goes on.
    for item in &page.rejected {
        let mut entry = log(step, entity, item.external_id.clone(), LogAction::Sync);
        entry.status = LogStatus::Failed;
        entry.error_message = Some(item.error.clone());
        entry.response_data = Some(item.raw.clone());
        logs.push(entry);
        tally.failed += 1;
    }
    let known = known_mappings(step, entity, &page.records).await?;
    let changed = changed_records(cursor, page.records, &known, &mut tally);
    let Sorted {
        records: changed,
        unmap,
        erp_won,
    } = if conflict::applies(step, entity) {
        conflict::sort_out(step, entity, changed, &known, &mut tally, &mut logs).await?
    } else {
        Sorted {
            records: changed,
            unmap: Vec::new(),
            erp_won: HashMap::new(),
        }
    };
    let records: Vec<ImportedRecord> = changed.iter().map(|(r, _)| r.clone()).collect();
    let mut tx = store.begin_chunk(step.lease, step.lease_ttl()).await?;
    // One outcome per record, in the records' order (the store builds it by index).
    let applied = tx
        .apply_imports(step.integration.tenant_id, entity, &records, &known)
        .await?;
    if applied.len() != records.len() {
        return Err(StoreError::Invalid(format!(
            "the store applied {} of {} imported records",
            applied.len(),
            records.len()
        )));
    }
    let mut recorded = Recorded {
        tx,
        mappings: Vec::new(),
        unmap,
        logs,
        tally,
        cursor: StepCursor::Import(cursor.clone()),
    };
    settle(
        step,
        entity,
        &known,
        changed,
        applied,
        &erp_won,
        &mut recorded,
    );
    Ok(recorded)
}

/// The records to write, each with the hash of its content; those whose content is what the
/// last import stored are counted as skipped. Moves the pass's newest change seen forward.
fn changed_records(
    cursor: &mut ImportCursor,
    records: Vec<ImportedRecord>,
    known: &Known,
    tally: &mut Tally,
) -> Vec<(ImportedRecord, String)> {
    let mut changed = Vec::with_capacity(records.len());
    for record in records {
        if let Some(t) = record.updated_at() {
            cursor.max_seen = Some(cursor.max_seen.map_or(t, |m| m.max(t)));
        }
        let hash = content_hash(record.raw());
        let same = known
            .get(record.external_id())
            .and_then(|(_, meta)| meta.as_ref())
            .and_then(|m| m.import_hash.as_deref())
            == Some(hash.as_str());
        if same && !record.is_tombstone() {
            tally.skipped += 1;
        } else {
            changed.push((record, hash));
        }
    }
    changed
}

/// Turns each record's outcome into its log row and mapping. Two ERP records landing on one
/// platform row (same SKU, same email) cannot both be mapped: the first wins, the other is
/// logged as failed.
fn settle(
    step: &StepContext<'_>,
    entity: Entity,
    known: &Known,
    changed: Vec<(ImportedRecord, String)>,
    applied: Vec<Result<Option<String>, String>>,
    erp_won: &HashMap<String, ErpWon>,
    recorded: &mut Recorded<'_>,
) {
    let mut claimed: HashMap<String, String> = HashMap::new();
    for ((record, hash), result) in changed.into_iter().zip(applied) {
        let external_id = record.external_id().to_owned();
        let action = if record.is_tombstone() {
            LogAction::Delete
        } else if known.contains_key(&external_id) {
            LogAction::Update
        } else {
            LogAction::Create
        };
        let mut entry = log(step, entity, Some(external_id.clone()), action);
        entry.response_data = Some(step.connector.redact(record.raw()));
        if let Some(won) = erp_won.get(&external_id) {
            entry.action = LogAction::Conflict;
            entry.request_data = Some(won.platform.clone());
            entry.error_message = Some(won.message.clone());
        }
        match result {
            Ok(Some(internal)) => {
                entry.entity_id = Some(internal.clone());
                if record.is_tombstone() {
                    recorded.unmap.push(external_id);
                } else if let Some(first) = claimed.get(&internal) {
                    entry.status = LogStatus::Failed;
                    entry.error_message = Some(format!(
                        "ERP record {external_id} maps to the same platform row ({internal}) as ERP record {first} in this page"
                    ));
                    recorded.tally.failed += 1;
                    recorded.logs.push(entry);
                    continue;
                } else {
                    claimed.insert(internal.clone(), external_id.clone());
                    recorded.mappings.push(MappingWrite {
                        internal_id: internal,
                        external_id,
                        metadata: MappingMeta::imported(hash),
                    });
                }
                recorded.tally.synced += 1;
                recorded.logs.push(entry);
            }
            Ok(None) => recorded.tally.skipped += 1,
            Err(message) => {
                entry.status = LogStatus::Failed;
                entry.error_message = Some(message);
                recorded.tally.failed += 1;
                recorded.logs.push(entry);
            }
        }
    }
}
