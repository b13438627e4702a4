//! Which users have a tab open on another node.
//!
//! A toast's frame is most of its NOTIFY payload (~900 of ~1,000 bytes), and every node
//! receives every payload; a frame is only worth sending when another node will put it
//! on a socket. So each node tells the others when a user's first tab opens on it and
//! when the last one closes ([`Announcer`]), and keeps what the others told it
//! ([`RemoteTabs`]); a notification's frame rides in its NOTIFY only when its owner has
//! a tab elsewhere.
//!
//! Being wrong is never unsafe, only slower: a node that sends no frame for a user with
//! a tab elsewhere makes that node read the notification back (as for a frame too large
//! for a payload), and a stale entry only sends a frame nobody uses. A node that
//! (re)connects its listener asks the others to start over ([`ClusterEvent::Reset`]);
//! entries of a node that died stay until the hub restarts.

use super::membership::Membership;
use super::ClusterEvent;
use crate::actors::persistence::StoreHandle;
use crate::actors::session::Sessions;
use crate::metrics::Metrics;
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use tokio::sync::mpsc;
use uuid::Uuid;

/// What the other nodes told this one: user → the nodes where that user has a tab.
pub struct RemoteTabs {
    users: crate::id_maps::IdDashMap<Uuid, Vec<Arc<str>>>,
    metrics: Arc<Metrics>,
    membership: Membership,
}

impl RemoteTabs {
    /// Nobody anywhere yet.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { users: Default::default(), membership: Membership::new(metrics.clone()), metrics }
    }

    /// Whether any other node listens at all.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// Whether `user` has a tab on another node, as far as this node knows.
    pub fn elsewhere(&self, user: &Uuid) -> bool {
        self.users.contains_key(user)
    }

    /// Applies a presence message from another node; other kinds are not ours.
    pub fn apply(&self, event: &ClusterEvent) {
        match event {
            ClusterEvent::Here { node, users } => {
                let node: Arc<str> = Arc::from(node.as_str());
                for user in users {
                    let mut nodes = self.users.entry(*user).or_default();
                    if !nodes.contains(&node) {
                        nodes.push(node.clone());
                    }
                }
            }
            ClusterEvent::Gone { node, users } => {
                for user in users {
                    self.users.remove_if_mut(user, |_, nodes| {
                        nodes.retain(|n| **n != **node);
                        nodes.is_empty()
                    });
                }
            }
            ClusterEvent::Reset { node, .. } => self.users.retain(|_, nodes| {
                nodes.retain(|n| **n != **node);
                !nodes.is_empty()
            }),
            _ => return,
        }
        self.metrics.set_users_elsewhere(self.users.len() as u64);
    }
}

/// A change of this node's tabs, in the order the session registry made it.
#[derive(Debug)]
enum Change {
    /// A user's first tab here opened.
    Here(Uuid),
    /// A user's last tab here closed.
    Gone(Uuid),
    /// Tell the others every user with a tab here, after they forget what they knew;
    /// `ask`: and have them do the same (this node's listener missed what they said).
    Resync { ask: bool },
}

/// Tells the other nodes of this node's tabs: one task sends the changes in the order
/// they happened, as many at once as have queued up (a thousand tabs opening cost a few
/// NOTIFYs, not a thousand).
#[derive(Clone)]
pub struct Announcer {
    tx: mpsc::UnboundedSender<Change>,
}

impl Announcer {
    /// Starts the task; `local` lists the users with a tab here.
    pub fn start(node: String, store: StoreHandle, local: Weak<Sessions>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        actix::spawn(run(rx, node, store, local));
        Self { tx }
    }

    /// A user's first tab here opened. Call it where the registry changed, under its
    /// lock, so that the changes queue up in the order they were made.
    pub fn here(&self, user: Uuid) {
        let _ = self.tx.send(Change::Here(user));
    }

    /// A user's last tab here closed (same rule as [`here`](Self::here)).
    pub fn gone(&self, user: Uuid) {
        let _ = self.tx.send(Change::Gone(user));
    }

    /// Tells the others every user with a tab here (see `Change::Resync`).
    pub fn resync(&self, ask: bool) {
        let _ = self.tx.send(Change::Resync { ask });
    }
}

/// The payloads for the changes queued so far. A resync lists the registry as it is
/// now, read after every queued change was taken, so it supersedes them all; the
/// changes made while it was read queue up behind and go next.
fn payloads(node: &str, changes: Vec<Change>, local: impl FnOnce() -> Vec<Uuid>) -> Vec<String> {
    let resync = changes.iter().filter_map(|c| if let Change::Resync { ask } = c { Some(*ask) } else { None });
    if let Some(ask) = resync.reduce(|a, b| a || b) {
        let mut out = vec![ClusterEvent::Reset { node: node.to_string(), ask }.encode()];
        out.extend(ClusterEvent::presence(node, true, &local()));
        return out;
    }
    // Only the last change of each user counts (a tab opened and closed is gone).
    let mut last: HashMap<Uuid, bool> = HashMap::new();
    for change in changes {
        match change {
            Change::Here(user) => last.insert(user, true),
            Change::Gone(user) => last.insert(user, false),
            Change::Resync { .. } => unreachable!("handled above"),
        };
    }
    let ids = |state: bool| last.iter().filter(|(_, here)| **here == state).map(|(u, _)| *u).collect::<Vec<_>>();
    let mut out = ClusterEvent::presence(node, true, &ids(true));
    out.extend(ClusterEvent::presence(node, false, &ids(false)));
    out
}

