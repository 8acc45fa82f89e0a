//! Layered configuration: built-in defaults, then an optional TOML file, then environment
//! variables `PASSERELLE__SECTION__KEY`.
//!
//! The defaults reach Postgres and RabbitMQ on localhost, so a developer machine needs no file.
//! Every struct denies unknown fields: a typo in a file or an environment variable is an error
//! that names the key, not a setting silently ignored. `deploy/passerelle.example.toml`
//! documents every key; keep it in step with this module (a test checks that it parses).

use crate::vault::{KeyRing, VaultError};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Environment variables with this prefix (followed by `__`) override configuration keys.
pub const ENV_PREFIX: &str = "PASSERELLE";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub amqp: AmqpSettings,
    pub vault: VaultSettings,
    pub sync: SyncSettings,
    pub worker: WorkerSettings,
    pub scheduler: SchedulerSettings,
    pub http: HttpSettings,
    pub api: ApiSettings,
    pub log: LogSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// Postgres URL. May carry a password, so it is a secret; `config show` redacts it.
    pub url: SecretString,
    /// Pool size per process.
    pub max_connections: u32,
    /// How long to wait for a pooled connection before failing, in seconds.
    pub acquire_timeout_secs: u64,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: SecretString::from("postgres://postgres@127.0.0.1:5432/passerelle"),
            max_connections: 10,
            acquire_timeout_secs: 10,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AmqpSettings {
    /// RabbitMQ URL (the vhost is the path, `%2f` for `/`). Secret: it carries a password.
    pub url: SecretString,
    /// Prefix of every exchange and queue name, so several deployments (or tests) can share a
    /// broker without seeing each other's messages.
    pub prefix: String,
    /// Deliveries of one message before RabbitMQ dead-letters it (`x-delivery-limit`): the
    /// backstop against a message that crashes every worker that takes it.
    pub delivery_limit: u32,
    /// Delay tiers for job retries, in seconds: one TTL queue per tier and lane. From the
    /// environment, a comma-separated list (`5,30,120`) or one number (`5`).
    #[serde(deserialize_with = "one_or_many")]
    pub retry_delays_secs: Vec<u64>,
    /// A role that cannot reach RabbitMQ for this long gives up and exits non-zero (so its
    /// supervisor and alerts see it); until then it reconnects with backoff. 0: never.
    pub give_up_after_secs: u64,
}

/// A list of seconds, or one number standing for a list of one (the environment gives a
/// one-item list as a plain value).
fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<u64>),
        One(u64),
        Text(String),
    }
    match OneOrMany::deserialize(deserializer)? {
        OneOrMany::Many(list) => Ok(list),
        OneOrMany::One(n) => Ok(vec![n]),
        OneOrMany::Text(text) => text
            .split(',')
            .map(|part| {
                part.trim().parse::<u64>().map_err(|_| {
                    serde::de::Error::custom(format!(
                        "`{text}` is not a comma-separated list of whole seconds"
                    ))
                })
            })
            .collect(),
    }
}

