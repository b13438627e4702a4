//! Channel actors (email, SMS, push): each owns its circuit breaker and applies the
//! per-user hourly limit, claims due deliveries from the outbox, sends them through its
//! [`ChannelSender`], and records the outcome. A transient failure is retried after
//! 1 s, 2 s, 4 s — by rescheduling the row, never by waiting in a handler, so the
//! mailbox keeps flowing. Supervised: an actor that stops is restarted and picks up
//! where the outbox says.

use super::dispatcher::RaiseOwnError;
use super::persistence::StoreHandle;
use crate::channels::breaker::{retry_delay, Breaker, BreakerState, Transition};
use crate::channels::{ChannelSender, Content, SendJob, SendResult};
use crate::clock::Clock;
use crate::crypto::PiiCipher;
use crate::domain::events::{Audience, ErrorPayload, Event, EventKind};
use crate::domain::pii::{mask_email, mask_phone};
use crate::domain::{Channel, NotificationPreferences};
use crate::metrics::Metrics;
use crate::store::outbox::{self, Claimed, Finish};
use crate::store::{preferences_doc, repository, StoreError};
use actix::prelude::*;
use chrono::{DateTime, Duration, Utc};
use std::sync::Arc;
use tokio::sync::oneshot;
use uuid::Uuid;

/// Sends in flight per channel.
const MAX_IN_FLIGHT: usize = 8;
/// How long a claim holds before another sender may take the row over.
const LEASE: Duration = Duration::seconds(60);
/// Poll interval (commits also wake the actor at once).
const POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Look at the outbox now.
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct Wake;

/// Where the actor reports its own failures (a circuit opening).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetRaiser(pub Recipient<RaiseOwnError>);

/// Why a test message was not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestRefusal {
    /// The channel's switch is off.
    Disabled,
    /// No address, number or subscription.
    NoAddress,
    /// The circuit is open.
    CircuitOpen,
    /// The provider refused it (final).
    Rejected(String),
    /// The provider is unwell (transient).
    Unavailable(String),
    /// The user's messages on this channel for the hour are spent (tests count too).
    RateLimited(i64),
}

/// Sends a test message to a user, outside the outbox.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SendTest {
    /// Recipient.
    pub user: Uuid,
    /// The answer: a masked destination, or why not.
    pub reply: oneshot::Sender<Result<String, TestRefusal>>,
}

/// One channel.
pub struct ChannelActor {
    /// What every send of this channel works with (each send runs a copy).
    attempt: Attempt,
    metrics: Arc<Metrics>,
    breaker: Breaker,
    in_flight: usize,
    polling: bool,
    raiser: Option<Recipient<RaiseOwnError>>,
}

/// What a channel actor needs.
pub struct ChannelDeps {
    /// Storage.
    pub store: StoreHandle,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// To read addresses.
    pub pii: PiiCipher,
    /// Breaker gauges.
    pub metrics: Arc<Metrics>,
}

/// Test pushes a user may send in an hour.
pub const PUSH_TESTS_PER_HOUR: i64 = 20;

impl ChannelActor {
    /// Starts a supervised channel actor on `arbiter`.
    pub fn start(sender: Arc<dyn ChannelSender>, deps: ChannelDeps, arbiter: &ArbiterHandle) -> Addr<ChannelActor> {
        let channel = sender.channel();
        let hourly_limit = match channel {
            Channel::Sms => Some(30),
            Channel::Email => Some(100),
            _ => None,
        };
        tracing::info!(channel = channel.as_str(), transport = sender.transport(), "channel ready");
        Supervisor::start_in_arbiter(arbiter, move |_| ChannelActor {
            attempt: Attempt { channel, sender, store: deps.store, clock: deps.clock, pii: deps.pii, hourly_limit },
            metrics: deps.metrics,
            breaker: Breaker::default(),
            in_flight: 0,
            polling: false,
            raiser: None,
        })
    }

    fn publish_breaker(&mut self) {
        let now = self.attempt.clock.now();
        self.metrics.set_breaker(self.attempt.channel, self.breaker.gauge(now));
    }

