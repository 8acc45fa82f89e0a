//! The seed's model behaviour, against real Postgres.

use crate::support::*;
use chrono::{Duration, TimeZone, Utc};
use passerelle_core::{
    IntegrationId, IntegrationStatus, IntegrationType, LogAction, LogDirection, LogEntityType,
    LogStatus, MappingEntityType, SyncFrequency,
};
use passerelle_store::{IntegrationPatch, LogFilter, MappingFilter, NewIntegration, NewLog};
use serde_json::json;

fn t0() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 2, 10, 0, 0).unwrap()
}

async fn integration(db: &TestDb, frequency: SyncFrequency) -> passerelle_store::Integration {
    let tenant = db.tenant("Acme").await;
    let mut new = NewIntegration::new(tenant, "ERP", IntegrationType::Xero);
    new.sync_frequency = frequency;
    db.store.create_integration(None, new).await.unwrap()
}

async fn activate(
    db: &TestDb,
    id: IntegrationId,
    now: chrono::DateTime<Utc>,
) -> passerelle_store::Integration {
    let patch = IntegrationPatch {
        status: Some(IntegrationStatus::Active),
        ..Default::default()
    };
    db.store
        .update_integration(None, id, patch, now)
        .await
        .unwrap()
}

#[tokio::test]
async fn can_sync_and_needs_sync_follow_status_schedule_and_soft_delete() {
    let db = TestDb::migrated("model").await;
    let i = integration(&db, SyncFrequency::Hourly).await;
    assert!(!i.can_sync(), "inactive by default");
    assert!(!i.needs_sync(t0()));
    let i = activate(&db, i.id, t0()).await;
    assert!(i.can_sync());
    assert_eq!(
        i.next_sync_at,
        Some(t0()),
        "activation makes a scheduled integration due at once"
    );
    assert!(i.needs_sync(t0()));
    assert_eq!(
        db.store
            .integrations_needing_sync(t0(), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    db.store.update_next_sync(i.id, t0()).await.unwrap();
    let i = db.store.integration(i.id).await.unwrap();
    assert!(!i.needs_sync(t0() + Duration::minutes(59)));
    assert!(i.needs_sync(t0() + Duration::hours(1)));
    assert!(
        db.store
            .integrations_needing_sync(t0() + Duration::minutes(59), 10)
            .await
            .unwrap()
            .is_empty()
    );

    let manual = integration(&db, SyncFrequency::Manual).await;
    let manual = activate(&db, manual.id, t0()).await;
    assert!(manual.can_sync() && !manual.needs_sync(t0() + Duration::days(30)));

    let deleted = db.store.soft_delete_integration(i.id, t0()).await.unwrap();
    assert!(!deleted.can_sync());
    assert!(deleted.deleted_at.is_some());
    assert!(
        db.store
            .list_integrations(None, None, None)
            .await
            .unwrap()
            .iter()
            .all(|x| x.id != i.id)
    );
    assert!(
        db.store
            .integrations_needing_sync(t0() + Duration::days(1), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn update_next_sync_counts_from_the_scheduled_time_so_it_does_not_drift() {
    let db = TestDb::migrated("sched").await;
    for (frequency, period) in [
        (SyncFrequency::Hourly, Duration::hours(1)),
        (SyncFrequency::Daily, Duration::days(1)),
        (SyncFrequency::Weekly, Duration::weeks(1)),
    ] {
        let i = integration(&db, frequency).await;
        activate(&db, i.id, t0()).await;
        // Picked up 7 minutes late, then 3 minutes late: the slot stays on the hour.
        let first = db
            .store
            .update_next_sync(i.id, t0() + Duration::minutes(7))
            .await
            .unwrap();
        assert_eq!(first, Some(t0() + period));
        let second = db
            .store
            .update_next_sync(i.id, t0() + period + Duration::minutes(3))
            .await
            .unwrap();
        assert_eq!(second, Some(t0() + period * 2), "{frequency}");
        // Down for several periods: missed slots are skipped, not replayed.
        let later = db
            .store
            .update_next_sync(i.id, t0() + period * 5 + Duration::seconds(1))
            .await
            .unwrap();
        assert_eq!(later, Some(t0() + period * 6), "{frequency}");
    }
}

#[tokio::test]
async fn record_sync_counts_runs_and_sets_error_after_n_consecutive_failures() {
    let db = TestDb::migrated("record").await;
    let i = integration(&db, SyncFrequency::Manual).await;
    activate(&db, i.id, t0()).await;
    let r = db
        .store
        .record_sync(i.id, true, None, t0(), 3)
        .await
        .unwrap();
    assert_eq!(
        (
            r.integration.total_syncs,
            r.integration.successful_syncs,
            r.integration.failed_syncs
        ),
        (1, 1, 0)
    );
    assert_eq!(r.integration.last_sync_at, Some(t0()));
    let r = db
        .store
        .record_sync(i.id, false, Some("HTTP 500"), t0(), 3)
        .await
        .unwrap();
    assert_eq!(r.integration.last_error.as_deref(), Some("HTTP 500"));
    assert_eq!(r.integration.status, IntegrationStatus::Active);
    let r = db
        .store
        .record_sync(i.id, false, Some("HTTP 502"), t0(), 3)
        .await
        .unwrap();
    assert!(!r.entered_error);
    let r = db
        .store
        .record_sync(i.id, false, Some("HTTP 503"), t0(), 3)
        .await
        .unwrap();
    assert!(
        r.entered_error,
        "third consecutive failure crosses the threshold"
    );
    assert_eq!(r.integration.status, IntegrationStatus::Error);
    assert_eq!(
        (
            r.integration.total_syncs,
            r.integration.successful_syncs,
            r.integration.failed_syncs
        ),
        (4, 1, 3)
    );
    assert!((r.integration.success_rate() - 25.0).abs() < 1e-9);
    let r = db
        .store
        .record_sync(i.id, false, Some("again"), t0(), 3)
        .await
        .unwrap();
    assert!(
        !r.entered_error,
        "the alert fires once, when the threshold is crossed"
    );

    // A success in between resets the streak.
    let j = integration(&db, SyncFrequency::Manual).await;
    activate(&db, j.id, t0()).await;
    for ok in [false, false, true, false, false] {
        db.store
            .record_sync(j.id, ok, (!ok).then_some("x"), t0(), 3)
            .await
            .unwrap();
    }
    let j = db.store.integration(j.id).await.unwrap();
    assert_eq!(j.status, IntegrationStatus::Active);
    assert_eq!(j.consecutive_failures, 2);
}

#[tokio::test]
async fn concurrent_record_sync_loses_no_count() {
    let db = TestDb::migrated("recordc").await;
    let i = integration(&db, SyncFrequency::Manual).await;
    let mut tasks = Vec::new();
    for n in 0..40 {
        let store = db.store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .record_sync(i.id, n % 4 != 0, Some("x"), t0(), 1000)
                .await
                .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let i = db.store.integration(i.id).await.unwrap();
    assert_eq!(
        (i.total_syncs, i.successful_syncs, i.failed_syncs),
        (40, 30, 10)
    );
}

#[test]
fn success_rate_is_zero_before_the_first_run() {
    // Pure method; the counters come from the row.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let db = TestDb::migrated("rate").await;
        let i = integration(&db, SyncFrequency::Manual).await;
        assert_eq!(i.success_rate(), 0.0);
    });
}

fn meta(value: serde_json::Value) -> passerelle_core::MappingMeta {
    serde_json::from_value(value).unwrap()
}

#[tokio::test]
async fn map_ids_upserts_on_either_unique_key_without_constraint_errors() {
    let db = TestDb::migrated("map").await;
    let i = integration(&db, SyncFrequency::Manual).await;
    let s = &db.store;
    let order = MappingEntityType::Order;
    s.map_ids(&i, order, "1", "SO-1", None, t0()).await.unwrap();
    // Same internal id, new external id: updated, not duplicated.
    let m = s
        .map_ids(
            &i,
            order,
            "1",
            "SO-1b",
            Some(&meta(json!({"sync_token": "2"}))),
            t0(),
        )
        .await
        .unwrap();
    assert_eq!(m.external_id, "SO-1b");
    assert_eq!(
        s.external_id(i.id, order, "1").await.unwrap().as_deref(),
        Some("SO-1b")
    );
    assert_eq!(s.internal_id(i.id, order, "SO-1").await.unwrap(), None);
    // Same external id claimed by another internal row: it moves there.
    s.map_ids(&i, order, "2", "SO-1b", None, t0())
        .await
        .unwrap();
    assert_eq!(
        s.internal_id(i.id, order, "SO-1b")
            .await
            .unwrap()
            .as_deref(),
        Some("2")
    );
    assert_eq!(s.external_id(i.id, order, "1").await.unwrap(), None);
    // Both keys already taken by two different rows: merged into one.
    s.map_ids(&i, order, "3", "SO-3", None, t0()).await.unwrap();
    s.map_ids(&i, order, "3", "SO-1b", None, t0())
        .await
        .unwrap();
    assert_eq!(
        s.internal_id(i.id, order, "SO-1b")
            .await
            .unwrap()
            .as_deref(),
        Some("3")
    );
    assert_eq!(s.external_id(i.id, order, "2").await.unwrap(), None);
    // The same ids under another entity type are independent.
    s.map_ids(&i, MappingEntityType::Product, "3", "SO-1b", None, t0())
        .await
        .unwrap();
    let all = s
        .mappings(
            &MappingFilter {
                integration_id: Some(i.id),
                ..Default::default()
            },
            t0(),
        )
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    // Metadata survives an update that does not carry any.
    s.map_ids(&i, order, "9", "SO-9", Some(&meta(json!({"v": 1}))), t0())
        .await
        .unwrap();
    let m = s.map_ids(&i, order, "9", "SO-9", None, t0()).await.unwrap();
    assert_eq!(m.metadata, Some(json!({"v": 1})));
}

#[tokio::test]
async fn mapping_metadata_of_a_shape_never_written_is_an_error_naming_the_row() {
    let db = TestDb::migrated("mapmeta").await;
    let i = integration(&db, SyncFrequency::Manual).await;
    let s = &db.store;
    let order = MappingEntityType::Order;
    s.map_ids(&i, order, "1", "SO-1", None, t0()).await.unwrap();
    s.map_ids(&i, order, "2", "SO-2", None, t0()).await.unwrap();
    sqlx::query(
        "UPDATE integration_mappings SET metadata = CASE internal_id
            WHEN '1' THEN '{\"hash\": 5}'::jsonb ELSE 'null'::jsonb END",
    )
    .execute(s.pool())
    .await
    .unwrap();
    // A JSON null is no metadata; a hash that is not text is refused, naming the mapping.
    let known = s.mappings_of(i.id, order, &["2".into()]).await.unwrap();
    assert_eq!(known["2"].metadata, None);
    let err = s.mappings_of(i.id, order, &["1".into()]).await.unwrap_err();
    assert!(
        matches!(err, passerelle_store::StoreError::CorruptMapping { .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains("SO-1") && text.contains("order"), "{text}");
    let err = s
        .mappings_by_external(i.id, order, &["SO-1".into()])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("SO-1"), "{err}");
}

#[tokio::test]
async fn concurrent_map_ids_on_the_same_keys_never_fail() {
    let db = TestDb::migrated("mapc").await;
    let i = integration(&db, SyncFrequency::Manual).await;
    let mut tasks = Vec::new();
    for n in 0..24 {
        let store = db.store.clone();
        let i = i.clone();
        tasks.push(tokio::spawn(async move {
            let internal = (n % 3).to_string();
            store
                .map_ids(
                    &i,
                    MappingEntityType::Customer,
                    &internal,
                    "C-1",
                    None,
                    t0(),
                )
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let all = db
        .store
        .mappings(
            &MappingFilter {
                integration_id: Some(i.id),
                ..Default::default()
            },
            t0(),
        )
        .await
        .unwrap();
    assert_eq!(
        all.len(),
        1,
        "one ERP record maps to exactly one platform row: {all:?}"
    );
}

#[tokio::test]
async fn mapping_scopes_and_needs_sync() {
    let db = TestDb::migrated("maps").await;
    let a = integration(&db, SyncFrequency::Manual).await;
    let b = integration(&db, SyncFrequency::Manual).await;
    let s = &db.store;
    s.map_ids(
        &a,
        MappingEntityType::Product,
        "1",
        "P1",
        None,
        t0() - Duration::hours(30),
    )
    .await
    .unwrap();
    let fresh = s
        .map_ids(
            &a,
            MappingEntityType::Product,
            "2",
            "P2",
            None,
            t0() - Duration::hours(1),
        )
        .await
        .unwrap();
    s.map_ids(&a, MappingEntityType::Customer, "1", "C1", None, t0())
        .await
        .unwrap();
    s.map_ids(&b, MappingEntityType::Product, "1", "P1", None, t0())
        .await
        .unwrap();
    let f = |integration_id, tenant_id, entity_type, synced_within_hours| MappingFilter {
        integration_id,
        tenant_id,
        entity_type,
        synced_within_hours,
        limit: None,
    };
    assert_eq!(
        s.mappings(&f(Some(a.id), None, None, None), t0())
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        s.mappings(&f(None, Some(b.tenant_id), None, None), t0())
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        s.mappings(
            &f(Some(a.id), None, Some(MappingEntityType::Product), None),
            t0()
        )
        .await
        .unwrap()
        .len(),
        2
    );
    assert_eq!(
        s.mappings(
            &f(Some(a.id), None, Some(MappingEntityType::Product), Some(24)),
            t0()
        )
        .await
        .unwrap()
        .len(),
        1
    );
    assert!(!fresh.needs_sync(24, t0()));
    assert!(fresh.needs_sync(24, t0() + Duration::hours(24)));
    s.mark_mapping_synced(fresh.id, t0() + Duration::hours(24))
        .await
        .unwrap();
    let again = s
        .mappings(
            &f(Some(a.id), None, Some(MappingEntityType::Product), Some(1)),
            t0() + Duration::hours(24),
        )
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, fresh.id);
}

#[tokio::test]
async fn log_scopes_filter_by_integration_tenant_entity_status_and_age() {
    let db = TestDb::migrated("logs").await;
    let a = integration(&db, SyncFrequency::Manual).await;
    let b = integration(&db, SyncFrequency::Manual).await;
    let log = |i: &passerelle_store::Integration, entity, status| NewLog {
        integration_id: i.id,
        tenant_id: i.tenant_id,
        entity_type: entity,
        entity_id: Some("1".into()),
        external_id: None,
        action: LogAction::Create,
        direction: LogDirection::Export,
        status,
        request_data: Some(json!({"order_number": "A-1"})),
        response_data: None,
        error_message: (status == LogStatus::Failed).then(|| "rejected".into()),
        duration_ms: Some(12),
    };
    let s = &db.store;
    s.insert_logs(
        s.pool(),
        &[
            log(&a, LogEntityType::Order, LogStatus::Success),
            log(&a, LogEntityType::Order, LogStatus::Failed),
        ],
        t0() - Duration::hours(48),
    )
    .await
    .unwrap();
    s.create_log(log(&a, LogEntityType::Product, LogStatus::Success), t0())
        .await
        .unwrap();
    s.create_log(log(&b, LogEntityType::Order, LogStatus::Failed), t0())
        .await
        .unwrap();
    let q = |filter: LogFilter| async move { s.logs(&filter, t0()).await.unwrap() };
    assert_eq!(
        q(LogFilter {
            integration_id: Some(a.id),
            ..Default::default()
        })
        .await
        .len(),
        3
    );
    assert_eq!(
        q(LogFilter {
            tenant_id: Some(b.tenant_id),
            ..Default::default()
        })
        .await
        .len(),
        1
    );
    assert_eq!(
        q(LogFilter {
            integration_id: Some(a.id),
            entity_type: Some(LogEntityType::Order),
            ..Default::default()
        })
        .await
        .len(),
        2
    );
    let failed = q(LogFilter {
        integration_id: Some(a.id),
        status: Some(LogStatus::Failed),
        ..Default::default()
    })
    .await;
    assert_eq!(failed.len(), 1);
    assert!(!failed[0].was_successful());
    assert_eq!(
        q(LogFilter {
            integration_id: Some(a.id),
            status: Some(LogStatus::Success),
            ..Default::default()
        })
        .await
        .len(),
        2
    );
    let recent = q(LogFilter {
        integration_id: Some(a.id),
        recent_hours: Some(24),
        ..Default::default()
    })
    .await;
    assert_eq!(recent.len(), 1);
    assert_eq!(recent[0].entity_type, Some(LogEntityType::Product));
}

#[tokio::test]
async fn bulk_written_mapping_tables_are_analyzed_without_waiting_for_autovacuum() {
    let db = TestDb::migrated("stats").await;
    let i = integration(&db, SyncFrequency::Hourly).await;
    let analyzed = |db: &TestDb| {
        let pool = db.store.pool().clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'integration_mappings'",
            )
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    // Autovacuum must not get there first (this database is the test's own).
    sqlx::query("ALTER TABLE integration_mappings SET (autovacuum_enabled = false)")
        .execute(db.store.pool())
        .await
        .unwrap();
    // Below the threshold: left to autovacuum.
    assert!(db.store.refresh_statistics().await.unwrap().is_empty());
    sqlx::query(
        "INSERT INTO integration_mappings (integration_id, tenant_id, entity_type, internal_id, external_id)
         SELECT $1, $2, 'order', g::text, 'EXT-' || g FROM generate_series(1, 3000) g",
    )
    .bind(i.id)
    .bind(i.tenant_id)
    .execute(db.store.pool())
    .await
    .unwrap();
    // The server publishes table counters with a delay of up to a few seconds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let tables = loop {
        let tables = db.store.refresh_statistics().await.unwrap();
        if !tables.is_empty() || std::time::Instant::now() > deadline {
            break tables;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(tables, vec!["integration_mappings"]);
    assert_eq!(analyzed(&db).await, 1);
    // Analyzed: nothing more to do until the table changes again by enough.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(db.store.refresh_statistics().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_chunk_of_logs_beyond_the_parameter_limit_goes_in_whole_with_every_field() {
    // 5,000 rows: a VALUES list with 14 parameters per row would exceed Postgres' 65,535.
    let db = TestDb::migrated("logbulk").await;
    let i = integration(&db, SyncFrequency::Manual).await;
    let logs: Vec<NewLog> = (0..5000)
        .map(|n| NewLog {
            integration_id: i.id,
            tenant_id: i.tenant_id,
            entity_type: if n % 2 == 0 {
                LogEntityType::Order
            } else {
                LogEntityType::Inventory
            },
            entity_id: Some(n.to_string()),
            external_id: (n % 3 == 0).then(|| format!("EXT-{n}")),
            action: LogAction::Update,
            direction: LogDirection::Import,
            status: if n == 4999 {
                LogStatus::Failed
            } else {
                LogStatus::Success
            },
            request_data: (n % 5 != 0).then(|| json!({"n": n, "text": "l'été \"quoted\""})),
            response_data: (n % 7 == 0).then(|| json!([n, null])),
            error_message: (n == 4999).then(|| "refused: SKU unknown".into()),
            duration_ms: (n % 11 != 0).then_some(n),
        })
        .collect();
    let s = &db.store;
    assert_eq!(s.insert_logs(s.pool(), &logs, t0()).await.unwrap(), 5000);
    let all = s
        .logs(
            &LogFilter {
                integration_id: Some(i.id),
                ..Default::default()
            },
            t0(),
        )
        .await
        .unwrap();
    assert_eq!(all.len(), 5000);
    for log in all.iter().filter(|l| {
        ["0", "21", "4998", "4999", "35"].contains(&l.entity_id.as_deref().unwrap_or(""))
    }) {
        let n: i32 = log.entity_id.as_deref().unwrap().parse().unwrap();
        let want = &logs[n as usize];
        assert_eq!(log.entity_type, Some(want.entity_type));
        assert_eq!(log.external_id, want.external_id);
        assert_eq!(log.action, Some(LogAction::Update));
        assert_eq!(log.direction, Some(LogDirection::Import));
        assert_eq!(log.status, Some(want.status));
        assert_eq!(log.request_data, want.request_data);
        assert_eq!(log.response_data, want.response_data);
        assert_eq!(log.error_message, want.error_message);
        assert_eq!(log.duration_ms, want.duration_ms);
        assert_eq!(log.created_at, t0());
    }
}

#[tokio::test]
async fn an_intent_already_recorded_stays_in_force_and_is_the_only_one_read_back() {
    let db = TestDb::migrated("intents").await;
    let i = integration(&db, SyncFrequency::Manual).await;
    let s = &db.store;
    let run: passerelle_core::RunId = sqlx::query_scalar(
        "INSERT INTO sync_runs (id, integration_id, tenant_id, trigger) VALUES (gen_random_uuid(), $1, $2, 'manual') RETURNING id",
    )
    .bind(i.id)
    .bind(i.tenant_id)
    .fetch_one(s.pool())
    .await
    .unwrap();
    let first_body = json!({"order_number": "A-1", "total": "10.00"});
    let intent = |id, key, body| passerelle_store::sync::NewIntent {
        internal_id: id,
        idempotency_key: key,
        request: body,
    };
    let entity = passerelle_core::Entity::Order;
    let fresh = s
        .record_intents(i.id, entity, run, &[intent("1", "key-1", &first_body)])
        .await
        .unwrap();
    assert!(fresh.is_empty(), "recorded as given: {fresh:?}");
    // A second attempt (another chunk, or a redelivered job) with new keys and bodies.
    let later_body = json!({"order_number": "A-1", "total": "12.00"});
    let other_body = json!({"order_number": "A-2"});
    let in_force = s
        .record_intents(
            i.id,
            entity,
            run,
            &[
                intent("1", "key-1b", &later_body),
                intent("2", "key-2", &other_body),
            ],
        )
        .await
        .unwrap();
    assert_eq!(in_force.len(), 1, "{in_force:?}");
    let kept = &in_force["1"];
    assert_eq!(kept.idempotency_key, "key-1");
    assert_eq!(kept.request, first_body);
    assert!(kept.recorded_at.is_some());
    // Both are stored, each with its first key and body.
    let stored = s
        .intents_of(i.id, entity, &["1".into(), "2".into()])
        .await
        .unwrap();
    assert_eq!(stored["1"].idempotency_key, "key-1");
    assert_eq!(stored["1"].request, first_body);
    assert_eq!(stored["2"].idempotency_key, "key-2");
    assert_eq!(stored["2"].request, other_body);
}
