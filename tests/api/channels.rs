//! Delivery channels against real peers on loopback: SMTP (aiosmtpd), a Twilio
//! stand-in, a push-service stand-in that verifies VAPID and decrypts; retries with an
//! injected clock, the breaker's three states, rate limits across a restart, 410
//! cleanup, the SSRF guard and every test-endpoint answer.

use crate::bridge::{exit_event, signal_event};
use crate::helpers::{assert_error, spawn_app_with, spawn_with_clock, Backend, TestApp};
use crate::standins::{BrowserKeys, PushStandIn, SmtpSink, TwilioStandIn, TWILIO_FROM};
use notifyhub::actors::channel::Wake;
use notifyhub::auth::Role;
use notifyhub::clock::{Clock, ManualClock, SystemClock};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

async fn set_prefs(app: &TestApp, user: Uuid, body: Value) {
    let res = app.post("/api/v1/notifications/preferences", &app.token(user, Role::User), &body).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
}

async fn deliveries(app: &TestApp, user: Uuid, id: &str) -> Vec<Value> {
    let res = app.get(&format!("/api/v1/notifications/{id}/deliveries"), &app.token(user, Role::User)).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    body["data"].as_array().unwrap().clone()
}

/// Waits until the `channel` delivery of notification `id` reaches `status`.
async fn until_delivery(app: &TestApp, user: Uuid, id: &str, channel: &str, status: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let rows = deliveries(app, user, id).await;
        if let Some(row) = rows.iter().find(|r| r["channel"] == channel && r["status"] == status) {
            return row.clone();
        }
        assert!(std::time::Instant::now() < deadline, "{channel} never reached {status}: {rows:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn total_count(app: &TestApp, token: &str) -> i64 {
    let list: Value = app.get("/api/v1/notifications", token).await.json().await.unwrap();
    list["pagination"]["total_count"].as_i64().unwrap()
}

fn id_of(answer: &Value) -> String {
    answer["notifications"][0]["notification_id"].as_str().unwrap().to_string()
}

async fn app_with(backend: Backend, env: Vec<(&'static str, String)>, clock: Arc<dyn Clock>) -> Option<TestApp> {
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    spawn_app_with(backend, &refs, clock).await
}

/// A hub on SQLite that sends its email through `smtp`.
async fn app_sending_to(smtp: &SmtpSink) -> TestApp {
    app_with(Backend::Sqlite, smtp.env(), Arc::new(SystemClock)).await.unwrap()
}

async fn email_over_smtp(backend: Backend) {
    let smtp = SmtpSink::start();
    let mut env = smtp.env();
    env.push(("SMTP_FROM_EMAIL", "alerts@notifyhub.test".into()));
    let Some(app) = app_with(backend, env, Arc::new(SystemClock)).await else { return };
    let user = Uuid::new_v4();
    set_prefs(&app, user, json!({"email_address": "trader@example.com"})).await;
    let answer = app.event(signal_event(user, 87.0), 202).await;
    assert_eq!(answer["notifications"][0]["channels"], json!(["toast", "email"]));
    let mail = &smtp.messages(1).await[0];
    assert!(mail.contains("X-Envelope-To: trader@example.com"), "{mail}");
    assert!(mail.contains("From: alerts@notifyhub.test"), "{mail}");
    assert!(mail.contains("multipart/alternative"), "{mail}");
    assert!(mail.contains("text/plain") && mail.contains("text/html"), "{mail}");
    assert!(mail.contains("AAPL Spring 87%") || mail.contains("=?utf-8?"), "subject: {mail}");
    let row = until_delivery(&app, user, &id_of(&answer), "email", "sent").await;
    assert_eq!(row["attempts"], 1);
    // The test endpoint sends through the same SMTP server.
    let res = app.post("/api/v1/notifications/test/email", &app.token(user, Role::User), &json!({})).await;
    assert_eq!(res.status(), 202);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body, json!({"success": true, "message": "Test email sent to tra***@example.com"}));
    let mails = smtp.messages(2).await;
    assert!(mails.iter().any(|m| m.contains("notifyhub test email")));
}

#[actix_web::test]
async fn an_address_at_an_international_domain_goes_out_with_the_domain_in_ascii() {
    let smtp = SmtpSink::start();
    let app = app_sending_to(&smtp).await;
    let user = Uuid::new_v4();
    set_prefs(&app, user, json!({"email_address": "trader@bücher.example"})).await;
    let prefs: Value =
        app.get("/api/v1/notifications/preferences", &app.token(user, Role::User)).await.json().await.unwrap();
    assert_eq!(prefs["email_address"], "trader@bücher.example", "kept as the trader wrote it");
    let answer = app.event(signal_event(user, 87.0), 202).await;
    let mail = &smtp.messages(1).await[0];
    // Any server takes the ASCII form; one without SMTPUTF8 refuses the UTF-8 one.
    assert!(mail.contains("X-Envelope-To: trader@xn--bcher-kva.example"), "{mail}");
    assert!(mail.contains("To: trader@xn--bcher-kva.example"), "{mail}");
    until_delivery(&app, user, &id_of(&answer), "email", "sent").await;
}

/// An address with international characters before the @, saved before the hub refused
/// them, still loads; its emails fail at once with the reason, not at the server, and the
/// other channels go on.
#[actix_web::test]
async fn an_address_saved_with_an_international_local_part_fails_its_emails_with_the_reason() {
    let smtp = SmtpSink::start();
    let app = app_sending_to(&smtp).await;
    let user = Uuid::new_v4();
    // Saved as an older hub saved it: the document written straight to the store.
    let prefs: notifyhub::domain::NotificationPreferences = serde_json::from_value(json!({
        "user_id": user, "email_enabled": true, "email_address": "jörg@example.com", "sms_enabled": false,
        "push_enabled": false, "sms_phone_number": null, "min_confidence_threshold": 80,
        "quiet_hours": {"enabled": false, "start_time": "22:00", "end_time": "07:00", "timezone": "UTC"},
        "channel_preferences": {"critical_channels": ["toast", "email"], "warning_channels": ["toast", "email"], "info_channels": ["toast"]}
    }))
    .unwrap();
    let doc = notifyhub::store::preferences_doc::encode(&prefs, &app.state.pii);
    let saved = app
        .state
        .store
        .call(move |db| async move {
            notifyhub::store::repository::insert_user_if_absent(&db, user).await?;
            notifyhub::store::repository::save_preferences_if(&db, user, doc, chrono::Utc::now(), None).await
        })
        .await;
    assert!(saved.unwrap());
    let got: Value =
        app.get("/api/v1/notifications/preferences", &app.token(user, Role::User)).await.json().await.unwrap();
    assert_eq!(got["email_address"], "jörg@example.com", "still loads");
    let mut ws = app.ws(user, None).await;
    ws.until_ready().await;
    let answer = app.event(signal_event(user, 87.0), 202).await;
    assert_eq!(ws.next_toast().await["notification"]["id"], id_of(&answer), "the toast goes on");
    let row = until_delivery(&app, user, &id_of(&answer), "email", "failed").await;
    let reason = row["reason"].as_str().unwrap();
    assert!(reason.contains("jör***@example.com") && reason.contains("only ASCII characters before the @"), "{reason}");
    assert!(!reason.contains("jörg@"), "{reason}");
    assert_eq!(row["attempts"], 1, "not retried: {row}");
}

#[actix_web::test]
async fn a_refused_mailbox_fails_the_email_and_the_server_reply_is_stored_masked() {
    let smtp = SmtpSink::start();
    let app = app_sending_to(&smtp).await;
    // The server quotes the address as it got it: as written, in capitals, or with the
    // domain in ASCII (as an international domain is sent).
    for (address, masked, hidden) in [
        ("rejected.trader@example.com", "rej***@example.com", "rejected.trader@"),
        ("reject-shouting.trader@example.com", "rej***@example.com", "REJECT-SHOUTING.TRADER@"),
        ("rejected.trader@bücher.example", "rej***@bücher.example", "rejected.trader@"),
    ] {
        let user = Uuid::new_v4();
        set_prefs(&app, user, json!({"email_address": address})).await;
        let answer = app.event(signal_event(user, 87.0), 202).await;
        let row = until_delivery(&app, user, &id_of(&answer), "email", "failed").await;
        for field in ["reason", "last_error"] {
            let text = row[field].as_str().unwrap();
            assert!(text.contains("550") && text.contains(masked), "{address} {field}: {text}");
            assert!(!text.contains(hidden), "{address} {field}: {text}");
        }
    }
}

#[actix_web::test]
async fn email_goes_out_over_real_smtp_as_multipart_on_sqlite() {
    email_over_smtp(Backend::Sqlite).await;
}

#[actix_web::test]
async fn email_goes_out_over_real_smtp_as_multipart_on_postgres() {
    email_over_smtp(Backend::Postgres).await;
}

#[actix_web::test]
async fn an_smtp_server_that_refuses_connections_leaves_the_email_retrying_and_the_toast_on_time() {
    // Nothing listens on this port (it was free a moment ago, and nothing here binds it).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let env = vec![("SMTP_HOST", "127.0.0.1".into()), ("SMTP_PORT", port.to_string()), ("SMTP_TLS", "none".into())];
    let app = app_with(Backend::Sqlite, env, Arc::new(ManualClock::default())).await.unwrap();
    let user = Uuid::new_v4();
    set_prefs(&app, user, json!({"email_address": "trader@example.com"})).await;
    let mut tab = app.ws(user, None).await;
    tab.until_ready().await;
    let answer = app.event(signal_event(user, 87.0), 202).await;
    assert_eq!(answer["notifications"][0]["channels"], json!(["toast", "email"]));
    assert_eq!(tab.next_toast().await["notification"]["id"], answer["notifications"][0]["notification_id"]);
    let row = until_delivery(&app, user, &id_of(&answer), "email", "retrying").await;
    assert_eq!(row["attempts"], 1);
    assert!(row["last_error"].as_str().unwrap().starts_with("smtp: "), "{row}");
}

#[actix_web::test]
async fn an_unwell_smtp_server_is_retried_and_the_email_goes_out_once_it_is_back() {
    let mut smtp = SmtpSink::start_down();
    let env = smtp.env();
    let clock = Arc::new(ManualClock::default());
    let app = app_with(Backend::Sqlite, env, clock.clone()).await.unwrap();
    let user = Uuid::new_v4();
    set_prefs(&app, user, json!({"email_address": "trader@example.com"})).await;
    let answer = app.event(signal_event(user, 87.0), 202).await;
    let id = id_of(&answer);
    let row = until_delivery(&app, user, &id, "email", "retrying").await;
    assert_eq!(row["attempts"], 1);
    assert!(row["last_error"].as_str().unwrap().contains("421"), "{row}");
    // The server is well again: the retry after 1 s delivers.
    smtp.come_up();
    clock.advance(chrono::Duration::seconds(1));
    app.state.channels.email.do_send(Wake);
    assert!(smtp.messages(1).await[0].contains("X-Envelope-To: trader@example.com"));
    let row = until_delivery(&app, user, &id, "email", "sent").await;
    assert_eq!(row["attempts"], 2);
}

#[actix_web::test]
async fn refused_smtp_credentials_count_against_the_provider_and_the_password_is_never_shown() {
    let smtp = SmtpSink::start_refusing_logins();
    let password = "a-rotated-password-0123456789";
    let mut env = smtp.env();
    env.extend([("SMTP_USER", "alerts".into()), ("SMTP_PASSWORD", password.into())]);
    let app = app_with(Backend::Sqlite, env, Arc::new(SystemClock)).await.unwrap();
    let user = Uuid::new_v4();
    set_prefs(&app, user, json!({"email_address": "trader@example.com"})).await;
    let answer = app.event(signal_event(user, 87.0), 202).await;
    // Retried (a transient failure of the provider, which the breaker counts), not failed
    // as if this one address were at fault.
    let row = until_delivery(&app, user, &id_of(&answer), "email", "retrying").await;
    let error = row["last_error"].as_str().unwrap();
    assert!(error.contains("535") && error.contains("check SMTP_USER/SMTP_PASSWORD"), "{error}");
    assert!(!error.contains(password), "{error}");
    // Whoever pressed "Send test email" is told it did not go, not the server's reply
    // or the operator's settings.
    let res = app.post("/api/v1/notifications/test/email", &app.token(user, Role::User), &json!({})).await;
    let body = assert_error(res, 503, "PROVIDER_UNAVAILABLE").await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("did not take the message"), "{body}");
    assert!(!message.contains("535") && !message.contains("SMTP_USER") && !message.contains(password), "{body}");
}

