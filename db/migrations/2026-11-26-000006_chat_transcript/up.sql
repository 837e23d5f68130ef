-- The chat bot's transcript per user: what they asked, what the bot answered, and the
-- notifications their chat preferences route to it. Portable like the earlier migrations.
-- No foreign key to users: task owners who get notices need not be API users.
CREATE TABLE chat_messages (
    id TEXT PRIMARY KEY NOT NULL,
    user_name TEXT NOT NULL,
    sender TEXT NOT NULL,
    text TEXT NOT NULL,
    task_id TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX chat_messages_user_id ON chat_messages (user_name, id);
