//! The Service Layer transport: a session (`Login`, then its cookies; a `401` logs in again
//! and repeats once), one request per record, and the lookup by our reference before a create
//! an earlier attempt may have made (SAP has no idempotency key).

use super::{IMPORT_PAGE_SIZE, SapB1Connector};
use crate::http::{HttpCall, HttpReply};
use crate::{ConnectionTest, ConnectorError, ExportOp, ExportResult, Exported, elapsed_ms};
use passerelle_core::{Entity, MappingEntityType};
use reqwest::Method;
use reqwest::header::{COOKIE, HeaderName, HeaderValue, SET_COOKIE};
use serde_json::{Value, json};
use std::time::Instant;
use url::Url;

/// The cookies of the current session, and a counter so that of several requests that
/// saw one session expire, only the first logs in again.
#[derive(Debug, Default)]
pub(super) struct SessionState {
    cookie: Option<HeaderValue>,
    generation: u64,
}

/// A single-quoted OData string literal (`'` doubled).
pub(super) fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Which Service Layer collection an entity goes to, its key and our reference in it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Target {
    collection: &'static str,
    key: &'static str,
    reference: &'static str,
}

pub(super) fn target(entity: Entity) -> Option<Target> {
    Some(match entity {
        Entity::Product => Target::master_data("Items", "ItemCode"),
        Entity::Customer => Target::master_data("BusinessPartners", "CardCode"),
        Entity::Order => Target::document("Orders"),
        Entity::Invoice => Target::document("Invoices"),
        Entity::Inventory => return None,
    })
}

impl Target {
    /// Master data is keyed by its code, which is also our reference.
    const fn master_data(collection: &'static str, code: &'static str) -> Self {
        Self {
            collection,
            key: code,
            reference: code,
        }
    }

    /// A marketing document is keyed by `DocEntry` and carries our reference in `NumAtCard`.
    const fn document(collection: &'static str) -> Self {
        Self {
            collection,
            key: "DocEntry",
            reference: "NumAtCard",
        }
    }

    pub(super) fn is_document(self) -> bool {
        self.key == "DocEntry"
    }

    /// `Items('A001')` or `Orders(12)`.
    pub(super) fn entity_path(self, external_id: &str) -> String {
        if self.is_document() {
            format!("{}({external_id})", self.collection)
        } else {
            format!("{}({})", self.collection, literal(external_id))
        }
    }

