//! The notification model and the messages sent to dashboards, serialised exactly as
//! the story's JSON (snake_case values, ISO-8601 times).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use ts_rs::TS;
use uuid::Uuid;

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, TS, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire and database spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        "unknown {} '{}' (expected one of: {})",
                        stringify!($name),
                        other,
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}

string_enum! {
    /// What happened: the four kinds of the story.
    NotificationType {
        /// A trading signal was generated and approved.
        SignalGenerated => "signal_generated",
        /// A risk figure is close to its limit.
        RiskWarning => "risk_warning",
        /// A campaign was force-closed.
        EmergencyExit => "emergency_exit",
        /// Something in the platform broke.
        SystemError => "system_error",
    }
}

string_enum! {
    /// How urgent it is; decides the channels.
    Priority {
        /// Toast only by default.
        Info => "info",
        /// Toast and email by default.
        Warning => "warning",
        /// Every channel; overrides quiet hours.
        Critical => "critical",
    }
}

string_enum! {
    /// Where a notification can be delivered.
    Channel {
        /// Live toast in open dashboard tabs (WebSocket).
        Toast => "toast",
        /// Email over SMTP.
        Email => "email",
        /// SMS through Twilio.
        Sms => "sms",
        /// Browser Web Push.
        Push => "push",
    }
}

/// A stored notification, exactly as the REST API and the WebSocket send it.
#[derive(Debug, Clone, PartialEq, Deserialize, TS, utoipa::ToSchema)]
pub struct Notification {
    /// Unique id.
    pub id: Uuid,
    /// The owner.
    pub user_id: Uuid,
    /// Per-user sequence number: starts at 1, no gaps.
    pub sequence_number: i64,
    /// What happened.
    pub notification_type: NotificationType,
    /// How urgent.
    pub priority: Priority,
    /// Short headline, at most 200 characters.
    pub title: String,
    /// Body, at most 1000 characters.
    pub message: String,
    /// Type-specific details (signal, risk, exit or error context).
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    /// Whether the owner has read it.
    pub read: bool,
    /// When it was stored (UTC).
    pub created_at: DateTime<Utc>,
}

/// What `#[derive(Serialize)]` would write, field for field, but with `created_at` written
/// by `time_text` (a `serialize_with` attribute would do, but ts-rs cannot read one).
impl Serialize for Notification {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        struct At<'a>(&'a DateTime<Utc>);
        impl Serialize for At<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                super::time_text::serialize(self.0, serializer)
            }
        }
        let mut s = serializer.serialize_struct("Notification", 10)?;
        s.serialize_field("id", &self.id)?;
        s.serialize_field("user_id", &self.user_id)?;
        s.serialize_field("sequence_number", &self.sequence_number)?;
        s.serialize_field("notification_type", &self.notification_type)?;
        s.serialize_field("priority", &self.priority)?;
        s.serialize_field("title", &self.title)?;
        s.serialize_field("message", &self.message)?;
        s.serialize_field("metadata", &self.metadata)?;
        s.serialize_field("read", &self.read)?;
        s.serialize_field("created_at", &At(&self.created_at))?;
        s.end()
    }
}

/// What an event says to each of its recipients. A broadcast's thousands of rows share
/// one copy from the dispatcher to the toasts: cloning the texts and metadata for every
/// recipient, and freeing them, was a third of a broadcast delivery's instructions on
/// the request thread (callgrind).
#[derive(Debug, Clone, PartialEq)]
pub struct NotificationContent {
    /// What happened.
    pub notification_type: NotificationType,
    /// How urgent.
    pub priority: Priority,
    /// Headline.
    pub title: String,
    /// Body.
    pub message: String,
    /// Details.
    pub metadata: super::metadata::Metadata,
    /// Creation time (UTC).
    pub created_at: DateTime<Utc>,
}

