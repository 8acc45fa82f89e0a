//! The SAP Business One Service Layer connector (`sap_b1`). See `docs/connectors/sap_b1.md`.
//!
//! - Session: `POST /b1s/v1/Login` once per connector (one per run), then the `B1SESSION`
//!   and `ROUTEID` cookies on every request; a `401` (the idle timeout passed, the server
//!   restarted) logs in again, under the session mutex, and repeats the request once.
//! - Writes are one record per request (`POST` creates answer `201` with the entity, `PATCH`
//!   updates answer `204`); documents' lines are replaced on update
//!   (`B1S-ReplaceCollectionsOnPatch: true`). A few requests run at once, within the
//!   fleet's limit for the company.
//! - SAP has no idempotency key: a create an earlier attempt may have made is first looked
//!   up by our reference (`ItemCode` = SKU, `CardCode` = prefix + customer id, `NumAtCard` =
//!   order or invoice number).
//! - Imports page with `odata.nextLink`; `UpdateDate` has only date granularity, so a pass
//!   reads from the start of the cursor's day and the worker skips what did not change.
//! - Limits: SAP publishes none (the Service Layer is self-hosted); we impose
//!   [`DEFAULT_LIMITS`] per company, which `settings.rate_limit` overrides.

use crate::http::{HttpCall, HttpOptions, HttpReply, HttpRuntime, Redactor};
use crate::rate::{RateKey, RateLimits};
use crate::{
    Capabilities, ConnectionTest, Connector, ConnectorContext, ConnectorError, ExportAction,
    ExportOp, ExportResult, Exported, Idempotency, ImportCursor, ImportPage, Reference,
    RejectedItem, elapsed_ms,
};
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use passerelle_core::platform::{
    ImportedData, ImportedRecord, PlatformRecord, decimal_to_json, json_to_decimal,
};
use passerelle_core::vault::Credentials;
use passerelle_core::{Entity, IntegrationType, MappingEntityType};
use reqwest::Method;
use reqwest::header::{COOKIE, HeaderName, HeaderValue, SET_COOKIE};
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use url::Url;

/// Our self-imposed limit per company database: SAP publishes none, and a Service Layer
/// node serves its own users too. 20 requests a second and 8 at once keep a typical
/// two-node installation responsive; `settings.rate_limit` overrides it.
pub const DEFAULT_LIMITS: RateLimits = RateLimits {
    requests: 20,
    per: Duration::from_secs(1),
    per_day: None,
    concurrency: Some(8),
};

/// Records one `export` call receives; they are sent a few at a time.
const EXPORT_BATCH: usize = 20;
/// Requests of one `export` call in flight at once (the fleet gate caps the company).
const EXPORT_PARALLELISM: usize = 4;
/// Records per import page (`Prefer: odata.maxpagesize`).
const IMPORT_PAGE_SIZE: usize = 100;
/// OCRD.CardCode is nvarchar(15).
const CARD_CODE_MAX: usize = 15;
/// OACT.AcctCode is nvarchar(15); OITM.ItemCode nvarchar(50).
const ACCOUNT_CODE_MAX: usize = 15;
const ITEM_CODE_MAX: usize = 50;

/// How an exported invoice is booked: SAP's `DocType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceType {
    /// `dDocument_Service`: one service row on a G/L account (`invoice_account_code`).
    Service,
    /// `dDocument_Items`: one row on an item (`invoice_item_code`).
    Items,
}

