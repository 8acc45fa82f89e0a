//! Writing a record: the namespace's attributes checked ([`super::fields`]), Sage's rules
//! applied (required attributes, existing links, unique references, dates in order), and
//! the object the API answers rendered, with `id`, `displayed_as`, `$path`, `created_at`
//! and `updated_at`.
//!
//! A `PUT` merges the attributes sent over those last written and validates the result as
//! a whole; an array sent (lines, `sales_prices`, `contact_type_ids`) replaces the old one
//! entirely (unverified: Sage may match lines by `id`). Amounts a client sends for
//! documents are ignored and recomputed; tax rates are not simulated (a line's tax is the
//! `tax_amount` it carries, else 0).

use super::errors::{Failure, SageError, invalid};
use super::fields::{self, Spec, Ty, decimal, link, money, number, text};
use super::store::{BusinessData, Resource, Stored};
use chrono::{DateTime, TimeDelta, Utc};
use rust_decimal::Decimal;
use serde_json::{Map, Value};
use uuid::Uuid;

/// The contact types a contact may have (`contact_type_ids`), and how they display.
const CONTACT_TYPES: [(&str, &str); 2] = [("CUSTOMER", "Customer"), ("VENDOR", "Supplier")];

/// How a write is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Through the API: every rule.
    Api,
    /// Seeded by a test (what the ERP's own users did): types and links checked,
    /// uniqueness not, so a test can seed a duplicate.
    Seed,
}

/// Creates (`id` `None`) or updates a record; the record's id.
pub(crate) fn write(
    data: &mut BusinessData,
    resource: Resource,
    id: Option<&str>,
    input: Map<String, Value>,
    origin: Origin,
    now: DateTime<Utc>,
) -> Result<String, Failure> {
    let existing = match id {
        Some(id) => data.get(resource, id).cloned(),
        None => None,
    };
    let mut merged = existing
        .as_ref()
        .map(|s| s.input.clone())
        .unwrap_or_default();
    for (k, v) in input {
        merged.insert(k, v);
    }
    let mut errors = fields::check(&merged, specs(resource), "");
    match render(data, resource, &merged, id, origin) {
        Ok(mut body) if errors.is_empty() => {
            let id = id
                .map(str::to_owned)
                .unwrap_or_else(|| Uuid::new_v4().simple().to_string());
            let at = data.stamp(now);
            let created = existing
                .as_ref()
                .and_then(|s| s.body.get("created_at").cloned())
                .unwrap_or_else(|| Value::String(iso(at)));
            number_document(data, resource, &mut merged, &mut body);
            finish(resource, &id, &mut body, created, at);
            if resource == Resource::StockMovements && existing.is_none() {
                apply_movement(data, &merged, at);
            }
            let stored = Stored {
                input: merged,
                body,
                updated: at,
            };
            data.put(resource, &id, stored);
            return Ok(id);
        }
        Ok(_) => {}
        Err(more) => {
            // One error per attribute: a wrong type need not also read "can't be blank".
            for error in more {
                if !errors.iter().any(|e| e.source == error.source) {
                    errors.push(error);
                }
            }
        }
    }
    Err(Failure::invalid(errors))
}

/// ISO 8601 with the offset, whole seconds, as Sage renders times.
pub(crate) fn iso(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn specs(resource: Resource) -> &'static [Spec] {
    match resource {
        Resource::Contacts => &[fields::CONTACT],
        Resource::StockItems => &[fields::STOCK_ITEM],
        Resource::StockMovements => &[fields::STOCK_MOVEMENT],
        Resource::SalesQuotes => &[fields::DOCUMENT_COMMON, fields::QUOTE_ONLY],
        Resource::SalesEstimates => &[fields::DOCUMENT_COMMON, fields::ESTIMATE_ONLY],
        Resource::SalesInvoices => &[fields::DOCUMENT_COMMON, fields::INVOICE_ONLY],
        Resource::LedgerAccounts => &[LEDGER_ACCOUNT],
    }
}

const LEDGER_ACCOUNT: Spec = &[
    ("name", Ty::Str),
    ("kind", Ty::Str),
    ("nominal_code", Ty::Any),
];

