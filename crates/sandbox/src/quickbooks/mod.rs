//! Simulator of the QuickBooks Online Accounting API v3 for what an integration syncing a
//! wholesale platform uses: OAuth 2 (the authorization code with PKCE, Basic client
//! authentication, refresh tokens that may rotate and die after a grace period, access
//! tokens that expire), `item`, `customer`, `invoice`, `estimate` and `account` (create,
//! sparse and full update with `SyncToken` optimistic concurrency, read), the `query`
//! language subset a connector needs, `batch` (`BatchItemRequest` / `BatchItemResponse` with
//! a per-item `Fault`), `cdc`, `companyinfo`, `requestid` replay, and the per-realm limits
//! (requests a minute, in flight, batch requests a minute) with `429 ThrottleExceeded` (no
//! `Retry-After`, as Intuit sends none). A new realm holds what a new company does: a chart
//! of accounts and the "Services" item. Each realm logs when every request arrived
//! ([`QuickBooksSim::requests`]).
//!
//! It owns the apps (OAuth clients and their grants) and the realms (companies and their
//! records) and counts what each realm was asked to do, so tests can prove "created exactly
//! once" and "never over the limit". Field names are the XSD element names (`Finance.xsd`,
//! `IntuitNamesTypes.xsd`, `IntuitRestServiceDef.xsd`), as the JSON API uses them. It must stay
//! strict: what QuickBooks refuses (unknown properties, duplicate names, stale SyncTokens,
//! dangling references), it refuses.
//!
//! Served under `/quickbooks` (see [`crate::sandbox_router`]): the authorization endpoint at
//! `/quickbooks/connect/oauth2`, the token endpoint at `/quickbooks/oauth2/v1/tokens/bearer`,
//! the API at `/quickbooks/v3/company/{realmId}/…`, and loopback admin endpoints under
//! `/quickbooks/_sandbox/…`. [`QuickBooksSim`] is the in-process handle tests and the demo
//! use.
//!
//! # Authorization code with PKCE
//!
//! `GET /quickbooks/connect/oauth2` is appcenter.intuit.com's path. Its query:
//! `response_type=code`, `client_id`, `redirect_uri` (one of the app's
//! [`QuickBooksAppConfig::redirect_uris`], compared exactly), `scope` (space-separated; must
//! hold `com.intuit.quickbooks.accounting`, may add `com.intuit.quickbooks.payment`, `openid`,
//! `profile`, `email`, `phone`, `address`), `state` (required, as Intuit's documentation
//! lists it), `code_challenge` and `code_challenge_method=S256` (PKCE is required). There is
//! no user: consent is given at once for the app's first realm, unless
//! [`QuickBooksAppConfig::deny_consent`] is set.
//!
//! - Unknown `client_id`, or a missing, relative, repeated or unregistered `redirect_uri`:
//!   `400` and an HTML error page naming the error; no redirect.
//! - Otherwise `302` to the redirect URI. Granted: `code`, `realmId` (the company connected)
//!   and `state`. Refused (RFC 6749 §4.1.2.1): `error`, `error_description` and `state`;
//!   `error` is `unsupported_response_type`, `invalid_request` (a missing or repeated
//!   parameter, PKCE missing or not `S256`, no `scope` or `state`), `invalid_scope` (an
//!   unknown scope, or no accounting scope) or `access_denied` (consent denied, or an app
//!   with no realm; no description).
//!
//! The code is single-use and lives [`QuickBooksAppConfig::authorization_code_ttl_secs`] (5
//! minutes); it is bound to the client, the exact redirect URI, the challenge and the realm.
//! `POST /quickbooks/oauth2/v1/tokens/bearer` with `grant_type=authorization_code`, `code`,
//! `redirect_uri` and `code_verifier` (client authenticated with HTTP Basic, as for a
//! refresh) answers what a refresh answers (`token_type`, `access_token`, `expires_in`,
//! `refresh_token`, `x_refresh_token_expires_in`) for a new refresh-token chain over the
//! realm. No `id_token` is issued. A code presented once is spent, even when the exchange
//! fails: unknown, expired, reused, another client's, another redirect URI's, or a verifier
//! whose BASE64URL(SHA256) is not the challenge all answer `400 {"error":"invalid_grant"}`;
//! a missing `code` or `redirect_uri` answers `invalid_request`.

mod company;
mod consent;
mod http;
mod model;
mod query;
mod tokens;

pub use crate::faults::Fault;

