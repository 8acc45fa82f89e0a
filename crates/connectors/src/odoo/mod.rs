//! The Odoo connector (`odoo`). See `docs/connectors/odoo.md`.
//!
//! - Protocol, chosen in settings: XML-RPC (`/xmlrpc/2/common` `authenticate` once per
//!   connector, then `/xmlrpc/2/object` `execute_kw` with the API key on every call) for Odoo
//!   up to 18, or JSON-2 (`POST /json/2/<model>/<method>`, `Authorization: bearer <key>`,
//!   `X-Odoo-Database`) for Odoo 19 and later, where XML-RPC is deprecated. Both go through
//!   one ORM call ([`client::OrmCall`]), so the mapping and the sync logic are shared.
//! - Models: `product.product` (its template follows), `res.partner`, `sale.order` with its
//!   `order_line`, `account.move` (`out_invoice`) with its `invoice_line_ids`, and
//!   `stock.quant` for stock (import).
//! - Creates go in one `create` call with a list of values per chunk (one transaction at
//!   Odoo: all or nothing); if Odoo refuses it, the records are created one by one so the
//!   others go in and the refused one is logged with Odoo's reason. The created records are
//!   read back and matched to ours by our reference, never by position.
//! - Odoo has no idempotency key: a create an earlier attempt may have made is first looked
//!   up by our reference (`default_code` = SKU, `ref` = prefix + customer id,
//!   `client_order_ref` = order number, `ref` = invoice number).
//! - Imports read by `write_date` in `(write_date, id)` order, paged by keyset, archived
//!   records included; the worker's cursor keeps an overlapping window.
//! - Limits: Odoo publishes none; we impose [`DEFAULT_LIMITS`] per database, which
//!   `settings.rate_limit` overrides.
//!
//! `settings` reads the settings, `rpc` the wire formats, `client` the transport, `mapping`
//! platform records as Odoo values, `export` the writes and `import` the reads.

mod client;
mod export;
mod import;
mod mapping;
pub mod rpc;
mod settings;

pub use import::{parse_odoo_datetime, parse_record};
pub use settings::{DEFAULT_LIMITS, OdooSettings, Protocol};

use crate::http::{HttpOptions, HttpRuntime, Redactor};
use crate::rate::RateKey;
use crate::{
    Capabilities, ConnectorContext, ConnectorError, Idempotency, required_credential,
    required_credentials,
};
use client::Session;
use passerelle_core::IntegrationType;
use passerelle_core::vault::Credentials;
use serde_json::Value;
use tokio::sync::Mutex;
use url::Url;

/// Records per `create` call (a worker's chunk is cut into such batches).
const EXPORT_BATCH: usize = 50;
/// Updates of one `export` call in flight at once (the fleet gate caps the database).
const EXPORT_PARALLELISM: usize = 4;
/// Records per import page.
const IMPORT_PAGE_SIZE: usize = 200;

pub struct OdooConnector {
    settings: OdooSettings,
    /// The login `authenticate` needs (XML-RPC only).
    username: Option<String>,
    api_key: String,
    session: Mutex<Session>,
    http: HttpRuntime,
    capabilities: Capabilities,
}

impl OdooConnector {
    pub fn new(
        settings: Option<&Value>,
        credentials: Option<&Credentials>,
        context: &ConnectorContext,
    ) -> Result<Self, ConnectorError> {
        let settings = OdooSettings::parse(settings, context)?;
        let needs = match settings.protocol {
            Protocol::Xmlrpc => "username and api_key",
            Protocol::Json2 => "api_key",
        };
        let credentials = required_credentials(credentials, "odoo", needs)?;
        // The legacy app stored a password-or-key as `api_key`; a `password` is read the same.
        let api_key = required_credential(credentials, "api_key", "odoo")
            .or_else(|e| required_credential(credentials, "password", "odoo").map_err(|_| e))?;
        let username = match settings.protocol {
            Protocol::Xmlrpc => Some(required_credential(credentials, "username", "odoo")?),
            Protocol::Json2 => credentials.get_str("username").map(str::to_owned),
        };
        agree_with_settings(credentials, &settings)?;
        let mut http = HttpRuntime::new(
            context,
            HttpOptions {
                request_timeout: settings.timeout,
                client: "odoo",
                ..HttpOptions::default()
            },
            Redactor::new(vec![api_key.clone()]),
        )?;
        if let Some(gate) = &context.rate_gate {
            let key = RateKey {
                connector: IntegrationType::Odoo,
                account: format!(
                    "{}/{}",
                    settings.url.origin().ascii_serialization(),
                    settings.database
                ),
            };
            http = http.with_fleet_gate(gate.clone(), key, settings.limits);
        }
        Ok(Self {
            capabilities: Capabilities::accounting(EXPORT_BATCH, Idempotency::LookupByReference),
            settings,
            username,
            api_key,
            session: Mutex::new(Session::default()),
            http,
        })
    }
}

