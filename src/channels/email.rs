//! Email over SMTP (lettre, async on tokio, rustls): multipart/alternative HTML and
//! plain text, rendered from the templates in `templates/email/`.

use super::{ChannelSender, Content, SendJob, SendResult};
use crate::config::{SmtpSettings, SmtpTls};
use crate::domain::pii::mask_email;
use crate::domain::{Channel, NotificationType, Priority};
use futures_util::future::BoxFuture;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use minijinja::Environment;
use serde_json::{json, Value};
use std::sync::OnceLock;
use std::time::Duration;

fn templates() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        let files: [(&str, &str); 7] = [
            ("base.html", include_str!("../../templates/email/base.html")),
            ("signal_generated.html", include_str!("../../templates/email/signal_generated.html")),
            ("risk_warning.html", include_str!("../../templates/email/risk_warning.html")),
            ("emergency_exit.html", include_str!("../../templates/email/emergency_exit.html")),
            ("system_error.html", include_str!("../../templates/email/system_error.html")),
            ("test.html", include_str!("../../templates/email/test.html")),
            ("notification.txt", include_str!("../../templates/email/notification.txt")),
        ];
        for (name, source) in files {
            // The templates ship with the binary and are tested; a broken one shows in the test suite.
            let _ = env.add_template(name, source);
        }
        env
    })
}

/// A rendered email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedEmail {
    /// Subject a trader can scan.
    pub subject: String,
    /// HTML part.
    pub html: String,
    /// Plain-text part.
    pub text: String,
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The subject line for a notification.
pub fn subject(content: &Content) -> String {
    let n = &content.notification;
    let m = &n.metadata;
    if content.is_test {
        return "notifyhub test email".into();
    }
    match n.notification_type {
        NotificationType::SignalGenerated if m.get("symbol").is_some() => {
            let pattern = text_of(&m["pattern_type"]);
            let pattern = pattern
                .chars()
                .next()
                .map(|c| c.to_uppercase().collect::<String>() + &pattern[c.len_utf8()..].to_lowercase())
                .unwrap_or_default();
            let mut s =
                format!("{} {} {}%", text_of(&m["symbol"]), pattern, text_of(&m["confidence"]).trim_end_matches(".0"));
            if let Some(entry) = m.get("entry_price") {
                s.push_str(&format!(" — entry {}", text_of(entry)));
            }
            s
        }
        NotificationType::EmergencyExit if m.get("symbol").is_some() => {
            format!("EMERGENCY EXIT {} — {}", text_of(&m["symbol"]), text_of(&m["reason"]))
        }
        _ => {
            let tag = match n.priority {
                Priority::Critical => "[CRITICAL] ",
                Priority::Warning => "[WARNING] ",
                Priority::Info => "",
            };
            format!("{tag}{}", n.title)
        }
    }
}

/// Renders subject, HTML and text for a notification.
pub fn render(content: &Content) -> RenderedEmail {
    let n = &content.notification;
    let subject = subject(content);
    let (accent, kind_label) = match n.notification_type {
        NotificationType::SignalGenerated => ("#3b82f6", "Signal"),
        NotificationType::RiskWarning => ("#f59e0b", "Risk warning"),
        NotificationType::EmergencyExit => ("#ef4444", "Emergency exit"),
        NotificationType::SystemError => ("#ef4444", "System error"),
    };
    let accent = if n.priority == Priority::Critical { "#ef4444" } else { accent };
    let details: Vec<(String, String)> = n
        .metadata
        .as_object()
        .map(|o| o.iter().filter(|(k, _)| k.as_str() != "stack_trace").map(|(k, v)| (k.clone(), text_of(v))).collect())
        .unwrap_or_default();
    let ctx = json!({
        "subject": subject,
        "title": n.title,
        "message": n.message,
        "priority": n.priority.as_str(),
        "kind_label": if content.is_test { "Test" } else { kind_label },
        "accent": accent,
        "metadata": n.metadata,
        "details": details,
        "created_at": n.created_at.format("%Y-%m-%d %H:%M UTC").to_string(),
    });
    let html_name =
        if content.is_test { "test.html".to_string() } else { format!("{}.html", n.notification_type.as_str()) };
    let env = templates();
    let html = env
        .get_template(&html_name)
        .and_then(|t| t.render(&ctx))
        .unwrap_or_else(|e| format!("<p>{}</p><!-- template error: {e} -->", n.message));
    let text = env
        .get_template("notification.txt")
        .and_then(|t| t.render(&ctx))
        .unwrap_or_else(|_| format!("{}\n\n{}", n.title, n.message));
    RenderedEmail { subject, html, text }
}

