//! Admin access to any user's preferences.

use crate::api::json_body::JsonBody;
use crate::api::preferences::{load, update};
use crate::auth::AdminUser;
use crate::domain::{NotificationPreferences, PreferencesPatch};
use crate::error::ApiError;
use crate::state::AppState;
use actix_web::{get, post, web, HttpResponse};
use serde_json::json;
use uuid::Uuid;

fn user_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw.trim()).map_err(|_| ApiError::validation("user_id", "must be a UUID"))
}

/// Get any user's preferences (defaults for a user who never saved any).
#[utoipa::path(
    get, path = "/api/v1/admin/users/{user_id}/preferences", tag = "admin",
    params(("user_id" = Uuid, Path)),
    responses((status = 200, body = NotificationPreferences), (status = 403, description = "not an admin")),
    security(("bearer" = []))
)]
#[get("/admin/users/{user_id}/preferences")]
pub async fn get_user_preferences(
    state: web::Data<AppState>,
    _admin: AdminUser,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let user = user_id(&path)?;
    Ok(HttpResponse::Ok().json(load(&state, user).await?))
}

/// Update any user's preferences (partial).
#[utoipa::path(
    post, path = "/api/v1/admin/users/{user_id}/preferences", tag = "admin",
    params(("user_id" = Uuid, Path)),
    request_body = PreferencesPatch,
    responses((status = 200, description = "`{success, preferences}`"), (status = 403), (status = 422)),
    security(("bearer" = []))
)]
#[post("/admin/users/{user_id}/preferences")]
pub async fn update_user_preferences(
    state: web::Data<AppState>,
    admin: AdminUser,
    path: web::Path<String>,
    patch: JsonBody<serde_json::Value>,
) -> Result<HttpResponse, ApiError> {
    let user = user_id(&path)?;
    // The user is recorded now if the admin configures them before their first visit.
    state.users.ensure_exists(&state.store, user).await?;
    let patch: PreferencesPatch = crate::domain::validation::from_json_object(patch.into_inner(), "")?;
    let prefs = update(&state, user, patch).await?;
    tracing::info!(admin = %admin.0.user_id, user_id = %user, "admin updated preferences");
    Ok(HttpResponse::Ok().json(json!({"success": true, "preferences": prefs})))
}
