//! Platform records as Dataverse rows (pure). References to other rows are placeholders
//! ([`resolve_references`] turns them into `@odata.bind` paths once their ids are known);
//! a document's lines travel in its payload until the export sends them to their table.

use super::DynamicsSettings;
use crate::mapping::{customer_of, line_product, truncated};
use crate::{ConnectorError, ExportOp};
use passerelle_core::MappingEntityType;
use passerelle_core::platform::{
    CustomerRecord, InvoiceRecord, OrderRecord, PlatformRecord, ProductRecord, decimal_to_json,
};
use serde_json::{Map, Value, json};

/// Prefix of `accountnumber`, our reference for a customer (Dataverse holds 20 characters).
const ACCOUNT_PREFIX: &str = "PAS-";
const ACCOUNT_NUMBER_MAX: usize = 20;
/// Placeholders the mapping leaves for the Dataverse ids of referenced records.
const CUSTOMER_PLACEHOLDER: &str = "platform-customer:";
const PRODUCT_PLACEHOLDER: &str = "platform-product:";
/// Where a document's payload keeps its lines (the name of the document → line navigation
/// property); they are sent to the line table after the document itself.
pub(super) const ORDER_LINES: &str = "order_details";
pub(super) const INVOICE_LINES: &str = "invoice_details";

/// A customer's reference at Dataverse (`accountnumber`).
pub fn account_number(customer_id: i64) -> String {
    format!("{ACCOUNT_PREFIX}{customer_id}")
}

/// The platform record as a Dataverse row. Pure.
pub fn map_record(
    settings: &DynamicsSettings,
    record: &PlatformRecord,
) -> Result<Value, ConnectorError> {
    match record {
        PlatformRecord::Customer(c) => map_customer(c),
        PlatformRecord::Product(p) => map_product(settings, p),
        PlatformRecord::Order(o) => map_order(settings, o),
        PlatformRecord::Invoice(inv) => map_invoice(settings, inv),
        other => Err(ConnectorError::fatal(format!(
            "the dynamics_365 connector does not export {} (stock lives outside core Dataverse)",
            other.entity()
        ))),
    }
}

/// A document number longer than Dataverse's 100-character column (`what`: "order").
fn number_too_long(what: &str, number: &str, column: &str) -> Option<ConnectorError> {
    (number.chars().count() > 100).then(|| {
        ConnectorError::rejected(
            format!("{what} number `{number}` is longer than Dataverse's 100-character {column}"),
            None,
        )
    })
}

fn map_customer(c: &CustomerRecord) -> Result<Value, ConnectorError> {
    let number = account_number(c.id);
    if number.chars().count() > ACCOUNT_NUMBER_MAX {
        return Err(ConnectorError::rejected(
            format!("account number {number} is longer than Dataverse's 20 characters"),
            None,
        ));
    }
    let mut account = Map::new();
    account.insert(
        "name".into(),
        json!(truncated(c.company_name.as_deref().unwrap_or(&c.name), 160)),
    );
    account.insert("accountnumber".into(), json!(number));
    account.insert("emailaddress1".into(), json!(c.email));
    // Not cut: a shortened phone number is a wrong number. Dataverse refuses more
    // than 50 characters and the record is logged.
    account.insert("telephone1".into(), json!(c.phone));
    let mut notes = Vec::new();
    if c.company_name.is_some() {
        notes.push(format!("Contact: {}", c.name));
    }
    if let Some(vat) = &c.vat_number {
        notes.push(format!("VAT {vat}"));
    }
    account.insert(
        "description".into(),
        if notes.is_empty() {
            Value::Null
        } else {
            json!(notes.join("\n"))
        },
    );
    Ok(Value::Object(account))
}

