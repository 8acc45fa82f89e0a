//! `passerelle logs|mappings|runs|stats`: what the admin API's read routes show, for an
//! operator at a shell (not scoped to one tenant: the CLI runs with the database's rights).

use super::tokens::parse_lifetime;
use crate::cli::{LogsArgs, MappingsArgs, OutputFormat, RunsArgs};
use crate::export::{ExportFormat, LogView};
use crate::{output, service};
use anyhow::Context as _;
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use passerelle_core::TenantId;
use passerelle_core::config::Settings;
use passerelle_store::{LogQuery, MappingQuery, Store};
use std::io::Write as _;
use std::process::ExitCode;

/// An RFC 3339 time, or an age (`24h`) counted back from now.
fn instant(
    flag: &str,
    raw: Option<&str>,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<DateTime<Utc>>> {
    let Some(raw) = raw else { return Ok(None) };
    if let Ok(at) = DateTime::parse_from_rfc3339(raw) {
        return Ok(Some(at.with_timezone(&Utc)));
    }
    match parse_lifetime(raw) {
        Ok(Some(age)) => Ok(Some(now - age)),
        _ => anyhow::bail!(
            "{flag} `{raw}` is neither an RFC 3339 time (2026-12-01T09:00:00Z) nor an age (24h, 7d, 30m)"
        ),
    }
}

fn label<T>(flag: &str, raw: Option<&str>) -> anyhow::Result<Option<T>>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    raw.map(str::parse)
        .transpose()
        .with_context(|| flag.to_owned())
}

fn cell<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

fn log_query(args: &LogsArgs, now: DateTime<Utc>) -> anyhow::Result<LogQuery> {
    let entity_type = args
        .entity
        .as_deref()
        .map(service::parse_entity)
        .transpose()
        .context("--entity")?
        .map(|e| e.log_entity());
    Ok(LogQuery {
        entity_type,
        status: label("--status", args.status.as_deref())?,
        direction: label("--direction", args.direction.as_deref())?,
        action: label("--action", args.action.as_deref())?,
        since: instant("--since", args.since.as_deref(), now)?,
        until: instant("--until", args.until.as_deref(), now)?,
        internal_id: args.ids.internal_id.clone(),
        external_id: args.ids.external_id.clone(),
    })
}

/// Streams every matching row to stdout, flushing as it goes.
async fn export(
    store: &Store,
    args: &LogsArgs,
    filter: &LogQuery,
    format: ExportFormat,
) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    let mut buffer = format.header().to_owned();
    let mut rows = store.logs_stream(args.integration, filter);
    let mut count = 0_u64;
    while let Some(row) = rows.next().await {
        format.write(&mut buffer, row?);
        count += 1;
        if buffer.len() >= 64 * 1024 {
            stdout.write_all(buffer.as_bytes())?;
            buffer.clear();
        }
    }
    stdout.write_all(buffer.as_bytes())?;
    stdout.flush()?;
    eprintln!(
        "exported {count} log row(s) of integration {}",
        args.integration
    );
    Ok(())
}

pub async fn logs(
    settings: &Settings,
    args: LogsArgs,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let store = super::connect(settings).await?;
    store.integration(args.integration).await?;
    let filter = log_query(&args, store.now())?;
    if let Some(raw) = args.export.as_deref() {
        let export_format: ExportFormat = raw
            .parse()
            .map_err(|e: String| anyhow::anyhow!("--export: {e}"))?;
        export(&store, &args, &filter, export_format).await?;
        return Ok(ExitCode::SUCCESS);
    }
    anyhow::ensure!(args.limit >= 1, "--limit must be at least 1");
    let rows: Vec<LogView> = store
        .logs_page(args.integration, &filter, None, args.limit)
        .await?
        .into_iter()
        .map(LogView::from)
        .collect();
    output::emit(format, &rows, || {
        let table: Vec<Vec<String>> = rows
            .iter()
            .map(|l| {
                vec![
                    l.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                    cell(l.entity_type),
                    cell(l.internal_id.clone()),
                    cell(l.external_id.clone()),
                    cell(l.action),
                    cell(l.direction),
                    cell(l.status),
                    cell(l.duration_ms),
                    cell(l.error_message.clone()),
                ]
            })
            .collect();
        output::table(
            &[
                "TIME",
                "ENTITY",
                "INTERNAL",
                "EXTERNAL",
                "ACTION",
                "DIRECTION",
                "STATUS",
                "MS",
                "ERROR",
            ],
            &table,
        )
    })?;
    Ok(ExitCode::SUCCESS)
}

