//! The `Idempotency-Key` store of one account (draft-ietf-httpapi-idempotency-key-header):
//! a key is claimed while its request runs, then remembers the successful response for 24 h.
//!
//! Requests are compared by a 128-bit fingerprint of method, path and the exact body bytes,
//! not by the bytes themselves: the contract has the client resend the exact body, and holding
//! a fingerprint keeps memory flat under a benchmark's hundreds of thousands of creates.

use axum::body::Bytes;
use axum::http::{HeaderValue, Method, StatusCode};
use chrono::{DateTime, TimeDelta, Utc};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};

/// How long a completed response is replayed.
const RETENTION: TimeDelta = TimeDelta::hours(24);

/// Expired entries are swept after this many claims, so the sweep's cost is amortised.
const SWEEP_EVERY: u64 = 10_000;

/// Identifies a request's method, path and body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    high: u64,
    low: u64,
    body_len: usize,
}

/// Two independently seeded hashers; one simulator-wide pair so fingerprints are comparable.
#[derive(Debug, Default)]
pub(crate) struct Fingerprinter {
    high: std::hash::RandomState,
    low: std::hash::RandomState,
}

impl Fingerprinter {
    pub(crate) fn fingerprint(&self, method: &Method, path: &str, body: &[u8]) -> Fingerprint {
        let hash = |state: &std::hash::RandomState| {
            let mut hasher = state.build_hasher();
            method.as_str().hash(&mut hasher);
            path.hash(&mut hasher);
            body.hash(&mut hasher);
            hasher.finish()
        };
        Fingerprint {
            high: hash(&self.high),
            low: hash(&self.low),
            body_len: body.len(),
        }
    }
}

/// A response kept for replay.
#[derive(Clone, Debug)]
pub(crate) struct StoredResponse {
    pub status: StatusCode,
    pub body: Bytes,
    pub location: Option<HeaderValue>,
}

#[derive(Debug)]
enum Entry {
    InFlight {
        fingerprint: Fingerprint,
        token: u64,
    },
    Completed {
        fingerprint: Fingerprint,
        response: StoredResponse,
        at: DateTime<Utc>,
    },
}

/// What a request carrying a key may do.
#[derive(Debug)]
pub(crate) enum Claim {
    /// The key is now in flight for this request; settle it with this token.
    Proceed { token: u64 },
    /// Same request seen before: answer this again.
    Replay(StoredResponse),
    /// Same key, the same request still running.
    InFlight,
    /// Same key, a different request.
    Mismatch,
}

#[derive(Debug, Default)]
pub(crate) struct IdempotencyStore {
    entries: HashMap<String, Entry>,
    next_token: u64,
    claims_since_sweep: u64,
}

impl IdempotencyStore {
    pub(crate) fn claim(
        &mut self,
        key: &str,
        fingerprint: Fingerprint,
        now: DateTime<Utc>,
    ) -> Claim {
        self.sweep(now);
        match self.entries.get(key) {
            Some(Entry::InFlight { fingerprint: f, .. }) => {
                if *f == fingerprint {
                    Claim::InFlight
                } else {
                    Claim::Mismatch
                }
            }
            Some(Entry::Completed {
                fingerprint: f,
                response,
                at,
            }) if now - *at < RETENTION => {
                if *f == fingerprint {
                    Claim::Replay(response.clone())
                } else {
                    Claim::Mismatch
                }
            }
            // Unknown, or remembered for longer than the retention window.
            _ => {
                self.next_token += 1;
                let token = self.next_token;
                self.entries
                    .insert(key.to_owned(), Entry::InFlight { fingerprint, token });
                Claim::Proceed { token }
            }
        }
    }

    /// Ends a claim: a success is remembered for replay; anything else frees the key, so a
    /// corrected retry is handled afresh (a non-2xx answer created nothing).
    pub(crate) fn settle(
        &mut self,
        key: &str,
        token: u64,
        response: Option<StoredResponse>,
        now: DateTime<Utc>,
    ) {
        let Some(Entry::InFlight {
            fingerprint,
            token: held,
        }) = self.entries.get(key)
        else {
            return;
        };
        if *held != token {
            return;
        }
        let fingerprint = *fingerprint;
        match response {
            Some(response) => {
                self.entries.insert(
                    key.to_owned(),
                    Entry::Completed {
                        fingerprint,
                        response,
                        at: now,
                    },
                );
            }
            None => {
                self.entries.remove(key);
            }
        }
    }

    fn sweep(&mut self, now: DateTime<Utc>) {
        self.claims_since_sweep += 1;
        if self.claims_since_sweep < SWEEP_EVERY {
            return;
        }
        self.claims_since_sweep = 0;
        self.entries.retain(|_, entry| match entry {
            Entry::InFlight { .. } => true,
            Entry::Completed { at, .. } => now - *at < RETENTION,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response() -> StoredResponse {
        StoredResponse {
            status: StatusCode::CREATED,
            body: Bytes::from_static(b"{}"),
            location: None,
        }
    }

    #[test]
    fn a_key_goes_from_in_flight_to_replayed() {
        let printer = Fingerprinter::default();
        let now = Utc::now();
        let a = printer.fingerprint(&Method::POST, "/o", b"{\"a\":1}");
        let b = printer.fingerprint(&Method::POST, "/o", b"{\"a\":2}");
        let mut store = IdempotencyStore::default();
        let Claim::Proceed { token } = store.claim("k", a, now) else {
            panic!("fresh key not claimable");
        };
        assert!(matches!(store.claim("k", a, now), Claim::InFlight));
        assert!(matches!(store.claim("k", b, now), Claim::Mismatch));
        store.settle("k", token, Some(response()), now);
        assert!(matches!(store.claim("k", a, now), Claim::Replay(_)));
        assert!(matches!(store.claim("k", b, now), Claim::Mismatch));
        let later = now + RETENTION + TimeDelta::seconds(1);
        assert!(matches!(store.claim("k", b, later), Claim::Proceed { .. }));
    }

    #[test]
    fn a_failed_request_frees_its_key() {
        let printer = Fingerprinter::default();
        let now = Utc::now();
        let a = printer.fingerprint(&Method::POST, "/o", b"{}");
        let mut store = IdempotencyStore::default();
        let Claim::Proceed { token } = store.claim("k", a, now) else {
            panic!("fresh key not claimable");
        };
        store.settle("k", token, None, now);
        assert!(matches!(store.claim("k", a, now), Claim::Proceed { .. }));
    }

    #[test]
    fn method_and_path_are_part_of_the_request() {
        let printer = Fingerprinter::default();
        let body = b"{}";
        assert_ne!(
            printer.fingerprint(&Method::POST, "/api/orders", body),
            printer.fingerprint(&Method::POST, "/api/products", body)
        );
        assert_ne!(
            printer.fingerprint(&Method::POST, "/api/orders/1", body),
            printer.fingerprint(&Method::PUT, "/api/orders/1", body)
        );
    }
}
