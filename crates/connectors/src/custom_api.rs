//! The custom REST API connector (`custom_api`): the contract in
//! `docs/connectors/custom_api.md`, which the seed's "Custom API" section started.

use crate::http::{HttpCall, HttpOptions, HttpRuntime, Redactor};
use crate::rate::{RateKey, RateLimits};
use crate::{
    Capabilities, ConnectionTest, Connector, ConnectorContext, ConnectorError, ExportAction,
    ExportOp, ExportResult, Exported, Idempotency, ImportCursor, ImportPage, RejectedItem,
    elapsed_ms,
};
use async_trait::async_trait;
use passerelle_core::platform::{
    ImportedData, ImportedRecord, PlatformRecord, decimal_to_json, json_to_decimal,
};
use passerelle_core::vault::Credentials;
use passerelle_core::{Entity, IntegrationType};
use reqwest::Method;
use reqwest::header::{HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use url::Url;

/// `settings` of a custom API integration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    api_url: Option<String>,
    #[serde(default)]
    endpoints: BTreeMap<String, String>,
    auth_header: Option<String>,
    timeout_secs: Option<u64>,
    concurrency: Option<usize>,
    requests_per_second: Option<u32>,
    page_size: Option<u32>,
}

/// Parsed and checked settings.
#[derive(Debug, Clone)]
pub struct CustomApiSettings {
    pub api_url: Url,
    pub endpoints: BTreeMap<Entity, String>,
    pub auth_header: HeaderName,
    pub timeout: Duration,
    pub concurrency: usize,
    pub requests_per_second: Option<u32>,
    pub page_size: u32,
}

fn endpoint_key(entity: Entity) -> &'static str {
    match entity {
        Entity::Product => "products",
        Entity::Customer => "customers",
        Entity::Order => "orders",
        Entity::Invoice => "invoices",
        Entity::Inventory => "inventory",
    }
}

impl CustomApiSettings {
    pub fn parse(
        settings: Option<&Value>,
        context: &ConnectorContext,
    ) -> Result<Self, ConnectorError> {
        let settings = settings.ok_or_else(|| {
            ConnectorError::fatal("custom_api settings are missing; `api_url` is required")
        })?;
        crate::settings::refuse_secret_settings(settings)?;
        let raw: RawSettings = serde_json::from_value(settings.clone())
            .map_err(|e| ConnectorError::fatal(format!("invalid custom_api settings: {e}")))?;
        let api_url = raw.api_url.ok_or_else(|| {
            ConnectorError::fatal("custom_api settings need `api_url` (the API's base URL)")
        })?;
        let mut api_url = context.url_policy.check(&api_url, "settings.api_url")?;
        // Endpoints are appended to the base path; one spelling (no trailing slash) keeps one
        // fleet-wide rate key per API.
        let trimmed = api_url.path().trim_end_matches('/').to_owned();
        api_url.set_path(&trimmed);
        let mut endpoints = BTreeMap::new();
        for entity in Entity::ALL {
            let key = endpoint_key(*entity);
            let path = raw
                .endpoints
                .get(key)
                .cloned()
                .unwrap_or_else(|| format!("/api/{key}"));
            if !path.starts_with('/') || path.contains("://") || path.contains("..") {
                return Err(ConnectorError::fatal(format!(
                    "settings.endpoints.{key} must be a path starting with `/`, got `{path}`"
                )));
            }
            endpoints.insert(*entity, path);
        }
        for key in raw.endpoints.keys() {
            if !Entity::ALL.iter().any(|e| endpoint_key(*e) == key) {
                return Err(ConnectorError::fatal(format!(
                    "settings.endpoints.{key} is not an entity; expected products, customers, orders, invoices or inventory"
                )));
            }
        }
        let auth_header_name = raw.auth_header.unwrap_or_else(|| "X-API-Key".into());
        let auth_header = HeaderName::from_bytes(auth_header_name.as_bytes()).map_err(|_| {
            ConnectorError::fatal(format!(
                "settings.auth_header `{auth_header_name}` is not a valid header name"
            ))
        })?;
        let concurrency = raw.concurrency.unwrap_or(8);
        if !(1..=64).contains(&concurrency) {
            return Err(ConnectorError::fatal(
                "settings.concurrency must be between 1 and 64",
            ));
        }
        let page_size = raw.page_size.unwrap_or(100);
        if !(1..=1000).contains(&page_size) {
            return Err(ConnectorError::fatal(
                "settings.page_size must be between 1 and 1000",
            ));
        }
        Ok(Self {
            api_url,
            endpoints,
            auth_header,
            timeout: Duration::from_secs(raw.timeout_secs.unwrap_or(30).clamp(1, 300)),
            concurrency,
            requests_per_second: raw.requests_per_second.filter(|r| *r > 0),
            page_size,
        })
    }

