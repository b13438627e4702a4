//! `UserSession`: one actor per connected user, owning that user's open sockets (tabs)
//! and each socket's delivery cursor; stops after its last socket closes.
//!
//! Gap-free delivery: a socket joins in *replaying* state. While the stored
//! notifications after its cursor are read and sent, live ones arriving for the user
//! are buffered; then the buffer is drained, skipping what the replay already sent, and
//! the socket goes *live*. A live socket that sees a sequence number jump (a toast it
//! never got) goes back to replaying from its cursor. So every socket receives every
//! sequence number once, in order, whatever races the replay.
//!
//! The sockets and their cursors (`Tabs`) sit behind a lock that the actor shares with
//! the fan-out: a live toast goes from the thread that stored it straight into each
//! live socket's outbox, without a message to the actor. Only what needs the actor —
//! a replay to start, a socket found too slow — is sent to it.

use super::persistence::{Fanout, StoreHandle};
use super::ws::{CloseSocket, SocketOutbox, WsConnection};
use crate::cluster::presence::Announcer;
use crate::domain::{Notification, NotificationToast, ServerMessage, StoredNotification, ToastFrames};
use crate::id_maps::IdDashMap;
use crate::store::{repository, StoreError};
use actix::prelude::*;
use bytestring::ByteString;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use uuid::Uuid;

/// Notifications read per replay round trip.
const REPLAY_PAGE: i64 = 200;

/// A frame for one user's sockets, serialised once for all of them.
#[derive(Clone)]
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

/// What a live delivery left for the actor: replays to start (sockets that saw a gap), and
/// sockets found too slow.
#[derive(Message, Default)]
#[rtype(result = "()")]
struct FollowUp {
    /// Sockets to replay, each after its cursor.
    replays: Vec<(u64, i64)>,
    /// Some socket's client was found too slow.
    slow: bool,
}

impl FollowUp {
    fn is_empty(&self) -> bool {
        self.replays.is_empty() && !self.slow
    }
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

impl Conn {
    /// Queues a frame; false when a backlog past `ws::MAX_BACKLOG_BYTES` marks the client
    /// too slow instead.
    fn send(&self, frame: &str) -> bool {
        self.outbox.push(frame.as_bytes())
    }
}

/// One user's open sockets, by socket id: shared by the user's session actor and the
/// fan-out (see the module's introduction).
#[derive(Default)]
struct Tabs {
    conns: HashMap<u64, Conn>,
}

/// [`Tabs`] behind their lock.
#[derive(Default)]
struct SharedTabs(Mutex<Tabs>);

impl SharedTabs {
    fn lock(&self) -> MutexGuard<'_, Tabs> {
        // Every change under the lock leaves the cursors consistent: carry on after a panic.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Tabs {
    /// Sends a live frame to each live socket it follows on, buffers it for replaying
    /// ones, and moves sockets that see a gap back to replaying.
    fn deliver(&mut self, d: &Deliver) -> FollowUp {
        let mut follow = FollowUp::default();
        for (id, conn) in self.conns.iter_mut() {
            match &mut conn.cursor {
                Cursor::Replaying { buffered, .. } => buffered.push(d.clone()),
                Cursor::Live { last } => {
                    if d.seq <= *last {
                        continue;
                    }
                    if d.seq == *last + 1 {
                        *last = d.seq;
                        follow.slow |= !conn.send(&d.frame);
                    } else {
                        // A toast never reached us (another node, a lost message):
                        // fetch the missing ones before going on.
                        let after = *last;
                        conn.cursor = Cursor::Replaying { buffered: vec![d.clone()], first: false, recheck: false };
                        follow.replays.push((*id, after));
                    }
                }
            }
        }
        follow
    }
}

/// One connected user.
pub struct UserSession {
    user: Uuid,
    tabs: Arc<SharedTabs>,
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

    /// Drops the sockets marked too slow (their streams end with a close frame).
    fn drop_slow(&mut self, ctx: &mut Context<Self>) {
        let mut tabs = self.tabs.lock();
        let before = tabs.conns.len();
        tabs.conns.retain(|_, c| !c.outbox.is_aborted());
        for _ in tabs.conns.len()..before {
            tracing::warn!(user_id = %self.user, "slow consumer: socket cut off, it will catch up by replay");
            self.registry.metrics.add_slow_consumer();
        }
        if before > 0 && tabs.conns.is_empty() {
            ctx.stop();
        }
    }
}

impl Handler<Join> for UserSession {
    type Result = ();

    fn handle(&mut self, msg: Join, ctx: &mut Context<Self>) {
        let mut tabs = self.tabs.lock();
        if !msg.addr.connected() {
            // Closed before it joined.
            if tabs.conns.is_empty() {
                ctx.stop();
            }
            return;
        }
        tabs.conns.insert(
            msg.conn_id,
            Conn {
                addr: msg.addr,
                cursor: Cursor::Replaying { buffered: Vec::new(), first: true, recheck: false },
                outbox: msg.outbox,
            },
        );
        drop(tabs);
        self.replay(msg.conn_id, msg.since, ctx);
    }
}

impl Handler<Leave> for UserSession {
    type Result = ();

