//! The authorization-code grant with PKCE (RFC 6749 §4.1, RFC 7636) for the ERPs whose tokens
//! come from a person's consent: Xero and QuickBooks Online. The admin API starts it (the
//! authorization URL), the ERP redirects back with a code, and [`exchange_code`] trades the
//! code for the first token set, which the integration's credentials then hold: no admin ever
//! pastes a refresh token.

use crate::http::{HttpOptions, HttpRuntime};
use crate::oauth::{Issuer, TokenClient, request_token};
use crate::redact::Redactor;
use crate::{ConnectorContext, ConnectorError};
use base64::Engine as _;
use passerelle_core::IntegrationType;
use passerelle_core::vault::Credentials;
use serde_json::Value;
use sha2::Digest as _;
use url::Url;

/// Where and how one ERP takes consent.
#[derive(Debug, Clone)]
pub struct ConsentProfile {
    pub issuer: Issuer,
    pub authorize_url: Url,
    pub token_url: Url,
    /// The scopes the connector needs (Xero's `offline_access` brings the refresh token).
    pub scope: &'static str,
}

const XERO_SCOPE: &str = "openid profile email offline_access accounting.transactions accounting.contacts accounting.settings";
const QUICKBOOKS_SCOPE: &str = "com.intuit.quickbooks.accounting";
/// Sage's scopes are `full_access` and `readonly`: a sync writes.
const SAGE_SCOPE: &str = "full_access";

/// The consent profile of an integration type, from its settings; `None` for a type whose
/// credentials are not obtained by consent.
pub fn profile(
    integration_type: IntegrationType,
    settings: Option<&Value>,
    context: &ConnectorContext,
) -> Result<Option<ConsentProfile>, ConnectorError> {
    Ok(match integration_type {
        IntegrationType::Xero => {
            let s = crate::xero::XeroSettings::parse(settings, context)?;
            Some(ConsentProfile {
                issuer: crate::xero::XERO,
                authorize_url: s.authorize_url,
                token_url: s.token_url,
                scope: XERO_SCOPE,
            })
        }
        IntegrationType::QuickBooks => {
            let s = crate::quickbooks::QuickBooksSettings::parse(settings, context)?;
            Some(ConsentProfile {
                issuer: crate::quickbooks::INTUIT,
                authorize_url: s.authorize_url,
                token_url: s.token_url,
                scope: QUICKBOOKS_SCOPE,
            })
        }
        IntegrationType::Sage => {
            let s = crate::sage::SageSettings::parse(settings, context)?;
            Some(ConsentProfile {
                issuer: crate::sage::SAGE,
                authorize_url: s.authorize_url,
                token_url: s.token_url,
                scope: SAGE_SCOPE,
            })
        }
        _ => None,
    })
}

/// Whether the type's credentials come from a consent (so they may lack a refresh token
/// until the consent is given).
pub fn uses_consent(integration_type: IntegrationType) -> bool {
    matches!(
        integration_type,
        IntegrationType::Xero | IntegrationType::QuickBooks | IntegrationType::Sage
    )
}

/// The PKCE `code_challenge` of a verifier (method `S256`).
pub fn pkce_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier))
}

impl ConsentProfile {
    /// The URL to send the admin's browser to.
    pub fn authorization_url(
        &self,
        client_id: &str,
        redirect_uri: &str,
        state: &str,
        code_verifier: &str,
    ) -> Url {
        let mut url = self.authorize_url.clone();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", self.scope)
            .append_pair("state", state)
            .append_pair("code_challenge", &pkce_challenge(code_verifier))
            .append_pair("code_challenge_method", "S256");
        url
    }

    /// Trades the consent's code for the first token set: the credentials come back with
    /// `refresh_token`, `access_token` and `access_token_expires_at` set. A code is single
    /// use, so the request is not retried.
    pub async fn exchange_code(
        &self,
        context: &ConnectorContext,
        credentials: &Credentials,
        code: &str,
        redirect_uri: &str,
        code_verifier: &str,
    ) -> Result<Credentials, ConnectorError> {
        let vendor = self.issuer.vendor;
        let client_id = crate::required_credential(credentials, "client_id", vendor)?;
        let client_secret = crate::required_credential(credentials, "client_secret", vendor)?;
        let redactor = Redactor::new([client_secret.clone(), code.to_owned()]);
        let options = HttpOptions {
            max_retries: 0,
            client: "consent",
            ..HttpOptions::default()
        };
        let http = HttpRuntime::new(context, options, redactor)?;
        let client = TokenClient::new(self.issuer.client_auth, &client_id, &client_secret, vendor)?;
        let call = client.call(
            self.token_url.clone(),
            vec![
                ("grant_type".into(), "authorization_code".into()),
                ("code".into(), code.into()),
                ("redirect_uri".into(), redirect_uri.into()),
                ("code_verifier".into(), code_verifier.into()),
            ],
            false,
        );
        let answer = request_token(
            &http,
            &call,
            vendor,
            self.issuer.default_lifetime_secs,
            |m| format!("{vendor} refused the consent's code ({m}); start the connection again"),
        )
        .await?;
        let refresh_token = answer.refresh_token.ok_or_else(|| ConnectorError::Auth {
            message: format!(
                "{vendor} granted no refresh token; the consent must include offline access"
            ),
        })?;
        let mut next = credentials.clone();
        next.insert("refresh_token", Value::String(refresh_token));
        next.insert("access_token", Value::String(answer.access_token));
        next.insert(
            "access_token_expires_at",
            Value::String(answer.expires_at.to_rfc3339()),
        );
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7636 appendix B.
    #[test]
    fn the_challenge_is_the_rfcs_example() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn the_authorization_url_carries_every_parameter() {
        let profile = ConsentProfile {
            issuer: crate::xero::XERO,
            authorize_url: Url::parse("https://login.xero.com/identity/connect/authorize").unwrap(),
            token_url: Url::parse("https://identity.xero.com/connect/token").unwrap(),
            scope: XERO_SCOPE,
        };
        let url = profile.authorization_url("app", "https://p.example/oauth/callback", "st", "v");
        let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(query["response_type"], "code");
        assert_eq!(query["client_id"], "app");
        assert_eq!(query["redirect_uri"], "https://p.example/oauth/callback");
        assert_eq!(query["state"], "st");
        assert_eq!(query["code_challenge"], pkce_challenge("v"));
        assert_eq!(query["code_challenge_method"], "S256");
        assert!(query["scope"].contains("offline_access"));
    }
}
