//! Storage on SQLite (embedded default) or PostgreSQL (production, several nodes),
//! chosen at run time from `DATABASE_URL`.
//!
//! diesel-async has no runtime multi-backend connection, so [`Db`] is a small enum over
//! the two pools and [`with_conn!`](crate::with_conn) the one dispatch point: each query
//! is written once and type-checked against both backends. Everything here returns
//! [`StoreError`]; only the persistence actor runs these futures (see
//! `actors::persistence` for why).

/// Writes `bind, bind, …`, one bind per `sql type => value` (in a `walk_ast` of the
/// batch statements, see `pg_batch` and `sqlite_batch`).
macro_rules! push_binds {
    ($out:ident, $($st:ty => $value:expr),+ $(,)?) => {{
        let mut first = true;
        $(
            if !std::mem::take(&mut first) {
                $out.push_sql(", ");
            }
            $out.push_bind_param::<$st, _>($value)?;
        )+
    }};
}

/// Gives each of these statement types (with one lifetime) a query id of its own, so
/// diesel prepares it once per connection.
macro_rules! static_query_id {
    ($($t:ident),+ $(,)?) => {
        $(
            impl diesel::query_builder::QueryId for $t<'_> {
                type QueryId = $t<'static>;
                const HAS_STATIC_QUERY_ID: bool = true;
            }
        )+
    };
}

pub mod bridge;
pub mod json;
pub mod outbox;
mod pg_batch;
pub use pg_batch::notify_nodes;
pub mod preferences_doc;
pub mod repository;
pub mod schema;
mod sqlite_batch;
pub mod sqlite_checkpoint;
pub mod sqlite_counters;
pub mod sqlite_page_cache;
pub mod sqlite_runtime;
pub mod sqlite_wal_writes;

use crate::config::DatabaseUrl;
use diesel::result::{ConnectionError, DatabaseErrorKind};
use diesel::sqlite::SqliteConnection;
use diesel::Connection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig, PoolError, RecyclingMethod};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use std::time::Duration;

/// SQLite migrations, embedded in the binary.
pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
/// PostgreSQL migrations, embedded in the binary.
pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Per-connection SQLite settings: WAL so readers never wait for the writer, a busy
/// timeout instead of instant `SQLITE_BUSY`, enforced foreign keys, and no checkpoints
/// inside commits (see [`sqlite_checkpoint`]). The log file keeps the size it reached
/// (up to 512 MiB) when it starts over: cut back to 64 MiB after each round, it
/// re-allocated its blocks on every pass, 6 % of the hub's CPU per message under load.
const SQLITE_PRAGMAS: &str =
    "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
     PRAGMA cache_size = -16000; PRAGMA temp_store = MEMORY; PRAGMA wal_autocheckpoint = 0; \
     PRAGMA journal_size_limit = 536870912;";

/// A pooled async SQLite connection.
pub type SqliteConn = SyncConnectionWrapper<SqliteConnection>;
/// Pool of SQLite connections.
pub type SqlitePool = bb8::Pool<AsyncDieselConnectionManager<SqliteConn>>;
/// Pool of PostgreSQL connections.
pub type PgPool = bb8::Pool<AsyncDieselConnectionManager<AsyncPgConnection>>;

/// The embedded database: its pool, and the per-user counters its writer thread numbers
/// from (see [`sqlite_counters`]).
#[derive(Clone)]
pub struct SqliteDb {
    /// Connections for everything but the group commit.
    pub pool: SqlitePool,
    /// Shared with the writer thread.
    pub counters: std::sync::Arc<sqlite_counters::UserCounters>,
}

/// The database, whichever backend it is.
#[derive(Clone)]
pub enum Db {
    /// Embedded SQLite.
    Sqlite(SqliteDb),
    /// PostgreSQL.
    Postgres(PgPool),
}

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached (retryable).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A query failed.
    #[error("query failed: {0}")]
    Query(diesel::result::Error),
    /// A stored value cannot be decoded.
    #[error("stored data cannot be read: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// This error for one more of the callers a shared read or write failed for: still
    /// retryable when it was, its message kept (a query's error cannot be copied).
    pub fn for_another_caller(&self) -> StoreError {
        match self {
            StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
            StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
            StoreError::Query(_) => StoreError::Corrupt(self.to_string()),
        }
    }
}

