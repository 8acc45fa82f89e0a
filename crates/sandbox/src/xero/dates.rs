//! Xero's date and time formats: the MS-JSON `/Date(1552327126164+0000)/` form it writes,
//! the ISO forms it reads, the `If-Modified-Since` header and the wording of `TokenExpired`.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};

/// `/Date(ms)/` or, with `offset`, `/Date(ms+0000)/`: the spec's examples use both, per
/// endpoint (Contacts and Invoices carry the offset, Items and Quotes mostly do not).
pub(crate) fn ms_date(at: DateTime<Utc>, offset: bool) -> String {
    let ms = at.timestamp_millis();
    if offset {
        format!("/Date({ms}+0000)/")
    } else {
        format!("/Date({ms})/")
    }
}

/// A calendar date as a `Date` field: midnight UTC in MS-JSON form.
pub(crate) fn ms_day(day: NaiveDate, offset: bool) -> String {
    ms_date(day.and_time(NaiveTime::MIN).and_utc(), offset)
}

/// A calendar date as a `DateString` field: `2019-03-11T00:00:00`.
pub(crate) fn day_string(day: NaiveDate) -> String {
    day.and_time(NaiveTime::MIN)
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

/// `UpdatedDateUTCString`: `2019-03-11T17:58:46Z`.
pub(crate) fn utc_string(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Reads `/Date(1552327126164)/` and `/Date(1552327126164+0000)/`. The milliseconds are UTC;
/// the offset only says how the value was displayed, so it is checked for shape and ignored.
pub(crate) fn parse_ms_date(text: &str) -> Option<DateTime<Utc>> {
    let inner = text.strip_prefix("/Date(")?.strip_suffix(")/")?;
    let (digits, offset) = match inner.get(1..).and_then(|rest| rest.find(['+', '-'])) {
        Some(at) => inner.split_at(at + 1),
        None => (inner, ""),
    };
    let offset_ok = offset.is_empty()
        || (offset.len() == 5 && offset.bytes().skip(1).all(|b| b.is_ascii_digit()));
    if !offset_ok {
        return None;
    }
    DateTime::from_timestamp_millis(digits.parse().ok()?)
}

/// A `Date`, `DueDate` or `ExpiryDate` as a client may send it: `2019-03-11`,
/// `2019-03-11T00:00:00` (optionally with a fraction and zone) or MS-JSON.
pub(crate) fn parse_day(text: &str) -> Option<NaiveDate> {
    let text = text.trim();
    if let Some(at) = parse_ms_date(text) {
        return Some(at.date_naive());
    }
    if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Some(day);
    }
    parse_timestamp(text).map(|at| at.date_naive())
}

/// An ISO timestamp with or without a zone (none means UTC, as Xero reads it).
fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(at.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|at| at.and_utc())
}

/// The `If-Modified-Since` header: the HTTP date form (`Wed, 21 Oct 2015 07:28:00 GMT`), the
/// spec's example form (`2020-02-06T12:17:43.202-08:00`), a zoneless timestamp (UTC) or a
/// plain date. `None` when it is none of those; HTTP says to ignore such a header.
pub(crate) fn parse_if_modified_since(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc2822(text) {
        return Some(at.with_timezone(&Utc));
    }
    if let Some(at) = parse_timestamp(text) {
        return Some(at);
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .map(|day| day.and_time(NaiveTime::MIN).and_utc())
}

/// How Xero words an expiry in `TokenExpired: token expired at 04/09/2023 05:16:59`.
pub(crate) fn token_expiry(at: DateTime<Utc>) -> String {
    at.format("%m/%d/%Y %H:%M:%S").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ms_dates_round_trip_with_and_without_offset() {
        let at = DateTime::from_timestamp_millis(1_552_327_126_164).unwrap();
        assert_eq!(ms_date(at, false), "/Date(1552327126164)/");
        assert_eq!(ms_date(at, true), "/Date(1552327126164+0000)/");
        assert_eq!(parse_ms_date("/Date(1552327126164)/"), Some(at));
        assert_eq!(parse_ms_date("/Date(1552327126164+0000)/"), Some(at));
        assert_eq!(parse_ms_date("/Date(1552327126164-0800)/"), Some(at));
        assert_eq!(
            parse_ms_date("/Date(-1000)/").map(|d| d.timestamp()),
            Some(-1)
        );
        assert_eq!(parse_ms_date("/Date(12+00)/"), None);
        assert_eq!(parse_ms_date("2019-03-11"), None);
    }

    #[test]
    fn days_read_every_form_a_client_sends() {
        let day = NaiveDate::from_ymd_opt(2019, 3, 11).unwrap();
        for text in [
            "2019-03-11",
            "2019-03-11T00:00:00",
            "2019-03-11T10:00:00Z",
            "/Date(1552262400000+0000)/",
        ] {
            assert_eq!(parse_day(text), Some(day), "{text}");
        }
        assert_eq!(parse_day("11/03/2019"), None);
        assert_eq!(day_string(day), "2019-03-11T00:00:00");
        assert_eq!(ms_day(day, true), "/Date(1552262400000+0000)/");
    }

    #[test]
    fn if_modified_since_reads_http_and_iso_dates() {
        let expected = DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z").unwrap();
        assert_eq!(
            parse_if_modified_since("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(expected.with_timezone(&Utc))
        );
        assert_eq!(
            parse_if_modified_since("2015-10-21T07:28:00"),
            Some(expected.with_timezone(&Utc))
        );
        assert_eq!(
            parse_if_modified_since("2020-02-06T12:17:43.202-08:00").map(|d| d.timestamp_millis()),
            Some(1_581_020_263_202)
        );
        assert_eq!(parse_if_modified_since("yesterday"), None);
    }

    #[test]
    fn token_expiry_reads_like_xero() {
        let at = DateTime::parse_from_rfc3339("2023-04-09T05:16:59Z").unwrap();
        assert_eq!(token_expiry(at.with_timezone(&Utc)), "04/09/2023 05:16:59");
    }
}
