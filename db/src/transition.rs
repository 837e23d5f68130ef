//! State transitions: a task's fenced row, its changed steps, the events appended to its
//! gap-free log and their `task_progress` rows, written in one transaction. Every write is
//! fenced: it goes through only while the task's lease token is the one the writer holds.

use diesel::prelude::*;

use crate::connection::AnyConnection;
use crate::model::{StepRecord, StepRunRecord, StepStatus, TaskRecord};
use crate::rows::{encode_marks, to_i32, to_i64, EventRow, ProgressRow, Rows, StepChanges, TaskChanges};
use crate::schema::{step_runs, steps, substeps, tasks};
use crate::DbError;

/// An event to append to a task's log.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// What happened, e.g. `step_completed`.
    pub kind: &'static str,
    /// The step it concerns.
    pub step: Option<u32>,
    /// Details as JSON text.
    pub detail: Option<String>,
    /// The step's percent and status, also recorded in `task_progress` (when `step` is set).
    pub progress: Option<(u8, StepStatus)>,
}

/// One state transition of one task, written in one transaction.
#[derive(Debug)]
pub struct Commit<'a> {
    /// The task.
    pub task_id: &'a str,
    /// The lease token the writer holds; the write is refused if it is stale.
    pub lease_token: i64,
    /// When, ms since the epoch.
    pub at: i64,
    /// The task row's new state, if it changed.
    pub task: Option<&'a TaskRecord>,
    /// Steps whose state changed (their substeps are written too).
    pub steps: Vec<&'a StepRecord>,
    /// Events to append, in order.
    pub events: Vec<NewEvent>,
    /// A completed run for the estimator's history.
    pub step_run: Option<StepRunRecord>,
    /// The task has ended: give its lease up in the same transaction.
    pub release_lease: bool,
}

/// Writes a transition: the fenced task row, the changed steps, the events (with
/// consecutive seqs) and the `task_progress` rows of those that carry a percent (with
/// consecutive ids). Returns the seq of the last event.
pub fn commit(conn: &mut AnyConnection, change: &Commit<'_>) -> Result<i64, DbError> {
    conn.transaction(|conn| {
        let counts = Reserve { events: to_i64(change.events.len()), progress: progress_rows(&change.events), logs: 0 };
        let counters = reserve(conn, change.task_id, change.lease_token, change.at, counts)?;
        if let Some(task) = change.task {
            diesel::update(tasks::table.find(change.task_id)).set(TaskChanges::from(task)).execute(conn)?;
        }
        for step in &change.steps {
            write_step(conn, change.task_id, step)?;
        }
        append_events(conn, change.task_id, &counters, &change.events, change.at)?;
        if let Some(run) = &change.step_run {
            insert_step_run(conn, run)?;
        }
        if change.release_lease {
            diesel::update(tasks::table.find(change.task_id))
                .set((tasks::lease_owner.eq(None::<String>), tasks::lease_expires_at.eq(None::<i64>)))
                .execute(conn)?;
        }
        Ok(counters.last_seq)
    })
}

fn insert_step_run(conn: &mut AnyConnection, run: &StepRunRecord) -> Result<(), DbError> {
    diesel::insert_into(step_runs::table)
        .values((
            step_runs::task_id.eq(&run.task_id),
            step_runs::step_order.eq(to_i32(run.step)),
            step_runs::attempt.eq(to_i32(run.attempt)),
            step_runs::step_key.eq(&run.step_key),
            step_runs::complexity.eq(to_i32(run.complexity)),
            step_runs::duration_ms.eq(run.duration_ms),
            step_runs::finished_at.eq(run.finished_at),
            step_runs::progress.eq(encode_marks(&run.progress)),
        ))
        .execute(conn)?;
    Ok(())
}

/// How many numbers of each of a task's counters a write takes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Reserve {
    /// Event seqs (`last_seq`).
    pub(crate) events: i64,
    /// `task_progress` ids (`last_progress_seq`).
    pub(crate) progress: i64,
    /// Log line seqs (`last_log_seq`).
    pub(crate) logs: i64,
}

/// A task's counters after a reservation: the last number of each that was taken.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Counters {
    pub(crate) last_seq: i64,
    pub(crate) last_progress_seq: i64,
    pub(crate) last_log_seq: i64,
}

/// Checks the fence and reserves `counts`; returns the new counters. One statement does
/// all three on the task row, which callers lock this way before any step row.
pub(crate) fn reserve(
    conn: &mut AnyConnection,
    task_id: &str,
    token: i64,
    at: i64,
    counts: Reserve,
) -> Result<Counters, DbError> {
    diesel::update(tasks::table.filter(tasks::id.eq(task_id)).filter(tasks::lease_token.eq(token)))
        .set((
            tasks::last_seq.eq(tasks::last_seq + counts.events),
            tasks::last_progress_seq.eq(tasks::last_progress_seq + counts.progress),
            tasks::last_log_seq.eq(tasks::last_log_seq + counts.logs),
            tasks::updated_at.eq(at),
        ))
        .returning((tasks::last_seq, tasks::last_progress_seq, tasks::last_log_seq))
        .get_result(conn)
        .optional()?
        .map(|(last_seq, last_progress_seq, last_log_seq)| Counters { last_seq, last_progress_seq, last_log_seq })
        .ok_or_else(|| DbError::LeaseLost { task_id: task_id.to_owned(), token })
}

