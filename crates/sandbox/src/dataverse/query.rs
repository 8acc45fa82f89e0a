//! The OData query options a connector uses on a collection: `$select`, `$filter` (comparisons
//! joined by `and`), `$orderby`, `$top`, and server-driven paging (`Prefer:
//! odata.maxpagesize` → `@odata.nextLink` with a `$skiptoken`). Anything else is refused, as
//! Dataverse refuses what it cannot parse.

use super::model::{DvError, TableDef};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use std::cmp::Ordering;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Text(String),
    Number(f64),
    Time(DateTime<Utc>),
    Null,
}

#[derive(Debug, Clone, PartialEq)]
struct Comparison {
    column: String,
    op: Op,
    value: Literal,
}

/// A parsed collection query.
#[derive(Debug, Default)]
pub(crate) struct CollectionQuery {
    select: Option<Vec<String>>,
    filter: Vec<Comparison>,
    order: Vec<(String, bool)>,
    top: Option<usize>,
    /// Rows already served by earlier pages.
    pub skip: usize,
}

fn parse_literal(text: &str) -> Result<Literal, DvError> {
    let text = text.trim();
    if let Some(inner) = text.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')) {
        return Ok(Literal::Text(inner.replace("''", "'")));
    }
    if text == "null" {
        return Ok(Literal::Null);
    }
    // A GUID literal (`_salesorderid_value eq 0f8f…`) compares as its text.
    if uuid::Uuid::parse_str(text).is_ok() {
        return Ok(Literal::Text(text.to_owned()));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(Literal::Time(t.with_timezone(&Utc)));
    }
    text.parse::<f64>().map(Literal::Number).map_err(|_| {
        DvError::bad_request(format!(
            "Syntax error at position 0 in '{text}': not a literal"
        ))
    })
}

/// Splits on ` and ` outside quotes.
fn split_and(filter: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let lower = filter.to_owned();
    let mut chars = lower.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
        }
        if !quoted && filter[i..].to_ascii_lowercase().starts_with(" and ") {
            parts.push(std::mem::take(&mut current));
            for _ in 0..4 {
                chars.next();
            }
            continue;
        }
        current.push(c);
    }
    parts.push(current);
    parts
}

impl CollectionQuery {
    pub(crate) fn parse(def: &TableDef, params: &[(String, String)]) -> Result<Self, DvError> {
        let mut query = CollectionQuery::default();
        let known = |c: &str| {
            c == def.pk
                || ["createdon", "modifiedon", "versionnumber"].contains(&c)
                || def.columns.iter().any(|(n, _)| *n == c)
                || def.lookups.iter().any(|(_, _, a)| *a == c)
        };
        let unknown = |c: &str| {
            DvError::bad_request(format!(
                "Could not find a property named '{c}' on type 'Microsoft.Dynamics.CRM.{}'.",
                def.logical
            ))
        };
        for (name, value) in params {
            match name.as_str() {
                "$select" => {
                    let columns: Vec<String> =
                        value.split(',').map(|c| c.trim().to_owned()).collect();
                    if let Some(c) = columns.iter().find(|c| !known(c)) {
                        return Err(unknown(c));
                    }
                    query.select = Some(columns);
                }
                "$filter" => {
                    for part in split_and(value) {
                        let part = part.trim().trim_start_matches('(').trim_end_matches(')');
                        let mut words = part.splitn(3, ' ');
                        let (Some(column), Some(op), Some(literal)) =
                            (words.next(), words.next(), words.next())
                        else {
                            return Err(DvError::bad_request(format!(
                                "Syntax error in $filter: '{part}'"
                            )));
                        };
                        if !known(column) {
                            return Err(unknown(column));
                        }
                        let op = match op {
                            "eq" => Op::Eq,
                            "ne" => Op::Ne,
                            "gt" => Op::Gt,
                            "ge" => Op::Ge,
                            "lt" => Op::Lt,
                            "le" => Op::Le,
                            other => {
                                return Err(DvError::bad_request(format!(
                                    "Syntax error in $filter: unknown operator '{other}'"
                                )));
                            }
                        };
                        query.filter.push(Comparison {
                            column: column.to_owned(),
                            op,
                            value: parse_literal(literal)?,
                        });
                    }
                }
                "$orderby" => {
                    for part in value.split(',') {
                        let mut words = part.split_whitespace();
                        let column = words.next().unwrap_or_default().to_owned();
                        if !known(&column) {
                            return Err(unknown(&column));
                        }
                        let ascending = match words.next() {
                            None | Some("asc") => true,
                            Some("desc") => false,
                            Some(other) => {
                                return Err(DvError::bad_request(format!(
                                    "Syntax error in $orderby: '{other}'"
                                )));
                            }
                        };
                        query.order.push((column, ascending));
                    }
                }
                "$top" => {
                    query.top = Some(value.parse().map_err(|_| {
                        DvError::bad_request(format!("$top must be a number, not {value:?}"))
                    })?);
                }
                "$skiptoken" => query.skip = parse_skiptoken(value)?,
                other => {
                    return Err(DvError::bad_request(format!(
                        "The query parameter '{other}' is not supported"
                    )));
                }
            }
        }
        Ok(query)
    }

