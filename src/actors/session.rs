//! `UserSession`: one actor per connected user, owning that user's open sockets (tabs)
//! and each socket's delivery cursor; stops after its last socket closes.
//!
//! Gap-free delivery: a socket joins in *replaying* state. While the stored
//! notifications after its cursor are read and sent, live ones arriving for the user
//! are buffered; then the buffer is drained, skipping what the replay already sent, and
//! the socket goes *live*. A live socket that sees a sequence number jump (a toast it
//! never got) goes back to replaying from its cursor. So every socket receives every
//! sequence number once, in order, whatever races the replay.

use super::persistence::{Fanout, StoreHandle};
use super::ws::{CloseSocket, SocketOutbox, WsConnection};
use crate::cluster::presence::Announcer;
use crate::domain::{Notification, NotificationToast, ServerMessage, StoredNotification, ToastFrames};
use crate::id_maps::IdDashMap;
use crate::store::{repository, StoreError};
use actix::prelude::*;
use bytestring::ByteString;
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// Notifications read per replay round trip.
const REPLAY_PAGE: i64 = 200;

/// A frame for one user's sockets, serialised once for all of them.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct Deliver {
    /// The notification's sequence number.
    pub seq: i64,
    /// `notification_toast`, or `unread_count` when the toast is withheld.
    pub frame: ByteString,
}

/// A socket joins (after the upgrade). `since`: replay everything after it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Join {
    /// Socket id, unique in this process.
    pub conn_id: u64,
    /// The socket actor.
    pub addr: Addr<WsConnection>,
    /// The client's last seen sequence number.
    pub since: Option<i64>,
    /// Where the socket's frames go.
    pub outbox: Arc<SocketOutbox>,
}

/// A socket closed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    /// Socket id.
    pub conn_id: u64,
}

/// The unread count changed (mark read, read-all, erase).
#[derive(Message)]
#[rtype(result = "()")]
pub struct UnreadChanged {
    /// The new count.
    pub count: i64,
}

/// Another node stored a notification for this user.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct RemoteCommitted {
    /// Its sequence number.
    pub seq: i64,
    /// Whether its toast goes out.
    pub toast: bool,
    /// The unread count after it.
    pub unread: i64,
    /// The toast frame, when the storing node could send it along.
    pub frame: Option<ByteString>,
}

/// Check the database for anything missed (the cluster listener was down).
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct CatchUp;

type ReplayResult = Result<(Vec<(Notification, bool)>, i64, i64, i64), StoreError>;

/// A page of replay, read for one socket.
#[derive(Message)]
#[rtype(result = "()")]
struct ReplayPage {
    conn_id: u64,
    /// The page (oldest first, with toast flags), the unread count, the cursor it was
    /// read after, and the user's last assigned number, read before the page.
    result: ReplayResult,
}

enum Cursor {
    /// Reading stored notifications; live ones wait in `buffered`. `first`: the
    /// socket has not been told `ready` yet (a first replay sends every notification as
    /// a toast; a catch-up sends what the live tabs got). `recheck`: something was
    /// committed elsewhere meanwhile, so read once more before going live.
    Replaying {
        buffered: Vec<Deliver>,
        first: bool,
        recheck: bool,
    },
    Live {
        last: i64,
    },
}

struct Conn {
    addr: Addr<WsConnection>,
    cursor: Cursor,
    outbox: Arc<SocketOutbox>,
}

/// One connected user.
pub struct UserSession {
    user: Uuid,
    conns: HashMap<u64, Conn>,
    store: StoreHandle,
    registry: Arc<Sessions>,
}

impl Actor for UserSession {
    type Context = Context<Self>;

    fn stopped(&mut self, ctx: &mut Self::Context) {
        let me = ctx.address();
        self.registry.remove(self.user, &me);
    }
}

/// Serialises a server message (infallible for these types).
pub fn frame(msg: &ServerMessage) -> ByteString {
    ByteString::from(serde_json::to_string(msg).unwrap_or_default())
}

fn toast_frame(notification: &Notification, unread_count: i64) -> ByteString {
    ByteString::from(NotificationToast::frame(notification, unread_count, chrono::Utc::now()))
}

