-- A step's rules for what happens without anyone (its automatic retries and its approval
-- deadline), as JSON the runtime wrote from the plan; NULL for a step with none. `due_at`
-- is when its timer fires next (an approval lapses, a retry starts) and `remind_at` when
-- the reminder of a pending approval goes out, both ms since the epoch, NULL when none is
-- set. Portable like the earlier migrations: one column per statement for SQLite.
ALTER TABLE steps ADD COLUMN policy TEXT;
ALTER TABLE steps ADD COLUMN due_at BIGINT;
ALTER TABLE steps ADD COLUMN remind_at BIGINT;
