//! One business's records: per resource, the fields last written (the input, kept so a
//! `PUT` can be validated as the whole record it makes) and the object the API renders,
//! with the deletions `deleted_since` lists, and the counters behind [`super::SageStats`].

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The resources simulated, by their path name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Resource {
    Contacts,
    StockItems,
    StockMovements,
    SalesQuotes,
    SalesEstimates,
    SalesInvoices,
    LedgerAccounts,
}

pub(crate) const RESOURCE_COUNT: usize = 7;

impl Resource {
    pub(crate) const ALL: [Resource; RESOURCE_COUNT] = [
        Resource::Contacts,
        Resource::StockItems,
        Resource::StockMovements,
        Resource::SalesQuotes,
        Resource::SalesEstimates,
        Resource::SalesInvoices,
        Resource::LedgerAccounts,
    ];

    /// What the API creates (ledger accounts are seeded from the app's config).
    pub(crate) const CREATABLE: [Resource; 6] = [
        Resource::Contacts,
        Resource::StockItems,
        Resource::StockMovements,
        Resource::SalesQuotes,
        Resource::SalesEstimates,
        Resource::SalesInvoices,
    ];

    pub(crate) fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Contacts => "contacts",
            Self::StockItems => "stock_items",
            Self::StockMovements => "stock_movements",
            Self::SalesQuotes => "sales_quotes",
            Self::SalesEstimates => "sales_estimates",
            Self::SalesInvoices => "sales_invoices",
            Self::LedgerAccounts => "ledger_accounts",
        }
    }

    /// The body's namespace: `{"contact": {...}}`.
    pub(crate) fn singular(self) -> &'static str {
        match self {
            Self::Contacts => "contact",
            Self::StockItems => "stock_item",
            Self::StockMovements => "stock_movement",
            Self::SalesQuotes => "sales_quote",
            Self::SalesEstimates => "sales_estimate",
            Self::SalesInvoices => "sales_invoice",
            Self::LedgerAccounts => "ledger_account",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    pub(crate) fn creatable(self) -> bool {
        self != Self::LedgerAccounts
    }

    /// `PUT /{resource}/{id}` (stock movements are not updated here).
    pub(crate) fn updatable(self) -> bool {
        !matches!(self, Self::LedgerAccounts | Self::StockMovements)
    }

    /// `DELETE /{resource}/{id}` answering 204. A sales invoice's `DELETE` voids it in Sage;
    /// that is not simulated.
    pub(crate) fn deletable(self) -> bool {
        matches!(
            self,
            Self::Contacts | Self::StockItems | Self::SalesQuotes | Self::SalesEstimates
        )
    }

    /// Whether the list takes `deleted_since` (the swagger: not on quotes and estimates).
    pub(crate) fn lists_deletions(self) -> bool {
        matches!(
            self,
            Self::Contacts | Self::StockItems | Self::SalesInvoices
        )
    }

    /// The field naming a record for people, counted in `creates_by_reference` and checked
    /// by `duplicate_references`.
    pub(crate) fn reference_field(self) -> Option<&'static str> {
        match self {
            Self::StockItems => Some("item_code"),
            Self::Contacts | Self::SalesQuotes | Self::SalesEstimates | Self::SalesInvoices => {
                Some("reference")
            }
            Self::StockMovements | Self::LedgerAccounts => None,
        }
    }

    /// Sage refuses a second record with the same reference (contacts) or item code.
    pub(crate) fn unique_reference(self) -> bool {
        matches!(self, Self::Contacts | Self::StockItems)
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Stored {
    /// The fields as written (namespace content, `idempotency_id` removed).
    pub input: Map<String, Value>,
    /// The full object the API answers.
    pub body: Map<String, Value>,
    pub updated: DateTime<Utc>,
}

#[derive(Clone, Debug)]
pub(crate) struct Deleted {
    pub id: String,
    pub displayed_as: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Default)]
