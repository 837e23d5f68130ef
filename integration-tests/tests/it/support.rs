//! What the tests share: the two backends, a throwaway database per test, a runtime on it,
//! and waiting for events (never sleeping and hoping).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use runtime::{
    Clock, EventKind, Handlers, PlanLimits, Runtime, RuntimeOptions, StepContext, StepError, StepHandler, StepPlan,
    SystemClock, TaskEvent, TaskPlan, Topic,
};
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

/// The backends and a throwaway database per test: db's, shared with its own tests.
pub use db::testing::{TestBackend as Backend, TestDb};

/// How long a test waits for something that must happen before calling it a failure.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Runs each test body once per backend, as `NAME::sqlite` and `NAME::postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($(async fn $name:ident($backend:ident: Backend) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                #[actix::test]
                async fn sqlite() {
                    let $backend = $crate::support::Backend::Sqlite;
                    $body
                }

                #[actix::test]
                async fn postgres() {
                    let $backend = $crate::support::Backend::Postgres;
                    $body
                }
            }
        )*
    };
}

/// What points the `stepwise` binary at a test database.
pub trait BinaryEnv {
    /// Environment variables for the binary: this database, a data directory, port 0.
    fn env(&self) -> Vec<(String, String)>;
}

impl BinaryEnv for TestDb {
    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("STEPWISE_DATA_DIR".into(), self.dir.path().display().to_string()),
            ("STEPWISE_DATABASE__URL".into(), self.url.clone()),
            ("STEPWISE_SERVER__LISTEN".into(), "127.0.0.1:0".into()),
            ("STEPWISE_LOG__LEVEL".into(), "warn".into()),
        ]
    }
}

