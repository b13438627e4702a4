//! Events posted to the HTTP bridge: parsing with a clear refusal per field, and the
//! notification each one becomes (title, message, metadata, priority).

use super::metadata::Metadata;
use super::notification::{NotificationType, Priority};
use super::rules::{signal_priority, RiskType};
use super::validation::{validate_message, validate_title, FieldError};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use uuid::Uuid;

/// Most recipients one event may name: a 64 KiB body (the contract's limit) holds
/// about 1,600 ids, so a larger list could not arrive anyway; `audience: all` reaches
/// every user.
pub const MAX_USER_IDS: usize = 1_500;

/// Who an event is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// These users (deduplicated, in order).
    Users(Vec<Uuid>),
    /// Every known user.
    All,
    /// Every admin (system errors with no `user_id`).
    Admins,
}

/// The body as posted; every field optional so each refusal can name its field.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    #[serde(rename = "type")]
    kind: Option<String>,
    user_id: Option<Value>,
    user_ids: Option<Vec<Value>>,
    audience: Option<String>,
    signal: Option<Value>,
    risk: Option<Value>,
    exit: Option<Value>,
    error: Option<Value>,
    notification_type: Option<String>,
    priority: Option<String>,
    title: Option<String>,
    message: Option<String>,
    /// Read as text (see [`Metadata`]).
    metadata: Option<Box<serde_json::value::RawValue>>,
}

/// A signal the generator approved.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalPayload {
    /// The generator's id.
    pub signal_id: Value,
    /// Ticker, e.g. `AAPL`.
    pub symbol: String,
    /// Wyckoff pattern, e.g. `SPRING`.
    pub pattern_type: String,
    /// 0–100.
    pub confidence: f64,
    /// Decimal as number or string.
    #[serde(default)]
    pub entry_price: Option<Value>,
    /// Decimal as number or string.
    #[serde(default)]
    pub stop_loss: Option<Value>,
    /// Reward/risk multiple.
    #[serde(default)]
    pub r_multiple: Option<f64>,
}

/// A risk figure close to its limit.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskPayload {
    /// Which figure.
    pub risk_type: RiskType,
    /// Current value, %.
    pub current: f64,
    /// The limit, % (defaults to the rule's).
    #[serde(default)]
    pub limit: Option<f64>,
    /// Campaigns concerned.
    #[serde(default)]
    pub affected_campaigns: Vec<String>,
}

/// A campaign force-closed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitPayload {
    /// The campaign.
    pub campaign_id: Value,
    /// Ticker.
    pub symbol: String,
    /// Why (e.g. creek breached).
    pub reason: String,
    /// Positions closed.
    #[serde(default)]
    pub positions_closed: u32,
}

/// A failure somewhere in the platform.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorPayload {
    /// Stable kind, the throttle key (e.g. `database_connection`).
    pub error_type: String,
    /// What happened.
    pub message: String,
    /// Truncated on storage.
    #[serde(default)]
    pub stack_trace: Option<String>,
    /// To find the logs.
    #[serde(default)]
    pub correlation_id: Option<String>,
}

/// What an event says happened.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// `signal_generated`.
    Signal(SignalPayload),
    /// `risk_warning`.
    Risk(RiskPayload),
    /// `emergency_exit`.
    Exit(ExitPayload),
    /// `system_error`.
    SystemError(ErrorPayload),
    /// `notification`: the caller names everything.
    Generic(Content),
    /// A test message a user asked for on their own dashboard: never throttled.
    Test(Content),
}

/// Which throttle an event is under (the story's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Throttle {
    /// Once an hour for each recipient and risk type (key `risk_warning:{user}:{risk_type}`).
    RiskWarning {
        /// The risk type.
        risk_type: String,
    },
    /// Once per 15 minutes per error type, whoever the recipients are.
    SystemError {
        /// `system_error:{error_type}`.
        key: String,
    },
}

