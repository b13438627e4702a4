//! The sandbox: with SMTP or Twilio unset, messages are appended to
//! `<data dir>/sandbox/outbox.jsonl` instead, so a first run shows every channel working.
//! Recipients are masked there as in logs.

use super::{ChannelSender, SendJob, SendResult};
use crate::domain::pii::{mask_email, mask_phone};
use crate::domain::Channel;
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// One message the sandbox "sent".
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema, ts_rs::TS)]
pub struct SandboxMessage {
    /// Unique id.
    pub id: Uuid,
    /// email or sms.
    pub channel: Channel,
    /// Recipient user.
    pub user_id: Uuid,
    /// Masked address.
    pub to: String,
    /// Subject (email) or empty.
    pub subject: String,
    /// Plain-text body.
    pub body: String,
    /// The notification it carries (absent for test messages).
    pub notification_id: Option<Uuid>,
    /// When it was written.
    pub sent_at: DateTime<Utc>,
}

/// The outbox file.
#[derive(Clone)]
pub struct SandboxOutbox {
    path: PathBuf,
    lock: Arc<Mutex<()>>,
}

impl SandboxOutbox {
    /// The outbox under `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        Self { path: data_dir.join("sandbox").join("outbox.jsonl"), lock: Arc::new(Mutex::new(())) }
    }

    /// Appends a message.
    pub fn write(&self, msg: &SandboxMessage) -> std::io::Result<()> {
        let _guard = self.lock.lock().map_err(|_| std::io::Error::other("sandbox lock poisoned"))?;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        let line = serde_json::to_string(msg).map_err(std::io::Error::other)?;
        writeln!(f, "{line}")
    }

    /// The newest `limit` messages, optionally only one user's.
    pub fn list(&self, user: Option<Uuid>, limit: usize) -> std::io::Result<Vec<SandboxMessage>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out: Vec<SandboxMessage> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<SandboxMessage>(l).ok())
            .filter(|m| user.is_none_or(|u| m.user_id == u))
            .collect();
        out.reverse();
        out.truncate(limit);
        Ok(out)
    }
}

/// Email or SMS into the sandbox outbox.
pub struct SandboxSender {
    channel: Channel,
    outbox: SandboxOutbox,
}

impl SandboxSender {
    /// A sandbox for `channel` (email or sms).
    pub fn new(channel: Channel, outbox: SandboxOutbox) -> Self {
        Self { channel, outbox }
    }
}

impl ChannelSender for SandboxSender {
    fn channel(&self) -> Channel {
        self.channel
    }

    fn transport(&self) -> &'static str {
        "sandbox"
    }

    fn send(&self, job: SendJob) -> BoxFuture<'static, SendResult> {
        let channel = self.channel;
        let outbox = self.outbox.clone();
        Box::pin(async move {
            let n = &job.content.notification;
            let (to, subject, body) = match channel {
                Channel::Email => {
                    let Some(addr) = &job.prefs.email_address else { return SendResult::NoAddress };
                    let email = super::email::render(&job.content);
                    (mask_email(addr.as_str()), email.subject, email.text)
                }
                Channel::Sms => {
                    let Some(phone) = &job.prefs.sms_phone_number else { return SendResult::NoAddress };
                    (mask_phone(phone.as_str()), String::new(), crate::domain::sms::body(&n.title, &n.message))
                }
                _ => return SendResult::Final("the sandbox carries email and SMS only".into()),
            };
            let msg = SandboxMessage {
                id: Uuid::new_v4(),
                channel,
                user_id: job.user_id,
                to,
                subject,
                body,
                notification_id: (!job.content.is_test).then_some(n.id),
                sent_at: Utc::now(),
            };
            let id = msg.id;
            match tokio::task::spawn_blocking(move || outbox.write(&msg)).await {
                Ok(Ok(())) => SendResult::Sent(format!("sandbox:{id}")),
                Ok(Err(e)) => SendResult::Transient(format!("sandbox outbox write failed: {e}")),
                Err(e) => SendResult::Transient(format!("sandbox outbox write failed: {e}")),
            }
        })
    }
}
