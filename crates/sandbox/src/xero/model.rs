//! What a write must look like and what it stores, per collection: Xero's validation rules
//! for the fields an integration uses (names and codes unique, a contact and line items on
//! every invoice and quote, valid types, statuses and transitions, stock that cannot go
//! negative), and the records as Xero returns them (computed totals, MS-JSON dates,
//! assigned numbers and ids).
//!
//! Messages are Xero's where known (`A Contact must be specified for this type of
//! transaction`, `Invoice # must be unique.`, the spec's duplicate-name and duplicate-code
//! texts); the others are worded in the same style. Fields are matched without regard to
//! case and unknown fields are ignored, as Xero's deserialiser does; wrongly typed values are
//! refused, so a connector sending `"20"` for an amount is caught.

use super::dates;
use super::store::{
    Batch, Kind, Stored, TenantData, Write, code_key, invoice_number_key, name_key,
    quote_number_key,
};
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{Map, Number, Value, json};
use std::collections::BTreeMap;
use std::str::FromStr;
use uuid::Uuid;

/// How a write names its target.
#[derive(Clone, Debug)]
pub(crate) enum Mode {
    /// PUT on the collection: create only.
    Create,
    /// POST on the collection: update the record the element names, else create.
    Upsert,
    /// POST on one record (its lower-case id).
    Update(String),
}

/// What the write depends on besides the element.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Context<'a> {
    pub now: DateTime<Utc>,
    pub base_currency: &'a str,
    /// `unitdp=4`: unit amounts keep four decimals instead of two.
    pub four_decimals: bool,
}

/// Validates one element and writes it (and its side effects) into the batch. Nothing is
/// written when it is refused. Returns the record's id.
pub(crate) fn apply(
    batch: &mut Batch<'_>,
    kind: Kind,
    element: &Map<String, Value>,
    mode: &Mode,
    ctx: &Context<'_>,
) -> Result<String, Vec<String>> {
    let mut input = Fields::new(element);
    let target = target(batch.data(), kind, &mut input, mode)?;
    let existing = target
        .as_deref()
        .and_then(|id| batch.data().records(kind).get(id))
        .cloned();
    match kind {
        Kind::Contacts => contact(batch, input, existing, ctx),
        Kind::Items => item(batch, input, existing, ctx),
        Kind::Invoices => invoice(batch, input, existing, ctx),
        Kind::Quotes => quote(batch, input, existing, ctx),
    }
}

/// The lower-case id of the record the element updates, `None` to create.
fn target(
    data: &TenantData,
    kind: Kind,
    input: &mut Fields<'_>,
    mode: &Mode,
) -> Result<Option<String>, Vec<String>> {
    let records = data.records(kind);
    let named = input.text(kind.id_field());
    let named = match named.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(id) => {
            if Uuid::parse_str(id).is_err() {
                return Err(vec![format!(
                    "{} '{id}' is not a valid GUID.",
                    kind.id_field()
                )]);
            }
            Some(id.to_ascii_lowercase())
        }
    };
    let noun = noun(kind);
    match mode {
        Mode::Update(id) => match named {
            Some(named) if named != *id => Err(vec![format!(
                "The {} in the body does not match the one in the URL.",
                kind.id_field()
            )]),
            _ => Ok(Some(id.clone())),
        },
        Mode::Create => match named {
            Some(id) if records.get(&id).is_some() => Err(vec![format!(
                "The {noun} with {} '{id}' already exists; PUT only creates, use POST to update it.",
                kind.id_field()
            )]),
            Some(id) => Err(vec![format!(
                "The {noun} with {} '{id}' could not be found.",
                kind.id_field()
            )]),
            None => Ok(None),
        },
        Mode::Upsert => match named {
            Some(id) if records.get(&id).is_some() => Ok(Some(id)),
            Some(id) => Err(vec![format!(
                "The {noun} with {} '{id}' could not be found.",
                kind.id_field()
            )]),
            // Items are matched by their code, which is their business identity in Xero.
            None if kind == Kind::Items => Ok(input
                .text("Code")
                .and_then(|code| records.find(&code_key(&code)))
                .and_then(|s| s.body.get("ItemID").and_then(Value::as_str))
                .map(str::to_ascii_lowercase)),
            None => Ok(None),
        },
    }
}

fn noun(kind: Kind) -> &'static str {
    match kind {
        Kind::Contacts => "contact",
        Kind::Items => "item",
        Kind::Invoices => "invoice",
        Kind::Quotes => "quote",
    }
}

// --- contacts ---

const CONTACT_TEXT: &[(&str, usize)] = &[
    ("ContactNumber", 50),
    ("AccountNumber", 50),
    ("FirstName", 255),
    ("LastName", 255),
    ("CompanyNumber", 50),
    ("EmailAddress", 255),
    ("BankAccountDetails", 255),
    ("TaxNumber", 50),
    ("AccountsReceivableTaxType", 255),
    ("AccountsPayableTaxType", 255),
    ("DefaultCurrency", 3),
    ("XeroNetworkKey", 255),
    ("SalesDefaultAccountCode", 255),
    ("PurchasesDefaultAccountCode", 255),
];

const CONTACT_ARRAYS: &[&str] = &[
    "Addresses",
    "Phones",
    "ContactPersons",
    "SalesTrackingCategories",
    "PurchasesTrackingCategories",
];

const CONTACT_OBJECTS: &[&str] = &["PaymentTerms", "BatchPayments", "BrandingTheme"];

const LINE_AMOUNT_TYPES: &[&str] = &["INCLUSIVE", "EXCLUSIVE", "NONE"];

