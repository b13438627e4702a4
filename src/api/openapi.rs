//! The OpenAPI document, generated from the handlers' annotations.

use actix_web::{get, HttpResponse};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "notifyhub", description = "Real-time notification hub for trading dashboards"),
    paths(
        super::notifications::list,
        super::notifications::mark_read,
        super::notifications::mark_all_read,
        super::notifications::delete_all,
        super::preferences::get_preferences,
        super::preferences::update_preferences,
        super::preferences::delete_preferences,
        super::admin::get_user_preferences,
        super::admin::update_user_preferences,
        super::events::post_event,
        super::channels::send_test,
        super::channels::deliveries,
        super::channels::sandbox_outbox,
        super::push::vapid_public_key,
        super::push::subscribe,
        super::push::unsubscribe,
        super::ops::healthz,
        super::ops::readyz,
        super::ops::metrics,
    ),
    components(schemas(
        crate::domain::Notification,
        crate::domain::NotificationType,
        crate::domain::Priority,
        crate::domain::Channel,
        crate::domain::NotificationPreferences,
        crate::domain::QuietHours,
        crate::domain::ChannelPreferences,
        crate::domain::PreferencesPatch,
        super::notifications::NotificationPage,
        super::notifications::Pagination,
        super::push::SubscriptionBody,
        super::push::SubscriptionKeys,
        super::push::EndpointBody,
        crate::store::outbox::DeliveryView,
        crate::channels::sandbox::SandboxMessage,
    )),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// `GET /api/openapi.json`.
#[get("/api/openapi.json")]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
