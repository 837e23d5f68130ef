//! The `TaskActor`: one per live task. It owns the task's state, runs its steps one by
//! one through `StepActor`s, and makes every transition durable before anyone hears of it:
//! the pure state machine computes the next state, the database commits it (fenced by the
//! task's lease), and only then does the actor adopt it, act on it and publish its events.
//! While a commit is in flight the actor handles no other message, so transitions are
//! strictly ordered. What a commit writes is built purely in `record`; the estimate is kept
//! by an `EtaTracker`; which reports are taken is the state machine's to say.

use std::future::Future;
use std::sync::Arc;

use actix::prelude::*;
use db::{LogStream, StepRunRecord, StepStatus, StoredTask, TaskStatus};
use tokio::sync::watch;

use crate::backlog::Backlog;
use crate::eta::EtaTracker;
use crate::event::{Eta, EventKind, TaskEvent};
use crate::handlers::{Report, StepContext, StepControl, StepError, StepReport};
use crate::hub::Transient;
use crate::machine::{Control, Effect, ExternalReport, TaskState, Transition};
use crate::shared::Shared;
use crate::step::{panic_message, StepActor, StepFinished, StopStep};
use crate::store::blocking;
use crate::RuntimeError;

mod record;

use record::{commit_record, CommitRecord};

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

/// How often a running task re-estimates when nothing happens: a step that reports
/// nothing still moves its estimate (an overrun raises it). One estimate is some tens of
/// microseconds per running task.
const SILENT_ETA_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Percents and log lines a step may have queued to its task actor; more are dropped.
const MAX_QUEUED_REPORTS: usize = 1_024;

