//! The `TaskActor`: one per live task. It owns the task's state, runs its steps one by
//! one through `StepActor`s, and makes every transition durable before anyone hears of it:
//! the pure state machine computes the next state, the database commits it (fenced by the
//! task's lease), and only then does the actor adopt it, act on it and publish its events.
//! While a commit is in flight the actor handles no other message, so transitions are
//! strictly ordered.

use std::sync::Arc;

use actix::prelude::*;
use db::{Commit, LogStream, NewEvent, ProgressMark, StepRunRecord, StepStatus, StoredTask, TaskStatus};
use tokio::sync::watch;

use crate::eta::{step_key, Eta};
use crate::event::{EventKind, TaskEvent};
use crate::handlers::{StepContext, StepControl, StepError};
use crate::machine::{Control, Effect, TaskState, Transition};
use crate::runtime::Shared;
use crate::step::{panic_message, StepActor, StepFinished, StopStep};
use crate::store::blocking;
use crate::RuntimeError;

/// What a step's handler reports while it runs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Report {
    Progress(u8),
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
}

/// How an outside worker's report ends an `external` step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportOutcome {
    /// The work succeeded.
    Completed {
        /// What it produced.
        output: Option<String>,
    },
    /// The work failed.
    Failed {
        /// Why.
        error: String,
    },
}

/// A report on an `external` step from the worker doing it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExternalReport {
    /// The step's percent, 0–100.
    pub progress: Option<u8>,
    /// A substep that is done, by name.
    pub substep_done: Option<String>,
    /// A line for the step's log.
    pub log: Option<String>,
    /// Ends the step.
    pub outcome: Option<ReportOutcome>,
}

/// A person's command, for the task actor.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), RuntimeError>")]
pub(crate) struct Command(pub Control);

/// An outside worker's report, for the task actor.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), RuntimeError>")]
pub(crate) struct Reported {
    pub step: u32,
    pub report: ExternalReport,
}

/// Asks for the task's current state.
#[derive(Debug, Message)]
#[rtype(result = "StoredTask")]
pub(crate) struct GetState;

/// Asks for the task's current state and estimate.
#[derive(Debug, Message)]
#[rtype(result = "(StoredTask, Option<Eta>)")]
pub(crate) struct GetView;

/// How often a live task re-estimates its ETA from progress alone.
const ETA_EVERY_MS: i64 = 1_000;

/// How often a running task re-estimates when nothing happens: a step that reports
/// nothing still moves its estimate (an overrun raises it). One estimate is some tens of
/// microseconds per running task.
const SILENT_ETA_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// How long to wait before trying again to record a step's end.
const STEP_END_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Progress samples kept for the running step.
const MAX_SAMPLES: usize = 32;

/// The task's `task_recovered` event was committed with this seq: publish it.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Recovered {
    pub seq: i64,
}

/// The server is stopping: stop the running step (killing its programs) without changing
/// the task's stored state, so the next start resumes it.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Shutdown;

/// The running step: its actor and the channel that pauses or cancels it.
struct RunningStep {
    order: u32,
    actor: Addr<StepActor>,
    control: watch::Sender<StepControl>,
}

/// Runs one task.
pub(crate) struct TaskActor {
    state: TaskState,
    task_id: Arc<str>,
    owner: Arc<str>,
    /// This actor's registry entry, so a stopping actor removes only itself.
    pub generation: u64,
    shared: Arc<Shared>,
    step: Option<RunningStep>,
    /// Whether this server holds the task's lease; an actor loaded only to be controlled
    /// takes it before its first write.
    holds_lease: bool,
    /// Effects to apply once the actor has started (after a recovery).
    startup: Vec<Effect>,
    /// The latest estimate, when it was made, the last one published with the running
    /// step's work time then, and the running step's progress samples.
    eta: Option<Eta>,
    eta_at: i64,
    published: Option<(Eta, i64)>,
    samples: Vec<ProgressMark>,
}

