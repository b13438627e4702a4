-- The foreign key back (see up.sql): the same copy, with the constraint.
CREATE TABLE deliveries_kept AS SELECT * FROM deliveries;
DROP TABLE deliveries;

CREATE TABLE notifications_rebuilt (
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
INSERT INTO notifications_rebuilt (id, user_id, sequence_number, notification_type, priority, title,
    message, metadata, read, toast, created_at)
SELECT id, user_id, sequence_number, notification_type, priority, title, message, metadata, read,
    toast, created_at
FROM notifications ORDER BY rowid;
DROP TABLE notifications;
ALTER TABLE notifications_rebuilt RENAME TO notifications;

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
INSERT INTO deliveries (id, notification_id, user_id, channel, status, reason, attempts, last_error,
    next_attempt_at, claimed_by, sent_at, created_at, updated_at)
SELECT id, notification_id, user_id, channel, status, reason, attempts, last_error,
    next_attempt_at, claimed_by, sent_at, created_at, updated_at
FROM deliveries_kept;
DROP TABLE deliveries_kept;
CREATE INDEX idx_deliveries_due ON deliveries (status, next_attempt_at);
CREATE INDEX idx_deliveries_notification ON deliveries (notification_id);
