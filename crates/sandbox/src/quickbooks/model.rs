//! The entities a sync uses (and the chart of accounts items book on), their validation
//! and their storage. Field names are the
//! XSD element names; the rules are QuickBooks': unique `DisplayName` (customers) and `Name`
//! (items), `SyncToken` optimistic concurrency, references that must exist, line amounts that
//! must equal `Qty × UnitPrice`, and no property the schema does not know.

use super::qb_time;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Item,
    Customer,
    Invoice,
    Estimate,
    Account,
}

impl Kind {
    pub(crate) const ALL: [Kind; 5] = [
        Kind::Item,
        Kind::Customer,
        Kind::Invoice,
        Kind::Estimate,
        Kind::Account,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Item => "Item",
            Kind::Customer => "Customer",
            Kind::Invoice => "Invoice",
            Kind::Estimate => "Estimate",
            Kind::Account => "Account",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Kind::Item => 0,
            Kind::Customer => 1,
            Kind::Invoice => 2,
            Kind::Estimate => 3,
            Kind::Account => 4,
        }
    }

    /// `item`, `Item`, `ITEM`…
    pub(crate) fn parse(name: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(name))
    }

    /// Whether the schema knows this property (writable, or read-only and accepted back on
    /// an update).
    fn allows(self, property: &str) -> bool {
        const COMMON: &[&str] = &["Id", "SyncToken", "sparse", "domain", "MetaData", "status"];
        let own: &[&str] = match self {
            Kind::Item => &[
                "Name",
                "Sku",
                "Description",
                "Active",
                "SubItem",
                "ParentRef",
                "Level",
                "FullyQualifiedName",
                "Taxable",
                "SalesTaxIncluded",
                "UnitPrice",
                "Type",
                "IncomeAccountRef",
                "PurchaseDesc",
                "PurchaseCost",
                "ExpenseAccountRef",
                "AssetAccountRef",
                "TrackQtyOnHand",
                "QtyOnHand",
                "InvStartDate",
                "SalesTaxCodeRef",
                "PurchaseTaxCodeRef",
                "ReorderPoint",
            ],
            Kind::Customer => &[
                "DisplayName",
                "Title",
                "GivenName",
                "MiddleName",
                "FamilyName",
                "Suffix",
                "CompanyName",
                "PrintOnCheckName",
                "Active",
                "PrimaryPhone",
                "AlternatePhone",
                "Mobile",
                "Fax",
                "PrimaryEmailAddr",
                "WebAddr",
                "BillAddr",
                "ShipAddr",
                "Notes",
                "Taxable",
                "Balance",
                "BalanceWithJobs",
                "CurrencyRef",
                "PreferredDeliveryMethod",
                "ResaleNum",
                "FullyQualifiedName",
                "Job",
                "BillWithParent",
                "ParentRef",
                "SalesTermRef",
                "PaymentMethodRef",
                "BusinessNumber",
                "PrimaryTaxIdentifier",
            ],
            Kind::Invoice | Kind::Estimate => &[
                "DocNumber",
                "TxnDate",
                "DueDate",
                "ExpirationDate",
                "TxnStatus",
                "PrivateNote",
                "CustomerMemo",
                "CustomerRef",
                "Line",
                "BillAddr",
                "ShipAddr",
                "BillEmail",
                "CurrencyRef",
                "ExchangeRate",
                "TotalAmt",
                "Balance",
                "ApplyTaxAfterDiscount",
                "PrintStatus",
                "EmailStatus",
                "SalesTermRef",
                "GlobalTaxCalculation",
                "TxnTaxDetail",
                "AcceptedBy",
                "AcceptedDate",
                "ClassRef",
                "DepartmentRef",
                "ShipDate",
                "TrackingNum",
                "LinkedTxn",
            ],
            Kind::Account => &[
                "Name",
                "SubAccount",
                "ParentRef",
                "FullyQualifiedName",
                "Description",
                "Active",
                "Classification",
                "AccountType",
                "AccountSubType",
                "AcctNum",
                "CurrentBalance",
                "CurrentBalanceWithSubAccounts",
                "CurrencyRef",
                "TaxCodeRef",
            ],
        };
        COMMON.contains(&property) || own.contains(&property)
    }
}

