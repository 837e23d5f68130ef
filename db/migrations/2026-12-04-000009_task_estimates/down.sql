DROP TABLE task_estimates;
