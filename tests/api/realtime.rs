//! Live delivery over real WebSocket clients: toasts, tabs, isolation, quiet hours,
//! gap-free replay racing live events, unread counts, heartbeat.

use crate::bridge::{exit_event, info_event, signal_event};
use crate::helpers::{spawn_app_with, TestApp};
use notifyhub::auth::Role;
use notifyhub::clock::SystemClock;
use serde_json::{json, Value};
use std::sync::Arc;
use uuid::Uuid;

/// Quiet hours covering now, in UTC.
async fn quiet_now(app: &TestApp, user: Uuid) {
    let now = chrono::Utc::now();
    let start = (now - chrono::Duration::hours(1)).format("%H:%M").to_string();
    let end = (now + chrono::Duration::hours(1)).format("%H:%M").to_string();
    let res = app
        .post(
            "/api/v1/notifications/preferences",
            &app.token(user, Role::User),
            &json!({"quiet_hours": {"enabled": true, "start_time": start, "end_time": end, "timezone": "UTC"}}),
        )
        .await;
    assert_eq!(res.status(), 200);
}

crate::on_both_backends! {
    async fn an_event_reaches_the_open_tab_as_a_toast(app) {
        let user = Uuid::new_v4();
        let mut tab = app.ws(user, None).await;
        let (replayed, last) = tab.until_ready().await;
        assert!(replayed.is_empty());
        assert_eq!(last, 0);
        let answer = app.event(signal_event(user, 87.0), 202).await;
        let toast = tab.next_toast().await;
        assert_eq!(toast["sequence_number"], 1);
        assert_eq!(toast["unread_count"], 1);
        assert!(toast["timestamp"].is_string());
        assert_eq!(toast["notification"]["id"], answer["notifications"][0]["notification_id"]);
        assert_eq!(toast["notification"]["priority"], "warning");
        // The toast carries the notification exactly as the REST API returns it.
        let list: Value = app.get("/api/v1/notifications", &app.token(user, Role::User)).await.json().await.unwrap();
        assert_eq!(toast["notification"], list["data"][0]);
    }

    async fn every_tab_gets_it_and_other_users_never_do(app) {
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let mut a1 = app.ws(alice, None).await;
        let mut a2 = app.ws(alice, None).await;
        let mut b = app.ws(bob, None).await;
        for t in [&mut a1, &mut a2, &mut b] {
            t.until_ready().await;
        }
        app.event(exit_event(alice), 202).await;
        let t1 = a1.next_toast().await;
        let t2 = a2.next_toast().await;
        assert_eq!(t1, t2);
        assert_eq!(t1["notification"]["user_id"], alice.to_string());
        // Bob's next message is his own first notification, not Alice's.
        app.event(info_event(bob, "for bob"), 202).await;
        let tb = b.next_toast().await;
        assert_eq!(tb["notification"]["user_id"], bob.to_string());
        assert_eq!(tb["notification"]["title"], "for bob");
        assert_eq!(tb["sequence_number"], 1);
    }

    async fn each_recipient_of_a_broadcast_gets_its_own_toast_as_the_api_returns_it(app) {
        // Users with different histories, so ids, sequence numbers and unread counts differ
        // while the content is shared (on SQLite the toasts come from one template).
        let users: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
        let mut tabs = Vec::new();
        for (i, user) in users.iter().enumerate() {
            for k in 0..i {
                app.event(info_event(*user, &format!("before {k}")), 202).await;
            }
            let mut tab = app.ws(*user, None).await;
            tab.until_ready().await;
            tabs.push(tab);
        }
        let answer = app.event(json!({"type": "emergency_exit", "user_ids": users, "exit": exit_event(users[0])["exit"]}), 202).await;
        assert_eq!(answer["accepted_count"], 3);
        for (i, (user, tab)) in users.iter().zip(tabs.iter_mut()).enumerate() {
            let toast = tab.next_toast().await;
            assert_eq!(toast["sequence_number"], i as i64 + 1);
            assert_eq!(toast["unread_count"], i as i64 + 1);
            assert_eq!(toast["notification"]["user_id"], user.to_string());
            let list: Value = app.get("/api/v1/notifications", &app.token(*user, Role::User)).await.json().await.unwrap();
            assert_eq!(toast["notification"], list["data"][0]);
            assert_eq!(toast["notification"]["notification_type"], "emergency_exit");
        }
    }

    async fn filtered_and_throttled_events_produce_nothing_on_the_socket(app) {
        let user = Uuid::new_v4();
        let mut tab = app.ws(user, None).await;
        tab.until_ready().await;
        app.event(signal_event(user, 60.0), 200).await;
        app.event(crate::bridge::risk_event(user, "portfolio_heat", 8.7), 202).await;
        app.event(crate::bridge::risk_event(user, "portfolio_heat", 8.8), 200).await;
        app.event(info_event(user, "after"), 202).await;
        let first = tab.next_toast().await;
        assert_eq!(first["notification"]["notification_type"], "risk_warning");
        assert_eq!(first["sequence_number"], 1);
        let second = tab.next_toast().await;
        assert_eq!(second["notification"]["title"], "after");
        assert_eq!(second["sequence_number"], 2);
    }

    async fn quiet_hours_withhold_info_and_warning_toasts_but_not_an_emergency_exit(app) {
        let user = Uuid::new_v4();
        quiet_now(&app, user).await;
        let mut tab = app.ws(user, None).await;
        tab.until_ready().await;
        let info = app.event(info_event(user, "quiet info"), 202).await;
        assert_eq!(info["notifications"][0]["channels"], json!([]));
        let warning = app.event(signal_event(user, 87.0), 202).await;
        assert_eq!(warning["notifications"][0]["channels"], json!([]));
        let critical = app.event(exit_event(user), 202).await;
        assert_eq!(critical["notifications"][0]["channels"], json!(["toast"]));
        // The withheld ones only move the unread badge; the exit comes as a toast.
        assert_eq!(tab.next_json().await, json!({"type": "unread_count", "count": 1}));
        assert_eq!(tab.next_json().await, json!({"type": "unread_count", "count": 2}));
        let toast = tab.next_toast().await;
        assert_eq!(toast["notification"]["notification_type"], "emergency_exit");
        assert_eq!(toast["sequence_number"], 3);
        assert_eq!(toast["unread_count"], 3);
        // All three are in the inbox, and the deliveries log says why the toasts were not sent.
        let list: Value = app.get("/api/v1/notifications", &app.token(user, Role::User)).await.json().await.unwrap();
        assert_eq!(list["pagination"]["total_count"], 3);
        let id = info["notifications"][0]["notification_id"].as_str().unwrap().to_string();
        let rows = app.state.store.call(move |db| async move {
            use diesel::prelude::*;
            use diesel_async::RunQueryDsl;
            use notifyhub::store::schema::deliveries as d;
            let rows: Vec<(String, String, Option<String>)> = notifyhub::with_conn!(&db, conn => {
                d::table.filter(d::notification_id.eq(&id)).select((d::channel, d::status, d::reason)).load(conn).await?
            });
            Ok(rows)
        }).await.unwrap();
        assert_eq!(rows, vec![("toast".to_string(), "suppressed".to_string(), Some("quiet_hours".to_string()))]);
    }

    async fn reconnecting_with_since_replays_exactly_the_missed_ones_while_a_burst_races(app) {
        let user = Uuid::new_v4();
        for i in 0..5 {
            app.event(info_event(user, &format!("offline {i}")), 202).await;
        }
        let mut tab = app.ws(user, Some(2)).await;
        // A burst of live events races the replay.
        let address = app.address.clone();
        let burst = actix_web::rt::spawn(async move {
            let client = reqwest::Client::new();
            let sends = (0..30).map(|i| {
                let client = client.clone();
                let address = address.clone();
                async move {
                    let res = client.post(format!("{address}/api/v1/events")).bearer_auth(crate::helpers::SERVICE_TOKEN)
                        .json(&info_event(user, &format!("live {i}"))).send().await.unwrap();
                    assert_eq!(res.status(), 202);
                }
            });
            futures_util::future::join_all(sends).await;
        });
        let mut seqs = Vec::new();
        let mut ready_seen = false;
        while !(ready_seen && seqs.last().copied().unwrap_or(0) >= 35) {
            let m = tab.next_json().await;
            match m["type"].as_str() {
                Some("ready") => ready_seen = true,
                Some("notification_toast") => {
                    assert_eq!(m["sequence_number"], m["notification"]["sequence_number"]);
                    seqs.push(m["sequence_number"].as_i64().unwrap());
                }
                other => panic!("unexpected {other:?}: {m}"),
            }
        }
        burst.await.unwrap();
        assert_eq!(seqs, (3..=35).collect::<Vec<_>>(), "every missed and live toast once, in order");

        // since=0 replays everything; no since replays nothing and reports the last number.
        let mut all = app.ws(user, Some(0)).await;
        let (replayed, last) = all.until_ready().await;
        assert_eq!(replayed.len(), 35);
        assert_eq!(last, 35);
        let mut fresh = app.ws(user, None).await;
        let (replayed, last) = fresh.until_ready().await;
        assert!(replayed.is_empty());
        assert_eq!(last, 35);
    }

    async fn read_state_changes_reach_every_tab(app) {
        let user = Uuid::new_v4();
        let token = app.token(user, Role::User);
        let first = app.event(info_event(user, "a"), 202).await;
        app.event(info_event(user, "b"), 202).await;
        let mut t1 = app.ws(user, None).await;
        let mut t2 = app.ws(user, None).await;
        t1.until_ready().await;
        t2.until_ready().await;
        let id = first["notifications"][0]["notification_id"].as_str().unwrap();
        assert_eq!(app.patch(&format!("/api/v1/notifications/{id}/read"), &token).await.status(), 200);
        for t in [&mut t1, &mut t2] {
            assert_eq!(t.next_json().await, json!({"type": "unread_count", "count": 1}));
        }
        app.post("/api/v1/notifications/read-all", &token, &json!({})).await;
        for t in [&mut t1, &mut t2] {
            assert_eq!(t.next_json().await, json!({"type": "unread_count", "count": 0}));
        }
        app.event(info_event(user, "c"), 202).await;
        assert_eq!(t1.next_toast().await["unread_count"], 1);
        app.delete("/api/v1/notifications", &token).await;
        assert_eq!(t2.next_toast().await["unread_count"], 1);
        assert_eq!(t2.next_json().await, json!({"type": "unread_count", "count": 0}));
    }

    async fn after_an_erase_ready_reports_the_last_number_and_toasts_go_on_from_it(app) {
        let user = Uuid::new_v4();
        let token = app.token(user, Role::User);
        for title in ["a", "b", "c"] {
            app.event(info_event(user, title), 202).await;
        }
        assert_eq!(app.delete("/api/v1/notifications", &token).await.status(), 200);
        let reads_before = app.counter("notifyhub_ws_replay_reads_total").await;
        // A client that saw nothing yet: nothing is left to replay, and numbers are not reused.
        let mut tab = app.ws(user, Some(0)).await;
        let (replayed, last) = tab.until_ready().await;
        assert!(replayed.is_empty());
        assert_eq!(last, 3);
        app.event(info_event(user, "d"), 202).await;
        assert_eq!(tab.next_toast().await["sequence_number"], 4);
        assert_eq!(app.counter("notifyhub_ws_replay_reads_total").await, reads_before + 1, "no gap to close by a read");
    }

    async fn bad_socket_requests_are_refused_before_the_upgrade(app) {
        use tokio_tungstenite::tungstenite::Error;
        for url in [
            format!("ws://127.0.0.1:{}/ws", app.port),
            format!("ws://127.0.0.1:{}/ws?token=forged", app.port),
            format!("ws://127.0.0.1:{}/ws?token={}", app.port, app.token(Uuid::new_v4(), Role::Service)),
            format!("ws://127.0.0.1:{}/ws?token={}&since=-4", app.port, app.token(Uuid::new_v4(), Role::User)),
        ] {
            match tokio_tungstenite::connect_async(&url).await {
                Err(Error::Http(res)) => {
                    assert!([400, 401, 403].contains(&res.status().as_u16()), "{url}: {}", res.status());
                    let body: Value = serde_json::from_slice(res.body().as_deref().unwrap_or_default()).unwrap();
                    assert!(body["error"]["code"].is_string(), "{body}");
                }
                other => panic!("{url} should be refused, got {other:?}"),
            }
        }
    }
}

