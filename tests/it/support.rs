//! Test fixtures: a fresh database per test, the binary, tenants and integrations.

use passerelle_core::vault::{KeyRing, Vault, generate_key_base64};
use passerelle_core::{IntegrationId, RunId, TenantId};
use passerelle_store::Store;
use sqlx::Connection as _;
use std::process::{Command, Output};
use std::time::Duration;
use tokio::sync::OnceCell;

/// Server the tests create their databases on. Override with PASSERELLE_TEST_PG.
pub fn server_url() -> String {
    std::env::var("PASSERELLE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// Broker the tests declare their queues on (each test under its own prefix). Override with
/// PASSERELLE_TEST_AMQP.
pub fn amqp_url() -> String {
    std::env::var("PASSERELLE_TEST_AMQP")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// `url` with its host and port replaced: the same service reached through a proxy.
pub fn through(url: &str, host: &str, port: u16) -> String {
    let mut url = url::Url::parse(url).unwrap();
    url.set_host(Some(host)).unwrap();
    url.set_port(Some(port)).unwrap();
    url.into()
}

/// The address `url` connects to (its host resolved, the scheme's port by default).
pub fn socket_addr(url: &str) -> std::net::SocketAddr {
    let url = url::Url::parse(url).unwrap();
    let port = url.port().unwrap_or(match url.scheme() {
        "amqp" => 5672,
        _ => 5432,
    });
    std::net::ToSocketAddrs::to_socket_addrs(&(url.host_str().unwrap(), port))
        .unwrap()
        .next()
        .unwrap()
}

/// A unique database name for one test.
pub fn unique_db_name(tag: &str) -> String {
    format!("pt_{}_{}", tag, uuid::Uuid::new_v4().simple())
}

/// Test databases older than this are leftovers of a killed run (no test runs this long).
const LEFTOVER_AGE: &str = "1 hour";

/// The migrated database every test database is copied from, made once per test process.
static TEMPLATE: OnceCell<String> = OnceCell::const_new();

/// An administrative connection to the test server's `postgres` database.
async fn admin() -> sqlx::PgConnection {
    sqlx::PgConnection::connect(&format!("{}/postgres", server_url()))
        .await
        .unwrap()
}

/// The template's name: `pt_template_<hash of the migrations>`, so a changed migration makes
/// a new template rather than tests running on a stale one.
fn template_name() -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    for migration in passerelle_store::MIGRATOR.iter() {
        migration.version.hash(&mut hasher);
        migration.checksum.hash(&mut hasher);
    }
    format!("pt_template_{:016x}", hasher.finish())
}

/// Drops the test databases named `like` (a LIKE pattern) that are older than `age` (an
/// interval): what a killed run left behind. Never a template: another checkout's test process
/// may be copying it.
async fn sweep_leftovers(
    admin: &mut sqlx::PgConnection,
    like: &str,
    age: &str,
) -> Result<(), sqlx::Error> {
    // PG_VERSION is written when a database is created: its age is the database's. A
    // database another process is creating or dropping right now may have no file (yet, or
    // any more): `missing_ok` makes its age NULL, so it is left alone.
    let leftovers: Vec<String> = sqlx::query_scalar(
        "SELECT datname FROM pg_database \
         WHERE datname LIKE $1 AND datname NOT LIKE 'pt\\_template\\_%' \
         AND (pg_stat_file('base/' || oid || '/PG_VERSION', true)).modification \
             < now() - $2::interval",
    )
    .bind(like)
    .bind(age)
    .fetch_all(&mut *admin)
    .await?;
    for name in leftovers {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
        )))
        .execute(&mut *admin)
        .await;
    }
    Ok(())
}

