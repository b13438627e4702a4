-- The ledger of each user's hourly SMS and email limits: one row per message handed to
-- a provider, test messages included. Kept apart from deliveries, which go with the
-- notifications a user erases (erasing one's history must not reset the limits), and
-- written before the send, in the statement that checks the limit, so concurrent sends
-- cannot overshoot it.
CREATE TABLE channel_sends (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    sent_at TIMESTAMP NOT NULL
);
CREATE INDEX idx_channel_sends_window ON channel_sends (user_id, channel, sent_at);
-- The window in progress carries over from the delivery log.
INSERT INTO channel_sends (id, user_id, channel, sent_at)
SELECT id, user_id, channel, sent_at FROM deliveries
WHERE status = 'sent' AND channel IN ('sms', 'email') AND sent_at >= datetime('now', '-1 hour');
