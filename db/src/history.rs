//! History: a task's event log, its progress history, its log lines, and the completed step
//! runs the estimator learns from. **A reader of one task's rows takes the owner and filters
//! on it in SQL**: another user's task reads exactly like a missing one
//! ([`DbError::NotFound`]), and a task of the owner's without rows reads as an empty list.
//! The step-run readers are the runtime's, across owners (the estimator learns from every
//! task).

use std::collections::HashMap;

use diesel::prelude::*;

use crate::connection::AnyConnection;
use crate::model::{EventRecord, LogRecord, ProgressRecord, StepRunRecord, TaskStatus};
use crate::rows::{decode_marks, to_i32, to_i64, to_percent, to_u32};
use crate::schema::{step_logs, step_runs, task_events, task_progress, tasks};
use crate::tasks::ID_CHUNK;
use crate::DbError;

/// The backend queries are boxed for.
type AnyBackend = <AnyConnection as Connection>::Backend;

/// Events of `owner`'s task after `after_seq`, in order, at most `limit`.
pub fn events_after(
    conn: &mut AnyConnection,
    owner: &str,
    task_id: &str,
    after_seq: i64,
    limit: usize,
) -> Result<Vec<EventRecord>, DbError> {
    let rows = task_events::table
        .filter(task_events::task_id.eq(task_id))
        .filter(owns(owner, task_id))
        .filter(task_events::seq.gt(after_seq))
        .order(task_events::seq.asc())
        .limit(to_i64(limit))
        .load::<EventRow>(conn)?;
    found(conn, owner, task_id, rows)?.into_iter().map(event_record).collect()
}

/// A `task_events` row: task, seq, kind, step, detail, time.
type EventRow = (String, i64, String, Option<i32>, Option<String>, i64);

fn event_record((task_id, seq, kind, step, detail, created_at): EventRow) -> Result<EventRecord, DbError> {
    let step = step.map(|s| to_u32(s, "task_events.step_order")).transpose()?;
    Ok(EventRecord { task_id, seq, kind, step, detail, created_at })
}

/// The columns of a [`LogRow`].
const LOG_COLUMNS: (step_logs::seq, step_logs::step_order, step_logs::stream, step_logs::line, step_logs::created_at) =
    (step_logs::seq, step_logs::step_order, step_logs::stream, step_logs::line, step_logs::created_at);

/// A `step_logs` row: seq, step, stream, line, time.
type LogRow = (i64, i32, String, String, i64);

fn log_record((seq, step, stream, line, created_at): LogRow) -> Result<LogRecord, DbError> {
    Ok(LogRecord { seq, step: to_u32(step, "step_logs.step_order")?, stream: stream.parse()?, line, created_at })
}

/// Logged events of a task with seqs in `after+1 ..= upto`, in order, at most `limit`.
/// Across owners: the runtime's reader of the tasks other servers run, for its own
/// subscribers, who each see only their own. One task per query keeps each read on the
/// task's own index range, however the table's statistics stand.
pub fn task_events_between(
    conn: &mut AnyConnection,
    task_id: &str,
    after: i64,
    upto: i64,
    limit: usize,
) -> Result<Vec<EventRecord>, DbError> {
    task_events::table
        .filter(task_events::task_id.eq(task_id))
        .filter(task_events::seq.gt(after))
        .filter(task_events::seq.le(upto))
        .order(task_events::seq.asc())
        .limit(to_i64(limit))
        .load::<EventRow>(conn)?
        .into_iter()
        .map(event_record)
        .collect()
}

/// Log lines of a task with seqs in `after+1 ..= upto`, in order, at most `limit`. Across
/// owners, as [`task_events_between`].
pub fn task_logs_between(
    conn: &mut AnyConnection,
    task_id: &str,
    after: i64,
    upto: i64,
    limit: usize,
) -> Result<Vec<LogRecord>, DbError> {
    step_logs::table
        .filter(step_logs::task_id.eq(task_id))
        .filter(step_logs::seq.gt(after))
        .filter(step_logs::seq.le(upto))
        .order(step_logs::seq.asc())
        .limit(to_i64(limit))
        .select(LOG_COLUMNS)
        .load::<LogRow>(conn)?
        .into_iter()
        .map(log_record)
        .collect()
}

