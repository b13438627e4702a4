//! SQLite's group commit, on a thread of its own.
//!
//! SQLite has one writer at a time, and its calls block. The batch therefore runs on a
//! plain thread that owns the writing connection (whose page cache thus stays warm) and
//! does the whole round itself: it takes every request queued since its last batch,
//! writes them in one transaction, tells the live-delivery hook and answers the
//! requesters. Run from the persistence actor, a batch crossed three threads (request
//! thread → actor → blocking pool → actor → request thread), and those wake-ups were
//! about a sixth of the hub's CPU per user-targeted message (`perf`, one core).
//!
//! Written instead by the request thread that hands a batch over (tried: no wake-up at
//! all with one worker), a batch held only the few events of that thread's turn, two or
//! three a transaction, and cost 25 % more CPU per user-targeted message as the
//! benchmark runs (`chrt`, one core). The writer thread, woken by a hand-over, runs
//! once the request thread is idle (on one core) or beside it (on several), and takes
//! everything that arrived meanwhile: about a dozen.
//!
//! Requests that arrive while a batch is written queue in the channel and go together in
//! the next one, whole, up to [`MAX_BATCH`](super::persistence::MAX_BATCH) notifications. The thread ends when its
//! [`WriterStop`] is dropped (with the persistence actor), after writing what was queued,
//! and stops its checkpoints with it.

use super::persistence::{answer_batch, Fanout, RequestQueue, Store};
use crate::metrics::Metrics;
use crate::store::sqlite_checkpoint::{Checkpointer, LogRestart};
use crate::store::sqlite_counters::UserCounters;
use crate::store::{repository, StoreError};
use diesel::sqlite::SqliteConnection;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use tokio::sync::oneshot;

/// What the writer thread is asked to do, in the order asked.
pub(super) enum Command {
    /// Store these requests (group commit).
    Store(Vec<Store>),
    /// Answer once everything asked before is written.
    Flush(oneshot::Sender<()>),
    /// Install the live-delivery hook.
    SetFanout(Arc<dyn Fanout>),
    /// Write what is queued, then end.
    Stop,
}

/// Sends to the writer thread; clones send to the same thread.
#[derive(Clone)]
pub(super) struct WriterHandle(Arc<Sender<Command>>);

impl WriterHandle {
    /// Queues `command`; false if the thread has ended (the command is dropped, and with
    /// it any reply channel, which its requester sees as the batch being dropped).
    pub(super) fn send(&self, command: Command) -> bool {
        self.0.send(command).is_ok()
    }

