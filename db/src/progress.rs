//! Coalesced progress and logs: the progress recorder's batches, one transaction per
//! flush. Percents are checkpointed in `task_progress`, never in the event log. On
//! PostgreSQL a flush is a few set-based statements for the whole batch; on SQLite, simple
//! statements per task.

use std::collections::{BTreeMap, HashMap};

use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Text};
use diesel::PgConnection;

use crate::connection::AnyConnection;
use crate::model::{LogStream, StepStatus};
use crate::rows::{to_i32, to_i64, to_percent, to_u32, LogRow, ProgressRow, Rows};
use crate::schema::steps;
use crate::transition::{reserve, Reserve};
use crate::DbError;

/// Tasks per PostgreSQL flush statement: 4 bound values per row stays well under
/// PostgreSQL's 65,535.
const PG_FLUSH_CHUNK: usize = 5_000;

/// The latest percent of a running step, as coalesced by the progress recorder.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressUpdate {
    /// The task.
    pub task_id: String,
    /// The writer's lease token.
    pub lease_token: i64,
    /// The step's order.
    pub step: u32,
    /// The attempt the percent belongs to (a stale attempt's percent is dropped).
    pub attempt: u32,
    /// The percent.
    pub percent: u8,
}

/// A log line to store.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    /// The task.
    pub task_id: String,
    /// The writer's lease token.
    pub lease_token: i64,
    /// The step's order.
    pub step: u32,
    /// Where it came from.
    pub stream: LogStream,
    /// The text.
    pub line: String,
    /// When, ms since the epoch.
    pub at: i64,
}

/// What a [`record_progress`] flush did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlushOutcome {
    /// Rows inserted or updated.
    pub rows_written: usize,
    /// Tasks whose lease was lost: their updates were not written.
    pub lost: Vec<String>,
}

/// Writes a batch of coalesced percents and log lines in one transaction. A percent is
/// written only while its step is still running the same attempt and only upwards, so a
/// late flush never overwrites a transition committed meanwhile; each applied percent
/// adds a `task_progress` row (the next id of the task's progress history, the task's
/// current event seq). Percents are not transitions: the event log and `last_seq` are left
/// alone, so the log holds exactly what the runtime published with seqs.
pub fn record_progress(
    conn: &mut AnyConnection,
    updates: &[ProgressUpdate],
    logs: &[LogLine],
    at: i64,
) -> Result<FlushOutcome, DbError> {
    let batch = by_task(updates, logs);
    conn.transaction(|conn| {
        let mut outcome = FlushOutcome::default();
        let mut rows = Rows::default();
        match &mut *conn {
            // Each statement is a round trip: one statement per table for the whole batch.
            AnyConnection::Postgresql(pg) => {
                for chunk in batch.chunks(PG_FLUSH_CHUNK) {
                    outcome.rows_written += flush_postgres(pg, chunk, at, &mut outcome.lost, &mut rows)?;
                }
            }
            // In-process: simple statements per task are cheapest.
            AnyConnection::Sqlite(_) => {
                outcome.rows_written += flush_each_task(conn, &batch, at, &mut outcome.lost, &mut rows)?
            }
        }
        outcome.rows_written += rows.insert(conn)?;
        Ok(outcome)
    })
}

/// One task's share of a flush.
struct TaskShare<'a> {
    /// The lease token its writer holds.
    token: i64,
    /// Its coalesced percents.
    updates: Vec<&'a ProgressUpdate>,
    /// Its log lines, in order.
    lines: Vec<&'a LogLine>,
}

/// The batch as each task's share, in task id order.
fn by_task<'a>(updates: &'a [ProgressUpdate], logs: &'a [LogLine]) -> Vec<(&'a str, TaskShare<'a>)> {
    let mut by_task: BTreeMap<&str, TaskShare<'_>> = BTreeMap::new();
    let share = |token| TaskShare { token, updates: Vec::new(), lines: Vec::new() };
    for update in updates {
        by_task.entry(&update.task_id).or_insert_with(|| share(update.lease_token)).updates.push(update);
    }
    for line in logs {
        by_task.entry(&line.task_id).or_insert_with(|| share(line.lease_token)).lines.push(line);
    }
    by_task.into_iter().collect()
}

