//! The persistence actor owns the database pool and runs every database future to
//! completion on its own arbiter, whatever happens to the requester. That matters on
//! SQLite: a `SyncConnectionWrapper` query future dropped half-way (a client that went
//! away, a timeout) panics on a current-thread runtime. Requesters only ever await a
//! reply channel, which is safe to drop.
//!
//! Notification inserts are group-committed: requests that arrive while a batch is
//! being written wait and go together in the next transaction, so ingest is not one
//! transaction per event; and the requests a thread makes in one turn of its event loop
//! reach the batch writer as one message (see [`StoreHandle::store_notifications`]). On
//! PostgreSQL this actor writes the batches; on SQLite a thread of its own does
//! (`sqlite_writer`), which lives as long as the actor.

use super::sqlite_writer::{self, Command, WriterHandle, WriterStop};
use crate::domain::StoredNotification;
use crate::metrics::Metrics;
use crate::store::repository::StoreItem;
use crate::store::{repository, Db, PgPool, StoreError};
use actix::prelude::*;
use futures_util::future::LocalBoxFuture;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{oneshot, Notify};

/// Most notifications written by one transaction: a few broadcasts to a thousand users
/// each. Queued together, they then share one, and each recipient's page of the
/// `(user_id, sequence_number)` index is written once for all of them: at 1,024, one
/// broadcast a transaction cost 30 % more CPU per delivery (loadgen, 1,000 users).
pub(super) const MAX_BATCH: usize = 4096;

/// Where a requester's stored notifications (or its error) are sent.
pub(super) type Reply = oneshot::Sender<Result<Vec<StoredNotification>, StoreError>>;

/// A batch's requesters, in order, each with how many of its notifications are theirs.
pub(super) type Waiters = Vec<(usize, Reply)>;

type Job = Box<dyn FnOnce(Db) -> LocalBoxFuture<'static, ()> + Send>;

/// Runs an arbitrary database job on the persistence arbiter.
#[derive(Message)]
#[rtype(result = "()")]
struct Run(Job);

/// Notifications to store (group commit), answered with their sequence numbers.
pub(super) struct Store {
    pub(super) items: Vec<StoreItem>,
    pub(super) reply: Reply,
}

/// The requests one thread gathered in one turn of its event loop (see
/// [`StoreHandle::store_notifications`]).
#[derive(Message)]
#[rtype(result = "()")]
struct StoreMany(Vec<Store>);

/// Who writes a hub's batches.
#[derive(Clone)]
enum BatchWriter {
    /// PostgreSQL: the persistence actor.
    Actor(Addr<Persistence>),
    /// SQLite: the writer thread.
    Thread(WriterHandle),
}

impl BatchWriter {
    fn same(&self, other: &BatchWriter) -> bool {
        match (self, other) {
            (BatchWriter::Actor(a), BatchWriter::Actor(b)) => a == b,
            (BatchWriter::Thread(a), BatchWriter::Thread(b)) => a.same(b),
            _ => false,
        }
    }

    fn hand_over(&self, requests: Vec<Store>) {
        match self {
            BatchWriter::Actor(addr) => addr.do_send(StoreMany(requests)),
            BatchWriter::Thread(writer) => {
                // A writer that has ended drops the requests' reply channels: each
                // requester hears that its batch was dropped.
                writer.send(Command::Store(requests));
            }
        }
    }
}

