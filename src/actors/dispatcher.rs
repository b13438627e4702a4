//! The dispatcher: turns a bridge event into notifications. It resolves recipients,
//! applies each user's rules (confidence threshold, throttles, quiet hours, routing),
//! hands the notifications to the persistence actor (which numbers them and, once
//! committed, fans them out to open tabs), and watches the database: when it comes
//! back after an outage, admins get a `system_error`.
//!
//! Events are handled concurrently (each handler's future runs on the dispatcher's
//! arbiter), so many in flight share one group-commit batch.

use super::persistence::StoreHandle;
pub use super::profiles::{Profile, ProfileCache};
use crate::clock::Clock;
use crate::domain::delivery::NewDelivery;
use crate::domain::events::{Audience, ErrorPayload, Event, EventKind, Throttle};
use crate::domain::rules::{self, route, signal_passes};
use crate::domain::{Channel, NewNotification, NotificationPreferences};
use crate::store::repository::StoreItem;
use crate::store::{bridge, StoreError};
use actix::prelude::*;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// One notification the bridge reports back.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AcceptedNotification {
    /// Recipient.
    pub user_id: Uuid,
    /// The stored notification.
    pub notification_id: Uuid,
    /// Its sequence number.
    pub sequence_number: i64,
    /// Channels it goes out on.
    pub channels: Vec<Channel>,
}

