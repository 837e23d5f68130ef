//! Steps that act when nobody does: automatic retries after a backoff, and approvals with a
//! deadline and a reminder. Time is a test clock; the task notices it on its own tick.

use std::sync::Arc;

use runtime::{
    ApprovalPolicy, Backoff, Clock, Control, EventKind, ExternalReport, FailureKind, ManualClock, OnTimeout,
    ReportOutcome, RetryPolicy, StepStatus, TaskPlan, TaskStatus,
};

use crate::on_both_backends;
use crate::support::*;

fn failed(error: &str) -> ExternalReport {
    ExternalReport { outcome: Some(ReportOutcome::Failed { error: error.into() }), ..ExternalReport::default() }
}

/// Two external steps; the first tries three times in all, 10 s then 20 s apart.
fn retrying_plan(on: Vec<FailureKind>) -> TaskPlan {
    let mut plan = external_plan("Flaky", 2);
    let backoff = Backoff { initial_s: 10.0, factor: 2.0, max_s: 600.0 };
    plan.steps[0].retry = Some(RetryPolicy { max_attempts: 3, backoff, on });
    plan
}

fn started(step: u32, attempt: u32) -> impl Fn(&EventKind) -> bool {
    move |kind| matches!(kind, EventKind::StepStarted { step: s, attempt: a, .. } if *s == step && *a == attempt)
}

fn retrying(attempt: u32) -> impl Fn(&EventKind) -> bool {
    move |kind| matches!(kind, EventKind::StepRetrying { attempt: a, .. } if *a == attempt)
}

/// A step whose approval lapses after 60 s as `on_timeout` says, reminded 15 s before.
fn deadline_plan(on_timeout: OnTimeout) -> TaskPlan {
    let mut plan = external_plan("Needs a yes", 2);
    plan.steps[0].approval = Some(ApprovalPolicy { timeout_s: 60.0, on_timeout, remind_before_s: Some(15.0) });
    plan
}

