//! OAuth 2.0 client credentials (machine to machine): a JWT client assertion signed PS256
//! with the private key whose certificate was uploaded to the integration's "OAuth 2.0
//! Client Credentials (M2M) Setup", minted for each token request and valid five minutes
//! (NetSuite accepts at most 60).

use crate::ConnectorError;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{RSA_PSS_SHA256, RsaKeyPair};
use serde_json::json;
use std::sync::Arc;

/// How long an assertion is valid: short, as it is made for one request.
pub const ASSERTION_LIFETIME_SECS: i64 = 300;

/// The M2M client: its id, the certificate id (`kid`), and the private key.
#[derive(Clone)]
pub struct M2mClient {
    pub client_id: String,
    pub certificate_id: String,
    key: Arc<RsaKeyPair>,
}

impl std::fmt::Debug for M2mClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("M2mClient")
            .field("client_id", &self.client_id)
            .field("certificate_id", &self.certificate_id)
            .finish_non_exhaustive()
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The DER inside a PEM block labelled `label`, if the text holds one.
fn pem_block(pem: &str, label: &str) -> Option<Result<Vec<u8>, base64::DecodeError>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = start + pem[start..].find(&end)?;
    let body: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    Some(base64::engine::general_purpose::STANDARD.decode(body))
}

/// An RSA private key from PEM: PKCS#8 (`BEGIN PRIVATE KEY`, what `openssl genpkey` and
/// NetSuite's guide produce) or PKCS#1 (`BEGIN RSA PRIVATE KEY`).
pub fn parse_private_key(pem: &str) -> Result<RsaKeyPair, ConnectorError> {
    let unusable = |why: String| ConnectorError::Auth {
        message: format!(
            "credentials.private_key is not a usable RSA private key ({why}); paste the PEM of the key whose certificate is uploaded to the integration's M2M setup"
        ),
    };
    if let Some(der) = pem_block(pem, "PRIVATE KEY") {
        let der = der.map_err(|e| unusable(format!("bad base64: {e}")))?;
        return RsaKeyPair::from_pkcs8(&der).map_err(|e| unusable(e.to_string()));
    }
    if let Some(der) = pem_block(pem, "RSA PRIVATE KEY") {
        let der = der.map_err(|e| unusable(format!("bad base64: {e}")))?;
        return RsaKeyPair::from_der(&der).map_err(|e| unusable(e.to_string()));
    }
    Err(unusable(
        "no PEM block BEGIN PRIVATE KEY or BEGIN RSA PRIVATE KEY".into(),
    ))
}

impl M2mClient {
    pub fn new(
        client_id: String,
        certificate_id: String,
        private_key_pem: &str,
    ) -> Result<Self, ConnectorError> {
        let key = parse_private_key(private_key_pem)?;
        if key.public().modulus_len() * 8 < 3072 {
            return Err(ConnectorError::Auth {
                message: "credentials.private_key is shorter than 3072 bits; NetSuite accepts RSA keys of 3072 or 4096 bits".into(),
            });
        }
        Ok(Self {
            client_id,
            certificate_id,
            key: Arc::new(key),
        })
    }

    /// A signed assertion for the token endpoint `audience`, issued at `now` (Unix seconds).
    pub fn assertion(&self, audience: &str, now: i64) -> Result<String, ConnectorError> {
        let header = json!({"typ": "JWT", "alg": "PS256", "kid": self.certificate_id});
        let claims = json!({
            "iss": self.client_id,
            "scope": "rest_webservices",
            "aud": audience,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECS,
        });
        let signing_input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PSS_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| ConnectorError::fatal("signing the NetSuite client assertion failed"))?;
        Ok(format!("{signing_input}.{}", b64url(&signature)))
    }

    /// The form of one token request.
    pub fn token_form(
        &self,
        audience: &str,
        now: i64,
    ) -> Result<Vec<(String, String)>, ConnectorError> {
        Ok(vec![
            ("grant_type".into(), "client_credentials".into()),
            (
                "client_assertion_type".into(),
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
            ),
            ("client_assertion".into(), self.assertion(audience, now)?),
        ])
    }
}

/// The test-only key of `tests/fixtures`.
#[cfg(test)]
pub(crate) fn tests_key() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/netsuite-m2m-test-key.pem"
    ))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{RSA_PSS_2048_8192_SHA256, UnparsedPublicKey};

    fn test_key() -> String {
        tests_key()
    }

    #[test]
    fn the_assertion_is_a_ps256_jwt_naming_the_certificate_that_verifies_with_its_key() {
        let client = M2mClient::new("client-1".into(), "cert-9".into(), &test_key()).unwrap();
        let jwt = client
            .assertion(
                "https://1-sb1.suitetalk.api.netsuite.com/services/rest/auth/oauth2/v1/token",
                1_700_000_000,
            )
            .unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let decode = |s: &str| {
            serde_json::from_slice::<serde_json::Value>(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(s)
                    .unwrap(),
            )
            .unwrap()
        };
        assert_eq!(
            decode(parts[0]),
            json!({"typ": "JWT", "alg": "PS256", "kid": "cert-9"})
        );
        let claims = decode(parts[1]);
        assert_eq!(claims["iss"], "client-1");
        assert_eq!(claims["scope"], "rest_webservices");
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            ASSERTION_LIFETIME_SECS
        );
        let public = client.key.public().as_ref().to_vec();
        let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[2])
            .unwrap();
        UnparsedPublicKey::new(&RSA_PSS_2048_8192_SHA256, public)
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
            .unwrap();
    }

    #[test]
    fn a_key_that_is_not_pem_or_too_short_is_refused_without_showing_it() {
        let e = M2mClient::new("c".into(), "k".into(), "secret-garbage").unwrap_err();
        assert!(matches!(e, ConnectorError::Auth { .. }), "{e:?}");
        assert!(!e.to_string().contains("secret-garbage"), "{e}");
        let cut = test_key().replace("MII", "");
        assert!(M2mClient::new("c".into(), "k".into(), &cut).is_err());
    }
}