/// What became of an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Stored for these recipients (others were filtered or throttled).
    Accepted {
        /// Stored notifications.
        notifications: Vec<AcceptedNotification>,
        /// Recipients dropped by their confidence threshold.
        filtered_count: usize,
        /// Recipients dropped by a throttle.
        throttled_count: usize,
    },
    /// Nothing stored: a rule dropped it.
    Filtered(&'static str),
    /// Nothing stored: a throttle dropped it.
    Throttled(&'static str),
}

/// Everything the dispatcher works with (shared by its concurrent handlers).
pub struct DispatchCore {
    /// Storage.
    pub store: StoreHandle,
    /// Profiles.
    pub profiles: Arc<ProfileCache>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Counters (the database watch reports here).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Channel actors, woken when deliveries are due.
    pub channels: Option<super::channel::Channels>,
}

impl DispatchCore {
    async fn recipients(&self, audience: &Audience) -> Result<Vec<Uuid>, StoreError> {
        match audience {
            Audience::Users(ids) => Ok(ids.clone()),
            Audience::All => self.store.call(|db| async move { bridge::all_user_ids(&db).await }).await,
            Audience::Admins => self.store.call(|db| async move { bridge::admin_ids(&db).await }).await,
        }
    }

    async fn acquire(
        &self,
        key: String,
        window: chrono::Duration,
    ) -> Result<Option<(String, chrono::DateTime<chrono::Utc>)>, StoreError> {
        let now = self.clock.now();
        let k = key.clone();
        let taken =
            self.store.call(move |db| async move { bridge::throttle_acquire(&db, &k, now, window).await }).await?;
        Ok(taken.then_some((key, now)))
    }

    async fn release(&self, taken: Vec<(String, chrono::DateTime<chrono::Utc>)>) {
        if taken.is_empty() {
            return;
        }
        let result = self
            .store
            .call(move |db| async move {
                for (key, at) in taken {
                    bridge::throttle_release(&db, &key, at).await?;
                }
                Ok(())
            })
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not release throttles after a failed store");
        }
    }

    /// Applies the rules and stores what passes.
    pub async fn dispatch(&self, event: Event) -> Result<Outcome, StoreError> {
        if let EventKind::Risk(r) = &event.kind {
            if !rules::risk_needs_warning(r.risk_type, r.current) {
                return Ok(Outcome::Filtered("below_risk_threshold"));
            }
        }
        let mut recipients = self.recipients(&event.audience).await?;
        if recipients.is_empty() {
            if matches!(event.audience, Audience::Admins) {
                // Nobody would see it: the log is the only place an operator can.
                let title = event.kind.content().title;
                tracing::warn!(%title, "an alert for the admins reached nobody: no admin has used an admin token yet");
                return Ok(Outcome::Filtered("no_admins"));
            }
            return Ok(Outcome::Filtered("no_recipients"));
        }
        let profiles = self.profiles.load(&self.store, &recipients).await?;
        let mut filtered_count = 0;
        if let EventKind::Signal(s) = &event.kind {
            let before = recipients.len();
            recipients.retain(|u| {
                profiles.get(u).is_some_and(|p| signal_passes(s.confidence, p.prefs.min_confidence_threshold))
            });
            filtered_count = before - recipients.len();
            if recipients.is_empty() {
                return Ok(Outcome::Filtered("below_confidence_threshold"));
            }
        }
        let mut taken = Vec::new();
        let mut throttled_count = 0;
        match event.kind.throttle() {
            Some(Throttle::RiskWarning { risk_type }) => {
                let mut kept = Vec::with_capacity(recipients.len());
                for user in recipients {
                    let key = format!("risk_warning:{user}:{risk_type}");
                    match self.acquire(key, rules::RISK_WARNING_WINDOW).await {
                        Ok(Some(t)) => {
                            taken.push(t);
                            kept.push(user);
                        }
                        Ok(None) => throttled_count += 1,
                        Err(e) => {
                            self.release(taken).await;
                            return Err(e);
                        }
                    }
                }
                recipients = kept;
                if recipients.is_empty() {
                    return Ok(Outcome::Throttled("risk_warning_throttled"));
                }
            }
            Some(Throttle::SystemError { key }) => {
                // An error shown to named users has a window of its own: it must not hold
                // back the admins' alert of the same type (the hub's own included).
                let key = match event.audience {
                    Audience::Admins => key,
                    _ => format!("{key}:to_users"),
                };
                match self.acquire(key, rules::SYSTEM_ERROR_WINDOW).await? {
                    Some(t) => taken.push(t),
                    None => return Ok(Outcome::Throttled("system_error_throttled")),
                }
            }
            None => {}
        }

        let is_test = matches!(event.kind, EventKind::Test(_));
        // Cut to the store's precision here, so the store need not copy the shared content.
        let now = crate::store::repository::to_micros(self.clock.now());
        // One copy for every recipient.
        let shared = Arc::new(event.kind.into_content().at(now));
        let mut pending = Vec::with_capacity(recipients.len());
        let mut channels = Vec::with_capacity(recipients.len());
        for user in &recipients {
            let default_profile;
            let profile = match profiles.get(user) {
                Some(p) => p.as_ref(),
                None => {
                    default_profile = Profile { prefs: NotificationPreferences::defaults(*user), has_push: false };
                    &default_profile
                }
            };
            let mut routing = route(shared.priority, &profile.prefs, profile.has_push, now);
            if is_test {
                routing = routing.toast_only();
                // A test toast nobody would see stores nothing: the user is told why.
                if !routing.toast() {
                    self.release(taken).await;
                    return Ok(Outcome::Filtered("toast_not_routed"));
                }
            }
            let notification = NewNotification {
                // Time-ordered ids: inserts append to the primary-key index instead of
                // dirtying random pages, which keeps each group commit small.
                id: Uuid::now_v7(),
                user_id: *user,
                content: shared.clone(),
            };
            channels.push(routing.deliver.clone());
            pending.push(StoreItem {
                toast: routing.toast(),
                notification,
                deliveries: NewDelivery::for_routing(&routing),
            });
        }
        let mut due: Vec<Channel> = pending
            .iter()
            .flat_map(|p| p.deliveries.iter())
            .filter(|d| d.status == crate::domain::delivery::DeliveryStatus::Pending)
            .map(|d| d.channel)
            .collect();
        due.sort();
        due.dedup();
        let stored = match self.store.store_notifications(pending).await {
            Ok(s) => s,
            Err(e) => {
                self.release(taken).await;
                return Err(e);
            }
        };
        if let Some(channels) = &self.channels {
            channels.wake(due);
        }
        let notifications = stored
            .into_iter()
            .zip(channels)
            .map(|(s, channels)| AcceptedNotification {
                user_id: s.user_id,
                notification_id: s.id,
                sequence_number: s.sequence_number,
                channels,
            })
            .collect::<Vec<_>>();
        tracing::info!(
            notification_type = shared.notification_type.as_str(),
            priority = shared.priority.as_str(),
            accepted = notifications.len(),
            filtered = filtered_count,
            throttled = throttled_count,
            "event dispatched"
        );
        Ok(Outcome::Accepted { notifications, filtered_count, throttled_count })
    }
}