/// How many of `events` carry a step's percent, and so get a `task_progress` row.
fn progress_rows(events: &[NewEvent]) -> i64 {
    to_i64(events.iter().filter(|event| event.step.is_some() && event.progress.is_some()).count())
}

fn write_step(conn: &mut AnyConnection, task_id: &str, step: &StepRecord) -> Result<(), DbError> {
    let order = to_i32(step.order);
    diesel::update(steps::table.find((task_id, order))).set(StepChanges::from(step)).execute(conn)?;
    for (position, substep) in step.substeps.iter().enumerate() {
        diesel::update(substeps::table.find((task_id, order, to_i32(position as u32))))
            .filter(substeps::done.ne(i32::from(substep.done)))
            .set(substeps::done.eq(i32::from(substep.done)))
            .execute(conn)?;
    }
    Ok(())
}

/// Inserts `events` with the seqs that end at `counters.last_seq`, and the `task_progress`
/// rows of those carrying a percent with the ids that end at `counters.last_progress_seq`.
fn append_events(
    conn: &mut AnyConnection,
    task_id: &str,
    counters: &Counters,
    events: &[NewEvent],
    at: i64,
) -> Result<(), DbError> {
    let mut rows = Rows::default();
    let mut next_id = counters.last_progress_seq - progress_rows(events) + 1;
    let first_seq = counters.last_seq - to_i64(events.len()) + 1;
    for (seq, event) in (first_seq..).zip(events) {
        let step_order = event.step.map(to_i32);
        rows.events.push(EventRow {
            task_id,
            seq,
            kind: event.kind,
            step_order,
            detail: event.detail.as_deref(),
            created_at: at,
        });
        if let (Some(step), Some((percent, status))) = (step_order, event.progress) {
            let (id, percent, status) = (next_id, percent.into(), status.as_str());
            rows.progress.push(ProgressRow { task_id, id, seq, step, percent, status, updated_at: at });
            next_id += 1;
        }
    }
    rows.insert(conn).map(drop)
}

/// Appends a `task_recovered` event to each task a restarted server took over, in one
/// transaction; returns each task's new seq (tasks whose lease moved on are left out).
pub fn record_recovered(
    conn: &mut AnyConnection,
    leases: &[(String, i64)],
    at: i64,
) -> Result<Vec<(String, i64)>, DbError> {
    let event = [NewEvent { kind: "task_recovered", step: None, detail: None, progress: None }];
    conn.transaction(|conn| {
        let mut recorded = Vec::with_capacity(leases.len());
        for (task_id, token) in leases {
            match reserve(conn, task_id, *token, at, Reserve { events: 1, ..Reserve::default() }) {
                Ok(counters) => {
                    append_events(conn, task_id, &counters, &event, at)?;
                    recorded.push((task_id.clone(), counters.last_seq));
                }
                Err(DbError::LeaseLost { .. }) => {}
                Err(other) => return Err(other),
            }
        }
        Ok(recorded)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{commit_events, event, history, started, RUNNING};
    use crate::testing::TestDb;

    /// A commit's progress rows take consecutive ids, each with its own event's seq; events
    /// without a percent (and recovery events) take none. On SQLite and PostgreSQL.
    #[test]
    fn commit_numbers_its_progress_rows_consecutively() {
        for test_db in TestDb::all() {
            let backend = test_db.backend;
            let database = test_db.open();
            let conn = &mut *database.conn().unwrap();
            let token = started(conn, "t");
            let events = vec![
                event("substep_done", Some(1), Some((50, RUNNING))),
                event("note", None, Some((50, RUNNING))),
                event("step_completed", Some(1), Some((100, StepStatus::Completed))),
                event("step_started", Some(2), Some((0, RUNNING))),
            ];
            assert_eq!(commit_events(conn, "t", token, None, vec![], events), 7, "{backend:?}");
            assert_eq!(record_recovered(conn, &[("t".into(), token)], 4).unwrap(), [("t".into(), 8)], "{backend:?}");
            assert_eq!(
                history(conn, "t"),
                [
                    (1, 3, 1, 0, RUNNING),
                    (2, 4, 1, 50, RUNNING),
                    (3, 6, 1, 100, StepStatus::Completed),
                    (4, 7, 2, 0, RUNNING)
                ],
                "{backend:?}"
            );
            let counter: i64 = tasks::table.find("t").select(tasks::last_progress_seq).first(conn).unwrap();
            assert_eq!(counter, 4, "{backend:?}");
        }
    }
}
