//! What every request handler shares: settings, keys, the store handle, the known-user
//! registry and metrics.

use crate::actors::channel::Channels;
use crate::actors::dispatcher::{Dispatcher, ProfileCache};
use crate::actors::persistence::StoreHandle;
use crate::actors::session::Sessions;
use crate::actors::ws::Heartbeat;
use crate::auth::{JwtKeys, Role};
use crate::channels::sandbox::SandboxOutbox;
use crate::clock::Clock;
use crate::config::Settings;
use crate::crypto::PiiCipher;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::store::repository;
use actix::Addr;
use std::sync::Arc;
use uuid::Uuid;

/// Shared application state (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    /// Validated settings.
    pub settings: Arc<Settings>,
    /// JWT keys.
    pub jwt: JwtKeys,
    /// Contact-field cipher.
    pub pii: PiiCipher,
    /// The persistence actor.
    pub store: StoreHandle,
    /// Users already recorded in the database, with their role.
    pub users: Arc<KnownUsers>,
    /// Prometheus counters.
    pub metrics: Arc<Metrics>,
    /// VAPID public key (base64url).
    pub vapid_public_key: String,
    /// Connected users' sessions.
    pub sessions: Arc<Sessions>,
    /// Recipients' cached preferences.
    pub profiles: Arc<ProfileCache>,
    /// The dispatcher actor (database watch, the hub's own errors).
    pub dispatcher: Addr<Dispatcher>,
    /// The dispatch rules, run by the bridge on the request's own worker: one thread
    /// hop fewer per event than going through the dispatcher's mailbox.
    pub dispatch: Arc<crate::actors::dispatcher::DispatchCore>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// WebSocket heartbeat timing.
    pub heartbeat: Heartbeat,
    /// Channel actors.
    pub channels: Channels,
    /// The sandbox outbox (email/SMS without SMTP/Twilio).
    pub sandbox: SandboxOutbox,
    /// This node's id (cluster messages).
    pub node_id: String,
}

impl AppState {
    /// Tells this node's tabs — and, on PostgreSQL, the other nodes' — that a user's
    /// unread count changed.
    pub fn unread_changed(&self, user: Uuid, count: i64) {
        self.sessions.unread_changed(user, count);
        self.tell_other_nodes(crate::cluster::ClusterEvent::Unread { node: self.node_id.clone(), user, count });
    }

    /// A user's preferences or push subscriptions changed: forget the cached profile
    /// here and, on PostgreSQL, on the other nodes.
    pub fn profile_changed(&self, user: Uuid) {
        self.profiles.invalidate(user);
        self.tell_other_nodes(crate::cluster::ClusterEvent::Profile { node: self.node_id.clone(), user });
    }

    /// On PostgreSQL, at shutdown: the other nodes forget this node's tabs (a node that
    /// dies without a word leaves them behind, and they only cost frames nobody uses).
    pub async fn leave_cluster(&self) {
        if self.store.backend() == "postgres" {
            let goodbye = crate::cluster::ClusterEvent::Reset { node: self.node_id.clone(), ask: false };
            notify_other_nodes(&self.store, goodbye).await;
        }
    }

    fn tell_other_nodes(&self, event: crate::cluster::ClusterEvent) {
        if self.store.backend() == "postgres" {
            let store = self.store.clone();
            actix::spawn(async move { notify_other_nodes(&store, event).await });
        }
    }
}

/// Sends `event` on the cluster channel. A failure is only logged: the other nodes catch
/// up later (an unread count with the next change, a cached profile when it expires after
/// 60 s, a node's tabs as frames read back from the database).
pub async fn notify_other_nodes(store: &StoreHandle, event: crate::cluster::ClusterEvent) {
    let payload = event.encode();
    let sent = store.call(move |db| async move { crate::store::notify_nodes(&db, vec![payload]).await }).await;
    if let Err(e) = sent {
        tracing::warn!(error = %e, "cluster: could not tell the other nodes");
    }
}

/// Users recorded in the database, so a token seen again costs no write.
#[derive(Default)]
pub struct KnownUsers {
    roles: crate::id_maps::IdDashMap<Uuid, Role>,
}

impl KnownUsers {
    /// Records `user` with `role` unless already known with that role.
    pub async fn ensure(&self, store: &StoreHandle, user: Uuid, role: Role) -> Result<(), ApiError> {
        if self.roles.get(&user).is_some_and(|r| *r == role) {
            return Ok(());
        }
        store.call(move |db| async move { repository::upsert_user(&db, user, role.as_str()).await }).await?;
        self.roles.insert(user, role);
        Ok(())
    }

    /// Records `user` (role `user`) unless the database already has them, whatever
    /// their role.
    pub async fn ensure_exists(&self, store: &StoreHandle, user: Uuid) -> Result<(), ApiError> {
        if self.roles.contains_key(&user) {
            return Ok(());
        }
        store.call(move |db| async move { repository::insert_user_if_absent(&db, user).await }).await?;
        Ok(())
    }
}
