//! Reads stock items (products, and their stock), and customer contacts, changed since the
//! cursor (`updated_or_created_since`, inclusive), page by page; then what was deleted since
//! (`deleted_since`), as tombstones.

use super::SageConnector;
use crate::{ConnectorError, ImportCursor, ImportPage};
use chrono::{DateTime, Utc};
use passerelle_core::Entity;
use passerelle_core::platform::{ImportedData, ImportedRecord, json_to_decimal};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where a pass stands: which listing and page, from which instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageToken {
    deleted: bool,
    page: u32,
    since: Option<String>,
}

/// Sage's date-time form: `YYYY-MM-DDThh:mm:ss+00:00`.
fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
}

fn text(row: &Value, pointer: &str) -> Option<String> {
    row.pointer(pointer)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn updated_at(row: &Value) -> Option<DateTime<Utc>> {
    text(row, "/updated_at")
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// A stock item or contact as a platform record (stock: one record for the item's level).
pub fn parse(entity: Entity, row: &Value, warehouse: &str) -> Result<ImportedRecord, String> {
    let id = text(row, "/id").ok_or("a record without its id")?;
    let data = match entity {
        Entity::Product => ImportedData::Product {
            sku: text(row, "/item_code")
                .ok_or_else(|| format!("stock item {id} has no item_code"))?,
            name: text(row, "/description")
                .ok_or_else(|| format!("stock item {id} has no description"))?,
            description: text(row, "/notes"),
            price: row
                .pointer("/sales_prices")
                .and_then(Value::as_array)
                .and_then(|prices| prices.first())
                .and_then(|p| p.get("price"))
                .and_then(json_to_decimal)
                .ok_or_else(|| format!("stock item {id} has no sales price"))?,
            currency: None,
            active: row.get("active").and_then(Value::as_bool).unwrap_or(true),
        },
        Entity::Inventory => ImportedData::Inventory {
            sku: text(row, "/item_code")
                .ok_or_else(|| format!("stock item {id} has no item_code"))?,
            warehouse_code: warehouse.to_owned(),
            quantity: row
                .get("quantity_in_stock")
                .and_then(json_to_decimal)
                .ok_or_else(|| format!("stock item {id} has no quantity_in_stock"))?,
        },
        _ => ImportedData::Customer {
            email: text(row, "/main_contact_person/email")
                .or_else(|| text(row, "/email"))
                .ok_or_else(|| {
                    format!("contact {id} has no email address; the platform needs one")
                })?,
            name: text(row, "/main_contact_person/name")
                .or_else(|| text(row, "/name"))
                .ok_or_else(|| format!("contact {id} has no name"))?,
            company_name: text(row, "/name"),
            phone: text(row, "/main_contact_person/telephone"),
            vat_number: text(row, "/tax_number"),
        },
    };
    Ok(ImportedRecord::upsert(
        id,
        updated_at(row),
        data,
        row.clone(),
    ))
}

impl SageConnector {
    pub(super) async fn read_page(
        &self,
        entity: Entity,
        cursor: &ImportCursor,
    ) -> Result<ImportPage, ConnectorError> {
        let resource = match entity {
            Entity::Product | Entity::Inventory => "stock_items",
            Entity::Customer => "contacts",
            other => {
                return Err(ConnectorError::fatal(format!(
                    "the Sage connector does not import {other}"
                )));
            }
        };
        let token = match &cursor.page {
            Some(raw) => serde_json::from_str::<PageToken>(raw).map_err(|e| {
                ConnectorError::fatal(format!("unreadable Sage page token {raw:?}: {e}"))
            })?,
            None => PageToken {
                deleted: false,
                page: 1,
                since: cursor.updated_since.map(stamp),
            },
        };
        let url = self.page_url(resource, entity, &token);
        let what = format!("GET {resource}");
        let body = self.call(Method::GET, url, None).await?.json(&what)?;
        let items = body
            .get("$items")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                ConnectorError::transient(format!("{what}: the answer has no $items"))
            })?;
        let more = body.get("$next").is_some_and(|n| !n.is_null());
        // After the last page of changes, a pass from a cursor reads what was deleted since.
        let next = if more {
            Some(PageToken {
                page: token.page + 1,
                ..token.clone()
            })
        } else if !token.deleted && token.since.is_some() {
            Some(PageToken {
                deleted: true,
                page: 1,
                since: token.since.clone(),
            })
        } else {
            None
        };
        let next_page = next
            .map(|t| serde_json::to_string(&t))
            .transpose()
            .map_err(|e| ConnectorError::fatal(format!("cannot write a page token: {e}")))?;
        let warehouse = self.settings.warehouse_code.clone();
        Ok(ImportPage::read(
            items,
            |row| {
                if token.deleted {
                    let id = text(row, "/id").ok_or("a deleted record without its id")?;
                    Ok(vec![ImportedRecord::tombstone(id, None, row.clone())])
                } else {
                    parse(entity, row, &warehouse).map(|r| vec![r])
                }
            },
            |row| text(row, "/id"),
            self.http.redactor(),
            next_page,
        ))
    }

    /// The URL of one page: the changes since the pass's start, or what was deleted since.
    fn page_url(&self, resource: &str, entity: Entity, token: &PageToken) -> url::Url {
        let mut url = self.settings.resource(resource, None);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("items_per_page", &super::IMPORT_PAGE_SIZE.to_string())
                .append_pair("page", &token.page.to_string());
            if entity == Entity::Customer {
                q.append_pair("contact_type_id", "CUSTOMER");
            }
            match (&token.since, token.deleted) {
                (Some(since), true) => {
                    q.append_pair("deleted_since", since);
                }
                (since, false) => {
                    q.append_pair("attributes", "all");
                    if let Some(since) = since {
                        q.append_pair("updated_or_created_since", since);
                    }
                }
                (None, true) => {}
            }
        }
        url
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stock_items_and_contacts_parse_and_say_what_is_missing() {
        let item = json!({"id": "a1", "item_code": "X-1", "description": "Widget", "active": true,
            "sales_prices": [{"price_name": "Selling Price", "price": "9.5"}], "quantity_in_stock": "7.0",
            "updated_at": "2026-11-24T10:30:15+00:00"});
        let product = parse(Entity::Product, &item, "SAGE").unwrap();
        assert_eq!(product.external_id(), "a1");
        assert!(product.updated_at().is_some());
        let stock = parse(Entity::Inventory, &item, "SAGE").unwrap();
        assert!(
            matches!(stock.data(), Some(ImportedData::Inventory { warehouse_code, .. }) if warehouse_code == "SAGE")
        );
        let contact = json!({"id": "c1", "name": "Acme Ltd", "main_contact_person": {"name": "Ann", "email": "ann@acme.example"}});
        let customer = parse(Entity::Customer, &contact, "SAGE").unwrap();
        assert!(
            matches!(customer.data(), Some(ImportedData::Customer { email, .. }) if email == "ann@acme.example")
        );
        assert!(
            parse(
                Entity::Customer,
                &json!({"id": "c2", "name": "No mail"}),
                "SAGE"
            )
            .unwrap_err()
            .contains("email")
        );
    }
}
