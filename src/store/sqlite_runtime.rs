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
