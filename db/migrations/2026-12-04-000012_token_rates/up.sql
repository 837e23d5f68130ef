-- A token may carry its own request rate (`stepwise token create --rate N`), e.g. a worker
-- token that drives a hundred tasks; NULL is the server's `api.requests_per_second`.
-- Portable like the earlier migrations.
ALTER TABLE api_tokens ADD COLUMN requests_per_second INTEGER;
