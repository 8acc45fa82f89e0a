//! Platform records as Service Layer entities: Items, BusinessPartners, Orders and Invoices
//! (pure). A document names its customer by the CardCode its mapping holds.

use super::{InvoiceLines, SapB1Connector};
use crate::ConnectorError;
use crate::mapping::{customer_of, date, line_sku, truncated};
use passerelle_core::platform::{
    CustomerRecord, InvoiceRecord, OrderRecord, PlatformRecord, ProductRecord, decimal_to_json,
};
use serde_json::{Value, json};

/// OCRD.CardCode is nvarchar(15).
const CARD_CODE_MAX: usize = 15;

impl SapB1Connector {
    fn card_code(&self, customer_id: i64) -> String {
        truncated(
            &format!("{}{customer_id}", self.settings.card_code_prefix),
            CARD_CODE_MAX,
        )
    }

    /// The CardCode of a document's customer (`what`: "order WH-7").
    fn card(&self, customer_id: Option<i64>, what: &str) -> Result<String, ConnectorError> {
        customer_of(customer_id, what).map(|id| self.card_code(id))
    }

    pub(super) fn map(&self, record: &PlatformRecord) -> Result<Value, ConnectorError> {
        match record {
            PlatformRecord::Product(p) => self.map_product(p),
            PlatformRecord::Customer(c) => Ok(self.map_customer(c)),
            PlatformRecord::Order(o) => self.map_order(o),
            PlatformRecord::Invoice(inv) => self.map_invoice(inv),
            PlatformRecord::Inventory(_) => Err(ConnectorError::fatal(
                "SAP Business One stock moves through inventory documents: inventory can be imported, not exported",
            )),
        }
    }

    fn map_product(&self, p: &ProductRecord) -> Result<Value, ConnectorError> {
        if p.sku.chars().count() > 50 {
            return Err(ConnectorError::rejected(
                format!("SKU {} is longer than SAP's 50-character ItemCode", p.sku),
                None,
            ));
        }
        let mut item = json!({
            "ItemCode": p.sku,
            "ItemName": truncated(&p.name, 200),
            "SalesItem": "tYES",
            "Valid": if p.active { "tYES" } else { "tNO" },
            "Frozen": if p.active { "tNO" } else { "tYES" },
            "ItemPrices": [{
                "PriceList": self.settings.price_list,
                "Price": decimal_to_json(p.price),
                "Currency": p.currency.trim(),
            }],
        });
        if let (Some(obj), Some(description)) = (item.as_object_mut(), &p.description) {
            obj.insert("User_Text".into(), json!(description));
        }
        Ok(item)
    }

    fn map_customer(&self, c: &CustomerRecord) -> Value {
        let mut partner = json!({
            "CardCode": self.card_code(c.id),
            "CardName": truncated(c.company_name.as_deref().unwrap_or(&c.name), 100),
            "CardType": "cCustomer",
            "EmailAddress": truncated(&c.email, 100),
        });
        if let Some(obj) = partner.as_object_mut() {
            if let Some(phone) = &c.phone {
                obj.insert("Phone1".into(), json!(truncated(phone, 20)));
            }
            if let Some(vat) = &c.vat_number {
                obj.insert("FederalTaxID".into(), json!(truncated(vat, 32)));
            }
        }
        partner
    }

    fn map_order(&self, o: &OrderRecord) -> Result<Value, ConnectorError> {
        let mut lines = Vec::with_capacity(o.items.len());
        for (i, line) in o.items.iter().enumerate() {
            lines.push(json!({
                "ItemCode": line_sku(o, i, line)?,
                "Quantity": decimal_to_json(line.quantity),
                "UnitPrice": decimal_to_json(line.unit_price),
                "WarehouseCode": self.settings.warehouse_code,
            }));
        }
        if lines.is_empty() {
            return Err(ConnectorError::rejected(
                format!("order {} has no lines", o.order_number),
                None,
            ));
        }
        Ok(json!({
            "CardCode": self.card(o.customer_id, &format!("order {}", o.order_number))?,
            "NumAtCard": o.order_number,
            "DocDate": date(o.created_at),
            // A sales order needs its delivery date; the platform has none.
            "DocDueDate": date(o.created_at),
            "DocCurrency": o.currency.trim(),
            "DocumentLines": lines,
        }))
    }

