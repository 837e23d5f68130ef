//! The `exec` kind: runs a program in its own process group.
//!
//! Params: `{"argv": ["prog", "arg", …], "env"?: {"K": "V"}, "cwd"?: "/dir", "timeout_s"?: N}`.
//! Its standard output speaks a small line protocol:
//!
//! - `progress 45` sets the step's percent (0–100; decimals allowed),
//! - `substep-done Sales form` ticks off a substep by name,
//! - any other line is a log line, as is every line of standard error.
//!
//! Exit status 0 completes the step; anything else fails it with the status and the last
//! lines of standard error. Pausing stops the whole process group (SIGSTOP) and resuming
//! continues it (SIGCONT); cancelling, a timeout, or dropping the step kills the group.
//! The program sees `STEPWISE_TASK_ID`, `STEPWISE_STEP`, `STEPWISE_ATTEMPT` and
//! `STEPWISE_DONE_SUBSTEPS` (newline-separated names already done), so a rerun after a
//! restart can skip finished work. The timeout counts work time: paused time is excluded.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use db::LogStream;
use futures_util::future::LocalBoxFuture;
use serde::Deserialize;
use serde_json::{Number, Value};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};
use tokio::time::Instant;

use super::{StepContext, StepControl, StepError, StepHandler};

/// The longest timeout a step may ask for: 30 days.
const MAX_TIMEOUT_S: f64 = 30.0 * 86_400.0;

/// Runs programs; keeps the last `stderr_tail_lines` of standard error for failure messages.
#[derive(Debug, Clone, Copy)]
pub struct ExecHandler {
    stderr_tail_lines: usize,
}

impl ExecHandler {
    /// A handler that quotes up to `stderr_tail_lines` lines of standard error on failure.
    pub fn new(stderr_tail_lines: usize) -> ExecHandler {
        ExecHandler { stderr_tail_lines }
    }
}

/// The parameters as written; unknown ones are refused, each error names its field.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParams {
    argv: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<String>,
    /// A number as written, so a refusal quotes it as the client wrote it.
    timeout_s: Option<Number>,
}

/// The checked parameters.
#[derive(Debug, Clone, PartialEq)]
struct ExecParams {
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    cwd: Option<String>,
    timeout: Option<Duration>,
}

fn parse_params(params: &Value) -> Result<ExecParams, String> {
    // Checked first: serde would also take an array, as the fields in order.
    if !params.is_object() {
        return Err(format!("params must be an object, got {params}"));
    }
    let raw: RawParams = serde_path_to_error::deserialize(params).map_err(|error| error.to_string())?;
    if raw.argv.first().is_none_or(|program| program.is_empty()) {
        return Err("\"argv\" must name a program".into());
    }
    if let Some(name) = raw.env.keys().find(|name| name.is_empty() || name.contains('=')) {
        return Err(format!("\"env\" entry {name:?} must have a name without '='"));
    }
    if let Some(dir) = raw.cwd.as_deref().filter(|dir| !Path::new(dir).is_absolute()) {
        return Err(format!("\"cwd\" must be an absolute path, got {dir:?}"));
    }
    Ok(ExecParams {
        timeout: raw.timeout_s.as_ref().map(timeout).transpose()?,
        argv: raw.argv,
        env: raw.env,
        cwd: raw.cwd,
    })
}

fn timeout(seconds: &Number) -> Result<Duration, String> {
    match seconds.as_f64() {
        Some(s) if s > 0.0 && s <= MAX_TIMEOUT_S => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!(
            "\"timeout_s\" must be a positive number of seconds up to {MAX_TIMEOUT_S} (30 days), got {seconds}"
        )),
    }
}

impl StepHandler for ExecHandler {
    fn validate(&self, params: &Value) -> Result<(), String> {
        parse_params(params).map(drop)
    }

    fn run(&self, ctx: StepContext) -> LocalBoxFuture<'static, Result<Option<String>, StepError>> {
        let tail = self.stderr_tail_lines;
        Box::pin(async move {
            let params = parse_params(ctx.params()).map_err(StepError::Failed)?;
            let group = spawn(&params, &ctx)?;
            supervise(ctx, group, params.timeout, tail).await
        })
    }
}

/// A running program and its process group, killed when dropped.
struct Group {
    child: Child,
    pgid: i32,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Lines<BufReader<ChildStderr>>,
}

impl Group {
    fn signal(&self, signal: i32) {
        signal_group(self.pgid, signal);
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // Cancel, timeout, shutdown or a dropped step: nothing of the program may outlive it.
        signal_group(self.pgid, libc::SIGKILL);
        signal_group(self.pgid, libc::SIGCONT);
    }
}

#[allow(unsafe_code)]
fn signal_group(pgid: i32, signal: i32) {
    if pgid > 0 {
        // SAFETY: killpg only sends a signal; a stale group id fails with ESRCH, harmlessly.
        unsafe {
            libc::killpg(pgid, signal);
        }
    }
}