fn contact(
    batch: &mut Batch<'_>,
    mut input: Fields<'_>,
    existing: Option<Stored>,
    ctx: &Context<'_>,
) -> Result<String, Vec<String>> {
    let mut body = existing
        .as_ref()
        .map(|s| s.body.clone())
        .unwrap_or_else(|| {
            let mut body = Map::new();
            body.insert("ContactStatus".into(), json!("ACTIVE"));
            for array in ["Addresses", "Phones", "ContactGroups", "ContactPersons"] {
                body.insert(array.into(), json!([]));
            }
            body.insert("IsSupplier".into(), json!(false));
            body.insert("IsCustomer".into(), json!(false));
            body
        });

    match input.text("Name") {
        Some(name) if name.trim().is_empty() => input.error("The contact name must be specified."),
        Some(name) => {
            input.check_len("Name", &name, 255);
            body.insert("Name".into(), json!(name));
        }
        None if existing.is_none() => input.error("The contact name must be specified."),
        None => {}
    }
    for (field, max) in CONTACT_TEXT {
        if let Some(value) = input.text(field) {
            input.check_len(field, &value, *max);
            body.insert((*field).into(), json!(value));
        }
    }
    if let Some(email) = body.get("EmailAddress").and_then(Value::as_str)
        && !email.is_empty()
        && !valid_email(email)
    {
        input.error("Email address must be valid.");
    }
    if let Some(kind) = input.text("TaxNumberType") {
        input.one_of("TaxNumberType", &kind, &["SSN", "EIN", "ITIN", "ATIN"]);
        body.insert("TaxNumberType".into(), json!(kind));
    }
    for field in [
        "SalesDefaultLineAmountType",
        "PurchasesDefaultLineAmountType",
    ] {
        if let Some(value) = input.text(field) {
            input.one_of(field, &value, LINE_AMOUNT_TYPES);
            body.insert(field.into(), json!(value));
        }
    }
    if let Some(status) = input.text("ContactStatus") {
        if status == "ACTIVE" || status == "ARCHIVED" {
            body.insert("ContactStatus".into(), json!(status));
        } else {
            input.error(format!(
                "ContactStatus '{status}' is not valid; use ACTIVE or ARCHIVED."
            ));
        }
    }
    for field in CONTACT_ARRAYS {
        if let Some(value) = input.array(field) {
            body.insert((*field).into(), Value::Array(value));
        }
    }
    for field in CONTACT_OBJECTS {
        if let Some(value) = input.object(field) {
            body.insert((*field).into(), Value::Object(value));
        }
    }

    let id = existing_id(&existing, Kind::Contacts);
    // Names are unique among active contacts, whatever their case.
    if body.get("ContactStatus").and_then(Value::as_str) != Some("ARCHIVED")
        && let Some(name) = body.get("Name").and_then(Value::as_str)
        && let Some(holder) = batch.data().records(Kind::Contacts).find(&name_key(name))
        && id.as_deref() != holder.body.get("ContactID").and_then(Value::as_str)
    {
        input.error(format!(
            "The contact name {} is already assigned to another contact. The contact name \
             must be unique across all active contacts.",
            name.trim()
        ));
    }
    input.finish()?;

    let (id, write) = id_and_write(id);
    body.insert("ContactID".into(), json!(id));
    body.insert("HasValidationErrors".into(), json!(false));
    let stamp = batch.data_mut().stamp(ctx.now);
    body.insert(
        "UpdatedDateUTC".into(),
        json!(dates::ms_date(stamp, Kind::Contacts.offset_dates())),
    );
    batch.put(
        Kind::Contacts,
        &id,
        Stored {
            body,
            updated: stamp,
        },
        write,
    );
    Ok(id)
}

fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.contains(char::is_whitespace)
}

// --- items ---

const ITEM_TEXT: &[(&str, usize)] = &[
    ("Name", 50),
    ("Description", 4000),
    ("PurchaseDescription", 4000),
    ("InventoryAssetAccountCode", 255),
];

fn item(
    batch: &mut Batch<'_>,
    mut input: Fields<'_>,
    existing: Option<Stored>,
    ctx: &Context<'_>,
) -> Result<String, Vec<String>> {
    let mut body = existing
        .as_ref()
        .map(|s| s.body.clone())
        .unwrap_or_else(|| {
            let mut body = Map::new();
            body.insert("IsSold".into(), json!(true));
            body.insert("IsPurchased".into(), json!(true));
            body.insert("PurchaseDetails".into(), json!({}));
            body.insert("SalesDetails".into(), json!({}));
            body
        });

    match input.text("Code") {
        Some(code) if code.trim().is_empty() => input.error("Item Code must be specified."),
        Some(code) => {
            input.check_len("Code", &code, 30);
            body.insert("Code".into(), json!(code));
        }
        None if existing.is_none() => input.error("Item Code must be specified."),
        None => {}
    }
    for (field, max) in ITEM_TEXT {
        if let Some(value) = input.text(field) {
            input.check_len(field, &value, *max);
            body.insert((*field).into(), json!(value));
        }
    }
    for field in ["IsSold", "IsPurchased"] {
        if let Some(value) = input.boolean(field) {
            body.insert(field.into(), json!(value));
        }
    }
    for field in ["SalesDetails", "PurchaseDetails"] {
        if let Some(details) = input.nested(field) {
            let details = price_details(field, details, &mut input, ctx);
            body.insert(field.into(), Value::Object(details));
        }
    }

    let id = existing_id(&existing, Kind::Items);
    if let Some(code) = body.get("Code").and_then(Value::as_str)
        && let Some(holder) = batch.data().records(Kind::Items).find(&code_key(code))
        && id.as_deref() != holder.body.get("ItemID").and_then(Value::as_str)
    {
        // The spec's example quotes the code between doubled apostrophes; so does this.
        input.error(format!(
            "Price List Item with Code ''{}'' already exists",
            code.trim()
        ));
    }
    input.finish()?;

    // Tracked when both inventory accounts are set; stock is then kept (and read-only).
    let tracked = body
        .get("InventoryAssetAccountCode")
        .and_then(Value::as_str)
        .is_some_and(|c| !c.is_empty())
        && body
            .get("PurchaseDetails")
            .and_then(|d| d.get("COGSAccountCode"))
            .and_then(Value::as_str)
            .is_some_and(|c| !c.is_empty());
    body.insert("IsTrackedAsInventory".into(), json!(tracked));
    if tracked {
        for field in ["QuantityOnHand", "TotalCostPool"] {
            body.entry(field).or_insert(json!(0.0));
        }
    }

    let (id, write) = id_and_write(id);
    body.insert("ItemID".into(), json!(id));
    let stamp = batch.data_mut().stamp(ctx.now);
    body.insert(
        "UpdatedDateUTC".into(),
        json!(dates::ms_date(stamp, Kind::Items.offset_dates())),
    );
    batch.put(
        Kind::Items,
        &id,
        Stored {
            body,
            updated: stamp,
        },
        write,
    );
    Ok(id)
}

fn price_details(
    field: &str,
    mut details: Fields<'_>,
    outer: &mut Fields<'_>,
    ctx: &Context<'_>,
) -> Map<String, Value> {
    let mut out = Map::new();
    if let Some(price) = details.number("UnitPrice") {
        out.insert(
            "UnitPrice".into(),
            money(round(price, if ctx.four_decimals { 4 } else { 2 })),
        );
    }
    for text in ["AccountCode", "COGSAccountCode", "TaxType"] {
        if let Some(value) = details.text(text) {
            out.insert(text.into(), json!(value));
        }
    }
    for error in details.errors {
        outer.error(format!("{field}: {error}"));
    }
    out
}

