//! Unit tests of the task state machine: every command from every task status, and the
//! step-level rules (approval, pause, retry, skip, substeps, progress, recovery).

use super::fixtures::*;
use super::*;
use crate::policy::{ApprovalPolicy, Backoff, RetryPolicy};

fn assert_refused(result: Result<Transition, RuntimeError>, verb: &str, task_status: TaskStatus) {
    match result {
        Err(RuntimeError::InvalidTransition { action, status, .. }) => {
            assert_eq!((action, status), (verb, task_status), "wrong refusal");
        }
        other => panic!("{verb} in {task_status} must be InvalidTransition, got {other:?}"),
    }
}

fn assert_step_refused(result: Result<Transition, RuntimeError>, verb: &str, order: u32, step_status: StepStatus) {
    match result {
        Err(RuntimeError::InvalidStepTransition { action, step, status, .. }) => {
            assert_eq!((action, step, status), (verb, order, step_status), "wrong step refusal");
        }
        other => panic!("{verb} step {order} ({step_status}) must be InvalidStepTransition, got {other:?}"),
    }
}

// ---- Commands by task status ------------------------------------------------------------

/// A two-step task brought to `status` by the machine itself.
fn in_status(status: TaskStatus) -> TaskState {
    let first = if status == TaskStatus::Approval { APPROVAL } else { PLAIN };
    let mut state = started(&[first, PLAIN]);
    match status {
        TaskStatus::Pending => return task(&[PLAIN, PLAIN]),
        TaskStatus::Running | TaskStatus::Approval => {}
        TaskStatus::Paused => _ = run(&mut state, Control::Pause, 2000),
        TaskStatus::Completed => {
            state.step_succeeded(1, 1, None, 2000);
            state.step_succeeded(2, 1, None, 3000);
        }
        TaskStatus::Failed => _ = state.step_failed(1, 1, "boom".into(), FailureKind::Error, 2000),
        TaskStatus::Cancelled => _ = run(&mut state, Control::Cancel, 2000),
    }
    state
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    /// Accepted; the task ends in this status.
    To(TaskStatus),
    /// `InvalidTransition`.
    Refused,
    /// `InvalidStepTransition` for step 1.
    StepRefused,
}

const CONTROLS: [Control; 8] = [
    Control::Start,
    Control::Pause,
    Control::Resume,
    Control::Cancel,
    Control::Approve { step: None, comment: None },
    Control::Reject { step: None, comment: None },
    Control::Retry { step: 1 },
    Control::Skip { step: 1 },
];

#[test]
fn every_command_from_every_task_status() {
    use Outcome::{Refused as No, StepRefused as StepNo, To};
    use TaskStatus::*;
    #[rustfmt::skip]
    let table = [
        //          start        pause       resume       cancel         approve      reject      retry 1      skip 1
        (Pending,   [To(Running), No,         No,          To(Cancelled), No,          No,         No,          To(Pending)]),
        (Running,   [No,          To(Paused), No,          To(Cancelled), No,          No,         No,          StepNo]),
        (Paused,    [No,          No,         To(Running), To(Cancelled), No,          No,         No,          StepNo]),
        (Approval,  [No,          No,         No,          To(Cancelled), To(Running), To(Failed), No,          To(Running)]),
        (Completed, [No,          No,         No,          No,            No,          No,         No,          No]),
        (Failed,    [No,          No,         No,          To(Cancelled), No,          No,         To(Running), To(Running)]),
        (Cancelled, [No,          No,         No,          No,            No,          No,         No,          No]),
    ];
    let covered: Vec<TaskStatus> = table.iter().map(|(status, _)| *status).collect();
    assert_eq!(covered, TaskStatus::ALL, "the table must cover every task status");
    for (status, outcomes) in table {
        for (control, outcome) in CONTROLS.iter().zip(outcomes) {
            let mut state = in_status(status);
            assert_eq!(state.status(), status, "fixture for {status}");
            let before = state.clone();
            let result = state.control(control, 5000);
            let verb = control.verb();
            match outcome {
                To(expected) => {
                    assert!(result.is_ok(), "{verb} in {status} must be accepted: {result:?}");
                    assert_eq!(state.status(), expected, "{verb} in {status}");
                }
                No => assert_refused(result, verb, status),
                StepNo => assert_step_refused(result, verb, 1, step(&before, 1).status),
            }
            if !matches!(outcome, To(_)) {
                assert_eq!(state, before, "a refused {verb} in {status} must change nothing");
            }
        }
    }
}

#[test]
fn retry_of_a_step_that_did_not_fail_is_refused() {
    let mut state = in_status(TaskStatus::Failed);
    assert_step_refused(state.control(&Control::Retry { step: 2 }, 5000), "retry", 2, StepStatus::Pending);
}

#[test]
fn retry_of_an_unknown_step_is_step_not_found() {
    let mut state = in_status(TaskStatus::Failed);
    let result = state.control(&Control::Retry { step: 9 }, 5000);
    assert!(matches!(result, Err(RuntimeError::StepNotFound { step: 9, .. })), "got {result:?}");
}

// ---- Start and approval -----------------------------------------------------------------

