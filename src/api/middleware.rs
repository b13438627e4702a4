//! One middleware around every request: assigns the request id (or keeps a sane
//! incoming `X-Request-Id`), makes it visible to error bodies and log lines, echoes it
//! in the response header, and records metrics and an access log line.

use crate::error::REQUEST_ID;
use crate::state::AppState;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web;
use std::time::Instant;
use tracing::Instrument;

/// The request-id header.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

fn incoming_id(req: &ServiceRequest) -> Option<String> {
    let v = req.headers().get(REQUEST_ID_HEADER)?.to_str().ok()?;
    let ok = !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    ok.then(|| v.to_string())
}

/// The middleware function (`actix_web::middleware::from_fn`).
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = incoming_id(&req)
        .unwrap_or_else(|| uuid::Uuid::new_v4().hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer()).to_owned());
    let started = Instant::now();
    // A standard method clones without allocating; the path is only read when the span
    // is enabled (`RUST_LOG` at `info`, the default, or finer).
    let method = req.method().clone();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let span = tracing::info_span!("request", request_id = %id, method = %method, path = %req.path());
    let result = REQUEST_ID.scope(id.clone(), next.call(req).instrument(span.clone())).await;
    let mut res = result?;
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(HeaderName::from_static(REQUEST_ID_HEADER), v);
    }
    let status = res.status().as_u16();
    let elapsed = started.elapsed();
    let route = res.request().match_pattern().unwrap_or_else(|| "unmatched".to_string());
    if let Some(state) = state {
        state.metrics.observe_request(method.as_str(), &route, status, elapsed);
    }
    span.in_scope(|| {
        let latency_ms = elapsed.as_secs_f64() * 1000.0;
        if status >= 500 {
            tracing::error!(status, latency_ms, route = %route, "request failed");
        } else {
            tracing::info!(status, latency_ms, route = %route, "request");
        }
    });
    Ok(res)
}
