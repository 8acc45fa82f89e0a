//! What a `GET` on a collection returns: Xero's query parameters (`where`, `order`, `page`,
//! `pageSize`, `IDs`, `InvoiceNumbers`, `ContactIDs`, `Statuses`, `includeArchived`,
//! `searchTerm`, the quote filters) and the `If-Modified-Since` header.
//!
//! `where` understands the part of Xero's filter language integrations use: comparisons
//! (`==`, `!=`, `<`, `<=`, `>`, `>=`) of a field path with a string, number, boolean, `null`,
//! `Guid("…")` or `DateTime(y, m, d[, h, m, s])`, `Contains`/`StartsWith`/`EndsWith`, `AND`,
//! `OR` and parentheses. Anything else is a `QueryParseException`, as Xero answers for a
//! filter it cannot read. Default order is `UpdatedDateUTC` then id, which keeps pages stable.

use super::dates;
use super::model::decimal;
use super::store::{Kind, Stored, TenantData};
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::{Map, Value};
use std::cmp::Ordering;

const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 1000;

/// The `pagination` object of a paged answer.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Pagination {
    pub page: usize,
    pub page_size: usize,
    pub page_count: usize,
    pub item_count: usize,
}

/// A parsed list request.
#[derive(Debug, Default)]
pub(crate) struct ListQuery {
    filter: Option<Expr>,
    order: Vec<(Vec<String>, bool)>,
    page: Option<usize>,
    page_size: usize,
    ids: Option<Vec<String>>,
    numbers: Option<Vec<String>>,
    contact_ids: Option<Vec<String>>,
    statuses: Option<Vec<String>>,
    include_archived: bool,
    search: Option<String>,
    date_from: Option<NaiveDate>,
    date_to: Option<NaiveDate>,
    expiry_from: Option<NaiveDate>,
    expiry_to: Option<NaiveDate>,
    pub(crate) four_decimals: bool,
}

/// Reads the query string; an error is a `QueryParseException` message.
pub(crate) fn parse(kind: Kind, params: &[(String, String)]) -> Result<ListQuery, String> {
    let mut query = ListQuery {
        page_size: DEFAULT_PAGE_SIZE,
        ..ListQuery::default()
    };
    let list = |value: &str| -> Vec<String> {
        value
            .split(',')
            .map(|s| s.trim().trim_matches('"').trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    };
    for (name, value) in params {
        match name.to_ascii_lowercase().as_str() {
            "where" => query.filter = Some(Parser::new(value)?.parse()?),
            "order" => query.order = parse_order(value)?,
            "page" => {
                let page: i64 = value
                    .trim()
                    .parse()
                    .map_err(|_| format!("page '{value}' is not a number"))?;
                query.page = Some(usize::try_from(page.max(1)).unwrap_or(1));
            }
            "pagesize" => {
                let size: i64 = value
                    .trim()
                    .parse()
                    .map_err(|_| format!("pageSize '{value}' is not a number"))?;
                query.page_size = usize::try_from(size.clamp(1, MAX_PAGE_SIZE as i64))
                    .unwrap_or(DEFAULT_PAGE_SIZE);
            }
            "ids" => query.ids = Some(list(value).iter().map(|s| s.to_ascii_lowercase()).collect()),
            "invoicenumbers" if kind == Kind::Invoices => query.numbers = Some(list(value)),
            "quotenumber" if kind == Kind::Quotes => query.numbers = Some(list(value)),
            "contactids" | "contactid" => {
                query.contact_ids =
                    Some(list(value).iter().map(|s| s.to_ascii_lowercase()).collect());
            }
            "statuses" | "status" => {
                query.statuses = Some(list(value).iter().map(|s| s.to_ascii_uppercase()).collect());
            }
            "includearchived" => query.include_archived = boolean(name, value)?,
            "searchterm" => query.search = Some(value.trim().to_lowercase()),
            "unitdp" => query.four_decimals = value.trim() == "4",
            "datefrom" => query.date_from = Some(day(name, value)?),
            "dateto" => query.date_to = Some(day(name, value)?),
            "expirydatefrom" => query.expiry_from = Some(day(name, value)?),
            "expirydateto" => query.expiry_to = Some(day(name, value)?),
            // Accepted and without effect here (the answer is the same shape either way),
            // like any parameter Xero does not know.
            _ => {}
        }
    }
    Ok(query)
}

fn boolean(name: &str, value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{name} '{value}' is not true or false")),
    }
}