use crate::SandboxError;
use crate::authorization::{CodeStore, absolute_uri};
use crate::faults::{FaultQueue, Interrupt, TrafficGate};
use crate::idempotency::IdempotencyStore;
use axum::http::{HeaderValue, StatusCode};
use chrono::{DateTime, TimeDelta, Utc};
use model::{Kind, RealmData};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokens::{Lifetimes, TokenStore};

pub(crate) use http::routes;

const fn default_access_token_ttl() -> u64 {
    60 * 60
}

const fn default_refresh_rotation() -> u64 {
    24 * 60 * 60
}

const fn default_refresh_grace() -> u64 {
    60 * 60
}

const fn default_refresh_token_ttl() -> u64 {
    100 * 24 * 60 * 60
}

const fn default_authorization_code_ttl() -> u64 {
    5 * 60
}

/// An OAuth 2 app (client id and secret) and the realms (companies) it is connected to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuickBooksAppConfig {
    pub client_id: String,
    pub client_secret: String,
    /// Realm ids (digits, as Intuit's company ids are) the app is connected to; a realm is
    /// created on first mention.
    #[serde(default)]
    pub realms: Vec<String>,
    /// A refresh token a user's consent produced, covering `realms`.
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// Access token lifetime (Intuit: 1 hour).
    #[serde(default = "default_access_token_ttl")]
    pub access_token_ttl_secs: u64,
    /// A refresh answers a *new* refresh token once the current one is this old (Intuit:
    /// "about every 24 hours"; 0 rotates on every refresh).
    #[serde(default = "default_refresh_rotation")]
    pub refresh_rotation_secs: u64,
    /// How long a replaced refresh token still works (Intuit documents none; "short").
    #[serde(default = "default_refresh_grace")]
    pub refresh_grace_secs: u64,
    /// How long an unused refresh token lives (Intuit: 100 days, rolling).
    #[serde(default = "default_refresh_token_ttl")]
    pub refresh_token_ttl_secs: u64,
    #[serde(default)]
    pub limits: QuickBooksLimits,
    /// The redirect URIs registered for the app: the authorization endpoint redirects to no
    /// other (compared exactly). With none, the app cannot be authorized.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// The (simulated) user refuses consent: the authorization endpoint redirects with
    /// `error=access_denied`.
    #[serde(default)]
    pub deny_consent: bool,
    /// How long an authorization code may wait to be exchanged (5 minutes).
    #[serde(default = "default_authorization_code_ttl")]
    pub authorization_code_ttl_secs: u64,
}

impl QuickBooksAppConfig {
    /// An app with Intuit's defaults, connected to one realm, with no refresh token yet.
    pub fn new(
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        realm_id: impl Into<String>,
    ) -> Self {
        Self {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            realms: vec![realm_id.into()],
            refresh_token: None,
            access_token_ttl_secs: default_access_token_ttl(),
            refresh_rotation_secs: default_refresh_rotation(),
            refresh_grace_secs: default_refresh_grace(),
            refresh_token_ttl_secs: default_refresh_token_ttl(),
            limits: QuickBooksLimits::default(),
            redirect_uris: Vec::new(),
            deny_consent: false,
            authorization_code_ttl_secs: default_authorization_code_ttl(),
        }
    }

    /// An app that can be authorized through the authorization endpoint: Intuit's defaults,
    /// one realm (the one consent connects), `redirect_uri` registered, no refresh token
    /// until a code is exchanged.
    pub fn authorizable(
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        realm_id: impl Into<String>,
        redirect_uri: impl Into<String>,
    ) -> Self {
        Self {
            redirect_uris: vec![redirect_uri.into()],
            ..Self::new(client_id, client_secret, realm_id)
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
            rotation: secs(self.refresh_rotation_secs),
            grace: secs(self.refresh_grace_secs),
        }
    }
}

/// Intuit's published limits per realm. `None` (JSON `null`) lifts a limit. The window is
/// configurable so a test can compress a minute into a second.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuickBooksLimits {
    /// Requests per minute window (Intuit: 500 per realm). A batch request counts as one.
    pub per_minute: Option<u32>,
    /// Requests in progress at once (Intuit: 10 per realm and app).
    pub concurrent: Option<u32>,
    /// Batch requests per minute window (Intuit: 40 per realm and app).
    pub batch_per_minute: Option<u32>,
    /// Items in one batch request (Intuit: 30).
    pub max_batch_items: usize,
    /// Length of the "minute" (default 60,000 ms).
    pub minute_window_ms: u64,
}

