-- Nothing reads notifications by type alone: the inbox's type filter is per user and
-- walks (user_id, sequence_number), newest first, like every inbox page. Every stored
-- notification paid for this index with one more B-tree insert.
DROP INDEX IF EXISTS idx_notifications_type;
