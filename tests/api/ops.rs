//! Liveness, readiness, metrics and the OpenAPI document.

use crate::helpers::new_notification;
use notifyhub::auth::Role;
use notifyhub::domain::NotificationType;
use serde_json::Value;
use uuid::Uuid;

crate::on_both_backends! {
    async fn health_and_readiness(app) {
        let res = app.client.get(format!("{}/healthz", app.address)).send().await.unwrap();
        assert_eq!(res.status(), 200);
        // Probes that use HEAD get the same answer, without a body.
        for path in ["/healthz", "/readyz"] {
            let res = app.client.head(format!("{}{path}", app.address)).send().await.unwrap();
            assert_eq!(res.status(), 200, "HEAD {path}");
            assert!(res.bytes().await.unwrap().is_empty());
        }
        let res = app.client.get(format!("{}/readyz", app.address)).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["checks"]["database"]["status"], "up");
        assert_eq!(body["checks"]["database"]["backend"], match app.backend {
            crate::helpers::Backend::Sqlite => "sqlite",
            crate::helpers::Backend::Postgres => "postgres",
        });
    }

    async fn metrics_count_requests_and_stored_notifications(app) {
        let user = Uuid::new_v4();
        app.store(vec![new_notification(user, NotificationType::SystemError, "x")]).await;
        app.get("/api/v1/notifications", &app.token(user, Role::User)).await;
        let text = app.client.get(format!("{}/metrics", app.address)).send().await.unwrap().text().await.unwrap();
        assert!(text.contains("notifyhub_http_requests_total{method=\"GET\",route=\"/api/v1/notifications\",status=\"200\"} 1"), "{text}");
        assert!(text.contains("notifyhub_http_request_duration_seconds_bucket{route=\"/api/v1/notifications\""), "{text}");
        assert!(text.contains("notifyhub_notifications_stored_total 1"), "{text}");
    }

    async fn openapi_lists_the_contract(app) {
        let doc: Value = app.client.get(format!("{}/api/openapi.json", app.address)).send().await.unwrap().json().await.unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for p in ["/api/v1/notifications", "/api/v1/notifications/{notification_id}/read", "/api/v1/notifications/read-all",
                  "/api/v1/notifications/preferences", "/api/v1/admin/users/{user_id}/preferences", "/readyz"] {
            assert!(paths.contains_key(p), "{p} missing");
        }
        assert!(doc["components"]["schemas"]["Notification"].is_object());
    }

    async fn the_ui_is_served_at_the_root(app) {
        let res = app.client.get(format!("{}/", app.address)).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert!(res.text().await.unwrap().contains("notifyhub"));
    }
}
