use crate::cli::{OutputFormat, SyncArgs};
use crate::{output, service, worker};
use passerelle_core::RunStatus;
use passerelle_core::config::Settings;
use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

pub async fn run(
    settings: &Settings,
    args: SyncArgs,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let store = super::connect(settings).await?;
    let (broker, publisher) = worker::connect_publisher(settings).await?;
    let run = service::trigger_sync(
        &store,
        &publisher,
        args.integration,
        &args.entities,
        args.dry_run,
    )
    .await;
    broker.close().await;
    let run = run?;
    if !args.wait {
        output::emit(format, &run, || {
            format!(
                "enqueued run {} for integration {}\n",
                run.id, run.integration_id
            )
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    let started = Instant::now();
    let show_progress = format == OutputFormat::Table || std::io::stderr().is_terminal();
    let mut last_shown = None;
    loop {
        let Some(current) = store.run(run.id).await? else {
            anyhow::bail!("run {} disappeared (its integration was deleted?)", run.id);
        };
        let counts = (
            current.status,
            current.records_synced,
            current.records_skipped,
            current.records_failed,
            current.resume_at,
        );
        if show_progress && last_shown != Some(counts) {
            eprintln!("{}", progress_line(&current, store.now()));
            last_shown = Some(counts);
        }
        if current.status.is_terminal() {
            let secs = started.elapsed().as_secs_f64();
            output::emit(format, &current, || summary(&current, secs))?;
            return Ok(match current.status {
                RunStatus::Succeeded => ExitCode::SUCCESS,
                RunStatus::Partial => ExitCode::from(3),
                _ => ExitCode::FAILURE,
            });
        }
        if started.elapsed() > Duration::from_secs(args.timeout) {
            eprintln!(
                "gave up waiting after {} s; run {} is still {} and goes on",
                args.timeout, current.id, current.status
            );
            return Ok(ExitCode::from(4));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The finished run in one paragraph (and a dry run's table).
fn summary(current: &passerelle_store::SyncRun, secs: f64) -> String {
    format!(
        "run {} {} in {:.1}s: synced {}, skipped {}, failed {}{}\n",
        current.id,
        current.status,
        secs,
        current.records_synced,
        current.records_skipped,
        current.records_failed,
        current
            .error
            .as_deref()
            .map(|e| format!("\n  {e}"))
            .unwrap_or_default()
    ) + &current
        .dry_run_report
        .as_ref()
        .map(dry_run_table)
        .unwrap_or_default()
}

/// What a dry run found, one row per entity and direction.
fn dry_run_table(report: &passerelle_core::dry_run::DryRunReport) -> String {
    let rows: Vec<Vec<String>> = report
        .steps
        .iter()
        .map(|d| {
            vec![
                d.entity.to_string(),
                d.direction.to_string(),
                d.create.to_string(),
                d.update.to_string(),
                d.delete.to_string(),
                d.skip.to_string(),
                d.failed.to_string(),
            ]
        })
        .collect();
    format!(
        "dry run: nothing was sent or changed; a real run would do this (samples: --output json)\n{}",
        output::table(
            &[
                "ENTITY",
                "DIRECTION",
                "CREATE",
                "UPDATE",
                "DELETE",
                "SKIP",
                "FAILED"
            ],
            &rows
        )
    )
}

/// One progress line; a run waiting on purpose (a retry, an ERP's `Retry-After`, a spent
/// quota) says until when and why, so a long wait reads as a wait, not a hang.
fn progress_line(run: &passerelle_store::SyncRun, now: chrono::DateTime<chrono::Utc>) -> String {
    let mut line = format!(
        "run {}: {} — synced {}, skipped {}, failed {}",
        run.id, run.status, run.records_synced, run.records_skipped, run.records_failed
    );
    if run.status == RunStatus::Queued
        && let Some(resume_at) = run.resume_at.filter(|at| *at > now)
    {
        line.push_str(&format!(
            "; waiting until {} ({:.0} s){}",
            resume_at.format("%Y-%m-%d %H:%M:%S UTC"),
            (resume_at - now).num_milliseconds() as f64 / 1000.0,
            run.error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ));
    }
    line
}
