//! Task ownership. A running task is leased to one server instance (owner id, expiry, and a
//! fencing token bumped on every acquisition); every write carries the token it was given,
//! so a server that lost its lease cannot overwrite the new owner's state.

use diesel::prelude::*;

use crate::connection::AnyConnection;
use crate::model::StoredTask;
use crate::queries::load_leased;
use crate::schema::tasks;
use crate::DbError;

const LIVE: [&str; 3] = ["running", "paused", "approval"];

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
/// already `owner`'s, and loads them: what a starting server resumes.
pub fn acquire_live_tasks(
    conn: &mut AnyConnection,
    owner: &str,
    ttl_ms: i64,
    now: i64,
) -> Result<Vec<StoredTask>, DbError> {
    conn.transaction(|conn| {
        diesel::update(tasks::table)
            .filter(tasks::status.eq_any(LIVE))
            .filter(tasks::lease_owner.is_null().or(tasks::lease_owner.eq(owner)).or(tasks::lease_expires_at.lt(now)))
            .set((
                tasks::lease_owner.eq(owner),
                tasks::lease_expires_at.eq(now + ttl_ms),
                tasks::lease_token.eq(tasks::lease_token + 1),
            ))
            .execute(conn)?;
        load_leased(conn, owner)
    })
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
