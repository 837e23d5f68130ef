//! The task state machine, pure: a transition takes the task's state and the time and
//! returns the events to commit and the effects for the task actor, or a typed error for
//! a transition that is not allowed. No I/O and no clock, so every rule is table-tested.
//! `report` says which reports a task takes (from its handlers and from outside workers).

use std::sync::Arc;

use db::{StepRecord, StepStatus, StoredTask, TaskStatus};

use crate::event::EventKind;
use crate::policy::{FailureKind, OnTimeout, StepPolicy};
use crate::RuntimeError;

mod report;

pub use report::{ExternalReport, ReportOutcome};

/// A person's command to a task. It serializes (`{"kind": "approve", "step": 2, …}`) so a
/// server can carry it to the server running the task.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Control {
    /// Start a pending task.
    Start,
    /// Pause a running task (its running step stops at its next checkpoint).
    Pause,
    /// Resume a paused task from the exact point it stopped.
    Resume,
    /// Cancel the task; a running step is stopped.
    Cancel,
    /// Approve the step that waits for approval.
    Approve {
        /// The step the person decided on, when they named one (an approval link does): the
        /// decision is refused unless that step is the one waiting, so a decision made for
        /// one step can never land on a later one.
        step: Option<u32>,
        /// What the person said.
        comment: Option<String>,
    },
    /// Reject the step that waits for approval: the task fails, unless the step is skippable.
    Reject {
        /// The step the person decided on, when they named one; as for `Approve`.
        step: Option<u32>,
        /// What the person said.
        comment: Option<String>,
    },
    /// Run a failed step again.
    Retry {
        /// The step's order.
        step: u32,
    },
    /// Skip a failed or pending step.
    Skip {
        /// The step's order.
        step: u32,
    },
}

impl Control {
    /// The verb, for messages.
    pub fn verb(&self) -> &'static str {
        match self {
            Control::Start => "start",
            Control::Pause => "pause",
            Control::Resume => "resume",
            Control::Cancel => "cancel",
            Control::Approve { .. } => "approve",
            Control::Reject { .. } => "reject",
            Control::Retry { .. } => "retry",
            Control::Skip { .. } => "skip",
        }
    }
}

/// The error of a step that was running (or paused) when its task was cancelled.
pub const STOPPED_BY_CANCEL: &str = "stopped: the task was cancelled";

/// What the task actor must do after a committed transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Start a step actor for this step (from its checkpoint).
    StartStep(u32),
    /// Ask the running step to pause.
    PauseStep,
    /// Ask the paused step to continue (or start it from its checkpoint if no actor runs it).
    ResumeStep(u32),
    /// Stop the step actor, if any.
    StopStep,
    /// The task is completed, failed or cancelled: release the lease and stop.
    Finish,
}

/// A task's state as the actor keeps it: the stored rows plus when the running step's
/// current stretch of work began.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TaskState {
    pub stored: StoredTask,
    pub running_since: Option<i64>,
}

/// The result of a transition.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Transition {
    pub events: Vec<EventKind>,
    pub effects: Vec<Effect>,
    /// A step that completed, with its work time (the estimator's history).
    pub completed_run: Option<(u32, i64)>,
}

impl TaskState {
    pub fn new(stored: StoredTask) -> TaskState {
        TaskState { stored, running_since: None }
    }

    pub fn status(&self) -> TaskStatus {
        self.stored.task.status
    }

    fn task_id(&self) -> String {
        self.stored.task.id.clone()
    }

    fn step(&self, order: u32) -> Result<&StepRecord, RuntimeError> {
        self.stored
            .steps
            .iter()
            .find(|s| s.order == order)
            .ok_or_else(|| RuntimeError::StepNotFound { task_id: self.task_id(), step: order })
    }

    fn step_mut(&mut self, order: u32) -> Result<&mut StepRecord, RuntimeError> {
        let task_id = self.task_id();
        self.stored
            .steps
            .iter_mut()
            .find(|s| s.order == order)
            .ok_or(RuntimeError::StepNotFound { task_id, step: order })
    }

