//! Test messages per channel, delivery status per notification, and the sandbox outbox.

use crate::actors::channel::{SendTest, TestRefusal};
use crate::actors::dispatcher::Outcome;
use crate::auth::{AuthUser, Role};
use crate::domain::events::{Audience, Content, Event, EventKind};
use crate::domain::{Channel, NotificationType, Priority};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::outbox::{self, DeliveryView};
use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::oneshot;

/// Send a test message on one channel to myself.
#[utoipa::path(
    post, path = "/api/v1/notifications/test/{channel}", tag = "notifications",
    params(("channel" = String, Path, description = "email, sms, push or toast")),
    responses(
        (status = 202, description = "`{success, message}`"),
        (status = 400, description = "channel disabled, no address/subscription, or refused by the provider"),
        (status = 429, description = "`RATE_LIMITED`: the hour's SMS (30) or emails (100) are spent, tests included, or its 20 test pushes"),
        (status = 503, description = "the channel's circuit is open or its provider is unavailable"),
    ),
    security(("bearer" = []))
)]
#[post("/notifications/test/{channel}")]
pub async fn send_test(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let channel: Channel =
        path.parse().map_err(|e: String| ApiError::bad_request(e).with_details(json!({"field": "channel"})))?;
    if channel == Channel::Toast {
        let event = Event {
            kind: EventKind::Test(Content {
                notification_type: NotificationType::SystemError,
                priority: Priority::Info,
                title: "Test notification".into(),
                message: "Toasts reach this dashboard.".into(),
                metadata: crate::domain::metadata::Metadata::from_value(&json!({"test": true})),
            }),
            audience: Audience::Users(vec![user.user_id]),
        };
        return match state.dispatch.dispatch(event).await? {
            Outcome::Accepted { notifications, .. }
                if notifications.first().is_some_and(|n| n.channels.contains(&Channel::Toast)) =>
            {
                Ok(HttpResponse::Accepted()
                    .json(json!({"success": true, "message": "Test toast sent to your open tabs"})))
            }
            // Quiet hours or the user's routing keep info toasts away: for this test the
            // channel is as good as switched off, and the answer says why.
            _ => Err(ApiError::new(
                actix_web::http::StatusCode::BAD_REQUEST,
                "CHANNEL_DISABLED",
                "toasts are not routed for info notifications right now (quiet hours or routing)",
            )
            .with_details(json!({"channel": "toast"}))),
        };
    }
    let actor = state.channels.get(channel).ok_or_else(ApiError::internal)?;
    let (tx, rx) = oneshot::channel();
    actor
        .send(SendTest { user: user.user_id, reply: tx })
        .await
        .map_err(|_| ApiError::unavailable("channel stopped"))?;
    let refusal = |status, code, message: String| {
        Err(ApiError::new(status, code, message).with_details(json!({"channel": channel.as_str()})))
    };
    match rx.await.map_err(|_| ApiError::unavailable("channel stopped"))? {
        Ok(dest) => Ok(HttpResponse::Accepted()
            .json(json!({"success": true, "message": format!("Test {} sent to {dest}", channel.as_str())}))),
        Err(TestRefusal::Disabled) => refusal(
            StatusCode::BAD_REQUEST,
            "CHANNEL_DISABLED",
            format!("{} is disabled in your preferences", channel.as_str()),
        ),
        Err(TestRefusal::NoAddress) => refusal(
            StatusCode::BAD_REQUEST,
            "NO_ADDRESS",
            match channel {
                Channel::Email => "no email address in your preferences".into(),
                Channel::Sms => "no phone number in your preferences".into(),
                _ => "this browser has no push subscription".into(),
            },
        ),
        Err(TestRefusal::CircuitOpen) => refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "CIRCUIT_OPEN",
            format!("the {} provider failed repeatedly; sends are paused for up to 60 s", channel.as_str()),
        ),
        Err(TestRefusal::RateLimited(limit)) => refusal(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMITED",
            match channel {
                Channel::Push => format!("at most {limit} test pushes an hour; this hour's are spent"),
                _ => format!(
                    "at most {limit} {} messages per hour reach you, tests included; this hour's are spent",
                    channel.as_str()
                ),
            },
        ),
        Err(TestRefusal::Unavailable(e)) => refusal(StatusCode::SERVICE_UNAVAILABLE, "PROVIDER_UNAVAILABLE", e),
        Err(TestRefusal::Rejected(e)) => refusal(StatusCode::BAD_REQUEST, "NOTIFICATION_SEND_FAILED", e),
    }
}

/// Where one of my notifications went, and where it did not and why.
#[utoipa::path(
    get, path = "/api/v1/notifications/{notification_id}/deliveries", tag = "notifications",
    params(("notification_id" = Uuid, Path)),
    responses((status = 200, description = "`{data: [DeliveryView]}`"), (status = 404)),
    security(("bearer" = []))
)]
#[get("/notifications/{notification_id}/deliveries")]
pub async fn deliveries(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let not_found = super::notifications::notification_not_found;
    let id = super::notifications::notification_id(&path)?;
    let uid = user.user_id;
    let mut rows = state
        .store
        .call(move |db| async move { outbox::deliveries_of(&db, uid, id).await })
        .await?
        .ok_or_else(not_found)?;
    // A toast that went out has no row (see `NewDelivery::for_routing`), and neither has
    // one the user's routing for that priority leaves out: the notification says which.
    if !rows.iter().any(|r| r.channel == Channel::Toast) {
        let (created_at, toast) = state
            .store
            .call(move |db| async move { outbox::toast_outcome(&db, id).await })
            .await?
            .ok_or_else(not_found)?;
        let (status, reason, attempts) = if toast { ("sent", None, 1) } else { ("suppressed", Some("not_routed"), 0) };
        rows.insert(
            0,
            DeliveryView {
                channel: Channel::Toast,
                status: status.into(),
                reason: reason.map(str::to_string),
                attempts,
                last_error: None,
                updated_at: created_at,
            },
        );
    }
    Ok(HttpResponse::Ok().json(json!({"data": rows})))
}

/// Query of the sandbox listing.
#[derive(Debug, Deserialize)]
pub struct SandboxParams {
    limit: Option<usize>,
}

/// What the sandbox "sent" (to me; admins see everyone's).
#[utoipa::path(
    get, path = "/api/v1/sandbox/outbox", tag = "sandbox",
    responses((status = 200, description = "`{email_mode, sms_mode, data: [SandboxMessage]}` newest first")),
    security(("bearer" = []))
)]
#[get("/sandbox/outbox")]
pub async fn sandbox_outbox(
    state: web::Data<AppState>,
    user: AuthUser,
    q: web::Query<SandboxParams>,
) -> Result<HttpResponse, ApiError> {
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let who = (user.role != Role::Admin).then_some(user.user_id);
    let sandbox = state.sandbox.clone();
    let data = web::block(move || sandbox.list(who, limit)).await.map_err(|_| ApiError::internal())?.map_err(|e| {
        tracing::error!(error = %e, "cannot read the sandbox outbox");
        ApiError::internal()
    })?;
    Ok(HttpResponse::Ok().json(json!({
        "email_mode": if state.settings.smtp.is_some() { "smtp" } else { "sandbox" },
        "sms_mode": if state.settings.twilio.is_some() { "twilio" } else { "sandbox" },
        "data": data,
    })))
}
