//! An account's records and what the record API does to them: create, update (sublists
//! merged line by line or replaced), `eid:` upsert, transform of an order into an invoice,
//! delete. Every operation checks everything before it changes anything.

use super::NetSuiteAccountConfig;
use super::errors::NsError;
use super::model::{self, RecordType, body_object};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

pub(crate) type Line = Map<String, Value>;

#[derive(Clone, Debug)]
pub(crate) struct Record {
    pub id: u64,
    /// Stored form: references as the internal id (a string), dates as `YYYY-MM-DD`.
    pub fields: Map<String, Value>,
    pub lines: BTreeMap<&'static str, Vec<Line>>,
    pub created: DateTime<Utc>,
    pub modified: DateTime<Utc>,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Counts {
    pub creates: BTreeMap<RecordType, u64>,
    pub creates_by_external_id: BTreeMap<String, u64>,
    pub updates: BTreeMap<RecordType, u64>,
    pub upserts: u64,
    pub transforms: u64,
    pub deletes: u64,
    pub rejected_duplicates: u64,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Store {
    records: BTreeMap<RecordType, BTreeMap<u64, Record>>,
    /// Last internal id per id space (transactions share one).
    last_id: BTreeMap<RecordType, u64>,
    /// Last auto number (`entityId`, `tranId`) per type.
    numbers: BTreeMap<RecordType, u64>,
    pub counts: Counts,
}

/// A body's changes, checked: `Null` clears a field.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    pub fields: Map<String, Value>,
    pub lines: BTreeMap<&'static str, Vec<(Option<u64>, Line)>>,
}

/// Which sublists a body replaces instead of merging.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Replace<'a> {
    /// `PATCH`: those named in `replace=`.
    Named(&'a [String]),
    /// `PUT eid:` and ERP-side edits: every sublist given.
    Given,
}

impl Replace<'_> {
    fn replaces(self, sublist: &str) -> bool {
        match self {
            Replace::Named(names) => names.iter().any(|n| n == sublist),
            Replace::Given => true,
        }
    }
}

/// Who is acting: the API (counted) or the ERP's own users (not counted).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Env<'a> {
    pub config: &'a NetSuiteAccountConfig,
    pub now: DateTime<Utc>,
    pub counted: bool,
}

fn first_id(space: RecordType) -> u64 {
    match space {
        RecordType::InventoryItem => 1001,
        RecordType::Customer => 2001,
        RecordType::SalesOrder | RecordType::Invoice => 5001,
    }
}

impl Store {
    pub(crate) fn len(&self, ty: RecordType) -> u64 {
        self.records.get(&ty).map_or(0, |r| r.len() as u64)
    }

    pub(crate) fn ids(&self, ty: RecordType) -> Vec<u64> {
        self.records
            .get(&ty)
            .map(|r| r.keys().copied().collect())
            .unwrap_or_default()
    }

    pub(crate) fn all(&self, ty: RecordType) -> impl Iterator<Item = &Record> {
        self.records.get(&ty).into_iter().flat_map(|r| r.values())
    }

    pub(crate) fn get(&self, ty: RecordType, id: u64) -> Option<&Record> {
        self.records.get(&ty)?.get(&id)
    }

    pub(crate) fn exists(&self, ty: RecordType, id: u64) -> bool {
        self.get(ty, id).is_some()
    }

    pub(crate) fn by_external_id(&self, ty: RecordType, eid: &str) -> Option<u64> {
        self.all(ty)
            .find(|r| r.fields.get("externalId").and_then(Value::as_str) == Some(eid))
            .map(|r| r.id)
    }

    /// The record a path names: `12` or `eid:ABC`.
    pub(crate) fn find(&self, ty: RecordType, key: &str) -> Option<u64> {
        match key.strip_prefix("eid:") {
            Some(eid) => self.by_external_id(ty, eid),
            None => key
                .parse()
                .ok()
                .filter(|id| model::is_internal_id(key) && self.exists(ty, *id)),
        }
    }

