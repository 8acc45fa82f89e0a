//! Writes: every create of a chunk in one `create` call with a list of values (one
//! transaction at Odoo), the created records read back and matched to ours by our
//! reference; a refused batch retried record by record so only the bad one fails; a create
//! an earlier attempt may have made looked up by our reference first; updates one `write`
//! per record, a few at a time.

use super::OdooConnector;
use super::client::OrmCall;
use super::import::ids_of;
use super::mapping::{Target, adapt_to_version, resolve, target, update_values};
use crate::{ConnectorError, ExportOp, ExportResult, Exported, elapsed_ms};
use passerelle_core::Entity;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::time::Instant;

/// A create still to make: the op's position, our reference and the values.
#[derive(Clone)]
struct Pending {
    index: usize,
    reference: String,
    vals: Value,
}

impl OdooConnector {
    pub(super) async fn export_ops(&self, entity: Entity, ops: Vec<ExportOp>) -> Vec<ExportResult> {
        let Some(target) = target(entity) else {
            return crate::refuse_all(
                &ops,
                &ConnectorError::fatal(
                    "Odoo stock moves through inventory operations: inventory can be imported, not exported",
                ),
            );
        };
        let version = match self.server_version().await {
            Ok(version) => version,
            Err(e) => return crate::refuse_all(&ops, &e),
        };
        let start = Instant::now();
        let mut results: Vec<Option<ExportResult>> = vec![None; ops.len()];
        let mut creates = Vec::new();
        let mut updates = Vec::new();
        for (index, op) in ops.iter().enumerate() {
            let vals = match resolve(op) {
                Ok(vals) => adapt_to_version(target.model, vals, version),
                Err(e) => {
                    results[index] = Some(op.failed(e, start));
                    continue;
                }
            };
            match &op.external_id {
                Some(external) => match external.parse::<i64>() {
                    Ok(id) => updates.push((index, id, update_values(target, vals))),
                    Err(_) => {
                        results[index] = Some(op.failed(
                            ConnectorError::fatal(format!(
                                "the mapping holds {external:?}, not an Odoo record id"
                            )),
                            start,
                        ));
                    }
                },
                None => match reference_of(target, &vals) {
                    Ok(reference) => creates.push(Pending {
                        index,
                        reference,
                        vals,
                    }),
                    Err(e) => results[index] = Some(op.failed(e, start)),
                },
            }
        }
        self.create_all(target, &ops, creates, &mut results).await;
        let written = crate::in_order_concurrently(
            updates
                .iter()
                .map(|(_, id, vals)| (*id, vals.clone()))
                .collect::<Vec<_>>()
                .into_iter()
                .map(|(id, vals)| self.update(target, id, vals)),
            super::EXPORT_PARALLELISM,
        )
        .await;
        for ((index, id, _), outcome) in updates.iter().zip(written) {
            results[*index] = Some(ops[*index].result(
                outcome.map(|()| Exported::written(id.to_string())),
                None,
                elapsed_ms(start),
            ));
        }
        crate::collect_results(results)
    }

    async fn create_all(
        &self,
        target: Target,
        ops: &[ExportOp],
        creates: Vec<Pending>,
        results: &mut [Option<ExportResult>],
    ) {
        let start = Instant::now();
        let mut pending = unique(target, ops, creates, results, start);
        // Creates an earlier attempt may have made: adopt what Odoo already holds.
        let retried: Vec<String> = pending
            .iter()
            .filter(|p| ops[p.index].retried_create)
            .map(|p| p.reference.clone())
            .collect();
        if !retried.is_empty() {
            match self.find_by_reference(target, &retried).await {
                Ok(found) => pending.retain(|p| match found.get(&p.reference) {
                    Some(id) => {
                        results[p.index] = Some(ops[p.index].result(
                            Ok(Exported::found(id.to_string())),
                            Some(json!({"id": id, "found_by": target.reference})),
                            elapsed_ms(start),
                        ));
                        false
                    }
                    None => true,
                }),
                Err(e) => pending.retain(|p| {
                    results[p.index] = Some(ops[p.index].failed(e.clone(), start));
                    false
                }),
            }
        }
        // One `create` per batch of values: Odoo runs each in one transaction.
        for batch in pending.chunks(super::EXPORT_BATCH) {
            self.create_in_batch(target, ops, batch, results, start)
                .await;
        }
    }

    /// One `create` with the batch's values; if Odoo refuses it as a whole (one
    /// transaction), one by one, so the others go in and only the refused one fails, with
    /// Odoo's reason.
    async fn create_in_batch(
        &self,
        target: Target,
        ops: &[ExportOp],
        batch: &[Pending],
        results: &mut [Option<ExportResult>],
        start: Instant,
    ) {
        match self.create_batch(target, batch).await {
            Err(ConnectorError::Rejected { .. }) if batch.len() > 1 => {
                let singles = crate::in_order_concurrently(
                    batch
                        .iter()
                        .map(|p| vec![p.clone()])
                        .collect::<Vec<_>>()
                        .into_iter()
                        .map(|one| async move { self.create_batch(target, &one).await }),
                    super::EXPORT_PARALLELISM,
                )
                .await;
                for (p, created) in batch.iter().zip(singles) {
                    results[p.index] =
                        Some(self.created(target, &ops[p.index], p, &created, start));
                }
            }
            created => {
                for p in batch {
                    results[p.index] =
                        Some(self.created(target, &ops[p.index], p, &created, start));
                }
            }
        }
    }

