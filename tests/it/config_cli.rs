use crate::support::*;

#[test]
fn config_show_prints_the_effective_configuration_with_secrets_redacted() {
    let key = passerelle_core::vault::generate_key_base64();
    let (out, stdout, stderr) = run(passerelle("postgres://app:hunter2@db.internal:5432/p")
        .env("PASSERELLE__AMQP__PREFIX", "tenant_a")
        .env("PASSERELLE__VAULT__ACTIVE_KEY", "k1")
        .env("PASSERELLE__VAULT__KEYS__K1", &key)
        .args(["--output", "json", "config", "show"]));
    assert!(out.status.success(), "{stderr}");
    let shown: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(shown["amqp"]["prefix"], "tenant_a");
    assert_eq!(
        shown["database"]["url"],
        "postgres://app:redacted@db.internal:5432/p"
    );
    assert_eq!(shown["vault"]["keys"]["k1"], "<redacted>");
    assert!(!stdout.contains("hunter2") && !stdout.contains(&key));
}

#[test]
fn a_config_file_is_layered_under_the_environment() {
    let dir = std::env::temp_dir().join(unique_db_name("cfg"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("p.toml");
    std::fs::write(
        &file,
        "[amqp]\nprefix = \"file_prefix\"\n[sync]\nerror_after_consecutive_failures = 3\n",
    )
    .unwrap();
    let (out, stdout, _) = run(passerelle("postgres://x@h/p")
        .env("PASSERELLE_CONFIG", &file)
        .env("PASSERELLE__SYNC__ERROR_AFTER_CONSECUTIVE_FAILURES", "4")
        .args(["--output", "json", "config", "show"]));
    assert!(out.status.success());
    let shown: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(shown["amqp"]["prefix"], "file_prefix");
    assert_eq!(shown["sync"]["error_after_consecutive_failures"], 4);
}

#[test]
fn a_typo_in_a_config_key_is_an_error_naming_it() {
    let dir = std::env::temp_dir().join(unique_db_name("cfgt"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("p.toml");
    std::fs::write(&file, "[amqp]\nprefx = \"oops\"\n").unwrap();
    let (out, _, stderr) = run(passerelle("postgres://x@h/p")
        .args(["--config"])
        .arg(&file)
        .args(["config", "show"]));
    assert!(!out.status.success());
    assert!(stderr.contains("prefx"), "{stderr}");
    let (out, _, stderr) = run(passerelle("postgres://x@h/p")
        .env("PASSERELLE__AMQP__PREFX", "x")
        .args(["config", "show"]));
    assert!(!out.status.success());
    assert!(stderr.contains("prefx"), "{stderr}");
}

#[test]
fn values_that_would_crash_a_role_are_refused_by_config_show_naming_the_key() {
    for (var, key) in [
        (
            "PASSERELLE__WORKER__LEASE_TTL_SECS",
            "worker.lease_ttl_secs",
        ),
        (
            "PASSERELLE__DATABASE__MAX_CONNECTIONS",
            "database.max_connections",
        ),
    ] {
        let (out, _, stderr) = run(passerelle("postgres://x@h/p")
            .env(var, "0")
            .args(["config", "show"]));
        assert!(!out.status.success(), "{var}=0 accepted");
        assert!(stderr.contains(key), "{stderr}");
    }
    let (out, stdout, stderr) = run(passerelle("postgres://x@h/p")
        .env("PASSERELLE__AMQP__RETRY_DELAYS_SECS", "5")
        .args(["--output", "json", "config", "show"]));
    assert!(out.status.success(), "{stderr}");
    let shown: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(shown["amqp"]["retry_delays_secs"], serde_json::json!([5]));
}

#[tokio::test]
async fn a_refused_setting_is_printed_once() {
    let db = TestDb::migrated("cfgonce").await;
    let tenant = db.tenant("t").await;
    let (_, key) = vault_with("k1");
    let (out, _, stderr) = run(passerelle(&db.url)
        .env("PASSERELLE__VAULT__ACTIVE_KEY", "k1")
        .env("PASSERELLE__VAULT__KEYS__K1", &key)
        .args(["integrations", "create", "--tenant", &tenant.to_string()])
        .args(["--name", "ERP", "--type", "custom_api"])
        .args(["--settings", r#"{"api_url": "ftp://erp.example.com"}"#]));
    assert!(!out.status.success());
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    let message = line.trim_start_matches("error:").trim();
    // "X: X" was the symptom: the message must not repeat itself.
    let (head, tail) = message.split_at(message.len() / 2);
    assert_ne!(head.trim_end_matches([':', ' ']), tail.trim(), "{line}");
    assert_eq!(stderr.matches("scheme").count(), 1, "{stderr}");
}