#[actix_web::test]
async fn failed_test_messages_never_open_the_circuit_for_everyone() {
    let (mut twilio, _clock, app) = hub_with_twilio_failing_five_times().await;
    twilio.script(&[500, 500, 500, 500, 500, 500]);
    let user = Uuid::new_v4();
    set_prefs(&app, user, json!({"sms_enabled": true, "sms_phone_number": "+12345678901"})).await;
    let token = app.token(user, Role::User);
    // One trader pressing "Send test SMS" again and again against a failing provider…
    for _ in 0..6 {
        let res = app.post("/api/v1/notifications/test/sms", &token, &json!({})).await;
        assert_error(res, 503, "PROVIDER_UNAVAILABLE").await;
        twilio.next().await;
    }
    until_metric(&app, "notifyhub_channel_circuit_state{channel=\"sms\"} 0").await;
    // …leaves the channel open to everyone's deliveries.
    let other = Uuid::new_v4();
    set_prefs(&app, other, json!({"sms_enabled": true, "sms_phone_number": "+447911123456"})).await;
    let answer = app.event(exit_event(other), 202).await;
    assert_eq!(twilio.next().await.to, "+447911123456");
    until_delivery(&app, other, &id_of(&answer), "sms", "retrying").await;
}

#[actix_web::test]
async fn sms_goes_through_twilio_and_an_invalid_number_is_final() {
    let mut twilio = TwilioStandIn::start().await;
    let app = app_with(Backend::Sqlite, twilio.env(), Arc::new(SystemClock)).await.unwrap();
    let user = Uuid::new_v4();
    set_prefs(&app, user, json!({"sms_enabled": true, "sms_phone_number": "+12345678901"})).await;
    let answer = app.event(exit_event(user), 202).await;
    assert_eq!(answer["notifications"][0]["channels"], json!(["toast", "sms"]));
    let req = twilio.next().await;
    assert_eq!(req.to, "+12345678901");
    assert_eq!(req.from, TWILIO_FROM);
    assert!(req.body.starts_with("notifyhub: Emergency exit: TSLA"), "{}", req.body);
    until_delivery(&app, user, &id_of(&answer), "sms", "sent").await;

    twilio.script(&[400]);
    let answer = app.event(exit_event(user), 202).await;
    twilio.next().await;
    let row = until_delivery(&app, user, &id_of(&answer), "sms", "failed").await;
    assert!(row["reason"].as_str().unwrap().contains("21211"), "{row}");
    assert_eq!(row["attempts"], 1, "a final refusal is not retried");
    // Twilio's message quotes the number: it is stored masked, as the logs have it.
    for field in ["reason", "last_error"] {
        let text = row[field].as_str().unwrap();
        assert!(text.contains("+1234***8901") && !text.contains("+12345678901"), "{field}: {text}");
    }
}

