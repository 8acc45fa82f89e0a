//! Roles ride out their broker and their database going away and coming back: each test puts
//! a cuttable proxy (see `proxy.rs`) between one role and the real services.

use crate::proxy::Proxy;
use crate::support::*;
use passerelle_core::RunStatus;
use std::time::Duration;

/// Proxies for both services (the test servers, PASSERELLE_TEST_AMQP and _PG) and the
/// environment that sends a role through them.
async fn proxies(env: &Env) -> (Proxy, Proxy, Vec<(&'static str, String)>) {
    let amqp = Proxy::start(socket_addr(&amqp_url())).await;
    let pg = Proxy::start(socket_addr(&env.db.url)).await;
    let vars = vec![
        (
            "PASSERELLE__AMQP__URL",
            through(&amqp_url(), "127.0.0.1", amqp.port),
        ),
        (
            "PASSERELLE__DATABASE__URL",
            through(&env.db.url, "127.0.0.1", pg.port),
        ),
    ];
    (amqp, pg, vars)
}

async fn wait_for_log(role: &Worker, needle: &str, timeout: Duration) {
    let start = std::time::Instant::now();
    while !role.log_text().contains(needle) {
        assert!(
            start.elapsed() < timeout,
            "`{needle}` not logged within {timeout:?}: {}",
            role.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_worker_survives_its_broker_and_database_going_away_and_coming_back() {
    let env = Env::new("outw").await;
    let seeded = env.db.store.seed_tenant("Acme", 10, 5, 40).await.unwrap();
    let integration = env.integration(seeded.tenant_id, "orders", "export");
    let (amqp, pg, vars) = proxies(&env).await;
    let mut worker = env.role(&["worker", "--concurrency", "2"], &vars);
    let first = env.sync(integration);
    assert_eq!(
        env.wait_run(first, Duration::from_secs(60)).await.status,
        RunStatus::Succeeded
    );

    amqp.cut();
    pg.cut();
    wait_for_log(&worker, "lost RabbitMQ", Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        worker.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the worker exited during the outage: {}",
        worker.log_text()
    );
    amqp.restore();
    pg.restore();
    wait_for_log(&worker, "reconnected to RabbitMQ", Duration::from_secs(40)).await;

    // Changed orders go out through the same worker.
    sqlx::query("UPDATE platform.orders SET order_number = order_number || '-R' WHERE id IN (SELECT id FROM platform.orders ORDER BY id LIMIT 5)")
        .execute(env.db.store.pool())
        .await
        .unwrap();
    let second = env.sync(integration);
    let run = env.wait_run(second, Duration::from_secs(60)).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{}", worker.log_text());
    assert_eq!(run.records_synced, 5, "{run:?}");
    env.assert_exactly_once("orders", 40);
}

#[tokio::test]
async fn the_scheduler_publishes_again_after_its_broker_and_database_come_back() {
    let env = Env::new("outs").await;
    let seeded = env.db.store.seed_tenant("Acme", 5, 3, 10).await.unwrap();
    let integration = env.integration(seeded.tenant_id, "orders", "export");
    let (amqp, pg, vars) = proxies(&env).await;
    let mut vars = vars;
    vars.push(("PASSERELLE__SCHEDULER__INTERVAL_MS", "200".into()));
    vars.push(("PASSERELLE__SCHEDULER__REPUBLISH_AFTER_SECS", "1".into()));
    let mut scheduler = env.role(&["scheduler"], &vars);
    let _worker = env.worker(1);
    wait_for_log(&scheduler, "scheduler started", Duration::from_secs(20)).await;

    amqp.cut();
    pg.cut();
    // Due while the scheduler cannot reach either service.
    sqlx::query(
        "UPDATE integrations SET sync_frequency = 'hourly', next_sync_at = now() WHERE id = $1",
    )
    .bind(integration)
    .execute(env.db.store.pool())
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        scheduler
            .child
            .as_mut()
            .unwrap()
            .try_wait()
            .unwrap()
            .is_none(),
        "the scheduler exited during the outage: {}",
        scheduler.log_text()
    );
    amqp.restore();
    pg.restore();

    let start = std::time::Instant::now();
    let run = loop {
        let runs = env
            .db
            .store
            .runs_for_integration(integration, 5)
            .await
            .unwrap();
        if let Some(run) = runs.into_iter().find(|r| r.status.is_terminal()) {
            break run;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no scheduled run finished after the outage: {}",
            scheduler.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    env.assert_exactly_once("orders", 10);
}

#[tokio::test]
async fn a_worker_that_gives_up_on_its_broker_exits_non_zero() {
    let env = Env::new("outg").await;
    let (amqp, _pg, mut vars) = proxies(&env).await;
    vars.push(("PASSERELLE__AMQP__GIVE_UP_AFTER_SECS", "2".into()));
    let mut worker = env.role(&["worker"], &vars);
    wait_for_log(&worker, "consuming", Duration::from_secs(20)).await;
    amqp.cut();
    // Polled without blocking: the proxy's tasks run on this test's runtime.
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = worker.child.as_mut().unwrap().try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "the worker did not give up: {}",
            worker.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success(), "{status:?}: {}", worker.log_text());
    assert!(
        worker.log_text().contains("giving up"),
        "{}",
        worker.log_text()
    );
}
