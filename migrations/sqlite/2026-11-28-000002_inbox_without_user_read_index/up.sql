-- Every notification paid for this index with one more random page written per insert
-- (about a tenth of the hub's CPU per message, a quarter of a broadcast delivery; README,
-- Storage). What it served is served without it: the unread count is kept in
-- users.unread_count, and an unread listing walks the (user_id, sequence_number) index
-- newest first, as every inbox page does.
DROP INDEX IF EXISTS idx_notifications_user_read;
