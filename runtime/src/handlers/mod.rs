//! Step kinds. Each kind is a [`StepHandler`]; an embedding application registers its own
//! beside the built-in `exec`, `external` and `wait` (see `examples/custom_kind.rs`).

mod exec;
mod external;
mod wait;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use actix::{Message, Recipient};
use db::{LogStream, SubstepRecord};
use futures_util::future::LocalBoxFuture;
use serde_json::Value;
use tokio::sync::watch;

pub use exec::ExecHandler;
pub use external::ExternalHandler;
pub use wait::WaitHandler;

use crate::backlog::{Backlog, Ticket};
use crate::policy::FailureKind;

/// What a step's handler reports while it runs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Report {
    Progress(f64),
    SubstepDone(String),
    Log(LogStream, String),
}

/// A report from a running step's handler (sent by [`StepContext`]).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StepReport {
    pub(crate) step: u32,
    pub(crate) attempt: u32,
    pub(crate) report: Report,
    /// The report's place in its step's backlog, for one that may be dropped.
    pub(crate) ticket: Option<Ticket>,
}

/// What the task actor asks of a running step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepControl {
    /// Keep working.
    Run,
    /// Stop at the next checkpoint until told to run again.
    Pause,
    /// Stop for good; the handler's future is dropped right after.
    Cancel,
}

/// Why a step did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// The work failed; the text is shown to people.
    #[error("{0}")]
    Failed(String),
    /// The step ran out of its time; the text is shown to people.
    #[error("{0}")]
    TimedOut(String),
    /// The step's program exited with a status other than 0 or was killed by a signal; the
    /// text is shown to people.
    #[error("{0}")]
    Exited(String),
    /// The step was cancelled.
    #[error("cancelled")]
    Cancelled,
}

impl StepError {
    /// The kind of failure, for a step's `retry.on`; `None` for a cancelled step.
    pub fn failure_kind(&self) -> Option<FailureKind> {
        match self {
            StepError::Failed(_) => Some(FailureKind::Error),
            StepError::TimedOut(_) => Some(FailureKind::Timeout),
            StepError::Exited(_) => Some(FailureKind::ExitCode),
            StepError::Cancelled => None,
        }
    }
}

/// The kind of work a step does. Implementations must not block: do blocking work in
/// `tokio::task::spawn_blocking` and await it.
pub trait StepHandler: Send + Sync + 'static {
    /// Checks a step's parameters when a plan is submitted; the error names the problem.
    fn validate(&self, params: &Value) -> Result<(), String>;

    /// The work seconds a step with these (valid) parameters takes, when the kind knows it
    /// up front (a timer does): the estimator's prior until the step's kind has history.
    /// A plan's own `estimate_s` takes precedence.
    fn expected_seconds(&self, _params: &Value) -> Option<f64> {
        None
    }

    /// Runs one attempt of the step. Resolves to its output on success. The future is
    /// dropped when the step is cancelled, so clean up in `Drop` where it matters.
    fn run(&self, ctx: StepContext) -> LocalBoxFuture<'static, Result<Option<String>, StepError>>;
}

/// The registered step kinds.
#[derive(Clone)]
pub struct Handlers {
    by_kind: BTreeMap<String, Arc<dyn StepHandler>>,
}

impl std::fmt::Debug for Handlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.by_kind.keys()).finish()
    }
}

impl Handlers {
    /// The built-in kinds: `exec` (with `stderr_tail_lines` of stderr kept for errors),
    /// `external` and `wait`.
    pub fn builtin(stderr_tail_lines: usize) -> Handlers {
        Handlers { by_kind: BTreeMap::new() }
            .with("exec", ExecHandler::new(stderr_tail_lines))
            .with("external", ExternalHandler)
            .with("wait", WaitHandler)
    }

    /// Adds (or replaces) a kind.
    pub fn with(mut self, kind: &str, handler: impl StepHandler) -> Handlers {
        self.by_kind.insert(kind.to_owned(), Arc::new(handler));
        self
    }

    /// The handler of `kind`.
    pub fn get(&self, kind: &str) -> Option<Arc<dyn StepHandler>> {
        self.by_kind.get(kind).cloned()
    }

    /// The known kinds, sorted.
    pub fn kinds(&self) -> Vec<&str> {
        self.by_kind.keys().map(String::as_str).collect()
    }
}

/// What a handler gets to run one attempt of a step: its parameters, its checkpoint, a
/// way to report, and the task actor's pause/cancel requests.
pub struct StepContext {
    pub(crate) task_id: Arc<str>,
    pub(crate) step: u32,
    pub(crate) attempt: u32,
    pub(crate) params: Value,
    pub(crate) substeps: Vec<SubstepRecord>,
    pub(crate) start_percent: u8,
    pub(crate) reports: Recipient<StepReport>,
    /// Bounds the percents and log lines queued to the task actor.
    pub(crate) backlog: Arc<Backlog>,
    /// The substeps reported done in this attempt: each checkpoint is sent once.
    pub(crate) ticked: Mutex<BTreeSet<String>>,
    pub(crate) control: watch::Receiver<StepControl>,
}

impl StepContext {
    /// The task's id.
    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    /// The step's order.
    pub fn step(&self) -> u32 {
        self.step
    }

    /// The step's parameters.
    pub fn params(&self) -> &Value {
        &self.params
    }

