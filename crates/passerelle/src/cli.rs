//! Command-line surface. Every command that prints data accepts `--output json`.

use clap::{Args, Parser, Subcommand, ValueEnum};
use passerelle_core::{IntegrationId, TenantId};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "passerelle",
    version,
    about = "Keeps a B2B wholesale platform in sync with each tenant's ERP"
)]
pub struct Cli {
    /// TOML configuration file; environment variables PASSERELLE__SECTION__KEY override it.
    #[arg(long, global = true, env = "PASSERELLE_CONFIG")]
    pub config: Option<PathBuf>,

    /// How to print results: a table for people, JSON for scripts.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the database if needed and apply pending migrations (safe to run twice, or from
    /// several processes at once).
    Migrate,
    /// Inspect configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Manage the credential vault's keys.
    Vault {
        #[command(subcommand)]
        command: VaultCommand,
    },
    /// Run the end-to-end demo against the built-in ERP sandbox.
    #[cfg(feature = "sandbox")]
    Demo(DemoArgs),
    /// Manage integrations (the legacy app's admin screens).
    Integrations {
        #[command(subcommand)]
        command: IntegrationsCommand,
    },
    /// Enqueue a manual sync of an integration (served before scheduled jobs).
    Sync(SyncArgs),
    /// Run the scheduler role: enqueue due integrations.
    Scheduler(SchedulerArgs),
    /// Run the worker role: consume and execute sync jobs.
    Worker(WorkerArgs),
    /// An integration's logs, newest first (the legacy app's log screens), or all of them
    /// exported as CSV or NDJSON.
    Logs(LogsArgs),
    /// An integration's ID mappings (platform row ↔ ERP record).
    Mappings(MappingsArgs),
    /// An integration's runs, newest first.
    Runs(RunsArgs),
    /// The dashboard of one tenant: totals, success rate and each integration's health.
    Stats {
        #[arg(long)]
        tenant: TenantId,
    },
    /// Run the admin HTTP API (`/api/v1`, bearer tokens; listens on [api] listen).
    Api(ApiArgs),
    /// Manage the admin API's bearer tokens.
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
    },
    /// Serve the ERP simulators on loopback.
    #[cfg(feature = "sandbox")]
    Sandbox(SandboxArgs),
    /// Measure throughput and latency (build with --release); see docs/performance.md.
    #[cfg(feature = "sandbox")]
    Bench(BenchArgs),
}

#[cfg(feature = "sandbox")]
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Orders exported by the throughput run.
    #[arg(long, default_value_t = 20_000)]
    pub orders: u32,
    /// Manual syncs timed for the latency figure.
    #[arg(long, default_value_t = 30)]
    pub samples: usize,
    /// Due integrations for the scheduler figure.
    #[arg(long, default_value_t = 100_000)]
    pub integrations: i64,
    /// Requests in flight at once to the simulator during the throughput run (the custom API
    /// connector's `concurrency` setting).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Requests per second the simulator allows (and the integration declares) in the
    /// rate-limited run.
    #[arg(long, default_value_t = 50)]
    pub rate_limit: u32,
    /// Orders exported in the rate-limited run.
    #[arg(long, default_value_t = 1000)]
    pub rate_limited_orders: i64,
    /// Products exported to each ERP simulator under its (time-compressed) limit (a tenth of
    /// them to SAP Business One, whose limit is per second, a third to Dynamics 365, half to
    /// Odoo, a tenth to NetSuite, whose limit is concurrency, and a tenth to Sage).
    #[arg(long, default_value_t = 3000)]
    pub erp_products: i64,
}

#[cfg(feature = "sandbox")]
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Orders to seed for the demo tenant.
    #[arg(long, default_value_t = 3000)]
    pub orders: u32,
    /// Keep the demo database from an earlier run instead of starting afresh.
    #[arg(long)]
    pub keep: bool,
    /// Where the demo's admin API listens (default: a free port on loopback).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub api_listen: String,
    /// Exit after the summary instead of keeping the admin API up until Ctrl-C (the
    /// default when the demo does not run in a terminal).
    #[arg(long)]
    pub exit: bool,
}

#[derive(Debug, Subcommand)]
pub enum IntegrationsCommand {
    /// Create an integration (status `inactive`, as in the legacy app).
    Create(CreateArgs),
    /// List integrations (not deleted).
    List {
        #[arg(long)]
        tenant: Option<TenantId>,
    },
    /// Show one integration with its recent runs.
    Show { id: IntegrationId },
    /// Change an integration; only the options given are changed.
    Update(UpdateArgs),
    /// Soft-delete an integration: logs and mappings stay for audit, syncing stops.
    Delete { id: IntegrationId },
    /// Test the connection (the legacy app's test button): success sets `testing`, failure `error`.
    Test { id: IntegrationId },
    /// Activate: scheduled integrations become due at once.
    Activate { id: IntegrationId },
    /// Deactivate: no more scheduled syncs.
    Deactivate { id: IntegrationId },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[arg(long)]
    pub tenant: TenantId,
    #[arg(long)]
    pub name: String,
    /// sap_b1, dynamics_365, sage, quickbooks, odoo, xero, netsuite or custom_api.
    #[arg(long = "type")]
    pub integration_type: String,
    #[command(flatten)]
    pub fields: IntegrationFields,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    pub id: IntegrationId,
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub fields: IntegrationFields,
}

