//! Bidirectional sync: a record changed on both sides since its last sync is settled by the
//! integration's conflict policy and logged with both versions; nothing imported is echoed.

use crate::support::*;
use passerelle_core::{IntegrationId, RunStatus};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(120);

async fn sync_ok(env: &Env, integration: IntegrationId) -> passerelle_store::SyncRun {
    let r = env.wait_run(env.sync(integration), LONG).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    r
}

async fn platform_name(env: &Env, sku: &str) -> String {
    sqlx::query_scalar("SELECT name FROM platform.products WHERE sku = $1")
        .bind(sku)
        .fetch_one(env.db.store.pool())
        .await
        .unwrap()
}

fn erp_name(env: &Env, sku: &str) -> String {
    env.sandbox
        .custom_api()
        .records(&env.api_key, "products")
        .into_iter()
        .find(|p| p["sku"] == sku)
        .and_then(|p| p["name"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The conflict rows logged so far: (request_data name, response_data name, message).
async fn conflicts(env: &Env, integration: IntegrationId) -> Vec<(String, String, String)> {
    let rows: Vec<(serde_json::Value, serde_json::Value, String)> = sqlx::query_as(
        "SELECT request_data, response_data, error_message FROM integration_logs
          WHERE integration_id = $1 AND action = 'conflict' ORDER BY id",
    )
    .bind(integration)
    .fetch_all(env.db.store.pool())
    .await
    .unwrap();
    rows.into_iter()
        .map(|(platform, erp, message)| {
            (
                platform["name"].as_str().unwrap_or_default().to_owned(),
                erp["name"].as_str().unwrap_or_default().to_owned(),
                message,
            )
        })
        .collect()
}

/// An edit at the ERP of the product with this SKU (created if there is none); its id.
fn erp_edit(env: &Env, sku: &str, name: &str) -> String {
    let id = env
        .sandbox
        .custom_api()
        .records(&env.api_key, "products")
        .into_iter()
        .find(|p| p["sku"] == sku)
        .map(|p| p["id"].clone());
    let mut record = serde_json::json!({"sku": sku, "name": name, "price": 5, "currency": "EUR"});
    if let Some(id) = id {
        record["id"] = id;
    }
    env.sandbox
        .custom_api()
        .upsert_record(&env.api_key, "products", record)
}

async fn platform_edit(env: &Env, sku: &str, name: &str) {
    sqlx::query("UPDATE platform.products SET name = $2 WHERE sku = $1")
        .bind(sku)
        .bind(name)
        .execute(env.db.store.pool())
        .await
        .unwrap();
}

fn updates(env: &Env) -> u64 {
    env.stats().updates.get("products").copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_changed_on_both_sides_is_settled_by_the_policy_and_logged_with_both_versions() {
    let env = Env::new("conflict").await;
    let tenant = env.db.tenant("Acme").await;
    for sku in ["ERP-1", "ERP-2"] {
        assert!(!erp_edit(&env, sku, &format!("{sku} from the ERP")).is_empty());
    }
    let integration = env.integration(tenant, "products", "bidirectional");
    let _w = env.worker(1);
    sync_ok(&env, integration).await;
    assert_eq!(updates(&env), 0, "the import was echoed: {:?}", env.stats());

    // Both sides change ERP-1; only the platform changes ERP-2. Products default to the ERP.
    platform_edit(&env, "ERP-1", "Platform edit").await;
    platform_edit(&env, "ERP-2", "Platform only").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    erp_edit(&env, "ERP-1", "ERP edit");
    assert_eq!(
        env.sandbox
            .custom_api()
            .records(&env.api_key, "products")
            .len(),
        2
    );
    sync_ok(&env, integration).await;
    assert_eq!(platform_name(&env, "ERP-1").await, "ERP edit");
    assert_eq!(
        erp_name(&env, "ERP-1"),
        "ERP edit",
        "the ERP's winning version was overwritten"
    );
    assert_eq!(erp_name(&env, "ERP-2"), "Platform only");
    assert_eq!(updates(&env), 1, "only ERP-2 goes out: {:?}", env.stats());
    let logged = conflicts(&env, integration).await;
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(
        (logged[0].0.as_str(), logged[0].1.as_str()),
        ("Platform edit", "ERP edit")
    );
    assert!(
        logged[0]
            .2
            .contains("the ERP's version was written (products: erp, by default)"),
        "{logged:?}"
    );

    // The admin makes the platform win products; both sides change ERP-1 again.
    let (out, _, stderr) = run(env.cmd().args([
        "integrations",
        "update",
        &integration.to_string(),
        "--conflict-policy",
        "products=platform",
    ]));
    assert!(out.status.success(), "{stderr}");
    platform_edit(&env, "ERP-1", "Platform wins").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    erp_edit(&env, "ERP-1", "ERP loses");
    sync_ok(&env, integration).await;
    assert_eq!(platform_name(&env, "ERP-1").await, "Platform wins");
    assert_eq!(
        erp_name(&env, "ERP-1"),
        "Platform wins",
        "the platform's version was not exported"
    );
    let logged = conflicts(&env, integration).await;
    assert_eq!(logged.len(), 2, "{logged:?}");
    assert_eq!(
        (logged[1].0.as_str(), logged[1].1.as_str()),
        ("Platform wins", "ERP loses")
    );
    assert!(logged[1].2.contains("the platform's version was kept and is exported next (products: platform, as the integration's conflict_policy says)"), "{logged:?}");

    // Nothing changed since: nothing goes out again, and no new conflict.
    let before = updates(&env);
    sync_ok(&env, integration).await;
    assert_eq!(updates(&env), before, "{:?}", env.stats());
    assert_eq!(conflicts(&env, integration).await.len(), 2);
    assert_eq!(platform_name(&env, "ERP-1").await, "Platform wins");
}

#[test]
fn a_policy_with_a_typo_is_refused_naming_the_choices() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = rt.block_on(Env::new("conflicttypo"));
    let tenant = rt.block_on(env.db.tenant("Acme"));
    let integration = env.integration(tenant, "products", "bidirectional");
    for (policy, says) in [
        ("product=erp", "unknown field `product`"),
        ("products=both", "platform or erp"),
    ] {
        let (out, stdout, stderr) = run(env.cmd().args([
            "integrations",
            "update",
            &integration.to_string(),
            "--conflict-policy",
            policy,
        ]));
        assert!(!out.status.success(), "{policy} was accepted: {stdout}");
        assert!(stderr.contains(says), "{policy}: {stderr}");
    }
    let (out, stdout, _) = run(env.cmd().args([
        "--output",
        "json",
        "integrations",
        "show",
        &integration.to_string(),
    ]));
    assert!(out.status.success());
    let shown: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(shown["conflict_policy"]["products"], "erp", "{shown}");
    assert_eq!(shown["conflict_policy"]["orders"], "platform", "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erp_deletion_of_a_record_the_platform_changed_is_a_conflict_too() {
    let env = Env::new("conflictdel").await;
    let tenant = env.db.tenant("Acme").await;
    let kept = erp_edit(&env, "ERP-1", "Kept by the platform");
    erp_edit(&env, "ERP-2", "Only changed on the platform");
    let integration = env.integration(tenant, "products", "bidirectional");
    let (out, _, stderr) = run(env.cmd().args([
        "integrations",
        "update",
        &integration.to_string(),
        "--conflict-policy",
        "products=platform",
    ]));
    assert!(out.status.success(), "{stderr}");
    let _w = env.worker(1);
    sync_ok(&env, integration).await;
    // Both are edited on the platform, then deleted at the ERP.
    platform_edit(&env, "ERP-1", "Platform edit").await;
    platform_edit(&env, "ERP-2", "Platform edit 2").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    env.sandbox
        .custom_api()
        .delete_record(&env.api_key, "products", &kept);
    sync_ok(&env, integration).await;
    // The platform won: its product stays active and goes to the ERP again, as a create.
    let active: bool =
        sqlx::query_scalar("SELECT active FROM platform.products WHERE sku = 'ERP-1'")
            .fetch_one(env.db.store.pool())
            .await
            .unwrap();
    assert!(active, "the ERP's deletion won over the platform's change");
    assert_eq!(
        erp_name(&env, "ERP-1"),
        "Platform edit",
        "not created again at the ERP"
    );
    let logged = conflicts(&env, integration).await;
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(logged[0].0, "Platform edit");
    // ERP-2 was only changed on the platform: exported as an update.
    assert_eq!(erp_name(&env, "ERP-2"), "Platform edit 2");
}
