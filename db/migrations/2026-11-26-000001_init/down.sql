DROP TABLE step_runs;
DROP TABLE task_progress;
DROP TABLE task_events;
DROP TABLE step_logs;
DROP TABLE substeps;
DROP TABLE steps;
DROP TABLE tasks;
