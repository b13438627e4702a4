//! HTTP routes. Handlers parse and authorise at the edge, call the store through the
//! persistence actor, and answer in the contract's JSON (errors included).

pub mod admin;
pub mod channels;
pub mod events;
pub mod json_body;
pub mod middleware;
pub mod notifications;
pub mod openapi;
pub mod ops;
pub mod preferences;
pub mod push;
pub mod ws;

use crate::error::ApiError;
use actix_web::error::{JsonPayloadError, PathError, PayloadError, QueryPayloadError};
use actix_web::{web, HttpRequest};
use serde_json::json;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Registers every route under `/api/v1` plus the ops endpoints.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
        .app_data(web::QueryConfig::default().error_handler(query_error))
        .app_data(web::PathConfig::default().error_handler(path_error))
        .service(ops::healthz)
        .service(ops::readyz)
        .service(ops::metrics)
        .service(openapi::openapi_json)
        .service(ws::connect)
        .service(
            web::scope("/api/v1")
                // First: the router tries routes in order, and the bridge's events are
                // most of the traffic; behind the routes with path parameters, each
                // event paid for their regexes.
                .service(events::route())
                .service(preferences::get_preferences)
                .service(preferences::update_preferences)
                .service(preferences::delete_preferences)
                .service(notifications::list)
                .service(notifications::mark_all_read)
                .service(notifications::delete_all)
                .service(notifications::mark_read)
                .service(channels::send_test)
                .service(channels::deliveries)
                .service(channels::sandbox_outbox)
                .service(push::vapid_public_key)
                .service(push::subscribe)
                .service(push::unsubscribe)
                .service(admin::get_user_preferences)
                .service(admin::update_user_preferences),
        );
}

/// Maps a JSON body's failure to the contract's error (bodies are read by
/// [`json_body::JsonBody`]: at most 64 KiB; malformed → 400, well-formed but wrong → 422).
pub fn api_json_error(err: JsonPayloadError) -> ApiError {
    match err {
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            ApiError::payload_too_large(MAX_BODY_BYTES)
        }
        JsonPayloadError::Payload(PayloadError::Overflow) => ApiError::payload_too_large(MAX_BODY_BYTES),
        JsonPayloadError::ContentType => ApiError::new(
            actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "send the body as application/json",
        ),
        JsonPayloadError::Deserialize(e) => serde_error(&e),
        other => ApiError::bad_request(format!("cannot read the request body: {other}")),
    }
}

/// Syntax errors are 400 (`INVALID_JSON`); type and field errors are 422 naming the field.
pub fn serde_error(e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Data => {
            let text = e.to_string();
            let field = crate::domain::validation::field_named_in(&text).unwrap_or("body").to_string();
            ApiError::validation(&field, text)
        }
        _ => ApiError::new(actix_web::http::StatusCode::BAD_REQUEST, "INVALID_JSON", format!("malformed JSON: {e}")),
    }
}

fn query_error(err: QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    let reason = err.to_string();
    let error = ApiError::bad_request(format!("invalid query parameters: {reason}"));
    // serde names the field in its message ("duplicate field `limit`"); a client wants it
    // where the other refusals put it.
    let serde_message = match &err {
        QueryPayloadError::Deserialize(e) => e.to_string(),
        _ => String::new(),
    };
    match crate::domain::validation::field_named_in(&serde_message) {
        Some(field) => error.with_details(json!({"field": field, "reason": reason})).into(),
        None => error.into(),
    }
}

fn path_error(err: PathError, _: &HttpRequest) -> actix_web::Error {
    ApiError::bad_request(format!("invalid path parameter: {err}"))
        .with_details(json!({"reason": err.to_string()}))
        .into()
}

/// Any route that does not exist.
pub async fn not_found(req: HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::not_found(format!("no route for {} {}", req.method(), req.path())))
}
