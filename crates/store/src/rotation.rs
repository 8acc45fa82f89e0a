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

/// Re-seals up to `max_batches` batches of `batch_size` rows (all of them when `None`).
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
    // Rows are visited in id order; failures are skipped past rather than retried forever.
    let mut after_id = IntegrationId(0);
    let mut batches = 0_usize;
    loop {
        if max_batches.is_some_and(|max| batches >= max) {
            break;
        }
        let mut tx = store.pool().begin().await?;
        let rows: Vec<(IntegrationId, TenantId, serde_json::Value)> = sqlx::query_as(
            "SELECT id, tenant_id, credentials FROM integrations
              WHERE credentials IS NOT NULL AND id > $1
                AND (credentials ->> 'kid' IS DISTINCT FROM $2 OR credentials ->> 'v' IS DISTINCT FROM '1')
              ORDER BY id
              LIMIT $3
              FOR UPDATE SKIP LOCKED",
        )
        .bind(after_id)
        .bind(&active)
        .bind(batch_size.max(1))
        .fetch_all(&mut *tx)
        .await?;
        let Some(&(last_id, _, _)) = rows.last() else {
            break;
        };
        after_id = last_id;
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
                    sqlx::query("UPDATE integrations SET credentials = $2 WHERE id = $1")
                        .bind(id)
                        .bind(sealed.to_json())
                        .execute(&mut *tx)
                        .await?;
                    report.rotated += 1;
                }
                Err(e) => report.failed.push(RotationFailure {
                    integration_id: id,
                    error: e.to_string(),
                }),
            }
        }
        tx.commit().await?;
        batches += 1;
        progress(RotationProgress {
            rotated: report.rotated,
            failed: report.failed.len(),
            total,
        });
    }
    report.remaining = count_stale(store, &active).await?;
    Ok(report)
}

async fn count_stale(store: &Store, active: &str) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM integrations
          WHERE credentials IS NOT NULL
            AND (credentials ->> 'kid' IS DISTINCT FROM $1 OR credentials ->> 'v' IS DISTINCT FROM '1')",
    )
    .bind(active)
    .fetch_one(store.pool())
    .await?)
}
