ALTER TABLE api_tokens DROP COLUMN requests_per_second;
