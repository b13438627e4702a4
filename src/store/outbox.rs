//! The outbox: channel deliveries claimed with a lease (so a crashed sender's work is
//! taken over once the lease ends, and two nodes never send the same row), finished
//! as sent, retrying, failed or suppressed; push subscriptions.

use super::schema::{channel_sends, deliveries, notifications, push_subscriptions};
use super::{Db, StoreError};
use crate::domain::{Channel, Notification};
use crate::with_conn;
use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text, Timestamp};
use diesel_async::{AsyncConnection, RunQueryDsl};
use serde::Serialize;
use uuid::Uuid;

/// A delivery claimed for sending.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    /// Delivery row id.
    pub id: String,
    /// The notification.
    pub notification_id: Uuid,
    /// The recipient.
    pub user_id: Uuid,
    /// Attempts made before this one.
    pub attempts: i32,
}

/// Claims up to `limit` due deliveries of `channel` for `lease`.
pub async fn claim_due(
    db: &Db,
    channel: Channel,
    now: DateTime<Utc>,
    lease: Duration,
    limit: i64,
) -> Result<Vec<Claimed>, StoreError> {
    let token = Uuid::new_v4().to_string();
    let now_n = now.naive_utc();
    let lease_end = (now + lease).naive_utc();
    let ch = channel.as_str();
    with_conn!(db, conn => {
        let due = deliveries::table
            .filter(deliveries::channel.eq(ch))
            .filter(deliveries::status.eq_any(["pending", "retrying"]))
            .filter(deliveries::next_attempt_at.le(now_n));
        let candidates: Vec<String> =
            due.clone().select(deliveries::id).order(deliveries::next_attempt_at.asc()).limit(limit).load(conn).await?;
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        // Only rows still due are taken: a concurrent claimer that got there first wins.
        diesel::update(due.filter(deliveries::id.eq_any(&candidates)))
            .set((
                deliveries::claimed_by.eq(&token),
                deliveries::next_attempt_at.eq(lease_end),
                deliveries::updated_at.eq(now_n),
            ))
            .execute(conn)
            .await?;
        let rows: Vec<(String, String, String, i32)> = deliveries::table
            .filter(deliveries::claimed_by.eq(&token))
            .select((deliveries::id, deliveries::notification_id, deliveries::user_id, deliveries::attempts))
            .load(conn)
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, n, u, attempts)| {
                Some(Claimed { id, notification_id: Uuid::parse_str(&n).ok()?, user_id: Uuid::parse_str(&u).ok()?, attempts })
            })
            .collect())
    })
}

/// Makes every claimed, unfinished delivery due now (single-node start-up: whoever
/// claimed them is gone).
pub async fn release_all_claims(db: &Db, now: DateTime<Utc>) -> Result<usize, StoreError> {
    let now = now.naive_utc();
    with_conn!(db, conn => {
        Ok(diesel::update(
            deliveries::table
                .filter(deliveries::claimed_by.is_not_null())
                .filter(deliveries::status.eq_any(["pending", "retrying"])),
        )
        .set((deliveries::claimed_by.eq(None::<String>), deliveries::next_attempt_at.eq(now)))
        .execute(conn)
        .await?)
    })
}

/// How a delivery attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    /// Handed to the provider.
    Sent,
    /// Failed for now; try again at `at`.
    Retry {
        /// Next attempt.
        at: DateTime<Utc>,
        /// What went wrong.
        error: String,
    },
    /// Gave up.
    Failed {
        /// Why.
        error: String,
    },
    /// Not attempted (rate limit, no address found at send time…).
    Suppressed {
        /// Why.
        reason: &'static str,
    },
    /// Not attempted now (circuit open): wait until `until`, no attempt counted.
    Postpone {
        /// When it becomes due again.
        until: DateTime<Utc>,
    },
}

