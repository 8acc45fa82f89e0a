//! The replay store every simulator with idempotent writes keeps per account: a key names a
//! request; the first answer to it is remembered and given again to a repeat, so a retried
//! create creates nothing.
//!
//! What differs between ERPs is decided by the caller, never here: which answers are kept
//! (the custom API keeps successes, Xero and QuickBooks every answer), for how long (24 h,
//! minutes, for ever), and what makes two requests "the same" (a [`Fingerprint`] of method,
//! path, query and body, or the key alone for QuickBooks' `requestid`).
//!
//! Requests are compared by a 128-bit fingerprint, not by their bytes: the contracts have the
//! client resend the exact request, and a fingerprint keeps memory flat under a benchmark's
//! hundreds of thousands of creates.

use axum::http::Method;
use chrono::{DateTime, TimeDelta, Utc};
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

/// Expired entries are swept after this many claims, so the sweep's cost is amortised.
const SWEEP_EVERY: u64 = 10_000;

/// The sweep keeps answers at least this long: an account's apps may replay over different
/// windows (Xero's is per app), and the longest one must not lose its entries.
const SWEEP_MARGIN: TimeDelta = TimeDelta::hours(1);

/// Identifies a request's method, target (path, with the query where it counts) and body.
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
    pub(crate) fn fingerprint(&self, method: &Method, target: &str, body: &[u8]) -> Fingerprint {
        let hash = |state: &std::hash::RandomState| {
            let mut hasher = state.build_hasher();
            method.as_str().hash(&mut hasher);
            target.hash(&mut hasher);
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

#[derive(Debug)]
enum Entry<A> {
    InFlight {
        /// `None`: the key alone names the request (any repeat is "the same").
        fingerprint: Option<Fingerprint>,
        token: u64,
    },
    Completed {
        fingerprint: Option<Fingerprint>,
        answer: A,
        at: DateTime<Utc>,
    },
}

/// What a request carrying a key may do.
#[derive(Debug)]
pub(crate) enum Claim<A> {
    /// The key is now held by this request; settle it with this token.
    Proceed { token: u64 },
    /// Same request seen before: answer this again (already counted as a replay).
    Replay(A),
    /// Same key, the same request still running.
    InFlight,
    /// Same key, a different request.
    Mismatch,
}

/// One account's keys, their answers, and what the requests carrying them created.
#[derive(Debug)]
pub(crate) struct IdempotencyStore<A> {
    entries: HashMap<String, Entry<A>>,
    next_token: u64,
    claims_since_sweep: u64,
    /// Key → records created by the requests carrying it; a replay creates none, so a value
    /// above one is a record created twice.
    creates_by_key: HashMap<String, u64>,
    /// Requests answered from the store.
    replays: u64,
}

impl<A> Default for IdempotencyStore<A> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            next_token: 0,
            claims_since_sweep: 0,
            creates_by_key: HashMap::new(),
            replays: 0,
        }
    }
}

