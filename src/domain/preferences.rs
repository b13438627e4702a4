//! A user's notification preferences, their defaults, and the partial update
//! (`POST /notifications/preferences`) that validates every field it touches.

use super::notification::Channel;
use super::validation::{ClockTime, ConfidenceThreshold, E164Phone, EmailAddress, FieldError, Timezone};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use ts_rs::TS;
use uuid::Uuid;

/// "Do not disturb" window in the user's timezone; may span midnight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS, utoipa::ToSchema)]
pub struct QuietHours {
    /// Whether the window applies.
    pub enabled: bool,
    /// Start of the window, `HH:MM:SS`.
    #[ts(type = "string")]
    #[schema(value_type = String, example = "22:00:00")]
    pub start_time: ClockTime,
    /// End of the window, `HH:MM:SS` (exclusive).
    #[ts(type = "string")]
    #[schema(value_type = String, example = "08:00:00")]
    pub end_time: ClockTime,
    /// IANA timezone name.
    #[ts(type = "string")]
    #[schema(value_type = String, example = "America/New_York")]
    pub timezone: Timezone,
}

impl Default for QuietHours {
    fn default() -> Self {
        Self {
            enabled: false,
            start_time: ClockTime::hm(22, 0),
            end_time: ClockTime::hm(8, 0),
            timezone: Timezone(chrono_tz::America::New_York),
        }
    }
}

/// Which channels each priority goes to (before enabled switches and addresses).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS, utoipa::ToSchema)]
pub struct ChannelPreferences {
    /// Channels for info notifications.
    pub info_channels: Vec<Channel>,
    /// Channels for warning notifications.
    pub warning_channels: Vec<Channel>,
    /// Channels for critical notifications.
    pub critical_channels: Vec<Channel>,
}

impl Default for ChannelPreferences {
    fn default() -> Self {
        Self {
            info_channels: vec![Channel::Toast],
            warning_channels: vec![Channel::Toast, Channel::Email],
            critical_channels: vec![Channel::Toast, Channel::Email, Channel::Sms, Channel::Push],
        }
    }
}

/// A user's preferences as the API returns them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS, utoipa::ToSchema)]
pub struct NotificationPreferences {
    /// The owner.
    pub user_id: Uuid,
    /// Email channel switch.
    pub email_enabled: bool,
    /// Where email goes.
    #[ts(type = "string | null")]
    #[schema(value_type = Option<String>)]
    pub email_address: Option<EmailAddress>,
    /// SMS channel switch.
    pub sms_enabled: bool,
    /// Where SMS goes (E.164).
    #[ts(type = "string | null")]
    #[schema(value_type = Option<String>)]
    pub sms_phone_number: Option<E164Phone>,
    /// Browser push switch.
    pub push_enabled: bool,
    /// Signals below this confidence are dropped (70–95).
    #[ts(type = "number")]
    #[schema(value_type = u8, minimum = 70, maximum = 95)]
    pub min_confidence_threshold: ConfidenceThreshold,
    /// Do-not-disturb window.
    pub quiet_hours: QuietHours,
    /// Priority → channels.
    pub channel_preferences: ChannelPreferences,
    /// Last change; null while the defaults apply.
    pub updated_at: Option<DateTime<Utc>>,
}

impl NotificationPreferences {
    /// The defaults a user gets before changing anything.
    pub fn defaults(user_id: Uuid) -> Self {
        Self {
            user_id,
            email_enabled: true,
            email_address: None,
            sms_enabled: false,
            sms_phone_number: None,
            push_enabled: false,
            min_confidence_threshold: ConfidenceThreshold::default(),
            quiet_hours: QuietHours::default(),
            channel_preferences: ChannelPreferences::default(),
            updated_at: None,
        }
    }

