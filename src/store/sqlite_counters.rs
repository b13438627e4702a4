//! Each user's sequence and unread counters on SQLite, kept by the writer thread in
//! memory instead of bumped in the user's row by every batch.
//!
//! Bumping the rows (`UPDATE users … RETURNING` per batch) was ~22 % of the writer's
//! instructions per stored broadcast delivery and ~14k instructions per user of a small
//! batch, and each user it bumped was one more page written to the log at commit (a
//! batch of user-targeted messages dirtied about three pages per notification, one of
//! them its owner's row; README, Storage). SQLite has one process and one writer (the
//! writer thread), so that thread can number alone.
//!
//! What a user's row then holds is a checkpoint of the counters: `last_sequence_number`
//! (C) and `unread_count` (U), as of the last change of `read` or the last erasure.
//! Every number after C went to a notification stored unread, and marking one read
//! takes one off U, whichever it is. So, with the user's highest stored sequence number
//! (one seek in the `(user_id, sequence_number)` index):
//!
//! - last sequence number = max(C, highest stored),
//! - unread count = U + (last − C).
//!
//! ([`effective`]). PostgreSQL, where several nodes number at once, keeps C and U exact
//! in the batch's own upsert; there the same reading gives C and U unchanged, so every
//! reader reads both backends alike. Erasing a user's notifications moves C up to the
//! last number first, so that numbers are never reused.
//!
//! Whatever changes C or U (a mark read, a mark all read, an erasure) forgets the user
//! here ([`UserCounters::forget`]) inside its transaction, after its first write, while
//! it holds SQLite's write lock: the writer numbers only inside its own (`IMMEDIATE`)
//! transactions, so it never sees a forgotten user between the change and its commit,
//! and reads the user afresh in its next batch. The writer records a batch's counters
//! once its rows are written, before its commit and likewise under the lock, and forgets
//! them if the commit fails.

use crate::id_maps::IdMap;
use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::result::Error;
use diesel::sql_types::{BigInt, Nullable, Text, Timestamp};
use diesel::sqlite::{Sqlite, SqliteConnection};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use uuid::Uuid;

/// A user's last sequence number and unread count from their row's checkpoint (C, U)
/// and their highest stored sequence number (see the module's introduction).
pub fn effective(checkpoint_last: i64, checkpoint_unread: i64, highest_stored: Option<i64>) -> (i64, i64) {
    let last = checkpoint_last.max(highest_stored.unwrap_or(0));
    (last, checkpoint_unread + (last - checkpoint_last))
}

/// Users the writer remembers at most; past this it starts afresh (reading each user
/// again costs one `SELECT` among a batch's).
const MAX_KNOWN: usize = 100_000;

/// The counters the writer thread numbers from, shared with whatever forgets them.
pub struct UserCounters {
    known: Mutex<IdMap<Uuid, Counters>>,
    /// Users remembered at most ([`MAX_KNOWN`]; fewer in tests).
    capacity: usize,
}

impl Default for UserCounters {
    fn default() -> Self {
        Self { known: Mutex::default(), capacity: MAX_KNOWN }
    }
}

/// A user's last sequence number and unread count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Counters {
    last: i64,
    unread: i64,
}

impl UserCounters {
    /// The counters of the database file at `path`, one per file in the process: two
    /// stores opened on one file (one process holds it, see `startup`; tests open a
    /// second) number from the same counters, each inside its own write transaction.
    pub fn for_database(path: &Path) -> Arc<UserCounters> {
        static OPEN: Mutex<Vec<(PathBuf, Weak<UserCounters>)>> = Mutex::new(Vec::new());
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let mut open = OPEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        open.retain(|(_, counters)| counters.strong_count() > 0);
        if let Some(counters) = open.iter().find(|(p, _)| *p == path).and_then(|(_, c)| c.upgrade()) {
            return counters;
        }
        let counters = Arc::new(UserCounters::default());
        open.push((path, Arc::downgrade(&counters)));
        counters
    }

