//! Platform records as Odoo values (pure): `product.product`, `res.partner`, `sale.order`
//! and `account.move` vals. Links to other records (an order's partner and products) are
//! placeholders [`resolve`] replaces with the ids their mappings hold.

use super::OdooSettings;
use crate::mapping::{customer_of, date, line_product, truncated};
use crate::{ConnectorError, ExportOp};
use passerelle_core::platform::{
    CustomerRecord, InvoiceRecord, OrderRecord, PlatformRecord, ProductRecord, decimal_to_json,
};
use passerelle_core::{Entity, MappingEntityType};
use serde_json::{Value, json};

const CUSTOMER_PLACEHOLDER: &str = "platform-customer:";
const PRODUCT_PLACEHOLDER: &str = "platform-product:";

/// Which model an entity is written to, and the field holding our reference in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Target {
    pub model: &'static str,
    pub reference: &'static str,
    /// The one2many of its lines, replaced on update.
    pub lines: Option<&'static str>,
    /// Extra domain a lookup by reference needs (`move_type`).
    pub kind: Option<(&'static str, &'static str)>,
}

pub(super) fn target(entity: Entity) -> Option<Target> {
    let (model, reference, lines, kind) = match entity {
        Entity::Product => ("product.product", "default_code", None, None),
        Entity::Customer => ("res.partner", "ref", None, None),
        Entity::Order => ("sale.order", "client_order_ref", Some("order_line"), None),
        Entity::Invoice => (
            "account.move",
            "ref",
            Some("invoice_line_ids"),
            Some(("move_type", "out_invoice")),
        ),
        Entity::Inventory => return None,
    };
    Some(Target {
        model,
        reference,
        lines,
        kind,
    })
}

