//! SQLite's group commit, written by the threads that ask for it.
//!
//! SQLite has one writer at a time, and its calls block. The writing connection (whose
//! page cache thus stays warm) sits behind a lock that no one waits for: a thread hands
//! its requests over by queueing them and, if the lock is free, writing everything
//! queued itself, in batches, then telling the live-delivery hook and answering the
//! requesters; if another thread holds it, that thread writes them before it lets go.
//! With one worker (the benchmark's setting, and any one-core box) every batch is
//! written, delivered and answered on the thread that parsed its events, without
//! waking anyone. Run from the persistence actor instead, a batch crossed three threads
//! (request thread → actor → blocking pool → actor → request thread), and a dedicated
//! writer thread still cost two wake-ups: about a sixth of the hub's CPU per
//! user-targeted message went to them (`perf`, one core).
//!
//! Requests that arrive while a batch is written go together in the next one, whole, up
//! to [`MAX_BATCH`] notifications. The connection is closed, and checkpoints stop, when
//! the [`WriterStop`] is dropped (with the persistence actor); later requests are
//! refused as unavailable.

use super::persistence::{answer_batch, Fanout, Store, MAX_BATCH};
use crate::domain::StoredNotification;
use crate::metrics::Metrics;
use crate::store::sqlite_checkpoint::{Checkpointer, LogRestart};
use crate::store::{repository, StoreError};
use diesel::sqlite::SqliteConnection;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

/// Hands requests to the writer; clones share it.
#[derive(Clone)]
pub(super) struct WriterHandle(Arc<Shared>);

struct Shared {
    /// Requests waiting for a batch, and how many notifications they hold.
    queue: Mutex<(VecDeque<Store>, usize)>,
    /// Taken by the thread that writes; `None` once stopped.
    writer: Mutex<Option<Writer>>,
    /// The live-delivery hook, installed once at start.
    fanout: OnceLock<Arc<dyn Fanout>>,
    metrics: Arc<Metrics>,
}

/// Closes the writer when dropped.
pub(super) struct WriterStop(WriterHandle);

