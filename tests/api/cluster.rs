//! Two hubs on one PostgreSQL behave as one: cross-node delivery in order, replay on
//! either node, read state and throttles shared.

use crate::bridge::{exit_event, info_event, risk_event};
use crate::helpers::{
    fresh_pg_database, metric, spawn_with_clock, test_env, until_metric, Backend, ChaosProxy, HubProcess, TestApp,
    WsClient, JWT_SECRET, SERVICE_TOKEN,
};
use notifyhub::auth::JwtKeys;
use notifyhub::auth::Role;
use notifyhub::clock::SystemClock;
use serde_json::{json, Value};
use std::sync::Arc;
use uuid::Uuid;

/// Two nodes sharing a database and the keys a cluster must share.
async fn two_nodes() -> Option<(TestApp, TestApp)> {
    two_nodes_and_url().await.map(|(a, b, _)| (a, b))
}

/// [`two_nodes`], and their database's URL.
async fn two_nodes_and_url() -> Option<(TestApp, TestApp, String)> {
    let url = fresh_pg_database().await?;
    let a = node_on(&url).await;
    let b = node_on(&url).await;
    Some((a, b, url))
}

/// The keys every node of a cluster must share.
const CLUSTER_KEYS: [(&str, &str); 2] = [
    ("NOTIFYHUB_PII_KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
    ("VAPID_PRIVATE_KEY", "IQ9Ur0ykXoHS9gzfYX0aBjy9lvdrjx_PFUXmie9YRcY"),
];

/// A node on the database at `url`.
async fn node_on(url: &str) -> TestApp {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut env = test_env(Backend::Sqlite, dir.path()).await.unwrap();
    env.insert("DATABASE_URL".into(), url.to_string());
    env.extend(CLUSTER_KEYS.map(|(k, v)| (k.to_string(), v.to_string())));
    spawn_with_clock(Backend::Postgres, env, dir, Arc::new(SystemClock)).await
}

/// The gauge of users a node knows to have a tab on another node.
const USERS_ELSEWHERE: &str = "notifyhub_cluster_users_elsewhere";

/// The gauge that is 1 while a node sees no other.
const ALONE: &str = "notifyhub_cluster_alone";

#[actix_web::test]
async fn tabs_on_two_nodes_get_every_toast_in_order_whichever_node_stored_it() {
    let Some((a, b)) = two_nodes().await else { return };
    let user = Uuid::new_v4();
    let mut tab_a = a.ws(user, None).await;
    let mut tab_b = b.ws(user, None).await;
    tab_a.until_ready().await;
    tab_b.until_ready().await;
    for i in 0..12 {
        let node = if i % 3 == 0 { &b } else { &a };
        node.event(info_event(user, &format!("event {i}")), 202).await;
    }
    for tab in [&mut tab_a, &mut tab_b] {
        let mut seqs = Vec::new();
        while seqs.len() < 12 {
            let m = tab.next_toast().await;
            assert_eq!(m["notification"]["title"], format!("event {}", seqs.len()));
            seqs.push(m["sequence_number"].as_i64().unwrap());
        }
        assert_eq!(seqs, (1..=12).collect::<Vec<_>>());
    }
    // Replay works on either node.
    let mut late = b.ws(user, Some(9)).await;
    let (replayed, last) = late.until_ready().await;
    assert_eq!(replayed.iter().map(|m| m["sequence_number"].as_i64().unwrap()).collect::<Vec<_>>(), vec![10, 11, 12]);
    assert_eq!(last, 12);
}

#[actix_web::test]
async fn a_toast_crosses_nodes_in_its_notify_payload_unless_too_large() {
    let Some((a, b)) = two_nodes().await else { return };
    let user = Uuid::new_v4();
    let mut tab = b.ws(user, None).await;
    tab.until_ready().await;
    // Node a sends a frame only once it knows the user has a tab on b.
    a.until_gauge(USERS_ELSEWHERE, 1).await;
    let reads = b.counter("notifyhub_ws_replay_reads_total").await;
    for i in 0..5 {
        a.event(info_event(user, &format!("small {i}")), 202).await;
    }
    for i in 0..5 {
        assert_eq!(tab.next_toast().await["notification"]["title"], format!("small {i}"));
    }
    assert_eq!(
        b.counter("notifyhub_ws_replay_reads_total").await,
        reads,
        "a small toast was read back from the database"
    );

    // 10 KB of metadata cannot ride in a NOTIFY (under 8000 bytes): node b reads it.
    let mut big = info_event(user, "big");
    big["metadata"] = json!({"pad": "x".repeat(10_000)});
    a.event(big, 202).await;
    let toast = tab.next_toast().await;
    assert_eq!(toast["notification"]["title"], "big");
    assert_eq!(toast["notification"]["metadata"]["pad"].as_str().map(str::len), Some(10_000));
    assert!(b.counter("notifyhub_ws_replay_reads_total").await > reads);
}

#[actix_web::test]
async fn a_broadcast_crosses_nodes_with_every_frame() {
    let Some((a, b)) = two_nodes().await else { return };
    // One event to several users with tabs on node b: one batch on node a, each toast
    // crossing with its frame (no read back on b).
    let users: Vec<Uuid> = (0..6).map(|_| Uuid::new_v4()).collect();
    let mut tabs = ready_tabs(&b, &users).await;
    a.until_gauge(USERS_ELSEWHERE, 6).await;
    let reads = b.counter("notifyhub_ws_replay_reads_total").await;
    let event = json!({"type": "notification", "user_ids": users, "notification_type": "signal_generated",
                       "priority": "info", "title": "to all six", "message": "m", "metadata": {"k": 1}});
    let answer = a.event(event, 202).await;
    assert_eq!(answer["accepted_count"], 6);
    for (i, (user, tab)) in users.iter().zip(&mut tabs).enumerate() {
        // Each frame is its own recipient's, around the content the rows share.
        let toast = tab.next_toast().await;
        assert_eq!(toast["notification"]["id"], answer["notifications"][i]["notification_id"]);
        assert_eq!(toast["notification"]["user_id"], user.to_string());
        assert_eq!(toast["notification"]["title"], "to all six");
        assert_eq!(toast["notification"]["metadata"], json!({"k": 1}));
        assert_eq!(toast["sequence_number"], 1);
        assert_eq!(toast["unread_count"], 1);
    }
    assert_eq!(b.counter("notifyhub_ws_replay_reads_total").await, reads, "a toast was read back from the database");
}

/// A tab for each of `users` on `node`, each past its `ready`.
async fn ready_tabs(node: &TestApp, users: &[Uuid]) -> Vec<WsClient> {
    let mut tabs = Vec::new();
    for user in users {
        let mut tab = node.ws(*user, None).await;
        tab.until_ready().await;
        tabs.push(tab);
    }
    tabs
}

/// A connection listening where the nodes talk, as a node's listener does.
async fn listen_to_the_nodes(url: &str) -> diesel_async::AsyncPgConnection {
    use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    let mut listener = diesel_async::AsyncPgConnection::establish(url).await.unwrap();
    listener.batch_execute("LISTEN notifyhub").await.unwrap();
    listener
}

type Heard<'a> =
    std::pin::Pin<&'a mut (dyn futures_util::Stream<Item = diesel::QueryResult<diesel::pg::PgNotification>> + 'a)>;

