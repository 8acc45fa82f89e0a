//! What a worker reads and writes while it syncs: pages of platform rows to export, the
//! mappings and intents of a page, and the one transaction per chunk that records results
//! (mappings, logs, the cursor, the run's counts), fenced by the integration lease so a worker
//! that lost its lease can never commit.

use crate::runs::{LeaseToken, heartbeat_in};
use crate::{NewLog, Store, StoreError};
use chrono::{DateTime, Utc};
use passerelle_core::platform::{
    CustomerRecord, ImportedData, ImportedRecord, InventoryRecord, InvoiceRecord, OrderLine,
    OrderRecord, PlatformRecord, ProductRecord,
};
use passerelle_core::{Entity, InternalId, LogDirection, MappingEntityType};
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
    /// `hash`: digest of the last payload exported; `import_hash`: of the last ERP record
    /// imported; connector keys (e.g. a version token).
    pub metadata: Option<serde_json::Value>,
    pub last_synced_at: Option<DateTime<Utc>>,
}

/// A mapping row a chunk writes.
#[derive(Debug, Clone)]
pub struct MappingWrite {
    pub internal_id: String,
    pub external_id: String,
    pub metadata: serde_json::Value,
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
        integration_id: i64,
        entity: Entity,
    ) -> Result<ExportCursor, StoreError> {
        self.typed_cursor(integration_id, entity, LogDirection::Export)
            .await
    }

    /// The saved position of an integration's import of `entity` (see [`Store::export_cursor`]).
    pub async fn import_cursor(
        &self,
        integration_id: i64,
        entity: Entity,
    ) -> Result<ImportCursor, StoreError> {
        self.typed_cursor(integration_id, entity, LogDirection::Import)
            .await
    }

    async fn typed_cursor<C: serde::de::DeserializeOwned + Default>(
        &self,
        integration_id: i64,
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
        tenant_id: i64,
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
            Entity::Order => {
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
                orders.into_iter().map(PlatformRecord::Order).collect()
            }
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

    /// Existing mappings of these internal ids.
    pub async fn mappings_of(
        &self,
        integration_id: i64,
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
        Ok(rows
            .into_iter()
            .map(|r| {
                let known = KnownMapping {
                    external_id: r.external_id,
                    metadata: r.metadata,
                    last_synced_at: r.last_synced_at,
                };
                (r.internal_id, known)
            })
            .collect())
    }

    /// External ids of `(mapping type, internal id)` pairs, for the references of a chunk.
    pub async fn external_ids_of(
        &self,
        integration_id: i64,
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
        integration_id: i64,
        entity_type: MappingEntityType,
        external_ids: &[String],
    ) -> Result<HashMap<String, (String, Option<serde_json::Value>)>, StoreError> {
        let rows: Vec<(String, String, Option<serde_json::Value>)> = sqlx::query_as(
            "SELECT external_id, internal_id, metadata FROM integration_mappings
              WHERE integration_id = $1 AND entity_type = $2 AND external_id = ANY($3)",
        )
        .bind(integration_id)
        .bind(entity_type)
        .bind(external_ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(e, i, m)| (e, (i, m))).collect())
    }

    /// Intents left by an earlier attempt for these records.
    pub async fn intents_of(
        &self,
        integration_id: i64,
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
        integration_id: i64,
        entity: Entity,
        run_id: uuid::Uuid,
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
    store: &'s Store,
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
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
        if !chunk.mappings.is_empty() {
            let internal: Vec<&str> = chunk
                .mappings
                .iter()
                .map(|m| m.internal_id.as_str())
                .collect();
            let external: Vec<&str> = chunk
                .mappings
                .iter()
                .map(|m| m.external_id.as_str())
                .collect();
            let metadata: Vec<&serde_json::Value> =
                chunk.mappings.iter().map(|m| &m.metadata).collect();
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
        }
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

    /// Writes imported records into the platform tables and returns, per record, the internal
    /// id it landed on (or why it could not be applied). Upserts go in one statement per
    /// page, and each result is found by the record's own key (SKU, email, SKU and
    /// warehouse), never by position; records of one page sharing a key land on one row, the
    /// first one's data. Inside the chunk's fenced transaction: a worker that lost its lease
    /// cannot overwrite newer data.
    pub async fn apply_imports(
        &mut self,
        tenant_id: i64,
        entity: Entity,
        records: &[ImportedRecord],
        known: &HashMap<String, (String, Option<serde_json::Value>)>,
    ) -> Result<Vec<Applied>, StoreError> {
        let tx: &mut sqlx::PgConnection = &mut self.tx;
        let mut out: Vec<Option<Applied>> = vec![None; records.len()];
        let mut upserts: Vec<(usize, &ImportedData)> = Vec::new();
        for (index, record) in records.iter().enumerate() {
            let existing = known.get(&record.external_id).map(|(internal, _)| internal);
            if record.deleted {
                out[index] = Some(match existing {
                    None => Ok(None),
                    Some(internal) => apply_tombstone(tx, tenant_id, entity, internal).await?,
                });
            } else {
                match &record.data {
                    None => out[index] = Some(Err("record without data".into())),
                    Some(data) => upserts.push((index, data)),
                }
            }
        }
        for (index, applied) in upsert_page(tx, tenant_id, &upserts).await? {
            out[index] = Some(applied);
        }
        // Every record was given its outcome above; one left out would be a bug here.
        out.into_iter()
            .enumerate()
            .map(|(i, applied)| {
                applied.ok_or_else(|| {
                    StoreError::Invalid(format!("imported record {i} of the page was not applied"))
                })
            })
            .collect()
    }
}

