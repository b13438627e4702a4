//! One `pwrite` per commit to SQLite's write-ahead log instead of two per page.
//!
//! SQLite writes each WAL frame as two writes, its 24-byte header and then the page, and
//! as frames are 24 bytes longer than pages each page straddles two pages of the file:
//! a commit of N pages cost 2N system calls and about 3N page-cache operations, ~15 % of
//! the hub's CPU on the user-targeted benchmark. This VFS wraps the default one and, for
//! WAL files only, gathers the frames a transaction appends and writes them with one
//! `pwrite` (per 128 KiB, the most the default VFS writes at once) when the commit frame
//! is complete. That is inside SQLite's write of the commit frame, before it publishes
//! the commit in the WAL index, so another connection never reads a frame that is not in
//! the file, and a failed write fails the commit.
//!
//! What is held back, and until when (see `wal.c`, `walFrames`):
//! - frames appended one after the other; the group is written when the page of the
//!   commit frame (a header whose "database size" field is not zero) arrives;
//! - a transaction's frames spilled before its commit (a large transaction) until the
//!   next write elsewhere in the file or any other call on the file;
//! - never a commit header that does not continue the group (a one-page commit, or a
//!   header rewritten with a new checksum after the pages), nor the page right after it:
//!   those go straight to the file, so nothing is pending once `walFrames` returns.
//!
//! Every other method on the log file (read, sync, truncate, size, close) writes what is
//! pending first, so the file is always what SQLite would have written by the time this
//! handle looks at it; if that write fails, the method fails with `SQLITE_IOERR_WRITE`,
//! which makes SQLite roll the whole transaction back (a "disk full" there would only
//! undo the current statement, and the transaction could commit without its frames).
//!
//! The hub must be the only process writing the database (it takes a lock file to that
//! end): the bookkeeping below sees the handles of this process only.
//!
//! One case needs more care: frames spilled by a transaction that then rolls back stay
//! pending on that connection's handle (a rollback does not touch the log file), while
//! the next writer, on another connection, writes its own frames at the same offsets.
//! Written later, the stale frames would overwrite a committed transaction (or, worse,
//! make the next writer's own group look stale). So a counter shared by all handles on a
//! log moves whenever a handle starts a group or writes, and a group is written (or
//! extended) only while the counter is where it was when the group started: only the
//! holder of SQLite's write lock writes the log, so the counter moving under a pending
//! group means the transaction that gathered it has ended, and had it committed the
//! group would have been written already. Such a group is dropped.

use libsqlite3_sys as ffi;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

/// Bytes of a WAL frame header.
const FRAME_HEADER: usize = 24;

/// Pending bytes past which a group is written without waiting for its commit (a
/// broadcast to thousands of users commits tens of MB).
const MAX_PENDING: usize = 1 << 20;

#[cfg(test)]
thread_local! {
    /// `pwrite`s this thread made to WAL files (the tests count them).
    static WAL_WRITES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The default VFS this one wraps.
struct Inner(*mut ffi::sqlite3_vfs);
// SAFETY: a registered VFS is immutable and lives for the whole process.
unsafe impl Send for Inner {}
unsafe impl Sync for Inner {}

static INNER: OnceLock<Inner> = OnceLock::new();

/// A WAL file: our methods, the default VFS's file right after it in the same
/// allocation, and what is held back.
#[repr(C)]
struct WalFile {
    base: ffi::sqlite3_file,
    real: *mut ffi::sqlite3_file,
    /// Writes made to this log by any handle (see the module notes).
    log: Arc<Mutex<u64>>,
    pending: Pending,
}

/// The write counter of each open log, by file name.
static LOGS: Mutex<Option<HashMap<String, Weak<Mutex<u64>>>>> = Mutex::new(None);

fn log_counter(name: String) -> Arc<Mutex<u64>> {
    let mut logs = LOGS.lock().unwrap_or_else(|p| p.into_inner());
    let logs = logs.get_or_insert_with(HashMap::new);
    logs.retain(|_, w| w.strong_count() > 0);
    if let Some(counter) = logs.get(&name).and_then(Weak::upgrade) {
        return counter;
    }
    let counter = Arc::new(Mutex::new(0));
    logs.insert(name, Arc::downgrade(&counter));
    counter
}

fn lock_counter(counter: &Mutex<u64>) -> MutexGuard<'_, u64> {
    counter.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Default)]
