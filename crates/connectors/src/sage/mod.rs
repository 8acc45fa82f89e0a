//! The Sage Business Cloud Accounting connector (`sage`), API v3.1. See
//! `docs/connectors/sage.md`.
//!
//! - OAuth 2.0 authorization code only (the admin API's consent, `oauth/start`); access
//!   tokens last five minutes and refresh tokens are single-use: each refresh's new token is
//!   sealed and committed before it is used ([`crate::oauth::OAuthTokens`]), and one Sage
//!   refuses (lost, revoked, expired after 31 days) sends the integration to `error` telling
//!   the admin to connect again. The client authenticates in the token form.
//! - `X-Business` names the business on every request.
//! - Writes: one request per record (Sage has no batch), four at a time; a create carries an
//!   `idempotency_id` in its resource's namespace, derived from the worker's idempotency key,
//!   so a repeated create is answered from Sage's idempotency store instead of making a second
//!   record. Orders become quotes (or estimates): v3.1 has no sales orders.
//! - Imports page with `items_per_page` and `page` from `updated_or_created_since`, then read
//!   what was deleted since (`deleted_since`) as tombstones.
//! - Sage's error bodies (`[{"$severity", "$dataCode", "$message", "$source"}]`) are
//!   classified by their HTTP status like every other error, and named in messages.

mod client;
mod import;
mod mapping;
mod settings;

pub use settings::{DEFAULT_LIMITS, OrderDocument, SageSettings};

use crate::http::{HttpOptions, HttpRuntime, Redactor};
use crate::oauth::{ClientAuth, Issuer, OAuthTokens};
use crate::rate::RateKey;
use crate::{Capabilities, ConnectorContext, ConnectorError, Idempotency};
use passerelle_core::IntegrationType;
use passerelle_core::vault::Credentials;
use serde_json::Value;

/// Records one `export` call receives; they are sent a few at a time.
const EXPORT_BATCH: usize = 20;
/// Requests of one `export` call in flight at once.
const EXPORT_PARALLELISM: usize = 4;
/// Sage's largest page.
const IMPORT_PAGE_SIZE: usize = 200;

pub(crate) const SAGE: Issuer = Issuer {
    vendor: "Sage",
    app: "the Sage app (connect again: POST /api/v1/integrations/{id}/oauth/start)",
    default_lifetime_secs: 300,
    client_credentials: false,
    client_auth: ClientAuth::Post,
};

pub struct SageConnector {
    settings: SageSettings,
    tokens: OAuthTokens,
    http: HttpRuntime,
    capabilities: Capabilities,
}

impl SageConnector {
    pub fn new(
        settings: Option<&Value>,
        credentials: Option<&Credentials>,
        context: &ConnectorContext,
    ) -> Result<Self, ConnectorError> {
        let settings = SageSettings::parse(settings, context)?;
        let credentials = crate::required_credentials(
            credentials,
            "sage",
            "client_id and client_secret, then connect (the consent brings the refresh token)",
        )?;
        let tokens = OAuthTokens::new(
            SAGE,
            settings.token_url.clone(),
            credentials.clone(),
            context.credential_store.clone(),
        )?;
        let mut http = HttpRuntime::new(
            context,
            HttpOptions {
                request_timeout: settings.timeout,
                client: "sage",
                ..HttpOptions::default()
            },
            Redactor::new(crate::oauth::secrets(credentials)),
        )?;
        if let Some(gate) = &context.rate_gate {
            let key = RateKey {
                connector: IntegrationType::Sage,
                account: settings.business_id.clone(),
            };
            http = http.with_fleet_gate(gate.clone(), key, settings.limits);
        }
        Ok(Self {
            capabilities: Capabilities::accounting(EXPORT_BATCH, Idempotency::Key),
            settings,
            tokens,
            http,
        })
    }
}

http_connector!(SageConnector, IntegrationType::Sage, mapping::map_record, debug: business_id);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn the_consent_brings_the_refresh_token_and_debug_shows_the_business_only() {
        let ctx = crate::test_context();
        let settings = json!({"business_id": ID, "sales_ledger_account_id": ID, "purchase_ledger_account_id": ID});
        let app_only =
            Credentials::from_value(json!({"client_id": "c", "client_secret": "s-secret"}))
                .unwrap();
        let e = SageConnector::new(Some(&settings), Some(&app_only), &ctx).unwrap_err();
        assert_eq!(e.to_string(), "Sage credentials need `refresh_token`");
        let full = Credentials::from_value(
            json!({"client_id": "c", "client_secret": "s-secret", "refresh_token": "r"}),
        )
        .unwrap();
        let c = SageConnector::new(Some(&settings), Some(&full), &ctx).unwrap();
        assert_eq!(
            format!("{c:?}"),
            format!("SageConnector {{ business_id: \"{ID}\", .. }}")
        );
    }
}