#[actix_web::test]
async fn refused_twilio_credentials_count_against_the_provider() {
    let mut twilio = TwilioStandIn::start().await;
    let mut env = twilio.env();
    for (name, value) in &mut env {
        if *name == "TWILIO_AUTH_TOKEN" {
            *value = "a-rotated-token-0123456789abcdef".into();
        }
    }
    let app = app_with(Backend::Sqlite, env, Arc::new(SystemClock)).await.unwrap();
    let user = Uuid::new_v4();
    set_prefs(&app, user, json!({"sms_enabled": true, "sms_phone_number": "+12345678901"})).await;
    let answer = app.event(exit_event(user), 202).await;
    // The stand-in answers 401 (code 20003) without recording a message.
    let row = until_delivery(&app, user, &id_of(&answer), "sms", "retrying").await;
    let error = row["last_error"].as_str().unwrap();
    assert!(error.contains("401") && error.contains("credentials"), "{error}");
    assert!(twilio.requests.try_recv().is_err(), "nothing was accepted");
}

#[actix_web::test]
async fn transient_failures_are_retried_after_1_2_and_4_seconds_then_given_up() {
    let mut twilio = TwilioStandIn::start().await;
    twilio.script(&[500, 429, 503, 500]);
    let clock = Arc::new(ManualClock::default());
    let app = app_with(Backend::Sqlite, twilio.env(), clock.clone()).await.unwrap();
    let user = Uuid::new_v4();
    set_prefs(&app, user, json!({"sms_enabled": true, "sms_phone_number": "+12345678901"})).await;
    let answer = app.event(exit_event(user), 202).await;
    let id = id_of(&answer);
    twilio.next().await;
    for (attempt, backoff) in [(1, 1), (2, 2), (3, 4)] {
        let row = until_delivery(&app, user, &id, "sms", "retrying").await;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut row = row;
        while row["attempts"] != attempt {
            assert!(std::time::Instant::now() < deadline, "attempt {attempt}: {row}");
            tokio::time::sleep(Duration::from_millis(50)).await;
            row = until_delivery(&app, user, &id, "sms", "retrying").await;
        }
        // Not retried before its time (the injected clock has not moved)…
        app.state.channels.sms.do_send(Wake);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), twilio.requests.recv()).await.is_err(),
            "retried early"
        );
        // …and retried once the backoff has passed.
        clock.advance(chrono::Duration::seconds(backoff));
        app.state.channels.sms.do_send(Wake);
        twilio.next().await;
    }
    let row = until_delivery(&app, user, &id, "sms", "failed").await;
    assert_eq!(row["attempts"], 4, "the first attempt and three retries");
    assert!(row["last_error"].as_str().unwrap().contains("500"), "{row}");
}

