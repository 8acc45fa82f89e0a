//! The Microsoft Dynamics 365 connector over the Dataverse Web API v9.2 (`dynamics_365`). See
//! `docs/connectors/dynamics_365.md`.
//!
//! - Auth: Entra ID client credentials (`client_id`, `client_secret`) against the tenant's
//!   token endpoint with `scope={environment_url}/.default`. No refresh token: an access token
//!   is requested again when it nears expiry, and once more after a `401`.
//! - Writes: customers → `accounts` keyed by `accountnumber` (our reference, `PAS-{id}`),
//!   products → `products` keyed by `productnumber` (the SKU), orders → `salesorders` keyed
//!   by `ordernumber`, invoices → `invoices` keyed by `invoicenumber`; a document's lines
//!   (`salesorderdetails`, `invoicedetails`) are reconciled by `lineitemnumber` after the
//!   document (read, then update, create or delete). A create is an upsert by
//!   alternate key (`PATCH /accounts(accountnumber='PAS-7')`): repeating it after a lost answer
//!   updates the row it made instead of making another, so no lookup is needed before a retry.
//!   An update is `PATCH /accounts(<id>)` with `If-Match: *`, so a row deleted in Dynamics is
//!   reported rather than silently re-created. Ids come from the `OData-EntityId` header of
//!   the `204`.
//! - Imports: `$filter=modifiedon ge {cursor}` ordered by `modifiedon`, paged with
//!   `Prefer: odata.maxpagesize` and `@odata.nextLink` (kept as the cursor's page).
//! - Limits: 6,000 requests per 5 minutes and 52 at once per application user and
//!   environment (`rate::published::DATAVERSE`), through the fleet gate keyed by the
//!   environment URL; a `429`'s `Retry-After` is honoured by the runtime.
//! - Customers and products (one upsert each) go in OData `$batch` requests of up to
//!   `settings.batch_size` with `Prefer: odata.continue-on-error`; each part's answer is
//!   mapped back to its record. Orders and invoices (a document, then its lines) go one by one.
//! - Not here: stock and importing orders or invoices (the worker is told through
//!   [`Capabilities`]), change sets, and change tracking (`odata.track-changes`).

use crate::http::{HttpCall, HttpOptions, HttpReply, HttpRuntime, RawBody, Redactor, classify};
use crate::rate::{RateKey, RateLimits, published};
use crate::{
    Capabilities, ConnectionTest, Connector, ConnectorContext, ConnectorError, ExportAction,
    ExportOp, ExportResult, Exported, Idempotency, ImportCursor, ImportPage, Reference,
    RejectedItem, elapsed_ms,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use passerelle_core::platform::{
    ImportedData, ImportedRecord, PlatformRecord, decimal_to_json, json_to_decimal,
};
use passerelle_core::vault::Credentials;
use passerelle_core::{Entity, IntegrationType, MappingEntityType};
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use url::Url;
use uuid::Uuid;

const API_PATH: &str = "/api/data/v9.2";
/// Records of one export call sent at once (Dataverse allows 52 per user; a worker runs
/// several syncs).
const EXPORT_PARALLELISM: usize = 8;
/// Requests one `$batch` may hold.
const MAX_BATCH: usize = 1000;
/// Prefix of `accountnumber`, our reference for a customer (Dataverse holds 20 characters).
const ACCOUNT_PREFIX: &str = "PAS-";
const ACCOUNT_NUMBER_MAX: usize = 20;
/// Placeholders the mapping leaves for the Dataverse ids of referenced records.
const CUSTOMER_PLACEHOLDER: &str = "platform-customer:";
const PRODUCT_PLACEHOLDER: &str = "platform-product:";
/// Where a document's payload keeps its lines (the name of the document → line navigation
/// property); they are sent to the line table after the document itself.
const ORDER_LINES: &str = "order_details";
const INVOICE_LINES: &str = "invoice_details";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    environment_url: Option<String>,
    tenant_id: Option<String>,
    token_url: Option<String>,
    default_uom_schedule_id: Option<String>,
    default_uom_id: Option<String>,
    price_list_id: Option<String>,
    page_size: Option<usize>,
    batch_size: Option<usize>,
    rate_limit: Option<Value>,
    timeout_secs: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct DynamicsSettings {
    /// `https://{org}.crm.dynamics.com`, no trailing slash; the OAuth resource too.
    pub environment_url: Url,
    pub token_url: Url,
    /// The unit group and unit every new product needs (Dataverse requires both).
    pub default_uom_schedule_id: Option<Uuid>,
    pub default_uom_id: Option<Uuid>,
    /// The price list (`pricelevelid`) new sales orders use; Dataverse requires one.
    pub price_list_id: Option<Uuid>,
    /// `Prefer: odata.maxpagesize` for imports.
    pub page_size: usize,
    /// Requests per `$batch` (customers and products); Dataverse takes at most 1,000.
    pub batch_size: usize,
    pub limits: RateLimits,
    pub timeout: Duration,
}

fn guid_setting(raw: Option<&String>, name: &str) -> Result<Option<Uuid>, ConnectorError> {
    raw.map(|v| {
        Uuid::parse_str(v.trim()).map_err(|_| {
            ConnectorError::fatal(format!(
                "settings.{name} `{v}` is not a Dataverse id (a GUID)"
            ))
        })
    })
    .transpose()
}

impl DynamicsSettings {
    pub fn parse(
        settings: Option<&Value>,
        context: &ConnectorContext,
    ) -> Result<Self, ConnectorError> {
        let value = settings.ok_or_else(|| {
            ConnectorError::fatal(
                "dynamics_365 settings are missing; `environment_url` is required",
            )
        })?;
        crate::settings::refuse_secret_settings(value)?;
        let raw: RawSettings = serde_json::from_value(value.clone())
            .map_err(|e| ConnectorError::fatal(format!("invalid dynamics_365 settings: {e}")))?;
        let environment = raw
            .environment_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                ConnectorError::fatal(
                    "dynamics_365 settings need `environment_url` (e.g. https://contoso.crm.dynamics.com)",
                )
            })?;
        let mut environment_url = context
            .url_policy
            .check(environment, "settings.environment_url")?;
        if environment_url.query().is_some() {
            return Err(ConnectorError::fatal(
                "settings.environment_url must not carry a query string",
            ));
        }
        let trimmed = environment_url.path().trim_end_matches('/').to_owned();
        if trimmed.ends_with(API_PATH) {
            return Err(ConnectorError::fatal(format!(
                "settings.environment_url is the environment's root (https://contoso.crm.dynamics.com), without {API_PATH}"
            )));
        }
        environment_url.set_path(&trimmed);
        let token_url = match (raw.token_url.as_deref(), raw.tenant_id.as_deref()) {
            (Some(url), _) => context.url_policy.check(url, "settings.token_url")?,
            (None, Some(tenant)) => {
                let tenant = tenant.trim();
                if tenant.is_empty()
                    || !tenant
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                {
                    return Err(ConnectorError::fatal(format!(
                        "settings.tenant_id `{tenant}` is not an Entra ID tenant (a GUID or a domain such as contoso.onmicrosoft.com)"
                    )));
                }
                context.url_policy.check(
                    &format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"),
                    "settings.tenant_id",
                )?
            }
            (None, None) => {
                return Err(ConnectorError::fatal(
                    "dynamics_365 settings need `tenant_id` (the Entra ID tenant of the app registration) or `token_url`",
                ));
            }
        };
        let page_size = raw.page_size.unwrap_or(500);
        if !(1..=5000).contains(&page_size) {
            return Err(ConnectorError::fatal(
                "settings.page_size must be between 1 and 5000 (Dataverse's page maximum)",
            ));
        }
        let batch_size = raw.batch_size.unwrap_or(100);
        if !(1..=MAX_BATCH).contains(&batch_size) {
            return Err(ConnectorError::fatal(
                "settings.batch_size must be between 1 and 1000 (Dataverse's $batch maximum)",
            ));
        }
        Ok(Self {
            environment_url,
            token_url,
            default_uom_schedule_id: guid_setting(
                raw.default_uom_schedule_id.as_ref(),
                "default_uom_schedule_id",
            )?,
            default_uom_id: guid_setting(raw.default_uom_id.as_ref(), "default_uom_id")?,
            price_list_id: guid_setting(raw.price_list_id.as_ref(), "price_list_id")?,
            page_size,
            batch_size,
            limits: RateLimits::from_setting(
                "rate_limit",
                raw.rate_limit.as_ref(),
                published::DATAVERSE,
            )?,
            timeout: Duration::from_secs(raw.timeout_secs.unwrap_or(30).clamp(1, 300)),
        })
    }

    /// The OAuth scope: the environment URL with `/.default`.
    pub fn scope(&self) -> String {
        format!(
            "{}/.default",
            self.environment_url.as_str().trim_end_matches('/')
        )
    }

    /// `{environment}/api/data/v9.2/{resource}`: one segment, percent-encoded here
    /// (`accounts(accountnumber='A/1')` keeps its slash as `%2F`); `""` is the service root.
    fn api_url(&self, resource: &str) -> Url {
        let root = API_PATH.split('/').filter(|s| !s.is_empty());
        crate::urls::join_segments(&self.environment_url, root.chain([resource]))
    }
}