/// A metadata string usable in a throttle key: trimmed, non-empty, at most 64 characters.
fn metadata_text(metadata: &Metadata, name: &str) -> Option<String> {
    let text = metadata.string(name)?;
    let text = text.trim();
    (!text.is_empty() && text.chars().count() <= 64).then(|| text.to_string())
}

/// A validated event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// Who it is for.
    pub audience: Audience,
}

/// A notification's content, before rules per recipient.
#[derive(Debug, Clone, PartialEq)]
pub struct Content {
    /// Type.
    pub notification_type: NotificationType,
    /// Priority.
    pub priority: Priority,
    /// Headline.
    pub title: String,
    /// Body.
    pub message: String,
    /// Details.
    pub metadata: Metadata,
}

impl Content {
    /// What the notifications made of it say, created at `created_at`.
    pub fn at(self, created_at: chrono::DateTime<chrono::Utc>) -> super::NotificationContent {
        super::NotificationContent {
            notification_type: self.notification_type,
            priority: self.priority,
            title: self.title,
            message: self.message,
            metadata: self.metadata,
            created_at,
        }
    }
}

fn field(name: &str, reason: impl Into<String>) -> FieldError {
    FieldError::new(name, reason)
}

fn payload<T: for<'de> Deserialize<'de>>(name: &str, value: Option<Value>) -> Result<T, FieldError> {
    let value = value.ok_or_else(|| field(name, "is required for this event type"))?;
    crate::domain::validation::from_json_object(value, name)
}

fn user_id(name: &str, v: &Value) -> Result<Uuid, FieldError> {
    parse_user_id(v).ok_or_else(|| field(name, "must be a user UUID"))
}

fn parse_user_id(v: &Value) -> Option<Uuid> {
    v.as_str().and_then(|s| Uuid::parse_str(s.trim()).ok())
}

fn short_text(name: &str, value: &str, max: usize) -> Result<String, FieldError> {
    let t = value.trim();
    if t.is_empty() {
        return Err(field(name, "must not be empty"));
    }
    // Reasons and error messages are prose; symbols and types are one line.
    let multiline = name.ends_with(".reason") || name.ends_with(".message");
    if crate::domain::validation::has_control_characters(t, multiline) {
        return Err(crate::domain::validation::control_characters_refused(name, multiline));
    }
    if t.chars().count() > max {
        return Err(field(name, format!("must be at most {max} characters")));
    }
    Ok(t.to_string())
}

/// Longest decimal string taken for a price: the text goes into the toast as written, and
/// no price needs more digits.
const MAX_DECIMAL_TEXT: usize = 32;

fn decimal(name: &str, v: &Option<Value>) -> Result<(), FieldError> {
    let ok = match v {
        None | Some(Value::Null) => true,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|x| x.is_finite()),
        Some(Value::String(s)) if s.trim().len() > MAX_DECIMAL_TEXT => {
            return Err(field(name, format!("must be at most {MAX_DECIMAL_TEXT} characters")))
        }
        Some(Value::String(s)) => s.trim().parse::<f64>().is_ok_and(|x| x.is_finite()),
        Some(_) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(field(name, "must be a number or a decimal string"))
    }
}

fn id_value(name: &str, v: &Value) -> Result<(), FieldError> {
    match v {
        Value::String(s) if !s.trim().is_empty() && s.len() <= 128 => Ok(()),
        Value::Number(_) => Ok(()),
        _ => Err(field(name, "must be a non-empty string or number")),
    }
}

impl Event {
    /// Tests build bodies as values; they go through the bridge's own path, from text.
    #[cfg(test)]
    pub fn parse(body: Value) -> Result<Event, FieldError> {
        Self::parse_json(&body.to_string())
    }

    /// Parses and validates a bridge body, read from its text (no `Value` of the whole
    /// body is built).
    pub fn parse_json(body: &str) -> Result<Event, FieldError> {
        Self::from_raw(crate::domain::validation::from_json_text(body, "")?)
    }

