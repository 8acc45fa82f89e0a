//! `GET /v3.1/{resource}`: paging (`items_per_page` 1..=200, default 20; `page` from 1),
//! `attributes` (`all`, or a comma-separated list; otherwise items carry `id`,
//! `displayed_as` and `$path` only), `updated_or_created_since` (inclusive), `deleted_since`
//! (exclusive; lists deletions instead), `search`, and the filters simulated
//! (`contact_type_id` on contacts, `active` on stock items, `contact_id` on documents,
//! `ledger_account_type_id` on ledger accounts).
//!
//! The envelope is `{"$total", "$page", "$next", "$back", "$items_per_page", "$items"}`, as
//! Sage's best-practices page shows it; `$next` and `$back` are paths relative to the API
//! base (`/contacts?page=2&items_per_page=20&…`, the other parameters kept) or `null`.
//! Unverified: the order (here `updated_at`, then `id`; deletions by `deleted_at`), the
//! shape of a deletion (`{"id", "displayed_as", "$path", "deleted_at"}`), and what Sage does
//! with parameters it does not know: here a parameter that would change the answer but is
//! not simulated (`sort`, `from_date`, `status_id`, …) is refused with `400 InvalidParams`,
//! and display-only ones (`nested_attributes`, `show_balance`, …) are ignored.

use super::errors::Failure;
use super::fields::text;
use super::model::iso;
use super::store::{BusinessData, Resource, Stored};
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Map, Value, json};

const DEFAULT_PER_PAGE: u64 = 20;
const MAX_PER_PAGE: u64 = 200;

/// Parameters that only change how items are displayed: accepted and ignored.
const DISPLAY_ONLY: [&str; 6] = [
    "nested_attributes",
    "show_balance",
    "show_payments_allocations",
    "show_unfinished_recurring_invoices_status",
    "context_date",
    "exclude_system",
];

#[derive(Debug, Default)]
pub(crate) struct ListQuery {
    page: u64,
    per_page: u64,
    /// `None`: minimal items; `Some(empty)`: all attributes.
    attributes: Option<Vec<String>>,
    since: Option<DateTime<Utc>>,
    deleted_since: Option<DateTime<Utc>>,
    search: Option<String>,
    /// A simulated filter: attribute name in the input, value.
    filter: Option<(&'static str, String)>,
    /// The parameters other than paging, for `$next` and `$back`.
    kept: Vec<(String, String)>,
}

fn filter_param(resource: Resource) -> Option<&'static str> {
    match resource {
        Resource::Contacts => Some("contact_type_id"),
        Resource::StockItems => Some("active"),
        Resource::SalesQuotes | Resource::SalesEstimates | Resource::SalesInvoices => {
            Some("contact_id")
        }
        Resource::LedgerAccounts => Some("ledger_account_type_id"),
        Resource::StockMovements => Some("stock_item_id"),
    }
}

fn positive(name: &str, value: &str) -> Result<u64, Failure> {
    match value.parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(Failure::bad_param(
            name,
            format!("{name} must be a positive integer"),
        )),
    }
}

/// An ISO 8601 date-time with an offset, or a date (midnight UTC).
fn instant(name: &str, value: &str) -> Result<DateTime<Utc>, Failure> {
    if let Ok(at) = DateTime::parse_from_rfc3339(value) {
        return Ok(at.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| {
            Failure::bad_param(
                name,
                format!("{name} must be an ISO 8601 date-time with an offset"),
            )
        })
}

pub(crate) fn parse(resource: Resource, raw: Option<&str>) -> Result<ListQuery, Failure> {
    let pairs: Vec<(String, String)> = raw
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let mut query = ListQuery {
        page: 1,
        per_page: DEFAULT_PER_PAGE,
        ..ListQuery::default()
    };
    let filter = filter_param(resource);
    for (name, value) in pairs {
        match name.as_str() {
            "page" => query.page = positive(&name, &value)?,
            "items_per_page" => {
                query.per_page = positive(&name, &value)?;
                if query.per_page > MAX_PER_PAGE {
                    return Err(Failure::bad_param(
                        name,
                        format!("items_per_page must not be more than {MAX_PER_PAGE}"),
                    ));
                }
            }
            _ => {
                read_param(resource, filter, &mut query, &name, &value)?;
                query.kept.push((name, value));
            }
        }
    }
    if query.since.is_some() && query.deleted_since.is_some() {
        return Err(Failure::bad_param(
            "deleted_since",
            "deleted_since cannot be combined with updated_or_created_since",
        ));
    }
    Ok(query)
}

fn read_param(
    resource: Resource,
    filter: Option<&'static str>,
    query: &mut ListQuery,
    name: &str,
    value: &str,
) -> Result<(), Failure> {
    match name {
        "attributes" if value == "all" => query.attributes = Some(Vec::new()),
        "attributes" => {
            query.attributes = Some(
                value
                    .split(',')
                    .map(|a| a.trim().to_owned())
                    .filter(|a| !a.is_empty())
                    .collect(),
            );
        }
        "updated_or_created_since" => query.since = Some(instant(name, value)?),
        "deleted_since" if resource.lists_deletions() => {
            query.deleted_since = Some(instant(name, value)?);
        }
        "search" => query.search = Some(value.to_lowercase()),
        _ if let Some(param) = filter.filter(|f| *f == name) => {
            let attribute = match param {
                "contact_type_id" => "contact_type_ids",
                "ledger_account_type_id" => "kind",
                other => other,
            };
            query.filter = Some((attribute, value.to_owned()));
        }
        _ if DISPLAY_ONLY.contains(&name) => {}
        _ => {
            return Err(Failure::bad_param(
                name,
                format!(
                    "{name} is not a parameter of GET /{} in this sandbox",
                    resource.name()
                ),
            ));
        }
    }
    Ok(())
}

fn search_fields(resource: Resource) -> &'static [&'static str] {
    match resource {
        Resource::Contacts => &["name", "reference"],
        Resource::StockItems => &["item_code", "description"],
        Resource::StockMovements => &["details"],
        Resource::LedgerAccounts => &["name"],
        _ => &["reference", "contact_name"],
    }
}

