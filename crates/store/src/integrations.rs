//! Integrations: the legacy app's `Integration` model behaviour (`can_sync`, `needs_sync`,
//! `record_sync`, `update_next_sync`, success rate and scopes) over the `integrations` table.

use crate::{Store, StoreError};
use chrono::{DateTime, Utc};
use passerelle_core::conflict::ConflictPolicy;
use passerelle_core::schedule::next_sync_after;
use passerelle_core::vault::{CredentialOwner, Credentials, SealedCredentials, Vault};
use passerelle_core::{Entity, IntegrationStatus, IntegrationType, SyncDirection, SyncFrequency};
use passerelle_core::{IntegrationId, TenantId};
use serde::Serialize;

/// One row of `integrations`. `credentials` stays sealed; open it with [`Integration::open_credentials`].
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct Integration {
    pub id: IntegrationId,
    pub tenant_id: TenantId,
    pub name: String,
    #[sqlx(rename = "type")]
    #[serde(rename = "type")]
    pub integration_type: IntegrationType,
    pub status: IntegrationStatus,
    /// Sealed envelope; never serialised to callers.
    #[serde(skip)]
    pub credentials: Option<serde_json::Value>,
    pub settings: Option<serde_json::Value>,
    pub sync_direction: SyncDirection,
    pub sync_products: bool,
    pub sync_orders: bool,
    pub sync_customers: bool,
    pub sync_invoices: bool,
    pub sync_inventory: bool,
    pub sync_frequency: SyncFrequency,
    pub last_sync_at: Option<DateTime<Utc>>,
    pub next_sync_at: Option<DateTime<Utc>>,
    pub total_syncs: i32,
    pub successful_syncs: i32,
    pub failed_syncs: i32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub consecutive_failures: i32,
    /// Where run completions are POSTed (Standard Webhooks), if anywhere.
    pub webhook_url: Option<String>,
    /// Who wins a bidirectional conflict, per entity, as the admin chose it.
    pub conflict_policy: sqlx::types::Json<ConflictPolicy>,
    /// The webhook signing secret, sealed like the credentials; never serialised.
    #[serde(skip)]
    pub webhook_secret: Option<serde_json::Value>,
}

impl Integration {
    pub fn owner(&self) -> CredentialOwner {
        CredentialOwner {
            integration_id: self.id,
            tenant_id: self.tenant_id,
        }
    }

    /// The legacy app's `canSync`: an integration may sync when it is active and not deleted.
    pub fn can_sync(&self) -> bool {
        self.status == IntegrationStatus::Active && self.deleted_at.is_none()
    }

    /// The legacy app's `needsSync`: it may sync, it is on a schedule, and its slot has come (or it was
    /// never scheduled).
    pub fn needs_sync(&self, now: DateTime<Utc>) -> bool {
        self.can_sync()
            && self.sync_frequency != SyncFrequency::Manual
            && self.next_sync_at.is_none_or(|at| at <= now)
    }

    /// The legacy app's `getSuccessRate`: successful runs as a percentage of all runs, 0 before the first.
    pub fn success_rate(&self) -> f64 {
        if self.total_syncs == 0 {
            0.0
        } else {
            f64::from(self.successful_syncs) * 100.0 / f64::from(self.total_syncs)
        }
    }

    /// The entities switched on (`sync_products` ...), in a stable order.
    pub fn enabled_entities(&self) -> Vec<Entity> {
        [
            (Entity::Product, self.sync_products),
            (Entity::Customer, self.sync_customers),
            (Entity::Order, self.sync_orders),
            (Entity::Invoice, self.sync_invoices),
            (Entity::Inventory, self.sync_inventory),
        ]
        .into_iter()
        .filter_map(|(e, on)| on.then_some(e))
        .collect()
    }

    /// Decrypts the webhook signing secret (`whsec_…`), when one is set.
    pub fn open_webhook_secret(&self, vault: &Vault) -> Result<Option<String>, StoreError> {
        self.webhook_secret
            .as_ref()
            .map(|raw| crate::webhooks::open_secret(vault, self.owner(), raw))
            .transpose()
    }

