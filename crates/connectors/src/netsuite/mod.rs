//! The Oracle NetSuite connector (`netsuite`), SuiteTalk REST web services. See
//! `docs/connectors/netsuite.md`.
//!
//! - Authentication, whichever the credentials hold: Token-Based Authentication (OAuth 1.0a,
//!   HMAC-SHA256, `realm` = the account id), each request signed with its own nonce; or
//!   OAuth 2.0 client credentials with a JWT assertion (PS256, the certificate id as `kid`,
//!   five minutes' expiry) minted per token request, the token reused until it nears expiry
//!   and renewed once on a `401`.
//! - Records: `inventoryItem`, `customer`, `salesOrder` are created and replaced by
//!   `externalId` upsert (`PUT /record/v1/{type}/eid:{externalId}`, `204` with the id in
//!   `Location`), which makes a repeated create harmless; updates `PATCH` by internal id
//!   (sublists replaced). An invoice is made from its order (`POST
//!   /record/v1/salesOrder/{id}/!transform/invoice`), looked up by its `externalId` first
//!   when an earlier attempt may have made it.
//! - Imports read changed ids with SuiteQL (`lastmodifieddate`, keyset pages, `hasMore`).
//! - Limits: NetSuite governs concurrency per account; [`DEFAULT_LIMITS`] takes the base
//!   tier's 5, `settings.concurrency` what the administrator allocated to us.
//!
//! Every request is sent once by the HTTP runtime and repeated here, signed anew (a TBA
//! nonce cannot be used twice).

mod client;
mod export;
mod import;
pub mod jwt;
mod mapping;
pub mod oauth1;
mod settings;

pub use settings::{DEFAULT_LIMITS, NetSuiteSettings, default_api_url};

use crate::http::{HttpOptions, HttpRuntime, Redactor};
use crate::oauth::{ClientCredentials, ClientCredentialsIssuer};
use crate::rate::RateKey;
use crate::{
    Capabilities, ConnectorContext, ConnectorError, Idempotency, Reference, required_credential,
    required_credentials,
};
use oauth1::TbaCredentials;
use passerelle_core::IntegrationType;
use passerelle_core::platform::PlatformRecord;
use passerelle_core::vault::Credentials;
use serde_json::Value;

/// Records one `export` call receives; they are sent a few at a time.
const EXPORT_BATCH: usize = 25;
/// Records per import page.
const IMPORT_PAGE_SIZE: usize = 100;

/// How the connector proves who it is.
pub(super) enum Auth {
    Tba(TbaCredentials),
    M2m(ClientCredentials),
}

pub struct NetSuiteConnector {
    settings: NetSuiteSettings,
    auth: Auth,
    http: HttpRuntime,
    capabilities: Capabilities,
}

const TBA_FIELDS: [&str; 4] = [
    "consumer_key",
    "consumer_secret",
    "token_id",
    "token_secret",
];
const M2M_FIELDS: [&str; 3] = ["client_id", "certificate_id", "private_key"];

fn auth(
    credentials: &Credentials,
    settings: &NetSuiteSettings,
) -> Result<(Auth, Vec<String>), ConnectorError> {
    let has = |field: &str| credentials.get_str(field).is_some();
    let get = |field: &str| required_credential(credentials, field, "netsuite");
    if TBA_FIELDS.iter().any(|f| has(f)) {
        let tba = TbaCredentials {
            consumer_key: get("consumer_key")?,
            consumer_secret: get("consumer_secret")?,
            token_id: get("token_id")?,
            token_secret: get("token_secret")?,
        };
        let secrets = vec![tba.consumer_secret.clone(), tba.token_secret.clone()];
        return Ok((Auth::Tba(tba), secrets));
    }
    if M2M_FIELDS.iter().any(|f| has(f)) {
        let key = get("private_key")?;
        let client = jwt::M2mClient::new(get("client_id")?, get("certificate_id")?, &key)?;
        let audience = settings.token_url();
        let audience_text = audience.to_string();
        let grant = ClientCredentials::with_assertion(
            ClientCredentialsIssuer {
                vendor: "NetSuite",
                refused_hint: "check the client id, the certificate id and that the certificate of this private key is uploaded in the integration's OAuth 2.0 Client Credentials (M2M) Setup, mapped to an entity and role with REST web services access",
                default_lifetime_secs: 3600,
            },
            audience,
            Box::new(move || client.token_form(&audience_text, chrono::Utc::now().timestamp())),
        );
        return Ok((Auth::M2m(grant), vec![key]));
    }
    Err(ConnectorError::Auth {
        message: "netsuite credentials need either consumer_key, consumer_secret, token_id and token_secret (Token-Based Authentication) or client_id, certificate_id and private_key (OAuth 2.0 client credentials)".into(),
    })
}

