//! The records of one account: five collections, each indexed by id and by `(updated_at, id)`
//! for the import's cursor pagination, with tombstones for deleted records.
//!
//! Nothing here knows about HTTP, idempotency or validation; callers hand in checked fields
//! and an `updated_at` from the account's clock.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;

/// The collections the custom API serves, in the contract's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Collection {
    Products,
    Customers,
    Orders,
    Invoices,
    Inventory,
}

impl Collection {
    pub(crate) const ALL: [Collection; 5] = [
        Collection::Products,
        Collection::Customers,
        Collection::Orders,
        Collection::Invoices,
        Collection::Inventory,
    ];

    pub(crate) fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Collection::Products => "products",
            Collection::Customers => "customers",
            Collection::Orders => "orders",
            Collection::Invoices => "invoices",
            Collection::Inventory => "inventory",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// Prefix of the ids the API hands out, so an id in a log says what it identifies.
    fn id_prefix(self) -> &'static str {
        match self {
            Collection::Products => "prd",
            Collection::Customers => "cus",
            Collection::Orders => "ord",
            Collection::Invoices => "inv",
            Collection::Inventory => "stk",
        }
    }

    /// The business key the platform upserts by on import; two live records sharing one
    /// mean something was created twice.
    fn business_key(self, record: &Map<String, Value>) -> Option<String> {
        let text = |field: &str| match record.get(field)? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        };
        match self {
            Collection::Products => text("sku"),
            // The platform's unique index is on lower(email).
            Collection::Customers => text("email").map(|e| e.to_lowercase()),
            Collection::Orders => text("order_number"),
            Collection::Invoices => text("invoice_number"),
            Collection::Inventory => Some(format!("{}:{}", text("sku")?, text("warehouse_code")?)),
        }
    }
}

/// Position in a collection's import order.
pub(crate) type Position = (DateTime<Utc>, String);

/// `updated_at` as the API writes it. Microseconds, because the account's clock keeps no
/// more, so a client that sends an item's `updated_at` back as `updated_since` names exactly
/// that instant.
pub(crate) fn format_timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[derive(Debug)]
struct StoredRecord {
    /// What GET and the import return: the fields plus `id` and `updated_at`, or a tombstone.
    body: Map<String, Value>,
    updated_at: DateTime<Utc>,
    deleted: bool,
}

/// One collection of one account.
#[derive(Debug, Default)]
pub(crate) struct CollectionStore {
    records: HashMap<String, StoredRecord>,
    /// Every record and tombstone by `(updated_at, id)`: the import walks this.
    order: BTreeSet<Position>,
    next_seq: u64,
    pub(crate) creates: u64,
    pub(crate) updates: u64,
    live: u64,
}

/// One page of an import.
pub(crate) struct Page<'a> {
    pub items: Vec<&'a Map<String, Value>>,
    /// Where the next page starts, when there is one.
    pub next: Option<Position>,
}

impl CollectionStore {
    pub(crate) fn live_count(&self) -> u64 {
        self.live
    }

    /// Creates a record with a fresh id; returns the stored body.
    pub(crate) fn create(
        &mut self,
        collection: Collection,
        fields: Map<String, Value>,
        at: DateTime<Utc>,
    ) -> &Map<String, Value> {
        let id = self.fresh_id(collection);
        self.creates += 1;
        self.put(id.clone(), Value::String(id), fields, at)
    }

    /// Replaces a live record's fields; `None` when the id is unknown or deleted.
    pub(crate) fn replace(
        &mut self,
        id: &str,
        fields: Map<String, Value>,
        at: DateTime<Utc>,
    ) -> Option<&Map<String, Value>> {
        let existing = self.records.get(id).filter(|r| !r.deleted)?;
        // Keep the id as it was first written (a seeded record may have an integer id).
        let id_value = existing.body.get("id").cloned()?;
        self.updates += 1;
        Some(self.put(id.to_owned(), id_value, fields, at))
    }

