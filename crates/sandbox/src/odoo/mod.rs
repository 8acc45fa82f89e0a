//! Simulator of an Odoo server for what an integration syncing a wholesale platform uses:
//! the legacy XML-RPC services (`/xmlrpc/2/common`: `version`, `authenticate`, `login`;
//! `/xmlrpc/2/object`: `execute_kw`) on every version, and JSON-2
//! (`POST /json/2/{model}/{method}` with a bearer API key) on version 19 and later, over one
//! ORM: `product.product`, `res.partner`, `sale.order` (+ lines), `account.move` (+ lines),
//! `stock.location`, `stock.quant`, with Odoo's methods (`create` single or batch, `write`,
//! `read`, `search`, `search_read`, `search_count`, `unlink`, `fields_get`,
//! `sale.order.action_confirm`, `account.move.action_post`, `res.users.context_get`),
//! domains, `order`, `active_test`, one2many commands and error classes.
//!
//! A server hosts several databases ([`OdooDatabaseConfig`]), each with its own major
//! version, user and API keys. `version()` on `/xmlrpc/2/common` names no database: it
//! answers with the first database provisioned (17.0 while there is none).
//!
//! It must stay strict: what Odoo refuses (an unknown field, a missing required field, a
//! value outside a selection, a many2one to a missing record, a VAT number that does not
//! look like one when `check_vat` is on, bad credentials, an expired or revoked key), it
//! refuses, with Odoo's fault code (XML-RPC) or status and error body (JSON-2). Every call
//! is a transaction: a batch create with one bad record creates nothing.
//!
//! Injected faults ([`Fault`]) are matched against a path that names the model and method
//! over both protocols: `/odoo/xmlrpc/2/object/{model}/{method}` for an `execute_kw` call
//! (and `/odoo/xmlrpc/2/common/{method}` for `authenticate`/`login`), the request path
//! `/odoo/json/2/{model}/{method}` for JSON-2; so `path_contains: "sale.order/create"`
//! targets creates of orders over both. `version()` is not counted and takes no fault, as
//! it names no database.
//!
//! Served under `/odoo` (see [`crate::sandbox_router`]), with loopback admin endpoints under
//! `/odoo/_sandbox/databases…`. [`OdooSim`] is the in-process handle tests and the demo use.

mod domain;
mod http;
mod json2;
mod methods;
mod model;
mod orm;
mod values;
mod xmlrpc;

pub use crate::faults::Fault;

use crate::SandboxError;
use crate::faults::{Interrupt, TrafficGate};
use crate::guard::{lock, read, write};
use chrono::{DateTime, Utc};
use orm::{DatabaseData, Env, Orm};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

pub(crate) use http::routes;

/// The uid of the one user of each database (Odoo's administrator is 2).
pub(crate) const UID: i64 = 2;

/// An API key of the database's user: Odoo accepts it in place of the password over
/// XML-RPC, and JSON-2 requires one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OdooApiKey {
    pub key: String,
    /// Refused from this instant on (Odoo keys last at most three months); `None` never
    /// expires.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// One database and the one user the integration logs in as (uid 2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OdooDatabaseConfig {
    /// Case-sensitive, as PostgreSQL's.
    pub database: String,
    /// Major version (16, 17, 18, 19…): fields differ (`is_storable` and the `combo` product
    /// type from 18), and JSON-2 exists only from 19.
    pub version: u32,
    pub login: String,
    /// Empty for a bot user that only authenticates with API keys.
    pub password: String,
    #[serde(default)]
    pub api_keys: Vec<OdooApiKey>,
    /// base_vat installed: a partner's `vat` must look like a VAT number.
    #[serde(default)]
    pub check_vat: bool,
    /// Self-imposed throttle; none by default, as Odoo publishes none.
    #[serde(default)]
    pub limits: OdooLimits,
}

impl OdooDatabaseConfig {
    /// A database with no API key, no VAT check and no limits.
    pub fn new(
        database: impl Into<String>,
        version: u32,
        login: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        Self {
            database: database.into(),
            version,
            login: login.into(),
            password: password.into(),
            api_keys: Vec::new(),
            check_vat: false,
            limits: OdooLimits::default(),
        }
    }

    /// Adds an API key of the user.
    pub fn with_api_key(
        mut self,
        key: impl Into<String>,
        expires_at: Option<DateTime<Utc>>,
    ) -> Self {
        self.api_keys.push(OdooApiKey {
            key: key.into(),
            expires_at,
        });
        self
    }

