//! What a transition commits, built purely from the task's state before and after it: the
//! task row if it changed, the changed steps, the events with the percents they record, the
//! completed step's run for the estimator's history, and whether the lease is given up.

use db::{Commit, NewEvent, ProgressMark, StepRecord, StepRunRecord, StepStatus, StoredTask, TaskRecord};

use crate::eta::step_key;
use crate::event::EventKind;
use crate::machine::{Effect, TaskState, Transition};

/// The rows one transition writes, owned so the write can run on the blocking pool.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CommitRecord {
    pub task: Option<TaskRecord>,
    pub steps: Vec<StepRecord>,
    pub events: Vec<NewEvent>,
    pub step_run: Option<StepRunRecord>,
    pub release_lease: bool,
}

impl CommitRecord {
    /// The database's view of it: written for `task_id` under `lease_token` at `at`.
    pub fn commit<'a>(&'a self, task_id: &'a str, lease_token: i64, at: i64) -> Commit<'a> {
        Commit {
            task_id,
            lease_token,
            at,
            task: self.task.as_ref(),
            steps: self.steps.iter().collect(),
            events: self.events.clone(),
            step_run: self.step_run.clone(),
            release_lease: self.release_lease,
        }
    }
}

/// What committing `transition` from `before` to `after` at `at` writes; `samples` are the
/// running step's progress samples, kept with its run if it completed.
pub(crate) fn commit_record(
    before: &TaskState,
    after: &TaskState,
    transition: &Transition,
    at: i64,
    samples: &[ProgressMark],
) -> CommitRecord {
    let (old, new) = (&before.stored, &after.stored);
    CommitRecord {
        task: (new.task != old.task).then(|| new.task.clone()),
        steps: new.steps.iter().zip(&old.steps).filter(|(n, o)| n != o).map(|(n, _)| n.clone()).collect(),
        events: transition.events.iter().map(|kind| new_event(new, kind)).collect(),
        step_run: transition.completed_run.and_then(|(order, duration_ms)| {
            let step = new.steps.iter().find(|s| s.order == order)?;
            Some(StepRunRecord {
                task_id: new.task.id.clone(),
                step: order,
                attempt: step.attempts,
                step_key: step_key(step),
                complexity: new.task.complexity,
                duration_ms,
                finished_at: at,
                progress: samples.to_vec(),
            })
        }),
        release_lease: transition.effects.contains(&Effect::Finish),
    }
}

fn new_event(stored: &StoredTask, kind: &EventKind) -> NewEvent {
    NewEvent {
        kind: kind.name(),
        step: kind.step(),
        detail: kind.detail(),
        progress: kind.step().and_then(|order| progress_of(stored, order, kind)),
    }
}

/// The `task_progress` row an event records: the step's percent and status after it.
fn progress_of(stored: &StoredTask, order: u32, kind: &EventKind) -> Option<(u8, StepStatus)> {
    match kind {
        EventKind::StepStarted { .. }
        | EventKind::SubstepDone { .. }
        | EventKind::StepCompleted { .. }
        | EventKind::StepFailed { .. }
        | EventKind::StepRetrying { .. }
        | EventKind::StepSkipped { .. }
        | EventKind::ApprovalNeeded { .. } => {
            let step = stored.steps.iter().find(|s| s.order == order)?;
            Some((step.progress, step.status))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use db::TaskStatus;

    use super::*;
    use crate::machine::fixtures::{started, task, Spec, PLAIN, T0};
    use crate::machine::Control;

    fn record_of(before: &TaskState, change: impl FnOnce(&mut TaskState) -> Transition) -> CommitRecord {
        let mut after = before.clone();
        let transition = change(&mut after);
        commit_record(before, &after, &transition, T0 + 5_000, &[ProgressMark { elapsed_ms: 2_000, percent: 40.0 }])
    }

    #[test]
    fn a_start_writes_the_task_its_first_step_and_both_events() {
        let record = record_of(&task(&[PLAIN, PLAIN]), |state| state.control(&Control::Start, T0).unwrap());
        assert_eq!(record.task.map(|t| t.status), Some(TaskStatus::Running));
        assert_eq!(record.steps.iter().map(|s| (s.order, s.status)).collect::<Vec<_>>(), [(1, StepStatus::Running)]);
        let events: Vec<_> = record.events.iter().map(|e| (e.kind, e.step, e.progress)).collect();
        assert_eq!(events, [("task_started", None, None), ("step_started", Some(1), Some((0, StepStatus::Running)))]);
        assert_eq!((record.step_run, record.release_lease), (None, false));
    }

    #[test]
    fn a_substep_writes_its_step_only_with_the_percent_it_reached() {
        let before = started(&[Spec { substeps: &["a", "b"], ..PLAIN }]);
        let record = record_of(&before, |state| state.substep_done(1, 1, "b").unwrap());
        assert_eq!(record.task, None, "the task row did not change");
        assert_eq!(record.steps.len(), 1);
        let event = &record.events[0];
        assert_eq!((event.kind, event.progress), ("substep_done", Some((50, StepStatus::Running))));
    }

    #[test]
    fn the_last_step_completing_writes_its_run_with_the_samples_and_gives_the_lease_up() {
        let record = record_of(&started(&[PLAIN]), |state| state.step_succeeded(1, 1, None, T0 + 5_000));
        let run = record.step_run.expect("the completed run");
        assert_eq!(
            (run.task_id.as_str(), run.step, run.attempt, run.step_key.as_str(), run.complexity),
            ("t1", 1, 1, "exec:Step 1", 1)
        );
        assert_eq!((run.duration_ms, run.finished_at), (5_000, T0 + 5_000));
        assert_eq!(run.progress, [ProgressMark { elapsed_ms: 2_000, percent: 40.0 }]);
        assert!(record.release_lease, "a completed task gives its lease up in the same commit");
        let kinds: Vec<_> = record.events.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["step_complete", "task_complete"]);
        assert_eq!(record.events[0].progress, Some((100, StepStatus::Completed)));
    }
}