impl Default for QuickBooksLimits {
    fn default() -> Self {
        Self {
            per_minute: Some(500),
            concurrent: Some(10),
            batch_per_minute: Some(40),
            max_batch_items: 30,
            minute_window_ms: 60_000,
        }
    }
}

impl QuickBooksLimits {
    /// No rate limit at all, for throughput benchmarks (the batch size stays 30).
    pub fn unlimited() -> Self {
        Self {
            per_minute: None,
            concurrent: None,
            batch_per_minute: None,
            ..Self::default()
        }
    }

    fn check(&self) -> Result<(), String> {
        for (name, limit) in [
            ("per_minute", self.per_minute),
            ("concurrent", self.concurrent),
            ("batch_per_minute", self.batch_per_minute),
        ] {
            if limit == Some(0) {
                return Err(format!("limits.{name} must be at least 1 (null lifts it)"));
            }
        }
        if self.max_batch_items == 0 || self.minute_window_ms == 0 {
            return Err("limits.max_batch_items and minute_window_ms must be at least 1".into());
        }
        Ok(())
    }

    fn window(&self) -> Duration {
        Duration::from_millis(self.minute_window_ms)
    }
}

/// What one realm was asked to do. Every entity (`Item`, `Customer`, `Invoice`, `Estimate`,
/// `Account`) appears in the per-entity maps, with 0 when untouched.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuickBooksStats {
    /// API calls that reached the realm (authenticated, realm allowed), refused ones too.
    pub requests: u64,
    /// Batch requests among them.
    pub batch_requests: u64,
    /// `cdc` requests among them.
    pub cdc_requests: u64,
    /// `query` requests among them (batch items not included).
    pub query_requests: u64,
    /// Entity → records created through the API (seeds are not counted).
    pub creates: BTreeMap<String, u64>,
    /// `requestid` → records created by requests carrying it; a replay creates none.
    pub creates_by_requestid: BTreeMap<String, u64>,
    /// Requests answered from the `requestid` store.
    pub replays: u64,
    /// Entity → records changed through the API.
    pub updates: BTreeMap<String, u64>,
    /// Updates refused for a stale `SyncToken`.
    pub stale_updates: u64,
    /// Entity → live (active) records.
    pub records: BTreeMap<String, u64>,
    /// Entity → business keys held by more than one live record (`DocNumber:…`, `Sku:…`;
    /// names cannot be duplicated at all).
    pub duplicate_business_keys: BTreeMap<String, Vec<String>>,
    /// 429s sent.
    pub rate_limited: u64,
    /// Requests received inside a window in which the realm had already been throttled.
    pub violations: u64,
    /// Most requests accepted in one minute window.
    pub max_requests_in_window: u64,
    /// Most batch requests accepted in one minute window.
    pub max_batch_requests_in_window: u64,
    /// Most requests in progress at once.
    pub max_concurrent_requests: u64,
    /// Successful refreshes by the apps connected to this realm.
    pub token_refreshes: u64,
    /// Refreshes those apps were refused (`invalid_grant`, `invalid_client`).
    pub rejected_refreshes: u64,
    /// Authorization codes those apps were issued by the authorization endpoint.
    pub authorizations: u64,
    /// Authorization requests of those apps redirected back with an `error`
    /// (`access_denied` included); error pages are not counted (they have no trusted app).
    pub refused_authorizations: u64,
    /// Authorization codes those apps exchanged for tokens.
    pub code_exchanges: u64,
    /// Code exchanges refused (`invalid_grant`, `invalid_request`, `invalid_client`).
    pub rejected_code_exchanges: u64,
}

/// One API request a realm received (authorised or not), for tests that check *when* a
/// client called, e.g. that nothing came during the 60 s Intuit asks for after a 429.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuickBooksRequest {
    pub at: DateTime<Utc>,
    pub method: String,
    /// The path under `/v3/company/{realmId}/` (`batch`, `query`, `companyinfo/…`).
    pub path: String,
}

/// Requests kept per realm (the oldest are dropped), so a benchmark cannot exhaust memory.
const REQUEST_LOG_CAP: usize = 10_000;

