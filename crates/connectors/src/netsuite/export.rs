//! Writes, a few at a time: creates as `externalId` upserts (a repeated one replaces what
//! the first made), updates as `PATCH` by internal id with the item sublist replaced, and
//! invoices made from their order (`!transform/invoice`), looked up by `externalId` before a
//! create an earlier attempt may have made.

use super::NetSuiteConnector;
use super::mapping::{record_type, resolve};
use crate::{ConnectorError, ExportOp, ExportResult, Exported, elapsed_ms};
use passerelle_core::Entity;
use reqwest::Method;
use serde_json::{Map, Value};
use std::time::Instant;

/// The fields of an invoice a `PATCH` may change (its lines came from its order).
const INVOICE_HEADER: [&str; 3] = ["tranDate", "dueDate", "otherRefNum"];
/// The sublists we write whole: an item's pricing rows, a transaction's lines.
const SUBLISTS: [&str; 2] = ["price", "item"];

fn text<'a>(values: &'a Value, field: &str) -> Result<&'a str, ConnectorError> {
    values
        .get(field)
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ConnectorError::rejected(format!("the record has no {field}"), None))
}

/// `values` without the listed fields.
fn without(values: &Value, fields: &[&str]) -> Value {
    let mut out = values.as_object().cloned().unwrap_or_default();
    for field in fields {
        out.remove(*field);
    }
    Value::Object(out)
}

impl NetSuiteConnector {
    pub(super) async fn export_ops(&self, entity: Entity, ops: Vec<ExportOp>) -> Vec<ExportResult> {
        let Some(record_type) = record_type(entity) else {
            return crate::refuse_all(
                &ops,
                &ConnectorError::fatal(
                    "NetSuite stock moves through inventory adjustments: inventory is not exported",
                ),
            );
        };
        let parallel = self.settings.parallelism();
        crate::in_order_concurrently(
            ops.into_iter()
                .map(|op| self.export_one(entity, record_type, op)),
            parallel,
        )
        .await
    }

    async fn export_one(
        &self,
        entity: Entity,
        record_type: &'static str,
        op: ExportOp,
    ) -> ExportResult {
        let start = Instant::now();
        let outcome = self.write(entity, record_type, &op).await;
        let response = outcome
            .as_ref()
            .ok()
            .map(|e| serde_json::json!({"id": e.external_id, "type": record_type}));
        op.result(outcome, response, elapsed_ms(start))
    }

    async fn write(
        &self,
        entity: Entity,
        record_type: &'static str,
        op: &ExportOp,
    ) -> Result<Exported, ConnectorError> {
        let values = resolve(op)?;
        match (&op.external_id, entity) {
            (Some(id), Entity::Invoice) => {
                let header: Map<String, Value> = INVOICE_HEADER
                    .iter()
                    .filter_map(|f| values.get(*f).map(|v| ((*f).to_owned(), v.clone())))
                    .collect();
                self.patch(record_type, id, Value::Object(header)).await
            }
            (Some(id), _) => {
                self.patch(record_type, id, without(&values, &["externalId"]))
                    .await
            }
            (None, Entity::Invoice) => self.create_invoice(op, &values).await,
            (None, _) => self.upsert(record_type, &values).await,
        }
    }

    /// `PUT /record/v1/{type}/eid:{externalId}`: creates the record, or replaces the one an
    /// earlier attempt made.
    async fn upsert(&self, record_type: &str, values: &Value) -> Result<Exported, ConnectorError> {
        let external = text(values, "externalId")?;
        let url = self
            .settings
            .rest(["record", "v1", record_type, &format!("eid:{external}")]);
        let reply = self
            .request(
                Method::PUT,
                url,
                Some(without(values, &["externalId"])),
                &[],
                true,
            )
            .await
            .map_err(|e| refused(e, record_type))?;
        Ok(Exported::written(Self::created_id(&reply, record_type)?))
    }

    async fn patch(
        &self,
        record_type: &str,
        id: &str,
        values: Value,
    ) -> Result<Exported, ConnectorError> {
        let mut url = self.settings.rest(["record", "v1", record_type, id]);
        let replaced: Vec<&str> = SUBLISTS
            .into_iter()
            .filter(|s| values.get(*s).is_some())
            .collect();
        if !replaced.is_empty() {
            // Our rows are the whole truth; a PATCH would otherwise merge them with NetSuite's.
            url.query_pairs_mut()
                .append_pair("replace", &replaced.join(","));
        }
        self.request(Method::PATCH, url, Some(values), &[], true)
            .await
            .map_err(|e| refused(e, record_type))?;
        Ok(Exported::written(id))
    }

    /// An invoice from its order, or (without the order at NetSuite) standing alone on
    /// `invoice_item_id`; first looked up by `externalId` when it may exist already.
    async fn create_invoice(
        &self,
        op: &ExportOp,
        values: &Value,
    ) -> Result<Exported, ConnectorError> {
        let external = text(values, "externalId")?;
        if op.retried_create {
            let url = self
                .settings
                .rest(["record", "v1", "invoice", &format!("eid:{external}")]);
            match self.get_json(url, "GET invoice").await {
                Ok(found) => {
                    let id = found
                        .get("id")
                        .and_then(Value::as_str)
                        .ok_or_else(|| ConnectorError::transient("NetSuite's invoice has no id"))?;
                    return Ok(Exported::found(id));
                }
                Err(ConnectorError::Rejected {
                    status: Some(404), ..
                }) => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(order) = values.pointer("/createdFrom/id").and_then(Value::as_str) {
            let url =
                self.settings
                    .rest(["record", "v1", "salesOrder", order, "!transform", "invoice"]);
            let body = without(values, &["createdFrom", "entity", "item"]);
            let reply = self
                .request(Method::POST, url, Some(body), &[], false)
                .await
                .map_err(|e| refused(e, "invoice"))?;
            return Ok(Exported::written(Self::created_id(&reply, "invoice")?));
        }
        if values.get("item").is_none() {
            return Err(ConnectorError::rejected(
                format!(
                    "invoice {external}: its order is not in NetSuite (sync orders first) and settings.invoice_item_id is unset, so it cannot stand alone"
                ),
                None,
            ));
        }
        self.upsert("invoice", &without(values, &["createdFrom"]))
            .await
    }
}

/// A refusal names the record type.
fn refused(error: ConnectorError, record_type: &str) -> ConnectorError {
    match error {
        ConnectorError::Rejected { message, status } => ConnectorError::Rejected {
            message: format!("NetSuite refused the {record_type}: {message}"),
            status,
        },
        other => other,
    }
}
