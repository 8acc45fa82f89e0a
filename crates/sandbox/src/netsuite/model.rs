//! The record types the simulator knows, their fields and sublists, and how a request body's
//! values are checked and brought to the stored form (references as an internal id string,
//! dates as `YYYY-MM-DD`).

use super::errors::NsError;
use chrono::NaiveDate;
use serde_json::{Map, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum RecordType {
    InventoryItem,
    Customer,
    SalesOrder,
    Invoice,
}

/// What a reference field points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    Record(RecordType),
    Subsidiary,
    Location,
    Currency,
    PriceLevel,
}

impl Target {
    /// The path segment of the referenced record type in links.
    pub(crate) fn path(self) -> &'static str {
        match self {
            Target::Record(ty) => ty.name(),
            Target::Subsidiary => "subsidiary",
            Target::Location => "location",
            Target::Currency => "currency",
            Target::PriceLevel => "priceLevel",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Text,
    Bool,
    Number,
    /// `YYYY-MM-DD`.
    Date,
    Ref(Target),
    /// Any JSON object, kept as given (the price sublist's `quantity: {"value": 0}`).
    Object,
    /// A transaction status, stored as its letter and shown as `{"id", "refName"}`.
    Status,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    Write,
    /// Set by NetSuite; a body naming it is refused.
    ReadOnly,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Field {
    pub name: &'static str,
    /// As NetSuite's "Please enter value(s) for" messages name it.
    pub label: &'static str,
    pub kind: Kind,
    pub access: Access,
}

const fn w(name: &'static str, label: &'static str, kind: Kind) -> Field {
    Field {
        name,
        label,
        kind,
        access: Access::Write,
    }
}

const fn ro(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        label: name,
        kind,
        access: Access::ReadOnly,
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Sublist {
    pub name: &'static str,
    pub fields: &'static [Field],
}

const ITEM: Kind = Kind::Ref(Target::Record(RecordType::InventoryItem));
const CUSTOMER: Kind = Kind::Ref(Target::Record(RecordType::Customer));

const INVENTORY_ITEM: &[Field] = &[
    w("itemId", "Item Name/Number", Kind::Text),
    w("displayName", "Display Name/Code", Kind::Text),
    w("salesDescription", "Sales Description", Kind::Text),
    w("upcCode", "UPC Code", Kind::Text),
    w("isInactive", "Inactive", Kind::Bool),
    w("externalId", "External ID", Kind::Text),
];

const PRICE_LINE: &[Field] = &[
    w("currencyPage", "Currency", Kind::Ref(Target::Currency)),
    w("priceLevel", "Price Level", Kind::Ref(Target::PriceLevel)),
    w("quantity", "Quantity", Kind::Object),
    w("price", "Price", Kind::Number),
];

const CUSTOMER_FIELDS: &[Field] = &[
    w("entityId", "Customer ID", Kind::Text),
    w("companyName", "Company Name", Kind::Text),
    w("isPerson", "Type", Kind::Bool),
    w("firstName", "First Name", Kind::Text),
    w("lastName", "Last Name", Kind::Text),
    w("email", "Email", Kind::Text),
    w("phone", "Phone", Kind::Text),
    w("vatRegNumber", "Tax Number", Kind::Text),
    w(
        "subsidiary",
        "Primary Subsidiary",
        Kind::Ref(Target::Subsidiary),
    ),
    w("isInactive", "Inactive", Kind::Bool),
    w("externalId", "External ID", Kind::Text),
];

const SALES_ORDER: &[Field] = &[
    w("entity", "Customer", CUSTOMER),
    w("tranId", "Order #", Kind::Text),
    w("tranDate", "Date", Kind::Date),
    w("otherRefNum", "PO #", Kind::Text),
    w("memo", "Memo", Kind::Text),
    w("location", "Location", Kind::Ref(Target::Location)),
    w("externalId", "External ID", Kind::Text),
    ro("status", Kind::Status),
    ro("total", Kind::Number),
];

const INVOICE: &[Field] = &[
    w("entity", "Customer", CUSTOMER),
    w("tranId", "Invoice #", Kind::Text),
    w("tranDate", "Date", Kind::Date),
    w("dueDate", "Due Date", Kind::Date),
    w("otherRefNum", "PO #", Kind::Text),
    w("memo", "Memo", Kind::Text),
    w("location", "Location", Kind::Ref(Target::Location)),
    w("externalId", "External ID", Kind::Text),
    ro(
        "createdFrom",
        Kind::Ref(Target::Record(RecordType::SalesOrder)),
    ),
    ro("status", Kind::Status),
    ro("total", Kind::Number),
];

const ITEM_LINE: &[Field] = &[
    w("item", "Item", ITEM),
    w("quantity", "Quantity", Kind::Number),
    w("rate", "Rate", Kind::Number),
    w("description", "Description", Kind::Text),
    ro("amount", Kind::Number),
    ro("line", Kind::Number),
];

/// An item's stock per location (the `locations` sublist; unverified: NetSuite sets
/// `quantityOnHand` through inventory transactions, the simulator lets its seeds write it).
const LOCATION_LINE: &[Field] = &[
    w("location", "Location", Kind::Ref(Target::Location)),
    w("quantityOnHand", "On Hand", Kind::Number),
];

const ITEM_SUBLISTS: &[Sublist] = &[
    Sublist {
        name: "price",
        fields: PRICE_LINE,
    },
    Sublist {
        name: "locations",
        fields: LOCATION_LINE,
    },
];

const ITEMS: &[Sublist] = &[Sublist {
    name: "item",
    fields: ITEM_LINE,
}];

impl RecordType {
    pub(crate) const ALL: [RecordType; 4] = [
        RecordType::InventoryItem,
        RecordType::Customer,
        RecordType::SalesOrder,
        RecordType::Invoice,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            RecordType::InventoryItem => "inventoryItem",
            RecordType::Customer => "customer",
            RecordType::SalesOrder => "salesOrder",
            RecordType::Invoice => "invoice",
        }
    }

    /// Record type names in paths are case-insensitive, as NetSuite's are.
    pub(crate) fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    pub(crate) fn fields(self) -> &'static [Field] {
        match self {
            RecordType::InventoryItem => INVENTORY_ITEM,
            RecordType::Customer => CUSTOMER_FIELDS,
            RecordType::SalesOrder => SALES_ORDER,
            RecordType::Invoice => INVOICE,
        }
    }

    pub(crate) fn sublists(self) -> &'static [Sublist] {
        match self {
            RecordType::InventoryItem => ITEM_SUBLISTS,
            RecordType::Customer => &[],
            RecordType::SalesOrder | RecordType::Invoice => ITEMS,
        }
    }