    fn known(&self) -> std::sync::MutexGuard<'_, IdMap<Uuid, Counters>> {
        // A panic while holding it left the map whole (inserts and removals only).
        self.known.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Drops what is known of `user`: called, holding SQLite's write lock, by whatever
    /// changes the user's row or erases their notifications.
    pub fn forget(&self, user: &Uuid) {
        self.known().remove(user);
    }

    /// Drops what is known of these users (a batch whose transaction failed).
    pub(super) fn forget_all<'a>(&self, users: impl IntoIterator<Item = &'a Uuid>) {
        let mut known = self.known();
        for user in users {
            known.remove(user);
        }
    }

    /// Numbers a batch that stores `count` notifications for each of `per_user`:
    /// answers where each user's new sequence numbers and unread counts start, and where
    /// they end, for [`record`](Self::record) once the batch is written. Users not known
    /// yet are read from the database (and their rows created if they have none). Runs
    /// inside the writer's transaction; remembers nothing itself, so that a batch that
    /// fails leaves no trace here.
    pub(super) fn reserve(
        &self,
        conn: &mut SqliteConnection,
        per_user: &[(Uuid, i64)],
        now: NaiveDateTime,
    ) -> QueryResult<Reserved> {
        let mut found = Vec::with_capacity(per_user.len());
        let mut missing = Vec::new();
        {
            let known = self.known();
            for (user, count) in per_user {
                match known.get(user) {
                    Some(counters) => found.push((*user, *counters, *count)),
                    None => missing.push(*user),
                }
            }
        }
        if !missing.is_empty() {
            let counts: IdMap<Uuid, i64> = per_user.iter().copied().collect();
            for (user, counters) in load(conn, &missing, now)? {
                found.push((user, counters, counts.get(&user).copied().unwrap_or(0)));
            }
        }
        let mut reserved =
            Reserved { starts: crate::id_maps::map_with_capacity(found.len()), after: Vec::with_capacity(found.len()) };
        for (user, counters, count) in found {
            reserved.starts.insert(user, (counters.last + 1, counters.unread + 1));
            reserved.after.push((user, Counters { last: counters.last + count, unread: counters.unread + count }));
        }
        Ok(reserved)
    }

    /// Remembers where a batch's users' counters end: called inside the batch's
    /// transaction, after its rows are written (the commit may still fail, and then the
    /// writer forgets them again).
    pub(super) fn record(&self, after: Vec<(Uuid, Counters)>) {
        let mut known = self.known();
        if known.len() + after.len() > self.capacity {
            known.clear();
        }
        known.extend(after);
    }
}

/// A batch's numbers: where each user's start, and the counters once it is stored.
pub(super) struct Reserved {
    /// Each user's first new sequence number and unread count.
    pub(super) starts: IdMap<Uuid, (i64, i64)>,
    /// The counters to [`UserCounters::record`] once the batch is written.
    pub(super) after: Vec<(Uuid, Counters)>,
}

/// Reads the counters of `users` (their rows' checkpoints and highest stored numbers),
/// creating the rows of users who have none.
fn load(conn: &mut SqliteConnection, users: &[Uuid], now: NaiveDateTime) -> QueryResult<Vec<(Uuid, Counters)>> {
    let ids: Vec<String> = users.iter().map(super::repository::uuid_text).collect();
    let mut found = Vec::with_capacity(users.len());
    let mut seen = crate::id_maps::set_with_capacity(users.len());
    for chunk in ids.chunks(MAX_READ) {
        for (id, c, u, highest) in run_read(conn, chunk)? {
            let user = Uuid::parse_str(&id).map_err(|e| Error::DeserializationError(Box::new(e)))?;
            let (last, unread) = effective(c, u, highest);
            seen.insert(user);
            found.push((user, Counters { last, unread }));
        }
    }
    let new: Vec<&Uuid> = users.iter().filter(|u| !seen.contains(*u)).collect();
    if !new.is_empty() {
        // One statement of one text for all of them (a statement per user was a bind,
        // a step and a reset each; a multi-row insert's text would change with its size).
        let mut ids = String::with_capacity(2 + new.len() * 39);
        ids.push('[');
        for (i, user) in new.iter().enumerate() {
            ids.push_str(if i == 0 { "\"" } else { ",\"" });
            ids.push_str(&super::repository::uuid_text(user));
            ids.push('"');
        }
        ids.push(']');
        InsertNewUsers { ids: &ids, now: &now }.execute(conn)?;
        found.extend(new.into_iter().map(|user| (*user, Counters { last: 0, unread: 0 })));
    }
    Ok(found)
}

