//! The OData v3 query options the Service Layer answers and the connector uses: `$filter`
//! (comparisons `eq ne gt ge lt le` of a property with a literal, `and`, `or`, `not`,
//! parentheses, `startswith`), `$orderby`, `$select`, `$top`, `$skip`.
//!
//! Date properties (`UpdateDate`, `DocDate`, …) hold `YYYY-MM-DD`; a literal is compared on
//! its date part, so `UpdateDate ge '2026-11-24T10:00:00'` means "on or after that day", as
//! the Service Layer's date-only `UpdateDate` does.

use super::model::decimal;
use rust_decimal::Decimal;
use serde_json::{Map, Value};
use std::cmp::Ordering;
use std::str::FromStr;

const DATE_FIELDS: &[&str] = &[
    "UpdateDate",
    "CreateDate",
    "CreationDate",
    "DocDate",
    "DocDueDate",
    "TaxDate",
];

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Text(String),
    Number(Decimal),
    Open,
    Close,
    Comma,
}

fn tokens(input: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = input.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' => i += 1,
            '(' => {
                out.push(Token::Open);
                i += 1;
            }
            ')' => {
                out.push(Token::Close);
                i += 1;
            }
            ',' => {
                out.push(Token::Comma);
                i += 1;
            }
            '\'' => {
                let mut text = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("unterminated string literal".into()),
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            text.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(c) => {
                            text.push(*c);
                            i += 1;
                        }
                    }
                }
                out.push(Token::Text(text));
            }
            c if c.is_ascii_digit() || c == '-' => {
                let start = i;
                i += 1;
                while chars
                    .get(i)
                    .is_some_and(|c| c.is_ascii_digit() || *c == '.')
                {
                    i += 1;
                }
                let raw: String = chars[start..i].iter().collect();
                out.push(Token::Number(
                    Decimal::from_str(&raw).map_err(|_| format!("invalid number {raw}"))?,
                ));
            }
            c if c.is_alphanumeric() || c == '_' => {
                let start = i;
                while chars
                    .get(i)
                    .is_some_and(|c| c.is_alphanumeric() || *c == '_' || *c == '/')
                {
                    i += 1;
                }
                out.push(Token::Ident(chars[start..i].iter().collect()));
            }
            other => return Err(format!("unexpected character {other:?}")),
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Literal {
    Text(String),
    Number(Decimal),
    Null,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Filter {
    Compare {
        field: String,
        op: String,
        value: Literal,
    },
    StartsWith {
        field: String,
        prefix: String,
    },
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Ident(w)) if w.eq_ignore_ascii_case(word))
    }

    fn or(&mut self) -> Result<Filter, String> {
        let mut left = self.and()?;
        while self.keyword("or") {
            self.at += 1;
            left = Filter::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, String> {
        let mut left = self.unary()?;
        while self.keyword("and") {
            self.at += 1;
            left = Filter::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Filter, String> {
        if self.keyword("not") {
            self.at += 1;
            return Ok(Filter::Not(Box::new(self.unary()?)));
        }
        match self.next() {
            Some(Token::Open) => {
                let inner = self.or()?;
                match self.next() {
                    Some(Token::Close) => Ok(inner),
                    _ => Err("missing ')'".into()),
                }
            }
            Some(Token::Ident(f)) if f.eq_ignore_ascii_case("startswith") => {
                let (Some(Token::Open), Some(Token::Ident(field)), Some(Token::Comma)) =
                    (self.next(), self.next(), self.next())
                else {
                    return Err("startswith(Property,'prefix') expected".into());
                };
                let (Some(Token::Text(prefix)), Some(Token::Close)) = (self.next(), self.next())
                else {
                    return Err("startswith(Property,'prefix') expected".into());
                };
                Ok(Filter::StartsWith { field, prefix })
            }
            Some(Token::Ident(field)) => {
                let op = match self.next() {
                    Some(Token::Ident(op))
                        if ["eq", "ne", "gt", "ge", "lt", "le"]
                            .contains(&op.to_ascii_lowercase().as_str()) =>
                    {
                        op.to_ascii_lowercase()
                    }
                    other => return Err(format!("operator expected after {field}, not {other:?}")),
                };
                let value = match self.next() {
                    Some(Token::Text(t)) => Literal::Text(t),
                    Some(Token::Number(n)) => Literal::Number(n),
                    Some(Token::Ident(w)) if w == "null" => Literal::Null,
                    other => return Err(format!("literal expected after {op}, not {other:?}")),
                };
                Ok(Filter::Compare { field, op, value })
            }
            other => Err(format!("unexpected {other:?}")),
        }
    }
}

pub(crate) fn parse_filter(input: &str) -> Result<Filter, String> {
    let mut parser = Parser {
        tokens: tokens(input)?,
        at: 0,
    };
    let filter = parser.or()?;
    if parser.at < parser.tokens.len() {
        return Err(format!("unexpected {:?}", parser.tokens[parser.at]));
    }
    Ok(filter)
}

impl Filter {
    /// Property names the filter reads, so unknown ones can be refused.
    pub(crate) fn fields(&self) -> Vec<&str> {
        match self {
            Filter::Compare { field, .. } | Filter::StartsWith { field, .. } => vec![field],
            Filter::And(a, b) | Filter::Or(a, b) => {
                let mut f = a.fields();
                f.extend(b.fields());
                f
            }
            Filter::Not(a) => a.fields(),
        }
    }

    pub(crate) fn matches(&self, record: &Map<String, Value>) -> bool {
        match self {
            Filter::And(a, b) => a.matches(record) && b.matches(record),
            Filter::Or(a, b) => a.matches(record) || b.matches(record),
            Filter::Not(a) => !a.matches(record),
            Filter::StartsWith { field, prefix } => record
                .get(field)
                .and_then(Value::as_str)
                .is_some_and(|v| v.starts_with(prefix.as_str())),
            Filter::Compare { field, op, value } => {
                let actual = record.get(field).unwrap_or(&Value::Null);
                let ordering = match (actual, value) {
                    (Value::Null, Literal::Null) => Some(Ordering::Equal),
                    (Value::Null, _) | (_, Literal::Null) => None,
                    (Value::String(a), Literal::Text(b)) => {
                        if DATE_FIELDS.contains(&field.as_str()) {
                            let day = |s: &str| s.get(..10).unwrap_or(s).to_owned();
                            Some(day(a).cmp(&day(b)))
                        } else {
                            Some(a.as_str().cmp(b.as_str()))
                        }
                    }
                    (actual, Literal::Number(b)) => decimal(actual).map(|a| a.cmp(b)),
                    _ => None,
                };
                match (op.as_str(), ordering) {
                    ("ne", None) => true,
                    (_, None) => false,
                    ("eq", Some(o)) => o == Ordering::Equal,
                    ("ne", Some(o)) => o != Ordering::Equal,
                    ("gt", Some(o)) => o == Ordering::Greater,
                    ("ge", Some(o)) => o != Ordering::Less,
                    ("lt", Some(o)) => o == Ordering::Less,
                    ("le", Some(o)) => o != Ordering::Greater,
                    _ => false,
                }
            }
        }
    }
}

/// `$orderby`: `Field [asc|desc], …`.
pub(crate) fn parse_order(input: &str) -> Result<Vec<(String, bool)>, String> {
    input
        .split(',')
        .map(|part| {
            let mut words = part.split_whitespace();
            let field = words.next().ok_or("empty $orderby term")?.to_owned();
            let descending = match words.next().map(str::to_ascii_lowercase).as_deref() {
                None | Some("asc") => false,
                Some("desc") => true,
                Some(other) => return Err(format!("invalid direction {other}")),
            };
            Ok((field, descending))
        })
        .collect()
}

pub(crate) fn compare_values(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (Some(Value::String(a)), Some(Value::String(b))) => a.cmp(b),
        (Some(a @ Value::Number(_)), Some(b @ Value::Number(_))) => decimal(a).cmp(&decimal(b)),
        (None | Some(Value::Null), None | Some(Value::Null)) => Ordering::Equal,
        (None | Some(Value::Null), _) => Ordering::Less,
        (_, None | Some(Value::Null)) => Ordering::Greater,
        (a, b) => a.map(Value::to_string).cmp(&b.map(Value::to_string)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn filters_read_odata_comparisons_and_dates_compare_by_day() {
        let r =
            record(json!({"UpdateDate": "2026-11-24", "NumAtCard": "O'Brien-1", "DocEntry": 12}));
        let f = parse_filter("UpdateDate ge '2026-11-24T10:00:00' and DocEntry gt 11").unwrap();
        assert!(f.matches(&r));
        assert!(
            parse_filter("NumAtCard eq 'O''Brien-1'")
                .unwrap()
                .matches(&r)
        );
        assert!(
            !parse_filter("UpdateDate gt '2026-11-24'")
                .unwrap()
                .matches(&r)
        );
        assert!(
            parse_filter("(DocEntry eq 1 or DocEntry eq 12) and not (NumAtCard eq 'x')")
                .unwrap()
                .matches(&r)
        );
        assert!(
            parse_filter("startswith(NumAtCard,'O''B')")
                .unwrap()
                .matches(&r)
        );
        assert!(parse_filter("UpdateDate ge").is_err());
        assert!(parse_filter("NumAtCard eq 'open").is_err());
    }
}
