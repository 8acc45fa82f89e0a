//! What every simulator puts between authentication and its own handling: the per-account
//! traffic gate (request counter, fixed-window rate limiter, "you were told to wait" tracking)
//! and the queue of injected faults, plus the interruptible sleep that latency and timeout
//! faults use so a shutting-down sandbox never waits on them. What a fault that fired does to
//! its request is [`crate::fault_plan`]'s.
//!
//! This module knows nothing of any one ERP: it decides *whether* and *how* a request is
//! handled, never what handling means. A simulator keeps one [`TrafficGate`] per account,
//! inside that account's lock, and asks it [`TrafficGate::admit`] once per request.

use axum::http::{Method, StatusCode};
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A fault to inject into the next matching requests of one account.
///
/// Faults are consumed in the order they were queued: a request takes the first queued fault
/// whose filters match it, and that fault is used up after `times` requests. `method` (case
/// insensitive) and `path_contains` (a substring of the request path, prefix included) narrow
/// which requests a fault applies to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Answer with this status and a problem+json body instead of handling the request.
    /// A 429 with `retry_after` also tells the account to wait, like the rate limiter does.
    Status {
        status: u16,
        #[serde(default)]
        retry_after: Option<u64>,
        times: u32,
        #[serde(default)]
        method: Option<String>,
        #[serde(default)]
        path_contains: Option<String>,
    },
    /// Wait `ms` milliseconds, then handle the request normally. An idempotency key is
    /// already "in flight" during the wait, so a concurrent retry with it gets a 409.
    Latency {
        ms: u64,
        times: u32,
        #[serde(default)]
        method: Option<String>,
        #[serde(default)]
        path_contains: Option<String>,
    },
    /// Never answer (the request is held for minutes and not handled): the client must time
    /// out on its own.
    Timeout {
        times: u32,
        #[serde(default)]
        method: Option<String>,
        #[serde(default)]
        path_contains: Option<String>,
    },
    /// Handle the request normally (a create does create) but cut the response body in half,
    /// so it is not valid JSON.
    Malformed {
        times: u32,
        #[serde(default)]
        method: Option<String>,
        #[serde(default)]
        path_contains: Option<String>,
    },
    /// Answer 502 with an HTML page, as a reverse proxy in front of the ERP would, without
    /// handling the request.
    Html {
        times: u32,
        #[serde(default)]
        method: Option<String>,
        #[serde(default)]
        path_contains: Option<String>,
    },
    /// Handle the request normally (a create does create), then answer 500: the ERP accepted
    /// the record but the client never saw the answer.
    DropResponse {
        times: u32,
        #[serde(default)]
        method: Option<String>,
        #[serde(default)]
        path_contains: Option<String>,
    },
}

impl Fault {
    /// Refuses faults that could never apply or could not be answered, so a test typo fails
    /// loudly at injection rather than silently never firing.
    pub(crate) fn check(&self) -> Result<(), String> {
        let filter = self.filter();
        if filter.times == 0 {
            return Err("times must be at least 1".into());
        }
        if let Some(method) = filter.method
            && Method::from_bytes(method.to_ascii_uppercase().as_bytes()).is_err()
        {
            return Err(format!("method {method:?} is not an HTTP method"));
        }
        if let Fault::Status { status, .. } = self
            && !(200..=599).contains(status)
        {
            return Err(format!(
                "status {status} is not a final HTTP status (200..=599)"
            ));
        }
        Ok(())
    }

