//! ERP connectors. Each is data in, data out: a pure mapping from platform records to the
//! ERP's payloads (unit-tested against the official shapes) and a thin transport over the
//! shared [`http::HttpRuntime`].
//!
//! Connectors know nothing of Postgres or RabbitMQ: the worker reads platform rows, asks the
//! connector to map and send them, and records what comes back. The worker knows nothing of
//! any one ERP: it sees only this interface.

/// The `Connector` impl every HTTP connector shares. The ERP's own logic lives in inherent
/// methods of the connector (`connection_test`, `payload`, `refers_to`, `export_ops`,
/// `read_page`, and its `capabilities` and `http` fields); this only wires them to the trait,
/// so the five impls do not repeat one another. `debug: a, b` also implements `Debug`,
/// showing only `settings.a` and `settings.b`: the ERP account, never a secret.
macro_rules! http_connector {
    // A connector whose payloads come from `$map(&settings, record)` and whose payloads
    // name every record an order or invoice refers to (its customer and products).
    ($connector:ty, $kind:expr, $map:path, debug: $($field:ident),+) => {
        impl $connector {
            fn payload(
                &self,
                record: &passerelle_core::platform::PlatformRecord,
            ) -> Result<serde_json::Value, $crate::ConnectorError> {
                $map(&self.settings, record)
            }

            fn refers_to(
                &self,
                record: &passerelle_core::platform::PlatformRecord,
            ) -> Vec<$crate::Reference> {
                record.references()
            }
        }
        http_connector!($connector, $kind, debug: $($field),+);
    };
    ($connector:ty, $kind:expr, debug: $($field:ident),+) => {
        impl std::fmt::Debug for $connector {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($connector))
                    $(.field(stringify!($field), &self.settings.$field.as_str()))+
                    .finish_non_exhaustive()
            }
        }
        http_connector!($connector, $kind);
    };
    ($connector:ty, $kind:expr) => {
        #[async_trait::async_trait]
        impl $crate::Connector for $connector {
            fn integration_type(&self) -> passerelle_core::IntegrationType {
                $kind
            }

            fn capabilities(&self) -> &$crate::Capabilities {
                &self.capabilities
            }

            async fn test_connection(
                &self,
            ) -> Result<$crate::ConnectionTest, $crate::ConnectorError> {
                self.connection_test().await
            }

            fn map_record(
                &self,
                record: &passerelle_core::platform::PlatformRecord,
            ) -> Result<serde_json::Value, $crate::ConnectorError> {
                self.payload(record)
            }

            fn references(
                &self,
                record: &passerelle_core::platform::PlatformRecord,
            ) -> Vec<$crate::Reference> {
                self.refers_to(record)
            }

            fn redact(&self, value: &serde_json::Value) -> serde_json::Value {
                self.http.redactor().json(value)
            }

            async fn export(
                &self,
                entity: passerelle_core::Entity,
                ops: Vec<$crate::ExportOp>,
            ) -> Vec<$crate::ExportResult> {
                self.export_ops(entity, ops).await
            }

            async fn import_page(
                &self,
                entity: passerelle_core::Entity,
                cursor: &$crate::ImportCursor,
            ) -> Result<$crate::ImportPage, $crate::ConnectorError> {
                self.read_page(entity, cursor).await
            }
        }
    };
}

/// The customer a record refers to, for ERPs whose lines name their item by code and so
/// need no product mapping.
pub(crate) fn customer_only(record: &PlatformRecord) -> Vec<Reference> {
    let mut references = record.references();
    references.retain(|(kind, _)| *kind == passerelle_core::MappingEntityType::Customer);
    references
}

pub mod breaker;
pub mod consent;
pub mod custom_api;
pub mod dynamics;
pub mod error;
pub mod http;
pub(crate) mod mapping;
#[cfg(test)]
mod matrix;
pub mod netsuite;
pub mod oauth;
pub mod odoo;
pub mod quickbooks;
pub mod rate;
pub mod redact;
pub mod sage;
pub mod sap_b1;
pub mod settings;
pub mod urls;
pub mod xero;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use passerelle_core::platform::{ImportedRecord, PlatformRecord};
use passerelle_core::vault::Credentials;
use passerelle_core::{Entity, IntegrationType};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