impl TaskActor {
    pub fn new(stored: StoredTask, generation: u64, shared: Arc<Shared>) -> TaskActor {
        TaskActor {
            holds_lease: false,
            task_id: stored.task.id.as_str().into(),
            owner: stored.task.owner.as_str().into(),
            state: TaskState::new(stored),
            generation,
            shared,
            step: None,
            startup: Vec::new(),
            eta: None,
            eta_at: i64::MIN,
            published: None,
            samples: Vec::new(),
        }
    }

    /// An actor for a task this server has just leased after a restart: the state machine
    /// decides what continues once it starts.
    pub fn recovering(stored: StoredTask, generation: u64, shared: Arc<Shared>) -> TaskActor {
        let mut actor = TaskActor::new(stored, generation, shared);
        actor.holds_lease = true;
        let now = actor.shared.clock.now_ms();
        actor.startup = actor.state.recover(now).effects;
        actor
    }

    fn token(&self) -> i64 {
        self.state.stored.task.lease_token
    }

    fn event(&self, seq: i64, at: i64, kind: EventKind) -> TaskEvent {
        TaskEvent {
            task_id: Arc::clone(&self.task_id),
            owner: Arc::clone(&self.owner),
            seq,
            lease_token: self.token(),
            at,
            kind,
        }
    }

    fn publish(&self, kind: EventKind, at: i64) {
        let event = self.event(self.state.stored.task.last_seq, at, kind);
        self.shared.hub.do_send(event);
    }

    /// Commits `next` (the state after `transition`) and then adopts it, applies the
    /// effects and publishes the events. Takes the lease first if the actor has none.
    fn commit(&mut self, next: TaskState, transition: Transition) -> ResponseActFuture<Self, Result<(), RuntimeError>> {
        let at = self.shared.clock.now_ms();
        let task = (next.stored.task != self.state.stored.task).then(|| next.stored.task.clone());
        let steps: Vec<_> = next
            .stored
            .steps
            .iter()
            .zip(&self.state.stored.steps)
            .filter(|(new, old)| new != old)
            .map(|(new, _)| new.clone())
            .collect();
        let events: Vec<NewEvent> = transition
            .events
            .iter()
            .map(|kind| NewEvent {
                kind: kind.name(),
                step: kind.step(),
                detail: kind.detail(),
                progress: kind.step().and_then(|order| progress_of(&next.stored, order, kind)),
            })
            .collect();
        let step_run = transition.completed_run.and_then(|(order, duration_ms)| {
            let step = next.stored.steps.iter().find(|s| s.order == order)?;
            Some(StepRunRecord {
                task_id: self.task_id.to_string(),
                step: order,
                attempt: step.attempts,
                step_key: step_key(step),
                complexity: next.stored.task.complexity,
                duration_ms,
                finished_at: at,
                progress: self.samples.clone(),
            })
        });
        // A substep done that raised its step's percent is a progress sample, like a report.
        let raised_by_substep = transition.events.iter().find_map(|e| match e {
            EventKind::SubstepDone { step, .. } => {
                let percent = |steps: &[db::StepRecord]| steps.iter().find(|s| s.order == *step).map(|s| s.progress);
                (percent(&next.stored.steps) > percent(&self.state.stored.steps)).then_some(*step)
            }
            _ => None,
        });
        // A task that completes is learned from its runs as stored, as training after a
        // restart reads them, so both know the same (also of steps run before a restart).
        let completes = next.status() == TaskStatus::Completed;
        let needs_lease = !self.holds_lease;
        let release_lease = transition.effects.contains(&Effect::Finish);
        let (task_id, token, owner, ttl) =
            (self.task_id.to_string(), self.token(), self.shared.instance_id.clone(), self.shared.lease_ttl_ms);
        let work = blocking(&self.shared.db, move |conn| {
            let token = match needs_lease {
                true => match db::acquire_lease(conn, &task_id, &owner, ttl, at)? {
                    Some(token) => token,
                    None => return Ok(None),
                },
                false => token,
            };
            let change = Commit {
                task_id: &task_id,
                lease_token: token,
                at,
                task: task.as_ref(),
                steps: steps.iter().collect(),
                events,
                step_run,
                release_lease,
            };
            let seq = db::commit(conn, &change)?;
            // The commit stands whatever this read does: a task not learned from is a
            // lesser estimate, a commit taken for failed would be a wrong state.
            let runs = match completes {
                true => db::task_step_runs(conn, &task_id).unwrap_or_else(|error| {
                    tracing::warn!(task_id, %error, "could not read the completed task's runs to learn from");
                    Vec::new()
                }),
                false => Vec::new(),
            };
            Ok(Some((seq, token, runs)))
        });
        Box::pin(actix::fut::wrap_future(work).map(move |result, act: &mut TaskActor, ctx| {
            let (last_seq, token, runs) = match result {
                Ok(Some(committed)) => committed,
                Ok(None) => return Err(RuntimeError::HeldElsewhere(act.task_id.to_string())),
                Err(error) => return Err(act.commit_failed(error, ctx)),
            };
            act.holds_lease = true;
            act.state = next;
            act.state.stored.task.last_seq = last_seq;
            act.state.stored.task.lease_token = token;
            let first_seq = last_seq - transition.events.len() as i64 + 1;
            let step_started = transition.events.iter().any(|e| matches!(e, EventKind::StepStarted { .. }));
            for (seq, kind) in (first_seq..).zip(transition.events) {
                act.shared.hub.do_send(act.event(seq, at, kind));
            }
            let still_current = act.state.stored.steps.iter().find(|s| {
                Some(s.order) == raised_by_substep && matches!(s.status, StepStatus::Running | StepStatus::Paused)
            });
            if let Some(percent) = still_current.map(|s| s.progress) {
                act.record_sample(percent, at);
            }
            if step_started {
                act.samples.clear();
            }
            if completes {
                act.shared.eta.learn(&runs);
            }
            for effect in transition.effects {
                act.apply(effect, ctx);
            }
            act.update_eta(true);
            Ok(())
        }))
    }