/// The next payload heard (15 s at most).
async fn next_payload(heard: &mut Heard<'_>) -> String {
    use futures_util::StreamExt;
    tokio::time::timeout(std::time::Duration::from_secs(15), heard.next())
        .await
        .expect("a NOTIFY within 15 s")
        .expect("listening")
        .expect("a notification")
        .payload
}

/// The payloads of the next `n` notifications stored, by owner: whether each carried
/// its toast frame.
async fn next_committed(heard: &mut Heard<'_>, n: usize) -> std::collections::HashMap<String, bool> {
    let mut seen = std::collections::HashMap::new();
    while seen.len() < n {
        let payload = next_payload(heard).await;
        // `n|node|user|seq|toast|unread|frame` for one with its frame; `m|node|` and
        // `user,seq,toast,unread;…` for those without.
        let fields: Vec<&str> = payload.splitn(7, '|').collect();
        match fields[0] {
            "n" => {
                seen.insert(Uuid::parse_str(fields[2]).unwrap().to_string(), fields.len() == 7);
            }
            "m" => {
                for row in fields[2].split(';') {
                    let user = row.split(',').next().unwrap();
                    seen.insert(Uuid::parse_str(user).unwrap().to_string(), false);
                }
            }
            _ => {}
        }
    }
    seen
}

