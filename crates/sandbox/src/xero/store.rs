//! One tenant's records: four collections kept as the JSON Xero returns, each indexed by id,
//! by `(UpdatedDateUTC, id)` for imports, and by business keys (contact name, item code,
//! invoice and quote numbers) for Xero's uniqueness rules and for duplicate reports.
//!
//! Writes go through a [`Batch`], which can be rolled back whole: Xero's default
//! (`summarizeErrors=true`) writes nothing when one element of a batch is invalid.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The collections the simulator serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Kind {
    Contacts,
    Items,
    Invoices,
    Quotes,
}

impl Kind {
    pub(crate) const ALL: [Kind; 4] = [Kind::Contacts, Kind::Items, Kind::Invoices, Kind::Quotes];

    /// Paths and names are case-insensitive, as Xero's are.
    pub(crate) fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(name))
    }

    /// The collection's name: its path segment and its key in request and response bodies.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Contacts => "Contacts",
            Kind::Items => "Items",
            Kind::Invoices => "Invoices",
            Kind::Quotes => "Quotes",
        }
    }

    pub(crate) fn id_field(self) -> &'static str {
        match self {
            Kind::Contacts => "ContactID",
            Kind::Items => "ItemID",
            Kind::Invoices => "InvoiceID",
            Kind::Quotes => "QuoteID",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// Whether `UpdatedDateUTC` carries `+0000`, following the spec's examples.
    pub(crate) fn offset_dates(self) -> bool {
        matches!(self, Kind::Contacts | Kind::Invoices)
    }

    /// Whether `page` applies (Items are never paged).
    pub(crate) fn paged(self) -> bool {
        !matches!(self, Kind::Items)
    }

    /// Live records are the ones a business still uses: not archived, deleted or voided.
    pub(crate) fn is_live(self, record: &Map<String, Value>) -> bool {
        let text = |field: &str| record.get(field).and_then(Value::as_str).unwrap_or("");
        match self {
            Kind::Contacts => text("ContactStatus") != "ARCHIVED",
            Kind::Items => true,
            Kind::Invoices => !matches!(text("Status"), "DELETED" | "VOIDED"),
            Kind::Quotes => text("Status") != "DELETED",
        }
    }

    /// Business keys of a live record, `Field:value`. Contact names and item codes are
    /// unique regardless of case, sales invoice numbers exactly; references are indexed
    /// only to report duplicates.
    pub(crate) fn business_keys(self, record: &Map<String, Value>) -> Vec<String> {
        let text = |field: &str| {
            record
                .get(field)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
        };
        let mut keys = Vec::new();
        match self {
            Kind::Contacts => {
                if let Some(name) = text("Name") {
                    keys.push(name_key(name));
                }
                if let Some(number) = text("ContactNumber") {
                    keys.push(format!("ContactNumber:{number}"));
                }
            }
            Kind::Items => {
                if let Some(code) = text("Code") {
                    keys.push(code_key(code));
                }
            }
            Kind::Invoices => {
                // Bills' numbers are the supplier's and need not be unique.
                if text("Type") == Some("ACCREC") {
                    if let Some(number) = text("InvoiceNumber") {
                        keys.push(invoice_number_key(number));
                    }
                    if let Some(reference) = text("Reference") {
                        keys.push(format!("Reference:{reference}"));
                    }
                }
            }
            Kind::Quotes => {
                if let Some(number) = text("QuoteNumber") {
                    keys.push(quote_number_key(number));
                }
                if let Some(reference) = text("Reference") {
                    keys.push(format!("Reference:{reference}"));
                }
            }
        }
        keys
    }
}

pub(crate) fn name_key(name: &str) -> String {
    format!("Name:{}", name.trim().to_lowercase())
}

pub(crate) fn code_key(code: &str) -> String {
    format!("Code:{}", code.trim().to_lowercase())
}

pub(crate) fn invoice_number_key(number: &str) -> String {
    format!("InvoiceNumber:{}", number.trim())
}

pub(crate) fn quote_number_key(number: &str) -> String {
    format!("QuoteNumber:{}", number.trim())
}

/// A record as stored: the JSON Xero returns, and its `UpdatedDateUTC` as a time.
#[derive(Clone, Debug)]
pub(crate) struct Stored {
    pub body: Map<String, Value>,
    pub updated: DateTime<Utc>,
}