impl Default for AmqpSettings {
    fn default() -> Self {
        Self {
            url: SecretString::from("amqp://guest:guest@127.0.0.1:5672/%2f"),
            prefix: "passerelle".into(),
            delivery_limit: 5,
            retry_delays_secs: vec![5, 30, 120, 600],
            give_up_after_secs: 900,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VaultSettings {
    /// Id of the key that seals new credentials. Empty means no vault is configured.
    pub active_key: String,
    /// Key id → base64 of 32 random bytes (`passerelle vault generate-key`). Old keys stay here
    /// until `passerelle vault rotate` has re-sealed everything under the active one.
    pub keys: BTreeMap<String, SecretString>,
}

impl VaultSettings {
    /// Whether any key is configured at all.
    pub fn is_configured(&self) -> bool {
        !self.active_key.is_empty() || !self.keys.is_empty()
    }

    /// The key ring, or why it cannot be built.
    pub fn key_ring(&self) -> Result<KeyRing, VaultError> {
        if !self.is_configured() {
            return Err(VaultError::NoKeys);
        }
        KeyRing::from_base64(
            &self.active_key,
            self.keys
                .iter()
                .map(|(id, key)| (id.as_str(), key.expose_secret())),
        )
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncSettings {
    /// After this many consecutive failed runs an integration is set to `error` (legacy app: 10).
    pub error_after_consecutive_failures: u32,
}

impl Default for SyncSettings {
    fn default() -> Self {
        Self {
            error_after_consecutive_failures: 10,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSettings {
    /// Jobs processed at once by one worker process (also its AMQP prefetch).
    pub concurrency: u16,
    /// Records read, sent and committed together.
    pub chunk_size: u32,
    /// How long an integration lease lasts without a heartbeat; a dead worker's run is taken
    /// over after at most this long.
    pub lease_ttl_secs: u64,
    /// After this long a run yields: it publishes its continuation and lets other jobs run.
    pub time_budget_secs: u64,
    /// On SIGTERM, how long in-flight chunks may take to finish before they are abandoned
    /// (their messages are then redelivered; nothing is lost).
    pub shutdown_grace_secs: u64,
    /// Attempts of one run (first delivery included) before it is failed and dead-lettered.
    pub max_attempts: u32,
}

impl WorkerSettings {
    pub fn lease_ttl(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.lease_ttl_secs)
    }

    pub fn time_budget(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.time_budget_secs)
    }

    pub fn shutdown_grace(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.shutdown_grace_secs)
    }
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            concurrency: 4,
            chunk_size: 1000,
            lease_ttl_secs: 30,
            time_budget_secs: 60,
            shutdown_grace_secs: 25,
            max_attempts: 6,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerSettings {
    /// Pause between two claims of due integrations, in milliseconds.
    pub interval_ms: u64,
    /// Integrations claimed per transaction.
    pub batch_size: u32,
    /// A run still `queued` and unpublished this long after it was created is published again
    /// (its first publish failed).
    pub republish_after_secs: u64,
    /// A `running` run whose lease expired this long ago, with no worker taking it over, is
    /// failed (its message was lost) so the integration's schedule is not blocked.
    pub abandon_running_after_secs: u64,
    /// A `queued` run not delivered to any worker for this long is failed likewise.
    pub abandon_queued_after_secs: u64,
}

impl SchedulerSettings {
    pub fn interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.interval_ms)
    }

    pub fn republish_after(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.republish_after_secs)
    }

    pub fn abandon_running_after(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.abandon_running_after_secs)
    }

    pub fn abandon_queued_after(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.abandon_queued_after_secs)
    }
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        Self {
            interval_ms: 2000,
            batch_size: 1000,
            republish_after_secs: 30,
            abandon_running_after_secs: 600,
            abandon_queued_after_secs: 3600,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Allow connector base URLs over plain `http://` and to loopback or private addresses.
    /// Off in production (SSRF guard); on for the sandbox, tests and the demo.
    pub allow_private_networks: bool,
    /// Consecutive failures of an ERP account (5xx, no answer) after which a worker stops
    /// sending to it for `breaker_cool_off_secs` and hands the job back to the queue.
    pub breaker_trip_after: u32,
    pub breaker_cool_off_secs: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            allow_private_networks: false,
            breaker_trip_after: 5,
            breaker_cool_off_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSettings {
    /// Address the admin API listens on (`passerelle api`).
    pub listen: String,
    /// Largest request body accepted, in bytes; a larger one is refused with `413`.
    pub max_body_bytes: usize,
    /// Failed authentications one client address may make per minute before it is refused
    /// with `429` for the rest of that minute.
    pub auth_failures_per_minute: u32,
    /// Longest page a listing returns, whatever `limit` asks for.
    pub max_page_size: u32,
    /// The API's address as a browser reaches it: the OAuth consent's redirect URI is
    /// `<public_url>/api/v1/oauth/callback`, registered as such with each ERP's app.
    pub public_url: String,
    /// Where the browser is sent once a consent is done, with `?integration=<id>&status=connected`
    /// (or `status=error&error=…`); empty: the API's own `/api/v1/oauth/connected` page.
    pub oauth_return_url: String,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 1024 * 1024,
            auth_failures_per_minute: 20,
            max_page_size: 500,
            public_url: "http://127.0.0.1:8080".into(),
            oauth_return_url: String::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `tracing` filter directive, e.g. `info` or `passerelle=debug,sqlx=warn`. `RUST_LOG`
    /// overrides it when set.
    pub filter: String,
    /// `text` for people, `json` for log shippers.
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            filter: "info,sqlx=warn".into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {path} does not exist")]
    FileNotFound { path: PathBuf },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Settings {
    /// Loads defaults, then `file` (when given), then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(file, None)
    }

    /// As [`Settings::load`], with the environment given explicitly (tests) instead of read
    /// from the process.
    pub fn load_with_env(
        file: Option<&Path>,
        env: Option<HashMap<String, String>>,
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::FileNotFound {
                    path: path.to_owned(),
                });
            }
            builder = builder.add_source(
                config::File::from(path)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        let environment = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            // No value is split on commas here (a log filter has them); the one list key,
            // `amqp.retry_delays_secs`, reads its comma-separated text itself.
            .source(env);
        builder = builder.add_source(environment);
        let built = builder
            .build()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let settings = built
            .try_deserialize::<Settings>()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks every value's range, so a role never starts with one it would crash on or
    /// silently clamp. The error names the key and its allowed range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut at_least = |key: &str, value: u64, min: u64| {
            if value < min {
                problems.push(format!(
                    "{key} = {value} is out of range: it must be at least {min}"
                ));
            }
        };
        at_least(
            "database.max_connections",
            self.database.max_connections.into(),
            1,
        );
        at_least(
            "database.acquire_timeout_secs",
            self.database.acquire_timeout_secs,
            1,
        );
        at_least("amqp.delivery_limit", self.amqp.delivery_limit.into(), 1);
        at_least(
            "sync.error_after_consecutive_failures",
            self.sync.error_after_consecutive_failures.into(),
            1,
        );
        at_least("worker.concurrency", self.worker.concurrency.into(), 1);
        at_least("worker.chunk_size", self.worker.chunk_size.into(), 1);
        // The heartbeat renews the lease every third of it.
        at_least("worker.lease_ttl_secs", self.worker.lease_ttl_secs, 3);
        at_least("worker.time_budget_secs", self.worker.time_budget_secs, 1);
        at_least("worker.max_attempts", self.worker.max_attempts.into(), 1);
        at_least("scheduler.interval_ms", self.scheduler.interval_ms, 10);
        at_least("scheduler.batch_size", self.scheduler.batch_size.into(), 1);
        at_least("api.max_body_bytes", self.api.max_body_bytes as u64, 1024);
        at_least(
            "api.auth_failures_per_minute",
            self.api.auth_failures_per_minute.into(),
            1,
        );
        at_least("api.max_page_size", self.api.max_page_size.into(), 1);
        at_least(
            "scheduler.republish_after_secs",
            self.scheduler.republish_after_secs,
            1,
        );
        at_least(
            "scheduler.abandon_running_after_secs",
            self.scheduler.abandon_running_after_secs,
            1,
        );
        at_least(
            "scheduler.abandon_queued_after_secs",
            self.scheduler.abandon_queued_after_secs,
            1,
        );
        self.check_urls(&mut problems);
        let tiers = &self.amqp.retry_delays_secs;
        if tiers.is_empty() || tiers.contains(&0) || tiers.windows(2).any(|w| w[0] >= w[1]) {
            problems.push(format!(
                "amqp.retry_delays_secs = {tiers:?} is invalid: give one or more delays in whole seconds, at least 1, shortest first, each longer than the one before"
            ));
        }
        let prefix = &self.amqp.prefix;
        if prefix.is_empty()
            || prefix.len() > 100
            || !prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            problems.push(format!(
                "amqp.prefix = `{prefix}` is invalid: 1 to 100 characters of letters, digits, `.`, `-` and `_`"
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems.join("; ")))
        }
    }

