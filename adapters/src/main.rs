//! The `stepwise` command line: serve, run the demo, run a plan file, follow a task; and,
//! against a running server, report on a step or control a task.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use adapters::api::auth::NewToken;
use adapters::{app, http, plans, remote, terminal};
use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use config::Settings;
use runtime::{Clock as _, Runtime, TaskStatus};

/// Stepwise runs long, multi-step tasks and always tells you where they are.
///
/// Settings come from compiled-in defaults, then the TOML file given with --config (or
/// STEPWISE_CONFIG), then STEPWISE_* environment variables (e.g.
/// STEPWISE_SERVER__LISTEN=127.0.0.1:0, STEPWISE_DATABASE__URL=postgres://…). By default the
/// data (a SQLite database) lives in $XDG_DATA_HOME/stepwise or ~/.local/share/stepwise.
#[derive(Debug, Parser)]
#[command(name = "stepwise", version, about, long_about)]
struct Cli {
    /// A TOML settings file.
    #[arg(long, global = true, env = "STEPWISE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: resume unfinished tasks and serve HTTP until SIGINT or SIGTERM.
    ///
    /// Prints `listening on http://ADDRESS` once bound (useful with port 0).
    Serve,
    /// Run the seed's example task, "Cellphone Store CRM", with its live progress view.
    ///
    /// Starts the server on the embedded default too; takes about a minute.
    Demo {
        /// Run the simulated work this many times faster.
        #[arg(long, default_value_t = 1.0, value_parser = positive_speed)]
        speed: f64,
    },
    /// Run the task in a JSON plan file and follow it live until it ends.
    ///
    /// The plan: {"title", "complexity"?, "steps": [{"name", "kind", "params"?, "substeps"?,
    /// "requires_approval"?, "skippable"?}]}. Kinds: exec ({"argv": [...], "env"?, "cwd"?,
    /// "timeout_s"?}), wait ({"seconds": N}), external. Prints `task ID` first. Exits 0
    /// when the task completes, 1 when it fails or is cancelled.
    Run {
        /// The plan file.
        plan: PathBuf,
        /// Whose task it is.
        #[arg(long, default_value = "local")]
        owner: String,
    },
    /// Create, list and revoke the API tokens people and programs authenticate with.
    ///
    /// Works while a server runs on the same database.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// List the servers sharing the database: id, address, state, start, last heartbeat and
    /// running tasks of its limit, tab-separated, the longest-running first; then how many
    /// tasks wait in the queue for a server with room.
    ///
    /// A server is `live`, `stopped` (shut down cleanly) or `gone` (no heartbeat for
    /// runtime.lease_ttl_s; its tasks are taken over). Works while servers run.
    Cluster,
    /// Start (resuming unfinished tasks) and follow one task live until it ends.
    Watch {
        /// The task's id.
        task_id: String,
        /// Whose task it is.
        #[arg(long, default_value = "local")]
        owner: String,
    },
    /// Report on an `external` step of a task, over a running server's API.
    ///
    /// The server is STEPWISE_URL (default http://127.0.0.1:8080), the token STEPWISE_TOKEN.
    /// Prints where the task stands; exits 1 with the API's code and message if the server
    /// refuses, 2 if it cannot be reached.
    Report {
        /// The task's id.
        task_id: String,
        /// The step's order (1 is the first).
        step: u32,
        /// The step's percent, 0 to 100 (decimals allowed: 12.5).
        #[arg(long, value_parser = percent)]
        progress: Option<f64>,
        /// A substep that is done, by name.
        #[arg(long)]
        substep_done: Option<String>,
        /// A line for the step's log.
        #[arg(long)]
        log: Option<String>,
        /// The step is done.
        #[arg(long, conflicts_with = "fail")]
        complete: bool,
        /// The step failed, with this message.
        #[arg(long, value_name = "MESSAGE")]
        fail: Option<String>,
    },
    /// Approve the step a task waits on, over a running server's API (as `report`).
    Approve {
        /// The task's id.
        task_id: String,
        /// What you say about it.
        #[arg(long)]
        comment: Option<String>,
    },
    /// Reject the step a task waits on, over a running server's API (as `report`).
    Reject {
        /// The task's id.
        task_id: String,
        /// What you say about it.
        #[arg(long)]
        comment: Option<String>,
    },
    /// Pause a running task, over a running server's API (as `report`).
    Pause {
        /// The task's id.
        task_id: String,
    },
    /// Resume a paused task, over a running server's API (as `report`).
    Resume {
        /// The task's id.
        task_id: String,
    },
    /// Cancel a task, over a running server's API (as `report`).
    Cancel {
        /// The task's id.
        task_id: String,
    },
}

