//! Simulator of the Xero Accounting API for what an integration syncing a wholesale
//! platform uses: OAuth 2 (the authorization code with PKCE, refresh tokens that rotate with
//! a grace period, access tokens that expire, client credentials for custom connections,
//! `/connections`), Contacts, Items (with stock), Invoices and Quotes in Xero's envelopes and
//! MS-JSON dates, batch writes with `summarizeErrors`, `Idempotency-Key` replay,
//! `If-Modified-Since` and paged imports, and Xero's per-tenant limits (per minute, per day,
//! in flight, per app) with `429`, `Retry-After` and `X-Rate-Limit-Problem`.
//!
//! It owns the apps (OAuth clients and their grants) and the tenants (organisations and their
//! records), and counts what each tenant was asked to do, so tests can prove "created exactly
//! once" and "never over the limit". Paths, field names and enums follow the official
//! OpenAPI documents (`xero_accounting.yaml`, `xero-identity.yaml`). It must stay strict:
//! what Xero refuses, it refuses.
//!
//! Served under `/xero` (see [`crate::sandbox_router`]): the authorization endpoint at
//! `/xero/identity/connect/authorize`, the token endpoint at `/xero/identity/connect/token`,
//! the API at `/xero/api.xro/2.0/…`, `/xero/connections`, and loopback admin endpoints under
//! `/xero/_sandbox/…`. [`XeroSim`] is the in-process handle tests and the demo use.
//!
//! # Authorization code with PKCE
//!
//! `GET /xero/identity/connect/authorize` is login.xero.com's path. Its query:
//! `response_type=code`, `client_id`, `redirect_uri` (one of the app's
//! [`XeroAppConfig::redirect_uris`], compared exactly), `scope` (space-separated; the
//! Accounting API's scopes, `openid`, `profile`, `email` and `offline_access`), `state`,
//! `code_challenge` and `code_challenge_method=S256` (PKCE is required). There is no user:
//! consent is given at once for every tenant of the app, unless
//! [`XeroAppConfig::deny_consent`] is set.
//!
//! - Unknown `client_id`, or a missing, relative, repeated or unregistered `redirect_uri`:
//!   `400` and an HTML error page naming the error; no redirect.
//! - Otherwise `302` to the redirect URI. Granted: `code`, `scope` (as consented),
//!   `session_state` and `state`. Refused (RFC 6749 §4.1.2.1): `error`, `error_description`
//!   and `state`; `error` is `unsupported_response_type`, `invalid_request` (a missing or
//!   repeated parameter, PKCE missing or not `S256`, no `scope`), `invalid_scope` (a scope
//!   Xero's Accounting API does not have), `unauthorized_client` (a custom connection) or
//!   `access_denied` (consent denied; no description).
//!
//! The code is single-use and lives [`XeroAppConfig::authorization_code_ttl_secs`] (5
//! minutes); it is bound to the client, the exact redirect URI, the challenge, and the app's
//! tenants at the time of consent. `POST /xero/identity/connect/token` with
//! `grant_type=authorization_code`, `code`, `redirect_uri` and `code_verifier` (client
//! authenticated as for a refresh) answers what a refresh answers, with `scope` as
//! consented, and a `refresh_token` only when the scope has `offline_access`, as Xero does.
//! No `id_token` is issued. The tokens are a new grant (a new `authEventId` on
//! `/connections`). A code presented once is spent, even when the exchange fails: unknown,
//! expired, reused, another client's, another redirect URI's, or a verifier whose
//! BASE64URL(SHA256) is not the challenge all answer `400 {"error":"invalid_grant"}`; a
//! missing `code` or `redirect_uri` answers `invalid_request`.

mod consent;
mod dates;
mod http;
mod limits;
mod model;
mod oauth;
mod query;
mod received;
mod store;

pub use crate::faults::Fault;
pub use received::ReceivedRequest;

