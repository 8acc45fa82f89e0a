//! OAuth2 access tokens, reused until a minute before they expire and renewed under a mutex
//! (concurrent requests of one run ask for one token, not one each).
//!
//! - [`OAuthTokens`]: for ERPs that rotate refresh tokens (Xero, QuickBooks); the new token
//!   set is stored through the [`CredentialStore`] *before* the new access token is used, so a
//!   crash can never lose the only valid refresh token.
//! - [`ClientCredentials`]: the client-credentials grant with the client's id and secret in
//!   the form (Entra ID for Dynamics 365); nothing to store, a new token is simply asked for.

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
    token: CachedToken,
}

/// An access token and when it expires.
#[derive(Debug, Default)]
struct CachedToken {
    access_token: Option<String>,
    expires_at: Option<DateTime<Utc>>,
}

impl CachedToken {
    /// The token while it has more than a minute left.
    fn fresh(&self) -> Option<String> {
        match (&self.access_token, self.expires_at) {
            (Some(token), Some(expires_at))
                if expires_at > Utc::now() + chrono::Duration::seconds(60) =>
            {
                Some(token.clone())
            }
            _ => None,
        }
    }
}

/// What a token endpoint answered.
struct TokenAnswer {
    access_token: String,
    expires_at: DateTime<Utc>,
    refresh_token: Option<String>,
}