pub use error::{ConnectorError, Disposition};
pub use rate::{Permit, RateGate, RateKey, RateLimits};
pub use urls::UrlPolicy;

/// What a connector can do, declared so the worker can plan without knowing the ERP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    pub export: Vec<Entity>,
    pub import: Vec<Entity>,
    /// Records handed to one `export` call (an ERP batch, or a group sent concurrently).
    pub export_batch_size: usize,
    /// How a create is made safe to repeat.
    pub idempotency: Idempotency,
}

impl Capabilities {
    /// What an accounting ERP takes: products, customers, orders and invoices out (in that
    /// order, so an order finds its customer and products there), and products, customers
    /// and stock in.
    pub(crate) fn accounting(export_batch_size: usize, idempotency: Idempotency) -> Self {
        Self {
            export: vec![
                Entity::Product,
                Entity::Customer,
                Entity::Order,
                Entity::Invoice,
            ],
            import: vec![Entity::Product, Entity::Customer, Entity::Inventory],
            export_batch_size,
            idempotency,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// The ERP replays a request carrying the same key (custom API, Xero, QuickBooks).
    Key,
    /// No key: before repeating a create, look the record up by our reference (SAP B1, Dataverse).
    LookupByReference,
}

/// The result of a connection test (the legacy app's "test" button).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionTest {
    pub message: String,
    pub response_time_ms: u64,
}

/// One record to send.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportOp {
    pub internal_id: String,
    /// Present when the record exists at the ERP (an update).
    pub external_id: Option<String>,
    /// The ERP payload, from [`Connector::map_record`] (or replayed from an intent).
    pub payload: serde_json::Value,
    /// Sent as the ERP's idempotency key where it has one.
    pub idempotency_key: String,
    /// True when an earlier attempt may already have created this record.
    pub retried_create: bool,
    /// When that earlier attempt recorded its intent; past the ERP's idempotency window the
    /// connector must look the record up by our reference instead of trusting a replay.
    pub intent_recorded_at: Option<DateTime<Utc>>,
    /// What this connector kept with the mapping at the last export ([`Exported::metadata`],
    /// e.g. a version token); empty for a create. The worker's own keys are not in it.
    pub mapping_metadata: serde_json::Map<String, serde_json::Value>,
    /// External ids of the records this one refers to (an order's customer), as asked for by
    /// [`Connector::references`]; absent when that record is not at the ERP yet.
    pub references: std::collections::HashMap<Reference, String>,
}

/// A platform record another refers to: its mapping type and internal id.
pub type Reference = (passerelle_core::MappingEntityType, String);

impl ExportOp {
    /// An update when the record is at the ERP already, else a create.
    pub fn action(&self) -> ExportAction {
        if self.external_id.is_some() {
            ExportAction::Update
        } else {
            ExportAction::Create
        }
    }

    /// This op's result.
    pub(crate) fn result(
        &self,
        outcome: Result<Exported, ConnectorError>,
        response: Option<serde_json::Value>,
        duration_ms: u32,
    ) -> ExportResult {
        ExportResult {
            internal_id: self.internal_id.clone(),
            action: self.action(),
            outcome,
            response,
            duration_ms,
        }
    }

    /// This op failed with `error` before anything was sent.
    pub(crate) fn failed(&self, error: ConnectorError, start: std::time::Instant) -> ExportResult {
        self.result(Err(error), None, elapsed_ms(start))
    }
}

/// Every op refused with `error`, as for an entity the ERP does not take.
pub(crate) fn refuse_all(ops: &[ExportOp], error: &ConnectorError) -> Vec<ExportResult> {
    ops.iter()
        .map(|op| op.result(Err(error.clone()), None, 0))
        .collect()
}

/// The results of ops answered out of order, by op position; a hole is a connector bug and
/// is reported as one.
pub(crate) fn collect_results(results: Vec<Option<ExportResult>>) -> Vec<ExportResult> {
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| ExportResult {
                internal_id: String::new(),
                action: ExportAction::Create,
                outcome: Err(ConnectorError::fatal(
                    "internal error: an export result went missing",
                )),
                response: None,
                duration_ms: 0,
            })
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportAction {
    Create,
    Update,
}