/// Upserts a page's records, each kind in one statement, and says where each landed.
async fn upsert_page(
    tx: &mut sqlx::PgConnection,
    tenant_id: i64,
    upserts: &[(usize, &ImportedData)],
) -> Result<Vec<(usize, Applied)>, StoreError> {
    let mut products = Vec::new();
    let mut customers = Vec::new();
    let mut stock = Vec::new();
    for (index, data) in upserts {
        match data {
            ImportedData::Product { .. } => products.push((*index, *data)),
            ImportedData::Customer { .. } => customers.push((*index, *data)),
            ImportedData::Inventory { .. } => stock.push((*index, *data)),
        }
    }
    let mut out = upsert_products(tx, tenant_id, &products).await?;
    out.extend(upsert_customers(tx, tenant_id, &customers).await?);
    out.extend(upsert_stock(tx, tenant_id, &stock).await?);
    Ok(out)
}

/// The first record of each key, in page order: one statement cannot update a row twice.
fn first_of_each<'a, K: std::hash::Hash + Eq + Clone>(
    items: &'a [(usize, &'a ImportedData)],
    key: impl Fn(&ImportedData) -> Option<K>,
) -> Vec<(K, &'a ImportedData)> {
    let mut seen = std::collections::HashSet::new();
    items
        .iter()
        .filter_map(|(_, data)| key(data).map(|k| (k, *data)))
        .filter(|(k, _)| seen.insert(k.clone()))
        .collect()
}

async fn upsert_products(
    tx: &mut sqlx::PgConnection,
    tenant_id: i64,
    items: &[(usize, &ImportedData)],
) -> Result<Vec<(usize, Applied)>, StoreError> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let sku_of = |d: &ImportedData| match d {
        ImportedData::Product { sku, .. } => Some(sku.clone()),
        _ => None,
    };
    let unique = first_of_each(items, sku_of);
    let (mut skus, mut names, mut descriptions, mut prices, mut currencies, mut actives) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for (sku, data) in &unique {
        if let ImportedData::Product {
            name,
            description,
            price,
            currency,
            active,
            ..
        } = data
        {
            skus.push(sku.as_str());
            names.push(name.as_str());
            descriptions.push(description.as_deref());
            prices.push(*price);
            currencies.push(
                currency
                    .as_deref()
                    .map(|c| c.chars().take(3).collect::<String>()),
            );
            actives.push(*active);
        }
    }
    let landed: HashMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "WITH v AS (
             SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::numeric[], $6::text[], $7::bool[])
                 AS v(sku, name, description, price, currency, active))
         INSERT INTO platform.products (tenant_id, sku, name, description, price, currency, active)
         SELECT $1, v.sku, v.name, v.description, v.price, COALESCE(v.currency, 'EUR'), v.active FROM v
         ON CONFLICT (tenant_id, sku) DO UPDATE SET name = EXCLUDED.name,
             description = EXCLUDED.description, price = EXCLUDED.price,
             -- A record without a currency keeps the row's.
             currency = COALESCE((SELECT v.currency FROM v WHERE v.sku = EXCLUDED.sku), platform.products.currency),
             active = EXCLUDED.active
         RETURNING sku, id",
    )
    .bind(tenant_id).bind(&skus).bind(&names).bind(&descriptions).bind(&prices)
    .bind(&currencies).bind(&actives)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    Ok(landed_by_key(items, sku_of, &landed, |_, id| {
        InternalId::Row(*id)
    }))
}

