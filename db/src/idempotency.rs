//! Idempotency keys of task creation: the key a client sent with a new task is stored in the
//! transaction that stores the task ([`crate::insert_task`]), so that a retry of the same
//! request finds the task instead of making a second one.

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error};

use crate::connection::AnyConnection;
use crate::schema::idempotency_keys;
use crate::DbError;

/// The key a new task was asked for with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// The client's key, unique per owner within the window.
    pub key: String,
    /// A digest of the request, to tell a retry from another request with the same key.
    pub request_hash: String,
    /// Keys stored before this (ms since the epoch) are past the window: such a key is free.
    pub expired_before: i64,
}

/// The task a key made, and the request it was made by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedTask {
    /// The task.
    pub task_id: String,
    /// The digest of the request that made it.
    pub request_hash: String,
}

/// The task `owner`'s `key` made, unless there is none or it is past the window.
pub fn keyed_task(conn: &mut AnyConnection, owner: &str, key: &IdempotencyKey) -> Result<Option<KeyedTask>, DbError> {
    let row: Option<(String, String)> = idempotency_keys::table
        .find((owner, &key.key))
        .filter(idempotency_keys::created_at.ge(key.expired_before))
        .select((idempotency_keys::task_id, idempotency_keys::request_hash))
        .first(conn)
        .optional()?;
    Ok(row.map(|(task_id, request_hash)| KeyedTask { task_id, request_hash }))
}

/// Stores `key` for the task being inserted, inside its transaction. A live row for the
/// same key (a concurrent request with it won) is [`DbError::KeyTaken`].
pub(crate) fn store_key(
    conn: &mut AnyConnection,
    owner: &str,
    task_id: &str,
    key: &IdempotencyKey,
    now: i64,
) -> Result<(), DbError> {
    diesel::delete(idempotency_keys::table.find((owner, &key.key)))
        .filter(idempotency_keys::created_at.lt(key.expired_before))
        .execute(conn)?;
    let inserted = diesel::insert_into(idempotency_keys::table)
        .values((
            idempotency_keys::owner.eq(owner),
            idempotency_keys::idempotency_key.eq(&key.key),
            idempotency_keys::request_hash.eq(&key.request_hash),
            idempotency_keys::task_id.eq(task_id),
            idempotency_keys::created_at.eq(now),
        ))
        .execute(conn);
    match inserted {
        Ok(_) => Ok(()),
        Err(Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => Err(DbError::KeyTaken(key.key.clone())),
        Err(error) => Err(error.into()),
    }
}

/// Forgets the keys stored before `before`; returns how many.
pub fn forget_idempotency_keys(conn: &mut AnyConnection, before: i64) -> Result<usize, DbError> {
    Ok(diesel::delete(idempotency_keys::table.filter(idempotency_keys::created_at.lt(before))).execute(conn)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{plan, OWNER};
    use crate::testing::TestDb;
    use crate::{insert_task, NewTask};

    fn key(hash: &str, expired_before: i64) -> IdempotencyKey {
        IdempotencyKey { key: "k1".into(), request_hash: hash.into(), expired_before }
    }

    /// The key is stored with its task or not at all; a second task with a live key is
    /// refused (and not stored), one with a key past its window takes the key over.
    #[test]
    fn a_key_is_stored_with_its_task_once_per_window() {
        for test_db in TestDb::all() {
            let backend = test_db.backend;
            let database = test_db.open();
            let conn = &mut *database.conn().unwrap();
            let keyed = |id: &str, hash: &str, created_at: i64, expired_before: i64| NewTask {
                idempotency: Some(key(hash, expired_before)),
                created_at,
                ..plan(id)
            };
            assert_eq!(keyed_task(conn, OWNER, &key("h", 0)).unwrap(), None);
            insert_task(conn, &keyed("t1", "h1", 100, 0)).unwrap();
            let found = keyed_task(conn, OWNER, &key("h", 0)).unwrap();
            assert_eq!(found, Some(KeyedTask { task_id: "t1".into(), request_hash: "h1".into() }), "{backend:?}");
            assert_eq!(keyed_task(conn, "bob", &key("h", 0)).unwrap(), None, "{backend:?}: per owner");

            let taken = insert_task(conn, &keyed("t2", "h2", 200, 0));
            assert!(matches!(taken, Err(DbError::KeyTaken(_))), "{backend:?}: {taken:?}");
            assert!(crate::load_task(conn, "t2").unwrap().is_none(), "{backend:?}: the task went with its key");

            assert_eq!(keyed_task(conn, OWNER, &key("h", 101)).unwrap(), None, "{backend:?}: past the window");
            insert_task(conn, &keyed("t3", "h3", 300, 101)).unwrap();
            let found = keyed_task(conn, OWNER, &key("h", 101)).unwrap().map(|k| k.task_id);
            assert_eq!(found.as_deref(), Some("t3"), "{backend:?}");
            assert_eq!(forget_idempotency_keys(conn, 300).unwrap(), 0);
            assert_eq!(forget_idempotency_keys(conn, 301).unwrap(), 1, "{backend:?}");
        }
    }
}
