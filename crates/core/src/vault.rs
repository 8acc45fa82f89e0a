//! The credential vault: AES-256-GCM under a key ring.
//!
//! A sealed credential is stored in `integrations.credentials` (jsonb) as
//! `{"v":1,"kid":"<key id>","nonce":"<base64>","ct":"<base64>"}`. The key id says which key of
//! the ring opens it, so keys can rotate while old ciphertexts stay readable. The associated
//! data binds the ciphertext to its version, key id, integration and tenant: a ciphertext copied
//! to another row, or whose header is edited, fails authentication instead of decrypting.
//!
//! The vault never prints a key or a plaintext: errors name the key id and the integration only.

use crate::ids::{IntegrationId, TenantId};
use aes_gcm::aead::{Aead, Generate, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The envelope version this build writes.
pub const SEALED_VERSION: u8 = 1;

/// Whose credentials a ciphertext holds; becomes the associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredentialOwner {
    pub integration_id: IntegrationId,
    pub tenant_id: TenantId,
}

/// Decrypted credentials: a JSON object whose values never reach `Debug` output.
#[derive(Clone, PartialEq)]
pub struct Credentials(serde_json::Map<String, serde_json::Value>);

impl Credentials {
    pub fn new(fields: serde_json::Map<String, serde_json::Value>) -> Self {
        Self(fields)
    }

    /// Accepts a JSON object; anything else is refused with what was given instead.
    pub fn from_value(value: serde_json::Value) -> Result<Self, VaultError> {
        match value {
            serde_json::Value::Object(map) => Ok(Self(map)),
            other => Err(VaultError::NotAnObject {
                found: json_kind(&other),
            }),
        }
    }

    pub fn get(&self, field: &str) -> Option<&serde_json::Value> {
        self.0.get(field)
    }

    /// A string field, or `None` when absent or not a string.
    pub fn get_str(&self, field: &str) -> Option<&str> {
        self.0.get(field).and_then(|v| v.as_str())
    }

    pub fn insert(&mut self, field: impl Into<String>, value: serde_json::Value) {
        self.0.insert(field.into(), value);
    }

    pub fn field_names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// The plaintext, for the one place that needs it: sealing.
    pub fn expose(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.0
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for key in self.0.keys() {
            map.entry(key, &"<redacted>");
        }
        map.finish()
    }
}

/// The stored form of a credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedCredentials {
    /// Envelope version, so the format can evolve without guessing.
    pub v: u8,
    /// Id of the ring key that sealed it.
    pub kid: String,
    /// 96-bit GCM nonce, fresh for every seal.
    pub nonce: String,
    /// Ciphertext followed by the 128-bit tag.
    pub ct: String,
}

impl SealedCredentials {
    /// Parses the jsonb column value. A value that is not an envelope (for example plaintext
    /// credentials written by hand) is an error, never silently accepted.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, VaultError> {
        serde_json::from_value(value.clone()).map_err(|e| VaultError::Malformed {
            reason: format!("not a sealed-credentials envelope ({e})"),
        })
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "v": self.v, "kid": self.kid, "nonce": self.nonce, "ct": self.ct })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    #[error(
        "credentials are sealed with key `{key_id}`, which is not in the configured key ring; add it under [vault.keys] (or PASSERELLE__VAULT__KEYS__{key_id_upper})"
    )]
    MissingKey {
        key_id: String,
        key_id_upper: String,
    },
    #[error(
        "credentials of integration {integration_id} failed authentication under key `{key_id}`: the ciphertext was altered, copied from another integration, or the key material for `{key_id}` is wrong"
    )]
    Tampered {
        integration_id: IntegrationId,
        key_id: String,
    },
    #[error(
        "sealed credentials have envelope version {found}; this build reads version {SEALED_VERSION}"
    )]
    UnsupportedVersion { found: u8 },
    #[error("sealed credentials are malformed: {reason}")]
    Malformed { reason: String },
    #[error("credentials must be a JSON object, got {found}")]
    NotAnObject { found: &'static str },
    #[error("vault key `{key_id}` is invalid: {reason}")]
    InvalidKey { key_id: String, reason: String },
    #[error(
        "no vault key is configured; generate one with `passerelle vault generate-key` and set [vault] active_key and [vault.keys]"
    )]
    NoKeys,
    #[error("the active vault key `{key_id}` is not in [vault.keys]")]
    ActiveKeyMissing { key_id: String },
}

