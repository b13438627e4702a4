//! Recipients' profiles (preferences, and whether they have a push subscription), cached
//! for the dispatcher's rules, and read from the database in gathered reads.
//!
//! A profile the cache lacks (a user's first event on this node, or the first after the
//! cache let it expire) costs a read: on PostgreSQL a statement for the database to run.
//! Events to many users each seen seldom (the ingest scenario names a new user every
//! time) made that a read per event. So reads are gathered as the writer gathers its
//! commits: a miss while no read is on its way is read at once; the misses of events
//! dispatched meanwhile wait for it and then go together, in one read.

use super::persistence::StoreHandle;
use crate::crypto::PiiCipher;
use crate::domain::NotificationPreferences;
use crate::id_maps::{IdDashMap, IdMap};
use crate::metrics::Metrics;
use crate::store::{bridge, preferences_doc, StoreError};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use uuid::Uuid;

/// How long a cached profile is trusted without a reload (a safety net for changes
/// made through another node; changes made here invalidate at once).
const PROFILE_TTL: Duration = Duration::from_secs(60);

/// Profiles cached at most. Every recipient ever notified stays cached (an expired
/// profile is reloaded, not removed), so a stream of events to ever new users, or ids a
/// broken service makes up, would grow the cache without end: past this, expired
/// profiles go, and if that is not enough, all of them.
const MAX_PROFILES: usize = 100_000;

/// What the rules need to know about a recipient.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Preferences (defaults when never saved).
    pub prefs: NotificationPreferences,
    /// Whether the user has a push subscription.
    pub has_push: bool,
}

/// Recipients' profiles, cached; invalidated when preferences or subscriptions change.
pub struct ProfileCache {
    map: IdDashMap<Uuid, (Arc<Profile>, Instant)>,
    pii: PiiCipher,
    /// Profiles kept at most ([`MAX_PROFILES`]; fewer in tests).
    capacity: usize,
    reads: Arc<Mutex<Reads>>,
    metrics: Arc<Metrics>,
    /// Moves at every invalidation: a read begun before one may have read what the
    /// invalidation replaced, so what it found serves its events but is not cached.
    generation: std::sync::atomic::AtomicU64,
}

/// What one read found: the stored preferences documents, and who has a push subscription.
type Found = (HashMap<Uuid, serde_json::Value>, HashSet<Uuid>);

/// Where a waiting miss's answer goes.
type Reply = oneshot::Sender<Result<Arc<Found>, StoreError>>;

/// The reads' shared state.
#[derive(Default)]
struct Reads {
    /// Whether a read is on its way (its task takes whatever waits when it is done).
    running: bool,
    /// Misses waiting for the next read, each with where its answer goes.
    waiting: Vec<(Vec<Uuid>, Reply)>,
}

impl ProfileCache {
    /// An empty cache, counting its reads in `metrics`.
    pub fn new(pii: PiiCipher, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self::with_capacity(pii, metrics, MAX_PROFILES))
    }

    fn with_capacity(pii: PiiCipher, metrics: Arc<Metrics>, capacity: usize) -> Self {
        Self {
            map: IdDashMap::default(),
            pii,
            capacity,
            reads: Arc::default(),
            metrics,
            generation: Default::default(),
        }
    }

    /// Forgets a user's profile (their preferences or subscriptions changed).
    pub fn invalidate(&self, user: Uuid) {
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.map.remove(&user);
    }

    /// Caches `profile` for `id`, making room first when the cache is full.
    fn remember(&self, id: Uuid, profile: Arc<Profile>) {
        if self.map.len() >= self.capacity {
            self.map.retain(|_, (_, at)| at.elapsed() < PROFILE_TTL);
            if self.map.len() >= self.capacity {
                self.map.clear();
            }
        }
        self.map.insert(id, (profile, Instant::now()));
    }

    /// The profiles of `ids`, from the cache or read.
    pub async fn load(&self, store: &StoreHandle, ids: &[Uuid]) -> Result<IdMap<Uuid, Arc<Profile>>, StoreError> {
        let mut out = crate::id_maps::map_with_capacity(ids.len());
        let mut missing = Vec::new();
        for id in ids {
            match self.map.get(id) {
                Some(e) if e.1.elapsed() < PROFILE_TTL => {
                    out.insert(*id, e.0.clone());
                }
                _ => missing.push(*id),
            }
        }
        if missing.is_empty() {
            return Ok(out);
        }
        let generation = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        let found = read_gathered(&self.reads, store, &self.metrics, missing.clone()).await?;
        let current = self.generation.load(std::sync::atomic::Ordering::SeqCst) == generation;
        let (docs, push) = &*found;
        for id in missing {
            // One unreadable record (a wrong NOTIFYHUB_PII_KEY, a damaged row) must not
            // fail the event for every other recipient: that user gets the defaults,
            // which reach no address (toast and inbox only), and the operator a log line.
            let prefs = match preferences_doc::decode_or_default(docs.get(&id).cloned(), id, &self.pii) {
                Ok(prefs) => prefs,
                Err(e) => {
                    tracing::error!(user_id = %id, error = %e, "unreadable preferences; this recipient gets the defaults");
                    NotificationPreferences::defaults(id)
                }
            };
            let profile = Arc::new(Profile { prefs, has_push: push.contains(&id) });
            if current {
                self.remember(id, profile.clone());
            }
            out.insert(id, profile);
        }
        Ok(out)
    }
}