    /// Seeds a record (admin and tests): keeps its `id` (string or integer) or assigns one.
    /// Not counted as a create or update: those count what clients asked the API to do.
    pub(crate) fn upsert(
        &mut self,
        collection: Collection,
        mut fields: Map<String, Value>,
        at: DateTime<Utc>,
    ) -> Result<String, String> {
        let (id, id_value) = match fields.remove("id") {
            None | Some(Value::Null) => {
                let id = self.fresh_id(collection);
                (id.clone(), Value::String(id))
            }
            Some(Value::String(s)) if !s.is_empty() => (s.clone(), Value::String(s)),
            Some(Value::Number(n)) if n.is_u64() || n.is_i64() => (n.to_string(), Value::Number(n)),
            Some(_) => return Err("id must be a non-empty string or an integer".into()),
        };
        fields.remove("updated_at");
        fields.remove("deleted");
        self.put(id.clone(), id_value, fields, at);
        Ok(id)
    }

    /// Replaces a live record by a tombstone; `false` when there was no live record.
    pub(crate) fn delete(&mut self, id: &str, at: DateTime<Utc>) -> bool {
        let Some(record) = self.records.get(id).filter(|r| !r.deleted) else {
            return false;
        };
        let id_value = record.body.get("id").cloned().unwrap_or(Value::Null);
        let previous = record.updated_at;
        self.order.remove(&(previous, id.to_owned()));
        let mut body = Map::new();
        body.insert("id".into(), id_value);
        body.insert("updated_at".into(), Value::String(format_timestamp(at)));
        body.insert("deleted".into(), Value::Bool(true));
        self.records.insert(
            id.to_owned(),
            StoredRecord {
                body,
                updated_at: at,
                deleted: true,
            },
        );
        self.order.insert((at, id.to_owned()));
        self.live -= 1;
        true
    }

    pub(crate) fn get(&self, id: &str) -> Option<&Map<String, Value>> {
        self.records.get(id).filter(|r| !r.deleted).map(|r| &r.body)
    }

    /// Live records in import order.
    pub(crate) fn live(&self) -> impl Iterator<Item = &Map<String, Value>> {
        self.order
            .iter()
            .filter_map(|(_, id)| self.records.get(id))
            .filter(|r| !r.deleted)
            .map(|r| &r.body)
    }

    /// Business keys held by more than one live record.
    pub(crate) fn duplicate_business_keys(&self, collection: Collection) -> Vec<String> {
        let mut seen: BTreeMap<String, u32> = BTreeMap::new();
        for record in self.live() {
            if let Some(key) = collection.business_key(record) {
                *seen.entry(key).or_default() += 1;
            }
        }
        seen.into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(k, _)| k)
            .collect()
    }

    /// Up to `limit` items at or after `since` and strictly after `after`, in
    /// `(updated_at, id)` order.
    pub(crate) fn page(
        &self,
        since: Option<DateTime<Utc>>,
        after: Option<&Position>,
        limit: usize,
    ) -> Page<'_> {
        // The empty id sorts before every real one, so `(since, "")` includes `since` itself.
        let from_since = since.map(|s| (s, String::new()));
        let start = match (after, from_since.as_ref()) {
            (Some(after), Some(since)) if since > after => Bound::Included(since),
            (Some(after), _) => Bound::Excluded(after),
            (None, Some(since)) => Bound::Included(since),
            (None, None) => Bound::Unbounded,
        };
        let mut positions = self.order.range((start, Bound::Unbounded));
        let mut items = Vec::with_capacity(limit.min(self.order.len()));
        let mut last = None;
        for position in positions.by_ref().take(limit) {
            if let Some(record) = self.records.get(&position.1) {
                items.push(&record.body);
            }
            last = Some(position);
        }
        let next = match positions.next() {
            Some(_) => last.cloned(),
            None => None,
        };
        Page { items, next }
    }

    fn fresh_id(&mut self, collection: Collection) -> String {
        loop {
            self.next_seq += 1;
            let id = format!("{}_{:06}", collection.id_prefix(), self.next_seq);
            // A seeded record may already use the next id in sequence.
            if !self.records.contains_key(&id) {
                return id;
            }
        }
    }

    fn put(
        &mut self,
        id: String,
        id_value: Value,
        mut body: Map<String, Value>,
        at: DateTime<Utc>,
    ) -> &Map<String, Value> {
        body.insert("id".into(), id_value);
        body.insert("updated_at".into(), Value::String(format_timestamp(at)));
        let record = StoredRecord {
            body,
            updated_at: at,
            deleted: false,
        };
        match self.records.entry(id) {
            Entry::Occupied(mut slot) => {
                let previous = std::mem::replace(slot.get_mut(), record);
                // Remove the old position before adding the new one: both may be equal.
                self.order
                    .remove(&(previous.updated_at, slot.key().clone()));
                self.order.insert((at, slot.key().clone()));
                if previous.deleted {
                    self.live += 1;
                }
                &slot.into_mut().body
            }
            Entry::Vacant(slot) => {
                self.order.insert((at, slot.key().clone()));
                self.live += 1;
                &slot.insert(record).body
            }
        }
    }
}