impl Drop for WriterStop {
    fn drop(&mut self) {
        // Whoever holds the lock finishes what is queued first.
        let writer = lock(&self.0 .0.writer).take();
        drop(writer);
        self.0.refuse_queued();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while writing leaves nothing half-done that the next batch could trip on:
    // the transaction was rolled back with the panic.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Opens the writing connection on the database at `path` and starts its checkpoints.
pub(super) async fn start(path: PathBuf, metrics: Arc<Metrics>) -> Result<(WriterHandle, WriterStop), StoreError> {
    // Opening blocks (the file, the schema): off the async thread.
    let writer = tokio::task::spawn_blocking(move || Writer::open(path))
        .await
        .map_err(|_| StoreError::Unavailable("opening the database writer failed".into()))??;
    let handle = WriterHandle(Arc::new(Shared {
        queue: Mutex::new((VecDeque::new(), 0)),
        writer: Mutex::new(Some(writer)),
        fanout: OnceLock::new(),
        metrics,
    }));
    Ok((handle.clone(), WriterStop(handle)))
}

impl WriterHandle {
    /// Whether both hand over to the same writer.
    pub(super) fn same(&self, other: &WriterHandle) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Installs the live-delivery hook (once; before the first request).
    pub(super) fn set_fanout(&self, fanout: Arc<dyn Fanout>) {
        let _ = self.0.fanout.set(fanout);
    }

    /// Queues `requests` and, unless another thread is writing (which then writes them
    /// too), writes everything queued.
    pub(super) fn hand_over(&self, requests: Vec<Store>) {
        {
            let mut queue = lock(&self.0.queue);
            for request in requests {
                if request.items.is_empty() {
                    let _ = request.reply.send(Ok(Vec::new()));
                } else {
                    queue.1 += request.items.len();
                    queue.0.push_back(request);
                }
            }
        }
        self.write_queued(false);
    }

    /// Returns once everything queued so far is written (graceful shutdown); blocks.
    pub(super) fn flush_blocking(&self) {
        self.write_queued(true);
    }

    /// Writes what is queued: everything when `wait`ing for the lock; else, if the lock is
    /// free, one batch, and the rest at the next turn of this thread's event loop.
    fn write_queued(&self, wait: bool) {
        loop {
            let guard = if wait {
                Some(lock(&self.0.writer))
            } else {
                match self.0.writer.try_lock() {
                    Ok(guard) => Some(guard),
                    Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
                    // The holder looks at the queue again after letting go (below).
                    Err(std::sync::TryLockError::WouldBlock) => None,
                }
            };
            let Some(mut guard) = guard else { return };
            while let Some((items, waiters)) = self.next_batch() {
                let toast: Vec<bool> = items.iter().map(|i| i.toast).collect();
                let result = match guard.as_mut() {
                    Some(writer) => writer.store(items),
                    None => Err(StoreError::Unavailable("the database writer is closed".into())),
                };
                answer_batch(result, waiters, &toast, &self.0.metrics, self.0.fanout.get().map(|f| &**f));
                if !wait {
                    break;
                }
            }
            drop(guard);
            // Queued meanwhile, by other threads that found the lock taken and left their
            // requests to us, or more than a batch.
            if lock(&self.0.queue).0.is_empty() {
                return;
            }
            if !wait {
                // Written at the next turn of this thread's loop, not now: under a steady
                // stream from other workers this one would otherwise write for them
                // without end, and its own sockets would wait. (Those requests wait for
                // one turn meanwhile, and join the requests it brings.)
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    let again = self.clone();
                    runtime.spawn(async move { again.write_queued(false) });
                    return;
                }
            }
        }
    }

    /// Whole requests from the front of the queue, up to [`MAX_BATCH`] notifications (at
    /// least one request), with how many notifications each one holds.
    #[allow(clippy::type_complexity)]
    fn next_batch(&self) -> Option<(Vec<repository::StoreItem>, Vec<(usize, super::persistence::Reply)>)> {
        let mut queue = lock(&self.0.queue);
        let (requests, queued) = &mut *queue;
        let mut items = Vec::new();
        let mut waiters = Vec::new();
        while let Some(front) = requests.front() {
            if !waiters.is_empty() && items.len() + front.items.len() > MAX_BATCH {
                break;
            }
            let Some(request) = requests.pop_front() else { break };
            *queued -= request.items.len();
            waiters.push((request.items.len(), request.reply));
            items.extend(request.items);
        }
        (!waiters.is_empty()).then_some((items, waiters))
    }

    /// Answers every queued request as unavailable (the writer is closed).
    fn refuse_queued(&self) {
        self.write_queued(true);
    }
}

/// The writing connection and what goes with it.
struct Writer {
    path: PathBuf,
    /// `None` after a failure that may have left it unusable: reopened for the next batch.
    conn: Option<SqliteConnection>,
    /// Checkpoints while the writer lives.
    _checkpointer: Checkpointer,
    restart: LogRestart,
}

impl Writer {
    fn open(path: PathBuf) -> Result<Writer, StoreError> {
        let checkpointer = Checkpointer::start(path.display().to_string())
            .map_err(|e| StoreError::Unavailable(format!("cannot start checkpoints: {e}")))?;
        let conn = crate::store::open_sqlite(&path)?;
        let restart = checkpointer.log_restart();
        Ok(Writer { path, conn: Some(conn), _checkpointer: checkpointer, restart })
    }

    fn store(&mut self, items: Vec<repository::StoreItem>) -> Result<Vec<StoredNotification>, StoreError> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => self.conn.insert(crate::store::open_sqlite(&self.path)?),
        };
        let result = repository::store_batch_sqlite(conn, items, Some(&self.restart));
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
    use crate::domain::{NewNotification, NotificationType, Priority};
    use tokio::sync::oneshot;
    use uuid::Uuid;

