//! The admin operations behind the CLI (and, later, the HTTP API): one place that validates
//! input, talks to the store, the vault, the connectors and the broker.

use passerelle_connectors::{ConnectionTest, ConnectorContext, ConnectorError, Disposition};
use passerelle_core::conflict::ConflictPolicy;
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
    /// Input that names what is wrong with each field, all at once.
    #[error("{}", describe_fields(.0))]
    Fields(Vec<FieldError>),
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

/// One field of an admin's input and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The field's name in the request (`type`, `entities[1]`, `settings`, ...).
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Self {
            field: field.into(),
            message: message.to_string(),
        }
    }
}

fn describe_fields(errors: &[FieldError]) -> String {
    let each: Vec<String> = errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect();
    format!("invalid input: {}", each.join("; "))
}

/// Admin input for the integration fields both create and update accept.
#[derive(Debug, Default, Clone)]
pub struct FieldsInput {
    pub direction: Option<String>,
    pub frequency: Option<String>,
    pub entities: Option<Vec<String>>,
    pub settings: Option<serde_json::Value>,
    pub credentials: Option<serde_json::Value>,
    /// `Some(Some(url))` sets the completion webhook, `Some(None)` removes it.
    pub webhook_url: Option<Option<String>>,
    /// Who wins a bidirectional conflict, per entity (`{"products": "erp"}`); replaces the
    /// stored choices.
    pub conflict_policy: Option<serde_json::Value>,
}

/// An integration as saved, and the webhook secret when this change made one: it is shown
/// to the admin this once (and after a rotation), never again.
#[derive(Debug)]
pub struct Saved {
    pub integration: Integration,
    pub webhook_secret: Option<String>,
}

struct ParsedFields {
    direction: Option<SyncDirection>,
    frequency: Option<SyncFrequency>,
    entities: Option<Vec<Entity>>,
    credentials: Option<Credentials>,
    conflict_policy: Option<ConflictPolicy>,
}

/// Collects every field's error rather than stopping at the first.
#[derive(Default)]
struct Problems(Vec<FieldError>);

impl Problems {
    fn check<T, E: std::fmt::Display>(&mut self, field: &str, result: Result<T, E>) -> Option<T> {
        result
            .map_err(|e| self.0.push(FieldError::new(field, e)))
            .ok()
    }

    fn finish<T>(self, value: T) -> Result<T, ServiceError> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(ServiceError::Fields(self.0))
        }
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let len = name.chars().count();
    if name.trim().is_empty() || len > 255 {
        return Err(format!("must be 1 to 255 characters, got {len}"));
    }
    Ok(())
}

/// Parses and validates the fields for an integration of `integration_type` (unknown when
/// its own label was refused: the type-specific checks are then skipped). `settings` are
/// the integration's settings after the change, for checking new credentials against.
fn parse_fields(
    problems: &mut Problems,
    input: &FieldsInput,
    integration_type: Option<IntegrationType>,
    settings: Option<&serde_json::Value>,
    ctx: &ConnectorContext,
) -> ParsedFields {
    let direction = input
        .direction
        .as_deref()
        .and_then(|d| problems.check("direction", d.parse::<SyncDirection>()));
    let frequency = input
        .frequency
        .as_deref()
        .and_then(|f| problems.check("frequency", f.parse::<SyncFrequency>()));
    let entities = input.entities.as_ref().map(|list| {
        list.iter()
            .enumerate()
            .filter_map(|(i, e)| problems.check(&format!("entities[{i}]"), parse_entity(e)))
            .collect::<Vec<_>>()
    });
    let credentials = input.credentials.clone().and_then(|c| {
        problems.check(
            "credentials",
            Credentials::from_value(c).map_err(|e| e.to_string()),
        )
    });
    let conflict_policy = input
        .conflict_policy
        .clone()
        .and_then(|p| problems.check("conflict_policy", ConflictPolicy::from_value(p)));
    if let Some(Some(url)) = &input.webhook_url {
        problems.check("webhook_url", ctx.url_policy.check(url, "webhook_url"));
    }
    if let Some(integration_type) = integration_type {
        let settings_ok = input.settings.is_none()
            || problems
                .check(
                    "settings",
                    passerelle_connectors::validate_settings(
                        integration_type,
                        input.settings.as_ref(),
                        ctx,
                    ),
                )
                .is_some();
        // New credentials are checked by building the connector they are for (no request is
        // made): a missing field is refused now, not at the first sync.
        if let (true, Some(c)) = (settings_ok, &credentials) {
            problems.check(
                "credentials",
                check_credentials(integration_type, settings, c, ctx),
            );
        }
    }
    ParsedFields {
        direction,
        frequency,
        entities,
        credentials,
        conflict_policy,
    }
}