    /// The substeps and which are already done (the checkpoint to continue from).
    pub fn substeps(&self) -> &[SubstepRecord] {
        &self.substeps
    }

    /// The percent the step had reached before this attempt (0 on a first run).
    pub fn start_percent(&self) -> u8 {
        self.start_percent
    }

    fn send(&self, report: Report, ticket: Option<Ticket>) {
        // The task actor's mailbox is unbounded, what goes in is not: droppable reports hold
        // a place in the backlog, and each checkpoint is sent once. A report is only lost
        // here if the task actor has stopped, and then the step is being torn down anyway.
        self.reports.do_send(StepReport { step: self.step, attempt: self.attempt, report, ticket });
    }

    /// Sends a report that is dropped while the backlog is full: a later percent (or the
    /// step's end) supersedes a dropped one, and dropped lines are counted in the log.
    fn send_droppable(&self, report: Report) {
        if let Some(ticket) = self.backlog.admit() {
            self.send(report, Some(ticket));
        }
    }

    /// Reports the step's percent (0–100, decimals kept for the estimator; lower values
    /// than before are ignored).
    pub fn progress(&self, percent: impl Into<f64>) {
        let percent: f64 = percent.into();
        // Not a number is no percent at all; anything else is held to 0–100.
        if !percent.is_nan() {
            self.send_droppable(Report::Progress(percent.clamp(0.0, 100.0)));
        }
    }

    /// Ticks off a substep by name (a checkpoint: it is not redone after a restart).
    pub fn substep_done(&self, name: &str) {
        let report = Report::SubstepDone(name.to_owned());
        if !self.substeps.iter().any(|s| s.name == name) {
            // Refused by the task, which logs why: no checkpoint is lost if it is dropped.
            return self.send_droppable(report);
        }
        // A checkpoint is never dropped; sent once each, they are bounded by the substeps.
        if self.ticked.lock().unwrap_or_else(PoisonError::into_inner).insert(name.to_owned()) {
            self.send(report, None);
        }
    }

    /// Adds a line to the step's log.
    pub fn log(&self, stream: LogStream, line: &str) {
        self.send_droppable(Report::Log(stream, line.to_owned()));
    }

    /// What the task actor currently asks.
    pub fn control(&self) -> StepControl {
        *self.control.borrow()
    }

    /// Waits for the next change of what the task actor asks. A dropped sender means the
    /// task is going away, which reads as `Cancel`.
    pub async fn control_changed(&mut self) -> StepControl {
        match self.control.changed().await {
            Ok(()) => *self.control.borrow_and_update(),
            Err(_) => StepControl::Cancel,
        }
    }

    /// A checkpoint: returns at once while running, waits while paused, and fails with
    /// [`StepError::Cancelled`] once cancelled.
    pub async fn checkpoint(&mut self) -> Result<(), StepError> {
        loop {
            match self.control() {
                StepControl::Run => return Ok(()),
                StepControl::Cancel => return Err(StepError::Cancelled),
                StepControl::Pause => {
                    self.control_changed().await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use actix::prelude::*;

    use super::*;

    /// Keeps the reports it is sent.
    #[derive(Default)]
    struct Kept(Vec<Report>);

    impl Actor for Kept {
        type Context = Context<Self>;
    }

    impl Handler<StepReport> for Kept {
        type Result = ();
        fn handle(&mut self, msg: StepReport, _: &mut Self::Context) {
            self.0.push(msg.report);
        }
    }

    #[derive(Message)]
    #[rtype(result = "Vec<Report>")]
    struct Take;

    impl Handler<Take> for Kept {
        type Result = MessageResult<Take>;
        fn handle(&mut self, _: Take, _: &mut Self::Context) -> Self::Result {
            MessageResult(std::mem::take(&mut self.0))
        }
    }

    #[actix::test]
    async fn percents_and_lines_beyond_the_backlog_are_dropped_and_checkpoints_never() {
        // The actor does not run yet, so every report stays queued.
        let mailbox = Context::<Kept>::new();
        let (_control, control) = watch::channel(StepControl::Run);
        let ctx = StepContext {
            task_id: "t1".into(),
            step: 1,
            attempt: 1,
            params: Value::Null,
            substeps: vec![SubstepRecord { name: "a".into(), done: false }],
            start_percent: 0,
            reports: mailbox.address().recipient(),
            backlog: Backlog::new(3),
            ticked: Mutex::default(),
            control,
        };
        for percent in 1..=4 {
            ctx.progress(percent);
        }
        ctx.log(LogStream::Stdout, "dropped");
        ctx.substep_done("a");
        ctx.substep_done("a");
        ctx.substep_done("unknown");
        assert_eq!(ctx.backlog.take_dropped(), 3, "the fourth percent, the line and the unknown substep");
        let kept = mailbox.run(Kept::default());
        let reports = kept.send(Take).await.unwrap();
        let expected = [1.0, 2.0, 3.0].map(Report::Progress).into_iter().chain([Report::SubstepDone("a".into())]);
        assert_eq!(reports, expected.collect::<Vec<_>>(), "the checkpoint once, past a full backlog");
        ctx.log(LogStream::Stdout, "taken");
        assert_eq!(kept.send(Take).await.unwrap(), [Report::Log(LogStream::Stdout, "taken".into())], "room again");
    }
}
