//! Several nodes on one PostgreSQL, with no broker of their own: a node that stores a
//! notification NOTIFYs `notifyhub` in the same transaction, with the toast frame when it
//! fits in a payload; every node LISTENs on a dedicated connection and tells its local
//! sessions, which send the frame or fetch what they miss from the database; preference
//! changes drop the other nodes' cached copies. When the listener was down (reconnect
//! with backoff), every local session checks the database for anything it missed.
//! Frames travel only for users with a tab on another node (see [`presence`]).

pub mod membership;
pub mod presence;

use crate::actors::dispatcher::ProfileCache;
use crate::actors::persistence::StoreHandle;
use crate::actors::session::Sessions;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use futures_util::StreamExt;
use presence::RemoteTabs;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// The channel every node listens on.
pub const CHANNEL: &str = "notifyhub";

/// PostgreSQL refuses NOTIFY payloads of 8000 bytes or more; a toast frame that would
/// not fit stays behind and the receiving node reads the notification instead.
const MAX_PAYLOAD_BYTES: usize = 7999;

/// A stored notification's numbers, as the other nodes hear of it without its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// Owner.
    pub user: Uuid,
    /// Its sequence number.
    pub seq: i64,
    /// Whether its toast goes out.
    pub toast: bool,
    /// Owner's unread count after it.
    pub unread: i64,
}

/// A message between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterEvent {
    /// A notification was stored.
    Committed {
        /// Node that stored it.
        node: String,
        /// Its numbers.
        row: Committed,
        /// Its toast frame, when it fitted.
        frame: Option<String>,
    },
    /// Notifications were stored, none with a frame to carry: one payload for many, so
    /// that PostgreSQL queues, and every node's listener reads, one message per ~100.
    CommittedMany {
        /// Node that stored them.
        node: String,
        /// Them, in the order they were stored.
        rows: Vec<Committed>,
    },
    /// A user's preferences or push subscriptions changed: drop cached copies.
    Profile {
        /// Node that changed them.
        node: String,
        /// The user.
        user: Uuid,
    },
    /// A user's unread count changed (mark read, read-all, erase).
    Unread {
        /// Node that changed it.
        node: String,
        /// The user.
        user: Uuid,
        /// The new count.
        count: i64,
    },
    /// These users' first tab opened on `node`.
    Here {
        /// The node.
        node: String,
        /// The users.
        users: Vec<Uuid>,
    },
    /// These users' last tab on `node` closed.
    Gone {
        /// The node.
        node: String,
        /// The users.
        users: Vec<Uuid>,
    },
    /// Forget which users have tabs on `node` (its list follows); `ask`: and tell it
    /// yours, as it may have missed what you said.
    Reset {
        /// The node.
        node: String,
        /// Whether the others answer with their own lists.
        ask: bool,
    },
    /// `node` is about to serve tabs: announce what you store from now on, and answer
    /// once nothing you stored unannounced is still uncommitted (see [`membership`]).
    Join {
        /// The node.
        node: String,
    },
    /// `node` answers `to`'s [`Join`](ClusterEvent::Join).
    Welcome {
        /// The node that answers.
        node: String,
        /// The node that joined.
        to: String,
    },
}

impl ClusterEvent {
    /// The NOTIFY payload; a `Committed` frame is left out when the payload would reach
    /// PostgreSQL's 8000-byte limit.
    pub fn encode(&self) -> String {
        match self {
            ClusterEvent::Committed { node, row, frame } => {
                let head = committed_head(node, row);
                match frame {
                    Some(f) if frame_fits(&head, f) => format!("{head}|{f}"),
                    _ => head,
                }
            }
            ClusterEvent::CommittedMany { node, rows } => {
                let mut out = format!("m|{node}|");
                for (i, r) in rows.iter().enumerate() {
                    if i > 0 {
                        out.push(';');
                    }
                    push_committed(&mut out, r);
                }
                out
            }
            ClusterEvent::Unread { node, user, count } => format!("u|{node}|{user}|{count}"),
            ClusterEvent::Profile { node, user } => format!("p|{node}|{user}"),
            ClusterEvent::Here { node, users } => format!("h|{node}|{}", id_list(users)),
            ClusterEvent::Gone { node, users } => format!("g|{node}|{}", id_list(users)),
            ClusterEvent::Reset { node, ask } => format!("r|{node}|{}", u8::from(*ask)),
            ClusterEvent::Join { node } => format!("j|{node}"),
            ClusterEvent::Welcome { node, to } => format!("w|{node}|{to}"),
        }
    }

