//! Keeps the planner's statistics fresh on the tables a sync writes in bulk.
//!
//! The first sync of an integration writes tens of thousands of mappings and intents in
//! seconds. Autovacuum analyzes a table at most once a minute (`autovacuum_naptime`); until it
//! does, Postgres estimates "one row" for any integration and plans the chunk's mapping
//! lookup as a scan of every mapping the integration has, through the *external* id index.
//! Each chunk then costs more than the last (measured: 107 ms per 500-row lookup at 40,000
//! mappings, most of a 13 s run). So after chunk commits, the store checks (at most once a
//! second per process, in the background) whether a hot table changed by more than
//! [`MIN_CHANGES`] rows and [`CHANGED_SHARE`] of its size since it was last analyzed, and
//! analyzes it. A transaction-scoped advisory lock keeps it to one `ANALYZE` per table at a
//! time across the fleet; `ANALYZE` takes no lock that blocks reads or writes.

use crate::{Store, StoreError};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The tables whose statistics the sync path's plans depend on. A fixed list: the names are
/// spliced into `ANALYZE`, which takes no bind parameters.
pub const HOT_TABLES: [&str; 2] = ["integration_mappings", "sync_intents"];

/// Changed rows below which a table is left to autovacuum.
pub const MIN_CHANGES: i64 = 1_000;
/// Share of the table that must have changed since the last analyze.
pub const CHANGED_SHARE: f64 = 0.2;
/// How often one process looks at `pg_stat_user_tables` at most.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Namespace of the advisory locks that serialize `ANALYZE` per table (the key's high half).
const LOCK_NAMESPACE: i32 = 0x5053_4c41; // "PSLA"

#[derive(Debug, Default)]
pub(crate) struct StatisticsKeeper {
    running: AtomicBool,
    last_check: Mutex<Option<Instant>>,
}

impl StatisticsKeeper {
    /// Claims the right to check now: not while a check runs, not more than once a second.
    fn claim(&self) -> bool {
        let mut last = self.last_check.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < CHECK_EVERY) {
            return false;
        }
        if self.running.swap(true, Ordering::AcqRel) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    fn done(&self) {
        self.running.store(false, Ordering::Release);
    }
}

impl Store {
    /// Called after a chunk commits: starts a background statistics check when one is due.
    /// Never delays the caller; a failed check is logged and retried a second later.
    pub(crate) fn after_bulk_write(&self) {
        if !self.statistics.claim() {
            return;
        }
        let store = self.clone();
        tokio::spawn(async move {
            if let Err(e) = store.refresh_statistics().await {
                tracing::warn!(error = %e, "cannot refresh table statistics; autovacuum will");
            }
            store.statistics.done();
        });
    }

    /// Analyzes each hot table that changed enough since its last analyze (see the module
    /// documentation). Returns the tables analyzed by this call.
    pub async fn refresh_statistics(&self) -> Result<Vec<&'static str>, StoreError> {
        let stale: Vec<String> = sqlx::query_scalar(
            "SELECT relname::text FROM pg_stat_user_tables
              WHERE schemaname = current_schema() AND relname = ANY($1)
                AND n_mod_since_analyze >= $2
                AND n_mod_since_analyze >= $3 * GREATEST(n_live_tup, 0)",
        )
        .bind(&HOT_TABLES[..])
        .bind(MIN_CHANGES)
        .bind(CHANGED_SHARE)
        .fetch_all(&self.pool)
        .await?;
        let mut analyzed = Vec::new();
        for table in HOT_TABLES {
            if !stale.iter().any(|t| t == table) {
                continue;
            }
            let mut tx = self.pool.begin().await?;
            let locked: bool =
                sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1, hashtext($2))")
                    .bind(LOCK_NAMESPACE)
                    .bind(table)
                    .fetch_one(&mut *tx)
                    .await?;
            if locked {
                // `table` is one of HOT_TABLES, never input.
                sqlx::query(sqlx::AssertSqlSafe(format!("ANALYZE {table}")))
                    .execute(&mut *tx)
                    .await?;
                analyzed.push(table);
                tracing::debug!(table, "analyzed after bulk writes");
            }
            tx.commit().await?;
        }
        Ok(analyzed)
    }
}
