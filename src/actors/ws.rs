//! `WsConnection`: one actor per dashboard socket (actix-web-actors). It pings every
//! heartbeat interval and closes the socket when nothing was heard for the timeout;
//! its user's `UserSession` queues frames for it in its [`SocketOutbox`]. All socket I/O
//! lives in this module, so a move to `actix-ws` stays small.

use super::session::{Join, Sessions};
use actix::prelude::*;
use actix_web::web::BytesMut;
use actix_web_actors::ws;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;
use std::time::{Duration, Instant};
use uuid::Uuid;

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

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
/// HTTP layer stops taking frames from a socket's response body while the client does not
/// read, so they wait in its [`SocketOutbox`]. Past this bound the client is cut off (it
/// catches up by replay when it reconnects with `since`), so memory stays bounded and
/// nobody else waits for it. It holds a full replay page of the largest notifications
/// (200 × 17 KiB).
pub const MAX_BACKLOG_BYTES: usize = 4 * 1024 * 1024;

/// The text frames on their way to one socket, already framed: its user's session queues
/// them, and the socket's response body ([`AbortableBody`]) hands them to the HTTP layer
/// whole, ahead of the socket actor's own frames (pings, pongs, close).
///
/// Toasts bypass the socket's actor: a message to it per frame (an envelope, its mailbox,
/// a turn of the actor, a copy into its context's buffer) cost more than the rest of a
/// delivery on the request thread. A session runs on one worker's thread and a socket
/// possibly on another, hence the lock; it is uncontended but for those hand-overs.
#[derive(Default)]
pub struct SocketOutbox {
    queue: Mutex<Queued>,
    /// Set when the client is too slow: the body then ends the socket.
    abort: AtomicBool,
}

#[derive(Default)]
struct Queued {
    frames: BytesMut,
    /// The body's task, woken when frames arrive in an empty queue.
    waker: Option<Waker>,
}

impl SocketOutbox {
    fn queued(&self) -> std::sync::MutexGuard<'_, Queued> {
        // A panic while holding the lock leaves whole frames behind: carry on.
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues a text frame. A backlog past [`MAX_BACKLOG_BYTES`] marks the client too slow
    /// instead: its frames are dropped and the socket is closed (false).
    pub fn push(&self, text: &[u8]) -> bool {
        if self.is_aborted() {
            return false;
        }
        let mut queued = self.queued();
        let was_empty = queued.frames.is_empty();
        let too_slow = queued.frames.len() + text.len() > MAX_BACKLOG_BYTES;
        if too_slow {
            queued.frames = BytesMut::new();
            self.abort.store(true, Ordering::Relaxed);
        } else {
            actix_http::ws::Parser::write_message(&mut queued.frames, text, actix_http::ws::OpCode::Text, true, false);
        }
        // Woken once per batch of frames (a waiting body takes all of them), and to close.
        let waker = if was_empty || too_slow { queued.waker.clone() } else { None };
        drop(queued);
        if let Some(w) = waker {
            w.wake();
        }
        !too_slow
    }

    /// Whether the client was found too slow.
    pub fn is_aborted(&self) -> bool {
        self.abort.load(Ordering::Relaxed)
    }

    /// The frames queued so far, if any; otherwise `cx`'s task is woken when some come.
    pub(super) fn take(&self, cx: &std::task::Context<'_>) -> Option<actix_web::web::Bytes> {
        let mut queued = self.queued();
        if queued.frames.is_empty() {
            if !queued.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                queued.waker = Some(cx.waker().clone());
            }
            return None;
        }
        // Moved out whole, so a socket between toasts keeps no buffer. Kept for the next
        // frames instead, it saved a `malloc` per toast (150–500 instructions, callgrind)
        // but cost ~0.1 KiB per socket held after a toast (`scripts/hold.sh`: 6.06
        // against 5.96 KiB).
        Some(std::mem::take(&mut queued.frames).freeze())
    }
}

/// A WebSocket response stream that also sends its [`SocketOutbox`]'s frames, and that
/// ends with a close frame (1013, "client too slow") once the outbox is marked so — the
/// socket's actor cannot be reached while stalled.
pub struct AbortableBody {
    inner: actix_web::body::BoxBody,
    outbox: Arc<SocketOutbox>,
    closed: bool,
    /// The actor's turn comes first on the next poll: a flood of toasts must not keep
    /// its pings and pongs waiting, nor follow its close frame.
    inner_turn: bool,
}