/// How long to wait before trying again to record a step's end.
const STEP_END_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

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
    eta: EtaTracker,
    /// Whether the task counts against this server's limit now (see [`TaskActor::recount`]).
    counted: bool,
    /// The estimate made when this actor started the task, seconds: what its real work
    /// time is held against once it completes (a task resumed after a restart has none).
    estimate_at_start: Option<f64>,
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
            eta: EtaTracker::default(),
            counted: false,
            estimate_at_start: None,
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

    /// Publishes a transient event (a percent, a log line, an estimate). While the hub's
    /// backlog is full it is dropped: a later percent or estimate supersedes it, and the hub
    /// counts what it lost.
    fn publish(&self, kind: EventKind, at: i64) {
        let Some(ticket) = self.shared.transient.admit() else { return };
        let event = self.event(self.state.stored.task.last_seq, at, kind);
        self.shared.hub.do_send(Transient { event, ticket });
    }

    /// Commits `next` (the state after `transition`) and then adopts it, applies the
    /// effects and publishes the events. Takes the lease first if the actor has none.
    fn commit(&mut self, next: TaskState, transition: Transition) -> ResponseActFuture<Self, Result<(), RuntimeError>> {
        let at = self.shared.clock.now_ms();
        let record = commit_record(&self.state, &next, &transition, at, self.eta.samples());
        let write = self.write(record, next.status() == TaskStatus::Completed, at);
        let started = transition.events.contains(&EventKind::TaskStarted);
        Box::pin(actix::fut::wrap_future(write).map(move |result, act: &mut TaskActor, ctx| {
            let (last_seq, token) = match result {
                Ok(Some(committed)) => committed,
                Ok(None) => return Err(act.held_elsewhere(ctx)),
                Err(error) => return Err(act.commit_failed(error, ctx)),
            };
            act.eta.committed(&act.state, &next, &transition.events, at);
            act.adopt(next, last_seq, token);
            act.count(&transition.events);
            let first_seq = last_seq - transition.events.len() as i64 + 1;
            for (seq, kind) in (first_seq..).zip(transition.events) {
                // Committed events are never dropped; they are bounded by the commits, which
                // this actor awaits one at a time.
                act.shared.hub.do_send(act.event(seq, at, kind));
            }
            for effect in transition.effects {
                act.apply(effect, ctx);
            }
            act.schedule_timers(ctx);
            act.update_eta(true);
            if started {
                act.estimate_at_start = act.eta.latest().map(|eta| eta.seconds);
            }
            Ok(())
        }))
    }

    /// Counts the steps a committed transition started or ended and, when it completed the
    /// task, how its estimate at start fared.
    fn count(&self, events: &[EventKind]) {
        let metrics = &self.shared.metrics;
        metrics.committed(&self.state.stored.steps, events);
        if let Some(estimated_s) = self.estimate_at_start.filter(|_| events.contains(&EventKind::TaskCompleted)) {
            let work_ms: i64 = self.state.stored.steps.iter().map(|step| step.work_ms).sum();
            metrics.task_completed(estimated_s, work_ms as f64 / 1000.0);
        }
    }

    /// Writes `record` (taking the lease first if the actor has none) on the blocking pool
    /// and, for a task it `completes`, has the estimator learn from it before answering.
    /// Resolves to the last seq and the lease token, or `None` if another server holds the
    /// lease.
    fn write(
        &self,
        record: CommitRecord,
        completes: bool,
        at: i64,
    ) -> impl Future<Output = Result<Option<(i64, i64)>, RuntimeError>> + 'static {
        let needs_lease = !self.holds_lease;
        let (task_id, token, owner, ttl) =
            (self.task_id.to_string(), self.token(), self.shared.instance_id.clone(), self.shared.lease_ttl_ms);
        let (shared, learner) = (Arc::clone(&self.shared), Arc::clone(&self.shared));
        let written = blocking(&self.shared.db, move |conn| {
            let token = match needs_lease {
                true => match db::acquire_lease(conn, &task_id, &owner, ttl, at)? {
                    Some(token) => token,
                    None => return Ok(None),
                },
                false => token,
            };
            let began = std::time::Instant::now();
            let seq = db::commit(conn, &record.commit(&task_id, token, at))?;
            shared.metrics.commit_took(began.elapsed());
            // A task that completes is learned from its runs as stored, as training after a
            // restart reads them, so both know the same (also of steps run before a restart).
            let runs = match completes {
                true => stored_runs(conn, &task_id),
                false => Vec::new(),
            };
            Ok(Some((seq, token, runs)))
        });
        async move {
            let Some((seq, token, runs)) = written.await? else { return Ok(None) };
            if completes {
                // Off this actor's thread, so no other task's estimate waits for it; awaited,
                // so whoever completed the task finds it learned.
                learner.eta.learn(runs).await;
            }
            Ok(Some((seq, token)))
        }
    }

    /// Takes the committed state: `last_seq` is its newest event, `token` the lease.
    fn adopt(&mut self, next: TaskState, last_seq: i64, token: i64) {
        self.holds_lease = true;
        self.state = next;
        self.state.stored.task.last_seq = last_seq;
        self.state.stored.task.lease_token = token;
        self.recount();
    }

    /// Counts the task against this server's limit while it runs here, and frees its place
    /// when it stops running (paused, waiting, ended, moved, or its actor stopped).
    fn recount(&mut self) {
        let counts = self.holds_lease && self.state.status() == TaskStatus::Running;
        match (self.counted, counts) {
            (false, true) => self.shared.capacity.take(),
            (true, false) => self.shared.capacity.free(),
            _ => {}
        }
        self.counted = counts;
    }

    /// Another live server holds the lease this actor (loaded for a request) could not take:
    /// it wrote nothing, and stops rather than keep a copy of the task that would go stale.
    fn held_elsewhere(&mut self, ctx: &mut Context<Self>) -> RuntimeError {
        // Out of the registry before the caller hears back, not only once stopped.
        self.shared.registry.forget(&self.task_id, self.generation);
        ctx.stop();
        RuntimeError::HeldElsewhere(self.task_id.to_string())
    }

    fn commit_failed(&mut self, error: RuntimeError, ctx: &mut Context<Self>) -> RuntimeError {
        if let RuntimeError::Db(db::DbError::LeaseLost { .. }) = error {
            tracing::warn!(task_id = %self.task_id, "lease lost; another server runs this task now");
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
            backlog: Backlog::new(MAX_QUEUED_REPORTS),
            ticked: Default::default(),
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
            // Once per step actor: it is taken out of `self.step` here.
            running.actor.do_send(StopStep);
        }
    }

    /// The task has ended and its lease was given up in the same commit: stop at once, so
    /// no later command is handled here (those get a closed mailbox and go to a fresh
    /// actor loaded from the database).
    fn finish(&mut self, ctx: &mut Context<Self>) {
        self.stop_step();
        self.holds_lease = false;
        self.recount();
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

    /// Applies what the clock made due (a retry's start, an approval's reminder or
    /// deadline), holding the mailbox until it is committed so it fires once. The timers are
    /// checked on every tick of the silent-step interval, and at the time the next one is
    /// due ([`TaskActor::schedule_timers`]).
    fn fire_timers(&mut self, ctx: &mut Context<Self>) {
        let now = self.shared.clock.now_ms();
        if !self.holds_lease || self.state.next_due().is_none_or(|due| due > now) {
            return;
        }
        let commit = self.transit(|state, now| Ok(state.timers(now)));
        ctx.wait(commit.map(|result, act: &mut TaskActor, _| {
            // Not lost: the timers stay due in the stored task and fire on the next tick.
            if let Err(error) = result {
                tracing::warn!(task_id = %act.task_id, %error, "could not apply a step's timer; trying again");
            }
        }));
    }

    /// Checks the timers when the next one is due, if that is before the next tick.
    fn schedule_timers(&mut self, ctx: &mut Context<Self>) {
        let Some(due) = self.state.next_due() else { return };
        let wait = std::time::Duration::from_millis(due.saturating_sub(self.shared.clock.now_ms()).max(0) as u64);
        if wait < SILENT_ETA_EVERY {
            ctx.run_later(wait, |act, ctx| act.fire_timers(ctx));
        }
    }

    /// Raises the step's percent. Documents and messages show whole percents; the
    /// estimator learns from every rise, decimals included.
    fn raise_progress(&mut self, step: u32, attempt: u32, percent: f64) {
        let at = self.shared.clock.now_ms();
        let whole = percent.floor() as u8;
        if self.state.raise_progress(step, attempt, whole) {
            let task_percent = self.state.percent();
            self.publish(EventKind::Progress { step, attempt, percent: whole, task_percent }, at);
            self.shared.metrics.progress_event();
        }
        let rose = self.eta.samples().last().is_none_or(|last| percent > last.percent);
        if rose && self.state.is_current(step, attempt) {
            self.eta.record_sample(&self.state, percent, at);
            self.update_eta(false);
        }
    }

    /// Re-estimates (at most once a second unless `force`) and publishes the estimate when
    /// it moved away from what subscribers show.
    fn update_eta(&mut self, force: bool) {
        let now = self.shared.clock.now_ms();
        if let Some(eta) = self.eta.update(&self.shared.eta, &self.state, now, force) {
            self.publish(EventKind::EtaUpdated(eta), now);
        }
    }

    fn log(&self, step: u32, stream: LogStream, line: &str) {
        self.publish(EventKind::Log { step, stream, line: line.into() }, self.shared.clock.now_ms());
    }
}