    fn from_raw(mut raw: RawEvent) -> Result<Event, FieldError> {
        let kind_name = raw.kind.take().ok_or_else(|| field("type", "is required"))?;
        let kind = match kind_name.as_str() {
            "signal_generated" => {
                let s: SignalPayload = payload("signal", raw.signal.take())?;
                id_value("signal.signal_id", &s.signal_id)?;
                short_text("signal.symbol", &s.symbol, 16)?;
                short_text("signal.pattern_type", &s.pattern_type, 64)?;
                if !(0.0..=100.0).contains(&s.confidence) {
                    return Err(field("signal.confidence", "must be between 0 and 100"));
                }
                decimal("signal.entry_price", &s.entry_price)?;
                decimal("signal.stop_loss", &s.stop_loss)?;
                if s.r_multiple.is_some_and(|r| !r.is_finite()) {
                    return Err(field("signal.r_multiple", "must be a number"));
                }
                EventKind::Signal(s)
            }
            "risk_warning" => {
                let r: RiskPayload = payload("risk", raw.risk.take())?;
                if !r.current.is_finite() || r.current < 0.0 || r.current > 1000.0 {
                    return Err(field("risk.current", "must be a percentage between 0 and 1000"));
                }
                if r.limit.is_some_and(|l| !l.is_finite() || l <= 0.0) {
                    return Err(field("risk.limit", "must be a positive percentage"));
                }
                if r.affected_campaigns.len() > 100 {
                    return Err(field("risk.affected_campaigns", "must list at most 100 campaigns"));
                }
                EventKind::Risk(r)
            }
            "emergency_exit" => {
                let x: ExitPayload = payload("exit", raw.exit.take())?;
                id_value("exit.campaign_id", &x.campaign_id)?;
                short_text("exit.symbol", &x.symbol, 16)?;
                short_text("exit.reason", &x.reason, 500)?;
                EventKind::Exit(x)
            }
            "system_error" => {
                let e: ErrorPayload = payload("error", raw.error.take())?;
                let t = short_text("error.error_type", &e.error_type, 64)?;
                if !t.chars().all(|c| c.is_ascii_alphanumeric() || "_.-:".contains(c)) {
                    return Err(field("error.error_type", "may only contain letters, digits and _ . - :"));
                }
                short_text("error.message", &e.message, 1000)?;
                EventKind::SystemError(e)
            }
            "notification" => {
                let notification_type = raw
                    .notification_type
                    .as_deref()
                    .ok_or_else(|| field("notification_type", "is required"))?
                    .parse::<NotificationType>()
                    .map_err(|e| field("notification_type", e))?;
                let priority = raw
                    .priority
                    .as_deref()
                    .ok_or_else(|| field("priority", "is required"))?
                    .parse::<Priority>()
                    .map_err(|e| field("priority", e))?;
                let title = raw.title.take().ok_or_else(|| field("title", "is required"))?;
                let message = raw.message.take().unwrap_or_default();
                validate_title(&title)?;
                validate_message(&message)?;
                let metadata = raw.metadata.take().map(Metadata::from_posted).transpose()?.unwrap_or_default();
                EventKind::Generic(Content {
                    notification_type,
                    priority,
                    title,
                    message,
                    metadata,
                })
            }
            other => {
                return Err(field(
                    "type",
                    format!(
                        "unknown event type '{other}' (expected signal_generated, risk_warning, emergency_exit, system_error or notification)"
                    ),
                ))
            }
        };
        // Payload fields of another kind are a sign of a confused caller.
        for (name, present) in [
            ("signal", raw.signal.is_some()),
            ("risk", raw.risk.is_some()),
            ("exit", raw.exit.is_some()),
            ("error", raw.error.is_some()),
        ] {
            let own = matches!(
                (name, &kind),
                ("signal", EventKind::Signal(_))
                    | ("risk", EventKind::Risk(_))
                    | ("exit", EventKind::Exit(_))
                    | ("error", EventKind::SystemError(_))
            );
            if present && !own {
                return Err(field(name, format!("does not belong to a '{kind_name}' event")));
            }
        }
        if !matches!(kind, EventKind::Generic(_)) {
            for (name, present) in [
                ("notification_type", raw.notification_type.is_some()),
                ("priority", raw.priority.is_some()),
                ("title", raw.title.is_some()),
                ("message", raw.message.is_some()),
                ("metadata", raw.metadata.is_some()),
            ] {
                if present {
                    return Err(field(name, format!("is only for 'notification' events, not '{kind_name}'")));
                }
            }
        }
        let audience = Self::audience(&raw, &kind)?;
        Ok(Event { kind, audience })
    }