    fn check(&self) -> Result<(), String> {
        let name_ok = self
            .database
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
            && self
                .database
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !name_ok {
            return Err("database must be letters, digits, '_', '.' or '-', starting with a letter or digit".into());
        }
        if !(8..=99).contains(&self.version) {
            return Err(format!(
                "version {} is not an Odoo major version",
                self.version
            ));
        }
        if self.login.is_empty() {
            return Err("login must not be empty".into());
        }
        if self.api_keys.iter().any(|k| k.key.is_empty()) {
            return Err("API keys must not be empty".into());
        }
        if self.limits.requests_per_second == Some(0) || self.limits.concurrent == Some(0) {
            return Err("limits must be at least 1 (null lifts them)".into());
        }
        Ok(())
    }
}

/// A throttling proxy in front of Odoo answers `429` with `Retry-After`; `None` lifts a
/// limit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OdooLimits {
    pub requests_per_second: Option<u32>,
    pub concurrent: Option<u32>,
}

/// What one database was asked to do, for "exactly once" assertions. `creates` and
/// `updates` list `product.product`, `res.partner`, `sale.order` and `account.move` with 0
/// when untouched (other models when touched); `records` lists every model.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OdooStats {
    /// Requests that reached the database, refused ones too.
    pub requests: u64,
    /// `authenticate`/`login` calls that returned a uid.
    pub authentications: u64,
    /// `authenticate`/`login` answered `false`, and calls refused for their credentials.
    pub rejected_authentications: u64,
    pub xmlrpc_calls: u64,
    pub json2_calls: u64,
    /// XML-RPC calls to a database of version 19 or later, which Odoo logs as deprecated.
    pub deprecated_rpc_calls: u64,
    /// `create` calls (whatever their outcome), and those with more than one record.
    pub create_calls: u64,
    pub batch_creates: u64,
    /// Model → records created through the API (seeds are not counted).
    pub creates: BTreeMap<String, u64>,
    /// `model:field=value` (our references: `product.product:default_code`,
    /// `res.partner:ref`, `sale.order:client_order_ref`, `account.move:ref`) → creates.
    pub creates_by_reference: BTreeMap<String, u64>,
    pub updates: BTreeMap<String, u64>,
    pub records: BTreeMap<String, u64>,
    /// Model → reference values held by more than one record.
    pub duplicate_references: BTreeMap<String, Vec<String>>,
    /// `429`s sent by the throttle, or injected.
    pub rate_limited: u64,
    pub violations: u64,
    pub max_requests_in_window: u64,
    pub max_concurrent_requests: u64,
}

/// The simulator. Cheap to clone: clones share the same databases.
#[derive(Clone, Default)]
pub struct OdooSim {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for OdooSim {
    // Not derived: it would print every record of every database.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OdooSim")
            .field("databases", &read(&self.shared.databases).len())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Shared {
    /// In provisioning order: the first answers `version()`.
    databases: RwLock<Vec<(String, Arc<Database>)>>,
    interrupt: Interrupt,
}

#[derive(Debug)]
struct Database {
    state: Mutex<DbState>,
}

#[derive(Debug)]
struct DbState {
    config: OdooDatabaseConfig,
    gate: TrafficGate,
    in_flight: u64,
    max_in_flight: u64,
    authentications: u64,
    rejected_authentications: u64,
    xmlrpc_calls: u64,
    json2_calls: u64,
    deprecated_rpc_calls: u64,
    data: DatabaseData,
}

impl DbState {
    fn env(&self, active_test: bool, counted: bool) -> Env {
        Env {
            version: self.config.version,
            check_vat: self.config.check_vat,
            uid: UID,
            active_test,
            counted,
        }
    }

    fn key_ok(&self, secret: &str) -> bool {
        let now = Utc::now();
        self.config
            .api_keys
            .iter()
            .any(|k| k.key == secret && k.expires_at.is_none_or(|at| at > now))
    }

    /// XML-RPC takes the password or an API key.
    fn secret_ok(&self, secret: &str) -> bool {
        (!self.config.password.is_empty() && self.config.password == secret) || self.key_ok(secret)
    }
}

impl OdooSim {
    pub fn new() -> Self {
        Self::default()
    }

    /// Provisions a database. Provisioning it again replaces its user, keys, VAT check and
    /// limits (a new version applies from the next call) and keeps records and counters.
    /// An invalid config is logged and ignored; use [`Self::try_add_database`] for the
    /// error.
    pub fn add_database(&self, config: OdooDatabaseConfig) {
        if let Err(error) = self.try_add_database(config) {
            tracing::error!(%error, "sandbox Odoo database not provisioned");
        }
    }