fn spawn(params: &ExecParams, ctx: &StepContext) -> Result<Group, StepError> {
    let mut command = Command::new(&params.argv[0]);
    command
        .args(&params.argv[1..])
        .envs(&params.env)
        .env("STEPWISE_TASK_ID", ctx.task_id())
        .env("STEPWISE_STEP", ctx.step().to_string())
        .env("STEPWISE_ATTEMPT", ctx.attempt.to_string())
        .env("STEPWISE_DONE_SUBSTEPS", done_substeps(ctx))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = &params.cwd {
        command.current_dir(dir);
    }
    die_with_parent(&mut command);
    let mut child =
        command.spawn().map_err(|e| StepError::Failed(format!("cannot start {:?}: {e}", params.argv[0])))?;
    let pgid = child.id().and_then(|id| i32::try_from(id).ok()).unwrap_or(0);
    let stdout = child.stdout.take().map(|s| BufReader::new(s).lines());
    let stderr = child.stderr.take().map(|s| BufReader::new(s).lines());
    match (stdout, stderr) {
        (Some(stdout), Some(stderr)) => Ok(Group { child, pgid, stdout, stderr }),
        _ => Err(StepError::Failed("cannot capture the program's output".into())),
    }
}

fn done_substeps(ctx: &StepContext) -> String {
    ctx.substeps().iter().filter(|s| s.done).map(|s| s.name.as_str()).collect::<Vec<_>>().join("\n")
}

/// Asks the kernel to kill the program if the server dies (e.g. `kill -9`), so a restarted
/// server never finds an orphan still doing the step's work.
#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    // SAFETY: the closure runs between fork and exec and only calls prctl, which is
    // async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// What the supervising loop is waiting for next.
enum Wake {
    Stdout(Option<String>),
    Stderr(Option<String>),
    Control(StepControl),
    Exited(std::io::Result<ExitStatus>),
    TimedOut,
}

