//! The real binary killed with SIGKILL mid-delivery: on restart the interrupted
//! delivery is resumed and nothing is lost. Its logs and database file never hold a
//! phone number or email address in clear.

use crate::helpers::{json_of, HubProcess, JWT_SECRET, SERVICE_TOKEN};
use crate::standins::TwilioStandIn;
use notifyhub::auth::{JwtKeys, Role};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

fn start_hub(dir: &std::path::Path, twilio: &TwilioStandIn) -> HubProcess {
    HubProcess::start(dir, twilio.env())
}

#[actix_web::test]
async fn a_delivery_interrupted_by_sigkill_is_resumed_after_restart_and_no_pii_leaks() {
    let mut twilio = TwilioStandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let user = Uuid::new_v4();
    let token = JwtKeys::new(JWT_SECRET).issue(user, Role::User, Duration::from_secs(600));

    let hub = start_hub(dir.path(), &twilio);
    let base = format!("http://127.0.0.1:{}", hub.port);
    let res = client
        .post(format!("{base}/api/v1/notifications/preferences"))
        .bearer_auth(&token)
        .json(&json!({"sms_enabled": true, "sms_phone_number": "+12345678901", "email_address": "secret.trader@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // Twilio gets the request but the hub dies before the answer.
    let release = twilio.hold();
    let answer = json_of(
        client
            .post(format!("{base}/api/v1/events"))
            .bearer_auth(SERVICE_TOKEN)
            .json(&json!({"type": "emergency_exit", "user_id": user, "exit": {"campaign_id": "C-1", "symbol": "NVDA", "reason": "creek breached", "positions_closed": 1}})),
    )
    .await;
    let id = answer["notifications"][0]["notification_id"].as_str().unwrap().to_string();
    twilio.next().await;
    let first_logs = hub.kill(); // SIGKILL
    let _ = release.send(true);

    let hub = start_hub(dir.path(), &twilio);
    let base = format!("http://127.0.0.1:{}", hub.port);
    let resent = twilio.next().await;
    assert_eq!(resent.to, "+12345678901");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let body =
            json_of(client.get(format!("{base}/api/v1/notifications/{id}/deliveries")).bearer_auth(&token)).await;
        if body["data"].as_array().unwrap().iter().any(|d| d["channel"] == "sms" && d["status"] == "sent") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never resumed: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logs = format!("{first_logs}{}", hub.kill());
    assert!(logs.contains("resuming deliveries interrupted by the last stop"), "{logs}");
    assert!(logs.contains("+1234***8901"), "masked number logged: {logs}");
    assert!(!logs.contains("12345678901"), "phone number in clear in the logs");
    assert!(!logs.contains("secret.trader@example.com"), "email in clear in the logs");
    // The database file must be there (the WAL may have been checkpointed away).
    assert!(dir.path().join("notifyhub.db").is_file(), "the hub wrote its database in the data dir");
    for file in ["notifyhub.db", "notifyhub.db-wal"] {
        let bytes = std::fs::read(dir.path().join(file)).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("12345678901") && !text.contains("secret.trader@example.com"), "PII in clear in {file}");
    }
}

/// Group commit and the WAL write path under a kill: every event the hub answered before
/// a SIGKILL that lands mid-load is there after the restart, numbered without gaps, in a
/// database that passes SQLite's integrity check.
#[actix_web::test]
async fn every_event_acknowledged_before_a_sigkill_under_load_survives_it() {
    let twilio = TwilioStandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let users: Vec<Uuid> = (0..8).map(|_| Uuid::new_v4()).collect();
    let hub = start_hub(dir.path(), &twilio);
    let base = format!("http://127.0.0.1:{}", hub.port);

    // One sender per user, each posting as fast as answers come; the padding makes each
    // commit span several pages of the log.
    let acked = Arc::new(Mutex::new(Vec::<(Uuid, String)>::new()));
    let (enough_tx, enough_rx) = tokio::sync::oneshot::channel::<()>();
    let enough_tx = Arc::new(Mutex::new(Some(enough_tx)));
    let mut senders = Vec::new();
    for user in users.clone() {
        let (client, base, acked, enough_tx) = (client.clone(), base.clone(), acked.clone(), enough_tx.clone());
        senders.push(actix_web::rt::spawn(async move {
            for i in 0.. {
                let body = json!({"type": "notification", "user_id": user, "notification_type": "signal_generated",
                                  "priority": "info", "title": format!("load {i}"), "message": "x".repeat(900),
                                  "metadata": {"i": i, "pad": "y".repeat(2000)}});
                let Ok(res) =
                    client.post(format!("{base}/api/v1/events")).bearer_auth(SERVICE_TOKEN).json(&body).send().await
                else {
                    return;
                };
                if !res.status().is_success() {
                    return;
                }
                let Ok(answer) = res.json::<serde_json::Value>().await else { return };
                let id = answer["notifications"][0]["notification_id"].as_str().unwrap().to_string();
                let mut acked = acked.lock().unwrap();
                acked.push((user, id));
                if acked.len() >= 400 {
                    if let Some(tx) = enough_tx.lock().unwrap().take() {
                        let _ = tx.send(());
                    }
                }
            }
        }));
    }
    enough_rx.await.unwrap();
    hub.kill(); // SIGKILL, with requests in flight
    for s in senders {
        let _ = s.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 400);

    let hub = start_hub(dir.path(), &twilio);
    let base = format!("http://127.0.0.1:{}", hub.port);
    let keys = JwtKeys::new(JWT_SECRET);
    for user in &users {
        let token = keys.issue(*user, Role::User, Duration::from_secs(600));
        let mut stored = std::collections::HashSet::new();
        let mut sequence_numbers = Vec::new();
        for page in 0.. {
            let body = json_of(
                client.get(format!("{base}/api/v1/notifications?limit=100&offset={}", page * 100)).bearer_auth(&token),
            )
            .await;
            let items = body["data"].as_array().unwrap().clone();
            for n in &items {
                stored.insert(n["id"].as_str().unwrap().to_string());
                sequence_numbers.push(n["sequence_number"].as_i64().unwrap());
            }
            if items.len() < 100 {
                break;
            }
        }
        for (_, id) in acked.iter().filter(|(u, _)| u == user) {
            assert!(stored.contains(id), "acknowledged notification {id} lost");
        }
        sequence_numbers.sort_unstable();
        let expected: Vec<i64> = (1..=sequence_numbers.len() as i64).collect();
        assert_eq!(sequence_numbers, expected, "sequence numbers of {user} have gaps");
    }
    hub.kill();

    use diesel::{Connection, RunQueryDsl};
    let mut conn = diesel::SqliteConnection::establish(&dir.path().join("notifyhub.db").display().to_string()).unwrap();
    let check: Vec<String> =
        diesel::dsl::sql::<diesel::sql_types::Text>("PRAGMA integrity_check").load(&mut conn).unwrap();
    assert_eq!(check, vec!["ok".to_string()]);
}