/// The request a client command sends, or `None` for the commands that run here.
fn remote_request(command: &Command) -> Option<remote::TaskRequest> {
    let decision = |comment: &Option<String>| Some(serde_json::json!({ "comment": comment }));
    Some(match command {
        Command::Report { task_id, step, progress, substep_done, log, complete, fail } => {
            let status = match (complete, fail) {
                (true, _) => Some("completed"),
                (false, Some(_)) => Some("failed"),
                (false, None) => None,
            };
            let fields = [
                ("progress", progress.map(serde_json::Value::from)),
                ("substep_done", substep_done.as_deref().map(serde_json::Value::from)),
                ("log", log.as_deref().map(serde_json::Value::from)),
                ("status", status.map(serde_json::Value::from)),
                ("error", fail.as_deref().map(serde_json::Value::from)),
            ];
            let body: serde_json::Map<String, serde_json::Value> =
                fields.into_iter().filter_map(|(key, value)| Some((key.to_owned(), value?))).collect();
            remote::TaskRequest::report(task_id, *step, body.into())
        }
        Command::Approve { task_id, comment } => remote::TaskRequest::control(task_id, "approve", decision(comment)),
        Command::Reject { task_id, comment } => remote::TaskRequest::control(task_id, "reject", decision(comment)),
        Command::Pause { task_id } => remote::TaskRequest::control(task_id, "pause", None),
        Command::Resume { task_id } => remote::TaskRequest::control(task_id, "resume", None),
        Command::Cancel { task_id } => remote::TaskRequest::control(task_id, "cancel", None),
        _ => return None,
    })
}

