//! Simulator of the Microsoft Dataverse Web API (Dynamics 365 Sales) for what an integration
//! syncing a wholesale platform uses: the Entra ID client-credentials token endpoint (access
//! tokens that expire, no refresh token), `WhoAmI`, and the `accounts`, `products`,
//! `salesorders`, `salesorderdetails`, `invoices` and `invoicedetails` tables (with the
//! seeded, read-only `uomschedules`, `uoms` and `pricelevels` that products, documents and
//! lines must point at): create (`POST` → `204` with `OData-EntityId`, or `201` with
//! `Prefer: return=representation`), update and upsert (`PATCH` by primary key or by
//! alternate key `accountnumber` / `productnumber` / `ordernumber` / `invoicenumber`, with `If-Match: *` / `If-None-Match: *`), delete, `@odata.bind` lookups,
//! reads, and collection queries (`$select`, `$filter`, `$orderby`, `$top`,
//! `Prefer: odata.maxpagesize` with `@odata.nextLink`). Service protection: requests per
//! window and concurrent requests per environment, answered with `429` and `Retry-After`.
//!
//! It owns the environments (one application user each, its tables and counters) and counts
//! creates per alternate key, so tests can prove "created exactly once". It must stay strict:
//! unknown columns, over-long values, missing required columns, duplicate alternate keys and
//! lookups to missing rows are refused with Dataverse's error codes. `$batch` and
//! computed columns (document totals) are not served.
//!
//! Served under `/dataverse` (see [`crate::sandbox_router`]): an environment's Web API at
//! `/dataverse/env/{org}/api/data/v9.2/…` (its environment URL is `/dataverse/env/{org}`), the
//! token endpoint at `/dataverse/login/{tenant}/oauth2/v2.0/token`, and loopback admin
//! endpoints under `/dataverse/_sandbox/…`. [`DataverseSim`] is the in-process handle.

mod batch;
mod http;
mod model;
mod query;

pub use crate::faults::Fault;

use crate::SandboxError;
use crate::faults::{FaultQueue, Interrupt, TrafficGate};
use chrono::{DateTime, TimeDelta, Utc};
use model::EnvData;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use uuid::Uuid;

pub(crate) use http::routes;

const fn default_access_token_ttl() -> u64 {
    // Entra ID: "60–90 minutes"; the token answer says 3599.
    3599
}

/// One Dataverse environment and the app registered in it as an application user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataverseEnvConfig {
    /// The organisation name of the environment URL (`https://{org}.crm.dynamics.com`):
    /// letters, digits and `-`.
    pub org: String,
    /// The Entra ID tenant whose token endpoint issues tokens for this app.
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    #[serde(default = "default_access_token_ttl")]
    pub access_token_ttl_secs: u64,
    #[serde(default)]
    pub limits: DataverseLimits,
}

impl DataverseEnvConfig {
    pub fn new(
        org: impl Into<String>,
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Self {
        Self {
            org: org.into(),
            tenant_id: tenant_id.into(),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            access_token_ttl_secs: default_access_token_ttl(),
            limits: DataverseLimits::default(),
        }
    }
}

/// Service protection limits per user (the application user) and environment. `None` lifts a
/// limit; the window is configurable so a test can compress five minutes into a second.
/// Dataverse's window slides; this one is fixed and aligned on the clock (a client that keeps
/// under the limit in every fixed window may still exceed it in a sliding one, never the
/// reverse, so the simulator is not more lenient where it matters).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataverseLimits {
    /// Requests per window (Dataverse: 6,000 per 5 minutes).
    pub requests: Option<u32>,
    /// Requests in progress at once (Dataverse: 52).
    pub concurrent: Option<u32>,
    /// Length of the window (default 300,000 ms).
    pub window_ms: u64,
}

impl Default for DataverseLimits {
    fn default() -> Self {
        Self {
            requests: Some(6_000),
            concurrent: Some(52),
            window_ms: 300_000,
        }
    }
}

impl DataverseLimits {
    pub fn unlimited() -> Self {
        Self {
            requests: None,
            concurrent: None,
            ..Self::default()
        }
    }
}

/// What one environment was asked to do. Tables appear once touched.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataverseStats {
    /// Web API calls that passed authentication, refused ones too.
    pub requests: u64,
    /// Collection reads among them.
    pub queries: u64,
    /// Rows those reads answered (all pages), so a test can tell a filtered read from a
    /// full one.
    pub rows_returned: u64,
    /// Entity set → rows created through the API (seeds are not counted).
    pub creates: BTreeMap<String, u64>,
    /// Entity set → rows updated through the API (an upsert that found its row included).
    pub updates: BTreeMap<String, u64>,
    /// `set:keyvalue` → rows created with that alternate key value.
    pub creates_by_key: BTreeMap<String, u64>,
    /// Entity set → alternate key values created more than once.
    pub duplicate_creates: BTreeMap<String, Vec<String>>,
    /// Entity set → rows held.
    pub records: BTreeMap<String, u64>,
    /// 429s sent.
    pub rate_limited: u64,
    /// Requests received while the environment had been told (`Retry-After`) to wait.
    pub violations: u64,
    pub max_requests_in_window: u64,
    pub max_concurrent_requests: u64,
    /// Tokens issued to the app.
    pub tokens_issued: u64,
    /// Token requests refused (`invalid_client`, `invalid_scope`).
    pub rejected_token_requests: u64,
    /// Calls refused because the access token had expired.
    pub expired_token_calls: u64,
}

