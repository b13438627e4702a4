//! The page-cache wrapper (`store::sqlite_page_cache`) and the threading mode
//! (`store::sqlite_runtime`) through a real SQLite database.
//! A process of its own: SQLite takes both only before it initialises.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use diesel::sqlite::SqliteConnection;
use notifyhub::store::{sqlite_page_cache, sqlite_runtime, sqlite_wal_writes};

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn connect(path: &std::path::Path) -> SqliteConnection {
    sqlite_wal_writes::install();
    let mut conn = SqliteConnection::establish(&path.display().to_string()).unwrap();
    conn.batch_execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA cache_size = -16000;").unwrap();
    conn
}

fn rows(conn: &mut SqliteConnection) -> i64 {
    diesel::sql_query("SELECT count(*) AS n FROM t").get_result::<Count>(conn).unwrap().n
}

fn integrity(conn: &mut SqliteConnection) -> Vec<String> {
    diesel::dsl::sql::<Text>("PRAGMA integrity_check").load(conn).unwrap()
}

/// Inserts `n` rows whose indexed key is random, in one transaction: random keys split
/// pages in the middle of the index, where new pages come out of order and get swapped.
fn insert_random(conn: &mut SqliteConnection, n: i64) {
    conn.batch_execute(&format!(
        "BEGIN IMMEDIATE; \
         WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < {n}) \
         INSERT INTO t (key, body) SELECT hex(randomblob(16)), randomblob(300) FROM k; \
         COMMIT;"
    ))
    .unwrap();
}

/// Whether a new connection runs without its per-call mutex (multi-thread mode): in
/// serialized mode, `sqlite3_db_mutex` returns the mutex every call takes.
fn connections_lock_no_mutex() -> bool {
    use libsqlite3_sys as ffi;
    // SAFETY: opens an in-memory database, reads its mutex pointer and closes it.
    unsafe {
        let mut db = std::ptr::null_mut();
        let rc = ffi::sqlite3_open_v2(c":memory:".as_ptr(), &mut db, ffi::SQLITE_OPEN_READWRITE, std::ptr::null());
        let free = rc == ffi::SQLITE_OK && ffi::sqlite3_db_mutex(db).is_null();
        ffi::sqlite3_close(db);
        free
    }
}

#[test]
fn commits_after_page_swaps_skip_the_scan_and_the_database_stays_intact() {
    assert!(sqlite_runtime::configure(), "the threading mode must be set before SQLite initialises");
    assert!(sqlite_page_cache::install(), "the wrapper must be installed before SQLite initialises");
    assert!(connections_lock_no_mutex(), "connections still lock a mutex on every call");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.db");
    let mut conn = connect(&path);
    conn.batch_execute(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, key TEXT NOT NULL, body BLOB); CREATE INDEX t_key ON t (key);",
    )
    .unwrap();

    for _ in 0..40 {
        insert_random(&mut conn, 50);
    }
    assert!(sqlite_page_cache::scans_avoided() > 0, "no commit after a page swap was spared its scan");

    // A rolled-back transaction that grew the file: the pager drops the pages past the
    // old end, which the wrapper must pass on.
    conn.batch_execute(
        "BEGIN IMMEDIATE; \
         WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < 3000) \
         INSERT INTO t (key, body) SELECT hex(randomblob(16)), randomblob(300) FROM k; \
         ROLLBACK;",
    )
    .unwrap();
    insert_random(&mut conn, 50);
    assert_eq!(rows(&mut conn), 41 * 50);
    assert_eq!(integrity(&mut conn), vec!["ok".to_string()]);

    // Another connection sees the same, read through its own cache.
    let mut other = connect(&path);
    assert_eq!(rows(&mut other), 41 * 50);
    drop(conn);
    assert_eq!(integrity(&mut other), vec!["ok".to_string()]);
}
