//! Completion webhooks: an integration's URL and sealed signing secret, and the durable queue
//! of deliveries (`webhook_deliveries`, filled by a trigger when a run ends) that workers
//! claim, attempt and settle.

use crate::integrations::{WEBHOOK_SECRET_FIELD, seal_for};
use crate::{Integration, Store, StoreError};
use chrono::{DateTime, Utc};
use passerelle_core::vault::{CredentialOwner, Credentials, SealedCredentials, Vault};
use passerelle_core::{IntegrationId, RunId, TenantId, WebhookStatus};
use serde::Serialize;
use std::time::Duration;
use uuid::Uuid;

/// One event to deliver, and how its delivery stands.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookDelivery {
    /// The Standard Webhooks `webhook-id`: the same on every attempt.
    pub id: Uuid,
    pub integration_id: IntegrationId,
    pub tenant_id: TenantId,
    pub run_id: Option<RunId>,
    pub url: String,
    /// The event as sent (`type`, `timestamp`, `data`).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub payload: serde_json::Value,
    pub status: WebhookStatus,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    /// The HTTP status of the last attempt, when there was an answer.
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// A claimed delivery and the sealed secret to sign it with.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedWebhook {
    #[sqlx(flatten)]
    pub delivery: WebhookDelivery,
    pub webhook_secret: Option<serde_json::Value>,
}

/// Opens a sealed webhook secret of `owner`.
pub fn open_secret(
    vault: &Vault,
    owner: CredentialOwner,
    raw: &serde_json::Value,
) -> Result<String, StoreError> {
    let wrap = |source| StoreError::Vault {
        integration_id: owner.integration_id,
        source,
    };
    let sealed = SealedCredentials::from_json(raw).map_err(wrap)?;
    let opened = vault.open(owner, &sealed).map_err(wrap)?;
    opened
        .get_str(WEBHOOK_SECRET_FIELD)
        .map(str::to_owned)
        .ok_or_else(|| {
            StoreError::Invalid(format!(
                "integration {}'s sealed webhook secret holds no `{WEBHOOK_SECRET_FIELD}`; set a new one",
                owner.integration_id
            ))
        })
}

impl Store {
    /// Sets (or, with `None`, removes) an integration's webhook URL. A new `secret` is sealed
    /// and replaces the old one; without one the stored secret stays. Removing the URL
    /// removes the secret too.
    pub async fn set_webhook(
        &self,
        vault: &Vault,
        integration: &Integration,
        url: Option<&str>,
        secret: Option<&str>,
    ) -> Result<Integration, StoreError> {
        let sealed = match (url, secret) {
            (Some(_), Some(secret)) => {
                let mut fields = Credentials::new(serde_json::Map::new());
                fields.insert(WEBHOOK_SECRET_FIELD, secret.into());
                Some(seal_for(vault, integration.owner(), &fields)?)
            }
            _ => None,
        };
        sqlx::query_as::<_, Integration>(
            "UPDATE integrations
                SET webhook_url = $2,
                    webhook_secret = CASE WHEN $2::text IS NULL THEN NULL ELSE COALESCE($3, webhook_secret) END
              WHERE id = $1 AND deleted_at IS NULL RETURNING *",
        )
        .bind(integration.id)
        .bind(url)
        .bind(sealed)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::IntegrationNotFound { id: integration.id })
    }

    /// Claims up to `limit` due deliveries: each counts an attempt and is held for `hold`
    /// (a worker that dies mid-attempt leaves it to be tried again then).
    pub async fn claim_webhooks(
        &self,
        limit: i64,
        hold: Duration,
    ) -> Result<Vec<ClaimedWebhook>, StoreError> {
        Ok(sqlx::query_as::<_, ClaimedWebhook>(
            "WITH claimed AS (
                UPDATE webhook_deliveries SET attempts = attempts + 1,
                       next_attempt_at = now() + make_interval(secs => $2)
                 WHERE id IN (SELECT id FROM webhook_deliveries
                               WHERE status = 'pending' AND next_attempt_at <= now()
                               ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)
                RETURNING *)
             SELECT c.*, i.webhook_secret FROM claimed c JOIN integrations i ON i.id = c.integration_id",
        )
        .bind(limit)
        .bind(hold.as_secs_f64())
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records a delivery the receiver accepted, by the attempt that claimed it (a late
    /// answer to an attempt whose claim lapsed changes nothing another attempt recorded).
    pub async fn webhook_delivered(
        &self,
        id: Uuid,
        attempt: i32,
        status: u16,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE webhook_deliveries SET status = 'delivered', delivered_at = now(),
                    last_status = $2, last_error = NULL
              WHERE id = $1 AND attempts = $3 AND status = 'pending'",
        )
        .bind(id)
        .bind(i32::from(status))
        .bind(attempt)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a failed attempt (by the attempt that claimed it): tried again at `retry_at`,
    /// or given up (`failed`) when `None`.
    pub async fn webhook_attempt_failed(
        &self,
        id: Uuid,
        attempt: i32,
        status: Option<u16>,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE webhook_deliveries
                SET status = CASE WHEN $4::timestamptz IS NULL THEN 'failed' ELSE 'pending' END::webhook_status,
                    next_attempt_at = COALESCE($4, next_attempt_at), last_status = $2, last_error = $3
              WHERE id = $1 AND attempts = $5 AND status = 'pending'",
        )
        .bind(id)
        .bind(status.map(i32::from))
        .bind(error)
        .bind(retry_at)
        .bind(attempt)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A page of an integration's deliveries, newest first, older than `before`.
    pub async fn webhook_deliveries_page(
        &self,
        integration: IntegrationId,
        before: Option<(DateTime<Utc>, Uuid)>,
        limit: i64,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        crate::admin::newest_first(
            self,
            "webhook_deliveries",
            "created_at",
            integration,
            before,
            limit,
        )
        .await
    }
}
