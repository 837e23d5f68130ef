//! Which reports a task takes, pure. A step's handler reports only for the attempt in
//! progress (a late report of an old attempt is ignored); an outside worker reports only on
//! a running `external` step, and its report is taken whole or not at all.

use db::StepStatus;

use super::{is_attempt_in_progress, unknown_substep, TaskState, Transition};
use crate::policy::FailureKind;
use crate::RuntimeError;

/// How an outside worker's report ends an `external` step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportOutcome {
    /// The work succeeded.
    Completed {
        /// What it produced.
        output: Option<String>,
    },
    /// The work failed.
    Failed {
        /// Why.
        error: String,
    },
}

/// A report on an `external` step from the worker doing it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExternalReport {
    /// The step's percent, 0–100, decimals allowed.
    pub progress: Option<f64>,
    /// A substep that is done, by name.
    pub substep_done: Option<String>,
    /// A line for the step's log.
    pub log: Option<String>,
    /// Ends the step.
    pub outcome: Option<ReportOutcome>,
}

impl TaskState {
    /// Whether a report from the handler of `attempt` of step `order` is current: that
    /// attempt is in progress.
    pub fn is_current(&self, order: u32, attempt: u32) -> bool {
        self.stored.steps.iter().any(|s| is_attempt_in_progress(s, order, attempt))
    }

    /// Checks an outside worker's report on step `order` before any of it is applied: the
    /// step runs, is `external`, and has the substep named. Returns the attempt it is for.
    pub fn check_report(&self, order: u32, report: &ExternalReport) -> Result<u32, RuntimeError> {
        if let Some(percent) = report.progress.filter(|p| !(0.0..=100.0).contains(p)) {
            return Err(RuntimeError::InvalidReport(format!("progress is a percent, 0 to 100, got {percent}")));
        }
        let step = self.step(order)?;
        if step.status != StepStatus::Running {
            return Err(RuntimeError::InvalidStepTransition {
                task_id: self.task_id(),
                step: order,
                action: "report on",
                status: step.status,
            });
        }
        if step.kind != "external" {
            return Err(RuntimeError::InvalidReport(format!(
                "step {order} is a {:?} step; only external steps take reports",
                step.kind
            )));
        }
        if let Some(name) = report.substep_done.as_deref().filter(|n| !step.substeps.iter().any(|s| s.name == *n)) {
            return Err(unknown_substep(step, name));
        }
        Ok(step.attempts)
    }

    /// What a checked report on `attempt` of step `order` does to the task: its substep is
    /// done, then its outcome ends the step.
    pub fn external_report(
        &mut self,
        order: u32,
        attempt: u32,
        report: ExternalReport,
        now: i64,
    ) -> Result<Transition, RuntimeError> {
        let mut transition = match &report.substep_done {
            Some(name) => self.substep_done(order, attempt, name)?,
            None => Transition::default(),
        };
        transition.then(match report.outcome {
            Some(ReportOutcome::Completed { output }) => self.step_succeeded(order, attempt, output, now),
            Some(ReportOutcome::Failed { error }) => self.step_failed(order, attempt, error, FailureKind::Error, now),
            None => Transition::default(),
        });
        Ok(transition)
    }
}
