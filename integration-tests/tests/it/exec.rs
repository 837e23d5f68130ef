//! The `exec` step kind with real programs: the stdout protocol and logs, failures with the
//! stderr tail, timeouts, and what pause, resume and cancel do to the program's processes.

use std::sync::Arc;

use runtime::{
    Backoff, Control, EventKind, FailureKind, LogStream, RetryPolicy, Runtime, StepStatus, TaskPlan, TaskStatus,
};
use serde_json::json;

use crate::on_both_backends;
use crate::support::*;

/// Stores `plan`, subscribes to its events and only then starts it, so no event is missed.
async fn run(rt: &Runtime, plan: &TaskPlan) -> (String, tokio::sync::mpsc::UnboundedReceiver<runtime::TaskEvent>) {
    let id = rt.create_task("alice", plan, false).await.unwrap();
    let events = events_of(rt, &id).await;
    rt.control("alice", &id, Control::Start).await.unwrap();
    (id, events)
}

/// The persisted log lines of step 1, after writing everything pending.
async fn step_one_logs(rt: &Runtime, id: &str) -> Vec<(LogStream, String)> {
    rt.flush().await;
    let database = Arc::clone(rt.db());
    let mut conn = database.conn().unwrap();
    db::logs_after(&mut conn, "alice", id, Some(1), 0, 100).unwrap().into_iter().map(|l| (l.stream, l.line)).collect()
}

fn is_task_failed(kind: &EventKind) -> bool {
    matches!(kind, EventKind::TaskFailed { .. })
}