impl<A: Clone> IdempotencyStore<A> {
    /// Claims `key` for a request; `retention` is how long an answer is replayed (after that
    /// the key is free again). `fingerprint` `None` compares keys only.
    pub(crate) fn claim(
        &mut self,
        key: &str,
        fingerprint: Option<Fingerprint>,
        retention: TimeDelta,
        now: DateTime<Utc>,
    ) -> Claim<A> {
        self.sweep(retention, now);
        let same = |held: &Option<Fingerprint>| held.is_none() || *held == fingerprint;
        match self.entries.get(key) {
            Some(Entry::InFlight { fingerprint: f, .. }) => {
                if same(f) {
                    Claim::InFlight
                } else {
                    Claim::Mismatch
                }
            }
            Some(Entry::Completed {
                fingerprint: f,
                answer,
                at,
            }) if now - *at < retention => {
                if same(f) {
                    self.replays += 1;
                    Claim::Replay(answer.clone())
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

    /// Ends a claim: an answer is remembered for replay; `None` (an answer the ERP does not
    /// replay, or a request abandoned before it was handled) frees the key. A token that no
    /// longer holds the key (it expired and was claimed again) changes nothing.
    pub(crate) fn settle(&mut self, key: &str, token: u64, answer: Option<A>, now: DateTime<Utc>) {
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

    /// Counts `records` created by a request carrying `key` (0 still lists the key).
    pub(crate) fn record_creates(&mut self, key: &str, records: u64) {
        *self.creates_by_key.entry(key.to_owned()).or_default() += records;
    }

    pub(crate) fn creates_by_key(&self) -> BTreeMap<String, u64> {
        self.creates_by_key
            .iter()
            .map(|(k, n)| (k.clone(), *n))
            .collect()
    }

    pub(crate) fn replays(&self) -> u64 {
        self.replays
    }

    fn sweep(&mut self, retention: TimeDelta, now: DateTime<Utc>) {
        self.claims_since_sweep += 1;
        if self.claims_since_sweep < SWEEP_EVERY {
            return;
        }
        self.claims_since_sweep = 0;
        let keep = retention.max(SWEEP_MARGIN);
        self.entries.retain(|_, entry| match entry {
            Entry::InFlight { .. } => true,
            Entry::Completed { at, .. } => now - *at < keep,
        });
    }
}

/// Where a held key lives: the account state that owns the [`IdempotencyStore`].
pub(crate) trait KeyOwner {
    /// Frees a key whose request was abandoned (locks the owner's state).
    fn release(&self, key: &str, token: u64);
}

/// A key held by one request, from its claim until its answer is settled. Dropped unsettled
/// (the request was abandoned mid-way: client gone, shutdown), it frees the key so a retry
/// is not refused for ever.
pub(crate) struct KeyClaim<O: KeyOwner> {
    owner: Arc<O>,
    key: String,
    token: u64,
    settled: bool,
}

impl<O: KeyOwner> KeyClaim<O> {
    pub(crate) fn new(owner: Arc<O>, key: String, token: u64) -> Self {
        Self {
            owner,
            key,
            token,
            settled: false,
        }
    }

    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// Settles the claim in `store`, which the caller has already locked (hence passed in).
    pub(crate) fn settle<A: Clone>(mut self, store: &mut IdempotencyStore<A>, answer: Option<A>) {
        store.settle(&self.key, self.token, answer, Utc::now());
        self.settled = true;
    }
}

impl<O: KeyOwner> Drop for KeyClaim<O> {
    fn drop(&mut self) {
        if !self.settled {
            self.owner.release(&self.key, self.token);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    const DAY: TimeDelta = TimeDelta::hours(24);

    #[test]
    fn a_key_goes_from_in_flight_to_replayed_until_its_retention_ends() {
        let printer = Fingerprinter::default();
        let now = Utc::now();
        let a = Some(printer.fingerprint(&Method::POST, "/o", b"{\"a\":1}"));
        let b = Some(printer.fingerprint(&Method::POST, "/o", b"{\"a\":2}"));
        let mut store = IdempotencyStore::default();
        let Claim::Proceed { token } = store.claim("k", a, DAY, now) else {
            panic!("fresh key not claimable");
        };
        assert!(matches!(store.claim("k", a, DAY, now), Claim::InFlight));
        assert!(matches!(store.claim("k", b, DAY, now), Claim::Mismatch));
        store.settle("k", token, Some(201), now);
        assert!(matches!(store.claim("k", a, DAY, now), Claim::Replay(201)));
        assert!(matches!(store.claim("k", b, DAY, now), Claim::Mismatch));
        assert_eq!(store.replays(), 1);
        let later = now + DAY;
        assert!(matches!(
            store.claim("k", b, DAY, later),
            Claim::Proceed { .. }
        ));
    }

    #[test]
    fn an_unsettled_claim_frees_its_key() {
        let now = Utc::now();
        let mut store = IdempotencyStore::<u16>::default();
        let Claim::Proceed { token } = store.claim("k", None, DAY, now) else {
            panic!("fresh key not claimable");
        };
        store.settle("k", token, None, now);
        assert!(matches!(
            store.claim("k", None, DAY, now),
            Claim::Proceed { .. }
        ));
    }

    #[test]
    fn a_key_alone_replays_whatever_the_repeat_carries() {
        let printer = Fingerprinter::default();
        let now = Utc::now();
        let mut store = IdempotencyStore::default();
        let Claim::Proceed { token } = store.claim("rid", None, TimeDelta::MAX, now) else {
            panic!("fresh key not claimable");
        };
        store.settle("rid", token, Some(400), now);
        let other = Some(printer.fingerprint(&Method::POST, "/batch", b"{}"));
        let years = now + TimeDelta::days(3650);
        assert!(matches!(
            store.claim("rid", other, TimeDelta::MAX, years),
            Claim::Replay(400)
        ));
    }

    #[test]
    fn method_and_target_are_part_of_the_request() {
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
        assert_ne!(
            printer.fingerprint(&Method::PUT, "/Contacts", body),
            printer.fingerprint(&Method::PUT, "/Contacts?summarizeErrors=false", body)
        );
    }

    struct Owner(Mutex<IdempotencyStore<u16>>);

    impl KeyOwner for Owner {
        fn release(&self, key: &str, token: u64) {
            self.0.lock().unwrap().settle(key, token, None, Utc::now());
        }
    }

    #[test]
    fn a_dropped_claim_frees_its_key_and_a_settled_one_keeps_its_answer() {
        let owner = Arc::new(Owner(Mutex::new(IdempotencyStore::default())));
        let claim = |key: &str| {
            let Claim::Proceed { token } =
                owner.0.lock().unwrap().claim(key, None, DAY, Utc::now())
            else {
                panic!("fresh key not claimable");
            };
            KeyClaim::new(owner.clone(), key.to_owned(), token)
        };
        drop(claim("abandoned"));
        claim("answered").settle(&mut owner.0.lock().unwrap(), Some(200));
        let mut store = owner.0.lock().unwrap();
        assert!(matches!(
            store.claim("abandoned", None, DAY, Utc::now()),
            Claim::Proceed { .. }
        ));
        assert!(matches!(
            store.claim("answered", None, DAY, Utc::now()),
            Claim::Replay(200)
        ));
    }
}
