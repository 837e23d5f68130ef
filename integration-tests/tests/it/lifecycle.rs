//! A task's life through the runtime's public API on a real database: steps in order,
//! controls, approvals, failures, retries, skips, ownership, and what gets persisted.

use std::sync::Arc;

use runtime::{
    Clock, Control, EventKind, ExternalReport, ManualClock, ReportOutcome, RuntimeError, RuntimeOptions, StepPlan,
    StepStatus, TaskStatus,
};
use serde_json::json;

use crate::on_both_backends;
use crate::support::*;

fn report_done() -> ExternalReport {
    ExternalReport { outcome: Some(ReportOutcome::Completed { output: None }), ..ExternalReport::default() }
}

fn report_failed(error: &str) -> ExternalReport {
    ExternalReport { outcome: Some(ReportOutcome::Failed { error: error.into() }), ..ExternalReport::default() }
}

/// Runs `plan` to completion three times, step i taking `durations_ms[i]` of `clock`: the
/// history the ETA tests estimate from.
async fn usual_history(rt: &runtime::Runtime, clock: &ManualClock, plan: &runtime::TaskPlan, durations_ms: &[i64]) {
    for _ in 0..3 {
        let id = rt.create_task("alice", plan, true).await.unwrap();
        for (step, ms) in (1..).zip(durations_ms) {
            clock.advance(*ms);
            rt.report("alice", &id, step, report_done()).await.unwrap();
        }
    }
}

