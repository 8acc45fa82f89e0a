//! The settings of an Odoo integration: the server, the database, the protocol it speaks,
//! our reference prefix for customers, and our own limit.

use crate::rate::RateLimits;
use crate::{ConnectorContext, ConnectorError};
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;
use url::Url;

/// Our self-imposed limit per database: Odoo publishes none (self-hosted servers serve their
/// own users with a few workers; odoo.sh and Odoo Online throttle in front). 10 requests a
/// second and 4 at once; `settings.rate_limit` overrides it.
pub const DEFAULT_LIMITS: RateLimits = RateLimits {
    requests: 10,
    per: Duration::from_secs(1),
    per_day: None,
    concurrency: Some(4),
};

/// How the connector talks to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// `/xmlrpc/2/common` `authenticate`, then `/xmlrpc/2/object` `execute_kw`: Odoo up to
    /// 18 (deprecated in 19, removed in 22).
    Xmlrpc,
    /// `POST /json/2/<model>/<method>` with a bearer API key: Odoo 19 and later.
    Json2,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Xmlrpc => "xmlrpc",
            Protocol::Json2 => "json2",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    url: Option<String>,
    database: Option<String>,
    protocol: Option<Protocol>,
    customer_ref_prefix: Option<String>,
    rate_limit: Option<Value>,
    timeout_secs: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct OdooSettings {
    /// The server's address (`https://mycompany.odoo.com`), without `/xmlrpc` or `/json`.
    pub url: Url,
    /// The database: in every XML-RPC call, and as `X-Odoo-Database` over JSON-2.
    pub database: String,
    pub protocol: Protocol,
    /// A customer's `ref` is this prefix and our customer id (default `PLT-`).
    pub customer_ref_prefix: String,
    pub limits: RateLimits,
    pub timeout: Duration,
}

impl OdooSettings {
    pub fn parse(
        settings: Option<&Value>,
        context: &ConnectorContext,
    ) -> Result<Self, ConnectorError> {
        let raw: RawSettings = crate::settings::read(
            settings,
            "odoo",
            "`url`, `database` and `protocol` are required",
        )?;
        let url = raw.url.filter(|s| !s.trim().is_empty()).ok_or_else(|| {
            ConnectorError::fatal(
                "odoo settings need `url`, the server's address (e.g. https://mycompany.odoo.com)",
            )
        })?;
        let mut url = context.url_policy.check(&url, "settings.url")?;
        // Accept the address with an endpoint pasted after it.
        let path = url.path().trim_end_matches('/');
        let path = ["/xmlrpc/2", "/xmlrpc", "/json/2", "/jsonrpc"]
            .iter()
            .find_map(|suffix| path.strip_suffix(suffix))
            .unwrap_or(path)
            .to_owned();
        url.set_path(&path);
        let database = raw
            .database
            .map(|d| d.trim().to_owned())
            .filter(|d| !d.is_empty())
            .ok_or_else(|| {
                ConnectorError::fatal(
                    "odoo settings need `database`, the Odoo database name (shown at /web/database/selector, or the subdomain on Odoo Online)",
                )
            })?;
        let protocol = raw.protocol.ok_or_else(|| {
            ConnectorError::fatal(
                "odoo settings need `protocol`: `xmlrpc` for Odoo 18 and earlier, `json2` for Odoo 19 and later (where XML-RPC is deprecated)",
            )
        })?;
        let customer_ref_prefix = raw.customer_ref_prefix.unwrap_or_else(|| "PLT-".into());
        if customer_ref_prefix.chars().count() > 20 {
            return Err(ConnectorError::fatal(
                "settings.customer_ref_prefix must be at most 20 characters",
            ));
        }
        Ok(Self {
            url,
            database,
            protocol,
            customer_ref_prefix,
            limits: RateLimits::from_setting(
                "rate_limit",
                raw.rate_limit.as_ref(),
                DEFAULT_LIMITS,
            )?,
            timeout: Duration::from_secs(raw.timeout_secs.unwrap_or(60).clamp(1, 600)),
        })
    }

    /// `{url}/{segments…}`.
    pub(super) fn endpoint<'a>(&self, segments: impl IntoIterator<Item = &'a str>) -> Url {
        crate::urls::join_segments(&self.url, segments)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn settings_need_url_database_and_protocol_and_refuse_secrets_and_typos() {
        let ctx = crate::test_context();
        let ok = OdooSettings::parse(
            Some(&json!({"url": "https://acme.odoo.com/xmlrpc/2/", "database": "acme", "protocol": "xmlrpc"})),
            &ctx,
        )
        .unwrap();
        assert_eq!(ok.url.as_str(), "https://acme.odoo.com/");
        assert_eq!(
            ok.endpoint(["xmlrpc", "2", "object"]).as_str(),
            "https://acme.odoo.com/xmlrpc/2/object"
        );
        assert_eq!(ok.customer_ref_prefix, "PLT-");
        let under_path = OdooSettings::parse(
            Some(&json!({"url": "http://127.0.0.1:1/odoo", "database": "d", "protocol": "json2"})),
            &ctx,
        )
        .unwrap();
        assert_eq!(
            under_path
                .endpoint(["json", "2", "res.partner", "create"])
                .as_str(),
            "http://127.0.0.1:1/odoo/json/2/res.partner/create"
        );
        for (bad, says) in [
            (json!({"database": "d", "protocol": "xmlrpc"}), "`url`"),
            (
                json!({"url": "https://a.example", "protocol": "xmlrpc"}),
                "`database`",
            ),
            (
                json!({"url": "https://a.example", "database": "d"}),
                "`protocol`",
            ),
            (
                json!({"url": "https://a.example", "database": "d", "protocol": "jsonrpc"}),
                "unknown variant",
            ),
            (
                json!({"url": "https://a.example", "database": "d", "protocol": "json2", "api_key": "x"}),
                "looks like a secret",
            ),
            (
                json!({"url": "https://a.example", "database": "d", "protocol": "json2", "databse": "x"}),
                "unknown field",
            ),
        ] {
            let e = OdooSettings::parse(Some(&bad), &ctx)
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
