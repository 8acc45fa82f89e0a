//! Simulator of Oracle NetSuite's SuiteTalk REST web services for what an integration syncing
//! a wholesale platform uses: the record API (`/services/rest/record/v1/…`: `inventoryItem`,
//! `customer`, `salesOrder`, `invoice`; create, `eid:` upsert, `PATCH` with NetSuite's
//! `replace` parameter, read, delete, `!transform/invoice`), SuiteQL
//! (`/services/rest/query/v1/suiteql`, a strict subset of the language over `item`, `customer`,
//! `transaction` and `location`), both ways of authenticating (Token-Based Authentication,
//! OAuth 1.0a with HMAC-SHA256 signatures verified exactly; OAuth 2.0 client credentials with
//! a signed JWT assertion, then a bearer token), NetSuite's error body
//! (`{"type","title","status","o:errorDetails":[{"detail","o:errorPath","o:errorCode"}]}`)
//! and per-account concurrency governance (`429` beyond `concurrency_limit` requests in
//! progress).
//!
//! Each account's REST base is `/netsuite/{url form}`, the URL form of an account id being
//! NetSuite's host label (`1234567_SB1` → `1234567-sb1`): it stands for
//! `https://1234567-sb1.suitetalk.api.netsuite.com`. Unknown accounts answer 404.
//!
//! It must stay strict: what NetSuite refuses (an unknown field, a missing required field, a
//! reference to a missing record, a second record with the same `externalId`, a wrong TBA
//! signature, a realm written `1234567-sb1` or `1234567_sb1`, HMAC-SHA1, a stale timestamp, a
//! replayed nonce, an expired bearer token, a JWT with another `aud`, a SuiteQL statement
//! outside the subset), it refuses.
//!
//! What is verified, what is not (checked against Oracle's help center and public threads,
//! 2026):
//! - TBA: the header, HMAC-SHA256 and the RFC 5849 base string are documented. The realm
//!   must be the account id as NetSuite writes it, `_SB1` in upper case: public reports say
//!   `1234567_sb1` fails with "Invalid login attempt", so the simulator compares the realm
//!   exactly (case included). The five-minute timestamp window and nonce window are
//!   assumptions. Form-encoded body parameters are not signed (REST bodies are JSON).
//! - `INVALID_LOGIN` and its detail are NetSuite's (seen in public reports). The `type` URLs
//!   follow RFC 9110 as recent NetSuite releases do (older ones pointed at RFC 2616).
//! - M2M: the grant, the JWT header and claims and the one-hour limits are documented.
//!   PS256/PS384/PS512/ES256/ES384 are verified (ES512 is refused: `ring` has no P-521).
//!   The OAuth error codes per refusal (`invalid_request`, `invalid_client` (401),
//!   `invalid_grant`, `invalid_scope`, `unsupported_grant_type`) and `expires_in` as a
//!   string are unverified.
//! - Records: `204` + `Location` is documented; `eid:` upsert by `PUT` is documented but
//!   its sublist semantics are not (here a `PUT` replaces the sublists it names, so a retried
//!   upsert never doubles lines). `DUP_RCRD`, `DUP_ITEM`, `INVALID_KEY_OR_REF`,
//!   `NONEXISTENT_ID` and the detail texts are unverified. Customers take `vatRegNumber`
//!   (a plain field) rather than the `defaultTaxReg` reference. `entityId` is auto-numbered
//!   `CUS{n}`, `tranId` `SO{n}`/`INV{n}`. `Prefer: respond-async` is refused (400).
//! - SuiteQL: `Prefer: transient` is in Oracle's example; whether NetSuite refuses a query
//!   without it is unverified (the simulator does, 400). Values come back as strings,
//!   booleans as `T`/`F`, dates in the user's format `MM/DD/YYYY`. A `limit` above 1000 or
//!   below 1 is refused (unverified). The error detail prefix is NetSuite's.
//! - Concurrency: REST answers `429` (documented); the body's code
//!   `CONCURRENCY_LIMIT_EXCEEDED` is unverified, and no `Retry-After` is sent, as none is
//!   documented.
//!
//! Injected faults ([`Fault`]) are matched against the request path, prefix included
//! (`/netsuite/1234567-sb1/services/rest/record/v1/salesOrder`); they act after
//! authentication and the concurrency check, so a latency fault holds a concurrency slot.
//!
//! Served under `/netsuite` (see [`crate::sandbox_router`]), with loopback admin endpoints
//! under `/netsuite/_sandbox/accounts…`. [`NetSuiteSim`] is the in-process handle tests and
//! the demo use.