/// Creates the rows of the users in `ids` (a JSON array of their ids), as ordinary users
/// at zero, leaving any that exist.
struct InsertNewUsers<'a> {
    ids: &'a str,
    now: &'a NaiveDateTime,
}

impl QueryId for InsertNewUsers<'_> {
    type QueryId = InsertNewUsers<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl QueryFragment<Sqlite> for InsertNewUsers<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql(
            "INSERT OR IGNORE INTO users (id, role, last_sequence_number, unread_count, created_at, updated_at) \
             SELECT value, 'user', 0, 0, ",
        );
        out.push_bind_param::<Timestamp, _>(self.now)?;
        out.push_sql(", ");
        out.push_bind_param::<Timestamp, _>(self.now)?;
        out.push_sql(" FROM json_each(");
        out.push_bind_param::<Text, _>(self.ids)?;
        out.push_sql(")");
        Ok(())
    }
}

impl<Conn> RunQueryDsl<Conn> for InsertNewUsers<'_> {}

/// `SELECT id, C, U, highest stored number FROM users WHERE id IN (…)` with room for
/// `SLOTS` ids (the last repeated to fill it, which `IN` ignores): a few shapes serve
/// every batch and stay prepared.
struct ReadCounters<'a, const SLOTS: usize> {
    ids: &'a [String],
}

impl<const SLOTS: usize> QueryId for ReadCounters<'_, SLOTS> {
    type QueryId = ReadCounters<'static, SLOTS>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<const SLOTS: usize> Query for ReadCounters<'_, SLOTS> {
    type SqlType = (Text, BigInt, BigInt, Nullable<BigInt>);
}

impl<const SLOTS: usize> QueryFragment<Sqlite> for ReadCounters<'_, SLOTS> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        let Some(last) = self.ids.last() else { return Err(Error::QueryBuilderError("no ids to read".into())) };
        out.push_sql(
            "SELECT id, last_sequence_number, unread_count, \
             (SELECT max(sequence_number) FROM notifications WHERE notifications.user_id = users.id) \
             FROM users WHERE id IN (",
        );
        for slot in 0..SLOTS {
            if slot > 0 {
                out.push_sql(", ");
            }
            out.push_bind_param::<Text, _>(self.ids.get(slot).unwrap_or(last))?;
        }
        out.push_sql(")");
        Ok(())
    }
}

impl<Conn, const SLOTS: usize> RunQueryDsl<Conn> for ReadCounters<'_, SLOTS> {}

/// Most ids one read takes (SQLite binds at most 32766 parameters per statement).
const MAX_READ: usize = 4096;

type ReadRow = (String, i64, i64, Option<i64>);