/// A raw client that completes the handshake and then never answers a ping.
async fn silent_socket(port: u16, token: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let req = format!(
        "GET /ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    assert!(String::from_utf8_lossy(&head).starts_with("HTTP/1.1 101"));
    s
}

#[actix_web::test]
async fn the_heartbeat_closes_a_dead_socket_and_keeps_a_live_one() {
    use tokio::io::AsyncReadExt;
    let app = spawn_app_with(
        crate::helpers::Backend::Sqlite,
        &[("NOTIFYHUB_WS_HEARTBEAT_MS", "100"), ("NOTIFYHUB_WS_TIMEOUT_MS", "400")],
        Arc::new(SystemClock),
    )
    .await
    .unwrap();
    let user = Uuid::new_v4();
    let mut live = app.ws(user, None).await;
    live.until_ready().await;
    // The live tab keeps reading (and so answering pings) in the background.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    actix_web::rt::spawn(async move {
        loop {
            let m = live.next_json().await;
            if tx.send(m).is_err() {
                break;
            }
        }
    });
    let mut dead = silent_socket(app.port, &app.token(user, Role::User)).await;
    // Read the dead socket's bytes (pings, then a close frame) until the server hangs up.
    let started = std::time::Instant::now();
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), dead.read_to_end(&mut bytes)).await;
    assert!(read.is_ok(), "the server closes a socket that never answers pings");
    assert!(started.elapsed() >= std::time::Duration::from_millis(400), "not before the timeout");
    // A close frame (opcode 0x8) with code 1001 was sent before the hang-up.
    let close = bytes.windows(4).any(|w| w[0] == 0x88 && w[2] == 0x03 && w[3] == 0xE9);
    assert!(close, "close frame 1001 in {bytes:02x?}");
    // The socket that answers pings stayed open throughout.
    app.event(info_event(user, "still here"), 202).await;
    let toast = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
    assert_eq!(toast["notification"]["title"], "still here");
}