    /// Decrypts the credentials. `None` when none are stored; an error (naming the key id when
    /// it is missing) when they cannot be opened, never a silent `None`.
    pub fn open_credentials(&self, vault: &Vault) -> Result<Option<Credentials>, StoreError> {
        let Some(raw) = &self.credentials else {
            return Ok(None);
        };
        let wrap = |source| StoreError::Vault {
            integration_id: self.id,
            source,
        };
        let sealed = SealedCredentials::from_json(raw).map_err(wrap)?;
        vault.open(self.owner(), &sealed).map(Some).map_err(wrap)
    }
}

/// The field of the sealed envelope that holds the webhook secret.
pub(crate) const WEBHOOK_SECRET_FIELD: &str = "webhook_secret";

/// What an admin supplies to create an integration. Defaults follow the legacy app.
#[derive(Debug, Clone)]
pub struct NewIntegration {
    pub tenant_id: TenantId,
    pub name: String,
    pub integration_type: IntegrationType,
    pub credentials: Option<Credentials>,
    pub settings: Option<serde_json::Value>,
    pub sync_direction: SyncDirection,
    pub sync_products: bool,
    pub sync_orders: bool,
    pub sync_customers: bool,
    pub sync_invoices: bool,
    pub sync_inventory: bool,
    pub sync_frequency: SyncFrequency,
    pub conflict_policy: ConflictPolicy,
}

impl NewIntegration {
    /// The legacy app's defaults: export, orders and invoices, manual.
    pub fn new(
        tenant_id: TenantId,
        name: impl Into<String>,
        integration_type: IntegrationType,
    ) -> Self {
        Self {
            tenant_id,
            name: name.into(),
            integration_type,
            credentials: None,
            settings: None,
            sync_direction: SyncDirection::Export,
            sync_products: false,
            sync_orders: true,
            sync_customers: false,
            sync_invoices: true,
            sync_inventory: false,
            sync_frequency: SyncFrequency::Manual,
            conflict_policy: ConflictPolicy::default(),
        }
    }
}

/// A partial update; `None` leaves a column as it is.
#[derive(Debug, Clone, Default)]
pub struct IntegrationPatch {
    pub name: Option<String>,
    pub status: Option<IntegrationStatus>,
    pub credentials: Option<Credentials>,
    pub settings: Option<serde_json::Value>,
    pub sync_direction: Option<SyncDirection>,
    pub sync_products: Option<bool>,
    pub sync_orders: Option<bool>,
    pub sync_customers: Option<bool>,
    pub sync_invoices: Option<bool>,
    pub sync_inventory: Option<bool>,
    pub sync_frequency: Option<SyncFrequency>,
    pub conflict_policy: Option<ConflictPolicy>,
    /// The settings or credentials changed: an `active` integration goes back to `testing`
    /// (decided on the locked row, so a concurrent activation cannot slip past it).
    pub retest: bool,
}

/// What `record_sync` did.
#[derive(Debug, Clone)]
pub struct RecordedSync {
    pub integration: Integration,
    /// True when this failure crossed the consecutive-failure threshold and set `error`.
    pub entered_error: bool,
}

fn check_settings(settings: &Option<serde_json::Value>) -> Result<(), StoreError> {
    match settings {
        None | Some(serde_json::Value::Object(_)) => Ok(()),
        Some(_) => Err(StoreError::Invalid("settings must be a JSON object".into())),
    }
}

fn check_name(name: &str) -> Result<(), StoreError> {
    let len = name.chars().count();
    if name.trim().is_empty() || len > 255 {
        return Err(StoreError::Invalid(format!(
            "name must be 1 to 255 characters, got {len}"
        )));
    }
    Ok(())
}

/// The status, frequency and next run an update leaves: a reconfigured active integration is
/// retested; a new frequency starts a new schedule; an activated scheduled one is due at once.
fn schedule_after(
    current: &Integration,
    patch: &IntegrationPatch,
    now: DateTime<Utc>,
) -> (IntegrationStatus, SyncFrequency, Option<DateTime<Utc>>) {
    let frequency = patch.sync_frequency.unwrap_or(current.sync_frequency);
    let status = if patch.retest && current.status == IntegrationStatus::Active {
        IntegrationStatus::Testing
    } else {
        patch.status.unwrap_or(current.status)
    };
    let next_sync_at = if patch
        .sync_frequency
        .is_some_and(|f| f != current.sync_frequency)
    {
        next_sync_after(frequency, None, now)
    } else if frequency == SyncFrequency::Manual {
        None
    } else if status == IntegrationStatus::Active && current.next_sync_at.is_none() {
        Some(now)
    } else {
        current.next_sync_at
    };
    (status, frequency, next_sync_at)
}

