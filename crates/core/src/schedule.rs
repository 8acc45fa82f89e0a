//! Schedule arithmetic for `next_sync_at`.
//!
//! The next run is computed from the *scheduled* time, not from when the previous run happened
//! to finish, so an hourly integration scheduled at 10:00 keeps running at 11:00, 12:00, ...
//! however long each run takes or however late the scheduler picked it up. Slots missed while
//! the fleet was down are skipped rather than replayed in a burst.

use crate::domain::SyncFrequency;
use chrono::{DateTime, Duration, Utc};

impl SyncFrequency {
    /// The period between two scheduled runs; `None` for manual integrations.
    pub fn period(self) -> Option<Duration> {
        match self {
            SyncFrequency::Manual => None,
            SyncFrequency::Hourly => Some(Duration::hours(1)),
            SyncFrequency::Daily => Some(Duration::days(1)),
            SyncFrequency::Weekly => Some(Duration::weeks(1)),
        }
    }
}

/// The next scheduled time strictly after `now`.
///
/// * `manual` has no schedule: `None`.
/// * With no previous schedule (`scheduled_at` is `None`) the first run is one period from now.
/// * Otherwise the result is `scheduled_at + k × period` for the smallest `k ≥ 1` that lands
///   after `now`.
pub fn next_sync_after(
    frequency: SyncFrequency,
    scheduled_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let period = frequency.period()?;
    let Some(base) = scheduled_at else {
        return Some(now + period);
    };
    if base > now {
        // Already in the future (e.g. an admin set it): the next slot after it.
        return Some(base + period);
    }
    let elapsed = (now - base).num_milliseconds();
    let step = period.num_milliseconds();
    let periods = elapsed / step + 1;
    Some(base + Duration::milliseconds(periods * step))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, h, m, 0).unwrap()
    }

    #[test]
    fn hourly_keeps_its_minute_however_late_the_run_finished() {
        let next = next_sync_after(SyncFrequency::Hourly, Some(at(10, 0)), at(10, 47));
        assert_eq!(next, Some(at(11, 0)));
    }

    #[test]
    fn missed_slots_are_skipped_not_replayed() {
        let next = next_sync_after(SyncFrequency::Hourly, Some(at(2, 15)), at(9, 20));
        assert_eq!(next, Some(at(10, 15)));
    }

    #[test]
    fn a_run_exactly_on_the_slot_schedules_the_following_one() {
        let next = next_sync_after(SyncFrequency::Daily, Some(at(6, 0)), at(6, 0));
        assert_eq!(next, Some(at(6, 0) + Duration::days(1)));
    }

    #[test]
    fn weekly_and_first_schedule() {
        assert_eq!(
            next_sync_after(SyncFrequency::Weekly, None, at(8, 0)),
            Some(at(8, 0) + Duration::weeks(1))
        );
        assert_eq!(
            next_sync_after(SyncFrequency::Weekly, Some(at(8, 0)), at(9, 0)),
            Some(at(8, 0) + Duration::weeks(1))
        );
    }

    #[test]
    fn manual_has_no_next_sync() {
        assert_eq!(
            next_sync_after(SyncFrequency::Manual, Some(at(1, 0)), at(2, 0)),
            None
        );
    }
}