    pub(crate) fn sublist(self, name: &str) -> Option<&'static Sublist> {
        self.sublists().iter().find(|s| s.name == name)
    }

    pub(crate) fn is_transaction(self) -> bool {
        matches!(self, RecordType::SalesOrder | RecordType::Invoice)
    }

    /// A status's display name.
    pub(crate) fn status_name(self, status: &str) -> &'static str {
        match (self, status) {
            (RecordType::SalesOrder, "B") => "Pending Fulfillment",
            (RecordType::SalesOrder, "G") => "Billed",
            (RecordType::Invoice, "A") => "Open",
            (RecordType::Invoice, "B") => "Paid In Full",
            _ => "Unknown",
        }
    }
}

/// A reference as a body gives it: by internal id or by external id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RefKey {
    Id(String),
    External(String),
}

/// Reads a reference object: `{"id": "5"}` (an integer is taken too) or
/// `{"externalId": "X"}`, `refName` and `links` (from a GET) ignored.
pub(crate) fn ref_key(value: &Value, path: &str) -> Result<RefKey, NsError> {
    let Value::Object(map) = value else {
        return Err(NsError::invalid_value(
            path,
            "A reference must be an object with an id.",
        ));
    };
    if let Some(key) = map
        .keys()
        .find(|k| !matches!(k.as_str(), "id" | "externalId" | "refName" | "links"))
    {
        return Err(NsError::unknown_field(&format!("{path}.{key}"), path));
    }
    match (map.get("id"), map.get("externalId")) {
        (Some(Value::String(id)), None) if is_internal_id(id) => Ok(RefKey::Id(id.clone())),
        (Some(Value::Number(n)), None) if n.as_u64().is_some() => Ok(RefKey::Id(n.to_string())),
        (None, Some(Value::String(eid))) if !eid.is_empty() => Ok(RefKey::External(eid.clone())),
        _ => Err(NsError::invalid_value(
            path,
            "Provide a valid internal id or external id.",
        )),
    }
}