#[test]
fn start_runs_the_first_step_as_attempt_one() {
    let mut state = task(&[PLAIN, PLAIN]);
    let out = run(&mut state, Control::Start, T0);
    assert_eq!(out.events, [EventKind::TaskStarted, step_started(1, 1)]);
    assert_eq!(out.effects, [Effect::StartStep(1)]);
    assert_eq!(state.status(), TaskStatus::Running);
    assert_eq!(state.stored.task.started_at, Some(T0));
    let first = step(&state, 1);
    assert_eq!((first.status, first.attempts, first.started_at), (StepStatus::Running, 1, Some(T0)));
    assert_eq!(step(&state, 2).status, StepStatus::Pending, "only the first step starts");
    assert_eq!(state.running_since, Some(T0));
}

#[test]
fn start_waits_when_the_first_step_needs_approval() {
    let mut state = task(&[APPROVAL, PLAIN]);
    let out = run(&mut state, Control::Start, T0);
    assert_eq!(
        out.events,
        [EventKind::TaskStarted, EventKind::ApprovalNeeded { step: 1, name: "Step 1".into(), due_at: None }]
    );
    assert!(out.effects.is_empty(), "nothing runs while waiting: {:?}", out.effects);
    assert_eq!(state.status(), TaskStatus::Approval);
    assert_eq!((step(&state, 1).status, step(&state, 1).attempts), (StepStatus::Approval, 0));
}

#[test]
fn start_with_every_step_skipped_completes_the_task() {
    let mut state = task(&[PLAIN, PLAIN]);
    run(&mut state, Control::Skip { step: 1 }, 500);
    run(&mut state, Control::Skip { step: 2 }, 600);
    let out = run(&mut state, Control::Start, T0);
    assert_eq!(out.events, [EventKind::TaskStarted, EventKind::TaskCompleted]);
    assert_eq!(out.effects, [Effect::Finish]);
    assert_eq!(state.status(), TaskStatus::Completed);
}

#[test]
fn approve_runs_the_waiting_step() {
    let mut state = started(&[APPROVAL, PLAIN]);
    let out = run(&mut state, Control::Approve { step: None, comment: Some("go".into()) }, 3000);
    let given = EventKind::ApprovalGiven { step: 1, approved: true, comment: Some("go".into()) };
    assert_eq!(out.events, [given, step_started(1, 1)]);
    assert_eq!(out.effects, [Effect::StartStep(1)]);
    assert_eq!(state.status(), TaskStatus::Running);
    assert!(step(&state, 1).approved, "the approval is recorded");
    assert_eq!(step(&state, 1).started_at, Some(3000), "waiting for approval is not work time");
}

#[test]
fn a_decision_for_a_named_step_lands_only_on_that_step() {
    let mut state = started(&[PLAIN, APPROVAL, APPROVAL]);
    state.step_succeeded(1, 1, None, 2000);
    assert_eq!(step(&state, 2).status, StepStatus::Approval);
    // Made for step 3, which does not wait yet; step 2 stays waiting.
    for control in [
        Control::Approve { step: Some(3), comment: None },
        Control::Reject { step: Some(3), comment: None },
        Control::Approve { step: Some(1), comment: None },
    ] {
        let verb = control.verb();
        let refused = state.control(&control, 3000);
        let order = match control {
            Control::Approve { step, .. } | Control::Reject { step, .. } => step.unwrap(),
            _ => unreachable!(),
        };
        assert_step_refused(refused, verb, order, step(&state, order).status);
        assert_eq!(step(&state, 2).status, StepStatus::Approval);
    }
    assert!(matches!(
        state.control(&Control::Approve { step: Some(9), comment: None }, 3000),
        Err(RuntimeError::StepNotFound { step: 9, .. })
    ));
    let out = run(&mut state, Control::Approve { step: Some(2), comment: None }, 3000);
    assert_eq!(out.events[0], EventKind::ApprovalGiven { step: 2, approved: true, comment: None });
}

#[test]
fn reject_fails_the_task_when_the_step_is_not_skippable() {
    let mut state = started(&[APPROVAL, PLAIN]);
    let out = run(&mut state, Control::Reject { step: None, comment: Some("too risky".into()) }, 3000);
    let given = EventKind::ApprovalGiven { step: 1, approved: false, comment: Some("too risky".into()) };
    let step_failed = EventKind::StepFailed { step: 1, error: "approval rejected: too risky".into() };
    let failed = EventKind::TaskFailed { step: 1, error: "approval rejected: too risky".into() };
    assert_eq!(out.events, [given, step_failed, failed]);
    assert_eq!(out.effects, [Effect::Finish]);
    assert_eq!(state.status(), TaskStatus::Failed);
    assert_eq!(state.stored.task.error.as_deref(), Some("step 1 failed: approval rejected: too risky"));
    assert_eq!(step(&state, 1).status, StepStatus::Failed);
}

