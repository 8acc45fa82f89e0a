//! Reads QuickBooks' Items and Customers into platform records: a full query on the first
//! pass, then `cdc` from the cursor (it reaches back 30 days only); stock (`QtyOnHand` of
//! inventory items) is read in full every pass.

use super::QuickBooksConnector;
use super::client::QUERY_PAGE;
use crate::{ConnectorError, ImportCursor, ImportPage};
use chrono::{DateTime, Utc};
use passerelle_core::Entity;
use passerelle_core::platform::{ImportedData, ImportedRecord, json_to_decimal};
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::Value;

/// `cdc` reaches back 30 days; past this, a full query runs instead.
const CDC_REACH_DAYS: i64 = 29;

/// Reads QuickBooks' `MetaData` times (`2015-07-24T10:33:39-07:00`).
pub fn parse_qb_time(raw: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(raw.trim())
        .map(|t| t.with_timezone(&Utc))
        .ok()
}

/// A text field of `element` that is not blank.
fn text(element: &Value, field: &str) -> Option<String> {
    element
        .get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .map(str::to_owned)
}

/// Reads a QuickBooks Item or Customer into platform fields.
pub fn parse_entity(entity: Entity, element: &Value) -> Result<ImportedRecord, String> {
    let id = element
        .get("Id")
        .and_then(Value::as_str)
        .ok_or("entity without Id")?
        .to_owned();
    let updated_at = element
        .pointer("/MetaData/LastUpdatedTime")
        .and_then(Value::as_str)
        .and_then(parse_qb_time);
    let text = |field: &str| text(element, field);
    let deleted = element.get("status").and_then(Value::as_str) == Some("Deleted")
        || element.get("Active").and_then(Value::as_bool) == Some(false);
    let record = |external_id: String, data: ImportedData| {
        ImportedRecord::upsert(external_id, updated_at, data, element.clone())
    };
    if deleted {
        let external_id = if entity == Entity::Inventory {
            format!("{id}:stock")
        } else {
            id
        };
        return Ok(ImportedRecord::tombstone(
            external_id,
            updated_at,
            element.clone(),
        ));
    }
    // Items without a Sku are known by their (unique) Name.
    let missing_sku = format!("item {id} has neither Sku nor Name");
    let sku = || {
        text("Sku")
            .or_else(|| text("Name"))
            .ok_or(missing_sku.clone())
    };
    Ok(match entity {
        Entity::Product => record(
            id,
            ImportedData::Product {
                sku: sku()?,
                name: text("Name").unwrap_or_default(),
                description: text("Description"),
                price: element
                    .get("UnitPrice")
                    .and_then(json_to_decimal)
                    .unwrap_or_default(),
                currency: None,
                active: true,
            },
        ),
        Entity::Inventory => record(
            format!("{id}:stock"),
            ImportedData::Inventory {
                sku: sku()?,
                // One stock figure per item: QuickBooks Online has no warehouses.
                warehouse_code: "QBO".into(),
                quantity: element
                    .get("QtyOnHand")
                    .and_then(json_to_decimal)
                    .unwrap_or(Decimal::ZERO),
            },
        ),
        _ => record(id.clone(), customer_data(element, &id)?),
    })
}

/// A customer's fields: the platform needs its e-mail address.
fn customer_data(element: &Value, id: &str) -> Result<ImportedData, String> {
    let text = |field: &str| text(element, field);
    let email = element
        .pointer("/PrimaryEmailAddr/Address")
        .and_then(Value::as_str)
        .filter(|e| !e.is_empty())
        .ok_or_else(|| format!("customer {id} has no e-mail address; the platform needs one"))?;
    let name = [text("GivenName"), text("FamilyName")]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    Ok(ImportedData::Customer {
        email: email.to_owned(),
        name: if name.is_empty() {
            text("DisplayName").unwrap_or_default()
        } else {
            name
        },
        company_name: text("CompanyName").or_else(|| text("DisplayName")),
        phone: element
            .pointer("/PrimaryPhone/FreeFormNumber")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
            .map(str::to_owned),
        vat_number: None,
    })
}

