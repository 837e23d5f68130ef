-- Stepwise schema, portable: the same file runs on SQLite and PostgreSQL.
-- Timestamps are milliseconds since the Unix epoch (BIGINT); flags are INTEGER 0/1 (Diesel's
-- MultiConnection has no portable BOOLEAN). Row keys come from per-task
-- counters kept on the tasks row (no AUTOINCREMENT/SERIAL), so both backends agree.
CREATE TABLE tasks (
    id TEXT PRIMARY KEY NOT NULL,
    owner TEXT NOT NULL,
    title TEXT NOT NULL,
    complexity INTEGER NOT NULL CHECK (complexity > 0),
    status TEXT NOT NULL,
    restarted_from TEXT,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    updated_at BIGINT NOT NULL,
    error TEXT,
    -- Sequence number of the newest row in task_events for this task.
    last_seq BIGINT NOT NULL DEFAULT 0,
    -- Sequence number of the newest row in step_logs for this task.
    last_log_seq BIGINT NOT NULL DEFAULT 0,
    -- The lease: which server instance runs the task, until when, and the fencing token
    -- that every write checks.
    lease_owner TEXT,
    lease_expires_at BIGINT,
    lease_token BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX tasks_owner_created ON tasks (owner, created_at);
CREATE INDEX tasks_status ON tasks (status);

CREATE TABLE steps (
    task_id TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    step_order INTEGER NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    params TEXT NOT NULL,
    requires_approval INTEGER NOT NULL,
    skippable INTEGER NOT NULL,
    approved INTEGER NOT NULL,
    status TEXT NOT NULL,
    progress INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    work_ms BIGINT NOT NULL,
    error TEXT,
    output TEXT,
    PRIMARY KEY (task_id, step_order)
);

CREATE TABLE substeps (
    task_id TEXT NOT NULL,
    step_order INTEGER NOT NULL,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    done INTEGER NOT NULL,
    PRIMARY KEY (task_id, step_order, position),
    FOREIGN KEY (task_id, step_order) REFERENCES steps (task_id, step_order) ON DELETE CASCADE
);

CREATE TABLE step_logs (
    task_id TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    step_order INTEGER NOT NULL,
    stream TEXT NOT NULL,
    line TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (task_id, seq)
);

-- Append-only event log; seq is per task and gap-free, assigned from tasks.last_seq.
CREATE TABLE task_events (
    task_id TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    step_order INTEGER,
    detail TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (task_id, seq)
);

-- The seed's history table: a step's percent and status each time they are recorded,
-- keyed by the seq of the event that recorded them.
CREATE TABLE task_progress (
    task_id TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    step INTEGER NOT NULL,
    percent INTEGER NOT NULL,
    status TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (task_id, seq)
);

-- The estimator's history: the work time of every completed step run.
CREATE TABLE step_runs (
    task_id TEXT NOT NULL,
    step_order INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    step_key TEXT NOT NULL,
    complexity INTEGER NOT NULL,
    duration_ms BIGINT NOT NULL,
    finished_at BIGINT NOT NULL,
    PRIMARY KEY (task_id, step_order, attempt)
);
CREATE INDEX step_runs_finished ON step_runs (finished_at);