#[test]
fn reject_skips_a_skippable_step_and_starts_the_next() {
    let mut state = started(&[Spec { skippable: true, ..APPROVAL }, PLAIN]);
    let out = run(&mut state, Control::Reject { step: None, comment: None }, 3000);
    let given = EventKind::ApprovalGiven { step: 1, approved: false, comment: None };
    assert_eq!(out.events, [given, EventKind::StepSkipped { step: 1 }, step_started(2, 1)]);
    assert_eq!(out.effects, [Effect::StartStep(2)]);
    assert_eq!(state.status(), TaskStatus::Running);
    assert_eq!(step(&state, 1).status, StepStatus::Skipped);
}

#[test]
fn a_later_step_needing_approval_waits_after_the_previous_one_completes() {
    let mut state = started(&[PLAIN, APPROVAL]);
    let out = state.step_succeeded(1, 1, None, 2000);
    assert_eq!(out.events.last(), Some(&EventKind::ApprovalNeeded { step: 2, name: "Step 2".into(), due_at: None }));
    assert!(out.effects.is_empty(), "step 2 must not start: {:?}", out.effects);
    assert_eq!(state.status(), TaskStatus::Approval);
}

// ---- Pause and resume -------------------------------------------------------------------

#[test]
fn work_time_excludes_paused_time() {
    let mut state = started(&[PLAIN]);
    run(&mut state, Control::Pause, 4000);
    run(&mut state, Control::Resume, 10_000);
    let out = state.step_succeeded(1, 1, None, 12_000);
    assert_eq!(out.completed_run, Some((1, 5000)), "3000 ms before the pause + 2000 after");
    assert_eq!(step(&state, 1).work_ms, 5000);
}

#[test]
fn pause_asks_the_running_step_to_pause() {
    let mut state = started(&[PLAIN, PLAIN]);
    let out = run(&mut state, Control::Pause, 4000);
    assert_eq!(out.events, [EventKind::TaskPaused]);
    assert_eq!(out.effects, [Effect::PauseStep]);
    assert_eq!(step(&state, 1).status, StepStatus::Paused);
    assert_eq!(step(&state, 1).work_ms, 3000, "the clock stops at the pause");
    assert_eq!(state.running_since, None);
}

#[test]
fn resume_continues_the_paused_step_with_its_done_substeps() {
    let mut state = started(&[FOUR_SUBSTEPS]);
    state.substep_done(1, 1, "a").expect("a is a substep");
    run(&mut state, Control::Pause, 4000);
    let out = run(&mut state, Control::Resume, 10_000);
    assert_eq!(out.events, [EventKind::TaskResumed]);
    assert_eq!(out.effects, [Effect::ResumeStep(1)]);
    let resumed = step(&state, 1);
    assert_eq!((resumed.status, resumed.attempts), (StepStatus::Running, 1), "same attempt");
    assert!(resumed.substeps[0].done, "done substeps stay done");
    assert_eq!(resumed.progress, 25);
    assert_eq!(state.running_since, Some(10_000));
}

#[test]
fn resume_starts_the_next_step_when_the_paused_one_finished_meanwhile() {
    let mut state = started(&[PLAIN, PLAIN]);
    run(&mut state, Control::Pause, 4000);
    let out = state.step_succeeded(1, 1, None, 5000);
    assert!(out.effects.is_empty(), "a paused task starts nothing: {:?}", out.effects);
    assert_eq!(state.status(), TaskStatus::Paused);
    let out = run(&mut state, Control::Resume, 10_000);
    assert_eq!(out.events, [EventKind::TaskResumed, step_started(2, 1)]);
    assert_eq!(out.effects, [Effect::StartStep(2)]);
}

// ---- Step outcomes ----------------------------------------------------------------------

#[test]
fn step_success_completes_the_step_and_starts_the_next() {
    let mut state = started(&[Spec { substeps: &["a", "b"], ..PLAIN }, PLAIN]);
    let out = state.step_succeeded(1, 1, Some("built".into()), 3000);
    let completed = EventKind::StepCompleted { step: 1, name: "Step 1".into(), duration_ms: 2000 };
    assert_eq!(out.events, [completed, step_started(2, 1)]);
    assert_eq!(out.effects, [Effect::StartStep(2)]);
    assert_eq!(out.completed_run, Some((1, 2000)));
    let done = step(&state, 1);
    assert_eq!((done.status, done.progress, done.finished_at), (StepStatus::Completed, 100, Some(3000)));
    assert_eq!(done.output.as_deref(), Some("built"));
    assert!(done.substeps.iter().all(|s| s.done), "every substep is done: {:?}", done.substeps);
}

#[test]
fn last_step_success_completes_the_task() {
    let mut state = started(&[PLAIN]);
    let out = state.step_succeeded(1, 1, None, 3000);
    assert_eq!(out.events.last(), Some(&EventKind::TaskCompleted));
    assert_eq!(out.effects, [Effect::Finish]);
    assert_eq!(state.status(), TaskStatus::Completed);
    assert_eq!(state.stored.task.finished_at, Some(3000));
}

