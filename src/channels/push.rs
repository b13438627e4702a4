//! Web Push (RFC 8030) with VAPID (RFC 8292) and aes128gcm payloads (RFC 8291), built
//! by `web-push` and sent through reqwest. Endpoints are user-supplied URLs: only hosts
//! on the allow-list are contacted. A 404/410 removes the subscription.

use super::{ChannelSender, SendJob, SendResult};
use crate::actors::persistence::StoreHandle;
use crate::domain::{Channel, Priority};
use crate::store::outbox::{self, Subscription};
use futures_util::future::BoxFuture;
use serde_json::json;
use std::time::Duration;
use web_push::{ContentEncoding, SubscriptionInfo, Urgency, VapidSignatureBuilder, WebPushMessageBuilder};

/// Largest push payload before encryption (RFC 8291 leaves ~4 KiB after overhead).
pub const MAX_PAYLOAD: usize = 3000;

/// Whether `endpoint` is an https URL (http only for an allowed loopback stand-in) on
/// an allowed host. `*.example.com` allows sub-domains; `host:port` pins a port. An
/// entry without a port allows the scheme's own port only: any other port of a push
/// service's host answers nothing, and a send that waits for its timeout there counts
/// against the channel's breaker, for every user.
pub fn endpoint_allowed(endpoint: &str, allowed: &[String]) -> Result<(), String> {
    let url = reqwest::Url::parse(endpoint).map_err(|_| "endpoint is not a URL".to_string())?;
    let host = url.host_str().ok_or("endpoint has no host")?.to_ascii_lowercase();
    // `port()` is `None` for the scheme's own port, written or not.
    let own_port = url.port().is_none();
    let port = url.port_or_known_default().unwrap_or(0);
    let host_port = format!("{host}:{port}");
    let ok = allowed.iter().any(|a| {
        let a = a.as_str();
        if let Some(suffix) = a.strip_prefix("*.") {
            own_port && host.ends_with(&format!(".{suffix}"))
        } else {
            (own_port && a == host) || a == host_port
        }
    });
    if !ok {
        return Err(format!("push endpoint host '{host}' is not allowed (NOTIFYHUB_PUSH_ALLOWED_HOSTS)"));
    }
    let loopback = host == "127.0.0.1" || host == "localhost" || host == "[::1]";
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        other => Err(format!("push endpoint must be https (got {other})")),
    }
}

/// The JSON the service worker receives.
pub fn payload(job: &SendJob) -> Vec<u8> {
    let n = &job.content.notification;
    let mut message: String = n.message.chars().take(1000).collect();
    loop {
        let body = json!({
            "title": n.title,
            "body": message,
            "tag": n.id,
            "notification_id": n.id,
            "sequence_number": n.sequence_number,
            "notification_type": n.notification_type,
            "priority": n.priority,
            "url": if job.content.is_test { "/".to_string() } else { format!("/?notification={}", n.id) },
            "test": job.content.is_test,
        });
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        if bytes.len() <= MAX_PAYLOAD || message.is_empty() {
            return bytes;
        }
        let keep = message.chars().count() * 3 / 4;
        message = message.chars().take(keep).collect();
    }
}

fn ttl_and_urgency(priority: Priority) -> (u32, Urgency) {
    match priority {
        Priority::Critical => (24 * 3600, Urgency::High),
        Priority::Warning => (4 * 3600, Urgency::Normal),
        Priority::Info => (3600, Urgency::Low),
    }
}

/// Sends Web Push messages.
pub struct PushSender {
    client: reqwest::Client,
    vapid_private_key: String,
    vapid_subject: String,
    allowed_hosts: Vec<String>,
    store: StoreHandle,
}

impl PushSender {
    /// A sender signing with the hub's VAPID key.
    pub fn new(
        vapid_private_key: String,
        vapid_subject: String,
        allowed_hosts: Vec<String>,
        store: StoreHandle,
    ) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            // An allowed host must not bounce us somewhere else.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self { client, vapid_private_key, vapid_subject, allowed_hosts, store })
    }
}

enum One {
    Sent,
    Gone,
    Transient(String),
    Final(String),
}

