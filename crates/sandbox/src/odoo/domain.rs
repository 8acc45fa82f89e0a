//! Odoo domains (Polish-notation filters such as `['|', ['a', '=', 1], ['b', '>', 2]]`) and
//! `order` specifications, evaluated on a record as `read` shows it (many2one as
//! `[id, name]`, one2many as a list of ids, unset as `false`).

use super::model::{FieldKind, Model, OdooError, py_repr};
use serde_json::{Map, Value};
use std::cmp::Ordering;

const OPERATORS: [&str; 16] = [
    "=",
    "!=",
    "<>",
    ">",
    ">=",
    "<",
    "<=",
    "in",
    "not in",
    "like",
    "ilike",
    "not like",
    "not ilike",
    "=like",
    "=ilike",
    "=?",
];

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Expr {
    Const(bool),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Leaf {
        field: String,
        kind: FieldKind,
        op: String,
        value: Value,
    },
}

fn invalid_leaf(term: &Value) -> OdooError {
    let shown = match term {
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(py_repr).collect();
            format!("({})", inner.join(", "))
        }
        other => py_repr(other),
    };
    OdooError::value(format!("Invalid leaf {shown}"))
}

/// Parses a domain (`false`/`null`/`[]` match everything), checking its fields exist.
pub(crate) fn parse(domain: Option<&Value>, model: &Model) -> Result<Expr, OdooError> {
    let terms = match domain {
        None | Some(Value::Null | Value::Bool(false)) => return Ok(Expr::Const(true)),
        Some(Value::Array(terms)) => terms,
        Some(other) => {
            return Err(OdooError::value(format!(
                "Invalid domain: {}",
                py_repr(other)
            )));
        }
    };
    let mut rest = terms.as_slice();
    let mut all = Expr::Const(true);
    while !rest.is_empty() {
        let (expr, after) = parse_term(rest, model)?;
        all = match all {
            Expr::Const(true) => expr,
            previous => Expr::And(Box::new(previous), Box::new(expr)),
        };
        rest = after;
    }
    Ok(all)
}

fn parse_term<'a>(terms: &'a [Value], model: &Model) -> Result<(Expr, &'a [Value]), OdooError> {
    let Some((first, rest)) = terms.split_first() else {
        return Err(OdooError::value(
            "Domain is syntactically not correct: an operator lacks its operands",
        ));
    };
    match first {
        Value::String(op) if op == "&" || op == "|" => {
            let (left, rest) = parse_term(rest, model)?;
            let (right, rest) = parse_term(rest, model)?;
            let (l, r) = (Box::new(left), Box::new(right));
            Ok((
                if op == "&" {
                    Expr::And(l, r)
                } else {
                    Expr::Or(l, r)
                },
                rest,
            ))
        }
        Value::String(op) if op == "!" => {
            let (inner, rest) = parse_term(rest, model)?;
            Ok((Expr::Not(Box::new(inner)), rest))
        }
        term => Ok((parse_leaf(term, model)?, rest)),
    }
}

fn parse_leaf(term: &Value, model: &Model) -> Result<Expr, OdooError> {
    let Value::Array(parts) = term else {
        return Err(invalid_leaf(term));
    };
    let [left, Value::String(op), value] = parts.as_slice() else {
        return Err(invalid_leaf(term));
    };
    let op = op.to_ascii_lowercase();
    if !OPERATORS.contains(&op.as_str()) {
        return Err(invalid_leaf(term));
    }
    match left {
        // Odoo's TRUE_LEAF (1, '=', 1) and FALSE_LEAF (0, '=', 1).
        Value::Number(n) if op == "=" => Ok(Expr::Const(Some(n) == value.as_number())),
        Value::String(name) => {
            let field = model.field(name).ok_or_else(|| {
                OdooError::value(format!(
                    "Invalid field {}.{name} in leaf {}",
                    model.name,
                    leaf_repr(parts)
                ))
            })?;
            if matches!(op.as_str(), "in" | "not in") && !value.is_array() && !is_false(value) {
                // Odoo accepts a single value and wraps it.
                return Ok(leaf(
                    name,
                    field.kind,
                    op,
                    Value::Array(vec![value.clone()]),
                ));
            }
            Ok(leaf(name, field.kind, op, value.clone()))
        }
        _ => Err(invalid_leaf(term)),
    }
}

fn leaf(field: &str, kind: FieldKind, op: String, value: Value) -> Expr {
    Expr::Leaf {
        field: field.to_owned(),
        kind,
        op,
        value,
    }
}

fn leaf_repr(parts: &[Value]) -> String {
    let inner: Vec<String> = parts.iter().map(py_repr).collect();
    format!("({})", inner.join(", "))
}

pub(crate) fn is_false(value: &Value) -> bool {
    matches!(value, Value::Null | Value::Bool(false))
}

impl Expr {
    /// Whether the domain names `field` (an explicit `active` leaf lifts `active_test`).
    pub(crate) fn mentions(&self, name: &str) -> bool {
        match self {
            Expr::Const(_) => false,
            Expr::And(a, b) | Expr::Or(a, b) => a.mentions(name) || b.mentions(name),
            Expr::Not(a) => a.mentions(name),
            Expr::Leaf { field, .. } => field == name,
        }
    }