    /// The base URL with `path` (an endpoint, `/`-separated) and then `id` (one segment,
    /// whatever it holds) appended.
    fn url(&self, path: &str, id: Option<&str>) -> Url {
        crate::urls::join_segments(&crate::urls::join_path(&self.api_url, path), id)
    }
}

#[derive(Debug)]
pub struct CustomApiConnector {
    settings: CustomApiSettings,
    api_key: HeaderValue,
    http: HttpRuntime,
    capabilities: Capabilities,
}

impl CustomApiConnector {
    pub fn new(
        settings: Option<&Value>,
        credentials: Option<&Credentials>,
        context: &ConnectorContext,
    ) -> Result<Self, ConnectorError> {
        let settings = CustomApiSettings::parse(settings, context)?;
        let key = credentials
            .and_then(|c| c.get_str("api_key"))
            .filter(|k| !k.is_empty())
            .ok_or_else(|| ConnectorError::Auth {
                message: "custom_api credentials need `api_key`; set them with `passerelle integrations update <id> --credentials '{\"api_key\": \"...\"}'`".into(),
            })?;
        let mut api_key = HeaderValue::from_str(key).map_err(|_| ConnectorError::Auth {
            message:
                "credentials.api_key contains characters that cannot be sent in an HTTP header"
                    .into(),
        })?;
        api_key.set_sensitive(true);
        let mut http = HttpRuntime::new(
            context,
            HttpOptions {
                request_timeout: settings.timeout,
                client: "custom_api",
                requests_per_second: settings.requests_per_second,
                ..HttpOptions::default()
            },
            Redactor::new([key.to_owned()]),
        )?;
        // Our own cap, shared by the fleet: every integration on this API base URL counts
        // against it.
        if let (Some(rps), Some(gate)) = (settings.requests_per_second, &context.rate_gate) {
            let key = RateKey {
                connector: IntegrationType::CustomApi,
                account: settings.api_url.as_str().to_owned(),
            };
            http = http.with_fleet_gate(gate.clone(), key, RateLimits::per_second(rps));
        }
        let capabilities = Capabilities {
            export: Entity::ALL.to_vec(),
            import: vec![Entity::Product, Entity::Customer, Entity::Inventory],
            export_batch_size: settings.concurrency * 25,
            idempotency: Idempotency::Key,
        };
        Ok(Self {
            settings,
            api_key,
            http,
            capabilities,
        })
    }

    fn call(
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
        HttpCall {
            idempotent: method != Method::POST || idempotency_key.is_some(),
            conflict_means_in_flight: idempotency_key.is_some(),
            method,
            url,
            headers,
            body,
            raw: None,
            form: None,
        }
    }

