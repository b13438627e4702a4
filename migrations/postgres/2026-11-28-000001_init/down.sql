DROP TABLE throttle_marks;
DROP TABLE idempotency_keys;
DROP TABLE deliveries;
DROP TABLE push_subscriptions;
DROP TABLE notification_preferences;
DROP TABLE notifications;
DROP TABLE users;
