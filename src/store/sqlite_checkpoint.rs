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
//! writes to fresh file blocks cost more than rewrites of cached ones). So the batch
//! writer keeps a [`LogRestart`]: every few milliseconds, right before a transaction, it
//! reads the log's length, and past `RESTART_FRAMES` it copies the few frames the thread
//! has left itself (nothing else writes meanwhile, so it does catch up) and its commit
//! starts the log over.
//!
//! Under a flood on a busy core the thread's pass can take most of a second, holding the
//! checkpoint lock, and the writer's copy fails for as long (the log grew to ~57,000
//! frames, 236 MB, in a 200,000-event ingest, 500 MB in a slower hour). Past
//! `HARD_FRAMES` the writer therefore waits for the copy before it writes more: the flood
//! then goes at the checkpoints' pace, and the log stays bounded. The thread ends (after
//! a last checkpoint) when its [`Checkpointer`] is dropped.

use diesel::connection::SimpleConnection;
use diesel::sql_types::Integer;
use diesel::sqlite::SqliteConnection;
use diesel::{Connection, QueryableByName, RunQueryDsl};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

/// How often the log is copied back. Hot pages (index tails, busy users' rows) are
/// copied once per interval however often they were rewritten meanwhile.
const INTERVAL: Duration = Duration::from_millis(100);

/// Log length (in pages, 64 MiB) past which the log is made to start over. Each start
/// over costs the writer a short checkpoint of its own (and two fsyncs): at 2,048 pages it
/// came every few hundred milliseconds at 1,000 events/s and set the p99 latency.
const RESTART_FRAMES: i32 = 16384;

/// Log length (in pages, 256 MiB) past which the writer waits for the log to be copied
/// back before it writes more.
const HARD_FRAMES: i32 = 4 * RESTART_FRAMES;

/// How often the writer reads the log's length: at most this much of a flood's log goes
/// by unseen (a few MB).
const LOOK_EVERY: Duration = Duration::from_millis(10);

/// Longest the writer waits for the copy past `HARD_FRAMES`: a reader holding an old
/// snapshot keeps its frames in the log until it ends, and writes must not wait on it
/// for ever.
const MAX_WAIT: Duration = Duration::from_secs(5);

/// How long the writer sleeps between two tries of the copy while it waits.
const RETRY_AFTER: Duration = Duration::from_millis(1);

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

/// The log's length in frames, read from the shared index without copying anything.
fn log_frames(conn: &mut SqliteConnection) -> diesel::QueryResult<i32> {
    let r: CheckpointResult = diesel::sql_query("PRAGMA wal_checkpoint(NOOP)").get_result(conn)?;
    Ok(r.log)
}

/// The batch writer's side of the checkpoints (see the module notes).
pub struct LogRestart {
    restart_frames: i32,
    hard_frames: i32,
    max_wait: Duration,
    /// When the log's length was last read (`None`: read it before the next write).
    last_look: Option<Instant>,
}

impl Default for LogRestart {
    fn default() -> Self {
        Self::with_limits(RESTART_FRAMES, HARD_FRAMES, MAX_WAIT)
    }
}

impl LogRestart {
    fn with_limits(restart_frames: i32, hard_frames: i32, max_wait: Duration) -> Self {
        Self { restart_frames, hard_frames, max_wait, last_look: None }
    }

    /// Call right before a write transaction, on the writing connection: when the log is
    /// long, finishes the checkpoint so that this transaction starts the log over, and
    /// when it is far too long, waits for that.
    pub fn before_write(&mut self, conn: &mut SqliteConnection) {
        let now = Instant::now();
        if self.last_look.is_some_and(|at| now.duration_since(at) < LOOK_EVERY) {
            return;
        }
        self.last_look = Some(now);
        match log_frames(conn) {
            Ok(log) if log > self.restart_frames => {}
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the WAL's length");
                return;
            }
        }
        loop {
            match passive_checkpoint(conn) {
                Ok(r) if r.busy == 0 && r.checkpointed == r.log => return,
                // The checkpoint thread holds the lock, or a reader still needs old
                // frames: wait while the log is far too long, else try again before the
                // next batch.
                Ok(r) if r.log > self.hard_frames && now.elapsed() < self.max_wait => std::thread::sleep(RETRY_AFTER),
                Ok(r) => {
                    if r.log > self.hard_frames {
                        tracing::warn!(frames = r.log, "the WAL stays long: a reader holds an old snapshot");
                    }
                    self.last_look = None;
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "WAL checkpoint before a write failed");
                    self.last_look = None;
                    return;
                }
            }
        }
    }
}

