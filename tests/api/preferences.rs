//! Preferences: defaults, partial updates, every refusal, erase, admin access, PII at rest.

use crate::helpers::{assert_error, Backend, TestApp};
use notifyhub::auth::Role;
use serde_json::{json, Value};
use uuid::Uuid;

async fn prefs(app: &TestApp, token: &str) -> Value {
    let res = app.get("/api/v1/notifications/preferences", token).await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// Every stored byte of the preferences table, as text.
async fn raw_preferences_rows(app: &TestApp) -> String {
    app.state
        .store
        .call(|db| async move {
            use diesel::prelude::*;
            use diesel_async::RunQueryDsl;
            use notifyhub::store::json::Json;
            use notifyhub::store::schema::notification_preferences as p;
            let docs: Vec<Json> = notifyhub::with_conn!(&db, conn => {
                p::table.select(p::preferences).load(conn).await?
            });
            Ok(docs.into_iter().map(|d| d.0.to_string()).collect::<Vec<_>>().join("\n"))
        })
        .await
        .unwrap()
}

crate::on_both_backends! {
    async fn defaults_are_served_until_changed(app) {
        let user = Uuid::new_v4();
        let body = prefs(&app, &app.token(user, Role::User)).await;
        assert_eq!(body["user_id"], user.to_string());
        assert_eq!(body["min_confidence_threshold"], 85);
        assert_eq!(body["email_enabled"], true);
        assert_eq!(body["quiet_hours"]["timezone"], "America/New_York");
        assert_eq!(body["channel_preferences"]["critical_channels"], json!(["toast", "email", "sms", "push"]));
    }

    async fn partial_update_keeps_other_fields_and_persists(app) {
        let token = app.token(Uuid::new_v4(), Role::User);
        let res = app.post("/api/v1/notifications/preferences", &token, &json!({
            "sms_enabled": true, "sms_phone_number": "+12345678901",
            "email_address": "trader@example.com",
            "quiet_hours": {"enabled": true, "start_time": "22:30", "timezone": "Europe/London"},
            "channel_preferences": {"warning_channels": ["toast"]}
        })).await;
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["success"], true);
        let p = &body["preferences"];
        assert_eq!(p["quiet_hours"], json!({"enabled": true, "start_time": "22:30:00", "end_time": "08:00:00", "timezone": "Europe/London"}));
        assert_eq!(p["channel_preferences"]["warning_channels"], json!(["toast"]));
        assert_eq!(p["channel_preferences"]["info_channels"], json!(["toast"]));
        assert!(p["updated_at"].is_string());
        let again = prefs(&app, &token).await;
        assert_eq!(&again, p);
        assert_eq!(again["sms_phone_number"], "+12345678901");

        // The contact fields are encrypted at rest.
        let raw = raw_preferences_rows(&app).await;
        assert!(raw.contains("enc:v2:"), "{raw}");
        assert!(!raw.contains("12345678901") && !raw.contains("trader@example.com"), "{raw}");
        if app.backend == Backend::Sqlite {
            let db = std::fs::read(app.data_dir.path().join("notifyhub.db")).unwrap();
            let wal = std::fs::read(app.data_dir.path().join("notifyhub.db-wal")).unwrap_or_default();
            for bytes in [db, wal] {
                let text = String::from_utf8_lossy(&bytes);
                assert!(!text.contains("trader@example.com") && !text.contains("+12345678901"));
            }
        }
    }

    async fn concurrent_updates_of_different_fields_all_land(app) {
        let user = Uuid::new_v4();
        let token = app.token(user, Role::User);
        // As many at once as the PostgreSQL pool runs in parallel: each round one saves.
        let patches = [
            json!({"email_address": "trader@example.com"}),
            json!({"sms_enabled": true, "sms_phone_number": "+12345678901"}),
            json!({"min_confidence_threshold": 90}),
            json!({"quiet_hours": {"timezone": "Europe/Paris"}}),
            json!({"push_enabled": true}),
            json!({"channel_preferences": {"info_channels": ["toast", "email"]}}),
        ];
        let answers = futures_util::future::join_all(
            patches.iter().map(|p| app.post("/api/v1/notifications/preferences", &token, p)),
        )
        .await;
        for res in answers {
            assert_eq!(res.status(), 200);
        }
        let p = prefs(&app, &token).await;
        assert_eq!(p["email_address"], "trader@example.com");
        assert_eq!((p["sms_enabled"].as_bool(), p["sms_phone_number"].as_str()), (Some(true), Some("+12345678901")));
        assert_eq!(p["min_confidence_threshold"], 90);
        assert_eq!(p["quiet_hours"]["timezone"], "Europe/Paris");
        assert_eq!(p["push_enabled"], true);
        assert_eq!(p["channel_preferences"]["info_channels"], json!(["toast", "email"]));
    }

    async fn every_invalid_field_is_refused_with_422_and_nothing_changes(app) {
        let token = app.token(Uuid::new_v4(), Role::User);
        let before = prefs(&app, &token).await;
        for (body, field) in [
            (json!({"sms_phone_number": "555-1234"}), "sms_phone_number"),
            (json!({"email_address": "not-an-email"}), "email_address"),
            (json!({"min_confidence_threshold": 69}), "min_confidence_threshold"),
            (json!({"min_confidence_threshold": 96}), "min_confidence_threshold"),
            (json!({"quiet_hours": {"timezone": "Atlantis/Capital"}}), "quiet_hours.timezone"),
            (json!({"quiet_hours": {"start_time": "25:00"}}), "quiet_hours.start_time"),
            (json!({"quiet_hours": {"end_time": "8am"}}), "quiet_hours.end_time"),
            (json!({"channel_preferences": {"critical_channels": ["pager"]}}), "channel_preferences.critical_channels"),
            (json!({"favourite_colour": "blue"}), "favourite_colour"),
            (json!({"email_enabled": "yes"}), "email_enabled"),
            (json!({"min_confidence_threshold": 0.8}), "min_confidence_threshold"),
            (json!({"quiet_hours": {"enabled": 1}}), "quiet_hours.enabled"),
            (json!([null, null, null, null, null, null, 80]), "body"),
            (json!({"quiet_hours": {"enabled": true, "start_time": "10:00", "end_time": "10:00"}}), "quiet_hours.end_time"),
            (json!({"email_address": "ok@example.com", "min_confidence_threshold": 100}), "min_confidence_threshold"),
            (json!({"email_address": "jörg@example.com"}), "email_address"),
        ] {
            let res = app.post("/api/v1/notifications/preferences", &token, &body).await;
            let err = assert_error(res, 422, "VALIDATION_FAILED").await;
            assert_eq!(err["error"]["details"]["field"], field, "{body}");
            let message = err["error"]["message"].as_str().unwrap();
            assert!(!message.contains("i64") && !message.contains("struct "), "in words, not Rust's types: {message}");
        }
        assert_eq!(prefs(&app, &token).await, before, "a refused update changes nothing");
        // International characters: refused before the @ (no SMTPUTF8), kept after it.
        let res = app.post("/api/v1/notifications/preferences", &token, &json!({"email_address": "用户@例子.广告"})).await;
        let err = assert_error(res, 422, "VALIDATION_FAILED").await;
        assert!(err["error"]["message"].as_str().unwrap().contains("only ASCII characters before the @"), "{err}");
        let res = app.post("/api/v1/notifications/preferences", &token, &json!({"email_address": "trader@例子.广告"})).await;
        assert_eq!(res.status(), 200);
        for t in [70, 95] {
            let res = app.post("/api/v1/notifications/preferences", &token, &json!({"min_confidence_threshold": t})).await;
            assert_eq!(res.status(), 200, "{t} is within bounds");
        }
    }

    async fn malformed_and_oversized_bodies_are_refused(app) {
        let token = app.token(Uuid::new_v4(), Role::User);
        let url = format!("{}/api/v1/notifications/preferences", app.address);
        let res = app.client.post(&url).bearer_auth(&token).header("content-type", "application/json")
            .body("{\"email_enabled\": tru").send().await.unwrap();
        assert_error(res, 400, "INVALID_JSON").await;
        let huge = format!("{{\"email_address\": \"{}\"}}", "a".repeat(70 * 1024));
        let res = app.client.post(&url).bearer_auth(&token).header("content-type", "application/json")
            .body(huge).send().await.unwrap();
        assert_error(res, 413, "PAYLOAD_TOO_LARGE").await;
        for refused in ["text/plain", "application/jsonx", "application/json-seq"] {
            let res = app.client.post(&url).bearer_auth(&token).header("content-type", refused)
                .body("{}").send().await.unwrap();
            assert_error(res, 415, "UNSUPPORTED_MEDIA_TYPE").await;
        }
        for taken in ["APPLICATION/JSON", "application/json; charset=utf-8", "application/merge-patch+json"] {
            let res = app.client.post(&url).bearer_auth(&token).header("content-type", taken)
                .body("{}").send().await.unwrap();
            assert_eq!(res.status(), 200, "{taken}");
        }
    }

    async fn erasing_preferences_restores_the_defaults(app) {
        let user = Uuid::new_v4();
        let token = app.token(user, Role::User);
        app.post("/api/v1/notifications/preferences", &token, &json!({"min_confidence_threshold": 90})).await;
        let res = app.delete("/api/v1/notifications/preferences", &token).await;
        let body: Value = res.json().await.unwrap();
        assert_eq!(body, json!({"success": true, "deleted": true}));
        let p = prefs(&app, &token).await;
        assert_eq!(p["min_confidence_threshold"], 85);
        assert!(p["updated_at"].is_null());
    }

    async fn admins_manage_any_users_preferences(app) {
        let (user, admin) = (Uuid::new_v4(), Uuid::new_v4());
        let admin_token = app.token(admin, Role::Admin);
        let path = format!("/api/v1/admin/users/{user}/preferences");
        let res = app.post(&path, &admin_token, &json!({"min_confidence_threshold": 75})).await;
        assert_eq!(res.status(), 200);
        let res = app.get(&path, &admin_token).await;
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["min_confidence_threshold"], 75);
        assert_eq!(body["user_id"], user.to_string());
        // The user sees what the admin set.
        assert_eq!(prefs(&app, &app.token(user, Role::User)).await["min_confidence_threshold"], 75);
        // A user cannot change another user's preferences through their own endpoint:
        // the body's user_id must be their own.
        let other = app.token(Uuid::new_v4(), Role::User);
        let res = app.post("/api/v1/notifications/preferences", &other, &json!({"user_id": user, "min_confidence_threshold": 90})).await;
        assert_error(res, 422, "VALIDATION_FAILED").await;
        assert_eq!(prefs(&app, &app.token(user, Role::User)).await["min_confidence_threshold"], 75);
        let res = app.post(&path, &admin_token, &json!({"quiet_hours": {"timezone": "Nowhere"}})).await;
        assert_error(res, 422, "VALIDATION_FAILED").await;
        let res = app.get("/api/v1/admin/users/not-a-uuid/preferences", &admin_token).await;
        assert_error(res, 422, "VALIDATION_FAILED").await;
    }
}
