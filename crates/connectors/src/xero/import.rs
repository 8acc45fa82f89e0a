//! Reads Xero's Items and Contacts (with `If-Modified-Since` and pages) into platform
//! records; an item tracked as inventory also gives its one stock figure.

use super::XeroConnector;
use super::client::header;
use crate::{ConnectorError, ImportCursor, ImportPage};
use chrono::{DateTime, Utc};
use passerelle_core::Entity;
use passerelle_core::platform::{ImportedData, ImportedRecord, json_to_decimal};
use reqwest::Method;
use serde_json::Value;

/// The spec's `ifModifiedSince` is an RFC 3339 `date-time`, which needs an offset: UTC, `Z`.
fn if_modified_since(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Reads Xero's `/Date(1552327126164+0000)/` (and ISO 8601) timestamps.
pub fn parse_xero_date(raw: &str) -> Option<DateTime<Utc>> {
    let raw = raw.trim();
    if let Some(inner) = raw
        .strip_prefix("/Date(")
        .and_then(|r| r.strip_suffix(")/"))
    {
        let digits: String = inner
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '-')
            .collect();
        let ms: i64 = digits.parse().ok()?;
        return DateTime::from_timestamp_millis(ms);
    }
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            chrono::NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S")
                .ok()
                .map(|t| t.and_utc())
        })
}

