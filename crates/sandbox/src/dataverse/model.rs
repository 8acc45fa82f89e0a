//! The tables of one Dataverse environment: their columns, alternate keys and lookups, the
//! rows, and the validation Dataverse applies on a write (unknown columns, lengths, required
//! columns, unique alternate keys, lookups to rows that exist).
//!
//! Rows are kept as the Web API renders them (`accountid`, `name`, `_defaultuomid_value`,
//! `createdon`, `modifiedon`, `versionnumber`, `statecode`), so a read is a projection.

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;

/// What a column holds, for validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Column {
    /// A string of at most this many characters.
    Text(usize),
    /// A money or decimal number.
    Number,
    /// `statecode`: 0 active, 1 inactive.
    State,
    Bool,
}

/// One table the simulator serves.
#[derive(Debug)]
pub(crate) struct TableDef {
    /// The entity set name in URLs (`accounts`).
    pub set: &'static str,
    /// The logical name (`account`), used in error messages and `$metadata` type names.
    pub logical: &'static str,
    /// The primary key column (`accountid`).
    pub pk: &'static str,
    /// The single-column alternate key, if the table has one here.
    pub key: Option<&'static str>,
    pub columns: &'static [(&'static str, Column)],
    /// Columns a create must set (lookups named by their navigation property).
    pub required: &'static [&'static str],
    /// Single-valued navigation properties: (name, target entity set, the `_x_value`
    /// attribute the API renders it as).
    pub lookups: &'static [(&'static str, &'static str, &'static str)],
    /// Whether the Web API may write it here (reference tables are read-only).
    pub writable: bool,
}

pub(crate) const ACCOUNTS: TableDef = TableDef {
    set: "accounts",
    logical: "account",
    pk: "accountid",
    key: Some("accountnumber"),
    columns: &[
        ("name", Column::Text(160)),
        ("accountnumber", Column::Text(20)),
        ("emailaddress1", Column::Text(100)),
        ("telephone1", Column::Text(50)),
        ("description", Column::Text(2000)),
        ("statecode", Column::State),
    ],
    required: &["name"],
    lookups: &[],
    writable: true,
};

pub(crate) const PRODUCTS: TableDef = TableDef {
    set: "products",
    logical: "product",
    pk: "productid",
    key: Some("productnumber"),
    columns: &[
        ("name", Column::Text(100)),
        ("productnumber", Column::Text(100)),
        ("description", Column::Text(2000)),
        ("price", Column::Number),
        ("quantityonhand", Column::Number),
        ("statecode", Column::State),
    ],
    required: &[
        "name",
        "productnumber",
        "defaultuomscheduleid",
        "defaultuomid",
    ],
    lookups: &[
        (
            "defaultuomscheduleid",
            "uomschedules",
            "_defaultuomscheduleid_value",
        ),
        ("defaultuomid", "uoms", "_defaultuomid_value"),
    ],
    writable: true,
};

/// Sales orders, keyed here by `ordernumber` (an alternate key an admin defines; Dataverse
/// fills it with an autonumber when a create leaves it out).
pub(crate) const SALES_ORDERS: TableDef = TableDef {
    set: "salesorders",
    logical: "salesorder",
    pk: "salesorderid",
    key: Some("ordernumber"),
    columns: &[
        ("name", Column::Text(300)),
        ("ordernumber", Column::Text(100)),
        ("description", Column::Text(2000)),
        ("statecode", Column::State),
    ],
    required: &["name", "customerid_account", "pricelevelid"],
    lookups: &[
        ("customerid_account", "accounts", "_customerid_value"),
        ("pricelevelid", "pricelevels", "_pricelevelid_value"),
    ],
    writable: true,
};

/// Order lines: no alternate key; `lineitemnumber` orders them.
pub(crate) const SALES_ORDER_DETAILS: TableDef = TableDef {
    set: "salesorderdetails",
    logical: "salesorderdetail",
    pk: "salesorderdetailid",
    key: None,
    columns: &[
        ("quantity", Column::Number),
        ("priceperunit", Column::Number),
        ("ispriceoverridden", Column::Bool),
        ("lineitemnumber", Column::Number),
        ("productdescription", Column::Text(500)),
    ],
    required: &["salesorderid", "productid", "uomid", "quantity"],
    lookups: &[
        ("salesorderid", "salesorders", "_salesorderid_value"),
        ("productid", "products", "_productid_value"),
        ("uomid", "uoms", "_uomid_value"),
    ],
    writable: true,
};

