//! Platform records as Sage v3.1 objects (pure): stock items, customer contacts, quotes (or
//! estimates) and sales invoices, unwrapped (the export puts each in its resource's
//! namespace with its `idempotency_id`). Links are placeholders [`resolve`] replaces with
//! the Sage ids the mappings hold.

use super::SageSettings;
use crate::mapping::{customer_of, date, line_product, truncated};
use crate::{ConnectorError, ExportOp};
use passerelle_core::platform::{
    CustomerRecord, InvoiceRecord, OrderRecord, PlatformRecord, ProductRecord, decimal_to_json,
};
use passerelle_core::{Entity, MappingEntityType};
use serde_json::{Map, Value, json};

const CUSTOMER: &str = "platform-customer:";
const PRODUCT: &str = "platform-product:";

/// The resource an entity is written to, its namespace, and the field holding our
/// reference in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Target {
    pub resource: &'static str,
    pub namespace: &'static str,
    pub reference: &'static str,
}

pub(super) fn target(settings: &SageSettings, entity: Entity) -> Option<Target> {
    let (resource, namespace, reference) = match entity {
        Entity::Product => ("stock_items", "stock_item", "item_code"),
        Entity::Customer => ("contacts", "contact", "reference"),
        Entity::Order => {
            let (resource, namespace, _) = settings.order_document.names();
            (resource, namespace, "reference")
        }
        Entity::Invoice => ("sales_invoices", "sales_invoice", "reference"),
        Entity::Inventory => return None,
    };
    Some(Target {
        resource,
        namespace,
        reference,
    })
}

pub(super) fn map_record(
    settings: &SageSettings,
    record: &PlatformRecord,
) -> Result<Value, ConnectorError> {
    match record {
        PlatformRecord::Product(p) => Ok(map_product(settings, p)),
        PlatformRecord::Customer(c) => Ok(map_customer(settings, c)),
        PlatformRecord::Order(o) => map_order(settings, o),
        PlatformRecord::Invoice(inv) => map_invoice(settings, inv),
        PlatformRecord::Inventory(_) => Err(ConnectorError::fatal(
            "Sage stock changes through stock movements: inventory is imported, not exported",
        )),
    }
}

fn map_product(settings: &SageSettings, p: &ProductRecord) -> Value {
    let mut item = json!({
        "item_code": p.sku,
        "description": truncated(&p.name, 200),
        "sales_ledger_account_id": settings.sales_ledger_account_id,
        "purchase_ledger_account_id": settings.purchase_ledger_account_id,
        "active": p.active,
        "sales_prices": [{"price_name": "Selling Price", "price": decimal_to_json(p.price), "price_includes_tax": false}],
    });
    if let (Some(obj), Some(notes)) = (item.as_object_mut(), &p.description) {
        obj.insert("notes".into(), json!(notes));
    }
    item
}

pub(super) fn customer_reference(settings: &SageSettings, id: i64) -> String {
    format!("{}{id}", settings.customer_ref_prefix)
}

fn map_customer(settings: &SageSettings, c: &CustomerRecord) -> Value {
    let mut person = json!({"name": truncated(&c.name, 100), "email": c.email});
    if let (Some(obj), Some(phone)) = (person.as_object_mut(), &c.phone) {
        obj.insert("telephone".into(), json!(phone));
    }
    let mut contact = json!({
        "name": truncated(c.company_name.as_deref().unwrap_or(&c.name), 100),
        "contact_type_ids": ["CUSTOMER"],
        "reference": customer_reference(settings, c.id),
        "main_contact_person": person,
    });
    if let (Some(obj), Some(vat)) = (contact.as_object_mut(), &c.vat_number) {
        obj.insert("tax_number".into(), json!(vat));
    }
    contact
}

/// A line on the sales ledger account, with the tax rate when one is configured.
fn line(settings: &SageSettings, mut fields: Map<String, Value>) -> Value {
    fields.insert(
        "ledger_account_id".into(),
        json!(settings.sales_ledger_account_id),
    );
    if let Some(rate) = &settings.tax_rate_id {
        fields.insert("tax_rate_id".into(), json!(rate));
    }
    Value::Object(fields)
}

