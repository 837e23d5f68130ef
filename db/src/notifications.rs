//! Notifications: each user's preferences (a document the HTTP layer defines, kept whole),
//! the log of every delivery attempt the notifier makes, browsers' push subscriptions, the
//! server's VAPID key, and each task's estimated duration at start (what decides whether it
//! is long enough to be worth a mail).

use diesel::prelude::*;

use crate::connection::AnyConnection;
use crate::schema::{notification_preferences, notifications, push_subscriptions, task_start_estimates, vapid_keys};
use crate::DbError;

/// One delivery attempt, as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationRecord {
    /// The attempt's id.
    pub id: String,
    /// Who was notified.
    pub user: String,
    /// The task it was about.
    pub task_id: String,
    /// The event's name, e.g. `task_started`, or `digest`.
    pub event: String,
    /// The channel, e.g. `chat`.
    pub channel: String,
    /// Where it went, as much as is safe to show (e.g. a webhook's origin).
    pub target: String,
    /// The text sent.
    pub message: String,
    /// Which attempt at this message, from 1.
    pub attempt: i32,
    /// `delivered`, `failed` or `refused`.
    pub outcome: String,
    /// Why it failed, or the peer's answer.
    pub detail: Option<String>,
    /// When, ms since the epoch.
    pub created_at: i64,
}

/// Logs a delivery attempt.
pub fn insert_notification(conn: &mut AnyConnection, record: &NotificationRecord) -> Result<(), DbError> {
    diesel::insert_into(notifications::table)
        .values((
            notifications::id.eq(&record.id),
            notifications::user_name.eq(&record.user),
            notifications::task_id.eq(&record.task_id),
            notifications::event.eq(&record.event),
            notifications::channel.eq(&record.channel),
            notifications::target.eq(&record.target),
            notifications::message.eq(&record.message),
            notifications::attempt.eq(record.attempt),
            notifications::outcome.eq(&record.outcome),
            notifications::detail.eq(&record.detail),
            notifications::created_at.eq(record.created_at),
        ))
        .execute(conn)?;
    Ok(())
}

/// `user`'s newest `limit` attempts, newest first (ties by id, descending).
pub fn list_notifications(
    conn: &mut AnyConnection,
    user: &str,
    limit: usize,
) -> Result<Vec<NotificationRecord>, DbError> {
    type Row = (String, String, String, String, String, String, String, i32, String, Option<String>, i64);
    let rows = notifications::table
        .filter(notifications::user_name.eq(user))
        .order((notifications::created_at.desc(), notifications::id.desc()))
        .limit(i64::try_from(limit).unwrap_or(i64::MAX))
        .select((
            notifications::id,
            notifications::user_name,
            notifications::task_id,
            notifications::event,
            notifications::channel,
            notifications::target,
            notifications::message,
            notifications::attempt,
            notifications::outcome,
            notifications::detail,
            notifications::created_at,
        ))
        .load::<Row>(conn)?;
    Ok(rows
        .into_iter()
        .map(|(id, user, task_id, event, channel, target, message, attempt, outcome, detail, created_at)| {
            NotificationRecord {
                id,
                user,
                task_id,
                event,
                channel,
                target,
                message,
                attempt,
                outcome,
                detail,
                created_at,
            }
        })
        .collect())
}

/// `user`'s stored preferences document, if they saved one.
pub fn notification_preferences(conn: &mut AnyConnection, user: &str) -> Result<Option<String>, DbError> {
    Ok(notification_preferences::table
        .filter(notification_preferences::user_name.eq(user))
        .select(notification_preferences::document)
        .first(conn)
        .optional()?)
}

