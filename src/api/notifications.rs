//! The inbox: list, mark read, read-all, erase.

use crate::auth::AuthUser;
use crate::domain::{Notification, NotificationType};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::repository::{self, ListQuery};
use actix_web::{delete, get, patch, post, web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

/// Raw query parameters, parsed by hand so each refusal names its parameter.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ListParams {
    /// `true` for unread only.
    unread_only: Option<String>,
    /// One of the four types.
    notification_type: Option<String>,
    /// 1–100, default 50.
    limit: Option<String>,
    /// 0 or more, default 0.
    offset: Option<String>,
}

/// The pagination object of the story.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Pagination {
    /// Items in this page.
    pub returned_count: usize,
    /// Items matching the filters.
    pub total_count: i64,
    /// Page size asked for.
    pub limit: i64,
    /// Items skipped.
    pub offset: i64,
    /// Whether more items follow this page.
    pub has_more: bool,
}

/// A page of notifications.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NotificationPage {
    /// Newest first.
    pub data: Vec<Notification>,
    /// Paging.
    pub pagination: Pagination,
}

/// Any id that is not one of mine — malformed, absent or someone else's — is a 404, so
/// ids cannot be probed.
pub fn notification_not_found() -> ApiError {
    ApiError::not_found("notification not found")
}

/// A notification id from the path (404 when malformed).
pub fn notification_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw.trim()).map_err(|_| notification_not_found())
}

fn query_field(field: &str, reason: impl Into<String>) -> ApiError {
    let reason = reason.into();
    ApiError::bad_request(format!("{field}: {reason}")).with_details(json!({"field": field, "reason": reason}))
}

impl ListParams {
    fn parse(&self) -> Result<ListQuery, ApiError> {
        // Any case: `TRUE` and `True` are what some clients write.
        let unread_only = match self.unread_only.as_deref().map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("false") | Some("0") => false,
            Some("true") | Some("1") => true,
            Some(_) => {
                let given = self.unread_only.as_deref().unwrap_or_default().trim();
                return Err(query_field("unread_only", format!("'{given}' is not true or false")));
            }
        };
        let notification_type = match self.notification_type.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(raw) => Some(
                raw.parse::<NotificationType>().map_err(|e| query_field("notification_type", e))?.as_str().to_string(),
            ),
        };
        let limit = match self.limit.as_deref() {
            None => 50,
            Some(raw) => match raw.trim().parse::<i64>() {
                Ok(n) if (1..=100).contains(&n) => n,
                _ => return Err(query_field("limit", format!("must be a whole number from 1 to 100 (got '{raw}')"))),
            },
        };
        let offset = match self.offset.as_deref() {
            None => 0,
            Some(raw) => match raw.trim().parse::<i64>() {
                Ok(n) if n >= 0 => n,
                _ => return Err(query_field("offset", format!("must be a whole number, 0 or more (got '{raw}')"))),
            },
        };
        Ok(ListQuery { unread_only, notification_type, limit, offset })
    }
}

/// List my notifications, newest first.
#[utoipa::path(
    get, path = "/api/v1/notifications", tag = "notifications",
    params(ListParams),
    responses((status = 200, body = NotificationPage), (status = 400, description = "invalid query parameter"), (status = 401)),
    security(("bearer" = []))
)]
#[get("/notifications")]
pub async fn list(
    state: web::Data<AppState>,
    user: AuthUser,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
    let q = params.parse()?;
    let uid = user.user_id;
    let q2 = q.clone();
    let (data, total) =
        state.store.call(move |db| async move { repository::list_notifications(&db, uid, &q2).await }).await?;
    let returned = data.len();
    Ok(HttpResponse::Ok().json(NotificationPage {
        data,
        pagination: Pagination {
            returned_count: returned,
            total_count: total,
            limit: q.limit,
            offset: q.offset,
            has_more: q.offset + (returned as i64) < total,
        },
    }))
}

/// Mark one of my notifications read.
#[utoipa::path(
    patch, path = "/api/v1/notifications/{notification_id}/read", tag = "notifications",
    params(("notification_id" = Uuid, Path)),
    responses((status = 200, description = "`{success, notification_id}`"), (status = 404, description = "not found or not yours")),
    security(("bearer" = []))
)]
#[patch("/notifications/{notification_id}/read")]
pub async fn mark_read(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = notification_id(&path)?;
    let uid = user.user_id;
    let unread = state
        .store
        .call(move |db| async move { repository::mark_read(&db, uid, id).await })
        .await?
        .ok_or_else(notification_not_found)?;
    state.unread_changed(uid, unread);
    Ok(HttpResponse::Ok().json(json!({"success": true, "notification_id": id})))
}

/// Mark all my notifications read (one statement).
#[utoipa::path(
    post, path = "/api/v1/notifications/read-all", tag = "notifications",
    responses((status = 200, description = "`{success, updated_count}`")),
    security(("bearer" = []))
)]
#[post("/notifications/read-all")]
pub async fn mark_all_read(state: web::Data<AppState>, user: AuthUser) -> Result<HttpResponse, ApiError> {
    let uid = user.user_id;
    let n = state.store.call(move |db| async move { repository::mark_all_read(&db, uid).await }).await?;
    state.unread_changed(uid, 0);
    Ok(HttpResponse::Ok().json(json!({"success": true, "updated_count": n})))
}

/// Erase my notification history.
#[utoipa::path(
    delete, path = "/api/v1/notifications", tag = "notifications",
    responses((status = 200, description = "`{success, deleted_count}`")),
    security(("bearer" = []))
)]
#[delete("/notifications")]
pub async fn delete_all(state: web::Data<AppState>, user: AuthUser) -> Result<HttpResponse, ApiError> {
    let uid = user.user_id;
    let n = state.store.call(move |db| async move { repository::delete_notifications(&db, uid).await }).await?;
    state.unread_changed(uid, 0);
    tracing::info!(user_id = %uid, deleted = n, "notification history erased");
    Ok(HttpResponse::Ok().json(json!({"success": true, "deleted_count": n})))
}