mod api;
mod auth;
mod errors;
mod http;
mod jwt;
mod model;
mod query;
mod render;
mod store;
mod suiteql;
mod validate;

pub use crate::faults::Fault;

use crate::SandboxError;
use crate::faults::{Interrupt, TrafficGate};
use crate::guard::{lock, read, write};
use chrono::{DateTime, Utc};
use model::RecordType;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use store::Store;

pub(crate) use http::routes;

/// A TBA integration record (consumer) and one access token issued to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TbaToken {
    pub consumer_key: String,
    pub consumer_secret: String,
    pub token_id: String,
    pub token_secret: String,
}

/// An OAuth 2.0 client-credentials (M2M) mapping: the integration's client id and one
/// certificate uploaded for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct M2mClient {
    pub client_id: String,
    /// The certificate id NetSuite shows after the upload: the JWT header's `kid`.
    pub certificate_id: String,
    /// The public key: for RSA, the PKCS#1 `RSAPublicKey` DER (what `ring`'s
    /// `RsaKeyPair::public_key()` gives); for EC, the uncompressed point. Base64 in JSON.
    #[serde(with = "base64_bytes")]
    pub public_key_der: Vec<u8>,
    /// Scopes the mapping grants; an assertion may ask for these only.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
}

/// A location (warehouse) of the account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetSuiteLocation {
    pub id: String,
    pub name: String,
}

fn default_scopes() -> Vec<String> {
    vec!["rest_webservices".to_owned()]
}

const fn default_true() -> bool {
    true
}

fn default_subsidiaries() -> Vec<String> {
    vec!["1".to_owned()]
}

fn default_locations() -> Vec<NetSuiteLocation> {
    vec![NetSuiteLocation {
        id: "1".to_owned(),
        name: "Main Warehouse".to_owned(),
    }]
}

const fn default_concurrency() -> u32 {
    5
}

const fn default_token_lifetime() -> u64 {
    3600
}

/// One NetSuite account (production or a sandbox) and the credentials it accepts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetSuiteAccountConfig {
    /// As NetSuite writes it: `1234567`, `TSTDRV1234567` or `1234567_SB1`; the TBA realm.
    pub account_id: String,
    #[serde(default)]
    pub tba: Vec<TbaToken>,
    #[serde(default)]
    pub m2m: Vec<M2mClient>,
    /// OneWorld: every customer needs a `subsidiary`.
    #[serde(default = "default_true")]
    pub one_world: bool,
    /// Internal ids of the subsidiaries; the first is the parent company.
    #[serde(default = "default_subsidiaries")]
    pub subsidiaries: Vec<String>,
    #[serde(default = "default_locations")]
    pub locations: Vec<NetSuiteLocation>,
    /// Requests in progress at once before a `429` (5 on the shared tier, +10 per SuiteCloud
    /// Plus license).
    #[serde(default = "default_concurrency")]
    pub concurrency_limit: u32,
    /// How long an M2M access token lasts (NetSuite: one hour).
    #[serde(default = "default_token_lifetime")]
    pub token_lifetime_secs: u64,
}

impl NetSuiteAccountConfig {
    /// A OneWorld account with NetSuite's defaults and no credentials yet.
    pub fn new(account_id: impl Into<String>) -> Self {
        Self {
            account_id: account_id.into(),
            tba: Vec::new(),
            m2m: Vec::new(),
            one_world: true,
            subsidiaries: default_subsidiaries(),
            locations: default_locations(),
            concurrency_limit: default_concurrency(),
            token_lifetime_secs: default_token_lifetime(),
        }
    }

    /// Adds a TBA consumer and token.
    pub fn with_tba(
        mut self,
        consumer_key: impl Into<String>,
        consumer_secret: impl Into<String>,
        token_id: impl Into<String>,
        token_secret: impl Into<String>,
    ) -> Self {
        self.tba.push(TbaToken {
            consumer_key: consumer_key.into(),
            consumer_secret: consumer_secret.into(),
            token_id: token_id.into(),
            token_secret: token_secret.into(),
        });
        self
    }