/// Reads `ids` with whatever else is waiting (see the module notes). The read runs in a
/// task of its own, so an event whose request goes away does not strand the others.
async fn read_gathered(
    reads: &Arc<Mutex<Reads>>,
    store: &StoreHandle,
    metrics: &Arc<Metrics>,
    ids: Vec<Uuid>,
) -> Result<Arc<Found>, StoreError> {
    let (tx, rx) = oneshot::channel();
    let start = {
        let mut state = lock(reads);
        state.waiting.push((ids, tx));
        !std::mem::replace(&mut state.running, true)
    };
    if start {
        let (reads, store, metrics) = (reads.clone(), store.clone(), metrics.clone());
        actix::spawn(async move { read_while_waiting(&reads, &store, &metrics).await });
    }
    rx.await.map_err(|_| StoreError::Unavailable("the profile read was dropped".into()))?
}

/// Takes what waits and reads it, until nothing does.
async fn read_while_waiting(reads: &Mutex<Reads>, store: &StoreHandle, metrics: &Metrics) {
    loop {
        let waiting = {
            let mut state = lock(reads);
            if state.waiting.is_empty() {
                state.running = false;
                return;
            }
            std::mem::take(&mut state.waiting)
        };
        let mut ids: Vec<Uuid> = waiting.iter().flat_map(|(ids, _)| ids.iter().copied()).collect();
        ids.sort_unstable();
        ids.dedup();
        metrics.add_profile_read();
        match store.call(move |db| async move { bridge::profiles_of(&db, &ids).await }).await {
            Ok(found) => {
                let found = Arc::new(found);
                for (_, reply) in waiting {
                    let _ = reply.send(Ok(found.clone()));
                }
            }
            Err(e) => {
                for (_, reply) in waiting {
                    let _ = reply.send(Err(e.for_another_caller()));
                }
            }
        }
    }
}

fn lock(reads: &Mutex<Reads>) -> std::sync::MutexGuard<'_, Reads> {
    // Pushes and takes only: a panic while holding it left it whole.
    reads.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(capacity: usize) -> ProfileCache {
        ProfileCache::with_capacity(PiiCipher::new(&[7; 32]), Arc::default(), capacity)
    }

    fn profile(user: Uuid) -> Arc<Profile> {
        Arc::new(Profile { prefs: NotificationPreferences::defaults(user), has_push: false })
    }

    #[test]
    fn a_full_cache_drops_its_expired_profiles_first() {
        let cache = cache(3);
        let (old, fresh) = (Uuid::new_v4(), Uuid::new_v4());
        let long_ago = Instant::now().checked_sub(PROFILE_TTL * 2).expect("an instant that far back");
        cache.map.insert(old, (profile(old), long_ago));
        cache.remember(fresh, profile(fresh));
        let another = Uuid::new_v4();
        cache.remember(another, profile(another));
        assert_eq!(cache.map.len(), 3, "not full yet: nothing goes");
        let newest = Uuid::new_v4();
        cache.remember(newest, profile(newest));
        assert!(!cache.map.contains_key(&old), "the expired profile made room");
        assert!([fresh, another, newest].iter().all(|u| cache.map.contains_key(u)));
    }

    #[test]
    fn a_cache_full_of_fresh_profiles_starts_afresh() {
        let cache = cache(3);
        let users: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
        for u in &users {
            cache.remember(*u, profile(*u));
        }
        let newest = Uuid::new_v4();
        cache.remember(newest, profile(newest));
        assert_eq!(cache.map.len(), 1);
        assert!(cache.map.contains_key(&newest));
        // However many users come, it never holds more than its capacity.
        for _ in 0..100 {
            let u = Uuid::new_v4();
            cache.remember(u, profile(u));
            assert!(cache.map.len() <= 3);
        }
    }
}