impl Store {
    /// Inserts an integration, sealing its credentials with the row's own id and tenant as
    /// associated data. Needs a vault only when credentials are given.
    pub async fn create_integration(
        &self,
        vault: Option<&Vault>,
        new: NewIntegration,
    ) -> Result<Integration, StoreError> {
        check_name(&new.name)?;
        check_settings(&new.settings)?;
        // The id is part of the associated data, so take it before sealing.
        let id: IntegrationId =
            sqlx::query_scalar("SELECT nextval(pg_get_serial_sequence('integrations', 'id'))")
                .fetch_one(&self.pool)
                .await?;
        let sealed = seal(vault, id, new.tenant_id, new.credentials.as_ref())?;
        if let (Some(vault), Some(_)) = (vault, &sealed) {
            self.record_key_fingerprint(vault, vault.ring().active_key_id())
                .await?;
        }
        let row = sqlx::query_as::<_, Integration>(
            "INSERT INTO integrations (id, tenant_id, name, type, credentials, settings, sync_direction,
                 sync_products, sync_orders, sync_customers, sync_invoices, sync_inventory, sync_frequency,
                 conflict_policy)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
             RETURNING *",
        )
        .bind(id)
        .bind(new.tenant_id)
        .bind(&new.name)
        .bind(new.integration_type)
        .bind(sealed)
        .bind(&new.settings)
        .bind(new.sync_direction)
        .bind(new.sync_products)
        .bind(new.sync_orders)
        .bind(new.sync_customers)
        .bind(new.sync_invoices)
        .bind(new.sync_inventory)
        .bind(new.sync_frequency)
        .bind(sqlx::types::Json(&new.conflict_policy))
        .fetch_one(&self.pool)
        .await?;
        Ok(row)
    }

    /// An integration by id, including soft-deleted ones.
    /// Whether the platform has this tenant.
    pub async fn tenant_exists(&self, tenant_id: TenantId) -> Result<bool, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM platform.tenants WHERE id = $1)")
                .bind(tenant_id)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Records why the integration's last check (a connection test) failed.
    pub async fn set_last_error(&self, id: IntegrationId, message: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE integrations SET last_error = $2 WHERE id = $1")
            .bind(id)
            .bind(message)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn integration(&self, id: IntegrationId) -> Result<Integration, StoreError> {
        sqlx::query_as::<_, Integration>("SELECT * FROM integrations WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::IntegrationNotFound { id })
    }

    /// Scopes `forTenant`, `byType` and `active`, excluding soft-deleted rows.
    pub async fn list_integrations(
        &self,
        tenant_id: Option<TenantId>,
        integration_type: Option<IntegrationType>,
        status: Option<IntegrationStatus>,
    ) -> Result<Vec<Integration>, StoreError> {
        Ok(sqlx::query_as::<_, Integration>(
            "SELECT * FROM integrations
              WHERE deleted_at IS NULL
                AND ($1::bigint IS NULL OR tenant_id = $1)
                AND ($2::integration_type IS NULL OR type = $2)
                AND ($3::integration_status IS NULL OR status = $3)
              ORDER BY id",
        )
        .bind(tenant_id)
        .bind(integration_type)
        .bind(status)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Scope `needsSync`: ids of integrations whose scheduled slot has come.
    pub async fn integrations_needing_sync(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Integration>, StoreError> {
        Ok(sqlx::query_as::<_, Integration>(
            "SELECT * FROM integrations
              WHERE status = 'active' AND deleted_at IS NULL AND sync_frequency <> 'manual'
                AND (next_sync_at IS NULL OR next_sync_at <= $1)
              ORDER BY next_sync_at NULLS FIRST, id
              LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Applies a partial update. Changing the frequency reschedules from now.
    pub async fn update_integration(
        &self,
        vault: Option<&Vault>,
        id: IntegrationId,
        patch: IntegrationPatch,
        now: DateTime<Utc>,
    ) -> Result<Integration, StoreError> {
        if let Some(name) = &patch.name {
            check_name(name)?;
        }
        check_settings(&patch.settings)?;
        let mut tx = self.pool.begin().await?;
        let current = sqlx::query_as::<_, Integration>(
            "SELECT * FROM integrations WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::IntegrationNotFound { id })?;
        let sealed = seal(vault, id, current.tenant_id, patch.credentials.as_ref())?;
        if let (Some(vault), Some(_)) = (vault, &sealed) {
            self.record_key_fingerprint(vault, vault.ring().active_key_id())
                .await?;
        }
        let (status, frequency, next_sync_at) = schedule_after(&current, &patch, now);
        let row = sqlx::query_as::<_, Integration>(
            "UPDATE integrations SET
                name = COALESCE($2, name),
                status = $3,
                credentials = COALESCE($4, credentials),
                settings = COALESCE($5, settings),
                sync_direction = COALESCE($6, sync_direction),
                sync_products = COALESCE($7, sync_products),
                sync_orders = COALESCE($8, sync_orders),
                sync_customers = COALESCE($9, sync_customers),
                sync_invoices = COALESCE($10, sync_invoices),
                sync_inventory = COALESCE($11, sync_inventory),
                sync_frequency = $12,
                next_sync_at = $13,
                conflict_policy = COALESCE($14, conflict_policy),
                consecutive_failures = CASE WHEN $3 = 'active' AND status <> 'active' THEN 0 ELSE consecutive_failures END
              WHERE id = $1
              RETURNING *",
        )
        .bind(id)
        .bind(patch.name)
        .bind(status)
        .bind(sealed)
        .bind(patch.settings)
        .bind(patch.sync_direction)
        .bind(patch.sync_products)
        .bind(patch.sync_orders)
        .bind(patch.sync_customers)
        .bind(patch.sync_invoices)
        .bind(patch.sync_inventory)
        .bind(frequency)
        .bind(next_sync_at)
        .bind(patch.conflict_policy.map(sqlx::types::Json))
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Soft delete: the row, its logs and its mappings stay for audit; the scheduler stops.
    pub async fn soft_delete_integration(
        &self,
        id: IntegrationId,
        now: DateTime<Utc>,
    ) -> Result<Integration, StoreError> {
        sqlx::query_as::<_, Integration>(
            "UPDATE integrations SET deleted_at = $2, status = 'inactive', next_sync_at = NULL
              WHERE id = $1 AND deleted_at IS NULL RETURNING *",
        )
        .bind(id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::IntegrationNotFound { id })
    }

    /// The legacy app's `recordSync(success, error)`: bumps the counters, stamps `last_sync_at`, sets
    /// `last_error` to `error` (a success without one clears it; a partial success passes a
    /// summary of what failed) and sets `error` once `error_after` runs in a row
    /// have failed. One statement, so concurrent calls never lose a count.
    pub async fn record_sync(
        &self,
        id: IntegrationId,
        success: bool,
        error: Option<&str>,
        now: DateTime<Utc>,
        error_after: u32,
    ) -> Result<RecordedSync, StoreError> {
        let entered_error =
            record_sync_in(&self.pool, id, success, error, now, error_after).await?;
        Ok(RecordedSync {
            integration: self.integration(id).await?,
            entered_error,
        })
    }

    /// The legacy app's `updateNextSync`: the next slot after `now`, counted from the scheduled time so
    /// schedules do not drift.
    pub async fn update_next_sync(
        &self,
        id: IntegrationId,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row: Option<(SyncFrequency, Option<DateTime<Utc>>)> = sqlx::query_as(
            "SELECT sync_frequency, next_sync_at FROM integrations WHERE id = $1 FOR UPDATE",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let (frequency, scheduled) = row.ok_or(StoreError::IntegrationNotFound { id })?;
        let next = next_sync_after(frequency, scheduled, now);
        sqlx::query("UPDATE integrations SET next_sync_at = $2 WHERE id = $1")
            .bind(id)
            .bind(next)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(next)
    }

    /// Replaces the stored credentials only if they are still what `integration` holds
    /// (compare-and-swap on the sealed value): for rotations outside a run (the connection
    /// test), where no lease fences the write. `false` when someone else changed them first.
    pub async fn store_credentials_if_unchanged(
        &self,
        vault: &Vault,
        integration: &Integration,
        credentials: &Credentials,
    ) -> Result<bool, StoreError> {
        let sealed = seal_for(vault, integration.owner(), credentials)?;
        let updated = sqlx::query(
            "UPDATE integrations SET credentials = $2 WHERE id = $1 AND credentials IS NOT DISTINCT FROM $3",
        )
        .bind(integration.id)
        .bind(sealed)
        .bind(&integration.credentials)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(updated == 1)
    }

    /// Replaces the stored credentials with ones an ERP just rotated (a new refresh token),
    /// only while `lease` still holds the integration: a worker that lost its lease must not
    /// overwrite the token its successor already rotated. Committed before it returns.
    pub async fn store_rotated_credentials(
        &self,
        vault: &Vault,
        integration: &Integration,
        lease: &crate::LeaseToken,
        credentials: &Credentials,
    ) -> Result<(), StoreError> {
        let sealed = seal_for(vault, integration.owner(), credentials)?;
        let updated = sqlx::query(
            "UPDATE integrations SET credentials = $2
              WHERE id = $1 AND EXISTS (SELECT 1 FROM integration_leases l
                                         WHERE l.integration_id = $1 AND l.run_id = $3 AND l.owner = $4
                                           AND l.expires_at > now())",
        )
        .bind(integration.id)
        .bind(sealed)
        .bind(lease.run_id)
        .bind(&lease.owner)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if updated == 0 {
            return Err(StoreError::LeaseLost {
                integration_id: integration.id,
            });
        }
        Ok(())
    }
}

/// The credentials given to a create or an update, sealed; none given, nothing sealed (and no
/// vault needed).
fn seal(
    vault: Option<&Vault>,
    integration_id: IntegrationId,
    tenant_id: TenantId,
    credentials: Option<&Credentials>,
) -> Result<Option<serde_json::Value>, StoreError> {
    let Some(credentials) = credentials else {
        return Ok(None);
    };
    let vault = vault.ok_or(StoreError::Vault {
        integration_id,
        source: passerelle_core::vault::VaultError::NoKeys,
    })?;
    let owner = CredentialOwner {
        integration_id,
        tenant_id,
    };
    seal_for(vault, owner, credentials).map(Some)
}

/// `credentials` sealed with `owner` (the row's id and tenant) as associated data.
pub(crate) fn seal_for(
    vault: &Vault,
    owner: CredentialOwner,
    credentials: &Credentials,
) -> Result<serde_json::Value, StoreError> {
    vault
        .seal(owner, credentials)
        .map(|s| s.to_json())
        .map_err(|source| StoreError::Vault {
            integration_id: owner.integration_id,
            source,
        })
}

/// `record_sync` on any executor, so a run's end and its counters commit together. Returns
/// whether this call crossed the consecutive-failure threshold.
pub(crate) async fn record_sync_in<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    id: IntegrationId,
    success: bool,
    error: Option<&str>,
    now: DateTime<Utc>,
    error_after: u32,
) -> Result<bool, StoreError> {
    let threshold = i32::try_from(error_after.max(1)).unwrap_or(i32::MAX);
    let row: Option<(bool,)> = sqlx::query_as(
        "UPDATE integrations SET
            total_syncs = total_syncs + 1,
            successful_syncs = successful_syncs + CASE WHEN $2 THEN 1 ELSE 0 END,
            failed_syncs = failed_syncs + CASE WHEN $2 THEN 0 ELSE 1 END,
            consecutive_failures = CASE WHEN $2 THEN 0 ELSE consecutive_failures + 1 END,
            last_error = $3,
            last_sync_at = $4,
            status = CASE
                WHEN NOT $2 AND consecutive_failures + 1 >= $5 THEN 'error'::integration_status
                ELSE status END
          WHERE id = $1
          RETURNING (NOT $2 AND consecutive_failures = $5)",
    )
    .bind(id)
    .bind(success)
    .bind(error)
    .bind(now)
    .bind(threshold)
    .fetch_optional(executor)
    .await?;
    let (entered_error,) = row.ok_or(StoreError::IntegrationNotFound { id })?;
    Ok(entered_error)
}
