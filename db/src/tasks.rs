//! Tasks and their plans: creating them, loading them with their steps and substeps,
//! listing a user's tasks page by page, and counting every task by status.

use std::collections::HashMap;

use diesel::prelude::*;

use crate::connection::AnyConnection;
use crate::idempotency::{store_key, IdempotencyKey};
use crate::model::{StepRecord, StepStatus, StoredTask, SubstepRecord, TaskRecord, TaskStatus};
use crate::queue::next_in_queue;
use crate::rows::{to_i32, to_i64, EventRow, StepRow, SubstepRow, TaskRow};
use crate::schema::{steps, substeps, task_events, tasks};
use crate::DbError;

/// Ids per `IN (…)` list: well under SQLite's limit on bound variables.
pub(crate) const ID_CHUNK: usize = 500;

/// A task to create, with its plan.
#[derive(Debug, Clone)]
pub struct NewTask {
    /// Unique id.
    pub id: String,
    /// The user it belongs to.
    pub owner: String,
    /// Its title.
    pub title: String,
    /// Units of work, at least 1.
    pub complexity: u32,
    /// The task this is a fresh run of.
    pub restarted_from: Option<String>,
    /// Creation time, ms since the epoch.
    pub created_at: i64,
    /// The steps, in order.
    pub steps: Vec<NewStep>,
    /// Set when the task is to start at once: see [`StartClaim`].
    pub start: Option<StartClaim>,
    /// The client's idempotency key, stored with the task.
    pub idempotency: Option<IdempotencyKey>,
}

/// A new task asked to start at once is stored already queued, and leased to the server
/// creating it, in the same transaction as the task: if that server dies before it has
/// started the task, the task is not left pending for good but claimed from the queue (by
/// the same server once it is back, or by another once the lease lapses), and no other
/// server claims it while its creator starts it.
#[derive(Debug, Clone)]
pub struct StartClaim {
    /// The creating server's instance id.
    pub server: String,
    /// When its lease lapses, ms since the epoch.
    pub lease_expires_at: i64,
}

/// A step of a new task.
#[derive(Debug, Clone)]
pub struct NewStep {
    /// 1-based position.
    pub order: u32,
    /// Its name.
    pub name: String,
    /// Its handler kind.
    pub kind: String,
    /// Handler parameters as JSON text.
    pub params: String,
    /// Waits for approval before running.
    pub requires_approval: bool,
    /// A rejection skips it instead of failing the task.
    pub skippable: bool,
    /// Substep names.
    pub substeps: Vec<String>,
    /// The work time the plan expects, ms, if it says.
    pub estimate_ms: Option<i64>,
    /// Its rules for retries and for an approval's deadline, as JSON, if it has any.
    pub policy: Option<String>,
}

/// Stores a new pending task with its steps and substeps, and its first event
/// (`task_created`, seq 1).
pub fn insert_task(conn: &mut AnyConnection, task: &NewTask) -> Result<(), DbError> {
    conn.transaction(|conn| {
        diesel::insert_into(tasks::table)
            .values((
                tasks::id.eq(&task.id),
                tasks::owner.eq(&task.owner),
                tasks::title.eq(&task.title),
                tasks::complexity.eq(to_i32(task.complexity)),
                tasks::status.eq(TaskStatus::Pending.as_str()),
                tasks::restarted_from.eq(&task.restarted_from),
                tasks::created_at.eq(task.created_at),
                tasks::updated_at.eq(task.created_at),
                tasks::last_seq.eq(1i64),
            ))
            .execute(conn)?;
        if let Some(claim) = &task.start {
            // After the insert, which took SQLite's write lock, so the read that orders the
            // queue cannot be made stale by another writer.
            diesel::update(tasks::table.find(&task.id))
                .set((
                    tasks::queued_at.eq(next_in_queue(conn, task.created_at)?),
                    tasks::lease_owner.eq(&claim.server),
                    tasks::lease_expires_at.eq(claim.lease_expires_at),
                ))
                .execute(conn)?;
        }
        if let Some(key) = &task.idempotency {
            store_key(conn, &task.owner, &task.id, key, task.created_at)?;
        }
        for step in &task.steps {
            insert_step(conn, &task.id, step)?;
        }
        diesel::insert_into(task_events::table)
            .values(EventRow {
                task_id: &task.id,
                seq: 1,
                kind: "task_created",
                step_order: None,
                detail: None,
                created_at: task.created_at,
            })
            .execute(conn)?;
        Ok(())
    })
}