#[test]
fn reports_of_a_stale_attempt_do_not_end_the_step() {
    let mut state = started(&[PLAIN, PLAIN]);
    assert_eq!(state.step_succeeded(1, 2, None, 2000), Transition::default());
    assert_eq!(state.step_failed(1, 0, "late".into(), FailureKind::Error, 2000), Transition::default());
    assert_eq!(state.step_succeeded(2, 1, None, 2000), Transition::default(), "step 2 is not running");
    assert_eq!(state.status(), TaskStatus::Running);
    assert_eq!((step(&state, 1).status, step(&state, 1).attempts), (StepStatus::Running, 1));
    assert_eq!(step(&state, 2).status, StepStatus::Pending);
}

#[test]
fn step_failure_fails_the_task_with_the_step_error() {
    let mut state = started(&[PLAIN, PLAIN]);
    let out = state.step_failed(1, 1, "exit status 2".into(), FailureKind::Error, 3000);
    let step_failed = EventKind::StepFailed { step: 1, error: "exit status 2".into() };
    let task_failed = EventKind::TaskFailed { step: 1, error: "exit status 2".into() };
    assert_eq!(out.events, [step_failed, task_failed]);
    assert_eq!(out.effects, [Effect::Finish]);
    let failed = step(&state, 1);
    assert_eq!((failed.status, failed.error.as_deref()), (StepStatus::Failed, Some("exit status 2")));
    assert_eq!(state.status(), TaskStatus::Failed);
    assert_eq!(state.stored.task.error.as_deref(), Some("step 1 failed: exit status 2"));
    assert_eq!(state.stored.task.finished_at, Some(3000));
}

#[test]
fn retry_restarts_the_failed_step_from_its_substep_checkpoint() {
    let mut state = started(&[FOUR_SUBSTEPS, PLAIN]);
    state.substep_done(1, 1, "a").expect("a is a substep");
    assert!(state.raise_progress(1, 1, 80));
    state.step_failed(1, 1, "boom".into(), FailureKind::Error, 3000);
    let out = run(&mut state, Control::Retry { step: 1 }, 7000);
    assert_eq!(out.events, [step_started(1, 2)]);
    assert_eq!(out.effects, [Effect::StartStep(1)]);
    let retried = step(&state, 1);
    assert_eq!((retried.status, retried.attempts), (StepStatus::Running, 2));
    assert_eq!(retried.progress, 25, "back to the checkpoint: 1 of 4 substeps");
    assert_eq!((retried.error.as_deref(), retried.work_ms, retried.started_at), (None, 0, Some(7000)));
    assert_eq!(state.status(), TaskStatus::Running);
    assert_eq!((state.stored.task.error.as_deref(), state.stored.task.finished_at), (None, None));
}

#[test]
fn skipping_the_failed_step_starts_the_next() {
    let mut state = in_status(TaskStatus::Failed);
    let out = run(&mut state, Control::Skip { step: 1 }, 7000);
    assert_eq!(out.events, [EventKind::StepSkipped { step: 1 }, step_started(2, 1)]);
    assert_eq!(out.effects, [Effect::StartStep(2)]);
    assert_eq!(step(&state, 1).status, StepStatus::Skipped);
    assert_eq!((state.status(), state.stored.task.error.as_deref()), (TaskStatus::Running, None));
}

#[test]
fn skipping_a_future_step_leaves_the_running_step_alone() {
    let mut state = started(&[PLAIN, PLAIN, PLAIN]);
    let out = run(&mut state, Control::Skip { step: 2 }, 2000);
    assert_eq!(out.events, [EventKind::StepSkipped { step: 2 }]);
    assert!(out.effects.is_empty(), "the running step is untouched: {:?}", out.effects);
    assert_eq!(step(&state, 1).status, StepStatus::Running);
    assert_eq!(state.running_since, Some(T0), "the clock keeps running");
    let out = state.step_succeeded(1, 1, None, 3000);
    assert_eq!(out.effects, [Effect::StartStep(3)], "the skipped step is passed over");
    assert_step_refused(state.control(&Control::Skip { step: 1 }, 4000), "skip", 1, StepStatus::Completed);
    assert_step_refused(state.control(&Control::Skip { step: 2 }, 4000), "skip", 2, StepStatus::Skipped);
}

#[test]
fn skip_is_refused_for_steps_that_cannot_be_skipped() {
    // (the task's status, the step to skip, that step's status)
    let cases = [
        (TaskStatus::Running, 1, StepStatus::Running),
        (TaskStatus::Paused, 1, StepStatus::Paused),
        (TaskStatus::Failed, 2, StepStatus::Pending),
    ];
    for (task_status, order, status) in cases {
        let mut state = in_status(task_status);
        assert_step_refused(state.control(&Control::Skip { step: order }, 5000), "skip", order, status);
    }
}

// ---- Substeps and progress --------------------------------------------------------------

#[test]
fn substep_done_raises_progress_to_the_done_share() {
    let mut state = started(&[FOUR_SUBSTEPS]);
    state.substep_done(1, 1, "b").expect("b is a substep");
    let out = state.substep_done(1, 1, "c").expect("c is a substep");
    assert_eq!(out.events, [EventKind::SubstepDone { step: 1, index: 2, name: "c".into() }]);
    assert!(out.effects.is_empty());
    let running = step(&state, 1);
    assert_eq!(running.progress, 50, "2 of 4 substeps");
    let done: Vec<bool> = running.substeps.iter().map(|s| s.done).collect();
    assert_eq!(done, [false, true, true, false]);
}

