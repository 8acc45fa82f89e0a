//! One function per subcommand. Each loads what it needs and nothing more: `config show` needs
//! no database, `migrate` needs no vault.

#[cfg(feature = "sandbox")]
mod bench;
mod browse;
mod config;
#[cfg(feature = "sandbox")]
pub mod demo;
#[cfg(feature = "sandbox")]
mod demo_api;
#[cfg(feature = "sandbox")]
mod demo_erp;
#[cfg(feature = "sandbox")]
mod fleet;
mod integrations;
mod migrate;
pub mod roles;
mod sync;
mod tokens;
mod vault;

use crate::cli::{Cli, Command, ConfigCommand, VaultCommand};
use anyhow::Context as _;
use passerelle_core::config::Settings;
use passerelle_store::Store;
use secrecy::ExposeSecret;
use std::process::ExitCode;
use std::time::Duration;

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(cli.config.as_deref()).context("cannot load configuration")?;
    crate::telemetry::init(&settings.log);
    match cli.command {
        Command::Migrate => migrate::run(&settings, cli.output).await,
        Command::Config {
            command: ConfigCommand::Show,
        } => config::show(&settings, cli.output),
        Command::Vault {
            command: VaultCommand::GenerateKey(args),
        } => vault::generate_key(&args, cli.output),
        Command::Vault {
            command: VaultCommand::Rotate(args),
        } => vault::rotate(&settings, &args, cli.output).await,
        #[cfg(feature = "sandbox")]
        Command::Demo(args) => demo::run(settings, args).await,
        #[cfg(feature = "sandbox")]
        Command::Bench(args) => bench::run(settings, args, cli.output).await,
        Command::Integrations { command } => {
            integrations::run(&settings, command, cli.output).await
        }
        Command::Sync(args) => sync::run(&settings, args, cli.output).await,
        Command::Scheduler(args) => roles::scheduler(&settings, args, cli.output).await,
        Command::Worker(args) => roles::worker(&settings, args).await,
        Command::Api(args) => roles::api(settings, args).await,
        Command::Logs(args) => browse::logs(&settings, args, cli.output).await,
        Command::Mappings(args) => browse::mappings(&settings, args, cli.output).await,
        Command::Runs(args) => browse::runs(&settings, args, cli.output).await,
        Command::Stats { tenant } => browse::stats(&settings, tenant, cli.output).await,
        Command::Tokens { command } => tokens::run(&settings, command, cli.output).await,
        #[cfg(feature = "sandbox")]
        Command::Sandbox(args) => roles::sandbox(args).await,
    }
}

/// Connects to the configured database, saying which one when it cannot.
pub async fn connect(settings: &Settings) -> anyhow::Result<Store> {
    let url = settings.database.url.expose_secret();
    Store::connect(
        url,
        settings.database.max_connections,
        Duration::from_secs(settings.database.acquire_timeout_secs),
    )
    .await
    .with_context(|| {
        format!(
            "cannot connect to Postgres at {}; is it running, and has `passerelle migrate` created the database?",
            passerelle_core::config::redact_url(url)
        )
    })
}
