//! The worker's decisions, in-process: one job run against the real Postgres (and a real
//! broker connection for the context's publisher), with a scripted connector standing in for
//! an ERP that misbehaves in exactly one way. No process is spawned; every outcome is
//! deterministic.

use crate::support::{TestDb, amqp_url, vault_with};
use async_trait::async_trait;
use passerelle::worker::{ConnectorFactory, JobContext, JobOutcome, run_job};
use passerelle_connectors::{
    Capabilities, ConnectionTest, Connector, ConnectorContext, ConnectorError, ExportAction,
    ExportOp, ExportResult, Exported, Idempotency, ImportCursor, ImportPage,
};
use passerelle_core::config::Settings;
use passerelle_core::job::{SyncJob, TraceParent};
use passerelle_core::platform::{ImportedRecord, PlatformRecord};
use passerelle_core::vault::{Credentials, Vault};
use passerelle_core::{
    Entity, IntegrationId, IntegrationStatus, IntegrationType, LogStatus, MappingEntityType,
    RunStatus, RunTrigger, SyncDirection, TenantId,
};
use passerelle_store::{Integration, IntegrationPatch, LogFilter, NewIntegration, Store};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the scripted ERP misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Script {
    /// Answers every op, each with its own id.
    Honest,
    /// Leaves the last op of each call unanswered.
    DropsLast,
    /// Answers the first op twice, in place of the second.
    AnswersFirstTwice,
    /// Panics inside `export`.
    Panics,
    /// Answers every op, taking 300 ms per call (a slow ERP).
    Slow,
    /// Refuses with an error of the given class on every record.
    Fails(Class),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Fatal,
    Auth,
    /// A 429 asking for two hours (a daily quota spent).
    QuotaSpent,
}

#[derive(Debug)]
struct Scripted {
    script: Script,
    capabilities: Capabilities,
    /// Internal ids of every op sent, in order.
    sent: Mutex<Vec<String>>,
    /// What `import_page` returns (one page, then nothing).
    import: Mutex<Option<ImportPage>>,
    /// The mapping metadata each op carried, in order.
    kept: Mutex<Vec<serde_json::Map<String, serde_json::Value>>>,
}

impl Scripted {
    fn new(script: Script) -> Arc<Self> {
        Arc::new(Self {
            script,
            capabilities: Capabilities {
                export: vec![Entity::Product],
                import: vec![Entity::Product, Entity::Inventory],
                export_batch_size: 10,
                idempotency: Idempotency::Key,
            },
            sent: Mutex::new(Vec::new()),
            import: Mutex::new(None),
            kept: Mutex::new(Vec::new()),
        })
    }

    fn sent(&self) -> Vec<String> {
        self.sent.lock().unwrap().clone()
    }
}

fn answer(op: &ExportOp) -> ExportResult {
    ExportResult {
        internal_id: op.internal_id.clone(),
        action: if op.external_id.is_some() {
            ExportAction::Update
        } else {
            ExportAction::Create
        },
        outcome: Ok(Exported {
            external_id: format!("EXT-{}", op.internal_id),
            replayed: false,
            metadata: serde_json::Map::from_iter([("sync_token".to_owned(), "v1".into())]),
        }),
        response: None,
        duration_ms: 1,
    }
}

#[async_trait]
impl Connector for Scripted {
    fn integration_type(&self) -> IntegrationType {
        IntegrationType::CustomApi
    }

    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    async fn test_connection(&self) -> Result<ConnectionTest, ConnectorError> {
        Ok(ConnectionTest {
            message: "ok".into(),
            response_time_ms: 1,
        })
    }

    fn map_record(&self, record: &PlatformRecord) -> Result<serde_json::Value, ConnectorError> {
        Ok(serde_json::json!({ "id": record.internal_id() }))
    }

