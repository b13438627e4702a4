//! The HTTP bridge: internal services post events with a service token.

use crate::actors::dispatcher::Outcome;
use crate::api::json_body::JsonText;
use crate::auth::ServiceCaller;
use crate::domain::events::Event;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::bridge::{self, IdempotencyState};
use actix_web::http::StatusCode;
use actix_web::{guard, web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use tracing::Instrument;

/// Up to this many recipients are listed one by one in the answer.
const LIST_LIMIT: usize = 100;

fn idempotency_key(req: &HttpRequest, caller: &ServiceCaller) -> Result<Option<String>, ApiError> {
    let Some(raw) = req.headers().get("idempotency-key") else { return Ok(None) };
    let key = raw
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .ok_or_else(|| ApiError::bad_request("Idempotency-Key must be 1 to 255 visible ASCII characters"))?;
    // Keys are per caller: two services may use the same key without clashing.
    Ok(Some(format!("{caller}:{key}")))
}

/// What identifies a request for its `Idempotency-Key`: the SHA-256 of its JSON, keys
/// sorted and whitespace dropped (serde_json's maps are ordered), so a retry that
/// re-serialises the same event matches.
fn request_fingerprint(body: &Value) -> String {
    use sha2::{Digest, Sha256};
    let canonical = serde_json::to_vec(body).unwrap_or_default();
    Sha256::digest(&canonical).iter().map(|b| format!("{b:02x}")).collect()
}

/// The answer's status: 202 when something was stored, 200 when nothing was.
fn status(outcome: &Outcome) -> StatusCode {
    match outcome {
        Outcome::Accepted { .. } => StatusCode::ACCEPTED,
        Outcome::Filtered(_) | Outcome::Throttled(_) => StatusCode::OK,
    }
}

/// The answer's JSON text, written by hand: serde wrote it key by key and escaped every
/// key and id, ~3,000 instructions of each event's (callgrind). The tests check it against
/// serde's writing of the same answer. Up to LIST_LIMIT recipients are listed.
fn answer_text(outcome: &Outcome) -> String {
    let count = |out: &mut String, key: &str, n: usize| {
        out.push_str(key);
        out.push_str(itoa::Buffer::new().format(n));
    };
    // Sized once: reserving the listed recipients after a first allocation moved it
    // (a realloc per event).
    let listed_bytes = match outcome {
        Outcome::Accepted { notifications, .. } if notifications.len() <= LIST_LIMIT => notifications.len() * 160,
        _ => 0,
    };
    let mut out = String::with_capacity(128 + listed_bytes);
    match outcome {
        Outcome::Accepted { notifications, filtered_count, throttled_count } => {
            let listed = notifications.len() <= LIST_LIMIT;
            count(&mut out, r#"{"status":"accepted","accepted_count":"#, notifications.len());
            count(&mut out, r#","filtered_count":"#, *filtered_count);
            count(&mut out, r#","throttled_count":"#, *throttled_count);
            if listed {
                out.push_str(r#","notifications":["#);
                for (i, n) in notifications.iter().enumerate() {
                    let mut id = uuid::Uuid::encode_buffer();
                    out.push_str(if i == 0 { r#"{"user_id":""# } else { r#",{"user_id":""# });
                    out.push_str(n.user_id.hyphenated().encode_lower(&mut id));
                    out.push_str(r#"","notification_id":""#);
                    out.push_str(n.notification_id.hyphenated().encode_lower(&mut id));
                    out.push_str(r#"","sequence_number":"#);
                    out.push_str(itoa::Buffer::new().format(n.sequence_number));
                    out.push_str(r#","channels":["#);
                    for (j, c) in n.channels.iter().enumerate() {
                        out.push_str(if j == 0 { "\"" } else { ",\"" });
                        out.push_str(c.as_str());
                        out.push('"');
                    }
                    out.push_str("]}");
                }
                out.push(']');
            }
            out.push('}');
        }
        Outcome::Filtered(reason) | Outcome::Throttled(reason) => {
            let status = if matches!(outcome, Outcome::Filtered(_)) { "filtered" } else { "throttled" };
            out.push_str(r#"{"status":""#);
            out.push_str(status);
            out.push_str(r#"","reason":"#);
            crate::domain::json_text::push_str(&mut out, reason);
            out.push_str(r#","accepted_count":0}"#);
        }
    }
    out
}

async fn dispatch_and_record(state: &AppState, event: Event, key: Option<String>) -> Result<Outcome, ApiError> {
    let outcome = match state.dispatch.dispatch(event).await {
        Ok(o) => o,
        Err(e) => {
            if let Some(k) = key {
                // Let the caller's retry run again.
                let _ = state.store.call(move |db| async move { bridge::idempotency_abort(&db, &k).await }).await;
            }
            return Err(e.into());
        }
    };
    if let Some(k) = key {
        // What the caller got, as a document (a retry gets it again as JSON).
        let stored = serde_json::from_str(&answer_text(&outcome)).map_err(|_| ApiError::internal())?;
        let code = status(&outcome).as_u16();
        if let Err(e) =
            state.store.call(move |db| async move { bridge::idempotency_complete(&db, &k, code, stored).await }).await
        {
            tracing::warn!(error = %e, "could not record the idempotent answer");
        }
    }
    Ok(outcome)
}

/// The bridge's route, `POST /events`. Its guard only compares the method: actix-web's
/// own method guard (what `#[post]` registers) also records the method in the request's
/// extensions, for a 405 nobody sends here (an unknown route is a 404 in the error
/// format), which cost every event three allocations.
pub fn route() -> actix_web::Resource {
    web::resource("/events")
        .guard(guard::fn_guard(|ctx| ctx.head().method == actix_web::http::Method::POST))
        .to(post_event)
}

/// Post an event (service token). With `Idempotency-Key`, a retry gets the first
/// answer and nothing is stored twice (keys are kept 24 h).
#[utoipa::path(
    post, path = "/api/v1/events", tag = "bridge",
    request_body(content = Object, description = "One of the five event kinds of the contract"),
    params(("Idempotency-Key" = Option<String>, Header, description = "retry-safe key, kept 24 h")),
    responses(
        (status = 202, description = "`{status: accepted, accepted_count, notifications:[{user_id, notification_id, sequence_number, channels}]}`"),
        (status = 200, description = "`{status: filtered|throttled, reason}`: nothing stored"),
        (status = 400, description = "malformed JSON"), (status = 401), (status = 403),
        (status = 409, description = "a request with this Idempotency-Key is still being processed"),
        (status = 422, description = "invalid event, field named in details.field; `IDEMPOTENCY_KEY_REUSED`: the key was first used for a different request"),
        (status = 503, description = "database unreachable: retry with the same Idempotency-Key"),
    ),
    security(("bearer" = []))
)]
pub async fn post_event(
    state: web::Data<AppState>,
    caller: ServiceCaller,
    req: HttpRequest,
    body: JsonText,
) -> Result<HttpResponse, ApiError> {
    // Read straight into the event, without a Value of the whole body (only the
    // idempotency fingerprint needs one); a body that makes no event is checked for being
    // JSON at all first, so malformed JSON gets its 400 before a refusal naming a field.
    let (text, event) = match body.text().map(|text| (text, Event::parse_json(text))) {
        Some((text, Ok(event))) => (text, event),
        Some((_, Err(refusal))) => {
            body.well_formed()?;
            return Err(refusal.into());
        }
        None => {
            body.well_formed()?;
            return Err(ApiError::bad_request("the body is not UTF-8"));
        }
    };
    let key = idempotency_key(&req, &caller)?;
    let fingerprint = match &key {
        Some(_) => Some(request_fingerprint(&serde_json::from_str(text).map_err(|_| ApiError::internal())?)),
        None => None,
    };
    if let (Some(key), Some(fingerprint)) = (&key, fingerprint) {
        let (k, now) = (key.clone(), state.clock.now());
        match state
            .store
            .call(move |db| async move { bridge::idempotency_begin(&db, &k, &fingerprint, now).await })
            .await?
        {
            IdempotencyState::Started => {}
            IdempotencyState::Reused => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "IDEMPOTENCY_KEY_REUSED",
                    "this Idempotency-Key was first used for a different request; use a new key for a new event",
                )
                .with_details(json!({"field": "Idempotency-Key"})))
            }
            IdempotencyState::InProgress => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "IDEMPOTENCY_IN_PROGRESS",
                    "a request with this Idempotency-Key is still being processed; retry shortly",
                ))
            }
            IdempotencyState::Done(status, body) => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                return Ok(HttpResponse::build(status).insert_header(("Idempotent-Replayed", "true")).json(body));
            }
        }
    }
    // A caller that hangs up half-way drops this future. An event with a throttle or an
    // idempotency key takes steps that must all run (a throttle taken with nothing stored
    // would hold the next warning back for an hour; a key left in progress would refuse
    // the caller's retries), so it runs in a task of its own. Any other event leaves
    // nothing half-done: once queued it is stored whole, and the channels' 1 s poll makes
    // up for a wake-up lost with the future. A task (with its request-id scope, span and
    // join handle) cost ~5,000 instructions, ~4 % of a user-targeted message (callgrind).
    let outcome = if key.is_none() && event.kind.throttle().is_none() {
        dispatch_and_record(&state, event, None).await?
    } else {
        let state2 = state.clone();
        // The task keeps the request's id and span, so its log lines still carry them.
        let work = async move { dispatch_and_record(&state2, event, key).await }.instrument(tracing::Span::current());
        let task = actix_web::rt::spawn(crate::error::REQUEST_ID.scope(crate::error::current_request_id(), work));
        task.await.map_err(|_| ApiError::internal())??
    };
    Ok(HttpResponse::build(status(&outcome))
        .content_type(actix_web::http::header::ContentType::json())
        .body(answer_text(&outcome)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::dispatcher::AcceptedNotification;
    use crate::domain::Channel;
    use serde::Serialize;
    use uuid::Uuid;

    /// The answer as serde writes it: what the bridge sent before its text was written by
    /// hand, the oracle `answer_text` is checked against.
    #[derive(Serialize)]
    #[serde(tag = "status", rename_all = "snake_case")]
    enum Answer<'a> {
        Accepted {
            accepted_count: usize,
            filtered_count: usize,
            throttled_count: usize,
            /// Listed up to LIST_LIMIT recipients.
            #[serde(skip_serializing_if = "Option::is_none")]
            notifications: Option<&'a [AcceptedNotification]>,
        },
        Filtered {
            reason: &'static str,
            accepted_count: usize,
        },
        Throttled {
            reason: &'static str,
            accepted_count: usize,
        },
    }

    fn answer(outcome: &Outcome) -> (StatusCode, Answer<'_>) {
        match outcome {
            Outcome::Accepted { notifications, filtered_count, throttled_count } => (
                StatusCode::ACCEPTED,
                Answer::Accepted {
                    accepted_count: notifications.len(),
                    filtered_count: *filtered_count,
                    throttled_count: *throttled_count,
                    notifications: (notifications.len() <= LIST_LIMIT).then_some(notifications.as_slice()),
                },
            ),
            Outcome::Filtered(reason) => (StatusCode::OK, Answer::Filtered { reason, accepted_count: 0 }),
            Outcome::Throttled(reason) => (StatusCode::OK, Answer::Throttled { reason, accepted_count: 0 }),
        }
    }

    fn accepted(n: usize) -> Outcome {
        let notifications = (0..n)
            .map(|i| AcceptedNotification {
                user_id: Uuid::new_v4(),
                notification_id: Uuid::now_v7(),
                sequence_number: i as i64 + 1,
                channels: Channel::ALL[..i % (Channel::ALL.len() + 1)].to_vec(),
            })
            .collect();
        Outcome::Accepted { notifications, filtered_count: n % 3, throttled_count: n % 2 }
    }

    #[test]
    fn the_answer_text_is_the_answer_serialised() {
        let outcomes = [
            accepted(0),
            accepted(1),
            accepted(7),
            accepted(LIST_LIMIT),
            accepted(LIST_LIMIT + 1),
            Outcome::Filtered("below the user's \"confidence\" threshold"),
            Outcome::Throttled("risk warnings: one per hour"),
        ];
        for outcome in outcomes {
            let (code, body) = answer(&outcome);
            assert_eq!(answer_text(&outcome), serde_json::to_string(&body).unwrap());
            assert_eq!(status(&outcome), code);
        }
    }
}