#[actix_web::test]
async fn a_client_that_stops_reading_is_cut_off_without_slowing_a_healthy_one() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(crate::helpers::Backend::Sqlite, &[], Arc::new(SystemClock)).await.unwrap();
    let (stalled, healthy) = (Uuid::new_v4(), Uuid::new_v4());
    // The stalled client: a tiny receive buffer, a handshake, then it never reads again.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut raw = socket.connect(([127, 0, 0, 1], app.port).into()).await.unwrap();
    let req = format!(
        "GET /ws?token={} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        app.token(stalled, Role::User)
    );
    raw.write_all(req.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    raw.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");

    let mut tab = app.ws(healthy, None).await;
    tab.until_ready().await;
    let big = "x".repeat(15 * 1024);
    let flood = |i: usize| {
        json!({"type": "notification", "user_id": stalled, "notification_type": "system_error", "priority": "info",
        "title": format!("flood {i}"), "message": "m".repeat(1000), "metadata": {"blob": big}})
    };
    let mut cut_at = None;
    for i in 0..600 {
        app.event(flood(i), 202).await;
        if i % 50 == 0 {
            // The healthy tab keeps getting its toasts while the other socket backs up.
            app.event(info_event(healthy, &format!("healthy {i}")), 202).await;
            assert_eq!(tab.next_toast().await["notification"]["title"], format!("healthy {i}"));
            let metrics =
                app.client.get(format!("{}/metrics", app.address)).send().await.unwrap().text().await.unwrap();
            if metrics.contains("notifyhub_ws_slow_consumer_disconnects_total 1") {
                cut_at = Some(i);
                break;
            }
        }
    }
    assert!(cut_at.is_some(), "the stalled socket was never cut off");
    drop(raw);
    // Back, it catches up by replay.
    let mut back = app.ws(stalled, Some(3)).await;
    let (replayed, last) = back.until_ready().await;
    assert_eq!(replayed.len() as i64, last - 3);
    assert_eq!(replayed[0]["sequence_number"], 4);
}

