-- The notifications→users foreign key goes, as PostgreSQL's did (its seventh migration):
-- only the group commit inserts notifications, in the transaction that creates or bumps
-- the owner's row, and users are never deleted, so the owner always exists. On SQLite
-- the key cost more than its lookup: an immediate key makes every multi-row INSERT of the
-- batch open a statement journal, a copy of each page the statement touches kept to undo
-- that statement alone, though any error fails the whole batch (11 % of a stored
-- broadcast delivery, callgrind; README, Storage).
--
-- SQLite drops a constraint only by copying the table. `deliveries` refers to
-- `notifications` and would lose its rows with the old table (ON DELETE CASCADE), so it is
-- set aside and rebuilt too, unchanged.
CREATE TABLE deliveries_kept AS SELECT * FROM deliveries;
DROP TABLE deliveries;

CREATE TABLE notifications_rebuilt (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL,
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
