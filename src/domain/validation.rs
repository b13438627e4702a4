//! Parse, don't validate: newtypes whose only constructor checks the value, so a value
//! of the type is valid by construction. Each refusal names the field it concerns.

use chrono::NaiveTime;
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// A validation failure tied to the input field that caused it (dotted path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the offending field, e.g. `quiet_hours.timezone`.
    pub field: String,
    /// Human-readable reason, safe to show to the client.
    pub reason: String,
}

impl FieldError {
    /// Builds a field error.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { field: field.into(), reason: reason.into() }
    }
}

/// Reads a JSON object into `T`, naming the offending field (`prefix.path.to.field`) and
/// saying what was expected in words, not in Rust's types, when it does not fit.
pub fn from_json_object<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    prefix: &str,
) -> Result<T, FieldError> {
    if !value.is_object() {
        return Err(not_an_object(prefix));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        field_error(prefix, &path, &e.into_inner().to_string())
    })
}

/// [`from_json_object`] from JSON text (well-formed: the request extractor checked
/// it), without building a `Value` of the whole document first.
pub fn from_json_text<T: serde::de::DeserializeOwned>(text: &str, prefix: &str) -> Result<T, FieldError> {
    if !text.trim_start().starts_with('{') {
        return Err(not_an_object(prefix));
    }
    // The same parse without tracking the path first: almost every body is valid, and
    // the tracking cost a few per cent of an event's instructions. A refusal is parsed
    // again, tracked, to name its field.
    if let Ok(value) = serde_json::from_str(text) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        field_error(prefix, &path, without_position(&e.into_inner().to_string()))
    })?;
    de.end().map_err(|e| field_error(prefix, "", without_position(&e.to_string())))?;
    Ok(value)
}

fn not_an_object(prefix: &str) -> FieldError {
    let at = if prefix.is_empty() { "body" } else { prefix };
    FieldError::new(at, "must be a JSON object")
}

/// serde_json's message without the " at line L column C" a parser adds: the field is
/// named, and a `Value` (the other way in) has no position to add.
fn without_position(text: &str) -> &str {
    match text.rfind(" at line ") {
        Some(at)
            if text[at + 9..].split(" column ").all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) =>
        {
            &text[..at]
        }
        _ => text,
    }
}

/// The error for serde's `text` about `path` under `prefix`.
fn field_error(prefix: &str, path: &str, text: &str) -> FieldError {
    let join =
        |parts: &[&str]| parts.iter().filter(|p| !p.is_empty() && **p != ".").copied().collect::<Vec<_>>().join(".");
    // Missing fields are reported at their parent: name the field itself
    let named = field_named_in(text);
    // (the path already ends with an unknown field's name; a missing one's is not in it)
    let named = named.filter(|name| path.rsplit('.').next() != Some(*name));
    let field = join(&[prefix, path, named.unwrap_or_default()]);
    let field = if field.is_empty() { "body".to_string() } else { field };
    FieldError::new(field, plain_words(text))
}

/// The field a serde message is about, when it names one ("unknown field `x`", …).
pub fn field_named_in(text: &str) -> Option<&str> {
    ["unknown field `", "missing field `", "duplicate field `"]
        .iter()
        .find_map(|start| text.strip_prefix(start).and_then(|rest| rest.split('`').next()))
}

