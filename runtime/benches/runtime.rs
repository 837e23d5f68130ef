//! The runtime benchmark: prints figures, asserts nothing (`cargo bench -p runtime`).
//!
//! Sizes come from environment variables (defaults in brackets):
//! `BENCH_LIVE_TASKS` [10000] idle live tasks held at once, `BENCH_HUB_EVENTS` [1000000]
//! progress events published straight into the hub, `BENCH_E2E_TASKS` [1000] tasks of
//! `BENCH_E2E_STEPS` [5] steps whose handlers each report 100 percents, and
//! `BENCH_RESUME_TASKS` [100000] stored live tasks resumed by a fresh start, and
//! `BENCH_LEARN_TASKS` [2000] tasks of `BENCH_LEARN_STEPS` [10] instant steps that complete
//! (and are learned from) while the live tasks' estimates are read.
//! `BENCH_DATABASE_URL` runs it on another database (e.g. PostgreSQL) instead of a
//! temporary SQLite file.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::future::{join_all, LocalBoxFuture};
use runtime::{
    EventKind, Handlers, PlanLimits, Runtime, RuntimeOptions, StepContext, StepError, StepHandler, StepPlan,
    SystemClock, TaskEvent, TaskPlan, Topic,
};
use serde_json::{json, Value};

fn size(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Resident memory of this process, bytes, after handing freed heap pages back to the OS
/// (so the figure is memory held, not allocator leftovers from the creation burst).
#[allow(unsafe_code)]
fn held_bytes() -> u64 {
    // SAFETY: malloc_trim only releases free heap memory; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
    rss_bytes()
}

/// Resident memory of this process, bytes.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

/// Reports 1..=100 percent as fast as it can, then completes.
struct Spin;

impl StepHandler for Spin {
    fn validate(&self, _: &Value) -> Result<(), String> {
        Ok(())
    }

    fn run(&self, ctx: StepContext) -> LocalBoxFuture<'static, Result<Option<String>, StepError>> {
        Box::pin(async move {
            for percent in 1..=100 {
                ctx.progress(percent);
            }
            Ok(None)
        })
    }
}

/// Completes at once: a task of these only commits, completes and is learned from.
struct AtOnce;

impl StepHandler for AtOnce {
    fn validate(&self, _: &Value) -> Result<(), String> {
        Ok(())
    }

    fn run(&self, _: StepContext) -> LocalBoxFuture<'static, Result<Option<String>, StepError>> {
        Box::pin(std::future::ready(Ok(None)))
    }
}

fn options() -> RuntimeOptions {
    RuntimeOptions {
        instance_id: "bench".into(),
        lease_ttl: Duration::from_secs(600),
        flush_interval: Duration::from_millis(250),
        limits: PlanLimits::default(),
        clock: Arc::new(SystemClock),
        task_threads: 2,
        max_running_tasks: 1_000_000,
        address: None,
    }
}

async fn start(url: &str) -> (Runtime, runtime::Recovery) {
    let database = Arc::new(db::Database::open(url, 8).expect("open the bench database"));
    Runtime::start(database, Handlers::builtin(20).with("spin", Spin).with("instant", AtOnce), options())
        .await
        .expect("runtime starts")
}

fn plan(kind: &str, steps: usize) -> TaskPlan {
    TaskPlan {
        title: "Bench".into(),
        complexity: 1,
        steps: (1..=steps).map(|i| StepPlan::new(&format!("Step {i}"), kind, json!({}))).collect(),
    }
}

/// Creates and starts `n` tasks, a few hundred at a time; returns their ids.
async fn create(rt: &Runtime, n: usize, plan: &TaskPlan) -> Vec<String> {
    create_for(rt, "bench", n, plan).await
}

/// Creates and starts `n` tasks of `owner`, a few hundred at a time; returns their ids.
async fn create_for(rt: &Runtime, owner: &str, n: usize, plan: &TaskPlan) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(256) {
        let created = join_all(chunk.iter().map(|_| rt.create_task(owner, plan, true))).await;
        ids.extend(created.into_iter().map(|r| r.expect("create a bench task")));
    }
    ids
}