/// Sweeps leftovers, then finds or builds the template. Parallel test processes (other
/// checkouts, other test binaries) serialise on an advisory lock; the template is migrated
/// under a temporary name and renamed when complete, so a builder killed mid-way leaves no
/// half-migrated template, only a leftover for a later sweep.
async fn prepare_template() -> String {
    let mut admin = admin().await;
    if let Err(error) = sweep_leftovers(&mut admin, "pt\\_%", LEFTOVER_AGE).await {
        // Leftovers cost disk, not correctness: never fail the tests over them.
        eprintln!("warning: leftover test databases not swept: {error}");
    }
    let name = template_name();
    sqlx::query("SELECT pg_advisory_lock(hashtextextended('passerelle.test_template', 0))")
        .execute(&mut admin)
        .await
        .unwrap();
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await
            .unwrap();
    if !exists {
        let building = unique_db_name("building");
        let url = format!("{}/{building}", server_url());
        passerelle_store::ensure_database(&url).await.unwrap();
        let store = Store::connect(&url, 1, Duration::from_secs(10))
            .await
            .unwrap();
        passerelle_store::migrate(store.pool()).await.unwrap();
        // A template must have no session open when it is renamed or copied.
        store.pool().close().await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE \"{building}\" RENAME TO \"{name}\""
        )))
        .execute(&mut admin)
        .await
        .unwrap();
    }
    sqlx::query("SELECT pg_advisory_unlock(hashtextextended('passerelle.test_template', 0))")
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    name
}

/// A database of its own for one test, dropped when the test ends.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub store: Store,
}

impl TestDb {
    /// A fresh database with every migration applied: a copy of the template, which is
    /// migrated once per test process.
    pub async fn migrated(tag: &str) -> Self {
        let template = TEMPLATE.get_or_init(prepare_template).await;
        let name = unique_db_name(tag);
        let url = format!("{}/{}", server_url(), name);
        let mut admin = admin().await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""
        )))
        .execute(&mut admin)
        .await
        .unwrap();
        admin.close().await.unwrap();
        let store = Store::connect(&url, 5, Duration::from_secs(10))
            .await
            .unwrap();
        Self { name, url, store }
    }

    /// A tenant row, returning its id.
    pub async fn tenant(&self, name: &str) -> TenantId {
        sqlx::query_scalar("INSERT INTO platform.tenants (name) VALUES ($1) RETURNING id")
            .bind(name)
            .fetch_one(self.store.pool())
            .await
            .unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        drop_database(&self.name);
    }
}

/// Drops a test database, closing whatever still holds it.
pub fn drop_database(name: &str) {
    let name = name.to_owned();
    // Drop runs outside any runtime we could borrow; a short-lived one on its own thread is the
    // simplest correct way to finish async cleanup.
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            if let Ok(mut conn) =
                sqlx::PgConnection::connect(&format!("{}/postgres", server_url())).await
            {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await;
            }
        });
    })
    .join();
}

/// The real binary with a clean environment pointing at `db_url`.
pub fn passerelle(db_url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_passerelle"));
    for (key, _) in std::env::vars() {
        if key.starts_with("PASSERELLE") {
            cmd.env_remove(key);
        }
    }
    cmd.env("PASSERELLE__DATABASE__URL", db_url)
        .env("PASSERELLE__AMQP__URL", amqp_url())
        .env("NO_COLOR", "1");
    cmd
}