/// What happened to one record.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportResult {
    pub internal_id: String,
    pub action: ExportAction,
    pub outcome: Result<Exported, ConnectorError>,
    /// The ERP's answer, redacted, for the log row.
    pub response: Option<serde_json::Value>,
    pub duration_ms: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Exported {
    pub external_id: String,
    /// The ERP answered from its idempotency store: an earlier attempt had created it.
    pub replayed: bool,
    /// Kept with the mapping for the next sync (e.g. QuickBooks `SyncToken`), handed back in
    /// [`ExportOp::mapping_metadata`]; empty when there is nothing to keep.
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

impl Exported {
    /// Written now, nothing kept with the mapping.
    pub fn written(external_id: impl Into<String>) -> Self {
        Self {
            external_id: external_id.into(),
            replayed: false,
            metadata: serde_json::Map::new(),
        }
    }

    /// Found at the ERP: an earlier attempt had created it.
    pub fn found(external_id: impl Into<String>) -> Self {
        Self {
            replayed: true,
            ..Self::written(external_id)
        }
    }
}

/// Where an incremental import stands (defined in core: the store saves it).
pub use passerelle_core::cursor::ImportCursor;

#[derive(Debug, Clone, PartialEq)]
pub struct ImportPage {
    pub records: Vec<ImportedRecord>,
    /// Items of the page we could not read: logged as failed, the others go on.
    pub rejected: Vec<RejectedItem>,
    /// `None` when this was the last page of the pass.
    pub next_page: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RejectedItem {
    pub external_id: Option<String>,
    pub error: String,
    pub raw: serde_json::Value,
}

impl ImportPage {
    /// Reads `items` with `parse` (one item may hold several records); an item it cannot
    /// read is rejected under the id `id_of` finds, redacted by `redactor`.
    pub(crate) fn read<'a>(
        items: impl IntoIterator<Item = &'a serde_json::Value>,
        mut parse: impl FnMut(&serde_json::Value) -> Result<Vec<ImportedRecord>, String>,
        id_of: impl Fn(&serde_json::Value) -> Option<String>,
        redactor: &http::Redactor,
        next_page: Option<String>,
    ) -> Self {
        let mut records = Vec::new();
        let mut rejected = Vec::new();
        for item in items {
            match parse(item) {
                Ok(found) => records.extend(found),
                Err(error) => rejected.push(RejectedItem {
                    external_id: id_of(item),
                    error: redactor.text(&error),
                    raw: redactor.json(item),
                }),
            }
        }
        Self {
            records,
            rejected,
            next_page,
        }
    }
}

#[async_trait]
pub trait Connector: Send + Sync + std::fmt::Debug {
    fn integration_type(&self) -> IntegrationType;

    fn capabilities(&self) -> &Capabilities;

    /// Reaches the ERP and proves the credentials.
    async fn test_connection(&self) -> Result<ConnectionTest, ConnectorError>;

    /// The ERP payload for a platform record. Pure. A record that cannot be mapped (a line
    /// without a product) is `Rejected` with the reason.
    fn map_record(&self, record: &PlatformRecord) -> Result<serde_json::Value, ConnectorError>;

    /// The records this record's payload refers to at the ERP (an order's customer, its
    /// products), so the worker can look their external ids up for the whole chunk at once.
    fn references(&self, _record: &PlatformRecord) -> Vec<Reference> {
        Vec::new()
    }

    /// Removes this connector's secrets from a value before it is logged.
    fn redact(&self, value: &serde_json::Value) -> serde_json::Value {
        value.clone()
    }

    /// Sends records of one entity; one result per op, in the same order.
    async fn export(&self, entity: Entity, ops: Vec<ExportOp>) -> Vec<ExportResult>;

    /// One page of changes since the cursor.
    async fn import_page(
        &self,
        entity: Entity,
        cursor: &ImportCursor,
    ) -> Result<ImportPage, ConnectorError>;
}

/// What every connector is built with besides its own settings and credentials.
#[derive(Debug, Clone, Default)]
pub struct ConnectorContext {
    pub url_policy: UrlPolicy,
    /// The fleet-wide rate gate; `None` outside a worker (e.g. a connection test from the
    /// CLI), where only the ERP's own 429s pace us.
    pub rate_gate: Option<Arc<dyn RateGate>>,
    /// Where a connector stores credentials the ERP rotated (a new refresh token), durably and
    /// before it uses them, so no crash can lose them. `None` where nothing may be stored (a
    /// connector that must rotate then fails with a clear error rather than losing a token).
    pub credential_store: Option<Arc<dyn CredentialStore>>,
    /// When an HTTP connector stops sending to an ERP account that keeps failing.
    pub breaker: breaker::BreakerOptions,
}

#[async_trait]
pub trait CredentialStore: Send + Sync + std::fmt::Debug {
    /// Replaces the integration's stored credentials; returns once they are committed.
    async fn save(&self, credentials: &Credentials) -> Result<(), ConnectorError>;
}

/// Builds the connector for an integration. Settings are validated here: a typo or a secret in
/// `settings` is a `Config` error that names the key.
pub fn build(
    integration_type: IntegrationType,
    settings: Option<&serde_json::Value>,
    credentials: Option<&Credentials>,
    context: &ConnectorContext,
) -> Result<Arc<dyn Connector>, ConnectorError> {
    build_any(integration_type, settings, credentials, context).map_err(ConnectorError::into_config)
}

fn build_any(
    integration_type: IntegrationType,
    settings: Option<&serde_json::Value>,
    credentials: Option<&Credentials>,
    context: &ConnectorContext,
) -> Result<Arc<dyn Connector>, ConnectorError> {
    match integration_type {
        IntegrationType::CustomApi => Ok(Arc::new(custom_api::CustomApiConnector::new(
            settings,
            credentials,
            context,
        )?)),
        IntegrationType::Xero => Ok(Arc::new(xero::XeroConnector::new(
            settings,
            credentials,
            context,
        )?)),
        IntegrationType::QuickBooks => Ok(Arc::new(quickbooks::QuickBooksConnector::new(
            settings,
            credentials,
            context,
        )?)),
        IntegrationType::SapB1 => Ok(Arc::new(sap_b1::SapB1Connector::new(
            settings,
            credentials,
            context,
        )?)),
        IntegrationType::Dynamics365 => Ok(Arc::new(dynamics::DynamicsConnector::new(
            settings,
            credentials,
            context,
        )?)),
        IntegrationType::Odoo => Ok(Arc::new(odoo::OdooConnector::new(
            settings,
            credentials,
            context,
        )?)),
        IntegrationType::NetSuite => Ok(Arc::new(netsuite::NetSuiteConnector::new(
            settings,
            credentials,
            context,
        )?)),
        IntegrationType::Sage => Ok(Arc::new(sage::SageConnector::new(
            settings,
            credentials,
            context,
        )?)),
    }
}

/// Checks settings without credentials (at create and update time); a refusal is a `Config`
/// error.
pub fn validate_settings(
    integration_type: IntegrationType,
    settings: Option<&serde_json::Value>,
    context: &ConnectorContext,
) -> Result<(), ConnectorError> {
    validate_any(integration_type, settings, context).map_err(ConnectorError::into_config)
}

fn validate_any(
    integration_type: IntegrationType,
    settings: Option<&serde_json::Value>,
    context: &ConnectorContext,
) -> Result<(), ConnectorError> {
    match integration_type {
        IntegrationType::CustomApi => {
            custom_api::CustomApiSettings::parse(settings, context).map(|_| ())
        }
        IntegrationType::Xero => xero::XeroSettings::parse(settings, context).map(|_| ()),
        IntegrationType::QuickBooks => {
            quickbooks::QuickBooksSettings::parse(settings, context).map(|_| ())
        }
        IntegrationType::SapB1 => sap_b1::SapB1Settings::parse(settings, context).map(|_| ()),
        IntegrationType::Dynamics365 => {
            dynamics::DynamicsSettings::parse(settings, context).map(|_| ())
        }
        IntegrationType::Odoo => odoo::OdooSettings::parse(settings, context).map(|_| ()),
        IntegrationType::NetSuite => {
            netsuite::NetSuiteSettings::parse(settings, context).map(|_| ())
        }
        IntegrationType::Sage => sage::SageSettings::parse(settings, context).map(|_| ()),
    }
}

/// The integration's credentials, or an `Auth` error saying `who`'s are missing and which
/// fields to `set` ("client_id and client_secret").
pub(crate) fn required_credentials<'a>(
    credentials: Option<&'a Credentials>,
    who: &str,
    set: &str,
) -> Result<&'a Credentials, ConnectorError> {
    credentials.ok_or_else(|| ConnectorError::Auth {
        message: format!("{who} credentials are missing: set {set}"),
    })
}

