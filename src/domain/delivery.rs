//! Delivery records: one per channel a notification was (or was not) sent on.

use super::notification::Channel;
use serde::{Deserialize, Serialize};

/// Where a channel delivery stands (the outbox's states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ts_rs::TS, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Written, not yet attempted.
    Pending,
    /// Handed to the provider (or to the open tabs, for toasts).
    Sent,
    /// Gave up; `reason` says why.
    Failed,
    /// Failed for now; another attempt is scheduled.
    Retrying,
    /// Not attempted on purpose; `reason` says why.
    Suppressed,
}

impl DeliveryStatus {
    /// Database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Retrying => "retrying",
            DeliveryStatus::Suppressed => "suppressed",
        }
    }
}

/// A delivery row to write with its notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// The channel.
    pub channel: Channel,
    /// Initial status.
    pub status: DeliveryStatus,
    /// Why (suppressed or failed).
    pub reason: Option<String>,
}

impl NewDelivery {
    /// The deliveries recorded for a routing decision. A toast that goes out is not
    /// recorded (no row means the live toast was sent), which keeps the common
    /// info → toast path free of extra writes.
    pub fn for_routing(routing: &super::rules::Routing) -> Vec<NewDelivery> {
        let mut out = Vec::new();
        for &channel in &routing.deliver {
            if channel != Channel::Toast {
                out.push(NewDelivery { channel, status: DeliveryStatus::Pending, reason: None });
            }
        }
        for &(channel, reason) in &routing.suppressed {
            out.push(NewDelivery {
                channel,
                status: DeliveryStatus::Suppressed,
                reason: Some(reason.as_str().to_string()),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::rules::{Routing, SuppressReason};

    #[test]
    fn routing_becomes_outbox_rows_without_a_row_for_a_sent_toast() {
        let r = Routing {
            deliver: vec![Channel::Toast, Channel::Email],
            suppressed: vec![(Channel::Sms, SuppressReason::QuietHours)],
        };
        let rows = NewDelivery::for_routing(&r);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0], NewDelivery { channel: Channel::Email, status: DeliveryStatus::Pending, reason: None });
        assert_eq!(rows[1].status, DeliveryStatus::Suppressed);
        assert_eq!(rows[1].reason.as_deref(), Some("quiet_hours"));
    }
}