    fn commit_failed(&mut self, error: RuntimeError, ctx: &mut Context<Self>) -> RuntimeError {
        if let RuntimeError::Db(db::DbError::LeaseLost { .. }) = error {
            tracing::warn!(task = %self.task_id, "lease lost; another server runs this task now");
            self.stop_step();
            ctx.stop();
        }
        error
    }

    fn apply(&mut self, effect: Effect, ctx: &mut Context<Self>) {
        match effect {
            Effect::StartStep(order) => self.start_step(order, StepControl::Run, ctx),
            Effect::PauseStep => self.signal_step(StepControl::Pause),
            Effect::ResumeStep(order) => match &self.step {
                Some(running) if running.order == order => self.signal_step(StepControl::Run),
                _ => self.start_step(order, StepControl::Run, ctx),
            },
            Effect::StopStep => self.stop_step(),
            Effect::Finish => self.finish(ctx),
        }
    }

    fn start_step(&mut self, order: u32, control: StepControl, ctx: &mut Context<Self>) {
        self.stop_step();
        let Some(step) = self.state.stored.steps.iter().find(|s| s.order == order) else { return };
        let attempt = step.attempts;
        let (sender, receiver) = watch::channel(control);
        let context = StepContext {
            task_id: Arc::clone(&self.task_id),
            step: order,
            attempt,
            params: serde_json::from_str(&step.params).unwrap_or_default(),
            substeps: step.substeps.clone(),
            start_percent: step.progress,
            reports: ctx.address().recipient(),
            control: receiver,
        };
        let work = match self.shared.handlers.get(&step.kind) {
            Some(handler) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.run(context)))
                .unwrap_or_else(|panic| failed_now(panic_message(&panic))),
            None => failed_now(format!("no handler for step kind {:?} on this server", step.kind)),
        };
        let done = ctx.address().downgrade().recipient();
        let actor = StepActor { step: order, attempt, work: Some(work), done }.start();
        self.step = Some(RunningStep { order, actor, control: sender });
    }

    fn signal_step(&self, control: StepControl) {
        if let Some(running) = &self.step {
            // Ignored if the handler has already returned: its StepFinished is on the way.
            let _ = running.control.send(control);
        }
    }

    fn stop_step(&mut self) {
        if let Some(running) = self.step.take() {
            let _ = running.control.send(StepControl::Cancel);
            running.actor.do_send(StopStep);
        }
    }

    /// The task has ended and its lease was given up in the same commit: stop at once, so
    /// no later command is handled here (those get a closed mailbox and go to a fresh
    /// actor loaded from the database).
    fn finish(&mut self, ctx: &mut Context<Self>) {
        self.stop_step();
        self.holds_lease = false;
        ctx.stop();
    }

    /// Runs a state-machine step on a copy of the state and commits it, holding the
    /// mailbox until the commit is done.
    fn transit(
        &mut self,
        change: impl FnOnce(&mut TaskState, i64) -> Result<Transition, RuntimeError>,
    ) -> ResponseActFuture<Self, Result<(), RuntimeError>> {
        let mut next = self.state.clone();
        match change(&mut next, self.shared.clock.now_ms()) {
            Ok(transition) if transition.events.is_empty() && transition.effects.is_empty() => {
                Box::pin(actix::fut::ready(Ok(())))
            }
            Ok(transition) => self.commit(next, transition),
            Err(error) => Box::pin(actix::fut::ready(Err(error))),
        }
    }

    fn raise_progress(&mut self, step: u32, attempt: u32, percent: u8) {
        if self.state.raise_progress(step, attempt, percent) {
            let task_percent = self.state.percent();
            let at = self.shared.clock.now_ms();
            self.publish(EventKind::Progress { step, attempt, percent, task_percent }, at);
            self.record_sample(percent, at);
            self.update_eta(false);
        }
    }

    /// Keeps the running step's `percent` at `at` for the estimator.
    fn record_sample(&mut self, percent: u8, at: i64) {
        if self.samples.len() == MAX_SAMPLES {
            // Keep the shape of the curve in bounded memory: drop every other old sample.
            let mut index = 0;
            self.samples.retain(|_| {
                index += 1;
                index % 2 == 0
            });
        }
        self.samples.push(ProgressMark { elapsed_ms: self.running_ms(at), percent });
    }

    /// Work time so far of the step in progress (running, or paused part-way).
    fn running_ms(&self, now: i64) -> i64 {
        let Some(step) =
            self.state.stored.steps.iter().find(|s| matches!(s.status, StepStatus::Running | StepStatus::Paused))
        else {
            return 0;
        };
        // `running_since` is only set while the step runs.
        step.work_ms + self.state.running_since.map_or(0, |since| (now - since).max(0))
    }

    /// Re-estimates the time remaining (at most once per ETA_EVERY_MS unless `force`) and
    /// publishes it when it moved away from what subscribers show: the last published
    /// estimate, counted down by the work done since (as the web page counts it).
    fn update_eta(&mut self, force: bool) {
        let now = self.shared.clock.now_ms();
        if !force && now.saturating_sub(self.eta_at) < ETA_EVERY_MS {
            return;
        }
        let running_ms = self.running_ms(now);
        let eta = match self.state.status() {
            TaskStatus::Running | TaskStatus::Paused | TaskStatus::Approval => {
                self.shared.eta.estimate(&self.state.stored, running_ms, &self.samples)
            }
            _ => None,
        };
        self.eta_at = now;
        let moved = match (&self.published, &eta) {
            (Some((old, old_ms)), Some(new)) => {
                new.moved_from(&old.counted_down(running_ms.saturating_sub(*old_ms).max(0) as f64 / 1000.0))
            }
            (None, None) => false,
            _ => true,
        };
        if moved {
            if let Some(eta) = &eta {
                self.publish(EventKind::EtaUpdated(eta.clone()), now);
            }
            self.published = eta.clone().map(|eta| (eta, running_ms));
        }
        self.eta = eta;
    }

    fn log(&self, step: u32, stream: LogStream, line: &str) {
        self.publish(EventKind::Log { step, stream, line: line.into() }, self.shared.clock.now_ms());
    }

    fn is_current(&self, step: u32, attempt: u32) -> bool {
        self.state.stored.steps.iter().any(|s| {
            s.order == step && s.attempts == attempt && matches!(s.status, StepStatus::Running | StepStatus::Paused)
        })
    }
}

