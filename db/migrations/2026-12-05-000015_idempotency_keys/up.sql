-- Idempotency keys of task creation: a client that sends `Idempotency-Key` with
-- `POST /api/tasks` and retries after a timeout gets the task its first request made, not a
-- second one. The key is stored with the task, in the transaction that stores the task, so
-- a task exists exactly when its key does. `request_hash` is the SHA-256 of the request body
-- as the server read it (same key, other body: refused). Rows older than the window are
-- forgotten by the servers' heartbeat. Portable like the earlier migrations.
CREATE TABLE idempotency_keys (
    owner TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    task_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (owner, idempotency_key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
