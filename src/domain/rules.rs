//! The story's rules as pure functions: the clock is a parameter, nothing here reads
//! it or does I/O. Table-driven tests pin every boundary.

use super::notification::{Channel, Priority};
use super::preferences::{NotificationPreferences, QuietHours};
use super::validation::ConfidenceThreshold;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Signals at or above this confidence are critical.
pub const CRITICAL_CONFIDENCE: f64 = 90.0;
/// Signals at or above this confidence (and below critical) are warnings.
pub const WARNING_CONFIDENCE: f64 = 85.0;
/// At most one risk warning per user and risk type in this window.
pub const RISK_WARNING_WINDOW: Duration = Duration::hours(1);
/// At most one system error per error type in this window.
pub const SYSTEM_ERROR_WINDOW: Duration = Duration::minutes(15);

/// Priority of a signal from its confidence: ≥ 90 critical, 85–89 warning, else info.
pub fn signal_priority(confidence: f64) -> Priority {
    if confidence >= CRITICAL_CONFIDENCE {
        Priority::Critical
    } else if confidence >= WARNING_CONFIDENCE {
        Priority::Warning
    } else {
        Priority::Info
    }
}

/// Whether a signal reaches a user: its confidence is at least their threshold.
pub fn signal_passes(confidence: f64, threshold: ConfidenceThreshold) -> bool {
    confidence >= f64::from(threshold.get())
}

/// The two risk figures the risk manager watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RiskType {
    /// Open risk across the portfolio, % of equity (limit 10 %).
    PortfolioHeat,
    /// Allocation to one campaign, % of equity (limit 5 %).
    CampaignAllocation,
}

impl RiskType {
    /// Wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RiskType::PortfolioHeat => "portfolio_heat",
            RiskType::CampaignAllocation => "campaign_allocation",
        }
    }

    /// Above this the trader is warned (strictly greater).
    pub fn warning_threshold(self) -> f64 {
        match self {
            RiskType::PortfolioHeat => 8.0,
            RiskType::CampaignAllocation => 4.5,
        }
    }

    /// The hard limit the warning is about.
    pub fn limit(self) -> f64 {
        match self {
            RiskType::PortfolioHeat => 10.0,
            RiskType::CampaignAllocation => 5.0,
        }
    }

    /// Readable name for titles.
    pub fn label(self) -> &'static str {
        match self {
            RiskType::PortfolioHeat => "Portfolio heat",
            RiskType::CampaignAllocation => "Campaign allocation",
        }
    }
}

/// Whether a risk figure is close enough to its limit to warn.
pub fn risk_needs_warning(risk: RiskType, current: f64) -> bool {
    current > risk.warning_threshold()
}

/// Whether `at` falls in the user's quiet hours, in their timezone. The window
/// includes its start and excludes its end; a start after the end spans midnight; an
/// empty window (start = end) is never quiet. Local wall-clock time is derived from
/// UTC, which is never ambiguous, so DST nights need no special case.
pub fn in_quiet_hours(quiet: &QuietHours, at: DateTime<Utc>) -> bool {
    if !quiet.enabled {
        return false;
    }
    let local = at.with_timezone(&quiet.timezone.0).time();
    let (start, end) = (quiet.start_time.0, quiet.end_time.0);
    if start < end {
        start <= local && local < end
    } else if start > end {
        local >= start || local < end
    } else {
        false
    }
}

/// Why a channel did not get a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ts_rs::TS, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SuppressReason {
    /// Info/warning during the user's quiet hours.
    QuietHours,
    /// The channel's switch is off.
    Disabled,
    /// No email address, phone number or push subscription.
    NoAddress,
    /// The per-user hourly limit was reached.
    RateLimited,
}

impl SuppressReason {
    /// Database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SuppressReason::QuietHours => "quiet_hours",
            SuppressReason::Disabled => "disabled",
            SuppressReason::NoAddress => "no_address",
            SuppressReason::RateLimited => "rate_limited",
        }
    }
}

/// Where a notification goes, and where it does not and why.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Routing {
    /// Channels to deliver on.
    pub deliver: Vec<Channel>,
    /// Channels the user's routing named but that were skipped.
    pub suppressed: Vec<(Channel, SuppressReason)>,
}

impl Routing {
    /// Whether the live toast goes out.
    pub fn toast(&self) -> bool {
        self.deliver.contains(&Channel::Toast)
    }