impl From<diesel::result::Error> for StoreError {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::Error as E;
        match &e {
            E::DatabaseError(DatabaseErrorKind::ClosedConnection, _) | E::BrokenTransactionManager => {
                StoreError::Unavailable(e.to_string())
            }
            E::DatabaseError(_, info) if is_transient(info.message()) => StoreError::Unavailable(e.to_string()),
            _ => StoreError::Query(e),
        }
    }
}

fn is_transient(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("database is locked")
        || m.contains("connection")
        || m.contains("terminating")
        || m.contains("shutting down")
}

impl From<bb8::RunError<PoolError>> for StoreError {
    fn from(e: bb8::RunError<PoolError>) -> Self {
        match e {
            bb8::RunError::TimedOut => StoreError::Unavailable("timed out waiting for a connection".into()),
            bb8::RunError::User(inner) => StoreError::Unavailable(inner.to_string()),
        }
    }
}

impl From<PoolError> for StoreError {
    fn from(e: PoolError) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

impl From<ConnectionError> for StoreError {
    fn from(e: ConnectionError) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

/// Runs `$body` with `$conn` bound to a pooled connection of whichever backend `$db` is.
/// The body is compiled once per backend, so each query is written once.
#[macro_export]
macro_rules! with_conn {
    ($db:expr, $conn:ident => $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite(sqlite) => {
                let mut pooled = sqlite.pool.get().await.map_err($crate::store::StoreError::from)?;
                let $conn = &mut *pooled;
                $body
            }
            $crate::store::Db::Postgres(pool) => {
                let mut pooled = pool.get().await.map_err($crate::store::StoreError::from)?;
                let $conn = &mut *pooled;
                $body
            }
        }
    };
}

impl Db {
    /// Builds the pool. Must run on the runtime that will use it: PostgreSQL connections
    /// spawn their I/O task on the current runtime.
    pub async fn connect(url: &DatabaseUrl, pool_size: u32) -> Result<Db, StoreError> {
        match url {
            DatabaseUrl::Sqlite(path) => {
                ensure_parent_dir(path)?;
                sqlite_wal_writes::install();
                let mut cfg = ManagerConfig::<SqliteConn>::default();
                cfg.recycling_method = RecyclingMethod::Fast;
                cfg.custom_setup = Box::new(|url| {
                    Box::pin(async move {
                        let mut conn = SqliteConn::establish(url).await?;
                        conn.batch_execute(SQLITE_PRAGMAS).await.map_err(ConnectionError::CouldntSetupConfiguration)?;
                        Ok(conn)
                    })
                });
                let mgr = AsyncDieselConnectionManager::new_with_config(path.display().to_string(), cfg);
                let pool = pool_builder(pool_size).build(mgr).await?;
                Ok(Db::Sqlite(SqliteDb { pool, counters: sqlite_counters::UserCounters::for_database(path) }))
            }
            DatabaseUrl::Postgres(url) => {
                let mut cfg = ManagerConfig::<AsyncPgConnection>::default();
                cfg.recycling_method = RecyclingMethod::Fast;
                cfg.custom_setup = Box::new(|url| {
                    Box::pin(async move {
                        let mut conn = AsyncPgConnection::establish(url).await?;
                        conn.batch_execute("SET statement_timeout = '30s'; SET TIME ZONE 'UTC';")
                            .await
                            .map_err(ConnectionError::CouldntSetupConfiguration)?;
                        Ok(conn)
                    })
                });
                let mgr = AsyncDieselConnectionManager::new_with_config(url.clone(), cfg);
                let pool = pool_builder(pool_size).build(mgr).await?;
                Ok(Db::Postgres(pool))
            }
        }
    }

    /// SQLite's per-user counters, which whatever changes a user's counters must forget
    /// the user from (`None` on PostgreSQL).
    pub fn sqlite_counters(&self) -> Option<&sqlite_counters::UserCounters> {
        match self {
            Db::Sqlite(sqlite) => Some(&sqlite.counters),
            Db::Postgres(_) => None,
        }
    }