/// A refusal in Intuit's `Error` shape; the caller wraps it in a `Fault`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QbError {
    pub code: &'static str,
    pub message: &'static str,
    pub detail: String,
    pub element: String,
}

impl QbError {
    pub(crate) fn new(
        code: &'static str,
        message: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            code,
            message,
            detail: detail.into(),
            element: String::new(),
        }
    }

    pub(crate) fn json(&self) -> Value {
        json!({"Message": self.message, "Detail": self.detail, "code": self.code, "element": self.element})
    }

    pub(crate) fn missing(field: &str) -> Self {
        Self {
            element: field.to_owned(),
            ..Self::new(
                "2020",
                "Required param missing, need to supply the required value for the API",
                format!("Required parameter {field} is missing in the request"),
            )
        }
    }

    fn invalid(field: &str, why: impl Into<String>) -> Self {
        Self {
            element: field.to_owned(),
            ..Self::new(
                "2050",
                "String length is either shorter or longer than supported by specification",
                why,
            )
        }
    }

    pub(crate) fn bad_reference(what: &str, id: &str) -> Self {
        Self::new(
            "2500",
            "Invalid Reference Id",
            format!(
                "Invalid Reference Id : {what} assigned to this transaction has been deleted or does not exist: {id}"
            ),
        )
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub body: Map<String, Value>,
    pub updated: DateTime<Utc>,
}

impl Stored {
    pub(crate) fn active(&self) -> bool {
        self.body.get("Active").and_then(Value::as_bool) != Some(false)
    }

    fn text(&self, field: &str) -> Option<&str> {
        self.body.get(field).and_then(Value::as_str)
    }
}

#[derive(Debug, Default)]
pub(crate) struct RealmData {
    /// Intuit's ids are per-company integers.
    next_id: u64,
    records: [BTreeMap<u64, Stored>; 5],
    pub creates: [u64; 5],
    pub updates: [u64; 5],
    pub stale_updates: u64,
    /// Deleted transactions, for CDC (`status: Deleted`).
    pub deleted: HashMap<(usize, u64), DateTime<Utc>>,
    last_stamp: Option<DateTime<Utc>>,
}

pub(crate) fn text<'a>(body: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
    body.get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