/// Sends through an SMTP server.
pub struct SmtpSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl SmtpSender {
    /// A pooled SMTP transport from the settings.
    pub fn new(settings: &SmtpSettings) -> Result<Self, String> {
        let builder = match settings.tls {
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host),
            SmtpTls::StartTls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&settings.host).map_err(|e| e.to_string())?
            }
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&settings.host).map_err(|e| e.to_string())?,
        };
        let mut builder = builder.port(settings.port).timeout(Some(Duration::from_secs(10)));
        if let (Some(user), Some(password)) = (&settings.user, &settings.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        let from: Mailbox = with_ascii_domain(settings.from.as_str())
            .parse()
            .map_err(|e: lettre::address::AddressError| e.to_string())?;
        Ok(Self { transport: builder.build(), from })
    }
}

impl ChannelSender for SmtpSender {
    fn channel(&self) -> Channel {
        Channel::Email
    }

    fn transport(&self) -> &'static str {
        "smtp"
    }

    fn send(&self, job: SendJob) -> BoxFuture<'static, SendResult> {
        let transport = self.transport.clone();
        let from = self.from.clone();
        Box::pin(async move {
            let Some(to) = job.prefs.email_address.clone() else { return SendResult::NoAddress };
            // Saved before such addresses were refused (see `EmailAddress::parse_deliverable`).
            if !to.local_part_is_ascii() {
                return SendResult::Final(format!(
                    "address {} is not deliverable: it {}",
                    mask_email(to.as_str()),
                    crate::domain::validation::LOCAL_PART_NOT_ASCII
                ));
            }
            let to_mailbox: Mailbox = match with_ascii_domain(to.as_str()).parse() {
                Ok(m) => m,
                Err(_) => return SendResult::Final(format!("address {} is not deliverable", mask_email(to.as_str()))),
            };
            let email = render(&job.content);
            let message = lettre::Message::builder()
                .from(from)
                .to(to_mailbox)
                .subject(email.subject)
                .multipart(MultiPart::alternative_plain_html(email.text, email.html));
            let message = match message {
                Ok(m) => m,
                Err(e) => return SendResult::Final(format!("message cannot be built: {e}")),
            };
            // The server's reply may quote the address it refused, as sent (the domain in
            // ASCII) or as written: never store or log it.
            let scrubbed = |e: &dyn std::fmt::Display| {
                let masked = mask_email(to.as_str());
                let text = crate::domain::pii::scrub(&e.to_string(), to.as_str(), &masked);
                crate::domain::pii::scrub(&text, &with_ascii_domain(to.as_str()), &masked)
            };
            match transport.send(message).await {
                Ok(resp) => SendResult::Sent(format!("smtp {}", resp.code())),
                // Refused credentials fail every message: count it against the provider
                // (breaker, `email_circuit_open` for admins), not as this message's fault.
                Err(e) if e.status().is_some_and(|code| is_authentication_failure(&code.to_string())) => {
                    SendResult::Transient(format!(
                        "smtp authentication failed: {}; check SMTP_USER/SMTP_PASSWORD",
                        scrubbed(&e)
                    ))
                }
                Err(e) if e.is_permanent() => SendResult::Final(format!("smtp rejected: {}", scrubbed(&e))),
                Err(e) => SendResult::Transient(format!("smtp: {}", scrubbed(&e))),
            }
        })
    }
}

/// SMTP replies that mean the server refused our credentials (RFC 4954: 530 auth
/// required, 534 mechanism too weak, 535 credentials invalid, 538 encryption required).
fn is_authentication_failure(code: &str) -> bool {
    matches!(code, "530" | "534" | "535" | "538")
}