async fn wait_until(mut done: impl FnMut() -> bool) {
    while !done() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn per_second(count: f64, elapsed: Duration) -> f64 {
    count / elapsed.as_secs_f64().max(1e-9)
}

/// Reads the live tasks' views (task and estimate), round robin from `readers` concurrent
/// readers, until `stop` resolves; returns each read's latency, sorted.
async fn read_estimates(rt: &Runtime, ids: &[String], readers: usize, stop: impl std::future::Future) -> Vec<Duration> {
    let done = std::cell::Cell::new(false);
    let reader = |first: usize| {
        let done = &done;
        async move {
            let mut latencies = Vec::new();
            let mut next = first;
            while !done.get() {
                let began = Instant::now();
                let (_, eta) = rt.task_view("bench", &ids[next % ids.len()]).await.expect("a live task's view");
                latencies.push(began.elapsed());
                assert!(eta.is_some(), "a live task has an estimate");
                next += readers;
            }
            latencies
        }
    };
    let stopping = async {
        stop.await;
        done.set(true);
    };
    let (mut latencies, ()) = futures_util::future::join(join_all((0..readers).map(reader)), stopping).await;
    let mut all: Vec<Duration> = latencies.iter_mut().flat_map(std::mem::take).collect();
    all.sort_unstable();
    all
}

/// "p50 … µs, p99 … µs, max … ms" of sorted latencies.
fn percentiles(sorted: &[Duration]) -> String {
    let at = |q: f64| sorted.get(((sorted.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or_default();
    format!(
        "p50 {:.0} µs, p99 {:.0} µs, max {:.1} ms over {} reads",
        at(0.5).as_secs_f64() * 1e6,
        at(0.99).as_secs_f64() * 1e6,
        at(1.0).as_secs_f64() * 1e3,
        sorted.len()
    )
}

/// The live tasks' estimates while other tasks complete and are learned from: the reads'
/// latency, first with nothing else going on, then under the learning.
async fn estimates_while_learning(rt: &Runtime, live: &[String]) {
    let (tasks, steps) = (size("BENCH_LEARN_TASKS", 2_000), size("BENCH_LEARN_STEPS", 10));
    let idle = read_estimates(rt, live, 4, tokio::time::sleep(Duration::from_secs(2))).await;
    println!("estimates of {} live tasks, nothing else running: {}", live.len(), percentiles(&idle));
    let mut events = rt.events(Topic::Owner("learner".into())).await.expect("subscribe");
    let began = Instant::now();
    let learning = async {
        create_for(rt, "learner", tasks, &plan("instant", steps)).await;
        let mut completed = 0;
        while completed < tasks {
            let event = events.recv().await.expect("the learners' events");
            completed += usize::from(event.kind == EventKind::TaskCompleted);
        }
    };
    let loaded = read_estimates(rt, live, 4, learning).await;
    println!(
        "estimates of {} live tasks while {} tasks x {} steps completed and were learned from ({:.2} s): {}",
        live.len(),
        tasks,
        steps,
        began.elapsed().as_secs_f64(),
        percentiles(&loaded)
    );
}

async fn bench(url: &str) {
    let live_tasks = size("BENCH_LIVE_TASKS", 10_000);
    let hub_events = size("BENCH_HUB_EVENTS", 1_000_000);
    let e2e_tasks = size("BENCH_E2E_TASKS", 1_000);
    let e2e_steps = size("BENCH_E2E_STEPS", 5);
    let resume_tasks = size("BENCH_RESUME_TASKS", 100_000);
    println!("database: {}", db::redact(url));

    // Idle live tasks: each holds a TaskActor and a StepActor waiting on an external step.
    let (rt, _) = start(url).await;
    // In two halves: the first half also pays fixed costs (SQLite's page cache, pools), so
    // the second half shows what one more idle task costs.
    let (baseline_rss, baseline_held) = (rss_bytes(), held_bytes());
    let began = Instant::now();
    let mut ids = create(&rt, live_tasks / 2, &plan("external", 1)).await;
    let half_held = held_bytes();
    ids.extend(create(&rt, live_tasks - live_tasks / 2, &plan("external", 1)).await);
    let created = began.elapsed();
    let rss = rss_bytes().saturating_sub(baseline_rss);
    let held = held_bytes();
    let kib = |bytes: u64, tasks: usize| bytes as f64 / 1024.0 / tasks.max(1) as f64;
    println!(
        "live tasks: {} created and started in {:.2} s ({:.0}/s); {} live actors",
        live_tasks,
        created.as_secs_f64(),
        per_second(live_tasks as f64, created),
        rt.live_tasks()
    );
    println!(
        "memory per idle live task: {:.2} KiB resident on average ({:.2} KiB after malloc_trim); {:.2} KiB marginal (second half)",
        kib(rss, live_tasks),
        kib(held.saturating_sub(baseline_held), live_tasks),
        kib(held.saturating_sub(half_held), live_tasks - live_tasks / 2)
    );
    estimates_while_learning(&rt, &ids).await;

    // The hub and the recorder alone: progress events for those tasks, published from two
    // other threads, until the recorder has taken them all and flushed.
    let tasks: Vec<(Arc<str>, i64)> = join_all(ids.iter().map(|id| rt.task("bench", id)))
        .await
        .into_iter()
        .map(|t| t.expect("bench task"))
        .map(|t| (Arc::from(t.task.id.as_str()), t.task.lease_token))
        .collect();
    let stats = rt.recorder_stats();
    let (events_before, rows_before) =
        (stats.progress_events.load(Ordering::Relaxed), stats.rows_written.load(Ordering::Relaxed));
    let began = Instant::now();
    let producers: Vec<Arbiter> = (0..2).map(|_| Arbiter::new()).collect();
    for (p, producer) in producers.iter().enumerate() {
        let (hub, tasks) = (rt.hub().clone(), tasks.clone());
        let share = hub_events / 2 + if p == 0 { hub_events % 2 } else { 0 };
        producer.spawn(async move {
            for i in 0..share {
                let (task_id, token) = &tasks[(i * 2 + p) % tasks.len()];
                let percent = u8::try_from(1 + (i * 99 / share.max(1))).unwrap_or(100);
                hub.do_send(TaskEvent {
                    task_id: Arc::clone(task_id),
                    owner: Arc::from("bench"),
                    seq: 0,
                    lease_token: *token,
                    at: 0,
                    kind: EventKind::Progress { step: 1, attempt: 1, percent, task_percent: percent },
                });
                if i % 4096 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        });
    }
    let target = events_before + hub_events as u64;
    wait_until(|| stats.progress_events.load(Ordering::Relaxed) >= target).await;
    let through_hub = began.elapsed();
    rt.flush().await;
    let persisted = began.elapsed();
    let rows = stats.rows_written.load(Ordering::Relaxed) - rows_before;
    println!(
        "hub: {} progress events into the recorder in {:.2} s = {:.0} events/s; persisted after {:.2} s = {:.0} events/s; {:.1} row writes per 1,000 events",
        hub_events,
        through_hub.as_secs_f64(),
        per_second(hub_events as f64, through_hub),
        persisted.as_secs_f64(),
        per_second(hub_events as f64, persisted),
        rows as f64 * 1000.0 / hub_events.max(1) as f64
    );
    for producer in producers {
        producer.stop();
        let _ = producer.join();
    }

    // End to end: handlers report through their task actors, which publish to the hub; every
    // step start and end is a committed transition.
    let (events_before, rows_before) =
        (stats.progress_events.load(Ordering::Relaxed), stats.rows_written.load(Ordering::Relaxed));
    let mut finished = rt.events(Topic::All).await.expect("subscribe");
    let began = Instant::now();
    let spin = plan("spin", e2e_steps);
    let spun = create(&rt, e2e_tasks, &spin).await;
    let mut completed = 0;
    while completed < spun.len() {
        if let Some(event) = finished.recv().await {
            completed += usize::from(event.kind == EventKind::TaskCompleted);
        }
    }
    rt.flush().await;
    let elapsed = began.elapsed();
    let events = stats.progress_events.load(Ordering::Relaxed) - events_before;
    let rows = stats.rows_written.load(Ordering::Relaxed) - rows_before;
    println!(
        "end to end: {} tasks x {} steps, {} progress events and {} committed transitions in {:.2} s = {:.0} progress events/s; {:.1} recorder row writes per 1,000 progress events",
        e2e_tasks,
        e2e_steps,
        events,
        e2e_tasks * (2 + 2 * e2e_steps),
        elapsed.as_secs_f64(),
        per_second(events as f64, elapsed),
        rows as f64 * 1000.0 / events.max(1) as f64
    );
    drop(finished);

    // Resume: top the live tasks up to the resume size, stop, and start afresh.
    let extra = resume_tasks.saturating_sub(live_tasks);
    let began = Instant::now();
    create(&rt, extra, &plan("external", 1)).await;
    println!("resume: stored {} more live tasks in {:.2} s", extra, began.elapsed().as_secs_f64());
    rt.shutdown().await;
}

fn main() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = std::env::var("BENCH_DATABASE_URL")
        .unwrap_or_else(|_| format!("sqlite://{}", dir.path().join("bench.db").display()));
    // Each phase runs in its own actix system, as its own server would.
    let first = url.clone();
    std::thread::spawn(move || System::new().block_on(bench(&first))).join().expect("bench");
    std::thread::spawn(move || {
        System::new().block_on(async move {
            let (rt, recovery) = start(&url).await;
            println!(
                "resume: {} stored live tasks resumed by a fresh start in {:.3} s ({} live actors)",
                recovery.resumed,
                recovery.elapsed.as_secs_f64(),
                rt.live_tasks()
            );
            rt.shutdown().await;
        })
    })
    .join()
    .expect("resume");
}
