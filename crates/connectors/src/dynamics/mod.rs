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

//!
//! `settings` reads the integration's settings, `mapping` turns platform records into
//! Dataverse rows, `client` writes documents (`batch` customers and products), `import`
//! reads accounts and products back; the token comes from [`crate::oauth::ClientCredentials`].

mod batch;
mod client;
mod import;
mod mapping;
mod settings;

pub use batch::{BatchRequest, batch_body, parse_batch_response};
pub use client::{entity_id, key_segment};
pub use import::parse_row;
pub use mapping::{account_number, map_record, resolve_references};
pub use settings::DynamicsSettings;

use crate::http::{HttpOptions, HttpRuntime, Redactor};
use crate::oauth::{ClientCredentials, ClientCredentialsIssuer};
use crate::rate::RateKey;
use crate::{Capabilities, ConnectorContext, ConnectorError, Idempotency};
use passerelle_core::vault::Credentials;
use passerelle_core::{Entity, IntegrationType};
use serde_json::Value;

const ENTRA_ID: ClientCredentialsIssuer = ClientCredentialsIssuer {
    vendor: "Entra ID",
    refused_hint: "check client_id, client_secret, tenant_id and that the app is an application user of this environment",
    default_lifetime_secs: 3599,
};

pub struct DynamicsConnector {
    settings: DynamicsSettings,
    /// The client-credentials grant against the tenant's token endpoint, scoped to the
    /// environment.
    tokens: ClientCredentials,
    http: HttpRuntime,
    capabilities: Capabilities,
}

impl DynamicsConnector {
    pub fn new(
        settings: Option<&Value>,
        credentials: Option<&Credentials>,
        context: &ConnectorContext,
    ) -> Result<Self, ConnectorError> {
        let settings = DynamicsSettings::parse(settings, context)?;
        let credentials = crate::required_credentials(
            credentials,
            "dynamics_365",
            "client_id and client_secret",
        )?;
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
        Ok(Self::assemble(settings, client_id, client_secret, http))
    }

    fn assemble(
        settings: DynamicsSettings,
        client_id: String,
        client_secret: String,
        http: HttpRuntime,
    ) -> Self {
        let tokens = ClientCredentials::new(
            ENTRA_ID,
            settings.token_url.clone(),
            client_id,
            client_secret,
            Some(settings.scope()),
        );
        Self {
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
            tokens,
            http,
        }
    }
}

// Lines name their item by id (QuickBooks) or bind their product row (Dataverse): the
// payload refers to the customer and every product.
http_connector!(
    DynamicsConnector,
    IntegrationType::Dynamics365,
    map_record,
    debug: environment_url
);

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chrono::Utc;
    use passerelle_core::platform::CustomerRecord;
    use serde_json::json;

    /// A connector on `settings` without a rate gate, for mapping tests.
    pub(crate) fn connector(settings: DynamicsSettings) -> DynamicsConnector {
        let http = HttpRuntime::new(
            &ConnectorContext::default(),
            HttpOptions::default(),
            Redactor::new(Vec::<String>::new()),
        )
        .unwrap();
        DynamicsConnector::assemble(settings, "c".into(), "s".into(), http)
    }

    pub(crate) fn settings(extra: Value) -> Result<DynamicsSettings, ConnectorError> {
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

    pub(crate) fn customer() -> CustomerRecord {
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
}
