-- The queue of tasks waiting for a server with room (`runtime.max_running_tasks`): a
-- pending task asked to start gets `queued_at`, and the first server with room claims the
-- oldest (leasing it, then starting it). A claimed task keeps `queued_at` until it starts,
-- so one whose claimer died before starting it is claimed again once that lease lapses.
-- `servers.max_tasks` is each server's limit, as the membership shows it. Portable like the
-- earlier migrations (partial indexes work on both).
ALTER TABLE tasks ADD COLUMN queued_at BIGINT;
CREATE INDEX tasks_queued ON tasks (queued_at, id) WHERE queued_at IS NOT NULL AND status = 'pending';
ALTER TABLE servers ADD COLUMN max_tasks INTEGER NOT NULL DEFAULT 0;
