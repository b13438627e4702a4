-- A notification is only ever inserted by the group commit, in the transaction that
-- first creates or bumps its owner's row (users.last_sequence_number numbers it), so its
-- owner always exists, and users are never deleted. The foreign key checked that again
-- for every row, with a query of its own: about a tenth of PostgreSQL's CPU per stored
-- notification (README, Performance). SQLite's seventh migration drops it too.
ALTER TABLE notifications DROP CONSTRAINT IF EXISTS notifications_user_id_fkey;