    fn refuse(&self, control: &Control) -> RuntimeError {
        RuntimeError::InvalidTransition { task_id: self.task_id(), action: control.verb(), status: self.status() }
    }

    fn refuse_step(&self, action: &'static str, step: &StepRecord) -> RuntimeError {
        RuntimeError::InvalidStepTransition { task_id: self.task_id(), step: step.order, action, status: step.status }
    }

    /// Applies a person's command.
    pub fn control(&mut self, control: &Control, now: i64) -> Result<Transition, RuntimeError> {
        let mut out = Transition::default();
        match (control, self.status()) {
            (Control::Start, TaskStatus::Pending) => {
                self.stored.task.status = TaskStatus::Running;
                self.stored.task.started_at = Some(now);
                out.events.push(EventKind::TaskStarted);
                self.advance(now, &mut out);
            }
            (Control::Pause, TaskStatus::Running) => self.pause(now, &mut out),
            (Control::Resume, TaskStatus::Paused) => self.resume(now, &mut out),
            (Control::Cancel, status) if !status.is_final() => self.cancel(now, &mut out),
            (Control::Approve { step, comment }, TaskStatus::Approval) => {
                self.approve(*step, comment, now, &mut out)?
            }
            (Control::Reject { step, comment }, TaskStatus::Approval) => self.reject(*step, comment, now, &mut out)?,
            (Control::Retry { step }, TaskStatus::Failed) => self.retry(*step, now, &mut out)?,
            (Control::Skip { step }, status) if !status.is_final() => self.skip(*step, now, &mut out)?,
            _ => return Err(self.refuse(control)),
        }
        Ok(out)
    }

    /// Moves to the next step that is not done: it waits for approval, or starts; with
    /// none left, the task completes.
    fn advance(&mut self, now: i64, out: &mut Transition) {
        if self.status() != TaskStatus::Running {
            return;
        }
        let Some(step) = self.stored.steps.iter_mut().find(|s| !s.status.is_done()) else {
            self.stored.task.status = TaskStatus::Completed;
            self.stored.task.finished_at = Some(now);
            out.events.push(EventKind::TaskCompleted);
            out.effects.push(Effect::Finish);
            return;
        };
        if step.due_at.is_some_and(|due| due > now) {
            // A retry waiting out its backoff: `timers` starts it.
            return;
        }
        if step.requires_approval && !step.approved {
            step.status = StepStatus::Approval;
            self.stored.task.status = TaskStatus::Approval;
            if let Some(approval) = StepPolicy::of(step).approval {
                let (due_at, remind_at) = approval.timers(now);
                (step.due_at, step.remind_at) = (Some(due_at), remind_at);
            }
            out.events.push(EventKind::ApprovalNeeded {
                step: step.order,
                name: step.name.as_str().into(),
                due_at: step.due_at,
            });
            return;
        }
        step.status = StepStatus::Running;
        step.due_at = None;
        step.attempts += 1;
        step.started_at = Some(now);
        step.finished_at = None;
        step.work_ms = 0;
        step.error = None;
        // A new attempt starts from its checkpoint: the substeps already done.
        step.progress = substep_percent(step);
        self.running_since = Some(now);
        out.events.push(EventKind::StepStarted {
            step: step.order,
            name: step.name.as_str().into(),
            attempt: step.attempts,
        });
        out.effects.push(Effect::StartStep(step.order));
    }

    /// Adds the current stretch of work to the running step's work time.
    fn stop_clock(&mut self, now: i64) {
        if let Some(since) = self.running_since.take() {
            if let Some(step) = self.stored.steps.iter_mut().find(|s| s.status == StepStatus::Running) {
                step.work_ms += (now - since).max(0);
            }
        }
    }

    fn pause(&mut self, now: i64, out: &mut Transition) {
        self.stop_clock(now);
        self.stored.task.status = TaskStatus::Paused;
        if let Some(step) = self.stored.steps.iter_mut().find(|s| s.status == StepStatus::Running) {
            step.status = StepStatus::Paused;
            out.effects.push(Effect::PauseStep);
        }
        out.events.push(EventKind::TaskPaused);
    }