thread_local! {
    /// Requests made on this thread since its last hand-over, with their writer.
    static GATHERED: std::cell::RefCell<Vec<(BatchWriter, Store)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Hands what this thread gathered to the batch writer(s), one message each, in the
/// order the requests were made.
fn hand_over_gathered() {
    let mut gathered = GATHERED.with(|g| std::mem::take(&mut *g.borrow_mut()));
    while let Some(writer) = gathered.first().map(|(w, _)| w.clone()) {
        let (same, rest): (Vec<_>, Vec<_>) = gathered.into_iter().partition(|(w, _)| w.same(&writer));
        writer.hand_over(same.into_iter().map(|(_, s)| s).collect());
        gathered = rest;
    }
}

/// Requests waiting for a batch, in arrival order; both batch writers (this actor on
/// PostgreSQL, the writer thread on SQLite) take their batches from one.
#[derive(Default)]
pub(super) struct RequestQueue {
    requests: std::collections::VecDeque<Store>,
    /// Notifications in `requests`.
    notifications: usize,
}

impl RequestQueue {
    /// Queues `request`; one with nothing to store is answered at once.
    pub(super) fn push(&mut self, request: Store) {
        if request.items.is_empty() {
            let _ = request.reply.send(Ok(Vec::new()));
        } else {
            self.notifications += request.items.len();
            self.requests.push_back(request);
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    /// Whether a full batch waits.
    pub(super) fn full(&self) -> bool {
        self.notifications >= MAX_BATCH
    }

    /// Whole requests from the front, up to [`MAX_BATCH`] notifications (at least one
    /// request): their notifications, and how many of them each requester gets back.
    pub(super) fn take_batch(&mut self) -> Option<(Vec<StoreItem>, Waiters)> {
        let mut items = Vec::with_capacity(self.notifications.min(MAX_BATCH));
        let mut waiters = Vec::with_capacity(self.requests.len().min(MAX_BATCH));
        while let Some(front) = self.requests.front() {
            if !waiters.is_empty() && items.len() + front.items.len() > MAX_BATCH {
                break;
            }
            let Some(request) = self.requests.pop_front() else { break };
            self.notifications -= request.items.len();
            waiters.push((request.items.len(), request.reply));
            items.extend(request.items);
        }
        (!waiters.is_empty()).then_some((items, waiters))
    }
}

/// Reports a written batch (or its failure): counts it, tells the live-delivery hook and
/// answers each requester (`waiters`: how many of the batch's notifications were theirs,
/// in order).
pub(super) fn answer_batch(
    result: Result<Vec<StoredNotification>, StoreError>,
    waiters: Waiters,
    toast: &[bool],
    metrics: &Metrics,
    fanout: Option<&dyn Fanout>,
) {
    match result {
        Ok(stored) => {
            metrics.add_notifications_stored(stored.len() as u64);
            if let Some(fanout) = fanout {
                fanout.committed(&stored, toast);
            }
            let mut rest = stored.into_iter();
            for (count, reply) in waiters {
                let part: Vec<StoredNotification> = rest.by_ref().take(count).collect();
                let _ = reply.send(Ok(part));
            }
        }
        Err(e) => {
            for (_, reply) in waiters {
                let _ = reply.send(Err(e.for_another_caller()));
            }
        }
    }
}

/// Told, in commit order and on the thread that wrote it, about every stored batch:
/// the hook for live delivery (and, with several nodes, for telling the others).
pub trait Fanout: Send + Sync {
    /// `committed[i]` was stored; `toast[i]` says whether its toast goes out.
    fn committed(&self, committed: &[StoredNotification], toast: &[bool]);
}

/// What the persistence actor reports to.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Live delivery.
    pub fanout: Option<Arc<dyn Fanout>>,
    /// This node's id, in the NOTIFY payloads other nodes receive.
    pub node_id: String,
    /// In a cluster: the users with tabs on other nodes, whose toasts' frames go in the
    /// NOTIFYs.
    pub remote_tabs: Option<Arc<crate::cluster::presence::RemoteTabs>>,
}

/// Installs the live-delivery hook (the session registry needs the store first).
#[derive(Message)]
#[rtype(result = "()")]
struct SetFanout(Arc<dyn Fanout>);

impl Handler<SetFanout> for Persistence {
    type Result = ();

    fn handle(&mut self, msg: SetFanout, _: &mut Context<Self>) {
        self.hooks.fanout = Some(msg.0);
    }
}

/// Replies once every queued and running job has finished.
#[derive(Message)]
#[rtype(result = "()")]
struct Flush(oneshot::Sender<()>);

/// The actor. Create it with [`StoreHandle::start`].
pub struct Persistence {
    db: Db,
    /// PostgreSQL: the pool batches are written through (SQLite's go to the writer thread).
    batch_pool: Option<PgPool>,
    queue: RequestQueue,
    writing: bool,
    in_flight: Arc<AtomicUsize>,
    idle: Arc<Notify>,
    flushers: Vec<oneshot::Sender<()>>,
    hooks: Hooks,
    /// SQLite only: ends the writer thread with the actor.
    _writer: Option<WriterStop>,
}

impl Actor for Persistence {
    type Context = Context<Self>;
}

impl Persistence {
    fn start_batch(&mut self, ctx: &mut Context<Self>) {
        if self.writing {
            return;
        }
        let Some((items, waiters)) = self.queue.take_batch() else { return };
        let toast: Vec<bool> = items.iter().map(|i| i.toast).collect();
        let node = self.hooks.node_id.clone();
        self.writing = true;
        let pool = self.batch_pool.clone();
        let remote = self.hooks.remote_tabs.clone();
        let fut = async move {
            match pool {
                Some(pool) => repository::store_batch_pg(&pool, &node, items, remote.as_deref()).await,
                None => Err(StoreError::Unavailable("SQLite batches are written by the writer thread".into())),
            }
        };
        ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
            act.writing = false;
            answer_batch(result, waiters, &toast, &act.hooks.metrics, act.hooks.fanout.as_deref());
            act.start_batch(ctx);
            act.notify_if_idle();
        }));
    }

    fn notify_if_idle(&mut self) {
        if !self.writing && self.queue.is_empty() && self.in_flight.load(Ordering::SeqCst) == 0 {
            for f in self.flushers.drain(..) {
                let _ = f.send(());
            }
        }
    }
}