    /// The external id in a created entity: `DocEntry` for documents, else the code.
    pub(super) fn external_id(self, entity: &Value) -> Option<String> {
        match entity.get(self.key)? {
            Value::String(code) => Some(code.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
}

impl SapB1Connector {
    /// Logs in and returns the `Cookie` header of the new session and the login answer.
    async fn login(&self) -> Result<(HeaderValue, Value), ConnectorError> {
        let call = HttpCall {
            method: Method::POST,
            url: self.settings.service("Login"),
            headers: vec![],
            body: Some(json!({
                "CompanyDB": self.settings.company_db,
                "UserName": self.username,
                "Password": self.password,
            })),
            raw: None,
            form: None,
            // A repeated login only opens another session.
            idempotent: true,
            conflict_means_in_flight: false,
        };
        let reply = match self.http.send(&call).await {
            Ok(reply) => reply,
            Err(ConnectorError::Auth { .. } | ConnectorError::Rejected { .. }) => {
                return Err(ConnectorError::Auth {
                    message: format!(
                        "SAP Business One refused the login of {} to company {}; check the username, password and company_db",
                        self.username, self.settings.company_db
                    ),
                });
            }
            Err(e) => return Err(self.http.redactor().error(e)),
        };
        let body = reply.json("POST Login")?;
        let mut cookies: Vec<String> = reply
            .headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next())
            .map(str::trim)
            .filter(|c| c.starts_with("B1SESSION=") || c.starts_with("ROUTEID="))
            .map(str::to_owned)
            .collect();
        if !cookies.iter().any(|c| c.starts_with("B1SESSION=")) {
            // Behind a proxy that drops Set-Cookie, the body still names the session.
            let id = body
                .get("SessionId")
                .and_then(Value::as_str)
                .ok_or_else(|| ConnectorError::transient("the Login answer has no SessionId"))?;
            cookies.push(format!("B1SESSION={id}"));
        }
        let mut cookie = HeaderValue::from_str(&cookies.join("; "))
            .map_err(|_| ConnectorError::transient("the Login answer set unusable cookies"))?;
        cookie.set_sensitive(true);
        Ok((cookie, body))
    }

    /// The session's cookies, logging in when there is none or when `stale` (the
    /// generation a request saw expire) is still the current one.
    async fn session(&self, stale: Option<u64>) -> Result<(HeaderValue, u64), ConnectorError> {
        let mut state = self.session.lock().await;
        if let Some(cookie) = &state.cookie
            && stale != Some(state.generation)
        {
            return Ok((cookie.clone(), state.generation));
        }
        let (cookie, _) = self.login().await?;
        state.generation += 1;
        state.cookie = Some(cookie.clone());
        Ok((cookie, state.generation))
    }

    /// A Service Layer call with the session cookies; a 401 logs in again and repeats once.
    async fn call(
        &self,
        method: Method,
        url: Url,
        body: Option<Value>,
        extra: &[(HeaderName, HeaderValue)],
    ) -> Result<HttpReply, ConnectorError> {
        let mut stale = None;
        for attempt in 0..2 {
            let (cookie, generation) = self.session(stale).await?;
            let mut headers = vec![(COOKIE, cookie)];
            headers.extend(extra.iter().cloned());
            // Creates are not safe to repeat in place; the worker's retry looks them up.
            let idempotent = method != Method::POST;
            let call = crate::json_call(
                method.clone(),
                url.clone(),
                headers,
                body.clone(),
                idempotent,
            );
            match self.http.send(&call).await {
                Err(ConnectorError::Auth { .. }) if attempt == 0 => stale = Some(generation),
                Err(ConnectorError::Rejected {
                    message,
                    status: Some(status),
                }) => {
                    return Err(ConnectorError::Rejected {
                        message: self.http.redactor().text(&message),
                        status: Some(status),
                    });
                }
                other => return other.map_err(|e| self.http.redactor().error(e)),
            }
        }
        Err(ConnectorError::Auth {
            message:
                "SAP Business One refused a fresh session; check the user's Service Layer access"
                    .into(),
        })
    }

    pub(super) async fn get_json(&self, url: Url, what: &str) -> Result<Value, ConnectorError> {
        let extra = [(
            HeaderName::from_static("prefer"),
            HeaderValue::from_str(&format!("odata.maxpagesize={IMPORT_PAGE_SIZE}"))
                .map_err(|_| ConnectorError::fatal("bad Prefer header"))?,
        )];
        self.call(Method::GET, url, None, &extra).await?.json(what)
    }

    /// Finds a record an earlier attempt may have made, by our reference; its external id.
    async fn find_existing(
        &self,
        target: Target,
        payload: &Value,
    ) -> Result<Option<String>, ConnectorError> {
        let Some(reference) = payload.get(target.reference).and_then(Value::as_str) else {
            return Ok(None);
        };
        let mut url = self.settings.service(target.collection);
        url.query_pairs_mut()
            .append_pair(
                "$filter",
                &format!("{} eq {}", target.reference, literal(reference)),
            )
            .append_pair("$select", target.key)
            .append_pair("$orderby", target.key);
        let body = self
            .get_json(url, &format!("GET {}", target.collection))
            .await?;
        Ok(body
            .get("value")
            .and_then(Value::as_array)
            .and_then(|rows| rows.first())
            .and_then(|row| target.external_id(row)))
    }

    /// Proves the login and keeps the session it opened.
    pub(super) async fn connection_test(&self) -> Result<ConnectionTest, ConnectorError> {
        let start = Instant::now();
        let (cookie, body) = self.login().await?;
        {
            let mut state = self.session.lock().await;
            state.generation += 1;
            state.cookie = Some(cookie);
        }
        Ok(ConnectionTest {
            message: format!(
                "connected to SAP Business One company {} (Service Layer {}, session timeout {} min)",
                self.settings.company_db,
                body.get("Version").and_then(Value::as_str).unwrap_or("?"),
                body.get("SessionTimeout")
                    .map(Value::to_string)
                    .unwrap_or_else(|| "?".into())
            ),
            response_time_ms: u64::from(elapsed_ms(start)),
        })
    }

    /// Sends one record: looks a retried create up first, creates or patches.
    pub(super) async fn export_one(&self, target: Target, mut op: ExportOp) -> ExportResult {
        let start = Instant::now();
        let result = self.write(target, &mut op).await;
        let (outcome, response) = match result {
            Ok((exported, response)) => (Ok(exported), response),
            Err(e) => (Err(e), None),
        };
        op.result(outcome, response, elapsed_ms(start))
    }

    async fn write(
        &self,
        target: Target,
        op: &mut ExportOp,
    ) -> Result<(Exported, Option<Value>), ConnectorError> {
        if target.is_document() {
            // The payload was mapped before references were looked up: the customer's
            // CardCode is the one its mapping holds.
            let card_code = op
                .references
                .iter()
                .find(|((kind, _), _)| *kind == MappingEntityType::Customer)
                .map(|(_, code)| code.clone())
                .ok_or_else(|| {
                    ConnectorError::rejected(
                        format!(
                            "{}: the customer is not in SAP Business One yet; sync customers first (enable them on this integration)",
                            op.payload
                                .get("NumAtCard")
                                .and_then(Value::as_str)
                                .unwrap_or("document")
                        ),
                        None,
                    )
                })?;
            if let Some(obj) = op.payload.as_object_mut() {
                obj.insert("CardCode".into(), Value::String(card_code));
            }
        }
        let Some(id) = &op.external_id else {
            if op.retried_create
                && let Some(found) = self.find_existing(target, &op.payload).await?
            {
                return Ok((Exported::found(found), None));
            }
            return self.create(target, &op.payload).await;
        };
        let mut changes = op.payload.clone();
        if let Some(obj) = changes.as_object_mut() {
            obj.remove(target.key);
        }
        let extra: Vec<(HeaderName, HeaderValue)> = if target.is_document() {
            // Our lines are the whole truth; SAP would otherwise merge them.
            vec![(
                HeaderName::from_static("b1s-replacecollectionsonpatch"),
                HeaderValue::from_static("true"),
            )]
        } else {
            vec![]
        };
        self.call(
            Method::PATCH,
            self.settings.service(&target.entity_path(id)),
            Some(changes),
            &extra,
        )
        .await?;
        Ok((Exported::written(id.clone()), None))
    }

    async fn create(
        &self,
        target: Target,
        payload: &Value,
    ) -> Result<(Exported, Option<Value>), ConnectorError> {
        let url = self.settings.service(target.collection);
        let what = format!("POST {}", target.collection);
        let reply = match self
            .call(Method::POST, url, Some(payload.clone()), &[])
            .await
        {
            Ok(reply) => reply,
            Err(ConnectorError::Rejected { message, status }) => {
                return Err(ConnectorError::Rejected {
                    message: format!(
                        "SAP Business One refused the {}: {message}",
                        target.collection
                    ),
                    status,
                });
            }
            Err(e) => return Err(e),
        };
        let created = reply.json(&what)?;
        let external_id = target.external_id(&created).ok_or_else(|| {
            ConnectorError::transient(format!("{what}: the answer has no {}", target.key))
        })?;
        Ok((
            Exported::written(external_id),
            Some(self.http.redactor().json(&created)),
        ))
    }
}