/// The row an invoice's total is booked on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvoiceLines {
    /// A service row on this G/L (revenue) account: SAP requires one on every service row.
    Service { account_code: String },
    /// An item row on this item, optionally with a G/L account overriding SAP's own
    /// determination.
    Items {
        item_code: String,
        account_code: Option<String>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    server: Option<String>,
    company_db: Option<String>,
    warehouse_code: Option<String>,
    card_code_prefix: Option<String>,
    price_list: Option<u32>,
    invoice_type: Option<InvoiceType>,
    invoice_account_code: Option<String>,
    invoice_item_code: Option<String>,
    rate_limit: Option<Value>,
    timeout_secs: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct SapB1Settings {
    /// The Service Layer's base (`https://host:50000`); the API is at `{server}/b1s/v1`.
    pub server: Url,
    /// `CompanyDB` at login.
    pub company_db: String,
    /// Warehouse of exported order lines (default `01`, SAP's first warehouse).
    pub warehouse_code: String,
    /// Business partner codes are this prefix and our customer id (default `C`).
    pub card_code_prefix: String,
    /// The price list an item's price is written to and read from (default 1).
    pub price_list: u32,
    /// What an exported invoice's row is booked on.
    pub invoice_lines: InvoiceLines,
    pub limits: RateLimits,
    pub timeout: Duration,
}

impl SapB1Settings {
    pub fn parse(
        settings: Option<&Value>,
        context: &ConnectorContext,
    ) -> Result<Self, ConnectorError> {
        let value = settings.ok_or_else(|| {
            ConnectorError::fatal(
                "sap_b1 settings are missing; `server` and `company_db` are required",
            )
        })?;
        crate::settings::refuse_secret_settings(value)?;
        let raw: RawSettings = serde_json::from_value(value.clone())
            .map_err(|e| ConnectorError::fatal(format!("invalid sap_b1 settings: {e}")))?;
        let server = raw.server.filter(|s| !s.trim().is_empty()).ok_or_else(|| {
            ConnectorError::fatal(
                "sap_b1 settings need `server`, the Service Layer's address (e.g. https://sap.example.com:50000)",
            )
        })?;
        let mut server = context.url_policy.check(&server, "settings.server")?;
        // Accept the address with or without the service root.
        let path = server.path().trim_end_matches('/');
        let path = path.strip_suffix("/b1s/v1").unwrap_or(path).to_owned();
        server.set_path(&path);
        let company_db = raw
            .company_db
            .filter(|c| !c.trim().is_empty())
            .ok_or_else(|| {
                ConnectorError::fatal(
                    "sap_b1 settings need `company_db` (the CompanyDB to log in to)",
                )
            })?;
        let card_code_prefix = raw.card_code_prefix.unwrap_or_else(|| "C".into());
        if card_code_prefix.chars().count() > 5 {
            return Err(ConnectorError::fatal(
                "settings.card_code_prefix must be at most 5 characters (CardCode holds 15)",
            ));
        }
        let limits =
            RateLimits::from_setting("rate_limit", raw.rate_limit.as_ref(), DEFAULT_LIMITS)?;
        let invoice_lines = invoice_lines(
            raw.invoice_type,
            raw.invoice_account_code,
            raw.invoice_item_code,
        )?;
        Ok(Self {
            server,
            company_db,
            warehouse_code: raw
                .warehouse_code
                .filter(|w| !w.trim().is_empty())
                .unwrap_or_else(|| "01".into()),
            card_code_prefix,
            price_list: raw.price_list.unwrap_or(1).max(1),
            invoice_lines,
            limits,
            timeout: Duration::from_secs(raw.timeout_secs.unwrap_or(60).clamp(1, 600)),
        })
    }

    /// `{server}/b1s/v1/{segment}`: one segment (`Items('A/1')` keeps its slash as `%2F`);
    /// `""` is the service root, with its trailing slash.
    fn service(&self, segment: &str) -> Url {
        crate::urls::join_segments(&self.server, ["b1s", "v1", segment])
    }
}

/// Reads the invoice settings. A service invoice (the default) needs its G/L account: SAP
/// refuses a service row without one ("Enter G/L account for service row"), and no account is
/// guessed for it (SAP's own revenue account determination is not readable through the
/// Service Layer, and a wrong guess would book revenue on the wrong account). Settings are
/// checked without the integration's entities, and invoices sync by default, so the
/// account is required whenever invoices would be service documents.
fn invoice_lines(
    invoice_type: Option<InvoiceType>,
    account_code: Option<String>,
    item_code: Option<String>,
) -> Result<InvoiceLines, ConnectorError> {
    let code = |name: &str, value: Option<String>, max: usize| match value {
        None => Ok(None),
        Some(v) if v.trim().is_empty() || v.chars().count() > max => Err(ConnectorError::fatal(
            format!("settings.{name} `{v}` is not an SAP code (1 to {max} characters)"),
        )),
        Some(v) => Ok(Some(v.trim().to_owned())),
    };
    let account_code = code("invoice_account_code", account_code, ACCOUNT_CODE_MAX)?;
    let item_code = code("invoice_item_code", item_code, ITEM_CODE_MAX)?;
    match invoice_type.unwrap_or(InvoiceType::Service) {
        InvoiceType::Service => {
            if item_code.is_some() {
                return Err(ConnectorError::fatal(
                    "settings.invoice_item_code applies to item invoices only: set settings.invoice_type to `items`, or remove it",
                ));
            }
            let account_code = account_code.ok_or_else(|| {
                ConnectorError::fatal(
                    "sap_b1 settings need `invoice_account_code`: the G/L (revenue) account code an exported invoice's service row is booked on (SAP refuses a service row without one); or set `invoice_type` to `items` with `invoice_item_code`",
                )
            })?;
            Ok(InvoiceLines::Service { account_code })
        }
        InvoiceType::Items => Ok(InvoiceLines::Items {
            item_code: item_code.ok_or_else(|| {
                ConnectorError::fatal(
                    "settings.invoice_type `items` needs `invoice_item_code`: the ItemCode (a non-inventory sales item) an exported invoice's row is booked on",
                )
            })?,
            account_code,
        }),
    }
}

/// The cookies of the current session, and a counter so that of several requests that
/// saw one session expire, only the first logs in again.
#[derive(Debug, Default)]
struct SessionState {
    cookie: Option<HeaderValue>,
    generation: u64,
}

pub struct SapB1Connector {
    settings: SapB1Settings,
    username: String,
    password: String,
    session: Mutex<SessionState>,
    http: HttpRuntime,
    capabilities: Capabilities,
}

impl std::fmt::Debug for SapB1Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SapB1Connector")
            .field("server", &self.settings.server.as_str())
            .field("company_db", &self.settings.company_db)
            .finish_non_exhaustive()
    }
}