fn failed_now(error: String) -> futures_util::future::LocalBoxFuture<'static, Result<Option<String>, StepError>> {
    Box::pin(std::future::ready(Err(StepError::Failed(error))))
}

/// The `task_progress` row an event records: the step's percent and status after it.
fn progress_of(stored: &StoredTask, order: u32, kind: &EventKind) -> Option<(u8, StepStatus)> {
    match kind {
        EventKind::StepStarted { .. }
        | EventKind::SubstepDone { .. }
        | EventKind::StepCompleted { .. }
        | EventKind::StepFailed { .. }
        | EventKind::StepSkipped { .. }
        | EventKind::ApprovalNeeded { .. } => {
            let step = stored.steps.iter().find(|s| s.order == order)?;
            Some((step.progress, step.status))
        }
        _ => None,
    }
}

impl Actor for TaskActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        for effect in std::mem::take(&mut self.startup) {
            self.apply(effect, ctx);
        }
        ctx.run_interval(SILENT_ETA_EVERY, |act, _| {
            if act.state.status() == TaskStatus::Running {
                act.update_eta(false);
            }
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.stop_step();
        self.shared.forget(&self.task_id, self.generation);
    }
}

impl Handler<Command> for TaskActor {
    type Result = AtomicResponse<Self, Result<(), RuntimeError>>;
    fn handle(&mut self, Command(control): Command, _: &mut Self::Context) -> Self::Result {
        let commit = self.transit(|state, now| state.control(&control, now));
        // An actor for a task that is not live (loaded only to be controlled) stops once
        // the command is handled, unless the command made the task live.
        AtomicResponse::new(Box::pin(commit.map(|result, act: &mut TaskActor, ctx| {
            if !act.state.status().is_live() && act.step.is_none() {
                ctx.stop();
            }
            result
        })))
    }
}

