//! Completion webhooks, signed as the Standard Webhooks specification says
//! (<https://www.standardwebhooks.com>): every request carries `webhook-id` (the same on
//! every attempt, so a receiver drops duplicates), `webhook-timestamp` (Unix seconds, fresh
//! on every attempt) and `webhook-signature: v1,<base64 HMAC-SHA256>` over
//! `{id}.{timestamp}.{body}`, keyed with the base64-decoded part of the integration's
//! `whsec_…` secret.
//!
//! Deliveries wait in `webhook_deliveries` (written when a run ends, in the same
//! transaction); every worker runs a [`Deliverer`] that claims due ones, posts them, and on
//! failure tries again with exponential backoff, up to [`MAX_ATTEMPTS`]. Delivering never
//! blocks a sync job.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::Utc;
use hmac::{Hmac, Mac};
use passerelle_connectors::UrlPolicy;
use passerelle_connectors::urls::{PublicOnlyResolver, shown};
use passerelle_core::vault::{CredentialOwner, Vault};
use passerelle_store::{ClaimedWebhook, Store, StoreError};
use rand::{Rng as _, RngCore as _};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// What every secret starts with (the Standard Webhooks convention).
pub const SECRET_PREFIX: &str = "whsec_";
/// Attempts before a delivery is given up as `failed` (about 21 minutes of retries).
pub const MAX_ATTEMPTS: i32 = 8;
/// The wait after the first failed attempt; each further failure doubles it.
const FIRST_RETRY: Duration = Duration::from_secs(10);
const LONGEST_RETRY: Duration = Duration::from_secs(3600);
/// How long an attempt may take before its claim lapses and another worker may try.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);
/// Deliveries claimed at once.
const BATCH: i64 = 20;
/// Bytes of a refusing receiver's answer kept for the delivery's error.
const ANSWER_SHOWN: usize = 2048;
/// How often a deliverer looks for due deliveries.
const POLL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("the webhook secret is not `whsec_` followed by base64 ({0})")]
    Malformed(String),
}

/// A new secret: `whsec_` and 32 random bytes in base64.
pub fn generate_secret() -> String {
    let mut key = [0_u8; 32];
    rand::rng().fill_bytes(&mut key);
    format!("{SECRET_PREFIX}{}", B64.encode(key))
}

/// The `webhook-signature` header value for one attempt.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, SignError> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    let key = B64
        .decode(encoded)
        .map_err(|e| SignError::Malformed(e.to_string()))?;
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key)
        .map_err(|e| SignError::Malformed(e.to_string()))?;
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    Ok(format!("v1,{}", B64.encode(mac.finalize().into_bytes())))
}

/// The wait before attempt `attempts + 1`, with ±20 % jitter so a receiver that comes back
/// is not hit by every delivery at once.
fn backoff(attempts: i32) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(0)
        .min(16);
    let base = FIRST_RETRY
        .saturating_mul(1 << doublings)
        .min(LONGEST_RETRY);
    base.mul_f64(rand::rng().random_range(0.8..1.2))
}

/// Posts due deliveries; any number of workers run one.
#[derive(Debug, Clone)]
pub struct Deliverer {
    store: Store,
    vault: Vault,
    client: reqwest::Client,
    policy: UrlPolicy,
}

/// How one attempt ended.
enum Attempt {
    Delivered(u16),
    Failed { status: Option<u16>, error: String },
}

