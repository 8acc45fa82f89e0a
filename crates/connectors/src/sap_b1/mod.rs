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

//!
//! `settings` reads the integration's settings, `mapping` turns platform records into
//! Service Layer entities, `client` holds the session and sends them, `import` reads back.

mod client;
mod import;
mod mapping;
mod settings;

pub use import::{parse_entity, parse_stock, parse_update_stamp};
pub use settings::{DEFAULT_LIMITS, InvoiceLines, InvoiceType, SapB1Settings};

use crate::http::{HttpOptions, HttpRuntime, Redactor};
use crate::rate::RateKey;
use crate::{
    Capabilities, ConnectorContext, ConnectorError, ExportOp, ExportResult, Idempotency, Reference,
    required_credential, required_credentials,
};
use client::{SessionState, target};
use passerelle_core::platform::PlatformRecord;
use passerelle_core::vault::Credentials;
use passerelle_core::{Entity, IntegrationType};
use serde_json::Value;
use tokio::sync::Mutex;
use url::Url;

/// Records one `export` call receives; they are sent a few at a time.
const EXPORT_BATCH: usize = 20;
/// Requests of one `export` call in flight at once (the fleet gate caps the company).
const EXPORT_PARALLELISM: usize = 4;
/// Records per import page (`Prefer: odata.maxpagesize`).
const IMPORT_PAGE_SIZE: usize = 100;

pub struct SapB1Connector {
    settings: SapB1Settings,
    username: String,
    password: String,
    session: Mutex<SessionState>,
    http: HttpRuntime,
    capabilities: Capabilities,
}

impl SapB1Connector {
    pub fn new(
        settings: Option<&Value>,
        credentials: Option<&Credentials>,
        context: &ConnectorContext,
    ) -> Result<Self, ConnectorError> {
        let settings = SapB1Settings::parse(settings, context)?;
        let credentials = required_credentials(credentials, "sap_b1", "username and password")?;
        let username = required_credential(credentials, "username", "sap_b1")?;
        let password = required_credential(credentials, "password", "sap_b1")?;
        agree_with_settings(credentials, &settings)?;
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
            capabilities: Capabilities::accounting(EXPORT_BATCH, Idempotency::LookupByReference),
            settings,
            username,
            password,
            session: Mutex::new(SessionState::default()),
            http,
        })
    }
}

/// The legacy app stored the company (as `company_db` or `database`) and the server with the
/// credentials; where they are still there they must name what settings name.
fn agree_with_settings(
    credentials: &Credentials,
    settings: &SapB1Settings,
) -> Result<(), ConnectorError> {
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
    Ok(())
}

http_connector!(SapB1Connector, IntegrationType::SapB1, debug: server, company_db);

impl SapB1Connector {
    fn payload(&self, record: &PlatformRecord) -> Result<Value, ConnectorError> {
        self.map(record)
    }

    /// Only the customer: document lines name their item by code.
    fn refers_to(&self, record: &PlatformRecord) -> Vec<Reference> {
        crate::customer_only(record)
    }

    async fn export_ops(&self, entity: Entity, ops: Vec<ExportOp>) -> Vec<ExportResult> {
        let Some(target) = target(entity) else {
            return crate::refuse_all(
                &ops,
                &ConnectorError::fatal(
                    "SAP Business One stock cannot be exported (it moves through inventory documents)",
                ),
            );
        };
        // A few at a time; the results come back in the ops' order.
        crate::in_order_concurrently(
            ops.into_iter().map(|op| self.export_one(target, op)),
            EXPORT_PARALLELISM,
        )
        .await
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::{DateTime, TimeZone, Utc};
    use serde_json::json;

    pub(crate) fn ctx() -> ConnectorContext {
        crate::test_context()
    }

    pub(crate) fn connector(extra: Value) -> SapB1Connector {
        let mut settings = json!({"server": "https://sap.example.com:50000", "company_db": "SBODEMOFR",
            "invoice_account_code": "4000"});
        if let (Some(s), Some(e)) = (settings.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        let creds =
            Credentials::from_value(json!({"username": "manager", "password": "pw"})).unwrap();
        SapB1Connector::new(Some(&settings), Some(&creds), &ctx()).unwrap()
    }

    pub(crate) fn t() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 2, 10, 0, 0).unwrap()
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
        let none = SapB1Connector::new(Some(&settings), None, &ctx()).unwrap_err();
        assert_eq!(
            none.to_string(),
            "sap_b1 credentials are missing: set username and password"
        );
    }

    #[test]
    fn debug_shows_the_account_and_no_credential() {
        assert_eq!(
            format!("{:?}", connector(json!({}))),
            r#"SapB1Connector { server: "https://sap.example.com:50000/", company_db: "SBODEMOFR", .. }"#
        );
    }
}