/// One collection of one tenant.
#[derive(Debug, Default)]
pub(crate) struct Records {
    /// By lower-case id (Xero's ids are GUIDs, compared without regard to case).
    by_id: HashMap<String, Stored>,
    order: BTreeSet<(DateTime<Utc>, String)>,
    /// Business key → ids of the live records holding it.
    keys: HashMap<String, BTreeSet<String>>,
    live: u64,
}

impl Records {
    pub(crate) fn get(&self, id: &str) -> Option<&Stored> {
        self.by_id.get(&id.to_ascii_lowercase())
    }

    /// The live record holding a business key (the first by id if a seed made several).
    pub(crate) fn find(&self, key: &str) -> Option<&Stored> {
        let id = self.keys.get(key)?.iter().next()?;
        self.by_id.get(id)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Every record, live or not, in `(UpdatedDateUTC, id)` order.
    pub(crate) fn ordered(&self) -> impl Iterator<Item = &Stored> {
        self.order.iter().filter_map(|(_, id)| self.by_id.get(id))
    }

    pub(crate) fn live_count(&self) -> u64 {
        self.live
    }

    pub(crate) fn duplicate_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .keys
            .iter()
            .filter(|(_, ids)| ids.len() > 1)
            .map(|(key, _)| key.clone())
            .collect();
        keys.sort();
        keys
    }

    /// Stores `stored` under `id`, replacing and returning what was there.
    fn put(&mut self, kind: Kind, id: &str, stored: Option<Stored>) -> Option<Stored> {
        let id = id.to_ascii_lowercase();
        let previous = self.by_id.remove(&id);
        if let Some(previous) = &previous {
            self.order.remove(&(previous.updated, id.clone()));
            if kind.is_live(&previous.body) {
                self.live -= 1;
                for key in kind.business_keys(&previous.body) {
                    if let Some(ids) = self.keys.get_mut(&key) {
                        ids.remove(&id);
                        if ids.is_empty() {
                            self.keys.remove(&key);
                        }
                    }
                }
            }
        }
        if let Some(stored) = stored {
            self.order.insert((stored.updated, id.clone()));
            if kind.is_live(&stored.body) {
                self.live += 1;
                for key in kind.business_keys(&stored.body) {
                    self.keys.entry(key).or_default().insert(id.clone());
                }
            }
            self.by_id.insert(id, stored);
        }
        previous
    }
}

/// Everything one tenant holds.
#[derive(Debug, Default)]
pub(crate) struct TenantData {
    records: [Records; 4],
    pub(crate) creates: [u64; 4],
    pub(crate) updates: [u64; 4],
    /// The numbers Xero assigns when a client sends none (`INV-0001`, `QU-0001`).
    pub(crate) next_invoice_number: u64,
    pub(crate) next_quote_number: u64,
    /// Last `UpdatedDateUTC` handed out: the tenant's clock never goes back, so an import by
    /// `If-Modified-Since` cannot miss a change.
    last_stamp: Option<DateTime<Utc>>,
}

impl TenantData {
    pub(crate) fn records(&self, kind: Kind) -> &Records {
        &self.records[kind.index()]
    }

    /// The `UpdatedDateUTC` for a write happening now, at Xero's millisecond precision.
    pub(crate) fn stamp(&mut self, now: DateTime<Utc>) -> DateTime<Utc> {
        let ms = DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
        let at = self.last_stamp.map_or(ms, |last| last.max(ms));
        self.last_stamp = Some(at);
        at
    }

    /// Seeds or removes a record outside any request (admin, tests): not counted.
    pub(crate) fn put_uncounted(&mut self, kind: Kind, id: &str, stored: Option<Stored>) {
        self.records[kind.index()].put(kind, id, stored);
    }

    pub(crate) fn begin(&mut self) -> Batch<'_> {
        let numbers = (self.next_invoice_number, self.next_quote_number);
        Batch {
            data: self,
            undo: Vec::new(),
            numbers,
            created: [0; 4],
            updated: [0; 4],
        }
    }

    pub(crate) fn live_counts(&self) -> BTreeMap<String, u64> {
        Kind::ALL
            .iter()
            .map(|k| (k.name().to_owned(), self.records(*k).live_count()))
            .collect()
    }
}

/// Writes that count (creates and updates) and can all be undone until committed.
pub(crate) struct Batch<'a> {
    data: &'a mut TenantData,
    undo: Vec<(Kind, String, Option<Stored>)>,
    numbers: (u64, u64),
    created: [u64; 4],
    updated: [u64; 4],
}

