//! Every query the hub runs, each written once for both backends (see [`with_conn!`]).
//!
//! [`with_conn!`]: crate::with_conn

use super::json::Json;
use super::schema::{notification_preferences, notifications, users};
use super::{Db, StoreError};
use crate::domain::delivery::{DeliveryStatus, NewDelivery};
use crate::domain::{NewNotification, Notification, NotificationContent, StoredNotification, ToastFrames};
use crate::id_maps::IdMap;
use crate::with_conn;
use chrono::{DateTime, NaiveDateTime, Timelike, Utc};
use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::{AsyncConnection, RunQueryDsl};
use std::sync::Arc;
use uuid::Uuid;

/// Stored times have microsecond precision (PostgreSQL's); cut to that before storing
/// so the toast sent from memory equals what the REST API later reads back.
pub fn to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(t.nanosecond() / 1_000 * 1_000).unwrap_or(t)
}

/// The table and columns of a batch's `notifications` insert, after `INSERT [OR …] INTO`;
/// the row's fields bind in this order (`sqlite_batch`, `pg_batch`).
pub(super) const NOTIFICATIONS_COLUMNS: &str = "notifications (id, user_id, sequence_number, \
     notification_type, priority, title, message, metadata, read, toast, created_at)";

/// The start of a batch's `deliveries` insert; the row's fields bind in this order.
pub(super) const INSERT_DELIVERIES: &str = "INSERT INTO deliveries (id, notification_id, user_id, channel, \
     status, reason, attempts, last_error, next_attempt_at, claimed_by, sent_at, created_at, updated_at)";

/// A `notifications` row.
#[derive(Queryable, Selectable, Clone)]
#[diesel(table_name = notifications)]
pub struct NotificationRow {
    pub(super) id: String,
    pub(super) user_id: String,
    pub(super) sequence_number: i64,
    pub(super) notification_type: String,
    pub(super) priority: String,
    pub(super) title: String,
    pub(super) message: String,
    pub(super) metadata: Json,
    pub(super) read: bool,
    pub(super) toast: bool,
    pub(super) created_at: NaiveDateTime,
}

impl NotificationRow {
    /// The domain form.
    pub fn into_domain(self) -> Result<Notification, StoreError> {
        let corrupt = |what: &str, e: String| StoreError::Corrupt(format!("notification {}: {what}: {e}", self.id));
        Ok(Notification {
            id: Uuid::parse_str(&self.id).map_err(|e| corrupt("id", e.to_string()))?,
            user_id: Uuid::parse_str(&self.user_id).map_err(|e| corrupt("user_id", e.to_string()))?,
            sequence_number: self.sequence_number,
            notification_type: self.notification_type.parse().map_err(|e| corrupt("type", e))?,
            priority: self.priority.parse().map_err(|e| corrupt("priority", e))?,
            title: self.title,
            message: self.message,
            metadata: self.metadata.0,
            read: self.read,
            created_at: self.created_at.and_utc(),
        })
    }
}

/// `u` as stored (hyphenated, lower case), written without the formatting machinery
/// `to_string` goes through: a batch writes a few per recipient.
pub(super) fn uuid_text(u: &Uuid) -> String {
    u.hyphenated().encode_lower(&mut Uuid::encode_buffer()).to_owned()
}

#[derive(Insertable)]
#[diesel(table_name = users)]
pub(super) struct UserRow<'a> {
    id: String,
    role: &'a str,
    last_sequence_number: i64,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

/// Records a user (first sight) or updates their role.
pub async fn upsert_user(db: &Db, user: Uuid, role: &str) -> Result<(), StoreError> {
    let now = Utc::now().naive_utc();
    let row = UserRow { id: user.to_string(), role, last_sequence_number: 0, created_at: now, updated_at: now };
    with_conn!(db, conn => {
        diesel::insert_into(users::table)
            .values(&row)
            .on_conflict(users::id)
            .do_update()
            .set((users::role.eq(excluded(users::role)), users::updated_at.eq(excluded(users::updated_at))))
            .execute(conn)
            .await?;
        Ok(())
    })
}

