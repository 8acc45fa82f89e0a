//! One database's records and the ORM operations both protocols share: `create`, `write`,
//! `read`, `search`, `unlink`, with Odoo's value conversions, defaults, constraints and
//! one2many commands. A call runs on a copy of the data that is kept only if the whole call
//! succeeds (see [`super::methods`]), like Odoo's one SQL transaction per call.

use super::domain::{self, Expr, is_false};
use super::model::{FieldKind, MODELS, Model, OdooError, model, py_repr, reference_field};
use super::values;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

pub(crate) const DATETIME: &str = "%Y-%m-%d %H:%M:%S";

/// Who calls and how: what the ORM needs besides the data.
#[derive(Clone, Debug)]
pub(crate) struct Env {
    pub version: u32,
    pub check_vat: bool,
    pub uid: i64,
    pub active_test: bool,
    /// Counted in the stats (an API call), or an ERP-side edit (a seed).
    pub counted: bool,
}

type Record = Map<String, Value>;

#[derive(Clone, Debug, Default)]
pub(crate) struct DatabaseData {
    tables: BTreeMap<String, BTreeMap<i64, Record>>,
    next_id: BTreeMap<String, i64>,
    order_sequence: u64,
    pub move_sequence: u64,
    /// The last `write_date` handed out: the clock never goes back.
    last_stamp: Option<NaiveDateTime>,
    pub creates: BTreeMap<String, u64>,
    pub updates: BTreeMap<String, u64>,
    pub creates_by_reference: BTreeMap<String, u64>,
    pub create_calls: u64,
    pub batch_creates: u64,
}

impl DatabaseData {
    /// Odoo's seeded stock locations: `WH/Stock` (id 8) and `Partners/Customers`.
    pub(crate) fn seeded() -> Self {
        let mut data = Self::default();
        let now = data.stamp(Utc::now());
        for (id, name, complete, usage) in [
            (5, "Customers", "Partners/Customers", "customer"),
            (8, "Stock", "WH/Stock", "internal"),
        ] {
            let record = json!({"id": id, "name": name, "complete_name": complete,
                "usage": usage, "active": true, "create_date": now, "write_date": now});
            if let Value::Object(record) = record {
                data.table_mut("stock.location").insert(id, record);
            }
        }
        data.next_id.insert("stock.location".into(), 9);
        data
    }

    fn table(&self, model: &str) -> Option<&BTreeMap<i64, Record>> {
        self.tables.get(model)
    }

    fn table_mut(&mut self, model: &str) -> &mut BTreeMap<i64, Record> {
        self.tables.entry(model.to_owned()).or_default()
    }

    pub(crate) fn exists(&self, model: &str, id: i64) -> bool {
        if model == "product.template" {
            return self.exists("product.product", id);
        }
        self.table(model).is_some_and(|t| t.contains_key(&id))
    }

    pub(crate) fn len(&self, model: &str) -> u64 {
        self.table(model).map_or(0, |t| t.len() as u64)
    }

    pub(crate) fn ids(&self, model: &str) -> Vec<i64> {
        self.table(model)
            .map(|t| t.keys().copied().collect())
            .unwrap_or_default()
    }

    /// `write_date` for a change now: UTC to the second, as Odoo stores it, and never
    /// earlier than the previous one, so `(write_date, id)` follows the order of changes.
    fn stamp(&mut self, now: DateTime<Utc>) -> String {
        let now = now.naive_utc();
        let now = now.with_nanosecond_zero();
        let stamp = self.last_stamp.map_or(now, |last| last.max(now));
        self.last_stamp = Some(stamp);
        stamp.format(DATETIME).to_string()
    }

    /// Reference values held by more than one record of the model (archived ones too).
    pub(crate) fn duplicate_references(&self, model: &str) -> Vec<String> {
        let Some(field) = reference_field(model) else {
            return Vec::new();
        };
        let mut seen: BTreeMap<&str, u64> = BTreeMap::new();
        for record in self.table(model).into_iter().flat_map(|t| t.values()) {
            if let Some(Value::String(value)) = record.get(field)
                && !value.is_empty()
            {
                *seen.entry(value).or_default() += 1;
            }
        }
        seen.into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(v, _)| v.to_owned())
            .collect()
    }
}