fn fields(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn map_order(settings: &SageSettings, o: &OrderRecord) -> Result<Value, ConnectorError> {
    let what = format!("order {}", o.order_number);
    let (_, _, lines_key) = settings.order_document.names();
    let mut lines = Vec::with_capacity(o.items.len());
    for (i, l) in o.items.iter().enumerate() {
        let product = line_product(o, i, l)?;
        lines.push(line(
            settings,
            fields(json!({
                "description": l.sku.clone().unwrap_or_else(|| format!("Line {}", i + 1)),
                "product_id": format!("{PRODUCT}{product}"),
                "quantity": decimal_to_json(l.quantity),
                "unit_price": decimal_to_json(l.unit_price),
            })),
        ));
    }
    if lines.is_empty() {
        return Err(ConnectorError::rejected(
            format!("{what} has no lines"),
            None,
        ));
    }
    let day = o.created_at;
    let expiry = day + chrono::Duration::days(i64::from(settings.quote_validity_days));
    let mut document = json!({
        "contact_id": format!("{CUSTOMER}{}", customer_of(o.customer_id, &what)?),
        "date": date(day),
        "expiry_date": date(expiry),
        "reference": truncated(&o.order_number, 25),
    });
    document[lines_key] = Value::Array(lines);
    Ok(document)
}

/// The platform keeps an invoice's total, not its lines: one line for the total.
fn map_invoice(settings: &SageSettings, inv: &InvoiceRecord) -> Result<Value, ConnectorError> {
    let what = format!("invoice {}", inv.invoice_number);
    let mut invoice = json!({
        "contact_id": format!("{CUSTOMER}{}", customer_of(inv.customer_id, &what)?),
        "date": date(inv.issued_at.unwrap_or(inv.updated_at)),
        "reference": truncated(&inv.invoice_number, 25),
        "invoice_lines": [line(settings, fields(json!({
            "description": truncated(&format!("Invoice {}", inv.invoice_number), 200),
            "quantity": 1,
            "unit_price": decimal_to_json(inv.total_amount),
        })))],
    });
    if let (Some(obj), Some(due)) = (invoice.as_object_mut(), inv.due_at) {
        obj.insert("due_date".into(), json!(date(due)));
    }
    Ok(invoice)
}

/// The object with its placeholders replaced by Sage ids; a link to a record not at Sage yet
/// rejects this one with what to sync first.
pub(super) fn resolve(op: &ExportOp) -> Result<Value, ConnectorError> {
    fn swap(value: &mut Value, op: &ExportOp) -> Result<(), ConnectorError> {
        let Some(text) = value.as_str() else {
            return Ok(());
        };
        let (kind, id, what) = if let Some(id) = text.strip_prefix(CUSTOMER) {
            (MappingEntityType::Customer, id, "customer")
        } else if let Some(id) = text.strip_prefix(PRODUCT) {
            (MappingEntityType::Product, id, "product")
        } else {
            return Ok(());
        };
        let external = op.references.get(&(kind, id.to_owned())).ok_or_else(|| {
            ConnectorError::rejected(
                format!("{what} {id} is not in Sage yet; sync {what}s first (enable them on this integration)"),
                None,
            )
        })?;
        *value = Value::String(external.clone());
        Ok(())
    }
    let mut object = op.payload.clone();
    if let Some(contact) = object.get_mut("contact_id") {
        swap(contact, op)?;
    }
    for key in ["quote_lines", "estimate_lines", "invoice_lines"] {
        if let Some(lines) = object.get_mut(key).and_then(Value::as_array_mut) {
            for l in lines {
                if let Some(product) = l.get_mut("product_id") {
                    swap(product, op)?;
                }
            }
        }
    }
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use passerelle_core::platform::OrderLine;
    use rust_decimal::Decimal;
    use std::collections::HashMap;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn an_order_is_a_quote_valid_for_the_configured_days_with_links_resolved() {
        let settings = SageSettings::parse(
            Some(&json!({"business_id": ID, "sales_ledger_account_id": ID, "purchase_ledger_account_id": ID, "quote_validity_days": 14})),
            &crate::test_context(),
        )
        .unwrap();
        let t = Utc.with_ymd_and_hms(2026, 11, 2, 10, 0, 0).unwrap();
        let order = PlatformRecord::Order(OrderRecord {
            id: 5,
            order_number: "WH-5".into(),
            customer_id: Some(3),
            customer_email: None,
            status: "confirmed".into(),
            currency: "GBP".into(),
            total_amount: Decimal::new(1999, 2),
            items: vec![OrderLine {
                product_id: Some(12),
                sku: Some("A1".into()),
                quantity: Decimal::new(2, 0),
                unit_price: Decimal::new(999, 2),
            }],
            created_at: t,
            updated_at: t,
        });
        let vals = map_record(&settings, &order).unwrap();
        assert_eq!(
            (vals["date"].as_str(), vals["expiry_date"].as_str()),
            (Some("2026-11-02"), Some("2026-11-16"))
        );
        let op = ExportOp {
            internal_id: "5".into(),
            external_id: None,
            payload: vals,
            idempotency_key: "k".into(),
            retried_create: false,
            intent_recorded_at: None,
            mapping_metadata: Map::new(),
            references: HashMap::from([
                ((MappingEntityType::Customer, "3".into()), "c0ffee".into()),
                ((MappingEntityType::Product, "12".into()), "beef".into()),
            ]),
        };
        let resolved = resolve(&op).unwrap();
        assert_eq!(resolved["contact_id"], "c0ffee");
        assert_eq!(resolved["quote_lines"][0]["product_id"], "beef");
        assert_eq!(resolved["quote_lines"][0]["ledger_account_id"], ID);
    }
}
