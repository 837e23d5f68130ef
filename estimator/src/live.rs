//! The live update: the task's speed factor, learned from its completed steps by a Kalman
//! filter in log space, and the running step's duration, updated by its in-step progress
//! (a rate measurement) and by its elapsed time (censored evidence).

use crate::combine::{truncate_below, Gauss};
use crate::ProgressSample;

/// Fractions this close to 1 are read as "almost done", not as an exact duration.
const MAX_FRACTION: f64 = 0.999;
/// Smallest variance of a progress-based duration measurement, whatever the fraction.
const MIN_PROGRESS_VAR: f64 = 0.003;

/// Adds one completed step to the belief about the task's log speed factor.
///
/// `residual` is ln(duration) − predicted mean, `own_var` the step's variance not shared
/// with other steps. The innovation is clipped at `clip` standard deviations so a single
/// stalled or retried step moves the factor only as far as a plausible one would.
pub(crate) fn observe_step(speed: Gauss, residual: f64, own_var: f64, clip: f64) -> Gauss {
    let innovation_var = speed.var + own_var;
    let limit = clip * innovation_var.sqrt();
    let innovation = (residual - speed.mean).clamp(-limit, limit);
    let gain = speed.var / innovation_var;
    Gauss { mean: speed.mean + gain * innovation, var: (1.0 - gain) * speed.var }
}

/// The joint belief about the task's log speed factor `s` and the running step's log
/// duration `u = step mean + s + own noise`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Running {
    pub(crate) speed: Gauss,
    pub(crate) log_d: Gauss,
    cov: f64,
}

impl Running {
    /// The belief before anything is seen of the running step.
    pub(crate) fn start(speed: Gauss, step_mean: f64, own_var: f64) -> Running {
        Running { speed, log_d: Gauss { mean: step_mean + speed.mean, var: speed.var + own_var }, cov: speed.var }
    }

    /// Conditions on an exact measurement `z = u + noise`, noise ~ N(0, noise_var).
    fn measure(self, z: f64, noise_var: f64) -> Running {
        let s = self.log_d.var + noise_var;
        let innovation = z - self.log_d.mean;
        Running {
            speed: Gauss {
                mean: self.speed.mean + self.cov / s * innovation,
                var: self.speed.var - self.cov * self.cov / s,
            },
            log_d: Gauss {
                mean: self.log_d.mean + self.log_d.var / s * innovation,
                var: self.log_d.var * noise_var / s,
            },
            cov: self.cov * noise_var / s,
        }
    }

    /// Uses the latest in-step progress sample as a noisy measurement of the step's duration:
    /// f done after t seconds suggests t / f in all, less reliably the smaller f is.
    pub(crate) fn with_progress(self, samples: &[ProgressSample], noise: f64) -> Running {
        let latest = samples
            .iter()
            .filter(|p| p.fraction > 0.0 && p.elapsed_s > 0.0)
            .max_by(|a, b| a.elapsed_s.total_cmp(&b.elapsed_s));
        let Some(p) = latest else {
            return self;
        };
        let f = p.fraction.min(MAX_FRACTION);
        let var = (noise * (1.0 - f) / f).max(MIN_PROGRESS_VAR);
        self.measure((p.elapsed_s / f).ln(), var)
    }

    /// Uses "the step has run `elapsed` seconds and is not done" as censored evidence:
    /// the step's log duration is truncated at ln(elapsed) (moment matched), and the speed
    /// factor moves with it through their covariance, so an overrun slows later steps too.
    ///
    /// Returns the updated speed factor and the step's log-duration belief *before*
    /// truncation; the rest of the step is computed from the latter with the exact
    /// truncated log-normal moments.
    pub(crate) fn censor(self, elapsed: f64) -> (Gauss, Gauss) {
        if elapsed <= 0.0 {
            return (self.speed, self.log_d);
        }
        let truncated = truncate_below(self.log_d, elapsed.ln());
        let k = self.cov / self.log_d.var;
        let speed = Gauss {
            mean: self.speed.mean + k * (truncated.mean - self.log_d.mean),
            var: (self.speed.var - k * self.cov + k * k * truncated.var).max(0.0),
        };
        (speed, self.log_d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIOR: Gauss = Gauss { mean: 0.0, var: 0.09 };

    #[test]
    fn completed_steps_move_the_speed_factor_towards_their_residual() {
        // (residual, own variance, expected mean after one step)
        let cases = [
            (0.0, 0.09, 0.0),
            (0.4, 0.09, 0.2),
            (-0.4, 0.09, -0.2),
            (0.4, 0.0, 0.4),
            // A stall five sds out is clipped to 2.5 sds of the innovation.
            (5.0, 0.09, 0.5 * 2.5 * 0.18f64.sqrt()),
        ];
        for (residual, own_var, mean) in cases {
            let g = observe_step(PRIOR, residual, own_var, 2.5);
            assert!((g.mean - mean).abs() < 1e-12, "{residual}: {}", g.mean);
            assert!(g.var <= PRIOR.var);
        }
    }

    #[test]
    fn progress_pulls_the_running_step_towards_elapsed_over_fraction() {
        let r = Running::start(PRIOR, 100f64.ln(), 0.09);
        let sample = |elapsed_s, fraction| [ProgressSample { elapsed_s, fraction }];
        // Half done after 100 s: the step looks like 200 s, the task slower than thought.
        let half = r.with_progress(&sample(100.0, 0.5), 0.3);
        assert!(half.log_d.mean > 120f64.ln() && half.speed.mean > 0.1);
        // A tiny fraction barely counts; no usable sample changes nothing.
        let tiny = r.with_progress(&sample(1.0, 0.001), 0.3);
        assert!((tiny.log_d.mean - r.log_d.mean).abs() < 0.05);
        assert_eq!(r.with_progress(&sample(0.0, 0.0), 0.3), r);
    }

    #[test]
    fn overrunning_the_prior_raises_the_speed_factor() {
        let r = Running::start(PRIOR, 100f64.ln(), 0.09);
        let mut last = f64::NEG_INFINITY;
        for elapsed in [0.0, 50.0, 100.0, 200.0, 400.0, 1e5] {
            let (speed, _) = r.censor(elapsed);
            assert!(speed.mean >= last && speed.var >= 0.0, "at {elapsed}");
            last = speed.mean;
        }
        assert!(last > 0.5);
    }
}