    /// Adds an M2M client certificate granting `rest_webservices`.
    pub fn with_m2m(
        mut self,
        client_id: impl Into<String>,
        certificate_id: impl Into<String>,
        public_key_der: Vec<u8>,
    ) -> Self {
        self.m2m.push(M2mClient {
            client_id: client_id.into(),
            certificate_id: certificate_id.into(),
            public_key_der,
            scopes: default_scopes(),
        });
        self
    }

    /// The account id as it appears in NetSuite host names: lower case, `_` → `-`.
    pub fn url_form(&self) -> String {
        url_form(&self.account_id)
    }

    fn check(&self) -> Result<(), String> {
        let id = &self.account_id;
        let id_ok = !id.is_empty()
            && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !id.starts_with('_')
            && !id.ends_with('_');
        if !id_ok {
            return Err(format!(
                "account_id {id:?} must be letters, digits and '_' (1234567 or 1234567_SB1)"
            ));
        }
        if self.tba.iter().any(|t| {
            [
                &t.consumer_key,
                &t.consumer_secret,
                &t.token_id,
                &t.token_secret,
            ]
            .iter()
            .any(|s| s.is_empty())
        }) {
            return Err("TBA keys, secrets and token ids must not be empty".into());
        }
        if self.m2m.iter().any(|c| {
            c.client_id.is_empty() || c.certificate_id.is_empty() || c.public_key_der.is_empty()
        }) {
            return Err("M2M client ids, certificate ids and keys must not be empty".into());
        }
        if self.one_world && self.subsidiaries.is_empty() {
            return Err("a OneWorld account needs at least one subsidiary".into());
        }
        if self
            .locations
            .iter()
            .any(|l| l.id.is_empty() || l.name.is_empty())
        {
            return Err("locations need an id and a name".into());
        }
        if self.concurrency_limit == 0 || self.token_lifetime_secs == 0 {
            return Err("concurrency_limit and token_lifetime_secs must be at least 1".into());
        }
        Ok(())
    }
}

/// The URL form of an account id: `1234567_SB1` → `1234567-sb1`.
pub fn url_form(account_id: &str) -> String {
    account_id.to_ascii_lowercase().replace('_', "-")
}

/// What one account was asked to do, for "exactly once" assertions. `creates`, `updates` and
/// `records` list `inventoryItem`, `customer`, `salesOrder` and `invoice`, with 0 when
/// untouched.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetSuiteStats {
    /// Requests that reached the account (token requests and refused ones too).
    pub requests: u64,
    /// REST requests that carried a TBA (`OAuth`) header, refused ones too.
    pub tba_requests: u64,
    /// REST requests that carried a bearer token, refused ones too.
    pub bearer_requests: u64,
    /// JWT exchanges that issued a token.
    pub token_requests: u64,
    /// Token requests refused, whatever the reason.
    pub rejected_token_requests: u64,
    /// `401`s, for any reason (REST and token endpoint).
    pub rejected_auth: u64,
    /// TBA signatures that did not match the request.
    pub rejected_signatures: u64,
    /// Records created through the API (`POST`, `PUT eid:` creating, transforms).
    pub creates: BTreeMap<String, u64>,
    /// `type:externalId` → creates with that external id.
    pub creates_by_external_id: BTreeMap<String, u64>,
    pub updates: BTreeMap<String, u64>,
    /// `PUT eid:` calls that succeeded (creating or updating).
    pub upserts: u64,
    pub transforms: u64,
    pub deletes: u64,
    pub records: BTreeMap<String, u64>,
    /// Type → external ids held by more than one record (the simulator refuses them, so
    /// this stays empty; attempts are `rejected_duplicates`).
    pub duplicate_external_ids: BTreeMap<String, Vec<String>>,
    pub rejected_duplicates: u64,
    pub suiteql_queries: u64,
    /// `429`s: concurrency refusals and injected ones.
    pub rate_limited: u64,
    /// Requests sent while told to wait by an injected `429` with `Retry-After`.
    pub violations: u64,
    pub max_requests_in_window: u64,
    pub max_concurrent_requests: u64,
}

