//! One import step: pages of ERP changes since the cursor, applied to the platform tables,
//! each page recorded in one transaction fenced by the lease (the platform rows commit with
//! the page's record, or not at all).

use super::export::content_hash;
use super::job::{StepContext, StepEnd};
use passerelle_core::cursor::{IMPORT_OVERLAP, StepCursor};
use passerelle_core::{Entity, LogAction, LogDirection, LogStatus};
use passerelle_store::sync::{ChunkCommit, MappingWrite};
use passerelle_store::{NewLog, StoreError};
use std::collections::HashMap;

pub(super) async fn run_step(
    step: &StepContext<'_>,
    entity: Entity,
) -> Result<StepEnd, StoreError> {
    let store = &step.ctx.store;
    let integration = step.integration;
    let mut cursor = store.import_cursor(integration.id, entity).await?;
    let log = |external_id: Option<String>, action: LogAction| NewLog {
        integration_id: integration.id,
        tenant_id: integration.tenant_id,
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
    };
    loop {
        let page = match step.connector.import_page(entity, &cursor).await {
            Ok(page) => page,
            Err(e) => return Ok(StepEnd::from_error(e)),
        };
        let mut logs = Vec::new();
        let (mut synced, mut skipped, mut failed) = (0, 0, 0);
        // Items the connector could not read: logged, the rest of the page goes on.
        for item in &page.rejected {
            let mut entry = log(item.external_id.clone(), LogAction::Sync);
            entry.status = LogStatus::Failed;
            entry.error_message = Some(item.error.clone());
            entry.response_data = Some(item.raw.clone());
            logs.push(entry);
            failed += 1;
        }
        let external_ids: Vec<String> =
            page.records.iter().map(|r| r.external_id.clone()).collect();
        let known = store
            .mappings_by_external(integration.id, entity.mapping_entity(), &external_ids)
            .await?;
        // Unchanged since the last import: nothing to write.
        let mut changed = Vec::with_capacity(page.records.len());
        for record in page.records {
            if let Some(t) = record.updated_at {
                cursor.max_seen = Some(cursor.max_seen.map_or(t, |m| m.max(t)));
            }
            let hash = content_hash(&record.raw);
            let same = known
                .get(&record.external_id)
                .and_then(|(_, meta)| meta.as_ref())
                .and_then(|m| m.get("import_hash"))
                .and_then(|h| h.as_str())
                == Some(hash.as_str());
            if same && !record.deleted {
                skipped += 1;
            } else {
                changed.push((record, hash));
            }
        }
        let records: Vec<_> = changed.iter().map(|(r, _)| r.clone()).collect();
        let mut chunk_tx = store.begin_chunk(step.lease, step.lease_ttl()).await?;
        let applied = chunk_tx
            .apply_imports(integration.tenant_id, entity, &records, &known)
            .await?;
        let mut mappings = Vec::new();
        let mut unmap = Vec::new();
        // Two ERP records landing on one platform row (same SKU, same email) cannot both be
        // mapped: the first wins, the other is logged.
        let mut claimed: HashMap<String, String> = HashMap::new();
        for ((record, hash), result) in changed.into_iter().zip(applied) {
            let action = if record.deleted {
                LogAction::Delete
            } else if known.contains_key(&record.external_id) {
                LogAction::Update
            } else {
                LogAction::Create
            };
            let mut entry = log(Some(record.external_id.clone()), action);
            entry.response_data = Some(step.connector.redact(&record.raw));
            match result {
                Ok(Some(internal)) => {
                    entry.entity_id = Some(internal.clone());
                    if record.deleted {
                        unmap.push(record.external_id.clone());
                    } else if let Some(first) = claimed.get(&internal) {
                        entry.status = LogStatus::Failed;
                        entry.error_message = Some(format!(
                            "ERP record {} maps to the same platform row ({internal}) as ERP record {first} in this page",
                            record.external_id
                        ));
                        failed += 1;
                        logs.push(entry);
                        continue;
                    } else {
                        claimed.insert(internal.clone(), record.external_id.clone());
                        mappings.push(MappingWrite {
                            internal_id: internal,
                            external_id: record.external_id.clone(),
                            metadata: serde_json::json!({ "import_hash": hash }),
                        });
                    }
                    synced += 1;
                    logs.push(entry);
                }
                Ok(None) => skipped += 1,
                Err(message) => {
                    entry.status = LogStatus::Failed;
                    entry.error_message = Some(message);
                    failed += 1;
                    logs.push(entry);
                }
            }
        }
        let done = page.next_page.is_none();
        if done {
            if let Some(max_seen) = cursor.max_seen.take() {
                cursor.updated_since = Some(max_seen - IMPORT_OVERLAP);
            }
            cursor.page = None;
        } else {
            cursor.page = page.next_page;
        }
        let chunk = ChunkCommit {
            lease: step.lease,
            lease_ttl: step.lease_ttl(),
            entity,
            mappings,
            unmap_external: unmap,
            resolved_intents: Vec::new(),
            logs,
            cursor: StepCursor::Import(cursor.clone()),
            synced,
            skipped,
            failed,
        };
        chunk_tx.commit(chunk, step.ctx.store.now()).await?;
        if done {
            return Ok(StepEnd::Complete);
        }
        if step.should_yield() {
            return Ok(StepEnd::Yield);
        }
    }
}