async fn run(mut rx: mpsc::UnboundedReceiver<Change>, node: String, store: StoreHandle, local: Weak<Sessions>) {
    // A failed send leaves the others knowing less or more than is true; the next send
    // is then a full resync.
    let mut failed = false;
    while let Some(first) = rx.recv().await {
        let mut changes = vec![first];
        while let Ok(c) = rx.try_recv() {
            changes.push(c);
        }
        if failed {
            changes.push(Change::Resync { ask: false });
        }
        let Some(sessions) = local.upgrade() else { return };
        let batch = payloads(&node, changes, || sessions.local_users());
        drop(sessions);
        if batch.is_empty() {
            continue;
        }
        let sent = store.call(move |db| async move { crate::store::notify_nodes(&db, batch).await }).await;
        failed = sent.is_err();
        if let Err(e) = sent {
            tracing::warn!(error = %e, "cluster: could not tell the other nodes which users have tabs here");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tabs() -> RemoteTabs {
        RemoteTabs::new(Arc::new(Metrics::default()))
    }

    fn here(node: &str, users: &[Uuid]) -> ClusterEvent {
        ClusterEvent::Here { node: node.into(), users: users.to_vec() }
    }

    fn gone(node: &str, users: &[Uuid]) -> ClusterEvent {
        ClusterEvent::Gone { node: node.into(), users: users.to_vec() }
    }

    #[test]
    fn a_user_is_elsewhere_while_any_other_node_has_a_tab() {
        let t = tabs();
        let (u, v) = (Uuid::new_v4(), Uuid::new_v4());
        assert!(!t.elsewhere(&u));
        t.apply(&here("b", &[u, v]));
        t.apply(&here("c", &[u]));
        t.apply(&here("b", &[u])); // said again (a resync): still one entry for b
        assert!(t.elsewhere(&u) && t.elsewhere(&v));
        t.apply(&gone("b", &[u]));
        assert!(t.elsewhere(&u), "c still has a tab");
        t.apply(&gone("c", &[u]));
        assert!(!t.elsewhere(&u));
        assert!(t.elsewhere(&v));
        t.apply(&gone("c", &[v])); // c never had v
        assert!(t.elsewhere(&v));
        assert!(t.metrics.render("postgres").contains("notifyhub_cluster_users_elsewhere 1\n"));
    }

    #[test]
    fn a_reset_forgets_one_node_only() {
        let t = tabs();
        let (u, v) = (Uuid::new_v4(), Uuid::new_v4());
        t.apply(&here("b", &[u, v]));
        t.apply(&here("c", &[v]));
        t.apply(&ClusterEvent::Reset { node: "b".into(), ask: true });
        assert!(!t.elsewhere(&u));
        assert!(t.elsewhere(&v));
        // Other kinds leave it alone.
        t.apply(&ClusterEvent::Profile { node: "c".into(), user: v });
        assert!(t.elsewhere(&v));
    }

    #[test]
    fn queued_changes_keep_each_users_last_state() {
        let (u, v, w) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let changes = vec![Change::Here(u), Change::Here(v), Change::Gone(u), Change::Gone(w), Change::Here(w)];
        let sent = payloads("a", changes, || panic!("no resync asked"));
        let t = tabs();
        t.apply(&here("a", &[u, w])); // what the others knew before
        for p in &sent {
            t.apply(&ClusterEvent::decode(p).unwrap());
        }
        assert!(!t.elsewhere(&u) && t.elsewhere(&v) && t.elsewhere(&w));
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert!(payloads("a", Vec::new(), Vec::new).is_empty());
    }

    #[test]
    fn a_resync_lists_the_registry_as_it_is_and_replaces_what_was_known() {
        let (u, v) = (Uuid::new_v4(), Uuid::new_v4());
        let changes =
            vec![Change::Here(u), Change::Resync { ask: false }, Change::Gone(v), Change::Resync { ask: true }];
        let sent = payloads("a", changes, || vec![v]);
        assert_eq!(ClusterEvent::decode(&sent[0]), Some(ClusterEvent::Reset { node: "a".into(), ask: true }));
        let t = tabs();
        t.apply(&here("a", &[u]));
        for p in &sent {
            t.apply(&ClusterEvent::decode(p).unwrap());
        }
        assert!(!t.elsewhere(&u), "the queued Here(u) is superseded by the list");
        assert!(t.elsewhere(&v), "the list is read after the queued Gone(v)");
    }

    #[test]
    fn thousands_of_users_fit_in_payloads_under_the_limit() {
        let users: Vec<Uuid> = (0..5000).map(|_| Uuid::new_v4()).collect();
        let sent = ClusterEvent::presence("a1b2c3d4e5f6", true, &users);
        assert!(sent.len() > 1);
        assert!(sent.iter().all(|p| p.len() <= super::super::MAX_PAYLOAD_BYTES), "a payload is too large");
        let mut back = Vec::new();
        for p in &sent {
            match ClusterEvent::decode(p) {
                Some(ClusterEvent::Here { node, users }) if node == "a1b2c3d4e5f6" => back.extend(users),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(back, users);
    }
}
