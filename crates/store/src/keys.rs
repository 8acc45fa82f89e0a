//! Which key material each vault key id stands for, fleet-wide (`vault_key_fingerprints`).
//!
//! A credential that fails to open under key `k` is either altered (the integration's fault)
//! or opened with the wrong material for `k` (the worker's fault: a bad deploy on one host).
//! The first process that seals or opens with `k` records its fingerprint; later failures are
//! judged against it, so one misconfigured worker never puts healthy integrations in `error`.

use crate::{Store, StoreError};
use passerelle_core::vault::{Vault, VaultError};

/// Whose fault a credential that would not open is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialFault {
    /// The stored ciphertext is bad (altered, copied, malformed) under the key the fleet
    /// agrees on: blame the integration.
    Integration,
    /// This process lacks the key, or holds other material under its id, or cannot read the
    /// envelope's version: another worker may open it; retry elsewhere and alert.
    ThisWorker,
}

impl Store {
    /// Records the fingerprint of the material this vault holds under `key_id`, unless one
    /// is recorded already (the first recorder wins; see [`Store::credential_fault`]).
    pub async fn record_key_fingerprint(
        &self,
        vault: &Vault,
        key_id: &str,
    ) -> Result<(), StoreError> {
        let Some(fingerprint) = vault.ring().fingerprint(key_id) else {
            return Ok(());
        };
        sqlx::query(
            "INSERT INTO vault_key_fingerprints (key_id, fingerprint) VALUES ($1, $2)
             ON CONFLICT (key_id) DO NOTHING",
        )
        .bind(key_id)
        .bind(fingerprint)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The recorded fingerprint of `key_id`, if any process recorded one.
    pub async fn key_fingerprint(&self, key_id: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT fingerprint FROM vault_key_fingerprints WHERE key_id = $1")
                .bind(key_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Judges a failure to open credentials: the integration's fault only when its ciphertext
    /// is proven bad (malformed, or failing authentication under material whose fingerprint
    /// matches the fleet's record).
    pub async fn credential_fault(
        &self,
        vault: &Vault,
        error: &VaultError,
    ) -> Result<CredentialFault, StoreError> {
        Ok(match error {
            VaultError::Tampered { key_id, .. } => {
                let ours = vault.ring().fingerprint(key_id);
                match self.key_fingerprint(key_id).await? {
                    Some(recorded) if Some(&recorded) == ours.as_ref() => {
                        CredentialFault::Integration
                    }
                    _ => CredentialFault::ThisWorker,
                }
            }
            VaultError::Malformed { .. } | VaultError::NotAnObject { .. } => {
                CredentialFault::Integration
            }
            // A missing key, or an envelope of a newer release: another worker may read it.
            VaultError::MissingKey { .. }
            | VaultError::UnsupportedVersion { .. }
            | VaultError::InvalidKey { .. }
            | VaultError::NoKeys
            | VaultError::ActiveKeyMissing { .. } => CredentialFault::ThisWorker,
        })
    }
}