/// A hub on an injected clock whose Twilio answers the next five messages with 500,
/// enough to open the SMS circuit.
async fn hub_with_twilio_failing_five_times() -> (TwilioStandIn, Arc<ManualClock>, TestApp) {
    let twilio = TwilioStandIn::start().await;
    twilio.script(&[500, 500, 500, 500, 500]);
    let clock = Arc::new(ManualClock::default());
    let app = app_with(Backend::Sqlite, twilio.env(), clock.clone()).await.unwrap();
    (twilio, clock, app)
}

#[actix_web::test]
async fn the_breaker_opens_after_five_failures_pauses_sends_and_closes_after_a_good_trial() {
    let (mut twilio, clock, app) = hub_with_twilio_failing_five_times().await;
    let (user, admin) = (Uuid::new_v4(), Uuid::new_v4());
    app.get("/api/v1/notifications", &app.token(admin, Role::Admin)).await;
    let mut admin_tab = app.ws_as(admin, Role::Admin, None).await;
    admin_tab.until_ready().await;
    set_prefs(&app, user, json!({"sms_enabled": true, "sms_phone_number": "+12345678901"})).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(id_of(&app.event(exit_event(user), 202).await));
        twilio.next().await;
    }
    // Open: the admins are told, the metrics and readiness show it, tests get 503.
    let toast = admin_tab.next_toast().await;
    assert_eq!(toast["notification"]["metadata"]["error_type"], "sms_circuit_open");
    let metrics = app.client.get(format!("{}/metrics", app.address)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("notifyhub_channel_circuit_state{channel=\"sms\"} 1"), "{metrics}");
    let ready: Value = app.client.get(format!("{}/readyz", app.address)).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["checks"]["channels"]["sms"]["circuit"], "open");
    let res = app.post("/api/v1/notifications/test/sms", &app.token(user, Role::User), &json!({})).await;
    assert_error(res, 503, "CIRCUIT_OPEN").await;
    // A new notification waits instead of being tried.
    let waiting = id_of(&app.event(exit_event(user), 202).await);
    clock.advance(chrono::Duration::seconds(30));
    app.state.channels.sms.do_send(Wake);
    assert!(tokio::time::timeout(Duration::from_millis(300), twilio.requests.recv()).await.is_err(), "sent while open");
    // Half-open after 60 s: one trial; it succeeds, the circuit closes and the queue drains.
    clock.advance(chrono::Duration::seconds(31));
    app.state.channels.sms.do_send(Wake);
    twilio.next().await;
    for id in ids.iter().chain(std::iter::once(&waiting)) {
        until_delivery(&app, user, id, "sms", "sent").await;
    }
    // The gauge follows the actor's state, which settles just after the last row is recorded.
    until_metric(&app, "notifyhub_channel_circuit_state{channel=\"sms\"} 0").await;
}

/// Waits until `/metrics` has `line`.
async fn until_metric(app: &TestApp, line: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = app.client.get(format!("{}/metrics", app.address)).send().await.unwrap().text().await.unwrap();
        if metrics.contains(line) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "no {line} in {metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_web::test]
async fn a_trial_that_never_reaches_the_provider_hands_the_trial_to_the_next_send() {
    let (mut twilio, clock, app) = hub_with_twilio_failing_five_times().await;
    let (quitter, other) = (Uuid::new_v4(), Uuid::new_v4());
    for user in [quitter, other] {
        set_prefs(&app, user, json!({"sms_enabled": true, "sms_phone_number": "+12345678901"})).await;
    }
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(id_of(&app.event(exit_event(quitter), 202).await));
        twilio.next().await;
    }
    until_metric(&app, "notifyhub_channel_circuit_state{channel=\"sms\"} 1").await;
    // One trader switches SMS off during the outage: once the circuit is half-open, their
    // queued messages take the trial in turn and are dropped without asking Twilio.
    set_prefs(&app, quitter, json!({"sms_enabled": false})).await;
    clock.advance(chrono::Duration::seconds(61));
    app.state.channels.sms.do_send(Wake);
    for id in &ids {
        until_delivery(&app, quitter, id, "sms", "suppressed").await;
    }
    // The trial is still there for the next send, which closes the circuit.
    let next = id_of(&app.event(exit_event(other), 202).await);
    app.state.channels.sms.do_send(Wake);
    assert_eq!(twilio.next().await.to, "+12345678901");
    until_delivery(&app, other, &next, "sms", "sent").await;
    until_metric(&app, "notifyhub_channel_circuit_state{channel=\"sms\"} 0").await;
    let res = app.post("/api/v1/notifications/test/sms", &app.token(other, Role::User), &json!({})).await;
    assert_eq!(res.status(), 202, "tests go through a closed circuit");
}

/// A hub whose push endpoints are a stand-in push service checking what a real one
/// checks (VAPID signature, RFC 8291 payloads that decrypt).
async fn app_with_push_service(clock: Arc<dyn Clock>) -> (TestApp, PushStandIn) {
    let probe = crate::helpers::spawn_app(Backend::Sqlite).await.unwrap();
    let key =
        crate::helpers::json_of(probe.client.get(format!("{}/api/v1/push/vapid-public-key", probe.address))).await;
    // Same data dir → same VAPID key for the real app.
    let vapid = key["public_key"].as_str().unwrap().to_string();
    let push = PushStandIn::start(vapid.clone()).await;
    let (env, dir) = probe.stop().await;
    let mut env = env;
    env.insert("NOTIFYHUB_PUSH_ALLOWED_HOSTS".into(), format!("127.0.0.1:{}", push.port));
    let app = spawn_with_clock(Backend::Sqlite, env, dir, clock).await;
    (app, push)
}

