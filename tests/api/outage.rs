//! The hub's own failure: the database link is cut (a TCP proxy between the hub and
//! the private PostgreSQL) and restored.

use crate::bridge::{info_event, signal_event};
use crate::helpers::{assert_error, fresh_pg_database, spawn_with_env, test_env, Backend, SERVICE_TOKEN};
use notifyhub::auth::Role;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

/// Forwards a local port to PostgreSQL until cut; while cut, every connection is dropped.
struct ChaosProxy {
    port: u16,
    open: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl ChaosProxy {
    async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(true));
        let links: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (o, l) = (open.clone(), links.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                if !o.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                l.lock().unwrap().push(task.abort_handle());
            }
        });
        Self { port, open, links }
    }

    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

async fn metric(app: &crate::helpers::TestApp, line: &str) -> bool {
    let text = app.client.get(format!("{}/metrics", app.address)).send().await.unwrap().text().await.unwrap();
    text.lines().any(|l| l == line)
}

/// Waits (polling the hub's own gauge) until `line` shows in /metrics.
async fn until_metric(app: &crate::helpers::TestApp, line: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !metric(app, line).await {
        assert!(std::time::Instant::now() < deadline, "{line} never showed");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_answers_503_keeps_sockets_and_tells_admins_when_back() {
    let Some(real_url) = fresh_pg_database().await else { return };
    // Start the hub on an actix system of its own thread, talking to PostgreSQL through the proxy.
    let (host_port, db_name) = {
        let rest = real_url.strip_prefix("postgres://postgres@").unwrap();
        let (hp, db) = rest.split_once('/').unwrap();
        (hp.to_string(), db.to_string())
    };
    let proxy = ChaosProxy::start(host_port).await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut env = test_env(Backend::Sqlite, dir.path()).await.unwrap();
    env.insert("DATABASE_URL".into(), format!("postgres://postgres@127.0.0.1:{}/{db_name}", proxy.port));
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
    until_metric(&app, "notifyhub_database_up 0").await;

    proxy.restore();
    until_metric(&app, "notifyhub_database_up 1").await;
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
