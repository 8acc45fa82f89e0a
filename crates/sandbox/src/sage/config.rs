//! The configuration of the Sage simulator's apps (OAuth clients, their businesses, token
//! lifetimes, limits, ledger accounts) and the counters it reports per business.

use super::fields;
use super::tokens::Lifetimes;
use crate::authorization::absolute_uri;
use axum::http::HeaderValue;
use chrono::TimeDelta;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The default sales ledger account's id (nominal code 4000).
pub const DEFAULT_SALES_LEDGER_ACCOUNT: &str = "9a994ff1ba8a11e7a2e5b8e8563f4000";
/// The default purchase ledger account's id (nominal code 5000).
pub const DEFAULT_PURCHASE_LEDGER_ACCOUNT: &str = "9a994ff1ba8a11e7a2e5b8e8563f5000";

const fn default_access_token_ttl() -> u64 {
    5 * 60
}

const fn default_refresh_token_ttl() -> u64 {
    31 * 24 * 60 * 60
}

const fn default_authorization_code_ttl() -> u64 {
    60
}

fn default_ledger_accounts() -> Vec<SageLedgerAccount> {
    vec![
        SageLedgerAccount {
            id: DEFAULT_SALES_LEDGER_ACCOUNT.into(),
            name: "Sales Type A".into(),
            kind: "SALES".into(),
            nominal_code: Some(4000),
        },
        SageLedgerAccount {
            id: DEFAULT_PURCHASE_LEDGER_ACCOUNT.into(),
            name: "Cost of sales - goods".into(),
            kind: "PURCHASE".into(),
            nominal_code: Some(5000),
        },
    ]
}

/// An OAuth 2 app (client id and secret), the businesses its user reaches, and how its
/// tokens and limits behave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SageAppConfig {
    pub client_id: String,
    pub client_secret: String,
    /// Registered callback URLs, compared exactly. With none, the app cannot be authorized.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// The businesses the user reaches, the lead business first; created on first mention.
    #[serde(default)]
    pub businesses: Vec<SageBusiness>,
    /// A consent already given (full access), for tests that skip the browser.
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// Access token lifetime (Sage: 5 minutes).
    #[serde(default = "default_access_token_ttl")]
    pub access_token_ttl_secs: u64,
    /// Refresh token lifetime from issue (Sage: 31 days).
    #[serde(default = "default_refresh_token_ttl")]
    pub refresh_token_ttl_secs: u64,
    /// How long a code may wait to be exchanged (Sage: 60 seconds).
    #[serde(default = "default_authorization_code_ttl")]
    pub authorization_code_ttl_secs: u64,
    /// The (simulated) user refuses consent: `error=access_denied`.
    #[serde(default)]
    pub deny_consent: bool,
    #[serde(default)]
    pub limits: SageLimits,
    /// Ledger accounts every business of the app holds (default: a sales account 4000 and a
    /// purchase account 5000).
    #[serde(default = "default_ledger_accounts")]
    pub ledger_accounts: Vec<SageLedgerAccount>,
}

impl SageAppConfig {
    /// An app with Sage's defaults reaching one business, with no consent yet.
    pub fn new(
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        business_id: impl Into<String>,
    ) -> Self {
        Self {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            redirect_uris: Vec::new(),
            businesses: vec![SageBusiness::new(business_id)],
            refresh_token: None,
            access_token_ttl_secs: default_access_token_ttl(),
            refresh_token_ttl_secs: default_refresh_token_ttl(),
            authorization_code_ttl_secs: default_authorization_code_ttl(),
            deny_consent: false,
            limits: SageLimits::default(),
            ledger_accounts: default_ledger_accounts(),
        }
    }

    pub(super) fn lifetimes(&self) -> Lifetimes {
        Lifetimes {
            access: secs(self.access_token_ttl_secs),
            refresh: secs(self.refresh_token_ttl_secs),
        }
    }

    pub(super) fn authorization_code_ttl(&self) -> TimeDelta {
        secs(self.authorization_code_ttl_secs)
    }