    fn wake_at(&self, at: DateTime<Utc>, ctx: &mut Context<Self>) {
        let delay = (at - self.attempt.clock.now()).to_std().unwrap_or_default();
        ctx.run_later(delay, |_, ctx| ctx.notify(Wake));
    }

    fn poll(&mut self, ctx: &mut Context<Self>) {
        if self.polling || self.in_flight >= MAX_IN_FLIGHT {
            return;
        }
        let now = self.attempt.clock.now();
        let capacity = match self.breaker.state(now) {
            BreakerState::Closed { .. } => MAX_IN_FLIGHT - self.in_flight,
            BreakerState::HalfOpen { trial_in_flight: false } => 1,
            BreakerState::HalfOpen { trial_in_flight: true } => return,
            BreakerState::Open { until } => {
                self.wake_at(until, ctx);
                return;
            }
        };
        self.polling = true;
        let (store, channel) = (self.attempt.store.clone(), self.attempt.channel);
        let fut = async move {
            store
                .call(move |db| async move { outbox::claim_due(&db, channel, now, LEASE, capacity as i64).await })
                .await
        };
        ctx.spawn(fut.into_actor(self).map(|claimed, act, ctx| {
            act.polling = false;
            match claimed {
                Ok(rows) => {
                    let more = !rows.is_empty();
                    for row in rows {
                        act.start_attempt(row, ctx);
                    }
                    if more {
                        ctx.notify(Wake);
                    }
                }
                Err(e) => tracing::warn!(channel = act.attempt.channel.as_str(), error = %e, "cannot read the outbox"),
            }
        }));
    }

    fn start_attempt(&mut self, row: Claimed, ctx: &mut Context<Self>) {
        let now = self.attempt.clock.now();
        if !self.breaker.try_acquire(now) {
            // The circuit opened meanwhile: the row waits, no attempt counted.
            let until = self.breaker.open_until().unwrap_or(now + Duration::seconds(1));
            let store = self.attempt.store.clone();
            actix::spawn(async move {
                let _ = store
                    .call(move |db| async move { outbox::finish(&db, &row.id, Finish::Postpone { until }, now).await })
                    .await;
            });
            return;
        }
        self.in_flight += 1;
        // Only the attempt holding a half-open circuit's trial may hand it back.
        let trial = self.breaker.trial_in_flight();
        let attempt = self.attempt.clone();
        ctx.spawn(async move { attempt.run(row).await }.into_actor(self).map(move |outcome, act, ctx| {
            act.in_flight -= 1;
            if let (None, Some(trial)) = (outcome.provider, trial) {
                act.breaker.release_trial(trial);
            }
            act.record(outcome.provider, ctx);
            if let Some(at) = outcome.retry_at {
                act.wake_at(at, ctx);
            }
            ctx.notify(Wake);
        }));
    }

    /// Feeds the breaker with a provider outcome (`Some(true)` healthy, `Some(false)` unwell).
    fn record(&mut self, provider: Option<bool>, _: &mut Context<Self>) {
        let now = self.attempt.clock.now();
        let transition = match provider {
            Some(true) => self.breaker.success(),
            Some(false) => self.breaker.failure(now),
            None => Transition::None,
        };
        match transition {
            Transition::Opened => {
                tracing::error!(
                    channel = self.attempt.channel.as_str(),
                    transport = self.attempt.sender.transport(),
                    "circuit opened after repeated failures"
                );
                if let Some(raiser) = &self.raiser {
                    raiser.do_send(RaiseOwnError(Event {
                        kind: EventKind::SystemError(ErrorPayload {
                            error_type: format!("{}_circuit_open", self.attempt.channel.as_str()),
                            message: format!(
                                "The {} channel ({}) failed 5 times in a row; sends are paused for 60 s and queued meanwhile.",
                                self.attempt.channel.as_str(),
                                self.attempt.sender.transport()
                            ),
                            stack_trace: None,
                            correlation_id: None,
                        }),
                        audience: Audience::Admins,
                    }));
                }
            }
            Transition::Closed => tracing::warn!(channel = self.attempt.channel.as_str(), "circuit closed again"),
            Transition::None => {}
        }
        self.publish_breaker();
    }
}