/// A trader with push switched on and `devices` subscribed at the stand-in; their token.
async fn trader_with_push(app: &TestApp, push: &PushStandIn, user: Uuid, devices: &[&str]) -> String {
    let token = app.token(user, Role::User);
    for device in devices {
        let res = app.post("/api/v1/push/subscriptions", &token, &push.keys.subscription(&push.endpoint(device))).await;
        assert_eq!(res.status(), 201);
    }
    set_prefs(app, user, json!({"push_enabled": true})).await;
    token
}

#[actix_web::test]
async fn test_pushes_are_limited_to_20_an_hour_and_deliveries_are_not() {
    let (app, mut push) = app_with_push_service(Arc::new(SystemClock)).await;
    let user = Uuid::new_v4();
    let token = trader_with_push(&app, &push, user, &["a"]).await;
    for _ in 0..20 {
        assert_eq!(app.post("/api/v1/notifications/test/push", &token, &json!({})).await.status(), 202);
        assert_eq!(push.next().await.payload["test"], true);
    }
    let res = app.post("/api/v1/notifications/test/push", &token, &json!({})).await;
    let err = assert_error(res, 429, "RATE_LIMITED").await;
    assert!(err["error"]["message"].as_str().unwrap().contains("20 test pushes"), "{err}");
    // An emergency exit is pushed all the same.
    let answer = app.event(exit_event(user), 202).await;
    let got = push.next().await;
    assert_eq!(got.payload["notification_id"], answer["notifications"][0]["notification_id"]);
}

#[actix_web::test]
async fn push_is_signed_encrypted_and_a_gone_subscription_is_removed() {
    let (app, mut push) = app_with_push_service(Arc::new(SystemClock)).await;
    let user = Uuid::new_v4();
    let token = trader_with_push(&app, &push, user, &["a"]).await;

    let answer = app.event(exit_event(user), 202).await;
    assert_eq!(answer["notifications"][0]["channels"], json!(["toast", "push"]));
    let got = push.next().await;
    assert_eq!(got.payload["title"], "Emergency exit: TSLA");
    assert_eq!(got.payload["priority"], "critical");
    assert_eq!(got.payload["notification_id"], answer["notifications"][0]["notification_id"]);
    assert_eq!(got.urgency, "high");
    assert_eq!(got.ttl, "86400");
    until_delivery(&app, user, &id_of(&answer), "push", "sent").await;

    // The test endpoint uses the same path.
    let res = app.post("/api/v1/notifications/test/push", &token, &json!({})).await;
    assert_eq!(res.status(), 202);
    assert_eq!(push.next().await.payload["test"], true);

    // A second device whose push service is briefly unwell still gets it, on the retry.
    let res = app.post("/api/v1/push/subscriptions", &token, &push.keys.subscription(&push.endpoint("b"))).await;
    assert_eq!(res.status(), 201);
    push.script("b", &[503]);
    let answer = app.event(exit_event(user), 202).await;
    let mut reached: Vec<String> = Vec::new();
    for _ in 0..4 {
        reached.push(push.next().await.endpoint);
    }
    reached.sort();
    assert_eq!(reached, ["a", "a", "b", "b"], "both devices, twice: the first round and the retry");
    let row = until_delivery(&app, user, &id_of(&answer), "push", "sent").await;
    assert_eq!(row["attempts"], 2);
    let removed = app
        .client
        .delete(format!("{}/api/v1/push/subscriptions", app.address))
        .bearer_auth(&token)
        .json(&json!({"endpoint": push.endpoint("b")}))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 200);

    // 410 Gone: the subscription is deleted and the next push has nowhere to go.
    push.answer(410);
    let answer = app.event(signal_event(user, 95.0), 202).await;
    push.next().await;
    let row = until_delivery(&app, user, &id_of(&answer), "push", "failed").await;
    assert!(row["reason"].as_str().unwrap().contains("410"), "{row}");
    let res = app.post("/api/v1/notifications/test/push", &token, &json!({})).await;
    assert_error(res, 400, "NO_ADDRESS").await;
}

#[actix_web::test]
async fn a_push_that_reaches_some_devices_keeps_the_breaker_closed() {
    // One of the user's two devices sits behind a push service that answers 503 five
    // times running: each push is retried for it, but the channel works (the other
    // device gets every one), so the breaker, which opens after five failures, stays
    // closed and the admins hear nothing.
    let clock = Arc::new(ManualClock::default());
    let (app, mut push) = app_with_push_service(clock.clone()).await;
    let (user, admin) = (Uuid::new_v4(), Uuid::new_v4());
    app.get("/api/v1/notifications", &app.token(admin, Role::Admin)).await;
    trader_with_push(&app, &push, user, &["a", "b"]).await;
    push.script("b", &[503, 503, 503, 503, 503]);
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(id_of(&app.event(exit_event(user), 202).await));
        push.next().await;
        push.next().await;
        let row = until_delivery(&app, user, ids.last().unwrap(), "push", "retrying").await;
        assert!(row["last_error"].as_str().unwrap().contains("1 of 2 devices reached"), "{row}");
    }
    let metrics = app.client.get(format!("{}/metrics", app.address)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("notifyhub_channel_circuit_state{channel=\"push\"} 0"), "{metrics}");
    // The retries (due a second later) reach both devices, and each push ends sent.
    clock.advance(chrono::Duration::seconds(2));
    app.state.channels.push.do_send(Wake);
    for id in &ids {
        until_delivery(&app, user, id, "push", "sent").await;
    }
    let inbox: Value = app
        .get("/api/v1/notifications?notification_type=system_error", &app.token(admin, Role::Admin))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(inbox["pagination"]["total_count"], 0, "the admins were told of an outage: {inbox}");
}