pub(crate) fn reference<'a>(body: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
    body.get(field)
        .and_then(|r| r.get("value"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn decimal(value: Option<&Value>) -> Option<Decimal> {
    match value? {
        Value::Number(n) => n.to_string().parse().ok(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn number(d: Decimal) -> Value {
    let normal = d.normalize();
    serde_json::from_str(&normal.to_string()).unwrap_or(Value::Null)
}

impl RealmData {
    /// Strictly increasing write times, so `changedSince` never misses a write.
    fn stamp(&mut self, now: DateTime<Utc>) -> DateTime<Utc> {
        let at = match self.last_stamp {
            Some(last) if now <= last => last + chrono::TimeDelta::milliseconds(1),
            _ => now,
        };
        self.last_stamp = Some(at);
        at
    }

    pub(crate) fn all(&self, kind: Kind) -> impl Iterator<Item = &Stored> {
        self.records[kind.index()].values()
    }

    pub(crate) fn get(&self, kind: Kind, id: &str) -> Option<&Stored> {
        self.records[kind.index()].get(&id.parse().ok()?)
    }

    pub(crate) fn live_count(&self, kind: Kind) -> u64 {
        self.all(kind).filter(|r| r.active()).count() as u64
    }

    pub(crate) fn duplicate_keys(&self, kind: Kind) -> Vec<String> {
        let fields: &[&str] = match kind {
            Kind::Item => &["Name", "Sku"],
            Kind::Customer => &["DisplayName"],
            Kind::Invoice | Kind::Estimate => &["DocNumber"],
            Kind::Account => &["Name"],
        };
        let mut seen: BTreeMap<String, u32> = BTreeMap::new();
        for record in self.all(kind).filter(|r| r.active()) {
            for field in fields {
                if let Some(v) = record.text(field) {
                    *seen
                        .entry(format!("{field}:{}", v.to_lowercase()))
                        .or_default() += 1;
                }
            }
        }
        seen.into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(k, _)| k)
            .collect()
    }

    /// Records changed at or after `since`, oldest change first.
    pub(crate) fn changed_since(
        &self,
        kind: Kind,
        since: DateTime<Utc>,
    ) -> Vec<(DateTime<Utc>, Value)> {
        let mut out: Vec<(DateTime<Utc>, Value)> = self
            .all(kind)
            .filter(|r| r.updated >= since)
            .map(|r| (r.updated, Value::Object(r.body.clone())))
            .collect();
        for ((index, id), at) in &self.deleted {
            if *index == kind.index() && *at >= since {
                out.push((
                    *at,
                    json!({"Id": id.to_string(), "status": "Deleted", "domain": "QBO",
                           "MetaData": {"LastUpdatedTime": qb_time(*at)}}),
                ));
            }
        }
        out.sort_by_key(|(at, _)| *at);
        out
    }

    fn set_meta(
        &mut self,
        body: &mut Map<String, Value>,
        created: Option<&Value>,
        now: DateTime<Utc>,
    ) -> DateTime<Utc> {
        let at = self.stamp(now);
        let create_time = created
            .cloned()
            .unwrap_or_else(|| Value::String(qb_time(at)));
        body.insert(
            "MetaData".into(),
            json!({"CreateTime": create_time, "LastUpdatedTime": qb_time(at)}),
        );
        body.insert("domain".into(), json!("QBO"));
        body.insert("sparse".into(), json!(false));
        at
    }

    /// Seeds a record without validation (import tests).
    pub(crate) fn seed(
        &mut self,
        kind: Kind,
        mut body: Map<String, Value>,
        now: DateTime<Utc>,
    ) -> Result<String, String> {
        let id = match body.get("Id") {
            None | Some(Value::Null) => {
                self.next_id += 1;
                self.next_id
            }
            Some(Value::String(s)) => s.parse().map_err(|_| format!("Id {s:?} is not digits"))?,
            Some(other) => return Err(format!("Id must be a string of digits, not {other}")),
        };
        self.next_id = self.next_id.max(id);
        let previous = self.records[kind.index()].get(&id);
        let token = previous
            .and_then(|p| p.text("SyncToken"))
            .and_then(|t| t.parse::<u64>().ok())
            .map_or(0, |t| t + 1);
        let created = previous
            .and_then(|p| p.body.get("MetaData"))
            .and_then(|m| m.get("CreateTime"))
            .cloned();
        body.insert("Id".into(), json!(id.to_string()));
        body.insert("SyncToken".into(), json!(token.to_string()));
        body.entry("Active").or_insert(json!(true));
        let updated = self.set_meta(&mut body, created.as_ref(), now);
        self.records[kind.index()].insert(id, Stored { body, updated });
        Ok(id.to_string())
    }

    /// A create (`POST /{entity}` without `Id`). Returns the stored entity.
    pub(crate) fn create(
        &mut self,
        kind: Kind,
        body: &Map<String, Value>,
        now: DateTime<Utc>,
    ) -> Result<Value, QbError> {
        check_properties(kind, body)?;
        if body.contains_key("Id") {
            return Err(QbError::new(
                "2010",
                "Request has invalid or unsupported property",
                "Id is read-only on a create",
            ));
        }
        let mut body = body.clone();
        body.remove("sparse");
        body.remove("SyncToken");
        body.remove("MetaData");
        self.normalise(kind, &mut body, None)?;
        self.next_id += 1;
        let id = self.next_id;
        body.insert("Id".into(), json!(id.to_string()));
        body.insert("SyncToken".into(), json!("0"));
        let updated = self.set_meta(&mut body, None, now);
        self.records[kind.index()].insert(
            id,
            Stored {
                body: body.clone(),
                updated,
            },
        );
        self.creates[kind.index()] += 1;
        Ok(Value::Object(body))
    }

    /// An update (`POST /{entity}` with `Id` and `SyncToken`); `sparse: true` keeps what the
    /// request leaves out, a full update clears it.
    pub(crate) fn update(
        &mut self,
        kind: Kind,
        body: &Map<String, Value>,
        now: DateTime<Utc>,
    ) -> Result<Value, QbError> {
        check_properties(kind, body)?;
        let id_text = text(body, "Id").ok_or_else(|| QbError::missing("Id"))?;
        let id: u64 = id_text
            .parse()
            .map_err(|_| object_not_found(kind, id_text))?;
        let token = text(body, "SyncToken").ok_or_else(|| QbError::missing("SyncToken"))?;
        let existing = self.records[kind.index()]
            .get(&id)
            .ok_or_else(|| object_not_found(kind, id_text))?
            .clone();
        if existing.text("SyncToken") != Some(token) {
            self.stale_updates += 1;
            return Err(QbError::new(
                "5010",
                "Stale Object Error",
                format!(
                    "Stale Object Error : You and root were working on this at the same time. root finished before you did, so your work was not saved. Id={id} SyncToken={token}"
                ),
            ));
        }
        let sparse = body.get("sparse").and_then(Value::as_bool) == Some(true);
        let mut next = if sparse {
            existing.body.clone()
        } else {
            Map::new()
        };
        for (k, v) in body {
            if !matches!(
                k.as_str(),
                "sparse" | "MetaData" | "domain" | "SyncToken" | "Id"
            ) {
                next.insert(k.clone(), v.clone());
            }
        }
        if !sparse && kind == Kind::Item {
            // Type and the account references survive a full update as QuickBooks keeps them.
            for keep in [
                "Type",
                "IncomeAccountRef",
                "ExpenseAccountRef",
                "AssetAccountRef",
                "TrackQtyOnHand",
                "QtyOnHand",
            ] {
                if !next.contains_key(keep)
                    && let Some(v) = existing.body.get(keep)
                {
                    next.insert(keep.into(), v.clone());
                }
            }
        }
        self.normalise(kind, &mut next, Some(id))?;
        let token: u64 = token.parse().unwrap_or(0);
        next.insert("Id".into(), json!(id.to_string()));
        next.insert("SyncToken".into(), json!((token + 1).to_string()));
        let created = existing
            .body
            .get("MetaData")
            .and_then(|m| m.get("CreateTime"))
            .cloned();
        let updated = self.set_meta(&mut next, created.as_ref(), now);
        self.records[kind.index()].insert(
            id,
            Stored {
                body: next.clone(),
                updated,
            },
        );
        self.updates[kind.index()] += 1;
        Ok(Value::Object(next))
    }

    /// Checks and completes an entity about to be stored (`id` = its own id on an update).
    fn normalise(
        &self,
        kind: Kind,
        body: &mut Map<String, Value>,
        id: Option<u64>,
    ) -> Result<(), QbError> {
        let others = |field: &str, value: &str| {
            self.records[kind.index()].iter().any(|(other, r)| {
                Some(*other) != id
                    && r.active()
                    && r.text(field)
                        .is_some_and(|v| v.eq_ignore_ascii_case(value.trim()))
            })
        };
        let duplicate = |value: &str| QbError {
            element: String::new(),
            ..QbError::new(
                "6240",
                "Duplicate Name Exists Error",
                format!(
                    "The name supplied already exists. : Another customer, vendor, employee or item is already using this name ({value}). Please use a different name."
                ),
            )
        };
        body.entry("Active").or_insert(json!(true));
        let active = body.get("Active").and_then(Value::as_bool) != Some(false);
        match kind {
            Kind::Customer => {
                let display = match text(body, "DisplayName") {
                    Some(d) => d.to_owned(),
                    None => {
                        let parts: Vec<&str> =
                            ["Title", "GivenName", "MiddleName", "FamilyName", "Suffix"]
                                .iter()
                                .filter_map(|f| text(body, f))
                                .collect();
                        if parts.is_empty() {
                            return Err(QbError::missing("DisplayName"));
                        }
                        parts.join(" ")
                    }
                };
                if display.chars().count() > 500 {
                    return Err(QbError::invalid(
                        "DisplayName",
                        "DisplayName is longer than 500 characters",
                    ));
                }
                if display.contains(':') {
                    return Err(QbError::invalid(
                        "DisplayName",
                        "DisplayName cannot contain a colon (:)",
                    ));
                }
                if active && others("DisplayName", &display) {
                    return Err(duplicate(&display));
                }
                if let Some(email) = body.get("PrimaryEmailAddr") {
                    let address = email.get("Address").and_then(Value::as_str).unwrap_or("");
                    if !address.contains('@') {
                        return Err(QbError::new(
                            "2050",
                            "Invalid Email Address",
                            format!(
                                "Email Address does not conform to the syntax rules of RFC 822: {address}"
                            ),
                        ));
                    }
                }
                body.insert("FullyQualifiedName".into(), json!(display.clone()));
                body.insert("DisplayName".into(), json!(display));
                body.entry("Balance").or_insert(json!(0));
            }
            Kind::Item => {
                let name = text(body, "Name")
                    .ok_or_else(|| QbError::missing("Name"))?
                    .to_owned();
                if name.chars().count() > 100 {
                    return Err(QbError::invalid(
                        "Name",
                        "Name is longer than 100 characters",
                    ));
                }
                if name.contains(':') {
                    return Err(QbError::invalid("Name", "Name cannot contain a colon (:)"));
                }
                if active && others("Name", &name) {
                    return Err(duplicate(&name));
                }
                let item_type = text(body, "Type").unwrap_or("NonInventory").to_owned();
                match item_type.as_str() {
                    "Inventory" => {
                        for field in ["IncomeAccountRef", "ExpenseAccountRef", "AssetAccountRef"] {
                            if reference(body, field).is_none() {
                                return Err(QbError::missing(field));
                            }
                        }
                        if body.get("QtyOnHand").is_none() {
                            return Err(QbError::missing("QtyOnHand"));
                        }
                        if text(body, "InvStartDate").is_none() {
                            return Err(QbError::missing("InvStartDate"));
                        }
                        body.insert("TrackQtyOnHand".into(), json!(true));
                    }
                    "NonInventory" | "Service" => {
                        if reference(body, "IncomeAccountRef").is_none() {
                            return Err(QbError::missing("IncomeAccountRef"));
                        }
                        body.insert("TrackQtyOnHand".into(), json!(false));
                    }
                    "Category" | "Group" => {}
                    other => {
                        return Err(QbError::new(
                            "2010",
                            "Request has invalid or unsupported property",
                            format!("Type {other} is not an ItemTypeEnum value"),
                        ));
                    }
                }
                if let Some(sku) = text(body, "Sku")
                    && sku.chars().count() > 100
                {
                    return Err(QbError::invalid("Sku", "Sku is longer than 100 characters"));
                }
                // The accounts an item books on must exist in the chart of accounts.
                for field in ["IncomeAccountRef", "ExpenseAccountRef", "AssetAccountRef"] {
                    if let Some(account) = reference(body, field)
                        && !self.get(Kind::Account, account).is_some_and(Stored::active)
                    {
                        return Err(QbError::bad_reference("Account", account));
                    }
                }
                body.insert("Type".into(), json!(item_type));
                body.insert("FullyQualifiedName".into(), json!(name));
            }
            Kind::Account => {
                let name = text(body, "Name")
                    .ok_or_else(|| QbError::missing("Name"))?
                    .to_owned();
                if name.contains(':') {
                    return Err(QbError::invalid("Name", "Name cannot contain a colon (:)"));
                }
                if active && others("Name", &name) {
                    return Err(duplicate(&name));
                }
                super::company::complete_account(body, &name)?;
            }
            Kind::Invoice | Kind::Estimate => {
                let customer = reference(body, "CustomerRef")
                    .ok_or_else(|| QbError::missing("CustomerRef"))?;
                if !self
                    .get(Kind::Customer, customer)
                    .is_some_and(Stored::active)
                {
                    return Err(QbError::bad_reference("Customer", customer));
                }
                if let Some(doc) = text(body, "DocNumber")
                    && doc.chars().count() > 21
                {
                    return Err(QbError::invalid(
                        "DocNumber",
                        "DocNumber is longer than 21 characters",
                    ));
                }
                let lines = body
                    .get("Line")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                if lines.is_empty() {
                    return Err(QbError::missing("Line"));
                }
                let mut total = Decimal::ZERO;
                let mut rendered = Vec::with_capacity(lines.len());
                for (n, line) in lines.iter().enumerate() {
                    let Some(line) = line.as_object() else {
                        return Err(QbError::missing("Line"));
                    };
                    let mut line = line.clone();
                    let detail_type = line.get("DetailType").and_then(Value::as_str).unwrap_or("");
                    match detail_type {
                        "SalesItemLineDetail" => {
                            let amount = decimal(line.get("Amount"))
                                .ok_or_else(|| QbError::missing("Line.Amount"))?;
                            let mut documentation = false;
                            let detail = line
                                .get("SalesItemLineDetail")
                                .and_then(Value::as_object)
                                .cloned()
                                .unwrap_or_default();
                            match detail
                                .get("ItemRef")
                                .and_then(|r| r.get("value"))
                                .and_then(Value::as_str)
                            {
                                Some(item) => {
                                    if !self.get(Kind::Item, item).is_some_and(Stored::active) {
                                        return Err(QbError::bad_reference("Item", item));
                                    }
                                }
                                // Intuit's reference (SalesItemLineDetail.ItemRef): a line
                                // without an item is documentation; its Amount is ignored.
                                None => documentation = true,
                            }
                            if let (Some(qty), Some(price)) =
                                (decimal(detail.get("Qty")), decimal(detail.get("UnitPrice")))
                                && (qty * price).round_dp(2) != amount.round_dp(2)
                            {
                                return Err(QbError::new(
                                    "6070",
                                    "Amount is not equal to UnitPrice * Qty",
                                    format!(
                                        "Line {} : Amount {amount} is not equal to UnitPrice * Qty ({price} * {qty})",
                                        n + 1
                                    ),
                                ));
                            }
                            if !documentation {
                                total += amount;
                            }
                            line.insert("SalesItemLineDetail".into(), Value::Object(detail));
                        }
                        "DescriptionOnly" | "SubTotalLineDetail" | "DiscountLineDetail" => {}
                        _ => return Err(QbError::missing("Line.DetailType")),
                    }
                    line.insert("Id".into(), json!((n + 1).to_string()));
                    line.insert("LineNum".into(), json!(n + 1));
                    rendered.push(Value::Object(line));
                }
                body.insert("Line".into(), Value::Array(rendered));
                body.insert("TotalAmt".into(), number(total));
                body.entry("TxnDate")
                    .or_insert(json!(Utc::now().format("%Y-%m-%d").to_string()));
                if kind == Kind::Invoice {
                    body.insert("Balance".into(), number(total));
                } else {
                    body.entry("TxnStatus").or_insert(json!("Pending"));
                }
                body.remove("Active");
            }
        }
        Ok(())
    }
}

fn object_not_found(kind: Kind, id: &str) -> QbError {
    QbError::new(
        "610",
        "Object Not Found",
        format!(
            "Object Not Found : Something you're trying to use has been made inactive. Check the fields with accounts, customers, items, vendors or employees. ({} {id})",
            kind.name()
        ),
    )
}

/// QuickBooks refuses properties its schema does not know.
fn check_properties(kind: Kind, body: &Map<String, Value>) -> Result<(), QbError> {
    match body.keys().find(|k| !kind.allows(k)) {
        Some(unknown) => Err(QbError {
            element: unknown.clone(),
            ..QbError::new(
                "2010",
                "Request has invalid or unsupported property",
                format!(
                    "Property Name:Unrecognized field \"{unknown}\" specified is unsupported or invalid"
                ),
            )
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn names_are_unique_and_sync_tokens_guard_updates() {
        let mut data = RealmData::default();
        let now = Utc::now();
        let c = data
            .create(Kind::Customer, &obj(json!({"DisplayName": "Acme"})), now)
            .unwrap();
        assert_eq!(c["SyncToken"], "0");
        let dup = data
            .create(Kind::Customer, &obj(json!({"DisplayName": "acme"})), now)
            .unwrap_err();
        assert_eq!(dup.code, "6240");
        let id = c["Id"].as_str().unwrap();
        let u = data
            .update(
                Kind::Customer,
                &obj(
                    json!({"Id": id, "SyncToken": "0", "sparse": true, "CompanyName": "Acme Ltd"}),
                ),
                now,
            )
            .unwrap();
        assert_eq!(
            (u["SyncToken"].as_str(), u["DisplayName"].as_str()),
            (Some("1"), Some("Acme"))
        );
        let stale = data
            .update(
                Kind::Customer,
                &obj(json!({"Id": id, "SyncToken": "0", "sparse": true})),
                now,
            )
            .unwrap_err();
        assert_eq!((stale.code, stale.message), ("5010", "Stale Object Error"));
        let unknown = data
            .create(
                Kind::Customer,
                &obj(json!({"DisplayName": "B", "Email": "x"})),
                now,
            )
            .unwrap_err();
        assert_eq!(unknown.code, "2010");
    }

    #[test]
    fn documents_need_live_references_and_consistent_amounts() {
        let mut data = super::super::company::new_company(Utc::now());
        let now = Utc::now();
        let c = data
            .create(Kind::Customer, &obj(json!({"DisplayName": "Acme"})), now)
            .unwrap();
        let i = data
            .create(
                Kind::Item,
                &obj(json!({"Name": "Widget", "IncomeAccountRef": {"value": "79"}})),
                now,
            )
            .unwrap();
        let line = |amount: f64| json!([{"DetailType": "SalesItemLineDetail", "Amount": amount, "SalesItemLineDetail": {"ItemRef": {"value": i["Id"]}, "Qty": 2, "UnitPrice": 2.5}}]);
        let ok = data
            .create(
                Kind::Estimate,
                &obj(json!({"CustomerRef": {"value": c["Id"]}, "Line": line(5.0)})),
                now,
            )
            .unwrap();
        assert_eq!(ok["TotalAmt"], json!(5));
        let bad = data
            .create(
                Kind::Estimate,
                &obj(json!({"CustomerRef": {"value": c["Id"]}, "Line": line(6.0)})),
                now,
            )
            .unwrap_err();
        assert_eq!(bad.code, "6070");
        let dangling = data
            .create(
                Kind::Invoice,
                &obj(json!({"CustomerRef": {"value": "999"}, "Line": line(5.0)})),
                now,
            )
            .unwrap_err();
        assert_eq!(dangling.code, "2500");
        let no_account = data
            .create(
                Kind::Item,
                &obj(json!({"Name": "Gadget", "IncomeAccountRef": {"value": "999"}})),
                now,
            )
            .unwrap_err();
        assert_eq!(no_account.code, "2500", "{no_account:?}");
    }

    #[test]
    fn a_sales_line_without_an_item_is_documentation_and_books_nothing() {
        let mut data = super::super::company::new_company(Utc::now());
        let now = Utc::now();
        let c = data
            .create(Kind::Customer, &obj(json!({"DisplayName": "Acme"})), now)
            .unwrap();
        let line = |detail: Value| json!({"DetailType": "SalesItemLineDetail", "Amount": 25, "SalesItemLineDetail": detail});
        let bare = data
            .create(
                Kind::Invoice,
                &obj(json!({"CustomerRef": {"value": c["Id"]}, "Line": [line(json!({"Qty": 1, "UnitPrice": 25}))]})),
                now,
            )
            .unwrap();
        assert_eq!(
            (&bare["TotalAmt"], &bare["Balance"]),
            (&json!(0), &json!(0))
        );
        // The company's own "Services" item books the amount.
        let services = data
            .all(Kind::Item)
            .find(|i| i.text("Name") == Some("Services"))
            .map(|i| i.body["Id"].clone())
            .unwrap();
        let booked = data
            .create(
                Kind::Invoice,
                &obj(json!({"CustomerRef": {"value": c["Id"]}, "Line": [line(json!({"ItemRef": {"value": services}, "Qty": 1, "UnitPrice": 25}))]})),
                now,
            )
            .unwrap();
        assert_eq!(booked["TotalAmt"], json!(25));
    }
}
