//! What the API answers with: rows as an admin sees them. Credentials never appear, only
//! which of their fields are set.

use chrono::{DateTime, Utc};
use passerelle_core::conflict::ConflictPolicy;
use passerelle_core::dry_run::DryRunReport;
use passerelle_core::vault::Vault;
use passerelle_core::{
    Entity, IntegrationId, IntegrationStatus, IntegrationType, RunId, RunStatus, RunTrigger,
    SyncDirection, SyncFrequency, TenantId,
};
use passerelle_store::{Integration, SyncRun};
use serde::Serialize;

/// Whether credentials are stored, and which fields they have; never their values.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CredentialsView {
    pub set: bool,
    /// The names of the stored fields (`client_id`, `refresh_token`, ...).
    pub fields: Vec<String>,
    /// Why the fields cannot be listed (the vault lacks the key they were sealed with).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IntegrationView {
    pub id: IntegrationId,
    pub tenant_id: TenantId,
    pub name: String,
    #[serde(rename = "type")]
    pub integration_type: IntegrationType,
    /// The ERP's name as shown to people ("QuickBooks Online").
    pub type_name: &'static str,
    pub status: IntegrationStatus,
    pub direction: SyncDirection,
    pub entities: Vec<Entity>,
    pub frequency: SyncFrequency,
    #[schema(value_type = Option<Object>)]
    pub settings: Option<serde_json::Value>,
    pub credentials: CredentialsView,
    pub last_sync_at: Option<DateTime<Utc>>,
    pub next_sync_at: Option<DateTime<Utc>>,
    pub total_syncs: i32,
    pub successful_syncs: i32,
    pub failed_syncs: i32,
    /// Successful runs as a percentage of all runs (0 before the first).
    pub success_rate: f64,
    pub consecutive_failures: i32,
    pub last_error: Option<String>,
    /// Where run completions are POSTed (Standard Webhooks), if anywhere.
    pub webhook_url: Option<String>,
    pub webhook_secret_set: bool,
    /// The webhook signing secret: only in the answer that made it (the first `webhook_url`,
    /// a rotation). It is never shown again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
    /// Who wins a bidirectional conflict, for every entity (chosen or by default).
    #[schema(value_type = Object, example = json!({"products": "erp", "customers": "platform", "orders": "platform", "invoices": "platform", "inventory": "erp"}))]
    pub conflict_policy: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Every entity's winner, keyed as `conflict_policy` is written (`products`, `inventory`).
pub fn effective_policy(policy: &ConflictPolicy) -> serde_json::Value {
    policy
        .effective()
        .into_iter()
        .map(|(entity, winner)| {
            (
                ConflictPolicy::key(entity).to_owned(),
                serde_json::Value::from(winner.as_str()),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

impl IntegrationView {
    pub fn new(i: Integration, vault: &Vault) -> Self {
        let credentials = match i.open_credentials(vault) {
            Ok(None) => CredentialsView {
                set: false,
                fields: Vec::new(),
                unreadable: None,
            },
            Ok(Some(c)) => CredentialsView {
                set: true,
                fields: c.field_names().map(str::to_owned).collect(),
                unreadable: None,
            },
            Err(e) => CredentialsView {
                set: true,
                fields: Vec::new(),
                unreadable: Some(e.to_string()),
            },
        };
        Self {
            entities: i.enabled_entities(),
            success_rate: (i.success_rate() * 10.0).round() / 10.0,
            id: i.id,
            tenant_id: i.tenant_id,
            name: i.name,
            integration_type: i.integration_type,
            type_name: i.integration_type.display_name(),
            status: i.status,
            direction: i.sync_direction,
            frequency: i.sync_frequency,
            settings: i.settings,
            credentials,
            last_sync_at: i.last_sync_at,
            next_sync_at: i.next_sync_at,
            total_syncs: i.total_syncs,
            successful_syncs: i.successful_syncs,
            failed_syncs: i.failed_syncs,
            consecutive_failures: i.consecutive_failures,
            last_error: i.last_error,
            webhook_secret_set: i.webhook_secret.is_some(),
            webhook_url: i.webhook_url,
            webhook_secret: None,
            conflict_policy: effective_policy(&i.conflict_policy),
            created_at: i.created_at,
            updated_at: i.updated_at,
        }
    }
}

impl IntegrationView {
    /// A saved integration, with the webhook secret this change made, if any.
    pub fn saved(saved: crate::service::Saved, vault: &Vault) -> Self {
        let mut view = Self::new(saved.integration, vault);
        view.webhook_secret = saved.webhook_secret;
        view
    }
}

/// Records a run has handled so far (final once the run has ended).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunCounts {
    pub synced: i32,
    pub skipped: i32,
    pub failed: i32,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunView {
    pub id: RunId,
    pub integration_id: IntegrationId,
    pub trigger: RunTrigger,
    /// The entities the run covers; empty means every entity enabled on the integration.
    pub entities: Vec<Entity>,
    pub status: RunStatus,
    /// Attempts that failed and were retried.
    pub attempt: i32,
    /// The progress so far: counts grow as each chunk commits.
    pub counts: RunCounts,
    pub queued_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// A queued run waiting on purpose (a retry's delay, an ERP's `Retry-After`) resumes then.
    pub waiting_until: Option<DateTime<Utc>>,
    pub cancel_requested_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    /// The W3C trace id the run's spans carry, from the request that created it.
    pub trace_id: Option<String>,
    /// A dry run reads and diffs, and writes nothing but its report.
    pub dry_run: bool,
    /// What a finished dry run found: per entity and direction, what a real run would
    /// create, update, delete and skip, with a few redacted sample payloads.
    pub dry_run_report: Option<DryRunReport>,
}

impl From<SyncRun> for RunView {
    fn from(r: SyncRun) -> Self {
        Self {
            id: r.id,
            integration_id: r.integration_id,
            trigger: r.trigger,
            entities: r.entity_scope,
            status: r.status,
            attempt: r.attempt,
            counts: RunCounts {
                synced: r.records_synced,
                skipped: r.records_skipped,
                failed: r.records_failed,
            },
            queued_at: r.queued_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            waiting_until: r.resume_at,
            cancel_requested_at: r.cancel_requested_at,
            error: r.error,
            trace_id: r.trace_id,
            dry_run: r.dry_run,
            dry_run_report: r.dry_run_report,
        }
    }
}
