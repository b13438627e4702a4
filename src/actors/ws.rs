//! `WsConnection`: one actor per dashboard socket (actix-web-actors). It pings every
//! heartbeat interval and closes the socket when nothing was heard for the timeout;
//! frames for it come from its user's `UserSession`. All socket I/O lives in this
//! module, so a move to `actix-ws` stays small.

use super::session::{Join, Sessions};
use actix::prelude::*;
use actix_web_actors::ws;
use bytestring::ByteString;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// One socket.
pub struct WsConnection {
    id: u64,
    user: Uuid,
    since: Option<i64>,
    sessions: Arc<Sessions>,
    heartbeat: Heartbeat,
    last_heard: Instant,
}

impl WsConnection {
    /// A socket for `user`, replaying after `since`.
    pub fn new(user: Uuid, since: Option<i64>, sessions: Arc<Sessions>, heartbeat: Heartbeat) -> Self {
        Self {
            id: NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed),
            user,
            since,
            sessions,
            heartbeat,
            last_heard: Instant::now(),
        }
    }
}

impl Actor for WsConnection {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.heartbeat.interval, |act, ctx| {
            if act.last_heard.elapsed() > act.heartbeat.timeout {
                tracing::debug!(user_id = %act.user, conn = act.id, "no pong within the timeout: closing");
                ctx.close(Some(ws::CloseReason {
                    code: ws::CloseCode::Away,
                    description: Some("heartbeat timeout".into()),
                }));
                ctx.stop();
                return;
            }
            ctx.ping(b"");
        });
        let join = Join { conn_id: self.id, addr: ctx.address(), since: self.since };
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
        ctx.text(msg.0);
    }
}

impl Handler<CloseSocket> for WsConnection {
    type Result = ();

    fn handle(&mut self, msg: CloseSocket, ctx: &mut Self::Context) {
        ctx.close(Some(ws::CloseReason { code: msg.code, description: Some(msg.reason) }));
        ctx.stop();
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
                ctx.stop();
            }
        }
    }
}