    pub(crate) fn matches(&self, record: &Map<String, Value>) -> bool {
        match self {
            Expr::Const(b) => *b,
            Expr::And(a, b) => a.matches(record) && b.matches(record),
            Expr::Or(a, b) => a.matches(record) || b.matches(record),
            Expr::Not(a) => !a.matches(record),
            Expr::Leaf {
                field,
                kind,
                op,
                value,
            } => leaf_matches(
                *kind,
                record.get(field).unwrap_or(&Value::Bool(false)),
                op,
                value,
            ),
        }
    }
}

/// The stored value a leaf compares: a many2one's id (its name for text operators), each
/// id of a one2many.
fn operands(kind: FieldKind, stored: &Value, text: bool) -> Vec<Value> {
    match (kind, stored) {
        (FieldKind::Many2one(_), Value::Array(pair)) => {
            let index = usize::from(text);
            pair.get(index).cloned().into_iter().collect()
        }
        (FieldKind::One2many { .. }, Value::Array(ids)) => ids.clone(),
        (_, Value::Null | Value::Bool(false))
            if !matches!(kind, FieldKind::Bool | FieldKind::Int | FieldKind::Float) =>
        {
            Vec::new()
        }
        _ => vec![stored.clone()],
    }
}

fn leaf_matches(kind: FieldKind, stored: &Value, op: &str, value: &Value) -> bool {
    let text = matches!(
        op,
        "like" | "ilike" | "not like" | "not ilike" | "=like" | "=ilike"
    ) || (matches!(kind, FieldKind::Many2one(_)) && value.is_string());
    let values = operands(kind, stored, text);
    match op {
        "=?" if is_false(value) => true,
        "=" | "=?" => equals(&values, value),
        "!=" | "<>" => !equals(&values, value),
        "in" => in_list(&values, value),
        "not in" => !in_list(&values, value),
        "like" | "ilike" | "=like" | "=ilike" => values.iter().any(|v| like(v, op, value)),
        "not like" => !values.iter().any(|v| like(v, "like", value)),
        "not ilike" => !values.iter().any(|v| like(v, "ilike", value)),
        _ => values.iter().any(|v| {
            !is_false(value)
                && compare(v, value).is_some_and(|o| match op {
                    ">" => o.is_gt(),
                    ">=" => o.is_ge(),
                    "<" => o.is_lt(),
                    _ => o.is_le(),
                })
        }),
    }
}

fn equals(values: &[Value], value: &Value) -> bool {
    if is_false(value) {
        return values.is_empty() || values.iter().all(is_false);
    }
    values
        .iter()
        .any(|v| compare(v, value).is_some_and(Ordering::is_eq))
}

fn in_list(values: &[Value], list: &Value) -> bool {
    let Value::Array(list) = list else {
        return false;
    };
    list.iter().any(|item| equals(values, item))
}

fn like(stored: &Value, op: &str, pattern: &Value) -> bool {
    let (Value::String(stored), Some(pattern)) = (stored, pattern.as_str()) else {
        return false;
    };
    let pattern = if op.starts_with('=') {
        pattern.to_owned()
    } else {
        format!("%{pattern}%")
    };
    if op.ends_with("ilike") {
        sql_like(&stored.to_lowercase(), &pattern.to_lowercase())
    } else {
        sql_like(stored, &pattern)
    }
}

/// SQL `LIKE`: `%` any run, `_` any one character, `\` escapes.
fn sql_like(text: &str, pattern: &str) -> bool {
    let text: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        tokens.push(match c {
            '\\' => Some(chars.next().unwrap_or('\\')),
            '%' => None,
            '_' => Some('\u{0}'),
            c => Some(c),
        });
    }
    // reachable[i]: the pattern so far can end after i characters of the text.
    let mut reachable = vec![false; text.len() + 1];
    reachable[0] = true;
    for token in tokens {
        let mut next = vec![false; text.len() + 1];
        for i in 0..=text.len() {
            if !reachable[i] {
                continue;
            }
            match token {
                None => next[i..].iter_mut().for_each(|r| *r = true),
                Some(c) => {
                    if text.get(i).is_some_and(|t| c == '\u{0}' || *t == c) {
                        next[i + 1] = true;
                    }
                }
            }
        }
        reachable = next;
    }
    reachable[text.len()]
}

/// Numbers numerically, strings (dates and datetimes included) as text, booleans as such.
pub(crate) fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Number(x), Value::Bool(y)) | (Value::Bool(y), Value::Number(x)) => {
            let ordering = x.as_f64()?.partial_cmp(&f64::from(u8::from(*y)))?;
            Some(if a.is_number() {
                ordering
            } else {
                ordering.reverse()
            })
        }
        _ => None,
    }
}

