//! Writes to the custom API: one request per record, an `Idempotency-Key` on each, and past
//! the key's lifetime a lookup by our reference before a repeated create.

use super::CustomApiConnector;
use super::import::item_id;
use crate::http::HttpCall;
use crate::{ConnectorError, ExportOp, ExportResult, Exported, elapsed_ms};
use passerelle_core::Entity;
use reqwest::Method;
use reqwest::header::{HeaderName, HeaderValue};
use serde_json::Value;
use std::time::Instant;
use url::Url;

/// How long the API keeps an idempotency key (the contract says 24 h; an hour of margin).
const IDEMPOTENCY_WINDOW: chrono::Duration = chrono::Duration::hours(23);

impl CustomApiConnector {
    pub(super) fn call(
        &self,
        method: Method,
        url: Url,
        body: Option<Value>,
        idempotency_key: Option<&str>,
    ) -> HttpCall {
        let mut headers = vec![(self.settings.auth_header.clone(), self.api_key.clone())];
        if let Some(key) = idempotency_key.and_then(|k| HeaderValue::from_str(k).ok()) {
            headers.push((HeaderName::from_static("idempotency-key"), key));
        }
        let idempotent = method != Method::POST || idempotency_key.is_some();
        HttpCall {
            conflict_means_in_flight: idempotency_key.is_some(),
            ..crate::json_call(method, url, headers, body, idempotent)
        }
    }

    pub(super) async fn export_one(&self, entity: Entity, mut op: ExportOp) -> ExportResult {
        let start = Instant::now();
        let payload = std::mem::take(&mut op.payload);
        let (outcome, response) = match self.write(entity, &op, payload).await {
            Ok((exported, body)) => (Ok(exported), Some(self.http.redactor().json_owned(body))),
            // The contract's 422 for a key reused with another body: our intent no longer
            // matches what the API saw. Not a refusal of the record (which may exist): stop.
            Err(ConnectorError::Rejected {
                message,
                status: Some(422),
            }) if message.contains("Idempotency-Key") => (
                Err(ConnectorError::fatal(format!(
                    "{message} (the API holds a different request under this record's idempotency key; check the record at the API before retrying)"
                ))),
                None,
            ),
            Err(e) => (Err(self.http.redactor().error(e)), None),
        };
        op.result(outcome, response, elapsed_ms(start))
    }

    /// Creates (`POST`) or updates (`PUT`) the record; what was written and the API's answer.
    async fn write(
        &self,
        entity: Entity,
        op: &ExportOp,
        payload: Value,
    ) -> Result<(Exported, Value), ConnectorError> {
        let endpoint = self.settings.endpoint(entity);
        let (url, method) = match &op.external_id {
            Some(id) => (self.settings.url(endpoint, Some(id)), Method::PUT),
            None => (self.settings.url(endpoint, None), Method::POST),
        };
        if op.external_id.is_none()
            && op.retried_create
            && op
                .intent_recorded_at
                .is_some_and(|at| chrono::Utc::now() - at > IDEMPOTENCY_WINDOW)
            && let Some((external_id, body)) = self
                .find_by_reference(entity, &op.internal_id, op.intent_recorded_at)
                .await?
        {
            // The key has expired at the API, but the record our first attempt created is
            // there: adopt it instead of creating a second one.
            return Ok((Exported::found(external_id), body));
        }
        let call = self.call(method, url, Some(payload), Some(&op.idempotency_key));
        let reply = self.http.send(&call).await?;
        let what = format!("{} {}", call.method, call.url.path());
        let body = reply.json(&what)?;
        let external_id = match (&op.external_id, item_id(&body)) {
            (_, Some(id)) => id,
            (Some(existing), None) => existing.clone(),
            (None, None) => {
                return Err(ConnectorError::transient(format!(
                    "{what}: HTTP {} without an `id` in the body: {}",
                    reply.status,
                    crate::http::snippet(&reply.body)
                )));
            }
        };
        let replayed = reply
            .headers
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        Ok((
            Exported {
                replayed,
                ..Exported::written(external_id)
            },
            body,
        ))
    }

    /// Looks for the record whose `external_ref` is our id, among those changed since `since`
    /// (the contract has no search endpoint; the incremental listing is ordered and complete).
    async fn find_by_reference(
        &self,
        entity: Entity,
        internal_id: &str,
        since: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Option<(String, Value)>, ConnectorError> {
        let endpoint = self.settings.endpoint(entity);
        let mut cursor: Option<String> = None;
        loop {
            let mut url = self.settings.url(endpoint, None);
            {
                let mut query = url.query_pairs_mut();
                if let Some(since) = since {
                    let from = since - chrono::Duration::minutes(5);
                    query.append_pair(
                        "updated_since",
                        &from.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                    );
                }
                if let Some(c) = &cursor {
                    query.append_pair("cursor", c);
                }
                query.append_pair("limit", "1000");
            }
            let reply = self
                .http
                .send(&self.call(Method::GET, url, None, None))
                .await?;
            let body = reply.json(&format!("GET {endpoint}"))?;
            let items = body
                .get("items")
                .and_then(|v| v.as_array())
                .cloned()
                .unwrap_or_default();
            for item in items {
                if item.get("external_ref").and_then(|v| v.as_str()) == Some(internal_id)
                    && let Some(id) = item_id(&item)
                {
                    return Ok(Some((id, item)));
                }
            }
            match body.get("next_cursor").and_then(|v| v.as_str()) {
                Some(next) if !next.is_empty() => cursor = Some(next.to_owned()),
                _ => return Ok(None),
            }
        }
    }
}