/// Invoices, keyed here by `invoicenumber` (like `ordernumber`, an autonumber Dataverse fills
/// when a create leaves it out).
pub(crate) const INVOICES: TableDef = TableDef {
    set: "invoices",
    logical: "invoice",
    pk: "invoiceid",
    key: Some("invoicenumber"),
    columns: &[
        ("name", Column::Text(300)),
        ("invoicenumber", Column::Text(100)),
        ("description", Column::Text(2000)),
        ("duedate", Column::Text(10)),
        ("statecode", Column::State),
    ],
    required: &["name", "customerid_account", "pricelevelid"],
    lookups: &[
        ("customerid_account", "accounts", "_customerid_value"),
        ("pricelevelid", "pricelevels", "_pricelevelid_value"),
        ("salesorderid", "salesorders", "_salesorderid_value"),
    ],
    writable: true,
};

/// Invoice lines; a write-in line (`isproductoverridden`) names no product.
pub(crate) const INVOICE_DETAILS: TableDef = TableDef {
    set: "invoicedetails",
    logical: "invoicedetail",
    pk: "invoicedetailid",
    key: None,
    columns: &[
        ("quantity", Column::Number),
        ("priceperunit", Column::Number),
        ("ispriceoverridden", Column::Bool),
        ("isproductoverridden", Column::Bool),
        ("lineitemnumber", Column::Number),
        ("productdescription", Column::Text(500)),
    ],
    required: &["invoiceid", "quantity"],
    lookups: &[
        ("invoiceid", "invoices", "_invoiceid_value"),
        ("productid", "products", "_productid_value"),
        ("uomid", "uoms", "_uomid_value"),
    ],
    writable: true,
};

pub(crate) const PRICE_LEVELS: TableDef = TableDef {
    set: "pricelevels",
    logical: "pricelevel",
    pk: "pricelevelid",
    key: None,
    columns: &[("name", Column::Text(100))],
    required: &["name"],
    lookups: &[],
    writable: false,
};

/// Read-only reference tables, seeded with one unit group and its primary unit.
pub(crate) const UOM_SCHEDULES: TableDef = TableDef {
    set: "uomschedules",
    logical: "uomschedule",
    pk: "uomscheduleid",
    key: None,
    columns: &[("name", Column::Text(200))],
    required: &["name"],
    lookups: &[],
    writable: false,
};

pub(crate) const UOMS: TableDef = TableDef {
    set: "uoms",
    logical: "uom",
    pk: "uomid",
    key: None,
    columns: &[("name", Column::Text(100))],
    required: &["name"],
    lookups: &[],
    writable: false,
};

pub(crate) const TABLES: [&TableDef; 9] = [
    &ACCOUNTS,
    &PRODUCTS,
    &SALES_ORDERS,
    &SALES_ORDER_DETAILS,
    &INVOICES,
    &INVOICE_DETAILS,
    &UOM_SCHEDULES,
    &UOMS,
    &PRICE_LEVELS,
];

/// Tables the API may write (the reference tables are read-only here).
pub(crate) fn writable(def: &TableDef) -> bool {
    def.writable
}

pub(crate) fn table(set: &str) -> Option<&'static TableDef> {
    TABLES.iter().copied().find(|t| t.set == set)
}

/// A Dataverse error: its hex code, HTTP status and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DvError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl DvError {
    pub(crate) fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        // 0x80060888: the generic OData "bad request" Dataverse answers for malformed queries
        // and payloads.
        Self::new(400, "0x80060888", message)
    }

    pub(crate) fn not_found(def: &TableDef, what: &str) -> Self {
        Self::new(
            404,
            "0x80040217",
            format!("{} With Id = {what} Does Not Exist", def.logical),
        )
    }
}

