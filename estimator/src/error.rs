//! The one error type of the estimator: every rejected input names the offending value.

use thiserror::Error;

/// Why the estimator refused an input.
///
/// The estimator never panics on bad input; it returns one of these instead.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum EstimatorError {
    /// A complexity of zero: complexity counts units of work, so it is at least 1.
    #[error("complexity must be at least 1, got {0}")]
    ZeroComplexity(u32),
    /// A task plan or a finished task without any step.
    #[error("a task needs at least one step")]
    NoSteps,
    /// A step key that is empty.
    #[error("step {index} has an empty key")]
    EmptyKey {
        /// Position of the step in the task (0-based).
        index: usize,
    },
    /// A step duration that is zero, negative, NaN or infinite.
    #[error("duration of step {index} ({key}) must be positive and finite, got {value}")]
    InvalidDuration {
        /// Position of the step in the task (0-based).
        index: usize,
        /// The step's key.
        key: String,
        /// The rejected duration in seconds.
        value: f64,
    },
    /// A plan whose hints do not pair up with its steps.
    #[error("the plan gives {hints} duration hints for {steps} steps (give one per step, or none)")]
    HintCount {
        /// Hints given.
        hints: usize,
        /// Steps in the plan.
        steps: usize,
    },
    /// The observation reports more completed steps than the plan has.
    #[error("observation has {completed} completed steps but the plan has only {planned}")]
    TooManyCompleted {
        /// Completed steps in the observation.
        completed: usize,
        /// Steps in the plan.
        planned: usize,
    },
    /// The running step's elapsed work time is negative, NaN or infinite.
    #[error("elapsed time of the running step must be finite and non-negative, got {0}")]
    InvalidElapsed(f64),
    /// A progress sample with a fraction outside 0..=1 or a time that is negative or not finite.
    #[error("progress sample {index} is invalid: fraction {fraction} at {elapsed_s} s")]
    InvalidProgress {
        /// Position of the sample (0-based).
        index: usize,
        /// The sample's fraction done.
        fraction: f64,
        /// The sample's time since the step started, in seconds.
        elapsed_s: f64,
    },
    /// A configuration value out of its range.
    #[error("config field {field} is out of range: {value}")]
    InvalidConfig {
        /// The field's name.
        field: &'static str,
        /// The rejected value.
        value: f64,
    },
}
