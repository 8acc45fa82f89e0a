//! The admin operations behind the CLI (and, later, the HTTP API): one place that validates
//! input, talks to the store, the vault, the connectors and the broker.

use passerelle_connectors::{ConnectionTest, ConnectorContext, ConnectorError, Disposition};
use passerelle_core::job::TraceParent;
use passerelle_core::vault::{Credentials, Vault};
use passerelle_core::{
    Entity, IntegrationId, IntegrationStatus, IntegrationType, SyncDirection, SyncFrequency,
    TenantId,
};
use passerelle_queue::{Lane, Publisher};
use passerelle_store::{Integration, IntegrationPatch, NewIntegration, Store, StoreError, SyncRun};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    // Transparent: the connector's message is the whole message (`{0}` with `#[from]` made
    // it the source too, so an error chain printed it twice).
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    #[error(
        "the run was created but could not be enqueued ({0}); the scheduler's outbox will publish it"
    )]
    Publish(String),
}

/// Admin input for the integration fields both create and update accept.
#[derive(Debug, Default, Clone)]
pub struct FieldsInput {
    pub direction: Option<String>,
    pub frequency: Option<String>,
    pub entities: Option<Vec<String>>,
    pub settings: Option<serde_json::Value>,
    pub credentials: Option<serde_json::Value>,
}

struct ParsedFields {
    direction: Option<SyncDirection>,
    frequency: Option<SyncFrequency>,
    entities: Option<Vec<Entity>>,
    credentials: Option<Credentials>,
}