/// `modifiedon` and friends: Dataverse keeps whole seconds and writes `Z`.
pub(crate) fn dv_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[derive(Debug, Default)]
pub(crate) struct Table {
    /// id → row; rows also keep their creation order for stable default ordering.
    pub rows: BTreeMap<Uuid, Map<String, Value>>,
    /// Alternate key value (case-insensitive, as SQL Server collation compares) → id.
    pub by_key: HashMap<String, Uuid>,
}

/// Every table of one environment, and the write counters tests read.
#[derive(Debug, Default)]
pub(crate) struct EnvData {
    pub tables: HashMap<&'static str, Table>,
    pub creates: BTreeMap<String, u64>,
    pub updates: BTreeMap<String, u64>,
    /// `set:key` → rows created with that alternate key value (a create of a key after its
    /// row was deleted counts again: that is a duplicate at the ERP).
    pub creates_by_key: BTreeMap<String, u64>,
    version: u64,
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    Created(Uuid),
    Updated(Uuid),
}

impl Written {
    pub(crate) fn id(self) -> Uuid {
        match self {
            Written::Created(id) | Written::Updated(id) => id,
        }
    }
}

fn key_index(value: &str) -> String {
    value.to_lowercase()
}

impl EnvData {
    pub(crate) fn new(
        uom_schedule: Uuid,
        uom: Uuid,
        price_level: Uuid,
        now: DateTime<Utc>,
    ) -> Self {
        let mut data = Self::default();
        for def in TABLES {
            data.tables.insert(def.set, Table::default());
        }
        let mut seed = |def: &TableDef, id: Uuid, name: &str| {
            let mut row = Map::new();
            row.insert("name".into(), json!(name));
            data.stamp(def, id, &mut row, now, true);
            if let Some(t) = data.tables.get_mut(def.set) {
                t.rows.insert(id, row);
            }
        };
        seed(&UOM_SCHEDULES, uom_schedule, "Default Unit");
        seed(&UOMS, uom, "Primary Unit");
        seed(&PRICE_LEVELS, price_level, "Default Price List");
        data
    }

    fn stamp(
        &mut self,
        def: &TableDef,
        id: Uuid,
        row: &mut Map<String, Value>,
        now: DateTime<Utc>,
        created: bool,
    ) {
        self.version += 1;
        let now = now.trunc_subsecs(0);
        row.insert(def.pk.into(), json!(id.to_string()));
        if created {
            row.insert("createdon".into(), json!(dv_time(now)));
            row.entry("statecode").or_insert(json!(0));
        }
        row.insert("modifiedon".into(), json!(dv_time(now)));
        row.insert("versionnumber".into(), json!(self.version));
    }

    pub(crate) fn table(&self, def: &TableDef) -> Option<&Table> {
        self.tables.get(def.set)
    }

    pub(crate) fn get(&self, def: &TableDef, id: Uuid) -> Option<&Map<String, Value>> {
        self.table(def)?.rows.get(&id)
    }

    pub(crate) fn find_by_key(&self, def: &TableDef, value: &str) -> Option<Uuid> {
        self.table(def)?.by_key.get(&key_index(value)).copied()
    }