/// The `task_progress` rows of `owner`'s task, oldest first (by id).
pub fn progress_history(conn: &mut AnyConnection, owner: &str, task_id: &str) -> Result<Vec<ProgressRecord>, DbError> {
    let rows: Vec<(String, i64, i64, i32, i32, String, i64)> = task_progress::table
        .filter(task_progress::task_id.eq(task_id))
        .filter(owns(owner, task_id))
        .order(task_progress::id.asc())
        .load(conn)?;
    found(conn, owner, task_id, rows)?
        .into_iter()
        .map(|(task_id, id, seq, step, percent, status, updated_at)| {
            Ok(ProgressRecord {
                task_id,
                id,
                seq,
                step: to_u32(step, "task_progress.step")?,
                percent: to_percent(percent),
                status: status.parse()?,
                updated_at,
            })
        })
        .collect()
}

/// The seq of the newest log line of each task among `ids` (0 for a task with none): where
/// a reader that wants only the lines to come starts. Across owners, as
/// [`events_of_tasks_after`].
pub fn log_positions(conn: &mut AnyConnection, ids: &[String]) -> Result<HashMap<String, i64>, DbError> {
    let mut positions = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(ID_CHUNK) {
        let rows =
            tasks::table
                .filter(tasks::id.eq_any(chunk))
                .select((tasks::id, tasks::last_log_seq))
                .load::<(String, i64)>(conn)?;
        positions.extend(rows);
    }
    Ok(positions)
}

/// Log lines of `owner`'s task (optionally of one step) after `after_seq`, at most `limit`.
pub fn logs_after(
    conn: &mut AnyConnection,
    owner: &str,
    task_id: &str,
    step: Option<u32>,
    after_seq: i64,
    limit: usize,
) -> Result<Vec<LogRecord>, DbError> {
    let rows = task_logs(owner, task_id, step)
        .filter(step_logs::seq.gt(after_seq))
        .order(step_logs::seq.asc())
        .limit(to_i64(limit))
        .select(LOG_COLUMNS)
        .load::<LogRow>(conn)?;
    found(conn, owner, task_id, rows)?.into_iter().map(log_record).collect()
}

/// The newest `limit` log lines of `owner`'s task (optionally of one step), oldest first.
pub fn recent_logs(
    conn: &mut AnyConnection,
    owner: &str,
    task_id: &str,
    step: Option<u32>,
    limit: usize,
) -> Result<Vec<LogRecord>, DbError> {
    let newest = task_logs(owner, task_id, step)
        .order(step_logs::seq.desc())
        .limit(to_i64(limit))
        .select(step_logs::seq)
        .load::<i64>(conn)?;
    match found(conn, owner, task_id, newest)?.last() {
        Some(&oldest) => logs_after(conn, owner, task_id, step, oldest - 1, limit),
        None => Ok(Vec::new()),
    }
}

/// The log lines of `owner`'s task, of one step if given.
fn task_logs<'a>(owner: &'a str, task_id: &'a str, step: Option<u32>) -> step_logs::BoxedQuery<'a, AnyBackend> {
    let query = step_logs::table.filter(step_logs::task_id.eq(task_id)).filter(owns(owner, task_id)).into_boxed();
    match step {
        Some(step) => query.filter(step_logs::step_order.eq(to_i32(step))),
        None => query,
    }
}

/// Whether `owner` has the task `task_id`: the condition on every read of a task's rows.
/// It does not depend on the row, so each backend evaluates it once per query.
#[diesel::dsl::auto_type]
fn owns<'a>(owner: &'a str, task_id: &'a str) -> _ {
    diesel::dsl::exists(tasks::table.filter(tasks::id.eq(task_id)).filter(tasks::owner.eq(owner)))
}

