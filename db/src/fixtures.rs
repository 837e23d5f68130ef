//! Tasks and transitions the unit tests share: a plan, a started task, and short readers
//! of what a test asserts on.

use crate::connection::AnyConnection;
use crate::model::{StepRecord, StepStatus, TaskRecord, TaskStatus};
use crate::testing::external_step;
use crate::{
    acquire_lease, commit, events_after, insert_task, load_task, progress_history, Commit, NewEvent, NewTask,
    ProgressUpdate,
};

/// The user the tests' tasks belong to.
pub(crate) const OWNER: &str = "alice";

/// A pending task of [`OWNER`]'s with two `external` steps.
pub(crate) fn plan(id: &str) -> NewTask {
    NewTask {
        id: id.into(),
        owner: OWNER.into(),
        title: "Test".into(),
        complexity: 1,
        restarted_from: None,
        created_at: 1,
        steps: vec![external_step(1), external_step(2)],
        start: None,
        idempotency: None,
    }
}

/// An event without details.
pub(crate) fn event(kind: &'static str, step: Option<u32>, progress: Option<(u8, StepStatus)>) -> NewEvent {
    NewEvent { kind, step, detail: None, progress }
}

/// Commits `events` with the task and step rows given; returns the last seq.
pub(crate) fn commit_events(
    conn: &mut AnyConnection,
    id: &str,
    token: i64,
    task: Option<&TaskRecord>,
    steps: Vec<&StepRecord>,
    events: Vec<NewEvent>,
) -> i64 {
    let change =
        Commit { task_id: id, lease_token: token, at: 3, task, steps, events, step_run: None, release_lease: false };
    commit(conn, &change).unwrap()
}

/// Creates a task, leases it and starts its first step (seqs 1–3, progress row 1);
/// returns the lease token.
pub(crate) fn started(conn: &mut AnyConnection, id: &str) -> i64 {
    started_as(conn, plan(id))
}

/// [`started`], for a task of one's own making.
pub(crate) fn started_as(conn: &mut AnyConnection, new_task: NewTask) -> i64 {
    let id = new_task.id.clone();
    let id = id.as_str();
    insert_task(conn, &new_task).unwrap();
    let token = acquire_lease(conn, id, "test", 60_000, 2).unwrap().expect("a free lease");
    let stored = load_task(conn, id).unwrap().unwrap();
    let mut task = stored.task.clone();
    task.status = TaskStatus::Running;
    let mut step = stored.steps[0].clone();
    step.status = StepStatus::Running;
    step.attempts = 1;
    let events =
        vec![event("task_started", None, None), event("step_started", Some(1), Some((0, StepStatus::Running)))];
    assert_eq!(commit_events(conn, id, token, Some(&task), vec![&step], events), 3);
    token
}

/// Step `step` of the task at `percent`, in its first attempt.
pub(crate) fn percent(task_id: &str, token: i64, step: u32, percent: u8) -> ProgressUpdate {
    ProgressUpdate { task_id: task_id.into(), lease_token: token, step, attempt: 1, percent }
}

/// (id, seq, step, percent, status) of each progress row.
pub(crate) fn history(conn: &mut AnyConnection, id: &str) -> Vec<(i64, i64, u32, u8, StepStatus)> {
    progress_history(conn, OWNER, id).unwrap().into_iter().map(|r| (r.id, r.seq, r.step, r.percent, r.status)).collect()
}

/// The kinds of the task's logged events, in order.
pub(crate) fn event_kinds(conn: &mut AnyConnection, id: &str) -> Vec<String> {
    events_after(conn, OWNER, id, 0, 100).unwrap().into_iter().map(|e| e.kind).collect()
}

/// Short for the status most progress rows have.
pub(crate) const RUNNING: StepStatus = StepStatus::Running;
