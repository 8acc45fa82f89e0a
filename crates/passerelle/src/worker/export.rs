//! One export step: pages of platform rows, oldest change first, each chunk mapped, sent and
//! recorded in one transaction.

use super::job::{StepContext, StepEnd};
use passerelle_connectors::{ConnectorError, ExportAction, ExportOp};
use passerelle_core::platform::PlatformRecord;
use passerelle_core::{Entity, LogAction, LogDirection, LogStatus};
use passerelle_store::sync::{
    ChunkCommit, EXPORT_OVERLAP, ExportCursor, KnownMapping, MappingWrite, NewIntent, RowPosition,
};
use passerelle_store::{NewLog, StoreError};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// A stable digest of what we send, kept with the mapping: equal digest, nothing to send.
pub(super) fn content_hash(payload: &serde_json::Value) -> String {
    /// Feeds the serializer's output straight into the digest: no intermediate string.
    struct Hasher(Sha256);
    impl std::io::Write for Hasher {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.update(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut hasher = Hasher(Sha256::new());
    // Serializing a `Value` into a writer that never fails cannot fail.
    let _ = serde_json::to_writer(&mut hasher, payload);
    let digest = hasher.0.finalize();
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(32);
    for b in &digest[..16] {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

/// Whether a mapped row needs no export: what we would send is what we last sent, or the row
/// was written by an import and has not changed since (sending it back would echo the ERP's
/// own data over any edit made there meanwhile).
fn unchanged(known: &KnownMapping, hash: &str, record: &PlatformRecord) -> bool {
    let meta = known.metadata.as_ref();
    let exported_same = meta.and_then(|m| m.get("hash")).and_then(|h| h.as_str()) == Some(hash);
    let imported_untouched = meta.is_some_and(|m| m.get("import_hash").is_some())
        && known
            .last_synced_at
            .is_some_and(|at| at >= record.updated_at());
    exported_same || imported_untouched
}

fn position(record: &PlatformRecord) -> RowPosition {
    match record {
        PlatformRecord::Inventory(s) => RowPosition {
            updated_at: s.updated_at,
            id: s.product_id,
            warehouse: Some(s.warehouse_code.clone()),
        },
        PlatformRecord::Product(r) => RowPosition {
            updated_at: r.updated_at,
            id: r.id,
            warehouse: None,
        },
        PlatformRecord::Customer(r) => RowPosition {
            updated_at: r.updated_at,
            id: r.id,
            warehouse: None,
        },
        PlatformRecord::Order(r) => RowPosition {
            updated_at: r.updated_at,
            id: r.id,
            warehouse: None,
        },
        PlatformRecord::Invoice(r) => RowPosition {
            updated_at: r.updated_at,
            id: r.id,
            warehouse: None,
        },
    }
}

fn log(step: &StepContext<'_>, entity: Entity, internal_id: &str) -> NewLog {
    NewLog {
        integration_id: step.integration.id,
        tenant_id: step.integration.tenant_id,
        entity_type: entity.log_entity(),
        entity_id: Some(internal_id.to_owned()),
        external_id: None,
        action: LogAction::Create,
        direction: LogDirection::Export,
        status: LogStatus::Success,
        request_data: None,
        response_data: None,
        error_message: None,
        duration_ms: None,
    }
}

/// A chunk read, mapped and ready to send: its intents are recorded.
struct Prepared {
    rows: Vec<PlatformRecord>,
    ops: Vec<ExportOp>,
    /// The content hash of each op's payload, as sent (kept with its mapping).
    hashes: Vec<String>,
    /// Row index of each op, to find where to resume after a retryable failure.
    op_rows: Vec<usize>,
    /// Log rows of records that failed before sending (they could not be mapped).
    logs: Vec<NewLog>,
    skipped: i32,
    failed: i32,
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
    let mut prepared = Prepared {
        rows: Vec::new(),
        ops: Vec::new(),
        hashes: Vec::new(),
        op_rows: Vec::new(),
        logs: Vec::new(),
        skipped: 0,
        failed: 0,
    };
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
    for (index, record) in rows.iter().enumerate() {
        let internal_id = &internal_ids[index];
        let payload = match step.connector.map_record(record) {
            Ok(p) => p,
            Err(e) => {
                let mut entry = log(step, entity, internal_id);
                entry.status = LogStatus::Failed;
                entry.action = if mappings.contains_key(internal_id) {
                    LogAction::Update
                } else {
                    LogAction::Create
                };
                entry.error_message = Some(e.to_string());
                prepared.logs.push(entry);
                prepared.failed += 1;
                continue;
            }
        };
        let hash = content_hash(&payload);
        match mappings.get(internal_id) {
            Some(known) if unchanged(known, &hash, record) => prepared.skipped += 1,
            Some(known) => {
                // The key changes with every write of the row (its `updated_at`), so
                // reverting to earlier content is a new request, not a replay.
                let key = content_hash(&serde_json::json!([
                    integration.id,
                    entity,
                    internal_id,
                    hash,
                    record.updated_at()
                ]));
                prepared.ops.push(ExportOp {
                    internal_id: internal_id.clone(),
                    external_id: Some(known.external_id.clone()),
                    idempotency_key: format!("psl-u-{key}"),
                    payload,
                    retried_create: false,
                    intent_recorded_at: None,
                    mapping_metadata: known.metadata.clone(),
                    references: HashMap::new(),
                });
                prepared.hashes.push(hash);
                prepared.op_rows.push(index);
            }
            None => {
                // A create: reuse an earlier attempt's key and body, or record new ones
                // before anything is sent.
                let (key, body, retried, recorded_at) = match intents.get(internal_id) {
                    Some(intent) => (
                        intent.idempotency_key.clone(),
                        intent.request.clone(),
                        true,
                        intent.recorded_at,
                    ),
                    None => {
                        new_intents.push(prepared.ops.len());
                        (uuid::Uuid::new_v4().to_string(), payload, false, None)
                    }
                };
                prepared
                    .hashes
                    .push(if retried { content_hash(&body) } else { hash });
                prepared.ops.push(ExportOp {
                    internal_id: internal_id.clone(),
                    external_id: None,
                    payload: body,
                    idempotency_key: key,
                    retried_create: retried,
                    intent_recorded_at: recorded_at,
                    mapping_metadata: None,
                    references: HashMap::new(),
                });
                prepared.op_rows.push(index);
            }
        }
    }
    let recording: Vec<NewIntent<'_>> = new_intents
        .iter()
        .map(|&i| NewIntent {
            internal_id: &prepared.ops[i].internal_id,
            idempotency_key: &prepared.ops[i].idempotency_key,
            request: &prepared.ops[i].payload,
        })
        .collect();
    let mut in_force = store
        .record_intents(integration.id, entity, step.lease.run_id, &recording)
        .await?;
    for i in new_intents {
        let op = &mut prepared.ops[i];
        if let Some(intent) = in_force.remove(&op.internal_id) {
            // Another attempt recorded its intent first: send its key and body.
            prepared.hashes[i] = content_hash(&intent.request);
            op.idempotency_key = intent.idempotency_key;
            op.payload = intent.request;
            op.retried_create = true;
            op.intent_recorded_at = intent.recorded_at;
        }
    }
    // What the payloads refer to (an order's customer), looked up once for the chunk.
    let wanted: Vec<_> = prepared
        .op_rows
        .iter()
        .flat_map(|&i| step.connector.references(&rows[i]))
        .collect();
    if !wanted.is_empty() {
        let found = store.external_ids_of(integration.id, &wanted).await?;
        for (op, &i) in prepared.ops.iter_mut().zip(&prepared.op_rows) {
            for reference in step.connector.references(&rows[i]) {
                if let Some(external) = found.get(&reference) {
                    op.references.insert(reference, external.clone());
                }
            }
        }
    }
    prepared.rows = rows;
    Ok(prepared)
}

pub(super) async fn run_step(
    step: &StepContext<'_>,
    entity: Entity,
) -> Result<StepEnd, StoreError> {
    let store = &step.ctx.store;
    let integration = step.integration;
    let mut cursor: ExportCursor = store
        .cursor(integration.id, entity, LogDirection::Export)
        .await?
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
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
            commit(
                step,
                entity,
                next,
                Vec::new(),
                Vec::new(),
                Vec::new(),
                (0, 0, 0),
            )
            .await?;
            return Ok(StepEnd::Complete);
        }
        let chunk_started = std::time::Instant::now();
        let Prepared {
            rows,
            ops,
            hashes,
            op_rows,
            mut logs,
            skipped,
            mut failed,
        } = prepared;
        // Where the next chunk starts if this one goes through whole.
        let mut after_all = cursor.clone();
        after_all.after = rows.last().map(position);
        let payloads: Vec<serde_json::Value> = ops.iter().map(|op| op.payload.clone()).collect();
        let send = async {
            if ops.is_empty() {
                Vec::new()
            } else {
                step.connector.export(entity, ops).await
            }
        };
        let previous = async {
            match pending.take() {
                Some(p) => p.await,
                None => Ok(()),
            }
        };
        let look_ahead = async {
            if step.should_yield() {
                None
            } else {
                Some(prepare(step, entity, &after_all).await)
            }
        };
        let ((results, send_ms), (committed, commit_ms), (next_prepared, prepare_ms)) =
            tokio::join!(timed(send), timed(previous), timed(look_ahead));
        tracing::debug!(send_ms, commit_ms, prepare_ms, "export chunk stages");
        committed?;
        let mut mappings_out = Vec::new();
        let mut resolved = Vec::new();
        let mut synced = 0;
        let mut retry: Option<(usize, ConnectorError)> = None;
        let mut fatal: Option<(ConnectorError, bool)> = None;
        for (((result, payload), hash), row_index) in
            results.into_iter().zip(payloads).zip(hashes).zip(op_rows)
        {
            let mut entry = log(step, entity, &result.internal_id);
            entry.action = match result.action {
                ExportAction::Create => LogAction::Create,
                ExportAction::Update => LogAction::Update,
            };
            entry.duration_ms = i32::try_from(result.duration_ms).ok();
            entry.request_data = Some(payload);
            entry.response_data = result.response;
            match result.outcome {
                Ok(exported) => {
                    let mut metadata = serde_json::json!({ "hash": hash });
                    if let (Some(extra), Some(obj)) = (
                        exported.metadata.as_ref().and_then(|m| m.as_object()),
                        metadata.as_object_mut(),
                    ) {
                        for (k, v) in extra {
                            obj.insert(k.clone(), v.clone());
                        }
                    }
                    entry.external_id = Some(exported.external_id.clone());
                    mappings_out.push(MappingWrite {
                        internal_id: result.internal_id.clone(),
                        external_id: exported.external_id,
                        metadata,
                    });
                    if result.action == ExportAction::Create {
                        resolved.push(result.internal_id.clone());
                    }
                    synced += 1;
                    logs.push(entry);
                }
                Err(ConnectorError::Rejected { message, .. }) => {
                    entry.status = LogStatus::Failed;
                    entry.error_message = Some(message);
                    if result.action == ExportAction::Create {
                        // Refused: nothing was created, so the next attempt starts afresh.
                        resolved.push(result.internal_id.clone());
                    }
                    failed += 1;
                    logs.push(entry);
                }
                Err(e) if e.is_retryable() => {
                    if retry.as_ref().is_none_or(|(i, _)| row_index < *i) {
                        retry = Some((row_index, e));
                    }
                }
                Err(e) => {
                    let auth = matches!(e, ConnectorError::Auth { .. });
                    if fatal.is_none() {
                        fatal = Some((e, auth));
                    }
                }
            }
        }
        // Resume point: after the whole chunk, or just before the first row to try again
        // (rows after it that did succeed are mapped now and will be skipped).
        let resume_before = retry
            .as_ref()
            .map(|(i, _)| *i)
            .or(fatal.as_ref().map(|_| 0));
        let next = match resume_before {
            None => after_all,
            Some(0) => cursor.clone(),
            Some(i) => ExportCursor {
                after: Some(position(&rows[i - 1])),
                ..cursor.clone()
            },
        };
        tracing::debug!(
            rows = rows.len(),
            chunk_ms = chunk_started.elapsed().as_millis() as u64,
            "export chunk"
        );
        let this_commit = Box::pin(commit(
            step,
            entity,
            next.clone(),
            mappings_out,
            resolved,
            logs,
            (synced, skipped, failed),
        ));
        cursor = next;
        let stop = fatal.is_some() || retry.is_some() || step.should_yield();
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
        if let Some((error, auth)) = fatal {
            return Ok(StepEnd::Fail {
                error: error.to_string(),
                auth,
            });
        }
        if let Some((_, error)) = retry {
            return Ok(StepEnd::Retry { error });
        }
        return Ok(StepEnd::Yield);
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

#[allow(clippy::too_many_arguments)]
async fn commit(
    step: &StepContext<'_>,
    entity: Entity,
    cursor: ExportCursor,
    mappings: Vec<MappingWrite>,
    resolved_intents: Vec<String>,
    logs: Vec<NewLog>,
    (synced, skipped, failed): (i32, i32, i32),
) -> Result<(), StoreError> {
    let chunk = ChunkCommit {
        lease: step.lease,
        lease_ttl: step.lease_ttl(),
        entity,
        direction: LogDirection::Export,
        mappings,
        unmap_external: Vec::new(),
        resolved_intents,
        logs,
        cursor: serde_json::to_value(&cursor).unwrap_or_default(),
        synced,
        skipped,
        failed,
    };
    step.ctx.store.commit_chunk(chunk, chrono::Utc::now()).await
}

#[cfg(test)]
mod tests {
    use super::content_hash;

    #[test]
    fn content_hash_is_the_first_half_of_the_sha256_of_the_compact_json() {
        // Stored with every mapping: it must never change, or every record is sent again.
        // Reference: python3 -c "import hashlib; print(hashlib.sha256(
        //   b'{\"a\":1,\"b\":[\"x\",null]}').hexdigest()[:32])"
        let value = serde_json::json!({"a": 1, "b": ["x", null]});
        assert_eq!(content_hash(&value), "18c018603b12c4beed8593acb6ad65cd");
    }
}
