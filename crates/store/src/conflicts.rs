//! What a bidirectional import compares an incoming ERP change with: the platform rows it
//! would overwrite, as they are now.

use crate::{Store, StoreError};
use chrono::{DateTime, Utc};
use passerelle_core::{Entity, InternalId, TenantId};
use std::collections::HashMap;

/// A platform row as it is: when it last changed, and its columns as JSON (for the conflict's
/// log row).
#[derive(Debug, Clone, PartialEq)]
pub struct PlatformSnapshot {
    pub updated_at: DateTime<Utc>,
    pub row: serde_json::Value,
}

impl Store {
    /// The current rows of these internal ids (products, customers, stock), by internal id;
    /// an id with no row (deleted) is absent. Orders and invoices are never imported.
    pub async fn platform_snapshots(
        &self,
        tenant_id: TenantId,
        entity: Entity,
        internal_ids: &[String],
    ) -> Result<HashMap<String, PlatformSnapshot>, StoreError> {
        let parsed: Vec<InternalId> = internal_ids
            .iter()
            .map(|raw| InternalId::parse(entity, raw))
            .collect::<Result<_, _>>()
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let rows: Vec<(String, DateTime<Utc>, serde_json::Value)> = match entity {
            Entity::Product | Entity::Customer => {
                let ids: Vec<i64> = parsed.iter().map(InternalId::row_id).collect();
                let sql = if entity == Entity::Product {
                    "SELECT id::text, updated_at, to_jsonb(t) - 'tenant_id' FROM platform.products t
                      WHERE tenant_id = $1 AND id = ANY($2)"
                } else {
                    "SELECT id::text, updated_at, to_jsonb(t) - 'tenant_id' FROM platform.customers t
                      WHERE tenant_id = $1 AND id = ANY($2)"
                };
                sqlx::query_as(sql)
                    .bind(tenant_id)
                    .bind(&ids)
                    .fetch_all(&self.pool)
                    .await?
            }
            Entity::Inventory => {
                let (products, warehouses): (Vec<i64>, Vec<String>) = parsed
                    .iter()
                    .filter_map(|id| match id {
                        InternalId::Stock {
                            product_id,
                            warehouse,
                        } => Some((*product_id, warehouse.clone())),
                        InternalId::Row(_) => None,
                    })
                    .unzip();
                sqlx::query_as(
                    "SELECT s.product_id::text || ':' || s.warehouse_code, s.updated_at,
                            to_jsonb(s) - 'tenant_id' || jsonb_build_object('sku', p.sku)
                       FROM unnest($2::bigint[], $3::text[]) AS v(product_id, warehouse_code)
                       JOIN platform.inventory s ON s.product_id = v.product_id AND s.warehouse_code = v.warehouse_code
                       JOIN platform.products p ON p.id = s.product_id
                      WHERE s.tenant_id = $1",
                )
                .bind(tenant_id)
                .bind(&products)
                .bind(&warehouses)
                .fetch_all(&self.pool)
                .await?
            }
            Entity::Order | Entity::Invoice => Vec::new(),
        };
        Ok(rows
            .into_iter()
            .map(|(id, updated_at, row)| (id, PlatformSnapshot { updated_at, row }))
            .collect())
    }
}