struct Pending {
    start: i64,
    data: Vec<u8>,
    /// The log's write counter when the first pending byte was gathered.
    generation: u64,
    /// The last write held back was a commit frame's header: its page completes it.
    commit_page_next: bool,
    /// Where the page of a commit header written straight to the file starts.
    direct_page_at: Option<i64>,
}

impl Pending {
    fn end(&self) -> i64 {
        self.start + self.data.len() as i64
    }
}

/// Where the default VFS's file starts inside ours (8-byte aligned).
const REAL_OFFSET: usize = std::mem::size_of::<WalFile>().next_multiple_of(8);

/// Makes this VFS the process's default (once; later calls do nothing). Call before
/// opening a SQLite connection.
pub fn install() {
    static INSTALLED: OnceLock<c_int> = OnceLock::new();
    let rc = *INSTALLED.get_or_init(|| {
        // Before the VFS lookup below, which initialises SQLite.
        if !super::sqlite_runtime::configure() {
            tracing::debug!("SQLite was initialised before its threading mode could be set");
        }
        if !super::sqlite_page_cache::install() {
            tracing::debug!("SQLite was initialised before its page cache could be wrapped");
        }
        // SAFETY: sqlite3_vfs_find with NULL returns the default VFS, which lives for
        // the whole process; the copy is leaked so it does too.
        unsafe {
            let inner = ffi::sqlite3_vfs_find(std::ptr::null());
            if inner.is_null() {
                return ffi::SQLITE_ERROR;
            }
            let _ = INNER.set(Inner(inner));
            let mut vfs: ffi::sqlite3_vfs = std::ptr::read(inner);
            vfs.szOsFile = (REAL_OFFSET + (*inner).szOsFile as usize) as c_int;
            vfs.zName = c"notifyhub-wal".as_ptr() as *const c_char;
            vfs.pNext = std::ptr::null_mut();
            vfs.xOpen = Some(open);
            ffi::sqlite3_vfs_register(Box::leak(Box::new(vfs)), 1)
        }
    });
    if rc != ffi::SQLITE_OK {
        tracing::warn!(code = rc, "SQLite WAL write coalescing unavailable; using the default VFS");
    }
}

fn inner() -> *mut ffi::sqlite3_vfs {
    INNER.get().map_or(std::ptr::null_mut(), |i| i.0)
}

unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let inner = inner();
    let Some(inner_open) = (*inner).xOpen else { return ffi::SQLITE_ERROR };
    if flags & ffi::SQLITE_OPEN_WAL == 0 {
        // Not a log: the default VFS's file, in place (ours is larger, that is all).
        return inner_open(inner, name, file, flags, out_flags);
    }
    let wal = file as *mut WalFile;
    let real = (file as *mut u8).add(REAL_OFFSET) as *mut ffi::sqlite3_file;
    (*wal).base.pMethods = std::ptr::null();
    let rc = inner_open(inner, name, real, flags, out_flags);
    if rc != ffi::SQLITE_OK {
        return rc;
    }
    let path = if name.is_null() { String::new() } else { CStr::from_ptr(name).to_string_lossy().into_owned() };
    std::ptr::addr_of_mut!((*wal).real).write(real);
    std::ptr::addr_of_mut!((*wal).log).write(log_counter(path));
    std::ptr::addr_of_mut!((*wal).pending).write(Pending::default());
    (*wal).base.pMethods = &WAL_METHODS;
    ffi::SQLITE_OK
}

unsafe fn real_methods(wal: *mut WalFile) -> &'static ffi::sqlite3_io_methods {
    &*(*(*wal).real).pMethods
}

/// Largest write the default VFS takes in one call (`seekAndWriteFd` masks the length
/// with `0x1ffff`, and a write of 128 KiB or more fails as "disk full").
const MAX_WRITE: usize = 0x1ffff;

unsafe fn write_through(wal: *mut WalFile, data: *const c_void, amount: usize, offset: i64) -> c_int {
    let Some(write) = real_methods(wal).xWrite else { return ffi::SQLITE_IOERR_WRITE };
    let mut done = 0;
    while done < amount {
        let len = (amount - done).min(MAX_WRITE);
        #[cfg(test)]
        WAL_WRITES.set(WAL_WRITES.get() + 1);
        let rc = write((*wal).real, (data as *const u8).add(done) as *const c_void, len as c_int, offset + done as i64);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        done += len;
    }
    ffi::SQLITE_OK
}