/// New credentials, checked by building the connector they are for. An ERP whose tokens come
/// from a consent may have only its app's `client_id` and `client_secret` until the consent
/// (`oauth/start`) brings the rest.
fn check_credentials(
    integration_type: IntegrationType,
    settings: Option<&serde_json::Value>,
    credentials: &Credentials,
    ctx: &ConnectorContext,
) -> Result<(), String> {
    let awaiting_consent = passerelle_connectors::consent::uses_consent(integration_type)
        && credentials.get_str("refresh_token").is_none();
    if awaiting_consent {
        let missing: Vec<&str> = ["client_id", "client_secret"]
            .into_iter()
            .filter(|f| credentials.get_str(f).is_none_or(str::is_empty))
            .collect();
        return match missing.as_slice() {
            [] => Ok(()),
            fields => Err(format!(
                "{} required: the app's client_id and client_secret; the tokens then come from the consent (POST /api/v1/integrations/{{id}}/oauth/start)",
                fields.join(" and ")
            )),
        };
    }
    passerelle_connectors::build(integration_type, settings, Some(credentials), ctx)
        .map(|_| ())
        .map_err(|e| e.to_string())
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

/// The five `sync_<entity>` switches as the list says.
fn entity_switches(entities: &[Entity]) -> [bool; 5] {
    [
        Entity::Product,
        Entity::Customer,
        Entity::Order,
        Entity::Invoice,
        Entity::Inventory,
    ]
    .map(|e| entities.contains(&e))
}

pub async fn create(
    store: &Store,
    vault: Option<&Vault>,
    ctx: &ConnectorContext,
    tenant_id: TenantId,
    name: &str,
    integration_type: &str,
    fields: &FieldsInput,
) -> Result<Saved, ServiceError> {
    let mut problems = Problems::default();
    problems.check("name", check_name(name));
    let integration_type = problems.check("type", integration_type.parse::<IntegrationType>());
    let parsed = parse_fields(
        &mut problems,
        fields,
        integration_type,
        fields.settings.as_ref(),
        ctx,
    );
    let integration_type = problems.finish(integration_type)?;
    let Some(integration_type) = integration_type else {
        return Err(ServiceError::Invalid("type is required".into()));
    };
    let mut new = NewIntegration::new(tenant_id, name, integration_type);
    new.settings = fields.settings.clone();
    new.credentials = parsed.credentials;
    if let Some(d) = parsed.direction {
        new.sync_direction = d;
    }
    if let Some(f) = parsed.frequency {
        new.sync_frequency = f;
    }
    if let Some(policy) = parsed.conflict_policy {
        new.conflict_policy = policy;
    }
    if let Some(entities) = parsed.entities {
        [
            new.sync_products,
            new.sync_customers,
            new.sync_orders,
            new.sync_invoices,
            new.sync_inventory,
        ] = entity_switches(&entities);
    }
    if !store.tenant_exists(tenant_id).await? {
        return Err(ServiceError::Invalid(format!(
            "tenant {tenant_id} does not exist"
        )));
    }
    let created = store.create_integration(vault, new).await?;
    apply_webhook(store, vault, created, fields.webhook_url.as_ref()).await
}

/// Sets or removes the webhook the fields name, making a secret when the integration has
/// none yet.
async fn apply_webhook(
    store: &Store,
    vault: Option<&Vault>,
    integration: Integration,
    change: Option<&Option<String>>,
) -> Result<Saved, ServiceError> {
    let Some(url) = change else {
        return Ok(Saved {
            integration,
            webhook_secret: None,
        });
    };
    let vault = vault.ok_or_else(|| {
        ServiceError::Invalid(
            "a webhook's signing secret is sealed by the vault; configure [vault]".into(),
        )
    })?;
    let secret = (url.is_some() && integration.webhook_secret.is_none())
        .then(crate::webhooks::generate_secret);
    let integration = store
        .set_webhook(vault, &integration, url.as_deref(), secret.as_deref())
        .await?;
    Ok(Saved {
        integration,
        webhook_secret: secret,
    })
}

/// Replaces the webhook's signing secret; the new one is returned this once.
pub async fn rotate_webhook_secret(
    store: &Store,
    vault: &Vault,
    integration: &Integration,
) -> Result<Saved, ServiceError> {
    let Some(url) = integration.webhook_url.as_deref() else {
        return Err(ServiceError::Fields(vec![FieldError::new(
            "webhook_url",
            "is not set; set one first (its secret is made then)",
        )]));
    };
    let secret = crate::webhooks::generate_secret();
    let integration = store
        .set_webhook(vault, integration, Some(url), Some(&secret))
        .await?;
    Ok(Saved {
        integration,
        webhook_secret: Some(secret),
    })
}

/// Applies the fields given. Changing the credentials or settings of an active integration
/// puts it back to `testing`: the legacy app warns that such changes need a new test, and a
/// sync should not run on an untested configuration.
pub async fn update(
    store: &Store,
    vault: Option<&Vault>,
    ctx: &ConnectorContext,
    current: &Integration,
    name: Option<String>,
    fields: &FieldsInput,
) -> Result<Saved, ServiceError> {
    let mut problems = Problems::default();
    if let Some(name) = &name {
        problems.check("name", check_name(name));
    }
    let settings = fields.settings.as_ref().or(current.settings.as_ref());
    let parsed = parse_fields(
        &mut problems,
        fields,
        Some(current.integration_type),
        settings,
        ctx,
    );
    problems.finish(())?;
    let reconfigured = fields.settings.is_some() || parsed.credentials.is_some();
    let mut patch = IntegrationPatch {
        name,
        settings: fields.settings.clone(),
        credentials: parsed.credentials,
        sync_direction: parsed.direction,
        sync_frequency: parsed.frequency,
        conflict_policy: parsed.conflict_policy,
        retest: reconfigured,
        ..Default::default()
    };
    if let Some(entities) = parsed.entities {
        let [p, c, o, i, inv] = entity_switches(&entities).map(Some);
        patch.sync_products = p;
        patch.sync_customers = c;
        patch.sync_orders = o;
        patch.sync_invoices = i;
        patch.sync_inventory = inv;
    }
    let updated = store
        .update_integration(vault, current.id, patch, store.now())
        .await?;
    apply_webhook(store, vault, updated, fields.webhook_url.as_ref()).await
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
    dry_run: bool,
) -> Result<SyncRun, ServiceError> {
    let integration = store.integration(id).await?;
    let entities = entities
        .iter()
        .map(|e| parse_entity(e))
        .collect::<Result<Vec<_>, _>>()?;
    let enqueued = enqueue_run(
        store,
        publisher,
        &integration,
        &entities,
        &TraceParent::new_root(),
        dry_run,
    )
    .await?;
    enqueued.published.map_err(ServiceError::Publish)?;
    Ok(enqueued.run)
}

/// A manual run, stored, and whether the broker took its job.
#[derive(Debug)]
pub struct Enqueued {
    pub run: SyncRun,
    /// Why the publish failed: the run stays `queued` and the scheduler's outbox publishes it.
    pub published: Result<(), String>,
}

/// Creates a manual run (a dry run when `dry_run`) in the caller's trace (the run stores its
/// trace id, and the job carries a child span) and publishes it to the manual lane.
pub async fn enqueue_run(
    store: &Store,
    publisher: &Publisher,
    integration: &Integration,
    entities: &[Entity],
    trace: &TraceParent,
    dry_run: bool,
) -> Result<Enqueued, ServiceError> {
    let run = store
        .create_manual_run(integration, entities, &trace.trace_id, dry_run)
        .await?;
    let published =
        crate::outbox::publish_runs(store, publisher, Lane::Manual, std::slice::from_ref(&run))
            .await
            .map_err(|e| format!("{e:#}"));
    Ok(Enqueued { run, published })
}