/// Whether a write made a record or changed one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Write {
    Created,
    Updated,
}

impl Batch<'_> {
    pub(crate) fn data(&self) -> &TenantData {
        self.data
    }

    pub(crate) fn data_mut(&mut self) -> &mut TenantData {
        self.data
    }

    /// Writes a record; `write` says whether it counts as a create or an update. Secondary
    /// effects (stock levels, a contact becoming a customer) use [`Self::touch`].
    pub(crate) fn put(&mut self, kind: Kind, id: &str, stored: Stored, write: Write) {
        let previous = self.data.records[kind.index()].put(kind, id, Some(stored));
        self.undo.push((kind, id.to_owned(), previous));
        match write {
            Write::Created => self.created[kind.index()] += 1,
            Write::Updated => self.updated[kind.index()] += 1,
        }
    }

    /// Changes a record as a side effect of another write: undone with the batch, not
    /// counted as an update.
    pub(crate) fn touch(&mut self, kind: Kind, id: &str, stored: Stored) {
        let previous = self.data.records[kind.index()].put(kind, id, Some(stored));
        self.undo.push((kind, id.to_owned(), previous));
    }

    /// Removes a record (an item deleted through the API).
    pub(crate) fn remove(&mut self, kind: Kind, id: &str) -> Option<Stored> {
        let previous = self.data.records[kind.index()].put(kind, id, None);
        self.undo.push((kind, id.to_owned(), previous.clone()));
        previous
    }

    pub(crate) fn commit(self) {
        for kind in Kind::ALL {
            self.data.creates[kind.index()] += self.created[kind.index()];
            self.data.updates[kind.index()] += self.updated[kind.index()];
        }
    }

    pub(crate) fn rollback(self) {
        for (kind, id, previous) in self.undo.into_iter().rev() {
            self.data.records[kind.index()].put(kind, &id, previous);
        }
        (self.data.next_invoice_number, self.data.next_quote_number) = self.numbers;
    }

    /// Records created in this batch so far, per collection.
    pub(crate) fn created_total(&self) -> u64 {
        self.created.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stored(value: Value, secs: i64) -> Stored {
        let Value::Object(body) = value else {
            panic!("not an object")
        };
        Stored {
            body,
            updated: DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap(),
        }
    }

    #[test]
    fn keys_follow_live_records_and_rollback_restores_everything() {
        let mut data = TenantData::default();
        data.put_uncounted(
            Kind::Contacts,
            "A",
            Some(stored(
                json!({"Name": "Acme", "ContactStatus": "ACTIVE"}),
                0,
            )),
        );
        assert!(data.records(Kind::Contacts).find("Name:acme").is_some());

        let mut batch = data.begin();
        batch.put(
            Kind::Contacts,
            "a",
            stored(json!({"Name": "Acme", "ContactStatus": "ARCHIVED"}), 1),
            Write::Updated,
        );
        batch.put(
            Kind::Contacts,
            "b",
            stored(json!({"Name": "ACME "}), 2),
            Write::Created,
        );
        assert_eq!(batch.created_total(), 1);
        batch.data_mut().next_invoice_number = 9;
        batch.rollback();

        let contacts = data.records(Kind::Contacts);
        assert_eq!(contacts.len(), 1);
        assert_eq!(contacts.live_count(), 1);
        assert_eq!(contacts.get("a").unwrap().body["ContactStatus"], "ACTIVE");
        assert_eq!(data.next_invoice_number, 0);
        assert_eq!(data.creates, [0; 4]);
    }

    #[test]
    fn duplicates_are_reported_per_key() {
        let mut data = TenantData::default();
        for (id, code) in [("1", "SKU-1"), ("2", "sku-1"), ("3", "SKU-2")] {
            data.put_uncounted(Kind::Items, id, Some(stored(json!({"Code": code}), 0)));
        }
        assert_eq!(data.records(Kind::Items).duplicate_keys(), ["Code:sku-1"]);
        let mut batch = data.begin();
        batch.remove(Kind::Items, "2");
        batch.commit();
        assert!(data.records(Kind::Items).duplicate_keys().is_empty());
    }

    #[test]
    fn the_tenant_clock_never_goes_back() {
        let mut data = TenantData::default();
        let later = DateTime::from_timestamp(1_800_000_010, 0).unwrap();
        let earlier = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        assert_eq!(data.stamp(later), later);
        assert_eq!(data.stamp(earlier), later);
    }
}