fn parse_fields(input: &FieldsInput) -> Result<ParsedFields, ServiceError> {
    let invalid = |e: passerelle_core::domain::UnknownLabel| ServiceError::Invalid(e.to_string());
    let direction = input
        .direction
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(invalid)?;
    let frequency = input
        .frequency
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(invalid)?;
    let entities = match &input.entities {
        None => None,
        Some(list) => Some(
            list.iter()
                .map(|e| parse_entity(e))
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let credentials = input
        .credentials
        .clone()
        .map(Credentials::from_value)
        .transpose()
        .map_err(|e| ServiceError::Invalid(format!("credentials: {e}")))?;
    Ok(ParsedFields {
        direction,
        frequency,
        entities,
        credentials,
    })
}

/// Accepts the singular (`order`) and the legacy app's plural (`orders`).
pub fn parse_entity(raw: &str) -> Result<Entity, ServiceError> {
    let trimmed = raw.trim();
    let singular = trimmed
        .strip_suffix('s')
        .filter(|_| trimmed != "inventories")
        .unwrap_or(trimmed);
    singular
        .parse::<Entity>()
        .or_else(|_| trimmed.parse::<Entity>())
        .map_err(|e| ServiceError::Invalid(e.to_string()))
}

pub async fn create(
    store: &Store,
    vault: Option<&Vault>,
    ctx: &ConnectorContext,
    tenant_id: TenantId,
    name: &str,
    integration_type: &str,
    fields: &FieldsInput,
) -> Result<Integration, ServiceError> {
    let integration_type: IntegrationType = integration_type
        .parse()
        .map_err(|e: passerelle_core::domain::UnknownLabel| ServiceError::Invalid(e.to_string()))?;
    let parsed = parse_fields(fields)?;
    passerelle_connectors::validate_settings(integration_type, fields.settings.as_ref(), ctx)?;
    let mut new = NewIntegration::new(tenant_id, name, integration_type);
    new.settings = fields.settings.clone();
    new.credentials = parsed.credentials;
    if let Some(d) = parsed.direction {
        new.sync_direction = d;
    }
    if let Some(f) = parsed.frequency {
        new.sync_frequency = f;
    }
    if let Some(entities) = parsed.entities {
        new.sync_products = entities.contains(&Entity::Product);
        new.sync_customers = entities.contains(&Entity::Customer);
        new.sync_orders = entities.contains(&Entity::Order);
        new.sync_invoices = entities.contains(&Entity::Invoice);
        new.sync_inventory = entities.contains(&Entity::Inventory);
    }
    if !store.tenant_exists(tenant_id).await? {
        return Err(ServiceError::Invalid(format!(
            "tenant {tenant_id} does not exist"
        )));
    }
    Ok(store.create_integration(vault, new).await?)
}

pub async fn update(
    store: &Store,
    vault: Option<&Vault>,
    ctx: &ConnectorContext,
    id: IntegrationId,
    name: Option<String>,
    fields: &FieldsInput,
) -> Result<Integration, ServiceError> {
    let current = store.integration(id).await?;
    let parsed = parse_fields(fields)?;
    if fields.settings.is_some() {
        passerelle_connectors::validate_settings(
            current.integration_type,
            fields.settings.as_ref(),
            ctx,
        )?;
    }
    let mut patch = IntegrationPatch {
        name,
        settings: fields.settings.clone(),
        credentials: parsed.credentials,
        sync_direction: parsed.direction,
        sync_frequency: parsed.frequency,
        ..Default::default()
    };
    if let Some(entities) = parsed.entities {
        patch.sync_products = Some(entities.contains(&Entity::Product));
        patch.sync_customers = Some(entities.contains(&Entity::Customer));
        patch.sync_orders = Some(entities.contains(&Entity::Order));
        patch.sync_invoices = Some(entities.contains(&Entity::Invoice));
        patch.sync_inventory = Some(entities.contains(&Entity::Inventory));
    }
    Ok(store
        .update_integration(vault, id, patch, store.now())
        .await?)
}

pub async fn set_status(
    store: &Store,
    id: IntegrationId,
    status: IntegrationStatus,
) -> Result<Integration, ServiceError> {
    let patch = IntegrationPatch {
        status: Some(status),
        ..Default::default()
    };
    Ok(store
        .update_integration(None, id, patch, store.now())
        .await?)
}

/// The legacy app's test button: reach the ERP with the stored credentials.
pub async fn test(
    store: &Store,
    vault: &Vault,
    ctx: &ConnectorContext,
    id: IntegrationId,
) -> Result<(Integration, Result<ConnectionTest, String>), ServiceError> {
    let integration = store.integration(id).await?;
    // The error, and whether it is the integration's fault rather than a passing one (a
    // timeout, a 5xx, a 429) that should not stop its schedule. The disposition decides, as
    // in the worker; a test exists to judge the configuration, so every error that retrying
    // cannot mend fails it (the legacy app: a failed test sets `error`).
    let result: Result<ConnectionTest, (String, bool)> = async {
        let credentials = integration
            .open_credentials(vault)
            .map_err(|e| (e.to_string(), true))?;
        // A test may refresh an OAuth token, and the ERP may rotate it: store it, unless a
        // worker changed the credentials meanwhile.
        let ctx = ConnectorContext {
            credential_store: Some(std::sync::Arc::new(UnleasedCredentialStore {
                store: store.clone(),
                vault: vault.clone(),
                integration: integration.clone(),
            })),
            ..ctx.clone()
        };
        let connector = passerelle_connectors::build(
            integration.integration_type,
            integration.settings.as_ref(),
            credentials.as_ref(),
            &ctx,
        )
        .map_err(|e| (e.to_string(), e.disposition() != Disposition::RetryLater))?;
        connector
            .test_connection()
            .await
            .map_err(|e| (e.to_string(), e.disposition() != Disposition::RetryLater))
    }
    .await;
    let status = match (&result, integration.status) {
        (Ok(_), IntegrationStatus::Inactive | IntegrationStatus::Error) => {
            Some(IntegrationStatus::Testing)
        }
        (Ok(_), _) => None,
        (Err((_, true)), _) => Some(IntegrationStatus::Error),
        (Err((_, false)), _) => None,
    };
    let result = result.map_err(|(message, _)| message);
    let integration = match status {
        Some(s) => set_status(store, id, s).await?,
        None => integration,
    };
    if let Err(message) = &result {
        store.set_last_error(id, message).await?;
    }
    Ok((integration, result))
}

/// Stores rotated credentials outside a run, by compare-and-swap.
#[derive(Debug)]
struct UnleasedCredentialStore {
    store: Store,
    vault: Vault,
    integration: Integration,
}

#[async_trait::async_trait]
impl passerelle_connectors::CredentialStore for UnleasedCredentialStore {
    async fn save(&self, credentials: &Credentials) -> Result<(), ConnectorError> {
        match self
            .store
            .store_credentials_if_unchanged(&self.vault, &self.integration, credentials)
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(ConnectorError::transient(
                "the credentials changed while testing (a sync refreshed them); test again",
            )),
            Err(e) => Err(ConnectorError::transient(format!(
                "cannot store the rotated credentials: {e}"
            ))),
        }
    }
}

/// Creates a manual run and publishes it to the manual lane.
pub async fn trigger_sync(
    store: &Store,
    publisher: &Publisher,
    id: IntegrationId,
    entities: &[String],
) -> Result<SyncRun, ServiceError> {
    let integration = store.integration(id).await?;
    let entities = entities
        .iter()
        .map(|e| parse_entity(e))
        .collect::<Result<Vec<_>, _>>()?;
    let trace = TraceParent::new_root();
    let run = store
        .create_manual_run(&integration, &entities, &trace.trace_id)
        .await?;
    crate::outbox::publish_runs(store, publisher, Lane::Manual, std::slice::from_ref(&run))
        .await
        .map_err(|e| ServiceError::Publish(format!("{e:#}")))?;
    Ok(run)
}
