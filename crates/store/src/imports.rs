//! Imported records into the platform tables: each page's upserts in one statement per kind,
//! each result found by the record's own key; tombstones deactivate or remove. Runs inside a
//! chunk's fenced transaction ([`crate::sync::ChunkTx`]).

use crate::StoreError;
use crate::sync::ChunkTx;
use passerelle_core::platform::{ImportedData, ImportedRecord};
use passerelle_core::{Entity, InternalId};
use passerelle_core::{MappingMeta, TenantId};
use std::collections::HashMap;

impl ChunkTx<'_> {
    /// Writes imported records into the platform tables and returns, per record, the internal
    /// id it landed on (or why it could not be applied). Upserts go in one statement per
    /// page, and each result is found by the record's own key (SKU, email, SKU and
    /// warehouse), never by position; records of one page sharing a key land on one row, the
    /// first one's data. Inside the chunk's fenced transaction: a worker that lost its lease
    /// cannot overwrite newer data.
    pub async fn apply_imports(
        &mut self,
        tenant_id: TenantId,
        entity: Entity,
        records: &[ImportedRecord],
        known: &HashMap<String, (String, Option<MappingMeta>)>,
    ) -> Result<Vec<Applied>, StoreError> {
        let tx: &mut sqlx::PgConnection = &mut self.tx;
        let mut out: Vec<Option<Applied>> = vec![None; records.len()];
        let mut upserts: Vec<(usize, &ImportedData)> = Vec::new();
        for (index, record) in records.iter().enumerate() {
            match record {
                ImportedRecord::Tombstone(gone) => {
                    let existing = known.get(&gone.external_id).map(|(internal, _)| internal);
                    out[index] = Some(match existing {
                        None => Ok(None),
                        Some(internal) => apply_tombstone(tx, tenant_id, entity, internal).await?,
                    });
                }
                ImportedRecord::Upsert(upsert) => upserts.push((index, &upsert.data)),
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
    tenant_id: TenantId,
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
    tenant_id: TenantId,
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
    tenant_id: TenantId,
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
    tenant_id: TenantId,
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
    tenant_id: TenantId,
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
