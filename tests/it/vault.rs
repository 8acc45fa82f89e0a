use crate::support::*;
use passerelle_core::IntegrationType;
use passerelle_core::vault::{Credentials, KeyRing, Vault, VaultError};
use passerelle_store::{NewIntegration, StoreError};
use serde_json::json;

fn creds(n: usize) -> Credentials {
    Credentials::from_value(json!({"api_key": format!("secret-{n}")})).unwrap()
}

async fn seed_integrations(
    db: &TestDb,
    vault: &Vault,
    n: usize,
) -> Vec<passerelle_store::Integration> {
    let tenant = db.tenant("Acme").await;
    let mut out = Vec::new();
    for i in 0..n {
        let mut new = NewIntegration::new(tenant, format!("i{i}"), IntegrationType::CustomApi);
        new.credentials = Some(creds(i));
        out.push(db.store.create_integration(Some(vault), new).await.unwrap());
    }
    out
}

#[tokio::test]
async fn stored_credentials_are_sealed_and_open_for_their_own_row_only() {
    let db = TestDb::migrated("vault").await;
    let (vault, _) = vault_with("k1");
    let rows = seed_integrations(&db, &vault, 2).await;
    let raw: serde_json::Value =
        sqlx::query_scalar("SELECT credentials FROM integrations WHERE id = $1")
            .bind(rows[0].id)
            .fetch_one(db.store.pool())
            .await
            .unwrap();
    assert_eq!(raw["kid"], "k1");
    assert!(
        !raw.to_string().contains("secret-0"),
        "plaintext in the column: {raw}"
    );
    let fetched = db.store.integration(rows[0].id).await.unwrap();
    assert_eq!(fetched.open_credentials(&vault).unwrap(), Some(creds(0)));

    // Copy row 0's ciphertext onto row 1: it must not decrypt there.
    sqlx::query("UPDATE integrations SET credentials = (SELECT credentials FROM integrations WHERE id = $1) WHERE id = $2")
        .bind(rows[0].id).bind(rows[1].id).execute(db.store.pool()).await.unwrap();
    let copied = db.store.integration(rows[1].id).await.unwrap();
    let err = copied.open_credentials(&vault).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Vault {
                source: VaultError::Tampered { .. },
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn plaintext_credentials_cannot_be_written_to_the_column() {
    let db = TestDb::migrated("vaultp").await;
    let tenant = db.tenant("Acme").await;
    let err = sqlx::query("INSERT INTO integrations (tenant_id, name, type, credentials) VALUES ($1, 'x', 'xero', '{\"password\":\"p\"}')")
        .bind(tenant).execute(db.store.pool()).await.unwrap_err();
    assert!(
        err.to_string().contains("integrations_credentials_sealed"),
        "{err}"
    );
}

#[tokio::test]
async fn a_missing_key_is_an_error_naming_its_id() {
    let db = TestDb::migrated("vaultm").await;
    let (old, _) = vault_with("old");
    let rows = seed_integrations(&db, &old, 1).await;
    let (new, new_key) = vault_with("new");
    let err = db
        .store
        .integration(rows[0].id)
        .await
        .unwrap()
        .open_credentials(&new)
        .unwrap_err();
    assert!(err.to_string().contains("key `old`"), "{err}");

    // The rotate command reports the row it could not open, names the key, and fails.
    let (out, stdout, stderr) = run(passerelle(&db.url)
        .env("PASSERELLE__VAULT__ACTIVE_KEY", "new")
        .env("PASSERELLE__VAULT__KEYS__NEW", &new_key)
        .args(["vault", "rotate"]));
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("key `old`"), "{stdout}");
    assert!(stdout.contains("1 still under another key"), "{stdout}");
}

#[tokio::test]
async fn rotation_with_two_keys_reseals_everything_under_the_active_one() {
    let db = TestDb::migrated("vaultr").await;
    let (k1_vault, k1) = vault_with("k1");
    let rows = seed_integrations(&db, &k1_vault, 5).await;
    let k2 = passerelle_core::vault::generate_key_base64();
    let (out, stdout, stderr) = run(passerelle(&db.url)
        .env("PASSERELLE__VAULT__ACTIVE_KEY", "k2")
        .env("PASSERELLE__VAULT__KEYS__K1", &k1)
        .env("PASSERELLE__VAULT__KEYS__K2", &k2)
        .args(["--output", "json", "vault", "rotate", "--batch-size", "2"]));
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["rotated"], 5);
    assert_eq!(report["remaining"], 0);
    // k1 can now be retired: a ring holding only k2 opens every row.
    let only_k2 = Vault::new(KeyRing::from_base64("k2", [("k2", k2.as_str())]).unwrap());
    for (i, row) in rows.iter().enumerate() {
        let fetched = db.store.integration(row.id).await.unwrap();
        assert_eq!(fetched.open_credentials(&only_k2).unwrap(), Some(creds(i)));
    }
}

