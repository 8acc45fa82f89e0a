//! Cursor pagination: a listing returns at most `limit` rows and, when there may be more, an
//! opaque `next_cursor` to pass back as `cursor`. The cursor is the last row's sort key,
//! base64-encoded JSON: stable under inserts, and as cheap at the millionth row as at the
//! first.

use super::problem::Problem;
use base64::Engine as _;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Rows a page holds when the caller does not say.
pub const DEFAULT_LIMIT: u32 = 50;

/// One page of a listing.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    /// Pass as `cursor` to read the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

pub fn encode<K: Serialize>(key: &K) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(key).unwrap_or_default())
}

/// Reads a cursor this API handed out; anything else is a `422` on `cursor`.
pub fn decode<K: DeserializeOwned>(raw: Option<&str>) -> Result<Option<K>, Problem> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .map(Some)
        .ok_or_else(|| {
            Problem::field(
                "cursor",
                "is not a cursor this API returned; pass `next_cursor` from the previous page as is",
            )
        })
}

/// The page size asked for, within `1..=max`.
pub fn limit(asked: Option<u32>, max: u32) -> Result<i64, Problem> {
    match asked.unwrap_or(DEFAULT_LIMIT.min(max)) {
        0 => Err(Problem::field("limit", "must be at least 1")),
        n if n > max => Err(Problem::field(
            "limit",
            format!("must be at most {max} (api.max_page_size)"),
        )),
        n => Ok(i64::from(n)),
    }
}

/// Builds a page from `limit + 1` fetched rows: the extra row only says there is more.
pub fn page<R, T, K: Serialize>(
    mut rows: Vec<R>,
    limit: i64,
    key: impl Fn(&R) -> K,
    view: impl Fn(R) -> T,
) -> Page<T> {
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = if more {
        rows.last().map(|r| encode(&key(r)))
    } else {
        None
    };
    Page {
        data: rows.into_iter().map(view).collect(),
        next_cursor,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_garbage_names_the_field() {
        let cursor = encode(&(42_i64, "x"));
        assert_eq!(
            decode::<(i64, String)>(Some(&cursor)).unwrap(),
            Some((42, "x".to_owned()))
        );
        let err = decode::<(i64, String)>(Some("not-a-cursor!")).unwrap_err();
        assert_eq!(err.errors[0].field, "cursor");
        assert_eq!(decode::<i64>(None).unwrap(), None);
    }

    #[test]
    fn a_page_says_there_is_more_only_when_there_is() {
        let full = page(vec![1, 2, 3], 2, |r| *r, |r| r * 10);
        assert_eq!(full.data, vec![10, 20]);
        assert_eq!(decode::<i32>(full.next_cursor.as_deref()).unwrap(), Some(2));
        let last = page(vec![1, 2], 2, |r| *r, |r| r);
        assert!(last.next_cursor.is_none());
        assert!(limit(Some(0), 10).is_err());
        assert!(limit(Some(11), 10).is_err());
        assert_eq!(limit(None, 10).unwrap(), 10);
    }
}
