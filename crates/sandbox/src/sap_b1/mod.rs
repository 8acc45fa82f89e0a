//! Simulator of the SAP Business One Service Layer (OData v3, `/b1s/v1`) for what an
//! integration syncing a wholesale platform uses: `Login`/`Logout` with the `B1SESSION` and
//! `ROUTEID` cookies and an idle session timeout (401 once it has passed), Items,
//! BusinessPartners, Orders and Invoices (the Documents schema) with SAP's create (`201` with
//! the entity), update (`PATCH`, `204`) and read-by-key (`Items('A001')`, `Orders(12)`)
//! semantics, the OData options the connector uses (`$filter`, `$select`, `$orderby`,
//! `$top`, `$skip`, `odata.nextLink` paging, `Prefer: odata.maxpagesize`), SAP's error body
//! (`{"error":{"code":…,"message":{"lang":"en-us","value":…}}}`) and an optional
//! self-imposed throttle (SAP publishes no limit; an overloaded server answers `503` with
//! `Retry-After`).
//!
//! It owns the companies (company databases, their users and records) and the sessions, and
//! counts what each company was asked to do per our reference (`ItemCode`, `CardCode`,
//! `NumAtCard`), so tests can prove "created exactly once". It must stay strict: what the
//! Service Layer refuses (unknown properties, unknown item or partner codes, duplicate keys,
//! a service row without its G/L `AccountCode`, an expired session), it refuses.
//!
//! Served under `/sap_b1` (see [`crate::sandbox_router`]): the API at `/sap_b1/b1s/v1/…` and
//! loopback admin endpoints under `/sap_b1/_sandbox/…`. [`SapB1Sim`] is the in-process
//! handle tests and the demo use.

mod http;
mod model;
mod query;

pub use crate::faults::Fault;

use crate::SandboxError;
use crate::faults::{Interrupt, TrafficGate};
use chrono::{DateTime, TimeDelta, Utc};
use model::{CompanyData, Kind};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

pub(crate) use http::routes;

const fn default_session_timeout() -> u64 {
    30 * 60
}

const fn default_page_size() -> usize {
    20
}

fn default_warehouses() -> Vec<String> {
    vec!["01".to_owned()]
}

/// A company database and the one user the integration logs in as.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SapB1CompanyConfig {
    /// `CompanyDB` in the Login body (e.g. `SBODEMOUS`); compared case-insensitively.
    pub company_db: String,
    pub username: String,
    pub password: String,
    /// Idle time after which a session is gone (`SessionTimeout` in `b1s.conf`; SAP's
    /// default is 30 minutes). Login answers it in whole minutes.
    #[serde(default = "default_session_timeout")]
    pub session_timeout_secs: u64,
    /// Records per page before `odata.nextLink` (SAP's default `PageSize`: 20). A client's
    /// `Prefer: odata.maxpagesize=N` overrides it per request.
    #[serde(default = "default_page_size")]
    pub page_size: usize,
    /// Warehouses that exist; the first is the default of new items and document lines.
    #[serde(default = "default_warehouses")]
    pub warehouses: Vec<String>,
    /// Self-imposed throttle; none by default, as SAP publishes none.
    #[serde(default)]
    pub limits: SapB1Limits,
}

impl SapB1CompanyConfig {
    /// A company with SAP's defaults.
    pub fn new(
        company_db: impl Into<String>,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        Self {
            company_db: company_db.into(),
            username: username.into(),
            password: password.into(),
            session_timeout_secs: default_session_timeout(),
            page_size: default_page_size(),
            warehouses: default_warehouses(),
            limits: SapB1Limits::default(),
        }
    }

    fn check(&self) -> Result<(), String> {
        if self.company_db.trim().is_empty() || self.username.is_empty() {
            return Err("company_db and username must not be empty".into());
        }
        if self.session_timeout_secs == 0 {
            return Err("session_timeout_secs must be at least 1".into());
        }
        if self.page_size == 0 {
            return Err("page_size must be at least 1".into());
        }
        if self.warehouses.is_empty() || self.warehouses.iter().any(|w| w.trim().is_empty()) {
            return Err("warehouses must name at least one warehouse".into());
        }
        if self.limits.requests_per_second == Some(0) || self.limits.concurrent == Some(0) {
            return Err("limits must be at least 1 (null lifts them)".into());
        }
        Ok(())
    }
}

/// An overloaded Service Layer (or the reverse proxy in front of it) answers `503` with
/// `Retry-After`; `None` lifts a limit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SapB1Limits {
    /// Requests per wall-clock second.
    pub requests_per_second: Option<u32>,
    /// Requests in progress at once.
    pub concurrent: Option<u32>,
}