/// Runs a command to completion, returning its output (stdout, stderr as text).
pub fn run(cmd: &mut Command) -> (Output, String, String) {
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

/// A vault with one fresh key, and the key so the binary can be given the same ring.
pub fn vault_with(id: &str) -> (Vault, String) {
    let key = generate_key_base64();
    let ring = KeyRing::from_base64(id, [(id, key.as_str())]).unwrap();
    (Vault::new(ring), key)
}

/// A whole deployment for one test: its own database, queue prefix, vault key and an
/// in-process sandbox with one custom-API account.
pub struct Env {
    pub db: TestDb,
    pub prefix: String,
    pub sandbox: passerelle_sandbox::Sandbox,
    pub api_key: String,
    pub vault_key: String,
    pub extra_env: Vec<(String, String)>,
}

impl Env {
    pub async fn new(tag: &str) -> Self {
        Self::with_account(tag, None).await
    }

    /// With the sandbox account rate-limited to `rps` requests per second.
    pub async fn with_account(tag: &str, rps: Option<u32>) -> Self {
        let db = TestDb::migrated(tag).await;
        let sandbox = passerelle_sandbox::Sandbox::start(0).await.unwrap();
        let api_key = format!("key-{}", uuid::Uuid::new_v4().simple());
        let mut account = passerelle_sandbox::custom_api::AccountConfig::new(api_key.clone());
        account.requests_per_second = rps;
        sandbox.custom_api().add_account(account);
        let (_, vault_key) = vault_with("test1");
        Self {
            prefix: format!(
                "pt.{}.{}",
                tag,
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            ),
            db,
            sandbox,
            api_key,
            vault_key,
            extra_env: Vec::new(),
        }
    }

    /// The binary configured for this environment: short leases and retry tiers so crash
    /// and retry tests finish in seconds.
    pub fn cmd(&self) -> Command {
        let mut cmd = passerelle(&self.db.url);
        cmd.env("PASSERELLE__AMQP__PREFIX", &self.prefix)
            .env("PASSERELLE__VAULT__ACTIVE_KEY", "test1")
            .env("PASSERELLE__VAULT__KEYS__TEST1", &self.vault_key)
            .env("PASSERELLE__HTTP__ALLOW_PRIVATE_NETWORKS", "true")
            // Fault tests fail many requests in a row on purpose: a short circuit cool-off.
            .env("PASSERELLE__HTTP__BREAKER_COOL_OFF_SECS", "1")
            .env("PASSERELLE__WORKER__LEASE_TTL_SECS", "3")
            .env("PASSERELLE__WORKER__SHUTDOWN_GRACE_SECS", "10")
            .env("PASSERELLE__AMQP__RETRY_DELAYS_SECS", "1,2,4")
            .env(
                "PASSERELLE__LOG__FILTER",
                std::env::var("PASSERELLE_TEST_LOG").unwrap_or("info,sqlx=warn,lapin=warn".into()),
            );
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts a worker process; it is killed when the handle drops.
    pub fn worker(&self, concurrency: u16) -> Worker {
        self.role(&["worker", "--concurrency", &concurrency.to_string()], &[])
    }

    /// Starts a long-running role (`worker …`, `scheduler`) with extra environment; it is
    /// killed when the handle drops. Its stderr (the log) goes to a file.
    pub fn role(&self, args: &[&str], vars: &[(&str, String)]) -> Worker {
        let log = std::env::temp_dir().join(format!(
            "{}-{}-{}.log",
            self.prefix,
            args[0],
            uuid::Uuid::new_v4().simple()
        ));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = self.cmd();
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let child = cmd
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        Worker {
            child: Some(child),
            log,
        }
    }

    /// Creates an active custom-API integration through the CLI.
    pub fn integration(&self, tenant: TenantId, entities: &str, direction: &str) -> IntegrationId {
        let settings = serde_json::json!({"api_url": self.sandbox.custom_api_url()});
        let credentials = serde_json::json!({"api_key": self.api_key});
        self.create_active(
            tenant,
            "ERP",
            "custom_api",
            entities,
            direction,
            &settings,
            &credentials,
        )
    }

    /// Creates an integration of any type through the CLI and activates it.
    #[allow(clippy::too_many_arguments)]
    pub fn create_active(
        &self,
        tenant: TenantId,
        name: &str,
        kind: &str,
        entities: &str,
        direction: &str,
        settings: &serde_json::Value,
        credentials: &serde_json::Value,
    ) -> IntegrationId {
        let (out, stdout, stderr) = run(self.cmd().args([
            "--output",
            "json",
            "integrations",
            "create",
            "--tenant",
            &tenant.to_string(),
            "--name",
            name,
            "--type",
            kind,
            "--entities",
            entities,
            "--direction",
            direction,
            "--settings",
            &settings.to_string(),
            "--credentials",
            &credentials.to_string(),
        ]));
        assert!(out.status.success(), "create failed: {stderr}");
        let id = IntegrationId(
            serde_json::from_str::<serde_json::Value>(&stdout).unwrap()["id"]
                .as_i64()
                .unwrap(),
        );
        let (out, _, stderr) = run(self
            .cmd()
            .args(["integrations", "activate", &id.to_string()]));
        assert!(out.status.success(), "activate failed: {stderr}");
        id
    }

    /// Changes an integration through the CLI (`integrations update <id> <args>`) and activates
    /// it again: a change of settings or credentials puts an active integration back to
    /// `testing`, as it would for an admin.
    pub fn reconfigure(&self, integration: IntegrationId, args: &[&str]) {
        let id = integration.to_string();
        let (out, stdout, stderr) = run(self
            .cmd()
            .args(["--output", "json", "integrations", "update", &id])
            .args(args));
        assert!(out.status.success(), "update failed: {stderr}");
        let status = serde_json::from_str::<serde_json::Value>(&stdout).unwrap()["status"].clone();
        assert_eq!(
            status, "testing",
            "a reconfigured active integration is retested"
        );
        let (out, _, stderr) = run(self.cmd().args(["integrations", "activate", &id]));
        assert!(out.status.success(), "activate failed: {stderr}");
    }

    /// Enqueues a manual sync through the CLI and returns the run id.
    pub fn sync(&self, integration: IntegrationId) -> RunId {
        let (out, stdout, stderr) =
            run(self
                .cmd()
                .args(["--output", "json", "sync", &integration.to_string()]));
        assert!(out.status.success(), "sync failed: {stderr}");
        serde_json::from_str::<serde_json::Value>(&stdout).unwrap()["id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    pub async fn wait_run(&self, run: RunId, timeout: Duration) -> passerelle_store::SyncRun {
        let start = std::time::Instant::now();
        loop {
            let r = self.db.store.run(run).await.unwrap().unwrap();
            if r.status.is_terminal() {
                return r;
            }
            assert!(
                start.elapsed() < timeout,
                "run {run} still {} after {timeout:?}: {r:?}",
                r.status
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `f` holds of the run.
    pub async fn wait_until(
        &self,
        run: RunId,
        timeout: Duration,
        f: impl Fn(&passerelle_store::SyncRun) -> bool,
    ) {
        let start = std::time::Instant::now();
        loop {
            let r = self.db.store.run(run).await.unwrap().unwrap();
            if f(&r) {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "condition not reached after {timeout:?}: {r:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn stats(&self) -> passerelle_sandbox::custom_api::AccountStats {
        self.sandbox.custom_api().stats(&self.api_key).unwrap()
    }

    /// Asserts every record of `collection` was created exactly once at the ERP.
    pub fn assert_exactly_once(&self, collection: &str, expected: u64) {
        let stats = self.stats();
        assert_eq!(
            stats.creates.get(collection).copied().unwrap_or(0),
            expected,
            "creates of {collection}: {stats:?}"
        );
        assert!(
            stats.creates_by_key.values().all(|n| *n == 1),
            "a key created twice"
        );
        assert!(
            stats
                .duplicate_business_keys
                .get(collection)
                .is_none_or(|d| d.is_empty()),
            "duplicate {collection} at the ERP: {:?}",
            stats.duplicate_business_keys.get(collection)
        );
        assert_eq!(
            stats.records.get(collection).copied().unwrap_or(0),
            expected
        );
    }

    pub async fn broker(&self) -> passerelle_queue::Broker {
        passerelle_queue::Broker::connect(
            &amqp_url(),
            passerelle_queue::Topology {
                prefix: self.prefix.clone(),
                delivery_limit: 5,
                retry_delays: [1, 2, 4].map(Duration::from_secs).to_vec(),
            },
        )
        .await
        .unwrap()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        delete_topology(&self.prefix, &[1, 2, 4]);
    }
}

/// Removes a test's queues and exchanges (quorum queues cost the broker memory each). Runs on
/// a thread of its own: `Drop` has no runtime to borrow.
pub fn delete_topology(prefix: &str, retry_delays_secs: &[u64]) {
    let topology = passerelle_queue::Topology {
        prefix: prefix.to_owned(),
        delivery_limit: 5,
        retry_delays: retry_delays_secs
            .iter()
            .map(|s| Duration::from_secs(*s))
            .collect(),
    };
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            if let Ok(broker) = passerelle_queue::Broker::connect(&amqp_url(), topology).await {
                let _ = broker.delete_topology().await;
                broker.close().await;
            }
        });
    })
    .join();
}

/// A worker process, killed (SIGKILL) on drop unless it already exited.
pub struct Worker {
    pub child: Option<std::process::Child>,
    pub log: std::path::PathBuf,
}

impl Worker {
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.as_ref().unwrap().id()).unwrap()
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let start = std::time::Instant::now();
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < timeout,
                "worker did not exit within {timeout:?}; log: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // PASSERELLE_TEST_KEEP_LOGS=1 keeps the worker's log for a post-mortem.
        if std::env::var_os("PASSERELLE_TEST_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

#[tokio::test]
async fn test_databases_are_copies_of_one_migrated_template_that_no_session_holds() {
    let (a, b) = (
        TestDb::migrated("tpla").await,
        TestDb::migrated("tplb").await,
    );
    let template = TEMPLATE.get().unwrap();
    assert_eq!(*template, template_name());
    for db in [&a, &b] {
        let applied: Vec<i64> = sqlx::query_scalar(
            "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
        )
        .fetch_all(db.store.pool())
        .await
        .unwrap();
        let embedded: Vec<i64> = passerelle_store::MIGRATOR
            .iter()
            .map(|m| m.version)
            .collect();
        assert_eq!(applied, embedded, "{}", db.name);
    }
    let mut admin = admin().await;
    let sessions: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
            .bind(template)
            .fetch_one(&mut admin)
            .await
            .unwrap();
    assert_eq!(
        sessions, 0,
        "a session holds the template; copies would fail"
    );
}

#[tokio::test]
async fn the_sweep_drops_old_test_databases_and_keeps_templates() {
    let template = TEMPLATE.get_or_init(prepare_template).await;
    let mut admin = admin().await;
    // A pattern of this test's own, so the sweep cannot touch a database another test uses.
    let tag = format!("sweep{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let old = unique_db_name(&tag);
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{old}\"")))
        .execute(&mut admin)
        .await
        .unwrap();
    let exists = |name: String| async move {
        let mut admin = self::admin().await;
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
        )
        .bind(name)
        .fetch_one(&mut admin)
        .await
        .unwrap()
    };
    let like = format!("pt\\_{tag}\\_%");
    sweep_leftovers(&mut admin, &like, "1 hour").await.unwrap();
    assert!(exists(old.clone()).await, "a young database was swept");
    sweep_leftovers(&mut admin, &like, "0 seconds")
        .await
        .unwrap();
    assert!(!exists(old.clone()).await, "an old database was kept");
    sweep_leftovers(&mut admin, "pt\\_template\\_%", "0 seconds")
        .await
        .unwrap();
    assert!(exists(template.clone()).await, "the template was swept");
    drop_database(&old);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_racing_with_databases_being_created_and_dropped_never_fails() {
    // What another test process does all the time: its databases come and go while this one
    // sweeps. A database being dropped is still listed but its files are already gone.
    let tag = format!("race{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let churn = tokio::spawn({
        let tag = tag.clone();
        async move {
            let mut admin = admin().await;
            for _ in 0..15 {
                let name = unique_db_name(&tag);
                for sql in [
                    format!("CREATE DATABASE \"{name}\""),
                    format!("DROP DATABASE \"{name}\" WITH (FORCE)"),
                ] {
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .execute(&mut admin)
                        .await
                        .unwrap();
                }
            }
        }
    });
    let like = format!("pt\\_{tag}\\_%");
    let mut admin = admin().await;
    let mut sweeps = 0;
    while !churn.is_finished() {
        sweep_leftovers(&mut admin, &like, "1 hour").await.unwrap();
        sweeps += 1;
    }
    churn.await.unwrap();
    assert!(sweeps > 0);
}