/// serde's wording without Rust's type names (`expected i64` → `expected a whole number`).
fn plain_words(text: &str) -> String {
    let mut out = text.to_string();
    for (rust, words) in [
        ("expected i64", "expected a whole number"),
        ("expected i32", "expected a whole number"),
        ("expected u32", "expected a whole number of 0 or more"),
        ("expected u64", "expected a whole number of 0 or more"),
        ("expected u8", "expected a whole number of 0 or more"),
        ("expected f64", "expected a number"),
        ("expected f32", "expected a number"),
    ] {
        out = out.replace(rust, words);
    }
    if let Some(at) = out.find("expected struct ") {
        out.truncate(at);
        out.push_str("expected an object");
    }
    out
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for FieldError {}

/// Upper bounds of the story, enforced at the edge.
pub mod limits {
    /// Longest accepted notification title, in characters.
    pub const TITLE_MAX_CHARS: usize = 200;
    /// Longest accepted notification message, in characters.
    pub const MESSAGE_MAX_CHARS: usize = 1000;
    /// Largest accepted metadata object, as compact JSON text, in bytes.
    pub const METADATA_MAX_BYTES: usize = 16 * 1024;
    /// Lowest allowed confidence threshold.
    pub const THRESHOLD_MIN: i64 = 70;
    /// Highest allowed confidence threshold.
    pub const THRESHOLD_MAX: i64 = 95;
    /// Default confidence threshold.
    pub const THRESHOLD_DEFAULT: u8 = 85;
}

/// A user's id: any UUID. Users are not provisioned beforehand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(pub Uuid);

impl UserId {
    /// Parses a user id from its textual UUID form.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        Uuid::parse_str(raw.trim()).map(UserId).map_err(|_| FieldError::new("user_id", "must be a UUID"))
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A phone number in E.164 form: `+`, a non-zero country digit, 8 to 15 digits in all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct E164Phone(String);

impl E164Phone {
    /// Validates `raw` (surrounding spaces ignored) as an E.164 number.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let s = raw.trim();
        let digits = s
            .strip_prefix('+')
            .ok_or_else(|| "must be in E.164 format, starting with + (e.g. +12345678901)".to_string())?;
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err("must contain only digits after + (E.164, e.g. +12345678901)".into());
        }
        if digits.starts_with('0') {
            return Err("country code cannot start with 0 (E.164)".into());
        }
        if !(8..=15).contains(&digits.len()) {
            return Err("must have 8 to 15 digits (E.164)".into());
        }
        Ok(Self(s.to_string()))
    }

    /// The number as text, `+` included.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for E164Phone {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<E164Phone> for String {
    fn from(value: E164Phone) -> Self {
        value.0
    }
}

/// An email address with a plausible syntax: `local@domain.tld`, at most 254 characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EmailAddress(String);

impl EmailAddress {
    /// Validates `raw` (surrounding spaces ignored) as an email address.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let s = raw.trim();
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        if s.len() > 254 {
            return Err("must be at most 254 characters".into());
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("must not contain spaces".into());
        }
        let (local, domain) = s.rsplit_once('@').ok_or_else(|| "must look like name@example.com".to_string())?;
        if local.is_empty() || local.len() > 64 || local.contains('@') {
            return Err("must look like name@example.com".into());
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err("has a misplaced dot before the @".into());
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2
            || labels.iter().any(|l| {
                l.is_empty()
                    || l.len() > 63
                    || l.starts_with('-')
                    || l.ends_with('-')
                    || !l.chars().all(|c| c.is_alphanumeric() || c == '-')
            })
        {
            return Err("has an invalid domain (expected e.g. example.com)".into());
        }
        // Top-level domains have two characters or more and are never numeric: an IP
        // address or a truncated domain (`example.c`) is a typo, not a mailbox.
        let tld = labels.last().copied().unwrap_or_default();
        if tld.chars().count() < 2 || tld.chars().all(|c| c.is_ascii_digit()) {
            return Err("has an invalid domain (expected e.g. example.com)".into());
        }
        Ok(Self(s.to_string()))
    }

    /// Validates `raw` as an address the hub can send to: [`parse`](Self::parse), and
    /// nothing but ASCII before the `@`. A domain in any script goes out in its ASCII
    /// form, but a local part outside ASCII needs SMTPUTF8 (RFC 6531) on every server on
    /// the way, which the hub's sender does not negotiate and which has no fallback:
    /// refused when typed, rather than accepted and never delivered. Stored documents
    /// are read with `parse`, so an address saved before this rule still loads (its
    /// emails fail with [`LOCAL_PART_NOT_ASCII`]).
    pub fn parse_deliverable(raw: &str) -> Result<Self, String> {
        let address = Self::parse(raw)?;
        if !address.local_part_is_ascii() {
            return Err(LOCAL_PART_NOT_ASCII.into());
        }
        Ok(address)
    }

    /// Whether the part before the `@` is ASCII (see [`parse_deliverable`](Self::parse_deliverable)).
    pub fn local_part_is_ascii(&self) -> bool {
        self.0.rsplit_once('@').is_some_and(|(local, _)| local.is_ascii())
    }

