//! Task ownership. A running task is leased to one server instance (owner id, expiry, and a
//! fencing token bumped on every acquisition); every write carries the token it was given,
//! so a server that lost its lease cannot overwrite the new owner's state.

use diesel::prelude::*;

use crate::connection::AnyConnection;
use crate::connection::Database;
use crate::model::StoredTask;
use crate::schema::tasks;
use crate::tasks::{assemble, leased_steps, leased_tasks, LIVE};
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
    use super::LIVE;
    use crate::TaskStatus;

    #[test]
    fn live_statuses_match_the_model() {
        let from_model: Vec<&str> = TaskStatus::ALL.iter().filter(|s| s.is_live()).map(|s| s.as_str()).collect();
        assert_eq!(from_model, LIVE);
    }
}
