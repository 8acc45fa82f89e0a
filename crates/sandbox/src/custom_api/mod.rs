//! Simulator of a tenant's own REST API, implementing `docs/connectors/custom_api.md` to the
//! letter: API-key auth in a configurable header, idempotent creates (`201` + `Location`,
//! replay, `409` in flight, `422` on a different body), full-record updates, cursor-paginated
//! imports with tombstones, problem+json errors, and a per-second rate limit with `429` +
//! `Retry-After`.
//!
//! It owns the accounts (one per API key) and their records, and counts what each account
//! was asked to do so tests can prove "created exactly once". It must stay strict: anything
//! the contract lets a real API refuse, it refuses.
//!
//! Served under `/custom_api` (see [`crate::router`]); [`CustomApiSim`] is the in-process
//! handle tests and the demo use to provision accounts, seed records, inject faults and read
//! the counters.

mod http;
mod store;
mod validate;

pub use crate::faults::Fault;

use crate::SandboxError;
use crate::faults::{Interrupt, TrafficGate};
use crate::idempotency::{Fingerprinter, IdempotencyStore, KeyOwner};
use axum::http::{HeaderName, HeaderValue};
use chrono::{DateTime, SubsecRound, Utc};
use http::StoredResponse;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;
use store::{Collection, CollectionStore};

pub(crate) use http::routes;

/// The contract's default auth header.
pub const DEFAULT_AUTH_HEADER: &str = "X-API-Key";

/// The contract's rate limit is per second.
const RATE_WINDOW: Duration = Duration::from_secs(1);

fn default_auth_header() -> String {
    DEFAULT_AUTH_HEADER.to_owned()
}

/// One tenant account of the simulated API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// The key the client must present.
    pub api_key: String,
    /// The header that must carry it (case-insensitive), `X-API-Key` by default.
    #[serde(default = "default_auth_header")]
    pub auth_header: String,
    /// Requests accepted per one-second window; unlimited when absent.
    #[serde(default)]
    pub requests_per_second: Option<u32>,
}

impl AccountConfig {
    /// An account with the default header and no rate limit.
    pub fn new(api_key: impl Into<String>) -> Self {
        Self {
            api_key: api_key.into(),
            auth_header: default_auth_header(),
            requests_per_second: None,
        }
    }
}

/// What one account was asked to do, for "exactly once" and "within the limit" assertions.
/// Every collection appears in the per-collection maps, with 0 when untouched.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountStats {
    /// Every request that reached the account (after auth), including refused ones.
    pub requests: u64,
    /// Collection → records actually created (by the API or seeded).
    pub creates: BTreeMap<String, u64>,
    /// Idempotency key → records actually created with it; never above 1 for a correct API.
    pub creates_by_key: BTreeMap<String, u64>,
    /// Requests answered from the idempotency store.
    pub replays: u64,
    /// Collection → records actually replaced.
    pub updates: BTreeMap<String, u64>,
    /// Collection → live (not deleted) records.
    pub records: BTreeMap<String, u64>,
    /// Collection → business keys (`sku`, lower-cased `email`, `order_number`,
    /// `invoice_number`, `sku:warehouse_code`) carried by more than one live record.
    pub duplicate_business_keys: BTreeMap<String, Vec<String>>,
    /// 429s sent.
    pub rate_limited: u64,
    /// Requests received while the account had been told (by `Retry-After`) to wait.
    pub violations: u64,
    /// Most requests accepted in one rate-limit window.
    pub max_requests_in_window: u64,
}

/// The simulator. Cheap to clone: clones share the same accounts.
#[derive(Clone, Default)]
pub struct CustomApiSim {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for CustomApiSim {
    // Not derived: it would print every record of every account.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let accounts = self
            .shared
            .registry
            .read()
            .map_or(0, |registry| registry.accounts.len());
        f.debug_struct("CustomApiSim")
            .field("accounts", &accounts)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Shared {
    registry: RwLock<Registry>,
    fingerprinter: Fingerprinter,
    interrupt: Interrupt,
}

#[derive(Debug, Default)]
struct Registry {
    accounts: HashMap<String, Arc<Account>>,
    /// Every header some account authenticates with, so a request is matched without
    /// scanning all accounts.
    auth_headers: Vec<HeaderName>,
}

#[derive(Debug)]
struct Account {
    auth_header: HeaderName,
    /// The account's one lock; never held across an `.await`.
    state: Arc<Mutex<AccountState>>,
}

#[derive(Debug)]
struct AccountState {
    gate: TrafficGate,
    collections: [CollectionStore; 5],
    /// `Idempotency-Key` → the successful answer, replayed for 24 h.
    idempotency: IdempotencyStore<StoredResponse>,
    /// Last `updated_at` handed out: the account's clock never goes back, even if the wall
    /// clock does, so an import by `updated_since` cannot miss a change.
    last_stamp: DateTime<Utc>,
}

impl AccountState {
    fn new(requests_per_second: Option<u32>) -> Self {
        Self {
            gate: TrafficGate::new(requests_per_second, RATE_WINDOW),
            collections: Default::default(),
            idempotency: IdempotencyStore::default(),
            last_stamp: DateTime::<Utc>::MIN_UTC,
        }
    }