/// Records the end of an attempt.
pub async fn finish(db: &Db, id: &str, outcome: Finish, now: DateTime<Utc>) -> Result<(), StoreError> {
    let id = id.to_string();
    let now_n = now.naive_utc();
    with_conn!(db, conn => {
        let row = deliveries::table.find(&id);
        let n = match outcome {
            Finish::Sent => diesel::update(row)
                .set((
                    deliveries::status.eq("sent"),
                    deliveries::attempts.eq(deliveries::attempts + 1),
                    deliveries::sent_at.eq(Some(now_n)),
                    deliveries::next_attempt_at.eq(None::<NaiveDateTime>),
                    deliveries::claimed_by.eq(None::<String>),
                    deliveries::updated_at.eq(now_n),
                ))
                .execute(conn)
                .await?,
            Finish::Retry { at, error } => diesel::update(row)
                .set((
                    deliveries::status.eq("retrying"),
                    deliveries::attempts.eq(deliveries::attempts + 1),
                    deliveries::last_error.eq(Some(error)),
                    deliveries::next_attempt_at.eq(Some(at.naive_utc())),
                    deliveries::claimed_by.eq(None::<String>),
                    deliveries::updated_at.eq(now_n),
                ))
                .execute(conn)
                .await?,
            Finish::Failed { error } => diesel::update(row)
                .set((
                    deliveries::status.eq("failed"),
                    deliveries::attempts.eq(deliveries::attempts + 1),
                    deliveries::reason.eq(Some(error.clone())),
                    deliveries::last_error.eq(Some(error)),
                    deliveries::next_attempt_at.eq(None::<NaiveDateTime>),
                    deliveries::claimed_by.eq(None::<String>),
                    deliveries::updated_at.eq(now_n),
                ))
                .execute(conn)
                .await?,
            Finish::Suppressed { reason } => diesel::update(row)
                .set((
                    deliveries::status.eq("suppressed"),
                    deliveries::reason.eq(Some(reason)),
                    deliveries::next_attempt_at.eq(None::<NaiveDateTime>),
                    deliveries::claimed_by.eq(None::<String>),
                    deliveries::updated_at.eq(now_n),
                ))
                .execute(conn)
                .await?,
            Finish::Postpone { until } => diesel::update(row)
                .set((
                    deliveries::status.eq("retrying"),
                    deliveries::next_attempt_at.eq(Some(until.naive_utc())),
                    deliveries::claimed_by.eq(None::<String>),
                    deliveries::updated_at.eq(now_n),
                ))
                .execute(conn)
                .await?,
        };
        let _ = n;
        Ok(())
    })
}

