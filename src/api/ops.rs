//! Operations: liveness, readiness, metrics.

use crate::state::AppState;
use actix_web::{get, route, web, HttpResponse};
use serde_json::json;
use std::time::Duration;

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "alive")))]
#[route("/healthz", method = "GET", method = "HEAD")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// The database answers: ready to serve.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, description = "ready"), (status = 503, description = "database unreachable")))]
#[route("/readyz", method = "GET", method = "HEAD")]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let ping = state.store.call(|db| async move { db.ping().await });
    let result = tokio::time::timeout(Duration::from_secs(3), ping).await;
    let backend = state.store.backend();
    match result {
        Ok(Ok(())) => HttpResponse::Ok().json(json!({
            "status": "ready",
            "checks": {"database": {"status": "up", "backend": backend}, "channels": channel_checks(&state)}
        })),
        Ok(Err(e)) => not_ready(backend, &e.to_string()),
        Err(_) => not_ready(backend, "timed out after 3 s"),
    }
}

/// Circuit state per channel (an open circuit degrades a channel, not readiness).
fn channel_checks(state: &AppState) -> serde_json::Value {
    let name = |v: u8| match v {
        1 => "open",
        2 => "half_open",
        _ => "closed",
    };
    let mut out = serde_json::Map::new();
    for c in [crate::domain::Channel::Email, crate::domain::Channel::Sms, crate::domain::Channel::Push] {
        out.insert(c.as_str().into(), json!({"circuit": name(state.metrics.breaker(c))}));
    }
    serde_json::Value::Object(out)
}

fn not_ready(backend: &str, why: &str) -> HttpResponse {
    // The cause (host names, driver messages) goes to the log: this answer needs no login.
    tracing::warn!(reason = why, "not ready");
    let summary = if why.starts_with("timed out") { why } else { "unreachable (the hub's log has the cause)" };
    let mut err = crate::error::ApiError::unavailable("not ready: the database is unreachable")
        .with_details(json!({"checks": {"database": {"status": "down", "backend": backend, "error": summary}}}))
        .body();
    err["status"] = json!("not_ready");
    HttpResponse::ServiceUnavailable().json(err)
}

/// Prometheus text metrics.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text")))]
#[get("/metrics")]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(state.metrics.render(state.store.backend()))
}
