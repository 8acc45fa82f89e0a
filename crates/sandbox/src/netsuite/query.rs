//! SuiteQL over the account's records: the tables (`item`, `customer`, `transaction`,
//! `location`), typed comparisons (checked before anything is read, so a wrong query fails on
//! an empty table too), three-valued logic, ordering with NULLs last, and paging. Values come
//! back as strings, booleans as `T`/`F`, dates in the user's format (`MM/DD/YYYY`); a NULL is
//! left out of its row.

use super::NetSuiteAccountConfig;
use super::model::RecordType;
use super::store::{Record, Store};
use super::suiteql::{Expr, Item, Literal, Op, Select, oracle_format};
use chrono::{NaiveDate, NaiveDateTime};
use serde_json::{Map, Value};
use std::cmp::Ordering;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Type {
    Int,
    Num,
    Text,
    Bool,
    Time,
    Date,
}

#[derive(Clone, Debug, PartialEq)]
enum Sql {
    Num(f64),
    Text(String),
    Bool(bool),
    Time(NaiveDateTime),
}

type Columns = &'static [(&'static str, Type)];

const ITEM: Columns = &[
    ("id", Type::Int),
    ("itemid", Type::Text),
    ("displayname", Type::Text),
    ("salesdescription", Type::Text),
    ("upccode", Type::Text),
    ("isinactive", Type::Bool),
    ("itemtype", Type::Text),
    ("externalid", Type::Text),
    ("createddate", Type::Time),
    ("lastmodifieddate", Type::Time),
];

const CUSTOMER: Columns = &[
    ("id", Type::Int),
    ("entityid", Type::Text),
    ("companyname", Type::Text),
    ("firstname", Type::Text),
    ("lastname", Type::Text),
    ("isperson", Type::Bool),
    ("email", Type::Text),
    ("phone", Type::Text),
    ("subsidiary", Type::Int),
    ("isinactive", Type::Bool),
    ("externalid", Type::Text),
    ("datecreated", Type::Time),
    ("lastmodifieddate", Type::Time),
];

const TRANSACTION: Columns = &[
    ("id", Type::Int),
    ("tranid", Type::Text),
    ("type", Type::Text),
    ("entity", Type::Int),
    ("trandate", Type::Date),
    ("duedate", Type::Date),
    ("otherrefnum", Type::Text),
    ("memo", Type::Text),
    ("status", Type::Text),
    ("createdfrom", Type::Int),
    ("foreigntotal", Type::Num),
    ("externalid", Type::Text),
    ("createddate", Type::Time),
    ("lastmodifieddate", Type::Time),
];

const LOCATION: Columns = &[("id", Type::Int), ("name", Type::Text)];

fn columns(table: &str) -> Option<Columns> {
    Some(match table {
        "item" => ITEM,
        "customer" => CUSTOMER,
        "transaction" => TRANSACTION,
        "location" => LOCATION,
        _ => return None,
    })
}

type Row = Vec<Option<Sql>>;

fn record_row(columns: Columns, ty: RecordType, record: &Record) -> Row {
    let text = |field: &str| {
        record
            .fields
            .get(field)
            .and_then(Value::as_str)
            .map(|s| Sql::Text(s.to_owned()))
    };
    let number = |field: &str| match record.fields.get(field) {
        Some(Value::String(s)) => s.parse().ok().map(Sql::Num),
        Some(Value::Number(n)) => n.as_f64().map(Sql::Num),
        _ => None,
    };
    let date = |field: &str| {
        record
            .fields
            .get(field)
            .and_then(Value::as_str)
            .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(Sql::Time)
    };
    columns
        .iter()
        .map(|(name, _)| match *name {
            "id" => Some(Sql::Num(record.id as f64)),
            "itemtype" => Some(Sql::Text("InvtPart".into())),
            "type" => Some(Sql::Text(
                if ty == RecordType::SalesOrder {
                    "SalesOrd"
                } else {
                    "CustInvc"
                }
                .into(),
            )),
            "createddate" | "datecreated" => Some(Sql::Time(record.created.naive_utc())),
            "lastmodifieddate" => Some(Sql::Time(record.modified.naive_utc())),
            "isinactive" | "isperson" => record
                .fields
                .get(camel(name))
                .and_then(Value::as_bool)
                .map(Sql::Bool),
            "subsidiary" | "entity" | "createdfrom" => number(camel(name)),
            "foreigntotal" => number("total"),
            "trandate" | "duedate" => date(camel(name)),
            other => text(camel(other)),
        })
        .collect()
}

/// The record field behind a column.
fn camel(column: &str) -> &'static str {
    match column {
        "itemid" => "itemId",
        "displayname" => "displayName",
        "salesdescription" => "salesDescription",
        "upccode" => "upcCode",
        "isinactive" => "isInactive",
        "externalid" => "externalId",
        "entityid" => "entityId",
        "companyname" => "companyName",
        "firstname" => "firstName",
        "lastname" => "lastName",
        "isperson" => "isPerson",
        "email" => "email",
        "phone" => "phone",
        "subsidiary" => "subsidiary",
        "tranid" => "tranId",
        "entity" => "entity",
        "trandate" => "tranDate",
        "duedate" => "dueDate",
        "otherrefnum" => "otherRefNum",
        "memo" => "memo",
        "status" => "status",
        "createdfrom" => "createdFrom",
        _ => "",
    }
}