/// Records a user with role `user` unless already present (their role is kept).
pub async fn insert_user_if_absent(db: &Db, user: Uuid) -> Result<(), StoreError> {
    let now = Utc::now().naive_utc();
    let row = UserRow { id: user.to_string(), role: "user", last_sequence_number: 0, created_at: now, updated_at: now };
    with_conn!(db, conn => {
        diesel::insert_into(users::table).values(&row).on_conflict_do_nothing().execute(conn).await?;
        Ok(())
    })
}

/// A notification to store, with the outbox rows that go with it.
#[derive(Debug, Clone)]
pub struct StoreItem {
    /// The notification.
    pub notification: NewNotification,
    /// Its delivery rows, written in the same transaction.
    pub deliveries: Vec<NewDelivery>,
    /// Whether its live toast goes out (false: the tabs only get the unread count).
    pub toast: bool,
}

/// A `deliveries` (outbox) row, as a batch creates it.
pub(super) struct DeliveryRow {
    pub(super) id: String,
    pub(super) notification_id: String,
    pub(super) user_id: String,
    pub(super) channel: String,
    pub(super) status: String,
    pub(super) reason: Option<String>,
    pub(super) attempts: i32,
    pub(super) last_error: Option<String>,
    pub(super) next_attempt_at: Option<NaiveDateTime>,
    pub(super) claimed_by: Option<String>,
    pub(super) sent_at: Option<NaiveDateTime>,
    pub(super) created_at: NaiveDateTime,
    pub(super) updated_at: NaiveDateTime,
}

/// Each user's count in a batch, in first-seen order.
fn count_per_user(batch: &[StoreItem]) -> Vec<(Uuid, i64)> {
    let mut per_user: Vec<(Uuid, i64)> = Vec::new();
    let mut index: IdMap<Uuid, usize> = crate::id_maps::map_with_capacity(batch.len());
    for item in batch {
        let user = item.notification.user_id;
        match index.get(&user) {
            Some(&i) => per_user[i].1 += 1,
            None => {
                index.insert(user, per_user.len());
                per_user.push((user, 1));
            }
        }
    }
    per_user
}

/// A `notifications` row about to be inserted: its keys, as text for the statement and
/// as the domain has them (so the stored form is rebuilt without parsing text back),
/// and the content it shares with its event's other rows.
pub(super) struct NewRow {
    pub(super) id: Uuid,
    pub(super) user_id: Uuid,
    pub(super) id_text: String,
    pub(super) user_id_text: String,
    pub(super) sequence_number: i64,
    pub(super) content: Arc<NotificationContent>,
    pub(super) toast: bool,
}

impl NewRow {
    /// The stored form, unread count included.
    fn into_stored(self, unread_count: i64) -> StoredNotification {
        StoredNotification {
            id: self.id,
            user_id: self.user_id,
            sequence_number: self.sequence_number,
            content: self.content,
            unread_count,
            toast_frame: None,
        }
    }
}

/// A batch's rows, numbered.
pub(super) struct NumberedBatch {
    pub(super) notifications: Vec<NewRow>,
    pub(super) deliveries: Vec<DeliveryRow>,
    pub(super) unread: Vec<i64>,
}

impl NumberedBatch {
    /// The stored notifications.
    fn into_stored(self) -> Vec<StoredNotification> {
        self.notifications.into_iter().zip(self.unread).map(|(row, unread)| row.into_stored(unread)).collect()
    }

