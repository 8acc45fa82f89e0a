//! Dry runs against the custom API simulator, through a real worker: the report says what a
//! sync would do, and nothing at the ERP or in the database changes.

use crate::support::{Env, run};
use passerelle_core::RunStatus;
use serde_json::Value;
use std::time::Duration;

async fn count(env: &Env, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(env.db.store.pool())
        .await
        .unwrap()
}

/// Runs a dry run through the CLI and returns the finished run as JSON.
fn dry_run(env: &Env, integration: &str) -> Value {
    let (out, stdout, stderr) = run(env.cmd().args([
        "--output",
        "json",
        "sync",
        integration,
        "--dry-run",
        "--wait",
        "--timeout",
        "60",
    ]));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    serde_json::from_str(&stdout).unwrap()
}

fn step<'a>(report: &'a Value, entity: &str) -> &'a Value {
    report["dry_run_report"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["entity"] == entity && s["direction"] == "export")
        .unwrap_or_else(|| panic!("no {entity} step in {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_reports_what_a_sync_would_do_and_changes_nothing() {
    let env = Env::new("dryrun").await;
    let seeded = env.db.store.seed_tenant("Acme", 5, 4, 10).await.unwrap();
    let integration = env.integration(seeded.tenant_id, "customers,orders", "export");
    let id = integration.to_string();
    let _worker = env.worker(1);

    let first = dry_run(&env, &id);
    assert_eq!(first["status"], "succeeded", "{first}");
    assert_eq!(first["dry_run"], true);
    let orders = step(&first, "order");
    assert_eq!(
        (orders["create"].as_u64(), orders["update"].as_u64()),
        (Some(10), Some(0))
    );
    assert_eq!(step(&first, "customer")["create"], 4);
    assert_eq!(orders["samples"].as_array().unwrap().len(), 3);
    assert!(orders["samples"][0]["order_number"].is_string(), "{orders}");
    // Nothing reached the ERP (the connector was built, no request was made) and nothing was
    // recorded: no mapping, intent, log or cursor, and the integration's counters are as
    // they were.
    assert_eq!(env.stats().requests, 0, "{:?}", env.stats());
    for table in [
        "integration_mappings",
        "sync_intents",
        "integration_logs",
        "sync_cursors",
    ] {
        assert_eq!(count(&env, table).await, 0, "{table}");
    }
    let untouched = env.db.store.integration(integration).await.unwrap();
    assert_eq!((untouched.total_syncs, untouched.last_sync_at), (0, None));

    // After a real sync and two changed orders, a dry run sees exactly those two.
    let real = env.sync(integration);
    let real = env.wait_run(real, Duration::from_secs(60)).await;
    assert_eq!(real.status, RunStatus::Succeeded, "{real:?}");
    let requests = env.stats().requests;
    let mappings = count(&env, "integration_mappings").await;
    env.db.store.ship_orders(seeded.tenant_id, 2).await.unwrap();
    let second = dry_run(&env, &id);
    let orders = step(&second, "order");
    assert_eq!(
        (orders["create"].as_u64(), orders["update"].as_u64()),
        (Some(0), Some(2)),
        "{orders}"
    );
    assert_eq!(step(&second, "customer")["update"], 0);
    assert_eq!(env.stats().requests, requests, "a dry run called the ERP");
    assert_eq!(count(&env, "integration_mappings").await, mappings);
    // And the table form says what it is.
    let (out, table, stderr) = run(env.cmd().args(["sync", &id, "--dry-run", "--wait"]));
    assert!(out.status.success(), "{stderr}");
    assert!(
        table.contains("dry run: nothing was sent") && table.contains("CREATE"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_dry_run_reads_the_erp_and_writes_nothing_to_the_platform() {
    let env = Env::new("dryimport").await;
    let seeded = env.db.store.seed_tenant("Acme", 5, 1, 0).await.unwrap();
    for n in 1..=3 {
        env.sandbox.custom_api().upsert_record(
            &env.api_key,
            "inventory",
            serde_json::json!({"sku": format!("SKU-{n:05}"), "warehouse_code": "ERP-WH", "quantity": n * 7}),
        );
    }
    let integration = env.integration(seeded.tenant_id, "inventory", "import");
    let id = integration.to_string();
    let _worker = env.worker(1);
    let stock = "platform.inventory WHERE warehouse_code = 'ERP-WH'";
    let report = dry_run(&env, &id);
    let import = &report["dry_run_report"]["steps"][0];
    assert_eq!(import["direction"], "import", "{report}");
    assert_eq!(
        (import["create"].as_u64(), import["skip"].as_u64()),
        (Some(3), Some(0)),
        "{import}"
    );
    assert_eq!(import["samples"][0]["warehouse_code"], "ERP-WH");
    assert_eq!(count(&env, stock).await, 0, "a dry run wrote stock");
    assert_eq!(count(&env, "integration_mappings").await, 0);
    assert_eq!(count(&env, "sync_cursors").await, 0);

    let real = env.sync(integration);
    assert_eq!(
        env.wait_run(real, Duration::from_secs(60)).await.status,
        RunStatus::Succeeded
    );
    assert_eq!(count(&env, stock).await, 3);
    let again = dry_run(&env, &id);
    let import = &again["dry_run_report"]["steps"][0];
    assert_eq!(
        (import["create"].as_u64(), import["update"].as_u64()),
        (Some(0), Some(0)),
        "{import}"
    );
}