/// Stores `user`'s preferences document, replacing any before. The user must exist.
pub fn save_notification_preferences(
    conn: &mut AnyConnection,
    user: &str,
    document: &str,
    now: i64,
) -> Result<(), DbError> {
    // An upsert rather than select-then-write, for the reasons `insert_token` gives;
    // `MultiConnection` has no ON CONFLICT, but both concrete backends do.
    let row = (
        notification_preferences::user_name.eq(user),
        notification_preferences::document.eq(document),
        notification_preferences::updated_at.eq(now),
    );
    let update = (notification_preferences::document.eq(document), notification_preferences::updated_at.eq(now));
    match conn {
        AnyConnection::Postgresql(pg) => diesel::insert_into(notification_preferences::table)
            .values(row)
            .on_conflict(notification_preferences::user_name)
            .do_update()
            .set(update)
            .execute(pg)?,
        AnyConnection::Sqlite(sqlite) => diesel::insert_into(notification_preferences::table)
            .values(row)
            .on_conflict(notification_preferences::user_name)
            .do_update()
            .set(update)
            .execute(sqlite)?,
    };
    Ok(())
}

/// A browser's push subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushSubscriptionRecord {
    /// The subscription's id.
    pub id: String,
    /// Whose it is.
    pub user: String,
    /// The push service's URL for the browser.
    pub endpoint: String,
    /// The browser's public key, base64url.
    pub p256dh: String,
    /// The shared authentication secret, base64url.
    pub auth: String,
    /// When it was stored, ms since the epoch.
    pub created_at: i64,
}

/// Stores a subscription; one `user` already has for the same endpoint (a browser
/// subscribing again) gets the new keys and keeps its id. Returns the stored subscription.
pub fn save_push_subscription(
    conn: &mut AnyConnection,
    subscription: &PushSubscriptionRecord,
) -> Result<PushSubscriptionRecord, DbError> {
    let row = (
        push_subscriptions::id.eq(&subscription.id),
        push_subscriptions::user_name.eq(&subscription.user),
        push_subscriptions::endpoint.eq(&subscription.endpoint),
        push_subscriptions::p256dh.eq(&subscription.p256dh),
        push_subscriptions::auth.eq(&subscription.auth),
        push_subscriptions::created_at.eq(subscription.created_at),
    );
    let keys = (push_subscriptions::p256dh.eq(&subscription.p256dh), push_subscriptions::auth.eq(&subscription.auth));
    let conflict = (push_subscriptions::user_name, push_subscriptions::endpoint);
    conn.transaction(|conn| {
        match &mut *conn {
            AnyConnection::Postgresql(pg) => diesel::insert_into(push_subscriptions::table)
                .values(row)
                .on_conflict(conflict)
                .do_update()
                .set(keys)
                .execute(pg)?,
            AnyConnection::Sqlite(sqlite) => diesel::insert_into(push_subscriptions::table)
                .values(row)
                .on_conflict(conflict)
                .do_update()
                .set(keys)
                .execute(sqlite)?,
        };
        let (id, created_at) = push_subscriptions::table
            .filter(push_subscriptions::user_name.eq(&subscription.user))
            .filter(push_subscriptions::endpoint.eq(&subscription.endpoint))
            .select((push_subscriptions::id, push_subscriptions::created_at))
            .first::<(String, i64)>(conn)?;
        Ok(PushSubscriptionRecord { id, created_at, ..subscription.clone() })
    })
}

/// `user`'s push subscriptions, oldest first.
pub fn push_subscriptions(conn: &mut AnyConnection, user: &str) -> Result<Vec<PushSubscriptionRecord>, DbError> {
    let rows = push_subscriptions::table
        .filter(push_subscriptions::user_name.eq(user))
        .order((push_subscriptions::created_at.asc(), push_subscriptions::id.asc()))
        .select((
            push_subscriptions::id,
            push_subscriptions::user_name,
            push_subscriptions::endpoint,
            push_subscriptions::p256dh,
            push_subscriptions::auth,
            push_subscriptions::created_at,
        ))
        .load::<(String, String, String, String, String, i64)>(conn)?;
    Ok(rows
        .into_iter()
        .map(|(id, user, endpoint, p256dh, auth, created_at)| PushSubscriptionRecord {
            id,
            user,
            endpoint,
            p256dh,
            auth,
            created_at,
        })
        .collect())
}