/// Owns the checkpoint thread; dropping it stops the thread.
pub struct Checkpointer {
    _stop: SyncSender<()>,
}

impl Checkpointer {
    /// Starts checkpointing the database at `path`.
    pub fn start(path: String) -> std::io::Result<Self> {
        Self::start_every(path, INTERVAL)
    }

    fn start_every(path: String, interval: Duration) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::sync_channel::<()>(0);
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
                if let Err(e) = passive_checkpoint(&mut conn) {
                    tracing::warn!(error = %e, "WAL checkpoint failed; retrying");
                }
                if last {
                    return;
                }
            }
        })?;
        Ok(Self { _stop: stop })
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

    /// A WAL database with one table, and its writing connection.
    fn database(dir: &tempfile::TempDir) -> (std::path::PathBuf, SqliteConnection) {
        let path = dir.path().join("t.db");
        let mut writer = SqliteConnection::establish(&path.display().to_string()).unwrap();
        writer
            .batch_execute(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0; \
                 PRAGMA busy_timeout = 10000; CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL);",
            )
            .unwrap();
        (path, writer)
    }

    /// Commits `commits` one-page transactions, each after `restart`'s look (if any);
    /// answers the log file's largest size in pages.
    fn commit(
        writer: &mut SqliteConnection,
        path: &std::path::Path,
        commits: u64,
        mut restart: Option<&mut LogRestart>,
    ) -> u64 {
        for _ in 0..commits {
            if let Some(restart) = restart.as_deref_mut() {
                restart.before_write(writer);
            }
            writer.batch_execute("INSERT INTO t (body) VALUES ('a notification')").unwrap();
        }
        wal_pages(path)
    }

    /// 150,000 one-page commits in a row, each after the writer's look, with or without
    /// the checkpoint thread: the log must be started over. Never started over it would
    /// reach 150,000 pages; started over past RESTART_FRAMES it stays near that.
    fn assert_log_bounded(with_checkpoint_thread: bool) {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut writer) = database(&dir);
        // A test writer commits far faster than the hub's batches: check as often.
        let checkpointer = with_checkpoint_thread
            .then(|| Checkpointer::start_every(path.display().to_string(), Duration::from_millis(5)).unwrap());
        let commits = 150_000;
        let largest = commit(&mut writer, &path, commits, Some(&mut LogRestart::default()));
        drop(checkpointer);
        let bound = commits / 3;
        assert!(largest < bound, "the log reached {largest} pages (bound {bound})");
    }

    /// A writer that never pauses must not grow the log without end, although passive
    /// checkpoints alone never catch up with it.
    #[test]
    fn log_stays_bounded_under_continuous_commits() {
        assert_log_bounded(true);
    }

    /// With no pass of the checkpoint thread to rely on (as when a flood starves it), the
    /// writer alone still starts the log over.
    #[test]
    fn the_writer_bounds_the_log_without_the_checkpoint_thread() {
        assert_log_bounded(false);
    }

    /// Past the hard limit, a copy that cannot finish (a reader holds an old snapshot)
    /// makes the writer wait, up to its limit, before it writes more.
    #[test]
    fn past_the_hard_limit_the_writer_waits_for_the_copy() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut writer) = database(&dir);
        commit(&mut writer, &path, 10, None);
        let mut reader = SqliteConnection::establish(&path.display().to_string()).unwrap();
        reader.batch_execute("BEGIN; SELECT count(*) FROM t;").unwrap();
        commit(&mut writer, &path, 300, None);

        let max_wait = Duration::from_millis(200);
        // Past the restart length only: one try, no wait.
        let started = Instant::now();
        LogRestart::with_limits(100, 1_000, max_wait).before_write(&mut writer);
        assert!(started.elapsed() < max_wait, "waited below the hard limit");
        // Past the hard limit: the writer waits for the reader as long as it may.
        let started = Instant::now();
        LogRestart::with_limits(100, 200, max_wait).before_write(&mut writer);
        assert!(started.elapsed() >= max_wait, "went on writing without waiting");

        // Once the reader is done, the copy finishes and the next commit starts the log over.
        reader.batch_execute("COMMIT").unwrap();
        LogRestart::with_limits(100, 200, max_wait).before_write(&mut writer);
        commit(&mut writer, &path, 1, None);
        assert!(log_frames(&mut writer).unwrap() < 10, "the log did not start over");
    }
}
