//! Reads accounts and products changed since the cursor (`modifiedon`), paged with
//! `Prefer: odata.maxpagesize` and `@odata.nextLink`, into platform records.

use super::DynamicsConnector;
use super::client::{Table, table};
use crate::{ConnectorError, ImportCursor, ImportPage};
use chrono::{DateTime, Utc};
use passerelle_core::Entity;
use passerelle_core::platform::{ImportedData, ImportedRecord, json_to_decimal};
use reqwest::Method;
use reqwest::header::{HeaderName, HeaderValue};
use serde_json::Value;
use url::Url;

/// Reads an account or a product into platform fields.
pub fn parse_row(entity: Entity, row: &Value) -> Result<ImportedRecord, String> {
    let Some(def) = table(entity).filter(|_| matches!(entity, Entity::Customer | Entity::Product))
    else {
        return Err(format!(
            "the dynamics_365 connector does not import {entity}"
        ));
    };
    let text = |field: &str| {
        row.get(field)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let id = text(def.pk).ok_or_else(|| format!("{} row without {}", def.set, def.pk))?;
    let updated_at = text("modifiedon")
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc));
    let data = match entity {
        Entity::Customer => {
            let email = text("emailaddress1").ok_or_else(|| {
                format!("account {id} has no e-mail address; the platform needs one")
            })?;
            let name = text("name").unwrap_or_else(|| email.clone());
            ImportedData::Customer {
                email,
                company_name: Some(name.clone()),
                name,
                phone: text("telephone1"),
                vat_number: None,
            }
        }
        _ => ImportedData::Product {
            sku: text("productnumber")
                .ok_or_else(|| format!("product {id} has no productnumber"))?,
            name: text("name").unwrap_or_default(),
            description: text("description"),
            price: row
                .get("price")
                .and_then(json_to_decimal)
                .unwrap_or_default(),
            currency: None,
            active: row.get("statecode").and_then(Value::as_i64).unwrap_or(0) == 0,
        },
    };
    Ok(ImportedRecord::upsert(id, updated_at, data, row.clone()))
}

impl DynamicsConnector {
    /// One page of accounts or products: the first from the cursor, the next ones from the
    /// `@odata.nextLink` kept as the cursor's page.
    pub(super) async fn read_page(
        &self,
        entity: Entity,
        cursor: &ImportCursor,
    ) -> Result<ImportPage, ConnectorError> {
        let Some(def) =
            table(entity).filter(|_| matches!(entity, Entity::Customer | Entity::Product))
        else {
            return Err(ConnectorError::fatal(format!(
                "the dynamics_365 connector does not import {entity}"
            )));
        };
        let url = match cursor.page.as_deref() {
            Some(next) => self.next_link(next)?,
            None => self.first_page(entity, def, cursor),
        };
        let prefer =
            HeaderValue::from_str(&format!("odata.maxpagesize={}", self.settings.page_size))
                .map_err(|_| ConnectorError::fatal("invalid page size"))?;
        let reply = self
            .api(
                Method::GET,
                url,
                &[(HeaderName::from_static("prefer"), prefer)],
                None,
                true,
            )
            .await?;
        let body = reply.json(&format!("GET {}", def.set))?;
        let rows = body
            .get("value")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let next_page = body
            .get("@odata.nextLink")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Ok(ImportPage::read(
            &rows,
            |row| parse_row(entity, row).map(|r| vec![r]),
            |row| row.get(def.pk).and_then(Value::as_str).map(str::to_owned),
            self.http.redactor(),
            next_page,
        ))
    }

    /// A stored nextLink, which must lead back to this environment's Web API, nowhere else.
    fn next_link(&self, next: &str) -> Result<Url, ConnectorError> {
        let root = self.settings.api_url("");
        let url = Url::parse(next)
            .map_err(|e| ConnectorError::fatal(format!("the stored nextLink is not a URL: {e}")))?;
        if url.origin() != root.origin() || !url.path().starts_with(root.path()) {
            return Err(ConnectorError::fatal(format!(
                "the stored nextLink {} is not under {}",
                crate::urls::shown(&url),
                crate::urls::shown(&root)
            )));
        }
        Ok(url)
    }

    fn first_page(&self, entity: Entity, def: Table, cursor: &ImportCursor) -> Url {
        let select = match entity {
            Entity::Customer => "accountid,name,accountnumber,emailaddress1,telephone1,modifiedon",
            _ => "productid,name,productnumber,description,price,statecode,modifiedon",
        };
        let mut url = self.settings.api_url(def.set);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("$select", select);
            if let Some(since) = cursor.updated_since {
                q.append_pair(
                    "$filter",
                    &format!("modifiedon ge {}", since.format("%Y-%m-%dT%H:%M:%SZ")),
                );
            }
            q.append_pair("$orderby", &format!("modifiedon asc,{} asc", def.pk));
        }
        url
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;
    use serde_json::json;

    #[test]
    fn rows_are_read_into_platform_fields() {
        let account = json!({"accountid": "0f8fad5b-d9cb-469f-a165-70867728950e", "name": "Buyer SARL",
            "emailaddress1": "ann@buyer.example", "telephone1": "+33", "modifiedon": "2026-01-02T03:04:05Z"});
        let r = parse_row(Entity::Customer, &account).unwrap();
        assert_eq!(
            r.updated_at().unwrap().to_rfc3339(),
            "2026-01-02T03:04:05+00:00"
        );
        assert!(
            matches!(r.data().cloned(), Some(ImportedData::Customer { ref email, ref phone, .. }) if email == "ann@buyer.example" && phone.as_deref() == Some("+33"))
        );
        let no_email = json!({"accountid": "0f8fad5b-d9cb-469f-a165-70867728950e", "name": "X"});
        assert!(
            parse_row(Entity::Customer, &no_email)
                .unwrap_err()
                .contains("e-mail")
        );
        let product = json!({"productid": "0f8fad5b-d9cb-469f-a165-70867728950e", "name": "Widget",
            "productnumber": "X-1", "price": 9.5, "statecode": 1});
        let r = parse_row(Entity::Product, &product).unwrap();
        assert!(
            matches!(r.data().cloned(), Some(ImportedData::Product { ref sku, price, active: false, .. }) if sku == "X-1" && price == Decimal::new(95, 1))
        );
    }
}
