//! `passerelle vault rotate`: re-seal every stored credential under the active key.
//!
//! Works in batches, each its own transaction holding row locks (`FOR UPDATE SKIP LOCKED`, so
//! a worker storing a refreshed token is never overwritten and never blocks the rotation). An
//! interrupted rotation loses nothing: every row is either still sealed under its old key or
//! already under the new one, both of which the ring opens. Running it again resumes where it
//! stopped, since it only selects rows not yet under the active key.

use crate::{Store, StoreError};
use passerelle_core::vault::{CredentialOwner, SealedCredentials, Vault};
use passerelle_core::{IntegrationId, TenantId};

/// What one rotation pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RotationReport {
    pub rotated: u64,
    /// Rows that could not be opened (missing key, tampered): left untouched and listed.
    pub failed: Vec<RotationFailure>,
    /// Rows still sealed under another key after this pass (0 when it ran to completion).
    pub remaining: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RotationFailure {
    pub integration_id: IntegrationId,
    pub error: String,
}

/// Reported after each batch, for progress output.
#[derive(Debug, Clone, Copy)]
pub struct RotationProgress {
    pub rotated: u64,
    pub failed: usize,
    pub total: i64,
}

/// The columns that hold a vault envelope: an integration's credentials and its webhook
/// signing secret. A fixed list: the names are spliced into the statements.
const SEALED_COLUMNS: [&str; 2] = ["credentials", "webhook_secret"];

/// Re-seals up to `max_batches` batches of `batch_size` rows (all of them when `None`), the
/// credentials first, then the webhook secrets.
pub async fn rotate_credentials(
    store: &Store,
    vault: &Vault,
    batch_size: i64,
    max_batches: Option<usize>,
    mut progress: impl FnMut(RotationProgress),
) -> Result<RotationReport, StoreError> {
    let active = vault.ring().active_key_id().to_owned();
    let total = count_stale(store, &active).await?;
    let mut report = RotationReport::default();
    let mut batches = 0_usize;
    for column in SEALED_COLUMNS {
        // Rows are visited in id order; failures are skipped past rather than retried forever.
        let mut after_id = IntegrationId(0);
        while max_batches.is_none_or(|max| batches < max) {
            let batch = Batch {
                column,
                active: &active,
                after_id,
                size: batch_size.max(1),
            };
            let Some(last) = rotate_batch(store, vault, batch, &mut report).await? else {
                break;
            };
            after_id = last;
            batches += 1;
            progress(RotationProgress {
                rotated: report.rotated,
                failed: report.failed.len(),
                total,
            });
        }
    }
    report.remaining = count_stale(store, &active).await?;
    Ok(report)
}

/// One batch of one column: rows after `after_id` not yet under the `active` key.
#[derive(Debug, Clone, Copy)]
struct Batch<'a> {
    column: &'static str,
    active: &'a str,
    after_id: IntegrationId,
    size: i64,
}

/// Re-seals one batch in its own transaction; returns the last id it visited, `None` when
/// nothing was left.
async fn rotate_batch(
    store: &Store,
    vault: &Vault,
    batch: Batch<'_>,
    report: &mut RotationReport,
) -> Result<Option<IntegrationId>, StoreError> {
    let column = batch.column;
    let mut tx = store.pool().begin().await?;
    let rows: Vec<(IntegrationId, TenantId, serde_json::Value)> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT id, tenant_id, {column} FROM integrations
              WHERE {column} IS NOT NULL AND id > $1
                AND ({column} ->> 'kid' IS DISTINCT FROM $2 OR {column} ->> 'v' IS DISTINCT FROM '1')
              ORDER BY id
              LIMIT $3
              FOR UPDATE SKIP LOCKED"
        )))
        .bind(batch.after_id)
        .bind(batch.active)
        .bind(batch.size)
        .fetch_all(&mut *tx)
        .await?;
    let Some(&(last_id, _, _)) = rows.last() else {
        return Ok(None);
    };
    for (id, tenant_id, raw) in rows {
        let owner = CredentialOwner {
            integration_id: id,
            tenant_id,
        };
        let resealed = SealedCredentials::from_json(&raw)
            .and_then(|sealed| vault.open(owner, &sealed))
            .and_then(|plain| vault.seal(owner, &plain));
        match resealed {
            Ok(sealed) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE integrations SET {column} = $2 WHERE id = $1"
                )))
                .bind(id)
                .bind(sealed.to_json())
                .execute(&mut *tx)
                .await?;
                report.rotated += 1;
            }
            Err(e) => report.failed.push(RotationFailure {
                integration_id: id,
                error: format!("{}: {e}", column.replace('_', " ")),
            }),
        }
    }
    tx.commit().await?;
    Ok(Some(last_id))
}

async fn count_stale(store: &Store, active: &str) -> Result<i64, StoreError> {
    let mut stale = 0;
    for column in SEALED_COLUMNS {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM integrations
              WHERE {column} IS NOT NULL
                AND ({column} ->> 'kid' IS DISTINCT FROM $1 OR {column} ->> 'v' IS DISTINCT FROM '1')"
        )))
        .bind(active)
        .fetch_one(store.pool())
        .await?;
        stale += n;
    }
    Ok(stale)
}
