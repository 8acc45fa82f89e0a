//! Realistic platform data for the demo, the benchmark and the tests: a tenant with products,
//! customers and orders (two to four lines each, totals consistent with the lines), invoices
//! and stock; and the few changes the demo and the benchmark then make to it. Generated in SQL
//! so thousands of rows take well under a second.

use crate::{Store, StoreError};
use passerelle_core::TenantId;
use sqlx::PgConnection;

/// What [`Store::seed_tenant`] created.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct SeededTenant {
    pub tenant_id: TenantId,
    pub products: i64,
    pub customers: i64,
    pub orders: i64,
    pub invoices: i64,
}

impl Store {
    /// Creates a tenant and its data. `orders` orders, every tenth one invoiced.
    pub async fn seed_tenant(
        &self,
        name: &str,
        products: i64,
        customers: i64,
        orders: i64,
    ) -> Result<SeededTenant, StoreError> {
        let products = products.max(1);
        let customers = customers.max(1);
        let mut tx = self.pool.begin().await?;
        let tenant_id = insert_tenant(&mut tx, name).await?;
        insert_rows(&mut tx, PRODUCTS, tenant_id, products).await?;
        insert_rows(&mut tx, CUSTOMERS, tenant_id, customers).await?;
        insert_orders(&mut tx, tenant_id, customers, orders).await?;
        insert_order_lines(&mut tx, tenant_id, products).await?;
        set_order_totals(&mut tx, tenant_id).await?;
        let invoices = invoice_every_tenth_order(&mut tx, tenant_id).await?;
        insert_stock(&mut tx, tenant_id).await?;
        tx.commit().await?;
        Ok(SeededTenant {
            tenant_id,
            products,
            customers,
            orders,
            invoices: i64::try_from(invoices).unwrap_or(i64::MAX),
        })
    }

    /// Adds one order of one line (the tenant's first product, 10.00) for the tenant's first
    /// customer: a single change for the next export to pick up.
    pub async fn add_single_line_order(
        &self,
        tenant: TenantId,
        order_number: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "WITH o AS (INSERT INTO platform.orders (tenant_id, customer_id, order_number, total_amount)
                        SELECT $1, min(c.id), $2, 10 FROM platform.customers c WHERE c.tenant_id = $1 RETURNING id)
             INSERT INTO platform.order_items (order_id, product_id, quantity, unit_price)
             SELECT o.id, (SELECT min(id) FROM platform.products WHERE tenant_id = $1), 1, 10 FROM o",
        )
        .bind(tenant)
        .bind(order_number)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks up to `limit` of the tenant's orders that are not yet shipped (lowest ids first)
    /// as shipped, so the next export has changes to send. Returns how many changed.
    pub async fn ship_orders(&self, tenant: TenantId, limit: i64) -> Result<u64, StoreError> {
        let changed = sqlx::query(
            "UPDATE platform.orders SET status = 'shipped' WHERE id IN
               (SELECT id FROM platform.orders WHERE tenant_id = $1 AND status <> 'shipped' ORDER BY id LIMIT $2)",
        )
        .bind(tenant)
        .bind(limit)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(changed)
    }

    /// Creates `count` active hourly custom-API integrations for the tenant, all due a minute
    /// ago and with empty settings: load for the scheduler alone (no worker could sync them).
    pub async fn add_due_integrations(
        &self,
        tenant: TenantId,
        count: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO integrations (tenant_id, name, type, status, sync_frequency, next_sync_at, settings)
             SELECT $1, 'due ' || g, 'custom_api', 'active', 'hourly', now() - interval '1 minute', '{}'::jsonb
               FROM generate_series(1, $2) g",
        )
        .bind(tenant)
        .bind(count)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Reclaims space and refreshes the planner's statistics on `integrations` after a bulk
    /// insert, so the scheduler's queries are planned as on a settled database.
    pub async fn vacuum_analyze_integrations(&self) -> Result<(), StoreError> {
        sqlx::query("VACUUM ANALYZE integrations")
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

async fn insert_tenant(tx: &mut PgConnection, name: &str) -> Result<TenantId, StoreError> {
    Ok(
        sqlx::query_scalar("INSERT INTO platform.tenants (name) VALUES ($1) RETURNING id")
            .bind(name)
            .fetch_one(tx)
            .await?,
    )
}

/// `SKU-00001` … with varied names and prices: `$1` the tenant, `$2` how many.
const PRODUCTS: &str =
    "INSERT INTO platform.products (tenant_id, sku, name, description, price, currency)
     SELECT $1, 'SKU-' || lpad(g::text, 5, '0'),
            (ARRAY['Oak pallet','Steel bracket','Cotton tote','Glass jar','Paper roll','Copper wire'])[1 + g % 6] || ' ' || g,
            'Wholesale unit ' || g, round((3 + (g * 37 % 400) / 4.0)::numeric, 2), 'EUR'
       FROM generate_series(1, $2) g";

/// `buyer1@tenant7.example` … with a company, a phone and a VAT number: `$1` the tenant,
/// `$2` how many.
const CUSTOMERS: &str =
    "INSERT INTO platform.customers (tenant_id, email, name, company_name, phone, vat_number)
     SELECT $1, 'buyer' || g || '@tenant' || $1 || '.example', 'Buyer ' || g,
            'Company ' || g || ' SARL', '+33 1 00 00 ' || lpad((g % 100)::text, 2, '0'),
            'FR' || lpad((g * 7919 % 100000000000)::text, 11, '0')
       FROM generate_series(1, $2) g";

/// Inserts `count` of the tenant's rows with `insert` (`PRODUCTS`, `CUSTOMERS`).
async fn insert_rows(
    tx: &mut PgConnection,
    insert: &'static str,
    tenant: TenantId,
    count: i64,
) -> Result<(), StoreError> {
    sqlx::query(insert)
        .bind(tenant)
        .bind(count)
        .execute(tx)
        .await?;
    Ok(())
}

/// Orders spread over the tenant's customers, without lines yet (and so without totals).
async fn insert_orders(
    tx: &mut PgConnection,
    tenant: TenantId,
    customers: i64,
    orders: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "WITH c AS (SELECT min(id) AS first FROM platform.customers WHERE tenant_id = $1)
         INSERT INTO platform.orders (tenant_id, customer_id, order_number, status, currency)
         SELECT $1, c.first + (g % $2), 'WH-' || $1 || '-' || lpad(g::text, 6, '0'),
                (ARRAY['confirmed','shipped','delivered'])[1 + g % 3], 'EUR'
           FROM generate_series(1, $3) g, c",
    )
    .bind(tenant)
    .bind(customers)
    .bind(orders)
    .execute(tx)
    .await?;
    Ok(())
}

