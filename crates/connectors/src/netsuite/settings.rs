//! The settings of a NetSuite integration: the account, the REST host, where customers and
//! prices go, and our share of the account's concurrency.

use crate::rate::RateLimits;
use crate::{ConnectorContext, ConnectorError};
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;
use url::Url;

/// NetSuite governs concurrency per account (5 requests at once on a shared or standard
/// tier, 15 on Tier 1, plus 10 per SuiteCloud Plus license), shared by every integration of
/// the account; it publishes no per-minute quota. By default we take all 5 of the base tier
/// and pace at 20 requests a second; `settings.concurrency` and `settings.rate_limit` set
/// what the account's administrator allocated to us.
pub const DEFAULT_LIMITS: RateLimits = RateLimits {
    requests: 20,
    per: Duration::from_secs(1),
    per_day: None,
    concurrency: Some(5),
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    account_id: Option<String>,
    api_url: Option<String>,
    subsidiary_id: Option<String>,
    price_level_id: Option<String>,
    currency_id: Option<String>,
    invoice_item_id: Option<String>,
    time_zone: Option<String>,
    concurrency: Option<u32>,
    rate_limit: Option<Value>,
    timeout_secs: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct NetSuiteSettings {
    /// As NetSuite writes it in the OAuth realm: `1234567`, `1234567_SB1`.
    pub account_id: String,
    /// `https://1234567-sb1.suitetalk.api.netsuite.com` unless `api_url` says otherwise.
    pub api_url: Url,
    /// The subsidiary of exported customers (OneWorld accounts require one).
    pub subsidiary_id: Option<String>,
    /// The price level and currency of an item's price (the pricing sublist's row).
    pub price_level_id: String,
    pub currency_id: String,
    /// The item an invoice without a NetSuite order is booked on (one line for its total);
    /// without it such an invoice is refused, and invoices are made from their order.
    pub invoice_item_id: Option<String>,
    /// The integration user's time zone (*Set Preferences*): SuiteQL answers and reads
    /// timestamps in it.
    pub time_zone: chrono_tz::Tz,
    pub limits: RateLimits,
    pub timeout: Duration,
}

/// `1234567` or `1234567_SB1` (sandbox), `_RP1` (release preview), `_TD1` (test drive).
fn normalized_account(raw: &str) -> Option<String> {
    let account = raw.trim().to_ascii_uppercase().replace('-', "_");
    let (number, suffix) = match account.split_once('_') {
        Some((number, suffix)) => (number, Some(suffix)),
        None => (account.as_str(), None),
    };
    let number_ok = !number.is_empty() && number.chars().all(|c| c.is_ascii_digit());
    let suffix_ok = suffix.is_none_or(|s| {
        let letters: String = s.chars().take_while(char::is_ascii_alphabetic).collect();
        ["SB", "RP", "TD"].contains(&letters.as_str())
            && s[letters.len()..].chars().all(|c| c.is_ascii_digit())
    });
    (number_ok && suffix_ok).then_some(account)
}

/// The account's REST host: lower case, `_` as `-`.
pub fn default_api_url(account_id: &str) -> String {
    format!(
        "https://{}.suitetalk.api.netsuite.com",
        account_id.to_ascii_lowercase().replace('_', "-")
    )
}

fn id_setting(value: Option<String>, key: &str) -> Result<Option<String>, ConnectorError> {
    match value.map(|v| v.trim().to_owned()) {
        None => Ok(None),
        Some(v) if !v.is_empty() && v.chars().all(|c| c.is_ascii_digit()) => Ok(Some(v)),
        Some(v) => Err(ConnectorError::fatal(format!(
            "settings.{key} must be a NetSuite internal id (digits), not {v:?}"
        ))),
    }
}

impl NetSuiteSettings {
    pub fn parse(
        settings: Option<&Value>,
        context: &ConnectorContext,
    ) -> Result<Self, ConnectorError> {
        let raw: RawSettings =
            crate::settings::read(settings, "netsuite", "`account_id` is required")?;
        let given = raw.account_id.unwrap_or_default();
        let account_id = normalized_account(&given).ok_or_else(|| {
            ConnectorError::fatal(format!(
                "netsuite settings need `account_id`, the account id as Setup > Company > Company Information shows it (e.g. 1234567 or 1234567_SB1), not {given:?}"
            ))
        })?;
        let api_url = raw.api_url.unwrap_or_else(|| default_api_url(&account_id));
        let mut api_url = context.url_policy.check(&api_url, "settings.api_url")?;
        let path = api_url.path().trim_end_matches('/');
        let path = path
            .strip_suffix("/services/rest")
            .unwrap_or(path)
            .to_owned();
        api_url.set_path(&path);
        let concurrency = match raw.concurrency {
            Some(0) => {
                return Err(ConnectorError::fatal(
                    "settings.concurrency must be at least 1",
                ));
            }
            Some(n) => Some(n),
            None => DEFAULT_LIMITS.concurrency,
        };
        let zone = raw.time_zone.unwrap_or_default();
        let time_zone: chrono_tz::Tz = zone.trim().parse().map_err(|_| {
            ConnectorError::fatal(format!(
                "netsuite settings need `time_zone`, the integration user's time zone as Home > Set Preferences shows it, by its IANA name (e.g. America/New_York, Europe/Paris, UTC), not {zone:?}: SuiteQL answers local times in it"
            ))
        })?;
        let mut limits =
            RateLimits::from_setting("rate_limit", raw.rate_limit.as_ref(), DEFAULT_LIMITS)?;
        limits.concurrency = concurrency;
        Ok(Self {
            account_id,
            api_url,
            subsidiary_id: id_setting(raw.subsidiary_id, "subsidiary_id")?,
            price_level_id: id_setting(raw.price_level_id, "price_level_id")?
                .unwrap_or_else(|| "1".into()),
            currency_id: id_setting(raw.currency_id, "currency_id")?.unwrap_or_else(|| "1".into()),
            invoice_item_id: id_setting(raw.invoice_item_id, "invoice_item_id")?,
            time_zone,
            limits,
            timeout: Duration::from_secs(raw.timeout_secs.unwrap_or(60).clamp(1, 600)),
        })
    }

    /// `{api_url}/services/rest/{segments…}`.
    pub(super) fn rest<'a>(&self, segments: impl IntoIterator<Item = &'a str>) -> Url {
        let mut all = vec!["services", "rest"];
        all.extend(segments);
        crate::urls::join_segments(&self.api_url, all)
    }

    /// Requests of one connector in flight at once: the account's share of concurrency.
    pub(super) fn parallelism(&self) -> usize {
        self.limits
            .concurrency
            .map_or(1, |c| usize::try_from(c).unwrap_or(1))
    }

    /// The OAuth 2.0 token endpoint.
    pub(super) fn token_url(&self) -> Url {
        self.rest(["auth", "oauth2", "v1", "token"])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_account_id_is_read_as_netsuite_writes_it_and_names_its_host() {
        let ctx = crate::test_context();
        let s = NetSuiteSettings::parse(
            Some(&json!({"account_id": "1234567-sb1", "time_zone": "UTC"})),
            &ctx,
        )
        .unwrap();
        assert_eq!(s.account_id, "1234567_SB1");
        assert_eq!(
            s.rest(["record", "v1", "customer"]).as_str(),
            "https://1234567-sb1.suitetalk.api.netsuite.com/services/rest/record/v1/customer"
        );
        assert_eq!(
            s.token_url().as_str(),
            "https://1234567-sb1.suitetalk.api.netsuite.com/services/rest/auth/oauth2/v1/token"
        );
        assert_eq!(s.limits.concurrency, Some(5));
        let local = NetSuiteSettings::parse(
            Some(&json!({"account_id": "7654321", "time_zone": "Europe/Paris", "api_url": "http://127.0.0.1:9/netsuite/7654321/services/rest/", "concurrency": 15})),
            &ctx,
        )
        .unwrap();
        assert_eq!(
            local.rest(["query", "v1", "suiteql"]).as_str(),
            "http://127.0.0.1:9/netsuite/7654321/services/rest/query/v1/suiteql"
        );
        assert_eq!(local.limits.concurrency, Some(15));
        for (bad, says) in [
            (json!({}), "account_id"),
            (json!({"account_id": "acme"}), "account_id"),
            (json!({"account_id": "123_XX1"}), "account_id"),
            (
                json!({"account_id": "123", "time_zone": "UTC", "subsidiary_id": "main"}),
                "subsidiary_id",
            ),
            (
                json!({"account_id": "123", "time_zone": "UTC", "concurrency": 0}),
                "concurrency",
            ),
            (
                json!({"account_id": "123", "token_secret": "x"}),
                "looks like a secret",
            ),
            (json!({"account_id": "123"}), "`time_zone`"),
            (
                json!({"account_id": "123", "time_zone": "Mars/Olympus"}),
                "`time_zone`",
            ),
        ] {
            let e = NetSuiteSettings::parse(Some(&bad), &ctx)
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
