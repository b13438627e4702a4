//! The persistence actor owns the database pool and runs every database future to
//! completion on its own arbiter, whatever happens to the requester. That matters on
//! SQLite: a `SyncConnectionWrapper` query future dropped half-way (a client that went
//! away, a timeout) panics on a current-thread runtime. Requesters only ever await a
//! reply channel, which is safe to drop.
//!
//! Notification inserts are group-committed: requests that arrive while a batch is
//! being written wait and go together in the next transaction, so ingest is not one
//! transaction per event; and the requests a thread makes in one turn of its event loop
//! reach the actor as one message (see [`StoreHandle::store_notifications`]).

use crate::domain::StoredNotification;
use crate::metrics::Metrics;
use crate::store::repository::StoreItem;
use crate::store::{repository, Db, StoreError};
use actix::prelude::*;
use futures_util::future::LocalBoxFuture;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{oneshot, Notify};

/// Most notifications written by one transaction.
const MAX_BATCH: usize = 1024;

type Job = Box<dyn FnOnce(Db) -> LocalBoxFuture<'static, ()> + Send>;

/// Runs an arbitrary database job on the persistence arbiter.
#[derive(Message)]
#[rtype(result = "()")]
struct Run(Job);

/// Notifications to store (group commit), answered with their sequence numbers.
struct Store {
    items: Vec<StoreItem>,
    reply: oneshot::Sender<Result<Vec<StoredNotification>, StoreError>>,
}

/// The requests one thread gathered in one turn of its event loop (see
/// [`StoreHandle::store_notifications`]).
#[derive(Message)]
#[rtype(result = "()")]
struct StoreMany(Vec<Store>);

