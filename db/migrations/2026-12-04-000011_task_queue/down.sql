DROP INDEX tasks_queued;
ALTER TABLE tasks DROP COLUMN queued_at;
ALTER TABLE servers DROP COLUMN max_tasks;