fn run_read(conn: &mut SqliteConnection, ids: &[String]) -> QueryResult<Vec<ReadRow>> {
    match ids.len() {
        0 => Ok(Vec::new()),
        1..=8 => ReadCounters::<8> { ids }.load(conn),
        9..=32 => ReadCounters::<32> { ids }.load(conn),
        33..=128 => ReadCounters::<128> { ids }.load(conn),
        129..=512 => ReadCounters::<512> { ids }.load(conn),
        513..=1024 => ReadCounters::<1024> { ids }.load(conn),
        _ => ReadCounters::<MAX_READ> { ids }.load(conn),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::schema::users;
    use diesel::Connection;

    fn database(dir: &tempfile::TempDir) -> SqliteConnection {
        let path = dir.path().join("c.db");
        crate::store::run_migrations_blocking(&crate::config::DatabaseUrl::Sqlite(path.clone())).unwrap();
        SqliteConnection::establish(path.to_str().unwrap()).unwrap()
    }

    fn now() -> NaiveDateTime {
        chrono::Utc::now().naive_utc()
    }

    /// Numbers a batch and records it, as the writer does once its rows are written.
    fn stored(
        counters: &UserCounters,
        conn: &mut SqliteConnection,
        per_user: &[(Uuid, i64)],
    ) -> IdMap<Uuid, (i64, i64)> {
        let Reserved { starts, after } = counters.reserve(conn, per_user, now()).unwrap();
        counters.record(after);
        starts
    }

    #[test]
    fn users_are_numbered_on_from_what_the_batches_before_took() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = database(&dir);
        let counters = UserCounters::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let first = stored(&counters, &mut conn, &[(a, 2)]);
        assert_eq!(first[&a], (1, 1));
        let second = stored(&counters, &mut conn, &[(b, 1), (a, 3)]);
        assert_eq!((second[&a], second[&b]), ((3, 3), (1, 1)));
        // A batch that fails between its numbers and its end leaves nothing behind.
        let failed = counters.reserve(&mut conn, &[(a, 5)], now()).unwrap();
        assert_eq!(failed.starts[&a], (6, 6));
        drop(failed);
        assert_eq!(stored(&counters, &mut conn, &[(a, 1)])[&a], (6, 6));
        // First sight wrote the rows, as a checkpoint of nothing.
        let rows: i64 = users::table.count().get_result(&mut conn).unwrap();
        assert_eq!(rows, 2);
    }

    #[test]
    fn a_forgotten_user_is_read_again_from_their_row() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = database(&dir);
        let counters = UserCounters::default();
        let user = Uuid::new_v4();
        stored(&counters, &mut conn, &[(user, 2)]);
        // As a mark all read leaves it: checkpoint at 5, nothing unread.
        diesel::update(users::table)
            .set((users::last_sequence_number.eq(5), users::unread_count.eq(0)))
            .execute(&mut conn)
            .unwrap();
        assert_eq!(stored(&counters, &mut conn, &[(user, 1)])[&user], (3, 3), "still remembered");
        counters.forget(&user);
        assert_eq!(stored(&counters, &mut conn, &[(user, 1)])[&user], (6, 1));
    }

    #[test]
    fn past_capacity_it_starts_afresh_with_the_last_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = database(&dir);
        let counters = UserCounters { known: Mutex::default(), capacity: 2 };
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        stored(&counters, &mut conn, &[(a, 4), (b, 1)]);
        // Full: the next batch's users are all that is remembered after it.
        let starts = stored(&counters, &mut conn, &[(a, 1), (c, 1)]);
        assert_eq!((starts[&a], starts[&c]), ((5, 5), (1, 1)));
        assert_eq!(counters.known().len(), 2);
        assert!(!counters.known().contains_key(&b));
        assert_eq!(counters.known()[&a], Counters { last: 5, unread: 5 });
    }

    #[test]
    fn stores_on_one_file_share_their_counters() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared.db");
        std::fs::write(&path, b"").unwrap();
        let one = UserCounters::for_database(&path);
        let other = UserCounters::for_database(&dir.path().join(".").join("shared.db"));
        assert!(Arc::ptr_eq(&one, &other));
        assert!(!Arc::ptr_eq(&one, &UserCounters::for_database(&dir.path().join("another.db"))));
    }

    #[test]
    fn a_checkpoint_with_nothing_stored_after_it_reads_as_itself() {
        assert_eq!(effective(7, 3, Some(7)), (7, 3));
        assert_eq!(effective(7, 3, Some(5)), (7, 3));
        // Erased history: nothing stored, the checkpoint keeps the numbers.
        assert_eq!(effective(7, 0, None), (7, 0));
        assert_eq!(effective(0, 0, None), (0, 0));
    }

    #[test]
    fn numbers_stored_after_the_checkpoint_count_as_unread() {
        assert_eq!(effective(7, 3, Some(10)), (10, 6));
        assert_eq!(effective(0, 0, Some(4)), (4, 4));
        // Marked read since: U went below zero by as many.
        assert_eq!(effective(7, -2, Some(10)), (10, 1));
    }
}
