//! SMS through Twilio's Messages API: a form POST with basic auth. A 4xx (such as
//! 21211, invalid number) is final; 429, 5xx and timeouts are retried.

use super::{ChannelSender, SendJob, SendResult};
use crate::config::TwilioSettings;
use crate::domain::pii::mask_phone;
use crate::domain::Channel;
use futures_util::future::BoxFuture;
use std::time::Duration;

/// Sends through Twilio (or a stand-in at `TWILIO_API_BASE`).
pub struct TwilioSender {
    client: reqwest::Client,
    settings: TwilioSettings,
}

impl TwilioSender {
    /// A sender with a 10 s request timeout.
    pub fn new(settings: TwilioSettings) -> Result<Self, String> {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().map_err(|e| e.to_string())?;
        Ok(Self { client, settings })
    }
}

impl ChannelSender for TwilioSender {
    fn channel(&self) -> Channel {
        Channel::Sms
    }

    fn transport(&self) -> &'static str {
        "twilio"
    }

    fn send(&self, job: SendJob) -> BoxFuture<'static, SendResult> {
        let client = self.client.clone();
        let s = self.settings.clone();
        Box::pin(async move {
            let Some(to) = job.prefs.sms_phone_number.clone() else { return SendResult::NoAddress };
            let n = &job.content.notification;
            let body = crate::domain::sms::body(&n.title, &n.message);
            let url = format!("{}/2010-04-01/Accounts/{}/Messages.json", s.api_base, s.account_sid);
            let res = client
                .post(url)
                .basic_auth(&s.account_sid, Some(&s.auth_token))
                .form(&[("To", to.as_str()), ("From", s.from_number.as_str()), ("Body", body.as_str())])
                .send()
                .await;
            let res = match res {
                Ok(r) => r,
                Err(e) if e.is_timeout() => return SendResult::Transient("twilio: timed out".into()),
                Err(e) => return SendResult::Transient(format!("twilio: {}", e.without_url())),
            };
            let status = res.status();
            let body: serde_json::Value = res.json().await.unwrap_or(serde_json::Value::Null);
            if status.is_success() {
                return SendResult::Sent(format!("twilio {}", body["sid"].as_str().unwrap_or("?")));
            }
            let code = body["code"].as_i64().map(|c| c.to_string()).unwrap_or_else(|| "?".into());
            // Twilio's message may quote the number it refused: never store or log it.
            let message = crate::domain::pii::scrub(
                body["message"].as_str().unwrap_or(""),
                to.as_str(),
                &mask_phone(to.as_str()),
            )
            .chars()
            .take(200)
            .collect::<String>();
            if status.as_u16() == 429 || status.is_server_error() {
                SendResult::Transient(format!("twilio {status} (code {code})"))
            } else if matches!(status.as_u16(), 401 | 403 | 404) {
                // Refused credentials (a rotated auth token, a wrong account SID) fail
                // every message: count it against the provider, so that the breaker
                // opens and admins get `sms_circuit_open`, instead of failing each
                // message quietly.
                SendResult::Transient(format!("twilio {status} (code {code}): check the Twilio credentials"))
            } else {
                SendResult::Final(format!("twilio {} code {code}: {message}", status.as_u16()))
            }
        })
    }
}
