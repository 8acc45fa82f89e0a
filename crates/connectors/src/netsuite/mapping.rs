//! Platform records as NetSuite REST records (pure): `inventoryItem`, `customer`,
//! `salesOrder` and `invoice`. Each carries our reference as `externalId`, the key of its
//! upsert (`PUT …/eid:{externalId}`). Links to other records are placeholders the export
//! replaces with the internal ids their mappings hold.

use super::NetSuiteSettings;
use crate::mapping::{customer_of, date, line_product, truncated};
use crate::{ConnectorError, ExportOp, Reference};
use passerelle_core::platform::{
    CustomerRecord, InvoiceRecord, OrderRecord, PlatformRecord, ProductRecord, decimal_to_json,
};
use passerelle_core::{Entity, MappingEntityType};
use serde_json::{Value, json};

pub(super) const CUSTOMER: &str = "platform-customer:";
pub(super) const PRODUCT: &str = "platform-product:";
pub(super) const ORDER: &str = "platform-order:";

/// The record type an entity is written to.
pub(super) fn record_type(entity: Entity) -> Option<&'static str> {
    Some(match entity {
        Entity::Product => "inventoryItem",
        Entity::Customer => "customer",
        Entity::Order => "salesOrder",
        Entity::Invoice => "invoice",
        Entity::Inventory => return None,
    })
}

/// Our reference for a customer: NetSuite's `externalId` is unique per record type.
pub(super) fn customer_external_id(id: i64) -> String {
    format!("PLT-C{id}")
}

pub(super) fn map_record(
    settings: &NetSuiteSettings,
    record: &PlatformRecord,
) -> Result<Value, ConnectorError> {
    match record {
        PlatformRecord::Product(p) => Ok(map_product(settings, p)),
        PlatformRecord::Customer(c) => Ok(map_customer(settings, c)),
        PlatformRecord::Order(o) => map_order(o),
        PlatformRecord::Invoice(inv) => map_invoice(settings, inv),
        PlatformRecord::Inventory(_) => Err(ConnectorError::fatal(
            "NetSuite stock moves through inventory adjustments: inventory is not exported",
        )),
    }
}

fn map_product(settings: &NetSuiteSettings, p: &ProductRecord) -> Value {
    let mut item = json!({
        "externalId": p.sku,
        "itemId": truncated(&p.sku, 60),
        "displayName": truncated(&p.name, 60),
        "isInactive": !p.active,
        "price": {"items": [{
            "currencyPage": {"id": settings.currency_id},
            "priceLevel": {"id": settings.price_level_id},
            "quantity": {"value": 0},
            "price": decimal_to_json(p.price),
        }]},
    });
    if let (Some(obj), Some(description)) = (item.as_object_mut(), &p.description) {
        obj.insert("salesDescription".into(), json!(description));
    }
    item
}

fn map_customer(settings: &NetSuiteSettings, c: &CustomerRecord) -> Value {
    let mut customer = json!({
        "externalId": customer_external_id(c.id),
        "companyName": truncated(c.company_name.as_deref().unwrap_or(&c.name), 83),
        "isPerson": false,
        "email": c.email,
    });
    if let Some(obj) = customer.as_object_mut() {
        if let Some(phone) = &c.phone {
            obj.insert("phone".into(), json!(truncated(phone, 32)));
        }
        if let Some(subsidiary) = &settings.subsidiary_id {
            obj.insert("subsidiary".into(), json!({"id": subsidiary}));
        }
    }
    customer
}

fn map_order(o: &OrderRecord) -> Result<Value, ConnectorError> {
    let what = format!("order {}", o.order_number);
    let mut lines = Vec::with_capacity(o.items.len());
    for (i, line) in o.items.iter().enumerate() {
        lines.push(json!({
            "item": {"id": format!("{PRODUCT}{}", line_product(o, i, line)?)},
            "quantity": decimal_to_json(line.quantity),
            "rate": decimal_to_json(line.unit_price),
        }));
    }
    if lines.is_empty() {
        return Err(ConnectorError::rejected(
            format!("{what} has no lines"),
            None,
        ));
    }
    Ok(json!({
        "externalId": o.order_number,
        "otherRefNum": truncated(&o.order_number, 45),
        "entity": {"id": format!("{CUSTOMER}{}", customer_of(o.customer_id, &what)?)},
        "tranDate": date(o.created_at),
        "item": {"items": lines},
    }))
}

/// An invoice is made from its order (`!transform/invoice`, so it carries the order's
/// lines) when the order is at NetSuite; otherwise, with `invoice_item_id`, one line for
/// its total on that item.
fn map_invoice(settings: &NetSuiteSettings, inv: &InvoiceRecord) -> Result<Value, ConnectorError> {
    let what = format!("invoice {}", inv.invoice_number);
    let mut invoice = json!({
        "externalId": inv.invoice_number,
        "otherRefNum": truncated(&inv.invoice_number, 45),
        "entity": {"id": format!("{CUSTOMER}{}", customer_of(inv.customer_id, &what)?)},
    });
    if let Some(obj) = invoice.as_object_mut() {
        if let Some(order) = inv.order_id {
            obj.insert(
                "createdFrom".into(),
                json!({"id": format!("{ORDER}{order}")}),
            );
        }
        if let Some(issued) = inv.issued_at {
            obj.insert("tranDate".into(), json!(date(issued)));
        }
        if let Some(due) = inv.due_at {
            obj.insert("dueDate".into(), json!(date(due)));
        }
        if let Some(item) = &settings.invoice_item_id {
            obj.insert(
                "item".into(),
                json!({"items": [{"item": {"id": item}, "quantity": 1, "rate": decimal_to_json(inv.total_amount)}]}),
            );
        }
    }
    Ok(invoice)
}

