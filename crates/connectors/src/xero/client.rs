//! Xero's transport: the bearer token and tenant header on every call (a `401` refreshes
//! once and repeats), batched writes with an `Idempotency-Key`, and the lookup by our
//! reference before a create an earlier attempt may have made.

use super::{OrderDocument, XeroConnector};
use crate::http::{HttpCall, HttpReply, snippet};
use crate::{ConnectionTest, ConnectorError, ExportAction, ExportOp, ExportResult, Exported};
use crate::{collect_results, elapsed_ms};
use passerelle_core::{Entity, MappingEntityType};
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, HeaderName, HeaderValue};
use serde_json::{Value, json};
use std::time::Instant;

pub(super) fn header(name: &'static str, value: &str) -> Option<(HeaderName, HeaderValue)> {
    HeaderValue::from_str(value)
        .ok()
        .map(|v| (HeaderName::from_static(name), v))
}

/// Where an entity's records go: the collection and its id field.
#[derive(Debug, Clone, Copy)]
pub(super) struct Collection {
    name: &'static str,
    id_field: &'static str,
}

/// An op before the batches: still to send, or answered already.
enum Prepared {
    Send(ExportOp),
    Done(ExportResult),
}

impl XeroConnector {
    /// An API call with the bearer token and tenant header; a 401 refreshes once and repeats.
    pub(super) async fn api(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
        extra: Vec<(HeaderName, HeaderValue)>,
    ) -> Result<HttpReply, ConnectorError> {
        let mut url = self.settings.api(path);
        crate::urls::append_query(&mut url, query);
        let keyed = extra.iter().any(|(n, _)| n.as_str() == "idempotency-key");
        let idempotent = method != Method::POST && method != Method::PUT || keyed;
        let build = |bearer| {
            let mut headers = vec![(AUTHORIZATION, bearer)];
            headers.extend(header("xero-tenant-id", &self.settings.tenant_id));
            headers.extend(extra.iter().cloned());
            HttpCall {
                conflict_means_in_flight: keyed,
                ..crate::json_call(
                    method.clone(),
                    url.clone(),
                    headers,
                    body.clone(),
                    idempotent,
                )
            }
        };
        let refused = "Xero refused a freshly refreshed access token; check the app's scopes and the tenant connection";
        self.tokens
            .send_authorised(&self.http, &self.http, "Xero", refused, build)
            .await
    }

    /// Proves the token and that the app is connected to the tenant (`GET /connections`).
    pub(super) async fn connection_test(&self) -> Result<ConnectionTest, ConnectorError> {
        let start = Instant::now();
        let token = self.tokens.access_token(&self.http, false).await?;
        let headers = vec![(AUTHORIZATION, crate::oauth::bearer(&token, "Xero")?)];
        let url = self.settings.api("/connections");
        let call = crate::json_call(Method::GET, url, headers, None, true);
        let reply = self
            .http
            .send(&call)
            .await
            .map_err(|e| self.http.redactor().error(e))?;
        let body = reply.json("GET /connections")?;
        let connection = body
            .as_array()
            .and_then(|list| {
                list.iter().find(|c| {
                    c.get("tenantId").and_then(|t| t.as_str())
                        == Some(self.settings.tenant_id.as_str())
                })
            })
            .ok_or_else(|| ConnectorError::Auth {
                message: format!(
                    "the Xero app is not connected to tenant {}; reconnect it to that organisation",
                    self.settings.tenant_id
                ),
            })?;
        Ok(ConnectionTest {
            message: format!(
                "connected to Xero organisation {}",
                connection
                    .get("tenantName")
                    .and_then(|n| n.as_str())
                    .unwrap_or(&self.settings.tenant_id)
            ),
            response_time_ms: u64::from(elapsed_ms(start)),
        })
    }