#[actix_web::test]
async fn a_toast_frame_crosses_nodes_only_for_users_with_a_tab_on_another_node() {
    let Some((a, b, url)) = two_nodes_and_url().await else { return };
    let mut listener = listen_to_the_nodes(&url).await;
    let mut heard: Heard = std::pin::pin!(listener.notifications_stream());
    let (on_a, on_b, nowhere) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let mut tab_a = a.ws(on_a, None).await;
    let mut tab_b = b.ws(on_b, None).await;
    tab_a.until_ready().await;
    tab_b.until_ready().await;
    a.until_gauge(USERS_ELSEWHERE, 1).await;
    b.until_gauge(USERS_ELSEWHERE, 1).await;
    let reads = b.counter("notifyhub_ws_replay_reads_total").await;
    for user in [on_a, on_b, nowhere] {
        a.event(info_event(user, "from a"), 202).await;
    }
    let framed = next_committed(&mut heard, 3).await;
    assert!(framed[&on_b.to_string()], "b holds a tab: the frame goes along");
    assert!(!framed[&on_a.to_string()], "only a holds a tab: no other node needs the frame");
    assert!(!framed[&nowhere.to_string()], "no tab anywhere");
    // Both tabs get their toast: a serialises its own, b takes the frame.
    assert_eq!(tab_a.next_toast().await["notification"]["title"], "from a");
    assert_eq!(tab_b.next_toast().await["notification"]["title"], "from a");
    assert_eq!(b.counter("notifyhub_ws_replay_reads_total").await, reads);

    // The last tab on b closes: a stops sending that user's frames.
    tab_b.close().await;
    a.until_gauge(USERS_ELSEWHERE, 0).await;
    a.event(info_event(on_b, "after the tab closed"), 202).await;
    assert!(!next_committed(&mut heard, 1).await[&on_b.to_string()]);

    // A user with tabs on both nodes gets frames from either node for the other one.
    let mut tab_b = b.ws(on_a, None).await;
    tab_b.until_ready().await;
    a.until_gauge(USERS_ELSEWHERE, 1).await;
    b.event(info_event(on_a, "from b"), 202).await;
    assert!(next_committed(&mut heard, 1).await[&on_a.to_string()]);
    assert_eq!(tab_a.next_toast().await["notification"]["title"], "from b");
    assert_eq!(tab_b.next_toast().await["notification"]["title"], "from b");
}

#[actix_web::test]
async fn a_node_that_starts_late_learns_where_the_tabs_are_and_one_that_stops_says_so() {
    let Some((a, b, url)) = two_nodes_and_url().await else { return };
    let users: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let mut tabs = ready_tabs(&a, &users).await;
    b.until_gauge(USERS_ELSEWHERE, 3).await;
    // A third node, started after the tabs opened, asks the others where theirs are.
    let c = node_on(&url).await;
    c.until_gauge(USERS_ELSEWHERE, 3).await;
    let reads = a.counter("notifyhub_ws_replay_reads_total").await;
    c.event(info_event(users[1], "from c"), 202).await;
    assert_eq!(tabs[1].next_toast().await["notification"]["title"], "from c");
    assert_eq!(a.counter("notifyhub_ws_replay_reads_total").await, reads, "the frame came along");

    // A node that stops says so, after its tabs are gone: the others forget whatever
    // they still hold of it.
    let mut listener = listen_to_the_nodes(&url).await;
    let mut heard: Heard = std::pin::pin!(listener.notifications_stream());
    drop(tabs);
    a.stop().await;
    let last = loop {
        let payload = next_payload(&mut heard).await;
        if payload.starts_with("r|") {
            break payload;
        }
    };
    assert!(last.ends_with("|0"), "{last}: a leaving node asks nothing of the others");
    b.until_gauge(USERS_ELSEWHERE, 0).await;
    c.until_gauge(USERS_ELSEWHERE, 0).await;
}

/// The payloads heard up to a marker sent now, which PostgreSQL delivers after everything
/// committed before it.
async fn heard_until_now(url: &str, heard: &mut Heard<'_>) -> Vec<String> {
    use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    let marker = format!("x|test|{}", Uuid::new_v4());
    let mut conn = diesel_async::AsyncPgConnection::establish(url).await.unwrap();
    conn.batch_execute(&format!("NOTIFY notifyhub, '{marker}'")).await.unwrap();
    let mut out = Vec::new();
    loop {
        let payload = next_payload(heard).await;
        if payload == marker {
            return out;
        }
        out.push(payload);
    }
}