trait SecondPrecision {
    fn with_nanosecond_zero(self) -> Self;
}

impl SecondPrecision for NaiveDateTime {
    fn with_nanosecond_zero(self) -> Self {
        use chrono::Timelike;
        self.with_nanosecond(0).unwrap_or(self)
    }
}

/// The ORM over one database's data, for one call.
pub(crate) struct Orm<'a> {
    pub data: &'a mut DatabaseData,
    pub env: &'a Env,
    pub now: DateTime<Utc>,
}

pub(crate) fn known_model(name: &str, version: u32) -> Result<Model, OdooError> {
    model(name, version).ok_or_else(|| OdooError::UserError(format!("Object {name} doesn't exist")))
}

impl Orm<'_> {
    fn model(&self, name: &str) -> Result<Model, OdooError> {
        known_model(name, self.env.version)
    }

    /// Creates one record (`id` forces its id, for seeds); its id.
    pub(crate) fn create(
        &mut self,
        model: &Model,
        vals: &Value,
        id: Option<i64>,
    ) -> Result<i64, OdooError> {
        let Value::Object(vals) = vals else {
            return Err(OdooError::type_error(format!(
                "create() expects a dict of values, not {}",
                py_repr(vals)
            )));
        };
        let (mut record, lines) = self.convert(model, vals)?;
        self.defaults(model, &mut record)?;
        let id = match id {
            Some(id) => id,
            None => self.data.next_id.get(model.name).copied().unwrap_or(1),
        };
        let next = self.data.next_id.entry(model.name.to_owned()).or_insert(1);
        *next = (*next).max(id + 1);
        let stamp = self.data.stamp(self.now);
        record.insert("id".into(), json!(id));
        record.insert("create_date".into(), json!(stamp));
        record.insert("write_date".into(), json!(stamp));
        self.check(model, &record)?;
        self.data.table_mut(model.name).insert(id, record.clone());
        if self.env.counted {
            *self.data.creates.entry(model.name.to_owned()).or_default() += 1;
            if let Some(field) = reference_field(model.name)
                && let Some(Value::String(reference)) = record.get(field)
            {
                let key = format!("{}:{field}={reference}", model.name);
                *self.data.creates_by_reference.entry(key).or_default() += 1;
            }
        }
        for (field, commands) in lines {
            self.commands(model, id, &field, &commands)?;
        }
        Ok(id)
    }

    /// Writes the same values on every record; they must all exist.
    pub(crate) fn write(
        &mut self,
        model: &Model,
        ids: &[i64],
        vals: &Value,
    ) -> Result<(), OdooError> {
        let Value::Object(vals) = vals else {
            return Err(OdooError::type_error(format!(
                "write() expects a dict of values, not {}",
                py_repr(vals)
            )));
        };
        self.ensure_exist(model, ids)?;
        for &id in ids {
            let (changes, lines) = self.convert(model, vals)?;
            let stamp = self.data.stamp(self.now);
            let mut record = self
                .data
                .table_mut(model.name)
                .get(&id)
                .cloned()
                .unwrap_or_default();
            record.extend(changes);
            record.insert("write_date".into(), json!(stamp));
            self.check(model, &record)?;
            self.data.table_mut(model.name).insert(id, record);
            for (field, commands) in lines {
                self.commands(model, id, &field, &commands)?;
            }
            if self.env.counted {
                *self.data.updates.entry(model.name.to_owned()).or_default() += 1;
            }
        }
        Ok(())
    }

    pub(crate) fn unlink(&mut self, model: &Model, ids: &[i64]) -> Result<(), OdooError> {
        self.ensure_exist(model, ids)?;
        for &id in ids {
            self.data.table_mut(model.name).remove(&id);
            for field in &model.fields {
                if let FieldKind::One2many { comodel, inverse } = field.kind {
                    let lines = self.lines(comodel, inverse, id);
                    let table = self.data.table_mut(comodel);
                    lines.iter().for_each(|line| {
                        table.remove(line);
                    });
                }
            }
        }
        Ok(())
    }

    pub(crate) fn ensure_exist(&self, model: &Model, ids: &[i64]) -> Result<(), OdooError> {
        let missing: Vec<i64> = ids
            .iter()
            .copied()
            .filter(|id| !self.data.exists(model.name, *id))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(OdooError::missing(model.name, &missing, self.env.uid))
        }
    }

    /// Client values → stored values, and the one2many commands to run afterwards.
    #[allow(clippy::type_complexity)]
    fn convert(
        &self,
        model: &Model,
        vals: &Record,
    ) -> Result<(Record, Vec<(String, Vec<Value>)>), OdooError> {
        let mut record = Record::new();
        let mut lines = Vec::new();
        for (name, value) in vals {
            let field = model
                .field(name)
                .ok_or_else(|| OdooError::invalid_field(name, model.name))?;
            if field.computed {
                return Err(OdooError::UserError(format!(
                    "You cannot write on the computed field '{}' ({}) of model '{}'.",
                    field.label, field.name, model.name
                )));
            }
            if let FieldKind::One2many { .. } = field.kind {
                match value {
                    Value::Array(commands) => lines.push((name.clone(), commands.clone())),
                    v if is_false(v) => {}
                    other => {
                        return Err(OdooError::value(format!(
                            "Invalid one2many commands for {}.{name}: {}",
                            model.name,
                            py_repr(other)
                        )));
                    }
                }
                continue;
            }
            record.insert(
                name.clone(),
                values::convert(self.data, self.env.uid, model, field, value)?,
            );
        }
        Ok((record, lines))
    }

    /// Odoo's defaults for a new record.
    fn defaults(&mut self, model: &Model, record: &mut Record) -> Result<(), OdooError> {
        let mut default = |name: &str, value: Value| {
            if model.field(name).is_some() && !record.contains_key(name) {
                record.insert(name.to_owned(), value);
            }
        };
        default("active", json!(true));
        match model.name {
            "product.product" => default("type", json!("consu")),
            "sale.order" => {
                default("state", json!("draft"));
                default("date_order", json!(self.now.format(DATETIME).to_string()));
            }
            "account.move" => {
                default("state", json!("draft"));
                default("move_type", json!("entry"));
                default("name", json!("/"));
            }
            "sale.order.line" | "account.move.line" => {
                default(
                    if model.name == "sale.order.line" {
                        "product_uom_qty"
                    } else {
                        "quantity"
                    },
                    json!(1.0),
                );
                if let Some(product) = record.get("product_id").and_then(Value::as_i64)
                    && let Some(p) = self
                        .data
                        .table("product.product")
                        .and_then(|t| t.get(&product))
                {
                    let (name, price) = (p.get("name").cloned(), p.get("list_price").cloned());
                    if !record.contains_key("name") {
                        record.insert("name".into(), name.unwrap_or(json!(false)));
                    }
                    if !record.contains_key("price_unit") {
                        record.insert("price_unit".into(), price.unwrap_or(json!(0.0)));
                    }
                }
            }
            _ => {}
        }
        if model.name == "sale.order" && record.get("name").is_none_or(is_false) {
            self.data.order_sequence += 1;
            record.insert(
                "name".into(),
                json!(format!("S{:05}", self.data.order_sequence)),
            );
        }
        Ok(())
    }

    /// Constraints on the record as it would be stored.
    fn check(&self, model: &Model, record: &Record) -> Result<(), OdooError> {
        for field in model.fields.iter().filter(|f| f.required && !f.computed) {
            if record
                .get(field.name)
                .is_none_or(|v| is_false(v) || v == "")
            {
                return Err(OdooError::mandatory(model, field));
            }
        }
        if model.name == "res.partner"
            && self.env.check_vat
            && let Some(Value::String(vat)) = record.get("vat")
            && !vat.is_empty()
            && !looks_like_vat(vat)
        {
            let name = record
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            return Err(OdooError::ValidationError(format!(
                "The VAT number [{vat}] for partner [{name}] does not seem to be valid."
            )));
        }
        if model.name == "account.move"
            && let Some(Value::String(kind)) = record.get("move_type")
            && kind != "entry"
            && record.get("partner_id").is_none_or(is_false)
        {
            let (who, what) = match kind.as_str() {
                "out_invoice" => ("Customer", "Customer Invoice"),
                "out_refund" => ("Customer", "Customer Credit Note"),
                "in_invoice" => ("Vendor", "Vendor Bill"),
                _ => ("Vendor", "Vendor Credit Note"),
            };
            return Err(OdooError::UserError(format!(
                "The field '{who}' is required, please complete it to validate the {what}."
            )));
        }
        Ok(())
    }

    fn lines(&self, comodel: &str, inverse: &str, parent: i64) -> Vec<i64> {
        self.data
            .table(comodel)
            .map(|t| {
                t.iter()
                    .filter(|(_, r)| r.get(inverse).and_then(Value::as_i64) == Some(parent))
                    .map(|(id, _)| *id)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// One2many commands: `[0, 0, vals]` create, `[1, id, vals]` update, `[2, id, 0]` and
    /// `[3, id, 0]` delete (lines are owned), `[4, id, 0]` link, `[5, 0, 0]` clear,
    /// `[6, 0, ids]` replace.
    fn commands(
        &mut self,
        model: &Model,
        parent: i64,
        name: &str,
        commands: &[Value],
    ) -> Result<(), OdooError> {
        let Some(FieldKind::One2many { comodel, inverse }) = model.field(name).map(|f| f.kind)
        else {
            return Ok(());
        };
        let lines = self.model(comodel)?;
        for command in commands {
            let bad = || {
                OdooError::value(format!(
                    "Invalid command {} for {}.{name}",
                    py_repr(command),
                    model.name
                ))
            };
            let parts = command.as_array().ok_or_else(bad)?;
            let code = parts.first().and_then(Value::as_i64).ok_or_else(bad)?;
            let id = parts.get(1).and_then(Value::as_i64).unwrap_or(0);
            let payload = parts.get(2).cloned().unwrap_or(json!(false));
            match code {
                0 => {
                    let mut vals = payload.as_object().cloned().ok_or_else(bad)?;
                    vals.insert(inverse.to_owned(), json!(parent));
                    self.create(&lines, &Value::Object(vals), None)?;
                }
                1 => self.write(&lines, &[id], &payload)?,
                2 | 3 => self.unlink(&lines, &[id])?,
                4 => self.write(&lines, &[id], &json!({ inverse: parent }))?,
                5 | 6 => {
                    let keep: Vec<i64> = payload
                        .as_array()
                        .map(|ids| ids.iter().filter_map(Value::as_i64).collect())
                        .unwrap_or_default();
                    if code == 6 && !payload.is_array() {
                        return Err(bad());
                    }
                    let current = self.lines(comodel, inverse, parent);
                    let drop: Vec<i64> = current
                        .iter()
                        .copied()
                        .filter(|l| !keep.contains(l))
                        .collect();
                    self.unlink(&lines, &drop)?;
                    let link: Vec<i64> =
                        keep.into_iter().filter(|l| !current.contains(l)).collect();
                    self.write(&lines, &link, &json!({ inverse: parent }))?;
                }
                _ => return Err(bad()),
            }
        }
        let stamp = self.data.stamp(self.now);
        if let Some(record) = self.data.table_mut(model.name).get_mut(&parent) {
            record.insert("write_date".into(), json!(stamp));
        }
        Ok(())
    }

    pub(crate) fn search(
        &self,
        model: &Model,
        domain: &Expr,
        order: &[(String, bool)],
    ) -> Vec<i64> {
        let active_test = self.env.active_test && model.has_active() && !domain.mentions("active");
        let mut rows: Vec<Record> = self
            .data
            .ids(model.name)
            .into_iter()
            .map(|id| self.view(model, id))
            .filter(|r| !active_test || r.get("active") != Some(&Value::Bool(false)))
            .filter(|r| domain.matches(r))
            .collect();
        rows.sort_by(|a, b| domain::order_records(order, a, b));
        rows.iter()
            .filter_map(|r| r.get("id").and_then(Value::as_i64))
            .collect()
    }

    /// The records as `read` returns them; `fields` empty means all.
    pub(crate) fn read(
        &self,
        model: &Model,
        ids: &[i64],
        fields: &[String],
    ) -> Result<Vec<Value>, OdooError> {
        if let Some(unknown) = fields.iter().find(|f| model.field(f).is_none()) {
            return Err(OdooError::invalid_field(unknown, model.name));
        }
        self.ensure_exist(model, ids)?;
        Ok(ids
            .iter()
            .map(|id| {
                let mut view = self.view(model, *id);
                if !fields.is_empty() {
                    view.retain(|k, _| k == "id" || fields.contains(k));
                }
                Value::Object(view)
            })
            .collect())
    }

    /// Every field of a record as `read` shows it.
    pub(crate) fn view(&self, model: &Model, id: i64) -> Record {
        let stored = self
            .data
            .table(model.name)
            .and_then(|t| t.get(&id))
            .cloned()
            .unwrap_or_default();
        let mut view = Record::new();
        for field in &model.fields {
            let value = match (field.name, field.kind) {
                ("display_name", _) => json!(self.display_name(model.name, id)),
                ("product_tmpl_id", _) => json!([id, self.display_name("product.product", id)]),
                ("qty_available", _) => json!(self.qty_available(id)),
                ("amount_total", _) => json!(self.amount_total(model, id)),
                ("price_subtotal", _) => {
                    let qty = ["product_uom_qty", "quantity"]
                        .iter()
                        .find_map(|f| stored.get(*f))
                        .and_then(Value::as_f64)
                        .unwrap_or(0.0);
                    json!(
                        qty * stored
                            .get("price_unit")
                            .and_then(Value::as_f64)
                            .unwrap_or(0.0)
                    )
                }
                (_, FieldKind::One2many { comodel, inverse }) => {
                    json!(self.lines(comodel, inverse, id))
                }
                (name, FieldKind::Many2one(comodel)) => {
                    match stored.get(name).and_then(Value::as_i64) {
                        Some(target) => json!([target, self.display_name(comodel, target)]),
                        None => json!(false),
                    }
                }
                (name, kind) => stored.get(name).cloned().unwrap_or_else(|| match kind {
                    FieldKind::Int => json!(0),
                    FieldKind::Float => json!(0.0),
                    _ => json!(false),
                }),
            };
            view.insert(field.name.to_owned(), value);
        }
        view.insert("id".into(), json!(id));
        view
    }

    pub(crate) fn display_name(&self, model: &str, id: i64) -> String {
        let record = self.data.table(model).and_then(|t| t.get(&id));
        let text = |field: &str| {
            record
                .and_then(|r| r.get(field))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        match model {
            "product.product" | "product.template" => match text("default_code") {
                code if code.is_empty() => text("name"),
                code => format!("[{code}] {}", text("name")),
            },
            "stock.location" => text("complete_name"),
            "stock.quant" => {
                let product = record
                    .and_then(|r| r.get("product_id"))
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                self.display_name("product.product", product)
            }
            _ => text("name"),
        }
    }

    fn qty_available(&self, product: i64) -> f64 {
        let internal = |location: Option<i64>| {
            location.is_some_and(|l| {
                self.data
                    .table("stock.location")
                    .and_then(|t| t.get(&l))
                    .and_then(|r| r.get("usage"))
                    == Some(&json!("internal"))
            })
        };
        self.data
            .table("stock.quant")
            .into_iter()
            .flat_map(|t| t.values())
            .filter(|q| q.get("product_id").and_then(Value::as_i64) == Some(product))
            .filter(|q| internal(q.get("location_id").and_then(Value::as_i64)))
            .filter_map(|q| q.get("quantity").and_then(Value::as_f64))
            .sum()
    }

    fn amount_total(&self, model: &Model, id: i64) -> f64 {
        let Some(lines) = model.fields.iter().find_map(|f| match f.kind {
            FieldKind::One2many { comodel, inverse } => Some((comodel, inverse)),
            _ => None,
        }) else {
            return 0.0;
        };
        let Ok(line_model) = self.model(lines.0) else {
            return 0.0;
        };
        self.lines(lines.0, lines.1, id)
            .into_iter()
            .filter_map(|line| {
                self.view(&line_model, line)
                    .get("price_subtotal")
                    .and_then(Value::as_f64)
            })
            .sum()
    }
}

/// base_vat's first check: a country code, then the number.
fn looks_like_vat(vat: &str) -> bool {
    let bytes = vat.as_bytes();
    bytes.len() >= 4
        && bytes.len() <= 15
        && bytes.iter().take(2).all(u8::is_ascii_alphabetic)
        && bytes.iter().skip(2).all(u8::is_ascii_alphanumeric)
}

/// All models, in stats order.
pub(crate) fn all_models() -> impl Iterator<Item = &'static str> {
    MODELS.into_iter()
}