    fn filter(&self) -> FaultFilter<'_> {
        let (times, method, path_contains) = match self {
            Fault::Status {
                times,
                method,
                path_contains,
                ..
            }
            | Fault::Latency {
                times,
                method,
                path_contains,
                ..
            }
            | Fault::Timeout {
                times,
                method,
                path_contains,
            }
            | Fault::Malformed {
                times,
                method,
                path_contains,
            }
            | Fault::Html {
                times,
                method,
                path_contains,
            }
            | Fault::DropResponse {
                times,
                method,
                path_contains,
            } => (times, method, path_contains),
        };
        FaultFilter {
            times: *times,
            method: method.as_deref(),
            path_contains: path_contains.as_deref(),
        }
    }

    fn injection(&self) -> Injection {
        match self {
            Fault::Status {
                status,
                retry_after,
                ..
            } => Injection::Status {
                // `check` ran at queue time; the fallback only guards a hand-built queue.
                status: StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                retry_after: *retry_after,
            },
            Fault::Latency { ms, .. } => Injection::Latency(Duration::from_millis(*ms)),
            Fault::Timeout { .. } => Injection::Timeout,
            Fault::Malformed { .. } => Injection::Malformed,
            Fault::Html { .. } => Injection::Html,
            Fault::DropResponse { .. } => Injection::DropResponse,
        }
    }
}

struct FaultFilter<'a> {
    times: u32,
    method: Option<&'a str>,
    path_contains: Option<&'a str>,
}

impl FaultFilter<'_> {
    fn matches(&self, method: &Method, path: &str) -> bool {
        self.method
            .is_none_or(|m| m.eq_ignore_ascii_case(method.as_str()))
            && self.path_contains.is_none_or(|p| path.contains(p))
    }
}

/// What the simulator must do to one request because of a fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Injection {
    Status {
        status: StatusCode,
        retry_after: Option<u64>,
    },
    Latency(Duration),
    Timeout,
    Malformed,
    Html,
    DropResponse,
}

#[derive(Debug)]
struct QueuedFault {
    fault: Fault,
    remaining: u32,
}

/// Faults waiting to fire, oldest first.
#[derive(Debug, Default)]
pub(crate) struct FaultQueue {
    queued: VecDeque<QueuedFault>,
}

impl FaultQueue {
    /// Queues a fault; the caller has already [`Fault::check`]ed it.
    pub(crate) fn push(&mut self, fault: Fault) {
        let remaining = fault.filter().times;
        self.queued.push_back(QueuedFault { fault, remaining });
    }

    /// Consumes one use of the oldest fault matching this request, if any.
    pub(crate) fn take(&mut self, method: &Method, path: &str) -> Option<Injection> {
        let index = self
            .queued
            .iter()
            .position(|q| q.fault.filter().matches(method, path))?;
        let queued = self.queued.get_mut(index)?;
        let injection = queued.fault.injection();
        queued.remaining = queued.remaining.saturating_sub(1);
        if queued.remaining == 0 {
            self.queued.remove(index);
        }
        Some(injection)
    }
}

/// Counters a simulator reports per account, whatever the ERP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TrafficStats {
    pub requests: u64,
    pub rate_limited: u64,
    pub violations: u64,
    pub max_requests_in_window: u64,
}

/// The gate's verdict on one request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Go on, applying this fault if one matched.
    Admitted(Option<Injection>),
    /// Answer 429 with `Retry-After: retry_after`.
    Refused { retry_after: u64 },
}

/// One account's request counter, fixed-window rate limiter and fault queue.
#[derive(Debug)]
pub(crate) struct TrafficGate {
    /// Requests accepted per window; `None` means unlimited (windows are still measured, so
    /// `max_requests_in_window` reports the throughput a client reached).
    limit: Option<u32>,
    window: TimeDelta,
    /// Index of the current window since the Unix epoch: windows are aligned on the wall
    /// clock, as a "N requests per second" API's usually are.
    current_window: i64,
    accepted_in_window: u64,
    /// Until when the account was told (by a `Retry-After` on a 429) to stay away. Requests
    /// before that instant are violations and are refused again.
    wait_until: Option<DateTime<Utc>>,
    stats: TrafficStats,
    pub(crate) faults: FaultQueue,
}

impl TrafficGate {
    pub(crate) fn new(limit: Option<u32>, window: Duration) -> Self {
        Self {
            limit,
            // A window shorter than a millisecond makes no sense; clamp rather than divide by 0.
            window: TimeDelta::from_std(window)
                .unwrap_or(TimeDelta::seconds(1))
                .max(TimeDelta::milliseconds(1)),
            current_window: i64::MIN,
            accepted_in_window: 0,
            wait_until: None,
            stats: TrafficStats::default(),
            faults: FaultQueue::default(),
        }
    }

