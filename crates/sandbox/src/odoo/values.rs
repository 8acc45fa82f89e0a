//! Client values → stored values, as Odoo's field classes convert them (`convert_to_cache`):
//! a number for a char becomes its text, `false` or `null` unsets, a value outside a
//! selection, a malformed date or a many2one to a missing record is refused.

use super::domain::is_false;
use super::model::{Field, FieldKind, Model, OdooError, py_repr};
use super::orm::{DATETIME, DatabaseData};
use chrono::{NaiveDate, NaiveDateTime};
use serde_json::{Value, json};

pub(crate) fn convert(
    data: &DatabaseData,
    uid: i64,
    model: &Model,
    field: &Field,
    value: &Value,
) -> Result<Value, OdooError> {
    let wrong = || {
        OdooError::value(format!(
            "Wrong value for {}.{}: {}",
            model.name,
            field.name,
            py_repr(value)
        ))
    };
    match field.kind {
        FieldKind::Char => match value {
            Value::String(_) => Ok(value.clone()),
            Value::Number(n) => Ok(json!(n.to_string())),
            v if is_false(v) => Ok(json!(false)),
            _ => Err(wrong()),
        },
        FieldKind::Int => integer(value),
        FieldKind::Float => float(value),
        FieldKind::Bool => Ok(json!(truthy(value))),
        FieldKind::Selection(options) => match value {
            Value::String(s) if options.contains(&s.as_str()) => Ok(value.clone()),
            v if is_false(v) => Ok(json!(false)),
            _ => Err(wrong()),
        },
        FieldKind::Many2one(comodel) => match value {
            v if is_false(v) => Ok(json!(false)),
            Value::Number(n) => {
                let id = n.as_i64().ok_or_else(wrong)?;
                if data.exists(comodel, id) {
                    Ok(json!(id))
                } else {
                    Err(OdooError::missing(comodel, &[id], uid))
                }
            }
            _ => Err(not_a_number("int", value)),
        },
        FieldKind::Date | FieldKind::Datetime => date(field.kind, value),
        FieldKind::One2many { .. } => Ok(json!(false)),
    }
}

fn not_a_number(class: &str, value: &Value) -> OdooError {
    OdooError::type_error(format!(
        "{class}() argument must be a string or a number, not {}",
        py_repr(value)
    ))
}

fn integer(value: &Value) -> Result<Value, OdooError> {
    match value {
        // Python's int() truncates a float.
        #[allow(clippy::cast_possible_truncation)]
        Value::Number(n) => Ok(json!(
            n.as_i64()
                .or_else(|| n.as_f64().map(|f| f as i64))
                .unwrap_or(0)
        )),
        Value::Bool(b) => Ok(json!(i64::from(*b))),
        Value::Null => Ok(json!(0)),
        Value::String(s) => s.trim().parse::<i64>().map(|i| json!(i)).map_err(|_| {
            OdooError::value(format!(
                "invalid literal for int() with base 10: {}",
                py_repr(value)
            ))
        }),
        _ => Err(not_a_number("int", value)),
    }
}

fn float(value: &Value) -> Result<Value, OdooError> {
    match value {
        Value::Number(n) => Ok(json!(n.as_f64().unwrap_or(0.0))),
        Value::Bool(b) => Ok(json!(f64::from(u8::from(*b)))),
        Value::Null => Ok(json!(0.0)),
        Value::String(s) => s.trim().parse::<f64>().map(|f| json!(f)).map_err(|_| {
            OdooError::value(format!(
                "could not convert string to float: {}",
                py_repr(value)
            ))
        }),
        _ => Err(not_a_number("float", value)),
    }
}

/// `YYYY-MM-DD` for a date; `YYYY-MM-DD HH:MM:SS` (or a bare date, at midnight) for a
/// datetime. ISO `T` separators and offsets are refused, as Odoo refuses them.
fn date(kind: FieldKind, value: &Value) -> Result<Value, OdooError> {
    let is_date = |s: &str| s.len() == 10 && NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok();
    match (kind, value) {
        (_, v) if is_false(v) => Ok(json!(false)),
        (FieldKind::Date, Value::String(s)) if is_date(s) => Ok(value.clone()),
        (FieldKind::Datetime, Value::String(s)) if is_date(s) => Ok(json!(format!("{s} 00:00:00"))),
        (FieldKind::Datetime, Value::String(s))
            if NaiveDateTime::parse_from_str(s, DATETIME).is_ok() =>
        {
            Ok(value.clone())
        }
        (FieldKind::Date, _) => Err(OdooError::value(format!(
            "time data {} does not match format '%Y-%m-%d'",
            py_repr(value)
        ))),
        _ => Err(OdooError::value(format!(
            "time data {} does not match format '%Y-%m-%d %H:%M:%S'",
            py_repr(value)
        ))),
    }
}

/// Python's truthiness.
pub(crate) fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}
