//! Reads Items (with their prices and their stock per warehouse) and BusinessPartners,
//! paged with `odata.nextLink`, into platform records.

use super::SapB1Connector;
use super::client::literal;
use crate::mapping::date;
use crate::{ConnectorError, ImportCursor, ImportPage};
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use passerelle_core::Entity;
use passerelle_core::platform::{ImportedData, ImportedRecord, json_to_decimal};
use serde_json::Value;
use url::Url;

/// `UpdateDate` (`2026-11-24` or `2026-11-24T00:00:00Z`) and `UpdateTime` (`10:30:15`) as
/// one instant; the Service Layer states them in the server's time, taken to be UTC.
pub fn parse_update_stamp(date: Option<&str>, time: Option<&str>) -> Option<DateTime<Utc>> {
    let date = NaiveDate::parse_from_str(date?.get(..10)?, "%Y-%m-%d").ok()?;
    let time = time
        .and_then(|t| {
            NaiveTime::parse_from_str(t, "%H:%M:%S")
                .or_else(|_| NaiveTime::parse_from_str(t, "%H:%M"))
                .ok()
        })
        .unwrap_or(NaiveTime::MIN);
    Some(date.and_time(time).and_utc())
}

/// Reads an Item or BusinessPartner into platform fields (`Inventory` yields one record per
/// warehouse row: see [`parse_stock`]).
pub fn parse_entity(
    entity: Entity,
    row: &Value,
    price_list: u32,
) -> Result<ImportedRecord, String> {
    let text = |field: &str| {
        row.get(field)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let updated_at = parse_update_stamp(
        row.get("UpdateDate").and_then(Value::as_str),
        row.get("UpdateTime").and_then(Value::as_str),
    );
    let data = match entity {
        Entity::Product => {
            let sku = text("ItemCode").ok_or("item without ItemCode")?;
            let price = row
                .get("ItemPrices")
                .and_then(Value::as_array)
                .and_then(|rows| {
                    rows.iter().find(|p| {
                        p.get("PriceList").and_then(Value::as_u64) == Some(u64::from(price_list))
                    })
                });
            ImportedData::Product {
                name: text("ItemName").unwrap_or_else(|| sku.clone()),
                description: text("User_Text"),
                price: price
                    .and_then(|p| p.get("Price"))
                    .and_then(json_to_decimal)
                    .unwrap_or_default(),
                currency: price
                    .and_then(|p| p.get("Currency"))
                    .and_then(Value::as_str)
                    .filter(|c| c.len() == 3)
                    .map(str::to_owned),
                active: text("Valid").as_deref() != Some("tNO")
                    && text("Frozen").as_deref() != Some("tYES"),
                sku,
            }
        }
        _ => {
            let code = text("CardCode").ok_or("business partner without CardCode")?;
            ImportedData::Customer {
                email: text("EmailAddress").ok_or_else(|| {
                    format!("business partner {code} has no email address; the platform needs one")
                })?,
                name: text("CardName").unwrap_or_else(|| code.clone()),
                company_name: text("CardName"),
                phone: text("Phone1"),
                vat_number: text("FederalTaxID"),
            }
        }
    };
    let external_id = match &data {
        ImportedData::Product { sku, .. } => sku.clone(),
        _ => text("CardCode").unwrap_or_default(),
    };
    Ok(ImportedRecord::upsert(
        external_id,
        updated_at,
        data,
        row.clone(),
    ))
}

/// An item's stock: one record per `ItemWarehouseInfoCollection` row (`InStock`).
pub fn parse_stock(row: &Value) -> Result<Vec<ImportedRecord>, String> {
    let sku = row
        .get("ItemCode")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or("item without ItemCode")?;
    let updated_at = parse_update_stamp(
        row.get("UpdateDate").and_then(Value::as_str),
        row.get("UpdateTime").and_then(Value::as_str),
    );
    let rows = row
        .get("ItemWarehouseInfoCollection")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    rows.iter()
        .map(|wh| {
            let warehouse = wh
                .get("WarehouseCode")
                .and_then(Value::as_str)
                .filter(|w| !w.is_empty())
                .ok_or_else(|| format!("item {sku}: a warehouse row without WarehouseCode"))?;
            Ok(ImportedRecord::upsert(
                format!("{sku}:{warehouse}"),
                updated_at,
                ImportedData::Inventory {
                    sku: sku.to_owned(),
                    warehouse_code: warehouse.to_owned(),
                    quantity: wh
                        .get("InStock")
                        .and_then(json_to_decimal)
                        .unwrap_or_default(),
                },
                wh.clone(),
            ))
        })
        .collect()
}

/// What one entity's import reads: the collection, its fields and filter, and whether a
/// pass starts from the cursor.
struct Listing {
    collection: &'static str,
    select: &'static str,
    filter: Vec<String>,
    incremental: bool,
}

fn listing(entity: Entity) -> Result<Listing, ConnectorError> {
    let (collection, select, filter, incremental) = match entity {
        Entity::Product => (
            "Items",
            "ItemCode,ItemName,User_Text,ItemPrices,Valid,Frozen,UpdateDate,UpdateTime",
            vec![],
            true,
        ),
        Entity::Customer => (
            "BusinessPartners",
            "CardCode,CardName,CardType,EmailAddress,Phone1,FederalTaxID,UpdateDate,UpdateTime",
            vec!["CardType eq 'cCustomer'".to_owned()],
            true,
        ),
        // Stock moves do not touch an item's UpdateDate: read every stock item each pass.
        Entity::Inventory => (
            "Items",
            "ItemCode,ItemWarehouseInfoCollection,UpdateDate,UpdateTime",
            vec!["InventoryItem eq 'tYES'".to_owned()],
            false,
        ),
        other => {
            return Err(ConnectorError::fatal(format!(
                "the SAP Business One connector does not import {other}"
            )));
        }
    };
    Ok(Listing {
        collection,
        select,
        filter,
        incremental,
    })
}

impl SapB1Connector {
    /// One page of the entity's collection: the first from the cursor, the next ones from
    /// the `odata.nextLink` kept as the cursor's page.
    pub(super) async fn read_page(
        &self,
        entity: Entity,
        cursor: &ImportCursor,
    ) -> Result<ImportPage, ConnectorError> {
        let listing = listing(entity)?;
        let collection = listing.collection;
        let url = match &cursor.page {
            Some(next) => self.next_link(next)?,
            None => self.first_page(listing, cursor),
        };
        let body = self.get_json(url, &format!("GET {collection}")).await?;
        let rows = body.get("value").and_then(Value::as_array).ok_or_else(|| {
            ConnectorError::transient(format!("GET {collection}: the body has no value array"))
        })?;
        let next_page = body
            .get("odata.nextLink")
            .or(body.get("@odata.nextLink"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        Ok(ImportPage::read(
            rows,
            |row| {
                if entity == Entity::Inventory {
                    parse_stock(row)
                } else {
                    parse_entity(entity, row, self.settings.price_list).map(|r| vec![r])
                }
            },
            |row| {
                row.get("ItemCode")
                    .or(row.get("CardCode"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            },
            self.http.redactor(),
            next_page,
        ))
    }

    /// A stored nextLink: relative to the service root (or absolute); either resolves here,
    /// and never to another server.
    fn next_link(&self, next: &str) -> Result<Url, ConnectorError> {
        let root = self.settings.service("");
        let next_url = root
            .join(next)
            .map_err(|e| ConnectorError::transient(format!("unusable odata.nextLink: {e}")))?;
        if next_url.origin() != root.origin() {
            return Err(ConnectorError::fatal(format!(
                "odata.nextLink {} points to another server",
                crate::urls::shown(&next_url)
            )));
        }
        Ok(next_url)
    }

    fn first_page(&self, listing: Listing, cursor: &ImportCursor) -> Url {
        let Listing {
            collection,
            select,
            mut filter,
            incremental,
        } = listing;
        if incremental && let Some(since) = cursor.updated_since {
            // UpdateDate has a day's granularity: from the start of that day.
            filter.push(format!("UpdateDate ge {}", literal(&date(since))));
        }
        let mut url = self.settings.service(collection);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("$select", select);
            if !filter.is_empty() {
                q.append_pair("$filter", &filter.join(" and "));
            }
            let key = if collection == "Items" {
                "ItemCode"
            } else {
                "CardCode"
            };
            q.append_pair(
                "$orderby",
                &if incremental {
                    format!("UpdateDate,UpdateTime,{key}")
                } else {
                    key.to_owned()
                },
            );
        }
        url
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    #[test]
    fn items_partners_and_stock_parse() {
        let item = json!({"ItemCode": "A1", "ItemName": "W", "UpdateDate": "2026-11-24", "UpdateTime": "10:30:15",
            "ItemPrices": [{"PriceList": 1, "Price": 9.5, "Currency": "EUR"}], "Valid": "tYES", "Frozen": "tNO",
            "ItemWarehouseInfoCollection": [{"WarehouseCode": "01", "InStock": 7}, {"WarehouseCode": "02", "InStock": 0}]});
        let r = parse_entity(Entity::Product, &item, 1).unwrap();
        assert_eq!(r.external_id(), "A1");
        assert_eq!(
            r.updated_at(),
            Some(Utc.with_ymd_and_hms(2026, 11, 24, 10, 30, 15).unwrap())
        );
        assert!(
            matches!(r.data().cloned(), Some(ImportedData::Product { ref price, .. }) if price.to_string() == "9.5")
        );
        let stock = parse_stock(&item).unwrap();
        assert_eq!(stock.len(), 2);
        assert_eq!(stock[0].external_id(), "A1:01");
        let bp = json!({"CardCode": "C1", "CardName": "Acme"});
        assert!(parse_entity(Entity::Customer, &bp, 1).is_err());
    }
}
