DROP INDEX chat_messages_user_id;
DROP TABLE chat_messages;