    /// The address as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why an address with international characters before the `@` is refused.
pub const LOCAL_PART_NOT_ASCII: &str =
    "must have only ASCII characters before the @ (international characters are fine after it)";

impl TryFrom<String> for EmailAddress {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<EmailAddress> for String {
    fn from(value: EmailAddress) -> Self {
        value.0
    }
}

/// An IANA timezone name such as `America/New_York`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Timezone(pub Tz);

impl Timezone {
    /// Validates an IANA timezone name.
    pub fn parse(raw: &str) -> Result<Self, String> {
        Tz::from_str(raw.trim())
            .map(Timezone)
            .map_err(|_| format!("unknown IANA timezone '{}' (e.g. America/New_York)", raw.trim()))
    }
}

impl TryFrom<String> for Timezone {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Timezone> for String {
    fn from(value: Timezone) -> Self {
        value.0.name().to_string()
    }
}

/// A wall-clock time of day; accepts `HH:MM` or `HH:MM:SS`, always written `HH:MM:SS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClockTime(pub NaiveTime);

impl ClockTime {
    /// Parses `HH:MM` or `HH:MM:SS` (24-hour clock).
    pub fn parse(raw: &str) -> Result<Self, String> {
        let s = raw.trim();
        let ok_shape = matches!(s.len(), 5 | 8)
            && s.bytes().enumerate().all(|(i, b)| if i == 2 || i == 5 { b == b':' } else { b.is_ascii_digit() });
        if !ok_shape {
            return Err(format!("'{s}' is not a time (expected HH:MM or HH:MM:SS)"));
        }
        // chrono accepts a leap second (:60); a quiet-hours bound never needs one.
        if s.len() == 8 && &s[6..8] > "59" {
            return Err(format!("'{s}' is not a valid time of day (00:00 to 23:59:59)"));
        }
        let fmt = if s.len() == 5 { "%H:%M" } else { "%H:%M:%S" };
        NaiveTime::parse_from_str(s, fmt)
            .map(ClockTime)
            .map_err(|_| format!("'{s}' is not a valid time of day (00:00 to 23:59:59)"))
    }

    /// Builds a time from hours and minutes known to be valid.
    pub fn hm(hour: u32, minute: u32) -> Self {
        ClockTime(NaiveTime::from_hms_opt(hour, minute, 0).unwrap_or(NaiveTime::MIN))
    }
}

impl TryFrom<String> for ClockTime {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<ClockTime> for String {
    fn from(value: ClockTime) -> Self {
        value.0.format("%H:%M:%S").to_string()
    }
}

/// Minimum signal confidence a user wants to hear about: 70 to 95 inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "u8")]
pub struct ConfidenceThreshold(u8);

impl ConfidenceThreshold {
    /// Validates a threshold in 70..=95.
    pub fn parse(raw: i64) -> Result<Self, String> {
        if (limits::THRESHOLD_MIN..=limits::THRESHOLD_MAX).contains(&raw) {
            Ok(Self(raw as u8))
        } else {
            Err(format!("must be between {} and {} (got {raw})", limits::THRESHOLD_MIN, limits::THRESHOLD_MAX))
        }
    }

