//! The Xero Accounting API connector (`xero`). See `docs/connectors/xero.md`.
//!
//! - OAuth2: refresh tokens rotate on every refresh; the new token set is stored (sealed,
//!   under the run's lease) *before* the new access token is used, so no crash can lose it.
//!   Custom connections use `client_credentials`. A 401 mid-sync refreshes once and repeats.
//! - Writes are batched (`PUT` creates, `POST` updates, `summarizeErrors=false`, so each
//!   element succeeds or fails on its own) with an `Idempotency-Key`; a create that an
//!   earlier attempt may have made is first looked up by our reference (ContactNumber, item
//!   Code, invoice or quote number).
//! - Xero has no sales order: an order becomes a DRAFT quote (default) or a DRAFT sales
//!   invoice (`settings.order_document = "draft_invoice"`).
//! - Limits: 60 calls a minute, 5,000 a day, 5 at once per tenant, through the fleet gate.
//!
//! `settings` reads the integration's settings, `mapping` turns platform records into Xero's
//! documents, `client` sends them and `import` reads Items and Contacts back.

mod client;
mod import;
mod mapping;
mod settings;

pub use import::{parse_element, parse_xero_date};
pub use settings::{OrderDocument, XeroSettings};

use crate::http::{HttpOptions, HttpRuntime, Redactor};
use crate::oauth::{Issuer, OAuthTokens};
use crate::rate::RateKey;
use crate::{Capabilities, ConnectorContext, ConnectorError, Idempotency, Reference};
use passerelle_core::IntegrationType;
use passerelle_core::platform::PlatformRecord;
use passerelle_core::vault::Credentials;
use serde_json::Value;

pub struct XeroConnector {
    settings: XeroSettings,
    tokens: OAuthTokens,
    http: HttpRuntime,
    capabilities: Capabilities,
}

pub(crate) const XERO: Issuer = Issuer {
    vendor: "Xero",
    app: "the Xero app",
    default_lifetime_secs: 1800,
    // Custom connections have no refresh token.
    client_credentials: true,
    client_auth: crate::oauth::ClientAuth::Basic,
};

impl XeroConnector {
    pub fn new(
        settings: Option<&Value>,
        credentials: Option<&Credentials>,
        context: &ConnectorContext,
    ) -> Result<Self, ConnectorError> {
        let settings = XeroSettings::parse(settings, context)?;
        let credentials = crate::required_credentials(
            credentials,
            "xero",
            "client_id, client_secret and refresh_token (or client_id and client_secret for a custom connection)",
        )?;
        let tokens = OAuthTokens::new(
            XERO,
            settings.token_url.clone(),
            credentials.clone(),
            context.credential_store.clone(),
        )?;
        let mut http = HttpRuntime::new(
            context,
            HttpOptions {
                request_timeout: settings.timeout,
                client: "xero",
                ..HttpOptions::default()
            },
            Redactor::new(crate::oauth::secrets(credentials)),
        )?;
        if let Some(gate) = &context.rate_gate {
            let key = RateKey {
                connector: IntegrationType::Xero,
                account: settings.tenant_id.clone(),
            };
            http = http.with_fleet_gate(gate.clone(), key, settings.limits);
            // Every tenant connected to the same app shares the app's allowance.
            if let Some(client_id) = credentials.get_str("client_id") {
                let app = RateKey {
                    connector: IntegrationType::Xero,
                    account: format!("app:{client_id}"),
                };
                http = http.also_limited_by(app, settings.app_limits);
            }
        }
        Ok(Self {
            capabilities: Capabilities::accounting(settings.batch_size, Idempotency::Key),
            settings,
            tokens,
            http,
        })
    }
}

http_connector!(XeroConnector, IntegrationType::Xero, debug: tenant_id);

impl XeroConnector {
    fn payload(&self, record: &PlatformRecord) -> Result<Value, ConnectorError> {
        self.map(record, None)
    }

    /// Only the contact: line items name their item by code.
    fn refers_to(&self, record: &PlatformRecord) -> Vec<Reference> {
        crate::customer_only(record)
    }
}
