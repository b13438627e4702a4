//! The SQLite side of the group commit, in blocking diesel (see
//! [`repository::store_batch`](super::repository::store_batch)).

use super::repository::{new_user_row, NotificationRow};
use super::schema::{notifications, users};
use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;
use std::collections::HashMap;
use uuid::Uuid;

/// Bumps each user's counter, numbers the rows with `number`, inserts them; one
/// `IMMEDIATE` transaction.
pub(super) fn store(
    conn: &mut SqliteConnection,
    per_user: &[(Uuid, i64)],
    now: NaiveDateTime,
    number: impl FnOnce(HashMap<Uuid, i64>) -> QueryResult<Vec<NotificationRow>>,
) -> QueryResult<Vec<NotificationRow>> {
    conn.immediate_transaction(|conn| {
        let mut next_seq: HashMap<Uuid, i64> = HashMap::with_capacity(per_user.len());
        for (user, count) in per_user {
            diesel::insert_into(users::table)
                .values(&new_user_row(*user, now))
                .on_conflict_do_nothing()
                .execute(conn)?;
            let last: i64 = diesel::update(users::table.find(user.to_string()))
                .set(users::last_sequence_number.eq(users::last_sequence_number + *count))
                .returning(users::last_sequence_number)
                .get_result(conn)?;
            next_seq.insert(*user, last - count + 1);
        }
        let rows = number(next_seq)?;
        // SQLite binds at most 32766 parameters per statement: 10 columns × 1000 rows.
        for chunk in rows.chunks(1000) {
            diesel::insert_into(notifications::table)
                .values(chunk)
                .execute(conn)?;
        }
        Ok(rows)
    })
}
