//! Browser push subscriptions and the VAPID public key.

use crate::api::json_body::JsonBody;
use crate::auth::AuthUser;
use crate::channels::push::endpoint_allowed;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::outbox::{self, Subscription};
use actix_web::{delete, get, post, web, HttpResponse};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use serde_json::json;

/// `PushSubscription.toJSON()` as the browser gives it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct SubscriptionBody {
    /// Push service URL.
    pub endpoint: String,
    /// Ignored (browsers send it).
    #[serde(rename = "expirationTime", default)]
    #[schema(value_type = Option<f64>)]
    pub expiration_time: Option<serde_json::Value>,
    /// `p256dh` and `auth`, base64url.
    pub keys: SubscriptionKeys,
}

/// The subscription's keys.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct SubscriptionKeys {
    /// The browser's P-256 public key (65 bytes, base64url).
    pub p256dh: String,
    /// The auth secret (16 bytes, base64url).
    pub auth: String,
}

/// `{endpoint}` of a subscription to remove.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct EndpointBody {
    /// Push service URL.
    pub endpoint: String,
}

fn decoded_len(field: &str, value: &str, want: usize) -> Result<(), ApiError> {
    let raw = URL_SAFE_NO_PAD
        .decode(value.trim().trim_end_matches('='))
        .map_err(|_| ApiError::validation(field, "must be base64url"))?;
    if raw.len() != want {
        return Err(ApiError::validation(field, format!("must decode to {want} bytes (got {})", raw.len())));
    }
    Ok(())
}

/// The key browsers subscribe with (`applicationServerKey`).
#[utoipa::path(get, path = "/api/v1/push/vapid-public-key", tag = "push", responses((status = 200, description = "`{public_key}` (base64url)")))]
#[get("/push/vapid-public-key")]
pub async fn vapid_public_key(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(json!({"public_key": state.vapid_public_key}))
}

/// Register this browser for push.
#[utoipa::path(
    post, path = "/api/v1/push/subscriptions", tag = "push", request_body = SubscriptionBody,
    responses((status = 201, description = "`{success}`"), (status = 422, description = "bad keys, or an endpoint host not on the allow-list"),
              (status = 409, description = "`SUBSCRIPTION_TAKEN`: another user holds the endpoint with other keys")),
    security(("bearer" = []))
)]
#[post("/push/subscriptions")]
pub async fn subscribe(
    state: web::Data<AppState>,
    user: AuthUser,
    body: JsonBody<SubscriptionBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    if body.endpoint.len() > 2048 {
        return Err(ApiError::validation("endpoint", "must be at most 2048 characters"));
    }
    endpoint_allowed(&body.endpoint, &state.settings.push_allowed_hosts)
        .map_err(|e| ApiError::validation("endpoint", e))?;
    decoded_len("keys.p256dh", &body.keys.p256dh, 65)?;
    decoded_len("keys.auth", &body.keys.auth, 16)?;
    let sub = Subscription { endpoint: body.endpoint, p256dh: body.keys.p256dh, auth: body.keys.auth };
    let (uid, now) = (user.user_id, state.clock.now());
    match state.store.call(move |db| async move { outbox::save_subscription(&db, uid, sub, now).await }).await? {
        outbox::SavedSubscription::Saved { moved_from } => {
            if let Some(previous) = moved_from {
                tracing::info!(user_id = %uid, previous_user_id = %previous, "push subscription moved to the user signed in on that browser");
                state.profile_changed(previous);
            }
            state.profile_changed(uid);
            Ok(HttpResponse::Created().json(json!({"success": true})))
        }
        outbox::SavedSubscription::Taken => Err(ApiError::new(
            actix_web::http::StatusCode::CONFLICT,
            "SUBSCRIPTION_TAKEN",
            "another user holds this push endpoint with other keys; subscribe this browser anew",
        )
        .with_details(json!({"field": "endpoint"}))),
    }
}

/// Remove one of my push subscriptions.
#[utoipa::path(
    delete, path = "/api/v1/push/subscriptions", tag = "push", request_body = EndpointBody,
    responses((status = 200, description = "`{success, deleted}`")),
    security(("bearer" = []))
)]
#[delete("/push/subscriptions")]
pub async fn unsubscribe(
    state: web::Data<AppState>,
    user: AuthUser,
    body: JsonBody<EndpointBody>,
) -> Result<HttpResponse, ApiError> {
    let (uid, endpoint) = (user.user_id, body.into_inner().endpoint);
    let deleted =
        state.store.call(move |db| async move { outbox::delete_subscription(&db, Some(uid), &endpoint).await }).await?;
    state.profile_changed(uid);
    Ok(HttpResponse::Ok().json(json!({"success": true, "deleted": deleted})))
}