impl QuickBooksConnector {
    /// One page of the entity: changes since the cursor through `cdc`, or a full query.
    pub(super) async fn read_page(
        &self,
        entity: Entity,
        cursor: &ImportCursor,
    ) -> Result<ImportPage, ConnectorError> {
        let name = match entity {
            Entity::Customer => "Customer",
            Entity::Product | Entity::Inventory => "Item",
            other => {
                return Err(ConnectorError::fatal(format!(
                    "the QuickBooks connector does not import {other}"
                )));
            }
        };
        let cdc_reach = Utc::now() - chrono::Duration::days(CDC_REACH_DAYS);
        // Stock moves through transactions: read every inventory item each pass. Otherwise
        // CDC from the cursor, unless there is none or it is beyond CDC's reach.
        let since = cursor
            .updated_since
            .filter(|s| entity != Entity::Inventory && *s > cdc_reach);
        let page = cursor.page.as_deref();
        let (elements, next_page) = match since {
            Some(since) => self.changes(name, since, page).await?,
            None => self.query_page(entity, name, page).await?,
        };
        let wanted = elements.iter().filter(|element| {
            entity != Entity::Inventory
                || element.get("TrackQtyOnHand").and_then(Value::as_bool) == Some(true)
        });
        Ok(ImportPage::read(
            wanted,
            |element| parse_entity(entity, element).map(|r| vec![r]),
            |element| element.get("Id").and_then(Value::as_str).map(str::to_owned),
            self.http.redactor(),
            next_page,
        ))
    }

    /// `cdc` from `since` (or from the newest change of the previous page).
    async fn changes(
        &self,
        name: &str,
        since: DateTime<Utc>,
        page: Option<&str>,
    ) -> Result<(Vec<Value>, Option<String>), ConnectorError> {
        let from = page
            .and_then(|p| p.strip_prefix("cdc:"))
            .and_then(parse_qb_time)
            .unwrap_or(since);
        let changed_since = from.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let query = [
            ("entities", name.to_owned()),
            ("changedSince", changed_since),
        ];
        let reply = self.api(Method::GET, "/cdc", &query, None).await?;
        let body = reply.json("GET cdc")?;
        let elements: Vec<Value> = body
            .get("CDCResponse")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| r.get("QueryResponse").and_then(Value::as_array))
            .flatten()
            .filter_map(|q| q.get(name).and_then(Value::as_array))
            .flatten()
            .cloned()
            .collect();
        // CDC answers at most 1,000 objects: a full answer means there may be more,
        // from the newest change it held.
        let next = (elements.len() >= QUERY_PAGE)
            .then(|| {
                elements
                    .iter()
                    .filter_map(|e| {
                        e.pointer("/MetaData/LastUpdatedTime")
                            .and_then(Value::as_str)
                    })
                    .filter_map(parse_qb_time)
                    .max()
                    .map(|t| format!("cdc:{}", t.to_rfc3339()))
            })
            .flatten();
        Ok((elements, next))
    }

    /// A full query, 1,000 at a time by `Id`.
    async fn query_page(
        &self,
        entity: Entity,
        name: &str,
        page: Option<&str>,
    ) -> Result<(Vec<Value>, Option<String>), ConnectorError> {
        let start: usize = page
            .and_then(|p| p.strip_prefix("q:"))
            .and_then(|p| p.parse().ok())
            .unwrap_or(1);
        let filter = if entity == Entity::Inventory {
            " where Type = 'Inventory'"
        } else {
            ""
        };
        let elements = self
            .query(
                name,
                format!("select * from {name}{filter} orderby Id startposition {start} maxresults {QUERY_PAGE}"),
            )
            .await?;
        let next = (elements.len() >= QUERY_PAGE).then(|| format!("q:{}", start + elements.len()));
        Ok((elements, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quickbooks::client::quoted;
    use chrono::TimeZone;
    use serde_json::json;

    #[test]
    fn cdc_entities_parse_and_deleted_ones_are_deletions() {
        let item = json!({"Id": "19", "Name": "Widget", "Sku": "X-1", "UnitPrice": 9.5, "Type": "Inventory",
            "TrackQtyOnHand": true, "QtyOnHand": 7, "MetaData": {"LastUpdatedTime": "2015-07-24T10:33:39-07:00"}});
        let product = parse_entity(Entity::Product, &item).unwrap();
        assert_eq!(
            product.updated_at(),
            Some(Utc.with_ymd_and_hms(2015, 7, 24, 17, 33, 39).unwrap())
        );
        let stock = parse_entity(Entity::Inventory, &item).unwrap();
        assert_eq!(stock.external_id(), "19:stock");
        assert!(
            matches!(stock.data().cloned(), Some(ImportedData::Inventory { ref sku, quantity, .. }) if sku == "X-1" && quantity == Decimal::from(7))
        );
        let gone =
            parse_entity(Entity::Customer, &json!({"Id": "4", "status": "Deleted"})).unwrap();
        assert!(gone.is_tombstone());
        assert!(
            parse_entity(
                Entity::Customer,
                &json!({"Id": "5", "DisplayName": "No mail"})
            )
            .is_err()
        );
        assert_eq!(quoted("O'Brien"), "'O\\'Brien'");
    }
}
