//! Sequence numbers under concurrent writers, group commit, and data surviving a restart.

use crate::helpers::{new_notification, spawn_with_env, TestApp};
use notifyhub::actors::persistence::StoreHandle;
use notifyhub::auth::Role;
use notifyhub::config::{Settings, Source};
use notifyhub::domain::metadata::Metadata;
use notifyhub::domain::{NewNotification, NotificationType};
use notifyhub::store::repository::StoreItem;
use serde_json::json;
use std::collections::BTreeSet;
use uuid::Uuid;

/// A second, independent writer on the same database (as a second node would be).
async fn second_writer(app: &TestApp) -> StoreHandle {
    let settings = Settings::load(&Source::new(app.env.clone()).unwrap()).unwrap();
    StoreHandle::start(settings.database_url, 4, Default::default()).await.unwrap()
}

crate::on_both_backends! {
    async fn sequence_numbers_have_no_gaps_or_duplicates_under_concurrent_writers(app) {
        let user = Uuid::new_v4();
        let other_node = second_writer(&app).await;
        let mut tasks = Vec::new();
        for w in 0..16 {
            let store = if w % 2 == 0 { app.state.store.clone() } else { other_node.clone() };
            tasks.push(actix_web::rt::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..10 {
                    // Mix single events and small bursts, to and from several users.
                    let mut batch = vec![new_notification(user, NotificationType::SignalGenerated, &format!("w{w}-{i}"))];
                    if i % 3 == 0 {
                        batch.push(new_notification(user, NotificationType::RiskWarning, &format!("w{w}-{i}b")));
                        batch.push(new_notification(Uuid::new_v4(), NotificationType::RiskWarning, "someone else"));
                    }
                    let pending = batch.into_iter().map(|notification| StoreItem { notification, deliveries: Vec::new(), toast: true }).collect();
                    let stored = store.store_notifications(pending).await.expect("store");
                    seqs.extend(stored.iter().filter(|s| s.user_id == user).map(|s| s.sequence_number));
                }
                seqs
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let expected = 16 * (10 + 4);
        assert_eq!(all.len(), expected);
        let distinct: BTreeSet<i64> = all.iter().copied().collect();
        assert_eq!(distinct.len(), expected, "duplicates");
        assert_eq!(distinct.iter().copied().collect::<Vec<_>>(), (1..=expected as i64).collect::<Vec<_>>(), "gaps");

        // What the API lists agrees with what the writers were told.
        let res = app.get("/api/v1/notifications?limit=1", &app.token(user, Role::User)).await;
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["pagination"]["total_count"], expected);
        assert_eq!(body["data"][0]["sequence_number"], expected);
    }

    async fn a_batch_keeps_arrival_order_per_user(app) {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let batch = vec![
            new_notification(a, NotificationType::SignalGenerated, "a1"),
            new_notification(b, NotificationType::SignalGenerated, "b1"),
            new_notification(a, NotificationType::SignalGenerated, "a2"),
            new_notification(a, NotificationType::SignalGenerated, "a3"),
            new_notification(b, NotificationType::SignalGenerated, "b2"),
        ];
        let stored = app.store(batch).await;
        let got: Vec<(String, i64)> = stored.iter().map(|n| (n.title.clone(), n.sequence_number)).collect();
        assert_eq!(got, vec![("a1".into(), 1), ("b1".into(), 1), ("a2".into(), 2), ("a3".into(), 3), ("b2".into(), 2)]);
    }

    async fn a_batch_mixes_known_and_new_recipients(app) {
        // Counters are bumped per group of recipients, not per recipient: known users
        // go on from their numbers, new ones start at 1, whatever the mix.
        let (known, new) = (Uuid::new_v4(), Uuid::new_v4());
        app.store(vec![
            new_notification(known, NotificationType::SignalGenerated, "k1"),
            new_notification(known, NotificationType::SignalGenerated, "k2"),
        ]).await;
        let batch = vec![
            new_notification(new, NotificationType::SignalGenerated, "n1"),
            new_notification(known, NotificationType::SignalGenerated, "k3"),
            new_notification(new, NotificationType::SignalGenerated, "n2"),
            new_notification(known, NotificationType::SignalGenerated, "k4"),
            new_notification(Uuid::new_v4(), NotificationType::SignalGenerated, "x1"),
        ];
        let pending = batch.into_iter().map(|notification| StoreItem { notification, deliveries: Vec::new(), toast: true }).collect();
        let stored = app.state.store.store_notifications(pending).await.expect("store");
        let got: Vec<(&str, i64, i64)> =
            stored.iter().map(|s| (s.content.title.as_str(), s.sequence_number, s.unread_count)).collect();
        // (title, sequence number, unread count after it)
        assert_eq!(got, vec![("n1", 1, 1), ("k3", 3, 3), ("n2", 2, 2), ("k4", 4, 4), ("x1", 1, 1)]);
    }

    async fn a_broadcast_to_many_known_and_new_recipients_numbers_each_from_its_own_count(app) {
        // Hundreds of recipients, some with a history of different lengths: each goes on
        // from its own numbers (the counters are bumped by statements of a few fixed
        // sizes, the ids list padded to the next one).
        let users: Vec<Uuid> = (0..300).map(|_| Uuid::new_v4()).collect();
        for (i, user) in users.iter().enumerate().filter(|(i, _)| i % 3 == 0) {
            let history = (0..=(i % 4)).map(|k| new_notification(*user, NotificationType::SignalGenerated, &format!("h{k}")));
            app.store(history.collect()).await;
        }
        let batch = users
            .iter()
            .map(|u| StoreItem { notification: new_notification(*u, NotificationType::EmergencyExit, "all"), deliveries: Vec::new(), toast: true })
            .collect();
        let stored = app.state.store.store_notifications(batch).await.expect("store");
        assert_eq!(stored.len(), users.len());
        for (i, (user, s)) in users.iter().zip(&stored).enumerate() {
            let before = if i % 3 == 0 { (i % 4) as i64 + 1 } else { 0 };
            assert_eq!(s.user_id, *user);
            assert_eq!((s.sequence_number, s.unread_count), (before + 1, before + 1), "recipient {i}");
        }
    }

    async fn each_row_of_a_batch_keeps_its_own_metadata(app) {
        // Rows with equal metadata share one serialisation on SQLite; a row whose
        // metadata differs from the one before must not inherit it.
        let user = Uuid::new_v4();
        let metadata = [("a", json!({"k": 1})), ("b", json!({"k": 1})), ("c", json!({"k": 2, "s": "é\n"})), ("d", json!({"k": 1}))];
        let batch = metadata
            .iter()
            .map(|(title, m)| {
                let mut notification = new_notification(user, NotificationType::SignalGenerated, title);
                std::sync::Arc::make_mut(&mut notification.content).metadata = Metadata::from_value(m);
                StoreItem { notification, deliveries: Vec::new(), toast: true }
            })
            .collect();
        app.state.store.store_notifications(batch).await.expect("store");
        let res = app.get("/api/v1/notifications?limit=10", &app.token(user, Role::User)).await;
        let page: serde_json::Value = res.json().await.unwrap();
        let stored: Vec<(String, serde_json::Value)> = page["data"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .map(|n| (n["title"].as_str().unwrap().to_string(), n["metadata"].clone()))
            .collect();
        let expected: Vec<(String, serde_json::Value)> = metadata.iter().map(|(t, m)| (t.to_string(), m.clone())).collect();
        assert_eq!(stored, expected);
    }

    async fn every_row_of_a_batch_lands_whole_whatever_statement_shape_takes_it(app) {
        // 87 rows go to SQLite as statements of 64, 16, 4, 1, 1 and 1 rows: each row must
        // keep its own owner, number, title and metadata, in order.
        let users: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
        let batch = (0..87)
            .map(|i| {
                let mut notification = new_notification(users[i % 3], NotificationType::SignalGenerated, &format!("row {i}"));
                std::sync::Arc::make_mut(&mut notification.content).metadata = Metadata::from_value(&json!({"row": i, "shared": i / 10}));
                StoreItem { notification, deliveries: Vec::new(), toast: i % 5 != 0 }
            })
            .collect();
        app.state.store.store_notifications(batch).await.expect("store");
        for (u, user) in users.iter().enumerate() {
            let res = app.get("/api/v1/notifications?limit=50", &app.token(*user, Role::User)).await;
            let page: serde_json::Value = res.json().await.unwrap();
            let stored: Vec<(i64, String, serde_json::Value)> = page["data"]
                .as_array()
                .unwrap()
                .iter()
                .rev()
                .map(|n| {
                    assert_eq!(n["read"], false, "{n}");
                    (n["sequence_number"].as_i64().unwrap(), n["title"].as_str().unwrap().to_string(), n["metadata"].clone())
                })
                .collect();
            let expected: Vec<(i64, String, serde_json::Value)> = (0..87)
                .filter(|i| i % 3 == u)
                .enumerate()
                .map(|(k, i)| (k as i64 + 1, format!("row {i}"), json!({"row": i, "shared": i / 10})))
                .collect();
            assert_eq!(stored, expected, "user {u}");
        }
    }

    async fn runs_of_an_events_rows_land_whole_beside_rows_of_their_own(app) {
        // On SQLite a run of 4 or more rows sharing their content binds it once per
        // statement (64 + 16 + 4 rows, then row by row for the tail), and the rows around
        // such runs go in statements of whole rows: every column of every row must be its
        // own, whichever statement took it.
        let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&chrono::Utc);
        let shared = |title: &str, time: &str| {
            let mut n = new_notification(Uuid::nil(), NotificationType::EmergencyExit, title);
            let c = std::sync::Arc::make_mut(&mut n.content);
            c.metadata = Metadata::from_value(&json!({"run": title, "quote": "\"é\""}));
            c.created_at = at(time);
            n.content
        };
        let (x, y, z) = (shared("x", "2026-12-07T10:00:01.000001Z"), shared("y", "2026-12-07T10:00:02Z"), shared("z", "2026-12-07T10:00:03Z"));
        let alone = Uuid::new_v4();
        let mut batch = Vec::new();
        // (owner, title, toast, time) expected of each row, in the batch's order.
        let mut expected: Vec<(Uuid, String, bool, String)> = Vec::new();
        let mut push = |batch: &mut Vec<StoreItem>, notification: NewNotification, toast: bool| {
            let c = &notification.content;
            expected.push((notification.user_id, c.title.clone(), toast, crate::helpers::rfc3339_micros(c.created_at)));
            batch.push(StoreItem { notification, deliveries: Vec::new(), toast });
        };
        push(&mut batch, new_notification(alone, NotificationType::SignalGenerated, "before"), true);
        for i in 0..87 {
            push(&mut batch, NewNotification { id: Uuid::now_v7(), user_id: Uuid::new_v4(), content: x.clone() }, i % 5 != 0);
        }
        push(&mut batch, new_notification(alone, NotificationType::SignalGenerated, "between"), false);
        for _ in 0..5 {
            push(&mut batch, NewNotification { id: Uuid::now_v7(), user_id: Uuid::new_v4(), content: y.clone() }, true);
        }
        for _ in 0..2 {
            push(&mut batch, NewNotification { id: Uuid::now_v7(), user_id: Uuid::new_v4(), content: z.clone() }, true);
        }
        push(&mut batch, new_notification(alone, NotificationType::SignalGenerated, "after"), true);
        let ids: Vec<String> = batch.iter().map(|b| b.notification.id.to_string()).collect();
        let stored = app.state.store.store_notifications(batch).await.expect("store");
        assert_eq!(stored.len(), expected.len());
        let rows = crate::helpers::notification_rows(&app, ids.clone()).await;
        for (k, (id, (owner, title, toast, time))) in ids.iter().zip(&expected).enumerate() {
            let row = &rows[id];
            let seq = if *owner == alone { [0, 88, 96].iter().position(|&p| p == k).unwrap() as i64 + 1 } else { 1 };
            assert_eq!(row.user_id, owner.to_string(), "row {k}");
            assert_eq!((row.sequence_number, row.title.as_str(), row.toast, row.read), (seq, title.as_str(), *toast, false), "row {k}");
            assert_eq!(crate::helpers::rfc3339_micros(row.created_at.and_utc()), *time, "row {k}");
            let metadata = if *owner == alone { json!({"source": "test"}) } else { json!({"run": title, "quote": "\"é\""}) };
            assert_eq!(row.metadata, metadata, "row {k}");
            assert_eq!(row.notification_type, if *owner == alone { "signal_generated" } else { "emergency_exit" }, "row {k}");
        }
    }

    async fn requests_made_in_one_turn_share_one_transaction(app) {
        // Ten requests made before the thread yields (as the events one turn of a
        // worker's loop parses) reach the writer together: one transaction, not a first
        // one alone and the rest after it, numbered in the order they were made.
        let user = Uuid::new_v4();
        let before = app.counter("notifyhub_store_batches_total").await;
        let requests = (0..10).map(|i| {
            let item = StoreItem {
                notification: new_notification(user, NotificationType::SignalGenerated, &format!("t{i}")),
                deliveries: Vec::new(),
                toast: true,
            };
            app.state.store.store_notifications(vec![item])
        });
        let stored = futures_util::future::join_all(requests).await;
        let seqs: Vec<i64> = stored.into_iter().map(|s| s.expect("store")[0].sequence_number).collect();
        assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
        assert_eq!(app.counter("notifyhub_store_batches_total").await - before, 1, "ten requests of one turn took more than one transaction");
    }

    async fn broadcasts_queued_together_share_one_transaction(app) {
        // Three broadcasts to the same thousand users, queued in one turn: written in one
        // transaction, each recipient's index page once for the three (a writer taking
        // one broadcast per transaction spent 30 % more CPU per delivery).
        let users: Vec<Uuid> = (0..1000).map(|_| Uuid::new_v4()).collect();
        let before = app.counter("notifyhub_store_batches_total").await;
        let requests = (0..3).map(|b| {
            let items = users
                .iter()
                .map(|&user| StoreItem {
                    notification: new_notification(user, NotificationType::SystemError, &format!("b{b}")),
                    deliveries: Vec::new(),
                    toast: true,
                })
                .collect();
            app.state.store.store_notifications(items)
        });
        let stored = futures_util::future::join_all(requests).await;
        for (b, batch) in stored.into_iter().enumerate() {
            let batch = batch.expect("store");
            assert_eq!(batch.len(), users.len());
            assert!(batch.iter().all(|s| s.sequence_number == b as i64 + 1), "broadcast {b} numbered out of order");
        }
        assert_eq!(app.counter("notifyhub_store_batches_total").await - before, 1, "three broadcasts of one turn took more than one transaction");
    }

    async fn a_failed_batch_takes_back_all_of_itself_and_leaves_its_connection_usable(app) {
        // One connection: the batch after a failed one runs on the very connection the
        // failure happened on.
        let settings = Settings::load(&Source::new(app.env.clone()).unwrap()).unwrap();
        let store = StoreHandle::start(settings.database_url, 1, Default::default()).await.unwrap();
        let user = Uuid::new_v4();
        let item = |notification| StoreItem { notification, deliveries: Vec::new(), toast: true };
        let first = new_notification(user, NotificationType::SignalGenerated, "first");
        store.store_notifications(vec![item(first.clone())]).await.expect("first");

        // A batch whose second row repeats the first notification's id fails whole.
        let failing = vec![item(new_notification(user, NotificationType::SignalGenerated, "lost")), item(first)];
        assert!(store.store_notifications(failing).await.is_err(), "a repeated id was stored");

        let next = store
            .store_notifications(vec![item(new_notification(user, NotificationType::SignalGenerated, "next"))])
            .await
            .expect("the batch after a failed one");
        assert_eq!(next[0].sequence_number, 2, "the failed batch kept a sequence number");
        let res = app.get("/api/v1/notifications", &app.token(user, Role::User)).await;
        let body: serde_json::Value = res.json().await.unwrap();
        let titles: Vec<&str> = body["data"].as_array().unwrap().iter().map(|n| n["title"].as_str().unwrap()).collect();
        assert_eq!(titles, ["next", "first"]);
    }

    async fn counters_hold_through_reads_an_erasure_and_restarts(app) {
        // SQLite's writer numbers from counters it keeps in memory; a user's row holds
        // them as of the last read or erasure. Each step checks the numbers a toast
        // carries, and each restart that the row alone gives them back.
        async fn put(app: &TestApp, user: Uuid, n: usize) -> Vec<(i64, i64)> {
            let items = (0..n)
                .map(|i| StoreItem {
                    notification: new_notification(user, NotificationType::SignalGenerated, &format!("n{i}")),
                    deliveries: Vec::new(),
                    toast: true,
                })
                .collect();
            let stored = app.state.store.store_notifications(items).await.expect("store");
            stored.iter().map(|s| (s.sequence_number, s.unread_count)).collect()
        }
        async fn unread(app: &TestApp, token: &str) -> serde_json::Value {
            let res = app.get("/api/v1/notifications?unread_only=true&limit=100", token).await;
            let body: serde_json::Value = res.json().await.unwrap();
            body["pagination"]["total_count"].clone()
        }
        let user = Uuid::new_v4();
        let token = app.token(user, Role::User);
        assert_eq!(put(&app, user, 3).await, [(1, 1), (2, 2), (3, 3)]);
        let first: serde_json::Value = app.get("/api/v1/notifications?limit=100", &token).await.json().await.unwrap();
        let oldest = first["data"][2]["id"].as_str().unwrap().to_string();
        assert_eq!(app.patch(&format!("/api/v1/notifications/{oldest}/read"), &token).await.status(), 200);
        assert_eq!(put(&app, user, 1).await, [(4, 3)]);
        assert_eq!(unread(&app, &token).await, 3);

        let backend = app.backend;
        let (env, dir) = app.stop().await;
        let app = spawn_with_env(backend, env, dir).await;
        assert_eq!(unread(&app, &token).await, 3);
        assert_eq!(put(&app, user, 1).await, [(5, 4)]);
        assert_eq!(app.post("/api/v1/notifications/read-all", &token, &json!({})).await.status(), 200);
        assert_eq!(unread(&app, &token).await, 0);
        assert_eq!(put(&app, user, 2).await, [(6, 1), (7, 2)]);

        let (env, dir) = app.stop().await;
        let app = spawn_with_env(backend, env, dir).await;
        assert_eq!(unread(&app, &token).await, 2);
        assert_eq!(app.delete("/api/v1/notifications", &token).await.status(), 200);
        let (env, dir) = app.stop().await;
        let app = spawn_with_env(backend, env, dir).await;
        // Erased: nothing unread, and the numbers go on from where they were.
        assert_eq!(unread(&app, &token).await, 0);
        assert_eq!(put(&app, user, 1).await, [(8, 1)]);
    }

    async fn the_unread_count_agrees_with_the_rows_after_reads_race_the_writer(app) {
        // Batches stored while the user marks notifications read, one by one and all at
        // once: each mark takes the user from SQLite's writer, which reads them afresh.
        // Afterwards the count every reader reports is the count of unread rows.
        let user = Uuid::new_v4();
        let token = app.token(user, Role::User);
        // Each writer stores its i-th batch once the reader has finished its i-th round,
        // so batches and marks interleave whatever the timing.
        let (round_done, rounds) = tokio::sync::watch::channel(0usize);
        let mut writers = Vec::new();
        for w in 0..6 {
            let store = app.state.store.clone();
            let mut rounds = rounds.clone();
            writers.push(actix_web::rt::spawn(async move {
                for i in 0..12 {
                    rounds.wait_for(|r| *r >= i).await.expect("the reader is there");
                    let batch = (0..1 + (w + i) % 3)
                        .map(|k| StoreItem {
                            notification: new_notification(user, NotificationType::SignalGenerated, &format!("w{w}-{i}-{k}")),
                            deliveries: Vec::new(),
                            toast: true,
                        })
                        .collect();
                    store.store_notifications(batch).await.expect("store");
                }
            }));
        }
        let mut marked = 0;
        for round in 0..40 {
            let body: serde_json::Value =
                app.get("/api/v1/notifications?unread_only=true&limit=5", &token).await.json().await.unwrap();
            if round % 13 == 12 {
                assert_eq!(app.post("/api/v1/notifications/read-all", &token, &json!({})).await.status(), 200);
            } else {
                for n in body["data"].as_array().unwrap().iter().take(2) {
                    let id = n["id"].as_str().unwrap();
                    assert_eq!(app.patch(&format!("/api/v1/notifications/{id}/read"), &token).await.status(), 200);
                    marked += 1;
                }
            }
            round_done.send_replace(round + 1);
        }
        for w in writers {
            w.await.unwrap();
        }
        assert!(marked > 0, "nothing was marked read while the writers ran");
        let one = |title: &str| StoreItem {
            notification: new_notification(user, NotificationType::SignalGenerated, title),
            deliveries: Vec::new(),
            toast: true,
        };
        // The writer knows the user now; a mark read must make it read them again.
        app.state.store.store_notifications(vec![one("known")]).await.expect("store");
        let body: serde_json::Value =
            app.get("/api/v1/notifications?unread_only=true&limit=1", &token).await.json().await.unwrap();
        let id = body["data"][0]["id"].as_str().unwrap();
        assert_eq!(app.patch(&format!("/api/v1/notifications/{id}/read"), &token).await.status(), 200);

        let mut unread_rows = 0;
        let mut total = 0;
        for offset in (0..400).step_by(100) {
            let body: serde_json::Value =
                app.get(&format!("/api/v1/notifications?limit=100&offset={offset}"), &token).await.json().await.unwrap();
            for n in body["data"].as_array().unwrap() {
                total += 1;
                if n["read"] == false {
                    unread_rows += 1;
                }
            }
        }
        let stored: usize = (0..6).map(|w| (0..12).map(|i| 1 + (w + i) % 3).sum::<usize>()).sum();
        assert_eq!(total, stored + 1);
        let body: serde_json::Value =
            app.get("/api/v1/notifications?unread_only=true&limit=1", &token).await.json().await.unwrap();
        assert_eq!(body["pagination"]["total_count"], unread_rows, "the reported count drifted from the rows");
        // And the next toast counts on from there.
        let next = app.state.store.store_notifications(vec![one("after")]).await.expect("store");
        assert_eq!((next[0].sequence_number, next[0].unread_count), (total as i64 + 1, unread_rows as i64 + 1));
    }

    async fn data_survives_a_restart(app) {
        let user = Uuid::new_v4();
        let token = app.token(user, Role::User);
        app.store(vec![
            new_notification(user, NotificationType::EmergencyExit, "before-1"),
            new_notification(user, NotificationType::EmergencyExit, "before-2"),
        ]).await;
        app.post("/api/v1/notifications/preferences", &token, &serde_json::json!({"email_address": "keep@example.com"})).await;
        let backend = app.backend;
        let (env, dir) = app.stop().await;

        let again = spawn_with_env(backend, env, dir).await;
        let res = again.get("/api/v1/notifications", &token).await;
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["pagination"]["total_count"], 2);
        assert_eq!(body["data"][0]["title"], "before-2");
        let p: serde_json::Value = again.get("/api/v1/notifications/preferences", &token).await.json().await.unwrap();
        assert_eq!(p["email_address"], "keep@example.com");
        let next = again.store(vec![new_notification(user, NotificationType::EmergencyExit, "after")]).await;
        assert_eq!(next[0].sequence_number, 3);
    }
}