pub(crate) fn is_internal_id(id: &str) -> bool {
    !id.is_empty() && id.len() < 19 && id.bytes().all(|b| b.is_ascii_digit())
}

/// Checks a scalar value against its kind; the stored form. `Ref` is resolved by the
/// store, not here.
pub(crate) fn scalar(field: &Field, value: &Value, path: &str) -> Result<Value, NsError> {
    let wrong = |what: &str| NsError::invalid_value(path, format!("The value must be {what}."));
    match field.kind {
        Kind::Text => match value {
            Value::String(s) => {
                if field.name == "email" && !s.is_empty() && !looks_like_email(s) {
                    return Err(NsError::invalid_value(
                        path,
                        "Please enter a valid email address.",
                    ));
                }
                Ok(value.clone())
            }
            _ => Err(wrong("a string")),
        },
        Kind::Bool => value
            .as_bool()
            .map(Value::Bool)
            .ok_or_else(|| wrong("true or false")),
        Kind::Number => match value {
            Value::Number(_) => Ok(value.clone()),
            _ => Err(wrong("a number")),
        },
        Kind::Date => value
            .as_str()
            .filter(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok() && s.len() == 10)
            .map(|s| Value::String(s.to_owned()))
            .ok_or_else(|| wrong("a date as YYYY-MM-DD")),
        Kind::Object => match value {
            Value::Object(_) => Ok(value.clone()),
            _ => Err(wrong("an object")),
        },
        Kind::Ref(_) | Kind::Status => Err(wrong("a reference")),
    }
}

fn looks_like_email(text: &str) -> bool {
    text.split_once('@').is_some_and(|(user, domain)| {
        !user.is_empty() && domain.contains('.') && !domain.starts_with('.') && !text.contains(' ')
    })
}

/// The lines of a sublist in a body: `{"items": [...]}`.
pub(crate) fn sublist_lines<'a>(value: &'a Value, path: &str) -> Result<&'a [Value], NsError> {
    let Value::Object(map) = value else {
        return Err(NsError::invalid_value(
            path,
            "A sublist must be an object with items.",
        ));
    };
    if let Some(key) = map
        .keys()
        .find(|k| !matches!(k.as_str(), "items" | "links"))
    {
        return Err(NsError::unknown_field(&format!("{path}.{key}"), path));
    }
    match map.get("items") {
        Some(Value::Array(items)) => Ok(items),
        None => Ok(&[]),
        Some(_) => Err(NsError::invalid_value(
            &format!("{path}.items"),
            "items must be an array.",
        )),
    }
}

/// The body as an object, or a 400.
pub(crate) fn body_object(body: &Value) -> Result<&Map<String, Value>, NsError> {
    body.as_object()
        .ok_or_else(|| NsError::bad("INVALID_CONTENT", "The request body must be a JSON object."))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn record_types_are_case_insensitive() {
        assert_eq!(
            RecordType::parse("inventoryitem"),
            Some(RecordType::InventoryItem)
        );
        assert_eq!(
            RecordType::parse("SALESORDER"),
            Some(RecordType::SalesOrder)
        );
        assert_eq!(RecordType::parse("vendor"), None);
    }

    #[test]
    fn references_take_an_id_or_an_external_id() {
        assert_eq!(
            ref_key(&json!({"id": "5"}), "entity"),
            Ok(RefKey::Id("5".into()))
        );
        assert_eq!(
            ref_key(&json!({"id": 5, "refName": "x"}), "entity"),
            Ok(RefKey::Id("5".into()))
        );
        assert_eq!(
            ref_key(&json!({"externalId": "C-1"}), "entity"),
            Ok(RefKey::External("C-1".into()))
        );
        assert!(ref_key(&json!({"id": "abc"}), "entity").is_err());
        assert!(ref_key(&json!("5"), "entity").is_err());
        assert!(ref_key(&json!({"id": "5", "name": "x"}), "entity").is_err());
    }
}
