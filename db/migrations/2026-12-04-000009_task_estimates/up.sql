-- The latest estimate of each live task, written with the progress flush by the server
-- running it, so that a server that does not run the task (several servers on one
-- PostgreSQL database) can show it too. Milliseconds, so the columns are portable integers;
-- `steps` is `order:expected_ms` pairs separated by spaces. Portable like the earlier
-- migrations.
CREATE TABLE task_estimates (
    task_id TEXT PRIMARY KEY NOT NULL,
    remaining_ms BIGINT NOT NULL,
    low_ms BIGINT NOT NULL,
    high_ms BIGINT NOT NULL,
    confidence TEXT NOT NULL,
    steps TEXT NOT NULL,
    made_at BIGINT NOT NULL
);
