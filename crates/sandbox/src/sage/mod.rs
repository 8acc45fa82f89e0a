//! Simulator of the Sage Business Cloud Accounting API v3.1 for what an integration syncing
//! a wholesale platform uses: OAuth 2 (the authorization code with PKCE, client
//! authentication in the form, five-minute access tokens, single-use refresh tokens that
//! rotate on every refresh with no grace period and die 31 days after issue), contacts,
//! stock items and stock movements, sales quotes, sales estimates and sales invoices
//! (create, update, read, delete, list), ledger accounts (seeded, read-only),
//! `idempotency_id` replay, the list envelope with `updated_or_created_since` and
//! `deleted_since`, the `X-Business` header, and the per-business rate limit with `429` and
//! `Retry-After`.
//!
//! Served under `/sage` (see [`crate::sandbox_router`]):
//!
//! - `GET /sage/oauth2/auth/central` stands for `https://www.sageone.com/oauth2/auth/central`
//!   (`filter=apiv3.1`, `country` and `locale` accepted and ignored). Query:
//!   `response_type=code`, `client_id`, `redirect_uri` (one of
//!   [`SageAppConfig::redirect_uris`], compared exactly), `scope` (`full_access` or
//!   `readonly`; required here), `state`, `code_challenge` and `code_challenge_method=S256`
//!   (PKCE is required here; Sage's guide does not mention it). Granted: `302` with `code`,
//!   `country` and `state`; refused: `302` with `error` (`access_denied` when consent is
//!   denied, `invalid_scope`, `invalid_request`, …); an unknown client or redirect URI gets
//!   a `400` page. The code is single-use and lives 60 seconds (Sage's "Frequently Raised
//!   Errors" page).
//! - `POST /sage/oauth/token` stands for `https://oauth.accounting.sage.com/token`; form
//!   encoded, the client authenticated **in the form** (`client_id`, `client_secret`, as
//!   Sage's guide shows them). HTTP Basic is not documented by Sage and is refused
//!   (`401 invalid_client`). `grant_type=authorization_code` (`code`, `redirect_uri`,
//!   `code_verifier`) or `refresh_token` (`refresh_token`); any other grant type answers
//!   `400 invalid_grant`, as that page says. The answer: `access_token`, `expires_in`
//!   (300), `token_type` (`bearer`), `refresh_token`, `refresh_token_expires_in` (2678400),
//!   `scope`, `requested_by_id`. A refresh token already used, revoked, expired or another
//!   app's answers `400 {"error":"invalid_grant"}`; a used one is also counted in
//!   [`SageStats::reused_refresh_tokens`].
//! - `/sage/v3.1/…` stands for `https://api.accounting.sage.com/v3.1/…`. Every request needs
//!   `Authorization: Bearer <access token>`; `X-Business` picks one of the app's businesses
//!   (the first, the user's lead business, without it). A business the token does not
//!   reach answers `403 MultiUserAccessDenied` with `$source` `X-Business` (unverified:
//!   Sage's answer is undocumented). `GET /v3.1/businesses` lists the token's businesses.
//! - `/sage/_sandbox/…`: loopback admin endpoints (apps, stats, faults, records).
//!
//! # Resources
//!
//! `contacts`, `stock_items`, `stock_movements` (create, read, list), `sales_quotes`,
//! `sales_estimates`, `sales_invoices`, `ledger_accounts` (read, list). A create is
//! `POST /v3.1/{resource}` with the body in the namespace (`{"contact": {...}}`) and answers
//! `201` with the object; `PUT /v3.1/{resource}/{id}` updates (see `model.rs` for the
//! merge), `GET` reads, `DELETE` (contacts, stock items, quotes, estimates) answers `204`
//! and leaves a deletion for `deleted_since`. Attributes are the swagger's (`post…`
//! definitions); an attribute it does not list, or a value of the wrong type, is refused.
//! Rules: required attributes as the swagger lists them; `contact_type_ids` from
//! `CUSTOMER`, `VENDOR` (unverified list); a contact's `reference` and a stock item's
//! `item_code` unique per business (case-insensitive); ledger accounts must exist (a stock
//! item's `SALES` and `PURCHASE` ones of that kind); `product_id` must be a stock item
//! (services are not simulated); `expiry_date`/`due_date` not before `date`;
//! `quantity_in_stock` is writable (the swagger lists it on post and put) and stock
//! movements add their `quantity` to it. Times are ISO 8601, whole seconds, `Z`.
//!
//! # Idempotency
//!
//! Sage's documented mechanism: an `idempotency_id` (32 hex digits, hyphenless; another
//! format is `422 RecordInvalid`) inside the namespace of a create. A repeat with the same
//! id (per business and resource) creates nothing and answers the first answer again,
//! status and body, whatever its body (unverified: whether Sage compares bodies, and for
//! how long it remembers; here for ever). Only successful creates are remembered: a refused
//! one leaves the id free (unverified).
//!
//! # Errors and limits
//!
//! Errors are Sage's array (see `errors.rs` for which `$dataCode`s are verified). The rate
//! limit is per business: [`SageLimits::per_minute`] (the v3.0 docs: 200 calls in any 60 s)
//! and an optional per-day one; over it, `429 TooManyRequests` with `Retry-After`, and a
//! call before that wait is over is a violation, refused again. A `readonly` token writing
//! answers `403 MultiUserAccessDenied`.

