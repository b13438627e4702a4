//! Pure rule and model code: no I/O, no clock reads, no database. Everything here is
//! unit-tested in place; the edges (HTTP, storage, channels) call into it.

pub mod delivery;
pub mod events;
pub mod json_text;
pub mod metadata;
pub mod notification;
pub mod pii;
pub mod preferences;
pub mod rules;
pub mod sms;
pub mod time_text;
pub mod typescript;
pub mod validation;

pub use notification::{
    Channel, NewNotification, Notification, NotificationContent, NotificationToast, NotificationType, Priority,
    ServerMessage, StoredNotification, ToastFrames, ToastTemplate,
};
pub use preferences::{ChannelPreferences, NotificationPreferences, PreferencesPatch, QuietHours};
pub use validation::{FieldError, UserId};