impl UserSession {
    fn replay(&mut self, conn_id: u64, after: Option<i64>, ctx: &mut Context<Self>) {
        self.registry.metrics.add_replay_read();
        let user = self.user;
        let store = self.store.clone();
        let fut = async move {
            store
                .call(move |db| async move {
                    let (last, unread) = repository::user_counters(&db, user).await?;
                    // A client claiming more than exists (database reset) restarts from the end.
                    let after = after.map_or(last, |a| a.min(last));
                    let page = repository::notifications_after(&db, user, after, REPLAY_PAGE).await?;
                    Ok((page, unread, after, last))
                })
                .await
        };
        ctx.spawn(fut.into_actor(self).map(move |result, _, ctx| {
            ctx.notify(ReplayPage { conn_id, result });
        }));
    }

    /// Queues a frame; a backlog past `ws::MAX_BACKLOG_BYTES` marks the client too slow.
    fn send(conn: &Conn, frame: ByteString) {
        conn.outbox.push(frame.as_bytes());
    }

    /// Drops the sockets marked too slow (their streams end with a close frame).
    fn drop_slow(&mut self, ctx: &mut Context<Self>) {
        let before = self.conns.len();
        self.conns.retain(|_, c| !c.outbox.is_aborted());
        for _ in self.conns.len()..before {
            tracing::warn!(user_id = %self.user, "slow consumer: socket cut off, it will catch up by replay");
            self.registry.metrics.add_slow_consumer();
        }
        if before > 0 && self.conns.is_empty() {
            ctx.stop();
        }
    }
}

impl Handler<Join> for UserSession {
    type Result = ();

    fn handle(&mut self, msg: Join, ctx: &mut Context<Self>) {
        if !msg.addr.connected() {
            // Closed before it joined.
            if self.conns.is_empty() {
                ctx.stop();
            }
            return;
        }
        self.conns.insert(
            msg.conn_id,
            Conn {
                addr: msg.addr,
                cursor: Cursor::Replaying { buffered: Vec::new(), first: true, recheck: false },
                outbox: msg.outbox,
            },
        );
        self.replay(msg.conn_id, msg.since, ctx);
    }
}

impl Handler<Leave> for UserSession {
    type Result = ();

    fn handle(&mut self, msg: Leave, ctx: &mut Context<Self>) {
        self.conns.remove(&msg.conn_id);
        if self.conns.is_empty() {
            ctx.stop();
        }
    }
}

impl Handler<ReplayPage> for UserSession {
    type Result = ();

    fn handle(&mut self, msg: ReplayPage, ctx: &mut Context<Self>) {
        let Some(conn) = self.conns.get_mut(&msg.conn_id) else { return };
        let (page, unread, after, last) = match msg.result {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(user_id = %self.user, error = %e, "replay failed; closing the socket so the client retries");
                conn.addr.do_send(CloseSocket::try_again_later("replay failed: database unavailable"));
                return;
            }
        };
        let Cursor::Replaying { buffered, first, recheck } = &mut conn.cursor else { return };
        let first_round = *first;
        let again = std::mem::take(recheck);
        let mut buffered = std::mem::take(buffered);
        let full_page = page.len() as i64 == REPLAY_PAGE;
        let mut cursor = after;
        for (n, toast) in page {
            cursor = n.sequence_number;
            if first_round || toast {
                Self::send(conn, toast_frame(&n, unread));
            } else {
                Self::send(conn, frame(&ServerMessage::UnreadCount { count: unread }));
            }
        }
        if full_page || again {
            conn.cursor = Cursor::Replaying { buffered, first: first_round, recheck: false };
            self.replay(msg.conn_id, Some(cursor), ctx);
            return;
        }
        // Every number up to `last` was committed before the page was read, so a short
        // page holds all that still exist: the ones missing were erased. Moving past them
        // keeps `ready` at the user's last number after an erase, and spares the next live
        // toast a gap that only a database read would close.
        cursor = cursor.max(last);
        // Drain what arrived live meanwhile, in order, skipping what the replay sent.
        buffered.sort_by_key(|d| d.seq);
        let mut gap = false;
        let mut rest = Vec::new();
        for d in buffered {
            if gap {
                rest.push(d);
            } else if d.seq <= cursor {
                continue;
            } else if d.seq == cursor + 1 {
                cursor = d.seq;
                Self::send(conn, d.frame);
            } else {
                gap = true;
                rest.push(d);
            }
        }
        if gap {
            conn.cursor = Cursor::Replaying { buffered: rest, first: first_round, recheck: false };
            self.replay(msg.conn_id, Some(cursor), ctx);
            return;
        }
        conn.cursor = Cursor::Live { last: cursor };
        if first_round {
            Self::send(conn, frame(&ServerMessage::Ready { last_sequence_number: cursor }));
        }
        self.drop_slow(ctx);
    }
}

