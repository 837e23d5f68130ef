DROP TABLE task_start_estimates;