/// Counts a message to `user` on `channel` against its `limit` per hour, in the
/// statement that checks the limit: a row in `channel_sends`, whose id comes back, or
/// `None` when the hour's messages are spent. The ledger survives restarts, holds across
/// nodes (on PostgreSQL under a per-user, per-channel lock) and outlives erased
/// notifications.
pub async fn reserve_send(
    db: &Db,
    user: Uuid,
    channel: Channel,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Option<String>, StoreError> {
    let id = Uuid::now_v7().to_string();
    let (uid, ch) = (user.to_string(), channel.as_str());
    let (at, since) = (now.naive_utc(), (now - Duration::hours(1)).naive_utc());
    let inserted = match db {
        Db::Sqlite(_) => with_conn!(db, conn => {
            // One statement: SQLite runs one writer at a time.
            diesel::sql_query(
                "INSERT INTO channel_sends (id, user_id, channel, sent_at) SELECT ?, ?, ?, ? \
                 WHERE (SELECT COUNT(*) FROM channel_sends WHERE user_id = ? AND channel = ? AND sent_at >= ?) < ?",
            )
            .bind::<Text, _>(&id)
            .bind::<Text, _>(&uid)
            .bind::<Text, _>(ch)
            .bind::<Timestamp, _>(at)
            .bind::<Text, _>(&uid)
            .bind::<Text, _>(ch)
            .bind::<Timestamp, _>(since)
            .bind::<BigInt, _>(limit)
            .execute(conn)
            .await?
        }),
        Db::Postgres(_) => with_conn!(db, conn => {
            conn.transaction::<_, StoreError, _>(async |conn| {
                // The count is read after the lock, in a statement of its own, so it
                // sees every send committed by whoever held the lock before.
                diesel::sql_query("SELECT pg_advisory_xact_lock(hashtext($1))")
                    .bind::<Text, _>(format!("channel_sends:{uid}:{ch}"))
                    .execute(conn)
                    .await?;
                Ok(diesel::sql_query(
                    "INSERT INTO channel_sends (id, user_id, channel, sent_at) SELECT $1, $2, $3, $4 \
                     WHERE (SELECT COUNT(*) FROM channel_sends WHERE user_id = $2 AND channel = $3 AND sent_at >= $5) < $6",
                )
                .bind::<Text, _>(&id)
                .bind::<Text, _>(&uid)
                .bind::<Text, _>(ch)
                .bind::<Timestamp, _>(at)
                .bind::<Timestamp, _>(since)
                .bind::<BigInt, _>(limit)
                .execute(conn)
                .await?)
            })
            .await?
        }),
    };
    Ok((inserted > 0).then_some(id))
}

/// Gives back a message counted by [`reserve_send`] that did not go out.
pub async fn release_send(db: &Db, id: &str) -> Result<(), StoreError> {
    let id = id.to_string();
    with_conn!(db, conn => {
        diesel::delete(channel_sends::table.find(&id)).execute(conn).await?;
        Ok(())
    })
}

/// Forgets sends older than `before` (past every window).
pub async fn purge_sends(db: &Db, before: DateTime<Utc>) -> Result<usize, StoreError> {
    let before = before.naive_utc();
    with_conn!(db, conn => {
        Ok(diesel::delete(channel_sends::table.filter(channel_sends::sent_at.lt(before))).execute(conn).await?)
    })
}

/// One notification by id.
pub async fn notification(db: &Db, id: Uuid) -> Result<Option<Notification>, StoreError> {
    let nid = id.to_string();
    let rows = with_conn!(db, conn => {
        notifications::table
            .find(&nid)
            .select(super::repository::NotificationRow::as_select())
            .load(conn)
            .await?
    });
    rows.into_iter().next().map(super::repository::NotificationRow::into_domain).transpose()
}

/// When a notification was stored and whether its live toast went out (`None`: absent).
pub async fn toast_outcome(db: &Db, id: Uuid) -> Result<Option<(DateTime<Utc>, bool)>, StoreError> {
    let nid = id.to_string();
    let row: Option<(NaiveDateTime, bool)> = with_conn!(db, conn => {
        notifications::table
            .find(&nid)
            .select((notifications::created_at, notifications::toast))
            .first(conn)
            .await
            .optional()?
    });
    Ok(row.map(|(at, toast)| (at.and_utc(), toast)))
}

/// A delivery as its owner sees it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema, ts_rs::TS)]
pub struct DeliveryView {
    /// Channel.
    pub channel: Channel,
    /// pending, sent, failed, retrying or suppressed.
    pub status: String,
    /// Why (suppressed or failed).
    pub reason: Option<String>,
    /// Attempts made.
    pub attempts: i32,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

type DeliveryTuple = (String, String, Option<String>, i32, Option<String>, NaiveDateTime);

/// The deliveries of one of the user's notifications; `None` when it is not theirs.
pub async fn deliveries_of(
    db: &Db,
    user: Uuid,
    notification_id: Uuid,
) -> Result<Option<Vec<DeliveryView>>, StoreError> {
    let (uid, nid) = (user.to_string(), notification_id.to_string());
    let (owned, rows): (i64, Vec<DeliveryTuple>) = with_conn!(db, conn => {
        let owned: i64 = notifications::table
            .filter(notifications::id.eq(&nid))
            .filter(notifications::user_id.eq(&uid))
            .count()
            .get_result(conn)
            .await?;
        let rows = deliveries::table
            .filter(deliveries::notification_id.eq(&nid))
            .select((
                deliveries::channel,
                deliveries::status,
                deliveries::reason,
                deliveries::attempts,
                deliveries::last_error,
                deliveries::updated_at,
            ))
            .load(conn)
            .await?;
        (owned, rows)
    });
    if owned == 0 {
        return Ok(None);
    }
    Ok(Some(
        rows.into_iter()
            .filter_map(|(channel, status, reason, attempts, last_error, updated_at)| {
                Some(DeliveryView {
                    channel: channel.parse().ok()?,
                    status,
                    reason,
                    attempts,
                    last_error,
                    updated_at: updated_at.and_utc(),
                })
            })
            .collect(),
    ))
}

/// A stored browser push subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Push service URL.
    pub endpoint: String,
    /// Browser's P-256 key (base64url).
    pub p256dh: String,
    /// Auth secret (base64url).
    pub auth: String,
}

/// What became of a subscription to save.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SavedSubscription {
    /// Stored for the user; `moved_from` is the user who had this browser before.
    Saved {
        /// The previous owner, when the endpoint moved.
        moved_from: Option<Uuid>,
    },
    /// Another user holds this endpoint with other keys: not the same browser.
    Taken,
}