impl Handler<Run> for Persistence {
    type Result = ();

    fn handle(&mut self, msg: Run, _: &mut Context<Self>) {
        let in_flight = self.in_flight.clone();
        let idle = self.idle.clone();
        in_flight.fetch_add(1, Ordering::SeqCst);
        let fut = (msg.0)(self.db.clone());
        // Spawned on this arbiter, not in the actor's context: the job runs to the end
        // even if the requester is gone.
        actix::spawn(async move {
            fut.await;
            if in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
                idle.notify_waiters();
            }
        });
    }
}

impl Handler<StoreMany> for Persistence {
    type Result = ();

    fn handle(&mut self, msg: StoreMany, ctx: &mut Context<Self>) {
        for request in msg.0 {
            self.queue.push(request);
        }
        self.start_batch(ctx);
    }
}

impl Handler<Flush> for Persistence {
    type Result = ();

    fn handle(&mut self, msg: Flush, ctx: &mut Context<Self>) {
        self.flushers.push(msg.0);
        self.notify_if_idle();
        if !self.flushers.is_empty() {
            // Jobs finish outside the actor; poll their counter until it drains.
            let idle = self.idle.clone();
            let in_flight = self.in_flight.clone();
            ctx.spawn(
                async move {
                    while in_flight.load(Ordering::SeqCst) > 0 {
                        let notified = idle.notified();
                        if in_flight.load(Ordering::SeqCst) == 0 {
                            break;
                        }
                        notified.await;
                    }
                }
                .into_actor(self)
                .map(|_, act, _| act.notify_if_idle()),
            );
        }
    }
}

/// A cheap, cloneable handle to the persistence actor.
#[derive(Clone)]
pub struct StoreHandle {
    addr: Addr<Persistence>,
    writer: BatchWriter,
    backend: &'static str,
    arbiter: actix::ArbiterHandle,
}