/// The table, alternate key column and primary key of an exported entity.
#[derive(Debug, Clone, Copy)]
struct Table {
    set: &'static str,
    key: &'static str,
    pk: &'static str,
    lines: Option<LineTable>,
}

/// The line table of a document (sales order, invoice).
#[derive(Debug, Clone, Copy)]
struct LineTable {
    /// The payload key holding the lines.
    field: &'static str,
    set: &'static str,
    pk: &'static str,
    /// The line's navigation property to its document, and the attribute it reads as.
    parent: &'static str,
    parent_attribute: &'static str,
}

fn table(entity: Entity) -> Option<Table> {
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

/// An OData string literal in a URL key segment, quotes doubled; [`DynamicsSettings::api_url`]
/// percent-encodes the segment.
pub fn key_segment(column: &str, value: &str) -> String {
    format!("({column}='{}')", value.replace('\'', "''"))
}

/// The id in an `OData-EntityId` header (`…/accounts(00000000-…)`).
pub fn entity_id(header: &str) -> Option<Uuid> {
    let inside = header.rsplit_once('(')?.1.strip_suffix(')')?;
    Uuid::parse_str(inside).ok()
}

/// A customer's reference at Dataverse (`accountnumber`).
pub fn account_number(customer_id: i64) -> String {
    format!("{ACCOUNT_PREFIX}{customer_id}")
}

fn truncated(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// The platform record as a Dataverse row. Pure.
pub fn map_record(
    settings: &DynamicsSettings,
    record: &PlatformRecord,
) -> Result<Value, ConnectorError> {
    match record {
        PlatformRecord::Customer(c) => {
            let number = account_number(c.id);
            if number.chars().count() > ACCOUNT_NUMBER_MAX {
                return Err(ConnectorError::rejected(
                    format!("account number {number} is longer than Dataverse's 20 characters"),
                    None,
                ));
            }
            let mut account = Map::new();
            account.insert(
                "name".into(),
                json!(truncated(c.company_name.as_deref().unwrap_or(&c.name), 160)),
            );
            account.insert("accountnumber".into(), json!(number));
            account.insert("emailaddress1".into(), json!(c.email));
            // Not cut: a shortened phone number is a wrong number. Dataverse refuses more
            // than 50 characters and the record is logged.
            account.insert("telephone1".into(), json!(c.phone));
            let mut notes = Vec::new();
            if c.company_name.is_some() {
                notes.push(format!("Contact: {}", c.name));
            }
            if let Some(vat) = &c.vat_number {
                notes.push(format!("VAT {vat}"));
            }
            account.insert(
                "description".into(),
                if notes.is_empty() {
                    Value::Null
                } else {
                    json!(notes.join("\n"))
                },
            );
            Ok(Value::Object(account))
        }
        PlatformRecord::Product(p) => {
            let (Some(schedule), Some(unit)) =
                (settings.default_uom_schedule_id, settings.default_uom_id)
            else {
                return Err(ConnectorError::rejected(
                    "Dataverse products need a unit group and a default unit: set settings.default_uom_schedule_id and settings.default_uom_id",
                    None,
                ));
            };
            if p.sku.chars().count() > 100 {
                return Err(ConnectorError::rejected(
                    format!(
                        "SKU `{}` is longer than Dataverse's 100-character productnumber",
                        p.sku
                    ),
                    None,
                ));
            }
            Ok(json!({
                "name": truncated(&p.name, 100),
                "productnumber": p.sku,
                "description": p.description.as_deref().map(|d| truncated(d, 2000)),
                "price": decimal_to_json(p.price.round_dp(4)),
                "defaultuomscheduleid@odata.bind": format!("/uomschedules({schedule})"),
                "defaultuomid@odata.bind": format!("/uoms({unit})"),
            }))
        }
        PlatformRecord::Order(o) => {
            let price_list = settings.price_list_id.ok_or_else(|| {
                ConnectorError::rejected(
                    "Dataverse sales orders need a price list: set settings.price_list_id",
                    None,
                )
            })?;
            let unit = settings.default_uom_id.ok_or_else(|| {
                ConnectorError::rejected(
                    "Dataverse order lines need a unit: set settings.default_uom_id",
                    None,
                )
            })?;
            if o.order_number.chars().count() > 100 {
                return Err(ConnectorError::rejected(
                    format!(
                        "order number `{}` is longer than Dataverse's 100-character ordernumber",
                        o.order_number
                    ),
                    None,
                ));
            }
            let customer = o.customer_id.ok_or_else(|| {
                ConnectorError::rejected(format!("order {} has no customer", o.order_number), None)
            })?;
            let mut lines = Vec::with_capacity(o.items.len());
            for (i, line) in o.items.iter().enumerate() {
                let product = line.product_id.ok_or_else(|| {
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
                    "lineitemnumber": i + 1,
                    "productid@odata.bind": format!("{PRODUCT_PLACEHOLDER}{product}"),
                    "uomid@odata.bind": format!("/uoms({unit})"),
                    "quantity": decimal_to_json(line.quantity),
                    "priceperunit": decimal_to_json(line.unit_price),
                    "ispriceoverridden": true,
                }));
            }
            Ok(json!({
                "name": truncated(&format!("Order {}", o.order_number), 300),
                "ordernumber": o.order_number,
                "description": format!("Platform order {} ({})", o.order_number, o.status),
                "customerid_account@odata.bind": format!("{CUSTOMER_PLACEHOLDER}{customer}"),
                "pricelevelid@odata.bind": format!("/pricelevels({price_list})"),
                ORDER_LINES: lines,
            }))
        }
        PlatformRecord::Invoice(inv) => {
            let price_list = settings.price_list_id.ok_or_else(|| {
                ConnectorError::rejected(
                    "Dataverse invoices need a price list: set settings.price_list_id",
                    None,
                )
            })?;
            if inv.invoice_number.chars().count() > 100 {
                return Err(ConnectorError::rejected(
                    format!(
                        "invoice number `{}` is longer than Dataverse's 100-character invoicenumber",
                        inv.invoice_number
                    ),
                    None,
                ));
            }
            let customer = inv.customer_id.ok_or_else(|| {
                ConnectorError::rejected(
                    format!("invoice {} has no customer", inv.invoice_number),
                    None,
                )
            })?;
            let mut description =
                format!("Platform invoice {} ({})", inv.invoice_number, inv.status);
            if let Some(order) = &inv.order_number {
                description.push_str(&format!(", order {order}"));
            }
            let mut invoice = json!({
                "name": truncated(&format!("Invoice {}", inv.invoice_number), 300),
                "invoicenumber": inv.invoice_number,
                "description": description,
                "customerid_account@odata.bind": format!("{CUSTOMER_PLACEHOLDER}{customer}"),
                "pricelevelid@odata.bind": format!("/pricelevels({price_list})"),
                // One write-in line for the total: the platform's invoice has no lines.
                INVOICE_LINES: [{
                    "lineitemnumber": 1,
                    "isproductoverridden": true,
                    "productdescription": truncated(&format!("Invoice {}", inv.invoice_number), 500),
                    "quantity": 1,
                    "priceperunit": decimal_to_json(inv.total_amount),
                    "ispriceoverridden": true,
                }],
            });
            if let Some(due) = inv.due_at {
                invoice["duedate"] = json!(due.format("%Y-%m-%d").to_string());
            }
            Ok(invoice)
        }
        other => Err(ConnectorError::fatal(format!(
            "the dynamics_365 connector does not export {} (stock lives outside core Dataverse)",
            other.entity()
        ))),
    }
}

/// Replaces the placeholders the mapping left with the Dataverse ids of the records this one
/// refers to (`op.references`); a record not at Dataverse yet rejects this one.
pub fn resolve_references(op: &ExportOp) -> Result<Value, ConnectorError> {
    fn fill(value: &mut Value, op: &ExportOp) -> Result<(), ConnectorError> {
        match value {
            Value::String(text) => {
                for (prefix, kind, set, what) in [
                    (
                        CUSTOMER_PLACEHOLDER,
                        MappingEntityType::Customer,
                        "accounts",
                        "customer",
                    ),
                    (
                        PRODUCT_PLACEHOLDER,
                        MappingEntityType::Product,
                        "products",
                        "product",
                    ),
                ] {
                    if let Some(id) = text.strip_prefix(prefix) {
                        let external = op.references.get(&(kind, id.to_owned())).ok_or_else(|| {
                            ConnectorError::rejected(
                                format!("{what} {id} is not in Dynamics 365 yet; sync {what}s first (enable them on this integration)"),
                                None,
                            )
                        })?;
                        *text = format!("/{set}({external})");
                        break;
                    }
                }
                Ok(())
            }
            Value::Array(items) => items.iter_mut().try_for_each(|v| fill(v, op)),
            Value::Object(map) => map.values_mut().try_for_each(|v| fill(v, op)),
            _ => Ok(()),
        }
    }
    let mut payload = op.payload.clone();
    fill(&mut payload, op)?;
    Ok(payload)
}

/// Reads an account or a product into platform fields.
pub fn parse_row(entity: Entity, row: &Value) -> Result<ImportedRecord, String> {
    let Some(def) = table(entity).filter(|_| matches!(entity, Entity::Customer | Entity::Product))
    else {
        return Err(format!(
            "the dynamics_365 connector does not import {entity}"
        ));
    };
    let text = |field: &str| {
        row.get(field)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let id = text(def.pk).ok_or_else(|| format!("{} row without {}", def.set, def.pk))?;
    let updated_at = text("modifiedon")
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc));
    let data = match entity {
        Entity::Customer => {
            let email = text("emailaddress1").ok_or_else(|| {
                format!("account {id} has no e-mail address; the platform needs one")
            })?;
            let name = text("name").unwrap_or_else(|| email.clone());
            ImportedData::Customer {
                email,
                company_name: Some(name.clone()),
                name,
                phone: text("telephone1"),
                vat_number: None,
            }
        }
        _ => ImportedData::Product {
            sku: text("productnumber")
                .ok_or_else(|| format!("product {id} has no productnumber"))?,
            name: text("name").unwrap_or_default(),
            description: text("description"),
            price: row
                .get("price")
                .and_then(json_to_decimal)
                .unwrap_or_default(),
            currency: None,
            active: row.get("statecode").and_then(Value::as_i64).unwrap_or(0) == 0,
        },
    };
    Ok(ImportedRecord {
        external_id: id,
        updated_at,
        deleted: false,
        data: Some(data),
        raw: row.clone(),
    })
}