/// Writes what is held back (or drops it when stale, see the module notes), then
/// `then` if given, under the log's counter so no other handle writes in between.
unsafe fn flush_then(wal: *mut WalFile, then: Option<(*const c_void, usize, i64)>) -> c_int {
    let pending = &mut (*wal).pending;
    pending.commit_page_next = false;
    if pending.data.is_empty() && then.is_none() {
        return ffi::SQLITE_OK;
    }
    let log = (*wal).log.clone();
    let mut writes = lock_counter(&log);
    let mut rc = ffi::SQLITE_OK;
    if !pending.data.is_empty() {
        if pending.generation == *writes {
            let data = std::mem::take(&mut pending.data);
            rc = write_through(wal, data.as_ptr() as *const c_void, data.len(), pending.start);
            // Keep the allocation for the next group.
            (*wal).pending.data = data;
            *writes += 1;
        }
        (*wal).pending.data.clear();
    }
    if rc == ffi::SQLITE_OK {
        if let Some((data, amount, offset)) = then {
            rc = write_through(wal, data, amount, offset);
            *writes += 1;
        }
    }
    rc
}

/// Writes what is held back.
unsafe fn flush(wal: *mut WalFile) -> c_int {
    flush_then(wal, None)
}

unsafe extern "C" fn write(file: *mut ffi::sqlite3_file, data: *const c_void, amount: c_int, offset: i64) -> c_int {
    let wal = file as *mut WalFile;
    let amount = amount.max(0) as usize;
    let bytes = std::slice::from_raw_parts(data as *const u8, amount);
    if (*wal).pending.direct_page_at.take() == Some(offset) {
        // The page of a commit frame whose header went straight to the file.
        return flush_then(wal, Some((data, amount, offset)));
    }
    // A group continues only if no other handle started one since (else it is stale).
    let continues = !(*wal).pending.data.is_empty()
        && offset == (*wal).pending.end()
        && (*wal).pending.generation == *lock_counter(&(*wal).log);
    let commit_header = amount == FRAME_HEADER && bytes[4..8] != [0, 0, 0, 0];
    if !continues && commit_header {
        (*wal).pending.direct_page_at = Some(offset + FRAME_HEADER as i64);
        return flush_then(wal, Some((data, amount, offset)));
    }
    if !continues {
        let rc = flush(wal);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        // Only the holder of SQLite's write lock writes the log, so starting a group makes
        // every group pending on other handles stale: they belong to transactions that
        // have ended without committing.
        let mut writes = lock_counter(&(*wal).log);
        *writes += 1;
        (*wal).pending.generation = *writes;
        (*wal).pending.start = offset;
    }
    let pending = &mut (*wal).pending;
    pending.data.extend_from_slice(bytes);
    if pending.commit_page_next {
        return flush(wal);
    }
    pending.commit_page_next = commit_header;
    // A commit header waits for its page whatever the size, so the commit is complete
    // in the file when its page's write returns.
    if !commit_header && pending.data.len() >= MAX_PENDING {
        return flush(wal);
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    let wal = file as *mut WalFile;
    let flushed = flush(wal);
    let closed = match real_methods(wal).xClose {
        Some(close) => close((*wal).real),
        None => ffi::SQLITE_OK,
    };
    std::ptr::drop_in_place(std::ptr::addr_of_mut!((*wal).pending));
    std::ptr::drop_in_place(std::ptr::addr_of_mut!((*wal).log));
    (*wal).base.pMethods = std::ptr::null();
    if flushed != ffi::SQLITE_OK {
        ffi::SQLITE_IOERR_WRITE
    } else {
        closed
    }
}

/// Defines a method that writes what is pending, then forwards to the default VFS.
macro_rules! flushing {
    ($name:ident, $field:ident, ($($arg:ident: $ty:ty),*)) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> c_int {
            let wal = file as *mut WalFile;
            if flush(wal) != ffi::SQLITE_OK {
                return ffi::SQLITE_IOERR_WRITE;
            }
            match real_methods(wal).$field {
                Some(f) => f((*wal).real $(, $arg)*),
                // The default VFS has every method; a wrapped one without it cannot do it.
                None => ffi::SQLITE_ERROR,
            }
        }
    };
}

