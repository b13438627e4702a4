//! SQLite's WAL checkpoints, moved off the write path.
//!
//! By default the connection whose commit pushes the WAL past 1,000 pages copies the
//! log back into the database file (and syncs it) before its commit returns: every
//! hundredth group commit or so took milliseconds longer, which was the whole p99 of
//! event→toast latency. The pool's connections therefore run with
//! `wal_autocheckpoint = 0`, and this thread checkpoints on its own connection instead.
//! A `PASSIVE` checkpoint never blocks the writer or the readers; but under a steady
//! stream of commits it never quite catches up, and SQLite only starts the log over once
//! one has, so the log would grow without end (300 MB for 20,000 notifications, and
//! writes to fresh file blocks cost more than rewrites of cached ones). So when the log
//! passes `RESTART_FRAMES` after a passive pass, the thread raises a [`LogRestart`]
//! signal; the batch writer, right before its next transaction, copies the few frames
//! left itself (nothing else writes meanwhile, so it does catch up) and its commit starts
//! the log over. The thread ends (after a last checkpoint) when its [`Checkpointer`] is
//! dropped.

use diesel::connection::SimpleConnection;
use diesel::sql_types::Integer;
use diesel::sqlite::SqliteConnection;
use diesel::{Connection, QueryableByName, RunQueryDsl};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::Duration;

/// How often the log is copied back. Hot pages (index tails, busy users' rows) are
/// copied once per interval however often they were rewritten meanwhile.
const INTERVAL: Duration = Duration::from_millis(100);

/// Log length (in pages, 64 MiB) past which the log is made to start over. Each start
/// over costs the writer a short checkpoint of its own (and two fsyncs): at 2,048 pages it
/// came every few hundred milliseconds at 1,000 events/s and set the p99 latency.
const RESTART_FRAMES: i32 = 16384;

/// The row `PRAGMA wal_checkpoint` answers: whether it could not run (another
/// checkpoint was running), frames in the log, and how many of them are now in the
/// database file.
#[derive(QueryableByName)]
struct CheckpointResult {
    #[diesel(sql_type = Integer)]
    busy: i32,
    #[diesel(sql_type = Integer)]
    log: i32,
    #[diesel(sql_type = Integer)]
    checkpointed: i32,
}

fn passive_checkpoint(conn: &mut SqliteConnection) -> diesel::QueryResult<CheckpointResult> {
    diesel::sql_query("PRAGMA wal_checkpoint(PASSIVE)").get_result(conn)
}

/// Raised by the checkpoint thread when the log should start over; acted on by the
/// writer (see the module notes).
#[derive(Clone, Default)]
pub struct LogRestart(Arc<AtomicBool>);

impl LogRestart {
    /// Call right before a write transaction, on the writing connection: when the log is
    /// long, finishes the checkpoint so that this transaction starts the log over.
    pub fn before_write(&self, conn: &mut SqliteConnection) {
        if !self.0.load(Ordering::Relaxed) {
            return;
        }
        match passive_checkpoint(conn) {
            Ok(r) if r.busy == 0 && r.checkpointed == r.log => self.0.store(false, Ordering::Relaxed),
            // A reader still needs old frames, or the thread was checkpointing: try again
            // before the next batch.
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint before a write failed"),
        }
    }
}

/// Owns the checkpoint thread; dropping it stops the thread.
pub struct Checkpointer {
    _stop: SyncSender<()>,
    restart: LogRestart,
}

impl Checkpointer {
    /// Starts checkpointing the database at `path`.
    pub fn start(path: String) -> std::io::Result<Self> {
        Self::start_every(path, INTERVAL)
    }

    fn start_every(path: String, interval: Duration) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::sync_channel::<()>(0);
        let restart = LogRestart::default();
        let wanted = restart.clone();
        super::sqlite_wal_writes::install();
        std::thread::Builder::new().name("notifyhub-checkpoint".into()).spawn(move || {
            let mut conn = match SqliteConnection::establish(&path) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "checkpoint thread cannot open the database; the log will grow");
                    return;
                }
            };
            if let Err(e) = conn.batch_execute("PRAGMA busy_timeout = 10000; PRAGMA wal_autocheckpoint = 0;") {
                tracing::warn!(error = %e, "checkpoint connection settings");
            }
            loop {
                let last = matches!(stopped.recv_timeout(interval), Err(RecvTimeoutError::Disconnected));
                match passive_checkpoint(&mut conn) {
                    Ok(r) if r.log > RESTART_FRAMES => wanted.0.store(true, Ordering::Relaxed),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed; retrying"),
                }
                if last {
                    return;
                }
            }
        })?;
        Ok(Self { _stop: stop, restart })
    }

    /// The signal the batch writer acts on.
    pub fn log_restart(&self) -> LogRestart {
        self.restart.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The log file's size in pages: its high-water mark, as it is never shortened.
    fn wal_pages(path: &std::path::Path) -> u64 {
        let wal = path.with_extension("db-wal");
        std::fs::metadata(wal).map(|m| m.len() / 4096).unwrap_or(0)
    }

    /// A writer that never pauses must not grow the log without end: the log is made to
    /// start over although passive checkpoints alone never catch up with it.
    #[test]
    fn log_stays_bounded_under_continuous_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let url = path.display().to_string();
        let mut writer = SqliteConnection::establish(&url).unwrap();
        writer
            .batch_execute(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0; \
                 PRAGMA busy_timeout = 10000; CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL);",
            )
            .unwrap();
        // A test writer commits far faster than the hub's batches: check as often.
        let checkpointer = Checkpointer::start_every(url, Duration::from_millis(5)).unwrap();
        let restart = checkpointer.log_restart();
        // Each commit appends a page to the log: a log never started over would reach
        // 150,000 pages; one started over once past RESTART_FRAMES stays near that.
        let commits = 150_000;
        for _ in 0..commits {
            restart.before_write(&mut writer);
            writer.batch_execute("INSERT INTO t (body) VALUES ('a notification')").unwrap();
        }
        drop(checkpointer);
        let largest = wal_pages(&path);
        let bound = commits / 3;
        assert!(largest < bound, "the log reached {largest} pages (bound {bound})");
    }
}