/// `rows`, read with [`owns`]; none at all is told apart: a task of the owner's without
/// rows, or no such task for this owner ([`DbError::NotFound`]).
fn found<T>(conn: &mut AnyConnection, owner: &str, task_id: &str, rows: Vec<T>) -> Result<Vec<T>, DbError> {
    if rows.is_empty() && !diesel::select(owns(owner, task_id)).get_result::<bool>(conn)? {
        return Err(DbError::NotFound(task_id.to_owned()));
    }
    Ok(rows)
}

/// The newest `limit` completed step runs of completed tasks, oldest first (the estimator's
/// history). A task that failed or was cancelled is left out, as the live estimator learns
/// only from tasks that complete: a restart must not change what it knows.
pub fn recent_step_runs(conn: &mut AnyConnection, limit: usize) -> Result<Vec<StepRunRecord>, DbError> {
    let completed = tasks::table.filter(tasks::status.eq(TaskStatus::Completed.as_str())).select(tasks::id);
    let mut rows = step_runs::table
        .filter(step_runs::task_id.eq_any(completed))
        .order((step_runs::finished_at.desc(), step_runs::task_id.desc(), step_runs::step_order.desc()))
        .limit(to_i64(limit))
        .load::<StepRunRow>(conn)?;
    rows.reverse();
    rows.into_iter().map(step_run_record).collect()
}

/// The completed step runs of one task, oldest first.
pub fn task_step_runs(conn: &mut AnyConnection, task_id: &str) -> Result<Vec<StepRunRecord>, DbError> {
    step_runs::table
        .filter(step_runs::task_id.eq(task_id))
        .order((step_runs::finished_at.asc(), step_runs::step_order.asc(), step_runs::attempt.asc()))
        .load::<StepRunRow>(conn)?
        .into_iter()
        .map(step_run_record)
        .collect()
}

/// A `step_runs` row: task, step, attempt, step key, complexity, duration, finish, marks.
type StepRunRow = (String, i32, i32, String, i32, i64, i64, String);