flushing!(read, xRead, (data: *mut c_void, amount: c_int, offset: i64));
flushing!(truncate, xTruncate, (size: i64));
flushing!(sync, xSync, (flags: c_int));
flushing!(file_size, xFileSize, (size: *mut i64));
flushing!(lock, xLock, (level: c_int));
flushing!(unlock, xUnlock, (level: c_int));
flushing!(check_reserved_lock, xCheckReservedLock, (out: *mut c_int));
flushing!(file_control, xFileControl, (op: c_int, arg: *mut c_void));
flushing!(shm_map, xShmMap, (page: c_int, size: c_int, extend: c_int, out: *mut *mut c_void));
flushing!(shm_lock, xShmLock, (offset: c_int, n: c_int, flags: c_int));
flushing!(shm_unmap, xShmUnmap, (delete: c_int));
flushing!(fetch, xFetch, (offset: i64, amount: c_int, out: *mut *mut c_void));
flushing!(unfetch, xUnfetch, (offset: i64, page: *mut c_void));

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    let wal = file as *mut WalFile;
    real_methods(wal).xSectorSize.map_or(4096, |f| f((*wal).real))
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    let wal = file as *mut WalFile;
    real_methods(wal).xDeviceCharacteristics.map_or(0, |f| f((*wal).real))
}

unsafe extern "C" fn shm_barrier(file: *mut ffi::sqlite3_file) {
    let wal = file as *mut WalFile;
    let _ = flush(wal);
    if let Some(f) = real_methods(wal).xShmBarrier {
        f((*wal).real)
    }
}

static WAL_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

#[cfg(test)]
mod tests {
    use super::*;

