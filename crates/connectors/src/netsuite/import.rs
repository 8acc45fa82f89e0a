//! Reads changed customers and inventory items: SuiteQL finds what changed, in
//! `(lastmodifieddate, id)` order, paged by keyset; an item's price comes from its record
//! (the pricing sublist), read with `expandSubResources`.

use super::NetSuiteConnector;
use crate::{ConnectorError, ImportCursor, ImportPage};
use chrono::{DateTime, NaiveDateTime, TimeZone as _, Utc};
use chrono_tz::Tz;
use passerelle_core::Entity;
use passerelle_core::platform::{ImportedData, ImportedRecord, json_to_decimal};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;

const STAMP: &str = "%Y-%m-%d %H:%M:%S";

/// A SuiteQL `TO_CHAR(…, 'YYYY-MM-DD HH24:MI:SS')` value, a local time in the integration
/// user's time zone, as the instant it is (of an hour repeated when clocks go back, the
/// earlier).
pub fn parse_stamp(text: &str, zone: Tz) -> Option<DateTime<Utc>> {
    let local = NaiveDateTime::parse_from_str(text, STAMP).ok()?;
    zone.from_local_datetime(&local)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

/// How far before the cursor a pass starts, besides the worker's own overlap: the hour a
/// time zone repeats when its clocks go back would otherwise hide changes made in it.
const LOCAL_TIME_MARGIN: chrono::Duration = chrono::Duration::hours(1);

/// SuiteQL answers every value as text, booleans as `T`/`F`, and leaves out empty ones.
fn text(row: &Value, column: &str) -> Option<String> {
    row.get(column)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Where a stock pass stands: after this item id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StockToken {
    after_id: i64,
}

/// An item's stock per location (`locations` sublist: `location`, `quantityOnHand`), one
/// record per location, keyed `item id:location id`; the warehouse code is the location's
/// name.
pub fn parse_stock(row: &Value, record: Option<&Value>) -> Result<Vec<ImportedRecord>, String> {
    let id = text(row, "id").ok_or("an item without its id")?;
    let sku =
        text(row, "itemid").ok_or_else(|| format!("item {id} has no item name/number (itemid)"))?;
    let record = record.ok_or_else(|| format!("item {sku}'s record could not be read"))?;
    let lines = record
        .pointer("/locations/items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    lines
        .iter()
        .map(|line| {
            let at = |pointer: &str| {
                line.pointer(pointer)
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
            };
            let location = at("/location/id")
                .ok_or_else(|| format!("item {sku}: a location line without its location"))?;
            let name = at("/location/refName").unwrap_or_else(|| location.clone());
            Ok(ImportedRecord::upsert(
                format!("{id}:{location}"),
                None,
                ImportedData::Inventory {
                    sku: sku.clone(),
                    warehouse_code: name,
                    quantity: line
                        .get("quantityOnHand")
                        .and_then(json_to_decimal)
                        .ok_or_else(|| {
                            format!("item {sku}: no quantityOnHand at location {location}")
                        })?,
                },
                line.clone(),
            ))
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageToken {
    modified: String,
    id: i64,
}

fn timestamp(stamp: &str) -> String {
    format!("TO_TIMESTAMP('{stamp}', 'YYYY-MM-DD HH24:MI:SS')")
}

/// The query of one page: changed since the cursor, or after the last row read.
fn query(entity: Entity, cursor: &ImportCursor, zone: Tz) -> Result<String, ConnectorError> {
    let (columns, table, mut conditions) = match entity {
        Entity::Product => (
            "id, itemid, displayname, salesdescription, isinactive",
            "item",
            vec!["itemtype = 'InvtPart'".to_owned()],
        ),
        Entity::Customer => (
            "id, entityid, companyname, firstname, lastname, isperson, email, phone",
            "customer",
            vec![],
        ),
        other => {
            return Err(ConnectorError::fatal(format!(
                "the NetSuite connector does not import {other}"
            )));
        }
    };
    match &cursor.page {
        Some(token) => {
            let after: PageToken = serde_json::from_str(token).map_err(|e| {
                ConnectorError::fatal(format!("unreadable NetSuite page token {token:?}: {e}"))
            })?;
            // Re-formatted from a parsed stamp: nothing from the token reaches the query as is.
            // (A local time, as NetSuite wrote it: it goes back as it came.)
            let stamp = NaiveDateTime::parse_from_str(&after.modified, STAMP)
                .map_err(|_| {
                    ConnectorError::fatal(format!("unreadable NetSuite page token {token:?}"))
                })?
                .format(STAMP)
                .to_string();
            conditions.push(format!(
                "(lastmodifieddate > {ts} OR (lastmodifieddate = {ts} AND id > {id}))",
                ts = timestamp(&stamp),
                id = after.id
            ));
        }
        None => {
            if let Some(since) = cursor.updated_since {
                let local = (since - LOCAL_TIME_MARGIN)
                    .with_timezone(&zone)
                    .naive_local();
                conditions.push(format!(
                    "lastmodifieddate >= {}",
                    timestamp(&local.format(STAMP).to_string())
                ));
            }
        }
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    Ok(format!(
        "SELECT {columns}, TO_CHAR(lastmodifieddate, 'YYYY-MM-DD HH24:MI:SS') AS modified FROM {table}{filter} ORDER BY lastmodifieddate, id"
    ))
}

/// A customer row as a platform customer; its external id is the internal id.
pub fn parse_customer(row: &Value, zone: Tz) -> Result<ImportedRecord, String> {
    let id = text(row, "id").ok_or("a customer without its id")?;
    let person = text(row, "isperson").as_deref() == Some("T");
    let full_name = [text(row, "firstname"), text(row, "lastname")]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    let name = text(row, "companyname")
        .filter(|_| !person)
        .or_else(|| Some(full_name).filter(|n| !n.is_empty()))
        .or_else(|| text(row, "entityid"))
        .ok_or_else(|| format!("customer {id} has no name"))?;
    Ok(ImportedRecord::upsert(
        id.clone(),
        text(row, "modified").and_then(|t| parse_stamp(&t, zone)),
        ImportedData::Customer {
            email: text(row, "email").ok_or_else(|| {
                format!("customer {id} has no email address; the platform needs one")
            })?,
            company_name: text(row, "companyname"),
            name,
            phone: text(row, "phone"),
            vat_number: None,
        },
        row.clone(),
    ))
}

/// An inventory item row with its record's price (`None` when the record could not be read).
pub fn parse_item(row: &Value, price: Option<&Value>, zone: Tz) -> Result<ImportedRecord, String> {
    let id = text(row, "id").ok_or("an item without its id")?;
    let sku =
        text(row, "itemid").ok_or_else(|| format!("item {id} has no item name/number (itemid)"))?;
    let price = price.and_then(json_to_decimal).ok_or_else(|| {
        format!("item {sku} has no price on the configured price level and currency")
    })?;
    Ok(ImportedRecord::upsert(
        id,
        text(row, "modified").and_then(|t| parse_stamp(&t, zone)),
        ImportedData::Product {
            name: text(row, "displayname").unwrap_or_else(|| sku.clone()),
            description: text(row, "salesdescription"),
            price,
            currency: None,
            active: text(row, "isinactive").as_deref() != Some("T"),
            sku,
        },
        row.clone(),
    ))
}

impl NetSuiteConnector {
    pub(super) async fn read_page(
        &self,
        entity: Entity,
        cursor: &ImportCursor,
    ) -> Result<ImportPage, ConnectorError> {
        if entity == Entity::Inventory {
            return self.read_stock_page(cursor).await;
        }
        let (rows, has_more) = self
            .suiteql(
                &query(entity, cursor, self.settings.time_zone)?,
                super::IMPORT_PAGE_SIZE,
            )
            .await?;
        let next_page = match rows.last() {
            Some(last) if has_more => {
                let token = PageToken {
                    modified: text(last, "modified").ok_or_else(|| {
                        ConnectorError::transient("a SuiteQL row without its modified stamp")
                    })?,
                    id: text(last, "id")
                        .and_then(|id| id.parse().ok())
                        .ok_or_else(|| {
                            ConnectorError::transient("a SuiteQL row without a numeric id")
                        })?,
                };
                Some(serde_json::to_string(&token).map_err(|e| {
                    ConnectorError::fatal(format!("cannot write a page token: {e}"))
                })?)
            }
            _ => None,
        };
        let prices = if entity == Entity::Product {
            self.prices(&rows).await?
        } else {
            HashMap::new()
        };
        let zone = self.settings.time_zone;
        Ok(ImportPage::read(
            &rows,
            |row| match entity {
                Entity::Product => {
                    let id = text(row, "id").unwrap_or_default();
                    parse_item(row, prices.get(&id), zone).map(|r| vec![r])
                }
                _ => parse_customer(row, zone).map(|r| vec![r]),
            },
            |row| text(row, "id"),
            self.http.redactor(),
            next_page,
        ))
    }

    /// Each item's price on the configured level and currency, from its record.
    async fn prices(&self, rows: &[Value]) -> Result<HashMap<String, Value>, ConnectorError> {
        Ok(self
            .item_records(rows)
            .await?
            .into_iter()
            .filter_map(|(id, record)| Some((id, self.price_of(&record)?)))
            .collect())
    }

    /// Each row's inventory item record, sublists expanded; an item that cannot be read
    /// (deleted since the query, say) is left out, and logged as failed by its page.
    async fn item_records(&self, rows: &[Value]) -> Result<HashMap<String, Value>, ConnectorError> {
        let ids: Vec<String> = rows.iter().filter_map(|r| text(r, "id")).collect();
        let parallel = self.settings.parallelism();
        let urls: Vec<url::Url> = ids
            .iter()
            .map(|id| {
                let mut url = self.settings.rest(["record", "v1", "inventoryItem", id]);
                url.query_pairs_mut()
                    .append_pair("expandSubResources", "true");
                url
            })
            .collect();
        let records = crate::in_order_concurrently(
            urls.into_iter()
                .map(|url| self.get_json(url, "GET inventoryItem")),
            parallel,
        )
        .await;
        let mut found = HashMap::new();
        for (id, record) in ids.into_iter().zip(records) {
            match record {
                Ok(record) => {
                    found.insert(id, record);
                }
                Err(ConnectorError::Rejected { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(found)
    }

    /// One page of stock: every inventory item in id order (a stock move does not touch an
    /// item's `lastmodifieddate`, so each pass reads them all), each with its `locations`.
    async fn read_stock_page(&self, cursor: &ImportCursor) -> Result<ImportPage, ConnectorError> {
        let after: i64 = match &cursor.page {
            Some(token) => {
                serde_json::from_str::<StockToken>(token)
                    .map_err(|e| {
                        ConnectorError::fatal(format!(
                            "unreadable NetSuite page token {token:?}: {e}"
                        ))
                    })?
                    .after_id
            }
            None => 0,
        };
        let query = format!(
            "SELECT id, itemid FROM item WHERE itemtype = 'InvtPart' AND id > {after} ORDER BY id"
        );
        let (rows, has_more) = self.suiteql(&query, super::IMPORT_PAGE_SIZE).await?;
        let next_page = match rows.last() {
            Some(last) if has_more => {
                let after_id =
                    text(last, "id")
                        .and_then(|id| id.parse().ok())
                        .ok_or_else(|| {
                            ConnectorError::transient("a SuiteQL row without a numeric id")
                        })?;
                Some(
                    serde_json::to_string(&StockToken { after_id }).map_err(|e| {
                        ConnectorError::fatal(format!("cannot write a page token: {e}"))
                    })?,
                )
            }
            _ => None,
        };
        let records = self.item_records(&rows).await?;
        Ok(ImportPage::read(
            &rows,
            |row| {
                let id = text(row, "id").unwrap_or_default();
                parse_stock(row, records.get(&id))
            },
            |row| text(row, "id"),
            self.http.redactor(),
            next_page,
        ))
    }

    /// The pricing sublist's row of our price level and currency (the base quantity).
    fn price_of(&self, record: &Value) -> Option<Value> {
        record
            .pointer("/price/items")?
            .as_array()?
            .iter()
            .find(|row| {
                row.pointer("/priceLevel/id").and_then(Value::as_str)
                    == Some(self.settings.price_level_id.as_str())
                    && row.pointer("/currencyPage/id").and_then(Value::as_str)
                        == Some(self.settings.currency_id.as_str())
                    && row
                        .pointer("/quantity/value")
                        .and_then(Value::as_f64)
                        .is_none_or(|q| q == 0.0)
            })?
            .get("price")
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    #[test]
    fn stamps_are_local_times_of_the_users_zone() {
        let zone: Tz = "America/New_York".parse().unwrap();
        assert_eq!(
            parse_stamp("2026-11-24 10:30:15", zone),
            Some(Utc.with_ymd_and_hms(2026, 11, 24, 15, 30, 15).unwrap())
        );
        // The hour repeated on 2026-11-01: the earlier of the two instants.
        assert_eq!(
            parse_stamp("2026-11-01 01:30:00", zone),
            Some(Utc.with_ymd_and_hms(2026, 11, 1, 5, 30, 0).unwrap())
        );
        let from = query(
            Entity::Customer,
            &ImportCursor {
                updated_since: Some(Utc.with_ymd_and_hms(2026, 11, 24, 15, 30, 15).unwrap()),
                ..ImportCursor::default()
            },
            zone,
        )
        .unwrap();
        assert!(
            from.contains("lastmodifieddate >= TO_TIMESTAMP('2026-11-24 09:30:15'"),
            "{from}"
        );
    }

    #[test]
    fn pages_follow_the_keyset_and_rows_parse_from_text() {
        let first = query(
            Entity::Customer,
            &ImportCursor {
                updated_since: Some(Utc.with_ymd_and_hms(2026, 11, 24, 10, 30, 15).unwrap()),
                ..ImportCursor::default()
            },
            Tz::UTC,
        )
        .unwrap();
        // An hour's margin before the cursor (the hour a zone repeats in autumn).
        assert!(first.ends_with("FROM customer WHERE lastmodifieddate >= TO_TIMESTAMP('2026-11-24 09:30:15', 'YYYY-MM-DD HH24:MI:SS') ORDER BY lastmodifieddate, id"), "{first}");
        let next = query(
            Entity::Product,
            &ImportCursor {
                page: Some(r#"{"modified":"2026-11-24 10:30:15","id":42}"#.into()),
                ..ImportCursor::default()
            },
            Tz::UTC,
        )
        .unwrap();
        assert!(next.contains("WHERE itemtype = 'InvtPart' AND (lastmodifieddate > TO_TIMESTAMP('2026-11-24 10:30:15', 'YYYY-MM-DD HH24:MI:SS') OR (lastmodifieddate = TO_TIMESTAMP('2026-11-24 10:30:15', 'YYYY-MM-DD HH24:MI:SS') AND id > 42))"), "{next}");
        let injected = query(
            Entity::Product,
            &ImportCursor {
                page: Some(r#"{"modified":"2026-11-24 10:30:15' OR 1=1 --","id":1}"#.into()),
                ..ImportCursor::default()
            },
            Tz::UTC,
        );
        assert!(injected.is_err());
        let customer = parse_customer(
            &json!({"id": "7", "companyname": "Acme SARL", "isperson": "F",
            "email": "a@acme.example", "modified": "2026-11-24 10:30:15"}),
            Tz::UTC,
        )
        .unwrap();
        assert_eq!(customer.external_id(), "7");
        assert!(
            parse_customer(&json!({"id": "8", "companyname": "No Mail"}), Tz::UTC)
                .unwrap_err()
                .contains("email")
        );
        let item = parse_item(
            &json!({"id": "3", "itemid": "A1", "isinactive": "T"}),
            Some(&json!(9.5)),
            Tz::UTC,
        )
        .unwrap();
        assert!(
            matches!(item.data(), Some(ImportedData::Product { active: false, sku, .. }) if sku == "A1")
        );
        assert!(
            parse_item(&json!({"id": "3", "itemid": "A1"}), None, Tz::UTC)
                .unwrap_err()
                .contains("price")
        );
    }
}