    /// `Here` (or `Gone`) payloads for `users`, as many as it takes to stay under the
    /// payload limit; none for nobody.
    pub fn presence(node: &str, here: bool, users: &[Uuid]) -> Vec<String> {
        // "h|node|" and 33 bytes per user (32 hex digits and a comma).
        let per_payload = ((MAX_PAYLOAD_BYTES - node.len() - 3) / 33).max(1);
        users
            .chunks(per_payload)
            .map(|chunk| {
                let users = chunk.to_vec();
                let node = node.to_string();
                if here { ClusterEvent::Here { node, users } } else { ClusterEvent::Gone { node, users } }.encode()
            })
            .collect()
    }

    /// Whether `payload` was sent by `node` (every kind carries the sender second), told
    /// without parsing the rest: a node hears its own NOTIFYs too, frames and all.
    pub fn is_from(payload: &str, node: &str) -> bool {
        payload.split('|').nth(1) == Some(node)
    }

    /// Parses a payload; `None` for anything malformed (ignored, never fatal).
    pub fn decode(payload: &str) -> Option<Self> {
        // A frame is JSON and may hold `|`: it is everything after the sixth field.
        let parts: Vec<&str> = payload.splitn(7, '|').collect();
        match parts.as_slice() {
            ["n", node, user, seq, toast, unread, rest @ ..] if rest.len() <= 1 => Some(ClusterEvent::Committed {
                node: node.to_string(),
                row: Committed {
                    user: Uuid::parse_str(user).ok()?,
                    seq: seq.parse().ok()?,
                    toast: *toast == "1",
                    unread: unread.parse().ok()?,
                },
                frame: rest.first().map(|f| f.to_string()),
            }),
            ["p", node, user] => {
                Some(ClusterEvent::Profile { node: node.to_string(), user: Uuid::parse_str(user).ok()? })
            }
            ["u", node, user, count] => Some(ClusterEvent::Unread {
                node: node.to_string(),
                user: Uuid::parse_str(user).ok()?,
                count: count.parse().ok()?,
            }),
            ["m", node, rows] => Some(ClusterEvent::CommittedMany {
                node: node.to_string(),
                rows: rows.split(';').map(parse_committed).collect::<Option<_>>()?,
            }),
            ["h", node, ids] => Some(ClusterEvent::Here { node: node.to_string(), users: parse_id_list(ids)? }),
            ["g", node, ids] => Some(ClusterEvent::Gone { node: node.to_string(), users: parse_id_list(ids)? }),
            ["r", node, ask] => Some(ClusterEvent::Reset { node: node.to_string(), ask: *ask == "1" }),
            ["j", node] => Some(ClusterEvent::Join { node: node.to_string() }),
            ["w", node, to] => Some(ClusterEvent::Welcome { node: node.to_string(), to: to.to_string() }),
            _ => None,
        }
    }
}

/// A `Committed` payload without its frame.
fn committed_head(node: &str, row: &Committed) -> String {
    let Committed { user, seq, toast, unread } = row;
    format!("n|{node}|{user}|{seq}|{}|{unread}", u8::from(*toast))
}

/// Whether `frame` fits after `head` under PostgreSQL's payload limit.
fn frame_fits(head: &str, frame: &str) -> bool {
    head.len() + 1 + frame.len() <= MAX_PAYLOAD_BYTES
}

/// `user,seq,toast,unread`: at most 32 + 1 + 19 + 3 + 19 bytes.
fn push_committed(out: &mut String, r: &Committed) {
    use std::fmt::Write;
    let _ = write!(out, "{},{},{},{}", r.user.simple(), r.seq, u8::from(r.toast), r.unread);
}