/// The flush task by task (see [`flush_task`]); tasks whose lease was lost go to `lost`.
fn flush_each_task<'a>(
    conn: &mut AnyConnection,
    batch: &[(&'a str, TaskShare<'a>)],
    at: i64,
    lost: &mut Vec<String>,
    rows: &mut Rows<'a>,
) -> Result<usize, DbError> {
    let mut written = 0;
    for (task_id, share) in batch {
        match flush_task(conn, task_id, share, at, rows) {
            Ok(rows_written) => written += rows_written,
            Err(DbError::LeaseLost { .. }) => lost.push((*task_id).to_owned()),
            Err(other) => return Err(other),
        }
    }
    Ok(written)
}

/// One task's part of a flush: updates the task and step rows and gathers the rows to
/// insert. Its first statement checks the fence, so a lost lease fails it before it has
/// written anything (no savepoint needed).
fn flush_task<'a>(
    conn: &mut AnyConnection,
    task_id: &'a str,
    share: &TaskShare<'a>,
    at: i64,
    rows: &mut Rows<'a>,
) -> Result<usize, DbError> {
    // The task row first, as every transition does: one lock order, so PostgreSQL never
    // deadlocks a flush against a commit. This also checks the fence and reserves log seqs.
    let logs = Reserve { logs: to_i64(share.lines.len()), ..Reserve::default() };
    let fenced = reserve(conn, task_id, share.token, at, logs)?;
    let mut applied = Vec::new();
    for update in &share.updates {
        let changed = diesel::update(steps::table.find((task_id, to_i32(update.step))))
            .filter(steps::status.eq(StepStatus::Running.as_str()))
            .filter(steps::attempts.eq(to_i32(update.attempt)))
            .filter(steps::progress.lt(i32::from(update.percent)))
            .set(steps::progress.eq(i32::from(update.percent)))
            .execute(conn)?;
        if changed > 0 {
            applied.push((update.step, update.percent));
        }
    }
    // The task row, and each applied step row.
    let mut written = 1 + applied.len();
    if !applied.is_empty() {
        let counts = Reserve { progress: to_i64(applied.len()), ..Reserve::default() };
        let counters = reserve(conn, task_id, share.token, at, counts)?;
        written += 1;
        rows.raised_steps(task_id, counters.last_seq, counters.last_progress_seq, &applied, at);
    }
    rows.log_lines(task_id, fenced.last_log_seq, &share.lines);
    Ok(written)
}

/// The PostgreSQL flush of up to PG_FLUSH_CHUNK tasks in three statements, with the same
/// rules as [`flush_task`]: task rows first (fence, log seqs, locks), then the step rows
/// still running the same attempt and only upwards, then the progress ids of those raised.
fn flush_postgres<'a>(
    conn: &mut PgConnection,
    batch: &[(&'a str, TaskShare<'a>)],
    at: i64,
    lost: &mut Vec<String>,
    rows: &mut Rows<'a>,
) -> Result<usize, DbError> {
    let held = fence_tasks(conn, batch, at)?;
    lost.extend(batch.iter().filter(|(id, _)| !held.contains_key(id)).map(|(id, _)| (*id).to_owned()));
    let updates: Vec<&ProgressUpdate> = batch
        .iter()
        .filter(|(id, _)| held.contains_key(id))
        .flat_map(|(_, share)| share.updates.iter().copied())
        .collect();
    let raised = raise_steps(conn, &updates)?;
    let raised_of = raised_by_task(&held, &raised)?;
    let numbered = number_progress(conn, &raised_of)?;
    for row in &numbered {
        if let Some((&id, steps)) = raised_of.get_key_value(row.id.as_str()) {
            rows.raised_steps(id, row.last_seq, row.last_progress_seq, steps, at);
        }
    }
    for (id, share) in batch {
        if let Some(&last_log_seq) = held.get(id) {
            rows.log_lines(id, last_log_seq, &share.lines);
        }
    }
    Ok(held.len() + raised.len() + numbered.len())
}

/// A task row a flush statement touched: its id and the counter it reserved up to.
#[derive(QueryableByName)]
struct Reserved {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = BigInt)]
    seq: i64,
}

/// A task row whose progress ids a flush statement reserved.
#[derive(QueryableByName)]
struct ProgressIds {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = BigInt)]
    last_seq: i64,
    #[diesel(sql_type = BigInt)]
    last_progress_seq: i64,
}

/// A step row whose percent a flush raised.
#[derive(QueryableByName)]
struct Raised {
    #[diesel(sql_type = Text)]
    task_id: String,
    #[diesel(sql_type = Integer)]
    step_order: i32,
    #[diesel(sql_type = Integer)]
    progress: i32,
}

