//! The `stepwise` command line: serve, run the demo, run a plan file, follow a task.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use adapters::api::auth::NewToken;
use adapters::{app, http, plans, terminal};
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
    /// running tasks, tab-separated, the longest-running first.
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
    /// List tokens (ids, users, when made, whether revoked); never the secrets.
    List {
        /// Only this user's tokens.
        #[arg(long)]
        user: Option<String>,
    },
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
    let format = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
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
    let (runtime, recovery) = app::start(settings, address).await?;
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
        TokenAction::Create { user } => {
            let user = user.trim();
            if user.is_empty() || user.len() > 100 {
                bail!("a user name is 1 to 100 characters");
            }
            let token = NewToken::generate();
            db::insert_token(&mut conn, &token.id, user, &token.hash, now)?;
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
                println!("{}\t{}\t{}\t{state}", token.id, token.user, adapters::api::wire::rfc3339(token.created_at));
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
