//! The transport: one ORM call (`model.method(ids, params…)`) over XML-RPC or JSON-2,
//! whichever the settings chose. XML-RPC authenticates once per connector (the uid is kept)
//! and sends the API key with every call; JSON-2 sends it as a bearer token.

use super::{OdooConnector, Protocol, rpc};
use crate::http::{HttpCall, RawBody};
use crate::{ConnectionTest, ConnectorError, elapsed_ms};
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, HeaderName, HeaderValue};
use serde_json::{Map, Value, json};
use std::time::Instant;

/// What XML-RPC's `authenticate` and `version` told us, kept for the connector's life.
#[derive(Debug, Default)]
pub(super) struct Session {
    uid: Option<i64>,
    version: Option<u32>,
    /// The internal (stock-holding) locations' ids, for the stock import.
    pub internal_locations: Option<Vec<i64>>,
}

/// JSON-2 exists from Odoo 19.
const JSON2_SINCE: u32 = 19;

/// One call of an ORM method: its record ids (for methods on records) and its parameters by
/// name, in the order of the method's signature.
#[derive(Debug, Clone)]
pub(super) struct OrmCall {
    pub model: &'static str,
    pub method: &'static str,
    pub ids: Option<Vec<i64>>,
    pub params: Vec<(&'static str, Value)>,
    /// `{"active_test": false}` to see archived records.
    pub context: Option<Value>,
    /// Whether repeating it after a lost answer is harmless (false for `create`).
    pub idempotent: bool,
}

impl OrmCall {
    pub fn new(model: &'static str, method: &'static str) -> Self {
        Self {
            model,
            method,
            ids: None,
            params: Vec::new(),
            context: None,
            idempotent: method != "create",
        }
    }

    pub fn ids(mut self, ids: Vec<i64>) -> Self {
        self.ids = Some(ids);
        self
    }

    pub fn param(mut self, name: &'static str, value: Value) -> Self {
        self.params.push((name, value));
        self
    }

    /// Archived records too.
    pub fn with_archived(mut self) -> Self {
        self.context = Some(json!({"active_test": false}));
        self
    }

    fn what(&self) -> String {
        format!("{}.{}", self.model, self.method)
    }

    /// `execute_kw`'s `args` and `kwargs`: the ids and the first parameter positionally
    /// (Odoo's `create` reads its values from `args[0]`), the others and the context by name.
    fn xmlrpc_args(&self) -> (Value, Value) {
        let mut args = Vec::new();
        if let Some(ids) = &self.ids {
            args.push(json!(ids));
        }
        let mut params = self.params.iter();
        if let Some((_, first)) = params.next() {
            args.push(first.clone());
        }
        let mut kwargs: Map<String, Value> =
            params.map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
        if let Some(context) = &self.context {
            kwargs.insert("context".into(), context.clone());
        }
        (Value::Array(args), Value::Object(kwargs))
    }

    /// The JSON-2 body: every argument by name.
    fn json2_body(&self) -> Value {
        let mut body: Map<String, Value> = self
            .params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        if let Some(ids) = &self.ids {
            body.insert("ids".into(), json!(ids));
        }
        if let Some(context) = &self.context {
            body.insert("context".into(), context.clone());
        }
        Value::Object(body)
    }
}

impl OdooConnector {
    /// Runs one ORM call and returns its result.
    pub(super) async fn orm(&self, call: &OrmCall) -> Result<Value, ConnectorError> {
        match self.settings.protocol {
            Protocol::Xmlrpc => {
                let uid = self.uid().await?;
                let (args, kwargs) = call.xmlrpc_args();
                let params = [
                    json!(self.settings.database),
                    json!(uid),
                    json!(self.api_key),
                    json!(call.model),
                    json!(call.method),
                    args,
                    kwargs,
                ];
                self.xmlrpc(
                    "object",
                    "execute_kw",
                    &params,
                    call.idempotent,
                    &call.what(),
                )
                .await
            }
            Protocol::Json2 => self.json2(call).await,
        }
    }

    /// The server's major version: asked once over XML-RPC; JSON-2 means 19 or later.
    pub(super) async fn server_version(&self) -> Result<u32, ConnectorError> {
        if self.settings.protocol == Protocol::Json2 {
            return Ok(JSON2_SINCE);
        }
        if let Some(version) = self.session.lock().await.version {
            return Ok(version);
        }
        let answer = self
            .xmlrpc("common", "version", &[], true, "version")
            .await?;
        let version = answer
            .pointer("/server_version_info/0")
            .and_then(Value::as_u64)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| {
                ConnectorError::fatal(format!(
                    "Odoo's version() answer has no server_version_info: {}",
                    crate::http::snippet(answer.to_string().as_bytes())
                ))
            })?;
        self.session.lock().await.version = Some(version);
        Ok(version)
    }

    /// The user id `authenticate` gave, authenticating the first time.
    async fn uid(&self) -> Result<i64, ConnectorError> {
        let mut session = self.session.lock().await;
        if let Some(uid) = session.uid {
            return Ok(uid);
        }
        let Some(username) = self.username.clone() else {
            return Err(ConnectorError::config(
                "odoo credentials need `username` for XML-RPC",
            ));
        };
        let params = [
            json!(self.settings.database),
            json!(username),
            json!(self.api_key),
            json!({}),
        ];
        let answer = self
            .xmlrpc("common", "authenticate", &params, true, "authenticate")
            .await?;
        // A refusal is `False`, not a fault.
        let uid = answer.as_i64().filter(|uid| *uid > 0).ok_or_else(|| ConnectorError::Auth {
            message: format!(
                "Odoo refused the login of {username} to database {}; check the username and api_key (an API key lasts at most three months: generate a new one under Preferences > Account Security)",
                self.settings.database
            ),
        })?;
        session.uid = Some(uid);
        Ok(uid)
    }