    async fn export_one(&self, entity: Entity, mut op: ExportOp) -> ExportResult {
        let start = Instant::now();
        let payload = std::mem::take(&mut op.payload);
        let endpoint = self
            .settings
            .endpoints
            .get(&entity)
            .cloned()
            .unwrap_or_default();
        let (action, url, method) = match &op.external_id {
            Some(id) => (
                ExportAction::Update,
                self.settings.url(&endpoint, Some(id)),
                Method::PUT,
            ),
            None => (
                ExportAction::Create,
                self.settings.url(&endpoint, None),
                Method::POST,
            ),
        };
        let outcome = async {
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
                return Ok((
                    Exported {
                        external_id,
                        replayed: true,
                        metadata: None,
                    },
                    body,
                ));
            }
            let call = self.call(method, url, Some(payload), Some(&op.idempotency_key));
            let reply = self.http.send(&call).await?;
            let what = format!("{} {}", call.method, call.url.path());
            let body = reply.json(&what)?;
            let external_id = match (&op.external_id, body.get("id")) {
                (_, Some(Value::String(s))) if !s.is_empty() => s.clone(),
                (_, Some(Value::Number(n))) => n.to_string(),
                (Some(existing), _) => existing.clone(),
                (None, _) => {
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
                    external_id,
                    replayed,
                    metadata: None,
                },
                body,
            ))
        }
        .await;
        let (outcome, response) = match outcome {
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
        ExportResult {
            internal_id: op.internal_id,
            action,
            outcome,
            response,
            duration_ms: elapsed_ms(start),
        }
    }
}

/// How long the API keeps an idempotency key (the contract says 24 h; an hour of margin).
const IDEMPOTENCY_WINDOW: chrono::Duration = chrono::Duration::hours(23);

