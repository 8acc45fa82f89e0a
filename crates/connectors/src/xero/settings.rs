//! The settings of a Xero integration: the tenant, the API and token addresses, how an order
//! is booked, and the limits of the tenant and of the app.

use crate::rate::{RateLimits, published};
use crate::{ConnectorContext, ConnectorError};
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;
use url::Url;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderDocument {
    Quote,
    DraftInvoice,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    tenant_id: Option<String>,
    api_url: Option<String>,
    token_url: Option<String>,
    authorize_url: Option<String>,
    order_document: Option<OrderDocument>,
    sales_account_code: Option<String>,
    batch_size: Option<usize>,
    rate_limit: Option<Value>,
    app_rate_limit: Option<Value>,
    timeout_secs: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct XeroSettings {
    pub tenant_id: String,
    /// Base of `/api.xro/2.0` and `/connections`.
    pub api_url: Url,
    pub token_url: Url,
    /// Where an admin gives consent (the authorization-code grant's first leg).
    pub authorize_url: Url,
    pub order_document: OrderDocument,
    pub sales_account_code: String,
    pub batch_size: usize,
    pub limits: RateLimits,
    /// The app's allowance over all its tenants (keyed by the credentials' `client_id`).
    pub app_limits: RateLimits,
    pub timeout: Duration,
}

impl XeroSettings {
    pub fn parse(
        settings: Option<&Value>,
        context: &ConnectorContext,
    ) -> Result<Self, ConnectorError> {
        let raw: RawSettings = crate::settings::read(settings, "xero", "`tenant_id` is required")?;
        let tenant_id = raw
            .tenant_id
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| ConnectorError::fatal("xero settings need `tenant_id` (the organisation's tenant id from GET /connections)"))?;
        let api_url = crate::settings::endpoint(
            context,
            raw.api_url.as_deref(),
            "https://api.xero.com",
            "settings.api_url",
        )?;
        let token_url = crate::settings::endpoint(
            context,
            raw.token_url.as_deref(),
            "https://identity.xero.com/connect/token",
            "settings.token_url",
        )?;
        let authorize_url = crate::settings::endpoint(
            context,
            raw.authorize_url.as_deref(),
            "https://login.xero.com/identity/connect/authorize",
            "settings.authorize_url",
        )?;
        let batch_size = raw.batch_size.unwrap_or(50);
        if !(1..=100).contains(&batch_size) {
            return Err(ConnectorError::fatal(
                "settings.batch_size must be between 1 and 100",
            ));
        }
        let limits =
            RateLimits::from_setting("rate_limit", raw.rate_limit.as_ref(), published::XERO)?;
        let app_limits = RateLimits::from_setting(
            "app_rate_limit",
            raw.app_rate_limit.as_ref(),
            published::XERO_APP,
        )?;
        Ok(Self {
            tenant_id,
            api_url,
            token_url,
            authorize_url,
            order_document: raw.order_document.unwrap_or(OrderDocument::Quote),
            sales_account_code: raw.sales_account_code.unwrap_or_else(|| "200".into()),
            batch_size,
            limits,
            app_limits,
            timeout: Duration::from_secs(raw.timeout_secs.unwrap_or(30).clamp(1, 300)),
        })
    }

    pub(super) fn api(&self, path: &str) -> Url {
        crate::urls::join_path(&self.api_url, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_urls_join_the_base_with_or_without_a_path_or_a_trailing_slash() {
        let parse = |api_url: Option<&str>| {
            let mut settings = json!({"tenant_id": "t"});
            if let Some(url) = api_url {
                settings["api_url"] = json!(url);
            }
            XeroSettings::parse(Some(&settings), &ConnectorContext::default()).unwrap()
        };
        // The documented default has no path: no `//connections`.
        for (api_url, root) in [
            (None, "https://api.xero.com"),
            (Some("https://api.xero.com"), "https://api.xero.com"),
            (Some("https://api.xero.com/"), "https://api.xero.com"),
            (
                Some("https://gw.example.com/xero"),
                "https://gw.example.com/xero",
            ),
            (
                Some("https://gw.example.com/xero/"),
                "https://gw.example.com/xero",
            ),
        ] {
            let s = parse(api_url);
            assert_eq!(
                s.api("/connections").as_str(),
                format!("{root}/connections"),
                "{api_url:?}"
            );
            assert_eq!(
                s.api("/api.xro/2.0/Contacts").as_str(),
                format!("{root}/api.xro/2.0/Contacts"),
                "{api_url:?}"
            );
        }
    }
}
