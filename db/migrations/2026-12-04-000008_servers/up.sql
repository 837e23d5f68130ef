-- The cluster's membership: one row per server that has run on this database. A server
-- writes its row when it starts, renews `heartbeat_at` with its task leases, and sets
-- `stopped_at` when it shuts down cleanly; one whose heartbeat is older than a lease is gone.
-- `address` is the URL it serves HTTP on (none for a runtime embedded without a server).
-- Portable like the earlier migrations.
CREATE TABLE servers (
    id TEXT PRIMARY KEY NOT NULL,
    address TEXT,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    running_tasks INTEGER NOT NULL DEFAULT 0,
    stopped_at BIGINT
);