    fn audience(raw: &RawEvent, kind: &EventKind) -> Result<Audience, FieldError> {
        let named =
            [raw.user_id.is_some(), raw.user_ids.is_some(), raw.audience.is_some()].iter().filter(|b| **b).count();
        if named > 1 {
            return Err(field("user_id", "give only one of user_id, user_ids or audience"));
        }
        if let Some(v) = &raw.user_id {
            return Ok(Audience::Users(vec![user_id("user_id", v)?]));
        }
        if let Some(list) = &raw.user_ids {
            if list.is_empty() {
                return Err(field("user_ids", "must name at least one user"));
            }
            if list.len() > MAX_USER_IDS {
                return Err(field("user_ids", format!("must name at most {MAX_USER_IDS} users (use audience: all)")));
            }
            let mut seen = crate::id_maps::set_with_capacity(list.len());
            let mut ids = Vec::with_capacity(list.len());
            for (i, v) in list.iter().enumerate() {
                // The field's name is written only for a refusal: a broadcast names
                // thousands of users.
                let id = parse_user_id(v).ok_or_else(|| field(&format!("user_ids[{i}]"), "must be a user UUID"))?;
                if seen.insert(id) {
                    ids.push(id);
                }
            }
            return Ok(Audience::Users(ids));
        }
        if let Some(a) = &raw.audience {
            return match a.as_str() {
                "all" => Ok(Audience::All),
                "admins" => Ok(Audience::Admins),
                other => Err(field("audience", format!("'{other}' is not 'all' or 'admins'"))),
            };
        }
        match kind {
            EventKind::SystemError(_) => Ok(Audience::Admins),
            _ => Err(field("user_id", "is required (or user_ids, or audience: all)")),
        }
    }
}

fn title_case(s: &str) -> String {
    let lower = s.trim().replace('_', " ").to_lowercase();
    let mut out = String::with_capacity(lower.len());
    let mut start = true;
    for c in lower.chars() {
        if start {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = c == ' ';
    }
    out
}

fn number_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.trim().to_string(),
        other => other.to_string(),
    }
}

