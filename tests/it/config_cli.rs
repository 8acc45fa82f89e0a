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