    /// Which backend, for logs and metrics.
    pub fn backend_name(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// A round trip to the database.
    pub async fn ping(&self) -> Result<(), StoreError> {
        with_conn!(self, conn => {
            conn.batch_execute("SELECT 1").await.map_err(StoreError::from)
        })
    }
}

fn pool_builder<M: bb8::ManageConnection>(size: u32) -> bb8::Builder<M> {
    bb8::Pool::builder()
        .max_size(size)
        .min_idle(Some(1))
        .connection_timeout(Duration::from_secs(3))
        // A checkout ping would double the round trips; a broken connection is
        // detected by the query that uses it and dropped by the pool.
        .test_on_check_out(false)
        // The connection used last is the one handed out next: a few backends do the
        // work with their caches warm. First-in-first-out sent the batches of a
        // PostgreSQL ingest round a dozen backends.
        .queue_strategy(bb8::QueueStrategy::Lifo)
}

fn ensure_parent_dir(path: &std::path::Path) -> Result<(), StoreError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| StoreError::Unavailable(format!("cannot create {}: {e}", parent.display())))?;
    }
    Ok(())
}

/// A plain (blocking) SQLite connection with the pool's settings, for a thread that
/// keeps one of its own (migrations, the batch writer).
pub fn open_sqlite(path: &std::path::Path) -> Result<SqliteConnection, StoreError> {
    ensure_parent_dir(path)?;
    sqlite_wal_writes::install();
    let mut conn = SqliteConnection::establish(&path.display().to_string())?;
    diesel::connection::SimpleConnection::batch_execute(&mut conn, SQLITE_PRAGMAS)?;
    Ok(conn)
}

/// Applies pending migrations; returns the versions applied. Blocking: call it from a
/// plain thread (see [`run_migrations`]).
pub fn run_migrations_blocking(url: &DatabaseUrl) -> Result<Vec<String>, StoreError> {
    let applied = match url {
        DatabaseUrl::Sqlite(path) => {
            let mut conn = open_sqlite(path)?;
            conn.run_pending_migrations(SQLITE_MIGRATIONS)
                .map_err(|e| StoreError::Corrupt(format!("migration failed: {e}")))?
                .into_iter()
                .map(|v| v.to_string())
                .collect()
        }
        DatabaseUrl::Postgres(url) => {
            let mut conn: AsyncConnectionWrapper<AsyncPgConnection> = Connection::establish(url)?;
            // Two nodes starting together must not both migrate.
            diesel::connection::SimpleConnection::batch_execute(&mut conn, "SELECT pg_advisory_lock(727274)")?;
            let result = conn
                .run_pending_migrations(POSTGRES_MIGRATIONS)
                .map(|v| v.into_iter().map(|v| v.to_string()).collect::<Vec<_>>())
                .map_err(|e| StoreError::Corrupt(format!("migration failed: {e}")));
            let _ = diesel::connection::SimpleConnection::batch_execute(&mut conn, "SELECT pg_advisory_unlock(727274)");
            result?
        }
    };
    Ok(applied)
}

/// Applies pending migrations from an async context. The blocking work runs on its own
/// thread, outside any runtime: diesel's harness blocks, which actix's current-thread
/// runtimes do not allow.
pub async fn run_migrations(url: &DatabaseUrl) -> Result<Vec<String>, StoreError> {
    let url = url.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("notifyhub-migrate".into())
        .spawn(move || {
            let _ = tx.send(run_migrations_blocking(&url));
        })
        .map_err(|e| StoreError::Unavailable(format!("cannot start migration thread: {e}")))?;
    rx.await.map_err(|_| StoreError::Corrupt("migration thread died".into()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_handed_to_more_callers_stays_retryable_when_it_was() {
        let down = StoreError::Unavailable("connection refused".into()).for_another_caller();
        assert!(matches!(&down, StoreError::Unavailable(m) if m == "connection refused"), "{down:?}");
        let bad = StoreError::Corrupt("user id x".into()).for_another_caller();
        assert!(matches!(&bad, StoreError::Corrupt(m) if m == "user id x"), "{bad:?}");
        let query = StoreError::Query(diesel::result::Error::NotFound).for_another_caller();
        assert!(matches!(&query, StoreError::Corrupt(m) if m == "query failed: Record not found"), "{query:?}");
    }
}
