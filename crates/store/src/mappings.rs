//! ID mappings between platform rows and ERP records (the legacy app's `mapIds`, `getExternalId`,
//! `getInternalId`, the mapping scopes, `needsSync` and `markSynced`).

use crate::{Integration, Store, StoreError};
use chrono::{DateTime, Duration, Utc};
use passerelle_core::{IntegrationId, TenantId};
use passerelle_core::{MappingEntityType, MappingMeta};
use serde::Serialize;

/// A platform row and the ERP record it stands for.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Mapping {
    pub id: i64,
    pub integration_id: IntegrationId,
    pub tenant_id: TenantId,
    pub entity_type: MappingEntityType,
    pub internal_id: String,
    pub external_id: String,
    /// The column as stored, for audit: the sync reads it as a [`MappingMeta`] (content
    /// hashes, the connector's own data).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<serde_json::Value>,
    pub last_synced_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Mapping {
    /// The legacy app's `needsSync(hours)`: never synced, or not within the last `hours`.
    pub fn needs_sync(&self, hours: i64, now: DateTime<Utc>) -> bool {
        self.last_synced_at
            .is_none_or(|at| at < now - Duration::hours(hours))
    }
}

/// Mapping scopes; every field narrows the result.
#[derive(Debug, Clone, Default)]
pub struct MappingFilter {
    pub integration_id: Option<IntegrationId>,
    pub tenant_id: Option<TenantId>,
    pub entity_type: Option<MappingEntityType>,
    /// Scope `recentlySynced(hours)`.
    pub synced_within_hours: Option<i64>,
    pub limit: Option<i64>,
}

/// How many times `map_ids` retries after losing a race on a unique key.
const MAP_IDS_ATTEMPTS: usize = 5;

/// One side of a mapping, to find the other by.
enum Known<'a> {
    Internal(&'a str),
    External(&'a str),
}

impl Store {
    /// The legacy app's `mapIds`: records that `internal_id` is `external_id` at the ERP. An existing
    /// mapping on either unique key is updated rather than tripping a constraint error (the
    /// legacy app's troubleshooting notes): the internal row takes the new external id, and a
    /// different internal row that held this external id is removed, since one ERP record
    /// cannot stand for two platform rows.
    pub async fn map_ids(
        &self,
        integration: &Integration,
        entity_type: MappingEntityType,
        internal_id: &str,
        external_id: &str,
        metadata: Option<&MappingMeta>,
        now: DateTime<Utc>,
    ) -> Result<Mapping, StoreError> {
        let (integration_id, tenant_id) = (integration.id, integration.tenant_id);
        let metadata = metadata.map(crate::sync::meta_json).transpose()?;
        for attempt in 1..=MAP_IDS_ATTEMPTS {
            let mut tx = self.pool.begin().await?;
            let result = async {
                // Serialise writers of the same internal or external id: without this, two
                // transactions deleting and inserting the same keys deadlock on the unique
                // indexes. Locks are taken in a fixed order so they cannot deadlock themselves.
                let mut keys = [
                    format!("map:{integration_id}:{entity_type}:i:{internal_id}"),
                    format!("map:{integration_id}:{entity_type}:e:{external_id}"),
                ];
                keys.sort();
                for key in &keys {
                    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                        .bind(key)
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query(
                    "DELETE FROM integration_mappings
                      WHERE integration_id = $1 AND entity_type = $2 AND external_id = $3
                        AND internal_id <> $4",
                )
                .bind(integration_id)
                .bind(entity_type)
                .bind(external_id)
                .bind(internal_id)
                .execute(&mut *tx)
                .await?;
                sqlx::query_as::<_, Mapping>(
                    "INSERT INTO integration_mappings
                         (integration_id, tenant_id, entity_type, internal_id, external_id, metadata, last_synced_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (integration_id, entity_type, internal_id) DO UPDATE SET
                         external_id = EXCLUDED.external_id,
                         metadata = COALESCE(EXCLUDED.metadata, integration_mappings.metadata),
                         last_synced_at = EXCLUDED.last_synced_at
                     RETURNING *",
                )
                .bind(integration_id)
                .bind(tenant_id)
                .bind(entity_type)
                .bind(internal_id)
                .bind(external_id)
                .bind(&metadata)
                .bind(now)
                .fetch_one(&mut *tx)
                .await
            }
            .await;
            match result {
                Ok(mapping) => {
                    tx.commit().await?;
                    return Ok(mapping);
                }
                // A writer that bypassed the locks (another tool, a manual fix) raced us on a
                // unique key: roll back and try again; the next DELETE sees its row.
                Err(sqlx::Error::Database(e))
                    if matches!(e.code().as_deref(), Some("23505" | "40P01"))
                        && attempt < MAP_IDS_ATTEMPTS =>
                {
                    tx.rollback().await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Invalid(format!(
            "map_ids for {entity_type} {internal_id} kept conflicting after {MAP_IDS_ATTEMPTS} attempts"
        )))
    }

    /// The legacy app's `getExternalId`.
    pub async fn external_id(
        &self,
        integration_id: IntegrationId,
        entity_type: MappingEntityType,
        internal_id: &str,
    ) -> Result<Option<String>, StoreError> {
        self.mapped_id(integration_id, entity_type, Known::Internal(internal_id))
            .await
    }

    /// The legacy app's `getInternalId`.
    pub async fn internal_id(
        &self,
        integration_id: IntegrationId,
        entity_type: MappingEntityType,
        external_id: &str,
    ) -> Result<Option<String>, StoreError> {
        self.mapped_id(integration_id, entity_type, Known::External(external_id))
            .await
    }

    /// The other id of the mapping `known` belongs to.
    async fn mapped_id(
        &self,
        integration_id: IntegrationId,
        entity_type: MappingEntityType,
        known: Known<'_>,
    ) -> Result<Option<String>, StoreError> {
        let (query, id) = match known {
            Known::Internal(id) => (
                "SELECT external_id FROM integration_mappings
                  WHERE integration_id = $1 AND entity_type = $2 AND internal_id = $3",
                id,
            ),
            Known::External(id) => (
                "SELECT internal_id FROM integration_mappings
                  WHERE integration_id = $1 AND entity_type = $2 AND external_id = $3",
                id,
            ),
        };
        Ok(sqlx::query_scalar(query)
            .bind(integration_id)
            .bind(entity_type)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// The legacy app's `markSynced`.
    pub async fn mark_mapping_synced(&self, id: i64, now: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query("UPDATE integration_mappings SET last_synced_at = $2 WHERE id = $1")
            .bind(id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Mapping scopes `forIntegration`, `forTenant`, `byEntityType`, `recentlySynced`.
    pub async fn mappings(
        &self,
        filter: &MappingFilter,
        now: DateTime<Utc>,
    ) -> Result<Vec<Mapping>, StoreError> {
        let since = filter.synced_within_hours.map(|h| now - Duration::hours(h));
        Ok(sqlx::query_as::<_, Mapping>(
            "SELECT * FROM integration_mappings
              WHERE ($1::bigint IS NULL OR integration_id = $1)
                AND ($2::bigint IS NULL OR tenant_id = $2)
                AND ($3::mapping_entity_type IS NULL OR entity_type = $3)
                AND ($4::timestamptz IS NULL OR last_synced_at >= $4)
              ORDER BY id
              LIMIT $5",
        )
        .bind(filter.integration_id)
        .bind(filter.tenant_id)
        .bind(filter.entity_type)
        .bind(since)
        .bind(filter.limit.unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?)
    }
}