/// What a record refers to: an order its customer and products, an invoice its customer
/// and its order (which it is made from).
pub(super) fn references(record: &PlatformRecord) -> Vec<Reference> {
    let mut references = record.references();
    if let PlatformRecord::Invoice(inv) = record
        && let Some(order) = inv.order_id
    {
        references.push((MappingEntityType::Order, order.to_string()));
    }
    references
}

/// The internal id a placeholder stands for, when its record is at NetSuite.
fn lookup(op: &ExportOp, placeholder: &str) -> Option<Option<String>> {
    let (kind, id) = [
        (CUSTOMER, MappingEntityType::Customer),
        (PRODUCT, MappingEntityType::Product),
        (ORDER, MappingEntityType::Order),
    ]
    .into_iter()
    .find_map(|(prefix, kind)| placeholder.strip_prefix(prefix).map(|id| (kind, id)))?;
    Some(op.references.get(&(kind, id.to_owned())).cloned())
}

/// The values with every `{"id": "platform-…"}` replaced by the internal id; a required link
/// to a record not at NetSuite rejects this one. `createdFrom` is optional: without its order
/// the invoice stands alone (and needs `invoice_item_id`).
pub(super) fn resolve(op: &ExportOp) -> Result<Value, ConnectorError> {
    fn walk(value: &mut Value, op: &ExportOp, key: Option<&str>) -> Result<bool, ConnectorError> {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(placeholder)) = map.get("id")
                    && let Some(found) = lookup(op, placeholder)
                {
                    return match found {
                        Some(internal) => {
                            map.insert("id".into(), Value::String(internal));
                            Ok(true)
                        }
                        None if key == Some("createdFrom") => Ok(false),
                        None => {
                            let what = placeholder
                                .trim_start_matches("platform-")
                                .replace(':', " ");
                            Err(ConnectorError::rejected(
                                format!(
                                    "{what} is not in NetSuite yet; sync it first (enable its entity on this integration)"
                                ),
                                None,
                            ))
                        }
                    };
                }
                let mut drop = Vec::new();
                for (k, v) in map.iter_mut() {
                    if !walk(v, op, Some(k))? {
                        drop.push(k.clone());
                    }
                }
                for k in drop {
                    map.remove(&k);
                }
                Ok(true)
            }
            Value::Array(items) => {
                for item in items {
                    walk(item, op, None)?;
                }
                Ok(true)
            }
            _ => Ok(true),
        }
    }
    let mut values = op.payload.clone();
    walk(&mut values, op, None)?;
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use rust_decimal::Decimal;
    use std::collections::HashMap;

    fn op(payload: Value, references: HashMap<Reference, String>) -> ExportOp {
        ExportOp {
            internal_id: "9".into(),
            external_id: None,
            payload,
            idempotency_key: "k".into(),
            retried_create: false,
            intent_recorded_at: None,
            mapping_metadata: serde_json::Map::new(),
            references,
        }
    }

    fn invoice(order_id: Option<i64>) -> PlatformRecord {
        let t = Utc.with_ymd_and_hms(2026, 11, 2, 10, 0, 0).unwrap();
        PlatformRecord::Invoice(InvoiceRecord {
            id: 9,
            invoice_number: "INV-9".into(),
            order_id,
            order_number: None,
            customer_id: Some(3),
            customer_email: None,
            status: "issued".into(),
            currency: "EUR".into(),
            total_amount: Decimal::new(1999, 2),
            issued_at: Some(t),
            due_at: None,
            updated_at: t,
        })
    }

    #[test]
    fn an_invoice_names_its_order_when_it_is_at_netsuite_and_stands_alone_otherwise() {
        let ctx = crate::test_context();
        let settings = NetSuiteSettings::parse(
            Some(&json!({"account_id": "123", "time_zone": "UTC"})),
            &ctx,
        )
        .unwrap();
        let record = invoice(Some(5));
        assert_eq!(
            references(&record),
            vec![
                (MappingEntityType::Customer, "3".to_owned()),
                (MappingEntityType::Order, "5".to_owned())
            ]
        );
        let vals = map_record(&settings, &record).unwrap();
        let both = HashMap::from([
            ((MappingEntityType::Customer, "3".into()), "41".into()),
            ((MappingEntityType::Order, "5".into()), "77".into()),
        ]);
        let resolved = resolve(&op(vals.clone(), both)).unwrap();
        assert_eq!(resolved["createdFrom"], json!({"id": "77"}));
        assert_eq!(resolved["entity"], json!({"id": "41"}));
        let no_order = HashMap::from([((MappingEntityType::Customer, "3".into()), "41".into())]);
        let alone = resolve(&op(vals.clone(), no_order)).unwrap();
        assert!(alone.get("createdFrom").is_none(), "{alone}");
        let e = resolve(&op(vals, HashMap::new())).unwrap_err();
        assert!(
            e.to_string().contains("customer 3 is not in NetSuite yet"),
            "{e}"
        );
    }
}
