-- Notifications: each user's preferences and the log of every delivery attempt. Portable like
-- the earlier migrations: the same file runs on SQLite and PostgreSQL.

-- The preferences document (JSON) is the HTTP layer's format; the database keeps it whole, so
-- adding a channel changes no schema.
CREATE TABLE notification_preferences (
    user_name TEXT PRIMARY KEY NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    document TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- One row per attempt. No foreign keys: the log outlives deleted tasks, and task owners need
-- not be API users.
CREATE TABLE notifications (
    id TEXT PRIMARY KEY NOT NULL,
    user_name TEXT NOT NULL,
    task_id TEXT NOT NULL,
    event TEXT NOT NULL,
    channel TEXT NOT NULL,
    target TEXT NOT NULL,
    message TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX notifications_user_time ON notifications (user_name, created_at);

-- Browsers' push subscriptions (PushSubscription JSON); a browser subscribing again with the
-- same endpoint updates its keys.
CREATE TABLE push_subscriptions (
    id TEXT PRIMARY KEY NOT NULL,
    user_name TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    endpoint TEXT NOT NULL,
    p256dh TEXT NOT NULL,
    auth TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    CONSTRAINT push_subscriptions_user_endpoint UNIQUE (user_name, endpoint)
);

-- The server's VAPID key pair (one row, id 1), made on first start. In the database rather
-- than the data directory so that every server sharing a PostgreSQL database signs with the
-- key browsers subscribed with.
CREATE TABLE vapid_keys (
    id INTEGER PRIMARY KEY NOT NULL,
    private_key TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
