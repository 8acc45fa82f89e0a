//! Records as the record API shows them: `links`, `id` as a string, references as
//! `{"links", "id", "refName"}`, sublists as links only unless expanded, dates ISO 8601.

use super::NetSuiteAccountConfig;
use super::model::{Field, Kind, RecordType};
use super::store::{Line, Record, Store};
use super::validate::ref_name;
use serde_json::{Map, Value, json};

pub(crate) const ISO_SECONDS: &str = "%Y-%m-%dT%H:%M:%SZ";

fn links(href: Option<String>) -> Value {
    match href {
        Some(href) => json!([{ "rel": "self", "href": href }]),
        None => json!([]),
    }
}

impl Store {
    /// A record as `GET /record/v1/{type}/{id}` answers it; `base` is the account's REST base
    /// (`http://host/netsuite/{acct}/services/rest`), `None` for no links.
    pub(crate) fn render(
        &self,
        config: &NetSuiteAccountConfig,
        ty: RecordType,
        id: u64,
        base: Option<&str>,
        expand: bool,
    ) -> Option<Value> {
        let record = self.get(ty, id)?;
        let href = |rest: &str| base.map(|b| format!("{b}/record/v1/{}/{id}{rest}", ty.name()));
        let mut out = Map::new();
        if base.is_some() {
            out.insert("links".into(), links(href("")));
        }
        out.insert("id".into(), json!(id.to_string()));
        self.render_fields(config, ty, ty.fields(), &record.fields, base, &mut out);
        out.insert(
            "createdDate".into(),
            json!(record.created.format(ISO_SECONDS).to_string()),
        );
        out.insert(
            "lastModifiedDate".into(),
            json!(record.modified.format(ISO_SECONDS).to_string()),
        );
        for sublist in ty.sublists() {
            let mut value = Map::new();
            let sub_href = href(&format!("/{}", sublist.name));
            if base.is_some() || !expand {
                value.insert("links".into(), links(sub_href.clone()));
            }
            if expand {
                let lines =
                    self.render_lines(config, ty, record, sublist.name, sublist.fields, base);
                let n = lines.len();
                value.insert("items".into(), Value::Array(lines));
                value.insert("totalResults".into(), json!(n));
                value.insert("count".into(), json!(n));
                value.insert("hasMore".into(), json!(false));
                value.insert("offset".into(), json!(0));
            }
            out.insert(sublist.name.into(), Value::Object(value));
        }
        Some(Value::Object(out))
    }

    fn render_lines(
        &self,
        config: &NetSuiteAccountConfig,
        ty: RecordType,
        record: &Record,
        name: &str,
        fields: &[Field],
        base: Option<&str>,
    ) -> Vec<Value> {
        let lines: &[Line] = record.lines.get(name).map_or(&[], Vec::as_slice);
        lines
            .iter()
            .map(|line| {
                let mut out = Map::new();
                if let Some(base) = base {
                    let n = line.get("line").cloned().unwrap_or(Value::Null);
                    out.insert(
                        "links".into(),
                        links(Some(format!(
                            "{base}/record/v1/{}/{}/{name}/{n}",
                            ty.name(),
                            record.id
                        ))),
                    );
                }
                self.render_fields(config, ty, fields, line, base, &mut out);
                Value::Object(out)
            })
            .collect()
    }

    fn render_fields(
        &self,
        config: &NetSuiteAccountConfig,
        ty: RecordType,
        fields: &[Field],
        values: &Map<String, Value>,
        base: Option<&str>,
        out: &mut Map<String, Value>,
    ) {
        for field in fields {
            let Some(value) = values.get(field.name) else {
                continue;
            };
            let shown = match (field.kind, value) {
                (Kind::Ref(target), Value::String(id)) => {
                    let mut reference = Map::new();
                    if let Some(base) = base {
                        reference.insert(
                            "links".into(),
                            links(Some(format!("{base}/record/v1/{}/{id}", target.path()))),
                        );
                    }
                    reference.insert("id".into(), json!(id));
                    reference.insert("refName".into(), json!(ref_name(self, config, target, id)));
                    Value::Object(reference)
                }
                (Kind::Status, Value::String(code)) => {
                    json!({ "id": code, "refName": ty.status_name(code) })
                }
                _ => value.clone(),
            };
            out.insert(field.name.into(), shown);
        }
    }
}