    fn handle(&mut self, msg: Leave, ctx: &mut Context<Self>) {
        let mut tabs = self.tabs.lock();
        tabs.conns.remove(&msg.conn_id);
        if tabs.conns.is_empty() {
            ctx.stop();
        }
    }
}

impl Handler<ReplayPage> for UserSession {
    type Result = ();

    fn handle(&mut self, msg: ReplayPage, ctx: &mut Context<Self>) {
        let first_round = match self.tabs.lock().conns.get(&msg.conn_id) {
            Some(Conn { cursor: Cursor::Replaying { first, .. }, addr, .. }) => match &msg.result {
                Ok(_) => *first,
                Err(e) => {
                    tracing::warn!(user_id = %self.user, error = %e, "replay failed; closing the socket so the client retries");
                    addr.do_send(CloseSocket::try_again_later("replay failed: database unavailable"));
                    return;
                }
            },
            _ => return,
        };
        let Ok((page, unread, after, last)) = msg.result else { return };
        // The page's frames are written before the tabs are locked again: the thread
        // that stores notifications waits for that lock to hand this user's toasts over.
        // Meanwhile that thread can only add to the socket's buffer (the rest of its state
        // changes on this actor), which is read below.
        let full_page = page.len() as i64 == REPLAY_PAGE;
        let mut cursor = after;
        let unread_frame = frame(&ServerMessage::UnreadCount { count: unread });
        let frames: Vec<ByteString> = page
            .iter()
            .map(|(n, toast)| if first_round || *toast { toast_frame(n, unread) } else { unread_frame.clone() })
            .collect();
        if let Some((n, _)) = page.last() {
            cursor = n.sequence_number;
        }
        let tabs = self.tabs.clone();
        let mut tabs = tabs.lock();
        let Some(conn) = tabs.conns.get_mut(&msg.conn_id) else { return };
        let Cursor::Replaying { buffered, recheck, .. } = &mut conn.cursor else { return };
        let again = std::mem::take(recheck);
        let mut buffered = std::mem::take(buffered);
        for f in &frames {
            conn.send(f);
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
                conn.send(&d.frame);
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
            conn.send(&frame(&ServerMessage::Ready { last_sequence_number: cursor }));
        }
        drop(tabs);
        self.drop_slow(ctx);
    }
}

impl Handler<FollowUp> for UserSession {
    type Result = ();

