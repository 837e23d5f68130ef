-- The email channel mails only long tasks by default: "long" is what the task's ETA said when
-- it started, so it is kept here (the estimate moves as the task runs, and a completion may
-- come hours later, after a restart). Portable like the earlier migrations: the same file
-- runs on SQLite and PostgreSQL.
CREATE TABLE task_start_estimates (
    task_id TEXT PRIMARY KEY NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    -- Whole seconds of work the estimator expected the whole task to take.
    seconds BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
