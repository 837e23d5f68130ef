-- The progress samples of a completed step run, so the estimator learns how a step kind's
-- reported progress relates to its real duration, also after a restart. Text of
-- `elapsed_ms:percent` pairs separated by spaces, oldest first; empty when none came.
-- Portable like the earlier migrations.
ALTER TABLE step_runs ADD COLUMN progress TEXT NOT NULL DEFAULT '';