impl CustomApiConnector {
    /// Looks for the record whose `external_ref` is our id, among those changed since `since`
    /// (the contract has no search endpoint; the incremental listing is ordered and complete).
    async fn find_by_reference(
        &self,
        entity: Entity,
        internal_id: &str,
        since: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Option<(String, Value)>, ConnectorError> {
        let endpoint = self
            .settings
            .endpoints
            .get(&entity)
            .cloned()
            .unwrap_or_default();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = self.settings.url(&endpoint, None);
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
                if item.get("external_ref").and_then(|v| v.as_str()) == Some(internal_id) {
                    let id = match item.get("id") {
                        Some(Value::String(s)) => s.clone(),
                        Some(Value::Number(n)) => n.to_string(),
                        _ => continue,
                    };
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

/// Percent-encodes an id for use as one path segment.
fn opt_str(value: &Option<String>) -> Value {
    value
        .as_ref()
        .map_or(Value::Null, |s| Value::String(s.clone()))
}

/// The payload for a platform record (pure; see the contract's "Payloads").
pub fn map_record(record: &PlatformRecord) -> Result<Value, ConnectorError> {
    Ok(match record {
        PlatformRecord::Product(p) => json!({
            "external_ref": p.id.to_string(),
            "sku": p.sku,
            "name": p.name,
            "description": opt_str(&p.description),
            "price": decimal_to_json(p.price),
            "currency": p.currency.trim(),
            "active": p.active,
        }),
        PlatformRecord::Customer(c) => json!({
            "external_ref": c.id.to_string(),
            "email": c.email,
            "name": c.name,
            "company_name": opt_str(&c.company_name),
            "phone": opt_str(&c.phone),
            "vat_number": opt_str(&c.vat_number),
        }),
        PlatformRecord::Order(o) => {
            let email = o.customer_email.clone().ok_or_else(|| {
                ConnectorError::rejected(
                    format!("order {} has no customer email", o.order_number),
                    None,
                )
            })?;
            let mut items = Vec::with_capacity(o.items.len());
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
                items.push(json!({
                    "sku": sku,
                    "quantity": decimal_to_json(line.quantity),
                    "price": decimal_to_json(line.unit_price),
                }));
            }
            json!({
                "external_ref": o.id.to_string(),
                "order_number": o.order_number,
                "customer_email": email,
                "status": o.status,
                "currency": o.currency.trim(),
                "total": decimal_to_json(o.total_amount),
                "items": items,
            })
        }
        PlatformRecord::Invoice(inv) => {
            let email = inv.customer_email.clone().ok_or_else(|| {
                ConnectorError::rejected(
                    format!("invoice {} has no customer email", inv.invoice_number),
                    None,
                )
            })?;
            json!({
                "external_ref": inv.id.to_string(),
                "invoice_number": inv.invoice_number,
                "order_number": opt_str(&inv.order_number),
                "customer_email": email,
                "status": inv.status,
                "currency": inv.currency.trim(),
                "total": decimal_to_json(inv.total_amount),
                "issued_at": inv.issued_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                "due_at": inv.due_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            })
        }
        PlatformRecord::Inventory(s) => json!({
            "external_ref": format!("{}:{}", s.product_id, s.warehouse_code),
            "sku": s.sku,
            "warehouse_code": s.warehouse_code,
            "quantity": decimal_to_json(s.quantity),
        }),
    })
}

/// Reads one imported item into platform fields.
pub fn parse_item(entity: Entity, item: &Value) -> Result<ImportedRecord, String> {
    let external_id = match item.get("id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err("item without an `id`".into()),
    };
    let updated_at = item
        .get("updated_at")
        .and_then(|v| v.as_str())
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&chrono::Utc));
    let deleted = item
        .get("deleted")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let text = |field: &str| item.get(field).and_then(|v| v.as_str()).map(str::to_owned);
    let required = |field: &str| {
        text(field)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("item {external_id} has no `{field}`"))
    };
    let decimal = |field: &str| {
        item.get(field)
            .and_then(json_to_decimal)
            .ok_or_else(|| format!("item {external_id}: `{field}` is not a number"))
    };
    let data = if deleted {
        None
    } else {
        Some(match entity {
            Entity::Product => ImportedData::Product {
                sku: required("sku")?,
                name: required("name")?,
                description: text("description"),
                price: decimal("price")?,
                currency: text("currency"),
                active: item.get("active").and_then(|v| v.as_bool()).unwrap_or(true),
            },
            Entity::Customer => ImportedData::Customer {
                email: required("email")?,
                name: required("name")?,
                company_name: text("company_name"),
                phone: text("phone"),
                vat_number: text("vat_number"),
            },
            Entity::Inventory => ImportedData::Inventory {
                sku: required("sku")?,
                warehouse_code: required("warehouse_code")?,
                quantity: decimal("quantity")?,
            },
            other => return Err(format!("{other} import is not supported by custom_api")),
        })
    };
    Ok(ImportedRecord {
        external_id,
        updated_at,
        deleted,
        data,
        raw: item.clone(),
    })
}

#[async_trait]
impl Connector for CustomApiConnector {
    fn integration_type(&self) -> IntegrationType {
        IntegrationType::CustomApi
    }

    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    async fn test_connection(&self) -> Result<ConnectionTest, ConnectorError> {
        let start = Instant::now();
        let url = self.settings.url("/health", None);
        self.http
            .send(&self.call(Method::GET, url, None, None))
            .await
            .map_err(|e| self.http.redactor().error(e))?;
        Ok(ConnectionTest {
            message: format!(
                "{} answered /health",
                crate::urls::shown(&self.settings.api_url)
            ),
            response_time_ms: u64::from(elapsed_ms(start)),
        })
    }

    fn map_record(&self, record: &PlatformRecord) -> Result<Value, ConnectorError> {
        map_record(record)
    }

    fn redact(&self, value: &Value) -> Value {
        self.http.redactor().json(value)
    }

    async fn export(&self, entity: Entity, ops: Vec<ExportOp>) -> Vec<ExportResult> {
        // Sent concurrently, results in op order; the HTTP runtime paces and embargoes.
        crate::in_order_concurrently(
            ops.into_iter().map(|op| self.export_one(entity, op)),
            self.settings.concurrency,
        )
        .await
    }