/// Each record's outcome, found by its key in what the statement returned.
fn landed_by_key<K: std::hash::Hash + Eq, V>(
    items: &[(usize, &ImportedData)],
    key: impl Fn(&ImportedData) -> Option<K>,
    landed: &HashMap<K, V>,
    id: impl Fn(&K, &V) -> InternalId,
) -> Vec<(usize, Applied)> {
    items
        .iter()
        .map(|(index, data)| {
            let found = key(data).and_then(|k| landed.get_key_value(&k));
            let applied = match found {
                Some((k, v)) => Ok(Some(id(k, v).to_string())),
                None => Err("the platform did not return this record's row".to_owned()),
            };
            (*index, applied)
        })
        .collect()
}

/// What applying one imported record gave: the internal id it landed on (`None`: nothing to
/// do), or why it was refused (logged as failed; the rest of the page goes on).
type Applied = Result<Option<String>, String>;

/// Deactivates a product or removes a stock row deleted at the ERP. The mapping's internal id
/// is parsed first: a malformed one is refused with the reason, never applied to no row.
async fn apply_tombstone(
    tx: &mut sqlx::PgConnection,
    tenant_id: i64,
    entity: Entity,
    internal: &str,
) -> Result<Applied, StoreError> {
    let id = match InternalId::parse(entity, internal) {
        Ok(id) => id,
        Err(e) => {
            return Ok(Err(format!(
                "the mapping of this record is corrupt ({e}); the deletion was not applied"
            )));
        }
    };
    // A row already gone is a deletion achieved: nothing to report.
    match (entity, &id) {
        (Entity::Product, InternalId::Row(product)) => {
            sqlx::query(
                "UPDATE platform.products SET active = false WHERE tenant_id = $1 AND id = $2",
            )
            .bind(tenant_id)
            .bind(product)
            .execute(&mut *tx)
            .await?;
        }
        (
            Entity::Inventory,
            InternalId::Stock {
                product_id,
                warehouse,
            },
        ) => {
            sqlx::query(
                "DELETE FROM platform.inventory WHERE tenant_id = $1 AND product_id = $2 AND warehouse_code = $3",
            )
            .bind(tenant_id)
            .bind(product_id)
            .bind(warehouse)
            .execute(&mut *tx)
            .await?;
        }
        // Customers are kept (orders refer to them): the mapping goes, the row stays.
        _ => {}
    }
    Ok(Ok(Some(id.to_string())))
}