use crate::SandboxError;
use crate::authorization::{CodeStore, absolute_uri};
use crate::faults::{FaultQueue, Interrupt};
use crate::idempotency::{Fingerprinter, IdempotencyStore, KeyOwner};
use axum::http::HeaderValue;
use chrono::{DateTime, TimeDelta, Utc};
use limits::{AppGate, GateStats, TenantGate};
use oauth::{Lifetimes, TokenStore};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use store::{Kind, Stored, TenantData};
use uuid::Uuid;

pub(crate) use http::routes;

/// Scopes granted when an app's config names none: what a sync of contacts, items,
/// invoices and quotes needs, plus `offline_access` for refresh tokens.
pub const DEFAULT_SCOPES: &str =
    "offline_access accounting.transactions accounting.contacts accounting.settings";

fn default_app_name() -> String {
    "Passerelle Sandbox".to_owned()
}

fn default_scopes() -> String {
    DEFAULT_SCOPES.to_owned()
}

const fn default_access_token_ttl() -> u64 {
    30 * 60
}

const fn default_refresh_grace() -> u64 {
    30 * 60
}

const fn default_refresh_token_ttl() -> u64 {
    60 * 24 * 60 * 60
}

const fn default_idempotency_window() -> u64 {
    6 * 60
}

const fn default_authorization_code_ttl() -> u64 {
    5 * 60
}

/// An OAuth 2 app (a Xero "app": client id and secret) and the tenants it is connected to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XeroAppConfig {
    pub client_id: String,
    pub client_secret: String,
    /// The app's name, answered as `ProviderName` in every envelope.
    #[serde(default = "default_app_name")]
    pub name: String,
    /// Tenants (organisations) the app is connected to; created on first mention.
    #[serde(default)]
    pub tenants: Vec<XeroTenant>,
    /// A refresh token a user's consent produced, covering `tenants`. Provisioning the app
    /// again with another token adds another consent (another token chain).
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// A custom connection: `grant_type=client_credentials` is allowed (and no refresh token
    /// exists). Xero links a custom connection to exactly one tenant.
    #[serde(default)]
    pub custom_connection: bool,
    /// Access token lifetime (Xero: 30 minutes).
    #[serde(default = "default_access_token_ttl")]
    pub access_token_ttl_secs: u64,
    /// How long a replaced refresh token still works (Xero: 30 minutes).
    #[serde(default = "default_refresh_grace")]
    pub refresh_grace_secs: u64,
    /// How long an unused refresh token lives (Xero: 60 days).
    #[serde(default = "default_refresh_token_ttl")]
    pub refresh_token_ttl_secs: u64,
    /// How long an `Idempotency-Key`'s answer is replayed (Xero: minutes).
    #[serde(default = "default_idempotency_window")]
    pub idempotency_window_secs: u64,
    #[serde(default)]
    pub limits: XeroLimits,
    /// Space-separated, answered as `scope` by the token endpoint for the provisioned and
    /// client-credentials grants (a grant from an authorization code answers its own).
    #[serde(default = "default_scopes")]
    pub scopes: String,
    /// The redirect URIs registered for the app: the authorization endpoint redirects to no
    /// other (compared exactly, as Xero does). With none, the app cannot be authorized.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// The (simulated) user refuses consent: the authorization endpoint redirects with
    /// `error=access_denied`.
    #[serde(default)]
    pub deny_consent: bool,
    /// How long an authorization code may wait to be exchanged (Xero: 5 minutes).
    #[serde(default = "default_authorization_code_ttl")]
    pub authorization_code_ttl_secs: u64,
}

impl XeroAppConfig {
    /// An app with Xero's defaults, connected to one tenant, with no refresh token yet.
    pub fn new(
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        tenant_id: impl Into<String>,
    ) -> Self {
        Self {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            name: default_app_name(),
            tenants: vec![XeroTenant::new(tenant_id)],
            refresh_token: None,
            custom_connection: false,
            access_token_ttl_secs: default_access_token_ttl(),
            refresh_grace_secs: default_refresh_grace(),
            refresh_token_ttl_secs: default_refresh_token_ttl(),
            idempotency_window_secs: default_idempotency_window(),
            limits: XeroLimits::default(),
            scopes: default_scopes(),
            redirect_uris: Vec::new(),
            deny_consent: false,
            authorization_code_ttl_secs: default_authorization_code_ttl(),
        }
    }