/// A notification about to be stored: everything but the sequence number, which the
/// store assigns in the same transaction as the insert.
#[derive(Debug, Clone, PartialEq)]
pub struct NewNotification {
    /// Unique id, chosen before storing so retries can be recognised.
    pub id: Uuid,
    /// The owner.
    pub user_id: Uuid,
    /// What it says (shared with the event's other recipients).
    pub content: Arc<NotificationContent>,
}

impl NewNotification {
    /// The stored form once a sequence number is assigned.
    pub fn into_stored(self, sequence_number: i64) -> Notification {
        notification_of(self.id, self.user_id, sequence_number, &self.content)
    }
}

/// The notification `id` of `user_id` numbered `sequence_number`, unread, saying `content`.
fn notification_of(id: Uuid, user_id: Uuid, sequence_number: i64, content: &NotificationContent) -> Notification {
    Notification {
        id,
        user_id,
        sequence_number,
        notification_type: content.notification_type,
        priority: content.priority,
        title: content.title.clone(),
        message: content.message.clone(),
        metadata: content.metadata.value(),
        read: false,
        created_at: content.created_at,
    }
}

/// A notification as stored, with the owner's unread count right after it was.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredNotification {
    /// Its id.
    pub id: Uuid,
    /// The owner.
    pub user_id: Uuid,
    /// The owner's sequence number for it.
    pub sequence_number: i64,
    /// What it says (shared with the rows of the same event).
    pub content: Arc<NotificationContent>,
    /// Owner's unread count including it.
    pub unread_count: i64,
    /// Its `notification_toast` frame when already serialised (PostgreSQL writes it
    /// for the other nodes), so the local tabs get the same bytes without a second pass.
    pub toast_frame: Option<String>,
}

impl StoredNotification {
    /// The notification as the REST API returns it (a copy of the content).
    pub fn notification(&self) -> Notification {
        notification_of(self.id, self.user_id, self.sequence_number, &self.content)
    }
}

/// The live toast pushed to every open tab of the owner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS)]
pub struct NotificationToast {
    /// The notification's per-user sequence number.
    pub sequence_number: i64,
    /// The stored notification, as the REST API returns it.
    pub notification: Notification,
    /// The owner's unread count including this notification.
    pub unread_count: i64,
    /// When the toast was sent.
    pub timestamp: DateTime<Utc>,
}

impl NotificationToast {
    /// The serialised `notification_toast` frame of `notification`: the JSON of
    /// `ServerMessage::NotificationToast`, written without copying the notification (a
    /// broadcast writes one per recipient).
    pub fn frame(notification: &Notification, unread_count: i64, timestamp: DateTime<Utc>) -> String {
        #[derive(Serialize)]
        #[serde(tag = "type", rename = "notification_toast")]
        struct Frame<'a> {
            sequence_number: i64,
            notification: &'a Notification,
            unread_count: i64,
            #[serde(serialize_with = "super::time_text::serialize")]
            timestamp: DateTime<Utc>,
        }
        let frame = Frame { sequence_number: notification.sequence_number, notification, unread_count, timestamp };
        super::validation::to_json_sized(&frame, frame_capacity(notification)).unwrap_or_default()
    }
}

/// About the bytes of `n`'s toast frame: its texts and metadata and ~250 of names, ids,
/// numbers and times.
fn frame_capacity(n: &Notification) -> usize {
    256 + n.title.len() + n.message.len() + super::validation::serialised_len_estimate(&n.metadata)
}

/// The toast frame of a notification's content, serialised once for all the rows that
/// share it (a broadcast's recipients): only the id, owner, sequence number and unread
/// count are written per recipient.
pub struct ToastTemplate {
    /// `"notification_type":…,"created_at":"…"}`: the notification after its sequence number.
    content: String,
    /// The serialised send time.
    timestamp: String,
}