async fn send_one(
    client: &reqwest::Client,
    key: &str,
    subject: &str,
    sub: &Subscription,
    body: &[u8],
    priority: Priority,
) -> One {
    let info = SubscriptionInfo::new(sub.endpoint.as_str(), sub.p256dh.as_str(), sub.auth.as_str());
    let mut sig = match VapidSignatureBuilder::from_base64(key, &info) {
        Ok(s) => s,
        Err(e) => return One::Final(format!("vapid: {e}")),
    };
    sig.add_claim("sub", subject);
    // RFC 8292: the audience is the push resource's origin, port included when it is
    // not the scheme's default (web-push leaves the port out).
    if let Ok(url) = reqwest::Url::parse(&sub.endpoint) {
        sig.add_claim("aud", url.origin().ascii_serialization());
    }
    let signature = match sig.build() {
        Ok(s) => s,
        Err(e) => return One::Final(format!("vapid signature: {e}")),
    };
    let mut builder = WebPushMessageBuilder::new(&info);
    builder.set_payload(ContentEncoding::Aes128Gcm, body);
    builder.set_vapid_signature(signature);
    let (ttl, urgency) = ttl_and_urgency(priority);
    builder.set_ttl(ttl);
    builder.set_urgency(urgency);
    let message = match builder.build() {
        Ok(m) => m,
        Err(e) => return One::Final(format!("push message: {e}")),
    };
    // web-push speaks `http` 0.2: copy the request over to reqwest.
    let request: http::Request<Vec<u8>> = web_push::request_builder::build_request(message);
    let (parts, body) = request.into_parts();
    let mut req = client.post(parts.uri.to_string()).body(body);
    for (name, value) in parts.headers.iter() {
        if let Ok(v) = value.to_str() {
            req = req.header(name.as_str(), v);
        }
    }
    match req.send().await {
        Err(e) if e.is_timeout() => One::Transient("push service timed out".into()),
        Err(e) => One::Transient(format!("push service: {}", e.without_url())),
        Ok(res) => match res.status().as_u16() {
            200..=299 => One::Sent,
            404 | 410 => One::Gone,
            429 | 500..=599 => One::Transient(format!("push service answered {}", res.status())),
            other => One::Final(format!("push service answered {other}")),
        },
    }
}

impl ChannelSender for PushSender {
    fn channel(&self) -> Channel {
        Channel::Push
    }

    fn transport(&self) -> &'static str {
        "web-push"
    }

    fn send(&self, job: SendJob) -> BoxFuture<'static, SendResult> {
        let client = self.client.clone();
        let key = self.vapid_private_key.clone();
        let subject = self.vapid_subject.clone();
        let allowed = self.allowed_hosts.clone();
        let store = self.store.clone();
        Box::pin(async move {
            if job.subscriptions.is_empty() {
                return SendResult::NoAddress;
            }
            let body = payload(&job);
            let priority = job.content.notification.priority;
            let (mut sent, mut transient, mut last_final) = (0, None, None);
            for sub in &job.subscriptions {
                if let Err(why) = endpoint_allowed(&sub.endpoint, &allowed) {
                    tracing::warn!(reason = %why, "push endpoint refused");
                    last_final = Some(why);
                    continue;
                }
                match send_one(&client, &key, &subject, sub, &body, priority).await {
                    One::Sent => sent += 1,
                    One::Gone => {
                        let endpoint = sub.endpoint.clone();
                        let removed = store
                            .call(move |db| async move { outbox::delete_subscription(&db, None, &endpoint).await })
                            .await;
                        tracing::info!(user_id = %job.user_id, removed = removed.unwrap_or(false), "push subscription gone (404/410): removed");
                        last_final = Some("subscription expired (410)".to_string());
                    }
                    One::Transient(e) => transient = Some(e),
                    One::Final(e) => last_final = Some(e),
                }
            }
            if let Some(e) = transient {
                // A device that missed it (its push service was unwell) gets another try.
                // The ones that got it are sent it again, which replaces the shown
                // notification (same tag: the notification id) instead of adding one.
                let total = job.subscriptions.len();
                if sent > 0 {
                    SendResult::Partial(format!("{e} ({sent} of {total} devices reached)"))
                } else {
                    SendResult::Transient(e)
                }
            } else if sent > 0 {
                SendResult::Sent(format!("web-push to {sent} subscription(s)"))
            } else {
                SendResult::Final(last_final.unwrap_or_else(|| "no subscription accepted the message".into()))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<String> {
        vec!["fcm.googleapis.com".into(), "*.push.apple.com".into(), "127.0.0.1:9999".into()]
    }

    #[test]
    fn the_allow_list_guards_against_ssrf() {
        assert!(endpoint_allowed("https://fcm.googleapis.com/fcm/send/abc", &allowed()).is_ok());
        assert!(endpoint_allowed("https://api.push.apple.com/3/device/x", &allowed()).is_ok());
        assert!(endpoint_allowed("http://127.0.0.1:9999/push/1", &allowed()).is_ok());
        assert!(endpoint_allowed("https://fcm.googleapis.com:443/fcm/send/abc", &allowed()).is_ok());
        for bad in [
            "http://fcm.googleapis.com/x",
            "https://evil.example.com/x",
            "https://fcm.googleapis.com.evil.com/x",
            "https://push.apple.com.evil.net/x",
            "http://127.0.0.1:8080/admin",
            "http://169.254.169.254/latest/meta-data",
            "https://fcm.googleapis.com:8443/fcm/send/abc",
            "https://api.push.apple.com:2197/3/device/x",
            "file:///etc/passwd",
            "not a url",
        ] {
            assert!(endpoint_allowed(bad, &allowed()).is_err(), "{bad}");
        }
    }
}
