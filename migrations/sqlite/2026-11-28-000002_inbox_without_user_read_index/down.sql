CREATE INDEX idx_notifications_user_read ON notifications (user_id, read, created_at DESC);
