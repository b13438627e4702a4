CREATE INDEX idx_deliveries_user_channel ON deliveries (user_id, channel, sent_at);
