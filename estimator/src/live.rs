//! The live update: the task's speed factor, learned from its completed steps by a Kalman
//! filter in log space, and the running step's duration, updated by its in-step progress
//! (a rate measurement) and by its elapsed time (censored evidence).

use crate::combine::{excess_moments, ln_upper_tail, scale_by_lognormal, truncate_below, Gauss, Moments};
/// Points of the grid over the speed factor on which the running step is integrated.
const GRID_POINTS: usize = 81;
/// Half-width of that grid in posterior standard deviations of the speed factor: wide
/// enough for the second moment of e^s (which weighs the upper tail) at a cold-start spread.
const GRID_HALF_WIDTH: f64 = 8.0;

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
    /// The speed factor before anything of the running step was seen.
    prior: Gauss,
    /// The step's mean log duration at zero speed factor and its own variance.
    step: Gauss,
    /// The progress measurement of ln d taken, if any, with its noise variance.
    measured: Option<(f64, f64)>,
}

impl Running {
    /// The belief before anything is seen of the running step.
    pub(crate) fn start(speed: Gauss, step_mean: f64, own_var: f64) -> Running {
        Running {
            speed,
            log_d: Gauss { mean: step_mean + speed.mean, var: speed.var + own_var },
            cov: speed.var,
            prior: speed,
            step: Gauss { mean: step_mean, var: own_var },
            measured: None,
        }
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
            measured: Some((z, noise_var)),
            ..self
        }
    }

    /// Uses an in-step progress reading of the step's log duration (see
    /// [`crate::progress::ProgressModel::reading`]), if there is one.
    pub(crate) fn with_reading(self, reading: Option<Gauss>) -> Running {
        match reading {
            Some(r) => self.measure(r.mean, r.var),
            None => self,
        }
    }

    /// The step's log duration given speed factor `s` (after the progress measurement, if
    /// any) and the log-likelihood of that measurement.
    fn step_given(&self, s: f64) -> (Gauss, f64) {
        let prior = Gauss { mean: self.step.mean + s, var: self.step.var };
        let Some((z, noise)) = self.measured else {
            return (prior, 0.0);
        };
        let total = prior.var + noise;
        let innovation = z - prior.mean;
        let log_d = Gauss { mean: prior.mean + prior.var / total * innovation, var: prior.var * noise / total };
        (log_d, -0.5 * innovation * innovation / total)
    }

    /// Moments of the remaining time given speed factor `s` and the step's log duration:
    /// given s, the step's rest and the later steps are independent.
    fn total_given(s: f64, log_d: Gauss, elapsed: f64, later: Moments) -> Moments {
        let rest = excess_moments(log_d, elapsed);
        let scaled = scale_by_lognormal(later, Gauss { mean: s, var: 0.0 });
        Moments { mean: rest.mean + scaled.mean, var: rest.var + scaled.var }
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

    /// The remaining time of the task, integrated over the speed factor: the running step's
    /// rest (it has run `elapsed` seconds) plus `later`, the later steps' sum at speed factor
    /// 0, which the speed scales. Also returns the posterior mean of e^s.
    ///
    /// Given s, the step's log duration is Gaussian (the progress measurement included) and
    /// the censoring likelihood is its upper tail at ln(elapsed), so the posterior of s is
    /// skewed and the step's rest and the later steps move together with s. Integrating on a
    /// grid around the moment-matched posterior keeps both, where a Gaussian s and
    /// independent parts would lose the correlation.
    pub(crate) fn remaining(&self, elapsed: f64, later: Moments) -> (Moments, f64) {
        let (centre, _) = self.censor(elapsed);
        let sd = centre.var.sqrt();
        if sd <= 1e-9 {
            let (log_d, _) = self.step_given(centre.mean);
            return (Running::total_given(centre.mean, log_d, elapsed, later), centre.mean.exp());
        }
        let spacing = 2.0 * GRID_HALF_WIDTH * sd / (GRID_POINTS - 1) as f64;
        let nodes: Vec<(f64, f64, Gauss)> = (0..GRID_POINTS)
            .map(|i| centre.mean - GRID_HALF_WIDTH * sd + spacing * i as f64)
            .map(|s| {
                let (ln_w, log_d) = self.ln_weight(s, elapsed);
                (s, ln_w, log_d)
            })
            .collect();
        let top = nodes.iter().map(|n| n.1).fold(f64::NEG_INFINITY, f64::max);
        let (mut w_sum, mut mean, mut second, mut speed) = (0.0, 0.0, 0.0, 0.0);
        for (s, ln_w, log_d) in nodes {
            let w = (ln_w - top).exp();
            let m = Running::total_given(s, log_d, elapsed, later);
            w_sum += w;
            mean += w * m.mean;
            second += w * (m.var + m.mean * m.mean);
            speed += w * s.exp();
        }
        let (mean, second) = (mean / w_sum, second / w_sum);
        (Moments { mean, var: (second - mean * mean).max(0.0) }, speed / w_sum)
    }

    /// The unnormalised log posterior of speed factor `s` (prior, progress, censoring) and
    /// the step's log duration given s before censoring.
    fn ln_weight(&self, s: f64, elapsed: f64) -> (f64, Gauss) {
        let (log_d, ln_progress) = self.step_given(s);
        let ln_prior = -0.5 * (s - self.prior.mean).powi(2) / self.prior.var;
        if elapsed <= 0.0 {
            return (ln_prior + ln_progress, log_d);
        }
        let ln_censored = ln_upper_tail((elapsed.ln() - log_d.mean) / log_d.var.sqrt());
        (ln_prior + ln_progress + ln_censored, log_d)
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
    fn a_progress_reading_pulls_the_running_step_and_the_pace() {
        let r = Running::start(PRIOR, 100f64.ln(), 0.09);
        // (reading of the step's length in seconds, its variance, expected change of ln d)
        let cases = [(200.0, 0.18, 2f64.ln() / 2.0), (200.0, 1e9, 0.0), (50.0, 0.18, -2f64.ln() / 2.0)];
        for (seconds, var, shift) in cases {
            let read = r.with_reading(Some(Gauss { mean: f64::ln(seconds), var }));
            let moved = read.log_d.mean - r.log_d.mean;
            assert!((moved - shift).abs() < 1e-6, "{seconds} {var}: {moved}");
            // The shared pace moves the same way, by its share of the step's variance.
            assert!((read.speed.mean - 0.5 * moved).abs() < 1e-6);
        }
        assert_eq!(r.with_reading(None), r);
    }

    /// Exact moments of e^s·(X + L) for s ~ `speed`, ln X ~ N(step_mean, own_var) and L with
    /// moments `later`, all independent: the remaining time before anything is seen.
    fn exact_fresh(speed: Gauss, step_mean: f64, own_var: f64, later: Moments) -> Moments {
        let x1 = (step_mean + 0.5 * own_var).exp();
        let x2 = (2.0 * step_mean + 2.0 * own_var).exp();
        let mean = (speed.mean + 0.5 * speed.var).exp() * (x1 + later.mean);
        let inner = x2 + 2.0 * x1 * later.mean + later.var + later.mean * later.mean;
        let second = (2.0 * speed.mean + 2.0 * speed.var).exp() * inner;
        Moments { mean, var: second - mean * mean }
    }

    #[test]
    fn integrating_over_the_speed_matches_the_exact_moments_before_censoring() {
        // (speed prior, step mean, own variance, later steps' moments at speed 0)
        let cases = [
            (PRIOR, 100f64.ln(), 0.09, Moments { mean: 300.0, var: 900.0 }),
            (Gauss { mean: 0.3, var: 0.01 }, 10f64.ln(), 0.25, Moments { mean: 1000.0, var: 1e5 }),
            (Gauss { mean: -0.5, var: 0.5 }, 1000f64.ln(), 0.04, Moments::default()),
            (Gauss { mean: 0.0, var: 2.25 }, 60f64.ln(), 0.25, Moments { mean: 120.0, var: 3600.0 }),
        ];
        for (speed, step_mean, own_var, later) in cases {
            let (got, scale) = Running::start(speed, step_mean, own_var).remaining(0.0, later);
            let want = exact_fresh(speed, step_mean, own_var, later);
            // The correlation through s makes the variance larger than independent parts would.
            assert!((got.mean / want.mean - 1.0).abs() < 1e-6, "mean {got:?} {want:?}");
            assert!((got.var / want.var - 1.0).abs() < 1e-4, "var {got:?} {want:?}");
            assert!((scale / (speed.mean + 0.5 * speed.var).exp() - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn integrated_overrun_pushes_the_end_and_the_pace_out() {
        let later = Moments { mean: 300.0, var: 900.0 };
        let r = Running::start(PRIOR, 100f64.ln(), 0.09);
        // (elapsed seconds of the running step): the predicted end and e^s never fall.
        let (mut last_end, mut last_scale) = (0.0, 0.0);
        for elapsed in [0.0, 30.0, 100.0, 150.0, 300.0, 1e4, 1e8] {
            let (m, scale) = r.remaining(elapsed, later);
            assert!(m.mean > 0.0 && m.var > 0.0 && m.mean.is_finite(), "at {elapsed}: {m:?}");
            assert!(elapsed + m.mean >= last_end && scale >= last_scale, "at {elapsed}");
            (last_end, last_scale) = (elapsed + m.mean, scale);
        }
        // A known pace (no speed variance) is a point: later steps scale exactly.
        let known = Running::start(Gauss { mean: 2f64.ln(), var: 0.0 }, 100f64.ln(), 0.09);
        let (m, scale) = known.remaining(0.0, later);
        assert!((scale - 2.0).abs() < 1e-12);
        assert!((m.mean - (200.0 * 0.045f64.exp() + 600.0)).abs() < 1e-9, "{m:?}");
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
