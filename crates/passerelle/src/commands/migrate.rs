use crate::cli::OutputFormat;
use crate::output;
use anyhow::Context as _;
use passerelle_core::config::{Settings, redact_url};
use passerelle_store::{ensure_database, migrate};
use secrecy::ExposeSecret;
use std::process::ExitCode;

#[derive(serde::Serialize)]
struct MigrateReport {
    database: String,
    database_created: bool,
    applied: Vec<i64>,
    latest: Option<i64>,
}

pub async fn run(settings: &Settings, format: OutputFormat) -> anyhow::Result<ExitCode> {
    let url = settings.database.url.expose_secret();
    let shown = redact_url(url);
    let created = ensure_database(url)
        .await
        .with_context(|| format!("cannot create or reach the database at {shown}"))?;
    let store = super::connect(settings).await?;
    let applied = migrate(store.pool())
        .await
        .with_context(|| format!("cannot migrate {shown}"))?;
    let report = MigrateReport {
        database: shown,
        database_created: created,
        latest: passerelle_store::MIGRATOR.iter().map(|m| m.version).max(),
        applied,
    };
    output::emit(format, &report, || {
        let mut out = String::new();
        if report.database_created {
            out.push_str(&format!("created database {}\n", report.database));
        }
        if report.applied.is_empty() {
            out.push_str(&format!(
                "{} is up to date (latest migration {})\n",
                report.database,
                report.latest.unwrap_or_default()
            ));
        } else {
            out.push_str(&format!(
                "applied {} migration(s) to {}: {}\n",
                report.applied.len(),
                report.database,
                report
                    .applied
                    .iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        out
    })?;
    Ok(ExitCode::SUCCESS)
}
