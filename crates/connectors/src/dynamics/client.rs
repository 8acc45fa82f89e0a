//! The Dataverse Web API transport: the bearer token on every call (a `401` asks for a new
//! one and tries once more), one upsert by alternate key per document, and the document's
//! lines reconciled after it.

use super::DynamicsConnector;
use super::mapping::{INVOICE_LINES, ORDER_LINES, resolve_references};
use crate::http::{HttpCall, HttpReply, RawBody};
use crate::{ConnectionTest, ConnectorError, ExportAction, ExportOp, ExportResult, Exported};
use crate::{elapsed_ms, in_order_concurrently};
use passerelle_core::Entity;
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, HeaderName, HeaderValue};
use serde_json::{Value, json};
use std::time::Instant;
use url::Url;
use uuid::Uuid;

/// Records of one export call sent at once (Dataverse allows 52 per user; a worker runs
/// several syncs).
const EXPORT_PARALLELISM: usize = 8;

/// The table, alternate key column and primary key of an exported entity.
#[derive(Debug, Clone, Copy)]
pub(super) struct Table {
    pub(super) set: &'static str,
    pub(super) key: &'static str,
    pub(super) pk: &'static str,
    pub(super) lines: Option<LineTable>,
}

/// The line table of a document (sales order, invoice).
#[derive(Debug, Clone, Copy)]
pub(super) struct LineTable {
    /// The payload key holding the lines.
    field: &'static str,
    set: &'static str,
    pk: &'static str,
    /// The line's navigation property to its document, and the attribute it reads as.
    parent: &'static str,
    parent_attribute: &'static str,
}

pub(super) fn table(entity: Entity) -> Option<Table> {
    match entity {
        Entity::Customer => Some(Table {
            set: "accounts",
            key: "accountnumber",
            pk: "accountid",
            lines: None,
        }),
        Entity::Product => Some(Table {
            set: "products",
            key: "productnumber",
            pk: "productid",
            lines: None,
        }),
        Entity::Order => Some(Table {
            set: "salesorders",
            key: "ordernumber",
            pk: "salesorderid",
            lines: Some(LineTable {
                field: ORDER_LINES,
                set: "salesorderdetails",
                pk: "salesorderdetailid",
                parent: "salesorderid",
                parent_attribute: "_salesorderid_value",
            }),
        }),
        Entity::Invoice => Some(Table {
            set: "invoices",
            key: "invoicenumber",
            pk: "invoiceid",
            lines: Some(LineTable {
                field: INVOICE_LINES,
                set: "invoicedetails",
                pk: "invoicedetailid",
                parent: "invoiceid",
                parent_attribute: "_invoiceid_value",
            }),
        }),
        _ => None,
    }
}

/// An OData string literal in a URL key segment, quotes doubled; [`super::DynamicsSettings::api_url`]
/// percent-encodes the segment.
pub fn key_segment(column: &str, value: &str) -> String {
    format!("({column}='{}')", value.replace('\'', "''"))
}

/// The id in an `OData-EntityId` header (`…/accounts(00000000-…)`).
pub fn entity_id(header: &str) -> Option<Uuid> {
    let inside = header.rsplit_once('(')?.1.strip_suffix(')')?;
    Uuid::parse_str(inside).ok()
}

/// The row a write answered for: its `OData-EntityId`, else (an update) the row written to.
pub(super) fn written_row(reply: &HttpReply, op: &ExportOp) -> Result<Uuid, ConnectorError> {
    reply
        .headers
        .get("odata-entityid")
        .and_then(|v| v.to_str().ok())
        .and_then(entity_id)
        .or_else(|| {
            op.external_id
                .as_deref()
                .and_then(|i| Uuid::parse_str(i).ok())
        })
        .ok_or_else(|| {
            ConnectorError::transient(format!(
                "Dataverse answered {} without an OData-EntityId header",
                reply.status
            ))
        })
}

/// The record written as `row`, and what the log keeps of the answer.
pub(super) fn exported(row: Uuid, reply: &HttpReply) -> (Exported, Value) {
    (
        Exported::written(row.to_string()),
        json!({"status": reply.status, "id": row.to_string()}),
    )
}

/// A failed write; a `404` on an update means the row was deleted in Dynamics 365.
pub(super) fn write_error(table: Table, action: ExportAction, e: ConnectorError) -> ConnectorError {
    match e {
        ConnectorError::Rejected {
            message,
            status: Some(404),
        } if action == ExportAction::Update => ConnectorError::rejected(
            format!(
                "{message} (the {} row was deleted in Dynamics 365; remove the mapping to create it again)",
                table.set
            ),
            Some(404),
        ),
        other => other,
    }
}