/// The simulator. Cheap to clone: clones share the same environments.
#[derive(Clone, Default)]
pub struct DataverseSim {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for DataverseSim {
    // Not derived: it would print every row of every environment.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataverseSim")
            .field("environments", &read(&self.shared.envs).len())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Shared {
    envs: RwLock<HashMap<String, Arc<Env>>>,
    /// Access token → (org, expiry); never held while taking another lock.
    tokens: Mutex<HashMap<String, (String, DateTime<Utc>)>>,
    interrupt: Interrupt,
}

#[derive(Debug)]
struct Env {
    org: String,
    /// Stable per environment, what `WhoAmI` answers.
    user_id: Uuid,
    organization_id: Uuid,
    business_unit_id: Uuid,
    uom_schedule_id: Uuid,
    uom_id: Uuid,
    price_level_id: Uuid,
    state: Mutex<EnvState>,
}

#[derive(Debug)]
struct EnvState {
    config: DataverseEnvConfig,
    gate: TrafficGate,
    token_faults: FaultQueue,
    in_flight: u32,
    max_in_flight: u64,
    data: EnvData,
    queries: u64,
    rows_returned: u64,
    tokens_issued: u64,
    rejected_token_requests: u64,
    expired_token_calls: u64,
}

use crate::guard::{lock, read, write};

fn window(limits: &DataverseLimits) -> Duration {
    Duration::from_millis(limits.window_ms.max(1))
}

impl DataverseSim {
    pub fn new() -> Self {
        Self::default()
    }

    /// Provisions an environment and its application user. Provisioning an org again
    /// replaces its app's credentials, lifetime and limits and keeps rows and counters. An
    /// invalid config is logged and ignored; use [`Self::try_add_environment`] for the error.
    pub fn add_environment(&self, config: DataverseEnvConfig) {
        if let Err(error) = self.try_add_environment(config) {
            tracing::error!(%error, "sandbox Dataverse environment not provisioned");
        }
    }

    pub fn try_add_environment(&self, config: DataverseEnvConfig) -> Result<(), SandboxError> {
        let invalid = |why: &str| Err(SandboxError::InvalidEnvironment(why.to_owned()));
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        };
        if !name_ok(&config.org) || !name_ok(&config.tenant_id) {
            return invalid("org and tenant_id must be letters, digits, '-' or '.'");
        }
        if config.client_id.is_empty() || config.client_secret.is_empty() {
            return invalid("client_id and client_secret must not be empty");
        }
        if config.access_token_ttl_secs == 0 || config.limits.window_ms == 0 {
            return invalid("access_token_ttl_secs and limits.window_ms must be at least 1");
        }
        if config.limits.requests == Some(0) || config.limits.concurrent == Some(0) {
            return invalid("limits must be at least 1 (null lifts them)");
        }
        let mut envs = write(&self.shared.envs);
        match envs.get(&config.org) {
            Some(env) => {
                let mut state = lock(&env.state);
                if state.gate.stats().requests == 0 {
                    let faults = std::mem::take(&mut state.gate.faults);
                    state.gate = TrafficGate::new(config.limits.requests, window(&config.limits));
                    state.gate.faults = faults;
                } else {
                    state.gate.set_limit(config.limits.requests);
                }
                state.config = config;
            }
            None => {
                let (uom_schedule_id, uom_id, price_level_id) =
                    (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
                let env = Env {
                    org: config.org.clone(),
                    user_id: Uuid::new_v4(),
                    organization_id: Uuid::new_v4(),
                    business_unit_id: Uuid::new_v4(),
                    uom_schedule_id,
                    uom_id,
                    price_level_id,
                    state: Mutex::new(EnvState {
                        gate: TrafficGate::new(config.limits.requests, window(&config.limits)),
                        config: config.clone(),
                        token_faults: FaultQueue::default(),
                        in_flight: 0,
                        max_in_flight: 0,
                        data: EnvData::new(uom_schedule_id, uom_id, price_level_id, Utc::now()),
                        queries: 0,
                        rows_returned: 0,
                        tokens_issued: 0,
                        rejected_token_requests: 0,
                        expired_token_calls: 0,
                    }),
                };
                envs.insert(config.org, Arc::new(env));
            }
        }
        Ok(())
    }

    /// The ids of the seeded unit group ("Default Unit") and its primary unit ("Primary
    /// Unit"), which every product must reference: `(uomscheduleid, uomid)`.
    pub fn default_unit(&self, org: &str) -> Option<(Uuid, Uuid)> {
        self.env(org).map(|e| (e.uom_schedule_id, e.uom_id))
    }