thread_local! {
    /// Requests made on this thread since its last hand-over, with their actor.
    static GATHERED: std::cell::RefCell<Vec<(Addr<Persistence>, Store)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Hands what this thread gathered to the persistence actor(s), one message each, in
/// the order the requests were made.
fn hand_over_gathered() {
    let mut gathered = GATHERED.with(|g| std::mem::take(&mut *g.borrow_mut()));
    while let Some(addr) = gathered.first().map(|(a, _)| a.clone()) {
        let (same, rest): (Vec<_>, Vec<_>) = gathered.into_iter().partition(|(a, _)| *a == addr);
        addr.do_send(StoreMany(same.into_iter().map(|(_, s)| s).collect()));
        gathered = rest;
    }
}

/// Told, in commit order and on the persistence arbiter, about every stored batch:
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

struct Waiter {
    count: usize,
    reply: oneshot::Sender<Result<Vec<StoredNotification>, StoreError>>,
}

/// The actor. Create it with [`StoreHandle::start`].
pub struct Persistence {
    db: Db,
    /// Where batches are written: on SQLite a pool of one connection, whose page cache
    /// stays warm (SQLite drops a connection's cached pages when another connection has
    /// written since it last read, and the pool hands out any of its connections); on
    /// PostgreSQL the shared pool.
    batch_db: Db,
    queue: Vec<StoreItem>,
    waiters: Vec<Waiter>,
    writing: bool,
    in_flight: Arc<AtomicUsize>,
    idle: Arc<Notify>,
    flushers: Vec<oneshot::Sender<()>>,
    hooks: Hooks,
    /// SQLite only: copies the WAL back while the actor lives.
    checkpointer: Option<crate::store::sqlite_checkpoint::Checkpointer>,
}

impl Actor for Persistence {
    type Context = Context<Self>;
}

impl Persistence {
    fn start_batch(&mut self, ctx: &mut Context<Self>) {
        if self.writing || self.queue.is_empty() {
            return;
        }
        // Take whole requests up to MAX_BATCH notifications (at least one request).
        let mut take_items = 0;
        let mut take_waiters = 0;
        for w in &self.waiters {
            if take_waiters > 0 && take_items + w.count > MAX_BATCH {
                break;
            }
            take_items += w.count;
            take_waiters += 1;
        }
        let items: Vec<StoreItem> = self.queue.drain(..take_items).collect();
        let toast: Vec<bool> = items.iter().map(|i| i.toast).collect();
        let node = self.hooks.node_id.clone();
        let waiters: Vec<Waiter> = self.waiters.drain(..take_waiters).collect();
        self.writing = true;
        let db = self.batch_db.clone();
        let log_restart = self.checkpointer.as_ref().map(|c| c.log_restart());
        let remote = self.hooks.remote_tabs.clone();
        let fut = async move { repository::store_batch(&db, &node, items, log_restart, remote.as_deref()).await };
        ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
            act.writing = false;
            match result {
                Ok(stored) => {
                    act.hooks.metrics.add_notifications_stored(stored.len() as u64);
                    if let Some(fanout) = &act.hooks.fanout {
                        fanout.committed(&stored, &toast);
                    }
                    let mut rest = stored.into_iter();
                    for w in waiters {
                        let part: Vec<StoredNotification> = rest.by_ref().take(w.count).collect();
                        let _ = w.reply.send(Ok(part));
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    let unavailable = matches!(e, StoreError::Unavailable(_));
                    for w in waiters {
                        let err = if unavailable {
                            StoreError::Unavailable(msg.clone())
                        } else {
                            StoreError::Corrupt(msg.clone())
                        };
                        let _ = w.reply.send(Err(err));
                    }
                }
            }
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
            if request.items.is_empty() {
                let _ = request.reply.send(Ok(Vec::new()));
                continue;
            }
            self.waiters.push(Waiter { count: request.items.len(), reply: request.reply });
            self.queue.extend(request.items);
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
    backend: &'static str,
}

impl StoreHandle {
    /// Starts the actor on its own arbiter around a pool built there.
    pub async fn start(url: crate::config::DatabaseUrl, pool_size: u32, hooks: Hooks) -> Result<Self, StoreError> {
        let arbiter = Arbiter::new();
        let (tx, rx) = oneshot::channel();
        let spawned = arbiter.spawn(async move {
            let checkpointer = match &url {
                crate::config::DatabaseUrl::Sqlite(path) => {
                    match crate::store::sqlite_checkpoint::Checkpointer::start(path.display().to_string()) {
                        Ok(c) => Some(c),
                        Err(e) => {
                            let _ = tx.send(Err(StoreError::Unavailable(format!("cannot start checkpoints: {e}"))));
                            return;
                        }
                    }
                }
                crate::config::DatabaseUrl::Postgres(_) => None,
            };
            let pools = async {
                let db = Db::connect(&url, pool_size).await?;
                let batch_db = match &db {
                    Db::Sqlite(_) => Db::connect(&url, 1).await?,
                    Db::Postgres(_) => db.clone(),
                };
                Ok::<_, StoreError>((db, batch_db))
            };
            let result = pools.await.map(|(db, batch_db)| {
                let backend = db.backend_name();
                let addr = Persistence {
                    db,
                    batch_db,
                    queue: Vec::new(),
                    waiters: Vec::new(),
                    writing: false,
                    in_flight: Arc::new(AtomicUsize::new(0)),
                    idle: Arc::new(Notify::new()),
                    flushers: Vec::new(),
                    hooks,
                    checkpointer,
                }
                .start();
                (addr, backend)
            });
            let _ = tx.send(result);
        });
        if !spawned {
            return Err(StoreError::Unavailable("persistence arbiter is not running".into()));
        }
        let (addr, backend) = rx.await.map_err(|_| StoreError::Unavailable("persistence arbiter stopped".into()))??;
        Ok(Self { addr, backend })
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
        let _ = self.addr.send(SetFanout(fanout)).await;
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
            g.push((self.addr.clone(), Store { items, reply: tx }));
            g.len() == 1
        });
        if first {
            actix::spawn(async { hand_over_gathered() });
        }
        rx.await.map_err(|_| StoreError::Unavailable("persistence batch was dropped".into()))?
    }

    /// Waits until every queued write and running job has finished (graceful shutdown).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.addr.send(Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}