fn matches(resource: Resource, query: &ListQuery, stored: &Stored) -> bool {
    if query.since.is_some_and(|since| stored.updated < since) {
        return false;
    }
    if let Some(search) = &query.search {
        let found = search_fields(resource).iter().any(|f| {
            let value = text(&stored.input, f).or_else(|| text(&stored.body, f));
            value.is_some_and(|v| v.to_lowercase().contains(search))
        });
        if !found {
            return false;
        }
    }
    match &query.filter {
        None => true,
        Some((attribute, wanted)) => match stored.input.get(*attribute) {
            Some(Value::String(s)) => s == wanted,
            Some(Value::Array(items)) => items.iter().any(|i| i.as_str() == Some(wanted)),
            // `active` defaults to true.
            Some(Value::Bool(b)) => b.to_string() == *wanted,
            None => *attribute == "active" && wanted == "true",
            _ => false,
        },
    }
}

fn item(body: &Map<String, Value>, attributes: Option<&Vec<String>>) -> Value {
    match attributes {
        Some(all) if all.is_empty() => Value::Object(body.clone()),
        chosen => {
            let mut item = Map::new();
            for key in ["id", "displayed_as", "$path"] {
                item.insert(key.into(), body.get(key).cloned().unwrap_or(Value::Null));
            }
            for key in chosen.into_iter().flatten() {
                if let Some(value) = body.get(key) {
                    item.insert(key.clone(), value.clone());
                }
            }
            Value::Object(item)
        }
    }
}

/// The envelope of one page.
pub(crate) fn list(data: &BusinessData, resource: Resource, query: &ListQuery) -> Value {
    let all: Vec<Value> = match query.deleted_since {
        Some(since) => {
            let mut gone: Vec<_> = data
                .deletions(resource)
                .iter()
                .filter(|d| d.at > since)
                .collect();
            gone.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
            gone.into_iter()
                .map(|d| {
                    json!({"id": d.id, "displayed_as": d.displayed_as,
                           "$path": format!("/{}/{}", resource.name(), d.id),
                           "deleted_at": iso(d.at)})
                })
                .collect()
        }
        None => data
            .ordered(resource)
            .into_iter()
            .filter(|(_, stored)| matches(resource, query, stored))
            .map(|(_, stored)| item(&stored.body, query.attributes.as_ref()))
            .collect(),
    };
    let total = all.len() as u64;
    let skip =
        usize::try_from((query.page - 1).saturating_mul(query.per_page)).unwrap_or(usize::MAX);
    let take = usize::try_from(query.per_page).unwrap_or(usize::MAX);
    let items: Vec<Value> = all.into_iter().skip(skip).take(take).collect();
    let link = |page: u64| {
        let mut path = format!(
            "/{}?page={page}&items_per_page={}",
            resource.name(),
            query.per_page
        );
        for (k, v) in &query.kept {
            let pair: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair(k, v)
                .finish();
            path.push('&');
            path.push_str(&pair);
        }
        Value::String(path)
    };
    let next = if query.page.saturating_mul(query.per_page) < total {
        link(query.page + 1)
    } else {
        Value::Null
    };
    let back = if query.page > 1 {
        link(query.page - 1)
    } else {
        Value::Null
    };
    json!({
        "$total": total,
        "$page": query.page,
        "$next": next,
        "$back": back,
        "$items_per_page": query.per_page,
        "$items": items,
    })
}