    /// An app that can be authorized through the authorization endpoint: Xero's defaults,
    /// one tenant, `redirect_uri` registered, no refresh token until a code is exchanged.
    pub fn authorizable(
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        tenant_id: impl Into<String>,
        redirect_uri: impl Into<String>,
    ) -> Self {
        Self {
            redirect_uris: vec![redirect_uri.into()],
            ..Self::new(client_id, client_secret, tenant_id)
        }
    }

    fn authorization_code_ttl(&self) -> TimeDelta {
        TimeDelta::seconds(
            i64::try_from(self.authorization_code_ttl_secs).unwrap_or(i64::MAX / 1000),
        )
    }

    fn lifetimes(&self) -> Lifetimes {
        let secs = |s: u64| TimeDelta::seconds(i64::try_from(s).unwrap_or(i64::MAX / 1000));
        Lifetimes {
            access: secs(self.access_token_ttl_secs),
            refresh: secs(self.refresh_token_ttl_secs),
            grace: secs(self.refresh_grace_secs),
        }
    }
}

/// A tenant (organisation). In JSON, either its id alone or an object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "TenantSpec")]
pub struct XeroTenant {
    /// A GUID, as Xero's tenant ids are.
    pub tenant_id: String,
    /// `tenantName` on `/connections` and the organisation's name.
    pub tenant_name: Option<String>,
    /// The organisation's currency, used when a document names none (default NZD, as the
    /// spec's demo company).
    pub base_currency: Option<String>,
}

