//! The queue of tasks waiting for room. Each server runs at most its
//! `runtime.max_running_tasks`; a pending task asked to start is queued (`queued_at`), and a
//! server with room claims the oldest queued tasks by leasing them, then starts them. On
//! PostgreSQL the claim skips rows another server is claiming at the same moment (`FOR
//! UPDATE SKIP LOCKED`), so servers never wait on each other or claim a task twice; on
//! SQLite the one server's transactions take turns. Queuing rings the doorbell, so a server
//! with room hears of the task at once.

use std::collections::HashMap;

use diesel::prelude::*;

use crate::connection::AnyConnection;
use crate::doorbell::{send, Ring};
use crate::model::TaskStatus;
use crate::schema::tasks;
use crate::DbError;

/// A task a server claimed from the queue: it holds the lease and starts it next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedTask {
    /// The task.
    pub task_id: String,
    /// Its owner, whom the start is applied as.
    pub owner: String,
}

/// Queues `task_id` (pending, and not queued already) at `now` and rings for it. Returns
/// whether it was queued now. `queued_at` is the queue's order: it is `now`, or a
/// millisecond after the newest queued task if that is later, so tasks queued within one
/// millisecond keep the order they were queued in (on one server; two servers queuing at
/// the same instant may tie, and then the id decides).
///
/// A task `server` holds queued since its creation ([`crate::StartClaim`]) is released to
/// the queue instead: the server has no room for it after all, so another may claim it at once.
pub fn enqueue(conn: &mut AnyConnection, task_id: &str, server: &str, now: i64) -> Result<bool, DbError> {
    conn.transaction(|conn| {
        write_first(conn)?;
        let queued_at = next_in_queue(conn, now)?;
        let queued = diesel::update(tasks::table.find(task_id))
            .filter(tasks::status.eq(TaskStatus::Pending.as_str()))
            .filter(tasks::queued_at.is_null())
            .set(tasks::queued_at.eq(queued_at))
            .execute(conn)?;
        let released = diesel::update(tasks::table.find(task_id))
            .filter(tasks::status.eq(TaskStatus::Pending.as_str()))
            .filter(tasks::queued_at.is_not_null())
            .filter(tasks::lease_owner.eq(server))
            .set((tasks::lease_owner.eq(None::<String>), tasks::lease_expires_at.eq(None::<i64>)))
            .execute(conn)?;
        if queued + released > 0 {
            send(conn, &Ring::Queue)?;
        }
        Ok(queued + released > 0)
    })
}

/// The `queued_at` a task queued at `now` gets: `now`, or a millisecond after the newest
/// queued task if that is later.
pub(crate) fn next_in_queue(conn: &mut AnyConnection, now: i64) -> Result<i64, DbError> {
    let newest: Option<i64> = tasks::table
        .filter(tasks::status.eq(TaskStatus::Pending.as_str()))
        .filter(tasks::queued_at.is_not_null())
        .select(diesel::dsl::max(tasks::queued_at))
        .first(conn)?;
    Ok(newest.map_or(now, |newest| now.max(newest + 1)))
}

/// Releases to the queue the tasks `server` was starting when it stopped (queued, pending,
/// leased to it): what a restarted server does before it claims, so that it takes them
/// back at once instead of after their lease lapses. Returns how many.
pub fn release_own_claims(conn: &mut AnyConnection, server: &str) -> Result<usize, DbError> {
    Ok(diesel::update(tasks::table)
        .filter(tasks::status.eq(TaskStatus::Pending.as_str()))
        .filter(tasks::queued_at.is_not_null())
        .filter(tasks::lease_owner.eq(server))
        .set((tasks::lease_owner.eq(None::<String>), tasks::lease_expires_at.eq(None::<i64>)))
        .execute(conn)?)
}

