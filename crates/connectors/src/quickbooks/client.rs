//! QuickBooks' transport: the bearer token on every call (a `401` refreshes once and
//! repeats), `/batch` writes of up to 30 operations with a `requestid` naming the exact set,
//! `SyncToken`s for updates, and the lookup by our reference before a repeated create.

use super::mapping::{needs_services_item, resolve};
use super::{OrderDocument, QuickBooksConnector};
use crate::http::{HttpReply, snippet};
use crate::{
    ConnectionTest, ConnectorError, ExportAction, ExportOp, ExportResult, Exported,
    collect_results, elapsed_ms, short_hash,
};
use passerelle_core::Entity;
use reqwest::Method;
use reqwest::header::AUTHORIZATION;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Instant;

/// Intuit no longer supports minor versions below 75.
const MINOR_VERSION: &str = "75";
/// Most objects one query answers.
pub(super) const QUERY_PAGE: usize = 1000;

/// The QuickBooks entity an export writes.
pub(super) fn entity_name(entity: Entity, order_document: OrderDocument) -> Option<&'static str> {
    match entity {
        Entity::Product => Some("Item"),
        Entity::Customer => Some("Customer"),
        Entity::Order => Some(match order_document {
            OrderDocument::Estimate => "Estimate",
            OrderDocument::Invoice => "Invoice",
        }),
        Entity::Invoice => Some("Invoice"),
        Entity::Inventory => None,
    }
}

