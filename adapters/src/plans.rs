//! Plans as JSON (the shape `stepwise run` reads and the HTTP API accepts) and the seed's
//! demo task, "Cellphone Store CRM".

use runtime::{ApprovalPolicy, RetryPolicy, StepPlan, TaskPlan};
use serde::Deserialize;
use serde_json::{json, Value};

/// A plan as JSON: `{"title", "complexity"?, "steps": [{"name", "kind", "params"?,
/// "substeps"?, "requires_approval"?, "skippable"?, "order"?, "estimate_s"?}]}`. Unknown
/// fields are refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanDocument {
    /// The task's title.
    pub title: String,
    /// Units of work; 1 if left out.
    #[serde(default = "one")]
    pub complexity: u32,
    /// The steps in order.
    pub steps: Vec<PlanStep>,
}

/// A step of a [`PlanDocument`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanStep {
    /// Explicit 1-based order (all steps or none).
    #[serde(default)]
    pub order: Option<u32>,
    /// The step's name.
    pub name: String,
    /// Its kind: `exec`, `external`, `wait`.
    pub kind: String,
    /// The kind's parameters.
    #[serde(default)]
    pub params: Value,
    /// Substep names.
    #[serde(default)]
    pub substeps: Vec<String>,
    /// Wait for approval before running.
    #[serde(default)]
    pub requires_approval: bool,
    /// A rejection skips the step instead of failing the task.
    #[serde(default)]
    pub skippable: bool,
    /// Expected work seconds: the ETA's starting point until steps like it have run.
    #[serde(default)]
    pub estimate_s: Option<f64>,
    /// Try a failed attempt again on its own: `{max_attempts, backoff?, on?}`.
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
    /// The approval's deadline: `{timeout_s, on_timeout?, remind_before_s?}` (implies
    /// `requires_approval`).
    #[serde(default)]
    pub approval: Option<ApprovalPolicy>,
}

fn one() -> u32 {
    1
}

impl From<PlanDocument> for TaskPlan {
    fn from(doc: PlanDocument) -> TaskPlan {
        TaskPlan {
            title: doc.title,
            complexity: doc.complexity,
            steps: doc
                .steps
                .into_iter()
                .map(|s| StepPlan {
                    order: s.order,
                    name: s.name,
                    kind: s.kind,
                    params: s.params,
                    substeps: s.substeps,
                    requires_approval: s.requires_approval,
                    skippable: s.skippable,
                    estimate_s: s.estimate_s,
                    retry: s.retry,
                    approval: s.approval,
                })
                .collect(),
        }
    }
}

/// Reads a plan from JSON text; the error names the line, column and field.
pub fn parse_plan(text: &str) -> Result<TaskPlan, serde_json::Error> {
    serde_json::from_str::<PlanDocument>(text).map(TaskPlan::from)
}

/// The seed's example: four steps of simulated work, about a minute in all at `speed` 1
/// (`speed` 2 runs twice as fast).
pub fn cellphone_store_crm(speed: f64) -> TaskPlan {
    let wait = |seconds: f64| json!({ "seconds": seconds / speed });
    let step = |name: &str, seconds: f64, substeps: &[&str]| StepPlan {
        substeps: substeps.iter().map(|s| (*s).to_owned()).collect(),
        ..StepPlan::new(name, "wait", wait(seconds))
    };
    TaskPlan {
        title: "Cellphone Store CRM".into(),
        // Four tables: customers, products, sales, repairs.
        complexity: 4,
        steps: vec![
            step("Create database tables", 12.0, &[]),
            step(
                "Generate application UI",
                24.0,
                &["Customer list view", "Product list view", "Sales form", "Repair board"],
            ),
            step("Add search and filters", 12.0, &[]),
            step("Configure workflows", 12.0, &[]),
        ],
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngSeed};

    use super::*;

    proptest! {
        #![proptest_config(Config { cases: 512, rng_seed: RngSeed::Fixed(43), failure_persistence: None, ..Config::default() })]

        /// Any text is a plan or an error naming where it went wrong; a plan file in the
        /// plan's own shape with any values is checked without a panic too.
        #[test]
        fn any_plan_file_parses_or_says_where_it_is_wrong(
            text in prop_oneof![
                any::<String>(),
                "\\{\"title\": \"[a-z ]{0,8}\", (\"complexity\": -?[0-9]{1,3}, )?\"steps\": \\[(\\{\"name\": \"[a-z]{0,4}\", \"kind\": \"(wait|external|exec|x)\"(, \"params\": \\{\"seconds\": -?[0-9.e]{1,6}\\})?(, \"retry\": \\{\"max_attempts\": [0-9]{1,3}\\})?\\},? ?){0,3}\\]\\}",
            ]
        ) {
            match parse_plan(&text) {
                Ok(plan) => {
                    let _ = plan.validate(&runtime::PlanLimits::default(), &runtime::Handlers::builtin(5));
                }
                Err(error) => prop_assert!(!error.to_string().is_empty()),
            }
        }
    }

    #[test]
    fn plan_documents_parse_and_name_their_errors() {
        let plan = parse_plan(r#"{"title": "T", "steps": [{"name": "a", "kind": "wait", "params": {"seconds": 1}}]}"#)
            .expect("valid plan");
        assert_eq!(plan.complexity, 1);
        assert_eq!(plan.steps[0].kind, "wait");
        let cases = [
            (r#"{"title": "T", "steps": [], "colour": 1}"#, "unknown field `colour`"),
            (r#"{"steps": []}"#, "missing field `title`"),
            (r#"{"title": "T", "complexity": "high", "steps": []}"#, "invalid type: string \"high\""),
            (r#"{"title": "T", "steps": [{"name": "a"}]}"#, "missing field `kind`"),
            ("{", "EOF while parsing"),
        ];
        for (text, fragment) in cases {
            let error = parse_plan(text).expect_err(text).to_string();
            assert!(error.contains(fragment), "{text}: {error:?} lacks {fragment:?}");
        }
    }

    #[test]
    fn the_demo_is_the_seeds_four_steps() {
        let plan = cellphone_store_crm(1.0);
        let names: Vec<&str> = plan.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["Create database tables", "Generate application UI", "Add search and filters", "Configure workflows"]
        );
        assert_eq!(plan.steps[1].substeps.len(), 4);
        let seconds: f64 = plan.steps.iter().map(|s| s.params["seconds"].as_f64().unwrap_or(0.0)).sum();
        assert!((seconds - 60.0).abs() < 1e-9, "about a minute, got {seconds}");
    }
}
