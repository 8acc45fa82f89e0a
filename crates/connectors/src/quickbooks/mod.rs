//! The QuickBooks Online Accounting API v3 connector (`quickbooks`). See
//! `docs/connectors/quickbooks.md`.
//!
//! - OAuth2 with HTTP Basic client authentication: Intuit may hand back a new refresh token
//!   on any refresh; it is stored (sealed, under the run's lease) *before* the new access
//!   token is used, so no crash can lose it. A 401 mid-sync refreshes once and repeats.
//! - Writes go through `/batch` (at most 30 `BatchItemRequest`s, each succeeding or failing
//!   on its own) with a `requestid` naming the exact set of records, so a repeat is replayed.
//!   Updates are sparse and carry the `SyncToken` kept with the mapping; a stale token is
//!   read again and the update sent once more. A create an earlier attempt may have made is
//!   first looked up with the query endpoint by our reference (customer `DisplayName` and
//!   e-mail, item `Sku`, document `DocNumber`).
//! - QuickBooks has no sales order: an order becomes an `Estimate` (default) or an `Invoice`.
//! - Imports: a full query on the first pass, then `cdc` from the cursor (it reaches back
//!   30 days only); stock (`QtyOnHand` of inventory items) is read in full every pass.
//! - Limits: 500 requests a minute and 10 at once per realm, 40 batch requests a minute,
//!   through the fleet gate under two keys (`{realm}` and `{realm}:batch`).

//!
//! `settings` reads the integration's settings, `mapping` turns platform records into
//! QuickBooks entities, `client` sends them (`services` finds the item invoices are booked
//! on) and `import` reads Items and Customers back.

mod client;
mod import;
mod mapping;
mod services;
mod settings;

pub use import::{parse_entity, parse_qb_time};
pub use mapping::map_record;
pub use settings::{OrderDocument, QuickBooksSettings};

use crate::http::{HttpOptions, HttpRuntime, Redactor};
use crate::oauth::{Issuer, OAuthTokens};
use crate::rate::RateKey;
use crate::{Capabilities, ConnectorContext, ConnectorError, Idempotency};
use passerelle_core::IntegrationType;
use passerelle_core::vault::Credentials;
use serde_json::Value;

pub(crate) const INTUIT: Issuer = Issuer {
    client_auth: crate::oauth::ClientAuth::Basic,
    vendor: "Intuit",
    app: "the QuickBooks app",
    default_lifetime_secs: 3600,
    client_credentials: false,
};

pub struct QuickBooksConnector {
    settings: QuickBooksSettings,
    tokens: OAuthTokens,
    /// Every call but `/batch`, paced under the realm's limits.
    http: HttpRuntime,
    /// `/batch`, paced under the batch limits (counted separately by Intuit).
    batch_http: HttpRuntime,
    capabilities: Capabilities,
}

impl QuickBooksConnector {
    pub fn new(
        settings: Option<&Value>,
        credentials: Option<&Credentials>,
        context: &ConnectorContext,
    ) -> Result<Self, ConnectorError> {
        let settings = QuickBooksSettings::parse(settings, context)?;
        let credentials = crate::required_credentials(
            credentials,
            "quickbooks",
            "client_id, client_secret and refresh_token",
        )?;
        let tokens = OAuthTokens::new(
            INTUIT,
            settings.token_url.clone(),
            credentials.clone(),
            context.credential_store.clone(),
        )?;
        let secrets = crate::oauth::secrets(credentials);
        let options = HttpOptions {
            request_timeout: settings.timeout,
            // Intuit sends no `Retry-After` with its 429s and says to wait 60 s: the runtime
            // reads every such 429 as that wait, embargoes the realm fleet-wide and hands
            // the job back to the queue rather than retrying sooner.
            rate_limited_wait: settings.throttle_wait,
            client: "quickbooks",
            ..HttpOptions::default()
        };
        let mut http = HttpRuntime::new(context, options.clone(), Redactor::new(secrets.clone()))?;
        let mut batch_http = HttpRuntime::new(context, options, Redactor::new(secrets))?;
        if let Some(gate) = &context.rate_gate {
            let key = RateKey {
                connector: IntegrationType::QuickBooks,
                account: settings.realm_id.clone(),
            };
            let batch_key = RateKey {
                connector: IntegrationType::QuickBooks,
                account: format!("{}:batch", settings.realm_id),
            };
            http = http.with_fleet_gate(gate.clone(), key.clone(), settings.limits);
            // A batch is also a request to the realm: it counts against both allowances. The
            // realm comes first because a 429 embargoes the first key: whichever limit
            // Intuit hit, nothing goes to the realm before its advised wait has passed.
            batch_http = batch_http
                .with_fleet_gate(gate.clone(), key, settings.limits)
                .also_limited_by(batch_key, settings.batch_limits);
        }
        Ok(Self {
            capabilities: Capabilities::accounting(settings.batch_size, Idempotency::Key),
            settings,
            tokens,
            http,
            batch_http,
        })
    }
}