    pub(super) fn check(&self) -> Result<(), String> {
        if !visible_ascii(&self.client_id) || !visible_ascii(&self.client_secret) {
            return Err("client_id and client_secret must be non-empty visible ASCII".into());
        }
        for business in &self.businesses {
            if !fields::is_hex32(&business.id) {
                return Err(format!(
                    "business id {:?} is not 32 hex digits",
                    business.id
                ));
            }
        }
        if self
            .refresh_token
            .as_deref()
            .is_some_and(|t| !visible_ascii(t))
        {
            return Err("refresh_token must be non-empty visible ASCII".into());
        }
        if self.access_token_ttl_secs == 0 || self.authorization_code_ttl_secs == 0 {
            return Err("token and code lifetimes must be at least 1 s".into());
        }
        for uri in &self.redirect_uris {
            absolute_uri(uri)?;
        }
        for account in &self.ledger_accounts {
            if !fields::is_hex32(&account.id)
                || !["SALES", "PURCHASE"].contains(&account.kind.as_str())
            {
                return Err(format!(
                    "ledger account {:?}: the id must be 32 hex digits, the kind SALES or PURCHASE",
                    account.id
                ));
            }
        }
        self.limits.check()
    }
}

fn secs(s: u64) -> TimeDelta {
    TimeDelta::seconds(i64::try_from(s).unwrap_or(i64::MAX / 1000))
}

fn visible_ascii(text: &str) -> bool {
    !text.is_empty() && HeaderValue::from_str(text).is_ok() && !text.contains(' ')
}

/// A business (a company file): a 32-hex id and a name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SageBusiness {
    pub id: String,
    #[serde(default)]
    pub name: String,
}

impl SageBusiness {
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            name: String::new(),
        }
    }
}

/// A ledger account seeded in every business of the app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SageLedgerAccount {
    pub id: String,
    pub name: String,
    /// `SALES` or `PURCHASE` (its `ledger_account_type`).
    pub kind: String,
    #[serde(default)]
    pub nominal_code: Option<u32>,
}

/// The limits per business. `None` (JSON `null`) lifts one; windows are configurable so a
/// test can compress a minute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SageLimits {
    /// Calls per minute window (Sage's v3.0 docs: 200 in any 60 s per business).
    pub per_minute: Option<u32>,
    /// Calls per day window (none published for v3.1; third parties say 2,500).
    pub per_day: Option<u32>,
    pub minute_window_ms: u64,
    pub day_window_ms: u64,
}

impl Default for SageLimits {
    fn default() -> Self {
        Self {
            per_minute: Some(200),
            per_day: None,
            minute_window_ms: 60_000,
            day_window_ms: 86_400_000,
        }
    }
}

impl SageLimits {
    /// No limit at all, for throughput benchmarks.
    pub fn unlimited() -> Self {
        Self {
            per_minute: None,
            per_day: None,
            ..Self::default()
        }
    }

    fn check(&self) -> Result<(), String> {
        if self.per_minute == Some(0) || self.per_day == Some(0) {
            return Err("limits must be at least 1 (null lifts them)".into());
        }
        if self.minute_window_ms == 0 || self.day_window_ms == 0 {
            return Err("limit windows must be at least 1 ms".into());
        }
        Ok(())
    }
}

/// What one business was asked to do. The per-resource maps list every creatable resource
/// (`contacts`, `stock_items`, `stock_movements`, `sales_quotes`, `sales_estimates`,
/// `sales_invoices`), with 0 when untouched.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SageStats {
    /// API calls that reached the business (authenticated, business reached), refused ones
    /// too.
    pub requests: u64,
    /// Successful refreshes by the apps reaching this business.
    pub token_refreshes: u64,
    /// Refreshes refused with `invalid_grant` or `invalid_client`.
    pub rejected_refreshes: u64,
    /// Refresh tokens presented again after they were used: what a client must never do.
    pub reused_refresh_tokens: u64,
    /// Authorization codes issued, authorization requests refused, codes exchanged.
    pub authorizations: u64,
    pub refused_authorizations: u64,
    pub code_exchanges: u64,
    /// Resource → records created through the API (seeds not counted).
    pub creates: BTreeMap<String, u64>,
    /// `resource:reference` (the item code for stock items) → records created through the
    /// API with it; above 1 is a record created twice.
    pub creates_by_reference: BTreeMap<String, u64>,
    /// Resource → records changed through the API.
    pub updates: BTreeMap<String, u64>,
    /// Resource → live records.
    pub records: BTreeMap<String, u64>,
    /// Creates answered again from an `idempotency_id`.
    pub replays: u64,
    /// Resource → references held by more than one live record (should stay empty).
    pub duplicate_references: BTreeMap<String, Vec<String>>,
    /// 429s sent.
    pub rate_limited: u64,
    /// Calls received while told (by `Retry-After`) to wait.
    pub violations: u64,
    /// Most calls accepted in one minute window.
    pub max_requests_in_window: u64,
}