/// Stores a toast titled `title` for `user` on `node` and waits for it on `user`'s
/// `tab`; answers whether the node announced it to the other nodes.
async fn toast_announced(
    url: &str,
    heard: &mut Heard<'_>,
    node: &TestApp,
    (user, tab): (Uuid, &mut WsClient),
    title: &str,
) -> bool {
    node.event(info_event(user, title), 202).await;
    assert_eq!(tab.next_toast().await["notification"]["title"], title);
    let payloads = heard_until_now(url, heard).await;
    payloads.iter().any(|p| p.starts_with("n|") || p.starts_with("m|"))
}

#[actix_web::test]
async fn a_node_alone_announces_nothing_it_stores_until_another_joins() {
    let Some(url) = fresh_pg_database().await else { return };
    let a = node_on(&url).await;
    assert_eq!(a.counter(ALONE).await, 1, "a node alone says so");
    let mut listener = listen_to_the_nodes(&url).await;
    let mut heard: Heard = std::pin::pin!(listener.notifications_stream());
    let user = Uuid::new_v4();
    let mut tab_a = a.ws(user, None).await;
    tab_a.until_ready().await;
    assert!(!toast_announced(&url, &mut heard, &a, (user, &mut tab_a), "alone").await);

    // A second node joins: it is served once the first has answered, and from then on
    // the first announces what it stores.
    let b = node_on(&url).await;
    let payloads = heard_until_now(&url, &mut heard).await;
    let joined: Vec<&str> = payloads.iter().filter_map(|p| p.strip_prefix("j|")).collect();
    let [joined] = joined.as_slice() else { panic!("one join: {payloads:?}") };
    assert!(
        payloads.iter().any(|p| p.starts_with("w|") && p.ends_with(&format!("|{joined}"))),
        "the first node answered: {payloads:?}"
    );
    assert_eq!((a.counter(ALONE).await, b.counter(ALONE).await), (0, 0));
    let mut tab_b = b.ws(user, None).await;
    tab_b.until_ready().await;
    assert!(toast_announced(&url, &mut heard, &a, (user, &mut tab_a), "with company").await);
    assert_eq!(tab_b.next_toast().await["notification"]["title"], "with company");
}

#[actix_web::test]
async fn a_node_whose_peers_have_all_gone_stops_announcing() {
    let Some((a, b, url)) = two_nodes_and_url().await else { return };
    assert_eq!(a.counter(ALONE).await, 0);
    b.stop().await;
    // The node looks every 5 s.
    a.until_gauge(ALONE, 1).await;
    let mut listener = listen_to_the_nodes(&url).await;
    let mut heard: Heard = std::pin::pin!(listener.notifications_stream());
    let user = Uuid::new_v4();
    let mut tab = a.ws(user, None).await;
    tab.until_ready().await;
    assert!(!toast_announced(&url, &mut heard, &a, (user, &mut tab), "alone again").await);
}

#[actix_web::test]
async fn nodes_that_cannot_list_each_other_announce_everything() {
    use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection};
    let Some(url) = fresh_pg_database().await else { return };
    // A role that may not read `pg_stat_activity` in this database (roles are the
    // server's: a fresh name each run).
    let role = format!("nh_hidden_{}", &Uuid::new_v4().simple().to_string()[..12]);
    let mut admin = diesel_async::AsyncPgConnection::establish(&url).await.unwrap();
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; GRANT ALL ON SCHEMA public TO {role}; \
             REVOKE SELECT ON pg_catalog.pg_stat_activity FROM PUBLIC"
        ))
        .await
        .unwrap();
    let hidden = url.replacen("postgres@", &format!("{role}@"), 1);
    let mut probe = diesel_async::AsyncPgConnection::establish(&hidden).await.unwrap();
    assert!(diesel::sql_query("SELECT 1 FROM pg_stat_activity").execute(&mut probe).await.is_err());
    // Neither can tell it is alone; both listen, and every toast crosses.
    let (a, b) = (node_on(&hidden).await, node_on(&hidden).await);
    assert_eq!((a.counter(ALONE).await, b.counter(ALONE).await), (0, 0));
    let user = Uuid::new_v4();
    let mut tab = b.ws(user, None).await;
    tab.until_ready().await;
    a.event(info_event(user, "to whom it may concern"), 202).await;
    assert_eq!(tab.next_toast().await["notification"]["title"], "to whom it may concern");
}

