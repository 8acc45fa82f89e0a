//! A company's records and the Service Layer's rules for them: which properties each entity
//! has, what a create fills in (`DocEntry`, `DocNum`, `LineNum`, `DocTotal`, `UpdateDate`,
//! `UpdateTime`, warehouse rows), what it refuses (unknown properties, duplicate keys,
//! unknown item or partner codes) and how a `PATCH` merges collections.
//!
//! This module knows nothing of HTTP: a refusal is a [`SapError`] the HTTP layer renders.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Items,
    BusinessPartners,
    Orders,
    Invoices,
}

impl Kind {
    pub(crate) const ALL: [Kind; 4] = [
        Kind::Items,
        Kind::BusinessPartners,
        Kind::Orders,
        Kind::Invoices,
    ];

    pub(crate) fn parse(name: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(name))
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Items => "Items",
            Kind::BusinessPartners => "BusinessPartners",
            Kind::Orders => "Orders",
            Kind::Invoices => "Invoices",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    pub(crate) fn is_document(self) -> bool {
        matches!(self, Kind::Orders | Kind::Invoices)
    }

    pub(crate) fn key_field(self) -> &'static str {
        match self {
            Kind::Items => "ItemCode",
            Kind::BusinessPartners => "CardCode",
            Kind::Orders | Kind::Invoices => "DocEntry",
        }
    }

    /// The entity type's name in SAP's messages.
    fn entity_name(self) -> &'static str {
        match self {
            Kind::Items => "Item",
            Kind::BusinessPartners => "BusinessPartner",
            Kind::Orders | Kind::Invoices => "Document",
        }
    }

    pub(crate) fn properties(self) -> &'static [&'static str] {
        match self {
            Kind::Items => &[
                "ItemCode",
                "ItemName",
                "ForeignName",
                "ItemsGroupCode",
                "BarCode",
                "ItemType",
                "InventoryItem",
                "SalesItem",
                "PurchaseItem",
                "Valid",
                "Frozen",
                "User_Text",
                "SalesUnit",
                "ItemPrices",
                "ItemWarehouseInfoCollection",
                "QuantityOnStock",
                "QuantityOrderedByCustomers",
                "CreateDate",
                "UpdateDate",
                "UpdateTime",
            ],
            Kind::BusinessPartners => &[
                "CardCode",
                "CardName",
                "CardForeignName",
                "CardType",
                "GroupCode",
                "EmailAddress",
                "Phone1",
                "Phone2",
                "Cellular",
                "FederalTaxID",
                "Currency",
                "Valid",
                "Frozen",
                "Notes",
                "BPAddresses",
                "ContactEmployees",
                "CreateDate",
                "UpdateDate",
                "UpdateTime",
            ],
            Kind::Orders | Kind::Invoices => &[
                "DocEntry",
                "DocNum",
                "DocType",
                "DocDate",
                "DocDueDate",
                "TaxDate",
                "CardCode",
                "CardName",
                "NumAtCard",
                "DocCurrency",
                "DocRate",
                "DocTotal",
                "VatSum",
                "DocumentStatus",
                "Cancelled",
                "Comments",
                "Series",
                "DocumentLines",
                "CreationDate",
                "UpdateDate",
                "UpdateTime",
            ],
        }
    }

    /// Properties the server sets; a client may not write them.
    fn read_only(self) -> &'static [&'static str] {
        match self {
            Kind::Items => &[
                "QuantityOnStock",
                "QuantityOrderedByCustomers",
                "CreateDate",
                "UpdateDate",
                "UpdateTime",
            ],
            Kind::BusinessPartners => &["CreateDate", "UpdateDate", "UpdateTime"],
            Kind::Orders | Kind::Invoices => &[
                "DocEntry",
                "DocNum",
                "DocTotal",
                "DocumentStatus",
                "CreationDate",
                "UpdateDate",
                "UpdateTime",
            ],
        }
    }

    /// The property holding our reference (what an integration looks a record up by).
    fn reference_field(self) -> &'static str {
        match self {
            Kind::Items => "ItemCode",
            Kind::BusinessPartners => "CardCode",
            Kind::Orders | Kind::Invoices => "NumAtCard",
        }
    }
}