fn failed_now(error: String) -> futures_util::future::LocalBoxFuture<'static, Result<Option<String>, StepError>> {
    Box::pin(std::future::ready(Err(StepError::Failed(error))))
}

/// A completed task's step runs as stored. The commit stands whatever this read does: a
/// task not learned from is a lesser estimate, a commit taken for failed a wrong state.
fn stored_runs(conn: &mut db::AnyConnection, task_id: &str) -> Vec<StepRunRecord> {
    db::task_step_runs(conn, task_id).unwrap_or_else(|error| {
        tracing::warn!(task_id, %error, "could not read the completed task's runs to learn from");
        Vec::new()
    })
}

impl Actor for TaskActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.recount();
        for effect in std::mem::take(&mut self.startup) {
            self.apply(effect, ctx);
        }
        self.schedule_timers(ctx);
        ctx.run_interval(SILENT_ETA_EVERY, |act, ctx| {
            act.fire_timers(ctx);
            if act.state.status() == TaskStatus::Running {
                act.update_eta(false);
            }
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.stop_step();
        self.holds_lease = false;
        self.recount();
        self.shared.registry.forget(&self.task_id, self.generation);
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
        if !self.state.is_current(msg.step, msg.attempt) {
            return;
        }
        if let Some(dropped) = msg.ticket.as_ref().map(|t| t.backlog().take_dropped()).filter(|n| *n > 0) {
            let note =
                format!("{dropped} percents or log lines dropped: the step reported faster than they were taken");
            self.log(msg.step, LogStream::Runtime, &note);
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
                Err(error) => match error.failure_kind() {
                    Some(kind) => state.step_failed(msg.step, msg.attempt, error.to_string(), kind, now),
                    // A cancelled step's fate was already committed by whoever cancelled it.
                    None => Transition::default(),
                },
            })
        });
        ctx.wait(commit.map(move |result, act: &mut TaskActor, ctx| match result {
            Ok(()) | Err(RuntimeError::Db(db::DbError::LeaseLost { .. })) => {}
            // The step's end must not be lost, or the task would wait forever for a step
            // that has stopped: try again until the database answers.
            Err(error) => {
                tracing::error!(task_id = %act.task_id, step = retry.step, %error, "could not record the end of a step; retrying");
                ctx.notify_later(retry, STEP_END_RETRY);
            }
        }));
    }
}

