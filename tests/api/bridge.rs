//! The HTTP bridge: rules, answers, fan-out, throttles (moved by an injected clock),
//! idempotent retries and every refusal.

use crate::helpers::{assert_error, spawn_app_with, Backend, TestApp, SERVICE_TOKEN};
use notifyhub::auth::Role;
use notifyhub::clock::ManualClock;
use serde_json::{json, Value};
use std::sync::Arc;
use uuid::Uuid;

pub fn signal_event(user: Uuid, confidence: f64) -> Value {
    json!({"type": "signal_generated", "user_id": user, "signal": {
        "signal_id": Uuid::new_v4(), "symbol": "AAPL", "pattern_type": "SPRING", "confidence": confidence,
        "entry_price": "152.35", "stop_loss": "148.10", "r_multiple": 3.2}})
}

pub fn risk_event(user: Uuid, risk_type: &str, current: f64) -> Value {
    json!({"type": "risk_warning", "user_id": user, "risk": {"risk_type": risk_type, "current": current, "affected_campaigns": ["C-1"]}})
}

pub fn exit_event(user: Uuid) -> Value {
    json!({"type": "emergency_exit", "user_id": user, "exit": {"campaign_id": "C-9", "symbol": "TSLA", "reason": "creek breached", "positions_closed": 2}})
}

pub fn info_event(user: Uuid, title: &str) -> Value {
    json!({"type": "notification", "user_id": user, "notification_type": "signal_generated", "priority": "info",
           "title": title, "message": "m", "metadata": {"k": 1}})
}

async fn inbox_total(app: &TestApp, user: Uuid) -> i64 {
    let body: Value = app.get("/api/v1/notifications", &app.token(user, Role::User)).await.json().await.unwrap();
    body["pagination"]["total_count"].as_i64().unwrap()
}

async fn clocked(backend: Backend) -> Option<(TestApp, Arc<ManualClock>)> {
    let clock = Arc::new(ManualClock::default());
    let app = spawn_app_with(backend, &[], clock.clone()).await?;
    Some((app, clock))
}