    fn collection(&self, entity: Entity) -> Option<Collection> {
        let (name, id_field) = match entity {
            Entity::Product => ("Items", "ItemID"),
            Entity::Customer => ("Contacts", "ContactID"),
            Entity::Order => match self.settings.order_document {
                OrderDocument::Quote => ("Quotes", "QuoteID"),
                OrderDocument::DraftInvoice => ("Invoices", "InvoiceID"),
            },
            Entity::Invoice => ("Invoices", "InvoiceID"),
            Entity::Inventory => return None,
        };
        Some(Collection { name, id_field })
    }

    /// Sends records of one entity: the contacts filled in, retried creates looked up, the
    /// rest in batches of creates and of updates.
    pub(super) async fn export_ops(&self, entity: Entity, ops: Vec<ExportOp>) -> Vec<ExportResult> {
        let Some(collection) = self.collection(entity) else {
            return crate::refuse_all(
                &ops,
                &ConnectorError::fatal("Xero's stock is read-only: inventory cannot be exported"),
            );
        };
        let mut results: Vec<Option<ExportResult>> = vec![None; ops.len()];
        let mut pending: Vec<(usize, ExportOp)> = Vec::with_capacity(ops.len());
        for (index, op) in ops.into_iter().enumerate() {
            match self.prepare(entity, collection, op).await {
                Prepared::Send(op) => pending.push((index, op)),
                Prepared::Done(result) => results[index] = Some(result),
            }
        }
        for action in [ExportAction::Create, ExportAction::Update] {
            let of_kind: Vec<&(usize, ExportOp)> = pending
                .iter()
                .filter(|(_, op)| op.action() == action)
                .collect();
            for batch in of_kind.chunks(self.settings.batch_size) {
                let start = Instant::now();
                let ops: Vec<ExportOp> = batch.iter().map(|(_, op)| op.clone()).collect();
                let outcomes = self.send_batch(collection, &ops, action).await;
                let duration_ms =
                    elapsed_ms(start) / u32::try_from(batch.len().max(1)).unwrap_or(1);
                for ((index, op), outcome) in batch.iter().zip(outcomes) {
                    let (outcome, response) = match outcome {
                        Ok((exported, element)) => {
                            (Ok(exported), Some(self.http.redactor().json(&element)))
                        }
                        Err(e) => (Err(e), None),
                    };
                    results[*index] = Some(op.result(outcome, response, duration_ms));
                }
            }
        }
        collect_results(results)
    }

    /// Fills in the contact (the payload was mapped before references were looked up) and
    /// looks up a create an earlier attempt may have made.
    async fn prepare(&self, entity: Entity, collection: Collection, mut op: ExportOp) -> Prepared {
        let start = Instant::now();
        if matches!(entity, Entity::Order | Entity::Invoice)
            && let Some(contact) = op
                .payload
                .get("Contact")
                .and_then(|c| c.get("ContactNumber"))
                .and_then(|c| c.as_str())
                .map(str::to_owned)
        {
            let Some(id) = op
                .references
                .get(&(MappingEntityType::Customer, contact.clone()))
                .cloned()
            else {
                return Prepared::Done(op.failed(
                    ConnectorError::rejected(
                        format!(
                            "customer {contact} is not in Xero yet; sync customers first (enable them on this integration)"
                        ),
                        None,
                    ),
                    start,
                ));
            };
            if let Some(obj) = op.payload.as_object_mut() {
                obj.insert("Contact".into(), json!({ "ContactID": id }));
            }
        }
        if op.action() == ExportAction::Create && op.retried_create {
            match self.find_existing(collection, &op.payload).await {
                Ok(Some(found)) => {
                    let found = Ok(Exported::found(found));
                    return Prepared::Done(op.result(found, None, elapsed_ms(start)));
                }
                Ok(None) => {}
                Err(e) => return Prepared::Done(op.failed(e, start)),
            }
        }
        Prepared::Send(op)
    }