    /// Whether both send to the same thread.
    pub(super) fn same(&self, other: &WriterHandle) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Ends the writer thread when dropped.
pub(super) struct WriterStop(WriterHandle);

impl Drop for WriterStop {
    fn drop(&mut self) {
        self.0.send(Command::Stop);
    }
}

/// Starts the writer thread on the database at `path`; answers once its connection is
/// open.
pub(super) async fn start(
    path: PathBuf,
    counters: Arc<UserCounters>,
    metrics: Arc<Metrics>,
) -> Result<(WriterHandle, WriterStop), StoreError> {
    let (tx, rx) = mpsc::channel();
    let (ready, opened) = oneshot::channel();
    std::thread::Builder::new()
        .name("notifyhub-writer".into())
        .spawn(move || {
            let opening = Checkpointer::start(path.display().to_string())
                .map_err(|e| StoreError::Unavailable(format!("cannot start checkpoints: {e}")))
                .and_then(|checkpointer| Ok((checkpointer, crate::store::open_sqlite(&path)?)));
            let (checkpointer, conn) = match opening {
                Ok(opened) => opened,
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
            let _ = ready.send(Ok(()));
            Writer {
                path,
                conn: Some(conn),
                _checkpointer: checkpointer,
                restart: LogRestart::default(),
                counters,
                metrics,
                fanout: None,
                queue: RequestQueue::default(),
            }
            .run(rx);
        })
        .map_err(|e| StoreError::Unavailable(format!("cannot start the writer thread: {e}")))?;
    opened.await.map_err(|_| StoreError::Unavailable("the writer thread died while starting".into()))??;
    let handle = WriterHandle(Arc::new(tx));
    Ok((handle.clone(), WriterStop(handle)))
}

struct Writer {
    path: PathBuf,
    /// `None` after a failure that may have left it unusable: reopened for the next batch.
    conn: Option<SqliteConnection>,
    /// Checkpoints while the writer lives.
    _checkpointer: Checkpointer,
    restart: LogRestart,
    /// The users' counters it numbers from (shared with whatever forgets them).
    counters: Arc<UserCounters>,
    metrics: Arc<Metrics>,
    fanout: Option<Arc<dyn Fanout>>,
    queue: RequestQueue,
}

impl Writer {
    fn run(mut self, commands: Receiver<Command>) {
        loop {
            if self.queue.is_empty() {
                // Nothing to write: sleep until asked (or until every sender is gone).
                let Ok(command) = commands.recv() else { break };
                if !self.take(command) {
                    break;
                }
            }
            // Everything asked meanwhile joins this batch, up to a full one.
            let mut stop = false;
            while !self.queue.full() {
                let Ok(command) = commands.try_recv() else { break };
                if !self.take(command) {
                    stop = true;
                    break;
                }
            }
            self.write_batch();
            if stop {
                break;
            }
        }
        while !self.queue.is_empty() {
            self.write_batch();
        }
    }

    /// Acts on a command; false when asked to stop.
    fn take(&mut self, command: Command) -> bool {
        match command {
            Command::Store(requests) => {
                for request in requests {
                    self.queue.push(request);
                }
            }
            Command::Flush(done) => {
                while !self.queue.is_empty() {
                    self.write_batch();
                }
                let _ = done.send(());
            }
            Command::SetFanout(fanout) => self.fanout = Some(fanout),
            Command::Stop => return false,
        }
        true
    }

    /// Writes the next batch from the queue (see [`RequestQueue::take_batch`]) and
    /// answers its requests.
    fn write_batch(&mut self) {
        let Some((items, waiters)) = self.queue.take_batch() else { return };
        let toast: Vec<bool> = items.iter().map(|i| i.toast).collect();
        let result = self.store(items);
        answer_batch(result, waiters, &toast, &self.metrics, self.fanout.as_deref());
    }

    fn store(
        &mut self,
        items: Vec<repository::StoreItem>,
    ) -> Result<Vec<crate::domain::StoredNotification>, StoreError> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => self.conn.insert(crate::store::open_sqlite(&self.path)?),
        };
        let result = repository::store_batch_sqlite(conn, items, &mut self.restart, &self.counters);
        if matches!(result, Err(StoreError::Unavailable(_))) {
            // A connection whose transaction could not be closed refuses every later
            // one: start afresh.
            self.conn = None;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{NewNotification, NotificationContent, NotificationType, Priority, StoredNotification};
    use uuid::Uuid;

    async fn writer(dir: &tempfile::TempDir) -> (WriterHandle, WriterStop) {
        let path = dir.path().join("w.db");
        crate::store::run_migrations_blocking(&crate::config::DatabaseUrl::Sqlite(path.clone())).unwrap();
        start(path, Arc::default(), Arc::new(Metrics::default())).await.unwrap()
    }

    type Answer = oneshot::Receiver<Result<Vec<StoredNotification>, StoreError>>;

    fn request(user: Uuid, n: usize) -> (Store, Answer) {
        let items = (0..n)
            .map(|i| repository::StoreItem {
                notification: NewNotification {
                    id: Uuid::now_v7(),
                    user_id: user,
                    content: std::sync::Arc::new(NotificationContent {
                        notification_type: NotificationType::SystemError,
                        priority: Priority::Info,
                        title: format!("t{i}"),
                        message: "m".into(),
                        metadata: Default::default(),
                        created_at: chrono::Utc::now(),
                    }),
                },
                deliveries: Vec::new(),
                toast: true,
            })
            .collect();
        let (reply, answer) = oneshot::channel();
        (Store { items, reply }, answer)
    }

    #[tokio::test]
    async fn requests_are_numbered_in_the_order_sent_and_a_flush_waits_for_them() {
        let dir = tempfile::tempdir().unwrap();
        let (handle, _stop) = writer(&dir).await;
        let user = Uuid::new_v4();
        let (first, mut first_answer) = request(user, 2);
        let (second, mut second_answer) = request(user, 1);
        assert!(handle.send(Command::Store(vec![first])));
        assert!(handle.send(Command::Store(vec![second])));
        let (flushed, done) = oneshot::channel();
        assert!(handle.send(Command::Flush(flushed)));
        done.await.expect("flushed");
        // Both answered by the time the flush is.
        let first = first_answer.try_recv().expect("answered before the flush").expect("stored");
        let second = second_answer.try_recv().expect("answered before the flush").expect("stored");
        let seqs: Vec<i64> = first.iter().chain(&second).map(|s| s.sequence_number).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn a_stopped_writer_drops_later_requests_instead_of_leaving_them_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let (handle, stop) = writer(&dir).await;
        let (queued, queued_answer) = request(Uuid::new_v4(), 1);
        assert!(handle.send(Command::Store(vec![queued])));
        drop(stop);
        // Asked before the stop: written.
        assert_eq!(queued_answer.await.expect("answered").expect("stored").len(), 1);
        let (late, late_answer) = request(Uuid::new_v4(), 1);
        handle.send(Command::Store(vec![late]));
        // Asked after: its reply channel is dropped (the requester hears "unavailable").
        assert!(late_answer.await.is_err());
    }
}
