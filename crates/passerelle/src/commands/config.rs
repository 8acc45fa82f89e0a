use crate::cli::OutputFormat;
use crate::output;
use passerelle_core::config::Settings;
use std::process::ExitCode;

pub fn show(settings: &Settings, format: OutputFormat) -> anyhow::Result<ExitCode> {
    let redacted = settings.redacted();
    output::emit(format, &redacted, || {
        // TOML reads like the file the user would write.
        toml::to_string_pretty(&redacted).unwrap_or_else(|e| format!("(cannot render: {e})\n"))
    })?;
    Ok(ExitCode::SUCCESS)
}