    async fn export(&self, _entity: Entity, ops: Vec<ExportOp>) -> Vec<ExportResult> {
        if self.script == Script::Slow {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        self.sent
            .lock()
            .unwrap()
            .extend(ops.iter().map(|op| op.internal_id.clone()));
        self.kept
            .lock()
            .unwrap()
            .extend(ops.iter().map(|op| op.mapping_metadata.clone()));
        let mut results: Vec<ExportResult> = ops.iter().map(answer).collect();
        match self.script {
            Script::Honest | Script::Slow => {}
            Script::DropsLast => {
                results.pop();
            }
            Script::AnswersFirstTwice => {
                if results.len() > 1 {
                    results[1] = answer(&ops[0]);
                }
            }
            Script::Panics => panic!("scripted connector bug"),
            Script::Fails(class) => {
                for result in &mut results {
                    result.outcome = Err(match class {
                        Class::Fatal => ConnectorError::fatal("the ERP answered HTML"),
                        Class::Auth => ConnectorError::Auth {
                            message: "token revoked".into(),
                        },
                        Class::QuotaSpent => ConnectorError::RateLimited {
                            retry_after: Duration::from_secs(7200),
                        },
                    });
                }
            }
        }
        results
    }

    async fn import_page(
        &self,
        _entity: Entity,
        _cursor: &ImportCursor,
    ) -> Result<ImportPage, ConnectorError> {
        if self.script == Script::Slow {
            // An ERP with endless pages, 300 ms each.
            tokio::time::sleep(Duration::from_millis(300)).await;
            self.sent.lock().unwrap().push("page".into());
            return Ok(ImportPage {
                records: Vec::new(),
                rejected: Vec::new(),
                next_page: Some("next".into()),
            });
        }
        Ok(self.import.lock().unwrap().take().unwrap_or(ImportPage {
            records: Vec::new(),
            rejected: Vec::new(),
            next_page: None,
        }))
    }
}

/// Hands out the scripted connector, or refuses to build one with `refuse`.
struct Factory {
    connector: Arc<Scripted>,
    refuse: Option<ConnectorError>,
}

impl ConnectorFactory for Factory {
    fn build(
        &self,
        _integration: &Integration,
        _credentials: Option<&Credentials>,
        _context: &ConnectorContext,
    ) -> Result<Arc<dyn Connector>, ConnectorError> {
        match &self.refuse {
            Some(e) => Err(e.clone()),
            None => Ok(self.connector.clone()),
        }
    }
}

/// One tenant with `products` products, an active integration over the scripted connector
/// and a worker context, on a database of its own.
struct Harness {
    db: TestDb,
    vault: Vault,
    tenant: TenantId,
    integration: Integration,
    prefix: String,
}

impl Harness {
    async fn new(tag: &str, products: i64, direction: SyncDirection) -> Self {
        let db = TestDb::migrated(tag).await;
        let seeded = db.store.seed_tenant("t", products, 1, 0).await.unwrap();
        let (vault, _) = vault_with("k1");
        let mut new = NewIntegration::new(seeded.tenant_id, "scripted", IntegrationType::CustomApi);
        new.sync_direction = direction;
        new.sync_products = true;
        new.sync_inventory = direction.imports();
        new.sync_orders = false;
        new.sync_invoices = false;
        new.credentials =
            Some(Credentials::from_value(serde_json::json!({"api_key": "k-123"})).unwrap());
        let created = db
            .store
            .create_integration(Some(&vault), new)
            .await
            .unwrap();
        let integration = activate(&db.store, created.id).await;
        Self {
            db,
            vault,
            tenant: seeded.tenant_id,
            integration,
            prefix: format!("pt.w.{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        }
    }

    async fn broker(&self) -> passerelle_queue::Broker {
        let mut settings = Settings::default();
        settings.amqp.prefix = self.prefix.clone();
        settings.amqp.retry_delays_secs = vec![1, 2];
        passerelle_queue::Broker::connect(&amqp_url(), passerelle::app::topology(&settings))
            .await
            .unwrap()
    }

    async fn context(&self, factory: Factory, vault: Option<Vault>) -> JobContext {
        let mut settings = Settings::default();
        settings.worker.chunk_size = 2;
        settings.worker.max_attempts = 3;
        settings.amqp.prefix = self.prefix.clone();
        settings.amqp.retry_delays_secs = vec![1, 2];
        let broker =
            passerelle_queue::Broker::connect(&amqp_url(), passerelle::app::topology(&settings))
                .await
                .unwrap();
        JobContext {
            store: self.db.store.clone(),
            vault: vault.unwrap_or_else(|| self.vault.clone()),
            publisher: broker.publisher(),
            connectors: ConnectorContext::default(),
            owner: "test-worker".into(),
            settings,
            stop: Default::default(),
            factory: Arc::new(factory),
            recorded_keys: Default::default(),
        }
    }

    /// A manual run of the integration and its first job message.
    async fn job(&self) -> SyncJob {
        let run = self
            .db
            .store
            .create_manual_run(
                &self.integration,
                &[],
                "0af7651916cd43dd8448eb211c80319c",
                false,
            )
            .await
            .unwrap();
        SyncJob {
            run_id: run.id,
            integration_id: self.integration.id,
            tenant_id: self.tenant,
            trigger: RunTrigger::Manual,
            entities: Vec::new(),
            attempt: 0,
            continuation: None,
            not_before: None,
        }
    }

    async fn run(&self, ctx: &JobContext) -> (JobOutcome, passerelle_store::SyncRun) {
        let job = self.job().await;
        let outcome = run_job(ctx, &job, &TraceParent::new_root()).await;
        let run = self.db.store.run(job.run_id).await.unwrap().unwrap();
        (outcome, run)
    }

    async fn status(&self) -> IntegrationStatus {
        self.db
            .store
            .integration(self.integration.id)
            .await
            .unwrap()
            .status
    }

    async fn mapped(&self, entity: MappingEntityType) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM integration_mappings WHERE integration_id = $1 AND entity_type = $2",
        )
        .bind(self.integration.id)
        .bind(entity)
        .fetch_one(self.db.store.pool())
        .await
        .unwrap()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        crate::support::delete_topology(&self.prefix, &[1, 2]);
    }
}

async fn activate(store: &Store, id: IntegrationId) -> Integration {
    let patch = IntegrationPatch {
        status: Some(IntegrationStatus::Active),
        ..Default::default()
    };
    store
        .update_integration(None, id, patch, chrono::Utc::now())
        .await
        .unwrap()
}

fn scripted(script: Script) -> (Arc<Scripted>, Factory) {
    let connector = Scripted::new(script);
    let factory = Factory {
        connector: connector.clone(),
        refuse: None,
    };
    (connector, factory)
}

#[tokio::test]
async fn a_connector_that_drops_a_result_fails_the_chunk_and_loses_no_record() {
    let h = Harness::new("wdrop", 5, SyncDirection::Export).await;
    let (_, factory) = scripted(Script::DropsLast);
    let ctx = h.context(factory, None).await;
    let (outcome, run) = h.run(&ctx).await;
    assert!(matches!(outcome, JobOutcome::Done), "{outcome:?}");
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    let error = run.error.unwrap();
    assert!(error.contains("no result for [2]"), "{error}");
    assert!(error.contains("connector bug"), "{error}");
    // The answered record of the chunk is recorded; the cursor did not move past the other.
    assert_eq!(h.mapped(MappingEntityType::Product).await, 1);
    let cursor =
        h.db.store
            .export_cursor(h.integration.id, Entity::Product)
            .await
            .unwrap();
    assert_eq!(cursor.after, None, "{cursor:?}");

    // An honest connector afterwards sends the dropped record and the rest: nothing is lost.
    let (honest, factory) = scripted(Script::Honest);
    let ctx = h.context(factory, None).await;
    let (_, run) = h.run(&ctx).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(h.mapped(MappingEntityType::Product).await, 5);
    assert_eq!(honest.sent(), ["2", "3", "4", "5"]);
}

#[tokio::test]
async fn a_connector_that_answers_one_record_twice_fails_the_chunk() {
    let h = Harness::new("wtwice", 4, SyncDirection::Export).await;
    let (_, factory) = scripted(Script::AnswersFirstTwice);
    let ctx = h.context(factory, None).await;
    let (_, run) = h.run(&ctx).await;
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    let error = run.error.unwrap();
    assert!(error.contains("no result for [2]"), "{error}");
    assert!(error.contains("repeated: [1]"), "{error}");
    assert_eq!(h.mapped(MappingEntityType::Product).await, 1);
}

#[tokio::test]
async fn an_unreadable_cursor_fails_the_run_naming_it_instead_of_restarting_the_pass() {
    let h = Harness::new("wcursor", 3, SyncDirection::Export).await;
    sqlx::query(
        "INSERT INTO sync_cursors (integration_id, entity, direction, cursor)
         VALUES ($1, 'product', 'export', '{\"after\": \"yesterday\"}')",
    )
    .bind(h.integration.id)
    .execute(h.db.store.pool())
    .await
    .unwrap();
    let (connector, factory) = scripted(Script::Honest);
    let ctx = h.context(factory, None).await;
    let (_, run) = h.run(&ctx).await;
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    let error = run.error.unwrap();
    assert!(
        error.contains(&format!(
            "export cursor of integration {}",
            h.integration.id
        )),
        "{error}"
    );
    assert!(error.contains("product"), "{error}");
    assert!(connector.sent().is_empty(), "nothing may be re-sent");
    // Not the integration's fault: it stays active.
    assert_eq!(h.status().await, IntegrationStatus::Active);
}

#[tokio::test]
async fn a_tombstone_whose_mapping_holds_a_malformed_stock_id_is_refused_not_applied() {
    let h = Harness::new("wstock", 1, SyncDirection::Import).await;
    // A stock mapping whose internal id is not `product:warehouse`.
    h.db.store
        .map_ids(
            &h.integration,
            MappingEntityType::Inventory,
            "not-a-stock-id",
            "ERP-STOCK-1",
            None,
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    let (connector, factory) = scripted(Script::Honest);
    *connector.import.lock().unwrap() = Some(ImportPage {
        records: vec![ImportedRecord::tombstone(
            "ERP-STOCK-1".into(),
            None,
            serde_json::json!({"id": "ERP-STOCK-1", "deleted": true}),
        )],
        rejected: Vec::new(),
        next_page: None,
    });
    let mut factory = factory;
    factory.connector = connector.clone();
    let ctx = h.context(factory, None).await;
    let job = h.job().await;
    let job = SyncJob {
        entities: vec![Entity::Inventory],
        ..job
    };
    run_job(&ctx, &job, &TraceParent::new_root()).await;
    let run = h.db.store.run(job.run_id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Partial, "{run:?}");
    assert_eq!((run.records_synced, run.records_failed), (0, 1));
    let logs =
        h.db.store
            .logs(
                &LogFilter {
                    integration_id: Some(h.integration.id),
                    ..Default::default()
                },
                chrono::Utc::now(),
            )
            .await
            .unwrap();
    let failed: Vec<_> = logs
        .iter()
        .filter(|l| l.status == Some(LogStatus::Failed))
        .collect();
    assert_eq!(failed.len(), 1, "{logs:?}");
    let message = failed[0].error_message.as_deref().unwrap();
    assert!(message.contains("not-a-stock-id"), "{message}");
    // The mapping stays, for an admin to look at.
    assert_eq!(h.mapped(MappingEntityType::Inventory).await, 1);
}

#[tokio::test]
async fn a_panicking_job_is_retried_as_a_failed_attempt_and_its_run_says_why() {
    let h = Harness::new("wpanic", 2, SyncDirection::Export).await;
    let (_, factory) = scripted(Script::Panics);
    let ctx = h.context(factory, None).await;
    let (outcome, run) = h.run(&ctx).await;
    let JobOutcome::Retry { job, delay } = outcome else {
        panic!("expected a retry, got {outcome:?}");
    };
    assert_eq!(job.attempt, 1);
    assert_eq!(delay, Duration::from_secs(1));
    assert_eq!(run.status, RunStatus::Queued, "{run:?}");
    let error = run.error.clone().unwrap();
    assert!(
        error.contains("panicked: scripted connector bug"),
        "{error}"
    );
    assert!(run.resume_at.is_some(), "{run:?}");
    // The lease is free for the retry.
    let leases: i64 = sqlx::query_scalar("SELECT count(*) FROM integration_leases")
        .fetch_one(h.db.store.pool())
        .await
        .unwrap();
    assert_eq!(leases, 0);

    // On the last attempt the run fails and the message is dead-lettered.
    let last = SyncJob { attempt: 2, ..job };
    let outcome = run_job(&ctx, &last, &TraceParent::new_root()).await;
    assert!(
        matches!(outcome, JobOutcome::DeadLetter { .. }),
        "{outcome:?}"
    );
    let run = h.db.store.run(last.run_id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
}

#[tokio::test]
async fn only_errors_an_admin_must_fix_flag_the_integration() {
    // An ERP answer we cannot use fails the run; the integration keeps its schedule.
    let h = Harness::new("wfatal", 2, SyncDirection::Export).await;
    let (_, factory) = scripted(Script::Fails(Class::Fatal));
    let ctx = h.context(factory, None).await;
    let (_, run) = h.run(&ctx).await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(h.status().await, IntegrationStatus::Active);

    // Refused credentials flag it.
    let (_, factory) = scripted(Script::Fails(Class::Auth));
    let ctx = h.context(factory, None).await;
    let (_, run) = h.run(&ctx).await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(h.status().await, IntegrationStatus::Error);

    // So does a configuration the connector cannot be built from.
    let h = Harness::new("wconfig", 2, SyncDirection::Export).await;
    let (connector, _) = scripted(Script::Honest);
    let factory = Factory {
        connector,
        refuse: Some(ConnectorError::config("settings.api_url is missing")),
    };
    let ctx = h.context(factory, None).await;
    let (_, run) = h.run(&ctx).await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.error.as_deref(), Some("settings.api_url is missing"));
    assert_eq!(h.status().await, IntegrationStatus::Error);
}

#[tokio::test]
async fn a_worker_with_the_wrong_key_material_retries_and_blames_no_integration() {
    let h = Harness::new("wkey", 2, SyncDirection::Export).await;
    // Same key id, other material: this worker was deployed with a bad key.
    let (wrong, _) = vault_with("k1");
    let (connector, factory) = scripted(Script::Honest);
    let ctx = h.context(factory, Some(wrong)).await;
    let (outcome, run) = h.run(&ctx).await;
    assert!(matches!(outcome, JobOutcome::Retry { .. }), "{outcome:?}");
    assert_eq!(run.status, RunStatus::Queued, "{run:?}");
    assert!(
        run.error
            .as_deref()
            .unwrap()
            .contains("retried on another worker"),
        "{run:?}"
    );
    assert_eq!(h.status().await, IntegrationStatus::Active);
    assert!(connector.sent().is_empty());

    // A ciphertext altered in the database, opened with the key the fleet recorded, is the
    // integration's fault.
    sqlx::query(
        "UPDATE integrations SET credentials = jsonb_set(credentials, '{ct}', to_jsonb('AAAA' || (credentials->>'ct'))) WHERE id = $1",
    )
    .bind(h.integration.id)
    .execute(h.db.store.pool())
    .await
    .unwrap();
    let (_, factory) = scripted(Script::Honest);
    let ctx = h.context(factory, None).await;
    let (_, run) = h.run(&ctx).await;
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    assert!(
        run.error
            .as_deref()
            .unwrap()
            .contains("failed authentication"),
        "{run:?}"
    );
    assert_eq!(h.status().await, IntegrationStatus::Error);
}

#[tokio::test]
async fn a_run_waiting_hours_for_a_quota_is_not_reaped_as_abandoned() {
    let h = Harness::new("wquota", 2, SyncDirection::Export).await;
    let (_, factory) = scripted(Script::Fails(Class::QuotaSpent));
    let ctx = h.context(factory, None).await;
    let before = chrono::Utc::now();
    let (outcome, run) = h.run(&ctx).await;
    let JobOutcome::Retry { job, .. } = outcome else {
        panic!("expected a retry, got {outcome:?}");
    };
    // Longer than the longest tier: the message goes round the tiers until then.
    let not_before = job.not_before.unwrap();
    assert!(
        not_before >= before + chrono::Duration::seconds(7200),
        "{job:?}"
    );
    assert_eq!(run.status, RunStatus::Queued);
    // Stored to the microsecond.
    assert_eq!(
        (run.resume_at.unwrap() - not_before).num_microseconds(),
        Some(0)
    );
    // A 429 is pacing, not failure: no attempt used.
    assert_eq!(job.attempt, 0);

    // Past the reaper's grace since its last publish, but still waiting on purpose.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let grace = Duration::from_secs(1);
    let reaped =
        h.db.store
            .reap_stranded_runs(Duration::from_secs(600), grace, 10)
            .await
            .unwrap();
    assert!(reaped.is_empty(), "{reaped:?}");

    // Once it is overdue by more than the grace, its message is presumed lost.
    sqlx::query("UPDATE sync_runs SET resume_at = now() - interval '1 hour' WHERE id = $1")
        .bind(run.id)
        .execute(h.db.store.pool())
        .await
        .unwrap();
    let reaped =
        h.db.store
            .reap_stranded_runs(Duration::from_secs(600), grace, 10)
            .await
            .unwrap();
    assert_eq!(reaped.len(), 1);
}

#[tokio::test]
async fn draining_runs_every_waiting_job_in_process_and_dead_letters_garbage() {
    let h = Harness::new("wdrain", 3, SyncDirection::Export).await;
    let (connector, factory) = scripted(Script::Honest);
    let ctx = h.context(factory, None).await;
    let broker = h.broker().await;
    let run =
        h.db.store
            .create_manual_run(
                &h.integration,
                &[],
                "0af7651916cd43dd8448eb211c80319c",
                false,
            )
            .await
            .unwrap();
    passerelle::outbox::publish_runs(
        &h.db.store,
        &ctx.publisher,
        passerelle_queue::Lane::Manual,
        std::slice::from_ref(&run),
    )
    .await
    .unwrap();
    let garbage = passerelle_queue::Outgoing {
        body: b"{not a job".to_vec(),
        message_id: "garbage".into(),
        traceparent: None,
        headers: Vec::new(),
    };
    ctx.publisher
        .publish_jobs(passerelle_queue::Lane::Scheduled, &[garbage])
        .await
        .unwrap();

    let handled = passerelle::worker::drain_until_empty(&ctx, &broker)
        .await
        .unwrap();
    assert_eq!(handled, 1, "the malformed message is not a job");
    let run = h.db.store.run(run.id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(connector.sent(), ["1", "2", "3"]);
    let dead = broker
        .get_one(&broker.topology().dead_queue())
        .await
        .unwrap()
        .unwrap();
    let reason = passerelle_queue::header(&dead, passerelle_queue::REASON_HEADER).unwrap();
    assert!(reason.contains("malformed job message"), "{reason}");
    // Nothing left on either lane.
    assert_eq!(
        passerelle::worker::drain_until_empty(&ctx, &broker)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn the_scheduler_reads_what_is_due_from_the_stores_clock() {
    let h = Harness::new("wclock", 1, SyncDirection::Export).await;
    sqlx::query(
        "UPDATE integrations SET sync_frequency = 'hourly', next_sync_at = now() + interval '1 hour' WHERE id = $1",
    )
    .bind(h.integration.id)
    .execute(h.db.store.pool())
    .await
    .unwrap();
    let slot =
        h.db.store
            .integration(h.integration.id)
            .await
            .unwrap()
            .next_sync_at
            .unwrap();
    let clock = passerelle_core::ManualClock::new(chrono::Utc::now());
    let store = h.db.store.clone().with_clock(Arc::new(clock.clone()));
    let (_, factory) = scripted(Script::Honest);
    let ctx = h.context(factory, None).await;
    let tick = passerelle::scheduler::tick(&ctx.settings, &store, &ctx.publisher)
        .await
        .unwrap();
    assert_eq!(tick.enqueued, 0, "not due yet by the clock");
    clock.advance(chrono::Duration::minutes(61));
    let tick = passerelle::scheduler::tick(&ctx.settings, &store, &ctx.publisher)
        .await
        .unwrap();
    assert_eq!(tick.enqueued, 1);
    let runs = store
        .runs_for_integration(h.integration.id, 5)
        .await
        .unwrap();
    assert_eq!(runs[0].scheduled_for, Some(slot));
    // The next slot counts from this one, an hour on: schedules do not drift.
    let next = store
        .integration(h.integration.id)
        .await
        .unwrap()
        .next_sync_at
        .unwrap();
    assert_eq!(next - slot, chrono::Duration::hours(1));
}

fn product(external_id: &str, sku: &str, currency: Option<&str>) -> ImportedRecord {
    ImportedRecord::upsert(
        external_id.into(),
        None,
        passerelle_core::platform::ImportedData::Product {
            sku: sku.into(),
            name: format!("Product {external_id}"),
            description: None,
            price: rust_decimal::Decimal::new(1250, 2),
            currency: currency.map(str::to_owned),
            active: true,
        },
        serde_json::json!({"id": external_id, "sku": sku}),
    )
}

#[tokio::test]
async fn an_imported_page_lands_each_record_on_its_own_key_and_flags_two_on_one_row() {
    let h = Harness::new("wpage", 1, SyncDirection::Import).await;
    // The seeded product SKU-00001 is priced in EUR; make it GBP to see it kept.
    sqlx::query("UPDATE platform.products SET currency = 'GBP' WHERE sku = 'SKU-00001'")
        .execute(h.db.store.pool())
        .await
        .unwrap();
    let (connector, factory) = scripted(Script::Honest);
    *connector.import.lock().unwrap() = Some(ImportPage {
        records: vec![
            product("E-NEW", "NEW-1", Some("USD")),
            product("E-OLD", "SKU-00001", None),
            product("E-DUP", "NEW-1", Some("CHF")),
        ],
        rejected: Vec::new(),
        next_page: None,
    });
    let ctx = h.context(factory, None).await;
    let job = SyncJob {
        entities: vec![Entity::Product],
        ..h.job().await
    };
    run_job(&ctx, &job, &TraceParent::new_root()).await;
    let run = h.db.store.run(job.run_id).await.unwrap().unwrap();
    assert_eq!((run.records_synced, run.records_failed), (2, 1), "{run:?}");
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT sku, currency, name FROM platform.products WHERE tenant_id = $1 ORDER BY sku",
    )
    .bind(h.tenant)
    .fetch_all(h.db.store.pool())
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![
            ("NEW-1".into(), "USD".into(), "Product E-NEW".into()),
            ("SKU-00001".into(), "GBP".into(), "Product E-OLD".into()),
        ],
        "the first record of a key wins; a record without a currency keeps the row's"
    );
    let mapped: Vec<(String, String)> = sqlx::query_as(
        "SELECT external_id, internal_id FROM integration_mappings WHERE integration_id = $1 ORDER BY external_id",
    )
    .bind(h.integration.id)
    .fetch_all(h.db.store.pool())
    .await
    .unwrap();
    assert_eq!(mapped.len(), 2, "{mapped:?}");
    assert!(mapped.iter().all(|(e, _)| e != "E-DUP"), "{mapped:?}");
}

#[tokio::test]
async fn mapping_metadata_keeps_its_stored_shape_and_the_connector_sees_only_its_keys() {
    let h = Harness::new("wmeta", 1, SyncDirection::Bidirectional).await;
    let stored = || async {
        sqlx::query_scalar::<_, serde_json::Value>(
            "SELECT metadata FROM integration_mappings WHERE integration_id = $1",
        )
        .bind(h.integration.id)
        .fetch_one(h.db.store.pool())
        .await
        .unwrap()
    };
    let keys = |v: &serde_json::Value| {
        let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    let product_job = || async {
        SyncJob {
            entities: vec![Entity::Product],
            ..h.job().await
        }
    };
    // An export stores its digest and the connector's key, flat.
    let (connector, factory) = scripted(Script::Honest);
    let ctx = h.context(factory, None).await;
    run_job(&ctx, &product_job().await, &TraceParent::new_root()).await;
    let after_export = stored().await;
    assert_eq!(
        keys(&after_export),
        ["hash", "sync_token"],
        "{after_export}"
    );
    assert_eq!(after_export["sync_token"], "v1");
    // An import of the same record adds its digest; the export's keys stay (merged).
    *connector.import.lock().unwrap() = Some(ImportPage {
        records: vec![product("EXT-1", "SKU-00001", None)],
        rejected: Vec::new(),
        next_page: None,
    });
    run_job(&ctx, &product_job().await, &TraceParent::new_root()).await;
    let after_import = stored().await;
    assert_eq!(
        keys(&after_import),
        ["hash", "import_hash", "sync_token"],
        "{after_import}"
    );
    assert_eq!(after_import["hash"], after_export["hash"]);
    // Edited on the platform since (this connector's payload is the id alone, so the digest
    // is made stale by hand): the update carries the connector's keys only.
    sqlx::query("UPDATE platform.products SET name = 'edited' WHERE sku = 'SKU-00001'")
        .execute(h.db.store.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE integration_mappings SET metadata = metadata || '{\"hash\": \"stale\"}'")
        .execute(h.db.store.pool())
        .await
        .unwrap();
    run_job(&ctx, &product_job().await, &TraceParent::new_root()).await;
    let kept = connector.kept.lock().unwrap().clone();
    assert_eq!(kept.len(), 2, "one create, one update: {kept:?}");
    assert!(kept[0].is_empty(), "a create has no metadata: {kept:?}");
    assert_eq!(
        serde_json::Value::Object(kept[1].clone()),
        serde_json::json!({"sync_token": "v1"})
    );
    let after_update = stored().await;
    assert_eq!(
        keys(&after_update),
        ["hash", "import_hash", "sync_token"],
        "{after_update}"
    );
    assert_eq!(after_update["hash"], after_export["hash"], "{after_update}");
}

#[tokio::test]
async fn an_admins_cancel_stops_a_running_job_between_chunks_and_ends_its_run_cancelled() {
    let h = Harness::new("w_cancel", 30, SyncDirection::Export).await;
    let (connector, factory) = scripted(Script::Slow);
    let mut ctx = h.context(factory, None).await;
    // The heartbeat, which notices the request, beats every second.
    ctx.settings.worker.lease_ttl_secs = 3;
    let ctx = Arc::new(ctx);
    let job = h.job().await;
    let running = {
        let (ctx, job) = (ctx.clone(), job.clone());
        tokio::spawn(async move { run_job(&ctx, &job, &TraceParent::new_root()).await })
    };
    while connector.sent().is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let requested = h.db.store.cancel_run(h.tenant, job.run_id).await.unwrap();
    assert!(
        matches!(
            requested,
            Some(passerelle_store::CancelOutcome::Requested(_))
        ),
        "{requested:?}"
    );
    let outcome = running.await.unwrap();
    let JobOutcome::Continue { job: continuation } = outcome else {
        panic!("expected the job to stop at a chunk boundary and continue, got {outcome:?}");
    };
    let sent = connector.sent().len();
    assert!(
        sent < 30,
        "the job ran to the end ({sent} records) despite the cancel"
    );
    assert_eq!(
        sent % 2,
        0,
        "a chunk was cut in the middle ({sent} records sent)"
    );
    assert_eq!(
        h.mapped(MappingEntityType::Product).await,
        sent as i64,
        "what was sent is recorded"
    );
    // The continuation's start finishes the run `cancelled`; nothing more is sent.
    let outcome = run_job(&ctx, &continuation, &TraceParent::new_root()).await;
    assert!(matches!(outcome, JobOutcome::Done), "{outcome:?}");
    assert_eq!(connector.sent().len(), sent);
    let run = h.db.store.run(job.run_id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Cancelled);
    assert_eq!(run.records_synced, sent as i32);
    let integration = h.db.store.integration(h.integration.id).await.unwrap();
    assert_eq!((integration.total_syncs, integration.failed_syncs), (0, 0));
}

#[tokio::test]
async fn an_admins_cancel_stops_a_dry_run_between_pages() {
    let h = Harness::new("w_drycancel", 2, SyncDirection::Import).await;
    let (connector, factory) = scripted(Script::Slow);
    let mut ctx = h.context(factory, None).await;
    ctx.settings.worker.lease_ttl_secs = 3;
    let ctx = Arc::new(ctx);
    let run =
        h.db.store
            .create_manual_run(
                &h.integration,
                &[Entity::Product],
                "0af7651916cd43dd8448eb211c80319c",
                true,
            )
            .await
            .unwrap();
    let job = SyncJob {
        run_id: run.id,
        integration_id: h.integration.id,
        tenant_id: h.tenant,
        trigger: RunTrigger::Manual,
        entities: vec![Entity::Product],
        attempt: 0,
        continuation: None,
        not_before: None,
    };
    let running = {
        let (ctx, job) = (ctx.clone(), job.clone());
        tokio::spawn(async move { run_job(&ctx, &job, &TraceParent::new_root()).await })
    };
    while connector.sent().is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let requested = h.db.store.cancel_run(h.tenant, job.run_id).await.unwrap();
    assert!(
        matches!(
            requested,
            Some(passerelle_store::CancelOutcome::Requested(_))
        ),
        "{requested:?}"
    );
    // Endless pages: only the cancel ends it, handed back between two pages.
    let outcome = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the dry run ignored the cancel")
        .unwrap();
    let JobOutcome::Continue { job: next } = outcome else {
        panic!("expected the dry run to be handed back, got {outcome:?}");
    };
    let outcome = run_job(&ctx, &next, &TraceParent::new_root()).await;
    assert!(matches!(outcome, JobOutcome::Done), "{outcome:?}");
    let run = h.db.store.run(job.run_id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Cancelled);
    assert!(run.dry_run_report.is_none());
}
