//! The settings of a QuickBooks Online integration: the company (realm), the API and token
//! addresses, how orders and invoices are booked, and the realm's limits.

use crate::rate::{RateLimits, published};
use crate::{ConnectorContext, ConnectorError};
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;
use url::Url;

/// Intuit's advice after a 429: wait 60 s.
const DEFAULT_THROTTLE_WAIT_SECS: u64 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderDocument {
    Estimate,
    Invoice,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    realm_id: Option<String>,
    api_url: Option<String>,
    token_url: Option<String>,
    authorize_url: Option<String>,
    order_document: Option<OrderDocument>,
    income_account_id: Option<String>,
    invoice_item_id: Option<String>,
    batch_size: Option<usize>,
    rate_limit: Option<Value>,
    batch_rate_limit: Option<Value>,
    throttle_wait_secs: Option<u64>,
    timeout_secs: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct QuickBooksSettings {
    pub realm_id: String,
    /// Base of `/v3/company/{realm}`.
    pub api_url: Url,
    pub token_url: Url,
    /// Where an admin gives consent (the authorization-code grant's first leg).
    pub authorize_url: Url,
    pub order_document: OrderDocument,
    /// The income account new items book their sales on (QuickBooks requires one).
    pub income_account_id: Option<String>,
    /// The item an invoice's single line is booked on (else QuickBooks' "Services" item).
    pub invoice_item_id: Option<String>,
    pub batch_size: usize,
    pub limits: RateLimits,
    pub batch_limits: RateLimits,
    /// How long to stay away after a 429 (Intuit sends no `Retry-After`).
    pub throttle_wait: Duration,
    pub timeout: Duration,
}

/// The company id, digits only.
fn realm_id(raw: Option<String>) -> Result<String, ConnectorError> {
    let realm_id = raw
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            ConnectorError::fatal(
                "quickbooks settings need `realm_id` (the company id Intuit returns on the OAuth redirect)",
            )
        })?;
    if !realm_id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ConnectorError::fatal(format!(
            "settings.realm_id `{realm_id}` is not a QuickBooks company id (digits only)"
        )));
    }
    Ok(realm_id)
}

impl QuickBooksSettings {
    pub fn parse(
        settings: Option<&Value>,
        context: &ConnectorContext,
    ) -> Result<Self, ConnectorError> {
        let raw: RawSettings =
            crate::settings::read(settings, "quickbooks", "`realm_id` is required")?;
        let realm_id = realm_id(raw.realm_id)?;
        let api_url = crate::settings::endpoint(
            context,
            raw.api_url.as_deref(),
            "https://quickbooks.api.intuit.com",
            "settings.api_url",
        )?;
        let token_url = crate::settings::endpoint(
            context,
            raw.token_url.as_deref(),
            "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer",
            "settings.token_url",
        )?;
        let authorize_url = crate::settings::endpoint(
            context,
            raw.authorize_url.as_deref(),
            "https://appcenter.intuit.com/connect/oauth2",
            "settings.authorize_url",
        )?;
        let batch_size = raw.batch_size.unwrap_or(30);
        if !(1..=30).contains(&batch_size) {
            return Err(ConnectorError::fatal(
                "settings.batch_size must be between 1 and 30 (QuickBooks' batch maximum)",
            ));
        }
        for (name, id) in [
            ("income_account_id", &raw.income_account_id),
            ("invoice_item_id", &raw.invoice_item_id),
        ] {
            if let Some(id) = id
                && (id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()))
            {
                return Err(ConnectorError::fatal(format!(
                    "settings.{name} `{id}` is not a QuickBooks id (digits only)"
                )));
            }
        }
        Ok(Self {
            realm_id,
            api_url,
            token_url,
            authorize_url,
            order_document: raw.order_document.unwrap_or(OrderDocument::Estimate),
            income_account_id: raw.income_account_id,
            invoice_item_id: raw.invoice_item_id,
            batch_size,
            limits: RateLimits::from_setting(
                "rate_limit",
                raw.rate_limit.as_ref(),
                published::QUICKBOOKS,
            )?,
            batch_limits: RateLimits::from_setting(
                "batch_rate_limit",
                raw.batch_rate_limit.as_ref(),
                published::QUICKBOOKS_BATCH,
            )?,
            throttle_wait: Duration::from_secs(
                raw.throttle_wait_secs
                    .unwrap_or(DEFAULT_THROTTLE_WAIT_SECS)
                    .clamp(1, 3600),
            ),
            timeout: Duration::from_secs(raw.timeout_secs.unwrap_or(30).clamp(1, 300)),
        })
    }

    /// `{api_url}/v3/company/{realm_id}{path}`.
    pub(super) fn company(&self, path: &str) -> Url {
        let company =
            crate::urls::join_segments(&self.api_url, ["v3", "company", self.realm_id.as_str()]);
        crate::urls::join_path(&company, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quickbooks::tests::settings;
    use serde_json::json;

    #[test]
    fn settings_refuse_secrets_bad_realms_and_oversized_batches() {
        let ctx = ConnectorContext::default();
        let err = |v: Value| {
            QuickBooksSettings::parse(Some(&v), &ctx)
                .unwrap_err()
                .to_string()
        };
        assert!(err(json!({"realm_id": "1", "refresh_token": "x"})).contains("secret"));
        assert!(err(json!({})).contains("realm_id"));
        assert!(err(json!({"realm_id": "abc"})).contains("digits"));
        assert!(err(json!({"realm_id": "1", "batch_size": 31})).contains("30"));
        assert!(err(json!({"realm_id": "1", "api_url": "http://127.0.0.1:1"})).contains("http"));
        let s = settings(json!({"rate_limit": {"requests": 100}}));
        assert_eq!((s.limits.requests, s.batch_limits.requests), (100, 40));
        assert_eq!(s.order_document, OrderDocument::Estimate);
        assert_eq!(
            s.company("/batch").as_str(),
            "https://quickbooks.api.intuit.com/v3/company/9130357766900456/batch"
        );
    }

    #[test]
    fn request_urls_join_the_base_with_or_without_a_path_or_a_trailing_slash() {
        for (api_url, root) in [
            (None, "https://quickbooks.api.intuit.com"),
            (
                Some("https://sandbox-quickbooks.api.intuit.com"),
                "https://sandbox-quickbooks.api.intuit.com",
            ),
            (
                Some("https://sandbox-quickbooks.api.intuit.com/"),
                "https://sandbox-quickbooks.api.intuit.com",
            ),
            (
                Some("https://gw.example.com/qbo"),
                "https://gw.example.com/qbo",
            ),
            (
                Some("https://gw.example.com/qbo/"),
                "https://gw.example.com/qbo",
            ),
        ] {
            let s = settings(api_url.map_or(json!({}), |u| json!({ "api_url": u })));
            assert_eq!(
                s.company("/query").as_str(),
                format!("{root}/v3/company/9130357766900456/query"),
                "{api_url:?}"
            );
            assert_eq!(
                s.company("/invoice/42").as_str(),
                format!("{root}/v3/company/9130357766900456/invoice/42"),
                "{api_url:?}"
            );
        }
    }
}