/// What one company was asked to do, for "exactly once" assertions. Every collection
/// (`Items`, `BusinessPartners`, `Orders`, `Invoices`) appears in the per-collection maps,
/// with 0 when untouched.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SapB1Stats {
    /// Requests that reached the company (Login included), refused ones too.
    pub requests: u64,
    pub logins: u64,
    /// Logins refused (bad user or password).
    pub rejected_logins: u64,
    pub logouts: u64,
    /// Requests refused with 401 because their session had expired (or came without its
    /// `ROUTEID`); a cookie naming no session at all cannot be traced to a company.
    pub invalid_sessions: u64,
    /// Collection → records created through the API (seeds are not counted).
    pub creates: BTreeMap<String, u64>,
    /// `Collection:Field=value` (our reference: `ItemCode`, `CardCode`, `NumAtCard`) →
    /// records created with it.
    pub creates_by_reference: BTreeMap<String, u64>,
    /// Collection → records changed through the API.
    pub updates: BTreeMap<String, u64>,
    /// Collection → records held.
    pub records: BTreeMap<String, u64>,
    /// Collection → `NumAtCard` values held by more than one document.
    pub duplicate_references: BTreeMap<String, Vec<String>>,
    /// Creates refused because the key (`ItemCode`, `CardCode`) already existed.
    pub rejected_duplicate_keys: u64,
    /// `503`s sent by the throttle, or injected with a `Retry-After`.
    pub overloaded: u64,
    /// Requests received while the client had been told (by `Retry-After`) to wait.
    pub violations: u64,
    pub max_requests_in_window: u64,
    pub max_concurrent_requests: u64,
}

/// The simulator. Cheap to clone: clones share the same companies and sessions.
#[derive(Clone, Default)]
pub struct SapB1Sim {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SapB1Sim {
    // Not derived: it would print every record of every company.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SapB1Sim")
            .field("companies", &read(&self.shared.companies).len())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Shared {
    /// By lower-case company database name.
    companies: RwLock<HashMap<String, Arc<Company>>>,
    /// By `B1SESSION` value; never held while taking a company's lock.
    sessions: Mutex<HashMap<String, Session>>,
    interrupt: Interrupt,
}

#[derive(Debug, Clone)]
struct Session {
    /// Lower-case company database name.
    company: String,
    last_used: DateTime<Utc>,
    timeout: TimeDelta,
}

#[derive(Debug)]
struct Company {
    state: Mutex<CompanyState>,
}

#[derive(Debug)]
struct CompanyState {
    config: SapB1CompanyConfig,
    /// Counts requests, applies the requests-per-second throttle and holds the faults.
    gate: TrafficGate,
    in_flight: u64,
    max_in_flight: u64,
    logins: u64,
    rejected_logins: u64,
    logouts: u64,
    invalid_sessions: u64,
    overloaded: u64,
    data: CompanyData,
}

/// Locks a mutex. A poisoned lock only means a handler panicked mid-request; the state is
/// still the best record of what happened, and tests want to read it.
use crate::guard::{lock, read, write};

impl SapB1Sim {
    pub fn new() -> Self {
        Self::default()
    }

    /// Provisions a company. Provisioning it again updates its user, timeout, page size,
    /// warehouses and limits and keeps records, sessions and counters. An invalid config is
    /// logged and ignored; use [`Self::try_add_company`] to get the error.
    pub fn add_company(&self, config: SapB1CompanyConfig) {
        if let Err(error) = self.try_add_company(config) {
            tracing::error!(%error, "sandbox SAP B1 company not provisioned");
        }
    }

    pub fn try_add_company(&self, config: SapB1CompanyConfig) -> Result<(), SandboxError> {
        config.check().map_err(SandboxError::InvalidCompany)?;
        let id = config.company_db.to_ascii_lowercase();
        let mut companies = write(&self.shared.companies);
        match companies.get(&id) {
            Some(company) => {
                let mut state = lock(&company.state);
                state.gate.set_limit(config.limits.requests_per_second);
                state.config = config;
            }
            None => {
                let state = CompanyState {
                    gate: TrafficGate::new(
                        config.limits.requests_per_second,
                        Duration::from_secs(1),
                    ),
                    config,
                    in_flight: 0,
                    max_in_flight: 0,
                    logins: 0,
                    rejected_logins: 0,
                    logouts: 0,
                    invalid_sessions: 0,
                    overloaded: 0,
                    data: CompanyData::default(),
                };
                companies.insert(
                    id,
                    Arc::new(Company {
                        state: Mutex::new(state),
                    }),
                );
            }
        }
        Ok(())
    }

