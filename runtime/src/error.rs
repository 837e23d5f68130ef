//! The runtime's error type.

use db::{DbError, StepStatus, TaskStatus};

/// What a runtime call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// No such task (or not the caller's).
    #[error("no task {0}")]
    TaskNotFound(String),
    /// The task has no step with that order.
    #[error("task {task_id} has no step {step}")]
    StepNotFound {
        /// The task.
        task_id: String,
        /// The order asked for.
        step: u32,
    },
    /// The action is not allowed in the task's current status.
    #[error("cannot {action} task {task_id}: it is {status}")]
    InvalidTransition {
        /// The task.
        task_id: String,
        /// What was asked, e.g. `resume`.
        action: &'static str,
        /// The task's status.
        status: TaskStatus,
    },
    /// The action is not allowed in the step's current status.
    #[error("cannot {action} step {step} of task {task_id}: it is {status}")]
    InvalidStepTransition {
        /// The task.
        task_id: String,
        /// The step's order.
        step: u32,
        /// What was asked, e.g. `retry`.
        action: &'static str,
        /// The step's status.
        status: StepStatus,
    },
    /// The plan was refused; the message names the problem.
    #[error("invalid plan: {0}")]
    InvalidPlan(String),
    /// A report from an outside worker was refused; the message names the problem.
    #[error("invalid report: {0}")]
    InvalidReport(String),
    /// Another server holds the task.
    #[error("task {0} is run by another server")]
    HeldElsewhere(String),
    /// The runtime is shutting down or the task's actor stopped.
    #[error("the runtime is shutting down")]
    ShuttingDown,
    /// An idempotency key the owner already used, within its window, for another request.
    #[error("idempotency key {0:?} was used for another request in the last 24 hours")]
    IdempotencyKeyReused(String),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}