fn map_product(settings: &DynamicsSettings, p: &ProductRecord) -> Result<Value, ConnectorError> {
    let (Some(schedule), Some(unit)) = (settings.default_uom_schedule_id, settings.default_uom_id)
    else {
        return Err(ConnectorError::rejected(
            "Dataverse products need a unit group and a default unit: set settings.default_uom_schedule_id and settings.default_uom_id",
            None,
        ));
    };
    if p.sku.chars().count() > 100 {
        return Err(ConnectorError::rejected(
            format!(
                "SKU `{}` is longer than Dataverse's 100-character productnumber",
                p.sku
            ),
            None,
        ));
    }
    Ok(json!({
        "name": truncated(&p.name, 100),
        "productnumber": p.sku,
        "description": p.description.as_deref().map(|d| truncated(d, 2000)),
        "price": decimal_to_json(p.price.round_dp(4)),
        "defaultuomscheduleid@odata.bind": format!("/uomschedules({schedule})"),
        "defaultuomid@odata.bind": format!("/uoms({unit})"),
    }))
}

fn map_order(settings: &DynamicsSettings, o: &OrderRecord) -> Result<Value, ConnectorError> {
    let price_list = settings.price_list_id.ok_or_else(|| {
        ConnectorError::rejected(
            "Dataverse sales orders need a price list: set settings.price_list_id",
            None,
        )
    })?;
    let unit = settings.default_uom_id.ok_or_else(|| {
        ConnectorError::rejected(
            "Dataverse order lines need a unit: set settings.default_uom_id",
            None,
        )
    })?;
    if let Some(e) = number_too_long("order", &o.order_number, "ordernumber") {
        return Err(e);
    }
    let customer = customer_of(o.customer_id, &format!("order {}", o.order_number))?;
    let mut lines = Vec::with_capacity(o.items.len());
    for (i, line) in o.items.iter().enumerate() {
        let product = line_product(o, i, line)?;
        lines.push(json!({
            "lineitemnumber": i + 1,
            "productid@odata.bind": format!("{PRODUCT_PLACEHOLDER}{product}"),
            "uomid@odata.bind": format!("/uoms({unit})"),
            "quantity": decimal_to_json(line.quantity),
            "priceperunit": decimal_to_json(line.unit_price),
            "ispriceoverridden": true,
        }));
    }
    Ok(json!({
        "name": truncated(&format!("Order {}", o.order_number), 300),
        "ordernumber": o.order_number,
        "description": format!("Platform order {} ({})", o.order_number, o.status),
        "customerid_account@odata.bind": format!("{CUSTOMER_PLACEHOLDER}{customer}"),
        "pricelevelid@odata.bind": format!("/pricelevels({price_list})"),
        ORDER_LINES: lines,
    }))
}

fn map_invoice(settings: &DynamicsSettings, inv: &InvoiceRecord) -> Result<Value, ConnectorError> {
    let price_list = settings.price_list_id.ok_or_else(|| {
        ConnectorError::rejected(
            "Dataverse invoices need a price list: set settings.price_list_id",
            None,
        )
    })?;
    if let Some(e) = number_too_long("invoice", &inv.invoice_number, "invoicenumber") {
        return Err(e);
    }
    let customer = customer_of(inv.customer_id, &format!("invoice {}", inv.invoice_number))?;
    let mut description = format!("Platform invoice {} ({})", inv.invoice_number, inv.status);
    if let Some(order) = &inv.order_number {
        description.push_str(&format!(", order {order}"));
    }
    let mut invoice = json!({
        "name": truncated(&format!("Invoice {}", inv.invoice_number), 300),
        "invoicenumber": inv.invoice_number,
        "description": description,
        "customerid_account@odata.bind": format!("{CUSTOMER_PLACEHOLDER}{customer}"),
        "pricelevelid@odata.bind": format!("/pricelevels({price_list})"),
        // One write-in line for the total: the platform's invoice has no lines.
        INVOICE_LINES: [{
            "lineitemnumber": 1,
            "isproductoverridden": true,
            "productdescription": truncated(&format!("Invoice {}", inv.invoice_number), 500),
            "quantity": 1,
            "priceperunit": decimal_to_json(inv.total_amount),
            "ispriceoverridden": true,
        }],
    });
    if let Some(due) = inv.due_at {
        invoice["duedate"] = json!(due.format("%Y-%m-%d").to_string());
    }
    Ok(invoice)
}

