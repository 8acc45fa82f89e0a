//! Xero's rate limits, per app and tenant: calls per rolling minute, per rolling day, in
//! flight at once, and per app per minute across its tenants. A refusal names the limit
//! (`X-Rate-Limit-Problem`) and says when to come back (`Retry-After`); a client that comes
//! back earlier is refused again and counted as a violation.
//!
//! Windows roll (a request is counted for exactly one window length after it was accepted),
//! as Xero describes its limits, rather than resetting on the wall clock: a client that
//! spreads its calls evenly never trips them, one that bursts at a window edge does.

use super::XeroLimits;
use chrono::{DateTime, TimeDelta, Utc};
use std::collections::VecDeque;

/// Which limit refused a request, as `X-Rate-Limit-Problem` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LimitProblem {
    Minute,
    Day,
    Concurrent,
    AppMinute,
}

impl LimitProblem {
    pub(crate) fn header_value(self) -> &'static str {
        match self {
            LimitProblem::Minute => "minute",
            LimitProblem::Day => "day",
            LimitProblem::Concurrent => "concurrent",
            LimitProblem::AppMinute => "appminute",
        }
    }
}

/// The `X-*Limit-Remaining` values after a request; `None` for an unlimited dimension.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Remaining {
    pub minute: Option<u64>,
    pub day: Option<u64>,
    pub app_minute: Option<u64>,
}

/// Accepted calls in the last `window`, oldest first.
#[derive(Debug)]
pub(crate) struct RollingWindow {
    window: TimeDelta,
    accepted: VecDeque<DateTime<Utc>>,
    /// Most calls ever inside one window: the throughput a client actually reached.
    pub(crate) max_in_window: u64,
}

impl RollingWindow {
    pub(crate) fn new(window_ms: u64) -> Self {
        Self {
            // A window under a millisecond makes no sense; clamp instead of dividing by zero.
            window: TimeDelta::milliseconds(i64::try_from(window_ms.max(1)).unwrap_or(i64::MAX)),
            accepted: VecDeque::new(),
            max_in_window: 0,
        }
    }

    fn set_window(&mut self, window_ms: u64) {
        self.window = TimeDelta::milliseconds(i64::try_from(window_ms.max(1)).unwrap_or(i64::MAX));
    }

    fn prune(&mut self, now: DateTime<Utc>) {
        while let Some(oldest) = self.accepted.front() {
            if *oldest + self.window <= now {
                self.accepted.pop_front();
            } else {
                break;
            }
        }
    }

    /// Seconds until the window has room again, or `None` if it has room now.
    fn full_for(&mut self, now: DateTime<Utc>, limit: Option<u32>) -> Option<u64> {
        self.prune(now);
        let limit = u64::from(limit?);
        if (self.accepted.len() as u64) < limit {
            return None;
        }
        // The call that frees a slot is the one `limit` places from the end.
        let index = self.accepted.len() - usize::try_from(limit).unwrap_or(usize::MAX);
        let frees_at = self.accepted.get(index).map_or(now, |at| *at + self.window);
        Some(whole_seconds_until(now, frees_at))
    }

    fn accept(&mut self, now: DateTime<Utc>) {
        self.accepted.push_back(now);
        self.max_in_window = self.max_in_window.max(self.accepted.len() as u64);
    }

    fn remaining(&self, limit: Option<u32>) -> Option<u64> {
        limit.map(|l| u64::from(l).saturating_sub(self.accepted.len() as u64))
    }

    /// Keeps at most `keep` timestamps when the window is unlimited, so an unlimited day
    /// window under a benchmark does not grow without bound.
    fn trim(&mut self, keep: usize) {
        while self.accepted.len() > keep {
            self.accepted.pop_front();
        }
    }
}

/// The app-wide minute limit (Xero: 10,000 calls a minute across all tenants).
#[derive(Debug)]
pub(crate) struct AppGate {
    pub(crate) minute: RollingWindow,
}

impl AppGate {
    pub(crate) fn new(limits: &XeroLimits) -> Self {
        Self {
            minute: RollingWindow::new(limits.minute_window_ms),
        }
    }
}