const MAX_COMMITTED_BYTES: usize = 74;

fn parse_committed(row: &str) -> Option<Committed> {
    let mut f = row.split(',');
    let c = Committed {
        user: Uuid::parse_str(f.next()?).ok()?,
        seq: f.next()?.parse().ok()?,
        toast: f.next()? == "1",
        unread: f.next()?.parse().ok()?,
    };
    f.next().is_none().then_some(c)
}

fn id_list(users: &[Uuid]) -> String {
    let mut out = String::with_capacity(users.len() * 33);
    for (i, u) in users.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(u.simple().encode_lower(&mut Uuid::encode_buffer()));
    }
    out
}

fn parse_id_list(ids: &str) -> Option<Vec<Uuid>> {
    ids.split(',').map(|id| Uuid::parse_str(id).ok()).collect()
}

/// One stored notification, as the other nodes hear of it.
pub struct CommittedRow<'a> {
    /// Its numbers.
    pub row: Committed,
    /// The toast frame (for toasts that go out to a tab on another node).
    pub frame: Option<&'a str>,
}

/// Payloads for a committed batch, in its order: a row with a frame that fits gets a
/// payload of its own; the rows between those share payloads up to the size limit.
pub fn committed_payloads<'a>(node: &str, rows: impl IntoIterator<Item = CommittedRow<'a>>) -> Vec<String> {
    let mut out = Vec::new();
    let mut packed = String::new();
    let packed_head = format!("m|{node}|");
    for CommittedRow { row, frame } in rows {
        if let Some(frame) = frame {
            let head = committed_head(node, &row);
            // A frame too large for a payload is left behind: the row packs like the rest.
            if frame_fits(&head, frame) {
                if !packed.is_empty() {
                    out.push(std::mem::take(&mut packed));
                }
                out.push(format!("{head}|{frame}"));
                continue;
            }
        }
        if packed.len() + 1 + MAX_COMMITTED_BYTES > MAX_PAYLOAD_BYTES {
            out.push(std::mem::take(&mut packed));
        }
        if packed.is_empty() {
            packed.push_str(&packed_head);
        } else {
            packed.push(';');
        }
        push_committed(&mut packed, &row);
    }
    if !packed.is_empty() {
        out.push(packed);
    }
    out
}

/// What the listener needs besides its connection.
pub struct Listener {
    /// The database.
    pub url: String,
    /// This node's id.
    pub node: String,
    /// This node's tabs.
    pub sessions: Arc<Sessions>,
    /// Cached profiles, which other nodes' changes invalidate.
    pub profiles: Arc<ProfileCache>,
    /// What the other nodes told this one.
    pub remote: Arc<RemoteTabs>,
    /// Sends this node's answers to the others.
    pub store: StoreHandle,
}

