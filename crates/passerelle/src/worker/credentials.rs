//! Stores credentials an ERP rotated, under the run's lease (see
//! `Store::store_rotated_credentials`).

use async_trait::async_trait;
use passerelle_connectors::{ConnectorError, CredentialStore};
use passerelle_core::vault::{Credentials, Vault};
use passerelle_store::{Integration, LeaseToken, Store};

#[derive(Debug)]
pub struct LeasedCredentialStore {
    pub store: Store,
    pub vault: Vault,
    pub integration: Integration,
    pub lease: LeaseToken,
}

#[async_trait]
impl CredentialStore for LeasedCredentialStore {
    async fn save(&self, credentials: &Credentials) -> Result<(), ConnectorError> {
        self.store
            .store_rotated_credentials(&self.vault, &self.integration, &self.lease, credentials)
            .await
            .map_err(|e| {
                ConnectorError::fatal(format!("cannot store the rotated credentials: {e}"))
            })
    }
}
