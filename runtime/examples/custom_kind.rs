//! An application's own step kind, run by the Stepwise runtime.
//!
//! `cargo run -p runtime --example custom_kind` starts a runtime on a temporary SQLite
//! file, registers a `generate_tables` kind beside the built-in ones, runs a two-step task
//! and prints every event the hub publishes until the task completes.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::LocalBoxFuture;
use runtime::{
    EventKind, Handlers, PlanLimits, Runtime, RuntimeOptions, StepContext, StepError, StepHandler, StepPlan,
    SystemClock, TaskPlan, Topic,
};
use serde_json::{json, Value};

/// Generates one "table" per substep; params `{"ms_per_table": N}`.
struct GenerateTables;

impl StepHandler for GenerateTables {
    fn validate(&self, params: &Value) -> Result<(), String> {
        match params.get("ms_per_table").and_then(Value::as_u64) {
            Some(1..=60_000) => Ok(()),
            _ => Err(format!("\"ms_per_table\" must be 1 to 60000, got {}", params["ms_per_table"])),
        }
    }

    fn run(&self, mut ctx: StepContext) -> LocalBoxFuture<'static, Result<Option<String>, StepError>> {
        Box::pin(async move {
            let pause = Duration::from_millis(ctx.params()["ms_per_table"].as_u64().unwrap_or(100));
            // Continue from the checkpoint: substeps done before a restart are not redone.
            let todo: Vec<String> = ctx.substeps().iter().filter(|s| !s.done).map(|s| s.name.clone()).collect();
            let total = ctx.substeps().len().max(1);
            for (i, table) in todo.iter().enumerate() {
                ctx.checkpoint().await?; // waits here while the task is paused
                tokio::time::sleep(pause).await;
                ctx.log(runtime::LogStream::Runtime, &format!("created table {table}"));
                ctx.substep_done(table);
                let done = total - todo.len() + i + 1;
                ctx.progress((done * 100 / total) as u8);
            }
            Ok(Some(format!("{} tables", todo.len())))
        })
    }
}

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::temp_dir().join(format!("stepwise-example-{}.db", std::process::id()));
    let database = Arc::new(db::Database::open(&format!("sqlite://{}", path.display()), 4)?);
    let handlers = Handlers::builtin(20).with("generate_tables", GenerateTables);
    let options = RuntimeOptions {
        instance_id: "example".into(),
        lease_ttl: Duration::from_secs(30),
        flush_interval: Duration::from_millis(250),
        limits: PlanLimits::default(),
        clock: Arc::new(SystemClock),
        task_threads: 1,
        max_running_tasks: 100,
        address: None,
    };
    let (runtime, _) = Runtime::start(database, handlers, options).await?;

    let mut generate = StepPlan::new("Generate tables", "generate_tables", json!({"ms_per_table": 200}));
    generate.substeps = vec!["customers".into(), "products".into(), "sales".into()];
    let plan = TaskPlan {
        title: "Example app".into(),
        complexity: 3,
        steps: vec![generate, StepPlan::new("Settle", "wait", json!({"seconds": 0.5}))],
    };
    let task_id = runtime.create_task("example", &plan, false).await?;
    let mut events = runtime.events(Topic::Task(task_id.as_str().into())).await?;
    runtime.control("example", &task_id, runtime::Control::Start).await?;
    while let Some(event) = events.recv().await {
        match &event.kind {
            EventKind::Progress { step, percent, .. } => println!("step {step}: {percent}%"),
            EventKind::Log { line, .. } => println!("  log: {line}"),
            EventKind::EtaUpdated(eta) => println!("  eta: {:.1} s", eta.seconds),
            other => println!("#{} {}", event.seq, other.name()),
        }
        if event.kind == EventKind::TaskCompleted {
            break;
        }
    }
    runtime.shutdown().await;
    std::fs::remove_file(&path).ok();
    Ok(())
}