/// Counters one (app, tenant) gate reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct GateStats {
    pub requests: u64,
    pub rate_limited: u64,
    pub violations: u64,
    pub max_requests_in_window: u64,
    pub max_concurrent: u64,
}

/// The verdict on one request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    Admitted(Remaining),
    Refused {
        problem: LimitProblem,
        retry_after: u64,
        remaining: Remaining,
    },
}

/// One app's limits against one tenant.
#[derive(Debug)]
pub(crate) struct TenantGate {
    minute: RollingWindow,
    day: RollingWindow,
    in_flight: u64,
    /// Until when (and because of which limit) the client was told to stay away.
    wait: Option<(DateTime<Utc>, LimitProblem)>,
    stats: GateStats,
}

impl TenantGate {
    pub(crate) fn new(limits: &XeroLimits) -> Self {
        Self {
            minute: RollingWindow::new(limits.minute_window_ms),
            day: RollingWindow::new(limits.day_window_ms),
            in_flight: 0,
            wait: None,
            stats: GateStats::default(),
        }
    }

    pub(crate) fn reconfigure(&mut self, limits: &XeroLimits) {
        self.minute.set_window(limits.minute_window_ms);
        self.day.set_window(limits.day_window_ms);
    }

    pub(crate) fn stats(&self) -> GateStats {
        GateStats {
            max_requests_in_window: self.minute.max_in_window,
            ..self.stats
        }
    }

    fn remaining(&self, limits: &XeroLimits, app: &AppGate) -> Remaining {
        Remaining {
            minute: self.minute.remaining(limits.per_minute),
            day: self.day.remaining(limits.per_day),
            app_minute: app.minute.remaining(limits.app_per_minute),
        }
    }

    /// Counts the request and decides whether it may run. An admitted request is in flight
    /// until [`Self::finish`].
    pub(crate) fn admit(
        &mut self,
        now: DateTime<Utc>,
        limits: &XeroLimits,
        app: &mut AppGate,
    ) -> Admission {
        self.stats.requests += 1;
        if let Some((until, problem)) = self.wait {
            if now < until {
                self.stats.violations += 1;
                self.stats.rate_limited += 1;
                return Admission::Refused {
                    problem,
                    retry_after: whole_seconds_until(now, until),
                    remaining: self.remaining(limits, app),
                };
            }
            self.wait = None;
        }

        // The longest wait wins when several limits are exhausted at once, so a client that
        // obeys Retry-After is not refused again by the next limit in line.
        let concurrent = limits
            .concurrent
            .filter(|limit| self.in_flight >= u64::from(*limit))
            .map(|_| (LimitProblem::Concurrent, 1));
        let refusal = [
            self.day
                .full_for(now, limits.per_day)
                .map(|s| (LimitProblem::Day, s)),
            self.minute
                .full_for(now, limits.per_minute)
                .map(|s| (LimitProblem::Minute, s)),
            app.minute
                .full_for(now, limits.app_per_minute)
                .map(|s| (LimitProblem::AppMinute, s)),
            concurrent,
        ]
        .into_iter()
        .flatten()
        .max_by_key(|(_, secs)| *secs);
        if let Some((problem, retry_after)) = refusal {
            self.told_to_wait(now, retry_after, problem);
            return Admission::Refused {
                problem,
                retry_after,
                remaining: self.remaining(limits, app),
            };
        }

        self.minute.accept(now);
        self.day.accept(now);
        app.minute.accept(now);
        if limits.per_day.is_none() {
            self.day.trim(1);
        }
        self.in_flight += 1;
        self.stats.max_concurrent = self.stats.max_concurrent.max(self.in_flight);
        Admission::Admitted(self.remaining(limits, app))
    }