impl NetSuiteConnector {
    pub fn new(
        settings: Option<&Value>,
        credentials: Option<&Credentials>,
        context: &ConnectorContext,
    ) -> Result<Self, ConnectorError> {
        let settings = NetSuiteSettings::parse(settings, context)?;
        let credentials = required_credentials(
            credentials,
            "netsuite",
            "consumer_key, consumer_secret, token_id and token_secret, or client_id, certificate_id and private_key",
        )?;
        let (auth, secrets) = auth(credentials, &settings)?;
        let mut http = HttpRuntime::new(
            context,
            HttpOptions {
                request_timeout: settings.timeout,
                client: "netsuite",
                // Repeated here, signed anew: a TBA nonce is good for one request.
                max_retries: 0,
                ..HttpOptions::default()
            },
            Redactor::new(secrets),
        )?;
        if let Some(gate) = &context.rate_gate {
            let key = RateKey {
                connector: IntegrationType::NetSuite,
                account: settings.account_id.clone(),
            };
            http = http.with_fleet_gate(gate.clone(), key, settings.limits);
        }
        Ok(Self {
            capabilities: Capabilities::accounting(EXPORT_BATCH, Idempotency::LookupByReference),
            settings,
            auth,
            http,
        })
    }
}

http_connector!(NetSuiteConnector, IntegrationType::NetSuite, debug: account_id);

impl NetSuiteConnector {
    fn payload(&self, record: &PlatformRecord) -> Result<Value, ConnectorError> {
        mapping::map_record(&self.settings, record)
    }

    fn refers_to(&self, record: &PlatformRecord) -> Vec<Reference> {
        mapping::references(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn credentials_choose_tba_or_m2m_and_say_what_is_missing() {
        let ctx = crate::test_context();
        let settings = json!({"account_id": "1234567_SB1", "time_zone": "UTC"});
        let tba =
            Credentials::from_value(json!({"consumer_key": "ck", "consumer_secret": "cs-secret",
            "token_id": "tk", "token_secret": "ts-secret"}))
            .unwrap();
        let c = NetSuiteConnector::new(Some(&settings), Some(&tba), &ctx).unwrap();
        assert!(matches!(c.auth, Auth::Tba(_)));
        assert_eq!(
            format!("{c:?}"),
            r#"NetSuiteConnector { account_id: "1234567_SB1", .. }"#
        );
        let half = Credentials::from_value(json!({"consumer_key": "ck"})).unwrap();
        let e = NetSuiteConnector::new(Some(&settings), Some(&half), &ctx).unwrap_err();
        assert_eq!(e.to_string(), "netsuite credentials need `consumer_secret`");
        let m2m = Credentials::from_value(json!({"client_id": "c", "certificate_id": "k",
            "private_key": jwt::tests_key()}))
        .unwrap();
        let c = NetSuiteConnector::new(Some(&settings), Some(&m2m), &ctx).unwrap();
        assert!(matches!(c.auth, Auth::M2m(_)));
        let none = Credentials::from_value(json!({"password": "x"})).unwrap();
        assert!(
            NetSuiteConnector::new(Some(&settings), Some(&none), &ctx)
                .unwrap_err()
                .to_string()
                .contains("either consumer_key")
        );
    }
}