    /// Finds a record an earlier attempt may have created, by our reference in it.
    async fn find_existing(
        &self,
        collection: Collection,
        payload: &Value,
    ) -> Result<Option<String>, ConnectorError> {
        let field = match collection.name {
            "Contacts" => "ContactNumber",
            "Items" => "Code",
            "Quotes" => "QuoteNumber",
            _ => "InvoiceNumber",
        };
        let Some(value) = payload.get(field).and_then(|v| v.as_str()) else {
            return Ok(None);
        };
        let filter = format!("{field}==\"{}\"", value.replace('"', ""));
        let name = collection.name;
        let reply = self
            .api(
                Method::GET,
                &format!("/api.xro/2.0/{name}"),
                &[("where", filter)],
                None,
                vec![],
            )
            .await?;
        let body = reply.json(&format!("GET {name}"))?;
        Ok(body
            .get(name)
            .and_then(|v| v.as_array())
            .and_then(|items| items.first())
            .and_then(|item| item.get(collection.id_field))
            .and_then(|v| v.as_str())
            .map(str::to_owned))
    }

    /// Sends one batch (all creates or all updates) and maps the per-element results back.
    async fn send_batch(
        &self,
        collection: Collection,
        ops: &[ExportOp],
        action: ExportAction,
    ) -> Vec<Result<(Exported, Value), ConnectorError>> {
        let name = collection.name;
        let elements: Vec<Value> = ops
            .iter()
            .map(|op| {
                let mut element = op.payload.clone();
                if let (Some(id), Some(obj)) = (&op.external_id, element.as_object_mut()) {
                    obj.insert(collection.id_field.to_owned(), Value::String(id.clone()));
                }
                element
            })
            .collect();
        // The key names the exact set of records: a retry of the same batch is a replay.
        let mut keys: Vec<&str> = ops.iter().map(|op| op.idempotency_key.as_str()).collect();
        keys.sort_unstable();
        let key = crate::short_hash(&keys.join(","));
        let method = if action == ExportAction::Create {
            Method::PUT
        } else {
            Method::POST
        };
        let result = self
            .api(
                method,
                &format!("/api.xro/2.0/{name}"),
                &[("summarizeErrors", "false".into())],
                Some(json!({ name: elements })),
                header("idempotency-key", &format!("psl-{key}"))
                    .into_iter()
                    .collect(),
            )
            .await
            .and_then(|reply| reply.json(&format!("{name} batch")));
        let body = match result {
            Ok(b) => b,
            Err(e) => return ops.iter().map(|_| Err(e.clone())).collect(),
        };
        let returned = body
            .get(name)
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default();
        if returned.len() != ops.len() {
            let e = ConnectorError::transient(format!(
                "Xero answered a batch of {} {name} with {} elements",
                ops.len(),
                returned.len()
            ));
            return ops.iter().map(|_| Err(e.clone())).collect();
        }
        returned
            .into_iter()
            .map(|element| element_outcome(collection, element))
            .collect()
    }
}

/// One element of a batch answer: the record written, or why Xero refused it.
fn element_outcome(
    collection: Collection,
    element: Value,
) -> Result<(Exported, Value), ConnectorError> {
    let errors: Vec<String> = element
        .get("ValidationErrors")
        .and_then(|v| v.as_array())
        .map(|list| {
            list.iter()
                .filter_map(|e| e.get("Message").and_then(|m| m.as_str()).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let failed = element
        .get("StatusAttributeString")
        .and_then(|v| v.as_str())
        == Some("ERROR")
        || !errors.is_empty();
    if failed {
        return Err(ConnectorError::rejected(
            format!(
                "Xero refused the {}: {}",
                collection.name.trim_end_matches('s'),
                if errors.is_empty() {
                    snippet(element.to_string().as_bytes())
                } else {
                    errors.join("; ")
                }
            ),
            Some(400),
        ));
    }
    match element.get(collection.id_field).and_then(|v| v.as_str()) {
        Some(id) => Ok((Exported::written(id), element.clone())),
        None => Err(ConnectorError::transient(format!(
            "Xero returned a {} element without {}",
            collection.name, collection.id_field
        ))),
    }
}