/// A single-quoted OData string literal (`'` doubled).
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn truncated(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

fn date(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

/// `UpdateDate` (`2026-11-24` or `2026-11-24T00:00:00Z`) and `UpdateTime` (`10:30:15`) as
/// one instant; the Service Layer states them in the server's time, taken to be UTC.
pub fn parse_update_stamp(date: Option<&str>, time: Option<&str>) -> Option<DateTime<Utc>> {
    let date = NaiveDate::parse_from_str(date?.get(..10)?, "%Y-%m-%d").ok()?;
    let time = time
        .and_then(|t| {
            NaiveTime::parse_from_str(t, "%H:%M:%S")
                .or_else(|_| NaiveTime::parse_from_str(t, "%H:%M"))
                .ok()
        })
        .unwrap_or(NaiveTime::MIN);
    Some(date.and_time(time).and_utc())
}

/// Which Service Layer collection an entity goes to, its key and our reference in it.
#[derive(Debug, Clone, Copy)]
struct Target {
    collection: &'static str,
    key: &'static str,
    reference: &'static str,
}

fn target(entity: Entity) -> Option<Target> {
    Some(match entity {
        Entity::Product => Target {
            collection: "Items",
            key: "ItemCode",
            reference: "ItemCode",
        },
        Entity::Customer => Target {
            collection: "BusinessPartners",
            key: "CardCode",
            reference: "CardCode",
        },
        Entity::Order => Target {
            collection: "Orders",
            key: "DocEntry",
            reference: "NumAtCard",
        },
        Entity::Invoice => Target {
            collection: "Invoices",
            key: "DocEntry",
            reference: "NumAtCard",
        },
        Entity::Inventory => return None,
    })
}

impl Target {
    fn is_document(self) -> bool {
        self.key == "DocEntry"
    }

    /// `Items('A001')` or `Orders(12)`.
    fn entity_path(self, external_id: &str) -> String {
        if self.is_document() {
            format!("{}({external_id})", self.collection)
        } else {
            format!("{}({})", self.collection, literal(external_id))
        }
    }

    /// The external id in a created entity: `DocEntry` for documents, else the code.
    fn external_id(self, entity: &Value) -> Option<String> {
        match entity.get(self.key)? {
            Value::String(code) => Some(code.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
}

impl SapB1Connector {
    pub fn new(
        settings: Option<&Value>,
        credentials: Option<&Credentials>,
        context: &ConnectorContext,
    ) -> Result<Self, ConnectorError> {
        let settings = SapB1Settings::parse(settings, context)?;
        let credentials = credentials.ok_or_else(|| ConnectorError::Auth {
            message: "sap_b1 credentials are missing: set username and password".into(),
        })?;
        let field = |name: &str| {
            credentials
                .get_str(name)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| ConnectorError::Auth {
                    message: format!("sap_b1 credentials need `{name}`"),
                })
        };
        let username = field("username")?;
        let password = field("password")?;
        // The seed stored the company (as `company_db` or `database`) and the server with
        // the credentials; where they are still there they must name what settings name.
        for name in ["company_db", "database"] {
            if let Some(db) = credentials.get_str(name)
                && !db.eq_ignore_ascii_case(&settings.company_db)
            {
                return Err(ConnectorError::fatal(format!(
                    "credentials.{name} ({db}) differs from settings.company_db ({}); remove it from the credentials or make them agree",
                    settings.company_db
                )));
            }
        }
        if let Some(server) = credentials.get_str("server") {
            let same = Url::parse(server)
                .ok()
                .is_some_and(|u| u.origin() == settings.server.origin());
            if !same {
                return Err(ConnectorError::fatal(
                    "credentials.server differs from settings.server; remove it from the credentials or make them agree",
                ));
            }
        }
        let mut http = HttpRuntime::new(
            context,
            HttpOptions {
                request_timeout: settings.timeout,
                client: "sap_b1",
                ..HttpOptions::default()
            },
            Redactor::new(vec![password.clone()]),
        )?;
        if let Some(gate) = &context.rate_gate {
            let key = RateKey {
                connector: IntegrationType::SapB1,
                account: format!(
                    "{}/{}",
                    settings.server.origin().ascii_serialization(),
                    settings.company_db.to_ascii_lowercase()
                ),
            };
            http = http.with_fleet_gate(gate.clone(), key, settings.limits);
        }
        Ok(Self {
            capabilities: Capabilities {
                export: vec![
                    Entity::Product,
                    Entity::Customer,
                    Entity::Order,
                    Entity::Invoice,
                ],
                import: vec![Entity::Product, Entity::Customer, Entity::Inventory],
                export_batch_size: EXPORT_BATCH,
                idempotency: Idempotency::LookupByReference,
            },
            settings,
            username,
            password,
            session: Mutex::new(SessionState::default()),
            http,
        })
    }

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
            let call = HttpCall {
                // Creates are not safe to repeat in place; the worker's retry looks them up.
                idempotent: method != Method::POST,
                conflict_means_in_flight: false,
                method: method.clone(),
                url: url.clone(),
                headers,
                body: body.clone(),
                raw: None,
                form: None,
            };
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

    async fn get_json(&self, url: Url, what: &str) -> Result<Value, ConnectorError> {
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

    /// Sends one record: looks a retried create up first, creates or patches.
    async fn export_one(&self, target: Target, mut op: ExportOp) -> ExportResult {
        let start = Instant::now();
        let action = if op.external_id.is_some() {
            ExportAction::Update
        } else {
            ExportAction::Create
        };
        let result = async {
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
            match &op.external_id {
                None => {
                    if op.retried_create
                        && let Some(found) = self.find_existing(target, &op.payload).await?
                    {
                        return Ok((
                            Exported {
                                external_id: found,
                                replayed: true,
                                metadata: None,
                            },
                            None,
                        ));
                    }
                    self.create(target, &op.payload).await
                }
                Some(id) => {
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
                    Ok((
                        Exported {
                            external_id: id.clone(),
                            replayed: false,
                            metadata: None,
                        },
                        None,
                    ))
                }
            }
        }
        .await;
        let (outcome, response) = match result {
            Ok((exported, response)) => (Ok(exported), response),
            Err(e) => (Err(e), None),
        };
        ExportResult {
            internal_id: op.internal_id,
            action,
            outcome,
            response,
            duration_ms: elapsed_ms(start),
        }
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
            Exported {
                external_id,
                replayed: false,
                metadata: None,
            },
            Some(self.http.redactor().json(&created)),
        ))
    }

    fn card_code(&self, customer_id: i64) -> String {
        truncated(
            &format!("{}{customer_id}", self.settings.card_code_prefix),
            CARD_CODE_MAX,
        )
    }

    fn map(&self, record: &PlatformRecord) -> Result<Value, ConnectorError> {
        let card = |customer_id: Option<i64>, what: &str| {
            customer_id
                .map(|id| self.card_code(id))
                .ok_or_else(|| ConnectorError::rejected(format!("{what} has no customer"), None))
        };
        Ok(match record {
            PlatformRecord::Product(p) => {
                if p.sku.chars().count() > 50 {
                    return Err(ConnectorError::rejected(
                        format!("SKU {} is longer than SAP's 50-character ItemCode", p.sku),
                        None,
                    ));
                }
                let mut item = json!({
                    "ItemCode": p.sku,
                    "ItemName": truncated(&p.name, 200),
                    "SalesItem": "tYES",
                    "Valid": if p.active { "tYES" } else { "tNO" },
                    "Frozen": if p.active { "tNO" } else { "tYES" },
                    "ItemPrices": [{
                        "PriceList": self.settings.price_list,
                        "Price": decimal_to_json(p.price),
                        "Currency": p.currency.trim(),
                    }],
                });
                if let (Some(obj), Some(description)) = (item.as_object_mut(), &p.description) {
                    obj.insert("User_Text".into(), json!(description));
                }
                item
            }
            PlatformRecord::Customer(c) => {
                let mut partner = json!({
                    "CardCode": self.card_code(c.id),
                    "CardName": truncated(c.company_name.as_deref().unwrap_or(&c.name), 100),
                    "CardType": "cCustomer",
                    "EmailAddress": truncated(&c.email, 100),
                });
                if let Some(obj) = partner.as_object_mut() {
                    if let Some(phone) = &c.phone {
                        obj.insert("Phone1".into(), json!(truncated(phone, 20)));
                    }
                    if let Some(vat) = &c.vat_number {
                        obj.insert("FederalTaxID".into(), json!(truncated(vat, 32)));
                    }
                }
                partner
            }
            PlatformRecord::Order(o) => {
                let mut lines = Vec::with_capacity(o.items.len());
                for (i, line) in o.items.iter().enumerate() {
                    let sku = line.sku.clone().ok_or_else(|| {
                        ConnectorError::rejected(
                            format!(
                                "order {} line {} has no product (deleted?)",
                                o.order_number,
                                i + 1
                            ),
                            None,
                        )
                    })?;
                    lines.push(json!({
                        "ItemCode": sku,
                        "Quantity": decimal_to_json(line.quantity),
                        "UnitPrice": decimal_to_json(line.unit_price),
                        "WarehouseCode": self.settings.warehouse_code,
                    }));
                }
                if lines.is_empty() {
                    return Err(ConnectorError::rejected(
                        format!("order {} has no lines", o.order_number),
                        None,
                    ));
                }
                json!({
                    "CardCode": card(o.customer_id, &format!("order {}", o.order_number))?,
                    "NumAtCard": o.order_number,
                    "DocDate": date(o.created_at),
                    // A sales order needs its delivery date; the platform has none.
                    "DocDueDate": date(o.created_at),
                    "DocCurrency": o.currency.trim(),
                    "DocumentLines": lines,
                })
            }
            PlatformRecord::Invoice(inv) => {
                // The platform keeps an invoice's total, not its lines: one row for the total.
                let description = truncated(&format!("Invoice {}", inv.invoice_number), 100);
                let (doc_type, line) = match &self.settings.invoice_lines {
                    InvoiceLines::Service { account_code } => (
                        "dDocument_Service",
                        json!({
                            "ItemDescription": description,
                            "AccountCode": account_code,
                            "LineTotal": decimal_to_json(inv.total_amount),
                        }),
                    ),
                    InvoiceLines::Items {
                        item_code,
                        account_code,
                    } => {
                        let mut line = json!({
                            "ItemCode": item_code,
                            "ItemDescription": description,
                            "Quantity": 1,
                            "UnitPrice": decimal_to_json(inv.total_amount),
                            "WarehouseCode": self.settings.warehouse_code,
                        });
                        if let (Some(obj), Some(account)) = (line.as_object_mut(), account_code) {
                            obj.insert("AccountCode".into(), json!(account));
                        }
                        ("dDocument_Items", line)
                    }
                };
                let mut invoice = json!({
                    "CardCode": card(inv.customer_id, &format!("invoice {}", inv.invoice_number))?,
                    "NumAtCard": inv.invoice_number,
                    "DocType": doc_type,
                    "DocCurrency": inv.currency.trim(),
                    "DocumentLines": [line],
                });
                if let Some(obj) = invoice.as_object_mut() {
                    if let Some(issued) = inv.issued_at {
                        obj.insert("DocDate".into(), json!(date(issued)));
                    }
                    if let Some(due) = inv.due_at {
                        obj.insert("DocDueDate".into(), json!(date(due)));
                    }
                    if let Some(order) = &inv.order_number {
                        obj.insert("Comments".into(), json!(format!("Order {order}")));
                    }
                }
                invoice
            }
            PlatformRecord::Inventory(_) => {
                return Err(ConnectorError::fatal(
                    "SAP Business One stock moves through inventory documents: inventory can be imported, not exported",
                ));
            }
        })
    }
}

/// Reads an Item or BusinessPartner into platform fields (`Inventory` yields one record per
/// warehouse row: see [`parse_stock`]).
pub fn parse_entity(
    entity: Entity,
    row: &Value,
    price_list: u32,
) -> Result<ImportedRecord, String> {
    let text = |field: &str| {
        row.get(field)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let updated_at = parse_update_stamp(
        row.get("UpdateDate").and_then(Value::as_str),
        row.get("UpdateTime").and_then(Value::as_str),
    );
    let data = match entity {
        Entity::Product => {
            let sku = text("ItemCode").ok_or("item without ItemCode")?;
            let price = row
                .get("ItemPrices")
                .and_then(Value::as_array)
                .and_then(|rows| {
                    rows.iter().find(|p| {
                        p.get("PriceList").and_then(Value::as_u64) == Some(u64::from(price_list))
                    })
                });
            ImportedData::Product {
                name: text("ItemName").unwrap_or_else(|| sku.clone()),
                description: text("User_Text"),
                price: price
                    .and_then(|p| p.get("Price"))
                    .and_then(json_to_decimal)
                    .unwrap_or_default(),
                currency: price
                    .and_then(|p| p.get("Currency"))
                    .and_then(Value::as_str)
                    .filter(|c| c.len() == 3)
                    .map(str::to_owned),
                active: text("Valid").as_deref() != Some("tNO")
                    && text("Frozen").as_deref() != Some("tYES"),
                sku,
            }
        }
        _ => {
            let code = text("CardCode").ok_or("business partner without CardCode")?;
            ImportedData::Customer {
                email: text("EmailAddress").ok_or_else(|| {
                    format!("business partner {code} has no email address; the platform needs one")
                })?,
                name: text("CardName").unwrap_or_else(|| code.clone()),
                company_name: text("CardName"),
                phone: text("Phone1"),
                vat_number: text("FederalTaxID"),
            }
        }
    };
    let external_id = match &data {
        ImportedData::Product { sku, .. } => sku.clone(),
        _ => text("CardCode").unwrap_or_default(),
    };
    Ok(ImportedRecord {
        external_id,
        updated_at,
        deleted: false,
        data: Some(data),
        raw: row.clone(),
    })
}

/// An item's stock: one record per `ItemWarehouseInfoCollection` row (`InStock`).
pub fn parse_stock(row: &Value) -> Result<Vec<ImportedRecord>, String> {
    let sku = row
        .get("ItemCode")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or("item without ItemCode")?;
    let updated_at = parse_update_stamp(
        row.get("UpdateDate").and_then(Value::as_str),
        row.get("UpdateTime").and_then(Value::as_str),
    );
    let rows = row
        .get("ItemWarehouseInfoCollection")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    rows.iter()
        .map(|wh| {
            let warehouse = wh
                .get("WarehouseCode")
                .and_then(Value::as_str)
                .filter(|w| !w.is_empty())
                .ok_or_else(|| format!("item {sku}: a warehouse row without WarehouseCode"))?;
            Ok(ImportedRecord {
                external_id: format!("{sku}:{warehouse}"),
                updated_at,
                deleted: false,
                data: Some(ImportedData::Inventory {
                    sku: sku.to_owned(),
                    warehouse_code: warehouse.to_owned(),
                    quantity: wh
                        .get("InStock")
                        .and_then(json_to_decimal)
                        .unwrap_or_default(),
                }),
                raw: wh.clone(),
            })
        })
        .collect()
}

#[async_trait]
impl Connector for SapB1Connector {
    fn integration_type(&self) -> IntegrationType {
        IntegrationType::SapB1
    }

    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    async fn test_connection(&self) -> Result<ConnectionTest, ConnectorError> {
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

    fn map_record(&self, record: &PlatformRecord) -> Result<Value, ConnectorError> {
        self.map(record)
    }

    fn references(&self, record: &PlatformRecord) -> Vec<Reference> {
        let customer = match record {
            PlatformRecord::Order(o) => o.customer_id,
            PlatformRecord::Invoice(i) => i.customer_id,
            _ => None,
        };
        customer
            .map(|c| vec![(MappingEntityType::Customer, c.to_string())])
            .unwrap_or_default()
    }

    fn redact(&self, value: &Value) -> Value {
        self.http.redactor().json(value)
    }

    async fn export(&self, entity: Entity, ops: Vec<ExportOp>) -> Vec<ExportResult> {
        let Some(target) = target(entity) else {
            return ops
                .into_iter()
                .map(|op| ExportResult {
                    action: if op.external_id.is_some() {
                        ExportAction::Update
                    } else {
                        ExportAction::Create
                    },
                    internal_id: op.internal_id,
                    outcome: Err(ConnectorError::fatal(
                        "SAP Business One stock cannot be exported (it moves through inventory documents)",
                    )),
                    response: None,
                    duration_ms: 0,
                })
                .collect();
        };
        // A few at a time; the results come back in the ops' order.
        crate::in_order_concurrently(
            ops.into_iter().map(|op| self.export_one(target, op)),
            EXPORT_PARALLELISM,
        )
        .await
    }

    async fn import_page(
        &self,
        entity: Entity,
        cursor: &ImportCursor,
    ) -> Result<ImportPage, ConnectorError> {
        let (collection, select, mut filter, incremental) = match entity {
            Entity::Product => (
                "Items",
                "ItemCode,ItemName,User_Text,ItemPrices,Valid,Frozen,UpdateDate,UpdateTime",
                vec![],
                true,
            ),
            Entity::Customer => (
                "BusinessPartners",
                "CardCode,CardName,CardType,EmailAddress,Phone1,FederalTaxID,UpdateDate,UpdateTime",
                vec!["CardType eq 'cCustomer'".to_owned()],
                true,
            ),
            // Stock moves do not touch an item's UpdateDate: read every stock item each pass.
            Entity::Inventory => (
                "Items",
                "ItemCode,ItemWarehouseInfoCollection,UpdateDate,UpdateTime",
                vec!["InventoryItem eq 'tYES'".to_owned()],
                false,
            ),
            other => {
                return Err(ConnectorError::fatal(format!(
                    "the SAP Business One connector does not import {other}"
                )));
            }
        };
        let url = match &cursor.page {
            // nextLink is relative to the service root (or absolute); either resolves here.
            Some(next) => {
                let root = self.settings.service("");
                let next_url = root.join(next).map_err(|e| {
                    ConnectorError::transient(format!("unusable odata.nextLink: {e}"))
                })?;
                if next_url.origin() != root.origin() {
                    return Err(ConnectorError::fatal(format!(
                        "odata.nextLink {} points to another server",
                        crate::urls::shown(&next_url)
                    )));
                }
                next_url
            }
            None => {
                if incremental && let Some(since) = cursor.updated_since {
                    // UpdateDate has a day's granularity: from the start of that day.
                    filter.push(format!("UpdateDate ge {}", literal(&date(since))));
                }
                let mut url = self.settings.service(collection);
                {
                    let mut q = url.query_pairs_mut();
                    q.append_pair("$select", select);
                    if !filter.is_empty() {
                        q.append_pair("$filter", &filter.join(" and "));
                    }
                    let key = if collection == "Items" {
                        "ItemCode"
                    } else {
                        "CardCode"
                    };
                    q.append_pair(
                        "$orderby",
                        &if incremental {
                            format!("UpdateDate,UpdateTime,{key}")
                        } else {
                            key.to_owned()
                        },
                    );
                }
                url
            }
        };
        let body = self.get_json(url, &format!("GET {collection}")).await?;
        let rows = body.get("value").and_then(Value::as_array).ok_or_else(|| {
            ConnectorError::transient(format!("GET {collection}: the body has no value array"))
        })?;
        let mut records = Vec::with_capacity(rows.len());
        let mut rejected = Vec::new();
        for row in rows {
            let parsed = if entity == Entity::Inventory {
                parse_stock(row)
            } else {
                parse_entity(entity, row, self.settings.price_list).map(|r| vec![r])
            };
            match parsed {
                Ok(found) => records.extend(found),
                Err(error) => rejected.push(RejectedItem {
                    external_id: row
                        .get("ItemCode")
                        .or(row.get("CardCode"))
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    error,
                    raw: self.http.redactor().json(row),
                }),
            }
        }
        let next_page = body
            .get("odata.nextLink")
            .or(body.get("@odata.nextLink"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        Ok(ImportPage {
            records,
            rejected,
            next_page,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use passerelle_core::platform::{
        CustomerRecord, InvoiceRecord, OrderLine, OrderRecord, ProductRecord,
    };
    use rust_decimal::Decimal;
    use std::str::FromStr;

    fn ctx() -> ConnectorContext {
        ConnectorContext {
            url_policy: crate::UrlPolicy {
                allow_private_networks: true,
            },
            ..ConnectorContext::default()
        }
    }

    fn connector(extra: Value) -> SapB1Connector {
        let mut settings = json!({"server": "https://sap.example.com:50000", "company_db": "SBODEMOFR",
            "invoice_account_code": "4000"});
        if let (Some(s), Some(e)) = (settings.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        let creds =
            Credentials::from_value(json!({"username": "manager", "password": "pw"})).unwrap();
        SapB1Connector::new(Some(&settings), Some(&creds), &ctx()).unwrap()
    }

    fn t() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 2, 10, 0, 0).unwrap()
    }

    #[test]
    fn settings_need_server_and_company_and_refuse_secrets() {
        let parse = |mut v: Value| {
            if let Some(o) = v.as_object_mut() {
                o.entry("invoice_account_code").or_insert(json!("4000"));
            }
            SapB1Settings::parse(Some(&v), &ctx())
        };
        assert!(parse(json!({"company_db": "X"})).is_err());
        assert!(parse(json!({"server": "https://h"})).is_err());
        let err =
            parse(json!({"server": "https://h", "company_db": "X", "password": "p"})).unwrap_err();
        assert!(err.to_string().contains("credential"), "{err}");
        assert!(parse(json!({"server": "https://h", "company_db": "X", "database": "X"})).is_err());
        let s = parse(json!({"server": "https://h:50000/b1s/v1/", "company_db": "X"})).unwrap();
        assert_eq!(s.service("Items").as_str(), "https://h:50000/b1s/v1/Items");
        assert_eq!(s.limits, DEFAULT_LIMITS);
        assert_eq!(s.warehouse_code, "01");
        let s =
            parse(json!({"server": "https://h", "company_db": "X", "rate_limit": {"requests": 5}}))
                .unwrap();
        assert_eq!(s.limits.requests, 5);
    }

    #[test]
    fn service_invoices_need_a_gl_account_and_item_invoices_an_item() {
        let parse = |v: Value| SapB1Settings::parse(Some(&v), &ctx());
        let base = json!({"server": "https://h", "company_db": "X"});
        let with = |extra: Value| {
            let mut v = base.clone();
            if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
                o.extend(e.clone());
            }
            v
        };
        // Invoices are service documents by default: the account is required, by name.
        for missing in [base.clone(), with(json!({"invoice_type": "service"}))] {
            let err = parse(missing).unwrap_err();
            assert_eq!(err.class(), "fatal");
            assert!(err.to_string().contains("invoice_account_code"), "{err}");
        }
        let s = parse(with(json!({"invoice_account_code": "41000000"}))).unwrap();
        assert_eq!(
            s.invoice_lines,
            InvoiceLines::Service {
                account_code: "41000000".into()
            }
        );
        let err = parse(with(json!({"invoice_type": "items"}))).unwrap_err();
        assert!(err.to_string().contains("invoice_item_code"), "{err}");
        let s = parse(with(
            json!({"invoice_type": "items", "invoice_item_code": "SERVICES"}),
        ))
        .unwrap();
        assert_eq!(
            s.invoice_lines,
            InvoiceLines::Items {
                item_code: "SERVICES".into(),
                account_code: None
            }
        );
        for bad in [
            json!({"invoice_account_code": ""}),
            json!({"invoice_account_code": "1234567890123456"}),
            json!({"invoice_account_code": "4000", "invoice_item_code": "SERVICES"}),
            json!({"invoice_type": "goods", "invoice_account_code": "4000"}),
        ] {
            assert_eq!(
                parse(with(bad.clone())).unwrap_err().class(),
                "fatal",
                "{bad}"
            );
        }
    }

    #[test]
    fn request_urls_join_the_base_with_or_without_a_path_or_a_trailing_slash() {
        for (server, root) in [
            (
                "https://sap.example.com:50000",
                "https://sap.example.com:50000",
            ),
            (
                "https://sap.example.com:50000/",
                "https://sap.example.com:50000",
            ),
            (
                "https://sap.example.com:50000/b1s/v1",
                "https://sap.example.com:50000",
            ),
            ("https://gw.example.com/sap", "https://gw.example.com/sap"),
            ("https://gw.example.com/sap/", "https://gw.example.com/sap"),
            (
                "https://gw.example.com/sap/b1s/v1/",
                "https://gw.example.com/sap",
            ),
        ] {
            let s = SapB1Settings::parse(
                Some(&json!({"server": server, "company_db": "X", "invoice_account_code": "4000"})),
                &ctx(),
            )
            .unwrap();
            assert_eq!(
                s.service("").as_str(),
                format!("{root}/b1s/v1/"),
                "{server}"
            );
            assert_eq!(
                s.service("Login").as_str(),
                format!("{root}/b1s/v1/Login"),
                "{server}"
            );
            let item = target(Entity::Product).unwrap();
            assert_eq!(
                s.service(&item.entity_path("A/1 b")).as_str(),
                format!("{root}/b1s/v1/Items('A%2F1%20b')"),
                "{server}"
            );
        }
    }

    #[test]
    fn invoices_map_to_a_service_row_on_the_account_or_an_item_row() {
        let invoice = PlatformRecord::Invoice(InvoiceRecord {
            id: 3,
            invoice_number: "INV-3".into(),
            order_id: None,
            order_number: None,
            customer_id: Some(42),
            customer_email: None,
            status: "issued".into(),
            currency: "EUR".into(),
            total_amount: Decimal::from_str("25.5").unwrap(),
            issued_at: Some(t()),
            due_at: None,
            updated_at: t(),
        });
        let service = connector(json!({})).map_record(&invoice).unwrap();
        assert_eq!(service["DocType"], "dDocument_Service");
        assert_eq!(
            service["DocumentLines"][0],
            json!({"ItemDescription": "Invoice INV-3", "AccountCode": "4000", "LineTotal": 25.5})
        );
        let items = connector(
            json!({"invoice_type": "items", "invoice_item_code": "SERVICES",
            "invoice_account_code": null}),
        )
        .map_record(&invoice)
        .unwrap();
        assert_eq!(items["DocType"], "dDocument_Items");
        assert_eq!(
            items["DocumentLines"][0],
            json!({"ItemCode": "SERVICES", "ItemDescription": "Invoice INV-3", "Quantity": 1,
                   "UnitPrice": 25.5, "WarehouseCode": "01"})
        );
    }

    #[test]
    fn seed_shaped_credentials_must_agree_with_settings() {
        let settings = json!({"server": "https://sap.example.com:50000", "company_db": "SBODEMOFR",
            "invoice_account_code": "4000"});
        let ok = Credentials::from_value(json!({"username": "u", "password": "p",
            "database": "sbodemofr", "server": "https://sap.example.com:50000"}))
        .unwrap();
        assert!(SapB1Connector::new(Some(&settings), Some(&ok), &ctx()).is_ok());
        let other = Credentials::from_value(
            json!({"username": "u", "password": "p", "company_db": "OTHER"}),
        )
        .unwrap();
        assert!(SapB1Connector::new(Some(&settings), Some(&other), &ctx()).is_err());
        let missing = Credentials::from_value(json!({"username": "u"})).unwrap();
        assert!(matches!(
            SapB1Connector::new(Some(&settings), Some(&missing), &ctx()),
            Err(ConnectorError::Auth { .. })
        ));
    }

    #[test]
    fn records_map_to_service_layer_entities() {
        let c = connector(json!({"card_code_prefix": "WEB"}));
        let product = c
            .map_record(&PlatformRecord::Product(ProductRecord {
                id: 1,
                sku: "SKU-1".into(),
                name: "Widget".into(),
                description: Some("A widget".into()),
                price: Decimal::from_str("12.5").unwrap(),
                currency: "EUR".into(),
                active: true,
                updated_at: t(),
            }))
            .unwrap();
        assert_eq!(product["ItemCode"], "SKU-1");
        assert_eq!(product["ItemPrices"][0]["PriceList"], 1);
        assert_eq!(product["ItemPrices"][0]["Price"].to_string(), "12.5");
        let customer = c
            .map_record(&PlatformRecord::Customer(CustomerRecord {
                id: 42,
                email: "ann@acme.example".into(),
                name: "Ann".into(),
                company_name: Some("Acme".into()),
                phone: Some("+33 1".into()),
                vat_number: Some("FR1".into()),
                updated_at: t(),
            }))
            .unwrap();
        assert_eq!(
            (
                customer["CardCode"].as_str(),
                customer["CardType"].as_str(),
                customer["FederalTaxID"].as_str()
            ),
            (Some("WEB42"), Some("cCustomer"), Some("FR1"))
        );
        let order = c
            .map_record(&PlatformRecord::Order(OrderRecord {
                id: 7,
                order_number: "WH-7".into(),
                customer_id: Some(42),
                customer_email: None,
                status: "confirmed".into(),
                currency: "EUR".into(),
                total_amount: Decimal::from(25),
                items: vec![OrderLine {
                    product_id: Some(1),
                    sku: Some("SKU-1".into()),
                    quantity: Decimal::from(2),
                    unit_price: Decimal::from_str("12.5").unwrap(),
                }],
                created_at: t(),
                updated_at: t(),
            }))
            .unwrap();
        assert_eq!(order["NumAtCard"], "WH-7");
        assert_eq!(order["DocDueDate"], "2026-11-02");
        assert_eq!(order["DocumentLines"][0]["WarehouseCode"], "01");
        let invoice = c
            .map_record(&PlatformRecord::Invoice(InvoiceRecord {
                id: 3,
                invoice_number: "INV-3".into(),
                order_id: Some(7),
                order_number: Some("WH-7".into()),
                customer_id: Some(42),
                customer_email: None,
                status: "issued".into(),
                currency: "EUR".into(),
                total_amount: Decimal::from(25),
                issued_at: Some(t()),
                due_at: None,
                updated_at: t(),
            }))
            .unwrap();
        assert_eq!(invoice["DocType"], "dDocument_Service");
        assert_eq!(invoice["NumAtCard"], "INV-3");
    }

    #[test]
    fn items_partners_and_stock_parse() {
        let item = json!({"ItemCode": "A1", "ItemName": "W", "UpdateDate": "2026-11-24", "UpdateTime": "10:30:15",
            "ItemPrices": [{"PriceList": 1, "Price": 9.5, "Currency": "EUR"}], "Valid": "tYES", "Frozen": "tNO",
            "ItemWarehouseInfoCollection": [{"WarehouseCode": "01", "InStock": 7}, {"WarehouseCode": "02", "InStock": 0}]});
        let r = parse_entity(Entity::Product, &item, 1).unwrap();
        assert_eq!(r.external_id, "A1");
        assert_eq!(
            r.updated_at,
            Some(Utc.with_ymd_and_hms(2026, 11, 24, 10, 30, 15).unwrap())
        );
        assert!(
            matches!(r.data, Some(ImportedData::Product { ref price, .. }) if price.to_string() == "9.5")
        );
        let stock = parse_stock(&item).unwrap();
        assert_eq!(stock.len(), 2);
        assert_eq!(stock[0].external_id, "A1:01");
        let bp = json!({"CardCode": "C1", "CardName": "Acme"});
        assert!(parse_entity(Entity::Customer, &bp, 1).is_err());
    }
}
