//! What every connector's `Settings::parse` shares: settings are stored in clear and shown
//! to admins, so a value that looks like a secret is refused there (and in a URL's query),
//! pointing at credentials, which are sealed.

use crate::ConnectorError;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Names that hold a secret, compared after lower-casing and turning `-` into `_`.
const SECRET_NAMES: [&str; 28] = [
    "access_token",
    "api_key",
    "apikey",
    "auth",
    "authorization",
    "b1session",
    "bearer",
    "client_secret",
    "credential",
    "credentials",
    "id_token",
    "jwt",
    "key",
    "pass",
    "passwd",
    "password",
    "private_key",
    "pwd",
    "refresh_token",
    "secret",
    "session",
    "session_id",
    "sessionid",
    "sig",
    "signature",
    "token",
    "username",
    "x_api_key",
];

/// Endings that make any name secret (`x_amz_signature`, `oauth_token`, `db_password`).
const SECRET_SUFFIXES: [&str; 7] = [
    "_api_key",
    "_apikey",
    "_credential",
    "_password",
    "_secret",
    "_signature",
    "_token",
];

/// Whether a settings key or a URL query parameter named `name` looks like it holds a
/// secret or a credential.
pub fn looks_like_secret(name: &str) -> bool {
    let name = name.trim().to_ascii_lowercase().replace('-', "_");
    SECRET_NAMES.contains(&name.as_str()) || SECRET_SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// Refuses `settings` (a JSON object) when one of its top-level keys looks like a secret.
pub fn refuse_secret_settings(settings: &Value) -> Result<(), ConnectorError> {
    let Some(key) = settings
        .as_object()
        .and_then(|map| map.keys().find(|k| looks_like_secret(k)))
    else {
        return Ok(());
    };
    Err(ConnectorError::fatal(format!(
        "settings.{key} looks like a secret (a credential); settings are stored in clear and shown to admins. Move it to credentials"
    )))
}

/// A connector's settings read into its raw shape `T`: present (else the error says
/// `required`), without a secret-looking key, and with no key `T` does not know (its
/// `deny_unknown_fields`). `connector` names the integration type in messages.
pub fn read<T: DeserializeOwned>(
    settings: Option<&Value>,
    connector: &str,
    required: &str,
) -> Result<T, ConnectorError> {
    let value = settings.ok_or_else(|| {
        ConnectorError::fatal(format!("{connector} settings are missing; {required}"))
    })?;
    refuse_secret_settings(value)?;
    serde_json::from_value(value.clone())
        .map_err(|e| ConnectorError::fatal(format!("invalid {connector} settings: {e}")))
}

/// A URL setting checked by the SSRF guard, or its documented default.
pub(crate) fn endpoint(
    context: &crate::ConnectorContext,
    raw: Option<&str>,
    default: &str,
    key: &str,
) -> Result<url::Url, ConnectorError> {
    context.url_policy.check(raw.unwrap_or(default), key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_looking_names_are_told_from_ordinary_settings() {
        for secret in [
            "api_key",
            "API-KEY",
            "ApiKey",
            "token",
            "client_secret",
            "refresh_token",
            "password",
            "username",
            "session_id",
            "b1session",
            "sig",
            "X-Amz-Signature",
            "X-Amz-Security-Token",
            "oauth_token",
        ] {
            assert!(looks_like_secret(secret), "{secret}");
        }
        // Every setting some connector reads.
        for ordinary in [
            "api_url",
            "token_url",
            "tenant_id",
            "realm_id",
            "auth_header",
            "endpoints",
            "sales_account_code",
            "invoice_item_id",
            "company_db",
            "card_code_prefix",
            "environment_url",
            "default_uom_schedule_id",
            "rate_limit",
            "page",
            "company",
        ] {
            assert!(!looks_like_secret(ordinary), "{ordinary}");
        }
        let err = refuse_secret_settings(&json!({"api_url": "x", "Password": "p"})).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("settings.Password looks like a secret"),
            "{err}"
        );
        assert!(!err.to_string().contains("\"p\""), "{err}");
        assert!(refuse_secret_settings(&json!({"api_url": "x"})).is_ok());
    }
}