    /// The routing of a test toast: the toast alone, so that testing toasts sends no
    /// email, SMS or push and spends none of their hourly limits.
    pub fn toast_only(mut self) -> Routing {
        self.deliver.retain(|c| *c == Channel::Toast);
        self.suppressed.retain(|(c, _)| *c == Channel::Toast);
        self
    }
}

/// Routes a notification: the priority's channels, minus quiet hours (critical always
/// goes out), switched-off channels, and channels with no address or subscription.
pub fn route(
    priority: Priority,
    prefs: &NotificationPreferences,
    has_push_subscription: bool,
    at: DateTime<Utc>,
) -> Routing {
    let wanted = match priority {
        Priority::Info => &prefs.channel_preferences.info_channels,
        Priority::Warning => &prefs.channel_preferences.warning_channels,
        Priority::Critical => &prefs.channel_preferences.critical_channels,
    };
    let quiet = priority != Priority::Critical && in_quiet_hours(&prefs.quiet_hours, at);
    // One allocation of the right size (pushes onto an empty vector took the growth path).
    let mut routing = Routing { deliver: Vec::with_capacity(wanted.len()), suppressed: Vec::new() };
    for &channel in wanted {
        let (enabled, reachable) = match channel {
            Channel::Toast => (true, true),
            Channel::Email => (prefs.email_enabled, prefs.email_address.is_some()),
            Channel::Sms => (prefs.sms_enabled, prefs.sms_phone_number.is_some()),
            Channel::Push => (prefs.push_enabled, has_push_subscription),
        };
        let skip = if quiet {
            Some(SuppressReason::QuietHours)
        } else if !enabled {
            Some(SuppressReason::Disabled)
        } else if !reachable {
            Some(SuppressReason::NoAddress)
        } else {
            None
        };
        match skip {
            Some(reason) => routing.suppressed.push((channel, reason)),
            None => routing.deliver.push(channel),
        }
    }
    routing
}

