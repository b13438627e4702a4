//! The binary: configuration refusals (exit 2, one line naming the variable), `token`,
//! `migrate`, `vapid-keys`, and a graceful stop on SIGTERM.

use notifyhub::auth::{JwtKeys, Role};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_notifyhub"));
    for (k, _) in std::env::vars() {
        if k.starts_with("NOTIFYHUB_")
            || k == "DATABASE_URL"
            || k.starts_with("SMTP_")
            || k.starts_with("TWILIO_")
            || k.starts_with("VAPID_")
        {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn invalid_settings_stop_with_one_line_and_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    for (var, value) in [
        ("NOTIFYHUB_BIND", "not-an-address"),
        ("DATABASE_URL", "mysql://localhost/x"),
        ("NOTIFYHUB_PII_KEY", "short"),
        ("SMTP_TLS", "maybe"),
        ("NOTIFYHUB_WORKERS", "-3"),
        ("SMTP_HOST", "not a host name"),
    ] {
        let mut cmd = bin();
        cmd.current_dir(dir.path()).env("NOTIFYHUB_DATA_DIR", dir.path()).env(var, value);
        if var == "SMTP_TLS" {
            cmd.env("SMTP_HOST", "localhost");
        }
        let out = cmd.arg("serve").output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(var), "{stderr}");
        assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{stderr}");
    }
}

#[test]
fn the_allocator_is_jemalloc_tuned_by_the_documented_variable() {
    // README (Configuration) names `_RJEM_MALLOC_CONF`; jemalloc reads it at start and,
    // with `stats_print`, reports itself at exit.
    let out = bin().arg("--version").env("_RJEM_MALLOC_CONF", "stats_print:true").output().unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Begin jemalloc statistics"), "{stderr}");
}