pub(crate) struct BusinessData {
    records: [BTreeMap<String, Stored>; RESOURCE_COUNT],
    deleted: [Vec<Deleted>; RESOURCE_COUNT],
    pub creates: [u64; RESOURCE_COUNT],
    pub updates: [u64; RESOURCE_COUNT],
    /// `resource:reference` → records created through the API with it.
    pub creates_by_reference: BTreeMap<String, u64>,
    /// Document numbers handed out (`SI-1`, `SQ-1`, `SE-1`, `SM-1`).
    numbers: [u64; RESOURCE_COUNT],
    last_stamp: Option<DateTime<Utc>>,
}

impl BusinessData {
    /// The time of a write: whole seconds, as Sage renders them, never before the last one.
    pub(crate) fn stamp(&mut self, now: DateTime<Utc>) -> DateTime<Utc> {
        let secs = DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now);
        let at = self.last_stamp.map_or(secs, |last| last.max(secs));
        self.last_stamp = Some(at);
        at
    }

    pub(crate) fn next_number(&mut self, resource: Resource) -> u64 {
        let n = &mut self.numbers[resource.index()];
        *n += 1;
        *n
    }

    pub(crate) fn get(&self, resource: Resource, id: &str) -> Option<&Stored> {
        self.records[resource.index()].get(id)
    }

    pub(crate) fn get_mut(&mut self, resource: Resource, id: &str) -> Option<&mut Stored> {
        self.records[resource.index()].get_mut(id)
    }

    pub(crate) fn put(&mut self, resource: Resource, id: &str, stored: Stored) {
        self.records[resource.index()].insert(id.to_owned(), stored);
    }

    /// Removes a record and remembers when, for `deleted_since`.
    pub(crate) fn delete(&mut self, resource: Resource, id: &str, at: DateTime<Utc>) -> bool {
        let Some(gone) = self.records[resource.index()].remove(id) else {
            return false;
        };
        let displayed_as = gone
            .body
            .get("displayed_as")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        self.deleted[resource.index()].push(Deleted {
            id: id.to_owned(),
            displayed_as,
            at,
        });
        true
    }

    /// Live records in `(updated_at, id)` order.
    pub(crate) fn ordered(&self, resource: Resource) -> Vec<(&String, &Stored)> {
        let mut all: Vec<(&String, &Stored)> = self.records[resource.index()].iter().collect();
        all.sort_by(|a, b| (a.1.updated, a.0).cmp(&(b.1.updated, b.0)));
        all
    }

    pub(crate) fn deletions(&self, resource: Resource) -> &[Deleted] {
        &self.deleted[resource.index()]
    }

    pub(crate) fn count(&self, resource: Resource) -> u64 {
        self.records[resource.index()].len() as u64
    }

    /// The live record of `resource` whose reference field is `value` (case-insensitive),
    /// other than `except`.
    pub(crate) fn find_reference(
        &self,
        resource: Resource,
        value: &str,
        except: Option<&str>,
    ) -> Option<&str> {
        let field = resource.reference_field()?;
        self.records[resource.index()]
            .iter()
            .find(|(id, r)| {
                Some(id.as_str()) != except
                    && r.input
                        .get(field)
                        .and_then(Value::as_str)
                        .is_some_and(|v| v.eq_ignore_ascii_case(value))
            })
            .map(|(id, _)| id.as_str())
    }

    /// References held by more than one live record.
    pub(crate) fn duplicate_references(&self, resource: Resource) -> Vec<String> {
        let Some(field) = resource.reference_field() else {
            return Vec::new();
        };
        let mut seen: BTreeMap<String, u32> = BTreeMap::new();
        for stored in self.records[resource.index()].values() {
            if let Some(value) = stored.input.get(field).and_then(Value::as_str)
                && !value.is_empty()
            {
                *seen.entry(value.to_ascii_lowercase()).or_default() += 1;
            }
        }
        seen.into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(v, _)| v)
            .collect()
    }
}
