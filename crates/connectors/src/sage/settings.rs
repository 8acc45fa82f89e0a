//! The settings of a Sage Business Cloud Accounting integration: the business, the ledger
//! accounts items and lines are booked on, what an order becomes, and the endpoints.

use crate::rate::RateLimits;
use crate::{ConnectorContext, ConnectorError};
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;
use url::Url;

/// Sage documents (for v3.0, the last published figure) 200 calls in any 60 seconds per
/// business; we stay within it fleet-wide, four requests at once.
pub const DEFAULT_LIMITS: RateLimits = RateLimits {
    requests: 200,
    per: Duration::from_secs(60),
    per_day: None,
    concurrency: Some(4),
};

const API_URL: &str = "https://api.accounting.sage.com/v3.1";
const TOKEN_URL: &str = "https://oauth.accounting.sage.com/token";
const AUTHORIZE_URL: &str = "https://www.sageone.com/oauth2/auth/central?filter=apiv3.1";

/// What a platform order becomes: v3.1 has no sales orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderDocument {
    SalesQuote,
    SalesEstimate,
}

impl OrderDocument {
    /// The resource (`sales_quotes`), its namespace (`sales_quote`) and its lines' key.
    pub fn names(self) -> (&'static str, &'static str, &'static str) {
        match self {
            OrderDocument::SalesQuote => ("sales_quotes", "sales_quote", "quote_lines"),
            OrderDocument::SalesEstimate => ("sales_estimates", "sales_estimate", "estimate_lines"),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    business_id: Option<String>,
    sales_ledger_account_id: Option<String>,
    purchase_ledger_account_id: Option<String>,
    order_document: Option<OrderDocument>,
    quote_validity_days: Option<u32>,
    tax_rate_id: Option<String>,
    customer_ref_prefix: Option<String>,
    warehouse_code: Option<String>,
    api_url: Option<String>,
    token_url: Option<String>,
    authorize_url: Option<String>,
    rate_limit: Option<Value>,
    timeout_secs: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct SageSettings {
    /// `X-Business` on every request.
    pub business_id: String,
    /// The sales ledger account of stock items and of every quote and invoice line.
    pub sales_ledger_account_id: String,
    /// The purchase ledger account of stock items (Sage requires one).
    pub purchase_ledger_account_id: String,
    pub order_document: OrderDocument,
    /// A quote's `expiry_date` is its date plus this many days (Sage requires one).
    pub quote_validity_days: u32,
    /// The tax rate of lines; Sage's default for the ledger account when unset.
    pub tax_rate_id: Option<String>,
    /// A customer's contact `reference` is this prefix and our customer id (default `P`).
    pub customer_ref_prefix: String,
    /// Sage keeps one stock level per item: it is imported under this warehouse code.
    pub warehouse_code: String,
    pub api_url: Url,
    pub token_url: Url,
    pub authorize_url: Url,
    pub limits: RateLimits,
    pub timeout: Duration,
}

/// Sage's ids are 32 hexadecimal characters.
fn sage_id(value: Option<String>, key: &str, what: &str) -> Result<String, ConnectorError> {
    let value = value.map(|v| v.trim().to_owned()).unwrap_or_default();
    if value.len() == 32 && value.chars().all(|c| c.is_ascii_hexdigit()) {
        return Ok(value);
    }
    Err(ConnectorError::fatal(format!(
        "sage settings need `{key}`, {what} (32 hexadecimal characters){}",
        if value.is_empty() {
            String::new()
        } else {
            format!(", not {value:?}")
        }
    )))
}

impl SageSettings {
    pub fn parse(
        settings: Option<&Value>,
        context: &ConnectorContext,
    ) -> Result<Self, ConnectorError> {
        let raw: RawSettings = crate::settings::read(
            settings,
            "sage",
            "`business_id`, `sales_ledger_account_id` and `purchase_ledger_account_id` are required",
        )?;
        let endpoint =
            |raw: Option<&str>, default, key| crate::settings::endpoint(context, raw, default, key);
        let prefix = raw.customer_ref_prefix.unwrap_or_else(|| "P".into());
        if prefix.chars().count() > 4 {
            return Err(ConnectorError::fatal(
                "settings.customer_ref_prefix must be at most 4 characters (a contact reference is short)",
            ));
        }
        let validity = raw.quote_validity_days.unwrap_or(30);
        if validity == 0 {
            return Err(ConnectorError::fatal(
                "settings.quote_validity_days must be at least 1",
            ));
        }
        Ok(Self {
            business_id: sage_id(
                raw.business_id,
                "business_id",
                "the business (GET /businesses lists them)",
            )?,
            sales_ledger_account_id: sage_id(
                raw.sales_ledger_account_id,
                "sales_ledger_account_id",
                "the sales ledger account (GET /ledger_accounts)",
            )?,
            purchase_ledger_account_id: sage_id(
                raw.purchase_ledger_account_id,
                "purchase_ledger_account_id",
                "the purchase ledger account of stock items",
            )?,
            order_document: raw.order_document.unwrap_or(OrderDocument::SalesQuote),
            quote_validity_days: validity,
            tax_rate_id: raw.tax_rate_id.filter(|t| !t.trim().is_empty()),
            customer_ref_prefix: prefix,
            warehouse_code: raw
                .warehouse_code
                .filter(|w| !w.trim().is_empty())
                .unwrap_or_else(|| "SAGE".into()),
            api_url: endpoint(raw.api_url.as_deref(), API_URL, "settings.api_url")?,
            token_url: endpoint(raw.token_url.as_deref(), TOKEN_URL, "settings.token_url")?,
            authorize_url: endpoint(
                raw.authorize_url.as_deref(),
                AUTHORIZE_URL,
                "settings.authorize_url",
            )?,
            limits: RateLimits::from_setting(
                "rate_limit",
                raw.rate_limit.as_ref(),
                DEFAULT_LIMITS,
            )?,
            timeout: Duration::from_secs(raw.timeout_secs.unwrap_or(60).clamp(1, 600)),
        })
    }

    /// `{api_url}/{resource}[/{id}]`.
    pub(super) fn resource(&self, resource: &str, id: Option<&str>) -> Url {
        let mut segments = vec![resource];
        segments.extend(id);
        crate::urls::join_segments(&self.api_url, segments)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn settings_need_the_business_and_ledger_accounts() {
        let ctx = crate::test_context();
        let ok = SageSettings::parse(
            Some(&json!({"business_id": ID, "sales_ledger_account_id": ID, "purchase_ledger_account_id": ID})),
            &ctx,
        )
        .unwrap();
        assert_eq!(
            ok.resource("sales_invoices", Some("abc")).as_str(),
            "https://api.accounting.sage.com/v3.1/sales_invoices/abc"
        );
        assert_eq!(ok.order_document, OrderDocument::SalesQuote);
        assert!(ok.authorize_url.as_str().contains("filter=apiv3.1"));
        for (bad, says) in [
            (
                json!({"sales_ledger_account_id": ID, "purchase_ledger_account_id": ID}),
                "`business_id`",
            ),
            (
                json!({"business_id": "x", "sales_ledger_account_id": ID, "purchase_ledger_account_id": ID}),
                "not \"x\"",
            ),
            (
                json!({"business_id": ID, "purchase_ledger_account_id": ID}),
                "`sales_ledger_account_id`",
            ),
            (
                json!({"business_id": ID, "sales_ledger_account_id": ID, "purchase_ledger_account_id": ID, "order_document": "sales_order"}),
                "unknown variant",
            ),
            (
                json!({"business_id": ID, "sales_ledger_account_id": ID, "purchase_ledger_account_id": ID, "refresh_token": "x"}),
                "looks like a secret",
            ),
        ] {
            let e = SageSettings::parse(Some(&bad), &ctx)
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