impl Deliverer {
    pub fn new(store: Store, vault: Vault, policy: UrlPolicy) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder();
        if !policy.allow_private_networks {
            builder = builder.dns_resolver(PublicOnlyResolver);
        }
        let client = builder
            .timeout(ATTEMPT_TIMEOUT.mul_f64(0.8))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("passerelle-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            store,
            vault,
            client,
            policy,
        })
    }

    /// Claims the due deliveries and attempts each once, all at the same time (each attempt
    /// ends within the claim's hold, so no other worker takes one over while it is in
    /// flight); returns how many were attempted.
    pub async fn deliver_due(&self) -> Result<usize, StoreError> {
        let claimed = self.store.claim_webhooks(BATCH, ATTEMPT_TIMEOUT).await?;
        let attempted = claimed.len();
        let settled = futures::future::join_all(claimed.into_iter().map(|w| self.deliver(w))).await;
        settled.into_iter().collect::<Result<Vec<()>, _>>()?;
        Ok(attempted)
    }

    /// Delivers until `stop`; a store that is away is waited for, never a reason to exit.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            match self.deliver_due().await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(e) => warn!(error = %e, "cannot read the webhook deliveries; trying again"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    async fn deliver(&self, webhook: ClaimedWebhook) -> Result<(), StoreError> {
        let d = &webhook.delivery;
        let outcome = self.attempt(&webhook).await;
        match outcome {
            Attempt::Delivered(status) => {
                info!(webhook_id = %d.id, run_id = ?d.run_id.map(|r| r.to_string()), integration_id = d.integration_id.0, status, attempt = d.attempts, "webhook delivered");
                self.store.webhook_delivered(d.id, d.attempts, status).await
            }
            Attempt::Failed { status, error } => {
                let retry_at = (d.attempts < MAX_ATTEMPTS)
                    .then(|| Utc::now() + backoff(d.attempts))
                    .filter(|_| status.is_none_or(|s| s != 410));
                warn!(webhook_id = %d.id, integration_id = d.integration_id.0, status, attempt = d.attempts, error = %error,
                    retry_at = ?retry_at.map(|t| t.to_rfc3339()), "webhook delivery failed");
                self.store
                    .webhook_attempt_failed(d.id, d.attempts, status, &error, retry_at)
                    .await
            }
        }
    }

    async fn attempt(&self, webhook: &ClaimedWebhook) -> Attempt {
        let d = &webhook.delivery;
        let failed = |error: String| Attempt::Failed {
            status: None,
            error,
        };
        let url = match url::Url::parse(&d.url) {
            Ok(url) => url,
            Err(e) => return failed(format!("the webhook URL is not valid: {e}")),
        };
        if let Err(reason) = self.policy.check_request(&url) {
            return failed(format!("the webhook URL {reason}"));
        }
        let owner = CredentialOwner {
            integration_id: d.integration_id,
            tenant_id: d.tenant_id,
        };
        let secret = match &webhook.webhook_secret {
            Some(raw) => passerelle_store::webhooks::open_secret(&self.vault, owner, raw),
            None => Err(StoreError::Invalid(
                "the integration has no webhook secret".into(),
            )),
        };
        let secret = match secret {
            Ok(s) => s,
            Err(e) => return failed(format!("cannot sign the webhook: {e}")),
        };
        let body = serde_json::to_vec(&d.payload).unwrap_or_default();
        let id = format!("msg_{}", d.id.simple());
        let timestamp = Utc::now().timestamp();
        let signature = match sign(&secret, &id, timestamp, &body) {
            Ok(s) => s,
            Err(e) => return failed(format!("cannot sign the webhook: {e}")),
        };
        let sent = self
            .client
            .post(url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => Attempt::Delivered(r.status().as_u16()),
            Ok(mut r) => {
                let status = r.status().as_u16();
                // The start of the answer is enough to say why; a receiver's body is never
                // read whole.
                let mut text = Vec::new();
                while text.len() < ANSWER_SHOWN
                    && let Ok(Some(chunk)) = r.chunk().await
                {
                    text.extend_from_slice(&chunk);
                }
                text.truncate(ANSWER_SHOWN);
                Attempt::Failed {
                    status: Some(status),
                    error: format!(
                        "{} answered {status}: {}",
                        shown(&url),
                        passerelle_connectors::http::snippet(&text)
                    ),
                }
            }
            Err(e) => failed(format!(
                "{} could not be reached: {}",
                shown(&url),
                e.without_url()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks specification's published vector: a receiver's library accepts
    /// what we send only if this comes out exactly.
    #[test]
    fn signatures_match_the_specifications_test_vector() {
        let signature = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn secrets_are_random_and_usable_and_garbage_is_refused() {
        let (a, b) = (generate_secret(), generate_secret());
        assert_ne!(a, b);
        assert!(a.starts_with(SECRET_PREFIX));
        assert!(sign(&a, "msg_1", 1, b"{}").is_ok());
        assert!(sign("whsec_not base64!", "msg_1", 1, b"{}").is_err());
    }

    #[test]
    fn retries_back_off_and_level_out() {
        let first = backoff(1);
        assert!(first >= Duration::from_secs(8) && first <= Duration::from_secs(12));
        let third = backoff(3);
        assert!(third >= Duration::from_secs(32) && third <= Duration::from_secs(48));
        assert!(backoff(30) <= LONGEST_RETRY.mul_f64(1.2));
    }
}