/// A non-empty text field of `element`.
fn text(element: &Value, field: &str) -> Option<String> {
    element
        .get(field)
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Reads a Xero Item or Contact into platform fields.
pub fn parse_element(entity: Entity, element: &Value) -> Result<ImportedRecord, String> {
    let id_field = match entity {
        Entity::Customer => "ContactID",
        _ => "ItemID",
    };
    let external_id = element
        .get(id_field)
        .and_then(|v| v.as_str())
        .ok_or_else(|| format!("element without {id_field}"))?
        .to_owned();
    let updated_at = element
        .get("UpdatedDateUTC")
        .and_then(|v| v.as_str())
        .and_then(parse_xero_date);
    // No data: the contact is archived.
    let (data, external_id) = match entity {
        Entity::Product => (
            Some(ImportedData::Product {
                sku: text(element, "Code")
                    .ok_or_else(|| format!("item {external_id} has no Code"))?,
                name: text(element, "Name").unwrap_or_default(),
                description: text(element, "Description"),
                price: element
                    .get("SalesDetails")
                    .and_then(|d| d.get("UnitPrice"))
                    .and_then(json_to_decimal)
                    .unwrap_or_default(),
                currency: None,
                active: true,
            }),
            external_id,
        ),
        Entity::Inventory => {
            let sku =
                text(element, "Code").ok_or_else(|| format!("item {external_id} has no Code"))?;
            let quantity = element
                .get("QuantityOnHand")
                .and_then(json_to_decimal)
                .unwrap_or_default();
            // Stock is keyed by item and warehouse; Xero has one stock figure per item.
            (
                Some(ImportedData::Inventory {
                    sku,
                    warehouse_code: "XERO".into(),
                    quantity,
                }),
                format!("{external_id}:stock"),
            )
        }
        _ => (contact_data(element, &external_id)?, external_id),
    };
    let raw = element.clone();
    Ok(match data {
        Some(data) => ImportedRecord::upsert(external_id, updated_at, data, raw),
        None => ImportedRecord::tombstone(external_id, updated_at, raw),
    })
}

/// A contact's fields, or none and `true` when it is archived (a deletion).
/// A contact's fields; `None` when it is archived (a tombstone).
fn contact_data(element: &Value, external_id: &str) -> Result<Option<ImportedData>, String> {
    if text(element, "ContactStatus").as_deref() == Some("ARCHIVED") {
        return Ok(None);
    }
    let data = ImportedData::Customer {
        email: text(element, "EmailAddress").ok_or_else(|| {
            format!("contact {external_id} has no email address; the platform needs one")
        })?,
        name: text(element, "Name").unwrap_or_default(),
        company_name: text(element, "Name"),
        phone: element
            .get("Phones")
            .and_then(|p| p.as_array())
            .and_then(|p| {
                p.iter().find_map(|x| {
                    x.get("PhoneNumber")
                        .and_then(|n| n.as_str())
                        .filter(|n| !n.is_empty())
                })
            })
            .map(str::to_owned),
        vat_number: text(element, "TaxNumber"),
    };
    Ok(Some(data))
}

impl XeroConnector {
    /// One page of Contacts (paged) or Items (all at once), changed since the cursor.
    pub(super) async fn read_page(
        &self,
        entity: Entity,
        cursor: &ImportCursor,
    ) -> Result<ImportPage, ConnectorError> {
        let (collection, paged, incremental) = match entity {
            Entity::Customer => ("Contacts", true, true),
            Entity::Product => ("Items", false, true),
            // Stock moves do not touch an item's UpdatedDateUTC: read every item each pass.
            Entity::Inventory => ("Items", false, false),
            other => {
                return Err(ConnectorError::fatal(format!(
                    "the Xero connector does not import {other}"
                )));
            }
        };
        let page: u32 = cursor
            .page
            .as_deref()
            .and_then(|p| p.parse().ok())
            .unwrap_or(1);
        let mut query = vec![("order", "UpdatedDateUTC ASC".to_owned())];
        if paged {
            query.push(("page", page.to_string()));
            query.push(("includeArchived", "true".into()));
        }
        let mut extra = Vec::new();
        if incremental && let Some(since) = cursor.updated_since {
            extra.extend(header("if-modified-since", &if_modified_since(since)));
        }
        let path = format!("/api.xro/2.0/{collection}");
        let reply = self.api(Method::GET, &path, &query, None, extra).await?;
        let body = reply.json(&format!("GET {collection}"))?;
        let elements = body
            .get(collection)
            .and_then(|v| v.as_array())
            .ok_or_else(|| {
                ConnectorError::transient(format!(
                    "GET {collection}: the body has no {collection} array"
                ))
            })?;
        // Contacts come 100 to a page; a full page means there may be another.
        let next_page = (paged && elements.len() >= 100).then(|| (page + 1).to_string());
        let wanted = elements.iter().filter(|element| {
            entity != Entity::Inventory
                || element
                    .get("IsTrackedAsInventory")
                    .and_then(|v| v.as_bool())
                    == Some(true)
        });
        Ok(ImportPage::read(
            wanted,
            |element| parse_element(entity, element).map(|r| vec![r]),
            |element| {
                element
                    .get("ContactID")
                    .or(element.get("ItemID"))
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            },
            self.http.redactor(),
            next_page,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    #[test]
    fn spec_example_items_and_contacts_parse() {
        let item = json!({"ItemID": "9a59ea90-942e-484d-9b71-d00ab607e03b", "Code": "foo", "Description": "Hello there",
            "UpdatedDateUTC": "/Date(1552331874000+0000)/", "SalesDetails": {"UnitPrice": 20.0}, "Name": "Hello11350",
            "IsTrackedAsInventory": false});
        let r = parse_element(Entity::Product, &item).unwrap();
        assert_eq!(r.external_id(), "9a59ea90-942e-484d-9b71-d00ab607e03b");
        assert!(r.updated_at().is_some());
        let contact = json!({"ContactID": "3ff6d40c", "ContactStatus": "ACTIVE", "Name": "Foo9987", "EmailAddress": "sid32476@blah.com"});
        assert!(matches!(
            parse_element(Entity::Customer, &contact).unwrap().data(),
            Some(ImportedData::Customer { .. })
        ));
        let archived = json!({"ContactID": "x", "ContactStatus": "ARCHIVED", "Name": "Gone"});
        assert!(
            parse_element(Entity::Customer, &archived)
                .unwrap()
                .is_tombstone()
        );
    }

    #[test]
    fn if_modified_since_is_an_rfc_3339_date_time_in_utc() {
        let t = Utc.with_ymd_and_hms(2026, 12, 1, 8, 55, 31).unwrap();
        assert_eq!(if_modified_since(t), "2026-12-01T08:55:31Z");
        assert!(DateTime::parse_from_rfc3339(&if_modified_since(t)).is_ok());
    }

    #[test]
    fn xero_dates_parse_in_both_forms() {
        let a = parse_xero_date("/Date(1552327126164+0000)/").unwrap();
        let b = parse_xero_date("/Date(1552327126164)/").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.timestamp_millis(), 1_552_327_126_164);
        assert!(parse_xero_date("2019-03-11T18:38:46").is_some());
        assert!(parse_xero_date("garbage").is_none());
    }
}