/// The address with its domain in ASCII (`bücher.example` → `xn--bcher-kva.example`):
/// lettre would put the domain in the envelope and the `To:` header as UTF-8, which a
/// mail server without SMTPUTF8 refuses, while the ASCII form is the same domain to every
/// server. (A local part outside ASCII would need SMTPUTF8: such addresses are refused.)
fn with_ascii_domain(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) if !domain.is_ascii() => match idna::domain_to_ascii(domain) {
            Ok(ascii) => format!("{local}@{ascii}"),
            Err(_) => address.to_string(),
        },
        _ => address.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_international_domain_goes_out_in_ascii() {
        assert_eq!(with_ascii_domain("trader@bücher.example"), "trader@xn--bcher-kva.example");
        assert_eq!(with_ascii_domain("Trader@Example.COM"), "Trader@Example.COM", "ASCII is left as written");
        assert_eq!(with_ascii_domain("trädér@example.com"), "trädér@example.com");
        assert_eq!(with_ascii_domain("no-at-sign"), "no-at-sign");
    }

    #[test]
    fn refused_credentials_are_told_from_refused_mailboxes() {
        for code in ["530", "534", "535", "538"] {
            assert!(is_authentication_failure(code), "{code}");
        }
        for code in ["550", "553", "554", "421", "451"] {
            assert!(!is_authentication_failure(code), "{code}");
        }
    }
    use crate::domain::events::Event;

    fn content(event: Value) -> Content {
        let c = Event::parse(event).unwrap().kind.content();
        Content {
            notification: crate::domain::NewNotification {
                id: uuid::Uuid::nil(),
                user_id: uuid::Uuid::nil(),
                content: std::sync::Arc::new(c.at(chrono::Utc::now())),
            }
            .into_stored(1),
            is_test: false,
        }
    }

    #[test]
    fn subjects_a_trader_can_scan() {
        let u = uuid::Uuid::new_v4();
        let signal =
            content(json!({"type": "signal_generated", "user_id": u, "signal": {"signal_id": "s", "symbol": "AAPL",
            "pattern_type": "SPRING", "confidence": 87, "entry_price": "152.35"}}));
        assert_eq!(subject(&signal), "AAPL Spring 87% — entry 152.35");
        let exit = content(
            json!({"type": "emergency_exit", "user_id": u, "exit": {"campaign_id": "C", "symbol": "TSLA", "reason": "creek breached"}}),
        );
        assert_eq!(subject(&exit), "EMERGENCY EXIT TSLA — creek breached");
        let risk = content(
            json!({"type": "risk_warning", "user_id": u, "risk": {"risk_type": "portfolio_heat", "current": 8.6}}),
        );
        assert_eq!(subject(&risk), "[WARNING] Risk warning: portfolio heat 8.6% (limit 10%)");
    }

    #[test]
    fn every_template_renders_with_its_details() {
        let u = uuid::Uuid::new_v4();
        for (event, needle) in [
            (
                json!({"type": "signal_generated", "user_id": u, "signal": {"signal_id": "s", "symbol": "AAPL", "pattern_type": "SPRING", "confidence": 91, "r_multiple": 3.2}}),
                "3.2R",
            ),
            (
                json!({"type": "risk_warning", "user_id": u, "risk": {"risk_type": "campaign_allocation", "current": 4.7, "affected_campaigns": ["C-1", "C-2"]}}),
                "C-1, C-2",
            ),
            (
                json!({"type": "emergency_exit", "user_id": u, "exit": {"campaign_id": "C-9", "symbol": "TSLA", "reason": "creek breached", "positions_closed": 3}}),
                "3 position(s) closed",
            ),
            (
                json!({"type": "system_error", "error": {"error_type": "db_down", "message": "boom", "correlation_id": "corr-1"}}),
                "corr-1",
            ),
        ] {
            let c = content(event);
            let e = render(&c);
            assert!(e.html.contains(needle), "{needle} in {}", e.html);
            assert!(!e.html.contains("template error"), "{}", e.html);
            assert!(e.text.contains(&c.notification.title), "{}", e.text);
        }
        let test = render(&Content::test(u, Channel::Email));
        assert_eq!(test.subject, "notifyhub test email");
        assert!(test.html.contains("test email from notifyhub"));
    }

    #[test]
    fn html_is_escaped() {
        let u = uuid::Uuid::new_v4();
        let c = content(
            json!({"type": "notification", "user_id": u, "notification_type": "system_error", "priority": "info",
            "title": "<script>x</script>", "message": "<b>hi</b>"}),
        );
        let e = render(&c);
        assert!(!e.html.contains("<script>x"), "{}", e.html);
    }
}