#[actix_web::test]
async fn push_endpoints_off_the_allow_list_are_refused_and_never_contacted() {
    let app = crate::helpers::spawn_app(Backend::Sqlite).await.unwrap();
    let token = app.token(Uuid::new_v4(), Role::User);
    let keys = crate::standins::BrowserKeys::new();
    for endpoint in [
        "http://127.0.0.1:9/push/x",
        "https://169.254.169.254/latest",
        "https://evil.example.com/push",
        "ftp://fcm.googleapis.com/x",
    ] {
        let res = app.post("/api/v1/push/subscriptions", &token, &keys.subscription(endpoint)).await;
        let err = assert_error(res, 422, "VALIDATION_FAILED").await;
        assert_eq!(err["error"]["details"]["field"], "endpoint");
    }
    let mut bad = keys.subscription("https://fcm.googleapis.com/fcm/send/x");
    bad["keys"]["p256dh"] = json!("AAAA");
    let err = assert_error(app.post("/api/v1/push/subscriptions", &token, &bad).await, 422, "VALIDATION_FAILED").await;
    assert_eq!(err["error"]["details"]["field"], "keys.p256dh");
    let ok = app
        .post("/api/v1/push/subscriptions", &token, &keys.subscription("https://fcm.googleapis.com/fcm/send/x"))
        .await;
    assert_eq!(ok.status(), 201);
    let gone = app
        .client
        .delete(format!("{}/api/v1/push/subscriptions", app.address))
        .bearer_auth(&token)
        .json(&json!({"endpoint": "https://fcm.googleapis.com/fcm/send/x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.json::<Value>().await.unwrap(), json!({"success": true, "deleted": true}));
}

#[actix_web::test]
async fn a_push_endpoint_moves_to_another_user_only_from_the_same_browser() {
    let app = crate::helpers::spawn_app(Backend::Sqlite).await.unwrap();
    let (first, second) = (app.token(Uuid::new_v4(), Role::User), app.token(Uuid::new_v4(), Role::User));
    let endpoint = "https://fcm.googleapis.com/fcm/send/shared-browser";
    let browser = crate::standins::BrowserKeys::new();
    let res = app.post("/api/v1/push/subscriptions", &first, &browser.subscription(endpoint)).await;
    assert_eq!(res.status(), 201);
    // Someone who only knows the URL, with keys of their own: refused, nothing moves.
    let stranger = crate::standins::BrowserKeys::new();
    let res = app.post("/api/v1/push/subscriptions", &second, &stranger.subscription(endpoint)).await;
    let err = assert_error(res, 409, "SUBSCRIPTION_TAKEN").await;
    assert_eq!(err["error"]["details"]["field"], "endpoint");
    let delete = |token: &str| {
        app.client
            .delete(format!("{}/api/v1/push/subscriptions", app.address))
            .bearer_auth(token)
            .json(&json!({"endpoint": endpoint}))
            .send()
    };
    // The same browser signed in as the second user: the endpoint moves.
    let res = app.post("/api/v1/push/subscriptions", &second, &browser.subscription(endpoint)).await;
    assert_eq!(res.status(), 201);
    let gone: Value = delete(&first).await.unwrap().json().await.unwrap();
    assert_eq!(gone["deleted"], false, "no longer the first user's");
    let gone: Value = delete(&second).await.unwrap().json().await.unwrap();
    assert_eq!(gone["deleted"], true);
}

#[actix_web::test]
async fn sms_rate_limit_holds_across_a_restart() {
    // Sandbox SMS (no Twilio): 30 per hour per user.
    let app = crate::helpers::spawn_app(Backend::Sqlite).await.unwrap();
    let user = Uuid::new_v4();
    set_prefs(&app, user, json!({"sms_enabled": true, "sms_phone_number": "+12345678901"})).await;
    let mut last = String::new();
    for _ in 0..30 {
        last = id_of(&app.event(exit_event(user), 202).await);
    }
    until_delivery(&app, user, &last, "sms", "sent").await;
    let (env, dir) = app.stop().await;
    let app = spawn_with_clock(Backend::Sqlite, env, dir, Arc::new(SystemClock)).await;
    let over = id_of(&app.event(exit_event(user), 202).await);
    let row = until_delivery(&app, user, &over, "sms", "suppressed").await;
    assert_eq!(row["reason"], "rate_limited");
    let outbox: Value =
        app.get("/api/v1/sandbox/outbox?limit=500", &app.token(user, Role::User)).await.json().await.unwrap();
    assert_eq!(outbox["sms_mode"], "sandbox");
    assert_eq!(outbox["data"].as_array().unwrap().len(), 30);
    assert_eq!(outbox["data"][0]["to"], "+1234***8901", "recipients are masked in the sandbox too");
}

#[actix_web::test]
async fn a_stopped_hub_leaves_no_dispatcher_channel_or_persistence_actor_running() {
    // A hub restarted in the same process would otherwise meet the old channel actors
    // polling its outbox with the old settings (a push refused by the old allow-list),
    // and the old store would keep its connections and its SQLite writer.
    let app = crate::helpers::spawn_app(Backend::Sqlite).await.unwrap();
    let channels = app.state.channels.clone();
    let dispatcher = app.state.dispatcher.clone();
    let store = app.state.store.clone();
    assert!(dispatcher.connected() && channels.push.connected() && store.is_running());
    app.stop().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while dispatcher.connected()
        || store.is_running()
        || [&channels.email, &channels.sms, &channels.push].iter().any(|a| a.connected())
    {
        assert!(std::time::Instant::now() < deadline, "an actor of the stopped hub is still running");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How many of notifications `ids` went out on `channel`, and how many the hourly limit
/// held back, once each has an outcome there.
async fn channel_outcomes(app: &TestApp, user: Uuid, ids: &[String], channel: &str) -> (usize, usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (mut sent, mut limited) = (0, 0);
    for id in ids {
        loop {
            let rows = deliveries(app, user, id).await;
            let row = rows.iter().find(|r| r["channel"] == channel).expect("a row for the channel").clone();
            match row["status"].as_str().unwrap() {
                "sent" => sent += 1,
                "suppressed" if row["reason"] == "rate_limited" => limited += 1,
                "pending" | "retrying" => {
                    assert!(std::time::Instant::now() < deadline, "{channel} never finished: {row}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                _ => panic!("unexpected {channel} outcome: {row}"),
            }
            break;
        }
    }
    (sent, limited)
}

async fn sms_outcomes(app: &TestApp, user: Uuid, ids: &[String]) -> (usize, usize) {
    channel_outcomes(app, user, ids, "sms").await
}

#[actix_web::test]
async fn at_most_100_emails_an_hour_reach_a_user_tests_included() {
    let app = crate::helpers::spawn_app(Backend::Sqlite).await.unwrap();
    let user = Uuid::new_v4();
    let token = app.token(user, Role::User);
    set_prefs(&app, user, json!({"email_address": "trader@example.com"})).await;
    for _ in 0..5 {
        assert_eq!(app.post("/api/v1/notifications/test/email", &token, &json!({})).await.status(), 202);
    }
    let answers = futures_util::future::join_all((0..100).map(|_| app.event(exit_event(user), 202))).await;
    let ids: Vec<String> = answers.iter().map(id_of).collect();
    assert_eq!(channel_outcomes(&app, user, &ids, "email").await, (95, 5));
    let err =
        assert_error(app.post("/api/v1/notifications/test/email", &token, &json!({})).await, 429, "RATE_LIMITED").await;
    assert_eq!(err["error"]["details"]["channel"], "email");
    // SMS has a limit of its own, untouched by the emails.
    set_prefs(&app, user, json!({"sms_enabled": true, "sms_phone_number": "+12345678901"})).await;
    assert_eq!(app.post("/api/v1/notifications/test/sms", &token, &json!({})).await.status(), 202);
    let outbox: Value = app.get("/api/v1/sandbox/outbox?limit=500", &token).await.json().await.unwrap();
    let emails = outbox["data"].as_array().unwrap().iter().filter(|m| m["channel"] == "email").count();
    assert_eq!(emails, 100, "100 emails in the hour, no more");
}

crate::on_both_backends! {
    async fn sms_limit_counts_tests_and_concurrent_sends(app) {
    let user = Uuid::new_v4();
    let token = app.token(user, Role::User);
    set_prefs(&app, user, json!({"sms_enabled": true, "sms_phone_number": "+12345678901"})).await;
    // Tests are real messages: 10 of the hour's 30.
    for _ in 0..10 {
        assert_eq!(app.post("/api/v1/notifications/test/sms", &token, &json!({})).await.status(), 202);
    }
    // 30 more critical events at once: the channel sends several concurrently, and
    // exactly the 20 left may go out.
    let answers = futures_util::future::join_all((0..30).map(|_| app.event(exit_event(user), 202))).await;
    let ids: Vec<String> = answers.iter().map(id_of).collect();
    assert_eq!(sms_outcomes(&app, user, &ids).await, (20, 10));
    let err =
        assert_error(app.post("/api/v1/notifications/test/sms", &token, &json!({})).await, 429, "RATE_LIMITED").await;
    assert_eq!(err["error"]["details"]["channel"], "sms");
    // Erasing one's history does not give the hour's messages back.
    assert_eq!(app.delete("/api/v1/notifications", &token).await.status(), 200);
    let after = id_of(&app.event(exit_event(user), 202).await);
    assert_eq!(sms_outcomes(&app, user, &[after]).await, (0, 1));
    assert_error(app.post("/api/v1/notifications/test/sms", &token, &json!({})).await, 429, "RATE_LIMITED").await;
    let outbox: Value = app.get("/api/v1/sandbox/outbox?limit=500", &token).await.json().await.unwrap();
    assert_eq!(outbox["data"].as_array().unwrap().len(), 30, "30 SMS in the hour, no more");
    }

    async fn push_is_routed_only_to_recipients_with_a_subscription(app) {
    let (with, without) = (Uuid::new_v4(), Uuid::new_v4());
    let device = BrowserKeys::new().subscription("https://fcm.googleapis.com/fcm/send/device-a");
    assert_eq!(app.post("/api/v1/push/subscriptions", &app.token(with, Role::User), &device).await.status(), 201);
    for user in [with, without] {
        set_prefs(&app, user, json!({"push_enabled": true})).await;
    }
    let mut event = exit_event(with);
    event.as_object_mut().unwrap().remove("user_id");
    event["user_ids"] = json!([with, without]);
    let answer = app.event(event, 202).await;
    let channels_of = |user: Uuid| {
        let n = answer["notifications"].as_array().unwrap().iter().find(|n| n["user_id"] == user.to_string());
        n.map(|n| n["channels"].clone())
    };
    assert_eq!(channels_of(with), Some(json!(["toast", "push"])), "{answer}");
    assert_eq!(channels_of(without), Some(json!(["toast"])), "{answer}");
    }

    async fn a_user_keeps_their_ten_newest_push_subscriptions(app) {
    let user = Uuid::new_v4();
    let token = app.token(user, Role::User);
    let endpoint = |i: usize| format!("https://fcm.googleapis.com/fcm/send/device-{i}");
    for i in 0..12 {
        let res = app.post("/api/v1/push/subscriptions", &token, &BrowserKeys::new().subscription(&endpoint(i))).await;
        assert_eq!(res.status(), 201);
    }
    let held = app
        .state
        .store
        .call(move |db| async move { notifyhub::store::outbox::subscriptions_of(&db, user).await })
        .await
        .unwrap();
    let mut held: Vec<String> = held.into_iter().map(|s| s.endpoint).collect();
    held.sort();
    let mut newest: Vec<String> = (2..12).map(endpoint).collect();
    newest.sort();
    assert_eq!(held, newest, "the two registered first are forgotten");
    }
}

/// Overwrites a user's stored preferences with a contact field that does not decrypt
/// (as after a change of NOTIFYHUB_PII_KEY), behind the hub's back.
async fn damage_preferences(app: &TestApp, user: Uuid) {
    let doc = json!({"user_id": user, "sms_enabled": true, "sms_phone_number": "enc:v1:not-sealed-with-this-key"});
    let saved = app
        .state
        .store
        .call(move |db| async move {
            use notifyhub::store::repository::{load_preferences_versioned, save_preferences_if};
            let version = load_preferences_versioned(&db, user).await?.map(|(_, at)| at);
            save_preferences_if(&db, user, doc, chrono::Utc::now(), version).await
        })
        .await
        .unwrap();
    assert!(saved);
}

#[actix_web::test]
async fn one_recipient_with_unreadable_preferences_does_not_fail_the_others() {
    let app = crate::helpers::spawn_app(Backend::Sqlite).await.unwrap();
    let (good, damaged) = (Uuid::new_v4(), Uuid::new_v4());
    set_prefs(&app, good, json!({"sms_enabled": true, "sms_phone_number": "+12345678901"})).await;
    set_prefs(&app, damaged, json!({"sms_enabled": true, "sms_phone_number": "+12345678902"})).await;
    // Cached while readable: the next event routes to its SMS, which then cannot load.
    app.event(exit_event(damaged), 202).await;
    damage_preferences(&app, damaged).await;
    let cached = id_of(&app.event(exit_event(damaged), 202).await);
    let row = until_delivery(&app, damaged, &cached, "sms", "failed").await;
    assert_eq!(row["reason"], "the recipient's preferences cannot be read");
    // Read afresh (as after the cache's 60 s): the damaged one gets the defaults, and
    // the event still reaches everyone.
    app.state.dispatch.profiles.invalidate(damaged);
    let third = Uuid::new_v4();
    let body = app
        .event(
            json!({"type": "emergency_exit", "user_ids": [good, damaged, third], "exit": exit_event(good)["exit"]}),
            202,
        )
        .await;
    assert_eq!(body["accepted_count"], 3);
    let channels: Vec<&Value> = body["notifications"].as_array().unwrap().iter().map(|n| &n["channels"]).collect();
    assert_eq!(channels, [&json!(["toast", "sms"]), &json!(["toast"]), &json!(["toast"])]);
}

#[actix_web::test]
async fn the_deliveries_page_tells_a_sent_toast_from_one_the_routing_left_out() {
    let app = crate::helpers::spawn_app(Backend::Sqlite).await.unwrap();
    let user = Uuid::new_v4();
    let toast_row = |rows: Vec<Value>| rows.into_iter().find(|r| r["channel"] == "toast").expect("a toast row");
    let sent = id_of(&app.event(exit_event(user), 202).await);
    let row = toast_row(deliveries(&app, user, &sent).await);
    assert_eq!((row["status"].as_str(), row["reason"].is_null()), (Some("sent"), true), "{row}");
    set_prefs(&app, user, json!({"channel_preferences": {"critical_channels": ["email"]}})).await;
    let left_out = id_of(&app.event(exit_event(user), 202).await);
    let row = toast_row(deliveries(&app, user, &left_out).await);
    assert_eq!((row["status"].as_str(), row["reason"].as_str()), (Some("suppressed"), Some("not_routed")), "{row}");
}

#[actix_web::test]
async fn test_endpoints_answer_every_case() {
    let app = crate::helpers::spawn_app(Backend::Sqlite).await.unwrap();
    let user = Uuid::new_v4();
    let token = app.token(user, Role::User);
    let test = |channel: &'static str| {
        let (app, token) = (&app, token.clone());
        async move { app.post(&format!("/api/v1/notifications/test/{channel}"), &token, &json!({})).await }
    };
    assert_error(test("email").await, 400, "NO_ADDRESS").await;
    assert_error(test("sms").await, 400, "CHANNEL_DISABLED").await;
    assert_error(test("push").await, 400, "CHANNEL_DISABLED").await;
    assert_error(test("fax").await, 400, "BAD_REQUEST").await;
    set_prefs(&app, user, json!({"email_address": "me@example.com", "sms_enabled": true, "sms_phone_number": "+447911123456", "push_enabled": true})).await;
    assert_error(test("push").await, 400, "NO_ADDRESS").await;
    let res = test("sms").await;
    assert_eq!(res.status(), 202);
    assert_eq!(res.json::<Value>().await.unwrap()["message"], "Test sms sent to +4479***3456");
    assert_eq!(test("email").await.status(), 202);
    let outbox: Value = app.get("/api/v1/sandbox/outbox", &token).await.json().await.unwrap();
    let channels: Vec<&str> =
        outbox["data"].as_array().unwrap().iter().map(|m| m["channel"].as_str().unwrap()).collect();
    assert_eq!(channels, ["email", "sms"], "newest first");
    assert_eq!(outbox["data"][0]["subject"], "notifyhub test email");
    set_prefs(&app, user, json!({"email_enabled": false})).await;
    assert_error(test("email").await, 400, "CHANNEL_DISABLED").await;
    let mut tab = app.ws(user, None).await;
    tab.until_ready().await;
    assert_eq!(test("toast").await.status(), 202);
    assert_eq!(tab.next_toast().await["notification"]["title"], "Test notification");
    // A test toast goes to the tabs alone, whatever else info notifications are routed to.
    set_prefs(&app, user, json!({"email_enabled": true, "channel_preferences": {"info_channels": ["toast", "email"]}}))
        .await;
    assert_eq!(test("toast").await.status(), 202);
    let toast = tab.next_toast().await;
    let id = toast["notification"]["id"].as_str().unwrap().to_string();
    let rows = deliveries(&app, user, &id).await;
    assert!(rows.iter().all(|r| r["channel"] == "toast"), "no email for a test toast: {rows:?}");
    let stored = total_count(&app, &token).await;
    assert_eq!(stored, 2);
    // A test toast the routing would not show is refused, and leaves nothing behind.
    set_prefs(&app, user, json!({"channel_preferences": {"info_channels": ["email"]}})).await;
    assert_error(test("toast").await, 400, "CHANNEL_DISABLED").await;
    assert_eq!(total_count(&app, &token).await, stored, "a refused test toast stores nothing");
    // Another user's sandbox messages are not listed.
    let other: Value =
        app.get("/api/v1/sandbox/outbox", &app.token(Uuid::new_v4(), Role::User)).await.json().await.unwrap();
    assert_eq!(other["data"], json!([]));
}
