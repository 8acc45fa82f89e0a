//! The attributes each resource's namespace accepts (the swagger's `post…` definitions) and
//! their JSON types, checked strictly: an attribute the swagger does not list, or a value
//! of the wrong type, is a `RecordInvalid`. Attributes not simulated are kept and echoed.

use super::errors::{SageError, invalid};
use chrono::NaiveDate;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde_json::{Map, Value};
use std::str::FromStr;

#[derive(Clone, Copy, Debug)]
pub(crate) enum Ty {
    Str,
    Num,
    Int,
    Bool,
    /// `YYYY-MM-DD`.
    Date,
    StrList,
    /// An object with these attributes, each any scalar (or null).
    Obj(&'static [&'static str]),
    /// An array of objects checked against these fields.
    List(&'static [(&'static str, Ty)]),
    /// Not simulated: anything.
    Any,
}

pub(crate) type Spec = &'static [(&'static str, Ty)];

const ADDRESS: &[&str] = &[
    "address_line_1",
    "address_line_2",
    "city",
    "postal_code",
    "country_id",
    "bank_account_id",
    "contact_id",
    "address_type_id",
    "name",
    "region",
    "country_group_id",
    "is_main_address",
];

pub(crate) const CONTACT: Spec = &[
    ("name", Ty::Str),
    ("contact_type_ids", Ty::StrList),
    ("reference", Ty::Str),
    ("default_sales_ledger_account_id", Ty::Str),
    ("default_sales_tax_rate_id", Ty::Str),
    ("default_purchase_ledger_account_id", Ty::Str),
    ("tax_number", Ty::Str),
    ("notes", Ty::Str),
    ("locale", Ty::Str),
    ("credit_limit", Ty::Num),
    ("credit_days", Ty::Int),
    ("credit_terms_and_conditions", Ty::Str),
    ("product_sales_price_type_id", Ty::Str),
    ("source_guid", Ty::Str),
    ("currency_id", Ty::Str),
    ("aux_reference", Ty::Str),
    ("registered_number", Ty::Str),
    ("tax_calculation", Ty::Str),
    ("auxiliary_account", Ty::Str),
    ("main_address", Ty::Obj(ADDRESS)),
    ("delivery_address", Ty::Obj(ADDRESS)),
    (
        "main_contact_person",
        Ty::Obj(&[
            "contact_person_type_ids",
            "name",
            "job_title",
            "telephone",
            "mobile",
            "email",
            "fax",
            "is_main_contact",
            "address_id",
            "is_preferred_contact",
        ]),
    ),
    ("bank_account_details", Ty::Any),
    ("tax_treatment", Ty::Any),
];

const SALES_PRICE: &[(&str, Ty)] = &[
    ("price_name", Ty::Str),
    ("price", Ty::Num),
    ("price_includes_tax", Ty::Bool),
    ("product_sales_price_type_id", Ty::Str),
];

pub(crate) const STOCK_ITEM: Spec = &[
    ("item_code", Ty::Str),
    ("description", Ty::Str),
    ("sales_ledger_account_id", Ty::Str),
    ("purchase_ledger_account_id", Ty::Str),
    ("notes", Ty::Str),
    ("sales_tax_rate_id", Ty::Str),
    ("usual_supplier_id", Ty::Str),
    ("purchase_tax_rate_id", Ty::Str),
    ("cost_price", Ty::Num),
    ("source_guid", Ty::Str),
    ("purchase_description", Ty::Str),
    ("reorder_level", Ty::Num),
    ("reorder_quantity", Ty::Num),
    ("location", Ty::Str),
    ("barcode", Ty::Str),
    ("supplier_part_number", Ty::Str),
    ("weight", Ty::Num),
    ("measurement_unit", Ty::Str),
    ("weight_converted", Ty::Num),
    ("active", Ty::Bool),
    ("quantity_in_stock", Ty::Num),
    ("last_cost_price", Ty::Num),
    ("last_cost_price_stock_value", Ty::Num),
    ("average_cost_price", Ty::Num),
    ("average_cost_price_stock_value", Ty::Num),
    ("cost_price_last_updated", Ty::Date),
    ("sales_prices", Ty::List(SALES_PRICE)),
];

pub(crate) const STOCK_MOVEMENT: Spec = &[
    ("stock_item_id", Ty::Str),
    ("date", Ty::Date),
    ("quantity", Ty::Num),
    ("cost_price", Ty::Num),
    ("details", Ty::Str),
    ("movement_number", Ty::Str),
    ("reference", Ty::Str),
];

