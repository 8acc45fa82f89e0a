//! The subset of QuickBooks' query language a connector uses:
//! `select * from <Entity> [where <cond> [and <cond>]…] [orderby <field> [asc|desc]]
//! [startposition n] [maxresults n]`, with `=`, `<`, `>`, `<=`, `>=`, `in (…)` and `like`
//! (`%` wildcards) on top-level or dotted fields (`MetaData.LastUpdatedTime`). Values are
//! single-quoted with `\'` escapes. Keywords are case-insensitive; so are string comparisons.

use super::model::{Kind, QbError};
use chrono::DateTime;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Query {
    pub kind: Kind,
    conditions: Vec<Condition>,
    order_by: Option<(String, bool)>,
    pub start: usize,
    pub max: usize,
}

#[derive(Debug, Clone, PartialEq)]
struct Condition {
    field: String,
    op: Op,
    values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Lt,
    Gt,
    Le,
    Ge,
    In,
    Like,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Text(String),
    Symbol(String),
}

fn parse_error(detail: impl Into<String>) -> QbError {
    QbError::new("4000", "Error parsing query", detail)
}

fn tokens(input: &str) -> Result<Vec<Token>, QbError> {
    let mut out = Vec::new();
    let mut chars = input.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '\'' {
            chars.next();
            let mut text = String::new();
            loop {
                match chars.next() {
                    Some('\\') => text.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => text.push(c),
                    None => {
                        return Err(parse_error(
                            "QueryParserError: Encountered an unterminated string",
                        ));
                    }
                }
            }
            out.push(Token::Text(text));
        } else if "<>=".contains(c) {
            let mut op = String::from(c);
            chars.next();
            if let Some(&'=') = chars.peek() {
                op.push('=');
                chars.next();
            }
            out.push(Token::Symbol(op));
        } else if "(),*".contains(c) {
            chars.next();
            out.push(Token::Symbol(c.to_string()));
        } else {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || "'<>=(),".contains(c) {
                    break;
                }
                word.push(c);
                chars.next();
            }
            out.push(Token::Word(word));
        }
    }
    Ok(out)
}

fn keyword(token: Option<&Token>, word: &str) -> bool {
    matches!(token, Some(Token::Word(w)) if w.eq_ignore_ascii_case(word))
}

fn value_of(token: Option<Token>) -> Result<String, QbError> {
    match token {
        Some(Token::Text(t)) | Some(Token::Word(t)) => Ok(t),
        other => Err(parse_error(format!(
            "QueryParserError: Encountered {other:?} where a value was expected"
        ))),
    }
}

pub(crate) fn parse(input: &str) -> Result<Query, QbError> {
    let mut t = tokens(input)?.into_iter().peekable();
    if !keyword(t.next().as_ref(), "select")
        || t.next() != Some(Token::Symbol("*".into()))
        || !keyword(t.next().as_ref(), "from")
    {
        return Err(parse_error(
            "QueryParserError: a query reads `select * from <Entity> …`",
        ));
    }
    let entity = value_of(t.next())?;
    let kind = Kind::parse(&entity).ok_or_else(|| {
        QbError::new(
            "4001",
            "Invalid query",
            format!("QueryValidationError: Entity {entity} is not supported here"),
        )
    })?;
    let mut query = Query {
        kind,
        conditions: Vec::new(),
        order_by: None,
        start: 1,
        max: 100,
    };
    while let Some(token) = t.next() {
        let Token::Word(word) = token else {
            return Err(parse_error(format!(
                "QueryParserError: Encountered {token:?}"
            )));
        };
        match word.to_ascii_lowercase().as_str() {
            "where" | "and" => {
                let field = value_of(t.next())?;
                let op = match t.next() {
                    Some(Token::Symbol(s)) => match s.as_str() {
                        "=" => Op::Eq,
                        "<" => Op::Lt,
                        ">" => Op::Gt,
                        "<=" => Op::Le,
                        ">=" => Op::Ge,
                        _ => return Err(parse_error(format!("QueryParserError: operator {s}"))),
                    },
                    Some(Token::Word(w)) if w.eq_ignore_ascii_case("in") => Op::In,
                    Some(Token::Word(w)) if w.eq_ignore_ascii_case("like") => Op::Like,
                    other => {
                        return Err(parse_error(format!(
                            "QueryParserError: Encountered {other:?} where an operator was expected"
                        )));
                    }
                };
                let values = if op == Op::In {
                    if t.next() != Some(Token::Symbol("(".into())) {
                        return Err(parse_error("QueryParserError: IN needs a list"));
                    }
                    let mut values = Vec::new();
                    loop {
                        values.push(value_of(t.next())?);
                        match t.next() {
                            Some(Token::Symbol(s)) if s == "," => {}
                            Some(Token::Symbol(s)) if s == ")" => break,
                            other => {
                                return Err(parse_error(format!(
                                    "QueryParserError: Encountered {other:?} in a list"
                                )));
                            }
                        }
                    }
                    values
                } else {
                    vec![value_of(t.next())?]
                };
                query.conditions.push(Condition { field, op, values });
            }
            "orderby" => {
                let field = value_of(t.next())?;
                let desc = if keyword(t.peek(), "desc") {
                    t.next();
                    true
                } else {
                    if keyword(t.peek(), "asc") {
                        t.next();
                    }
                    false
                };
                query.order_by = Some((field, desc));
            }
            "startposition" => {
                query.start = value_of(t.next())?
                    .parse()
                    .map_err(|_| parse_error("STARTPOSITION needs a number"))?;
                query.start = query.start.max(1);
            }
            "maxresults" => {
                let max: usize = value_of(t.next())?
                    .parse()
                    .map_err(|_| parse_error("MAXRESULTS needs a number"))?;
                if max > 1000 {
                    return Err(QbError::new(
                        "4001",
                        "Invalid query",
                        "QueryValidationError: value 1000 is the maximum for MAXRESULTS",
                    ));
                }
                query.max = max;
            }
            other => {
                return Err(parse_error(format!(
                    "QueryParserError: Encountered \"{other}\""
                )));
            }
        }
    }
    Ok(query)
}

