//! The hub's own failure: the database link is cut (a TCP proxy between the hub and
//! the private PostgreSQL) and restored.

use crate::bridge::{info_event, signal_event};
use crate::helpers::{
    assert_error, fresh_pg_database, spawn_with_env, test_env, until_metric, Backend, ChaosProxy, SERVICE_TOKEN,
};
use notifyhub::auth::Role;
use serde_json::Value;
use std::sync::Arc;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_answers_503_keeps_sockets_and_tells_admins_when_back() {
    let Some(real_url) = fresh_pg_database().await else { return };
    // Start the hub on an actix system of its own thread, talking to PostgreSQL through the proxy.
    let proxy = ChaosProxy::start(&real_url).await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut env = test_env(Backend::Sqlite, dir.path()).await.unwrap();
    env.insert("DATABASE_URL".into(), proxy.url.clone());
    env.insert("NOTIFYHUB_DB_POOL_SIZE".into(), "4".into());
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let app = spawn_with_env(Backend::Postgres, env, dir).await;
            let _ = tx.send(app);
            std::future::pending::<()>().await;
        });
    });
    let app = rx.await.unwrap();

    let (admin, trader) = (Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(app.get("/api/v1/notifications", &app.token(admin, Role::Admin)).await.status(), 200);
    let mut admin_tab = app.ws_as(admin, Role::Admin, None).await;
    admin_tab.until_ready().await;
    let mut trader_tab = app.ws(trader, None).await;
    trader_tab.until_ready().await;

    proxy.cut();
    // The caller retries the same event (a new signal_event would be another one).
    let event = signal_event(trader, 95.0);
    let send = |key: &'static str| {
        let (app, event) = (&app, &event);
        async move {
            app.client
                .post(format!("{}/api/v1/events", app.address))
                .bearer_auth(SERVICE_TOKEN)
                .header("Idempotency-Key", key)
                .json(event)
                .send()
                .await
                .unwrap()
        }
    };
    assert_error(send("during-outage").await, 503, "SERVICE_UNAVAILABLE").await;
    let ready = app.client.get(format!("{}/readyz", app.address)).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    // Anyone may ask: the answer says what is down, the log says why (addresses and all).
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["error"]["details"]["checks"]["database"]["status"], "down");
    let why = ready["error"]["details"]["checks"]["database"]["error"].as_str().unwrap();
    assert!(why == "unreachable (the hub's log has the cause)" || why == "timed out after 3 s", "{why}");
    until_metric(&app.client, &app.address, "notifyhub_database_up", 0).await;

    proxy.restore();
    until_metric(&app.client, &app.address, "notifyhub_database_up", 1).await;
    // The admins hear about it once the database is back.
    let toast = admin_tab.next_toast().await;
    assert_eq!(toast["notification"]["notification_type"], "system_error");
    assert_eq!(toast["notification"]["metadata"]["error_type"], "database_unreachable");
    // The caller's retry with the same key is stored once; sockets stayed open.
    let retry = send("during-outage").await;
    assert_eq!(retry.status(), 202);
    let first: Value = retry.json().await.unwrap();
    let again: Value = send("during-outage").await.json().await.unwrap();
    assert_eq!(first, again);
    let toast = trader_tab.next_toast().await;
    assert_eq!(toast["sequence_number"], 1);
    app.event(info_event(trader, "after"), 202).await;
    assert_eq!(trader_tab.next_toast().await["sequence_number"], 2);
}
