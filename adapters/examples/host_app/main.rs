//! An existing actix-web application that embeds Stepwise: its API, WebSockets and pages
//! under `/stepwise`, its users signed in by the application's own session cookie, its own
//! step kind (`export_orders`), and one task run at start for the user `ada`.
//!
//! `cargo run -p adapters --example host_app [ADDRESS]` serves on ADDRESS (default
//! 127.0.0.1:8080, or any free port if that one is taken) over a SQLite file in a temporary
//! directory, or the database `STEPWISE_DATABASE__URL` names. It prints its URL and what to
//! try; Ctrl-C stops it.

mod app;

use std::net::{SocketAddr, TcpListener};

use adapters::embed::Stepwise;
use anyhow::Context as _;
use config::Settings;
use runtime::{StepPlan, TaskPlan};
use serde_json::json;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    // The application has settings of its own: of Stepwise's, only the database may come
    // from the environment (the rest are the defaults).
    let database = std::env::var("STEPWISE_DATABASE__URL").ok().map(|url| ("STEPWISE_DATABASE__URL".to_owned(), url));
    let env = [("STEPWISE_DATA_DIR".to_owned(), data.path().display().to_string())].into_iter().chain(database);
    let settings = Settings::load(None, env).context("invalid settings")?;
    let listener = bind(std::env::args().nth(1).as_deref().unwrap_or("127.0.0.1:8080"))?;
    let address = listener.local_addr()?;

    // Startup: the runtime with the application's step kind (resuming unfinished tasks),
    // then Stepwise's routes and notifier, then the application's server.
    let (runtime, _) = adapters::app::start(&settings, address, app::handlers()).await?;
    let sessions = app::Sessions::default();
    let stepwise = Stepwise::start(runtime.clone(), address, app::options(&sessions))?;
    let server = app::server(listener, sessions, stepwise)?;

    let export = StepPlan::new("Export orders", app::EXPORT_KIND, json!({"batches": 20, "ms_per_batch": 1500}));
    let plan = TaskPlan {
        title: "Quarterly order export".into(),
        complexity: 2,
        steps: vec![export, StepPlan::new("Let the warehouse know", "wait", json!({"seconds": 3}))],
    };
    let task_id = runtime.create_task("ada", &plan, true).await?;

    let base = format!("http://{address}");
    println!("host app listening on {base}");
    println!("  open {base}/ and sign in as ada: task {task_id} runs at {base}{}/tasks/{task_id}", app::MOUNT);
    println!("  or, from a shell:");
    println!("    curl -i -d user=grace {base}/login                 # the Set-Cookie line is grace's session");
    println!("    curl -b {}=SESSION {base}{}/api/tasks", app::SESSION_COOKIE, app::MOUNT);
    println!(
        "    curl -b {}=SESSION -H 'Content-Type: application/json' -d '{}' {base}{}/api/tasks",
        app::SESSION_COOKIE,
        json!({"title": "Export", "steps": [{"name": "Export", "kind": app::EXPORT_KIND,
            "params": {"batches": 5, "ms_per_batch": 1000}}]}),
        app::MOUNT
    );
    println!("    curl -i {base}{}/api/tasks                          # refused: no session", app::MOUNT);

    // Shutdown: the server stops on Ctrl-C or SIGTERM; then the runtime stops the steps and
    // writes their progress.
    server.await?;
    runtime.shutdown().await;
    Ok(())
}

/// Listens on `address`, or on any free port of its host if it is taken.
fn bind(address: &str) -> anyhow::Result<TcpListener> {
    let address: SocketAddr = address.parse().with_context(|| format!("not an address: {address}"))?;
    match TcpListener::bind(address) {
        Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => Ok(TcpListener::bind((address.ip(), 0))?),
        bound => Ok(bound?),
    }
}