on_both_backends! {
    async fn protocol_lines_report_progress_and_other_lines_are_logged(backend: Backend) {
        let db = TestDb::new(backend);
        let rt = start(&db).await;
        let script = "echo progress 30; echo substep-done A; echo plain line; echo to stderr >&2; echo progress 80";
        let mut plan = shell_plan(script, None);
        plan.steps[0].substeps = vec!["A".into(), "B".into()];
        let (id, mut events) = run(&rt, &plan).await;

        let seen = events_until(&mut events, "task_complete", |k| *k == EventKind::TaskCompleted).await;
        let percents: Vec<u8> = seen
            .iter()
            .filter_map(|k| match k {
                EventKind::Progress { step: 1, percent, .. } => Some(*percent),
                _ => None,
            })
            .collect();
        assert!(percents.contains(&30) && percents.contains(&80), "progress events: {percents:?}");
        assert!(
            seen.iter().any(|k| matches!(k, EventKind::SubstepDone { step: 1, index: 0, name } if &**name == "A")),
            "no substep_done for A: {seen:?}"
        );
        let task = rt.task("alice", &id).await.unwrap();
        assert_eq!((task.task.status, task.steps[0].status), (TaskStatus::Completed, StepStatus::Completed));
        assert_eq!(task.steps[0].progress, 100);

        let mut logs = step_one_logs(&rt, &id).await;
        // Standard output and error are separate pipes: lines of the two have no order.
        logs.sort_by(|a, b| a.1.cmp(&b.1));
        assert_eq!(
            logs,
            [(LogStream::Stdout, "plain line".to_owned()), (LogStream::Stderr, "to stderr".to_owned())],
            "protocol lines are not logged"
        );
    }

    async fn a_nonzero_exit_fails_the_step_with_the_status_and_the_stderr_tail(backend: Backend) {
        let db = TestDb::new(backend);
        let rt = start(&db).await;
        let (id, mut events) = run(&rt, &shell_plan("echo first >&2; echo last >&2; exit 3", None)).await;
        wait_for(&mut events, "task_failed", is_task_failed).await;

        let task = rt.task("alice", &id).await.unwrap();
        assert_eq!((task.task.status, task.steps[0].status), (TaskStatus::Failed, StepStatus::Failed));
        assert_eq!(task.steps[0].error.as_deref(), Some("exited with status 3; last stderr lines:\nfirst\nlast"));
    }

    async fn retries_tell_a_timeout_from_an_exit_status(backend: Backend) {
        let db = TestDb::new(backend);
        let rt = start(&db).await;
        let retry = |on: Vec<FailureKind>| {
            let backoff = Backoff { initial_s: 0.05, factor: 1.0, max_s: 0.05 };
            Some(RetryPolicy { max_attempts: 2, backoff, on })
        };
        // Exits 3 twice: retried on `exit_code`, so it runs twice.
        let mut plan = shell_plan("exit 3", None);
        plan.steps[0].retry = retry(vec![FailureKind::ExitCode]);
        let (id, mut events) = run(&rt, &plan).await;
        let seen = events_until(&mut events, "task_failed", is_task_failed).await;
        assert!(seen.iter().any(|k| matches!(k, EventKind::StepRetrying { attempt: 2, .. })), "{seen:?}");
        assert_eq!(rt.task("alice", &id).await.unwrap().steps[0].attempts, 2);
        // Runs out of time: not retried when only exit statuses are.
        let mut plan = shell_plan("exec sleep 30", Some(0.2));
        plan.steps[0].retry = retry(vec![FailureKind::ExitCode]);
        let (id, mut events) = run(&rt, &plan).await;
        wait_for(&mut events, "task_failed", is_task_failed).await;
        assert_eq!(rt.task("alice", &id).await.unwrap().steps[0].attempts, 1);
        // And retried when timeouts are.
        plan.steps[0].retry = retry(vec![FailureKind::Timeout]);
        let (id, mut events) = run(&rt, &plan).await;
        wait_for(&mut events, "task_failed", is_task_failed).await;
        assert_eq!(rt.task("alice", &id).await.unwrap().steps[0].attempts, 2);
    }

    async fn a_timeout_fails_the_step_and_kills_the_program(backend: Backend) {
        let db = TestDb::new(backend);
        let rt = start(&db).await;
        let pid_file = db.dir.path().join("pid");
        let script = format!("echo $$ > '{}'; exec sleep 30", pid_file.display());
        let (id, mut events) = run(&rt, &shell_plan(&script, Some(0.3))).await;
        wait_for(&mut events, "task_failed", is_task_failed).await;

        let task = rt.task("alice", &id).await.unwrap();
        assert_eq!(task.task.status, TaskStatus::Failed);
        let error = task.steps[0].error.clone().unwrap_or_default();
        assert!(error.starts_with("timed out after 0.3 s"), "{error:?}");
        let sleeper = read_pid(&pid_file);
        eventually("the timed-out sleep to be killed", || !process_alive(sleeper)).await;
    }

    async fn cancel_kills_the_whole_process_group(backend: Backend) {
        let db = TestDb::new(backend);
        let rt = start(&db).await;
        let (shell_file, child_file) = (db.dir.path().join("shell.pid"), db.dir.path().join("child.pid"));
        let script = format!(
            "sleep 300 & echo $! > '{}'; echo $$ > '{}'; echo progress 10; wait",
            child_file.display(),
            shell_file.display()
        );
        let (id, mut events) = run(&rt, &shell_plan(&script, None)).await;
        wait_for(&mut events, "progress 10", |k| matches!(k, EventKind::Progress { percent: 10, .. })).await;
        let (shell, child) = (read_pid(&shell_file), read_pid(&child_file));
        assert!(process_alive(shell) && process_alive(child), "both processes run before the cancel");

        rt.control("alice", &id, Control::Cancel).await.unwrap();
        eventually("the shell to be killed", || !process_alive(shell)).await;
        eventually("its background child to be killed", || !process_alive(child)).await;
        let task = rt.task("alice", &id).await.unwrap();
        assert_eq!(task.task.status, TaskStatus::Cancelled);
        assert_eq!(task.steps[0].error.as_deref(), Some(runtime::STOPPED_BY_CANCEL));
    }

    async fn pause_stops_the_process_group_and_resume_continues_it(backend: Backend) {
        let db = TestDb::new(backend);
        let rt = start(&db).await;
        let (pid_file, go_file) = (db.dir.path().join("pid"), db.dir.path().join("go"));
        // The wait for the go file uses only builtins: a shell stopped while it starts a
        // `sleep` (dash uses vfork) shows as 'D' in /proc until it continues, not as 'T'.
        let script = format!(
            "echo $$ > '{}'; echo progress 10; while [ ! -f '{}' ]; do :; done; echo progress 90",
            pid_file.display(),
            go_file.display()
        );
        let (id, mut events) = run(&rt, &shell_plan(&script, None)).await;
        wait_for(&mut events, "progress 10", |k| matches!(k, EventKind::Progress { percent: 10, .. })).await;
        let pid = read_pid(&pid_file);

        rt.control("alice", &id, Control::Pause).await.unwrap();
        eventually("the program to be stopped", || process_state(pid) == Some('T')).await;
        let task = rt.task("alice", &id).await.unwrap();
        assert_eq!((task.task.status, task.steps[0].status), (TaskStatus::Paused, StepStatus::Paused));
        std::fs::write(&go_file, "").unwrap();
        assert_eq!(process_state(pid), Some('T'), "a stopped program stays stopped while the task is paused");

        rt.control("alice", &id, Control::Resume).await.unwrap();
        let seen = events_until(&mut events, "task_complete", |k| *k == EventKind::TaskCompleted).await;
        let resumed = seen.iter().position(|k| *k == EventKind::TaskResumed).expect("a task_resumed event");
        let ninety = seen.iter().position(|k| matches!(k, EventKind::Progress { percent: 90, .. }));
        assert!(ninety.is_some_and(|at| at > resumed), "progress 90 comes only after the resume: {seen:?}");
        let task = rt.task("alice", &id).await.unwrap();
        assert_eq!((task.task.status, task.steps[0].status), (TaskStatus::Completed, StepStatus::Completed));
        assert!(task.steps[0].work_ms > 0, "work time {}", task.steps[0].work_ms);
    }

    async fn a_program_that_does_not_exist_fails_the_step(backend: Backend) {
        let db = TestDb::new(backend);
        let rt = start(&db).await;
        let plan = TaskPlan {
            title: "Missing".into(),
            complexity: 1,
            steps: vec![runtime::StepPlan::new("Run it", "exec", json!({"argv": ["/nonexistent/program"]}))],
        };
        let (id, mut events) = run(&rt, &plan).await;
        wait_for(&mut events, "task_failed", is_task_failed).await;

        let task = rt.task("alice", &id).await.unwrap();
        assert_eq!(task.task.status, TaskStatus::Failed);
        let error = task.steps[0].error.clone().unwrap_or_default();
        assert!(error.starts_with("cannot start \"/nonexistent/program\""), "{error:?}");
    }

    async fn the_program_gets_its_environment_and_working_directory(backend: Backend) {
        let db = TestDb::new(backend);
        let rt = start(&db).await;
        let dir = db.dir.path().canonicalize().unwrap().display().to_string();
        let mut plan = shell_plan("echo \"$STEPWISE_STEP $STEPWISE_ATTEMPT $FOO\"; pwd", None);
        plan.steps[0].params["env"] = json!({"FOO": "bar"});
        plan.steps[0].params["cwd"] = json!(dir);
        let (id, mut events) = run(&rt, &plan).await;
        wait_for(&mut events, "task_complete", |k| *k == EventKind::TaskCompleted).await;

        let lines: Vec<String> = step_one_logs(&rt, &id).await.into_iter().map(|(_, line)| line).collect();
        assert_eq!(lines, ["1 1 bar".to_owned(), dir]);
    }
}
