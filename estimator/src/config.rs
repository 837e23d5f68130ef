//! The estimator's tunable assumptions, with defaults tuned on the shared traces.

use crate::EstimatorError;

/// Assumptions the estimator starts from and how fast it forgets.
///
/// The defaults suit tasks whose steps last seconds to hours; only `cold_step_s` matters
/// much, and only until the first tasks have run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// Median work seconds assumed for a step of a kind never seen, at complexity 3, before
    /// any history exists (the cold-start default).
    pub cold_step_s: f64,
    /// Log-sd of `cold_step_s` as a guess of a whole task's pace; its steps share the error,
    /// so the first completed step corrects all the others.
    pub cold_level_sd: f64,
    /// Growth exponent of duration with complexity assumed before history shows it
    /// (0.5: four times the work takes twice as long).
    pub cold_slope: f64,
    /// Recorded tasks after which a run's weight in its kind's prior halves.
    pub half_life_tasks: f64,
    /// Recorded tasks after which a task's weight in the recent pace level halves.
    pub level_half_life_tasks: f64,
    /// Clip of a completed step's innovation in the speed-factor filter, in standard
    /// deviations.
    pub clip_sigmas: f64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            cold_step_s: 60.0,
            cold_level_sd: 1.5,
            cold_slope: 0.5,
            half_life_tasks: 200.0,
            level_half_life_tasks: 30.0,
            clip_sigmas: 2.5,
        }
    }
}

impl Config {
    pub(crate) fn validate(&self) -> Result<(), EstimatorError> {
        let positive = [
            ("cold_step_s", self.cold_step_s),
            ("cold_level_sd", self.cold_level_sd),
            ("half_life_tasks", self.half_life_tasks),
            ("level_half_life_tasks", self.level_half_life_tasks),
            ("clip_sigmas", self.clip_sigmas),
        ];
        let bad = positive.into_iter().find(|(_, v)| !(v.is_finite() && *v > 0.0));
        if let Some((field, value)) = bad {
            return Err(EstimatorError::InvalidConfig { field, value });
        }
        if !self.cold_slope.is_finite() {
            let value = self.cold_slope;
            return Err(EstimatorError::InvalidConfig { field: "cold_slope", value });
        }
        Ok(())
    }

    /// ln of the per-task decay factor of the kind priors.
    pub(crate) fn ln_decay(&self) -> f64 {
        -std::f64::consts::LN_2 / self.half_life_tasks
    }
}
