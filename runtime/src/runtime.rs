//! The `Runtime` handle: what the server and embedding applications call. It starts the
//! hub, the progress recorder and the lease keeper, resumes the tasks this server owns,
//! and routes every command to the task's actor (starting one when the task has none).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use actix::prelude::*;
use db::{Database, DbError, NewTask, StoredTask};
use futures_util::future::join_all;

use crate::backlog::Backlog;
use crate::clock::Clock;
use crate::eta::{self, EtaModel};
use crate::event::Eta;
use crate::handlers::Handlers;
use crate::hub::{Barrier, ChannelSubscriber, Hub, Subscribe, SubscribeBounded, SubscriptionId, Topic, Unsubscribe};
use crate::machine::{Control, ExternalReport};
use crate::metrics::Metrics;
use crate::plan::{PlanLimits, TaskPlan};
use crate::recorder::{Flush, ProgressRecorder, RecorderStats};
use crate::shared::{Capacity, Shared, TaskRegistry};
use crate::store::blocking;
use crate::task::{Command, GetState, GetView, Recovered, Reported, Shutdown, TaskActor};
use crate::{RuntimeError, TaskEvent};

mod cluster;
mod doorbell;
mod queue;
mod relay;

pub use cluster::{Holder, Member};

/// How the runtime runs.
#[derive(Clone)]
pub struct RuntimeOptions {
    /// This server's id in task leases; stable across restarts so a restarted server
    /// takes its own tasks back at once.
    pub instance_id: String,
    /// How long a lease lasts without renewal.
    pub lease_ttl: Duration,
    /// How often coalesced progress and logs are written.
    pub flush_interval: Duration,
    /// Limits on plans.
    pub limits: PlanLimits,
    /// Where time comes from.
    pub clock: Arc<dyn Clock>,
    /// Arbiter threads that run task actors.
    pub task_threads: usize,
    /// How many tasks may run on this server at once; more wait in the queue for any
    /// server of the cluster with room. Paused tasks and those waiting for approval do not
    /// count.
    pub max_running_tasks: usize,
    /// The URL this server serves HTTP on, as the cluster's membership shows it; `None`
    /// for a runtime embedded without a server.
    pub address: Option<String>,
}

impl std::fmt::Debug for RuntimeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeOptions")
            .field("instance_id", &self.instance_id)
            .field("lease_ttl", &self.lease_ttl)
            .field("flush_interval", &self.flush_interval)
            .field("limits", &self.limits)
            .field("task_threads", &self.task_threads)
            .field("max_running_tasks", &self.max_running_tasks)
            .field("address", &self.address)
            .finish()
    }
}

/// Transient events (percents, log lines, estimates) that may wait for the hub; more are
/// dropped until it catches up.
const MAX_QUEUED_TRANSIENT: usize = 65_536;

/// Step runs the estimator learns from at start (the newest ones).
const HISTORY_RUNS: usize = 20_000;

/// How long an idempotency key of task creation is remembered: a day, as payment APIs do.
pub const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;

/// A task [`Runtime::create_task_once`] answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedTask {
    /// The task.
    pub task_id: String,
    /// Whether an earlier request with the same key made it.
    pub replayed: bool,
}

/// A live task actor, with what commands need without asking it.
struct Entry {
    /// So a stopping actor never removes its successor.
    generation: u64,
    /// Checked before a command is sent: another user's task reads as missing.
    owner: Arc<str>,
    addr: Addr<TaskActor>,
}

/// The live task actors by task id.
#[derive(Default)]
struct Registry {
    entries: Mutex<HashMap<Arc<str>, Entry>>,
    generations: AtomicU64,
}

impl Registry {
    fn entries(&self) -> MutexGuard<'_, HashMap<Arc<str>, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn next_generation(&self) -> u64 {
        self.generations.fetch_add(1, Ordering::Relaxed)
    }
}

impl TaskRegistry for Registry {
    fn forget(&self, task_id: &str, generation: u64) {
        let mut entries = self.entries();
        if entries.get(task_id).is_some_and(|entry| entry.generation == generation) {
            entries.remove(task_id);
        }
    }
}