    pub(crate) fn duplicate_external_ids(&self, ty: RecordType) -> Vec<String> {
        let mut seen: BTreeMap<&str, u32> = BTreeMap::new();
        for record in self.all(ty) {
            if let Some(eid) = record.fields.get("externalId").and_then(Value::as_str) {
                *seen.entry(eid).or_default() += 1;
            }
        }
        seen.into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(eid, _)| eid.to_owned())
            .collect()
    }

    /// `POST /record/v1/{type}`, or a create by `PUT eid:` (`eid` given).
    pub(crate) fn create(
        &mut self,
        env: Env<'_>,
        ty: RecordType,
        body: &Value,
        eid: Option<&str>,
    ) -> Result<u64, NsError> {
        self.create_with(env, ty, body, eid, Map::new())
    }

    fn create_with(
        &mut self,
        env: Env<'_>,
        ty: RecordType,
        body: &Value,
        eid: Option<&str>,
        system_fields: Map<String, Value>,
    ) -> Result<u64, NsError> {
        let changes = self.changes(env.config, ty, body_object(body)?)?;
        let mut record = Record {
            id: 0,
            fields: system_fields,
            lines: BTreeMap::new(),
            created: env.now,
            modified: env.now,
        };
        apply(&mut record, changes, Replace::Given)?;
        if let Some(eid) = eid {
            match record.fields.get("externalId").and_then(Value::as_str) {
                Some(given) if given != eid => {
                    return Err(NsError::invalid_value(
                        "externalId",
                        "The external id in the body differs from the one in the URL.",
                    ));
                }
                _ => {
                    record.fields.insert("externalId".into(), eid.into());
                }
            }
        }
        self.finish(env, ty, &mut record)?;
        self.check_unique(env, ty, &record)?;
        record.id = self.next_id(ty);
        self.number(ty, &mut record);
        if env.counted {
            *self.counts.creates.entry(ty).or_default() += 1;
            if let Some(eid) = record.fields.get("externalId").and_then(Value::as_str) {
                *self
                    .counts
                    .creates_by_external_id
                    .entry(format!("{}:{eid}", ty.name()))
                    .or_default() += 1;
            }
        }
        let id = record.id;
        self.records.entry(ty).or_default().insert(id, record);
        Ok(id)
    }

    /// `PATCH /record/v1/{type}/{id}` (and the update half of an upsert).
    pub(crate) fn update(
        &mut self,
        env: Env<'_>,
        ty: RecordType,
        id: u64,
        body: &Value,
        replace: Replace<'_>,
    ) -> Result<(), NsError> {
        let changes = self.changes(env.config, ty, body_object(body)?)?;
        let mut record = self
            .get(ty, id)
            .cloned()
            .ok_or_else(|| NsError::nonexistent(ty.name(), &id.to_string()))?;
        apply(&mut record, changes, replace)?;
        self.finish(env, ty, &mut record)?;
        self.check_unique(env, ty, &record)?;
        record.modified = env.now;
        if env.counted {
            *self.counts.updates.entry(ty).or_default() += 1;
        }
        self.records.entry(ty).or_default().insert(id, record);
        Ok(())
    }

    /// `PUT /record/v1/{type}/eid:{eid}`: the record's id.
    pub(crate) fn upsert(
        &mut self,
        env: Env<'_>,
        ty: RecordType,
        eid: &str,
        body: &Value,
    ) -> Result<u64, NsError> {
        let id = match self.by_external_id(ty, eid) {
            Some(id) => {
                let given = body_object(body)?.get("externalId");
                if given.is_some_and(|g| g.as_str() != Some(eid)) {
                    return Err(NsError::invalid_value(
                        "externalId",
                        "The external id in the body differs from the one in the URL.",
                    ));
                }
                self.update(env, ty, id, body, Replace::Given)?;
                id
            }
            None => self.create(env, ty, body, Some(eid))?,
        };
        self.counts.upserts += 1;
        Ok(id)
    }

    /// `POST /record/v1/salesOrder/{id}/!transform/invoice`: the invoice's id.
    pub(crate) fn transform(
        &mut self,
        env: Env<'_>,
        order_id: u64,
        body: &Value,
    ) -> Result<u64, NsError> {
        let order = self
            .get(RecordType::SalesOrder, order_id)
            .cloned()
            .ok_or_else(|| NsError::nonexistent("salesOrder", &order_id.to_string()))?;
        let given = if body.is_null() {
            Map::new()
        } else {
            body_object(body)?.clone()
        };
        let allowed = ["externalId", "tranDate", "dueDate", "otherRefNum", "memo"];
        if let Some(key) = given.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(NsError::unknown_field(key, "invoice"));
        }
        if order.fields.get("status").and_then(Value::as_str) == Some("G") {
            let eid = given.get("externalId").and_then(Value::as_str);
            if let Some(eid) = eid.filter(|e| self.by_external_id(RecordType::Invoice, e).is_some())
            {
                return Err(self.duplicate(RecordType::Invoice, eid));
            }
            return Err(NsError::bad(
                "USER_ERROR",
                format!("The sales order {order_id} is already billed in full."),
            ));
        }
        let mut invoice = Map::new();
        for key in ["entity", "otherRefNum", "memo", "location"] {
            if let Some(value) = order.fields.get(key) {
                let value = match key {
                    "entity" | "location" => json!({ "id": value }),
                    _ => value.clone(),
                };
                invoice.insert(key.into(), value);
            }
        }
        invoice.insert("item".into(), json!({ "items": invoice_lines(&order) }));
        invoice.extend(given);
        let system = Map::from_iter([("createdFrom".to_owned(), json!(order_id.to_string()))]);
        let id = self.create_with(
            env,
            RecordType::Invoice,
            &Value::Object(invoice),
            None,
            system,
        )?;
        if let Some(order) = self
            .records
            .get_mut(&RecordType::SalesOrder)
            .and_then(|r| r.get_mut(&order_id))
        {
            order.fields.insert("status".into(), "G".into());
            order.modified = env.now;
        }
        self.counts.transforms += 1;
        Ok(id)
    }

    /// `DELETE /record/v1/{type}/{id}`: refused while transactions refer to the record.
    pub(crate) fn delete(&mut self, ty: RecordType, id: u64) -> Result<(), NsError> {
        if !self.exists(ty, id) {
            return Err(NsError::nonexistent(ty.name(), &id.to_string()));
        }
        let key = Value::String(id.to_string());
        let used = [RecordType::SalesOrder, RecordType::Invoice]
            .iter()
            .any(|t| {
                self.all(*t).any(|r| match ty {
                    RecordType::Customer => r.fields.get("entity") == Some(&key),
                    RecordType::InventoryItem => r
                        .lines
                        .values()
                        .flatten()
                        .any(|l| l.get("item") == Some(&key)),
                    RecordType::SalesOrder => r.fields.get("createdFrom") == Some(&key),
                    RecordType::Invoice => false,
                })
            });
        if used {
            return Err(NsError::bad(
                "USER_ERROR",
                "This record cannot be deleted because it has dependent records.",
            ));
        }
        if let Some(records) = self.records.get_mut(&ty) {
            records.remove(&id);
        }
        self.counts.deletes += 1;
        Ok(())
    }

    /// An ERP-side create or edit (see [`super::NetSuiteSim::upsert_record`]).
    pub(crate) fn erp_upsert(
        &mut self,
        config: &NetSuiteAccountConfig,
        ty: RecordType,
        id: Option<u64>,
        record: Value,
    ) -> Result<u64, NsError> {
        let Value::Object(mut fields) = record else {
            return Err(NsError::bad(
                "INVALID_CONTENT",
                "a record must be an object",
            ));
        };
        let id = match (id, fields.remove("id")) {
            (Some(id), _) => Some(id),
            (None, None) => None,
            (None, Some(given)) => {
                let text = given
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or(given.to_string());
                text.parse().ok().filter(|id| self.exists(ty, *id))
            }
        };
        let modified = match fields.remove("lastModifiedDate") {
            None => None,
            Some(at) => Some(
                at.as_str()
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                    .map(|t| t.with_timezone(&Utc))
                    .ok_or_else(|| NsError::invalid_value("lastModifiedDate", "Not ISO 8601."))?,
            ),
        };
        let env = Env {
            config,
            now: super::http::now(),
            counted: false,
        };
        let body = Value::Object(fields);
        let id = match id {
            Some(id) => self
                .update(env, ty, id, &body, Replace::Given)
                .map(|()| id)?,
            None => self.create(env, ty, &body, None)?,
        };
        if let (Some(at), Some(record)) = (
            modified,
            self.records.get_mut(&ty).and_then(|r| r.get_mut(&id)),
        ) {
            record.modified = at;
        }
        Ok(id)
    }

    fn duplicate(&mut self, ty: RecordType, eid: &str) -> NsError {
        self.counts.rejected_duplicates += 1;
        NsError::bad(
            "DUP_RCRD",
            format!(
                "This record already exists: a {} with the external id {eid} exists.",
                ty.name()
            ),
        )
        .at("externalId")
    }

    fn check_unique(
        &mut self,
        env: Env<'_>,
        ty: RecordType,
        record: &Record,
    ) -> Result<(), NsError> {
        if let Some(eid) = record.fields.get("externalId").and_then(Value::as_str)
            && self
                .by_external_id(ty, eid)
                .is_some_and(|other| other != record.id)
        {
            return Err(self.duplicate(ty, eid));
        }
        let _ = env;
        let unique = match ty {
            RecordType::InventoryItem => "itemId",
            RecordType::Customer => "entityId",
            RecordType::SalesOrder | RecordType::Invoice => "tranId",
        };
        if let Some(value) = record.fields.get(unique)
            && self
                .all(ty)
                .any(|r| r.id != record.id && r.fields.get(unique) == Some(value))
        {
            let code = if ty == RecordType::InventoryItem {
                "DUP_ITEM"
            } else {
                "DUP_ENTITY"
            };
            return Err(NsError::bad(
                code,
                format!("The {unique} {value} is already used by another record."),
            )
            .at(unique));
        }
        Ok(())
    }

    fn next_id(&mut self, ty: RecordType) -> u64 {
        let space = if ty.is_transaction() {
            RecordType::SalesOrder
        } else {
            ty
        };
        let last = self.last_id.entry(space).or_insert(first_id(space) - 1);
        *last += 1;
        *last
    }

    /// Auto numbers: `entityId` `CUS{n}`, `tranId` `SO{n}`/`INV{n}`, when not given.
    fn number(&mut self, ty: RecordType, record: &mut Record) {
        let (field, prefix) = match ty {
            RecordType::InventoryItem => return,
            RecordType::Customer => ("entityId", "CUS"),
            RecordType::SalesOrder => ("tranId", "SO"),
            RecordType::Invoice => ("tranId", "INV"),
        };
        if record.fields.contains_key(field) {
            return;
        }
        let n = self.numbers.entry(ty).or_default();
        *n += 1;
        record
            .fields
            .insert(field.into(), format!("{prefix}{n}").into());
    }
}