/// Deletes `user`'s subscription `id`; whether there was one.
pub fn delete_push_subscription(conn: &mut AnyConnection, user: &str, id: &str) -> Result<bool, DbError> {
    let mine =
        push_subscriptions::table.filter(push_subscriptions::id.eq(id)).filter(push_subscriptions::user_name.eq(user));
    Ok(diesel::delete(mine).execute(conn)? > 0)
}

/// The server's VAPID private key (base64url): the stored one, or `candidate`, stored now if
/// none was. Two servers starting at once both end up with the one stored first.
pub fn vapid_private_key(conn: &mut AnyConnection, candidate: &str, now: i64) -> Result<String, DbError> {
    let row = (vapid_keys::id.eq(1), vapid_keys::private_key.eq(candidate), vapid_keys::created_at.eq(now));
    match &mut *conn {
        AnyConnection::Postgresql(pg) => {
            diesel::insert_into(vapid_keys::table).values(row).on_conflict_do_nothing().execute(pg)?
        }
        AnyConnection::Sqlite(sqlite) => {
            diesel::insert_into(vapid_keys::table).values(row).on_conflict_do_nothing().execute(sqlite)?
        }
    };
    Ok(vapid_keys::table.filter(vapid_keys::id.eq(1)).select(vapid_keys::private_key).first(conn)?)
}

/// Remembers that `task_id` was estimated at start to take `seconds`; the first estimate
/// recorded for a task stays.
pub fn record_start_estimate(conn: &mut AnyConnection, task_id: &str, seconds: i64, now: i64) -> Result<(), DbError> {
    let row = (
        task_start_estimates::task_id.eq(task_id),
        task_start_estimates::seconds.eq(seconds),
        task_start_estimates::created_at.eq(now),
    );
    match conn {
        AnyConnection::Postgresql(pg) => {
            diesel::insert_into(task_start_estimates::table).values(row).on_conflict_do_nothing().execute(pg)?
        }
        AnyConnection::Sqlite(sqlite) => {
            diesel::insert_into(task_start_estimates::table).values(row).on_conflict_do_nothing().execute(sqlite)?
        }
    };
    Ok(())
}