/// The outcome of one attempt, for the actor's state.
struct AttemptOutcome {
    /// `Some(true)`: the provider worked; `Some(false)`: it is unwell; `None`: not asked.
    provider: Option<bool>,
    /// When a retry is due.
    retry_at: Option<DateTime<Utc>>,
}

/// One send: runs outside the actor's state, reports back.
#[derive(Clone)]
struct Attempt {
    channel: Channel,
    sender: Arc<dyn ChannelSender>,
    store: StoreHandle,
    clock: Arc<dyn Clock>,
    pii: PiiCipher,
    hourly_limit: Option<i64>,
}

/// Whether the user can be reached on `channel`: `Err(reason)` if not.
fn reachable(channel: Channel, prefs: &NotificationPreferences, has_subscription: bool) -> Result<(), &'static str> {
    let (enabled, address) = match channel {
        Channel::Email => (prefs.email_enabled, prefs.email_address.is_some()),
        Channel::Sms => (prefs.sms_enabled, prefs.sms_phone_number.is_some()),
        Channel::Push => (prefs.push_enabled, has_subscription),
        Channel::Toast => (true, true),
    };
    if !enabled {
        Err("disabled")
    } else if !address {
        Err("no_address")
    } else {
        Ok(())
    }
}

/// A masked description of where a message goes.
fn destination(channel: Channel, prefs: &NotificationPreferences, subscriptions: usize) -> String {
    match channel {
        Channel::Email => prefs.email_address.as_ref().map(|e| mask_email(e.as_str())).unwrap_or_default(),
        Channel::Sms => prefs.sms_phone_number.as_ref().map(|p| mask_phone(p.as_str())).unwrap_or_default(),
        Channel::Push => format!("{subscriptions} browser subscription(s)"),
        Channel::Toast => "open tabs".into(),
    }
}

async fn load_job(
    store: &StoreHandle,
    pii: &PiiCipher,
    user: Uuid,
    channel: Channel,
) -> Result<(NotificationPreferences, Vec<outbox::Subscription>), StoreError> {
    let pii = pii.clone();
    store
        .call(move |db| async move {
            let prefs = preferences_doc::decode_or_default(repository::load_preferences(&db, user).await?, user, &pii)?;
            let subs = if channel == Channel::Push { outbox::subscriptions_of(&db, user).await? } else { Vec::new() };
            Ok((prefs, subs))
        })
        .await
}

