//! History: a task's event log, its progress history, its log lines, and the completed step
//! runs the estimator learns from.

use diesel::prelude::*;

use crate::connection::AnyConnection;
use crate::model::{EventRecord, LogRecord, ProgressRecord, StepRunRecord, TaskStatus};
use crate::rows::{decode_marks, to_i32, to_i64, to_percent, to_u32};
use crate::schema::{step_logs, step_runs, task_events, task_progress, tasks};
use crate::DbError;

/// Events of a task after `after_seq`, in order, at most `limit`.
pub fn events_after(
    conn: &mut AnyConnection,
    task_id: &str,
    after_seq: i64,
    limit: usize,
) -> Result<Vec<EventRecord>, DbError> {
    let rows = task_events::table
        .filter(task_events::task_id.eq(task_id))
        .filter(task_events::seq.gt(after_seq))
        .order(task_events::seq.asc())
        .limit(to_i64(limit))
        .load::<(String, i64, String, Option<i32>, Option<String>, i64)>(conn)?;
    rows.into_iter()
        .map(|(task_id, seq, kind, step, detail, created_at)| {
            Ok(EventRecord {
                task_id,
                seq,
                kind,
                step: step.map(|s| to_u32(s, "task_events.step_order")).transpose()?,
                detail,
                created_at,
            })
        })
        .collect()
}

/// The task's `task_progress` rows, oldest first (by id).
pub fn progress_history(conn: &mut AnyConnection, task_id: &str) -> Result<Vec<ProgressRecord>, DbError> {
    let rows: Vec<(String, i64, i64, i32, i32, String, i64)> =
        task_progress::table.filter(task_progress::task_id.eq(task_id)).order(task_progress::id.asc()).load(conn)?;
    rows.into_iter()
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

/// Log lines of a task (optionally of one step) after `after_seq`, at most `limit`.
pub fn logs_after(
    conn: &mut AnyConnection,
    task_id: &str,
    step: Option<u32>,
    after_seq: i64,
    limit: usize,
) -> Result<Vec<LogRecord>, DbError> {
    let mut query =
        step_logs::table.filter(step_logs::task_id.eq(task_id)).filter(step_logs::seq.gt(after_seq)).into_boxed();
    if let Some(step) = step {
        query = query.filter(step_logs::step_order.eq(to_i32(step)));
    }
    let rows = query
        .order(step_logs::seq.asc())
        .limit(to_i64(limit))
        .select((step_logs::seq, step_logs::step_order, step_logs::stream, step_logs::line, step_logs::created_at))
        .load::<(i64, i32, String, String, i64)>(conn)?;
    rows.into_iter()
        .map(|(seq, step, stream, line, created_at)| {
            Ok(LogRecord {
                seq,
                step: to_u32(step, "step_logs.step_order")?,
                stream: stream.parse()?,
                line,
                created_at,
            })
        })
        .collect()
}

/// The newest `limit` log lines of a task (optionally of one step), oldest first.
pub fn recent_logs(
    conn: &mut AnyConnection,
    task_id: &str,
    step: Option<u32>,
    limit: usize,
) -> Result<Vec<LogRecord>, DbError> {
    let mut query = step_logs::table.filter(step_logs::task_id.eq(task_id)).into_boxed();
    if let Some(step) = step {
        query = query.filter(step_logs::step_order.eq(to_i32(step)));
    }
    let newest = query.order(step_logs::seq.desc()).limit(to_i64(limit)).select(step_logs::seq).load::<i64>(conn)?;
    match newest.last() {
        Some(&oldest) => logs_after(conn, task_id, step, oldest - 1, limit),
        None => Ok(Vec::new()),
    }
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
