use crate::cli::{IntegrationFields, IntegrationsCommand, OutputFormat};
use crate::service::{self, FieldsInput};
use crate::{app, output};
use anyhow::Context as _;
use passerelle_core::config::Settings;
use passerelle_core::{IntegrationId, IntegrationStatus, TenantId};
use passerelle_store::{Integration, Store};
use std::process::ExitCode;

/// Reads a JSON argument: inline JSON, or `@path` to a file holding it.
fn json_arg(what: &str, raw: &str) -> anyhow::Result<serde_json::Value> {
    let text = match raw.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {what} file {path}"))?,
        None => raw.to_owned(),
    };
    serde_json::from_str(&text).with_context(|| format!("{what} is not valid JSON"))
}

fn fields(f: &IntegrationFields) -> anyhow::Result<FieldsInput> {
    Ok(FieldsInput {
        direction: f.direction.clone(),
        frequency: f.frequency.clone(),
        entities: f.entities.clone(),
        settings: f
            .settings
            .as_deref()
            .map(|s| json_arg("--settings", s))
            .transpose()?,
        credentials: f
            .credentials
            .as_deref()
            .map(|s| json_arg("--credentials", s))
            .transpose()?,
        webhook_url: f
            .webhook_url
            .as_ref()
            .map(|u| (u != "none").then(|| u.clone())),
        conflict_policy: f
            .conflict_policy
            .as_deref()
            .map(|p| {
                passerelle_core::conflict::ConflictPolicy::parse_pairs(p)
                    .map_err(|e| anyhow::anyhow!("--conflict-policy: {e}"))
                    .and_then(|policy| Ok(serde_json::to_value(policy)?))
            })
            .transpose()?,
    })
}

/// The JSON an admin sees: the row without its ciphertext, plus whether credentials are set
/// and the success rate.
pub fn view(i: &Integration) -> serde_json::Value {
    let mut v = serde_json::to_value(i).unwrap_or_default();
    if let Some(obj) = v.as_object_mut() {
        obj.insert("credentials_set".into(), i.credentials.is_some().into());
        obj.insert(
            "webhook_secret_set".into(),
            i.webhook_secret.is_some().into(),
        );
        obj.insert(
            "success_rate".into(),
            serde_json::json!((i.success_rate() * 10.0).round() / 10.0),
        );
        obj.insert("entities".into(), serde_json::json!(i.enabled_entities()));
        obj.insert(
            "conflict_policy".into(),
            crate::api::views::effective_policy(&i.conflict_policy),
        );
    }
    v
}

fn describe(i: &Integration) -> String {
    let opt = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".into())
    };
    let entities: Vec<String> = i.enabled_entities().iter().map(|e| e.to_string()).collect();
    format!(
        "id            {}\ntenant        {}\nname          {}\ntype          {} ({})\nstatus        {}\ndirection     {}\nentities      {}\nfrequency     {}\nlast sync     {}\nnext sync     {}\nsyncs         {} total, {} ok, {} failed ({:.1}% success)\nlast error    {}\ncredentials   {}\nsettings      {}\n",
        i.id,
        i.tenant_id,
        i.name,
        i.integration_type,
        i.integration_type.display_name(),
        i.status,
        i.sync_direction,
        entities.join(", "),
        i.sync_frequency,
        opt(i.last_sync_at),
        opt(i.next_sync_at),
        i.total_syncs,
        i.successful_syncs,
        i.failed_syncs,
        i.success_rate(),
        i.last_error.as_deref().unwrap_or("-"),
        if i.credentials.is_some() {
            "set (encrypted)"
        } else {
            "none"
        },
        i.settings
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_else(|| "{}".into()),
    )
}

/// A new webhook secret, on stderr (it is shown once and must not end up in a JSON pipe by
/// accident).
fn show_webhook_secret(saved: &service::Saved) {
    if let Some(secret) = &saved.webhook_secret {
        eprintln!(
            "webhook signing secret (shown only now; verify `webhook-signature` with it): {secret}"
        );
    }
}

/// The key ring, when configured: only commands that seal or open credentials need it.
struct Keys(Result<passerelle_core::vault::Vault, passerelle_core::vault::VaultError>);

impl Keys {
    fn need(&self) -> anyhow::Result<&passerelle_core::vault::Vault> {
        self.0.as_ref().map_err(|e| {
            anyhow::anyhow!("this command stores or reads credentials and needs the vault key ring ([vault] in the configuration): {e}")
        })
    }

    /// The vault when `credentials` are given, else none (and none needed).
    fn for_credentials(
        &self,
        input: &service::FieldsInput,
    ) -> anyhow::Result<Option<&passerelle_core::vault::Vault>> {
        (input.credentials.is_some() || input.webhook_url.is_some())
            .then(|| self.need())
            .transpose()
    }
}