pub(crate) const LINE: &[(&str, Ty)] = &[
    ("description", Ty::Str),
    ("ledger_account_id", Ty::Str),
    ("quantity", Ty::Num),
    ("unit_price", Ty::Num),
    ("product_id", Ty::Str),
    ("service_id", Ty::Str),
    ("trade_of_asset", Ty::Bool),
    ("net_amount", Ty::Num),
    ("tax_rate_id", Ty::Str),
    ("tax_amount", Ty::Num),
    ("total_amount", Ty::Num),
    ("base_currency_unit_price", Ty::Num),
    ("unit_price_includes_tax", Ty::Bool),
    ("base_currency_net_amount", Ty::Num),
    ("base_currency_tax_amount", Ty::Num),
    ("base_currency_total_amount", Ty::Num),
    ("eu_goods_services_type_id", Ty::Str),
    ("discount_amount", Ty::Num),
    ("base_currency_discount_amount", Ty::Num),
    ("discount_percentage", Ty::Num),
    ("eu_sales_description_id", Ty::Str),
];

/// What quotes, estimates and invoices share besides their lines and dates (the swagger's
/// header attributes; the amounts given are ignored and recomputed).
pub(crate) const DOCUMENT_COMMON: &[(&str, Ty)] = &[
    ("contact_id", Ty::Str),
    ("date", Ty::Date),
    ("contact_name", Ty::Str),
    ("contact_reference", Ty::Str),
    ("reference", Ty::Str),
    ("notes", Ty::Str),
    ("terms_and_conditions", Ty::Str),
    ("shipping_net_amount", Ty::Num),
    ("shipping_tax_rate_id", Ty::Str),
    ("shipping_tax_amount", Ty::Num),
    ("shipping_total_amount", Ty::Num),
    ("net_amount", Ty::Num),
    ("tax_amount", Ty::Num),
    ("total_amount", Ty::Num),
    ("currency_id", Ty::Str),
    ("exchange_rate", Ty::Num),
    ("inverse_exchange_rate", Ty::Num),
    ("total_quantity", Ty::Num),
    ("total_discount_amount", Ty::Num),
    ("status_id", Ty::Str),
    ("sent", Ty::Bool),
    ("tax_address_region_id", Ty::Str),
    ("withholding_tax_rate", Ty::Num),
    ("withholding_tax_amount", Ty::Num),
    ("main_address", Ty::Any),
    ("delivery_address", Ty::Any),
    ("tax_analysis", Ty::Any),
    ("base_currency_shipping_net_amount", Ty::Num),
    ("base_currency_shipping_tax_amount", Ty::Num),
    ("base_currency_shipping_total_amount", Ty::Num),
    ("base_currency_total_discount_amount", Ty::Num),
    ("base_currency_net_amount", Ty::Num),
    ("base_currency_tax_amount", Ty::Num),
    ("base_currency_total_amount", Ty::Num),
    ("base_currency_withholding_tax_amount", Ty::Num),
];

pub(crate) const QUOTE_ONLY: &[(&str, Ty)] = &[
    ("expiry_date", Ty::Date),
    ("quote_number_prefix", Ty::Str),
    ("quote_number", Ty::Str),
    ("invoice_id", Ty::Str),
    ("quote_lines", Ty::List(LINE)),
];

pub(crate) const ESTIMATE_ONLY: &[(&str, Ty)] = &[
    ("expiry_date", Ty::Date),
    ("estimate_number_prefix", Ty::Str),
    ("estimate_number", Ty::Str),
    ("invoice_id", Ty::Str),
    ("estimate_lines", Ty::List(LINE)),
];

pub(crate) const INVOICE_ONLY: &[(&str, Ty)] = &[
    ("due_date", Ty::Date),
    ("invoice_number_prefix", Ty::Str),
    ("invoice_number", Ty::Str),
    ("original_quote_estimate_id", Ty::Str),
    ("delivery_performance_date", Ty::Str),
    ("cis_applicable_amount", Ty::Num),
    ("base_currency_cis_applicable_amount", Ty::Num),
    ("total_after_cis_deduction", Ty::Num),
    ("base_currency_total_after_cis_deduction", Ty::Num),
    ("recurring_invoice", Ty::Any),
    ("invoice_lines", Ty::List(LINE)),
];

/// Checks every attribute of `object` against `specs` (the first spec naming it wins);
/// `source` prefixes the names in errors (`invoice_lines`).
pub(crate) fn check(object: &Map<String, Value>, specs: &[Spec], source: &str) -> Vec<SageError> {
    let mut errors = Vec::new();
    for (name, value) in object {
        let path = if source.is_empty() {
            name.clone()
        } else {
            format!("{source}.{name}")
        };
        let Some(ty) = specs
            .iter()
            .flat_map(|s| s.iter())
            .find(|(n, _)| n == name)
            .map(|(_, t)| *t)
        else {
            errors.push(invalid(path, format!("{name} is not a valid attribute")));
            continue;
        };
        if value.is_null() {
            continue;
        }
        errors.extend(check_value(value, ty, &path));
    }
    errors
}