/// Checks every task's fence and reserves its log seqs in one statement (the task rows
/// first, as every transition does); returns the last log seq of each task still held.
fn fence_tasks<'a>(
    conn: &mut PgConnection,
    batch: &[(&'a str, TaskShare<'a>)],
    at: i64,
) -> Result<HashMap<&'a str, i64>, DbError> {
    let sql = format!(
        "UPDATE tasks AS t SET last_log_seq = t.last_log_seq + v.logs, updated_at = $1 \
         FROM (VALUES {}) AS v(id, token, logs) \
         WHERE t.id = v.id AND t.lease_token = v.token RETURNING t.id, t.last_log_seq AS seq",
        values_list(batch.len(), &["text", "bigint", "bigint"], 2)
    );
    let mut query = diesel::sql_query(sql).into_boxed::<Pg>().bind::<BigInt, _>(at);
    for (id, share) in batch {
        let logs = to_i64(share.lines.len());
        query = query.bind::<Text, _>(id.to_string()).bind::<BigInt, _>(share.token).bind::<BigInt, _>(logs);
    }
    let reserved: HashMap<String, i64> = query.load::<Reserved>(conn)?.into_iter().map(|r| (r.id, r.seq)).collect();
    Ok(batch.iter().filter_map(|(id, _)| reserved.get(*id).map(|&seq| (*id, seq))).collect())
}

/// Raises each step still running the same attempt, only upwards, in one statement;
/// returns the steps it raised.
fn raise_steps(conn: &mut PgConnection, updates: &[&ProgressUpdate]) -> Result<Vec<Raised>, DbError> {
    if updates.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "UPDATE steps AS s SET progress = v.percent \
         FROM (VALUES {}) AS v(task_id, step_order, attempt, percent) \
         WHERE s.task_id = v.task_id AND s.step_order = v.step_order AND s.status = 'running' \
           AND s.attempts = v.attempt AND s.progress < v.percent \
         RETURNING s.task_id, s.step_order, s.progress",
        values_list(updates.len(), &["text", "integer", "integer", "integer"], 1)
    );
    let mut query = diesel::sql_query(sql).into_boxed::<Pg>();
    for update in updates {
        query = query
            .bind::<Text, _>(update.task_id.clone())
            .bind::<Integer, _>(to_i32(update.step))
            .bind::<Integer, _>(to_i32(update.attempt))
            .bind::<Integer, _>(i32::from(update.percent));
    }
    Ok(query.load(conn)?)
}

/// The steps a flush raised, as (step, percent) by task.
type RaisedSteps<'a> = BTreeMap<&'a str, Vec<(u32, u8)>>;

/// The raised steps of each task, sorted, keyed by the batch's own ids.
fn raised_by_task<'a>(held: &HashMap<&'a str, i64>, raised: &[Raised]) -> Result<RaisedSteps<'a>, DbError> {
    let mut raised_of = RaisedSteps::new();
    for row in raised {
        if let Some((&id, _)) = held.get_key_value(row.task_id.as_str()) {
            let step = to_u32(row.step_order, "steps.step_order")?;
            raised_of.entry(id).or_default().push((step, to_percent(row.progress)));
        }
    }
    raised_of.values_mut().for_each(|steps| steps.sort_unstable());
    Ok(raised_of)
}

/// Reserves each task's next progress ids, one per raised step, in one statement.
fn number_progress(conn: &mut PgConnection, raised_of: &RaisedSteps<'_>) -> Result<Vec<ProgressIds>, DbError> {
    if raised_of.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "UPDATE tasks AS t SET last_progress_seq = t.last_progress_seq + v.progress \
         FROM (VALUES {}) AS v(id, progress) \
         WHERE t.id = v.id RETURNING t.id, t.last_seq, t.last_progress_seq",
        values_list(raised_of.len(), &["text", "bigint"], 1)
    );
    let mut query = diesel::sql_query(sql).into_boxed::<Pg>();
    for (id, steps) in raised_of {
        query = query.bind::<Text, _>(id.to_string()).bind::<BigInt, _>(to_i64(steps.len()));
    }
    Ok(query.load(conn)?)
}

/// `($1::text, $2::bigint), ($3::text, $4::bigint), …` for `rows` rows of `types`, numbering
/// from `$first`.
fn values_list(rows: usize, types: &[&str], first: usize) -> String {
    let mut n = first;
    let tuples: Vec<String> = (0..rows)
        .map(|_| {
            let cells: Vec<String> = types
                .iter()
                .map(|t| {
                    n += 1;
                    format!("${}::{t}", n - 1)
                })
                .collect();
            format!("({})", cells.join(", "))
        })
        .collect();
    tuples.join(", ")
}