// --- invoices and quotes ---

const INVOICE_TYPES: &[&str] = &["ACCREC", "ACCPAY"];
const INVOICE_CREATE_STATUSES: &[&str] = &["DRAFT", "SUBMITTED", "AUTHORISED"];
const QUOTE_STATUSES: &[&str] = &[
    "DRAFT", "SENT", "DECLINED", "ACCEPTED", "INVOICED", "DELETED",
];

/// What invoices and quotes share: contact, lines, dates and totals.
struct Document {
    body: Map<String, Value>,
    /// Stock moved by the lines when the document counts (item id → quantity).
    quantities: BTreeMap<String, Decimal>,
}

fn invoice(
    batch: &mut Batch<'_>,
    mut input: Fields<'_>,
    existing: Option<Stored>,
    ctx: &Context<'_>,
) -> Result<String, Vec<String>> {
    let previous = existing.as_ref().map(|s| &s.body);
    let previous_status = previous
        .and_then(|b| b.get("Status"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    if let Some(status) = &previous_status
        && matches!(status.as_str(), "PAID" | "VOIDED" | "DELETED")
    {
        return Err(vec!["Invoice not of valid status for modification".into()]);
    }

    let kind = match input.text("Type") {
        Some(kind) if INVOICE_TYPES.contains(&kind.as_str()) => Some(kind),
        Some(_) => {
            input.error("Invoice not of valid type for creation");
            None
        }
        None => previous
            .and_then(|b| b.get("Type"))
            .and_then(Value::as_str)
            .map(str::to_owned),
    };
    if kind.is_none() && previous.is_none() && input.errors.is_empty() {
        input.error("Invoice not of valid type for creation");
    }
    let sales = kind.as_deref() == Some("ACCREC");

    let status = match (input.text("Status"), &previous_status) {
        (Some(status), None) if INVOICE_CREATE_STATUSES.contains(&status.as_str()) => status,
        (Some(_), None) => {
            input.error("Invoice not of valid status for creation");
            "DRAFT".into()
        }
        (Some(status), Some(from)) => {
            if !invoice_transition_allowed(from, &status) {
                input.error("Invoice not of valid status for modification");
            }
            status
        }
        (None, Some(from)) => from.clone(),
        (None, None) => "DRAFT".into(),
    };

    let line_amount_types = input
        .text("LineAmountTypes")
        .or_else(|| text_of(previous, "LineAmountTypes"))
        .unwrap_or_else(|| "Exclusive".into());
    input.one_of(
        "LineAmountTypes",
        &line_amount_types,
        &["Exclusive", "Inclusive", "NoTax"],
    );

    let mut document = document(
        batch.data(),
        Kind::Invoices,
        &mut input,
        previous,
        sales,
        &line_amount_types,
        ctx,
    );
    let body = &mut document.body;
    if let Some(kind) = &kind {
        body.insert("Type".into(), json!(kind));
    }
    body.insert("Status".into(), json!(status));
    for field in ["Reference", "Url", "BrandingThemeID"] {
        if let Some(value) = input.text(field) {
            body.insert(field.into(), json!(value));
        }
    }
    if let Some(sent) = input.boolean("SentToContact") {
        body.insert("SentToContact".into(), json!(sent));
    }
    for field in ["DueDate", "ExpectedPaymentDate", "PlannedPaymentDate"] {
        if let Some(day) = input.day(field) {
            body.insert(field.into(), json!(dates::ms_day(day, true)));
            if field == "DueDate" {
                body.insert("DueDateString".into(), json!(dates::day_string(day)));
            }
        }
    }

    let id = existing_id(&existing, Kind::Invoices);
    let number = input
        .text("InvoiceNumber")
        .filter(|n| !n.trim().is_empty())
        .or_else(|| text_of(previous, "InvoiceNumber"));
    if let Some(number) = &number {
        input.check_len("InvoiceNumber", number, 255);
        let live = !matches!(status.as_str(), "DELETED" | "VOIDED");
        if sales
            && live
            && let Some(holder) = batch
                .data()
                .records(Kind::Invoices)
                .find(&invoice_number_key(number))
            && id.as_deref() != holder.body.get("InvoiceID").and_then(Value::as_str)
        {
            input.error("Invoice # must be unique.");
        }
    }

    // Approved sales invoices take tracked items out of stock.
    let counts = |status: &str| sales && matches!(status, "AUTHORISED" | "PAID");
    let moves = stock_moves(
        batch.data(),
        previous.filter(|_| previous_status.as_deref().is_some_and(counts)),
        counts(&status).then_some(&document.quantities),
    );
    let stock = check_stock(batch.data(), &moves, &mut input);
    input.finish()?;

    let mut body = document.body;
    let number = match number {
        Some(number) => Some(number),
        None if sales => Some(next_number(batch, "INV", Kind::Invoices)),
        None => None,
    };
    if let Some(number) = number {
        body.insert("InvoiceNumber".into(), json!(number));
    }
    let total = body.get("Total").cloned().unwrap_or(json!(0.0));
    body.insert("AmountDue".into(), total);
    body.insert("AmountPaid".into(), json!(0.0));
    body.insert("AmountCredited".into(), json!(0.0));
    for (field, default) in [
        ("Payments", json!([])),
        ("CreditNotes", json!([])),
        ("Prepayments", json!([])),
        ("Overpayments", json!([])),
        ("SentToContact", json!(false)),
        ("HasAttachments", json!(false)),
        ("HasErrors", json!(false)),
    ] {
        body.entry(field).or_insert(default);
    }

    let (id, write) = id_and_write(id);
    body.insert("InvoiceID".into(), json!(id));
    let stamp = batch.data_mut().stamp(ctx.now);
    body.insert(
        "UpdatedDateUTC".into(),
        json!(dates::ms_date(stamp, Kind::Invoices.offset_dates())),
    );
    body.insert(
        "UpdatedDateUTCString".into(),
        json!(dates::utc_string(stamp)),
    );
    let contact_id = body
        .get("Contact")
        .and_then(|c| c.get("ContactID"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    batch.put(
        Kind::Invoices,
        &id,
        Stored {
            body,
            updated: stamp,
        },
        write,
    );
    apply_stock(batch, stock);
    // A contact with a sales invoice is a customer; Xero does not bump its UpdatedDateUTC.
    if sales
        && let Some(contact_id) = contact_id
        && let Some(contact) = batch.data().records(Kind::Contacts).get(&contact_id)
        && contact.body.get("IsCustomer") != Some(&json!(true))
    {
        let mut contact = contact.clone();
        contact.body.insert("IsCustomer".into(), json!(true));
        batch.touch(Kind::Contacts, &contact_id, contact);
    }
    Ok(id)
}

/// Xero's documented transitions; PAID, VOIDED and DELETED are final.
fn invoice_transition_allowed(from: &str, to: &str) -> bool {
    match from {
        "DRAFT" | "SUBMITTED" => matches!(to, "DRAFT" | "SUBMITTED" | "AUTHORISED" | "DELETED"),
        "AUTHORISED" => matches!(to, "AUTHORISED" | "VOIDED"),
        _ => false,
    }
}

fn quote(
    batch: &mut Batch<'_>,
    mut input: Fields<'_>,
    existing: Option<Stored>,
    ctx: &Context<'_>,
) -> Result<String, Vec<String>> {
    let previous = existing.as_ref().map(|s| &s.body);
    if text_of(previous, "Status").as_deref() == Some("DELETED") {
        return Err(vec!["Quote not of valid status for modification".into()]);
    }
    let status = match input.text("Status") {
        Some(status) => {
            input.one_of("Status", &status, QUOTE_STATUSES);
            if previous.is_none() && matches!(status.as_str(), "INVOICED" | "DELETED") {
                input.error("Quote not of valid status for creation");
            }
            status
        }
        None => text_of(previous, "Status").unwrap_or_else(|| "DRAFT".into()),
    };
    let line_amount_types = input
        .text("LineAmountTypes")
        .or_else(|| text_of(previous, "LineAmountTypes"))
        .unwrap_or_else(|| "EXCLUSIVE".into());
    input.one_of(
        "LineAmountTypes",
        &line_amount_types,
        &["EXCLUSIVE", "INCLUSIVE", "NOTAX"],
    );

    let document = document(
        batch.data(),
        Kind::Quotes,
        &mut input,
        previous,
        true,
        &line_amount_types,
        ctx,
    );
    let mut body = document.body;
    body.insert("Status".into(), json!(status));
    for (field, max) in [
        ("Reference", 4000),
        ("Terms", 4000),
        ("Title", 100),
        ("Summary", 3000),
        ("BrandingThemeID", 36),
    ] {
        if let Some(value) = input.text(field) {
            input.check_len(field, &value, max);
            body.insert(field.into(), json!(value));
        }
    }
    if let Some(day) = input.day("ExpiryDate") {
        body.insert("ExpiryDate".into(), json!(dates::ms_day(day, false)));
        body.insert("ExpiryDateString".into(), json!(dates::day_string(day)));
    }
    body.entry("Terms").or_insert(json!(""));

    let id = existing_id(&existing, Kind::Quotes);
    let number = input
        .text("QuoteNumber")
        .filter(|n| !n.trim().is_empty())
        .or_else(|| text_of(previous, "QuoteNumber"));
    if let Some(number) = &number {
        input.check_len("QuoteNumber", number, 255);
        if let Some(holder) = batch
            .data()
            .records(Kind::Quotes)
            .find(&quote_number_key(number))
            && id.as_deref() != holder.body.get("QuoteID").and_then(Value::as_str)
        {
            input.error("Quote # must be unique.");
        }
    }
    input.finish()?;

    let number = number.unwrap_or_else(|| next_number(batch, "QU", Kind::Quotes));
    body.insert("QuoteNumber".into(), json!(number));
    let (id, write) = id_and_write(id);
    body.insert("QuoteID".into(), json!(id));
    let stamp = batch.data_mut().stamp(ctx.now);
    body.insert(
        "UpdatedDateUTC".into(),
        json!(dates::ms_date(stamp, Kind::Quotes.offset_dates())),
    );
    batch.put(
        Kind::Quotes,
        &id,
        Stored {
            body,
            updated: stamp,
        },
        write,
    );
    Ok(id)
}

/// Contact, date, currency, lines and totals, merged over the previous version.
fn document(
    data: &TenantData,
    kind: Kind,
    input: &mut Fields<'_>,
    previous: Option<&Map<String, Value>>,
    sales: bool,
    line_amount_types: &str,
    ctx: &Context<'_>,
) -> Document {
    // Invoices write `Date` with `+0000`, quotes without, as in the spec's examples.
    let offset_dates = kind.offset_dates();
    let mut body = previous.cloned().unwrap_or_default();

    match input.nested("Contact") {
        Some(contact) => {
            if let Some(found) = find_contact(data, contact, input) {
                body.insert("Contact".into(), found);
            }
        }
        None if previous.is_none() => {
            input.error("A Contact must be specified for this type of transaction");
        }
        None => {}
    }

    let day = match input.day("Date") {
        Some(day) => Some(day),
        None if previous.is_none() => Some(ctx.now.date_naive()),
        None => None,
    };
    if let Some(day) = day {
        body.insert("Date".into(), json!(dates::ms_day(day, offset_dates)));
        body.insert("DateString".into(), json!(dates::day_string(day)));
    }
    if let Some(currency) = input.text("CurrencyCode") {
        if currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase()) {
            body.insert("CurrencyCode".into(), json!(currency));
        } else {
            input.error(format!(
                "CurrencyCode '{currency}' is not a valid currency code."
            ));
        }
    }
    body.entry("CurrencyCode")
        .or_insert(json!(ctx.base_currency));
    match input.number("CurrencyRate") {
        Some(rate) if rate <= Decimal::ZERO => input.error("CurrencyRate must be positive."),
        Some(rate) => {
            body.insert("CurrencyRate".into(), money(rate));
        }
        None => {
            body.entry("CurrencyRate").or_insert(json!(1.0));
        }
    }
    body.insert("LineAmountTypes".into(), json!(line_amount_types));

    let mut quantities = BTreeMap::new();
    let lines = match input.array("LineItems") {
        Some(lines) => {
            if lines.is_empty() {
                input.error("One or more line items must be specified");
            }
            Some(build_lines(
                data,
                &lines,
                sales,
                ctx,
                input,
                &mut quantities,
            ))
        }
        None if previous.is_none() => {
            input.error("One or more line items must be specified");
            Some(Vec::new())
        }
        None => {
            // Lines unchanged: their stock is what they held.
            quantities = line_quantities(data, previous);
            None
        }
    };
    if let Some(lines) = lines {
        let totals = totals(&lines, line_amount_types);
        body.insert(
            "LineItems".into(),
            Value::Array(lines.into_iter().map(|l| Value::Object(l.json)).collect()),
        );
        body.insert("SubTotal".into(), money(totals.sub_total));
        body.insert("TotalTax".into(), money(totals.total_tax));
        body.insert("Total".into(), money(totals.total));
        body.insert(
            "IsDiscounted".into(),
            json!(totals.discount > Decimal::ZERO),
        );
        if totals.discount > Decimal::ZERO {
            body.insert("TotalDiscount".into(), money(totals.discount));
        } else {
            body.remove("TotalDiscount");
        }
    }
    Document { body, quantities }
}

/// Finds the contact an invoice or quote names, by ContactID, ContactNumber or Name.
fn find_contact(
    data: &TenantData,
    mut contact: Fields<'_>,
    input: &mut Fields<'_>,
) -> Option<Value> {
    let contacts = data.records(Kind::Contacts);
    let found = if let Some(id) = contact.text("ContactID").filter(|s| !s.trim().is_empty()) {
        let found = contacts.get(id.trim());
        if found.is_none() {
            input.error(format!(
                "The contact with ContactID '{id}' could not be found."
            ));
        }
        found
    } else if let Some(number) = contact
        .text("ContactNumber")
        .filter(|s| !s.trim().is_empty())
    {
        let found = contacts.find(&format!("ContactNumber:{}", number.trim()));
        if found.is_none() {
            input.error(format!(
                "The contact with ContactNumber '{number}' could not be found."
            ));
        }
        found
    } else if let Some(name) = contact.text("Name").filter(|s| !s.trim().is_empty()) {
        let found = contacts.find(&name_key(&name));
        if found.is_none() {
            input.error(format!("The contact named '{name}' could not be found."));
        }
        found
    } else {
        input.error("A Contact must be specified for this type of transaction");
        None
    };
    for error in contact.errors {
        input.error(format!("Contact: {error}"));
    }
    let found = found?;
    Some(json!({
        "ContactID": found.body.get("ContactID").cloned().unwrap_or(Value::Null),
        "Name": found.body.get("Name").cloned().unwrap_or(Value::Null),
    }))
}

struct Line {
    json: Map<String, Value>,
    line_amount: Decimal,
    tax: Decimal,
    discount: Decimal,
}

fn build_lines(
    data: &TenantData,
    lines: &[Value],
    sales: bool,
    ctx: &Context<'_>,
    input: &mut Fields<'_>,
    quantities: &mut BTreeMap<String, Decimal>,
) -> Vec<Line> {
    let mut built = Vec::with_capacity(lines.len());
    for (index, line) in lines.iter().enumerate() {
        let Value::Object(line) = line else {
            input.error(format!("LineItems[{index}] must be an object."));
            continue;
        };
        let mut fields = Fields::new(line);
        let mut json = Map::new();
        let line_id = fields
            .text("LineItemID")
            .filter(|id| Uuid::parse_str(id).is_ok())
            .unwrap_or_else(|| Uuid::new_v4().to_string());

        let item = fields
            .text("ItemCode")
            .filter(|c| !c.trim().is_empty())
            .and_then(|code| {
                let item = data.records(Kind::Items).find(&code_key(&code));
                if item.is_none() {
                    fields.error(format!("Item code '{code}' is not valid."));
                }
                item
            });
        let item_detail = |field: &str| {
            item.and_then(|i| i.body.get("SalesDetails"))
                .and_then(|d| d.get(field))
                .cloned()
        };
        let description = fields.text("Description").or_else(|| {
            item.and_then(|i| i.body.get("Description").or_else(|| i.body.get("Name")))
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        match description.filter(|d| !d.trim().is_empty()) {
            Some(description) => {
                fields.check_len("Description", &description, 4000);
                json.insert("Description".into(), json!(description));
            }
            None => fields.error("The description field is mandatory for each line item."),
        }

        let discount_rate = fields.number("DiscountRate");
        let discount_amount = fields.number("DiscountAmount");
        if !sales && (discount_rate.is_some() || discount_amount.is_some()) {
            fields.error("Discounts are only supported on sales documents.");
        }
        let quantity = fields.number("Quantity");
        let unit = fields.number("UnitAmount").or_else(|| {
            item_detail("UnitPrice")
                .as_ref()
                .and_then(Value::as_number)
                .and_then(decimal)
        });
        let given_amount = fields.number("LineAmount");
        let unit_dp = if ctx.four_decimals { 4 } else { 2 };
        let (quantity, unit) = match (quantity, unit, given_amount) {
            (Some(q), Some(u), _) => (Some(q), Some(u)),
            (None, Some(u), Some(a)) if !u.is_zero() => (Some(a / u), Some(u)),
            (Some(q), None, Some(a)) if !q.is_zero() => (Some(q), Some(a / q)),
            (None, None, Some(a)) => (Some(Decimal::ONE), Some(a)),
            (None, Some(u), _) => (Some(Decimal::ONE), Some(u)),
            (Some(q), None, _) => (Some(q), Some(Decimal::ZERO)),
            (None, None, None) => (None, None),
        };
        let quantity = quantity.map(|q| round(q, 4));
        let unit = unit.map(|u| round(u, unit_dp));
        let gross = match (quantity, unit) {
            (Some(q), Some(u)) => q * u,
            _ => Decimal::ZERO,
        };
        let line_amount = match (discount_rate, discount_amount) {
            (Some(rate), _) => gross * (Decimal::ONE_HUNDRED - rate) / Decimal::ONE_HUNDRED,
            (None, Some(amount)) => gross - amount,
            (None, None) => gross,
        };
        let line_amount = round(line_amount, 2);
        let tax = round(fields.number("TaxAmount").unwrap_or(Decimal::ZERO), 2);
        if let Some(q) = quantity {
            json.insert("Quantity".into(), money(q));
        }
        if let Some(u) = unit {
            json.insert("UnitAmount".into(), money(u));
        }
        json.insert("LineAmount".into(), money(line_amount));
        json.insert("TaxAmount".into(), money(tax));
        if let Some(rate) = discount_rate {
            json.insert("DiscountRate".into(), money(rate));
        }
        if let Some(amount) = discount_amount {
            json.insert("DiscountAmount".into(), money(amount));
        }
        for field in ["AccountCode", "TaxType"] {
            let value = fields
                .text(field)
                .or_else(|| item_detail(field).and_then(|v| v.as_str().map(str::to_owned)));
            if let Some(value) = value {
                json.insert(field.into(), json!(value));
            }
        }
        json.insert(
            "Tracking".into(),
            Value::Array(fields.array("Tracking").unwrap_or_default()),
        );
        if let Some(item) = item {
            let code = item.body.get("Code").cloned().unwrap_or(Value::Null);
            let item_id = item.body.get("ItemID").cloned().unwrap_or(Value::Null);
            json.insert("ItemCode".into(), code.clone());
            json.insert(
                "Item".into(),
                json!({"ItemID": item_id, "Name": item.body.get("Name").cloned().unwrap_or(Value::Null), "Code": code}),
            );
            if item.body.get("IsTrackedAsInventory") == Some(&json!(true))
                && let (Some(id), Some(q)) = (item_id.as_str(), quantity)
            {
                *quantities.entry(id.to_ascii_lowercase()).or_default() += q;
            }
        }
        json.insert("LineItemID".into(), json!(line_id));

        for error in fields.errors {
            input.error(error);
        }
        let discount = round(gross - line_amount, 2).max(Decimal::ZERO);
        built.push(Line {
            json,
            line_amount,
            tax,
            discount,
        });
    }
    built
}

/// Tracked-item quantities on a stored document's lines.
fn line_quantities(
    data: &TenantData,
    body: Option<&Map<String, Value>>,
) -> BTreeMap<String, Decimal> {
    let mut quantities = BTreeMap::new();
    let lines = body
        .and_then(|b| b.get("LineItems"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for line in lines {
        let item_id = line
            .get("Item")
            .and_then(|i| i.get("ItemID"))
            .and_then(Value::as_str);
        let quantity = line
            .get("Quantity")
            .and_then(Value::as_number)
            .and_then(decimal);
        if let (Some(id), Some(q)) = (item_id, quantity)
            && data
                .records(Kind::Items)
                .get(id)
                .is_some_and(|i| i.body.get("IsTrackedAsInventory") == Some(&json!(true)))
        {
            *quantities.entry(id.to_ascii_lowercase()).or_default() += q;
        }
    }
    quantities
}

/// Net quantity leaving stock per item: what the new version takes minus what the old one
/// took.
fn stock_moves(
    data: &TenantData,
    before: Option<&Map<String, Value>>,
    after: Option<&BTreeMap<String, Decimal>>,
) -> BTreeMap<String, Decimal> {
    let mut moves = after.cloned().unwrap_or_default();
    for (id, q) in line_quantities(data, before) {
        *moves.entry(id).or_default() -= q;
    }
    moves.retain(|_, q| !q.is_zero());
    moves
}

/// New stock levels, refusing any that would fall below zero.
fn check_stock(
    data: &TenantData,
    moves: &BTreeMap<String, Decimal>,
    input: &mut Fields<'_>,
) -> Vec<(String, Stored)> {
    let mut updated = Vec::new();
    for (id, out) in moves {
        let Some(item) = data.records(Kind::Items).get(id) else {
            continue;
        };
        let on_hand = item
            .body
            .get("QuantityOnHand")
            .and_then(Value::as_number)
            .and_then(decimal)
            .unwrap_or_default();
        let left = on_hand - out;
        if left < Decimal::ZERO {
            let code = item.body.get("Code").and_then(Value::as_str).unwrap_or("");
            input.error(format!(
                "The quantity on hand for item '{code}' cannot go below zero ({on_hand} on \
                 hand, {out} required)."
            ));
            continue;
        }
        let mut item = item.clone();
        item.body.insert("QuantityOnHand".into(), money(left));
        updated.push((id.clone(), item));
    }
    updated
}

fn apply_stock(batch: &mut Batch<'_>, stock: Vec<(String, Stored)>) {
    // Stock moves do not bump the item's UpdatedDateUTC: an import of changed items does
    // not see them, as in Xero, where QuantityOnHand is read-only and moves with documents.
    for (id, item) in stock {
        batch.touch(Kind::Items, &id, item);
    }
}

struct Totals {
    sub_total: Decimal,
    total_tax: Decimal,
    total: Decimal,
    discount: Decimal,
}

fn totals(lines: &[Line], line_amount_types: &str) -> Totals {
    let amounts: Decimal = lines.iter().map(|l| l.line_amount).sum();
    let discount = lines.iter().map(|l| l.discount).sum();
    let tax: Decimal = lines.iter().map(|l| l.tax).sum();
    match line_amount_types.to_ascii_uppercase().as_str() {
        "INCLUSIVE" => Totals {
            sub_total: amounts - tax,
            total_tax: tax,
            total: amounts,
            discount,
        },
        "NOTAX" => Totals {
            sub_total: amounts,
            total_tax: Decimal::ZERO,
            total: amounts,
            discount,
        },
        _ => Totals {
            sub_total: amounts,
            total_tax: tax,
            total: amounts + tax,
            discount,
        },
    }
}

fn next_number(batch: &mut Batch<'_>, prefix: &str, kind: Kind) -> String {
    loop {
        let data = batch.data_mut();
        let counter = match kind {
            Kind::Quotes => &mut data.next_quote_number,
            _ => &mut data.next_invoice_number,
        };
        *counter += 1;
        let number = format!("{prefix}-{:04}", *counter);
        let key = match kind {
            Kind::Quotes => quote_number_key(&number),
            _ => invoice_number_key(&number),
        };
        if batch.data().records(kind).find(&key).is_none() {
            return number;
        }
    }
}

/// A stored record as the API returns it: documents show their contact as it is now, and
/// unit amounts have two decimals unless the request asked `unitdp=4`.
pub(crate) fn render(
    data: &TenantData,
    kind: Kind,
    body: &Map<String, Value>,
    four_decimals: bool,
) -> Map<String, Value> {
    let mut out = body.clone();
    let two = |value: &mut Value| {
        if let Some(n) = value.as_number().and_then(decimal) {
            *value = money(round(n, 2));
        }
    };
    match kind {
        Kind::Invoices | Kind::Quotes => {
            let contact = out
                .get("Contact")
                .and_then(|c| c.get("ContactID"))
                .and_then(Value::as_str)
                .and_then(|id| data.records(Kind::Contacts).get(id));
            if let Some(contact) = contact {
                let field = |name: &str| contact.body.get(name).cloned().unwrap_or(json!(""));
                let summary = if kind == Kind::Invoices {
                    json!({
                        "ContactID": field("ContactID"),
                        "Name": field("Name"),
                        "Addresses": [],
                        "Phones": [],
                        "ContactGroups": [],
                        "ContactPersons": [],
                        "HasValidationErrors": false
                    })
                } else {
                    json!({
                        "ContactID": field("ContactID"),
                        "Name": field("Name"),
                        "EmailAddress": field("EmailAddress")
                    })
                };
                out.insert("Contact".into(), summary);
            }
            if !four_decimals && let Some(Value::Array(lines)) = out.get_mut("LineItems") {
                for line in lines {
                    if let Some(unit) = line.get_mut("UnitAmount") {
                        two(unit);
                    }
                }
            }
        }
        Kind::Items if !four_decimals => {
            for details in ["SalesDetails", "PurchaseDetails"] {
                if let Some(price) = out.get_mut(details).and_then(|d| d.get_mut("UnitPrice")) {
                    two(price);
                }
            }
        }
        Kind::Items | Kind::Contacts => {}
    }
    out
}

// --- shared helpers ---

fn existing_id(existing: &Option<Stored>, kind: Kind) -> Option<String> {
    existing
        .as_ref()
        .and_then(|s| s.body.get(kind.id_field()))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn id_and_write(existing: Option<String>) -> (String, Write) {
    match existing {
        Some(id) => (id, Write::Updated),
        None => (Uuid::new_v4().to_string(), Write::Created),
    }
}

fn text_of(body: Option<&Map<String, Value>>, field: &str) -> Option<String> {
    body.and_then(|b| b.get(field))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

pub(crate) fn decimal(number: &Number) -> Option<Decimal> {
    let text = number.to_string();
    Decimal::from_str(&text)
        .or_else(|_| Decimal::from_scientific(&text))
        .ok()
}

pub(crate) fn round(value: Decimal, dp: u32) -> Decimal {
    value.round_dp_with_strategy(dp, RoundingStrategy::MidpointAwayFromZero)
}

/// A JSON number for an amount. JSON numbers carry no scale, so `40.00` leaves as `40.0`.
pub(crate) fn money(value: Decimal) -> Value {
    value
        .normalize()
        .to_f64()
        .and_then(Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

/// An element's fields, found without regard to case, with the errors met reading them.
pub(crate) struct Fields<'a> {
    map: &'a Map<String, Value>,
    pub(crate) errors: Vec<String>,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(map: &'a Map<String, Value>) -> Self {
        Self {
            map,
            errors: Vec::new(),
        }
    }

    fn raw(&self, name: &str) -> Option<&'a Value> {
        let map: &'a Map<String, Value> = self.map;
        map.get(name)
            .or_else(|| {
                map.iter()
                    .find(|(key, _)| key.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v)
            })
            .filter(|v| !v.is_null())
    }

    pub(crate) fn error(&mut self, message: impl Into<String>) {
        self.errors.push(message.into());
    }

    fn finish(self) -> Result<(), Vec<String>> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self.errors)
        }
    }

    pub(crate) fn text(&mut self, name: &str) -> Option<String> {
        match self.raw(name)? {
            Value::String(s) => Some(s.clone()),
            _ => {
                self.error(format!("{name} must be a string."));
                None
            }
        }
    }

    fn number(&mut self, name: &str) -> Option<Decimal> {
        match self.raw(name)? {
            Value::Number(n) => {
                let value = decimal(n);
                if value.is_none() {
                    self.error(format!("{name} is out of range."));
                }
                value
            }
            _ => {
                self.error(format!("{name} must be a number."));
                None
            }
        }
    }

    fn boolean(&mut self, name: &str) -> Option<bool> {
        match self.raw(name)? {
            Value::Bool(b) => Some(*b),
            _ => {
                self.error(format!("{name} must be true or false."));
                None
            }
        }
    }

    fn array(&mut self, name: &str) -> Option<Vec<Value>> {
        match self.raw(name)? {
            Value::Array(a) => Some(a.clone()),
            _ => {
                self.error(format!("{name} must be an array."));
                None
            }
        }
    }

    fn object(&mut self, name: &str) -> Option<Map<String, Value>> {
        self.nested(name).map(|f| f.map.clone())
    }

    fn nested(&mut self, name: &str) -> Option<Fields<'a>> {
        match self.raw(name)? {
            Value::Object(map) => Some(Fields::new(map)),
            _ => {
                self.error(format!("{name} must be an object."));
                None
            }
        }
    }

    fn day(&mut self, name: &str) -> Option<NaiveDate> {
        let text = self.text(name)?;
        let day = dates::parse_day(&text);
        if day.is_none() {
            self.error(format!("{name} '{text}' is not a valid date."));
        }
        day
    }

    fn check_len(&mut self, name: &str, value: &str, max: usize) {
        if value.chars().count() > max {
            self.error(format!("{name} must not be longer than {max} characters."));
        }
    }

    fn one_of(&mut self, name: &str, value: &str, allowed: &[&str]) {
        if !allowed.contains(&value) {
            self.error(format!(
                "{name} '{value}' is not valid; use one of {}.",
                allowed.join(", ")
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context<'static> {
        Context {
            now: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            base_currency: "NZD",
            four_decimals: false,
        }
    }

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("not an object"),
        }
    }

    fn create(data: &mut TenantData, kind: Kind, value: Value) -> Result<String, Vec<String>> {
        let mut batch = data.begin();
        let result = apply(&mut batch, kind, &object(value), &Mode::Create, &ctx());
        batch.commit();
        result
    }

    #[test]
    fn contact_names_are_required_and_unique_among_active_contacts() {
        let mut data = TenantData::default();
        let id = create(&mut data, Kind::Contacts, json!({"Name": "Acme"})).unwrap();
        let errors = create(&mut data, Kind::Contacts, json!({"name": "ACME"})).unwrap_err();
        assert!(errors[0].starts_with("The contact name ACME is already assigned"));
        assert!(create(&mut data, Kind::Contacts, json!({"EmailAddress": "x"})).is_err());

        let mut batch = data.begin();
        let archive = object(json!({"ContactStatus": "ARCHIVED"}));
        apply(
            &mut batch,
            Kind::Contacts,
            &archive,
            &Mode::Update(id),
            &ctx(),
        )
        .unwrap();
        batch.commit();
        assert!(create(&mut data, Kind::Contacts, json!({"Name": "Acme"})).is_ok());
    }

    #[test]
    fn invoice_totals_numbers_and_customer_flag_are_computed() {
        let mut data = TenantData::default();
        let contact = create(&mut data, Kind::Contacts, json!({"Name": "Acme"})).unwrap();
        let id = create(
            &mut data,
            Kind::Invoices,
            json!({
                "Type": "ACCREC",
                "Contact": {"ContactID": contact.to_uppercase()},
                "Date": "2019-03-11",
                "LineItems": [
                    {"Description": "Pallet", "Quantity": 3, "UnitAmount": 12.5, "TaxAmount": 5.63},
                    {"Description": "Discounted", "Quantity": 1, "UnitAmount": 10, "DiscountRate": 10}
                ]
            }),
        )
        .unwrap();
        let invoice = &data.records(Kind::Invoices).get(&id).unwrap().body;
        assert_eq!(invoice["InvoiceNumber"], "INV-0001");
        assert_eq!(invoice["Status"], "DRAFT");
        assert_eq!(invoice["SubTotal"], 46.5);
        assert_eq!(invoice["TotalTax"], 5.63);
        assert_eq!(invoice["Total"], 52.13);
        assert_eq!(invoice["TotalDiscount"], 1.0);
        assert_eq!(invoice["Date"], "/Date(1552262400000+0000)/");
        assert_eq!(invoice["DateString"], "2019-03-11T00:00:00");
        let contact = &data.records(Kind::Contacts).get(&contact).unwrap().body;
        assert_eq!(contact["IsCustomer"], true);
    }

    #[test]
    fn invalid_invoices_name_every_problem() {
        let mut data = TenantData::default();
        let errors = create(
            &mut data,
            Kind::Invoices,
            json!({"Type": "ACCREC", "Status": "PAID", "LineItems": []}),
        )
        .unwrap_err();
        assert_eq!(
            errors,
            [
                "Invoice not of valid status for creation",
                "A Contact must be specified for this type of transaction",
                "One or more line items must be specified"
            ]
        );
        let errors = create(
            &mut data,
            Kind::Invoices,
            json!({"Type": "WRONG", "Contact": {"Name": "Nobody"},
                   "LineItems": [{"Quantity": "2", "UnitAmount": 1}]}),
        )
        .unwrap_err();
        assert!(errors.contains(&"Invoice not of valid type for creation".to_owned()));
        assert!(errors.contains(&"The contact named 'Nobody' could not be found.".to_owned()));
        assert!(errors.contains(&"Quantity must be a number.".to_owned()));
        assert!(
            errors.contains(&"The description field is mandatory for each line item.".to_owned())
        );
        assert_eq!(data.records(Kind::Invoices).len(), 0);
    }

    #[test]
    fn approved_sales_invoices_move_tracked_stock_and_never_below_zero() {
        let mut data = TenantData::default();
        let contact = create(&mut data, Kind::Contacts, json!({"Name": "Acme"})).unwrap();
        let item = create(
            &mut data,
            Kind::Items,
            json!({"Code": "PAL", "Name": "Pallet", "InventoryAssetAccountCode": "630",
                   "PurchaseDetails": {"COGSAccountCode": "310"},
                   "SalesDetails": {"UnitPrice": 12.5}}),
        )
        .unwrap();
        let mut stocked = data.records(Kind::Items).get(&item).unwrap().clone();
        stocked.body.insert("QuantityOnHand".into(), json!(5.0));
        data.put_uncounted(Kind::Items, &item, Some(stocked));

        let invoice = |quantity: u32, status: &str| {
            json!({"Type": "ACCREC", "Status": status, "Contact": {"ContactID": contact},
                   "LineItems": [{"ItemCode": "pal", "Quantity": quantity}]})
        };
        let errors = create(&mut data, Kind::Invoices, invoice(6, "AUTHORISED")).unwrap_err();
        assert!(errors[0].starts_with("The quantity on hand for item 'PAL'"));
        let draft = create(&mut data, Kind::Invoices, invoice(4, "DRAFT")).unwrap();
        let on_hand = |data: &TenantData| {
            data.records(Kind::Items).get(&item).unwrap().body["QuantityOnHand"].clone()
        };
        assert_eq!(on_hand(&data), 5.0);

        let mut batch = data.begin();
        let approve = object(json!({"Status": "AUTHORISED"}));
        apply(
            &mut batch,
            Kind::Invoices,
            &approve,
            &Mode::Update(draft.clone()),
            &ctx(),
        )
        .unwrap();
        batch.commit();
        assert_eq!(on_hand(&data), 1.0);
        let line = &data.records(Kind::Invoices).get(&draft).unwrap().body["LineItems"][0];
        assert_eq!(line["UnitAmount"], 12.5);
        assert_eq!(line["Description"], "Pallet");

        let mut batch = data.begin();
        let void = object(json!({"Status": "VOIDED"}));
        apply(
            &mut batch,
            Kind::Invoices,
            &void,
            &Mode::Update(draft.clone()),
            &ctx(),
        )
        .unwrap();
        batch.commit();
        assert_eq!(on_hand(&data), 5.0);

        let mut batch = data.begin();
        let errors = apply(
            &mut batch,
            Kind::Invoices,
            &approve,
            &Mode::Update(draft),
            &ctx(),
        )
        .unwrap_err();
        batch.rollback();
        assert_eq!(errors, ["Invoice not of valid status for modification"]);
    }

    #[test]
    fn item_codes_are_unique_and_post_updates_by_code() {
        let mut data = TenantData::default();
        let id = create(&mut data, Kind::Items, json!({"Code": "abc"})).unwrap();
        let errors = create(&mut data, Kind::Items, json!({"Code": "ABC"})).unwrap_err();
        assert_eq!(errors, ["Price List Item with Code ''ABC'' already exists"]);
        let mut batch = data.begin();
        let by_code = object(json!({"Code": "ABC", "Name": "Renamed"}));
        let updated = apply(&mut batch, Kind::Items, &by_code, &Mode::Upsert, &ctx()).unwrap();
        batch.commit();
        assert_eq!(updated, id);
        assert_eq!(data.updates[Kind::Items.index()], 1);
    }

    #[test]
    fn quotes_number_themselves_and_use_upper_case_line_amount_types() {
        let mut data = TenantData::default();
        let contact = create(&mut data, Kind::Contacts, json!({"Name": "Acme"})).unwrap();
        let id = create(
            &mut data,
            Kind::Quotes,
            json!({"Contact": {"ContactID": contact}, "Date": "2020-02-01",
                   "LineItems": [{"Description": "Foobar", "Quantity": 1, "UnitAmount": 20}]}),
        )
        .unwrap();
        let quote = &data.records(Kind::Quotes).get(&id).unwrap().body;
        assert_eq!(quote["QuoteNumber"], "QU-0001");
        assert_eq!(quote["LineAmountTypes"], "EXCLUSIVE");
        assert_eq!(quote["Date"], "/Date(1580515200000)/");
        assert_eq!(quote["Total"], 20.0);
    }
}