    /// Checks a write's body against the table and turns it into column values:
    /// `@odata.bind` lookups become `_x_value` ids.
    fn columns(
        &self,
        def: &TableDef,
        body: &Map<String, Value>,
    ) -> Result<Map<String, Value>, DvError> {
        let mut out = Map::new();
        for (name, value) in body {
            if let Some(nav) = name.strip_suffix("@odata.bind") {
                let Some((_, target, attribute)) = def.lookups.iter().find(|(n, _, _)| *n == nav)
                else {
                    return Err(DvError::bad_request(format!(
                        "An undeclared property '{nav}' which only has property annotations in the payload but no property value was found in the payload. In OData, only declared navigation properties and declared named streams can be represented as properties without values."
                    )));
                };
                let Some(path) = value.as_str() else {
                    return Err(DvError::bad_request(format!(
                        "the value of {name} must be a string such as /{target}(<guid>)"
                    )));
                };
                let id = path
                    .trim_start_matches('/')
                    .strip_prefix(target)
                    .and_then(|rest| rest.strip_prefix('('))
                    .and_then(|rest| rest.strip_suffix(')'))
                    .and_then(|g| Uuid::parse_str(g).ok())
                    .ok_or_else(|| {
                        DvError::bad_request(format!(
                            "Bad Request - Error in query syntax: {name} must reference /{target}(<guid>), not {path:?}"
                        ))
                    })?;
                let target_def = table(target)
                    .ok_or_else(|| DvError::bad_request(format!("no entity set {target}")))?;
                if self.get(target_def, id).is_none() {
                    return Err(DvError::not_found(target_def, &id.to_string()));
                }
                out.insert((*attribute).to_owned(), json!(id.to_string()));
                continue;
            }
            if name.starts_with('@') || name.contains("@odata.") {
                continue;
            }
            let Some((_, column)) = def.columns.iter().find(|(c, _)| c == name) else {
                return Err(DvError::bad_request(format!(
                    "Invalid property '{name}' was found in entity 'Microsoft.Dynamics.CRM.{}'.",
                    def.logical
                )));
            };
            match (column, value) {
                (_, Value::Null) => {}
                (Column::Text(max), Value::String(s)) => {
                    if s.chars().count() > *max {
                        return Err(DvError::new(
                            400,
                            "0x80044331",
                            format!(
                                "A validation error occurred. The length of the '{name}' attribute of the '{}' entity exceeded the maximum allowed length of '{max}'.",
                                def.logical
                            ),
                        ));
                    }
                }
                (Column::Number, Value::Number(_)) => {}
                (Column::State, Value::Number(n)) if matches!(n.as_u64(), Some(0 | 1)) => {}
                (Column::Bool, Value::Bool(_)) => {}
                _ => {
                    return Err(DvError::bad_request(format!(
                        "Cannot convert the literal '{value}' to the expected type of property '{name}'."
                    )));
                }
            }
            out.insert(name.clone(), value.clone());
        }
        Ok(out)
    }

    fn missing_required(def: &TableDef, row: &Map<String, Value>) -> Option<String> {
        def.required
            .iter()
            .find(|r| {
                let column = def
                    .lookups
                    .iter()
                    .find(|(n, _, _)| n == *r)
                    .map_or((**r).to_owned(), |(_, _, a)| (*a).to_owned());
                row.get(&column).is_none_or(|v| match v {
                    Value::Null => true,
                    Value::String(s) => s.trim().is_empty(),
                    _ => false,
                })
            })
            .map(|r| (*r).to_owned())
    }

    /// Creates a row (POST, or an upsert that found nothing). `key` is the alternate key the
    /// upsert addressed, set on the row.
    pub(crate) fn create(
        &mut self,
        def: &'static TableDef,
        body: &Map<String, Value>,
        key: Option<&str>,
        id: Option<Uuid>,
        now: DateTime<Utc>,
    ) -> Result<Uuid, DvError> {
        let mut row = self.columns(def, body)?;
        if let (Some(column), Some(value)) = (def.key, key) {
            match row.get(column).and_then(Value::as_str) {
                Some(v) if !v.eq_ignore_ascii_case(value) => {
                    return Err(DvError::bad_request(format!(
                        "the payload sets {column} to {v:?} but the URL addresses {value:?}"
                    )));
                }
                _ => {
                    row.insert(column.into(), json!(value));
                }
            }
        }
        if let Some(missing) = Self::missing_required(def, &row) {
            return Err(DvError::new(
                400,
                "0x80040200",
                format!(
                    "Attribute '{missing}' of entity '{}' is required and cannot be empty.",
                    def.logical
                ),
            ));
        }
        let key_value = def
            .key
            .and_then(|k| row.get(k))
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        if let Some(value) = &key_value
            && self.find_by_key(def, value).is_some()
        {
            return Err(duplicate_key(def));
        }
        let id = id.unwrap_or_else(Uuid::new_v4);
        if self.get(def, id).is_some() {
            return Err(DvError::new(
                412,
                "0x80040237",
                format!("A record with id {id} already exists."),
            ));
        }
        self.stamp(def, id, &mut row, now, true);
        let table = self.tables.entry(def.set).or_default();
        table.rows.insert(id, row);
        if let Some(value) = key_value {
            table.by_key.insert(key_index(&value), id);
            *self
                .creates_by_key
                .entry(format!("{}:{}", def.set, value))
                .or_default() += 1;
        }
        *self.creates.entry(def.set.into()).or_default() += 1;
        Ok(id)
    }