impl<'a> Rows<'a> {
    /// `task_progress` rows for the steps a flush raised, still running: the ids that end
    /// at `last_progress_seq`, all at `seq`, the task's current `last_seq`.
    fn raised_steps(&mut self, task_id: &'a str, seq: i64, last_progress_seq: i64, raised: &[(u32, u8)], at: i64) {
        let first = last_progress_seq - to_i64(raised.len()) + 1;
        for (id, &(step, percent)) in (first..).zip(raised) {
            let (step, percent, status) = (to_i32(step), percent.into(), StepStatus::Running.as_str());
            self.progress.push(ProgressRow { task_id, id, seq, step, percent, status, updated_at: at });
        }
    }

    /// Log rows for `lines`, with the seqs that end at `last_log_seq`.
    fn log_lines(&mut self, task_id: &'a str, last_log_seq: i64, lines: &[&'a LogLine]) {
        let first = last_log_seq - to_i64(lines.len()) + 1;
        for (seq, line) in (first..).zip(lines) {
            self.logs.push(LogRow {
                task_id,
                seq,
                step_order: to_i32(line.step),
                stream: line.stream.as_str(),
                line: &line.line,
                created_at: line.at,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use diesel::connection::SimpleConnection;
    use diesel_migrations::MigrationHarness;

    use super::*;
    use crate::connection::{establish, MIGRATIONS};
    use crate::fixtures::{commit_events, event, event_kinds, history, percent, started, OWNER, RUNNING};
    use crate::testing::TestDb;
    use crate::{load_task, logs_after, Backend};

    /// A flush writes `task_progress` rows only: no event, `last_seq` unchanged, the fence
    /// and the "same attempt, only upwards" rule kept. On SQLite (per-task path) and
    /// PostgreSQL (set-based).
    #[test]
    fn record_progress_checkpoints_outside_the_event_log() {
        for test_db in TestDb::all() {
            let backend = test_db.backend;
            let database = test_db.open();
            let conn = &mut *database.conn().unwrap();
            let a = started(conn, "a");
            let b = started(conn, "b");
            let line = LogLine {
                task_id: "a".into(),
                lease_token: a,
                step: 1,
                stream: LogStream::Stdout,
                line: "working".into(),
                at: 5,
            };

            // Step 2 of a is not running: its percent is dropped.
            let updates = [percent("a", a, 1, 40), percent("a", a, 2, 10), percent("b", b, 1, 30)];
            let outcome = record_progress(conn, &updates, &[line], 5).unwrap();
            assert!(outcome.lost.is_empty(), "{backend:?}: {outcome:?}");
            for id in ["a", "b"] {
                assert_eq!(event_kinds(conn, id), ["task_created", "task_started", "step_started"], "{backend:?}");
                assert_eq!(load_task(conn, id).unwrap().unwrap().task.last_seq, 3, "{backend:?}: last_seq untouched");
            }
            assert_eq!(history(conn, "a"), [(1, 3, 1, 0, RUNNING), (2, 3, 1, 40, RUNNING)], "{backend:?}");
            assert_eq!(history(conn, "b"), [(1, 3, 1, 0, RUNNING), (2, 3, 1, 30, RUNNING)], "{backend:?}");
            assert_eq!(load_task(conn, "a").unwrap().unwrap().steps[0].progress, 40, "{backend:?}");
            assert_eq!(logs_after(conn, OWNER, "a", None, 0, 10).unwrap()[0].line, "working", "{backend:?}");

            // Only upwards, only the same attempt, only with the current lease.
            let stale = ProgressUpdate { attempt: 2, ..percent("a", a, 1, 90) };
            let outcome = record_progress(conn, &[percent("a", a, 1, 20), stale], &[], 6).unwrap();
            assert!(outcome.lost.is_empty(), "{backend:?}");
            let outcome = record_progress(conn, &[percent("b", b + 1, 1, 80)], &[], 6).unwrap();
            assert_eq!(outcome.lost, ["b"], "{backend:?}");
            assert_eq!(history(conn, "a").len(), 2, "{backend:?}: nothing written");
            assert_eq!(history(conn, "b").len(), 2, "{backend:?}: nothing written");

            // Progress ids continue across flushes and commits; seqs follow the event log.
            record_progress(conn, &[percent("a", a, 1, 60)], &[], 7).unwrap();
            let mut step = load_task(conn, "a").unwrap().unwrap().steps[0].clone();
            step.status = StepStatus::Completed;
            step.progress = 100;
            let done = event("step_completed", Some(1), Some((100, StepStatus::Completed)));
            assert_eq!(commit_events(conn, "a", a, None, vec![&step], vec![done]), 4, "{backend:?}");
            record_progress(conn, &[percent("a", a, 1, 100)], &[], 8).unwrap();
            assert_eq!(
                history(conn, "a"),
                [
                    (1, 3, 1, 0, RUNNING),
                    (2, 3, 1, 40, RUNNING),
                    (3, 3, 1, 60, RUNNING),
                    (4, 4, 1, 100, StepStatus::Completed)
                ],
                "{backend:?}: a completed step takes no more percents"
            );
        }
    }

    /// The second migration keeps the progress rows written under the first (id = their
    /// old event seq, the counter continuing after them), and its down.sql runs and can be
    /// applied again. On SQLite and PostgreSQL.
    #[test]
    fn the_progress_migration_keeps_old_rows() {
        for test_db in TestDb::all() {
            let backend = test_db.backend;
            let connect = || establish(&Backend::from_url(&test_db.url).unwrap()).unwrap();
            let mut conn = connect();
            conn.run_next_migration(MIGRATIONS).unwrap();
            // Written the way the first schema's code wrote them: a progress event and a
            // row keyed by its seq for each percent.
            // The first schema's columns only: today's `insert_task` writes later ones.
            conn.batch_execute(
                "INSERT INTO tasks (id, owner, title, complexity, status, created_at, updated_at) VALUES
                     ('old', 'alice', 'old', 1, 'pending', 1, 1), ('quiet', 'alice', 'quiet', 1, 'pending', 1, 1);
                 INSERT INTO task_events (task_id, seq, kind, created_at) VALUES
                     ('old', 1, 'task_created', 1), ('quiet', 1, 'task_created', 1);
                 UPDATE tasks SET last_seq = 1 WHERE id = 'quiet';
                 INSERT INTO steps (task_id, step_order, name, kind, params, requires_approval, skippable,
                                    approved, status, progress, attempts, work_ms) VALUES
                     ('old', 1, 'one', 'wait', '{}', 0, 0, 0, 'pending', 0, 0, 0),
                     ('quiet', 1, 'one', 'wait', '{}', 0, 0, 0, 'pending', 0, 0, 0);
                 UPDATE tasks SET status = 'running', last_seq = 4, lease_token = 1 WHERE id = 'old';
                 UPDATE steps SET status = 'running', attempts = 1 WHERE task_id = 'old' AND step_order = 1;
                 INSERT INTO task_events (task_id, seq, kind, step_order, created_at) VALUES
                     ('old', 2, 'step_started', 1, 2), ('old', 3, 'progress', 1, 3), ('old', 4, 'progress', 1, 4);
                 INSERT INTO task_progress (task_id, seq, step, percent, status, updated_at) VALUES
                     ('old', 2, 1, 0, 'running', 2), ('old', 3, 1, 40, 'running', 3), ('old', 4, 1, 70, 'running', 4);
                 UPDATE tasks SET status = 'running', lease_token = 1 WHERE id = 'quiet';
                 UPDATE steps SET status = 'running', attempts = 1 WHERE task_id = 'quiet' AND step_order = 1;",
            )
            .unwrap();
            drop(conn);

            let database = test_db.open();
            let conn = &mut *database.conn().unwrap();
            let old = [(2, 2, 1, 0, RUNNING), (3, 3, 1, 40, RUNNING), (4, 4, 1, 70, RUNNING)];
            assert_eq!(history(conn, "old"), old, "{backend:?}");
            record_progress(conn, &[percent("old", 1, 1, 90), percent("quiet", 1, 1, 10)], &[], 5).unwrap();
            assert_eq!(history(conn, "old")[3], (5, 4, 1, 90, RUNNING), "{backend:?}: ids continue after the old seqs");
            assert_eq!(
                history(conn, "quiet"),
                [(1, 1, 1, 10, RUNNING)],
                "{backend:?}: a task without rows starts at 1"
            );
            drop(database);

            let mut conn = connect();
            // Later migrations are reverted first, then this one.
            while !conn.revert_last_migration(MIGRATIONS).unwrap().to_string().ends_with("000002") {}
            conn.run_pending_migrations(MIGRATIONS).unwrap();
            // Down keeps one row per seq (the newest); up then keys them by seq again.
            let round_trip = [(2, 2, 1, 0, RUNNING), (3, 3, 1, 40, RUNNING), (4, 4, 1, 90, RUNNING)];
            assert_eq!(history(&mut conn, "old"), round_trip, "{backend:?}");
        }
    }
}
