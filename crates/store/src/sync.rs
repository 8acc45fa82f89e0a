//! What a worker reads and writes while it syncs: pages of platform rows to export, the
//! mappings and intents of a page, and the one transaction per chunk that records results
//! (mappings, logs, the cursor, the run's counts), fenced by the integration lease so a worker
//! that lost its lease can never commit.

use crate::runs::{LeaseToken, heartbeat_in};
use crate::{NewLog, Store, StoreError};
use chrono::{DateTime, Utc};
use passerelle_core::platform::{
    CustomerRecord, InventoryRecord, InvoiceRecord, OrderLine, OrderRecord, PlatformRecord,
    ProductRecord,
};
use passerelle_core::{Entity, LogDirection, MappingEntityType, MappingMeta};
use passerelle_core::{IntegrationId, RunId, TenantId};
use rust_decimal::Decimal;
use std::collections::HashMap;
use std::time::Duration;

pub use passerelle_core::cursor::{
    EXPORT_OVERLAP, ExportCursor, ImportCursor, RowPosition, StepCursor,
};

/// A mapping as an export sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct KnownMapping {
    pub external_id: String,
    /// Digests of the last export and import, and the connector's keys; `None` when the row
    /// has no metadata.
    pub metadata: Option<MappingMeta>,
    pub last_synced_at: Option<DateTime<Utc>>,
}

/// A mapping row a chunk writes.
#[derive(Debug, Clone)]
pub struct MappingWrite {
    pub internal_id: String,
    pub external_id: String,
    /// Merged into what the row holds: parts left out keep their stored value.
    pub metadata: MappingMeta,
}

/// A create that may reach the ERP before its result is recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Intent {
    pub idempotency_key: String,
    pub request: serde_json::Value,
    /// When the first attempt recorded it (the database's clock).
    pub recorded_at: Option<DateTime<Utc>>,
}

/// A create about to be sent for the first time: what [`Store::record_intents`] records.
#[derive(Debug, Clone, Copy)]
pub struct NewIntent<'a> {
    pub internal_id: &'a str,
    pub idempotency_key: &'a str,
    pub request: &'a serde_json::Value,
}

/// Everything one chunk records, atomically.
#[derive(Debug, Clone)]
pub struct ChunkCommit<'a> {
    pub lease: &'a LeaseToken,
    pub lease_ttl: Duration,
    pub entity: Entity,
    pub mappings: Vec<MappingWrite>,
    /// Mappings to remove (an imported tombstone).
    pub unmap_external: Vec<String>,
    /// Intents whose outcome is now known (created, or refused by the ERP).
    pub resolved_intents: Vec<String>,
    pub logs: Vec<NewLog>,
    /// Where the step stands after this chunk (its variant is the step's direction).
    pub cursor: StepCursor,
    pub synced: i32,
    pub skipped: i32,
    pub failed: i32,
}

/// `(internal_id, key, request, recorded_at)` rows of `sync_intents`, by internal id.
fn intents_by_record(
    rows: Vec<(String, String, serde_json::Value, DateTime<Utc>)>,
) -> HashMap<String, Intent> {
    rows.into_iter()
        .map(|(internal_id, idempotency_key, request, at)| {
            (
                internal_id,
                Intent {
                    idempotency_key,
                    request,
                    recorded_at: Some(at),
                },
            )
        })
        .collect()
}

#[derive(sqlx::FromRow)]
struct MappingRow {
    internal_id: String,
    external_id: String,
    metadata: Option<serde_json::Value>,
    last_synced_at: Option<DateTime<Utc>>,
}

/// One order line with the order it belongs to.
#[derive(sqlx::FromRow)]
struct LineRow {
    order_id: i64,
    product_id: Option<i64>,
    sku: Option<String>,
    quantity: Decimal,
    unit_price: Decimal,
}

