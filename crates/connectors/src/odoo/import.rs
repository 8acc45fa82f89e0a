//! Reads `product.product`, `res.partner` (customers) and `stock.quant` (stock in internal
//! locations) changed since the cursor, in `(write_date, id)` order, paged by keyset so a
//! record written during the pass can neither be skipped nor shift the pages.

use super::OdooConnector;
use super::client::OrmCall;
use super::mapping::datetime;
use crate::{ConnectorError, ImportCursor, ImportPage};
use chrono::{DateTime, NaiveDateTime, Utc};
use passerelle_core::Entity;
use passerelle_core::platform::{ImportedData, ImportedRecord, json_to_decimal};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashMap;

/// Odoo's datetime text (`2026-11-24 10:30:15`, UTC; fractions tolerated).
pub fn parse_odoo_datetime(text: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc())
}

/// Odoo writes an unset field as `false`: a text that is there and not empty.
fn text(row: &Value, field: &str) -> Option<String> {
    row.get(field)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn record_id(row: &Value) -> Result<i64, String> {
    row.get("id")
        .and_then(Value::as_i64)
        .ok_or_else(|| "a record without its id".to_owned())
}

fn write_date(row: &Value) -> Option<DateTime<Utc>> {
    row.get("write_date")
        .and_then(Value::as_str)
        .and_then(parse_odoo_datetime)
}

/// A `product.product` or customer `res.partner` row as a platform record; its external id
/// is the Odoo record id.
pub fn parse_record(entity: Entity, row: &Value) -> Result<ImportedRecord, String> {
    let id = record_id(row)?;
    let data = match entity {
        Entity::Product => ImportedData::Product {
            sku: text(row, "default_code").ok_or_else(|| {
                format!("product {id} has no internal reference (default_code); the platform keys products by SKU")
            })?,
            name: text(row, "name").ok_or_else(|| format!("product {id} has no name"))?,
            description: text(row, "description_sale"),
            price: row
                .get("list_price")
                .and_then(json_to_decimal)
                .ok_or_else(|| format!("product {id} has no list_price"))?,
            // The company currency is not on the product; the platform keeps its own.
            currency: None,
            active: row.get("active").and_then(Value::as_bool).unwrap_or(true),
        },
        _ => ImportedData::Customer {
            email: text(row, "email").ok_or_else(|| {
                format!("contact {id} has no email address; the platform needs one")
            })?,
            name: text(row, "name").ok_or_else(|| format!("contact {id} has no name"))?,
            company_name: text(row, "company_name"),
            phone: text(row, "phone"),
            vat_number: text(row, "vat"),
        },
    };
    Ok(ImportedRecord::upsert(
        id.to_string(),
        write_date(row),
        data,
        row.clone(),
    ))
}

/// A many2one as Odoo reads it: `[id, "display name"]`.
fn many2one(row: &Value, field: &str) -> Option<(i64, String)> {
    let pair = row.get(field)?.as_array()?;
    Some((pair.first()?.as_i64()?, pair.get(1)?.as_str()?.to_owned()))
}

/// A quant as the stock of its product (by SKU, from `skus`) in its location (by name).
fn parse_quant(row: &Value, skus: &HashMap<i64, String>) -> Result<ImportedRecord, String> {
    let id = record_id(row)?;
    let (product, _) =
        many2one(row, "product_id").ok_or_else(|| format!("quant {id} has no product"))?;
    let (location, location_name) =
        many2one(row, "location_id").ok_or_else(|| format!("quant {id} has no location"))?;
    let sku = skus.get(&product).ok_or_else(|| {
        format!("the product of quant {id} (product.product {product}) has no internal reference (default_code)")
    })?;
    Ok(ImportedRecord::upsert(
        format!("{product}:{location}"),
        write_date(row),
        ImportedData::Inventory {
            sku: sku.clone(),
            warehouse_code: location_name.clone(),
            quantity: row
                .get("quantity")
                .and_then(json_to_decimal)
                .ok_or_else(|| format!("quant {id} has no quantity"))?,
        },
        // The product by id only: its display name changing is not a change of stock.
        json!({
            "id": id,
            "product_id": product,
            "location_id": [location, location_name],
            "quantity": row.get("quantity"),
            "write_date": row.get("write_date"),
        }),
    ))
}

/// Where a pass stands within its pages: after this record.
///
/// Odoo answers `write_date` to the second while it stores (and compares) it finer, so a
/// keyset on `(write_date, id)` would be inconsistent within one second. The token is the
/// second the last page ended in and the ids already read in it: the next page is the rest
/// of that second (those ids excepted) and everything after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageToken {
    write_date: String,
    seen: Vec<i64>,
}

/// More records than this written in one second stop the import loudly (the token would
/// grow without bound).
const MAX_SEEN_IN_ONE_SECOND: usize = 20_000;