pub async fn run(
    settings: &Settings,
    command: IntegrationsCommand,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let store = super::connect(settings).await?;
    let ctx = app::connector_context(settings);
    let keys = Keys(
        settings
            .vault
            .key_ring()
            .map(passerelle_core::vault::Vault::new),
    );
    match command {
        IntegrationsCommand::Create(args) => {
            let input = fields(&args.fields)?;
            let created = service::create(
                &store,
                keys.for_credentials(&input)?,
                &ctx,
                args.tenant,
                &args.name,
                &args.integration_type,
                &input,
            )
            .await?;
            show_webhook_secret(&created);
            let created = created.integration;
            output::emit(format, &view(&created), || {
                format!(
                    "created integration {} ({}), status {}\n",
                    created.id, created.name, created.status
                )
            })?;
        }
        IntegrationsCommand::List { tenant } => list(&store, tenant, format).await?,
        IntegrationsCommand::Show { id } => show(&store, id, format).await?,
        IntegrationsCommand::Update(args) => {
            let input = fields(&args.fields)?;
            let vault = keys.for_credentials(&input)?;
            let current = store.integration(args.id).await?;
            let saved = service::update(&store, vault, &ctx, &current, args.name, &input).await?;
            show_webhook_secret(&saved);
            let updated = saved.integration;
            if current.status == IntegrationStatus::Active
                && updated.status == IntegrationStatus::Testing
            {
                eprintln!(
                    "note: integration {} changed settings or credentials and is back to `testing`; test it (`passerelle integrations test {}`) and activate it again",
                    updated.id, updated.id
                );
            }
            output::emit(format, &view(&updated), || {
                format!("updated integration {}\n", updated.id)
            })?;
        }
        IntegrationsCommand::Delete { id } => {
            let deleted = store.soft_delete_integration(id, store.now()).await?;
            output::emit(format, &view(&deleted), || {
                format!("deleted integration {id} (logs and mappings are kept)\n")
            })?;
        }
        IntegrationsCommand::Activate { id } | IntegrationsCommand::Deactivate { id } => {
            let status = if matches!(command, IntegrationsCommand::Activate { .. }) {
                IntegrationStatus::Active
            } else {
                IntegrationStatus::Inactive
            };
            let updated = service::set_status(&store, id, status).await?;
            output::emit(format, &view(&updated), || {
                format!("integration {id} is now {}\n", updated.status)
            })?;
        }
        IntegrationsCommand::Test { id } => {
            return test(&store, keys.need()?, &ctx, id, format).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(store: &Store, tenant: Option<TenantId>, format: OutputFormat) -> anyhow::Result<()> {
    let list = store.list_integrations(tenant, None, None).await?;
    let views: Vec<_> = list.iter().map(view).collect();
    output::emit(format, &views, || {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|i| {
                vec![
                    i.id.to_string(),
                    i.tenant_id.to_string(),
                    i.name.clone(),
                    i.integration_type.to_string(),
                    i.status.to_string(),
                    i.sync_frequency.to_string(),
                    i.last_sync_at
                        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                        .unwrap_or_else(|| "-".into()),
                    format!("{:.1}%", i.success_rate()),
                ]
            })
            .collect();
        output::table(
            &[
                "ID",
                "TENANT",
                "NAME",
                "TYPE",
                "STATUS",
                "FREQUENCY",
                "LAST SYNC",
                "SUCCESS",
            ],
            &rows,
        )
    })
}

async fn show(store: &Store, id: IntegrationId, format: OutputFormat) -> anyhow::Result<()> {
    let i = store.integration(id).await?;
    let runs = store.runs_for_integration(id, 5).await?;
    let mut v = view(&i);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("recent_runs".into(), serde_json::to_value(&runs)?);
    }
    output::emit(format, &v, || {
        let mut out = describe(&i);
        for r in &runs {
            out.push_str(&format!(
                "run           {} {} {} synced {} skipped {} failed {}{}\n",
                r.id,
                r.trigger,
                r.status,
                r.records_synced,
                r.records_skipped,
                r.records_failed,
                r.error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ));
        }
        out
    })
}

/// The legacy app's test button; exits 1 when the connection failed.
async fn test(
    store: &Store,
    vault: &passerelle_core::vault::Vault,
    ctx: &passerelle_connectors::ConnectorContext,
    id: IntegrationId,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let (integration, result) = service::test(store, vault, ctx, id).await?;
    let value = match &result {
        Ok(t) => {
            serde_json::json!({"success": true, "message": t.message, "response_time_ms": t.response_time_ms, "status": integration.status})
        }
        Err(e) => serde_json::json!({"success": false, "error": e, "status": integration.status}),
    };
    output::emit(format, &value, || match &result {
        Ok(t) => format!(
            "connection OK in {} ms: {}; status {}\n",
            t.response_time_ms, t.message, integration.status
        ),
        Err(e) => format!("connection FAILED: {e}; status {}\n", integration.status),
    })?;
    Ok(if result.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