impl Handler<Reported> for TaskActor {
    type Result = AtomicResponse<Self, Result<(), RuntimeError>>;
    fn handle(&mut self, Reported { step, report }: Reported, _: &mut Self::Context) -> Self::Result {
        if self.holds_lease {
            return AtomicResponse::new(self.take_report(step, report));
        }
        // An actor loaded for a request holds no lease yet, and a report that only moves a
        // percent or adds a log line commits nothing that would take it: without the lease
        // the recorder's fenced write would drop what was acknowledged.
        let leased = self.take_lease();
        AtomicResponse::new(Box::pin(leased.then(move |leased, act: &mut TaskActor, _| match leased {
            Ok(()) => act.take_report(step, report),
            Err(error) => Box::pin(actix::fut::ready(Err(error))),
        })))
    }
}

impl TaskActor {
    fn take_report(&mut self, step: u32, report: ExternalReport) -> ResponseActFuture<Self, Result<(), RuntimeError>> {
        let attempt = match self.state.check_report(step, &report) {
            Ok(attempt) => attempt,
            Err(refused) => return Box::pin(actix::fut::ready(Err(refused))),
        };
        if let Some(line) = &report.log {
            self.log(step, LogStream::Stdout, line);
        }
        if let Some(percent) = report.progress {
            self.raise_progress(step, attempt, percent);
        }
        let commit = self.transit(move |state, now| state.external_report(step, attempt, report, now));
        Box::pin(commit.map(move |result, act: &mut TaskActor, _| {
            // The handler of an external step only waits; once the step ended, stop it.
            if act.step.as_ref().is_some_and(|s| s.order == step) && !act.state.is_current(step, attempt) {
                act.stop_step();
            }
            result
        }))
    }

    /// Takes the task's lease for an actor loaded without it, with the task as stored under
    /// the new lease (its last holder may have written since the actor loaded it).
    /// `HeldElsewhere` while a live server holds it.
    fn take_lease(&self) -> ResponseActFuture<Self, Result<(), RuntimeError>> {
        let (task_id, owner, ttl, now) = (
            self.task_id.to_string(),
            self.shared.instance_id.clone(),
            self.shared.lease_ttl_ms,
            self.shared.clock.now_ms(),
        );
        let taken = blocking(&self.shared.db, move |conn| match db::acquire_lease(conn, &task_id, &owner, ttl, now)? {
            Some(_) => db::load_task(conn, &task_id),
            None => Ok(None),
        });
        Box::pin(taken.into_actor(self).map(|taken, act: &mut TaskActor, ctx| match taken? {
            Some(stored) => {
                act.state = TaskState::new(stored);
                act.holds_lease = true;
                act.recount();
                Ok(())
            }
            None => Err(act.held_elsewhere(ctx)),
        }))
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
        let work_ms = self.state.work_ms(self.shared.clock.now_ms());
        if let Some(step) = view.steps.iter_mut().find(|s| s.status == StepStatus::Running) {
            step.work_ms = work_ms;
        }
        MessageResult((view, self.eta.latest().cloned()))
    }
}

impl Handler<Recovered> for TaskActor {
    type Result = ();
    fn handle(&mut self, Recovered { seq }: Recovered, _: &mut Self::Context) {
        self.state.stored.task.last_seq = self.state.stored.task.last_seq.max(seq);
        let event = self.event(seq, self.shared.clock.now_ms(), EventKind::TaskRecovered);
        // Committed, and once per resumed task.
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
