//! My preferences: read (defaults when none stored), partial update, erase.

use crate::api::json_body::JsonBody;
use crate::auth::AuthUser;
use crate::domain::pii::{mask_email, mask_phone};
use crate::domain::{NotificationPreferences, PreferencesPatch};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{preferences_doc, repository};
use actix_web::{delete, get, post, web, HttpResponse};
use serde_json::json;
use uuid::Uuid;

/// Loads a user's preferences, or the defaults when they never saved any.
pub async fn load(state: &AppState, user: Uuid) -> Result<NotificationPreferences, ApiError> {
    let doc = state.store.call(move |db| async move { repository::load_preferences(&db, user).await }).await?;
    Ok(preferences_doc::decode_or_default(doc, user, &state.pii)?)
}

/// Saving attempts before a writer racing others on one user's preferences gives up.
/// Every round one of the racers saves, so N updates at once need at most N rounds: 16
/// covers any plausible number of tabs and admins at once.
const SAVE_ATTEMPTS: usize = 16;

/// Applies a partial update for `user` and stores the result. The save only lands on
/// the version the patch was applied to; when another update got there first, the
/// patch is applied again to that one.
pub async fn update(
    state: &AppState,
    user: Uuid,
    patch: PreferencesPatch,
) -> Result<NotificationPreferences, ApiError> {
    let mut attempt = 0;
    let next = loop {
        attempt += 1;
        let stored =
            state.store.call(move |db| async move { repository::load_preferences_versioned(&db, user).await }).await?;
        let (doc, version) = stored.map_or((None, None), |(doc, at)| (Some(doc), Some(at)));
        let current = preferences_doc::decode_or_default(doc, user, &state.pii)?;
        let next = current.apply(patch.clone(), chrono::Utc::now())?;
        let doc = preferences_doc::encode(&next, &state.pii);
        let at = next.updated_at.unwrap_or_else(chrono::Utc::now);
        let saved = state
            .store
            .call(move |db| async move { repository::save_preferences_if(&db, user, doc, at, version).await })
            .await?;
        if saved {
            break next;
        }
        if attempt == SAVE_ATTEMPTS {
            return Err(ApiError::new(
                actix_web::http::StatusCode::CONFLICT,
                "CONCURRENT_UPDATE",
                "these preferences are being changed by another request right now; try again",
            ));
        }
    };
    state.profile_changed(user);
    tracing::info!(
        user_id = %user,
        email = next.email_address.as_ref().map(|e| mask_email(e.as_str())).unwrap_or_default(),
        phone = next.sms_phone_number.as_ref().map(|p| mask_phone(p.as_str())).unwrap_or_default(),
        "preferences updated"
    );
    Ok(next)
}

/// Get my preferences.
#[utoipa::path(
    get, path = "/api/v1/notifications/preferences", tag = "preferences",
    responses((status = 200, body = NotificationPreferences)),
    security(("bearer" = []))
)]
#[get("/notifications/preferences")]
pub async fn get_preferences(state: web::Data<AppState>, user: AuthUser) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(load(&state, user.user_id).await?))
}

/// Update my preferences (partial).
#[utoipa::path(
    post, path = "/api/v1/notifications/preferences", tag = "preferences",
    request_body = PreferencesPatch,
    responses((status = 200, description = "`{success, preferences}`"), (status = 400, description = "malformed JSON"),
              (status = 409, description = "`CONCURRENT_UPDATE`: more updates at once than one save can wait out; retry"),
              (status = 422, description = "invalid field, named in details.field")),
    security(("bearer" = []))
)]
#[post("/notifications/preferences")]
pub async fn update_preferences(
    state: web::Data<AppState>,
    user: AuthUser,
    patch: JsonBody<serde_json::Value>,
) -> Result<HttpResponse, ApiError> {
    let patch: PreferencesPatch = crate::domain::validation::from_json_object(patch.into_inner(), "")?;
    let prefs = update(&state, user.user_id, patch).await?;
    Ok(HttpResponse::Ok().json(json!({"success": true, "preferences": prefs})))
}

/// Erase my preferences (the defaults apply again).
#[utoipa::path(
    delete, path = "/api/v1/notifications/preferences", tag = "preferences",
    responses((status = 200, description = "`{success, deleted}`")),
    security(("bearer" = []))
)]
#[delete("/notifications/preferences")]
pub async fn delete_preferences(state: web::Data<AppState>, user: AuthUser) -> Result<HttpResponse, ApiError> {
    let uid = user.user_id;
    let n = state.store.call(move |db| async move { repository::delete_preferences(&db, uid).await }).await?;
    state.profile_changed(uid);
    Ok(HttpResponse::Ok().json(json!({"success": true, "deleted": n > 0})))
}