    /// `pwrite`s this thread made to WAL files so far.
    fn wal_writes() -> u64 {
        WAL_WRITES.get()
    }
    use diesel::connection::SimpleConnection;
    use diesel::prelude::*;
    use diesel::sql_types::BigInt;
    use diesel::sqlite::SqliteConnection;

    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }

    fn connect(path: &std::path::Path) -> SqliteConnection {
        install();
        let mut conn = SqliteConnection::establish(&path.display().to_string()).unwrap();
        conn.batch_execute(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0; \
             PRAGMA busy_timeout = 5000;",
        )
        .unwrap();
        conn
    }

    fn count(conn: &mut SqliteConnection) -> i64 {
        diesel::sql_query("SELECT count(*) AS n FROM t").get_result::<Count>(conn).unwrap().n
    }

    /// A new database in `dir` with table `t`, and a connection to it.
    fn create(dir: &tempfile::TempDir, name: &str) -> (std::path::PathBuf, SqliteConnection) {
        let path = dir.path().join(name);
        let mut conn = connect(&path);
        conn.batch_execute("CREATE TABLE t (k INTEGER PRIMARY KEY, i INTEGER, v BLOB);").unwrap();
        (path, conn)
    }

    /// Reopens the database (recovering from the log alone when no checkpoint ran) and
    /// checks its rows and its integrity.
    fn assert_intact(path: &std::path::Path, rows: i64) {
        let mut reopened = connect(path);
        assert_eq!(count(&mut reopened), rows);
        let check: Vec<String> =
            diesel::dsl::sql::<diesel::sql_types::Text>("PRAGMA integrity_check").load(&mut reopened).unwrap();
        assert_eq!(check, vec!["ok".to_string()]);
    }

    /// Opens a write transaction that inserts rows `first..=last` (~1 KiB each, appended)
    /// through a 20-page cache, so that it spills frames to the log before any commit.
    fn insert_spilling(conn: &mut SqliteConnection, first: i64, last: i64) {
        conn.batch_execute(&format!(
            "PRAGMA cache_size = 20; BEGIN IMMEDIATE; \
             WITH RECURSIVE k(i) AS (SELECT {first} UNION ALL SELECT i + 1 FROM k WHERE i < {last}) \
             INSERT INTO t SELECT i, i, randomblob(1000) FROM k;"
        ))
        .unwrap();
    }

    /// Commits `rows` rows of ~1 KiB on scattered keys (about a page each), returning the
    /// WAL writes it took.
    fn commit_rows(conn: &mut SqliteConnection, first: i64, rows: i64) -> u64 {
        let before = wal_writes();
        conn.batch_execute(&format!(
            "BEGIN IMMEDIATE; \
             WITH RECURSIVE k(i) AS (SELECT {first} UNION ALL SELECT i + 1 FROM k WHERE i < {last}) \
             INSERT INTO t SELECT (i * 7919) % 1000003, i, randomblob(1000) FROM k; COMMIT;",
            last = first + rows - 1
        ))
        .unwrap();
        wal_writes() - before
    }

    #[test]
    fn a_commit_of_many_pages_is_one_write_and_every_reader_sees_it() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut writer) = create(&dir, "wal.db");
        let mut reader = connect(&path);
        assert_eq!(count(&mut reader), 0);

        // ~100 pages: without coalescing, 200 writes.
        let writes = commit_rows(&mut writer, 1, 100);
        assert!(writes <= 5, "{writes} WAL writes for one 100-page commit");
        assert_eq!(count(&mut reader), 100, "another connection reads the commit at once");

        // A one-row commit (header and page straight to the file) is seen too.
        commit_rows(&mut writer, 101, 1);
        assert_eq!(count(&mut reader), 101);

        // A transaction larger than the pending bound, and one that spills to the log
        // before its commit (a 50-page cache).
        commit_rows(&mut writer, 1000, 3000);
        writer.batch_execute("PRAGMA cache_size = 50;").unwrap();
        commit_rows(&mut writer, 10_000, 2000);
        assert_eq!(count(&mut reader), 5101);

        // Rows rewritten within a transaction (frames overwritten in place).
        writer
            .batch_execute("BEGIN IMMEDIATE; UPDATE t SET v = randomblob(1000) WHERE i <= 50; UPDATE t SET v = randomblob(1000) WHERE i <= 50; COMMIT;")
            .unwrap();
        // A rolled-back transaction leaves nothing.
        writer.batch_execute("BEGIN IMMEDIATE; DELETE FROM t; ROLLBACK;").unwrap();
        assert_eq!(count(&mut reader), 5101);
        drop(reader);
        drop(writer);

        // Recovery from the log alone (no checkpoint ran): the frames and their
        // checksums are all in the file.
        assert_intact(&path, 5101);
    }

    #[test]
    fn frames_spilled_by_a_rolled_back_transaction_never_overwrite_a_later_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut a) = create(&dir, "rollback.db");
        commit_rows(&mut a, 1, 10);
        let mut b = connect(&path);
        // A spills frames to the log (a 20-page cache, ~60 pages of rows), then rolls
        // back: the spilled frames stay pending on its handle. (With the log emptied
        // first, the rollback reads the pages it undoes from the database file, not
        // through the log handle.)
        a.batch_execute("PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
        let before = wal_writes();
        insert_spilling(&mut a, 1000, 1200);
        a.batch_execute("ROLLBACK;").unwrap();
        assert!(wal_writes() - before < 10, "the spilled frames were held back");
        // B commits frames at the same offsets of the log.
        commit_rows(&mut b, 100, 50);
        // A touches its log handle again (reads through it).
        assert_eq!(count(&mut a), 60);
        drop(a);
        drop(b);
        assert_intact(&path, 60);
    }

    #[test]
    fn a_stale_handle_flushing_during_another_transaction_does_not_drop_its_frames() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut a) = create(&dir, "interleaved.db");
        commit_rows(&mut a, 1, 10);
        a.batch_execute("PRAGMA wal_checkpoint(TRUNCATE); UPDATE t SET v = zeroblob(10) WHERE i = 1;").unwrap();
        // A reader keeps the log from starting over, so writers append after its frames.
        let mut c = connect(&path);
        c.batch_execute("BEGIN;").unwrap();
        assert_eq!(count(&mut c), 10);
        let mut b = connect(&path);
        // A is left holding frames of a rolled-back transaction...
        insert_spilling(&mut a, 1000, 1200);
        a.batch_execute("ROLLBACK;").unwrap();
        // ...B gathers frames at the same offsets, in a transaction still open...
        insert_spilling(&mut b, 2000, 2150);
        // ...A's handle is closed (its stale frames must neither be written over B's nor
        // make B's be dropped)...
        drop(a);
        // ...and B commits.
        b.batch_execute("COMMIT;").unwrap();
        c.batch_execute("COMMIT;").unwrap();
        assert_eq!(count(&mut c), 161);
        drop(b);
        drop(c);
        assert_intact(&path, 161);
    }

    #[test]
    fn the_log_starts_over_after_a_checkpoint_and_stays_readable() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut writer) = create(&dir, "restart.db");
        let mut reader = connect(&path);
        for round in 0..5 {
            commit_rows(&mut writer, round * 100 + 1, 100);
            writer.batch_execute("PRAGMA wal_checkpoint(RESTART);").unwrap();
            assert_eq!(count(&mut reader), (round + 1) * 100);
        }
        drop(writer);
        drop(reader);
        assert_intact(&path, 500);
    }
}
