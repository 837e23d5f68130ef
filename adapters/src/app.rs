//! Starting Stepwise from its settings: the instance id, the database, the runtime.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use config::Settings;
use db::Database;
use runtime::{Handlers, PlanLimits, Recovery, Runtime, RuntimeError, RuntimeOptions, SystemClock};

/// Why Stepwise could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be opened.
    #[error(transparent)]
    Database(#[from] db::DbError),
    /// The runtime could not start or resume tasks.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The data directory could not be prepared.
    #[error("cannot use data directory {path}: {cause}")]
    DataDir {
        /// The directory.
        path: String,
        /// What went wrong.
        cause: std::io::Error,
    },
}

/// This server's id in task leases: `runtime.instance_id`, or one made on first start and
/// kept in the data directory, so a restarted server takes its own tasks back at once.
pub fn instance_id(settings: &Settings) -> Result<String, StartError> {
    if let Some(id) = &settings.runtime.instance_id {
        return Ok(id.clone());
    }
    let dir = &settings.data_dir;
    let data_dir_error = |cause| StartError::DataDir { path: dir.display().to_string(), cause };
    std::fs::create_dir_all(dir).map_err(data_dir_error)?;
    let path = dir.join("instance-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_owned()),
        _ => {
            let id = format!("stepwise-{:016x}", rand::random::<u64>());
            std::fs::write(&path, &id).map_err(data_dir_error)?;
            Ok(id)
        }
    }
}

/// Opens the database the settings name (creating the data directory for the default
/// SQLite file). Blocking: call before the server starts.
pub fn open_database(settings: &Settings) -> Result<Database, StartError> {
    create_default_data_dir(settings)?;
    let database = Database::open(&settings.database_url(), settings.database.pool_size)?;
    Ok(database.with_acquire_timeout(Duration::from_secs(settings.database.acquire_timeout_s)))
}

fn create_default_data_dir(settings: &Settings) -> Result<(), StartError> {
    if settings.database.url.is_none() {
        std::fs::create_dir_all(&settings.data_dir)
            .map_err(|cause| StartError::DataDir { path: settings.data_dir.display().to_string(), cause })?;
    }
    Ok(())
}

/// Opens the database for an admin command that may run while a server holds it.
pub fn open_database_beside_server(settings: &Settings) -> Result<Database, StartError> {
    create_default_data_dir(settings)?;
    Ok(Database::open_beside_server(&settings.database_url(), 1)?)
}

/// The runtime's options from the settings, for a server reached at `address`.
pub fn runtime_options(settings: &Settings, instance_id: String, address: Option<String>) -> RuntimeOptions {
    RuntimeOptions {
        instance_id,
        lease_ttl: Duration::from_secs(settings.runtime.lease_ttl_s),
        flush_interval: Duration::from_millis(settings.runtime.progress_flush_ms),
        limits: plan_limits(&settings.api),
        clock: Arc::new(SystemClock),
        task_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        max_running_tasks: settings.runtime.max_running_tasks,
        address,
    }
}

/// The limits on plans that the `[api]` settings set.
pub fn plan_limits(api: &config::ApiSettings) -> PlanLimits {
    PlanLimits {
        max_title_chars: api.max_title_chars,
        max_steps: api.max_steps,
        max_substeps: api.max_substeps,
        ..PlanLimits::default()
    }
}

/// Opens the database and starts the runtime of the server bound to `bound` with these
/// step kinds (`Handlers::builtin(settings.runtime.stderr_tail_lines)`, and an embedding
/// application's own), resuming unfinished tasks.
pub async fn start(
    settings: &Settings,
    bound: SocketAddr,
    handlers: Handlers,
) -> Result<(Runtime, Recovery), StartError> {
    let id = instance_id(settings)?;
    let database = open_database(settings)?;
    let options = runtime_options(settings, id, Some(advertised_url(settings, bound)));
    Ok(Runtime::start(Arc::new(database), handlers, options).await?)
}

/// The URL the cluster knows this server by: `server.advertise_url`, else the bound address.
pub fn advertised_url(settings: &Settings, bound: SocketAddr) -> String {
    match &settings.server.advertise_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => format!("http://{bound}"),
    }
}