#[tokio::test]
async fn an_interrupted_rotation_loses_nothing_and_resumes() {
    let db = TestDb::migrated("vaulti").await;
    let (k1_vault, k1) = vault_with("k1");
    let rows = seed_integrations(&db, &k1_vault, 5).await;
    let k2 = passerelle_core::vault::generate_key_base64();
    let both =
        Vault::new(KeyRing::from_base64("k2", [("k1", k1.as_str()), ("k2", k2.as_str())]).unwrap());

    // A worker holds row 0 (e.g. storing a refreshed token) while rotation runs: it is skipped,
    // not blocked on and not overwritten.
    let mut worker = db.store.pool().begin().await.unwrap();
    sqlx::query("SELECT 1 FROM integrations WHERE id = $1 FOR UPDATE")
        .bind(rows[0].id)
        .execute(&mut *worker)
        .await
        .unwrap();

    // Stop after one batch of two, as if the process were stopped there.
    let report = passerelle_store::rotate_credentials(&db.store, &both, 2, Some(1), |_| {})
        .await
        .unwrap();
    assert_eq!(report.rotated, 2);
    assert_eq!(report.remaining, 3);
    worker.rollback().await.unwrap();
    // Mid-rotation every row still opens with the ring.
    for (i, row) in rows.iter().enumerate() {
        let fetched = db.store.integration(row.id).await.unwrap();
        assert_eq!(
            fetched.open_credentials(&both).unwrap(),
            Some(creds(i)),
            "row {i} mid-rotation"
        );
    }
    let report = passerelle_store::rotate_credentials(&db.store, &both, 2, None, |_| {})
        .await
        .unwrap();
    assert_eq!(report.rotated, 3);
    assert_eq!(report.remaining, 0);
    let kids: Vec<String> =
        sqlx::query_scalar("SELECT credentials->>'kid' FROM integrations ORDER BY id")
            .fetch_all(db.store.pool())
            .await
            .unwrap();
    assert_eq!(kids, vec!["k2"; 5]);
}

#[test]
fn generate_key_prints_a_usable_32_byte_key() {
    let (out, stdout, _) = run(passerelle("postgres://x@h/p").args([
        "--output",
        "json",
        "vault",
        "generate-key",
        "--key-id",
        "prod1",
    ]));
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let key = v["key"].as_str().unwrap();
    KeyRing::from_base64("prod1", [("prod1", key)]).unwrap();
    let (_, table, _) =
        run(passerelle("postgres://x@h/p").args(["vault", "generate-key", "--key-id", "prod1"]));
    assert!(table.contains("PASSERELLE__VAULT__KEYS__PROD1="), "{table}");
}

#[tokio::test]
async fn rotated_credentials_are_stored_only_under_a_live_lease() {
    let db = TestDb::migrated("rot").await;
    let (vault, _) = vault_with("k1");
    let row = seed_integrations(&db, &vault, 1).await.remove(0);
    let pool = db.store.pool();
    let run_id: passerelle_core::RunId = sqlx::query_scalar(
        "INSERT INTO sync_runs (id, integration_id, tenant_id, trigger) VALUES (gen_random_uuid(), $1, $2, 'manual') RETURNING id",
    )
    .bind(row.id).bind(row.tenant_id).fetch_one(pool).await.unwrap();
    let lease = passerelle_store::LeaseToken {
        integration_id: row.id,
        run_id,
        owner: "w1".into(),
    };
    let rotated = creds(99);
    // No lease held: refused, nothing written.
    let err = db
        .store
        .store_rotated_credentials(&vault, &row, &lease, &rotated)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err:?}");
    assert_eq!(
        db.store
            .integration(row.id)
            .await
            .unwrap()
            .open_credentials(&vault)
            .unwrap(),
        Some(creds(0))
    );
    // Under the lease: stored, sealed, and readable at once.
    sqlx::query("INSERT INTO integration_leases (integration_id, run_id, owner, expires_at) VALUES ($1, $2, 'w1', now() + interval '30 seconds')")
        .bind(row.id).bind(run_id).execute(pool).await.unwrap();
    db.store
        .store_rotated_credentials(&vault, &row, &lease, &rotated)
        .await
        .unwrap();
    assert_eq!(
        db.store
            .integration(row.id)
            .await
            .unwrap()
            .open_credentials(&vault)
            .unwrap(),
        Some(creds(99))
    );
    // Another owner (a worker that lost the lease) is refused.
    let stale = passerelle_store::LeaseToken {
        owner: "w0".into(),
        ..lease
    };
    assert!(
        db.store
            .store_rotated_credentials(&vault, &row, &stale, &creds(1))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn rotation_re_seals_webhook_secrets_too() {
    let db = TestDb::migrated("vaultw").await;
    let (k1_vault, k1) = vault_with("k1");
    let rows = seed_integrations(&db, &k1_vault, 2).await;
    let hooked = db
        .store
        .set_webhook(
            &k1_vault,
            &rows[1],
            Some("https://hooks.example.com/p"),
            Some("whsec_c2VjcmV0"),
        )
        .await
        .unwrap();
    let k2 = passerelle_core::vault::generate_key_base64();
    let both =
        Vault::new(KeyRing::from_base64("k2", [("k1", k1.as_str()), ("k2", k2.as_str())]).unwrap());
    let report = passerelle_store::rotate_credentials(&db.store, &both, 10, None, |_| {})
        .await
        .unwrap();
    // Two credentials and one webhook secret.
    assert_eq!((report.rotated, report.remaining), (3, 0));
    let only_k2 = Vault::new(KeyRing::from_base64("k2", [("k2", k2.as_str())]).unwrap());
    let after = db.store.integration(hooked.id).await.unwrap();
    assert_eq!(
        after.open_webhook_secret(&only_k2).unwrap().as_deref(),
        Some("whsec_c2VjcmV0")
    );
    assert_eq!(
        after.webhook_url.as_deref(),
        Some("https://hooks.example.com/p")
    );
}