/// SQLite's seventh migration copies `notifications` without its key to `users`, and
/// `deliveries`, which refers to it, unchanged: every row survives, the outbox's key to
/// its notification still cascades, and the owner's key is gone.
#[test]
fn sqlite_migration_seven_keeps_every_row_and_the_outbox_key() {
    use diesel::connection::SimpleConnection;
    use diesel::migration::MigrationSource;
    use diesel::prelude::*;
    use diesel::sql_types::{BigInt, Text};
    use diesel_migrations::MigrationHarness;

    let dir = tempfile::tempdir().unwrap();
    let mut conn = SqliteConnection::establish(dir.path().join("old.db").to_str().unwrap()).unwrap();
    conn.batch_execute("PRAGMA foreign_keys = ON").unwrap();
    let mut migrations =
        MigrationSource::<diesel::sqlite::Sqlite>::migrations(&notifyhub::store::SQLITE_MIGRATIONS).unwrap();
    migrations.sort_by_key(|m| m.name().version().to_string());
    let seventh = migrations.iter().position(|m| m.name().to_string().contains("000007")).expect("a seventh migration");
    conn.applied_migrations().unwrap(); // creates the table of applied versions
    for m in &migrations[..seventh] {
        conn.run_migration(m.as_ref()).unwrap();
    }
    conn.batch_execute(
        "INSERT INTO users (id, created_at, updated_at, last_sequence_number, unread_count)
             VALUES ('u1', '2026-12-01 10:00:00', '2026-12-01 10:00:00', 2, 1);
         INSERT INTO notifications (id, user_id, sequence_number, notification_type, priority, title, message, metadata, read, toast, created_at)
             VALUES ('n1', 'u1', 1, 'risk_warning', 'warning', 'first', 'm1', '{\"a\":1}', 1, 0, '2026-12-01 10:00:01'),
                    ('n2', 'u1', 2, 'system_error', 'critical', 'second', 'm2', '{}', 0, 1, '2026-12-01 10:00:02');
         INSERT INTO deliveries (id, notification_id, user_id, channel, status, attempts, created_at, updated_at)
             VALUES ('d1', 'n1', 'u1', 'email', 'sent', 1, '2026-12-01 10:00:01', '2026-12-01 10:00:03'),
                    ('d2', 'n2', 'u1', 'sms', 'pending', 0, '2026-12-01 10:00:02', '2026-12-01 10:00:02');",
    )
    .unwrap();
    let rows = |conn: &mut SqliteConnection, sql: &str| -> String {
        diesel::select(diesel::dsl::sql::<Text>(sql)).get_result(conn).unwrap()
    };
    let notifications = "(SELECT group_concat(id || user_id || sequence_number || notification_type || priority || title || message || metadata || read || toast || created_at, ';') FROM (SELECT * FROM notifications ORDER BY sequence_number))";
    let deliveries = "(SELECT group_concat(id || notification_id || user_id || channel || status || attempts || created_at || updated_at, ';') FROM (SELECT * FROM deliveries ORDER BY id))";
    let (before_n, before_d) = (rows(&mut conn, notifications), rows(&mut conn, deliveries));

    conn.run_migration(migrations[seventh].as_ref()).unwrap();

    assert_eq!(rows(&mut conn, notifications), before_n);
    assert_eq!(rows(&mut conn, deliveries), before_d);
    let count = |conn: &mut SqliteConnection, sql: &str| -> i64 {
        diesel::select(diesel::dsl::sql::<BigInt>(sql)).get_result(conn).unwrap()
    };
    assert_eq!(
        count(&mut conn, "(SELECT count(*) FROM pragma_foreign_key_list('notifications'))"),
        0,
        "the owner's key is still there"
    );
    assert_eq!(count(&mut conn, "(SELECT count(*) FROM pragma_foreign_key_list('deliveries') WHERE \"table\" = 'notifications' AND on_delete = 'CASCADE')"), 1);
    assert_eq!(count(&mut conn, "(SELECT count(*) FROM sqlite_master WHERE name IN ('idx_deliveries_due', 'idx_deliveries_notification', 'deliveries_kept', 'notifications_rebuilt'))"), 2);
    conn.batch_execute("DELETE FROM notifications WHERE id = 'n1'").unwrap();
    assert_eq!(
        rows(&mut conn, "(SELECT group_concat(id) FROM deliveries)"),
        "d2",
        "erasing a notification no longer erases its outbox rows"
    );
    // And the sequence numbers stay unique per user.
    let duplicate = conn.batch_execute(
        "INSERT INTO notifications (id, user_id, sequence_number, notification_type, priority, title, message, metadata, created_at)
             VALUES ('n3', 'u1', 2, 'risk_warning', 'warning', 't', 'm', '{}', '2026-12-01 10:00:04')",
    );
    assert!(duplicate.is_err());
}

