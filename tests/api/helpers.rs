//! Spawns the real hub on a random port, on SQLite or on PostgreSQL, with a fresh
//! database per test.

use notifyhub::auth::{JwtKeys, Role};
use notifyhub::clock::{Clock, SystemClock};
use notifyhub::config::{Settings, Source};
use notifyhub::domain::{NewNotification, Notification, NotificationContent, NotificationType, Priority};
use notifyhub::startup::Application;
use notifyhub::state::AppState;
use notifyhub::store::repository::StoreItem;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

/// The JWT secret every test hub uses.
pub const JWT_SECRET: &str = "integration-test-secret-0123456789";
/// A bridge token every test hub accepts.
pub const SERVICE_TOKEN: &str = "service-token-for-tests-0001";

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite in a temp dir.
    Sqlite,
    /// A fresh database on the private PostgreSQL server started by `scripts/test.sh`.
    Postgres,
}

/// A running hub and what a test needs to talk to it.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub address: String,
    /// The port.
    pub port: u16,
    /// HTTP client.
    pub client: reqwest::Client,
    /// Keys to mint tokens.
    pub jwt: JwtKeys,
    /// The hub's shared state (store access).
    pub state: AppState,
    /// Settings it runs with (to restart on the same database).
    pub env: HashMap<String, String>,
    /// The data dir (kept alive for the test's duration).
    pub data_dir: std::sync::Arc<tempfile::TempDir>,
    /// Which backend.
    pub backend: Backend,
    handle: actix_web::dev::ServerHandle,
    running: actix_web::rt::task::JoinHandle<std::io::Result<()>>,
}

fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var("TEST_LOG").is_ok() {
            notifyhub::telemetry::init("debug", std::io::stdout);
        } else {
            notifyhub::telemetry::init("info", std::io::sink);
        }
    });
}

/// The admin URL of the test PostgreSQL server, or `None` to skip (only allowed when
/// `NOTIFYHUB_TEST_REQUIRE_PG` is not set: the test script sets it, so CI cannot skip).
pub fn pg_admin_url() -> Option<String> {
    match std::env::var("NOTIFYHUB_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("NOTIFYHUB_TEST_REQUIRE_PG").is_err(),
                "NOTIFYHUB_TEST_REQUIRE_PG is set but NOTIFYHUB_TEST_PG_URL is not: start PostgreSQL with scripts/test.sh"
            );
            eprintln!("SKIPPED: PostgreSQL test (set NOTIFYHUB_TEST_PG_URL or run scripts/test.sh)");
            None
        }
    }
}

/// Creates an empty database on the test server; returns its URL.
pub async fn fresh_pg_database() -> Option<String> {
    use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
    let admin = pg_admin_url()?;
    let name = format!("nh_test_{}", Uuid::new_v4().simple());
    let mut conn = AsyncPgConnection::establish(&admin).await.expect("connect to test PostgreSQL");
    conn.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create test database");
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    Some(format!("{base}/{name}"))
}

/// Environment for a test hub on `backend` (None when PostgreSQL is skipped).
pub async fn test_env(backend: Backend, data_dir: &std::path::Path) -> Option<HashMap<String, String>> {
    let mut env = HashMap::new();
    env.insert("NOTIFYHUB_BIND".into(), "127.0.0.1:0".into());
    env.insert("NOTIFYHUB_WORKERS".into(), "2".into());
    env.insert("NOTIFYHUB_DATA_DIR".into(), data_dir.display().to_string());
    env.insert("NOTIFYHUB_JWT_SECRET".into(), JWT_SECRET.into());
    env.insert("NOTIFYHUB_SERVICE_TOKENS".into(), SERVICE_TOKEN.into());
    // Dozens of hubs run at once against one PostgreSQL server: keep each one's pool
    // small (16 by default) so that together they stay under its connection limit.
    env.insert("NOTIFYHUB_DB_POOL_SIZE".into(), "4".into());
    if backend == Backend::Postgres {
        env.insert("DATABASE_URL".into(), fresh_pg_database().await?);
    }
    Some(env)
}

/// Starts a hub; `None` when the backend is PostgreSQL and it is skipped.
pub async fn spawn_app(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, &[], Arc::new(SystemClock)).await
}