impl Attempt {
    async fn run(self, row: Claimed) -> AttemptOutcome {
        let none = AttemptOutcome { provider: None, retry_at: None };
        let id = row.id.clone();
        let nid = row.notification_id;
        let notification = match self.store.call(move |db| async move { outbox::notification(&db, nid).await }).await {
            Ok(Some(n)) => n,
            Ok(None) => return none, // erased meanwhile: its deliveries went with it
            Err(e) => {
                tracing::warn!(error = %e, "cannot load a notification to deliver; the claim will lapse and be retried");
                return none;
            }
        };
        let (prefs, subs) = match load_job(&self.store, &self.pii, row.user_id, self.channel).await {
            Ok(v) => v,
            Err(StoreError::Corrupt(e)) => {
                // Retrying cannot help: the row would be claimed again every lease.
                tracing::error!(user_id = %row.user_id, error = %e, "unreadable preferences; delivery failed");
                let (now, error) = (self.clock.now(), "the recipient's preferences cannot be read".to_string());
                let _ = self
                    .store
                    .call(move |db| async move { outbox::finish(&db, &id, Finish::Failed { error }, now).await })
                    .await;
                return none;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot load the recipient; the claim will lapse and be retried");
                return none;
            }
        };
        let now = self.clock.now();
        let mut counted = None;
        let finish = if let Err(reason) = reachable(self.channel, &prefs, !subs.is_empty()) {
            Some(Finish::Suppressed { reason })
        } else if let Some(limit) = self.hourly_limit {
            match count_send(&self.store, row.user_id, self.channel, now, limit).await {
                Ok(Some(id)) => {
                    counted = Some(id);
                    None
                }
                Ok(None) => Some(Finish::Suppressed { reason: "rate_limited" }),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot count the send against the rate limit; retrying later");
                    return none;
                }
            }
        } else {
            None
        };
        let dest = destination(self.channel, &prefs, subs.len());
        let (finish, outcome) = match finish {
            Some(f) => (f, none),
            None => {
                let job = SendJob {
                    user_id: row.user_id,
                    content: Content { notification, is_test: false },
                    prefs,
                    subscriptions: subs,
                };
                let result = send_counted(self.sender.as_ref(), &self.store, job, counted).await;
                let now = self.clock.now();
                // A partial send is retried like a failed one; only a failed one counts
                // against the breaker.
                let provider = Some(matches!(result, SendResult::Partial(_)));
                match result {
                    SendResult::Sent(receipt) => {
                        tracing::info!(channel = self.channel.as_str(), to = %dest, receipt = %receipt, notification_id = %nid, "delivered");
                        (Finish::Sent, AttemptOutcome { provider: Some(true), retry_at: None })
                    }
                    SendResult::Transient(error) | SendResult::Partial(error) => {
                        let attempt = u32::try_from(row.attempts).unwrap_or(0) + 1;
                        match retry_delay(attempt) {
                            Some(delay) => {
                                tracing::warn!(channel = self.channel.as_str(), to = %dest, attempt, error = %error, "delivery failed; will retry");
                                let at = now + delay;
                                (Finish::Retry { at, error }, AttemptOutcome { provider, retry_at: Some(at) })
                            }
                            None => {
                                tracing::error!(channel = self.channel.as_str(), to = %dest, attempt, error = %error, "delivery failed; retries spent");
                                (Finish::Failed { error }, AttemptOutcome { provider, retry_at: None })
                            }
                        }
                    }
                    SendResult::Final(error) => {
                        tracing::warn!(channel = self.channel.as_str(), to = %dest, error = %error, "delivery refused");
                        (Finish::Failed { error }, none)
                    }
                    SendResult::NoAddress => (Finish::Suppressed { reason: "no_address" }, none),
                }
            }
        };
        let now = self.clock.now();
        if let Err(e) = self.store.call(move |db| async move { outbox::finish(&db, &id, finish, now).await }).await {
            tracing::error!(error = %e, "cannot record a delivery outcome; the claim will lapse and it may be sent again");
        }
        outcome
    }
}

/// Counts a send against the user's hourly limit (see [`outbox::reserve_send`]).
async fn count_send(
    store: &StoreHandle,
    user: Uuid,
    channel: Channel,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Option<String>, StoreError> {
    store.call(move |db| async move { outbox::reserve_send(&db, user, channel, now, limit).await }).await
}

/// Sends `job`; a send counted against the rate limit is given back unless it went out.
async fn send_counted(
    sender: &dyn ChannelSender,
    store: &StoreHandle,
    job: SendJob,
    counted: Option<String>,
) -> SendResult {
    let result = sender.send(job).await;
    if let (Some(id), false) = (counted, matches!(result, SendResult::Sent(_) | SendResult::Partial(_))) {
        if let Err(e) = store.call(move |db| async move { outbox::release_send(&db, &id).await }).await {
            tracing::warn!(error = %e, "cannot give back a failed send; it counts against the hour's limit");
        }
    }
    result
}

impl Actor for ChannelActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.publish_breaker();
        ctx.run_interval(POLL, |act, ctx| act.poll(ctx));
        ctx.notify(Wake);
    }
}

impl Supervised for ChannelActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        // In-flight sends were dropped with the old context; their claims lapse.
        self.in_flight = 0;
        self.polling = false;
        tracing::warn!(channel = self.attempt.channel.as_str(), "channel actor restarted");
    }
}

impl Handler<Wake> for ChannelActor {
    type Result = ();

    fn handle(&mut self, _: Wake, ctx: &mut Context<Self>) {
        self.poll(ctx);
    }
}

impl Handler<SetRaiser> for ChannelActor {
    type Result = ();

    fn handle(&mut self, msg: SetRaiser, _: &mut Context<Self>) {
        self.raiser = Some(msg.0);
    }
}

impl Handler<SendTest> for ChannelActor {
    type Result = ();

