//! The transport and the writes: every request with the bearer token (refreshed, rotated and
//! stored first, when it nears expiry or on a `401`) and `X-Business`; one record per
//! request, a create carrying its `idempotency_id`.

use super::SageConnector;
use super::mapping::{Target, resolve, target};
use crate::http::HttpReply;
use crate::{ConnectionTest, ConnectorError, ExportOp, ExportResult, Exported, elapsed_ms};
use passerelle_core::Entity;
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, HeaderName, HeaderValue};
use serde_json::{Value, json};
use sha2::Digest as _;
use std::time::Instant;
use url::Url;

/// Sage's `idempotency_id`: 32 hexadecimal characters, the same for every attempt at one
/// create (derived from the worker's idempotency key).
pub fn idempotency_id(key: &str) -> String {
    sha2::Sha256::digest(key.as_bytes())
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl SageConnector {
    /// Sends `method url` with `body`, authorised for the business.
    pub(super) async fn call(
        &self,
        method: Method,
        url: Url,
        body: Option<Value>,
    ) -> Result<HttpReply, ConnectorError> {
        let business = HeaderValue::from_str(&self.settings.business_id)
            .map_err(|_| ConnectorError::config("settings.business_id is not a usable header"))?;
        // Every call may be repeated after a lost answer: reads and PUTs are idempotent, and
        // a create carries its idempotency_id, which Sage answers from its store.
        let idempotent = true;
        let build = |token: HeaderValue| {
            crate::json_call(
                method.clone(),
                url.clone(),
                vec![
                    (AUTHORIZATION, token),
                    (HeaderName::from_static("x-business"), business.clone()),
                ],
                body.clone(),
                idempotent,
            )
        };
        let refused = "Sage refused a freshly refreshed access token; check that the connected user may use this business (X-Business) and connect again if needed";
        self.tokens
            .send_authorised(&self.http, &self.http, "Sage", refused, build)
            .await
    }

    pub(super) async fn export_ops(&self, entity: Entity, ops: Vec<ExportOp>) -> Vec<ExportResult> {
        let Some(target) = target(&self.settings, entity) else {
            return crate::refuse_all(
                &ops,
                &ConnectorError::fatal(
                    "Sage stock changes through stock movements: inventory is imported, not exported",
                ),
            );
        };
        crate::in_order_concurrently(
            ops.into_iter().map(|op| self.export_one(target, op)),
            super::EXPORT_PARALLELISM,
        )
        .await
    }

    async fn export_one(&self, target: Target, op: ExportOp) -> ExportResult {
        let start = Instant::now();
        let outcome = self.write(target, &op).await;
        let (outcome, response) = match outcome {
            Ok((exported, response)) => (Ok(exported), response),
            Err(e) => (Err(e), None),
        };
        op.result(outcome, response, elapsed_ms(start))
    }

    async fn write(
        &self,
        target: Target,
        op: &ExportOp,
    ) -> Result<(Exported, Option<Value>), ConnectorError> {
        let mut object = resolve(op)?;
        if op.external_id.is_none() && op.retried_create {
            // Sage does not say how long it keeps an idempotency_id: a create an earlier
            // attempt may have made is looked for by our reference first.
            if let Some(found) = self.find_existing(target, &object).await? {
                return Ok((
                    Exported::found(found.clone()),
                    Some(json!({"id": found, "found_by": target.reference})),
                ));
            }
        }
        let (method, url) = match &op.external_id {
            Some(id) => (
                Method::PUT,
                self.settings.resource(target.resource, Some(id)),
            ),
            None => {
                if let Some(obj) = object.as_object_mut() {
                    obj.insert(
                        "idempotency_id".into(),
                        json!(idempotency_id(&op.idempotency_key)),
                    );
                }
                (Method::POST, self.settings.resource(target.resource, None))
            }
        };
        let what = format!("{method} {}", target.resource);
        let reply = self
            .call(method, url, Some(json!({ target.namespace: object })))
            .await
            .map_err(|e| match e {
                ConnectorError::Rejected { message, status } => ConnectorError::Rejected {
                    message: format!("Sage refused the {}: {message}", target.namespace),
                    status,
                },
                other => other,
            })?;
        let body = reply.json(&what)?;
        let id = body
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| ConnectorError::transient(format!("{what}: the answer has no id")))?;
        if op.external_id.is_none()
            && body.get(target.reference).and_then(Value::as_str)
                != object.get(target.reference).and_then(Value::as_str)
        {
            // What came back is not what we sent (an idempotency_id answered with another
            // record): never map our record to it.
            return Err(ConnectorError::fatal(format!(
                "{what}: Sage answered a record whose {} is not ours",
                target.reference
            )));
        }
        let exported = Exported::written(id);
        Ok((
            exported,
            Some(self.http.redactor().json(&json!({"id": id}))),
        ))
    }

    /// The record holding our reference in `object`, if Sage has one (`search`, then an
    /// exact match on the reference).
    async fn find_existing(
        &self,
        target: Target,
        object: &Value,
    ) -> Result<Option<String>, ConnectorError> {
        let Some(reference) = object.get(target.reference).and_then(Value::as_str) else {
            return Ok(None);
        };
        let mut url = self.settings.resource(target.resource, None);
        url.query_pairs_mut()
            .append_pair("search", reference)
            .append_pair("attributes", "all")
            .append_pair("items_per_page", "200");
        let what = format!("GET {}", target.resource);
        let body = self.call(Method::GET, url, None).await?.json(&what)?;
        Ok(body
            .get("$items")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|item| item.get(target.reference).and_then(Value::as_str) == Some(reference))
            .and_then(|item| item.get("id").and_then(Value::as_str))
            .map(str::to_owned))
    }

    /// Proves the token and the business: one contact, at most.
    pub(super) async fn connection_test(&self) -> Result<ConnectionTest, ConnectorError> {
        let start = Instant::now();
        let mut url = self.settings.resource("contacts", None);
        url.query_pairs_mut().append_pair("items_per_page", "1");
        self.call(Method::GET, url, None)
            .await?
            .json("GET contacts")?;
        Ok(ConnectionTest {
            message: format!(
                "connected to Sage Accounting business {}",
                self.settings.business_id
            ),
            response_time_ms: u64::from(elapsed_ms(start)),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_idempotency_id_is_32_hex_characters_and_stable_per_key() {
        let id = super::idempotency_id("integration-1:customer:7");
        assert_eq!(id.len(), 32);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(id, super::idempotency_id("integration-1:customer:7"));
        assert_ne!(id, super::idempotency_id("integration-1:customer:8"));
    }
}
