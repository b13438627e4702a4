//! The SQLite side of the group commit, in blocking diesel (see
//! [`repository::store_batch_sqlite`](super::repository::store_batch_sqlite)).

use super::repository::{
    number_batch, DeliveryRow, NewRow, NumberedBatch, StoreItem, INSERT_DELIVERIES, NOTIFICATIONS_COLUMNS,
};
use super::sqlite_counters::{Reserved, UserCounters};
use crate::domain::NotificationContent;
use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::result::Error;
use diesel::sql_types::{BigInt, Bool, Integer, Nullable, Text, Timestamp};
use diesel::sqlite::{Sqlite, SqliteConnection};
use std::sync::Arc;
use uuid::Uuid;

static_query_id!(InsertDelivery);

/// How the batch's multi-row statements meet a broken constraint. SQLite gives a statement
/// that may stop halfway with `ABORT` (the default) a journal of its own, a copy of every
/// page it touches, to undo that statement alone: about 6 % of a stored broadcast
/// delivery (callgrind). `FAIL` stops without undoing the statement's earlier rows, so it
/// needs no journal, and the error fails the whole batch, which rolls back at once. (The
/// notifications→users foreign key, checked after each statement, asked for the same
/// journal: the seventh migration dropped it.)
const ON_CONFLICT: &str = "OR FAIL";

/// Numbers the batch from the writer's counters (see [`super::sqlite_counters`]) and
/// inserts it with its outbox rows, in one `IMMEDIATE` transaction.
pub(super) fn store(
    conn: &mut SqliteConnection,
    counters: &UserCounters,
    per_user: &[(Uuid, i64)],
    now: NaiveDateTime,
    batch: Vec<StoreItem>,
) -> QueryResult<NumberedBatch> {
    let stored = conn.immediate_transaction(|conn| {
        let Reserved { starts, after } = counters.reserve(conn, per_user, now)?;
        let numbered = number_batch(batch, starts, now)?;
        // An event's rows share their content (a broadcast's thousands): its time is
        // written once for all of them.
        let mut times: Vec<String> = Vec::new();
        let mut last_content: Option<&Arc<NotificationContent>> = None;
        let mut rows = Vec::with_capacity(numbered.notifications.len());
        for row in &numbered.notifications {
            if !last_content.is_some_and(|c| Arc::ptr_eq(c, &row.content)) {
                times.push(crate::domain::time_text::sqlite(&row.content.created_at.naive_utc()));
                last_content = Some(&row.content);
            }
            rows.push((row, times.len() - 1));
        }
        let rows: Vec<RowBinds> = rows
            .iter()
            .map(|&(row, t)| RowBinds { row, metadata: row.content.metadata.as_str(), created_at: &times[t] })
            .collect();
        // A run of an event's rows binds its content once per statement; the rows
        // between such runs go in statements of whole rows.
        let mut alone_from = 0;
        let mut i = 0;
        while i < rows.len() {
            let content = &rows[i].row.content;
            let run = rows[i..].iter().take_while(|b| Arc::ptr_eq(&b.row.content, content)).count();
            if run >= SHARED_RUN {
                insert_each(conn, &rows[alone_from..i])?;
                insert_sharing(conn, &rows[i..i + run])?;
                alone_from = i + run;
            }
            i += run;
        }
        insert_each(conn, &rows[alone_from..])?;
        for row in &numbered.deliveries {
            InsertDelivery(row).execute(conn)?;
        }
        // Still holding the write lock: nothing can forget these users before this.
        counters.record(after);
        Ok(numbered)
    });
    if stored.is_err() {
        // Rolled back, perhaps by a commit that failed after the batch was recorded: the
        // numbers it took were not used.
        counters.forget_all(per_user.iter().map(|(user, _)| user));
    }
    stored
}

/// A row to insert, with the texts bound for it.
struct RowBinds<'a> {
    row: &'a NewRow,
    /// The row's metadata (what `JsonDoc` writes on SQLite: the JSON text).
    metadata: &'a str,
    /// The row's time as diesel writes a SQLite `TIMESTAMP`, written without chrono's
    /// formatter (see `domain::time_text`).
    created_at: &'a str,
}

