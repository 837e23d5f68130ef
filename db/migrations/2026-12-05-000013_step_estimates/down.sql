ALTER TABLE steps DROP COLUMN estimate_ms;