    fn handle(&mut self, msg: SendTest, ctx: &mut Context<Self>) {
        let now = self.attempt.clock.now();
        if self.breaker.is_open(now) {
            let _ = msg.reply.send(Err(TestRefusal::CircuitOpen));
            return;
        }
        let (store, pii, channel, sender, limit) = (
            self.attempt.store.clone(),
            self.attempt.pii.clone(),
            self.attempt.channel,
            self.attempt.sender.clone(),
            // Pushes have no hourly limit, but their tests do: each goes to every one of
            // the user's browsers, on the hub's VAPID identity.
            self.attempt.hourly_limit.or((self.attempt.channel == Channel::Push).then_some(PUSH_TESTS_PER_HOUR)),
        );
        let user = msg.user;
        let fut = async move {
            // The cause (a database error) goes to the log, not to the user.
            let unavailable = |e: StoreError| {
                tracing::warn!(error = %e, "test message: cannot reach the database");
                TestRefusal::Unavailable("the hub cannot reach its database right now; try again".into())
            };
            let (prefs, subs) = match load_job(&store, &pii, user, channel).await {
                Ok(v) => v,
                Err(e) => return (None, Err(unavailable(e))),
            };
            match reachable(channel, &prefs, !subs.is_empty()) {
                Err("disabled") => return (None, Err(TestRefusal::Disabled)),
                Err(_) => return (None, Err(TestRefusal::NoAddress)),
                Ok(()) => {}
            }
            // A test is a real message on the company's account: it counts against the
            // same hourly limit as any other.
            let mut counted = None;
            if let Some(limit) = limit {
                match count_send(&store, user, channel, now, limit).await {
                    Ok(Some(id)) => counted = Some(id),
                    Ok(None) => return (None, Err(TestRefusal::RateLimited(limit))),
                    Err(e) => return (None, Err(unavailable(e))),
                }
            }
            let dest = destination(channel, &prefs, subs.len());
            let job = SendJob { user_id: user, content: Content::test(user, channel), prefs, subscriptions: subs };
            match send_counted(sender.as_ref(), &store, job, counted).await {
                SendResult::Sent(_) | SendResult::Partial(_) => (Some(true), Ok(dest)),
                SendResult::Transient(e) => {
                    // The provider's words (a credentials hint, a server reply) are for
                    // the operator, not for whoever pressed the button.
                    tracing::warn!(channel = channel.as_str(), to = %dest, error = %e, "test message failed");
                    let message =
                        format!("the {} provider did not take the message; try again later", channel.as_str());
                    (Some(false), Err(TestRefusal::Unavailable(message)))
                }
                SendResult::Final(e) => (None, Err(TestRefusal::Rejected(e))),
                SendResult::NoAddress => (None, Err(TestRefusal::NoAddress)),
            }
        };
        let reply = msg.reply;
        ctx.spawn(fut.into_actor(self).map(move |(provider, result), act, ctx| {
            // A test's failure may be its user's own (a push endpoint that never
            // answers): only deliveries open the circuit, or one user pressing "test" a
            // few times would pause the channel for everyone. A success still closes it.
            if provider == Some(true) {
                act.record(provider, ctx);
            }
            let _ = reply.send(result);
        }));
    }
}

/// The three channel actors.
#[derive(Clone)]
pub struct Channels {
    /// Email.
    pub email: Addr<ChannelActor>,
    /// SMS.
    pub sms: Addr<ChannelActor>,
    /// Web Push.
    pub push: Addr<ChannelActor>,
}

impl Channels {
    /// The actor for `channel` (toast has none).
    pub fn get(&self, channel: Channel) -> Option<&Addr<ChannelActor>> {
        match channel {
            Channel::Email => Some(&self.email),
            Channel::Sms => Some(&self.sms),
            Channel::Push => Some(&self.push),
            Channel::Toast => None,
        }
    }

    /// Wakes the actors of these channels (new deliveries are due).
    pub fn wake(&self, channels: impl IntoIterator<Item = Channel>) {
        for c in channels {
            if let Some(a) = self.get(c) {
                a.do_send(Wake);
            }
        }
    }
}