    /// What the other nodes are told of the batch (see [`crate::cluster::committed_payloads`]),
    /// and the toast frames made for it: those of users with a tab on another node, so
    /// that the node holding it need not read the notification back. The same frames
    /// serve the local tabs.
    fn committed_payloads(
        &self,
        node: &str,
        remote_tabs: Option<&crate::cluster::presence::RemoteTabs>,
    ) -> (Vec<String>, Vec<Option<String>>) {
        let rows = self.notifications.iter().zip(&self.unread);
        let mut toasts = ToastFrames::new(Utc::now());
        let frames: Vec<Option<String>> = rows
            .clone()
            .map(|(row, unread)| {
                let elsewhere = row.toast && remote_tabs.is_some_and(|r| r.elsewhere(&row.user_id));
                elsewhere.then(|| toasts.frame(&row.content, (row.id, row.user_id, row.sequence_number), *unread))
            })
            .collect();
        let committed = rows.zip(&frames).map(|((row, unread), frame)| crate::cluster::CommittedRow {
            row: crate::cluster::Committed {
                user: row.user_id,
                seq: row.sequence_number,
                toast: row.toast,
                unread: *unread,
            },
            frame: frame.as_deref(),
        });
        (crate::cluster::committed_payloads(node, committed), frames)
    }
}

/// Numbers a batch from each user's first new sequence number and unread count
/// (`starts`), in arrival order.
pub(super) fn number_batch(
    batch: Vec<StoreItem>,
    mut starts: IdMap<Uuid, (i64, i64)>,
    now: NaiveDateTime,
) -> QueryResult<NumberedBatch> {
    let mut out = NumberedBatch {
        notifications: Vec::with_capacity(batch.len()),
        deliveries: Vec::new(),
        unread: Vec::with_capacity(batch.len()),
    };
    for item in batch {
        let n = item.notification;
        let (seq, unread) = starts.get_mut(&n.user_id).ok_or_else(|| {
            diesel::result::Error::QueryBuilderError("sequence range missing for a user of the batch".into())
        })?;
        let (id_text, user_id_text) = (uuid_text(&n.id), uuid_text(&n.user_id));
        let created_at = n.content.created_at;
        // Its outbox rows, from the ids as the row has them written.
        for d in item.deliveries {
            out.deliveries.push(DeliveryRow {
                id: uuid_text(&Uuid::now_v7()),
                notification_id: id_text.clone(),
                user_id: user_id_text.clone(),
                channel: d.channel.as_str().to_string(),
                status: d.status.as_str().to_string(),
                reason: d.reason,
                attempts: 0,
                last_error: None,
                // Due from the notification's own time (the dispatcher's clock).
                next_attempt_at: (d.status == DeliveryStatus::Pending).then_some(created_at.naive_utc()),
                claimed_by: None,
                sent_at: None,
                created_at: now,
                updated_at: now,
            });
        }
        out.notifications.push(NewRow {
            id: n.id,
            user_id: n.user_id,
            id_text,
            user_id_text,
            sequence_number: *seq,
            content: n.content,
            toast: item.toast,
        });
        out.unread.push(*unread);
        *seq += 1;
        *unread += 1;
    }
    Ok(out)
}

/// Stores a batch of notifications and their outbox rows in one transaction (group
/// commit), assigning each user's next sequence numbers in arrival order and keeping
/// their unread count in step, so that a rolled-back batch leaves no gap. On PostgreSQL
/// the per-user counters are bumped by an upsert that locks the user's row (`INSERT … ON
/// CONFLICT DO UPDATE … RETURNING`), so concurrent writers (other batches, other nodes)
/// never take the same numbers; on SQLite the writer thread numbers alone, from counters
/// it keeps (`counters`, see [`super::sqlite_counters`]).
///
/// This is the SQLite half, blocking, on the writer thread's own connection (see
/// `actors::sqlite_writer`): diesel-async cannot send SQLite a multi-row insert, and each
/// hop to a blocking thread cost the batch a wake-up each way. It runs in an `IMMEDIATE`
/// transaction that takes the write lock up front, after `log_restart` has had its look
/// at the WAL (see [`LogRestart::before_write`](super::sqlite_checkpoint::LogRestart::before_write)).
pub fn store_batch_sqlite(
    conn: &mut diesel::sqlite::SqliteConnection,
    batch: Vec<StoreItem>,
    log_restart: &mut super::sqlite_checkpoint::LogRestart,
    counters: &super::sqlite_counters::UserCounters,
) -> Result<Vec<StoredNotification>, StoreError> {
    let Some(Prepared { batch, per_user, now }) = Prepared::new(batch) else { return Ok(Vec::new()) };
    log_restart.before_write(conn);
    let numbered = super::sqlite_batch::store(conn, counters, &per_user, now, batch)?;
    Ok(numbered.into_stored())
}