mod config;
mod consent;
mod errors;
mod fields;
mod http;
mod list;
mod model;
mod store;
mod tokens;

pub use crate::faults::Fault;
pub use config::{
    DEFAULT_PURCHASE_LEDGER_ACCOUNT, DEFAULT_SALES_LEDGER_ACCOUNT, SageAppConfig, SageBusiness,
    SageLedgerAccount, SageLimits, SageStats,
};

use crate::SandboxError;
use crate::authorization::CodeStore;
use crate::faults::{Interrupt, TrafficGate};
use crate::guard::{lock, read, write};
use crate::idempotency::IdempotencyStore;
use axum::http::StatusCode;
use chrono::{TimeDelta, Utc};
use model::Origin;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use store::{BusinessData, Resource};
use tokens::TokenStore;

pub(crate) use http::routes;

/// The simulator. Cheap to clone: clones share the same apps and businesses.
#[derive(Clone, Default)]
pub struct SageSim {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SageSim {
    // Not derived: it would print every record of every business.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let registry = read(&self.shared.registry);
        f.debug_struct("SageSim")
            .field("apps", &registry.apps.len())
            .field("businesses", &registry.businesses.len())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Shared {
    registry: RwLock<Registry>,
    /// Never held across an `.await` or while taking another lock.
    tokens: Mutex<TokenStore>,
    codes: Mutex<CodeStore<consent::Consented>>,
    interrupt: Interrupt,
}

#[derive(Debug, Default)]
struct Registry {
    apps: HashMap<String, Arc<App>>,
    /// By lower-case id.
    businesses: HashMap<String, Arc<Business>>,
}

#[derive(Debug)]
struct App {
    state: Mutex<AppState>,
}

#[derive(Debug)]
struct AppState {
    config: SageAppConfig,
    token_refreshes: u64,
    rejected_refreshes: u64,
    reused_refresh_tokens: u64,
    authorizations: u64,
    refused_authorizations: u64,
    code_exchanges: u64,
}

impl AppState {
    fn business_ids(&self) -> Vec<String> {
        self.config
            .businesses
            .iter()
            .map(|b| b.id.to_ascii_lowercase())
            .collect()
    }
}

#[derive(Debug)]
struct Business {
    id: String,
    state: Mutex<BusinessState>,
}

#[derive(Debug)]
struct BusinessState {
    name: String,
    gate: TrafficGate,
    day_gate: TrafficGate,
    data: BusinessData,
    /// `resource:idempotency_id` → the first (successful) answer.
    replays: IdempotencyStore<(StatusCode, Value)>,
}

impl BusinessState {
    fn new(name: String, limits: &SageLimits) -> Self {
        Self {
            name,
            gate: TrafficGate::new(
                limits.per_minute,
                Duration::from_millis(limits.minute_window_ms),
            ),
            day_gate: TrafficGate::new(limits.per_day, Duration::from_millis(limits.day_window_ms)),
            data: BusinessData::default(),
            replays: IdempotencyStore::default(),
        }
    }