impl Store {
    /// Defaults, computed fields and required fields, once the changes are applied.
    fn finish(&self, env: Env<'_>, ty: RecordType, record: &mut Record) -> Result<(), NsError> {
        let fields = &mut record.fields;
        let bool_default = |fields: &mut Map<String, Value>, name: &str| {
            fields.entry(name).or_insert(Value::Bool(false));
        };
        let mut missing: Vec<&str> = Vec::new();
        let label = |name: &str| {
            ty.fields()
                .iter()
                .find(|f| f.name == name)
                .map_or("", |f| f.label)
        };
        let text_missing = |fields: &Map<String, Value>, name: &str| {
            fields
                .get(name)
                .and_then(Value::as_str)
                .is_none_or(|s| s.trim().is_empty())
        };
        match ty {
            RecordType::InventoryItem => {
                bool_default(fields, "isInactive");
                if text_missing(fields, "itemId") {
                    missing.push(label("itemId"));
                }
            }
            RecordType::Customer => {
                bool_default(fields, "isInactive");
                bool_default(fields, "isPerson");
                let person = fields.get("isPerson") == Some(&Value::Bool(true));
                let required: &[&str] = if person {
                    &["firstName", "lastName"]
                } else {
                    &["companyName"]
                };
                missing.extend(
                    required
                        .iter()
                        .filter(|n| text_missing(fields, n))
                        .map(|n| label(n)),
                );
                if env.config.one_world && !fields.contains_key("subsidiary") {
                    missing.push(label("subsidiary"));
                }
            }
            RecordType::SalesOrder | RecordType::Invoice => {
                let status = if ty == RecordType::SalesOrder {
                    "B"
                } else {
                    "A"
                };
                fields.entry("status").or_insert(status.into());
                fields
                    .entry("tranDate")
                    .or_insert(env.now.date_naive().format("%Y-%m-%d").to_string().into());
                if !fields.contains_key("entity") {
                    missing.push(label("entity"));
                }
            }
        }
        if !missing.is_empty() {
            return Err(NsError::missing(&missing));
        }
        if ty.is_transaction() {
            self.price_lines(record)?;
        }
        Ok(())
    }

