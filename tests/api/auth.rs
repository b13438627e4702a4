//! Authentication and authorisation refusals, in the contract's error format.

use crate::helpers::{assert_error, JWT_SECRET, SERVICE_TOKEN};
use notifyhub::auth::{Claims, Role};
use uuid::Uuid;

fn expired_token(user: Uuid) -> String {
    let claims = Claims { sub: user.to_string(), role: Role::User, exp: chrono::Utc::now().timestamp() - 600, iat: 0 };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

crate::on_both_backends! {
    async fn missing_forged_and_expired_tokens_get_401(app) {
        let url = format!("{}/api/v1/notifications", app.address);
        let res = app.client.get(&url).send().await.unwrap();
        assert_error(res, 401, "UNAUTHORIZED").await;

        let forged = notifyhub::auth::JwtKeys::new("some-other-secret-entirely").issue(Uuid::new_v4(), Role::User, std::time::Duration::from_secs(60));
        let res = app.get("/api/v1/notifications", &forged).await;
        assert_error(res, 401, "UNAUTHORIZED").await;

        let res = app.get("/api/v1/notifications", &expired_token(Uuid::new_v4())).await;
        assert_error(res, 401, "TOKEN_EXPIRED").await;

        let res = app.client.get(&url).header("Authorization", "Basic abc").send().await.unwrap();
        assert_error(res, 401, "UNAUTHORIZED").await;
    }

    async fn wrong_roles_get_403(app) {
        let service = app.token(Uuid::new_v4(), Role::Service);
        let res = app.get("/api/v1/notifications", &service).await;
        assert_error(res, 403, "FORBIDDEN").await;
        // A bridge token is a valid credential of the wrong kind, like a service JWT.
        let res = app.get("/api/v1/notifications", SERVICE_TOKEN).await;
        assert_error(res, 403, "FORBIDDEN").await;
        let res = app.client.get(format!("{}/ws?token={SERVICE_TOKEN}", app.address)).send().await.unwrap();
        assert_error(res, 403, "FORBIDDEN").await;

        let user = app.token(Uuid::new_v4(), Role::User);
        let res = app.get(&format!("/api/v1/admin/users/{}/preferences", Uuid::new_v4()), &user).await;
        assert_error(res, 403, "FORBIDDEN").await;
    }

    async fn request_ids_are_echoed_and_kept_when_sane(app) {
        let token = app.token(Uuid::new_v4(), Role::User);
        let res = app.client.get(format!("{}/api/v1/notifications", app.address))
            .bearer_auth(&token).header("X-Request-Id", "trace-abc-123").send().await.unwrap();
        assert_eq!(res.headers()["x-request-id"], "trace-abc-123");
        let res = app.client.get(format!("{}/api/v1/notifications", app.address))
            .header("X-Request-Id", "trace-xyz").send().await.unwrap();
        let body = assert_error(res, 401, "UNAUTHORIZED").await;
        assert_eq!(body["error"]["request_id"], "trace-xyz");
        let res = app.client.get(format!("{}/healthz", app.address))
            .header("X-Request-Id", "bad id with spaces").send().await.unwrap();
        assert_ne!(res.headers()["x-request-id"], "bad id with spaces");
    }

    async fn unknown_routes_answer_in_the_error_format(app) {
        let res = app.client.get(format!("{}/api/v1/nope", app.address)).send().await.unwrap();
        assert_error(res, 404, "NOT_FOUND").await;
    }
}
