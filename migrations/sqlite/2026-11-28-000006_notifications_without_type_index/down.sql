CREATE INDEX idx_notifications_type ON notifications (notification_type);