/// Runs SQL on the test's PostgreSQL database with psql; returns what it printed.
pub fn psql_on(url: &str, sql: &str) -> String {
    let output = Command::new("psql")
        .args([url, "-qtA", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("run psql (PostgreSQL's client)");
    assert!(output.status.success(), "psql failed: {sql}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A step kind for tests whose handler panics.
pub struct Panics;

impl StepHandler for Panics {
    fn validate(&self, _: &Value) -> Result<(), String> {
        Ok(())
    }

    fn run(&self, _: StepContext) -> futures_util::future::LocalBoxFuture<'static, Result<Option<String>, StepError>> {
        Box::pin(async { panic!("boom") })
    }
}

/// Options for a test runtime: fast flushes, a fixed instance id.
pub fn options(instance: &str, clock: Arc<dyn Clock>) -> RuntimeOptions {
    RuntimeOptions {
        instance_id: instance.into(),
        lease_ttl: Duration::from_secs(30),
        flush_interval: Duration::from_millis(20),
        limits: PlanLimits::default(),
        clock,
        task_threads: 2,
        max_running_tasks: 10_000,
        address: None,
    }
}

/// The built-in kinds plus `panics`.
pub fn handlers() -> Handlers {
    Handlers::builtin(5).with("panics", Panics)
}

/// Starts a runtime on `db` as instance `instance`.
pub async fn start_on(db: &TestDb, instance: &str, clock: Arc<dyn Clock>) -> Runtime {
    start_with(db, options(instance, clock)).await
}

/// Starts a runtime on `db` with `options`.
pub async fn start_with(db: &TestDb, options: RuntimeOptions) -> Runtime {
    start_on_database(Arc::new(db.open()), options).await
}

/// Starts a runtime on an opened `database` with `options`.
pub async fn start_on_database(database: Arc<db::Database>, options: RuntimeOptions) -> Runtime {
    let (runtime, _) = Runtime::start(database, handlers(), options).await.expect("runtime starts");
    runtime
}

/// A runtime on a fresh database, with the system clock.
pub async fn start(db: &TestDb) -> Runtime {
    start_on(db, "test-server", Arc::new(SystemClock)).await
}

/// A plan of `n` external steps.
pub fn external_plan(title: &str, n: usize) -> TaskPlan {
    TaskPlan {
        title: title.into(),
        complexity: 2,
        steps: (1..=n).map(|i| StepPlan::new(&format!("Step {i}"), "external", json!({}))).collect(),
    }
}

/// A one-step plan running `script` with `sh -c`.
pub fn shell_plan(script: &str, timeout_s: Option<f64>) -> TaskPlan {
    let mut params = json!({"argv": ["sh", "-c", script]});
    if let Some(timeout) = timeout_s {
        params["timeout_s"] = json!(timeout);
    }
    TaskPlan { title: "Shell".into(), complexity: 1, steps: vec![StepPlan::new("Run script", "exec", params)] }
}

/// The events of one task.
pub async fn events_of(runtime: &Runtime, task_id: &str) -> UnboundedReceiver<TaskEvent> {
    runtime.events(Topic::Task(task_id.into())).await.expect("subscribe")
}

/// Waits for the first event matching `wanted`; panics with what was seen after PATIENCE.
pub async fn wait_for(
    events: &mut UnboundedReceiver<TaskEvent>,
    what: &str,
    wanted: impl Fn(&EventKind) -> bool,
) -> TaskEvent {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(PATIENCE, async {
        while let Some(event) = events.recv().await {
            if wanted(&event.kind) {
                return Some(event);
            }
            seen.push(event.kind.name());
        }
        None
    })
    .await;
    match found {
        Ok(Some(event)) => event,
        _ => panic!("no {what} event within {PATIENCE:?}; saw {seen:?}"),
    }
}

/// Polls `condition` until it holds (for effects outside the runtime, like a process's
/// state); panics after PATIENCE.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "{what} did not happen within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `stepwise` binary of this build: beside the test executable's `deps/` folder.
/// Cargo only hands its own package's tests the path of a binary, so `scripts/test` builds
/// it (`cargo build -p adapters --bin stepwise`) before the suite runs.
pub fn stepwise_binary() -> PathBuf {
    let test_exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = test_exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps");
    let binary = profile_dir.join("stepwise");
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build -p adapters --bin stepwise` (scripts/test does)",
        binary.display()
    );
    binary
}

/// A `stepwise` process whose standard output is read line by line in the background, and
/// whose standard error is drained as it comes: a pipe nobody reads fills at 64 KiB, and a
/// server logging into a full pipe stops (seen in `chaos.rs`, whose servers live long).
pub struct Process {
    pub child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    pub seen: Vec<String>,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Process {
    /// Starts `stepwise ARGS` with `env` added to a clean environment (PATH and HOME kept).
    pub fn spawn(args: &[&str], env: &[(String, String)]) -> Process {
        let mut command = Command::new(stepwise_binary());
        command.args(args).env_clear().stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        for key in ["PATH", "HOME"] {
            if let Ok(value) = std::env::var(key) {
                command.env(key, value);
            }
        }
        command.envs(env.iter().map(|(k, v)| (k, v)));
        let mut child = command.spawn().expect("start the stepwise binary");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut pipe = child.stderr.take().expect("piped stderr");
        let drained = std::sync::Arc::clone(&stderr);
        std::thread::spawn(move || {
            use std::io::Read;
            let mut chunk = [0u8; 8192];
            while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                drained.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Process { child, lines, seen: Vec::new(), stderr }
    }

    /// Waits for a stdout line starting with `prefix` and returns the rest of it.
    pub fn wait_for_line(&mut self, prefix: &str) -> String {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.trim().to_owned();
                    }
                }
                Err(_) => {
                    let stderr = self.stderr_now();
                    panic!("no line starting {prefix:?} within {PATIENCE:?}; saw {:?}; stderr: {stderr}", self.seen)
                }
            }
        }
    }

    fn stderr_now(&mut self) -> String {
        if self.child.try_wait().ok().flatten().is_none() {
            return "(still running)".into();
        }
        // The drain thread reads until the pipe closes, which the exit has just done.
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while std::sync::Arc::strong_count(&self.stderr) > 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Waits for the process to exit; returns its status and standard error.
    pub fn wait(mut self) -> (std::process::ExitStatus, String) {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for stepwise") {
                return (status, self.stderr_now());
            }
            assert!(std::time::Instant::now() < deadline, "stepwise did not exit within {PATIENCE:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal to the process.
    #[allow(unsafe_code)]
    pub fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid fits");
        // SAFETY: kill only sends a signal to our own child.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "signal {signal} to stepwise");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `stepwise ARGS` to completion; returns its status, stdout and stderr.
pub fn run_binary(args: &[&str], env: &[(String, String)]) -> (std::process::ExitStatus, String, String) {
    let mut command = Command::new(stepwise_binary());
    command.args(args).env_clear();
    if let Ok(path) = std::env::var("PATH") {
        command.env("PATH", path);
    }
    command.envs(env.iter().map(|(k, v)| (k, v)));
    let output = command.output().expect("run the stepwise binary");
    (output.status, String::from_utf8_lossy(&output.stdout).into(), String::from_utf8_lossy(&output.stderr).into())
}

/// Runs `work` in an actix system of its own on another thread, and waits until that
/// system is gone: a server's whole life, ended as if the process had stopped.
pub fn in_own_system<F, Fut>(work: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    std::thread::spawn(move || actix::System::new().block_on(work())).join().expect("the server's thread");
}

/// Every event up to and including the first matching `wanted`; panics like [`wait_for`].
pub async fn events_until(
    events: &mut UnboundedReceiver<TaskEvent>,
    what: &str,
    wanted: impl Fn(&EventKind) -> bool,
) -> Vec<EventKind> {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(PATIENCE, async {
        while let Some(event) = events.recv().await {
            let last = wanted(&event.kind);
            seen.push(event.kind);
            if last {
                return true;
            }
        }
        false
    })
    .await;
    match found {
        Ok(true) => seen,
        _ => panic!(
            "no {what} event within {PATIENCE:?}; saw {:?}",
            seen.iter().map(EventKind::name).collect::<Vec<_>>()
        ),
    }
}

/// The state letter of process `pid` in `/proc` (`R`, `S`, `T` stopped, `Z` zombie), or
/// `None` once it is gone.
pub fn process_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name in parentheses may itself hold spaces or parentheses; the state
    // follows the last closing one.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// The process id a test script wrote to `path` (with `echo $$ > FILE`).
pub fn read_pid(path: &std::path::Path) -> i32 {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read the pid file {}: {e}", path.display()));
    text.trim().parse().unwrap_or_else(|e| panic!("the pid file {} holds {text:?}: {e}", path.display()))
}

/// Whether a process exists and has not exited (a zombie counts as gone).
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()) != Some("Z"),
        Err(_) => false,
    }
}
