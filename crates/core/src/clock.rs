//! The one source of "now" in Rust code (the store carries it: `Store::now`). Roles use
//! [`SystemClock`]; tests that need to move time (schedules, waits) use [`ManualClock`].
//! Leases are timed by the database's clock instead, which every worker shares.

use chrono::{DateTime, Duration, Utc};
use std::sync::{Arc, Mutex};

/// Where every time-dependent decision reads the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to; clones share the same instant.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
        }
    }

    pub fn set(&self, to: DateTime<Utc>) {
        // A poisoned lock only means another test thread panicked; the instant is still valid.
        let mut guard = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *guard = to;
    }

    pub fn advance(&self, by: Duration) {
        let mut guard = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *guard += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}