/// The non-empty credential `name`, or an `Auth` error saying `who` needs it.
pub(crate) fn required_credential(
    credentials: &Credentials,
    name: &str,
    who: &str,
) -> Result<String, ConnectorError> {
    credentials
        .get_str(name)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| ConnectorError::Auth {
            message: format!("{who} credentials need `{name}`"),
        })
}

/// A call with a JSON body (or none); `idempotent` says whether it may be repeated after a
/// lost answer.
pub(crate) fn json_call(
    method: reqwest::Method,
    url: url::Url,
    headers: Vec<(reqwest::header::HeaderName, reqwest::header::HeaderValue)>,
    body: Option<serde_json::Value>,
    idempotent: bool,
) -> http::HttpCall {
    http::HttpCall {
        method,
        url,
        headers,
        body,
        raw: None,
        form: None,
        idempotent,
        conflict_means_in_flight: false,
    }
}

/// A short, stable digest (hex) of a text, for idempotency keys.
pub(crate) fn short_hash(text: &str) -> String {
    passerelle_core::digest::short_sha256_hex(text.as_bytes())
}

/// Milliseconds since `start`, saturating.
pub(crate) fn elapsed_ms(start: std::time::Instant) -> u32 {
    u32::try_from(start.elapsed().as_millis()).unwrap_or(u32::MAX)
}