/// Claims for `server` up to `room` of the oldest queued tasks whose lease is free or lapsed
/// (a claimer that died before starting one), leasing each until `now + ttl_ms`.
pub fn claim_queued(
    conn: &mut AnyConnection,
    server: &str,
    ttl_ms: i64,
    now: i64,
    room: usize,
) -> Result<Vec<ClaimedTask>, DbError> {
    if room == 0 {
        return Ok(Vec::new());
    }
    let limit = i64::try_from(room).unwrap_or(i64::MAX);
    conn.transaction(|conn| {
        write_first(conn)?;
        let waiting = tasks::table
            .filter(tasks::status.eq(TaskStatus::Pending.as_str()))
            .filter(tasks::queued_at.is_not_null())
            .filter(tasks::lease_owner.is_null().or(tasks::lease_expires_at.lt(now)))
            .order((tasks::queued_at.asc(), tasks::id.asc()))
            .limit(limit)
            .select((tasks::id, tasks::owner));
        let claimed: Vec<(String, String)> = match conn {
            AnyConnection::Postgresql(pg) => waiting.for_update().skip_locked().load(pg)?,
            AnyConnection::Sqlite(sqlite) => waiting.load(sqlite)?,
        };
        let ids: Vec<&str> = claimed.iter().map(|(id, _)| id.as_str()).collect();
        diesel::update(tasks::table.filter(tasks::id.eq_any(&ids)))
            .set((
                tasks::lease_owner.eq(server),
                tasks::lease_expires_at.eq(now + ttl_ms),
                tasks::lease_token.eq(tasks::lease_token + 1),
            ))
            .execute(conn)?;
        Ok(claimed.into_iter().map(|(task_id, owner)| ClaimedTask { task_id, owner }).collect())
    })
}

/// Makes a SQLite transaction that reads before it writes a writer from its start. Else the
/// read takes a snapshot, and if another connection writes before this one's first write,
/// that write fails at once as busy (SQLite cannot move a reader's snapshot forward; the busy
/// timeout does not help). An UPDATE takes the write lock even when it changes no row.
fn write_first(conn: &mut AnyConnection) -> Result<(), DbError> {
    if let AnyConnection::Sqlite(sqlite) = conn {
        diesel::update(tasks::table.filter(tasks::id.eq("")))
            .set(tasks::queued_at.eq(tasks::queued_at))
            .execute(sqlite)?;
    }
    Ok(())
}

/// The place in the queue (1 = next to start) of each of `ids` that is queued.
pub fn queue_places(conn: &mut AnyConnection, ids: &[String]) -> Result<HashMap<String, u32>, DbError> {
    let queued: Vec<(String, Option<i64>)> = tasks::table
        .filter(tasks::id.eq_any(ids))
        .filter(tasks::status.eq(TaskStatus::Pending.as_str()))
        .filter(tasks::queued_at.is_not_null())
        .select((tasks::id, tasks::queued_at))
        .load(conn)?;
    let mut places = HashMap::with_capacity(queued.len());
    for (id, queued_at) in queued {
        let queued_at = queued_at.unwrap_or_default();
        let ahead: i64 = tasks::table
            .filter(tasks::status.eq(TaskStatus::Pending.as_str()))
            .filter(tasks::queued_at.lt(queued_at).or(tasks::queued_at.eq(queued_at).and(tasks::id.lt(&id))))
            .count()
            .get_result(conn)?;
        places.insert(id, u32::try_from(ahead + 1).unwrap_or(u32::MAX));
    }
    Ok(places)
}