#[test]
fn substep_done_never_lowers_progress() {
    let mut state = started(&[FOUR_SUBSTEPS]);
    assert!(state.raise_progress(1, 1, 70));
    state.substep_done(1, 1, "a").expect("a is a substep");
    assert_eq!(step(&state, 1).progress, 70);
}

#[test]
fn unknown_substep_is_an_invalid_report_naming_the_known_ones() {
    let mut state = started(&[Spec { substeps: &["schema", "seed"], ..PLAIN }, PLAIN]);
    match state.substep_done(1, 1, "deploy") {
        Err(RuntimeError::InvalidReport(message)) => {
            assert!(message.contains("\"deploy\""), "names the unknown substep: {message}");
            assert!(message.contains("schema, seed"), "names the known substeps: {message}");
        }
        other => panic!("expected InvalidReport, got {other:?}"),
    }
    state.step_succeeded(1, 1, None, 2000);
    match state.substep_done(2, 1, "x") {
        Err(RuntimeError::InvalidReport(message)) => assert!(message.contains("none"), "{message}"),
        other => panic!("expected InvalidReport, got {other:?}"),
    }
}

#[test]
fn ticking_a_substep_twice_changes_nothing() {
    let mut state = started(&[FOUR_SUBSTEPS]);
    state.substep_done(1, 1, "a").expect("a is a substep");
    let before = state.clone();
    assert_eq!(state.substep_done(1, 1, "a").expect("a is a substep"), Transition::default());
    assert_eq!(state, before);
}

#[test]
fn substep_of_a_stale_attempt_is_ignored() {
    let mut state = started(&[FOUR_SUBSTEPS]);
    let before = state.clone();
    assert_eq!(state.substep_done(1, 2, "a").expect("stale reports are not errors"), Transition::default());
    assert_eq!(state, before);
}

#[test]
fn progress_only_rises_within_an_attempt() {
    let mut state = started(&[PLAIN]);
    let reports: Vec<bool> = [40, 30, 40, 41].into_iter().map(|p| state.raise_progress(1, 1, p)).collect();
    assert_eq!(reports, [true, false, false, true]);
    assert_eq!(step(&state, 1).progress, 41);
}

#[test]
fn progress_is_capped_at_100() {
    let mut state = started(&[PLAIN]);
    assert!(state.raise_progress(1, 1, 250));
    assert_eq!(step(&state, 1).progress, 100);
    assert!(!state.raise_progress(1, 1, 255), "already at the cap");
}

#[test]
fn progress_of_a_stale_attempt_or_a_finished_step_is_refused() {
    let mut state = started(&[PLAIN, PLAIN]);
    assert!(!state.raise_progress(1, 2, 50), "wrong attempt");
    assert!(!state.raise_progress(2, 1, 50), "step 2 is pending");
    state.step_succeeded(1, 1, None, 2000);
    assert!(!state.raise_progress(1, 1, 50), "step 1 completed");
    assert_eq!(step(&state, 2).progress, 0);
}

// ---- Cancel -----------------------------------------------------------------------------

#[test]
fn cancel_fails_the_running_step_and_finishes() {
    let mut state = started(&[PLAIN, PLAIN]);
    let out = run(&mut state, Control::Cancel, 4000);
    assert_eq!(out.events, [EventKind::TaskCancelled]);
    assert_eq!(out.effects, [Effect::StopStep, Effect::Finish]);
    let stopped = step(&state, 1);
    assert_eq!((stopped.status, stopped.error.as_deref()), (StepStatus::Failed, Some(super::STOPPED_BY_CANCEL)));
    assert_eq!((stopped.finished_at, stopped.work_ms), (Some(4000), 3000));
    assert_eq!(step(&state, 2).status, StepStatus::Pending);
    assert_eq!(state.status(), TaskStatus::Cancelled);
    assert_eq!(state.stored.task.error.as_deref(), Some("cancelled"));
}

#[test]
fn cancel_fails_a_paused_step() {
    let mut state = in_status(TaskStatus::Paused);
    run(&mut state, Control::Cancel, 4000);
    assert_eq!(step(&state, 1).status, StepStatus::Failed);
    assert_eq!(step(&state, 1).work_ms, 1000, "paused time is not work time");
}

#[test]
fn cancel_returns_a_waiting_step_to_pending() {
    let mut state = in_status(TaskStatus::Approval);
    let out = run(&mut state, Control::Cancel, 4000);
    assert_eq!(out.effects, [Effect::StopStep, Effect::Finish]);
    assert_eq!(step(&state, 1).status, StepStatus::Pending);
    assert_eq!(state.status(), TaskStatus::Cancelled);
}

#[test]
fn cancel_of_a_completed_or_cancelled_task_is_refused() {
    for status in [TaskStatus::Completed, TaskStatus::Cancelled] {
        let mut state = in_status(status);
        assert_refused(state.control(&Control::Cancel, 9000), "cancel", status);
    }
}

// ---- Recovery ---------------------------------------------------------------------------