/// The task runtime. Cheap to clone; every clone drives the same actors. Its methods must
/// be called from inside the actix system that started it.
#[derive(Clone)]
pub struct Runtime {
    shared: Arc<Shared>,
    registry: Arc<Registry>,
    recorder: Addr<ProgressRecorder>,
    stats: Arc<RecorderStats>,
    arbiters: Arc<Vec<ArbiterHandle>>,
    /// The arbiter threads, joined at shutdown so a stopped runtime has let go of the
    /// database (and, for SQLite, its lock).
    threads: Arc<Mutex<Vec<Arbiter>>>,
    next_arbiter: Arc<AtomicUsize>,
    limits: PlanLimits,
    /// Turns true once the history is learned (or found unreadable).
    history: tokio::sync::watch::Receiver<bool>,
    /// Set when shutdown begins: the heartbeat takes over no more tasks.
    stopping: Arc<AtomicBool>,
    /// Held through each heartbeat, so shutdown waits for one in progress.
    beat: Arc<tokio::sync::Mutex<()>>,
    /// The cluster's doorbell as heard here (see [`Runtime::rings`]).
    rings: tokio::sync::broadcast::Sender<Arc<db::Ring>>,
    /// Tasks subscribed to here, for the reader of the tasks other servers run.
    follow: tokio::sync::mpsc::UnboundedSender<(Arc<str>, i64)>,
}

/// A bounded subscription (see [`Runtime::bounded_events`]).
#[derive(Debug)]
pub struct BoundedEvents {
    /// The events, in the order the hub saw them, each shared by every bounded subscriber.
    pub receiver: tokio::sync::mpsc::Receiver<Arc<TaskEvent>>,
    /// Set by the hub when it dropped an event because the channel was full; the consumer
    /// clears it when it has caught up another way.
    pub lagged: Arc<std::sync::atomic::AtomicBool>,
    /// The subscription, to end it early.
    pub id: SubscriptionId,
}

/// What a start found and resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    /// Live tasks taken over (running, paused or waiting for approval).
    pub resumed: usize,
    /// How long loading them and starting their actors took.
    pub elapsed: Duration,
}