// Lines name their item by id (QuickBooks) or bind their product row (Dataverse): the
// payload refers to the customer and every product.
http_connector!(QuickBooksConnector, IntegrationType::QuickBooks, map_record, debug: realm_id);

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::{DateTime, TimeZone, Utc};
    use passerelle_core::platform::PlatformRecord;
    use passerelle_core::platform::{
        CustomerRecord, InvoiceRecord, OrderLine, OrderRecord, ProductRecord,
    };
    use rust_decimal::Decimal;
    use serde_json::json;
    use std::str::FromStr;
    use std::time::Duration;

    pub(crate) fn settings(extra: Value) -> QuickBooksSettings {
        let mut s = json!({"realm_id": "9130357766900456", "income_account_id": "79"});
        if let (Some(o), Some(e)) = (s.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                o.insert(k.clone(), v.clone());
            }
        }
        QuickBooksSettings::parse(Some(&s), &ConnectorContext::default()).unwrap()
    }

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 2, 10, 0, 0).unwrap()
    }

    pub(crate) fn records() -> Vec<PlatformRecord> {
        vec![
            PlatformRecord::Product(ProductRecord {
                id: 1,
                sku: "SKU-1".into(),
                name: "Oak pallet: large".into(),
                description: None,
                price: Decimal::from_str("12.5").unwrap(),
                currency: "EUR".into(),
                active: true,
                updated_at: at(),
            }),
            PlatformRecord::Customer(CustomerRecord {
                id: 3,
                email: "ann@buyer.example".into(),
                name: "Ann Buyer".into(),
                company_name: Some("Buyer SARL".into()),
                phone: Some("+33 1".into()),
                vat_number: Some("FR1".into()),
                updated_at: at(),
            }),
            PlatformRecord::Order(OrderRecord {
                id: 7,
                order_number: "WH-7".into(),
                customer_id: Some(3),
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
                created_at: at(),
                updated_at: at(),
            }),
            PlatformRecord::Invoice(InvoiceRecord {
                id: 9,
                invoice_number: "INV-9".into(),
                order_id: Some(7),
                order_number: Some("WH-7".into()),
                customer_id: Some(3),
                customer_email: None,
                status: "issued".into(),
                currency: "EUR".into(),
                total_amount: Decimal::from(25),
                issued_at: Some(at()),
                due_at: Some(at()),
                updated_at: at(),
            }),
        ]
    }

    #[test]
    fn quickbooks_declares_intuits_60_second_wait_after_a_429() {
        let creds = Credentials::from_value(
            json!({"client_id": "c", "client_secret": "s", "refresh_token": "r"}),
        )
        .unwrap();
        let c = QuickBooksConnector::new(
            Some(&json!({"realm_id": "1"})),
            Some(&creds),
            &ConnectorContext::default(),
        )
        .unwrap();
        for runtime in [&c.http, &c.batch_http] {
            assert_eq!(runtime.options().rate_limited_wait, Duration::from_secs(60));
        }
    }
}
