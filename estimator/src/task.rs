//! The values the runtime hands to the estimator and the estimate it gets back.

use crate::EstimatorError;

/// A sample of fine-grained progress inside one step: `fraction` done after `elapsed_s`
/// seconds of work on that step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProgressSample {
    /// Work seconds since the step started (paused time excluded).
    pub elapsed_s: f64,
    /// Share of the step done, in `0.0..=1.0`.
    pub fraction: f64,
}

/// One completed run of a step, as history.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRun {
    /// The step's history key (its kind and name); runs with the same key share a prior.
    pub key: String,
    /// Work seconds the step took (paused time and approval waits excluded); must be > 0.
    pub duration_s: f64,
    /// Progress samples seen while the step ran, oldest first; may be empty.
    pub progress: Vec<ProgressSample>,
}

/// A task that ran to its end: what [`crate::Estimator::record_task`] learns from.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletedTask {
    /// The task's complexity (units of work, at least 1).
    pub complexity: u32,
    /// Its step runs in execution order.
    pub steps: Vec<StepRun>,
}

/// What is known about a task before it runs: its complexity, its steps' keys in order and
/// any durations its plan states up front.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskPlan {
    /// The task's complexity (units of work, at least 1).
    pub complexity: u32,
    /// Keys of all its steps, in execution order.
    pub steps: Vec<String>,
    /// Work seconds the plan expects each step to take, where it says (a timer's length, an
    /// author's estimate): one per step in order, or empty when no step has one. A hint
    /// stands in for history the step's kind does not have yet, and counts as one more piece
    /// of evidence once it does.
    pub hints_s: Vec<Option<f64>>,
}

impl TaskPlan {
    /// The plan's hint for step `index`, if it gives one.
    pub(crate) fn hint(&self, index: usize) -> Option<f64> {
        self.hints_s.get(index).copied().flatten()
    }
}

/// The live state of a running task, in work seconds (pauses and approval waits excluded).
///
/// The running step is `plan.steps[completed_s.len()]`; when every step is completed the
/// task is done and the estimate is zero.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    /// Durations of the steps completed so far, in order.
    pub completed_s: Vec<f64>,
    /// Work seconds spent so far on the running step (0 before it starts).
    pub running_elapsed_s: f64,
    /// Progress samples of the running step so far, oldest first; may be empty.
    pub progress: Vec<ProgressSample>,
}

/// How far an estimate can be trusted, from its calibrated range and how much history backs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Confidence {
    /// A step kind without history, or an 80 % range wider than the predicted total.
    Low,
    /// An 80 % range narrower than the predicted total (elapsed plus p50).
    Medium,
    /// An 80 % range narrower than half the predicted total.
    High,
}

/// The expected remaining duration of one step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepEstimate {
    /// The step's key.
    pub key: String,
    /// Expected (mean) work seconds still to go in this step.
    pub expected_s: f64,
}

/// The estimate of a task's remaining work time.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    /// Median (p50) of the remaining work seconds.
    pub eta_seconds: f64,
    /// The calibrated 80 % range (p10, p90) of the remaining work seconds.
    pub eta_range: (f64, f64),
    /// How far the estimate can be trusted.
    pub confidence: Confidence,
    /// Each remaining step (the running one first) with its expected remaining duration.
    pub steps: Vec<StepEstimate>,
}

/// The accuracy tiers of the seed: simple (complexity 1–2), medium (3–5), complex (6+).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// Complexity 1–2, promised within ±20 %.
    Simple,
    /// Complexity 3–5, promised within ±30 %.
    Medium,
    /// Complexity 6 and more, promised within ±50 %.
    Complex,
}

impl Tier {
    /// All tiers, simplest first.
    pub const ALL: [Tier; 3] = [Tier::Simple, Tier::Medium, Tier::Complex];

    /// The tier of a task of this complexity.
    pub fn of(complexity: u32) -> Tier {
        match complexity {
            0..=2 => Tier::Simple,
            3..=5 => Tier::Medium,
            _ => Tier::Complex,
        }
    }

    /// The tier's name in lower case, as the replay prints it.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Simple => "simple",
            Tier::Medium => "medium",
            Tier::Complex => "complex",
        }
    }

    /// The seed's promised relative accuracy for this tier (0.2, 0.3 or 0.5).
    pub fn tolerance(self) -> f64 {
        match self {
            Tier::Simple => 0.2,
            Tier::Medium => 0.3,
            Tier::Complex => 0.5,
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

pub(crate) fn check_complexity(complexity: u32) -> Result<(), EstimatorError> {
    if complexity == 0 {
        return Err(EstimatorError::ZeroComplexity(complexity));
    }
    Ok(())
}

pub(crate) fn check_key(index: usize, key: &str) -> Result<(), EstimatorError> {
    if key.is_empty() {
        return Err(EstimatorError::EmptyKey { index });
    }
    Ok(())
}

pub(crate) fn check_duration(index: usize, key: &str, value: f64) -> Result<(), EstimatorError> {
    if !(value.is_finite() && value > 0.0) {
        let key = key.to_owned();
        return Err(EstimatorError::InvalidDuration { index, key, value });
    }
    Ok(())
}

pub(crate) fn check_progress(samples: &[ProgressSample]) -> Result<(), EstimatorError> {
    for (index, s) in samples.iter().enumerate() {
        let time_ok = s.elapsed_s.is_finite() && s.elapsed_s >= 0.0;
        let fraction_ok = (0.0..=1.0).contains(&s.fraction);
        if !(time_ok && fraction_ok) {
            let (fraction, elapsed_s) = (s.fraction, s.elapsed_s);
            return Err(EstimatorError::InvalidProgress { index, fraction, elapsed_s });
        }
    }
    Ok(())
}

impl TaskPlan {
    pub(crate) fn validate(&self) -> Result<(), EstimatorError> {
        check_complexity(self.complexity)?;
        if self.steps.is_empty() {
            return Err(EstimatorError::NoSteps);
        }
        self.steps.iter().enumerate().try_for_each(|(i, key)| check_key(i, key))?;
        if !self.hints_s.is_empty() && self.hints_s.len() != self.steps.len() {
            return Err(EstimatorError::HintCount { hints: self.hints_s.len(), steps: self.steps.len() });
        }
        for (i, (hint, key)) in self.hints_s.iter().zip(&self.steps).enumerate() {
            if let Some(hint) = hint {
                check_duration(i, key, *hint)?;
            }
        }
        Ok(())
    }
}

impl Observation {
    pub(crate) fn validate(&self, plan: &TaskPlan) -> Result<(), EstimatorError> {
        let (completed, planned) = (self.completed_s.len(), plan.steps.len());
        if completed > planned {
            return Err(EstimatorError::TooManyCompleted { completed, planned });
        }
        for (i, (&d, key)) in self.completed_s.iter().zip(&plan.steps).enumerate() {
            check_duration(i, key, d)?;
        }
        let e = self.running_elapsed_s;
        if !(e.is_finite() && e >= 0.0) {
            return Err(EstimatorError::InvalidElapsed(e));
        }
        check_progress(&self.progress)
    }
}

impl CompletedTask {
    pub(crate) fn validate(&self) -> Result<(), EstimatorError> {
        check_complexity(self.complexity)?;
        if self.steps.is_empty() {
            return Err(EstimatorError::NoSteps);
        }
        for (i, step) in self.steps.iter().enumerate() {
            check_key(i, &step.key)?;
            check_duration(i, &step.key, step.duration_s)?;
            check_progress(&step.progress)?;
        }
        Ok(())
    }
}