#[derive(Debug, Default)]
struct Token {
    access_token: Option<String>,
    expires_at: Option<DateTime<Utc>>,
}

pub struct DynamicsConnector {
    settings: DynamicsSettings,
    client_id: String,
    client_secret: String,
    /// The current access token; renewed under this lock so concurrent requests of one run
    /// ask for one token, not one each.
    token: Mutex<Token>,
    http: HttpRuntime,
    capabilities: Capabilities,
}

impl std::fmt::Debug for DynamicsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamicsConnector")
            .field("environment_url", &self.settings.environment_url.as_str())
            .finish_non_exhaustive()
    }
}

fn header(name: &'static str, value: &'static str) -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static(name),
        HeaderValue::from_static(value),
    )
}

impl DynamicsConnector {
    pub fn new(
        settings: Option<&Value>,
        credentials: Option<&Credentials>,
        context: &ConnectorContext,
    ) -> Result<Self, ConnectorError> {
        let settings = DynamicsSettings::parse(settings, context)?;
        let credentials = credentials.ok_or_else(|| ConnectorError::Auth {
            message: "dynamics_365 credentials are missing: set client_id and client_secret".into(),
        })?;
        let field = |name: &str| {
            credentials
                .get_str(name)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| ConnectorError::Auth {
                    message: format!("dynamics_365 credentials need `{name}`"),
                })
        };
        let client_id = field("client_id")?;
        let client_secret = field("client_secret")?;
        let options = HttpOptions {
            request_timeout: settings.timeout,
            ..HttpOptions::default()
        };
        let mut http = HttpRuntime::new(context, options, Redactor::new([client_secret.clone()]))?;
        if let Some(gate) = &context.rate_gate {
            // One application user per environment: the environment is the account.
            let key = RateKey {
                connector: IntegrationType::Dynamics365,
                account: settings
                    .environment_url
                    .as_str()
                    .trim_end_matches('/')
                    .to_owned(),
            };
            http = http.with_fleet_gate(gate.clone(), key, settings.limits);
        }
        Ok(Self {
            capabilities: Capabilities {
                export: vec![
                    Entity::Customer,
                    Entity::Product,
                    Entity::Order,
                    Entity::Invoice,
                ],
                import: vec![Entity::Customer, Entity::Product],
                // A worker chunk fills one `$batch` of customers or products.
                export_batch_size: settings.batch_size,
                idempotency: Idempotency::LookupByReference,
            },
            settings,
            client_id,
            client_secret,
            token: Mutex::new(Token::default()),
            http,
        })
    }

    /// A valid access token, asking Entra ID for a new one when it nears expiry or `renew`.
    async fn access_token(&self, renew: bool) -> Result<String, ConnectorError> {
        let mut token = self.token.lock().await;
        if !renew
            && let (Some(access), Some(expires_at)) = (&token.access_token, token.expires_at)
            && expires_at > Utc::now() + chrono::Duration::seconds(60)
        {
            return Ok(access.clone());
        }
        let call = HttpCall {
            method: Method::POST,
            url: self.settings.token_url.clone(),
            headers: Vec::new(),
            body: None,
            raw: None,
            form: Some(vec![
                ("grant_type".into(), "client_credentials".into()),
                ("client_id".into(), self.client_id.clone()),
                ("client_secret".into(), self.client_secret.clone()),
                ("scope".into(), self.settings.scope()),
            ]),
            // Asking for a token twice is harmless.
            idempotent: true,
            conflict_means_in_flight: false,
        };
        let reply = match self.http.send(&call).await {
            Ok(r) => r,
            Err(ConnectorError::Rejected { message, .. } | ConnectorError::Auth { message }) => {
                return Err(ConnectorError::Auth {
                    message: format!(
                        "Entra ID refused the client credentials ({message}); check client_id, client_secret, tenant_id and that the app is an application user of this environment"
                    ),
                });
            }
            Err(e) => return Err(e),
        };
        let body = reply.json("POST token")?;
        let access = body
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ConnectorError::transient("the Entra ID token answer has no access_token")
            })?
            .to_owned();
        let expires_in = body
            .get("expires_in")
            .and_then(|v| {
                v.as_i64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            })
            .unwrap_or(3599);
        token.access_token = Some(access.clone());
        token.expires_at = Some(Utc::now() + chrono::Duration::seconds(expires_in));
        Ok(access)
    }

    /// A Web API call with the bearer token; a `401` gets a new token and one more try.
    async fn api(
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
    async fn api_call(
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
            let token = self.access_token(renew).await?;
            let mut bearer = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                ConnectorError::transient("Entra ID returned an access token that cannot be sent")
            })?;
            bearer.set_sensitive(true);
            let mut all = vec![
                (AUTHORIZATION, bearer),
                header("odata-version", "4.0"),
                header("odata-maxversion", "4.0"),
            ];
            all.extend(headers.iter().cloned());
            let call = HttpCall {
                method: method.clone(),
                url: url.clone(),
                headers: all,
                body: body.clone(),
                raw: raw.clone(),
                form: None,
                idempotent,
                conflict_means_in_flight: false,
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

    /// Sends one record: an alternate-key upsert for a create, a PATCH by id for an update.
    async fn write(&self, table: Table, op: ExportOp) -> ExportResult {
        let op = &op;
        let start = Instant::now();
        let action = if op.external_id.is_some() {
            ExportAction::Update
        } else {
            ExportAction::Create
        };
        let refused = |e: ConnectorError| ExportResult {
            internal_id: op.internal_id.clone(),
            action,
            outcome: Err(e),
            response: None,
            duration_ms: elapsed_ms(start),
        };
        let mut body = match resolve_references(op) {
            Ok(b) => b,
            Err(e) => return refused(e),
        };
        // An order's lines go to their own table once the order exists.
        let lines = table
            .lines
            .and_then(|t| body.as_object_mut().and_then(|m| m.remove(t.field)));
        let (action, path, headers) = match &op.external_id {
            Some(id) => (
                ExportAction::Update,
                format!("{}({id})", table.set),
                // Never re-create a row someone deleted in Dynamics: refuse instead.
                vec![header("if-match", "*")],
            ),
            None => {
                let Some(key) = body.get(table.key).and_then(Value::as_str) else {
                    return refused(ConnectorError::rejected(
                        format!("the record has no {} to upsert by", table.key),
                        None,
                    ));
                };
                (
                    ExportAction::Create,
                    format!("{}{}", table.set, key_segment(table.key, key)),
                    Vec::new(),
                )
            }
        };
        // PATCH is idempotent here: an upsert or an update repeated after a lost answer
        // leaves the same single row.
        let url = self.settings.api_url(&path);
        let outcome = self
            .api(Method::PATCH, url, &headers, Some(body.clone()), true)
            .await;
        let (outcome, response) = match outcome {
            Ok(reply) => {
                let id = reply
                    .headers
                    .get("odata-entityid")
                    .and_then(|v| v.to_str().ok())
                    .and_then(entity_id)
                    .or_else(|| {
                        op.external_id
                            .as_deref()
                            .and_then(|i| Uuid::parse_str(i).ok())
                    });
                // The order exists now; its lines follow. Should they fail, the record fails
                // and its retry upserts the same order and reconciles the lines.
                let lines_synced = match (id, lines, table.lines) {
                    (Some(id), Some(Value::Array(lines)), Some(t)) => {
                        self.sync_lines(table, t, id, &lines).await
                    }
                    _ => Ok(()),
                };
                match (id, lines_synced) {
                    (Some(_), Err(e)) => (Err(e), None),
                    (Some(id), Ok(())) => (
                        Ok(Exported {
                            external_id: id.to_string(),
                            replayed: false,
                            metadata: None,
                        }),
                        Some(json!({"status": reply.status, "id": id.to_string()})),
                    ),
                    (None, _) => (
                        Err(ConnectorError::transient(format!(
                            "Dataverse answered {} without an OData-EntityId header",
                            reply.status
                        ))),
                        None,
                    ),
                }
            }
            Err(ConnectorError::Rejected {
                message,
                status: Some(404),
            }) if action == ExportAction::Update => (
                Err(ConnectorError::rejected(
                    format!(
                        "{message} (the {} row was deleted in Dynamics 365; remove the mapping to create it again)",
                        table.set
                    ),
                    Some(404),
                )),
                None,
            ),
            Err(e) => (Err(e), None),
        };
        ExportResult {
            internal_id: op.internal_id.clone(),
            action,
            outcome,
            response,
            duration_ms: elapsed_ms(start),
        }
    }
}