/// Two to four lines per order, at the product's price.
async fn insert_order_lines(
    tx: &mut PgConnection,
    tenant: TenantId,
    products: i64,
) -> Result<(), StoreError> {
    // The line trigger touches the order once per line; disabling it for the bulk insert
    // (this transaction only) keeps seeding fast, and totals are set right after.
    sqlx::query("ALTER TABLE platform.order_items DISABLE TRIGGER order_items_touch_order")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "WITH p AS (SELECT min(id) AS first FROM platform.products WHERE tenant_id = $1)
         INSERT INTO platform.order_items (order_id, product_id, quantity, unit_price)
         SELECT o.id, p.first + ((o.id * 13 + l * 7) % $2), 1 + (o.id + l) % 12, pr.price
           FROM platform.orders o, p, generate_series(1, 2 + (o.id % 3)::int) l,
                LATERAL (SELECT price FROM platform.products WHERE id = p.first + ((o.id * 13 + l * 7) % $2)) pr
          WHERE o.tenant_id = $1",
    )
    .bind(tenant)
    .bind(products)
    .execute(&mut *tx)
    .await?;
    sqlx::query("ALTER TABLE platform.order_items ENABLE TRIGGER order_items_touch_order")
        .execute(&mut *tx)
        .await?;
    Ok(())
}

async fn set_order_totals(tx: &mut PgConnection, tenant: TenantId) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE platform.orders o SET total_amount = s.total
           FROM (SELECT order_id, sum(quantity * unit_price) AS total FROM platform.order_items GROUP BY order_id) s
          WHERE o.id = s.order_id AND o.tenant_id = $1",
    )
    .bind(tenant)
    .execute(tx)
    .await?;
    Ok(())
}

/// Returns how many invoices it created.
async fn invoice_every_tenth_order(
    tx: &mut PgConnection,
    tenant: TenantId,
) -> Result<u64, StoreError> {
    Ok(sqlx::query(
        "INSERT INTO platform.invoices (tenant_id, order_id, customer_id, invoice_number, status, currency,
                total_amount, issued_at, due_at)
         SELECT tenant_id, id, customer_id, 'INV-' || order_number, 'issued', currency, total_amount,
                created_at, created_at + interval '30 days'
           FROM platform.orders WHERE tenant_id = $1 AND id % 10 = 0",
    )
    .bind(tenant)
    .execute(tx)
    .await?
    .rows_affected())
}

/// One stock figure per product, in warehouse `MAIN`.
async fn insert_stock(tx: &mut PgConnection, tenant: TenantId) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO platform.inventory (tenant_id, product_id, warehouse_code, quantity)
         SELECT tenant_id, id, 'MAIN', (id * 17) % 500 FROM platform.products WHERE tenant_id = $1",
    )
    .bind(tenant)
    .execute(tx)
    .await?;
    Ok(())
}
