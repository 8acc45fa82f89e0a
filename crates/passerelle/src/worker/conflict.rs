//! Bidirectional imports: an ERP change to a record the platform also changed since it was
//! last synced is a conflict, settled by the integration's `conflict_policy`; an ERP copy
//! older than the platform's change is not written over it.

use super::job::StepContext;
use passerelle_core::conflict::{ConflictPolicy, Winner};
use passerelle_core::platform::ImportedRecord;
use passerelle_core::{Entity, LogAction, LogDirection, LogStatus, SyncDirection};
use passerelle_store::{NewLog, StoreError};
use std::collections::HashMap;

use super::export::Tally;

/// Mappings of a page's records, by external id: `(internal id, metadata)`.
type Known = HashMap<String, (String, Option<passerelle_core::MappingMeta>)>;

/// A conflict the ERP won: its version is written; the log row says so, with the platform's.
#[derive(Debug, Clone)]
pub(super) struct ErpWon {
    pub platform: serde_json::Value,
    pub message: String,
}

/// What a page's conflicts left to write, and what they decided.
pub(super) struct Sorted {
    /// The records to write (conflicts the ERP won among them).
    pub records: Vec<(ImportedRecord, String)>,
    /// External ids whose mapping goes: ERP deletions the platform won (the export then
    /// creates the platform's record again).
    pub unmap: Vec<String>,
    /// By external id: the conflicts the ERP won.
    pub erp_won: HashMap<String, ErpWon>,
}

/// Whether this step's records also go the other way in this integration.
pub(super) fn applies(step: &StepContext<'_>, entity: Entity) -> bool {
    step.integration.sync_direction == SyncDirection::Bidirectional
        && step.connector.capabilities().export.contains(&entity)
}

fn message(policy: &ConflictPolicy, entity: Entity, winner: Winner) -> String {
    let key = ConflictPolicy::key(entity);
    let how = if policy.is_chosen(entity) {
        "as the integration's conflict_policy says"
    } else {
        "by default"
    };
    match winner {
        Winner::Erp => format!(
            "changed on the platform and at the ERP since the last sync: the ERP's version was written ({key}: erp, {how}); the platform's is in request_data"
        ),
        Winner::Platform => format!(
            "changed on the platform and at the ERP since the last sync: the platform's version was kept and is exported next ({key}: platform, {how}); the ERP's is in response_data"
        ),
    }
}

/// The log row of a conflict the platform won: `(platform, erp)` versions.
fn platform_won(
    step: &StepContext<'_>,
    entity: Entity,
    internal: String,
    record: &ImportedRecord,
    (platform, erp): (serde_json::Value, serde_json::Value),
    message: String,
) -> NewLog {
    NewLog {
        integration_id: step.integration.id,
        tenant_id: step.integration.tenant_id,
        entity_type: entity.log_entity(),
        entity_id: Some(internal),
        external_id: Some(record.external_id().to_owned()),
        action: LogAction::Conflict,
        direction: LogDirection::Import,
        status: LogStatus::Success,
        request_data: Some(platform),
        response_data: Some(erp),
        error_message: Some(message),
        duration_ms: None,
    }
}

/// Sorts a page's changed records: no conflict, written; an ERP copy older than the
/// platform's change, skipped (the export sends the platform's); a conflict, written or
/// skipped as the policy says, and logged with both versions either way.
pub(super) async fn sort_out(
    step: &StepContext<'_>,
    entity: Entity,
    changed: Vec<(ImportedRecord, String)>,
    known: &Known,
    tally: &mut Tally,
    logs: &mut Vec<NewLog>,
) -> Result<Sorted, StoreError> {
    let store = &step.ctx.store;
    let internal: Vec<String> = changed
        .iter()
        .filter_map(|(r, _)| known.get(r.external_id()).map(|(i, _)| i.clone()))
        .collect();
    if internal.is_empty() {
        return Ok(Sorted {
            records: changed,
            unmap: Vec::new(),
            erp_won: HashMap::new(),
        });
    }
    let (mappings, snapshots) = tokio::try_join!(
        store.mappings_of(step.integration.id, entity.mapping_entity(), &internal),
        store.platform_snapshots(step.integration.tenant_id, entity, &internal),
    )?;
    let policy = &step.integration.conflict_policy.0;
    let mut sorted = Sorted {
        records: Vec::with_capacity(changed.len()),
        unmap: Vec::new(),
        erp_won: HashMap::new(),
    };
    for (record, hash) in changed {
        let found = known.get(record.external_id()).and_then(|(internal, _)| {
            let last = mappings.get(internal)?.last_synced_at?;
            Some((internal.clone(), last, snapshots.get(internal)?))
        });
        let Some((internal, last, snapshot)) = found else {
            sorted.records.push((record, hash));
            continue;
        };
        let platform_changed = snapshot.updated_at > last;
        // A deletion is a change, whenever the ERP dates it.
        let erp_changed = record.is_tombstone() || record.updated_at().is_none_or(|t| t > last);
        match (platform_changed, erp_changed) {
            (false, _) => sorted.records.push((record, hash)),
            // The ERP holds what we last synced; the platform changed since: keep it.
            (true, false) => tally.skipped += 1,
            (true, true) => {
                let winner = policy.winner(entity);
                let text = message(policy, entity, winner);
                match winner {
                    Winner::Erp => {
                        sorted.erp_won.insert(
                            record.external_id().to_owned(),
                            ErpWon {
                                platform: snapshot.row.clone(),
                                message: text,
                            },
                        );
                        sorted.records.push((record, hash));
                    }
                    Winner::Platform => {
                        let versions = (snapshot.row.clone(), step.connector.redact(record.raw()));
                        if record.is_tombstone() {
                            sorted.unmap.push(record.external_id().to_owned());
                        }
                        logs.push(platform_won(
                            step, entity, internal, &record, versions, text,
                        ));
                        tally.skipped += 1;
                    }
                }
            }
        }
    }
    Ok(sorted)
}