    /// Updates the row `id` with the body's columns.
    pub(crate) fn update(
        &mut self,
        def: &'static TableDef,
        id: Uuid,
        body: &Map<String, Value>,
        now: DateTime<Utc>,
    ) -> Result<Uuid, DvError> {
        let changes = self.columns(def, body)?;
        let Some(mut row) = self.get(def, id).cloned() else {
            return Err(DvError::not_found(def, &id.to_string()));
        };
        let old_key = def
            .key
            .and_then(|k| row.get(k))
            .and_then(Value::as_str)
            .map(key_index);
        for (k, v) in changes {
            row.insert(k, v);
        }
        if let Some(missing) = Self::missing_required(def, &row) {
            return Err(DvError::new(
                400,
                "0x80040200",
                format!(
                    "Attribute '{missing}' of entity '{}' is required and cannot be empty.",
                    def.logical
                ),
            ));
        }
        let new_key = def
            .key
            .and_then(|k| row.get(k))
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .map(key_index);
        if new_key != old_key
            && let Some(k) = &new_key
            && self.table(def).is_some_and(|t| t.by_key.contains_key(k))
        {
            return Err(duplicate_key(def));
        }
        self.stamp(def, id, &mut row, now, false);
        let table = self.tables.entry(def.set).or_default();
        if let Some(k) = old_key {
            table.by_key.remove(&k);
        }
        if let Some(k) = new_key {
            table.by_key.insert(k, id);
        }
        table.rows.insert(id, row);
        *self.updates.entry(def.set.into()).or_default() += 1;
        Ok(id)
    }

    /// Deletes a row; `false` when there was none.
    pub(crate) fn delete(&mut self, def: &TableDef, id: Uuid) -> bool {
        let Some(table) = self.tables.get_mut(def.set) else {
            return false;
        };
        let Some(row) = table.rows.remove(&id) else {
            return false;
        };
        if let Some(k) = def.key.and_then(|k| row.get(k)).and_then(Value::as_str) {
            table.by_key.remove(&key_index(k));
        }
        true
    }

    /// Upsert by alternate key: update the row holding `value`, or create one with it.
    pub(crate) fn upsert_by_key(
        &mut self,
        def: &'static TableDef,
        value: &str,
        body: &Map<String, Value>,
        now: DateTime<Utc>,
    ) -> Result<Written, DvError> {
        match self.find_by_key(def, value) {
            Some(id) => self.update(def, id, body, now).map(Written::Updated),
            None => self
                .create(def, body, Some(value), None, now)
                .map(Written::Created),
        }
    }

    /// Stores a row as given (import tests), without validation or counting. Keeps or assigns
    /// the primary key, and keeps a `modifiedon` the row carries (a row last changed
    /// yesterday) or stamps now.
    pub(crate) fn seed(
        &mut self,
        def: &'static TableDef,
        mut row: Map<String, Value>,
        now: DateTime<Utc>,
    ) -> Result<Uuid, String> {
        let id = match row.get(def.pk).and_then(Value::as_str) {
            Some(text) => Uuid::parse_str(text).map_err(|e| format!("{}: {e}", def.pk))?,
            None => Uuid::new_v4(),
        };
        let created = self.get(def, id).is_none();
        if let Some(old) = self.get(def, id).cloned() {
            if let Some(created_on) = old.get("createdon") {
                row.insert("createdon".into(), created_on.clone());
            }
            if let Some(k) = def.key.and_then(|k| old.get(k)).and_then(Value::as_str) {
                let k = key_index(k);
                if let Some(t) = self.tables.get_mut(def.set) {
                    t.by_key.remove(&k);
                }
            }
        }
        let given = row
            .get("modifiedon")
            .and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| dv_time(t.with_timezone(&Utc)));
        self.stamp(def, id, &mut row, now, created);
        if let Some(given) = given {
            row.insert("modifiedon".into(), json!(given));
        }
        let table = self.tables.entry(def.set).or_default();
        if let Some(k) = def.key.and_then(|k| row.get(k)).and_then(Value::as_str) {
            table.by_key.insert(key_index(k), id);
        }
        table.rows.insert(id, row);
        Ok(id)
    }

    /// Key values held by more than one create (see `creates_by_key`), by table.
    pub(crate) fn duplicate_creates(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (key, n) in &self.creates_by_key {
            if *n > 1
                && let Some((set, value)) = key.split_once(':')
            {
                out.entry(set.to_owned())
                    .or_default()
                    .push(value.to_owned());
            }
        }
        out
    }
}