/// Where and how a record is written: `PATCH {set}({id})` with `If-Match: *` for an update
/// (never re-create a row someone deleted in Dynamics: refuse instead), `PATCH
/// {set}({key}='…')` (an upsert by alternate key) for a create.
pub(super) fn write_path(
    table: Table,
    op: &ExportOp,
    body: &Value,
) -> Result<(String, bool), ConnectorError> {
    match &op.external_id {
        Some(id) => Ok((format!("{}({id})", table.set), true)),
        None => {
            let key = body.get(table.key).and_then(Value::as_str).ok_or_else(|| {
                ConnectorError::rejected(
                    format!("the record has no {} to upsert by", table.key),
                    None,
                )
            })?;
            Ok((
                format!("{}{}", table.set, key_segment(table.key, key)),
                false,
            ))
        }
    }
}

impl DynamicsConnector {
    /// Proves the token and the application user (`WhoAmI`).
    pub(super) async fn connection_test(&self) -> Result<ConnectionTest, ConnectorError> {
        let start = Instant::now();
        let reply = self
            .api(
                Method::GET,
                self.settings.api_url("WhoAmI"),
                &[],
                None,
                true,
            )
            .await?;
        let body = reply.json("GET WhoAmI")?;
        let user = body
            .get("UserId")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        Ok(ConnectionTest {
            message: format!(
                "connected to Dynamics 365 environment {} as application user {user}",
                self.settings.environment_url.as_str().trim_end_matches('/')
            ),
            response_time_ms: u64::from(elapsed_ms(start)),
        })
    }

    /// Customers and products in `$batch` requests, documents one by one with their lines.
    pub(super) async fn export_ops(&self, entity: Entity, ops: Vec<ExportOp>) -> Vec<ExportResult> {
        let Some(table) = table(entity) else {
            return crate::refuse_all(
                &ops,
                &ConnectorError::fatal(format!(
                    "the dynamics_365 connector does not export {entity} yet"
                )),
            );
        };
        if table.lines.is_none() {
            return self.export_batched(table, ops).await;
        }
        in_order_concurrently(
            ops.into_iter().map(|op| self.write(table, op)),
            EXPORT_PARALLELISM,
        )
        .await
    }
}

pub(super) fn header(name: &'static str, value: &'static str) -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static(name),
        HeaderValue::from_static(value),
    )
}

impl DynamicsConnector {
    /// A Web API call with the bearer token; a `401` gets a new token and one more try.
    pub(super) async fn api(
        &self,
        method: Method,
        url: Url,
        headers: &[(HeaderName, HeaderValue)],
        body: Option<Value>,
        idempotent: bool,
    ) -> Result<HttpReply, ConnectorError> {
        self.api_call(method, url, headers, body, None, idempotent)
            .await
    }

    /// [`Self::api`] with a body that is not JSON (`$batch`) as an alternative.
    pub(super) async fn api_call(
        &self,
        method: Method,
        url: Url,
        headers: &[(HeaderName, HeaderValue)],
        body: Option<Value>,
        raw: Option<RawBody>,
        idempotent: bool,
    ) -> Result<HttpReply, ConnectorError> {
        let mut renew = false;
        for attempt in 0..2 {
            let token = self.tokens.access_token(&self.http, renew).await?;
            let mut all = vec![
                (AUTHORIZATION, crate::oauth::bearer(&token, "Entra ID")?),
                header("odata-version", "4.0"),
                header("odata-maxversion", "4.0"),
            ];
            all.extend(headers.iter().cloned());
            let call = HttpCall {
                raw: raw.clone(),
                ..crate::json_call(method.clone(), url.clone(), all, body.clone(), idempotent)
            };
            match self.http.send(&call).await {
                Err(ConnectorError::Auth { .. }) if attempt == 0 => renew = true,
                other => return other,
            }
        }
        Err(ConnectorError::Auth {
            message: "Dataverse refused a fresh access token; check that the app registration is an application user with a security role in this environment".into(),
        })
    }

    /// Sends one record: an alternate-key upsert for a create, a PATCH by id for an update;
    /// a document's lines follow it.
    async fn write(&self, table: Table, op: ExportOp) -> ExportResult {
        let start = Instant::now();
        let (outcome, response) = match self.write_document(table, &op).await {
            Ok((exported, response)) => (Ok(exported), Some(response)),
            Err(e) => (Err(e), None),
        };
        op.result(outcome, response, elapsed_ms(start))
    }