    /// The addresses the API hands out must be absolute http(s) URLs.
    fn check_urls(&self, problems: &mut Vec<String>) {
        for (key, value, empty_ok) in [
            ("api.public_url", &self.api.public_url, false),
            ("api.oauth_return_url", &self.api.oauth_return_url, true),
        ] {
            let valid = (empty_ok && value.is_empty())
                || url::Url::parse(value)
                    .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if !valid {
                problems.push(format!(
                    "{key} = `{value}` is invalid: give an absolute http(s) URL"
                ));
            }
        }
    }

    /// The effective configuration as JSON with every secret redacted: passwords inside URLs
    /// and vault keys are replaced, everything else is shown as is.
    pub fn redacted(&self) -> serde_json::Value {
        serde_json::json!({
            "database": {
                "url": redact_url(self.database.url.expose_secret()),
                "max_connections": self.database.max_connections,
                "acquire_timeout_secs": self.database.acquire_timeout_secs,
            },
            "amqp": {
                "url": redact_url(self.amqp.url.expose_secret()),
                "prefix": self.amqp.prefix,
                "delivery_limit": self.amqp.delivery_limit,
                "retry_delays_secs": self.amqp.retry_delays_secs,
                "give_up_after_secs": self.amqp.give_up_after_secs,
            },
            "vault": {
                "active_key": self.vault.active_key,
                "keys": self.vault.keys.keys().map(|k| (k.clone(), serde_json::Value::from(REDACTED))).collect::<serde_json::Map<_, _>>(),
            },
            "sync": {
                "error_after_consecutive_failures": self.sync.error_after_consecutive_failures,
            },
            "worker": self.worker,
            "scheduler": self.scheduler,
            "http": self.http,
            "api": self.api,
            "log": self.log,
        })
    }
}