#[derive(Debug, Args)]
pub struct IntegrationFields {
    /// export, import or bidirectional.
    #[arg(long)]
    pub direction: Option<String>,
    /// manual, hourly, daily or weekly.
    #[arg(long)]
    pub frequency: Option<String>,
    /// Entities to sync, comma-separated: product,customer,order,invoice,inventory.
    #[arg(long, value_delimiter = ',')]
    pub entities: Option<Vec<String>>,
    /// Settings as JSON, or @path to a JSON file.
    #[arg(long)]
    pub settings: Option<String>,
    /// Credentials as JSON, or @path to a JSON file (stored encrypted; never printed).
    #[arg(long)]
    pub credentials: Option<String>,
    /// POST a signed event here when a run ends (Standard Webhooks); `none` removes it. The
    /// signing secret is printed once, when the first URL is set.
    #[arg(long)]
    pub webhook_url: Option<String>,
    /// Who wins a bidirectional conflict, per entity: `products=erp,customers=platform`
    /// (entities: products, customers, orders, invoices, inventory; sides: platform, erp).
    /// Replaces the stored choices; unnamed entities keep their default.
    #[arg(long)]
    pub conflict_policy: Option<String>,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    pub integration: IntegrationId,
    /// Limit the run to these entities (repeatable); default: every enabled entity.
    #[arg(long = "entity")]
    pub entities: Vec<String>,
    /// Read, map and diff as a real run would, but send nothing to the ERP and change no
    /// mapping or cursor; with --wait, print what a real run would create, update and skip.
    #[arg(long)]
    pub dry_run: bool,
    /// Wait for the run to finish, show progress, print its result; exit 1 if it failed, 3 if
    /// some records were rejected.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this many seconds (the run goes on).
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    pub integration: IntegrationId,
    /// product, customer, order, invoice or inventory.
    #[arg(long)]
    pub entity: Option<String>,
    /// success, failed or pending.
    #[arg(long)]
    pub status: Option<String>,
    /// export or import.
    #[arg(long)]
    pub direction: Option<String>,
    /// create, update, delete or sync.
    #[arg(long)]
    pub action: Option<String>,
    /// Rows written since: an RFC 3339 time, or an age such as `24h`, `7d`, `30m`.
    #[arg(long)]
    pub since: Option<String>,
    /// Rows written before: an RFC 3339 time, or an age.
    #[arg(long)]
    pub until: Option<String>,
    #[command(flatten)]
    pub ids: RecordIds,
    /// Rows to show (ignored by --export, which writes every matching row).
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
    /// Write every matching row to stdout as `csv` or `ndjson`, streamed.
    #[arg(long)]
    pub export: Option<String>,
}

#[derive(Debug, Args)]
pub struct MappingsArgs {
    pub integration: IntegrationId,
    /// product, customer, order, invoice or inventory.
    #[arg(long)]
    pub entity: Option<String>,
    #[command(flatten)]
    pub ids: RecordIds,
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
}

/// One record, by either of its ids.
#[derive(Debug, Args)]
pub struct RecordIds {
    /// The platform row's id.
    #[arg(long)]
    pub internal_id: Option<String>,
    /// The ERP record's id.
    #[arg(long)]
    pub external_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    pub integration: IntegrationId,
    #[arg(long, default_value_t = 20)]
    pub limit: i64,
}

#[derive(Debug, Args)]
pub struct ApiArgs {
    /// Address to listen on, overriding [api] listen (e.g. 0.0.0.0:8080).
    #[arg(long)]
    pub listen: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Make a token for one tenant; it is printed once and only its digest is stored.
    Create(TokenCreateArgs),
    /// List tokens (never their secrets), newest first.
    List {
        #[arg(long)]
        tenant: Option<TenantId>,
    },
    /// Revoke a token at once.
    Revoke { id: passerelle_core::ApiTokenId },
}

#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    #[arg(long)]
    pub tenant: TenantId,
    /// `admin` (read and write) or `viewer` (read only).
    #[arg(long)]
    pub role: String,
    /// A name to recognise the token by (default: `<role>-<date>`).
    #[arg(long)]
    pub name: Option<String>,
    /// Lifetime: `90d`, `12h`, `30m`, or `never`.
    #[arg(long, default_value = "90d")]
    pub expires: String,
}

#[derive(Debug, Args)]
pub struct SchedulerArgs {
    /// One tick, then exit.
    #[arg(long)]
    pub once: bool,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Jobs at once, 1 or more (default from [worker] concurrency).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: Option<u16>,
}

#[cfg(feature = "sandbox")]
#[derive(Debug, Args)]
pub struct SandboxArgs {
    #[arg(long, default_value_t = 8700)]
    pub port: u16,
    /// Provision a custom-API account with this key (repeatable).
    #[arg(long = "custom-api-key")]
    pub custom_api_keys: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration (defaults, file, environment) with secrets redacted.
    Show,
}

#[derive(Debug, Subcommand)]
pub enum VaultCommand {
    /// Print a new random AES-256 key and the configuration lines that install it.
    GenerateKey(GenerateKeyArgs),
    /// Re-seal every stored credential under the active key, in batches; resumable.
    Rotate(RotateArgs),
}

#[derive(Debug, Args)]
pub struct GenerateKeyArgs {
    /// Id to suggest for the key in the printed configuration.
    #[arg(long, default_value_t = default_key_id())]
    pub key_id: String,
}

fn default_key_id() -> String {
    chrono::Utc::now().format("k%Y%m%d").to_string()
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    /// Rows re-sealed per transaction.
    #[arg(long, default_value_t = 500)]
    pub batch_size: i64,
    /// Stop after this many batches (the rest is done by the next run).
    #[arg(long)]
    pub max_batches: Option<usize>,
}
