//! The OAuth 2.0 client-credentials token endpoint (M2M): a JWT assertion signed with the
//! private key of a certificate uploaded to the account, exchanged for a bearer token.

use super::{AccountState, M2mClient};
use crate::problem::Reply;
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::{URL_SAFE_NO_PAD, URL_SAFE_NO_PAD as TOKEN_B64};
use chrono::{DateTime, TimeDelta, Utc};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use serde_json::{Value, json};

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// NetSuite: `exp` at most 60 minutes after `iat`.
const MAX_ASSERTION_LIFETIME: i64 = 3600;
/// Clock skew tolerated on `iat`.
const SKEW_SECS: i64 = 60;

/// A refused token request: the OAuth error code and why (logged, not sent).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub status: StatusCode,
    pub error: &'static str,
    pub why: String,
}

fn refuse(status: StatusCode, error: &'static str, why: impl Into<String>) -> Refusal {
    Refusal {
        status,
        error,
        why: why.into(),
    }
}

fn invalid_request(why: impl Into<String>) -> Refusal {
    refuse(StatusCode::BAD_REQUEST, "invalid_request", why)
}

fn invalid_client(why: impl Into<String>) -> Refusal {
    refuse(StatusCode::UNAUTHORIZED, "invalid_client", why)
}

fn invalid_grant(why: impl Into<String>) -> Refusal {
    refuse(StatusCode::BAD_REQUEST, "invalid_grant", why)
}

/// Handles `POST …/services/rest/auth/oauth2/v1/token`: the token, or the OAuth error.
pub(crate) fn exchange(
    state: &mut AccountState,
    content_type: Option<&str>,
    body: &[u8],
    token_url: &str,
    now: DateTime<Utc>,
) -> Reply {
    match issue(state, content_type, body, token_url, now) {
        Ok(token) => {
            state.counters.token_requests += 1;
            let body = json!({
                "access_token": token,
                "token_type": "bearer",
                "expires_in": state.config.token_lifetime_secs.to_string(),
            });
            Reply::json(StatusCode::OK, body.to_string())
        }
        Err(refusal) => {
            tracing::info!(error = refusal.error, why = %refusal.why, "NetSuite token refused");
            state.counters.rejected_token_requests += 1;
            if refusal.status == StatusCode::UNAUTHORIZED {
                state.counters.rejected_auth += 1;
            }
            let body = json!({ "error": refusal.error });
            Reply::json(refusal.status, body.to_string())
        }
    }
}

fn issue(
    state: &mut AccountState,
    content_type: Option<&str>,
    body: &[u8],
    token_url: &str,
    now: DateTime<Utc>,
) -> Result<String, Refusal> {
    let form_ok = content_type
        .and_then(|c| c.split(';').next())
        .is_some_and(|c| {
            c.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form_ok {
        return Err(invalid_request(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let form: Vec<(String, String)> = url::form_urlencoded::parse(body)
        .map(|(n, v)| (n.into_owned(), v.into_owned()))
        .collect();
    let field = |name: &str| {
        let mut values = form.iter().filter(|(n, _)| n == name).map(|(_, v)| v);
        match (values.next(), values.next()) {
            (Some(v), None) => Ok(v.as_str()),
            (None, _) => Err(invalid_request(format!("{name} is missing"))),
            (Some(_), Some(_)) => Err(invalid_request(format!("{name} is given twice"))),
        }
    };
    if field("grant_type")? != "client_credentials" {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be client_credentials",
        ));
    }
    if field("client_assertion_type")? != ASSERTION_TYPE {
        return Err(invalid_request(format!(
            "client_assertion_type must be {ASSERTION_TYPE}"
        )));
    }
    verify_assertion(
        field("client_assertion")?,
        &state.config.m2m,
        token_url,
        now,
    )?;
    let mut bytes = [0_u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| refuse(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "no RNG"))?;
    let token = TOKEN_B64.encode(bytes);
    let lifetime = i64::try_from(state.config.token_lifetime_secs).unwrap_or(i64::MAX / 2000);
    let expires = now + TimeDelta::seconds(lifetime);
    state.tokens.retain(|_, at| *at > now);
    state.tokens.insert(token.clone(), expires);
    Ok(token)
}

fn segment(text: &str, what: &str) -> Result<Value, Refusal> {
    let bytes = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| invalid_request(format!("the JWT {what} is not base64url")))?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|_| invalid_request(format!("the JWT {what} is not JSON")))?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(invalid_request(format!("the JWT {what} is not an object")))
    }
}

