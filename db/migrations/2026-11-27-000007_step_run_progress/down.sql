ALTER TABLE step_runs DROP COLUMN progress;
