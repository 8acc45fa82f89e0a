//! The directions matrix of `docs/connectors/README.md` checked against what each connector
//! declares: the page cannot say a connector syncs what it does not, or leave out what it
//! does.

use crate::{ConnectorContext, build, test_context};
use passerelle_core::vault::Credentials;
use passerelle_core::{Entity, IntegrationType};
use serde_json::{Value, json};

const README: &str = include_str!("../../../docs/connectors/README.md");

/// Settings and credentials each connector can be built with (no request is made).
fn sample(kind: IntegrationType) -> (Value, Value) {
    let oauth = json!({"client_id": "c", "client_secret": "s", "refresh_token": "r"});
    match kind {
        IntegrationType::CustomApi => (
            json!({"api_url": "https://erp.example.com"}),
            json!({"api_key": "k-123456"}),
        ),
        IntegrationType::Xero => (
            json!({"tenant_id": "00000000-0000-0000-0000-000000000001"}),
            oauth,
        ),
        IntegrationType::QuickBooks => (json!({"realm_id": "123"}), oauth),
        IntegrationType::SapB1 => (
            json!({"server": "https://sap.example.com:50000", "company_db": "DB", "invoice_account_code": "4000"}),
            json!({"username": "u", "password": "p"}),
        ),
        IntegrationType::Dynamics365 => (
            json!({"environment_url": "https://contoso.crm4.dynamics.com", "tenant_id": "contoso.onmicrosoft.com"}),
            json!({"client_id": "c", "client_secret": "s"}),
        ),
        IntegrationType::Odoo => (
            json!({"url": "https://acme.odoo.com", "database": "acme", "protocol": "json2"}),
            json!({"api_key": "k-123456"}),
        ),
        IntegrationType::NetSuite => (
            json!({"account_id": "1234567", "time_zone": "America/New_York"}),
            json!({"consumer_key": "a", "consumer_secret": "b", "token_id": "c", "token_secret": "d"}),
        ),
        IntegrationType::Sage => (
            json!({"business_id": "0123456789abcdef0123456789abcdef", "sales_ledger_account_id": "0123456789abcdef0123456789abcdef", "purchase_ledger_account_id": "0123456789abcdef0123456789abcdef"}),
            oauth,
        ),
    }
}

/// The table between the markers: type → the five cells.
fn table() -> Vec<(String, Vec<String>)> {
    let start = README.find("<!-- directions:start -->").unwrap_or(0);
    let end = README
        .find("<!-- directions:end -->")
        .unwrap_or(README.len());
    README[start..end]
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<String> = l
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().trim_matches('`').to_owned())
                .collect();
            (cells[0].clone(), cells[1..].to_vec())
        })
        .collect()
}

#[test]
fn the_directions_matrix_is_what_each_connector_declares() {
    let columns = [
        Entity::Product,
        Entity::Customer,
        Entity::Order,
        Entity::Invoice,
        Entity::Inventory,
    ];
    let rows = table();
    let ctx: ConnectorContext = test_context();
    let mut checked = 0;
    for kind in IntegrationType::ALL {
        let (settings, credentials) = sample(*kind);
        let credentials = Credentials::from_value(credentials).unwrap();
        let connector = build(*kind, Some(&settings), Some(&credentials), &ctx)
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        let caps = connector.capabilities();
        let (_, cells) = rows
            .iter()
            .find(|(t, _)| t == kind.as_str())
            .unwrap_or_else(|| panic!("the matrix has no row for {kind}"));
        for (entity, cell) in columns.iter().zip(cells) {
            let declared = match (caps.export.contains(entity), caps.import.contains(entity)) {
                (true, true) => "both",
                (true, false) => "export",
                (false, true) => "import",
                (false, false) => "-",
            };
            assert_eq!(cell, declared, "{kind} {entity}: the README says {cell}");
        }
        checked += 1;
    }
    assert_eq!(
        checked,
        rows.len(),
        "every row of the matrix is a connector"
    );
}
