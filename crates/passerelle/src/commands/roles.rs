#[cfg(feature = "sandbox")]
use crate::cli::SandboxArgs;
use crate::cli::{ApiArgs, OutputFormat, SchedulerArgs, WorkerArgs};
use crate::{api, output, scheduler, worker};
use passerelle_core::config::Settings;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// A token cancelled on SIGTERM or SIGINT.
pub fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => info!("SIGTERM received"),
                        _ = int.recv() => info!("SIGINT received"),
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        trigger.cancel();
    });
    token
}

pub async fn scheduler(
    settings: &Settings,
    args: SchedulerArgs,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let tick = scheduler::run(settings.clone(), args.once, shutdown_signal()).await?;
    if args.once {
        output::emit(format, &tick, || {
            format!(
                "enqueued {} run(s), republished {}\n",
                tick.enqueued, tick.republished
            )
        })?;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn worker(settings: &Settings, args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let concurrency = args.concurrency.unwrap_or(settings.worker.concurrency);
    worker::run(settings.clone(), concurrency, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

pub async fn api(mut settings: Settings, args: ApiArgs) -> anyhow::Result<ExitCode> {
    if let Some(listen) = args.listen {
        settings.api.listen = listen;
    }
    api::run(settings, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// The `sandbox` role: only in builds with the `sandbox` feature (the default).
#[cfg(feature = "sandbox")]
pub async fn sandbox(args: SandboxArgs) -> anyhow::Result<ExitCode> {
    let sandbox = passerelle_sandbox::Sandbox::start(args.port).await?;
    for key in &args.custom_api_keys {
        sandbox
            .custom_api()
            .add_account(passerelle_sandbox::custom_api::AccountConfig {
                api_key: key.clone(),
                auth_header: "X-API-Key".into(),
                requests_per_second: None,
            });
    }
    eprintln!("sandbox listening on http://{}", sandbox.addr());
    eprintln!(
        "Xero: {}   QuickBooks: {}   SAP Business One: {}   Dynamics 365: {}",
        sandbox.xero_url(),
        sandbox.quickbooks_url(),
        sandbox.sap_b1_url(),
        sandbox.dataverse_url()
    );
    eprintln!(
        "custom API: {} ({} account(s))",
        sandbox.custom_api_url(),
        args.custom_api_keys.len()
    );
    shutdown_signal().cancelled().await;
    sandbox.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