on_both_backends! {
    async fn a_failed_attempt_waits_its_backoff_then_runs_again_until_its_attempts_run_out(backend: Backend) {
        let db = TestDb::new(backend);
        let clock = Arc::new(ManualClock::new(1_000_000));
        let rt = start_on(&db, "retries", clock.clone()).await;
        let id = rt.create_task("alice", &retrying_plan(vec![FailureKind::Error]), true).await.unwrap();
        let mut events = events_of(&rt, &id).await;

        rt.report("alice", &id, 1, failed("service busy")).await.unwrap();
        let retry_at = clock.now_ms() + 10_000;
        let event = wait_for(&mut events, "step_retrying 2", retrying(2)).await;
        assert_eq!(event.kind, EventKind::StepRetrying { step: 1, attempt: 2, max_attempts: 3, retry_at });
        let (task, eta) = rt.task_view("alice", &id).await.unwrap();
        assert_eq!(task.task.status, TaskStatus::Running, "the task goes on");
        let step = &task.steps[0];
        assert_eq!((step.status, step.due_at, step.error.as_deref()), (StepStatus::Pending, Some(retry_at), Some("service busy")));
        let eta = eta.expect("an estimate");
        assert!(eta.seconds >= 10.0, "the backoff is part of the time left: {eta:?}");

        // Not before its time; then on the task's own tick.
        clock.advance(9_000);
        assert_eq!(rt.task("alice", &id).await.unwrap().steps[0].status, StepStatus::Pending);
        clock.advance(1_000);
        wait_for(&mut events, "attempt 2", started(1, 2)).await;
        assert_eq!(rt.task("alice", &id).await.unwrap().steps[0].due_at, None);

        // A paused task's countdown stops; resuming starts the waiting attempt at once.
        rt.report("alice", &id, 1, failed("service busy")).await.unwrap();
        wait_for(&mut events, "step_retrying 3", retrying(3)).await;
        rt.control("alice", &id, Control::Pause).await.unwrap();
        clock.advance(60_000);
        rt.control("alice", &id, Control::Resume).await.unwrap();
        let after_resume = events_until(&mut events, "attempt 3", started(1, 3)).await;
        let kinds: Vec<&str> = after_resume.iter().map(|e| e.name()).filter(|name| *name != "eta").collect();
        assert_eq!(kinds, ["task_paused", "task_resumed", "step_started"], "nothing ran while paused");

        // The third failure is the last.
        rt.report("alice", &id, 1, failed("still busy")).await.unwrap();
        wait_for(&mut events, "task_failed", |k| matches!(k, EventKind::TaskFailed { .. })).await;
        let task = rt.task("alice", &id).await.unwrap();
        assert_eq!((task.task.status, task.steps[0].status, task.steps[0].attempts), (TaskStatus::Failed, StepStatus::Failed, 3));

        // Every attempt is in the history.
        let database = Arc::clone(rt.db());
        let mut conn = database.conn().unwrap();
        let kinds: Vec<String> = db::events_after(&mut conn, "alice", &id, 0, 100).unwrap().into_iter().map(|e| e.kind).collect();
        let count = |kind: &str| kinds.iter().filter(|k| *k == kind).count();
        assert_eq!((count("step_started"), count("step_failed"), count("step_retrying")), (3, 3, 2), "{kinds:?}");
    }

    async fn a_failure_the_policy_does_not_name_is_not_retried(backend: Backend) {
        let db = TestDb::new(backend);
        let rt = start(&db).await;
        let id = rt.create_task("alice", &retrying_plan(vec![FailureKind::Timeout]), true).await.unwrap();
        rt.report("alice", &id, 1, failed("refused")).await.unwrap();
        let task = rt.task("alice", &id).await.unwrap();
        assert_eq!((task.task.status, task.steps[0].attempts), (TaskStatus::Failed, 1), "a worker's failure is an error, not a timeout");
    }

    async fn a_retry_waiting_its_backoff_survives_a_restart(backend: Backend) {
        let db = Arc::new(TestDb::new(backend));
        let clock = Arc::new(ManualClock::new(1_000_000));
        let (first, first_clock, ids) = (Arc::clone(&db), Arc::clone(&clock), Arc::new(std::sync::Mutex::new(Vec::new())));
        let created = Arc::clone(&ids);
        in_own_system(move || async move {
            let rt = start_on(&first, "before", first_clock).await;
            let id = rt.create_task("alice", &retrying_plan(vec![FailureKind::Error]), true).await.unwrap();
            rt.report("alice", &id, 1, failed("service busy")).await.unwrap();
            rt.shutdown().await;
            created.lock().unwrap().push(id);
        });
        let id = ids.lock().unwrap()[0].clone();

        let rt = start_on(&db, "after", clock.clone()).await;
        let mut events = events_of(&rt, &id).await;
        assert_eq!(rt.task("alice", &id).await.unwrap().steps[0].status, StepStatus::Pending, "still waiting");
        clock.advance(10_000);
        wait_for(&mut events, "attempt 2 after the restart", started(1, 2)).await;
    }

    async fn an_approval_with_a_deadline_is_reminded_then_lapses_as_its_policy_says(backend: Backend) {
        let db = TestDb::new(backend);
        let clock = Arc::new(ManualClock::new(1_000_000));
        let rt = start_on(&db, "deadlines", clock.clone()).await;
        let id = rt.create_task("alice", &deadline_plan(OnTimeout::Skip), true).await.unwrap();
        let mut events = events_of(&rt, &id).await;
        let due_at = clock.now_ms() + 60_000;
        let task = rt.task("alice", &id).await.unwrap();
        assert_eq!((task.task.status, task.steps[0].due_at), (TaskStatus::Approval, Some(due_at)));

        clock.advance(45_000);
        let reminder = wait_for(&mut events, "approval_reminder", |k| matches!(k, EventKind::ApprovalReminder { .. })).await;
        assert_eq!(reminder.kind, EventKind::ApprovalReminder { step: 1, name: "Step 1".into(), due_at });
        clock.advance(15_000);
        let lapsed = events_until(&mut events, "step 2 started", started(2, 1)).await;
        let kinds: Vec<EventKind> =
            lapsed.into_iter().filter(|k| !matches!(k, EventKind::EtaUpdated(_))).collect();
        assert_eq!(kinds[..2], [EventKind::ApprovalTimedOut { step: 1, on_timeout: OnTimeout::Skip }, EventKind::StepSkipped { step: 1 }]);

        // `fail` ends the task, and says why.
        let id = rt.create_task("alice", &deadline_plan(OnTimeout::Fail), true).await.unwrap();
        let mut events = events_of(&rt, &id).await;
        clock.advance(60_000);
        wait_for(&mut events, "task_failed", |k| matches!(k, EventKind::TaskFailed { .. })).await;
        let task = rt.task("alice", &id).await.unwrap();
        assert_eq!(task.task.status, TaskStatus::Failed);
        assert_eq!(task.steps[0].error.as_deref(), Some("approval timed out after 60 s"));

        // A decision in time clears the deadline.
        let id = rt.create_task("alice", &deadline_plan(OnTimeout::Fail), true).await.unwrap();
        rt.control("alice", &id, Control::Approve { step: None, comment: None }).await.unwrap();
        clock.advance(120_000);
        let task = rt.task("alice", &id).await.unwrap();
        assert_eq!((task.task.status, task.steps[0].status, task.steps[0].due_at), (TaskStatus::Running, StepStatus::Running, None));
    }
}