/// Replaces the placeholders the mapping left with the Dataverse ids of the records this one
/// refers to (`op.references`); a record not at Dataverse yet rejects this one.
pub fn resolve_references(op: &ExportOp) -> Result<Value, ConnectorError> {
    fn fill(value: &mut Value, op: &ExportOp) -> Result<(), ConnectorError> {
        match value {
            Value::String(text) => {
                for (prefix, kind, set, what) in [
                    (
                        CUSTOMER_PLACEHOLDER,
                        MappingEntityType::Customer,
                        "accounts",
                        "customer",
                    ),
                    (
                        PRODUCT_PLACEHOLDER,
                        MappingEntityType::Product,
                        "products",
                        "product",
                    ),
                ] {
                    if let Some(id) = text.strip_prefix(prefix) {
                        let external = op.references.get(&(kind, id.to_owned())).ok_or_else(|| {
                            ConnectorError::rejected(
                                format!("{what} {id} is not in Dynamics 365 yet; sync {what}s first (enable them on this integration)"),
                                None,
                            )
                        })?;
                        *text = format!("/{set}({external})");
                        break;
                    }
                }
                Ok(())
            }
            Value::Array(items) => items.iter_mut().try_for_each(|v| fill(v, op)),
            Value::Object(map) => map.values_mut().try_for_each(|v| fill(v, op)),
            _ => Ok(()),
        }
    }
    let mut payload = op.payload.clone();
    fill(&mut payload, op)?;
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Connector;
    use crate::dynamics::tests::{connector, customer, settings};
    use chrono::Utc;
    use passerelle_core::platform::OrderLine;
    use rust_decimal::Decimal;
    use uuid::Uuid;

    #[test]
    fn a_customer_becomes_an_account_keyed_by_our_reference() {
        let s = settings(json!({})).unwrap();
        let account = map_record(&s, &PlatformRecord::Customer(customer())).unwrap();
        assert_eq!(
            account,
            json!({
                "name": "Buyer SARL",
                "accountnumber": "PAS-42",
                "emailaddress1": "ann@buyer.example",
                "telephone1": "+33 1 23",
                "description": "Contact: Ann Buyer\nVAT FR123",
            })
        );
        let mut plain = customer();
        plain.company_name = None;
        plain.vat_number = None;
        plain.phone = None;
        let account = map_record(&s, &PlatformRecord::Customer(plain)).unwrap();
        assert_eq!(account["name"], "Ann Buyer");
        assert_eq!(account["telephone1"], Value::Null);
        assert_eq!(account["description"], Value::Null);
    }

    #[test]
    fn a_product_binds_the_configured_units_or_is_rejected_without_them() {
        let product = PlatformRecord::Product(ProductRecord {
            id: 7,
            sku: "SKU-7".into(),
            name: "Oak pallet".into(),
            description: Some("Wholesale unit".into()),
            price: Decimal::new(12_3450, 4),
            currency: "EUR".into(),
            active: true,
            updated_at: Utc::now(),
        });
        let missing = map_record(&settings(json!({})).unwrap(), &product).unwrap_err();
        assert!(matches!(missing, ConnectorError::Rejected { .. }));
        let (g, u) = (Uuid::new_v4(), Uuid::new_v4());
        let s = settings(
            json!({"default_uom_schedule_id": g.to_string(), "default_uom_id": u.to_string()}),
        )
        .unwrap();
        assert_eq!(
            map_record(&s, &product).unwrap(),
            json!({
                "name": "Oak pallet",
                "productnumber": "SKU-7",
                "description": "Wholesale unit",
                "price": 12.345,
                "defaultuomscheduleid@odata.bind": format!("/uomschedules({g})"),
                "defaultuomid@odata.bind": format!("/uoms({u})"),
            })
        );
    }

    fn order() -> OrderRecord {
        OrderRecord {
            id: 1,
            order_number: "O-1".into(),
            customer_id: Some(42),
            customer_email: None,
            status: "confirmed".into(),
            currency: "EUR".into(),
            total_amount: Decimal::new(25, 0),
            items: vec![
                OrderLine {
                    product_id: Some(7),
                    sku: Some("SKU-7".into()),
                    quantity: Decimal::new(2, 0),
                    unit_price: Decimal::new(1050, 2),
                },
                OrderLine {
                    product_id: Some(8),
                    sku: Some("SKU-8".into()),
                    quantity: Decimal::ONE,
                    unit_price: Decimal::new(4, 0),
                },
            ],
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn an_order_becomes_a_sales_order_with_lines_and_references_resolved() {
        let (pl, u) = (Uuid::new_v4(), Uuid::new_v4());
        let s = settings(json!({"price_list_id": pl.to_string(), "default_uom_id": u.to_string()}))
            .unwrap();
        let record = PlatformRecord::Order(order());
        let payload = map_record(&s, &record).unwrap();
        assert_eq!(payload["ordernumber"], "O-1");
        assert_eq!(
            payload["pricelevelid@odata.bind"],
            format!("/pricelevels({pl})")
        );
        assert_eq!(payload["order_details"][0]["priceperunit"], json!(10.5));
        assert_eq!(payload["order_details"][1]["lineitemnumber"], json!(2));
        assert_eq!(
            payload["order_details"][1]["uomid@odata.bind"],
            format!("/uoms({u})")
        );
        let connector = connector(s.clone());
        let references = connector.references(&record);
        assert_eq!(
            references,
            vec![
                (MappingEntityType::Customer, "42".to_owned()),
                (MappingEntityType::Product, "7".to_owned()),
                (MappingEntityType::Product, "8".to_owned()),
            ]
        );
        let (account, p7) = (Uuid::new_v4(), Uuid::new_v4());
        let mut op = ExportOp {
            internal_id: "1".into(),
            external_id: None,
            payload,
            idempotency_key: "k".into(),
            retried_create: false,
            intent_recorded_at: None,
            mapping_metadata: serde_json::Map::new(),
            references: [
                (
                    (MappingEntityType::Customer, "42".to_owned()),
                    account.to_string(),
                ),
                ((MappingEntityType::Product, "7".to_owned()), p7.to_string()),
            ]
            .into_iter()
            .collect(),
        };
        // Product 8 is not at Dataverse yet: the order waits.
        assert!(matches!(
            resolve_references(&op),
            Err(ConnectorError::Rejected { .. })
        ));
        op.references.insert(
            (MappingEntityType::Product, "8".to_owned()),
            Uuid::new_v4().to_string(),
        );
        let resolved = resolve_references(&op).unwrap();
        assert_eq!(
            resolved["customerid_account@odata.bind"],
            format!("/accounts({account})")
        );
        assert_eq!(
            resolved["order_details"][0]["productid@odata.bind"],
            format!("/products({p7})")
        );
        // Without a price list the order is refused with the setting named.
        let e = map_record(&settings(json!({})).unwrap(), &record).unwrap_err();
        assert!(e.to_string().contains("price_list_id"));
    }

    #[test]
    fn an_invoice_becomes_an_invoice_with_one_write_in_line_for_its_total() {
        let invoice = PlatformRecord::Invoice(InvoiceRecord {
            id: 1,
            invoice_number: "I-1".into(),
            order_id: None,
            order_number: None,
            customer_id: Some(1),
            customer_email: None,
            status: "issued".into(),
            currency: "EUR".into(),
            total_amount: Decimal::ONE,
            issued_at: None,
            due_at: Some(Utc::now()),
            updated_at: Utc::now(),
        });
        let e = map_record(&settings(json!({})).unwrap(), &invoice).unwrap_err();
        assert!(e.to_string().contains("price_list_id"), "{e}");
        let pl = Uuid::new_v4();
        let s = settings(json!({"price_list_id": pl.to_string()})).unwrap();
        let payload = map_record(&s, &invoice).unwrap();
        assert_eq!(payload["invoicenumber"], "I-1");
        assert_eq!(
            payload["customerid_account@odata.bind"],
            "platform-customer:1"
        );
        assert_eq!(payload["duedate"].as_str().map(str::len), Some(10));
        assert_eq!(
            payload["invoice_details"],
            json!([{"lineitemnumber": 1, "isproductoverridden": true, "productdescription": "Invoice I-1",
                    "quantity": 1, "priceperunit": 1, "ispriceoverridden": true}])
        );
        let stock = PlatformRecord::Inventory(passerelle_core::platform::InventoryRecord {
            product_id: 1,
            sku: "S".into(),
            warehouse_code: "W".into(),
            quantity: Decimal::ONE,
            updated_at: Utc::now(),
        });
        assert!(matches!(
            map_record(&s, &stock),
            Err(ConnectorError::Fatal { .. })
        ));
    }
}