    /// Item lines: quantity 1 and the item's base price by default, `amount`, `total`.
    fn price_lines(&self, record: &mut Record) -> Result<(), NsError> {
        let lines = record.lines.entry("item").or_default();
        if lines.is_empty() {
            return Err(NsError::bad(
                "USER_ERROR",
                "You must enter at least one line item for this transaction.",
            )
            .at("item"));
        }
        let mut total = 0.0;
        for (i, line) in lines.iter_mut().enumerate() {
            let item = line
                .get("item")
                .and_then(Value::as_str)
                .and_then(|id| id.parse().ok())
                .and_then(|id| self.get(RecordType::InventoryItem, id))
                .ok_or_else(|| NsError::missing(&["Item"]).at(format!("item.items[{i}].item")))?;
            let quantity = line
                .entry("quantity")
                .or_insert(json!(1.0))
                .as_f64()
                .unwrap_or(0.0);
            let base_price = item
                .lines
                .get("price")
                .and_then(|prices| prices.first())
                .and_then(|p| p.get("price").cloned())
                .unwrap_or(json!(0.0));
            let rate = line
                .entry("rate")
                .or_insert(base_price)
                .as_f64()
                .unwrap_or(0.0);
            let amount = (quantity * rate * 100.0).round() / 100.0;
            line.insert("amount".into(), json!(amount));
            total += amount;
        }
        record
            .fields
            .insert("total".into(), json!((total * 100.0).round() / 100.0));
        Ok(())
    }
}