fn insert_step(conn: &mut AnyConnection, task_id: &str, step: &NewStep) -> Result<(), DbError> {
    diesel::insert_into(steps::table)
        .values((
            steps::task_id.eq(task_id),
            steps::step_order.eq(to_i32(step.order)),
            steps::name.eq(&step.name),
            steps::kind.eq(&step.kind),
            steps::params.eq(&step.params),
            steps::requires_approval.eq(i32::from(step.requires_approval)),
            steps::skippable.eq(i32::from(step.skippable)),
            steps::approved.eq(0),
            steps::status.eq(StepStatus::Pending.as_str()),
            steps::progress.eq(0),
            steps::attempts.eq(0),
            steps::work_ms.eq(0i64),
            steps::estimate_ms.eq(step.estimate_ms),
            steps::policy.eq(&step.policy),
        ))
        .execute(conn)?;
    for (position, name) in step.substeps.iter().enumerate() {
        diesel::insert_into(substeps::table)
            .values((
                substeps::task_id.eq(task_id),
                substeps::step_order.eq(to_i32(step.order)),
                substeps::position.eq(to_i32(position as u32)),
                substeps::name.eq(name),
                substeps::done.eq(0),
            ))
            .execute(conn)?;
    }
    Ok(())
}

/// Loads one task with its steps and substeps.
pub fn load_task(conn: &mut AnyConnection, task_id: &str) -> Result<Option<StoredTask>, DbError> {
    Ok(load_tasks(conn, &[task_id.to_owned()])?.pop())
}

/// Loads several tasks with their steps and substeps (missing ids are left out).
pub fn load_tasks(conn: &mut AnyConnection, ids: &[String]) -> Result<Vec<StoredTask>, DbError> {
    let mut loaded = Vec::with_capacity(ids.len());
    // Chunked so the IN list stays within SQLite's bound-variable limit.
    for chunk in ids.chunks(ID_CHUNK) {
        let rows = tasks::table.filter(tasks::id.eq_any(chunk)).select(TaskRow::as_select()).load(conn)?;
        let step_rows = steps::table.filter(steps::task_id.eq_any(chunk)).select(StepRow::as_select()).load(conn)?;
        let substep_rows = substeps::table
            .filter(substeps::task_id.eq_any(chunk))
            .select((substeps::task_id, substeps::step_order, substeps::position, substeps::name, substeps::done))
            .load::<SubstepRow>(conn)?;
        loaded.extend(assemble(rows, step_rows, substep_rows)?);
    }
    Ok(loaded)
}

/// The task rows of the live tasks leased to `owner`.
pub(crate) fn leased_tasks(conn: &mut AnyConnection, owner: &str) -> Result<Vec<TaskRow>, DbError> {
    Ok(tasks::table
        .filter(tasks::lease_owner.eq(owner))
        .filter(tasks::status.eq_any(LIVE))
        .select(TaskRow::as_select())
        .load(conn)?)
}

/// The step and substep rows of the live tasks leased to `owner`.
pub(crate) fn leased_steps(conn: &mut AnyConnection, owner: &str) -> Result<(Vec<StepRow>, Vec<SubstepRow>), DbError> {
    // Joins rather than `IN (SELECT …)`: on SQLite the join is several times faster at
    // 100,000 tasks, and a start resumes them all.
    let step_rows = steps::table
        .inner_join(tasks::table)
        .filter(tasks::lease_owner.eq(owner))
        .filter(tasks::status.eq_any(LIVE))
        .select(StepRow::as_select())
        .load(conn)?;
    let substep_rows = substeps::table
        .inner_join(tasks::table.on(tasks::id.eq(substeps::task_id)))
        .filter(tasks::lease_owner.eq(owner))
        .filter(tasks::status.eq_any(LIVE))
        .select((substeps::task_id, substeps::step_order, substeps::position, substeps::name, substeps::done))
        .load::<SubstepRow>(conn)?;
    Ok((step_rows, substep_rows))
}

/// Running, paused or waiting for approval: the statuses a server holds a lease for.
pub(crate) const LIVE: [&str; 3] = ["running", "paused", "approval"];