    /// Applies a partial update, validating every field it sets. On error nothing is
    /// applied (the caller keeps its copy).
    pub fn apply(&self, patch: PreferencesPatch, now: DateTime<Utc>) -> Result<Self, FieldError> {
        let mut next = self.clone();
        if let Some(id) = patch.user_id {
            if id != self.user_id {
                return Err(FieldError::new("user_id", "cannot be changed"));
            }
        }
        if let Some(v) = patch.email_enabled {
            next.email_enabled = v;
        }
        if let Some(v) = patch.sms_enabled {
            next.sms_enabled = v;
        }
        if let Some(v) = patch.push_enabled {
            next.push_enabled = v;
        }
        if let Some(v) = patch.email_address.into_option() {
            next.email_address = match blank_to_none(v) {
                None => None,
                Some(raw) => {
                    Some(EmailAddress::parse_deliverable(&raw).map_err(|r| FieldError::new("email_address", r))?)
                }
            };
        }
        if let Some(v) = patch.sms_phone_number.into_option() {
            next.sms_phone_number = match blank_to_none(v) {
                None => None,
                Some(raw) => Some(E164Phone::parse(&raw).map_err(|r| FieldError::new("sms_phone_number", r))?),
            };
        }
        if let Some(v) = patch.min_confidence_threshold {
            next.min_confidence_threshold =
                ConfidenceThreshold::parse(v).map_err(|r| FieldError::new("min_confidence_threshold", r))?;
        }
        if let Some(q) = patch.quiet_hours {
            if let Some(v) = q.enabled {
                next.quiet_hours.enabled = v;
            }
            if let Some(v) = q.start_time {
                next.quiet_hours.start_time =
                    ClockTime::parse(&v).map_err(|r| FieldError::new("quiet_hours.start_time", r))?;
            }
            if let Some(v) = q.end_time {
                next.quiet_hours.end_time =
                    ClockTime::parse(&v).map_err(|r| FieldError::new("quiet_hours.end_time", r))?;
            }
            if let Some(v) = q.timezone {
                next.quiet_hours.timezone =
                    Timezone::parse(&v).map_err(|r| FieldError::new("quiet_hours.timezone", r))?;
            }
            if next.quiet_hours.enabled && next.quiet_hours.start_time == next.quiet_hours.end_time {
                // An empty window (or a whole day?): ambiguous, so refused while it is on.
                return Err(FieldError::new("quiet_hours.end_time", "must differ from start_time"));
            }
        }
        if let Some(c) = patch.channel_preferences {
            if let Some(v) = c.info_channels {
                next.channel_preferences.info_channels = parse_channels("channel_preferences.info_channels", v)?;
            }
            if let Some(v) = c.warning_channels {
                next.channel_preferences.warning_channels = parse_channels("channel_preferences.warning_channels", v)?;
            }
            if let Some(v) = c.critical_channels {
                next.channel_preferences.critical_channels =
                    parse_channels("channel_preferences.critical_channels", v)?;
            }
        }
        next.updated_at = Some(now);
        Ok(next)
    }
}

fn blank_to_none(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

fn parse_channels(field: &str, raw: Vec<String>) -> Result<Vec<Channel>, FieldError> {
    let mut out: Vec<Channel> = Vec::with_capacity(raw.len());
    for s in raw {
        let c: Channel = s.parse().map_err(|e: String| FieldError::new(field, e))?;
        if !out.contains(&c) {
            out.push(c);
        }
    }
    Ok(out)
}

/// A patch field that may be absent (leave alone), `null` (clear) or a value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Nullable<T> {
    /// Not in the body.
    #[default]
    Absent,
    /// Explicit `null`.
    Null,
    /// A value.
    Value(T),
}