    pub fn try_add_database(&self, config: OdooDatabaseConfig) -> Result<(), SandboxError> {
        config.check().map_err(SandboxError::InvalidDatabase)?;
        let mut databases = write(&self.shared.databases);
        if let Some((_, db)) = databases.iter().find(|(name, _)| *name == config.database) {
            let mut state = lock(&db.state);
            state.gate.set_limit(config.limits.requests_per_second);
            state.config = config;
            return Ok(());
        }
        let state = DbState {
            gate: TrafficGate::new(config.limits.requests_per_second, Duration::from_secs(1)),
            config: config.clone(),
            in_flight: 0,
            max_in_flight: 0,
            authentications: 0,
            rejected_authentications: 0,
            xmlrpc_calls: 0,
            json2_calls: 0,
            deprecated_rpc_calls: 0,
            data: DatabaseData::seeded(),
        };
        databases.push((
            config.database,
            Arc::new(Database {
                state: Mutex::new(state),
            }),
        ));
        Ok(())
    }

    /// Names of the databases, in provisioning order.
    pub fn databases(&self) -> Vec<String> {
        read(&self.shared.databases)
            .iter()
            .map(|(n, _)| n.clone())
            .collect()
    }

    pub fn stats(&self, database: &str) -> Result<OdooStats, SandboxError> {
        let db = self.known(database)?;
        let state = lock(&db.state);
        let gate = state.gate.stats();
        let data = &state.data;
        let per_model = |counts: &BTreeMap<String, u64>| {
            let mut all: BTreeMap<String, u64> =
                model::SYNCED.iter().map(|m| ((*m).to_owned(), 0)).collect();
            all.extend(counts.clone());
            all
        };
        Ok(OdooStats {
            requests: gate.requests,
            authentications: state.authentications,
            rejected_authentications: state.rejected_authentications,
            xmlrpc_calls: state.xmlrpc_calls,
            json2_calls: state.json2_calls,
            deprecated_rpc_calls: state.deprecated_rpc_calls,
            create_calls: data.create_calls,
            batch_creates: data.batch_creates,
            creates: per_model(&data.creates),
            creates_by_reference: data.creates_by_reference.clone(),
            updates: per_model(&data.updates),
            records: orm::all_models()
                .map(|m| (m.to_owned(), data.len(m)))
                .collect(),
            duplicate_references: model::SYNCED
                .iter()
                .map(|m| ((*m).to_owned(), data.duplicate_references(m)))
                .filter(|(_, dups)| !dups.is_empty())
                .collect(),
            rate_limited: gate.rate_limited,
            violations: gate.violations,
            max_requests_in_window: gate.max_requests_in_window,
            max_concurrent_requests: state.max_in_flight,
        })
    }

    /// Every record of a model, archived ones included, in id order, as `read` returns them
    /// (many2one as `[id, name]`); empty for an unknown database or model.
    pub fn records(&self, database: &str, model_name: &str) -> Vec<Value> {
        let Ok(db) = self.known(database) else {
            return Vec::new();
        };
        let mut state = lock(&db.state);
        let env = state.env(false, false);
        let Some(model) = model::model(model_name, env.version) else {
            return Vec::new();
        };
        let orm = Orm {
            data: &mut state.data,
            env: &env,
            now: Utc::now(),
        };
        orm.data
            .ids(model.name)
            .into_iter()
            .map(|id| Value::Object(orm.view(&model, id)))
            .collect()
    }

    /// Creates or edits a record as the ERP's own users would (same checks, a new
    /// `write_date`, not counted as an API create or update): with an `id` that exists it is
    /// a write, otherwise a create (keeping that `id` if given). Returns the id.
    pub fn upsert_record(
        &self,
        database: &str,
        model_name: &str,
        record: Value,
    ) -> Result<i64, SandboxError> {
        let Value::Object(mut vals) = record else {
            return Err(SandboxError::InvalidRecord(
                "a record must be a JSON object".into(),
            ));
        };
        let id = match vals.remove("id") {
            None => None,
            Some(id) => Some(id.as_i64().ok_or_else(|| {
                SandboxError::InvalidRecord(format!("id must be an integer, not {id}"))
            })?),
        };
        self.edit(database, model_name, |orm, model| match id {
            Some(id) if orm.data.exists(model.name, id) => {
                orm.write(model, &[id], &Value::Object(vals)).map(|()| id)
            }
            _ => orm.create(model, &Value::Object(vals), id),
        })
    }