/// Odoo's datetime format (UTC).
pub(super) fn datetime(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

pub(super) fn map_record(
    settings: &OdooSettings,
    record: &PlatformRecord,
) -> Result<Value, ConnectorError> {
    match record {
        PlatformRecord::Product(p) => Ok(map_product(p)),
        PlatformRecord::Customer(c) => Ok(map_customer(settings, c)),
        PlatformRecord::Order(o) => map_order(o),
        PlatformRecord::Invoice(inv) => map_invoice(inv),
        PlatformRecord::Inventory(_) => Err(ConnectorError::fatal(
            "Odoo stock moves through inventory operations: inventory can be imported, not exported",
        )),
    }
}

/// A storable product. `is_storable` is Odoo 18's; the export turns it into `type`
/// `product` for Odoo 17 and earlier (see [`adapt_to_version`]).
fn map_product(p: &ProductRecord) -> Value {
    let mut vals = json!({
        "name": p.name,
        "default_code": p.sku,
        "list_price": decimal_to_json(p.price),
        "active": p.active,
        "type": "consu",
        "is_storable": true,
    });
    if let (Some(obj), Some(description)) = (vals.as_object_mut(), &p.description) {
        obj.insert("description_sale".into(), json!(description));
    }
    vals
}

pub(super) fn customer_ref(settings: &OdooSettings, customer_id: i64) -> String {
    format!("{}{customer_id}", settings.customer_ref_prefix)
}

fn map_customer(settings: &OdooSettings, c: &CustomerRecord) -> Value {
    let mut vals = json!({
        "name": c.name,
        "email": c.email,
        "ref": customer_ref(settings, c.id),
        "customer_rank": 1,
    });
    if let Some(obj) = vals.as_object_mut() {
        for (field, value) in [
            ("phone", &c.phone),
            ("vat", &c.vat_number),
            ("company_name", &c.company_name),
        ] {
            if let Some(value) = value {
                obj.insert(field.into(), json!(value));
            }
        }
    }
    vals
}

fn map_order(o: &OrderRecord) -> Result<Value, ConnectorError> {
    let what = format!("order {}", o.order_number);
    let mut lines = Vec::with_capacity(o.items.len());
    for (i, line) in o.items.iter().enumerate() {
        let product = line_product(o, i, line)?;
        lines.push(json!([0, 0, {
            "product_id": format!("{PRODUCT_PLACEHOLDER}{product}"),
            "product_uom_qty": decimal_to_json(line.quantity),
            "price_unit": decimal_to_json(line.unit_price),
        }]));
    }
    if lines.is_empty() {
        return Err(ConnectorError::rejected(
            format!("{what} has no lines"),
            None,
        ));
    }
    Ok(json!({
        "partner_id": format!("{CUSTOMER_PLACEHOLDER}{}", customer_of(o.customer_id, &what)?),
        "client_order_ref": o.order_number,
        "date_order": datetime(o.created_at),
        "order_line": lines,
    }))
}

/// The platform keeps an invoice's total, not its lines: one line for the total.
fn map_invoice(inv: &InvoiceRecord) -> Result<Value, ConnectorError> {
    let what = format!("invoice {}", inv.invoice_number);
    let mut vals = json!({
        "move_type": "out_invoice",
        "partner_id": format!("{CUSTOMER_PLACEHOLDER}{}", customer_of(inv.customer_id, &what)?),
        "ref": inv.invoice_number,
        "invoice_line_ids": [[0, 0, {
            "name": truncated(&format!("Invoice {}", inv.invoice_number), 200),
            "quantity": 1,
            "price_unit": decimal_to_json(inv.total_amount),
        }]],
    });
    if let Some(obj) = vals.as_object_mut() {
        if let Some(issued) = inv.issued_at {
            obj.insert("invoice_date".into(), json!(date(issued)));
        }
        if let Some(due) = inv.due_at {
            obj.insert("invoice_date_due".into(), json!(date(due)));
        }
    }
    Ok(vals)
}

/// The op's values with its placeholders replaced by the Odoo ids of the records it refers
/// to; one not at Odoo yet rejects this record with what to sync first.
pub(super) fn resolve(op: &ExportOp) -> Result<Value, ConnectorError> {
    let mut vals = op.payload.clone();
    let lookup = |value: &Value| -> Result<Option<Value>, ConnectorError> {
        let Some(text) = value.as_str() else {
            return Ok(None);
        };
        let (kind, id, what) = if let Some(id) = text.strip_prefix(CUSTOMER_PLACEHOLDER) {
            (MappingEntityType::Customer, id, "customer")
        } else if let Some(id) = text.strip_prefix(PRODUCT_PLACEHOLDER) {
            (MappingEntityType::Product, id, "product")
        } else {
            return Ok(None);
        };
        let external = op.references.get(&(kind, id.to_owned())).ok_or_else(|| {
            ConnectorError::rejected(
                format!("{what} {id} is not in Odoo yet; sync {what}s first (enable them on this integration)"),
                None,
            )
        })?;
        let odoo_id: i64 = external.parse().map_err(|_| {
            ConnectorError::fatal(format!(
                "the mapping of {what} {id} holds {external:?}, not an Odoo record id"
            ))
        })?;
        Ok(Some(json!(odoo_id)))
    };
    if let Some(partner) = vals.get("partner_id")
        && let Some(id) = lookup(partner)?
    {
        vals["partner_id"] = id;
    }
    if let Some(lines) = vals.get_mut("order_line").and_then(Value::as_array_mut) {
        for line in lines {
            if let Some(product) = line.pointer("/2/product_id")
                && let Some(id) = lookup(product)?
            {
                line[2]["product_id"] = id;
            }
        }
    }
    Ok(vals)
}

/// Values written for a server of `version`: Odoo 17 and earlier have no `is_storable`
/// (a storable product is `type` `product` there).
pub(super) fn adapt_to_version(model: &str, mut vals: Value, version: u32) -> Value {
    if model == "product.product"
        && version < 18
        && let Some(obj) = vals.as_object_mut()
        && let Some(storable) = obj.remove("is_storable")
        && storable == json!(true)
    {
        obj.insert("type".into(), json!("product"));
    }
    vals
}

/// An update's values: the lines (when the target has any) replace Odoo's, rather than
/// being added to them (`[5, 0, 0]` clears the one2many first).
pub(super) fn update_values(target: Target, mut vals: Value) -> Value {
    if let Some(field) = target.lines
        && let Some(lines) = vals.get_mut(field).and_then(Value::as_array_mut)
    {
        lines.insert(0, json!([5, 0, 0]));
    }
    if let Some(obj) = vals.as_object_mut() {
        // The type of a move cannot change once it exists.
        obj.remove("move_type");
    }
    vals
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Connector;
    use chrono::{TimeZone, Utc};
    use passerelle_core::platform::OrderLine;
    use rust_decimal::Decimal;
    use std::collections::HashMap;

    fn order() -> PlatformRecord {
        let t = Utc.with_ymd_and_hms(2026, 11, 2, 10, 0, 0).unwrap();
        PlatformRecord::Order(OrderRecord {
            id: 5,
            order_number: "WH-5".into(),
            customer_id: Some(3),
            customer_email: None,
            status: "confirmed".into(),
            currency: "EUR".into(),
            total_amount: Decimal::new(1999, 2),
            items: vec![OrderLine {
                product_id: Some(12),
                sku: Some("A1".into()),
                quantity: Decimal::new(2, 0),
                unit_price: Decimal::new(999, 2),
            }],
            created_at: t,
            updated_at: t,
        })
    }

    fn op(payload: Value, references: HashMap<crate::Reference, String>) -> ExportOp {
        ExportOp {
            internal_id: "5".into(),
            external_id: None,
            payload,
            idempotency_key: "k".into(),
            retried_create: false,
            intent_recorded_at: None,
            mapping_metadata: serde_json::Map::new(),
            references,
        }
    }

    #[test]
    fn an_order_is_a_sale_order_whose_partner_and_products_resolve_from_their_mappings() {
        let c = super::super::tests::connector("xmlrpc");
        let record = order();
        let vals = c.map_record(&record).unwrap();
        assert_eq!(vals["client_order_ref"], "WH-5");
        assert_eq!(vals["date_order"], "2026-11-02 10:00:00");
        assert_eq!(
            c.references(&record),
            vec![
                (MappingEntityType::Customer, "3".to_owned()),
                (MappingEntityType::Product, "12".to_owned())
            ]
        );
        let refs = HashMap::from([
            ((MappingEntityType::Customer, "3".into()), "41".into()),
            ((MappingEntityType::Product, "12".into()), "7".into()),
        ]);
        let resolved = resolve(&op(vals.clone(), refs)).unwrap();
        assert_eq!(resolved["partner_id"], 41);
        assert_eq!(
            resolved["order_line"],
            json!([[0, 0, {"product_id": 7, "product_uom_qty": 2, "price_unit": 9.99}]])
        );
        let missing = resolve(&op(
            vals,
            HashMap::from([((MappingEntityType::Customer, "3".into()), "41".into())]),
        ))
        .unwrap_err();
        assert!(
            matches!(missing, ConnectorError::Rejected { .. })
                && missing
                    .to_string()
                    .contains("product 12 is not in Odoo yet"),
            "{missing}"
        );
        let updated = update_values(target(Entity::Order).unwrap(), resolved);
        assert_eq!(updated["order_line"][0], json!([5, 0, 0]));
    }

    #[test]
    fn a_storable_product_is_written_as_each_version_spells_it() {
        let t = Utc.with_ymd_and_hms(2026, 11, 2, 10, 0, 0).unwrap();
        let vals = map_product(&ProductRecord {
            id: 1,
            sku: "A1".into(),
            name: "Widget".into(),
            description: None,
            price: Decimal::new(95, 1),
            currency: "EUR".into(),
            active: true,
            updated_at: t,
        });
        assert_eq!(vals["is_storable"], true);
        assert_eq!(adapt_to_version("product.product", vals.clone(), 18), vals);
        let old = adapt_to_version("product.product", vals, 17);
        assert_eq!(old["type"], "product");
        assert!(old.get("is_storable").is_none());
    }
}
