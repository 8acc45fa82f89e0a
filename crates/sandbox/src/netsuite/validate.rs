//! How a request body is checked against its record type and brought to the stored form
//! (references resolved to internal ids), and the display names of references.

use super::NetSuiteAccountConfig;
use super::errors::NsError;
use super::model::{
    Access, Field, Kind, RecordType, RefKey, Target, ref_key, scalar, sublist_lines,
};
use super::store::{Changes, Line, Record, Store};
use serde_json::{Map, Value};

const PRICE_LEVELS: [&str; 5] = [
    "Base Price",
    "Alternate Price 1",
    "Alternate Price 2",
    "Alternate Price 3",
    "Online Price",
];

impl Store {
    /// Checks a body against the record type and brings it to the stored form.
    pub(crate) fn changes(
        &self,
        config: &NetSuiteAccountConfig,
        ty: RecordType,
        body: &Map<String, Value>,
    ) -> Result<Changes, NsError> {
        let mut changes = Changes::default();
        for (key, value) in body {
            if key == "links" {
                continue;
            }
            if let Some(sublist) = ty.sublist(key) {
                let mut lines = Vec::new();
                for (i, line) in sublist_lines(value, key)?.iter().enumerate() {
                    let path = format!("{key}.items[{i}]");
                    lines.push(self.line(config, sublist.fields, line, &path)?);
                }
                changes.lines.insert(sublist.name, lines);
                continue;
            }
            let field = ty
                .fields()
                .iter()
                .find(|f| f.name == key)
                .filter(|_| key != "subsidiary" || config.one_world)
                .ok_or_else(|| NsError::unknown_field(key, ty.name()))?;
            let value = self.value(config, field, value, key)?;
            changes.fields.insert(key.clone(), value);
        }
        Ok(changes)
    }

    fn line(
        &self,
        config: &NetSuiteAccountConfig,
        fields: &[Field],
        line: &Value,
        path: &str,
    ) -> Result<(Option<u64>, Line), NsError> {
        let Value::Object(map) = line else {
            return Err(NsError::invalid_value(path, "A line must be an object."));
        };
        let mut out = Line::new();
        let mut number = None;
        for (key, value) in map {
            let at = format!("{path}.{key}");
            match key.as_str() {
                "links" => continue,
                "line" => {
                    number = Some(value.as_u64().ok_or_else(|| {
                        NsError::invalid_value(&at, "The line must be a number.")
                    })?);
                    continue;
                }
                _ => {}
            }
            let field = fields
                .iter()
                .find(|f| f.name == key)
                .ok_or_else(|| NsError::unknown_field(&at, path))?;
            out.insert(key.clone(), self.value(config, field, value, &at)?);
        }
        Ok((number, out))
    }

    fn value(
        &self,
        config: &NetSuiteAccountConfig,
        field: &Field,
        value: &Value,
        path: &str,
    ) -> Result<Value, NsError> {
        if field.access == Access::ReadOnly {
            return Err(
                NsError::bad("INVALID_VALUE", format!("The field {path} is read-only.")).at(path),
            );
        }
        match (field.kind, value) {
            (_, Value::Null) => Ok(Value::Null),
            (Kind::Ref(target), _) => self.resolve(config, target, value, path).map(Value::String),
            _ => scalar(field, value, path),
        }
    }

    fn resolve(
        &self,
        config: &NetSuiteAccountConfig,
        target: Target,
        value: &Value,
        path: &str,
    ) -> Result<String, NsError> {
        let key = ref_key(value, path)?;
        let missing = || NsError::invalid_value(path, "The referenced record does not exist.");
        let found = match (target, &key) {
            (Target::Record(ty), RefKey::Id(id)) => id
                .parse()
                .ok()
                .filter(|id| self.exists(ty, *id))
                .map(|_| id.clone()),
            (Target::Record(ty), RefKey::External(eid)) => {
                self.by_external_id(ty, eid).map(|id| id.to_string())
            }
            (Target::Subsidiary, RefKey::Id(id)) => {
                config.subsidiaries.contains(id).then(|| id.clone())
            }
            (Target::Location, RefKey::Id(id)) => config
                .locations
                .iter()
                .any(|l| l.id == *id)
                .then(|| id.clone()),
            (Target::Currency, RefKey::Id(id)) => (id == "1").then(|| id.clone()),
            (Target::PriceLevel, RefKey::Id(id)) => id
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=PRICE_LEVELS.len()).contains(n))
                .map(|_| id.clone()),
            _ => None,
        };
        found.ok_or_else(missing)
    }
}

/// A reference's display name.
pub(crate) fn ref_name(
    store: &Store,
    config: &NetSuiteAccountConfig,
    target: Target,
    id: &str,
) -> String {
    let record = |ty| id.parse().ok().and_then(|id| store.get(ty, id));
    let text = |r: &Record, f: &str| {
        r.fields
            .get(f)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    match target {
        Target::Record(RecordType::InventoryItem) => record(RecordType::InventoryItem)
            .map(|r| text(r, "itemId"))
            .unwrap_or_default(),
        Target::Record(RecordType::Customer) => record(RecordType::Customer)
            .map(|r| {
                let name = if r.fields.get("isPerson") == Some(&Value::Bool(true)) {
                    format!("{} {}", text(r, "firstName"), text(r, "lastName"))
                } else {
                    text(r, "companyName")
                };
                format!("{} {name}", text(r, "entityId"))
            })
            .unwrap_or_default(),
        Target::Record(ty @ (RecordType::SalesOrder | RecordType::Invoice)) => {
            let kind = if ty == RecordType::SalesOrder {
                "Sales Order"
            } else {
                "Invoice"
            };
            record(ty)
                .map(|r| format!("{kind} #{}", text(r, "tranId")))
                .unwrap_or_default()
        }
        Target::Subsidiary if config.subsidiaries.first().is_some_and(|s| s == id) => {
            "Parent Company".into()
        }
        Target::Subsidiary => format!("Subsidiary {id}"),
        Target::Location => config
            .locations
            .iter()
            .find(|l| l.id == id)
            .map(|l| l.name.clone())
            .unwrap_or_default(),
        Target::Currency => "US Dollar".into(),
        Target::PriceLevel => id
            .parse::<usize>()
            .ok()
            .and_then(|n| PRICE_LEVELS.get(n.wrapping_sub(1)))
            .map(|s| (*s).to_owned())
            .unwrap_or_default(),
    }
}
