-- Accounts, and progress checkpoints out of the event log. Portable like the first migration:
-- the same file runs on SQLite and PostgreSQL.

-- People who hold API tokens; a user is created with their first token.
CREATE TABLE users (
    name TEXT PRIMARY KEY NOT NULL,
    created_at BIGINT NOT NULL
);

-- Only a hash of each secret is kept (the HTTP layer hashes it), so a leaked database leaks
-- no usable token; revoked tokens stay listed.
CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY NOT NULL,
    user_name TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    secret_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX api_tokens_user ON api_tokens (user_name);

-- task_events now holds state transitions only, so that the live event stream and the
-- persisted log agree seq for seq. Coalesced percents get their own per-task counter.
ALTER TABLE tasks ADD COLUMN last_progress_seq BIGINT NOT NULL DEFAULT 0;

-- id: the row's position in the task's progress history, assigned from
-- tasks.last_progress_seq. seq: the newest event in task_events when the row was written.
-- Constraints are named because PostgreSQL keeps their names across the table rename (the
-- defaults would say task_progress_new); the key cannot take task_progress_pkey, which the
-- old table's index holds until it is dropped.
CREATE TABLE task_progress_new (
    task_id TEXT NOT NULL,
    id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    step INTEGER NOT NULL,
    percent INTEGER NOT NULL,
    status TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    CONSTRAINT task_progress_id_pkey PRIMARY KEY (task_id, id),
    CONSTRAINT task_progress_task_id_fkey FOREIGN KEY (task_id) REFERENCES tasks (id) ON DELETE CASCADE
);
-- Old rows were keyed by the seq of the event that recorded them: those seqs are unique
-- and increasing per task, so they serve as ids as they are.
INSERT INTO task_progress_new (task_id, id, seq, step, percent, status, updated_at)
    SELECT task_id, seq, seq, step, percent, status, updated_at FROM task_progress;
UPDATE tasks SET last_progress_seq = COALESCE(
    (SELECT MAX(p.id) FROM task_progress_new p WHERE p.task_id = tasks.id), 0);
DROP TABLE task_progress;
ALTER TABLE task_progress_new RENAME TO task_progress;
