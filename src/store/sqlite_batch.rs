//! The SQLite side of the group commit, in blocking diesel (see
//! [`repository::store_batch`](super::repository::store_batch)).

use super::repository::{new_user_row, number_batch, NumberedBatch, StoreItem};
use super::schema::{deliveries, notifications, users};
use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::result::Error;
use diesel::sqlite::SqliteConnection;
use std::collections::{BTreeMap, HashMap, HashSet};
use uuid::Uuid;

/// Bumps each user's counters, numbers the batch and inserts it with its outbox rows,
/// in one `IMMEDIATE` transaction.
pub(super) fn store(
    conn: &mut SqliteConnection,
    per_user: &[(Uuid, i64)],
    now: NaiveDateTime,
    batch: Vec<StoreItem>,
) -> QueryResult<NumberedBatch> {
    conn.immediate_transaction(|conn| {
        let mut starts: HashMap<Uuid, (i64, i64)> = HashMap::with_capacity(per_user.len());
        // One statement per distinct count (a broadcast: one in all) rather than two per
        // user: statements, not rows, are what a batch of many recipients costs.
        let mut by_count: BTreeMap<i64, Vec<String>> = BTreeMap::new();
        for (user, count) in per_user {
            by_count.entry(*count).or_default().push(user.to_string());
        }
        for (count, ids) in by_count {
            // SQLite binds at most 32766 parameters per statement.
            for chunk in ids.chunks(10_000) {
                let missing = bump(conn, chunk, count, &mut starts)?;
                if !missing.is_empty() {
                    for id in &missing {
                        let user = Uuid::parse_str(id).map_err(|e| Error::DeserializationError(Box::new(e)))?;
                        diesel::insert_into(users::table)
                            .values(&new_user_row(user, now))
                            .on_conflict_do_nothing()
                            .execute(conn)?;
                    }
                    bump(conn, &missing, count, &mut starts)?;
                }
            }
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

/// Adds `count` to the sequence and unread counters of `ids`, recording where each
/// user's new numbers start; returns the ids that have no row yet.
fn bump(
    conn: &mut SqliteConnection,
    ids: &[String],
    count: i64,
    starts: &mut HashMap<Uuid, (i64, i64)>,
) -> QueryResult<Vec<String>> {
    let bumped: Vec<(String, i64, i64)> = diesel::update(users::table.filter(users::id.eq_any(ids)))
        .set((
            users::last_sequence_number.eq(users::last_sequence_number + count),
            users::unread_count.eq(users::unread_count + count),
        ))
        .returning((users::id, users::last_sequence_number, users::unread_count))
        .get_results(conn)?;
    let mut found = HashSet::with_capacity(bumped.len());
    for (id, last, unread) in bumped {
        let user = Uuid::parse_str(&id).map_err(|e| Error::DeserializationError(Box::new(e)))?;
        starts.insert(user, (last - count + 1, unread - count + 1));
        found.insert(id);
    }
    Ok(ids.iter().filter(|id| !found.contains(*id)).cloned().collect())
}