pub async fn mappings(
    settings: &Settings,
    args: MappingsArgs,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let store = super::connect(settings).await?;
    store.integration(args.integration).await?;
    anyhow::ensure!(args.limit >= 1, "--limit must be at least 1");
    let filter = MappingQuery {
        entity_type: label("--entity", args.entity.as_deref())?,
        internal_id: args.ids.internal_id,
        external_id: args.ids.external_id,
    };
    let rows = store
        .mappings_page(args.integration, &filter, None, args.limit)
        .await?;
    output::emit(format, &rows, || {
        let table: Vec<Vec<String>> = rows
            .iter()
            .map(|m| {
                vec![
                    m.entity_type.to_string(),
                    m.internal_id.clone(),
                    m.external_id.clone(),
                    cell(m.last_synced_at.map(|t| t.format("%Y-%m-%d %H:%M:%S"))),
                ]
            })
            .collect();
        output::table(&["ENTITY", "INTERNAL", "EXTERNAL", "LAST SYNCED"], &table)
    })?;
    Ok(ExitCode::SUCCESS)
}

pub async fn runs(
    settings: &Settings,
    args: RunsArgs,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let store = super::connect(settings).await?;
    store.integration(args.integration).await?;
    anyhow::ensure!(args.limit >= 1, "--limit must be at least 1");
    let rows = store.runs_page(args.integration, None, args.limit).await?;
    output::emit(format, &rows, || {
        let table: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    r.id.to_string(),
                    r.trigger.to_string(),
                    r.status.to_string(),
                    r.records_synced.to_string(),
                    r.records_skipped.to_string(),
                    r.records_failed.to_string(),
                    r.queued_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                    cell(r.error.clone()),
                ]
            })
            .collect();
        output::table(
            &[
                "RUN", "TRIGGER", "STATUS", "SYNCED", "SKIPPED", "FAILED", "QUEUED", "ERROR",
            ],
            &table,
        )
    })?;
    Ok(ExitCode::SUCCESS)
}

pub async fn stats(
    settings: &Settings,
    tenant: TenantId,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let store = super::connect(settings).await?;
    anyhow::ensure!(
        store.tenant_exists(tenant).await?,
        "tenant {tenant} does not exist"
    );
    let totals = store.tenant_totals(tenant).await?;
    let health = store.tenant_health(tenant).await?;
    let json = serde_json::json!({
        "total_integrations": totals.total_integrations,
        "active_integrations": totals.active_integrations,
        "total_syncs": totals.total_syncs,
        "successful_syncs": totals.successful_syncs,
        "failed_syncs": totals.failed_syncs,
        "success_rate": (totals.success_rate() * 10.0).round() / 10.0,
        "integrations": health,
    });
    output::emit(format, &json, || {
        let table: Vec<Vec<String>> = health
            .iter()
            .map(|h| {
                vec![
                    h.id.to_string(),
                    h.name.clone(),
                    h.status.to_string(),
                    h.consecutive_failures.to_string(),
                    cell(h.last_run_status),
                    cell(h.next_sync_at.map(|t| t.format("%Y-%m-%d %H:%M"))),
                ]
            })
            .collect();
        format!(
            "integrations {} ({} active)   syncs {} ({} ok, {} failed, {:.1}% success)\n\n{}",
            totals.total_integrations,
            totals.active_integrations,
            totals.total_syncs,
            totals.successful_syncs,
            totals.failed_syncs,
            totals.success_rate(),
            output::table(
                &[
                    "ID",
                    "NAME",
                    "STATUS",
                    "FAILURES IN A ROW",
                    "LAST RUN",
                    "NEXT SYNC"
                ],
                &table
            )
        )
    })?;
    Ok(ExitCode::SUCCESS)
}