    /// The company's counters, or `None` for an unknown company.
    pub fn stats(&self, company_db: &str) -> Option<SapB1Stats> {
        let company = self.company(company_db)?;
        let state = lock(&company.state);
        let gate = state.gate.stats();
        let per_kind = |counts: &[u64; 4]| {
            Kind::ALL
                .iter()
                .map(|k| (k.name().to_owned(), counts[k.index()]))
                .collect()
        };
        Some(SapB1Stats {
            requests: gate.requests,
            logins: state.logins,
            rejected_logins: state.rejected_logins,
            logouts: state.logouts,
            invalid_sessions: state.invalid_sessions,
            creates: per_kind(&state.data.creates),
            creates_by_reference: state.data.creates_by_reference.clone(),
            updates: per_kind(&state.data.updates),
            records: Kind::ALL
                .iter()
                .map(|k| (k.name().to_owned(), state.data.len(*k)))
                .collect(),
            duplicate_references: Kind::ALL
                .iter()
                .map(|k| (k.name().to_owned(), state.data.duplicate_references(*k)))
                .filter(|(_, dups)| !dups.is_empty())
                .collect(),
            rejected_duplicate_keys: state.data.rejected_duplicate_keys,
            overloaded: state.overloaded,
            violations: gate.violations,
            max_requests_in_window: gate.max_requests_in_window,
            max_concurrent_requests: state.max_in_flight,
        })
    }

    /// Every record of a collection (`Items`, `BusinessPartners`, `Orders`, `Invoices`, any
    /// case) in key order, as the API returns them; empty for an unknown company or
    /// collection.
    pub fn records(&self, company_db: &str, collection: &str) -> Vec<Value> {
        let (Some(company), Some(kind)) = (self.company(company_db), Kind::parse(collection))
        else {
            return Vec::new();
        };
        let state = lock(&company.state);
        state
            .data
            .all(kind)
            .map(|r| Value::Object(r.clone()))
            .collect()
    }

    /// Queues a fault for the company's requests (Login included). An unknown company or a
    /// fault that could never fire is logged and ignored; use [`Self::try_inject`] to get
    /// the error.
    pub fn inject(&self, company_db: &str, fault: Fault) {
        if let Err(error) = self.try_inject(company_db, fault) {
            tracing::error!(%error, "sandbox SAP B1 fault not queued");
        }
    }

    pub fn try_inject(&self, company_db: &str, fault: Fault) -> Result<(), SandboxError> {
        fault.check().map_err(SandboxError::InvalidFault)?;
        let company = self.known_company(company_db)?;
        lock(&company.state).gate.faults.push(fault);
        Ok(())
    }

    /// Seeds a record for import tests: keeps its key (`ItemCode`, `CardCode`; `DocEntry`
    /// is assigned to a document that has none), sets `UpdateDate`/`UpdateTime` to now,
    /// creates or replaces, and returns the key. Not validated and not counted as a create.
    /// Misuse is logged and returns an empty key; use [`Self::try_upsert_record`] to get
    /// the error.
    pub fn upsert_record(&self, company_db: &str, collection: &str, record: Value) -> String {
        self.try_upsert_record(company_db, collection, record)
            .unwrap_or_else(|error| {
                tracing::error!(%error, "sandbox SAP B1 record not seeded");
                String::new()
            })
    }

    pub fn try_upsert_record(
        &self,
        company_db: &str,
        collection: &str,
        record: Value,
    ) -> Result<String, SandboxError> {
        let company = self.known_company(company_db)?;
        let kind = Kind::parse(collection)
            .ok_or_else(|| SandboxError::UnknownSapB1Collection(collection.to_owned()))?;
        let Value::Object(body) = record else {
            return Err(SandboxError::InvalidRecord(
                "a record must be a JSON object".into(),
            ));
        };
        let mut state = lock(&company.state);
        state
            .data
            .seed(kind, body, Utc::now())
            .map_err(SandboxError::InvalidRecord)
    }

    /// Ends every session of the company now, so its next request gets `401` (a test
    /// forcing expiry mid-sync). Returns how many sessions were live.
    pub fn expire_sessions(&self, company_db: &str) -> usize {
        let id = company_db.to_ascii_lowercase();
        let now = Utc::now();
        let mut expired = 0;
        for session in lock(&self.shared.sessions).values_mut() {
            if session.company == id && now - session.last_used < session.timeout {
                // Kept, timed out, so the next request is counted as an invalid session.
                session.last_used = now - session.timeout - TimeDelta::seconds(1);
                expired += 1;
            }
        }
        expired
    }

    /// Sessions currently open for the company (expired ones are not counted).
    pub fn live_sessions(&self, company_db: &str) -> usize {
        let id = company_db.to_ascii_lowercase();
        let now = Utc::now();
        lock(&self.shared.sessions)
            .values()
            .filter(|s| s.company == id && now - s.last_used < s.timeout)
            .count()
    }

    /// Ends every injected latency and timeout wait now (those requests answer 503). The
    /// sandbox calls it on shutdown.
    pub fn cancel_injected_waits(&self) {
        self.shared.interrupt.fire();
    }

    fn company(&self, company_db: &str) -> Option<Arc<Company>> {
        read(&self.shared.companies)
            .get(&company_db.to_ascii_lowercase())
            .cloned()
    }

    fn known_company(&self, company_db: &str) -> Result<Arc<Company>, SandboxError> {
        self.company(company_db)
            .ok_or_else(|| SandboxError::UnknownCompany(company_db.to_owned()))
    }
}