impl<T> Nullable<T> {
    /// `None` when absent, `Some(None)` when null.
    pub fn into_option(self) -> Option<Option<T>> {
        match self {
            Nullable::Absent => None,
            Nullable::Null => Some(None),
            Nullable::Value(v) => Some(Some(v)),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Nullable<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Option::<T>::deserialize(d).map(|o| o.map_or(Nullable::Null, Nullable::Value))
    }
}

/// A partial preferences update: absent fields are left alone, `null` clears an
/// address, unknown fields are refused. Raw strings are validated by [`apply`].
///
/// [`apply`]: NotificationPreferences::apply
#[derive(Debug, Clone, Default, Deserialize, TS, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[ts(optional_fields)]
pub struct PreferencesPatch {
    /// Must equal the owner when given (the UI may send the whole object back).
    pub user_id: Option<Uuid>,
    /// Email switch.
    pub email_enabled: Option<bool>,
    /// Email address; `null` or `""` clears it.
    #[serde(default)]
    #[ts(as = "Option<Option<String>>", optional)]
    #[schema(value_type = Option<String>)]
    pub email_address: Nullable<String>,
    /// SMS switch.
    pub sms_enabled: Option<bool>,
    /// E.164 phone number; `null` or `""` clears it.
    #[serde(default)]
    #[ts(as = "Option<Option<String>>", optional)]
    #[schema(value_type = Option<String>)]
    pub sms_phone_number: Nullable<String>,
    /// Push switch.
    pub push_enabled: Option<bool>,
    /// 70–95.
    #[ts(as = "Option<i32>")]
    pub min_confidence_threshold: Option<i64>,
    /// Partial quiet hours.
    pub quiet_hours: Option<QuietHoursPatch>,
    /// Partial routing.
    pub channel_preferences: Option<ChannelPreferencesPatch>,
    /// Ignored: the server sets it.
    #[ts(as = "Option<Option<String>>", optional)]
    #[schema(value_type = Option<String>)]
    #[serde(default)]
    pub updated_at: Nullable<serde_json::Value>,
}

/// Partial quiet hours.
#[derive(Debug, Clone, Default, Deserialize, TS, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[ts(optional_fields)]
pub struct QuietHoursPatch {
    /// Switch.
    pub enabled: Option<bool>,
    /// `HH:MM` or `HH:MM:SS`.
    pub start_time: Option<String>,
    /// `HH:MM` or `HH:MM:SS`.
    pub end_time: Option<String>,
    /// IANA name.
    pub timezone: Option<String>,
}

/// Partial routing.
#[derive(Debug, Clone, Default, Deserialize, TS, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[ts(optional_fields)]
pub struct ChannelPreferencesPatch {
    /// Channels for info.
    pub info_channels: Option<Vec<String>>,
    /// Channels for warning.
    pub warning_channels: Option<Vec<String>>,
    /// Channels for critical.
    pub critical_channels: Option<Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z").unwrap().with_timezone(&Utc)
    }

    fn patch(v: serde_json::Value) -> PreferencesPatch {
        serde_json::from_value(v).unwrap()
    }

    fn base() -> NotificationPreferences {
        NotificationPreferences::defaults(Uuid::nil())
    }

    #[test]
    fn defaults_match_the_story() {
        let v = serde_json::to_value(base()).unwrap();
        assert_eq!(v["email_enabled"], true);
        assert_eq!(v["sms_enabled"], false);
        assert_eq!(v["push_enabled"], false);
        assert_eq!(v["min_confidence_threshold"], 85);
        assert_eq!(
            v["quiet_hours"],
            json!({"enabled": false, "start_time": "22:00:00", "end_time": "08:00:00", "timezone": "America/New_York"})
        );
        assert_eq!(
            v["channel_preferences"],
            json!({"info_channels": ["toast"], "warning_channels": ["toast", "email"],
                   "critical_channels": ["toast", "email", "sms", "push"]})
        );
        assert_eq!(v["email_address"], serde_json::Value::Null);
        assert_eq!(v["updated_at"], serde_json::Value::Null);
    }

    #[test]
    fn partial_update_changes_only_given_fields() {
        let p = base()
            .apply(patch(json!({"min_confidence_threshold": 90, "quiet_hours": {"start_time": "23:30"}})), now())
            .unwrap();
        assert_eq!(p.min_confidence_threshold.get(), 90);
        assert_eq!(String::from(p.quiet_hours.start_time), "23:30:00");
        assert_eq!(String::from(p.quiet_hours.end_time), "08:00:00");
        assert!(p.email_enabled);
        assert_eq!(p.updated_at, Some(now()));
    }

