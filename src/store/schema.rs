//! One diesel schema for both backends. Ids are UUID text and times UTC `TIMESTAMP`s
//! on both; JSON documents use [`JsonDoc`](super::json::JsonDoc), which is `JSONB` on
//! PostgreSQL and `TEXT` on SQLite. This keeps one query code path for both databases
//! at the cost of native UUID columns on PostgreSQL.

diesel::table! {
    use diesel::sql_types::*;

    users (id) {
        id -> Text,
        role -> Text,
        last_sequence_number -> BigInt,
        unread_count -> BigInt,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::store::json::JsonDoc;

    notifications (id) {
        id -> Text,
        user_id -> Text,
        sequence_number -> BigInt,
        notification_type -> Text,
        priority -> Text,
        title -> Text,
        message -> Text,
        metadata -> JsonDoc,
        read -> Bool,
        toast -> Bool,
        created_at -> Timestamp,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::store::json::JsonDoc;

    notification_preferences (user_id) {
        user_id -> Text,
        preferences -> JsonDoc,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    use diesel::sql_types::*;

    push_subscriptions (id) {
        id -> Text,
        user_id -> Text,
        endpoint -> Text,
        p256dh_key -> Text,
        auth_key -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    use diesel::sql_types::*;

    deliveries (id) {
        id -> Text,
        notification_id -> Text,
        user_id -> Text,
        channel -> Text,
        status -> Text,
        reason -> Nullable<Text>,
        attempts -> Integer,
        last_error -> Nullable<Text>,
        next_attempt_at -> Nullable<Timestamp>,
        claimed_by -> Nullable<Text>,
        sent_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::store::json::JsonDoc;

    idempotency_keys (key) {
        key -> Text,
        status_code -> Integer,
        response -> JsonDoc,
        created_at -> Timestamp,
        request_hash -> Nullable<Text>,
    }
}

diesel::table! {
    use diesel::sql_types::*;

    throttle_marks (key) {
        key -> Text,
        last_at -> Timestamp,
    }
}

diesel::table! {
    use diesel::sql_types::*;

    channel_sends (id) {
        id -> Text,
        user_id -> Text,
        channel -> Text,
        sent_at -> Timestamp,
    }
}

diesel::joinable!(notifications -> users (user_id));
diesel::allow_tables_to_appear_in_same_query!(
    users,
    notifications,
    notification_preferences,
    push_subscriptions,
    deliveries,
    idempotency_keys
);
