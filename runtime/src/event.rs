//! The events every subscriber of the hub sees. State transitions are committed to the
//! database before they are published; `Progress` and `Log` are published first and
//! persisted, coalesced, by the progress recorder; `EtaUpdated` is derived and not stored.

use std::sync::Arc;

use actix::Message;
use db::LogStream;

use crate::eta::Eta;

/// Something that happened to a task.
#[derive(Debug, Clone, PartialEq, Message)]
#[rtype(result = "()")]
pub struct TaskEvent {
    /// The task.
    pub task_id: Arc<str>,
    /// The owner of the task (subscribers filter by it).
    pub owner: Arc<str>,
    /// For committed events, their seq in the task's event log; for `Progress` and `Log`,
    /// the seq of the newest committed event before them.
    pub seq: i64,
    /// The lease token the event was produced under (the recorder's writes carry it).
    pub lease_token: i64,
    /// When, ms since the epoch.
    pub at: i64,
    /// What happened.
    pub kind: EventKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// The task was created (seq 1 of every task's log).
    TaskCreated,
    /// The task began running.
    TaskStarted,
    /// The task was resumed after this server (or another) stopped while it ran.
    TaskRecovered,
    /// A step started an attempt.
    StepStarted {
        /// The step's order.
        step: u32,
        /// Its name.
        name: Arc<str>,
        /// Which attempt.
        attempt: u32,
    },
    /// A running step's percent rose.
    Progress {
        /// The step's order.
        step: u32,
        /// The attempt the percent belongs to.
        attempt: u32,
        /// The step's percent, 0–100.
        percent: u8,
        /// The task's overall percent, 0–100.
        task_percent: u8,
    },
    /// A substep was ticked off (a checkpoint).
    SubstepDone {
        /// The step's order.
        step: u32,
        /// The substep's 0-based position.
        index: u32,
        /// Its name.
        name: Arc<str>,
    },
    /// A line of a step's output.
    Log {
        /// The step's order.
        step: u32,
        /// Where it came from.
        stream: LogStream,
        /// The text.
        line: Arc<str>,
    },
    /// A step completed.
    StepCompleted {
        /// The step's order.
        step: u32,
        /// Its name.
        name: Arc<str>,
        /// Work time of the attempt, ms.
        duration_ms: i64,
    },
    /// A step failed.
    StepFailed {
        /// The step's order.
        step: u32,
        /// Why.
        error: Arc<str>,
    },
    /// A step was skipped.
    StepSkipped {
        /// The step's order.
        step: u32,
    },
    /// A step waits for a person's approval.
    ApprovalNeeded {
        /// The step's order.
        step: u32,
        /// Its name.
        name: Arc<str>,
    },
    /// A person approved or rejected a step.
    ApprovalGiven {
        /// The step's order.
        step: u32,
        /// Approved (true) or rejected.
        approved: bool,
        /// What they said.
        comment: Option<Arc<str>>,
    },
    /// The task was paused.
    TaskPaused,
    /// The task was resumed.
    TaskResumed,
    /// Every step is completed or skipped.
    TaskCompleted,
    /// A step failed, so the task did.
    TaskFailed {
        /// The step that failed.
        step: u32,
        /// Why.
        error: Arc<str>,
    },
    /// The task was cancelled.
    TaskCancelled,
    /// The estimate of the time remaining changed.
    EtaUpdated(Eta),
}

impl EventKind {
    /// The name of the event in the event log and on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::TaskCreated => "task_created",
            EventKind::TaskStarted => "task_started",
            EventKind::TaskRecovered => "task_recovered",
            EventKind::StepStarted { .. } => "step_started",
            EventKind::Progress { .. } => "progress",
            EventKind::SubstepDone { .. } => "substep_done",
            EventKind::Log { .. } => "log",
            EventKind::StepCompleted { .. } => "step_complete",
            EventKind::StepFailed { .. } => "step_failed",
            EventKind::StepSkipped { .. } => "step_skipped",
            EventKind::ApprovalNeeded { .. } => "approval_needed",
            EventKind::ApprovalGiven { .. } => "approval_given",
            EventKind::TaskPaused => "task_paused",
            EventKind::TaskResumed => "task_resumed",
            EventKind::TaskCompleted => "task_complete",
            EventKind::TaskFailed { .. } => "task_failed",
            EventKind::TaskCancelled => "task_cancelled",
            EventKind::EtaUpdated(_) => "eta",
        }
    }

    /// The step the event concerns, if any.
    pub fn step(&self) -> Option<u32> {
        match self {
            EventKind::StepStarted { step, .. }
            | EventKind::Progress { step, .. }
            | EventKind::SubstepDone { step, .. }
            | EventKind::Log { step, .. }
            | EventKind::StepCompleted { step, .. }
            | EventKind::StepFailed { step, .. }
            | EventKind::StepSkipped { step }
            | EventKind::ApprovalNeeded { step, .. }
            | EventKind::ApprovalGiven { step, .. }
            | EventKind::TaskFailed { step, .. } => Some(*step),
            _ => None,
        }
    }

    /// Details for the event log, as JSON text.
    pub fn detail(&self) -> Option<String> {
        let value = match self {
            EventKind::StepStarted { name, attempt, .. } => serde_json::json!({"name": &**name, "attempt": attempt}),
            EventKind::SubstepDone { index, name, .. } => serde_json::json!({"index": index, "name": &**name}),
            EventKind::StepCompleted { name, duration_ms, .. } => {
                serde_json::json!({"name": &**name, "duration_ms": duration_ms})
            }
            EventKind::StepFailed { error, .. } | EventKind::TaskFailed { error, .. } => {
                serde_json::json!({"error": &**error})
            }
            EventKind::ApprovalNeeded { name, .. } => serde_json::json!({"name": &**name}),
            EventKind::ApprovalGiven { approved, comment, .. } => {
                serde_json::json!({"approved": approved, "comment": comment.as_deref()})
            }
            _ => return None,
        };
        Some(value.to_string())
    }
}
