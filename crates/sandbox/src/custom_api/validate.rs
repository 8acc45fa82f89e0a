//! What a write must look like, per collection: the contract's required fields, the types of
//! the documented optional ones, and nothing else.
//!
//! The simulator exists to catch connector bugs, so it is at least as strict as any real API
//! following the contract: unknown fields, numbers sent as strings, amounts carrying float
//! noise and server-managed fields are all refused with a 422 naming the field.

use super::store::Collection;
use crate::problem::FieldError;
use chrono::DateTime;
use serde_json::{Map, Number, Value};

/// The platform stores money and quantities as `numeric(14,4)`; more decimals than that can
/// only come from a value that went through a float (`0.1 + 0.2 = 0.30000000000000004`),
/// which the contract forbids.
const MAX_DECIMALS: u32 = 4;

#[derive(Clone, Copy, Debug)]
enum Kind {
    /// A non-blank string.
    Text,
    /// Any string, empty included (free text such as a description).
    AnyText,
    /// A string containing `@`.
    Email,
    /// A JSON number ≥ 0.
    Money,
    /// A JSON number of any sign (totals, stock levels).
    Amount,
    /// A JSON number > 0.
    PositiveAmount,
    Bool,
    /// An ISO 4217 code: three capital letters.
    Currency,
    /// An RFC 3339 timestamp.
    Timestamp,
    /// The order lines.
    Items,
}

#[derive(Clone, Copy, Debug)]
struct Field {
    name: &'static str,
    kind: Kind,
    required: bool,
}

const fn req(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: true,
    }
}

const fn opt(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: false,
    }
}

const PRODUCTS: &[Field] = &[
    opt("external_ref", Kind::Text),
    req("sku", Kind::Text),
    req("name", Kind::Text),
    opt("description", Kind::AnyText),
    req("price", Kind::Money),
    opt("currency", Kind::Currency),
    opt("active", Kind::Bool),
];

const CUSTOMERS: &[Field] = &[
    opt("external_ref", Kind::Text),
    req("email", Kind::Email),
    req("name", Kind::Text),
    opt("company_name", Kind::AnyText),
    opt("phone", Kind::AnyText),
    opt("vat_number", Kind::AnyText),
];

const ORDERS: &[Field] = &[
    opt("external_ref", Kind::Text),
    req("order_number", Kind::Text),
    req("customer_email", Kind::Text),
    opt("status", Kind::Text),
    opt("currency", Kind::Currency),
    req("total", Kind::Amount),
    req("items", Kind::Items),
];

const ORDER_ITEMS: &[Field] = &[
    req("sku", Kind::Text),
    req("quantity", Kind::PositiveAmount),
    req("price", Kind::Money),
];

const INVOICES: &[Field] = &[
    opt("external_ref", Kind::Text),
    req("invoice_number", Kind::Text),
    opt("order_number", Kind::Text),
    req("customer_email", Kind::Text),
    opt("status", Kind::Text),
    opt("currency", Kind::Currency),
    req("total", Kind::Amount),
    opt("issued_at", Kind::Timestamp),
    opt("due_at", Kind::Timestamp),
];

const INVENTORY: &[Field] = &[
    opt("external_ref", Kind::Text),
    req("sku", Kind::Text),
    req("warehouse_code", Kind::Text),
    req("quantity", Kind::Amount),
];

fn schema(collection: Collection) -> &'static [Field] {
    match collection {
        Collection::Products => PRODUCTS,
        Collection::Customers => CUSTOMERS,
        Collection::Orders => ORDERS,
        Collection::Invoices => INVOICES,
        Collection::Inventory => INVENTORY,
    }
}

/// Which write is being checked: a PUT may repeat the id of the record it replaces.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Write<'a> {
    Create,
    Replace { id: &'a str },
}

/// Checks a write's body and returns its fields, or every problem found.
pub(crate) fn validate(
    collection: Collection,
    body: Value,
    write: Write<'_>,
) -> Result<Map<String, Value>, Vec<FieldError>> {
    let Value::Object(mut fields) = body else {
        return Err(vec![FieldError::new("body", "must be a JSON object")]);
    };
    let mut errors = Vec::new();

    // Server-managed fields: `id` may only restate the path's id on a PUT.
    match (fields.remove("id"), write) {
        (None, _) => {}
        (Some(id), Write::Replace { id: path_id }) if id_matches(&id, path_id) => {}
        (Some(_), Write::Replace { .. }) => {
            errors.push(FieldError::new("id", "does not match the id in the path"));
        }
        (Some(_), Write::Create) => {
            errors.push(FieldError::new(
                "id",
                "is assigned by the API and cannot be written",
            ));
        }
    }
    for managed in ["updated_at", "deleted"] {
        if fields.contains_key(managed) {
            errors.push(FieldError::new(
                managed,
                "is set by the API and cannot be written",
            ));
        }
    }

    check_object(
        schema(collection),
        collection.name(),
        &fields,
        "",
        &mut errors,
    );
    if errors.is_empty() {
        Ok(fields)
    } else {
        Err(errors)
    }
}

