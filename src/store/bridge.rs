//! Queries behind the event bridge: throttles, idempotency keys, and recipients.

use super::json::Json;
use super::schema::{idempotency_keys, notification_preferences, push_subscriptions, throttle_marks, users};
use super::{Db, StoreError};
use crate::with_conn;
use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Text, Timestamp};
use diesel_async::RunQueryDsl;
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// Takes the throttle `key` at `now` unless it was taken less than `window` ago.
/// Atomic across nodes: one upsert whose update only applies when the window passed.
/// The placeholders are the only backend difference.
pub async fn throttle_acquire(db: &Db, key: &str, now: DateTime<Utc>, window: Duration) -> Result<bool, StoreError> {
    let cutoff = (now - window).naive_utc();
    let now = now.naive_utc();
    let key = key.to_string();
    let affected = match db {
        Db::Sqlite(_) => {
            with_conn!(db, conn => {
                diesel::sql_query(
                    "INSERT INTO throttle_marks (key, last_at) VALUES (?, ?) \
                     ON CONFLICT (key) DO UPDATE SET last_at = excluded.last_at WHERE throttle_marks.last_at <= ?",
                )
                .bind::<Text, _>(&key)
                .bind::<Timestamp, _>(now)
                .bind::<Timestamp, _>(cutoff)
                .execute(conn)
                .await?
            })
        }
        Db::Postgres(_) => {
            with_conn!(db, conn => {
                diesel::sql_query(
                    "INSERT INTO throttle_marks (key, last_at) VALUES ($1, $2) \
                     ON CONFLICT (key) DO UPDATE SET last_at = excluded.last_at WHERE throttle_marks.last_at <= $3",
                )
                .bind::<Text, _>(&key)
                .bind::<Timestamp, _>(now)
                .bind::<Timestamp, _>(cutoff)
                .execute(conn)
                .await?
            })
        }
    };
    Ok(affected > 0)
}

/// Gives back a throttle taken at `at` (the notification it guarded was not stored).
pub async fn throttle_release(db: &Db, key: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
    let key = key.to_string();
    let at = at.naive_utc();
    with_conn!(db, conn => {
        diesel::delete(throttle_marks::table.filter(throttle_marks::key.eq(&key)).filter(throttle_marks::last_at.eq(at)))
            .execute(conn)
            .await?;
        Ok(())
    })
}

/// How long a bridge answer is kept for retries with the same `Idempotency-Key`.
pub const IDEMPOTENCY_TTL: Duration = Duration::hours(24);

/// After this long an unanswered claim is considered abandoned.
pub const IN_PROGRESS_TIMEOUT: Duration = Duration::seconds(60);

/// The state of an idempotency key.
#[derive(Debug, Clone, PartialEq)]
pub enum IdempotencyState {
    /// New: the caller owns it and must complete or abort it.
    Started,
    /// Another request with this key is being processed.
    InProgress,
    /// Answered before: the stored status and body.
    Done(u16, serde_json::Value),
    /// The key was first used for a different request.
    Reused,
}