/// What replaces a secret in any output.
pub const REDACTED: &str = "<redacted>";

/// A URL with its password (if any) replaced by [`REDACTED`]. A value that does not parse as a
/// URL is redacted whole, since we cannot tell where a password would be.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() && url.set_password(Some("redacted")).is_err() {
                return REDACTED.into();
            }
            url.to_string()
        }
        Err(_) => REDACTED.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn defaults_reach_local_services() {
        let s = Settings::load_with_env(None, env(&[])).unwrap();
        assert_eq!(
            s.database.url.expose_secret(),
            "postgres://postgres@127.0.0.1:5432/passerelle"
        );
        assert_eq!(s.amqp.prefix, "passerelle");
        assert_eq!(s.sync.error_after_consecutive_failures, 10);
    }

    #[test]
    fn environment_overrides_file_which_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("passerelle-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.toml");
        std::fs::write(
            &file,
            "[amqp]\nprefix = \"from_file\"\n[database]\nmax_connections = 3\n",
        )
        .unwrap();
        let s = Settings::load_with_env(
            Some(&file),
            env(&[("PASSERELLE__AMQP__PREFIX", "from_env")]),
        )
        .unwrap();
        assert_eq!(s.amqp.prefix, "from_env");
        assert_eq!(s.database.max_connections, 3);
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_it() {
        let err = Settings::load_with_env(None, env(&[("PASSERELLE__DATABASE__URLL", "x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("urll"), "{err}");
        let err = Settings::load_with_env(None, env(&[("PASSERELLE__NOPE__X", "1")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn list_keys_parse_from_the_environment_and_other_commas_stay_text() {
        let s = Settings::load_with_env(
            None,
            env(&[
                ("PASSERELLE__AMQP__RETRY_DELAYS_SECS", "1,2,3"),
                ("PASSERELLE__LOG__FILTER", "info,sqlx=warn"),
            ]),
        )
        .unwrap();
        assert_eq!(s.amqp.retry_delays_secs, vec![1, 2, 3]);
        assert_eq!(s.log.filter, "info,sqlx=warn");
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = Settings::load_with_env(Some(Path::new("/nonexistent/p.toml")), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/p.toml"), "{err}");
    }

    #[test]
    fn redacted_view_hides_passwords_and_keys() {
        let key = crate::vault::generate_key_base64();
        let s = Settings::load_with_env(
            None,
            env(&[
                (
                    "PASSERELLE__DATABASE__URL",
                    "postgres://app:hunter2@db:5432/p",
                ),
                ("PASSERELLE__VAULT__ACTIVE_KEY", "k1"),
                ("PASSERELLE__VAULT__KEYS__K1", &key),
            ]),
        )
        .unwrap();
        let shown = s.redacted().to_string();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains(&key), "{shown}");
        assert!(
            shown.contains("postgres://app:redacted@db:5432/p"),
            "{shown}"
        );
        assert!(shown.contains("\"k1\":\"<redacted>\""), "{shown}");
        assert_eq!(s.vault.key_ring().unwrap().active_key_id(), "k1");
    }

    #[test]
    fn the_example_file_documents_every_key_with_its_default() {
        let example =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/passerelle.example.toml");
        let documented = Settings::load_with_env(Some(&example), env(&[])).unwrap();
        assert_eq!(documented.redacted(), Settings::default().redacted());
        // Every key the defaults have is written out in the example (not only accepted).
        let text = std::fs::read_to_string(&example).unwrap();
        let defaults = Settings::default().redacted();
        for (section, keys) in defaults.as_object().unwrap() {
            assert!(
                text.contains(&format!("[{section}]")),
                "[{section}] undocumented"
            );
            for key in keys.as_object().unwrap().keys() {
                if section == "vault" && key == "keys" {
                    continue;
                }
                assert!(
                    text.contains(&format!("\n{key} = ")),
                    "{section}.{key} undocumented"
                );
            }
        }
    }

    #[test]
    fn out_of_range_values_are_refused_at_load_naming_the_key() {
        for (var, value, key) in [
            (
                "PASSERELLE__WORKER__LEASE_TTL_SECS",
                "0",
                "worker.lease_ttl_secs",
            ),
            (
                "PASSERELLE__DATABASE__MAX_CONNECTIONS",
                "0",
                "database.max_connections",
            ),
            ("PASSERELLE__WORKER__CHUNK_SIZE", "0", "worker.chunk_size"),
            ("PASSERELLE__WORKER__CONCURRENCY", "0", "worker.concurrency"),
            (
                "PASSERELLE__SCHEDULER__INTERVAL_MS",
                "0",
                "scheduler.interval_ms",
            ),
            (
                "PASSERELLE__AMQP__RETRY_DELAYS_SECS",
                "30,5",
                "amqp.retry_delays_secs",
            ),
            (
                "PASSERELLE__AMQP__RETRY_DELAYS_SECS",
                "0",
                "amqp.retry_delays_secs",
            ),
            ("PASSERELLE__AMQP__PREFIX", "a b", "amqp.prefix"),
        ] {
            let err = Settings::load_with_env(None, env(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{var}={value}: {err}");
        }
    }

    #[test]
    fn a_one_item_list_from_the_environment_is_a_list() {
        let s = Settings::load_with_env(None, env(&[("PASSERELLE__AMQP__RETRY_DELAYS_SECS", "5")]))
            .unwrap();
        assert_eq!(s.amqp.retry_delays_secs, vec![5]);
    }
}