/// Cursors are opaque to clients; inside they name the collection (a cursor from another
/// collection is refused, not silently misapplied) and the last position served.
pub(crate) fn encode_cursor(collection: Collection, position: &Position) -> String {
    let plain = format!(
        "{}\n{}\n{}",
        collection.name(),
        position.0.timestamp_micros(),
        position.1
    );
    plain.bytes().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn decode_cursor(collection: Collection, cursor: &str) -> Option<Position> {
    if !cursor.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..cursor.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(cursor.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    let plain = String::from_utf8(bytes).ok()?;
    let mut parts = plain.splitn(3, '\n');
    let (name, micros, id) = (parts.next()?, parts.next()?, parts.next()?);
    if name != collection.name() || id.is_empty() {
        return None;
    }
    let at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
    Some((at, id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn fields(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn cursors_round_trip_and_refuse_other_collections() {
        let position = (at(5), "ord_000007".to_owned());
        let cursor = encode_cursor(Collection::Orders, &position);
        assert_eq!(decode_cursor(Collection::Orders, &cursor), Some(position));
        assert_eq!(decode_cursor(Collection::Products, &cursor), None);
        assert_eq!(decode_cursor(Collection::Orders, "zz"), None);
        assert_eq!(decode_cursor(Collection::Orders, "abc"), None);
    }

    #[test]
    fn pages_follow_updated_at_then_id_with_ties() {
        let mut store = CollectionStore::default();
        for (id, secs) in [("b", 2), ("a", 2), ("c", 1), ("d", 3)] {
            store
                .upsert(Collection::Products, fields(json!({"id": id})), at(secs))
                .unwrap();
        }
        let ids = |page: &Page<'_>| -> Vec<String> {
            page.items
                .iter()
                .map(|r| r["id"].as_str().unwrap().to_owned())
                .collect()
        };
        let first = store.page(None, None, 2);
        assert_eq!(ids(&first), ["c", "a"]);
        let second = store.page(None, first.next.as_ref(), 2);
        assert_eq!(ids(&second), ["b", "d"]);
        assert!(second.next.is_none());
        assert_eq!(ids(&store.page(Some(at(2)), None, 10)), ["a", "b", "d"]);
    }

    #[test]
    fn fresh_ids_skip_seeded_ones() {
        let mut store = CollectionStore::default();
        store
            .upsert(
                Collection::Orders,
                fields(json!({"id": "ord_000001"})),
                at(0),
            )
            .unwrap();
        let created = store.create(Collection::Orders, Map::new(), at(1));
        assert_eq!(created["id"], "ord_000002");
        assert_eq!(store.live_count(), 2);
    }

    #[test]
    fn a_deleted_record_becomes_a_tombstone_and_cannot_be_replaced() {
        let mut store = CollectionStore::default();
        let id = store
            .upsert(
                Collection::Customers,
                fields(json!({"email": "a@b"})),
                at(0),
            )
            .unwrap();
        assert!(store.delete(&id, at(1)));
        assert!(!store.delete(&id, at(2)));
        assert!(store.get(&id).is_none());
        assert!(store.replace(&id, Map::new(), at(3)).is_none());
        let page = store.page(None, None, 10);
        assert_eq!(page.items.len(), 1);
        assert_eq!(page.items[0]["deleted"], true);
        assert_eq!(store.live_count(), 0);
    }

    #[test]
    fn duplicate_business_keys_are_reported() {
        let mut store = CollectionStore::default();
        for (sku, wh) in [("S1", "MAIN"), ("S1", "MAIN"), ("S1", "EAST")] {
            store.create(
                Collection::Inventory,
                fields(json!({"sku": sku, "warehouse_code": wh})),
                at(0),
            );
        }
        assert_eq!(
            store.duplicate_business_keys(Collection::Inventory),
            ["S1:MAIN"]
        );
    }
}