/// Default pause before a retry when the ERP did not say.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Runs `futures` with at most `limit` in flight, starting the next one as soon as any one
/// finishes, and returns their outputs in input order. (`StreamExt::buffered` also keeps
/// the order, but starts nothing new while the oldest is unfinished: one slow request
/// would idle the other slots.)
pub(crate) async fn in_order_concurrently<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
    limit: usize,
) -> Vec<F::Output> {
    use futures::StreamExt;
    async fn tagged<F: std::future::Future>(index: usize, future: F) -> (usize, F::Output) {
        (index, future.await)
    }
    let mut waiting = futures.into_iter().enumerate();
    let mut running = futures::stream::FuturesUnordered::new();
    let mut out = Vec::new();
    loop {
        while running.len() < limit.max(1) {
            let Some((index, future)) = waiting.next() else {
                break;
            };
            running.push(tagged(index, future));
        }
        let Some(done) = running.next().await else {
            break;
        };
        out.push(done);
    }
    out.sort_unstable_by_key(|(index, _)| *index);
    out.into_iter().map(|(_, output)| output).collect()
}

/// The context the connectors' unit tests build with: loopback allowed, no gate, no store.
#[cfg(test)]
pub(crate) fn test_context() -> ConnectorContext {
    ConnectorContext {
        url_policy: UrlPolicy {
            allow_private_networks: true,
        },
        ..ConnectorContext::default()
    }
}

#[cfg(test)]
mod concurrency_tests {
    use super::in_order_concurrently;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn a_slow_first_future_does_not_hold_up_the_others_and_order_is_kept() {
        let started = Instant::now();
        // One slow future first, then 20 quick ones, 2 slots: with `buffered` the quick ones
        // would wait for the slow one (about 10 × 20 ms + 300 ms); here they share the
        // second slot while the first runs.
        let delays = std::iter::once(300u64).chain(std::iter::repeat_n(10, 20));
        let out = in_order_concurrently(
            delays.enumerate().map(|(i, ms)| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                (i, Instant::now())
            }),
            2,
        )
        .await;
        assert_eq!(
            out.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            (0..21).collect::<Vec<_>>()
        );
        // The quick ones all finished before the slow one.
        assert!(out[1..].iter().all(|(_, at)| *at < out[0].1));
        assert!(
            started.elapsed() < Duration::from_millis(450),
            "{:?}",
            started.elapsed()
        );
    }
}