    /// The id of the seeded price list ("Default Price List"), which every sales order must
    /// reference.
    pub fn price_list(&self, org: &str) -> Option<Uuid> {
        self.env(org).map(|e| e.price_level_id)
    }

    /// The environment's counters, or `None` for an unknown org.
    pub fn stats(&self, org: &str) -> Option<DataverseStats> {
        let env = self.env(org)?;
        let state = lock(&env.state);
        let traffic = state.gate.stats();
        let data = &state.data;
        Some(DataverseStats {
            requests: traffic.requests,
            queries: state.queries,
            rows_returned: state.rows_returned,
            creates: data.creates.clone(),
            updates: data.updates.clone(),
            creates_by_key: data.creates_by_key.clone(),
            duplicate_creates: data.duplicate_creates(),
            records: data
                .tables
                .iter()
                .filter(|(set, _)| model::table(set).is_some_and(model::writable))
                .map(|(set, t)| ((*set).to_owned(), t.rows.len() as u64))
                .collect(),
            rate_limited: traffic.rate_limited,
            violations: traffic.violations,
            max_requests_in_window: traffic.max_requests_in_window,
            max_concurrent_requests: state.max_in_flight,
            tokens_issued: state.tokens_issued,
            rejected_token_requests: state.rejected_token_requests,
            expired_token_calls: state.expired_token_calls,
        })
    }

    /// Every row of an entity set (`accounts`, `products`, …) as the API renders it, in id
    /// order; empty for an unknown org or set.
    pub fn records(&self, org: &str, set: &str) -> Vec<Value> {
        let (Some(env), Some(def)) = (self.env(org), model::table(set)) else {
            return Vec::new();
        };
        let state = lock(&env.state);
        state
            .data
            .table(def)
            .map(|t| t.rows.values().map(|r| Value::Object(r.clone())).collect())
            .unwrap_or_default()
    }

    /// Seeds or replaces a row for import tests: keeps its primary key or assigns one, keeps
    /// a given `modifiedon` or stamps now, and returns the id. Not validated and not counted as a create.
    pub fn upsert_record(&self, org: &str, set: &str, record: Value) -> String {
        self.try_upsert_record(org, set, record)
            .unwrap_or_else(|error| {
                tracing::error!(%error, "sandbox Dataverse record not seeded");
                String::new()
            })
    }

    pub fn try_upsert_record(
        &self,
        org: &str,
        set: &str,
        record: Value,
    ) -> Result<String, SandboxError> {
        let env = self.known_env(org)?;
        let def =
            model::table(set).ok_or_else(|| SandboxError::UnknownDataverseTable(set.to_owned()))?;
        let Value::Object(row) = record else {
            return Err(SandboxError::InvalidRecord(
                "a record must be a JSON object".into(),
            ));
        };
        let mut state = lock(&env.state);
        state
            .data
            .seed(def, row, Utc::now())
            .map(|id| id.to_string())
            .map_err(SandboxError::InvalidRecord)
    }

    /// Queues a fault for the environment's Web API calls.
    pub fn inject(&self, org: &str, fault: Fault) {
        if let Err(error) = self.try_inject(org, fault) {
            tracing::error!(%error, "sandbox Dataverse fault not queued");
        }
    }

    pub fn try_inject(&self, org: &str, fault: Fault) -> Result<(), SandboxError> {
        fault.check().map_err(SandboxError::InvalidFault)?;
        lock(&self.known_env(org)?.state).gate.faults.push(fault);
        Ok(())
    }

    /// Queues a fault for the token endpoint's answers to this environment's app.
    pub fn try_inject_token(&self, org: &str, fault: Fault) -> Result<(), SandboxError> {
        fault.check().map_err(SandboxError::InvalidFault)?;
        lock(&self.known_env(org)?.state).token_faults.push(fault);
        Ok(())
    }

    /// Ends every live access token for the environment now, so the next call gets `401`
    /// (a test forcing expiry mid-sync). Returns how many were live.
    pub fn expire_access_tokens(&self, org: &str) -> usize {
        let now = Utc::now();
        let mut tokens = lock(&self.shared.tokens);
        let mut n = 0;
        for (token_org, expires) in tokens.values_mut() {
            if token_org == org && *expires > now {
                *expires = now - TimeDelta::seconds(1);
                n += 1;
            }
        }
        n
    }

    /// Ends every injected latency and timeout wait now. The sandbox calls it on shutdown.
    pub fn cancel_injected_waits(&self) {
        self.shared.interrupt.fire();
    }

    fn env(&self, org: &str) -> Option<Arc<Env>> {
        read(&self.shared.envs).get(org).cloned()
    }

    fn known_env(&self, org: &str) -> Result<Arc<Env>, SandboxError> {
        self.env(org)
            .ok_or_else(|| SandboxError::UnknownEnvironment(org.to_owned()))
    }
}