    fn collection(&mut self, collection: Collection) -> &mut CollectionStore {
        &mut self.collections[collection.index()]
    }

    /// The `updated_at` for a write happening now.
    fn stamp(&mut self, now: DateTime<Utc>) -> DateTime<Utc> {
        let at = now.trunc_subsecs(6).max(self.last_stamp);
        self.last_stamp = at;
        at
    }

    fn stats(&self) -> AccountStats {
        let traffic = self.gate.stats();
        let per_collection = |f: &dyn Fn(&CollectionStore) -> u64| {
            Collection::ALL
                .iter()
                .map(|c| (c.name().to_owned(), f(&self.collections[c.index()])))
                .collect()
        };
        AccountStats {
            requests: traffic.requests,
            creates: per_collection(&|s| s.creates),
            creates_by_key: self.idempotency.creates_by_key(),
            replays: self.idempotency.replays(),
            updates: per_collection(&|s| s.updates),
            records: per_collection(&|s| s.live_count()),
            duplicate_business_keys: Collection::ALL
                .iter()
                .map(|c| {
                    let dups = self.collections[c.index()].duplicate_business_keys(*c);
                    (c.name().to_owned(), dups)
                })
                .filter(|(_, dups)| !dups.is_empty())
                .collect(),
            rate_limited: traffic.rate_limited,
            violations: traffic.violations,
            max_requests_in_window: traffic.max_requests_in_window,
        }
    }
}

/// Locks an account. A poisoned lock only means a handler panicked mid-request; the state
/// is still the best record of what happened, and tests want to read it.
fn lock(state: &Mutex<AccountState>) -> MutexGuard<'_, AccountState> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl KeyOwner for Mutex<AccountState> {
    fn release(&self, key: &str, token: u64) {
        lock(self).idempotency.settle(key, token, None, Utc::now());
    }
}

impl CustomApiSim {
    pub fn new() -> Self {
        Self::default()
    }

    /// Provisions an API key. Provisioning a key again changes its header and rate limit and
    /// keeps its records and counters. An invalid account (empty key, key or header not
    /// valid in HTTP, a limit of 0) is logged and ignored; use [`Self::try_add_account`] to
    /// get the error.
    pub fn add_account(&self, account: AccountConfig) {
        if let Err(error) = self.try_add_account(account) {
            tracing::error!(%error, "sandbox account not provisioned");
        }
    }

    pub fn try_add_account(&self, account: AccountConfig) -> Result<(), SandboxError> {
        let invalid = |why: String| Err(SandboxError::InvalidAccount(why));
        if account.api_key.is_empty() || HeaderValue::from_str(&account.api_key).is_err() {
            return invalid("api_key must be non-empty visible ASCII".into());
        }
        let Ok(auth_header) = HeaderName::from_bytes(account.auth_header.as_bytes()) else {
            return invalid(format!(
                "auth_header {:?} is not an HTTP header name",
                account.auth_header
            ));
        };
        if account.requests_per_second == Some(0) {
            return invalid("requests_per_second must be at least 1".into());
        }

        let mut registry = self
            .shared
            .registry
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let state = match registry.accounts.get(&account.api_key) {
            Some(existing) => {
                lock(&existing.state)
                    .gate
                    .set_limit(account.requests_per_second);
                existing.state.clone()
            }
            None => Arc::new(Mutex::new(AccountState::new(account.requests_per_second))),
        };
        registry
            .accounts
            .insert(account.api_key, Arc::new(Account { auth_header, state }));
        let mut headers: Vec<HeaderName> = registry
            .accounts
            .values()
            .map(|a| a.auth_header.clone())
            .collect();
        headers.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        headers.dedup();
        registry.auth_headers = headers;
        Ok(())
    }