fn algorithm(alg: &str) -> Option<&'static dyn VerificationAlgorithm> {
    Some(match alg {
        "PS256" => &signature::RSA_PSS_2048_8192_SHA256,
        "PS384" => &signature::RSA_PSS_2048_8192_SHA384,
        "PS512" => &signature::RSA_PSS_2048_8192_SHA512,
        "ES256" => &signature::ECDSA_P256_SHA256_FIXED,
        "ES384" => &signature::ECDSA_P384_SHA384_FIXED,
        _ => return None,
    })
}

fn number(payload: &Value, claim: &str) -> Result<i64, Refusal> {
    payload[claim]
        .as_i64()
        .ok_or_else(|| invalid_request(format!("the {claim} claim must be a number")))
}

/// Checks the assertion: its form, algorithm, certificate, signature and claims.
pub(crate) fn verify_assertion(
    jwt: &str,
    clients: &[M2mClient],
    token_url: &str,
    now: DateTime<Utc>,
) -> Result<(), Refusal> {
    let mut parts = jwt.split('.');
    let (Some(head), Some(body), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid_request("the assertion is not a signed JWT"));
    };
    let header = segment(head, "header")?;
    let payload = segment(body, "payload")?;
    if header
        .get("typ")
        .is_some_and(|t| !t.as_str().is_some_and(|t| t.eq_ignore_ascii_case("JWT")))
    {
        return Err(invalid_request("typ must be JWT"));
    }
    let alg = header["alg"].as_str().unwrap_or("");
    let verifier =
        algorithm(alg).ok_or_else(|| invalid_client(format!("alg {alg:?} is not accepted")))?;
    let kid = header["kid"]
        .as_str()
        .ok_or_else(|| invalid_request("the header has no kid"))?;
    let client = clients
        .iter()
        .find(|c| c.certificate_id == kid)
        .ok_or_else(|| invalid_client(format!("no certificate {kid:?}")))?;
    if payload["iss"].as_str() != Some(client.client_id.as_str()) {
        return Err(invalid_client("iss is not the certificate's client id"));
    }
    let signature = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| invalid_request("the JWT signature is not base64url"))?;
    let signed = format!("{head}.{body}");
    UnparsedPublicKey::new(verifier, &client.public_key_der)
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| invalid_client("the signature does not verify"))?;
    check_claims(&payload, client, token_url, now.timestamp())
}

fn check_claims(
    payload: &Value,
    client: &M2mClient,
    token_url: &str,
    now: i64,
) -> Result<(), Refusal> {
    let aud_ok = match &payload["aud"] {
        Value::String(aud) => aud == token_url,
        Value::Array(auds) => auds.iter().any(|a| a.as_str() == Some(token_url)),
        _ => false,
    };
    if !aud_ok {
        return Err(invalid_grant(format!("aud must be {token_url}")));
    }
    let (iat, exp) = (number(payload, "iat")?, number(payload, "exp")?);
    if exp <= now {
        return Err(invalid_grant("the assertion has expired"));
    }
    if iat > now + SKEW_SECS {
        return Err(invalid_grant("iat is in the future"));
    }
    if exp - iat > MAX_ASSERTION_LIFETIME || exp < iat {
        return Err(invalid_grant("exp must be at most 3600 s after iat"));
    }
    let scopes: Vec<&str> = match &payload["scope"] {
        Value::String(s) => s
            .split([',', ' '])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect(),
        Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !scopes.contains(&"rest_webservices") {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "scope must include rest_webservices",
        ));
    }
    if let Some(extra) = scopes
        .iter()
        .find(|s| !client.scopes.iter().any(|c| c == *s))
    {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            format!("the mapping does not grant {extra}"),
        ));
    }
    Ok(())
}