fn id_matches(id: &Value, path_id: &str) -> bool {
    match id {
        Value::String(s) => s == path_id,
        Value::Number(n) => (n.is_u64() || n.is_i64()) && n.to_string() == path_id,
        _ => false,
    }
}

fn check_object(
    schema: &[Field],
    what: &str,
    object: &Map<String, Value>,
    prefix: &str,
    errors: &mut Vec<FieldError>,
) {
    // Paths are only formatted for errors: valid writes are the hot path of a benchmark.
    for name in object.keys() {
        let known = schema.iter().any(|f| f.name == name)
            // Already reported as server-managed at the top level.
            || (prefix.is_empty() && ["updated_at", "deleted"].contains(&name.as_str()));
        if !known {
            errors.push(FieldError::new(
                format!("{prefix}{name}"),
                format!("is not a field of {what}"),
            ));
        }
    }
    for field in schema {
        let outcome = match object.get(field.name) {
            None | Some(Value::Null) if field.required => Err("is required"),
            None | Some(Value::Null) => Ok(()),
            Some(value) => check_value(field.kind, value),
        };
        if let Err(message) = outcome {
            errors.push(FieldError::new(format!("{prefix}{}", field.name), message));
            continue;
        }
        if let (Kind::Items, Some(Value::Array(items))) = (field.kind, object.get(field.name)) {
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::Object(line) => {
                        let line_prefix = format!("{prefix}{}[{i}].", field.name);
                        check_object(ORDER_ITEMS, "an order line", line, &line_prefix, errors);
                    }
                    _ => errors.push(FieldError::new(
                        format!("{prefix}{}[{i}]", field.name),
                        "must be an object",
                    )),
                }
            }
        }
    }
}

/// Checks one present, non-null value; order lines themselves are checked by the caller.
fn check_value(kind: Kind, value: &Value) -> Result<(), &'static str> {
    match kind {
        Kind::Text | Kind::AnyText | Kind::Email | Kind::Currency | Kind::Timestamp => {
            let Value::String(s) = value else {
                return Err("must be a string");
            };
            match kind {
                Kind::Text if s.trim().is_empty() => Err("must not be blank"),
                Kind::Email if !s.contains('@') => Err("must be an email address (contain @)"),
                Kind::Currency if !(s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase())) => {
                    Err("must be a three-letter ISO 4217 code such as EUR")
                }
                Kind::Timestamp if DateTime::parse_from_rfc3339(s).is_err() => {
                    Err("must be an RFC 3339 timestamp")
                }
                _ => Ok(()),
            }
        }
        Kind::Money | Kind::Amount | Kind::PositiveAmount => {
            let number = match value {
                Value::Number(n) => n,
                Value::String(_) => return Err("must be a JSON number, not a string"),
                _ => return Err("must be a JSON number"),
            };
            let x = number.as_f64().ok_or("must be a JSON number")?;
            if decimals(number) > MAX_DECIMALS {
                Err("has more than 4 decimal places (was it rounded through a float?)")
            } else if matches!(kind, Kind::Money) && x < 0.0 {
                Err("must be >= 0")
            } else if matches!(kind, Kind::PositiveAmount) && x <= 0.0 {
                Err("must be > 0")
            } else {
                Ok(())
            }
        }
        Kind::Bool if value.is_boolean() => Ok(()),
        Kind::Bool => Err("must be true or false"),
        Kind::Items => match value {
            Value::Array(items) if items.is_empty() => Err("must not be empty"),
            Value::Array(_) => Ok(()),
            _ => Err("must be an array"),
        },
    }
}

