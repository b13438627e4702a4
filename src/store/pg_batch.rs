//! The PostgreSQL statements of the group commit (see
//! [`repository::store_batch_pg`](super::repository::store_batch_pg)).
//!
//! Each has a fixed text whatever the batch's size — the columns travel as arrays
//! (`… FROM unnest($1::text[], …)`) — and a static query id, so the connection prepares
//! it once and PostgreSQL parses and plans it once: diesel's multi-row `VALUES` inserts
//! and `sql_query` are prepared anew for every execution, and PostgreSQL spent a tenth of
//! its time parsing and planning them.

use super::json::JsonDoc;
use super::json::JsonTextRef;
use super::repository::{uuid_text, DeliveryRow, NewRow, INSERT_DELIVERIES, NOTIFICATIONS_COLUMNS};
use super::StoreError;
use crate::id_maps::IdMap;
use chrono::NaiveDateTime;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment};
use diesel::sql_types::{Array, BigInt, Bool, Integer, Nullable, Text, Timestamp};
use diesel::QueryResult;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

static_query_id!(BumpCounters, InsertNotifications, InsertDeliveries, NotifyAll);

/// Creates or bumps every recipient's counters (a new user's row starts at its count, a
/// known one adds to it), taking the rows in id order so that two nodes storing batches
/// for the same users wait for each other instead of deadlocking.
struct BumpCounters<'a> {
    ids: &'a [String],
    counts: &'a [i64],
    now: NaiveDateTime,
}

impl Query for BumpCounters<'_> {
    type SqlType = (Text, BigInt, BigInt);
}

impl QueryFragment<Pg> for BumpCounters<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "INSERT INTO users (id, last_sequence_number, unread_count, created_at, updated_at) SELECT id, n, n, ",
        );
        out.push_bind_param::<Timestamp, _>(&self.now)?;
        out.push_sql(", ");
        out.push_bind_param::<Timestamp, _>(&self.now)?;
        out.push_sql(" FROM unnest(");
        out.push_bind_param::<Array<Text>, _>(&self.ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<BigInt>, _>(&self.counts)?;
        out.push_sql(
            ") AS t (id, n) ORDER BY id ON CONFLICT (id) DO UPDATE SET \
             last_sequence_number = users.last_sequence_number + excluded.last_sequence_number, \
             unread_count = users.unread_count + excluded.unread_count \
             RETURNING id, last_sequence_number, unread_count",
        );
        Ok(())
    }
}

/// Inserts a batch's rows, column by column.
struct InsertNotifications<'a> {
    ids: Vec<&'a str>,
    user_ids: Vec<&'a str>,
    sequence_numbers: Vec<i64>,
    types: Vec<&'a str>,
    priorities: Vec<&'a str>,
    titles: Vec<&'a str>,
    messages: Vec<&'a str>,
    metadata: Vec<JsonTextRef<'a>>,
    read: Vec<bool>,
    toast: Vec<bool>,
    created_at: Vec<NaiveDateTime>,
}

impl QueryFragment<Pg> for InsertNotifications<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("INSERT INTO ");
        out.push_sql(NOTIFICATIONS_COLUMNS);
        out.push_sql(" SELECT * FROM unnest(");
        push_binds!(out,
            Array<Text> => &self.ids,
            Array<Text> => &self.user_ids,
            Array<BigInt> => &self.sequence_numbers,
            Array<Text> => &self.types,
            Array<Text> => &self.priorities,
            Array<Text> => &self.titles,
            Array<Text> => &self.messages,
            Array<JsonDoc> => &self.metadata,
            Array<Bool> => &self.read,
            Array<Bool> => &self.toast,
            Array<Timestamp> => &self.created_at,
        );
        out.push_sql(")");
        Ok(())
    }
}

/// Inserts a batch's outbox rows, column by column.
struct InsertDeliveries<'a> {
    text: [Vec<&'a str>; 5],
    reason: Vec<Option<&'a str>>,
    attempts: Vec<i32>,
    last_error: Vec<Option<&'a str>>,
    next_attempt_at: Vec<Option<NaiveDateTime>>,
    claimed_by: Vec<Option<&'a str>>,
    sent_at: Vec<Option<NaiveDateTime>>,
    created_at: Vec<NaiveDateTime>,
    updated_at: Vec<NaiveDateTime>,
}

impl<'a> InsertDeliveries<'a> {
    fn new(rows: &'a [DeliveryRow]) -> Self {
        let text = |f: fn(&DeliveryRow) -> &str| rows.iter().map(f).collect::<Vec<&str>>();
        let optional = |f: fn(&DeliveryRow) -> Option<&str>| rows.iter().map(f).collect::<Vec<Option<&str>>>();
        Self {
            text: [
                text(|r| &r.id),
                text(|r| &r.notification_id),
                text(|r| &r.user_id),
                text(|r| &r.channel),
                text(|r| &r.status),
            ],
            reason: optional(|r| r.reason.as_deref()),
            attempts: rows.iter().map(|r| r.attempts).collect(),
            last_error: optional(|r| r.last_error.as_deref()),
            next_attempt_at: rows.iter().map(|r| r.next_attempt_at).collect(),
            claimed_by: optional(|r| r.claimed_by.as_deref()),
            sent_at: rows.iter().map(|r| r.sent_at).collect(),
            created_at: rows.iter().map(|r| r.created_at).collect(),
            updated_at: rows.iter().map(|r| r.updated_at).collect(),
        }
    }
}