/// Parses `order` (`"write_date asc, id asc"`); the default is `id`.
pub(crate) fn parse_order(
    order: Option<&Value>,
    model: &Model,
) -> Result<Vec<(String, bool)>, OdooError> {
    let text = match order {
        None | Some(Value::Null | Value::Bool(false)) => return Ok(vec![("id".into(), false)]),
        Some(Value::String(text)) if text.trim().is_empty() => {
            return Ok(vec![("id".into(), false)]);
        }
        Some(Value::String(text)) => text,
        Some(other) => {
            return Err(OdooError::value(format!(
                "Invalid \"order\" specified ({})",
                py_repr(other)
            )));
        }
    };
    let invalid = || {
        OdooError::value(format!(
            "Invalid \"order\" specified ({text}). A valid \"order\" specification is a \
             comma-separated list of valid field names (optionally followed by asc/desc for \
             the direction)"
        ))
    };
    let mut spec = Vec::new();
    for part in text.split(',') {
        let words: Vec<&str> = part.split_whitespace().collect();
        let (name, desc) = match words.as_slice() {
            [name] => (*name, false),
            [name, dir] if dir.eq_ignore_ascii_case("asc") => (*name, false),
            [name, dir] if dir.eq_ignore_ascii_case("desc") => (*name, true),
            _ => return Err(invalid()),
        };
        match model.field(name) {
            Some(field) if !matches!(field.kind, FieldKind::One2many { .. }) => {}
            _ => return Err(OdooError::invalid_field(name, model.name)),
        }
        spec.push((name.to_owned(), desc));
    }
    Ok(spec)
}

/// Orders two records as PostgreSQL would: unset values last ascending, first descending;
/// a many2one by its id.
pub(crate) fn order_records(
    spec: &[(String, bool)],
    a: &Map<String, Value>,
    b: &Map<String, Value>,
) -> Ordering {
    for (field, desc) in spec {
        let key = |r: &Map<String, Value>| match r.get(field) {
            Some(Value::Array(pair)) => pair.first().cloned(),
            Some(Value::Null) | None => None,
            Some(v) => Some(v.clone()),
        };
        let ordering = match (key(a), key(b)) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(x), Some(y)) => match (&x, &y) {
                (Value::Bool(false), Value::String(_) | Value::Number(_)) => Ordering::Greater,
                (Value::String(_) | Value::Number(_), Value::Bool(false)) => Ordering::Less,
                _ => compare(&x, &y).unwrap_or(Ordering::Equal),
            },
        };
        let ordering = if *desc { ordering.reverse() } else { ordering };
        if ordering.is_ne() {
            return ordering;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::odoo::model::model;
    use serde_json::json;

    fn record(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn polish_notation_with_implicit_and() {
        let partner = model("res.partner", 17).unwrap();
        let domain = json!([
            "|",
            ["write_date", ">", "2025-01-01 10:00:00"],
            "&",
            ["write_date", "=", "2025-01-01 10:00:00"],
            ["id", ">", 5],
            ["active", "=", true]
        ]);
        let expr = parse(Some(&domain), &partner).unwrap();
        let at =
            |date: &str, id: i64| record(json!({"write_date": date, "id": id, "active": true}));
        assert!(expr.matches(&at("2025-01-01 10:00:01", 1)));
        assert!(expr.matches(&at("2025-01-01 10:00:00", 6)));
        assert!(!expr.matches(&at("2025-01-01 10:00:00", 5)));
        assert!(!expr.matches(&at("2025-01-01 09:59:59", 9)));
        assert!(expr.mentions("active"));
    }

    #[test]
    fn many2one_unset_and_like() {
        let order = model("sale.order", 17).unwrap();
        let linked = record(json!({"partner_id": [7, "Acme Corp"], "client_order_ref": false}));
        let check = |d: Value| parse(Some(&d), &order).unwrap().matches(&linked);
        assert!(check(json!([["partner_id", "=", 7]])));
        assert!(check(json!([["partner_id", "in", [1, 7]]])));
        assert!(check(json!([["partner_id", "ilike", "acme"]])));
        assert!(!check(json!([["partner_id", "like", "acme"]])));
        assert!(check(json!([["client_order_ref", "=", false]])));
        assert!(!check(json!([["client_order_ref", "!=", false]])));
        assert!(check(json!([["client_order_ref", "not ilike", "x"]])));
        assert!(sql_like("SKU-001", "SKU%1"));
        assert!(sql_like("SKU-001", "SKU_0%"));
        assert!(!sql_like("SKU-001", "SKU_1%"));
    }

    #[test]
    fn malformed_domains_and_orders_are_value_errors() {
        let partner = model("res.partner", 17).unwrap();
        let error = parse(Some(&json!([["name", "~", "x"]])), &partner).unwrap_err();
        assert_eq!(error.message(), "Invalid leaf ('name', '~', 'x')");
        assert!(parse(Some(&json!(["|", ["name", "=", "x"]])), &partner).is_err());
        assert!(parse(Some(&json!([["foo", "=", 1]])), &partner).is_err());
        assert!(parse_order(Some(&json!("foo desc")), &partner).is_err());
        assert!(parse_order(Some(&json!("name sideways")), &partner).is_err());
        assert_eq!(
            parse_order(Some(&json!("write_date asc, id DESC")), &partner).unwrap(),
            vec![("write_date".to_owned(), false), ("id".to_owned(), true)]
        );
    }
}
