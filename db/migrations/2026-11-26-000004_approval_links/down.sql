DROP INDEX approval_link_uses_expiry;
DROP TABLE approval_link_uses;
DROP TABLE server_secrets;