#[actix_web::test]
async fn a_socket_is_closed_when_its_token_expires() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::Message;
    let app = crate::helpers::spawn_app(crate::helpers::Backend::Sqlite).await.unwrap();
    let user = Uuid::new_v4();
    // Valid for one more second (plus the 5 s of leeway tokens get).
    let token = app.jwt.issue(user, Role::User, std::time::Duration::from_secs(1));
    let url = format!("ws://127.0.0.1:{}/ws?token={token}", app.port);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.expect("websocket connects");
    let opened = std::time::Instant::now();
    let mut toasts = 0;
    let close = loop {
        match next_frame(&mut socket).await {
            Message::Text(t) if t.contains("\"ready\"") => {
                app.event(signal_event(user, 87.0), 202).await;
            }
            Message::Text(t) if t.contains("notification_toast") => toasts += 1,
            Message::Close(close) => break close.expect("a close code"),
            _ => {}
        }
    };
    assert_eq!(toasts, 1, "live until the token expires");
    assert_eq!(close.code, CloseCode::Policy);
    assert!(close.reason.contains("token expired"), "{}", close.reason);
    assert!(opened.elapsed() >= std::time::Duration::from_secs(4), "not before the token (with leeway) expired");
}

#[actix_web::test]
async fn a_client_breaking_the_protocol_is_told_why_before_the_socket_closes() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::Message;
    let app = crate::helpers::spawn_app(crate::helpers::Backend::Sqlite).await.unwrap();
    let user = Uuid::new_v4();
    let url = format!("ws://127.0.0.1:{}/ws?token={}", app.port, app.token(user, Role::User));
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.expect("websocket connects");
    // Clients send control frames only; frames past 4 KiB are refused.
    socket.send(Message::text("x".repeat(8 * 1024))).await.unwrap();
    let close = loop {
        if let Message::Close(close) = next_frame(&mut socket).await {
            break close.expect("a close code");
        }
    };
    assert_eq!(close.code, CloseCode::Size);
}

/// The next frame of a raw socket, control frames included; panics after 15 s or at the end.
async fn next_frame(
    socket: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
) -> tokio_tungstenite::tungstenite::Message {
    use futures_util::StreamExt;
    tokio::time::timeout(std::time::Duration::from_secs(15), socket.next())
        .await
        .expect("a frame within 15 s")
        .expect("a close frame before the end")
        .expect("frame")
}