    pub(crate) fn set_limit(&mut self, limit: Option<u32>) {
        self.limit = limit;
    }

    pub(crate) fn stats(&self) -> TrafficStats {
        self.stats
    }

    /// Counts the request and decides whether it goes on (and with which fault) or gets a 429.
    pub(crate) fn admit(&mut self, now: DateTime<Utc>, method: &Method, path: &str) -> Admission {
        self.stats.requests += 1;

        if let Some(until) = self.wait_until {
            if now < until {
                self.stats.violations += 1;
                self.stats.rate_limited += 1;
                return Admission::Refused {
                    retry_after: whole_seconds_until(now, until),
                };
            }
            self.wait_until = None;
        }

        let window_ms = self.window.num_milliseconds();
        let index = now.timestamp_millis().div_euclid(window_ms);
        if index != self.current_window {
            self.current_window = index;
            self.accepted_in_window = 0;
        }
        if let Some(limit) = self.limit
            && self.accepted_in_window >= u64::from(limit)
        {
            let window_end = DateTime::<Utc>::from_timestamp_millis((index + 1) * window_ms)
                .unwrap_or(now + self.window);
            let retry_after = whole_seconds_until(now, window_end);
            self.told_to_wait(now, retry_after);
            return Admission::Refused { retry_after };
        }
        self.accepted_in_window += 1;
        self.stats.max_requests_in_window = self
            .stats
            .max_requests_in_window
            .max(self.accepted_in_window);

        Admission::Admitted(self.faults.take(method, path))
    }

    /// Records a 429 sent with `Retry-After: secs`: the account must not call again before
    /// `now + secs`.
    pub(crate) fn told_to_wait(&mut self, now: DateTime<Utc>, secs: u64) {
        self.stats.rate_limited += 1;
        let until = now + TimeDelta::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 1000));
        self.wait_until = Some(self.wait_until.map_or(until, |u| u.max(until)));
    }

    /// Records a 429 sent without `Retry-After` (an injected one): counted, but no wait.
    pub(crate) fn limited_without_wait(&mut self) {
        self.stats.rate_limited += 1;
    }
}

/// `Retry-After` is whole seconds: round up so a client that obeys it exactly is never early,
/// and never say 0, which some clients read as "retry immediately".
fn whole_seconds_until(now: DateTime<Utc>, until: DateTime<Utc>) -> u64 {
    let ms = u64::try_from((until - now).num_milliseconds()).unwrap_or(0);
    ms.div_ceil(1000).max(1)
}

/// Ends injected sleeps early when the sandbox shuts down, so a graceful shutdown never waits
/// for a five-minute timeout fault.
#[derive(Clone, Debug)]
pub(crate) struct Interrupt {
    fired: Arc<watch::Sender<bool>>,
}

impl Default for Interrupt {
    fn default() -> Self {
        Self {
            fired: Arc::new(watch::Sender::new(false)),
        }
    }
}

impl Interrupt {
    pub(crate) fn fire(&self) {
        self.fired.send_replace(true);
    }

    /// Sleeps for `duration`; returns `false` if interrupted instead.
    pub(crate) async fn sleep(&self, duration: Duration) -> bool {
        let mut fired = self.fired.subscribe();
        if *fired.borrow_and_update() {
            return false;
        }
        tokio::select! {
            () = tokio::time::sleep(duration) => true,
            _ = fired.wait_for(|f| *f) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_800_000_000_000 + ms).unwrap()
    }

    fn status(times: u32, method: Option<&str>, path: Option<&str>) -> Fault {
        Fault::Status {
            status: 503,
            retry_after: None,
            times,
            method: method.map(str::to_owned),
            path_contains: path.map(str::to_owned),
        }
    }

