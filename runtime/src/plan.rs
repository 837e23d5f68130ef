//! What a caller submits: a task's title, complexity and ordered steps, and the checks that
//! turn a plan into stored rows or a clear refusal.

use std::collections::HashSet;

use db::{NewStep, StoredTask};
use serde_json::Value;

use crate::handlers::Handlers;
use crate::policy::{ApprovalPolicy, RetryPolicy, StepPolicy};
use crate::RuntimeError;

/// A task to run.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskPlan {
    /// What people call it.
    pub title: String,
    /// Units of work (e.g. tables of a generated app), at least 1.
    pub complexity: u32,
    /// The steps, in the order they run.
    pub steps: Vec<StepPlan>,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct StepPlan {
    /// Explicit 1-based position; when any step gives one, all must, and they must be
    /// exactly 1..=n.
    pub order: Option<u32>,
    /// What people call it.
    pub name: String,
    /// The handler kind: `exec`, `external`, `wait` or an application's own.
    pub kind: String,
    /// The handler's parameters.
    pub params: Value,
    /// Substep names.
    pub substeps: Vec<String>,
    /// Wait for a person's approval before running (implied by `approval`).
    pub requires_approval: bool,
    /// A rejection skips the step instead of failing the task.
    pub skippable: bool,
    /// The work seconds the step is expected to take, when the plan's author knows: the
    /// ETA's starting point until steps like it have run (a `wait` step knows its own).
    pub estimate_s: Option<f64>,
    /// Try a failed attempt again on its own.
    pub retry: Option<RetryPolicy>,
    /// How long the step's approval may wait, and what happens then.
    pub approval: Option<ApprovalPolicy>,
}

/// The longest `estimate_s` a plan may give: a year.
const MAX_ESTIMATE_S: f64 = 365.0 * 86_400.0;

impl StepPlan {
    /// A step of `kind` with `params` and nothing else set.
    pub fn new(name: &str, kind: &str, params: Value) -> StepPlan {
        StepPlan {
            order: None,
            name: name.to_owned(),
            kind: kind.to_owned(),
            params,
            substeps: Vec::new(),
            requires_approval: false,
            skippable: false,
            estimate_s: None,
            retry: None,
            approval: None,
        }
    }
}

/// Limits on what a plan may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanLimits {
    /// Characters in a title or a step or substep name.
    pub max_title_chars: usize,
    /// Steps per task.
    pub max_steps: usize,
    /// Substeps per step.
    pub max_substeps: usize,
    /// Bytes of a step's parameters, as JSON.
    pub max_params_bytes: usize,
}

impl Default for PlanLimits {
    fn default() -> Self {
        PlanLimits { max_title_chars: 200, max_steps: 1000, max_substeps: 256, max_params_bytes: 64 * 1024 }
    }
}

impl TaskPlan {
    /// Checks the plan and returns its steps ready to store, ordered 1..=n.
    pub fn validate(&self, limits: &PlanLimits, handlers: &Handlers) -> Result<Vec<NewStep>, RuntimeError> {
        check_name("title", &self.title, limits)?;
        if self.complexity == 0 {
            return invalid("complexity must be a positive integer, got 0".into());
        }
        if self.steps.is_empty() {
            return invalid("a task needs at least one step".into());
        }
        if self.steps.len() > limits.max_steps {
            return invalid(format!("{} steps is more than the limit of {}", self.steps.len(), limits.max_steps));
        }
        let orders = step_orders(&self.steps)?;
        let mut stored: Vec<NewStep> = self
            .steps
            .iter()
            .zip(orders)
            .map(|(step, order)| validate_step(step, order, limits, handlers))
            .collect::<Result<_, _>>()?;
        stored.sort_by_key(|s| s.order);
        Ok(stored)
    }