impl Handler<Deliver> for UserSession {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Context<Self>) {
        let mut catch_up = Vec::new();
        for (id, conn) in self.conns.iter_mut() {
            match &mut conn.cursor {
                Cursor::Replaying { buffered, .. } => buffered.push(msg.clone()),
                Cursor::Live { last } => {
                    if msg.seq <= *last {
                        continue;
                    }
                    if msg.seq == *last + 1 {
                        *last = msg.seq;
                        Self::send(conn, msg.frame.clone());
                    } else {
                        // A toast never reached us (another node, a lost message):
                        // fetch the missing ones before going on.
                        let after = *last;
                        conn.cursor = Cursor::Replaying { buffered: vec![msg.clone()], first: false, recheck: false };
                        catch_up.push((*id, after));
                    }
                }
            }
        }
        for (id, after) in catch_up {
            self.replay(id, Some(after), ctx);
        }
        self.drop_slow(ctx);
    }
}

impl UserSession {
    /// Catch up every live socket whose cursor is before `seq` (all of them when
    /// `None`); replaying ones read once more when done.
    fn catch_up(&mut self, seq: Option<i64>, ctx: &mut Context<Self>) {
        let mut start = Vec::new();
        for (id, conn) in self.conns.iter_mut() {
            match &mut conn.cursor {
                Cursor::Replaying { recheck, .. } => *recheck = true,
                Cursor::Live { last } => {
                    if seq.is_none_or(|s| s > *last) {
                        let after = *last;
                        conn.cursor = Cursor::Replaying { buffered: Vec::new(), first: false, recheck: false };
                        start.push((*id, after));
                    }
                }
            }
        }
        for (id, after) in start {
            self.replay(id, Some(after), ctx);
        }
    }
}

impl Handler<RemoteCommitted> for UserSession {
    type Result = ();

    fn handle(&mut self, msg: RemoteCommitted, ctx: &mut Context<Self>) {
        // The next number needs no read when there is nothing to show (only the badge
        // moves) or when the storing node sent the toast along.
        let next = if msg.toast { msg.frame } else { Some(frame(&ServerMessage::UnreadCount { count: msg.unread })) };
        if let Some(f) = next {
            for conn in self.conns.values_mut() {
                if let Cursor::Live { last } = &mut conn.cursor {
                    if *last + 1 == msg.seq {
                        *last = msg.seq;
                        Self::send(conn, f.clone());
                    }
                }
            }
        }
        self.catch_up(Some(msg.seq), ctx);
    }
}

impl Handler<CatchUp> for UserSession {
    type Result = ();

    fn handle(&mut self, _: CatchUp, ctx: &mut Context<Self>) {
        self.catch_up(None, ctx);
    }
}

impl Handler<UnreadChanged> for UserSession {
    type Result = ();

    fn handle(&mut self, msg: UnreadChanged, ctx: &mut Context<Self>) {
        let f = frame(&ServerMessage::UnreadCount { count: msg.count });
        for conn in self.conns.values() {
            Self::send(conn, f.clone());
        }
        self.drop_slow(ctx);
    }
}

/// The registry of connected users: `user → UserSession`.
pub struct Sessions {
    map: IdDashMap<Uuid, Addr<UserSession>>,
    store: StoreHandle,
    metrics: Arc<crate::metrics::Metrics>,
    /// In a cluster (`Some(node id)`): tells the other nodes which users have tabs here.
    announcer: Option<Announcer>,
}

