//! Reads the custom API's incremental listings (`updated_since`, `cursor`) into platform
//! records and tombstones.

use super::CustomApiConnector;
use crate::{ConnectorError, ImportCursor, ImportPage};
use passerelle_core::Entity;
use passerelle_core::platform::{ImportedData, ImportedRecord, json_to_decimal};
use reqwest::Method;
use serde_json::Value;

/// An item's `id`: a non-empty string, or a number in its text form.
pub(super) fn item_id(item: &Value) -> Option<String> {
    match item.get("id") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

/// Reads one imported item into platform fields.
pub fn parse_item(entity: Entity, item: &Value) -> Result<ImportedRecord, String> {
    let external_id = item_id(item).ok_or("item without an `id`")?;
    let updated_at = item
        .get("updated_at")
        .and_then(|v| v.as_str())
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&chrono::Utc));
    let deleted = item
        .get("deleted")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    Ok(if deleted {
        ImportedRecord::tombstone(external_id, updated_at, item.clone())
    } else {
        let data = item_data(entity, item, &external_id)?;
        ImportedRecord::upsert(external_id, updated_at, data, item.clone())
    })
}

fn item_data(entity: Entity, item: &Value, external_id: &str) -> Result<ImportedData, String> {
    let text = |field: &str| item.get(field).and_then(|v| v.as_str()).map(str::to_owned);
    let required = |field: &str| {
        text(field)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("item {external_id} has no `{field}`"))
    };
    let decimal = |field: &str| {
        item.get(field)
            .and_then(json_to_decimal)
            .ok_or_else(|| format!("item {external_id}: `{field}` is not a number"))
    };
    Ok(match entity {
        Entity::Product => ImportedData::Product {
            sku: required("sku")?,
            name: required("name")?,
            description: text("description"),
            price: decimal("price")?,
            currency: text("currency"),
            active: item.get("active").and_then(|v| v.as_bool()).unwrap_or(true),
        },
        Entity::Customer => ImportedData::Customer {
            email: required("email")?,
            name: required("name")?,
            company_name: text("company_name"),
            phone: text("phone"),
            vat_number: text("vat_number"),
        },
        Entity::Inventory => ImportedData::Inventory {
            sku: required("sku")?,
            warehouse_code: required("warehouse_code")?,
            quantity: decimal("quantity")?,
        },
        other => return Err(format!("{other} import is not supported by custom_api")),
    })
}

impl CustomApiConnector {
    /// One page of the entity's listing since the cursor.
    pub(super) async fn read_page(
        &self,
        entity: Entity,
        cursor: &ImportCursor,
    ) -> Result<ImportPage, ConnectorError> {
        if !self.capabilities.import.contains(&entity) {
            return Err(ConnectorError::fatal(format!(
                "custom_api does not import {entity}"
            )));
        }
        let endpoint = self.settings.endpoint(entity);
        let mut url = self.settings.url(endpoint, None);
        {
            let mut query = url.query_pairs_mut();
            if let Some(since) = cursor.updated_since {
                query.append_pair(
                    "updated_since",
                    &since.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                );
            }
            if let Some(page) = &cursor.page {
                query.append_pair("cursor", page);
            }
            query.append_pair("limit", &self.settings.page_size.to_string());
        }
        let redactor = self.http.redactor();
        let reply = self
            .http
            .send(&self.call(Method::GET, url, None, None))
            .await
            .map_err(|e| redactor.error(e))?;
        let what = format!("GET {endpoint}");
        let body = reply.json(&what).map_err(|e| redactor.error(e))?;
        let items = body
            .get("items")
            .and_then(|v| v.as_array())
            .ok_or_else(|| {
                ConnectorError::transient(format!("{what}: the body has no `items` array"))
            })?;
        let next_page = match body.get("next_cursor") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                return Err(ConnectorError::transient(format!(
                    "{what}: `next_cursor` is {other}, expected a string or null"
                )));
            }
        };
        Ok(ImportPage::read(
            items,
            |item| parse_item(entity, item).map(|r| vec![r]),
            |item| {
                item.get("id")
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            },
            redactor,
            next_page,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;
    use serde_json::json;
    use std::str::FromStr;

    #[test]
    fn imported_items_and_tombstones_parse() {
        let r = parse_item(Entity::Inventory, &json!({"id": 9, "updated_at": "2026-11-02T10:00:00Z", "sku": "S", "warehouse_code": "MAIN", "quantity": 12.5})).unwrap();
        assert_eq!(r.external_id(), "9");
        assert_eq!(
            r.data().cloned(),
            Some(ImportedData::Inventory {
                sku: "S".into(),
                warehouse_code: "MAIN".into(),
                quantity: Decimal::from_str("12.5").unwrap()
            })
        );
        let t = parse_item(
            Entity::Product,
            &json!({"id": "p1", "updated_at": "2026-11-02T10:00:00Z", "deleted": true}),
        )
        .unwrap();
        assert!(t.is_tombstone());
        assert!(
            parse_item(
                Entity::Product,
                &json!({"id": "p1", "name": "x", "price": 1})
            )
            .unwrap_err()
            .contains("sku")
        );
    }
}
