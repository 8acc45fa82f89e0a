//! `passerelle tokens`: the admin API's bearer tokens.

use crate::api::auth;
use crate::cli::{OutputFormat, TokenCreateArgs, TokensCommand};
use crate::output;
use anyhow::Context as _;
use chrono::{DateTime, Duration, Utc};
use passerelle_core::ApiRole;
use passerelle_core::config::Settings;
use passerelle_store::{ApiToken, NewApiToken};
use std::process::ExitCode;

/// `90d`, `12h`, `30m` or `never`.
pub fn parse_lifetime(raw: &str) -> anyhow::Result<Option<Duration>> {
    let raw = raw.trim();
    if raw == "never" {
        return Ok(None);
    }
    let invalid = || {
        anyhow::anyhow!(
            "--expires `{raw}` is not a lifetime; give a number and a unit (`90d`, `12h`, `30m`) or `never`"
        )
    };
    let (split, _) = raw.char_indices().last().ok_or_else(invalid)?;
    let (number, unit) = raw.split_at(split);
    let n: i64 = number.parse().map_err(|_| invalid())?;
    if n <= 0 {
        return Err(invalid());
    }
    let lifetime = match unit {
        "d" => Duration::try_days(n),
        "h" => Duration::try_hours(n),
        "m" => Duration::try_minutes(n),
        _ => None,
    };
    lifetime.map(Some).ok_or_else(invalid)
}

fn when(t: Option<DateTime<Utc>>, none: &str) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| none.to_owned())
}

fn rows(tokens: &[ApiToken], now: DateTime<Utc>) -> String {
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            let state = if t.revoked_at.is_some() {
                "revoked"
            } else if t.is_live(now) {
                "live"
            } else {
                "expired"
            };
            vec![
                t.id.to_string(),
                t.tenant_id.to_string(),
                t.name.clone(),
                t.role.to_string(),
                format!("{}…", t.token_prefix),
                state.to_owned(),
                when(t.expires_at, "never"),
                when(t.last_used_at, "-"),
            ]
        })
        .collect();
    output::table(
        &[
            "ID",
            "TENANT",
            "NAME",
            "ROLE",
            "TOKEN",
            "STATE",
            "EXPIRES",
            "LAST USED",
        ],
        &rows,
    )
}

async fn create(
    store: &passerelle_store::Store,
    args: TokenCreateArgs,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let role: ApiRole = args.role.parse().context("--role")?;
    let lifetime = parse_lifetime(&args.expires)?;
    let now = store.now();
    let generated = auth::generate();
    let name = args
        .name
        .unwrap_or_else(|| format!("{role}-{}", now.format("%Y%m%d-%H%M%S")));
    let token = store
        .create_api_token(NewApiToken {
            tenant_id: args.tenant,
            name,
            role,
            token_prefix: generated.shown_prefix.clone(),
            token_hash: generated.hash,
            expires_at: lifetime.map(|l| now + l),
        })
        .await?;
    let json = serde_json::json!({ "token": generated.secret, "details": token });
    output::emit(format, &json, || {
        format!(
            "token {} ({} of tenant {}, expires {}):\n\n  {}\n\nIt is shown only now; store it somewhere safe. Use it as `Authorization: Bearer <token>`.\n",
            token.id,
            token.role,
            token.tenant_id,
            when(token.expires_at, "never"),
            generated.secret
        )
    })
}

pub async fn run(
    settings: &Settings,
    command: TokensCommand,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let store = super::connect(settings).await?;
    match command {
        TokensCommand::Create(args) => create(&store, args, format).await?,
        TokensCommand::List { tenant } => {
            let tokens = store.api_tokens(tenant).await?;
            output::emit(format, &tokens, || rows(&tokens, store.now()))?;
        }
        TokensCommand::Revoke { id } => {
            let token = store.revoke_api_token(id).await?;
            output::emit(format, &token, || {
                format!("revoked token {} ({})\n", token.id, token.name)
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_parse_and_nonsense_is_refused() {
        assert_eq!(parse_lifetime("90d").unwrap(), Some(Duration::days(90)));
        assert_eq!(parse_lifetime("12h").unwrap(), Some(Duration::hours(12)));
        assert_eq!(parse_lifetime("never").unwrap(), None);
        for bad in ["", "d", "0d", "-1d", "10y", "1.5d", "9é"] {
            assert!(parse_lifetime(bad).is_err(), "{bad}");
        }
    }
}