impl Store {
    /// The saved position of an integration's export of `entity`; the start of a first pass
    /// when none is saved. A cursor that does not read is an error naming it: restarting the
    /// pass silently would re-send every record.
    pub async fn export_cursor(
        &self,
        integration_id: IntegrationId,
        entity: Entity,
    ) -> Result<ExportCursor, StoreError> {
        self.typed_cursor(integration_id, entity, LogDirection::Export)
            .await
    }

    /// The saved position of an integration's import of `entity` (see [`Store::export_cursor`]).
    pub async fn import_cursor(
        &self,
        integration_id: IntegrationId,
        entity: Entity,
    ) -> Result<ImportCursor, StoreError> {
        self.typed_cursor(integration_id, entity, LogDirection::Import)
            .await
    }

    async fn typed_cursor<C: serde::de::DeserializeOwned + Default>(
        &self,
        integration_id: IntegrationId,
        entity: Entity,
        direction: LogDirection,
    ) -> Result<C, StoreError> {
        let raw: Option<serde_json::Value> = sqlx::query_scalar(
            "SELECT cursor FROM sync_cursors WHERE integration_id = $1 AND entity = $2 AND direction = $3",
        )
        .bind(integration_id)
        .bind(entity)
        .bind(direction)
        .fetch_optional(&self.pool)
        .await?;
        match raw {
            None => Ok(C::default()),
            Some(value) => serde_json::from_value(value).map_err(|e| StoreError::CorruptCursor {
                integration_id,
                entity,
                direction,
                reason: e.to_string(),
            }),
        }
    }

