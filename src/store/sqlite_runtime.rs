//! Process-wide SQLite settings, which SQLite takes only before it initialises.
//!
//! - **Multi-thread mode** instead of the bundled build's serialized mode. Serialized
//!   mode locks a connection's mutex on every call (each bind, step and reset), so
//!   that two threads may share one connection. Ours never do: diesel's connection is
//!   not `Sync`, the pool hands it to one task at a time, and the checkpoint thread
//!   opens its own. The process-wide mutexes (page cache, VFS list) stay.
//! - **No memory statistics**: with them on, every allocation SQLite makes takes a
//!   process-wide mutex to keep counts nobody reads here.
//!
//! [`configure`] must run before anything else touches SQLite, as the page cache
//! wrapper must (`sqlite_wal_writes::install` calls both, first thing). Late, it
//! changes nothing and says so in the debug log.

use libsqlite3_sys as ffi;
use std::sync::OnceLock;

/// Applies the settings once. Returns whether SQLite took them.
pub fn configure() -> bool {
    static CONFIGURED: OnceLock<bool> = OnceLock::new();
    *CONFIGURED.get_or_init(|| {
        // SAFETY: sqlite3_config with these options takes no pointer (MULTITHREAD) or
        // an int (MEMSTATUS); before initialisation nothing else runs inside SQLite.
        let (threading, memstatus) = unsafe {
            (
                ffi::sqlite3_config(ffi::SQLITE_CONFIG_MULTITHREAD),
                ffi::sqlite3_config(ffi::SQLITE_CONFIG_MEMSTATUS, 0 as std::ffi::c_int),
            )
        };
        threading == ffi::SQLITE_OK && memstatus == ffi::SQLITE_OK
    })
}

/// Whether SQLite's connections run without their per-call mutex (threading mode 2).
pub fn is_multithread() -> bool {
    // SAFETY: sqlite3_threadsafe only reads a compile-time constant, and the mode
    // check below opens an in-memory database and closes it.
    unsafe {
        if ffi::sqlite3_threadsafe() == 0 {
            return false;
        }
        let mut db = std::ptr::null_mut();
        let rc = ffi::sqlite3_open_v2(c":memory:".as_ptr(), &mut db, ffi::SQLITE_OPEN_READWRITE, std::ptr::null());
        let multithread = rc == ffi::SQLITE_OK && ffi::sqlite3_db_mutex(db).is_null();
        ffi::sqlite3_close(db);
        multithread
    }
}