/// Claims `key` for the request whose fingerprint is `request_hash` (status 0 = in
/// progress) or reports what it holds. A key older than the TTL counts as new.
pub async fn idempotency_begin(
    db: &Db,
    key: &str,
    request_hash: &str,
    now: DateTime<Utc>,
) -> Result<IdempotencyState, StoreError> {
    let key = key.to_string();
    let request_hash = request_hash.to_string();
    let now_naive = now.naive_utc();
    let expired_before = (now - IDEMPOTENCY_TTL).naive_utc();
    with_conn!(db, conn => {
        diesel::delete(
            idempotency_keys::table
                .filter(idempotency_keys::key.eq(&key))
                .filter(idempotency_keys::created_at.lt(expired_before)),
        )
        .execute(conn)
        .await?;
        let inserted = diesel::insert_into(idempotency_keys::table)
            .values((
                idempotency_keys::key.eq(&key),
                idempotency_keys::status_code.eq(0),
                idempotency_keys::response.eq(Json(serde_json::Value::Null)),
                idempotency_keys::created_at.eq(now_naive),
                idempotency_keys::request_hash.eq(Some(&request_hash)),
            ))
            .on_conflict_do_nothing()
            .execute(conn)
            .await?;
        if inserted > 0 {
            return Ok(IdempotencyState::Started);
        }
        // A claim whose request died (and could not give the key back, e.g. the
        // database went away mid-request) is taken over after a while.
        let abandoned_before = (now - IN_PROGRESS_TIMEOUT).naive_utc();
        let taken_over = diesel::update(
            idempotency_keys::table
                .filter(idempotency_keys::key.eq(&key))
                .filter(idempotency_keys::status_code.eq(0))
                .filter(idempotency_keys::created_at.lt(abandoned_before)),
        )
        .set((idempotency_keys::created_at.eq(now_naive), idempotency_keys::request_hash.eq(Some(&request_hash))))
        .execute(conn)
        .await?;
        if taken_over > 0 {
            return Ok(IdempotencyState::Started);
        }
        let row: Option<(i32, Json, Option<String>)> = idempotency_keys::table
            .find(&key)
            .select((idempotency_keys::status_code, idempotency_keys::response, idempotency_keys::request_hash))
            .first(conn)
            .await
            .optional()?;
        Ok(match row {
            None => IdempotencyState::InProgress,
            Some((_, _, Some(first))) if first != request_hash => IdempotencyState::Reused,
            Some((0, _, _)) => IdempotencyState::InProgress,
            Some((status, body, _)) => IdempotencyState::Done(status as u16, body.0),
        })
    })
}

/// Records the answer for `key`.
pub async fn idempotency_complete(db: &Db, key: &str, status: u16, body: serde_json::Value) -> Result<(), StoreError> {
    let key = key.to_string();
    with_conn!(db, conn => {
        diesel::update(idempotency_keys::table.find(&key))
            .set((idempotency_keys::status_code.eq(i32::from(status)), idempotency_keys::response.eq(Json(body))))
            .execute(conn)
            .await?;
        Ok(())
    })
}

/// Forgets `key` (the request failed; a retry must run again).
pub async fn idempotency_abort(db: &Db, key: &str) -> Result<(), StoreError> {
    let key = key.to_string();
    with_conn!(db, conn => {
        diesel::delete(idempotency_keys::table.find(&key)).execute(conn).await?;
        Ok(())
    })
}

/// Deletes keys past the TTL; returns how many.
pub async fn idempotency_purge(db: &Db, now: DateTime<Utc>) -> Result<usize, StoreError> {
    let before = (now - IDEMPOTENCY_TTL).naive_utc();
    with_conn!(db, conn => {
        Ok(diesel::delete(idempotency_keys::table.filter(idempotency_keys::created_at.lt(before))).execute(conn).await?)
    })
}

fn parse_ids(rows: Vec<String>) -> Vec<Uuid> {
    rows.iter().filter_map(|s| Uuid::parse_str(s).ok()).collect()
}

/// Every known user (not services).
pub async fn all_user_ids(db: &Db) -> Result<Vec<Uuid>, StoreError> {
    with_conn!(db, conn => {
        let rows: Vec<String> = users::table
            .filter(users::role.ne("service"))
            .select(users::id)
            .order(users::created_at.asc())
            .load(conn)
            .await?;
        Ok(parse_ids(rows))
    })
}

/// Every admin.
pub async fn admin_ids(db: &Db) -> Result<Vec<Uuid>, StoreError> {
    with_conn!(db, conn => {
        let rows: Vec<String> = users::table.filter(users::role.eq("admin")).select(users::id).load(conn).await?;
        Ok(parse_ids(rows))
    })
}

static_query_id!(ReadProfiles);