fn render(
    data: &BusinessData,
    resource: Resource,
    merged: &Map<String, Value>,
    self_id: Option<&str>,
    origin: Origin,
) -> Result<Map<String, Value>, Vec<SageError>> {
    let mut errors = Vec::new();
    if origin == Origin::Api
        && resource.unique_reference()
        && let Some(field) = resource.reference_field()
        && let Some(value) = text(merged, field)
        && data.find_reference(resource, value, self_id).is_some()
    {
        errors.push(invalid(field, format!("{field} has already been taken")));
    }
    let body = match resource {
        Resource::Contacts => contact(merged, &mut errors),
        Resource::StockItems => stock_item(data, merged, &mut errors),
        Resource::StockMovements => stock_movement(data, merged, &mut errors),
        Resource::SalesQuotes | Resource::SalesEstimates | Resource::SalesInvoices => {
            document(data, resource, merged, &mut errors)
        }
        Resource::LedgerAccounts => ledger_account(merged),
    };
    if errors.is_empty() {
        Ok(body)
    } else {
        Err(errors)
    }
}

/// The attributes echoed as sent: all but those rendered otherwise.
fn passthrough(merged: &Map<String, Value>, handled: &[&str]) -> Map<String, Value> {
    merged
        .iter()
        .filter(|(k, _)| !handled.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn required<'a>(
    merged: &'a Map<String, Value>,
    name: &str,
    errors: &mut Vec<SageError>,
) -> Option<&'a str> {
    let value = text(merged, name);
    if value.is_none() {
        errors.push(invalid(name, format!("{name} can't be blank")));
    }
    value
}