    async fn write_document(
        &self,
        table: Table,
        op: &ExportOp,
    ) -> Result<(Exported, Value), ConnectorError> {
        let mut body = resolve_references(op)?;
        // An order's lines go to their own table once the order exists.
        let lines = table
            .lines
            .and_then(|t| body.as_object_mut().and_then(|m| m.remove(t.field)));
        let (path, if_match) = write_path(table, op, &body)?;
        let headers = if if_match {
            vec![header("if-match", "*")]
        } else {
            Vec::new()
        };
        // PATCH is idempotent here: an upsert or an update repeated after a lost answer
        // leaves the same single row.
        let url = self.settings.api_url(&path);
        let reply = self
            .api(Method::PATCH, url, &headers, Some(body), true)
            .await
            .map_err(|e| write_error(table, op.action(), e))?;
        let row = written_row(&reply, op)?;
        // The order exists now; its lines follow. Should they fail, the record fails and
        // its retry upserts the same order and reconciles the lines.
        if let (Some(Value::Array(lines)), Some(t)) = (lines, table.lines) {
            self.sync_lines(table, t, row, &lines).await?;
        }
        Ok(exported(row, &reply))
    }

    /// Makes the order's lines at Dataverse exactly `lines`, matched by `lineitemnumber`:
    /// existing ones are updated, missing ones created, extra ones deleted. Reading first
    /// makes a repeat safe: a line whose create answer was lost is found and updated.
    async fn sync_lines(
        &self,
        document: Table,
        t: LineTable,
        parent: Uuid,
        lines: &[Value],
    ) -> Result<(), ConnectorError> {
        let mut url = self.settings.api_url(t.set);
        url.query_pairs_mut()
            .append_pair("$select", &format!("{},lineitemnumber", t.pk))
            .append_pair("$filter", &format!("{} eq {parent}", t.parent_attribute));
        let reply = self
            .api(
                Method::GET,
                url,
                &[header("prefer", "odata.maxpagesize=5000")],
                None,
                true,
            )
            .await?;
        let existing: Vec<(i64, String)> = reply
            .json(&format!("GET {}", t.set))?
            .get("value")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|row| {
                Some((
                    row.get("lineitemnumber").and_then(Value::as_i64)?,
                    row.get(t.pk)?.as_str()?.to_owned(),
                ))
            })
            .collect();
        let mut wanted = Vec::new();
        for line in lines {
            let number = line
                .get("lineitemnumber")
                .and_then(Value::as_i64)
                .unwrap_or_default();
            wanted.push(number);
            let mut body = line.clone();
            body[format!("{}@odata.bind", t.parent)] =
                json!(format!("/{}({parent})", document.set));
            match existing.iter().find(|(n, _)| *n == number) {
                Some((_, id)) => {
                    let url = self.settings.api_url(&format!("{}({id})", t.set));
                    self.api(
                        Method::PATCH,
                        url,
                        &[header("if-match", "*")],
                        Some(body),
                        true,
                    )
                    .await?;
                }
                None => {
                    // Not idempotent: a lost answer fails the record; its retry reads the
                    // lines again and finds this one.
                    let url = self.settings.api_url(t.set);
                    self.api(Method::POST, url, &[], Some(body), false).await?;
                }
            }
        }
        for (number, id) in existing.iter().filter(|(n, _)| !wanted.contains(n)) {
            tracing::debug!(%parent, number, "deleting a line the platform no longer has");
            let url = self.settings.api_url(&format!("{}({id})", t.set));
            match self.api(Method::DELETE, url, &[], None, true).await {
                Ok(_)
                | Err(ConnectorError::Rejected {
                    status: Some(404), ..
                }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dynamics::tests::settings;
    use serde_json::json;

    #[test]
    fn key_segments_quote_and_encode_and_entity_ids_parse() {
        assert_eq!(
            key_segment("productnumber", "O'Neil 1/2"),
            "(productnumber='O''Neil 1/2')"
        );
        let s = settings(json!({})).unwrap();
        let key = format!("products{}", key_segment("productnumber", "O'Neil 1/2?#%"));
        assert_eq!(
            s.api_url(&key).as_str(),
            "https://contoso.crm4.dynamics.com/api/data/v9.2/products(productnumber='O''Neil%201%2F2%3F%23%25')"
        );
        let id = Uuid::new_v4();
        assert_eq!(
            entity_id(&format!(
                "https://x.crm.dynamics.com/api/data/v9.2/accounts({id})"
            )),
            Some(id)
        );
        assert_eq!(
            entity_id("https://x/api/data/v9.2/accounts(accountnumber='A')"),
            None
        );
    }
}
