//! Stepwise's task runtime. A task is an ordered list of steps; each live task is a
//! `TaskActor` that runs its steps one at a time through `StepActor`s and commits every
//! state transition (through the `db` crate, fenced by the task's lease) before it
//! publishes the event to the [`Hub`], which fans events out to subscribers such as the
//! [`ProgressRecorder`] that persists coalesced progress. Each runtime counts what it does in
//! its own [`Metrics`] registry. Step kinds are [`StepHandler`]s:
//! `exec`, `external` and `wait` are built in and applications add their own. Start it with
//! [`Runtime::start`], which also resumes the tasks that were running when the server
//! stopped. The runtime knows nothing of HTTP or wire formats.

mod backlog;
mod clock;
mod error;
mod eta;
mod event;
pub mod handlers;
mod hub;
mod machine;
mod metrics;
mod plan;
mod policy;
mod recorder;
mod runtime;
mod shared;
mod step;
mod store;
mod task;

pub use clock::{Clock, ManualClock, SystemClock};
pub use db::{
    LogStream, Ring, ServerRecord, ServerState, StepRecord, StepStatus, StoredTask, SubstepRecord, TaskRecord,
    TaskStatus,
};
pub use error::RuntimeError;
pub use eta::step_key;
pub use event::{confidence_name, confidence_named, Confidence, Eta, EventKind, StepEta, TaskEvent};
pub use handlers::{Handlers, StepContext, StepControl, StepError, StepHandler, StepReport};
pub use hub::{Hub, Subscribe, SubscribeBounded, SubscriptionId, Topic, Unsubscribe};
pub use machine::{current_step, task_percent, Control, ExternalReport, ReportOutcome, STOPPED_BY_CANCEL};
pub use metrics::Metrics;
pub use plan::{PlanLimits, StepPlan, TaskPlan};
pub use policy::{ApprovalPolicy, Backoff, FailureKind, OnTimeout, RetryPolicy, StepPolicy};
pub use recorder::{Flush, ProgressRecorder, RecorderStats};
pub use runtime::{
    BoundedEvents, CreatedTask, Holder, Member, Recovery, Runtime, RuntimeOptions, IDEMPOTENCY_WINDOW_MS,
};