/// One request of a `$batch`.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchRequest {
    pub method: &'static str,
    /// Absolute, percent-encoded.
    pub url: String,
    pub headers: Vec<(&'static str, &'static str)>,
    pub body: Value,
}

/// A `multipart/mixed` `$batch` body: one `application/http` part per request, no change set
/// (each request stands alone, so one failure does not undo the others).
pub fn batch_body(boundary: &str, requests: &[&BatchRequest]) -> Vec<u8> {
    let mut out = String::new();
    for r in requests {
        out.push_str(&format!(
            "--{boundary}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n{} {} HTTP/1.1\r\nContent-Type: application/json; charset=utf-8\r\n",
            r.method, r.url
        ));
        for (name, value) in &r.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str(&format!("\r\n{}\r\n", r.body));
    }
    out.push_str(&format!("--{boundary}--\r\n"));
    out.into_bytes()
}

/// The answers of a `$batch` response, one per part, in order.
pub fn parse_batch_response(content_type: &str, body: &[u8]) -> Result<Vec<HttpReply>, String> {
    let boundary = content_type
        .split(';')
        .skip(1)
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"').to_owned())
        .filter(|b| !b.is_empty())
        .ok_or_else(|| format!("the content type `{content_type}` has no boundary"))?;
    let text = String::from_utf8_lossy(body);
    let (delimiter, close) = (format!("--{boundary}"), format!("--{boundary}--"));
    let mut parts: Vec<Vec<&str>> = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    let mut closed = false;
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim_end() == close {
            parts.extend(current.take());
            closed = true;
            break;
        } else if line.trim_end() == delimiter {
            parts.extend(current.take());
            current = Some(Vec::new());
        } else if let Some(part) = current.as_mut() {
            part.push(line);
        }
    }
    if !closed {
        return Err("the body has no closing boundary".into());
    }
    parts.iter().map(|lines| batch_part(lines)).collect()
}