    fn handle(&mut self, msg: FollowUp, ctx: &mut Context<Self>) {
        for (id, after) in msg.replays {
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
        for (id, conn) in self.tabs.lock().conns.iter_mut() {
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
            for conn in self.tabs.lock().conns.values_mut() {
                if let Cursor::Live { last } = &mut conn.cursor {
                    if *last + 1 == msg.seq {
                        *last = msg.seq;
                        conn.send(&f);
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
        for conn in self.tabs.lock().conns.values() {
            conn.send(&f);
        }
        self.drop_slow(ctx);
    }
}

/// A connected user's session, and its tabs for the fan-out to reach directly.
#[derive(Clone)]
struct SessionEntry {
    addr: Addr<UserSession>,
    tabs: Arc<SharedTabs>,
}

/// The registry of connected users: `user → UserSession`.
pub struct Sessions {
    map: IdDashMap<Uuid, SessionEntry>,
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
        self.map.remove_if(&user, |_, entry| {
            let mine = entry.addr == *session;
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
                    let tabs = Arc::new(SharedTabs::default());
                    let session =
                        UserSession { user, tabs: tabs.clone(), store: self.store.clone(), registry: self.clone() };
                    SessionEntry { addr: session.start(), tabs }
                })
                .addr
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
        if let Some(entry) = self.map.get(&user) {
            entry.addr.do_send(Leave { conn_id });
        }
    }

    /// Tells a user's open tabs their unread count changed.
    pub fn unread_changed(&self, user: Uuid, count: i64) {
        if let Some(entry) = self.map.get(&user) {
            entry.addr.do_send(UnreadChanged { count });
        }
    }

    /// Another node stored a notification for `user` (with its toast frame when the
    /// NOTIFY payload had room for it).
    pub fn remote_committed(&self, row: crate::cluster::Committed, frame: Option<String>) {
        if let Some(entry) = self.map.get(&row.user) {
            let crate::cluster::Committed { seq, toast, unread, .. } = row;
            entry.addr.do_send(RemoteCommitted { seq, toast, unread, frame: frame.map(ByteString::from) });
        }
    }

    /// Every session checks the database for anything it missed.
    pub fn catch_up_all(&self) {
        for entry in self.map.iter() {
            entry.value().addr.do_send(CatchUp);
        }
    }
}

impl Fanout for Sessions {
    fn committed(&self, committed: &[StoredNotification], toast: &[bool]) {
        let mut frames = ToastFrames::new(chrono::Utc::now());
        for (stored, &toast) in committed.iter().zip(toast) {
            // Serialise only for users with a socket here, once for all their tabs.
            // Their tabs are taken out, so the map's lock is not held while the frame is
            // written.
            let Some(tabs) = self.map.get(&stored.user_id).map(|e| e.tabs.clone()) else { continue };
            let frame = if toast {
                ByteString::from(match &stored.toast_frame {
                    Some(f) => f.clone(),
                    None => frames.frame(
                        &stored.content,
                        (stored.id, stored.user_id, stored.sequence_number),
                        stored.unread_count,
                    ),
                })
            } else {
                frame(&ServerMessage::UnreadCount { count: stored.unread_count })
            };
            let follow = tabs.lock().deliver(&Deliver { seq: stored.sequence_number, frame });
            if !follow.is_empty() {
                // Rare (a gap, a slow client): over to the session, if it is still there.
                match self.map.get(&stored.user_id) {
                    Some(entry) if Arc::ptr_eq(&entry.tabs, &tabs) => entry.addr.do_send(follow),
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix::dev::channel::{channel, AddressReceiver};
    use std::task::{Context, Waker};

    /// A socket with `cursor`; the receiver keeps its (actor-less) address open.
    fn tab(cursor: Cursor) -> (Conn, Arc<SocketOutbox>, AddressReceiver<WsConnection>) {
        let (tx, rx) = channel::<WsConnection>(16);
        let outbox = Arc::new(SocketOutbox::default());
        (Conn { addr: Addr::new(tx), cursor, outbox: outbox.clone() }, outbox, rx)
    }

    fn live(last: i64) -> Cursor {
        Cursor::Live { last }
    }

    fn replaying() -> Cursor {
        Cursor::Replaying { buffered: Vec::new(), first: true, recheck: false }
    }

    fn toast(seq: i64) -> Deliver {
        Deliver { seq, frame: ByteString::from(format!("toast {seq}")) }
    }

    /// The text of the frames queued for a socket, in order.
    fn sent(outbox: &SocketOutbox) -> Vec<String> {
        let Some(bytes) = outbox.take(&Context::from_waker(Waker::noop())) else { return Vec::new() };
        let mut texts = Vec::new();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            // Short unmasked text frames: 0x81, length, payload.
            assert_eq!(rest[0], 0x81);
            let len = rest[1] as usize;
            texts.push(String::from_utf8(rest[2..2 + len].to_vec()).unwrap());
            rest = &rest[2 + len..];
        }
        texts
    }

    #[test]
    fn a_live_socket_gets_each_next_number_once() {
        let (conn, outbox, _rx) = tab(live(4));
        let mut tabs = Tabs::default();
        tabs.conns.insert(1, conn);
        for seq in [5, 5, 3, 6] {
            assert!(tabs.deliver(&toast(seq)).is_empty());
        }
        assert_eq!(sent(&outbox), ["toast 5", "toast 6"]);
        assert!(matches!(tabs.conns[&1].cursor, Cursor::Live { last: 6 }));
    }

    #[test]
    fn a_gap_sends_the_socket_back_to_replay_from_its_cursor() {
        let (conn, outbox, _rx) = tab(live(4));
        let (other, other_outbox, _other_rx) = tab(live(6));
        let mut tabs = Tabs::default();
        tabs.conns.insert(1, conn);
        tabs.conns.insert(2, other);
        let follow = tabs.deliver(&toast(7));
        assert_eq!(follow.replays, [(1, 4)], "only the socket that missed 5 and 6 replays");
        assert!(!follow.slow);
        assert!(sent(&outbox).is_empty(), "nothing out of order");
        assert_eq!(sent(&other_outbox), ["toast 7"]);
        match &tabs.conns[&1].cursor {
            Cursor::Replaying { buffered, first: false, .. } => assert_eq!(buffered.len(), 1),
            _ => panic!("the socket replays (a catch-up, not a first replay)"),
        }
        // Meanwhile later toasts wait for the replay.
        assert!(tabs.deliver(&toast(8)).is_empty());
        let Cursor::Replaying { buffered, .. } = &tabs.conns[&1].cursor else { panic!("still replaying") };
        assert_eq!(buffered.iter().map(|d| d.seq).collect::<Vec<_>>(), [7, 8]);
    }

    #[test]
    fn a_replaying_socket_buffers_live_toasts() {
        let (conn, outbox, _rx) = tab(replaying());
        let mut tabs = Tabs::default();
        tabs.conns.insert(1, conn);
        assert!(tabs.deliver(&toast(1)).is_empty());
        assert!(sent(&outbox).is_empty());
        let Cursor::Replaying { buffered, .. } = &tabs.conns[&1].cursor else { panic!("still replaying") };
        assert_eq!(buffered.len(), 1);
    }

    #[test]
    fn a_client_too_slow_is_reported_to_the_session() {
        let (conn, outbox, _rx) = tab(live(0));
        let mut tabs = Tabs::default();
        tabs.conns.insert(1, conn);
        let huge = Deliver { seq: 1, frame: ByteString::from("x".repeat(super::super::ws::MAX_BACKLOG_BYTES + 1)) };
        let follow = tabs.deliver(&huge);
        assert!(follow.slow);
        assert!(follow.replays.is_empty());
        assert!(outbox.is_aborted());
    }
}
