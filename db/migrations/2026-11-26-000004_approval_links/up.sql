-- Approval links: the signed Approve / Reject links that approval push messages carry. Portable
-- like the earlier migrations: the same file runs on SQLite and PostgreSQL.

-- Secrets the server makes on first start, by name (the links' HMAC key is `approval_links`).
-- In the database rather than the data directory so that every server sharing a PostgreSQL
-- database verifies the links any of them signed.
CREATE TABLE server_secrets (
    name TEXT PRIMARY KEY NOT NULL,
    secret TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Links that have been used: a link acts once. The primary key is what makes two uses at the
-- same moment end with one winner. Rows are kept until a while after the link expires (an
-- expired link is refused before this table is read), so the table stays small.
CREATE TABLE approval_link_uses (
    link_id TEXT PRIMARY KEY NOT NULL,
    task_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    decision TEXT NOT NULL,
    user_name TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT NOT NULL
);
CREATE INDEX approval_link_uses_expiry ON approval_link_uses (expires_at);