    /// The database's clock, which passes are timed with.
    pub async fn db_now(&self) -> Result<DateTime<Utc>, StoreError> {
        Ok(sqlx::query_scalar("SELECT now()")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Up to `limit` platform rows of one entity changed since the cursor, oldest first.
    pub async fn export_page(
        &self,
        tenant_id: TenantId,
        entity: Entity,
        cursor: &ExportCursor,
        limit: i64,
    ) -> Result<Vec<PlatformRecord>, StoreError> {
        let since = cursor.since;
        let after_ts = cursor.after.as_ref().map(|a| a.updated_at);
        let after_id = cursor.after.as_ref().map(|a| a.id);
        let after_wh = cursor
            .after
            .as_ref()
            .and_then(|a| a.warehouse.clone())
            .unwrap_or_default();
        let pool = &self.pool;
        // Every query pages by (updated_at, id) after the cursor, within the pass window.
        // Absent bounds are COALESCEd to -infinity rather than written `$3 IS NULL OR …`:
        // the generic plan Postgres switches to after five executions can then use the row
        // comparison as an index bound. With the OR it read every earlier row of the tenant
        // on each page, so a long export slowed down page after page.
        Ok(match entity {
            Entity::Product => sqlx::query_as::<_, ProductRecord>(
                "SELECT id, sku, name, description, price, currency, active, updated_at FROM platform.products
                  WHERE tenant_id = $1 AND updated_at >= COALESCE($2::timestamptz, '-infinity')
                    AND (updated_at, id) > (COALESCE($3::timestamptz, '-infinity'), COALESCE($4::bigint, 0))
                  ORDER BY updated_at, id LIMIT $5",
            )
            .bind(tenant_id).bind(since).bind(after_ts).bind(after_id).bind(limit)
            .fetch_all(pool).await?
            .into_iter().map(PlatformRecord::Product).collect(),
            Entity::Customer => sqlx::query_as::<_, CustomerRecord>(
                "SELECT id, email, name, company_name, phone, vat_number, updated_at FROM platform.customers
                  WHERE tenant_id = $1 AND updated_at >= COALESCE($2::timestamptz, '-infinity')
                    AND (updated_at, id) > (COALESCE($3::timestamptz, '-infinity'), COALESCE($4::bigint, 0))
                  ORDER BY updated_at, id LIMIT $5",
            )
            .bind(tenant_id).bind(since).bind(after_ts).bind(after_id).bind(limit)
            .fetch_all(pool).await?
            .into_iter().map(PlatformRecord::Customer).collect(),
            Entity::Order => self.export_orders(tenant_id, since, after_ts, after_id, limit).await?,
            Entity::Invoice => sqlx::query_as::<_, InvoiceRecord>(
                "SELECT i.id, i.invoice_number, i.order_id, o.order_number, i.customer_id, c.email AS customer_email,
                        i.status, i.currency, i.total_amount, i.issued_at, i.due_at, i.updated_at
                   FROM platform.invoices i
                   LEFT JOIN platform.orders o ON o.id = i.order_id
                   LEFT JOIN platform.customers c ON c.id = i.customer_id
                  WHERE i.tenant_id = $1 AND i.updated_at >= COALESCE($2::timestamptz, '-infinity')
                    AND (i.updated_at, i.id) > (COALESCE($3::timestamptz, '-infinity'), COALESCE($4::bigint, 0))
                  ORDER BY i.updated_at, i.id LIMIT $5",
            )
            .bind(tenant_id).bind(since).bind(after_ts).bind(after_id).bind(limit)
            .fetch_all(pool).await?
            .into_iter().map(PlatformRecord::Invoice).collect(),
            Entity::Inventory => sqlx::query_as::<_, InventoryRecord>(
                "SELECT s.product_id, p.sku, s.warehouse_code, s.quantity, s.updated_at
                   FROM platform.inventory s JOIN platform.products p ON p.id = s.product_id
                  WHERE s.tenant_id = $1 AND s.updated_at >= COALESCE($2::timestamptz, '-infinity')
                    AND (s.updated_at, s.product_id, s.warehouse_code) > (COALESCE($3::timestamptz, '-infinity'), COALESCE($4::bigint, 0), COALESCE($6::text, ''))
                  ORDER BY s.updated_at, s.product_id, s.warehouse_code LIMIT $5",
            )
            .bind(tenant_id).bind(since).bind(after_ts).bind(after_id).bind(limit).bind(after_wh)
            .fetch_all(pool).await?
            .into_iter().map(PlatformRecord::Inventory).collect(),
        })
    }

    /// The orders page of an export, with each order's lines (one query for the page).
    async fn export_orders(
        &self,
        tenant_id: TenantId,
        since: Option<DateTime<Utc>>,
        after_ts: Option<DateTime<Utc>>,
        after_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<PlatformRecord>, StoreError> {
        let pool = &self.pool;
        let mut orders = sqlx::query_as::<_, OrderRecord>(
            "SELECT o.id, o.order_number, o.customer_id, c.email AS customer_email, o.status, o.currency,
                    o.total_amount, o.created_at, o.updated_at
               FROM platform.orders o LEFT JOIN platform.customers c ON c.id = o.customer_id
              WHERE o.tenant_id = $1 AND o.updated_at >= COALESCE($2::timestamptz, '-infinity')
                AND (o.updated_at, o.id) > (COALESCE($3::timestamptz, '-infinity'), COALESCE($4::bigint, 0))
              ORDER BY o.updated_at, o.id LIMIT $5",
        )
        .bind(tenant_id).bind(since).bind(after_ts).bind(after_id).bind(limit)
        .fetch_all(pool).await?;
        let ids: Vec<i64> = orders.iter().map(|o| o.id).collect();
        let lines = sqlx::query_as::<_, LineRow>(
            "SELECT oi.order_id, oi.product_id, p.sku, oi.quantity, oi.unit_price
               FROM platform.order_items oi LEFT JOIN platform.products p ON p.id = oi.product_id
              WHERE oi.order_id = ANY($1) ORDER BY oi.order_id, oi.id",
        )
        .bind(&ids)
        .fetch_all(pool)
        .await?;
        let mut by_order: HashMap<i64, Vec<OrderLine>> = HashMap::with_capacity(ids.len());
        for l in lines {
            by_order.entry(l.order_id).or_default().push(OrderLine {
                product_id: l.product_id,
                sku: l.sku,
                quantity: l.quantity,
                unit_price: l.unit_price,
            });
        }
        for order in &mut orders {
            order.items = by_order.remove(&order.id).unwrap_or_default();
        }
        Ok(orders.into_iter().map(PlatformRecord::Order).collect())
    }

    /// Existing mappings of these internal ids.
    pub async fn mappings_of(
        &self,
        integration_id: IntegrationId,
        entity_type: MappingEntityType,
        internal_ids: &[String],
    ) -> Result<HashMap<String, KnownMapping>, StoreError> {
        let rows: Vec<MappingRow> = sqlx::query_as(
            "SELECT internal_id, external_id, metadata, last_synced_at FROM integration_mappings
              WHERE integration_id = $1 AND entity_type = $2 AND internal_id = ANY($3)",
        )
        .bind(integration_id)
        .bind(entity_type)
        .bind(internal_ids)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let known = KnownMapping {
                    metadata: parse_meta(integration_id, entity_type, &r.external_id, r.metadata)?,
                    external_id: r.external_id,
                    last_synced_at: r.last_synced_at,
                };
                Ok((r.internal_id, known))
            })
            .collect()
    }

    /// External ids of `(mapping type, internal id)` pairs, for the references of a chunk.
    pub async fn external_ids_of(
        &self,
        integration_id: IntegrationId,
        wanted: &[(MappingEntityType, String)],
    ) -> Result<HashMap<(MappingEntityType, String), String>, StoreError> {
        let types: Vec<MappingEntityType> = wanted.iter().map(|(t, _)| *t).collect();
        let ids: Vec<&str> = wanted.iter().map(|(_, i)| i.as_str()).collect();
        let rows: Vec<(MappingEntityType, String, String)> = sqlx::query_as(
            "SELECT m.entity_type, m.internal_id, m.external_id
               FROM integration_mappings m
               JOIN unnest($2::mapping_entity_type[], $3::text[]) AS w(entity_type, internal_id)
                 ON m.entity_type = w.entity_type AND m.internal_id = w.internal_id
              WHERE m.integration_id = $1",
        )
        .bind(integration_id)
        .bind(&types)
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(t, i, e)| ((t, i), e)).collect())
    }

    /// Existing mappings by external id (for imports).
    pub async fn mappings_by_external(
        &self,
        integration_id: IntegrationId,
        entity_type: MappingEntityType,
        external_ids: &[String],
    ) -> Result<HashMap<String, (String, Option<MappingMeta>)>, StoreError> {
        let rows: Vec<(String, String, Option<serde_json::Value>)> = sqlx::query_as(
            "SELECT external_id, internal_id, metadata FROM integration_mappings
              WHERE integration_id = $1 AND entity_type = $2 AND external_id = ANY($3)",
        )
        .bind(integration_id)
        .bind(entity_type)
        .bind(external_ids)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(e, i, m)| {
                let meta = parse_meta(integration_id, entity_type, &e, m)?;
                Ok((e, (i, meta)))
            })
            .collect()
    }

    /// Intents left by an earlier attempt for these records.
    pub async fn intents_of(
        &self,
        integration_id: IntegrationId,
        entity: Entity,
        internal_ids: &[String],
    ) -> Result<HashMap<String, Intent>, StoreError> {
        let rows: Vec<(String, String, serde_json::Value, DateTime<Utc>)> = sqlx::query_as(
            "SELECT internal_id, idempotency_key, request, created_at FROM sync_intents
              WHERE integration_id = $1 AND entity = $2 AND internal_id = ANY($3)",
        )
        .bind(integration_id)
        .bind(entity)
        .bind(internal_ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(intents_by_record(rows))
    }

    /// Records creates about to be sent (one statement per chunk) and returns, for each record
    /// where another attempt's intent was already recorded, that intent: it stays in force,
    /// because a retry must reuse the first attempt's key and body. Records absent from the
    /// result were recorded as given.
    pub async fn record_intents(
        &self,
        integration_id: IntegrationId,
        entity: Entity,
        run_id: RunId,
        intents: &[NewIntent<'_>],
    ) -> Result<HashMap<String, Intent>, StoreError> {
        if intents.is_empty() {
            return Ok(HashMap::new());
        }
        let internal: Vec<&str> = intents.iter().map(|x| x.internal_id).collect();
        let keys: Vec<&str> = intents.iter().map(|x| x.idempotency_key).collect();
        let requests: Vec<&serde_json::Value> = intents.iter().map(|x| x.request).collect();
        // One statement: the no-op update makes RETURNING yield an existing row too, and
        // only the rows whose key is not ours (another attempt's, in force) come back with
        // their bodies; the ones just inserted are not sent back.
        let rows: Vec<(String, String, serde_json::Value, DateTime<Utc>)> = sqlx::query_as(
            "WITH v AS (
                 SELECT * FROM unnest($3::text[], $4::text[], $5::jsonb[]) AS v(internal_id, key, request)
             ), written AS (
                 INSERT INTO sync_intents (integration_id, entity, internal_id, idempotency_key, request, run_id)
                 SELECT $1, $2, v.internal_id, v.key, v.request, $6 FROM v
                 ON CONFLICT (integration_id, entity, internal_id)
                    DO UPDATE SET idempotency_key = sync_intents.idempotency_key
                 RETURNING internal_id, idempotency_key, request, created_at
             )
             SELECT w.internal_id, w.idempotency_key, w.request, w.created_at
               FROM written w JOIN v ON v.internal_id = w.internal_id
              WHERE w.idempotency_key <> v.key",
        )
        .bind(integration_id)
        .bind(entity)
        .bind(&internal)
        .bind(&keys)
        .bind(&requests)
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(intents_by_record(rows))
    }

    /// Records one chunk's results in one transaction, after checking (and extending) the
    /// lease. If the lease was lost, nothing is written and [`StoreError::LeaseLost`] returns.
    pub async fn commit_chunk(
        &self,
        chunk: ChunkCommit<'_>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.begin_chunk(chunk.lease, chunk.lease_ttl)
            .await?
            .commit(chunk, now)
            .await
    }

    /// Opens a chunk's transaction, fenced by the lease: what the caller writes through it
    /// (e.g. imported platform rows) commits with the chunk's record, or not at all.
    pub async fn begin_chunk(
        &self,
        lease: &LeaseToken,
        ttl: Duration,
    ) -> Result<ChunkTx<'_>, StoreError> {
        let mut tx = self.pool.begin().await?;
        if !heartbeat_in(&mut *tx, lease, ttl).await? {
            tx.rollback().await?;
            return Err(StoreError::LeaseLost {
                integration_id: lease.integration_id,
            });
        }
        Ok(ChunkTx { store: self, tx })
    }
}

