//! A strict recursive-descent parser for the SuiteQL subset a connector needs:
//!
//! ```text
//! query   := SELECT item {, item} FROM table [WHERE expr] [ORDER BY key {, key}]
//! item    := * | column [[AS] alias] | TO_CHAR(column, 'format') [[AS] alias]
//! key     := column-or-alias [ASC | DESC]
//! expr    := conj {OR conj};  conj := neg {AND neg};  neg := [NOT] atom
//! atom    := ( expr ) | column op value | column IS [NOT] NULL
//!          | column [NOT] IN ( value {, value} )
//! value   := 'text' | number | TO_TIMESTAMP('text', 'format') | TO_DATE('text', 'format')
//! op      := = | <> | != | < | <= | > | >=
//! ```
//!
//! Keywords and identifiers are case-insensitive (identifiers are read in lower case);
//! formats take `YYYY`, `MM`, `DD`, `HH24`, `MI`, `SS` and the separators `-/: .T`. Anything
//! else (joins, functions, `GROUP BY`, a statement other than `SELECT`) is refused.

use chrono::{NaiveDate, NaiveDateTime};

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Select {
    pub items: Vec<Item>,
    pub table: String,
    pub filter: Option<Expr>,
    pub order: Vec<(String, bool)>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Item {
    Star,
    Column {
        column: String,
        alias: Option<String>,
    },
    ToChar {
        column: String,
        format: String,
        alias: Option<String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Literal {
    Text(String),
    Number(f64),
    Time(NaiveDateTime),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Cmp(String, Op, Literal),
    IsNull(String, bool),
    In(String, Vec<Literal>, bool),
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Word(String),
    Text(String),
    Number(String),
    Sym(&'static str),
}

const SYMBOLS: [&str; 11] = ["<>", "!=", "<=", ">=", "=", "<", ">", "(", ")", ",", "*"];

fn lex(query: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut rest = query;
    while let Some(c) = rest.chars().next() {
        if c.is_whitespace() {
            rest = &rest[c.len_utf8()..];
        } else if c == '\'' {
            let (text, after) = quoted(&rest[1..])?;
            tokens.push(Token::Text(text));
            rest = after;
        } else if c.is_ascii_digit() {
            let end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            tokens.push(Token::Number(rest[..end].to_owned()));
            rest = &rest[end..];
        } else if c.is_ascii_alphabetic() || c == '_' {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            tokens.push(Token::Word(rest[..end].to_ascii_lowercase()));
            rest = &rest[end..];
        } else if let Some(sym) = SYMBOLS.iter().find(|s| rest.starts_with(**s)) {
            tokens.push(Token::Sym(sym));
            rest = &rest[sym.len()..];
        } else {
            return Err(format!("Unexpected character '{c}'."));
        }
    }
    Ok(tokens)
}

/// A string literal's text (`''` is a quote) and what follows its closing quote.
fn quoted(text: &str) -> Result<(String, &str), String> {
    let mut out = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        if c == '\'' {
            if text[i + 1..].starts_with('\'') {
                out.push('\'');
                chars.next();
            } else {
                return Ok((out, &text[i + 1..]));
            }
        } else {
            out.push(c);
        }
    }
    Err("Unterminated string literal.".into())
}

const RESERVED: [&str; 19] = [
    "select", "from", "where", "and", "or", "not", "is", "null", "as", "order", "by", "asc",
    "desc", "in", "group", "having", "join", "union", "on",
];

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

/// Parses one `SELECT`; the error is the reason, for NetSuite's "Search error occurred".
pub(crate) fn parse(query: &str) -> Result<Select, String> {
    let tokens = lex(query)?;
    if let Some(Token::Word(first)) = tokens.first()
        && first != "select"
    {
        return Err(format!(
            "Only SELECT statements are allowed: SuiteQL is read-only ('{}' refused).",
            first.to_ascii_uppercase()
        ));
    }
    let mut parser = Parser { tokens, at: 0 };
    let select = parser.select()?;
    match parser.peek() {
        None => Ok(select),
        Some(token) => Err(format!("Unexpected {} after the query.", describe(token))),
    }
}

fn describe(token: &Token) -> String {
    match token {
        Token::Word(w) => format!("'{w}'"),
        Token::Text(t) => format!("string '{t}'"),
        Token::Number(n) => format!("number {n}"),
        Token::Sym(s) => format!("'{s}'"),
    }
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token
    }

    fn is_word(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w == word)
    }

    fn eat_word(&mut self, word: &str) -> bool {
        let found = self.is_word(word);
        if found {
            self.at += 1;
        }
        found
    }

    fn eat_sym(&mut self, sym: &str) -> bool {
        let found = matches!(self.peek(), Some(Token::Sym(s)) if *s == sym);
        if found {
            self.at += 1;
        }
        found
    }

    fn expect_word(&mut self, word: &str) -> Result<(), String> {
        if self.eat_word(word) {
            Ok(())
        } else {
            Err(self.unexpected(&word.to_ascii_uppercase()))
        }
    }

    fn expect_sym(&mut self, sym: &str) -> Result<(), String> {
        if self.eat_sym(sym) {
            Ok(())
        } else {
            Err(self.unexpected(&format!("'{sym}'")))
        }
    }

    fn unexpected(&self, wanted: &str) -> String {
        match self.peek() {
            Some(token) => format!("Expected {wanted}, found {}.", describe(token)),
            None => format!("Expected {wanted} at the end of the query."),
        }
    }

    fn identifier(&mut self) -> Result<String, String> {
        match self.peek() {
            Some(Token::Word(w)) if !RESERVED.contains(&w.as_str()) && !w.starts_with("to_") => {
                let w = w.clone();
                self.at += 1;
                Ok(w)
            }
            _ => Err(self.unexpected("a field name")),
        }
    }

    fn text(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Token::Text(t)) => Ok(t),
            _ => {
                self.at -= 1;
                Err(self.unexpected("a string"))
            }
        }
    }

    fn select(&mut self) -> Result<Select, String> {
        self.expect_word("select")?;
        let mut items = vec![self.item()?];
        while self.eat_sym(",") {
            items.push(self.item()?);
        }
        self.expect_word("from")?;
        let table = self.identifier()?;
        let filter = if self.eat_word("where") {
            Some(self.expr()?)
        } else {
            None
        };
        let mut order = Vec::new();
        if self.eat_word("order") {
            self.expect_word("by")?;
            loop {
                let key = self.identifier()?;
                let desc = if self.eat_word("desc") {
                    true
                } else {
                    self.eat_word("asc");
                    false
                };
                order.push((key, desc));
                if !self.eat_sym(",") {
                    break;
                }
            }
        }
        Ok(Select {
            items,
            table,
            filter,
            order,
        })
    }

    fn alias(&mut self) -> Result<Option<String>, String> {
        if self.eat_word("as") {
            return self.identifier().map(Some);
        }
        match self.peek() {
            Some(Token::Word(w)) if !RESERVED.contains(&w.as_str()) => self.identifier().map(Some),
            _ => Ok(None),
        }
    }

    fn item(&mut self) -> Result<Item, String> {
        if self.eat_sym("*") {
            return Ok(Item::Star);
        }
        if self.eat_word("to_char") {
            self.expect_sym("(")?;
            let column = self.identifier()?;
            self.expect_sym(",")?;
            let format = self.text()?;
            oracle_format(&format)?;
            self.expect_sym(")")?;
            let alias = self.alias()?;
            return Ok(Item::ToChar {
                column,
                format,
                alias,
            });
        }
        let column = self.identifier()?;
        let alias = self.alias()?;
        Ok(Item::Column { column, alias })
    }

    fn expr(&mut self) -> Result<Expr, String> {
        let mut left = self.conj()?;
        while self.eat_word("or") {
            left = Expr::Or(Box::new(left), Box::new(self.conj()?));
        }
        Ok(left)
    }

    fn conj(&mut self) -> Result<Expr, String> {
        let mut left = self.neg()?;
        while self.eat_word("and") {
            left = Expr::And(Box::new(left), Box::new(self.neg()?));
        }
        Ok(left)
    }

    fn neg(&mut self) -> Result<Expr, String> {
        if self.eat_word("not") {
            return Ok(Expr::Not(Box::new(self.atom()?)));
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Expr, String> {
        if self.eat_sym("(") {
            let inner = self.expr()?;
            self.expect_sym(")")?;
            return Ok(inner);
        }
        let column = self.identifier()?;
        if self.eat_word("is") {
            let negated = self.eat_word("not");
            self.expect_word("null")?;
            return Ok(Expr::IsNull(column, negated));
        }
        let negated = self.eat_word("not");
        if self.eat_word("in") {
            self.expect_sym("(")?;
            let mut values = vec![self.value()?];
            while self.eat_sym(",") {
                values.push(self.value()?);
            }
            self.expect_sym(")")?;
            return Ok(Expr::In(column, values, negated));
        }
        if negated {
            return Err(self.unexpected("IN"));
        }
        let op = match self.next() {
            Some(Token::Sym("=")) => Op::Eq,
            Some(Token::Sym("<>" | "!=")) => Op::Ne,
            Some(Token::Sym("<")) => Op::Lt,
            Some(Token::Sym("<=")) => Op::Le,
            Some(Token::Sym(">")) => Op::Gt,
            Some(Token::Sym(">=")) => Op::Ge,
            _ => {
                self.at -= 1;
                return Err(self.unexpected("a comparison operator"));
            }
        };
        Ok(Expr::Cmp(column, op, self.value()?))
    }

    fn value(&mut self) -> Result<Literal, String> {
        match self.next() {
            Some(Token::Text(t)) => Ok(Literal::Text(t)),
            Some(Token::Number(n)) => n
                .parse()
                .map(Literal::Number)
                .map_err(|_| format!("{n} is not a number.")),
            Some(Token::Word(w)) if w == "to_timestamp" || w == "to_date" => {
                self.expect_sym("(")?;
                let text = self.text()?;
                self.expect_sym(",")?;
                let format = self.text()?;
                self.expect_sym(")")?;
                parse_time(&text, &format).map(Literal::Time)
            }
            _ => {
                self.at -= 1;
                Err(self.unexpected("a value"))
            }
        }
    }
}

/// An Oracle date format as a chrono one, and whether it has a time of day.
pub(crate) fn oracle_format(format: &str) -> Result<(String, bool), String> {
    let mut out = String::new();
    let mut has_time = false;
    let mut rest = format;
    while !rest.is_empty() {
        let upper = rest.to_ascii_uppercase();
        let (chrono, len) = [
            ("YYYY", "%Y"),
            ("HH24", "%H"),
            ("MM", "%m"),
            ("DD", "%d"),
            ("MI", "%M"),
            ("SS", "%S"),
        ]
        .iter()
        .find(|(token, _)| upper.starts_with(token))
        .map(|(token, chrono)| (*chrono, token.len()))
        .or_else(|| {
            let c = rest.chars().next()?;
            "-/: .T".contains(c).then_some(("", c.len_utf8()))
        })
        .ok_or_else(|| format!("Unsupported date format '{format}'."))?;
        if chrono.is_empty() {
            out.push_str(&rest[..len]);
        } else {
            has_time |= matches!(chrono, "%H" | "%M" | "%S");
            out.push_str(chrono);
        }
        rest = &rest[len..];
    }
    Ok((out, has_time))
}

fn parse_time(text: &str, format: &str) -> Result<NaiveDateTime, String> {
    let (chrono, has_time) = oracle_format(format)?;
    let parsed = if has_time {
        NaiveDateTime::parse_from_str(text, &chrono).ok()
    } else {
        NaiveDate::parse_from_str(text, &chrono)
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
    };
    parsed.ok_or_else(|| format!("'{text}' does not match the format '{format}'."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keyset_query_parses() {
        let q = "SELECT id, itemid, TO_CHAR(lastmodifieddate, 'YYYY-MM-DD HH24:MI:SS') AS modified \
                 FROM item WHERE itemtype = 'InvtPart' AND (lastmodifieddate > \
                 TO_TIMESTAMP('2026-11-24 10:30:15', 'YYYY-MM-DD HH24:MI:SS') OR (lastmodifieddate = \
                 TO_TIMESTAMP('2026-11-24 10:30:15', 'YYYY-MM-DD HH24:MI:SS') AND id > 5)) \
                 ORDER BY lastmodifieddate, id DESC";
        let select = parse(q).unwrap();
        assert_eq!(select.table, "item");
        assert_eq!(select.items.len(), 3);
        assert_eq!(
            select.order,
            vec![("lastmodifieddate".into(), false), ("id".into(), true)]
        );
        let Some(Expr::And(left, right)) = select.filter else {
            panic!("AND expected");
        };
        assert_eq!(
            *left,
            Expr::Cmp("itemtype".into(), Op::Eq, Literal::Text("InvtPart".into()))
        );
        assert!(matches!(*right, Expr::Or(_, _)));
    }

    #[test]
    fn keywords_are_case_insensitive_and_quotes_escape() {
        let select =
            parse("select ID from Customer where companyname = 'O''Brien' and email is not null")
                .unwrap();
        assert_eq!(select.table, "customer");
        assert!(matches!(select.filter, Some(Expr::And(_, _))));
    }

    #[test]
    fn what_is_outside_the_subset_is_refused() {
        for q in [
            "UPDATE item SET itemid = 'x'",
            "DELETE FROM item",
            "SELECT id FROM item WHERE",
            "SELECT id FROM item;",
            "SELECT id FROM item i JOIN customer c ON i.id = c.id",
            "SELECT COUNT(*) FROM item",
            "SELECT id FROM item GROUP BY id",
            "SELECT id FROM item WHERE id = 'unterminated",
            "SELECT id FROM item WHERE id NOT = 5",
            "SELECT TO_CHAR(lastmodifieddate, 'Month') FROM item",
            "SELECT id FROM item WHERE lastmodifieddate > TO_TIMESTAMP('24/11/2026', 'YYYY-MM-DD')",
            "SELECT id, FROM item",
        ] {
            assert!(parse(q).is_err(), "{q}");
        }
    }
}
