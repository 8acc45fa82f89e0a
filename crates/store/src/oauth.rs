//! `oauth_states`: consents in flight. A state is kept as a digest and works once; the PKCE
//! verifier is sealed with the integration's identity.

use crate::integrations::seal_for;
use crate::{Integration, Store, StoreError};
use chrono::{DateTime, Utc};
use passerelle_core::vault::{CredentialOwner, Credentials, SealedCredentials, Vault};
use passerelle_core::{IntegrationId, TenantId};

const VERIFIER_FIELD: &str = "code_verifier";

/// A consent the callback may complete.
#[derive(Debug, Clone)]
pub struct PendingConsent {
    pub integration_id: IntegrationId,
    pub tenant_id: TenantId,
    pub code_verifier: String,
    pub redirect_uri: String,
}

impl Store {
    /// Records a consent in flight until `expires_at`, and forgets the expired ones.
    pub async fn begin_consent(
        &self,
        vault: &Vault,
        integration: &Integration,
        state_hash: &[u8; 32],
        code_verifier: &str,
        redirect_uri: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut fields = Credentials::new(serde_json::Map::new());
        fields.insert(VERIFIER_FIELD, code_verifier.into());
        let sealed = seal_for(vault, integration.owner(), &fields)?;
        sqlx::query("DELETE FROM oauth_states WHERE expires_at < $1")
            .bind(self.now())
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO oauth_states (state_hash, integration_id, tenant_id, code_verifier, redirect_uri, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(state_hash.as_slice())
        .bind(integration.id)
        .bind(integration.tenant_id)
        .bind(sealed)
        .bind(redirect_uri)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Takes the consent of this state: once, and only before it expires. `None` for a state
    /// we never issued, one already used, or one expired.
    pub async fn take_consent(
        &self,
        vault: &Vault,
        state_hash: &[u8; 32],
    ) -> Result<Option<PendingConsent>, StoreError> {
        let row: Option<(IntegrationId, TenantId, serde_json::Value, String)> = sqlx::query_as(
            "DELETE FROM oauth_states WHERE state_hash = $1 AND expires_at > $2
             RETURNING integration_id, tenant_id, code_verifier, redirect_uri",
        )
        .bind(state_hash.as_slice())
        .bind(self.now())
        .fetch_optional(&self.pool)
        .await?;
        let Some((integration_id, tenant_id, sealed, redirect_uri)) = row else {
            return Ok(None);
        };
        let owner = CredentialOwner {
            integration_id,
            tenant_id,
        };
        let wrap = |source| StoreError::Vault {
            integration_id,
            source,
        };
        let opened = SealedCredentials::from_json(&sealed)
            .and_then(|s| vault.open(owner, &s))
            .map_err(wrap)?;
        let code_verifier = opened
            .get_str(VERIFIER_FIELD)
            .map(str::to_owned)
            .ok_or_else(|| StoreError::Invalid("a consent's sealed verifier is empty".into()))?;
        Ok(Some(PendingConsent {
            integration_id,
            tenant_id,
            code_verifier,
            redirect_uri,
        }))
    }
}