fn duplicate_key(def: &TableDef) -> DvError {
    let key = def.key.unwrap_or("key");
    DvError::new(
        412,
        "0x80060892",
        format!(
            "A record that has the attribute values {key} already exists. The entity key {key} requires that this set of attributes contains unique values. Select unique values and try again."
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn data() -> (EnvData, Uuid, Uuid) {
        let (s, u) = (Uuid::new_v4(), Uuid::new_v4());
        (EnvData::new(s, u, Uuid::new_v4(), Utc::now()), s, u)
    }

    #[test]
    fn upsert_by_key_creates_once_then_updates() {
        let (mut d, _, _) = data();
        let now = Utc::now();
        let first = d
            .upsert_by_key(&ACCOUNTS, "PAS-1", &body(json!({"name": "A"})), now)
            .unwrap();
        let second = d
            .upsert_by_key(&ACCOUNTS, "pas-1", &body(json!({"name": "B"})), now)
            .unwrap();
        assert!(matches!(first, Written::Created(_)));
        assert_eq!(second, Written::Updated(first.id()));
        assert_eq!(d.creates_by_key["accounts:PAS-1"], 1);
        assert_eq!(d.get(&ACCOUNTS, first.id()).unwrap()["name"], "B");
    }

    #[test]
    fn a_product_needs_existing_units_and_unique_numbers() {
        let (mut d, s, u) = data();
        let now = Utc::now();
        let missing = d
            .create(
                &PRODUCTS,
                &body(json!({"name": "P", "productnumber": "X"})),
                None,
                None,
                now,
            )
            .unwrap_err();
        assert_eq!(missing.code, "0x80040200");
        let dangling = d
            .create(
                &PRODUCTS,
                &body(json!({"name": "P", "productnumber": "X",
                    "defaultuomscheduleid@odata.bind": format!("/uomschedules({s})"),
                    "defaultuomid@odata.bind": format!("/uoms({})", Uuid::new_v4())})),
                None,
                None,
                now,
            )
            .unwrap_err();
        assert_eq!((dangling.status, dangling.code), (404, "0x80040217"));
        let ok = body(json!({"name": "P", "productnumber": "X",
            "defaultuomscheduleid@odata.bind": format!("/uomschedules({s})"),
            "defaultuomid@odata.bind": format!("/uoms({u})")}));
        let id = d.create(&PRODUCTS, &ok, None, None, now).unwrap();
        assert_eq!(
            d.get(&PRODUCTS, id).unwrap()["_defaultuomid_value"],
            u.to_string()
        );
        let dup = d.create(&PRODUCTS, &ok, None, None, now).unwrap_err();
        assert_eq!((dup.status, dup.code), (412, "0x80060892"));
    }

    #[test]
    fn unknown_columns_and_long_values_are_refused() {
        let (mut d, _, _) = data();
        let now = Utc::now();
        let unknown = d
            .create(
                &ACCOUNTS,
                &body(json!({"name": "A", "fax2": "1"})),
                None,
                None,
                now,
            )
            .unwrap_err();
        assert!(unknown.message.contains("Invalid property 'fax2'"));
        let long = d
            .create(
                &ACCOUNTS,
                &body(json!({"name": "A", "telephone1": "9".repeat(51)})),
                None,
                None,
                now,
            )
            .unwrap_err();
        assert_eq!(long.code, "0x80044331");
    }
}