fn check_value(value: &Value, ty: Ty, path: &str) -> Vec<SageError> {
    let wrong = |what: &str| vec![invalid(path, format!("must be {what}"))];
    match ty {
        Ty::Any => Vec::new(),
        Ty::Str if !value.is_string() => wrong("a string"),
        Ty::Num if decimal(value).is_none() => wrong("a number"),
        Ty::Int if !(value.is_i64() || value.is_u64()) => wrong("an integer"),
        Ty::Bool if !value.is_boolean() => wrong("true or false"),
        Ty::Date if value.as_str().and_then(date).is_none() => wrong("a date (YYYY-MM-DD)"),
        Ty::StrList => match value.as_array() {
            Some(items) if items.iter().all(Value::is_string) => Vec::new(),
            _ => wrong("an array of strings"),
        },
        Ty::Obj(names) => match value.as_object() {
            Some(object) => object
                .iter()
                .filter(|(k, _)| !names.contains(&k.as_str()))
                .map(|(k, _)| {
                    invalid(
                        format!("{path}.{k}"),
                        format!("{k} is not a valid attribute"),
                    )
                })
                .collect(),
            None => wrong("an object"),
        },
        Ty::List(spec) => match value.as_array() {
            Some(items) => items
                .iter()
                .flat_map(|item| match item.as_object() {
                    Some(object) => check(object, &[spec], path),
                    None => vec![invalid(path, "must be an array of objects")],
                })
                .collect(),
            None => wrong("an array"),
        },
        _ => Vec::new(),
    }
}

/// A JSON number (or a numeric string, as Sage's own answers carry amounts) as a decimal.
pub(crate) fn decimal(value: &Value) -> Option<Decimal> {
    match value {
        Value::Number(n) => Decimal::from_str(&n.to_string())
            .or_else(|_| Decimal::from_scientific(&n.to_string()))
            .ok(),
        _ => None,
    }
}

pub(crate) fn date(text: &str) -> Option<NaiveDate> {
    if text.len() != 10 {
        return None;
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()
}

/// A decimal as a JSON number, two decimal places for money.
pub(crate) fn money(amount: Decimal) -> Value {
    number(amount.round_dp(2))
}

pub(crate) fn number(amount: Decimal) -> Value {
    amount
        .normalize()
        .to_f64()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

/// A string attribute, `None` when absent, null or empty.
pub(crate) fn text<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    object
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

/// `{id, displayed_as, $path}`: how Sage renders a link to another record.
pub(crate) fn link(id: &str, displayed_as: &str, collection: &str) -> Value {
    let mut object = Map::new();
    object.insert("id".into(), Value::String(id.to_owned()));
    object.insert(
        "displayed_as".into(),
        Value::String(displayed_as.to_owned()),
    );
    object.insert("$path".into(), Value::String(format!("/{collection}/{id}")));
    Value::Object(object)
}

/// A plausible e-mail address: one `@`, something before it, a dotted domain after it.
pub(crate) fn is_email(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !text.contains(char::is_whitespace)
}

/// 32 lower- or upper-case hex digits: Sage's ids and `idempotency_id`.
pub(crate) fn is_hex32(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sage_fields_are_checked_strictly() {
        let object = json!({"name": 5, "nickname": "x", "main_contact_person": {"email": "a@b.co", "age": 3}});
        let errors = check(object.as_object().unwrap(), &[CONTACT], "");
        let sources: Vec<&str> = errors.iter().map(|e| e.source.as_str()).collect();
        assert_eq!(sources, ["main_contact_person.age", "name", "nickname"]);
        let lines = json!({"invoice_lines": [{"description": "d", "unit_price": "x"}]});
        let errors = check(lines.as_object().unwrap(), &[INVOICE_ONLY], "");
        assert_eq!(errors[0].source, "invoice_lines.unit_price");
    }

    #[test]
    fn sage_scalars_parse() {
        assert!(date("2024-02-29").is_some());
        assert!(date("2024-2-9").is_none());
        assert_eq!(decimal(&json!(1.5)), Some(Decimal::new(15, 1)));
        assert!(is_email("a.b@example.com"));
        assert!(!is_email("a@b"));
        assert!(!is_email("not an email"));
        assert!(is_hex32(&"a1".repeat(16)));
        assert!(!is_hex32("a1-b2"));
        assert_eq!(money(Decimal::new(10005, 3)), json!(10.0));
    }
}