impl ToastTemplate {
    /// The template of `source`, sent at `timestamp`.
    pub fn new(source: &NotificationContent, timestamp: DateTime<Utc>) -> Self {
        // Field for field the tail of `Notification`'s own serialisation, written by hand
        // (see `json_text`); the metadata is JSON text already.
        use super::json_text::push_str;
        let metadata = source.metadata.as_str();
        let mut content = String::with_capacity(160 + source.title.len() + source.message.len() + metadata.len());
        content.push_str(r#""notification_type":""#);
        content.push_str(source.notification_type.as_str());
        content.push_str(r#"","priority":""#);
        content.push_str(source.priority.as_str());
        content.push_str(r#"","title":"#);
        push_str(&mut content, &source.title);
        content.push_str(r#","message":"#);
        push_str(&mut content, &source.message);
        content.push_str(r#","metadata":"#);
        content.push_str(metadata);
        // A new notification is unread.
        content.push_str(r#","read":false,"created_at":"#);
        super::time_text::push_json(&mut content, &source.created_at);
        content.push('}');
        let mut stamp = String::with_capacity(super::time_text::MAX_LEN + 2);
        super::time_text::push_json(&mut stamp, &timestamp);
        Self { content, timestamp: stamp }
    }

    /// The frame of notification `id` of `user_id`, numbered `sequence_number`, with
    /// the template's content, exactly as [`NotificationToast::frame`] writes it.
    pub fn frame(&self, id: Uuid, user_id: Uuid, sequence_number: i64, unread_count: i64) -> String {
        // Pieces joined into one allocation of the right size: `format!` grew its
        // buffer as it wrote and went through the formatting machinery for every
        // argument, 3,500 instructions per recipient of a broadcast (callgrind).
        let (mut seq, mut unread) = (itoa::Buffer::new(), itoa::Buffer::new());
        let seq = seq.format(sequence_number);
        let (mut id_text, mut user) = (Uuid::encode_buffer(), Uuid::encode_buffer());
        let pieces = [
            r#"{"type":"notification_toast","sequence_number":"#,
            seq,
            r#","notification":{"id":""#,
            id.hyphenated().encode_lower(&mut id_text),
            r#"","user_id":""#,
            user_id.hyphenated().encode_lower(&mut user),
            r#"","sequence_number":"#,
            seq,
            ",",
            &self.content,
            r#","unread_count":"#,
            unread.format(unread_count),
            r#","timestamp":"#,
            &self.timestamp,
            "}",
        ];
        let mut out = String::with_capacity(pieces.iter().map(|p| p.len()).sum());
        for p in pieces {
            out.push_str(p);
        }
        out
    }
}

/// The toast frames of a batch's rows, sent at one time: the rows of one event come one
/// after another and share their content, which is serialised once for all of them.
pub struct ToastFrames {
    timestamp: DateTime<Utc>,
    last: Option<(Arc<NotificationContent>, ToastTemplate)>,
}

impl ToastFrames {
    /// Frames sent at `timestamp`.
    pub fn new(timestamp: DateTime<Utc>) -> Self {
        Self { timestamp, last: None }
    }

    /// The frame of notification `id` of `user_id`, numbered `sequence_number`, saying
    /// `content`.
    pub fn frame(
        &mut self,
        content: &Arc<NotificationContent>,
        (id, user_id, sequence_number): (Uuid, Uuid, i64),
        unread_count: i64,
    ) -> String {
        if !self.last.as_ref().is_some_and(|(c, _)| Arc::ptr_eq(c, content)) {
            self.last = None;
        }
        let timestamp = self.timestamp;
        let (_, template) = self.last.get_or_insert_with(|| (content.clone(), ToastTemplate::new(content, timestamp)));
        template.frame(id, user_id, sequence_number, unread_count)
    }
}

/// Every message the server sends over the WebSocket, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// A new (or replayed) notification.
    NotificationToast(NotificationToast),
    /// Registration and replay are done: live delivery has begun.
    Ready {
        /// Highest sequence number the user has (0 when none).
        last_sequence_number: i64,
    },
    /// The unread count changed (mark read, read-all, erase).
    UnreadCount {
        /// The new unread count.
        count: i64,
    },
}

#[cfg(test)]
mod tests {
    use super::super::metadata::Metadata;
    use super::*;
    use serde_json::json;

    #[test]
    fn a_toast_frame_is_the_server_message_it_stands_for() {
        let notification = Notification {
            id: Uuid::now_v7(),
            user_id: Uuid::new_v4(),
            sequence_number: 7,
            notification_type: NotificationType::RiskWarning,
            priority: Priority::Warning,
            title: "Drawdown \"near\" limit".into(),
            message: "line 1\nline 2 | ünïcode".into(),
            metadata: json!({"current": 0.18, "nested": {"a": [1, 2]}}),
            read: false,
            created_at: Utc::now(),
        };
        let at = Utc::now();
        let owned = ServerMessage::NotificationToast(NotificationToast {
            sequence_number: 7,
            notification: notification.clone(),
            unread_count: 3,
            timestamp: at,
        });
        assert_eq!(NotificationToast::frame(&notification, 3, at), serde_json::to_string(&owned).unwrap());
        let back: ServerMessage = serde_json::from_str(&NotificationToast::frame(&notification, 3, at)).unwrap();
        assert_eq!(back, owned);
    }

    #[test]
    fn a_templated_toast_frame_is_the_frame_of_each_recipient() {
        let content = NotificationContent {
            notification_type: NotificationType::EmergencyExit,
            priority: Priority::Critical,
            title: "Exit \"C-1\" \u{1F6A8}".into(),
            message: "tab\there, back\\slash, control \u{1}".into(),
            metadata: Metadata::from_value(
                &json!({"campaign_id": "C-1", "positions": [1, 2.5, null, true], "n": {"é": "ü"}}),
            ),
            created_at: Utc::now(),
        };
        let content = Arc::new(content);
        let first =
            NewNotification { id: Uuid::now_v7(), user_id: Uuid::new_v4(), content: content.clone() }.into_stored(7);
        let second =
            NewNotification { id: Uuid::now_v7(), user_id: Uuid::new_v4(), content: content.clone() }.into_stored(1);
        let at = Utc::now();
        let template = ToastTemplate::new(&content, at);
        for (n, unread) in [(&first, 3), (&second, 1)] {
            let expected = NotificationToast::frame(n, unread, at);
            assert_eq!(template.frame(n.id, n.user_id, n.sequence_number, unread), expected);
        }
        // Posted metadata goes out as posted (compact, keys in their order).
        let posted = NotificationContent {
            metadata: Metadata::from_posted(
                serde_json::value::RawValue::from_string(r#"{ "z": 1, "a": "x y" }"#.into()).unwrap(),
            )
            .unwrap(),
            ..(*content).clone()
        };
        let marked = ToastTemplate::new(&posted, at).frame(first.id, first.user_id, 7, 3);
        assert!(marked.contains(r#""metadata":{"z":1,"a":"x y"},"read":false"#), "{marked}");
    }

    #[test]
    fn toast_frames_follow_each_rows_own_content_as_events_alternate() {
        let content = |title: &str| {
            Arc::new(NotificationContent {
                notification_type: NotificationType::SignalGenerated,
                priority: Priority::Info,
                title: title.into(),
                message: format!("{title} \"quoted\""),
                metadata: Metadata::from_value(&json!({"title": title})),
                created_at: Utc::now(),
            })
        };
        let (a, b) = (content("a"), content("b"));
        let at = Utc::now();
        let mut frames = ToastFrames::new(at);
        for (i, c) in [&a, &a, &b, &a, &b].into_iter().enumerate() {
            let n = NewNotification { id: Uuid::now_v7(), user_id: Uuid::new_v4(), content: c.clone() }
                .into_stored(i as i64);
            let frame = frames.frame(c, (n.id, n.user_id, n.sequence_number), 2);
            assert_eq!(frame, NotificationToast::frame(&n, 2, at), "row {i}");
        }
    }

    #[test]
    fn a_stored_notification_is_its_content_numbered_and_unread() {
        let content = Arc::new(NotificationContent {
            notification_type: NotificationType::RiskWarning,
            priority: Priority::Warning,
            title: "Drawdown".into(),
            message: "near the limit".into(),
            metadata: Metadata::from_value(&json!({"current": 0.18})),
            created_at: Utc::now(),
        });
        let (id, user) = (Uuid::now_v7(), Uuid::new_v4());
        let stored = StoredNotification {
            id,
            user_id: user,
            sequence_number: 4,
            content: content.clone(),
            unread_count: 2,
            toast_frame: None,
        };
        assert_eq!(stored.notification(), NewNotification { id, user_id: user, content }.into_stored(4));
        let n = stored.notification();
        assert_eq!((n.id, n.user_id, n.sequence_number, n.read), (id, user, 4, false));
        assert_eq!(
            (n.title.as_str(), n.message.as_str(), &n.metadata),
            ("Drawdown", "near the limit", &json!({"current": 0.18}))
        );
    }

    #[test]
    fn enums_round_trip_in_snake_case() {
        for t in NotificationType::ALL {
            let v = serde_json::to_value(t).unwrap();
            assert_eq!(v, json!(t.as_str()));
            assert_eq!(t.as_str().parse::<NotificationType>().unwrap(), *t);
        }
        for p in Priority::ALL {
            assert_eq!(serde_json::to_value(p).unwrap(), json!(p.as_str()));
        }
        for c in Channel::ALL {
            assert_eq!(serde_json::to_value(c).unwrap(), json!(c.as_str()));
        }
        assert!("SMS".parse::<Channel>().is_err());
        assert!("fax".parse::<Channel>().unwrap_err().contains("toast, email, sms, push"));
    }

    #[test]
    fn notification_serialises_like_the_story() {
        let created = DateTime::parse_from_rfc3339("2024-03-13T13:05:00Z").unwrap().with_timezone(&Utc);
        let content = NotificationContent {
            notification_type: NotificationType::SignalGenerated,
            priority: Priority::Warning,
            title: "New Signal: AAPL Spring".into(),
            message: "Spring pattern detected on AAPL with 87% confidence".into(),
            metadata: Metadata::from_value(&json!({"symbol": "AAPL", "confidence": 87})),
            created_at: created,
        };
        let n = NewNotification { id: Uuid::nil(), user_id: Uuid::nil(), content: Arc::new(content) }.into_stored(7);
        let v = serde_json::to_value(&n).unwrap();
        assert_eq!(v["notification_type"], "signal_generated");
        assert_eq!(v["priority"], "warning");
        assert_eq!(v["read"], false);
        assert_eq!(v["sequence_number"], 7);
        assert_eq!(v["created_at"], "2024-03-13T13:05:00Z");
        let back: Notification = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(back, n);
        // Every field, in the order a derive writes them; the time as chrono writes it.
        let with_micros = Notification { created_at: created + chrono::Duration::microseconds(250), ..n };
        assert_eq!(
            serde_json::to_string(&with_micros).unwrap(),
            format!(
                r#"{{"id":"{nil}","user_id":"{nil}","sequence_number":7,"notification_type":"signal_generated","priority":"warning","title":"New Signal: AAPL Spring","message":"Spring pattern detected on AAPL with 87% confidence","metadata":{{"confidence":87,"symbol":"AAPL"}},"read":false,"created_at":{at}}}"#,
                nil = Uuid::nil(),
                at = serde_json::to_string(&with_micros.created_at).unwrap(),
            )
        );
    }

    #[test]
    fn server_messages_are_tagged_by_type() {
        let v = serde_json::to_value(ServerMessage::Ready { last_sequence_number: 4 }).unwrap();
        assert_eq!(v, json!({"type": "ready", "last_sequence_number": 4}));
        let v = serde_json::to_value(ServerMessage::UnreadCount { count: 2 }).unwrap();
        assert_eq!(v, json!({"type": "unread_count", "count": 2}));
    }
}