    fn matches(&self, row: &Map<String, Value>) -> bool {
        self.filter.iter().all(|c| {
            let value = row.get(&c.column).unwrap_or(&Value::Null);
            let ordering = match (&c.value, value) {
                (Literal::Null, v) => {
                    return match c.op {
                        Op::Eq => v.is_null(),
                        Op::Ne => !v.is_null(),
                        _ => false,
                    };
                }
                (_, Value::Null) => return c.op == Op::Ne,
                (Literal::Text(t), Value::String(s)) => s.to_lowercase().cmp(&t.to_lowercase()),
                (Literal::Number(n), Value::Number(v)) => v
                    .as_f64()
                    .and_then(|v| v.partial_cmp(n))
                    .unwrap_or(Ordering::Equal),
                (Literal::Time(t), Value::String(s)) => match DateTime::parse_from_rfc3339(s) {
                    Ok(v) => v.with_timezone(&Utc).cmp(t),
                    Err(_) => return false,
                },
                _ => return false,
            };
            match c.op {
                Op::Eq => ordering == Ordering::Equal,
                Op::Ne => ordering != Ordering::Equal,
                Op::Gt => ordering == Ordering::Greater,
                Op::Ge => ordering != Ordering::Less,
                Op::Lt => ordering == Ordering::Less,
                Op::Le => ordering != Ordering::Greater,
            }
        })
    }

    /// The matching rows in order (the primary key breaks ties, as Dataverse adds it).
    pub(crate) fn run<'a>(
        &self,
        def: &TableDef,
        rows: impl Iterator<Item = &'a Map<String, Value>>,
    ) -> Vec<&'a Map<String, Value>> {
        let mut out: Vec<&Map<String, Value>> = rows.filter(|r| self.matches(r)).collect();
        let compare = |a: &Value, b: &Value| match (a, b) {
            (Value::Number(x), Value::Number(y)) => x
                .as_f64()
                .partial_cmp(&y.as_f64())
                .unwrap_or(Ordering::Equal),
            (Value::String(x), Value::String(y)) => x.to_lowercase().cmp(&y.to_lowercase()),
            (Value::Null, Value::Null) => Ordering::Equal,
            (Value::Null, _) => Ordering::Less,
            (_, Value::Null) => Ordering::Greater,
            _ => Ordering::Equal,
        };
        out.sort_by(|a, b| {
            for (column, ascending) in &self.order {
                let o = compare(
                    a.get(column).unwrap_or(&Value::Null),
                    b.get(column).unwrap_or(&Value::Null),
                );
                let o = if *ascending { o } else { o.reverse() };
                if o != Ordering::Equal {
                    return o;
                }
            }
            compare(
                a.get(def.pk).unwrap_or(&Value::Null),
                b.get(def.pk).unwrap_or(&Value::Null),
            )
        });
        if let Some(top) = self.top {
            out.truncate(top);
        }
        out
    }

    /// The row as the query selects it (all columns without `$select`), with its etag.
    pub(crate) fn project(&self, def: &TableDef, row: &Map<String, Value>) -> Value {
        let mut out = Map::new();
        out.insert(
            "@odata.etag".into(),
            Value::String(format!(
                "W/\"{}\"",
                row.get("versionnumber").cloned().unwrap_or(Value::Null)
            )),
        );
        match &self.select {
            Some(columns) => {
                for c in columns {
                    out.insert(c.clone(), row.get(c).cloned().unwrap_or(Value::Null));
                }
                out.insert(
                    def.pk.into(),
                    row.get(def.pk).cloned().unwrap_or(Value::Null),
                );
            }
            None => {
                for (k, v) in row {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
        Value::Object(out)
    }
}

/// Dataverse's skip tokens are XML paging cookies; ours carries the rows already served.
pub(crate) fn skiptoken(served: usize, page: usize) -> String {
    format!("<cookie pagenumber=\"{page}\" served=\"{served}\" istracking=\"False\" />")
}

fn parse_skiptoken(token: &str) -> Result<usize, DvError> {
    token
        .split("served=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| DvError::bad_request(format!("invalid $skiptoken {token:?}")))
}

#[cfg(test)]
mod tests {
    use super::super::model::ACCOUNTS;
    use super::*;
    use serde_json::json;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn filters_on_modifiedon_and_orders_with_the_key_as_tiebreak() {
        let rows = [
            json!({"accountid": "b", "modifiedon": "2026-01-02T00:00:00Z", "name": "B"}),
            json!({"accountid": "a", "modifiedon": "2026-01-02T00:00:00Z", "name": "O'Neil"}),
            json!({"accountid": "c", "modifiedon": "2026-01-01T00:00:00Z", "name": "C"}),
        ];
        let maps: Vec<Map<String, Value>> =
            rows.iter().filter_map(|r| r.as_object().cloned()).collect();
        let q = CollectionQuery::parse(
            &ACCOUNTS,
            &params(&[
                ("$filter", "modifiedon ge 2026-01-02T00:00:00Z"),
                ("$orderby", "modifiedon asc"),
            ]),
        )
        .unwrap();
        let ids: Vec<&Value> = q
            .run(&ACCOUNTS, maps.iter())
            .iter()
            .map(|r| &r["accountid"])
            .collect();
        assert_eq!(ids, [&json!("a"), &json!("b")]);
        let q = CollectionQuery::parse(
            &ACCOUNTS,
            &params(&[(
                "$filter",
                "name eq 'o''neil' and modifiedon gt 2025-01-01T00:00:00Z",
            )]),
        )
        .unwrap();
        assert_eq!(q.run(&ACCOUNTS, maps.iter()).len(), 1);
    }

    #[test]
    fn unknown_columns_and_options_are_refused() {
        assert!(CollectionQuery::parse(&ACCOUNTS, &params(&[("$select", "fax")])).is_err());
        assert!(CollectionQuery::parse(&ACCOUNTS, &params(&[("$expand", "x")])).is_err());
        assert_eq!(
            CollectionQuery::parse(&ACCOUNTS, &params(&[("$skiptoken", &skiptoken(40, 3))]))
                .unwrap()
                .skip,
            40
        );
    }
}