    /// The plan a stored task was made from ("cancel and start over" runs it again).
    pub fn from_stored(stored: &StoredTask) -> TaskPlan {
        TaskPlan {
            title: stored.task.title.clone(),
            complexity: stored.task.complexity,
            steps: stored
                .steps
                .iter()
                .map(|s| {
                    let policy = StepPolicy::of(s);
                    StepPlan {
                        order: Some(s.order),
                        name: s.name.clone(),
                        kind: s.kind.clone(),
                        params: serde_json::from_str(&s.params).unwrap_or(Value::Null),
                        substeps: s.substeps.iter().map(|x| x.name.clone()).collect(),
                        requires_approval: s.requires_approval,
                        skippable: s.skippable,
                        estimate_s: s.estimate_ms.map(|ms| ms as f64 / 1000.0),
                        retry: policy.retry,
                        approval: policy.approval,
                    }
                })
                .collect(),
        }
    }
}

fn invalid<T>(message: String) -> Result<T, RuntimeError> {
    Err(RuntimeError::InvalidPlan(message))
}

fn check_name(what: &str, text: &str, limits: &PlanLimits) -> Result<(), RuntimeError> {
    if text.trim().is_empty() {
        return invalid(format!("{what} must not be empty"));
    }
    let chars = text.chars().count();
    if chars > limits.max_title_chars {
        return invalid(format!("{what} is {chars} characters long; the limit is {}", limits.max_title_chars));
    }
    if text.chars().any(char::is_control) {
        return invalid(format!("{what} must not contain control characters"));
    }
    Ok(())
}

/// The order of each step: its explicit order, or its position.
fn step_orders(steps: &[StepPlan]) -> Result<Vec<u32>, RuntimeError> {
    let explicit = steps.iter().filter(|s| s.order.is_some()).count();
    if explicit == 0 {
        return Ok((1..).take(steps.len()).collect());
    }
    if explicit != steps.len() {
        return invalid("either every step gives an order or none does".into());
    }
    let mut seen = HashSet::new();
    let n = u32::try_from(steps.len()).unwrap_or(u32::MAX);
    steps
        .iter()
        .map(|s| {
            let order = s.order.unwrap_or_default();
            if !(1..=n).contains(&order) {
                return invalid(format!("step {:?} has order {order}; orders must be 1 to {n}", s.name));
            }
            if !seen.insert(order) {
                return invalid(format!("duplicate step order {order}"));
            }
            Ok(order)
        })
        .collect()
}

