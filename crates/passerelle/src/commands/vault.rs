use crate::cli::{GenerateKeyArgs, OutputFormat, RotateArgs};
use crate::output;
use anyhow::Context as _;
use passerelle_core::config::Settings;
use passerelle_core::vault::{Vault, generate_key_base64};
use passerelle_store::rotate_credentials;
use std::io::IsTerminal as _;
use std::process::ExitCode;

pub fn generate_key(args: &GenerateKeyArgs, format: OutputFormat) -> anyhow::Result<ExitCode> {
    let key = generate_key_base64();
    let id = args.key_id.to_ascii_lowercase();
    let value = serde_json::json!({ "key_id": id, "key": key });
    output::emit(format, &value, || {
        format!(
            "# Add to the configuration file (keep older keys until `passerelle vault rotate` is done):\n\
             [vault]\nactive_key = \"{id}\"\n\n[vault.keys]\n{id} = \"{key}\"\n\n\
             # or in the environment:\n\
             # PASSERELLE__VAULT__ACTIVE_KEY={id}\n# PASSERELLE__VAULT__KEYS__{upper}={key}\n",
            upper = id.to_ascii_uppercase()
        )
    })?;
    Ok(ExitCode::SUCCESS)
}

pub async fn rotate(
    settings: &Settings,
    args: &RotateArgs,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let ring = settings
        .vault
        .key_ring()
        .context("vault rotate needs the key ring")?;
    let vault = Vault::new(ring);
    let store = super::connect(settings).await?;
    let show_progress = format == OutputFormat::Table && std::io::stderr().is_terminal()
        || std::env::var_os("PASSERELLE_PROGRESS").is_some();
    let report = rotate_credentials(&store, &vault, args.batch_size, args.max_batches, |p| {
        if show_progress {
            eprintln!(
                "re-sealed {}/{} credential(s) under `{}`{}",
                p.rotated,
                p.total,
                vault.ring().active_key_id(),
                if p.failed > 0 {
                    format!(", {} could not be opened", p.failed)
                } else {
                    String::new()
                }
            );
        }
    })
    .await?;
    output::emit(format, &report, || {
        let mut out = format!(
            "re-sealed {} credential(s) under `{}`; {} still under another key\n",
            report.rotated,
            vault.ring().active_key_id(),
            report.remaining
        );
        for failure in &report.failed {
            out.push_str(&format!(
                "  integration {}: {}\n",
                failure.integration_id, failure.error
            ));
        }
        out
    })?;
    Ok(if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