/// The PostgreSQL half of the group commit (see [`store_batch_sqlite`]), which also
/// tells the other nodes through `NOTIFY`.
pub async fn store_batch_pg(
    pool: &super::PgPool,
    node: &str,
    batch: Vec<StoreItem>,
    remote_tabs: Option<&crate::cluster::presence::RemoteTabs>,
) -> Result<Vec<StoredNotification>, StoreError> {
    let Some(Prepared { batch, per_user, now }) = Prepared::new(batch) else { return Ok(Vec::new()) };
    let pooled = pool.get().await?;
    let conn: &diesel_async::AsyncPgConnection = &pooled;
    // Held until the batch has ended, so that a node joining hears of it or finds it.
    let announce = match remote_tabs {
        Some(remote) => Some(remote.membership().announce().await),
        None => None,
    };
    let tell = match &announce {
        Some(a) if !a.others => Tell::Nobody,
        _ => Tell::Nodes(remote_tabs),
    };
    let written = write_batch_pg(conn, node, batch, &per_user, now, tell).await;
    if written.is_err() {
        // The transaction may still be open: end it before the connection goes back to
        // the pool (which drops it if it is closed).
        let mut conn = conn;
        if let Err(e) = diesel_async::SimpleAsyncConnection::batch_execute(&mut conn, "ROLLBACK").await {
            tracing::warn!(error = %e, "could not roll back a failed batch");
        }
    }
    drop(announce);
    written
}

/// Whom a PostgreSQL batch tells of itself.
enum Tell<'a> {
    /// No other node listens (see [`crate::cluster::membership`]).
    Nobody,
    /// Every node, with the frames of users that have a tab on another one.
    Nodes(Option<&'a crate::cluster::presence::RemoteTabs>),
}

/// The statements of [`store_batch_pg`], pipelined: `BEGIN` goes out with the counters'
/// bump, and the inserts with the `NOTIFY`s, so a batch costs three round trips (six when
/// each waited for the one before: every one a wake-up for PostgreSQL and for the hub).
/// `COMMIT` waits for the inserts: one that still had to be prepared on this connection
/// would otherwise run after it.
async fn write_batch_pg(
    conn: &diesel_async::AsyncPgConnection,
    node: &str,
    batch: Vec<StoreItem>,
    per_user: &[(Uuid, i64)],
    now: NaiveDateTime,
    tell: Tell<'_>,
) -> Result<Vec<StoredNotification>, StoreError> {
    use super::pg_batch;
    use diesel_async::SimpleAsyncConnection;
    let ((), starts) = futures_util::try_join!(
        async { (&mut &*conn).batch_execute("BEGIN").await.map_err(StoreError::from) },
        pg_batch::bump_counters(conn, per_user, now),
    )?;
    let numbered = number_batch(batch, starts, now)?;
    // NOTIFY is transactional: the other nodes hear of the batch at commit.
    let (payloads, frames) = match tell {
        Tell::Nodes(remote_tabs) => numbered.committed_payloads(node, remote_tabs),
        Tell::Nobody => (Vec::new(), vec![None; numbered.notifications.len()]),
    };
    futures_util::try_join!(
        pg_batch::insert_notifications(conn, &numbered.notifications),
        pg_batch::insert_deliveries(conn, &numbered.deliveries),
        pg_batch::notify_all(conn, &payloads),
    )?;
    (&mut &*conn).batch_execute("COMMIT").await?;
    let mut stored = numbered.into_stored();
    for (s, frame) in stored.iter_mut().zip(frames) {
        s.toast_frame = frame;
    }
    Ok(stored)
}

