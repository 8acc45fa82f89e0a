//! The sync pipeline end to end: the real binary (CLI, scheduler, workers), RabbitMQ,
//! Postgres and the custom-API simulator.

use crate::support::*;
use passerelle_core::RunStatus;
use passerelle_queue::{Lane, Outgoing};
use passerelle_sandbox::custom_api::Fault;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_orders_are_exported_exactly_once_and_skipped_when_unchanged() {
    let env = Env::new("e5k").await;
    let seeded = env
        .db
        .store
        .seed_tenant("Acme", 100, 50, 5000)
        .await
        .unwrap();
    let integration = env.integration(seeded.tenant_id, "orders", "export");
    let _w1 = env.worker(4);
    let _w2 = env.worker(4);
    let (out, stdout, stderr) = run(env.cmd().args([
        "sync",
        &integration.to_string(),
        "--wait",
        "--timeout",
        "120",
    ]));
    assert!(out.status.success(), "sync --wait failed: {stdout}{stderr}");
    assert!(stdout.contains("succeeded"), "{stdout}");
    env.assert_exactly_once("orders", 5000);
    let mappings: i64 = sqlx::query_scalar("SELECT count(*) FROM integration_mappings WHERE integration_id = $1 AND entity_type = 'order'")
        .bind(integration).fetch_one(env.db.store.pool()).await.unwrap();
    assert_eq!(mappings, 5000);
    let logs: i64 = sqlx::query_scalar("SELECT count(*) FROM integration_logs WHERE integration_id = $1 AND status = 'success' AND action = 'create'")
        .bind(integration).fetch_one(env.db.store.pool()).await.unwrap();
    assert_eq!(logs, 5000);
    // One order as the ERP received it: the seed's fields, amounts as numbers.
    let order = env
        .sandbox
        .custom_api()
        .records(&env.api_key, "orders")
        .into_iter()
        .next()
        .unwrap();
    assert!(
        order["order_number"].as_str().unwrap().starts_with("WH-"),
        "{order}"
    );
    assert!(order["customer_email"].as_str().unwrap().contains('@'));
    assert!(
        order["total"].is_number() && order["items"][0]["quantity"].is_number(),
        "{order}"
    );

    // Nothing changed: the next run sends nothing.
    let run2 = env.sync(integration);
    let r = env.wait_run(run2, LONG).await;
    assert_eq!(r.status, RunStatus::Succeeded);
    assert_eq!(r.records_synced, 0);
    env.assert_exactly_once("orders", 5000);

    // One order changes (a line's quantity): exactly one update goes out.
    sqlx::query("UPDATE platform.order_items SET quantity = quantity + 1 WHERE id = (SELECT min(id) FROM platform.order_items)")
        .execute(env.db.store.pool()).await.unwrap();
    let run3 = env.sync(integration);
    let r = env.wait_run(run3, LONG).await;
    assert_eq!(
        (r.status, r.records_synced),
        (RunStatus::Succeeded, 1),
        "{r:?}"
    );
    assert_eq!(env.stats().updates.get("orders").copied(), Some(1));
    let i = env.db.store.integration(integration).await.unwrap();
    assert_eq!((i.total_syncs, i.successful_syncs), (3, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_run_is_taken_over_and_nothing_is_duplicated() {
    let env = Env::new("kill").await;
    let seeded = env
        .db
        .store
        .seed_tenant("Acme", 50, 20, 1500)
        .await
        .unwrap();
    let integration = env.integration(seeded.tenant_id, "orders", "export");
    // Slow the ERP so the kill lands mid-run.
    env.sandbox.custom_api().inject(
        &env.api_key,
        Fault::Latency {
            ms: 10,
            times: 1_000_000,
            method: None,
            path_contains: None,
        },
    );
    let mut first = env.worker(2);
    let run_id = env.sync(integration);
    env.wait_until(run_id, LONG, |r| r.records_synced >= 200)
        .await;
    first.signal("KILL");
    first.wait(Duration::from_secs(10));
    let at_kill = env.db.store.run(run_id).await.unwrap().unwrap();
    assert!(
        !at_kill.status.is_terminal(),
        "the kill must land mid-run: {at_kill:?}"
    );
    assert!(at_kill.records_synced < 1500, "{at_kill:?}");
    let _second = env.worker(2);
    let r = env.wait_run(run_id, LONG).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    env.assert_exactly_once("orders", 1500);
    // Orders the dead worker had sent but not recorded were replayed by the ERP, not
    // created again; each is counted once.
    assert_eq!(r.records_synced, 1500, "{r:?}");
    let mappings: i64 =
        sqlx::query_scalar("SELECT count(*) FROM integration_mappings WHERE integration_id = $1")
            .bind(integration)
            .fetch_one(env.db.store.pool())
            .await
            .unwrap();
    assert_eq!(mappings, 1500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_job_delivered_twice_creates_no_duplicate() {
    let env = Env::new("dup").await;
    let seeded = env.db.store.seed_tenant("Acme", 20, 10, 300).await.unwrap();
    let integration = env.integration(seeded.tenant_id, "orders,customers", "export");
    let run_id = env.sync(integration);
    // Publish the very same message again, as a broker redelivery would.
    let broker = env.broker().await;
    let publisher = broker.publisher();
    let run = env.db.store.run(run_id).await.unwrap().unwrap();
    let job = passerelle_core::job::JobMessage::SyncV1(passerelle_core::job::SyncJob {
        run_id,
        integration_id: integration,
        tenant_id: run.tenant_id,
        trigger: run.trigger,
        entities: vec![],
        attempt: 0,
        continuation: None,
        not_before: None,
    });
    let message = Outgoing {
        body: job.to_bytes(),
        message_id: run_id.to_string(),
        traceparent: None,
        headers: vec![],
    };
    publisher
        .publish_jobs(Lane::Manual, &[message.clone(), message])
        .await
        .unwrap();
    let _w1 = env.worker(2);
    let _w2 = env.worker(2);
    let r = env.wait_run(run_id, LONG).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    env.assert_exactly_once("orders", 300);
    env.assert_exactly_once("customers", 10);
    // Every copy was consumed: nothing left behind, nothing dead-lettered.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for queue in [
        broker.topology().job_queue(Lane::Manual),
        broker.topology().dead_queue(),
    ] {
        assert_eq!(broker.queue_depth(&queue).await.unwrap(), 0, "{queue}");
    }
    broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_completes_without_exceeding_the_limit() {
    let env = Env::with_account("rl", Some(40)).await;
    let seeded = env.db.store.seed_tenant("Acme", 20, 10, 400).await.unwrap();
    let integration = env.integration(seeded.tenant_id, "orders", "export");
    let _w = env.worker(2);
    let run_id = env.sync(integration);
    let r = env.wait_run(run_id, LONG).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    env.assert_exactly_once("orders", 400);
    let stats = env.stats();
    assert!(
        stats.rate_limited > 0,
        "the storm never happened: {stats:?}"
    );
    assert!(stats.max_requests_in_window <= 40, "{stats:?}");
    // Retry-After was honoured: far fewer 429s than requests that succeeded.
    assert!(
        stats.rate_limited < 200,
        "the client hammered the ERP: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_dead_lettered_with_its_reason_and_other_jobs_run() {
    let env = Env::new("poison").await;
    let seeded = env.db.store.seed_tenant("Acme", 10, 5, 50).await.unwrap();
    let integration = env.integration(seeded.tenant_id, "orders", "export");
    let broker = env.broker().await;
    let publisher = broker.publisher();
    let poison = Outgoing {
        body: b"{\"type\":\"sync.v1\",\"run_id\":42}".to_vec(),
        message_id: "poison".into(),
        traceparent: None,
        headers: vec![],
    };
    publisher
        .publish_jobs(Lane::Manual, &[poison])
        .await
        .unwrap();
    let run_id = env.sync(integration);
    let _w = env.worker(2);
    let r = env.wait_run(run_id, LONG).await;
    assert_eq!(r.status, RunStatus::Succeeded);
    env.assert_exactly_once("orders", 50);
    let dead_queue = broker.topology().dead_queue();
    let mut dead = None;
    for _ in 0..50 {
        dead = broker.get_one(&dead_queue).await.unwrap();
        if dead.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dead = dead.expect("the poison message reached the dead-letter queue");
    assert_eq!(dead.data, b"{\"type\":\"sync.v1\",\"run_id\":42}");
    let reason = passerelle_queue::header(&dead, passerelle_queue::REASON_HEADER).unwrap();
    assert!(reason.starts_with("malformed job message"), "{reason}");
    broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_chunk_loses_nothing() {
    let mut env = Env::new("term").await;
    // Twelve chunks: the signal lands mid-run however fast the machine is (with the default
    // of 1,000 the first commit came with most of the run already sent).
    env.extra_env
        .push(("PASSERELLE__WORKER__CHUNK_SIZE".into(), "100".into()));
    let seeded = env
        .db
        .store
        .seed_tenant("Acme", 30, 10, 1200)
        .await
        .unwrap();
    let integration = env.integration(seeded.tenant_id, "orders", "export");
    env.sandbox.custom_api().inject(
        &env.api_key,
        Fault::Latency {
            ms: 10,
            times: 1_000_000,
            method: None,
            path_contains: None,
        },
    );
    let mut first = env.worker(2);
    let run_id = env.sync(integration);
    env.wait_until(run_id, LONG, |r| r.records_synced >= 150)
        .await;
    first.signal("TERM");
    let status = first.wait(Duration::from_secs(20));
    assert!(
        status.success(),
        "worker exit after SIGTERM: {status:?}; log: {}",
        first.log_text()
    );
    assert!(
        first.log_text().contains("worker stopped"),
        "{}",
        first.log_text()
    );
    let partial = env.db.store.run(run_id).await.unwrap().unwrap();
    assert!(
        !partial.status.is_terminal(),
        "the run should still be going: {partial:?}"
    );
    let _second = env.worker(2);
    let r = env.wait_run(run_id, LONG).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    env.assert_exactly_once("orders", 1200);
    assert_eq!(r.records_synced, 1200, "every order counted once: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_erp_rejects_is_logged_and_the_others_are_synced() {
    let env = Env::new("reject").await;
    let seeded = env.db.store.seed_tenant("Acme", 10, 5, 40).await.unwrap();
    // One order without lines: the ERP refuses it (items must not be empty).
    let bad: i64 = sqlx::query_scalar("DELETE FROM platform.order_items WHERE order_id = (SELECT min(id) FROM platform.orders) RETURNING order_id")
        .fetch_one(env.db.store.pool()).await.unwrap();
    let integration = env.integration(seeded.tenant_id, "orders", "export");
    let _w = env.worker(2);
    let (out, stdout, stderr) = run(env.cmd().args(["sync", &integration.to_string(), "--wait"]));
    assert_eq!(
        out.status.code(),
        Some(3),
        "partial runs exit 3: {stdout}{stderr}"
    );
    env.assert_exactly_once("orders", 39);
    let (status, error): (String, Option<String>) = sqlx::query_as(
        "SELECT status::text, error_message FROM integration_logs WHERE integration_id = $1 AND entity_id = $2",
    )
    .bind(integration).bind(bad.to_string()).fetch_one(env.db.store.pool()).await.unwrap();
    assert_eq!(status, "failed");
    assert!(error.unwrap().contains("items"), "the ERP's reason is kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_errors_and_lost_responses_are_retried_without_duplicates() {
    let env = Env::new("flaky").await;
    let seeded = env.db.store.seed_tenant("Acme", 10, 5, 60).await.unwrap();
    let integration = env.integration(seeded.tenant_id, "orders", "export");
    let api = env.sandbox.custom_api();
    // The ERP creates the record but the answer is lost, several times; then a run of 503s
    // longer than the in-call retries, so the job goes through a delay queue; then HTML.
    api.inject(
        &env.api_key,
        Fault::DropResponse {
            times: 5,
            method: Some("POST".into()),
            path_contains: None,
        },
    );
    api.inject(
        &env.api_key,
        Fault::Status {
            status: 503,
            retry_after: None,
            times: 12,
            method: None,
            path_contains: None,
        },
    );
    api.inject(
        &env.api_key,
        Fault::Html {
            times: 3,
            method: None,
            path_contains: None,
        },
    );
    api.inject(
        &env.api_key,
        Fault::Malformed {
            times: 3,
            method: Some("POST".into()),
            path_contains: None,
        },
    );
    let _w = env.worker(2);
    let run_id = env.sync(integration);
    let r = env.wait_run(run_id, LONG).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    env.assert_exactly_once("orders", 60);
    assert!(
        env.stats().replays > 0,
        "lost responses were recovered by idempotent replay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_fail_the_run_and_flag_the_integration() {
    let env = Env::new("auth").await;
    let seeded = env.db.store.seed_tenant("Acme", 5, 5, 5).await.unwrap();
    let integration = env.integration(seeded.tenant_id, "orders", "export");
    env.reconfigure(
        integration,
        &["--credentials", "{\"api_key\":\"wrong-key-1234\"}"],
    );
    let _w = env.worker(1);
    let (out, stdout, stderr) = run(env.cmd().args(["sync", &integration.to_string(), "--wait"]));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("credentials were refused"), "{stdout}");
    assert!(
        !stdout.contains("wrong-key-1234") && !stderr.contains("wrong-key-1234"),
        "secret leaked"
    );
    let i = env.db.store.integration(integration).await.unwrap();
    assert_eq!(i.status, passerelle_core::IntegrationStatus::Error);
    assert!(i.last_error.unwrap().contains("401"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_never_enqueue_the_same_due_sync_twice() {
    let env = Env::new("sched").await;
    let tenant = env.db.tenant("Acme").await;
    let pool = env.db.store.pool();
    sqlx::query(
        "INSERT INTO integrations (tenant_id, name, type, status, sync_frequency, next_sync_at, settings)
         SELECT $1, 'i' || g, 'custom_api', 'active', 'hourly', now() - interval '1 minute', '{}'::jsonb FROM generate_series(1, 300) g",
    )
    .bind(tenant).execute(pool).await.unwrap();
    let mut children: Vec<_> = (0..2)
        .map(|_| {
            env.cmd()
                .env("PASSERELLE__SCHEDULER__BATCH_SIZE", "50")
                .args(["--output", "json", "scheduler", "--once"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut enqueued = 0;
    for child in children.drain(..) {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tick: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        enqueued += tick["enqueued"].as_u64().unwrap();
    }
    assert_eq!(enqueued, 300);
    let (runs, slots): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT (integration_id, scheduled_for)) FROM sync_runs",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!((runs, slots), (300, 300));
    let broker = env.broker().await;
    assert_eq!(
        broker
            .queue_depth(&broker.topology().job_queue(Lane::Scheduled))
            .await
            .unwrap(),
        300
    );
    let later: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM integrations WHERE next_sync_at > now() + interval '55 minutes'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(later, 300, "every next_sync_at moved to the next slot");
    // A second tick finds nothing due.
    let (out, stdout, _) = run(env.cmd().args(["--output", "json", "scheduler", "--once"]));
    assert!(out.status.success());
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&stdout).unwrap()["enqueued"],
        0
    );
    broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn products_customers_and_stock_are_imported_incrementally() {
    let env = Env::new("import").await;
    let tenant = env.db.tenant("Acme").await;
    let api = env.sandbox.custom_api();
    for i in 1..=3 {
        api.upsert_record(&env.api_key, "products", serde_json::json!({"sku": format!("ERP-{i}"), "name": format!("Imported {i}"), "price": 10.5, "currency": "EUR"}));
    }
    api.upsert_record(
        &env.api_key,
        "inventory",
        serde_json::json!({"sku": "ERP-1", "warehouse_code": "MAIN", "quantity": 42}),
    );
    api.upsert_record(
        &env.api_key,
        "customers",
        serde_json::json!({"email": "ann@erp.example", "name": "Ann"}),
    );
    let integration = env.integration(tenant, "products,customers,inventory", "import");
    let _w = env.worker(1);
    let r = env.wait_run(env.sync(integration), LONG).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert_eq!(r.records_synced, 5);
    let pool = env.db.store.pool();
    let price: rust_decimal::Decimal = sqlx::query_scalar(
        "SELECT price FROM platform.products WHERE tenant_id = $1 AND sku = 'ERP-2'",
    )
    .bind(tenant)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(price.to_string(), "10.5000");
    let qty: rust_decimal::Decimal =
        sqlx::query_scalar("SELECT quantity FROM platform.inventory WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(qty.to_string(), "42.0000");
    // Only what changed comes in next time; a deleted product is deactivated.
    let ids: Vec<String> = api
        .records(&env.api_key, "products")
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect();
    api.delete_record(&env.api_key, "products", &ids[0]);
    api.upsert_record(
        &env.api_key,
        "inventory",
        serde_json::json!({"sku": "ERP-2", "warehouse_code": "MAIN", "quantity": 7}),
    );
    let r = env.wait_run(env.sync(integration), LONG).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert_eq!(r.records_synced, 2, "{r:?}");
    let active: bool = sqlx::query_scalar(
        "SELECT active FROM platform.products WHERE tenant_id = $1 AND sku = 'ERP-1'",
    )
    .bind(tenant)
    .fetch_one(pool)
    .await
    .unwrap();
    assert!(!active);
}

#[test]
fn secrets_in_settings_and_unknown_types_are_refused_with_clear_messages() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let env = Env::new("cli").await;
        let tenant = env.db.tenant("Acme").await;
        let (out, _, stderr) = run(env.cmd().args([
            "integrations",
            "create",
            "--tenant",
            &tenant.to_string(),
            "--name",
            "x",
            "--type",
            "custom_api",
            "--settings",
            "{\"api_url\":\"https://erp.example.com\",\"api_key\":\"sk_live_abcdef\"}",
        ]));
        assert!(!out.status.success());
        assert!(
            stderr.contains("settings.api_key looks like a secret"),
            "{stderr}"
        );
        assert!(!stderr.contains("sk_live_abcdef"));
        let (out, _, stderr) = run(env.cmd().args([
            "integrations",
            "create",
            "--tenant",
            &tenant.to_string(),
            "--name",
            "x",
            "--type",
            "sap",
        ]));
        assert!(!out.status.success());
        assert!(
            stderr.contains("`sap` is not a valid integration type"),
            "{stderr}"
        );
        let (out, _, stderr) = run(env
            .cmd()
            .args([
                "integrations",
                "create",
                "--tenant",
                &tenant.to_string(),
                "--name",
                "x",
                "--type",
                "custom_api",
                "--settings",
                "{\"api_url\":\"http://10.0.0.1\"}",
            ])
            .env("PASSERELLE__HTTP__ALLOW_PRIVATE_NETWORKS", "false"));
        assert!(!out.status.success());
        assert!(stderr.contains("plain http://"), "{stderr}");
        // Test button: success moves an inactive integration to `testing`.
        let id = env.integration(tenant, "orders", "export");
        run(env
            .cmd()
            .args(["integrations", "deactivate", &id.to_string()]));
        let (out, stdout, stderr) =
            run(env
                .cmd()
                .args(["--output", "json", "integrations", "test", &id.to_string()]));
        assert!(out.status.success(), "{stderr}");
        let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(v["success"], true);
        assert_eq!(v["status"], "testing");
        let (_, shown, _) =
            run(env
                .cmd()
                .args(["--output", "json", "integrations", "show", &id.to_string()]));
        assert!(
            !shown.contains(&env.api_key),
            "credentials must never be shown"
        );
        assert!(shown.contains("\"credentials_set\": true"), "{shown}");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_run_yields_after_its_time_budget_and_resumes_where_it_stopped() {
    let mut env = Env::new("yield").await;
    env.extra_env
        .push(("PASSERELLE__WORKER__TIME_BUDGET_SECS".into(), "1".into()));
    let seeded = env
        .db
        .store
        .seed_tenant("Acme", 20, 10, 1000)
        .await
        .unwrap();
    let integration = env.integration(seeded.tenant_id, "orders", "export");
    env.sandbox.custom_api().inject(
        &env.api_key,
        Fault::Latency {
            ms: 20,
            times: 1_000_000,
            method: None,
            path_contains: None,
        },
    );
    let worker = env.worker(1);
    let r = env.wait_run(env.sync(integration), LONG).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert_eq!(r.records_synced, 1000);
    env.assert_exactly_once("orders", 1000);
    let yields = worker.log_text().matches("run yielded").count();
    assert!(
        yields >= 1,
        "a 2.5 s run with a 1 s budget yields: {}",
        worker.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_publish_failed_is_published_again_by_the_outbox() {
    let env = Env::new("outbox").await;
    let seeded = env.db.store.seed_tenant("Acme", 5, 5, 20).await.unwrap();
    let integration = env.integration(seeded.tenant_id, "orders", "export");
    // A manual run committed 5 minutes ago whose publish never happened (the API died).
    let run_id: passerelle_core::RunId = sqlx::query_scalar(
        "INSERT INTO sync_runs (id, integration_id, tenant_id, trigger, queued_at)
         VALUES (gen_random_uuid(), $1, $2, 'manual', now() - interval '5 minutes') RETURNING id",
    )
    .bind(integration)
    .bind(seeded.tenant_id)
    .fetch_one(env.db.store.pool())
    .await
    .unwrap();
    let (out, stdout, stderr) = run(env.cmd().args(["--output", "json", "scheduler", "--once"]));
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&stdout).unwrap()["republished"],
        1
    );
    let _w = env.worker(1);
    let r = env.wait_run(run_id, LONG).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    env.assert_exactly_once("orders", 20);
}

#[test]
fn roles_that_read_credentials_refuse_to_start_without_a_vault_key() {
    let (out, _, stderr) =
        run(passerelle("postgres://postgres@127.0.0.1:5432/nope").args(["worker"]));
    assert!(!out.status.success());
    assert!(stderr.contains("needs the vault key ring"), "{stderr}");
    assert!(stderr.contains("passerelle vault generate-key"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_still_in_flight_at_the_erp_is_waited_for_not_abandoned() {
    let env = Env::new("inflight").await;
    let seeded = env.db.store.seed_tenant("Acme", 5, 3, 6).await.unwrap();
    let integration = env.integration(seeded.tenant_id, "orders", "export");
    // Our requests time out after 1 s; the ERP takes 2.5 s over the first create, so our
    // retry of it meets a 409 "still in flight".
    let settings = serde_json::json!({"api_url": env.sandbox.custom_api_url(), "timeout_secs": 1, "concurrency": 1});
    env.reconfigure(integration, &["--settings", &settings.to_string()]);
    env.sandbox.custom_api().inject(
        &env.api_key,
        Fault::Latency {
            ms: 2500,
            times: 1,
            method: Some("POST".into()),
            path_contains: None,
        },
    );
    let _w = env.worker(1);
    let r = env.wait_run(env.sync(integration), LONG).await;
    assert_eq!(
        (r.status, r.records_failed),
        (RunStatus::Succeeded, 0),
        "{r:?}"
    );
    env.assert_exactly_once("orders", 6);
    // And the next run finds nothing to create again.
    let r = env.wait_run(env.sync(integration), LONG).await;
    assert_eq!(r.status, RunStatus::Succeeded);
    env.assert_exactly_once("orders", 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverting_a_change_is_sent_not_mistaken_for_a_replay() {
    let env = Env::new("revert").await;
    let seeded = env.db.store.seed_tenant("Acme", 1, 1, 0).await.unwrap();
    let integration = env.integration(seeded.tenant_id, "products", "export");
    let _w = env.worker(1);
    let price = |p: &str| {
        let p = p.to_owned();
        let pool = env.db.store.pool().clone();
        async move {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE platform.products SET price = {p}"
            )))
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    price("10").await;
    env.wait_run(env.sync(integration), LONG).await;
    price("12").await;
    env.wait_run(env.sync(integration), LONG).await;
    price("10").await;
    let r = env.wait_run(env.sync(integration), LONG).await;
    assert_eq!(
        (r.status, r.records_synced),
        (RunStatus::Succeeded, 1),
        "{r:?}"
    );
    let at_erp = env.sandbox.custom_api().records(&env.api_key, "products");
    assert_eq!(at_erp[0]["price"].as_f64(), Some(10.0), "{at_erp:?}");
    assert_eq!(env.stats().updates.get("products").copied(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_records_are_not_echoed_back_to_the_erp() {
    let env = Env::new("echo").await;
    let tenant = env.db.tenant("Acme").await;
    for i in 1..=3 {
        env.sandbox.custom_api().upsert_record(&env.api_key, "products",
            serde_json::json!({"sku": format!("ERP-{i}"), "name": format!("From ERP {i}"), "price": 5, "currency": "EUR"}));
    }
    let integration = env.integration(tenant, "products", "bidirectional");
    let _w = env.worker(1);
    let r = env.wait_run(env.sync(integration), LONG).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    let stats = env.stats();
    assert_eq!(
        stats.creates.get("products").copied().unwrap_or(0),
        0,
        "{stats:?}"
    );
    assert_eq!(
        stats.updates.get("products").copied().unwrap_or(0),
        0,
        "imports must not be PUT back: {stats:?}"
    );
    // A platform edit after the import does go out.
    sqlx::query("UPDATE platform.products SET name = 'Renamed' WHERE sku = 'ERP-2'")
        .execute(env.db.store.pool())
        .await
        .unwrap();
    let r = env.wait_run(env.sync(integration), LONG).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert_eq!(env.stats().updates.get("products").copied(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranded_run_is_failed_so_the_schedule_goes_on() {
    let env = Env::new("strand").await;
    let seeded = env.db.store.seed_tenant("Acme", 2, 2, 2).await.unwrap();
    let integration = env.integration(seeded.tenant_id, "orders", "export");
    // A run whose worker died and whose message was lost: running, lease long expired.
    let run_id: passerelle_core::RunId = sqlx::query_scalar(
        "INSERT INTO sync_runs (id, integration_id, tenant_id, trigger, status, started_at, lease_owner, lease_expires_at)
         VALUES (gen_random_uuid(), $1, $2, 'manual', 'running', now() - interval '2 hours', 'dead-worker', now() - interval '1 hour')
         RETURNING id",
    )
    .bind(integration).bind(seeded.tenant_id).fetch_one(env.db.store.pool()).await.unwrap();
    let (out, stdout, stderr) = run(env.cmd().args(["--output", "json", "scheduler", "--once"]));
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&stdout).unwrap()["abandoned"],
        1,
        "{stderr}"
    );
    let r = env.db.store.run(run_id).await.unwrap().unwrap();
    assert_eq!(r.status, RunStatus::Failed);
    assert!(r.error.unwrap().contains("abandoned"));
    let i = env.db.store.integration(integration).await.unwrap();
    assert_eq!(i.failed_syncs, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_own_rate_limit_is_shared_by_the_fleet_and_keeps_us_under_the_erps() {
    let env = Env::with_account("fleet", Some(30)).await;
    let a = env.db.store.seed_tenant("A", 5, 5, 120).await.unwrap();
    let b = env.db.store.seed_tenant("B", 5, 5, 120).await.unwrap();
    let settings =
        serde_json::json!({"api_url": env.sandbox.custom_api_url(), "requests_per_second": 30})
            .to_string();
    let mut ids = Vec::new();
    for tenant in [a.tenant_id, b.tenant_id] {
        let id = env.integration(tenant, "orders", "export");
        env.reconfigure(id, &["--settings", &settings]);
        ids.push(id);
    }
    let _w1 = env.worker(2);
    let _w2 = env.worker(2);
    let runs: Vec<_> = ids.iter().map(|id| env.sync(*id)).collect();
    for run_id in runs {
        let r = env.wait_run(run_id, LONG).await;
        assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    }
    let stats = env.stats();
    assert_eq!(stats.creates.get("orders").copied(), Some(240));
    assert!(stats.max_requests_in_window <= 30, "{stats:?}");
    // Two workers, two integrations, one budget: the ERP hardly ever had to say 429.
    assert!(
        stats.rate_limited <= 2,
        "the fleet overran the ERP's limit {} times",
        stats.rate_limited
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erp_outage_costs_a_handful_of_requests_per_attempt() {
    let env = Env::new("outage").await;
    let seeded = env.db.store.seed_tenant("Acme", 10, 5, 300).await.unwrap();
    let integration = env.integration(seeded.tenant_id, "orders", "export");
    // Every request fails: without a breaker each of the 300 orders went out with its
    // in-call retries (1,200 requests per attempt).
    env.sandbox.custom_api().inject(
        &env.api_key,
        Fault::Status {
            status: 503,
            retry_after: None,
            times: 1_000_000,
            method: None,
            path_contains: None,
        },
    );
    let _w = env.worker(1);
    let run_id = env.sync(integration);
    env.wait_until(run_id, LONG, |r| {
        r.attempt >= 1 && r.status == RunStatus::Queued
    })
    .await;
    let run = env.db.store.run(run_id).await.unwrap().unwrap();
    assert!(
        run.error.as_deref().unwrap_or("").contains("503")
            || run.error.as_deref().unwrap_or("").contains("circuit open"),
        "{run:?}"
    );
    let requests = env.stats().requests;
    // The breaker opens after 5 failures; requests already in flight (8 at once) finish.
    assert!(requests <= 40, "{requests} requests in the first attempt");
    assert_eq!(run.records_synced, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_waiting_on_the_erp_says_until_when() {
    let env = Env::new("wait").await;
    let seeded = env.db.store.seed_tenant("Acme", 5, 3, 10).await.unwrap();
    let integration = env.integration(seeded.tenant_id, "orders", "export");
    // A spent quota: the ERP asks for an hour.
    env.sandbox.custom_api().inject(
        &env.api_key,
        Fault::Status {
            status: 429,
            retry_after: Some(3600),
            times: 1_000_000,
            method: None,
            path_contains: None,
        },
    );
    let _w = env.worker(1);
    let (out, _, stderr) =
        run(env
            .cmd()
            .args(["sync", &integration.to_string(), "--wait", "--timeout", "8"]));
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("waiting until"), "{stderr}");
    assert!(stderr.contains("rate limited"), "{stderr}");
}