const LINE_PROPERTIES: &[&str] = &[
    "LineNum",
    "ItemCode",
    "ItemDescription",
    "Quantity",
    "UnitPrice",
    "Price",
    "PriceAfterVAT",
    "DiscountPercent",
    "Currency",
    "WarehouseCode",
    "TaxCode",
    "AccountCode",
    "LineTotal",
    "BaseType",
    "BaseEntry",
    "BaseLine",
    "LineStatus",
];

const YES_NO: &[&str] = &["tYES", "tNO"];

/// A refusal, in SAP's terms: HTTP status, SAP's error code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SapError {
    pub status: u16,
    pub code: i64,
    pub message: String,
}

impl SapError {
    pub(crate) fn bad_request(code: i64, message: impl Into<String>) -> Self {
        Self {
            status: 400,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn not_found() -> Self {
        Self {
            status: 404,
            code: -2028,
            message: "No matching records found (ODBC -2028)".into(),
        }
    }

    fn invalid_property(kind_name: &str, property: &str) -> Self {
        Self::bad_request(
            -1000,
            format!("Property '{property}' of '{kind_name}' is invalid"),
        )
    }
}

/// A record's key: a code for items and partners, `DocEntry` for documents.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Key {
    Code(String),
    Entry(i64),
}

impl Key {
    pub(crate) fn text(&self) -> String {
        match self {
            Key::Code(code) => code.clone(),
            Key::Entry(entry) => entry.to_string(),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct CompanyData {
    records: [BTreeMap<Key, Map<String, Value>>; 4],
    /// Last `DocEntry` and `DocNum` given, per document kind.
    last_entry: [i64; 4],
    pub creates: [u64; 4],
    pub updates: [u64; 4],
    pub creates_by_reference: BTreeMap<String, u64>,
    pub rejected_duplicate_keys: u64,
}

fn stamp(body: &mut Map<String, Value>, at: DateTime<Utc>) {
    body.insert(
        "UpdateDate".into(),
        Value::String(at.format("%Y-%m-%d").to_string()),
    );
    body.insert(
        "UpdateTime".into(),
        Value::String(at.format("%H:%M:%S").to_string()),
    );
}

pub(crate) fn decimal(value: &Value) -> Option<Decimal> {
    match value {
        Value::Number(n) => Decimal::from_str(&n.to_string())
            .or_else(|_| Decimal::from_scientific(&n.to_string()))
            .ok(),
        _ => None,
    }
}

fn number(value: Decimal) -> Value {
    let text = value.normalize().to_string();
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

fn text<'a>(body: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
    body.get(field).and_then(Value::as_str)
}

fn is_date(text: &str) -> bool {
    chrono::NaiveDate::parse_from_str(text.get(..10).unwrap_or(text), "%Y-%m-%d").is_ok()
}

impl CompanyData {
    pub(crate) fn len(&self, kind: Kind) -> u64 {
        self.records[kind.index()].len() as u64
    }

    pub(crate) fn all(&self, kind: Kind) -> impl Iterator<Item = &Map<String, Value>> {
        self.records[kind.index()].values()
    }

    pub(crate) fn get(&self, kind: Kind, key: &Key) -> Option<&Map<String, Value>> {
        self.records[kind.index()].get(key)
    }

    /// `NumAtCard` values held by more than one document of the kind.
    pub(crate) fn duplicate_references(&self, kind: Kind) -> Vec<String> {
        if !kind.is_document() {
            return Vec::new();
        }
        let mut seen: BTreeMap<&str, u32> = BTreeMap::new();
        for record in self.all(kind) {
            if let Some(reference) = text(record, "NumAtCard").filter(|r| !r.is_empty()) {
                *seen.entry(reference).or_default() += 1;
            }
        }
        seen.into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(r, _)| r.to_owned())
            .collect()
    }

    /// Parses a key as it appears in a path (`'A001'` for codes, `12` for documents).
    pub(crate) fn parse_key(kind: Kind, raw: &str) -> Option<Key> {
        if kind.is_document() {
            return raw.trim().parse().ok().map(Key::Entry);
        }
        let inner = raw.trim().strip_prefix('\'')?.strip_suffix('\'')?;
        Some(Key::Code(inner.replace("''", "'")))
    }

    fn next_entry(&mut self, kind: Kind) -> i64 {
        self.last_entry[kind.index()] += 1;
        self.last_entry[kind.index()]
    }

    pub(crate) fn seed(
        &mut self,
        kind: Kind,
        mut body: Map<String, Value>,
        at: DateTime<Utc>,
    ) -> Result<String, String> {
        let key = if kind.is_document() {
            let entry = match body.get("DocEntry") {
                Some(Value::Number(n)) => n
                    .as_i64()
                    .ok_or_else(|| "DocEntry must be an integer".to_owned())?,
                None | Some(Value::Null) => self.last_entry[kind.index()] + 1,
                Some(other) => return Err(format!("DocEntry must be an integer, not {other}")),
            };
            self.last_entry[kind.index()] = self.last_entry[kind.index()].max(entry);
            body.insert("DocEntry".into(), json!(entry));
            body.entry("DocNum").or_insert(json!(entry));
            Key::Entry(entry)
        } else {
            let code = text(&body, kind.key_field())
                .filter(|c| !c.is_empty())
                .ok_or_else(|| format!("{} is required", kind.key_field()))?;
            Key::Code(code.to_owned())
        };
        stamp(&mut body, at);
        let text = key.text();
        self.records[kind.index()].insert(key, body);
        Ok(text)
    }

    /// A create through the API: validates, fills in what the server sets, stores, counts.
    pub(crate) fn create(
        &mut self,
        kind: Kind,
        mut body: Map<String, Value>,
        warehouses: &[String],
        at: DateTime<Utc>,
    ) -> Result<Map<String, Value>, SapError> {
        for field in kind.read_only() {
            if body.contains_key(*field) {
                return Err(SapError::invalid_property(kind.entity_name(), field));
            }
        }
        self.validate(kind, &body, warehouses, None)?;
        let today = at.format("%Y-%m-%d").to_string();
        let key = match kind {
            Kind::Items | Kind::BusinessPartners => {
                let code = text(&body, kind.key_field()).unwrap_or_default().to_owned();
                let key = Key::Code(code);
                if self.records[kind.index()].contains_key(&key) {
                    self.rejected_duplicate_keys += 1;
                    return Err(SapError::bad_request(
                        -2035,
                        "This entry already exists in the following tables (ODBC -2035)",
                    ));
                }
                body.insert("CreateDate".into(), Value::String(today.clone()));
                if kind == Kind::Items {
                    for (field, default) in [
                        ("InventoryItem", "tYES"),
                        ("SalesItem", "tYES"),
                        ("PurchaseItem", "tYES"),
                        ("Valid", "tYES"),
                        ("Frozen", "tNO"),
                    ] {
                        body.entry(field).or_insert(json!(default));
                    }
                    let rows: Vec<Value> = match body.get("ItemWarehouseInfoCollection") {
                        Some(Value::Array(rows)) if !rows.is_empty() => rows.clone(),
                        _ => warehouses
                            .iter()
                            .map(|w| json!({ "WarehouseCode": w }))
                            .collect(),
                    };
                    let rows: Vec<Value> = rows
                        .into_iter()
                        .map(|mut row| {
                            if let Some(obj) = row.as_object_mut() {
                                for f in ["InStock", "Committed", "Ordered"] {
                                    obj.entry(f).or_insert(json!(0));
                                }
                            }
                            row
                        })
                        .collect();
                    body.insert("ItemWarehouseInfoCollection".into(), Value::Array(rows));
                    body.entry("ItemPrices").or_insert(json!([]));
                } else {
                    body.entry("CardType").or_insert(json!("cCustomer"));
                    body.entry("Valid").or_insert(json!("tYES"));
                    body.entry("Frozen").or_insert(json!("tNO"));
                }
                key
            }
            Kind::Orders | Kind::Invoices => {
                let entry = self.next_entry(kind);
                body.insert("DocEntry".into(), json!(entry));
                body.insert("DocNum".into(), json!(entry));
                body.entry("DocType").or_insert(json!("dDocument_Items"));
                body.entry("DocDate").or_insert(json!(today.clone()));
                body.entry("DocDueDate").or_insert(json!(today.clone()));
                body.entry("TaxDate").or_insert(json!(today.clone()));
                body.insert("CreationDate".into(), Value::String(today.clone()));
                body.insert("DocumentStatus".into(), json!("bost_Open"));
                body.entry("Cancelled").or_insert(json!("tNO"));
                if let Some(card_name) = self
                    .get(
                        Kind::BusinessPartners,
                        &Key::Code(text(&body, "CardCode").unwrap_or_default().to_owned()),
                    )
                    .and_then(|bp| bp.get("CardName"))
                    .cloned()
                {
                    body.entry("CardName").or_insert(card_name);
                }
                number_lines(&mut body, warehouses);
                Key::Entry(entry)
            }
        };
        stamp(&mut body, at);
        self.creates[kind.index()] += 1;
        if let Some(reference) = text(&body, kind.reference_field()).filter(|r| !r.is_empty()) {
            *self
                .creates_by_reference
                .entry(format!(
                    "{}:{}={reference}",
                    kind.name(),
                    kind.reference_field()
                ))
                .or_default() += 1;
        }
        self.records[kind.index()].insert(key, body.clone());
        Ok(body)
    }

    /// A `PATCH`: merges `changes` into the record. Collections merge by their line key
    /// (`LineNum`, `PriceList`, `WarehouseCode`) unless `replace_collections`
    /// (`B1S-ReplaceCollectionsOnPatch: true`), which replaces them whole.
    pub(crate) fn patch(
        &mut self,
        kind: Kind,
        key: &Key,
        changes: Map<String, Value>,
        replace_collections: bool,
        warehouses: &[String],
        at: DateTime<Utc>,
    ) -> Result<(), SapError> {
        let current = self
            .get(kind, key)
            .cloned()
            .ok_or_else(SapError::not_found)?;
        for (field, value) in &changes {
            if !kind.properties().contains(&field.as_str()) {
                return Err(SapError::invalid_property(kind.entity_name(), field));
            }
            if field == kind.key_field() && current.get(field) != Some(value) {
                return Err(SapError::bad_request(
                    -5002,
                    format!("Cannot change the key property '{field}'"),
                ));
            }
            if kind.read_only().contains(&field.as_str())
                && field != kind.key_field()
                && current.get(field) != Some(value)
            {
                return Err(SapError::invalid_property(kind.entity_name(), field));
            }
        }
        if kind.is_document() && text(&current, "DocumentStatus") == Some("bost_Close") {
            return Err(SapError::bad_request(
                -5002,
                "Cannot update a closed document",
            ));
        }
        let mut merged = current;
        for (field, value) in changes {
            let line_key = match field.as_str() {
                "DocumentLines" => Some("LineNum"),
                "ItemPrices" => Some("PriceList"),
                "ItemWarehouseInfoCollection" => Some("WarehouseCode"),
                _ => None,
            };
            match (line_key, value, merged.get(&field).cloned()) {
                (Some(line_key), Value::Array(new), Some(Value::Array(old)))
                    if !replace_collections =>
                {
                    let mut rows = old;
                    for row in new {
                        let position = row
                            .get(line_key)
                            .and_then(|k| rows.iter().position(|r| r.get(line_key) == Some(k)));
                        match (position, row) {
                            (Some(i), Value::Object(fields)) => {
                                if let Some(Value::Object(existing)) = rows.get_mut(i) {
                                    existing.extend(fields);
                                }
                            }
                            (_, row) => rows.push(row),
                        }
                    }
                    merged.insert(field, Value::Array(rows));
                }
                (_, value, _) => {
                    merged.insert(field, value);
                }
            }
        }
        self.validate(kind, &merged, warehouses, Some(key))?;
        if kind.is_document() {
            number_lines(&mut merged, warehouses);
        }
        stamp(&mut merged, at);
        self.updates[kind.index()] += 1;
        self.records[kind.index()].insert(key.clone(), merged);
        Ok(())
    }

    /// `Close`/`Cancel`: the document and its lines are closed; no later update applies.
    pub(crate) fn close(&mut self, kind: Kind, key: &Key) {
        if let Some(record) = self.records[kind.index()].get_mut(key) {
            record.insert("DocumentStatus".into(), json!("bost_Close"));
            if let Some(Value::Array(lines)) = record.get_mut("DocumentLines") {
                for line in lines.iter_mut().filter_map(Value::as_object_mut) {
                    line.insert("LineStatus".into(), json!("bost_Close"));
                }
            }
        }
    }

    pub(crate) fn delete(&mut self, kind: Kind, key: &Key) -> Result<(), SapError> {
        self.records[kind.index()]
            .remove(key)
            .map(|_| ())
            .ok_or_else(SapError::not_found)
    }

    fn validate(
        &self,
        kind: Kind,
        body: &Map<String, Value>,
        warehouses: &[String],
        existing: Option<&Key>,
    ) -> Result<(), SapError> {
        let name = kind.entity_name();
        for field in body.keys() {
            if !kind.properties().contains(&field.as_str()) {
                return Err(SapError::invalid_property(name, field));
            }
        }
        let check_len = |field: &str, max: usize| -> Result<(), SapError> {
            match body.get(field) {
                None | Some(Value::Null) => Ok(()),
                Some(Value::String(s)) if s.chars().count() <= max => Ok(()),
                Some(Value::String(_)) => Err(SapError::bad_request(
                    -5002,
                    format!("Value too long in property '{field}' of '{name}'"),
                )),
                Some(_) => Err(SapError::bad_request(
                    -1000,
                    format!("Property '{field}' of '{name}' has an invalid value"),
                )),
            }
        };
        let check_enum = |field: &str, allowed: &[&str]| -> Result<(), SapError> {
            match body.get(field) {
                None => Ok(()),
                Some(Value::String(s)) if allowed.contains(&s.as_str()) => Ok(()),
                Some(other) => Err(SapError::bad_request(
                    -1000,
                    format!("Enumeration value {other} of property '{field}' is invalid"),
                )),
            }
        };
        match kind {
            Kind::Items => {
                if text(body, "ItemCode").is_none_or(str::is_empty) {
                    return Err(SapError::bad_request(-10, "Item code is missing"));
                }
                check_len("ItemCode", 50)?;
                check_len("ItemName", 200)?;
                check_len("ForeignName", 200)?;
                for field in [
                    "InventoryItem",
                    "SalesItem",
                    "PurchaseItem",
                    "Valid",
                    "Frozen",
                ] {
                    check_enum(field, YES_NO)?;
                }
                if let Some(prices) = body.get("ItemPrices") {
                    let rows = prices.as_array().ok_or_else(|| {
                        SapError::bad_request(-1000, "ItemPrices must be a collection")
                    })?;
                    for row in rows {
                        let valid_list = row
                            .get("PriceList")
                            .and_then(Value::as_i64)
                            .is_some_and(|p| p >= 1);
                        let valid_price = row.get("Price").is_none_or(|p| decimal(p).is_some());
                        if !valid_list || !valid_price {
                            return Err(SapError::bad_request(
                                -10,
                                format!("Invalid price list row {row}"),
                            ));
                        }
                    }
                }
                if let Some(Value::Array(rows)) = body.get("ItemWarehouseInfoCollection") {
                    for row in rows {
                        let code = row.get("WarehouseCode").and_then(Value::as_str);
                        if !code.is_some_and(|c| warehouses.iter().any(|w| w == c)) {
                            return Err(SapError::bad_request(
                                -10,
                                format!("Invalid warehouse code {code:?}"),
                            ));
                        }
                    }
                }
            }
            Kind::BusinessPartners => {
                if text(body, "CardCode").is_none_or(str::is_empty) {
                    return Err(SapError::bad_request(
                        -10,
                        "Business partner code is missing",
                    ));
                }
                // OCRD.CardCode is nvarchar(15).
                check_len("CardCode", 15)?;
                check_len("CardName", 100)?;
                check_len("EmailAddress", 100)?;
                check_len("Phone1", 20)?;
                check_len("FederalTaxID", 32)?;
                check_enum("CardType", &["cCustomer", "cSupplier", "cLid"])?;
                check_enum("Valid", YES_NO)?;
                check_enum("Frozen", YES_NO)?;
            }
            Kind::Orders | Kind::Invoices => {
                let card = text(body, "CardCode").unwrap_or_default();
                if card.is_empty() {
                    return Err(SapError::bad_request(
                        -5002,
                        "Enter a business partner code (CardCode)",
                    ));
                }
                if self
                    .get(Kind::BusinessPartners, &Key::Code(card.to_owned()))
                    .is_none()
                {
                    return Err(SapError::bad_request(
                        -10,
                        format!("Invalid BP code '{card}'"),
                    ));
                }
                check_len("NumAtCard", 100)?;
                check_enum("DocType", &["dDocument_Items", "dDocument_Service"])?;
                for field in ["DocDate", "DocDueDate", "TaxDate"] {
                    if let Some(v) = body.get(field)
                        && !v.as_str().is_some_and(is_date)
                    {
                        return Err(SapError::bad_request(
                            -1000,
                            format!("Property '{field}' of 'Document' has an invalid date {v}"),
                        ));
                    }
                }
                if kind == Kind::Orders && existing.is_none() && !body.contains_key("DocDueDate") {
                    // A sales order needs its delivery date.
                    return Err(SapError::bad_request(
                        -5002,
                        "Specify the delivery date (DocDueDate)",
                    ));
                }
                let service = text(body, "DocType") == Some("dDocument_Service");
                let lines = match body.get("DocumentLines") {
                    Some(Value::Array(lines)) if !lines.is_empty() => lines,
                    _ => {
                        return Err(SapError::bad_request(
                            -5002,
                            "Add at least one row to the document (DocumentLines)",
                        ));
                    }
                };
                for (i, line) in lines.iter().enumerate() {
                    let number = i + 1;
                    let line = line.as_object().ok_or_else(|| {
                        SapError::bad_request(-1000, "DocumentLines must hold objects")
                    })?;
                    for field in line.keys() {
                        if !LINE_PROPERTIES.contains(&field.as_str()) {
                            return Err(SapError::invalid_property("DocumentLine", field));
                        }
                    }
                    for field in ["Quantity", "UnitPrice", "Price", "LineTotal"] {
                        if let Some(v) = line.get(field)
                            && decimal(v).is_none()
                        {
                            return Err(SapError::bad_request(
                                -1000,
                                format!(
                                    "[DocumentLines.{field}][line: {number}] invalid number {v}"
                                ),
                            ));
                        }
                    }
                    if service {
                        if line.contains_key("ItemCode") {
                            return Err(SapError::bad_request(
                                -5002,
                                format!(
                                    "[DocumentLines.ItemCode][line: {number}] a service document has no items"
                                ),
                            ));
                        }
                        if line
                            .get("ItemDescription")
                            .and_then(Value::as_str)
                            .is_none_or(str::is_empty)
                        {
                            return Err(SapError::bad_request(
                                -5002,
                                format!(
                                    "[DocumentLines.ItemDescription][line: {number}] Enter a description"
                                ),
                            ));
                        }
                        // A service row books on a G/L account; there is no item to find one.
                        if line
                            .get("AccountCode")
                            .and_then(Value::as_str)
                            .is_none_or(|a| a.trim().is_empty())
                        {
                            return Err(SapError::bad_request(
                                -5002,
                                format!(
                                    "[DocumentLines.AccountCode][line: {number}] Enter G/L account for service row"
                                ),
                            ));
                        }
                        continue;
                    }
                    let item = line.get("ItemCode").and_then(Value::as_str).unwrap_or("");
                    if self.get(Kind::Items, &Key::Code(item.to_owned())).is_none() {
                        return Err(SapError::bad_request(
                            -10,
                            format!(
                                "[DocumentLines.ItemCode][line: {number}] , 'Invalid item code '{item}''"
                            ),
                        ));
                    }
                    if line
                        .get("Quantity")
                        .and_then(decimal)
                        .is_some_and(|q| q <= Decimal::ZERO)
                    {
                        return Err(SapError::bad_request(
                            -5002,
                            format!(
                                "[DocumentLines.Quantity][line: {number}] Quantity must be positive"
                            ),
                        ));
                    }
                    if let Some(code) = line.get("WarehouseCode").and_then(Value::as_str)
                        && !warehouses.iter().any(|w| w == code)
                    {
                        return Err(SapError::bad_request(
                            -10,
                            format!(
                                "[DocumentLines.WarehouseCode][line: {number}] , 'Invalid warehouse code '{code}''"
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Numbers the lines, fills in each line's warehouse and total and the document's total.
fn number_lines(body: &mut Map<String, Value>, warehouses: &[String]) {
    let service = text(body, "DocType") == Some("dDocument_Service");
    let mut total = Decimal::ZERO;
    if let Some(Value::Array(lines)) = body.get_mut("DocumentLines") {
        let mut used: HashMap<i64, ()> = HashMap::new();
        for line in lines.iter() {
            if let Some(n) = line.get("LineNum").and_then(Value::as_i64) {
                used.insert(n, ());
            }
        }
        let mut next = 0;
        for line in lines.iter_mut() {
            let Some(obj) = line.as_object_mut() else {
                continue;
            };
            if obj.get("LineNum").and_then(Value::as_i64).is_none() {
                while used.contains_key(&next) {
                    next += 1;
                }
                used.insert(next, ());
                obj.insert("LineNum".into(), json!(next));
            }
            let quantity = obj
                .get("Quantity")
                .and_then(decimal)
                .unwrap_or(Decimal::ONE);
            obj.entry("Quantity").or_insert(json!(1));
            let price = obj
                .get("Price")
                .or_else(|| obj.get("UnitPrice"))
                .and_then(decimal);
            // A price makes the total (it may have changed with a PATCH); a service line
            // without one states its total.
            let line_total = match (price, obj.get("LineTotal").and_then(decimal)) {
                (Some(p), _) => quantity * p,
                (None, Some(t)) => t,
                (None, None) => Decimal::ZERO,
            };
            if let Some(p) = price {
                obj.entry("Price").or_insert(number(p));
                obj.entry("UnitPrice").or_insert(number(p));
            }
            obj.insert("LineTotal".into(), number(line_total));
            if !service {
                obj.entry("WarehouseCode")
                    .or_insert(json!(warehouses.first().cloned().unwrap_or_default()));
            }
            obj.entry("LineStatus").or_insert(json!("bost_Open"));
            total += line_total;
        }
    }
    body.insert("DocTotal".into(), number(total));
}