    /// The threshold in percent.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl Default for ConfidenceThreshold {
    fn default() -> Self {
        Self(limits::THRESHOLD_DEFAULT)
    }
}

impl TryFrom<i64> for ConfidenceThreshold {
    type Error = String;
    fn try_from(value: i64) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<ConfidenceThreshold> for u8 {
    fn from(value: ConfidenceThreshold) -> Self {
        value.0
    }
}

/// Checks a title: non-empty after trimming, at most 200 characters.
/// Whether `text` holds a control character a dashboard, an SMS or a mail header could
/// misread (NUL, escapes, …); line breaks and tabs are allowed in `multiline` text.
pub fn has_control_characters(text: &str, multiline: bool) -> bool {
    text.chars().any(|c| c.is_control() && !(multiline && matches!(c, '\n' | '\r' | '\t')))
}

/// The refusal for [`has_control_characters`].
pub fn control_characters_refused(field: &str, multiline: bool) -> FieldError {
    FieldError::new(
        field,
        if multiline {
            "must not contain control characters (line breaks and tabs are fine)"
        } else {
            "must not contain control characters or line breaks"
        },
    )
}

pub fn validate_title(title: &str) -> Result<(), FieldError> {
    if title.trim().is_empty() {
        return Err(FieldError::new("title", "must not be empty"));
    }
    if has_control_characters(title, false) {
        return Err(control_characters_refused("title", false));
    }
    let n = title.chars().count();
    if n > limits::TITLE_MAX_CHARS {
        return Err(FieldError::new(
            "title",
            format!("must be at most {} characters (got {n})", limits::TITLE_MAX_CHARS),
        ));
    }
    Ok(())
}

/// Checks a message: at most 1000 characters.
pub fn validate_message(message: &str) -> Result<(), FieldError> {
    if has_control_characters(message, true) {
        return Err(control_characters_refused("message", true));
    }
    let n = message.chars().count();
    if n > limits::MESSAGE_MAX_CHARS {
        return Err(FieldError::new(
            "message",
            format!("must be at most {} characters (got {n})", limits::MESSAGE_MAX_CHARS),
        ));
    }
    Ok(())
}

/// About the bytes `value` takes serialised, from lengths alone (no escapes counted):
/// the capacity to serialise it into, so that its buffer is not grown step by step.
pub fn serialised_len_estimate(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    match value {
        Value::Null | Value::Bool(_) => 5,
        // An i64 or u64 at its longest. At 12, a microsecond timestamp (16 digits)
        // overran the estimate and moved the buffer once more per event.
        Value::Number(_) => 20,
        Value::String(s) => s.len() + 2,
        // Brackets, and a comma after every element.
        Value::Array(items) => 2 + items.iter().map(|v| serialised_len_estimate(v) + 1).sum::<usize>(),
        Value::Object(map) => {
            2 + map.iter().map(|(k, v)| k.len() + 2 + 1 + serialised_len_estimate(v) + 1).sum::<usize>()
        }
    }
}

/// JSON text of `value` written into a buffer of `capacity` bytes to start with
/// (`serde_json::to_string` starts empty and grows it a few times on the way).
pub fn to_json_sized<T: serde::Serialize + ?Sized>(value: &T, capacity: usize) -> serde_json::Result<String> {
    let mut out = Vec::with_capacity(capacity);
    serde_json::to_writer(&mut out, value)?;
    // serde_json writes UTF-8 only.
    Ok(String::from_utf8(out).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        threshold: Option<i64>,
        inner: Option<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        price: f64,
        count: Option<u32>,
    }

    #[test]
    fn json_refusals_name_the_field_in_words() {
        let err = |v: serde_json::Value, prefix: &str| from_json_object::<Outer>(v, prefix).unwrap_err();
        let e = err(serde_json::json!({"threshold": 0.8}), "");
        assert_eq!(e.field, "threshold");
        assert!(e.reason.contains("expected a whole number") && !e.reason.contains("i64"), "{}", e.reason);
        let e = err(serde_json::json!({"inner": {"price": "9"}}), "");
        assert_eq!(e.field, "inner.price");
        assert!(e.reason.contains("expected a number"), "{}", e.reason);
        assert_eq!(err(serde_json::json!({"inner": {"price": 1, "count": -1}}), "").field, "inner.count");
        assert_eq!(err(serde_json::json!({"inner": {}}), "signal").field, "signal.inner.price", "missing");
        assert_eq!(err(serde_json::json!({"inner": {"price": 1, "colour": 2}}), "").field, "inner.colour", "unknown");
        let e = err(serde_json::json!({"inner": 3}), "");
        assert_eq!((e.field.as_str(), e.reason.contains("expected an object")), ("inner", true), "{}", e.reason);
        assert_eq!(err(serde_json::json!([null, null]), "").field, "body", "an array is not an object");
        assert_eq!(err(serde_json::json!("x"), "exit").field, "exit");
    }

    #[test]
    fn e164_accepts_valid_numbers() {
        for ok in ["+12345678901", "+447911123456", "+4930123456", "+123456789012345", " +12345678 "] {
            assert!(E164Phone::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(E164Phone::parse(" +12345678901 ").unwrap().as_str(), "+12345678901");
    }

    #[test]
    fn e164_refuses_invalid_numbers() {
        for bad in [
            "",
            "12345678901",
            "+",
            "+0123456789",
            "+1234567",
            "+1234567890123456",
            "+1 234 567 8901",
            "+1-234-567-8901",
            "+1234567890a",
            "++12345678901",
            "+١٢٣٤٥٦٧٨٩٠",
        ] {
            assert!(E164Phone::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn email_accepts_plausible_addresses() {
        for ok in ["trader@example.com", "a.b+tag@sub.example.co.uk", "x@y-z.io", "用户@例子.广告"] {
            assert!(EmailAddress::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn a_deliverable_email_has_an_ascii_local_part_and_any_domain() {
        for ok in ["trader@example.com", "trader@例子.广告", "a.b+tag@bücher.example"] {
            assert!(EmailAddress::parse_deliverable(ok).is_ok(), "{ok}");
        }
        for international in ["用户@例子.广告", "jörg@example.com", "trädér@bücher.example"] {
            assert_eq!(EmailAddress::parse_deliverable(international), Err(LOCAL_PART_NOT_ASCII.to_string()));
            // Still read back from a stored document.
            let stored = EmailAddress::parse(international).unwrap();
            assert!(!stored.local_part_is_ascii(), "{international}");
        }
        assert!(EmailAddress::parse_deliverable("plain").is_err());
    }

    #[test]
    fn email_refuses_malformed_addresses() {
        let long_local = format!("{}@example.com", "a".repeat(65));
        let too_long = format!("a@{}.com", "b".repeat(260));
        for bad in [
            "",
            "plain",
            "@example.com",
            "user@",
            "user@localhost",
            "user@@example.com",
            "us er@example.com",
            "user@exa mple.com",
            ".user@example.com",
            "user.@example.com",
            "u..ser@example.com",
            "user@-example.com",
            "user@example..com",
            "user@example.com.",
            long_local.as_str(),
            too_long.as_str(),
            "user@exam_ple.com",
            "user@example.c",
            "user@123.123.123.123",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn timezone_accepts_iana_names_only() {
        assert!(Timezone::parse("America/New_York").is_ok());
        assert!(Timezone::parse("Europe/London").is_ok());
        assert!(Timezone::parse("UTC").is_ok());
        for bad in ["", "EST5", "Mars/Olympus", "america/new_york ", "GMT+25"] {
            assert!(Timezone::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(String::from(Timezone::parse("Asia/Tokyo").unwrap()), "Asia/Tokyo");
    }

    #[test]
    fn clock_time_accepts_hh_mm_and_hh_mm_ss_and_writes_seconds() {
        assert_eq!(String::from(ClockTime::parse("22:00").unwrap()), "22:00:00");
        assert_eq!(String::from(ClockTime::parse("08:30:15").unwrap()), "08:30:15");
        assert_eq!(String::from(ClockTime::parse("00:00").unwrap()), "00:00:00");
        assert_eq!(String::from(ClockTime::parse("23:59:59").unwrap()), "23:59:59");
        for bad in ["24:00", "7:00", "07:60", "12:00:60", "noon", "", "12-00", "12:00:00.5", "1200"] {
            assert!(ClockTime::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn threshold_bounds_are_inclusive() {
        assert!(ConfidenceThreshold::parse(69).is_err());
        assert_eq!(ConfidenceThreshold::parse(70).unwrap().get(), 70);
        assert_eq!(ConfidenceThreshold::parse(95).unwrap().get(), 95);
        assert!(ConfidenceThreshold::parse(96).is_err());
        assert!(ConfidenceThreshold::parse(-1).is_err());
        assert_eq!(ConfidenceThreshold::default().get(), 85);
    }

    #[test]
    fn title_and_message_limits() {
        assert!(validate_title(&"t".repeat(200)).is_ok());
        assert_eq!(validate_title(&"t".repeat(201)).unwrap_err().field, "title");
        assert!(validate_title("   ").is_err());
        // Characters, not bytes: 200 multi-byte characters are fine.
        assert!(validate_title(&"é".repeat(200)).is_ok());
        assert!(validate_message(&"m".repeat(1000)).is_ok());
        assert_eq!(validate_message(&"m".repeat(1001)).unwrap_err().field, "message");
    }

    #[test]
    fn the_estimate_covers_text_without_escapes_and_integers_at_their_longest() {
        use serde_json::json;
        for v in [
            json!({}),
            json!({"sent_at_us": 1_765_161_234_567_890u64, "pad": "x".repeat(300)}),
            json!({"min": i64::MIN, "max": u64::MAX, "t": true, "n": null, "list": [1, "two", [], {}]}),
            json!({"é": "ü€𝄞", "nested": {"deeper": [[[], {}], [null, -7, 123_456_789]]}}),
        ] {
            let exact = serde_json::to_string(&v).unwrap().len();
            assert!(serialised_len_estimate(&v) >= exact, "{v}: {} < {exact}", serialised_len_estimate(&v));
        }
    }

    #[test]
    fn user_id_must_be_uuid() {
        assert!(UserId::parse("not-a-uuid").is_err());
        let id = Uuid::new_v4();
        assert_eq!(UserId::parse(&id.to_string()).unwrap().0, id);
    }
}