fn day(name: &str, value: &str) -> Result<NaiveDate, String> {
    dates::parse_day(value).ok_or_else(|| format!("{name} '{value}' is not a date"))
}

fn parse_order(value: &str) -> Result<Vec<(Vec<String>, bool)>, String> {
    let mut order = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let mut words = part.split_whitespace();
        let field = words.next().unwrap_or_default();
        let descending = match words.next().map(str::to_ascii_uppercase).as_deref() {
            None | Some("ASC") => false,
            Some("DESC") => true,
            Some(other) => return Err(format!("cannot order by '{field} {other}'")),
        };
        if words.next().is_some() || !valid_path(field) {
            return Err(format!("cannot order by '{part}'"));
        }
        order.push((field.split('.').map(str::to_owned).collect(), descending));
    }
    Ok(order)
}

fn valid_path(path: &str) -> bool {
    !path.is_empty()
        && path.split('.').all(|segment| {
            segment
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && segment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

impl ListQuery {
    /// The records to return, in order, and the `pagination` object when a page was asked.
    pub(crate) fn select<'a>(
        &self,
        kind: Kind,
        data: &'a TenantData,
        since: Option<DateTime<Utc>>,
    ) -> (Vec<&'a Stored>, Option<Pagination>) {
        let mut selected: Vec<&Stored> = data
            .records(kind)
            .ordered()
            .filter(|r| since.is_none_or(|since| r.updated >= since))
            .filter(|r| self.keeps(kind, &r.body))
            .collect();
        if !self.order.is_empty() {
            // Stable: ties keep the default (UpdatedDateUTC, id) order.
            selected.sort_by(|a, b| {
                for (path, descending) in &self.order {
                    let ordering = compare_values(lookup(&a.body, path), lookup(&b.body, path));
                    let ordering = if *descending {
                        ordering.reverse()
                    } else {
                        ordering
                    };
                    if ordering != Ordering::Equal {
                        return ordering;
                    }
                }
                Ordering::Equal
            });
        }
        match self.page.filter(|_| kind.paged()) {
            None => (selected, None),
            Some(page) => {
                let item_count = selected.len();
                let pagination = Pagination {
                    page,
                    page_size: self.page_size,
                    page_count: item_count.div_ceil(self.page_size),
                    item_count,
                };
                let start = (page - 1).saturating_mul(self.page_size);
                let items = selected
                    .into_iter()
                    .skip(start)
                    .take(self.page_size)
                    .collect();
                (items, Some(pagination))
            }
        }
    }

    fn keeps(&self, kind: Kind, body: &Map<String, Value>) -> bool {
        let text = |field: &str| body.get(field).and_then(Value::as_str).unwrap_or("");
        if kind == Kind::Contacts && !self.include_archived && text("ContactStatus") == "ARCHIVED" {
            return false;
        }
        if let Some(ids) = &self.ids
            && !ids.contains(&text(kind.id_field()).to_ascii_lowercase())
        {
            return false;
        }
        if let Some(numbers) = &self.numbers {
            let field = if kind == Kind::Quotes {
                "QuoteNumber"
            } else {
                "InvoiceNumber"
            };
            if !numbers.iter().any(|n| n == text(field)) {
                return false;
            }
        }
        if let Some(contacts) = &self.contact_ids {
            let contact = body
                .get("Contact")
                .and_then(|c| c.get("ContactID"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_ascii_lowercase();
            if !contacts.contains(&contact) {
                return false;
            }
        }
        if let Some(statuses) = &self.statuses
            && kind != Kind::Contacts
            && !statuses.iter().any(|s| s == text("Status"))
        {
            return false;
        }
        if let Some(term) = &self.search {
            let fields: &[&str] = match kind {
                Kind::Contacts => &[
                    "Name",
                    "FirstName",
                    "LastName",
                    "ContactNumber",
                    "CompanyNumber",
                    "EmailAddress",
                ],
                Kind::Invoices => &["InvoiceNumber", "Reference"],
                Kind::Quotes => &["QuoteNumber", "Reference"],
                Kind::Items => &["Code", "Name", "Description"],
            };
            if !fields
                .iter()
                .any(|f| text(f).to_lowercase().contains(term.as_str()))
            {
                return false;
            }
        }
        let day = |field: &str| {
            body.get(field)
                .and_then(Value::as_str)
                .and_then(dates::parse_ms_date)
                .map(|d| d.date_naive())
        };
        let within = |value: Option<NaiveDate>, from: Option<NaiveDate>, to: Option<NaiveDate>| {
            from.is_none_or(|f| value.is_some_and(|v| v >= f))
                && to.is_none_or(|t| value.is_some_and(|v| v <= t))
        };
        if !within(day("Date"), self.date_from, self.date_to)
            || !within(day("ExpiryDate"), self.expiry_from, self.expiry_to)
        {
            return false;
        }
        self.filter.as_ref().is_none_or(|f| f.eval(body))
    }
}

fn lookup<'a>(body: &'a Map<String, Value>, path: &[String]) -> &'a Value {
    let mut current: Option<&Value> = None;
    for (index, segment) in path.iter().enumerate() {
        let map = match (index, current) {
            (0, _) => Some(body),
            (_, Some(Value::Object(map))) => Some(map),
            _ => None,
        };
        current = map.and_then(|m| {
            m.get(segment).or_else(|| {
                m.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(segment))
                    .map(|(_, v)| v)
            })
        });
    }
    current.unwrap_or(&Value::Null)
}

/// Orders two field values: dates by time, numbers by value, text without regard to case,
/// missing values first.
fn compare_values(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => decimal(x).cmp(&decimal(y)),
        (Value::String(x), Value::String(y)) => {
            match (dates::parse_ms_date(x), dates::parse_ms_date(y)) {
                (Some(x), Some(y)) => x.cmp(&y),
                _ => x.to_lowercase().cmp(&y.to_lowercase()),
            }
        }
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        _ => Ordering::Equal,
    }
}

