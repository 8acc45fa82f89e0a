//! Platform records as the custom API's payloads (pure; see the contract's "Payloads").

use crate::ConnectorError;
use crate::mapping::line_sku;
use passerelle_core::platform::{OrderRecord, PlatformRecord, decimal_to_json};
use serde_json::{Value, json};

fn opt_str(value: &Option<String>) -> Value {
    value
        .as_ref()
        .map_or(Value::Null, |s| Value::String(s.clone()))
}

/// The payload for a platform record (pure; see the contract's "Payloads").
pub fn map_record(record: &PlatformRecord) -> Result<Value, ConnectorError> {
    Ok(match record {
        PlatformRecord::Product(p) => json!({
            "external_ref": p.id.to_string(),
            "sku": p.sku,
            "name": p.name,
            "description": opt_str(&p.description),
            "price": decimal_to_json(p.price),
            "currency": p.currency.trim(),
            "active": p.active,
        }),
        PlatformRecord::Customer(c) => json!({
            "external_ref": c.id.to_string(),
            "email": c.email,
            "name": c.name,
            "company_name": opt_str(&c.company_name),
            "phone": opt_str(&c.phone),
            "vat_number": opt_str(&c.vat_number),
        }),
        PlatformRecord::Order(o) => map_order(o)?,
        PlatformRecord::Invoice(inv) => {
            let email = inv.customer_email.clone().ok_or_else(|| {
                ConnectorError::rejected(
                    format!("invoice {} has no customer email", inv.invoice_number),
                    None,
                )
            })?;
            json!({
                "external_ref": inv.id.to_string(),
                "invoice_number": inv.invoice_number,
                "order_number": opt_str(&inv.order_number),
                "customer_email": email,
                "status": inv.status,
                "currency": inv.currency.trim(),
                "total": decimal_to_json(inv.total_amount),
                "issued_at": inv.issued_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                "due_at": inv.due_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            })
        }
        PlatformRecord::Inventory(s) => json!({
            "external_ref": record.internal_id(),
            "sku": s.sku,
            "warehouse_code": s.warehouse_code,
            "quantity": decimal_to_json(s.quantity),
        }),
    })
}

fn map_order(o: &OrderRecord) -> Result<Value, ConnectorError> {
    let email = o.customer_email.clone().ok_or_else(|| {
        ConnectorError::rejected(
            format!("order {} has no customer email", o.order_number),
            None,
        )
    })?;
    let mut items = Vec::with_capacity(o.items.len());
    for (i, line) in o.items.iter().enumerate() {
        items.push(json!({
            "sku": line_sku(o, i, line)?,
            "quantity": decimal_to_json(line.quantity),
            "price": decimal_to_json(line.unit_price),
        }));
    }
    Ok(json!({
        "external_ref": o.id.to_string(),
        "order_number": o.order_number,
        "customer_email": email,
        "status": o.status,
        "currency": o.currency.trim(),
        "total": decimal_to_json(o.total_amount),
        "items": items,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use passerelle_core::platform::OrderLine;
    use rust_decimal::Decimal;
    use std::str::FromStr;

    #[test]
    fn an_order_maps_to_the_seed_fields_with_exact_amounts() {
        let t = chrono::Utc.with_ymd_and_hms(2026, 11, 2, 10, 0, 0).unwrap();
        let order = PlatformRecord::Order(OrderRecord {
            id: 1001,
            order_number: "WH-1001".into(),
            customer_id: Some(4),
            customer_email: Some("buyer@acme.example".into()),
            status: "confirmed".into(),
            currency: "EUR".into(),
            total_amount: Decimal::from_str("250.1000").unwrap(),
            items: vec![OrderLine {
                product_id: Some(17),
                sku: Some("SKU-0017".into()),
                quantity: Decimal::from_str("20.0000").unwrap(),
                unit_price: Decimal::from_str("12.5050").unwrap(),
            }],
            created_at: t,
            updated_at: t,
        });
        let payload = map_record(&order).unwrap();
        assert_eq!(payload["order_number"], "WH-1001");
        assert_eq!(payload["customer_email"], "buyer@acme.example");
        assert_eq!(payload["total"].to_string(), "250.1");
        assert_eq!(payload["items"][0]["sku"], "SKU-0017");
        assert_eq!(payload["items"][0]["quantity"].to_string(), "20");
        assert_eq!(payload["items"][0]["price"].to_string(), "12.505");
    }

    #[test]
    fn an_order_line_without_product_is_rejected_with_the_reason() {
        let t = chrono::Utc.with_ymd_and_hms(2026, 11, 2, 10, 0, 0).unwrap();
        let order = PlatformRecord::Order(OrderRecord {
            id: 1,
            order_number: "A".into(),
            customer_id: None,
            customer_email: Some("a@b.c".into()),
            status: "x".into(),
            currency: "EUR".into(),
            total_amount: Decimal::ONE,
            items: vec![OrderLine {
                product_id: None,
                sku: None,
                quantity: Decimal::ONE,
                unit_price: Decimal::ONE,
            }],
            created_at: t,
            updated_at: t,
        });
        let err = map_record(&order).unwrap_err();
        assert_eq!(err.class(), "rejected");
        assert!(err.to_string().contains("line 1"), "{err}");
    }
}