/// Starts a hub with extra settings and a given clock.
pub async fn spawn_app_with(backend: Backend, overrides: &[(&str, &str)], clock: Arc<dyn Clock>) -> Option<TestApp> {
    let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
    let mut env = test_env(backend, dir.path()).await?;
    for (k, v) in overrides {
        env.insert(k.to_string(), v.to_string());
    }
    Some(spawn_with_clock(backend, env, dir, clock).await)
}

/// Starts a hub with explicit settings (restarts reuse a previous app's).
pub async fn spawn_with_env(
    backend: Backend,
    env: HashMap<String, String>,
    data_dir: std::sync::Arc<tempfile::TempDir>,
) -> TestApp {
    spawn_with_clock(backend, env, data_dir, Arc::new(SystemClock)).await
}

/// Starts a hub with explicit settings and clock.
pub async fn spawn_with_clock(
    backend: Backend,
    env: HashMap<String, String>,
    data_dir: Arc<tempfile::TempDir>,
    clock: Arc<dyn Clock>,
) -> TestApp {
    init_logs();
    let settings = Settings::load(&Source::new(env.clone()).expect("source")).expect("settings");
    let app = Application::build_with_clock(settings, clock).await.expect("hub starts");
    let port = app.port();
    let state = app.state().clone();
    let handle = app.handle();
    let running = actix_web::rt::spawn(app.run_until_stopped());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        client: reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("client"),
        jwt: JwtKeys::new(JWT_SECRET),
        state,
        env,
        data_dir,
        backend,
        handle,
        running,
    }
}

/// Sends `request` and reads its JSON answer (any failure fails the test).
pub async fn json_of(request: reqwest::RequestBuilder) -> serde_json::Value {
    request.send().await.unwrap().json().await.unwrap()
}

impl TestApp {
    /// The value of a counter in /metrics.
    pub async fn counter(&self, name: &str) -> u64 {
        metric(&self.client, &self.address, name).await
    }

    /// Waits (15 s at most) until a gauge in /metrics reads `value` (see [`until_metric`]).
    pub async fn until_gauge(&self, name: &str, value: u64) {
        until_metric(&self.client, &self.address, name, value).await
    }

    /// A token for `user` with `role`.
    pub fn token(&self, user: Uuid, role: Role) -> String {
        self.jwt.issue(user, role, Duration::from_secs(3600))
    }