/// How many tasks wait in the queue.
pub fn queued_tasks(conn: &mut AnyConnection) -> Result<u64, DbError> {
    let count: i64 = tasks::table
        .filter(tasks::status.eq(TaskStatus::Pending.as_str()))
        .filter(tasks::queued_at.is_not_null())
        .count()
        .get_result(conn)?;
    Ok(u64::try_from(count).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::plan;
    use crate::testing::TestDb;
    use crate::{acquire_lease, insert_task, NewTask, StartClaim};

    const TTL: i64 = 60_000;

    fn claimed(conn: &mut AnyConnection, server: &str, now: i64, room: usize) -> Vec<String> {
        claim_queued(conn, server, TTL, now, room).unwrap().into_iter().map(|c| c.task_id).collect()
    }

    /// Queued tasks are claimed oldest first, each once, up to the room asked; a claim whose
    /// server died before starting the task lapses with its lease; places count from 1.
    #[test]
    fn the_queue_is_claimed_oldest_first_and_once() {
        for test_db in TestDb::all() {
            let backend = test_db.backend;
            let database = test_db.open();
            let conn = &mut *database.conn().unwrap();
            for id in ["a", "b", "c", "d"] {
                insert_task(conn, &plan(id)).unwrap();
            }
            assert!(enqueue(conn, "c", "s1", 10).unwrap());
            assert!(enqueue(conn, "b", "s1", 20).unwrap());
            assert!(enqueue(conn, "a", "s1", 20).unwrap(), "{backend:?}: in the same millisecond, after b");
            assert!(!enqueue(conn, "b", "s1", 30).unwrap(), "{backend:?}: queued once, keeping its place");
            assert_eq!(queued_tasks(conn).unwrap(), 3);
            let all: Vec<String> = ["a", "b", "c", "d"].map(str::to_owned).to_vec();
            let places = queue_places(conn, &all).unwrap();
            assert_eq!(places, HashMap::from([("c".into(), 1), ("b".into(), 2), ("a".into(), 3)]), "{backend:?}");

            assert_eq!(claimed(conn, "one", 100, 0), Vec::<String>::new());
            assert_eq!(claimed(conn, "one", 100, 2), ["c", "b"], "{backend:?}: the oldest first");
            assert_eq!(claimed(conn, "two", 100, 5), ["a"], "{backend:?}: a claimed task is not claimed again");
            assert!(acquire_lease(conn, "b", "one", TTL, 101).unwrap().is_some(), "{backend:?}: the claimer's lease");
            assert_eq!(claimed(conn, "two", 100 + TTL + 1, 5), ["c", "a"], "{backend:?}: unstarted claims lapse");
        }
    }

    /// A task created to start at once is queued and held by its creator in the same
    /// transaction: no other server claims it while the lease lives; its creator gives it
    /// to the queue when it has no room, or takes it back at once after a restart.
    #[test]
    fn a_task_created_to_start_is_queued_and_held_by_its_creator() {
        for test_db in TestDb::all() {
            let backend = test_db.backend;
            let database = test_db.open();
            let conn = &mut *database.conn().unwrap();
            insert_task(conn, &plan("old")).unwrap();
            assert!(enqueue(conn, "old", "s1", 50).unwrap());
            let starting = |id: &str| NewTask {
                start: Some(StartClaim { server: "maker".into(), lease_expires_at: 10 + TTL }),
                created_at: 10,
                ..plan(id)
            };
            insert_task(conn, &starting("new")).unwrap();
            insert_task(conn, &starting("full")).unwrap();
            let places = queue_places(conn, &["old".into(), "new".into(), "full".into()]).unwrap();
            assert_eq!(
                places,
                HashMap::from([("old".into(), 1), ("new".into(), 2), ("full".into(), 3)]),
                "{backend:?}"
            );
            assert_eq!(claimed(conn, "other", 20, 5), ["old"], "{backend:?}: the creator's lease keeps the others off");

            assert!(enqueue(conn, "full", "maker", 30).unwrap(), "{backend:?}: released to the queue");
            assert_eq!(claimed(conn, "other", 30, 5), ["full"], "{backend:?}");

            assert_eq!(release_own_claims(conn, "someone").unwrap(), 0);
            assert_eq!(release_own_claims(conn, "maker").unwrap(), 1, "{backend:?}: after a restart");
            assert_eq!(claimed(conn, "maker", 40, 5), ["new"], "{backend:?}");
        }
    }
}
