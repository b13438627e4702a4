//! Whether another node may be listening, so that a node alone on its PostgreSQL does not
//! announce what it stores.
//!
//! Every stored notification was announced with a NOTIFY that every listening node
//! receives, the storing node included: PostgreSQL's listening backend spent ~100 µs of
//! CPU handing each one to a node that then dropped it. A node alone needs none of them.
//!
//! A node is alone when, its listener connected, it sees no other node's listener among
//! the database's connections (each names itself in `application_name`, see
//! [`listener_name`]). A node that finds others is joining: it sends
//! [`Join`](super::ClusterEvent::Join) and waits, before it serves a tab, for each of them
//! to answer [`Welcome`](super::ClusterEvent::Welcome) (5 s at most). A node that hears a
//! join stops being alone first, then waits until every batch that decided not to
//! announce itself has committed ([`Membership::open`]), then answers. A tab on the new
//! node reads the database after that, so it finds those batches, and hears of the rest.
//! Of two nodes starting together, the one that connects its listener second sees the
//! other. A node whose listener is down announces everything, as it cannot hear a node
//! join. A node that is not alone looks every 5 s whether any other listener is left, in
//! its listener's loop, so that a join heard after the look is handled after it; a node
//! whose listener was down meanwhile joins again when it reconnects, and catches up.

use crate::metrics::Metrics;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::{RwLock, RwLockReadGuard};

/// What a node's listener connection calls itself (`application_name`).
pub fn listener_name(node: &str) -> String {
    format!("{LISTENER_PREFIX}{node}")
}

const LISTENER_PREFIX: &str = "notifyhub-listener-";

/// The query that lists the other listeners' names.
pub const OTHER_LISTENERS: &str = "SELECT DISTINCT application_name FROM pg_stat_activity \
     WHERE datname = current_database() AND application_name LIKE 'notifyhub-listener-%' \
     AND pid <> pg_backend_pid()";

/// The other nodes, from the listeners' names [`OTHER_LISTENERS`] found.
pub fn other_nodes(names: impl IntoIterator<Item = String>, me: &str) -> HashSet<String> {
    names
        .into_iter()
        .filter_map(|name| name.strip_prefix(LISTENER_PREFIX).map(str::to_string))
        .filter(|node| !node.is_empty() && node != me)
        .collect()
}

/// Whether this node is alone, and the fence between that and its batches.
pub struct Membership {
    alone: AtomicBool,
    /// Held shared by a batch from reading `alone` to its commit; taken exclusively
    /// by [`open`](Self::open).
    fence: RwLock<()>,
    metrics: Arc<Metrics>,
}

/// A batch's leave to store, and whether it must announce what it stores.
pub struct Announce<'a> {
    _fence: RwLockReadGuard<'a, ()>,
    /// Whether another node may be listening.
    pub others: bool,
}

impl Membership {
    /// Not alone until the listener has looked: announcing is always safe.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { alone: AtomicBool::new(false), fence: RwLock::new(()), metrics }
    }

    /// Whether this node saw no other node when its listener last connected.
    pub fn is_alone(&self) -> bool {
        self.alone.load(Ordering::SeqCst)
    }

    /// Marks this node alone (its listener, connected, saw nobody) or not.
    pub fn set_alone(&self, alone: bool) {
        self.alone.store(alone, Ordering::SeqCst);
        self.metrics.set_cluster_alone(alone);
    }

    /// For a batch: hold the answer until the batch has committed or failed.
    pub async fn announce(&self) -> Announce<'_> {
        let fence = self.fence.read().await;
        Announce { others: !self.is_alone(), _fence: fence }
    }

    /// Another node joins: from now on every batch announces itself; returns once the
    /// batches that decided not to have ended.
    pub async fn open(&self) {
        self.set_alone(false);
        // tokio's lock is fair: batches that ask after this wait behind it, and read
        // `alone` after it.
        drop(self.fence.write().await);
    }
}

/// A node's wait for the answers to its join, fed by its listener.
pub struct Joining {
    awaiting: HashSet<String>,
    serving: bool,
}

/// What the listener does after an answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Answered {
    /// Nothing yet (or nothing more).
    Nothing,
    /// The last awaited answer came: serve.
    Serve,
    /// An answer came after this node gave up waiting: the local tabs check the database.
    CatchUp,
}

impl Joining {
    /// Awaits an answer from each of `others`.
    pub fn new(others: HashSet<String>) -> Self {
        Self { awaiting: others, serving: false }
    }

    /// Whether this node serves: every answer came, or it gave up waiting.
    pub fn serving(&self) -> bool {
        self.serving
    }