fn contact(merged: &Map<String, Value>, errors: &mut Vec<SageError>) -> Map<String, Value> {
    let mut body = passthrough(merged, &["contact_type_ids"]);
    let name = required(merged, "name", errors).unwrap_or_default();
    let types: Vec<&str> = merged
        .get("contact_type_ids")
        .and_then(Value::as_array)
        .map(|ids| ids.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if types.is_empty() {
        errors.push(invalid(
            "contact_type_ids",
            "contact_type_ids can't be blank",
        ));
    }
    let mut rendered = Vec::new();
    for id in types {
        match CONTACT_TYPES.iter().find(|(known, _)| *known == id) {
            Some((id, display)) => rendered.push(link(id, display, "contact_types")),
            None => errors.push(invalid(
                "contact_type_ids",
                format!("contact type {id:?} does not exist"),
            )),
        }
    }
    body.insert("contact_types".into(), Value::Array(rendered));
    let email = merged
        .get("main_contact_person")
        .and_then(|p| p.get("email"))
        .and_then(Value::as_str);
    if let Some(email) = email
        && !fields::is_email(email)
    {
        errors.push(invalid("main_contact_person.email", "email is invalid"));
    }
    let reference = text(merged, "reference");
    let displayed = match reference {
        Some(reference) => format!("{name} ({reference})"),
        None => name.to_owned(),
    };
    body.insert("displayed_as".into(), Value::String(displayed));
    body.insert(
        "reference".into(),
        reference.map_or(Value::Null, Value::from),
    );
    body.insert("email".into(), email.map_or(Value::Null, Value::from));
    body.insert("balance".into(), money(Decimal::ZERO));
    body.insert("deletable".into(), Value::Bool(true));
    body.insert("system".into(), Value::Bool(false));
    body
}

/// The ledger account `id` of `kind`, as a link; an error naming `source` otherwise.
fn ledger_link(
    data: &BusinessData,
    id: &str,
    kind: Option<&str>,
    source: &str,
    errors: &mut Vec<SageError>,
) -> Value {
    match data.get(Resource::LedgerAccounts, id) {
        Some(account) if kind.is_none_or(|k| text(&account.input, "kind") == Some(k)) => {
            let display = account.body.get("displayed_as").and_then(Value::as_str);
            link(id, display.unwrap_or(id), "ledger_accounts")
        }
        Some(_) => {
            let kind = kind.unwrap_or_default().to_ascii_lowercase();
            errors.push(invalid(
                source,
                format!("ledger account must be a {kind} account"),
            ));
            Value::Null
        }
        None => {
            errors.push(invalid(source, "ledger account must exist"));
            Value::Null
        }
    }
}

fn stock_item(
    data: &BusinessData,
    merged: &Map<String, Value>,
    errors: &mut Vec<SageError>,
) -> Map<String, Value> {
    let mut body = passthrough(
        merged,
        &[
            "sales_ledger_account_id",
            "purchase_ledger_account_id",
            "sales_prices",
        ],
    );
    required(merged, "item_code", errors);
    let description = required(merged, "description", errors).unwrap_or_default();
    for (field, kind) in [
        ("sales_ledger_account_id", "SALES"),
        ("purchase_ledger_account_id", "PURCHASE"),
    ] {
        if let Some(id) = required(merged, field, errors) {
            let linked = ledger_link(data, id, Some(kind), field, errors);
            body.insert(field.trim_end_matches("_id").into(), linked);
        }
    }
    let prices: Vec<Value> = merged
        .get("sales_prices")
        .and_then(Value::as_array)
        .map(|prices| prices.iter().map(|p| sales_price(p, errors)).collect())
        .unwrap_or_default();
    body.insert("sales_prices".into(), Value::Array(prices));
    body.insert("displayed_as".into(), Value::from(description));
    let quantity = merged
        .get("quantity_in_stock")
        .and_then(decimal)
        .unwrap_or_default();
    body.insert("quantity_in_stock".into(), number(quantity));
    if !merged.get("active").is_some_and(Value::is_boolean) {
        body.insert("active".into(), Value::Bool(true));
    }
    body.insert("deletable".into(), Value::Bool(true));
    body
}

fn sales_price(price: &Value, errors: &mut Vec<SageError>) -> Value {
    let empty = Map::new();
    let price = price.as_object().unwrap_or(&empty);
    let name = text(price, "price_name");
    if name.is_none() {
        errors.push(invalid(
            "sales_prices.price_name",
            "price_name can't be blank",
        ));
    }
    let amount = price.get("price").and_then(decimal);
    if amount.is_none() {
        errors.push(invalid("sales_prices.price", "price can't be blank"));
    }
    let mut body = passthrough(price, &["product_sales_price_type_id"]);
    body.insert(
        "id".into(),
        Value::String(Uuid::new_v4().simple().to_string()),
    );
    body.insert("displayed_as".into(), Value::from(name.unwrap_or_default()));
    body.insert("price".into(), money(amount.unwrap_or_default()));
    let includes_tax = price
        .get("price_includes_tax")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    body.insert("price_includes_tax".into(), Value::Bool(includes_tax));
    if let Some(band) = text(price, "product_sales_price_type_id") {
        body.insert(
            "product_sales_price_type".into(),
            link(band, band, "product_sales_price_types"),
        );
    }
    Value::Object(body)
}

fn stock_movement(
    data: &BusinessData,
    merged: &Map<String, Value>,
    errors: &mut Vec<SageError>,
) -> Map<String, Value> {
    let mut body = passthrough(merged, &["stock_item_id"]);
    if let Some(id) = required(merged, "stock_item_id", errors) {
        match data.get(Resource::StockItems, id) {
            Some(item) => {
                let display = item.body.get("displayed_as").and_then(Value::as_str);
                body.insert(
                    "stock_item".into(),
                    link(id, display.unwrap_or(id), "stock_items"),
                );
            }
            None => errors.push(invalid("stock_item_id", "stock item must exist")),
        }
    }
    required(merged, "date", errors);
    let details = required(merged, "details", errors).unwrap_or_default();
    match merged.get("quantity").and_then(decimal) {
        Some(q) if q.is_zero() => errors.push(invalid("quantity", "quantity can't be zero")),
        Some(_) => {}
        None => errors.push(invalid("quantity", "quantity can't be blank")),
    }
    if merged.get("cost_price").and_then(decimal).is_none() {
        errors.push(invalid("cost_price", "cost_price can't be blank"));
    }
    body.insert("displayed_as".into(), Value::from(details));
    body
}

/// A stock movement changes its item's `quantity_in_stock` (and `updated_at`).
fn apply_movement(data: &mut BusinessData, merged: &Map<String, Value>, at: DateTime<Utc>) {
    let (Some(id), Some(quantity)) = (
        text(merged, "stock_item_id"),
        merged.get("quantity").and_then(decimal),
    ) else {
        return;
    };
    set_quantity(data, id, |old| old + quantity, at);
}

/// Changes a stock item's quantity in stock, bumping `updated_at`.
pub(crate) fn set_quantity(
    data: &mut BusinessData,
    id: &str,
    change: impl FnOnce(Decimal) -> Decimal,
    at: DateTime<Utc>,
) -> bool {
    let Some(item) = data.get_mut(Resource::StockItems, id) else {
        return false;
    };
    let old = item
        .input
        .get("quantity_in_stock")
        .and_then(decimal)
        .unwrap_or_default();
    let new = number(change(old));
    item.input.insert("quantity_in_stock".into(), new.clone());
    item.body.insert("quantity_in_stock".into(), new);
    item.body
        .insert("updated_at".into(), Value::String(iso(at)));
    item.updated = at;
    true
}

fn ledger_account(merged: &Map<String, Value>) -> Map<String, Value> {
    let mut body = passthrough(merged, &["kind"]);
    let name = text(merged, "name").unwrap_or_default();
    let code = merged.get("nominal_code").cloned().unwrap_or(Value::Null);
    let code_text = match &code {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    body.insert(
        "displayed_as".into(),
        Value::String(format!("{name} ({code_text})")),
    );
    let kind = text(merged, "kind").unwrap_or_default();
    body.insert(
        "ledger_account_type".into(),
        link(kind, kind, "ledger_account_types"),
    );
    body
}

/// What distinguishes quotes, estimates and invoices.
struct DocumentKind {
    lines: &'static str,
    /// The second date: `expiry_date` (required) or `due_date` (optional).
    second_date: &'static str,
    second_required: bool,
    /// Whether lines must carry a `quantity` (invoices default it to 1).
    quantity_required: bool,
    status: (&'static str, &'static str),
}

fn document_kind(resource: Resource) -> DocumentKind {
    match resource {
        Resource::SalesInvoices => DocumentKind {
            lines: "invoice_lines",
            second_date: "due_date",
            second_required: false,
            quantity_required: false,
            status: ("UNPAID", "Unpaid"),
        },
        Resource::SalesEstimates => DocumentKind {
            lines: "estimate_lines",
            second_date: "expiry_date",
            second_required: true,
            quantity_required: true,
            status: ("DRAFT", "Draft"),
        },
        _ => DocumentKind {
            lines: "quote_lines",
            second_date: "expiry_date",
            second_required: true,
            quantity_required: true,
            status: ("DRAFT", "Draft"),
        },
    }
}

fn document(
    data: &BusinessData,
    resource: Resource,
    merged: &Map<String, Value>,
    errors: &mut Vec<SageError>,
) -> Map<String, Value> {
    let kind = document_kind(resource);
    let mut body = passthrough(merged, &["contact_id", kind.lines]);
    if let Some(id) = required(merged, "contact_id", errors) {
        match data.get(Resource::Contacts, id) {
            Some(contact) => {
                let display = contact.body.get("displayed_as").and_then(Value::as_str);
                body.insert(
                    "contact".into(),
                    link(id, display.unwrap_or(id), "contacts"),
                );
                let name = contact.input.get("name").cloned().unwrap_or(Value::Null);
                let reference = contact.input.get("reference").cloned();
                body.entry("contact_name").or_insert(name);
                body.entry("contact_reference")
                    .or_insert(reference.unwrap_or(Value::Null));
            }
            None => errors.push(invalid("contact_id", "contact must exist")),
        }
    }
    let date = required(merged, "date", errors).and_then(fields::date);
    let second = if kind.second_required {
        required(merged, kind.second_date, errors)
    } else {
        text(merged, kind.second_date)
    }
    .and_then(fields::date);
    match (date, second) {
        (Some(date), Some(second)) if second < date => errors.push(invalid(
            kind.second_date,
            format!("{} can't be before date", kind.second_date),
        )),
        (Some(date), None) if !kind.second_required => {
            let due = date + TimeDelta::days(30);
            body.insert(
                kind.second_date.into(),
                Value::String(due.format("%Y-%m-%d").to_string()),
            );
        }
        _ => {}
    }
    let lines = merged.get(kind.lines).and_then(Value::as_array);
    let lines = match lines {
        Some(lines) if !lines.is_empty() => lines.as_slice(),
        _ => {
            errors.push(invalid(
                kind.lines,
                format!("{} can't be blank", kind.lines),
            ));
            &[]
        }
    };
    let mut totals = [Decimal::ZERO; 3];
    let mut quantity_total = Decimal::ZERO;
    let mut rendered = Vec::new();
    for line in lines {
        let line = line.as_object().cloned().unwrap_or_default();
        let (value, quantity, amounts) = document_line(data, &kind, &line, errors);
        for (total, amount) in totals.iter_mut().zip(amounts) {
            *total += amount;
        }
        quantity_total += quantity;
        rendered.push(value);
    }
    body.insert(kind.lines.into(), Value::Array(rendered));
    for (name, amount) in ["net_amount", "tax_amount", "total_amount"]
        .into_iter()
        .zip(totals)
    {
        body.insert(name.into(), money(amount));
    }
    body.insert("total_quantity".into(), number(quantity_total));
    if resource == Resource::SalesInvoices {
        body.insert("outstanding_amount".into(), money(totals[2]));
        body.insert("total_paid".into(), money(Decimal::ZERO));
    }
    let (status, display) = kind.status;
    body.insert("status".into(), link(status, display, "artefact_statuses"));
    body
}

/// One line rendered, its quantity and its net, tax and total amounts.
fn document_line(
    data: &BusinessData,
    kind: &DocumentKind,
    line: &Map<String, Value>,
    errors: &mut Vec<SageError>,
) -> (Value, Decimal, [Decimal; 3]) {
    let source = |name: &str| format!("{}.{name}", kind.lines);
    let mut body = passthrough(line, &["ledger_account_id", "product_id", "service_id"]);
    let description = text(line, "description");
    if description.is_none() {
        errors.push(invalid(source("description"), "description can't be blank"));
    }
    match text(line, "ledger_account_id") {
        Some(id) => {
            let linked = ledger_link(data, id, None, &source("ledger_account_id"), errors);
            body.insert("ledger_account".into(), linked);
        }
        None => errors.push(invalid(
            source("ledger_account_id"),
            "ledger_account_id can't be blank",
        )),
    }
    if let Some(id) = text(line, "product_id") {
        match data.get(Resource::StockItems, id) {
            Some(item) => {
                let display = item.body.get("displayed_as").and_then(Value::as_str);
                body.insert(
                    "product".into(),
                    link(id, display.unwrap_or(id), "stock_items"),
                );
            }
            None => errors.push(invalid(source("product_id"), "product must exist")),
        }
    }
    if text(line, "service_id").is_some() {
        errors.push(invalid(source("service_id"), "service must exist"));
    }
    let quantity = match line.get("quantity").and_then(decimal) {
        Some(q) => q,
        None if kind.quantity_required => {
            errors.push(invalid(source("quantity"), "quantity can't be blank"));
            Decimal::ZERO
        }
        None => Decimal::ONE,
    };
    let unit_price = line.get("unit_price").and_then(decimal);
    if unit_price.is_none() {
        errors.push(invalid(source("unit_price"), "unit_price can't be blank"));
    }
    let discount = line
        .get("discount_amount")
        .and_then(decimal)
        .unwrap_or_default();
    let net = (quantity * unit_price.unwrap_or_default() - discount).round_dp(2);
    let tax = line
        .get("tax_amount")
        .and_then(decimal)
        .unwrap_or_default()
        .round_dp(2);
    body.insert(
        "id".into(),
        Value::String(Uuid::new_v4().simple().to_string()),
    );
    body.insert(
        "displayed_as".into(),
        Value::from(description.unwrap_or_default()),
    );
    body.insert("quantity".into(), number(quantity));
    body.insert("unit_price".into(), number(unit_price.unwrap_or_default()));
    body.insert("net_amount".into(), money(net));
    body.insert("tax_amount".into(), money(tax));
    body.insert("total_amount".into(), money(net + tax));
    (Value::Object(body), quantity, [net, tax, net + tax])
}

/// A document's number (kept from its creation; for a new one `SI-1`, `SQ-1`, `SE-1`,
/// `SM-1` unless one was sent), and its `displayed_as`.
fn number_document(
    data: &mut BusinessData,
    resource: Resource,
    merged: &mut Map<String, Value>,
    body: &mut Map<String, Value>,
) {
    let (field, prefix_field, default_prefix) = match resource {
        Resource::SalesInvoices => ("invoice_number", "invoice_number_prefix", "SI-"),
        Resource::SalesQuotes => ("quote_number", "quote_number_prefix", "SQ-"),
        Resource::SalesEstimates => ("estimate_number", "estimate_number_prefix", "SE-"),
        Resource::StockMovements => ("movement_number", "", "SM-"),
        _ => return,
    };
    let number = match text(merged, field) {
        Some(given) => given.to_owned(),
        None => {
            let prefix = text(merged, prefix_field)
                .unwrap_or(default_prefix)
                .to_owned();
            format!("{prefix}{}", data.next_number(resource))
        }
    };
    merged.insert(field.into(), Value::String(number.clone()));
    body.insert(field.into(), Value::String(number.clone()));
    if resource != Resource::StockMovements {
        body.insert("displayed_as".into(), Value::String(number));
    }
}

/// The attributes every object carries, first.
fn finish(
    resource: Resource,
    id: &str,
    body: &mut Map<String, Value>,
    created: Value,
    at: DateTime<Utc>,
) {
    let displayed = body.remove("displayed_as").unwrap_or(Value::Null);
    let mut full = Map::new();
    full.insert("id".into(), Value::String(id.to_owned()));
    full.insert("displayed_as".into(), displayed);
    full.insert(
        "$path".into(),
        Value::String(format!("/{}/{id}", resource.name())),
    );
    full.insert("created_at".into(), created);
    full.insert("updated_at".into(), Value::String(iso(at)));
    full.append(body);
    *body = full;
}
