//! `GET /ws?token=JWT[&since=N]`: the dashboard's live channel. The token is checked
//! before the upgrade, so a bad one gets a 401 in the error format, not a socket.

use crate::actors::ws::{AbortableBody, SocketOutbox, WsConnection};
use crate::auth::authenticate_user;
use crate::error::ApiError;
use crate::state::AppState;
use actix_web::{get, web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

/// Query of the upgrade request.
#[derive(Debug, Deserialize)]
pub struct WsParams {
    token: Option<String>,
    since: Option<String>,
}

/// Largest frame accepted from a client (they send nothing but control frames).
const MAX_CLIENT_FRAME: usize = 4 * 1024;

/// Open the live channel.
#[get("/ws")]
pub async fn connect(
    state: web::Data<AppState>,
    req: HttpRequest,
    params: web::Query<WsParams>,
    stream: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let token = params.token.clone().or_else(|| crate::auth::bearer(&req).map(str::to_string));
    let user = authenticate_user(&state, token.as_deref()).await?;
    let since = match params.since.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(raw) => match raw.parse::<i64>() {
            Ok(n) if n >= 0 => Some(n),
            _ => {
                return Err(ApiError::bad_request(format!("since: '{raw}' is not a sequence number (0 or more)"))
                    .with_details(json!({"field": "since"})))
            }
        },
    };
    let outbox = Arc::new(SocketOutbox::default());
    let actor = WsConnection::new(user.user_id, since, state.sessions.clone(), state.heartbeat, outbox.clone())
        .until(user.expires_at);
    let res = actix_web_actors::ws::WsResponseBuilder::new(actor, &req, stream)
        .frame_size(MAX_CLIENT_FRAME)
        .start()
        .map_err(|e| ApiError::bad_request(format!("WebSocket handshake failed: {e}")))?;
    Ok(res.map_body(|_, body| AbortableBody::new(body, outbox)).map_into_boxed_body())
}