    /// `POST {url}/xmlrpc/2/{service}` with `method(params…)`.
    async fn xmlrpc(
        &self,
        service: &str,
        method: &str,
        params: &[Value],
        idempotent: bool,
        what: &str,
    ) -> Result<Value, ConnectorError> {
        let call = HttpCall {
            method: Method::POST,
            url: self.settings.endpoint(["xmlrpc", "2", service]),
            headers: vec![],
            body: None,
            raw: Some(RawBody {
                content_type: "text/xml".into(),
                bytes: rpc::method_call(method, params)?.into_bytes(),
            }),
            form: None,
            idempotent,
            conflict_means_in_flight: false,
        };
        let reply = self.http.send(&call).await?;
        rpc::read_response(&reply.body, what).map_err(|e| self.http.redactor().error(e))
    }

    /// `POST {url}/json/2/{model}/{method}` with the call's arguments by name.
    async fn json2(&self, call: &OrmCall) -> Result<Value, ConnectorError> {
        let mut bearer = HeaderValue::from_str(&format!("bearer {}", self.api_key))
            .map_err(|_| ConnectorError::config("credentials.api_key is not a usable token"))?;
        bearer.set_sensitive(true);
        let database = HeaderValue::from_str(&self.settings.database)
            .map_err(|_| ConnectorError::config("settings.database is not a usable header"))?;
        let mut http = crate::json_call(
            Method::POST,
            self.settings
                .endpoint(["json", "2", call.model, call.method]),
            vec![
                (AUTHORIZATION, bearer),
                (HeaderName::from_static("x-odoo-database"), database),
            ],
            Some(call.json2_body()),
            call.idempotent,
        );
        // 409 is Odoo's LockError: the record is busy; retry.
        http.conflict_means_in_flight = true;
        let what = call.what();
        match self.http.send(&http).await {
            Ok(reply) => reply.json(&what),
            Err(ConnectorError::Rejected { message, status }) => Err(ConnectorError::Rejected {
                message: format!("{what}: {message}"),
                status,
            }),
            Err(e) => Err(e),
        }
    }

    /// Proves the credentials: `authenticate` and `version` over XML-RPC, `context_get` of
    /// `res.users` over JSON-2.
    pub(super) async fn connection_test(&self) -> Result<ConnectionTest, ConnectorError> {
        let start = Instant::now();
        let message = match self.settings.protocol {
            Protocol::Xmlrpc => {
                let uid = self.uid().await?;
                let version = self.server_version().await?;
                format!(
                    "connected to Odoo {version} database {} over XML-RPC as user {uid}{}",
                    self.settings.database,
                    if version >= JSON2_SINCE {
                        " (XML-RPC is deprecated from Odoo 19: set protocol json2)"
                    } else {
                        ""
                    }
                )
            }
            Protocol::Json2 => {
                let context = self
                    .orm(&OrmCall::new("res.users", "context_get"))
                    .await
                    .map_err(|e| match e {
                        ConnectorError::Rejected { status: Some(404), .. } => ConnectorError::config(format!(
                            "no JSON-2 API at {}: Odoo serves /json/2 from version 19; for Odoo 18 and earlier set protocol xmlrpc",
                            crate::urls::shown(&self.settings.url)
                        )),
                        other => other,
                    })?;
                format!(
                    "connected to Odoo database {} over JSON-2 as user {}",
                    self.settings.database,
                    context
                        .get("uid")
                        .map_or_else(|| "?".into(), Value::to_string)
                )
            }
        };
        Ok(ConnectionTest {
            message,
            response_time_ms: u64::from(elapsed_ms(start)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_put_ids_and_the_first_parameter_in_args_and_the_rest_by_name() {
        let read = OrmCall::new("res.partner", "read")
            .ids(vec![3, 4])
            .param("fields", json!(["ref"]))
            .with_archived();
        assert_eq!(
            read.xmlrpc_args(),
            (
                json!([[3, 4], ["ref"]]),
                json!({"context": {"active_test": false}})
            )
        );
        assert_eq!(
            read.json2_body(),
            json!({"ids": [3, 4], "fields": ["ref"], "context": {"active_test": false}})
        );
        let create =
            OrmCall::new("res.partner", "create").param("vals_list", json!([{"name": "A"}]));
        assert!(!create.idempotent);
        assert_eq!(create.xmlrpc_args(), (json!([[{"name": "A"}]]), json!({})));
        let search = OrmCall::new("res.partner", "search_read")
            .param("domain", json!([["ref", "=", "x"]]))
            .param("fields", json!(["id"]))
            .param("limit", json!(1));
        assert!(search.idempotent);
        assert_eq!(
            search.xmlrpc_args(),
            (
                json!([[["ref", "=", "x"]]]),
                json!({"fields": ["id"], "limit": 1})
            )
        );
    }
}