    fn resume(&mut self, now: i64, out: &mut Transition) {
        self.stored.task.status = TaskStatus::Running;
        out.events.push(EventKind::TaskResumed);
        match self.stored.steps.iter_mut().find(|s| s.status == StepStatus::Paused) {
            Some(step) => {
                step.status = StepStatus::Running;
                self.running_since = Some(now);
                out.effects.push(Effect::ResumeStep(step.order));
            }
            None => {
                // Resuming is a person saying "go on": a retry waiting out its backoff starts now.
                for step in &mut self.stored.steps {
                    step.due_at = None;
                }
                self.advance(now, out)
            }
        }
    }

    fn cancel(&mut self, now: i64, out: &mut Transition) {
        self.stop_clock(now);
        for step in &mut self.stored.steps {
            match step.status {
                StepStatus::Running | StepStatus::Paused => {
                    // The seed's seven states have no "stopped": the step ends failed, and its
                    // error says why.
                    step.status = StepStatus::Failed;
                    step.error = Some(STOPPED_BY_CANCEL.into());
                    step.finished_at = Some(now);
                }
                StepStatus::Approval => step.status = StepStatus::Pending,
                _ => {}
            }
            (step.due_at, step.remind_at) = (None, None);
        }
        self.stored.task.status = TaskStatus::Cancelled;
        self.stored.task.finished_at = Some(now);
        self.stored.task.error = Some("cancelled".into());
        out.events.push(EventKind::TaskCancelled);
        out.effects.extend([Effect::StopStep, Effect::Finish]);
    }

    /// The step waiting for approval, which must be `expected` when that is given.
    fn waiting_step(&mut self, action: &'static str, expected: Option<u32>) -> Result<&mut StepRecord, RuntimeError> {
        if let Some(order) = expected {
            let status = self.step_mut(order)?.status;
            if status != StepStatus::Approval {
                return Err(RuntimeError::InvalidStepTransition {
                    task_id: self.task_id(),
                    step: order,
                    action,
                    status,
                });
            }
        }
        let task_id = self.task_id();
        self.stored
            .steps
            .iter_mut()
            .find(|s| s.status == StepStatus::Approval)
            .ok_or_else(|| RuntimeError::InvalidPlan(format!("task {task_id} waits for approval but no step does")))
    }

    fn approve(
        &mut self,
        expected: Option<u32>,
        comment: &Option<String>,
        now: i64,
        out: &mut Transition,
    ) -> Result<(), RuntimeError> {
        let step = self.waiting_step("approve", expected)?;
        step.approved = true;
        step.status = StepStatus::Pending;
        (step.due_at, step.remind_at) = (None, None);
        out.events.push(EventKind::ApprovalGiven {
            step: step.order,
            approved: true,
            comment: comment.as_deref().map(Arc::from),
        });
        self.stored.task.status = TaskStatus::Running;
        self.advance(now, out);
        Ok(())
    }

    fn reject(
        &mut self,
        expected: Option<u32>,
        comment: &Option<String>,
        now: i64,
        out: &mut Transition,
    ) -> Result<(), RuntimeError> {
        let step = self.waiting_step("reject", expected)?;
        let (order, skip) = (step.order, step.skippable);
        out.events.push(EventKind::ApprovalGiven {
            step: order,
            approved: false,
            comment: comment.as_deref().map(Arc::from),
        });
        let error = match comment {
            Some(text) => format!("approval rejected: {text}"),
            None => "approval rejected".to_owned(),
        };
        self.end_waiting_step(order, skip, error, now, out);
        Ok(())
    }

