//! Test fixtures of the task state machine: tasks made of plain, approval or substep steps,
//! for the unit tests of the machine and of what the task actor builds from it.

use db::{StepRecord, StepStatus, StoredTask, SubstepRecord, TaskRecord, TaskStatus};

use super::{Control, TaskState, Transition};
use crate::event::EventKind;

/// The time a test task starts, ms.
pub(crate) const T0: i64 = 1000;

/// How a test step differs from a plain one; steps are named "Step 1", "Step 2", ...
#[derive(Clone, Copy)]
pub(crate) struct Spec {
    pub substeps: &'static [&'static str],
    pub approval: bool,
    pub skippable: bool,
}

pub(crate) const PLAIN: Spec = Spec { substeps: &[], approval: false, skippable: false };
pub(crate) const APPROVAL: Spec = Spec { approval: true, ..PLAIN };
pub(crate) const FOUR_SUBSTEPS: Spec = Spec { substeps: &["a", "b", "c", "d"], ..PLAIN };

pub(crate) fn step_record(order: u32, spec: Spec) -> StepRecord {
    StepRecord {
        order,
        name: format!("Step {order}"),
        kind: "exec".into(),
        params: "{}".into(),
        requires_approval: spec.approval,
        skippable: spec.skippable,
        approved: false,
        status: StepStatus::Pending,
        progress: 0,
        attempts: 0,
        started_at: None,
        finished_at: None,
        work_ms: 0,
        error: None,
        output: None,
        estimate_ms: None,
        policy: None,
        due_at: None,
        remind_at: None,
        substeps: spec.substeps.iter().map(|name| SubstepRecord { name: (*name).into(), done: false }).collect(),
    }
}

/// A pending task with one step per spec.
pub(crate) fn task(specs: &[Spec]) -> TaskState {
    let task = TaskRecord {
        id: "t1".into(),
        owner: "ann".into(),
        title: "Test task".into(),
        complexity: 1,
        status: TaskStatus::Pending,
        restarted_from: None,
        created_at: 0,
        started_at: None,
        finished_at: None,
        updated_at: 0,
        error: None,
        last_seq: 0,
        lease_token: 1,
    };
    let steps = (1..).zip(specs).map(|(order, spec)| step_record(order, *spec)).collect();
    TaskState::new(StoredTask { task, steps })
}

/// A task with one step per spec, started at `T0`.
pub(crate) fn started(specs: &[Spec]) -> TaskState {
    let mut state = task(specs);
    run(&mut state, Control::Start, T0);
    state
}

/// Applies a command that must be accepted.
pub(crate) fn run(state: &mut TaskState, control: Control, now: i64) -> Transition {
    let verb = control.verb();
    state.control(&control, now).unwrap_or_else(|e| panic!("{verb} must be accepted: {e}"))
}

pub(crate) fn step(state: &TaskState, order: u32) -> &StepRecord {
    &state.stored.steps[order as usize - 1]
}

pub(crate) fn step_started(order: u32, attempt: u32) -> EventKind {
    EventKind::StepStarted { step: order, name: format!("Step {order}").into(), attempt }
}
