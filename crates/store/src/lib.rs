//! Postgres access for every Passerelle role: migrations, integrations and their counters,
//! logs, ID mappings, sync runs and vault rotation.
//!
//! This crate owns all SQL. It knows nothing of RabbitMQ or of any one ERP. Time comes from
//! one clock, [`Store::now`] (a [`passerelle_core::Clock`] that tests can move), or, for
//! leases, from the database's `now()`, which every worker shares.

pub mod admin;
pub mod conflicts;
pub mod demo;
pub mod imports;
pub mod integrations;
pub mod keys;
pub mod limiter;
pub mod logs;
pub mod mappings;
pub mod migrate;
pub mod oauth;
pub mod rotation;
pub mod runs;
pub mod statistics;
pub mod sync;
pub mod tokens;
pub mod webhooks;

use passerelle_core::IntegrationId;
use passerelle_core::vault::VaultError;
use passerelle_core::{Clock, SystemClock};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::str::FromStr;
use std::time::Duration;

pub use admin::{
    CancelOutcome, IntegrationHealth, IntegrationQuery, LogKey, LogQuery, MappingQuery,
    TenantTotals,
};
pub use conflicts::PlatformSnapshot;
pub use integrations::{Integration, IntegrationPatch, NewIntegration, RecordedSync};
pub use keys::CredentialFault;
pub use logs::{IntegrationLog, LogFilter, NewLog};
pub use mappings::{Mapping, MappingFilter};
pub use migrate::{MIGRATOR, drop_database, ensure_database, migrate};
pub use oauth::PendingConsent;
pub use rotation::{RotationProgress, RotationReport, rotate_credentials};
pub use runs::{BeginOutcome, Heartbeat, LeaseToken, SyncRun};
pub use tokens::{ApiToken, NewApiToken};
pub use webhooks::{ClaimedWebhook, WebhookDelivery};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    #[error(
        "the database's applied migrations differ from this binary's: {detail}. Refusing to run against it; use the passerelle release that migrated it, or restore the database"
    )]
    MigrationMismatch { detail: String },
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("integration {id} not found")]
    IntegrationNotFound { id: IntegrationId },
    #[error("integration {integration_id}: {source}")]
    Vault {
        integration_id: IntegrationId,
        #[source]
        source: VaultError,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(
        "the saved {direction} cursor of integration {integration_id} for {entity} cannot be read ({reason}); the step stops rather than restart the whole pass. Inspect it with `SELECT cursor FROM sync_cursors WHERE integration_id = {integration_id} AND entity = '{entity}' AND direction = '{direction}'`; deleting that row restarts the pass from the beginning"
    )]
    CorruptCursor {
        integration_id: IntegrationId,
        entity: passerelle_core::Entity,
        direction: passerelle_core::LogDirection,
        reason: String,
    },
    #[error(
        "the metadata of integration {integration_id}'s {entity_type} mapping to ERP record {external_id} cannot be read ({reason}); the step stops rather than guess what was last synced. Inspect it with `SELECT metadata FROM integration_mappings WHERE integration_id = {integration_id} AND entity_type = '{entity_type}' AND external_id = '{external_id}'`; setting it to NULL makes the next sync send the record again"
    )]
    CorruptMapping {
        integration_id: IntegrationId,
        entity_type: passerelle_core::MappingEntityType,
        external_id: String,
        reason: String,
    },
    #[error(
        "the lease on integration {integration_id} was lost (it expired and another worker took the run over); this worker stopped without committing"
    )]
    LeaseLost { integration_id: IntegrationId },
}

/// A pool of connections to the Passerelle database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
    statistics: std::sync::Arc<statistics::StatisticsKeeper>,
    /// "Now" for every decision made in Rust (schedules, counters' timestamps, waits); the
    /// system clock except in tests. Leases and intents are timed by the database's `now()`,
    /// the one clock every worker shares.
    clock: std::sync::Arc<dyn Clock>,
}

impl Store {
    /// Connects lazily-validated: fails fast with a clear error if the server is unreachable.
    pub async fn connect(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let options =
            PgConnectOptions::from_str(url).map_err(|e| StoreError::InvalidUrl(e.to_string()))?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(acquire_timeout)
            .connect_with(options)
            .await?;
        Ok(Self::from_pool(pool))
    }

    pub fn from_pool(pool: PgPool) -> Self {
        Self {
            pool,
            statistics: Default::default(),
            clock: std::sync::Arc::new(SystemClock),
        }
    }

    /// The same store reading time from `clock` (tests move it to reach a schedule).
    pub fn with_clock(mut self, clock: std::sync::Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The current time, from the store's clock.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}