/// A running task as a fresh server loads it: no clock running.
fn reloaded(state: &TaskState) -> TaskState {
    TaskState::new(state.stored.clone())
}

#[test]
fn recover_restarts_the_running_step_from_its_checkpoint() {
    let mut state = started(&[FOUR_SUBSTEPS, PLAIN]);
    state.substep_done(1, 1, "a").expect("a is a substep");
    state.substep_done(1, 1, "b").expect("b is a substep");
    let mut recovered = reloaded(&state);
    // The coalesced percent may lag the committed checkpoint.
    recovered.stored.steps[0].progress = 10;
    let out = recovered.recover(9000);
    assert_eq!(out.events, [EventKind::TaskRecovered]);
    assert_eq!(out.effects, [Effect::StartStep(1)]);
    assert_eq!(step(&recovered, 1).progress, 50, "at least 2 of 4 substeps");
    assert_eq!(step(&recovered, 1).attempts, 1, "the same attempt continues");
    assert_eq!(recovered.running_since, Some(9000));
    recovered.stored.steps[0].progress = 80;
    recovered.recover(9500);
    assert_eq!(step(&recovered, 1).progress, 80, "a percent above the checkpoint is kept");
}

#[test]
fn recover_leaves_paused_and_waiting_tasks_as_they_are() {
    for status in [TaskStatus::Paused, TaskStatus::Approval] {
        let mut state = reloaded(&in_status(status));
        let before = state.clone();
        let out = state.recover(9000);
        assert_eq!(out.events, [EventKind::TaskRecovered], "{status}");
        assert!(out.effects.is_empty(), "{status} must start nothing: {:?}", out.effects);
        assert_eq!(state, before, "{status} must stay as it is");
    }
}

// ---- Task percent -----------------------------------------------------------------------

#[test]
fn task_percent_counts_done_steps_fully_and_averages() {
    use StepStatus::*;
    let cases: [(&[(StepStatus, u8)], u8); 6] = [
        (&[], 0),
        (&[(Completed, 0)], 100),
        (&[(Completed, 100), (Running, 50), (Pending, 0)], 50),
        (&[(Skipped, 0), (Running, 33), (Pending, 0)], 44),
        (&[(Failed, 40), (Pending, 0)], 20),
        (&[(Completed, 100), (Skipped, 0)], 100),
    ];
    for (steps, expected) in cases {
        let mut state = task(&vec![PLAIN; steps.len()]);
        for (record, (status, progress)) in state.stored.steps.iter_mut().zip(steps) {
            (record.status, record.progress) = (*status, *progress);
        }
        assert_eq!(task_percent(&state.stored), expected, "steps {steps:?}");
        assert_eq!(state.percent(), expected, "TaskState::percent agrees");
    }
}

#[test]
fn a_stale_report_changes_nothing() {
    let mut state = started(&[PLAIN, PLAIN]);
    let before = state.clone();
    assert_eq!(state.step_succeeded(1, 2, None, 3000), Transition::default());
    assert_eq!(state, before, "a stale report must change nothing");
}

#[test]
fn a_stale_report_keeps_the_work_clock_running() {
    let mut state = started(&[PLAIN, PLAIN]);
    state.step_failed(1, 0, "late".into(), FailureKind::Error, 3000);
    assert_eq!(state.step_succeeded(1, 1, None, 5000).completed_run, Some((1, 4000)));
}

// ---- Reports ----------------------------------------------------------------------------

#[test]
fn only_the_attempt_in_progress_is_current() {
    let mut state = started(&[PLAIN, PLAIN]);
    assert!(state.is_current(1, 1), "the running attempt");
    assert!(!state.is_current(1, 2) && !state.is_current(2, 1), "another attempt or step");
    run(&mut state, Control::Pause, T0 + 500);
    assert!(state.is_current(1, 1), "a paused step is still in progress");
    state.stored.steps[0].status = StepStatus::Failed;
    assert!(!state.is_current(1, 1), "a failed step is not");
}

/// A started task whose steps are `external`, the first with substeps "a" and "b".
fn external_task() -> TaskState {
    let mut state = started(&[Spec { substeps: &["a", "b"], ..PLAIN }, PLAIN]);
    for step in &mut state.stored.steps {
        step.kind = "external".into();
    }
    state
}

fn report(substep: Option<&str>, outcome: Option<ReportOutcome>) -> ExternalReport {
    ExternalReport { substep_done: substep.map(str::to_owned), outcome, ..ExternalReport::default() }
}

#[test]
fn an_external_report_is_checked_before_anything_is_applied() {
    let state = external_task();
    assert_eq!(state.check_report(1, &report(Some("b"), None)).unwrap(), 1, "for the running attempt");
    let refusal = |order, report: ExternalReport| state.check_report(order, &report).unwrap_err().to_string();
    assert_eq!(refusal(3, report(None, None)), "task t1 has no step 3");
    assert_eq!(refusal(2, report(None, None)), "cannot report on step 2 of task t1: it is pending");
    assert_eq!(refusal(1, report(Some("c"), None)), "invalid report: step 1 has no substep \"c\" (its substeps: a, b)");
    let mut exec = started(&[PLAIN]);
    exec.stored.steps[0].kind = "exec".into();
    assert_eq!(
        exec.check_report(1, &ExternalReport::default()).unwrap_err().to_string(),
        "invalid report: step 1 is a \"exec\" step; only external steps take reports"
    );
    let mut paused = external_task();
    run(&mut paused, Control::Pause, T0 + 10);
    assert!(
        matches!(paused.check_report(1, &report(None, None)), Err(RuntimeError::InvalidStepTransition { .. })),
        "a paused step takes no reports"
    );
}