/// The seconds `task_id` was estimated at start to take, if that was recorded.
pub fn start_estimate(conn: &mut AnyConnection, task_id: &str) -> Result<Option<i64>, DbError> {
    Ok(task_start_estimates::table
        .filter(task_start_estimates::task_id.eq(task_id))
        .select(task_start_estimates::seconds)
        .first(conn)
        .optional()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestDb;

    fn attempt(id: &str, user: &str, at: i64) -> NotificationRecord {
        NotificationRecord {
            id: id.to_owned(),
            user: user.to_owned(),
            task_id: "t1".to_owned(),
            event: "task_started".to_owned(),
            channel: "chat".to_owned(),
            target: "https://hooks.example".to_owned(),
            message: "Your CRM task has started".to_owned(),
            attempt: 1,
            outcome: "delivered".to_owned(),
            detail: Some("200".to_owned()),
            created_at: at,
        }
    }

    /// Preferences are saved, replaced and read back; the log lists a user's own attempts
    /// newest first, on SQLite and PostgreSQL.
    #[test]
    fn preferences_and_the_delivery_log_round_trip() {
        for test_db in TestDb::all() {
            let backend = test_db.backend;
            let database = test_db.open();
            let mut conn = database.conn().unwrap();
            crate::insert_token(&mut conn, "tok", "ada", "hash", 1).unwrap();
            assert_eq!(notification_preferences(&mut conn, "ada").unwrap(), None, "{backend:?}");
            save_notification_preferences(&mut conn, "ada", "{\"a\":1}", 2).unwrap();
            save_notification_preferences(&mut conn, "ada", "{\"a\":2}", 3).unwrap();
            assert_eq!(notification_preferences(&mut conn, "ada").unwrap().as_deref(), Some("{\"a\":2}"));

            insert_notification(&mut conn, &attempt("n1", "ada", 10)).unwrap();
            insert_notification(&mut conn, &attempt("n2", "ada", 20)).unwrap();
            insert_notification(&mut conn, &attempt("n3", "bob", 30)).unwrap();
            let listed = list_notifications(&mut conn, "ada", 10).unwrap();
            let ids: Vec<&str> = listed.iter().map(|r| r.id.as_str()).collect();
            assert_eq!(ids, ["n2", "n1"], "{backend:?}");
            assert_eq!(listed[1], attempt("n1", "ada", 10));
            assert_eq!(list_notifications(&mut conn, "ada", 1).unwrap().len(), 1);
        }
    }

    /// Subscriptions are stored (a second one for the same endpoint updates the keys and
    /// keeps the id), listed per user and deleted only by their owner; the VAPID key is made
    /// once.
    #[test]
    fn push_subscriptions_and_the_vapid_key_round_trip() {
        for test_db in TestDb::all() {
            let backend = test_db.backend;
            let database = test_db.open();
            let mut conn = database.conn().unwrap();
            crate::insert_token(&mut conn, "tok", "ada", "hash", 1).unwrap();
            let first = PushSubscriptionRecord {
                id: "s1".to_owned(),
                user: "ada".to_owned(),
                endpoint: "https://push.example/1".to_owned(),
                p256dh: "k1".to_owned(),
                auth: "a1".to_owned(),
                created_at: 5,
            };
            assert_eq!(save_push_subscription(&mut conn, &first).unwrap(), first, "{backend:?}");
            let again =
                PushSubscriptionRecord { id: "s2".to_owned(), p256dh: "k2".to_owned(), created_at: 9, ..first.clone() };
            let stored = save_push_subscription(&mut conn, &again).unwrap();
            assert_eq!((stored.id.as_str(), stored.p256dh.as_str(), stored.created_at), ("s1", "k2", 5));
            assert_eq!(push_subscriptions(&mut conn, "ada").unwrap(), [stored]);
            assert!(!delete_push_subscription(&mut conn, "bob", "s1").unwrap());
            assert!(delete_push_subscription(&mut conn, "ada", "s1").unwrap());
            assert!(push_subscriptions(&mut conn, "ada").unwrap().is_empty());

            assert_eq!(vapid_private_key(&mut conn, "first", 1).unwrap(), "first");
            assert_eq!(vapid_private_key(&mut conn, "second", 2).unwrap(), "first");
        }
    }

    /// A task's estimate at start is kept once (a second one is ignored) and goes with the
    /// task.
    #[test]
    fn the_estimate_at_start_is_kept_once() {
        for test_db in TestDb::all() {
            let backend = test_db.backend;
            let database = test_db.open();
            let mut conn = database.conn().unwrap();
            let task = crate::NewTask {
                id: "t1".to_owned(),
                owner: "ada".to_owned(),
                title: "CRM".to_owned(),
                complexity: 1,
                restarted_from: None,
                created_at: 1,
                steps: Vec::new(),
                start: None,
                idempotency: None,
            };
            crate::insert_task(&mut conn, &task).unwrap();
            let task = task.id;
            assert_eq!(start_estimate(&mut conn, &task).unwrap(), None, "{backend:?}");
            record_start_estimate(&mut conn, &task, 900, 1).unwrap();
            record_start_estimate(&mut conn, &task, 30, 2).unwrap();
            assert_eq!(start_estimate(&mut conn, &task).unwrap(), Some(900), "{backend:?}");
            assert!(
                record_start_estimate(&mut conn, "no-such-task", 5, 3).is_err(),
                "{backend:?}: the task must exist"
            );
        }
    }
}