impl AbortableBody {
    /// Wraps a WebSocket response body.
    pub fn new(inner: actix_web::body::BoxBody, outbox: Arc<SocketOutbox>) -> Self {
        Self { inner, outbox, closed: false, inner_turn: false }
    }
}

/// A close frame, 1013 "try again later", with a reason (short: a control frame's payload
/// ends at 125 bytes).
fn close_frame(reason: &str) -> actix_web::web::Bytes {
    let mut f = BytesMut::new();
    let reason = ws::CloseReason { code: ws::CloseCode::Again, description: Some(reason.to_string()) };
    actix_http::ws::Parser::write_close(&mut f, Some(reason), false);
    f.freeze()
}

impl AbortableBody {
    /// The actor's next frames. Once it has some, it keeps the next turn until it has
    /// none: its close frame is followed by the stream's end, never by a queued toast.
    fn poll_inner(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<actix_web::web::Bytes, Box<dyn std::error::Error>>>> {
        use actix_web::body::MessageBody;
        let next = std::pin::Pin::new(&mut self.inner).poll_next(cx);
        if let std::task::Poll::Ready(Some(_)) = next {
            self.inner_turn = true;
        }
        next
    }
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
        if self.outbox.is_aborted() {
            if self.closed {
                return std::task::Poll::Ready(None);
            }
            self.closed = true;
            return std::task::Poll::Ready(Some(Ok(close_frame("client too slow; reconnect with since"))));
        }
        let inner_first = std::mem::take(&mut self.inner_turn);
        if inner_first {
            let next = self.poll_inner(cx);
            if next.is_ready() {
                return next;
            }
        }
        if let Some(frames) = self.outbox.take(cx) {
            self.inner_turn = true;
            return std::task::Poll::Ready(Some(Ok(frames)));
        }
        if inner_first {
            return std::task::Poll::Pending;
        }
        self.poll_inner(cx)
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
    outbox: Arc<SocketOutbox>,
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

    /// A socket for `user`, replaying after `since`; `outbox` is shared with its
    /// [`AbortableBody`].
    pub fn new(
        user: Uuid,
        since: Option<i64>,
        sessions: Arc<Sessions>,
        heartbeat: Heartbeat,
        outbox: Arc<SocketOutbox>,
    ) -> Self {
        Self {
            id: NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed),
            user,
            since,
            sessions,
            heartbeat,
            last_heard: Instant::now(),
            outbox,
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
        let join = Join { conn_id: self.id, addr: ctx.address(), since: self.since, outbox: self.outbox.clone() };
        let (sessions, user) = (self.sessions.clone(), self.user);
        ctx.spawn(async move { sessions.join(user, join).await }.into_actor(self));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.sessions.leave(self.user, self.id);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Context, Wake};

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    impl Wakes {
        /// A waker counting into the returned counter.
        fn waker() -> (Arc<Self>, Waker) {
            let wakes = Arc::new(Self::default());
            (wakes.clone(), Waker::from(wakes))
        }

        fn count(&self) -> usize {
            self.0.load(Ordering::Relaxed)
        }
    }

    /// A server's unmasked text frame (RFC 6455 §5.2) with `text`.
    fn text_frame(text: &[u8]) -> Vec<u8> {
        let mut f = vec![0x81];
        match text.len() {
            n if n < 126 => f.push(n as u8),
            n if n <= 0xFFFF => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(text);
        f
    }

    #[test]
    fn queued_frames_come_out_whole_in_order_in_one_chunk() {
        let outbox = SocketOutbox::default();
        let cx = Context::from_waker(Waker::noop());
        assert!(outbox.take(&cx).is_none(), "nothing queued yet");
        let long = "x".repeat(300);
        assert!(outbox.push(b"first"));
        assert!(outbox.push(long.as_bytes()));
        let mut expected = text_frame(b"first");
        expected.extend(text_frame(long.as_bytes()));
        assert_eq!(outbox.take(&cx).unwrap().as_ref(), expected.as_slice());
        assert!(outbox.take(&cx).is_none(), "taken once");
        assert!(outbox.push(b"third"));
        assert_eq!(outbox.take(&cx).unwrap().as_ref(), text_frame(b"third").as_slice());
    }

    #[test]
    fn the_waiting_body_is_woken_once_per_batch_of_frames() {
        let outbox = SocketOutbox::default();
        let (wakes, waker) = Wakes::waker();
        let cx = Context::from_waker(&waker);
        outbox.push(b"before the body waits");
        assert_eq!(wakes.count(), 0, "no body waiting yet");
        outbox.take(&cx).unwrap();
        assert!(outbox.take(&cx).is_none(), "the body now waits");
        outbox.push(b"one");
        outbox.push(b"two");
        assert_eq!(wakes.count(), 1, "woken by the first frame into an empty queue only");
        outbox.take(&cx).unwrap();
        outbox.push(b"three");
        assert_eq!(wakes.count(), 2);
    }

    /// Polls `body` once.
    fn next_chunk(body: &mut AbortableBody) -> std::task::Poll<Option<Vec<u8>>> {
        use actix_web::body::MessageBody;
        let mut cx = Context::from_waker(Waker::noop());
        std::pin::Pin::new(body).poll_next(&mut cx).map(|c| c.map(|r| r.expect("no error").to_vec()))
    }

    #[test]
    fn the_socket_actors_close_frame_ends_the_stream_before_any_later_toast() {
        use std::task::Poll;
        let chunks = vec![Ok::<_, std::io::Error>(actix_web::web::Bytes::from_static(b"CLOSE"))];
        let inner = actix_web::body::BoxBody::new(actix_web::body::BodyStream::new(futures_util::stream::iter(chunks)));
        let outbox = Arc::new(SocketOutbox::default());
        let mut body = AbortableBody::new(inner, outbox.clone());
        outbox.push(b"a");
        assert_eq!(next_chunk(&mut body), Poll::Ready(Some(text_frame(b"a"))), "queued toasts go first");
        outbox.push(b"b");
        assert_eq!(next_chunk(&mut body), Poll::Ready(Some(b"CLOSE".to_vec())), "then the actor's turn");
        outbox.push(b"c");
        assert_eq!(next_chunk(&mut body), Poll::Ready(None), "nothing after the close frame");
    }

    #[test]
    fn a_client_found_too_slow_gets_a_close_frame_and_the_end_of_its_stream() {
        use std::task::Poll;
        let inner = actix_web::body::BoxBody::new(actix_web::body::BodyStream::new(futures_util::stream::pending::<
            Result<actix_web::web::Bytes, std::io::Error>,
        >()));
        let outbox = Arc::new(SocketOutbox::default());
        let mut body = AbortableBody::new(inner, outbox.clone());
        assert_eq!(next_chunk(&mut body), Poll::Pending);
        assert!(!outbox.push(&vec![b'x'; MAX_BACKLOG_BYTES + 1]));
        let Poll::Ready(Some(close)) = next_chunk(&mut body) else { panic!("a close frame") };
        assert_eq!(&close[..4], &[0x88, close[1], 0x03, 0xF5], "close 1013");
        assert!(String::from_utf8_lossy(&close[4..]).contains("client too slow"));
        assert_eq!(next_chunk(&mut body), Poll::Ready(None));
    }

    #[test]
    fn a_backlog_past_the_bound_drops_the_frames_and_marks_the_client_too_slow() {
        let outbox = SocketOutbox::default();
        let (wakes, waker) = Wakes::waker();
        let cx = Context::from_waker(&waker);
        assert!(outbox.take(&cx).is_none());
        let frame = vec![b'x'; 64 * 1024];
        let fits = MAX_BACKLOG_BYTES / (frame.len() + 10);
        for _ in 0..fits {
            assert!(outbox.push(&frame));
        }
        assert!(!outbox.is_aborted());
        assert!(!outbox.push(&frame), "one more passes the bound");
        assert!(outbox.is_aborted());
        assert_eq!(wakes.count(), 2, "the body is woken to close the socket");
        assert!(outbox.take(&cx).is_none(), "the backlog is let go");
        assert!(!outbox.push(b"later"), "nothing more is queued");
        assert!(outbox.take(&cx).is_none());
    }
}
