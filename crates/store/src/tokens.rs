//! `api_tokens`: the admin API's bearer tokens, scoped to one tenant. Only a SHA-256 of a
//! token is stored; its prefix lets an admin recognise it in a listing without it being usable.

use crate::{Store, StoreError};
use chrono::{DateTime, Utc};
use passerelle_core::{ApiRole, ApiTokenId, TenantId};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct ApiToken {
    pub id: ApiTokenId,
    pub tenant_id: TenantId,
    pub name: String,
    pub role: ApiRole,
    pub token_prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiToken {
    /// Usable now: neither revoked nor expired.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| at > now)
    }
}

/// A token to record. The caller generated the secret and hands over only its digest.
#[derive(Debug, Clone)]
pub struct NewApiToken {
    pub tenant_id: TenantId,
    pub name: String,
    pub role: ApiRole,
    pub token_prefix: String,
    pub token_hash: [u8; 32],
    pub expires_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str =
    "id, tenant_id, name, role, token_prefix, created_at, last_used_at, expires_at, revoked_at";

/// How stale `last_used_at` may be before a request stamps it again: a listing shows roughly
/// when a token was last used without every request writing a row.
const LAST_USED_GRANULARITY_SECS: i64 = 60;

impl Store {
    /// Records a token. Two live tokens of one tenant cannot share a name.
    pub async fn create_api_token(&self, token: NewApiToken) -> Result<ApiToken, StoreError> {
        let name = token.name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(StoreError::Invalid(
                "a token name must be 1 to 100 characters".into(),
            ));
        }
        if !self.tenant_exists(token.tenant_id).await? {
            return Err(StoreError::Invalid(format!(
                "tenant {} does not exist",
                token.tenant_id
            )));
        }
        let inserted = sqlx::query_as::<_, ApiToken>(sqlx::AssertSqlSafe(format!(
            "INSERT INTO api_tokens (tenant_id, name, role, token_prefix, token_hash, expires_at, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
        )))
        .bind(token.tenant_id)
        .bind(name)
        .bind(token.role)
        .bind(&token.token_prefix)
        .bind(token.token_hash.as_slice())
        .bind(token.expires_at)
        .bind(self.now())
        .fetch_one(&self.pool)
        .await;
        match inserted {
            Err(sqlx::Error::Database(e))
                if e.constraint() == Some("api_tokens_tenant_name_key") =>
            {
                Err(StoreError::Invalid(format!(
                    "tenant {} already has a live token named `{name}`; revoke it or choose another name",
                    token.tenant_id
                )))
            }
            other => Ok(other?),
        }
    }

    /// Every token of a tenant (or of all tenants), newest first, revoked ones included.
    pub async fn api_tokens(&self, tenant: Option<TenantId>) -> Result<Vec<ApiToken>, StoreError> {
        Ok(sqlx::query_as::<_, ApiToken>(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM api_tokens WHERE ($1::bigint IS NULL OR tenant_id = $1)
              ORDER BY id DESC"
        )))
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Revokes a token at once; revoking twice keeps the first time.
    pub async fn revoke_api_token(&self, id: ApiTokenId) -> Result<ApiToken, StoreError> {
        sqlx::query_as::<_, ApiToken>(sqlx::AssertSqlSafe(format!(
            "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1
             RETURNING {COLUMNS}"
        )))
        .bind(id)
        .bind(self.now())
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::Invalid(format!("token {id} does not exist")))
    }

    /// The live token with this digest, stamping when it was used. `None` for an unknown,
    /// revoked or expired token: the caller cannot tell which, and neither can a client.
    pub async fn authenticate_api_token(
        &self,
        token_hash: &[u8; 32],
    ) -> Result<Option<ApiToken>, StoreError> {
        let now = self.now();
        let token = sqlx::query_as::<_, ApiToken>(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM api_tokens WHERE token_hash = $1"
        )))
        .bind(token_hash.as_slice())
        .fetch_optional(&self.pool)
        .await?
        .filter(|t| t.is_live(now));
        if let Some(t) = &token {
            let stale = t
                .last_used_at
                .is_none_or(|at| (now - at).num_seconds() >= LAST_USED_GRANULARITY_SECS);
            if stale {
                sqlx::query("UPDATE api_tokens SET last_used_at = $2 WHERE id = $1")
                    .bind(t.id)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
            }
        }
        Ok(token)
    }
}