    /// The request admitted earlier has been answered (or abandoned).
    pub(crate) fn finish(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Records a 429 sent with `Retry-After: secs`.
    pub(crate) fn told_to_wait(&mut self, now: DateTime<Utc>, secs: u64, problem: LimitProblem) {
        self.stats.rate_limited += 1;
        let until = now + TimeDelta::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 1000));
        let later = self.wait.is_none_or(|(current, _)| until > current);
        if later {
            self.wait = Some((until, problem));
        }
    }

    /// Records a 429 sent without `Retry-After` (an injected one): counted, no wait.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_800_000_000_000 + ms).unwrap()
    }

    fn limits(per_minute: u32, window_ms: u64) -> XeroLimits {
        XeroLimits {
            per_minute: Some(per_minute),
            minute_window_ms: window_ms,
            ..XeroLimits::default()
        }
    }

    #[test]
    fn the_minute_window_rolls() {
        let limits = limits(2, 1000);
        let mut app = AppGate::new(&limits);
        let mut gate = TenantGate::new(&limits);
        assert!(matches!(
            gate.admit(at(0), &limits, &mut app),
            Admission::Admitted(_)
        ));
        gate.finish();
        let Admission::Admitted(remaining) = gate.admit(at(600), &limits, &mut app) else {
            panic!("second call refused");
        };
        gate.finish();
        assert_eq!(remaining.minute, Some(0));
        assert_eq!(remaining.day, Some(4998));
        // Full until the first call leaves the window at 1000 ms.
        assert_eq!(
            gate.admit(at(700), &limits, &mut app),
            Admission::Refused {
                problem: LimitProblem::Minute,
                retry_after: 1,
                remaining: Remaining {
                    minute: Some(0),
                    day: Some(4998),
                    app_minute: Some(9998)
                }
            }
        );
        // Told to wait until 1700 ms: 1500 ms is a violation though the window has room.
        assert!(matches!(
            gate.admit(at(1500), &limits, &mut app),
            Admission::Refused { .. }
        ));
        assert!(matches!(
            gate.admit(at(1700), &limits, &mut app),
            Admission::Admitted(_)
        ));
        let stats = gate.stats();
        assert_eq!(stats.requests, 5);
        assert_eq!(stats.rate_limited, 2);
        assert_eq!(stats.violations, 1);
        assert_eq!(stats.max_requests_in_window, 2);
    }

    #[test]
    fn concurrency_counts_requests_in_flight() {
        let limits = XeroLimits {
            concurrent: Some(2),
            ..XeroLimits::default()
        };
        let mut app = AppGate::new(&limits);
        let mut gate = TenantGate::new(&limits);
        assert!(matches!(
            gate.admit(at(0), &limits, &mut app),
            Admission::Admitted(_)
        ));
        assert!(matches!(
            gate.admit(at(1), &limits, &mut app),
            Admission::Admitted(_)
        ));
        assert!(matches!(
            gate.admit(at(2), &limits, &mut app),
            Admission::Refused {
                problem: LimitProblem::Concurrent,
                retry_after: 1,
                ..
            }
        ));
        gate.finish();
        assert!(matches!(
            gate.admit(at(1002), &limits, &mut app),
            Admission::Admitted(_)
        ));
        assert_eq!(gate.stats().max_concurrent, 2);
    }

    #[test]
    fn the_longest_wait_is_announced() {
        let limits = XeroLimits {
            per_minute: Some(1),
            per_day: Some(1),
            day_window_ms: 120_000,
            ..XeroLimits::default()
        };
        let mut app = AppGate::new(&limits);
        let mut gate = TenantGate::new(&limits);
        assert!(matches!(
            gate.admit(at(0), &limits, &mut app),
            Admission::Admitted(_)
        ));
        gate.finish();
        assert!(matches!(
            gate.admit(at(100), &limits, &mut app),
            Admission::Refused {
                problem: LimitProblem::Day,
                retry_after: 120,
                ..
            }
        ));
    }

    #[test]
    fn unlimited_dimensions_report_no_remaining() {
        let limits = XeroLimits {
            per_minute: None,
            per_day: None,
            concurrent: None,
            app_per_minute: None,
            ..XeroLimits::default()
        };
        let mut app = AppGate::new(&limits);
        let mut gate = TenantGate::new(&limits);
        for ms in 0..100 {
            let Admission::Admitted(remaining) = gate.admit(at(ms), &limits, &mut app) else {
                panic!("unlimited gate refused");
            };
            assert_eq!(remaining, Remaining::default());
        }
        assert_eq!(gate.stats().max_requests_in_window, 100);
    }
}