impl QueryFragment<Pg> for InsertDeliveries<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(INSERT_DELIVERIES);
        out.push_sql(" SELECT * FROM unnest(");
        let [id, notification_id, user_id, channel, status] = &self.text;
        push_binds!(out,
            Array<Text> => id,
            Array<Text> => notification_id,
            Array<Text> => user_id,
            Array<Text> => channel,
            Array<Text> => status,
            Array<Nullable<Text>> => &self.reason,
            Array<Integer> => &self.attempts,
            Array<Nullable<Text>> => &self.last_error,
            Array<Nullable<Timestamp>> => &self.next_attempt_at,
            Array<Nullable<Text>> => &self.claimed_by,
            Array<Nullable<Timestamp>> => &self.sent_at,
            Array<Timestamp> => &self.created_at,
            Array<Timestamp> => &self.updated_at,
        );
        out.push_sql(")");
        Ok(())
    }
}

/// Sends every payload on the cluster channel (delivered at commit).
struct NotifyAll<'a> {
    payloads: &'a [String],
}

impl QueryFragment<Pg> for NotifyAll<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("SELECT pg_notify('notifyhub', p) FROM unnest(");
        out.push_bind_param::<Array<Text>, _>(&self.payloads)?;
        out.push_sql(") AS p");
        Ok(())
    }
}

/// Bumps the recipients' counters; answers where each one's new numbers start (sequence
/// number, unread count).
pub(super) async fn bump_counters(
    mut conn: &AsyncPgConnection,
    per_user: &[(Uuid, i64)],
    now: NaiveDateTime,
) -> Result<IdMap<Uuid, (i64, i64)>, StoreError> {
    let ids: Vec<String> = per_user.iter().map(|(u, _)| uuid_text(u)).collect();
    let counts: Vec<i64> = per_user.iter().map(|(_, c)| *c).collect();
    let bumped: Vec<(String, i64, i64)> = BumpCounters { ids: &ids, counts: &counts, now }.load(&mut conn).await?;
    let count_of: IdMap<Uuid, i64> = per_user.iter().copied().collect();
    let mut starts = crate::id_maps::map_with_capacity(per_user.len());
    for (id, last, unread) in bumped {
        let user = Uuid::parse_str(&id).map_err(|e| StoreError::Corrupt(format!("user id {id}: {e}")))?;
        let count = count_of.get(&user).copied().unwrap_or(0);
        starts.insert(user, (last - count + 1, unread - count + 1));
    }
    Ok(starts)
}

/// Inserts the rows in one statement.
pub(super) async fn insert_notifications(mut conn: &AsyncPgConnection, rows: &[NewRow]) -> Result<(), StoreError> {
    let text = |f: fn(&NewRow) -> &str| rows.iter().map(f).collect::<Vec<&str>>();
    let created_at: Vec<NaiveDateTime> = rows.iter().map(|r| r.content.created_at.naive_utc()).collect();
    InsertNotifications {
        ids: text(|r| &r.id_text),
        user_ids: text(|r| &r.user_id_text),
        sequence_numbers: rows.iter().map(|r| r.sequence_number).collect(),
        types: text(|r| r.content.notification_type.as_str()),
        priorities: text(|r| r.content.priority.as_str()),
        titles: text(|r| &r.content.title),
        messages: text(|r| &r.content.message),
        metadata: rows.iter().map(|r| JsonTextRef(r.content.metadata.as_str())).collect(),
        read: vec![false; rows.len()],
        toast: rows.iter().map(|r| r.toast).collect(),
        created_at,
    }
    .execute(&mut conn)
    .await?;
    Ok(())
}

/// Inserts the outbox rows in one statement (none: nothing sent).
pub(super) async fn insert_deliveries(mut conn: &AsyncPgConnection, rows: &[DeliveryRow]) -> Result<(), StoreError> {
    if !rows.is_empty() {
        InsertDeliveries::new(rows).execute(&mut conn).await?;
    }
    Ok(())
}

/// Sends the payloads, in one statement.
pub(super) async fn notify_all(mut conn: &AsyncPgConnection, payloads: &[String]) -> Result<(), StoreError> {
    if payloads.is_empty() {
        return Ok(());
    }
    NotifyAll { payloads }.execute(&mut conn).await?;
    Ok(())
}

/// Sends payloads to every node on their own (outside a batch): presence, read state,
/// preference changes. Nothing to tell on SQLite, which is single-node.
pub async fn notify_nodes(db: &super::Db, payloads: Vec<String>) -> Result<(), StoreError> {
    if let super::Db::Postgres(pool) = db {
        let conn = pool.get().await?;
        notify_all(&conn, &payloads).await?;
    }
    Ok(())
}
