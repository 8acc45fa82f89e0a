//! What a new QuickBooks Online company holds before anyone writes to it, and the rules of its
//! chart of accounts. Intuit's own invoice examples book lines on `ItemRef {"value": "1",
//! "name": "Services"}` and items on `IncomeAccountRef {"value": "79", "name": "Sales of
//! Product Income"}`: a new simulated realm holds that "Services" item and those income,
//! cost and asset accounts, so a client finds them as it would in a real company.

use super::model::{Kind, QbError, RealmData, text};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

/// The accounts a new company starts with: `(Id, Name, AccountType, AccountSubType)`.
const DEFAULT_ACCOUNTS: &[(&str, &str, &str, &str)] = &[
    ("1", "Services", "Income", "ServiceFeeIncome"),
    (
        "79",
        "Sales of Product Income",
        "Income",
        "SalesOfProductIncome",
    ),
    (
        "80",
        "Cost of Goods Sold",
        "Cost of Goods Sold",
        "SuppliesMaterialsCogs",
    ),
    ("81", "Inventory Asset", "Other Current Asset", "Inventory"),
];

/// `AccountTypeEnum` (Finance.xsd) and the `Classification` each type belongs to.
const ACCOUNT_TYPES: &[(&str, &str)] = &[
    ("Bank", "Asset"),
    ("Accounts Receivable", "Asset"),
    ("Other Current Asset", "Asset"),
    ("Fixed Asset", "Asset"),
    ("Other Asset", "Asset"),
    ("Accounts Payable", "Liability"),
    ("Credit Card", "Liability"),
    ("Other Current Liability", "Liability"),
    ("Long Term Liability", "Liability"),
    ("Equity", "Equity"),
    ("Income", "Revenue"),
    ("Cost of Goods Sold", "Expense"),
    ("Expense", "Expense"),
    ("Other Income", "Revenue"),
    ("Other Expense", "Expense"),
    ("Non-Posting", "Asset"),
];

/// A realm as Intuit provisions a company: its chart of accounts and the "Services" item.
pub(crate) fn new_company(now: DateTime<Utc>) -> RealmData {
    let mut data = RealmData::default();
    for (id, name, account_type, sub_type) in DEFAULT_ACCOUNTS {
        let mut account = object(json!({
            "Id": id, "Name": name, "AccountType": account_type, "AccountSubType": sub_type,
        }));
        // Constant names and types: completing them cannot fail.
        let _ = complete_account(&mut account, name);
        seed(&mut data, Kind::Account, account, now);
    }
    let services = object(json!({
        "Id": "1", "Name": "Services", "FullyQualifiedName": "Services", "Type": "Service",
        "IncomeAccountRef": {"value": "1", "name": "Services"}, "TrackQtyOnHand": false,
    }));
    seed(&mut data, Kind::Item, services, now);
    data
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn seed(data: &mut RealmData, kind: Kind, body: Map<String, Value>, now: DateTime<Utc>) {
    if let Err(error) = data.seed(kind, body, now) {
        tracing::error!(%error, "sandbox QuickBooks company default not seeded");
    }
}

/// Checks an account's type and fills in what QuickBooks derives from it.
pub(crate) fn complete_account(body: &mut Map<String, Value>, name: &str) -> Result<(), QbError> {
    let account_type = text(body, "AccountType").ok_or_else(|| QbError::missing("AccountType"))?;
    let Some((_, classification)) = ACCOUNT_TYPES.iter().find(|(t, _)| *t == account_type) else {
        return Err(QbError::new(
            "2010",
            "Request has invalid or unsupported property",
            format!("AccountType {account_type} is not an AccountTypeEnum value"),
        ));
    };
    body.insert("Classification".into(), json!(classification));
    body.insert("FullyQualifiedName".into(), json!(name));
    body.entry("SubAccount").or_insert(json!(false));
    body.entry("CurrentBalance").or_insert(json!(0));
    Ok(())
}