/// Tasks from their rows, each with its steps in order and their substeps in order.
pub(crate) fn assemble(
    rows: Vec<TaskRow>,
    step_rows: Vec<StepRow>,
    substep_rows: Vec<SubstepRow>,
) -> Result<Vec<StoredTask>, DbError> {
    let mut subs: HashMap<(String, i32), Vec<(i32, SubstepRecord)>> = HashMap::new();
    for (task_id, order, position, name, done) in substep_rows {
        subs.entry((task_id, order)).or_default().push((position, SubstepRecord { name, done: done != 0 }));
    }
    let mut steps_of: HashMap<String, Vec<StepRecord>> = HashMap::new();
    for row in step_rows {
        let mut list = subs.remove(&(row.task_id.clone(), row.step_order)).unwrap_or_default();
        list.sort_by_key(|(position, _)| *position);
        let task_id = row.task_id.clone();
        let record = row.into_record(list.into_iter().map(|(_, s)| s).collect())?;
        steps_of.entry(task_id).or_default().push(record);
    }
    rows.into_iter()
        .map(|row| {
            let mut steps = steps_of.remove(&row.id).unwrap_or_default();
            steps.sort_by_key(|s| s.order);
            Ok(StoredTask { task: TaskRecord::try_from(row)?, steps })
        })
        .collect()
}

/// One page of a user's tasks, newest first.
#[derive(Debug, Clone)]
pub struct TaskPage {
    /// The tasks on this page.
    pub tasks: Vec<TaskRecord>,
    /// Pass as `before` for the next page; `None` on the last page.
    pub next: Option<(i64, String)>,
}

/// How many tasks the database holds in each status (every user's; statuses with none
/// are left out).
pub fn count_tasks_by_status(conn: &mut AnyConnection) -> Result<Vec<(TaskStatus, i64)>, DbError> {
    let counts: Vec<(String, i64)> =
        tasks::table.group_by(tasks::status).select((tasks::status, diesel::dsl::count_star())).load(conn)?;
    counts.into_iter().map(|(status, count)| Ok((status.parse()?, count))).collect()
}

/// Lists `owner`'s tasks newest first, optionally of one status, starting after the cursor
/// `before` (created_at, id) of a previous page.
pub fn list_tasks(
    conn: &mut AnyConnection,
    owner: &str,
    status: Option<TaskStatus>,
    before: Option<(i64, String)>,
    limit: usize,
) -> Result<TaskPage, DbError> {
    let mut query = tasks::table.filter(tasks::owner.eq(owner)).into_boxed();
    if let Some(status) = status {
        query = query.filter(tasks::status.eq(status.as_str()));
    }
    if let Some((created, id)) = before {
        query = query.filter(tasks::created_at.lt(created).or(tasks::created_at.eq(created).and(tasks::id.lt(id))));
    }
    let rows = query
        .order((tasks::created_at.desc(), tasks::id.desc()))
        .limit(to_i64(limit).saturating_add(1))
        .select(TaskRow::as_select())
        .load(conn)?;
    let mut tasks = rows.into_iter().map(TaskRecord::try_from).collect::<Result<Vec<_>, _>>()?;
    let next = if tasks.len() > limit {
        tasks.truncate(limit);
        tasks.last().map(|t| (t.created_at, t.id.clone()))
    } else {
        None
    };
    Ok(TaskPage { tasks, next })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::plan;
    use crate::testing::TestDb;

    #[test]
    fn tasks_are_counted_by_status_and_the_pool_says_what_is_taken() {
        for test_db in TestDb::all() {
            let backend = test_db.backend;
            let database = test_db.open();
            let mut conn = database.conn().unwrap();
            assert_eq!(count_tasks_by_status(&mut conn).unwrap(), [], "{backend:?}");
            for id in ["t1", "t2"] {
                insert_task(&mut conn, &plan(id)).unwrap();
            }
            assert_eq!(count_tasks_by_status(&mut conn).unwrap(), [(TaskStatus::Pending, 2)], "{backend:?}");
            let held = database.pool_state();
            assert!(held.in_use >= 1, "{backend:?}: {held:?}");
            drop(conn);
            let after = database.pool_state();
            assert_eq!(after.in_use, held.in_use - 1, "{backend:?}");
        }
    }
}