/// The simulator. Cheap to clone: clones share the same apps and realms.
#[derive(Clone, Default)]
pub struct QuickBooksSim {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for QuickBooksSim {
    // Not derived: it would print every record of every realm.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let registry = read(&self.shared.registry);
        f.debug_struct("QuickBooksSim")
            .field("apps", &registry.apps.len())
            .field("realms", &registry.realms.len())
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
    interrupt: Interrupt,
}

#[derive(Debug, Default)]
struct Registry {
    apps: HashMap<String, Arc<App>>,
    realms: HashMap<String, Arc<Realm>>,
}

#[derive(Debug)]
struct App {
    state: Mutex<AppState>,
}

#[derive(Debug)]
struct AppState {
    config: QuickBooksAppConfig,
    /// Faults for this app's calls to the token endpoint.
    token_faults: FaultQueue,
    token_refreshes: u64,
    rejected_refreshes: u64,
    /// The authorization-code counters reported in [`QuickBooksStats`].
    authorizations: u64,
    refused_authorizations: u64,
    code_exchanges: u64,
    rejected_code_exchanges: u64,
}

#[derive(Debug)]
struct Realm {
    id: String,
    state: Mutex<RealmState>,
}

#[derive(Debug)]
struct RealmState {
    company_name: String,
    /// Requests per minute, and the fault queue.
    gate: TrafficGate,
    /// Batch requests per minute (counted on top of `gate`).
    batch_gate: TrafficGate,
    concurrent_limit: Option<u32>,
    in_flight: u32,
    max_in_flight: u64,
    max_batch_items: usize,
    data: RealmData,
    /// `requestid` → the answer first given to it, replayed to any repeat, errors included,
    /// whatever the repeat carries.
    answers: IdempotencyStore<(StatusCode, Value)>,
    batch_requests: u64,
    cdc_requests: u64,
    query_requests: u64,
    /// Every request, in arrival order (at most [`REQUEST_LOG_CAP`]).
    log: VecDeque<QuickBooksRequest>,
}

impl RealmState {
    fn new(number: usize, limits: &QuickBooksLimits) -> Self {
        Self {
            company_name: format!("Sandbox Company_US_{number}"),
            gate: TrafficGate::new(limits.per_minute, limits.window()),
            batch_gate: TrafficGate::new(limits.batch_per_minute, limits.window()),
            concurrent_limit: limits.concurrent,
            in_flight: 0,
            max_in_flight: 0,
            max_batch_items: limits.max_batch_items,
            // The company was set up long before anyone syncs with it (CDC does not see
            // its defaults as changes).
            data: company::new_company(Utc::now() - TimeDelta::days(365)),
            answers: IdempotencyStore::default(),
            batch_requests: 0,
            cdc_requests: 0,
            query_requests: 0,
            log: VecDeque::new(),
        }
    }

    fn reconfigure(&mut self, limits: &QuickBooksLimits) {
        // A new window length needs a new gate; queued faults survive.
        let faults = std::mem::take(&mut self.gate.faults);
        let stats = (self.gate.stats(), self.batch_gate.stats());
        if stats.0.requests == 0 && stats.1.requests == 0 {
            self.gate = TrafficGate::new(limits.per_minute, limits.window());
            self.batch_gate = TrafficGate::new(limits.batch_per_minute, limits.window());
        } else {
            self.gate.set_limit(limits.per_minute);
            self.batch_gate.set_limit(limits.batch_per_minute);
        }
        self.gate.faults = faults;
        self.concurrent_limit = limits.concurrent;
        self.max_batch_items = limits.max_batch_items;
    }
}

/// Locks a mutex. A poisoned lock only means a handler panicked mid-request; the state is
/// still the best record of what happened, and tests want to read it.
use crate::guard::{lock, read, write};

fn visible_ascii(text: &str) -> bool {
    !text.is_empty() && HeaderValue::from_str(text).is_ok() && !text.contains(' ')
}

impl QuickBooksSim {
    pub fn new() -> Self {
        Self::default()
    }

    /// Provisions an app, its realms and (with `refresh_token`) a consent. Provisioning a
    /// client id again updates its secret, lifetimes and limits, adds realms and consents,
    /// and keeps records, tokens and counters. An invalid config is logged and ignored; use
    /// [`Self::try_add_app`] to get the error.
    pub fn add_app(&self, config: QuickBooksAppConfig) {
        if let Err(error) = self.try_add_app(config) {
            tracing::error!(%error, "sandbox QuickBooks app not provisioned");
        }
    }

