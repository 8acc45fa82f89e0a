//! The README's first command: the demo, end to end, on a database and queues of its own.

use crate::support::{delete_topology, drop_database, passerelle, run, server_url, unique_db_name};

#[test]
fn the_demo_syncs_everything_and_its_api_answers_the_curl_lines_it_prints() {
    let name = unique_db_name("demo");
    let prefix = format!(
        "pt.demo.{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let (out, stdout, stderr) = run(passerelle(&format!("{}/{name}", server_url()))
        .env("PASSERELLE__AMQP__PREFIX", &prefix)
        .args(["demo", "--orders", "200", "--exit"]));
    drop_database(&format!("{name}_demo"));
    delete_topology(&format!("{prefix}-demo"), &[5, 30, 120, 600]);
    assert!(out.status.success(), "the demo failed:\n{stdout}\n{stderr}");
    for integration in [
        "ERP — orders, invoices, customers ",
        "ERP — catalogue and stock ",
        "Xero — contacts, items, quotes ",
        "Odoo — stock import ",
        "NetSuite — customers, items ",
    ] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(integration))
            .unwrap_or_else(|| panic!("no summary row for {integration}:\n{stdout}"));
        assert!(row.contains("succeeded"), "{row}");
    }
    let token = stdout
        .split("Bearer ")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap_or_else(|| panic!("no curl line:\n{stdout}"));
    assert!(token.starts_with("pst_"), "{token}");
    assert_eq!(
        stdout.matches("curl -H 'Authorization: Bearer").count(),
        4,
        "{stdout}"
    );
    assert_eq!(stdout.matches("→ 200 OK").count(), 4, "{stdout}");
    assert!(
        stdout.contains("admin API on http://127.0.0.1:"),
        "{stdout}"
    );
}