fn step_run_record(row: StepRunRow) -> Result<StepRunRecord, DbError> {
    let (task_id, step, attempt, step_key, complexity, duration_ms, finished_at, progress) = row;
    // The samples only sharpen estimates: one unreadable row must not cost the whole history.
    let progress = decode_marks(&progress).unwrap_or_else(|error| {
        tracing::warn!(task_id, step, %error, "step_runs.progress unreadable; the run is kept without it");
        Vec::new()
    });
    Ok(StepRunRecord {
        step: to_u32(step, "step_runs.step_order")?,
        attempt: to_u32(attempt, "step_runs.attempt")?,
        step_key,
        complexity: to_u32(complexity, "step_runs.complexity")?,
        duration_ms,
        finished_at,
        progress,
        task_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{percent, plan, started, started_as, OWNER};
    use crate::testing::TestDb;
    use crate::{insert_task, record_progress, EventRecord, LogLine, LogStream, NewTask};

    /// A reader of one task's rows, as how many it returned.
    type Reader = fn(&mut AnyConnection, &str, &str) -> Result<usize, DbError>;

    const READERS: [(&str, Reader); 7] = [
        ("events", |conn, owner, id| events_after(conn, owner, id, 0, 100).map(|rows| rows.len())),
        ("events after seq 3", |conn, owner, id| events_after(conn, owner, id, 3, 100).map(|rows| rows.len())),
        ("progress", |conn, owner, id| progress_history(conn, owner, id).map(|rows| rows.len())),
        ("logs", |conn, owner, id| logs_after(conn, owner, id, None, 0, 100).map(|rows| rows.len())),
        ("logs of step 2", |conn, owner, id| logs_after(conn, owner, id, Some(2), 0, 100).map(|rows| rows.len())),
        ("recent logs", |conn, owner, id| recent_logs(conn, owner, id, None, 100).map(|rows| rows.len())),
        ("recent logs of step 2", |conn, owner, id| recent_logs(conn, owner, id, Some(2), 100).map(|rows| rows.len())),
    ];

    /// The relay's readers take a task's rows between two seqs, whoever owns it, in order,
    /// and stop at the limit. On SQLite and PostgreSQL.
    #[test]
    fn a_tasks_rows_are_read_between_two_seqs_whoever_owns_it() {
        for test_db in TestDb::all() {
            let backend = test_db.backend;
            let database = test_db.open();
            let conn = &mut *database.conn().unwrap();
            // Bob's task: three events and three log lines.
            let token = started_as(conn, NewTask { owner: "bob".into(), ..plan("b") });
            let line = |text: &str| LogLine {
                task_id: "b".into(),
                lease_token: token,
                step: 1,
                stream: LogStream::Stdout,
                line: text.into(),
                at: 5,
            };
            record_progress(conn, &[], &[line("one"), line("two"), line("three")], 5).unwrap();

            let seqs = |events: Vec<EventRecord>| events.into_iter().map(|e| e.seq).collect::<Vec<_>>();
            assert_eq!(seqs(task_events_between(conn, "b", 0, 3, 100).unwrap()), [1, 2, 3], "{backend:?}");
            assert_eq!(seqs(task_events_between(conn, "b", 1, 2, 100).unwrap()), [2], "{backend:?}: within the bounds");
            assert_eq!(
                seqs(task_events_between(conn, "b", 0, 3, 2).unwrap()),
                [1, 2],
                "{backend:?}: at most the limit"
            );
            assert!(task_events_between(conn, "missing", 0, 3, 100).unwrap().is_empty(), "{backend:?}");

            let lines = task_logs_between(conn, "b", 1, 3, 100).unwrap();
            let lines: Vec<(i64, &str)> = lines.iter().map(|l| (l.seq, l.line.as_str())).collect();
            assert_eq!(lines, [(2, "two"), (3, "three")], "{backend:?}");
        }
    }

    /// Every reader of a task's rows answers another user's task exactly as a missing one
    /// (`NotFound`, naming the id asked for), and the owner's task without rows as an empty
    /// list. On SQLite and PostgreSQL.
    #[test]
    fn another_owners_task_reads_like_a_missing_one() {
        for test_db in TestDb::all() {
            let backend = test_db.backend;
            let database = test_db.open();
            let conn = &mut *database.conn().unwrap();
            // "a": 3 events, 2 progress rows, 1 log line of step 1; "quiet": its creation only.
            let token = started(conn, "a");
            let line = LogLine {
                task_id: "a".into(),
                lease_token: token,
                step: 1,
                stream: LogStream::Stdout,
                line: "x".into(),
                at: 5,
            };
            record_progress(conn, &[percent("a", token, 1, 40)], &[line], 5).unwrap();
            insert_task(conn, &plan("quiet")).unwrap();

            let missing = [None; READERS.len()];
            let cases = [
                (OWNER, "a", [Some(3), Some(0), Some(2), Some(1), Some(0), Some(1), Some(0)]),
                (OWNER, "quiet", [Some(1), Some(0), Some(0), Some(0), Some(0), Some(0), Some(0)]),
                ("bob", "a", missing),
                ("bob", "quiet", missing),
                (OWNER, "missing", missing),
            ];
            for (owner, id, expected) in cases {
                for ((name, reader), expected) in READERS.iter().zip(expected) {
                    let read = match reader(conn, owner, id) {
                        Ok(rows) => Some(rows),
                        Err(DbError::NotFound(named)) if named == id => None,
                        Err(other) => panic!("{backend:?}: {name} of {owner}'s {id}: {other}"),
                    };
                    assert_eq!(read, expected, "{backend:?}: {name} of {owner}'s {id}");
                }
            }
        }
    }
}