/// Each of `ids` with its preferences document (NULL when never saved) and whether it has
/// a push subscription: a fixed text and a static query id, so that the connection
/// prepares it once (a `sql_query` is prepared anew for every execution).
struct ReadProfiles<'a> {
    ids: &'a [String],
}

impl diesel::query_builder::Query for ReadProfiles<'_> {
    type SqlType = (Text, diesel::sql_types::Nullable<super::json::JsonDoc>, diesel::sql_types::Bool);
}

impl diesel::query_builder::QueryFragment<diesel::pg::Pg> for ReadProfiles<'_> {
    fn walk_ast<'b>(&'b self, mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>) -> QueryResult<()> {
        out.push_sql(
            "SELECT ids.id, p.preferences, EXISTS (SELECT 1 FROM push_subscriptions s WHERE s.user_id = ids.id) \
             FROM unnest(",
        );
        out.push_bind_param::<diesel::sql_types::Array<Text>, _>(&self.ids)?;
        out.push_sql(") AS ids (id) LEFT JOIN notification_preferences p ON p.user_id = ids.id");
        Ok(())
    }
}

/// What the rules read of these users: their stored preferences documents (absent =
/// defaults) and which of them have a push subscription. On PostgreSQL one statement
/// answers both: a profile the cache lacks (a user's first event on this node) cost two
/// round trips, each a statement for the database to run.
pub async fn profiles_of(
    db: &Db,
    ids: &[Uuid],
) -> Result<(HashMap<Uuid, serde_json::Value>, HashSet<Uuid>), StoreError> {
    let pool = match db {
        Db::Sqlite(_) => return Ok((preferences_of(db, ids).await?, users_with_push(db, ids).await?)),
        Db::Postgres(pool) => pool,
    };
    let (mut docs, mut push) = (HashMap::new(), HashSet::new());
    let mut conn = pool.get().await.map_err(StoreError::from)?;
    for chunk in ids.chunks(1000) {
        let keys: Vec<String> = chunk.iter().map(Uuid::to_string).collect();
        let rows: Vec<(String, Option<Json>, bool)> = ReadProfiles { ids: &keys }.load(&mut *conn).await?;
        for (id, preferences, has_push) in rows {
            let Ok(id) = Uuid::parse_str(&id) else { continue };
            if let Some(doc) = preferences {
                docs.insert(id, doc.0);
            }
            if has_push {
                push.insert(id);
            }
        }
    }
    Ok((docs, push))
}

/// The stored preferences documents of these users (absent = defaults).
pub async fn preferences_of(db: &Db, ids: &[Uuid]) -> Result<HashMap<Uuid, serde_json::Value>, StoreError> {
    let mut out = HashMap::new();
    for chunk in ids.chunks(1000) {
        let keys: Vec<String> = chunk.iter().map(Uuid::to_string).collect();
        let rows: Vec<(String, Json)> = with_conn!(db, conn => {
            notification_preferences::table
                .filter(notification_preferences::user_id.eq_any(&keys))
                .select((notification_preferences::user_id, notification_preferences::preferences))
                .load(conn)
                .await?
        });
        for (id, doc) in rows {
            if let Ok(id) = Uuid::parse_str(&id) {
                out.insert(id, doc.0);
            }
        }
    }
    Ok(out)
}

/// Which of these users have at least one push subscription.
pub async fn users_with_push(db: &Db, ids: &[Uuid]) -> Result<HashSet<Uuid>, StoreError> {
    let mut out = HashSet::new();
    for chunk in ids.chunks(1000) {
        let keys: Vec<String> = chunk.iter().map(Uuid::to_string).collect();
        let rows: Vec<String> = with_conn!(db, conn => {
            push_subscriptions::table
                .filter(push_subscriptions::user_id.eq_any(&keys))
                .select(push_subscriptions::user_id)
                .distinct()
                .load(conn)
                .await?
        });
        out.extend(parse_ids(rows));
    }
    Ok(out)
}