fn batch_part(lines: &[&str]) -> Result<HttpReply, String> {
    let blank = lines
        .iter()
        .position(|l| l.is_empty())
        .ok_or("a part has no blank line after its headers")?;
    let mime = &lines[..blank];
    if !mime.iter().any(|l| {
        l.split_once(':').is_some_and(|(n, v)| {
            n.trim().eq_ignore_ascii_case("content-type")
                && v.trim()
                    .to_ascii_lowercase()
                    .starts_with("application/http")
        })
    }) {
        return Err(format!("a part is not application/http: {mime:?}"));
    }
    let rest = &lines[blank + 1..];
    let status_line = rest.first().ok_or("a part has no status line")?;
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line `{status_line}`"))?;
    let rest = &rest[1..];
    let end = rest.iter().position(|l| l.is_empty()).unwrap_or(rest.len());
    let mut headers = reqwest::header::HeaderMap::new();
    for line in &rest[..end] {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("bad header line `{line}`"))?;
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value.trim()),
        ) {
            headers.append(n, v);
        }
    }
    let body = rest.get(end + 1..).unwrap_or_default().join("\r\n");
    Ok(HttpReply {
        status,
        headers,
        body: body.trim_end().as_bytes().to_vec(),
    })
}

impl DynamicsConnector {
    /// The `$batch` request for one record (a PATCH upsert by key, or a PATCH by id), or why
    /// it cannot be sent.
    fn batch_request(&self, table: Table, op: &ExportOp) -> Result<BatchRequest, ConnectorError> {
        let body = resolve_references(op)?;
        let (path, headers) = match &op.external_id {
            Some(id) => (format!("{}({id})", table.set), vec![("If-Match", "*")]),
            None => {
                let key = body.get(table.key).and_then(Value::as_str).ok_or_else(|| {
                    ConnectorError::rejected(
                        format!("the record has no {} to upsert by", table.key),
                        None,
                    )
                })?;
                (
                    format!("{}{}", table.set, key_segment(table.key, key)),
                    Vec::new(),
                )
            }
        };
        Ok(BatchRequest {
            method: "PATCH",
            url: self.settings.api_url(&path).to_string(),
            headers,
            body,
        })
    }

    /// Sends one `$batch`; the answers come back in the requests' order.
    async fn send_batch(
        &self,
        requests: &[&BatchRequest],
    ) -> Result<Vec<HttpReply>, ConnectorError> {
        let boundary = format!("batch_{}", Uuid::new_v4());
        let raw = RawBody {
            content_type: format!("multipart/mixed; boundary={boundary}"),
            bytes: batch_body(&boundary, requests),
        };
        let url = self.settings.api_url("$batch");
        // Every request in it is a PATCH upsert or update: sending it again is safe.
        let reply = self
            .api_call(
                Method::POST,
                url,
                &[header("prefer", "odata.continue-on-error")],
                None,
                Some(raw),
                true,
            )
            .await?;
        let content_type = reply
            .headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        parse_batch_response(content_type, &reply.body).map_err(|e| {
            ConnectorError::transient(format!(
                "POST $batch: the multipart answer could not be read ({e}): {}",
                crate::http::snippet(&reply.body)
            ))
        })
    }