    /// The account's counters, or `None` for an unknown key.
    pub fn stats(&self, api_key: &str) -> Option<AccountStats> {
        let account = self.account(api_key)?;
        let state = lock(&account.state);
        Some(state.stats())
    }

    /// The account's live records of a collection in `(updated_at, id)` order; empty for an
    /// unknown key or collection.
    pub fn records(&self, api_key: &str, collection: &str) -> Vec<Value> {
        let (Some(account), Some(collection)) =
            (self.account(api_key), Collection::parse(collection))
        else {
            return Vec::new();
        };
        let state = lock(&account.state);
        state.collections[collection.index()]
            .live()
            .map(|r| Value::Object(r.clone()))
            .collect()
    }

    /// Queues a fault for the account. An unknown key or a fault that could never fire is
    /// logged and ignored; use [`Self::try_inject`] to get the error.
    pub fn inject(&self, api_key: &str, fault: Fault) {
        if let Err(error) = self.try_inject(api_key, fault) {
            tracing::error!(%error, "sandbox fault not queued");
        }
    }

    pub fn try_inject(&self, api_key: &str, fault: Fault) -> Result<(), SandboxError> {
        fault.check().map_err(SandboxError::InvalidFault)?;
        let account = self.known_account(api_key)?;
        lock(&account.state).gate.faults.push(fault);
        Ok(())
    }

    /// Seeds a record for import tests: keeps its `id` (string or integer) or assigns one,
    /// sets `updated_at` to now, creates or replaces, and returns the id. Not validated, so a
    /// test can seed what a sloppy ERP would hold. Misuse (unknown key or collection, a
    /// record that is not an object) is logged and returns an empty id; use
    /// [`Self::try_upsert_record`] to get the error.
    pub fn upsert_record(&self, api_key: &str, collection: &str, record: Value) -> String {
        self.try_upsert_record(api_key, collection, record)
            .unwrap_or_else(|error| {
                tracing::error!(%error, "sandbox record not seeded");
                String::new()
            })
    }

    pub fn try_upsert_record(
        &self,
        api_key: &str,
        collection: &str,
        record: Value,
    ) -> Result<String, SandboxError> {
        let account = self.known_account(api_key)?;
        let collection = known_collection(collection)?;
        let Value::Object(fields) = record else {
            return Err(SandboxError::InvalidRecord(
                "a record must be a JSON object".into(),
            ));
        };
        let mut state = lock(&account.state);
        let at = state.stamp(Utc::now());
        state
            .collection(collection)
            .upsert(collection, fields, at)
            .map_err(SandboxError::InvalidRecord)
    }

    /// Deletes a record, leaving a tombstone the import returns. Misuse is logged; use
    /// [`Self::try_delete_record`] to get the error.
    pub fn delete_record(&self, api_key: &str, collection: &str, id: &str) {
        if let Err(error) = self.try_delete_record(api_key, collection, id) {
            tracing::error!(%error, "sandbox record not deleted");
        }
    }

    pub fn try_delete_record(
        &self,
        api_key: &str,
        collection: &str,
        id: &str,
    ) -> Result<(), SandboxError> {
        let account = self.known_account(api_key)?;
        let collection = known_collection(collection)?;
        let mut state = lock(&account.state);
        let at = state.stamp(Utc::now());
        if state.collection(collection).delete(id, at) {
            Ok(())
        } else {
            Err(SandboxError::UnknownRecord {
                collection: collection.name().to_owned(),
                id: id.to_owned(),
            })
        }
    }

    /// Ends every injected latency and timeout wait now (those requests answer 503). The
    /// sandbox calls it on shutdown; call it yourself before gracefully stopping a server you
    /// built with [`crate::router`].
    pub fn cancel_injected_waits(&self) {
        self.shared.interrupt.fire();
    }

    fn account(&self, api_key: &str) -> Option<Arc<Account>> {
        self.shared
            .registry
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .accounts
            .get(api_key)
            .cloned()
    }

    fn known_account(&self, api_key: &str) -> Result<Arc<Account>, SandboxError> {
        self.account(api_key)
            .ok_or_else(|| SandboxError::UnknownAccount(api_key.to_owned()))
    }
}

fn known_collection(name: &str) -> Result<Collection, SandboxError> {
    Collection::parse(name).ok_or_else(|| SandboxError::UnknownCollection(name.to_owned()))
}