/// Rows of one event from this many on go in statements that bind their shared content
/// once ([`InsertSharing`]).
const SHARED_RUN: usize = 4;

/// Inserts `rows`, several per statement, in a few fixed shapes that each stay prepared
/// (a shape per batch size would be parsed anew for most batches): every statement costs
/// SQLite its own start, cursors and halt, a few thousand instructions.
fn insert_each(conn: &mut SqliteConnection, rows: &[RowBinds<'_>]) -> QueryResult<()> {
    let mut rest = rows;
    while !rest.is_empty() {
        rest = match rest.len() {
            64.. => insert_first::<64>(conn, rest, Rows::Whole)?,
            16.. => insert_first::<16>(conn, rest, Rows::Whole)?,
            4.. => insert_first::<4>(conn, rest, Rows::Whole)?,
            _ => insert_first::<1>(conn, rest, Rows::Whole)?,
        };
    }
    Ok(())
}

/// Inserts `rows`, which share their content, binding it once per statement: each row
/// then binds 4 parameters instead of 11 (diesel binding and unbinding them was 16 % of
/// the SQLite writer's work per broadcast delivery, by callgrind). A tail shorter than
/// [`SHARED_RUN`] goes row by row.
fn insert_sharing(conn: &mut SqliteConnection, rows: &[RowBinds<'_>]) -> QueryResult<()> {
    let mut rest = rows;
    while rest.len() >= SHARED_RUN {
        rest = match rest.len() {
            64.. => insert_first::<64>(conn, rest, Rows::Sharing)?,
            16.. => insert_first::<16>(conn, rest, Rows::Sharing)?,
            _ => insert_first::<SHARED_RUN>(conn, rest, Rows::Sharing)?,
        };
    }
    insert_each(conn, rest)
}

/// Which statement takes a group of rows.
#[derive(Clone, Copy)]
enum Rows {
    /// Every row binds all its columns ([`InsertNotifications`]).
    Whole,
    /// The rows share their content, bound once ([`InsertSharing`]).
    Sharing,
}

/// Inserts the first `ROWS` of `rows` as `kind` says; answers the rest.
fn insert_first<'r, 'a, const ROWS: usize>(
    conn: &mut SqliteConnection,
    rows: &'r [RowBinds<'a>],
    kind: Rows,
) -> QueryResult<&'r [RowBinds<'a>]> {
    let (now, rest) = rows.split_at(ROWS);
    match kind {
        Rows::Whole => InsertNotifications::<ROWS>(now).execute(conn)?,
        Rows::Sharing => InsertSharing::<ROWS>(now).execute(conn)?,
    };
    Ok(rest)
}

/// Gives each shape of these statements (a lifetime and a row count) a static query id of
/// its own: diesel's insert builder wrote the statement's text anew for every execution
/// to find it among the prepared ones.
macro_rules! static_shape_id {
    ($($t:ident),+) => {
        $(
            impl<const ROWS: usize> QueryId for $t<'_, ROWS> {
                type QueryId = $t<'static, ROWS>;
                const HAS_STATIC_QUERY_ID: bool = true;
            }
            impl<Conn, const ROWS: usize> RunQueryDsl<Conn> for $t<'_, ROWS> {}
        )+
    };
}
static_shape_id!(InsertNotifications, InsertSharing);

/// `INSERT OR FAIL INTO notifications (…)`, the start of both row statements, once `rows`
/// are checked to be `ROWS`.
fn push_insert_into<const ROWS: usize>(out: &mut AstPass<'_, '_, Sqlite>, rows: &[RowBinds<'_>]) -> QueryResult<()> {
    if rows.len() != ROWS {
        return Err(Error::QueryBuilderError(format!("{} rows for a {ROWS}-row insert", rows.len()).into()));
    }
    out.push_sql("INSERT ");
    out.push_sql(ON_CONFLICT);
    out.push_sql(" INTO ");
    out.push_sql(NOTIFICATIONS_COLUMNS);
    Ok(())
}

/// `(…), (…), …`: each row's id, owner and sequence number, then the parameters `rest`
/// pushes for it (after a comma of its own).
fn push_tuples<'b, 'a: 'b>(
    out: &mut AstPass<'_, 'b, Sqlite>,
    rows: &'b [RowBinds<'a>],
    rest: impl Fn(&mut AstPass<'_, 'b, Sqlite>, &'b RowBinds<'a>) -> QueryResult<()>,
) -> QueryResult<()> {
    for (i, b) in rows.iter().enumerate() {
        let r = b.row;
        out.push_sql(if i == 0 { "(" } else { ", (" });
        push_binds!(out,
            Text => &r.id_text,
            Text => &r.user_id_text,
            BigInt => &r.sequence_number,
        );
        rest(out, b)?;
        out.push_sql(")");
    }
    Ok(())
}

