DROP TABLE vapid_keys;
DROP TABLE push_subscriptions;
DROP INDEX notifications_user_time;
DROP TABLE notifications;
DROP TABLE notification_preferences;
