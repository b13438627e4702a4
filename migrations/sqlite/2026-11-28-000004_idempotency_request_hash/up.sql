-- What the first request with a key carried (SHA-256 of its canonical JSON), so that a
-- key reused for a different request is refused instead of answered with the first
-- request's outcome. Keys recorded before this column stay unchecked.
ALTER TABLE idempotency_keys ADD COLUMN request_hash TEXT;