#[test]
fn an_external_report_ticks_its_substep_then_ends_the_step() {
    let mut state = external_task();
    let done = Some(ReportOutcome::Completed { output: Some("out".into()) });
    let transition = state.external_report(1, 1, report(Some("a"), done), T0 + 2000).unwrap();
    let substep = EventKind::SubstepDone { step: 1, index: 0, name: "a".into() };
    let completed = EventKind::StepCompleted { step: 1, name: "Step 1".into(), duration_ms: 2000 };
    assert_eq!(transition.events, [substep, completed, step_started(2, 1)]);
    assert_eq!(transition.effects, [Effect::StartStep(2)]);
    assert_eq!(transition.completed_run, Some((1, 2000)));
    assert_eq!(step(&state, 1).output.as_deref(), Some("out"));

    let failed = Some(ReportOutcome::Failed { error: "broke".into() });
    let transition = state.external_report(2, 1, report(None, failed), T0 + 3000).unwrap();
    assert_eq!(state.status(), TaskStatus::Failed);
    assert_eq!(transition.effects, [Effect::Finish]);
    assert_eq!(transition.completed_run, None);
}

#[test]
fn work_time_counts_the_step_in_progress_up_to_now_while_it_runs() {
    let mut state = started(&[PLAIN]);
    assert_eq!(state.work_ms(T0 + 1500), 1500);
    run(&mut state, Control::Pause, T0 + 2000);
    assert_eq!(state.work_ms(T0 + 9000), 2000, "paused time is not work time");
    assert_eq!(task(&[PLAIN]).work_ms(T0), 0, "no step in progress");
}

// ---- Timers: automatic retries and approval deadlines ------------------------------------

/// A task whose first step retries up to `max_attempts` in all, on `on`, after 10 s, 20 s …
fn retrying(max_attempts: u32, on: &[FailureKind]) -> TaskState {
    let mut state = task(&[PLAIN, PLAIN]);
    let backoff = Backoff { initial_s: 10.0, factor: 2.0, max_s: 600.0 };
    let retry = RetryPolicy { max_attempts, backoff, on: on.to_vec() };
    state.stored.steps[0].policy = StepPolicy { retry: Some(retry), approval: None }.stored();
    run(&mut state, Control::Start, T0);
    state
}

fn retrying_event(attempt: u32, max_attempts: u32, retry_at: i64) -> EventKind {
    EventKind::StepRetrying { step: 1, attempt, max_attempts, retry_at }
}

#[test]
fn a_failed_attempt_with_retries_left_waits_its_backoff_then_runs_again() {
    let mut state = retrying(3, &[FailureKind::Timeout]);
    let out = state.step_failed(1, 1, "timed out".into(), FailureKind::Timeout, T0 + 1_000);
    let failed = EventKind::StepFailed { step: 1, error: "timed out".into() };
    assert_eq!(out.events, [failed, retrying_event(2, 3, T0 + 11_000)]);
    assert!(out.effects.is_empty(), "nothing runs during the backoff");
    assert_eq!(state.status(), TaskStatus::Running);
    let waiting = step(&state, 1);
    assert_eq!(
        (waiting.status, waiting.due_at, waiting.error.as_deref()),
        (StepStatus::Pending, Some(T0 + 11_000), Some("timed out"))
    );
    assert_eq!(state.next_due(), Some(T0 + 11_000));

    assert_eq!(state.timers(T0 + 10_999), Transition::default(), "not yet");
    let out = state.timers(T0 + 11_000);
    assert_eq!(out.events, [step_started(1, 2)]);
    assert_eq!(out.effects, [Effect::StartStep(1)]);
    assert_eq!((step(&state, 1).due_at, step(&state, 1).error.as_deref()), (None, None));
    assert_eq!(state.next_due(), None);

    // The second wait is twice the first; the third failure is the last.
    let out = state.step_failed(1, 2, "timed out".into(), FailureKind::Timeout, T0 + 12_000);
    assert_eq!(out.events.last(), Some(&retrying_event(3, 3, T0 + 32_000)));
    state.timers(T0 + 32_000);
    let out = state.step_failed(1, 3, "timed out".into(), FailureKind::Timeout, T0 + 33_000);
    assert_eq!(out.events.last(), Some(&EventKind::TaskFailed { step: 1, error: "timed out".into() }));
    assert_eq!(
        (state.status(), step(&state, 1).status, step(&state, 1).attempts),
        (TaskStatus::Failed, StepStatus::Failed, 3)
    );
}