fn validate_step(
    step: &StepPlan,
    order: u32,
    limits: &PlanLimits,
    handlers: &Handlers,
) -> Result<NewStep, RuntimeError> {
    check_name(&format!("step {order} name"), &step.name, limits)?;
    let Some(handler) = handlers.get(&step.kind) else {
        return invalid(format!(
            "step {order} has unknown kind {:?} (known kinds: {})",
            step.kind,
            handlers.kinds().join(", ")
        ));
    };
    let params = step.params.to_string();
    if params.len() > limits.max_params_bytes {
        return invalid(format!(
            "step {order} params are {} bytes; the limit is {}",
            params.len(),
            limits.max_params_bytes
        ));
    }
    handler
        .validate(&step.params)
        .map_err(|problem| RuntimeError::InvalidPlan(format!("step {order} ({}): {problem}", step.kind)))?;
    if step.substeps.len() > limits.max_substeps {
        return invalid(format!(
            "step {order} has {} substeps; the limit is {}",
            step.substeps.len(),
            limits.max_substeps
        ));
    }
    let expected_s = match step.estimate_s {
        Some(seconds) if !(seconds > 0.0 && seconds <= MAX_ESTIMATE_S) => {
            return invalid(format!(
                "step {order} estimate_s must be more than 0 and at most {MAX_ESTIMATE_S} (a year), got {seconds}"
            ));
        }
        Some(seconds) => Some(seconds),
        None => handler.expected_seconds(&step.params),
    };
    let policy = StepPolicy { retry: step.retry.clone(), approval: step.approval };
    policy.check().map_err(|problem| RuntimeError::InvalidPlan(format!("step {order}: {problem}")))?;
    let mut names = HashSet::new();
    for name in &step.substeps {
        check_name(&format!("step {order} substep name"), name, limits)?;
        if !names.insert(name.as_str()) {
            return invalid(format!("step {order} has the substep {name:?} twice"));
        }
    }
    Ok(NewStep {
        order,
        name: step.name.clone(),
        kind: step.kind.clone(),
        params,
        requires_approval: step.requires_approval || step.approval.is_some(),
        skippable: step.skippable,
        substeps: step.substeps.clone(),
        policy: policy.stored(),
        // At least a millisecond: the estimator takes no zero-length step.
        estimate_ms: expected_s.map(|s| ((s * 1000.0).round() as i64).max(1)),
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngSeed};
    use serde_json::{Number, Value};

    use super::*;
    use crate::policy::{Backoff, FailureKind, OnTimeout};

    /// Any JSON value, a few levels deep.
    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(|x| Number::from_f64(x).map_or(Value::Null, Value::Number)),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..4)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    /// A number as a plan might give one: often sane, sometimes anything at all.
    fn seconds() -> impl Strategy<Value = f64> {
        prop_oneof![0.0..100_000.0f64, any::<f64>()]
    }

    fn retry() -> impl Strategy<Value = RetryPolicy> {
        let on = prop::collection::vec(
            prop_oneof![Just(FailureKind::Timeout), Just(FailureKind::ExitCode), Just(FailureKind::Error)],
            0..4,
        );
        (any::<u32>(), seconds(), seconds(), seconds(), on).prop_map(|(max_attempts, initial_s, factor, max_s, on)| {
            RetryPolicy { max_attempts, backoff: Backoff { initial_s, factor, max_s }, on }
        })
    }

    fn approval() -> impl Strategy<Value = ApprovalPolicy> {
        let on_timeout = prop_oneof![Just(OnTimeout::Reject), Just(OnTimeout::Skip), Just(OnTimeout::Fail)];
        (seconds(), on_timeout, prop::option::of(seconds())).prop_map(|(timeout_s, on_timeout, remind_before_s)| {
            ApprovalPolicy { timeout_s, on_timeout, remind_before_s }
        })
    }

    fn step() -> impl Strategy<Value = StepPlan> {
        let kind =
            prop_oneof![Just("wait".to_owned()), Just("external".to_owned()), Just("exec".to_owned()), any::<String>()];
        (
            (prop::option::of(0..6u32), any::<String>(), kind, json()),
            (prop::collection::vec(any::<String>(), 0..4), any::<bool>(), any::<bool>()),
            (prop::option::of(seconds()), prop::option::of(retry()), prop::option::of(approval())),
        )
            .prop_map(
                |(
                    (order, name, kind, params),
                    (substeps, requires_approval, skippable),
                    (estimate_s, retry, approval),
                )| {
                    StepPlan {
                        order,
                        name,
                        kind,
                        params,
                        substeps,
                        requires_approval,
                        skippable,
                        estimate_s,
                        retry,
                        approval,
                    }
                },
            )
    }

    proptest! {
        #![proptest_config(Config { cases: 512, rng_seed: RngSeed::Fixed(29), failure_persistence: None, ..Config::default() })]

        /// Whatever a plan holds, checking it never panics: it is refused with an
        /// `InvalidPlan` naming the problem, or its steps come back in order with the rules
        /// they were given.
        #[test]
        fn any_plan_is_stored_or_refused_with_a_reason(
            title in any::<String>(),
            complexity in 0..4u32,
            steps in prop::collection::vec(step(), 0..4),
        ) {
            let plan = TaskPlan { title, complexity, steps };
            let limits = PlanLimits { max_steps: 3, max_substeps: 3, ..PlanLimits::default() };
            match plan.validate(&limits, &Handlers::builtin(5)) {
                Ok(stored) => {
                    prop_assert_eq!(stored.len(), plan.steps.len());
                    prop_assert!(stored.iter().zip(1..).all(|(step, order)| step.order == order));
                }
                Err(RuntimeError::InvalidPlan(reason)) => prop_assert!(!reason.is_empty()),
                Err(other) => prop_assert!(false, "not a plan refusal: {other:?}"),
            }
        }
    }
}