/// The rows of one event share their content. Stored with a time finer than the
/// store's microseconds, every row, its toast and the REST API agree on the cut time.
#[actix_web::test]
async fn an_events_rows_sharing_a_time_finer_than_microseconds_all_keep_the_cut_time() {
    let app = crate::helpers::spawn_app(crate::helpers::Backend::Sqlite).await.unwrap();
    let users: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let mut first = new_notification(users[0], NotificationType::SystemError, "fine time");
    let fine =
        chrono::DateTime::parse_from_rfc3339("2026-12-07T10:00:00.123456789Z").unwrap().with_timezone(&chrono::Utc);
    std::sync::Arc::make_mut(&mut first.content).created_at = fine;
    let content = first.content.clone();
    let mut batch = vec![StoreItem { notification: first, deliveries: Vec::new(), toast: true }];
    for user in &users[1..] {
        let notification = NewNotification { id: Uuid::new_v4(), user_id: *user, content: content.clone() };
        batch.push(StoreItem { notification, deliveries: Vec::new(), toast: true });
    }
    let stored = app.state.store.store_notifications(batch).await.expect("store");
    let cut = chrono::DateTime::parse_from_rfc3339("2026-12-07T10:00:00.123456Z").unwrap().with_timezone(&chrono::Utc);
    assert!(stored.iter().all(|s| s.content.created_at == cut), "every row's time is cut");
    assert!(std::sync::Arc::ptr_eq(&stored[1].content, &stored[2].content), "cut once for all the rows");
    for user in &users {
        let res = app.get("/api/v1/notifications?limit=5", &app.token(*user, Role::User)).await;
        let page: serde_json::Value = res.json().await.unwrap();
        assert_eq!(page["data"][0]["created_at"], "2026-12-07T10:00:00.123456Z", "{page}");
    }
}