    /// An ERP-side edit of an existing record (bumps its `write_date`).
    pub fn touch(
        &self,
        database: &str,
        model_name: &str,
        id: i64,
        vals: Value,
    ) -> Result<(), SandboxError> {
        self.edit(database, model_name, |orm, model| {
            orm.write(model, &[id], &vals)
        })
    }

    /// Sets the on-hand quantity of the product with this `default_code` in the location
    /// with this `complete_name` (`WH/Stock`), creating the quant if needed. Returns its id.
    pub fn set_quant(
        &self,
        database: &str,
        default_code: &str,
        location: &str,
        quantity: f64,
    ) -> Result<i64, SandboxError> {
        self.edit(database, "stock.quant", |orm, quants| {
            let find = |orm: &Orm<'_>, model_name: &str, field: &str, value: &str| {
                let model = orm::known_model(model_name, orm.env.version)?;
                let domain = domain::parse(Some(&json!([[field, "=", value]])), &model)?;
                Ok::<_, model::OdooError>(orm.search(&model, &domain, &[]).first().copied())
            };
            let missing = |what: String| model::OdooError::UserError(what);
            let product = find(orm, "product.product", "default_code", default_code)?
                .ok_or_else(|| missing(format!("no product with default_code {default_code:?}")))?;
            let place = find(orm, "stock.location", "complete_name", location)?
                .ok_or_else(|| missing(format!("no location {location:?}")))?;
            let domain = domain::parse(
                Some(&json!([
                    ["product_id", "=", product],
                    ["location_id", "=", place]
                ])),
                quants,
            )?;
            match orm.search(quants, &domain, &[]).first() {
                Some(&id) => orm
                    .write(quants, &[id], &json!({"quantity": quantity}))
                    .map(|()| id),
                None => orm.create(
                    quants,
                    &json!({"product_id": product, "location_id": place, "quantity": quantity}),
                    None,
                ),
            }
        })
    }

    /// Revokes an API key of the database's user; whether it existed.
    pub fn revoke_api_key(&self, database: &str, key: &str) -> Result<bool, SandboxError> {
        let db = self.known(database)?;
        let mut state = lock(&db.state);
        let before = state.config.api_keys.len();
        state.config.api_keys.retain(|k| k.key != key);
        Ok(state.config.api_keys.len() < before)
    }

    /// Queues a fault for the database's requests. Misuse is logged and ignored; use
    /// [`Self::try_inject`] for the error.
    pub fn inject(&self, database: &str, fault: Fault) {
        if let Err(error) = self.try_inject(database, fault) {
            tracing::error!(%error, "sandbox Odoo fault not queued");
        }
    }

    pub fn try_inject(&self, database: &str, fault: Fault) -> Result<(), SandboxError> {
        fault.check().map_err(SandboxError::InvalidFault)?;
        let db = self.known(database)?;
        lock(&db.state).gate.faults.push(fault);
        Ok(())
    }

    /// Ends every injected latency and timeout wait now. The sandbox calls it on shutdown.
    pub fn cancel_injected_waits(&self) {
        self.shared.interrupt.fire();
    }

    fn edit<T>(
        &self,
        database: &str,
        model_name: &str,
        change: impl FnOnce(&mut Orm<'_>, &model::Model) -> Result<T, model::OdooError>,
    ) -> Result<T, SandboxError> {
        let db = self.known(database)?;
        let mut state = lock(&db.state);
        let env = state.env(false, false);
        let model = model::model(model_name, env.version)
            .ok_or_else(|| SandboxError::UnknownOdooModel(model_name.to_owned()))?;
        let mut copy = state.data.clone();
        let mut orm = Orm {
            data: &mut copy,
            env: &env,
            now: Utc::now(),
        };
        let result = change(&mut orm, &model)
            .map_err(|e| SandboxError::InvalidRecord(e.message().to_owned()))?;
        state.data = copy;
        Ok(result)
    }

    fn database(&self, database: &str) -> Option<Arc<Database>> {
        read(&self.shared.databases)
            .iter()
            .find(|(name, _)| name == database)
            .map(|(_, db)| db.clone())
    }

    fn known(&self, database: &str) -> Result<Arc<Database>, SandboxError> {
        self.database(database)
            .ok_or_else(|| SandboxError::UnknownDatabase(database.to_owned()))
    }
}