/// Key id → AES-256 key, plus which id seals new ciphertexts.
#[derive(Clone)]
pub struct KeyRing {
    active: String,
    keys: BTreeMap<String, Key<Aes256Gcm>>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("active", &self.active)
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl KeyRing {
    /// Builds a ring from base64-encoded 32-byte keys.
    pub fn from_base64<'a>(
        active: &str,
        keys: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, VaultError> {
        let mut ring = BTreeMap::new();
        for (id, encoded) in keys {
            validate_key_id(id)?;
            let bytes = B64
                .decode(encoded.trim())
                .map_err(|_| VaultError::InvalidKey {
                    key_id: id.to_owned(),
                    reason: "not valid base64".into(),
                })?;
            let key = Key::<Aes256Gcm>::try_from(bytes.as_slice()).map_err(|_| {
                VaultError::InvalidKey {
                    key_id: id.to_owned(),
                    reason: format!("decodes to {} bytes, AES-256 needs 32", bytes.len()),
                }
            })?;
            ring.insert(id.to_owned(), key);
        }
        if ring.is_empty() {
            return Err(VaultError::NoKeys);
        }
        if !ring.contains_key(active) {
            return Err(VaultError::ActiveKeyMissing {
                key_id: active.to_owned(),
            });
        }
        Ok(Self {
            active: active.to_owned(),
            keys: ring,
        })
    }

    pub fn active_key_id(&self) -> &str {
        &self.active
    }

    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// A one-way fingerprint of the key material held under `key_id` (SHA-256 of a
    /// domain-separation label and the key), so workers can tell whether they hold the same
    /// key under one id without ever revealing it. `None` when the ring lacks the id.
    pub fn fingerprint(&self, key_id: &str) -> Option<String> {
        let key = self.keys.get(key_id)?;
        let mut input = b"passerelle-vault-key-fingerprint-v1:".to_vec();
        input.extend_from_slice(key.as_slice());
        Some(crate::digest::sha256_hex(&input))
    }
}

fn validate_key_id(id: &str) -> Result<(), VaultError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(VaultError::InvalidKey {
            key_id: id.to_owned(),
            reason: "key ids are 1 to 64 characters of a-z, 0-9, `_` and `-`".into(),
        })
    }
}

/// A fresh random key, base64-encoded, for `passerelle vault generate-key`.
pub fn generate_key_base64() -> String {
    B64.encode(Key::<Aes256Gcm>::generate())
}

/// Seals and opens credentials with a [`KeyRing`].
#[derive(Debug, Clone)]
pub struct Vault {
    ring: KeyRing,
}

impl Vault {
    pub fn new(ring: KeyRing) -> Self {
        Self { ring }
    }

    pub fn ring(&self) -> &KeyRing {
        &self.ring
    }