    /// GET with a bearer token.
    pub async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.client.get(format!("{}{path}", self.address)).bearer_auth(token).send().await.expect("GET")
    }

    /// POST JSON with a bearer token.
    pub async fn post(&self, path: &str, token: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client.post(format!("{}{path}", self.address)).bearer_auth(token).json(body).send().await.expect("POST")
    }

    /// PATCH with a bearer token.
    pub async fn patch(&self, path: &str, token: &str) -> reqwest::Response {
        self.client.patch(format!("{}{path}", self.address)).bearer_auth(token).send().await.expect("PATCH")
    }

    /// DELETE with a bearer token.
    pub async fn delete(&self, path: &str, token: &str) -> reqwest::Response {
        self.client.delete(format!("{}{path}", self.address)).bearer_auth(token).send().await.expect("DELETE")
    }

    /// Posts an event to the bridge with the service token.
    pub async fn post_event(&self, body: &serde_json::Value) -> reqwest::Response {
        self.post("/api/v1/events", SERVICE_TOKEN, body).await
    }

    /// POSTs `chunks` as one body in chunked transfer encoding (no Content-Length), over
    /// a connection of its own; returns the status and the JSON answer.
    pub async fn post_chunked(&self, path: &str, token: &str, chunks: &[&str]) -> (u16, serde_json::Value) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let host = self.address.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(host).await.expect("connect");
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("write head");
        for chunk in chunks {
            request = format!("{:x}\r\n{chunk}\r\n", chunk.len());
            // One write per chunk, flushed, so the server reads them apart.
            stream.write_all(request.as_bytes()).await.expect("write chunk");
            stream.flush().await.expect("flush");
        }
        // The server may answer (413) and close before the last chunk; that is fine.
        let _ = stream.write_all(b"0\r\n\r\n").await;
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer);
        let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status line");
        let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
        (status, serde_json::from_str(body).unwrap_or(serde_json::Value::Null))
    }

    /// Posts an event and returns the JSON answer, asserting the status.
    pub async fn event(&self, body: serde_json::Value, status: u16) -> serde_json::Value {
        let res = self.post_event(&body).await;
        assert_eq!(res.status().as_u16(), status, "event {body}");
        res.json().await.expect("bridge answers JSON")
    }

    /// Opens a dashboard socket for `user`.
    pub async fn ws(&self, user: Uuid, since: Option<i64>) -> WsClient {
        self.ws_as(user, Role::User, since).await
    }

    /// Opens a dashboard socket for `user` signed in with `role`.
    pub async fn ws_as(&self, user: Uuid, role: Role, since: Option<i64>) -> WsClient {
        let token = self.token(user, role);
        let mut url = format!("ws://127.0.0.1:{}/ws?token={token}", self.port);
        if let Some(s) = since {
            url.push_str(&format!("&since={s}"));
        }
        WsClient::connect(&url).await
    }

    /// Stores notifications directly through the persistence actor.
    pub async fn store(&self, items: Vec<NewNotification>) -> Vec<Notification> {
        let pending = items
            .into_iter()
            .map(|notification| StoreItem { notification, deliveries: Vec::new(), toast: true })
            .collect();
        self.state
            .store
            .store_notifications(pending)
            .await
            .expect("store")
            .into_iter()
            .map(|s| s.notification())
            .collect()
    }

    /// Stops the server and waits until the persistence actor flushed.
    pub async fn stop(self) -> (HashMap<String, String>, std::sync::Arc<tempfile::TempDir>) {
        self.handle.stop(true).await;
        // Wait for the hub to finish (flush, release the SQLite lock) before a restart.
        let _ = self.running.await;
        sqlite_lock_released(&self.env).await;
        (self.env, self.data_dir)
    }
}