/// Posts a token request (`call`); a refusal is an `Auth` error whose message `refused`
/// builds from the endpoint's. `vendor` issues the tokens; an answer without `expires_in`
/// lives `default_lifetime_secs`.
async fn request_token(
    http: &HttpRuntime,
    call: &HttpCall,
    vendor: &str,
    default_lifetime_secs: i64,
    refused: impl FnOnce(&str) -> String,
) -> Result<TokenAnswer, ConnectorError> {
    let reply = match http.send(call).await {
        Ok(r) => r,
        Err(ConnectorError::Rejected { message, .. } | ConnectorError::Auth { message }) => {
            return Err(ConnectorError::Auth {
                message: refused(&message),
            });
        }
        Err(e) => return Err(e),
    };
    let body = reply.json("POST token")?;
    let access_token = body
        .get("access_token")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ConnectorError::transient(format!("the {vendor} token answer has no access_token"))
        })?
        .to_owned();
    // A number, or (Entra ID's v1 endpoint) a number in a string.
    let lifetime = body
        .get("expires_in")
        .and_then(|v| {
            v.as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
        .unwrap_or(default_lifetime_secs);
    Ok(TokenAnswer {
        access_token,
        expires_at: Utc::now() + chrono::Duration::seconds(lifetime),
        refresh_token: body
            .get("refresh_token")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
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
        let client_id = crate::required_credential(&credentials, "client_id", issuer.vendor)?;
        let client_secret =
            crate::required_credential(&credentials, "client_secret", issuer.vendor)?;
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
                token: CachedToken {
                    access_token,
                    expires_at,
                },
            }),
            store,
        })
    }

    /// Sends the call `build` makes around a bearer token, through `runtime` (tokens are
    /// refreshed through `token_runtime`). A 401 means the token was revoked or expired
    /// early: it is refreshed once and the call repeated; a second 401 is `refused`. Errors
    /// come back redacted.
    pub async fn send_authorised(
        &self,
        token_runtime: &HttpRuntime,
        runtime: &HttpRuntime,
        vendor: &str,
        refused: &str,
        build: impl Fn(HeaderValue) -> HttpCall,
    ) -> Result<crate::http::HttpReply, ConnectorError> {
        let mut force = false;
        for attempt in 0..2 {
            let token = self.access_token(token_runtime, force).await?;
            let call = build(bearer(&token, vendor)?);
            match runtime.send(&call).await {
                Err(ConnectorError::Auth { .. }) if attempt == 0 => force = true,
                other => return other.map_err(|e| runtime.redactor().error(e)),
            }
        }
        Err(ConnectorError::Auth {
            message: refused.to_owned(),
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
        if !force && let Some(token) = state.token.fresh() {
            return Ok(token);
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
        let Issuer { vendor, app, .. } = self.issuer;
        let answer = request_token(http, &call, vendor, self.issuer.default_lifetime_secs, |m| {
            format!(
                "{vendor} refused the token refresh ({m}); the refresh token was revoked, expired or used elsewhere, or the client credentials are wrong: reconnect {app} and store new credentials"
            )
        })
        .await?;
        let next = self
            .persist(&state.credentials, refresh_token, &answer)
            .await?;
        state.credentials = next;
        state.token = CachedToken {
            access_token: Some(answer.access_token.clone()),
            expires_at: Some(answer.expires_at),
        };
        Ok(answer.access_token)
    }

    /// The credentials with the new token set, stored before use: the old refresh token dies
    /// after its grace period, so the new one must be safe in the database before anything
    /// else happens.
    async fn persist(
        &self,
        current: &Credentials,
        refresh_token: Option<String>,
        answer: &TokenAnswer,
    ) -> Result<Credentials, ConnectorError> {
        let mut next = current.clone();
        if let Some(rotated) = &answer.refresh_token {
            next.insert("refresh_token", Value::String(rotated.clone()));
        }
        next.insert("access_token", Value::String(answer.access_token.clone()));
        next.insert(
            "access_token_expires_at",
            Value::String(answer.expires_at.to_rfc3339()),
        );
        let rotated =
            refresh_token.is_some() && next.get_str("refresh_token") != refresh_token.as_deref();
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
        Ok(next)
    }
}

/// The OAuth2 client-credentials grant (RFC 6749 §4.4) with the client's id and secret in the
/// form (`client_secret_post`) and an optional `scope`: no refresh token, nothing to store; a
/// token is asked for again when it nears expiry, or on demand after a `401`.
pub struct ClientCredentials {
    /// Who issues the tokens ("Entra ID"), for messages.
    vendor: &'static str,
    /// What to check when the issuer refuses the credentials.
    refused_hint: &'static str,
    token_url: Url,
    /// `grant_type`, `client_id`, `client_secret` and `scope`: holds the secret.
    form: Vec<(String, String)>,
    /// Used when the answer has no `expires_in`.
    default_lifetime_secs: i64,
    token: Mutex<CachedToken>,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("vendor", &self.vendor)
            .finish_non_exhaustive()
    }
}

/// Who issues client-credentials tokens and what to say when they are refused.
#[derive(Debug, Clone, Copy)]
pub struct ClientCredentialsIssuer {
    pub vendor: &'static str,
    pub refused_hint: &'static str,
    pub default_lifetime_secs: i64,
}

impl ClientCredentials {
    pub fn new(
        issuer: ClientCredentialsIssuer,
        token_url: Url,
        client_id: String,
        client_secret: String,
        scope: Option<String>,
    ) -> Self {
        let mut form = vec![
            ("grant_type".to_owned(), "client_credentials".to_owned()),
            ("client_id".to_owned(), client_id),
            ("client_secret".to_owned(), client_secret),
        ];
        form.extend(scope.map(|scope| ("scope".to_owned(), scope)));
        Self {
            vendor: issuer.vendor,
            refused_hint: issuer.refused_hint,
            token_url,
            form,
            default_lifetime_secs: issuer.default_lifetime_secs,
            token: Mutex::new(CachedToken::default()),
        }
    }

    /// A valid access token, asking for a new one when it nears expiry or when `renew`.
    pub async fn access_token(
        &self,
        http: &HttpRuntime,
        renew: bool,
    ) -> Result<String, ConnectorError> {
        let mut token = self.token.lock().await;
        if !renew && let Some(access) = token.fresh() {
            return Ok(access);
        }
        let call = HttpCall {
            method: Method::POST,
            url: self.token_url.clone(),
            headers: Vec::new(),
            body: None,
            raw: None,
            form: Some(self.form.clone()),
            // Asking for a token twice is harmless.
            idempotent: true,
            conflict_means_in_flight: false,
        };
        let (vendor, hint) = (self.vendor, self.refused_hint);
        let answer = request_token(http, &call, vendor, self.default_lifetime_secs, |m| {
            format!("{vendor} refused the client credentials ({m}); {hint}")
        })
        .await?;
        *token = CachedToken {
            access_token: Some(answer.access_token.clone()),
            expires_at: Some(answer.expires_at),
        };
        Ok(answer.access_token)
    }
}