fn percent(x: f64) -> String {
    let s = format!("{x:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

impl EventKind {
    /// The throttle this event is under, if any. A generic `notification` of type
    /// `risk_warning` or `system_error` is under the same one as the typed event (the
    /// contract: throttles apply): its `metadata.risk_type` / `metadata.error_type` name
    /// the kind, else `unspecified` / its title.
    pub fn throttle(&self) -> Option<Throttle> {
        match self {
            EventKind::Risk(r) => Some(Throttle::RiskWarning { risk_type: r.risk_type.as_str().to_string() }),
            EventKind::SystemError(e) => {
                Some(Throttle::SystemError { key: format!("system_error:{}", e.error_type.trim()) })
            }
            EventKind::Generic(c) => match c.notification_type {
                NotificationType::RiskWarning => Some(Throttle::RiskWarning {
                    risk_type: metadata_text(&c.metadata, "risk_type").unwrap_or_else(|| "unspecified".into()),
                }),
                NotificationType::SystemError => {
                    let kind = metadata_text(&c.metadata, "error_type").unwrap_or_else(|| c.title.trim().to_string());
                    Some(Throttle::SystemError { key: format!("system_error:{kind}") })
                }
                _ => None,
            },
            EventKind::Signal(_) | EventKind::Exit(_) | EventKind::Test(_) => None,
        }
    }

    /// [`Self::content`], moving a generic event's content out instead of copying it.
    pub fn into_content(self) -> Content {
        match self {
            EventKind::Generic(c) | EventKind::Test(c) => c,
            other => other.content(),
        }
    }

    /// The notification this event becomes (the signal priority comes from confidence).
    pub fn content(&self) -> Content {
        match self {
            EventKind::Signal(s) => {
                let pattern = title_case(&s.pattern_type);
                let symbol = s.symbol.trim().to_uppercase();
                let mut message =
                    format!("{pattern} pattern detected on {symbol} with {} confidence", percent(s.confidence));
                if let Some(entry) = &s.entry_price {
                    message.push_str(&format!(" — entry {}", number_text(entry)));
                }
                if let Some(stop) = &s.stop_loss {
                    message.push_str(&format!(", stop {}", number_text(stop)));
                }
                if let Some(r) = s.r_multiple {
                    message.push_str(&format!(", {r}R"));
                }
                let mut meta = Map::new();
                meta.insert("signal_id".into(), s.signal_id.clone());
                meta.insert("symbol".into(), json!(symbol));
                meta.insert("pattern_type".into(), json!(s.pattern_type.trim()));
                meta.insert("confidence".into(), json!(s.confidence));
                for (k, v) in [("entry_price", &s.entry_price), ("stop_loss", &s.stop_loss)] {
                    if let Some(v) = v {
                        meta.insert(k.into(), v.clone());
                    }
                }
                if let Some(r) = s.r_multiple {
                    meta.insert("r_multiple".into(), json!(r));
                }
                Content {
                    notification_type: NotificationType::SignalGenerated,
                    priority: signal_priority(s.confidence),
                    title: format!("New Signal: {symbol} {pattern}"),
                    message,
                    metadata: Metadata::from_value(&Value::Object(meta)),
                }
            }
            EventKind::Risk(r) => {
                let limit = r.limit.unwrap_or(r.risk_type.limit());
                let mut message = format!(
                    "{} is {}, close to the {} limit.",
                    r.risk_type.label(),
                    percent(r.current),
                    percent(limit)
                );
                if !r.affected_campaigns.is_empty() {
                    message.push_str(&format!(" Affected campaigns: {}.", r.affected_campaigns.join(", ")));
                }
                Content {
                    notification_type: NotificationType::RiskWarning,
                    priority: Priority::Warning,
                    title: format!(
                        "Risk warning: {} {} (limit {})",
                        r.risk_type.label().to_lowercase(),
                        percent(r.current),
                        percent(limit)
                    ),
                    message: truncate(&message, 1000),
                    metadata: Metadata::from_value(&json!({
                        "risk_type": r.risk_type.as_str(),
                        "current": r.current,
                        "limit": limit,
                        "affected_campaigns": r.affected_campaigns,
                    })),
                }
            }
            EventKind::Exit(x) => {
                let symbol = x.symbol.trim().to_uppercase();
                Content {
                    notification_type: NotificationType::EmergencyExit,
                    priority: Priority::Critical,
                    title: format!("Emergency exit: {symbol}"),
                    message: truncate(
                        &format!(
                            "Campaign {} on {symbol} was closed: {}. {} position(s) closed.",
                            number_text(&x.campaign_id),
                            x.reason.trim(),
                            x.positions_closed
                        ),
                        1000,
                    ),
                    metadata: Metadata::from_value(&json!({
                        "campaign_id": x.campaign_id,
                        "symbol": symbol,
                        "reason": x.reason.trim(),
                        "positions_closed": x.positions_closed,
                    })),
                }
            }
            EventKind::SystemError(e) => {
                let mut meta = Map::new();
                meta.insert("error_type".into(), json!(e.error_type.trim()));
                if let Some(st) = &e.stack_trace {
                    meta.insert("stack_trace".into(), json!(truncate(st, 4000)));
                }
                if let Some(c) = &e.correlation_id {
                    meta.insert("correlation_id".into(), json!(truncate(c, 128)));
                }
                Content {
                    notification_type: NotificationType::SystemError,
                    priority: Priority::Critical,
                    title: truncate(&format!("System error: {}", e.error_type.trim()), 200),
                    message: truncate(e.message.trim(), 1000),
                    metadata: Metadata::from_value(&Value::Object(meta)),
                }
            }
            EventKind::Generic(c) | EventKind::Test(c) => c.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid() -> String {
        Uuid::new_v4().to_string()
    }

    fn signal(conf: f64) -> Value {
        json!({"type": "signal_generated", "user_id": uid(), "signal": {
            "signal_id": "s-1", "symbol": "aapl", "pattern_type": "SPRING", "confidence": conf,
            "entry_price": "152.35", "stop_loss": 148.1, "r_multiple": 3.2}})
    }

    #[test]
    fn a_signal_becomes_a_readable_notification() {
        let e = Event::parse(signal(87.0)).unwrap();
        let c = e.kind.content();
        assert_eq!(c.notification_type, NotificationType::SignalGenerated);
        assert_eq!(c.priority, Priority::Warning);
        assert_eq!(c.title, "New Signal: AAPL Spring");
        assert_eq!(c.message, "Spring pattern detected on AAPL with 87% confidence — entry 152.35, stop 148.1, 3.2R");
        assert_eq!(c.metadata.value()["entry_price"], "152.35");
        assert_eq!(c.metadata.value()["confidence"], 87.0);
        assert_eq!(Event::parse(signal(90.0)).unwrap().kind.content().priority, Priority::Critical);
    }

    #[test]
    fn risk_exit_and_error_contents() {
        let r = Event::parse(json!({"type": "risk_warning", "user_id": uid(),
            "risk": {"risk_type": "portfolio_heat", "current": 8.6, "affected_campaigns": ["c1", "c2"]}}))
        .unwrap();
        let c = r.kind.content();
        assert_eq!(c.priority, Priority::Warning);
        assert_eq!(c.title, "Risk warning: portfolio heat 8.6% (limit 10%)");
        assert!(c.message.contains("c1, c2"));
        assert_eq!(r.kind.throttle(), Some(Throttle::RiskWarning { risk_type: "portfolio_heat".into() }));

        let x = Event::parse(json!({"type": "emergency_exit", "user_id": uid(),
            "exit": {"campaign_id": "C-7", "symbol": "TSLA", "reason": "creek breached", "positions_closed": 3}}))
        .unwrap();
        let c = x.kind.content();
        assert_eq!(c.priority, Priority::Critical);
        assert_eq!(c.title, "Emergency exit: TSLA");

        let s = Event::parse(json!({"type": "system_error", "error": {"error_type": "db_down", "message": "boom", "stack_trace": "x".repeat(5000)}})).unwrap();
        assert_eq!(s.audience, Audience::Admins);
        let c = s.kind.content();
        assert_eq!(c.priority, Priority::Critical);
        assert_eq!(c.metadata.value()["stack_trace"].as_str().unwrap().chars().count(), 4000);
        assert_eq!(s.kind.throttle(), Some(Throttle::SystemError { key: "system_error:db_down".into() }));
    }

    #[test]
    fn generic_notifications_keep_their_priority() {
        let e = Event::parse(
            json!({"type": "notification", "user_ids": [uid(), uid()], "notification_type": "signal_generated",
            "priority": "info", "title": "t", "message": "m", "metadata": {"k": 1}}),
        )
        .unwrap();
        assert!(matches!(&e.audience, Audience::Users(v) if v.len() == 2));
        assert_eq!(e.kind.content().priority, Priority::Info);
        let prose = Event::parse(json!({"type": "notification", "user_id": uid(), "notification_type": "system_error",
            "priority": "info", "title": "t", "message": "line 1\r\nline 2\tend"}));
        assert!(prose.is_ok(), "line breaks and tabs are fine in a message");
    }

    #[test]
    fn generic_risk_warnings_and_system_errors_are_under_the_typed_throttles() {
        let generic = |t: &str, metadata: Value| {
            Event::parse(json!({"type": "notification", "user_id": uid(), "notification_type": t,
                "priority": "warning", "title": " Feed down ", "message": "m", "metadata": metadata}))
            .unwrap()
            .kind
        };
        let typed = Event::parse(json!({"type": "risk_warning", "user_id": uid(),
            "risk": {"risk_type": "portfolio_heat", "current": 9.0}}))
        .unwrap()
        .kind;
        let heat = generic("risk_warning", json!({"risk_type": "portfolio_heat"}));
        assert_eq!(heat.throttle(), typed.throttle(), "one throttle for both spellings");
        assert_eq!(
            generic("risk_warning", json!({})).throttle(),
            Some(Throttle::RiskWarning { risk_type: "unspecified".into() })
        );
        let key = |kind: EventKind| match kind.throttle() {
            Some(Throttle::SystemError { key }) => key,
            other => panic!("not a system-error throttle: {other:?}"),
        };
        assert_eq!(key(generic("system_error", json!({"error_type": "feed_down"}))), "system_error:feed_down");
        assert_eq!(key(generic("system_error", json!({"error_type": 7}))), "system_error:Feed down");
        assert_eq!(generic("signal_generated", json!({})).throttle(), None);
        assert_eq!(generic("emergency_exit", json!({})).throttle(), None);
        let test = EventKind::Test(generic("system_error", json!({})).content());
        assert_eq!(test.throttle(), None, "a user's test message is never throttled");
    }

    #[test]
    fn audiences() {
        let id = uid();
        let e = Event::parse(json!({"type": "emergency_exit", "user_ids": [id, id],
            "exit": {"campaign_id": 1, "symbol": "X", "reason": "r"}}))
        .unwrap();
        assert_eq!(e.audience, Audience::Users(vec![Uuid::parse_str(&id).unwrap()]), "duplicates collapse");
        let e = Event::parse(json!({"type": "emergency_exit", "audience": "all",
            "exit": {"campaign_id": 1, "symbol": "X", "reason": "r"}}))
        .unwrap();
        assert_eq!(e.audience, Audience::All);
        let exit = json!({"campaign_id": 1, "symbol": "X", "reason": "r"});
        let many: Vec<String> = (0..MAX_USER_IDS).map(|_| uid()).collect();
        assert!(Event::parse(json!({"type": "emergency_exit", "user_ids": many, "exit": exit})).is_ok());
        let too_many: Vec<String> = (0..=MAX_USER_IDS).map(|_| uid()).collect();
        let err = Event::parse(json!({"type": "emergency_exit", "user_ids": too_many, "exit": exit})).unwrap_err();
        assert_eq!(err.field, "user_ids");
    }

    #[test]
    fn every_refusal_names_its_field() {
        let u = uid();
        let cases = [
            (json!({"user_id": u}), "type"),
            (json!({"type": "weather", "user_id": u}), "type"),
            (json!({"type": "signal_generated", "user_id": u}), "signal"),
            (json!({"type": "signal_generated", "user_id": "bob", "signal": signal(90.0)["signal"]}), "user_id"),
            (json!({"type": "signal_generated", "signal": signal(90.0)["signal"]}), "user_id"),
            (
                json!({"type": "signal_generated", "user_id": u, "user_ids": [u], "signal": signal(90.0)["signal"]}),
                "user_id",
            ),
            (json!({"type": "signal_generated", "user_ids": [], "signal": signal(90.0)["signal"]}), "user_ids"),
            (
                json!({"type": "signal_generated", "user_ids": [u, "x"], "signal": signal(90.0)["signal"]}),
                "user_ids[1]",
            ),
            (json!({"type": "signal_generated", "audience": "everyone", "signal": signal(90.0)["signal"]}), "audience"),
            (json!({"type": "signal_generated", "user_id": u, "signal": {"symbol": "A"}}), "signal.signal_id"),
            (signal(101.0), "signal.confidence"),
            (signal(-1.0), "signal.confidence"),
            (
                json!({"type": "signal_generated", "user_id": u, "signal": {"signal_id": "s", "symbol": "A", "pattern_type": "P", "confidence": 90, "entry_price": "abc"}}),
                "signal.entry_price",
            ),
            (
                json!({"type": "signal_generated", "user_id": u, "signal": {"signal_id": "s", "symbol": "A", "pattern_type": "P", "confidence": 90, "stop_loss": format!("1{}", "0".repeat(40))}}),
                "signal.stop_loss",
            ),
            (
                json!({"type": "signal_generated", "user_id": u, "signal": {"signal_id": "s", "symbol": "", "pattern_type": "P", "confidence": 90}}),
                "signal.symbol",
            ),
            (
                json!({"type": "risk_warning", "user_id": u, "risk": {"risk_type": "leverage", "current": 9}}),
                "risk.risk_type",
            ),
            (
                json!({"type": "risk_warning", "user_id": u, "risk": {"risk_type": "portfolio_heat", "current": -2}}),
                "risk.current",
            ),
            (
                json!({"type": "emergency_exit", "user_id": u, "exit": {"campaign_id": "", "symbol": "X", "reason": "r"}}),
                "exit.campaign_id",
            ),
            (json!({"type": "system_error", "error": {"error_type": "has space", "message": "m"}}), "error.error_type"),
            (json!({"type": "system_error", "error": {"error_type": "t", "message": ""}}), "error.message"),
            (json!({"type": "system_error", "error": {"error_type": "t", "message": "a\u{0}b"}}), "error.message"),
            (
                json!({"type": "emergency_exit", "user_id": u, "exit": {"campaign_id": 1, "symbol": "TSLA\r\nX-A: b", "reason": "r"}}),
                "exit.symbol",
            ),
            (
                json!({"type": "notification", "user_id": u, "notification_type": "risk_warning", "priority": "info", "title": "Hi\r\nBcc: x"}),
                "title",
            ),
            (
                json!({"type": "notification", "user_id": u, "notification_type": "risk_warning", "priority": "info", "title": "t", "message": "a\u{1b}[31m"}),
                "message",
            ),
            (json!({"type": "notification", "user_id": u, "priority": "info", "title": "t"}), "notification_type"),
            (
                json!({"type": "notification", "user_id": u, "notification_type": "risk_warning", "priority": "urgent", "title": "t"}),
                "priority",
            ),
            (
                json!({"type": "notification", "user_id": u, "notification_type": "risk_warning", "priority": "info", "title": "x".repeat(201)}),
                "title",
            ),
            (
                json!({"type": "notification", "user_id": u, "notification_type": "risk_warning", "priority": "info", "title": "t", "message": "m".repeat(1001)}),
                "message",
            ),
            (
                json!({"type": "notification", "user_id": u, "notification_type": "risk_warning", "priority": "info", "title": "t", "metadata": [1]}),
                "metadata",
            ),
            (
                json!({"type": "signal_generated", "user_id": u, "signal": signal(90.0)["signal"], "title": "x"}),
                "title",
            ),
            (json!({"type": "signal_generated", "user_id": u, "signal": signal(90.0)["signal"], "risk": {}}), "risk"),
            (
                json!({"type": "signal_generated", "user_id": u, "signal": signal(90.0)["signal"], "colour": 1}),
                "colour",
            ),
        ];
        for (body, name) in cases {
            let err = Event::parse(body.clone()).unwrap_err();
            assert_eq!(err.field, name, "{body}: {err}");
        }
    }

    #[test]
    fn refusals_only_text_can_carry_name_their_field() {
        let u = uid();
        let twice = format!(r#"{{"type": "emergency_exit", "type": "emergency_exit", "user_id": "{u}"}}"#);
        assert_eq!(Event::parse_json(&twice).unwrap_err().field, "type");
        assert_eq!(Event::parse_json(" [1, 2]").unwrap_err().field, "body");
        let err = Event::parse_json(r#"{"type": "weather", "user_id": 7}"#).unwrap_err();
        assert!(!err.to_string().contains(" at line "), "{err}");
    }
}