    /// The result of one pending create from what its batch answered.
    fn created(
        &self,
        target: Target,
        op: &ExportOp,
        pending: &Pending,
        batch: &Result<HashMap<String, i64>, ConnectorError>,
        start: Instant,
    ) -> ExportResult {
        let outcome = match batch {
            Ok(by_reference) => by_reference
                .get(&pending.reference)
                .map(|id| Exported::written(id.to_string()))
                .ok_or_else(|| {
                    ConnectorError::fatal(format!(
                        "{}.create: the records it created, read back, hold no {} {:?}",
                        target.model, target.reference, pending.reference
                    ))
                }),
            Err(e) => Err(e.clone()),
        };
        let response = outcome
            .as_ref()
            .ok()
            .map(|exported| json!({"id": exported.external_id}));
        op.result(outcome, response, elapsed_ms(start))
    }

    /// One `create` with every record's values, then their references read back: our
    /// reference → the Odoo id.
    async fn create_batch(
        &self,
        target: Target,
        pending: &[Pending],
    ) -> Result<HashMap<String, i64>, ConnectorError> {
        let vals: Vec<Value> = pending.iter().map(|p| p.vals.clone()).collect();
        let create = OrmCall::new(target.model, "create").param("vals_list", Value::Array(vals));
        let what = format!("{}.create", target.model);
        let ids = ids_of(&self.orm(&create).await?, &what)?;
        let read = OrmCall::new(target.model, "read")
            .ids(ids)
            .param("fields", json!([target.reference]))
            .with_archived();
        // The records exist now: whatever the read says, creating them again would duplicate
        // them. A failed read is transient, and the retry finds them by our reference.
        match self.orm(&read).await {
            Ok(rows) => Ok(references(&rows, target)),
            Err(e) => Err(ConnectorError::transient(format!(
                "{what} made {} records but reading them back failed ({e}); the retry looks them up by {}",
                pending.len(),
                target.reference
            ))),
        }
    }

    /// The records holding one of `references` (an earlier attempt's creates), by reference;
    /// of several, the oldest.
    async fn find_by_reference(
        &self,
        target: Target,
        references: &[String],
    ) -> Result<HashMap<String, i64>, ConnectorError> {
        let mut domain = vec![json!([target.reference, "in", references])];
        if let Some((field, value)) = target.kind {
            domain.push(json!([field, "=", value]));
        }
        let call = OrmCall::new(target.model, "search_read")
            .param("domain", Value::Array(domain))
            .param("fields", json!([target.reference]))
            .param("order", json!("id desc"))
            .with_archived();
        Ok(self::references(&self.orm(&call).await?, target))
    }

    async fn update(&self, target: Target, id: i64, vals: Value) -> Result<(), ConnectorError> {
        let call = OrmCall::new(target.model, "write")
            .ids(vec![id])
            .param("vals", vals);
        match self.orm(&call).await? {
            Value::Bool(true) => Ok(()),
            other => Err(ConnectorError::transient(format!(
                "{}.write answered {}, not true",
                target.model,
                crate::http::snippet(other.to_string().as_bytes())
            ))),
        }
    }
}

/// The creates of a chunk, each reference once: a second record with the same reference is
/// refused (Odoo would hold two records no lookup could tell apart).
fn unique(
    target: Target,
    ops: &[ExportOp],
    creates: Vec<Pending>,
    results: &mut [Option<ExportResult>],
    start: Instant,
) -> Vec<Pending> {
    let mut seen = HashSet::new();
    let mut pending = Vec::new();
    for create in creates {
        if seen.insert(create.reference.clone()) {
            pending.push(create);
        } else {
            results[create.index] = Some(ops[create.index].failed(
                ConnectorError::rejected(
                    format!(
                        "another record of this chunk has the same {} {:?}",
                        target.reference, create.reference
                    ),
                    None,
                ),
                start,
            ));
        }
    }
    pending
}

/// Our reference in a record's values: the export's key to what Odoo created.
fn reference_of(target: Target, vals: &Value) -> Result<String, ConnectorError> {
    vals.get(target.reference)
        .and_then(Value::as_str)
        .filter(|r| !r.trim().is_empty())
        .map(str::to_owned)
        .ok_or_else(|| {
            ConnectorError::rejected(
                format!(
                    "the record has no {} (our reference at Odoo); it cannot be created safely",
                    target.reference
                ),
                None,
            )
        })
}

/// `reference → id` from rows read with the reference field; later rows win, so rows read
/// newest first leave the oldest.
fn references(rows: &Value, target: Target) -> HashMap<String, i64> {
    rows.as_array()
        .into_iter()
        .flatten()
        .filter_map(|row| {
            Some((
                row.get(target.reference)?.as_str()?.to_owned(),
                row.get("id")?.as_i64()?,
            ))
        })
        .collect()
}