impl PageToken {
    /// The domain of the page after this token.
    fn domain(&self) -> Result<Vec<Value>, ConnectorError> {
        let second = parse_odoo_datetime(&self.write_date).ok_or_else(|| {
            ConnectorError::fatal(format!(
                "unreadable Odoo page token: write_date {:?}",
                self.write_date
            ))
        })?;
        let next = datetime(second + chrono::Duration::seconds(1));
        let this = datetime(second);
        Ok(vec![
            json!("|"),
            json!(["write_date", ">=", next]),
            json!("&"),
            json!("&"),
            json!(["write_date", ">=", this]),
            json!(["write_date", "<", next]),
            json!(["id", "not in", self.seen]),
        ])
    }

    /// The token after a full page `rows` read with this one (`None` for the first page).
    fn after(
        previous: Option<&PageToken>,
        rows: &[Value],
        model: &str,
    ) -> Result<PageToken, ConnectorError> {
        let stamp = |row: &Value| {
            row.get("write_date")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| {
                    ConnectorError::transient(format!("{model}: a record without write_date"))
                })
        };
        let last = rows
            .last()
            .ok_or_else(|| ConnectorError::fatal("internal error: a page token after no rows"))?;
        let write_date = stamp(last)?;
        let mut seen = match previous {
            Some(p) if p.write_date == write_date => p.seen.clone(),
            _ => Vec::new(),
        };
        for row in rows {
            if stamp(row)? == write_date {
                let id = row.get("id").and_then(Value::as_i64).ok_or_else(|| {
                    ConnectorError::transient(format!("{model}: a record without id"))
                })?;
                seen.push(id);
            }
        }
        if seen.len() > MAX_SEEN_IN_ONE_SECOND {
            return Err(ConnectorError::fatal(format!(
                "{model}: more than {MAX_SEEN_IN_ONE_SECOND} records were written in the second {write_date}; the import cannot page through them"
            )));
        }
        Ok(PageToken { write_date, seen })
    }
}

/// What one entity's import reads.
fn listing(entity: Entity) -> Result<(&'static str, &'static [&'static str]), ConnectorError> {
    Ok(match entity {
        Entity::Product => (
            "product.product",
            &[
                "name",
                "default_code",
                "list_price",
                "description_sale",
                "active",
                "write_date",
            ],
        ),
        Entity::Customer => (
            "res.partner",
            &[
                "name",
                "email",
                "phone",
                "vat",
                "ref",
                "company_name",
                "write_date",
            ],
        ),
        Entity::Inventory => (
            "stock.quant",
            &["product_id", "location_id", "quantity", "write_date"],
        ),
        other => {
            return Err(ConnectorError::fatal(format!(
                "the Odoo connector does not import {other}"
            )));
        }
    })
}

impl OdooConnector {
    pub(super) async fn read_page(
        &self,
        entity: Entity,
        cursor: &ImportCursor,
    ) -> Result<ImportPage, ConnectorError> {
        let (model, fields) = listing(entity)?;
        let mut domain = match entity {
            Entity::Customer => vec![json!(["customer_rank", ">", 0])],
            Entity::Inventory => vec![json!([
                "location_id",
                "in",
                self.internal_locations().await?
            ])],
            _ => vec![],
        };
        let previous: Option<PageToken> = cursor
            .page
            .as_deref()
            .map(|token| {
                serde_json::from_str(token).map_err(|e| {
                    ConnectorError::fatal(format!("unreadable Odoo page token {token:?}: {e}"))
                })
            })
            .transpose()?;
        match &previous {
            Some(token) => domain.extend(token.domain()?),
            None => {
                if let Some(since) = cursor.updated_since {
                    domain.push(json!(["write_date", ">=", datetime(since)]));
                }
            }
        }
        let limit = super::IMPORT_PAGE_SIZE;
        let call = OrmCall::new(model, "search_read")
            .param("domain", Value::Array(domain))
            .param("fields", json!(fields))
            .param("offset", json!(0))
            .param("limit", json!(limit))
            .param("order", json!("write_date asc, id asc"))
            .with_archived();
        let rows = self.orm(&call).await?;
        let rows = rows.as_array().ok_or_else(|| {
            ConnectorError::transient(format!(
                "{model}.search_read answered something other than a list"
            ))
        })?;
        let next_page =
            if rows.len() >= limit {
                let token = PageToken::after(previous.as_ref(), rows, model)?;
                Some(serde_json::to_string(&token).map_err(|e| {
                    ConnectorError::fatal(format!("cannot write a page token: {e}"))
                })?)
            } else {
                None
            };
        let skus = if entity == Entity::Inventory {
            self.skus_of(rows).await?
        } else {
            HashMap::new()
        };
        Ok(ImportPage::read(
            rows,
            |row| {
                if entity == Entity::Inventory {
                    parse_quant(row, &skus).map(|r| vec![r])
                } else {
                    parse_record(entity, row).map(|r| vec![r])
                }
            },
            |row| {
                row.get("id")
                    .and_then(Value::as_i64)
                    .map(|id| id.to_string())
            },
            self.http.redactor(),
            next_page,
        ))
    }

    /// The ids of the internal (stock-holding) locations, asked once per connector.
    async fn internal_locations(&self) -> Result<Vec<i64>, ConnectorError> {
        if let Some(ids) = self.session.lock().await.internal_locations.clone() {
            return Ok(ids);
        }
        let call = OrmCall::new("stock.location", "search")
            .param("domain", json!([["usage", "=", "internal"]]));
        let ids = ids_of(&self.orm(&call).await?, "stock.location.search")?;
        self.session.lock().await.internal_locations = Some(ids.clone());
        Ok(ids)
    }

    /// The SKU (`default_code`) of every product the quants name, in one `read`.
    async fn skus_of(&self, quants: &[Value]) -> Result<HashMap<i64, String>, ConnectorError> {
        let mut products: Vec<i64> = quants
            .iter()
            .filter_map(|q| many2one(q, "product_id").map(|(id, _)| id))
            .collect();
        products.sort_unstable();
        products.dedup();
        if products.is_empty() {
            return Ok(HashMap::new());
        }
        let call = OrmCall::new("product.product", "read")
            .ids(products)
            .param("fields", json!(["default_code"]))
            .with_archived();
        let rows = self.orm(&call).await?;
        Ok(rows
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|row| Some((row.get("id")?.as_i64()?, text(row, "default_code")?)))
            .collect())
    }
}