/// One `Error` of a `Fault`, for messages and the stale-token check.
fn fault_text(fault: &Value) -> (Option<String>, String) {
    let errors = fault
        .get("Error")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let code = errors
        .first()
        .and_then(|e| e.get("code"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let text = errors
        .iter()
        .map(|e| {
            let message = e.get("Message").and_then(Value::as_str).unwrap_or("");
            let detail = e.get("Detail").and_then(Value::as_str).unwrap_or("");
            let code = e.get("code").and_then(Value::as_str).unwrap_or("?");
            if detail.is_empty() || detail.starts_with(message) {
                format!(
                    "{} (code {code})",
                    if detail.is_empty() { message } else { detail }
                )
            } else {
                format!("{message}: {detail} (code {code})")
            }
        })
        .collect::<Vec<_>>()
        .join("; ");
    (
        code,
        if text.is_empty() {
            snippet(fault.to_string().as_bytes())
        } else {
            text
        },
    )
}

const STALE_OBJECT: &str = "5010";

/// A query literal: single quotes, `\'` inside.
pub(super) fn quoted(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

impl QuickBooksConnector {
    /// An API call with the bearer token; a 401 refreshes once and repeats. A 429 is the
    /// runtime's: it waits Intuit's advised pause (`throttle_wait`), fleet-wide.
    pub(super) async fn api(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> Result<HttpReply, ConnectorError> {
        let batch = path == "/batch";
        let mut url = self.settings.company(path);
        crate::urls::append_query(&mut url, query);
        url.query_pairs_mut()
            .append_pair("minorversion", MINOR_VERSION);
        let runtime = if batch { &self.batch_http } else { &self.http };
        let has_request_id = query.iter().any(|(k, _)| *k == "requestid");
        // A POST is safe to repeat only with a requestid: QuickBooks replays it.
        let idempotent = method == Method::GET || has_request_id;
        let build = |bearer| {
            crate::json_call(
                method.clone(),
                url.clone(),
                vec![(AUTHORIZATION, bearer)],
                body.clone(),
                idempotent,
            )
        };
        let refused = "Intuit refused a freshly refreshed access token; check the app's scope (com.intuit.quickbooks.accounting) and that it is connected to this company";
        self.tokens
            .send_authorised(&self.http, runtime, "Intuit", refused, build)
            .await
    }

    /// Runs a query; the entities it found.
    pub(super) async fn query(
        &self,
        entity: &str,
        text: String,
    ) -> Result<Vec<Value>, ConnectorError> {
        let reply = self
            .api(Method::GET, "/query", &[("query", text)], None)
            .await?;
        let body = reply.json("GET query")?;
        Ok(body
            .get("QueryResponse")
            .and_then(|r| r.get(entity))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }

    /// Records earlier attempts may have created, found by our reference; by op index.
    async fn find_existing(
        &self,
        entity: &str,
        ops: &[(usize, &ExportOp)],
    ) -> Result<HashMap<usize, Value>, ConnectorError> {
        let field = match entity {
            "Customer" => "DisplayName",
            "Item" => "Sku",
            _ => "DocNumber",
        };
        let wanted: Vec<(usize, String)> = ops
            .iter()
            .filter_map(|(i, op)| {
                op.payload
                    .get(field)
                    .and_then(Value::as_str)
                    .map(|v| (*i, v.to_owned()))
            })
            .collect();
        if wanted.is_empty() {
            return Ok(HashMap::new());
        }
        let list: Vec<String> = wanted.iter().map(|(_, v)| quoted(v)).collect();
        let found = self
            .query(
                entity,
                format!(
                    "select * from {entity} where {field} in ({}) maxresults {QUERY_PAGE}",
                    list.join(", ")
                ),
            )
            .await?;
        let mut out = HashMap::new();
        for (index, value) in wanted {
            let payload = &ops
                .iter()
                .find(|(i, _)| *i == index)
                .map(|(_, op)| &op.payload);
            let hit = found.iter().find(|r| {
                let same_key = r
                    .get(field)
                    .and_then(Value::as_str)
                    .is_some_and(|v| v.eq_ignore_ascii_case(&value));
                // A customer of the same name is ours only if it has our e-mail address too.
                let same_email = entity != "Customer"
                    || payload
                        .and_then(|p| p.pointer("/PrimaryEmailAddr/Address"))
                        .is_none_or(|ours| {
                            r.pointer("/PrimaryEmailAddr/Address")
                                .and_then(Value::as_str)
                                .is_some_and(|theirs| {
                                    ours.as_str()
                                        .is_some_and(|o| o.eq_ignore_ascii_case(theirs))
                                })
                        });
                same_key && same_email
            });
            if let Some(hit) = hit {
                out.insert(index, hit.clone());
            }
        }
        Ok(out)
    }

    /// Sends up to 30 operations in one `/batch`; one outcome per op.
    async fn send_batch(
        &self,
        entity: &str,
        items: &[(ExportAction, &ExportOp, Value)],
    ) -> Vec<Result<Value, ConnectorError>> {
        let requests: Vec<Value> = items
            .iter()
            .enumerate()
            .map(|(i, (action, _, body))| {
                json!({
                    "bId": i.to_string(),
                    "operation": if *action == ExportAction::Create { "create" } else { "update" },
                    entity: body,
                })
            })
            .collect();
        // The requestid names the exact set of records and versions: a repeat is a replay.
        let mut keys: Vec<String> = items
            .iter()
            .map(|(_, op, body)| {
                format!(
                    "{}@{}",
                    op.idempotency_key,
                    body.get("SyncToken").and_then(Value::as_str).unwrap_or("")
                )
            })
            .collect();
        keys.sort_unstable();
        let request_id = short_hash(&format!("{entity}|{}", keys.join(",")));
        let result = self
            .api(
                Method::POST,
                "/batch",
                &[("requestid", request_id)],
                Some(json!({ "BatchItemRequest": requests })),
            )
            .await
            .and_then(|reply| reply.json("POST batch"));
        let body = match result {
            Ok(b) => b,
            Err(e) => return items.iter().map(|_| Err(e.clone())).collect(),
        };
        let responses = body
            .get("BatchItemResponse")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        (0..items.len())
            .map(|i| {
                let bid = i.to_string();
                let Some(response) = responses
                    .iter()
                    .find(|r| r.get("bId").and_then(Value::as_str) == Some(bid.as_str()))
                else {
                    return Err(ConnectorError::transient(format!(
                        "QuickBooks answered a batch without bId {bid}"
                    )));
                };
                if let Some(fault) = response.get("Fault") {
                    let (code, text) = fault_text(fault);
                    return Err(if code.as_deref() == Some(STALE_OBJECT) {
                        ConnectorError::Transient {
                            message: format!("stale SyncToken: {text}"),
                            retry_after: None,
                        }
                    } else {
                        ConnectorError::rejected(
                            format!("QuickBooks refused the {entity}: {text}"),
                            Some(400),
                        )
                    });
                }
                response.get(entity).cloned().ok_or_else(|| {
                    ConnectorError::transient(format!(
                        "QuickBooks answered bId {bid} with neither a {entity} nor a Fault"
                    ))
                })
            })
            .collect()
    }

    /// The current `SyncToken` of a record (for an update whose token we lack or lost).
    async fn read_sync_token(&self, entity: &str, id: &str) -> Result<String, ConnectorError> {
        let reply = self
            .api(
                Method::GET,
                &format!("/{}/{id}", entity.to_ascii_lowercase()),
                &[],
                None,
            )
            .await?;
        reply
            .json(&format!("GET {entity}"))?
            .get(entity)
            .and_then(|e| e.get("SyncToken"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ConnectorError::transient(format!("{entity} {id} has no SyncToken")))
    }

    /// One update sent alone, after a stale `SyncToken`.
    async fn update_one(
        &self,
        entity: &str,
        op: &ExportOp,
        body: &Value,
    ) -> Result<Value, ConnectorError> {
        let request_id = short_hash(&format!(
            "{}@{}",
            op.idempotency_key,
            body.get("SyncToken").and_then(Value::as_str).unwrap_or("")
        ));
        let reply = self
            .api(
                Method::POST,
                &format!("/{}", entity.to_ascii_lowercase()),
                &[("requestid", request_id)],
                Some(body.clone()),
            )
            .await?;
        reply
            .json(&format!("POST {entity}"))?
            .get(entity)
            .cloned()
            .ok_or_else(|| {
                ConnectorError::transient(format!("QuickBooks answered without a {entity}"))
            })
    }

    /// Proves the token and names the company (`GET companyinfo`).
    pub(super) async fn connection_test(&self) -> Result<ConnectionTest, ConnectorError> {
        let start = Instant::now();
        let realm = self.settings.realm_id.clone();
        let reply = self
            .api(Method::GET, &format!("/companyinfo/{realm}"), &[], None)
            .await?;
        let body = reply.json("GET companyinfo")?;
        let name = body
            .pointer("/CompanyInfo/CompanyName")
            .and_then(Value::as_str)
            .unwrap_or(&realm)
            .to_owned();
        Ok(ConnectionTest {
            message: format!("connected to QuickBooks company {name}"),
            response_time_ms: u64::from(elapsed_ms(start)),
        })
    }

    /// Sends records of one entity: retried creates looked up, the rest in batches, a stale
    /// `SyncToken` read again and the update sent once more.
    pub(super) async fn export_ops(&self, entity: Entity, ops: Vec<ExportOp>) -> Vec<ExportResult> {
        let Some(name) = entity_name(entity, self.settings.order_document) else {
            return crate::refuse_all(
                &ops,
                &ConnectorError::fatal(
                    "QuickBooks' stock is read-only: inventory cannot be exported",
                ),
            );
        };
        let start = Instant::now();
        let mut results: Vec<Option<ExportResult>> = vec![None; ops.len()];
        self.adopt_existing(name, &ops, &mut results, start).await;
        let pending = self.prepare(name, &ops, &mut results, start).await;
        for chunk in pending.chunks(self.settings.batch_size) {
            let items: Vec<(ExportAction, &ExportOp, Value)> = chunk
                .iter()
                .map(|(i, action, body)| (*action, &ops[*i], body.clone()))
                .collect();
            let outcomes = self.send_batch(name, &items).await;
            for ((index, action, body), outcome) in chunk.iter().zip(outcomes) {
                let op = &ops[*index];
                let outcome = match outcome {
                    // Someone changed the record in QuickBooks since our last write: read its
                    // token again and send our version once more (the platform is the master
                    // of what it exports).
                    Err(ConnectorError::Transient { message, .. })
                        if *action == ExportAction::Update
                            && message.starts_with("stale SyncToken") =>
                    {
                        self.update_again(name, op, body).await
                    }
                    other => other,
                };
                results[*index] = Some(match outcome {
                    Ok(entity) => op.result(
                        exported(&entity, false),
                        Some(self.http.redactor().json(&entity)),
                        elapsed_ms(start),
                    ),
                    Err(e) => op.failed(e, start),
                });
            }
        }
        collect_results(results)
    }

    /// A create an earlier attempt may have made: looked up by our reference first, and
    /// adopted when found.
    async fn adopt_existing(
        &self,
        name: &str,
        ops: &[ExportOp],
        results: &mut [Option<ExportResult>],
        start: Instant,
    ) {
        let retried: Vec<(usize, &ExportOp)> = ops
            .iter()
            .enumerate()
            .filter(|(_, op)| op.external_id.is_none() && op.retried_create)
            .collect();
        if retried.is_empty() {
            return;
        }
        match self.find_existing(name, &retried).await {
            Ok(found) => {
                for (index, entity) in found {
                    results[index] = Some(ops[index].result(
                        exported(&entity, true),
                        Some(self.http.redactor().json(&entity)),
                        elapsed_ms(start),
                    ));
                }
            }
            Err(e) => {
                for (index, op) in &retried {
                    results[*index] = Some(op.failed(e.clone(), start));
                }
            }
        }
    }

    /// An update refused for a stale `SyncToken`, sent again with the current one.
    async fn update_again(
        &self,
        name: &str,
        op: &ExportOp,
        body: &Value,
    ) -> Result<Value, ConnectorError> {
        let token = self
            .read_sync_token(name, op.external_id.as_deref().unwrap_or(""))
            .await?;
        let mut body = body.clone();
        body["SyncToken"] = json!(token);
        self.update_one(name, op, &body).await
    }

    /// Builds each body still to send: references resolved (the "Services" item looked up
    /// once if a line needs it), and for updates `Id`, `SyncToken` and `sparse`. An op that
    /// cannot be built gets its result now.
    async fn prepare(
        &self,
        name: &str,
        ops: &[ExportOp],
        results: &mut [Option<ExportResult>],
        start: Instant,
    ) -> Vec<(usize, ExportAction, Value)> {
        let needs_services = |op: &ExportOp| {
            op.payload
                .get("Line")
                .and_then(Value::as_array)
                .is_some_and(|lines| lines.iter().any(needs_services_item))
        };
        let services = if ops
            .iter()
            .enumerate()
            .any(|(i, op)| results[i].is_none() && needs_services(op))
        {
            Some(self.services_item().await)
        } else {
            None
        };
        let mut pending = Vec::new();
        for (index, op) in ops.iter().enumerate() {
            if results[index].is_some() {
                continue;
            }
            let action = op.action();
            let services_item = match &services {
                Some(Ok(id)) => Some(id.as_str()),
                Some(Err(e)) if needs_services(op) => {
                    results[index] = Some(op.failed(e.clone(), start));
                    continue;
                }
                _ => None,
            };
            let mut body = match resolve(op, services_item) {
                Ok(b) => b,
                Err(e) => {
                    results[index] = Some(op.failed(e, start));
                    continue;
                }
            };
            if let (Some(id), Some(obj)) = (&op.external_id, body.as_object_mut()) {
                let known = op
                    .mapping_metadata
                    .get("sync_token")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let token = match known {
                    Some(t) => t,
                    None => match self.read_sync_token(name, id).await {
                        Ok(t) => t,
                        Err(e) => {
                            results[index] = Some(op.failed(e, start));
                            continue;
                        }
                    },
                };
                obj.insert("Id".into(), json!(id));
                obj.insert("SyncToken".into(), json!(token));
                obj.insert("sparse".into(), json!(true));
            }
            pending.push((index, action, body));
        }
        pending
    }
}

fn exported(entity: &Value, replayed: bool) -> Result<Exported, ConnectorError> {
    let id = entity
        .get("Id")
        .and_then(Value::as_str)
        .ok_or_else(|| ConnectorError::transient("QuickBooks answered an entity without Id"))?;
    Ok(Exported {
        external_id: id.to_owned(),
        replayed,
        metadata: entity
            .get("SyncToken")
            .and_then(Value::as_str)
            .map(|t| serde_json::Map::from_iter([("sync_token".to_owned(), json!(t))]))
            .unwrap_or_default(),
    })
}