async fn supervise(
    mut ctx: StepContext,
    mut group: Group,
    timeout: Option<Duration>,
    tail_lines: usize,
) -> Result<Option<String>, StepError> {
    let mut tail = VecDeque::with_capacity(tail_lines);
    let (mut stdout_open, mut stderr_open) = (true, true);
    let mut deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let mut paused_at: Option<Instant> = None;
    if ctx.control() == StepControl::Pause {
        group.signal(libc::SIGSTOP);
        paused_at = Some(Instant::now());
    }
    loop {
        let wake = tokio::select! {
            line = group.stdout.next_line(), if stdout_open => Wake::Stdout(line.ok().flatten()),
            line = group.stderr.next_line(), if stderr_open => Wake::Stderr(line.ok().flatten()),
            control = ctx.control_changed() => Wake::Control(control),
            status = group.child.wait(), if !stdout_open && !stderr_open => Wake::Exited(status),
            () = sleep_until(deadline), if deadline.is_some() && paused_at.is_none() => Wake::TimedOut,
        };
        match wake {
            Wake::Stdout(Some(line)) => handle_stdout(&ctx, &line),
            Wake::Stdout(None) => stdout_open = false,
            Wake::Stderr(Some(line)) => {
                if tail.len() == tail_lines {
                    tail.pop_front();
                }
                if tail_lines > 0 {
                    tail.push_back(line.clone());
                }
                ctx.log(LogStream::Stderr, &line);
            }
            Wake::Stderr(None) => stderr_open = false,
            Wake::Control(StepControl::Pause) => {
                group.signal(libc::SIGSTOP);
                paused_at.get_or_insert_with(Instant::now);
            }
            Wake::Control(StepControl::Run) => {
                group.signal(libc::SIGCONT);
                if let (Some(since), Some(d)) = (paused_at.take(), deadline) {
                    deadline = d.checked_add(since.elapsed());
                }
            }
            Wake::Control(StepControl::Cancel) => return Err(StepError::Cancelled),
            Wake::TimedOut => {
                let limit = timeout.unwrap_or_default().as_secs_f64();
                return Err(StepError::TimedOut(with_tail(format!("timed out after {limit} s"), &tail)));
            }
            Wake::Exited(status) => return finish(status, &tail),
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn handle_stdout(ctx: &StepContext, line: &str) {
    match read_stdout_line(line) {
        StdoutLine::Progress(percent) => ctx.progress(percent),
        StdoutLine::SubstepDone(name) => ctx.substep_done(name),
        StdoutLine::Log => ctx.log(LogStream::Stdout, line),
    }
}

/// What a line of a program's standard output says in the protocol.
#[derive(Debug, PartialEq)]
enum StdoutLine<'a> {
    /// `progress N` (N from 0 to 100, decimals and a `%` allowed): the step's percent.
    Progress(f64),
    /// `substep-done NAME`: a substep is done.
    SubstepDone(&'a str),
    /// Anything else: a log line.
    Log,
}

fn read_stdout_line(line: &str) -> StdoutLine<'_> {
    if let Some(value) = line.strip_prefix("progress ") {
        if let Ok(percent) = value.trim().trim_end_matches('%').parse::<f64>() {
            if (0.0..=100.0).contains(&percent) {
                return StdoutLine::Progress(percent);
            }
        }
    }
    match line.strip_prefix("substep-done ") {
        Some(name) => StdoutLine::SubstepDone(name.trim()),
        None => StdoutLine::Log,
    }
}

fn finish(status: std::io::Result<ExitStatus>, tail: &VecDeque<String>) -> Result<Option<String>, StepError> {
    let status = status.map_err(|e| StepError::Failed(format!("cannot wait for the program: {e}")))?;
    if status.success() {
        return Ok(None);
    }
    let what = match (status.code(), std::os::unix::process::ExitStatusExt::signal(&status)) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "exited abnormally".to_owned(),
    };
    Err(StepError::Exited(with_tail(what, tail)))
}

fn with_tail(what: String, tail: &VecDeque<String>) -> String {
    if tail.is_empty() {
        return what;
    }
    let lines: Vec<&str> = tail.iter().map(String::as_str).collect();
    format!("{what}; last stderr lines:\n{}", lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngSeed};
    use serde_json::json;

    use super::*;

    proptest! {
        #![proptest_config(Config { cases: 512, rng_seed: RngSeed::Fixed(17), failure_persistence: None, ..Config::default() })]

        /// Any line is read without a panic, and only a protocol line is anything but a log.
        #[test]
        fn any_stdout_line_reads_as_progress_a_substep_or_a_log(line in any::<String>()) {
            match read_stdout_line(&line) {
                StdoutLine::Progress(percent) => {
                    prop_assert!(line.starts_with("progress ") && (0.0..=100.0).contains(&percent));
                }
                StdoutLine::SubstepDone(name) => prop_assert!(line.starts_with("substep-done ") && name == name.trim()),
                StdoutLine::Log => prop_assert!(!line.starts_with("substep-done ")),
            }
        }

        #[test]
        fn a_percent_reads_with_its_decimals(percent in 0.0..=100.0f64, sign in prop_oneof![Just(""), Just("%")]) {
            let line = format!("progress {percent}{sign}");
            prop_assert_eq!(read_stdout_line(&line), StdoutLine::Progress(percent));
        }
    }

    #[test]
    fn params_are_checked_with_clear_messages() {
        let cases = [
            (json!({"argv": ["true"]}), None),
            (json!({"argv": ["sh", "-c", "x"], "env": {"A": "1"}, "cwd": "/tmp", "timeout_s": 2.5}), None),
            (json!([]), Some("params must be an object")),
            (json!({}), Some("missing field `argv`")),
            (json!({"argv": []}), Some("\"argv\" must name a program")),
            (json!({"argv": [""]}), Some("\"argv\" must name a program")),
            (json!({"argv": "x"}), Some("argv: invalid type: string \"x\", expected a sequence")),
            (json!({"argv": ["x", 1]}), Some("argv[1]: invalid type: integer `1`, expected a string")),
            (json!({"argv": ["x"], "env": {"A": 1}}), Some("env.A: invalid type: integer `1`, expected a string")),
            (json!({"argv": ["x"], "env": {"A=B": "1"}}), Some("\"env\" entry \"A=B\" must have a name without '='")),
            (json!({"argv": ["x"], "env": {"": "1"}}), Some("\"env\" entry \"\" must have a name")),
            (json!({"argv": ["x"], "cwd": "rel"}), Some("\"cwd\" must be an absolute path, got \"rel\"")),
            (json!({"argv": ["x"], "cwd": 5}), Some("cwd: invalid type: integer `5`, expected a string")),
            (json!({"argv": ["x"], "timeout_s": 0}), Some("positive number")),
            (json!({"argv": ["x"], "timeout_s": -1}), Some("up to 2592000 (30 days), got -1")),
            (json!({"argv": ["x"], "timeout_s": "5"}), Some("timeout_s: invalid type: string \"5\"")),
            (json!({"argv": ["x"], "timeout_s": 1e20}), Some("up to 2592000 (30 days), got 1e+20")),
            (json!({"argv": ["x"], "timeout_s": 2592001}), Some("up to 2592000")),
            (json!({"argv": ["x"], "timeout_s": 2592000}), None),
            (json!({"argv": ["x"], "tiemout_s": 5}), Some("unknown field `tiemout_s`, expected one of `argv`")),
        ];
        for (params, expected) in cases {
            match (parse_params(&params), expected) {
                (Ok(_), None) => {}
                (Err(message), Some(fragment)) => {
                    assert!(message.contains(fragment), "{params}: {message:?} lacks {fragment:?}")
                }
                (result, expected) => panic!("{params}: got {result:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn failure_messages_quote_the_stderr_tail() {
        let tail: VecDeque<String> = ["first".to_owned(), "second".to_owned()].into();
        assert_eq!(
            with_tail("exited with status 3".into(), &tail),
            "exited with status 3; last stderr lines:\nfirst\nsecond"
        );
        assert_eq!(with_tail("exited with status 3".into(), &VecDeque::new()), "exited with status 3");
    }
}