/// A chunk's transaction, opened by [`Store::begin_chunk`] after the lease check.
pub struct ChunkTx<'s> {
    pub(crate) store: &'s Store,
    pub(crate) tx: sqlx::Transaction<'static, sqlx::Postgres>,
}

impl ChunkTx<'_> {
    /// Writes the chunk's record (mappings, intents, logs, cursor, counts) and commits.
    pub async fn commit(
        self,
        chunk: ChunkCommit<'_>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let ChunkTx { store, mut tx } = self;
        let integration_id = chunk.lease.integration_id;
        let mapping_type = chunk.entity.mapping_entity();
        if !chunk.unmap_external.is_empty() {
            sqlx::query(
                "DELETE FROM integration_mappings WHERE integration_id = $1 AND entity_type = $2 AND external_id = ANY($3)",
            )
            .bind(integration_id)
            .bind(mapping_type)
            .bind(&chunk.unmap_external)
            .execute(&mut *tx)
            .await?;
        }
        write_mappings(&mut tx, integration_id, mapping_type, &chunk.mappings).await?;
        if !chunk.resolved_intents.is_empty() {
            sqlx::query("DELETE FROM sync_intents WHERE integration_id = $1 AND entity = $2 AND internal_id = ANY($3)")
                .bind(integration_id)
                .bind(chunk.entity)
                .bind(&chunk.resolved_intents)
                .execute(&mut *tx)
                .await?;
        }
        store.insert_logs(&mut *tx, &chunk.logs, now).await?;
        sqlx::query(
            "INSERT INTO sync_cursors (integration_id, entity, direction, cursor) VALUES ($1, $2, $3, $4)
             ON CONFLICT (integration_id, entity, direction) DO UPDATE SET cursor = EXCLUDED.cursor",
        )
        .bind(integration_id)
        .bind(chunk.entity)
        .bind(chunk.cursor.direction())
        .bind(chunk.cursor.to_json())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE sync_runs SET records_synced = records_synced + $2, records_skipped = records_skipped + $3,
                    records_failed = records_failed + $4
              WHERE id = $1",
        )
        .bind(chunk.lease.run_id)
        .bind(chunk.synced)
        .bind(chunk.skipped)
        .bind(chunk.failed)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        store.after_bulk_write();
        Ok(())
    }
}