impl Handler<StepReport> for TaskActor {
    type Result = ();
    fn handle(&mut self, msg: StepReport, ctx: &mut Self::Context) {
        if !self.is_current(msg.step, msg.attempt) {
            return;
        }
        match msg.report {
            Report::Progress(percent) => self.raise_progress(msg.step, msg.attempt, percent),
            Report::Log(stream, line) => self.log(msg.step, stream, &line),
            Report::SubstepDone(name) => {
                let commit = self.transit(|state, _| state.substep_done(msg.step, msg.attempt, &name));
                ctx.wait(commit.map(move |result, act: &mut TaskActor, _| {
                    if let Err(error) = result {
                        act.log(msg.step, LogStream::Runtime, &error.to_string());
                    }
                }));
            }
        }
    }
}

impl Handler<StepFinished> for TaskActor {
    type Result = ();
    fn handle(&mut self, msg: StepFinished, ctx: &mut Self::Context) {
        if self.step.as_ref().is_some_and(|s| s.order == msg.step) {
            self.step = None;
        }
        let retry = msg.clone();
        let commit = self.transit(|state, now| {
            Ok(match msg.result {
                Ok(output) => state.step_succeeded(msg.step, msg.attempt, output, now),
                // A cancelled step's fate was already committed by whoever cancelled it.
                Err(StepError::Cancelled) => Transition::default(),
                Err(StepError::Failed(error)) => state.step_failed(msg.step, msg.attempt, error, now),
            })
        });
        ctx.wait(commit.map(move |result, act: &mut TaskActor, ctx| match result {
            Ok(()) | Err(RuntimeError::Db(db::DbError::LeaseLost { .. })) => {}
            // The step's end must not be lost, or the task would wait forever for a step
            // that has stopped: try again until the database answers.
            Err(error) => {
                tracing::error!(task = %act.task_id, %error, "could not record the end of a step; retrying");
                ctx.notify_later(retry, STEP_END_RETRY);
            }
        }));
    }
}

