//! `passerelle migrate`: create the database if needed, then apply the embedded migrations.
//! (Also the demo's and the benchmark's [`drop_database`], to start them afresh.)
//!
//! Safe to run twice (applied migrations are skipped) and from two processes at once (sqlx
//! holds a Postgres advisory lock while migrating; a concurrent `CREATE DATABASE` that loses
//! the race is treated as success). A database whose applied migrations differ from the
//! binary's (edited, or applied by a newer release) is refused.

use crate::StoreError;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use std::str::FromStr;

/// The migrations in `migrations/`, embedded at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// The database `url` names, and a connection to the server's `postgres` database to create
/// or drop it from.
async fn admin_connection(url: &str) -> Result<(String, PgConnection), StoreError> {
    let options =
        PgConnectOptions::from_str(url).map_err(|e| StoreError::InvalidUrl(e.to_string()))?;
    let name = options
        .get_database()
        .ok_or_else(|| StoreError::InvalidUrl("the URL names no database".into()))?
        .to_owned();
    let admin = options.database("postgres").connect().await?;
    Ok((name, admin))
}

/// Creates the database named in `url` when it does not exist. Returns whether it created it.
pub async fn ensure_database(url: &str) -> Result<bool, StoreError> {
    let (name, mut admin) = admin_connection(url).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
    if exists {
        admin.close().await?;
        return Ok(false);
    }
    let statement = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
    let created = match sqlx::query(sqlx::AssertSqlSafe(statement))
        .execute(&mut admin)
        .await
    {
        Ok(_) => true,
        // 42P04 duplicate_database, or 23505 when two CREATEs race on pg_database's unique index:
        // another process created it between our check and our CREATE, which is what we wanted.
        Err(sqlx::Error::Database(e)) if matches!(e.code().as_deref(), Some("42P04" | "23505")) => {
            false
        }
        Err(e) => return Err(e.into()),
    };
    admin.close().await?;
    Ok(created)
}

/// Drops the database named in `url`, if it exists, disconnecting its sessions first (`WITH
/// (FORCE)`): the demo and the benchmark start from an empty database every time.
pub async fn drop_database(url: &str) -> Result<(), StoreError> {
    let (name, mut admin) = admin_connection(url).await?;
    let statement = format!(
        "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
        name.replace('"', "\"\"")
    );
    sqlx::query(sqlx::AssertSqlSafe(statement))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    Ok(())
}

/// Applies pending migrations, refusing a database whose history differs from the binary's.
/// Returns the versions this call applied.
pub async fn migrate(pool: &PgPool) -> Result<Vec<i64>, StoreError> {
    let mut conn = pool.acquire().await?;
    // Hold our own session lock around "what was applied before, apply, what is applied now",
    // so that each of several concurrent `migrate` processes reports only what it applied.
    // (sqlx takes its own advisory lock inside `run`; session locks are re-entrant.)
    sqlx::query("SELECT pg_advisory_lock(hashtextextended('passerelle.migrate', 0))")
        .execute(&mut *conn)
        .await?;
    let result = async {
        let before = applied_versions(&mut conn).await?;
        MIGRATOR.run(&mut *conn).await.map_err(|e| match e {
            MigrateError::VersionMissing(v) => StoreError::MigrationMismatch {
                detail: format!(
                    "migration {v} is applied in the database but unknown to this binary (a newer release migrated it?)"
                ),
            },
            MigrateError::VersionMismatch(v) => StoreError::MigrationMismatch {
                detail: format!(
                    "migration {v} was applied with different contents than this binary's"
                ),
            },
            MigrateError::Dirty(v) => StoreError::MigrationMismatch {
                detail: format!("migration {v} was left partially applied by an earlier failure"),
            },
            other => StoreError::Migration(other.to_string()),
        })?;
        let after = applied_versions(&mut conn).await?;
        Ok(after.into_iter().filter(|v| !before.contains(v)).collect())
    }
    .await;
    sqlx::query("SELECT pg_advisory_unlock(hashtextextended('passerelle.migrate', 0))")
        .execute(&mut *conn)
        .await?;
    result
}

async fn applied_versions(conn: &mut PgConnection) -> Result<Vec<i64>, StoreError> {
    let table_exists: bool =
        sqlx::query_scalar("SELECT to_regclass('public._sqlx_migrations') IS NOT NULL")
            .fetch_one(&mut *conn)
            .await?;
    if !table_exists {
        return Ok(Vec::new());
    }
    Ok(
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&mut *conn)
            .await?,
    )
}