/// The simulator. Cheap to clone: clones share the same accounts.
#[derive(Clone, Default)]
pub struct NetSuiteSim {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for NetSuiteSim {
    // Not derived: it would print every record of every account.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetSuiteSim")
            .field("accounts", &read(&self.shared.accounts).len())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Shared {
    /// By URL form.
    accounts: RwLock<BTreeMap<String, Arc<Account>>>,
    interrupt: Interrupt,
}

#[derive(Debug)]
struct Account {
    state: Mutex<AccountState>,
}

/// Counters that are neither the gate's nor the store's.
#[derive(Debug, Default)]
struct Counters {
    requests: u64,
    tba_requests: u64,
    bearer_requests: u64,
    token_requests: u64,
    rejected_token_requests: u64,
    rejected_auth: u64,
    rejected_signatures: u64,
    suiteql_queries: u64,
}

#[derive(Debug)]
struct AccountState {
    config: NetSuiteAccountConfig,
    gate: TrafficGate,
    in_flight: u32,
    max_in_flight: u64,
    counters: Counters,
    /// `(token id, nonce)` → the request's timestamp, for replay detection.
    nonces: HashMap<(String, String), i64>,
    /// Issued bearer tokens → when they expire.
    tokens: HashMap<String, DateTime<Utc>>,
    data: Store,
}

impl NetSuiteSim {
    pub fn new() -> Self {
        Self::default()
    }

    /// Provisions an account. Provisioning it again replaces its credentials and settings
    /// and keeps records, counters and issued tokens. An invalid config is logged and
    /// ignored; use [`Self::try_add_account`] for the error.
    pub fn add_account(&self, config: NetSuiteAccountConfig) {
        if let Err(error) = self.try_add_account(config) {
            tracing::error!(%error, "sandbox NetSuite account not provisioned");
        }
    }

    pub fn try_add_account(&self, config: NetSuiteAccountConfig) -> Result<(), SandboxError> {
        config
            .check()
            .map_err(SandboxError::InvalidNetSuiteAccount)?;
        let key = config.url_form();
        let mut accounts = write(&self.shared.accounts);
        if let Some(account) = accounts.get(&key) {
            let mut state = lock(&account.state);
            if state.config.account_id != config.account_id {
                return Err(SandboxError::InvalidNetSuiteAccount(format!(
                    "{} and {} share the host {key}",
                    state.config.account_id, config.account_id
                )));
            }
            state.config = config;
            return Ok(());
        }
        let state = AccountState {
            config,
            gate: TrafficGate::new(None, Duration::from_secs(1)),
            in_flight: 0,
            max_in_flight: 0,
            counters: Counters::default(),
            nonces: HashMap::new(),
            tokens: HashMap::new(),
            data: Store::default(),
        };
        accounts.insert(
            key,
            Arc::new(Account {
                state: Mutex::new(state),
            }),
        );
        Ok(())
    }

    /// Account ids (as NetSuite writes them), in URL-form order.
    pub fn accounts(&self) -> Vec<String> {
        read(&self.shared.accounts)
            .values()
            .map(|a| lock(&a.state).config.account_id.clone())
            .collect()
    }

    /// `account` is the account id in either form (`1234567_SB1` or `1234567-sb1`).
    pub fn stats(&self, account: &str) -> Result<NetSuiteStats, SandboxError> {
        let account = self.known(account)?;
        let state = lock(&account.state);
        let gate = state.gate.stats();
        let c = &state.counters;
        let data = &state.data;
        let per_type = |counts: &BTreeMap<RecordType, u64>| {
            RecordType::ALL
                .iter()
                .map(|t| (t.name().to_owned(), counts.get(t).copied().unwrap_or(0)))
                .collect()
        };
        Ok(NetSuiteStats {
            requests: c.requests,
            tba_requests: c.tba_requests,
            bearer_requests: c.bearer_requests,
            token_requests: c.token_requests,
            rejected_token_requests: c.rejected_token_requests,
            rejected_auth: c.rejected_auth,
            rejected_signatures: c.rejected_signatures,
            creates: per_type(&data.counts.creates),
            creates_by_external_id: data.counts.creates_by_external_id.clone(),
            updates: per_type(&data.counts.updates),
            upserts: data.counts.upserts,
            transforms: data.counts.transforms,
            deletes: data.counts.deletes,
            records: RecordType::ALL
                .iter()
                .map(|t| (t.name().to_owned(), data.len(*t)))
                .collect(),
            duplicate_external_ids: RecordType::ALL
                .iter()
                .map(|t| (t.name().to_owned(), data.duplicate_external_ids(*t)))
                .filter(|(_, dups)| !dups.is_empty())
                .collect(),
            rejected_duplicates: data.counts.rejected_duplicates,
            suiteql_queries: c.suiteql_queries,
            rate_limited: gate.rate_limited,
            violations: gate.violations,
            max_requests_in_window: gate.max_requests_in_window,
            max_concurrent_requests: state.max_in_flight,
        })
    }