/// The legacy app stored the server (`url`) and `database` with the credentials; where they
/// are still there they must name what settings name.
fn agree_with_settings(
    credentials: &Credentials,
    settings: &OdooSettings,
) -> Result<(), ConnectorError> {
    if let Some(db) = credentials.get_str("database")
        && db.trim() != settings.database
    {
        return Err(ConnectorError::fatal(format!(
            "credentials.database ({db}) differs from settings.database ({}); remove it from the credentials or make them agree",
            settings.database
        )));
    }
    if let Some(url) = credentials.get_str("url") {
        let same = Url::parse(url)
            .ok()
            .is_some_and(|u| u.origin() == settings.url.origin());
        if !same {
            return Err(ConnectorError::fatal(
                "credentials.url differs from settings.url; remove it from the credentials or make them agree",
            ));
        }
    }
    Ok(())
}

http_connector!(OdooConnector, IntegrationType::Odoo, mapping::map_record, debug: url, database);

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn connector(protocol: &str) -> OdooConnector {
        let settings =
            json!({"url": "https://acme.odoo.com", "database": "acme", "protocol": protocol});
        let creds =
            Credentials::from_value(json!({"username": "bot@acme.example", "api_key": "k-123456"}))
                .unwrap();
        OdooConnector::new(Some(&settings), Some(&creds), &crate::test_context()).unwrap()
    }

    #[test]
    fn credentials_follow_the_protocol_and_must_agree_with_settings() {
        let ctx = crate::test_context();
        let xmlrpc =
            json!({"url": "https://acme.odoo.com", "database": "acme", "protocol": "xmlrpc"});
        let json2 =
            json!({"url": "https://acme.odoo.com", "database": "acme", "protocol": "json2"});
        let key_only = Credentials::from_value(json!({"api_key": "k-123456"})).unwrap();
        assert!(OdooConnector::new(Some(&json2), Some(&key_only), &ctx).is_ok());
        let e = OdooConnector::new(Some(&xmlrpc), Some(&key_only), &ctx).unwrap_err();
        assert_eq!(e.to_string(), "odoo credentials need `username`");
        let seed =
            Credentials::from_value(json!({"url": "https://acme.odoo.com", "database": "acme",
            "username": "admin@acme.example", "api_key": "k-123456"}))
            .unwrap();
        assert!(OdooConnector::new(Some(&xmlrpc), Some(&seed), &ctx).is_ok());
        let other = Credentials::from_value(
            json!({"database": "other", "username": "u", "api_key": "k-123456"}),
        )
        .unwrap();
        assert!(
            OdooConnector::new(Some(&xmlrpc), Some(&other), &ctx)
                .unwrap_err()
                .to_string()
                .contains("differs from settings.database")
        );
        let none = OdooConnector::new(Some(&xmlrpc), None, &ctx).unwrap_err();
        assert_eq!(
            none.to_string(),
            "odoo credentials are missing: set username and api_key"
        );
    }

    #[test]
    fn debug_shows_the_server_and_database_and_no_credential() {
        assert_eq!(
            format!("{:?}", connector("xmlrpc")),
            r#"OdooConnector { url: "https://acme.odoo.com/", database: "acme", .. }"#
        );
    }
}