impl XeroTenant {
    pub fn new(tenant_id: impl Into<String>) -> Self {
        Self {
            tenant_id: tenant_id.into(),
            tenant_name: None,
            base_currency: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TenantSpec {
    Id(String),
    Full(TenantObject),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantObject {
    tenant_id: String,
    #[serde(default)]
    tenant_name: Option<String>,
    #[serde(default)]
    base_currency: Option<String>,
}

impl From<TenantSpec> for XeroTenant {
    fn from(spec: TenantSpec) -> Self {
        match spec {
            TenantSpec::Id(tenant_id) => XeroTenant::new(tenant_id),
            TenantSpec::Full(t) => XeroTenant {
                tenant_id: t.tenant_id,
                tenant_name: t.tenant_name,
                base_currency: t.base_currency,
            },
        }
    }
}

/// Xero's published limits, per app and tenant unless noted. `None` (JSON `null`) lifts a
/// limit. Windows are configurable so a test can compress a minute into a second.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct XeroLimits {
    /// Calls per minute window (Xero: 60).
    pub per_minute: Option<u32>,
    /// Calls per day window (Xero: 5,000).
    pub per_day: Option<u32>,
    /// Calls in progress at once (Xero: 5).
    pub concurrent: Option<u32>,
    /// Calls per minute window across all the app's tenants (Xero: 10,000).
    pub app_per_minute: Option<u32>,
    /// Length of the "minute" (default 60,000 ms).
    pub minute_window_ms: u64,
    /// Length of the "day" (default 86,400,000 ms).
    pub day_window_ms: u64,
}

impl Default for XeroLimits {
    fn default() -> Self {
        Self {
            per_minute: Some(60),
            per_day: Some(5_000),
            concurrent: Some(5),
            app_per_minute: Some(10_000),
            minute_window_ms: 60_000,
            day_window_ms: 86_400_000,
        }
    }
}

impl XeroLimits {
    /// No limit at all, for throughput benchmarks.
    pub fn unlimited() -> Self {
        Self {
            per_minute: None,
            per_day: None,
            concurrent: None,
            app_per_minute: None,
            ..Self::default()
        }
    }

    fn check(&self) -> Result<(), String> {
        for (name, limit) in [
            ("per_minute", self.per_minute),
            ("per_day", self.per_day),
            ("concurrent", self.concurrent),
            ("app_per_minute", self.app_per_minute),
        ] {
            if limit == Some(0) {
                return Err(format!("limits.{name} must be at least 1 (null lifts it)"));
            }
        }
        if self.minute_window_ms == 0 || self.day_window_ms == 0 {
            return Err("limit windows must be at least 1 ms".into());
        }
        Ok(())
    }
}

/// What one tenant was asked to do, for "exactly once" and "within the limits" assertions.
/// Every collection (`Contacts`, `Items`, `Invoices`, `Quotes`) appears in the
/// per-collection maps, with 0 when untouched.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct XeroStats {
    /// API calls that reached the tenant (authenticated, tenant allowed), refused ones too.
    pub requests: u64,
    /// Collection → records created through the API (seeds are not counted).
    pub creates: BTreeMap<String, u64>,
    /// Idempotency key → records created by requests carrying it; a replay creates none.
    pub creates_by_key: BTreeMap<String, u64>,
    /// Requests answered from the idempotency store.
    pub replays: u64,
    /// Collection → records changed through the API.
    pub updates: BTreeMap<String, u64>,
    /// Collection → live records (contacts not archived, invoices not deleted or voided,
    /// quotes not deleted).
    pub records: BTreeMap<String, u64>,
    /// Collection → business keys held by more than one live record (`Name:acme`,
    /// `ContactNumber:…`, `Code:…`, `InvoiceNumber:…`, `QuoteNumber:…`, `Reference:…`).
    pub duplicate_business_keys: BTreeMap<String, Vec<String>>,
    /// 429s sent.
    pub rate_limited: u64,
    /// Requests received while the client had been told (by `Retry-After`) to wait.
    pub violations: u64,
    /// Most calls accepted in one rolling minute window (the busiest app's).
    pub max_requests_in_window: u64,
    /// Most calls in progress at once (the busiest app's).
    pub max_concurrent_requests: u64,
    /// Successful refreshes by the apps connected to this tenant.
    pub token_refreshes: u64,
    /// Refreshes those apps were refused (`invalid_grant`, bad client credentials).
    pub rejected_refreshes: u64,
    /// Authorization codes those apps were issued by the authorization endpoint.
    pub authorizations: u64,
    /// Authorization requests of those apps redirected back with an `error`
    /// (`access_denied` included); error pages are not counted (they have no trusted app).
    pub refused_authorizations: u64,
    /// Authorization codes those apps exchanged for tokens.
    pub code_exchanges: u64,
    /// Code exchanges refused (`invalid_grant`, `invalid_request`, bad client credentials).
    pub rejected_code_exchanges: u64,
}

/// The simulator. Cheap to clone: clones share the same apps and tenants.
#[derive(Clone, Default)]
pub struct XeroSim {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for XeroSim {
    // Not derived: it would print every record of every tenant.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let registry = read(&self.shared.registry);
        f.debug_struct("XeroSim")
            .field("apps", &registry.apps.len())
            .field("tenants", &registry.tenants.len())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Shared {
    registry: RwLock<Registry>,
    /// Grants and tokens; never held across an `.await` or while taking another lock.
    tokens: Mutex<TokenStore>,
    /// Authorization codes not yet exchanged; the same rule as `tokens`.
    codes: Mutex<CodeStore<consent::Consented>>,
    fingerprinter: Fingerprinter,
    interrupt: Interrupt,
    received: received::ReceivedLog,
}

#[derive(Debug, Default)]
struct Registry {
    apps: HashMap<String, Arc<App>>,
    /// By lower-case tenant id.
    tenants: HashMap<String, Arc<Tenant>>,
}

#[derive(Debug)]
struct App {
    state: Mutex<AppState>,
}

#[derive(Debug)]
struct AppState {
    config: XeroAppConfig,
    gate: AppGate,
    /// Xero counts limits per app and tenant: one gate per tenant, by lower-case id.
    tenant_gates: HashMap<String, TenantGate>,
    /// Faults for the identity endpoints (token, connections) of this app.
    identity_faults: FaultQueue,
    token_refreshes: u64,
    rejected_refreshes: u64,
    /// The authorization-code counters reported in [`XeroStats`].
    authorizations: u64,
    refused_authorizations: u64,
    code_exchanges: u64,
    rejected_code_exchanges: u64,
}

impl AppState {
    fn tenant_ids(&self) -> Vec<String> {
        self.config
            .tenants
            .iter()
            .map(|t| t.tenant_id.to_ascii_lowercase())
            .collect()
    }
}

#[derive(Debug)]
struct Tenant {
    /// Lower-case GUID.
    id: String,
    created: DateTime<Utc>,
    state: Mutex<TenantState>,
}

#[derive(Debug)]
struct TenantState {
    name: String,
    base_currency: String,
    data: TenantData,
    /// `Idempotency-Key` → the answer, errors included, replayed for the app's window.
    idempotency: IdempotencyStore<http::StoredAnswer>,
    faults: FaultQueue,
}

impl KeyOwner for Tenant {
    fn release(&self, key: &str, token: u64) {
        lock(&self.state)
            .idempotency
            .settle(key, token, None, Utc::now());
    }
}

/// Locks a mutex. A poisoned lock only means a handler panicked mid-request; the state is
/// still the best record of what happened, and tests want to read it.
use crate::guard::{lock, read, write};

fn visible_ascii(text: &str) -> bool {
    !text.is_empty() && HeaderValue::from_str(text).is_ok() && !text.contains(' ')
}

impl XeroSim {
    pub fn new() -> Self {
        Self::default()
    }

    /// Provisions an app, its tenants and (with `refresh_token`) a consent. Provisioning a
    /// client id again updates its secret, lifetimes and limits, adds tenants and consents,
    /// and keeps records, tokens and counters. An invalid config is logged and ignored; use
    /// [`Self::try_add_app`] to get the error.
    pub fn add_app(&self, config: XeroAppConfig) {
        if let Err(error) = self.try_add_app(config) {
            tracing::error!(%error, "sandbox Xero app not provisioned");
        }
    }

    pub fn try_add_app(&self, config: XeroAppConfig) -> Result<(), SandboxError> {
        let invalid = |why: String| Err(SandboxError::InvalidApp(why));
        if !visible_ascii(&config.client_id) || config.client_id.contains(':') {
            return invalid("client_id must be visible ASCII without ':'".into());
        }
        if !visible_ascii(&config.client_secret) {
            return invalid("client_secret must be non-empty visible ASCII".into());
        }
        for tenant in &config.tenants {
            if Uuid::parse_str(&tenant.tenant_id).is_err() {
                return invalid(format!("tenant_id {:?} is not a GUID", tenant.tenant_id));
            }
            if let Some(currency) = &tenant.base_currency
                && !(currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase()))
            {
                return invalid(format!(
                    "base_currency {currency:?} is not an ISO 4217 code"
                ));
            }
        }
        if let Some(token) = &config.refresh_token
            && !visible_ascii(token)
        {
            return invalid("refresh_token must be non-empty visible ASCII".into());
        }
        if config.custom_connection && (config.tenants.len() != 1 || config.refresh_token.is_some())
        {
            return invalid(
                "a custom connection has exactly one tenant and no refresh token".into(),
            );
        }
        if config.access_token_ttl_secs == 0 {
            return invalid("access_token_ttl_secs must be at least 1".into());
        }
        if config.authorization_code_ttl_secs == 0 {
            return invalid("authorization_code_ttl_secs must be at least 1".into());
        }
        for uri in &config.redirect_uris {
            absolute_uri(uri).map_err(SandboxError::InvalidApp)?;
        }
        config.limits.check().map_err(SandboxError::InvalidApp)?;

        let now = Utc::now();
        let mut registry = write(&self.shared.registry);
        if let Some(token) = &config.refresh_token {
            let tenant_ids: Vec<String> = config
                .tenants
                .iter()
                .map(|t| t.tenant_id.to_ascii_lowercase())
                .collect();
            lock(&self.shared.tokens)
                .add_grant(
                    &config.client_id,
                    &tenant_ids,
                    token,
                    config.lifetimes(),
                    now,
                )
                .map_err(SandboxError::InvalidApp)?;
        }
        for tenant in &config.tenants {
            let id = tenant.tenant_id.to_ascii_lowercase();
            match registry.tenants.get(&id) {
                Some(existing) => {
                    let mut state = lock(&existing.state);
                    if let Some(name) = &tenant.tenant_name {
                        state.name.clone_from(name);
                    }
                    if let Some(currency) = &tenant.base_currency {
                        state.base_currency.clone_from(currency);
                    }
                }
                None => {
                    let number = registry.tenants.len() + 1;
                    let state = TenantState {
                        name: tenant
                            .tenant_name
                            .clone()
                            .unwrap_or_else(|| format!("Sandbox Organisation {number}")),
                        base_currency: tenant
                            .base_currency
                            .clone()
                            .unwrap_or_else(|| "NZD".to_owned()),
                        data: TenantData::default(),
                        idempotency: IdempotencyStore::default(),
                        faults: FaultQueue::default(),
                    };
                    registry.tenants.insert(
                        id.clone(),
                        Arc::new(Tenant {
                            id,
                            created: now,
                            state: Mutex::new(state),
                        }),
                    );
                }
            }
        }
        match registry.apps.get(&config.client_id) {
            Some(app) => {
                let mut state = lock(&app.state);
                let mut tenants = std::mem::take(&mut state.config.tenants);
                for tenant in &config.tenants {
                    let known = tenants
                        .iter()
                        .any(|t| t.tenant_id.eq_ignore_ascii_case(&tenant.tenant_id));
                    if !known {
                        tenants.push(tenant.clone());
                    }
                }
                state.config = XeroAppConfig {
                    tenants,
                    refresh_token: None,
                    ..config
                };
                let limits = state.config.limits.clone();
                state.gate = AppGate::new(&limits);
                for gate in state.tenant_gates.values_mut() {
                    gate.reconfigure(&limits);
                }
            }
            None => {
                let state = AppState {
                    gate: AppGate::new(&config.limits),
                    config: XeroAppConfig {
                        refresh_token: None,
                        ..config.clone()
                    },
                    tenant_gates: HashMap::new(),
                    identity_faults: FaultQueue::default(),
                    token_refreshes: 0,
                    rejected_refreshes: 0,
                    authorizations: 0,
                    refused_authorizations: 0,
                    code_exchanges: 0,
                    rejected_code_exchanges: 0,
                };
                registry.apps.insert(
                    config.client_id,
                    Arc::new(App {
                        state: Mutex::new(state),
                    }),
                );
            }
        }
        Ok(())
    }

    /// The tenant's counters, or `None` for an unknown tenant.
    pub fn stats(&self, tenant_id: &str) -> Option<XeroStats> {
        let id = tenant_id.to_ascii_lowercase();
        let (tenant, apps) = {
            let registry = read(&self.shared.registry);
            let tenant = registry.tenants.get(&id)?.clone();
            let apps: Vec<Arc<App>> = registry.apps.values().cloned().collect();
            (tenant, apps)
        };
        let mut stats = {
            let state = lock(&tenant.state);
            let per_kind = |counts: &[u64; 4]| {
                Kind::ALL
                    .iter()
                    .map(|k| (k.name().to_owned(), counts[k.index()]))
                    .collect()
            };
            XeroStats {
                creates: per_kind(&state.data.creates),
                creates_by_key: state.idempotency.creates_by_key(),
                replays: state.idempotency.replays(),
                updates: per_kind(&state.data.updates),
                records: state.data.live_counts(),
                duplicate_business_keys: Kind::ALL
                    .iter()
                    .map(|k| (k.name().to_owned(), state.data.records(*k).duplicate_keys()))
                    .filter(|(_, dups)| !dups.is_empty())
                    .collect(),
                ..XeroStats::default()
            }
        };
        for app in apps {
            let state = lock(&app.state);
            if let Some(gate) = state.tenant_gates.get(&id) {
                let GateStats {
                    requests,
                    rate_limited,
                    violations,
                    max_requests_in_window,
                    max_concurrent,
                } = gate.stats();
                stats.requests += requests;
                stats.rate_limited += rate_limited;
                stats.violations += violations;
                stats.max_requests_in_window =
                    stats.max_requests_in_window.max(max_requests_in_window);
                stats.max_concurrent_requests = stats.max_concurrent_requests.max(max_concurrent);
            }
            if state.tenant_ids().contains(&id) {
                stats.token_refreshes += state.token_refreshes;
                stats.rejected_refreshes += state.rejected_refreshes;
                stats.authorizations += state.authorizations;
                stats.refused_authorizations += state.refused_authorizations;
                stats.code_exchanges += state.code_exchanges;
                stats.rejected_code_exchanges += state.rejected_code_exchanges;
            }
        }
        Some(stats)
    }

    /// Every record of a collection (`Contacts`, `Items`, `Invoices`, `Quotes`, any case),
    /// archived, voided and deleted ones included, in `(UpdatedDateUTC, id)` order, as the
    /// API returns them; empty for an unknown tenant or collection.
    pub fn records(&self, tenant_id: &str, collection: &str) -> Vec<Value> {
        let (Some(tenant), Some(kind)) = (self.tenant(tenant_id), Kind::parse(collection)) else {
            return Vec::new();
        };
        let state = lock(&tenant.state);
        state
            .data
            .records(kind)
            .ordered()
            .map(|r| Value::Object(model::render(&state.data, kind, &r.body, true)))
            .collect()
    }

    /// Queues a fault for the tenant's API calls. An unknown tenant or a fault that could
    /// never fire is logged and ignored; use [`Self::try_inject`] to get the error.
    pub fn inject(&self, tenant_id: &str, fault: Fault) {
        if let Err(error) = self.try_inject(tenant_id, fault) {
            tracing::error!(%error, "sandbox Xero fault not queued");
        }
    }

    pub fn try_inject(&self, tenant_id: &str, fault: Fault) -> Result<(), SandboxError> {
        fault.check().map_err(SandboxError::InvalidFault)?;
        let tenant = self.known_tenant(tenant_id)?;
        lock(&tenant.state).faults.push(fault);
        Ok(())
    }

    /// Queues a fault for the app's calls to the identity endpoints (the token endpoint and
    /// `/connections`). Misuse is logged; use [`Self::try_inject_identity`] to get the error.
    pub fn inject_identity(&self, client_id: &str, fault: Fault) {
        if let Err(error) = self.try_inject_identity(client_id, fault) {
            tracing::error!(%error, "sandbox Xero identity fault not queued");
        }
    }

    pub fn try_inject_identity(&self, client_id: &str, fault: Fault) -> Result<(), SandboxError> {
        fault.check().map_err(SandboxError::InvalidFault)?;
        let app = self.known_app(client_id)?;
        lock(&app.state).identity_faults.push(fault);
        Ok(())
    }

    /// Seeds a record for import tests: keeps its id field (`ContactID`, `ItemID`,
    /// `InvoiceID`, `QuoteID`; a GUID) or assigns one, sets `UpdatedDateUTC` to now, creates
    /// or replaces, and returns the id. Not validated (a test may seed what a sloppy
    /// organisation holds, `QuantityOnHand` included) and not counted as a create. Misuse is
    /// logged and returns an empty id; use [`Self::try_upsert_record`] to get the error.
    pub fn upsert_record(&self, tenant_id: &str, collection: &str, record: Value) -> String {
        self.try_upsert_record(tenant_id, collection, record)
            .unwrap_or_else(|error| {
                tracing::error!(%error, "sandbox Xero record not seeded");
                String::new()
            })
    }

    pub fn try_upsert_record(
        &self,
        tenant_id: &str,
        collection: &str,
        record: Value,
    ) -> Result<String, SandboxError> {
        let tenant = self.known_tenant(tenant_id)?;
        let kind = Kind::parse(collection)
            .ok_or_else(|| SandboxError::UnknownXeroCollection(collection.to_owned()))?;
        let Value::Object(mut body) = record else {
            return Err(SandboxError::InvalidRecord(
                "a record must be a JSON object".into(),
            ));
        };
        let id = match body.get(kind.id_field()) {
            None | Some(Value::Null) => Uuid::new_v4().to_string(),
            Some(Value::String(id)) if Uuid::parse_str(id).is_ok() => id.to_ascii_lowercase(),
            Some(other) => {
                return Err(SandboxError::InvalidRecord(format!(
                    "{} must be a GUID, not {other}",
                    kind.id_field()
                )));
            }
        };
        body.insert(kind.id_field().into(), Value::String(id.clone()));
        let mut state = lock(&tenant.state);
        let at = state.data.stamp(Utc::now());
        stamp_record(kind, &mut body, at);
        state
            .data
            .put_uncounted(kind, &id, Some(Stored { body, updated: at }));
        Ok(id)
    }

    /// Ends every live access token of the app now, so its next call gets `401 TokenExpired`
    /// (a test forcing expiry mid-sync). Returns how many tokens were live.
    pub fn expire_access_tokens(&self, client_id: &str) -> usize {
        lock(&self.shared.tokens).expire_access_tokens(client_id, Utc::now())
    }

    /// Ends every injected latency and timeout wait now (those requests answer 503). The
    /// sandbox calls it on shutdown.
    pub fn cancel_injected_waits(&self) {
        self.shared.interrupt.fire();
    }

    /// Records every request received from now on (see [`Self::received_requests`]), so a
    /// test can check a client against the official spec.
    pub fn record_requests(&self) {
        self.shared.received.start();
    }

    /// The requests received since [`Self::record_requests`], in arrival order.
    pub fn received_requests(&self) -> Vec<ReceivedRequest> {
        self.shared.received.all()
    }

    fn tenant(&self, tenant_id: &str) -> Option<Arc<Tenant>> {
        read(&self.shared.registry)
            .tenants
            .get(&tenant_id.to_ascii_lowercase())
            .cloned()
    }

    fn known_tenant(&self, tenant_id: &str) -> Result<Arc<Tenant>, SandboxError> {
        self.tenant(tenant_id)
            .ok_or_else(|| SandboxError::UnknownTenant(tenant_id.to_owned()))
    }

    fn app(&self, client_id: &str) -> Option<Arc<App>> {
        read(&self.shared.registry).apps.get(client_id).cloned()
    }

    fn known_app(&self, client_id: &str) -> Result<Arc<App>, SandboxError> {
        self.app(client_id)
            .ok_or_else(|| SandboxError::UnknownApp(client_id.to_owned()))
    }
}

/// Sets `UpdatedDateUTC` (and the invoice's string twin) on a record written at `at`.
fn stamp_record(kind: Kind, body: &mut Map<String, Value>, at: DateTime<Utc>) {
    body.insert(
        "UpdatedDateUTC".into(),
        Value::String(dates::ms_date(at, kind.offset_dates())),
    );
    if kind == Kind::Invoices {
        body.insert(
            "UpdatedDateUTCString".into(),
            Value::String(dates::utc_string(at)),
        );
    }
}