    /// Ends the step waiting for approval without running it: skipped, or failed with
    /// `error` (and the task with it).
    fn end_waiting_step(&mut self, order: u32, skip: bool, error: String, now: i64, out: &mut Transition) {
        let Ok(step) = self.step_mut(order) else { return };
        (step.due_at, step.remind_at) = (None, None);
        step.finished_at = Some(now);
        if skip {
            step.status = StepStatus::Skipped;
            out.events.push(EventKind::StepSkipped { step: order });
            self.stored.task.status = TaskStatus::Running;
            self.advance(now, out);
            return;
        }
        step.status = StepStatus::Failed;
        step.error = Some(error.clone());
        out.events.push(EventKind::StepFailed { step: order, error: error.as_str().into() });
        self.fail_task(order, error, now, out);
    }

    /// What the clock makes happen by `now`: a retry whose backoff is over starts, an
    /// approval's reminder goes out, a lapsed approval ends as its policy says.
    pub fn timers(&mut self, now: i64) -> Transition {
        let mut out = Transition::default();
        match self.status() {
            TaskStatus::Running if self.step_in_progress().is_none() => {
                let due = self.stored.steps.iter().find(|s| !s.status.is_done()).and_then(|s| s.due_at);
                if due.is_some_and(|due| due <= now) {
                    self.advance(now, &mut out);
                }
            }
            TaskStatus::Approval => {
                let Some(step) = self.stored.steps.iter_mut().find(|s| s.status == StepStatus::Approval) else {
                    return out;
                };
                let (order, due_at) = (step.order, step.due_at);
                if step.remind_at.is_some_and(|at| at <= now) {
                    step.remind_at = None;
                    if let Some(due_at) = due_at.filter(|due| *due > now) {
                        out.events.push(EventKind::ApprovalReminder {
                            step: order,
                            name: step.name.as_str().into(),
                            due_at,
                        });
                    }
                }
                if due_at.is_some_and(|due| due <= now) {
                    // Timers are only set from a policy; a row edited by hand lapses as a rejection.
                    let policy = StepPolicy::of(step).approval;
                    let on_timeout = policy.map_or(OnTimeout::Reject, |policy| policy.on_timeout);
                    out.events.push(EventKind::ApprovalTimedOut { step: order, on_timeout });
                    let skip = match on_timeout {
                        OnTimeout::Reject => step.skippable,
                        OnTimeout::Skip => true,
                        OnTimeout::Fail => false,
                    };
                    let error = match policy {
                        Some(policy) => {
                            format!("approval timed out after {} s", crate::policy::seconds_text(policy.timeout_s))
                        }
                        None => "approval timed out".to_owned(),
                    };
                    self.end_waiting_step(order, skip, error, now, &mut out);
                }
            }
            _ => {}
        }
        out
    }

    /// When [`TaskState::timers`] next has something to do, if ever.
    pub fn next_due(&self) -> Option<i64> {
        let timers = |s: &StepRecord| [s.due_at, s.remind_at];
        match self.status() {
            TaskStatus::Running | TaskStatus::Approval => {
                self.stored.steps.iter().filter(|s| !s.status.is_done()).flat_map(timers).flatten().min()
            }
            _ => None,
        }
    }

    fn fail_task(&mut self, step: u32, error: String, now: i64, out: &mut Transition) {
        self.stored.task.status = TaskStatus::Failed;
        self.stored.task.finished_at = Some(now);
        self.stored.task.error = Some(format!("step {step} failed: {error}"));
        out.events.push(EventKind::TaskFailed { step, error: error.into() });
        out.effects.push(Effect::Finish);
    }

    fn retry(&mut self, order: u32, now: i64, out: &mut Transition) -> Result<(), RuntimeError> {
        let step = self.step_mut(order)?;
        if step.status != StepStatus::Failed {
            let step = step.clone();
            return Err(self.refuse_step("retry", &step));
        }
        step.status = StepStatus::Pending;
        step.error = None;
        step.due_at = None;
        self.stored.task.status = TaskStatus::Running;
        self.stored.task.finished_at = None;
        self.stored.task.error = None;
        self.advance(now, out);
        Ok(())
    }