/// A mapping's stored metadata, parsed once here. A JSON `null` is none; a shape the worker
/// never writes (a hash that is not text) is an error naming the row, not a silent re-send.
fn parse_meta(
    integration_id: IntegrationId,
    entity_type: MappingEntityType,
    external_id: &str,
    raw: Option<serde_json::Value>,
) -> Result<Option<MappingMeta>, StoreError> {
    match raw {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(value) => {
            serde_json::from_value(value)
                .map(Some)
                .map_err(|e| StoreError::CorruptMapping {
                    integration_id,
                    entity_type,
                    external_id: external_id.to_owned(),
                    reason: e.to_string(),
                })
        }
    }
}

/// The column's JSON for a mapping's metadata.
pub(crate) fn meta_json(meta: &MappingMeta) -> Result<serde_json::Value, StoreError> {
    serde_json::to_value(meta)
        .map_err(|e| StoreError::Invalid(format!("mapping metadata does not serialise: {e}")))
}

/// Writes a chunk's mappings (with their hashes): one ERP record stands for one platform row.
async fn write_mappings(
    tx: &mut sqlx::PgConnection,
    integration_id: IntegrationId,
    mapping_type: MappingEntityType,
    mappings: &[MappingWrite],
) -> Result<(), StoreError> {
    if mappings.is_empty() {
        return Ok(());
    }
    let internal: Vec<&str> = mappings.iter().map(|m| m.internal_id.as_str()).collect();
    let external: Vec<&str> = mappings.iter().map(|m| m.external_id.as_str()).collect();
    let metadata = mappings
        .iter()
        .map(|m| meta_json(&m.metadata))
        .collect::<Result<Vec<_>, _>>()?;
    // One ERP record stands for one platform row: a different row that held one of
    // these external ids loses it (as `map_ids` does), instead of a constraint error.
    sqlx::query(
        "DELETE FROM integration_mappings m
              USING unnest($3::text[], $4::text[]) AS v(internal_id, external_id)
              WHERE m.integration_id = $1 AND m.entity_type = $2
                AND m.external_id = v.external_id AND m.internal_id <> v.internal_id",
    )
    .bind(integration_id)
    .bind(mapping_type)
    .bind(&internal)
    .bind(&external)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
            "INSERT INTO integration_mappings
                 (integration_id, tenant_id, entity_type, internal_id, external_id, metadata, last_synced_at)
             SELECT $1, i.tenant_id, $2, v.internal_id, v.external_id, v.metadata, now()
               FROM unnest($3::text[], $4::text[], $5::jsonb[]) AS v(internal_id, external_id, metadata)
               JOIN integrations i ON i.id = $1
             ON CONFLICT (integration_id, entity_type, internal_id) DO UPDATE SET
                 external_id = EXCLUDED.external_id,
                 -- Merged: an export keeps what the import stored and the reverse.
                 metadata = COALESCE(integration_mappings.metadata, '{}'::jsonb) || EXCLUDED.metadata,
                 last_synced_at = EXCLUDED.last_synced_at",
        )
        .bind(integration_id)
        .bind(mapping_type)
        .bind(&internal)
        .bind(&external)
        .bind(&metadata)
        .execute(&mut *tx)
        .await?;
    Ok(())
}