/// `ROWS` whole rows' `INSERT`.
struct InsertNotifications<'a, const ROWS: usize>(&'a [RowBinds<'a>]);

impl<const ROWS: usize> QueryFragment<Sqlite> for InsertNotifications<'_, ROWS> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        push_insert_into::<ROWS>(&mut out, self.0)?;
        out.push_sql(" VALUES ");
        push_tuples(&mut out, self.0, |out, b| {
            let r = b.row;
            out.push_sql(", ");
            push_binds!(out,
                Text => r.content.notification_type.as_str(),
                Text => r.content.priority.as_str(),
                Text => r.content.title.as_str(),
                Text => r.content.message.as_str(),
                Text => b.metadata,
                Bool => &false,
                Bool => &r.toast,
                Text => b.created_at,
            );
            Ok(())
        })
    }
}

/// `ROWS` rows of one content's `INSERT`: the content is bound once, and each row binds
/// its id, owner, sequence number and whether its toast went out.
struct InsertSharing<'a, const ROWS: usize>(&'a [RowBinds<'a>]);

impl<const ROWS: usize> QueryFragment<Sqlite> for InsertSharing<'_, ROWS> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        let [first, ..] = self.0 else { return Err(Error::QueryBuilderError("no rows to insert".into())) };
        if !self.0.iter().all(|b| Arc::ptr_eq(&b.row.content, &first.row.content)) {
            return Err(Error::QueryBuilderError("rows of different contents for a shared insert".into()));
        }
        let c = &first.row.content;
        push_insert_into::<ROWS>(&mut out, self.0)?;
        // In the columns' order: the rows' own values come from the `VALUES` list.
        out.push_sql(" SELECT column1, column2, column3, ");
        push_binds!(out,
            Text => c.notification_type.as_str(),
            Text => c.priority.as_str(),
            Text => c.title.as_str(),
            Text => c.message.as_str(),
            Text => first.metadata,
        );
        out.push_sql(", FALSE, column4, ");
        out.push_bind_param::<Text, _>(first.created_at)?;
        out.push_sql(" FROM (VALUES ");
        push_tuples(&mut out, self.0, |out, b| {
            out.push_sql(", ");
            out.push_bind_param::<Bool, _>(&b.row.toast)
        })?;
        out.push_sql(")");
        Ok(())
    }
}

/// One outbox row's `INSERT`, a statement of its own static id (see
/// [`InsertNotification`]).
struct InsertDelivery<'a>(&'a DeliveryRow);

impl QueryFragment<Sqlite> for InsertDelivery<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        let r = self.0;
        out.push_sql(INSERT_DELIVERIES);
        out.push_sql(" VALUES (");
        push_binds!(out,
            Text => &r.id,
            Text => &r.notification_id,
            Text => &r.user_id,
            Text => &r.channel,
            Text => &r.status,
            Nullable<Text> => &r.reason,
            Integer => &r.attempts,
            Nullable<Text> => &r.last_error,
            Nullable<Timestamp> => &r.next_attempt_at,
            Nullable<Text> => &r.claimed_by,
            Nullable<Timestamp> => &r.sent_at,
            Timestamp => &r.created_at,
            Timestamp => &r.updated_at,
        );
        out.push_sql(")");
        Ok(())
    }
}

impl<Conn> RunQueryDsl<Conn> for InsertDelivery<'_> {}
