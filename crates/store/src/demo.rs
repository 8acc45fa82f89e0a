//! Realistic platform data for the demo and the tests: a tenant with products, customers and
//! orders (two to four lines each, totals consistent with the lines), invoices and stock.
//! Generated in SQL so thousands of rows take well under a second.

use crate::{Store, StoreError};

/// What [`Store::seed_tenant`] created.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct SeededTenant {
    pub tenant_id: i64,
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
        let tenant_id: i64 =
            sqlx::query_scalar("INSERT INTO platform.tenants (name) VALUES ($1) RETURNING id")
                .bind(name)
                .fetch_one(&mut *tx)
                .await?;
        sqlx::query(
            "INSERT INTO platform.products (tenant_id, sku, name, description, price, currency)
             SELECT $1, 'SKU-' || lpad(g::text, 5, '0'),
                    (ARRAY['Oak pallet','Steel bracket','Cotton tote','Glass jar','Paper roll','Copper wire'])[1 + g % 6] || ' ' || g,
                    'Wholesale unit ' || g, round((3 + (g * 37 % 400) / 4.0)::numeric, 2), 'EUR'
               FROM generate_series(1, $2) g",
        )
        .bind(tenant_id)
        .bind(products)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO platform.customers (tenant_id, email, name, company_name, phone, vat_number)
             SELECT $1, 'buyer' || g || '@tenant' || $1 || '.example', 'Buyer ' || g,
                    'Company ' || g || ' SARL', '+33 1 00 00 ' || lpad((g % 100)::text, 2, '0'),
                    'FR' || lpad((g * 7919 % 100000000000)::text, 11, '0')
               FROM generate_series(1, $2) g",
        )
        .bind(tenant_id)
        .bind(customers)
        .execute(&mut *tx)
        .await?;
        // The line trigger touches the order once per line; disabling it for the bulk insert
        // (this transaction only) keeps seeding fast, and totals are set right after.
        sqlx::query("ALTER TABLE platform.order_items DISABLE TRIGGER order_items_touch_order")
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "WITH c AS (SELECT min(id) AS first FROM platform.customers WHERE tenant_id = $1)
             INSERT INTO platform.orders (tenant_id, customer_id, order_number, status, currency)
             SELECT $1, c.first + (g % $2), 'WH-' || $1 || '-' || lpad(g::text, 6, '0'),
                    (ARRAY['confirmed','shipped','delivered'])[1 + g % 3], 'EUR'
               FROM generate_series(1, $3) g, c",
        )
        .bind(tenant_id)
        .bind(customers)
        .bind(orders)
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
        .bind(tenant_id)
        .bind(products)
        .execute(&mut *tx)
        .await?;
        sqlx::query("ALTER TABLE platform.order_items ENABLE TRIGGER order_items_touch_order")
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE platform.orders o SET total_amount = s.total
               FROM (SELECT order_id, sum(quantity * unit_price) AS total FROM platform.order_items GROUP BY order_id) s
              WHERE o.id = s.order_id AND o.tenant_id = $1",
        )
        .bind(tenant_id)
        .execute(&mut *tx)
        .await?;
        let invoices = sqlx::query(
            "INSERT INTO platform.invoices (tenant_id, order_id, customer_id, invoice_number, status, currency,
                    total_amount, issued_at, due_at)
             SELECT tenant_id, id, customer_id, 'INV-' || order_number, 'issued', currency, total_amount,
                    created_at, created_at + interval '30 days'
               FROM platform.orders WHERE tenant_id = $1 AND id % 10 = 0",
        )
        .bind(tenant_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query(
            "INSERT INTO platform.inventory (tenant_id, product_id, warehouse_code, quantity)
             SELECT tenant_id, id, 'MAIN', (id * 17) % 500 FROM platform.products WHERE tenant_id = $1",
        )
        .bind(tenant_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(SeededTenant {
            tenant_id,
            products,
            customers,
            orders,
            invoices: i64::try_from(invoices).unwrap_or(i64::MAX),
        })
    }
}
