DROP TABLE chat_conversations;