/// The ids a `search` or `create` answered.
pub(super) fn ids_of(answer: &Value, what: &str) -> Result<Vec<i64>, ConnectorError> {
    answer
        .as_array()
        .and_then(|ids| ids.iter().map(Value::as_i64).collect::<Option<Vec<_>>>())
        .ok_or_else(|| {
            ConnectorError::transient(format!(
                "{what} answered {}, not a list of ids",
                crate::http::snippet(answer.to_string().as_bytes())
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn pages_within_one_second_exclude_what_was_read_and_move_on() {
        let row = |id: i64, at: &str| json!({"id": id, "write_date": at});
        let first = [
            row(1, "2026-11-24 10:30:14"),
            row(2, "2026-11-24 10:30:15"),
            row(3, "2026-11-24 10:30:15"),
        ];
        let token = PageToken::after(None, &first, "m").unwrap();
        assert_eq!(
            token,
            PageToken {
                write_date: "2026-11-24 10:30:15".into(),
                seen: vec![2, 3]
            }
        );
        assert_eq!(
            serde_json::Value::Array(token.domain().unwrap()),
            json!([
                "|",
                ["write_date", ">=", "2026-11-24 10:30:16"],
                "&",
                "&",
                ["write_date", ">=", "2026-11-24 10:30:15"],
                ["write_date", "<", "2026-11-24 10:30:16"],
                ["id", "not in", [2, 3]]
            ])
        );
        // A whole page in that same second: the ids add up, so the next page moves on.
        let second = [row(9, "2026-11-24 10:30:15"), row(4, "2026-11-24 10:30:15")];
        let next = PageToken::after(Some(&token), &second, "m").unwrap();
        assert_eq!(next.seen, vec![2, 3, 9, 4]);
        let later = [row(5, "2026-11-24 10:30:17")];
        assert_eq!(
            PageToken::after(Some(&next), &later, "m").unwrap().seen,
            vec![5]
        );
    }

    #[test]
    fn products_contacts_and_quants_parse_and_say_what_is_missing() {
        let product = json!({"id": 7, "name": "Widget", "default_code": "A1", "list_price": 9.5,
            "description_sale": false, "active": false, "write_date": "2026-11-24 10:30:15"});
        let r = parse_record(Entity::Product, &product).unwrap();
        assert_eq!(r.external_id(), "7");
        assert_eq!(
            r.updated_at(),
            Some(Utc.with_ymd_and_hms(2026, 11, 24, 10, 30, 15).unwrap())
        );
        assert!(matches!(
            r.data(),
            Some(ImportedData::Product { sku, active: false, description: None, .. }) if sku == "A1"
        ));
        let no_code = json!({"id": 8, "name": "W", "default_code": false, "list_price": 1.0});
        assert!(
            parse_record(Entity::Product, &no_code)
                .unwrap_err()
                .contains("default_code")
        );
        let contact = json!({"id": 3, "name": "Ann", "email": false});
        assert!(
            parse_record(Entity::Customer, &contact)
                .unwrap_err()
                .contains("email")
        );
        let quant = json!({"id": 1, "product_id": [7, "[A1] Widget"], "location_id": [8, "WH/Stock"],
            "quantity": 12.0, "write_date": "2026-11-24 10:30:15"});
        let skus = HashMap::from([(7, "A1".to_owned())]);
        let stock = parse_quant(&quant, &skus).unwrap();
        assert_eq!(stock.external_id(), "7:8");
        assert!(matches!(
            stock.data(),
            Some(ImportedData::Inventory { sku, warehouse_code, .. }) if sku == "A1" && warehouse_code == "WH/Stock"
        ));
        assert!(
            parse_quant(&quant, &HashMap::new())
                .unwrap_err()
                .contains("default_code")
        );
    }
}