#[test]
fn token_prints_a_jwt_signed_with_the_configured_secret() {
    let dir = tempfile::tempdir().unwrap();
    let user = uuid::Uuid::new_v4();
    let out = bin()
        .current_dir(dir.path())
        .env("NOTIFYHUB_DATA_DIR", dir.path())
        .env("NOTIFYHUB_JWT_SECRET", "cli-secret-0123456789abcdef")
        .args(["token", "--user", &user.to_string(), "--role", "admin", "--ttl", "2h"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap();
    let keys = JwtKeys::new("cli-secret-0123456789abcdef");
    assert_eq!(keys.verify(token.trim()).unwrap(), (user, Role::Admin));

    // Without a configured secret the generated one (kept in the data dir) is used,
    // and stays the same between runs.
    let t1 = bin()
        .current_dir(dir.path())
        .env("NOTIFYHUB_DATA_DIR", dir.path())
        .args(["token", "--user", &user.to_string()])
        .output()
        .unwrap();
    let secret = std::fs::read_to_string(dir.path().join("secrets/jwt_secret")).unwrap();
    let keys = JwtKeys::new(secret.trim());
    assert_eq!(keys.verify(String::from_utf8(t1.stdout).unwrap().trim()).unwrap(), (user, Role::User));

    let bad = bin()
        .current_dir(dir.path())
        .env("NOTIFYHUB_DATA_DIR", dir.path())
        .args(["token", "--role", "root"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn migrate_and_vapid_keys() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin().current_dir(dir.path()).env("NOTIFYHUB_DATA_DIR", dir.path()).arg("migrate").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("7 migration(s) applied"));
    let again = bin().current_dir(dir.path()).env("NOTIFYHUB_DATA_DIR", dir.path()).arg("migrate").output().unwrap();
    assert!(String::from_utf8_lossy(&again.stdout).contains("0 migration(s) applied"));
    assert!(dir.path().join("notifyhub.db").exists());

    let out = bin().arg("vapid-keys").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let private = text.lines().find_map(|l| l.strip_prefix("VAPID_PRIVATE_KEY=")).unwrap();
    assert!(notifyhub::vapid::public_key_from_private(private).is_ok());
}

#[test]
fn sigterm_stops_the_hub_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let hub = crate::helpers::HubProcess::start(dir.path(), Vec::<(&str, &str)>::new());
    assert!(std::net::TcpStream::connect(("127.0.0.1", hub.port)).is_ok());
    let (exit, logs) = hub.terminate();
    assert!(exit.success(), "{exit:?}");
    assert!(logs.contains("notifyhub stopped"), "{logs}");
}

#[test]
fn a_second_hub_on_the_same_sqlite_file_is_refused_with_a_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        bin()
            .current_dir(dir.path())
            .env("NOTIFYHUB_DATA_DIR", dir.path())
            .env("NOTIFYHUB_BIND", "127.0.0.1:0")
            .env("NOTIFYHUB_WORKERS", "1")
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut first = start();
    let stderr = first.stderr.take().unwrap();
    let listening = BufReader::new(stderr).lines().map_while(Result::ok).any(|l| l.contains("listening on"));
    assert!(listening);
    let second = start().wait_with_output().unwrap();
    assert!(!second.status.success());
    let text = String::from_utf8_lossy(&second.stderr);
    assert!(text.contains("SQLite is single-node"), "{text}");
    first.kill().unwrap();
    first.wait().unwrap();
}

/// The built UI from `NOTIFYHUB_UI_DIR`: its files, the app shell for client-side routes
/// (what a push notification's click opens), and API paths still answered as the API.
/// Without a built UI, the built-in page.
#[actix_web::test]
async fn the_built_ui_is_served_and_client_routes_get_the_app_shell() {
    let dir = tempfile::tempdir().unwrap();
    let ui = dir.path().join("ui");
    std::fs::create_dir_all(ui.join("assets")).unwrap();
    std::fs::write(ui.join("index.html"), "<!doctype html><title>app shell</title>").unwrap();
    std::fs::write(ui.join("assets/app.js"), "console.log('app')").unwrap();
    std::fs::write(ui.join("sw.js"), "self.addEventListener('push', () => {})").unwrap();
    let hub = crate::helpers::HubProcess::start(dir.path(), [("NOTIFYHUB_UI_DIR", ui.as_os_str())]);
    let client = reqwest::Client::new();
    let get = |path: &str| client.get(format!("{}{path}", hub.base())).send();
    for path in ["/", "/preferences", "/notifications/0190a0b1-0000-7000-8000-000000000001"] {
        let res = get(path).await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/html"), "{path}");
        assert!(res.text().await.unwrap().contains("app shell"), "{path}");
    }
    assert_eq!(get("/assets/app.js").await.unwrap().text().await.unwrap(), "console.log('app')");
    assert_eq!(get("/sw.js").await.unwrap().status(), 200);
    let api = get("/api/v1/no-such-route").await.unwrap();
    assert_eq!(api.status(), 404);
    let body: serde_json::Value = api.json().await.unwrap();
    assert_eq!(body["error"]["code"], "NOT_FOUND");
    let (exit, _) = hub.terminate();
    assert!(exit.success());

    let bare = tempfile::tempdir().unwrap();
    let hub = crate::helpers::HubProcess::start(bare.path(), [("NOTIFYHUB_UI_DIR", bare.path().join("absent"))]);
    let page = reqwest::get(format!("{}/", hub.base())).await.unwrap().text().await.unwrap();
    assert!(page.contains("<h1>notifyhub</h1>"), "{page}");
    hub.terminate();
}

/// An alert for the admins before any admin is known reaches nobody: the bridge is told
/// `no_admins` and the operator finds it in the log; once an admin has used their token,
/// the next alert is theirs.
#[actix_web::test]
async fn an_alert_for_admins_before_any_admin_is_known_is_logged() {
    use crate::helpers::{HubProcess, JWT_SECRET, SERVICE_TOKEN};
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path(), Vec::<(&str, &str)>::new());
    let client = reqwest::Client::new();
    let alert = |error_type: &str| {
        client
            .post(format!("{}/api/v1/events", hub.base()))
            .bearer_auth(SERVICE_TOKEN)
            .json(&serde_json::json!({"type": "system_error", "error": {"error_type": error_type, "message": "feed down"}}))
            .send()
    };
    let res = alert("polygon_api_down").await.unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!((body["status"].as_str(), body["reason"].as_str()), (Some("filtered"), Some("no_admins")));
    let admin = JwtKeys::new(JWT_SECRET).issue(uuid::Uuid::new_v4(), Role::Admin, std::time::Duration::from_secs(600));
    let seen = client.get(format!("{}/api/v1/notifications", hub.base())).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(seen.status(), 200);
    let res = alert("pattern_detection_crash").await.unwrap();
    assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
    let (_, logs) = hub.terminate();
    let warned: Vec<&str> = logs.lines().filter(|l| l.contains("reached nobody")).collect();
    assert_eq!(warned.len(), 1, "{logs}");
    assert!(warned[0].contains("System error: polygon_api_down"), "{}", warned[0]);
}