// --- the `where` language ---

#[derive(Clone, Debug, PartialEq)]
enum Literal {
    Text(String),
    Number(Decimal),
    Bool(bool),
    Null,
    Time(DateTime<Utc>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Contains,
    StartsWith,
    EndsWith,
}

#[derive(Debug)]
enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Compare(Vec<String>, Op, Literal),
}

impl Expr {
    fn eval(&self, body: &Map<String, Value>) -> bool {
        match self {
            Expr::And(a, b) => a.eval(body) && b.eval(body),
            Expr::Or(a, b) => a.eval(body) || b.eval(body),
            Expr::Not(e) => !e.eval(body),
            Expr::Compare(path, op, literal) => compare(lookup(body, path), *op, literal),
        }
    }
}

fn compare(value: &Value, op: Op, literal: &Literal) -> bool {
    let ordering = match (value, literal) {
        (Value::Null, Literal::Null) => Some(Ordering::Equal),
        (_, Literal::Null) => return op == Op::Ne,
        (Value::String(text), Literal::Text(wanted)) => {
            let (text, wanted) = (text.to_lowercase(), wanted.to_lowercase());
            match op {
                Op::Contains => return text.contains(&wanted),
                Op::StartsWith => return text.starts_with(&wanted),
                Op::EndsWith => return text.ends_with(&wanted),
                _ => Some(text.cmp(&wanted)),
            }
        }
        (Value::String(text), Literal::Time(wanted)) => dates::parse_ms_date(text)
            .or_else(|| {
                dates::parse_day(text).map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc())
            })
            .map(|t| t.cmp(wanted)),
        (Value::Number(n), Literal::Number(wanted)) => decimal(n).map(|n| n.cmp(wanted)),
        (Value::Bool(b), Literal::Bool(wanted)) => Some(b.cmp(wanted)),
        _ => None,
    };
    let Some(ordering) = ordering else {
        return op == Op::Ne;
    };
    match op {
        Op::Eq => ordering == Ordering::Equal,
        Op::Ne => ordering != Ordering::Equal,
        Op::Lt => ordering == Ordering::Less,
        Op::Le => ordering != Ordering::Greater,
        Op::Gt => ordering == Ordering::Greater,
        Op::Ge => ordering != Ordering::Less,
        Op::Contains | Op::StartsWith | Op::EndsWith => false,
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Ident(String),
    Text(String),
    Number(Decimal),
    Op(&'static str),
    Open,
    Close,
    Comma,
    Dot,
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn new(text: &str) -> Result<Self, String> {
        Ok(Self {
            tokens: tokenize(text)?,
            at: 0,
        })
    }

    fn parse(mut self) -> Result<Expr, String> {
        let expr = self.or()?;
        match self.tokens.get(self.at) {
            None => Ok(expr),
            Some(token) => Err(format!("unexpected {token:?} in where")),
        }
    }

    fn peek_word(&self, words: &[&str]) -> bool {
        match self.tokens.get(self.at) {
            Some(Token::Ident(word)) => words.iter().any(|w| w.eq_ignore_ascii_case(word)),
            Some(Token::Op(op)) => words.contains(op),
            _ => false,
        }
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.peek_word(&["OR", "||"]) {
            self.at += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.unary()?;
        while self.peek_word(&["AND", "&&"]) {
            self.at += 1;
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.peek_word(&["NOT", "!"]) {
            self.at += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.tokens.get(self.at) == Some(&Token::Open) {
            self.at += 1;
            let inner = self.or()?;
            self.expect(&Token::Close)?;
            return Ok(inner);
        }
        self.comparison()
    }

    fn expect(&mut self, token: &Token) -> Result<(), String> {
        if self.tokens.get(self.at) == Some(token) {
            self.at += 1;
            Ok(())
        } else {
            Err(format!("expected {token:?} in where"))
        }
    }

    fn comparison(&mut self) -> Result<Expr, String> {
        let mut path = vec![self.ident()?];
        while self.tokens.get(self.at) == Some(&Token::Dot) {
            self.at += 1;
            let segment = self.ident()?;
            let method = match segment.as_str() {
                "Contains" => Some(Op::Contains),
                "StartsWith" => Some(Op::StartsWith),
                "EndsWith" => Some(Op::EndsWith),
                _ => None,
            };
            if let Some(op) = method {
                self.expect(&Token::Open)?;
                let literal = self.literal()?;
                self.expect(&Token::Close)?;
                return Ok(Expr::Compare(path, op, literal));
            }
            path.push(segment);
        }
        let op = match self.tokens.get(self.at) {
            Some(Token::Op(op)) => match *op {
                "==" | "=" => Op::Eq,
                "!=" | "<>" => Op::Ne,
                "<" => Op::Lt,
                "<=" => Op::Le,
                ">" => Op::Gt,
                ">=" => Op::Ge,
                other => return Err(format!("operator {other} is not supported")),
            },
            // A bare boolean field: `IsSold` means `IsSold == true`.
            _ => return Ok(Expr::Compare(path, Op::Eq, Literal::Bool(true))),
        };
        self.at += 1;
        let literal = self.literal()?;
        Ok(Expr::Compare(path, op, literal))
    }

    fn ident(&mut self) -> Result<String, String> {
        match self.tokens.get(self.at) {
            Some(Token::Ident(name)) => {
                self.at += 1;
                Ok(name.clone())
            }
            other => Err(format!("expected a field name in where, found {other:?}")),
        }
    }

    fn literal(&mut self) -> Result<Literal, String> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        match token {
            Some(Token::Text(text)) => Ok(Literal::Text(text)),
            Some(Token::Number(n)) => Ok(Literal::Number(n)),
            Some(Token::Op("-")) => match self.literal()? {
                Literal::Number(n) => Ok(Literal::Number(-n)),
                _ => Err("'-' must precede a number in where".into()),
            },
            Some(Token::Ident(word)) => match word.to_ascii_lowercase().as_str() {
                "true" => Ok(Literal::Bool(true)),
                "false" => Ok(Literal::Bool(false)),
                "null" => Ok(Literal::Null),
                "guid" => {
                    self.expect(&Token::Open)?;
                    let Some(Token::Text(id)) = self.tokens.get(self.at).cloned() else {
                        return Err("Guid() needs a quoted id".into());
                    };
                    self.at += 1;
                    self.expect(&Token::Close)?;
                    Ok(Literal::Text(id))
                }
                "datetime" => self.date_time(),
                _ => Err(format!("unknown value {word} in where")),
            },
            other => Err(format!("expected a value in where, found {other:?}")),
        }
    }

    fn date_time(&mut self) -> Result<Literal, String> {
        self.expect(&Token::Open)?;
        let mut parts = Vec::new();
        loop {
            match self.tokens.get(self.at) {
                Some(Token::Number(n)) => {
                    parts.push(u32::try_from(n.trunc().mantissa()).map_err(|_| "bad DateTime")?);
                    self.at += 1;
                }
                other => return Err(format!("DateTime() needs numbers, found {other:?}")),
            }
            match self.tokens.get(self.at) {
                Some(Token::Comma) => self.at += 1,
                Some(Token::Close) => {
                    self.at += 1;
                    break;
                }
                other => return Err(format!("DateTime() is not closed, found {other:?}")),
            }
        }
        let part = |i: usize| parts.get(i).copied().unwrap_or(0);
        if !(3..=6).contains(&parts.len()) {
            return Err("DateTime() takes 3 to 6 numbers".into());
        }
        NaiveDate::from_ymd_opt(i32::try_from(part(0)).unwrap_or(0), part(1), part(2))
            .and_then(|d| d.and_hms_opt(part(3), part(4), part(5)))
            .map(|t| Literal::Time(t.and_utc()))
            .ok_or_else(|| "DateTime() is not a valid date".into())
    }
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                tokens.push(Token::Open);
                i += 1;
            }
            ')' => {
                tokens.push(Token::Close);
                i += 1;
            }
            ',' => {
                tokens.push(Token::Comma);
                i += 1;
            }
            '.' if !chars.get(i + 1).is_some_and(char::is_ascii_digit) => {
                tokens.push(Token::Dot);
                i += 1;
            }
            '"' => {
                let mut text = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("unterminated string in where".into()),
                        Some('\\') => {
                            if let Some(&next) = chars.get(i + 1) {
                                text.push(next);
                            }
                            i += 2;
                        }
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some(&other) => {
                            text.push(other);
                            i += 1;
                        }
                    }
                }
                tokens.push(Token::Text(text));
            }
            c if c.is_ascii_digit() || c == '.' => {
                let start = i;
                while chars
                    .get(i)
                    .is_some_and(|c| c.is_ascii_digit() || *c == '.')
                {
                    i += 1;
                }
                let number: String = chars[start..i].iter().collect();
                let value = number
                    .parse::<Decimal>()
                    .map_err(|_| format!("{number} is not a number"))?;
                tokens.push(Token::Number(value));
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let start = i;
                while chars
                    .get(i)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
                {
                    i += 1;
                }
                tokens.push(Token::Ident(chars[start..i].iter().collect()));
            }
            _ => {
                let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
                let op = ["==", "!=", "<>", "<=", ">=", "&&", "||"]
                    .into_iter()
                    .find(|op| *op == two);
                match op {
                    Some(op) => {
                        tokens.push(Token::Op(op));
                        i += 2;
                    }
                    None => {
                        let op = ["=", "<", ">", "!", "-"]
                            .into_iter()
                            .find(|op| op.starts_with(c))
                            .ok_or_else(|| format!("unexpected '{c}' in where"))?;
                        tokens.push(Token::Op(op));
                        i += 1;
                    }
                }
            }
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("not an object"),
        }
    }

    fn matches(filter: &str, record: &Value) -> bool {
        Parser::new(filter)
            .unwrap()
            .parse()
            .unwrap()
            .eval(&body(record.clone()))
    }

    #[test]
    fn where_reads_the_forms_integrations_send() {
        let invoice = json!({
            "Type": "ACCREC", "Status": "DRAFT", "AmountDue": 115.0, "IsDiscounted": false,
            "Contact": {"ContactID": "3EC601AD-eddc-4ccb-a8ac-736e88293b1b", "Name": "Acme"},
            "Date": "/Date(1541116800000+0000)/"
        });
        assert!(matches(r#"Status=="DRAFT""#, &invoice));
        assert!(matches(r#"Type=="ACCREC" AND Status=="DRAFT""#, &invoice));
        assert!(matches(
            r#"Status == "PAID" || Status == "draft""#,
            &invoice
        ));
        assert!(matches(
            r#"Contact.ContactID==Guid("3ec601ad-eddc-4ccb-a8ac-736e88293b1b")"#,
            &invoice
        ));
        assert!(matches(r#"Contact.Name.StartsWith("ac")"#, &invoice));
        assert!(matches("AmountDue > 100 && AmountDue <= 115", &invoice));
        assert!(matches("Date >= DateTime(2018, 11, 02)", &invoice));
        assert!(!matches("Date > DateTime(2018, 11, 02)", &invoice));
        assert!(matches("IsDiscounted == false", &invoice));
        assert!(matches("!(Status == \"PAID\")", &invoice));
        assert!(matches("Reference == null", &invoice));
        assert!(!matches("Reference != null", &invoice));
    }

    #[test]
    fn where_refuses_what_it_cannot_read() {
        for filter in [
            "Status ==",
            r#"Status == "DRAFT"#,
            "Name.ToLower() == \"x\"",
            "Status ~ 1",
            "(Status == 1",
        ] {
            assert!(
                Parser::new(filter).and_then(Parser::parse).is_err(),
                "{filter}"
            );
        }
    }

    #[test]
    fn order_and_pages_are_stable() {
        let mut data = TenantData::default();
        for (id, name, secs) in [("a", "Zed", 1), ("b", "amy", 2), ("c", "Bob", 2)] {
            data.put_uncounted(
                Kind::Contacts,
                id,
                Some(Stored {
                    body: body(json!({"ContactID": id, "Name": name})),
                    updated: DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap(),
                }),
            );
        }
        let names = |params: &[(&str, &str)], since: Option<i64>| {
            let params: Vec<(String, String)> = params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            let query = parse(Kind::Contacts, &params).unwrap();
            let since = since.map(|s| DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap());
            let (records, pagination) = query.select(Kind::Contacts, &data, since);
            let names: Vec<String> = records
                .iter()
                .map(|r| r.body["Name"].as_str().unwrap().to_owned())
                .collect();
            (names, pagination)
        };
        assert_eq!(names(&[], None).0, ["Zed", "amy", "Bob"]);
        assert_eq!(
            names(&[("order", "Name ASC")], None).0,
            ["amy", "Bob", "Zed"]
        );
        assert_eq!(
            names(&[("order", "Name DESC")], None).0,
            ["Zed", "Bob", "amy"]
        );
        assert_eq!(names(&[], Some(2)).0, ["amy", "Bob"]);
        let (page, pagination) = names(&[("page", "2"), ("pageSize", "2")], None);
        assert_eq!(page, ["Bob"]);
        assert_eq!(
            pagination,
            Some(Pagination {
                page: 2,
                page_size: 2,
                page_count: 2,
                item_count: 3
            })
        );
        assert_eq!(names(&[("searchTerm", "O")], None).0, ["Bob"]);
        assert!(parse(Kind::Contacts, &[("order".into(), "Name SIDEWAYS".into())]).is_err());
    }
}