impl StoreHandle {
    /// Starts the actor on its own arbiter around a pool built there.
    pub async fn start(url: crate::config::DatabaseUrl, pool_size: u32, hooks: Hooks) -> Result<Self, StoreError> {
        let arbiter = Arbiter::new();
        let (tx, rx) = oneshot::channel();
        let spawned = arbiter.spawn(async move {
            let opened = async {
                let db = Db::connect(&url, pool_size).await?;
                let writer = match (&url, &db) {
                    (crate::config::DatabaseUrl::Sqlite(path), Db::Sqlite(sqlite)) => {
                        Some(sqlite_writer::start(path.clone(), sqlite.counters.clone(), hooks.metrics.clone()).await?)
                    }
                    _ => None,
                };
                Ok::<_, StoreError>((db, writer))
            };
            let result = opened.await.map(|(db, writer)| {
                let backend = db.backend_name();
                let batch_pool = match &db {
                    Db::Postgres(pool) => Some(pool.clone()),
                    Db::Sqlite(_) => None,
                };
                let (thread, stop) = writer.unzip();
                let addr = Persistence {
                    db,
                    batch_pool,
                    queue: RequestQueue::default(),
                    writing: false,
                    in_flight: Arc::new(AtomicUsize::new(0)),
                    idle: Arc::new(Notify::new()),
                    flushers: Vec::new(),
                    hooks,
                    _writer: stop,
                }
                .start();
                let writer = match thread {
                    Some(thread) => BatchWriter::Thread(thread),
                    None => BatchWriter::Actor(addr.clone()),
                };
                (addr, writer, backend)
            });
            let _ = tx.send(result);
        });
        if !spawned {
            return Err(StoreError::Unavailable("persistence arbiter is not running".into()));
        }
        let (addr, writer, backend) =
            rx.await.map_err(|_| StoreError::Unavailable("persistence arbiter stopped".into()))??;
        Ok(Self { addr, writer, backend, arbiter: arbiter.handle() })
    }

    /// Stops the actor and its arbiter: the pool's connections close, and on SQLite the
    /// batch writer and its checkpoint thread are told to end (the writer after what was
    /// queued, the checkpoints after a last one); nothing waits for them. Every later call
    /// answers `Unavailable`. For a hub that has stopped serving, after [`Self::flush`].
    pub fn stop(&self) {
        self.arbiter.stop();
    }

    /// Whether the actor still takes work.
    pub fn is_running(&self) -> bool {
        self.addr.connected()
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// Runs `job` against the database on the persistence arbiter and returns its result.
    pub async fn call<R, F, Fut>(&self, job: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(Db) -> Fut + Send + 'static,
        Fut: Future<Output = Result<R, StoreError>> + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let boxed: Job = Box::new(move |db| {
            Box::pin(async move {
                let _ = tx.send(job(db).await);
            })
        });
        self.addr.send(Run(boxed)).await.map_err(|_| StoreError::Unavailable("persistence actor stopped".into()))?;
        rx.await.map_err(|_| StoreError::Unavailable("persistence job was dropped".into()))?
    }

    /// Installs the hook told about every committed batch.
    pub async fn set_fanout(&self, fanout: Arc<dyn Fanout>) {
        match &self.writer {
            BatchWriter::Actor(addr) => {
                let _ = addr.send(SetFanout(fanout)).await;
            }
            // Commands are taken in order: no batch asked for later misses the hook.
            BatchWriter::Thread(writer) => {
                writer.send(Command::SetFanout(fanout));
            }
        }
    }

    /// Stores notifications with group commit; returns them with sequence numbers.
    ///
    /// Requests are not sent one by one: the first one made on a thread since the last
    /// hand-over schedules a hand-over task behind the tasks already ready there, so
    /// every event that thread parses in the same turn of its loop goes to the actor in
    /// one message and, normally, into one transaction. Sent one by one, the first woke
    /// the persistence thread, which on a busy core started a batch of one before the
    /// request thread had parsed the next event.
    pub async fn store_notifications(&self, items: Vec<StoreItem>) -> Result<Vec<StoredNotification>, StoreError> {
        if !self.addr.connected() {
            return Err(StoreError::Unavailable("persistence actor stopped".into()));
        }
        let (tx, rx) = oneshot::channel();
        let first = GATHERED.with(|g| {
            let mut g = g.borrow_mut();
            g.push((self.writer.clone(), Store { items, reply: tx }));
            g.len() == 1
        });
        if first {
            actix::spawn(async { hand_over_gathered() });
        }
        rx.await.map_err(|_| StoreError::Unavailable("persistence batch was dropped".into()))?
    }

    /// Waits until every queued write and running job has finished (graceful shutdown).
    pub async fn flush(&self) {
        if let BatchWriter::Thread(writer) = &self.writer {
            let (tx, rx) = oneshot::channel();
            if writer.send(Command::Flush(tx)) {
                let _ = rx.await;
            }
        }
        let (tx, rx) = oneshot::channel();
        if self.addr.send(Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}
