//! The latest estimate of each live task, as the server running it last published it,
//! written with the progress flush (PostgreSQL only: it is for the other servers of a
//! cluster, which do not run the task and so cannot estimate it). A reader counts a running
//! task's estimate down from `made_at` itself.

use diesel::prelude::*;

use crate::connection::AnyConnection;
use crate::rows::to_i32;
use crate::schema::{task_estimates, tasks};
use crate::tasks::{ID_CHUNK, LIVE};
use crate::DbError;

/// A task's estimate as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEstimate {
    /// The task.
    pub task_id: String,
    /// Most likely work remaining, ms.
    pub remaining_ms: i64,
    /// The 80 % range of the work remaining, ms.
    pub range_ms: (i64, i64),
    /// `low`, `medium` or `high`.
    pub confidence: String,
    /// Each step not done yet, in order, with its expected work remaining, ms.
    pub steps: Vec<(u32, i64)>,
    /// When it was made, ms since the epoch.
    pub made_at: i64,
}

type EstimateRow = (String, i64, i64, i64, String, String, i64);

/// Replaces the stored estimates of these tasks.
pub(crate) fn save_estimates(conn: &mut AnyConnection, estimates: &[StoredEstimate]) -> Result<(), DbError> {
    if estimates.is_empty() {
        return Ok(());
    }
    conn.transaction(|conn| {
        for chunk in estimates.chunks(ID_CHUNK) {
            let ids: Vec<&str> = chunk.iter().map(|e| e.task_id.as_str()).collect();
            diesel::delete(task_estimates::table.filter(task_estimates::task_id.eq_any(&ids))).execute(conn)?;
            // One row per statement: Diesel's multi-backend connection has no batch insert,
            // and a flush carries only the estimates that moved.
            for e in chunk {
                diesel::insert_into(task_estimates::table)
                    .values((
                        task_estimates::task_id.eq(&e.task_id),
                        task_estimates::remaining_ms.eq(e.remaining_ms),
                        task_estimates::low_ms.eq(e.range_ms.0),
                        task_estimates::high_ms.eq(e.range_ms.1),
                        task_estimates::confidence.eq(&e.confidence),
                        task_estimates::steps.eq(encode_steps(&e.steps)),
                        task_estimates::made_at.eq(e.made_at),
                    ))
                    .execute(conn)?;
            }
        }
        Ok(())
    })
}

/// The stored estimates of those of `ids` that have one.
pub fn load_estimates(conn: &mut AnyConnection, ids: &[String]) -> Result<Vec<StoredEstimate>, DbError> {
    let mut found = Vec::new();
    for chunk in ids.chunks(ID_CHUNK) {
        let rows: Vec<EstimateRow> = task_estimates::table
            .filter(task_estimates::task_id.eq_any(chunk))
            .select((
                task_estimates::task_id,
                task_estimates::remaining_ms,
                task_estimates::low_ms,
                task_estimates::high_ms,
                task_estimates::confidence,
                task_estimates::steps,
                task_estimates::made_at,
            ))
            .load(conn)?;
        for (task_id, remaining_ms, low_ms, high_ms, confidence, steps, made_at) in rows {
            let steps = decode_steps(&steps)
                .map_err(|e| DbError::Corrupt(format!("task_estimates.steps of {task_id}: {e}")))?;
            found.push(StoredEstimate {
                task_id,
                remaining_ms,
                range_ms: (low_ms, high_ms),
                confidence,
                steps,
                made_at,
            });
        }
    }
    Ok(found)
}

fn encode_steps(steps: &[(u32, i64)]) -> String {
    steps.iter().map(|(order, ms)| format!("{}:{ms}", to_i32(*order))).collect::<Vec<_>>().join(" ")
}

fn decode_steps(text: &str) -> Result<Vec<(u32, i64)>, String> {
    text.split_whitespace()
        .map(|pair| {
            pair.split_once(':')
                .and_then(|(order, ms)| Some((order.parse().ok()?, ms.parse().ok()?)))
                .ok_or_else(|| format!("`{pair}` is not order:expected_ms"))
        })
        .collect()
}

/// Deletes the stored estimates of tasks that are no longer live (ended, or gone): only a
/// live task's estimate is ever read. Returns how many.
pub fn forget_ended_estimates(conn: &mut AnyConnection) -> Result<usize, DbError> {
    let live = tasks::table.filter(tasks::status.eq_any(LIVE)).select(tasks::id);
    Ok(diesel::delete(task_estimates::table.filter(task_estimates::task_id.ne_all(live))).execute(conn)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestDb;

    #[test]
    fn the_latest_estimate_of_each_task_is_kept() {
        for test_db in TestDb::all() {
            let database = test_db.open();
            let conn = &mut *database.conn().unwrap();
            let estimate = |task: &str, remaining_ms, made_at| StoredEstimate {
                task_id: task.into(),
                remaining_ms,
                range_ms: (remaining_ms / 2, remaining_ms * 2),
                confidence: "medium".into(),
                steps: vec![(2, remaining_ms / 4), (3, remaining_ms * 3 / 4)],
                made_at,
            };
            save_estimates(conn, &[estimate("a", 60_000, 1), estimate("b", 8_000, 1)]).unwrap();
            save_estimates(conn, &[estimate("a", 40_000, 2)]).unwrap();
            let mut loaded = load_estimates(conn, &["a".into(), "b".into(), "c".into()]).unwrap();
            loaded.sort_by(|x, y| x.task_id.cmp(&y.task_id));
            assert_eq!(loaded, [estimate("a", 40_000, 2), estimate("b", 8_000, 1)], "{:?}", test_db.backend);
        }
    }

    /// Estimates of tasks that are not live (here: not even stored) are forgotten; a live
    /// task's is kept.
    #[test]
    fn estimates_of_tasks_no_longer_live_are_forgotten() {
        for test_db in TestDb::all() {
            let database = test_db.open();
            let conn = &mut *database.conn().unwrap();
            crate::fixtures::started(conn, "live");
            let estimate = |task: &str| StoredEstimate {
                task_id: task.into(),
                remaining_ms: 1_000,
                range_ms: (500, 2_000),
                confidence: "low".into(),
                steps: vec![(1, 1_000)],
                made_at: 1,
            };
            save_estimates(conn, &[estimate("live"), estimate("ended")]).unwrap();
            assert_eq!(forget_ended_estimates(conn).unwrap(), 1, "{:?}", test_db.backend);
            let kept = load_estimates(conn, &["live".into(), "ended".into()]).unwrap();
            assert_eq!(kept, [estimate("live")], "{:?}", test_db.backend);
        }
    }
}