    pub fn try_add_app(&self, config: QuickBooksAppConfig) -> Result<(), SandboxError> {
        let invalid = |why: String| Err(SandboxError::InvalidApp(why));
        if !visible_ascii(&config.client_id) || config.client_id.contains(':') {
            return invalid("client_id must be visible ASCII without ':'".into());
        }
        if !visible_ascii(&config.client_secret) {
            return invalid("client_secret must be non-empty visible ASCII".into());
        }
        for realm in &config.realms {
            if realm.is_empty() || !realm.bytes().all(|b| b.is_ascii_digit()) {
                return invalid(format!("realm id {realm:?} is not a string of digits"));
            }
        }
        if let Some(token) = &config.refresh_token
            && !visible_ascii(token)
        {
            return invalid("refresh_token must be non-empty visible ASCII".into());
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
            lock(&self.shared.tokens)
                .add_grant(
                    &config.client_id,
                    &config.realms,
                    token,
                    config.lifetimes(),
                    now,
                )
                .map_err(SandboxError::InvalidApp)?;
        }
        for realm in &config.realms {
            match registry.realms.get(realm) {
                Some(existing) => lock(&existing.state).reconfigure(&config.limits),
                None => {
                    let number = registry.realms.len() + 1;
                    registry.realms.insert(
                        realm.clone(),
                        Arc::new(Realm {
                            id: realm.clone(),
                            state: Mutex::new(RealmState::new(number, &config.limits)),
                        }),
                    );
                }
            }
        }
        match registry.apps.get(&config.client_id) {
            Some(app) => {
                let mut state = lock(&app.state);
                let mut realms = std::mem::take(&mut state.config.realms);
                for realm in &config.realms {
                    if !realms.contains(realm) {
                        realms.push(realm.clone());
                    }
                }
                state.config = QuickBooksAppConfig {
                    realms,
                    refresh_token: None,
                    ..config
                };
            }
            None => {
                let state = AppState {
                    config: QuickBooksAppConfig {
                        refresh_token: None,
                        ..config.clone()
                    },
                    token_faults: FaultQueue::default(),
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

    /// The realm's counters, or `None` for an unknown realm.
    pub fn stats(&self, realm_id: &str) -> Option<QuickBooksStats> {
        let (realm, apps) = {
            let registry = read(&self.shared.registry);
            let realm = registry.realms.get(realm_id)?.clone();
            let apps: Vec<Arc<App>> = registry.apps.values().cloned().collect();
            (realm, apps)
        };
        let mut stats = {
            let state = lock(&realm.state);
            let per_kind = |counts: &[u64; 5]| {
                Kind::ALL
                    .iter()
                    .map(|k| (k.name().to_owned(), counts[k.index()]))
                    .collect()
            };
            let traffic = state.gate.stats();
            let batch = state.batch_gate.stats();
            QuickBooksStats {
                requests: traffic.requests,
                batch_requests: state.batch_requests,
                cdc_requests: state.cdc_requests,
                query_requests: state.query_requests,
                creates: per_kind(&state.data.creates),
                creates_by_requestid: state.answers.creates_by_key(),
                replays: state.answers.replays(),
                updates: per_kind(&state.data.updates),
                stale_updates: state.data.stale_updates,
                records: Kind::ALL
                    .iter()
                    .map(|k| (k.name().to_owned(), state.data.live_count(*k)))
                    .collect(),
                duplicate_business_keys: Kind::ALL
                    .iter()
                    .map(|k| (k.name().to_owned(), state.data.duplicate_keys(*k)))
                    .filter(|(_, dups)| !dups.is_empty())
                    .collect(),
                rate_limited: traffic.rate_limited + batch.rate_limited,
                violations: traffic.violations + batch.violations,
                max_requests_in_window: traffic.max_requests_in_window,
                max_batch_requests_in_window: batch.max_requests_in_window,
                max_concurrent_requests: state.max_in_flight,
                ..QuickBooksStats::default()
            }
        };
        for app in apps {
            let state = lock(&app.state);
            if state.config.realms.iter().any(|r| r == realm_id) {
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

    /// Every record of an entity (`Item`, `Customer`, `Invoice`, `Estimate`, `Account`, any case),
    /// inactive ones included, in id order, as the API renders them; empty for an unknown
    /// realm or entity.
    pub fn records(&self, realm_id: &str, entity: &str) -> Vec<Value> {
        let (Some(realm), Some(kind)) = (self.realm(realm_id), Kind::parse(entity)) else {
            return Vec::new();
        };
        let state = lock(&realm.state);
        state
            .data
            .all(kind)
            .map(|r| Value::Object(r.body.clone()))
            .collect()
    }

    /// The API requests the realm received, oldest first (the last 10,000); empty for an
    /// unknown realm.
    pub fn requests(&self, realm_id: &str) -> Vec<QuickBooksRequest> {
        self.realm(realm_id)
            .map(|realm| lock(&realm.state).log.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn note_request(&self, realm_id: &str, at: DateTime<Utc>, method: &str, path: &str) {
        let Some(realm) = self.realm(realm_id) else {
            return;
        };
        let mut state = lock(&realm.state);
        if state.log.len() >= REQUEST_LOG_CAP {
            state.log.pop_front();
        }
        state.log.push_back(QuickBooksRequest {
            at,
            method: method.to_owned(),
            path: path.to_owned(),
        });
    }

    /// Queues a fault for the realm's API calls. Misuse is logged and ignored; use
    /// [`Self::try_inject`] to get the error.
    pub fn inject(&self, realm_id: &str, fault: Fault) {
        if let Err(error) = self.try_inject(realm_id, fault) {
            tracing::error!(%error, "sandbox QuickBooks fault not queued");
        }
    }

    pub fn try_inject(&self, realm_id: &str, fault: Fault) -> Result<(), SandboxError> {
        fault.check().map_err(SandboxError::InvalidFault)?;
        let realm = self.known_realm(realm_id)?;
        lock(&realm.state).gate.faults.push(fault);
        Ok(())
    }

    /// Queues a fault for the app's calls to the token endpoint. Misuse is logged; use
    /// [`Self::try_inject_token`] to get the error.
    pub fn inject_token(&self, client_id: &str, fault: Fault) {
        if let Err(error) = self.try_inject_token(client_id, fault) {
            tracing::error!(%error, "sandbox QuickBooks token fault not queued");
        }
    }

    pub fn try_inject_token(&self, client_id: &str, fault: Fault) -> Result<(), SandboxError> {
        fault.check().map_err(SandboxError::InvalidFault)?;
        let app = self
            .app(client_id)
            .ok_or_else(|| SandboxError::UnknownApp(client_id.to_owned()))?;
        lock(&app.state).token_faults.push(fault);
        Ok(())
    }

    /// Seeds a record for import tests: keeps its `Id` (digits) or assigns one, sets
    /// `SyncToken`, `MetaData` and `Active`, creates or replaces, and returns the id. Not
    /// validated (a test may seed what a sloppy company holds, `QtyOnHand` included) and not
    /// counted as a create. Misuse is logged and returns an empty id; use
    /// [`Self::try_upsert_record`] to get the error.
    pub fn upsert_record(&self, realm_id: &str, entity: &str, record: Value) -> String {
        self.try_upsert_record(realm_id, entity, record)
            .unwrap_or_else(|error| {
                tracing::error!(%error, "sandbox QuickBooks record not seeded");
                String::new()
            })
    }

    pub fn try_upsert_record(
        &self,
        realm_id: &str,
        entity: &str,
        record: Value,
    ) -> Result<String, SandboxError> {
        let realm = self.known_realm(realm_id)?;
        let kind = Kind::parse(entity)
            .ok_or_else(|| SandboxError::UnknownQuickBooksEntity(entity.to_owned()))?;
        let Value::Object(body) = record else {
            return Err(SandboxError::InvalidRecord(
                "a record must be a JSON object".into(),
            ));
        };
        let mut state = lock(&realm.state);
        state
            .data
            .seed(kind, body, Utc::now())
            .map_err(SandboxError::InvalidRecord)
    }

    /// Ends every live access token of the app now, so its next call gets `401`
    /// (a test forcing expiry mid-sync). Returns how many tokens were live.
    pub fn expire_access_tokens(&self, client_id: &str) -> usize {
        lock(&self.shared.tokens).expire_access_tokens(client_id, Utc::now())
    }

    /// Ends every injected latency and timeout wait now (those requests answer 503). The
    /// sandbox calls it on shutdown.
    pub fn cancel_injected_waits(&self) {
        self.shared.interrupt.fire();
    }

    fn realm(&self, realm_id: &str) -> Option<Arc<Realm>> {
        read(&self.shared.registry).realms.get(realm_id).cloned()
    }

    fn known_realm(&self, realm_id: &str) -> Result<Arc<Realm>, SandboxError> {
        self.realm(realm_id)
            .ok_or_else(|| SandboxError::UnknownRealm(realm_id.to_owned()))
    }

    fn app(&self, client_id: &str) -> Option<Arc<App>> {
        read(&self.shared.registry).apps.get(client_id).cloned()
    }
}

/// `MetaData` times as QuickBooks writes them (`2015-07-24T10:33:39-07:00`; UTC here).
pub(crate) fn qb_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%:z").to_string()
}