/// Waits until the single-node lock of the SQLite hub configured by `env` is free. The
/// stopped hub has closed it, but a process the suite started meanwhile on another
/// thread holds a copy of every open descriptor between its fork and its exec, the
/// lock's too, and a hub restarted in that moment would be refused as a second process.
async fn sqlite_lock_released(env: &HashMap<String, String>) {
    let settings = Settings::load(&Source::new(env.clone()).expect("source")).expect("settings");
    let notifyhub::config::DatabaseUrl::Sqlite(db) = settings.database_url else { return };
    let lock = notifyhub::startup::sqlite_lock_path(&db);
    let Ok(file) = std::fs::OpenOptions::new().write(true).open(lock) else { return };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while let Err(std::fs::TryLockError::WouldBlock) = file.try_lock() {
        assert!(std::time::Instant::now() < deadline, "the stopped hub's SQLite lock was never released");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The real binary, `notifyhub serve`, on a port of its own (read from its start line),
/// with stdout (its JSON logs) collected.
pub struct HubProcess {
    /// The process.
    pub child: std::process::Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// What it logged so far.
    pub logs: Arc<Mutex<String>>,
    /// Reads its stdout into `logs` until the pipe closes.
    reader: std::thread::JoinHandle<()>,
}

impl HubProcess {
    /// Starts the hub in `dir` with one worker, the test secrets and `env`.
    pub fn start<K: AsRef<std::ffi::OsStr>, V: AsRef<std::ffi::OsStr>>(
        dir: &std::path::Path,
        env: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        use std::io::{BufRead, Read};
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_notifyhub"));
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("NOTIFYHUB_DATA_DIR", dir)
            .env("NOTIFYHUB_BIND", "127.0.0.1:0")
            .env("NOTIFYHUB_WORKERS", "1")
            .env("NOTIFYHUB_JWT_SECRET", JWT_SECRET)
            .env("NOTIFYHUB_SERVICE_TOKENS", SERVICE_TOKEN)
            .env("RUST_LOG", "info")
            // Under scripts/coverage.sh the hub's own profile is counted too.
            .envs(std::env::var_os("LLVM_PROFILE_FILE").map(|v| ("LLVM_PROFILE_FILE", v)))
            .envs(env)
            .current_dir(dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let logs = Arc::new(Mutex::new(String::new()));
        let mut stdout = child.stdout.take().unwrap();
        let sink = logs.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let stderr = child.stderr.take().unwrap();
        let mut port = None;
        for line in std::io::BufReader::new(stderr).lines() {
            let line = line.unwrap();
            if let Some(rest) = line.strip_prefix("notifyhub: listening on http://127.0.0.1:") {
                port = rest.trim_end_matches('/').parse().ok();
                break;
            }
        }
        Self { child, port: port.expect("the hub starts"), logs, reader }
    }

    /// Its base URL.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGTERM, then its exit status and everything it logged; panics unless it stops
    /// within 20 s.
    pub fn terminate(self) -> (std::process::ExitStatus, String) {
        self.stop_with("-TERM")
    }

    /// SIGKILL, then everything it logged.
    pub fn kill(self) -> String {
        self.stop_with("-KILL").1
    }

    fn stop_with(self, signal: &str) -> (std::process::ExitStatus, String) {
        let Self { mut child, logs, reader, .. } = self;
        let pid = child.id().to_string();
        assert!(std::process::Command::new("kill").args([signal, &pid]).status().unwrap().success());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let status = rx.recv_timeout(Duration::from_secs(20)).expect("the hub stops within 20 s").unwrap();
        reader.join().unwrap();
        let logged = logs.lock().unwrap().clone();
        (status, logged)
    }
}

/// The value of a counter or gauge in the /metrics of the hub at `base`.
pub async fn metric(client: &reqwest::Client, base: &str, name: &str) -> u64 {
    let text = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    let prefix = format!("{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} is not in /metrics"))
}

/// Waits (15 s at most) until a gauge in /metrics of the hub at `base` reads `value`:
/// for state another process changes, which the hub exposes there and nowhere else.
pub async fn until_metric(client: &reqwest::Client, base: &str, name: &str, value: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let now = metric(client, base, name).await;
        if now == value {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{name} stayed at {now}, not {value}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A dashboard socket, as a browser tab would hold it.
pub struct WsClient {
    stream: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
}

impl WsClient {
    /// Opens a socket at `url` (`ws://…/ws?token=…`).
    pub async fn connect(url: &str) -> Self {
        let (stream, _) = tokio_tungstenite::connect_async(url).await.expect("websocket connects");
        WsClient { stream }
    }

    /// The next JSON message (control frames skipped); panics after 15 s.
    pub async fn next_json(&mut self) -> serde_json::Value {
        use futures_util::StreamExt;
        // One deadline for the whole wait: the server's pings arrive more often than
        // that, and a wait per frame would never end while they do.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let msg = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .expect("a message within 15 s")
                .expect("socket open")
                .expect("frame");
            match msg {
                tokio_tungstenite::tungstenite::Message::Text(t) => {
                    return serde_json::from_str(t.as_str()).expect("JSON frame");
                }
                tokio_tungstenite::tungstenite::Message::Close(c) => panic!("socket closed: {c:?}"),
                _ => continue,
            }
        }
    }

    /// Messages up to and including `ready`; returns them and the ready's last number.
    pub async fn until_ready(&mut self) -> (Vec<serde_json::Value>, i64) {
        let mut before = Vec::new();
        loop {
            let m = self.next_json().await;
            if m["type"] == "ready" {
                return (before, m["last_sequence_number"].as_i64().expect("number"));
            }
            before.push(m);
        }
    }

    /// Closes the socket as a tab closing would, and waits for the server's answer.
    pub async fn close(mut self) {
        use futures_util::StreamExt;
        self.stream.close(None).await.expect("close frame sent");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while let Ok(Some(Ok(_))) = tokio::time::timeout_at(deadline, self.stream.next()).await {}
    }

    /// The next `notification_toast`, asserting nothing else comes first.
    pub async fn next_toast(&mut self) -> serde_json::Value {
        let m = self.next_json().await;
        assert_eq!(m["type"], "notification_toast", "{m}");
        m
    }
}

/// A notification for `user`.
pub fn new_notification(user: Uuid, kind: NotificationType, title: &str) -> NewNotification {
    NewNotification {
        id: Uuid::new_v4(),
        user_id: user,
        content: std::sync::Arc::new(NotificationContent {
            notification_type: kind,
            priority: Priority::Info,
            title: title.to_string(),
            message: format!("{title} message"),
            metadata: notifyhub::domain::metadata::Metadata::from_value(&serde_json::json!({"source": "test"})),
            created_at: chrono::Utc::now(),
        }),
    }
}

/// Asserts the contract's error shape and returns the body.
pub async fn assert_error(res: reqwest::Response, status: u16, code: &str) -> serde_json::Value {
    assert_eq!(res.status().as_u16(), status, "unexpected status");
    let header_id = res
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .expect("X-Request-Id header");
    let body: serde_json::Value = res.json().await.expect("JSON error body");
    let err = &body["error"];
    assert_eq!(err["code"], code, "{body}");
    assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert!(err["details"].is_object(), "{body}");
    assert!(err["timestamp"].as_str().is_some(), "{body}");
    assert_eq!(err["request_id"], header_id.as_str(), "request_id must match the header: {body}");
    body
}

/// Generates one test per backend: `mod sqlite { … }` and `mod postgres { … }`.
#[macro_export]
macro_rules! on_both_backends {
    ($(async fn $name:ident($app:ident) $body:block)*) => {
        mod sqlite {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[actix_web::test]
                async fn $name() {
                    let $app = $crate::helpers::spawn_app($crate::helpers::Backend::Sqlite).await.expect("sqlite app");
                    $body
                }
            )*
        }
        mod postgres {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[actix_web::test]
                async fn $name() {
                    let Some($app) = $crate::helpers::spawn_app($crate::helpers::Backend::Postgres).await else { return };
                    $body
                }
            )*
        }
    };
}

/// A `notifications` row as stored, every column.
pub struct StoredRow {
    pub user_id: String,
    pub sequence_number: i64,
    pub notification_type: String,
    pub title: String,
    pub metadata: serde_json::Value,
    pub read: bool,
    pub toast: bool,
    pub created_at: chrono::NaiveDateTime,
}

/// The stored rows of these notifications, by id, read straight from the table.
pub async fn notification_rows(app: &TestApp, ids: Vec<String>) -> HashMap<String, StoredRow> {
    app.state
        .store
        .call(move |db| async move {
            use diesel::prelude::*;
            use diesel_async::RunQueryDsl;
            use notifyhub::store::json::Json;
            use notifyhub::store::schema::notifications as n;
            type Row = (String, String, i64, String, String, Json, bool, bool, chrono::NaiveDateTime);
            let rows: Vec<Row> = notifyhub::with_conn!(&db, conn => {
                n::table
                    .filter(n::id.eq_any(&ids))
                    .select((n::id, n::user_id, n::sequence_number, n::notification_type, n::title, n::metadata, n::read, n::toast, n::created_at))
                    .load(conn)
                    .await?
            });
            Ok(rows
                .into_iter()
                .map(|(id, user_id, sequence_number, notification_type, title, metadata, read, toast, created_at)| {
                    (id, StoredRow { user_id, sequence_number, notification_type, title, metadata: metadata.0, read, toast, created_at })
                })
                .collect())
        })
        .await
        .expect("rows read back")
}

/// `t` as the REST API writes times: RFC 3339, microseconds.
pub fn rfc3339_micros(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Forwards a local port to PostgreSQL until cut; while cut, every connection is dropped.
pub struct ChaosProxy {
    /// The database's URL through the proxy.
    pub url: String,
    open: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl ChaosProxy {
    /// A proxy to the database at `url` (a URL of [`fresh_pg_database`]).
    pub async fn start(url: &str) -> Self {
        let (target, db_name) =
            url.strip_prefix("postgres://postgres@").and_then(|r| r.split_once('/')).expect("a test database URL");
        let (target, db_name) = (target.to_string(), db_name.to_string());
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
        Self { url: format!("postgres://postgres@127.0.0.1:{port}/{db_name}"), open, links }
    }

    /// Drops every connection through the proxy, and refuses new ones until restored.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}
