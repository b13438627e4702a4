-- Ids are UUID text, times are UTC TIMESTAMPs, JSON documents are TEXT (JSONB on PostgreSQL).
CREATE TABLE users (
    id TEXT PRIMARY KEY NOT NULL,
    role TEXT NOT NULL DEFAULT 'user',
    last_sequence_number BIGINT NOT NULL DEFAULT 0,
    -- Kept in step with notifications.read in the same transactions, so a toast can
    -- carry the count without counting rows.
    unread_count BIGINT NOT NULL DEFAULT 0,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX idx_users_role ON users (role);

CREATE TABLE notifications (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    sequence_number BIGINT NOT NULL,
    notification_type TEXT NOT NULL,
    priority TEXT NOT NULL,
    title TEXT NOT NULL,
    message TEXT NOT NULL,
    metadata TEXT NOT NULL,
    read BOOLEAN NOT NULL DEFAULT 0,
    -- Whether the live toast went out (false: quiet hours or routing withheld it), so
    -- a tab catching up after a gap shows the same as the tabs that were live.
    toast BOOLEAN NOT NULL DEFAULT 1,
    created_at TIMESTAMP NOT NULL,
    UNIQUE (user_id, sequence_number)
);
CREATE INDEX idx_notifications_user_read ON notifications (user_id, read, created_at DESC);
CREATE INDEX idx_notifications_type ON notifications (notification_type);

CREATE TABLE notification_preferences (
    user_id TEXT PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    preferences TEXT NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

CREATE TABLE push_subscriptions (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    endpoint TEXT NOT NULL UNIQUE,
    p256dh_key TEXT NOT NULL,
    auth_key TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX idx_push_subscriptions_user ON push_subscriptions (user_id);

-- The outbox: one row per channel delivery, written before the attempt.
CREATE TABLE deliveries (
    id TEXT PRIMARY KEY NOT NULL,
    notification_id TEXT NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    next_attempt_at TIMESTAMP,
    -- Which process is sending it (a claim expires at next_attempt_at).
    claimed_by TEXT,
    sent_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX idx_deliveries_due ON deliveries (status, next_attempt_at);
CREATE INDEX idx_deliveries_user_channel ON deliveries (user_id, channel, sent_at);
CREATE INDEX idx_deliveries_notification ON deliveries (notification_id);

CREATE TABLE idempotency_keys (
    key TEXT PRIMARY KEY NOT NULL,
    status_code INTEGER NOT NULL,
    response TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX idx_idempotency_created ON idempotency_keys (created_at);

-- Throttles (risk warnings 1/h per user and type, system errors 1/15 min per type),
-- in the database so they survive restarts and hold across nodes.
CREATE TABLE throttle_marks (
    key TEXT PRIMARY KEY NOT NULL,
    last_at TIMESTAMP NOT NULL
);
