-- The chat bot's short memory per user (the task discussed last, a question awaiting an
-- answer), kept in the database so that a conversation continues whichever server of a
-- cluster the next message reaches. `state` is the conversation as JSON; `heard_at` is when
-- the user last wrote, ms since the epoch. Portable like the earlier migrations.
CREATE TABLE chat_conversations (
    user_name TEXT PRIMARY KEY NOT NULL,
    state TEXT NOT NULL,
    heard_at BIGINT NOT NULL
);
