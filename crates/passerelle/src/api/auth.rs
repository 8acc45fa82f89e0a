//! Bearer tokens: made by `passerelle tokens create`, shown once, stored as a SHA-256 digest.
//! A request carries `Authorization: Bearer pst_…`; the token names its tenant and role.
//! Failed authentications are counted per client address and refused with `429` past
//! `api.auth_failures_per_minute`, so tokens cannot be guessed at speed.

use super::ApiState;
use super::problem::Problem;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use base64::Engine as _;
use passerelle_core::{ApiRole, ApiTokenId, TenantId};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What every token starts with, so a leaked one is easy to recognise (and to scan for).
pub const TOKEN_PREFIX: &str = "pst_";
/// How much of a token a listing shows: the marker and eight characters of the secret.
const SHOWN_CHARS: usize = TOKEN_PREFIX.len() + 8;

/// A freshly made token: the secret (to show once) and what the store keeps.
#[derive(Debug)]
pub struct Generated {
    pub secret: String,
    pub shown_prefix: String,
    pub hash: [u8; 32],
}

/// Makes a token: 32 random bytes, URL-safe base64.
pub fn generate() -> Generated {
    let mut bytes = [0_u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    Generated {
        shown_prefix: secret.chars().take(SHOWN_CHARS).collect(),
        hash: digest(&secret),
        secret,
    }
}

pub fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub tenant: TenantId,
    pub role: ApiRole,
    pub token: ApiTokenId,
}

/// A caller whose token may write (role `admin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admin(pub Caller);

/// Failed authentications per client address, in one-minute windows.
#[derive(Debug, Default)]
pub struct AuthFailures {
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

const WINDOW: Duration = Duration::from_secs(60);
/// Client addresses counted at most.
const MAX_TRACKED: usize = 10_000;

/// Whom failures are counted against: an IPv4 address, or an IPv6 /64 (one host's usual
/// allocation, which it could otherwise rotate through).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let mut segments = v6.segments();
            segments[4..].fill(0);
            IpAddr::from(segments)
        }
    }
}

impl AuthFailures {
    /// Seconds until `ip` may try again, when it has used up its failures.
    fn blocked_for(&self, ip: IpAddr, limit: u32) -> Option<u64> {
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let (start, count) = windows.get(&ip)?;
        let left = WINDOW.checked_sub(start.elapsed())?;
        (*count >= limit).then(|| left.as_secs().max(1))
    }

    fn record(&self, ip: IpAddr) {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: addresses whose window ended are forgotten as new ones fail, and past the
        // cap an arbitrary one goes (an attacker spreading over addresses gains nothing: a
        // token cannot be guessed, the limit only keeps the load down).
        if windows.len() >= MAX_TRACKED && !windows.contains_key(&ip) {
            windows.retain(|_, (start, _)| start.elapsed() < WINDOW);
            if windows.len() >= MAX_TRACKED
                && let Some(victim) = windows.keys().next().copied()
            {
                windows.remove(&victim);
            }
        }
        let entry = windows.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }
}

fn unauthorized(detail: &str) -> Problem {
    Problem::new(StatusCode::UNAUTHORIZED, detail)
}

impl FromRequestParts<Arc<ApiState>> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<ApiState>) -> Result<Self, Problem> {
        let ip = client_key(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip())
                .unwrap_or(IpAddr::from([0, 0, 0, 0])),
        );
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        // A valid token always passes; only failures are counted and, past the limit,
        // refused, so a shared address (a NAT, a proxy) that others abuse locks nobody out.
        let token = match presented {
            Some(secret) => state.store.authenticate_api_token(&digest(secret)).await?,
            None => None,
        };
        if let Some(t) = token {
            return Ok(Caller {
                tenant: t.tenant_id,
                role: t.role,
                token: t.id,
            });
        }
        let limit = state.settings.api.auth_failures_per_minute;
        if let Some(wait) = state.auth_failures.blocked_for(ip, limit) {
            let mut problem = Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed authentications from this address; wait before trying again",
            );
            problem.retry_after = Some(wait);
            return Err(problem);
        }
        state.auth_failures.record(ip);
        Err(unauthorized(if presented.is_some() {
            "the token is unknown, revoked or expired; ask an admin for a new one"
        } else {
            "send a token as `Authorization: Bearer pst_…` (make one with `passerelle tokens create`)"
        }))
    }
}

impl FromRequestParts<Arc<ApiState>> for Admin {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<ApiState>) -> Result<Self, Problem> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if caller.role != ApiRole::Admin {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "this token is a viewer's: it may read, not change anything",
            ));
        }
        Ok(Admin(caller))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_long_random_and_shown_only_by_its_prefix() {
        let a = generate();
        let b = generate();
        assert_ne!(a.secret, b.secret);
        assert!(a.secret.starts_with(TOKEN_PREFIX));
        assert_eq!(a.secret.len(), TOKEN_PREFIX.len() + 43);
        assert!(a.secret.starts_with(&a.shown_prefix));
        assert_eq!(a.shown_prefix.len(), SHOWN_CHARS);
        assert_eq!(a.hash, digest(&a.secret));
    }

    #[test]
    fn an_address_is_refused_after_its_failures_and_others_are_not() {
        let failures = AuthFailures::default();
        let ip = IpAddr::from([10, 0, 0, 1]);
        for _ in 0..3 {
            assert_eq!(failures.blocked_for(ip, 3), None);
            failures.record(ip);
        }
        let wait = failures.blocked_for(ip, 3).unwrap();
        assert!((1..=60).contains(&wait), "{wait}");
        assert_eq!(failures.blocked_for(IpAddr::from([10, 0, 0, 2]), 3), None);
    }

    #[test]
    fn an_ipv6_host_is_counted_by_its_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(other));
        let v4 = IpAddr::from([192, 0, 2, 7]);
        assert_eq!(client_key(v4), v4);
    }
}