/// A batch ready for either backend: its times cut to microseconds (see [`to_micros`]),
/// how many notifications each user gets, and the time its rows are written.
struct Prepared {
    batch: Vec<StoreItem>,
    per_user: Vec<(Uuid, i64)>,
    now: NaiveDateTime,
}

impl Prepared {
    /// `None` for an empty batch.
    fn new(batch: Vec<StoreItem>) -> Option<Prepared> {
        if batch.is_empty() {
            return None;
        }
        let mut batch = batch;
        // The rows of one event share their content: a time to cut is cut once for all of
        // them (the dispatcher's times come cut already).
        let mut last_cut: Option<(Arc<NotificationContent>, Arc<NotificationContent>)> = None;
        for item in &mut batch {
            let content = &item.notification.content;
            if to_micros(content.created_at) == content.created_at {
                continue;
            }
            let cut = match &last_cut {
                Some((original, cut)) if Arc::ptr_eq(original, content) => cut.clone(),
                _ => {
                    let cut = Arc::new(NotificationContent {
                        created_at: to_micros(content.created_at),
                        ..(**content).clone()
                    });
                    last_cut = Some((content.clone(), cut.clone()));
                    cut
                }
            };
            item.notification.content = cut;
        }
        let per_user = count_per_user(&batch);
        Some(Prepared { batch, per_user, now: Utc::now().naive_utc() })
    }
}

/// The user's last sequence number and unread count as stored, `None` for a user never
/// seen: their row's checkpoint and their highest stored sequence number, read in one
/// statement (see [`super::sqlite_counters`] for how they combine).
macro_rules! stored_counters {
    ($conn:expr, $uid:expr) => {
        users::table
            .find($uid)
            .select((
                users::last_sequence_number,
                users::unread_count,
                notifications::table
                    .filter(notifications::user_id.eq(users::id))
                    .select(diesel::dsl::max(notifications::sequence_number))
                    .single_value(),
            ))
            .first::<(i64, i64, Option<i64>)>($conn)
            .await
            .optional()
            .map(|row| row.map(|(c, u, highest)| super::sqlite_counters::effective(c, u, highest)))
    };
}

/// Moves the user's checkpoint (their row's counters) to their last sequence number with
/// nothing unread, and forgets them from SQLite's writer; first of the transactions that
/// mark all read or erase, so that it holds the user's row (PostgreSQL) or the database
/// (SQLite) until they end. Numbers are then never reused, even once the notifications
/// that held them are gone.
macro_rules! settle_counters {
    ($db:expr, $conn:expr, $uid:expr, $user:expr) => {{
        diesel::update(users::table.find($uid)).set(users::unread_count.eq(0)).execute($conn).await?;
        if let Some(counters) = $db.sqlite_counters() {
            counters.forget($user);
        }
        let highest: Option<i64> = notifications::table
            .filter(notifications::user_id.eq($uid))
            .select(diesel::dsl::max(notifications::sequence_number))
            .first($conn)
            .await?;
        if let Some(highest) = highest {
            diesel::update(users::table.find($uid).filter(users::last_sequence_number.lt(highest)))
                .set(users::last_sequence_number.eq(highest))
                .execute($conn)
                .await?;
        }
    }};
}

/// Filters of the inbox list.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only unread ones.
    pub unread_only: bool,
    /// Only this type.
    pub notification_type: Option<String>,
    /// Page size.
    pub limit: i64,
    /// Rows to skip.
    pub offset: i64,
}

