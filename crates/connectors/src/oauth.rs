//! OAuth2 access tokens for connectors whose ERP rotates refresh tokens (Xero, QuickBooks):
//! refreshed under a mutex (two refreshes of one token set would race at the ERP), reused
//! until a minute before they expire, and stored through the [`CredentialStore`] *before* the
//! new access token is used, so a crash can never lose the only valid refresh token.

use crate::http::{HttpCall, HttpRuntime};
use crate::{ConnectorError, CredentialStore};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use passerelle_core::vault::Credentials;
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::Mutex;
use url::Url;

/// The values of `credentials` that are secrets, for the [`crate::http::Redactor`].
pub(crate) fn secrets(credentials: &Credentials) -> Vec<String> {
    ["client_secret", "refresh_token", "access_token"]
        .into_iter()
        .filter_map(|name| credentials.get_str(name).map(str::to_owned))
        .collect()
}

/// The `Authorization: Bearer` header for `token`, marked sensitive; `vendor` issued it.
pub(crate) fn bearer(token: &str, vendor: &str) -> Result<HeaderValue, ConnectorError> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
        ConnectorError::transient(format!(
            "{vendor} returned an access token that cannot be sent"
        ))
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// Who issues the tokens, for messages.
#[derive(Debug, Clone, Copy)]
pub struct Issuer {
    /// "Xero", "Intuit".
    pub vendor: &'static str,
    /// "the Xero app", "the QuickBooks app".
    pub app: &'static str,
    /// Used when the answer has no `expires_in`.
    pub default_lifetime_secs: i64,
    /// Whether credentials without a refresh token use the `client_credentials` grant.
    pub client_credentials: bool,
}

#[derive(Debug)]
struct TokenState {
    credentials: Credentials,
    access_token: Option<String>,
    expires_at: Option<DateTime<Utc>>,
}

pub struct OAuthTokens {
    issuer: Issuer,
    token_url: Url,
    /// `Basic base64(client_id:client_secret)`, marked sensitive.
    client_auth: HeaderValue,
    state: Mutex<TokenState>,
    store: Option<Arc<dyn CredentialStore>>,
}

impl std::fmt::Debug for OAuthTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthTokens")
            .field("issuer", &self.issuer.vendor)
            .finish_non_exhaustive()
    }
}

impl OAuthTokens {
    /// Reads `client_id`, `client_secret` and any stored `access_token` /
    /// `access_token_expires_at` from the credentials.
    pub fn new(
        issuer: Issuer,
        token_url: Url,
        credentials: Credentials,
        store: Option<Arc<dyn CredentialStore>>,
    ) -> Result<Self, ConnectorError> {
        let field = |name: &str| {
            credentials
                .get_str(name)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| ConnectorError::Auth {
                    message: format!("{} credentials need `{name}`", issuer.vendor),
                })
        };
        let (client_id, client_secret) = (field("client_id")?, field("client_secret")?);
        if !issuer.client_credentials
            && credentials
                .get_str("refresh_token")
                .is_none_or(str::is_empty)
        {
            return Err(ConnectorError::Auth {
                message: format!("{} credentials need `refresh_token`", issuer.vendor),
            });
        }
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("{client_id}:{client_secret}"));
        let mut client_auth =
            HeaderValue::from_str(&format!("Basic {basic}")).map_err(|_| ConnectorError::Auth {
                message: format!(
                    "{} client_id or client_secret contains characters that cannot be sent",
                    issuer.vendor
                ),
            })?;
        client_auth.set_sensitive(true);
        let access_token = credentials.get_str("access_token").map(str::to_owned);
        let expires_at = credentials
            .get_str("access_token_expires_at")
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        Ok(Self {
            issuer,
            token_url,
            client_auth,
            state: Mutex::new(TokenState {
                credentials,
                access_token,
                expires_at,
            }),
            store,
        })
    }

    /// A valid access token; refreshes (storing a rotated token first) when it is about to
    /// expire or when `force` (the ERP answered 401).
    pub async fn access_token(
        &self,
        http: &HttpRuntime,
        force: bool,
    ) -> Result<String, ConnectorError> {
        let mut state = self.state.lock().await;
        if !force
            && let (Some(token), Some(expires_at)) = (&state.access_token, state.expires_at)
            && expires_at > Utc::now() + chrono::Duration::seconds(60)
        {
            return Ok(token.clone());
        }
        let refresh_token = state
            .credentials
            .get_str("refresh_token")
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        let form = match &refresh_token {
            Some(rt) => vec![
                ("grant_type".to_owned(), "refresh_token".to_owned()),
                ("refresh_token".to_owned(), rt.clone()),
            ],
            None => vec![("grant_type".to_owned(), "client_credentials".to_owned())],
        };
        let call = HttpCall {
            method: Method::POST,
            url: self.token_url.clone(),
            headers: vec![(AUTHORIZATION, self.client_auth.clone())],
            body: None,
            raw: None,
            form: Some(form),
            // A refresh whose answer is lost may be repeated: the replaced refresh token
            // still works for a grace period.
            idempotent: true,
            conflict_means_in_flight: false,
        };
        let reply = match http.send(&call).await {
            Ok(r) => r,
            Err(ConnectorError::Rejected { message, .. } | ConnectorError::Auth { message }) => {
                return Err(ConnectorError::Auth {
                    message: format!(
                        "{} refused the token refresh ({message}); the refresh token was revoked, expired or used elsewhere, or the client credentials are wrong: reconnect {} and store new credentials",
                        self.issuer.vendor, self.issuer.app
                    ),
                });
            }
            Err(e) => return Err(e),
        };
        let body = reply.json("POST token")?;
        let access = body
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ConnectorError::transient(format!(
                    "the {} token answer has no access_token",
                    self.issuer.vendor
                ))
            })?
            .to_owned();
        let lifetime = body
            .get("expires_in")
            .and_then(Value::as_i64)
            .unwrap_or(self.issuer.default_lifetime_secs);
        let expires_at = Utc::now() + chrono::Duration::seconds(lifetime);
        let mut next = state.credentials.clone();
        if let Some(rotated) = body.get("refresh_token").and_then(Value::as_str) {
            next.insert("refresh_token", Value::String(rotated.to_owned()));
        }
        next.insert("access_token", Value::String(access.clone()));
        next.insert(
            "access_token_expires_at",
            Value::String(expires_at.to_rfc3339()),
        );
        let rotated =
            refresh_token.is_some() && next.get_str("refresh_token") != refresh_token.as_deref();
        // Persist before use: the old refresh token dies after its grace period, so the new
        // one must be safe in the database before anything else happens.
        match &self.store {
            Some(store) => store.save(&next).await?,
            None if rotated => {
                return Err(ConnectorError::fatal(format!(
                    "{} rotated the refresh token but there is nowhere to store it here; run the sync through a worker",
                    self.issuer.vendor
                )));
            }
            None => {}
        }
        state.credentials = next;
        state.access_token = Some(access.clone());
        state.expires_at = Some(expires_at);
        Ok(access)
    }
}