#[actix_web::test]
async fn a_node_that_never_answers_holds_a_join_for_5_s_and_no_longer() {
    use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    let Some(url) = fresh_pg_database().await else { return };
    // A listener named like a node's, which never answers.
    let mut silent = diesel_async::AsyncPgConnection::establish(&url).await.unwrap();
    silent.batch_execute("SET application_name = 'notifyhub-listener-0badc0ffee00'; LISTEN notifyhub").await.unwrap();
    let started = std::time::Instant::now();
    let a = node_on(&url).await;
    let waited = started.elapsed();
    assert!(waited >= std::time::Duration::from_millis(4500), "served after {waited:?}, before the 5 s were up");
    // The listener gives up on the silent node after 5 s; start-up's own bound is 10 s.
    assert!(waited < std::time::Duration::from_millis(9500), "served only after {waited:?}");
    // It serves, and, not alone, announces what it stores.
    let mut listener = listen_to_the_nodes(&url).await;
    let mut heard: Heard = std::pin::pin!(listener.notifications_stream());
    let user = Uuid::new_v4();
    let mut tab = a.ws(user, None).await;
    tab.until_ready().await;
    assert!(toast_announced(&url, &mut heard, &a, (user, &mut tab), "despite the silence").await);
}

#[actix_web::test]
async fn withheld_toasts_and_read_state_cross_nodes_as_unread_counts() {
    let Some((a, b)) = two_nodes().await else { return };
    let user = Uuid::new_v4();
    let token = a.token(user, Role::User);
    let now = chrono::Utc::now();
    let res = a
        .post(
            "/api/v1/notifications/preferences",
            &token,
            &json!({"quiet_hours": {"enabled": true, "timezone": "UTC",
                "start_time": (now - chrono::Duration::hours(1)).format("%H:%M").to_string(),
                "end_time": (now + chrono::Duration::hours(1)).format("%H:%M").to_string()}}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let mut tab_b = b.ws(user, None).await;
    tab_b.until_ready().await;
    let quiet = a.event(info_event(user, "quiet"), 202).await;
    assert_eq!(tab_b.next_json().await, json!({"type": "unread_count", "count": 1}));
    a.event(exit_event(user), 202).await;
    let toast = tab_b.next_toast().await;
    assert_eq!(toast["sequence_number"], 2);
    let id = quiet["notifications"][0]["notification_id"].as_str().unwrap();
    assert_eq!(a.patch(&format!("/api/v1/notifications/{id}/read"), &token).await.status(), 200);
    assert_eq!(tab_b.next_json().await, json!({"type": "unread_count", "count": 1}));
}

#[actix_web::test]
async fn throttles_hold_across_nodes() {
    let Some((a, b)) = two_nodes().await else { return };
    let user = Uuid::new_v4();
    assert_eq!(a.event(risk_event(user, "portfolio_heat", 9.0), 202).await["accepted_count"], 1);
    let body: Value = b.event(risk_event(user, "portfolio_heat", 9.5), 200).await;
    assert_eq!(body["reason"], "risk_warning_throttled");
}

#[actix_web::test]
async fn a_node_cut_off_from_the_database_catches_up_on_what_it_missed_once_back() {
    // Node B reaches PostgreSQL through a proxy; cutting it drops B's listener (and its
    // pool) while A goes on storing for a user whose tab is on B. No NOTIFY can reach B
    // then: only B's catch-up after its listener reconnects can bring those toasts.
    let Some(url) = fresh_pg_database().await else { return };
    let proxy = ChaosProxy::start(&url).await;
    let a = node_on(&url).await;
    let b = node_on(&proxy.url).await;
    let user = Uuid::new_v4();
    let mut tab = b.ws(user, None).await;
    tab.until_ready().await;
    a.event(info_event(user, "heard"), 202).await;
    assert_eq!(tab.next_toast().await["sequence_number"], 1);

    proxy.cut();
    for i in 1..=3 {
        a.event(info_event(user, &format!("missed {i}")), 202).await;
    }
    proxy.restore();
    for i in 1..=3 {
        let toast = tab.next_toast().await;
        assert_eq!(
            (toast["sequence_number"].as_i64(), toast["notification"]["title"].as_str()),
            (Some(i + 1), Some(format!("missed {i}").as_str()))
        );
    }
    // And B hears A again: the next toast crosses as it is stored.
    a.event(info_event(user, "heard again"), 202).await;
    assert_eq!(tab.next_toast().await["sequence_number"], 5);
}

#[actix_web::test]
async fn a_preference_change_on_one_node_applies_at_once_on_the_other() {
    let Some((a, b)) = two_nodes().await else { return };
    let user = Uuid::new_v4();
    // Node A caches the user's defaults (threshold 85) by routing a signal.
    assert_eq!(a.event(crate::bridge::signal_event(user, 87.0), 202).await["accepted_count"], 1);
    let res = b
        .post("/api/v1/notifications/preferences", &b.token(user, Role::User), &json!({"min_confidence_threshold": 90}))
        .await;
    assert_eq!(res.status(), 200);
    // The change reaches A through the database's NOTIFY; wait for it by polling A's answer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let res = a.post_event(&crate::bridge::signal_event(user, 87.0)).await;
        let body: Value = res.json().await.unwrap();
        if body["status"] == "filtered" {
            assert_eq!(body["reason"], "below_confidence_threshold");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "node A kept the old threshold: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[actix_web::test]
async fn two_hub_processes_on_one_postgresql_behave_as_one() {
    // The real binary twice, as an operator runs it: cross-node delivery with the frame,
    // a cluster-wide throttle, replay from the other process, and a clean stop.
    let Some(url) = fresh_pg_database().await else { return };
    let [pii, vapid] = CLUSTER_KEYS;
    let env = [("DATABASE_URL", url.as_str()), ("NOTIFYHUB_DB_POOL_SIZE", "4"), pii, vapid];
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = HubProcess::start(dir_a.path(), env);
    let b = HubProcess::start(dir_b.path(), env);
    let client = reqwest::Client::new();
    let user = Uuid::new_v4();
    let token = JwtKeys::new(JWT_SECRET).issue(user, Role::User, std::time::Duration::from_secs(600));
    let mut tab = WsClient::connect(&format!("ws://127.0.0.1:{}/ws?token={token}", b.port)).await;
    tab.until_ready().await;
    until_metric(&client, &a.base(), USERS_ELSEWHERE, 1).await;
    let reads = metric(&client, &b.base(), "notifyhub_ws_replay_reads_total").await;
    let post = |base: String, body: Value| {
        let client = client.clone();
        async move {
            let res = client.post(format!("{base}/api/v1/events")).bearer_auth(SERVICE_TOKEN).json(&body).send().await;
            let res = res.unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap())
        }
    };
    for i in 1..=3 {
        assert_eq!(post(a.base(), info_event(user, &format!("from process a {i}"))).await.0, 202);
    }
    for i in 1..=3 {
        let toast = tab.next_toast().await;
        assert_eq!(
            (toast["sequence_number"].as_i64(), toast["notification"]["title"].as_str()),
            (Some(i), Some(format!("from process a {i}").as_str()))
        );
    }
    assert_eq!(metric(&client, &b.base(), "notifyhub_ws_replay_reads_total").await, reads, "the frames came along");

    // One risk warning per hour per user and type, whichever process hears it.
    assert_eq!(post(a.base(), risk_event(user, "portfolio_heat", 9.0)).await.0, 202);
    let (status, body) = post(b.base(), risk_event(user, "portfolio_heat", 9.5)).await;
    assert_eq!((status, body["reason"].as_str()), (200, Some("risk_warning_throttled")), "{body}");
    assert_eq!(tab.next_toast().await["notification"]["notification_type"], "risk_warning");

    // A tab reconnecting to the other process replays what it missed.
    let mut late = WsClient::connect(&format!("ws://127.0.0.1:{}/ws?token={token}&since=2", a.port)).await;
    let (replayed, last) = late.until_ready().await;
    assert_eq!(replayed.iter().map(|m| m["sequence_number"].as_i64().unwrap()).collect::<Vec<_>>(), vec![3, 4]);
    assert_eq!(last, 4);

    drop((tab, late));
    assert!(a.terminate().0.success());
    assert!(b.terminate().0.success());
}