    fn map_invoice(&self, inv: &InvoiceRecord) -> Result<Value, ConnectorError> {
        // The platform keeps an invoice's total, not its lines: one row for the total.
        let description = truncated(&format!("Invoice {}", inv.invoice_number), 100);
        let (doc_type, line) = match &self.settings.invoice_lines {
            InvoiceLines::Service { account_code } => (
                "dDocument_Service",
                json!({
                    "ItemDescription": description,
                    "AccountCode": account_code,
                    "LineTotal": decimal_to_json(inv.total_amount),
                }),
            ),
            InvoiceLines::Items {
                item_code,
                account_code,
            } => {
                let mut line = json!({
                    "ItemCode": item_code,
                    "ItemDescription": description,
                    "Quantity": 1,
                    "UnitPrice": decimal_to_json(inv.total_amount),
                    "WarehouseCode": self.settings.warehouse_code,
                });
                if let (Some(obj), Some(account)) = (line.as_object_mut(), account_code) {
                    obj.insert("AccountCode".into(), json!(account));
                }
                ("dDocument_Items", line)
            }
        };
        let mut invoice = json!({
            "CardCode": self.card(inv.customer_id, &format!("invoice {}", inv.invoice_number))?,
            "NumAtCard": inv.invoice_number,
            "DocType": doc_type,
            "DocCurrency": inv.currency.trim(),
            "DocumentLines": [line],
        });
        if let Some(obj) = invoice.as_object_mut() {
            if let Some(issued) = inv.issued_at {
                obj.insert("DocDate".into(), json!(date(issued)));
            }
            if let Some(due) = inv.due_at {
                obj.insert("DocDueDate".into(), json!(date(due)));
            }
            if let Some(order) = &inv.order_number {
                obj.insert("Comments".into(), json!(format!("Order {order}")));
            }
        }
        Ok(invoice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Connector;
    use crate::sap_b1::tests::{connector, t};
    use passerelle_core::platform::OrderLine;
    use rust_decimal::Decimal;
    use std::str::FromStr;

    #[test]
    fn invoices_map_to_a_service_row_on_the_account_or_an_item_row() {
        let invoice = PlatformRecord::Invoice(InvoiceRecord {
            id: 3,
            invoice_number: "INV-3".into(),
            order_id: None,
            order_number: None,
            customer_id: Some(42),
            customer_email: None,
            status: "issued".into(),
            currency: "EUR".into(),
            total_amount: Decimal::from_str("25.5").unwrap(),
            issued_at: Some(t()),
            due_at: None,
            updated_at: t(),
        });
        let service = connector(json!({})).map_record(&invoice).unwrap();
        assert_eq!(service["DocType"], "dDocument_Service");
        assert_eq!(
            service["DocumentLines"][0],
            json!({"ItemDescription": "Invoice INV-3", "AccountCode": "4000", "LineTotal": 25.5})
        );
        let items = connector(
            json!({"invoice_type": "items", "invoice_item_code": "SERVICES",
            "invoice_account_code": null}),
        )
        .map_record(&invoice)
        .unwrap();
        assert_eq!(items["DocType"], "dDocument_Items");
        assert_eq!(
            items["DocumentLines"][0],
            json!({"ItemCode": "SERVICES", "ItemDescription": "Invoice INV-3", "Quantity": 1,
                   "UnitPrice": 25.5, "WarehouseCode": "01"})
        );
    }

    #[test]
    fn records_map_to_service_layer_entities() {
        let c = connector(json!({"card_code_prefix": "WEB"}));
        let product = c
            .map_record(&PlatformRecord::Product(ProductRecord {
                id: 1,
                sku: "SKU-1".into(),
                name: "Widget".into(),
                description: Some("A widget".into()),
                price: Decimal::from_str("12.5").unwrap(),
                currency: "EUR".into(),
                active: true,
                updated_at: t(),
            }))
            .unwrap();
        assert_eq!(product["ItemCode"], "SKU-1");
        assert_eq!(product["ItemPrices"][0]["PriceList"], 1);
        assert_eq!(product["ItemPrices"][0]["Price"].to_string(), "12.5");
        let customer = c
            .map_record(&PlatformRecord::Customer(CustomerRecord {
                id: 42,
                email: "ann@acme.example".into(),
                name: "Ann".into(),
                company_name: Some("Acme".into()),
                phone: Some("+33 1".into()),
                vat_number: Some("FR1".into()),
                updated_at: t(),
            }))
            .unwrap();
        assert_eq!(
            (
                customer["CardCode"].as_str(),
                customer["CardType"].as_str(),
                customer["FederalTaxID"].as_str()
            ),
            (Some("WEB42"), Some("cCustomer"), Some("FR1"))
        );
        let order = c
            .map_record(&PlatformRecord::Order(OrderRecord {
                id: 7,
                order_number: "WH-7".into(),
                customer_id: Some(42),
                customer_email: None,
                status: "confirmed".into(),
                currency: "EUR".into(),
                total_amount: Decimal::from(25),
                items: vec![OrderLine {
                    product_id: Some(1),
                    sku: Some("SKU-1".into()),
                    quantity: Decimal::from(2),
                    unit_price: Decimal::from_str("12.5").unwrap(),
                }],
                created_at: t(),
                updated_at: t(),
            }))
            .unwrap();
        assert_eq!(order["NumAtCard"], "WH-7");
        assert_eq!(order["DocDueDate"], "2026-11-02");
        assert_eq!(order["DocumentLines"][0]["WarehouseCode"], "01");
        let invoice = c
            .map_record(&PlatformRecord::Invoice(InvoiceRecord {
                id: 3,
                invoice_number: "INV-3".into(),
                order_id: Some(7),
                order_number: Some("WH-7".into()),
                customer_id: Some(42),
                customer_email: None,
                status: "issued".into(),
                currency: "EUR".into(),
                total_amount: Decimal::from(25),
                issued_at: Some(t()),
                due_at: None,
                updated_at: t(),
            }))
            .unwrap();
        assert_eq!(invoice["DocType"], "dDocument_Service");
        assert_eq!(invoice["NumAtCard"], "INV-3");
    }
}