/// Browsers a user's pushes go to; registering one more forgets the longest-registered.
pub const MAX_SUBSCRIPTIONS_PER_USER: i64 = 10;

/// Saves a subscription for `user`. An endpoint already held by someone else moves to
/// `user` only with the same keys (the same browser, now signed in as `user`): knowing
/// an endpoint's URL is not enough to take it over.
pub async fn save_subscription(
    db: &Db,
    user: Uuid,
    sub: Subscription,
    now: DateTime<Utc>,
) -> Result<SavedSubscription, StoreError> {
    let uid = user.to_string();
    let now = now.naive_utc();
    with_conn!(db, conn => {
        let held: Option<(String, String, String)> = push_subscriptions::table
            .filter(push_subscriptions::endpoint.eq(&sub.endpoint))
            .select((push_subscriptions::user_id, push_subscriptions::p256dh_key, push_subscriptions::auth_key))
            .first(conn)
            .await
            .optional()?;
        let moved_from = match &held {
            Some((owner, p256dh, auth)) if *owner != uid => {
                if *p256dh != sub.p256dh || *auth != sub.auth {
                    return Ok(SavedSubscription::Taken);
                }
                Uuid::parse_str(owner).ok()
            }
            _ => None,
        };
        diesel::insert_into(push_subscriptions::table)
            .values((
                push_subscriptions::id.eq(Uuid::new_v4().to_string()),
                push_subscriptions::user_id.eq(&uid),
                push_subscriptions::endpoint.eq(&sub.endpoint),
                push_subscriptions::p256dh_key.eq(&sub.p256dh),
                push_subscriptions::auth_key.eq(&sub.auth),
                push_subscriptions::created_at.eq(now),
            ))
            .on_conflict(push_subscriptions::endpoint)
            .do_update()
            .set((
                push_subscriptions::user_id.eq(&uid),
                push_subscriptions::p256dh_key.eq(&sub.p256dh),
                push_subscriptions::auth_key.eq(&sub.auth),
                push_subscriptions::created_at.eq(now),
            ))
            .execute(conn)
            .await?;
        // A user keeps their newest few browsers: each push goes to every one of them,
        // and without a bound one account could make the hub send thousands per event.
        let stale: Vec<String> = push_subscriptions::table
            .filter(push_subscriptions::user_id.eq(&uid))
            .order((push_subscriptions::created_at.desc(), push_subscriptions::id.desc()))
            .offset(MAX_SUBSCRIPTIONS_PER_USER)
            .select(push_subscriptions::id)
            .load(conn)
            .await?;
        if !stale.is_empty() {
            diesel::delete(push_subscriptions::table.filter(push_subscriptions::id.eq_any(&stale)))
                .execute(conn)
                .await?;
        }
        Ok(SavedSubscription::Saved { moved_from })
    })
}

/// Deletes one of the user's subscriptions; returns whether it existed.
pub async fn delete_subscription(db: &Db, user: Option<Uuid>, endpoint: &str) -> Result<bool, StoreError> {
    let endpoint = endpoint.to_string();
    let uid = user.map(|u| u.to_string());
    with_conn!(db, conn => {
        let n = match &uid {
            Some(uid) => diesel::delete(
                push_subscriptions::table
                    .filter(push_subscriptions::endpoint.eq(&endpoint))
                    .filter(push_subscriptions::user_id.eq(uid)),
            )
            .execute(conn)
            .await?,
            None => diesel::delete(push_subscriptions::table.filter(push_subscriptions::endpoint.eq(&endpoint)))
                .execute(conn)
                .await?,
        };
        Ok(n > 0)
    })
}

/// The user's subscriptions.
pub async fn subscriptions_of(db: &Db, user: Uuid) -> Result<Vec<Subscription>, StoreError> {
    let uid = user.to_string();
    let rows: Vec<(String, String, String)> = with_conn!(db, conn => {
        push_subscriptions::table
            .filter(push_subscriptions::user_id.eq(&uid))
            .select((push_subscriptions::endpoint, push_subscriptions::p256dh_key, push_subscriptions::auth_key))
            .load(conn)
            .await?
    });
    Ok(rows.into_iter().map(|(endpoint, p256dh, auth)| Subscription { endpoint, p256dh, auth }).collect())
}