    #[test]
    fn addresses_can_be_set_and_cleared() {
        let p = base()
            .apply(patch(json!({"email_address": "t@example.com", "sms_phone_number": "+12345678901"})), now())
            .unwrap();
        assert_eq!(p.email_address.as_ref().unwrap().as_str(), "t@example.com");
        let cleared = p.apply(patch(json!({"email_address": null, "sms_phone_number": ""})), now()).unwrap();
        assert!(cleared.email_address.is_none());
        assert!(cleared.sms_phone_number.is_none());
        let untouched = p.apply(patch(json!({})), now()).unwrap();
        assert!(untouched.email_address.is_some());
    }

    #[test]
    fn each_invalid_field_is_named() {
        let cases = [
            (json!({"sms_phone_number": "12345"}), "sms_phone_number"),
            (json!({"email_address": "nope"}), "email_address"),
            (json!({"min_confidence_threshold": 69}), "min_confidence_threshold"),
            (json!({"min_confidence_threshold": 96}), "min_confidence_threshold"),
            (json!({"quiet_hours": {"timezone": "Mars/Base"}}), "quiet_hours.timezone"),
            (json!({"quiet_hours": {"start_time": "25:00"}}), "quiet_hours.start_time"),
            (json!({"quiet_hours": {"end_time": "x"}}), "quiet_hours.end_time"),
            (
                json!({"quiet_hours": {"enabled": true, "start_time": "10:00", "end_time": "10:00"}}),
                "quiet_hours.end_time",
            ),
            (json!({"quiet_hours": {"enabled": true, "end_time": "22:00"}}), "quiet_hours.end_time"),
            (json!({"channel_preferences": {"info_channels": ["pager"]}}), "channel_preferences.info_channels"),
            (
                json!({"channel_preferences": {"critical_channels": ["toast", "fax"]}}),
                "channel_preferences.critical_channels",
            ),
            (json!({"user_id": "00000000-0000-0000-0000-000000000001"}), "user_id"),
        ];
        for (input, field) in cases {
            let err = base().apply(patch(input.clone()), now()).unwrap_err();
            assert_eq!(err.field, field, "{input}");
        }
        // Equal times are harmless while quiet hours are off (older records may hold them).
        let off = json!({"quiet_hours": {"enabled": false, "start_time": "10:00", "end_time": "10:00"}});
        assert!(base().apply(patch(off), now()).is_ok());
    }

    #[test]
    fn thresholds_at_the_bounds_are_accepted() {
        for t in [70, 95] {
            let p = base().apply(patch(json!({"min_confidence_threshold": t})), now()).unwrap();
            assert_eq!(i64::from(p.min_confidence_threshold.get()), t);
        }
    }

    #[test]
    fn unknown_fields_are_refused_at_every_level() {
        assert!(serde_json::from_value::<PreferencesPatch>(json!({"colour": "red"})).is_err());
        assert!(serde_json::from_value::<PreferencesPatch>(json!({"quiet_hours": {"from": "x"}})).is_err());
        assert!(serde_json::from_value::<PreferencesPatch>(json!({"channel_preferences": {"x": []}})).is_err());
    }

    #[test]
    fn the_whole_object_can_be_sent_back() {
        let full = serde_json::to_value(base()).unwrap();
        let p = base().apply(patch(full), now()).unwrap();
        assert_eq!(p.channel_preferences, ChannelPreferences::default());
    }

    #[test]
    fn duplicate_channels_collapse() {
        let p = base()
            .apply(patch(json!({"channel_preferences": {"info_channels": ["toast", "toast", "email"]}})), now())
            .unwrap();
        assert_eq!(p.channel_preferences.info_channels, vec![Channel::Toast, Channel::Email]);
    }

    #[test]
    fn stored_form_round_trips() {
        let p = base()
            .apply(
                patch(json!({"email_address": "a@b.co", "quiet_hours": {"enabled": true, "timezone": "Europe/Paris"}})),
                now(),
            )
            .unwrap();
        let back: NotificationPreferences = serde_json::from_value(serde_json::to_value(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }
}