/// A page of a user's inbox, newest first, and the total matching the filters.
///
/// Every page walks the `(user_id, sequence_number)` index from the newest end. The
/// unread total comes from the user's row, which every change of `read` keeps in step in
/// its own transaction: counting would walk the user's whole history (there is no index
/// by `read`, see the migration `inbox_without_user_read_index`), and an inbox with
/// nothing unread is answered without touching the notifications at all.
pub async fn list_notifications(db: &Db, user: Uuid, q: &ListQuery) -> Result<(Vec<Notification>, i64), StoreError> {
    let uid = user.to_string();
    with_conn!(db, conn => {
        let unread_total = if q.unread_only && q.notification_type.is_none() {
            Some(stored_counters!(conn, &uid)?.map_or(0, |(_, unread)| unread))
        } else {
            None
        };
        if unread_total == Some(0) {
            return Ok((Vec::new(), 0));
        }
        let mut page = notifications::table
            .filter(notifications::user_id.eq(&uid))
            .select(NotificationRow::as_select())
            .order(notifications::sequence_number.desc())
            .limit(q.limit)
            .offset(q.offset)
            .into_boxed();
        let mut count = notifications::table.filter(notifications::user_id.eq(&uid)).into_boxed();
        if q.unread_only {
            page = page.filter(notifications::read.eq(false));
            count = count.filter(notifications::read.eq(false));
        }
        if let Some(t) = &q.notification_type {
            page = page.filter(notifications::notification_type.eq(t.clone()));
            count = count.filter(notifications::notification_type.eq(t.clone()));
        }
        let rows: Vec<NotificationRow> = page.load(conn).await?;
        let total: i64 = match unread_total {
            Some(n) => n,
            None => count.count().get_result(conn).await?,
        };
        let items = rows.into_iter().map(NotificationRow::into_domain).collect::<Result<Vec<_>, _>>()?;
        Ok((items, total))
    })
}

/// Notifications with a sequence number above `after`, oldest first (replay), each
/// with whether its live toast went out.
pub async fn notifications_after(
    db: &Db,
    user: Uuid,
    after: i64,
    limit: i64,
) -> Result<Vec<(Notification, bool)>, StoreError> {
    let uid = user.to_string();
    with_conn!(db, conn => {
        let rows: Vec<NotificationRow> = notifications::table
            .filter(notifications::user_id.eq(&uid))
            .filter(notifications::sequence_number.gt(after))
            .order(notifications::sequence_number.asc())
            .limit(limit)
            .select(NotificationRow::as_select())
            .load(conn)
            .await?;
        rows.into_iter().map(|r| { let toast = r.toast; r.into_domain().map(|n| (n, toast)) }).collect()
    })
}

/// The user's last assigned sequence number and unread count ((0, 0) for a user
/// never seen).
pub async fn user_counters(db: &Db, user: Uuid) -> Result<(i64, i64), StoreError> {
    let uid = user.to_string();
    with_conn!(db, conn => {
        Ok(stored_counters!(conn, &uid)?.unwrap_or((0, 0)))
    })
}

/// Marks one of the user's notifications read. `None` when it is not theirs (or
/// absent); otherwise the user's unread count afterwards.
pub async fn mark_read(db: &Db, user: Uuid, id: Uuid) -> Result<Option<i64>, StoreError> {
    let (uid, nid) = (user.to_string(), id.to_string());
    with_conn!(db, conn => {
        conn.transaction::<_, StoreError, _>(async |conn| {
            let changed = diesel::update(
                notifications::table
                    .filter(notifications::id.eq(&nid))
                    .filter(notifications::user_id.eq(&uid))
                    .filter(notifications::read.eq(false)),
            )
            .set(notifications::read.eq(true))
            .execute(conn)
            .await?;
            if changed == 0 {
                let exists: i64 = notifications::table
                    .filter(notifications::id.eq(&nid))
                    .filter(notifications::user_id.eq(&uid))
                    .count()
                    .get_result(conn)
                    .await?;
                if exists == 0 {
                    return Ok(None);
                }
                return Ok(Some(stored_counters!(conn, &uid)?.map_or(0, |(_, unread)| unread)));
            }
            diesel::update(users::table.find(&uid))
                .set(users::unread_count.eq(users::unread_count - 1))
                .execute(conn)
                .await?;
            if let Some(counters) = db.sqlite_counters() {
                counters.forget(&user);
            }
            Ok(Some(stored_counters!(conn, &uid)?.map_or(0, |(_, unread)| unread)))
        })
        .await
    })
}

