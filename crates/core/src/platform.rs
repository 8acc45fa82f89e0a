//! The platform's records as syncs see them: what the store reads for an export and what a
//! connector returns from an import. Plain data; mappings to and from each ERP live in the
//! connectors.

use crate::domain::{Entity, MappingEntityType};
use crate::ids::InternalId;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct ProductRecord {
    pub id: i64,
    pub sku: String,
    pub name: String,
    pub description: Option<String>,
    pub price: Decimal,
    pub currency: String,
    pub active: bool,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct CustomerRecord {
    pub id: i64,
    pub email: String,
    pub name: String,
    pub company_name: Option<String>,
    pub phone: Option<String>,
    pub vat_number: Option<String>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderLine {
    pub product_id: Option<i64>,
    /// `None` when the product was deleted since the order was placed.
    pub sku: Option<String>,
    pub quantity: Decimal,
    pub unit_price: Decimal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct OrderRecord {
    pub id: i64,
    pub order_number: String,
    pub customer_id: Option<i64>,
    pub customer_email: Option<String>,
    pub status: String,
    pub currency: String,
    pub total_amount: Decimal,
    /// Loaded separately from `order_items`.
    #[cfg_attr(feature = "sqlx", sqlx(skip))]
    pub items: Vec<OrderLine>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct InvoiceRecord {
    pub id: i64,
    pub invoice_number: String,
    pub order_id: Option<i64>,
    pub order_number: Option<String>,
    pub customer_id: Option<i64>,
    pub customer_email: Option<String>,
    pub status: String,
    pub currency: String,
    pub total_amount: Decimal,
    pub issued_at: Option<DateTime<Utc>>,
    pub due_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct InventoryRecord {
    pub product_id: i64,
    pub sku: String,
    pub warehouse_code: String,
    pub quantity: Decimal,
    pub updated_at: DateTime<Utc>,
}

/// One platform row to export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PlatformRecord {
    Product(ProductRecord),
    Customer(CustomerRecord),
    Order(OrderRecord),
    Invoice(InvoiceRecord),
    Inventory(InventoryRecord),
}

impl PlatformRecord {
    pub fn entity(&self) -> Entity {
        match self {
            PlatformRecord::Product(_) => Entity::Product,
            PlatformRecord::Customer(_) => Entity::Customer,
            PlatformRecord::Order(_) => Entity::Order,
            PlatformRecord::Invoice(_) => Entity::Invoice,
            PlatformRecord::Inventory(_) => Entity::Inventory,
        }
    }

    /// The row this record is, as mappings and logs name it.
    pub fn id(&self) -> InternalId {
        match self {
            PlatformRecord::Product(r) => InternalId::Row(r.id),
            PlatformRecord::Customer(r) => InternalId::Row(r.id),
            PlatformRecord::Order(r) => InternalId::Row(r.id),
            PlatformRecord::Invoice(r) => InternalId::Row(r.id),
            PlatformRecord::Inventory(r) => InternalId::Stock {
                product_id: r.product_id,
                warehouse: r.warehouse_code.clone(),
            },
        }
    }

    /// The text form of [`PlatformRecord::id`] stored in mappings and logs.
    pub fn internal_id(&self) -> String {
        self.id().to_string()
    }

    /// The records this one refers to, each once, in the order the record names them: an
    /// order its customer and then its products, an invoice its customer. Connectors that
    /// write only some of these links keep the ones they need.
    pub fn references(&self) -> Vec<(MappingEntityType, String)> {
        let (customer, products): (Option<i64>, Vec<i64>) = match self {
            PlatformRecord::Order(o) => (
                o.customer_id,
                o.items.iter().filter_map(|l| l.product_id).collect(),
            ),
            PlatformRecord::Invoice(i) => (i.customer_id, Vec::new()),
            _ => return Vec::new(),
        };
        let customer = customer.map(|c| (MappingEntityType::Customer, c));
        let products = products
            .into_iter()
            .map(|p| (MappingEntityType::Product, p));
        let mut out: Vec<(MappingEntityType, String)> = Vec::new();
        for (kind, row) in customer.into_iter().chain(products) {
            let reference = (kind, InternalId::Row(row).to_string());
            if !out.contains(&reference) {
                out.push(reference);
            }
        }
        out
    }

    pub fn updated_at(&self) -> DateTime<Utc> {
        match self {
            PlatformRecord::Product(r) => r.updated_at,
            PlatformRecord::Customer(r) => r.updated_at,
            PlatformRecord::Order(r) => r.updated_at,
            PlatformRecord::Invoice(r) => r.updated_at,
            PlatformRecord::Inventory(r) => r.updated_at,
        }
    }
}

/// What an import brings back for one ERP record: its current fields, or word that it was
/// deleted there. A tombstone carries no fields and an upsert always does, so a record
/// "without data" cannot be built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ImportedRecord {
    Upsert(ImportedUpsert),
    Tombstone(ImportedTombstone),
}

/// An ERP record to create or update on the platform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportedUpsert {
    pub external_id: String,
    pub updated_at: Option<DateTime<Utc>>,
    pub data: ImportedData,
    /// The ERP's record as received (for the log row).
    pub raw: serde_json::Value,
}

/// An ERP record deleted (or archived) at the ERP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportedTombstone {
    pub external_id: String,
    pub updated_at: Option<DateTime<Utc>>,
    /// The ERP's record as received (for the log row).
    pub raw: serde_json::Value,
}

impl ImportedRecord {
    pub fn upsert(
        external_id: String,
        updated_at: Option<DateTime<Utc>>,
        data: ImportedData,
        raw: serde_json::Value,
    ) -> Self {
        ImportedRecord::Upsert(ImportedUpsert {
            external_id,
            updated_at,
            data,
            raw,
        })
    }

    pub fn tombstone(
        external_id: String,
        updated_at: Option<DateTime<Utc>>,
        raw: serde_json::Value,
    ) -> Self {
        ImportedRecord::Tombstone(ImportedTombstone {
            external_id,
            updated_at,
            raw,
        })
    }

    pub fn external_id(&self) -> &str {
        match self {
            ImportedRecord::Upsert(r) => &r.external_id,
            ImportedRecord::Tombstone(r) => &r.external_id,
        }
    }

    pub fn updated_at(&self) -> Option<DateTime<Utc>> {
        match self {
            ImportedRecord::Upsert(r) => r.updated_at,
            ImportedRecord::Tombstone(r) => r.updated_at,
        }
    }

    pub fn raw(&self) -> &serde_json::Value {
        match self {
            ImportedRecord::Upsert(r) => &r.raw,
            ImportedRecord::Tombstone(r) => &r.raw,
        }
    }

    pub fn is_tombstone(&self) -> bool {
        matches!(self, ImportedRecord::Tombstone(_))
    }

    /// The fields of an upsert; `None` for a tombstone.
    pub fn data(&self) -> Option<&ImportedData> {
        match self {
            ImportedRecord::Upsert(r) => Some(&r.data),
            ImportedRecord::Tombstone(_) => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ImportedData {
    Product {
        sku: String,
        name: String,
        description: Option<String>,
        price: Decimal,
        currency: Option<String>,
        active: bool,
    },
    Customer {
        email: String,
        name: String,
        company_name: Option<String>,
        phone: Option<String>,
        vat_number: Option<String>,
    },
    Inventory {
        sku: String,
        warehouse_code: String,
        quantity: Decimal,
    },
}

/// A decimal as a JSON number with the same digits. `numeric(14,4)` values have at most 15
/// significant digits, which an f64 holds exactly enough that its shortest text is the
/// decimal's own text: nothing is rounded.
pub fn decimal_to_json(value: Decimal) -> serde_json::Value {
    let normalized = value.normalize();
    if normalized.scale() == 0
        && let Ok(i) = i64::try_from(normalized.mantissa())
    {
        return serde_json::Value::from(i);
    }
    normalized
        .to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map(serde_json::Value::Number)
        .unwrap_or_else(|| serde_json::Value::String(normalized.to_string()))
}

/// Reads a JSON number (or numeric string) as a decimal, exactly as written.
pub fn json_to_decimal(value: &serde_json::Value) -> Option<Decimal> {
    match value {
        serde_json::Value::Number(n) => n.to_string().parse::<Decimal>().ok().or_else(|| {
            n.as_f64()
                .and_then(|f| Decimal::from_scientific(&format!("{f:e}")).ok())
        }),
        serde_json::Value::String(s) => s.trim().parse::<Decimal>().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn order(customer_id: Option<i64>, products: &[Option<i64>]) -> PlatformRecord {
        let t = DateTime::<Utc>::UNIX_EPOCH;
        PlatformRecord::Order(OrderRecord {
            id: 1,
            order_number: "O-1".into(),
            customer_id,
            customer_email: None,
            status: "confirmed".into(),
            currency: "EUR".into(),
            total_amount: Decimal::ONE,
            items: products
                .iter()
                .map(|p| OrderLine {
                    product_id: *p,
                    sku: None,
                    quantity: Decimal::ONE,
                    unit_price: Decimal::ONE,
                })
                .collect(),
            created_at: t,
            updated_at: t,
        })
    }

    #[test]
    fn an_order_refers_to_its_customer_and_each_of_its_products_once() {
        let refs = order(Some(42), &[Some(7), None, Some(8), Some(7)]).references();
        assert_eq!(
            refs,
            vec![
                (MappingEntityType::Customer, "42".to_owned()),
                (MappingEntityType::Product, "7".to_owned()),
                (MappingEntityType::Product, "8".to_owned()),
            ]
        );
        assert_eq!(
            order(None, &[Some(7)]).references(),
            vec![(MappingEntityType::Product, "7".to_owned())]
        );
    }

    #[test]
    fn an_invoice_refers_to_its_customer_and_other_records_to_nothing() {
        let t = DateTime::<Utc>::UNIX_EPOCH;
        let invoice = PlatformRecord::Invoice(InvoiceRecord {
            id: 3,
            invoice_number: "I-3".into(),
            order_id: Some(1),
            order_number: Some("O-1".into()),
            customer_id: Some(5),
            customer_email: None,
            status: "issued".into(),
            currency: "EUR".into(),
            total_amount: Decimal::ONE,
            issued_at: None,
            due_at: None,
            updated_at: t,
        });
        assert_eq!(
            invoice.references(),
            vec![(MappingEntityType::Customer, "5".to_owned())]
        );
        let product = PlatformRecord::Product(ProductRecord {
            id: 7,
            sku: "S".into(),
            name: "N".into(),
            description: None,
            price: Decimal::ONE,
            currency: "EUR".into(),
            active: true,
            updated_at: t,
        });
        assert!(product.references().is_empty());
    }

    #[test]
    fn decimals_become_json_numbers_with_the_same_digits() {
        for (input, expected) in [
            ("12.5000", "12.5"),
            ("0.1000", "0.1"),
            ("9999999999.9999", "9999999999.9999"),
            ("20", "20"),
            ("0.0001", "0.0001"),
            ("123.45", "123.45"),
        ] {
            let json = decimal_to_json(Decimal::from_str(input).unwrap());
            assert!(json.is_number(), "{input}");
            assert_eq!(json.to_string(), expected, "{input}");
            assert_eq!(
                json_to_decimal(&json),
                Some(Decimal::from_str(expected).unwrap())
            );
        }
    }

    #[test]
    fn a_tombstone_carries_no_data_and_an_upsert_always_does() {
        let raw = serde_json::json!({"id": "E1"});
        let gone = ImportedRecord::tombstone("E1".into(), None, raw.clone());
        assert!(gone.is_tombstone());
        assert_eq!((gone.external_id(), gone.data()), ("E1", None));
        let data = ImportedData::Inventory {
            sku: "S".into(),
            warehouse_code: "MAIN".into(),
            quantity: Decimal::ONE,
        };
        let kept = ImportedRecord::upsert("E1:MAIN".into(), None, data.clone(), raw.clone());
        assert!(!kept.is_tombstone());
        assert_eq!(kept.data(), Some(&data));
        assert_eq!(kept.raw(), &raw);
    }
}
