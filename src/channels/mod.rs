//! Delivery channels: email (SMTP), SMS (Twilio) and Web Push, each behind
//! [`ChannelSender`], plus the sandbox that stands in for SMTP and Twilio when they are
//! not configured. The channel actor (`actors::channel`) owns retries, the circuit
//! breaker and rate limits; senders only send.

pub mod breaker;
pub mod email;
pub mod push;
pub mod sandbox;
pub mod sms;

use crate::domain::{Channel, Notification, NotificationPreferences, NotificationType, Priority};
use crate::store::outbox::Subscription;
use futures_util::future::BoxFuture;
use uuid::Uuid;

/// What to send, with everything needed to address it.
#[derive(Debug, Clone)]
pub struct SendJob {
    /// Recipient.
    pub user_id: Uuid,
    /// The content.
    pub content: Content,
    /// The recipient's preferences (addresses).
    pub prefs: NotificationPreferences,
    /// The recipient's push subscriptions.
    pub subscriptions: Vec<Subscription>,
}

/// What a message says.
#[derive(Debug, Clone)]
pub struct Content {
    /// The notification (id, type, priority, title, message, metadata).
    pub notification: Notification,
    /// A test message from the preferences page.
    pub is_test: bool,
}

impl Content {
    /// A test message for `user`.
    pub fn test(user: Uuid, channel: Channel) -> Self {
        Self {
            notification: Notification {
                id: Uuid::new_v4(),
                user_id: user,
                sequence_number: 0,
                notification_type: NotificationType::SystemError,
                priority: Priority::Info,
                title: format!("Test {} from notifyhub", channel.as_str()),
                message: "If you can read this, this channel reaches you.".into(),
                metadata: serde_json::json!({"test": true}),
                read: false,
                created_at: chrono::Utc::now(),
            },
            is_test: true,
        }
    }
}

/// How a send ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendResult {
    /// Accepted by the provider; a receipt for the log (no PII).
    Sent(String),
    /// The provider is unwell (timeout, 5xx, 429): retry, and count it against the breaker.
    Transient(String),
    /// Some of the user's devices got it and some did not (their push service was
    /// unwell): retry, but the channel works, so the breaker counts it as a success (one
    /// push service's bad hour must not pause push for everyone).
    Partial(String),
    /// This message cannot be sent (invalid number, rejected address): do not retry.
    Final(String),
    /// No address, number or subscription to send to.
    NoAddress,
}

/// A channel's transport.
pub trait ChannelSender: Send + Sync {
    /// Which channel.
    fn channel(&self) -> Channel;
    /// `smtp`, `twilio`, `web-push` or `sandbox`, for logs and `/readyz`.
    fn transport(&self) -> &'static str;
    /// Sends one message.
    fn send(&self, job: SendJob) -> BoxFuture<'static, SendResult>;
}
