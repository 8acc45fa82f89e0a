//! One tenant's `Idempotency-Key` store. Xero replays the answer to a request retried with
//! the same key for a few minutes, errors included (a validation failure is replayed too;
//! the client must fix the request and use a new key), and refuses the key for a different
//! request. A key is held while its request runs, so a concurrent retry is refused rather
//! than run twice.
//!
//! Requests are compared by a 128-bit fingerprint of method, path, query and body.

use axum::body::Bytes;
use axum::http::{Method, StatusCode};
use chrono::{DateTime, TimeDelta, Utc};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};

/// Expired entries are swept after this many claims, so the sweep's cost is amortised.
const SWEEP_EVERY: u64 = 10_000;

/// Identifies a request's method, path, query and body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    high: u64,
    low: u64,
    body_len: usize,
}

/// Two independently seeded hashers; one per simulator so fingerprints are comparable.
#[derive(Debug, Default)]
pub(crate) struct Fingerprinter {
    high: std::hash::RandomState,
    low: std::hash::RandomState,
}

impl Fingerprinter {
    pub(crate) fn fingerprint(
        &self,
        method: &Method,
        path_and_query: &str,
        body: &[u8],
    ) -> Fingerprint {
        let hash = |state: &std::hash::RandomState| {
            let mut hasher = state.build_hasher();
            method.as_str().hash(&mut hasher);
            path_and_query.hash(&mut hasher);
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

/// An answer kept for replay.
#[derive(Clone, Debug)]
pub(crate) struct StoredAnswer {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: Bytes,
}

#[derive(Debug)]
enum Entry {
    InFlight {
        fingerprint: Fingerprint,
        token: u64,
    },
    Completed {
        fingerprint: Fingerprint,
        answer: StoredAnswer,
        at: DateTime<Utc>,
    },
}

/// What a request carrying a key may do.
#[derive(Debug)]
pub(crate) enum Claim {
    /// The key is now held by this request; settle it with this token.
    Proceed {
        token: u64,
    },
    Replay(StoredAnswer),
    /// The same request is still running.
    InFlight,
    /// The key was used for a different request.
    Mismatch,
}

#[derive(Debug, Default)]
pub(crate) struct IdempotencyStore {
    entries: HashMap<String, Entry>,
    next_token: u64,
    claims_since_sweep: u64,
}

impl IdempotencyStore {
    /// `window` is how long an answer is replayed (Xero: minutes, not days).
    pub(crate) fn claim(
        &mut self,
        key: &str,
        fingerprint: Fingerprint,
        window: TimeDelta,
        now: DateTime<Utc>,
    ) -> Claim {
        self.sweep(window, now);
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
                answer,
                at,
            }) if now - *at < window => {
                if *f == fingerprint {
                    Claim::Replay(answer.clone())
                } else {
                    Claim::Mismatch
                }
            }
            _ => {
                self.next_token += 1;
                let token = self.next_token;
                self.entries
                    .insert(key.to_owned(), Entry::InFlight { fingerprint, token });
                Claim::Proceed { token }
            }
        }
    }

    /// Ends a claim: an answer is remembered for replay; `None` (the request was abandoned
    /// before it was handled) frees the key.
    pub(crate) fn settle(
        &mut self,
        key: &str,
        token: u64,
        answer: Option<StoredAnswer>,
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
        match answer {
            Some(answer) => {
                self.entries.insert(
                    key.to_owned(),
                    Entry::Completed {
                        fingerprint,
                        answer,
                        at: now,
                    },
                );
            }
            None => {
                self.entries.remove(key);
            }
        }
    }

    fn sweep(&mut self, window: TimeDelta, now: DateTime<Utc>) {
        self.claims_since_sweep += 1;
        if self.claims_since_sweep < SWEEP_EVERY {
            return;
        }
        self.claims_since_sweep = 0;
        // Keep a margin: another app may replay over a longer window.
        let keep = window.max(TimeDelta::hours(1));
        self.entries.retain(|_, entry| match entry {
            Entry::InFlight { .. } => true,
            Entry::Completed { at, .. } => now - *at < keep,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: StatusCode) -> StoredAnswer {
        StoredAnswer {
            status,
            content_type: "application/json",
            body: Bytes::from_static(b"{}"),
        }
    }

    #[test]
    fn errors_are_replayed_and_the_window_ends() {
        let printer = Fingerprinter::default();
        let window = TimeDelta::minutes(6);
        let now = Utc::now();
        let a = printer.fingerprint(&Method::PUT, "/Contacts", b"{\"a\":1}");
        let b = printer.fingerprint(
            &Method::PUT,
            "/Contacts?summarizeErrors=false",
            b"{\"a\":1}",
        );
        let mut store = IdempotencyStore::default();
        let Claim::Proceed { token } = store.claim("k", a, window, now) else {
            panic!("fresh key not claimable");
        };
        assert!(matches!(store.claim("k", a, window, now), Claim::InFlight));
        assert!(matches!(store.claim("k", b, window, now), Claim::Mismatch));
        store.settle("k", token, Some(answer(StatusCode::BAD_REQUEST)), now);
        assert!(matches!(
            store.claim("k", a, window, now),
            Claim::Replay(StoredAnswer {
                status: StatusCode::BAD_REQUEST,
                ..
            })
        ));
        let later = now + window;
        assert!(matches!(
            store.claim("k", b, window, later),
            Claim::Proceed { .. }
        ));
    }

    #[test]
    fn an_abandoned_request_frees_its_key() {
        let printer = Fingerprinter::default();
        let now = Utc::now();
        let a = printer.fingerprint(&Method::POST, "/Invoices", b"{}");
        let mut store = IdempotencyStore::default();
        let Claim::Proceed { token } = store.claim("k", a, TimeDelta::minutes(6), now) else {
            panic!("fresh key not claimable");
        };
        store.settle("k", token, None, now);
        assert!(matches!(
            store.claim("k", a, TimeDelta::minutes(6), now),
            Claim::Proceed { .. }
        ));
    }
}