    fn seed_ledger_accounts(&mut self, accounts: &[SageLedgerAccount]) {
        // Set up long before any sync: an incremental import does not see them as changes.
        let at = Utc::now() - TimeDelta::days(365);
        for account in accounts {
            let input = json!({"name": account.name, "kind": account.kind,
                               "nominal_code": account.nominal_code});
            let Value::Object(input) = input else {
                continue;
            };
            let id = account.id.to_ascii_lowercase();
            let result = model::write(
                &mut self.data,
                Resource::LedgerAccounts,
                Some(&id),
                input,
                Origin::Seed,
                at,
            );
            if let Err(error) = result {
                tracing::error!(?error, "sandbox Sage ledger account not seeded");
            }
        }
    }
}

impl SageSim {
    pub fn new() -> Self {
        Self::default()
    }

    /// Provisions an app, its businesses and (with `refresh_token`) a consent. Provisioning
    /// a client id again updates its config and adds businesses, keeping records, tokens
    /// and counters. Misuse is logged; use [`Self::try_add_app`] to get the error.
    pub fn add_app(&self, config: SageAppConfig) {
        if let Err(error) = self.try_add_app(config) {
            tracing::error!(%error, "sandbox Sage app not provisioned");
        }
    }

    pub fn try_add_app(&self, config: SageAppConfig) -> Result<(), SandboxError> {
        config.check().map_err(SandboxError::InvalidSageApp)?;
        let now = Utc::now();
        let mut registry = write(&self.shared.registry);
        if let Some(token) = &config.refresh_token {
            lock(&self.shared.tokens)
                .add_grant(&config.client_id, token, config.lifetimes(), now)
                .map_err(SandboxError::InvalidSageApp)?;
        }
        for business in &config.businesses {
            let id = business.id.to_ascii_lowercase();
            let number = registry.businesses.len() + 1;
            let entry = registry.businesses.entry(id.clone()).or_insert_with(|| {
                let name = format!("Sandbox Business {number}");
                Arc::new(Business {
                    id,
                    state: Mutex::new(BusinessState::new(name, &config.limits)),
                })
            });
            let mut state = lock(&entry.state);
            if !business.name.is_empty() {
                state.name.clone_from(&business.name);
            }
            state.gate.set_limit(config.limits.per_minute);
            state.day_gate.set_limit(config.limits.per_day);
            state.seed_ledger_accounts(&config.ledger_accounts);
        }
        let config = SageAppConfig {
            refresh_token: None,
            ..config
        };
        match registry.apps.get(&config.client_id) {
            Some(app) => {
                let mut state = lock(&app.state);
                let mut businesses = std::mem::take(&mut state.config.businesses);
                for business in &config.businesses {
                    if !businesses
                        .iter()
                        .any(|b| b.id.eq_ignore_ascii_case(&business.id))
                    {
                        businesses.push(business.clone());
                    }
                }
                state.config = SageAppConfig {
                    businesses,
                    ..config
                };
            }
            None => {
                let state = AppState {
                    config: config.clone(),
                    token_refreshes: 0,
                    rejected_refreshes: 0,
                    reused_refresh_tokens: 0,
                    authorizations: 0,
                    refused_authorizations: 0,
                    code_exchanges: 0,
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

    /// The business's counters, or `None` for an unknown business.
    pub fn stats(&self, business_id: &str) -> Option<SageStats> {
        let business = self.business(business_id)?;
        let apps: Vec<Arc<App>> = read(&self.shared.registry).apps.values().cloned().collect();
        let mut stats = {
            let state = lock(&business.state);
            let data = &state.data;
            let per = |counts: &[u64]| {
                Resource::CREATABLE
                    .iter()
                    .map(|r| (r.name().to_owned(), counts[r.index()]))
                    .collect()
            };
            let traffic = state.gate.stats();
            let day = state.day_gate.stats();
            SageStats {
                requests: traffic.requests,
                creates: per(&data.creates),
                creates_by_reference: data.creates_by_reference.clone(),
                updates: per(&data.updates),
                records: Resource::ALL
                    .iter()
                    .map(|r| (r.name().to_owned(), data.count(*r)))
                    .collect(),
                replays: state.replays.replays(),
                duplicate_references: Resource::ALL
                    .iter()
                    .map(|r| (r.name().to_owned(), data.duplicate_references(*r)))
                    .filter(|(_, dups)| !dups.is_empty())
                    .collect(),
                rate_limited: traffic.rate_limited + day.rate_limited,
                violations: traffic.violations + day.violations,
                max_requests_in_window: traffic.max_requests_in_window,
                ..SageStats::default()
            }
        };
        for app in apps {
            let state = lock(&app.state);
            if state.business_ids().contains(&business.id) {
                stats.token_refreshes += state.token_refreshes;
                stats.rejected_refreshes += state.rejected_refreshes;
                stats.reused_refresh_tokens += state.reused_refresh_tokens;
                stats.authorizations += state.authorizations;
                stats.refused_authorizations += state.refused_authorizations;
                stats.code_exchanges += state.code_exchanges;
            }
        }
        Some(stats)
    }

    /// Every live record of a resource (`contacts`, `stock_items`, …), as the API renders
    /// it, in `(updated_at, id)` order; empty for an unknown business or resource.
    pub fn records(&self, business_id: &str, resource: &str) -> Vec<Value> {
        let (Some(business), Some(resource)) =
            (self.business(business_id), Resource::parse(resource))
        else {
            return Vec::new();
        };
        let state = lock(&business.state);
        state
            .data
            .ordered(resource)
            .into_iter()
            .map(|(_, stored)| Value::Object(stored.body.clone()))
            .collect()
    }

    /// Writes a record as the ERP's own users would (not counted, `updated_at` bumped):
    /// the namespace's attributes (`{"name": …, "contact_type_ids": […]}`), with an `id` to
    /// replace that record. Types and links are checked; uniqueness is not, so a test can
    /// seed a duplicate. Returns the id.
    pub fn upsert_record(
        &self,
        business_id: &str,
        resource: &str,
        record: Value,
    ) -> Result<String, SandboxError> {
        let business = self.known_business(business_id)?;
        let resource = Resource::parse(resource)
            .filter(|r| r.creatable())
            .ok_or_else(|| SandboxError::UnknownSageResource(resource.to_owned()))?;
        let Value::Object(mut input) = record else {
            return Err(SandboxError::InvalidRecord(
                "a record must be a JSON object".into(),
            ));
        };
        let id = match input.remove("id") {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) if fields::is_hex32(&id) => Some(id.to_ascii_lowercase()),
            Some(other) => {
                return Err(SandboxError::InvalidRecord(format!(
                    "id must be 32 hex digits, not {other}"
                )));
            }
        };
        let mut state = lock(&business.state);
        model::write(
            &mut state.data,
            resource,
            id.as_deref(),
            input,
            Origin::Seed,
            Utc::now(),
        )
        .map_err(|failure| SandboxError::InvalidRecord(failure.body().to_string()))
    }

    /// Bumps a record's `updated_at` to now, as an edit in Sage's UI would.
    pub fn touch(&self, business_id: &str, resource: &str, id: &str) -> Result<(), SandboxError> {
        let exists = Resource::parse(resource).is_some_and(|kind| {
            self.business(business_id).is_some_and(|b| {
                lock(&b.state)
                    .data
                    .get(kind, &id.to_ascii_lowercase())
                    .is_some()
            })
        });
        if !exists {
            return Err(self.unknown_record(resource, id));
        }
        self.upsert_record(business_id, resource, json!({ "id": id }))
            .map(drop)
    }

    /// Deletes a record outside the API, leaving a deletion for `deleted_since`.
    pub fn delete_record(
        &self,
        business_id: &str,
        resource: &str,
        id: &str,
    ) -> Result<(), SandboxError> {
        let business = self.known_business(business_id)?;
        let kind = Resource::parse(resource)
            .ok_or_else(|| SandboxError::UnknownSageResource(resource.to_owned()))?;
        let mut state = lock(&business.state);
        let at = state.data.stamp(Utc::now());
        if state.data.delete(kind, &id.to_ascii_lowercase(), at) {
            Ok(())
        } else {
            Err(self.unknown_record(resource, id))
        }
    }

    /// Sets the stock of the stock item with this `item_code` (as a stock take would).
    pub fn set_stock(
        &self,
        business_id: &str,
        item_code: &str,
        quantity: f64,
    ) -> Result<(), SandboxError> {
        let business = self.known_business(business_id)?;
        let quantity = rust_decimal::Decimal::try_from(quantity)
            .map_err(|e| SandboxError::InvalidRecord(format!("quantity {quantity}: {e}")))?;
        let mut state = lock(&business.state);
        let id = state
            .data
            .find_reference(Resource::StockItems, item_code, None)
            .map(str::to_owned)
            .ok_or_else(|| self.unknown_record("stock_items", item_code))?;
        let at = state.data.stamp(Utc::now());
        model::set_quantity(&mut state.data, &id, |_| quantity, at);
        Ok(())
    }

    /// Ends every live access token of the app now; returns how many were live.
    pub fn expire_access_tokens(&self, client_id: &str) -> usize {
        lock(&self.shared.tokens).expire_access_tokens(client_id, Utc::now())
    }

    /// Revokes every live refresh token of the app (the user disconnected it); returns how
    /// many were live.
    pub fn revoke_refresh_tokens(&self, client_id: &str) -> usize {
        lock(&self.shared.tokens).revoke_refresh_tokens(client_id)
    }

    /// Queues a fault for the business's API calls. Misuse is logged; use
    /// [`Self::try_inject`] to get the error.
    pub fn inject(&self, business_id: &str, fault: Fault) {
        if let Err(error) = self.try_inject(business_id, fault) {
            tracing::error!(%error, "sandbox Sage fault not queued");
        }
    }

    pub fn try_inject(&self, business_id: &str, fault: Fault) -> Result<(), SandboxError> {
        fault.check().map_err(SandboxError::InvalidFault)?;
        let business = self.known_business(business_id)?;
        lock(&business.state).gate.faults.push(fault);
        Ok(())
    }

    /// Ends every injected latency and timeout wait now. The sandbox calls it on shutdown.
    pub fn cancel_injected_waits(&self) {
        self.shared.interrupt.fire();
    }

    fn business(&self, business_id: &str) -> Option<Arc<Business>> {
        read(&self.shared.registry)
            .businesses
            .get(&business_id.to_ascii_lowercase())
            .cloned()
    }

    fn known_business(&self, business_id: &str) -> Result<Arc<Business>, SandboxError> {
        self.business(business_id)
            .ok_or_else(|| SandboxError::UnknownSageBusiness(business_id.to_owned()))
    }

    fn app(&self, client_id: &str) -> Option<Arc<App>> {
        read(&self.shared.registry).apps.get(client_id).cloned()
    }

    fn unknown_record(&self, resource: &str, id: &str) -> SandboxError {
        SandboxError::UnknownRecord {
            collection: resource.to_owned(),
            id: id.to_owned(),
        }
    }
}

/// The namespace content of a write body (`{"contact": {...}}` → `{...}`).
fn namespace(resource: Resource, body: &Value) -> Result<Map<String, Value>, errors::Failure> {
    let wrong = || {
        errors::Failure::bad_param(
            resource.singular(),
            format!(
                "the body must be a JSON object {{\"{}\": {{...}}}}",
                resource.singular()
            ),
        )
    };
    let object = body.as_object().ok_or_else(wrong)?;
    if object.len() != 1 {
        return Err(wrong());
    }
    match object.get(resource.singular()) {
        Some(Value::Object(inner)) => Ok(inner.clone()),
        _ => Err(wrong()),
    }
}
