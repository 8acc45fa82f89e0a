//! A circuit breaker per ERP account: after a run of consecutive failures of the ERP itself
//! (5xx, timeouts, refused connections), the runtime stops sending for a cool-off, so a full
//! outage costs a handful of requests per attempt instead of every record of the chunk with
//! its in-call retries. Requests refused meanwhile fail at once as `Transient` with the
//! remaining cool-off as `retry_after`: the worker commits what succeeded and hands the job
//! back to the delay queue. When it trips, the runtime also blocks the account through the
//! fleet-wide rate gate, so the other workers stay away too.

use crate::ConnectorError;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When the breaker trips and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerOptions {
    /// Consecutive ERP failures (after which in-call retries are not worth it) that open it.
    pub trip_after: u32,
    /// How long it stays open before requests are tried again.
    pub cool_off: Duration,
}

impl Default for BreakerOptions {
    fn default() -> Self {
        Self {
            trip_after: 5,
            cool_off: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    consecutive_failures: u32,
    open_until: Option<Instant>,
}

#[derive(Debug)]
pub(crate) struct Breaker {
    options: BreakerOptions,
    state: Mutex<State>,
}

impl Breaker {
    pub fn new(options: BreakerOptions) -> Self {
        Self {
            options,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means a thread panicked holding it; the counts stay usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refuses at once while open, saying for how long.
    pub fn check(&self, account: &str) -> Result<(), ConnectorError> {
        let mut state = self.state();
        match state.open_until {
            Some(until) if until > Instant::now() => Err(ConnectorError::Transient {
                message: format!(
                    "the ERP ({account}) failed {} times in a row; not sending for {:.0} s (circuit open)",
                    self.options.trip_after,
                    (until - Instant::now()).as_secs_f64()
                ),
                retry_after: Some(until - Instant::now()),
            }),
            Some(_) => {
                // Half-open: the next request tries; one more failure opens it again.
                state.open_until = None;
                state.consecutive_failures = self.options.trip_after.saturating_sub(1);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Whether requests are refused now (then an in-call retry is pointless: the chunk stops
    /// and the job goes back to the queue).
    pub fn is_open(&self) -> bool {
        self.state().open_until.is_some_and(|u| u > Instant::now())
    }

    /// Records how a request ended. Returns the cool-off when this failure opened it.
    pub fn record(&self, erp_failed: bool) -> Option<Duration> {
        let mut state = self.state();
        if !erp_failed {
            state.consecutive_failures = 0;
            return None;
        }
        state.consecutive_failures += 1;
        let opened = state.open_until.is_some_and(|u| u > Instant::now());
        if state.consecutive_failures >= self.options.trip_after && !opened {
            state.open_until = Some(Instant::now() + self.options.cool_off);
            return Some(self.options.cool_off);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_opens_after_consecutive_failures_and_a_success_resets_the_count() {
        let b = Breaker::new(BreakerOptions {
            trip_after: 3,
            cool_off: Duration::from_millis(50),
        });
        assert_eq!(b.record(true), None);
        assert_eq!(b.record(true), None);
        assert_eq!(b.record(false), None, "a success in between resets");
        assert_eq!(b.record(true), None);
        assert_eq!(b.record(true), None);
        assert_eq!(b.record(true), Some(Duration::from_millis(50)));
        let refused = b.check("realm 1").unwrap_err();
        assert!(refused.is_retryable());
        assert!(refused.retry_after().unwrap() <= Duration::from_millis(50));
        assert!(refused.to_string().contains("circuit open"), "{refused}");
        std::thread::sleep(Duration::from_millis(60));
        // Half-open: one request goes; its failure opens it again at once.
        b.check("realm 1").unwrap();
        assert_eq!(b.record(true), Some(Duration::from_millis(50)));
        assert!(b.check("realm 1").is_err());
    }
}