    /// Encrypts under the active key with a fresh nonce.
    pub fn seal(
        &self,
        owner: CredentialOwner,
        credentials: &Credentials,
    ) -> Result<SealedCredentials, VaultError> {
        let kid = self.ring.active.as_str();
        let key = self.key(kid)?;
        let plaintext =
            serde_json::to_vec(credentials.expose()).map_err(|e| VaultError::Malformed {
                reason: format!("credentials do not serialise: {e}"),
            })?;
        let nonce = Nonce::generate();
        let aad = associated_data(SEALED_VERSION, kid, owner);
        let ct = Aes256Gcm::new(key)
            .encrypt(
                &nonce,
                Payload {
                    msg: &plaintext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| VaultError::Malformed {
                reason: "encryption failed".into(),
            })?;
        Ok(SealedCredentials {
            v: SEALED_VERSION,
            kid: kid.to_owned(),
            nonce: B64.encode(nonce),
            ct: B64.encode(ct),
        })
    }

    /// Decrypts, checking that the ciphertext belongs to `owner`.
    pub fn open(
        &self,
        owner: CredentialOwner,
        sealed: &SealedCredentials,
    ) -> Result<Credentials, VaultError> {
        if sealed.v != SEALED_VERSION {
            return Err(VaultError::UnsupportedVersion { found: sealed.v });
        }
        let key = self.key(&sealed.kid)?;
        let nonce_bytes = B64
            .decode(&sealed.nonce)
            .map_err(|_| VaultError::Malformed {
                reason: "nonce is not base64".into(),
            })?;
        let nonce = Nonce::try_from(nonce_bytes.as_slice()).map_err(|_| VaultError::Malformed {
            reason: format!("nonce is {} bytes, expected 12", nonce_bytes.len()),
        })?;
        let ct = B64.decode(&sealed.ct).map_err(|_| VaultError::Malformed {
            reason: "ciphertext is not base64".into(),
        })?;
        let aad = associated_data(sealed.v, &sealed.kid, owner);
        let plaintext = Aes256Gcm::new(key)
            .decrypt(
                &nonce,
                Payload {
                    msg: &ct,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| VaultError::Tampered {
                integration_id: owner.integration_id,
                key_id: sealed.kid.clone(),
            })?;
        let value: serde_json::Value =
            serde_json::from_slice(&plaintext).map_err(|_| VaultError::Malformed {
                reason: "decrypted credentials are not JSON".into(),
            })?;
        Credentials::from_value(value)
    }

    /// Whether a ciphertext should be re-sealed under the active key.
    pub fn needs_rotation(&self, sealed: &SealedCredentials) -> bool {
        sealed.kid != self.ring.active || sealed.v != SEALED_VERSION
    }

    fn key(&self, kid: &str) -> Result<&Key<Aes256Gcm>, VaultError> {
        self.ring
            .keys
            .get(kid)
            .ok_or_else(|| VaultError::MissingKey {
                key_id: kid.to_owned(),
                key_id_upper: kid.to_ascii_uppercase(),
            })
    }
}

fn associated_data(version: u8, kid: &str, owner: CredentialOwner) -> String {
    format!(
        "passerelle/credentials/v{version}/kid={kid}/integration={}/tenant={}",
        owner.integration_id, owner.tenant_id
    )
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ring(active: &str, ids: &[&str]) -> (KeyRing, Vec<(String, String)>) {
        let keys: Vec<(String, String)> = ids
            .iter()
            .map(|id| (id.to_string(), generate_key_base64()))
            .collect();
        let ring = KeyRing::from_base64(active, keys.iter().map(|(a, b)| (a.as_str(), b.as_str())))
            .unwrap();
        (ring, keys)
    }

    fn creds() -> Credentials {
        Credentials::from_value(json!({"username": "api_user", "password": "s3cret!"})).unwrap()
    }

    const OWNER: CredentialOwner = CredentialOwner {
        integration_id: IntegrationId(42),
        tenant_id: TenantId(7),
    };

    #[test]
    fn round_trip_restores_the_credentials() {
        let (ring, _) = ring("k1", &["k1"]);
        let vault = Vault::new(ring);
        let sealed = vault.seal(OWNER, &creds()).unwrap();
        assert_eq!(sealed.kid, "k1");
        assert!(!sealed.ct.contains("s3cret"));
        let parsed = SealedCredentials::from_json(&sealed.to_json()).unwrap();
        assert_eq!(vault.open(OWNER, &parsed).unwrap(), creds());
    }

    #[test]
    fn fingerprints_tell_key_material_apart_without_revealing_it() {
        let (a, keys_a) = ring("k1", &["k1"]);
        let (b, _) = ring("k1", &["k1"]);
        let same = KeyRing::from_base64("k1", [("k1", keys_a[0].1.as_str())]).unwrap();
        let fa = a.fingerprint("k1").unwrap();
        assert_eq!(fa.len(), 64);
        assert_eq!(Some(fa.clone()), same.fingerprint("k1"));
        assert_ne!(Some(fa.clone()), b.fingerprint("k1"));
        assert!(!fa.contains(&keys_a[0].1));
        assert_eq!(a.fingerprint("k2"), None);
    }

    #[test]
    fn two_seals_of_the_same_value_differ() {
        let (ring, _) = ring("k1", &["k1"]);
        let vault = Vault::new(ring);
        let a = vault.seal(OWNER, &creds()).unwrap();
        let b = vault.seal(OWNER, &creds()).unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ct, b.ct);
    }

    #[test]
    fn a_flipped_ciphertext_bit_is_rejected() {
        let (ring, _) = ring("k1", &["k1"]);
        let vault = Vault::new(ring);
        let mut sealed = vault.seal(OWNER, &creds()).unwrap();
        let mut bytes = B64.decode(&sealed.ct).unwrap();
        bytes[0] ^= 1;
        sealed.ct = B64.encode(bytes);
        let err = vault.open(OWNER, &sealed).unwrap_err();
        assert!(
            matches!(
                err,
                VaultError::Tampered {
                    integration_id: IntegrationId(42),
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_ciphertext_copied_to_another_integration_or_tenant_does_not_open() {
        let (ring, _) = ring("k1", &["k1"]);
        let vault = Vault::new(ring);
        let sealed = vault.seal(OWNER, &creds()).unwrap();
        let other_row = CredentialOwner {
            integration_id: IntegrationId(43),
            tenant_id: TenantId(7),
        };
        let other_tenant = CredentialOwner {
            integration_id: IntegrationId(42),
            tenant_id: TenantId(8),
        };
        assert!(matches!(
            vault.open(other_row, &sealed),
            Err(VaultError::Tampered { .. })
        ));
        assert!(matches!(
            vault.open(other_tenant, &sealed),
            Err(VaultError::Tampered { .. })
        ));
    }

    #[test]
    fn relabelling_the_key_id_is_detected() {
        let (ring, _) = ring("k1", &["k1", "k2"]);
        let vault = Vault::new(ring);
        let mut sealed = vault.seal(OWNER, &creds()).unwrap();
        sealed.kid = "k2".into();
        assert!(matches!(
            vault.open(OWNER, &sealed),
            Err(VaultError::Tampered { .. })
        ));
    }

    #[test]
    fn a_missing_key_is_named_not_turned_into_null() {
        let (old, _) = ring("old", &["old"]);
        let sealed = Vault::new(old).seal(OWNER, &creds()).unwrap();
        let (new, _) = ring("new", &["new"]);
        let err = Vault::new(new).open(OWNER, &sealed).unwrap_err();
        assert_eq!(
            err,
            VaultError::MissingKey {
                key_id: "old".into(),
                key_id_upper: "OLD".into()
            }
        );
        assert!(err.to_string().contains("`old`"));
    }

    #[test]
    fn rotation_with_two_keys_reads_the_old_and_writes_the_new() {
        let (ring_a, keys_a) = ring("k1", &["k1"]);
        let sealed_old = Vault::new(ring_a).seal(OWNER, &creds()).unwrap();
        let k2 = generate_key_base64();
        let both = KeyRing::from_base64("k2", [("k1", keys_a[0].1.as_str()), ("k2", k2.as_str())])
            .unwrap();
        let vault = Vault::new(both);
        assert!(vault.needs_rotation(&sealed_old));
        let opened = vault.open(OWNER, &sealed_old).unwrap();
        let resealed = vault.seal(OWNER, &opened).unwrap();
        assert_eq!(resealed.kid, "k2");
        assert!(!vault.needs_rotation(&resealed));
        assert_eq!(vault.open(OWNER, &resealed).unwrap(), creds());
    }

    #[test]
    fn bad_key_material_is_reported_without_the_key() {
        let err = KeyRing::from_base64("k1", [("k1", "c2hvcnQ=")]).unwrap_err();
        assert!(err.to_string().contains("decodes to 5 bytes"), "{err}");
        assert!(!err.to_string().contains("c2hvcnQ"));
        let err = KeyRing::from_base64("k9", [("k1", generate_key_base64().as_str())]).unwrap_err();
        assert_eq!(
            err,
            VaultError::ActiveKeyMissing {
                key_id: "k9".into()
            }
        );
    }

    #[test]
    fn debug_output_hides_values() {
        let shown = format!("{:?}", creds());
        assert!(shown.contains("password"));
        assert!(!shown.contains("s3cret"));
    }

    #[test]
    fn plaintext_in_the_column_is_not_mistaken_for_an_envelope() {
        let err = SealedCredentials::from_json(&json!({"password": "x"})).unwrap_err();
        assert!(matches!(err, VaultError::Malformed { .. }));
    }
}