/// How long a joining node waits for the others' answers before it serves anyway; a late
/// answer makes its tabs check the database.
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Listens for other nodes' events until the process ends; reconnects with backoff
/// (1 s doubling to 30 s) and asks every local session to catch up after each
/// (re)connection. `joined` fires once this node may serve tabs: it has heard from every
/// node it found (see [`membership`]), or it found none, or 5 s went by (a late answer
/// then makes the local tabs check the database).
pub async fn listen(l: Listener, joined: tokio::sync::oneshot::Sender<()>) {
    let Listener { url, node, sessions, profiles, remote, store } = l;
    let membership = remote.membership();
    let mut joined = Some(joined);
    let mut backoff = Duration::from_secs(1);
    let mut first = true;
    loop {
        match connect(&url, &node).await {
            Ok((mut conn, others)) => {
                backoff = Duration::from_secs(1);
                // Unknown (the query failed): never alone, and nobody to wait for.
                membership.set_alone(others.as_ref().is_some_and(HashSet::is_empty));
                let others = others.unwrap_or_default();
                tracing::info!(node = %node, other_nodes = others.len(), "cluster: listening for other nodes");
                if membership.is_alone() {
                    tracing::info!("cluster: no other node on this database: stored notifications are not announced until one joins");
                }
                // What the others said while we were not listening is lost: start over.
                sessions.resync_presence(true);
                let mut joining = membership::Joining::new(others);
                let deadline = tokio::time::Instant::now() + JOIN_TIMEOUT;
                let start_serving = |joined: &mut Option<tokio::sync::oneshot::Sender<()>>| {
                    if !first {
                        // Whatever other nodes stored while we were deaf is in the database.
                        sessions.catch_up_all();
                    }
                    if let Some(tx) = joined.take() {
                        let _ = tx.send(());
                    }
                };
                if joining.nobody_to_wait_for() {
                    start_serving(&mut joined);
                }
                let mut stream = std::pin::pin!(conn.notifications_stream());
                let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + RECHECK, RECHECK);
                loop {
                    let next = tokio::select! {
                        next = stream.next() => next,
                        _ = recheck.tick(), if joining.serving() && !membership.is_alone() => {
                            // In this loop, so that a join heard later is handled after.
                            if let Ok(others) = other_nodes(&store, &node).await {
                                if others.is_empty() {
                                    tracing::info!("cluster: no other node left on this database: stored notifications are no longer announced");
                                    membership.set_alone(true);
                                }
                            }
                            continue;
                        }
                        () = tokio::time::sleep_until(deadline), if !joining.serving() => {
                            let silent = joining.give_up();
                            tracing::warn!(?silent, "cluster: nodes did not answer this node's join in 5 s; serving anyway");
                            start_serving(&mut joined);
                            continue;
                        }
                    };
                    let Some(item) = next else { break };
                    match item {
                        // A node hears its own NOTIFYs too.
                        Ok(n) if ClusterEvent::is_from(&n.payload, &node) => {}
                        Ok(n) => match ClusterEvent::decode(&n.payload) {
                            Some(ClusterEvent::Committed { row, frame, .. }) => sessions.remote_committed(row, frame),
                            Some(ClusterEvent::CommittedMany { rows, .. }) => {
                                for row in rows {
                                    sessions.remote_committed(row, None);
                                }
                            }
                            Some(ClusterEvent::Unread { user, count, .. }) => sessions.unread_changed(user, count),
                            Some(ClusterEvent::Profile { user, .. }) => profiles.invalidate(user),
                            Some(event @ ClusterEvent::Reset { ask, .. }) => {
                                remote.apply(&event);
                                if ask {
                                    sessions.resync_presence(false);
                                }
                            }
                            Some(event @ (ClusterEvent::Here { .. } | ClusterEvent::Gone { .. })) => {
                                remote.apply(&event);
                            }
                            Some(ClusterEvent::Join { node: joining }) => {
                                tracing::info!(node = %joining, "cluster: a node joins");
                                let (remote, store, me) = (remote.clone(), store.clone(), node.clone());
                                actix::spawn(async move {
                                    remote.membership().open().await;
                                    let welcome = ClusterEvent::Welcome { node: me, to: joining };
                                    crate::state::notify_other_nodes(&store, welcome).await;
                                });
                            }
                            Some(ClusterEvent::Welcome { node: from, to }) if to == node => {
                                match joining.answered(&from) {
                                    membership::Answered::Serve => start_serving(&mut joined),
                                    membership::Answered::CatchUp => {
                                        // What it stored unannounced meanwhile is in the
                                        // database now.
                                        tracing::info!(node = %from, "cluster: a node answered late; tabs here catch up");
                                        sessions.catch_up_all();
                                    }
                                    membership::Answered::Nothing => {}
                                }
                            }
                            Some(ClusterEvent::Welcome { .. }) => {}
                            None => tracing::debug!(payload = %n.payload, "cluster: ignoring a malformed payload"),
                        },
                        Err(e) => {
                            tracing::warn!(error = %e, "cluster: listener connection failed");
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cluster: cannot listen for other nodes"),
        }
        // Deaf, this node cannot hear one join: it announces everything meanwhile.
        membership.set_alone(false);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
        first = false;
    }
}

/// How often a node that is not alone looks whether the others have all gone.
const RECHECK: Duration = Duration::from_secs(5);

/// The other nodes listening now, looked up on a pooled connection.
async fn other_nodes(store: &StoreHandle, node: &str) -> Result<HashSet<String>, crate::store::StoreError> {
    let node = node.to_string();
    store
        .call(move |db| async move {
            let crate::store::Db::Postgres(pool) = db else { return Ok(HashSet::new()) };
            let mut conn = pool.get().await?;
            let names: Vec<ListenerName> = diesel::sql_query(membership::OTHER_LISTENERS).load(&mut *conn).await?;
            Ok(membership::other_nodes(names.into_iter().map(|n| n.application_name), &node))
        })
        .await
}

/// A row of [`membership::OTHER_LISTENERS`].
#[derive(diesel::QueryableByName)]
struct ListenerName {
    #[diesel(sql_type = diesel::sql_types::Text)]
    application_name: String,
}

/// Connects the listener under this node's name, listens, and lists the other nodes
/// listening (`None` when they cannot be listed); when there are any, tells them this
/// node joins.
async fn connect(
    url: &str,
    node: &str,
) -> Result<(AsyncPgConnection, Option<HashSet<String>>), Box<dyn std::error::Error + Send + Sync>> {
    let mut conn = AsyncPgConnection::establish(url).await?;
    // Node ids are hex digits (see `startup`): nothing to quote.
    conn.batch_execute(&format!("SET application_name = '{}'; LISTEN {CHANNEL}", membership::listener_name(node)))
        .await?;
    let names: Vec<ListenerName> = match diesel::sql_query(membership::OTHER_LISTENERS).load(&mut conn).await {
        Ok(names) => names,
        Err(e) => {
            // A database that hides its connections: every node announces everything,
            // as before nodes could tell they were alone.
            tracing::warn!(error = %e, "cluster: cannot list the other nodes; announcing every notification");
            return Ok((conn, None));
        }
    };
    let others = membership::other_nodes(names.into_iter().map(|n| n.application_name), node);
    if !others.is_empty() {
        conn.batch_execute(&format!("NOTIFY {CHANNEL}, '{}'", ClusterEvent::Join { node: node.to_string() }.encode()))
            .await?;
    }
    Ok((conn, Some(others)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_tells_its_own_payloads_without_parsing_them() {
        let user = Uuid::new_v4();
        for e in [
            ClusterEvent::Committed {
                node: "a1".into(),
                row: Committed { user, seq: 1, toast: true, unread: 1 },
                frame: Some("{\"x\":\"a1|b2\"}".into()),
            },
            ClusterEvent::Unread { node: "a1".into(), user, count: 0 },
            ClusterEvent::Profile { node: "a1".into(), user },
            ClusterEvent::Here { node: "a1".into(), users: vec![user] },
            ClusterEvent::Gone { node: "a1".into(), users: vec![user, user] },
            ClusterEvent::Reset { node: "a1".into(), ask: true },
            ClusterEvent::Join { node: "a1".into() },
            ClusterEvent::Welcome { node: "a1".into(), to: "b2".into() },
            ClusterEvent::CommittedMany {
                node: "a1".into(),
                rows: vec![Committed { user, seq: 1, toast: true, unread: 1 }],
            },
        ] {
            assert!(ClusterEvent::is_from(&e.encode(), "a1"));
            assert!(!ClusterEvent::is_from(&e.encode(), "b2"));
            assert!(!ClusterEvent::is_from(&e.encode(), "a"));
        }
        assert!(!ClusterEvent::is_from("garbage", "a1"));
    }

    #[test]
    fn payloads_round_trip_and_garbage_is_ignored() {
        let user = Uuid::new_v4();
        let frame = r#"{"type":"notification_toast","notification":{"title":"a|b"}}"#.to_string();
        for e in [
            ClusterEvent::Committed {
                node: "a1".into(),
                row: Committed { user, seq: 42, toast: false, unread: 7 },
                frame: None,
            },
            ClusterEvent::Committed {
                node: "a1".into(),
                row: Committed { user, seq: 43, toast: true, unread: 8 },
                frame: Some(frame),
            },
            ClusterEvent::Unread { node: "b2".into(), user, count: 0 },
            ClusterEvent::Profile { node: "c3".into(), user },
            ClusterEvent::Here { node: "c3".into(), users: vec![user, Uuid::new_v4()] },
            ClusterEvent::Gone { node: "c3".into(), users: vec![user] },
            ClusterEvent::Reset { node: "c3".into(), ask: false },
            ClusterEvent::Reset { node: "c3".into(), ask: true },
            ClusterEvent::Join { node: "c3".into() },
            ClusterEvent::Welcome { node: "c3".into(), to: "a1".into() },
            ClusterEvent::CommittedMany {
                node: "c3".into(),
                rows: vec![
                    Committed { user, seq: 1, toast: true, unread: 1 },
                    Committed { user, seq: 2, toast: false, unread: 1 },
                ],
            },
        ] {
            assert_eq!(ClusterEvent::decode(&e.encode()), Some(e.clone()));
        }
        for bad in [
            "",
            "n|a|not-a-uuid|1|1|1",
            "x|y",
            "n|a|00000000-0000-0000-0000-000000000000|seq|1|1",
            "h|a|",
            "h|a|00000000000000000000000000000000,nope",
            "g|a",
            "j",
            "w|a",
            "m|a|",
            "m|a|00000000000000000000000000000000,1,1",
            "m|a|00000000000000000000000000000000,1,1,1,1",
        ] {
            assert_eq!(ClusterEvent::decode(bad), None, "{bad}");
        }
        let row = |frame| CommittedRow { row: Committed { user, seq: 3, toast: true, unread: 9 }, frame: Some(frame) };
        let p = committed_payloads("n1", vec![row("{}")]);
        assert_eq!(p, vec![format!("n|n1|{user}|3|1|9|{{}}")]);
        // A frame that would break PostgreSQL's payload limit stays behind.
        let big = format!("\"{}\"", "x".repeat(8000));
        let p = committed_payloads("n1", vec![row(&big)]);
        assert_eq!(
            ClusterEvent::decode(&p[0]),
            Some(ClusterEvent::CommittedMany {
                node: "n1".into(),
                rows: vec![Committed { user, seq: 3, toast: true, unread: 9 }]
            })
        );
        assert!(p[0].len() < 8000);
    }

    #[test]
    fn rows_without_frames_share_payloads_in_their_order() {
        let users: Vec<Uuid> = (0..250).map(|_| Uuid::new_v4()).collect();
        let framed = users[120];
        let rows = users.iter().enumerate().map(|(i, u)| CommittedRow {
            row: Committed { user: *u, seq: i64::MAX - i as i64, toast: i % 2 == 0, unread: i64::MAX },
            frame: (*u == framed).then_some("{\"f\":1}"),
        });
        let node = "a1b2c3d4e5f6";
        let payloads = committed_payloads(node, rows);
        assert!(payloads.iter().all(|p| p.len() <= MAX_PAYLOAD_BYTES && ClusterEvent::is_from(p, node)));
        // Heard in order: every row once, the framed one with its frame, in its place.
        let mut heard = Vec::new();
        for p in &payloads {
            match ClusterEvent::decode(p).expect(p) {
                ClusterEvent::CommittedMany { rows, .. } => heard.extend(rows.into_iter().map(|r| (r, None))),
                ClusterEvent::Committed { row, frame, .. } => heard.push((row, frame)),
                other => panic!("{other:?}"),
            }
        }
        let expected: Vec<_> = users
            .iter()
            .enumerate()
            .map(|(i, u)| {
                let numbers = Committed { user: *u, seq: i64::MAX - i as i64, toast: i % 2 == 0, unread: i64::MAX };
                (numbers, (*u == framed).then(|| "{\"f\":1}".to_string()))
            })
            .collect();
        assert_eq!(heard, expected);
        // 120 rows, the framed one, 129 rows: the packed runs take two payloads each at most.
        assert!(payloads.len() <= 5, "{}", payloads.len());
    }
}
