use crate::support::*;
use std::collections::BTreeSet;
use std::time::Duration;

async fn names(store: &passerelle_store::Store, sql: &'static str) -> BTreeSet<String> {
    sqlx::query_scalar::<_, String>(sql)
        .fetch_all(store.pool())
        .await
        .unwrap()
        .into_iter()
        .collect()
}

#[tokio::test]
async fn migrate_on_an_empty_server_creates_the_database_and_every_table() {
    let name = unique_db_name("mig");
    let url = format!("{}/{}", server_url(), name);
    let (out, stdout, stderr) = run(passerelle(&url).args(["--output", "json", "migrate"]));
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["database_created"], true);
    let migrations = passerelle_store::MIGRATOR.iter().count();
    assert_eq!(migrations, 8);
    assert_eq!(report["applied"].as_array().unwrap().len(), migrations);

    let store = passerelle_store::Store::connect(&url, 2, Duration::from_secs(5))
        .await
        .unwrap();
    let tables = names(
        &store,
        "SELECT table_schema || '.' || table_name FROM information_schema.tables
          WHERE table_schema IN ('public', 'platform') AND table_type = 'BASE TABLE'",
    )
    .await;
    for t in [
        "public.integrations",
        "public.integration_logs",
        "public.integration_mappings",
        "public.sync_runs",
        "public.integration_leases",
        "public.sync_cursors",
        "public.rate_limits",
        "public.rate_limit_permits",
        "public.api_tokens",
        "public.vault_key_fingerprints",
        "public.webhook_deliveries",
        "public.oauth_states",
        "platform.tenants",
        "platform.customers",
        "platform.products",
        "platform.orders",
        "platform.order_items",
        "platform.invoices",
        "platform.inventory",
    ] {
        assert!(tables.contains(t), "missing table {t}; have {tables:?}");
    }
    let constraints = names(&store, "SELECT conname::text FROM pg_constraint").await;
    for c in [
        "unique_internal_mapping",
        "unique_external_mapping",
        "products_tenant_sku_key",
        "orders_tenant_number_key",
        "invoices_tenant_number_key",
        "integrations_credentials_sealed",
        "sync_runs_running_has_lease",
    ] {
        assert!(constraints.contains(c), "missing constraint {c}");
    }
    let indexes = names(&store, "SELECT indexname::text FROM pg_indexes").await;
    for i in [
        "idx_tenant_status",
        "idx_integration_created",
        "idx_status",
        "integrations_due_idx",
    ] {
        assert!(indexes.contains(i), "missing index {i}");
    }
    // Money is numeric, never float.
    let float_columns = names(
        &store,
        "SELECT table_name || '.' || column_name FROM information_schema.columns
          WHERE table_schema = 'platform' AND data_type IN ('real', 'double precision')",
    )
    .await;
    assert!(float_columns.is_empty(), "{float_columns:?}");
    let price_type: String = sqlx::query_scalar(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute
          WHERE attrelid = 'platform.products'::regclass AND attname = 'price'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(price_type, "numeric(14,4)");
    // The seed's defaults.
    let defaults: (String, String, bool, bool, String) = sqlx::query_as(
        "INSERT INTO platform.tenants (name) VALUES ('t') RETURNING 'x', 'x', true, true, 'x'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    let _ = defaults;
    let row: (String, String, bool, bool, bool, bool, bool, String, i32) = sqlx::query_as(
        "INSERT INTO integrations (tenant_id, name, type) SELECT id, 'n', 'xero' FROM platform.tenants
         RETURNING status::text, sync_direction::text, sync_products, sync_orders, sync_customers,
                   sync_invoices, sync_inventory, sync_frequency::text, total_syncs",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(
        row,
        (
            "inactive".into(),
            "export".into(),
            false,
            true,
            false,
            true,
            false,
            "manual".into(),
            0
        )
    );
    store.pool().close().await;
    drop_database(&name);
}

#[tokio::test]
async fn deleting_a_tenant_cascades_to_its_integrations_logs_and_mappings() {
    let db = TestDb::migrated("cascade").await;
    let tenant = db.tenant("Acme").await;
    let pool = db.store.pool();
    let integration: i64 = sqlx::query_scalar(
        "INSERT INTO integrations (tenant_id, name, type) VALUES ($1, 'x', 'xero') RETURNING id",
    )
    .bind(tenant)
    .fetch_one(pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO integration_logs (integration_id, tenant_id, status) VALUES ($1, $2, 'success')")
        .bind(integration).bind(tenant).execute(pool).await.unwrap();
    sqlx::query("INSERT INTO integration_mappings (integration_id, tenant_id, entity_type, internal_id, external_id) VALUES ($1, $2, 'order', '1', 'A')")
        .bind(integration).bind(tenant).execute(pool).await.unwrap();
    sqlx::query("DELETE FROM platform.tenants WHERE id = $1")
        .bind(tenant)
        .execute(pool)
        .await
        .unwrap();
    for table in ["integrations", "integration_logs", "integration_mappings"] {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(pool)
                .await
                .unwrap();
        assert_eq!(n, 0, "{table} kept rows of a deleted tenant");
    }
}

#[tokio::test]
async fn migrate_twice_is_a_no_op() {
    let name = unique_db_name("mig2");
    let url = format!("{}/{}", server_url(), name);
    assert!(run(passerelle(&url).arg("migrate")).0.status.success());
    let (out, stdout, stderr) = run(passerelle(&url).args(["--output", "json", "migrate"]));
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["database_created"], false);
    assert_eq!(report["applied"], serde_json::json!([]));
    drop_database(&name);
}

#[tokio::test]
async fn two_concurrent_migrations_both_succeed_and_apply_once() {
    let name = unique_db_name("migc");
    let url = format!("{}/{}", server_url(), name);
    let children: Vec<_> = (0..3)
        .map(|_| {
            passerelle(&url)
                .args(["--output", "json", "migrate"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut applied_total = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        applied_total += report["applied"].as_array().unwrap().len();
    }
    assert_eq!(
        applied_total,
        passerelle_store::MIGRATOR.iter().count(),
        "each migration is applied exactly once across processes"
    );
    drop_database(&name);
}

#[tokio::test]
async fn migrate_refuses_a_database_whose_history_differs() {
    let db = TestDb::migrated("migx").await;
    // A migration applied by a newer release that this binary does not know.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (29990101000000, 'from the future', true, '\\x00', 0)",
    )
    .execute(db.store.pool())
    .await
    .unwrap();
    let (out, _, stderr) = run(passerelle(&db.url).arg("migrate"));
    assert!(!out.status.success());
    assert!(stderr.contains("differ from this binary"), "{stderr}");
    assert!(stderr.contains("29990101000000"), "{stderr}");

    // An applied migration whose contents were edited.
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = 29990101000000")
        .execute(db.store.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE _sqlx_migrations SET checksum = '\\x01' WHERE version = 20261124000002")
        .execute(db.store.pool())
        .await
        .unwrap();
    let (out, _, stderr) = run(passerelle(&db.url).arg("migrate"));
    assert!(!out.status.success());
    assert!(
        stderr.contains("20261124000002 was applied with different contents"),
        "{stderr}"
    );
}

#[tokio::test]
async fn migrate_names_an_unreachable_server_without_its_password() {
    let (out, _, stderr) =
        run(passerelle("postgres://app:hunter2@127.0.0.1:1/nope").arg("migrate"));
    assert!(!out.status.success());
    assert!(stderr.contains("127.0.0.1:1"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}
