//! Task ownership. A running task is leased to one server instance (owner id, expiry, and a
//! fencing token bumped on every acquisition); every write carries the token it was given,
//! so a server that lost its lease cannot overwrite the new owner's state.

use diesel::prelude::*;

use crate::connection::AnyConnection;
use crate::connection::Database;
use crate::model::StoredTask;
use crate::schema::{servers, tasks};
use crate::tasks::{assemble, leased_steps, leased_tasks, load_tasks, LIVE};
use crate::DbError;

/// Takes the lease on one task if nobody else holds it (free, expired, or already
/// `owner`'s). Returns the new token, or `None` if another live server holds it.
pub fn acquire_lease(
    conn: &mut AnyConnection,
    task_id: &str,
    owner: &str,
    ttl_ms: i64,
    now: i64,
) -> Result<Option<i64>, DbError> {
    Ok(diesel::update(tasks::table.find(task_id))
        .filter(tasks::lease_owner.is_null().or(tasks::lease_owner.eq(owner)).or(tasks::lease_expires_at.lt(now)))
        .set((
            tasks::lease_owner.eq(owner),
            tasks::lease_expires_at.eq(now + ttl_ms),
            tasks::lease_token.eq(tasks::lease_token + 1),
        ))
        .returning(tasks::lease_token)
        .get_result(conn)
        .optional()?)
}

/// Takes every live task (running, paused, waiting for approval) that is free, expired or
/// already `owner`'s, and loads them: what a starting server resumes. The task rows and
/// the step rows are read on two connections at once (a start may resume 100,000 tasks).
pub fn acquire_live_tasks(database: &Database, owner: &str, ttl_ms: i64, now: i64) -> Result<Vec<StoredTask>, DbError> {
    let mut conn = database.conn()?;
    diesel::update(tasks::table)
        .filter(tasks::status.eq_any(LIVE))
        .filter(tasks::lease_owner.is_null().or(tasks::lease_owner.eq(owner)).or(tasks::lease_expires_at.lt(now)))
        .set((
            tasks::lease_owner.eq(owner),
            tasks::lease_expires_at.eq(now + ttl_ms),
            tasks::lease_token.eq(tasks::lease_token + 1),
        ))
        .execute(&mut *conn)?;
    let (tasks, steps) = std::thread::scope(|scope| {
        let steps = scope.spawn(|| leased_steps(&mut *database.conn()?, owner));
        let tasks = leased_tasks(&mut conn, owner);
        (tasks, steps.join())
    });
    let (step_rows, substep_rows) = steps.map_err(|_| DbError::Corrupt("loading steps panicked".into()))??;
    assemble(tasks?, step_rows, substep_rows)
}

/// Takes every live task whose lease is free, or lapsed and another server's, and loads
/// them: what a server takes over from servers that stopped or are gone. Unlike
/// [`acquire_live_tasks`] it leaves `owner`'s own leases alone, lapsed or not (its actors
/// hold those tokens). Of servers sweeping at once, each task goes to one: the update
/// re-checks the lease on the row it locks.
pub fn acquire_orphaned_tasks(
    conn: &mut AnyConnection,
    owner: &str,
    ttl_ms: i64,
    now: i64,
) -> Result<Vec<StoredTask>, DbError> {
    let taken: Vec<String> = diesel::update(tasks::table)
        .filter(tasks::status.eq_any(LIVE))
        .filter(tasks::lease_owner.is_null().or(tasks::lease_owner.ne(owner).and(tasks::lease_expires_at.lt(now))))
        .set((
            tasks::lease_owner.eq(owner),
            tasks::lease_expires_at.eq(now + ttl_ms),
            tasks::lease_token.eq(tasks::lease_token + 1),
        ))
        .returning(tasks::id)
        .get_results(conn)?;
    load_tasks(conn, &taken)
}

/// Lets go of every lease `owner` holds (a server shutting down cleanly): the tasks are
/// free for any server at once. The tokens stay, so the next holder's are newer.
pub(crate) fn release_leases(conn: &mut AnyConnection, owner: &str) -> Result<usize, DbError> {
    Ok(diesel::update(tasks::table)
        .filter(tasks::lease_owner.eq(owner))
        .set((tasks::lease_owner.eq(None::<String>), tasks::lease_expires_at.eq(None::<i64>)))
        .execute(conn)?)
}

/// A task's lease as it stands: who holds it, until when, and where that server serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    /// The holding server's instance id.
    pub server_id: String,
    /// When the lease lapses unless renewed, ms since the epoch.
    pub expires_at: i64,
    /// The holder's HTTP address from the membership, if it has one.
    pub address: Option<String>,
}

/// Who holds `task_id`'s lease; `None` for a task that is missing or whose lease is free.
pub fn lease_holder(conn: &mut AnyConnection, task_id: &str) -> Result<Option<LeaseHolder>, DbError> {
    let lease: Option<(Option<String>, Option<i64>)> =
        tasks::table.find(task_id).select((tasks::lease_owner, tasks::lease_expires_at)).first(conn).optional()?;
    let Some((Some(server_id), Some(expires_at))) = lease else { return Ok(None) };
    let address: Option<Option<String>> =
        servers::table.find(&server_id).select(servers::address).first(conn).optional()?;
    Ok(Some(LeaseHolder { server_id, expires_at, address: address.flatten() }))
}

/// Extends every lease `owner` holds on a live task; returns how many.
pub fn renew_leases(conn: &mut AnyConnection, owner: &str, ttl_ms: i64, now: i64) -> Result<usize, DbError> {
    Ok(diesel::update(tasks::table)
        .filter(tasks::lease_owner.eq(owner))
        .filter(tasks::status.eq_any(LIVE))
        .set(tasks::lease_expires_at.eq(now + ttl_ms))
        .execute(conn)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::started;
    use crate::testing::TestDb;
    use crate::TaskStatus;

    #[test]
    fn orphans_are_live_tasks_whose_lease_lapsed_or_was_released_and_never_ones_own() {
        let ttl = 60_000;
        for test_db in TestDb::all() {
            let backend = test_db.backend;
            let database = test_db.open();
            let conn = &mut *database.conn().unwrap();
            let token = started(conn, "t"); // leased to "test" until 60,002
            let taken_by = |conn: &mut AnyConnection, owner: &str, now: i64| -> Vec<(String, i64)> {
                let taken = acquire_orphaned_tasks(conn, owner, ttl, now).unwrap();
                taken.into_iter().map(|t| (t.task.id, t.task.lease_token)).collect()
            };
            assert_eq!(taken_by(conn, "test", 70_000), [], "{backend:?}: one's own lapsed lease is left to its actor");
            assert_eq!(taken_by(conn, "other", 60_002), [], "{backend:?}: a live lease is left alone");
            assert_eq!(
                taken_by(conn, "other", 60_003),
                [("t".to_owned(), token + 1)],
                "{backend:?}: a lapsed one moves"
            );
            assert_eq!(taken_by(conn, "third", 60_004), [], "{backend:?}: taken once");
            assert_eq!(release_leases(conn, "other").unwrap(), 1, "{backend:?}");
            assert_eq!(taken_by(conn, "third", 60_005), [("t".to_owned(), token + 2)], "{backend:?}: free at once");
        }
    }

    #[test]
    fn live_statuses_match_the_model() {
        let from_model: Vec<&str> = TaskStatus::ALL.iter().filter(|s| s.is_live()).map(|s| s.as_str()).collect();
        assert_eq!(from_model, LIVE);
    }
}