    /// Every record of a type (`inventoryItem`, case-insensitive), in id order, as a GET with
    /// `expandSubResources=true` shows them, without links; empty for an unknown account or
    /// type.
    pub fn records(&self, account: &str, record_type: &str) -> Vec<Value> {
        let (Ok(account), Some(ty)) = (self.known(account), RecordType::parse(record_type)) else {
            return Vec::new();
        };
        let state = lock(&account.state);
        state
            .data
            .ids(ty)
            .into_iter()
            .filter_map(|id| state.data.render(&state.config, ty, id, None, true))
            .collect()
    }

    /// Creates or edits a record as the ERP's own users would (same checks, a new
    /// `lastModifiedDate`, not counted as an API create or update): with an `id` that exists
    /// it is an edit (sublists given are replaced), otherwise a create. A `lastModifiedDate`
    /// (ISO 8601) in the value is kept instead of now, for tests that need a known history.
    /// Returns the internal id.
    pub fn upsert_record(
        &self,
        account: &str,
        record_type: &str,
        record: Value,
    ) -> Result<String, SandboxError> {
        let account = self.known(account)?;
        let ty = known_type(record_type)?;
        let mut state = lock(&account.state);
        let state = &mut *state;
        state
            .data
            .erp_upsert(&state.config, ty, None, record)
            .map(|id| id.to_string())
            .map_err(|e| SandboxError::InvalidRecord(e.detail))
    }

    /// An ERP-side edit of an existing record (bumps its `lastModifiedDate`, or sets the one
    /// given).
    pub fn touch(
        &self,
        account: &str,
        record_type: &str,
        id: &str,
        fields: Value,
    ) -> Result<(), SandboxError> {
        let account = self.known(account)?;
        let ty = known_type(record_type)?;
        let unknown = || SandboxError::UnknownNetSuiteRecord {
            record_type: ty.name().to_owned(),
            id: id.to_owned(),
        };
        let id: u64 = id.parse().map_err(|_| unknown())?;
        let mut state = lock(&account.state);
        let state = &mut *state;
        if !state.data.exists(ty, id) {
            return Err(unknown());
        }
        state
            .data
            .erp_upsert(&state.config, ty, Some(id), fields)
            .map(|_| ())
            .map_err(|e| SandboxError::InvalidRecord(e.detail))
    }

    /// Makes every bearer token issued for the account expire now; how many were live.
    pub fn expire_tokens(&self, account: &str) -> Result<usize, SandboxError> {
        let account = self.known(account)?;
        let mut state = lock(&account.state);
        let now = Utc::now();
        let mut live = 0;
        for expires in state.tokens.values_mut() {
            if *expires > now {
                live += 1;
            }
            *expires = now;
        }
        Ok(live)
    }

    /// Queues a fault for the account's requests. Misuse is logged and ignored; use
    /// [`Self::try_inject`] for the error.
    pub fn inject(&self, account: &str, fault: Fault) {
        if let Err(error) = self.try_inject(account, fault) {
            tracing::error!(%error, "sandbox NetSuite fault not queued");
        }
    }

    pub fn try_inject(&self, account: &str, fault: Fault) -> Result<(), SandboxError> {
        fault.check().map_err(SandboxError::InvalidFault)?;
        let account = self.known(account)?;
        lock(&account.state).gate.faults.push(fault);
        Ok(())
    }

    /// Ends every injected latency and timeout wait now. The sandbox calls it on shutdown.
    pub fn cancel_injected_waits(&self) {
        self.shared.interrupt.fire();
    }

    fn account(&self, account: &str) -> Option<Arc<Account>> {
        read(&self.shared.accounts).get(&url_form(account)).cloned()
    }

    fn known(&self, account: &str) -> Result<Arc<Account>, SandboxError> {
        self.account(account)
            .ok_or_else(|| SandboxError::UnknownNetSuiteAccount(account.to_owned()))
    }
}

fn known_type(record_type: &str) -> Result<RecordType, SandboxError> {
    RecordType::parse(record_type)
        .ok_or_else(|| SandboxError::UnknownNetSuiteRecordType(record_type.to_owned()))
}

/// `Vec<u8>` as a standard base64 string in JSON.
mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD
            .decode(text.trim())
            .map_err(serde::de::Error::custom)
    }
}
