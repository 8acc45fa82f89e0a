//! The settings of an SAP Business One integration: the Service Layer and company, the
//! warehouse and price list, how invoices are booked, and our own limit.

use crate::rate::RateLimits;
use crate::{ConnectorContext, ConnectorError};
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;
use url::Url;

/// Our self-imposed limit per company database: SAP publishes none, and a Service Layer
/// node serves its own users too. 20 requests a second and 8 at once keep a typical
/// two-node installation responsive; `settings.rate_limit` overrides it.
pub const DEFAULT_LIMITS: RateLimits = RateLimits {
    requests: 20,
    per: Duration::from_secs(1),
    per_day: None,
    concurrency: Some(8),
};

/// OACT.AcctCode is nvarchar(15); OITM.ItemCode nvarchar(50).
const ACCOUNT_CODE_MAX: usize = 15;
const ITEM_CODE_MAX: usize = 50;

/// How an exported invoice is booked: SAP's `DocType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceType {
    /// `dDocument_Service`: one service row on a G/L account (`invoice_account_code`).
    Service,
    /// `dDocument_Items`: one row on an item (`invoice_item_code`).
    Items,
}

/// The row an invoice's total is booked on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvoiceLines {
    /// A service row on this G/L (revenue) account: SAP requires one on every service row.
    Service { account_code: String },
    /// An item row on this item, optionally with a G/L account overriding SAP's own
    /// determination.
    Items {
        item_code: String,
        account_code: Option<String>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    server: Option<String>,
    company_db: Option<String>,
    warehouse_code: Option<String>,
    card_code_prefix: Option<String>,
    price_list: Option<u32>,
    invoice_type: Option<InvoiceType>,
    invoice_account_code: Option<String>,
    invoice_item_code: Option<String>,
    rate_limit: Option<Value>,
    timeout_secs: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct SapB1Settings {
    /// The Service Layer's base (`https://host:50000`); the API is at `{server}/b1s/v1`.
    pub server: Url,
    /// `CompanyDB` at login.
    pub company_db: String,
    /// Warehouse of exported order lines (default `01`, SAP's first warehouse).
    pub warehouse_code: String,
    /// Business partner codes are this prefix and our customer id (default `C`).
    pub card_code_prefix: String,
    /// The price list an item's price is written to and read from (default 1).
    pub price_list: u32,
    /// What an exported invoice's row is booked on.
    pub invoice_lines: InvoiceLines,
    pub limits: RateLimits,
    pub timeout: Duration,
}

impl SapB1Settings {
    pub fn parse(
        settings: Option<&Value>,
        context: &ConnectorContext,
    ) -> Result<Self, ConnectorError> {
        let raw: RawSettings =
            crate::settings::read(settings, "sap_b1", "`server` and `company_db` are required")?;
        let server = raw.server.filter(|s| !s.trim().is_empty()).ok_or_else(|| {
            ConnectorError::fatal(
                "sap_b1 settings need `server`, the Service Layer's address (e.g. https://sap.example.com:50000)",
            )
        })?;
        let mut server = context.url_policy.check(&server, "settings.server")?;
        // Accept the address with or without the service root.
        let path = server.path().trim_end_matches('/');
        let path = path.strip_suffix("/b1s/v1").unwrap_or(path).to_owned();
        server.set_path(&path);
        let company_db = raw
            .company_db
            .filter(|c| !c.trim().is_empty())
            .ok_or_else(|| {
                ConnectorError::fatal(
                    "sap_b1 settings need `company_db` (the CompanyDB to log in to)",
                )
            })?;
        let card_code_prefix = raw.card_code_prefix.unwrap_or_else(|| "C".into());
        if card_code_prefix.chars().count() > 5 {
            return Err(ConnectorError::fatal(
                "settings.card_code_prefix must be at most 5 characters (CardCode holds 15)",
            ));
        }
        let limits =
            RateLimits::from_setting("rate_limit", raw.rate_limit.as_ref(), DEFAULT_LIMITS)?;
        let invoice_lines = invoice_lines(
            raw.invoice_type,
            raw.invoice_account_code,
            raw.invoice_item_code,
        )?;
        Ok(Self {
            server,
            company_db,
            warehouse_code: raw
                .warehouse_code
                .filter(|w| !w.trim().is_empty())
                .unwrap_or_else(|| "01".into()),
            card_code_prefix,
            price_list: raw.price_list.unwrap_or(1).max(1),
            invoice_lines,
            limits,
            timeout: Duration::from_secs(raw.timeout_secs.unwrap_or(60).clamp(1, 600)),
        })
    }

    /// `{server}/b1s/v1/{segment}`: one segment (`Items('A/1')` keeps its slash as `%2F`);
    /// `""` is the service root, with its trailing slash.
    pub(super) fn service(&self, segment: &str) -> Url {
        crate::urls::join_segments(&self.server, ["b1s", "v1", segment])
    }
}

/// Reads the invoice settings. A service invoice (the default) needs its G/L account: SAP
/// refuses a service row without one ("Enter G/L account for service row"), and no account is
/// guessed for it (SAP's own revenue account determination is not readable through the
/// Service Layer, and a wrong guess would book revenue on the wrong account). Settings are
/// checked without the integration's entities, and invoices sync by default, so the
/// account is required whenever invoices would be service documents.
fn invoice_lines(
    invoice_type: Option<InvoiceType>,
    account_code: Option<String>,
    item_code: Option<String>,
) -> Result<InvoiceLines, ConnectorError> {
    let code = |name: &str, value: Option<String>, max: usize| match value {
        None => Ok(None),
        Some(v) if v.trim().is_empty() || v.chars().count() > max => Err(ConnectorError::fatal(
            format!("settings.{name} `{v}` is not an SAP code (1 to {max} characters)"),
        )),
        Some(v) => Ok(Some(v.trim().to_owned())),
    };
    let account_code = code("invoice_account_code", account_code, ACCOUNT_CODE_MAX)?;
    let item_code = code("invoice_item_code", item_code, ITEM_CODE_MAX)?;
    match invoice_type.unwrap_or(InvoiceType::Service) {
        InvoiceType::Service => {
            if item_code.is_some() {
                return Err(ConnectorError::fatal(
                    "settings.invoice_item_code applies to item invoices only: set settings.invoice_type to `items`, or remove it",
                ));
            }
            let account_code = account_code.ok_or_else(|| {
                ConnectorError::fatal(
                    "sap_b1 settings need `invoice_account_code`: the G/L (revenue) account code an exported invoice's service row is booked on (SAP refuses a service row without one); or set `invoice_type` to `items` with `invoice_item_code`",
                )
            })?;
            Ok(InvoiceLines::Service { account_code })
        }
        InvoiceType::Items => Ok(InvoiceLines::Items {
            item_code: item_code.ok_or_else(|| {
                ConnectorError::fatal(
                    "settings.invoice_type `items` needs `invoice_item_code`: the ItemCode (a non-inventory sales item) an exported invoice's row is booked on",
                )
            })?,
            account_code,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sap_b1::client::target;
    use crate::sap_b1::tests::ctx;
    use passerelle_core::Entity;
    use serde_json::json;

    #[test]
    fn settings_need_server_and_company_and_refuse_secrets() {
        let parse = |mut v: Value| {
            if let Some(o) = v.as_object_mut() {
                o.entry("invoice_account_code").or_insert(json!("4000"));
            }
            SapB1Settings::parse(Some(&v), &ctx())
        };
        assert!(parse(json!({"company_db": "X"})).is_err());
        assert!(parse(json!({"server": "https://h"})).is_err());
        let err =
            parse(json!({"server": "https://h", "company_db": "X", "password": "p"})).unwrap_err();
        assert!(err.to_string().contains("credential"), "{err}");
        assert!(parse(json!({"server": "https://h", "company_db": "X", "database": "X"})).is_err());
        let s = parse(json!({"server": "https://h:50000/b1s/v1/", "company_db": "X"})).unwrap();
        assert_eq!(s.service("Items").as_str(), "https://h:50000/b1s/v1/Items");
        assert_eq!(s.limits, DEFAULT_LIMITS);
        assert_eq!(s.warehouse_code, "01");
        let s =
            parse(json!({"server": "https://h", "company_db": "X", "rate_limit": {"requests": 5}}))
                .unwrap();
        assert_eq!(s.limits.requests, 5);
    }

    #[test]
    fn service_invoices_need_a_gl_account_and_item_invoices_an_item() {
        let parse = |v: Value| SapB1Settings::parse(Some(&v), &ctx());
        let base = json!({"server": "https://h", "company_db": "X"});
        let with = |extra: Value| {
            let mut v = base.clone();
            if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
                o.extend(e.clone());
            }
            v
        };
        // Invoices are service documents by default: the account is required, by name.
        for missing in [base.clone(), with(json!({"invoice_type": "service"}))] {
            let err = parse(missing).unwrap_err();
            assert_eq!(err.class(), "fatal");
            assert!(err.to_string().contains("invoice_account_code"), "{err}");
        }
        let s = parse(with(json!({"invoice_account_code": "41000000"}))).unwrap();
        assert_eq!(
            s.invoice_lines,
            InvoiceLines::Service {
                account_code: "41000000".into()
            }
        );
        let err = parse(with(json!({"invoice_type": "items"}))).unwrap_err();
        assert!(err.to_string().contains("invoice_item_code"), "{err}");
        let s = parse(with(
            json!({"invoice_type": "items", "invoice_item_code": "SERVICES"}),
        ))
        .unwrap();
        assert_eq!(
            s.invoice_lines,
            InvoiceLines::Items {
                item_code: "SERVICES".into(),
                account_code: None
            }
        );
        for bad in [
            json!({"invoice_account_code": ""}),
            json!({"invoice_account_code": "1234567890123456"}),
            json!({"invoice_account_code": "4000", "invoice_item_code": "SERVICES"}),
            json!({"invoice_type": "goods", "invoice_account_code": "4000"}),
        ] {
            assert_eq!(
                parse(with(bad.clone())).unwrap_err().class(),
                "fatal",
                "{bad}"
            );
        }
    }

    #[test]
    fn request_urls_join_the_base_with_or_without_a_path_or_a_trailing_slash() {
        for (server, root) in [
            (
                "https://sap.example.com:50000",
                "https://sap.example.com:50000",
            ),
            (
                "https://sap.example.com:50000/",
                "https://sap.example.com:50000",
            ),
            (
                "https://sap.example.com:50000/b1s/v1",
                "https://sap.example.com:50000",
            ),
            ("https://gw.example.com/sap", "https://gw.example.com/sap"),
            ("https://gw.example.com/sap/", "https://gw.example.com/sap"),
            (
                "https://gw.example.com/sap/b1s/v1/",
                "https://gw.example.com/sap",
            ),
        ] {
            let s = SapB1Settings::parse(
                Some(&json!({"server": server, "company_db": "X", "invoice_account_code": "4000"})),
                &ctx(),
            )
            .unwrap();
            assert_eq!(
                s.service("").as_str(),
                format!("{root}/b1s/v1/"),
                "{server}"
            );
            assert_eq!(
                s.service("Login").as_str(),
                format!("{root}/b1s/v1/Login"),
                "{server}"
            );
            let item = target(Entity::Product).unwrap();
            assert_eq!(
                s.service(&item.entity_path("A/1 b")).as_str(),
                format!("{root}/b1s/v1/Items('A%2F1%20b')"),
                "{server}"
            );
        }
    }
}