impl Runtime {
    /// Starts the runtime on an opened database and resumes every live task this server
    /// may take: its own from before a restart, unowned ones, and ones whose lease expired.
    pub async fn start(
        db: Arc<Database>,
        handlers: Handlers,
        options: RuntimeOptions,
    ) -> Result<(Runtime, Recovery), RuntimeError> {
        let metrics = Metrics::new();
        let hub = Hub::new(metrics.hub.clone()).start();
        let stats = Arc::new(RecorderStats::default());
        let recorder = ProgressRecorder::new(
            Arc::clone(&db),
            Arc::clone(&options.clock),
            options.flush_interval,
            Arc::clone(&stats),
        )
        .start();
        hub.send(Subscribe { topic: Topic::All, subscriber: recorder.clone().recipient() })
            .await
            .map_err(|_| RuntimeError::ShuttingDown)?;
        let threads: Vec<Arbiter> = (0..options.task_threads.max(1)).map(|_| Arbiter::new()).collect();
        let arbiters = threads.iter().map(Arbiter::handle).collect();
        let registry = Arc::new(Registry::default());
        let (history_learned, history) = tokio::sync::watch::channel(false);
        let (follow, asked) = tokio::sync::mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            db,
            hub,
            handlers,
            clock: options.clock,
            instance_id: options.instance_id,
            lease_ttl_ms: i64::try_from(options.lease_ttl.as_millis()).unwrap_or(i64::MAX),
            eta: EtaModel::start(),
            registry: Arc::clone(&registry) as Arc<dyn TaskRegistry>,
            transient: Backlog::new(MAX_QUEUED_TRANSIENT),
            capacity: Capacity::new(options.max_running_tasks),
            metrics,
        });
        let runtime = Runtime {
            shared,
            registry,
            recorder,
            stats,
            arbiters: Arc::new(arbiters),
            threads: Arc::new(Mutex::new(threads)),
            next_arbiter: Arc::new(AtomicUsize::new(0)),
            limits: options.limits,
            history,
            stopping: Arc::new(AtomicBool::new(false)),
            beat: Arc::new(tokio::sync::Mutex::new(())),
            rings: tokio::sync::broadcast::channel(doorbell::RINGS_QUEUED).0,
            follow,
        };
        runtime.register(options.address).await?;
        let recovery = runtime.recover().await?;
        runtime.keep_membership(options.lease_ttl / 3);
        runtime.relay(asked);
        runtime.listen_for_rings();
        runtime.keep_claiming(options.lease_ttl / 3);
        runtime.learn_history(history_learned);
        Ok((runtime, recovery))
    }

    /// Takes back every running, paused or approval-waiting task whose lease is free,
    /// expired or already this instance's (the instance id persists in the data directory,
    /// so a restarted server takes its own tasks back at once), bumping each fencing token.
    /// Each gets a `TaskActor`: running ones restart their step from its checkpoint within
    /// the same attempt; paused and waiting ones stay put. A `task_recovered` event is
    /// appended to each in one background transaction, after the tasks run again. Tasks it
    /// had stored to start and not yet started ([`db::StartClaim`]) go back to the queue,
    /// which its first claim takes them from.
    async fn recover(&self) -> Result<Recovery, RuntimeError> {
        let began = Instant::now();
        let (owner, ttl, now) = (self.shared.instance_id.clone(), self.shared.lease_ttl_ms, self.shared.clock.now_ms());
        let database = Arc::clone(&self.shared.db);
        let stored = tokio::task::spawn_blocking(move || {
            // Tasks it was starting when it stopped go back to the queue, for its first claim.
            db::release_own_claims(&mut *database.conn()?, &owner)?;
            db::acquire_live_tasks(&database, &owner, ttl, now)
        })
        .await
        .map_err(|_| RuntimeError::ShuttingDown)??;
        let resumed = self.resume(stored, now);
        let elapsed = began.elapsed();
        if resumed > 0 {
            tracing::info!(resumed, ?elapsed, "resumed unfinished tasks");
        }
        Ok(Recovery { resumed, elapsed })
    }

    /// Gives each task this server has just leased a recovering actor (replacing one that
    /// was loaded for a command but never took the lease), and records the interruption in
    /// each task's history in the background: the tasks are already running again. Returns
    /// how many.
    fn resume(&self, leased: Vec<StoredTask>, now: i64) -> usize {
        let leases: Vec<(String, i64)> = leased.iter().map(|s| (s.task.id.clone(), s.task.lease_token)).collect();
        let resumed = leased.len();
        let mut actors = HashMap::with_capacity(resumed);
        for task in leased {
            let id: Arc<str> = task.task.id.as_str().into();
            let owner: Arc<str> = task.task.owner.as_str().into();
            let generation = self.registry.next_generation();
            let shared = Arc::clone(&self.shared);
            let addr =
                TaskActor::start_in_arbiter(self.arbiter(), move |_| TaskActor::recovering(task, generation, shared));
            actors.insert(Arc::clone(&id), addr.clone());
            let replaced = self.registry.entries().insert(id, Entry { generation, owner, addr });
            if let Some(stale) = replaced {
                // Its lease was not its own, so it never wrote: stopping it loses nothing.
                // One per replaced actor, once.
                stale.addr.do_send(Shutdown);
            }
        }
        if resumed > 0 {
            let db = Arc::clone(&self.shared.db);
            actix::spawn(async move {
                match blocking(&db, move |conn| db::record_recovered(conn, &leases, now)).await {
                    Ok(recorded) => {
                        for (task_id, seq) in recorded {
                            if let Some(addr) = actors.get(task_id.as_str()) {
                                // One per resumed actor, once: nothing to bound.
                                addr.do_send(Recovered { seq });
                            }
                        }
                    }
                    Err(error) => tracing::error!(%error, "could not record the interruption of resumed tasks"),
                }
            });
        }
        resumed
    }

    /// Trains the estimator on the persisted step runs, in the background: until it is done,
    /// estimates are cold-start ones. `learned` is told when it is over.
    fn learn_history(&self, learned: tokio::sync::watch::Sender<bool>) {
        let shared = Arc::clone(&self.shared);
        actix::spawn(async move {
            match blocking(&shared.db, |conn| db::recent_step_runs(conn, HISTORY_RUNS)).await {
                Ok(runs) => {
                    let tasks = shared.eta.train(runs).await;
                    tracing::debug!(tasks, "estimator trained on history");
                }
                Err(error) => tracing::warn!(%error, "could not load the estimator's history; ETAs start cold"),
            }
            learned.send_replace(true);
        });
    }

    /// Resolves once the estimator has learned the stored history at start (or found it
    /// unreadable): from then on a live task's estimate is the one it had before a restart.
    /// A completed task needs no such wait: the command that completes it is answered once
    /// its task is learned.
    pub async fn history_learned(&self) {
        let mut history = self.history.clone();
        // Fails only if the training was dropped with the runtime: nothing to wait for then.
        let _ = history.wait_for(|learned| *learned).await;
    }

    fn arbiter(&self) -> &ArbiterHandle {
        let index = self.next_arbiter.fetch_add(1, Ordering::Relaxed) % self.arbiters.len();
        &self.arbiters[index]
    }

    /// The hub, for subscribers.
    pub fn hub(&self) -> &Addr<Hub> {
        &self.shared.hub
    }

    /// Where the runtime's time comes from.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.shared.clock
    }

    /// The database.
    pub fn db(&self) -> &Arc<Database> {
        &self.shared.db
    }

    /// What this runtime counts, in a registry its server may add to and expose.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The registered step kinds.
    pub fn handlers(&self) -> &Handlers {
        &self.shared.handlers
    }

    /// Counters of the progress recorder.
    pub fn recorder_stats(&self) -> &RecorderStats {
        &self.stats
    }

    /// How many task actors are live.
    pub fn live_tasks(&self) -> usize {
        self.registry.entries().len()
    }

    /// Delivers the events of `topic` to `subscriber` until [`Runtime::unsubscribe`].
    pub async fn subscribe(
        &self,
        topic: Topic,
        subscriber: Recipient<TaskEvent>,
    ) -> Result<SubscriptionId, RuntimeError> {
        let subscribed = self.shared.hub.send(Subscribe { topic: topic.clone(), subscriber }).await;
        let id = subscribed.map_err(|_| RuntimeError::ShuttingDown)?;
        self.follow(&topic).await;
        Ok(id)
    }

    /// The events of `topic` as a channel, until the receiver is dropped. The channel has no
    /// bound, by design: it is for a consumer that reads as fast as events come (the
    /// terminal view of one task, tests); one that may fall behind uses
    /// [`Runtime::bounded_events`].
    pub async fn events(&self, topic: Topic) -> Result<tokio::sync::mpsc::UnboundedReceiver<TaskEvent>, RuntimeError> {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        let subscriber = ChannelSubscriber(sender).start();
        self.subscribe(topic, subscriber.recipient()).await?;
        Ok(receiver)
    }

    /// The events of `topic` in a channel of `capacity` events. A consumer that falls
    /// behind loses events rather than slowing anyone: the hub drops what does not fit and
    /// sets [`BoundedEvents::lagged`]. Dropping the receiver ends the subscription.
    pub async fn bounded_events(&self, topic: Topic, capacity: usize) -> Result<BoundedEvents, RuntimeError> {
        let (sender, receiver) = tokio::sync::mpsc::channel(capacity.max(1));
        let lagged = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let subscribe = SubscribeBounded { topic: topic.clone(), sender, lagged: Arc::clone(&lagged) };
        let id = self.shared.hub.send(subscribe).await.map_err(|_| RuntimeError::ShuttingDown)?;
        self.follow(&topic).await;
        Ok(BoundedEvents { receiver, lagged, id })
    }

    /// Ends a subscription.
    pub fn unsubscribe(&self, id: SubscriptionId) {
        // One per subscription, which is ended once. Dropping is fine if the hub is gone:
        // then there is nothing to unsubscribe from.
        self.shared.hub.do_send(Unsubscribe(id));
    }

    /// Stores a new task for `owner` and, if `start`, starts it (or queues it, when this
    /// server has no room). Returns its id.
    pub async fn create_task(&self, owner: &str, plan: &TaskPlan, start: bool) -> Result<String, RuntimeError> {
        self.create(owner, plan, start, None, None).await
    }

    /// [`Runtime::create_task`] at most once per `key` of `owner`'s within
    /// [`IDEMPOTENCY_WINDOW_MS`]: the key is stored with the task, in one transaction, and a
    /// request with a key already stored gets the task it made (`replayed`) if its
    /// `request_hash` is the same, and [`RuntimeError::IdempotencyKeyReused`] if not.
    pub async fn create_task_once(
        &self,
        owner: &str,
        plan: &TaskPlan,
        start: bool,
        key: &str,
        request_hash: &str,
    ) -> Result<CreatedTask, RuntimeError> {
        let key = db::IdempotencyKey {
            key: key.to_owned(),
            request_hash: request_hash.to_owned(),
            expired_before: self.shared.clock.now_ms() - IDEMPOTENCY_WINDOW_MS,
        };
        // Twice at most: a request that loses the race to store the key answers as the
        // winner did, which the second look finds.
        for _ in 0..2 {
            let (owner_of, looked_up) = (owner.to_owned(), key.clone());
            let found = blocking(&self.shared.db, move |conn| db::keyed_task(conn, &owner_of, &looked_up)).await?;
            if let Some(found) = found {
                return match found.request_hash == key.request_hash {
                    true => Ok(CreatedTask { task_id: found.task_id, replayed: true }),
                    false => Err(RuntimeError::IdempotencyKeyReused(key.key)),
                };
            }
            match self.create(owner, plan, start, None, Some(key.clone())).await {
                Err(RuntimeError::Db(DbError::KeyTaken(_))) => continue,
                created => return created.map(|task_id| CreatedTask { task_id, replayed: false }),
            }
        }
        Err(RuntimeError::Db(DbError::KeyTaken(key.key)))
    }

    async fn create(
        &self,
        owner: &str,
        plan: &TaskPlan,
        start: bool,
        restarted_from: Option<String>,
        idempotency: Option<db::IdempotencyKey>,
    ) -> Result<String, RuntimeError> {
        let steps = plan.validate(&self.limits, &self.shared.handlers)?;
        let task = NewTask {
            id: new_task_id(),
            owner: owner.to_owned(),
            title: plan.title.trim().to_owned(),
            complexity: plan.complexity,
            restarted_from,
            created_at: self.shared.clock.now_ms(),
            steps,
            start: start.then(|| db::StartClaim {
                server: self.shared.instance_id.clone(),
                lease_expires_at: self.shared.clock.now_ms() + self.shared.lease_ttl_ms,
            }),
            idempotency,
        };
        let (id, created_at) = (task.id.clone(), task.created_at);
        blocking(&self.shared.db, move |conn| db::insert_task(conn, &task)).await?;
        // Committed as seq 1 by insert_task; published so followers of the owner see it. One
        // per task stored, after the caller waited for the insert: bounded by the database.
        self.shared.hub.do_send(TaskEvent {
            task_id: id.as_str().into(),
            owner: owner.into(),
            seq: 1,
            lease_token: 0,
            at: created_at,
            kind: crate::EventKind::TaskCreated,
        });
        if start {
            self.control(owner, &id, Control::Start).await?;
        }
        Ok(id)
    }

    /// Applies a person's command to `owner`'s task. `Start` starts a pending task if this
    /// server has room and otherwise queues it (see [`Runtime::queue_places`]).
    pub async fn control(&self, owner: &str, task_id: &str, control: Control) -> Result<(), RuntimeError> {
        match control {
            Control::Start => self.start_or_queue(owner, task_id).await,
            control => self.ask(owner, task_id, || Command(control.clone())).await,
        }
    }

    /// Sends a message to the task's actor. An actor that has just finished its task may
    /// close its mailbox before the registry forgets it; then a fresh actor is loaded from
    /// the database and asked instead (the message was never handled, so this is safe).
    async fn ask<M>(&self, owner: &str, task_id: &str, message: impl Fn() -> M) -> Result<(), RuntimeError>
    where
        M: Message<Result = Result<(), RuntimeError>> + Send + 'static,
        TaskActor: Handler<M>,
    {
        for _ in 0..3 {
            let actor = self.actor_for(owner, task_id).await?;
            match actor.send(message()).await {
                Ok(result) => return result,
                Err(_) => self.registry.entries().retain(|id, entry| &**id != task_id || entry.addr != actor),
            }
        }
        Err(RuntimeError::ShuttingDown)
    }

    /// "Cancel and start over": cancels the task if it has not ended and starts a fresh
    /// run of the same plan, linked to it. Returns the new task's id.
    pub async fn restart(&self, owner: &str, task_id: &str) -> Result<String, RuntimeError> {
        let stored = self.task(owner, task_id).await?;
        if !stored.task.status.is_final() {
            self.control(owner, task_id, Control::Cancel).await?;
        }
        self.create(owner, &TaskPlan::from_stored(&stored), true, Some(task_id.to_owned()), None).await
    }

    /// An outside worker's report on an `external` step of `owner`'s task.
    pub async fn report(
        &self,
        owner: &str,
        task_id: &str,
        step: u32,
        report: ExternalReport,
    ) -> Result<(), RuntimeError> {
        self.ask(owner, task_id, || Reported { step, report: report.clone() }).await
    }

    /// The current state of `owner`'s task.
    pub async fn task(&self, owner: &str, task_id: &str) -> Result<StoredTask, RuntimeError> {
        let live = self.registry.entries().get(task_id).map(|entry| entry.addr.clone());
        if let Some(addr) = live {
            if let Ok(state) = addr.send(GetState).await {
                return owned_by(state, owner, task_id);
            }
        }
        let id = task_id.to_owned();
        let stored = blocking(&self.shared.db, move |conn| db::load_task(conn, &id)).await?;
        owned_by(stored.ok_or_else(|| RuntimeError::TaskNotFound(task_id.to_owned()))?, owner, task_id)
    }

    /// The current state of `owner`'s task (a running step's work time counted up to now)
    /// and, while it is live, its ETA (for a task another server runs, the one that server
    /// stored, counted down).
    pub async fn task_view(&self, owner: &str, task_id: &str) -> Result<(StoredTask, Option<Eta>), RuntimeError> {
        let live = self.registry.entries().get(task_id).map(|entry| entry.addr.clone());
        if let Some(addr) = live {
            if let Ok((state, eta)) = addr.send(GetView).await {
                return Ok((owned_by(state, owner, task_id)?, eta));
            }
        }
        let task = self.task(owner, task_id).await?;
        let eta = self.stored_estimates(std::slice::from_ref(&task)).await?.remove(task_id);
        Ok((task, eta))
    }

    /// The estimates the servers running these tasks stored (see `db::announce`), for
    /// the live ones: how a server shows a task another server runs.
    async fn stored_estimates(&self, tasks: &[StoredTask]) -> Result<HashMap<String, Eta>, RuntimeError> {
        let live: Vec<String> = tasks.iter().filter(|t| t.task.status.is_live()).map(|t| t.task.id.clone()).collect();
        if live.is_empty() {
            return Ok(HashMap::new());
        }
        let stored = blocking(&self.shared.db, move |conn| db::load_estimates(conn, &live)).await?;
        let now = self.shared.clock.now_ms();
        let running: Vec<&str> =
            tasks.iter().filter(|t| t.task.status == db::TaskStatus::Running).map(|t| t.task.id.as_str()).collect();
        Ok(stored
            .iter()
            .filter_map(|e| Some((e.task_id.clone(), eta::from_stored(e, running.contains(&e.task_id.as_str()), now)?)))
            .collect())
    }

    /// The views of several of `owner`'s tasks, in the order asked, leaving out ids that
    /// are missing or not the owner's. Live tasks answer from their actors; the others are
    /// read from the database in one query, not one each (with the estimates stored for
    /// those another server runs in one more).
    pub async fn task_views(
        &self,
        owner: &str,
        ids: &[String],
    ) -> Result<Vec<(StoredTask, Option<Eta>)>, RuntimeError> {
        let mut views: HashMap<String, (StoredTask, Option<Eta>)> = HashMap::with_capacity(ids.len());
        let mut stored = Vec::new();
        for id in ids {
            let live = self.registry.entries().get(id.as_str()).map(|entry| entry.addr.clone());
            match live {
                Some(addr) => match addr.send(GetView).await {
                    Ok(view) => drop(views.insert(id.clone(), view)),
                    Err(_) => stored.push(id.clone()),
                },
                None => stored.push(id.clone()),
            }
        }
        if !stored.is_empty() {
            let loaded = blocking(&self.shared.db, move |conn| db::load_tasks(conn, &stored)).await?;
            let mut estimates = self.stored_estimates(&loaded).await?;
            views.extend(loaded.into_iter().map(|task| {
                let eta = estimates.remove(&task.task.id);
                (task.task.id.clone(), (task, eta))
            }));
        }
        Ok(ids.iter().filter_map(|id| views.remove(id)).filter(|(task, _)| task.task.owner == owner).collect())
    }

    /// The task's actor, started from the database if the task has none.
    async fn actor_for(&self, owner: &str, task_id: &str) -> Result<Addr<TaskActor>, RuntimeError> {
        let live = self.registry.entries().get(task_id).map(|entry| (Arc::clone(&entry.owner), entry.addr.clone()));
        let stale = live.as_ref().map(|(_, addr)| addr.clone());
        if let Some((owned_by_whom, addr)) = live.filter(|(_, addr)| addr.connected()) {
            // Another user's task reads exactly like a missing one.
            if &*owned_by_whom != owner {
                return Err(RuntimeError::TaskNotFound(task_id.to_owned()));
            }
            return Ok(addr);
        }
        let id = task_id.to_owned();
        let stored = blocking(&self.shared.db, move |conn| db::load_task(conn, &id)).await?;
        let stored = owned_by(stored.ok_or_else(|| RuntimeError::TaskNotFound(task_id.to_owned()))?, owner, task_id)?;
        let mut entries = self.registry.entries();
        if let Some(entry) = entries.get(task_id).filter(|e| e.addr.connected() && stale.as_ref() != Some(&e.addr)) {
            return Ok(entry.addr.clone());
        }
        let generation = self.registry.next_generation();
        let shared = Arc::clone(&self.shared);
        let owner: Arc<str> = stored.task.owner.as_str().into();
        let addr = TaskActor::start_in_arbiter(self.arbiter(), move |_| TaskActor::new(stored, generation, shared));
        entries.insert(task_id.into(), Entry { generation, owner, addr: addr.clone() });
        Ok(addr)
    }

    /// Writes all pending progress and logs now, including every event published before
    /// the call (they may still be on their way through the hub).
    pub async fn flush(&self) {
        // Each fails only if its actor has stopped, when there is nothing left to pass on.
        let _ = self.shared.hub.send(Barrier).await;
        let _ = self.recorder.send(Flush).await;
    }

    /// Stops every task's running step (killing `exec` programs) without changing the
    /// tasks' stored state, writes pending progress, then releases the tasks' leases and
    /// marks this server stopped: another server of the cluster, or the next start, resumes
    /// them.
    pub async fn shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _beat = self.beat.lock().await;
        let actors: Vec<_> = self.registry.entries().values().map(|entry| entry.addr.clone()).collect();
        join_all(actors.iter().map(|addr| addr.send(Shutdown))).await;
        self.flush().await;
        if let Err(error) = self.leave().await {
            tracing::warn!(%error, "could not release the task leases; other servers take the tasks when they lapse");
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        for arbiter in &threads {
            arbiter.stop();
        }
        // Joining blocks, so it happens off the event loop.
        let _ = tokio::task::spawn_blocking(move || threads.into_iter().for_each(|a| drop(a.join()))).await;
    }
}

fn owned_by(stored: StoredTask, owner: &str, task_id: &str) -> Result<StoredTask, RuntimeError> {
    // Another user's task reads exactly like a missing one.
    match stored.task.owner == owner {
        true => Ok(stored),
        false => Err(RuntimeError::TaskNotFound(task_id.to_owned())),
    }
}

/// A fresh task id: 16 lowercase hex digits.
fn new_task_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}