crate::on_both_backends! {
    async fn accepted_events_answer_with_numbers_and_channels(app) {
        let user = Uuid::new_v4();
        let first = app.event(signal_event(user, 92.0), 202).await;
        let body = first.clone();
        assert_eq!(body["status"], "accepted");
        assert_eq!(body["accepted_count"], 1);
        let n = &body["notifications"][0];
        assert_eq!(n["user_id"], user.to_string());
        assert_eq!(n["sequence_number"], 1);
        // Defaults: critical → toast+email+sms+push, but no email address, SMS and push off.
        assert_eq!(n["channels"], json!(["toast"]));
        let body = app.event(exit_event(user), 202).await;
        assert_eq!(body["notifications"][0]["sequence_number"], 2);

        let list: Value = app.get("/api/v1/notifications", &app.token(user, Role::User)).await.json().await.unwrap();
        let signal = &list["data"][1];
        assert_eq!(signal["title"], "New Signal: AAPL Spring");
        assert_eq!(signal["priority"], "critical");
        assert_eq!(signal["metadata"]["entry_price"], "152.35");
        assert_eq!(signal["id"], first["notifications"][0]["notification_id"]);
    }

    async fn the_confidence_threshold_filters_signals_only(app) {
        let (strict, relaxed) = (Uuid::new_v4(), Uuid::new_v4());
        app.post("/api/v1/notifications/preferences", &app.token(relaxed, Role::User), &json!({"min_confidence_threshold": 70})).await;
        let body = app.event(signal_event(strict, 84.0), 200).await;
        assert_eq!(body, json!({"status": "filtered", "reason": "below_confidence_threshold", "accepted_count": 0}));
        assert_eq!(app.event(signal_event(strict, 85.0), 202).await["accepted_count"], 1);
        // Each recipient's own threshold applies to a fan-out.
        let body = app.event(json!({"type": "signal_generated", "user_ids": [strict, relaxed], "signal": signal_event(strict, 75.0)["signal"]}), 202).await;
        assert_eq!(body["accepted_count"], 1);
        assert_eq!(body["filtered_count"], 1);
        assert_eq!(body["notifications"][0]["user_id"], relaxed.to_string());
        assert_eq!(body["notifications"][0]["channels"], json!(["toast"]), "75 % is info: toast only");
        // A generic notification keeps its priority and ignores the threshold.
        assert_eq!(app.event(info_event(strict, "generic"), 202).await["accepted_count"], 1);
        assert_eq!(inbox_total(&app, strict).await, 2);
    }

    async fn risk_warnings_below_the_threshold_are_dropped_and_repeats_throttled(app) {
        let user = Uuid::new_v4();
        let body = app.event(risk_event(user, "portfolio_heat", 8.0), 200).await;
        assert_eq!(body["reason"], "below_risk_threshold");
        assert_eq!(app.event(risk_event(user, "portfolio_heat", 8.6), 202).await["accepted_count"], 1);
        let body = app.event(risk_event(user, "portfolio_heat", 9.1), 200).await;
        assert_eq!(body, json!({"status": "throttled", "reason": "risk_warning_throttled", "accepted_count": 0}));
        // Another risk type, or another user, has its own window.
        assert_eq!(app.event(risk_event(user, "campaign_allocation", 4.6), 202).await["accepted_count"], 1);
        assert_eq!(app.event(risk_event(Uuid::new_v4(), "portfolio_heat", 9.0), 202).await["accepted_count"], 1);
        assert_eq!(inbox_total(&app, user).await, 2);
    }

    async fn system_errors_go_to_admins_once_per_window(app) {
        let (admin1, admin2, trader) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        for (u, r) in [(admin1, Role::Admin), (admin2, Role::Admin), (trader, Role::User)] {
            assert_eq!(app.get("/api/v1/notifications", &app.token(u, r)).await.status(), 200);
        }
        let err = json!({"type": "system_error", "error": {"error_type": "polygon_down", "message": "Polygon.io API down", "correlation_id": "abc"}});
        let body = app.event(err.clone(), 202).await;
        assert_eq!(body["accepted_count"], 2);
        let mut got: Vec<String> = body["notifications"].as_array().unwrap().iter().map(|n| n["user_id"].as_str().unwrap().to_string()).collect();
        got.sort();
        let mut want = vec![admin1.to_string(), admin2.to_string()];
        want.sort();
        assert_eq!(got, want);
        assert_eq!(app.event(err, 200).await["reason"], "system_error_throttled");
        let other = json!({"type": "system_error", "error": {"error_type": "pattern_crash", "message": "detector crashed"}});
        assert_eq!(app.event(other, 202).await["accepted_count"], 2);
        assert_eq!(inbox_total(&app, trader).await, 0);
        // The same type shown to a user has a window of its own, and does not hold back
        // the admins' alert (nor the hub's own, such as email_circuit_open).
        let to_trader = json!({"type": "system_error", "user_id": trader, "error": {"error_type": "feed_lag", "message": "your feed lags"}});
        assert_eq!(app.event(to_trader.clone(), 202).await["accepted_count"], 1);
        assert_eq!(app.event(to_trader, 200).await["reason"], "system_error_throttled");
        let to_admins = json!({"type": "system_error", "error": {"error_type": "feed_lag", "message": "feed lags"}});
        assert_eq!(app.event(to_admins, 202).await["accepted_count"], 2);
    }

    async fn generic_notifications_are_throttled_like_typed_events(app) {
        let user = Uuid::new_v4();
        let generic = |t: &str, metadata: Value| json!({"type": "notification", "user_id": user, "notification_type": t,
            "priority": "warning", "title": "Heat", "message": "m", "metadata": metadata});
        app.event(generic("risk_warning", json!({"risk_type": "portfolio_heat"})), 202).await;
        assert_eq!(app.event(risk_event(user, "portfolio_heat", 9.0), 200).await["reason"], "risk_warning_throttled");
        assert_eq!(app.event(generic("risk_warning", json!({"risk_type": "portfolio_heat"})), 200).await["reason"], "risk_warning_throttled");
        app.event(generic("risk_warning", json!({"risk_type": "campaign_allocation"})), 202).await;
        let error = generic("system_error", json!({"error_type": "feed_down"}));
        app.event(error.clone(), 202).await;
        assert_eq!(app.event(error, 200).await["reason"], "system_error_throttled");
        assert_eq!(inbox_total(&app, user).await, 3);
    }

    async fn fan_out_to_listed_users_and_to_everyone(app) {
        let users: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
        for u in &users {
            app.get("/api/v1/notifications", &app.token(*u, Role::User)).await;
        }
        let body = app.event(json!({"type": "emergency_exit", "user_ids": users, "exit": exit_event(users[0])["exit"]}), 202).await;
        assert_eq!(body["accepted_count"], 3);
        let body = app.event(json!({"type": "emergency_exit", "audience": "all", "exit": exit_event(users[0])["exit"]}), 202).await;
        assert!(body["accepted_count"].as_i64().unwrap() >= 3);
        for u in &users {
            assert_eq!(inbox_total(&app, *u).await, 2);
        }
    }

    async fn idempotent_retries_return_the_first_answer_and_store_once(app) {
        let user = Uuid::new_v4();
        // A retry sends the same event again (signal_event draws a new signal_id each time).
        let event = signal_event(user, 91.0);
        let send = |key: &'static str| {
            let (app, event) = (&app, &event);
            async move {
                app.client.post(format!("{}/api/v1/events", app.address)).bearer_auth(SERVICE_TOKEN)
                    .header("Idempotency-Key", key).json(event).send().await.unwrap()
            }
        };
        let first = send("evt-123").await;
        assert_eq!(first.status(), 202);
        let first: Value = first.json().await.unwrap();
        let retry = send("evt-123").await;
        assert_eq!(retry.status(), 202);
        assert_eq!(retry.headers()["idempotent-replayed"], "true");
        let retry: Value = retry.json().await.unwrap();
        assert_eq!(retry, first);
        assert_eq!(inbox_total(&app, user).await, 1);
        let other = send("evt-124").await;
        assert_eq!(other.status(), 202);
        assert_eq!(inbox_total(&app, user).await, 2);
        // The same event re-serialised (other key order, whitespace) is still a retry…
        let reordered = format!("{{ \"user_id\": \"{user}\", \"signal\": {},  \"type\": \"signal_generated\" }}",
            event["signal"]);
        let retry = app.client.post(format!("{}/api/v1/events", app.address)).bearer_auth(SERVICE_TOKEN)
            .header("Idempotency-Key", "evt-123").header("content-type", "application/json").body(reordered)
            .send().await.unwrap();
        assert_eq!(retry.headers()["idempotent-replayed"], "true");
        assert_eq!(retry.json::<Value>().await.unwrap(), first);
        // …but another event under a used key is refused, not answered with the first one's outcome.
        let someone_else = Uuid::new_v4();
        let res = app.client.post(format!("{}/api/v1/events", app.address)).bearer_auth(SERVICE_TOKEN)
            .header("Idempotency-Key", "evt-123").json(&signal_event(someone_else, 91.0)).send().await.unwrap();
        let err = assert_error(res, 422, "IDEMPOTENCY_KEY_REUSED").await;
        assert_eq!(err["error"]["details"]["field"], "Idempotency-Key");
        assert_eq!(inbox_total(&app, someone_else).await, 0);
        assert_eq!(inbox_total(&app, user).await, 2);
    }

    async fn every_bridge_refusal_uses_the_error_format_and_changes_nothing(app) {
        let user = Uuid::new_v4();
        let url = format!("{}/api/v1/events", app.address);
        let res = app.client.post(&url).json(&signal_event(user, 90.0)).send().await.unwrap();
        assert_error(res, 401, "UNAUTHORIZED").await;
        let res = app.post("/api/v1/events", "not-a-configured-token", &signal_event(user, 90.0)).await;
        assert_error(res, 401, "UNAUTHORIZED").await;
        let res = app.post("/api/v1/events", &app.token(user, Role::User), &signal_event(user, 90.0)).await;
        assert_error(res, 403, "FORBIDDEN").await;
        // A JWT with role service is accepted.
        let res = app.post("/api/v1/events", &app.token(Uuid::new_v4(), Role::Service), &signal_event(user, 90.0)).await;
        assert_eq!(res.status(), 202);
        // Not JSON at all is a 400, before any field is looked at (and before a bad
        // Idempotency-Key); JSON that makes no event is a 422 naming the field.
        let raw: [&[u8]; 5] = [b"{\"type\": ", b"{\"type\": \"notification\", \"user_id\": }", b"[1, 2", b"{} trailing", b"\xff\xfe{}"];
        for body in raw {
            let res = app.client.post(&url).bearer_auth(SERVICE_TOKEN).header("content-type", "application/json")
                .header("idempotency-key", "").body(body.to_vec()).send().await.unwrap();
            assert_error(res, 400, "INVALID_JSON").await;
        }
        for (body, field) in [("[1, 2]", "body"), ("{\"type\": \"notification\", \"type\": \"notification\"}", "type")] {
            let res = app.client.post(&url).bearer_auth(SERVICE_TOKEN).header("content-type", "application/json").body(body).send().await.unwrap();
            let err = assert_error(res, 422, "VALIDATION_FAILED").await;
            assert_eq!(err["error"]["details"]["field"], field, "{body}");
        }
        let huge = json!({"type": "notification", "user_id": user, "notification_type": "risk_warning", "priority": "info", "title": "t", "message": "x".repeat(70_000)});
        let res = app.post_event(&huge).await;
        assert_error(res, 413, "PAYLOAD_TOO_LARGE").await;
        for (body, field) in [
            (json!({"type": "weather", "user_id": user}), "type"),
            (json!({"type": "signal_generated", "signal": signal_event(user, 90.0)["signal"]}), "user_id"),
            (json!({"type": "signal_generated", "user_id": "nobody", "signal": signal_event(user, 90.0)["signal"]}), "user_id"),
            (signal_event(user, 120.0), "signal.confidence"),
            (json!({"type": "risk_warning", "user_id": user, "risk": {"risk_type": "margin", "current": 9}}), "risk.risk_type"),
            (json!({"type": "notification", "user_id": user, "notification_type": "risk_warning", "priority": "loud", "title": "t"}), "priority"),
            (json!({"type": "notification", "user_id": user, "notification_type": "risk_warning", "priority": "info", "title": "t".repeat(201)}), "title"),
            (json!({"type": "emergency_exit", "user_id": user, "exit": exit_event(user)["exit"], "extra": true}), "extra"),
            (json!({"type": "notification", "user_id": user, "notification_type": "risk_warning", "priority": "info", "title": "t", "metadata": [1]}), "metadata"),
            (json!({"type": "notification", "user_id": user, "notification_type": "risk_warning", "priority": "info", "title": "t", "metadata": {"s": "x".repeat(16_400)}}), "metadata"),
        ] {
            let res = app.post_event(&body).await;
            let err = assert_error(res, 422, "VALIDATION_FAILED").await;
            assert_eq!(err["error"]["details"]["field"], field, "{body}");
        }
        // Another method on the bridge's path is an unknown route, in the error format.
        for method in [reqwest::Method::GET, reqwest::Method::PUT] {
            let res = app.client.request(method.clone(), &url).bearer_auth(SERVICE_TOKEN).json(&info_event(user, "x")).send().await.unwrap();
            let err = assert_error(res, 404, "NOT_FOUND").await;
            assert_eq!(err["error"]["message"], format!("no route for {method} /api/v1/events"));
        }
        assert_eq!(inbox_total(&app, user).await, 1, "only the accepted service-JWT event was stored");
    }

    async fn posted_metadata_is_stored_and_toasted_as_its_compact_text(app) {
        let user = Uuid::new_v4();
        let mut ws = app.ws_as(user, Role::User, None).await;
        ws.until_ready().await;
        // Pretty printed, keys not in order, spaces inside a string and an escaped quote.
        let body = format!(
            "{{\"type\": \"notification\", \"user_id\": \"{user}\", \"notification_type\": \"signal_generated\",\n \
             \"priority\": \"info\", \"title\": \"t\", \"metadata\": {{\n  \"z\": 1,\n  \"a\": \"x  \\\" y\",\n  \"n\": {{ \"k\": [ 1, 2 ] }}\n}}}}"
        );
        let url = format!("{}/api/v1/events", app.address);
        let res = app.client.post(&url).bearer_auth(SERVICE_TOKEN).header("content-type", "application/json").body(body).send().await.unwrap();
        assert_eq!(res.status(), 202);
        let answer: Value = res.json().await.unwrap();
        let expected = json!({"z": 1, "a": "x  \" y", "n": {"k": [1, 2]}});
        let toast = ws.next_toast().await;
        assert_eq!(toast["notification"]["metadata"], expected, "{toast}");
        let page: Value = app.get("/api/v1/notifications", &app.token(user, Role::User)).await.json().await.unwrap();
        assert_eq!(page["data"][0]["metadata"], expected, "{page}");
        let id = answer["notifications"][0]["notification_id"].as_str().unwrap().to_string();
        let rows = crate::helpers::notification_rows(&app, vec![id.clone()]).await;
        assert_eq!(rows[&id].metadata, expected);
        if app.backend == Backend::Sqlite {
            // The text as posted, without the whitespace between tokens.
            let text = app.state.store.call(move |db| async move {
                use diesel_async::RunQueryDsl;
                let sql = format!("(SELECT metadata FROM notifications WHERE id = '{id}')");
                Ok(notifyhub::with_conn!(&db, conn => {
                    diesel::select(diesel::dsl::sql::<diesel::sql_types::Text>(&sql)).get_result::<String>(conn).await?
                }))
            }).await.unwrap();
            assert_eq!(text, r#"{"z":1,"a":"x  \" y","n":{"k":[1,2]}}"#);
        }
    }

    async fn profiles_missed_together_are_read_together(app) {
        let users: Vec<Uuid> = (0..8).map(|_| Uuid::new_v4()).collect();
        // One has saved preferences and one a push subscription: each still gets its own.
        let res = app.post("/api/v1/notifications/preferences", &app.token(users[0], Role::User), &json!({"min_confidence_threshold": 95})).await;
        assert_eq!(res.status(), 200);
        let device = crate::standins::BrowserKeys::new().subscription("https://fcm.googleapis.com/fcm/send/device-a");
        assert_eq!(app.post("/api/v1/push/subscriptions", &app.token(users[1], Role::User), &device).await.status(), 201);
        let reads = || crate::helpers::metric(&app.client, &app.address, "notifyhub_profile_reads_total");
        let before = reads().await;
        // Eight events' lookups at once, as concurrent events make them.
        let (profiles, store) = (&app.state.profiles, &app.state.store);
        let found = futures_util::future::join_all(users.iter().map(|u| profiles.load(store, std::slice::from_ref(u)))).await;
        assert_eq!(reads().await - before, 1, "eight misses, one read");
        let profile = |i: usize| found[i].as_ref().expect("read")[&users[i]].clone();
        assert_eq!(profile(0).prefs.min_confidence_threshold.get(), 95);
        assert_eq!((profile(1).has_push, profile(2).has_push), (true, false));
        assert_eq!(profile(2).prefs.min_confidence_threshold.get(), 85, "never saved: the defaults");
        // Cached now: no read at all.
        profiles.load(store, &users).await.expect("cached");
        assert_eq!(reads().await - before, 1);
        // A read under way when a profile changes serves its event but is not kept: it may
        // hold what the change replaced.
        let stranger = Uuid::new_v4();
        let mut loading = std::pin::pin!(profiles.load(store, std::slice::from_ref(&stranger)));
        assert!(futures_util::poll!(&mut loading).is_pending(), "the read is under way");
        profiles.invalidate(users[3]);
        assert!(loading.await.expect("read").contains_key(&stranger));
        assert_eq!(reads().await - before, 2);
        profiles.load(store, std::slice::from_ref(&stranger)).await.expect("read again");
        assert_eq!(reads().await - before, 3, "read again: the first read was not kept");
        profiles.load(store, std::slice::from_ref(&stranger)).await.expect("cached");
        assert_eq!(reads().await - before, 3);
    }

    async fn bodies_sent_in_chunks_are_read_whole_and_bounded(app) {
        let user = Uuid::new_v4();
        let event = info_event(user, "in three chunks").to_string();
        let (a, rest) = event.split_at(event.len() / 3);
        let (b, c) = rest.split_at(rest.len() / 2);
        let (status, answer) = app.post_chunked("/api/v1/events", SERVICE_TOKEN, &[a, b, c]).await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["accepted_count"], 1, "{answer}");
        // No Content-Length to refuse up front: the chunks are counted as they come.
        let big = json!({"type": "notification", "user_id": user, "notification_type": "risk_warning",
                         "priority": "info", "title": "t", "message": "x".repeat(70_000)}).to_string();
        let (a, b) = big.split_at(40_000);
        let (status, answer) = app.post_chunked("/api/v1/events", SERVICE_TOKEN, &[a, b]).await;
        assert_eq!(status, 413, "{answer}");
        assert_eq!(answer["error"]["code"], "PAYLOAD_TOO_LARGE", "{answer}");
        assert_eq!(inbox_total(&app, user).await, 1, "only the whole, bounded event was stored");
    }

    async fn throttle_windows_reopen_when_the_clock_moves(_app) {
        let Some((app, clock)) = clocked(_app.backend).await else { return };
        let user = Uuid::new_v4();
        assert_eq!(app.event(risk_event(user, "portfolio_heat", 8.5), 202).await["accepted_count"], 1);
        clock.advance(chrono::Duration::minutes(59));
        assert_eq!(app.event(risk_event(user, "portfolio_heat", 8.5), 200).await["status"], "throttled");
        clock.advance(chrono::Duration::minutes(1));
        assert_eq!(app.event(risk_event(user, "portfolio_heat", 8.5), 202).await["accepted_count"], 1);

        let admin = Uuid::new_v4();
        app.get("/api/v1/notifications", &app.token(admin, Role::Admin)).await;
        let err = json!({"type": "system_error", "error": {"error_type": "feed_lag", "message": "late"}});
        assert_eq!(app.event(err.clone(), 202).await["accepted_count"], 1);
        clock.advance(chrono::Duration::minutes(14));
        assert_eq!(app.event(err.clone(), 200).await["status"], "throttled");
        clock.advance(chrono::Duration::minutes(1));
        assert_eq!(app.event(err, 202).await["accepted_count"], 1);
    }

    async fn throttles_survive_a_restart(app) {
        let user = Uuid::new_v4();
        assert_eq!(app.event(risk_event(user, "campaign_allocation", 4.8), 202).await["accepted_count"], 1);
        let backend = app.backend;
        let (env, dir) = app.stop().await;
        let again = crate::helpers::spawn_with_env(backend, env, dir).await;
        assert_eq!(again.event(risk_event(user, "campaign_allocation", 4.9), 200).await["status"], "throttled");
    }
}
