//! The SQLite side of the group commit, in blocking diesel (see
//! [`repository::store_batch`](super::repository::store_batch)).

use super::repository::{new_user_row, number_batch, NumberedBatch, StoreItem};
use super::schema::{deliveries, notifications, users};
use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;
use std::collections::HashMap;
use uuid::Uuid;

/// Bumps each user's counters, numbers the batch and inserts it with its outbox rows,
/// in one `IMMEDIATE` transaction.
pub(super) fn store(
    conn: &mut SqliteConnection,
    per_user: &[(Uuid, i64)],
    now: NaiveDateTime,
    batch: &[StoreItem],
) -> QueryResult<NumberedBatch> {
    conn.immediate_transaction(|conn| {
        let mut starts: HashMap<Uuid, (i64, i64)> = HashMap::with_capacity(per_user.len());
        for (user, count) in per_user {
            diesel::insert_into(users::table)
                .values(&new_user_row(*user, now))
                .on_conflict_do_nothing()
                .execute(conn)?;
            let (last, unread): (i64, i64) = diesel::update(users::table.find(user.to_string()))
                .set((
                    users::last_sequence_number.eq(users::last_sequence_number + *count),
                    users::unread_count.eq(users::unread_count + *count),
                ))
                .returning((users::last_sequence_number, users::unread_count))
                .get_result(conn)?;
            starts.insert(*user, (last - count + 1, unread - count + 1));
        }
        let numbered = number_batch(batch, starts, now)?;
        // One row per statement: SQLite has no round trip to save, and a single-row
        // insert is prepared once and cached, where a multi-row one is built and parsed
        // anew for every batch size.
        for row in &numbered.notifications {
            diesel::insert_into(notifications::table).values(row).execute(conn)?;
        }
        for row in &numbered.deliveries {
            diesel::insert_into(deliveries::table).values(row).execute(conn)?;
        }
        Ok(numbered)
    })
}