    /// Customers and products: `$batch` requests of up to `batch_size`, each record's
    /// outcome read from its own part.
    async fn export_batched(&self, table: Table, ops: Vec<ExportOp>) -> Vec<ExportResult> {
        let start = Instant::now();
        let action_of = |op: &ExportOp| {
            if op.external_id.is_some() {
                ExportAction::Update
            } else {
                ExportAction::Create
            }
        };
        let mut outcomes: Vec<Option<Result<HttpReply, ConnectorError>>> = Vec::new();
        let mut pending: Vec<(usize, BatchRequest)> = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            match self.batch_request(table, op) {
                Ok(r) => {
                    outcomes.push(None);
                    pending.push((i, r));
                }
                Err(e) => outcomes.push(Some(Err(e))),
            }
        }
        for chunk in pending.chunks(self.settings.batch_size) {
            let requests: Vec<&BatchRequest> = chunk.iter().map(|(_, r)| r).collect();
            let replies = self.send_batch(&requests).await;
            for (k, (i, _)) in chunk.iter().enumerate() {
                let reply = match &replies {
                    Ok(replies) => replies.get(k).cloned().ok_or_else(|| {
                        ConnectorError::transient(
                            "POST $batch: Dataverse's answer has no part for this record",
                        )
                    }),
                    Err(e) => Err(e.clone()),
                };
                if let Some(slot) = outcomes.get_mut(*i) {
                    *slot = Some(reply);
                }
            }
        }
        ops.iter()
            .zip(outcomes)
            .map(|(op, reply)| {
                let action = action_of(op);
                let reply = reply
                    .unwrap_or_else(|| Err(ConnectorError::transient("the record was not sent")));
                let (outcome, response) = self.batched_outcome(table, op, action, reply);
                ExportResult {
                    internal_id: op.internal_id.clone(),
                    action,
                    outcome,
                    response,
                    duration_ms: elapsed_ms(start),
                }
            })
            .collect()
    }

    /// A record's outcome from its part of a `$batch` answer, classified as a single request's
    /// answer would be.
    fn batched_outcome(
        &self,
        table: Table,
        op: &ExportOp,
        action: ExportAction,
        reply: Result<HttpReply, ConnectorError>,
    ) -> (Result<Exported, ConnectorError>, Option<Value>) {
        let what = format!("PATCH {} (in $batch)", table.set);
        let reply = reply.and_then(|r| match classify(&r, &what, false) {
            None => Ok(r),
            Some(e) => Err(self.http.redactor().error(e)),
        });
        match reply {
            Ok(reply) => {
                let id = reply
                    .headers
                    .get("odata-entityid")
                    .and_then(|v| v.to_str().ok())
                    .and_then(entity_id)
                    .or_else(|| {
                        op.external_id
                            .as_deref()
                            .and_then(|i| Uuid::parse_str(i).ok())
                    });
                match id {
                    Some(id) => (
                        Ok(Exported {
                            external_id: id.to_string(),
                            replayed: false,
                            metadata: None,
                        }),
                        Some(json!({"status": reply.status, "id": id.to_string()})),
                    ),
                    None => (
                        Err(ConnectorError::transient(format!(
                            "Dataverse answered {} without an OData-EntityId header",
                            reply.status
                        ))),
                        None,
                    ),
                }
            }
            Err(ConnectorError::Rejected {
                message,
                status: Some(404),
            }) if action == ExportAction::Update => (
                Err(ConnectorError::rejected(
                    format!(
                        "{message} (the {} row was deleted in Dynamics 365; remove the mapping to create it again)",
                        table.set
                    ),
                    Some(404),
                )),
                None,
            ),
            Err(e) => (Err(e), None),
        }
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

#[async_trait]
impl Connector for DynamicsConnector {
    fn integration_type(&self) -> IntegrationType {
        IntegrationType::Dynamics365
    }

    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    async fn test_connection(&self) -> Result<ConnectionTest, ConnectorError> {
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

    fn map_record(&self, record: &PlatformRecord) -> Result<Value, ConnectorError> {
        map_record(&self.settings, record)
    }

    fn references(&self, record: &PlatformRecord) -> Vec<Reference> {
        let PlatformRecord::Order(o) = record else {
            return match record {
                PlatformRecord::Invoice(i) => i
                    .customer_id
                    .map(|c| (MappingEntityType::Customer, c.to_string()))
                    .into_iter()
                    .collect(),
                _ => Vec::new(),
            };
        };
        let mut out: Vec<Reference> = o
            .customer_id
            .map(|c| (MappingEntityType::Customer, c.to_string()))
            .into_iter()
            .collect();
        for product in o.items.iter().filter_map(|l| l.product_id) {
            let reference = (MappingEntityType::Product, product.to_string());
            if !out.contains(&reference) {
                out.push(reference);
            }
        }
        out
    }

    fn redact(&self, value: &Value) -> Value {
        self.http.redactor().json(value)
    }

    async fn export(&self, entity: Entity, ops: Vec<ExportOp>) -> Vec<ExportResult> {
        let Some(table) = table(entity) else {
            return ops
                .iter()
                .map(|op| ExportResult {
                    internal_id: op.internal_id.clone(),
                    action: if op.external_id.is_some() {
                        ExportAction::Update
                    } else {
                        ExportAction::Create
                    },
                    outcome: Err(ConnectorError::fatal(format!(
                        "the dynamics_365 connector does not export {entity} yet"
                    ))),
                    response: None,
                    duration_ms: 0,
                })
                .collect();
        };
        if table.lines.is_none() {
            return self.export_batched(table, ops).await;
        }
        crate::in_order_concurrently(
            ops.into_iter().map(|op| self.write(table, op)),
            EXPORT_PARALLELISM,
        )
        .await
    }

    async fn import_page(
        &self,
        entity: Entity,
        cursor: &ImportCursor,
    ) -> Result<ImportPage, ConnectorError> {
        let Some(def) =
            table(entity).filter(|_| matches!(entity, Entity::Customer | Entity::Product))
        else {
            return Err(ConnectorError::fatal(format!(
                "the dynamics_365 connector does not import {entity}"
            )));
        };
        let url = match cursor.page.as_deref() {
            // A nextLink must lead back to this environment's Web API, nowhere else.
            Some(next) => {
                let root = self.settings.api_url("");
                let url = Url::parse(next).map_err(|e| {
                    ConnectorError::fatal(format!("the stored nextLink is not a URL: {e}"))
                })?;
                if url.origin() != root.origin() || !url.path().starts_with(root.path()) {
                    return Err(ConnectorError::fatal(format!(
                        "the stored nextLink {} is not under {}",
                        crate::urls::shown(&url),
                        crate::urls::shown(&root)
                    )));
                }
                url
            }
            None => {
                let select = match entity {
                    Entity::Customer => {
                        "accountid,name,accountnumber,emailaddress1,telephone1,modifiedon"
                    }
                    _ => "productid,name,productnumber,description,price,statecode,modifiedon",
                };
                let mut url = self.settings.api_url(def.set);
                {
                    let mut q = url.query_pairs_mut();
                    q.append_pair("$select", select);
                    if let Some(since) = cursor.updated_since {
                        q.append_pair(
                            "$filter",
                            &format!("modifiedon ge {}", since.format("%Y-%m-%dT%H:%M:%SZ")),
                        );
                    }
                    q.append_pair("$orderby", &format!("modifiedon asc,{} asc", def.pk));
                }
                url
            }
        };
        let prefer =
            HeaderValue::from_str(&format!("odata.maxpagesize={}", self.settings.page_size))
                .map_err(|_| ConnectorError::fatal("invalid page size"))?;
        let reply = self
            .api(
                Method::GET,
                url,
                &[(HeaderName::from_static("prefer"), prefer)],
                None,
                true,
            )
            .await?;
        let body = reply.json(&format!("GET {}", def.set))?;
        let rows = body
            .get("value")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut records = Vec::with_capacity(rows.len());
        let mut rejected = Vec::new();
        for row in &rows {
            match parse_row(entity, row) {
                Ok(r) => records.push(r),
                Err(error) => rejected.push(RejectedItem {
                    external_id: row.get(def.pk).and_then(Value::as_str).map(str::to_owned),
                    error,
                    raw: row.clone(),
                }),
            }
        }
        Ok(ImportPage {
            records,
            rejected,
            next_page: body
                .get("@odata.nextLink")
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use passerelle_core::platform::{
        CustomerRecord, InvoiceRecord, OrderLine, OrderRecord, ProductRecord,
    };
    use rust_decimal::Decimal;

    fn settings(extra: Value) -> Result<DynamicsSettings, ConnectorError> {
        let mut s = json!({
            "environment_url": "https://contoso.crm4.dynamics.com/",
            "tenant_id": "contoso.onmicrosoft.com",
        });
        if let (Some(s), Some(e)) = (s.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                s.insert(k.clone(), v.clone());
            }
        }
        DynamicsSettings::parse(Some(&s), &ConnectorContext::default())
    }

    fn customer() -> CustomerRecord {
        CustomerRecord {
            id: 42,
            email: "ann@buyer.example".into(),
            name: "Ann Buyer".into(),
            company_name: Some("Buyer SARL".into()),
            phone: Some("+33 1 23".into()),
            vat_number: Some("FR123".into()),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn settings_default_the_token_url_from_the_tenant_and_scope_from_the_environment() {
        let s = settings(json!({})).unwrap();
        assert_eq!(
            s.token_url.as_str(),
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert_eq!(s.scope(), "https://contoso.crm4.dynamics.com/.default");
        assert_eq!(
            s.api_url("WhoAmI").as_str(),
            "https://contoso.crm4.dynamics.com/api/data/v9.2/WhoAmI"
        );
        assert_eq!(s.limits, published::DATAVERSE);
        let custom = settings(json!({"rate_limit": {"requests": 100, "per_secs": 60}})).unwrap();
        assert_eq!(
            (custom.limits.requests, custom.limits.concurrency),
            (100, Some(52))
        );
    }

    #[test]
    fn request_urls_join_the_base_with_or_without_a_path_or_a_trailing_slash() {
        for (environment, root) in [
            (
                "https://contoso.crm4.dynamics.com",
                "https://contoso.crm4.dynamics.com",
            ),
            (
                "https://contoso.crm4.dynamics.com/",
                "https://contoso.crm4.dynamics.com",
            ),
            ("https://gw.example.com/dv", "https://gw.example.com/dv"),
            ("https://gw.example.com/dv/", "https://gw.example.com/dv"),
        ] {
            let s = settings(json!({ "environment_url": environment })).unwrap();
            let api = format!("{root}/api/data/v9.2");
            assert_eq!(s.api_url("").as_str(), format!("{api}/"), "{environment}");
            assert_eq!(s.api_url("WhoAmI").as_str(), format!("{api}/WhoAmI"));
            assert_eq!(s.api_url("$batch").as_str(), format!("{api}/$batch"));
            assert_eq!(
                s.api_url(&format!("accounts{}", key_segment("accountnumber", "C-1")))
                    .as_str(),
                format!("{api}/accounts(accountnumber='C-1')")
            );
        }
    }

    #[test]
    fn settings_refuse_secrets_typos_and_missing_pieces() {
        let err = |v: Value| match DynamicsSettings::parse(Some(&v), &ConnectorContext::default()) {
            Err(e) => e.to_string(),
            Ok(_) => String::new(),
        };
        assert!(err(json!({"environment_url": "https://x.crm.dynamics.com", "tenant_id": "t", "client_secret": "s"})).contains("looks like a secret"));
        assert!(
            err(json!({"environment_url": "https://x.crm.dynamics.com", "tenant": "t"}))
                .contains("unknown field")
        );
        assert!(err(json!({"tenant_id": "t"})).contains("environment_url"));
        assert!(
            err(json!({"environment_url": "https://x.crm.dynamics.com"})).contains("tenant_id")
        );
        assert!(err(json!({"environment_url": "https://x.crm.dynamics.com/api/data/v9.2", "tenant_id": "t"})).contains("without /api/data/v9.2"));
        assert!(
            err(json!({"environment_url": "http://127.0.0.1:8080", "tenant_id": "t"}))
                .contains("environment_url")
        );
        assert!(settings(json!({"default_uom_id": "nope"})).is_err());
    }

    #[test]
    fn a_customer_becomes_an_account_keyed_by_our_reference() {
        let s = settings(json!({})).unwrap();
        let account = map_record(&s, &PlatformRecord::Customer(customer())).unwrap();
        assert_eq!(
            account,
            json!({
                "name": "Buyer SARL",
                "accountnumber": "PAS-42",
                "emailaddress1": "ann@buyer.example",
                "telephone1": "+33 1 23",
                "description": "Contact: Ann Buyer\nVAT FR123",
            })
        );
        let mut plain = customer();
        plain.company_name = None;
        plain.vat_number = None;
        plain.phone = None;
        let account = map_record(&s, &PlatformRecord::Customer(plain)).unwrap();
        assert_eq!(account["name"], "Ann Buyer");
        assert_eq!(account["telephone1"], Value::Null);
        assert_eq!(account["description"], Value::Null);
    }

    #[test]
    fn a_product_binds_the_configured_units_or_is_rejected_without_them() {
        let product = PlatformRecord::Product(ProductRecord {
            id: 7,
            sku: "SKU-7".into(),
            name: "Oak pallet".into(),
            description: Some("Wholesale unit".into()),
            price: Decimal::new(12_3450, 4),
            currency: "EUR".into(),
            active: true,
            updated_at: Utc::now(),
        });
        let missing = map_record(&settings(json!({})).unwrap(), &product).unwrap_err();
        assert!(matches!(missing, ConnectorError::Rejected { .. }));
        let (g, u) = (Uuid::new_v4(), Uuid::new_v4());
        let s = settings(
            json!({"default_uom_schedule_id": g.to_string(), "default_uom_id": u.to_string()}),
        )
        .unwrap();
        assert_eq!(
            map_record(&s, &product).unwrap(),
            json!({
                "name": "Oak pallet",
                "productnumber": "SKU-7",
                "description": "Wholesale unit",
                "price": 12.345,
                "defaultuomscheduleid@odata.bind": format!("/uomschedules({g})"),
                "defaultuomid@odata.bind": format!("/uoms({u})"),
            })
        );
    }

    fn order() -> OrderRecord {
        OrderRecord {
            id: 1,
            order_number: "O-1".into(),
            customer_id: Some(42),
            customer_email: None,
            status: "confirmed".into(),
            currency: "EUR".into(),
            total_amount: Decimal::new(25, 0),
            items: vec![
                OrderLine {
                    product_id: Some(7),
                    sku: Some("SKU-7".into()),
                    quantity: Decimal::new(2, 0),
                    unit_price: Decimal::new(1050, 2),
                },
                OrderLine {
                    product_id: Some(8),
                    sku: Some("SKU-8".into()),
                    quantity: Decimal::ONE,
                    unit_price: Decimal::new(4, 0),
                },
            ],
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn an_order_becomes_a_sales_order_with_lines_and_references_resolved() {
        let (pl, u) = (Uuid::new_v4(), Uuid::new_v4());
        let s = settings(json!({"price_list_id": pl.to_string(), "default_uom_id": u.to_string()}))
            .unwrap();
        let record = PlatformRecord::Order(order());
        let payload = map_record(&s, &record).unwrap();
        assert_eq!(payload["ordernumber"], "O-1");
        assert_eq!(
            payload["pricelevelid@odata.bind"],
            format!("/pricelevels({pl})")
        );
        assert_eq!(payload["order_details"][0]["priceperunit"], json!(10.5));
        assert_eq!(payload["order_details"][1]["lineitemnumber"], json!(2));
        assert_eq!(
            payload["order_details"][1]["uomid@odata.bind"],
            format!("/uoms({u})")
        );
        let connector = DynamicsConnector {
            settings: s.clone(),
            client_id: "c".into(),
            client_secret: "s".into(),
            token: Mutex::new(Token::default()),
            http: HttpRuntime::new(
                &ConnectorContext::default(),
                HttpOptions::default(),
                Redactor::new(Vec::<String>::new()),
            )
            .unwrap(),
            capabilities: Capabilities {
                export: Vec::new(),
                import: Vec::new(),
                export_batch_size: 1,
                idempotency: Idempotency::LookupByReference,
            },
        };
        let references = connector.references(&record);
        assert_eq!(
            references,
            vec![
                (MappingEntityType::Customer, "42".to_owned()),
                (MappingEntityType::Product, "7".to_owned()),
                (MappingEntityType::Product, "8".to_owned()),
            ]
        );
        let (account, p7) = (Uuid::new_v4(), Uuid::new_v4());
        let mut op = ExportOp {
            internal_id: "1".into(),
            external_id: None,
            payload,
            idempotency_key: "k".into(),
            retried_create: false,
            intent_recorded_at: None,
            mapping_metadata: None,
            references: [
                (
                    (MappingEntityType::Customer, "42".to_owned()),
                    account.to_string(),
                ),
                ((MappingEntityType::Product, "7".to_owned()), p7.to_string()),
            ]
            .into_iter()
            .collect(),
        };
        // Product 8 is not at Dataverse yet: the order waits.
        assert!(matches!(
            resolve_references(&op),
            Err(ConnectorError::Rejected { .. })
        ));
        op.references.insert(
            (MappingEntityType::Product, "8".to_owned()),
            Uuid::new_v4().to_string(),
        );
        let resolved = resolve_references(&op).unwrap();
        assert_eq!(
            resolved["customerid_account@odata.bind"],
            format!("/accounts({account})")
        );
        assert_eq!(
            resolved["order_details"][0]["productid@odata.bind"],
            format!("/products({p7})")
        );
        // Without a price list the order is refused with the setting named.
        let e = map_record(&settings(json!({})).unwrap(), &record).unwrap_err();
        assert!(e.to_string().contains("price_list_id"));
    }

    #[test]
    fn an_invoice_becomes_an_invoice_with_one_write_in_line_for_its_total() {
        let invoice = PlatformRecord::Invoice(InvoiceRecord {
            id: 1,
            invoice_number: "I-1".into(),
            order_id: None,
            order_number: None,
            customer_id: Some(1),
            customer_email: None,
            status: "issued".into(),
            currency: "EUR".into(),
            total_amount: Decimal::ONE,
            issued_at: None,
            due_at: Some(Utc::now()),
            updated_at: Utc::now(),
        });
        let e = map_record(&settings(json!({})).unwrap(), &invoice).unwrap_err();
        assert!(e.to_string().contains("price_list_id"), "{e}");
        let pl = Uuid::new_v4();
        let s = settings(json!({"price_list_id": pl.to_string()})).unwrap();
        let payload = map_record(&s, &invoice).unwrap();
        assert_eq!(payload["invoicenumber"], "I-1");
        assert_eq!(
            payload["customerid_account@odata.bind"],
            "platform-customer:1"
        );
        assert_eq!(payload["duedate"].as_str().map(str::len), Some(10));
        assert_eq!(
            payload["invoice_details"],
            json!([{"lineitemnumber": 1, "isproductoverridden": true, "productdescription": "Invoice I-1",
                    "quantity": 1, "priceperunit": 1, "ispriceoverridden": true}])
        );
        let stock = PlatformRecord::Inventory(passerelle_core::platform::InventoryRecord {
            product_id: 1,
            sku: "S".into(),
            warehouse_code: "W".into(),
            quantity: Decimal::ONE,
            updated_at: Utc::now(),
        });
        assert!(matches!(
            map_record(&s, &stock),
            Err(ConnectorError::Fatal { .. })
        ));
    }

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

    #[test]
    fn rows_are_read_into_platform_fields() {
        let account = json!({"accountid": "0f8fad5b-d9cb-469f-a165-70867728950e", "name": "Buyer SARL",
            "emailaddress1": "ann@buyer.example", "telephone1": "+33", "modifiedon": "2026-01-02T03:04:05Z"});
        let r = parse_row(Entity::Customer, &account).unwrap();
        assert_eq!(
            r.updated_at.unwrap().to_rfc3339(),
            "2026-01-02T03:04:05+00:00"
        );
        assert!(
            matches!(r.data, Some(ImportedData::Customer { ref email, ref phone, .. }) if email == "ann@buyer.example" && phone.as_deref() == Some("+33"))
        );
        let no_email = json!({"accountid": "0f8fad5b-d9cb-469f-a165-70867728950e", "name": "X"});
        assert!(
            parse_row(Entity::Customer, &no_email)
                .unwrap_err()
                .contains("e-mail")
        );
        let product = json!({"productid": "0f8fad5b-d9cb-469f-a165-70867728950e", "name": "Widget",
            "productnumber": "X-1", "price": 9.5, "statecode": 1});
        let r = parse_row(Entity::Product, &product).unwrap();
        assert!(
            matches!(r.data, Some(ImportedData::Product { ref sku, price, active: false, .. }) if sku == "X-1" && price == Decimal::new(95, 1))
        );
    }

    #[test]
    fn batch_bodies_hold_one_application_http_part_per_request() {
        let upsert = BatchRequest {
            method: "PATCH",
            url: "https://o.crm.dynamics.com/api/data/v9.2/accounts(accountnumber='PAS-1')".into(),
            headers: Vec::new(),
            body: json!({"name": "One"}),
        };
        let update = BatchRequest {
            method: "PATCH",
            url: "https://o.crm.dynamics.com/api/data/v9.2/accounts(0b9a0b9a-0000-0000-0000-000000000001)".into(),
            headers: vec![("If-Match", "*")],
            body: json!({"name": "Two"}),
        };
        let body = String::from_utf8(batch_body("batch_x", &[&upsert, &update])).unwrap();
        assert_eq!(
            body,
            "--batch_x\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n\
             PATCH https://o.crm.dynamics.com/api/data/v9.2/accounts(accountnumber='PAS-1') HTTP/1.1\r\n\
             Content-Type: application/json; charset=utf-8\r\n\r\n{\"name\":\"One\"}\r\n\
             --batch_x\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n\
             PATCH https://o.crm.dynamics.com/api/data/v9.2/accounts(0b9a0b9a-0000-0000-0000-000000000001) HTTP/1.1\r\n\
             Content-Type: application/json; charset=utf-8\r\nIf-Match: *\r\n\r\n{\"name\":\"Two\"}\r\n\
             --batch_x--\r\n"
        );
    }

    #[test]
    fn batch_answers_parse_into_one_reply_per_part() {
        let id = "5f1b7f9c-0000-4000-8000-000000000001";
        let body = format!(
            "--batchresponse_1\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n\
             HTTP/1.1 204 No Content\r\nOData-Version: 4.0\r\nOData-EntityId: https://o.crm.dynamics.com/api/data/v9.2/accounts({id})\r\n\r\n\r\n\
             --batchresponse_1\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n\
             HTTP/1.1 400 Bad Request\r\nContent-Type: application/json; odata.metadata=minimal\r\n\r\n\
             {{\"error\":{{\"code\":\"0x80048d19\",\"message\":\"bad column\"}}}}\r\n\
             --batchresponse_1--\r\n"
        );
        let replies =
            parse_batch_response("multipart/mixed; boundary=batchresponse_1", body.as_bytes())
                .unwrap();
        assert_eq!(replies.len(), 2);
        assert_eq!(replies[0].status, 204);
        assert_eq!(
            replies[0]
                .headers
                .get("odata-entityid")
                .and_then(|v| v.to_str().ok())
                .and_then(entity_id),
            Some(Uuid::parse_str(id).unwrap())
        );
        assert!(replies[0].body.is_empty());
        assert_eq!(replies[1].status, 400);
        assert_eq!(
            replies[1].json("x").unwrap()["error"]["message"],
            "bad column"
        );
        // A 400 part is a rejection of that record, a 503 part a transient failure.
        assert!(matches!(
            classify(&replies[1], "x", false),
            Some(ConnectorError::Rejected {
                status: Some(400),
                ..
            })
        ));
        assert!(parse_batch_response("multipart/mixed", body.as_bytes()).is_err());
        let cut = body.replace("--batchresponse_1--", "");
        assert!(
            parse_batch_response("multipart/mixed; boundary=batchresponse_1", cut.as_bytes())
                .is_err()
        );
    }

    #[test]
    fn batch_size_defaults_to_100_and_stops_at_1000() {
        assert_eq!(settings(json!({})).unwrap().batch_size, 100);
        assert_eq!(
            settings(json!({"batch_size": 1000})).unwrap().batch_size,
            1000
        );
        assert!(settings(json!({"batch_size": 1001})).is_err());
        assert!(settings(json!({"batch_size": 0})).is_err());
    }
}
