-- Back to progress rows keyed by event seq. Several rows may now share a seq (percents
-- flushed between two transitions): only the newest of each is kept.
-- Constraints named as PostgreSQL named the first migration's, so a reverted schema matches it.
CREATE TABLE task_progress_old (
    task_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    step INTEGER NOT NULL,
    percent INTEGER NOT NULL,
    status TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    CONSTRAINT task_progress_pkey PRIMARY KEY (task_id, seq),
    CONSTRAINT task_progress_task_id_fkey FOREIGN KEY (task_id) REFERENCES tasks (id) ON DELETE CASCADE
);
INSERT INTO task_progress_old (task_id, seq, step, percent, status, updated_at)
    SELECT p.task_id, p.seq, p.step, p.percent, p.status, p.updated_at FROM task_progress p
    WHERE p.id = (SELECT MAX(q.id) FROM task_progress q WHERE q.task_id = p.task_id AND q.seq = p.seq);
DROP TABLE task_progress;
ALTER TABLE task_progress_old RENAME TO task_progress;
ALTER TABLE tasks DROP COLUMN last_progress_seq;

DROP TABLE api_tokens;
DROP TABLE users;