#[test]
fn a_failure_the_policy_does_not_name_fails_at_once() {
    let mut state = retrying(3, &[FailureKind::Timeout]);
    let out = state.step_failed(1, 1, "exit status 1".into(), FailureKind::ExitCode, T0 + 1_000);
    assert_eq!(out.events.last(), Some(&EventKind::TaskFailed { step: 1, error: "exit status 1".into() }));
    assert_eq!(state.status(), TaskStatus::Failed);
}

#[test]
fn pausing_stops_the_countdown_resuming_retries_at_once_and_cancel_clears_it() {
    let mut state = retrying(2, &[FailureKind::Error]);
    state.step_failed(1, 1, "boom".into(), FailureKind::Error, T0 + 1_000);
    run(&mut state, Control::Pause, T0 + 2_000);
    assert_eq!(state.next_due(), None, "a paused task's timers do not run");
    assert_eq!(state.timers(T0 + 60_000), Transition::default());
    let out = run(&mut state, Control::Resume, T0 + 3_000);
    assert_eq!(out.events, [EventKind::TaskResumed, step_started(1, 2)]);

    let mut state = retrying(2, &[FailureKind::Error]);
    state.step_failed(1, 1, "boom".into(), FailureKind::Error, T0 + 1_000);
    run(&mut state, Control::Cancel, T0 + 2_000);
    assert_eq!((step(&state, 1).due_at, state.next_due()), (None, None));

    // A person may skip a step waiting to retry: the task goes on with the next one.
    let mut state = retrying(2, &[FailureKind::Error]);
    state.step_failed(1, 1, "boom".into(), FailureKind::Error, T0 + 1_000);
    let out = run(&mut state, Control::Skip { step: 1 }, T0 + 2_000);
    assert_eq!(out.events, [EventKind::StepSkipped { step: 1 }, step_started(2, 1)]);
    assert_eq!(step(&state, 1).due_at, None);

    // Skipped while the task is paused, the task stays paused.
    let mut state = retrying(2, &[FailureKind::Error]);
    state.step_failed(1, 1, "boom".into(), FailureKind::Error, T0 + 1_000);
    run(&mut state, Control::Pause, T0 + 2_000);
    let out = run(&mut state, Control::Skip { step: 1 }, T0 + 3_000);
    assert_eq!((out.events, state.status()), (vec![EventKind::StepSkipped { step: 1 }], TaskStatus::Paused));
}

/// A task whose first step's approval lapses after 60 s, with a reminder 15 s before.
fn with_deadline(on_timeout: OnTimeout, skippable: bool) -> TaskState {
    let mut state = task(&[Spec { skippable, ..APPROVAL }, PLAIN]);
    let approval = ApprovalPolicy { timeout_s: 60.0, on_timeout, remind_before_s: Some(15.0) };
    state.stored.steps[0].policy = StepPolicy { retry: None, approval: Some(approval) }.stored();
    run(&mut state, Control::Start, T0);
    state
}

#[test]
fn an_approval_with_a_deadline_reminds_then_lapses_as_its_policy_says() {
    let mut state = with_deadline(OnTimeout::Reject, false);
    let asked = step(&state, 1);
    assert_eq!((asked.due_at, asked.remind_at), (Some(T0 + 60_000), Some(T0 + 45_000)));
    assert_eq!(state.next_due(), Some(T0 + 45_000));
    let reminder = state.timers(T0 + 45_000);
    let name: Arc<str> = "Step 1".into();
    assert_eq!(reminder.events, [EventKind::ApprovalReminder { step: 1, name, due_at: T0 + 60_000 }]);
    assert_eq!(state.timers(T0 + 50_000), Transition::default(), "one reminder");
    let lapsed = state.timers(T0 + 60_000);
    let error = "approval timed out after 60 s";
    assert_eq!(
        lapsed.events,
        [
            EventKind::ApprovalTimedOut { step: 1, on_timeout: OnTimeout::Reject },
            EventKind::StepFailed { step: 1, error: error.into() },
            EventKind::TaskFailed { step: 1, error: error.into() },
        ]
    );
    assert_eq!((state.status(), step(&state, 1).due_at), (TaskStatus::Failed, None));

    // Rejecting a skippable step skips it; `skip` always does, `fail` never does.
    for (on_timeout, skippable, skipped) in
        [(OnTimeout::Reject, true, true), (OnTimeout::Skip, false, true), (OnTimeout::Fail, true, false)]
    {
        let mut state = with_deadline(on_timeout, skippable);
        let out = state.timers(T0 + 60_000);
        assert_eq!(out.events[0], EventKind::ApprovalTimedOut { step: 1, on_timeout });
        match skipped {
            true => assert_eq!(out.events[1..], [EventKind::StepSkipped { step: 1 }, step_started(2, 1)]),
            false => assert_eq!(state.status(), TaskStatus::Failed, "{on_timeout:?}"),
        }
    }
}

#[test]
fn a_decision_in_time_clears_the_deadline() {
    let mut state = with_deadline(OnTimeout::Reject, false);
    run(&mut state, Control::Approve { step: None, comment: None }, T0 + 5_000);
    assert_eq!((step(&state, 1).due_at, step(&state, 1).remind_at, state.next_due()), (None, None, None));
    assert_eq!(state.timers(T0 + 60_000), Transition::default());
}