fn rows(store: &Store, config: &NetSuiteAccountConfig, table: &str, columns: Columns) -> Vec<Row> {
    let of = |ty| store.all(ty).map(move |r| record_row(columns, ty, r));
    match table {
        "item" => of(RecordType::InventoryItem).collect(),
        "customer" => of(RecordType::Customer).collect(),
        "transaction" => {
            let mut all: Vec<Row> = of(RecordType::SalesOrder)
                .chain(of(RecordType::Invoice))
                .collect();
            all.sort_by(|a, b| compare(a.first(), b.first()));
            all
        }
        _ => config
            .locations
            .iter()
            .map(|l| {
                vec![
                    Some(l.id.parse().map_or(Sql::Text(l.id.clone()), Sql::Num)),
                    Some(Sql::Text(l.name.clone())),
                ]
            })
            .collect(),
    }
}

fn compare(a: Option<&Option<Sql>>, b: Option<&Option<Sql>>) -> Ordering {
    match (a.and_then(Option::as_ref), b.and_then(Option::as_ref)) {
        (Some(a), Some(b)) => order(a, b).unwrap_or(Ordering::Equal),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

fn order(a: &Sql, b: &Sql) -> Option<Ordering> {
    match (a, b) {
        (Sql::Num(a), Sql::Num(b)) => a.partial_cmp(b),
        (Sql::Text(a), Sql::Text(b)) => Some(a.cmp(b)),
        (Sql::Bool(a), Sql::Bool(b)) => Some(a.cmp(b)),
        (Sql::Time(a), Sql::Time(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

/// A condition with its columns resolved to positions and its values to the columns' types.
enum Bound {
    And(Box<Bound>, Box<Bound>),
    Or(Box<Bound>, Box<Bound>),
    Not(Box<Bound>),
    Cmp(usize, Op, Sql),
    IsNull(usize, bool),
    In(usize, Vec<Sql>, bool),
}

struct Table {
    name: String,
    columns: Columns,
}

impl Table {
    fn column(&self, name: &str) -> Result<(usize, Type), String> {
        self.columns
            .iter()
            .position(|(c, _)| *c == name)
            .and_then(|i| self.columns.get(i).map(|(_, t)| (i, *t)))
            .ok_or_else(|| format!("Field '{name}' for record '{}' was not found.", self.name))
    }

    fn bind(&self, expr: &Expr) -> Result<Bound, String> {
        Ok(match expr {
            Expr::And(a, b) => Bound::And(Box::new(self.bind(a)?), Box::new(self.bind(b)?)),
            Expr::Or(a, b) => Bound::Or(Box::new(self.bind(a)?), Box::new(self.bind(b)?)),
            Expr::Not(a) => Bound::Not(Box::new(self.bind(a)?)),
            Expr::IsNull(c, negated) => Bound::IsNull(self.column(c)?.0, *negated),
            Expr::Cmp(c, op, value) => {
                let (i, ty) = self.column(c)?;
                Bound::Cmp(i, *op, coerce(c, ty, value)?)
            }
            Expr::In(c, values, negated) => {
                let (i, ty) = self.column(c)?;
                let values = values
                    .iter()
                    .map(|v| coerce(c, ty, v))
                    .collect::<Result<_, _>>()?;
                Bound::In(i, values, *negated)
            }
        })
    }
}

/// A literal as a value of the column's type (Oracle's implicit conversions that make sense
/// here: `'5'` for a number, `'T'`/`'F'` for a boolean, `'MM/DD/YYYY'` for a date).
fn coerce(column: &str, ty: Type, value: &Literal) -> Result<Sql, String> {
    let mismatch = || format!("The value {value:?} cannot be compared with the field '{column}'.");
    match (ty, value) {
        (Type::Int | Type::Num, Literal::Number(n)) => Ok(Sql::Num(*n)),
        (Type::Int | Type::Num, Literal::Text(t)) => {
            t.trim().parse().map(Sql::Num).map_err(|_| mismatch())
        }
        (Type::Text, Literal::Text(t)) => Ok(Sql::Text(t.clone())),
        (Type::Bool, Literal::Text(t)) if t == "T" || t == "F" => Ok(Sql::Bool(t == "T")),
        (Type::Time | Type::Date, Literal::Time(t)) => Ok(Sql::Time(*t)),
        (Type::Time | Type::Date, Literal::Text(t)) => NaiveDate::parse_from_str(t, "%m/%d/%Y")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(Sql::Time)
            .ok_or_else(mismatch),
        _ => Err(mismatch()),
    }
}

fn eval(cond: &Bound, row: &Row) -> Option<bool> {
    let cell = |i: &usize| row.get(*i).and_then(Option::as_ref);
    match cond {
        Bound::And(a, b) => match (eval(a, row), eval(b, row)) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        },
        Bound::Or(a, b) => match (eval(a, row), eval(b, row)) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
        Bound::Not(a) => eval(a, row).map(|b| !b),
        Bound::IsNull(i, negated) => Some(cell(i).is_none() != *negated),
        Bound::Cmp(i, op, value) => {
            let ordering = order(cell(i)?, value)?;
            Some(match op {
                Op::Eq => ordering == Ordering::Equal,
                Op::Ne => ordering != Ordering::Equal,
                Op::Lt => ordering == Ordering::Less,
                Op::Le => ordering != Ordering::Greater,
                Op::Gt => ordering == Ordering::Greater,
                Op::Ge => ordering != Ordering::Less,
            })
        }
        Bound::In(i, values, negated) => {
            let value = cell(i)?;
            let found = values
                .iter()
                .any(|v| order(value, v) == Some(Ordering::Equal));
            Some(found != *negated)
        }
    }
}

/// A cell as SuiteQL returns it.
fn shown(value: &Sql, ty: Type) -> String {
    match value {
        Sql::Num(n) if ty == Type::Int || n.fract() == 0.0 => format!("{n:.0}"),
        Sql::Num(n) => n.to_string(),
        Sql::Text(t) => t.clone(),
        Sql::Bool(b) => if *b { "T" } else { "F" }.to_owned(),
        Sql::Time(t) => t.format("%m/%d/%Y").to_string(),
    }
}

/// One output column: its name, source column and `TO_CHAR` format.
struct Output {
    name: String,
    column: usize,
    ty: Type,
    format: Option<String>,
}

fn outputs(table: &Table, items: &[Item]) -> Result<Vec<Output>, String> {
    let mut out = Vec::new();
    for item in items {
        match item {
            Item::Star => {
                out.extend(
                    table
                        .columns
                        .iter()
                        .enumerate()
                        .map(|(i, (name, ty))| Output {
                            name: (*name).to_owned(),
                            column: i,
                            ty: *ty,
                            format: None,
                        }),
                )
            }
            Item::Column { column, alias } => {
                let (i, ty) = table.column(column)?;
                let name = alias.clone().unwrap_or_else(|| column.clone());
                out.push(Output {
                    name,
                    column: i,
                    ty,
                    format: None,
                });
            }
            Item::ToChar {
                column,
                format,
                alias,
            } => {
                let (i, ty) = table.column(column)?;
                if !matches!(ty, Type::Time | Type::Date) {
                    return Err(format!(
                        "TO_CHAR with a date format needs a date, not '{column}'."
                    ));
                }
                let name = alias
                    .clone()
                    .unwrap_or_else(|| format!("to_char({column})"));
                let (chrono, _) = oracle_format(format)?;
                out.push(Output {
                    name,
                    column: i,
                    ty,
                    format: Some(chrono),
                });
            }
        }
    }
    Ok(out)
}

/// The rows a query selects, in order, as JSON objects (with NetSuite's empty `links`).
pub(crate) fn run(
    store: &Store,
    config: &NetSuiteAccountConfig,
    select: &Select,
) -> Result<Vec<Value>, String> {
    let columns = columns(&select.table)
        .ok_or_else(|| format!("Record '{}' was not found.", select.table))?;
    let table = Table {
        name: select.table.clone(),
        columns,
    };
    let filter = select.filter.as_ref().map(|f| table.bind(f)).transpose()?;
    let outputs = outputs(&table, &select.items)?;
    let mut keys = Vec::new();
    for (key, desc) in &select.order {
        let index = match table.column(key) {
            Ok((i, _)) => i,
            Err(error) => outputs
                .iter()
                .find(|o| o.name == *key)
                .map(|o| o.column)
                .ok_or(error)?,
        };
        keys.push((index, *desc));
    }
    let mut rows: Vec<Row> = rows(store, config, &select.table, columns)
        .into_iter()
        .filter(|row| filter.as_ref().is_none_or(|f| eval(f, row) == Some(true)))
        .collect();
    rows.sort_by(|a, b| {
        keys.iter()
            .map(|(i, desc)| {
                // Oracle: NULLs last ascending, first descending.
                let ordering = compare(a.get(*i), b.get(*i));
                if *desc { ordering.reverse() } else { ordering }
            })
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    });
    Ok(rows
        .iter()
        .map(|row| {
            let mut object = Map::new();
            object.insert("links".into(), Value::Array(Vec::new()));
            for output in &outputs {
                let Some(Some(value)) = row.get(output.column) else {
                    continue;
                };
                let text = match (&output.format, value) {
                    (Some(format), Sql::Time(t)) => t.format(format).to_string(),
                    _ => shown(value, output.ty),
                };
                object.insert(output.name.clone(), Value::String(text));
            }
            Value::Object(object)
        })
        .collect())
}