/// Decimal places of a number as it was written, recovered from the shortest representation
/// of the parsed value (exact for anything with at most 15 significant digits).
fn decimals(number: &Number) -> u32 {
    if number.is_i64() || number.is_u64() {
        return 0;
    }
    let text = number.to_string();
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i64>().unwrap_or(0)),
        None => (text.as_str(), 0),
    };
    let fraction = mantissa
        .split_once('.')
        .map_or(0, |(_, f)| f.trim_end_matches('0').len());
    let places = i64::try_from(fraction).unwrap_or(i64::MAX) - exponent;
    u32::try_from(places.max(0)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(collection: Collection, body: Value) -> Vec<(String, String)> {
        match validate(collection, body, Write::Create) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.into_iter().map(|e| (e.field, e.message)).collect(),
        }
    }

    fn fields_of(collection: Collection, body: Value) -> Vec<String> {
        errors(collection, body)
            .into_iter()
            .map(|(f, _)| f)
            .collect()
    }

    #[test]
    fn the_documented_payloads_are_accepted() {
        let payloads = [
            (
                Collection::Products,
                json!({"external_ref": "17", "sku": "SKU-0017", "name": "Oak pallet",
                       "description": "…", "price": 12.5, "currency": "EUR", "active": true}),
            ),
            (
                Collection::Customers,
                json!({"external_ref": "42", "email": "buyer@acme.example", "name": "Jane Buyer",
                       "company_name": "Acme SARL", "phone": "+33 1 23 45 67 89",
                       "vat_number": "FR12345678901"}),
            ),
            (
                Collection::Orders,
                json!({"external_ref": "1001", "order_number": "WH-2026-001001",
                       "customer_email": "buyer@acme.example", "status": "confirmed",
                       "currency": "EUR", "total": 250.0,
                       "items": [{"sku": "SKU-0017", "quantity": 20, "price": 12.5}]}),
            ),
            (
                Collection::Invoices,
                json!({"external_ref": "501", "invoice_number": "INV-2026-000501",
                       "order_number": "WH-2026-001001", "customer_email": "buyer@acme.example",
                       "status": "issued", "currency": "EUR", "total": 250.0,
                       "issued_at": "2026-11-02T10:00:00Z", "due_at": "2026-12-02T10:00:00Z"}),
            ),
            (
                Collection::Inventory,
                json!({"external_ref": "17:MAIN", "sku": "SKU-0017", "warehouse_code": "MAIN",
                       "quantity": 340}),
            ),
        ];
        for (collection, body) in payloads {
            assert_eq!(errors(collection, body), Vec::new(), "{collection:?}");
        }
    }

    #[test]
    fn every_missing_required_field_is_named() {
        assert_eq!(
            fields_of(
                Collection::Orders,
                json!({"items": [{"quantity": 0, "price": -1}]})
            ),
            [
                "order_number",
                "customer_email",
                "total",
                "items[0].sku",
                "items[0].quantity",
                "items[0].price"
            ]
        );
        assert_eq!(
            fields_of(Collection::Inventory, json!({})),
            ["sku", "warehouse_code", "quantity"]
        );
        assert_eq!(
            fields_of(Collection::Invoices, json!({"total": null})),
            ["invoice_number", "customer_email", "total"]
        );
    }

    #[test]
    fn numbers_sent_as_strings_are_refused() {
        let found = errors(
            Collection::Products,
            json!({"sku": "S", "name": "N", "price": "12.50"}),
        );
        assert_eq!(
            found,
            [(
                "price".to_owned(),
                "must be a JSON number, not a string".to_owned()
            )]
        );
    }

    #[test]
    fn float_noise_is_refused_but_exact_decimals_pass() {
        let product = |price: Value| json!({"sku": "S", "name": "N", "price": price});
        assert_eq!(
            fields_of(Collection::Products, product(json!(0.1 + 0.2))),
            ["price"]
        );
        for ok in [
            json!(12.3456),
            json!(1e3),
            json!(9_999_999_999.999_9),
            json!(0),
        ] {
            assert!(
                fields_of(Collection::Products, product(ok.clone())).is_empty(),
                "{ok}"
            );
        }
        assert_eq!(
            fields_of(Collection::Products, product(json!(1e-7))),
            ["price"]
        );
    }

    #[test]
    fn unknown_and_server_managed_fields_are_refused() {
        let found = fields_of(
            Collection::Customers,
            json!({"email": "a@b", "name": "A", "emial": "x", "id": "cus_1", "updated_at": "x"}),
        );
        assert_eq!(found, ["id", "updated_at", "emial"]);
        let replace = validate(
            Collection::Customers,
            json!({"id": "cus_1", "email": "a@b", "name": "A"}),
            Write::Replace { id: "cus_1" },
        );
        assert!(replace.is_ok());
    }

    #[test]
    fn field_rules_apply() {
        assert_eq!(
            fields_of(
                Collection::Customers,
                json!({"email": "nobody", "name": " "})
            ),
            ["email", "name"]
        );
        assert_eq!(
            fields_of(
                Collection::Orders,
                json!({"order_number": "1", "customer_email": "a@b", "total": 1, "items": [],
                       "currency": "eur"})
            ),
            ["currency", "items"]
        );
        assert_eq!(fields_of(Collection::Orders, json!([])), ["body"]);
    }
}
