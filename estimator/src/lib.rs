//! Pure ETA estimation for Stepwise tasks: each step kind has a log-normal prior fitted
//! from history with complexity as a regressor, the running task's own speed factor is
//! learned live from its completed steps, in-step progress and overruns, the remaining steps
//! are summed (Fenton–Wilkinson) into p10/p50/p90, and the range is calibrated per tier and
//! progress band on past tasks. It does no I/O and reads no clock: time comes in as work
//! seconds. The API is one type with two calls:
//!
//! ```
//! use estimator::{CompletedTask, Estimator, Observation, StepRun, TaskPlan};
//!
//! let mut est = Estimator::default();
//! let run = |key: &str, duration_s| StepRun { key: key.into(), duration_s, progress: vec![] };
//! est.record_task(&CompletedTask { complexity: 2, steps: vec![run("fetch", 30.0), run("load", 90.0)] })?;
//!
//! let plan = TaskPlan { complexity: 2, steps: vec!["fetch".into(), "load".into()], hints_s: Vec::new() };
//! let now = Observation { completed_s: vec![40.0], running_elapsed_s: 10.0, progress: vec![] };
//! let eta = est.estimate(&plan, &now)?;
//! assert!(eta.eta_range.0 <= eta.eta_seconds && eta.eta_seconds <= eta.eta_range.1);
//! # Ok::<(), estimator::EstimatorError>(())
//! ```

mod calibration;
mod combine;
mod config;
mod error;
mod estimator;
mod live;
mod prior;
mod progress;
mod task;

pub use config::Config;
pub use error::EstimatorError;
pub use estimator::{Estimator, READINGS_PER_TASK};
pub use task::{CompletedTask, Confidence, Estimate, Observation, ProgressSample};
pub use task::{StepEstimate, StepRun, TaskPlan, Tier};