impl Handler<Reported> for TaskActor {
    type Result = AtomicResponse<Self, Result<(), RuntimeError>>;
    fn handle(&mut self, Reported { step, report }: Reported, _: &mut Self::Context) -> Self::Result {
        let refuse = |e| AtomicResponse::new(Box::pin(actix::fut::ready(Err(e))));
        let Some(record) = self.state.stored.steps.iter().find(|s| s.order == step) else {
            return refuse(RuntimeError::StepNotFound { task_id: self.task_id.to_string(), step });
        };
        if record.status != StepStatus::Running {
            return refuse(RuntimeError::InvalidStepTransition {
                task_id: self.task_id.to_string(),
                step,
                action: "report on",
                status: record.status,
            });
        }
        if record.kind != "external" {
            return refuse(RuntimeError::InvalidReport(format!(
                "step {step} is a {:?} step; only external steps take reports",
                record.kind
            )));
        }
        // A report is taken whole or not at all: refuse an unknown substep before its log
        // line and percent are applied.
        if let Some(name) = report.substep_done.as_deref().filter(|n| !record.substeps.iter().any(|s| s.name == *n)) {
            return refuse(crate::machine::unknown_substep(record, name));
        }
        let attempt = record.attempts;
        if let Some(line) = &report.log {
            self.log(step, LogStream::Stdout, line);
        }
        if let Some(percent) = report.progress {
            self.raise_progress(step, attempt, percent);
        }
        let commit = self.transit(move |state, now| {
            let mut transition = match &report.substep_done {
                Some(name) => state.substep_done(step, attempt, name)?,
                None => Transition::default(),
            };
            let ended = match report.outcome {
                Some(ReportOutcome::Completed { output }) => state.step_succeeded(step, attempt, output, now),
                Some(ReportOutcome::Failed { error }) => state.step_failed(step, attempt, error, now),
                None => Transition::default(),
            };
            transition.events.extend(ended.events);
            transition.effects.extend(ended.effects);
            transition.completed_run = transition.completed_run.or(ended.completed_run);
            Ok(transition)
        });
        AtomicResponse::new(Box::pin(commit.map(move |result, act: &mut TaskActor, _| {
            // The handler of an external step only waits; once the step ended, stop it.
            if act.step.as_ref().is_some_and(|s| s.order == step) && !act.is_current(step, attempt) {
                act.stop_step();
            }
            result
        })))
    }
}

impl Handler<GetState> for TaskActor {
    type Result = MessageResult<GetState>;
    fn handle(&mut self, _: GetState, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.state.stored.clone())
    }
}

impl Handler<GetView> for TaskActor {
    type Result = MessageResult<GetView>;
    fn handle(&mut self, _: GetView, _: &mut Self::Context) -> Self::Result {
        self.update_eta(false);
        let mut view = self.state.stored.clone();
        // A view shows the running step's work time up to now, not up to its last commit.
        let running_ms = self.running_ms(self.shared.clock.now_ms());
        if let Some(step) = view.steps.iter_mut().find(|s| s.status == StepStatus::Running) {
            step.work_ms = running_ms;
        }
        MessageResult((view, self.eta.clone()))
    }
}

impl Handler<Recovered> for TaskActor {
    type Result = ();
    fn handle(&mut self, Recovered { seq }: Recovered, _: &mut Self::Context) {
        self.state.stored.task.last_seq = self.state.stored.task.last_seq.max(seq);
        let event = self.event(seq, self.shared.clock.now_ms(), EventKind::TaskRecovered);
        self.shared.hub.do_send(event);
    }
}

impl Handler<Shutdown> for TaskActor {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        self.stop_step();
        ctx.stop();
    }
}