/// Applies checked changes to a record: fields set or cleared, sublists replaced or merged
/// line by line (a line with `line` updates that line, one without is added).
fn apply(record: &mut Record, changes: Changes, replace: Replace<'_>) -> Result<(), NsError> {
    for (key, value) in changes.fields {
        if value.is_null() {
            record.fields.remove(&key);
        } else {
            record.fields.insert(key, value);
        }
    }
    for (name, given) in changes.lines {
        let lines = record.lines.entry(name).or_default();
        if replace.replaces(name) {
            lines.clear();
        }
        for (i, (number, fields)) in given.into_iter().enumerate() {
            let existing = number.and_then(|n| {
                lines
                    .iter_mut()
                    .find(|l| l.get("line").and_then(Value::as_u64) == Some(n))
            });
            match (number, existing) {
                (Some(_), Some(line)) if !replace.replaces(name) => {
                    for (key, value) in fields {
                        if value.is_null() {
                            line.remove(&key);
                        } else {
                            line.insert(key, value);
                        }
                    }
                }
                (Some(n), _) if !replace.replaces(name) => {
                    return Err(NsError::invalid_value(
                        &format!("{name}.items[{i}].line"),
                        format!("There is no line {n}."),
                    ));
                }
                _ => {
                    let next = lines
                        .iter()
                        .filter_map(|l| l.get("line").and_then(Value::as_u64))
                        .max()
                        .unwrap_or(0)
                        + 1;
                    let mut line: Line = fields.into_iter().filter(|(_, v)| !v.is_null()).collect();
                    line.insert("line".into(), json!(next));
                    lines.push(line);
                }
            }
        }
    }
    Ok(())
}

/// An order's item lines as the body of its invoice's lines.
fn invoice_lines(order: &Record) -> Vec<Value> {
    order
        .lines
        .get("item")
        .into_iter()
        .flatten()
        .map(|line| {
            let mut copy = Map::new();
            for (key, value) in line {
                match key.as_str() {
                    "item" => copy.insert(key.clone(), json!({ "id": value })),
                    "quantity" | "rate" | "description" => copy.insert(key.clone(), value.clone()),
                    _ => None,
                };
            }
            Value::Object(copy)
        })
        .collect()
}