    async fn writer(dir: &tempfile::TempDir) -> (WriterHandle, WriterStop) {
        let path = dir.path().join("w.db");
        crate::store::run_migrations_blocking(&crate::config::DatabaseUrl::Sqlite(path.clone())).unwrap();
        start(path, Arc::new(Metrics::default())).await.unwrap()
    }

    fn request(user: Uuid, n: usize) -> (Store, oneshot::Receiver<Result<Vec<StoredNotification>, StoreError>>) {
        let items = (0..n)
            .map(|i| repository::StoreItem {
                notification: NewNotification {
                    id: Uuid::now_v7(),
                    user_id: user,
                    notification_type: NotificationType::SystemError,
                    priority: Priority::Info,
                    title: format!("t{i}"),
                    message: "m".into(),
                    metadata: serde_json::json!({}),
                    created_at: chrono::Utc::now(),
                },
                deliveries: Vec::new(),
                toast: true,
            })
            .collect();
        let (reply, answer) = oneshot::channel();
        (Store { items, reply }, answer)
    }

    #[tokio::test]
    async fn a_hand_over_with_the_lock_free_is_written_before_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let (handle, _stop) = writer(&dir).await;
        let user = Uuid::new_v4();
        let (first, mut first_answer) = request(user, 2);
        let (second, mut second_answer) = request(user, 1);
        handle.hand_over(vec![first, second]);
        // Answered already: no other thread was asked to write.
        let first = first_answer.try_recv().expect("answered").expect("stored");
        let second = second_answer.try_recv().expect("answered").expect("stored");
        let seqs: Vec<i64> = first.iter().chain(&second).map(|s| s.notification.sequence_number).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        assert_eq!(
            handle.0.metrics.render("sqlite").lines().find(|l| l.starts_with("notifyhub_store_batches_total")),
            Some("notifyhub_store_batches_total 1")
        );
    }

    #[tokio::test]
    async fn more_than_a_batch_is_written_a_batch_per_turn_of_the_loop() {
        let dir = tempfile::tempdir().unwrap();
        let (handle, _stop) = writer(&dir).await;
        let (full, mut full_answer) = request(Uuid::new_v4(), MAX_BATCH);
        let (next, mut next_answer) = request(Uuid::new_v4(), 1);
        handle.hand_over(vec![full, next]);
        assert_eq!(
            full_answer.try_recv().expect("the first batch is written at once").expect("stored").len(),
            MAX_BATCH
        );
        // The thread goes back to its loop first (its own sockets wait for no one).
        assert!(matches!(next_answer.try_recv(), Err(oneshot::error::TryRecvError::Empty)));
        assert_eq!(next_answer.await.expect("answered").expect("stored").len(), 1);
    }

    #[tokio::test]
    async fn requests_queued_while_another_thread_writes_are_written_by_it() {
        let dir = tempfile::tempdir().unwrap();
        let (handle, _stop) = writer(&dir).await;
        let user = Uuid::new_v4();
        // This thread holds the writer, as a thread in the middle of a batch would.
        let held = lock(&handle.0.writer);
        let other = handle.clone();
        let (queued, mut answer) = request(user, 3);
        std::thread::spawn(move || other.hand_over(vec![queued])).join().unwrap();
        // The hand-over returned without waiting for the lock, leaving its request queued.
        assert!(matches!(answer.try_recv(), Err(oneshot::error::TryRecvError::Empty)));
        drop(held);
        // What the holder does after its last batch: it looks at the queue again.
        handle.write_queued(false);
        let stored = answer.await.expect("answered").expect("stored");
        assert_eq!(stored.len(), 3);
    }

    #[tokio::test]
    async fn a_closed_writer_refuses_requests_instead_of_losing_them() {
        let dir = tempfile::tempdir().unwrap();
        let (handle, stop) = writer(&dir).await;
        drop(stop);
        let (late, answer) = request(Uuid::new_v4(), 1);
        handle.hand_over(vec![late]);
        assert!(matches!(answer.await.expect("answered"), Err(StoreError::Unavailable(_))));
    }
}
