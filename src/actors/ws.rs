//! `WsConnection`: one actor per dashboard socket (actix-web-actors). It pings every
//! heartbeat interval and closes the socket when nothing was heard for the timeout;
//! frames for it come from its user's `UserSession`. All socket I/O lives in this
//! module, so a move to `actix-ws` stays small.

use super::session::{Join, Sessions};
use actix::prelude::*;
use actix_web_actors::ws;
use bytestring::ByteString;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// A text frame to write.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Outbound(pub ByteString);

/// Close the socket with a code and reason.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseSocket {
    /// Close code.
    pub code: ws::CloseCode,
    /// Reason text.
    pub reason: String,
}

impl CloseSocket {
    /// 1013 "try again later": the client should reconnect with `since`.
    pub fn try_again_later(reason: &str) -> Self {
        Self { code: ws::CloseCode::Again, reason: reason.to_string() }
    }
}

/// Heartbeat timing (defaults: ping every 5 s, close after 10 s of silence).
#[derive(Debug, Clone, Copy)]
pub struct Heartbeat {
    /// Ping interval.
    pub interval: Duration,
    /// Silence after which the socket is closed.
    pub timeout: Duration,
}

/// Bytes of frames a socket may have waiting before its client counts as too slow. The
/// socket actor runs inside its response stream, which the HTTP layer stops polling
/// while the client does not read: frames then wait in the actor's mailbox. Past this
/// bound the client is cut off (it catches up by replay when it reconnects with
/// `since`), so memory stays bounded and nobody else waits for it. It holds a full
/// replay page of the largest notifications (200 × 17 KiB).
pub const MAX_BACKLOG_BYTES: u64 = 4 * 1024 * 1024;

/// A WebSocket response stream that can be ended from outside with a close frame
/// (1013, "client too slow") — the socket's actor cannot be reached while stalled.
pub struct AbortableBody {
    inner: actix_web::body::BoxBody,
    abort: Arc<AtomicBool>,
    closed: bool,
}

impl AbortableBody {
    /// Wraps a WebSocket response body.
    pub fn new(inner: actix_web::body::BoxBody, abort: Arc<AtomicBool>) -> Self {
        Self { inner, abort, closed: false }
    }
}

/// A close frame, 1013 "try again later", with a reason.
fn close_frame(reason: &str) -> actix_web::web::Bytes {
    let reason = &reason.as_bytes()[..reason.len().min(120)];
    let mut f = Vec::with_capacity(4 + reason.len());
    f.push(0x88);
    f.push((2 + reason.len()) as u8);
    f.extend_from_slice(&1013u16.to_be_bytes());
    f.extend_from_slice(reason);
    actix_web::web::Bytes::from(f)
}

impl actix_web::body::MessageBody for AbortableBody {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> actix_web::body::BodySize {
        self.inner.size()
    }

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<actix_web::web::Bytes, Self::Error>>> {
        if self.abort.load(Ordering::Relaxed) {
            if self.closed {
                return std::task::Poll::Ready(None);
            }
            self.closed = true;
            return std::task::Poll::Ready(Some(Ok(close_frame("client too slow; reconnect with since"))));
        }
        std::pin::Pin::new(&mut self.inner).poll_next(cx)
    }
}

/// One socket.
pub struct WsConnection {
    id: u64,
    user: Uuid,
    since: Option<i64>,
    sessions: Arc<Sessions>,
    heartbeat: Heartbeat,
    last_heard: Instant,
    abort: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
    /// When the token the socket was opened with expires (seconds since the epoch).
    expires_at: Option<i64>,
}

impl WsConnection {
    /// Closes the socket once its token has expired (with the same leeway it was
    /// accepted with), at the next heartbeat: a socket must not keep receiving toasts on
    /// a token that no longer holds.
    pub fn until(mut self, expires_at: i64) -> Self {
        self.expires_at = Some(expires_at);
        self
    }

    /// A socket for `user`, replaying after `since`; `abort` is shared with its
    /// [`AbortableBody`].
    pub fn new(
        user: Uuid,
        since: Option<i64>,
        sessions: Arc<Sessions>,
        heartbeat: Heartbeat,
        abort: Arc<AtomicBool>,
    ) -> Self {
        let written = Arc::new(AtomicU64::new(0));
        Self {
            id: NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed),
            user,
            since,
            sessions,
            heartbeat,
            last_heard: Instant::now(),
            abort,
            written,
            expires_at: None,
        }
    }
}

/// Sends a close frame with `code` and `reason`, then stops the socket's actor.
fn close_socket(ctx: &mut ws::WebsocketContext<WsConnection>, code: ws::CloseCode, reason: &str) {
    ctx.close(Some(ws::CloseReason { code, description: Some(reason.to_string()) }));
    ctx.stop();
}

impl Actor for WsConnection {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.heartbeat.interval, |act, ctx| {
            // Checked on the heartbeat (a timer of its own would cost every idle socket
            // a few hundred bytes): the socket closes within one interval of expiry.
            let expired = act
                .expires_at
                .is_some_and(|at| chrono::Utc::now().timestamp() > at + crate::auth::LEEWAY_SECONDS as i64);
            if expired {
                tracing::debug!(user_id = %act.user, conn = act.id, "token expired: closing");
                close_socket(ctx, ws::CloseCode::Policy, "token expired; reconnect with a fresh token");
            } else if act.last_heard.elapsed() > act.heartbeat.timeout {
                tracing::debug!(user_id = %act.user, conn = act.id, "no pong within the timeout: closing");
                close_socket(ctx, ws::CloseCode::Away, "heartbeat timeout");
            } else {
                ctx.ping(b"");
            }
        });
        let join = Join {
            conn_id: self.id,
            addr: ctx.address(),
            since: self.since,
            abort: self.abort.clone(),
            written: self.written.clone(),
        };
        let (sessions, user) = (self.sessions.clone(), self.user);
        ctx.spawn(async move { sessions.join(user, join).await }.into_actor(self));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.sessions.leave(self.user, self.id);
    }
}

impl Handler<Outbound> for WsConnection {
    type Result = ();

    fn handle(&mut self, msg: Outbound, ctx: &mut Self::Context) {
        self.written.fetch_add(msg.0.len() as u64, Ordering::Relaxed);
        ctx.text(msg.0);
    }
}

impl Handler<CloseSocket> for WsConnection {
    type Result = ();

    fn handle(&mut self, msg: CloseSocket, ctx: &mut Self::Context) {
        close_socket(ctx, msg.code, &msg.reason);
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for WsConnection {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        match msg {
            Ok(ws::Message::Ping(p)) => ctx.pong(&p),
            Ok(ws::Message::Pong(_)) | Ok(ws::Message::Text(_)) | Ok(ws::Message::Binary(_)) => {}
            Ok(ws::Message::Close(reason)) => {
                ctx.close(reason);
                ctx.stop();
            }
            Ok(ws::Message::Continuation(_)) | Ok(ws::Message::Nop) => {}
            Err(e) => {
                tracing::debug!(user_id = %self.user, error = %e, "websocket protocol error");
                // Say why before hanging up (RFC 6455 §7.4), unless the connection is gone.
                let code = match e {
                    ws::ProtocolError::Io(_) => None,
                    ws::ProtocolError::Overflow => Some(ws::CloseCode::Size),
                    _ => Some(ws::CloseCode::Protocol),
                };
                match code {
                    Some(code) => close_socket(ctx, code, &e.to_string()),
                    None => ctx.stop(),
                }
            }
        }
    }
}
