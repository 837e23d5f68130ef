-- A step's expected work time when its plan says (a timer's length, an author's
-- `estimate_s`): the estimator's prior before the step's kind has history. NULL when the
-- plan does not say. Portable like the earlier migrations.
ALTER TABLE steps ADD COLUMN estimate_ms BIGINT;