    async fn import_page(
        &self,
        entity: Entity,
        cursor: &ImportCursor,
    ) -> Result<ImportPage, ConnectorError> {
        if !self.capabilities.import.contains(&entity) {
            return Err(ConnectorError::fatal(format!(
                "custom_api does not import {entity}"
            )));
        }
        let endpoint = self
            .settings
            .endpoints
            .get(&entity)
            .cloned()
            .unwrap_or_default();
        let mut url = self.settings.url(&endpoint, None);
        {
            let mut query = url.query_pairs_mut();
            if let Some(since) = cursor.updated_since {
                query.append_pair(
                    "updated_since",
                    &since.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                );
            }
            if let Some(page) = &cursor.page {
                query.append_pair("cursor", page);
            }
            query.append_pair("limit", &self.settings.page_size.to_string());
        }
        let redactor = self.http.redactor();
        let reply = self
            .http
            .send(&self.call(Method::GET, url, None, None))
            .await
            .map_err(|e| redactor.error(e))?;
        let what = format!("GET {endpoint}");
        let body = reply.json(&what).map_err(|e| redactor.error(e))?;
        let items = body
            .get("items")
            .and_then(|v| v.as_array())
            .ok_or_else(|| {
                ConnectorError::transient(format!("{what}: the body has no `items` array"))
            })?;
        let next_page = match body.get("next_cursor") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                return Err(ConnectorError::transient(format!(
                    "{what}: `next_cursor` is {other}, expected a string or null"
                )));
            }
        };
        let mut records = Vec::with_capacity(items.len());
        let mut rejected = Vec::new();
        for item in items {
            match parse_item(entity, item) {
                Ok(record) => records.push(record),
                Err(error) => rejected.push(RejectedItem {
                    external_id: item
                        .get("id")
                        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned)),
                    error: redactor.text(&error),
                    raw: redactor.json(item),
                }),
            }
        }
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
    use passerelle_core::platform::{OrderLine, OrderRecord};
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

    #[test]
    fn request_urls_join_the_base_with_or_without_a_path_or_a_trailing_slash() {
        for (api_url, orders, one) in [
            (
                "https://erp.example.com",
                "https://erp.example.com/api/orders",
                "https://erp.example.com/api/orders/A%2F1%20b",
            ),
            (
                "https://erp.example.com/",
                "https://erp.example.com/api/orders",
                "https://erp.example.com/api/orders/A%2F1%20b",
            ),
            (
                "https://erp.example.com/v1",
                "https://erp.example.com/v1/api/orders",
                "https://erp.example.com/v1/api/orders/A%2F1%20b",
            ),
            (
                "https://erp.example.com/v1/",
                "https://erp.example.com/v1/api/orders",
                "https://erp.example.com/v1/api/orders/A%2F1%20b",
            ),
        ] {
            let s = CustomApiSettings::parse(Some(&json!({ "api_url": api_url })), &ctx()).unwrap();
            let endpoint = &s.endpoints[&Entity::Order];
            assert_eq!(s.url(endpoint, None).as_str(), orders, "{api_url}");
            assert_eq!(s.url(endpoint, Some("A/1 b")).as_str(), one, "{api_url}");
            assert_eq!(
                s.url("/health", None).as_str(),
                orders.replace("/api/orders", "/health")
            );
        }
    }

    #[test]
    fn an_api_url_with_a_secret_in_its_query_is_refused_without_showing_it() {
        let err = CustomApiSettings::parse(
            Some(&json!({"api_url": "https://erp.example.com/v1?api_key=sk_live_777"})),
            &ctx(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("`api_key`"), "{err}");
        assert!(!err.to_string().contains("sk_live_777"), "{err}");
    }

    #[test]
    fn settings_default_the_seed_endpoints_and_refuse_secrets_and_typos() {
        let s = CustomApiSettings::parse(
            Some(&json!({"api_url": "https://erp.example.com/v1/"})),
            &ctx(),
        )
        .unwrap();
        assert_eq!(
            s.url("/api/orders", None).as_str(),
            "https://erp.example.com/v1/api/orders"
        );
        assert_eq!(s.auth_header.as_str(), "x-api-key");
        let err = CustomApiSettings::parse(
            Some(&json!({"api_url": "https://x.example", "api_key": "k"})),
            &ctx(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("Move it to credentials"), "{err}");
        let err = CustomApiSettings::parse(
            Some(&json!({"api_url": "https://x.example", "endpoint": {}})),
            &ctx(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("endpoint"), "{err}");
        let err = CustomApiSettings::parse(
            Some(&json!({"api_url": "https://x.example", "endpoints": {"order": "/o"}})),
            &ctx(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("endpoints.order"), "{err}");
        let err = CustomApiSettings::parse(Some(&json!({})), &ctx()).unwrap_err();
        assert!(err.to_string().contains("api_url"), "{err}");
    }

    #[test]
    fn an_order_maps_to_the_seed_fields_with_exact_amounts() {
        let t = chrono::Utc.with_ymd_and_hms(2026, 11, 2, 10, 0, 0).unwrap();
        let order = PlatformRecord::Order(OrderRecord {
            id: 1001,
            order_number: "WH-1001".into(),
            customer_id: Some(4),
            customer_email: Some("buyer@acme.example".into()),
            status: "confirmed".into(),
            currency: "EUR".into(),
            total_amount: Decimal::from_str("250.1000").unwrap(),
            items: vec![OrderLine {
                product_id: Some(17),
                sku: Some("SKU-0017".into()),
                quantity: Decimal::from_str("20.0000").unwrap(),
                unit_price: Decimal::from_str("12.5050").unwrap(),
            }],
            created_at: t,
            updated_at: t,
        });
        let payload = map_record(&order).unwrap();
        assert_eq!(payload["order_number"], "WH-1001");
        assert_eq!(payload["customer_email"], "buyer@acme.example");
        assert_eq!(payload["total"].to_string(), "250.1");
        assert_eq!(payload["items"][0]["sku"], "SKU-0017");
        assert_eq!(payload["items"][0]["quantity"].to_string(), "20");
        assert_eq!(payload["items"][0]["price"].to_string(), "12.505");
    }

    #[test]
    fn an_order_line_without_product_is_rejected_with_the_reason() {
        let t = chrono::Utc.with_ymd_and_hms(2026, 11, 2, 10, 0, 0).unwrap();
        let order = PlatformRecord::Order(OrderRecord {
            id: 1,
            order_number: "A".into(),
            customer_id: None,
            customer_email: Some("a@b.c".into()),
            status: "x".into(),
            currency: "EUR".into(),
            total_amount: Decimal::ONE,
            items: vec![OrderLine {
                product_id: None,
                sku: None,
                quantity: Decimal::ONE,
                unit_price: Decimal::ONE,
            }],
            created_at: t,
            updated_at: t,
        });
        let err = map_record(&order).unwrap_err();
        assert_eq!(err.class(), "rejected");
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn imported_items_and_tombstones_parse() {
        let r = parse_item(Entity::Inventory, &json!({"id": 9, "updated_at": "2026-11-02T10:00:00Z", "sku": "S", "warehouse_code": "MAIN", "quantity": 12.5})).unwrap();
        assert_eq!(r.external_id, "9");
        assert_eq!(
            r.data,
            Some(ImportedData::Inventory {
                sku: "S".into(),
                warehouse_code: "MAIN".into(),
                quantity: Decimal::from_str("12.5").unwrap()
            })
        );
        let t = parse_item(
            Entity::Product,
            &json!({"id": "p1", "updated_at": "2026-11-02T10:00:00Z", "deleted": true}),
        )
        .unwrap();
        assert!(t.deleted && t.data.is_none());
        assert!(
            parse_item(
                Entity::Product,
                &json!({"id": "p1", "name": "x", "price": 1})
            )
            .unwrap_err()
            .contains("sku")
        );
    }
}