on_both_backends! {
    async fn steps_run_in_order_and_every_transition_is_persisted(backend: Backend) {
        let db = TestDb::new(backend);
        let rt = start(&db).await;
        let mut plan = external_plan("Ordered", 2);
        plan.steps[0].substeps = vec!["first half".into(), "second half".into()];
        let id = rt.create_task("alice", &plan, true).await.unwrap();
        let mut events = events_of(&rt, &id).await;

        let task = rt.task("alice", &id).await.unwrap();
        assert_eq!(task.task.status, TaskStatus::Running);
        assert_eq!(task.steps[0].status, StepStatus::Running);
        assert_eq!(task.steps[1].status, StepStatus::Pending);

        let progress = ExternalReport { progress: Some(30.0), log: Some("working".into()), ..ExternalReport::default() };
        rt.report("alice", &id, 1, progress).await.unwrap();
        let half = ExternalReport { substep_done: Some("first half".into()), ..ExternalReport::default() };
        rt.report("alice", &id, 1, half).await.unwrap();
        assert_eq!(rt.task("alice", &id).await.unwrap().steps[0].progress, 50, "a substep lifts the percent");
        rt.report("alice", &id, 1, report_done()).await.unwrap();
        wait_for(&mut events, "step_started 2", |k| matches!(k, EventKind::StepStarted { step: 2, .. })).await;
        rt.report("alice", &id, 2, report_done()).await.unwrap();
        wait_for(&mut events, "task_complete", |k| *k == EventKind::TaskCompleted).await;

        let task = rt.task("alice", &id).await.unwrap();
        assert_eq!(task.task.status, TaskStatus::Completed);
        assert!(task.steps.iter().all(|s| s.status == StepStatus::Completed && s.progress == 100));
        assert!(task.steps[0].substeps.iter().all(|s| s.done));

        rt.flush().await;
        let database = Arc::clone(rt.db());
        let mut conn = database.conn().unwrap();
        let log = db::events_after(&mut conn, "alice", &id, 0, 1000).unwrap();
        let seqs: Vec<i64> = log.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "the event log is gap-free");
        let kinds: Vec<&str> = log.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            ["task_created", "task_started", "step_started", "substep_done", "step_complete", "step_started", "step_complete", "task_complete"]
        );
        let history = db::progress_history(&mut conn, "alice", &id).unwrap();
        assert!(history.iter().any(|r| r.step == 1 && r.percent == 100 && r.status == StepStatus::Completed));
        let logs = db::logs_after(&mut conn, "alice", &id, Some(1), 0, 100).unwrap();
        assert_eq!(logs.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(), ["working"]);
        let runs = db::recent_step_runs(&mut conn, 10).unwrap();
        assert_eq!(runs.iter().filter(|r| r.task_id == id).count(), 2, "completed runs feed the estimator");
        assert_eq!(runs[0].step_key, "external:Step 1");
        // The percents step 1 reported on the way (the progress report, then the substep),
        // kept for the estimator; step 2 reported none.
        let percents: Vec<f64> = runs[0].progress.iter().map(|m| m.percent).collect();
        assert_eq!(percents, [30.0, 50.0], "{:?}", runs[0]);
        assert!(runs[0].progress.windows(2).all(|w| w[0].elapsed_ms <= w[1].elapsed_ms), "{:?}", runs[0]);
        assert_eq!(runs[1].progress, [], "{:?}", runs[1]);
    }

    async fn pause_and_resume_continue_from_the_exact_point(backend: Backend) {
        let db = TestDb::new(backend);
        let rt = start(&db).await;
        let mut plan = external_plan("Pausable", 1);
        plan.steps[0].substeps = vec!["a".into(), "b".into()];
        let id = rt.create_task("alice", &plan, true).await.unwrap();
        rt.report("alice", &id, 1, ExternalReport { substep_done: Some("a".into()), ..ExternalReport::default() })
            .await
            .unwrap();

        rt.control("alice", &id, Control::Pause).await.unwrap();
        let task = rt.task("alice", &id).await.unwrap();
        assert_eq!((task.task.status, task.steps[0].status), (TaskStatus::Paused, StepStatus::Paused));
        let refused = rt.report("alice", &id, 1, report_done()).await.unwrap_err();
        assert!(matches!(refused, RuntimeError::InvalidStepTransition { .. }), "{refused}");

        rt.control("alice", &id, Control::Resume).await.unwrap();
        let task = rt.task("alice", &id).await.unwrap();
        assert_eq!(task.steps[0].status, StepStatus::Running);
        assert!(task.steps[0].substeps[0].done, "done substeps stay done");
        assert_eq!(task.steps[0].attempts, 1, "resuming is not a new attempt");
        rt.report("alice", &id, 1, report_done()).await.unwrap();
        assert_eq!(rt.task("alice", &id).await.unwrap().task.status, TaskStatus::Completed);
    }

    async fn invalid_transitions_are_refused_with_typed_errors(backend: Backend) {
        let db = TestDb::new(backend);
        let rt = start(&db).await;
        let id = rt.create_task("alice", &external_plan("Strict", 1), true).await.unwrap();
        let refusals = [
            (Control::Resume, "cannot resume task", TaskStatus::Running),
            (Control::Start, "cannot start task", TaskStatus::Running),
            (Control::Approve { step: None, comment: None }, "cannot approve task", TaskStatus::Running),
            (Control::Retry { step: 1 }, "cannot retry task", TaskStatus::Running),
        ];
        for (control, message, status) in refusals {
            let error = rt.control("alice", &id, control).await.unwrap_err();
            assert!(matches!(error, RuntimeError::InvalidTransition { status: s, .. } if s == status), "{error}");
            assert!(error.to_string().starts_with(message), "{error}");
        }
        let error = rt.control("alice", &id, Control::Skip { step: 1 }).await.unwrap_err();
        assert_eq!(error.to_string(), format!("cannot skip step 1 of task {id}: it is running"));
        let error = rt.control("alice", &id, Control::Skip { step: 9 }).await.unwrap_err();
        assert!(matches!(error, RuntimeError::StepNotFound { step: 9, .. }), "{error}");

        rt.report("alice", &id, 1, report_done()).await.unwrap();
        for control in [Control::Pause, Control::Resume, Control::Cancel] {
            let error = rt.control("alice", &id, control).await.unwrap_err();
            assert!(matches!(error, RuntimeError::InvalidTransition { status: TaskStatus::Completed, .. }), "{error}");
        }
        assert_eq!(rt.task("alice", &id).await.unwrap().task.status, TaskStatus::Completed, "refusals change nothing");
    }

    async fn approvals_gate_a_step_and_rejections_fail_or_skip_it(backend: Backend) {
        let db = TestDb::new(backend);
        let rt = start(&db).await;
        let mut plan = external_plan("Gated", 2);
        plan.steps[0].requires_approval = true;

        let approved = rt.create_task("alice", &plan, true).await.unwrap();
        let task = rt.task("alice", &approved).await.unwrap();
        assert_eq!((task.task.status, task.steps[0].status), (TaskStatus::Approval, StepStatus::Approval));
        rt.control("alice", &approved, Control::Approve { step: None, comment: Some("go".into()) }).await.unwrap();
        let task = rt.task("alice", &approved).await.unwrap();
        assert_eq!((task.task.status, task.steps[0].status), (TaskStatus::Running, StepStatus::Running));

        let rejected = rt.create_task("alice", &plan, true).await.unwrap();
        rt.control("alice", &rejected, Control::Reject { step: None, comment: Some("not now".into()) }).await.unwrap();
        let task = rt.task("alice", &rejected).await.unwrap();
        assert_eq!(task.task.status, TaskStatus::Failed);
        assert_eq!(task.task.error.as_deref(), Some("step 1 failed: approval rejected: not now"));

        plan.steps[0].skippable = true;
        let skipped = rt.create_task("alice", &plan, true).await.unwrap();
        rt.control("alice", &skipped, Control::Reject { step: None, comment: None }).await.unwrap();
        let task = rt.task("alice", &skipped).await.unwrap();
        assert_eq!((task.steps[0].status, task.steps[1].status), (StepStatus::Skipped, StepStatus::Running));
    }

    async fn failed_steps_can_be_retried_or_skipped(backend: Backend) {
        let db = TestDb::new(backend);
        let rt = start(&db).await;
        let id = rt.create_task("alice", &external_plan("Flaky", 2), true).await.unwrap();
        rt.report("alice", &id, 1, report_failed("disk full")).await.unwrap();
        let task = rt.task("alice", &id).await.unwrap();
        assert_eq!(task.task.status, TaskStatus::Failed);
        assert_eq!(task.task.error.as_deref(), Some("step 1 failed: disk full"));
        assert_eq!(task.steps[0].error.as_deref(), Some("disk full"));

        rt.control("alice", &id, Control::Retry { step: 1 }).await.unwrap();
        let task = rt.task("alice", &id).await.unwrap();
        assert_eq!((task.task.status, task.steps[0].status, task.steps[0].attempts), (TaskStatus::Running, StepStatus::Running, 2));

        rt.report("alice", &id, 1, report_failed("still full")).await.unwrap();
        rt.control("alice", &id, Control::Skip { step: 1 }).await.unwrap();
        let task = rt.task("alice", &id).await.unwrap();
        assert_eq!((task.steps[0].status, task.steps[1].status), (StepStatus::Skipped, StepStatus::Running));
        rt.report("alice", &id, 2, report_done()).await.unwrap();
        assert_eq!(rt.task("alice", &id).await.unwrap().task.status, TaskStatus::Completed);
    }

    async fn a_substep_that_does_not_raise_the_percent_is_no_new_sample(backend: Backend) {
        let db = TestDb::new(backend);
        let clock = Arc::new(ManualClock::new(1_000_000));
        let rt = start_on(&db, "samples", clock.clone()).await;
        let mut plan = external_plan("Substeps", 1);
        plan.steps[0].substeps = vec!["a".into(), "b".into()];
        let id = rt.create_task("alice", &plan, true).await.unwrap();
        let substep = |name: &str| ExternalReport { substep_done: Some(name.into()), ..ExternalReport::default() };
        clock.advance(1_000);
        rt.report("alice", &id, 1, ExternalReport { progress: Some(80.0), ..ExternalReport::default() }).await.unwrap();
        clock.advance(1_000);
        rt.report("alice", &id, 1, substep("a")).await.unwrap();
        clock.advance(1_000);
        rt.report("alice", &id, 1, substep("b")).await.unwrap();
        clock.advance(1_000);
        rt.report("alice", &id, 1, report_done()).await.unwrap();
        let mut conn = rt.db().conn().unwrap();
        let runs = db::task_step_runs(&mut conn, &id).unwrap();
        let marks: Vec<(i64, f64)> = runs[0].progress.iter().map(|m| (m.elapsed_ms, m.percent)).collect();
        // "a" left the percent at 80 (half the substeps): 80 % was not reached again at 2 s.
        assert_eq!(marks, [(1_000, 80.0), (3_000, 100.0)]);
    }

    async fn a_paused_step_keeps_its_estimate(backend: Backend) {
        let db = TestDb::new(backend);
        let clock = Arc::new(ManualClock::new(1_000_000));
        let rt = start_on(&db, "eta-paused", clock.clone()).await;
        let plan = external_plan("Pausable", 2);
        usual_history(&rt, &clock, &plan, &[10_000, 20_000]).await;
        let id = rt.create_task("alice", &plan, true).await.unwrap();
        clock.advance(7_000);
        let (_, running) = rt.task_view("alice", &id).await.unwrap();
        rt.control("alice", &id, Control::Pause).await.unwrap();
        clock.advance(60_000);
        let (task, paused) = rt.task_view("alice", &id).await.unwrap();
        assert_eq!(task.steps[0].status, StepStatus::Paused);
        // Seven seconds of work done either way; a minute of pause is no work.
        assert_eq!(paused, running, "paused, the estimate is the one it had when it ran");
        rt.control("alice", &id, Control::Resume).await.unwrap();
        let (_, resumed) = rt.task_view("alice", &id).await.unwrap();
        assert_eq!(resumed, running);
    }

    async fn only_completed_tasks_are_the_estimators_history(backend: Backend) {
        let db = TestDb::new(backend);
        let rt = start(&db).await;
        let history = |rt: &runtime::Runtime| {
            let mut conn = rt.db().conn().unwrap();
            let runs = db::recent_step_runs(&mut conn, 100).unwrap();
            runs.into_iter().map(|r| (r.task_id, r.step)).collect::<Vec<_>>()
        };
        let failed = rt.create_task("alice", &external_plan("Fails, then not", 2), true).await.unwrap();
        rt.report("alice", &failed, 1, report_done()).await.unwrap();
        rt.report("alice", &failed, 2, report_failed("disk full")).await.unwrap();
        let cancelled = rt.create_task("alice", &external_plan("Cancelled", 2), true).await.unwrap();
        rt.report("alice", &cancelled, 1, report_done()).await.unwrap();
        rt.control("alice", &cancelled, Control::Cancel).await.unwrap();
        assert_eq!(history(&rt), [], "a failed or cancelled task teaches nothing, as live");

        rt.control("alice", &failed, Control::Retry { step: 2 }).await.unwrap();
        rt.report("alice", &failed, 2, report_done()).await.unwrap();
        assert_eq!(history(&rt), [(failed.clone(), 1), (failed, 2)], "once it completes, it does");
    }

    async fn cancel_and_start_over_runs_the_same_plan_afresh(backend: Backend) {
        let db = TestDb::new(backend);
        let rt = start(&db).await;
        let id = rt.create_task("alice", &external_plan("Again", 2), true).await.unwrap();
        rt.report("alice", &id, 1, report_done()).await.unwrap();
        let fresh = rt.restart("alice", &id).await.unwrap();
        assert_ne!(fresh, id);
        let old = rt.task("alice", &id).await.unwrap();
        assert_eq!(old.task.status, TaskStatus::Cancelled);
        assert_eq!(old.steps[1].error.as_deref(), Some(runtime::STOPPED_BY_CANCEL));
        let new = rt.task("alice", &fresh).await.unwrap();
        assert_eq!(new.task.restarted_from.as_deref(), Some(id.as_str()));
        assert_eq!(new.task.status, TaskStatus::Running);
        assert_eq!(new.steps[0].status, StepStatus::Running, "a fresh run starts at step 1");
        assert_eq!(new.steps.len(), 2);
    }

    async fn another_owners_task_reads_like_a_missing_one(backend: Backend) {
        let db = TestDb::new(backend);
        let rt = start(&db).await;
        let id = rt.create_task("alice", &external_plan("Private", 1), true).await.unwrap();
        let missing = rt.task("bob", "0000000000000000").await.unwrap_err().to_string();
        let foreign = rt.task("bob", &id).await.unwrap_err().to_string();
        assert_eq!(missing.replace("0000000000000000", "ID"), foreign.replace(&id, "ID"));
        assert!(matches!(rt.control("bob", &id, Control::Cancel).await, Err(RuntimeError::TaskNotFound(_))));
        assert!(matches!(rt.report("bob", &id, 1, report_done()).await, Err(RuntimeError::TaskNotFound(_))));
        assert!(matches!(rt.restart("bob", &id).await, Err(RuntimeError::TaskNotFound(_))));
        assert_eq!(rt.task("alice", &id).await.unwrap().task.status, TaskStatus::Running);
    }

    async fn a_panicking_handler_fails_only_its_own_step(backend: Backend) {
        let db = TestDb::new(backend);
        let rt = start(&db).await;
        let bystander = rt.create_task("alice", &external_plan("Bystander", 1), true).await.unwrap();
        let plan = runtime::TaskPlan {
            title: "Doomed".into(),
            complexity: 1,
            steps: vec![StepPlan::new("Explode", "panics", json!({})), StepPlan::new("Never", "external", json!({}))],
        };
        let doomed = rt.create_task("alice", &plan, false).await.unwrap();
        let mut events = events_of(&rt, &doomed).await;
        rt.control("alice", &doomed, Control::Start).await.unwrap();
        wait_for(&mut events, "task_failed", |k| matches!(k, EventKind::TaskFailed { .. })).await;
        let task = rt.task("alice", &doomed).await.unwrap();
        assert_eq!(task.steps[0].error.as_deref(), Some("step handler panicked: boom"));
        assert_eq!(task.steps[1].status, StepStatus::Pending);

        rt.report("alice", &bystander, 1, report_done()).await.unwrap();
        assert_eq!(rt.task("alice", &bystander).await.unwrap().task.status, TaskStatus::Completed);
        let another = rt.create_task("alice", &external_plan("After", 1), true).await.unwrap();
        assert_eq!(rt.task("alice", &another).await.unwrap().task.status, TaskStatus::Running, "the runtime lives on");
    }

    async fn work_time_excludes_pauses_and_waiting(backend: Backend) {
        let db = TestDb::new(backend);
        let clock = Arc::new(ManualClock::new(1_000_000));
        let rt = start_on(&db, "clocked", clock.clone()).await;
        let mut plan = external_plan("Timed", 2);
        plan.steps[1].requires_approval = true;
        let id = rt.create_task("alice", &plan, true).await.unwrap();
        clock.advance(1_000);
        rt.control("alice", &id, Control::Pause).await.unwrap();
        clock.advance(60_000);
        rt.control("alice", &id, Control::Resume).await.unwrap();
        clock.advance(2_000);
        rt.report("alice", &id, 1, report_done()).await.unwrap();
        clock.advance(30_000);
        rt.control("alice", &id, Control::Approve { step: None, comment: None }).await.unwrap();
        clock.advance(4_000);
        rt.report("alice", &id, 2, report_done()).await.unwrap();
        let task = rt.task("alice", &id).await.unwrap();
        let work: Vec<i64> = task.steps.iter().map(|s| s.work_ms).collect();
        assert_eq!(work, [3_000, 4_000], "paused and approval time are not work time");
    }

    async fn etas_start_sensible_and_learn_from_completed_tasks(backend: Backend) {
        let db = TestDb::new(backend);
        let clock = Arc::new(ManualClock::new(1_000_000));
        let rt = start_on(&db, "eta", clock.clone()).await;
        let plan = external_plan("Learned", 2);
        let mut first_eta = None;
        for round in 0..3 {
            let id = rt.create_task("alice", &plan, true).await.unwrap();
            let (_, eta) = rt.task_view("alice", &id).await.unwrap();
            let eta = eta.expect("an ETA from the very start");
            assert!(eta.seconds > 0.0 && eta.range.0 <= eta.seconds && eta.seconds <= eta.range.1, "{eta:?}");
            first_eta.get_or_insert(eta.clone());
            if round == 2 {
                let error = (eta.seconds - 30.0).abs();
                let cold = (first_eta.as_ref().unwrap().seconds - 30.0).abs();
                assert!(error < cold, "history makes it better: {eta:?} vs cold {first_eta:?}");
                assert!(eta.range.0 <= 30.0 && 30.0 <= eta.range.1, "the range holds the usual 30 s: {eta:?}");
                // Each step's own history: the usual 10 s and 20 s.
                assert_eq!(eta.steps.iter().map(|s| s.step).collect::<Vec<_>>(), [1, 2], "{eta:?}");
                assert!((eta.steps[0].expected_s - 10.0).abs() < 3.0, "step 1 takes about 10 s: {eta:?}");
                assert!((eta.steps[1].expected_s - 20.0).abs() < 6.0, "step 2 takes about 20 s: {eta:?}");
            }
            clock.advance(10_000);
            rt.report("alice", &id, 1, report_done()).await.unwrap();
            if round == 2 {
                let (_, eta) = rt.task_view("alice", &id).await.unwrap();
                let eta = eta.expect("an ETA while step 2 runs");
                assert_eq!(eta.steps.iter().map(|s| s.step).collect::<Vec<_>>(), [2], "only step 2 is left: {eta:?}");
                clock.advance(15_000);
                let (_, later) = rt.task_view("alice", &id).await.unwrap();
                let later = later.expect("an ETA while step 2 runs");
                let rest = later.steps[0].expected_s;
                assert!(rest > 0.0 && rest < eta.steps[0].expected_s, "15 s in, less is left: {eta:?} then {later:?}");
                clock.advance(5_000);
            } else {
                clock.advance(20_000);
            }
            rt.report("alice", &id, 2, report_done()).await.unwrap();
        }
    }

    async fn a_plan_that_states_its_durations_has_a_true_eta_from_its_first_second(backend: Backend) {
        let db = TestDb::new(backend);
        let clock = Arc::new(ManualClock::new(1_000_000));
        let rt = start_on(&db, "eta-hinted", clock.clone()).await;
        // The demo's wait steps state their own lengths; nothing has ever run here.
        let demo = rt.create_task("alice", &adapters::plans::cellphone_store_crm(1.0), false).await.unwrap();
        let stored: Vec<Option<i64>> = rt.task("alice", &demo).await.unwrap().steps.iter().map(|s| s.estimate_ms).collect();
        assert_eq!(stored, [Some(12_000), Some(24_000), Some(12_000), Some(12_000)], "a wait step knows its length");

        // The same lengths stated by the author, on steps only a worker can finish.
        let mut plan = external_plan("Stated", 4);
        plan.complexity = 4;
        for (step, seconds) in plan.steps.iter_mut().zip([12.0, 24.0, 12.0, 12.0]) {
            step.estimate_s = Some(seconds);
        }
        let id = rt.create_task("alice", &plan, true).await.unwrap();
        for (elapsed_s, left_s) in [(0, 60.0), (1, 59.0)] {
            clock.advance(elapsed_s * 1_000);
            let (_, eta) = rt.task_view("alice", &id).await.unwrap();
            let eta = eta.expect("an ETA from the very start");
            assert!((eta.seconds - left_s).abs() <= 0.3 * left_s, "{elapsed_s} s in, about {left_s} s left: {eta:?}");
            let steps: Vec<f64> = eta.steps.iter().map(|s| s.expected_s).collect();
            assert!((steps[1] - 24.0).abs() <= 0.3 * 24.0, "step 2 is the long one: {eta:?}");
        }

        let refused = StepPlan { estimate_s: Some(-1.0), ..StepPlan::new("Negative", "external", json!({})) };
        let plan = runtime::TaskPlan { title: "Bad".into(), complexity: 1, steps: vec![refused] };
        let error = rt.create_task("alice", &plan, false).await.unwrap_err();
        assert!(error.to_string().contains("step 1 estimate_s must be more than 0"), "{error}");
    }

    async fn a_silent_step_that_overruns_gets_a_fresh_eta_by_itself(backend: Backend) {
        let db = TestDb::new(backend);
        let clock = Arc::new(ManualClock::new(1_000_000));
        let rt = start_on(&db, "eta-silent", clock.clone()).await;
        let plan = external_plan("Usually 10 s", 1);
        usual_history(&rt, &clock, &plan, &[10_000]).await;
        let id = rt.create_task("alice", &plan, true).await.unwrap();
        let mut events = events_of(&rt, &id).await;

        // Nothing is reported and nobody asks. Counted down, the estimate at the start says
        // nothing is left 40 s later; the task re-estimates on its own and says otherwise.
        clock.advance(40_000);
        let overrun_at = clock.now_ms();
        let fresh = tokio::time::timeout(PATIENCE, async {
            loop {
                let event = events.recv().await.expect("the task's events");
                match event.kind {
                    EventKind::EtaUpdated(eta) if event.at >= overrun_at => return eta,
                    _ => {}
                }
            }
        })
        .await
        .expect("an ETA published during the overrun");
        assert!(fresh.seconds >= 1.0, "{fresh:?}");
        assert_eq!(fresh.steps.len(), 1, "{fresh:?}");
        assert!(fresh.steps[0].expected_s > 0.0, "40 s into a 10 s step, still some left: {fresh:?}");
    }

    async fn an_eta_on_course_is_not_published_again_every_second(backend: Backend) {
        let db = TestDb::new(backend);
        let clock = Arc::new(ManualClock::new(1_000_000));
        let rt = start_on(&db, "eta-on-course", clock.clone()).await;
        let plan = external_plan("Steady", 2);
        usual_history(&rt, &clock, &plan, &[10_000, 20_000]).await;
        let id = rt.create_task("alice", &plan, true).await.unwrap();
        let mut events = events_of(&rt, &id).await;
        // The first half of a step that usually takes 10 s, re-estimated every second: the
        // estimate falls as the page counts it down, so nothing needs sending.
        for _ in 0..5 {
            clock.advance(1_000);
            rt.task_view("alice", &id).await.unwrap();
        }
        // Events arrive in order: once this one is in, any ETA published before it is too.
        rt.report("alice", &id, 1, ExternalReport { log: Some("marker".into()), ..ExternalReport::default() })
            .await
            .unwrap();
        let mut published = Vec::new();
        loop {
            let event = events.recv().await.expect("the task's events");
            match event.kind {
                EventKind::EtaUpdated(eta) => published.push(eta),
                EventKind::Log { .. } => break,
                _ => {}
            }
        }
        assert_eq!(published, [], "the page counts the ETA down itself");
    }

    async fn a_skipped_step_has_no_expected_time_and_the_others_keep_theirs(backend: Backend) {
        let db = TestDb::new(backend);
        let clock = Arc::new(ManualClock::new(1_000_000));
        let rt = start_on(&db, "eta-skip", clock.clone()).await;
        let id = rt.create_task("alice", &external_plan("Skipping", 3), true).await.unwrap();
        let (_, eta) = rt.task_view("alice", &id).await.unwrap();
        let steps: Vec<u32> = eta.expect("an ETA at start").steps.iter().map(|s| s.step).collect();
        assert_eq!(steps, [1, 2, 3]);

        clock.advance(4_000);
        rt.report("alice", &id, 1, report_failed("disk full")).await.unwrap();
        rt.control("alice", &id, Control::Skip { step: 1 }).await.unwrap();
        let (task, eta) = rt.task_view("alice", &id).await.unwrap();
        assert_eq!(task.steps[0].status, StepStatus::Skipped);
        let eta = eta.expect("an ETA after the skip");
        assert_eq!(eta.steps.iter().map(|s| s.step).collect::<Vec<_>>(), [2, 3], "{eta:?}");
        assert!(eta.steps.iter().all(|s| s.expected_s > 0.0 && s.expected_s.is_finite()), "{eta:?}");

        clock.advance(4_000);
        rt.report("alice", &id, 2, report_done()).await.unwrap();
        let (_, eta) = rt.task_view("alice", &id).await.unwrap();
        assert_eq!(eta.expect("an ETA for step 3").steps.iter().map(|s| s.step).collect::<Vec<_>>(), [3]);
    }

    async fn percent_updates_are_coalesced_into_one_write_per_flush(backend: Backend) {
        let db = TestDb::new(backend);
        // No periodic flush during the test: the one flush is the test's own.
        let options = RuntimeOptions { flush_interval: std::time::Duration::from_secs(3600), ..options("coalescing", Arc::new(runtime::SystemClock)) };
        let rt = start_with(&db, options).await;
        let id = rt.create_task("alice", &external_plan("Chatty", 1), true).await.unwrap();
        for percent in 1..=100 {
            rt.report("alice", &id, 1, ExternalReport { progress: Some(f64::from(percent)), ..ExternalReport::default() }).await.unwrap();
        }
        let stats = rt.recorder_stats();
        let flushes = stats.flushes.load(std::sync::atomic::Ordering::Relaxed);
        rt.flush().await;
        assert_eq!(stats.flushes.load(std::sync::atomic::Ordering::Relaxed), flushes + 1, "one transaction");

        let database = Arc::clone(rt.db());
        let mut conn = database.conn().unwrap();
        let progress: Vec<_> = db::events_after(&mut conn, "alice", &id, 0, 1000).unwrap().into_iter().filter(|e| e.kind == "progress").collect();
        assert!(progress.is_empty(), "percents are history, not events: {progress:?}");
        let history = db::progress_history(&mut conn, "alice", &id).unwrap();
        let running: Vec<u8> = history.iter().filter(|r| r.status == StepStatus::Running).map(|r| r.percent).collect();
        assert_eq!(running, [0, 100], "the step's start, then only the latest percent");
        assert_eq!(db::load_task(&mut conn, &id).unwrap().unwrap().steps[0].progress, 100);
    }

    async fn an_owner_subscription_sees_only_that_owners_tasks(backend: Backend) {
        let db = TestDb::new(backend);
        let rt = start(&db).await;
        let mut alices = rt.events(runtime::Topic::Owner("alice".into())).await.unwrap();
        let bobs_task = rt.create_task("bob", &external_plan("Bob's", 1), true).await.unwrap();
        let alices_task = rt.create_task("alice", &external_plan("Alice's", 1), true).await.unwrap();
        // The hub delivers in order, so bob's earlier events would come before alice's start.
        loop {
            let event = tokio::time::timeout(PATIENCE, alices.recv()).await.expect("alice's events").expect("open");
            assert_eq!(&*event.owner, "alice", "bob's task {bobs_task} leaked: {event:?}");
            if event.kind == EventKind::TaskStarted {
                assert_eq!(&*event.task_id, alices_task.as_str());
                break;
            }
        }
    }
}