    #[test]
    fn faults_fire_in_queue_order_and_are_used_up() {
        let mut queue = FaultQueue::default();
        queue.push(status(2, None, None));
        queue.push(Fault::Html {
            times: 1,
            method: None,
            path_contains: None,
        });
        let fired: Vec<_> = (0..4).map(|_| queue.take(&Method::GET, "/x")).collect();
        assert_eq!(
            fired,
            vec![
                Some(Injection::Status {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    retry_after: None
                }),
                Some(Injection::Status {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    retry_after: None
                }),
                Some(Injection::Html),
                None,
            ]
        );
    }

    #[test]
    fn a_filtered_fault_lets_other_requests_through() {
        let mut queue = FaultQueue::default();
        queue.push(status(1, Some("post"), Some("/orders")));
        assert_eq!(queue.take(&Method::GET, "/api/orders"), None);
        assert_eq!(queue.take(&Method::POST, "/api/products"), None);
        assert!(queue.take(&Method::POST, "/api/orders").is_some());
        assert_eq!(queue.take(&Method::POST, "/api/orders"), None);
    }

    #[test]
    fn useless_faults_are_refused() {
        assert!(status(0, None, None).check().is_err());
        assert!(status(1, Some("not a method"), None).check().is_err());
        let informational = Fault::Status {
            status: 100,
            retry_after: None,
            times: 1,
            method: None,
            path_contains: None,
        };
        assert!(informational.check().is_err());
        assert!(status(1, Some("put"), None).check().is_ok());
    }

    #[test]
    fn the_limit_applies_per_wall_clock_window() {
        let mut gate = TrafficGate::new(Some(2), Duration::from_secs(1));
        assert!(matches!(
            gate.admit(at(100), &Method::GET, "/"),
            Admission::Admitted(None)
        ));
        assert!(matches!(
            gate.admit(at(200), &Method::GET, "/"),
            Admission::Admitted(None)
        ));
        assert_eq!(
            gate.admit(at(300), &Method::GET, "/"),
            Admission::Refused { retry_after: 1 }
        );
        // Told to wait until 1.3 s: the new window opened at 1.0 s, but 1.2 s is still early.
        assert_eq!(
            gate.admit(at(1200), &Method::GET, "/"),
            Admission::Refused { retry_after: 1 }
        );
        assert!(matches!(
            gate.admit(at(1300), &Method::GET, "/"),
            Admission::Admitted(None)
        ));
        let stats = gate.stats();
        assert_eq!(stats.requests, 5);
        assert_eq!(stats.rate_limited, 2);
        assert_eq!(stats.violations, 1);
        assert_eq!(stats.max_requests_in_window, 2);
    }

    #[test]
    fn an_unlimited_gate_still_measures_its_busiest_window() {
        let mut gate = TrafficGate::new(None, Duration::from_secs(1));
        for ms in [0, 10, 20, 1000, 1010] {
            gate.admit(at(ms), &Method::GET, "/");
        }
        assert_eq!(gate.stats().max_requests_in_window, 3);
        assert_eq!(gate.stats().rate_limited, 0);
    }

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        assert_eq!(whole_seconds_until(at(0), at(1)), 1);
        assert_eq!(whole_seconds_until(at(0), at(0)), 1);
        assert_eq!(whole_seconds_until(at(0), at(2001)), 3);
    }

    #[tokio::test]
    async fn an_interrupt_ends_sleeps_early() {
        let interrupt = Interrupt::default();
        let sleeper = tokio::spawn({
            let interrupt = interrupt.clone();
            async move { interrupt.sleep(Duration::from_secs(300)).await }
        });
        tokio::task::yield_now().await;
        interrupt.fire();
        assert!(!sleeper.await.unwrap());
        assert!(!interrupt.sleep(Duration::from_secs(300)).await);
    }

    #[test]
    fn faults_read_the_documented_json() {
        let fault: Fault =
            serde_json::from_str(r#"{"kind":"drop_response","times":1,"method":"POST"}"#).unwrap();
        assert_eq!(
            fault,
            Fault::DropResponse {
                times: 1,
                method: Some("POST".into()),
                path_contains: None
            }
        );
        assert!(serde_json::from_str::<Fault>(r#"{"kind":"timeout","times":1,"ms":5}"#).is_err());
    }
}