/// The dispatcher actor.
pub struct Dispatcher {
    core: Arc<DispatchCore>,
    db_down_since: Option<chrono::DateTime<chrono::Utc>>,
    checking: bool,
}

impl Dispatcher {
    /// Starts the dispatcher on its own arbiter, returned so the hub can stop it.
    pub fn start_on_own_arbiter(core: Arc<DispatchCore>) -> (Addr<Dispatcher>, ArbiterHandle) {
        let arbiter = Arbiter::new();
        let addr = Dispatcher::start_in_arbiter(&arbiter.handle(), move |_| Dispatcher {
            core,
            db_down_since: None,
            checking: false,
        });
        (addr, arbiter.handle())
    }

    fn watch_database(&mut self, ctx: &mut Context<Self>) {
        if self.checking {
            return;
        }
        self.checking = true;
        let core = self.core.clone();
        let fut = async move { core.store.call(|db| async move { db.ping().await }).await };
        ctx.spawn(fut.into_actor(self).map(|result, act, ctx| {
            act.checking = false;
            let now = act.core.clock.now();
            match (result, act.db_down_since) {
                (Err(e), None) => {
                    tracing::error!(error = %e, "database unreachable");
                    act.core.metrics.set_database_up(false);
                    act.db_down_since = Some(now);
                }
                (Ok(()), Some(since)) => {
                    act.db_down_since = None;
                    act.core.metrics.set_database_up(true);
                    let secs = (now - since).num_seconds().max(1);
                    tracing::warn!(down_seconds = secs, "database reachable again");
                    let event = Event {
                        kind: EventKind::SystemError(ErrorPayload {
                            error_type: "database_unreachable".into(),
                            message: format!(
                                "notifyhub could not reach its database for about {secs} s (since {}); it has recovered. \
                                 Bridge calls in that window were answered 503 and may have been retried.",
                                since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                            ),
                            stack_trace: None,
                            correlation_id: None,
                        }),
                        audience: Audience::Admins,
                    };
                    ctx.notify(RaiseOwnError(event));
                }
                _ => {}
            }
        }));
    }
}

/// The hub reports one of its own failures.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RaiseOwnError(pub Event);

impl Actor for Dispatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(Duration::from_secs(1), |act, ctx| act.watch_database(ctx));
        ctx.run_interval(Duration::from_secs(600), |act, _| {
            let core = act.core.clone();
            actix::spawn(async move {
                let now = core.clock.now();
                let _ = core.store.call(move |db| async move { bridge::idempotency_purge(&db, now).await }).await;
                let past_every_window = now - chrono::Duration::hours(2);
                let _ = core
                    .store
                    .call(move |db| async move { crate::store::outbox::purge_sends(&db, past_every_window).await })
                    .await;
            });
        });
    }
}

impl Handler<RaiseOwnError> for Dispatcher {
    type Result = ();

    fn handle(&mut self, msg: RaiseOwnError, _: &mut Context<Self>) {
        let core = self.core.clone();
        actix::spawn(async move {
            match core.dispatch(msg.0).await {
                Ok(outcome) => tracing::info!(?outcome, "own system error raised"),
                Err(e) => tracing::error!(error = %e, "could not raise own system error"),
            }
        });
    }
}