    /// Serve now, when nobody was awaited at all (once).
    pub fn nobody_to_wait_for(&mut self) -> bool {
        let start = !self.serving && self.awaiting.is_empty();
        self.serving |= start;
        start
    }

    /// `from` answered.
    pub fn answered(&mut self, from: &str) -> Answered {
        if !self.awaiting.remove(from) {
            Answered::Nothing
        } else if self.serving {
            Answered::CatchUp
        } else if self.awaiting.is_empty() {
            self.serving = true;
            Answered::Serve
        } else {
            Answered::Nothing
        }
    }

    /// Stop waiting and serve; answers the nodes still silent.
    pub fn give_up(&mut self) -> Vec<String> {
        self.serving = true;
        let mut silent: Vec<String> = self.awaiting.iter().cloned().collect();
        silent.sort();
        silent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_other_nodes_are_the_listeners_but_this_one() {
        let names = ["notifyhub-listener-a1", "notifyhub-listener-b2", "psql", "notifyhub-listener-", "notifyhub-x"];
        let others = other_nodes(names.map(String::from), "a1");
        assert_eq!(others, HashSet::from(["b2".to_string()]));
        assert_eq!(listener_name("c3"), "notifyhub-listener-c3");
        assert_eq!(other_nodes([listener_name("c3")], "a1"), HashSet::from(["c3".to_string()]));
    }

    fn others(nodes: &[&str]) -> HashSet<String> {
        nodes.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_node_that_found_nobody_serves_at_once() {
        let mut j = Joining::new(HashSet::new());
        assert!(j.nobody_to_wait_for());
        assert!(j.serving());
        assert!(!j.nobody_to_wait_for(), "once");
        assert_eq!(j.answered("b2"), Answered::Nothing);
    }

    #[test]
    fn a_joining_node_serves_once_every_node_it_found_answered() {
        let mut j = Joining::new(others(&["b2", "c3"]));
        assert!(!j.nobody_to_wait_for());
        assert_eq!(j.answered("zz"), Answered::Nothing, "a node it did not find");
        assert_eq!(j.answered("b2"), Answered::Nothing);
        assert_eq!(j.answered("b2"), Answered::Nothing, "twice");
        assert!(!j.serving());
        assert_eq!(j.answered("c3"), Answered::Serve);
        assert!(j.serving());
        assert_eq!(j.answered("c3"), Answered::Nothing);
    }

    #[test]
    fn a_node_that_gave_up_waiting_catches_up_on_each_late_answer() {
        let mut j = Joining::new(others(&["c3", "b2", "d4"]));
        assert_eq!(j.answered("d4"), Answered::Nothing);
        assert_eq!(j.give_up(), vec!["b2".to_string(), "c3".to_string()]);
        assert!(j.serving());
        assert!(!j.nobody_to_wait_for(), "already serving");
        assert_eq!(j.answered("b2"), Answered::CatchUp);
        assert_eq!(j.answered("b2"), Answered::Nothing);
        assert_eq!(j.answered("d4"), Answered::Nothing, "answered in time");
        assert_eq!(j.answered("c3"), Answered::CatchUp);
    }

    #[actix_web::test]
    async fn a_join_waits_for_the_batches_that_decided_alone_and_later_ones_announce() {
        let metrics = Arc::new(Metrics::default());
        let m = Arc::new(Membership::new(metrics.clone()));
        assert!(m.announce().await.others, "not alone before the listener looked");
        m.set_alone(true);
        assert!(metrics.render("postgres").contains("notifyhub_cluster_alone 1"));
        let quiet = m.announce().await;
        assert!(!quiet.others);
        let opened = Arc::new(AtomicBool::new(false));
        let opening = {
            let (m, opened) = (m.clone(), opened.clone());
            tokio::spawn(async move {
                m.open().await;
                opened.store(true, Ordering::SeqCst);
            })
        };
        // Until the opening task waits for the fence (or, were there no fence, has ended).
        for _ in 0..100 {
            tokio::task::yield_now().await;
            if m.fence.try_read().is_err() {
                break;
            }
        }
        assert!(!opened.load(Ordering::SeqCst), "answered while a quiet batch was uncommitted");
        drop(quiet);
        opening.await.unwrap();
        assert!(opened.load(Ordering::SeqCst));
        assert!(m.announce().await.others);
        assert!(!m.is_alone());
        assert!(metrics.render("postgres").contains("notifyhub_cluster_alone 0"));
        assert!(!metrics.render("sqlite").contains("notifyhub_cluster_alone"), "single-node by nature");
    }
}