/// A field's value, dotted paths followed, `{ "Address": … }` and `{ "value": … }` read through.
fn field<'a>(record: &'a Value, path: &str) -> Option<&'a Value> {
    let mut current = record;
    for part in path.split('.') {
        let object = current.as_object()?;
        current = object
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(part))
            .map(|(_, v)| v)?;
    }
    match current {
        Value::Object(o) => o.get("Address").or_else(|| o.get("value")),
        other => Some(other),
    }
}

fn as_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn compare(left: &str, right: &str) -> std::cmp::Ordering {
    if let (Ok(a), Ok(b)) = (
        DateTime::parse_from_rfc3339(left),
        DateTime::parse_from_rfc3339(right),
    ) {
        return a.cmp(&b);
    }
    if let (Ok(a), Ok(b)) = (left.parse::<f64>(), right.parse::<f64>()) {
        return a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal);
    }
    left.to_lowercase().cmp(&right.to_lowercase())
}

fn like(text: &str, pattern: &str) -> bool {
    let text = text.to_lowercase();
    let parts: Vec<String> = pattern
        .to_lowercase()
        .split('%')
        .map(str::to_owned)
        .collect();
    let mut rest = text.as_str();
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            if !rest.starts_with(part.as_str()) {
                return false;
            }
            rest = &rest[part.len()..];
        } else if i == parts.len() - 1 {
            return rest.ends_with(part.as_str());
        } else if let Some(at) = rest.find(part.as_str()) {
            rest = &rest[at + part.len()..];
        } else {
            return false;
        }
    }
    parts.len() > 1 || rest.is_empty()
}

impl Query {
    pub(crate) fn matches(&self, record: &Value) -> bool {
        self.conditions.iter().all(|c| {
            let Some(value) = field(record, &c.field).map(as_text) else {
                return false;
            };
            let first = c.values.first().map(String::as_str).unwrap_or("");
            use std::cmp::Ordering::*;
            match c.op {
                Op::Eq => compare(&value, first) == Equal,
                Op::Lt => compare(&value, first) == Less,
                Op::Gt => compare(&value, first) == Greater,
                Op::Le => compare(&value, first) != Greater,
                Op::Ge => compare(&value, first) != Less,
                Op::In => c.values.iter().any(|v| compare(&value, v) == Equal),
                Op::Like => like(&value, first),
            }
        })
    }

    /// Orders (by `Id` unless told otherwise) and pages the matching records.
    pub(crate) fn run(&self, mut records: Vec<Value>) -> Vec<Value> {
        records.retain(|r| self.matches(r));
        let (by, desc) = self
            .order_by
            .clone()
            .unwrap_or_else(|| ("Id".into(), false));
        records.sort_by(|a, b| {
            let a = field(a, &by).map(as_text).unwrap_or_default();
            let b = field(b, &by).map(as_text).unwrap_or_default();
            let o = compare(&a, &b);
            if desc { o.reverse() } else { o }
        });
        records
            .into_iter()
            .skip(self.start - 1)
            .take(self.max)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn where_in_and_like_and_paging() {
        let q = parse("SELECT * FROM Customer WHERE DisplayName IN ('O\\'Brien', 'Acme') AND Active = true MAXRESULTS 10").unwrap();
        assert_eq!((q.kind, q.max), (Kind::Customer, 10));
        assert!(q.matches(&json!({"DisplayName": "o'brien", "Active": true})));
        assert!(!q.matches(&json!({"DisplayName": "Other", "Active": true})));
        let q = parse(
            "select * from Item where Name like '%pallet%' orderby Name desc startposition 2",
        )
        .unwrap();
        let out = q.run(vec![
            json!({"Name": "Oak pallet"}),
            json!({"Name": "Big pallet"}),
            json!({"Name": "Jar"}),
        ]);
        assert_eq!(out, vec![json!({"Name": "Big pallet"})]);
        let q = parse("select * from Customer where PrimaryEmailAddr = 'a@b.c'").unwrap();
        assert!(q.matches(&json!({"PrimaryEmailAddr": {"Address": "A@b.c"}})));
        assert!(parse("select * from Vendor").is_err());
        assert!(parse("select Name from Item").is_err());
    }
}