async fn upsert_customers(
    tx: &mut sqlx::PgConnection,
    tenant_id: i64,
    items: &[(usize, &ImportedData)],
) -> Result<Vec<(usize, Applied)>, StoreError> {
    let email_of = |d: &ImportedData| match d {
        ImportedData::Customer { email, .. } if email.contains('@') => Some(email.to_lowercase()),
        _ => None,
    };
    let mut out: Vec<(usize, Applied)> = items
        .iter()
        .filter(|(_, d)| email_of(d).is_none())
        .map(|(index, d)| {
            let shown = match d {
                ImportedData::Customer { email, .. } => email.as_str(),
                _ => "",
            };
            (*index, Err(format!("`{shown}` is not an email address")))
        })
        .collect();
    let valid: Vec<(usize, &ImportedData)> = items
        .iter()
        .copied()
        .filter(|(_, d)| email_of(d).is_some())
        .collect();
    if valid.is_empty() {
        return Ok(out);
    }
    let unique = first_of_each(&valid, email_of);
    let (mut emails, mut names, mut companies, mut phones, mut vats) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (_, data) in &unique {
        if let ImportedData::Customer {
            email,
            name,
            company_name,
            phone,
            vat_number,
        } = data
        {
            emails.push(email.as_str());
            names.push(name.as_str());
            companies.push(company_name.as_deref());
            phones.push(phone.as_deref());
            vats.push(vat_number.as_deref());
        }
    }
    let landed: HashMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "INSERT INTO platform.customers (tenant_id, email, name, company_name, phone, vat_number)
         SELECT $1, v.email, v.name, v.company_name, v.phone, v.vat_number
           FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
                AS v(email, name, company_name, phone, vat_number)
         ON CONFLICT (tenant_id, (lower(email))) DO UPDATE SET name = EXCLUDED.name,
             company_name = EXCLUDED.company_name, phone = EXCLUDED.phone,
             vat_number = EXCLUDED.vat_number
         RETURNING lower(email), id",
    )
    .bind(tenant_id)
    .bind(&emails)
    .bind(&names)
    .bind(&companies)
    .bind(&phones)
    .bind(&vats)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    out.extend(landed_by_key(&valid, email_of, &landed, |_, id| {
        InternalId::Row(*id)
    }));
    Ok(out)
}

async fn upsert_stock(
    tx: &mut sqlx::PgConnection,
    tenant_id: i64,
    items: &[(usize, &ImportedData)],
) -> Result<Vec<(usize, Applied)>, StoreError> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let sku_of = |d: &ImportedData| match d {
        ImportedData::Inventory { sku, .. } => Some(sku.clone()),
        _ => None,
    };
    let skus: Vec<String> = items.iter().filter_map(|(_, d)| sku_of(d)).collect();
    let products: HashMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "SELECT sku, id FROM platform.products WHERE tenant_id = $1 AND sku = ANY($2)",
    )
    .bind(tenant_id)
    .bind(&skus)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    let key_of = |d: &ImportedData| match d {
        ImportedData::Inventory {
            sku,
            warehouse_code,
            ..
        } => products
            .get(sku)
            .map(|product| (*product, warehouse_code.clone())),
        _ => None,
    };
    let mut out = Vec::new();
    let mut known = Vec::new();
    for (index, data) in items {
        match (key_of(data), data) {
            (Some(_), _) => known.push((*index, *data)),
            (None, ImportedData::Inventory { sku, .. }) => out.push((
                *index,
                Err(format!(
                    "no product with SKU `{sku}` on the platform; import or create it first"
                )),
            )),
            (None, _) => {}
        }
    }
    let unique = first_of_each(&known, key_of);
    let (mut product_ids, mut warehouses, mut quantities) = (Vec::new(), Vec::new(), Vec::new());
    for ((product, warehouse), data) in &unique {
        if let ImportedData::Inventory { quantity, .. } = data {
            product_ids.push(*product);
            warehouses.push(warehouse.as_str());
            quantities.push(*quantity);
        }
    }
    let landed: HashMap<(i64, String), ()> = sqlx::query_as::<_, (i64, String)>(
        "INSERT INTO platform.inventory (tenant_id, product_id, warehouse_code, quantity)
         SELECT $1, v.product_id, v.warehouse_code, v.quantity
           FROM unnest($2::bigint[], $3::text[], $4::numeric[]) AS v(product_id, warehouse_code, quantity)
         ON CONFLICT (product_id, warehouse_code) DO UPDATE SET quantity = EXCLUDED.quantity
         RETURNING product_id, warehouse_code",
    )
    .bind(tenant_id).bind(&product_ids).bind(&warehouses).bind(&quantities)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|key| (key, ()))
    .collect();
    out.extend(landed_by_key(
        &known,
        key_of,
        &landed,
        |(product_id, warehouse), ()| InternalId::Stock {
            product_id: *product_id,
            warehouse: warehouse.clone(),
        },
    ));
    Ok(out)
}