    fn skip(&mut self, order: u32, now: i64, out: &mut Transition) -> Result<(), RuntimeError> {
        let status = self.status();
        let step = self.step_mut(order)?;
        let allowed = match step.status {
            StepStatus::Failed => status == TaskStatus::Failed,
            StepStatus::Pending => status != TaskStatus::Failed,
            StepStatus::Approval => true,
            _ => false,
        };
        if !allowed {
            let step = step.clone();
            return Err(self.refuse_step("skip", &step));
        }
        let was_blocking = step.status != StepStatus::Pending;
        // A retry waiting out its backoff holds up a running task; a paused one stays paused.
        let was_waiting = step.due_at.is_some();
        (step.due_at, step.remind_at) = (None, None);
        step.status = StepStatus::Skipped;
        step.finished_at = Some(now);
        out.events.push(EventKind::StepSkipped { step: order });
        if was_blocking {
            self.stored.task.status = TaskStatus::Running;
            self.stored.task.finished_at = None;
            self.stored.task.error = None;
            self.advance(now, out);
        } else if was_waiting {
            self.advance(now, out);
        }
        Ok(())
    }

    /// The running attempt of `order`, if `attempt` is still it (late reports of an old
    /// attempt are ignored).
    fn current_attempt(&mut self, order: u32, attempt: u32) -> Option<&mut StepRecord> {
        self.stored.steps.iter_mut().find(|s| is_attempt_in_progress(s, order, attempt))
    }

    /// The step in progress (running, or paused part-way), if any: there is at most one.
    pub fn step_in_progress(&self) -> Option<&StepRecord> {
        self.stored.steps.iter().find(|s| in_progress(s))
    }

    /// Work time so far of the step in progress, counted up to `now` while it runs.
    pub fn work_ms(&self, now: i64) -> i64 {
        let Some(step) = self.step_in_progress() else { return 0 };
        // `running_since` is only set while the step runs.
        step.work_ms + self.running_since.map_or(0, |since| (now - since).max(0))
    }

    /// A step's handler finished successfully.
    pub fn step_succeeded(&mut self, order: u32, attempt: u32, output: Option<String>, now: i64) -> Transition {
        let mut out = Transition::default();
        // A late report of an old attempt changes nothing, not even the work clock.
        if self.current_attempt(order, attempt).is_none() {
            return out;
        }
        self.stop_clock(now);
        let Some(step) = self.current_attempt(order, attempt) else { return out };
        step.status = StepStatus::Completed;
        step.progress = 100;
        step.finished_at = Some(now);
        step.output = output;
        for substep in &mut step.substeps {
            substep.done = true;
        }
        out.completed_run = Some((order, step.work_ms));
        out.events.push(EventKind::StepCompleted {
            step: order,
            name: step.name.as_str().into(),
            duration_ms: step.work_ms,
        });
        self.advance(now, &mut out);
        out
    }

    /// A step's attempt failed (or its handler panicked) with a failure of `kind`: the step
    /// tries again after its backoff if its retry policy says so, else it and the task fail.
    pub fn step_failed(&mut self, order: u32, attempt: u32, error: String, kind: FailureKind, now: i64) -> Transition {
        let mut out = Transition::default();
        if self.current_attempt(order, attempt).is_none() {
            return out;
        }
        self.stop_clock(now);
        let Some(step) = self.current_attempt(order, attempt) else { return out };
        step.error = Some(error.clone());
        step.finished_at = Some(now);
        out.events.push(EventKind::StepFailed { step: order, error: error.as_str().into() });
        if let Some(retry) = StepPolicy::of(step).retry {
            if let Some(retry_at) = retry.next_try(attempt, kind, now) {
                // The error stays on the step, for the page, until the next attempt starts.
                step.status = StepStatus::Pending;
                step.due_at = Some(retry_at);
                out.events.push(EventKind::StepRetrying {
                    step: order,
                    attempt: attempt + 1,
                    max_attempts: retry.max_attempts,
                    retry_at,
                });
                return out;
            }
        }
        step.status = StepStatus::Failed;
        self.fail_task(order, error, now, &mut out);
        out
    }