/// Sends a client command's request and says what came of it.
fn remote_command(request: &remote::TaskRequest) -> anyhow::Result<std::process::ExitCode> {
    let url = std::env::var("STEPWISE_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".to_owned());
    let Ok(token) = std::env::var("STEPWISE_TOKEN") else {
        bail!("set STEPWISE_TOKEN to an API token (make one with `stepwise token create --user NAME`)");
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    match runtime.block_on(remote::send(&url, &token, request)) {
        Ok(document) => {
            println!("{}", remote::summary(&document));
            Ok(std::process::ExitCode::SUCCESS)
        }
        Err(refused @ remote::RemoteError::Refused { .. }) => {
            eprintln!("stepwise: {refused}");
            Ok(std::process::ExitCode::from(1))
        }
        Err(error) => Err(error.into()),
    }
}

#[derive(Debug, Subcommand)]
enum TokenAction {
    /// Make a token for a user (created on first use) and print it, alone on its line.
    ///
    /// The token is shown once: only its hash is stored. Its id goes to stderr.
    Create {
        /// The user the token acts as.
        #[arg(long)]
        user: String,
        /// The token's own request rate, requests a second (1 to 1000000; the burst stays
        /// api.request_burst), e.g. for a worker that drives many tasks; without it the
        /// token has the server's api.requests_per_second.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        rate: Option<u32>,
    },
    /// Revoke one token by id, or every token of a user.
    Revoke {
        /// The token's id (from `token create` or `token list`).
        #[arg(required_unless_present = "user", conflicts_with = "user")]
        id: Option<String>,
        /// Revoke all of this user's tokens.
        #[arg(long)]
        user: Option<String>,
    },
    /// List tokens (ids, users, when made, whether revoked, their own rate if any); never the
    /// secrets.
    List {
        /// Only this user's tokens.
        #[arg(long)]
        user: Option<String>,
    },
}

/// A number, for `--progress`; whether it is a percent is the server's to say, in its
/// words.
fn percent(text: &str) -> Result<f64, String> {
    match text.trim_end_matches('%').parse::<f64>() {
        Ok(percent) if percent.is_finite() => Ok(percent),
        _ => Err(format!("expected a number, got {text:?}")),
    }
}

fn positive_speed(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(speed) if speed > 0.0 && speed.is_finite() => Ok(speed),
        _ => Err(format!("expected a positive number, got {text:?}")),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("stepwise: {error:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    // A client of a server elsewhere: this machine's settings are not its business.
    if let Some(request) = remote_request(&cli.command) {
        return remote_command(&request);
    }
    let settings = Settings::load(cli.config.as_deref(), std::env::vars()).context("invalid settings")?;
    init_logging(&settings);
    match &cli.command {
        Command::Token { action } => return token(&settings, action),
        Command::Cluster => return cluster(&settings),
        _ => {}
    }
    let system = actix::System::new();
    system.block_on(async move {
        match cli.command {
            Command::Serve => serve(&settings).await,
            Command::Demo { speed } => {
                let plan = plans::cellphone_store_crm(speed);
                run_plan(&settings, "demo", &plan, true).await
            }
            Command::Run { plan, owner } => {
                let text =
                    std::fs::read_to_string(&plan).with_context(|| format!("cannot read plan {}", plan.display()))?;
                let plan = plans::parse_plan(&text).with_context(|| format!("invalid plan {}", plan.display()))?;
                run_plan(&settings, &owner, &plan, false).await
            }
            Command::Token { .. } | Command::Cluster => unreachable!("handled before the actix system starts"),
            Command::Report { .. }
            | Command::Approve { .. }
            | Command::Reject { .. }
            | Command::Pause { .. }
            | Command::Resume { .. }
            | Command::Cancel { .. } => unreachable!("sent to a server before the settings are read"),
            Command::Watch { task_id, owner } => {
                let (runtime, server, _) = start(&settings, false).await?;
                let server = in_background(server);
                let code = follow(&runtime, &owner, &task_id).await;
                stop(runtime, server).await;
                code
            }
        }
    })
}

fn init_logging(settings: &Settings) {
    use tracing_subscriber::prelude::*;
    let level: tracing::Level = settings.log.level.as_str().parse().unwrap_or(tracing::Level::INFO);
    // Our crates at the configured level; actix's own start-up chatter only when it matters.
    let targets = tracing_subscriber::filter::Targets::new()
        .with_default(level.min(tracing::Level::WARN))
        .with_targets(["runtime", "adapters", "stepwise", "db"].map(|t| (t, level)));
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let format: Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync> =
        match settings.log.format {
            // A JSON object per line: the event's fields at the top, with the spans it
            // happened in (`span`, `spans`), such as a request's `request_id`.
            config::LogFormat::Json => lines.json().flatten_event(true).boxed(),
            config::LogFormat::Text => lines.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).boxed(),
        };
    tracing_subscriber::registry().with(format).with(targets).init();
}

/// Starts the runtime and the HTTP server; with `fallback_port`, a taken port falls back to
/// any free one rather than failing (the demo should just work).
async fn start(
    settings: &Settings,
    fallback_port: bool,
) -> anyhow::Result<(Runtime, actix_web::dev::Server, SocketAddr)> {
    // Bound first, so a taken port fails before any task is resumed, and the cluster
    // learns the address this server really has.
    let listener = bind(settings.server.listen, fallback_port)?;
    let address = listener.local_addr()?;
    let handlers = runtime::Handlers::builtin(settings.runtime.stderr_tail_lines);
    let (runtime, recovery) = app::start(settings, address, handlers).await?;
    if recovery.resumed > 0 {
        eprintln!("resumed {} unfinished task(s) in {:?}", recovery.resumed, recovery.elapsed);
    }
    let shutdown_timeout = Duration::from_secs(settings.server.shutdown_timeout_s);
    let built =
        http::server(listener, runtime.clone(), settings.api.clone(), settings.notifications.clone(), shutdown_timeout);
    let server = match built {
        Ok(server) => server,
        Err(error) => {
            // The resumed tasks stop cleanly, their progress written, before the error shows.
            runtime.shutdown().await;
            return Err(error.into());
        }
    };
    println!("listening on http://{address}");
    std::io::stdout().flush()?;
    Ok((runtime, server, address))
}

/// Serves HTTP in the background while the command follows a task.
fn in_background(server: actix_web::dev::Server) -> ServerHandle {
    let handle = server.handle();
    actix::spawn(server);
    handle
}

fn bind(address: SocketAddr, fallback_port: bool) -> anyhow::Result<TcpListener> {
    match TcpListener::bind(address) {
        Ok(listener) => Ok(listener),
        Err(error) if fallback_port && error.kind() == std::io::ErrorKind::AddrInUse => {
            eprintln!("{address} is in use; using a free port instead");
            Ok(TcpListener::bind(SocketAddr::new(address.ip(), 0))?)
        }
        Err(error) => Err(error).with_context(|| format!("cannot listen on {address} (server.listen)")),
    }
}

/// A fresh API token for the `demo` user, so the demo's task can be watched over HTTP.
async fn demo_token(runtime: &Runtime) -> anyhow::Result<String> {
    let database = std::sync::Arc::clone(runtime.db());
    let now = runtime.clock().now_ms();
    let token = NewToken::generate();
    let (id, hash) = (token.id.clone(), token.hash.clone());
    tokio::task::spawn_blocking(move || {
        let mut conn = database.conn()?;
        db::insert_token(&mut conn, &id, "demo", &hash, now)
    })
    .await?
    .context("cannot create the demo user's token")?;
    Ok(token.secret)
}

fn token(settings: &Settings, action: &TokenAction) -> anyhow::Result<std::process::ExitCode> {
    let database = app::open_database_beside_server(settings)?;
    let mut conn = database.conn()?;
    let now = runtime::SystemClock.now_ms();
    match action {
        TokenAction::Create { user, rate } => {
            let user = user.trim();
            if user.is_empty() || user.len() > 100 {
                bail!("a user name is 1 to 100 characters");
            }
            let token = NewToken::generate();
            db::insert_token(&mut conn, &token.id, user, &token.hash, now)?;
            if let Some(rate) = rate {
                db::set_token_rate(&mut conn, &token.id, *rate)?;
            }
            eprintln!(
                "token {} for user {user} (shown once; revoke with `stepwise token revoke {}`)",
                token.id, token.id
            );
            println!("{}", token.secret);
        }
        TokenAction::Revoke { id, user } => {
            let which = match (id, user) {
                (Some(id), _) => db::TokenSelector::Id(id),
                (None, Some(user)) => db::TokenSelector::User(user),
                (None, None) => bail!("name a token id or --user"),
            };
            let revoked = db::revoke_tokens(&mut conn, which, now)?;
            if revoked == 0 {
                bail!("no unrevoked token matched");
            }
            eprintln!("revoked {revoked} token(s); servers stop accepting them within api.token_cache_s seconds");
        }
        TokenAction::List { user } => {
            for token in db::list_tokens(&mut conn, user.as_deref())? {
                let state = match token.revoked_at {
                    Some(at) => format!("revoked {}", adapters::api::wire::rfc3339(at)),
                    None => "active".to_owned(),
                };
                let rate = token.requests_per_second.map_or("server's rate".to_owned(), |r| format!("{r} requests/s"));
                let made = adapters::api::wire::rfc3339(token.created_at);
                println!("{}\t{}\t{made}\t{state}\t{rate}", token.id, token.user);
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn cluster(settings: &Settings) -> anyhow::Result<std::process::ExitCode> {
    let database = app::open_database_beside_server(settings)?;
    let mut conn = database.conn()?;
    let now = runtime::SystemClock.now_ms();
    let lease_ttl_ms = i64::try_from(settings.runtime.lease_ttl_s.saturating_mul(1000)).unwrap_or(i64::MAX);
    let rfc3339 = adapters::api::wire::rfc3339;
    for server in db::list_servers(&mut conn)? {
        let state = server.state(now, lease_ttl_ms).as_str();
        let age_s = (now - server.heartbeat_at).max(0) / 1000;
        println!(
            "{}\t{}\t{state}\tstarted {}\theartbeat {age_s} s ago\t{} of {} running",
            server.id,
            server.address.as_deref().unwrap_or("-"),
            rfc3339(server.started_at),
            server.running_tasks,
            server.max_tasks
        );
    }
    let queued = db::queued_tasks(&mut conn)?;
    println!("{queued} queued for a server with room");
    Ok(std::process::ExitCode::SUCCESS)
}

async fn stop(runtime: Runtime, server: ServerHandle) {
    server.stop(true).await;
    runtime.shutdown().await;
}

async fn serve(settings: &Settings) -> anyhow::Result<std::process::ExitCode> {
    let (runtime, server, _) = start(settings, false).await?;
    // actix-web stops on SIGINT/SIGTERM; then the steps are stopped and progress written.
    server.await?;
    runtime.shutdown().await;
    Ok(std::process::ExitCode::SUCCESS)
}

async fn run_plan(
    settings: &Settings,
    owner: &str,
    plan: &runtime::TaskPlan,
    demo: bool,
) -> anyhow::Result<std::process::ExitCode> {
    let (runtime, server, address) = start(settings, demo).await?;
    let server = in_background(server);
    let demo_token = match demo {
        true => match demo_token(&runtime).await {
            Ok(token) => Some(token),
            Err(error) => {
                stop(runtime, server).await;
                return Err(error);
            }
        },
        false => None,
    };
    let task_id = match runtime.create_task(owner, plan, true).await {
        Ok(id) => id,
        Err(error) => {
            stop(runtime, server).await;
            bail!(error);
        }
    };
    println!("task {task_id}");
    if let Some(token) = demo_token {
        println!("token {token}");
        println!("  open http://{address}/login#token={token}&next=/tasks/{task_id}");
        println!("  curl -H 'Authorization: Bearer {token}' http://{address}/api/tasks/{task_id}/progress");
    }
    std::io::stdout().flush()?;
    let code = follow(&runtime, owner, &task_id).await;
    stop(runtime, server).await;
    code
}

async fn follow(runtime: &Runtime, owner: &str, task_id: &str) -> anyhow::Result<std::process::ExitCode> {
    let stop_signal = tokio::signal::ctrl_c();
    tokio::select! {
        followed = terminal::follow(runtime, owner, task_id) => {
            let task = followed?;
            Ok(match task.task.status {
                TaskStatus::Completed => std::process::ExitCode::SUCCESS,
                _ => std::process::ExitCode::FAILURE,
            })
        }
        _ = stop_signal => {
            eprintln!("\ninterrupted: task {task_id} stays unfinished and resumes on the next start");
            Ok(std::process::ExitCode::from(130))
        }
    }
}
