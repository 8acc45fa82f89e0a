//! The settings of a Dynamics 365 integration: the environment, the Entra ID tenant (or token
//! endpoint), the units and price list new rows need, page and batch sizes, and the limits.

use crate::rate::{RateLimits, published};
use crate::{ConnectorContext, ConnectorError};
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;
use url::Url;
use uuid::Uuid;

pub(super) const API_PATH: &str = "/api/data/v9.2";
/// Requests one `$batch` may hold.
const MAX_BATCH: usize = 1000;

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
        let raw: RawSettings =
            crate::settings::read(settings, "dynamics_365", "`environment_url` is required")?;
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
        let token_url = token_url(&raw, context)?;
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
    pub(super) fn api_url(&self, resource: &str) -> Url {
        let root = API_PATH.split('/').filter(|s| !s.is_empty());
        crate::urls::join_segments(&self.environment_url, root.chain([resource]))
    }
}

/// The token endpoint: `settings.token_url`, else the tenant's at Entra ID.
fn token_url(raw: &RawSettings, context: &ConnectorContext) -> Result<Url, ConnectorError> {
    match (raw.token_url.as_deref(), raw.tenant_id.as_deref()) {
        (Some(url), _) => context.url_policy.check(url, "settings.token_url"),
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
            )
        }
        (None, None) => Err(ConnectorError::fatal(
            "dynamics_365 settings need `tenant_id` (the Entra ID tenant of the app registration) or `token_url`",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dynamics::client::key_segment;
    use crate::dynamics::tests::settings;
    use serde_json::json;

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