impl Sessions {
    /// An empty registry; `cluster_node`: this node's id when it runs beside others.
    pub fn new(store: StoreHandle, metrics: Arc<crate::metrics::Metrics>, cluster_node: Option<String>) -> Arc<Self> {
        Arc::new_cyclic(|me| {
            let announcer = cluster_node.map(|node| Announcer::start(node, store.clone(), me.clone()));
            Self { map: IdDashMap::default(), store, metrics, announcer }
        })
    }

    /// The users with a tab here.
    pub fn local_users(&self) -> Vec<Uuid> {
        self.map.iter().map(|e| *e.key()).collect()
    }

    /// Tells the other nodes every user with a tab here (see [`Announcer::resync`]).
    pub fn resync_presence(&self, ask: bool) {
        if let Some(a) = &self.announcer {
            a.resync(ask);
        }
    }

    /// Drops `user`'s entry if it is still `session`'s.
    fn remove(&self, user: Uuid, session: &Addr<UserSession>) {
        self.map.remove_if(&user, |_, addr| {
            let mine = addr == session;
            // Under the map's lock, so announcements queue in the order of the changes.
            if let (true, Some(a)) = (mine, &self.announcer) {
                a.gone(user);
            }
            mine
        });
    }

    /// Adds a socket to its user's session, creating the session when needed.
    pub async fn join(self: &Arc<Self>, user: Uuid, join: Join) {
        let mut join = Some(join);
        for _ in 0..3 {
            let addr = self
                .map
                .entry(user)
                .or_insert_with(|| {
                    if let Some(a) = &self.announcer {
                        a.here(user);
                    }
                    UserSession { user, conns: HashMap::new(), store: self.store.clone(), registry: self.clone() }
                        .start()
                })
                .clone();
            let Some(msg) = join.take() else { return };
            match addr.try_send(msg) {
                Ok(()) => return,
                Err(SendError::Full(msg)) => {
                    let _ = addr.send(msg).await;
                    return;
                }
                Err(SendError::Closed(msg)) => {
                    // The session was stopping (its last tab just closed): start a new one.
                    self.remove(user, &addr);
                    join = Some(msg);
                }
            }
        }
    }

    /// A socket closed.
    pub fn leave(&self, user: Uuid, conn_id: u64) {
        if let Some(addr) = self.map.get(&user) {
            addr.do_send(Leave { conn_id });
        }
    }

    /// Tells a user's open tabs their unread count changed.
    pub fn unread_changed(&self, user: Uuid, count: i64) {
        if let Some(addr) = self.map.get(&user) {
            addr.do_send(UnreadChanged { count });
        }
    }

    /// Another node stored a notification for `user` (with its toast frame when the
    /// NOTIFY payload had room for it).
    pub fn remote_committed(&self, row: crate::cluster::Committed, frame: Option<String>) {
        if let Some(addr) = self.map.get(&row.user) {
            let crate::cluster::Committed { seq, toast, unread, .. } = row;
            addr.do_send(RemoteCommitted { seq, toast, unread, frame: frame.map(ByteString::from) });
        }
    }

    /// Every session checks the database for anything it missed.
    pub fn catch_up_all(&self) {
        for entry in self.map.iter() {
            entry.value().do_send(CatchUp);
        }
    }
}

impl Fanout for Sessions {
    fn committed(&self, committed: &[StoredNotification], toast: &[bool]) {
        let mut frames = ToastFrames::new(chrono::Utc::now());
        for (stored, &toast) in committed.iter().zip(toast) {
            // Serialise only for users with a socket here, once for all their tabs.
            // Cloned, so the map's lock is not held while the frame is written.
            let Some(addr) = self.map.get(&stored.user_id).map(|a| a.clone()) else { continue };
            let frame = if toast {
                ByteString::from(match &stored.toast_frame {
                    Some(f) => f.clone(),
                    None => frames.frame(
                        &stored.content,
                        stored.metadata_json.as_deref(),
                        (stored.id, stored.user_id, stored.sequence_number),
                        stored.unread_count,
                    ),
                })
            } else {
                frame(&ServerMessage::UnreadCount { count: stored.unread_count })
            };
            addr.do_send(Deliver { seq: stored.sequence_number, frame });
        }
    }
}
