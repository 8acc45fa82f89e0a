//! The fleet-wide rate limiter against real Postgres, with many concurrent callers.

use crate::support::*;
use passerelle_core::IntegrationType;
use passerelle_store::Store;
use passerelle_store::limiter::{AccountLimit, Admission, LimitSpec, WaitReason};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// What the worker's gate does for one account: ask, sleep until the slot, or wait and ask
/// again. Returns the permit and the slot the limiter granted (when the request may start).
async fn acquire_slot(
    store: &Store,
    account: &str,
    spec: &LimitSpec,
) -> (Option<uuid::Uuid>, Instant) {
    let only = AccountLimit {
        connector: IntegrationType::Xero,
        account,
        spec: *spec,
    };
    let (permits, slot) = acquire_all(store, &[only]).await;
    (permits.first().copied(), slot)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_callers_never_exceed_the_limit_in_any_window() {
    let db = TestDb::migrated("rl").await;
    // 40 requests per second, as RateLimits::per_second(40) paces them.
    let limits = passerelle_connectors::RateLimits::per_second(40);
    let spec = LimitSpec {
        interval: limits.interval(),
        per_day: None,
        concurrency: None,
    };
    let starts = Arc::new(std::sync::Mutex::new(Vec::new()));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = db.store.clone();
        let starts = starts.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..20 {
                // The granted slot, not when this task happened to wake up: on a loaded machine
                // wake-ups lag, which the limiter's 2% margin absorbs at the ERP.
                let (_, slot) = acquire_slot(&store, "tenant-a", &spec).await;
                starts.lock().unwrap().push(slot.duration_since(t0));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut starts = starts.lock().unwrap().clone();
    starts.sort();
    assert_eq!(starts.len(), 160);
    for (i, s) in starts.iter().enumerate() {
        let in_window = starts[i..]
            .iter()
            // 50 ms less than the window: the slots are measured here, after the admission's
            // answer travelled back, and that travel time varies on a loaded machine.
            .take_while(|t| **t < *s + Duration::from_millis(950))
            .count();
        assert!(
            in_window <= 40,
            "{in_window} requests started within one second from {s:?}"
        );
    }
    // And the limit is used, not wasted: 160 requests at 40/s take about 4 s.
    let span = *starts.last().unwrap() - starts[0];
    assert!(span < Duration::from_millis(4300), "too slow: {span:?}");
    assert!(span >= Duration::from_millis(3900), "too fast: {span:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_concurrency_cap_holds_across_callers() {
    let db = TestDb::migrated("rlc").await;
    let spec = LimitSpec {
        interval: Duration::ZERO,
        per_day: None,
        concurrency: Some(3),
    };
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (store, in_flight, peak) = (db.store.clone(), in_flight.clone(), peak.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..3 {
                let permit = acquire_slot(&store, "tenant-c", &spec)
                    .await
                    .0
                    .expect("a permit");
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                store.release_permits(&[permit]).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(peak.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn the_daily_quota_and_a_429_block_apply_to_everyone() {
    let db = TestDb::migrated("rlq").await;
    let s = &db.store;
    let spec = LimitSpec {
        interval: Duration::ZERO,
        per_day: Some(3),
        concurrency: None,
    };
    for _ in 0..3 {
        assert!(matches!(
            s.admit(
                passerelle_store::limiter::AccountLimit {
                    connector: IntegrationType::Xero,
                    account: "q",
                    spec
                },
                Duration::ZERO,
                "t",
                Duration::from_secs(5)
            )
            .await
            .unwrap(),
            Admission::Granted { .. }
        ));
    }
    match s
        .admit(
            passerelle_store::limiter::AccountLimit {
                connector: IntegrationType::Xero,
                account: "q",
                spec,
            },
            Duration::from_secs(5),
            "t",
            Duration::from_secs(5),
        )
        .await
        .unwrap()
    {
        Admission::Wait {
            retry_in,
            reason: WaitReason::DailyQuota,
        } => assert!(retry_in <= Duration::from_secs(86_400)),
        other => panic!("expected the daily quota, got {other:?}"),
    }
    // Another account is not affected.
    let free = LimitSpec {
        interval: Duration::ZERO,
        per_day: None,
        concurrency: None,
    };
    assert!(matches!(
        s.admit(
            passerelle_store::limiter::AccountLimit {
                connector: IntegrationType::Xero,
                account: "other",
                spec: free
            },
            Duration::ZERO,
            "t",
            Duration::from_secs(5)
        )
        .await
        .unwrap(),
        Admission::Granted { .. }
    ));
    // A 429 blocks the account for every caller, and a shorter block never shortens it.
    s.block_account(IntegrationType::Xero, "other", Duration::from_secs(2))
        .await
        .unwrap();
    s.block_account(IntegrationType::Xero, "other", Duration::from_millis(10))
        .await
        .unwrap();
    match s
        .admit(
            passerelle_store::limiter::AccountLimit {
                connector: IntegrationType::Xero,
                account: "other",
                spec: free,
            },
            Duration::from_millis(500),
            "t",
            Duration::from_secs(5),
        )
        .await
        .unwrap()
    {
        Admission::Wait {
            retry_in,
            reason: WaitReason::Blocked,
        } => assert!(retry_in > Duration::from_millis(1500), "{retry_in:?}"),
        other => panic!("expected the block, got {other:?}"),
    }
    match s
        .admit(
            passerelle_store::limiter::AccountLimit {
                connector: IntegrationType::Xero,
                account: "other",
                spec: free,
            },
            Duration::from_secs(5),
            "t",
            Duration::from_secs(5),
        )
        .await
        .unwrap()
    {
        Admission::Granted { start_in, .. } => {
            assert!(start_in > Duration::from_millis(1500), "{start_in:?}")
        }
        other => panic!("expected a slot after the block, got {other:?}"),
    }
}

/// The same under several accounts at once, as a QuickBooks batch (realm and batch
/// allowance) or a Xero call (tenant and app) does; the permits and the granted slot.
async fn acquire_all(store: &Store, accounts: &[AccountLimit<'_>]) -> (Vec<uuid::Uuid>, Instant) {
    loop {
        match store
            .admit_all(
                accounts,
                Duration::from_secs(30),
                "test",
                Duration::from_secs(30),
            )
            .await
            .unwrap()
        {
            Admission::Granted { start_in, permits } => {
                let slot = Instant::now() + start_in;
                tokio::time::sleep(start_in).await;
                return (permits, slot);
            }
            Admission::Wait { retry_in, .. } => {
                tokio::time::sleep(retry_in.min(Duration::from_millis(20))).await
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_under_two_accounts_counts_against_both_and_never_deadlocks() {
    let db = TestDb::migrated("rl2").await;
    // The shared account ("app") allows 40/s and 4 at once; each of two tenants 30/s. Callers
    // name the accounts in opposite orders, which must not deadlock.
    let app = LimitSpec {
        interval: passerelle_connectors::RateLimits::per_second(40).interval(),
        per_day: None,
        concurrency: Some(4),
    };
    let tenant = LimitSpec {
        interval: passerelle_connectors::RateLimits::per_second(30).interval(),
        per_day: None,
        concurrency: None,
    };
    let starts = Arc::new(std::sync::Mutex::new(Vec::new()));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for n in 0..8 {
        let (store, starts) = (db.store.clone(), starts.clone());
        let (in_flight, peak) = (in_flight.clone(), peak.clone());
        tasks.push(tokio::spawn(async move {
            let tenant_name = if n % 2 == 0 { "tenant-a" } else { "tenant-b" };
            let own = AccountLimit {
                connector: IntegrationType::Xero,
                account: tenant_name,
                spec: tenant,
            };
            let shared = AccountLimit {
                connector: IntegrationType::Xero,
                account: "app",
                spec: app,
            };
            let accounts = if n % 4 < 2 {
                [own, shared]
            } else {
                [shared, own]
            };
            for _ in 0..15 {
                let (permits, slot) = acquire_all(&store, &accounts).await;
                assert_eq!(permits.len(), 1, "only the app caps concurrency");
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                starts
                    .lock()
                    .unwrap()
                    .push((slot.duration_since(t0), tenant_name));
                tokio::time::sleep(Duration::from_millis(20)).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                store.release_permits(&permits).await.unwrap();
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("no deadlock")
            .unwrap();
    }
    let mut starts = starts.lock().unwrap().clone();
    starts.sort();
    assert_eq!(starts.len(), 120);
    let most_in_a_second = |filter: &dyn Fn(&str) -> bool| {
        let picked: Vec<Duration> = starts
            .iter()
            .filter(|(_, t)| filter(t))
            .map(|(at, _)| *at)
            .collect();
        (0..picked.len())
            .map(|i| {
                picked[i..]
                    .iter()
                    .take_while(|t| **t < picked[i] + Duration::from_millis(950))
                    .count()
            })
            .max()
            .unwrap_or(0)
    };
    // The app's limit holds over both tenants together, and each tenant's own.
    assert!(most_in_a_second(&|_| true) <= 40, "app over its limit");
    assert!(
        most_in_a_second(&|t| t == "tenant-a") <= 30,
        "tenant-a over its limit"
    );
    assert!(
        most_in_a_second(&|t| t == "tenant-b") <= 30,
        "tenant-b over its limit"
    );
    assert!(
        peak.load(Ordering::SeqCst) <= 4,
        "the app's concurrency cap"
    );
    // 120 requests at the app's 40/s take about 3 s: the shared limit binds, not a tenant's.
    let span = starts.last().unwrap().0 - starts[0].0;
    assert!(span >= Duration::from_millis(2_800), "{span:?}");
}