/// Marks all the user's unread notifications read; returns how many. The user's row
/// (PostgreSQL) or the database (SQLite) is locked first, so a batch being stored for
/// them lands either wholly before (and is marked read) or wholly after (and stays
/// unread, counted).
pub async fn mark_all_read(db: &Db, user: Uuid) -> Result<usize, StoreError> {
    let uid = user.to_string();
    with_conn!(db, conn => {
        conn.transaction::<_, StoreError, _>(async |conn| {
            settle_counters!(db, conn, &uid, &user);
            let n = diesel::update(
                notifications::table.filter(notifications::user_id.eq(&uid)).filter(notifications::read.eq(false)),
            )
            .set(notifications::read.eq(true))
            .execute(conn)
            .await?;
            Ok(n)
        })
        .await
    })
}

/// Erases the user's notification history (deliveries go with it). Sequence numbers
/// are not reused: the user's row keeps the last one.
pub async fn delete_notifications(db: &Db, user: Uuid) -> Result<usize, StoreError> {
    let uid = user.to_string();
    with_conn!(db, conn => {
        conn.transaction::<_, StoreError, _>(async |conn| {
            settle_counters!(db, conn, &uid, &user);
            let n = diesel::delete(notifications::table.filter(notifications::user_id.eq(&uid)))
                .execute(conn)
                .await?;
            Ok(n)
        })
        .await
    })
}

/// The stored preferences document, if the user ever saved one.
pub async fn load_preferences(db: &Db, user: Uuid) -> Result<Option<serde_json::Value>, StoreError> {
    Ok(load_preferences_versioned(db, user).await?.map(|(doc, _)| doc))
}

/// The stored preferences document with its version (the `updated_at` column), if the
/// user ever saved one.
pub async fn load_preferences_versioned(
    db: &Db,
    user: Uuid,
) -> Result<Option<(serde_json::Value, NaiveDateTime)>, StoreError> {
    let uid = user.to_string();
    with_conn!(db, conn => {
        let row: Option<(Json, NaiveDateTime)> = notification_preferences::table
            .find(&uid)
            .select((notification_preferences::preferences, notification_preferences::updated_at))
            .first(conn)
            .await
            .optional()?;
        Ok(row.map(|(d, at)| (d.0, at)))
    })
}

/// Saves the preferences document only if it is still the version that was read
/// (`None`: there was none); returns whether it was saved. Two updates made at once
/// (two tabs, a user and an admin) then never undo each other: the loser reapplies
/// its change to what the winner saved.
pub async fn save_preferences_if(
    db: &Db,
    user: Uuid,
    doc: serde_json::Value,
    at: DateTime<Utc>,
    read: Option<NaiveDateTime>,
) -> Result<bool, StoreError> {
    let uid = user.to_string();
    let now = at.naive_utc();
    let written = with_conn!(db, conn => {
        match read {
            None => diesel::insert_into(notification_preferences::table)
                .values((
                    notification_preferences::user_id.eq(&uid),
                    notification_preferences::preferences.eq(Json(doc.clone())),
                    notification_preferences::updated_at.eq(now),
                ))
                .on_conflict_do_nothing()
                .execute(conn)
                .await?,
            Some(version) => diesel::update(
                notification_preferences::table
                    .filter(notification_preferences::user_id.eq(&uid))
                    .filter(notification_preferences::updated_at.eq(version)),
            )
            .set((
                notification_preferences::preferences.eq(Json(doc.clone())),
                notification_preferences::updated_at.eq(now),
            ))
            .execute(conn)
            .await?,
        }
    });
    Ok(written == 1)
}

/// Deletes the preferences document (the defaults apply again).
pub async fn delete_preferences(db: &Db, user: Uuid) -> Result<usize, StoreError> {
    let uid = user.to_string();
    with_conn!(db, conn => {
        let n = diesel::delete(notification_preferences::table.find(&uid)).execute(conn).await?;
        Ok(n)
    })
}
