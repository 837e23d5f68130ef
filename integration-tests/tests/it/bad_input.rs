//! Plans the runtime must refuse: each refusal is an `InvalidPlan` whose message names the
//! problem, and no refused plan stores anything or touches another task.

use std::sync::Arc;

use runtime::{Runtime, RuntimeError, StepPlan, TaskPlan, TaskStatus};
use serde_json::{json, Value};

use crate::on_both_backends;
use crate::support::*;

/// A plan titled "Bad" with `steps`.
fn plan_of(steps: Vec<StepPlan>) -> TaskPlan {
    TaskPlan { title: "Bad".into(), complexity: 1, steps }
}

fn external(name: &str) -> StepPlan {
    StepPlan::new(name, "external", json!({}))
}

fn ordered(name: &str, order: Option<u32>) -> StepPlan {
    StepPlan { order, ..external(name) }
}

fn titled(title: String) -> TaskPlan {
    TaskPlan { title, ..external_plan("", 1) }
}

/// A good first step and a second step of `kind` with `params`.
fn second_step(kind: &str, params: Value) -> TaskPlan {
    plan_of(vec![external("Fine"), StepPlan::new("Broken", kind, params)])
}

fn with_substeps(names: Vec<String>) -> TaskPlan {
    let mut plan = external_plan("Bad", 1);
    plan.steps[0].substeps = names;
    plan
}

/// Submits `plan` and returns the refusal's message; panics if it was not refused as invalid.
async fn refused(rt: &Runtime, plan: &TaskPlan) -> String {
    match rt.create_task("alice", plan, true).await {
        Err(RuntimeError::InvalidPlan(message)) => message,
        other => panic!("expected an invalid-plan refusal, got {other:?}"),
    }
}

/// Every bad plan of this file.
fn every_bad_plan() -> Vec<TaskPlan> {
    vec![
        plan_of(Vec::new()),
        plan_of(vec![ordered("A", Some(1)), ordered("B", Some(1))]),
        plan_of(vec![ordered("A", Some(1)), ordered("B", None)]),
        plan_of(vec![ordered("A", Some(1)), ordered("B", Some(3))]),
        plan_of(vec![StepPlan::new("Beam me up", "teleport", json!({}))]),
        titled("x".repeat(10 * 1024 * 1024)),
        titled(String::new()),
        TaskPlan { complexity: 0, ..external_plan("Zero", 1) },
        second_step("exec", json!({"argv": []})),
        second_step("exec", json!({"argv": ["x"], "timeout_s": -1})),
        second_step("wait", json!({"seconds": "soon"})),
        with_substeps(vec!["A".into(), "B".into(), "A".into()]),
        with_substeps((1..=257).map(|i| format!("part {i}")).collect()),
    ]
}

on_both_backends! {
    async fn a_plan_without_steps_is_refused(backend: Backend) {
        let db = TestDb::new(backend);
        let rt = start(&db).await;
        assert_eq!(refused(&rt, &plan_of(Vec::new())).await, "a task needs at least one step");
    }

    async fn step_orders_must_be_all_or_none_unique_and_in_range(backend: Backend) {
        let db = TestDb::new(backend);
        let rt = start(&db).await;
        let duplicate = plan_of(vec![ordered("A", Some(1)), ordered("B", Some(1))]);
        assert_eq!(refused(&rt, &duplicate).await, "duplicate step order 1");
        let mixed = plan_of(vec![ordered("A", Some(1)), ordered("B", None)]);
        assert_eq!(refused(&rt, &mixed).await, "either every step gives an order or none does");
        let out_of_range = plan_of(vec![ordered("A", Some(1)), ordered("B", Some(3))]);
        assert_eq!(refused(&rt, &out_of_range).await, "step \"B\" has order 3; orders must be 1 to 2");
    }

    async fn an_unknown_kind_is_refused_with_the_known_ones(backend: Backend) {
        let db = TestDb::new(backend);
        let rt = start(&db).await;
        let message = refused(&rt, &plan_of(vec![StepPlan::new("Beam me up", "teleport", json!({}))])).await;
        assert!(message.contains("unknown kind \"teleport\""), "{message}");
        assert!(message.contains("known kinds: exec, external, panics, wait"), "{message}");
    }

    async fn titles_and_complexity_are_checked(backend: Backend) {
        let db = TestDb::new(backend);
        let rt = start(&db).await;
        let huge = refused(&rt, &titled("x".repeat(10 * 1024 * 1024))).await;
        assert_eq!(huge, "title is 10485760 characters long; the limit is 200");
        assert_eq!(refused(&rt, &titled(String::new())).await, "title must not be empty");
        assert_eq!(refused(&rt, &titled("   ".into())).await, "title must not be empty");
        let zero = refused(&rt, &TaskPlan { complexity: 0, ..external_plan("Zero", 1) }).await;
        assert!(zero.contains("complexity"), "{zero}");
    }

    async fn bad_step_params_name_the_step_and_the_parameter(backend: Backend) {
        let db = TestDb::new(backend);
        let rt = start(&db).await;
        let cases = [
            (second_step("exec", json!({"argv": []})), "step 2 (exec): \"argv\" must name a program"),
            (
                second_step("exec", json!({"argv": ["x"], "timeout_s": -1})),
                "step 2 (exec): \"timeout_s\" must be a positive number of seconds up to 2592000 (30 days), got -1",
            ),
            (
                second_step("exec", json!({"argv": ["x"], "timeout_s": 1e20})),
                "step 2 (exec): \"timeout_s\" must be a positive number of seconds up to 2592000 (30 days), got 1e+20",
            ),
            (
                second_step("wait", json!({"seconds": "soon"})),
                "step 2 (wait): \"seconds\" must be a number, got \"soon\"",
            ),
        ];
        for (plan, expected) in cases {
            assert_eq!(refused(&rt, &plan).await, expected);
        }
    }

    async fn substep_names_must_be_unique_and_within_the_limit(backend: Backend) {
        let db = TestDb::new(backend);
        let rt = start(&db).await;
        let twice = refused(&rt, &with_substeps(vec!["A".into(), "B".into(), "A".into()])).await;
        assert_eq!(twice, "step 1 has the substep \"A\" twice");
        let many = refused(&rt, &with_substeps((1..=257).map(|i| format!("part {i}")).collect())).await;
        assert_eq!(many, "step 1 has 257 substeps; the limit is 256");
    }

    async fn refused_plans_store_nothing_and_leave_other_tasks_alone(backend: Backend) {
        let db = TestDb::new(backend);
        let rt = start(&db).await;
        let good = rt.create_task("alice", &external_plan("Good", 2), true).await.unwrap();
        let before = rt.task("alice", &good).await.unwrap();
        assert_eq!(before.task.status, TaskStatus::Running);

        for plan in every_bad_plan() {
            refused(&rt, &plan).await;
        }
        let after = rt.task("alice", &good).await.unwrap();
        assert_eq!(after.task.status, TaskStatus::Running);
        assert_eq!(after.task.last_seq, before.task.last_seq, "no event was added to the good task");
        assert_eq!(after.steps, before.steps);

        let database = Arc::clone(rt.db());
        let mut conn = database.conn().unwrap();
        let listed = db::list_tasks(&mut conn, "alice", None, None, 100).unwrap();
        let ids: Vec<&str> = listed.tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, [good.as_str()], "no refused plan left a task row");
    }
}