    /// A substep was ticked off: a checkpoint.
    pub fn substep_done(&mut self, order: u32, attempt: u32, name: &str) -> Result<Transition, RuntimeError> {
        let mut out = Transition::default();
        let Some(step) = self.current_attempt(order, attempt) else { return Ok(out) };
        let Some(index) = step.substeps.iter().position(|s| s.name == name) else {
            return Err(unknown_substep(step, name));
        };
        if step.substeps[index].done {
            return Ok(out);
        }
        step.substeps[index].done = true;
        step.progress = step.progress.max(substep_percent(step));
        out.events.push(EventKind::SubstepDone { step: order, index: index as u32, name: name.into() });
        Ok(out)
    }

    /// Raises a running step's percent; returns false if the report is stale or lower.
    pub fn raise_progress(&mut self, order: u32, attempt: u32, percent: u8) -> bool {
        match self.current_attempt(order, attempt) {
            Some(step) if percent.min(100) > step.progress => {
                step.progress = percent.min(100);
                true
            }
            _ => false,
        }
    }

    /// After a restart: a running task continues its step from the checkpoint; paused
    /// tasks and tasks waiting for approval stay as they are.
    pub fn recover(&mut self, now: i64) -> Transition {
        let mut out = Transition { events: vec![EventKind::TaskRecovered], ..Transition::default() };
        if self.status() != TaskStatus::Running {
            return out;
        }
        match self.stored.steps.iter_mut().find(|s| s.status == StepStatus::Running) {
            Some(step) => {
                // The interrupted stretch of work is lost; the step restarts from its checkpoint.
                step.progress = step.progress.max(substep_percent(step));
                self.running_since = Some(now);
                out.effects.push(Effect::StartStep(step.order));
            }
            None => self.advance(now, &mut out),
        }
        out
    }

    /// The task's overall percent: done steps count fully, the active one by its percent.
    pub fn percent(&self) -> u8 {
        task_percent(&self.stored)
    }
}

impl Transition {
    /// Appends what `next`, made right after this one, does.
    pub fn then(&mut self, next: Transition) {
        self.events.extend(next.events);
        self.effects.extend(next.effects);
        self.completed_run = self.completed_run.or(next.completed_run);
    }
}

/// Whether `step` is in progress: running, or paused part-way.
fn in_progress(step: &StepRecord) -> bool {
    matches!(step.status, StepStatus::Running | StepStatus::Paused)
}

/// Whether `step` is step `order` in progress in `attempt`.
fn is_attempt_in_progress(step: &StepRecord, order: u32, attempt: u32) -> bool {
    step.order == order && step.attempts == attempt && in_progress(step)
}

/// A task's overall percent: completed and skipped steps count 100, others their percent.
pub fn task_percent(stored: &StoredTask) -> u8 {
    if stored.steps.is_empty() {
        return 0;
    }
    let sum: u64 = stored.steps.iter().map(|s| if s.status.is_done() { 100 } else { u64::from(s.progress) }).sum();
    u8::try_from(sum / stored.steps.len() as u64).unwrap_or(100)
}

/// The step a task is at: the first not yet done, else the last.
pub fn current_step(stored: &StoredTask) -> Option<&StepRecord> {
    stored.steps.iter().find(|s| !s.status.is_done()).or_else(|| stored.steps.last())
}

fn substep_percent(step: &StepRecord) -> u8 {
    if step.substeps.is_empty() {
        return 0;
    }
    let done = step.substeps.iter().filter(|s| s.done).count();
    u8::try_from(done * 100 / step.substeps.len()).unwrap_or(100)
}

/// The error for a substep name the step does not have, listing the ones it has.
fn unknown_substep(step: &StepRecord, name: &str) -> RuntimeError {
    let known: Vec<&str> = step.substeps.iter().map(|s| s.name.as_str()).collect();
    RuntimeError::InvalidReport(format!(
        "step {} has no substep {name:?} (its substeps: {})",
        step.order,
        if known.is_empty() { "none".to_owned() } else { known.join(", ") }
    ))
}

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod tests;