/// Whether a throttled event may go out now, given when the last one did.
pub fn throttle_allows(last: Option<DateTime<Utc>>, now: DateTime<Utc>, window: Duration) -> bool {
    match last {
        None => true,
        Some(last) => now - last >= window,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::validation::{ClockTime, E164Phone, EmailAddress, Timezone};
    use chrono::TimeZone;
    use uuid::Uuid;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn quiet(start: &str, end: &str, tz: &str) -> QuietHours {
        QuietHours {
            enabled: true,
            start_time: ClockTime::parse(start).unwrap(),
            end_time: ClockTime::parse(end).unwrap(),
            timezone: Timezone::parse(tz).unwrap(),
        }
    }

    #[test]
    fn signal_priority_boundaries() {
        for (confidence, expected) in [
            (0.0, Priority::Info),
            (84.0, Priority::Info),
            (84.99, Priority::Info),
            (85.0, Priority::Warning),
            (87.0, Priority::Warning),
            (89.0, Priority::Warning),
            (89.99, Priority::Warning),
            (90.0, Priority::Critical),
            (100.0, Priority::Critical),
        ] {
            assert_eq!(signal_priority(confidence), expected, "{confidence}");
        }
    }

    #[test]
    fn confidence_threshold_boundaries() {
        let t = |n| ConfidenceThreshold::parse(n).unwrap();
        for (confidence, threshold, passes) in [
            (84.0, 85, false),
            (85.0, 85, true),
            (84.9, 85, false),
            (69.0, 70, false),
            (70.0, 70, true),
            (94.0, 95, false),
            (95.0, 95, true),
            (99.0, 95, true),
        ] {
            assert_eq!(signal_passes(confidence, t(threshold)), passes, "{confidence} vs {threshold}");
        }
    }

    #[test]
    fn risk_thresholds_are_strictly_greater() {
        for (risk, current, warn) in [
            (RiskType::PortfolioHeat, 7.9, false),
            (RiskType::PortfolioHeat, 8.0, false),
            (RiskType::PortfolioHeat, 8.01, true),
            (RiskType::PortfolioHeat, 12.0, true),
            (RiskType::CampaignAllocation, 4.5, false),
            (RiskType::CampaignAllocation, 4.51, true),
            (RiskType::CampaignAllocation, 4.0, false),
        ] {
            assert_eq!(risk_needs_warning(risk, current), warn, "{risk:?} {current}");
        }
        assert_eq!(RiskType::PortfolioHeat.limit(), 10.0);
        assert_eq!(RiskType::CampaignAllocation.limit(), 5.0);
    }

    #[test]
    fn quiet_window_edges_same_day_and_across_midnight() {
        let overnight = quiet("22:00", "08:00", "UTC");
        let day = quiet("12:00", "13:30", "UTC");
        for (q, at, expected) in [
            (&overnight, "2026-06-01T21:59:59Z", false),
            (&overnight, "2026-06-01T22:00:00Z", true),
            (&overnight, "2026-06-01T23:59:59Z", true),
            (&overnight, "2026-06-02T00:00:00Z", true),
            (&overnight, "2026-06-02T07:59:59Z", true),
            (&overnight, "2026-06-02T08:00:00Z", false),
            (&overnight, "2026-06-02T12:00:00Z", false),
            (&day, "2026-06-01T11:59:59Z", false),
            (&day, "2026-06-01T12:00:00Z", true),
            (&day, "2026-06-01T13:29:59Z", true),
            (&day, "2026-06-01T13:30:00Z", false),
        ] {
            assert_eq!(in_quiet_hours(q, utc(at)), expected, "{at}");
        }
        let empty = quiet("09:00", "09:00", "UTC");
        assert!(!in_quiet_hours(&empty, utc("2026-06-01T09:00:00Z")));
        let mut off = overnight.clone();
        off.enabled = false;
        assert!(!in_quiet_hours(&off, utc("2026-06-01T23:00:00Z")));
    }

    #[test]
    fn quiet_hours_follow_the_users_timezone() {
        // 22:00–08:00 in New York: 03:00 UTC is 23:00 EDT (quiet), 13:00 UTC is 09:00 (not).
        let ny = quiet("22:00", "08:00", "America/New_York");
        assert!(in_quiet_hours(&ny, utc("2026-06-02T03:00:00Z")));
        assert!(!in_quiet_hours(&ny, utc("2026-06-02T13:00:00Z")));
        let tokyo = quiet("22:00", "08:00", "Asia/Tokyo");
        assert!(!in_quiet_hours(&tokyo, utc("2026-06-02T03:00:00Z")), "noon in Tokyo");
    }

    #[test]
    fn dst_spring_forward_night_in_new_york() {
        // 2026-03-08: 02:00 EST jumps to 03:00 EDT (UTC-5 → UTC-4).
        let ny = quiet("22:00", "08:00", "America/New_York");
        assert!(in_quiet_hours(&ny, utc("2026-03-08T06:30:00Z")), "01:30 EST");
        assert!(in_quiet_hours(&ny, utc("2026-03-08T11:59:00Z")), "07:59 EDT");
        // 12:30 UTC is 08:30 EDT: out, although it would be 07:30 under EST.
        assert!(!in_quiet_hours(&ny, utc("2026-03-08T12:30:00Z")));
        // A window starting at a local time that does not exist that night.
        let skipped = quiet("02:30", "03:30", "America/New_York");
        assert!(!in_quiet_hours(&skipped, utc("2026-03-08T06:45:00Z")), "01:45 EST");
        assert!(in_quiet_hours(&skipped, utc("2026-03-08T07:15:00Z")), "03:15 EDT");
        assert!(!in_quiet_hours(&skipped, utc("2026-03-08T07:31:00Z")), "03:31 EDT");
    }

    #[test]
    fn dst_fall_back_night_in_new_york() {
        // 2026-11-01: 02:00 EDT falls back to 01:00 EST; 01:xx happens twice.
        let one_am = quiet("01:00", "02:00", "America/New_York");
        assert!(in_quiet_hours(&one_am, utc("2026-11-01T05:30:00Z")), "01:30 EDT");
        assert!(in_quiet_hours(&one_am, utc("2026-11-01T06:30:00Z")), "01:30 EST, the second time");
        assert!(!in_quiet_hours(&one_am, utc("2026-11-01T07:30:00Z")), "02:30 EST");
        let ny = quiet("22:00", "08:00", "America/New_York");
        // 12:30 UTC is 07:30 EST: quiet, although it would be 08:30 under EDT.
        assert!(in_quiet_hours(&ny, utc("2026-11-01T12:30:00Z")));
        assert!(!in_quiet_hours(&ny, utc("2026-11-01T13:00:00Z")), "08:00 EST");
    }

    fn prefs() -> NotificationPreferences {
        let mut p = NotificationPreferences::defaults(Uuid::nil());
        p.email_address = Some(EmailAddress::parse("t@example.com").unwrap());
        p.sms_enabled = true;
        p.sms_phone_number = Some(E164Phone::parse("+12345678901").unwrap());
        p.push_enabled = true;
        p
    }

    const NOON: &str = "2026-06-01T12:00:00Z";

    #[test]
    fn default_routing_by_priority() {
        let p = prefs();
        let at = utc(NOON);
        assert_eq!(route(Priority::Info, &p, true, at).deliver, vec![Channel::Toast]);
        assert_eq!(route(Priority::Warning, &p, true, at).deliver, vec![Channel::Toast, Channel::Email]);
        assert_eq!(
            route(Priority::Critical, &p, true, at).deliver,
            vec![Channel::Toast, Channel::Email, Channel::Sms, Channel::Push]
        );
    }

    #[test]
    fn switches_and_missing_addresses_suppress_with_a_reason() {
        let at = utc(NOON);
        let mut p = prefs();
        p.sms_enabled = false;
        p.email_address = None;
        let r = route(Priority::Critical, &p, false, at);
        assert_eq!(r.deliver, vec![Channel::Toast]);
        assert_eq!(
            r.suppressed,
            vec![
                (Channel::Email, SuppressReason::NoAddress),
                (Channel::Sms, SuppressReason::Disabled),
                (Channel::Push, SuppressReason::NoAddress),
            ]
        );
        let mut p = prefs();
        p.push_enabled = false;
        assert!(route(Priority::Critical, &p, true, at)
            .suppressed
            .contains(&(Channel::Push, SuppressReason::Disabled)));
    }

    #[test]
    fn quiet_hours_suppress_info_and_warning_but_never_critical() {
        let mut p = prefs();
        p.quiet_hours = quiet("11:00", "13:00", "UTC");
        let at = utc(NOON);
        let info = route(Priority::Info, &p, true, at);
        assert!(info.deliver.is_empty() && !info.toast());
        assert_eq!(info.suppressed, vec![(Channel::Toast, SuppressReason::QuietHours)]);
        let warning = route(Priority::Warning, &p, true, at);
        assert!(warning.deliver.is_empty());
        assert_eq!(warning.suppressed.len(), 2);
        let critical = route(Priority::Critical, &p, true, at);
        assert_eq!(critical.deliver.len(), 4);
        // Outside the window all goes out again.
        assert!(route(Priority::Info, &p, true, utc("2026-06-01T13:00:00Z")).toast());
    }

    #[test]
    fn a_test_toast_keeps_the_toast_alone() {
        let at = utc(NOON);
        let mut p = prefs();
        p.sms_enabled = false;
        let r = route(Priority::Critical, &p, true, at).toast_only();
        assert_eq!(r.deliver, vec![Channel::Toast]);
        assert!(r.suppressed.is_empty(), "{r:?}");
        p.channel_preferences.info_channels = vec![Channel::Email, Channel::Push];
        let r = route(Priority::Info, &p, true, at).toast_only();
        assert!(!r.toast() && r.deliver.is_empty() && r.suppressed.is_empty(), "{r:?}");
        p.channel_preferences.info_channels = vec![Channel::Toast, Channel::Email];
        p.quiet_hours = quiet("11:00", "13:00", "UTC");
        let r = route(Priority::Info, &p, true, at).toast_only();
        assert_eq!(r.suppressed, vec![(Channel::Toast, SuppressReason::QuietHours)]);
        assert!(!r.toast());
    }

    #[test]
    fn custom_routing_is_honoured() {
        let mut p = prefs();
        p.channel_preferences.info_channels = vec![Channel::Toast, Channel::Push];
        p.channel_preferences.critical_channels = vec![Channel::Sms];
        let at = utc(NOON);
        assert_eq!(route(Priority::Info, &p, true, at).deliver, vec![Channel::Toast, Channel::Push]);
        let critical = route(Priority::Critical, &p, true, at);
        assert_eq!(critical.deliver, vec![Channel::Sms]);
        assert!(!critical.toast());
    }

    #[test]
    fn throttle_windows() {
        let t0 = Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap();
        assert!(throttle_allows(None, t0, RISK_WARNING_WINDOW));
        assert!(!throttle_allows(Some(t0), t0 + Duration::minutes(59), RISK_WARNING_WINDOW));
        assert!(throttle_allows(Some(t0), t0 + Duration::minutes(60), RISK_WARNING_WINDOW));
        assert!(!throttle_allows(Some(t0), t0 + Duration::seconds(899), SYSTEM_ERROR_WINDOW));
        assert!(throttle_allows(Some(t0), t0 + Duration::seconds(900), SYSTEM_ERROR_WINDOW));
    }
}
