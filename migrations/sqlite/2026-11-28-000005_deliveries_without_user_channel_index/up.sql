-- The rate limits count from channel_sends now (third migration): nothing reads
-- deliveries by (user_id, channel, sent_at) any more, and every outbox row paid for it.
DROP INDEX IF EXISTS idx_deliveries_user_channel;
